/*
 * op_reduce.c — the reduce op family: builders, shape rules and backward rules of
 *   sum / mean / max along one dim (keepdim as PyTorch), sum_all / mean_all (shape [1]),
 *   softmax over the last dim, cross entropy (mean over rows) and the composite mse_loss.
 * Kernels: src/cpu/k_reduce.c.
 *
 * Shape rule: SUM and MAX nodes keep the reduced dim as size 1; keepdim=false is a reshape view
 * of that node (a 1-D input always gives shape [1], as there are no 0-d tensors).
 * CROSS_ENTROPY saves the per-row logsumexp after its data (node->extra = N floats); its
 * backward reads it through a view instead of recomputing it.
 *
 * Tested by tests/test_op_reduce.c: fast vs reference twins (odd sizes, strided views, 1 vs 2
 * threads), PyTorch fixtures (scripts/fixtures_reduce.py -> tests/fixtures/reduce.safetensors)
 * forward and backward, and finite-difference gradient checks.
 */
#include "core/internal.h"

/* ---------------------------------------------------------------- helpers */

/* Reductions compute in f32: other types are converted by a (differentiable) cast node. */
static nu_tensor *as_f32(nu_ctx *ctx, nu_tensor *a) {
    if (a->type == NU_TYPE_F32) return a;
    return nu_cast(ctx, a, NU_TYPE_F32);
}

/* SUM / MAX node along `dim` with the reduced dim kept as size 1; keepdim=false reshapes. */
static nu_tensor *reduce_node(nu_ctx *ctx, int op, nu_tensor *a, int dim, bool keepdim) {
    a = as_f32(ctx, a);
    dim = nu_norm_dim(a, dim);
    int64_t ne[NU_MAX_DIMS];
    memcpy(ne, a->ne, sizeof ne);
    ne[dim] = 1;
    nu_tensor *t = nu_new_node(ctx, op, NU_TYPE_F32, a->ndim, ne);
    t->src[0] = a;
    t->params[0] = dim;
    if (keepdim || a->ndim == 1) return t;
    int64_t ne2[NU_MAX_DIMS];
    int k = 0;
    for (int d = 0; d < a->ndim; d++)
        if (d != dim) ne2[k++] = a->ne[d];
    return nu_reshape(ctx, t, k, ne2);
}

/* ---------------------------------------------------------------- builders */

nu_tensor *nu_sum(nu_ctx *ctx, nu_tensor *a, int dim, bool keepdim) {
    return reduce_node(ctx, NU_OP_SUM, a, dim, keepdim);
}

nu_tensor *nu_mean(nu_ctx *ctx, nu_tensor *a, int dim, bool keepdim) {
    int d = nu_norm_dim(a, dim);
    /* n == 0 gives 0 * inf = NaN, as torch.mean of an empty dim */
    float inv = 1.0f / (float)a->ne[d];
    return nu_scale(ctx, reduce_node(ctx, NU_OP_SUM, a, d, keepdim), inv);
}

nu_tensor *nu_max(nu_ctx *ctx, nu_tensor *a, int dim, bool keepdim) {
    int d = nu_norm_dim(a, dim);
    NU_ASSERT(a->ne[d] > 0); /* max of an empty dim is undefined (torch raises) */
    return reduce_node(ctx, NU_OP_MAX, a, d, keepdim);
}

/* A reduction over all elements: view as 1-D (a copy only if `a` is not contiguous), SUM dim 0. */
nu_tensor *nu_sum_all(nu_ctx *ctx, nu_tensor *a) {
    a = as_f32(ctx, a);
    if (a->ndim != 1) a = nu_reshape(ctx, a, 1, (int64_t[]){nu_nelements(a)});
    return reduce_node(ctx, NU_OP_SUM, a, 0, true);
}

nu_tensor *nu_mean_all(nu_ctx *ctx, nu_tensor *a) {
    float inv = 1.0f / (float)nu_nelements(a);
    return nu_scale(ctx, nu_sum_all(ctx, a), inv);
}

nu_tensor *nu_softmax(nu_ctx *ctx, nu_tensor *a) {
    a = as_f32(ctx, a);
    nu_tensor *t = nu_new_node(ctx, NU_OP_SOFTMAX, NU_TYPE_F32, a->ndim, a->ne);
    t->src[0] = a;
    return t;
}

/* logits [N, C], targets [N] i32/i64 with values in [0, C) (checked by the kernel) -> [1]:
 * mean over rows of logsumexp(logits[i]) - logits[i, targets[i]] (torch cross_entropy,
 * reduction='mean', no weights / ignore_index / label smoothing). */
nu_tensor *nu_cross_entropy(nu_ctx *ctx, nu_tensor *logits, nu_tensor *targets) {
    logits = as_f32(ctx, logits);
    NU_ASSERT(logits->ndim == 2 && logits->ne[1] > 0);
    NU_ASSERT(targets->ndim == 1 && targets->ne[0] == logits->ne[0]);
    NU_ASSERT(targets->type == NU_TYPE_I32 || targets->type == NU_TYPE_I64);
    if (!nu_is_contiguous(logits)) logits = nu_contiguous(ctx, logits);
    nu_tensor *t = nu_new_node(ctx, NU_OP_CROSS_ENTROPY, NU_TYPE_F32, 1, (int64_t[]){1});
    t->src[0] = logits;
    t->src[1] = targets;
    t->extra = (size_t)logits->ne[0] * sizeof(float); /* logsumexp of each row */
    return t;
}

nu_tensor *nu_mse_loss(nu_ctx *ctx, nu_tensor *a, nu_tensor *b) {
    return nu_mean_all(ctx, nu_sqr(ctx, nu_sub(ctx, a, b)));
}

/* ---------------------------------------------------------------- backward rules */

/* d sum / d a = gy broadcast along the reduced dim. */
static void bw_sum(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *a = node->src[0];
    if (!nu_needs_grad(a)) return;
    nu_grad_accumulate(ctx, a, nu_expand(ctx, gy, a->ndim, a->ne));
}

/* Gradient goes to the first maximal element along the dim (torch.max(dim) indices). */
static void bw_max(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *a = node->src[0];
    if (!nu_needs_grad(a)) return;
    nu_tensor *t = nu_new_node(ctx, NU_OP_MAX_BACKWARD, NU_TYPE_F32, a->ndim, a->ne);
    t->src[0] = gy;
    t->src[1] = a;
    t->src[2] = node;
    t->params[0] = node->params[0];
    nu_grad_accumulate(ctx, a, t);
}

/* dx = y * (dy - sum(dy * y)) along the last dim. */
static void bw_softmax(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *a = node->src[0];
    if (!nu_needs_grad(a)) return;
    nu_tensor *t = nu_new_node(ctx, NU_OP_SOFTMAX_BACKWARD, NU_TYPE_F32, a->ndim, a->ne);
    t->src[0] = gy;
    t->src[1] = node;
    nu_grad_accumulate(ctx, a, t);
}

/* dlogits = (softmax(logits) - onehot(targets)) / N * gy, softmax from the saved logsumexp. */
static void bw_cross_entropy(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *logits = node->src[0];
    if (!nu_needs_grad(logits)) return;
    int64_t n = logits->ne[0];
    nu_tensor *lse = nu_view(ctx, node, 1, (int64_t[]){n}, (int64_t[]){sizeof(float)}, nu_nbytes(node));
    nu_tensor *t = nu_new_node(ctx, NU_OP_CROSS_ENTROPY_BACKWARD, NU_TYPE_F32, 2, logits->ne);
    t->src[0] = gy;
    t->src[1] = logits;
    t->src[2] = node->src[1];
    t->src[3] = lse;
    nu_grad_accumulate(ctx, logits, t);
}

void nu_ops_register_reduce(nu_op_def *tab) {
    tab[NU_OP_SUM].backward = bw_sum;
    tab[NU_OP_MAX].backward = bw_max;
    tab[NU_OP_SOFTMAX].backward = bw_softmax;
    tab[NU_OP_CROSS_ENTROPY].backward = bw_cross_entropy;
}
