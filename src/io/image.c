/*
 * image.c — public image API of include/nuance/io.h: load (PNG / JPEG / WebP, detected by magic
 * bytes), save (format by extension, written atomically), PNG text chunks, and freeing.
 *
 * The codecs live in image_png.c, image_jpeg.c and image_webp.c (see image_internal.h); this file
 * only detects, dispatches, validates arguments and does the file I/O. Saving encodes into memory
 * first, then writes a temp file in the destination folder, fsyncs it and renames it over the
 * destination, so a failed save never leaves a partial file or touches an existing one.
 * Tested by tests/test_image.c (round trips, hostile input, atomicity); fuzzed by fuzz/fuzz_image.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/atomic.h"
#include "io/image_internal.h"

/* ---------------------------------------------------------------- shared helpers */

bool nu_image_buf_append(nu_image_buf *b, const void *p, size_t n) {
    if (n == 0) return true;
    if (n > SIZE_MAX - b->size) return false;
    if (b->size + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->size + n) {
            if (cap > SIZE_MAX / 2) {
                cap = b->size + n;
                break;
            }
            cap *= 2;
        }
        uint8_t *d = realloc(b->data, cap);
        if (!d) return false;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->size, p, n);
    b->size += n;
    return true;
}

void nu_image_buf_free(nu_image_buf *b) {
    free(b->data);
    b->data = NULL;
    b->size = b->cap = 0;
}

nu_status nu_image_check_dims(const char *label, const char *format, uint64_t w, uint64_t h) {
    if (w == 0 || h == 0) return nu_error(NU_ERR_FORMAT, "%s: %s image has zero size (%llux%llu)", label, format,
                                          (unsigned long long)w, (unsigned long long)h);
    if (w > NU_IMAGE_MAX_SIDE || h > NU_IMAGE_MAX_SIDE || w * h > NU_IMAGE_MAX_PIXELS)
        return nu_error(NU_ERR_UNSUPPORTED,
                        "%s: %s image is %llux%llu, over the limit of %d px per side and %llu pixels", label,
                        format, (unsigned long long)w, (unsigned long long)h, NU_IMAGE_MAX_SIDE,
                        (unsigned long long)NU_IMAGE_MAX_PIXELS);
    return NU_OK;
}

/* ---------------------------------------------------------------- format detection */

typedef enum img_format { IMG_UNKNOWN, IMG_PNG, IMG_JPEG, IMG_WEBP } img_format;

static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static bool has_prefix(const uint8_t *d, size_t n, const void *magic, size_t m) {
    return n >= m && memcmp(d, magic, m) == 0;
}

/* Sets *fmt, or returns an error that says what the data looks like. */
static nu_status detect(const uint8_t *d, size_t n, const char *label, img_format *fmt) {
    *fmt = IMG_UNKNOWN;
    if (n == 0) return nu_error(NU_ERR_FORMAT, "%s: empty file, not an image", label);
    if (has_prefix(d, n, png_sig, 8)) {
        *fmt = IMG_PNG;
        return NU_OK;
    }
    if (has_prefix(d, n, "\xff\xd8\xff", 3)) {
        *fmt = IMG_JPEG;
        return NU_OK;
    }
    if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0) {
        *fmt = IMG_WEBP;
        return NU_OK;
    }
    /* A short prefix of a known signature: the file was cut off. */
    if (n < 8 && memcmp(d, png_sig, n) == 0) return nu_error(NU_ERR_FORMAT, "%s: truncated PNG data (%zu bytes)", label, n);
    if (n < 3 && memcmp(d, "\xff\xd8\xff", n) == 0)
        return nu_error(NU_ERR_FORMAT, "%s: truncated JPEG data (%zu bytes)", label, n);
    if (n < 12 && memcmp(d, "RIFF", n < 4 ? n : 4) == 0 && (n <= 8 || memcmp(d + 8, "WEBP", n - 8) == 0))
        return nu_error(NU_ERR_FORMAT, "%s: truncated WebP data (%zu bytes)", label, n);
    /* Other image formats people may hand us: say so plainly. */
    static const struct {
        const char *magic;
        size_t len, off;
        const char *name;
    } others[] = {
        {"GIF87a", 6, 0, "GIF"},        {"GIF89a", 6, 0, "GIF"},         {"BM", 2, 0, "BMP"},
        {"II*\0", 4, 0, "TIFF"},        {"MM\0*", 4, 0, "TIFF"},         {"ftypavif", 8, 4, "AVIF"},
        {"ftypheic", 8, 4, "HEIC"},     {"ftypmif1", 8, 4, "HEIF"},      {"\xff\x0a", 2, 0, "JPEG XL"},
        {"\0\0\0\x0cJXL ", 8, 0, "JPEG XL"}, {"qoif", 4, 0, "QOI"},      {"8BPS", 4, 0, "Photoshop"},
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if (n >= others[i].off + others[i].len && memcmp(d + others[i].off, others[i].magic, others[i].len) == 0)
            return nu_error(NU_ERR_UNSUPPORTED, "%s: %s images are not supported (use PNG, JPEG or WebP)", label,
                            others[i].name);
    return nu_error(NU_ERR_FORMAT,
                    "%s: not a PNG, JPEG or WebP image (unrecognised first bytes %02x %02x %02x %02x)", label,
                    d[0], n > 1 ? d[1] : 0, n > 2 ? d[2] : 0, n > 3 ? d[3] : 0);
}

/* ---------------------------------------------------------------- loading */

nu_status nu_image_load_memory(const void *data, size_t size, const char *label, nu_image *out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_image_load_memory: NULL output image");
    memset(out, 0, sizeof *out);
    if (!label) label = "<memory>";
    if (!data && size) return nu_error(NU_ERR_INVALID_ARG, "%s: NULL data with size %zu", label, size);
    const uint8_t *d = data;
    img_format fmt;
    nu_status st = detect(d, size, label, &fmt);
    if (st != NU_OK) return st;
    switch (fmt) {
    case IMG_PNG: return nu_image_png_decode(d, size, label, out, NULL, NULL);
    case IMG_JPEG: return nu_image_jpeg_decode(d, size, label, out);
    case IMG_WEBP: return nu_image_webp_decode(d, size, label, out);
    case IMG_UNKNOWN: break;
    }
    return nu_error(NU_ERR_FORMAT, "%s: not an image", label);
}

nu_status nu_image_load(const char *path, nu_image *out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_image_load: NULL output image");
    memset(out, 0, sizeof *out);
    if (!path || !*path) return nu_error(NU_ERR_INVALID_ARG, "nu_image_load: empty path");
    nu_file_map m;
    nu_status st = nu_file_map_open(path, &m);
    if (st != NU_OK) return st;
    st = nu_image_load_memory(m.data, m.size, path, out);
    nu_file_map_close(&m);
    return st;
}

void nu_image_free(nu_image *img) {
    if (!img) return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

nu_status nu_image_read_texts(const char *path, nu_image_text **out, int *n_out) {
    if (!out || !n_out) return nu_error(NU_ERR_INVALID_ARG, "nu_image_read_texts: NULL output");
    *out = NULL;
    *n_out = 0;
    if (!path || !*path) return nu_error(NU_ERR_INVALID_ARG, "nu_image_read_texts: empty path");
    nu_file_map m;
    nu_status st = nu_file_map_open(path, &m);
    if (st != NU_OK) return st;
    img_format fmt;
    st = detect(m.data, m.size, path, &fmt);
    if (st == NU_OK && fmt == IMG_PNG) st = nu_image_png_decode(m.data, m.size, path, NULL, out, n_out);
    /* JPEG and WebP: no text chunks (their EXIF/XMP metadata is not read). */
    nu_file_map_close(&m);
    return st;
}

void nu_image_texts_free(nu_image_text *t, int n) {
    if (!t) return;
    for (int i = 0; i < n; i++) {
        free(t[i].key);
        free(t[i].value);
    }
    free(t);
}

/* ---------------------------------------------------------------- saving */

nu_status nu_image_save(const char *path, const nu_image *img, const nu_image_text *texts, int n_texts,
                        int quality) {
    if (!path || !*path) return nu_error(NU_ERR_INVALID_ARG, "nu_image_save: empty path");
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *ext = strrchr(base, '.');
    img_format fmt = IMG_UNKNOWN;
    if (ext && strcasecmp(ext, ".png") == 0) fmt = IMG_PNG;
    else if (ext && (strcasecmp(ext, ".jpg") == 0 || strcasecmp(ext, ".jpeg") == 0)) fmt = IMG_JPEG;
    else if (ext && strcasecmp(ext, ".webp") == 0) fmt = IMG_WEBP;
    if (fmt == IMG_UNKNOWN)
        return nu_error(NU_ERR_INVALID_ARG, "%s: unknown image extension %s (use .png, .jpg, .jpeg or .webp)", path,
                        ext ? ext : "(none)");
    if (!img || !img->pixels) return nu_error(NU_ERR_INVALID_ARG, "%s: no image to save", path);
    if (img->channels < 1 || img->channels > 4)
        return nu_error(NU_ERR_INVALID_ARG, "%s: cannot save an image with %d channels (1..4)", path, img->channels);
    if (img->width <= 0 || img->height <= 0 || img->width > NU_IMAGE_MAX_SIDE || img->height > NU_IMAGE_MAX_SIDE ||
        (uint64_t)img->width * (uint64_t)img->height > NU_IMAGE_MAX_PIXELS)
        return nu_error(NU_ERR_INVALID_ARG, "%s: cannot save a %dx%d image (1..%d px per side)", path, img->width,
                        img->height, NU_IMAGE_MAX_SIDE);
    if (quality == 0) quality = 90;
    if (quality < 1 || quality > 100)
        return nu_error(NU_ERR_INVALID_ARG, "%s: quality %d out of range (1..100, 0 = default 90)", path, quality);
    if (n_texts < 0 || (n_texts > 0 && !texts))
        return nu_error(NU_ERR_INVALID_ARG, "%s: bad text list (%d entries)", path, n_texts);

    nu_image_buf buf = {0};
    nu_status st;
    switch (fmt) {
    case IMG_PNG: st = nu_image_png_encode(img, texts, n_texts, path, &buf); break;
    case IMG_JPEG: st = nu_image_jpeg_encode(img, quality, path, &buf); break;
    default: st = nu_image_webp_encode(img, quality, path, &buf); break;
    }
    if (st == NU_OK) st = nu_atomic_write(path, buf.data, buf.size);
    nu_image_buf_free(&buf);
    return st;
}
