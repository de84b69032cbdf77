/*
 * image_png.c — PNG decode / encode through libpng, and PNG text chunks (tEXt, zTXt, iTXt).
 *
 * Decoding: every colour type and bit depth becomes 8-bit gray, gray+alpha, RGB or RGBA (palette
 * expanded, tRNS turned into alpha, 16-bit reduced by keeping the high byte, as PIL does). No gamma
 * or colour-profile correction is applied. Width/height are checked from the raw IHDR before
 * libpng runs (and libpng's user limits are set too), and a file too short to hold its declared
 * pixels even at deflate's best ratio (1032:1) is refused before the pixel buffer is allocated.
 *
 * Text chunks are routed to our own handler (libpng "handle as unknown" + a user chunk callback)
 * so that we can cap the decompressed size of each value (NU_PNG_TEXT_MAX, also libpng's
 * chunk_malloc_max), the total of all values and their number; chunks over a cap are skipped.
 * Keys and tEXt/zTXt values are Latin-1 and converted to UTF-8; iTXt values are UTF-8 and
 * invalid sequences are replaced by U+FFFD. Saving writes ASCII values as tEXt and anything else as
 * uncompressed iTXt, before IDAT (what A1111/PIL do for "parameters").
 *
 * libpng reports errors by longjmp: all state that lives across setjmp sits in a job struct owned
 * by the caller (no clobbered locals), and the caller frees everything on both paths.
 * Tested by tests/test_image.c (all PNG colour types, 16-bit, palette+tRNS, interlace, texts,
 * truncation/byte flips, oversized IHDR); fuzzed by fuzz/fuzz_image.c.
 */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "io/image_internal.h"

/* ---------------------------------------------------------------- UTF-8 / Latin-1 */

/* Length of the valid UTF-8 sequence starting at s (n bytes left), 0 if invalid (RFC 3629:
 * no overlongs, no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}

static bool utf8_valid(const char *s) {
    const uint8_t *p = (const uint8_t *)s;
    size_t n = strlen(s);
    while (n) {
        size_t k = utf8_seq(p, n);
        if (!k) return false;
        p += k;
        n -= k;
    }
    return true;
}

/* Length up to the first NUL (text values end at an embedded NUL, as in libpng). */
static size_t bounded_len(const uint8_t *s, size_t n) {
    const uint8_t *z = memchr(s, 0, n);
    return z ? (size_t)(z - s) : n;
}

/* Latin-1 bytes -> new NUL-terminated UTF-8 string (NULL when out of memory). */
static char *latin1_to_utf8(const uint8_t *s, size_t n) {
    n = bounded_len(s, n);
    char *o = malloc(2 * n + 1), *p = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) *p++ = (char)s[i];
        else {
            *p++ = (char)(0xc0 | (s[i] >> 6));
            *p++ = (char)(0x80 | (s[i] & 0x3f));
        }
    }
    *p = 0;
    return o;
}

/* UTF-8 bytes -> new NUL-terminated string with each invalid byte replaced by U+FFFD. */
static char *utf8_sanitize(const uint8_t *s, size_t n) {
    n = bounded_len(s, n);
    char *o = malloc(3 * n + 1), *p = o;
    if (!o) return NULL;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq(s + i, n - i);
        if (k) {
            memcpy(p, s + i, k);
            p += k;
            i += k;
        } else {
            memcpy(p, "\xef\xbf\xbd", 3);
            p += 3;
            i++;
        }
    }
    *p = 0;
    return o;
}

/* zlib-inflates src into a new buffer of at most cap bytes. NULL when corrupt, over cap, or out
 * of memory (*oom says which). */
static uint8_t *inflate_capped(const uint8_t *src, size_t n, size_t cap, size_t *out_n, bool *oom) {
    *out_n = 0;
    *oom = false;
    if (n > UINT32_MAX) return NULL;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK) {
        *oom = true;
        return NULL;
    }
    size_t size = n * 4 + 256 < cap + 1 ? n * 4 + 256 : cap + 1, used = 0;
    uint8_t *buf = malloc(size);
    if (!buf) {
        inflateEnd(&z);
        *oom = true;
        return NULL;
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)n;
    int rc;
    for (;;) {
        if (used == size) {
            if (size > cap) break; /* produced more than cap bytes: too large */
            size_t ns = size * 2 < cap + 1 ? size * 2 : cap + 1;
            uint8_t *nb = realloc(buf, ns);
            if (!nb) {
                *oom = true;
                break;
            }
            buf = nb;
            size = ns;
        }
        z.next_out = buf + used;
        z.avail_out = (uInt)(size - used);
        rc = inflate(&z, Z_NO_FLUSH);
        used = size - z.avail_out;
        if (rc == Z_STREAM_END) {
            inflateEnd(&z);
            if (used > cap) break;
            *out_n = used;
            return buf;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) break;
        if (rc == Z_BUF_ERROR && z.avail_in == 0) break; /* input ended before the stream did */
    }
    inflateEnd(&z);
    free(buf);
    return NULL;
}

/* ---------------------------------------------------------------- decoding */

typedef struct png_job {
    png_structp png;
    png_infop info;
    const uint8_t *data;
    size_t size, pos;
    bool eof;      /* our reader ran out of data            */
    char msg[200]; /* libpng's error message                */
    nu_status st;  /* set when png_run stops with our error */
    bool want_pixels, want_texts;
    int width, height, channels;
    uint8_t *pixels;
    png_bytep *rows;
    uint8_t *scratch;
    nu_image_text *texts;
    int n_texts, cap_texts;
    size_t text_bytes;
    bool text_oom;
} png_job;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_job *j = png_get_error_ptr(png);
    snprintf(j->msg, sizeof j->msg, "%s", msg ? msg : "unknown error");
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* the library never prints; warnings are recoverable by definition */
}

static void png_read_mem(png_structp png, png_bytep dst, size_t n) {
    png_job *j = png_get_io_ptr(png);
    if (n > j->size - j->pos) {
        j->eof = true;
        png_error(png, "unexpected end of data");
    }
    memcpy(dst, j->data + j->pos, n);
    j->pos += n;
}

static void add_text(png_job *j, char *key, char *value) {
    if (!key || !value) {
        j->text_oom = true;
        free(key);
        free(value);
        return;
    }
    if (j->n_texts == j->cap_texts) {
        int nc = j->cap_texts ? j->cap_texts * 2 : 8;
        nu_image_text *t = realloc(j->texts, (size_t)nc * sizeof *t);
        if (!t) {
            j->text_oom = true;
            free(key);
            free(value);
            return;
        }
        j->texts = t;
        j->cap_texts = nc;
    }
    j->texts[j->n_texts].key = key;
    j->texts[j->n_texts].value = value;
    j->n_texts++;
}

/* Parses one tEXt / zTXt / iTXt chunk (data as stored in the file). Malformed chunks and chunks
 * over the caps are skipped, like libpng does with bad ancillary chunks. */
static void parse_text_chunk(png_job *j, const char *name, const uint8_t *d, size_t n) {
    if (j->n_texts >= NU_PNG_TEXT_COUNT_MAX) return;
    const uint8_t *z = memchr(d, 0, n < 80 ? n : 80);
    if (!z || z == d) return; /* keyword must be 1..79 bytes */
    size_t klen = (size_t)(z - d), off = klen + 1;
    bool compressed = false, utf8 = false;
    if (strcmp(name, "zTXt") == 0) {
        if (off >= n || d[off] != 0) return; /* compression method 0 (deflate) only */
        compressed = true;
        off++;
    } else if (strcmp(name, "iTXt") == 0) {
        if (off + 2 > n || d[off] > 1 || d[off + 1] != 0) return;
        compressed = d[off] == 1;
        off += 2;
        for (int skip = 0; skip < 2; skip++) { /* language tag, translated keyword */
            const uint8_t *e = memchr(d + off, 0, n - off);
            if (!e) return;
            off = (size_t)(e - d) + 1;
        }
        utf8 = true;
    }
    const uint8_t *v = d + off;
    size_t vn = n - off;
    uint8_t *inflated = NULL;
    if (compressed) {
        bool oom;
        inflated = inflate_capped(v, vn, NU_PNG_TEXT_MAX, &vn, &oom);
        if (!inflated) {
            if (oom) j->text_oom = true;
            return;
        }
        v = inflated;
    }
    if (vn <= NU_PNG_TEXT_MAX && j->text_bytes + vn <= NU_PNG_TEXT_TOTAL_MAX) {
        j->text_bytes += vn;
        add_text(j, latin1_to_utf8(d, klen), utf8 ? utf8_sanitize(v, vn) : latin1_to_utf8(v, vn));
    }
    free(inflated);
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int png_user_chunk(png_structp png, png_unknown_chunkp chunk) {
    png_job *j = png_get_user_chunk_ptr(png);
    const char *name = (const char *)chunk->name;
    bool is_text = strcmp(name, "tEXt") == 0 || strcmp(name, "zTXt") == 0 || strcmp(name, "iTXt") == 0;
    /* Other unknown chunks: ancillary ones are dropped (returning 0 would make libpng keep them in
     * memory); critical ones are left unhandled so that libpng refuses the file. */
    if (!is_text) return (chunk->name[0] & 0x20) ? 1 : 0;
    if (!j->want_texts || !chunk->data || !chunk->size) return 1;
    /* libpng passes ancillary chunks on even when their CRC is wrong (it only warns). The whole
     * file is in memory and our reader has just consumed this chunk's CRC, so check it here and
     * drop a damaged chunk, as libpng does for the text chunks it handles itself. */
    if (j->pos >= chunk->size + 12) {
        const uint8_t *c = j->data + j->pos - chunk->size - 12; /* length, type, data, crc */
        if (memcmp(c + 4, name, 4) == 0 &&
            (uint32_t)crc32(0, c + 4, (uInt)chunk->size + 4) != be32(c + 8 + chunk->size))
            return 1;
    }
    parse_text_chunk(j, name, chunk->data, chunk->size);
    return 1; /* handled: libpng does not store it */
}

/* Runs libpng. Returns 0 on success, -1 after a libpng error (j->msg, j->eof), 1 after our own
 * error (j->st). Everything that must survive the longjmp is in *j. */
static int png_run(png_job *j) {
    if (setjmp(png_jmpbuf(j->png))) return -1;
    png_structp png = j->png;
    png_infop info = j->info;
    png_set_read_fn(png, j, png_read_mem);
    png_set_user_limits(png, NU_IMAGE_MAX_SIDE, NU_IMAGE_MAX_SIDE);
    png_set_chunk_malloc_max(png, NU_PNG_TEXT_MAX);
    png_set_chunk_cache_max(png, NU_PNG_TEXT_COUNT_MAX);
    static const png_byte text_chunks[] = "tEXt\0zTXt\0iTXt";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_ALWAYS, text_chunks, 3);
    png_set_read_user_chunk_fn(png, j, png_user_chunk);

    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    if ((j->st = nu_image_check_dims("", "PNG", w, h)) != NU_OK) return 1;
    if (depth == 16) png_set_strip_16(png);
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (ch < 1 || ch > 4 || png_get_bit_depth(png, info) != 8 || rowbytes != (size_t)w * (size_t)ch)
        png_error(png, "unexpected pixel layout after conversion to 8 bits");
    j->width = (int)w;
    j->height = (int)h;
    j->channels = ch;
    if (j->want_pixels) {
        j->pixels = malloc(rowbytes * h);
        j->rows = malloc(sizeof(png_bytep) * h);
        if (!j->pixels || !j->rows) {
            j->st = NU_ERR_NOMEM;
            return 1;
        }
        for (png_uint_32 y = 0; y < h; y++) j->rows[y] = j->pixels + (size_t)y * rowbytes;
        png_read_image(png, j->rows);
    } else {
        j->scratch = malloc(rowbytes);
        if (!j->scratch) {
            j->st = NU_ERR_NOMEM;
            return 1;
        }
        for (int p = 0; p < passes; p++)
            for (png_uint_32 y = 0; y < h; y++) png_read_row(png, j->scratch, NULL);
    }
    png_read_end(png, info);
    return 0;
}

nu_status nu_image_png_decode(const uint8_t *data, size_t size, const char *label, nu_image *out,
                              nu_image_text **texts, int *n_texts) {
    if (out) memset(out, 0, sizeof *out);
    if (texts) *texts = NULL;
    if (n_texts) *n_texts = 0;
    /* Refuse oversized or impossibly short files from the raw IHDR, before libpng allocates. */
    if (size >= 8 + 8 + 13 && memcmp(data + 12, "IHDR", 4) == 0) {
        uint32_t w = be32(data + 16), h = be32(data + 20);
        unsigned depth = data[24], ctype = data[25];
        if (w && h) {
            nu_status st = nu_image_check_dims(label, "PNG", w, h);
            if (st != NU_OK) return st;
            static const unsigned samples[7] = {1, 0, 3, 1, 2, 0, 4};
            unsigned spp = ctype < 7 ? samples[ctype] : 0;
            if (spp && depth >= 1 && depth <= 16) {
                uint64_t min_raw = (uint64_t)h * (((uint64_t)w * spp * depth + 7) / 8);
                if (min_raw / 1032 > (uint64_t)size + 64)
                    return nu_error(NU_ERR_FORMAT, "%s: truncated PNG data (%zu bytes cannot hold a %ux%u image)",
                                    label, size, w, h);
            }
        }
    }

    png_job j;
    memset(&j, 0, sizeof j);
    j.data = data;
    j.size = size;
    j.want_pixels = out != NULL;
    j.want_texts = texts != NULL && n_texts != NULL;
    j.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &j, png_on_error, png_on_warning);
    if (j.png) j.info = png_create_info_struct(j.png);
    int rc = j.info ? png_run(&j) : 2;
    nu_status st = NU_OK;
    if (rc == 2) st = nu_error(NU_ERR_NOMEM, "%s: out of memory starting libpng", label);
    else if (rc == -1 && j.eof) st = nu_error(NU_ERR_FORMAT, "%s: truncated PNG data (libpng: %s)", label, j.msg);
    else if (rc == -1) st = nu_error(NU_ERR_FORMAT, "%s: corrupt PNG data (libpng: %s)", label, j.msg);
    else if (rc == 1 && j.st == NU_ERR_NOMEM)
        st = nu_error(NU_ERR_NOMEM, "%s: out of memory for a %dx%d PNG", label, j.width, j.height);
    else if (rc == 1) st = nu_image_check_dims(label, "PNG", (uint64_t)j.width, (uint64_t)j.height);
    else if (j.text_oom) st = nu_error(NU_ERR_NOMEM, "%s: out of memory reading PNG text chunks", label);
    if (rc == 1 && st == NU_OK) st = nu_error(NU_ERR_FORMAT, "%s: bad PNG header", label);
    png_destroy_read_struct(&j.png, &j.info, NULL);
    free(j.rows);
    free(j.scratch);
    if (st != NU_OK) {
        free(j.pixels);
        nu_image_texts_free(j.texts, j.n_texts);
        return st;
    }
    if (out) {
        out->width = j.width;
        out->height = j.height;
        out->channels = j.channels;
        out->pixels = j.pixels;
    }
    if (texts && n_texts) {
        *texts = j.texts;
        *n_texts = j.n_texts;
    } else
        nu_image_texts_free(j.texts, j.n_texts);
    return NU_OK;
}

/* ---------------------------------------------------------------- encoding */

typedef struct png_wjob {
    png_structp png;
    png_infop info;
    const nu_image *img;
    png_textp pt;
    int n_pt;
    nu_image_buf *out;
    bool oom;
    char msg[200];
} png_wjob;

static void png_write_mem(png_structp png, png_bytep d, size_t n) {
    png_wjob *j = png_get_io_ptr(png);
    if (!nu_image_buf_append(j->out, d, n)) {
        j->oom = true;
        png_error(png, "out of memory");
    }
}

static void png_flush_mem(png_structp png) { (void)png; }

static void png_on_write_error(png_structp png, png_const_charp msg) {
    png_wjob *j = png_get_error_ptr(png);
    snprintf(j->msg, sizeof j->msg, "%s", msg ? msg : "unknown error");
    png_longjmp(png, 1);
}

static int png_wrun(png_wjob *j) {
    if (setjmp(png_jmpbuf(j->png))) return -1;
    const nu_image *img = j->img;
    static const int ctypes[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                  PNG_COLOR_TYPE_RGBA};
    png_set_write_fn(j->png, j, png_write_mem, png_flush_mem);
    png_set_IHDR(j->png, j->info, (png_uint_32)img->width, (png_uint_32)img->height, 8, ctypes[img->channels],
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (j->n_pt) png_set_text(j->png, j->info, j->pt, j->n_pt);
    png_write_info(j->png, j->info);
    size_t stride = (size_t)img->width * (size_t)img->channels;
    for (int y = 0; y < img->height; y++) png_write_row(j->png, img->pixels + (size_t)y * stride);
    png_write_end(j->png, NULL);
    return 0;
}

/* PNG keywords: 1..79 printable Latin-1 characters, no leading, trailing or double spaces. We
 * accept the ASCII subset so that the key is the same bytes in UTF-8 and Latin-1. */
static bool key_ok(const char *k) {
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ') return false;
    for (size_t i = 0; i < n; i++) {
        if (k[i] < 0x20 || k[i] > 0x7e) return false;
        if (k[i] == ' ' && k[i + 1] == ' ') return false;
    }
    return true;
}

static bool is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return false;
    return true;
}

nu_status nu_image_png_encode(const nu_image *img, const nu_image_text *texts, int n_texts, const char *label,
                              nu_image_buf *out) {
    for (int i = 0; i < n_texts; i++) {
        const char *k = texts[i].key, *v = texts[i].value;
        if (!k || !key_ok(k))
            return nu_error(NU_ERR_INVALID_ARG,
                            "%s: bad PNG text key \"%s\" (1..79 printable ASCII characters, no leading, trailing "
                            "or double spaces)",
                            label, k ? k : "(null)");
        if (!v) return nu_error(NU_ERR_INVALID_ARG, "%s: PNG text \"%s\" has no value", label, k);
        size_t vn = strlen(v);
        if (vn > NU_PNG_TEXT_MAX)
            return nu_error(NU_ERR_INVALID_ARG, "%s: PNG text \"%s\" is %zu bytes, over the %zu byte limit", label, k,
                            vn, NU_PNG_TEXT_MAX);
        if (!is_ascii(v) && !utf8_valid(v))
            return nu_error(NU_ERR_INVALID_ARG, "%s: PNG text \"%s\" is not valid UTF-8", label, k);
    }
    png_wjob j;
    memset(&j, 0, sizeof j);
    j.img = img;
    j.out = out;
    if (n_texts > 0) {
        j.pt = calloc((size_t)n_texts, sizeof *j.pt);
        if (!j.pt) return nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
        for (int i = 0; i < n_texts; i++) {
            /* libpng copies keys and values in png_set_text; it does not modify them. */
            j.pt[i].key = (png_charp)(uintptr_t)texts[i].key;
            j.pt[i].text = (png_charp)(uintptr_t)texts[i].value;
            if (is_ascii(texts[i].value)) {
                j.pt[i].compression = PNG_TEXT_COMPRESSION_NONE; /* tEXt */
                j.pt[i].text_length = strlen(texts[i].value);
            } else {
                j.pt[i].compression = PNG_ITXT_COMPRESSION_NONE; /* iTXt, UTF-8, uncompressed */
                j.pt[i].itxt_length = strlen(texts[i].value);
            }
        }
        j.n_pt = n_texts;
    }
    j.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &j, png_on_write_error, png_on_warning);
    if (j.png) j.info = png_create_info_struct(j.png);
    int rc = j.info ? png_wrun(&j) : 2;
    nu_status st = NU_OK;
    if (rc == 2 || (rc != 0 && j.oom)) st = nu_error(NU_ERR_NOMEM, "%s: out of memory encoding PNG", label);
    else if (rc != 0) st = nu_error(NU_ERR_INVALID_ARG, "%s: cannot encode PNG (libpng: %s)", label, j.msg);
    png_destroy_write_struct(&j.png, &j.info);
    free(j.pt);
    return st;
}
