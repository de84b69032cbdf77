/*
 * nuance/sample.h — noise schedules, denoiser parameterisations, k-diffusion samplers and
 * diffusers schedulers. Model-agnostic: the network is a callback, so Stable Diffusion, the DiT
 * and the models trained by `nuance train` all sample through this module.
 *
 * Two families, two semantics
 * ---------------------------
 * 1. k-diffusion samplers (nu_sample): the state is x in "sigma space" (x = x0 + sigma * noise,
 *    variance exploding) and the model is a denoiser D(x, sigma) -> x0 estimate. This is what
 *    A1111, ComfyUI and stable-diffusion.cpp do with single-file checkpoints. A discrete-time
 *    eps/v network becomes a denoiser through nu_denoiser (c_in / c_skip / c_out scalings and
 *    k-diffusion's log-sigma interpolation sigma <-> t). Sigma schedules come from nu_sigmas_*.
 *
 *        nu_discrete_schedule ds;                        // SD: LDM betas, 1000 steps
 *        nu_discrete_schedule_init_betas(&ds, NU_BETA_SCALED_LINEAR, 1000, 0.00085, 0.012, true);
 *        float sigmas[21];
 *        nu_sigmas_make(NU_SCHEDULE_KARRAS, &ds, 20, sigmas);
 *        nu_denoiser dn;                                 // eps network -> denoiser (CFG inside net)
 *        nu_denoiser_init(&dn, NU_PRED_EPS, &ds, unet_eps_with_cfg, &my_state, n);
 *        nu_rng rng; nu_rng_seed(&rng, seed);
 *        nu_rng_randn_f32(&rng, x, n);                   // x = randn * sigmas[0]
 *        for (int64_t i = 0; i < n; i++) x[i] *= sigmas[0];
 *        nu_sampler_params p; nu_sampler_params_init(&p, NU_SAMPLER_EULER_A);
 *        nu_noise noise = { .rng = &rng };               // torch.randn_like(x) per noise draw
 *        nu_sample(NU_SAMPLER_EULER_A, &p, nu_denoiser_call, &dn, sigmas, 21, x, n, &noise);
 *
 * 2. diffusers schedulers (nu_sched): the state is x in the scheduler's own scale (VP for DDIM,
 *    DDPM, PNDM, LCM, DPM-Solver, UniPC; sigma-scaled for Euler, Heun, LMS), the model sees
 *    scale_model_input(x) and the scheduler's integer or fractional timestep and returns its raw
 *    output (eps, v or x0). The loop is diffusers' loop:
 *
 *        nu_sched_config c; nu_sched_config_from_json(&c, text, len, "scheduler_config.json");
 *        nu_sched *s; nu_sched_new(&c, &s); nu_sched_set_timesteps(s, steps, n);
 *        x = randn * nu_sched_init_noise_sigma(s);
 *        for (int i = 0; i < nu_sched_len(s); i++) {
 *            nu_sched_scale_model_input(s, x, xin, n);
 *            unet(xin, nu_sched_timestep(s, i), out);    // + CFG
 *            nu_sched_step(s, out, x, n, &noise, NULL);
 *        }
 *
 * Numerics. Schedules that diffusers/LDM compute in float32/float64 are reproduced bit for bit
 * (torch.linspace and torch.cumprod are emulated, see docs/samplers.md). Sampler and scheduler
 * arithmetic is done per element in double and stored as float32 (the reference runs are
 * float32; their own float32-vs-float64 spread is ~1e-6). No allocation happens inside a step:
 * nu_sample allocates its O(n) work buffers once per call, nu_sched once per set_timesteps.
 *
 * Tested by tests/test_schedules.c (every key of ../shared/reference/schedules) and
 * tests/test_samplers.c (every k-diffusion and diffusers trajectory of ../shared/reference/samplers).
 */
#ifndef NUANCE_SAMPLE_H
#define NUANCE_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nuance/io.h" /* nu_json */
#include "nuance/rng.h"
#include "nuance/tensor.h" /* nu_status */

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ training noise schedules */

typedef enum nu_beta_schedule {
    NU_BETA_LINEAR,            /* linspace(beta_start, beta_end, N)                  (DDPM)       */
    NU_BETA_SCALED_LINEAR,     /* linspace(sqrt(beta_start), sqrt(beta_end), N)^2    (LDM, SD)    */
    NU_BETA_SQUAREDCOS_CAP_V2, /* Nichol & Dhariwal 2021 cosine, betas capped at 0.999 (GLIDE)   */
    NU_BETA_SCHEDULE_COUNT
} nu_beta_schedule;

/* "linear", "scaled_linear", "squaredcos_cap_v2" (diffusers' names). */
nu_status nu_beta_schedule_from_name(const char *name, nu_beta_schedule *out);
const char *nu_beta_schedule_name(nu_beta_schedule s);

/* Betas as diffusers computes them: float32 torch.linspace (emulated exactly), squared in float32
 * for scaled_linear; the cosine schedule in double then rounded. betas has n_train entries. */
nu_status nu_betas_f32(nu_beta_schedule s, int n_train, double beta_start, double beta_end, float *betas);
/* Betas as LDM/CompVis computes them (make_beta_schedule): float64 torch.linspace, so
 * NU_BETA_SCALED_LINEAR is LDM's "linear". */
nu_status nu_betas_f64(nu_beta_schedule s, int n_train, double beta_start, double beta_end, double *betas);
/* torch.cumprod(1 - betas) in float32 (torch's CPU kernel keeps a double running product). */
void nu_alphas_cumprod_f32(const float *betas, int n, float *alphas_cumprod);
/* np.cumprod(1 - betas) in float64 (LDM). */
void nu_alphas_cumprod_f64(const double *betas, int n, double *alphas_cumprod);
/* diffusers' rescale_zero_terminal_snr (Lin et al. 2023, Alg. 1) applied to float32 betas. */
void nu_betas_rescale_zero_terminal_snr(float *betas, int n);

/* torch.linspace(start, end, steps) for float32 / float64 on x86-64 (AVX2 kernels), bit-exact:
 * step = (end-start)/(steps-1) in the dtype, halves computed from each end with an FMA base,
 * elements base + i*step in 16/8-wide chunks (see docs/samplers.md). steps >= 1. */
void nu_torch_linspace_f32(double start, double end, int steps, float *out);
void nu_torch_linspace_f64(double start, double end, int steps, double *out);

/* ================================================================ discrete-time models in sigma space */

/* k-diffusion's DiscreteSchedule: the training noise levels of a discrete-time model,
 * sigma(t) = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t]) for t = 0..n-1 (ascending). */
typedef struct nu_discrete_schedule {
    int n;             /* number of training timesteps                                    */
    float *sigmas;     /* (n) float32, as k-diffusion stores them                          */
    float *log_sigmas; /* (n) log(sigmas) in float32                                       */
} nu_discrete_schedule;

/* From float32 alphas_cumprod (a CompVis model's buffer, or diffusers' alphas_cumprod). */
nu_status nu_discrete_schedule_init(nu_discrete_schedule *d, const float *alphas_cumprod, int n);
/* From a beta schedule: ldm_f64 = true computes the betas and cumprod in float64 and casts to
 * float32 as an LDM checkpoint's alphas_cumprod buffer (what A1111/ComfyUI/sd.cpp use);
 * false uses diffusers' float32 computation. */
nu_status nu_discrete_schedule_init_betas(nu_discrete_schedule *d, nu_beta_schedule s, int n_train, double beta_start,
                                          double beta_end, bool ldm_f64);
void nu_discrete_schedule_free(nu_discrete_schedule *d);
double nu_discrete_sigma_min(const nu_discrete_schedule *d); /* sigmas[0]   */
double nu_discrete_sigma_max(const nu_discrete_schedule *d); /* sigmas[n-1] */
/* DiscreteSchedule.sigma_to_t: t with log(sigma) interpolated linearly between the two
 * neighbouring training log-sigmas, clamped to [0, n-1]; quantize = nearest training index. */
double nu_discrete_sigma_to_t(const nu_discrete_schedule *d, double sigma, bool quantize);
/* DiscreteSchedule.t_to_sigma: exp of the linear interpolation of log_sigmas at t in [0, n-1]. */
double nu_discrete_t_to_sigma(const nu_discrete_schedule *d, double t);

/* ================================================================ sigma schedules (k-diffusion) */

/* All write n+1 values: n decreasing sigmas and a trailing 0 (k-diffusion's append_zero). */
typedef enum nu_sigma_schedule {
    NU_SCHEDULE_DISCRETE,        /* "discrete"/"normal": DiscreteSchedule.get_sigmas(n), t = linspace(N-1, 0, n) */
    NU_SCHEDULE_KARRAS,          /* "karras": rho = 7, sigma_min/max of the model                      */
    NU_SCHEDULE_EXPONENTIAL,     /* "exponential": log-linear from sigma_max to sigma_min               */
    NU_SCHEDULE_POLYEXPONENTIAL, /* "polyexponential": rho = 1 (= exponential) unless given             */
    NU_SCHEDULE_VP,              /* "vp": continuous VP (beta_d 19.9, beta_min 0.1, eps_s 1e-3)         */
    NU_SCHEDULE_SGM_UNIFORM,     /* "sgm_uniform": t = linspace(N-1, 0, n+1)[:-1] (ComfyUI)              */
    NU_SCHEDULE_SIMPLE,          /* "simple": every (N/n)-th training sigma from the top (ComfyUI)      */
    NU_SCHEDULE_COUNT
} nu_sigma_schedule;

nu_status nu_sigma_schedule_from_name(const char *name, nu_sigma_schedule *out);
const char *nu_sigma_schedule_name(nu_sigma_schedule s);

/* get_sigmas_karras(n, sigma_min, sigma_max, rho) — Karras et al. 2022, eq. (5). */
nu_status nu_sigmas_karras(int n, double sigma_min, double sigma_max, double rho, float *out);
/* get_sigmas_exponential(n, sigma_min, sigma_max). */
nu_status nu_sigmas_exponential(int n, double sigma_min, double sigma_max, float *out);
/* get_sigmas_polyexponential(n, sigma_min, sigma_max, rho). */
nu_status nu_sigmas_polyexponential(int n, double sigma_min, double sigma_max, double rho, float *out);
/* get_sigmas_vp(n, beta_d, beta_min, eps_s) — Song et al. 2021 VP SDE as sigmas. */
nu_status nu_sigmas_vp(int n, double beta_d, double beta_min, double eps_s, float *out);
/* CompVisDenoiser.get_sigmas(n) (A1111 "normal", sd.cpp "discrete"). */
nu_status nu_sigmas_discrete(const nu_discrete_schedule *d, int n, float *out);
/* ComfyUI sgm_uniform and simple. */
nu_status nu_sigmas_sgm_uniform(const nu_discrete_schedule *d, int n, float *out);
nu_status nu_sigmas_simple(const nu_discrete_schedule *d, int n, float *out);
/* Rectified-flow noise levels t_i = 1 - i/n (i = 0..n-1) shifted as SD3 does,
 * shift*t / (1 + (shift-1)*t), then 0. shift = 1 is plain linear. */
nu_status nu_sigmas_flow(int n, double shift, float *out);
/* Dispatcher with the usual parameters (karras rho 7, polyexponential rho 1, vp defaults,
 * sigma_min/max = the model's); d may be NULL only for NU_SCHEDULE_VP. */
nu_status nu_sigmas_make(nu_sigma_schedule s, const nu_discrete_schedule *d, int n, float *out);

/* ================================================================ denoiser parameterisations */

typedef enum nu_prediction {
    NU_PRED_EPS,    /* "epsilon": the network predicts the noise                              */
    NU_PRED_V,      /* "v_prediction": v = alpha*eps - sigma_t*x0 (Salimans & Ho 2022)         */
    NU_PRED_SAMPLE, /* "sample": the network predicts x0                                      */
    NU_PRED_FLOW,   /* "flow": rectified flow, x_s = (1-s)x0 + s*eps, network predicts eps-x0  */
    NU_PREDICTION_COUNT
} nu_prediction;

/* "epsilon"/"eps", "v_prediction"/"v", "sample"/"x0", "flow"/"flow_prediction". */
nu_status nu_prediction_from_name(const char *name, nu_prediction *out);
const char *nu_prediction_name(nu_prediction p);

/* Scalings of k-diffusion's wrappers (sigma_data = 1): for a network F(x_in, t),
 * D(x, sigma) = c_skip*x + c_out*F(c_in*x, t(sigma)).
 *   eps   (DiscreteEpsDDPMDenoiser): c_skip 1,             c_out -sigma,            c_in 1/sqrt(sigma^2+1)
 *   v     (DiscreteVDDPMDenoiser):   c_skip 1/(sigma^2+1), c_out -sigma/sqrt(s^2+1), c_in 1/sqrt(sigma^2+1)
 *   sample:                          c_skip 0,             c_out 1,                  c_in 1/sqrt(sigma^2+1)
 *   flow  (sigma in [0,1]):          c_skip 1,             c_out -sigma,             c_in 1            */
void nu_denoiser_scalings(nu_prediction p, double sigma, double *c_skip, double *c_out, double *c_in);

/* A discrete-time network: out = F(x_in, t), n elements (the caller does CFG inside). */
typedef nu_status (*nu_model_fn)(void *user, const float *x_in, double t, float *out, int64_t n);

/* A network wrapped as a denoiser. t = sigma_to_t(sigma) through `sched` (for NU_PRED_FLOW
 * without a schedule, t = sigma * flow_t_scale). */
typedef struct nu_denoiser {
    nu_prediction pred;
    const nu_discrete_schedule *sched; /* not owned; NULL only for NU_PRED_FLOW                */
    bool quantize;                     /* round t to the nearest training step (default false) */
    double flow_t_scale;               /* NU_PRED_FLOW: t = sigma * scale (default 1000)       */
    nu_model_fn model;
    void *user;
    float *buf; /* (n) scratch: c_in*x, then F                                                  */
    int64_t n;
} nu_denoiser;

nu_status nu_denoiser_init(nu_denoiser *dn, nu_prediction pred, const nu_discrete_schedule *sched, nu_model_fn model,
                           void *user, int64_t n);
void nu_denoiser_free(nu_denoiser *dn);
/* A nu_denoise_fn: pass nu_denoiser_call with user = the nu_denoiser. */
nu_status nu_denoiser_call(void *dn, const float *x, float sigma, float *denoised, int64_t n);

/* ================================================================ noise */

/* Gaussian noise for stochastic samplers. If fn is set it is called for each draw (sigma and
 * sigma_next are k-diffusion's noise_sampler(sigma, sigma_next) arguments; diffusers schedulers
 * pass the step's sigmas or 0); otherwise rng draws nu_rng_randn_f32(rng, out, n), i.e.
 * torch.randn_like(x) on the generator rng stands for. */
typedef nu_status (*nu_noise_fn)(void *user, float *out, int64_t n, double sigma, double sigma_next);
typedef struct nu_noise {
    nu_noise_fn fn;
    void *user;
    nu_rng *rng;
} nu_noise;

/* ================================================================ k-diffusion samplers */

/* denoised = D(x, sigma): x and denoised have n elements (the whole batch; sigma is shared). */
typedef nu_status (*nu_denoise_fn)(void *user, const float *x, float sigma, float *denoised, int64_t n);

typedef enum nu_sampler {
    NU_SAMPLER_EULER,              /* "euler"        sample_euler (with s_churn: Karras Alg. 2)         */
    NU_SAMPLER_EULER_A,            /* "euler_a"      sample_euler_ancestral                              */
    NU_SAMPLER_HEUN,               /* "heun"         sample_heun                                         */
    NU_SAMPLER_DPM2,               /* "dpm2"         sample_dpm_2                                        */
    NU_SAMPLER_DPM2_A,             /* "dpm2_a"       sample_dpm_2_ancestral                              */
    NU_SAMPLER_LMS,                /* "lms"          sample_lms (order 4)                                */
    NU_SAMPLER_DPMPP_2S_A,         /* "dpm++2s_a"    sample_dpmpp_2s_ancestral                           */
    NU_SAMPLER_DPMPP_SDE,          /* "dpm++sde"     sample_dpmpp_sde (r = 1/2)                          */
    NU_SAMPLER_DPMPP_2M,           /* "dpm++2m"      sample_dpmpp_2m                                     */
    NU_SAMPLER_DPMPP_2M_SDE,       /* "dpm++2m_sde"  sample_dpmpp_2m_sde, solver_type midpoint           */
    NU_SAMPLER_DPMPP_2M_SDE_HEUN,  /* "dpm++2m_sde_heun" the same with solver_type heun                  */
    NU_SAMPLER_DPMPP_3M_SDE,       /* "dpm++3m_sde"  sample_dpmpp_3m_sde                                 */
    NU_SAMPLER_DDIM,               /* "ddim"  DDIM in sigma space: euler_a's update with eta (default 0,
                                      then identical to euler; ComfyUI's ddim)                          */
    NU_SAMPLER_DDPM,               /* "ddpm"  ancestral DDPM posterior step in sigma space (ComfyUI)     */
    NU_SAMPLER_LCM,                /* "lcm"   x = D(x); x += sigma_next * noise (ComfyUI sample_lcm)     */
    NU_SAMPLER_COUNT
} nu_sampler;

typedef struct nu_sample_step_info {
    int i;                /* step index, 0..n_steps-1                                   */
    int n_steps;          /* len(sigmas) - 1                                            */
    double sigma;         /* sigmas[i]                                                   */
    double sigma_hat;     /* the sigma the first model call of the step used (churn)     */
    double sigma_next;    /* sigmas[i+1]                                                 */
    const float *x;       /* x at the first model call of the step                       */
    const float *denoised;/* D(x, sigma_hat)                                              */
    int64_t n;
} nu_sample_step_info;
/* Per-step callback (k-diffusion's callback): return non-NU_OK to stop sampling with that status. */
typedef nu_status (*nu_sample_callback)(void *user, const nu_sample_step_info *info);

typedef struct nu_sampler_params {
    double eta;       /* ancestral / SDE noise scale (1; ddim 0)                              */
    double s_noise;   /* noise multiplier (1)                                                 */
    double s_churn;   /* euler/heun/dpm2 churn (0 = none)                                    */
    double s_tmin;    /* churn only for sigma in [s_tmin, s_tmax] (0, +inf)                   */
    double s_tmax;
    double r;         /* dpm++sde intermediate point (0.5)                                    */
    int lms_order;    /* lms history length (4)                                               */
    nu_sample_callback callback;
    void *callback_user;
} nu_sampler_params;

void nu_sampler_params_init(nu_sampler_params *p, nu_sampler s);
/* sd.cpp / A1111 / ComfyUI / k-diffusion names (case-insensitive; "-" and "_" and "++"/"pp"
 * spellings accepted): euler, euler_a, heun, dpm2, dpm2_a, lms, dpm++2s_a, dpm++sde, dpm++2m,
 * dpm++2m_sde, dpm++2m_sde_heun, dpm++3m_sde, ddim, ddpm, lcm, sample_<k-diffusion name>. */
nu_status nu_sampler_from_name(const char *name, nu_sampler *out);
const char *nu_sampler_name(nu_sampler s);
/* True if the sampler draws noise with these parameters (then `noise` must be given). */
bool nu_sampler_is_stochastic(nu_sampler s, const nu_sampler_params *p);
/* Number of model evaluations nu_sample will make for these sigmas (for progress bars). */
int nu_sampler_model_calls(nu_sampler s, const float *sigmas, int n_sigmas);

/* Runs sampler s from x (n elements, already at noise level sigmas[0], e.g. randn*sigmas[0]) down
 * the schedule sigmas[0..n_sigmas-1] (decreasing, usually ending at 0); x is overwritten with the
 * result. noise may be NULL for deterministic samplers. */
nu_status nu_sample(nu_sampler s, const nu_sampler_params *p, nu_denoise_fn model, void *model_user,
                    const float *sigmas, int n_sigmas, float *x, int64_t n, const nu_noise *noise);

/* ================================================================ diffusers schedulers */

typedef enum nu_sched_kind {
    NU_SCHED_DDIM,                  /* DDIMScheduler                                          */
    NU_SCHED_DDPM,                  /* DDPMScheduler                                          */
    NU_SCHED_PNDM,                  /* PNDMScheduler (skip_prk_steps = true only)              */
    NU_SCHED_LMS,                   /* LMSDiscreteScheduler                                   */
    NU_SCHED_EULER,                 /* EulerDiscreteScheduler                                 */
    NU_SCHED_EULER_ANCESTRAL,       /* EulerAncestralDiscreteScheduler                        */
    NU_SCHED_HEUN,                  /* HeunDiscreteScheduler                                  */
    NU_SCHED_DPMSOLVER_MULTISTEP,   /* DPMSolverMultistepScheduler                            */
    NU_SCHED_UNIPC,                 /* UniPCMultistepScheduler                                */
    NU_SCHED_LCM,                   /* LCMScheduler                                           */
    NU_SCHED_KIND_COUNT
} nu_sched_kind;

typedef enum nu_timestep_spacing {
    NU_SPACING_LEADING,  /* (arange(n) * (N // n)) + steps_offset, descending                  */
    NU_SPACING_LINSPACE, /* linspace(0, N-1, n), descending                                      */
    NU_SPACING_TRAILING, /* round(arange(N, 0, -N/n)) - 1                                        */
    NU_SPACING_COUNT
} nu_timestep_spacing;

typedef enum nu_ddpm_variance {
    NU_DDPM_FIXED_SMALL,     /* posterior variance beta~_t (default)          */
    NU_DDPM_FIXED_SMALL_LOG, /* same, via log (std = exp(0.5 log var))         */
    NU_DDPM_FIXED_LARGE,     /* beta_t                                         */
    NU_DDPM_VARIANCE_COUNT
} nu_ddpm_variance;

typedef enum nu_dpm_algorithm {
    NU_DPM_SOLVER_PP,     /* "dpmsolver++" (data prediction; default)  */
    NU_DPM_SOLVER,        /* "dpmsolver"   (noise prediction)          */
    NU_DPM_SDE_SOLVER_PP, /* "sde-dpmsolver++"                         */
    NU_DPM_SDE_SOLVER,    /* "sde-dpmsolver"                           */
    NU_DPM_ALGORITHM_COUNT
} nu_dpm_algorithm;

/* scheduler_config.json, with diffusers 0.27's defaults for the class (nu_sched_config_init). */
typedef struct nu_sched_config {
    nu_sched_kind kind;
    int num_train_timesteps;            /* 1000                                                    */
    double beta_start, beta_end;        /* 0.0001, 0.02 (0.00085, 0.012 for Heun and LCM)          */
    nu_beta_schedule beta_schedule;     /* linear (scaled_linear for LCM)                          */
    const float *trained_betas;         /* optional, num_train_timesteps values, not owned         */
    bool rescale_betas_zero_snr;        /* false                                                   */
    nu_prediction prediction_type;      /* epsilon                                                 */
    nu_timestep_spacing timestep_spacing; /* class default (leading: DDIM/DDPM/PNDM/LCM)             */
    int steps_offset;                   /* 0                                                       */
    bool set_alpha_to_one;              /* DDIM, LCM: true; PNDM: false                            */
    bool clip_sample;                   /* DDIM, DDPM: true; Heun, LCM: false                      */
    double clip_sample_range;           /* 1                                                       */
    bool thresholding;                  /* not supported: nu_sched_new fails if set                */
    bool use_karras_sigmas;             /* Euler, Heun, LMS, DPM-Solver, UniPC                      */
    double sigma_min, sigma_max;        /* Euler karras overrides; NaN = from the schedule          */
    nu_ddpm_variance variance_type;     /* DDPM                                                    */
    int solver_order;                   /* DPM-Solver / UniPC: 2 (1..3)                            */
    nu_dpm_algorithm algorithm_type;    /* DPM-Solver                                              */
    bool solver_type_heun;              /* DPM-Solver solver_type "heun" (default "midpoint")       */
    bool lower_order_final;             /* true                                                    */
    bool euler_at_final;                /* false                                                   */
    bool final_sigmas_zero;             /* DPM-Solver: true ("zero"); UniPC (0.27): false ("sigma_min") */
    double lambda_min_clipped;          /* -inf                                                    */
    bool unipc_bh1;                     /* UniPC solver_type "bh1" (default "bh2")                 */
    bool predict_x0;                    /* UniPC: true                                             */
    int disable_corrector[16];          /* UniPC: step indices without corrector                   */
    int n_disable_corrector;
    bool skip_prk_steps;                /* PNDM: must be true (default here; SD's configs set it)  */
    int original_inference_steps;       /* LCM: 50                                                 */
    double timestep_scaling;            /* LCM: 10                                                 */
    double eta;                         /* DDIM step eta (a pipeline argument; 0)                  */
    double s_churn, s_tmin, s_tmax, s_noise; /* Euler step arguments (0, 0, inf, 1)                */
} nu_sched_config;

void nu_sched_config_init(nu_sched_config *c, nu_sched_kind kind);
/* "DDIMScheduler", ... (diffusers class names) or short names "ddim", "ddpm", "pndm", "lms",
 * "euler", "euler_a", "heun", "dpm++2m" (DPMSolverMultistep), "unipc", "lcm". */
nu_status nu_sched_kind_from_name(const char *name, nu_sched_kind *out);
const char *nu_sched_kind_name(nu_sched_kind k); /* diffusers class name */
nu_status nu_timestep_spacing_from_name(const char *name, nu_timestep_spacing *out);
/* Parses scheduler_config.json text: `_class_name` selects the kind (else c->kind is kept),
 * nu_sched_config_init gives the class defaults, every known key overrides them. Unknown or
 * unsupported values (a beta_schedule, a prediction type, PNDM with PRK steps, thresholding)
 * return an error naming `label` and the key. trained_betas in JSON are not supported. */
nu_status nu_sched_config_from_json(nu_sched_config *c, const char *json, size_t len, const char *label);
/* The same over an already parsed JSON object. */
nu_status nu_sched_config_from_json_obj(nu_sched_config *c, const nu_json *obj, const char *label);

typedef struct nu_sched nu_sched;

nu_status nu_sched_new(const nu_sched_config *c, nu_sched **out);
void nu_sched_free(nu_sched *s);
/* scheduler.set_timesteps(steps); n = numel of the sample (history buffers are sized here). */
nu_status nu_sched_set_timesteps(nu_sched *s, int num_inference_steps, int64_t n);
/* len(scheduler.timesteps): the number of model evaluations (Heun 2*steps-1, PNDM steps+1). */
int nu_sched_len(const nu_sched *s);
/* scheduler.timesteps[i]: the t given to the network (integers for DDIM/DDPM/PNDM/DPM/UniPC/LCM,
 * float32 values for Euler/Heun/LMS). */
double nu_sched_timestep(const nu_sched *s, int i);
/* scheduler.order (2 for Heun, else 1): img2img starts at t_start * order. */
int nu_sched_order(const nu_sched *s);
double nu_sched_init_noise_sigma(const nu_sched *s);
/* scheduler.set_begin_index(i): the first step's index (img2img). Resets the step state. */
void nu_sched_set_begin_index(nu_sched *s, int i);
int nu_sched_step_index(const nu_sched *s);
/* The scheduler's sigmas (Euler/Heun/LMS/DPM/UniPC; NULL and 0 for the others) and its
 * float32 alphas_cumprod (num_train_timesteps values). */
const float *nu_sched_sigmas(const nu_sched *s, int *count);
const float *nu_sched_alphas_cumprod(const nu_sched *s);
/* scale_model_input(x, timesteps[step_index]) into model_in (may alias x). */
void nu_sched_scale_model_input(const nu_sched *s, const float *x, float *model_in, int64_t n);
/* scheduler.step(model_output, timesteps[step_index], x, generator).prev_sample written over x.
 * pred_original (optional, n) receives the step's x0 estimate: diffusers' pred_original_sample
 * (DDIM, DDPM, Euler, EulerAncestral, LMS, Heun), LCM's `denoised`, the converted model output
 * of DPM-Solver++ / UniPC(predict_x0), and x0 from eps/v for PNDM; it is left untouched for
 * DPM-Solver and UniPC in noise-prediction mode. noise is required by DDPM, EulerAncestral,
 * DDIM with eta > 0, LCM and the SDE DPM-Solvers; Euler draws one noise per step when noise is
 * given (as diffusers does, keeping the generator in step) and needs it only with s_churn > 0.
 * Advances the step index. */
nu_status nu_sched_step(nu_sched *s, const float *model_output, float *x, int64_t n, const nu_noise *noise,
                        float *pred_original);
/* scheduler.add_noise(x0, noise, timesteps[i]) into out (may alias x0), at step index i
 * (img2img: i = begin index; inpainting: the next step's index). */
nu_status nu_sched_add_noise(const nu_sched *s, int i, const float *x0, const float *noise, float *out, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
