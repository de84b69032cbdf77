/*
 * op_misc.c — builders and backward rules of the misc family: sinusoidal timestep embedding,
 * embedding lookup (and its scatter-add backward), and dropout.
 *   embedding: backward = EMBEDDING_BACKWARD(gy, ids) -> [V, D] (rows summed per id)
 *   dropout:   the mask is a pure function of (seed, element index), so the backward rule is the
 *              same dropout applied to gy — no mask is stored.
 * Tested by tests/test_op_misc.c (PyTorch fixtures, gradcheck, 1 vs 2 threads).
 */
#include "core/internal.h"

nu_tensor *nu_timestep_embedding(nu_ctx *ctx, nu_tensor *t, int dim, bool flip_sin_to_cos, float downscale_freq_shift) {
    NU_ASSERT(t->ndim == 1 && dim >= 2 && nu_type_info(t->type)->is_float);
    nu_tensor *e = nu_new_node(ctx, NU_OP_TIMESTEP_EMBEDDING, NU_TYPE_F32, 2, (int64_t[]){t->ne[0], dim});
    e->src[0] = t;
    e->params[0] = dim;
    e->params[1] = flip_sin_to_cos;
    nu_set_param_f(e, 2, downscale_freq_shift);
    nu_set_param_f(e, 3, 10000.0f); /* max_period */
    return e;
}

nu_tensor *nu_embedding(nu_ctx *ctx, nu_tensor *table, nu_tensor *ids) {
    NU_ASSERT(table->ndim == 2 && (ids->type == NU_TYPE_I32 || ids->type == NU_TYPE_I64));
    NU_ASSERT(ids->ndim < NU_MAX_DIMS);
    int64_t ne[NU_MAX_DIMS];
    for (int d = 0; d < ids->ndim; d++) ne[d] = ids->ne[d];
    ne[ids->ndim] = table->ne[1];
    nu_tensor *e = nu_new_node(ctx, NU_OP_EMBEDDING, NU_TYPE_F32, ids->ndim + 1, ne);
    e->src[0] = table;
    e->src[1] = ids;
    return e;
}

nu_tensor *nu_dropout(nu_ctx *ctx, nu_tensor *a, float p, uint64_t seed) {
    NU_ASSERT(p >= 0.0f && p < 1.0f);
    if (p == 0.0f) return a;
    nu_tensor *t = nu_new_node(ctx, NU_OP_DROPOUT, NU_TYPE_F32, a->ndim, a->ne);
    t->src[0] = a;
    nu_set_param_f(t, 0, p);
    nu_set_param_i64(t, 1, (int64_t)seed);
    return t;
}

static void bw_embedding(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *table = node->src[0];
    if (!nu_needs_grad(table)) return;
    nu_tensor *g = nu_new_node(ctx, NU_OP_EMBEDDING_BACKWARD, NU_TYPE_F32, 2, table->ne);
    g->src[0] = gy;
    g->src[1] = node->src[1];
    nu_grad_accumulate(ctx, table, g);
}

static void bw_dropout(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_grad_accumulate(ctx, node->src[0],
                       nu_dropout(ctx, gy, nu_get_param_f(node, 0), (uint64_t)nu_get_param_i64(node, 1)));
}

void nu_ops_register_misc(nu_op_def *tab) {
    tab[NU_OP_EMBEDDING].backward = bw_embedding;
    tab[NU_OP_DROPOUT].backward = bw_dropout;
}
