/*
 * safetensors.c — reader (mmap, zero copy) and atomic writer for the safetensors format.
 *
 * Layout: u64-LE header length N, N bytes of JSON header, then the data buffer. The header is an
 * object { "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 * "__metadata__": {"key": "value", ...} } with offsets relative to the data buffer.
 * Everything is validated before use: N against the file size and a 100 MB cap; dtype against the
 * supported set (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL; others are NU_ERR_UNSUPPORTED naming the
 * tensor); shapes (<= NU_MAX_DIMS dims, non-negative integers, overflow-checked products);
 * offsets (begin <= end <= data size, end - begin == numel * element size, no two tensors
 * overlapping); unique names; string-only metadata.
 *
 * Tested by tests/test_safetensors.c (round trips of every dtype, strided save, metadata, real
 * files from ../shared/reference, truncation / byte-flip sweeps, specific malformed headers) and
 * fuzz/fuzz_safetensors.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/atomic.h"
#include "nuance/io.h"

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define ST_MAX_INT 9007199254740992.0 /* 2^53: integers beyond are not exact in a double */

struct nu_st_file {
    nu_file_map map; /* fd < 0 and data NULL for nu_st_open_memory */
    const uint8_t *base;
    size_t size;
    char *label;
    int n;
    nu_st_info *infos; /* header order */
    int *by_name;      /* indices sorted by name */
    int n_meta;
    char **meta_keys, **meta_vals;
};

/* ---------------------------------------------------------------- dtypes */

static const struct {
    const char *name;
    nu_type type;
} st_types[] = {
    {"F64", NU_TYPE_F64}, {"F32", NU_TYPE_F32}, {"F16", NU_TYPE_F16}, {"BF16", NU_TYPE_BF16},
    {"I64", NU_TYPE_I64}, {"I32", NU_TYPE_I32}, {"I16", NU_TYPE_I16}, {"I8", NU_TYPE_I8},
    {"U8", NU_TYPE_U8},   {"BOOL", NU_TYPE_BOOL},
};

/* dtypes the safetensors format defines that nuance cannot hold */
static const char *const st_known_unsupported[] = {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2",
                                                   "F4",      "U16",     "U32",     "U64",     "C64"};

static size_t elem_size(nu_type t) {
    switch (t) {
    case NU_TYPE_F64: case NU_TYPE_I64: return 8;
    case NU_TYPE_F32: case NU_TYPE_I32: return 4;
    case NU_TYPE_F16: case NU_TYPE_BF16: case NU_TYPE_I16: return 2;
    case NU_TYPE_I8: case NU_TYPE_U8: case NU_TYPE_BOOL: return 1;
    default: return 0;
    }
}

static const char *st_type_name(nu_type t) {
    for (size_t i = 0; i < sizeof st_types / sizeof st_types[0]; i++)
        if (st_types[i].type == t) return st_types[i].name;
    return NULL;
}

/* ---------------------------------------------------------------- reader */

static void st_free(nu_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free((char *)f->infos[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->infos);
    free(f->by_name);
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->label);
    nu_file_map_close(&f->map);
    free(f);
}

/* qsort has no user pointer: the array being sorted, per thread */
static _Thread_local const nu_st_info *sort_infos;

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(sort_infos[*(const int *)a].name, sort_infos[*(const int *)b].name);
}

static int cmp_by_offset(const void *a, const void *b) {
    const nu_st_info *x = &sort_infos[*(const int *)a], *y = &sort_infos[*(const int *)b];
    const uint8_t *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static bool json_uint(const nu_json *v, uint64_t *out) {
    if (!v || v->kind != NU_JSON_NUMBER) return false;
    double d = v->num;
    if (!(d >= 0 && d <= ST_MAX_INT) || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

static nu_status parse_tensor(nu_st_file *f, const char *name, const nu_json *e, const uint8_t *data, size_t dsize,
                              nu_st_info *info) {
    const char *L = f->label;
    if (e->kind != NU_JSON_OBJECT)
        return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': header entry is not an object", L, name);
    const nu_json *dt = nu_json_get(e, "dtype");
    if (!dt || dt->kind != NU_JSON_STRING)
        return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': missing or non-string dtype", L, name);
    bool found = false;
    for (size_t i = 0; i < sizeof st_types / sizeof st_types[0]; i++)
        if (strcmp(dt->str, st_types[i].name) == 0 && strlen(dt->str) == dt->str_len) {
            info->type = st_types[i].type;
            found = true;
        }
    if (!found) {
        for (size_t i = 0; i < sizeof st_known_unsupported / sizeof st_known_unsupported[0]; i++)
            if (strcmp(dt->str, st_known_unsupported[i]) == 0)
                return nu_error(NU_ERR_UNSUPPORTED, "%s: tensor '%.100s': dtype %s is not supported", L, name, dt->str);
        return nu_error(NU_ERR_UNSUPPORTED, "%s: tensor '%.100s': unknown dtype '%.40s'", L, name, dt->str);
    }
    const nu_json *sh = nu_json_get(e, "shape");
    if (!sh || sh->kind != NU_JSON_ARRAY)
        return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': missing or non-array shape", L, name);
    if (sh->n > NU_MAX_DIMS)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: tensor '%.100s': %d dimensions (at most %d supported)", L, name, sh->n,
                        NU_MAX_DIMS);
    info->ndim = sh->n;
    /* The product of the non-zero dims times the element size must fit in int64 even for an
     * empty tensor: tensor strides are computed from it. */
    uint64_t numel = 1, nbytes;
    bool zero = false;
    for (int d = 0; d < sh->n; d++) {
        uint64_t v;
        if (!json_uint(&sh->items[d], &v))
            return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': shape[%d] is not a non-negative integer", L, name, d);
        info->ne[d] = (int64_t)v;
        if (v == 0) zero = true;
        else if (__builtin_mul_overflow(numel, v, &numel))
            return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': shape overflows", L, name);
    }
    if (__builtin_mul_overflow(numel, (uint64_t)elem_size(info->type), &nbytes) || nbytes > (uint64_t)INT64_MAX)
        return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': shape overflows", L, name);
    if (zero) nbytes = 0;
    const nu_json *off = nu_json_get(e, "data_offsets");
    uint64_t b, en;
    if (!off || off->kind != NU_JSON_ARRAY || off->n != 2 || !json_uint(&off->items[0], &b) ||
        !json_uint(&off->items[1], &en))
        return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': data_offsets must be two non-negative integers", L, name);
    if (b > en)
        return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': data_offsets [%llu, %llu] end before begin", L, name,
                        (unsigned long long)b, (unsigned long long)en);
    if (en > dsize)
        return nu_error(NU_ERR_FORMAT, "%s: tensor '%.100s': data_offsets [%llu, %llu] beyond the data (%zu bytes)", L,
                        name, (unsigned long long)b, (unsigned long long)en, dsize);
    if (en - b != nbytes)
        return nu_error(NU_ERR_FORMAT,
                        "%s: tensor '%.100s': data_offsets span %llu bytes but shape and dtype %s need %llu", L, name,
                        (unsigned long long)(en - b), dt->str, (unsigned long long)nbytes);
    info->data = data + b;
    info->nbytes = (size_t)nbytes;
    return NU_OK;
}

static nu_status parse_metadata(nu_st_file *f, const nu_json *m) {
    if (m->kind != NU_JSON_OBJECT) return nu_error(NU_ERR_FORMAT, "%s: __metadata__ is not an object", f->label);
    if (m->n == 0) return NU_OK;
    f->meta_keys = calloc((size_t)m->n, sizeof(char *));
    f->meta_vals = calloc((size_t)m->n, sizeof(char *));
    if (!f->meta_keys || !f->meta_vals) return nu_error(NU_ERR_NOMEM, "%s: out of memory", f->label);
    for (int i = 0; i < m->n; i++) {
        const nu_json *v = &m->items[i];
        if (v->kind != NU_JSON_STRING)
            return nu_error(NU_ERR_FORMAT, "%s: __metadata__ value of '%.100s' is not a string", f->label, m->keys[i]);
        if (strlen(v->str) != v->str_len)
            return nu_error(NU_ERR_FORMAT, "%s: __metadata__ value of '%.100s' contains a NUL", f->label, m->keys[i]);
        for (int j = 0; j < i; j++)
            if (strcmp(m->keys[j], m->keys[i]) == 0)
                return nu_error(NU_ERR_FORMAT, "%s: duplicate __metadata__ key '%.100s'", f->label, m->keys[i]);
        f->meta_keys[i] = strdup(m->keys[i]);
        f->meta_vals[i] = strdup(v->str);
        f->n_meta = i + 1;
        if (!f->meta_keys[i] || !f->meta_vals[i]) return nu_error(NU_ERR_NOMEM, "%s: out of memory", f->label);
    }
    return NU_OK;
}

static nu_status parse_header(nu_st_file *f) {
    const char *L = f->label;
    if (f->size < 8) return nu_error(NU_ERR_FORMAT, "%s: %zu bytes is too small for a safetensors file", L, f->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->base[i];
    if (hlen > f->size - 8)
        return nu_error(NU_ERR_FORMAT, "%s: header length %llu exceeds the file size (%zu bytes)", L,
                        (unsigned long long)hlen, f->size);
    if (hlen > ST_MAX_HEADER)
        return nu_error(NU_ERR_FORMAT, "%s: header length %llu exceeds the 100 MB limit", L, (unsigned long long)hlen);
    if (hlen < 2 || f->base[8] != '{')
        return nu_error(NU_ERR_FORMAT, "%s: not a safetensors file (header does not start with '{')", L);
    const uint8_t *data = f->base + 8 + hlen;
    size_t dsize = f->size - 8 - (size_t)hlen;

    nu_json *root = nu_json_parse((const char *)f->base + 8, (size_t)hlen);
    if (!root) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", nu_last_error());
        return nu_error(NU_ERR_FORMAT, "%s: bad header: %s", L, msg);
    }
    nu_status st = NU_OK;
    if (root->kind != NU_JSON_OBJECT) {
        st = nu_error(NU_ERR_FORMAT, "%s: header is not a JSON object", L);
        goto done;
    }
    int n_meta_entries = 0;
    for (int i = 0; i < root->n; i++) n_meta_entries += strcmp(root->keys[i], "__metadata__") == 0;
    if (n_meta_entries > 1) {
        st = nu_error(NU_ERR_FORMAT, "%s: duplicate __metadata__", L);
        goto done;
    }
    int n = root->n - n_meta_entries;
    if (n > 0) {
        f->infos = calloc((size_t)n, sizeof *f->infos);
        f->by_name = malloc((size_t)n * sizeof *f->by_name);
        if (!f->infos || !f->by_name) {
            st = nu_error(NU_ERR_NOMEM, "%s: out of memory for %d tensors", L, n);
            goto done;
        }
    }
    for (int i = 0; i < root->n; i++) {
        const char *key = root->keys[i];
        if (strcmp(key, "__metadata__") == 0) {
            if ((st = parse_metadata(f, &root->items[i])) != NU_OK) goto done;
            continue;
        }
        nu_st_info *info = &f->infos[f->n];
        if ((st = parse_tensor(f, key, &root->items[i], data, dsize, info)) != NU_OK) goto done;
        info->name = strdup(key);
        if (!info->name) {
            st = nu_error(NU_ERR_NOMEM, "%s: out of memory", L);
            goto done;
        }
        f->by_name[f->n] = f->n;
        f->n++;
    }
    if (f->n > 1) {
        sort_infos = f->infos;
        /* no two tensors may share bytes */
        qsort(f->by_name, (size_t)f->n, sizeof(int), cmp_by_offset);
        const uint8_t *prev_end = data;
        int prev = -1;
        for (int k = 0; k < f->n; k++) {
            const nu_st_info *t = &f->infos[f->by_name[k]];
            if (t->nbytes == 0) continue;
            if ((const uint8_t *)t->data < prev_end) {
                st = nu_error(NU_ERR_FORMAT, "%s: tensors '%.100s' and '%.100s' overlap in the data buffer", L,
                              f->infos[prev].name, t->name);
                goto done;
            }
            prev_end = (const uint8_t *)t->data + t->nbytes;
            prev = f->by_name[k];
        }
        qsort(f->by_name, (size_t)f->n, sizeof(int), cmp_by_name);
        for (int k = 1; k < f->n; k++)
            if (strcmp(f->infos[f->by_name[k - 1]].name, f->infos[f->by_name[k]].name) == 0) {
                st = nu_error(NU_ERR_FORMAT, "%s: duplicate tensor name '%.100s'", L, f->infos[f->by_name[k]].name);
                goto done;
            }
    }
done:
    nu_json_free(root);
    return st;
}

static nu_status st_open_common(nu_st_file *f, nu_st_file **out) {
    nu_status st = parse_header(f);
    if (st != NU_OK) {
        st_free(f);
        return st;
    }
    *out = f;
    return NU_OK;
}

static nu_st_file *st_alloc(const char *label) {
    nu_st_file *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->map.fd = -1;
    f->label = strdup(label ? label : "(memory)");
    if (!f->label) {
        free(f);
        return NULL;
    }
    return f;
}

nu_status nu_st_open(const char *path, nu_st_file **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_st_open: NULL out");
    *out = NULL;
    if (!path) return nu_error(NU_ERR_INVALID_ARG, "nu_st_open: NULL path");
    nu_st_file *f = st_alloc(path);
    if (!f) return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    nu_status st = nu_file_map_open(path, &f->map);
    if (st != NU_OK) {
        st_free(f);
        return st;
    }
    f->base = f->map.data;
    f->size = f->map.size;
    return st_open_common(f, out);
}

nu_status nu_st_open_memory(const void *data, size_t size, const char *label, nu_st_file **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_st_open_memory: NULL out");
    *out = NULL;
    if (!data && size) return nu_error(NU_ERR_INVALID_ARG, "nu_st_open_memory: NULL data");
    nu_st_file *f = st_alloc(label);
    if (!f) return nu_error(NU_ERR_NOMEM, "%s: out of memory", label ? label : "(memory)");
    f->base = data;
    f->size = size;
    return st_open_common(f, out);
}

void nu_st_close(nu_st_file *f) { st_free(f); }
void nu_st_release_pages(nu_st_file *f) {
    if (f) nu_file_map_release(&f->map);
}

int nu_st_count(const nu_st_file *f) { return f ? f->n : 0; }

const nu_st_info *nu_st_at(const nu_st_file *f, int i) {
    if (!f || i < 0 || i >= f->n) return NULL;
    return &f->infos[i];
}

const nu_st_info *nu_st_find(const nu_st_file *f, const char *name) {
    if (!f || !name) return NULL;
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const nu_st_info *t = &f->infos[f->by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const char *nu_st_metadata(const nu_st_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

int nu_st_metadata_count(const nu_st_file *f) { return f ? f->n_meta : 0; }

void nu_st_metadata_at(const nu_st_file *f, int i, const char **key, const char **value) {
    const char *k = NULL, *v = NULL;
    if (f && i >= 0 && i < f->n_meta) {
        k = f->meta_keys[i];
        v = f->meta_vals[i];
    }
    if (key) *key = k;
    if (value) *value = v;
}

static const nu_st_info *find_or_error(nu_st_file *f, const char *name) {
    const nu_st_info *info = nu_st_find(f, name);
    if (!info) nu_error(NU_ERR_NOT_FOUND, "%s: no tensor named '%.100s'", f->label, name);
    return info;
}

/* Scalars (shape []) become 1-D tensors of one element: nu_tensor needs ndim >= 1. */
static int tensor_dims(const nu_st_info *info, int64_t *ne) {
    if (info->ndim == 0) {
        ne[0] = 1;
        return 1;
    }
    memcpy(ne, info->ne, sizeof(int64_t) * (size_t)info->ndim);
    return info->ndim;
}

nu_status nu_st_get(nu_st_file *f, nu_ctx *ctx, const char *name, nu_tensor **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_st_get: NULL out");
    *out = NULL;
    if (!f || !ctx || !name) return nu_error(NU_ERR_INVALID_ARG, "nu_st_get: NULL argument");
    const nu_st_info *info = find_or_error(f, name);
    if (!info) return NU_ERR_NOT_FOUND;
    void *data = (void *)info->data;
    size_t al = elem_size(info->type);
    if (info->nbytes && (uintptr_t)data % al != 0) {
        /* misaligned (header length not a multiple of the element size): copy into the arena */
        void *copy = nu_ctx_alloc(ctx, info->nbytes);
        if (!copy) return nu_error(NU_ERR_NOMEM, "%s: out of memory copying '%.100s'", f->label, name);
        memcpy(copy, data, info->nbytes);
        data = copy;
    }
    int64_t ne[NU_MAX_DIMS];
    int nd = tensor_dims(info, ne);
    nu_tensor *t = nu_new_tensor_ext(ctx, info->type, nd, ne, data);
    if (!t) return nu_error(NU_ERR_NOMEM, "%s: out of memory for tensor '%.100s'", f->label, name);
    nu_set_name(t, "%s", name);
    *out = t;
    return NU_OK;
}

nu_status nu_st_get_f32(nu_st_file *f, nu_ctx *ctx, const char *name, nu_tensor **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_st_get_f32: NULL out");
    *out = NULL;
    if (!f || !ctx || !name) return nu_error(NU_ERR_INVALID_ARG, "nu_st_get_f32: NULL argument");
    const nu_st_info *info = find_or_error(f, name);
    if (!info) return NU_ERR_NOT_FOUND;
    size_t es = elem_size(info->type);
    size_t numel = info->nbytes / es;
    float *dst = nu_ctx_alloc(ctx, numel ? numel * sizeof(float) : sizeof(float));
    if (!dst) return nu_error(NU_ERR_NOMEM, "%s: out of memory for f32 copy of '%.100s'", f->label, name);
    const uint8_t *src = info->data;
    if ((uintptr_t)src % es == 0) {
        if (numel) nu_row_to_f32(info->type, src, dst, (int64_t)numel);
    } else {
        /* misaligned source: convert in chunks through an aligned bounce buffer */
        enum { CHUNK = 16384 };
        uint64_t bounce[CHUNK / 8]; /* 8-byte aligned */
        size_t per = sizeof bounce / es;
        for (size_t i = 0; i < numel; i += per) {
            size_t k = numel - i < per ? numel - i : per;
            memcpy(bounce, src + i * es, k * es);
            nu_row_to_f32(info->type, bounce, dst + i, (int64_t)k);
        }
    }
    int64_t ne[NU_MAX_DIMS];
    int nd = tensor_dims(info, ne);
    nu_tensor *t = nu_new_tensor_ext(ctx, NU_TYPE_F32, nd, ne, dst);
    if (!t) return nu_error(NU_ERR_NOMEM, "%s: out of memory for tensor '%.100s'", f->label, name);
    nu_set_name(t, "%s", name);
    *out = t;
    return NU_OK;
}

/* ---------------------------------------------------------------- writer */

typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0) sb_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* A JSON string literal (bytes >= 0x80 copied; the header is re-parsed to check UTF-8). */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* Writes the tensor's values densely packed in row-major order (walks byte strides). */
static bool write_packed(FILE *fp, const nu_tensor *t, size_t es) {
    int nd = t->ndim;
    if (nd == 0) return fwrite(t->data, es, 1, fp) == 1;
    for (int d = 0; d < nd; d++)
        if (t->ne[d] == 0) return true;
    /* contiguous? */
    bool contig = true;
    int64_t expect = (int64_t)es;
    for (int d = nd - 1; d >= 0; d--) {
        if (t->ne[d] != 1 && t->nb[d] != expect) contig = false;
        expect *= t->ne[d];
    }
    if (contig) return fwrite(t->data, 1, (size_t)expect, fp) == (size_t)expect;
    int64_t idx[NU_MAX_DIMS] = {0};
    int64_t inner = t->ne[nd - 1];
    for (;;) {
        const char *p = t->data;
        for (int d = 0; d < nd - 1; d++) p += idx[d] * t->nb[d];
        if (t->nb[nd - 1] == (int64_t)es) {
            if (fwrite(p, es, (size_t)inner, fp) != (size_t)inner) return false;
        } else {
            for (int64_t i = 0; i < inner; i++)
                if (fwrite(p + i * t->nb[nd - 1], es, 1, fp) != 1) return false;
        }
        int d = nd - 2;
        for (; d >= 0; d--) {
            if (++idx[d] < t->ne[d]) break;
            idx[d] = 0;
        }
        if (d < 0) return true;
    }
}

static int cmp_str_ptr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

nu_status nu_st_save(const char *path, nu_tensor *const *tensors, int n, const char *const *meta_keys,
                     const char *const *meta_values, int n_meta) {
    if (!path || !*path) return nu_error(NU_ERR_INVALID_ARG, "nu_st_save: empty path");
    if (n < 0 || (n > 0 && !tensors) || n_meta < 0 || (n_meta > 0 && (!meta_keys || !meta_values)))
        return nu_error(NU_ERR_INVALID_ARG, "%s: nu_st_save: bad tensor or metadata arrays", path);
    for (int i = 0; i < n; i++) {
        const nu_tensor *t = tensors[i];
        if (!t) return nu_error(NU_ERR_INVALID_ARG, "%s: tensor %d is NULL", path, i);
        if (!t->name[0]) return nu_error(NU_ERR_INVALID_ARG, "%s: tensor %d has no name", path, i);
        if (strcmp(t->name, "__metadata__") == 0)
            return nu_error(NU_ERR_INVALID_ARG, "%s: '__metadata__' is reserved, not a tensor name", path);
        if (!st_type_name(t->type))
            return nu_error(NU_ERR_UNSUPPORTED, "%s: tensor '%s': safetensors cannot store type %s", path, t->name,
                            nu_type_name(t->type));
        if (t->ndim < 0 || t->ndim > NU_MAX_DIMS)
            return nu_error(NU_ERR_INVALID_ARG, "%s: tensor '%s': bad ndim %d", path, t->name, t->ndim);
        if (!t->data && nu_nelements(t) > 0)
            return nu_error(NU_ERR_INVALID_ARG, "%s: tensor '%s' has no data", path, t->name);
    }
    for (int i = 0; i < n_meta; i++)
        if (!meta_keys[i] || !meta_values[i])
            return nu_error(NU_ERR_INVALID_ARG, "%s: metadata entry %d is NULL", path, i);
    /* unique names and keys */
    if (n > 1 || n_meta > 1) {
        int m = n > n_meta ? n : n_meta;
        const char **names = malloc((size_t)m * sizeof *names);
        if (!names) return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
        for (int pass = 0; pass < 2; pass++) {
            int k = pass == 0 ? n : n_meta;
            for (int i = 0; i < k; i++) names[i] = pass == 0 ? tensors[i]->name : meta_keys[i];
            qsort(names, (size_t)k, sizeof *names, cmp_str_ptr);
            for (int i = 1; i < k; i++)
                if (strcmp(names[i - 1], names[i]) == 0) {
                    nu_status st = nu_error(NU_ERR_INVALID_ARG, "%s: duplicate %s '%s'", path,
                                            pass == 0 ? "tensor name" : "metadata key", names[i]);
                    free(names);
                    return st;
                }
        }
        free(names);
    }

    /* header */
    sbuf h = {0};
    sb_str(&h, "{");
    if (n_meta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_str(&h, ",");
            sb_json_str(&h, meta_keys[i]);
            sb_str(&h, ":");
            sb_json_str(&h, meta_values[i]);
        }
        sb_str(&h, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const nu_tensor *t = tensors[i];
        if (i || n_meta > 0) sb_str(&h, ",");
        sb_json_str(&h, t->name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_type_name(t->type));
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            sb_printf(&h, d ? ",%lld" : "%lld", (long long)t->ne[d]);
            numel *= (uint64_t)t->ne[d];
        }
        uint64_t nb = numel * elem_size(t->type);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + nb));
        off += nb;
    }
    sb_str(&h, "}");
    while (!h.oom && h.len % 8 != 0) sb_str(&h, " "); /* data starts 8-byte aligned */
    if (h.oom) {
        free(h.s);
        return nu_error(NU_ERR_NOMEM, "%s: out of memory building the header", path);
    }
    nu_json *check = nu_json_parse(h.s, h.len); /* names/metadata must be valid UTF-8 */
    if (!check) {
        free(h.s);
        return nu_error(NU_ERR_INVALID_ARG, "%s: tensor names or metadata are not valid UTF-8", path);
    }
    nu_json_free(check);

    nu_atomic_file af;
    nu_status st = nu_atomic_begin(&af, path);
    if (st != NU_OK) {
        free(h.s);
        return st;
    }
    FILE *fp = af.fp;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    bool ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(h.s, 1, h.len, fp) == h.len;
    free(h.s);
    for (int i = 0; ok && i < n; i++) ok = write_packed(fp, tensors[i], elem_size(tensors[i]->type));
    return nu_atomic_end(&af, ok);
}
