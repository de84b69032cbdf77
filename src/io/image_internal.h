/*
 * image_internal.h — shared pieces of the image codecs (src/io/image*.c); not installed.
 *
 * image.c owns the public API (format detection by magic bytes, file reading, atomic saving);
 * image_png.c, image_jpeg.c and image_webp.c each decode from memory and encode into a growable
 * memory buffer. Tested by tests/test_image.c and fuzzed by fuzz/fuzz_image.c.
 */
#ifndef NU_IMAGE_INTERNAL_H
#define NU_IMAGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nuance/io.h"

/* Decoded images are refused above these (checked before any pixel allocation). */
#define NU_IMAGE_MAX_SIDE 16384
#define NU_IMAGE_MAX_PIXELS ((uint64_t)1 << 28)

/* PNG text chunks: decompressed size of one value, sum of all values, and number of chunks kept.
 * Chunks beyond these limits are skipped (the image still loads). */
#define NU_PNG_TEXT_MAX ((size_t)8 << 20)
#define NU_PNG_TEXT_TOTAL_MAX ((size_t)32 << 20)
#define NU_PNG_TEXT_COUNT_MAX 256

/* Growable byte buffer that encoders write into. */
typedef struct nu_image_buf {
    uint8_t *data;
    size_t size, cap;
} nu_image_buf;
/* Appends n bytes; false when out of memory (the buffer is left as it was). */
bool nu_image_buf_append(nu_image_buf *b, const void *p, size_t n);
void nu_image_buf_free(nu_image_buf *b);

/* NU_OK when w x h is within the limits above, else NU_ERR_UNSUPPORTED naming label and format. */
nu_status nu_image_check_dims(const char *label, const char *format, uint64_t w, uint64_t h);

/* Decoders: on success *out holds malloc'ed pixels; on error *out is zeroed. */
/* PNG: out may be NULL to read only the text chunks; texts/n_texts may be NULL to skip them. */
nu_status nu_image_png_decode(const uint8_t *data, size_t size, const char *label, nu_image *out,
                              nu_image_text **texts, int *n_texts);
nu_status nu_image_jpeg_decode(const uint8_t *data, size_t size, const char *label, nu_image *out);
nu_status nu_image_webp_decode(const uint8_t *data, size_t size, const char *label, nu_image *out);

/* Encoders: img is validated by the caller (channels 1..4, sizes within limits, pixels set);
 * quality is already resolved to 1..100. label names the destination in messages. */
nu_status nu_image_png_encode(const nu_image *img, const nu_image_text *texts, int n_texts, const char *label,
                              nu_image_buf *out);
nu_status nu_image_jpeg_encode(const nu_image *img, int quality, const char *label, nu_image_buf *out);
nu_status nu_image_webp_encode(const nu_image *img, int quality, const char *label, nu_image_buf *out);

#endif
