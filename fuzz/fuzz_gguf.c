/*
 * fuzz_gguf.c — libFuzzer target for the GGUF reader (src/io/gguf.c).
 * Opens the input with nu_gguf_open_memory and, on success, reads every byte of every tensor,
 * every string and string array, and the raw bytes of every numeric array; builds tensor
 * headers (nu_gguf_get) and dequantizes small tensors. Seeds: fuzz/corpus/gguf/.
 * Built by `make fuzz` (clang, -DNU_FUZZ=ON).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nuance/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nu_gguf *g = NULL;
    if (nu_gguf_open_memory(data, size, "fuzz", &g) != NU_OK) return 0;
    static const size_t es[NU_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    size_t h = nu_gguf_version(g);
    for (int i = 0; i < nu_gguf_kv_count(g); i++) {
        const nu_gguf_kv *kv = nu_gguf_kv_at(g, i);
        h += strlen(kv->key) + (nu_gguf_find_kv(g, kv->key) != NULL);
        if (kv->type == NU_GGUF_STRING) h += strlen(kv->str);
        if (kv->type != NU_GGUF_ARRAY) continue;
        if (kv->arr_type == NU_GGUF_STRING)
            for (uint64_t k = 0; k < kv->arr_n; k++) h += strlen(kv->arr_str[k]);
        else if (kv->arr_type != NU_GGUF_ARRAY)
            for (uint64_t k = 0; k < kv->arr_n * es[kv->arr_type]; k++) h += ((const uint8_t *)kv->arr)[k];
    }
    nu_ctx *ctx = nu_ctx_new(NULL);
    for (int i = 0; i < nu_gguf_tensor_count(g); i++) {
        const nu_gguf_tensor *t = nu_gguf_tensor_at(g, i);
        for (size_t k = 0; k < t->nbytes; k++) h += ((const uint8_t *)t->data)[k];
        h += strlen(t->name) + (nu_gguf_find_tensor(g, t->name) == t);
        nu_tensor *x;
        if (nu_gguf_get(g, ctx, t->name, &x) != NU_OK) continue;
        int64_t n = nu_nelements(x);
        if (n > 0 && n <= 4096) { /* dequantize / convert small tensors */
            float *buf = malloc((size_t)n * sizeof(float));
            nu_row_to_f32(x->type, x->data, buf, n); /* contiguous; quantized: n % 32 == 0 */
            for (int64_t k = 0; k < n; k++) h += buf[k] > 0;
            free(buf);
        }
    }
    volatile size_t sink = h;
    (void)sink;
    nu_ctx_free(ctx);
    nu_gguf_close(g);
    return 0;
}
