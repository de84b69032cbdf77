/*
 * pixel_unet.c — the pixel-space UNet of `nuance train`: diffusers v0.27.2 UNet2DModel
 * (models/unets/unet_2d.py) with positional time embedding, an optional class embedding and
 * DownBlock2D / AttnDownBlock2D, UNetMidBlock2D, UpBlock2D / AttnUpBlock2D blocks
 * (unet_2d_blocks.py), ResnetBlock2D (resnet.py, time_embedding_norm "default") and Attention
 * with a group norm and residual connection (attention_processor.py, AttnProcessor2_0).
 * Parameter names are UNet2DModel's state_dict keys.
 * Tested by tests/test_gen_models.c (one training step's loss and every gradient, and a 20-step
 * AdamW trajectory, against scripts/fixtures_gen_models.py).
 */
#include <stdio.h>

#include "models/gen_model.h"

nu_status nu_gen_unet_check(const nu_gen_config *c) {
    if (c->n_levels < 1 || c->n_levels > NU_GEN_MAX_LEVELS)
        return nu_error(NU_ERR_INVALID_ARG, "unet: %d levels (block_out_channels entries), expected 1 to %d", c->n_levels,
                        NU_GEN_MAX_LEVELS);
    if (c->layers_per_block < 1 || c->layers_per_block > 16)
        return nu_error(NU_ERR_INVALID_ARG, "unet: layers_per_block %d outside [1, 16]", c->layers_per_block);
    if (c->norm_num_groups < 1) return nu_error(NU_ERR_INVALID_ARG, "unet: norm_num_groups %d < 1", c->norm_num_groups);
    int G = c->norm_num_groups, L = c->n_levels;
    for (int i = 0; i < L; i++) {
        int ch = c->block_out_channels[i];
        if (ch < 1 || ch > 65536) return nu_error(NU_ERR_INVALID_ARG, "unet: block_out_channels[%d] = %d", i, ch);
        if (ch % G)
            return nu_error(NU_ERR_INVALID_ARG, "unet: norm_num_groups %d does not divide block_out_channels[%d] = %d", G,
                            i, ch);
        if ((c->attn_levels[i] || (i == L - 1 && c->mid_attention)) && ch % c->attention_head_dim)
            return nu_error(NU_ERR_INVALID_ARG,
                            "unet: attention_head_dim %d does not divide the %d channels of attention at level %d",
                            c->attention_head_dim, ch, i);
    }
    /* up-path resnets see concatenated channels: (prev or out) + (skip) */
    for (int i = 0; i < L; i++) {
        int out = c->block_out_channels[L - 1 - i];
        int prev = c->block_out_channels[L - 1 - (i ? i - 1 : 0)];
        int in = c->block_out_channels[L - 1 - (i + 1 < L ? i + 1 : L - 1)];
        for (int j = 0; j <= c->layers_per_block; j++) {
            int cin = (j == 0 ? prev : out) + (j == c->layers_per_block ? in : out);
            if (cin % G)
                return nu_error(NU_ERR_INVALID_ARG,
                                "unet: norm_num_groups %d does not divide the %d channels of up_blocks.%d.resnets.%d.norm1",
                                G, cin, i, j);
        }
    }
    int f = 1 << (L - 1);
    if (c->sample_size % f)
        return nu_error(NU_ERR_INVALID_ARG, "unet: sample_size %d is not divisible by 2^(levels-1) = %d", c->sample_size, f);
    if (c->num_classes < 0) return nu_error(NU_ERR_INVALID_ARG, "unet: num_classes %d < 0", c->num_classes);
    return NU_OK;
}

typedef struct unet_b {
    nu_gen_model *m;
    nu_ctx *ctx;
    nu_tensor *temb_act; /* silu(emb) [B, TE], shared by every resnet's time_emb_proj */
    int64_t TE;
    int G;
    float eps;
} unet_b;

/* ResnetBlock2D: h = conv1(silu(norm1(x))) + time_emb_proj(silu(emb))[:, :, None, None];
 * h = conv2(dropout(silu(norm2(h)))); out = shortcut(x) + h (output_scale_factor 1). */
static nu_tensor *resnet(unet_b *u, nu_tensor *x, const char *p, int64_t cin, int64_t cout) {
    char nm[NU_MAX_NAME];
    nu_gen_model *m = u->m;
    nu_ctx *ctx = u->ctx;
    nu_tensor *h = nu_silu(ctx, nu_gen_group_norm(m, ctx, x, nu_gen_name(nm, p, "norm1"), u->G, cin, u->eps));
    h = nu_gen_conv(m, ctx, h, nu_gen_name(nm, p, "conv1"), cin, cout, 3, 1, 1);
    nu_tensor *te = nu_gen_linear(m, ctx, u->temb_act, nu_gen_name(nm, p, "time_emb_proj"), u->TE, cout, GEN_INIT_TORCH,
                                  0, GEN_INIT_TORCH); /* [B, cout] */
    te = nu_reshape(ctx, te, 4, (int64_t[]){te->ne[0], cout, 1, 1});
    h = nu_add(ctx, h, te);
    h = nu_silu(ctx, nu_gen_group_norm(m, ctx, h, nu_gen_name(nm, p, "norm2"), u->G, cout, u->eps));
    h = nu_gen_conv(m, ctx, h, nu_gen_name(nm, p, "conv2"), cout, cout, 3, 1, 1);
    nu_tensor *sc = cin != cout ? nu_gen_conv(m, ctx, x, nu_gen_name(nm, p, "conv_shortcut"), cin, cout, 1, 1, 0) : x;
    return nu_add(ctx, sc, h);
}

/* Attention(C, heads = C / head_dim, norm_num_groups, residual_connection): tokens of
 * group_norm(x) -> to_q/k/v -> SDPA -> to_out.0 -> back to NCHW, + x (rescale_output_factor 1). */
static nu_tensor *attn_block(unet_b *u, nu_tensor *x, const char *p, int64_t C) {
    char nm[NU_MAX_NAME];
    nu_ctx *ctx = u->ctx;
    int64_t H = x->ne[2], W = x->ne[3];
    nu_tensor *h = nu_gen_group_norm(u->m, ctx, x, nu_gen_name(nm, p, "group_norm"), u->G, C, u->eps);
    nu_tensor *tok = nu_contiguous(ctx, nu_permute(ctx, nu_reshape(ctx, h, 3, (int64_t[]){x->ne[0], C, H * W}),
                                                   (int[]){0, 2, 1})); /* [B, HW, C] */
    nu_tensor *o = nu_gen_self_attention(u->m, ctx, tok, p, C, (int)(C / u->m->cfg.attention_head_dim), GEN_INIT_TORCH);
    o = nu_contiguous(ctx, nu_permute(ctx, o, (int[]){0, 2, 1}));   /* [B, C, HW] */
    o = nu_reshape(ctx, o, 4, (int64_t[]){x->ne[0], C, H, W});
    return nu_add(ctx, o, x);
}

nu_tensor *nu_gen_unet_forward(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, nu_tensor *t, nu_tensor *y) {
    const nu_gen_config *c = &m->cfg;
    char pre[NU_MAX_NAME];
    int L = c->n_levels, LPB = c->layers_per_block;
    const int *boc = c->block_out_channels;
    int64_t C0 = boc[0], TE = 4 * C0;
    NU_ASSERT(x->ne[2] % (1 << (L - 1)) == 0);
    unet_b u = {.m = m, .ctx = ctx, .TE = TE, .G = c->norm_num_groups, .eps = c->norm_eps};

    /* 1. time: Timesteps(C0, flip_sin_to_cos=True, freq_shift=0) -> TimestepEmbedding(C0, 4*C0):
     *    linear_1 -> SiLU -> linear_2; + class_embedding(y) (nn.Embedding(num_classes + 1, 4*C0)) */
    nu_tensor *tp = nu_timestep_embedding(ctx, t, (int)C0, true, 0.0f); /* [B, C0] */
    nu_tensor *emb = nu_gen_linear(m, ctx, tp, "time_embedding.linear_1", C0, TE, GEN_INIT_TORCH, 0, GEN_INIT_TORCH);
    emb = nu_gen_linear(m, ctx, nu_silu(ctx, emb), "time_embedding.linear_2", TE, TE, GEN_INIT_TORCH, 0, GEN_INIT_TORCH);
    if (c->num_classes > 0) {
        nu_tensor *table = nu_gen_param(m, GEN_INIT_NORMAL, 1.0f, 0, 0, 2, (int64_t[]){c->num_classes + 1, TE},
                                        "class_embedding.weight");
        emb = nu_add(ctx, emb, nu_embedding(ctx, table, y));
    }
    u.temb_act = nu_silu(ctx, emb); /* each ResnetBlock2D applies SiLU to temb before its projection */

    /* 2. conv_in; 3. down path: skips collect every resnet/attention output and downsample */
    nu_tensor *skips[NU_GEN_MAX_LEVELS * 17 + 1];
    int64_t skip_ch[NU_GEN_MAX_LEVELS * 17 + 1];
    int ns = 0;
    nu_tensor *h = nu_gen_conv(m, ctx, x, "conv_in", c->in_channels, C0, 3, 1, 1);
    skips[ns] = h, skip_ch[ns++] = C0;
    for (int i = 0; i < L; i++) {
        int64_t cin = i ? boc[i - 1] : C0, cout = boc[i];
        for (int j = 0; j < LPB; j++) {
            snprintf(pre, sizeof pre, "down_blocks.%d.resnets.%d", i, j);
            h = resnet(&u, h, pre, j ? cout : cin, cout);
            if (c->attn_levels[i]) {
                snprintf(pre, sizeof pre, "down_blocks.%d.attentions.%d", i, j);
                h = attn_block(&u, h, pre, cout);
            }
            skips[ns] = h, skip_ch[ns++] = cout;
        }
        if (i < L - 1) { /* Downsample2D(use_conv, padding 1): 3x3 stride 2 */
            snprintf(pre, sizeof pre, "down_blocks.%d.downsamplers.0.conv", i);
            h = nu_gen_conv(m, ctx, h, pre, cout, cout, 3, 2, 1);
            skips[ns] = h, skip_ch[ns++] = cout;
        }
    }

    /* 4. mid: resnet, attention (add_attention), resnet */
    int64_t cm = boc[L - 1];
    h = resnet(&u, h, "mid_block.resnets.0", cm, cm);
    if (c->mid_attention) h = attn_block(&u, h, "mid_block.attentions.0", cm);
    h = resnet(&u, h, "mid_block.resnets.1", cm, cm);

    /* 5. up path: block i at level L-1-i, layers_per_block + 1 resnets each taking the last skip */
    int64_t cprev = cm;
    for (int i = 0; i < L; i++) {
        int level = L - 1 - i;
        int64_t cout = boc[level];
        for (int j = 0; j <= LPB; j++) {
            NU_ASSERT(ns > 0);
            nu_tensor *s = skips[--ns];
            int64_t cs = skip_ch[ns], cin = j == 0 ? cprev : cout;
            h = nu_concat(ctx, h, s, 1); /* torch.cat([hidden_states, res_hidden_states], dim=1) */
            snprintf(pre, sizeof pre, "up_blocks.%d.resnets.%d", i, j);
            h = resnet(&u, h, pre, cin + cs, cout);
            if (c->attn_levels[level]) {
                snprintf(pre, sizeof pre, "up_blocks.%d.attentions.%d", i, j);
                h = attn_block(&u, h, pre, cout);
            }
        }
        if (i < L - 1) { /* Upsample2D(use_conv): nearest x2, 3x3 conv */
            snprintf(pre, sizeof pre, "up_blocks.%d.upsamplers.0.conv", i);
            h = nu_gen_conv(m, ctx, nu_upsample_nearest(ctx, h, 2), pre, cout, cout, 3, 1, 1);
        }
        cprev = cout;
    }
    NU_ASSERT(ns == 0);

    /* 6. conv_norm_out -> SiLU -> conv_out */
    h = nu_silu(ctx, nu_gen_group_norm(m, ctx, h, "conv_norm_out", c->norm_num_groups, C0, c->norm_eps));
    return nu_gen_conv(m, ctx, h, "conv_out", C0, c->out_channels > 0 ? c->out_channels : c->in_channels, 3, 1, 1);
}
