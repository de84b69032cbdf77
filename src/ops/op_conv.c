/*
 * op_conv.c — the conv op family: builders, shape rules and backward rules of
 *   nu_conv2d            (CONV2D, as torch.nn.functional.conv2d: x NCHW, w OIHW, bias [O])
 *   nu_conv_transpose2d  (CONV_TRANSPOSE2D, as torch.nn.functional.conv_transpose2d:
 *                         w [C_in, C_out/groups, KH, KW])
 * and the two weight-gradient ops CONV2D_BACKWARD_WEIGHT / CONV_TRANSPOSE2D_BACKWARD_WEIGHT.
 *
 * Node layout: src[0] = x, src[1] = w, src[2] = bias (or NULL); params (int32 slots):
 * [0,1] stride, [2,3] padding, [4,5] dilation, [6] groups, [7,8] output_padding.
 * Weight-gradient nodes: src[0] = the forward input x, src[1] = dL/dy; dst has w's shape.
 *
 * Backward rules (conv_transpose2d is the adjoint of conv2d with the same weight):
 *   y = conv2d(x, w):            dx = conv_transpose2d(dy, w) with output_padding chosen so that
 *                                dx has x's shape; dw = CONV2D_BACKWARD_WEIGHT(x, dy);
 *                                db = dy summed over N, H, W.
 *   y = conv_transpose2d(x, w):  dx = conv2d(dy, w) (sliced when output_padding >= stride);
 *                                dw = CONV_TRANSPOSE2D_BACKWARD_WEIGHT(x, dy); db as above.
 * Kernels are in src/cpu/k_conv.c (+ k_conv_winograd.c). Tested by tests/test_op_conv.c
 * (reference twins, PyTorch fixtures forward and backward, finite-difference gradcheck).
 */
#include "core/internal.h"

enum { P_STRIDE = 0, P_PAD = 2, P_DIL = 4, P_GROUPS = 6, P_OUTPAD = 7, P_KSIZE = 9, P_RELU = 11 }; /* op_conv.c and k_conv.c */

nu_conv2d_params nu_conv2d_params_init(void) {
    nu_conv2d_params p;
    memset(&p, 0, sizeof p);
    p.stride[0] = p.stride[1] = 1;
    p.dilation[0] = p.dilation[1] = 1;
    p.groups = 1;
    return p;
}

static nu_conv2d_params params_or_default(const nu_conv2d_params *p) {
    return p ? *p : nu_conv2d_params_init();
}

static void check_params(const nu_conv2d_params *p, bool transposed) {
    for (int i = 0; i < 2; i++) {
        NU_ASSERT(p->stride[i] >= 1);
        NU_ASSERT(p->padding[i] >= 0);
        NU_ASSERT(p->dilation[i] >= 1);
        if (transposed) {
            /* torch: output padding must be smaller than either stride or dilation */
            NU_ASSERT(p->output_padding[i] >= 0);
            NU_ASSERT(p->output_padding[i] < p->stride[i] || p->output_padding[i] < p->dilation[i]);
        }
    }
    NU_ASSERT(p->groups >= 1);
    NU_ASSERT(!(transposed && p->relu)); /* the fused ReLU is a conv2d option */
}

static void set_params(nu_tensor *t, const nu_conv2d_params *p, bool transposed) {
    for (int i = 0; i < 2; i++) {
        t->params[P_STRIDE + i] = p->stride[i];
        t->params[P_PAD + i] = p->padding[i];
        t->params[P_DIL + i] = p->dilation[i];
        t->params[P_OUTPAD + i] = transposed ? p->output_padding[i] : 0;
        t->params[P_KSIZE + i] = p->kernel[i];
    }
    t->params[P_GROUPS] = p->groups;
    t->params[P_RELU] = p->relu;
}

static nu_conv2d_params get_params(const nu_tensor *t) {
    nu_conv2d_params p = nu_conv2d_params_init();
    for (int i = 0; i < 2; i++) {
        p.stride[i] = t->params[P_STRIDE + i];
        p.padding[i] = t->params[P_PAD + i];
        p.dilation[i] = t->params[P_DIL + i];
        p.output_padding[i] = t->params[P_OUTPAD + i];
        p.kernel[i] = t->params[P_KSIZE + i];
    }
    p.groups = t->params[P_GROUPS];
    p.relu = t->params[P_RELU] != 0;
    return p;
}

/* Biases stored as f16/bf16 (diffusers folders) or strided are converted by a small node. */
static nu_tensor *f32_bias(nu_ctx *ctx, nu_tensor *bias) {
    if (!bias) return NULL;
    if (bias->type != NU_TYPE_F32) bias = nu_cast(ctx, bias, NU_TYPE_F32);
    return nu_contiguous(ctx, bias);
}

static void check_weight_bias(const nu_tensor *w, const nu_tensor *bias, int64_t n_out) {
    if (w->ndim == 2) {
        /* matrix form (conv2d only, checked by the caller): rows of any weight type, contiguous
         * within a row (the kernel dequantizes whole rows) */
        const nu_type_traits *tr = nu_type_info(w->type);
        NU_ASSERT(tr->is_quant || (tr->is_float && w->type != NU_TYPE_F64));
        NU_ASSERT(w->ne[0] >= 1 && w->ne[1] >= 1 && w->nb[1] == (int64_t)tr->size);
    } else {
        NU_ASSERT(w->ndim == 4);
        /* f32, f16, bf16 weights (converted to f32 inside the kernel); quantized blocks cannot
         * hold a [.., KH, KW] tensor, whose innermost dimension is KW: use the matrix form. */
        NU_ASSERT(nu_type_info(w->type)->is_float && w->type != NU_TYPE_F64);
        NU_ASSERT(w->ne[0] >= 1 && w->ne[1] >= 1 && w->ne[2] >= 1 && w->ne[3] >= 1);
    }
    if (bias) {
        NU_ASSERT(bias->type == NU_TYPE_F32);
        NU_ASSERT(nu_nelements(bias) == n_out);
        NU_ASSERT(nu_is_contiguous(bias)); /* read as a flat [n_out] array */
    }
}

nu_tensor *nu_conv2d(nu_ctx *ctx, nu_tensor *x, nu_tensor *w, nu_tensor *bias, const nu_conv2d_params *pp) {
    nu_conv2d_params p = params_or_default(pp);
    check_params(&p, false);
    NU_ASSERT(x->ndim == 4 && x->type == NU_TYPE_F32);
    NU_ASSERT(x->ne[2] >= 1 && x->ne[3] >= 1);
    int64_t K = w->ne[0], Cg, KH, KW;
    if (w->ndim == 2) { /* matrix form [K, Cg*KH*KW] */
        NU_ASSERT(p.kernel[0] >= 1 && p.kernel[1] >= 1);
        KH = p.kernel[0];
        KW = p.kernel[1];
        NU_ASSERT(w->ne[1] % (KH * KW) == 0);
        Cg = w->ne[1] / (KH * KW);
    } else {
        NU_ASSERT(w->ndim == 4);
        Cg = w->ne[1];
        KH = w->ne[2];
        KW = w->ne[3];
        NU_ASSERT((p.kernel[0] == 0 || p.kernel[0] == KH) && (p.kernel[1] == 0 || p.kernel[1] == KW));
        p.kernel[0] = (int)KH;
        p.kernel[1] = (int)KW;
    }
    bias = f32_bias(ctx, bias);
    check_weight_bias(w, bias, K);
    NU_ASSERT(x->ne[1] == Cg * p.groups);
    NU_ASSERT(K % p.groups == 0);
    int64_t ne[4] = {x->ne[0], K, 0, 0};
    for (int i = 0; i < 2; i++) {
        int64_t in = x->ne[2 + i], k = i ? KW : KH;
        int64_t span = in + 2 * (int64_t)p.padding[i] - (int64_t)p.dilation[i] * (k - 1) - 1;
        NU_ASSERT(span >= 0); /* kernel (dilated) larger than the padded input */
        ne[2 + i] = span / p.stride[i] + 1;
    }
    nu_tensor *y = nu_new_node(ctx, NU_OP_CONV2D, NU_TYPE_F32, 4, ne);
    y->src[0] = x;
    y->src[1] = w;
    y->src[2] = bias;
    set_params(y, &p, false);
    return y;
}

nu_tensor *nu_conv_transpose2d(nu_ctx *ctx, nu_tensor *x, nu_tensor *w, nu_tensor *bias,
                               const nu_conv2d_params *pp) {
    nu_conv2d_params p = params_or_default(pp);
    check_params(&p, true);
    NU_ASSERT(w->ndim == 4); /* the matrix form is conv2d's only */
    NU_ASSERT((p.kernel[0] == 0 || p.kernel[0] == w->ne[2]) && (p.kernel[1] == 0 || p.kernel[1] == w->ne[3]));
    p.kernel[0] = (int)w->ne[2];
    p.kernel[1] = (int)w->ne[3];
    NU_ASSERT(x->ndim == 4 && x->type == NU_TYPE_F32);
    NU_ASSERT(x->ne[2] >= 1 && x->ne[3] >= 1);
    int64_t Cin = w->ne[0], Cout = w->ne[1] * p.groups, KH = w->ne[2], KW = w->ne[3];
    bias = f32_bias(ctx, bias);
    check_weight_bias(w, bias, Cout);
    NU_ASSERT(x->ne[1] == Cin);
    NU_ASSERT(Cin % p.groups == 0);
    int64_t ne[4] = {x->ne[0], Cout, 0, 0};
    for (int i = 0; i < 2; i++) {
        int64_t in = x->ne[2 + i], k = i ? KW : KH;
        ne[2 + i] = (in - 1) * p.stride[i] - 2 * (int64_t)p.padding[i] + (int64_t)p.dilation[i] * (k - 1) +
                    p.output_padding[i] + 1;
        NU_ASSERT(ne[2 + i] >= 1);
    }
    nu_tensor *y = nu_new_node(ctx, NU_OP_CONV_TRANSPOSE2D, NU_TYPE_F32, 4, ne);
    y->src[0] = x;
    y->src[1] = w;
    y->src[2] = bias;
    set_params(y, &p, true);
    return y;
}

/* Weight gradient node of shape w->ne (f32). dy is made contiguous: the kernel reads it as
 * GEMM rows. */
static nu_tensor *backward_weight(nu_ctx *ctx, int op, nu_tensor *x, nu_tensor *dy, const nu_tensor *w,
                                  const nu_conv2d_params *p) {
    if (!nu_is_contiguous(dy)) dy = nu_contiguous(ctx, dy);
    nu_tensor *dw = nu_new_node(ctx, op, NU_TYPE_F32, 4, w->ne);
    dw->src[0] = x;
    dw->src[1] = dy;
    set_params(dw, p, op == NU_OP_CONV_TRANSPOSE2D_BACKWARD_WEIGHT);
    return dw;
}

/* db[c] = sum over n, h, w of dy[n, c, h, w], shaped like bias. */
static void bias_grad(nu_ctx *ctx, nu_tensor *bias, nu_tensor *gy) {
    if (!nu_needs_grad(bias)) return;
    nu_tensor *s = nu_sum_to(ctx, gy, 4, (int64_t[]){1, gy->ne[1], 1, 1});
    nu_grad_accumulate(ctx, bias, nu_reshape(ctx, s, bias->ndim, bias->ne));
}

static void bw_conv2d(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *x = node->src[0], *w = node->src[1];
    nu_conv2d_params p = get_params(node);
    /* matrix-form weights (quantized inference weights) have no backward rule */
    NU_ASSERT(w->ndim == 4 || !(nu_needs_grad(x) || nu_needs_grad(w)));
    if (p.relu) { /* through the fused ReLU first: relu'(pre) = [y > 0] */
        gy = nu_unary_grad(ctx, NU_UNARY_RELU, gy, node);
        p.relu = false;
    }
    if (nu_needs_grad(x)) {
        nu_conv2d_params q = p;
        for (int i = 0; i < 2; i++) {
            int64_t k = w->ne[2 + i];
            /* conv_transpose2d output size without output_padding; the remainder is what the
             * forward conv's floor division dropped (always < stride). */
            int64_t base = (node->ne[2 + i] - 1) * p.stride[i] - 2 * (int64_t)p.padding[i] +
                           (int64_t)p.dilation[i] * (k - 1) + 1;
            q.output_padding[i] = (int)(x->ne[2 + i] - base);
            NU_ASSERT(q.output_padding[i] >= 0 && q.output_padding[i] < p.stride[i]);
        }
        nu_grad_accumulate(ctx, x, nu_conv_transpose2d(ctx, gy, w, NULL, &q));
    }
    if (nu_needs_grad(w))
        nu_grad_accumulate(ctx, w, backward_weight(ctx, NU_OP_CONV2D_BACKWARD_WEIGHT, x, gy, w, &p));
    bias_grad(ctx, node->src[2], gy);
}

static void bw_conv_transpose2d(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *x = node->src[0], *w = node->src[1];
    nu_conv2d_params p = get_params(node);
    if (nu_needs_grad(x)) {
        nu_conv2d_params q = p;
        q.output_padding[0] = q.output_padding[1] = 0;
        nu_tensor *dx = nu_conv2d(ctx, gy, w, NULL, &q);
        /* output_padding >= stride (allowed when smaller than dilation) adds whole extra rows
         * that the adjoint conv2d maps past x's edge: drop them. */
        for (int i = 0; i < 2; i++)
            if (dx->ne[2 + i] != x->ne[2 + i]) dx = nu_slice(ctx, dx, 2 + i, 0, x->ne[2 + i]);
        nu_grad_accumulate(ctx, x, dx);
    }
    if (nu_needs_grad(w))
        nu_grad_accumulate(ctx, w, backward_weight(ctx, NU_OP_CONV_TRANSPOSE2D_BACKWARD_WEIGHT, x, gy, w, &p));
    bias_grad(ctx, node->src[2], gy);
}

void nu_ops_register_conv(nu_op_def *tab) {
    tab[NU_OP_CONV2D].backward = bw_conv2d;
    tab[NU_OP_CONV_TRANSPOSE2D].backward = bw_conv_transpose2d;
    /* the weight-gradient ops are not differentiated again (no double backward) */
}
