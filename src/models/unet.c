/*
 * unet.c — the Stable Diffusion 1.x / 2.x UNet as diffusers' UNet2DConditionModel (v0.27.2)
 * computes it, built from nn-layer weight lookups and engine ops. Shapes (B batch, C channels,
 * T = H*W tokens, S context tokens, D = C):
 *
 *   t [B] -> sinusoidal [B, C0] (flip_sin_to_cos, shift 0) -> linear_1 -> SiLU -> linear_2 = temb
 *   x [B, Cin, H, W] -> conv_in [B, C0, H, W]
 *   down level L: layers_per_block x (ResnetBlock2D [+ Transformer2DModel]), then (not last)
 *                 Downsample2D (conv 3x3 stride 2 pad 1); every output is pushed as a skip
 *   mid: ResnetBlock2D, Transformer2DModel, ResnetBlock2D
 *   up block i (level n-1-i): layers_per_block+1 x (cat([h, skip.pop()], C) -> ResnetBlock2D
 *                 [+ Transformer2DModel]), then (not last) Upsample2D (nearest x2, to the next
 *                 skip's size, then conv 3x3)
 *   GroupNorm -> SiLU -> conv_out [B, Cout, H, W]
 *   ResnetBlock2D: h = conv1(SiLU(GN(x))) + time_emb_proj(SiLU(temb))[:, :, None, None];
 *                  h = conv2(SiLU(GN(h))) (dropout: no-op); out = h + (conv_shortcut(x) or x)
 *                  GroupNorm(norm_groups, eps 1e-5).
 *   Transformer2DModel: GN(eps 1e-6) -> proj_in (conv 1x1 = Linear on tokens, or Linear) ->
 *                  depth x BasicTransformerBlock -> proj_out -> + residual
 *   BasicTransformerBlock (LayerNorm eps 1e-5): h += attn1(LN1(h)) (self); h += attn2(LN2(h),
 *                  context) (to_k/to_v from context); h += ff(LN3(h)) with GEGLU:
 *                  [hid, gate] = net.0.proj(x) split in halves, net.2(hid * gelu_erf(gate)).
 *   Attention: softmax(Q K^T / sqrt(HD)) V with NH heads, to_q/k/v without bias, to_out.0 with
 *              bias; always in f32, so SD 2.x's upcast_attention is what we do anyway.
 *
 * 1-D parameters (biases, norm affines) stored as f16/bf16 are converted to f32 once per model
 * (conv bias must be f32 and it saves a cast node per run); matrices and conv weights stay as
 * stored (dequantized by the kernels). Graphs are built once per input shape and reused.
 * Activation memory (SD 1.5, 512x512, batch 2: allocator buffer 121 MiB, liveness bound 91 MiB):
 * the feed-forward runs in row chunks of <= 16 MB projections (diffusers' feed-forward chunking;
 * unchunked, one [8192, 2560] projection plus its bias add is 160 MB), and a resnet's 1x1
 * shortcut is computed before its main branch so that a wide input dies after norm1.
 * Also: config parsing/detection, loading, the weight list and the benchmark (random weights).
 * Tested by tests/test_unet.c.
 */
#define _GNU_SOURCE /* memfd_create */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "models/unet.h"

#define MAX_SKIPS (1 + NU_UNET_MAX_LEVELS * 16)
#define TRANSFORMER_GN_EPS 1e-6f /* Transformer2DModel's GroupNorm (diffusers: eps=1e-6)          */
#define LAYER_NORM_EPS 1e-5f     /* BasicTransformerBlock norm1..3 (norm_eps default 1e-5)        */

/* ---------------------------------------------------------------- config */

static void config_common(nu_unet_config *c) {
    memset(c, 0, sizeof *c);
    c->in_channels = 4;
    c->out_channels = 4;
    c->n_levels = 4;
    static const int ch[4] = {320, 640, 1280, 1280};
    for (int L = 0; L < 4; L++) {
        c->channels[L] = ch[L];
        c->down_attn[L] = c->up_attn[L] = L < 3;
        c->depth[L] = L < 3 ? 1 : 0;
    }
    c->mid_attn = true;
    c->mid_depth = 1;
    c->layers_per_block = 2;
    c->time_embed_dim = 4 * 320;
    c->norm_groups = 32;
    c->norm_eps = 1e-5f;
    c->sample_size = 64;
}

/* Heads for a family when no config says: SD1 8 per level, SD2 head dim 64. */
static void family_heads(nu_unet_config *c) {
    for (int L = 0; L < c->n_levels; L++)
        c->heads[L] = c->family == NU_UNET_FAMILY_SD2 ? (c->channels[L] + 63) / 64 : 8;
    c->mid_heads = c->heads[c->n_levels - 1];
}

void nu_unet_config_sd15(nu_unet_config *c) {
    config_common(c);
    c->family = NU_UNET_FAMILY_SD1;
    c->context_dim = 768;
    family_heads(c);
}

void nu_unet_config_sd2(nu_unet_config *c) {
    config_common(c);
    c->family = NU_UNET_FAMILY_SD2;
    c->context_dim = 1024;
    c->linear_proj = true;
    c->upcast_attention = true;
    family_heads(c);
}

nu_status nu_unet_config_validate(const nu_unet_config *c) {
    if (c->n_levels < 1 || c->n_levels > NU_UNET_MAX_LEVELS)
        return nu_error(NU_ERR_UNSUPPORTED, "unet: %d levels (1..%d supported)", c->n_levels, NU_UNET_MAX_LEVELS);
    if (c->layers_per_block < 1 || c->layers_per_block > 15)
        return nu_error(NU_ERR_UNSUPPORTED, "unet: layers_per_block %d (1..15 supported)", c->layers_per_block);
    if (c->in_channels < 1 || c->out_channels < 1 || c->in_channels > 64 || c->out_channels > 64)
        return nu_error(NU_ERR_UNSUPPORTED, "unet: in/out channels %d/%d", c->in_channels, c->out_channels);
    if (c->norm_groups < 1) return nu_error(NU_ERR_INVALID_ARG, "unet: norm_num_groups %d", c->norm_groups);
    if (c->time_embed_dim < 1) return nu_error(NU_ERR_INVALID_ARG, "unet: time embedding dim %d", c->time_embed_dim);
    if (c->channels[0] % 2) return nu_error(NU_ERR_UNSUPPORTED, "unet: odd first channel count %d", c->channels[0]);
    bool any_attn = c->mid_attn;
    for (int L = 0; L < c->n_levels; L++) {
        int C = c->channels[L];
        if (C < 1 || C > 65536) return nu_error(NU_ERR_UNSUPPORTED, "unet: %d channels at level %d", C, L);
        if (C % c->norm_groups)
            return nu_error(NU_ERR_FORMAT, "unet: %d channels at level %d not divisible by %d GroupNorm groups", C, L,
                            c->norm_groups);
        bool attn = c->down_attn[L] || c->up_attn[L] || (L == c->n_levels - 1 && c->mid_attn);
        any_attn |= attn;
        if (!attn) continue;
        int heads = c->heads[L];
        if (heads < 1 || C % heads)
            return nu_error(NU_ERR_FORMAT, "unet: %d attention heads do not divide %d channels at level %d", heads, C, L);
        if ((c->down_attn[L] || c->up_attn[L]) && (c->depth[L] < 1 || c->depth[L] > NU_UNET_MAX_DEPTH))
            return nu_error(NU_ERR_UNSUPPORTED, "unet: transformer depth %d at level %d", c->depth[L], L);
    }
    if (c->mid_attn) {
        int C = c->channels[c->n_levels - 1];
        if (c->mid_heads < 1 || C % c->mid_heads)
            return nu_error(NU_ERR_FORMAT, "unet: %d mid-block heads do not divide %d channels", c->mid_heads, C);
        if (c->mid_depth < 1 || c->mid_depth > NU_UNET_MAX_DEPTH)
            return nu_error(NU_ERR_UNSUPPORTED, "unet: mid-block transformer depth %d", c->mid_depth);
    }
    if (any_attn && (c->context_dim < 1 || c->context_dim > 65536))
        return nu_error(NU_ERR_FORMAT, "unet: cross-attention dim %d", c->context_dim);
    return NU_OK;
}

/* An int, or a list of n ints (per level); false if neither or out of range. */
static bool int_or_list(const nu_json *v, int n, int *out) {
    if (!v) return false;
    if (v->kind == NU_JSON_NUMBER) {
        if (v->num != floor(v->num) || v->num < 0 || v->num > 1e6) return false;
        for (int i = 0; i < n; i++) out[i] = (int)v->num;
        return true;
    }
    if (v->kind != NU_JSON_ARRAY || v->n != n) return false;
    for (int i = 0; i < n; i++) {
        const nu_json *e = &v->items[i];
        if (e->kind != NU_JSON_NUMBER || e->num != floor(e->num) || e->num < 0 || e->num > 1e6) return false;
        out[i] = (int)e->num;
    }
    return true;
}

static bool json_is_null_or_absent(const nu_json *o, const char *key) {
    const nu_json *v = nu_json_get(o, key);
    return !v || v->kind == NU_JSON_NULL;
}

nu_status nu_unet_config_from_diffusers_json(const char *path, nu_unet_config *c) {
    nu_json *j;
    nu_status s = nu_json_load_file(path, &j);
    if (s != NU_OK) return s;
    memset(c, 0, sizeof *c);
#define FAIL(st, ...)                                                                                                  \
    do {                                                                                                               \
        s = nu_error(st, __VA_ARGS__);                                                                                 \
        goto done;                                                                                                     \
    } while (0)
    const char *cls = nu_json_string(j, "_class_name", "UNet2DConditionModel");
    if (strcmp(cls, "UNet2DConditionModel")) FAIL(NU_ERR_UNSUPPORTED, "%s: model class %s is not UNet2DConditionModel", path, cls);
    static const char *const must_be_null[] = {"class_embed_type", "addition_embed_type", "time_cond_proj_dim",
                                               "encoder_hid_dim",  "num_class_embeds",    "time_embedding_dim"};
    for (size_t i = 0; i < sizeof must_be_null / sizeof must_be_null[0]; i++)
        if (!json_is_null_or_absent(j, must_be_null[i]))
            FAIL(NU_ERR_UNSUPPORTED, "%s: '%s' is set: not a Stable Diffusion 1.x/2.x UNet (SDXL, LCM-distilled or "
                                     "class-conditioned UNets are not supported)", path, must_be_null[i]);
    if (strcmp(nu_json_string(j, "act_fn", "silu"), "silu") ||
        strcmp(nu_json_string(j, "time_embedding_type", "positional"), "positional") ||
        strcmp(nu_json_string(j, "resnet_time_scale_shift", "default"), "default") ||
        !nu_json_bool(j, "flip_sin_to_cos", true) || nu_json_number(j, "freq_shift", 0) != 0 ||
        nu_json_number(j, "conv_in_kernel", 3) != 3 || nu_json_number(j, "conv_out_kernel", 3) != 3 ||
        nu_json_bool(j, "center_input_sample", false) || nu_json_bool(j, "dual_cross_attention", false) ||
        nu_json_number(j, "mid_block_scale_factor", 1) != 1 || nu_json_number(j, "resnet_out_scale_factor", 1) != 1 ||
        nu_json_number(j, "downsample_padding", 1) != 1)
        FAIL(NU_ERR_UNSUPPORTED, "%s: non-default UNet options (act_fn, time embedding, kernels, scale factors): not an "
                                 "SD 1.x/2.x UNet", path);
    const nu_json *oca = nu_json_get(j, "only_cross_attention");
    if (oca && oca->kind == NU_JSON_BOOL && oca->b) FAIL(NU_ERR_UNSUPPORTED, "%s: only_cross_attention is not supported", path);

    const nu_json *boc = nu_json_get(j, "block_out_channels");
    if (!boc || boc->kind != NU_JSON_ARRAY || boc->n < 1 || boc->n > NU_UNET_MAX_LEVELS)
        FAIL(NU_ERR_FORMAT, "%s: block_out_channels missing or not a list of 1..%d numbers", path, NU_UNET_MAX_LEVELS);
    c->n_levels = boc->n;
    int n = c->n_levels;
    if (!int_or_list(boc, n, c->channels)) FAIL(NU_ERR_FORMAT, "%s: bad block_out_channels", path);
    c->in_channels = (int)nu_json_number(j, "in_channels", 4);
    c->out_channels = (int)nu_json_number(j, "out_channels", 4);
    int lpb[NU_UNET_MAX_LEVELS];
    if (!int_or_list(nu_json_get(j, "layers_per_block"), n, lpb)) lpb[0] = 2;
    for (int L = 1; L < n; L++)
        if (lpb[L] != lpb[0]) FAIL(NU_ERR_UNSUPPORTED, "%s: layers_per_block differs between levels", path);
    c->layers_per_block = lpb[0];
    c->norm_groups = (int)nu_json_number(j, "norm_num_groups", 32);
    c->norm_eps = (float)nu_json_number(j, "norm_eps", 1e-5);
    c->linear_proj = nu_json_bool(j, "use_linear_projection", false);
    c->upcast_attention = nu_json_bool(j, "upcast_attention", false);
    c->sample_size = (int)nu_json_number(j, "sample_size", 0);
    int ctx_dims[NU_UNET_MAX_LEVELS];
    if (!int_or_list(nu_json_get(j, "cross_attention_dim"), n, ctx_dims)) ctx_dims[0] = 1280;
    for (int L = 1; L < n; L++)
        if (ctx_dims[L] != ctx_dims[0]) FAIL(NU_ERR_UNSUPPORTED, "%s: per-level cross_attention_dim", path);
    c->context_dim = ctx_dims[0];
    /* diffusers naming quirk: 'attention_head_dim' holds the number of heads for these models
     * (num_attention_heads = num_attention_heads or attention_head_dim) */
    const nu_json *heads = json_is_null_or_absent(j, "num_attention_heads") ? nu_json_get(j, "attention_head_dim")
                                                                             : nu_json_get(j, "num_attention_heads");
    if (!heads) for (int L = 0; L < n; L++) c->heads[L] = 8;
    else if (!int_or_list(heads, n, c->heads)) FAIL(NU_ERR_FORMAT, "%s: bad attention_head_dim", path);
    c->mid_heads = c->heads[n - 1];
    if (!int_or_list(nu_json_get(j, "transformer_layers_per_block"), n, c->depth))
        for (int L = 0; L < n; L++) c->depth[L] = 1;
    if (!json_is_null_or_absent(j, "reverse_transformer_layers_per_block"))
        FAIL(NU_ERR_UNSUPPORTED, "%s: reverse_transformer_layers_per_block is not supported", path);
    c->mid_depth = c->depth[n - 1];
    const nu_json *down = nu_json_get(j, "down_block_types"), *up = nu_json_get(j, "up_block_types");
    if (!down || !up || down->kind != NU_JSON_ARRAY || up->kind != NU_JSON_ARRAY || down->n != n || up->n != n)
        FAIL(NU_ERR_FORMAT, "%s: down_block_types/up_block_types missing or not %d long", path, n);
    for (int L = 0; L < n; L++) {
        const nu_json *d = &down->items[L], *u = &up->items[n - 1 - L];
        if (d->kind != NU_JSON_STRING || u->kind != NU_JSON_STRING) FAIL(NU_ERR_FORMAT, "%s: block types must be strings", path);
        if (!strcmp(d->str, "CrossAttnDownBlock2D")) c->down_attn[L] = true;
        else if (strcmp(d->str, "DownBlock2D")) FAIL(NU_ERR_UNSUPPORTED, "%s: down block type %s", path, d->str);
        if (!strcmp(u->str, "CrossAttnUpBlock2D")) c->up_attn[L] = true;
        else if (strcmp(u->str, "UpBlock2D")) FAIL(NU_ERR_UNSUPPORTED, "%s: up block type %s", path, u->str);
    }
    const char *mid = nu_json_string(j, "mid_block_type", "UNetMidBlock2DCrossAttn");
    if (strcmp(mid, "UNetMidBlock2DCrossAttn")) FAIL(NU_ERR_UNSUPPORTED, "%s: mid block type %s", path, mid);
    c->mid_attn = true;
    c->time_embed_dim = 4 * c->channels[0];
    c->family = c->linear_proj ? NU_UNET_FAMILY_SD2 : NU_UNET_FAMILY_SD1;
    c->prediction = NU_UNET_PRED_UNKNOWN; /* in scheduler/scheduler_config.json, not here */
    s = nu_unet_config_validate(c);
    if (s != NU_OK) nu_error(s, "%s: %s", path, nu_last_error());
done:
#undef FAIL
    nu_json_free(j);
    return s;
}

nu_status nu_unet_config_from_ldm_json(const char *path, nu_unet_config *c) {
    nu_json *j;
    nu_status s = nu_json_load_file(path, &j);
    if (s != NU_OK) return s;
    memset(c, 0, sizeof *c);
    const nu_json *mp = nu_json_get(nu_json_get(j, "model"), "params");
    const nu_json *up = nu_json_get(nu_json_get(mp, "unet_config"), "params");
    if (!up) {
        nu_json_free(j);
        return nu_error(NU_ERR_FORMAT, "%s: no model.params.unet_config.params (not an LDM config)", path);
    }
    const nu_json *mult = nu_json_get(up, "channel_mult");
    int n = mult && mult->kind == NU_JSON_ARRAY ? mult->n : 0;
    int mc = (int)nu_json_number(up, "model_channels", 0), m[NU_UNET_MAX_LEVELS];
    if (n < 1 || n > NU_UNET_MAX_LEVELS || !int_or_list(mult, n, m) || mc < 1) {
        nu_json_free(j);
        return nu_error(NU_ERR_FORMAT, "%s: model_channels / channel_mult missing or invalid", path);
    }
    c->n_levels = n;
    for (int L = 0; L < n; L++) c->channels[L] = mc * m[L];
    c->in_channels = (int)nu_json_number(up, "in_channels", 4);
    c->out_channels = (int)nu_json_number(up, "out_channels", 4);
    c->layers_per_block = (int)nu_json_number(up, "num_res_blocks", 2);
    c->context_dim = (int)nu_json_number(up, "context_dim", 768);
    c->linear_proj = nu_json_bool(up, "use_linear_in_transformer", false);
    c->sample_size = (int)nu_json_number(up, "image_size", 0);
    c->family = c->linear_proj ? NU_UNET_FAMILY_SD2 : NU_UNET_FAMILY_SD1;
    c->upcast_attention = c->family == NU_UNET_FAMILY_SD2;
    /* GroupNorm groups are fixed at 32 in LDM's normalization(); tiny test configs state theirs */
    c->norm_groups = (int)nu_json_number(up, "norm_num_groups", nu_json_number(up, "norm_num_groups_NOTE", 32));
    c->norm_eps = 1e-5f;
    c->time_embed_dim = 4 * mc;
    const nu_json *ar = nu_json_get(up, "attention_resolutions");
    for (int L = 0; L < n; L++) {
        bool attn = false;
        for (int i = 0; ar && ar->kind == NU_JSON_ARRAY && i < ar->n; i++)
            if (ar->items[i].kind == NU_JSON_NUMBER && (int)ar->items[i].num == (1 << L)) attn = true;
        c->down_attn[L] = c->up_attn[L] = attn;
    }
    c->mid_attn = true;
    if (!int_or_list(nu_json_get(up, "transformer_depth"), n, c->depth))
        for (int L = 0; L < n; L++) c->depth[L] = 1;
    c->mid_depth = c->depth[n - 1];
    int nh = (int)nu_json_number(up, "num_heads", -1), hc = (int)nu_json_number(up, "num_head_channels", -1);
    for (int L = 0; L < n; L++) /* openaimodel: num_head_channels wins when set (!= -1) */
        c->heads[L] = hc > 0 ? c->channels[L] / hc : nh > 0 ? nh : 8;
    c->mid_heads = c->heads[n - 1];
    const char *par = nu_json_string(mp, "parameterization", "eps");
    c->prediction = !strcmp(par, "v") ? NU_UNET_PRED_V : NU_UNET_PRED_EPS;
    nu_json_free(j);
    s = nu_unet_config_validate(c);
    if (s != NU_OK) nu_error(s, "%s: %s", path, nu_last_error());
    return s;
}

nu_status nu_unet_config_from_json(const char *path, nu_unet_config *c) {
    nu_json *j = NULL;
    nu_status s = nu_json_load_file(path, &j);
    if (s != NU_OK) return s;
    bool ldm = nu_json_get(j, "model") != NULL;
    bool dif = nu_json_get(j, "block_out_channels") != NULL;
    nu_json_free(j);
    if (ldm) return nu_unet_config_from_ldm_json(path, c);
    if (dif) return nu_unet_config_from_diffusers_json(path, c);
    return nu_error(NU_ERR_FORMAT, "%s: neither a diffusers UNet config (block_out_channels) nor an LDM config (model)", path);
}

/* Shape of a weight or NULL. */
static const nu_tensor *wshape(nu_weights *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const nu_tensor *wshape(nu_weights *w, const char *fmt, ...) {
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return nu_weights_get(w, name);
}

nu_status nu_unet_config_detect(nu_weights *w, nu_unet_config *c) {
    memset(c, 0, sizeof *c);
    const nu_tensor *ci = wshape(w, "conv_in.weight"), *co = wshape(w, "conv_out.weight");
    const nu_tensor *te = wshape(w, "time_embedding.linear_1.weight");
    if (!ci || !co || !te || ci->ndim != 4 || co->ndim != 4 || te->ndim != 2)
        return nu_error(NU_ERR_NOT_FOUND, "unet: conv_in / conv_out / time_embedding weights missing: not an SD UNet");
    c->in_channels = (int)ci->ne[1];
    c->out_channels = (int)co->ne[0];
    c->time_embed_dim = (int)te->ne[0];
    int n = 0;
    while (n < NU_UNET_MAX_LEVELS && wshape(w, "down_blocks.%d.resnets.0.conv1.weight", n)) n++;
    if (n == 0) return nu_error(NU_ERR_NOT_FOUND, "unet: no down_blocks.0.resnets.0.conv1.weight");
    if (wshape(w, "down_blocks.%d.resnets.0.conv1.weight", n))
        return nu_error(NU_ERR_UNSUPPORTED, "unet: more than %d levels", NU_UNET_MAX_LEVELS);
    c->n_levels = n;
    int lpb = 0;
    while (lpb < 16 && wshape(w, "down_blocks.0.resnets.%d.conv1.weight", lpb)) lpb++;
    c->layers_per_block = lpb;
    const nu_tensor *proj = NULL, *k2 = NULL;
    for (int L = 0; L < n; L++) {
        c->channels[L] = (int)wshape(w, "down_blocks.%d.resnets.0.conv1.weight", L)->ne[0];
        c->down_attn[L] = wshape(w, "down_blocks.%d.attentions.0.norm.weight", L) != NULL;
        c->up_attn[L] = wshape(w, "up_blocks.%d.attentions.0.norm.weight", n - 1 - L) != NULL;
        const char *blk = c->down_attn[L] ? "down_blocks" : "up_blocks";
        int bi = c->down_attn[L] ? L : n - 1 - L;
        int d = 0;
        while (d < NU_UNET_MAX_DEPTH && wshape(w, "%s.%d.attentions.0.transformer_blocks.%d.norm1.weight", blk, bi, d)) d++;
        c->depth[L] = d;
        if ((c->down_attn[L] || c->up_attn[L]) && !proj) {
            proj = wshape(w, "%s.%d.attentions.0.proj_in.weight", blk, bi);
            k2 = wshape(w, "%s.%d.attentions.0.transformer_blocks.0.attn2.to_k.weight", blk, bi);
        }
    }
    c->mid_attn = wshape(w, "mid_block.attentions.0.norm.weight") != NULL;
    int d = 0;
    while (d < NU_UNET_MAX_DEPTH && wshape(w, "mid_block.attentions.0.transformer_blocks.%d.norm1.weight", d)) d++;
    c->mid_depth = d;
    if (!proj && c->mid_attn) {
        proj = wshape(w, "mid_block.attentions.0.proj_in.weight");
        k2 = wshape(w, "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    }
    c->linear_proj = proj && proj->ndim == 2;
    c->context_dim = k2 && k2->ndim == 2 ? (int)k2->ne[1] : 0;
    c->family = c->linear_proj ? NU_UNET_FAMILY_SD2 : NU_UNET_FAMILY_SD1;
    c->upcast_attention = c->family == NU_UNET_FAMILY_SD2;
    family_heads(c);
    /* a default that does not divide the channels (small models): the largest count below it that does */
    for (int L = 0; L <= n; L++) {
        int *h = L < n ? &c->heads[L] : &c->mid_heads, C = c->channels[L < n ? L : n - 1];
        while (*h > 1 && C % *h) (*h)--;
    }
    c->norm_groups = 32;
    for (int L = 0; L < n; L++)
        while (c->norm_groups > 1 && c->channels[L] % c->norm_groups) c->norm_groups--;
    c->norm_eps = 1e-5f;
    c->prediction = NU_UNET_PRED_UNKNOWN;
    return nu_unet_config_validate(c);
}

/* ---------------------------------------------------------------- model */

typedef struct f32_entry {
    const nu_tensor *src;
    nu_tensor *f32;
} f32_entry;

struct nu_unet {
    nu_unet_config cfg;
    nu_weights *w;
    nu_ctx *pctx;      /* f32 copies of 1-D parameters (of all weights if upcast) */
    bool upcast;       /* --type f32: every weight computed from an f32 copy */
    const nu_lora_set *lora; /* LoRA branches added to Linear/conv layers (NULL: none) */
    f32_entry *f32;    /* open addressing, keyed by the stored tensor     */
    int f32_cap, f32_n;
    /* cached graph of the last shape */
    nu_ctx *gctx;
    nu_graph *g;
    nu_tensor *x, *t, *cx, *out; /* inputs and output of the cached graph */
    int B, H, W, S;
};

nu_unet_load_params nu_unet_load_params_init(void) {
    nu_unet_load_params p = {NULL, NU_TYPE_COUNT};
    return p;
}

const nu_unet_config *nu_unet_get_config(const nu_unet *u) { return &u->cfg; }

nu_weights *nu_unet_weights(nu_unet *u) { return u->w; }
size_t nu_unet_activation_bytes(const nu_unet *u) { return u->g ? nu_graph_peak_bytes(u->g) : 0; }

static void drop_graph(nu_unet *u) {
    if (u->g) nu_graph_free(u->g);
    if (u->gctx) nu_ctx_free(u->gctx);
    u->g = NULL;
    u->gctx = NULL;
    u->B = u->H = u->W = u->S = 0;
}

void nu_unet_set_lora(nu_unet *u, const nu_lora_set *s) {
    u->lora = s;
    drop_graph(u); /* the branches are graph nodes: rebuild on the next eval */
}

void nu_unet_free(nu_unet *u) {
    if (!u) return;
    drop_graph(u);
    free(u->f32);
    if (u->pctx) nu_ctx_free(u->pctx);
    nu_weights_free(u->w);
    free(u);
}

nu_status nu_unet_new(nu_weights *w, const nu_unet_config *c, nu_unet **out) {
    *out = NULL;
    nu_status s = nu_unet_config_validate(c);
    if (s != NU_OK) {
        nu_weights_free(w);
        return s;
    }
    nu_unet *u = calloc(1, sizeof *u);
    if (!u || !(u->pctx = nu_ctx_new(NULL))) {
        free(u);
        nu_weights_free(w);
        return nu_error(NU_ERR_NOMEM, "unet: out of memory");
    }
    u->cfg = *c;
    u->w = w;
    *out = u;
    return NU_OK;
}

/* The f32 version of a 1-D parameter, converted once and cached. */
static nu_tensor *param_f32(nu_unet *u, nu_tensor *t) {
    if (t->type == NU_TYPE_F32 || !t->data) return t;
    if (2 * (u->f32_n + 1) > u->f32_cap) {
        int cap = u->f32_cap ? 2 * u->f32_cap : 1024;
        f32_entry *e = calloc((size_t)cap, sizeof *e);
        NU_ASSERT(e);
        for (int i = 0; i < u->f32_cap; i++) {
            if (!u->f32[i].src) continue;
            size_t h = ((uintptr_t)u->f32[i].src >> 6) & (size_t)(cap - 1);
            while (e[h].src) h = (h + 1) & (size_t)(cap - 1);
            e[h] = u->f32[i];
        }
        free(u->f32);
        u->f32 = e;
        u->f32_cap = cap;
    }
    size_t h = ((uintptr_t)t >> 6) & (size_t)(u->f32_cap - 1);
    while (u->f32[h].src) {
        if (u->f32[h].src == t) return u->f32[h].f32;
        h = (h + 1) & (size_t)(u->f32_cap - 1);
    }
    nu_tensor *f = nu_new_tensor(u->pctx, NU_TYPE_F32, t->ndim, t->ne);
    NU_ASSERT(f && f->data);
    nu_tensor_get_f32(t, f->data);
    nu_set_name(f, "%s", t->name);
    u->f32[h] = (f32_entry){t, f};
    u->f32_n++;
    return f;
}

/* ---------------------------------------------------------------- graph builder */

typedef struct ub {
    nu_unet *u;           /* NULL when listing weights                          */
    const nu_unet_config *c;
    nu_ctx *ctx;
    nu_nn nn;
    nu_unet_weight_fn fn; /* listing mode: called per weight, no data needed    */
    void *user;
    nu_tensor *temb_act;  /* SiLU(temb) [B, time_embed_dim], shared by resnets  */
} ub;

/* Weight `fmt` with shape ne (1-D parameters as f32). */
static nu_tensor *W(ub *b, int ndim, const int64_t *ne, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static nu_tensor *W(ub *b, int ndim, const int64_t *ne, const char *fmt, ...) {
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (b->fn) {
        b->fn(name, ndim, ne, b->user);
        nu_tensor *t = nu_new_tensor(b->ctx, NU_TYPE_F32, ndim, ne); /* header only */
        nu_set_name(t, "%s", name);
        return t;
    }
    nu_tensor *t = nu_nn_weight(&b->nn, ndim, ne, "%s", name);
    return ndim == 1 || b->u->upcast ? param_f32(b->u, t) : t;
}

/* Linear (+ the LoRA branches of p.weight, if any; lora.h). */
static nu_tensor *linear(ub *b, nu_tensor *x, const char *p, int64_t in, int64_t out, bool bias) {
    nu_tensor *w = W(b, 2, (int64_t[]){out, in}, "%s.weight", p);
    nu_tensor *bb = bias ? W(b, 1, (int64_t[]){out}, "%s.bias", p) : NULL;
    return nu_lora_linear(b->nn.lora, b->ctx, "unet", p, x, nu_linear(b->ctx, x, w, bb));
}

/* Conv2d with square kernel k (+ LoCon branches). */
static nu_tensor *conv(ub *b, nu_tensor *x, const char *p, int64_t in, int64_t out, int k, int stride, int pad) {
    nu_tensor *w = W(b, 4, (int64_t[]){out, in, k, k}, "%s.weight", p);
    nu_tensor *bb = W(b, 1, (int64_t[]){out}, "%s.bias", p);
    nu_conv2d_params cp = nu_conv2d_params_init();
    cp.stride[0] = cp.stride[1] = stride;
    cp.padding[0] = cp.padding[1] = pad;
    cp.kernel[0] = cp.kernel[1] = k; /* for a matrix-form (block-quantized) weight */
    return nu_lora_conv2d(b->nn.lora, b->ctx, "unet", p, x, nu_conv2d(b->ctx, x, w, bb, &cp), stride, pad);
}

static nu_tensor *gnorm(ub *b, nu_tensor *x, const char *p, float eps) {
    int64_t C = x->ne[1];
    nu_tensor *w = W(b, 1, (int64_t[]){C}, "%s.weight", p), *bb = W(b, 1, (int64_t[]){C}, "%s.bias", p);
    return nu_group_norm(b->ctx, x, b->c->norm_groups, w, bb, eps);
}

static nu_tensor *lnorm(ub *b, nu_tensor *x, const char *p) {
    int64_t D = x->ne[x->ndim - 1];
    nu_tensor *w = W(b, 1, (int64_t[]){D}, "%s.weight", p), *bb = W(b, 1, (int64_t[]){D}, "%s.bias", p);
    return nu_layer_norm(b->ctx, x, w, bb, LAYER_NORM_EPS);
}

/* "p.s" into out (names are far shorter than the buffers; asserted). */
static void join(char *out, size_t len, const char *p, const char *s) {
    int k = snprintf(out, len, "%s.%s", p, s);
    NU_ASSERT(k >= 0 && (size_t)k < len);
}

/* ResnetBlock2D: x [B, Cin, H, W] -> [B, Cout, H, W]. */
static nu_tensor *resnet(ub *b, nu_tensor *x, const char *p, int64_t cout) {
    char n[128];
    nu_ctx *ctx = b->ctx;
    int64_t cin = x->ne[1], B = x->ne[0];
    join(n, sizeof n, p, "norm1");
    nu_tensor *h = nu_silu(ctx, gnorm(b, x, n, b->c->norm_eps));
    join(n, sizeof n, p, "conv1");
    h = conv(b, h, n, cin, cout, 3, 1, 1);
    join(n, sizeof n, p, "time_emb_proj");
    nu_tensor *e = linear(b, b->temb_act, n, b->c->time_embed_dim, cout, true); /* [B, Cout] */
    h = nu_add(ctx, h, nu_reshape(ctx, e, 4, (int64_t[]){B, cout, 1, 1}));
    join(n, sizeof n, p, "norm2");
    h = nu_silu(ctx, gnorm(b, h, n, b->c->norm_eps));
    join(n, sizeof n, p, "conv2");
    h = conv(b, h, n, cout, cout, 3, 1, 1);
    if (cin == cout) return nu_add(ctx, h, x);
    join(n, sizeof n, p, "conv_shortcut");
    /* shortcut first (a + b == b + a exactly): the graph's depth-first order then computes the
     * 1x1 conv before the main branch, so x (e.g. the [2, 960, 64, 64] concat of the up path)
     * dies after norm1 instead of living through the whole block */
    return nu_add(ctx, conv(b, x, n, cin, cout, 1, 1, 0), h);
}

/* [B, T, NH*HD] -> [B, NH, T, HD] as a strided view (the attention kernel reads strides). */
static nu_tensor *split_heads(nu_ctx *ctx, nu_tensor *x, int heads) {
    int64_t B = x->ne[0], T = x->ne[1], D = x->ne[2];
    return nu_permute(ctx, nu_reshape(ctx, x, 4, (int64_t[]){B, T, heads, D / heads}), (int[]){0, 2, 1, 3});
}

/* diffusers Attention (AttnProcessor): x [B, T, D], kv [B, S, Dkv] or NULL (self) -> [B, T, D]. */
static nu_tensor *attention(ub *b, nu_tensor *x, nu_tensor *kv, const char *p, int heads) {
    char n[128];
    nu_ctx *ctx = b->ctx;
    int64_t D = x->ne[2];
    nu_tensor *src = kv ? kv : x;
    int64_t Dkv = src->ne[2];
    join(n, sizeof n, p, "to_q");
    nu_tensor *q = linear(b, x, n, D, D, false);
    join(n, sizeof n, p, "to_k");
    nu_tensor *k = linear(b, src, n, Dkv, D, false);
    join(n, sizeof n, p, "to_v");
    nu_tensor *v = linear(b, src, n, Dkv, D, false);
    nu_tensor *o = nu_attention(ctx, split_heads(ctx, q, heads), split_heads(ctx, k, heads),
                                split_heads(ctx, v, heads), NULL, false, 0.0f);           /* [B, NH, T, HD] */
    o = nu_contiguous(ctx, nu_permute(ctx, o, (int[]){0, 2, 1, 3}));                 /* [B, T, NH, HD] */
    o = nu_reshape(ctx, o, 3, (int64_t[]){x->ne[0], x->ne[1], D});
    join(n, sizeof n, p, "to_out.0");
    return linear(b, o, n, D, D, true);
}

/* Rows per feed-forward chunk: all if the [rows, 2F] projection is small (<= 16 MB), else about
 * 16 MB per chunk, a multiple of 64 rows. */
static int64_t ff_chunk_bytes = 16 << 20;

void nu_unet_set_ff_chunk_bytes(size_t bytes) { ff_chunk_bytes = bytes ? (int64_t)bytes : 16 << 20; }

static int64_t ff_chunk_rows(int64_t rows, int64_t F) {
    const int64_t budget = ff_chunk_bytes;
    int64_t bytes = rows * 2 * F * (int64_t)sizeof(float);
    if (bytes <= budget) return rows;
    int64_t n = (bytes + budget - 1) / budget, r = (rows + n - 1) / n;
    return r >= 64 ? (r + 63) / 64 * 64 : r;
}

/* BasicTransformerBlock on tokens h [B, T, D]. */
static nu_tensor *basic_block(ub *b, nu_tensor *h, nu_tensor *context, const char *p, int heads) {
    char n[128], m[128];
    nu_ctx *ctx = b->ctx;
    int64_t D = h->ne[2], F = 4 * D; /* FeedForward mult 4 */
    join(n, sizeof n, p, "norm1");
    join(m, sizeof m, p, "attn1");
    h = nu_add(ctx, attention(b, lnorm(b, h, n), NULL, m, heads), h);
    join(n, sizeof n, p, "norm2");
    join(m, sizeof m, p, "attn2");
    h = nu_add(ctx, attention(b, lnorm(b, h, n), context, m, heads), h);
    join(n, sizeof n, p, "norm3");
    nu_tensor *x = lnorm(b, h, n);
    /* FeedForward with GEGLU (diffusers activations.GEGLU): proj -> [rows, 2F]; hidden, gate =
     * chunk(2, -1); net.2(hidden * gelu(gate)). Rows are processed in chunks (as diffusers'
     * feed-forward chunking) so that the [rows, 2F] intermediates stay small: at 512x512, batch 2
     * and 320 channels one unchunked proj output is 80 MB, plus as much for its bias add. */
    int64_t rows = h->ne[0] * h->ne[1];
    nu_tensor *x2 = nu_reshape(ctx, x, 2, (int64_t[]){rows, D}), *out = NULL;
    int64_t chunk = ff_chunk_rows(rows, F);
    join(n, sizeof n, p, "ff.net.0.proj");
    join(m, sizeof m, p, "ff.net.2");
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t r1 = r0 + chunk < rows ? r0 + chunk : rows;
        nu_tensor *xc = r0 == 0 && r1 == rows ? x2 : nu_slice(ctx, x2, 0, r0, r1);
        nu_tensor *pg = linear(b, xc, n, D, 2 * F, true);
        nu_tensor *hid = nu_slice(ctx, pg, 1, 0, F), *gate = nu_slice(ctx, pg, 1, F, 2 * F);
        nu_tensor *y = linear(b, nu_mul(ctx, hid, nu_gelu(ctx, gate)), m, F, D, true);
        out = out ? nu_concat(ctx, out, y, 0) : y;
    }
    return nu_add(ctx, nu_reshape(ctx, out, 3, h->ne), h);
}

/* Transformer2DModel: x [B, C, H, W] -> [B, C, H, W]. */
static nu_tensor *transformer(ub *b, nu_tensor *x, nu_tensor *context, const char *p, int heads, int depth) {
    char n[128];
    nu_ctx *ctx = b->ctx;
    int64_t B = x->ne[0], C = x->ne[1], H = x->ne[2], Wd = x->ne[3];
    join(n, sizeof n, p, "norm");
    nu_tensor *h = nu_nn_to_tokens(ctx, gnorm(b, x, n, TRANSFORMER_GN_EPS)); /* [B, T, C] */
    /* proj_in/out: Linear [C, C], or conv 1x1 [C, C, 1, 1] which is the same Linear on tokens */
    nu_tensor *w_in, *w_out;
    if (b->c->linear_proj) {
        w_in = W(b, 2, (int64_t[]){C, C}, "%s.proj_in.weight", p);
    } else {
        w_in = W(b, 4, (int64_t[]){C, C, 1, 1}, "%s.proj_in.weight", p);
        w_in = nu_reshape(ctx, w_in, 2, (int64_t[]){C, C});
    }
    join(n, sizeof n, p, "proj_in");
    nu_tensor *t = h;
    h = nu_lora_linear(b->nn.lora, ctx, "unet", n, t, nu_linear(ctx, t, w_in, W(b, 1, (int64_t[]){C}, "%s.bias", n)));
    for (int d = 0; d < depth; d++) {
        NU_ASSERT(snprintf(n, sizeof n, "%s.transformer_blocks.%d", p, d) < (int)sizeof n);
        h = basic_block(b, h, context, n, heads);
    }
    if (b->c->linear_proj) {
        w_out = W(b, 2, (int64_t[]){C, C}, "%s.proj_out.weight", p);
    } else {
        w_out = W(b, 4, (int64_t[]){C, C, 1, 1}, "%s.proj_out.weight", p);
        w_out = nu_reshape(ctx, w_out, 2, (int64_t[]){C, C});
    }
    join(n, sizeof n, p, "proj_out");
    t = h;
    h = nu_lora_linear(b->nn.lora, ctx, "unet", n, t, nu_linear(ctx, t, w_out, W(b, 1, (int64_t[]){C}, "%s.bias", n)));
    (void)B;
    return nu_add(ctx, nu_nn_from_tokens(ctx, h, H, Wd), x);
}

/* Upsample2D: nearest to the skip's size (2x, cropped for odd sizes as F.interpolate(size=) does:
 * nearest from n to 2n-1 picks floor(i*n/(2n-1)) = floor(i/2)), then conv 3x3. */
static nu_tensor *upsample(ub *b, nu_tensor *h, const char *p, int64_t Ht, int64_t Wt) {
    nu_tensor *u = nu_upsample_nearest(b->ctx, h, 2);
    if (u->ne[2] != Ht || u->ne[3] != Wt) {
        u = nu_slice(b->ctx, u, 2, 0, Ht);
        u = nu_contiguous(b->ctx, nu_slice(b->ctx, u, 3, 0, Wt));
    }
    int64_t C = h->ne[1];
    return conv(b, u, p, C, C, 3, 1, 1);
}

static nu_tensor *build(ub *b, nu_tensor *x, nu_tensor *t, nu_tensor *context) {
    const nu_unet_config *c = b->c;
    nu_ctx *ctx = b->ctx;
    int n = c->n_levels, lpb = c->layers_per_block;
    char p[128];
    /* time embedding: Timesteps(C0, flip_sin_to_cos=True, shift=0) -> TimestepEmbedding */
    nu_tensor *temb = nu_timestep_embedding(ctx, t, c->channels[0], true, 0.0f);
    temb = nu_silu(ctx, linear(b, temb, "time_embedding.linear_1", c->channels[0], c->time_embed_dim, true));
    temb = linear(b, temb, "time_embedding.linear_2", c->time_embed_dim, c->time_embed_dim, true);
    b->temb_act = nu_silu(ctx, temb);

    nu_tensor *skips[MAX_SKIPS];
    int ns = 0;
    nu_tensor *h = conv(b, x, "conv_in", c->in_channels, c->channels[0], 3, 1, 1);
    skips[ns++] = h;
    for (int L = 0; L < n; L++) {
        for (int j = 0; j < lpb; j++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", L, j);
            h = resnet(b, h, p, c->channels[L]);
            if (c->down_attn[L]) {
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", L, j);
                h = transformer(b, h, context, p, c->heads[L], c->depth[L]);
            }
            skips[ns++] = h;
        }
        if (L < n - 1) {
            snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0.conv", L);
            h = conv(b, h, p, c->channels[L], c->channels[L], 3, 2, 1);
            skips[ns++] = h;
        }
    }
    h = resnet(b, h, "mid_block.resnets.0", c->channels[n - 1]);
    if (c->mid_attn) h = transformer(b, h, context, "mid_block.attentions.0", c->mid_heads, c->mid_depth);
    h = resnet(b, h, "mid_block.resnets.1", c->channels[n - 1]);
    for (int i = 0; i < n; i++) {
        int L = n - 1 - i;
        for (int j = 0; j <= lpb; j++) {
            h = nu_concat(ctx, h, skips[--ns], 1);
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, j);
            h = resnet(b, h, p, c->channels[L]);
            if (c->up_attn[L]) {
                snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, j);
                h = transformer(b, h, context, p, c->heads[L], c->depth[L]);
            }
        }
        if (i < n - 1) {
            snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0.conv", i);
            h = upsample(b, h, p, skips[ns - 1]->ne[2], skips[ns - 1]->ne[3]);
        }
    }
    NU_ASSERT(ns == 0);
    h = nu_silu(ctx, gnorm(b, h, "conv_norm_out", c->norm_eps));
    return conv(b, h, "conv_out", c->channels[0], c->out_channels, 3, 1, 1);
}

static bool shapes_ok(const nu_unet_config *c, const nu_tensor *x, const nu_tensor *t, const nu_tensor *context) {
    if (x->ndim != 4 || x->type != NU_TYPE_F32 || x->ne[1] != c->in_channels) {
        char s[96];
        nu_error(NU_ERR_INVALID_ARG, "unet: input %s, expected f32 [B, %d, H, W]", nu_shape_str(x, s, sizeof s),
                 c->in_channels);
        return false;
    }
    if (t->ndim != 1 || t->ne[0] != x->ne[0]) {
        nu_error(NU_ERR_INVALID_ARG, "unet: timesteps must be [B] = [%lld]", (long long)x->ne[0]);
        return false;
    }
    if (context->ndim != 3 || context->ne[0] != x->ne[0] || context->ne[2] != c->context_dim) {
        char s[96];
        nu_error(NU_ERR_INVALID_ARG, "unet: context %s, expected [%lld, S, %d]", nu_shape_str(context, s, sizeof s),
                 (long long)x->ne[0], c->context_dim);
        return false;
    }
    return true;
}

static nu_tensor *build_checked(nu_unet *u, nu_ctx *ctx, nu_tensor *x, nu_tensor *t, nu_tensor *context,
                                nu_status *st) {
    *st = NU_ERR_INVALID_ARG;
    if (!shapes_ok(&u->cfg, x, t, context)) return NULL;
    ub b = {.u = u, .c = &u->cfg, .ctx = ctx};
    nu_nn_init(&b.nn, ctx, u->w, "unet");
    b.nn.lora = u->lora;
    nu_tensor *y = build(&b, x, t, context);
    *st = nu_nn_status(&b.nn);
    return *st == NU_OK ? y : NULL;
}

nu_tensor *nu_unet_build(nu_unet *u, nu_ctx *ctx, nu_tensor *x, nu_tensor *t, nu_tensor *context) {
    nu_status st;
    return build_checked(u, ctx, x, t, context, &st);
}

nu_status nu_unet_weight_list(const nu_unet_config *c, nu_unet_weight_fn fn, void *user) {
    nu_status s = nu_unet_config_validate(c);
    if (s != NU_OK) return s;
    nu_ctx_params cp = nu_ctx_params_init();
    cp.alloc_data = false;
    nu_ctx *ctx = nu_ctx_new(&cp);
    if (!ctx) return nu_error(NU_ERR_NOMEM, "unet: out of memory");
    int64_t side = (int64_t)1 << (c->n_levels - 1);
    nu_tensor *x = nu_new_tensor_4d(ctx, NU_TYPE_F32, 1, c->in_channels, side, side);
    nu_tensor *t = nu_new_tensor_1d(ctx, NU_TYPE_F32, 1);
    nu_tensor *cx = nu_new_tensor_3d(ctx, NU_TYPE_F32, 1, 1, c->context_dim > 0 ? c->context_dim : 1);
    ub b = {.u = NULL, .c = c, .ctx = ctx, .fn = fn, .user = user};
    build(&b, x, t, cx);
    nu_ctx_free(ctx);
    return NU_OK;
}

nu_status nu_unet_eval(nu_unet *u, nu_pool *pool, int B, int H, int W, int S, const float *x, const float *t,
                       const float *context, float *out) {
    const nu_unet_config *c = &u->cfg;
    if (B < 1 || H < 1 || W < 1 || S < 1 || B > 4096 || H > 16384 || W > 16384 || S > 65536)
        return nu_error(NU_ERR_INVALID_ARG, "unet: bad shape B=%d H=%d W=%d S=%d", B, H, W, S);
    if (!u->g || u->B != B || u->H != H || u->W != W || u->S != S) {
        drop_graph(u);
        nu_ctx_params cp = nu_ctx_params_init();
        cp.alloc_data = false;
        u->gctx = nu_ctx_new(&cp);
        if (!u->gctx) return nu_error(NU_ERR_NOMEM, "unet: out of memory");
        u->x = nu_new_tensor_4d(u->gctx, NU_TYPE_F32, B, c->in_channels, H, W);
        u->t = nu_new_tensor_1d(u->gctx, NU_TYPE_F32, B);
        u->cx = nu_new_tensor_3d(u->gctx, NU_TYPE_F32, B, S, c->context_dim);
        nu_set_input(u->x);
        nu_set_input(u->t);
        nu_set_input(u->cx);
        nu_set_name(u->x, "unet.x");
        nu_set_name(u->t, "unet.t");
        nu_set_name(u->cx, "unet.context");
        nu_status s;
        u->out = build_checked(u, u->gctx, u->x, u->t, u->cx, &s);
        if (!u->out) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", nu_last_error());
            drop_graph(u);
            return nu_error(s, "%s", msg);
        }
        u->g = nu_graph_new(u->gctx);
        /* inputs first: their data is written before the compute, so they must be placed before
         * any node can use (and release) memory (the allocator places leaves where first met) */
        nu_graph_expand(u->g, u->x);
        nu_graph_expand(u->g, u->t);
        nu_graph_expand(u->g, u->cx);
        nu_graph_expand(u->g, u->out);
        s = nu_graph_alloc(u->g);
        if (s != NU_OK) {
            drop_graph(u);
            return s;
        }
        u->B = B;
        u->H = H;
        u->W = W;
        u->S = S;
    }
    memcpy(u->x->data, x, sizeof(float) * (size_t)nu_nelements(u->x));
    memcpy(u->t->data, t, sizeof(float) * (size_t)B);
    memcpy(u->cx->data, context, sizeof(float) * (size_t)nu_nelements(u->cx));
    nu_status s = nu_graph_compute(u->g, pool);
    if (s != NU_OK) return s;
    nu_tensor_get_f32(u->out, out);
    return NU_OK;
}

/* ---------------------------------------------------------------- loading */

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The weights file of a diffusers unet folder, or NULL. */
static bool unet_dir_weights(const char *dir, char *out, size_t len) {
    static const char *const names[] = {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (snprintf(out, len, "%s/%s", dir, names[i]) >= (int)len) return false;
        if (is_file(out)) return true;
    }
    return false;
}

/* dir/name as a directory: itself, or the target of a symbolic link stored as a small text file
 * (a checkout without symlink support, as ../shared/reference/sd1_tiny/diffusers_inpaint/unet). */
static bool sub_dir(const char *dir, const char *name, char *out, size_t len) {
    if (snprintf(out, len, "%s/%s", dir, name) >= (int)len) return false;
    if (is_dir(out)) return true;
    if (!is_file(out)) return false;
    FILE *f = fopen(out, "rb");
    if (!f) return false;
    char target[1024];
    size_t n = fread(target, 1, sizeof target - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    if (more || n == 0) return false;
    target[n] = 0;
    while (n && (target[n - 1] == '\n' || target[n - 1] == '\r' || target[n - 1] == ' ')) target[--n] = 0;
    if (!n || memchr(target, 0, n) || strchr(target, '\n')) return false;
    if (target[0] == '/') {
        if (snprintf(out, len, "%s", target) >= (int)len) return false;
    } else if (snprintf(out, len, "%s/%s", dir, target) >= (int)len) {
        return false;
    }
    return is_dir(out);
}

nu_status nu_unet_load(const char *path, const nu_unet_load_params *p, nu_unet **out) {
    *out = NULL;
    nu_unet_load_params dp = nu_unet_load_params_init();
    if (!p) p = &dp;
    char file[4200], cfg_path[4200] = "";
    if (strlen(path) > 4000 || (p->config_path && strlen(p->config_path) > 4000))
        return nu_error(NU_ERR_INVALID_ARG, "unet: path too long");
    /* f32: all weights (convs too) get f32 copies in the model (param_f32); other types convert
     * Linear matrices in the weights store */
    nu_type mtype = p->matrix_type == NU_TYPE_F32 ? NU_TYPE_COUNT : p->matrix_type;
    nu_weights *w = nu_weights_new();
    if (!w) return nu_error(NU_ERR_NOMEM, "unet: out of memory");
    nu_weights_set_matrix_type(w, mtype);
    nu_status s;
    if (is_dir(path)) {
        char dir[4200];
        if (!sub_dir(path, "unet", dir, sizeof dir) || !unet_dir_weights(dir, file, sizeof file)) {
            snprintf(dir, sizeof dir, "%s", path);
            if (!unet_dir_weights(dir, file, sizeof file)) {
                nu_weights_free(w);
                snprintf(file, sizeof file, "%s/unet/diffusion_pytorch_model.bin", path);
                if (is_file(file))
                    return nu_error(NU_ERR_UNSUPPORTED, "%s: the UNet is in PyTorch .bin format; convert it to "
                                                        "safetensors", path);
                return nu_error(NU_ERR_NOT_FOUND, "%s: not a diffusers folder (no unet/diffusion_pytorch_model."
                                                  "safetensors)", path);
            }
        }
        if (snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir) >= (int)sizeof cfg_path) cfg_path[0] = 0;
        if (cfg_path[0] && !is_file(cfg_path)) cfg_path[0] = 0;
        s = nu_weights_add_file(w, file, NULL);
    } else {
        snprintf(file, sizeof file, "%s", path);
        s = nu_weights_add_file(w, file, "model.diffusion_model.");
        if (s == NU_OK && nu_weights_count(w) == 0) { /* a bare UNet file */
            nu_weights_free(w);
            w = nu_weights_new();
            if (!w) return nu_error(NU_ERR_NOMEM, "unet: out of memory");
            nu_weights_set_matrix_type(w, mtype);
            s = nu_weights_add_file(w, file, NULL);
        }
    }
    if (s != NU_OK) {
        nu_weights_free(w);
        return s;
    }
    if (p->config_path) snprintf(cfg_path, sizeof cfg_path, "%s", p->config_path);
    nu_unet_config c;
    bool have_cfg = cfg_path[0] != 0;
    if (have_cfg && (s = nu_unet_config_from_json(cfg_path, &c)) != NU_OK) {
        nu_weights_free(w);
        return s;
    }
    if (nu_unet_names_are_ldm(w)) {
        int lpb, levels;
        if (have_cfg) {
            lpb = c.layers_per_block;
            levels = c.n_levels;
        } else if ((s = nu_unet_ldm_layout(w, &lpb, &levels)) != NU_OK) {
            nu_weights_free(w);
            return nu_error(s, "%s: %s", file, nu_last_error());
        }
        if ((s = nu_unet_rename_ldm(w, lpb, levels)) != NU_OK) {
            nu_weights_free(w);
            return nu_error(s, "%s: %s", file, nu_last_error());
        }
    } else if (!nu_weights_get(w, "conv_in.weight")) {
        nu_weights_free(w);
        return nu_error(NU_ERR_NOT_FOUND, "%s: no Stable Diffusion UNet tensors (expected model.diffusion_model.* or "
                                          "conv_in.weight)", file);
    }
    if (!have_cfg && (s = nu_unet_config_detect(w, &c)) != NU_OK) {
        nu_weights_free(w);
        return nu_error(s, "%s: %s", file, nu_last_error());
    }
    s = nu_unet_new(w, &c, out);
    if (s == NU_OK) (*out)->upcast = p->matrix_type == NU_TYPE_F32;
    return s;
}

/* ---------------------------------------------------------------- benchmark */

nu_unet_bench_params nu_unet_bench_params_init(void) {
    nu_unet_bench_params p = {"sd1.5", NU_TYPE_F16, 512, 512, 2, 77, 1, NULL};
    return p;
}

typedef struct wspec {
    char name[128];
    int ndim;
    int64_t ne[4];
    nu_type type;
    uint64_t offset, nbytes;
} wspec;

typedef struct wlist {
    wspec *v;
    int n, cap;
    nu_type matrix_type;
} wlist;

static void collect(const char *name, int ndim, const int64_t *ne, void *user) {
    wlist *l = user;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->v = realloc(l->v, sizeof(wspec) * (size_t)l->cap);
        NU_ASSERT(l->v);
    }
    wspec *s = &l->v[l->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = ndim;
    memcpy(s->ne, ne, sizeof(int64_t) * (size_t)ndim);
    /* as --type leaves them after loading (nu_weights_set_matrix_type): 1-D parameters f32 (a
     * few MB), weights whose rows are whole blocks in the requested type (conv weights of a
     * block type in matrix form [O, I*KH*KW]), the others (conv_in's 4*9 rows) in f16 */
    nu_type t = l->matrix_type;
    int64_t row = 1;
    for (int d = 1; d < ndim; d++) row *= ne[d];
    if (ndim == 1) t = NU_TYPE_F32;
    else if (nu_type_info(t)->is_quant && row % 32) t = NU_TYPE_F16;
    else if (nu_type_info(t)->is_quant && ndim == 4) {
        s->ndim = ndim = 2;
        s->ne[1] = ne[1] * ne[2] * ne[3];
        ne = s->ne;
    }
    s->type = t;
    int64_t ne_all = 1;
    for (int d = 0; d < ndim; d++) ne_all *= ne[d];
    s->nbytes = nu_row_size(t, ne[ndim - 1]) * (uint64_t)(ne_all / ne[ndim - 1]);
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct obuf {
    int fd;
    char *buf;
    size_t n, cap;
    bool err;
} obuf;

static void out_flush(obuf *o) {
    size_t off = 0;
    while (off < o->n && !o->err) {
        ssize_t k = write(o->fd, o->buf + off, o->n - off);
        if (k <= 0) o->err = true;
        else off += (size_t)k;
    }
    o->n = 0;
}

static void out_put(obuf *o, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        if (o->n == o->cap) out_flush(o);
        size_t k = o->cap - o->n < n ? o->cap - o->n : n;
        memcpy(o->buf + o->n, c, k);
        o->n += k;
        c += k;
        n -= k;
    }
}

static void out_u32(obuf *o, uint32_t v) { out_put(o, &v, 4); }
static void out_u64(obuf *o, uint64_t v) { out_put(o, &v, 8); }
static void out_pad(obuf *o, uint64_t *pos, uint64_t align) {
    static const char zeros[64];
    uint64_t pad = (align - *pos % align) % align;
    out_put(o, zeros, pad);
    *pos += pad;
}

static uint32_t ggml_id(nu_type t) {
    switch (t) {
    case NU_TYPE_F32: return 0;
    case NU_TYPE_F16: return 1;
    case NU_TYPE_Q4_0: return 2;
    case NU_TYPE_Q8_0: return 8;
    default: return 0;
    }
}

/* Writes a GGUF v3 file with random weights to fd (little-endian host). */
static nu_status write_random_gguf(int fd, wlist *l) {
    obuf o = {fd, malloc(1u << 22), 0, 1u << 22, false};
    if (!o.buf) return nu_error(NU_ERR_NOMEM, "bench: out of memory");
    uint64_t pos = 0, data = 0;
    for (int i = 0; i < l->n; i++) {
        data = (data + 31) & ~(uint64_t)31;
        l->v[i].offset = data;
        data += l->v[i].nbytes;
    }
    out_put(&o, "GGUF", 4);
    out_u32(&o, 3);
    out_u64(&o, (uint64_t)l->n);
    out_u64(&o, 0);
    pos = 24;
    for (int i = 0; i < l->n; i++) {
        wspec *s = &l->v[i];
        uint64_t len = strlen(s->name);
        out_u64(&o, len);
        out_put(&o, s->name, len);
        out_u32(&o, (uint32_t)s->ndim);
        for (int d = s->ndim - 1; d >= 0; d--) out_u64(&o, (uint64_t)s->ne[d]); /* innermost first */
        out_u32(&o, ggml_id(s->type));
        out_u64(&o, s->offset);
        pos += 8 + len + 4 + 8 * (uint64_t)s->ndim + 4 + 8;
    }
    out_pad(&o, &pos, 32);
    uint64_t seed = 12345, dpos = 0;
    int64_t rowcap = 0;
    float *row = NULL;
    void *enc = NULL;
    for (int i = 0; i < l->n && !o.err; i++) {
        wspec *s = &l->v[i];
        while (dpos < s->offset) {
            out_put(&o, "", 1);
            dpos++;
        }
        int64_t K = s->ne[s->ndim - 1], rows = 1, fan_in = 1;
        for (int d = 0; d < s->ndim - 1; d++) rows *= s->ne[d];
        for (int d = 1; d < s->ndim; d++) fan_in *= s->ne[d];
        if (K > rowcap) {
            rowcap = K;
            free(row);
            free(enc);
            row = malloc(sizeof(float) * (size_t)K);
            enc = malloc(sizeof(float) * (size_t)K);
            NU_ASSERT(row && enc);
        }
        size_t nl = strlen(s->name);
        bool is_weight_1d = s->ndim == 1 && nl > 7 && !strcmp(s->name + nl - 7, ".weight");
        /* PyTorch's default init range (kaiming_uniform a=sqrt(5)): U(-1/sqrt(fan_in), ..);
         * norm scales 1 +- 0.1, biases +- 0.02. Values are drawn from 4096 evenly spaced levels
         * (a table per tensor) so that making 860M weights takes about a second. */
        float scale = s->ndim == 1 ? (is_weight_1d ? 0.1f : 0.02f) : 1.0f / sqrtf((float)fan_in);
        float center = is_weight_1d ? 1.0f : 0.0f;
        float levels[4096];
        uint16_t levels16[4096];
        for (int q = 0; q < 4096; q++) {
            levels[q] = center + scale * ((float)q * (2.0f / 4095.0f) - 1.0f);
            levels16[q] = nu_f32_to_f16(levels[q]);
        }
        size_t rb = nu_row_size(s->type, K);
        uint64_t bits = 0;
        int nbits = 0;
#define DRAW12() (nbits < 12 ? (bits = rng_next(&seed), nbits = 64) : 0, nbits -= 12, (int)((bits >> nbits) & 4095))
        for (int64_t r = 0; r < rows; r++) {
            if (s->type == NU_TYPE_F32) {
                for (int64_t k = 0; k < K; k++) ((float *)enc)[k] = levels[DRAW12()];
            } else if (s->type == NU_TYPE_F16) {
                for (int64_t k = 0; k < K; k++) ((uint16_t *)enc)[k] = levels16[DRAW12()];
            } else if (s->type == NU_TYPE_Q8_0) { /* blocks: f16 d, int8 q[32]; x = q * d */
                uint8_t *blk = enc;
                uint16_t d = nu_f32_to_f16(scale / 127.0f);
                for (int64_t k = 0; k < K; k += 32, blk += 34) {
                    memcpy(blk, &d, 2);
                    for (int q = 0; q < 32; q++) blk[2 + q] = (uint8_t)(int8_t)(DRAW12() % 255 - 127);
                }
            } else {
                for (int64_t k = 0; k < K; k++) row[k] = levels[DRAW12()];
                nu_row_from_f32(s->type, row, enc, K);
            }
            out_put(&o, enc, rb);
        }
#undef DRAW12
        dpos += s->nbytes;
    }
    out_flush(&o);
    free(row);
    free(enc);
    free(o.buf);
    return o.err ? nu_error(NU_ERR_IO, "bench: cannot write the random weights") : NU_OK;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* FLOPs of a graph's GEMM-like nodes (convolutions, matmuls, attention); norms and elementwise
 * ops add a few percent and are not counted. */
static double graph_flops(const nu_graph *g) {
    double fl = 0;
    for (int i = 0; i < nu_graph_n_nodes(g); i++) {
        const nu_tensor *t = nu_graph_node(g, i);
        if (t->op == NU_OP_CONV2D) { /* 2 * out elements * Cin/groups * KH * KW */
            const nu_tensor *w = t->src[1]; /* [O, Cg, KH, KW] or matrix form [O, Cg*KH*KW] */
            fl += 2.0 * (double)nu_nelements(t) * (double)(nu_nelements(w) / w->ne[0]);
        } else if (t->op == NU_OP_MATMUL) { /* 2 * out elements * K */
            const nu_tensor *a = t->src[0];
            fl += 2.0 * (double)nu_nelements(t) * (double)(t->params[0] ? a->ne[a->ndim - 2] : a->ne[a->ndim - 1]);
        } else if (t->op == NU_OP_ATTENTION) { /* QK^T and PV: 4 * B * NH * Tq * Tk * HD */
            const nu_tensor *k = t->src[1];
            fl += 4.0 * (double)nu_nelements(t) * (double)k->ne[2];
        }
    }
    return fl;
}

nu_status nu_unet_bench_step(const nu_unet_bench_params *p, nu_unet_bench_result *r) {
    memset(r, 0, sizeof *r);
    nu_unet_config c;
    if (!p->arch || !strcmp(p->arch, "sd1.5") || !strcmp(p->arch, "sd1")) nu_unet_config_sd15(&c);
    else if (!strcmp(p->arch, "sd2")) nu_unet_config_sd2(&c);
    else return nu_error(NU_ERR_INVALID_ARG, "bench: unknown UNet architecture '%s' (sd1.5, sd2)", p->arch);
    if (p->weight_type != NU_TYPE_F32 && p->weight_type != NU_TYPE_F16 && p->weight_type != NU_TYPE_BF16 &&
        !nu_type_info(p->weight_type)->is_quant)
        return nu_error(NU_ERR_INVALID_ARG, "bench: weight type %s", nu_type_name(p->weight_type));
    if (p->width < 8 || p->height < 8 || p->width % 8 || p->height % 8 || p->batch < 1 || p->context_len < 1 || !p->pool)
        return nu_error(NU_ERR_INVALID_ARG, "bench: bad size %dx%d / batch %d", p->width, p->height, p->batch);
    double t0 = now_s();
    wlist l = {.matrix_type = p->weight_type};
    nu_status s = nu_unet_weight_list(&c, collect, &l);
    if (s != NU_OK) return s;
    for (int i = 0; i < l.n; i++) {
        int64_t e = 1;
        for (int d = 0; d < l.v[i].ndim; d++) e *= l.v[i].ne[d];
        r->n_params += e;
        r->weight_bytes += l.v[i].nbytes;
    }
    /* an anonymous in-memory file: mapped (and paged in) exactly like a checkpoint on disk */
    int fd = memfd_create("nuance-bench-unet", 0);
    if (fd < 0) {
        free(l.v);
        return nu_error(NU_ERR_IO, "bench: memfd_create failed");
    }
    s = write_random_gguf(fd, &l);
    free(l.v);
    nu_weights *w = NULL;
    if (s == NU_OK) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        w = nu_weights_new();
        s = w ? nu_weights_add_file(w, path, NULL) : nu_error(NU_ERR_NOMEM, "bench: out of memory");
    }
    close(fd);
    if (s != NU_OK) {
        nu_weights_free(w);
        return s;
    }
    nu_unet *u;
    if ((s = nu_unet_new(w, &c, &u)) != NU_OK) return s;
    r->setup_seconds = now_s() - t0;

    int B = p->batch, H = p->height / 8, Wd = p->width / 8, S = p->context_len;
    size_t nx = (size_t)B * 4 * H * Wd, nc = (size_t)B * S * c.context_dim;
    float *x = malloc(sizeof(float) * nx), *cx = malloc(sizeof(float) * nc), *o = malloc(sizeof(float) * nx);
    float *t = malloc(sizeof(float) * (size_t)B), *guided = malloc(sizeof(float) * nx / (size_t)B);
    double *times = malloc(sizeof(double) * (size_t)(p->runs > 0 ? p->runs : 1));
    NU_ASSERT(x && cx && o && t && guided && times);
    uint64_t seed = 777;
    for (size_t i = 0; i < nx; i++) x[i] = (float)((double)(rng_next(&seed) >> 11) / 9007199254740992.0 * 2 - 1);
    for (size_t i = 0; i < nc; i++) cx[i] = (float)((double)(rng_next(&seed) >> 11) / 9007199254740992.0 * 2 - 1);
    for (int i = 0; i < B; i++) t[i] = 500.0f;
    int runs = p->runs > 0 ? p->runs : 1;
    for (int it = 0; it <= runs && s == NU_OK; it++) {
        double ts = now_s();
        s = nu_unet_eval(u, p->pool, B, H, Wd, S, x, t, cx, o);
        /* classifier-free guidance: eps = u + 7.5 (c - u) over the batch halves */
        size_t half = nx / (size_t)B;
        if (B >= 2)
            for (size_t i = 0; i < half; i++) guided[i] = o[i] + 7.5f * (o[half + i] - o[i]);
        double dt = now_s() - ts;
        if (it == 0) r->first_seconds = dt;
        else times[it - 1] = dt;
    }
    if (s == NU_OK) {
        qsort(times, (size_t)runs, sizeof(double), cmp_d);
        r->seconds = times[runs / 2];
        r->activation_bytes = nu_unet_activation_bytes(u);
        r->liveness_bytes = u->g ? nu_graph_liveness_bound(u->g) : 0;
        r->gflop = u->g ? graph_flops(u->g) * 1e-9 : 0;
    }
    free(x);
    free(cx);
    free(o);
    free(t);
    free(guided);
    free(times);
    nu_unet_free(u);
    return s;
}
