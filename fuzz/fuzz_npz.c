/*
 * fuzz_npz.c — libFuzzer target for the .npz reader (src/io/npz.c). Opens the input with
 * nu_npz_open_memory and, on success, decodes every member (inflate, CRC, .npy header, byte
 * order, Fortran order), reads every byte and converts small arrays to double. Seeds:
 * fuzz/corpus/npz/ (numpy-written archives from scripts/make_npz_fixture.py). Built by
 * `make fuzz` (clang, -DNU_FUZZ=ON).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nuance/metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nu_npz *z = NULL;
    if (nu_npz_open_memory(data, size, "fuzz", &z) != NU_OK) return 0;
    size_t h = 0;
    for (int i = 0; i < nu_npz_count(z); i++) {
        const char *key = nu_npz_key(z, i);
        h += strlen(key);
        const nu_npy_array *a;
        if (nu_npz_get(z, key, &a) != NU_OK) continue;
        const uint8_t *p = a->data;
        for (size_t k = 0; k < a->nbytes; k++) h += p[k];
        size_t n = 1;
        for (int d = 0; d < a->ndim; d++) n *= (size_t)a->ne[d];
        if (n <= (1u << 16)) {
            double *v = malloc(sizeof(double) * (n ? n : 1));
            if (v) {
                nu_npy_to_f64(a, v);
                for (size_t k = 0; k < n; k++) h += v[k] > 0;
                free(v);
            }
        }
    }
    volatile size_t sink = h;
    (void)sink;
    nu_npz_close(z);
    return 0;
}
