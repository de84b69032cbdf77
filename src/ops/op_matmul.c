/*
 * op_matmul.c — builders, shape rules and backward rules of the matmul family: nu_matmul
 * (optional transposes, broadcast batch dims, typed weights as b) and nu_linear
 * (torch.nn.Linear: x @ w^T + bias).
 *
 * Shapes: a [..., M, K] (or [..., K, M] with trans_a), b [..., K, N] (or [..., N, K] with
 * trans_b), batch dims broadcast as torch.matmul, dst [..., M, N] f32. a is f32; b is f32, f16,
 * bf16 or a GGUF block type (q8_0, q4_0, q4_1, q5_0, q5_1; blocked along its last dim).
 * Backward (C = op(A) op(B), dC = gy):
 *   d op(A) = dC op(B)^T,  d op(B) = op(A)^T dC,
 * written with the transpose flags so no transpose is materialised; broadcast batch dims are
 * summed by nu_grad_accumulate. Only f32 operands get gradients.
 * Tested by tests/test_op_matmul.c (PyTorch fixtures from scripts/fixtures_matmul.py, finite
 * differences, fast vs reference kernels).
 */
#include "core/internal.h"

static bool btype_ok(nu_type t) {
    switch (t) {
    case NU_TYPE_F32: case NU_TYPE_F16: case NU_TYPE_BF16: case NU_TYPE_Q8_0: case NU_TYPE_Q4_0:
    case NU_TYPE_Q4_1: case NU_TYPE_Q5_0: case NU_TYPE_Q5_1: return true;
    default: return false;
    }
}

/* Whether the last two dims can be handed to BLAS as they are: one unit stride, the other at
 * least the extent it jumps over (size-1 dims are free). Mirrors blas_layout in k_matmul.c. */
static bool blas_ok(const nu_tensor *t) {
    const nu_type_traits *tr = nu_type_info(t->type);
    const int64_t r = t->ne[t->ndim - 2], c = t->ne[t->ndim - 1];
    const int64_t es = (int64_t)tr->size;
    if (tr->is_quant) return (size_t)t->nb[t->ndim - 1] == tr->size && (r == 1 || (size_t)t->nb[t->ndim - 2] >= nu_row_size(t->type, c));
    if (t->nb[t->ndim - 1] % es || t->nb[t->ndim - 2] % es) return false;
    const int64_t rs = t->nb[t->ndim - 2] / es, cs = t->nb[t->ndim - 1] / es;
    return (cs == 1 && (r == 1 || rs >= c)) || (rs == 1 && (c == 1 || cs >= r)) || (c == 1 && rs >= 1) ||
           (r == 1 && cs >= 1);
}

nu_tensor *nu_matmul(nu_ctx *ctx, nu_tensor *a, nu_tensor *b, bool trans_a, bool trans_b) {
    NU_ASSERT(a->ndim >= 2 && b->ndim >= 2);
    if (a->type != NU_TYPE_F32 || !btype_ok(b->type))
        nu_abort(__FILE__, __LINE__, "nu_matmul: a must be f32 and b f32/f16/bf16/q*, got %s and %s",
                 nu_type_name(a->type), nu_type_name(b->type));
    const int64_t M = trans_a ? a->ne[a->ndim - 1] : a->ne[a->ndim - 2];
    const int64_t K = trans_a ? a->ne[a->ndim - 2] : a->ne[a->ndim - 1];
    const int64_t Kb = trans_b ? b->ne[b->ndim - 1] : b->ne[b->ndim - 2];
    const int64_t N = trans_b ? b->ne[b->ndim - 2] : b->ne[b->ndim - 1];
    if (K != Kb) {
        char sa[96], sb[96];
        nu_abort(__FILE__, __LINE__, "nu_matmul: inner sizes differ (%lld vs %lld): a %s%s, b %s%s", (long long)K,
                 (long long)Kb, nu_shape_str(a, sa, sizeof sa), trans_a ? "^T" : "", nu_shape_str(b, sb, sizeof sb),
                 trans_b ? "^T" : "");
    }
    const int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t ne[NU_MAX_DIMS];
    for (int d = 0; d < nd - 2; d++) {
        const int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
        const int64_t sa = da >= 0 ? a->ne[da] : 1, sb = db >= 0 ? b->ne[db] : 1;
        NU_ASSERT(sa == sb || sa == 1 || sb == 1);
        ne[d] = sa == 1 ? sb : sa;
    }
    ne[nd - 2] = M;
    ne[nd - 1] = N;
    if (!blas_ok(a)) a = nu_contiguous(ctx, a);
    if (!blas_ok(b)) {
        NU_ASSERT(!nu_type_info(b->type)->is_quant);
        b = nu_contiguous(ctx, b);
        if (b->type != NU_TYPE_F32 && !blas_ok(b)) b = nu_cast(ctx, b, NU_TYPE_F32);
    }
    nu_tensor *t = nu_new_node(ctx, NU_OP_MATMUL, NU_TYPE_F32, nd, ne);
    t->src[0] = a;
    t->src[1] = b;
    t->params[0] = trans_a;
    t->params[1] = trans_b;
    return t;
}

nu_tensor *nu_linear(nu_ctx *ctx, nu_tensor *x, nu_tensor *w, nu_tensor *bias) {
    NU_ASSERT(w->ndim == 2 && x->ndim >= 1);
    const int64_t in = w->ne[1], out = w->ne[0];
    if (x->ne[x->ndim - 1] != in) {
        char sx[96], sw[96];
        nu_abort(__FILE__, __LINE__, "nu_linear: x %s does not match weight %s", nu_shape_str(x, sx, sizeof sx),
                 nu_shape_str(w, sw, sizeof sw));
    }
    nu_tensor *y;
    if (x->ndim == 1 || (x->ndim > 2 && nu_is_contiguous(x))) {
        /* [..., in] -> [rows, in]: one large GEMM instead of a batch of small ones */
        const int64_t rows = nu_nelements(x) / (in > 0 ? in : 1);
        int64_t ne[NU_MAX_DIMS];
        memcpy(ne, x->ne, sizeof ne);
        ne[x->ndim - 1] = out;
        y = nu_matmul(ctx, nu_reshape(ctx, x, 2, (int64_t[]){rows, in}), w, false, true);
        y = nu_reshape(ctx, y, x->ndim, ne);
    } else {
        y = nu_matmul(ctx, x, w, false, true); /* w broadcast over x's batch dims */
    }
    if (bias) {
        NU_ASSERT(bias->ndim == 1 && bias->ne[0] == out);
        y = nu_add(ctx, y, bias);
    }
    return y;
}

/* ---------------------------------------------------------------- backward */

static void bw_matmul(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *a = node->src[0], *b = node->src[1];
    const bool ta = node->params[0] != 0, tb = node->params[1] != 0;
    if (nu_needs_grad(a)) {
        nu_tensor *da;
        if (!ta) da = nu_matmul(ctx, gy, b, false, !tb); /* dA = dC op(B)^T              [.., M, K] */
        else if (b->type == NU_TYPE_F32) da = nu_matmul(ctx, b, gy, tb, true); /* dA = op(B) dC^T [.., K, M] */
        else /* typed b must stay the B operand: dA = (dC op(B)^T)^T, made contiguous for flat grads */
            da = nu_contiguous(ctx, nu_transpose(ctx, nu_matmul(ctx, gy, b, false, !tb), -2, -1));
        nu_grad_accumulate(ctx, a, da);
    }
    if (nu_needs_grad(b)) {
        if (b->type != NU_TYPE_F32)
            nu_abort(__FILE__, __LINE__, "matmul backward: no gradient for a %s operand ('%s'); only f32 is trainable",
                     nu_type_name(b->type), b->name);
        const int64_t K = ta ? a->ne[a->ndim - 2] : a->ne[a->ndim - 1];
        const int64_t N = node->ne[node->ndim - 1];
        nu_tensor *db;
        if (b->ndim == 2 && a->ndim > 2 && !ta && nu_nelements(a) / (K > 0 ? K : 1) * N == nu_nelements(gy)) {
            /* shared 2-D weight, a not broadcast: fold the batch into the rows (one GEMM, no
             * per-batch partial weights to sum) */
            const int64_t rows = nu_nelements(a) / (K > 0 ? K : 1);
            nu_tensor *a2 = nu_reshape(ctx, a, 2, (int64_t[]){rows, K});
            nu_tensor *g2 = nu_reshape(ctx, gy, 2, (int64_t[]){rows, N});
            db = tb ? nu_matmul(ctx, g2, a2, true, false) /* [N, K] */ : nu_matmul(ctx, a2, g2, true, false);
        } else {
            db = tb ? nu_matmul(ctx, gy, a, true, ta) /* dB = dC^T op(A)  [.., N, K] */
                    : nu_matmul(ctx, a, gy, !ta, false); /* dB = op(A)^T dC [.., K, N] */
        }
        nu_grad_accumulate(ctx, b, db);
    }
}

void nu_ops_register_matmul(nu_op_def *tab) { tab[NU_OP_MATMUL].backward = bw_matmul; }
