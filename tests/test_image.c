/*
 * test_image.c — image I/O (src/io/image*.c): PNG/JPEG/WebP round trips, PNG text chunks
 * (tEXt/zTXt/iTXt, A1111 "parameters", UTF-8), 16-bit / palette / low-bit / tRNS / interlaced PNGs
 * written with libpng directly, CMYK and progressive JPEGs written with libjpeg directly, hostile
 * input (every truncation and byte flip of each format's valid file, PNG flips with fixed CRCs,
 * oversized headers refused before allocation), clear errors for non-images, atomic saving, and a
 * few real images from /usr/share when present. Run under ASan too (NU_TEST_QUICK=1 trims sizes).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include "nu_test.h"
#include "nuance/io.h"

static char tmpdir[256];

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static uint8_t *read_all(const char *path, size_t *n) {
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc(sz > 0 ? (size_t)sz : 1);
    if (d && fread(d, 1, (size_t)sz, f) != (size_t)sz) {
        free(d);
        d = NULL;
    }
    fclose(f);
    if (d) *n = (size_t)sz;
    return d;
}

static void write_all(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(d, 1, n, f);
    fclose(f);
}

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* noise (random bytes) or a smooth pattern */
static nu_image make_image(int w, int h, int c, bool smooth) {
    nu_image im = {w, h, c, malloc((size_t)w * h * c)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                uint8_t v;
                if (smooth) v = (uint8_t)lrint(127.5 + 100.0 * sin(x * 0.09 + k * 1.3) * cos(y * 0.11 - k * 0.7));
                else v = (uint8_t)rnd();
                im.pixels[((size_t)y * w + x) * c + k] = v;
            }
    return im;
}

static double psnr(const uint8_t *a, const uint8_t *b, size_t n) {
    double se = 0;
    for (size_t i = 0; i < n; i++) se += (double)(a[i] - b[i]) * (a[i] - b[i]);
    if (se == 0) return 99.0;
    return 10.0 * log10(255.0 * 255.0 / (se / (double)n));
}

static bool same_image(const nu_image *a, const nu_image *b) {
    return a->width == b->width && a->height == b->height && a->channels == b->channels && a->pixels && b->pixels &&
           memcmp(a->pixels, b->pixels, (size_t)a->width * a->height * a->channels) == 0;
}

/* ---------------------------------------------------------------- PNG written with libpng directly */

typedef struct membuf {
    uint8_t *d;
    size_t n, cap;
} membuf;

static void mb_write(png_structp p, png_bytep d, size_t n) {
    membuf *m = png_get_io_ptr(p);
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2 + 1024;
        m->d = realloc(m->d, m->cap);
    }
    memcpy(m->d + m->n, d, n);
    m->n += n;
}
static void mb_flush(png_structp p) { (void)p; }

typedef struct raw_png {
    int w, h, depth, ctype, interlace;
    const uint8_t *rows; /* packed rows, rowbytes each (16-bit samples big-endian) */
    const png_color *pal;
    int npal;
    const png_byte *trns;
    int ntrns;
    const png_color_16 *trns_color;
    png_text *texts_before, *texts_after;
    int n_before, n_after;
} raw_png;

static membuf write_raw_png(const raw_png *r) {
    membuf m = {0};
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p), end = png_create_info_struct(p);
    png_set_write_fn(p, &m, mb_write, mb_flush);
    png_set_IHDR(p, info, (png_uint_32)r->w, (png_uint_32)r->h, r->depth, r->ctype, r->interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (r->pal) png_set_PLTE(p, info, r->pal, r->npal);
    if (r->trns || r->trns_color) png_set_tRNS(p, info, r->trns, r->ntrns, r->trns_color);
    if (r->n_before) png_set_text(p, info, r->texts_before, r->n_before);
    if (r->n_after) png_set_text(p, end, r->texts_after, r->n_after);
    png_write_info(p, info);
    size_t rowbytes = png_get_rowbytes(p, info);
    int passes = png_set_interlace_handling(p);
    for (int pass = 0; pass < passes; pass++)
        for (int y = 0; y < r->h; y++) png_write_row(p, r->rows + (size_t)y * rowbytes);
    png_write_end(p, end);
    png_destroy_info_struct(p, &end);
    png_destroy_write_struct(&p, &info);
    return m;
}

/* Recomputes every chunk CRC so that corrupted chunk contents reach the decoders. */
static void png_fix_crcs(uint8_t *d, size_t n) {
    size_t off = 8;
    while (off + 12 <= n) {
        uint32_t len = (uint32_t)d[off] << 24 | (uint32_t)d[off + 1] << 16 | (uint32_t)d[off + 2] << 8 | d[off + 3];
        if (len > n - off - 12) break;
        uint32_t crc = (uint32_t)crc32(0, d + off + 4, len + 4);
        uint8_t *c = d + off + 8 + len;
        c[0] = (uint8_t)(crc >> 24), c[1] = (uint8_t)(crc >> 16), c[2] = (uint8_t)(crc >> 8), c[3] = (uint8_t)crc;
        off += 12 + len;
    }
}

/* ---------------------------------------------------------------- tests */

static void test_png_roundtrip(void) {
    const int sizes[][2] = {{1, 1}, {7, 5}, {33, 17}, {256, 3}, {3, 200}};
    for (int c = 1; c <= 4; c++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            nu_image a = make_image(sizes[s][0], sizes[s][1], c, false), b;
            const char *p = tpath(s % 2 ? "rt.PNG" : "rt.png");
            NU_CHECK_MSG(nu_image_save(p, &a, NULL, 0, 0) == NU_OK, "save: %s", nu_last_error());
            NU_CHECK_MSG(nu_image_load(p, &b) == NU_OK, "load: %s", nu_last_error());
            NU_CHECK_MSG(same_image(&a, &b), "png %dx%dx%d not exact", a.width, a.height, c);
            nu_image_free(&b);
            size_t n;
            uint8_t *d = read_all(p, &n);
            NU_CHECK(nu_image_load_memory(d, n, NULL, &b) == NU_OK && same_image(&a, &b));
            nu_image_free(&b);
            free(d);
            nu_image_free(&a);
        }
    /* Highly compressible image near deflate's best ratio must still load (short-data guard). */
    nu_image z = {2048, nu_test_quick() ? 256 : 2048, 1, calloc((size_t)2048 * 2048, 1)}, zb;
    NU_CHECK(nu_image_save(tpath("zeros.png"), &z, NULL, 0, 0) == NU_OK);
    NU_CHECK_MSG(nu_image_load(tpath("zeros.png"), &zb) == NU_OK && same_image(&z, &zb), "zeros: %s", nu_last_error());
    nu_image_free(&z);
    nu_image_free(&zb);
    nu_image e = {0};
    nu_image_free(&e); /* freeing an empty image is fine */
    nu_image_free(NULL);
}

static void test_jpeg(void) {
    nu_image a = make_image(64, 48, 3, true), b;
    NU_CHECK(nu_image_save(tpath("s.jpg"), &a, NULL, 0, 95) == NU_OK);
    NU_CHECK_MSG(nu_image_load(tpath("s.jpg"), &b) == NU_OK, "%s", nu_last_error());
    NU_CHECK(b.width == 64 && b.height == 48 && b.channels == 3);
    double q95 = b.pixels ? psnr(a.pixels, b.pixels, 64 * 48 * 3) : 0;
    NU_CHECK_MSG(q95 >= 30.0, "jpeg q95 psnr %.2f", q95);
    nu_image_free(&b);
    NU_CHECK(nu_image_save(tpath("s.JPEG"), &a, NULL, 0, 0) == NU_OK); /* default quality 90 */
    NU_CHECK(nu_image_load(tpath("s.JPEG"), &b) == NU_OK && b.channels == 3);
    double q90 = b.pixels ? psnr(a.pixels, b.pixels, 64 * 48 * 3) : 0;
    NU_CHECK_MSG(q90 >= 28.0, "jpeg q90 psnr %.2f", q90);
    nu_image_free(&b);
    NU_CHECK(nu_image_save(tpath("s50.jpg"), &a, NULL, 0, 50) == NU_OK && nu_image_load(tpath("s50.jpg"), &b) == NU_OK);
    double q50 = b.pixels ? psnr(a.pixels, b.pixels, 64 * 48 * 3) : 0;
    NU_CHECK_MSG(q50 >= 24.0 && q50 < q95, "jpeg q50 psnr %.2f", q50);
    nu_image_free(&b);
    printf("jpeg smooth 64x48 RGB psnr: q95 %.2f dB, q90 %.2f dB, q50 %.2f dB\n", q95, q90, q50);
    nu_image_free(&a);

    /* gray stays gray; alpha is dropped */
    a = make_image(31, 9, 1, true);
    NU_CHECK(nu_image_save(tpath("g.jpg"), &a, NULL, 0, 95) == NU_OK && nu_image_load(tpath("g.jpg"), &b) == NU_OK);
    NU_CHECK(b.channels == 1 && b.width == 31 && b.height == 9);
    if (b.pixels) NU_CHECK_MSG(psnr(a.pixels, b.pixels, 31 * 9) >= 30, "gray psnr %.2f", psnr(a.pixels, b.pixels, 31 * 9));
    nu_image_free(&b);
    nu_image_free(&a);
    a = make_image(40, 24, 4, true);
    NU_CHECK(nu_image_save(tpath("a.jpg"), &a, NULL, 0, 95) == NU_OK && nu_image_load(tpath("a.jpg"), &b) == NU_OK);
    NU_CHECK(b.channels == 3);
    if (b.pixels && b.channels == 3) {
        uint8_t *rgb = malloc(40 * 24 * 3);
        for (int i = 0; i < 40 * 24; i++) memcpy(rgb + 3 * i, a.pixels + 4 * i, 3);
        NU_CHECK_MSG(psnr(rgb, b.pixels, 40 * 24 * 3) >= 30, "rgba->jpeg psnr %.2f", psnr(rgb, b.pixels, 40 * 24 * 3));
        free(rgb);
    }
    nu_image_free(&b);
    nu_image_free(&a);
    a = make_image(1, 1, 2, true);
    NU_CHECK(nu_image_save(tpath("ga.jpg"), &a, NULL, 0, 100) == NU_OK && nu_image_load(tpath("ga.jpg"), &b) == NU_OK);
    NU_CHECK(b.channels == 1 && b.width == 1 && b.pixels && abs(b.pixels[0] - a.pixels[0]) <= 2);
    nu_image_free(&b);
    nu_image_free(&a);
}

/* CMYK (Adobe, inverted) and progressive JPEGs written with libjpeg directly. */
static membuf write_raw_jpeg(int w, int h, int comps, J_COLOR_SPACE cs, const uint8_t *px, bool progressive) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    unsigned char *out = NULL;
    unsigned long outsize = 0;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &out, &outsize);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = cs;
    jpeg_set_defaults(&c);
    if (cs == JCS_CMYK) jpeg_set_colorspace(&c, JCS_CMYK);
    jpeg_set_quality(&c, 95, TRUE);
    if (progressive) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * comps);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    membuf m = {out, outsize, outsize};
    return m;
}

static void test_jpeg_cmyk_progressive(void) {
    int w = 16, h = 8;
    uint8_t *px = malloc((size_t)w * h * 4);
    for (int i = 0; i < w * h; i++) { /* Adobe-inverted storage: 255 = no ink */
        px[4 * i + 0] = 255;
        px[4 * i + 1] = 128;
        px[4 * i + 2] = 0;
        px[4 * i + 3] = 255;
    }
    membuf m = write_raw_jpeg(w, h, 4, JCS_CMYK, px, false);
    nu_image b;
    NU_CHECK_MSG(nu_image_load_memory(m.d, m.n, "cmyk.jpg", &b) == NU_OK, "%s", nu_last_error());
    NU_CHECK(b.channels == 3 && b.width == w && b.height == h);
    if (b.pixels) {
        int bad = 0;
        for (int i = 0; i < w * h; i++)
            bad += abs(b.pixels[3 * i] - 255) > 4 || abs(b.pixels[3 * i + 1] - 128) > 4 || b.pixels[3 * i + 2] > 4;
        NU_CHECK_MSG(bad == 0, "cmyk->rgb: %d bad pixels, first %d %d %d", bad, b.pixels[0], b.pixels[1], b.pixels[2]);
    }
    nu_image_free(&b);
    free(m.d);
    free(px);

    nu_image a = make_image(50, 30, 3, true);
    m = write_raw_jpeg(50, 30, 3, JCS_RGB, a.pixels, true);
    NU_CHECK_MSG(nu_image_load_memory(m.d, m.n, "prog.jpg", &b) == NU_OK, "%s", nu_last_error());
    NU_CHECK(b.channels == 3 && b.pixels && psnr(a.pixels, b.pixels, 50 * 30 * 3) >= 30);
    nu_image_free(&b);
    free(m.d);
    nu_image_free(&a);
}

static bool webp_available(void) {
    nu_image a = make_image(2, 2, 3, false);
    nu_status st = nu_image_save(tpath("probe.webp"), &a, NULL, 0, 100);
    nu_image_free(&a);
    if (st == NU_ERR_UNSUPPORTED) printf("webp: not compiled in, skipping WebP checks (%s)\n", nu_last_error());
    return st == NU_OK;
}

static void test_webp(void) {
    if (!webp_available()) {
        nu_image b;
        NU_CHECK(nu_image_load(tpath("probe.webp"), &b) != NU_OK);
        return;
    }
    for (int c = 1; c <= 4; c++) {
        nu_image a = make_image(c == 1 ? 1 : 7 * c, 5, c, false), b;
        if (c == 4)
            for (int i = 0; i < a.width * a.height; i += 3) a.pixels[4 * i + 3] = 0; /* RGB under alpha 0 */
        NU_CHECK(nu_image_save(tpath("l.webp"), &a, NULL, 0, 100) == NU_OK);
        NU_CHECK_MSG(nu_image_load(tpath("l.webp"), &b) == NU_OK, "%s", nu_last_error());
        int want_c = c <= 2 ? c + 2 : c;
        NU_CHECK(b.width == a.width && b.height == a.height && b.channels == want_c);
        if (b.pixels && b.channels == want_c) {
            bool exact = true;
            for (int i = 0; i < a.width * a.height; i++)
                for (int k = 0; k < want_c; k++) {
                    int src_k = c <= 2 ? (k < 3 ? 0 : 1) : k;
                    exact &= b.pixels[i * want_c + k] == a.pixels[i * c + src_k];
                }
            NU_CHECK_MSG(exact, "webp lossless %d channels not exact", c);
        }
        nu_image_free(&b);
        nu_image_free(&a);
    }
    nu_image a = make_image(64, 48, 3, true), b;
    NU_CHECK(nu_image_save(tpath("q.WebP"), &a, NULL, 0, 90) == NU_OK && nu_image_load(tpath("q.WebP"), &b) == NU_OK);
    double p = b.pixels && b.channels == 3 ? psnr(a.pixels, b.pixels, 64 * 48 * 3) : 0;
    NU_CHECK_MSG(p >= 30.0, "webp lossy q90 psnr %.2f", p);
    printf("webp lossy q90 smooth 64x48 RGB psnr %.2f dB\n", p);
    nu_image_free(&b);
    nu_image_free(&a);
    a = make_image(20, 10, 4, true);
    NU_CHECK(nu_image_save(tpath("qa.webp"), &a, NULL, 0, 80) == NU_OK && nu_image_load(tpath("qa.webp"), &b) == NU_OK);
    NU_CHECK(b.channels == 4);
    if (b.pixels && b.channels == 4) {
        int maxda = 0;
        for (int i = 0; i < 200; i++) maxda = abs(a.pixels[4 * i + 3] - b.pixels[4 * i + 3]) > maxda ? abs(a.pixels[4 * i + 3] - b.pixels[4 * i + 3]) : maxda;
        NU_CHECK_MSG(maxda <= 2, "webp lossy alpha max diff %d", maxda);
    }
    nu_image_free(&b);
    nu_image_free(&a);
    /* read_texts on a WebP: no texts, no error */
    nu_image_text *t = (nu_image_text *)1;
    int n = -1;
    NU_CHECK(nu_image_read_texts(tpath("qa.webp"), &t, &n) == NU_OK && n == 0 && t == NULL);
}

static const char *a1111_params =
    "masterpiece, best quality, a watercolor painting of a lighthouse on a cliff at dusk, (dramatic sky:1.2), "
    "waves crashing, <lora:watercolor_v2:0.8>, highly detailed\n"
    "Negative prompt: lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, "
    "cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry\n"
    "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, Model hash: 6ce0161689, "
    "Model: v1-5-pruned-emaonly, Denoising strength: 0.55, Clip skip: 2, Hires upscale: 2, Hires steps: 15, "
    "Hires upscaler: Latent, Lora hashes: \"watercolor_v2: 0123456789ab\", Version: v1.6.0";

static bool chunk_present(const uint8_t *d, size_t n, const char *type, const char *key) {
    size_t off = 8;
    while (off + 12 <= n) {
        uint32_t len = (uint32_t)d[off] << 24 | (uint32_t)d[off + 1] << 16 | (uint32_t)d[off + 2] << 8 | d[off + 3];
        if (len > n - off - 12) return false;
        if (memcmp(d + off + 4, type, 4) == 0 && len > strlen(key) && memcmp(d + off + 8, key, strlen(key) + 1) == 0)
            return true;
        off += 12 + len;
    }
    return false;
}

static void test_texts(void) {
    const char *utf8 = "\xe7\x8c\xab \xd0\xba\xd0\xbe\xd1\x88\xd0\xba\xd0\xb0 \xf0\x9f\x90\x88 na\xc3\xafve \xe2\x80\x94 end";
    nu_image_text in[3] = {{"parameters", (char *)a1111_params}, {"Comment", (char *)utf8}, {"Software", "nuance"}};
    nu_image a = make_image(7, 5, 3, false);
    NU_CHECK_MSG(nu_image_save(tpath("t.png"), &a, in, 3, 0) == NU_OK, "%s", nu_last_error());
    nu_image_text *t = NULL;
    int n = 0;
    NU_CHECK_MSG(nu_image_read_texts(tpath("t.png"), &t, &n) == NU_OK, "%s", nu_last_error());
    NU_CHECK(n == 3);
    for (int i = 0; i < n && i < 3; i++)
        NU_CHECK_MSG(strcmp(t[i].key, in[i].key) == 0 && strcmp(t[i].value, in[i].value) == 0, "text %d: %s=%.40s", i,
                     t[i].key, t[i].value);
    nu_image_texts_free(t, n);
    size_t fn;
    uint8_t *fd = read_all(tpath("t.png"), &fn);
    NU_CHECK(fd && chunk_present(fd, fn, "tEXt", "parameters") && chunk_present(fd, fn, "iTXt", "Comment") &&
             chunk_present(fd, fn, "tEXt", "Software"));
    /* a damaged text chunk (bad CRC) is dropped; the image and the other texts still load */
    uint8_t *hit = fd ? memmem(fd, fn, "Negative prompt", 15) : NULL;
    if (hit) {
        *hit ^= 0x20;
        write_all(tpath("crc.png"), fd, fn);
        NU_CHECK(nu_image_read_texts(tpath("crc.png"), &t, &n) == NU_OK && n == 2 && strcmp(t[0].key, "Comment") == 0);
        nu_image_texts_free(t, n);
        nu_image b2;
        NU_CHECK(nu_image_load(tpath("crc.png"), &b2) == NU_OK && same_image(&a, &b2));
        nu_image_free(&b2);
    }
    NU_CHECK(hit != NULL);
    free(fd);
    nu_image b;
    NU_CHECK(nu_image_load(tpath("t.png"), &b) == NU_OK && same_image(&a, &b));
    nu_image_free(&b);

    /* texts are ignored for JPEG; read_texts gives none */
    NU_CHECK(nu_image_save(tpath("t.jpg"), &a, in, 3, 90) == NU_OK);
    t = (nu_image_text *)1;
    NU_CHECK(nu_image_read_texts(tpath("t.jpg"), &t, &n) == NU_OK && n == 0 && t == NULL);

    /* bad keys / values are refused before anything is written */
    nu_image_text bad[][1] = {{{"", "x"}}, {{" lead", "x"}}, {{"trail ", "x"}}, {{"two  spaces", "x"}},
                              {{"ctl\x01", "x"}}, {{"caf\xc3\xa9", "x"}}, {{"ok", "\xff\xfe broken utf8"}},
                              {{"ok", NULL}},
                              {{"a-key-that-is-far-too-long-for-png-which-allows-only-seventy-nine-bytes-in-total-x",
                                "x"}}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nu_status st = nu_image_save(tpath("bad.png"), &a, bad[i], 1, 0);
        NU_CHECK_MSG(st == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "bad.png"), "bad text %zu: %d %s", i, st,
                     nu_last_error());
    }
    NU_CHECK(access(tpath("bad.png"), F_OK) != 0);
    nu_image_free(&a);

    /* zTXt, compressed iTXt, Latin-1 tEXt, texts after IDAT, written by libpng */
    png_text before[2], after[2];
    memset(before, 0, sizeof before);
    memset(after, 0, sizeof after);
    before[0].compression = PNG_TEXT_COMPRESSION_zTXt;
    before[0].key = "zkey";
    before[0].text = (char *)a1111_params;
    before[1].compression = PNG_TEXT_COMPRESSION_NONE;
    before[1].key = "Title";
    before[1].text = "caf\xe9 \xb5";
    after[0].compression = PNG_ITXT_COMPRESSION_zTXt;
    after[0].key = "ikey";
    after[0].text = (char *)utf8;
    after[0].lang = "ru";
    after[0].lang_key = "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87";
    after[1].compression = PNG_ITXT_COMPRESSION_NONE;
    after[1].key = "Description";
    after[1].text = "after IDAT";
    uint8_t rgb_rows[2 * 6] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    raw_png r = {.w = 2, .h = 2, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .rows = rgb_rows, .texts_before = before,
                 .n_before = 2, .texts_after = after, .n_after = 2};
    membuf m = write_raw_png(&r);
    write_all(tpath("z.png"), m.d, m.n);
    free(m.d);
    NU_CHECK_MSG(nu_image_read_texts(tpath("z.png"), &t, &n) == NU_OK, "%s", nu_last_error());
    const char *want[4][2] = {{"zkey", a1111_params}, {"Title", "caf\xc3\xa9 \xc2\xb5"}, {"ikey", utf8},
                              {"Description", "after IDAT"}};
    NU_CHECK_MSG(n == 4, "libpng-written texts: %d", n);
    for (int i = 0; i < n && i < 4; i++)
        NU_CHECK_MSG(strcmp(t[i].key, want[i][0]) == 0 && strcmp(t[i].value, want[i][1]) == 0, "text %d: %s=%.40s",
                     i, t[i].key, t[i].value);
    nu_image_texts_free(t, n);
    NU_CHECK(nu_image_load(tpath("z.png"), &b) == NU_OK && b.channels == 3 && b.pixels && b.pixels[11] == 12);
    nu_image_free(&b);
    nu_image_texts_free(NULL, 0);
}

static nu_image load_raw_png(const raw_png *r) {
    membuf m = write_raw_png(r);
    nu_image b;
    if (nu_image_load_memory(m.d, m.n, "raw.png", &b) != NU_OK) fprintf(stderr, "raw png: %s\n", nu_last_error());
    free(m.d);
    return b;
}

static void test_png_variants(void) {
    /* 16-bit RGB: high byte kept */
    int w = 5, h = 3;
    uint8_t rows16[5 * 3 * 6];
    for (int i = 0; i < w * h * 3; i++) {
        uint16_t v = (uint16_t)(i * 4099 + 77);
        rows16[2 * i] = (uint8_t)(v >> 8);
        rows16[2 * i + 1] = (uint8_t)v;
    }
    raw_png r = {.w = w, .h = h, .depth = 16, .ctype = PNG_COLOR_TYPE_RGB, .rows = rows16};
    nu_image b = load_raw_png(&r);
    bool ok = b.channels == 3 && b.width == w && b.height == h && b.pixels;
    for (int i = 0; ok && i < w * h * 3; i++) ok = b.pixels[i] == rows16[2 * i];
    NU_CHECK_MSG(ok, "16-bit RGB");
    nu_image_free(&b);
    /* 16-bit gray+alpha */
    r.ctype = PNG_COLOR_TYPE_GRAY_ALPHA;
    r.w = 7;
    b = load_raw_png(&r); /* 7x3x2 samples = 42 <= 45 */
    ok = b.channels == 2 && b.width == 7 && b.pixels;
    for (int i = 0; ok && i < 7 * 3 * 2; i++) ok = b.pixels[i] == rows16[2 * i];
    NU_CHECK_MSG(ok, "16-bit gray+alpha");
    nu_image_free(&b);
    /* 16-bit RGBA, interlaced */
    uint8_t rows16a[4 * 4 * 8];
    for (int i = 0; i < 4 * 4 * 4; i++) {
        rows16a[2 * i] = (uint8_t)(i * 37);
        rows16a[2 * i + 1] = (uint8_t)(255 - i);
    }
    raw_png ra = {.w = 4, .h = 4, .depth = 16, .ctype = PNG_COLOR_TYPE_RGBA, .interlace = PNG_INTERLACE_ADAM7,
                  .rows = rows16a};
    b = load_raw_png(&ra);
    ok = b.channels == 4 && b.pixels;
    for (int i = 0; ok && i < 64; i++) ok = b.pixels[i] == rows16a[2 * i];
    NU_CHECK_MSG(ok, "16-bit RGBA interlaced");
    nu_image_free(&b);

    /* palette, 4-bit, with tRNS -> RGBA */
    png_color pal[5] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}};
    png_byte trns[2] = {0, 128};
    uint8_t idx[6 * 2];
    for (int i = 0; i < 12; i++) idx[i] = (uint8_t)(i % 5);
    uint8_t packed[3 * 2]; /* 6 px at 4 bits = 3 bytes per row */
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++) packed[y * 3 + x] = (uint8_t)(idx[y * 6 + 2 * x] << 4 | idx[y * 6 + 2 * x + 1]);
    raw_png rp = {.w = 6, .h = 2, .depth = 4, .ctype = PNG_COLOR_TYPE_PALETTE, .rows = packed, .pal = pal, .npal = 5,
                  .trns = trns, .ntrns = 2};
    b = load_raw_png(&rp);
    ok = b.channels == 4 && b.width == 6 && b.height == 2 && b.pixels;
    for (int i = 0; ok && i < 12; i++) {
        const png_color *c = &pal[idx[i]];
        int alpha = idx[i] < 2 ? trns[idx[i]] : 255;
        ok = b.pixels[4 * i] == c->red && b.pixels[4 * i + 1] == c->green && b.pixels[4 * i + 2] == c->blue &&
             b.pixels[4 * i + 3] == alpha;
    }
    NU_CHECK_MSG(ok, "palette 4-bit + tRNS");
    nu_image_free(&b);
    /* palette, 8-bit, no tRNS -> RGB */
    rp.depth = 8;
    rp.rows = idx;
    rp.trns = NULL;
    rp.ntrns = 0;
    b = load_raw_png(&rp);
    ok = b.channels == 3 && b.pixels;
    for (int i = 0; ok && i < 12; i++) ok = b.pixels[3 * i] == pal[idx[i]].red && b.pixels[3 * i + 2] == pal[idx[i]].blue;
    NU_CHECK_MSG(ok, "palette 8-bit");
    nu_image_free(&b);
    /* 1-bit and 2-bit gray scale to 0..255 */
    uint8_t g1[2] = {0xA5, 0x0F}; /* 8 px one row + second row */
    raw_png rg = {.w = 8, .h = 2, .depth = 1, .ctype = PNG_COLOR_TYPE_GRAY, .rows = g1};
    b = load_raw_png(&rg);
    ok = b.channels == 1 && b.pixels;
    for (int i = 0; ok && i < 16; i++) ok = b.pixels[i] == (((g1[i / 8] >> (7 - i % 8)) & 1) ? 255 : 0);
    NU_CHECK_MSG(ok, "1-bit gray");
    nu_image_free(&b);
    uint8_t g2[1] = {0x1B}; /* 0,1,2,3 */
    raw_png rg2 = {.w = 4, .h = 1, .depth = 2, .ctype = PNG_COLOR_TYPE_GRAY, .rows = g2};
    b = load_raw_png(&rg2);
    NU_CHECK(b.channels == 1 && b.pixels && b.pixels[0] == 0 && b.pixels[1] == 85 && b.pixels[2] == 170 &&
             b.pixels[3] == 255);
    nu_image_free(&b);
    /* gray 8-bit with tRNS -> gray+alpha; RGB with tRNS -> RGBA */
    uint8_t g8[4] = {0, 50, 100, 50};
    png_color_16 tc = {0};
    tc.gray = 50;
    raw_png rt = {.w = 4, .h = 1, .depth = 8, .ctype = PNG_COLOR_TYPE_GRAY, .rows = g8, .trns_color = &tc};
    b = load_raw_png(&rt);
    NU_CHECK(b.channels == 2 && b.pixels && b.pixels[1] == 255 && b.pixels[3] == 0 && b.pixels[6] == 50 &&
             b.pixels[7] == 0 && b.pixels[5] == 255);
    nu_image_free(&b);
    uint8_t c8[6] = {1, 2, 3, 9, 9, 9};
    png_color_16 tc3 = {0};
    tc3.red = tc3.green = tc3.blue = 9;
    raw_png rt3 = {.w = 2, .h = 1, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .rows = c8, .trns_color = &tc3};
    b = load_raw_png(&rt3);
    NU_CHECK(b.channels == 4 && b.pixels && b.pixels[3] == 255 && b.pixels[7] == 0 && b.pixels[4] == 9);
    nu_image_free(&b);
    /* interlaced 8-bit RGB, odd size */
    nu_image a = make_image(13, 11, 3, false);
    raw_png ri = {.w = 13, .h = 11, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .interlace = PNG_INTERLACE_ADAM7,
                  .rows = a.pixels};
    b = load_raw_png(&ri);
    NU_CHECK_MSG(same_image(&a, &b), "interlaced RGB");
    nu_image_free(&b);
    nu_image_free(&a);
}

/* Every truncation and many byte flips of a valid file: never crash; truncations fail cleanly. */
static void hostile_file(const char *name, const uint8_t *d, size_t n, bool truncation_must_fail, bool is_png) {
    nu_image b;
    int ok = 0, err = 0, label_ok = 0;
    size_t step = nu_test_quick() && n > 600 ? 7 : 1;
    for (size_t len = 0; len < n; len += step) {
        uint8_t *c = malloc(len ? len : 1);
        memcpy(c, d, len);
        nu_status st = nu_image_load_memory(c, len, name, &b);
        if (st == NU_OK) {
            ok++;
            NU_CHECK(b.pixels && b.width > 0 && b.height > 0 && b.channels >= 1 && b.channels <= 4);
        } else {
            err++;
            label_ok += strncmp(nu_last_error(), name, strlen(name)) == 0;
            NU_CHECK(b.pixels == NULL);
        }
        if (truncation_must_fail && st == NU_OK) NU_CHECK_MSG(0, "%s truncated to %zu of %zu bytes loaded", name, len, n);
        nu_image_free(&b);
        free(c);
    }
    NU_CHECK_MSG(label_ok == err, "%s: %d of %d errors name the file", name, label_ok, err);
    int tok = ok, terr = err;
    ok = err = 0;
    uint8_t *c = malloc(n);
    for (size_t i = 0; i < n; i += step)
        for (int v = 0; v < (is_png ? 4 : 2); v++) {
            memcpy(c, d, n);
            c[i] ^= (uint8_t)(v % 2 ? 0xff : 1u << (i % 8));
            if (v >= 2) png_fix_crcs(c, n);
            nu_status st = nu_image_load_memory(c, n, name, &b);
            if (st == NU_OK) {
                ok++;
                NU_CHECK(b.pixels && b.width > 0 && b.height > 0 && b.width <= 16384 && b.height <= 16384);
            } else
                err++;
            nu_image_free(&b);
            if (is_png && i % 3 == 0) { /* the text path too */
                memcpy(c, d, n);
                c[i] ^= 0x5a;
                png_fix_crcs(c, n);
                write_all(tpath("flip.png"), c, n);
                nu_image_text *t;
                int nt;
                if (nu_image_read_texts(tpath("flip.png"), &t, &nt) == NU_OK) nu_image_texts_free(t, nt);
            }
        }
    /* random multi-byte corruption */
    int iters = nu_test_quick() ? 100 : 400;
    for (int it = 0; it < iters; it++) {
        memcpy(c, d, n);
        int k = 1 + (int)(rnd() % 8);
        for (int q = 0; q < k; q++) c[rnd() % n] = (uint8_t)rnd();
        if (is_png && it % 2) png_fix_crcs(c, n);
        if (nu_image_load_memory(c, n, name, &b) == NU_OK) ok++;
        else err++;
        nu_image_free(&b);
    }
    free(c);
    printf("hostile %-14s %5zu bytes: truncations %d ok / %d refused; flips %d ok / %d refused\n", name, n, tok, terr,
           ok, err);
}

static void test_hostile(void) {
    /* PNG RGBA with texts */
    nu_image a = make_image(12, 9, 4, false);
    nu_image_text tx[2] = {{"parameters", "steps: 20\nseed: 1"}, {"Comment", "\xe7\x8c\xab"}};
    nu_image_save(tpath("h.png"), &a, tx, 2, 0);
    size_t n;
    uint8_t *d = read_all(tpath("h.png"), &n);
    if (d) hostile_file("h.png", d, n, true, true);
    free(d);
    nu_image_free(&a);
    /* palette PNG with tRNS, zTXt and iTXt, interlaced */
    png_color pal[4] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    png_byte trns[1] = {7};
    uint8_t idx[9 * 7];
    for (int i = 0; i < 63; i++) idx[i] = (uint8_t)(rnd() % 4);
    png_text tt[2];
    memset(tt, 0, sizeof tt);
    tt[0].compression = PNG_TEXT_COMPRESSION_zTXt;
    tt[0].key = "zk";
    tt[0].text = "compressed compressed compressed text";
    tt[1].compression = PNG_ITXT_COMPRESSION_zTXt;
    tt[1].key = "ik";
    tt[1].text = "\xd0\xba\xd0\xbe\xd1\x88\xd0\xba\xd0\xb0 \xd0\xba\xd0\xbe\xd1\x88\xd0\xba\xd0\xb0";
    raw_png rp = {.w = 9, .h = 7, .depth = 8, .ctype = PNG_COLOR_TYPE_PALETTE, .interlace = PNG_INTERLACE_ADAM7,
                  .rows = idx, .pal = pal, .npal = 4, .trns = trns, .ntrns = 1, .texts_before = tt, .n_before = 2};
    membuf m = write_raw_png(&rp);
    hostile_file("pal.png", m.d, m.n, true, true);
    free(m.d);
    /* JPEG baseline and progressive */
    a = make_image(24, 16, 3, true);
    nu_image_save(tpath("h.jpg"), &a, NULL, 0, 80);
    d = read_all(tpath("h.jpg"), &n);
    if (d) hostile_file("h.jpg", d, n, true, false);
    free(d);
    m = write_raw_jpeg(24, 16, 3, JCS_RGB, a.pixels, true);
    hostile_file("prog.jpg", m.d, m.n, true, false);
    free(m.d);
    nu_image_free(&a);
    /* WebP lossless and lossy (truncations may or may not decode: checked for sanity only) */
    a = make_image(12, 8, 4, true);
    if (nu_image_save(tpath("h.webp"), &a, NULL, 0, 100) == NU_OK && (d = read_all(tpath("h.webp"), &n))) {
        hostile_file("lossless.webp", d, n, false, false);
        free(d);
    }
    if (nu_image_save(tpath("h2.webp"), &a, NULL, 0, 70) == NU_OK && (d = read_all(tpath("h2.webp"), &n))) {
        hostile_file("lossy.webp", d, n, false, false);
        free(d);
    }
    nu_image_free(&a);
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* A PNG with a hand-made IHDR (w x h, 8-bit RGBA), a tiny IDAT and IEND, valid CRCs. */
static size_t craft_png(uint8_t *buf, uint32_t w, uint32_t h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(buf, sig, 8);
    uint8_t *p = buf + 8;
    put32(p, 13);
    memcpy(p + 4, "IHDR", 4);
    put32(p + 8, w);
    put32(p + 12, h);
    p[16] = 8, p[17] = 6, p[18] = 0, p[19] = 0, p[20] = 0;
    put32(p + 21, (uint32_t)crc32(0, p + 4, 17));
    p += 25;
    uint8_t z[64];
    uLongf zn = sizeof z;
    uint8_t raw[18] = {0}; /* 2 rows of filter byte + 2 RGBA pixels */
    compress(z, &zn, raw, sizeof raw);
    put32(p, (uint32_t)zn);
    memcpy(p + 4, "IDAT", 4);
    memcpy(p + 8, z, zn);
    put32(p + 8 + zn, (uint32_t)crc32(0, p + 4, (uInt)zn + 4));
    p += 12 + zn;
    put32(p, 0);
    memcpy(p + 4, "IEND", 4);
    put32(p + 8, (uint32_t)crc32(0, p + 4, 4));
    p += 12;
    return (size_t)(p - buf);
}

static void test_oversized(void) {
    uint8_t buf[256];
    nu_image b;
    const uint32_t dims[][2] = {{20000, 10}, {10, 20000}, {16385, 16384}, {0x7fffffff, 0x7fffffff}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        size_t n = craft_png(buf, dims[i][0], dims[i][1]);
        nu_status st = nu_image_load_memory(buf, n, "huge.png", &b);
        NU_CHECK_MSG(st == NU_ERR_UNSUPPORTED && strstr(nu_last_error(), "huge.png") &&
                         strstr(nu_last_error(), "over the limit"),
                     "oversized %ux%u: %d %s", dims[i][0], dims[i][1], st, nu_last_error());
        NU_CHECK(b.pixels == NULL);
    }
    /* Within the side limits but far too little data for the declared pixels: refused before
     * the 1 GiB pixel buffer is allocated. */
    size_t n = craft_png(buf, 16384, 16384);
    nu_status st = nu_image_load_memory(buf, n, "bomb.png", &b);
    NU_CHECK_MSG(st == NU_ERR_FORMAT && strstr(nu_last_error(), "truncated"), "bomb: %d %s", st, nu_last_error());
    /* read_texts refuses too */
    write_all(tpath("huge.png"), buf, craft_png(buf, 20000, 10));
    nu_image_text *t;
    int nt;
    NU_CHECK(nu_image_read_texts(tpath("huge.png"), &t, &nt) == NU_ERR_UNSUPPORTED && t == NULL && nt == 0);
    /* a tiny but valid crafted image loads (checks craft_png itself) */
    n = craft_png(buf, 2, 2);
    NU_CHECK_MSG(nu_image_load_memory(buf, n, "tiny.png", &b) == NU_OK && b.channels == 4, "%s", nu_last_error());
    nu_image_free(&b);

    /* JPEG with a patched SOF: 20000 x 20000 */
    nu_image a = make_image(8, 8, 3, true);
    nu_image_save(tpath("sof.jpg"), &a, NULL, 0, 90);
    nu_image_free(&a);
    uint8_t *d = read_all(tpath("sof.jpg"), &n);
    bool patched = false;
    for (size_t i = 2; d && i + 9 < n; i++)
        if (d[i] == 0xff && (d[i + 1] == 0xc0 || d[i + 1] == 0xc2)) {
            d[i + 5] = 20000 >> 8, d[i + 6] = 20000 & 255, d[i + 7] = 20000 >> 8, d[i + 8] = 20000 & 255;
            patched = true;
            break;
        }
    NU_CHECK(patched);
    st = nu_image_load_memory(d, n, "huge.jpg", &b);
    NU_CHECK_MSG(st == NU_ERR_UNSUPPORTED && strstr(nu_last_error(), "20000x20000"), "huge jpeg: %d %s", st,
                 nu_last_error());
    free(d);
}

static void test_not_images(void) {
    nu_image b;
    write_all(tpath("notes.txt"), "hello, world\n", 13);
    nu_status st = nu_image_load(tpath("notes.txt"), &b);
    NU_CHECK_MSG(st == NU_ERR_FORMAT && strstr(nu_last_error(), "notes.txt: not a PNG, JPEG or WebP image"), "%s",
                 nu_last_error());
    printf("non-image error: %s\n", nu_last_error());
    write_all(tpath("anim.gif"), "GIF89a\x01\x00\x01\x00", 10);
    st = nu_image_load(tpath("anim.gif"), &b);
    NU_CHECK_MSG(st == NU_ERR_UNSUPPORTED && strstr(nu_last_error(), "GIF"), "%s", nu_last_error());
    write_all(tpath("empty.png"), "", 0);
    st = nu_image_load(tpath("empty.png"), &b);
    NU_CHECK_MSG(st == NU_ERR_FORMAT && strstr(nu_last_error(), "empty"), "%s", nu_last_error());
    st = nu_image_load(tpath("missing.png"), &b);
    NU_CHECK_MSG(st == NU_ERR_NOT_FOUND && strstr(nu_last_error(), "missing.png"), "%s", nu_last_error());
    st = nu_image_load(tmpdir, &b);
    NU_CHECK(st == NU_ERR_IO);
    nu_image_text *t;
    int nt;
    NU_CHECK(nu_image_read_texts(tpath("notes.txt"), &t, &nt) == NU_ERR_FORMAT && nt == 0);
    NU_CHECK(nu_image_load_memory(NULL, 0, NULL, &b) == NU_ERR_FORMAT && strstr(nu_last_error(), "<memory>"));
    NU_CHECK(nu_image_load_memory("x", 1, "m", NULL) == NU_ERR_INVALID_ARG);
    /* a truncated signature says truncated */
    NU_CHECK(nu_image_load_memory("\x89PNG", 4, "cut.png", &b) == NU_ERR_FORMAT && strstr(nu_last_error(), "truncated"));
}

static void test_save_errors_atomic(void) {
    nu_image a = make_image(5, 4, 3, false), b;
    char p[512];
    snprintf(p, sizeof p, "%s", tpath("keep.png")); /* tpath's buffers rotate */
    NU_CHECK(nu_image_save(p, &a, NULL, 0, 0) == NU_OK);
    chmod(p, 0640);
    size_t n0;
    uint8_t *before = read_all(p, &n0);
    int entries = count_dir_entries(tmpdir);
    /* failures during encoding leave the existing file untouched and no temp file behind */
    nu_image_text badkey = {"bad  key", "v"};
    NU_CHECK(nu_image_save(p, &a, &badkey, 1, 0) == NU_ERR_INVALID_ARG);
    nu_image bad = a;
    bad.channels = 5;
    NU_CHECK(nu_image_save(p, &bad, NULL, 0, 0) == NU_ERR_INVALID_ARG);
    bad = a;
    bad.width = 0;
    NU_CHECK(nu_image_save(p, &bad, NULL, 0, 0) == NU_ERR_INVALID_ARG);
    bad = a;
    bad.pixels = NULL;
    NU_CHECK(nu_image_save(p, &bad, NULL, 0, 0) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_image_save(tpath("q.jpg"), &a, NULL, 0, 101) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_image_save(tpath("q.jpg"), &a, NULL, 0, -1) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_image_save(tpath("q.jpg"), &a, NULL, -1, 90) == NU_ERR_INVALID_ARG);
    size_t n1;
    uint8_t *after = read_all(p, &n1);
    NU_CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0);
    free(after);
    NU_CHECK(count_dir_entries(tmpdir) == entries);
    /* unknown / missing extension */
    nu_status st = nu_image_save(tpath("x.bmp"), &a, NULL, 0, 0);
    NU_CHECK_MSG(st == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "x.bmp"), "%s", nu_last_error());
    NU_CHECK(nu_image_save(tpath("noext"), &a, NULL, 0, 0) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_image_save(tpath("dir.png/x"), &a, NULL, 0, 0) == NU_ERR_INVALID_ARG);
    NU_CHECK(count_dir_entries(tmpdir) == entries);
    /* write failures: missing folder; destination is a folder (rename fails, temp removed) */
    st = nu_image_save(tpath("no/such/dir/x.png"), &a, NULL, 0, 0);
    NU_CHECK_MSG(st == NU_ERR_IO && strstr(nu_last_error(), "x.png"), "%s", nu_last_error());
    mkdir(tpath("adir.png"), 0755);
    entries = count_dir_entries(tmpdir);
    st = nu_image_save(tpath("adir.png"), &a, NULL, 0, 0);
    NU_CHECK_MSG(st == NU_ERR_IO, "save over a folder: %d %s", st, nu_last_error());
    NU_CHECK(count_dir_entries(tmpdir) == entries);
    rmdir(tpath("adir.png"));
    /* overwrite keeps the permission bits and replaces the content */
    nu_image c = make_image(3, 3, 1, false);
    NU_CHECK(nu_image_save(p, &c, NULL, 0, 0) == NU_OK);
    struct stat sb;
    NU_CHECK_MSG(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0640, "mode %o", (unsigned)sb.st_mode);
    NU_CHECK(nu_image_load(p, &b) == NU_OK && same_image(&b, &c));
    nu_image_free(&b);
    nu_image_free(&c);
    free(before);
    nu_image_free(&a);
}

/* ---------------------------------------------------------------- real images from the system */

static int real_png, real_jpg, real_fail;
static int visit(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)ftw;
    if (type != FTW_F || sb->st_size > (4 << 20)) return 0;
    size_t len = strlen(path);
    bool png = len > 4 && strcasecmp(path + len - 4, ".png") == 0;
    bool jpg = len > 4 && (strcasecmp(path + len - 4, ".jpg") == 0 || (len > 5 && strcasecmp(path + len - 5, ".jpeg") == 0));
    if ((png && real_png >= 12) || (jpg && real_jpg >= 6) || (!png && !jpg)) return 0;
    nu_image b;
    nu_status st = nu_image_load(path, &b);
    if (st != NU_OK) {
        fprintf(stderr, "real image %s: %s\n", path, nu_last_error());
        real_fail++;
    } else {
        NU_CHECK(b.width > 0 && b.height > 0 && b.channels >= 1 && b.channels <= 4);
        nu_image_text *t;
        int nt;
        NU_CHECK(nu_image_read_texts(path, &t, &nt) == NU_OK);
        nu_image_texts_free(t, nt);
        if (png) real_png++;
        else real_jpg++;
    }
    nu_image_free(&b);
    return real_png >= 12 && real_jpg >= 6 ? 1 : 0;
}

static void test_real_images(void) {
    const char *dirs[] = {"/usr/share/pixmaps", "/usr/share/icons", "/usr/share/doc", "/usr/share"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0] && (real_png < 12 || real_jpg < 6); i++)
        if (access(dirs[i], R_OK) == 0) nftw(dirs[i], visit, 16, FTW_PHYS);
    NU_CHECK_MSG(real_fail == 0, "%d real images failed to load", real_fail);
    if (real_png + real_jpg == 0) printf("real images: none found under /usr/share, skipped\n");
    else printf("real images: %d PNG and %d JPEG loaded from /usr/share\n", real_png, real_jpg);
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

int main(void) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/nu_test_image_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_png_roundtrip();
    test_jpeg();
    test_jpeg_cmyk_progressive();
    test_webp();
    test_texts();
    test_png_variants();
    test_hostile();
    test_oversized();
    test_not_images();
    test_save_errors_atomic();
    test_real_images();
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return nu_test_summary("test_image");
}
