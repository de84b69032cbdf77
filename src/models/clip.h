/*
 * clip.h — the CLIP text encoders of Stable Diffusion (internal API for the pipeline):
 * SD 1.x's OpenAI CLIP ViT-L/14 (HF CLIPTextModel: quick_gelu, causal self-attention, final
 * layer norm) and SD 2.x's OpenCLIP ViT-H/14 (gelu, penultimate layer + final layer norm).
 *
 * Loading: the weights store holds the file's own names; nu_clip_names_canonicalize maps any known
 * dialect (diffusers/HF "text_model.*", LDM SD1 "cond_stage_model.transformer.text_model.*",
 * SD2 OpenCLIP "cond_stage_model.model.*") to the canonical HF names (tables in clip_names.c),
 * and nu_clip_config_detect reads the architecture from tensor names and shapes (plus an optional
 * HF config.json for what shapes cannot say: heads, activation, eps).
 *
 *     nu_clip_source src; nu_clip_config cfg;
 *     nu_clip_names_canonicalize(w, &src);            // or nu_clip_load(w, json, &cfg)
 *     nu_clip_config_detect(w, src, json, &cfg);
 *     nu_nn nn; nu_nn_init(&nn, ctx, w, "clip");
 *     nu_tensor *cond = nu_clip_build(&nn, &cfg, ids, clip_skip, NULL);   // [B, 77, D]
 *     if (nu_nn_status(&nn) != NU_OK) ...            // one clear line: nu_last_error()
 *
 * Tested by tests/test_clip.c (sd1_tiny / sd2_tiny references, both file forms, errors).
 */
#ifndef NU_MODELS_CLIP_H
#define NU_MODELS_CLIP_H

#include "nn/nn.h"

#define NU_CLIP_MAX_LAYERS 64

/* Where the text encoder's names came from. */
typedef enum nu_clip_source {
    NU_CLIP_SOURCE_HF,       /* "text_model.*" already (diffusers folder text_encoder/)           */
    NU_CLIP_SOURCE_LDM_HF,   /* HF names under a prefix ("cond_stage_model.transformer.", SD 1.x) */
    NU_CLIP_SOURCE_OPENCLIP, /* OpenCLIP names ("cond_stage_model.model.", SD 2.x)                */
    NU_CLIP_SOURCE_COUNT
} nu_clip_source;

typedef enum nu_clip_act {
    NU_CLIP_ACT_QUICK_GELU, /* x*sigmoid(1.702x): OpenAI CLIP (SD 1.x)        */
    NU_CLIP_ACT_GELU,       /* erf GELU: OpenCLIP ViT-H / bigG (SD 2.x, SDXL) */
    NU_CLIP_ACT_COUNT
} nu_clip_act;

typedef struct nu_clip_config {
    int64_t vocab;     /* V: token embedding rows (49408)                                       */
    int64_t n_pos;     /* max positions (77)                                                    */
    int64_t dim;       /* D: width (768 ViT-L, 1024 ViT-H)                                      */
    int64_t ff;        /* MLP width (4*D)                                                       */
    int heads;         /* NH (D/64 for the real models)                                         */
    int n_layers;      /* transformer layers the weights hold                                   */
    int n_layers_full; /* layers of the original model; clip_skip counts back from its end.
                        * = n_layers + 1 for SD 2.x diffusers folders, whose text_encoder is the
                        * OpenCLIP model without its last layer (stabilityai's conversion)       */
    int default_skip;  /* clip_skip used for <= 0: 1 (SD 1.x last layer), 2 (SD 2.x penultimate)*/
    nu_clip_act act;
    float eps;         /* layer norm epsilon (1e-5)                                             */
    nu_clip_source source;
} nu_clip_config;

/* Maps the text encoder names in w to the canonical HF names (in place: renames, and row slices
 * for OpenCLIP's fused attn.in_proj_weight/bias). Detects the dialect from marker tensors; *src
 * (may be NULL) receives it. NU_ERR_NOT_FOUND with one line if no text encoder is present;
 * NU_ERR_FORMAT if a fused projection has an impossible shape. Canonical names are left alone,
 * so a second call is harmless (it reports NU_CLIP_SOURCE_HF). */
nu_status nu_clip_names_canonicalize(nu_weights *w, nu_clip_source *src);

/* Reads the config from the canonical names and shapes. hf_config: an HF CLIPTextConfig object
 * (text_encoder/config.json) or NULL; it supplies num_attention_heads, hidden_act and
 * layer_norm_eps; without it heads = D/64 and the activation follows the source (LDM SD1 names:
 * quick_gelu; OpenCLIP names: gelu; HF names: gelu if D is 1024 or 1280 (OpenCLIP H/bigG), else
 * quick_gelu). The layer count always comes from the weights. */
nu_status nu_clip_config_detect(nu_weights *w, nu_clip_source src, const nu_json *hf_config, nu_clip_config *cfg);

/* nu_clip_names_canonicalize + nu_clip_config_detect. */
nu_status nu_clip_load(nu_weights *w, const nu_json *hf_config, nu_clip_config *cfg);

/* Layers to run for a --clip-skip value, as A1111 and stable-diffusion.cpp count it:
 * clip_skip N takes hidden_states[-N] of the full model (the output of layer n_layers_full-N+1;
 * N = 1 the last layer), then the final layer norm. clip_skip <= 0: cfg->default_skip. Returns
 * NU_ERR_INVALID_ARG with one line if that layer is not in the weights. */
nu_status nu_clip_layers_for_skip(const nu_clip_config *cfg, int clip_skip, int *n_run);

typedef struct nu_clip_outputs {
    nu_tensor *pooled; /* [B, D]: the returned hidden states at each row's first maximal id (the
                        * first EOS), as HF CLIPTextModel's pooler_output (transformers 4.30:
                        * argmax of input_ids). No text_projection.                           */
    nu_tensor *hidden_states[NU_CLIP_MAX_LAYERS + 1]; /* HF output_hidden_states: [0] = embeddings,
                        * [i] = output of layer i (i <= layers run; NULL beyond), [B, T, D]    */
    int n_run;         /* layers run                                                          */
} nu_clip_outputs;

/* Builds the text encoder on ids [B, T] (i32 or i64 token ids, T <= n_pos) and returns
 * [B, T, D] f32: final_layer_norm(output of the layer clip_skip selects) — the conditioning the
 * SD UNet consumes (HF last_hidden_state for clip_skip 1 on SD 1.x; OpenCLIP layer='penultimate'
 * on SD 2.x). out may be NULL. Errors (missing/mis-shaped tensors, clip_skip out of range) are
 * recorded in nn (nu_nn_status). */
nu_tensor *nu_clip_build(nu_nn *nn, const nu_clip_config *cfg, nu_tensor *ids, int clip_skip, nu_clip_outputs *out);

const char *nu_clip_source_name(nu_clip_source src);

#endif
