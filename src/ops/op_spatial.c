/*
 * op_spatial.c — builders, shape rules and backward rules of the spatial family (NCHW):
 * nearest upsampling, average and max pooling, concat and zero padding.
 *   upsample_nearest: backward = s^2 * avg_pool2d(gy, s, s)      (sum over each s x s block)
 *   avg_pool2d:       backward = AVG_POOL2D_BACKWARD(gy)          (spread each gy / k^2)
 *   max_pool2d:       backward = MAX_POOL2D_BACKWARD(gy, x)       (to the first max, as torch)
 *   concat:           backward = slices of gy;  pad: backward = slice of gy
 * Tested by tests/test_op_spatial.c (PyTorch fixtures, gradcheck, 1 vs 2 threads).
 */
#include "core/internal.h"

static int64_t pool_out(int64_t n, int k, int s, int pad) { return (n + 2 * pad - k) / s + 1; }

nu_tensor *nu_upsample_nearest(nu_ctx *ctx, nu_tensor *x, int scale) {
    NU_ASSERT(x->ndim == 4 && scale >= 1 && x->type == NU_TYPE_F32);
    int64_t ne[4] = {x->ne[0], x->ne[1], x->ne[2] * scale, x->ne[3] * scale};
    nu_tensor *t = nu_new_node(ctx, NU_OP_UPSAMPLE_NEAREST, NU_TYPE_F32, 4, ne);
    t->src[0] = x;
    t->params[0] = scale;
    return t;
}

static nu_tensor *pool_node(nu_ctx *ctx, int op, nu_tensor *x, int kernel, int stride, int padding) {
    NU_ASSERT(x->ndim == 4 && x->type == NU_TYPE_F32 && kernel >= 1 && stride >= 1 && padding >= 0 && 2 * padding <= kernel);
    int64_t ne[4] = {x->ne[0], x->ne[1], pool_out(x->ne[2], kernel, stride, padding),
                     pool_out(x->ne[3], kernel, stride, padding)};
    NU_ASSERT(ne[2] >= 1 && ne[3] >= 1);
    nu_tensor *t = nu_new_node(ctx, op, NU_TYPE_F32, 4, ne);
    t->src[0] = x;
    t->params[0] = kernel;
    t->params[1] = stride;
    t->params[2] = padding;
    return t;
}

nu_tensor *nu_avg_pool2d(nu_ctx *ctx, nu_tensor *x, int kernel, int stride, int padding) {
    return nu_avg_pool2d_ex(ctx, x, kernel, stride, padding, true);
}

nu_tensor *nu_avg_pool2d_ex(nu_ctx *ctx, nu_tensor *x, int kernel, int stride, int padding, bool count_include_pad) {
    nu_tensor *t = pool_node(ctx, NU_OP_AVG_POOL2D, x, kernel, stride, padding);
    t->params[3] = count_include_pad;
    return t;
}

nu_tensor *nu_max_pool2d(nu_ctx *ctx, nu_tensor *x, int kernel, int stride, int padding) {
    return pool_node(ctx, NU_OP_MAX_POOL2D, x, kernel, stride, padding);
}

nu_tensor *nu_concat(nu_ctx *ctx, nu_tensor *a, nu_tensor *b, int dim) {
    NU_ASSERT(a->ndim == b->ndim && a->type == NU_TYPE_F32 && b->type == NU_TYPE_F32);
    dim = nu_norm_dim(a, dim);
    int64_t ne[NU_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) {
        NU_ASSERT(d == dim || a->ne[d] == b->ne[d]);
        ne[d] = d == dim ? a->ne[d] + b->ne[d] : a->ne[d];
    }
    nu_tensor *t = nu_new_node(ctx, NU_OP_CONCAT, NU_TYPE_F32, a->ndim, ne);
    t->src[0] = a;
    t->src[1] = b;
    t->params[0] = dim;
    return t;
}

nu_tensor *nu_pad(nu_ctx *ctx, nu_tensor *a, const int *pad) {
    NU_ASSERT(a->type == NU_TYPE_F32);
    int64_t ne[NU_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) {
        NU_ASSERT(pad[2 * d] >= 0 && pad[2 * d + 1] >= 0);
        ne[d] = a->ne[d] + pad[2 * d] + pad[2 * d + 1];
    }
    nu_tensor *t = nu_new_node(ctx, NU_OP_PAD, NU_TYPE_F32, a->ndim, ne);
    t->src[0] = a;
    for (int d = 0; d < 2 * a->ndim; d++) t->params[d] = pad[d];
    return t;
}

/* ---------------------------------------------------------------- backward rules */

static void bw_upsample(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    int s = node->params[0];
    nu_tensor *g = nu_avg_pool2d(ctx, gy, s, s, 0);
    nu_grad_accumulate(ctx, node->src[0], s == 1 ? g : nu_scale(ctx, g, (float)(s * s)));
}

static void bw_pool(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *x = node->src[0];
    if (!nu_needs_grad(x)) return;
    int op = node->op == NU_OP_AVG_POOL2D ? NU_OP_AVG_POOL2D_BACKWARD : NU_OP_MAX_POOL2D_BACKWARD;
    nu_tensor *g = nu_new_node(ctx, op, NU_TYPE_F32, 4, x->ne);
    g->src[0] = gy;
    g->src[1] = x;
    memcpy(g->params, node->params, 4 * sizeof(int32_t));
    nu_grad_accumulate(ctx, x, g);
}

static void bw_concat(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    int dim = node->params[0];
    nu_tensor *a = node->src[0], *b = node->src[1];
    if (nu_needs_grad(a)) nu_grad_accumulate(ctx, a, nu_slice(ctx, gy, dim, 0, a->ne[dim]));
    if (nu_needs_grad(b)) nu_grad_accumulate(ctx, b, nu_slice(ctx, gy, dim, a->ne[dim], node->ne[dim]));
}

static void bw_pad(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *a = node->src[0];
    nu_tensor *g = gy;
    for (int d = 0; d < a->ndim; d++)
        if (node->params[2 * d] || node->params[2 * d + 1])
            g = nu_slice(ctx, g, d, node->params[2 * d], node->params[2 * d] + a->ne[d]);
    nu_grad_accumulate(ctx, a, g);
}

void nu_ops_register_spatial(nu_op_def *tab) {
    tab[NU_OP_UPSAMPLE_NEAREST].backward = bw_upsample;
    tab[NU_OP_AVG_POOL2D].backward = bw_pool;
    tab[NU_OP_MAX_POOL2D].backward = bw_pool;
    tab[NU_OP_CONCAT].backward = bw_concat;
    tab[NU_OP_PAD].backward = bw_pad;
}
