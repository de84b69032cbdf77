/*
 * clip.c — the CLIP text encoder (see clip.h): config detection from tensor names/shapes and the
 * graph builder. The forward pass follows transformers v4.30 CLIPTextTransformer, which OpenCLIP's
 * TextTransformer matches layer for layer (diffusers' SD 2.x conversion relies on it):
 *   h0 = token_embedding[ids] + position_embedding[0..T-1]                      [B, T, D]
 *   layer i: h = h + out_proj(causal_mha(layer_norm1(h)))
 *            h = h + fc2(act(fc1(layer_norm2(h))))        act: quick_gelu (SD1) / gelu (SD2)
 *   out = final_layer_norm(h_k), k = the layer --clip-skip selects               [B, T, D]
 *   pooled[b] = out[b, argmax_t ids[b, t]]                                        [B, D]
 * --clip-skip follows A1111 (sd_hijack_clip.py: hidden_states[-N] then final_layer_norm for
 * N > 1) and stable-diffusion.cpp (which also applies it to SD 2.x, default 2 = OpenCLIP's
 * layer='penultimate', as does ldm's FrozenOpenCLIPEmbedder).
 * Tested by tests/test_clip.c.
 */
#include <stdio.h>
#include <string.h>

#include "models/clip.h"

/* ---------------------------------------------------------------- config */

static nu_tensor *get2(nu_weights *w, const char *name, int64_t *r, int64_t *c) {
    nu_tensor *t = nu_weights_get(w, name);
    if (!t || t->ndim != 2) return NULL;
    *r = t->ne[0];
    *c = t->ne[1];
    return t;
}

nu_status nu_clip_config_detect(nu_weights *w, nu_clip_source src, const nu_json *hf_config, nu_clip_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->source = src;
    int64_t V, D, P, D2, FF, D3;
    if (!get2(w, "text_model.embeddings.token_embedding.weight", &V, &D))
        return nu_error(NU_ERR_NOT_FOUND, "clip: missing or malformed tensor text_model.embeddings.token_embedding.weight");
    if (!get2(w, "text_model.embeddings.position_embedding.weight", &P, &D2) || D2 != D)
        return nu_error(NU_ERR_FORMAT,
                        "clip: missing or malformed tensor text_model.embeddings.position_embedding.weight "
                        "(expected [n_pos, %lld])",
                        (long long)D);
    if (V < 1 || D < 1 || P < 1 || D > 65536 || P > 4096)
        return nu_error(NU_ERR_FORMAT, "clip: implausible text encoder shape (vocab %lld, width %lld, positions %lld)",
                        (long long)V, (long long)D, (long long)P);
    int n = 0;
    char name[NU_MAX_NAME];
    for (;; n++) {
        snprintf(name, sizeof name, "text_model.encoder.layers.%d.layer_norm1.weight", n);
        if (!nu_weights_get(w, name)) break;
        if (n == NU_CLIP_MAX_LAYERS)
            return nu_error(NU_ERR_UNSUPPORTED, "clip: text encoder with more than %d layers", NU_CLIP_MAX_LAYERS);
    }
    if (n == 0) return nu_error(NU_ERR_NOT_FOUND, "clip: missing tensor text_model.encoder.layers.0.layer_norm1.weight");
    if (!get2(w, "text_model.encoder.layers.0.mlp.fc1.weight", &FF, &D3) || D3 != D)
        return nu_error(NU_ERR_FORMAT, "clip: missing or malformed tensor text_model.encoder.layers.0.mlp.fc1.weight "
                                       "(expected [ff, %lld])",
                        (long long)D);

    cfg->vocab = V;
    cfg->n_pos = P;
    cfg->dim = D;
    cfg->ff = FF;
    cfg->n_layers = n;
    cfg->eps = 1e-5f; /* CLIPTextConfig and OpenCLIP's LayerNorm default */
    /* activation: OpenCLIP ViT-H/bigG use nn.GELU; OpenAI CLIP (SD1's ViT-L) uses QuickGELU */
    if (src == NU_CLIP_SOURCE_OPENCLIP) cfg->act = NU_CLIP_ACT_GELU;
    else if (src == NU_CLIP_SOURCE_LDM_HF) cfg->act = NU_CLIP_ACT_QUICK_GELU;
    else cfg->act = (D == 1024 || D == 1280) ? NU_CLIP_ACT_GELU : NU_CLIP_ACT_QUICK_GELU;
    cfg->heads = D % 64 == 0 ? (int)(D / 64) : 0; /* every released CLIP text tower has 64-wide heads */

    if (hf_config) {
        double h = nu_json_number(hf_config, "num_attention_heads", 0);
        if (h != 0) {
            if (h < 1 || h > 4096 || h != (double)(int)h)
                return nu_error(NU_ERR_FORMAT, "clip: config num_attention_heads %g is not a positive integer", h);
            cfg->heads = (int)h;
        }
        const char *act = nu_json_string(hf_config, "hidden_act", NULL);
        if (act) {
            if (strcmp(act, "quick_gelu") == 0) cfg->act = NU_CLIP_ACT_QUICK_GELU;
            else if (strcmp(act, "gelu") == 0) cfg->act = NU_CLIP_ACT_GELU;
            else return nu_error(NU_ERR_UNSUPPORTED, "clip: config hidden_act '%s' is not supported (quick_gelu, gelu)", act);
        }
        double eps = nu_json_number(hf_config, "layer_norm_eps", cfg->eps);
        if (!(eps > 0 && eps < 1)) return nu_error(NU_ERR_FORMAT, "clip: config layer_norm_eps %g is out of range", eps);
        cfg->eps = (float)eps;
    }
    if (cfg->heads == 0)
        return nu_error(NU_ERR_INVALID_ARG,
                        "clip: cannot tell the attention heads of a %lld-wide text encoder from its weights; pass its "
                        "config.json (num_attention_heads)",
                        (long long)D);
    if (D % cfg->heads != 0)
        return nu_error(NU_ERR_FORMAT, "clip: width %lld is not a multiple of %d heads", (long long)D, cfg->heads);

    /* SD 2.x: the conditioning is OpenCLIP's penultimate layer + ln_final. Single files hold the
     * whole OpenCLIP model (24 layers for ViT-H), diffusers folders the model without its last
     * layer (23), so both forms give the same result for the same --clip-skip. */
    if (cfg->act == NU_CLIP_ACT_GELU) {
        cfg->n_layers_full = src == NU_CLIP_SOURCE_OPENCLIP ? n : n + 1;
        cfg->default_skip = 2;
    } else {
        cfg->n_layers_full = n;
        cfg->default_skip = 1;
    }
    return NU_OK;
}

nu_status nu_clip_load(nu_weights *w, const nu_json *hf_config, nu_clip_config *cfg) {
    nu_clip_source src;
    nu_status s = nu_clip_names_canonicalize(w, &src);
    if (s != NU_OK) return s;
    return nu_clip_config_detect(w, src, hf_config, cfg);
}

nu_status nu_clip_layers_for_skip(const nu_clip_config *cfg, int clip_skip, int *n_run) {
    int skip = clip_skip <= 0 ? cfg->default_skip : clip_skip;
    int k = cfg->n_layers_full - (skip - 1);
    *n_run = k;
    if (k >= 1 && k <= cfg->n_layers) return NU_OK;
    if (k > cfg->n_layers)
        return nu_error(NU_ERR_INVALID_ARG,
                        "clip: --clip-skip %d selects text layer %d of %d, but this text encoder holds %d layers "
                        "(diffusers SD 2.x folders omit OpenCLIP's last layer); use --clip-skip %d or more",
                        skip, k, cfg->n_layers_full, cfg->n_layers, cfg->n_layers_full - cfg->n_layers + 1);
    return nu_error(NU_ERR_INVALID_ARG, "clip: --clip-skip %d is out of range for a %d-layer text encoder (1..%d)", skip,
                    cfg->n_layers_full, cfg->n_layers_full);
}

/* ---------------------------------------------------------------- graph */

/* A constant tensor in the graph's context (arena memory, lives with ctx). */
static nu_tensor *const_tensor(nu_ctx *ctx, nu_type type, int ndim, const int64_t *ne) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= ne[d];
    void *data = nu_ctx_alloc(ctx, (size_t)n * nu_type_info(type)->size);
    NU_ASSERT(data);
    return nu_new_tensor_ext(ctx, type, ndim, ne, data);
}

/* One encoder layer (pre-LN transformer block, HF CLIPEncoderLayer). h [B, T, D]. */
static nu_tensor *encoder_layer(nu_nn *nn, const nu_clip_config *cfg, nu_tensor *h, int i) {
    static const nu_nn_attn_names names = {"q_proj", "k_proj", "v_proj", "out_proj", true, true};
    nu_ctx *ctx = nn->ctx;
    const int64_t D = cfg->dim;
    char q[NU_MAX_NAME];
#define LAYER_NAME(suffix) snprintf(q, sizeof q, "text_model.encoder.layers.%d." suffix, i)
    LAYER_NAME("layer_norm1");
    nu_tensor *x = nu_nn_layer_norm(nn, h, q, D, cfg->eps);
    LAYER_NAME("self_attn");
    /* causal mask as HF's _build_causal_attention_mask / OpenCLIP's build_attention_mask */
    x = nu_nn_attention(nn, x, NULL, q, &names, D, D, cfg->heads, NULL, true);
    h = nu_add(ctx, h, x);

    LAYER_NAME("layer_norm2");
    x = nu_nn_layer_norm(nn, h, q, D, cfg->eps);
    LAYER_NAME("mlp.fc1");
    x = nu_nn_linear(nn, x, q, D, cfg->ff, true);
    x = cfg->act == NU_CLIP_ACT_GELU ? nu_gelu(ctx, x) : nu_quick_gelu(ctx, x);
    LAYER_NAME("mlp.fc2");
    x = nu_nn_linear(nn, x, q, cfg->ff, D, true);
#undef LAYER_NAME
    return nu_add(ctx, h, x);
}

/* One-hot [B, 1, T] of each row's first maximal id, built in the graph so it follows the ids of
 * every execution. score = id*T + (T-1-t) is an exact integer in f32 (< 2^24 for ids < 2^24/T)
 * and unique per row; onehot = relu(1 + score - max(score)) is exactly 1 at the max, 0 elsewhere. */
static nu_tensor *first_argmax_onehot(nu_ctx *ctx, nu_tensor *ids) {
    int64_t B = ids->ne[0], T = ids->ne[1];
    nu_tensor *rev = const_tensor(ctx, NU_TYPE_F32, 1, (int64_t[]){T});
    for (int64_t t = 0; t < T; t++) ((float *)rev->data)[t] = (float)(T - 1 - t);
    nu_tensor *score = nu_add(ctx, nu_scale(ctx, nu_cast(ctx, ids, NU_TYPE_F32), (float)T), rev); /* [B, T] */
    nu_tensor *m = nu_max(ctx, score, -1, true);                                                 /* [B, 1] */
    nu_tensor *onehot = nu_relu(ctx, nu_affine(ctx, nu_sub(ctx, score, m), 1.0f, 1.0f));
    return nu_reshape(ctx, nu_contiguous(ctx, onehot), 3, (int64_t[]){B, 1, T});
}

nu_tensor *nu_clip_build(nu_nn *nn, const nu_clip_config *cfg, nu_tensor *ids, int clip_skip, nu_clip_outputs *out) {
    nu_ctx *ctx = nn->ctx;
    const int64_t D = cfg->dim;
    NU_ASSERT(ids->ndim == 2 && (ids->type == NU_TYPE_I32 || ids->type == NU_TYPE_I64));
    NU_ASSERT(cfg->heads > 0 && cfg->n_layers > 0 && cfg->n_layers <= NU_CLIP_MAX_LAYERS);
    const int64_t B = ids->ne[0], T = ids->ne[1];
    if (out) memset(out, 0, sizeof *out);

    int n_run = cfg->n_layers;
    if (nu_clip_layers_for_skip(cfg, clip_skip, &n_run) != NU_OK) {
        /* the message already reads "clip: ..."; record it without a second prefix */
        const char *m = nu_last_error();
        nu_nn_fail(nn, NU_ERR_INVALID_ARG, "%s", strncmp(m, "clip: ", 6) == 0 ? m + 6 : m);
        n_run = cfg->n_layers; /* build something consistent; the caller checks nu_nn_status */
    }
    if (T > cfg->n_pos) {
        nu_nn_fail(nn, NU_ERR_INVALID_ARG, "%lld tokens exceed the text encoder's %lld positions", (long long)T,
                   (long long)cfg->n_pos);
    }

    /* embeddings: token rows + position rows 0..T-1 (HF CLIPTextEmbeddings) */
    nu_tensor *tok = nu_nn_weight(nn, 2, (int64_t[]){cfg->vocab, D}, "text_model.embeddings.token_embedding.weight");
    nu_tensor *pos = nu_nn_weight(nn, 2, (int64_t[]){cfg->n_pos, D}, "text_model.embeddings.position_embedding.weight");
    int64_t Tp = T < cfg->n_pos ? T : cfg->n_pos;
    nu_tensor *pos_ids = const_tensor(ctx, NU_TYPE_I32, 1, (int64_t[]){Tp});
    for (int64_t t = 0; t < Tp; t++) ((int32_t *)pos_ids->data)[t] = (int32_t)t;
    nu_tensor *pe = nu_embedding(ctx, pos, pos_ids);  /* [Tp, D] */
    if (Tp < T) pe = nu_pad(ctx, pe, (int[]){0, (int)(T - Tp), 0, 0}); /* error path only */
    nu_tensor *h = nu_add(ctx, nu_embedding(ctx, tok, ids), pe); /* [B, T, D] */
    if (out) out->hidden_states[0] = h;

    for (int i = 0; i < n_run; i++) {
        h = encoder_layer(nn, cfg, h, i);
        if (out) out->hidden_states[i + 1] = h;
    }
    nu_tensor *y = nu_nn_layer_norm(nn, h, "text_model.final_layer_norm", D, cfg->eps);
    if (out) {
        out->n_run = n_run;
        nu_tensor *p = nu_matmul(ctx, first_argmax_onehot(ctx, ids), y, false, false); /* [B, 1, D] */
        out->pooled = nu_reshape(ctx, p, 2, (int64_t[]){B, D});
    }
    return y;
}
