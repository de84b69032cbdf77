/*
 * unet.h — the Stable Diffusion 1.x / 2.x UNet (diffusers UNet2DConditionModel v0.27 semantics,
 * which equal the original LDM openaimodel.UNetModel's): config (from a diffusers config.json,
 * an LDM config.json or detected from tensor shapes), loading (diffusers folders, LDM single
 * files in safetensors or GGUF), the graph builder and a per-shape cached evaluator.
 * Canonical weight names are the diffusers ones; LDM names are mapped by the table in
 * unet_names.c. Tested by tests/test_unet.c (../shared/reference/sd1_tiny, sd2_tiny).
 *
 * Prediction type (eps or v) is not in the UNet weights: SD 2.x 768 checkpoints predict v, the
 * rest eps. The pipeline decides (scheduler_config.json, an LDM config's "parameterization", or
 * the user); the config carries it only when a config file says so.
 */
#ifndef NU_MODELS_UNET_H
#define NU_MODELS_UNET_H

#include "nn/nn.h"
#include "nuance/models.h"

#define NU_UNET_MAX_LEVELS 6
#define NU_UNET_MAX_DEPTH 16 /* transformer blocks per Transformer2DModel */

typedef enum nu_unet_family {
    NU_UNET_FAMILY_SD1, /* conv 1x1 proj_in/out, 8 heads, CLIP ViT-L context (768)          */
    NU_UNET_FAMILY_SD2, /* linear proj_in/out, head dim 64, OpenCLIP ViT-H context (1024)  */
    NU_UNET_FAMILY_COUNT
} nu_unet_family;

typedef enum nu_unet_prediction {
    NU_UNET_PRED_UNKNOWN, /* not stated by any config: the pipeline decides */
    NU_UNET_PRED_EPS,
    NU_UNET_PRED_V,
    NU_UNET_PRED_COUNT
} nu_unet_prediction;

typedef struct nu_unet_config {
    nu_unet_family family;
    int in_channels;                          /* 4, or 9 for inpainting models              */
    int out_channels;
    int n_levels;                             /* len(block_out_channels)                    */
    int channels[NU_UNET_MAX_LEVELS];         /* block_out_channels                         */
    int layers_per_block;
    bool down_attn[NU_UNET_MAX_LEVELS];       /* level L's down block is CrossAttnDownBlock2D */
    bool up_attn[NU_UNET_MAX_LEVELS];         /* level L's up block (up_blocks[n-1-L]) too  */
    bool mid_attn;                            /* UNetMidBlock2DCrossAttn (else resnets only)  */
    int depth[NU_UNET_MAX_LEVELS];            /* transformer_layers_per_block, per level    */
    int mid_depth;
    int heads[NU_UNET_MAX_LEVELS];            /* attention heads per level                  */
    int mid_heads;
    int context_dim;                          /* cross_attention_dim                        */
    int time_embed_dim;                       /* 4 * channels[0]                            */
    int norm_groups;                          /* GroupNorm groups (32 for real models)      */
    float norm_eps;                           /* resnets and conv_norm_out (1e-5)           */
    bool linear_proj;                         /* use_linear_projection                      */
    bool upcast_attention;                    /* SD 2.x: attention in f32 (always true here) */
    int sample_size;                          /* training latent size (64, 96), 0 if unknown */
    nu_unet_prediction prediction;
} nu_unet_config;

/* The real architectures, for benchmarks and as family defaults. */
void nu_unet_config_sd15(nu_unet_config *c); /* SD 1.x: 320/640/1280/1280, 8 heads, context 768 */
void nu_unet_config_sd2(nu_unet_config *c);  /* SD 2.x: same channels, head dim 64, context 1024 */
/* Reads a diffusers unet/config.json. Unsupported variants (class/addition embeddings,
 * time_cond_proj_dim, non-default block types) are NU_ERR_UNSUPPORTED. */
nu_status nu_unet_config_from_diffusers_json(const char *path, nu_unet_config *c);
/* Reads an LDM/CompVis config (.json form of the v1-inference.yaml: model.params.unet_config.
 * params with model_channels, channel_mult, num_res_blocks, attention_resolutions, num_heads or
 * num_head_channels, transformer_depth, context_dim, use_linear_in_transformer; optional
 * norm_num_groups; model.params.parameterization -> prediction). */
nu_status nu_unet_config_from_ldm_json(const char *path, nu_unet_config *c);
/* Either of the two, by content. */
nu_status nu_unet_config_from_json(const char *path, nu_unet_config *c);
/* Detects the config from the tensor shapes of canonical (diffusers-named) weights. What shapes
 * cannot tell comes from the family defaults: heads (SD1: 8 per level; SD2, detected by linear
 * projections: head dim 64) and GroupNorm groups (32, or the largest divisor <= 32 of every
 * channel count when 32 does not divide them — tiny test models). */
nu_status nu_unet_config_detect(nu_weights *w, nu_unet_config *c);
/* A consistency check of a config (sizes in range, heads dividing channels, ...). */
nu_status nu_unet_config_validate(const nu_unet_config *c);

/* ---- names (unet_names.c) */

/* True if the (prefix-stripped) names are LDM's (input_blocks.0.0.weight present). */
bool nu_unet_names_are_ldm(nu_weights *w);
/* The LDM layout: layers_per_block and number of levels, read from the input_blocks indices
 * (the first downsampler is input_blocks.<layers_per_block + 1>.0.op). */
nu_status nu_unet_ldm_layout(nu_weights *w, int *layers_per_block, int *n_levels);
/* Renames every LDM UNet tensor (model.diffusion_model. already stripped) to its diffusers name
 * for the given layout. A name that fits no rule is NU_ERR_UNSUPPORTED naming it. */
nu_status nu_unet_rename_ldm(nu_weights *w, int layers_per_block, int n_levels);

/* ---- model */

typedef struct nu_unet nu_unet;

typedef struct nu_unet_load_params {
    const char *config_path; /* optional: diffusers or LDM config.json (else found or detected) */
    nu_type matrix_type;     /* --type: NU_TYPE_COUNT keeps weights as stored; f16/bf16/q8_0/...
                                convert Linear matrices at load (convs keep their float type);
                                f32 computes from f32 copies of every weight (convs too)       */
} nu_unet_load_params;
nu_unet_load_params nu_unet_load_params_init(void);

/* Loads a UNet from a diffusers folder (the pipeline folder with unet/ — a directory, a symlink,
 * or a link stored as a text file naming the target —, or the unet folder itself), a single-file
 * checkpoint (.safetensors or .gguf; LDM names under
 * model.diffusion_model., or bare UNet names in either dialect). */
nu_status nu_unet_load(const char *path, const nu_unet_load_params *p, nu_unet **out);
/* A UNet over caller-made weights (canonical names); takes ownership of w (freed by
 * nu_unet_free, also on error). */
nu_status nu_unet_new(nu_weights *w, const nu_unet_config *c, nu_unet **out);
void nu_unet_free(nu_unet *u);
const nu_unet_config *nu_unet_get_config(const nu_unet *u);
nu_weights *nu_unet_weights(nu_unet *u);

/* LoRA / LoCon layers (nn/lora.h; targets registered with model label "unet" on
 * nu_unet_weights(u)) added to every Linear and conv of the UNet from the next evaluation on
 * (the cached graph is dropped); NULL removes them. The set must outlive its use. */
void nu_unet_set_lora(nu_unet *u, const nu_lora_set *s);

/* Builds the graph of one evaluation in ctx (which must not allocate data):
 *   x [B, in_channels, H, W] f32, t [B] f32 (timesteps), context [B, S, context_dim] f32
 *   -> [B, out_channels, H, W] (eps or v). H and W need not be multiples of 2^(levels-1):
 * odd sizes upsample to the skip's size as diffusers does (forward_upsample_size).
 * Missing or mis-shaped weights: returns NULL and sets nu_last_error ("unet: missing tensor
 * down_blocks.0.resnets.0.conv1.weight"). */
nu_tensor *nu_unet_build(nu_unet *u, nu_ctx *ctx, nu_tensor *x, nu_tensor *t, nu_tensor *context);

/* Evaluates with a graph built once per shape (B, H, W, S) and reused: no allocation in a
 * steady state. x [B, Cin, H, W], t [B], context [B, S, Dc], out [B, Cout, H, W], all dense f32. */
nu_status nu_unet_eval(nu_unet *u, nu_pool *pool, int B, int H, int W, int S, const float *x, const float *t,
                       const float *context, float *out);
/* Activation buffer of the cached graph (bytes; 0 before the first eval). */
size_t nu_unet_activation_bytes(const nu_unet *u);

/* Feed-forward row chunking (process-wide): the [rows, 2F] GEGLU projection is computed in
 * chunks of about this many bytes (default 16 MB; 0 restores it). For tests. */
void nu_unet_set_ff_chunk_bytes(size_t bytes);

/* Calls fn for every weight the config needs, in build order, with its canonical name and
 * PyTorch shape (how benchmarks make random weights; tests compare it with real files). */
typedef void (*nu_unet_weight_fn)(const char *name, int ndim, const int64_t *ne, void *user);
nu_status nu_unet_weight_list(const nu_unet_config *c, nu_unet_weight_fn fn, void *user);

#endif
