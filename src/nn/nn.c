/*
 * nn.c — reusable graph builders for model code (see nn.h).
 * Tested by tests/test_nn.c (a small transformer block against a PyTorch fixture).
 */
#include <math.h>
#include <stdio.h>

#include "core/internal.h"
#include "nn/nn.h"

void nu_nn_init(nu_nn *nn, nu_ctx *ctx, nu_weights *w, const char *model) {
    memset(nn, 0, sizeof *nn);
    nn->ctx = ctx;
    nn->w = w;
    nn->model = model;
}

nu_status nu_nn_status(nu_nn *nn) {
    if (nn->status != NU_OK) nu_error(nn->status, "%s", nn->error);
    return nn->status;
}

void nu_nn_fail(nu_nn *nn, nu_status s, const char *fmt, ...) {
    if (nn->status != NU_OK) return; /* keep the first error */
    nn->status = s;
    int off = snprintf(nn->error, sizeof nn->error, "%s: ", nn->model);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nn->error + off, sizeof nn->error - (size_t)off, fmt, ap);
    va_end(ap);
}

static nu_tensor *lookup(nu_nn *nn, bool required, int ndim, const int64_t *ne, const char *fmt, va_list ap) {
    char name[NU_MAX_NAME];
    vsnprintf(name, sizeof name, fmt, ap);
    nu_tensor *t = nu_weights_get(nn->w, name);
    bool ok = t != NULL;
    if (t) {
        /* shapes must match; a [N] bias stored as [N, 1, 1, ...] or a scalar stored 0-d is not
         * accepted. A conv weight [O, I, KH, KW] may come in matrix form [O, I*KH*KW] (converted
         * to a block type at load time; nu_conv2d takes it with the kernel size). */
        if (ndim == 4 && t->ndim == 2) {
            ok = t->ne[0] == ne[0] && t->ne[1] == ne[1] * ne[2] * ne[3];
        } else {
            ok = t->ndim == ndim;
            for (int d = 0; ok && d < ndim; d++) ok = t->ne[d] == ne[d];
        }
        if (!ok) {
            char got[128], want[128] = "[";
            nu_shape_str(t, got, sizeof got);
            for (int d = 0; d < ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), d ? ", %lld" : "%lld", (long long)ne[d]);
            strncat(want, "]", sizeof want - strlen(want) - 1);
            nu_nn_fail(nn, NU_ERR_FORMAT, "tensor %s has shape %s, expected %s", name, got, want);
        }
    } else if (required) {
        nu_nn_fail(nn, NU_ERR_NOT_FOUND, "missing tensor %s", name);
    } else {
        return NULL;
    }
    if (ok) return t;
    /* placeholder so building can continue: zeros of the expected shape */
    nu_ctx_set_alloc_data(nn->ctx, true);
    nu_tensor *z = nu_new_tensor(nn->ctx, NU_TYPE_F32, ndim, ne);
    nu_ctx_set_alloc_data(nn->ctx, false);
    nu_set_name(z, "%s (missing)", name);
    return z;
}

nu_tensor *nu_nn_weight(nu_nn *nn, int ndim, const int64_t *ne, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    nu_tensor *t = lookup(nn, true, ndim, ne, fmt, ap);
    va_end(ap);
    return t;
}

nu_tensor *nu_nn_weight_opt(nu_nn *nn, int ndim, const int64_t *ne, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    nu_tensor *t = lookup(nn, false, ndim, ne, fmt, ap);
    va_end(ap);
    return t;
}

bool nu_nn_has(nu_nn *nn, const char *fmt, ...) {
    char name[NU_MAX_NAME];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return nu_weights_get(nn->w, name) != NULL;
}

nu_tensor *nu_nn_linear(nu_nn *nn, nu_tensor *x, const char *prefix, int64_t in, int64_t out, bool bias) {
    nu_tensor *w = nu_nn_weight(nn, 2, (int64_t[]){out, in}, "%s.weight", prefix);
    nu_tensor *b = bias ? nu_nn_weight(nn, 1, (int64_t[]){out}, "%s.bias", prefix) : NULL;
    NU_ASSERT(x->ne[x->ndim - 1] == in);
    return nu_lora_linear(nn->lora, nn->ctx, nn->model, prefix, x, nu_linear(nn->ctx, x, w, b));
}

nu_tensor *nu_nn_conv2d(nu_nn *nn, nu_tensor *x, const char *prefix, int64_t in, int64_t out, int k, int stride,
                        int pad, bool bias) {
    nu_tensor *w = nu_nn_weight(nn, 4, (int64_t[]){out, in, k, k}, "%s.weight", prefix);
    nu_tensor *b = bias ? nu_nn_weight(nn, 1, (int64_t[]){out}, "%s.bias", prefix) : NULL;
    NU_ASSERT(x->ndim == 4 && x->ne[1] == in);
    nu_conv2d_params p = nu_conv2d_params_init();
    p.stride[0] = p.stride[1] = stride;
    p.padding[0] = p.padding[1] = pad;
    p.kernel[0] = p.kernel[1] = k; /* for a matrix-form weight */
    return nu_lora_conv2d(nn->lora, nn->ctx, nn->model, prefix, x, nu_conv2d(nn->ctx, x, w, b, &p), stride, pad);
}

nu_tensor *nu_nn_group_norm(nu_nn *nn, nu_tensor *x, const char *prefix, int groups, int64_t C, float eps) {
    nu_tensor *w = nu_nn_weight(nn, 1, (int64_t[]){C}, "%s.weight", prefix);
    nu_tensor *b = nu_nn_weight(nn, 1, (int64_t[]){C}, "%s.bias", prefix);
    return nu_group_norm(nn->ctx, x, groups, w, b, eps);
}

nu_tensor *nu_nn_layer_norm(nu_nn *nn, nu_tensor *x, const char *prefix, int64_t D, float eps) {
    nu_tensor *w = nu_nn_weight(nn, 1, (int64_t[]){D}, "%s.weight", prefix);
    nu_tensor *b = nu_nn_weight(nn, 1, (int64_t[]){D}, "%s.bias", prefix);
    return nu_layer_norm(nn->ctx, x, w, b, eps);
}

/* [B, T, NH*HD] -> [B, NH, T, HD] as a strided view (no copy: the attention kernel reads
 * strided q/k/v directly). */
static nu_tensor *split_heads(nu_ctx *ctx, nu_tensor *x, int heads) {
    int64_t B = x->ne[0], T = x->ne[1], D = x->ne[2];
    nu_tensor *r = nu_reshape(ctx, x, 4, (int64_t[]){B, T, heads, D / heads});
    return nu_permute(ctx, r, (int[]){0, 2, 1, 3});
}

/* "prefix.name", or "name" for an empty prefix */
static void join(char *buf, size_t len, const char *prefix, const char *name) {
    snprintf(buf, len, "%s%s%s", prefix, *prefix ? "." : "", name);
}

nu_tensor *nu_nn_attention(nu_nn *nn, nu_tensor *x, nu_tensor *ctx_tokens, const char *prefix,
                           const nu_nn_attn_names *names, int64_t D, int64_t Dc, int heads, nu_tensor *mask, bool causal) {
    char buf[NU_MAX_NAME];
    nu_tensor *kv_src = ctx_tokens ? ctx_tokens : x;
    int64_t Dkv = ctx_tokens ? Dc : D;
    join(buf, sizeof buf, prefix, names->q);
    nu_tensor *q = nu_nn_linear(nn, x, buf, D, D, names->qkv_bias);
    join(buf, sizeof buf, prefix, names->k);
    nu_tensor *k = nu_nn_linear(nn, kv_src, buf, Dkv, D, names->qkv_bias);
    join(buf, sizeof buf, prefix, names->v);
    nu_tensor *v = nu_nn_linear(nn, kv_src, buf, Dkv, D, names->qkv_bias);
    nu_tensor *o = nu_attention(nn->ctx, split_heads(nn->ctx, q, heads), split_heads(nn->ctx, k, heads),
                                split_heads(nn->ctx, v, heads), mask, causal, 0.0f); /* [B, NH, T, HD] */
    o = nu_contiguous(nn->ctx, nu_permute(nn->ctx, o, (int[]){0, 2, 1, 3}));     /* [B, T, NH, HD] */
    o = nu_reshape(nn->ctx, o, 3, (int64_t[]){x->ne[0], x->ne[1], D});
    join(buf, sizeof buf, prefix, names->out);
    return nu_nn_linear(nn, o, buf, D, D, names->out_bias);
}

nu_tensor *nu_nn_to_tokens(nu_ctx *ctx, nu_tensor *x) {
    int64_t B = x->ne[0], C = x->ne[1], HW = x->ne[2] * x->ne[3];
    nu_tensor *r = nu_reshape(ctx, x, 3, (int64_t[]){B, C, HW});
    return nu_contiguous(ctx, nu_permute(ctx, r, (int[]){0, 2, 1}));
}

nu_tensor *nu_nn_from_tokens(nu_ctx *ctx, nu_tensor *t, int64_t H, int64_t W) {
    int64_t B = t->ne[0], C = t->ne[2];
    nu_tensor *p = nu_contiguous(ctx, nu_permute(ctx, t, (int[]){0, 2, 1}));
    return nu_reshape(ctx, p, 4, (int64_t[]){B, C, H, W});
}
