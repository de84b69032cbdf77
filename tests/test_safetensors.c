/*
 * test_safetensors.c — safetensors reader/writer (src/io/safetensors.c, src/io/filemap.c).
 *
 * Round trips of every dtype (incl. zero-size and strided tensors) with metadata; scalar and
 * misaligned hand-made files; specific malformed headers (length beyond the file or the cap,
 * overlapping / out-of-range / reversed offsets, shape-byte mismatch, dim overflow, bad and
 * unsupported dtypes, duplicate names, non-object header, bad metadata); the real files in
 * ../shared/reference (shapes and values against known ones, F16 vs F32 copies of the same
 * weights); and hostile sweeps: truncation at many lengths and byte flips at many positions, in
 * exactly sized heap copies, must return an error or succeed, never crash (ASan in test-asan).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nu_test.h"
#include "nuance/io.h"

static char tmpdir[64];

static const char *tmp_path(const char *name) {
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    return buf;
}

static uint64_t rng_state = 0x1234567;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}


/* Builds "<u64 len><header><data>" in a malloc'd buffer. */
static uint8_t *make_st(const char *header, const void *data, size_t dlen, size_t *size) {
    size_t h = strlen(header);
    *size = 8 + h + dlen;
    uint8_t *b = malloc(*size);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    if (dlen) memcpy(b + 8 + h, data, dlen);
    return b;
}

/* Opens header+data from memory; returns the status (and closes). */
static nu_status try_header(const char *header, size_t dlen) {
    uint8_t *zeros = calloc(1, dlen + 1);
    size_t size;
    uint8_t *b = make_st(header, zeros, dlen, &size);
    nu_st_file *f = NULL;
    nu_status st = nu_st_open_memory(b, size, "case", &f);
    nu_st_close(f);
    free(b);
    free(zeros);
    return st;
}

/* Touches every tensor's bytes; for small ones also builds headers and f32 copies. */
static size_t touch_all(nu_st_file *f) {
    size_t h = 0;
    nu_ctx *ctx = NULL;
    for (int i = 0; i < nu_st_count(f); i++) {
        const nu_st_info *in = nu_st_at(f, i);
        const uint8_t *p = in->data;
        for (size_t k = 0; k < in->nbytes; k++) h += p[k];
        h += strlen(in->name);
        if (in->nbytes <= 4096 && i < 8) {
            if (!ctx) ctx = nu_ctx_new(NULL);
            nu_tensor *t;
            if (nu_st_get(f, ctx, in->name, &t) == NU_OK) h += (size_t)nu_nelements(t);
            if (nu_st_get_f32(f, ctx, in->name, &t) == NU_OK) {
                const float *x = t->data;
                for (int64_t k = 0; k < nu_nelements(t); k++) h += x[k] > 0;
            }
        }
    }
    for (int i = 0; i < nu_st_metadata_count(f); i++) {
        const char *k, *v;
        nu_st_metadata_at(f, i, &k, &v);
        h += strlen(k) + strlen(v);
    }
    nu_ctx_free(ctx);
    return h;
}

/* ---------------------------------------------------------------- round trips */

static const nu_type all_types[] = {NU_TYPE_F64, NU_TYPE_F32, NU_TYPE_F16, NU_TYPE_BF16, NU_TYPE_I64,
                                    NU_TYPE_I32, NU_TYPE_I16, NU_TYPE_I8,  NU_TYPE_U8,   NU_TYPE_BOOL};

/* value i of a test tensor: exactly representable in every type */
static float test_value(nu_type t, int64_t i) {
    if (t == NU_TYPE_BOOL) return (float)(i % 3 == 0);
    if (t == NU_TYPE_U8) return (float)(i * 7 % 256);
    return (float)((i * 37) % 101 - 50) * (nu_type_info(t)->is_float ? 0.25f : 1.0f);
}

static void fill(nu_tensor *t) {
    int64_t n = nu_nelements(t);
    uint8_t *p = t->data;
    for (int64_t i = 0; i < n; i++) {
        float v = test_value(t->type, i);
        switch (t->type) {
        case NU_TYPE_F64: ((double *)p)[i] = v; break;
        case NU_TYPE_F32: ((float *)p)[i] = v; break;
        case NU_TYPE_F16: ((uint16_t *)p)[i] = nu_f32_to_f16(v); break;
        case NU_TYPE_BF16: ((uint16_t *)p)[i] = nu_f32_to_bf16(v); break;
        case NU_TYPE_I64: ((int64_t *)p)[i] = (int64_t)v; break;
        case NU_TYPE_I32: ((int32_t *)p)[i] = (int32_t)v; break;
        case NU_TYPE_I16: ((int16_t *)p)[i] = (int16_t)v; break;
        case NU_TYPE_I8: ((int8_t *)p)[i] = (int8_t)v; break;
        case NU_TYPE_U8: case NU_TYPE_BOOL: p[i] = (uint8_t)v; break;
        default: break;
        }
    }
}

static void test_roundtrip(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    enum { NT = 10 * 3 };
    nu_tensor *ts[NT + 1];
    int n = 0;
    const int64_t shapes[3][4] = {{2, 3}, {5}, {2, 1, 3, 2}};
    const int ndims[3] = {2, 1, 4};
    for (int ti = 0; ti < 10; ti++)
        for (int s = 0; s < 3; s++) {
            nu_tensor *t = nu_new_tensor(ctx, all_types[ti], ndims[s], shapes[s]);
            fill(t);
            nu_set_name(t, "t.%s.%d", nu_type_name(all_types[ti]), s);
            ts[n++] = t;
        }
    ts[n] = nu_new_tensor(ctx, NU_TYPE_F32, 2, (int64_t[]){0, 4}); /* zero-size */
    nu_set_name(ts[n], "empty");
    n++;
    const char *mk[] = {"format", "note", "uni"};
    const char *mv[] = {"pt", "quote \" backslash \\ newline \n tab \t", "\xC3\xA9\xE2\x82\xAC"};
    const char *path = tmp_path("rt.safetensors");
    NU_CHECK(nu_st_save(path, ts, n, mk, mv, 3) == NU_OK);
    struct stat sb;
    NU_CHECK(stat(path, &sb) == 0);

    nu_st_file *f;
    nu_status st = nu_st_open(path, &f);
    NU_CHECK_MSG(st == NU_OK, "%s", nu_last_error());
    if (st != NU_OK) return;
    NU_CHECK(nu_st_count(f) == n);
    NU_CHECK(nu_st_metadata_count(f) == 3);
    for (int i = 0; i < 3; i++) NU_CHECK(nu_st_metadata(f, mk[i]) && strcmp(nu_st_metadata(f, mk[i]), mv[i]) == 0);
    NU_CHECK(nu_st_metadata(f, "absent") == NULL);
    const char *k0, *v0;
    nu_st_metadata_at(f, 0, &k0, &v0);
    NU_CHECK(strcmp(k0, "format") == 0 && strcmp(v0, "pt") == 0);
    nu_st_metadata_at(f, 9, &k0, &v0);
    NU_CHECK(k0 == NULL && v0 == NULL);
    NU_CHECK(nu_st_at(f, -1) == NULL && nu_st_at(f, n) == NULL);
    for (int i = 0; i < n; i++) {
        const nu_tensor *t = ts[i];
        const nu_st_info *in = nu_st_find(f, t->name);
        NU_CHECK_MSG(in != NULL, "missing %s", t->name);
        if (!in) continue;
        NU_CHECK(in == nu_st_at(f, i)); /* header order = save order */
        NU_CHECK(in->type == t->type && in->ndim == t->ndim);
        for (int d = 0; d < t->ndim; d++) NU_CHECK(in->ne[d] == t->ne[d]);
        NU_CHECK(in->nbytes == nu_nbytes(t));
        NU_CHECK(in->nbytes == 0 || memcmp(in->data, t->data, in->nbytes) == 0);
        nu_tensor *g, *g32;
        NU_CHECK(nu_st_get(f, ctx, t->name, &g) == NU_OK);
        NU_CHECK(g->type == t->type && nu_same_shape(g, t) && strcmp(g->name, t->name) == 0);
        NU_CHECK_MSG(g->data == in->data, "%s: nu_st_get copied aligned data", t->name); /* zero copy */
        NU_CHECK(nu_st_get_f32(f, ctx, t->name, &g32) == NU_OK);
        NU_CHECK(g32->type == NU_TYPE_F32 && nu_same_shape(g32, t));
        int64_t ne = nu_nelements(t);
        float *want = malloc((size_t)(ne ? ne : 1) * sizeof(float));
        for (int64_t k = 0; k < ne; k++) want[k] = test_value(t->type, k);
        NU_CHECK(nu_test_equal(t->name, g32->data, want, ne));
        free(want);
    }
    nu_tensor *g;
    NU_CHECK(nu_st_get(f, ctx, "nope", &g) == NU_ERR_NOT_FOUND && g == NULL);
    NU_CHECK(strstr(nu_last_error(), "nope") != NULL);
    NU_CHECK(nu_st_get_f32(f, ctx, "nope", &g) == NU_ERR_NOT_FOUND);
    nu_st_close(f);

    /* the file on disk is 8-byte aligned at the data and its header parses as plain JSON */
    size_t size;
    uint8_t *b = nu_test_read_file(path, &size);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
    NU_CHECK((8 + hl) % 8 == 0);
    nu_json *j = nu_json_parse((const char *)b + 8, hl);
    NU_CHECK(j && strcmp(nu_json_string(nu_json_get(j, "__metadata__"), "format", ""), "pt") == 0);
    NU_CHECK(j && strcmp(nu_json_string(nu_json_get(j, "t.f32.0"), "dtype", ""), "F32") == 0);
    nu_json_free(j);
    free(b);

    /* no metadata, no tensors */
    NU_CHECK(nu_st_save(tmp_path("empty.safetensors"), NULL, 0, NULL, NULL, 0) == NU_OK);
    NU_CHECK(nu_st_open(tmp_path("empty.safetensors"), &f) == NU_OK);
    NU_CHECK(nu_st_count(f) == 0 && nu_st_metadata_count(f) == 0);
    nu_st_close(f);

    /* writer argument errors, and nothing left behind */
    nu_tensor *dup[2] = {ts[0], ts[0]};
    NU_CHECK(nu_st_save(tmp_path("dup.safetensors"), dup, 2, NULL, NULL, 0) == NU_ERR_INVALID_ARG);
    NU_CHECK(access(tmp_path("dup.safetensors"), F_OK) != 0);
    const char *dk[] = {"a", "a"}, *dv[] = {"1", "2"};
    NU_CHECK(nu_st_save(tmp_path("dupk.safetensors"), ts, 1, dk, dv, 2) == NU_ERR_INVALID_ARG);
    nu_tensor *q = nu_new_tensor(ctx, NU_TYPE_Q8_0, 1, (int64_t[]){32});
    nu_set_name(q, "q");
    NU_CHECK(nu_st_save(tmp_path("q.safetensors"), &q, 1, NULL, NULL, 0) == NU_ERR_UNSUPPORTED);
    nu_tensor *noname = nu_new_tensor(ctx, NU_TYPE_F32, 1, (int64_t[]){2});
    NU_CHECK(nu_st_save(tmp_path("nn.safetensors"), &noname, 1, NULL, NULL, 0) == NU_ERR_INVALID_ARG);
    const char *bk[] = {"k"}, *bv[] = {"\xFF\xFE"};
    NU_CHECK(nu_st_save(tmp_path("utf.safetensors"), ts, 1, bk, bv, 1) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_st_save("/nonexistent-dir/x.safetensors", ts, 1, NULL, NULL, 0) == NU_ERR_IO);
    NU_CHECK(nu_st_open(tmp_path("missing.safetensors"), &f) == NU_ERR_NOT_FOUND && f == NULL);
    NU_CHECK(nu_st_open(tmpdir, &f) == NU_ERR_IO); /* a directory */
    /* overwriting an existing file is atomic (the old one stays readable until rename) */
    NU_CHECK(nu_st_save(path, ts, 2, NULL, NULL, 0) == NU_OK);
    NU_CHECK(nu_st_open(path, &f) == NU_OK && nu_st_count(f) == 2);
    nu_st_close(f);
    nu_ctx_free(ctx);
}

static void test_strided_save(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    /* base [4, 6] f32; a transposed view [6, 4] and a column-sliced view [4, 3] (row stride 24 B) */
    float base[24];
    for (int i = 0; i < 24; i++) base[i] = (float)i;
    nu_tensor *tr = nu_new_tensor_ext(ctx, NU_TYPE_F32, 2, (int64_t[]){6, 4}, base);
    tr->nb[0] = 4;
    tr->nb[1] = 24;
    nu_set_name(tr, "transposed");
    nu_tensor *sl = nu_new_tensor_ext(ctx, NU_TYPE_F32, 2, (int64_t[]){4, 3}, base + 1);
    sl->nb[0] = 24;
    sl->nb[1] = 8; /* every other column starting at 1 */
    nu_set_name(sl, "strided");
    uint16_t h16[2 * 3 * 4];
    for (int i = 0; i < 24; i++) h16[i] = nu_f32_to_f16((float)i);
    nu_tensor *p3 = nu_new_tensor_ext(ctx, NU_TYPE_F16, 3, (int64_t[]){4, 3, 2}, h16); /* permute(2,1,0) of [2,3,4] */
    p3->nb[0] = 2;
    p3->nb[1] = 8;
    p3->nb[2] = 24;
    nu_set_name(p3, "permuted3");
    nu_tensor *ts[3] = {tr, sl, p3};
    NU_CHECK(nu_st_save(tmp_path("strided.safetensors"), ts, 3, NULL, NULL, 0) == NU_OK);
    nu_st_file *f;
    NU_CHECK(nu_st_open(tmp_path("strided.safetensors"), &f) == NU_OK);
    nu_tensor *t;
    NU_CHECK(nu_st_get_f32(f, ctx, "transposed", &t) == NU_OK);
    float want[24];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 4; j++) want[i * 4 + j] = base[j * 6 + i];
    NU_CHECK(nu_test_equal("transposed", t->data, want, 24));
    NU_CHECK(nu_st_get_f32(f, ctx, "strided", &t) == NU_OK);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) want[i * 3 + j] = base[i * 6 + 1 + 2 * j];
    NU_CHECK(nu_test_equal("strided", t->data, want, 12));
    NU_CHECK(nu_st_get_f32(f, ctx, "permuted3", &t) == NU_OK);
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 2; c++) want[(a * 3 + b) * 2 + c] = (float)(c * 12 + b * 4 + a);
    NU_CHECK(nu_test_equal("permuted3", t->data, want, 24));
    nu_st_close(f);
    nu_ctx_free(ctx);
}

static void test_handmade(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_st_file *f;
    size_t size;
    /* scalar (shape []) -> info ndim 0, tensor [1] */
    float one = 3.5f;
    uint8_t *b = make_st("{\"alpha\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", &one, 4, &size);
    uint8_t *aligned = aligned_alloc(64, 4096);
    memcpy(aligned, b, size);
    NU_CHECK(nu_st_open_memory(aligned, size, "scalar", &f) == NU_OK);
    const nu_st_info *in = nu_st_find(f, "alpha");
    NU_CHECK(in && in->ndim == 0 && in->nbytes == 4);
    nu_tensor *t;
    NU_CHECK(nu_st_get_f32(f, ctx, "alpha", &t) == NU_OK && t->ndim == 1 && t->ne[0] == 1 && ((float *)t->data)[0] == 3.5f);
    nu_st_close(f);
    free(b);

    /* misaligned data (header length 61): nu_st_get copies, values intact */
    const char *hdr = "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}";
    char h2[128];
    snprintf(h2, sizeof h2, "%-61s", hdr); /* space padded */
    float xs[3] = {1.25f, -2.0f, 1e30f};
    b = make_st(h2, xs, 12, &size);
    memcpy(aligned, b, size);
    NU_CHECK(nu_st_open_memory(aligned, size, "misaligned", &f) == NU_OK);
    in = nu_st_find(f, "x");
    NU_CHECK(in && ((uintptr_t)in->data & 3) != 0);
    NU_CHECK(nu_st_get(f, ctx, "x", &t) == NU_OK && t->data != in->data && ((uintptr_t)t->data & 3) == 0);
    NU_CHECK(nu_test_equal("misaligned get", t->data, xs, 3));
    NU_CHECK(nu_st_get_f32(f, ctx, "x", &t) == NU_OK);
    NU_CHECK(nu_test_equal("misaligned get_f32", t->data, xs, 3));
    nu_st_close(f);
    free(b);
    /* misaligned f16 through the chunked bounce path (more than one chunk) */
    int64_t nh = 20000;
    char h3[160];
    snprintf(h3, sizeof h3, "{\"h\":{\"dtype\":\"F16\",\"shape\":[%lld],\"data_offsets\":[0,%lld]}} ", (long long)nh,
             (long long)(2 * nh));
    uint16_t *hv = malloc((size_t)nh * 2);
    float *hw = malloc((size_t)nh * 4);
    for (int64_t i = 0; i < nh; i++) {
        hw[i] = (float)(i % 2048) - 1024.0f;
        hv[i] = nu_f32_to_f16(hw[i]);
    }
    b = make_st(h3, hv, (size_t)nh * 2, &size);
    uint8_t *odd = malloc(size + 1);
    memcpy(odd + 1, b, size);
    NU_CHECK(nu_st_open_memory(odd + 1, size, "odd", &f) == NU_OK);
    NU_CHECK(nu_st_get_f32(f, ctx, "h", &t) == NU_OK);
    NU_CHECK(nu_test_equal("misaligned f16", t->data, hw, nh));
    nu_st_close(f);
    free(odd);
    free(b);
    free(hv);
    free(hw);
    free(aligned);

    /* every dtype name maps to its type */
    const char *names[] = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"};
    for (int i = 0; i < 10; i++) {
        char h[160];
        size_t es = nu_type_info(all_types[i])->size;
        snprintf(h, sizeof h, "{\"t\":{\"dtype\":\"%s\",\"shape\":[2],\"data_offsets\":[0,%zu]}}", names[i], 2 * es);
        uint8_t zeros[16] = {0};
        b = make_st(h, zeros, 2 * es, &size);
        NU_CHECK(nu_st_open_memory(b, size, names[i], &f) == NU_OK && nu_st_at(f, 0)->type == all_types[i]);
        nu_st_close(f);
        free(b);
    }
    nu_ctx_free(ctx);
}

#define T(json) "{" json "}"
#define ENT(name, dt, shape, off) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off "}"

static void expect(nu_status want, const char *header, size_t dlen, const char *msg_part) {
    nu_status st = try_header(header, dlen);
    NU_CHECK_MSG(st == want, "header %s: got %s want %s (%s)", header, nu_status_name(st), nu_status_name(want),
                 nu_last_error());
    if (msg_part && st != NU_OK)
        NU_CHECK_MSG(strstr(nu_last_error(), msg_part) != NULL, "message '%s' lacks '%s'", nu_last_error(), msg_part);
}

static void test_malformed(void) {
    /* the good one */
    expect(NU_OK, T(ENT("a", "F32", "[2]", "[0,8]") "," ENT("b", "F32", "[2]", "[8,16]")), 16, NULL);
    expect(NU_OK, "{}", 0, NULL);
    expect(NU_OK, "{}       ", 0, NULL);
    expect(NU_OK, T(ENT("z", "F32", "[0,3]", "[16,16]") "," ENT("a", "F32", "[4]", "[0,16]")), 16, NULL); /* empty at the end */
    expect(NU_OK, T(ENT("a", "F32", "[2]", "[0,8]")), 24, NULL); /* trailing bytes are tolerated */
    /* structure */
    expect(NU_ERR_FORMAT, "[1,2]", 0, "start with '{'");
    expect(NU_ERR_FORMAT, " {}", 0, "start with '{'");
    expect(NU_ERR_FORMAT, "{\"a\":", 0, "bad header");
    expect(NU_ERR_FORMAT, "{\"a\":1}", 0, "not an object");
    expect(NU_ERR_FORMAT, T(ENT("a", "F32", "[2]", "[0,8]")) "x", 8, "trailing");
    /* dtype */
    expect(NU_ERR_UNSUPPORTED, T(ENT("w8", "F8_E4M3", "[2]", "[0,2]")), 2, "w8");
    expect(NU_ERR_UNSUPPORTED, T(ENT("w8", "F8_E4M3", "[2]", "[0,2]")), 2, "F8_E4M3");
    expect(NU_ERR_UNSUPPORTED, T(ENT("u", "U32", "[2]", "[0,8]")), 8, "U32");
    expect(NU_ERR_UNSUPPORTED, T(ENT("q", "XYZ", "[2]", "[0,8]")), 8, "XYZ");
    expect(NU_ERR_UNSUPPORTED, T(ENT("q", "f32", "[2]", "[0,8]")), 8, "f32");
    expect(NU_ERR_UNSUPPORTED, T(ENT("q", "F32\\u0000", "[2]", "[0,8]")), 8, "q");
    expect(NU_ERR_FORMAT, "{\"q\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype");
    expect(NU_ERR_FORMAT, "{\"q\":{\"dtype\":1,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype");
    /* shape */
    expect(NU_ERR_FORMAT, "{\"q\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "shape");
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "2", "[0,8]")), 8, "shape");
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[-2]", "[0,8]")), 8, "shape[0]");
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[1.5]", "[0,8]")), 8, "shape[0]");
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[\"2\"]", "[0,8]")), 8, "shape[0]");
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[1e300]", "[0,8]")), 8, "shape[0]");
    expect(NU_ERR_UNSUPPORTED, T(ENT("q", "F32", "[1,1,1,1,1,1,2]", "[0,8]")), 8, "dimensions");
    expect(NU_OK, T(ENT("q", "F32", "[1,1,1,1,1,2]", "[0,8]")), 8, NULL);
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[4294967296,4294967296,16]", "[0,8]")), 8, "overflow");
    expect(NU_ERR_FORMAT, T(ENT("q", "F64", "[4611686018427387904]", "[0,8]")), 8, NULL); /* > 2^53: not exact */
    expect(NU_ERR_FORMAT, T(ENT("q", "F64", "[2305843009213693952]", "[0,8]")), 8, NULL); /* 2^61 * 8 overflows */
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[3]", "[0,8]")), 16, "need 12");
    expect(NU_OK, T(ENT("q", "F32", "[0,4294967296,4096]", "[0,0]")), 0, NULL); /* zero-size */
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[0,4294967296,4294967296,4294967296]", "[0,0]")), 0, "overflow");
    /* offsets */
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[2]", "[8,0]")), 8, "end before begin");
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[2]", "[0,8]")), 4, "beyond the data");
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[2]", "[9007199254740984,9007199254740992]")), 8, "beyond");
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[2]", "[0,8,16]")), 16, "data_offsets");
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[2]", "[-8,0]")), 16, "data_offsets");
    expect(NU_ERR_FORMAT, T(ENT("q", "F32", "[2]", "{}")), 16, "data_offsets");
    expect(NU_ERR_FORMAT, "{\"q\":{\"dtype\":\"F32\",\"shape\":[2]}}", 16, "data_offsets");
    expect(NU_ERR_FORMAT, T(ENT("a", "F32", "[2]", "[0,8]") "," ENT("b", "F32", "[2]", "[4,12]")), 16, "overlap");
    expect(NU_ERR_FORMAT, T(ENT("a", "F32", "[2]", "[0,8]") "," ENT("b", "F32", "[2]", "[0,8]")), 16, "overlap");
    expect(NU_ERR_FORMAT, T(ENT("a", "F32", "[4]", "[0,16]") "," ENT("b", "I8", "[2]", "[14,16]")), 16, "overlap");
    /* names */
    expect(NU_ERR_FORMAT, T(ENT("a", "F32", "[2]", "[0,8]") "," ENT("a", "F32", "[2]", "[8,16]")), 16, "duplicate");
    /* metadata */
    expect(NU_OK, "{\"__metadata__\":{}}", 0, NULL);
    expect(NU_ERR_FORMAT, "{\"__metadata__\":[]}", 0, "__metadata__");
    expect(NU_ERR_FORMAT, "{\"__metadata__\":{\"a\":1}}", 0, "not a string");
    expect(NU_ERR_FORMAT, "{\"__metadata__\":{\"a\":\"x\\u0000y\"}}", 0, "NUL");
    expect(NU_ERR_FORMAT, "{\"__metadata__\":{\"a\":\"x\",\"a\":\"y\"}}", 0, "duplicate");
    expect(NU_ERR_FORMAT, "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate");

    /* length field */
    nu_st_file *f = NULL;
    uint8_t small[8] = {2, 0, 0, 0, 0, 0, 0, 0};
    NU_CHECK(nu_st_open_memory(small, 8, "x", &f) == NU_ERR_FORMAT && f == NULL);
    NU_CHECK(strstr(nu_last_error(), "exceeds the file size") != NULL);
    NU_CHECK(nu_st_open_memory(small, 7, "x", &f) == NU_ERR_FORMAT);
    NU_CHECK(nu_st_open_memory(NULL, 0, "x", &f) == NU_ERR_FORMAT);
    uint8_t huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    NU_CHECK(nu_st_open_memory(huge, 16, "x", &f) == NU_ERR_FORMAT);
    NU_CHECK(strstr(nu_last_error(), "exceeds the file size") != NULL);
    /* a header over the 100 MB cap in a large (sparse, never touched) buffer */
    size_t big = (size_t)101 << 20;
    uint8_t *m = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m != MAP_FAILED) {
        uint64_t hl = (uint64_t)100 * 1000 * 1000 + 1;
        for (int i = 0; i < 8; i++) m[i] = (uint8_t)(hl >> (8 * i));
        m[8] = '{';
        NU_CHECK(nu_st_open_memory(m, big, "big", &f) == NU_ERR_FORMAT);
        NU_CHECK_MSG(strstr(nu_last_error(), "100 MB") != NULL, "%s", nu_last_error());
        munmap(m, big);
    }
    /* a file that is not safetensors at all */
    char path[256];
    snprintf(path, sizeof path, "%s/tests/nu_test.h", NU_SOURCE_DIR);
    NU_CHECK(nu_st_open(path, &f) == NU_ERR_FORMAT);
    NU_CHECK(strstr(nu_last_error(), "nu_test.h") != NULL); /* message names the file */
}

/* ---------------------------------------------------------------- hostile sweeps */

/* Opens an exactly sized heap copy of buf[0..len) (ASan sees over-reads). */
static int open_copy(const uint8_t *buf, size_t len, size_t *sink) {
    uint8_t *c = malloc(len ? len : 1);
    memcpy(c, buf, len);
    nu_st_file *f = NULL;
    nu_status st = nu_st_open_memory(c, len, "fuzz", &f);
    if (st == NU_OK) *sink += touch_all(f);
    else NU_CHECK(f == NULL && nu_last_error()[0] != 0);
    nu_st_close(f);
    free(c);
    return st == NU_OK;
}

/* Truncations at n_cuts lengths (all, if the file is small) and byte flips at n_flips positions
 * (mostly in the header). */
static void sweep(const char *name, const uint8_t *buf, size_t size, int n_cuts, int n_flips) {
    uint64_t hl = 0;
    for (int i = 7; i >= 0 && size >= 8; i--) hl = hl << 8 | buf[i];
    size_t hend = size >= 8 && hl <= size - 8 ? 8 + (size_t)hl : size;
    size_t sink = 0;
    int ok_cut = 0, cuts = 0;
    if (size <= (size_t)n_cuts) {
        for (size_t c = 0; c <= size; c++, cuts++) ok_cut += open_copy(buf, c, &sink);
    } else {
        for (int i = 0; i < n_cuts; i++, cuts++) {
            size_t c;
            if (i >= n_cuts - 4) c = size - (size_t)(n_cuts - 1 - i); /* the last bytes, and the whole file */
            else if (i < 16) c = (size_t)i;                           /* the length field */
            else if (i < 48) c = hend - 16 + (size_t)(i - 16);        /* around the header end */
            else c = (size_t)(rnd() % size);                          /* anywhere (mostly the data) */
            if (c > size) c = size;
            ok_cut += open_copy(buf, c, &sink);
        }
    }
    uint8_t *c = malloc(size);
    memcpy(c, buf, size);
    int ok_flip = 0;
    for (int i = 0; i < n_flips; i++) {
        size_t p;
        if (i < 16) p = (size_t)i % 8;
        else if (i % 10 == 9) p = (size_t)(rnd() % size);
        else p = (size_t)(rnd() % hend);
        uint8_t old = c[p];
        static const uint8_t vals[] = {'"', '{', '}', '[', ']', ',', ':', '0', '9', '-', ' ', 0, 0xFF};
        uint64_t r = rnd();
        c[p] = r & 1 ? (uint8_t)(old ^ (1u << (r >> 1 & 7))) : vals[(r >> 1) % sizeof vals];
        nu_st_file *f = NULL;
        nu_status st = nu_st_open_memory(c, size, "flip", &f);
        if (st == NU_OK) {
            ok_flip++;
            sink += touch_all(f);
        }
        nu_st_close(f);
        c[p] = old;
    }
    free(c);
    printf("%s: %d truncations (%d opened), %d flips (%d opened)\n", name, cuts, ok_cut, n_flips, ok_flip);
    NU_CHECK(ok_cut >= 1); /* the untruncated file at least */
    (void)sink;
}

static void test_hostile_small(void) {
    size_t size;
    uint8_t *b = nu_test_read_file(tmp_path("rt.safetensors"), &size);
    NU_CHECK(b && size > 0);
    if (!b) return;
    /* every truncation; every header byte with a few values */
    size_t sink = 0;
    int ok = 0;
    for (size_t c = 0; c <= size; c++) ok += open_copy(b, c, &sink);
    NU_CHECK(ok >= 1);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
    uint8_t *c = malloc(size);
    int step = nu_test_quick() ? 7 : 1;
    int flips = 0, opened = 0;
    static const uint8_t vals[] = {0x00, '"', '}', ']', ',', '9', 0xFF};
    for (size_t p = 0; p < 8 + hl; p += (size_t)step)
        for (size_t v = 0; v < sizeof vals; v++) {
            memcpy(c, b, size);
            if (c[p] == vals[v]) continue;
            c[p] = vals[v];
            nu_st_file *f = NULL;
            if (nu_st_open_memory(c, size, "flip", &f) == NU_OK) {
                opened++;
                sink += touch_all(f);
            }
            nu_st_close(f);
            flips++;
        }
    free(c);
    free(b);
    printf("round-trip file: %zu truncations (%d opened), %d flips (%d opened)\n", size + 1, ok, flips, opened);
}

/* ---------------------------------------------------------------- real files */

static void check_shape(const nu_st_file *f, const char *name, nu_type type, int ndim, const int64_t *ne) {
    const nu_st_info *in = nu_st_find(f, name);
    NU_CHECK_MSG(in != NULL, "missing %s", name);
    if (!in) return;
    bool same = in->type == type && in->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = in->ne[d] == ne[d];
    NU_CHECK_MSG(same, "%s: wrong dtype/shape", name);
}

static void test_real(void) {
    const char *shared = nu_test_require_shared("test_safetensors real files");
    char p_unet[512], p_ldm[512], p_rng[512], p_te[512];
    snprintf(p_unet, sizeof p_unet, "%s/reference/sd1_tiny/diffusers/unet/diffusion_pytorch_model.safetensors", shared);
    snprintf(p_ldm, sizeof p_ldm, "%s/reference/sd1_tiny/ldm/model.safetensors", shared);
    snprintf(p_rng, sizeof p_rng, "%s/reference/rng/rng.safetensors", shared);
    snprintf(p_te, sizeof p_te, "%s/reference/sd1_tiny/diffusers/text_encoder/model.safetensors", shared);
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_st_file *unet = NULL, *ldm = NULL, *rng = NULL, *te = NULL;
    NU_CHECK_MSG(nu_st_open(p_unet, &unet) == NU_OK, "%s", nu_last_error());
    NU_CHECK_MSG(nu_st_open(p_ldm, &ldm) == NU_OK, "%s", nu_last_error());
    NU_CHECK_MSG(nu_st_open(p_rng, &rng) == NU_OK, "%s", nu_last_error());
    NU_CHECK_MSG(nu_st_open(p_te, &te) == NU_OK, "%s", nu_last_error());
    if (!unet || !ldm || !rng || !te) goto done;

    NU_CHECK(nu_st_count(unet) == 684);
    NU_CHECK(nu_st_metadata(unet, "format") && strcmp(nu_st_metadata(unet, "format"), "pt") == 0);
    check_shape(unet, "conv_in.weight", NU_TYPE_F16, 4, (int64_t[]){16, 4, 3, 3});
    check_shape(unet, "conv_in.bias", NU_TYPE_F16, 1, (int64_t[]){16});
    check_shape(unet, "up_blocks.3.resnets.2.time_emb_proj.weight", NU_TYPE_F16, 2, (int64_t[]){16, 64});
    const nu_st_info *ci = nu_st_find(unet, "conv_in.weight");
    NU_CHECK(ci && ci->nbytes == 1152);

    NU_CHECK(nu_st_count(ldm) == 997);
    check_shape(ldm, "model.diffusion_model.input_blocks.0.0.weight", NU_TYPE_F32, 4, (int64_t[]){16, 4, 3, 3});
    check_shape(ldm, "first_stage_model.decoder.conv_out.weight", NU_TYPE_F32, 4, (int64_t[]){3, 16, 3, 3});
    check_shape(ldm, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", NU_TYPE_F32, 2,
                (int64_t[]){49408, 32});
    check_shape(ldm, "cond_stage_model.transformer.text_model.embeddings.position_ids", NU_TYPE_I64, 2, (int64_t[]){1, 77});
    NU_CHECK(nu_st_metadata(ldm, "producer") != NULL);

    /* F16 diffusers file and F32 LDM file hold identical values (README: f16-exact weights) */
    nu_tensor *a, *b;
    if (nu_st_get_f32(unet, ctx, "conv_in.weight", &a) == NU_OK &&
        nu_st_get(ldm, ctx, "model.diffusion_model.input_blocks.0.0.weight", &b) == NU_OK) {
        NU_CHECK(nu_test_equal("conv_in.weight f16 vs f32", a->data, b->data, 16 * 4 * 9));
        NU_CHECK(b->data == nu_st_find(ldm, "model.diffusion_model.input_blocks.0.0.weight")->data);
    } else NU_CHECK_MSG(0, "%s", nu_last_error());
    if (nu_st_get_f32(te, ctx, "text_model.embeddings.token_embedding.weight", &a) == NU_OK &&
        nu_st_get(ldm, ctx, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", &b) == NU_OK)
        NU_CHECK(nu_test_equal("token_embedding f16 vs f32", a->data, b->data, 49408 * 32));
    else NU_CHECK_MSG(0, "%s", nu_last_error());
    /* position_ids I64 0..76 */
    if (nu_st_get(te, ctx, "text_model.embeddings.position_ids", &a) == NU_OK) {
        NU_CHECK(a->type == NU_TYPE_I64 && a->ne[1] == 77);
        bool ok = true;
        for (int i = 0; i < 77; i++) ok &= ((const int64_t *)a->data)[i] == i;
        NU_CHECK(ok);
    } else NU_CHECK_MSG(0, "%s", nu_last_error());

    NU_CHECK(nu_st_count(rng) == 1496);
    NU_CHECK(nu_st_metadata(rng, "producer") && strcmp(nu_st_metadata(rng, "producer"), "gen_rng.py") == 0);
    check_shape(rng, "sequence/4294967296/9/randn/2x4x8x8", NU_TYPE_F32, 4, (int64_t[]){2, 4, 8, 8});
    check_shape(rng, "global/0/rand/f64/1", NU_TYPE_F64, 1, (int64_t[]){1});
    if (nu_st_get(rng, ctx, "global/0/randint0_1000/i64/8", &a) == NU_OK) {
        const int64_t want[8] = {44, 239, 933, 760, 963, 379, 427, 503}; /* torch.manual_seed(0); randint(0,1000,(8,)) */
        NU_CHECK(a->type == NU_TYPE_I64 && memcmp(a->data, want, sizeof want) == 0);
    } else NU_CHECK_MSG(0, "%s", nu_last_error());
    if (nu_st_get_f32(rng, ctx, "global/0/rand/f64/1", &a) == NU_OK)
        NU_CHECK(((float *)a->data)[0] == (float)0.9700530018065531);
    else NU_CHECK_MSG(0, "%s", nu_last_error());

    /* hostile sweeps over the real files (exact-size copies) */
    {
        size_t size;
        uint8_t *buf = nu_test_read_file(p_unet, &size);
        bool q = nu_test_quick();
        if (buf) sweep("unet f16", buf, size, q ? 60 : 300, q ? 60 : 600);
        free(buf);
        buf = nu_test_read_file(p_rng, &size);
        if (buf) sweep("rng", buf, size, q ? 40 : 150, q ? 40 : 300);
        free(buf);
    }
done:
    nu_st_close(unet);
    nu_st_close(ldm);
    nu_st_close(rng);
    nu_st_close(te);
    nu_ctx_free(ctx);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nu_test_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_roundtrip();
    test_strided_save();
    test_handmade();
    test_malformed();
    test_hostile_small();
    int rc;
    if (nu_test_shared_dir()) test_real();
    else printf("skipped real files: ../shared/reference absent\n");
    rc = nu_test_summary("test_safetensors");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return rc;
}
