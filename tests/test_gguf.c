/*
 * test_gguf.c — GGUF reader and writer (src/io/gguf.c).
 *
 * Writer -> reader round trips of every tensor type (F32 F16 BF16 F64 I8 I16 I32 I64 and raw
 * Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 blocks), strided tensors, every writer KV kind; a hand-built
 * file with every value type, arrays of each, nested arrays and general.alignment; v2 files;
 * v1 / unknown / big-endian versions; specific malformed files (each error checked by status
 * and message); hostile sweeps (every truncation, byte flips at every header position) on exact
 * heap copies so ASan catches any over-read (`make test-asan`).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nu_test.h"
#include "nuance/io.h"

static char tmpdir[64];

static const char *tmp_path(const char *name) {
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    return buf;
}

static uint64_t rng_state = 0x9876543;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}


/* ---------------------------------------------------------------- byte builder */

typedef struct bb {
    uint8_t *p;
    size_t n, cap;
} bb;

static void b_raw(bb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void b_le(bb *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) {
        uint8_t c = (uint8_t)(v >> (8 * i));
        b_raw(b, &c, 1);
    }
}
static void b_u32(bb *b, uint32_t v) { b_le(b, v, 4); }
static void b_u64(bb *b, uint64_t v) { b_le(b, v, 8); }
static void b_str(bb *b, const char *s) {
    b_u64(b, strlen(s));
    b_raw(b, s, strlen(s));
}
static void b_pad(bb *b, size_t align) {
    while (b->n % align) b_le(b, 0, 1);
}
static void b_header(bb *b, uint32_t version, uint64_t nt, uint64_t nkv) {
    b_raw(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, nt);
    b_u64(b, nkv);
}
static void b_tensor(bb *b, const char *name, int nd, const uint64_t *dims_inner_first, uint32_t type, uint64_t off) {
    b_str(b, name);
    b_u32(b, (uint32_t)nd);
    for (int i = 0; i < nd; i++) b_u64(b, dims_inner_first[i]);
    b_u32(b, type);
    b_u64(b, off);
}

/* Opens an exactly sized heap copy; touches every tensor's and array's bytes on success. */
static nu_status open_copy(const uint8_t *buf, size_t len, size_t *sink) {
    uint8_t *c = malloc(len ? len : 1);
    memcpy(c, buf, len);
    nu_gguf *g = NULL;
    nu_status st = nu_gguf_open_memory(c, len, "fuzz", &g);
    if (st == NU_OK) {
        size_t h = 0;
        for (int i = 0; i < nu_gguf_tensor_count(g); i++) {
            const nu_gguf_tensor *t = nu_gguf_tensor_at(g, i);
            for (size_t k = 0; k < t->nbytes; k++) h += ((const uint8_t *)t->data)[k];
            h += strlen(t->name);
        }
        for (int i = 0; i < nu_gguf_kv_count(g); i++) {
            const nu_gguf_kv *kv = nu_gguf_kv_at(g, i);
            h += strlen(kv->key);
            if (kv->type == NU_GGUF_STRING) h += strlen(kv->str);
            if (kv->type == NU_GGUF_ARRAY && kv->arr_type == NU_GGUF_STRING)
                for (uint64_t k = 0; k < kv->arr_n; k++) h += strlen(kv->arr_str[k]);
            if (kv->type == NU_GGUF_ARRAY && kv->arr_type != NU_GGUF_STRING && kv->arr_type != NU_GGUF_ARRAY) {
                static const size_t es[NU_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
                for (uint64_t k = 0; k < kv->arr_n * es[kv->arr_type]; k++) h += ((const uint8_t *)kv->arr)[k];
            }
        }
        *sink += h;
    } else {
        NU_CHECK(g == NULL && nu_last_error()[0] != 0);
    }
    nu_gguf_close(g);
    free(c);
    return st;
}

/* ---------------------------------------------------------------- writer round trip */

static const nu_type all_types[] = {NU_TYPE_F32,  NU_TYPE_F16,  NU_TYPE_BF16, NU_TYPE_F64,  NU_TYPE_I8,
                                    NU_TYPE_I16,  NU_TYPE_I32,  NU_TYPE_I64,  NU_TYPE_Q8_0, NU_TYPE_Q4_0,
                                    NU_TYPE_Q4_1, NU_TYPE_Q5_0, NU_TYPE_Q5_1};
enum { N_TYPES = sizeof all_types / sizeof all_types[0] };

static void test_roundtrip(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_gguf_writer *w = nu_gguf_writer_new();
    nu_gguf_writer_set_str(w, "general.architecture", "tiny");
    nu_gguf_writer_set_u32(w, "n.u32", 4000000000u);
    nu_gguf_writer_set_i32(w, "n.i32", -7);
    nu_gguf_writer_set_f32(w, "n.f32", 0.125f);
    nu_gguf_writer_set_bool(w, "n.bool", true);
    nu_gguf_writer_set_i32(w, "n.replaced", 1);
    nu_gguf_writer_set_str(w, "n.replaced", "now a string");
    const char *toks[] = {"a", "", "\xC3\xA9", "long token with spaces"};
    nu_gguf_writer_set_arr_str(w, "tok.list", toks, 4);
    const int32_t ints[] = {1, -2, 2147483647, -2147483647 - 1, 0};
    nu_gguf_writer_set_arr_i32(w, "tok.ids", ints, 5);
    nu_gguf_writer_set_arr_i32(w, "tok.none", NULL, 0);

    nu_tensor *ts[N_TYPES * 2];
    int n = 0;
    for (int i = 0; i < N_TYPES; i++) {
        bool q = nu_type_info(all_types[i])->is_quant;
        /* [3, 64] for every type; plus a 4-D one [2, 1, 3, 32] (quantized) or [2, 3, 1, 5] */
        const int64_t s2[2] = {3, 64}, s4[4] = {2, 1, 3, q ? 32 : 5};
        nu_tensor *a = nu_new_tensor(ctx, all_types[i], 2, s2);
        nu_tensor *b = nu_new_tensor(ctx, all_types[i], 4, s4);
        nu_tensor *ab[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            uint8_t *p = ab[k]->data;
            for (size_t j = 0; j < nu_nbytes(ab[k]); j++) p[j] = (uint8_t)rnd(); /* raw bytes, any pattern */
            nu_set_name(ab[k], "%s.%s", nu_type_name(all_types[i]), k ? "4d" : "2d");
            nu_gguf_writer_add_tensor(w, ab[k]);
            ts[n++] = ab[k];
        }
    }
    /* a transposed f32 view [6, 4] of a [4, 6] buffer: packed on write */
    float base[24];
    for (int i = 0; i < 24; i++) base[i] = (float)i;
    nu_tensor *tr = nu_new_tensor_ext(ctx, NU_TYPE_F32, 2, (int64_t[]){6, 4}, base);
    tr->nb[0] = 4;
    tr->nb[1] = 24;
    nu_set_name(tr, "transposed");
    nu_gguf_writer_add_tensor(w, tr);
    const char *path = tmp_path("rt.gguf");
    nu_status st = nu_gguf_writer_write(w, path);
    NU_CHECK_MSG(st == NU_OK, "%s", nu_last_error());
    nu_gguf_writer_free(w);

    nu_gguf *g;
    st = nu_gguf_open(path, &g);
    NU_CHECK_MSG(st == NU_OK, "%s", nu_last_error());
    if (st != NU_OK) return;
    NU_CHECK(nu_gguf_version(g) == 3);
    NU_CHECK(nu_gguf_kv_count(g) == 9);
    const nu_gguf_kv *kv = nu_gguf_find_kv(g, "general.architecture");
    NU_CHECK(kv && kv->type == NU_GGUF_STRING && strcmp(kv->str, "tiny") == 0);
    kv = nu_gguf_find_kv(g, "n.u32");
    NU_CHECK(kv && kv->type == NU_GGUF_UINT32 && kv->v.u == 4000000000u);
    kv = nu_gguf_find_kv(g, "n.i32");
    NU_CHECK(kv && kv->type == NU_GGUF_INT32 && kv->v.i == -7);
    kv = nu_gguf_find_kv(g, "n.f32");
    NU_CHECK(kv && kv->type == NU_GGUF_FLOAT32 && kv->v.f == 0.125);
    kv = nu_gguf_find_kv(g, "n.bool");
    NU_CHECK(kv && kv->type == NU_GGUF_BOOL && kv->v.b);
    kv = nu_gguf_find_kv(g, "n.replaced");
    NU_CHECK(kv && kv->type == NU_GGUF_STRING && strcmp(kv->str, "now a string") == 0);
    kv = nu_gguf_find_kv(g, "tok.list");
    NU_CHECK(kv && kv->type == NU_GGUF_ARRAY && kv->arr_type == NU_GGUF_STRING && kv->arr_n == 4);
    if (kv && kv->arr_str)
        for (int i = 0; i < 4; i++) NU_CHECK(strcmp(kv->arr_str[i], toks[i]) == 0);
    kv = nu_gguf_find_kv(g, "tok.ids");
    NU_CHECK(kv && kv->type == NU_GGUF_ARRAY && kv->arr_type == NU_GGUF_INT32 && kv->arr_n == 5);
    if (kv && kv->arr) {
        int32_t got[5];
        memcpy(got, kv->arr, sizeof got); /* raw little-endian bytes in the file (x86: host order) */
        NU_CHECK(memcmp(got, ints, sizeof got) == 0);
    }
    kv = nu_gguf_find_kv(g, "tok.none");
    NU_CHECK(kv && kv->arr_n == 0);
    NU_CHECK(nu_gguf_find_kv(g, "absent") == NULL);
    NU_CHECK(nu_gguf_kv_at(g, 0) && strcmp(nu_gguf_kv_at(g, 0)->key, "general.architecture") == 0); /* file order */
    NU_CHECK(nu_gguf_kv_at(g, -1) == NULL && nu_gguf_kv_at(g, 9) == NULL);

    NU_CHECK(nu_gguf_tensor_count(g) == n + 1);
    const uint8_t *first = NULL;
    for (int i = 0; i < n; i++) {
        const nu_tensor *t = ts[i];
        const nu_gguf_tensor *gt = nu_gguf_find_tensor(g, t->name);
        NU_CHECK_MSG(gt != NULL, "missing %s", t->name);
        if (!gt) continue;
        NU_CHECK(gt == nu_gguf_tensor_at(g, i));
        NU_CHECK_MSG(gt->type == t->type && gt->ndim == t->ndim && gt->nbytes == nu_nbytes(t), "%s", t->name);
        for (int d = 0; d < t->ndim; d++) NU_CHECK_MSG(gt->ne[d] == t->ne[d], "%s dim %d", t->name, d);
        NU_CHECK_MSG(memcmp(gt->data, t->data, gt->nbytes) == 0, "%s bytes", t->name);
        if (!first) first = gt->data;
        NU_CHECK(((const uint8_t *)gt->data - first) % 32 == 0); /* offsets aligned to 32 */
        NU_CHECK(((uintptr_t)gt->data) % 32 == 0);                /* mmap base is page aligned */
        nu_tensor *x;
        NU_CHECK(nu_gguf_get(g, ctx, t->name, &x) == NU_OK);
        NU_CHECK(x->type == t->type && nu_same_shape(x, t) && x->data == gt->data && strcmp(x->name, t->name) == 0);
        NU_CHECK(nu_nbytes(x) == gt->nbytes);
    }
    /* quantized data reads back as the same values */
    nu_tensor *q;
    if (nu_gguf_get(g, ctx, "q8_0.2d", &q) == NU_OK) {
        float a[192], b[192];
        nu_row_to_f32(NU_TYPE_Q8_0, q->data, a, 192);
        nu_row_to_f32(NU_TYPE_Q8_0, ts[16]->data, b, 192);
        NU_CHECK(memcmp(a, b, sizeof a) == 0);
    }
    nu_tensor *x;
    NU_CHECK(nu_gguf_get(g, ctx, "transposed", &x) == NU_OK);
    float want[24];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 4; j++) want[i * 4 + j] = base[j * 6 + i];
    NU_CHECK(x && nu_test_equal("transposed", x->data, want, 24));
    NU_CHECK(nu_gguf_get(g, ctx, "missing", &x) == NU_ERR_NOT_FOUND && x == NULL);
    nu_gguf_close(g);

    /* version 2 has the same layout: patch the version field */
    size_t size;
    uint8_t *buf = nu_test_read_file(path, &size);
    buf[4] = 2;
    NU_CHECK(nu_gguf_open_memory(buf, size, "v2", &g) == NU_OK && nu_gguf_version(g) == 2 &&
             nu_gguf_tensor_count(g) == n + 1);
    nu_gguf_close(g);
    g = NULL;
    buf[4] = 1;
    NU_CHECK(nu_gguf_open_memory(buf, size, "v1", &g) == NU_ERR_UNSUPPORTED && g == NULL);
    NU_CHECK(strstr(nu_last_error(), "version 1") != NULL);
    buf[4] = 4;
    NU_CHECK(nu_gguf_open_memory(buf, size, "v4", &g) == NU_ERR_UNSUPPORTED);
    buf[4] = 0;
    buf[7] = 3;
    NU_CHECK(nu_gguf_open_memory(buf, size, "be", &g) == NU_ERR_UNSUPPORTED);
    NU_CHECK(strstr(nu_last_error(), "big-endian") != NULL);
    free(buf);

    /* writer errors */
    w = nu_gguf_writer_new();
    nu_tensor *u8 = nu_new_tensor(ctx, NU_TYPE_U8, 1, (int64_t[]){4});
    nu_set_name(u8, "u8");
    nu_gguf_writer_add_tensor(w, u8);
    NU_CHECK(nu_gguf_writer_write(w, tmp_path("u8.gguf")) == NU_ERR_UNSUPPORTED);
    NU_CHECK(access(tmp_path("u8.gguf"), F_OK) != 0);
    nu_gguf_writer_free(w);
    w = nu_gguf_writer_new();
    nu_gguf_writer_add_tensor(w, ts[0]);
    nu_gguf_writer_add_tensor(w, ts[0]);
    NU_CHECK(nu_gguf_writer_write(w, tmp_path("dup.gguf")) == NU_ERR_INVALID_ARG);
    nu_gguf_writer_free(w);
    w = nu_gguf_writer_new();
    nu_gguf_writer_set_u32(w, "general.alignment", 64);
    NU_CHECK(nu_gguf_writer_write(w, tmp_path("al.gguf")) == NU_ERR_INVALID_ARG);
    nu_gguf_writer_free(w);
    w = nu_gguf_writer_new();
    nu_gguf_writer_set_str(w, NULL, "x");
    NU_CHECK(nu_gguf_writer_write(w, tmp_path("nul.gguf")) != NU_OK);
    nu_gguf_writer_free(w);
    /* an empty file (no tensors, no keys) */
    w = nu_gguf_writer_new();
    NU_CHECK(nu_gguf_writer_write(w, tmp_path("empty.gguf")) == NU_OK);
    nu_gguf_writer_free(w);
    NU_CHECK(nu_gguf_open(tmp_path("empty.gguf"), &g) == NU_OK && nu_gguf_tensor_count(g) == 0 && nu_gguf_kv_count(g) == 0);
    nu_gguf_close(g);
    NU_CHECK(nu_gguf_open(tmp_path("missing.gguf"), &g) == NU_ERR_NOT_FOUND);
    nu_gguf_writer_free(NULL);
    nu_ctx_free(ctx);
}

/* ---------------------------------------------------------------- hand-built files */

/* A file with every value type, arrays and nested arrays, general.alignment = 64, two tensors. */
static void build_full(bb *b, uint64_t alignment) {
    b_header(b, 3, 2, 20);
    b_str(b, "u8"); b_u32(b, NU_GGUF_UINT8); b_le(b, 200, 1);
    b_str(b, "i8"); b_u32(b, NU_GGUF_INT8); b_le(b, 0xFF, 1);
    b_str(b, "u16"); b_u32(b, NU_GGUF_UINT16); b_le(b, 65535, 2);
    b_str(b, "i16"); b_u32(b, NU_GGUF_INT16); b_le(b, 0x8000, 2);
    b_str(b, "u32"); b_u32(b, NU_GGUF_UINT32); b_u32(b, 0xFFFFFFFFu);
    b_str(b, "i32"); b_u32(b, NU_GGUF_INT32); b_u32(b, 0xFFFFFFFEu);
    float f = -1.5f; uint32_t fb; memcpy(&fb, &f, 4);
    b_str(b, "f32"); b_u32(b, NU_GGUF_FLOAT32); b_u32(b, fb);
    b_str(b, "bool"); b_u32(b, NU_GGUF_BOOL); b_le(b, 1, 1);
    b_str(b, "str"); b_u32(b, NU_GGUF_STRING); b_str(b, "hello");
    b_str(b, "u64"); b_u32(b, NU_GGUF_UINT64); b_u64(b, 0xFFFFFFFFFFFFFFFFull);
    b_str(b, "i64"); b_u32(b, NU_GGUF_INT64); b_u64(b, (uint64_t)-5);
    double d = 3.25; uint64_t db; memcpy(&db, &d, 8);
    b_str(b, "f64"); b_u32(b, NU_GGUF_FLOAT64); b_u64(b, db);
    b_str(b, "arr.f32"); b_u32(b, NU_GGUF_ARRAY); b_u32(b, NU_GGUF_FLOAT32); b_u64(b, 3);
    for (int i = 0; i < 3; i++) { float v = (float)i * 0.5f; memcpy(&fb, &v, 4); b_u32(b, fb); }
    b_str(b, "arr.u8"); b_u32(b, NU_GGUF_ARRAY); b_u32(b, NU_GGUF_UINT8); b_u64(b, 5); b_raw(b, "\1\2\3\4\5", 5);
    b_str(b, "arr.bool"); b_u32(b, NU_GGUF_ARRAY); b_u32(b, NU_GGUF_BOOL); b_u64(b, 2); b_raw(b, "\1\0", 2);
    b_str(b, "arr.i64"); b_u32(b, NU_GGUF_ARRAY); b_u32(b, NU_GGUF_INT64); b_u64(b, 1); b_u64(b, (uint64_t)-9);
    b_str(b, "arr.str"); b_u32(b, NU_GGUF_ARRAY); b_u32(b, NU_GGUF_STRING); b_u64(b, 2); b_str(b, "x"); b_str(b, "yz");
    /* nested: array of 2 arrays: [["p","q"], [int16 7, int16 8, int16 9]] */
    b_str(b, "arr.nested"); b_u32(b, NU_GGUF_ARRAY); b_u32(b, NU_GGUF_ARRAY); b_u64(b, 2);
    b_u32(b, NU_GGUF_STRING); b_u64(b, 2); b_str(b, "p"); b_str(b, "q");
    b_u32(b, NU_GGUF_INT16); b_u64(b, 3); b_le(b, 7, 2); b_le(b, 8, 2); b_le(b, 9, 2);
    b_str(b, "arr.empty"); b_u32(b, NU_GGUF_ARRAY); b_u32(b, NU_GGUF_FLOAT64); b_u64(b, 0);
    b_str(b, "general.alignment"); b_u32(b, NU_GGUF_UINT32); b_u32(b, (uint32_t)alignment);
    /* tensors: f32 [2, 3] (dims innermost first: 3, 2) at 0; q4_0 [2, 64] at alignment */
    b_tensor(b, "w.f32", 2, (uint64_t[]){3, 2}, 0, 0);
    b_tensor(b, "w.q4", 2, (uint64_t[]){64, 2}, 2, (24 + alignment - 1) / alignment * alignment);
    b_pad(b, alignment);
    for (int i = 0; i < 6; i++) { float v = (float)i; memcpy(&fb, &v, 4); b_u32(b, fb); }
    b_pad(b, alignment);
    for (int i = 0; i < 2 * 2 * 18; i++) b_le(b, (uint64_t)i, 1);
}

static void test_handbuilt(void) {
    bb b = {0};
    build_full(&b, 64);
    nu_gguf *g;
    nu_status st = nu_gguf_open_memory(b.p, b.n, "full", &g);
    NU_CHECK_MSG(st == NU_OK, "%s", nu_last_error());
    if (st == NU_OK) {
        NU_CHECK(nu_gguf_kv_count(g) == 20 && nu_gguf_tensor_count(g) == 2);
        const nu_gguf_kv *kv;
#define KV(k) ((kv = nu_gguf_find_kv(g, k)) != NULL)
        NU_CHECK(KV("u8") && kv->type == NU_GGUF_UINT8 && kv->v.u == 200);
        NU_CHECK(KV("i8") && kv->type == NU_GGUF_INT8 && kv->v.i == -1);
        NU_CHECK(KV("u16") && kv->v.u == 65535);
        NU_CHECK(KV("i16") && kv->v.i == -32768);
        NU_CHECK(KV("u32") && kv->v.u == 0xFFFFFFFFu);
        NU_CHECK(KV("i32") && kv->v.i == -2);
        NU_CHECK(KV("f32") && kv->v.f == -1.5);
        NU_CHECK(KV("bool") && kv->v.b);
        NU_CHECK(KV("str") && strcmp(kv->str, "hello") == 0);
        NU_CHECK(KV("u64") && kv->v.u == 0xFFFFFFFFFFFFFFFFull);
        NU_CHECK(KV("i64") && kv->v.i == -5);
        NU_CHECK(KV("f64") && kv->v.f == 3.25);
        NU_CHECK(KV("arr.f32") && kv->arr_type == NU_GGUF_FLOAT32 && kv->arr_n == 3);
        if (kv) { float v[3]; memcpy(v, kv->arr, 12); NU_CHECK(v[0] == 0 && v[1] == 0.5f && v[2] == 1.0f); }
        NU_CHECK(KV("arr.u8") && kv->arr_n == 5 && memcmp(kv->arr, "\1\2\3\4\5", 5) == 0);
        NU_CHECK(KV("arr.bool") && kv->arr_type == NU_GGUF_BOOL && kv->arr_n == 2);
        NU_CHECK(KV("arr.i64") && kv->arr_n == 1);
        NU_CHECK(KV("arr.str") && kv->arr_n == 2 && strcmp(kv->arr_str[0], "x") == 0 && strcmp(kv->arr_str[1], "yz") == 0);
        NU_CHECK(KV("arr.nested") && kv->arr_type == NU_GGUF_ARRAY && kv->arr_n == 2 && kv->arr != NULL);
        NU_CHECK(KV("arr.empty") && kv->arr_n == 0);
#undef KV
        const nu_gguf_tensor *t = nu_gguf_find_tensor(g, "w.f32");
        NU_CHECK(t && t->type == NU_TYPE_F32 && t->ndim == 2 && t->ne[0] == 2 && t->ne[1] == 3 && t->nbytes == 24);
        NU_CHECK(t && ((const uint8_t *)t->data - b.p) % 64 == 0 && ((const float *)t->data)[5] == 5.0f);
        t = nu_gguf_find_tensor(g, "w.q4");
        NU_CHECK(t && t->type == NU_TYPE_Q4_0 && t->ne[0] == 2 && t->ne[1] == 64 && t->nbytes == 72);
        NU_CHECK(t && ((const uint8_t *)t->data)[71] == 71);
        nu_gguf_close(g);
    }
    free(b.p);
    /* the same content with alignment 1 and 8 (unaligned f32 data is copied by nu_gguf_get) */
    for (uint64_t al = 1; al <= 8; al *= 8) {
        bb c = {0};
        build_full(&c, al);
        NU_CHECK(nu_gguf_open_memory(c.p, c.n, "al", &g) == NU_OK);
        nu_ctx *ctx = nu_ctx_new(NULL);
        nu_tensor *t;
        if (g && nu_gguf_get(g, ctx, "w.f32", &t) == NU_OK) {
            NU_CHECK(((uintptr_t)t->data & 3) == 0 && ((float *)t->data)[4] == 4.0f);
        } else NU_CHECK_MSG(0, "%s", nu_last_error());
        nu_ctx_free(ctx);
        nu_gguf_close(g);
        free(c.p);
    }
}

/* ---------------------------------------------------------------- malformed files */

static void expect(const bb *b, nu_status want, const char *msg_part, const char *what) {
    size_t sink = 0;
    nu_status st = open_copy(b->p, b->n, &sink);
    NU_CHECK_MSG(st == want, "%s: got %s want %s (%s)", what, nu_status_name(st), nu_status_name(want), nu_last_error());
    if (msg_part && st != NU_OK)
        NU_CHECK_MSG(strstr(nu_last_error(), msg_part) != NULL, "%s: message '%s' lacks '%s'", what, nu_last_error(), msg_part);
}

/* One file with a single tensor described by (dims, type, offset) and data_bytes of data. */
static void one_tensor(bb *b, int nd, const uint64_t *dims, uint32_t type, uint64_t off, size_t data_bytes) {
    b->n = 0;
    b_header(b, 3, 1, 0);
    b_tensor(b, "t", nd, dims, type, off);
    b_pad(b, 32);
    for (size_t i = 0; i < data_bytes; i++) b_le(b, 0, 1);
}

static void test_malformed(void) {
    bb b = {0};
    /* magic, version */
    b_raw(&b, "GGUX", 4); b_u32(&b, 3); b_u64(&b, 0); b_u64(&b, 0);
    expect(&b, NU_ERR_FORMAT, "magic", "bad magic");
    b.n = 0; b_raw(&b, "GG", 2);
    expect(&b, NU_ERR_FORMAT, "magic", "short magic");
    b.n = 0; b_raw(&b, "GGUF", 4); b_le(&b, 3, 2);
    expect(&b, NU_ERR_FORMAT, "truncated", "short version");
    b.n = 0; b_header(&b, 3, 0, 0);
    expect(&b, NU_OK, NULL, "empty");
    b.n -= 1;
    expect(&b, NU_ERR_FORMAT, "truncated", "short counts");
    /* counts */
    b.n = 0; b_header(&b, 3, 1ull << 40, 0);
    expect(&b, NU_ERR_FORMAT, "tensor count", "huge tensor count");
    b.n = 0; b_header(&b, 3, 0, 1ull << 62);
    expect(&b, NU_ERR_FORMAT, "kv count", "huge kv count");
    b.n = 0; b_header(&b, 3, 1000, 1000);
    expect(&b, NU_ERR_FORMAT, "cannot fit", "counts beyond the file");
    /* kv */
    b.n = 0; b_header(&b, 3, 0, 1); b_u64(&b, 1ull << 60); b_raw(&b, "kkkkkkkkkkkk", 12);
    expect(&b, NU_ERR_FORMAT, "limit", "huge key length");
    b.n = 0; b_header(&b, 3, 0, 1); b_u64(&b, 100); b_raw(&b, "kkkkkkkkkkkkk", 13);
    expect(&b, NU_ERR_FORMAT, "truncated", "key past the end");
    b.n = 0; b_header(&b, 3, 0, 1); b_u64(&b, 3); b_raw(&b, "a\0b", 3); b_u32(&b, 0); b_le(&b, 0, 1);
    expect(&b, NU_ERR_FORMAT, "NUL", "key with NUL");
    b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, 13); b_u64(&b, 0);
    expect(&b, NU_ERR_FORMAT, "invalid value type", "value type 13");
    b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, NU_GGUF_BOOL); b_le(&b, 2, 1);
    expect(&b, NU_ERR_FORMAT, "bool", "bool 2");
    b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, NU_GGUF_STRING); b_u64(&b, 1ull << 63);
    expect(&b, NU_ERR_FORMAT, "truncated", "huge string");
    b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, NU_GGUF_ARRAY); b_u32(&b, 99); b_u64(&b, 1);
    expect(&b, NU_ERR_FORMAT, "array element type", "array type 99");
    b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, NU_GGUF_ARRAY); b_u32(&b, NU_GGUF_UINT64); b_u64(&b, 1ull << 61);
    expect(&b, NU_ERR_FORMAT, "truncated", "huge numeric array");
    b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, NU_GGUF_ARRAY); b_u32(&b, NU_GGUF_STRING); b_u64(&b, 1ull << 40);
    expect(&b, NU_ERR_FORMAT, "truncated", "huge string array");
    b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, NU_GGUF_ARRAY); b_u32(&b, NU_GGUF_BOOL); b_u64(&b, 2); b_raw(&b, "\1\7", 2);
    expect(&b, NU_ERR_FORMAT, "bool", "bool array");
    /* nesting: 9 levels of arrays of one array */
    b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, NU_GGUF_ARRAY);
    for (int i = 0; i < 9; i++) { b_u32(&b, NU_GGUF_ARRAY); b_u64(&b, 1); }
    b_u32(&b, NU_GGUF_UINT8); b_u64(&b, 0);
    expect(&b, NU_ERR_FORMAT, "nested", "deep nesting");
    b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, NU_GGUF_ARRAY);
    for (int i = 0; i < 7; i++) { b_u32(&b, NU_GGUF_ARRAY); b_u64(&b, 1); }
    b_u32(&b, NU_GGUF_UINT8); b_u64(&b, 0);
    expect(&b, NU_OK, NULL, "nesting 8");
    b.n = 0; b_header(&b, 3, 0, 2); b_str(&b, "k"); b_u32(&b, 0); b_le(&b, 1, 1); b_str(&b, "k"); b_u32(&b, 0); b_le(&b, 1, 1);
    expect(&b, NU_ERR_FORMAT, "duplicate key", "duplicate key");
    /* alignment */
    const uint32_t bad_al[] = {0, 3, 48};
    for (int i = 0; i < 3; i++) {
        b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "general.alignment"); b_u32(&b, NU_GGUF_UINT32); b_u32(&b, bad_al[i]);
        expect(&b, NU_ERR_FORMAT, "power of two", "bad alignment");
    }
    b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "general.alignment"); b_u32(&b, NU_GGUF_STRING); b_str(&b, "32");
    expect(&b, NU_ERR_FORMAT, "not an integer", "string alignment");
    b.n = 0; b_header(&b, 3, 0, 1); b_str(&b, "general.alignment"); b_u32(&b, NU_GGUF_INT32); b_u32(&b, (uint32_t)-32);
    expect(&b, NU_ERR_FORMAT, "power of two", "negative alignment");
    /* tensors */
    one_tensor(&b, 2, (uint64_t[]){4, 2}, 0, 0, 32);
    expect(&b, NU_OK, NULL, "good tensor");
    one_tensor(&b, 2, (uint64_t[]){4, 2}, 12, 0, 32);
    expect(&b, NU_ERR_UNSUPPORTED, "'t'", "Q4_K names the tensor");
    one_tensor(&b, 2, (uint64_t[]){4, 2}, 12, 0, 32);
    expect(&b, NU_ERR_UNSUPPORTED, "Q4_K", "Q4_K names the type");
    one_tensor(&b, 2, (uint64_t[]){4, 2}, 99, 0, 32);
    expect(&b, NU_ERR_UNSUPPORTED, "ggml type 99", "type 99");
    one_tensor(&b, 0, NULL, 0, 0, 32);
    expect(&b, NU_ERR_FORMAT, "0 dimensions", "0 dims");
    one_tensor(&b, 7, (uint64_t[]){1, 1, 1, 1, 1, 1, 1}, 0, 0, 32);
    expect(&b, NU_ERR_UNSUPPORTED, "dimensions", "7 dims");
    one_tensor(&b, 3, (uint64_t[]){1ull << 32, 1ull << 32, 1ull << 32}, 0, 0, 32);
    expect(&b, NU_ERR_FORMAT, "overflow", "dims overflow");
    one_tensor(&b, 2, (uint64_t[]){1ull << 63, 1}, 0, 0, 32);
    expect(&b, NU_ERR_FORMAT, "too large", "dim > int64");
    one_tensor(&b, 3, (uint64_t[]){0, 1ull << 40, 1ull << 40}, 0, 0, 32);
    expect(&b, NU_ERR_FORMAT, "overflow", "empty tensor with overflowing dims");
    one_tensor(&b, 2, (uint64_t[]){0, 1ull << 40}, 0, 0, 32);
    expect(&b, NU_OK, NULL, "empty tensor");
    one_tensor(&b, 2, (uint64_t[]){48, 2}, 8, 0, 200);
    expect(&b, NU_ERR_FORMAT, "block size", "q8_0 inner 48");
    one_tensor(&b, 2, (uint64_t[]){64, 2}, 8, 0, 136);
    expect(&b, NU_OK, NULL, "q8_0 inner 64");
    one_tensor(&b, 2, (uint64_t[]){64, 2}, 8, 0, 135);
    expect(&b, NU_ERR_FORMAT, "beyond the data", "q8_0 data short");
    one_tensor(&b, 2, (uint64_t[]){4, 2}, 0, 16, 64);
    expect(&b, NU_ERR_FORMAT, "alignment", "misaligned offset");
    one_tensor(&b, 2, (uint64_t[]){4, 2}, 0, 32, 40);
    expect(&b, NU_ERR_FORMAT, "beyond the data", "offset past end");
    one_tensor(&b, 2, (uint64_t[]){4, 2}, 0, 0xFFFFFFFFFFFFFFE0ull, 40);
    expect(&b, NU_ERR_FORMAT, "beyond the data", "offset wraps");
    /* tensor infos end exactly at EOF with a tensor: the data section is missing */
    b.n = 0; b_header(&b, 3, 1, 0); b_tensor(&b, "t", 1, (uint64_t[]){1}, 0, 0);
    expect(&b, NU_ERR_FORMAT, NULL, "no data section");
    /* overlap and duplicates */
    b.n = 0; b_header(&b, 3, 2, 0);
    b_tensor(&b, "a", 1, (uint64_t[]){16}, 0, 0);
    b_tensor(&b, "b", 1, (uint64_t[]){16}, 0, 32);
    b_pad(&b, 32); for (int i = 0; i < 96; i++) b_le(&b, 0, 1);
    expect(&b, NU_ERR_FORMAT, "overlap", "overlap");
    b.n = 0; b_header(&b, 3, 2, 0);
    b_tensor(&b, "a", 1, (uint64_t[]){8}, 0, 0);
    b_tensor(&b, "a", 1, (uint64_t[]){8}, 0, 32);
    b_pad(&b, 32); for (int i = 0; i < 96; i++) b_le(&b, 0, 1);
    expect(&b, NU_ERR_FORMAT, "duplicate tensor", "duplicate tensor");
    b.n = 0; b_header(&b, 3, 1, 0); b_u64(&b, 2); b_raw(&b, "a\0", 2); b_u32(&b, 1); b_u64(&b, 1); b_u32(&b, 0); b_u64(&b, 0);
    b_pad(&b, 32); b_le(&b, 0, 4);
    expect(&b, NU_ERR_FORMAT, "NUL", "tensor name with NUL");
    free(b.p);
}

/* ---------------------------------------------------------------- hostile sweeps */

static void sweep(const char *name, const uint8_t *buf, size_t size, size_t header_end) {
    size_t sink = 0;
    int opened = 0;
    for (size_t c = 0; c <= size; c++) opened += open_copy(buf, c, &sink) == NU_OK;
    NU_CHECK(opened >= 1);
    uint8_t *c = malloc(size);
    int flips = 0, ok = 0;
    int step = nu_test_quick() ? 3 : 1;
    for (size_t p = 0; p < header_end; p += (size_t)step) {
        for (int k = 0; k < 6; k++) {
            memcpy(c, buf, size);
            uint64_t r = rnd();
            switch (k) {
            case 0: c[p] ^= 0x01; break;
            case 1: c[p] ^= 0x80; break;
            case 2: c[p] = 0xFF; break;
            case 3: c[p] = 0x00; break;
            case 4: c[p] = (uint8_t)(r & 0x3F); break; /* small values: plausible types/counts */
            default: c[p] ^= (uint8_t)(1u << (r % 8)); if (p + 1 < size) c[p + 1] = (uint8_t)(r >> 8); break;
            }
            nu_gguf *g = NULL;
            /* the buffer is exactly `size` bytes: ASan catches over-reads */
            if (nu_gguf_open_memory(c, size, "flip", &g) == NU_OK) {
                ok++;
                for (int i = 0; i < nu_gguf_tensor_count(g); i++) {
                    const nu_gguf_tensor *t = nu_gguf_tensor_at(g, i);
                    for (size_t q = 0; q < t->nbytes; q++) sink += ((const uint8_t *)t->data)[q];
                }
            }
            nu_gguf_close(g);
            flips++;
        }
    }
    free(c);
    printf("%s: %zu truncations (%d opened), %d flips (%d opened)\n", name, size + 1, opened, flips, ok);
    (void)sink;
}

static void test_hostile(void) {
    bb b = {0};
    build_full(&b, 32);
    sweep("hand-built", b.p, b.n, b.n);
    free(b.p);
    size_t size;
    uint8_t *buf = nu_test_read_file(tmp_path("rt.gguf"), &size);
    if (buf) {
        /* header = everything before the first tensor data; sweep only the first 2 KB of it fully */
        nu_gguf *g;
        size_t hend = size;
        if (nu_gguf_open_memory(buf, size, "rt", &g) == NU_OK) {
            hend = (size_t)((const uint8_t *)nu_gguf_tensor_at(g, 0)->data - buf);
            nu_gguf_close(g);
        }
        sweep("round-trip file", buf, size, hend);
    }
    free(buf);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nu_test_gguf_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_roundtrip();
    test_handbuilt();
    test_malformed();
    test_hostile();
    int rc = nu_test_summary("test_gguf");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return rc;
}
