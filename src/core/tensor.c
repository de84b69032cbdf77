/*
 * tensor.c — the context arena and tensor headers: creation, strides, shape utilities and slow
 * element access for host code and tests. Tested by tests/test_core.c.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/internal.h"

/* The arena is a list of chunks; allocations are 64-byte aligned and zeroed. */
typedef struct chunk {
    struct chunk *next;
    size_t size, used;
    _Alignas(64) unsigned char mem[];
} chunk;

struct nu_ctx {
    chunk *head;
    size_t chunk_bytes;
    bool alloc_data;
};

nu_ctx_params nu_ctx_params_init(void) {
    nu_ctx_params p = {.arena_bytes = 0, .alloc_data = true};
    return p;
}

nu_ctx *nu_ctx_new(const nu_ctx_params *p) {
    nu_ctx_params d = nu_ctx_params_init();
    if (!p) p = &d;
    nu_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->chunk_bytes = p->arena_bytes ? p->arena_bytes : (size_t)1 << 20;
    ctx->alloc_data = p->alloc_data;
    return ctx;
}

void nu_ctx_free(nu_ctx *ctx) {
    if (!ctx) return;
    for (chunk *c = ctx->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(ctx);
}

void nu_ctx_set_alloc_data(nu_ctx *ctx, bool on) { ctx->alloc_data = on; }

void *nu_ctx_alloc(nu_ctx *ctx, size_t bytes) {
    if (bytes > SIZE_MAX / 2) return NULL; /* absurd sizes (e.g. from a hostile file) */
    bytes = (bytes + 63) & ~(size_t)63;
    chunk *c = ctx->head;
    if (c && c->size - c->used < bytes && bytes > ctx->chunk_bytes / 4) {
        /* a large block gets a chunk of its own behind the head, so the head's free space is
         * not abandoned (200 weights of 2 MiB would otherwise map 1.5x their size) */
        chunk *big = aligned_alloc(64, (sizeof(chunk) + bytes + 63) & ~(size_t)63);
        if (!big) return NULL;
        big->size = big->used = bytes;
        big->next = c->next;
        c->next = big;
        memset(big->mem, 0, bytes);
        return big->mem;
    }
    if (!c || c->size - c->used < bytes) {
        size_t size = bytes > ctx->chunk_bytes ? bytes : ctx->chunk_bytes;
        c = aligned_alloc(64, (sizeof(chunk) + size + 63) & ~(size_t)63);
        if (!c) return NULL;
        c->size = size;
        c->used = 0;
        c->next = ctx->head;
        ctx->head = c;
    }
    void *p = c->mem + c->used;
    c->used += bytes;
    memset(p, 0, bytes);
    return p;
}

void nu_set_contiguous_strides(nu_tensor *t) {
    const nu_type_traits *tr = nu_type_info(t->type);
    int last = t->ndim - 1;
    NU_ASSERT(t->ne[last] % tr->blck == 0);
    t->nb[last] = (int64_t)tr->size;
    if (last >= 1) t->nb[last - 1] = (int64_t)nu_row_size(t->type, t->ne[last]);
    for (int d = last - 2; d >= 0; d--) t->nb[d] = t->nb[d + 1] * t->ne[d + 1];
}

static nu_tensor *new_header(nu_ctx *ctx, nu_type type, int ndim, const int64_t *ne) {
    NU_ASSERT(ndim >= 1 && ndim <= NU_MAX_DIMS);
    nu_tensor *t = nu_ctx_alloc(ctx, sizeof *t);
    NU_ASSERT(t);
    t->type = type;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        NU_ASSERT(ne[d] >= 0);
        t->ne[d] = ne[d];
    }
    nu_set_contiguous_strides(t);
    return t;
}

nu_tensor *nu_new_tensor(nu_ctx *ctx, nu_type type, int ndim, const int64_t *ne) {
    nu_tensor *t = new_header(ctx, type, ndim, ne);
    if (ctx->alloc_data) {
        t->data = nu_ctx_alloc(ctx, nu_nbytes(t) ? nu_nbytes(t) : 1);
        NU_ASSERT(t->data);
    }
    return t;
}

nu_tensor *nu_new_tensor_1d(nu_ctx *ctx, nu_type type, int64_t n0) { return nu_new_tensor(ctx, type, 1, (int64_t[]){n0}); }
nu_tensor *nu_new_tensor_2d(nu_ctx *ctx, nu_type type, int64_t n0, int64_t n1) {
    return nu_new_tensor(ctx, type, 2, (int64_t[]){n0, n1});
}
nu_tensor *nu_new_tensor_3d(nu_ctx *ctx, nu_type type, int64_t n0, int64_t n1, int64_t n2) {
    return nu_new_tensor(ctx, type, 3, (int64_t[]){n0, n1, n2});
}
nu_tensor *nu_new_tensor_4d(nu_ctx *ctx, nu_type type, int64_t n0, int64_t n1, int64_t n2, int64_t n3) {
    return nu_new_tensor(ctx, type, 4, (int64_t[]){n0, n1, n2, n3});
}

nu_tensor *nu_new_tensor_ext(nu_ctx *ctx, nu_type type, int ndim, const int64_t *ne, void *data) {
    nu_tensor *t = new_header(ctx, type, ndim, ne);
    t->data = data;
    return t;
}

nu_tensor *nu_dup_tensor(nu_ctx *ctx, const nu_tensor *t) { return new_header(ctx, t->type, t->ndim, t->ne); }

nu_tensor *nu_new_node(nu_ctx *ctx, int op, nu_type type, int ndim, const int64_t *ne) {
    nu_tensor *t = new_header(ctx, type, ndim, ne);
    t->op = op;
    return t;
}

nu_tensor *nu_scalar_f32(nu_ctx *ctx, float v) {
    nu_tensor *t = new_header(ctx, NU_TYPE_F32, 1, (int64_t[]){1});
    t->data = nu_ctx_alloc(ctx, 4);
    NU_ASSERT(t->data);
    *(float *)t->data = v;
    return t;
}

int64_t nu_nelements(const nu_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->ne[d];
    return n;
}

size_t nu_nbytes(const nu_tensor *t) {
    /* bytes from the first to one past the last element, for any (non-negative) strides */
    const nu_type_traits *tr = nu_type_info(t->type);
    if (nu_nelements(t) == 0) return 0;
    size_t n = tr->size;
    int last = t->ndim - 1;
    n += (size_t)(t->ne[last] / tr->blck - 1) * (size_t)t->nb[last];
    for (int d = 0; d < last; d++) n += (size_t)(t->ne[d] - 1) * (size_t)t->nb[d];
    return n;
}

bool nu_is_contiguous(const nu_tensor *t) {
    const nu_type_traits *tr = nu_type_info(t->type);
    int64_t expect = (int64_t)tr->size;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->ne[d] != 1 && t->nb[d] != expect) return false;
        expect *= d == t->ndim - 1 ? t->ne[d] / tr->blck : t->ne[d];
    }
    return true;
}

bool nu_same_shape(const nu_tensor *a, const nu_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->ne[d] != b->ne[d]) return false;
    return true;
}

int nu_norm_dim(const nu_tensor *t, int dim) {
    if (dim < 0) dim += t->ndim;
    NU_ASSERT(dim >= 0 && dim < t->ndim);
    return dim;
}

const char *nu_shape_str(const nu_tensor *t, char *buf, size_t len) {
    int off = snprintf(buf, len, "%s [", nu_type_name(t->type));
    for (int d = 0; d < t->ndim && off > 0 && (size_t)off < len; d++)
        off += snprintf(buf + off, len - (size_t)off, d ? ", %lld" : "%lld", (long long)t->ne[d]);
    if (off > 0 && (size_t)off < len) snprintf(buf + off, len - (size_t)off, "]");
    return buf;
}

void nu_set_name(nu_tensor *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
}

float nu_get_f32_nd(const nu_tensor *t, const int64_t *idx) {
    NU_ASSERT(!nu_type_info(t->type)->is_quant && t->data);
    float v;
    nu_row_to_f32(t->type, nu_elem_ptr(t, idx), &v, 1);
    return v;
}

void nu_set_f32_nd(nu_tensor *t, const int64_t *idx, float v) {
    NU_ASSERT(!nu_type_info(t->type)->is_quant && t->data);
    nu_row_from_f32(t->type, &v, nu_elem_ptr(t, idx), 1);
}

/* Visits every element in row-major order of the logical shape. */
#define FOR_EACH_INDEX(t, idx, body)                                                           \
    do {                                                                                       \
        int64_t idx[NU_MAX_DIMS] = {0};                                                        \
        int64_t n_ = nu_nelements(t);                                                          \
        for (int64_t i_ = 0; i_ < n_; i_++) {                                                  \
            body;                                                                              \
            for (int d_ = (t)->ndim - 1; d_ >= 0; d_--) {                                      \
                if (++idx[d_] < (t)->ne[d_]) break;                                            \
                idx[d_] = 0;                                                                   \
            }                                                                                  \
        }                                                                                      \
    } while (0)

void nu_tensor_get_f32(const nu_tensor *t, float *out) {
    NU_ASSERT(t->data);
    if (nu_is_contiguous(t)) {
        nu_row_to_f32(t->type, t->data, out, nu_nelements(t));
        return;
    }
    NU_ASSERT(!nu_type_info(t->type)->is_quant);
    int64_t k = 0;
    FOR_EACH_INDEX(t, idx, nu_row_to_f32(t->type, nu_elem_ptr(t, idx), &out[k++], 1));
}

void nu_tensor_set_f32(nu_tensor *t, const float *in) {
    NU_ASSERT(t->data);
    if (nu_is_contiguous(t)) {
        nu_row_from_f32(t->type, in, t->data, nu_nelements(t));
        return;
    }
    NU_ASSERT(!nu_type_info(t->type)->is_quant);
    int64_t k = 0;
    FOR_EACH_INDEX(t, idx, nu_row_from_f32(t->type, &in[k++], nu_elem_ptr(t, idx), 1));
}
