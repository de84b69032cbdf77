/*
 * dit.c — the class-conditional DiT (Peebles & Xie 2023, "Scalable Diffusion Models with
 * Transformers", adaLN-Zero blocks) in the layout of diffusers v0.27.2 Transformer2DModel with
 * norm_type "ada_norm_zero" (models/transformers/transformer_2d.py, attention.py
 * BasicTransformerBlock, normalization.py AdaLayerNormZero, embeddings.py PatchEmbed /
 * CombinedTimestepLabelEmbeddings / LabelEmbedding), as DiTPipeline runs it:
 *
 *   x [B, C, H, W] -> pos_embed.proj (conv p x p, stride p) -> tokens [B, T, D] + sin-cos(2-D)
 *   per block i:  c_i = timestep_embedder(Timesteps(256, flip, shift 1)(t)) + class_embedder(y)
 *                 (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp)
 *                     = norm1.linear(silu(c_i)).chunk(6)
 *                 x += gate_msa * attn1(LN_1e-6(x) * (1 + scale_msa) + shift_msa)
 *                 x += gate_mlp * ff(LN_eps(x) * (1 + scale_mlp) + shift_mlp)   (ff: GELU-tanh MLP)
 *   final:        shift, scale = proj_out_1(silu(c_0)).chunk(2);
 *                 proj_out_2(LN_1e-6(x) * (1 + scale) + shift) -> unpatchify [B, Cout, H, W]
 *
 * diffusers keeps one timestep/label embedder per block (converted facebookresearch checkpoints
 * hold copies of the shared one); the final layer uses block 0's. Names are the state_dict
 * keys, so ../shared/reference/dit_tiny loads as is.
 * Tested by tests/test_gen_models.c (dit_tiny forward and DiTPipeline runs; one training step
 * and a 20-step AdamW trajectory against scripts/fixtures_gen_models.py).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "models/gen_model.h"

nu_status nu_gen_dit_check(const nu_gen_config *c) {
    if (c->patch_size < 1 || c->patch_size > 64)
        return nu_error(NU_ERR_INVALID_ARG, "dit: patch_size %d outside [1, 64]", c->patch_size);
    if (c->sample_size % c->patch_size)
        return nu_error(NU_ERR_INVALID_ARG, "dit: sample_size %d is not divisible by patch_size %d", c->sample_size,
                        c->patch_size);
    if (c->num_layers < 1 || c->num_layers > 256)
        return nu_error(NU_ERR_INVALID_ARG, "dit: num_layers %d outside [1, 256]", c->num_layers);
    if (c->num_attention_heads < 1 || c->num_attention_heads > 256)
        return nu_error(NU_ERR_INVALID_ARG, "dit: num_attention_heads %d outside [1, 256]", c->num_attention_heads);
    if (c->ff_mult < 1 || c->ff_mult > 16) return nu_error(NU_ERR_INVALID_ARG, "dit: ff_mult %d outside [1, 16]", c->ff_mult);
    int64_t D = (int64_t)c->num_attention_heads * c->attention_head_dim;
    if (D > 16384)
        return nu_error(NU_ERR_INVALID_ARG, "dit: hidden size %d x %d is too large", c->num_attention_heads,
                        c->attention_head_dim);
    if (D % 4)
        return nu_error(NU_ERR_INVALID_ARG, "dit: hidden size %lld (heads x head dim) is not divisible by 4 (2-D sin-cos "
                        "positions)", (long long)D);
    return NU_OK;
}

/* get_2d_sincos_pos_embed(D, grid, base_size = grid, interpolation_scale 1) of diffusers
 * embeddings.py (= facebookresearch/DiT models.py): computed in float64 and stored as float32.
 * Token k = (row i, column j) gets [emb_1d(D/2, j) | emb_1d(D/2, i)] (np.meshgrid puts the
 * column coordinate first), emb_1d(d, pos) = [sin(pos * w) | cos(pos * w)],
 * w_k = 1 / 10000^(k / (d/2)), k < d/2. */
nu_status nu_gen_dit_init_tables(nu_gen_model *m) {
    const nu_gen_config *c = &m->cfg;
    int64_t D = (int64_t)c->num_attention_heads * c->attention_head_dim, g = c->sample_size / c->patch_size;
    m->pos_embed = nu_new_tensor_3d(m->ctx, NU_TYPE_F32, 1, g * g, D);
    if (!m->pos_embed || !m->pos_embed->data) return nu_error(NU_ERR_NOMEM, "dit: out of memory");
    nu_set_name(m->pos_embed, "pos_embed.pos_embed");
    float *pe = m->pos_embed->data;
    int64_t half = D / 2, quarter = D / 4;
    for (int64_t i = 0; i < g; i++)
        for (int64_t j = 0; j < g; j++) {
            float *row = pe + (i * g + j) * D;
            double pos[2] = {(double)j, (double)i}; /* grid[0] = w coordinate, grid[1] = h */
            for (int a = 0; a < 2; a++)
                for (int64_t k = 0; k < quarter; k++) {
                    double omega = 1.0 / pow(10000.0, (double)k / (double)quarter);
                    double v = pos[a] * omega;
                    row[a * half + k] = (float)sin(v);
                    row[a * half + quarter + k] = (float)cos(v);
                }
        }
    return NU_OK;
}

/* x [B, T, D] -> x * (1 + scale[:, None]) + shift[:, None]; shift/scale [B, D] (views of the
 * modulation output). */
static nu_tensor *modulate(nu_ctx *ctx, nu_tensor *x, nu_tensor *shift, nu_tensor *scale) {
    int64_t B = x->ne[0], D = x->ne[2];
    nu_tensor *sc = nu_reshape(ctx, nu_affine(ctx, scale, 1.0f, 1.0f), 3, (int64_t[]){B, 1, D});
    nu_tensor *sh = nu_reshape(ctx, shift, 3, (int64_t[]){B, 1, D});
    return nu_add(ctx, nu_mul(ctx, x, sc), sh);
}

static nu_tensor *chunk(nu_ctx *ctx, nu_tensor *mod, int k, int64_t D) { return nu_slice(ctx, mod, 1, k * D, (k + 1) * D); }

/* gate[:, None] * x */
static nu_tensor *gated(nu_ctx *ctx, nu_tensor *gate, nu_tensor *x) {
    return nu_mul(ctx, nu_reshape(ctx, gate, 3, (int64_t[]){x->ne[0], 1, x->ne[2]}), x);
}

/* CombinedTimestepLabelEmbeddings of block i: TimestepEmbedding(256 -> D: linear_1, SiLU,
 * linear_2) of Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1), plus the label
 * embedding_table [num_classes + 1, D] row (LabelEmbedding with its CFG row). */
static nu_tensor *cond_embed(nu_gen_model *m, nu_ctx *ctx, nu_tensor *tproj, nu_tensor *y, int i, int64_t D) {
    char p[NU_MAX_NAME];
    snprintf(p, sizeof p, "transformer_blocks.%d.norm1.emb.timestep_embedder.linear_1", i);
    nu_tensor *e = nu_gen_linear(m, ctx, tproj, p, 256, D, GEN_INIT_NORMAL, 0.02f, GEN_INIT_ZERO);
    snprintf(p, sizeof p, "transformer_blocks.%d.norm1.emb.timestep_embedder.linear_2", i);
    e = nu_gen_linear(m, ctx, nu_silu(ctx, e), p, D, D, GEN_INIT_NORMAL, 0.02f, GEN_INIT_ZERO);
    if (m->cfg.num_classes > 0) {
        nu_tensor *table = nu_gen_param(m, GEN_INIT_NORMAL, 0.02f, 0, 0, 2, (int64_t[]){m->cfg.num_classes + 1, D},
                                        "transformer_blocks.%d.norm1.emb.class_embedder.embedding_table.weight", i);
        e = nu_add(ctx, e, nu_embedding(ctx, table, y));
    }
    return e;
}

nu_tensor *nu_gen_dit_forward(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, nu_tensor *t, nu_tensor *y) {
    const nu_gen_config *c = &m->cfg;
    char p[NU_MAX_NAME];
    int64_t B = x->ne[0], C = c->in_channels, P = c->patch_size, NH = c->num_attention_heads;
    int64_t D = NH * c->attention_head_dim, g = c->sample_size / P, T = g * g, Cout = c->out_channels;
    if (Cout <= 0) Cout = C;
    NU_ASSERT(x->ne[2] == c->sample_size && x->ne[3] == c->sample_size);

    /* PatchEmbed: conv(C -> D, kernel = stride = P) -> flatten(2).transpose(1, 2) -> + pos_embed.
     * facebookresearch init: xavier_uniform on the [D, C*P*P] view, bias 0. */
    nu_tensor *pw = nu_gen_param(m, GEN_INIT_XAVIER, 0, C * P * P, D, 4, (int64_t[]){D, C, P, P}, "pos_embed.proj.weight");
    nu_tensor *pb = nu_gen_param(m, GEN_INIT_ZERO, 0, 0, 0, 1, (int64_t[]){D}, "pos_embed.proj.bias");
    nu_conv2d_params cp = nu_conv2d_params_init();
    cp.stride[0] = cp.stride[1] = (int)P;
    nu_tensor *h = nu_conv2d(ctx, x, pw, pb, &cp); /* [B, D, g, g] */
    h = nu_contiguous(ctx, nu_permute(ctx, nu_reshape(ctx, h, 3, (int64_t[]){B, D, T}), (int[]){0, 2, 1}));
    h = nu_add(ctx, h, m->pos_embed); /* [B, T, D] */

    nu_tensor *tproj = nu_timestep_embedding(ctx, t, 256, true, 1.0f); /* [B, 256] */
    nu_tensor *c0 = NULL;
    int64_t F = (int64_t)c->ff_mult * D;
    for (int i = 0; i < c->num_layers; i++) {
        nu_tensor *ci = cond_embed(m, ctx, tproj, y, i, D);
        if (i == 0) c0 = ci;
        /* AdaLayerNormZero: linear(silu(emb)) [B, 6D]; adaLN-Zero init: weight and bias 0 */
        snprintf(p, sizeof p, "transformer_blocks.%d.norm1.linear", i);
        nu_tensor *mod = nu_gen_linear(m, ctx, nu_silu(ctx, ci), p, D, 6 * D, GEN_INIT_ZERO, 0, GEN_INIT_ZERO);
        nu_tensor *n1 = nu_layer_norm(ctx, h, NULL, NULL, 1e-6f);
        n1 = modulate(ctx, n1, chunk(ctx, mod, 0, D), chunk(ctx, mod, 1, D));
        snprintf(p, sizeof p, "transformer_blocks.%d.attn1", i);
        nu_tensor *a = nu_gen_self_attention(m, ctx, n1, p, D, (int)NH, GEN_INIT_XAVIER);
        h = nu_add(ctx, h, gated(ctx, chunk(ctx, mod, 2, D), a));
        /* norm3: LayerNorm(D, norm_eps, elementwise_affine=False), modulated */
        nu_tensor *n3 = nu_layer_norm(ctx, h, NULL, NULL, c->norm_eps);
        n3 = modulate(ctx, n3, chunk(ctx, mod, 3, D), chunk(ctx, mod, 4, D));
        /* FeedForward(D, mult, activation_fn="gelu-approximate"): net.0.proj, GELU(tanh), net.2 */
        snprintf(p, sizeof p, "transformer_blocks.%d.ff.net.0.proj", i);
        nu_tensor *f = nu_gen_linear(m, ctx, n3, p, D, F, GEN_INIT_XAVIER, 0, GEN_INIT_ZERO);
        snprintf(p, sizeof p, "transformer_blocks.%d.ff.net.2", i);
        f = nu_gen_linear(m, ctx, nu_gelu_tanh(ctx, f), p, F, D, GEN_INIT_XAVIER, 0, GEN_INIT_ZERO);
        h = nu_add(ctx, h, gated(ctx, chunk(ctx, mod, 5, D), f));
    }

    /* final layer: adaLN (proj_out_1, zero init) on norm_out (LayerNorm 1e-6, no affine),
     * proj_out_2 (zero init) to P*P*Cout per token */
    nu_tensor *mo = nu_gen_linear(m, ctx, nu_silu(ctx, c0), "proj_out_1", D, 2 * D, GEN_INIT_ZERO, 0, GEN_INIT_ZERO);
    h = modulate(ctx, nu_layer_norm(ctx, h, NULL, NULL, 1e-6f), chunk(ctx, mo, 0, D), chunk(ctx, mo, 1, D));
    h = nu_gen_linear(m, ctx, h, "proj_out_2", D, P * P * Cout, GEN_INIT_ZERO, 0, GEN_INIT_ZERO); /* [B, T, P*P*Cout] */

    /* unpatchify: [B, g, g, P, P, Cout] -> einsum("nhwpqc->nchpwq") -> [B, Cout, g*P, g*P] */
    h = nu_reshape(ctx, h, 6, (int64_t[]){B, g, g, P, P, Cout});
    h = nu_contiguous(ctx, nu_permute(ctx, h, (int[]){0, 5, 1, 3, 2, 4}));
    return nu_reshape(ctx, h, 4, (int64_t[]){B, Cout, g * P, g * P});
}
