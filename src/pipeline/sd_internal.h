/*
 * sd_internal.h — internal side of the Stable Diffusion pipeline (public API: include/nuance.h):
 * the loaded model (struct nu_sd), the text conditioning (sd_text.c), the two sampling families
 * and their noise sources (sd_sched.c). Orchestration only: networks live in src/models/,
 * samplers in src/sample/. Tested by tests/test_sd_pipeline.c.
 */
#ifndef NU_PIPELINE_SD_INTERNAL_H
#define NU_PIPELINE_SD_INTERNAL_H

#include <signal.h>

#include "models/clip.h"
#include "models/unet.h"
#include "nn/lora.h"
#include "nuance.h"
#include "nuance/rng.h"
#include "nuance/sample.h"
#include "nuance/tokenizer.h"
#include "nuance/vae.h"

/* What the pipeline needs to know about a model family (DESIGN §5: a descriptor, not version
 * checks scattered through the code). */
typedef struct sd_family {
    const char *name;         /* "sd1", "sd2"                                   */
    nu_prediction prediction; /* eps or v                                        */
    int latent_channels;      /* 4                                               */
    float scale_factor;       /* VAE latent scaling (0.18215)                    */
    int default_size;         /* pixels (sample_size * 8, or 512)                */
    const char *default_sampler; /* k-diffusion default for single files        */
} sd_family;

struct nu_sd {
    nu_sd_info info;
    sd_family fam;
    char name[256];
    char default_sampler[64];
    bool folder;                  /* diffusers folder                                */
    bool pred_override;           /* --prediction given: also overrides scheduler configs */
    nu_unet *unet;
    nu_vae *vae;
    nu_weights *clip_w;           /* text encoder weights (canonical HF names)       */
    nu_clip_config clip_cfg;
    nu_clip_tokenizer *tok;
    nu_pool *pool;
    /* diffusers folder: scheduler_config.json (parsed; kept for from_config with another class) */
    nu_json *sched_json;
    char sched_label[4200];
    nu_sched_kind sched_kind;     /* the folder's class                              */
    /* training noise schedule (k-diffusion family): LDM betas */
    nu_beta_schedule beta_schedule;
    int n_train;
    double beta_start, beta_end;
    /* LoRA: --lora files (every generation) and the folder of <lora:NAME:W> prompt tags */
    char **lora_paths;
    float *lora_weights;
    int n_loras;
    char *lora_dir;
    const nu_lora_set *lora;      /* the running generation's set (NULL: none): nu_nn.lora      */
    volatile sig_atomic_t cancel;
};

/* nu_error(s, "<prefix><the current nu_last_error()>"), prefix printf-style (sd_load.c). Safe where
 * nu_error(s, "...%s", nu_last_error()) is not: that formats the buffer into itself. */
nu_status sd_error_prefix(nu_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The LoRA set of one generation: the --lora files plus the prompt's tags (files looked up in
 * lora_model_dir); *out NULL when there is none (sd_load.c). */
nu_status sd_lora_build(nu_sd *sd, const nu_lora_tag *tags, int n_tags, nu_lora_set **out);

/* ---- text conditioning (sd_text.c) */

/* Conditioning for CFG: cond [S, D] and uncond [S, D] with the same S (a multiple of 77: one
 * block per 77-token chunk; the shorter prompt is padded with empty-prompt chunks). */
typedef struct sd_cond {
    int S, D;
    float *cond, *uncond; /* malloc'ed */
    int token_count;      /* A1111 "N/75" of the prompt */
} sd_cond;
nu_status sd_text_encode(nu_sd *sd, const char *prompt, const char *negative, int clip_skip, bool weighting,
                         bool need_uncond, sd_cond *out);
void sd_cond_free(sd_cond *c);

/* ---- noise sources (sd_sched.c) */

/* One image's random stream: torch's CPU generator or CUDA Philox (A1111 rng_philox.py). */
typedef struct sd_noise {
    nu_sd_rng kind;
    nu_rng cpu;
    uint64_t seed;
    uint64_t offset; /* Philox: one per randn call */
} sd_noise;
void sd_noise_seed(sd_noise *g, nu_sd_rng kind, uint64_t seed);
/* randn of a whole tensor of n elements (torch.randn(shape, generator)). */
void sd_noise_randn(sd_noise *g, float *out, int64_t n);
/* A nu_noise drawing from g (for nu_sample / nu_sched_step). */
nu_noise sd_noise_source(sd_noise *g);

/* ---- the sampling run of one image (sd_sched.c) */

typedef struct sd_run sd_run;
/* The guided network output (eps or v) for model input x_in [1, 4, h, w] at timestep t:
 * uncond + cfg * (cond - uncond), with the inpainting channels appended for 9-channel UNets. */
nu_status sd_model_guided(sd_run *r, const float *x_in, double t, float *out);

struct sd_run {
    nu_sd *sd;
    const nu_sd_params *p;
    int h, w;                 /* latent size                                         */
    int64_t n;                /* 4 * h * w                                           */
    const sd_cond *cond;
    float cfg;
    bool do_cfg;
    /* inpainting */
    const float *mask_lat;    /* [1, 1, h, w] 1 = repaint (nearest-downsampled)       */
    const float *masked_lat;  /* [1, 4, h, w] 9-channel: masked image latents         */
    const float *init_lat;    /* [1, 4, h, w] image latents (img2img, 4-ch inpainting)*/
    bool inpaint4;            /* blend with the noised image latents each step        */
    bool img2img;
    sd_noise *noise;
    const float *first_noise; /* the add_noise noise (inpainting blend re-noises with it) */
    /* buffers */
    float *xcat, *tb, *ctx, *outb; /* UNet batch: input [B, Cin, h, w], t [B], context [B, S, D], out */
    /* progress */
    int image, n_images, steps_done, n_steps;
    double t_start, t_last;
};

/* Which family a generation uses and the resolved sampler / scheduler names. */
typedef struct sd_choice {
    bool diffusers;             /* diffusers scheduler family                            */
    nu_sched_kind kind;         /* diffusers: class                                      */
    bool karras;                /* diffusers: use_karras_sigmas                          */
    nu_sampler sampler;         /* k-diffusion                                           */
    nu_sigma_schedule schedule; /* k-diffusion                                           */
    char sampler_name[48];      /* sd.cpp-style name for metadata                         */
    char schedule_name[32];
} sd_choice;
nu_status sd_choose(const nu_sd *sd, const nu_sd_params *p, sd_choice *c);

/* The diffusers scheduler for a choice: the folder's scheduler_config.json read as
 * <Class>.from_config(cfg) does (keys of other classes ignored, defaults of the class), plus the
 * generation's overrides (karras, eta, spacing). */
nu_status sd_sched_config(const nu_sd *sd, const nu_sd_params *p, const sd_choice *c, nu_sched_config *out);

/* One image's sampling schedule in either family. */
typedef struct sd_sampler {
    sd_choice ch;
    bool full_noise;          /* start from pure noise (txt2img, strength >= 1)           */
    /* diffusers */
    nu_sched *sched;
    int begin, len;           /* first index into scheduler.timesteps, len(timesteps)      */
    /* k-diffusion */
    nu_discrete_schedule ds;
    bool have_ds;
    float *sigmas;            /* steps + 1                                                 */
    int n_sigmas, start;      /* sampling runs sigmas[start..n_sigmas-1]                   */
} sd_sampler;
/* Builds the schedule for r->p (steps, strength, sampler, schedule); r->img2img says whether an
 * image is noised (strength applies). */
nu_status sd_sampler_init(sd_sampler *s, sd_run *r, const sd_choice *c);
void sd_sampler_free(sd_sampler *s);
/* Model evaluations' worth of progress steps this run will report. */
int sd_sampler_steps(const sd_sampler *s);
/* Start latents x (n): full noise: noise * init_noise_sigma (diffusers) or * sigma_max
 * (k-diffusion); otherwise x0 noised to the first step: scheduler.add_noise (diffusers) or
 * x0 + noise * sigma_start (k-diffusion). */
nu_status sd_sampler_start(sd_sampler *s, const float *x0, const float *noise, float *x, int64_t n);
/* Runs the denoising loop on x in place (progress, cancel and inpainting blend through r). */
nu_status sd_sampler_run(sd_sampler *s, sd_run *r, float *x);

#endif
