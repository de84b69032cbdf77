/*
 * nuance.h — the public pipeline API: Stable Diffusion 1.x / 2.x text-to-image, image-to-image and
 * inpainting from the checkpoints users have (single-file LDM .safetensors / .gguf, diffusers
 * folders). The engine, I/O, sampling and tokenizer APIs it builds on are in include/nuance/.
 *
 * Tutorial
 * --------
 *     #include <nuance.h>
 *
 *     nu_sd_load_params lp;
 *     nu_sd_load_params_init(&lp);
 *     lp.model = "v1-5-pruned-emaonly.safetensors";    // or a diffusers folder
 *     lp.vocab = "bpe_simple_vocab_16e6.txt.gz";        // single files carry no vocabulary
 *     nu_sd *sd;
 *     if (nu_sd_load(&lp, &sd) != NU_OK) { fprintf(stderr, "%s\n", nu_last_error()); return 1; }
 *
 *     nu_sd_params p;
 *     nu_sd_params_init(&p);
 *     p.prompt = "a photograph of an astronaut riding a (horse:1.2)";
 *     p.negative_prompt = "lowres, bad anatomy";
 *     p.seed = 42;
 *     nu_sd_output out;
 *     if (nu_sd_generate(sd, &p, &out) != NU_OK) { fprintf(stderr, "%s\n", nu_last_error()); ... }
 *     nu_image_text meta = {"parameters", out.parameters[0]};   // A1111 metadata
 *     nu_image_save("out.png", &out.images[0], &meta, 1, 0);
 *     nu_sd_output_free(&out);
 *     nu_sd_free(sd);
 *
 * img2img: set p.init_image (and p.strength); inpainting: also p.mask (white = repaint). A batch
 * (p.batch_count = N) gives N images with seeds seed, seed+1, ... (as stable-diffusion.cpp and
 * A1111 number them). p.progress is called after every step (return non-zero to cancel);
 * nu_sd_cancel() may be called from another thread or a signal handler.
 *
 * Sampling semantics
 * ------------------
 * A single-file checkpoint samples with k-diffusion semantics (A1111 / ComfyUI /
 * stable-diffusion.cpp): sigma schedules from the LDM float64 betas, samplers euler, euler_a,
 * heun, dpm2, dpm++2s_a, dpm++2m, dpm++2m_sde, lms, ddim, ddpm, lcm, ...; schedules discrete,
 * karras, exponential, sgm_uniform, simple. A diffusers folder samples with diffusers' scheduler
 * classes configured from its scheduler/scheduler_config.json (beta schedule, timestep spacing,
 * steps offset, prediction type), so that with NU_SD_RNG_CPU and the same seed the result
 * reproduces diffusers' StableDiffusion{,Img2Img,Inpaint}Pipeline: euler <-> EulerDiscrete,
 * euler_a <-> EulerAncestralDiscrete, heun <-> HeunDiscrete, ddim <-> DDIM, dpm++2m (+karras) <->
 * DPMSolverMultistep, lcm <-> LCM, lms <-> LMSDiscrete, ddpm <-> DDPM (pndm, unipc by name);
 * samplers without a diffusers class fall back to k-diffusion with the folder's betas.
 * p.sampling overrides the choice. docs/pipeline.md has the details.
 *
 * Everything is implemented in src/pipeline/ and tested by tests/test_sd_pipeline.c against
 * ../shared/reference/sd{1,2}_tiny (every mode x scheduler of the diffusers reference runs).
 */
#ifndef NUANCE_H
#define NUANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nuance/io.h"
#include "nuance/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ Stable Diffusion: loading */

typedef struct nu_sd nu_sd;

/* A LoRA file and its weight (--lora FILE:WEIGHT). */
typedef struct nu_sd_lora {
    const char *path;
    float weight;
} nu_sd_lora;

typedef struct nu_sd_load_params {
    const char *model;        /* single file (.safetensors/.gguf, LDM names) or diffusers folder */
    const char *vae;          /* optional: a separate VAE file or folder (--vae)                  */
    const char *vocab;        /* optional: CLIP vocabulary (--vocab): bpe_simple_vocab_16e6.txt.gz,
                                 vocab.json/merges.txt or a tokenizer folder. Default: the
                                 folder's tokenizer/, else one found next to a single file     */
    const char *model_config; /* optional: the LDM config of a single file as JSON (the
                                 v1-inference.yaml content): UNet/VAE/text architecture details
                                 the shapes cannot show, parameterization, betas, scale_factor */
    nu_type weight_type;      /* --type: NU_TYPE_COUNT keeps weights as stored; f16, bf16, q8_0,
                                 q4_0, ... convert matrix weights at load; f32 computes in f32  */
    const char *prediction;   /* NULL: detect; "eps"/"epsilon" or "v"/"v_prediction" overrides  */
    int n_threads;            /* 0: one per online CPU                                          */
    const nu_sd_lora *loras;  /* LoRAs applied to every generation (text-encoder layers; UNet
                                 layers are refused until the UNet takes a LoRA set)            */
    int n_loras;
    const char *lora_model_dir; /* folder where <lora:NAME:W> prompt tags are looked up          */
} nu_sd_load_params;
void nu_sd_load_params_init(nu_sd_load_params *p);

/* Loads the UNet, VAE, text encoder and tokenizer and detects the family (SD 1.x / 2.x, eps or v,
 * 4- or 9-channel inpainting UNet). Any problem (missing/truncated/unknown file, a text encoder
 * that does not fit the UNet, no vocabulary) is one line in nu_last_error(). */
nu_status nu_sd_load(const nu_sd_load_params *p, nu_sd **out);
void nu_sd_free(nu_sd *sd);

/* What was loaded. Strings live as long as the nu_sd. */
typedef struct nu_sd_info {
    const char *name;          /* model name for metadata: file stem or folder name            */
    const char *family;        /* "sd1" or "sd2"                                               */
    const char *prediction;    /* "epsilon" or "v_prediction"                                  */
    bool diffusers_folder;     /* true: diffusers scheduler semantics by default                */
    bool inpainting;           /* 9-channel UNet (latents + mask + masked-image latents)        */
    int default_width, default_height; /* the UNet's training size (sample_size * 8) or 512    */
    const char *default_sampler;       /* "euler_a", or the folder's scheduler class name       */
    int unet_in_channels, latent_channels, context_dim, text_layers;
} nu_sd_info;
const nu_sd_info *nu_sd_get_info(const nu_sd *sd);

/* ================================================================ Stable Diffusion: generation */

typedef enum nu_sd_rng {
    NU_SD_RNG_CPU,  /* torch CPU generator (torch.Generator().manual_seed(seed)): diffusers on CPU */
    NU_SD_RNG_CUDA, /* Philox 4x32-10 as torch.randn on CUDA (A1111 "GPU", sd.cpp "cuda")         */
    NU_SD_RNG_COUNT
} nu_sd_rng;

typedef enum nu_sd_sampling {
    NU_SD_SAMPLING_AUTO,       /* diffusers folder: diffusers schedulers; single file: k-diffusion */
    NU_SD_SAMPLING_KDIFFUSION, /* k-diffusion samplers on sigma schedules                         */
    NU_SD_SAMPLING_DIFFUSERS,  /* diffusers scheduler classes                                     */
    NU_SD_SAMPLING_COUNT
} nu_sd_sampling;

/* Passed to the progress callback after every step. */
typedef struct nu_sd_step {
    int image, n_images;       /* which image of the batch (0-based) and how many              */
    int step, n_steps;         /* steps done (1..n_steps) of this image                         */
    double step_seconds;       /* duration of this step                                          */
    double elapsed_seconds;    /* since this image's sampling began                              */
    /* Latents [1, C, H/8, W/8]. diffusers family: after scheduler.step (and the inpainting blend)
     * as diffusers' callback_on_step_end sees them; one call per entry of scheduler.timesteps
     * (Heun: 2 per step but the last). k-diffusion family: x at the step's first model call. */
    const float *latents;
    /* diffusers family: the guided model output given to scheduler.step (eps or v);
     * k-diffusion: the denoised estimate D(x, sigma). */
    const float *model_output;
    int64_t n;                 /* elements of latents / model_output                            */
} nu_sd_step;
/* Return non-zero to cancel (nu_sd_generate then fails with NU_ERR_CANCELLED). */
typedef int (*nu_sd_progress_fn)(void *user, const nu_sd_step *s);

typedef struct nu_sd_params {
    const char *prompt;          /* A1111 syntax: (x), (x:1.3), [x], BREAK; any length (chunks)  */
    const char *negative_prompt; /* NULL or "": empty                                            */
    int width, height;           /* multiples of 8; 0: the init image's size, else the default   */
    int steps;                   /* 0: 20                                                        */
    float cfg_scale;             /* classifier-free guidance (7.0); <= 1 runs the cond pass only */
    const char *sampler;         /* NULL: the model's default; names as sd.cpp --sampling-method */
    const char *schedule;        /* NULL: "discrete"; karras, exponential, sgm_uniform, simple   */
    nu_sd_sampling sampling;     /* AUTO                                                         */
    int64_t seed;                /* < 0: random                                                  */
    nu_sd_rng rng;               /* CPU                                                          */
    const nu_image *init_image;  /* img2img / inpainting source (any channels; RGB used)         */
    const nu_image *mask;        /* inpainting mask (white = repaint; luminance, binarised at .5) */
    double strength;             /* img2img / inpainting denoising strength (0.75; 1 = all noise)*/
    int batch_count;             /* images, seeds seed..seed+n-1 (1)                             */
    double eta;                  /* NaN: default (ancestral 1, DDIM 0); --eta                     */
    int clip_skip;               /* <= 0: the family default (SD1 1, SD2 penultimate)            */
    const char *timestep_spacing;/* NULL: the scheduler config's; leading/linspace/trailing       */
    bool vae_tiling;             /* tiled VAE encode/decode (64-latent tiles, 25% overlap)        */
    bool prompt_weighting;       /* true: A1111 emphasis syntax; false: the text is taken as is   */
    bool keep_float;             /* also return the float images and the final latents           */
    nu_sd_progress_fn progress;
    void *progress_user;
} nu_sd_params;
void nu_sd_params_init(nu_sd_params *p);

typedef struct nu_sd_output {
    int n;                /* images                                                          */
    int width, height;
    nu_image *images;     /* [n] RGB, 8 bits: round(255 * clamp(x/2 + 0.5, 0, 1))            */
    int64_t *seeds;       /* [n]                                                             */
    char **parameters;    /* [n] A1111 "parameters" text (PNG tEXt key "parameters")         */
    float **image_f32;    /* keep_float: [n] NHWC [H, W, 3] in [0, 1] (diffusers output_type np) */
    float **latents;      /* keep_float: [n] final latents [1, C, H/8, W/8]                   */
} nu_sd_output;
void nu_sd_output_free(nu_sd_output *o);

/* Runs the pipeline. On error *out is empty (nothing to free) and nu_last_error() says why. */
nu_status nu_sd_generate(nu_sd *sd, const nu_sd_params *p, nu_sd_output *out);

/* Asks a running nu_sd_generate to stop (thread- and async-signal-safe): it returns
 * NU_ERR_CANCELLED at the next network node. Made while no generation runs, it cancels the next
 * one. The request is cleared when nu_sd_generate returns. */
void nu_sd_cancel(nu_sd *sd);

/* The A1111 infotext of a generation, as stored in the PNG "parameters" chunk:
 *   <prompt>\nNegative prompt: <negative>\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42,
 *   Size: 512x512, Model: name[, Denoising strength: 0.75][, Clip skip: 2], Version: nuance 0.1.0
 * (no "Negative prompt" line when it is empty; "Schedule type: Karras" after the sampler when the
 * schedule is not the default). malloc'ed; NULL on out of memory. */
char *nu_sd_infotext(const nu_sd *sd, const nu_sd_params *p, int64_t seed, int width, int height);

/* A1111 display name of a sampler name ("euler_a" -> "Euler a", "dpm++2m" -> "DPM++ 2M");
 * the input itself when unknown. */
const char *nu_sd_sampler_display_name(const char *name);

#ifdef __cplusplus
}
#endif
#endif
