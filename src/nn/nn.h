/*
 * nn.h — reusable graph builders for model code: weight lookup with shape checks, linear, conv,
 * norms, multi-head attention, feed-forward blocks. Builders never abort on bad model files: a
 * missing or mis-shaped weight records the first error in the nu_nn (nu_nn_status) and returns
 * a zero placeholder of the expected shape, so a loader builds the whole graph and then reports
 * one clear line ("unet: missing tensor down_blocks.0.resnets.0.conv1.weight").
 * Tested by tests/test_nn.c.
 */
#ifndef NU_NN_H
#define NU_NN_H

#include <stdarg.h>

#include "nn/lora.h"
#include "nn/weights.h"

typedef struct nu_nn {
    nu_ctx *ctx;        /* where graph nodes are built                  */
    nu_weights *w;      /* weights, by canonical name                   */
    const char *model;  /* "unet", "vae", "clip" — prefix of error text */
    const nu_lora_set *lora; /* LoRA layers added by linear/conv2d (NULL: none; lora.h) */
    nu_status status;   /* first error (NU_OK if none)                  */
    char error[512];
} nu_nn;

void nu_nn_init(nu_nn *nn, nu_ctx *ctx, nu_weights *w, const char *model);
/* Records an error ("<model>: <message>"); the first error wins. */
void nu_nn_fail(nu_nn *nn, nu_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* NU_OK, or the first error with its message set as nu_last_error(). */
nu_status nu_nn_status(nu_nn *nn);

/* Weight `fmt...` with exactly this shape (ndim sizes); on mismatch/missing records an error and
 * returns zeros of that shape. */
nu_tensor *nu_nn_weight(nu_nn *nn, int ndim, const int64_t *ne, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Like nu_nn_weight but absent is fine: returns NULL. A present weight must have the shape. */
nu_tensor *nu_nn_weight_opt(nu_nn *nn, int ndim, const int64_t *ne, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
bool nu_nn_has(nu_nn *nn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* x [..., in] -> [..., out]; weights prefix.weight [out, in], prefix.bias [out] (if bias).
 * With nn->lora set, linear and conv2d add the LoRA branches of prefix.weight (lora.h). */
nu_tensor *nu_nn_linear(nu_nn *nn, nu_tensor *x, const char *prefix, int64_t in, int64_t out, bool bias);
/* NCHW conv with square kernel k; prefix.weight [out, in, k, k], prefix.bias [out] (if bias). */
nu_tensor *nu_nn_conv2d(nu_nn *nn, nu_tensor *x, const char *prefix, int64_t in, int64_t out, int k, int stride,
                        int pad, bool bias);
/* prefix.weight/.bias [C] */
nu_tensor *nu_nn_group_norm(nu_nn *nn, nu_tensor *x, const char *prefix, int groups, int64_t C, float eps);
nu_tensor *nu_nn_layer_norm(nu_nn *nn, nu_tensor *x, const char *prefix, int64_t D, float eps);

/* Multi-head attention on token sequences. x [B, T, D]; ctx_tokens [B, S, Dc] or NULL (self).
 * Projection names (relative to prefix): q, k, v, out (e.g. "to_q", "to_k", "to_v", "to_out.0"
 * for diffusers; "q_proj", "k_proj", "v_proj", "out_proj" for CLIP). Returns [B, T, D]. */
typedef struct nu_nn_attn_names {
    const char *q, *k, *v, *out;
    bool qkv_bias, out_bias;
} nu_nn_attn_names;
nu_tensor *nu_nn_attention(nu_nn *nn, nu_tensor *x, nu_tensor *ctx_tokens, const char *prefix,
                           const nu_nn_attn_names *names, int64_t D, int64_t Dc, int heads, nu_tensor *mask, bool causal);

/* Tokens <-> images: [B, C, H, W] <-> [B, H*W, C] */
nu_tensor *nu_nn_to_tokens(nu_ctx *ctx, nu_tensor *x);
nu_tensor *nu_nn_from_tokens(nu_ctx *ctx, nu_tensor *t, int64_t H, int64_t W);

#endif
