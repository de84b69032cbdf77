/*
 * fuzz_json.c — libFuzzer target for the bounded JSON parser (src/io/json.c).
 * Parses the input and walks the whole DOM, reading every string byte and key, so ASan/UBSan see
 * any bad pointer or length. Seeds: fuzz/corpus/json/. Built by `make fuzz` (clang, -DNU_FUZZ=ON).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nuance/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t walk(const nu_json *j) {
    size_t h = (size_t)j->kind + (size_t)j->b + (j->num > 0);
    if (j->kind == NU_JSON_STRING)
        for (size_t i = 0; i <= j->str_len; i++) h = h * 31 + (unsigned char)j->str[i];
    if (j->kind == NU_JSON_ARRAY || j->kind == NU_JSON_OBJECT) {
        for (int i = 0; i < j->n; i++) {
            if (j->kind == NU_JSON_OBJECT) {
                h += strlen(j->keys[i]);
                h += nu_json_get(j, j->keys[i]) != NULL;
            }
            h += walk(nu_json_at(j, i));
        }
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nu_json *j = nu_json_parse((const char *)data, size);
    if (j) {
        volatile size_t sink = walk(j);
        (void)sink;
        (void)nu_json_number(j, "a", 0);
        (void)nu_json_string(j, "a", NULL);
        (void)nu_json_bool(j, "a", false);
        nu_json_free(j);
    }
    return 0;
}
