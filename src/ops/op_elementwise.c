/*
 * op_elementwise.c — builders, shape rules and backward rules of the elementwise op family:
 * contiguous copy, type cast, add/sub/mul/div with numpy broadcasting, affine (scale), expand,
 * sum_to (the backward of broadcasting) and the unary activations with their derivative op.
 *
 * Broadcasting follows numpy/PyTorch: shapes are aligned at the right, a size-1 (or missing)
 * dim stretches to the other operand's size; the result has max(ndim) dims. Gradients of
 * broadcast operands are summed back by nu_grad_accumulate -> nu_reduce_to_shape -> nu_sum_to.
 * Inputs of arithmetic ops that are f16/bf16/f64 are cast to f32 first (nu_cast, differentiable).
 * Kernels: src/cpu/k_elementwise.c (+ k_unary.c). Tested by tests/test_op_elementwise.c
 * (PyTorch fixtures from scripts/fixtures_elementwise.py and finite-difference gradchecks).
 */
#include "core/internal.h"

/* ---------------------------------------------------------------- helpers */

/* Arithmetic works in f32: other float types are converted by a (differentiable) cast node. */
static nu_tensor *as_f32(nu_ctx *ctx, nu_tensor *a) {
    if (a->type == NU_TYPE_F32) return a;
    NU_ASSERT(!nu_type_info(a->type)->is_quant || a->ne[a->ndim - 1] % NU_QK == 0);
    return nu_cast(ctx, a, NU_TYPE_F32);
}

/* Whether `a` broadcasts to the shape (ndim, ne): dims aligned at the right, each equal or 1;
 * extra leading dims of `a` must be 1. */
static bool broadcastable_to(const nu_tensor *a, int ndim, const int64_t *ne) {
    for (int d = 0; d < a->ndim; d++) {
        int64_t ea = a->ne[a->ndim - 1 - d];
        if (d >= ndim) {
            if (ea != 1) return false;
            continue;
        }
        int64_t eo = ne[ndim - 1 - d];
        if (ea != eo && ea != 1) return false;
    }
    return true;
}

/* ---------------------------------------------------------------- contiguous, cast */

nu_tensor *nu_contiguous(nu_ctx *ctx, nu_tensor *a) {
    if (nu_is_contiguous(a)) return a;
    nu_tensor *t = nu_new_node(ctx, NU_OP_CONT, a->type, a->ndim, a->ne);
    t->src[0] = a;
    return t;
}

/* Supported: same type (copy), anything -> f32, f32 -> any type nu_row_from_f32 writes (float,
 * i32, i64, quantized), and float -> float (through f32). Quantized tensors need the innermost
 * size to be a multiple of the block size. */
nu_tensor *nu_cast(nu_ctx *ctx, nu_tensor *a, nu_type type) {
    NU_ASSERT(type >= 0 && type < NU_TYPE_COUNT);
    const nu_type_traits *ts = nu_type_info(a->type), *td = nu_type_info(type);
    bool dst_writable = td->is_float || td->is_quant || type == NU_TYPE_I32 || type == NU_TYPE_I64;
    NU_ASSERT(type == a->type || type == NU_TYPE_F32 || (dst_writable && (a->type == NU_TYPE_F32 || ts->is_float)));
    NU_ASSERT(a->ne[a->ndim - 1] % td->blck == 0 && a->ne[a->ndim - 1] % ts->blck == 0);
    /* quantized conversions work on whole blocks: a plain source must be contiguous along the
     * innermost dim */
    if ((ts->is_quant || td->is_quant) && !ts->is_quant && a->nb[a->ndim - 1] != (int64_t)ts->size)
        a = nu_contiguous(ctx, a);
    nu_tensor *t = nu_new_node(ctx, NU_OP_CAST, type, a->ndim, a->ne);
    t->src[0] = a;
    return t;
}

static void bw_cont(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) { nu_grad_accumulate(ctx, node->src[0], gy); }

/* Gradient of a cast between float types: dL/da = dL/dy (in f32, as all gradients). Casts from
 * or to integer/quantized types are not differentiable: no contribution. */
static void bw_cast(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *a = node->src[0];
    if (!nu_needs_grad(a)) return;
    if (!nu_type_info(a->type)->is_float || !nu_type_info(node->type)->is_float) return;
    if (gy->type != NU_TYPE_F32) gy = nu_cast(ctx, gy, NU_TYPE_F32);
    nu_grad_accumulate(ctx, a, gy);
}

/* ---------------------------------------------------------------- binary ops */

static nu_tensor *binary(nu_ctx *ctx, int op, nu_tensor *a, nu_tensor *b) {
    a = as_f32(ctx, a);
    b = as_f32(ctx, b);
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t ne[NU_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        int da = a->ndim - nd + d, db = b->ndim - nd + d;
        int64_t ea = da >= 0 ? a->ne[da] : 1, eb = db >= 0 ? b->ne[db] : 1;
        if (ea != eb && ea != 1 && eb != 1) {
            char sa[128], sb[128];
            nu_abort(__FILE__, __LINE__, "%s: shapes %s and %s do not broadcast", nu_op_name(op),
                     nu_shape_str(a, sa, sizeof sa), nu_shape_str(b, sb, sizeof sb));
        }
        ne[d] = ea == 1 ? eb : ea;
    }
    nu_tensor *t = nu_new_node(ctx, op, NU_TYPE_F32, nd, ne);
    t->src[0] = a;
    t->src[1] = b;
    return t;
}

nu_tensor *nu_add(nu_ctx *ctx, nu_tensor *a, nu_tensor *b) { return binary(ctx, NU_OP_ADD, a, b); }
nu_tensor *nu_sub(nu_ctx *ctx, nu_tensor *a, nu_tensor *b) { return binary(ctx, NU_OP_SUB, a, b); }
nu_tensor *nu_mul(nu_ctx *ctx, nu_tensor *a, nu_tensor *b) { return binary(ctx, NU_OP_MUL, a, b); }
nu_tensor *nu_div(nu_ctx *ctx, nu_tensor *a, nu_tensor *b) { return binary(ctx, NU_OP_DIV, a, b); }

/* y = a + b: dL/da = gy, dL/db = gy (each summed over its broadcast dims by nu_grad_accumulate) */
static void bw_add(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_grad_accumulate(ctx, node->src[0], gy);
    nu_grad_accumulate(ctx, node->src[1], gy);
}

/* y = a - b: dL/da = gy, dL/db = -gy */
static void bw_sub(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_grad_accumulate(ctx, node->src[0], gy);
    if (nu_needs_grad(node->src[1])) nu_grad_accumulate(ctx, node->src[1], nu_scale(ctx, gy, -1.0f));
}

/* y = a * b: dL/da = gy * b, dL/db = gy * a */
static void bw_mul(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *a = node->src[0], *b = node->src[1];
    if (nu_needs_grad(a)) nu_grad_accumulate(ctx, a, nu_mul(ctx, gy, b));
    if (nu_needs_grad(b)) nu_grad_accumulate(ctx, b, nu_mul(ctx, gy, a));
}

/* y = a / b: dL/da = gy / b, dL/db = -gy * a / b^2 = -(gy / b) * y */
static void bw_div(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *a = node->src[0], *b = node->src[1];
    if (!nu_needs_grad(a) && !nu_needs_grad(b)) return;
    nu_tensor *ga = nu_div(ctx, gy, b);
    nu_grad_accumulate(ctx, a, ga);
    if (nu_needs_grad(b)) nu_grad_accumulate(ctx, b, nu_scale(ctx, nu_mul(ctx, ga, node), -1.0f));
}

/* ---------------------------------------------------------------- affine */

nu_tensor *nu_affine(nu_ctx *ctx, nu_tensor *a, float s, float b) {
    a = as_f32(ctx, a);
    nu_tensor *t = nu_new_node(ctx, NU_OP_AFFINE, NU_TYPE_F32, a->ndim, a->ne);
    t->src[0] = a;
    nu_set_param_f(t, 0, s);
    nu_set_param_f(t, 1, b);
    return t;
}

nu_tensor *nu_scale(nu_ctx *ctx, nu_tensor *a, float s) { return nu_affine(ctx, a, s, 0.0f); }

/* y = a*s + b: dL/da = gy * s */
static void bw_affine(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *a = node->src[0];
    if (!nu_needs_grad(a)) return;
    float s = nu_get_param_f(node, 0);
    nu_grad_accumulate(ctx, a, s == 1.0f ? gy : nu_scale(ctx, gy, s));
}

/* ---------------------------------------------------------------- expand, sum_to */

nu_tensor *nu_expand(nu_ctx *ctx, nu_tensor *a, int ndim, const int64_t *ne) {
    NU_ASSERT(ndim >= 1 && ndim <= NU_MAX_DIMS);
    NU_ASSERT(!nu_type_info(a->type)->is_quant);
    if (!broadcastable_to(a, ndim, ne)) {
        char sa[128];
        nu_abort(__FILE__, __LINE__, "expand: %s does not broadcast to the requested %d-d shape",
                 nu_shape_str(a, sa, sizeof sa), ndim);
    }
    nu_tensor *t = nu_new_node(ctx, NU_OP_EXPAND, a->type, ndim, ne);
    t->src[0] = a;
    return t;
}

/* The shape (ndim, ne) must broadcast to a's shape; dims of a that are missing or 1 in ne are
 * summed (keeping size-1 dims where ne has them; extra leading dims of ne must be 1). Returns `a`
 * itself when the shapes match. */
nu_tensor *nu_sum_to(nu_ctx *ctx, nu_tensor *a, int ndim, const int64_t *ne) {
    NU_ASSERT(ndim >= 1 && ndim <= NU_MAX_DIMS);
    a = as_f32(ctx, a);
    bool same = ndim == a->ndim;
    for (int d = 0; same && d < ndim; d++) same = ne[d] == a->ne[d];
    if (same) return a;
    nu_tensor tmp = {.type = NU_TYPE_F32, .ndim = ndim};
    for (int d = 0; d < ndim; d++) tmp.ne[d] = ne[d];
    if (!broadcastable_to(&tmp, a->ndim, a->ne)) {
        char sa[128], sb[128];
        nu_set_contiguous_strides(&tmp);
        nu_abort(__FILE__, __LINE__, "sum_to: %s cannot be reduced to %s", nu_shape_str(a, sa, sizeof sa),
                 nu_shape_str(&tmp, sb, sizeof sb));
    }
    nu_tensor *t = nu_new_node(ctx, NU_OP_SUM_TO, NU_TYPE_F32, ndim, ne);
    t->src[0] = a;
    return t;
}

/* y = expand(a): dL/da = sum_to(gy, shape(a)) — done by nu_grad_accumulate */
static void bw_expand(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) { nu_grad_accumulate(ctx, node->src[0], gy); }

/* y = sum_to(a): dL/da = expand(gy, shape(a)) */
static void bw_sum_to(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *a = node->src[0];
    if (!nu_needs_grad(a)) return;
    nu_grad_accumulate(ctx, a, nu_expand(ctx, gy, a->ndim, a->ne));
}

/* ---------------------------------------------------------------- unary */

static nu_tensor *unary(nu_ctx *ctx, nu_tensor *a, enum nu_unary kind) {
    a = as_f32(ctx, a);
    nu_tensor *t = nu_new_node(ctx, NU_OP_UNARY, NU_TYPE_F32, a->ndim, a->ne);
    t->src[0] = a;
    t->params[0] = kind;
    return t;
}

nu_tensor *nu_silu(nu_ctx *ctx, nu_tensor *a) { return unary(ctx, a, NU_UNARY_SILU); }
nu_tensor *nu_gelu(nu_ctx *ctx, nu_tensor *a) { return unary(ctx, a, NU_UNARY_GELU); }
nu_tensor *nu_gelu_tanh(nu_ctx *ctx, nu_tensor *a) { return unary(ctx, a, NU_UNARY_GELU_TANH); }
nu_tensor *nu_quick_gelu(nu_ctx *ctx, nu_tensor *a) { return unary(ctx, a, NU_UNARY_QUICK_GELU); }
nu_tensor *nu_sigmoid(nu_ctx *ctx, nu_tensor *a) { return unary(ctx, a, NU_UNARY_SIGMOID); }
nu_tensor *nu_tanh(nu_ctx *ctx, nu_tensor *a) { return unary(ctx, a, NU_UNARY_TANH); }
nu_tensor *nu_relu(nu_ctx *ctx, nu_tensor *a) { return unary(ctx, a, NU_UNARY_RELU); }
nu_tensor *nu_sqr(nu_ctx *ctx, nu_tensor *a) { return unary(ctx, a, NU_UNARY_SQR); }
nu_tensor *nu_sqrt(nu_ctx *ctx, nu_tensor *a) { return unary(ctx, a, NU_UNARY_SQRT); }
nu_tensor *nu_exp(nu_ctx *ctx, nu_tensor *a) { return unary(ctx, a, NU_UNARY_EXP); }
nu_tensor *nu_ln(nu_ctx *ctx, nu_tensor *a) { return unary(ctx, a, NU_UNARY_LOG); }

/* y = f(x): dL/dx = gy * f'(x), one UNARY_BACKWARD node (src0 = gy, src1 = x; the kernel
 * evaluates f' from x, see k_unary.c for each derivative). */
nu_tensor *nu_unary_grad(nu_ctx *ctx, int kind, nu_tensor *gy, nu_tensor *x) {
    gy = as_f32(ctx, gy);
    NU_ASSERT(nu_same_shape(gy, x));
    nu_tensor *t = nu_new_node(ctx, NU_OP_UNARY_BACKWARD, NU_TYPE_F32, x->ndim, x->ne);
    t->src[0] = gy;
    t->src[1] = x;
    t->params[0] = kind;
    return t;
}

static void bw_unary(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *x = node->src[0];
    if (!nu_needs_grad(x)) return;
    nu_grad_accumulate(ctx, x, nu_unary_grad(ctx, node->params[0], gy, x));
}

void nu_ops_register_elementwise(nu_op_def *tab) {
    tab[NU_OP_CONT].backward = bw_cont;
    tab[NU_OP_CAST].backward = bw_cast;
    tab[NU_OP_ADD].backward = bw_add;
    tab[NU_OP_SUB].backward = bw_sub;
    tab[NU_OP_MUL].backward = bw_mul;
    tab[NU_OP_DIV].backward = bw_div;
    tab[NU_OP_AFFINE].backward = bw_affine;
    tab[NU_OP_EXPAND].backward = bw_expand;
    tab[NU_OP_SUM_TO].backward = bw_sum_to;
    tab[NU_OP_UNARY].backward = bw_unary;
    /* UNARY_BACKWARD: second-order gradients are not needed (no backward rule). */
}
