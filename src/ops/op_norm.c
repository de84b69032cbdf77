/*
 * op_norm.c — the norm op family: builders, shape rules and backward rules of
 *   group_norm (x [B, C, ...], G groups over channels), layer_norm and rms_norm (last dim),
 * each with optional affine weight (and bias) as torch.nn.functional.group_norm / layer_norm and
 * RMSNorm y = x * rsqrt(mean(x^2) + eps) * w. Kernels: src/cpu/k_norm.c.
 *
 * Saved statistics (node->extra, f32, after the node's data):
 *   GROUP_NORM  [2, B*G]: mean, then rstd = 1/sqrt(var + eps) (biased variance)
 *   LAYER_NORM  [2, R]  : mean, rstd per row (R = rows = nelements / D)
 *   RMS_NORM    [R]     : rstd = 1/sqrt(mean(x^2) + eps)
 * Backward reads them through a view (never recomputes them). One *_BACKWARD op with
 * params[0] = mode: 0 -> dx (shape of x); 1 -> [2, C] (rows dw; db) or [1, C] (dw only, when
 * there is no bias, always for rms) reduced over B and space without materialising dy * xhat.
 * Formulas (xhat = (x - mean) * rstd, g = dy * w, n = elements per group/row):
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))                   (group, layer)
 *   dx = rstd * g - x * rstd^3 * mean(g * x)                             (rms)
 *   dw = sum dy * xhat, db = sum dy over everything but the channel.
 * Inputs are made contiguous (a copy only for strided views); w / b must be [C] (or [D]).
 *
 * Tested by tests/test_op_norm.c: fast vs reference (odd sizes, strided inputs, 1 vs 2
 * threads), PyTorch fixtures (scripts/fixtures_norm.py -> tests/fixtures/norm.safetensors) and
 * finite-difference gradient checks.
 */
#include "core/internal.h"

static nu_tensor *prep_input(nu_ctx *ctx, nu_tensor *x) {
    if (x->type != NU_TYPE_F32) x = nu_cast(ctx, x, NU_TYPE_F32);
    if (!nu_is_contiguous(x)) x = nu_contiguous(ctx, x);
    return x;
}

/* Affine parameter: NULL or [n] (any float type -> f32, contiguous). */
static nu_tensor *prep_affine(nu_ctx *ctx, nu_tensor *w, int64_t n) {
    if (!w) return NULL;
    NU_ASSERT(nu_nelements(w) == n);
    if (w->ndim != 1) w = nu_reshape(ctx, w, 1, (int64_t[]){n});
    return prep_input(ctx, w);
}

/* ---------------------------------------------------------------- builders */

nu_tensor *nu_group_norm(nu_ctx *ctx, nu_tensor *x, int groups, nu_tensor *w, nu_tensor *b, float eps) {
    x = prep_input(ctx, x);
    NU_ASSERT(x->ndim >= 2);
    int64_t B = x->ne[0], C = x->ne[1];
    NU_ASSERT(groups > 0 && C % groups == 0);
    nu_tensor *t = nu_new_node(ctx, NU_OP_GROUP_NORM, NU_TYPE_F32, x->ndim, x->ne);
    t->src[0] = x;
    t->src[1] = prep_affine(ctx, w, C);
    t->src[2] = prep_affine(ctx, b, C);
    t->params[0] = groups;
    nu_set_param_f(t, 1, eps);
    t->extra = (size_t)(2 * B * groups) * sizeof(float);
    return t;
}

nu_tensor *nu_layer_norm(nu_ctx *ctx, nu_tensor *x, nu_tensor *w, nu_tensor *b, float eps) {
    x = prep_input(ctx, x);
    int64_t D = x->ne[x->ndim - 1], R = D ? nu_nelements(x) / D : 0;
    nu_tensor *t = nu_new_node(ctx, NU_OP_LAYER_NORM, NU_TYPE_F32, x->ndim, x->ne);
    t->src[0] = x;
    t->src[1] = prep_affine(ctx, w, D);
    t->src[2] = prep_affine(ctx, b, D);
    nu_set_param_f(t, 1, eps);
    t->extra = (size_t)(2 * R) * sizeof(float);
    return t;
}

nu_tensor *nu_rms_norm(nu_ctx *ctx, nu_tensor *x, nu_tensor *w, float eps) {
    x = prep_input(ctx, x);
    int64_t D = x->ne[x->ndim - 1], R = D ? nu_nelements(x) / D : 0;
    nu_tensor *t = nu_new_node(ctx, NU_OP_RMS_NORM, NU_TYPE_F32, x->ndim, x->ne);
    t->src[0] = x;
    t->src[1] = prep_affine(ctx, w, D);
    nu_set_param_f(t, 1, eps);
    t->extra = (size_t)R * sizeof(float);
    return t;
}

/* ---------------------------------------------------------------- backward rules */

/* The saved statistics of `node` as a 1-D view of n floats. */
static nu_tensor *stats_view(nu_ctx *ctx, nu_tensor *node, int64_t n) {
    return nu_view(ctx, node, 1, (int64_t[]){n}, (int64_t[]){sizeof(float)}, nu_nbytes(node));
}

/* BACKWARD node: src0 dy, src1 x, src2 stats, src3 w (or NULL); params[0] mode, [1] groups. */
static nu_tensor *backward_node(nu_ctx *ctx, int op, nu_tensor *node, nu_tensor *gy, nu_tensor *stats, int mode,
                                int nrows_out) {
    nu_tensor *x = node->src[0];
    nu_tensor *t;
    if (mode == 0) {
        t = nu_new_node(ctx, op, NU_TYPE_F32, x->ndim, x->ne);
    } else {
        int64_t nch = op == NU_OP_GROUP_NORM_BACKWARD ? x->ne[1] : x->ne[x->ndim - 1];
        t = nu_new_node(ctx, op, NU_TYPE_F32, 2, (int64_t[]){nrows_out, nch});
    }
    t->src[0] = gy;
    t->src[1] = x;
    t->src[2] = stats;
    t->src[3] = node->src[1];
    t->params[0] = mode;
    t->params[1] = op == NU_OP_GROUP_NORM_BACKWARD ? node->params[0] : 0;
    return t;
}

/* Row `i` of a [rows, n] node as a [n] tensor (reshape of a slice view). */
static nu_tensor *row_of(nu_ctx *ctx, nu_tensor *m, int i) {
    return nu_reshape(ctx, nu_slice(ctx, m, 0, i, i + 1), 1, (int64_t[]){m->ne[1]});
}

static void bw_norm_common(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy, int op, int64_t n_stats, bool has_bias) {
    nu_tensor *x = node->src[0], *w = node->src[1], *b = has_bias ? node->src[2] : NULL;
    if (!nu_is_contiguous(gy)) gy = nu_contiguous(ctx, gy);
    nu_tensor *stats = stats_view(ctx, node, n_stats);
    if (nu_needs_grad(x)) nu_grad_accumulate(ctx, x, backward_node(ctx, op, node, gy, stats, 0, 0));
    if (nu_needs_grad(w) || nu_needs_grad(b)) {
        nu_tensor *m = backward_node(ctx, op, node, gy, stats, 1, b ? 2 : 1);
        if (nu_needs_grad(w)) nu_grad_accumulate(ctx, w, row_of(ctx, m, 0));
        if (nu_needs_grad(b)) nu_grad_accumulate(ctx, b, row_of(ctx, m, 1));
    }
}

static void bw_group_norm(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    int64_t bg = node->ne[0] * node->params[0];
    bw_norm_common(ctx, node, gy, NU_OP_GROUP_NORM_BACKWARD, 2 * bg, true);
}

static void bw_layer_norm(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    int64_t D = node->ne[node->ndim - 1], R = D ? nu_nelements(node) / D : 0;
    bw_norm_common(ctx, node, gy, NU_OP_LAYER_NORM_BACKWARD, 2 * R, true);
}

static void bw_rms_norm(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    int64_t D = node->ne[node->ndim - 1], R = D ? nu_nelements(node) / D : 0;
    bw_norm_common(ctx, node, gy, NU_OP_RMS_NORM_BACKWARD, R, false);
}

void nu_ops_register_norm(nu_op_def *tab) {
    tab[NU_OP_GROUP_NORM].backward = bw_group_norm;
    tab[NU_OP_LAYER_NORM].backward = bw_layer_norm;
    tab[NU_OP_RMS_NORM].backward = bw_rms_norm;
}
