/*
 * gen_model.h — internals shared by the trainable generative models (src/models/gen_model.c,
 * pixel_unet.c, dit.c): the parameter store and the graph-building helpers that create a
 * parameter on first reference while the model is being made (nu_gen_model_new runs the forward
 * builder once) and look it up by name afterwards.
 * Tested through tests/test_gen_models.c.
 */
#ifndef NU_GEN_MODEL_INTERNAL_H
#define NU_GEN_MODEL_INTERNAL_H

#include "nuance/gen_models.h"
#include "nuance/rng.h"

struct nu_gen_model {
    nu_gen_config cfg;
    nu_ctx *ctx;       /* parameters (data allocated) and constant tables               */
    nu_tensor **t;     /* parameters in creation order                                  */
    int n, cap;
    int *hash;         /* open addressing over t[] by name, -1 = empty                  */
    int hcap;
    bool creating;     /* nu_gen_model_new's build: unknown names create parameters     */
    nu_rng rng;        /* initialisation draws                                          */
    nu_tensor *pos_embed; /* DiT: fixed [1, T, D] sin-cos table (not a parameter)       */
};

/* How a new parameter is initialised (fan_in / fan_out from the weight's shape). */
typedef enum gen_init {
    GEN_INIT_ZERO,
    GEN_INIT_ONE,
    GEN_INIT_TORCH,   /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)): nn.Linear / nn.Conv2d default for
                         weight (kaiming_uniform a=sqrt(5)) and bias (fan_in of the weight)   */
    GEN_INIT_NORMAL,  /* N(0, arg^2)                                                     */
    GEN_INIT_XAVIER,  /* U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (xavier_uniform_)   */
} gen_init;

/* The parameter `name` of shape ne. While creating, an unknown name makes it (f32, data
 * initialised from m->rng with `init`, fan_in/fan_out as given; NU_FLAG_PARAM, named); else the
 * name must exist with this shape (programmer error otherwise). */
nu_tensor *nu_gen_param(nu_gen_model *m, gen_init init, float arg, int64_t fan_in, int64_t fan_out, int ndim,
                        const int64_t *ne, const char *fmt, ...) __attribute__((format(printf, 8, 9)));

/* x [..., in] -> [..., out]: prefix.weight [out, in], prefix.bias [out]. */
nu_tensor *nu_gen_linear(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, const char *prefix, int64_t in, int64_t out,
                         gen_init winit, float warg, gen_init binit);
/* NCHW conv, square kernel k: prefix.weight [out, in, k, k], prefix.bias [out], torch init. */
nu_tensor *nu_gen_conv(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, const char *prefix, int64_t in, int64_t out, int k,
                       int stride, int pad);
/* GroupNorm with affine prefix.weight (1) / prefix.bias (0). */
nu_tensor *nu_gen_group_norm(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, const char *prefix, int groups, int64_t C,
                             float eps);
/* Self-attention over tokens x [B, T, D] with heads of width D/heads: prefix.to_q/to_k/to_v
 * [D, D] (+ bias), prefix.to_out.0 [D, D] + bias (diffusers Attention names). */
nu_tensor *nu_gen_self_attention(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, const char *prefix, int64_t D, int heads,
                                 gen_init winit);

/* "prefix.suffix" into buf (NU_MAX_NAME). */
const char *nu_gen_name(char *buf, const char *prefix, const char *suffix);

/* Builders (pixel_unet.c, dit.c): shapes as nu_gen_model_forward. */
nu_tensor *nu_gen_unet_forward(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, nu_tensor *t, nu_tensor *y);
nu_tensor *nu_gen_dit_forward(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, nu_tensor *t, nu_tensor *y);
/* Config checks of each architecture (named errors). */
nu_status nu_gen_unet_check(const nu_gen_config *c);
nu_status nu_gen_dit_check(const nu_gen_config *c);
/* DiT: makes m->pos_embed for the configured size (called by nu_gen_model_new). */
nu_status nu_gen_dit_init_tables(nu_gen_model *m);

#endif
