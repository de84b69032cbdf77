/*
 * sd_sched.c — the sampling side of the Stable Diffusion pipeline: which family a generation uses
 * (diffusers scheduler classes for diffusers folders, k-diffusion samplers for single files), the
 * scheduler config as <Class>.from_config(folder config) builds it, the noise sources (torch CPU
 * generator, CUDA Philox), the guided network call, and the two denoising loops with progress,
 * cancellation and the inpainting blend:
 *   - diffusers (v0.27.2 StableDiffusion{,Img2Img,Inpaint}Pipeline): x = scheduler.step(guided
 *     output of unet(scale_model_input(x), t)) for every t of scheduler.timesteps[begin:]; a
 *     4-channel UNet inpainting re-noises the image latents to the next timestep with the
 *     prepare_latents noise and keeps them outside the mask;
 *   - k-diffusion (A1111 / sd.cpp): nu_sample on the model as a denoiser; 4-channel inpainting
 *     blends the denoised estimate with the image latents outside the mask (A1111's CFGDenoiser,
 *     mask applied after denoising) and the final latents once more.
 * Tested by tests/test_sd_pipeline.c against every reference run of ../shared/reference/sd*_tiny.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline/sd_internal.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------- noise */

/* Philox 4x32-10 (Salmon et al. 2011) + Box-Muller exactly as A1111's modules/rng_philox.py,
 * which reproduces torch.randn on CUDA: element i of the k-th randn call of a generator uses
 * counter (offset=k, 0, i, 0) and key (seed lo, seed hi); the first two output words feed
 * Box-Muller (numpy: uint32 * float32 -> float64 arithmetic, result cast to float32). */
static const uint32_t PHILOX_M0 = 0xD2511F53u, PHILOX_M1 = 0xCD9E8D57u;
static const uint32_t PHILOX_W0 = 0x9E3779B9u, PHILOX_W1 = 0xBB67AE85u;

static void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)c[0] * PHILOX_M0, p1 = (uint64_t)c[2] * PHILOX_M1;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c[0] = n0, c[1] = n1, c[2] = n2, c[3] = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
}

static void philox_randn(sd_noise *g, float *out, int64_t n) {
    const double inv = (double)2.3283064e-10f;                  /* np.float32 constants */
    const double inv2pi = (double)(float)(2.3283064e-10 * 6.2831855);
    const double inv_h = (double)(2.3283064e-10f / 2), inv2pi_h = (double)((float)(2.3283064e-10 * 6.2831855) / 2);
    const uint32_t k0 = (uint32_t)g->seed, k1 = (uint32_t)(g->seed >> 32);
    for (int64_t i = 0; i < n; i++) {
        uint32_t c[4] = {(uint32_t)g->offset, 0, (uint32_t)i, 0};
        philox4x32_10(c, k0, k1);
        double u = c[0] * inv + inv_h, v = c[1] * inv2pi + inv2pi_h;
        out[i] = (float)(sqrt(-2.0 * log(u)) * sin(v));
    }
    g->offset++;
}

void sd_noise_seed(sd_noise *g, nu_sd_rng kind, uint64_t seed) {
    memset(g, 0, sizeof *g);
    g->kind = kind;
    g->seed = seed;
    nu_rng_seed(&g->cpu, seed);
}

void sd_noise_randn(sd_noise *g, float *out, int64_t n) {
    if (g->kind == NU_SD_RNG_CUDA) philox_randn(g, out, n);
    else nu_rng_randn_f32(&g->cpu, out, n);
}

static nu_status noise_fn(void *user, float *out, int64_t n, double sigma, double sigma_next) {
    (void)sigma, (void)sigma_next;
    sd_noise_randn(user, out, n);
    return NU_OK;
}

nu_noise sd_noise_source(sd_noise *g) {
    nu_noise z = {.fn = noise_fn, .user = g, .rng = NULL};
    return z;
}

/* ---------------------------------------------------------------- family and names */

/* k-diffusion sampler <-> diffusers class (sd.cpp names on the left). */
static const struct {
    nu_sampler sampler;
    nu_sched_kind kind;
} SAMPLER_CLASS[] = {
    {NU_SAMPLER_EULER, NU_SCHED_EULER},          {NU_SAMPLER_EULER_A, NU_SCHED_EULER_ANCESTRAL},
    {NU_SAMPLER_HEUN, NU_SCHED_HEUN},            {NU_SAMPLER_DPMPP_2M, NU_SCHED_DPMSOLVER_MULTISTEP},
    {NU_SAMPLER_DPMPP_2M_SDE, NU_SCHED_DPMSOLVER_MULTISTEP},
    {NU_SAMPLER_DDIM, NU_SCHED_DDIM},            {NU_SAMPLER_LCM, NU_SCHED_LCM},
    {NU_SAMPLER_LMS, NU_SCHED_LMS},              {NU_SAMPLER_DDPM, NU_SCHED_DDPM},
};

/* Short names of the diffusers classes for metadata and messages. */
static const char *kind_short(nu_sched_kind k) {
    switch (k) {
    case NU_SCHED_DDIM: return "ddim";
    case NU_SCHED_DDPM: return "ddpm";
    case NU_SCHED_PNDM: return "pndm";
    case NU_SCHED_LMS: return "lms";
    case NU_SCHED_EULER: return "euler";
    case NU_SCHED_EULER_ANCESTRAL: return "euler_a";
    case NU_SCHED_HEUN: return "heun";
    case NU_SCHED_DPMSOLVER_MULTISTEP: return "dpm++2m";
    case NU_SCHED_UNIPC: return "unipc";
    case NU_SCHED_LCM: return "lcm";
    default: return "?";
    }
}

static bool kind_has_karras(nu_sched_kind k) {
    return k == NU_SCHED_EULER || k == NU_SCHED_HEUN || k == NU_SCHED_LMS || k == NU_SCHED_DPMSOLVER_MULTISTEP ||
           k == NU_SCHED_UNIPC;
}

nu_status sd_choose(const nu_sd *sd, const nu_sd_params *p, sd_choice *c) {
    memset(c, 0, sizeof *c);
    nu_sd_sampling fam = p->sampling;
    if ((unsigned)fam >= NU_SD_SAMPLING_COUNT) return nu_error(NU_ERR_INVALID_ARG, "bad sampling family %d", (int)fam);
    if (fam == NU_SD_SAMPLING_AUTO) fam = sd->folder ? NU_SD_SAMPLING_DIFFUSERS : NU_SD_SAMPLING_KDIFFUSION;
    if (fam == NU_SD_SAMPLING_DIFFUSERS && !sd->sched_json)
        return nu_error(NU_ERR_INVALID_ARG, "diffusers schedulers need a diffusers folder (scheduler_config.json)");
    const char *name = p->sampler && *p->sampler ? p->sampler : NULL;
    const char *sch = p->schedule && *p->schedule ? p->schedule : "discrete";
    nu_sigma_schedule sched;
    bool sched_ok = nu_sigma_schedule_from_name(sch, &sched) == NU_OK;
    bool karras = sched_ok && sched == NU_SCHEDULE_KARRAS;
    bool plain = sched_ok && sched == NU_SCHEDULE_DISCRETE;
    if (!sched_ok && strcmp(sch, "default") != 0)
        return nu_error(NU_ERR_INVALID_ARG, "--scheduler %s: use discrete, karras, exponential, sgm_uniform or simple", sch);
    if (!sched_ok) sched = NU_SCHEDULE_DISCRETE, plain = true;

    nu_sampler smp = NU_SAMPLER_COUNT;
    nu_sched_kind kind = NU_SCHED_KIND_COUNT;
    if (name) {
        if (nu_sampler_from_name(name, &smp) != NU_OK) {
            smp = NU_SAMPLER_COUNT;
            if (nu_sched_kind_from_name(name, &kind) != NU_OK)
                return nu_error(NU_ERR_INVALID_ARG, "--sampling-method %s: unknown (euler, euler_a, heun, dpm2, dpm++2s_a, "
                                                    "dpm++2m, dpm++2m_sde, lms, ddim, ddpm, lcm, pndm, unipc)", name);
        }
    }
    if (fam == NU_SD_SAMPLING_DIFFUSERS) {
        if (!name) kind = sd->sched_kind;
        else if (smp != NU_SAMPLER_COUNT) {
            kind = NU_SCHED_KIND_COUNT;
            for (size_t i = 0; i < sizeof SAMPLER_CLASS / sizeof *SAMPLER_CLASS; i++)
                if (SAMPLER_CLASS[i].sampler == smp) kind = SAMPLER_CLASS[i].kind;
        }
        bool fits = kind != NU_SCHED_KIND_COUNT && (plain || (karras && kind_has_karras(kind)));
        if (fits) {
            c->diffusers = true;
            c->kind = kind;
            c->karras = karras;
            c->sampler = smp;
            snprintf(c->sampler_name, sizeof c->sampler_name, "%s",
                     smp == NU_SAMPLER_DPMPP_2M_SDE ? "dpm++2m_sde" : kind_short(kind));
            snprintf(c->schedule_name, sizeof c->schedule_name, "%s", karras ? "karras" : "discrete");
            return NU_OK;
        }
        if (p->sampling == NU_SD_SAMPLING_DIFFUSERS) {
            if (kind == NU_SCHED_KIND_COUNT)
                return nu_error(NU_ERR_INVALID_ARG, "sampler %s has no diffusers scheduler class", name);
            return nu_error(NU_ERR_INVALID_ARG, "schedule %s is not available with %s", sch, nu_sched_kind_name(kind));
        }
        /* AUTO on a folder: what diffusers cannot do runs as k-diffusion on the folder's betas */
        nu_log(NU_LOG_INFO, "%s%s%s: no diffusers scheduler for this; using k-diffusion sampling",
               name ? name : nu_sched_kind_name(kind), plain ? "" : " + ", plain ? "" : sch);
    }
    /* k-diffusion */
    if (smp == NU_SAMPLER_COUNT) {
        if (kind == NU_SCHED_KIND_COUNT || !name) kind = NU_SCHED_KIND_COUNT, smp = NU_SAMPLER_EULER_A;
        for (size_t i = 0; kind != NU_SCHED_KIND_COUNT && i < sizeof SAMPLER_CLASS / sizeof *SAMPLER_CLASS; i++)
            if (SAMPLER_CLASS[i].kind == kind) {
                smp = SAMPLER_CLASS[i].sampler;
                break;
            }
        if (smp == NU_SAMPLER_COUNT)
            return nu_error(NU_ERR_INVALID_ARG, "%s has no k-diffusion sampler; pick one with --sampling-method", name);
    }
    c->diffusers = false;
    c->sampler = smp;
    c->schedule = sched;
    snprintf(c->sampler_name, sizeof c->sampler_name, "%s", nu_sampler_name(smp));
    snprintf(c->schedule_name, sizeof c->schedule_name, "%s", nu_sigma_schedule_name(sched));
    return NU_OK;
}

nu_status sd_sched_config(const nu_sd *sd, const nu_sd_params *p, const sd_choice *ch, nu_sched_config *c) {
    nu_sched_config_init(c, ch->kind);
    /* <Class>.from_config(cfg): the folder's keys over the class defaults, its _class_name ignored
     * (a shallow copy of the top-level object without that key) */
    const nu_json *o = sd->sched_json;
    nu_json shallow = *o;
    shallow.items = malloc(sizeof(nu_json) * (size_t)(o->n ? o->n : 1));
    shallow.keys = malloc(sizeof(char *) * (size_t)(o->n ? o->n : 1));
    if (!shallow.items || !shallow.keys) {
        free(shallow.items), free(shallow.keys);
        return nu_error(NU_ERR_NOMEM, "out of memory");
    }
    shallow.n = 0;
    for (int i = 0; i < o->n; i++) {
        if (!strcmp(o->keys[i], "_class_name")) continue;
        shallow.items[shallow.n] = o->items[i];
        shallow.keys[shallow.n++] = o->keys[i];
    }
    nu_status s = nu_sched_config_from_json_obj(c, &shallow, sd->sched_label);
    free(shallow.items), free(shallow.keys);
    if (s != NU_OK) return s;
    c->kind = ch->kind;
    if (sd->pred_override) c->prediction_type = sd->fam.prediction;
    if (ch->karras) c->use_karras_sigmas = true;
    if (ch->kind == NU_SCHED_DPMSOLVER_MULTISTEP) { /* from_config(cfg, algorithm_type=..., solver_order=2) */
        c->algorithm_type = ch->sampler == NU_SAMPLER_DPMPP_2M_SDE ? NU_DPM_SDE_SOLVER_PP : NU_DPM_SOLVER_PP;
        c->solver_order = 2;
    }
    if (isfinite(p->eta)) c->eta = p->eta;
    if (p->timestep_spacing && *p->timestep_spacing &&
        (s = nu_timestep_spacing_from_name(p->timestep_spacing, &c->timestep_spacing)) != NU_OK)
        return nu_error(s, "--timestep-spacing %s: use leading, linspace or trailing", p->timestep_spacing);
    return NU_OK;
}

/* ---------------------------------------------------------------- the guided network */

nu_status sd_model_guided(sd_run *r, const float *x_in, double t, float *out) {
    nu_sd *sd = r->sd;
    if (sd->cancel) return nu_error(NU_ERR_CANCELLED, "generation cancelled");
    const int64_t hw = (int64_t)r->h * r->w, n = r->n;
    const int C = nu_unet_get_config(sd->unet)->in_channels;
    const int B = r->do_cfg ? 2 : 1;
    /* batch [uncond, cond] as diffusers' torch.cat([latents] * 2) with [negative, positive] */
    for (int b = 0; b < B; b++) {
        float *xb = r->xcat + (size_t)b * C * hw;
        memcpy(xb, x_in, sizeof(float) * (size_t)n);
        if (C > 4) { /* 9-channel inpainting: cat([x, mask, masked_image_latents], dim=1) */
            memcpy(xb + n, r->mask_lat, sizeof(float) * (size_t)hw);
            memcpy(xb + n + hw, r->masked_lat, sizeof(float) * (size_t)n);
        }
        r->tb[b] = (float)t;
    }
    nu_status s = nu_unet_eval(sd->unet, sd->pool, B, r->h, r->w, r->cond->S, r->xcat, r->tb, r->ctx, r->outb);
    if (s != NU_OK) {
        if (s == NU_ERR_CANCELLED) nu_error(s, "generation cancelled");
        return s;
    }
    if (!r->do_cfg) {
        memcpy(out, r->outb, sizeof(float) * (size_t)n);
        return NU_OK;
    }
    /* noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond), float32 ops */
    const float *u = r->outb, *c = r->outb + n, g = r->cfg;
    for (int64_t i = 0; i < n; i++) {
        float d = c[i] - u[i];
        float e = g * d;
        out[i] = u[i] + e;
    }
    return NU_OK;
}

/* ---------------------------------------------------------------- progress */

static nu_status report(sd_run *r, const float *latents, const float *model_output) {
    double t = now_s();
    r->steps_done++;
    if (r->p->progress) {
        nu_sd_step st = {.image = r->image,
                         .n_images = r->n_images,
                         .step = r->steps_done,
                         .n_steps = r->n_steps,
                         .step_seconds = t - r->t_last,
                         .elapsed_seconds = t - r->t_start,
                         .latents = latents,
                         .model_output = model_output,
                         .n = r->n};
        if (r->p->progress(r->p->progress_user, &st)) return nu_error(NU_ERR_CANCELLED, "generation cancelled");
    }
    r->t_last = now_s();
    if (r->sd->cancel) return nu_error(NU_ERR_CANCELLED, "generation cancelled");
    return NU_OK;
}

/* ---------------------------------------------------------------- schedule set-up */

void sd_sampler_free(sd_sampler *s) {
    if (s->sched) nu_sched_free(s->sched);
    if (s->have_ds) nu_discrete_schedule_free(&s->ds);
    free(s->sigmas);
    memset(s, 0, sizeof *s);
}

int sd_sampler_steps(const sd_sampler *s) { return s->ch.diffusers ? s->len - s->begin : s->n_sigmas - 1 - s->start; }

nu_status sd_sampler_init(sd_sampler *s, sd_run *r, const sd_choice *c) {
    memset(s, 0, sizeof *s);
    s->ch = *c;
    const nu_sd_params *p = r->p;
    const int steps = p->steps;
    s->full_noise = !r->img2img || p->strength >= 1.0;
    nu_status st;
    if (c->diffusers) {
        nu_sched_config cfg;
        if ((st = sd_sched_config(r->sd, p, c, &cfg)) != NU_OK) return st;
        if ((st = nu_sched_new(&cfg, &s->sched)) != NU_OK) return st;
        if ((st = nu_sched_set_timesteps(s->sched, steps, r->n)) != NU_OK) goto fail;
        s->len = nu_sched_len(s->sched);
        if (r->img2img) { /* get_timesteps: int(steps * strength) steps from the end */
            int init_ts = (int)(steps * p->strength);
            if (init_ts > steps) init_ts = steps;
            int t_start = steps - init_ts > 0 ? steps - init_ts : 0;
            s->begin = t_start * nu_sched_order(s->sched);
            if (init_ts < 1 || s->begin >= s->len) { /* as the inpainting pipeline's check */
                st = nu_error(NU_ERR_INVALID_ARG, "--strength %g with %d steps leaves no step to run", p->strength, steps);
                goto fail;
            }
            nu_sched_set_begin_index(s->sched, s->begin);
        }
        return NU_OK;
    }
    if ((st = nu_discrete_schedule_init_betas(&s->ds, r->sd->beta_schedule, r->sd->n_train, r->sd->beta_start,
                                              r->sd->beta_end, true)) != NU_OK)
        return st;
    s->have_ds = true;
    s->n_sigmas = steps + 1;
    s->sigmas = malloc(sizeof(float) * (size_t)s->n_sigmas);
    if (!s->sigmas) {
        st = nu_error(NU_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = nu_sigmas_make(c->schedule, &s->ds, steps, s->sigmas)) != NU_OK) goto fail;
    if (r->img2img && !s->full_noise) { /* A1111/sd.cpp: the last t_enc + 1 sigmas */
        int t_enc = (int)(p->strength * steps);
        if (t_enc < 1) {
            st = nu_error(NU_ERR_INVALID_ARG, "--strength %g with %d steps leaves no step to run", p->strength, steps);
            goto fail;
        }
        s->start = steps - t_enc;
    }
    return NU_OK;
fail:
    sd_sampler_free(s);
    return st;
}

nu_status sd_sampler_start(sd_sampler *s, const float *x0, const float *noise, float *x, int64_t n) {
    if (s->full_noise || !x0) {
        /* latents * init_noise_sigma (float32 tensor op) / randn * sigma_max */
        float sc = s->ch.diffusers ? (float)nu_sched_init_noise_sigma(s->sched) : s->sigmas[0];
        for (int64_t i = 0; i < n; i++) x[i] = noise[i] * sc;
        return NU_OK;
    }
    if (s->ch.diffusers) return nu_sched_add_noise(s->sched, s->begin, x0, noise, x, n);
    const double sg = s->sigmas[s->start];
    for (int64_t i = 0; i < n; i++) x[i] = (float)((double)x0[i] + (double)noise[i] * sg);
    return NU_OK;
}

/* ---------------------------------------------------------------- loops */

/* latents = (1 - mask) * init_latents_proper + mask * latents (mask 0/1: a selection). */
static void blend(float *x, const float *keep_src, const float *mask, int64_t hw, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float m = mask[i % hw];
        x[i] = (1.0f - m) * keep_src[i] + m * x[i];
    }
}

static nu_status run_diffusers(sd_sampler *s, sd_run *r, float *x) {
    const int64_t n = r->n, hw = (int64_t)r->h * r->w;
    float *xin = malloc(sizeof(float) * (size_t)n), *out = malloc(sizeof(float) * (size_t)n);
    float *prop = r->inpaint4 ? malloc(sizeof(float) * (size_t)n) : NULL;
    nu_status st = NU_OK;
    if (!xin || !out || (r->inpaint4 && !prop)) {
        st = nu_error(NU_ERR_NOMEM, "out of memory");
        goto done;
    }
    nu_noise nz = sd_noise_source(r->noise);
    for (int i = s->begin; i < s->len; i++) {
        nu_sched_scale_model_input(s->sched, x, xin, n);
        if ((st = sd_model_guided(r, xin, nu_sched_timestep(s->sched, i), out)) != NU_OK) goto done;
        if ((st = nu_sched_step(s->sched, out, x, n, &nz, NULL)) != NU_OK) goto done;
        if (r->inpaint4) {
            /* init_latents_proper = scheduler.add_noise(image_latents, noise, [timesteps[i + 1]]):
             * the noise level of the next timestep (checked against every scheduler's reference) */
            const float *src = r->init_lat;
            if (i < s->len - 1) {
                if ((st = nu_sched_add_noise(s->sched, i + 1, r->init_lat, r->first_noise, prop, n)) != NU_OK) goto done;
                src = prop;
            }
            blend(x, src, r->mask_lat, hw, n);
        }
        if ((st = report(r, x, out)) != NU_OK) goto done;
    }
done:
    free(xin), free(out), free(prop);
    return st;
}

typedef struct kd_state {
    sd_run *r;
    nu_denoiser dn;
} kd_state;

static nu_status kd_model(void *user, const float *x_in, double t, float *out, int64_t n) {
    (void)n;
    return sd_model_guided(user, x_in, t, out);
}

/* The denoiser with A1111's inpainting blend of the estimate (mask applied after denoising). */
static nu_status kd_denoise(void *user, const float *x, float sigma, float *den, int64_t n) {
    kd_state *k = user;
    nu_status st = nu_denoiser_call(&k->dn, x, sigma, den, n);
    if (st == NU_OK && k->r->inpaint4) blend(den, k->r->init_lat, k->r->mask_lat, (int64_t)k->r->h * k->r->w, n);
    return st;
}

static nu_status kd_callback(void *user, const nu_sample_step_info *info) {
    kd_state *k = user;
    return report(k->r, info->x, info->denoised);
}

static nu_status run_kdiffusion(sd_sampler *s, sd_run *r, float *x) {
    kd_state k = {.r = r};
    nu_status st = nu_denoiser_init(&k.dn, r->sd->fam.prediction, &s->ds, kd_model, r, r->n);
    if (st != NU_OK) return st;
    nu_sampler_params sp;
    nu_sampler_params_init(&sp, s->ch.sampler);
    if (isfinite(r->p->eta)) sp.eta = r->p->eta;
    sp.callback = kd_callback;
    sp.callback_user = &k;
    nu_noise nz = sd_noise_source(r->noise);
    st = nu_sample(s->ch.sampler, &sp, kd_denoise, &k, s->sigmas + s->start, s->n_sigmas - s->start, x, r->n, &nz);
    nu_denoiser_free(&k.dn);
    if (st == NU_OK && r->inpaint4) /* samples * nmask + init_latent * mask */
        blend(x, r->init_lat, r->mask_lat, (int64_t)r->h * r->w, r->n);
    return st;
}

nu_status sd_sampler_run(sd_sampler *s, sd_run *r, float *x) {
    r->steps_done = 0;
    r->n_steps = sd_sampler_steps(s);
    r->t_start = r->t_last = now_s();
    return s->ch.diffusers ? run_diffusers(s, r, x) : run_kdiffusion(s, r, x);
}
