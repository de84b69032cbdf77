/*
 * gguf.c — GGUF reader (v2 and v3, little-endian, mmap, zero copy) and v3 writer.
 *
 * Layout (GGUF v2/v3; strings are u64 length + bytes, no NUL):
 *   u32 magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x { string key, u32 value type, value }   (ARRAY value: u32 elem type, u64 n, n elems)
 *   n_tensors x { string name, u32 n_dims, u64 dims[n_dims] (innermost first), u32 ggml type,
 *                 u64 offset (relative to the data section, multiple of the alignment) }
 *   padding to general.alignment (default 32), data section.
 * Checked before use: magic, version (v1 and big-endian files are NU_ERR_UNSUPPORTED), counts
 * against caps and against the bytes left, every string / array length against the bytes left,
 * value types, bool bytes, nesting depth of arrays, duplicate keys and tensor names,
 * general.alignment (an integer power of two), dims (1..NU_MAX_DIMS, overflow-checked product,
 * innermost a multiple of the block size for quantized types), ggml type ids (F32 F16 BF16 F64
 * I8 I16 I32 I64 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1; others are NU_ERR_UNSUPPORTED naming the tensor),
 * offsets aligned, within the data section and not overlapping.
 *
 * Tested by tests/test_gguf.c (writer/reader round trips of every type incl. quantized blocks,
 * all value types and nested arrays, v2, hostile input sweeps and specific malformed files) and
 * fuzz/fuzz_gguf.c.
 */
#define _GNU_SOURCE /* qsort_r */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/atomic.h"
#include "nuance/io.h"

#define GGUF_MAX_TENSORS (1u << 20)
#define GGUF_MAX_KV (1u << 20)
#define GGUF_MAX_NAME 4096        /* tensor names and keys */
#define GGUF_MAX_ARRAY_DEPTH 8    /* arrays of arrays of ... */
#define GGUF_DEFAULT_ALIGNMENT 32

/* ---------------------------------------------------------------- ggml type ids */

static const struct {
    uint32_t id;
    nu_type type;
} ggml_types[] = {
    {0, NU_TYPE_F32},   {1, NU_TYPE_F16},   {2, NU_TYPE_Q4_0},  {3, NU_TYPE_Q4_1}, {6, NU_TYPE_Q5_0},
    {7, NU_TYPE_Q5_1},  {8, NU_TYPE_Q8_0},  {24, NU_TYPE_I8},   {25, NU_TYPE_I16}, {26, NU_TYPE_I32},
    {27, NU_TYPE_I64},  {28, NU_TYPE_F64},  {30, NU_TYPE_BF16},
};

/* names of the ggml types nuance does not hold, for error messages */
static const char *ggml_other_name(uint32_t id) {
    static const char *const names[] = {
        [4] = "Q4_2",     [5] = "Q4_3",    [9] = "Q8_1",     [10] = "Q2_K",    [11] = "Q3_K",    [12] = "Q4_K",
        [13] = "Q5_K",    [14] = "Q6_K",   [15] = "Q8_K",    [16] = "IQ2_XXS", [17] = "IQ2_XS",  [18] = "IQ3_XXS",
        [19] = "IQ1_S",   [20] = "IQ4_NL", [21] = "IQ3_S",   [22] = "IQ2_S",   [23] = "IQ4_XS",  [29] = "IQ1_M",
        [34] = "TQ1_0",   [35] = "TQ2_0",
    };
    if (id < sizeof names / sizeof names[0] && names[id]) return names[id];
    return "unknown";
}

static bool ggml_to_nu(uint32_t id, nu_type *t) {
    for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++)
        if (ggml_types[i].id == id) {
            *t = ggml_types[i].type;
            return true;
        }
    return false;
}

static bool nu_to_ggml(nu_type t, uint32_t *id) {
    for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++)
        if (ggml_types[i].type == t) {
            *id = ggml_types[i].id;
            return true;
        }
    return false;
}

/* byte size of one scalar value type, 0 for STRING / ARRAY / invalid */
static size_t vtype_size(uint32_t t) {
    switch (t) {
    case NU_GGUF_UINT8: case NU_GGUF_INT8: case NU_GGUF_BOOL: return 1;
    case NU_GGUF_UINT16: case NU_GGUF_INT16: return 2;
    case NU_GGUF_UINT32: case NU_GGUF_INT32: case NU_GGUF_FLOAT32: return 4;
    case NU_GGUF_UINT64: case NU_GGUF_INT64: case NU_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static const char *vtype_name(uint32_t t) {
    static const char *const n[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                    "bool",  "string", "array",  "uint64", "int64",  "float64"};
    return t < NU_GGUF_VTYPE_COUNT ? n[t] : "invalid";
}

/* ---------------------------------------------------------------- handle */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(16) char mem[];
} chunk;

struct nu_gguf {
    nu_file_map map; /* fd < 0 for nu_gguf_open_memory */
    const uint8_t *base;
    size_t size;
    char *label;
    uint32_t version;
    uint64_t alignment;
    size_t data_offset;
    int n_kv, n_t;
    nu_gguf_kv *kvs;
    nu_gguf_tensor *tensors;
    int *kv_sorted, *t_sorted; /* indices sorted by key / name */
    chunk *arena;               /* strings and string arrays */
};

static void *arena_alloc(nu_gguf *g, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!g->arena || g->arena->cap - g->arena->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        chunk *c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = g->arena;
        c->used = 0;
        c->cap = cap;
        g->arena = c;
    }
    void *p = g->arena->mem + g->arena->used;
    g->arena->used += n;
    return p;
}

static void gguf_free(nu_gguf *g) {
    if (!g) return;
    while (g->arena) {
        chunk *c = g->arena;
        g->arena = c->next;
        free(c);
    }
    free(g->kvs);
    free(g->tensors);
    free(g->kv_sorted);
    free(g->t_sorted);
    free(g->label);
    nu_file_map_close(&g->map);
    free(g);
}

/* ---------------------------------------------------------------- reader */

typedef struct rd {
    nu_gguf *g;
    size_t pos;
} rd;

static nu_status trunc_err(rd *r, const char *what) {
    return nu_error(NU_ERR_FORMAT, "%s: truncated file: %s at byte %zu runs past the end (%zu bytes)", r->g->label, what,
                    r->pos, r->g->size);
}

static nu_status rd_raw(rd *r, size_t n, const char *what, const uint8_t **out) {
    if (n > r->g->size - r->pos) return trunc_err(r, what);
    *out = r->g->base + r->pos;
    r->pos += n;
    return NU_OK;
}

static uint64_t le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = v << 8 | p[i];
    return v;
}

static nu_status rd_u32(rd *r, const char *what, uint32_t *v) {
    const uint8_t *p = NULL;
    nu_status st = rd_raw(r, 4, what, &p);
    if (st == NU_OK) *v = (uint32_t)le(p, 4);
    return st;
}

static nu_status rd_u64(rd *r, const char *what, uint64_t *v) {
    const uint8_t *p = NULL;
    nu_status st = rd_raw(r, 8, what, &p);
    if (st == NU_OK) *v = le(p, 8);
    return st;
}

/* Reads a string; *out is a NUL-terminated arena copy (NULL out: skip). `max` caps the length;
 * no_nul rejects embedded NULs (keys and names). */
static nu_status rd_string(rd *r, const char *what, uint64_t max, bool no_nul, char **out, uint64_t *len_out) {
    size_t at = r->pos;
    uint64_t n;
    nu_status st = rd_u64(r, what, &n);
    if (st != NU_OK) return st;
    if (n > max) return nu_error(NU_ERR_FORMAT, "%s: %s at byte %zu is %llu bytes long (limit %llu)", r->g->label, what, at,
                                 (unsigned long long)n, (unsigned long long)max);
    const uint8_t *p = NULL;
    if ((st = rd_raw(r, (size_t)n, what, &p)) != NU_OK) return st;
    if (no_nul && memchr(p, 0, (size_t)n))
        return nu_error(NU_ERR_FORMAT, "%s: %s at byte %zu contains a NUL byte", r->g->label, what, at);
    if (len_out) *len_out = n;
    if (out) {
        char *s = arena_alloc(r->g, (size_t)n + 1);
        if (!s) return nu_error(NU_ERR_NOMEM, "%s: out of memory", r->g->label);
        memcpy(s, p, (size_t)n);
        s[n] = 0;
        *out = s;
    }
    return NU_OK;
}

static nu_status check_bools(rd *r, const uint8_t *p, uint64_t n, size_t at) {
    for (uint64_t i = 0; i < n; i++)
        if (p[i] > 1) return nu_error(NU_ERR_FORMAT, "%s: bool value %u at byte %zu is not 0 or 1", r->g->label, p[i], at);
    return NU_OK;
}

/* Validates (and skips) one array body of element type `t` with n elements, nested arrays
 * included; used for arrays inside arrays, whose values are not exposed beyond their raw bytes. */
static nu_status skip_array(rd *r, uint32_t t, uint64_t n, int depth) {
    if (depth > GGUF_MAX_ARRAY_DEPTH)
        return nu_error(NU_ERR_FORMAT, "%s: arrays nested deeper than %d at byte %zu", r->g->label, GGUF_MAX_ARRAY_DEPTH,
                        r->pos);
    size_t es = vtype_size(t);
    nu_status st;
    if (es) {
        size_t at = r->pos;
        if (n > (r->g->size - r->pos) / es) return trunc_err(r, "array");
        const uint8_t *p = NULL;
        if ((st = rd_raw(r, (size_t)n * es, "array", &p)) != NU_OK) return st;
        return t == NU_GGUF_BOOL ? check_bools(r, p, n, at) : NU_OK;
    }
    if (t == NU_GGUF_STRING) {
        if (n > (r->g->size - r->pos) / 8) return trunc_err(r, "string array");
        for (uint64_t i = 0; i < n; i++)
            if ((st = rd_string(r, "string", UINT64_MAX, false, NULL, NULL)) != NU_OK) return st;
        return NU_OK;
    }
    if (t == NU_GGUF_ARRAY) {
        if (n > (r->g->size - r->pos) / 12) return trunc_err(r, "nested array");
        for (uint64_t i = 0; i < n; i++) {
            uint32_t et;
            uint64_t en;
            size_t at = r->pos;
            if ((st = rd_u32(r, "array type", &et)) != NU_OK) return st;
            if (et >= NU_GGUF_VTYPE_COUNT)
                return nu_error(NU_ERR_FORMAT, "%s: invalid array element type %u at byte %zu", r->g->label, et, at);
            if ((st = rd_u64(r, "array length", &en)) != NU_OK) return st;
            if ((st = skip_array(r, et, en, depth + 1)) != NU_OK) return st;
        }
        return NU_OK;
    }
    return nu_error(NU_ERR_FORMAT, "%s: invalid array element type %u at byte %zu", r->g->label, t, r->pos);
}

static nu_status read_kv(rd *r, nu_gguf_kv *kv) {
    nu_status st;
    char *key;
    if ((st = rd_string(r, "key", GGUF_MAX_NAME, true, &key, NULL)) != NU_OK) return st;
    kv->key = key;
    size_t at = r->pos;
    uint32_t t;
    if ((st = rd_u32(r, "value type", &t)) != NU_OK) return st;
    if (t >= NU_GGUF_VTYPE_COUNT)
        return nu_error(NU_ERR_FORMAT, "%s: key '%.100s': invalid value type %u at byte %zu", r->g->label, key, t, at);
    kv->type = (nu_gguf_vtype)t;
    size_t es = vtype_size(t);
    if (es) {
        const uint8_t *p = NULL;
        at = r->pos;
        if ((st = rd_raw(r, es, key, &p)) != NU_OK) return st;
        uint64_t u = le(p, es);
        switch (t) {
        case NU_GGUF_UINT8: case NU_GGUF_UINT16: case NU_GGUF_UINT32: case NU_GGUF_UINT64: kv->v.u = u; break;
        case NU_GGUF_INT8: kv->v.i = (int8_t)u; break;
        case NU_GGUF_INT16: kv->v.i = (int16_t)u; break;
        case NU_GGUF_INT32: kv->v.i = (int32_t)u; break;
        case NU_GGUF_INT64: kv->v.i = (int64_t)u; break;
        case NU_GGUF_FLOAT32: {
            float f;
            uint32_t b32 = (uint32_t)u;
            memcpy(&f, &b32, 4);
            kv->v.f = f;
            break;
        }
        case NU_GGUF_FLOAT64: memcpy(&kv->v.f, &u, 8); break;
        case NU_GGUF_BOOL:
            if ((st = check_bools(r, p, 1, at)) != NU_OK) return st;
            kv->v.b = u != 0;
            break;
        }
        return NU_OK;
    }
    if (t == NU_GGUF_STRING) {
        char *s;
        if ((st = rd_string(r, key, UINT64_MAX, false, &s, NULL)) != NU_OK) return st;
        kv->str = s;
        return NU_OK;
    }
    /* ARRAY */
    uint32_t et;
    uint64_t n;
    at = r->pos;
    if ((st = rd_u32(r, "array type", &et)) != NU_OK) return st;
    if (et >= NU_GGUF_VTYPE_COUNT)
        return nu_error(NU_ERR_FORMAT, "%s: key '%.100s': invalid array element type %u at byte %zu", r->g->label, key, et,
                        at);
    if ((st = rd_u64(r, "array length", &n)) != NU_OK) return st;
    kv->arr_type = (nu_gguf_vtype)et;
    kv->arr_n = n;
    kv->arr = r->g->base + r->pos;
    if (et == NU_GGUF_STRING) {
        if (n > (r->g->size - r->pos) / 8) return trunc_err(r, key);
        const char **arr = arena_alloc(r->g, (size_t)n * sizeof(char *) + 1);
        if (!arr) return nu_error(NU_ERR_NOMEM, "%s: out of memory", r->g->label);
        for (uint64_t i = 0; i < n; i++) {
            char *s;
            if ((st = rd_string(r, key, UINT64_MAX, false, &s, NULL)) != NU_OK) return st;
            arr[i] = s;
        }
        kv->arr_str = arr;
        kv->arr = NULL;
        return NU_OK;
    }
    return skip_array(r, et, n, 1); /* numbers: raw bytes stay in the file; nested arrays: validated */
}

static int cmp_kv(const void *a, const void *b, void *u) {
    const nu_gguf *g = u;
    return strcmp(g->kvs[*(const int *)a].key, g->kvs[*(const int *)b].key);
}

static int cmp_tname(const void *a, const void *b, void *u) {
    const nu_gguf *g = u;
    return strcmp(g->tensors[*(const int *)a].name, g->tensors[*(const int *)b].name);
}

static int cmp_toff(const void *a, const void *b, void *u) {
    const nu_gguf *g = u;
    const nu_gguf_tensor *x = &g->tensors[*(const int *)a], *y = &g->tensors[*(const int *)b];
    const uint8_t *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static nu_status read_tensor_info(rd *r, nu_gguf_tensor *t, uint64_t *offset) {
    nu_status st;
    const char *L = r->g->label;
    char *name;
    size_t at = r->pos;
    if ((st = rd_string(r, "tensor name", GGUF_MAX_NAME, true, &name, NULL)) != NU_OK) return st;
    t->name = name;
    uint32_t nd;
    if ((st = rd_u32(r, "tensor n_dims", &nd)) != NU_OK) return st;
    if (nd == 0) return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s' (byte %zu) has 0 dimensions", L, name, at);
    if (nd > NU_MAX_DIMS)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: tensor '%.100s' has %u dimensions (at most %d supported)", L, name, nd,
                        NU_MAX_DIMS);
    t->ndim = (int)nd;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v;
        if ((st = rd_u64(r, "tensor dim", &v)) != NU_OK) return st;
        if (v > (uint64_t)INT64_MAX) return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': dimension %llu too large", L, name, (unsigned long long)v);
        t->ne[nd - 1 - d] = (int64_t)v; /* GGUF: innermost first; nuance: outermost first */
    }
    uint32_t tid;
    if ((st = rd_u32(r, "tensor type", &tid)) != NU_OK) return st;
    if (!ggml_to_nu(tid, &t->type))
        return nu_error(NU_ERR_UNSUPPORTED, "%s: tensor '%.100s': ggml type %u (%s) is not supported", L, name, tid,
                        ggml_other_name(tid));
    return rd_u64(r, "tensor offset", offset);
}

/* Byte size of a tensor, checked: the innermost dim must be a whole number of blocks, and the
 * product of the non-zero dims (in bytes) must fit in int64 even for an empty tensor, since
 * tensor strides are computed from it. */
static nu_status tensor_bytes(nu_gguf *g, nu_gguf_tensor *t) {
    const nu_type_traits *tr = nu_type_info(t->type);
    int64_t inner = t->ne[t->ndim - 1];
    if (inner % tr->blck != 0)
        return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': innermost dimension %lld is not a multiple of the %s block size %lld",
                        g->label, t->name, (long long)inner, tr->name, (long long)tr->blck);
    uint64_t total = (uint64_t)tr->size;
    bool zero = false;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t v = (uint64_t)(d == t->ndim - 1 ? t->ne[d] / tr->blck : t->ne[d]);
        if (v == 0) zero = true;
        else if (__builtin_mul_overflow(total, v, &total) || total > (uint64_t)INT64_MAX)
            return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': shape overflows", g->label, t->name);
    }
    if (zero) {
        t->nbytes = 0;
        return NU_OK;
    }
    size_t rows = (size_t)(total / (uint64_t)nu_row_size(t->type, inner));
    t->nbytes = nu_row_size(t->type, inner) * rows;
    return NU_OK;
}

static nu_status parse(nu_gguf *g) {
    const char *L = g->label;
    rd r = {g, 0};
    nu_status st;
    if (g->size < 4 || memcmp(g->base, "GGUF", 4) != 0) return nu_error(NU_ERR_FORMAT, "%s: not a GGUF file (bad magic)", L);
    r.pos = 4;
    if ((st = rd_u32(&r, "version", &g->version)) != NU_OK) return st;
    if (g->version == 1) return nu_error(NU_ERR_UNSUPPORTED, "%s: GGUF version 1 is not supported (only 2 and 3)", L);
    if (g->version != 2 && g->version != 3) {
        uint32_t sw = __builtin_bswap32(g->version);
        if (sw == 2 || sw == 3) return nu_error(NU_ERR_UNSUPPORTED, "%s: big-endian GGUF is not supported", L);
        return nu_error(NU_ERR_UNSUPPORTED, "%s: unknown GGUF version %u", L, g->version);
    }
    uint64_t nt, nkv;
    if ((st = rd_u64(&r, "tensor count", &nt)) != NU_OK) return st;
    if ((st = rd_u64(&r, "kv count", &nkv)) != NU_OK) return st;
    if (nt > GGUF_MAX_TENSORS) return nu_error(NU_ERR_FORMAT, "%s: tensor count %llu exceeds the limit %u", L, (unsigned long long)nt, GGUF_MAX_TENSORS);
    if (nkv > GGUF_MAX_KV) return nu_error(NU_ERR_FORMAT, "%s: kv count %llu exceeds the limit %u", L, (unsigned long long)nkv, GGUF_MAX_KV);
    /* each kv takes >= 13 bytes and each tensor info >= 32: refuse counts the file cannot hold
     * before allocating for them */
    size_t left = g->size - r.pos;
    if (nkv * 13 > left || nt * 32 > left - nkv * 13)
        return nu_error(NU_ERR_FORMAT, "%s: %llu tensors and %llu keys cannot fit in %zu bytes", L,
                        (unsigned long long)nt, (unsigned long long)nkv, g->size);
    if (nkv) {
        g->kvs = calloc((size_t)nkv, sizeof *g->kvs);
        g->kv_sorted = malloc((size_t)nkv * sizeof(int));
        if (!g->kvs || !g->kv_sorted) return nu_error(NU_ERR_NOMEM, "%s: out of memory", L);
    }
    if (nt) {
        g->tensors = calloc((size_t)nt, sizeof *g->tensors);
        g->t_sorted = malloc((size_t)nt * sizeof(int));
        if (!g->tensors || !g->t_sorted) return nu_error(NU_ERR_NOMEM, "%s: out of memory", L);
    }
    for (uint64_t i = 0; i < nkv; i++) {
        if ((st = read_kv(&r, &g->kvs[i])) != NU_OK) return st;
        g->kv_sorted[i] = (int)i;
        g->n_kv = (int)i + 1;
    }
    if (g->n_kv > 1) {
        qsort_r(g->kv_sorted, (size_t)g->n_kv, sizeof(int), cmp_kv, g);
        for (int i = 1; i < g->n_kv; i++)
            if (strcmp(g->kvs[g->kv_sorted[i - 1]].key, g->kvs[g->kv_sorted[i]].key) == 0)
                return nu_error(NU_ERR_FORMAT, "%s: duplicate key '%.100s'", L, g->kvs[g->kv_sorted[i]].key);
    }
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const nu_gguf_kv *al = nu_gguf_find_kv(g, "general.alignment");
    if (al) {
        uint64_t a;
        switch (al->type) {
        case NU_GGUF_UINT8: case NU_GGUF_UINT16: case NU_GGUF_UINT32: case NU_GGUF_UINT64: a = al->v.u; break;
        case NU_GGUF_INT8: case NU_GGUF_INT16: case NU_GGUF_INT32: case NU_GGUF_INT64: a = al->v.i < 0 ? 0 : (uint64_t)al->v.i; break;
        default: return nu_error(NU_ERR_FORMAT, "%s: general.alignment has type %s, not an integer", L, vtype_name(al->type));
        }
        if (a == 0 || (a & (a - 1)) != 0 || a > ((uint64_t)1 << 30))
            return nu_error(NU_ERR_FORMAT, "%s: general.alignment %llu is not a power of two", L, (unsigned long long)a);
        g->alignment = a;
    }
    uint64_t *offs = nt ? malloc((size_t)nt * sizeof *offs) : NULL;
    if (nt && !offs) return nu_error(NU_ERR_NOMEM, "%s: out of memory", L);
    for (uint64_t i = 0; i < nt; i++) {
        if ((st = read_tensor_info(&r, &g->tensors[i], &offs[i])) != NU_OK) goto out;
        g->t_sorted[i] = (int)i;
        g->n_t = (int)i + 1;
    }
    /* data section: after the infos, padded to the alignment */
    size_t pad = (size_t)((g->alignment - r.pos % g->alignment) % g->alignment);
    g->data_offset = r.pos + pad;
    if (nt > 0 && (pad > g->size - r.pos)) {
        st = nu_error(NU_ERR_FORMAT, "%s: truncated file: data section would start at byte %zu beyond the end (%zu bytes)",
                      L, g->data_offset, g->size);
        goto out;
    }
    size_t dsize = g->data_offset <= g->size ? g->size - g->data_offset : 0;
    for (int i = 0; i < g->n_t; i++) {
        nu_gguf_tensor *t = &g->tensors[i];
        if ((st = tensor_bytes(g, t)) != NU_OK) goto out;
        if (offs[i] % g->alignment != 0) {
            st = nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': offset %llu is not a multiple of the alignment %llu", L,
                          t->name, (unsigned long long)offs[i], (unsigned long long)g->alignment);
            goto out;
        }
        if (offs[i] > dsize || t->nbytes > dsize - offs[i]) {
            st = nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': bytes [%llu, %llu) beyond the data section (%zu bytes)", L,
                          t->name, (unsigned long long)offs[i], (unsigned long long)offs[i] + t->nbytes, dsize);
            goto out;
        }
        t->data = g->base + g->data_offset + offs[i];
    }
    if (g->n_t > 1) {
        qsort_r(g->t_sorted, (size_t)g->n_t, sizeof(int), cmp_toff, g);
        const uint8_t *prev_end = NULL;
        int prev = -1;
        for (int k = 0; k < g->n_t; k++) {
            const nu_gguf_tensor *t = &g->tensors[g->t_sorted[k]];
            if (t->nbytes == 0) continue;
            if (prev >= 0 && (const uint8_t *)t->data < prev_end) {
                st = nu_error(NU_ERR_FORMAT, "%s: tensors '%.100s' and '%.100s' overlap in the data section", L,
                              g->tensors[prev].name, t->name);
                goto out;
            }
            prev_end = (const uint8_t *)t->data + t->nbytes;
            prev = g->t_sorted[k];
        }
        qsort_r(g->t_sorted, (size_t)g->n_t, sizeof(int), cmp_tname, g);
        for (int k = 1; k < g->n_t; k++)
            if (strcmp(g->tensors[g->t_sorted[k - 1]].name, g->tensors[g->t_sorted[k]].name) == 0) {
                st = nu_error(NU_ERR_FORMAT, "%s: duplicate tensor name '%.100s'", L, g->tensors[g->t_sorted[k]].name);
                goto out;
            }
    }
    st = NU_OK;
out:
    free(offs);
    return st;
}

static nu_gguf *gguf_alloc(const char *label) {
    nu_gguf *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->map.fd = -1;
    g->label = strdup(label ? label : "(memory)");
    if (!g->label) {
        free(g);
        return NULL;
    }
    return g;
}

static nu_status gguf_finish(nu_gguf *g, nu_gguf **out) {
    nu_status st = parse(g);
    if (st != NU_OK) {
        gguf_free(g);
        return st;
    }
    *out = g;
    return NU_OK;
}

nu_status nu_gguf_open(const char *path, nu_gguf **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_gguf_open: NULL out");
    *out = NULL;
    if (!path) return nu_error(NU_ERR_INVALID_ARG, "nu_gguf_open: NULL path");
    nu_gguf *g = gguf_alloc(path);
    if (!g) return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    nu_status st = nu_file_map_open(path, &g->map);
    if (st != NU_OK) {
        gguf_free(g);
        return st;
    }
    g->base = g->map.data;
    g->size = g->map.size;
    return gguf_finish(g, out);
}

nu_status nu_gguf_open_memory(const void *data, size_t size, const char *label, nu_gguf **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_gguf_open_memory: NULL out");
    *out = NULL;
    if (!data && size) return nu_error(NU_ERR_INVALID_ARG, "nu_gguf_open_memory: NULL data");
    nu_gguf *g = gguf_alloc(label);
    if (!g) return nu_error(NU_ERR_NOMEM, "%s: out of memory", label ? label : "(memory)");
    g->base = data;
    g->size = size;
    return gguf_finish(g, out);
}

void nu_gguf_close(nu_gguf *g) { gguf_free(g); }
void nu_gguf_release_pages(nu_gguf *g) {
    if (g) nu_file_map_release(&g->map);
}

uint32_t nu_gguf_version(const nu_gguf *g) { return g ? g->version : 0; }
int nu_gguf_kv_count(const nu_gguf *g) { return g ? g->n_kv : 0; }
int nu_gguf_tensor_count(const nu_gguf *g) { return g ? g->n_t : 0; }

const nu_gguf_kv *nu_gguf_kv_at(const nu_gguf *g, int i) {
    return g && i >= 0 && i < g->n_kv ? &g->kvs[i] : NULL;
}

const nu_gguf_tensor *nu_gguf_tensor_at(const nu_gguf *g, int i) {
    return g && i >= 0 && i < g->n_t ? &g->tensors[i] : NULL;
}

const nu_gguf_kv *nu_gguf_find_kv(const nu_gguf *g, const char *key) {
    if (!g || !key) return NULL;
    int lo = 0, hi = g->n_kv - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const nu_gguf_kv *kv = &g->kvs[g->kv_sorted[mid]];
        int c = strcmp(kv->key, key);
        if (c == 0) return kv;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const nu_gguf_tensor *nu_gguf_find_tensor(const nu_gguf *g, const char *name) {
    if (!g || !name) return NULL;
    int lo = 0, hi = g->n_t - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const nu_gguf_tensor *t = &g->tensors[g->t_sorted[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

/* Natural alignment the kernels expect for a type's data (quantized blocks start with an f16). */
static size_t type_align(nu_type t) {
    const nu_type_traits *tr = nu_type_info(t);
    if (tr->is_quant) return 2;
    return tr->size > 8 ? 8 : tr->size;
}

nu_status nu_gguf_get(nu_gguf *g, nu_ctx *ctx, const char *name, nu_tensor **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_gguf_get: NULL out");
    *out = NULL;
    if (!g || !ctx || !name) return nu_error(NU_ERR_INVALID_ARG, "nu_gguf_get: NULL argument");
    const nu_gguf_tensor *gt = nu_gguf_find_tensor(g, name);
    if (!gt) return nu_error(NU_ERR_NOT_FOUND, "%s: no tensor named '%.100s'", g->label, name);
    void *data = (void *)gt->data;
    if (gt->nbytes && (uintptr_t)data % type_align(gt->type) != 0) {
        /* only possible with general.alignment < element size or a misaligned memory buffer */
        void *copy = nu_ctx_alloc(ctx, gt->nbytes);
        if (!copy) return nu_error(NU_ERR_NOMEM, "%s: out of memory copying '%.100s'", g->label, name);
        memcpy(copy, data, gt->nbytes);
        data = copy;
    }
    nu_tensor *t = nu_new_tensor_ext(ctx, gt->type, gt->ndim, gt->ne, data);
    if (!t) return nu_error(NU_ERR_NOMEM, "%s: out of memory for tensor '%.100s'", g->label, name);
    nu_set_name(t, "%s", name);
    *out = t;
    return NU_OK;
}

/* ---------------------------------------------------------------- writer */

typedef struct wkv {
    char *key;
    nu_gguf_vtype type, arr_type;
    uint64_t u;        /* scalar bits (little-endian value of vtype_size bytes) */
    char *str;         /* STRING */
    char **strs;       /* ARRAY of STRING */
    void *arr;         /* ARRAY of numbers (raw) */
    uint64_t n;        /* ARRAY length */
} wkv;

struct nu_gguf_writer {
    wkv *kvs;
    int n_kv, cap_kv;
    const nu_tensor **tensors;
    int n_t, cap_t;
    bool oom;
};

nu_gguf_writer *nu_gguf_writer_new(void) { return calloc(1, sizeof(nu_gguf_writer)); }

static void wkv_clear(wkv *kv) {
    free(kv->str);
    if (kv->strs)
        for (uint64_t i = 0; i < kv->n; i++) free(kv->strs[i]);
    free(kv->strs);
    free(kv->arr);
    kv->str = NULL;
    kv->strs = NULL;
    kv->arr = NULL;
    kv->n = 0;
}

void nu_gguf_writer_free(nu_gguf_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n_kv; i++) {
        wkv_clear(&w->kvs[i]);
        free(w->kvs[i].key);
    }
    free(w->kvs);
    free(w->tensors);
    free(w);
}

/* The entry for key (replacing an existing one's value), or NULL (sets oom). */
static wkv *w_slot(nu_gguf_writer *w, const char *key, nu_gguf_vtype type) {
    if (!w) return NULL;
    if (!key) {
        w->oom = true;
        return NULL;
    }
    for (int i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, key) == 0) {
            wkv_clear(&w->kvs[i]);
            w->kvs[i].type = type;
            return &w->kvs[i];
        }
    if (w->n_kv == w->cap_kv) {
        int cap = w->cap_kv ? 2 * w->cap_kv : 16;
        wkv *k = realloc(w->kvs, (size_t)cap * sizeof *k);
        if (!k) {
            w->oom = true;
            return NULL;
        }
        w->kvs = k;
        w->cap_kv = cap;
    }
    wkv *kv = &w->kvs[w->n_kv];
    memset(kv, 0, sizeof *kv);
    kv->key = strdup(key);
    if (!kv->key) {
        w->oom = true;
        return NULL;
    }
    kv->type = type;
    w->n_kv++;
    return kv;
}

void nu_gguf_writer_set_u32(nu_gguf_writer *w, const char *key, uint32_t v) {
    wkv *kv = w_slot(w, key, NU_GGUF_UINT32);
    if (kv) kv->u = v;
}

void nu_gguf_writer_set_i32(nu_gguf_writer *w, const char *key, int32_t v) {
    wkv *kv = w_slot(w, key, NU_GGUF_INT32);
    if (kv) kv->u = (uint32_t)v;
}

void nu_gguf_writer_set_f32(nu_gguf_writer *w, const char *key, float v) {
    wkv *kv = w_slot(w, key, NU_GGUF_FLOAT32);
    uint32_t b;
    memcpy(&b, &v, 4);
    if (kv) kv->u = b;
}

void nu_gguf_writer_set_bool(nu_gguf_writer *w, const char *key, bool v) {
    wkv *kv = w_slot(w, key, NU_GGUF_BOOL);
    if (kv) kv->u = v ? 1 : 0;
}

void nu_gguf_writer_set_str(nu_gguf_writer *w, const char *key, const char *v) {
    wkv *kv = w_slot(w, key, NU_GGUF_STRING);
    if (!kv) return;
    kv->str = strdup(v ? v : "");
    if (!kv->str) w->oom = true;
}

void nu_gguf_writer_set_arr_str(nu_gguf_writer *w, const char *key, const char *const *v, int n) {
    wkv *kv = w_slot(w, key, NU_GGUF_ARRAY);
    if (!kv) return;
    kv->arr_type = NU_GGUF_STRING;
    if (n <= 0) return;
    kv->strs = calloc((size_t)n, sizeof(char *));
    if (!kv->strs) {
        w->oom = true;
        return;
    }
    kv->n = (uint64_t)n;
    for (int i = 0; i < n; i++) {
        kv->strs[i] = strdup(v && v[i] ? v[i] : "");
        if (!kv->strs[i]) w->oom = true;
    }
}

void nu_gguf_writer_set_arr_i32(nu_gguf_writer *w, const char *key, const int32_t *v, int n) {
    wkv *kv = w_slot(w, key, NU_GGUF_ARRAY);
    if (!kv) return;
    kv->arr_type = NU_GGUF_INT32;
    if (n <= 0) return;
    if (!v) {
        w->oom = true; /* reported by nu_gguf_writer_write */
        return;
    }
    kv->arr = malloc((size_t)n * 4);
    if (!kv->arr) {
        w->oom = true;
        return;
    }
    kv->n = (uint64_t)n;
    uint8_t *p = kv->arr;
    for (int i = 0; i < n; i++)
        for (int b = 0; b < 4; b++) p[4 * i + b] = (uint8_t)((uint32_t)v[i] >> (8 * b));
}

void nu_gguf_writer_add_tensor(nu_gguf_writer *w, const nu_tensor *t) {
    if (!w) return;
    if (!t) {
        w->oom = true;
        return;
    }
    if (w->n_t == w->cap_t) {
        int cap = w->cap_t ? 2 * w->cap_t : 16;
        const nu_tensor **p = realloc(w->tensors, (size_t)cap * sizeof *p);
        if (!p) {
            w->oom = true;
            return;
        }
        w->tensors = p;
        w->cap_t = cap;
    }
    w->tensors[w->n_t++] = t;
}

static bool put_le(FILE *fp, uint64_t v, int n) {
    uint8_t b[8];
    for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * i));
    return fwrite(b, 1, (size_t)n, fp) == (size_t)n;
}

static bool put_str(FILE *fp, const char *s) {
    size_t n = strlen(s);
    return put_le(fp, n, 8) && fwrite(s, 1, n, fp) == n;
}

static bool put_zeros(FILE *fp, size_t n) {
    static const uint8_t z[64];
    while (n > 0) {
        size_t k = n < sizeof z ? n : sizeof z;
        if (fwrite(z, 1, k, fp) != k) return false;
        n -= k;
    }
    return true;
}

static uint64_t tensor_file_bytes(const nu_tensor *t) {
    int64_t inner = t->ndim ? t->ne[t->ndim - 1] : 1;
    uint64_t rows = 1;
    for (int d = 0; d + 1 < t->ndim; d++) rows *= (uint64_t)t->ne[d];
    return (uint64_t)nu_row_size(t->type, inner) * rows;
}

/* Writes the tensor's rows densely (rows must have contiguous blocks/elements inside; the outer
 * dims may have any strides). */
static bool write_rows(FILE *fp, const nu_tensor *t) {
    int nd = t->ndim;
    for (int d = 0; d < nd; d++)
        if (t->ne[d] == 0) return true;
    const nu_type_traits *tr = nu_type_info(t->type);
    size_t row = nu_row_size(t->type, t->ne[nd - 1]);
    if (nu_is_contiguous(t)) return fwrite(t->data, 1, tensor_file_bytes(t), fp) == tensor_file_bytes(t);
    int64_t idx[NU_MAX_DIMS] = {0};
    for (;;) {
        const char *p = t->data;
        for (int d = 0; d < nd - 1; d++) p += idx[d] * t->nb[d];
        if (t->nb[nd - 1] == (int64_t)tr->size) {
            if (fwrite(p, 1, row, fp) != row) return false;
        } else {
            for (int64_t i = 0; i < t->ne[nd - 1] / tr->blck; i++)
                if (fwrite(p + i * t->nb[nd - 1], tr->size, 1, fp) != 1) return false;
        }
        int d = nd - 2;
        for (; d >= 0; d--) {
            if (++idx[d] < t->ne[d]) break;
            idx[d] = 0;
        }
        if (d < 0) return true;
    }
}

nu_status nu_gguf_writer_write(nu_gguf_writer *w, const char *path) {
    if (!w || !path || !*path) return nu_error(NU_ERR_INVALID_ARG, "nu_gguf_writer_write: NULL writer or empty path");
    if (w->oom) return nu_error(NU_ERR_NOMEM, "%s: GGUF writer ran out of memory (or got a NULL key/tensor)", path);
    const uint64_t align = GGUF_DEFAULT_ALIGNMENT;
    for (int i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, "general.alignment") == 0)
            return nu_error(NU_ERR_INVALID_ARG, "%s: the writer always uses the default alignment; do not set general.alignment", path);
    for (int i = 0; i < w->n_t; i++) {
        const nu_tensor *t = w->tensors[i];
        uint32_t id;
        if (!t->name[0]) return nu_error(NU_ERR_INVALID_ARG, "%s: tensor %d has no name", path, i);
        if (!nu_to_ggml(t->type, &id))
            return nu_error(NU_ERR_UNSUPPORTED, "%s: tensor '%s': GGUF cannot store type %s", path, t->name, nu_type_name(t->type));
        if (t->ndim < 1 || t->ndim > NU_MAX_DIMS)
            return nu_error(NU_ERR_INVALID_ARG, "%s: tensor '%s': bad ndim %d", path, t->name, t->ndim);
        if (!t->data && nu_nelements(t) > 0) return nu_error(NU_ERR_INVALID_ARG, "%s: tensor '%s' has no data", path, t->name);
        const nu_type_traits *tr = nu_type_info(t->type);
        if (tr->is_quant && t->nb[t->ndim - 1] != (int64_t)tr->size)
            return nu_error(NU_ERR_INVALID_ARG, "%s: tensor '%s': quantized rows must be contiguous", path, t->name);
        for (int j = 0; j < i; j++)
            if (strcmp(w->tensors[j]->name, t->name) == 0)
                return nu_error(NU_ERR_INVALID_ARG, "%s: duplicate tensor name '%s'", path, t->name);
    }
    nu_atomic_file af;
    nu_status st = nu_atomic_begin(&af, path);
    if (st != NU_OK) return st;
    FILE *fp = af.fp;
    bool ok = fwrite("GGUF", 1, 4, fp) == 4 && put_le(fp, 3, 4) && put_le(fp, (uint64_t)w->n_t, 8) &&
              put_le(fp, (uint64_t)w->n_kv, 8);
    uint64_t pos = 24;
    for (int i = 0; ok && i < w->n_kv; i++) {
        const wkv *kv = &w->kvs[i];
        ok = put_str(fp, kv->key) && put_le(fp, kv->type, 4);
        pos += 8 + strlen(kv->key) + 4;
        if (!ok) break;
        if (kv->type == NU_GGUF_STRING) {
            ok = put_str(fp, kv->str);
            pos += 8 + strlen(kv->str);
        } else if (kv->type == NU_GGUF_ARRAY) {
            ok = put_le(fp, kv->arr_type, 4) && put_le(fp, kv->n, 8);
            pos += 12;
            if (kv->arr_type == NU_GGUF_STRING) {
                for (uint64_t j = 0; ok && j < kv->n; j++) {
                    ok = put_str(fp, kv->strs[j]);
                    pos += 8 + strlen(kv->strs[j]);
                }
            } else {
                size_t nb = (size_t)kv->n * vtype_size(kv->arr_type);
                ok = nb == 0 || fwrite(kv->arr, 1, nb, fp) == nb;
                pos += nb;
            }
        } else {
            ok = put_le(fp, kv->u, (int)vtype_size(kv->type));
            pos += vtype_size(kv->type);
        }
    }
    uint64_t off = 0;
    for (int i = 0; ok && i < w->n_t; i++) {
        const nu_tensor *t = w->tensors[i];
        uint32_t id = 0;
        nu_to_ggml(t->type, &id);
        ok = put_str(fp, t->name) && put_le(fp, (uint64_t)t->ndim, 4);
        for (int d = t->ndim - 1; ok && d >= 0; d--) ok = put_le(fp, (uint64_t)t->ne[d], 8);
        ok = ok && put_le(fp, id, 4) && put_le(fp, off, 8);
        pos += 8 + strlen(t->name) + 4 + 8 * (uint64_t)t->ndim + 4 + 8;
        off += tensor_file_bytes(t);
        off = (off + align - 1) / align * align;
    }
    if (ok && w->n_t > 0) ok = put_zeros(fp, (size_t)((align - pos % align) % align));
    for (int i = 0; ok && i < w->n_t; i++) {
        const nu_tensor *t = w->tensors[i];
        uint64_t nb = tensor_file_bytes(t);
        ok = write_rows(fp, t) && put_zeros(fp, (size_t)((align - nb % align) % align));
    }
    return nu_atomic_end(&af, ok);
}
