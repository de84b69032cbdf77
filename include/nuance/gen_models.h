/*
 * nuance/gen_models.h — the trainable generative models of `nuance train` / `nuance generate`:
 * a pixel-space UNet and a class-conditional DiT, their training objectives (DDPM eps- and
 * v-prediction, rectified flow matching) with label dropout for classifier-free guidance, and the
 * glue that samples them with the shared sampler module (nuance/sample.h) under CFG.
 *
 * Architectures and names follow diffusers v0.27.2 so checkpoints load in Python:
 *   - NU_GEN_ARCH_UNET = UNet2DModel (conv_in, positional time embedding + TimestepEmbedding MLP,
 *     class_embedding nn.Embedding(num_classes + 1), DownBlock2D / AttnDownBlock2D, UNetMidBlock2D,
 *     UpBlock2D / AttnUpBlock2D, ResnetBlock2D with GroupNorm + SiLU, conv_norm_out, conv_out);
 *   - NU_GEN_ARCH_DIT = Transformer2DModel(norm_type="ada_norm_zero") as DiTPipeline uses it
 *     (patch embedding conv + fixed 2-D sin-cos positions, per block a CombinedTimestepLabel
 *     embedding -> SiLU -> Linear(D, 6D) adaLN-Zero modulation, self-attention, GELU(tanh) MLP,
 *     final adaLN (proj_out_1) + Linear (proj_out_2), unpatchify) — the DiT of Peebles & Xie
 *     2023 (facebookresearch/DiT) in diffusers' layout.
 * Parameters are f32 leaves flagged NU_FLAG_PARAM and named by the PyTorch state_dict keys, so
 * the trainer (nuance/train.h) flattens them and its checkpoints are plain weight files too.
 *
 * Training, in short (see tests/test_gen_models.c):
 *
 *     nu_gen_config c = nu_gen_config_init(NU_GEN_ARCH_UNET);
 *     c.in_channels = 1; c.sample_size = 32; c.num_classes = 10;
 *     nu_gen_model *m;  nu_gen_model_new(&c, seed, &m);          // PyTorch-default-like init
 *     nu_objective obj = nu_objective_init(NU_OBJECTIVE_EPS);     // 1000 linear-beta steps
 *     nu_ctx *ctx = nu_ctx_new(NULL);  nu_ctx_set_alloc_data(ctx, false);
 *     nu_gen_loss *L;  nu_gen_loss_new(m, &obj, ctx, 64, &L);     // inputs + model + MSE loss
 *     nu_graph *g = nu_graph_new(ctx);
 *     nu_graph_expand(g, nu_gen_loss_tensor(L)); nu_graph_backward(g, nu_gen_loss_tensor(L));
 *     nu_trainer_new(g, nu_gen_loss_tensor(L), pool, &tp, &tr);  nu_graph_alloc(g);
 *     loop: nu_dataset_next(data, &b);
 *           nu_gen_loss_prepare(L, nu_trainer_rng(tr), b->images, b->labels);   // t, noise, dropout
 *           nu_trainer_forward_backward(tr, &loss);  nu_trainer_step(tr, &info);
 *
 * Sampling: nu_gen_sample() with a k-diffusion sampler (euler, heun, ddim, ddpm, dpm++2m, ...) or
 * a diffusers scheduler loop exactly as DiTPipeline runs it.
 *
 * Implemented in src/models/gen_model.c (configs, parameters, loading/saving), src/models/pixel_unet.c,
 * src/models/dit.c, src/train/objectives.c and src/train/gen_sample.c (sampling glue).
 * Tested by tests/test_gen_models.c (PyTorch fixtures: one training step's loss and every
 * gradient, 20-step AdamW trajectories; DiT forward and DiTPipeline runs of
 * ../shared/reference/dit_tiny).
 */
#ifndef NUANCE_GEN_MODELS_H
#define NUANCE_GEN_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nuance/rng.h"
#include "nuance/sample.h"
#include "nuance/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ model configuration */

#define NU_GEN_MAX_LEVELS 6

typedef enum nu_gen_arch {
    NU_GEN_ARCH_UNET, /* pixel-space UNet (diffusers UNet2DModel)                       */
    NU_GEN_ARCH_DIT,  /* DiT (diffusers Transformer2DModel, norm_type "ada_norm_zero")  */
    NU_GEN_ARCH_COUNT
} nu_gen_arch;

/* "unet" / "dit". */
nu_status nu_gen_arch_from_name(const char *name, nu_gen_arch *out);
const char *nu_gen_arch_name(nu_gen_arch a);

typedef struct nu_gen_config {
    nu_gen_arch arch;
    int in_channels;  /* image (or latent) channels                                      (1)   */
    int out_channels; /* 0: in_channels. 2*in_channels = DiT "learned sigma": training and
                         sampling use the first in_channels (as DiTPipeline does)       (0)   */
    int sample_size;  /* H = W of the images the model is trained/sampled at           (32)  */
    int num_classes;  /* 0: unconditional; else labels 0..num_classes-1 and the null label
                         num_classes (embedding tables have num_classes + 1 rows)        (10)  */
    /* ---- UNet (UNet2DModel names in brackets) */
    int n_levels;                                /* len(block_out_channels)              (3)   */
    int block_out_channels[NU_GEN_MAX_LEVELS];   /* [block_out_channels]       (32, 64, 64)    */
    bool attn_levels[NU_GEN_MAX_LEVELS];         /* Attn{Down,Up}Block2D at this level
                                                    (level 0 = full resolution)  (0, 1, 1)    */
    int layers_per_block;                        /* [layers_per_block]                   (2)   */
    bool mid_attention;                          /* [add_attention] in the mid block     (true) */
    int norm_num_groups;                         /* [norm_num_groups] GroupNorm groups   (8)   */
    float norm_eps;                              /* [norm_eps] (UNet GroupNorm; DiT norm3) (1e-5) */
    /* ---- shared: attention head width. UNet: heads = channels / attention_head_dim; DiT: hidden
       size D = num_attention_heads * attention_head_dim                           (8)   */
    int attention_head_dim;
    /* ---- DiT (Transformer2DModel names) */
    int patch_size;          /* [patch_size]                                            (2)   */
    int num_layers;          /* [num_layers] blocks                                     (4)   */
    int num_attention_heads; /* [num_attention_heads]                                   (4)   */
    int ff_mult;             /* FeedForward inner = ff_mult * D (diffusers: 4)          (4)   */
} nu_gen_config;

/* Defaults above for the architecture (UNet: the MNIST 32-64-64 config; DiT: D = 32, 4 blocks). */
nu_gen_config nu_gen_config_init(nu_gen_arch arch);
/* Validates a configuration; the message names the field ("gen model: norm_num_groups 8 does
 * not divide 60 channels (up_blocks.0.resnets.0.norm1)"). */
nu_status nu_gen_config_check(const nu_gen_config *c);
/* Parses a model configuration: nuance's own JSON (nu_gen_config_to_json; "arch": "unet"/"dit",
 * missing keys keep the defaults), a diffusers config.json with "_class_name" UNet2DModel or
 * Transformer2DModel (unsupported options are named errors), or an object holding one of these
 * under "model" (a training run's config). label names the source in errors. */
nu_status nu_gen_config_from_json(const char *json, size_t len, const char *label, nu_gen_config *out);
/* Same over a parsed JSON object. */
struct nu_json;
nu_status nu_gen_config_from_json_obj(const struct nu_json *obj, const char *label, nu_gen_config *out);
/* nuance's JSON for the configuration (malloc'ed; NULL on out of memory). */
char *nu_gen_config_to_json(const nu_gen_config *c);

/* ================================================================ models */

typedef struct nu_gen_model nu_gen_model;

/* Creates the parameters of configuration c, initialised deterministically from seed:
 *   - Conv2d / Linear weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's
 *     default kaiming_uniform(a=sqrt(5)) and bias rule), GroupNorm weight 1 bias 0,
 *     nn.Embedding ~ N(0, 1) — UNet2DModel's own init;
 *   - DiT: facebookresearch/DiT initialize_weights: Linear xavier_uniform with zero bias, patch
 *     conv xavier_uniform on its [D, C*p*p] view, label tables and timestep MLP weights
 *     ~ N(0, 0.02), adaLN-Zero modulations (norm1.linear, proj_out_1) and the final
 *     proj_out_2 zero.
 * Draws come from a nu_rng seeded with `seed` in parameter creation order (not bit-identical to
 * torch's init, which uses other kernels; the distributions are the same). */
nu_status nu_gen_model_new(const nu_gen_config *c, uint64_t seed, nu_gen_model **out);
/* Free after every graph / trainer that uses the parameters (nu_trainer_free first). */
void nu_gen_model_free(nu_gen_model *m);
const nu_gen_config *nu_gen_model_config(const nu_gen_model *m);
int nu_gen_model_n_tensors(const nu_gen_model *m);
nu_tensor *nu_gen_model_tensor(nu_gen_model *m, int i);            /* in creation order    */
nu_tensor *nu_gen_model_find(nu_gen_model *m, const char *name);   /* NULL if absent       */
int64_t nu_gen_model_n_params(const nu_gen_model *m);              /* scalar parameters    */

/* The network as graph ops in ctx (header-only nodes; ctx may have alloc_data off):
 *   x [B, in_channels, H, W] f32 (H = W, divisible by 2^(n_levels-1) for the UNet; equal to
 *     sample_size for the DiT, whose positional table is fixed), t [B] f32 timesteps (integer
 *     training steps for DDPM objectives, t * flow_t_scale for flow matching), y [B] i64 labels
 *     in [0, num_classes] (num_classes = null label) or NULL for an unconditional model
 * -> [B, out_channels, H, W]. Shape mismatches are programmer errors (NU_ASSERT). */
nu_tensor *nu_gen_model_forward(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, nu_tensor *t, nu_tensor *y);

/* Copies weights from a safetensors file into the parameters (f32/f16/bf16/f64 converted to
 * f32). With use_ema, "ema.<name>" tensors are read (a trainer checkpoint's EMA). Every
 * parameter must be present with its shape; extra tensors are ignored (a trainer checkpoint holds
 * AdamW moments). Errors name the file and tensor; on error the parameters are unchanged. */
nu_status nu_gen_model_load_weights(nu_gen_model *m, const char *path, bool use_ema);
/* Loads a model for generation from
 *   - a nuance checkpoint or weights file: the "config" metadata holds the model config (own JSON
 *     or a run config with a "model" object); use_ema picks "ema.*" weights when present;
 *   - a diffusers model folder (config.json + diffusion_pytorch_model.safetensors), or a pipeline
 *     folder with transformer/ or unet/ inside. */
nu_status nu_gen_model_load(const char *path, bool use_ema, nu_gen_model **out);
/* Writes the weights (f32, f16 or bf16) with metadata "format" = "nuance.gen_model" and
 * "config" = nu_gen_config_to_json plus optional extra key/value pairs (e.g. the objective and
 * class names), atomically. */
nu_status nu_gen_model_save(nu_gen_model *m, const char *path, nu_type type, const char *const *meta_keys,
                            const char *const *meta_values, int n_meta);

/* ================================================================ objectives */

typedef enum nu_objective_kind {
    NU_OBJECTIVE_EPS,  /* DDPM eps-prediction (Ho et al. 2020, eq. 14)                        */
    NU_OBJECTIVE_V,    /* v-prediction, v = sqrt(ab) eps - sqrt(1-ab) x0 (Salimans & Ho 2022)   */
    NU_OBJECTIVE_FLOW, /* rectified flow: x_t = (1-t) x0 + t eps, target eps - x0 (SD3)         */
    NU_OBJECTIVE_COUNT
} nu_objective_kind;

typedef enum nu_flow_timesteps {
    NU_FLOW_T_UNIFORM,      /* t ~ U(0, 1)                                                   */
    NU_FLOW_T_LOGIT_NORMAL, /* t = sigmoid(mean + std * n), n ~ N(0, 1) (SD3, Esser et al. 2024) */
    NU_FLOW_T_COUNT
} nu_flow_timesteps;

typedef struct nu_objective {
    nu_objective_kind kind;         /*                                                 (EPS)    */
    /* EPS / V: the DDPM forward process */
    nu_beta_schedule beta_schedule; /* NU_BETA_LINEAR or NU_BETA_SQUAREDCOS_CAP_V2 (cosine) (LINEAR) */
    int num_train_timesteps;        /*                                                 (1000)   */
    double beta_start, beta_end;    /* linear schedule                           (1e-4, 0.02)   */
    /* FLOW */
    nu_flow_timesteps flow_t;       /*                                                 (UNIFORM) */
    double logit_mean, logit_std;   /*                                                 (0, 1)   */
    double flow_t_scale;            /* the network sees t * flow_t_scale               (1000)   */
    double flow_shift;              /* sampling: SD3 shift of the flow sigmas          (1)      */
    /* classifier-free guidance training: a label becomes the null label with probability p */
    double label_dropout;           /*                                                 (0.1)    */
} nu_objective;

nu_objective nu_objective_init(nu_objective_kind kind);
/* "eps"/"epsilon", "v"/"v_prediction", "flow"/"rectified_flow". */
nu_status nu_objective_kind_from_name(const char *name, nu_objective_kind *out);
const char *nu_objective_kind_name(nu_objective_kind k);
nu_status nu_objective_check(const nu_objective *o);
/* {"objective": "eps", "beta_schedule": "linear", ...}: keys as the struct fields. */
nu_status nu_objective_from_json_obj(const struct nu_json *obj, const char *label, nu_objective *out);
char *nu_objective_to_json(const nu_objective *o); /* malloc'ed */
/* The sample.h prediction type the trained network outputs (EPS, V, FLOW). */
nu_prediction nu_objective_prediction(const nu_objective *o);

/* The loss graph of one micro-batch: graph inputs x_t [B, C, H, W], t [B] f32, y [B] i64 (when
 * the model is class-conditional) and target [B, C, H, W]; loss = mean((pred - target)^2) over
 * every element (F.mse_loss), pred = the first C output channels. */
typedef struct nu_gen_loss nu_gen_loss;
nu_status nu_gen_loss_new(nu_gen_model *m, const nu_objective *o, nu_ctx *ctx, int batch, nu_gen_loss **out);
void nu_gen_loss_free(nu_gen_loss *L);
nu_tensor *nu_gen_loss_tensor(nu_gen_loss *L);  /* [1] f32                                    */
nu_tensor *nu_gen_loss_pred(nu_gen_loss *L);    /* network output [B, out_channels, H, W]      */
nu_tensor *nu_gen_loss_input(nu_gen_loss *L, const char *name); /* "x_t", "t", "y", "target"   */

/* Fills the inputs for one micro-batch after nu_graph_alloc (images [B, C, H, W] clean data,
 * labels [B] or NULL). Draws from rng, in this order (the PyTorch fixture does the same with a
 * torch.Generator):
 *   1. timesteps: EPS/V torch.randint(0, T, (B,)); FLOW uniform torch.rand(B), logit-normal
 *      torch.randn(B) -> sigmoid(mean + std * n);
 *   2. noise: torch.randn(B, C, H, W);
 *   3. when the model is class-conditional and label_dropout > 0: torch.rand(B); labels whose
 *      draw is < label_dropout become the null label.
 * EPS/V: x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps (diffusers add_noise; ab in float32 as
 * DDPMScheduler), target eps or sqrt(ab_t) eps - sqrt(1 - ab_t) x0 (get_velocity), net t = t.
 * FLOW: x_t = (1 - t) x0 + t eps, target eps - x0, net t = t * flow_t_scale.
 * NU_ERR_INVALID_ARG for a label outside [0, num_classes). */
nu_status nu_gen_loss_prepare(nu_gen_loss *L, nu_rng *rng, const float *images, const int64_t *labels);

/* ================================================================ sampling */

typedef struct nu_gen_sample_params {
    const char *sampler;       /* k-diffusion sampler (nu_sampler_from_name: euler, heun, ddim,
                                  ddpm, dpm++2m, euler_a, lms, ...) or, with diffusers_scheduler,
                                  a scheduler name (nu_sched_kind_from_name)    ("euler")       */
    bool diffusers_scheduler;  /* run the diffusers scheduler loop as DiTPipeline (EPS/V only;
                                  the scheduler gets the objective's betas)    (false)         */
    int steps;                 /*                                               (30)            */
    nu_sigma_schedule schedule;/* k-diffusion sigmas for EPS/V models           (KARRAS)        */
    double guidance_scale;     /* > 1: CFG with the null label (class-conditional models) (1)   */
    int batch;                 /* images                                        (1)             */
    const int64_t *labels;     /* [batch] labels (NULL: all null label / unconditional)          */
    uint64_t seed;             /* initial noise: torch.Generator().manual_seed(seed), randn of
                                  [batch, C, H, W]                              (0)             */
    uint64_t noise_seed;       /* stochastic samplers' noise generator (DiTPipeline: the global
                                  torch RNG after torch.manual_seed)            (0)             */
    double eta;                /* ddim/ancestral eta; < 0: the sampler's default (-1)           */
    int max_eval_batch;        /* split model evaluations into chunks of at most this many images
                                  (CFG counts twice); 0: one evaluation        (0)             */
    nu_sample_callback callback; /* k-diffusion samplers: per-step callback     (NULL)          */
    void *callback_user;
} nu_gen_sample_params;
nu_gen_sample_params nu_gen_sample_params_init(void);

/* Generates p->batch images into out [batch, in_channels, H, W] (the model's space, ~[-1, 1]
 * for pixel models: not clamped). The model's parameters are read as they are now (e.g. after
 * nu_trainer_swap_ema). CFG as DiTPipeline: the network runs on [x, x] with labels
 * [y, null]; guided = uncond + s (cond - uncond) on the first in_channels output channels.
 * Flow models sample with nu_sigmas_flow(steps, flow_shift) and deterministic samplers only. */
nu_status nu_gen_sample(nu_gen_model *m, const nu_objective *o, const nu_gen_sample_params *p, nu_pool *pool,
                        float *out);

/* One guided network evaluation, for tests and custom loops: x [batch, C, H, W] at timestep t
 * (same for all) -> out [batch, C, H, W] (first in_channels channels, guided when
 * guidance_scale > 1 and labels are given). */
nu_status nu_gen_eval_guided(nu_gen_model *m, nu_pool *pool, const float *x, double t, int batch,
                             const int64_t *labels, double guidance_scale, float *out);

#ifdef __cplusplus
}
#endif
#endif
