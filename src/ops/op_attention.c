/*
 * op_attention.c — builder, shape rule and backward rule of fused scaled-dot-product attention
 * (torch.nn.functional.scaled_dot_product_attention semantics, no dropout).
 *
 *   q [B, NH, Tq, HD], k [B, NH, Tk, HD], v [B, NH, Tk, HDv]  ->  out [B, NH, Tq, HDv]
 *   out = softmax(scale * q k^T + mask + causal) v
 *
 * mask: NULL or an additive float tensor broadcastable (numpy rules) to [B, NH, Tq, Tk]; -inf
 * entries remove keys. causal: torch's is_causal, aligned top-left: query i sees keys j <= i
 * (whatever Tq and Tk are). Mask and causal may be combined (their effects add). scale <= 0 means
 * 1/sqrt(HD). Inputs may be strided views (e.g. q permuted from a [B, T, NH, HD] projection):
 * the kernels read them through their byte strides, no copy is made.
 *
 * Rows whose keys are all masked: torch returns NaN; nuance returns 0 for such rows (and their
 * gradients are 0). The node stores the per-row logsumexp (natural log, +inf for fully masked
 * rows) after its data: node->extra = B*NH*Tq floats, layout [B, NH, Tq].
 *
 * Backward (FlashAttention-2, Dao 2023, Algorithm 2): one ATTENTION_BACKWARD node recomputes
 * P = exp(scale q k^T + mask - lse) tile by tile and produces dQ, dK, dV packed one after another
 * in its memory (contiguous [B,NH,Tq,HD], [B,NH,Tk,HD], [B,NH,Tk,HDv]); views at byte offsets
 * expose them. Memory is O(T*D). No gradient flows to the mask.
 *
 * Kernels: src/cpu/k_attention.c. Tested by tests/test_op_attention.c (fast vs reference twins,
 * PyTorch fixtures from scripts/fixtures_attention.py, finite-difference gradchecks).
 */
#include <math.h>

#include "core/internal.h"

/* Float inputs of other types go through a (differentiable) cast to f32. */
static nu_tensor *as_f32(nu_ctx *ctx, nu_tensor *a) {
    if (a->type == NU_TYPE_F32) return a;
    NU_ASSERT(nu_type_info(a->type)->is_float);
    return nu_cast(ctx, a, NU_TYPE_F32);
}

nu_tensor *nu_attention(nu_ctx *ctx, nu_tensor *q, nu_tensor *k, nu_tensor *v, nu_tensor *mask, bool causal,
                        float scale) {
    NU_ASSERT(q && k && v);
    NU_ASSERT(q->ndim == 4 && k->ndim == 4 && v->ndim == 4);
    q = as_f32(ctx, q);
    k = as_f32(ctx, k);
    v = as_f32(ctx, v);
    int64_t B = q->ne[0], NH = q->ne[1], Tq = q->ne[2], HD = q->ne[3];
    int64_t Tk = k->ne[2], HDv = v->ne[3];
    NU_ASSERT(k->ne[0] == B && v->ne[0] == B && k->ne[1] == NH && v->ne[1] == NH);
    NU_ASSERT(k->ne[3] == HD && v->ne[2] == Tk);
    NU_ASSERT(B >= 1 && NH >= 1 && Tq >= 1 && Tk >= 1 && HD >= 1 && HDv >= 1);
    for (int d = 0; d < 4; d++) NU_ASSERT(q->nb[d] >= 0 && k->nb[d] >= 0 && v->nb[d] >= 0);
    if (mask) {
        mask = as_f32(ctx, mask);
        const int64_t full[4] = {B, NH, Tq, Tk};
        NU_ASSERT(mask->ndim >= 1 && mask->ndim <= 4);
        for (int d = 0; d < mask->ndim; d++) {
            int64_t e = mask->ne[mask->ndim - 1 - d];
            NU_ASSERT(e == 1 || e == full[3 - d]);
            NU_ASSERT(mask->nb[mask->ndim - 1 - d] >= 0);
        }
    }
    if (!(scale > 0)) scale = 1.0f / sqrtf((float)HD);
    nu_tensor *t = nu_new_node(ctx, NU_OP_ATTENTION, NU_TYPE_F32, 4, (int64_t[]){B, NH, Tq, HDv});
    t->src[0] = q;
    t->src[1] = k;
    t->src[2] = v;
    t->src[3] = mask;
    t->params[0] = causal ? 1 : 0;
    nu_set_param_f(t, 1, scale);
    t->extra = (size_t)(B * NH * Tq) * sizeof(float); /* logsumexp per query row */
    return t;
}

/* Contiguous f32 view of `shape`'s shape into `base` at byte offset offs. */
static nu_tensor *packed_view(nu_ctx *ctx, nu_tensor *base, const nu_tensor *shape, size_t offs) {
    int64_t nb[NU_MAX_DIMS];
    int64_t s = (int64_t)sizeof(float);
    for (int d = shape->ndim - 1; d >= 0; d--) {
        nb[d] = s;
        s *= shape->ne[d];
    }
    return nu_view(ctx, base, shape->ndim, shape->ne, nb, offs);
}

/* Backward node: src0 dO (gy), src1 q, src2 k, src3 v, src4 the forward node (O, then the
 * logsumexp in its extra bytes), src5 mask; params as the forward node. Its data holds
 * dQ | dK | dV (f32, contiguous each). */
static void bw_attention(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *q = node->src[0], *k = node->src[1], *v = node->src[2], *mask = node->src[3];
    if (!nu_needs_grad(q) && !nu_needs_grad(k) && !nu_needs_grad(v)) return;
    if (gy->type != NU_TYPE_F32) gy = nu_cast(ctx, gy, NU_TYPE_F32);
    int64_t nq = nu_nelements(q), nk = nu_nelements(k), nv = nu_nelements(v);
    nu_tensor *g = nu_new_node(ctx, NU_OP_ATTENTION_BACKWARD, NU_TYPE_F32, 1, (int64_t[]){nq + nk + nv});
    g->src[0] = gy;
    g->src[1] = q;
    g->src[2] = k;
    g->src[3] = v;
    g->src[4] = node;
    g->src[5] = mask;
    g->params[0] = node->params[0];
    g->params[1] = node->params[1];
    nu_grad_accumulate(ctx, q, packed_view(ctx, g, q, 0));
    nu_grad_accumulate(ctx, k, packed_view(ctx, g, k, (size_t)nq * sizeof(float)));
    nu_grad_accumulate(ctx, v, packed_view(ctx, g, v, (size_t)(nq + nk) * sizeof(float)));
}

void nu_ops_register_attention(nu_op_def *tab) { tab[NU_OP_ATTENTION].backward = bw_attention; }
