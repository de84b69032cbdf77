/*
 * fuzz_image.c — libFuzzer target for the image decoders (src/io/image*.c): every input goes
 * through nu_image_load_memory (PNG / JPEG / WebP by magic bytes, or a clean error), and PNG
 * inputs also through the text-chunk reader (tEXt / zTXt / iTXt). Seeds: fuzz/corpus/image/
 * (tiny PNG gray / RGBA+texts / palette+tRNS+zTXt / 16-bit / interlaced, JPEG baseline /
 * progressive / gray / CMYK, WebP lossless / lossy). Build: cmake -DNU_FUZZ=ON with clang.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "io/image_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nu_image img;
    if (nu_image_load_memory(data, size, "fuzz", &img) == NU_OK) {
        /* touch every byte so that a wrong size shows up under ASan */
        size_t n = (size_t)img.width * (size_t)img.height * (size_t)img.channels;
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < n; i += 61) sink ^= img.pixels[i];
        sink ^= img.pixels[n - 1];
        (void)sink;
    }
    nu_image_free(&img);
    if (size >= 8 && memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0) {
        nu_image_text *t;
        int n;
        if (nu_image_png_decode(data, size, "fuzz", NULL, &t, &n) == NU_OK) {
            for (int i = 0; i < n; i++) (void)strlen(t[i].value);
            nu_image_texts_free(t, n);
        }
    }
    return 0;
}
