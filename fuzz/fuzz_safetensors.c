/*
 * fuzz_safetensors.c — libFuzzer target for the safetensors reader (src/io/safetensors.c).
 * Opens the input with nu_st_open_memory and, on success, reads every byte of every tensor and
 * metadata entry, builds tensor headers (nu_st_get) and f32 copies (nu_st_get_f32) of the small
 * ones. Seeds: fuzz/corpus/safetensors/. Built by `make fuzz` (clang, -DNU_FUZZ=ON).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nuance/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nu_st_file *f = NULL;
    if (nu_st_open_memory(data, size, "fuzz", &f) != NU_OK) return 0;
    size_t h = 0;
    nu_ctx *ctx = nu_ctx_new(NULL);
    for (int i = 0; i < nu_st_count(f); i++) {
        const nu_st_info *in = nu_st_at(f, i);
        const uint8_t *p = in->data;
        for (size_t k = 0; k < in->nbytes; k++) h += p[k];
        h += strlen(in->name) + (size_t)in->ndim + (size_t)in->type;
        h += nu_st_find(f, in->name) == in;
        if (in->nbytes <= (1u << 16)) {
            nu_tensor *t;
            if (nu_st_get(f, ctx, in->name, &t) == NU_OK) h += (size_t)nu_nbytes(t);
            if (nu_st_get_f32(f, ctx, in->name, &t) == NU_OK) {
                const float *x = t->data;
                for (int64_t k = 0; k < nu_nelements(t); k++) h += x[k] > 0;
            }
        }
    }
    for (int i = 0; i < nu_st_metadata_count(f); i++) {
        const char *k, *v;
        nu_st_metadata_at(f, i, &k, &v);
        h += strlen(k) + strlen(v) + (nu_st_metadata(f, k) != NULL);
    }
    volatile size_t sink = h;
    (void)sink;
    nu_ctx_free(ctx);
    nu_st_close(f);
    return 0;
}
