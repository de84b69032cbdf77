/*
 * weights.c — named model weights from safetensors/GGUF files (see weights.h).
 * Tested by tests/test_nn.c (both formats, prefixes, renames, conversion, errors).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"
#include "nn/weights.h"

typedef struct entry {
    char *name;
    int file;          /* index into files (-1: a slice of another entry) */
    int idx;           /* tensor index in that file   */
    nu_tensor *tensor; /* created on first get        */
    int64_t conv_ne[4]; /* a conv weight converted to matrix form: its [O, I, KH, KW] (else 0) */
    char *slice_src;   /* slices: source name, rows [start, start+n) */
    int64_t start, n;
} entry;

typedef struct wfile {
    nu_st_file *st;
    nu_gguf *gguf;
} wfile;

struct nu_weights {
    nu_ctx *ctx;
    wfile *files;
    int n_files;
    entry *e;
    int n, cap;
    int *hash; /* open addressing over e[], -1 = empty */
    int hcap;
    nu_type matrix_type;
    size_t bytes_used;
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int find(const nu_weights *w, const char *name) {
    if (!w->hcap) return -1;
    for (int h = (int)(hash_str(name) & (uint64_t)(w->hcap - 1));; h = (h + 1) & (w->hcap - 1)) {
        int i = w->hash[h];
        if (i < 0) return -1;
        if (w->e[i].name && strcmp(w->e[i].name, name) == 0) return i;
    }
}

static void rehash(nu_weights *w) {
    int cap = w->hcap ? w->hcap : 1024;
    while (cap < 2 * (w->n + 1)) cap *= 2;
    free(w->hash);
    w->hash = malloc(sizeof(int) * (size_t)cap);
    NU_ASSERT(w->hash);
    for (int i = 0; i < cap; i++) w->hash[i] = -1;
    w->hcap = cap;
    for (int i = 0; i < w->n; i++) {
        if (!w->e[i].name) continue;
        int h = (int)(hash_str(w->e[i].name) & (uint64_t)(cap - 1));
        while (w->hash[h] >= 0) h = (h + 1) & (cap - 1);
        w->hash[h] = i;
    }
}

nu_weights *nu_weights_new(void) {
    nu_weights *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->ctx = nu_ctx_new(NULL);
    w->matrix_type = NU_TYPE_COUNT;
    if (!w->ctx) {
        free(w);
        return NULL;
    }
    return w;
}

void nu_weights_release_pages(nu_weights *w) {
    for (int i = 0; w && i < w->n_files; i++) {
        nu_st_release_pages(w->files[i].st);
        nu_gguf_release_pages(w->files[i].gguf);
    }
}

void nu_weights_free(nu_weights *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->e[i].name);
        free(w->e[i].slice_src);
    }
    for (int i = 0; i < w->n_files; i++) {
        nu_st_close(w->files[i].st);
        nu_gguf_close(w->files[i].gguf);
    }
    free(w->files);
    free(w->e);
    free(w->hash);
    nu_ctx_free(w->ctx);
    free(w);
}

static nu_status add_entry(nu_weights *w, const char *path, const char *name, int file, int idx) {
    if (find(w, name) >= 0) return nu_error(NU_ERR_FORMAT, "%s: tensor '%s' is defined twice", path, name);
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 256;
        entry *ne = realloc(w->e, sizeof(entry) * (size_t)w->cap);
        if (!ne) return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
        w->e = ne;
    }
    char *copy = strdup(name);
    if (!copy) return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    w->e[w->n++] = (entry){.name = copy, .file = file, .idx = idx};
    if (2 * w->n > w->hcap) {
        rehash(w);
    } else {
        int h = (int)(hash_str(copy) & (uint64_t)(w->hcap - 1));
        while (w->hash[h] >= 0) h = (h + 1) & (w->hcap - 1);
        w->hash[h] = w->n - 1;
    }
    return NU_OK;
}

nu_status nu_weights_add_file(nu_weights *w, const char *path, const char *prefix) {
    nu_file_map m;
    nu_status s = nu_file_map_open(path, &m);
    if (s != NU_OK) return s;
    bool is_gguf = m.size >= 4 && memcmp(m.data, "GGUF", 4) == 0;
    nu_file_map_close(&m);
    wfile f = {0};
    s = is_gguf ? nu_gguf_open(path, &f.gguf) : nu_st_open(path, &f.st);
    if (s != NU_OK) return s;
    wfile *nf = realloc(w->files, sizeof(wfile) * (size_t)(w->n_files + 1));
    if (!nf) {
        nu_st_close(f.st);
        nu_gguf_close(f.gguf);
        return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    }
    w->files = nf;
    int fi = w->n_files++;
    w->files[fi] = f;
    size_t plen = prefix ? strlen(prefix) : 0;
    int n = f.st ? nu_st_count(f.st) : nu_gguf_tensor_count(f.gguf);
    for (int i = 0; i < n; i++) {
        const char *name = f.st ? nu_st_at(f.st, i)->name : nu_gguf_tensor_at(f.gguf, i)->name;
        if (plen && strncmp(name, prefix, plen) != 0) continue;
        s = add_entry(w, path, name + plen, fi, i);
        if (s != NU_OK) return s;
    }
    return NU_OK;
}

bool nu_weights_rename(nu_weights *w, const char *from, const char *to) {
    int i = find(w, from);
    if (i < 0) return false;
    char *copy = strdup(to);
    NU_ASSERT(copy);
    free(w->e[i].name);
    w->e[i].name = copy;
    if (w->e[i].tensor) nu_set_name(w->e[i].tensor, "%s", to);
    rehash(w);
    return true;
}

bool nu_weights_add_slice(nu_weights *w, const char *name, const char *src, int64_t start, int64_t n) {
    int si = find(w, src);
    if (si < 0 || find(w, name) >= 0) return false;
    if (add_entry(w, "slice", name, -1, -1) != NU_OK) return false;
    entry *e = &w->e[w->n - 1];
    e->slice_src = strdup(src);
    e->start = start;
    e->n = n;
    return e->slice_src != NULL;
}

bool nu_weights_add_tensor(nu_weights *w, const char *name, nu_tensor *t) {
    if (!t || !t->data || find(w, name) >= 0) return false;
    if (add_entry(w, "memory", name, -1, -1) != NU_OK) return false;
    w->e[w->n - 1].tensor = t;
    nu_set_name(t, "%s", name);
    w->bytes_used += nu_nbytes(t);
    return true;
}

int nu_weights_logical_shape(nu_weights *w, const char *name, int64_t ne[NU_MAX_DIMS]) {
    nu_tensor *t = nu_weights_get(w, name);
    if (!t) return 0;
    const entry *e = &w->e[find(w, name)];
    if (e->conv_ne[0]) {
        memcpy(ne, e->conv_ne, sizeof e->conv_ne);
        return 4;
    }
    memcpy(ne, t->ne, sizeof(int64_t) * (size_t)t->ndim);
    return t->ndim;
}

int nu_weights_count(const nu_weights *w) { return w->n; }
const char *nu_weights_name_at(const nu_weights *w, int i) {
    NU_ASSERT(i >= 0 && i < w->n);
    return w->e[i].name;
}
void nu_weights_set_matrix_type(nu_weights *w, nu_type type) { w->matrix_type = type; }
nu_ctx *nu_weights_ctx(nu_weights *w) { return w->ctx; }
size_t nu_weights_bytes_used(const nu_weights *w) { return w->bytes_used; }

/* After a load-time conversion the source bytes (pages of the mapped model file) are not read
 * again: ask the kernel to reclaim them so that they stop counting in the resident set (an f16
 * checkpoint run with --type q8_0 would otherwise hold both copies). MADV_PAGEOUT keeps the
 * contents (file pages are re-read, anonymous ones swapped if ever touched again), so it is
 * safe whatever the memory is; only whole pages inside the range are affected. */
static void release_pages(const void *p, size_t n) {
#ifdef MADV_PAGEOUT
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo = ((uintptr_t)p + page - 1) & ~(page - 1),
              hi = ((uintptr_t)p + n) & ~(page - 1);
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_PAGEOUT);
#else
    (void)p;
    (void)n;
#endif
}

/* Converts a contiguous float tensor [rows, ...] to type t row by row (no f32 copy of the whole
 * tensor). A matrix keeps its shape; a conv weight [O, I, KH, KW] keeps it for a float t and
 * becomes the matrix form [O, I*KH*KW] for a block type (tensor.h, nu_conv2d). */
static nu_tensor *convert_matrix(nu_weights *w, nu_tensor *src, nu_type t) {
    int64_t K = nu_nelements(src) / src->ne[0];
    nu_tensor *dst = nu_type_info(t)->is_quant ? nu_new_tensor(w->ctx, t, 2, (int64_t[]){src->ne[0], K})
                                                 : nu_new_tensor(w->ctx, t, src->ndim, src->ne);
    float *row = malloc(sizeof(float) * (size_t)K);
    NU_ASSERT(row);
    for (int64_t r = 0; r < src->ne[0]; r++) {
        nu_row_to_f32(src->type, (const char *)src->data + r * src->nb[0], row, K);
        nu_row_from_f32(t, row, (char *)dst->data + r * dst->nb[0], K);
    }
    free(row);
    release_pages(src->data, nu_nbytes(src));
    return dst;
}

nu_tensor *nu_weights_get(nu_weights *w, const char *name) {
    int i = find(w, name);
    if (i < 0) return NULL;
    entry *e = &w->e[i];
    if (e->tensor) return e->tensor;
    if (e->file < 0) { /* a row slice of another tensor: a header over its data */
        nu_tensor *s = nu_weights_get(w, e->slice_src);
        if (!s || e->start < 0 || e->n <= 0 || e->start + e->n > s->ne[0] || !nu_is_contiguous(s)) return NULL;
        int64_t ne[NU_MAX_DIMS];
        memcpy(ne, s->ne, sizeof ne);
        ne[0] = e->n;
        e->tensor = nu_new_tensor_ext(w->ctx, s->type, s->ndim, ne, (char *)s->data + e->start * s->nb[0]);
        nu_set_name(e->tensor, "%s", name);
        return e->tensor;
    }
    wfile *f = &w->files[e->file];
    nu_tensor *t = NULL;
    nu_status s;
    if (f->st) s = nu_st_get(f->st, w->ctx, nu_st_at(f->st, e->idx)->name, &t);
    else s = nu_gguf_get(f->gguf, w->ctx, nu_gguf_tensor_at(f->gguf, e->idx)->name, &t);
    if (s != NU_OK) return NULL;
    if (w->matrix_type != NU_TYPE_COUNT && (t->ndim == 2 || t->ndim == 4) && t->ne[0] > 0 &&
        (nu_nelements(t) / t->ne[0]) % 32 == 0 && t->type != w->matrix_type && nu_type_info(t->type)->is_float &&
        nu_is_contiguous(t)) {
        if (t->ndim == 4 && nu_type_info(w->matrix_type)->is_quant) memcpy(e->conv_ne, t->ne, sizeof e->conv_ne);
        t = convert_matrix(w, t, w->matrix_type);
    }
    nu_set_name(t, "%s", name);
    w->bytes_used += nu_nbytes(t);
    e->tensor = t;
    return t;
}
