/*
 * gen_sample.c — sampling the trainable generative models (nuance/gen_models.h) with the shared
 * sampler module (nuance/sample.h) under classifier-free guidance: k-diffusion samplers through a
 * nu_denoiser (eps / v networks on the objective's discrete schedule, flow networks on shifted
 * flow sigmas), or the diffusers scheduler loop exactly as diffusers v0.27.2 DiTPipeline runs it
 * (pipelines/dit/pipeline_dit.py: the scheduler steps the doubled batch, whose second half is
 * reset to the first before each step).
 * Tested by tests/test_gen_models.c (DiTPipeline DDIM/DDPM runs with and without CFG of
 * ../shared/reference/dit_tiny; k-diffusion samplers on a tiny model: determinism, CFG scale 1
 * equals the unguided batch).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nuance/gen_models.h"

/* ================================================================ a network graph at a fixed batch */

typedef struct runner {
    nu_ctx *ctx;
    nu_graph *g;
    nu_tensor *x, *t, *y, *out;
    int N;           /* rows per evaluation                    */
    int64_t per_in;  /* C*H*W                                   */
    int64_t per_out; /* Cout*H*W                                */
    int num_classes;
    nu_pool *pool;
} runner;

static void runner_free(runner *r) {
    nu_graph_free(r->g);
    nu_ctx_free(r->ctx);
    memset(r, 0, sizeof *r);
}

static nu_status runner_new(runner *r, nu_gen_model *m, int N, nu_pool *pool) {
    memset(r, 0, sizeof *r);
    const nu_gen_config *c = nu_gen_model_config(m);
    r->N = N;
    r->pool = pool;
    r->num_classes = c->num_classes;
    r->per_in = (int64_t)c->in_channels * c->sample_size * c->sample_size;
    r->ctx = nu_ctx_new(NULL);
    if (!r->ctx) return nu_error(NU_ERR_NOMEM, "sample: out of memory");
    nu_ctx_set_alloc_data(r->ctx, false);
    int S = c->sample_size;
    r->x = nu_new_tensor_4d(r->ctx, NU_TYPE_F32, N, c->in_channels, S, S);
    r->t = nu_new_tensor_1d(r->ctx, NU_TYPE_F32, N);
    nu_set_input(r->x);
    nu_set_input(r->t);
    if (c->num_classes > 0) {
        r->y = nu_new_tensor_1d(r->ctx, NU_TYPE_I64, N);
        nu_set_input(r->y);
    }
    r->out = nu_gen_model_forward(m, r->ctx, r->x, r->t, r->y);
    r->per_out = nu_nelements(r->out) / N;
    r->g = nu_graph_new(r->ctx);
    if (!r->g) {
        runner_free(r);
        return nu_error(NU_ERR_NOMEM, "sample: out of memory");
    }
    nu_graph_expand(r->g, r->out);
    nu_status st = nu_graph_alloc(r->g);
    if (st != NU_OK) runner_free(r);
    return st;
}

/* rows rows of x at timestep t with labels y (NULL: null label) -> out [rows, C, H, W], the
 * first in_channels output channels; evaluated N rows at a time (the last chunk padded). */
static nu_status runner_eval(runner *r, const float *x, double t, const int64_t *y, int rows, float *out) {
    for (int r0 = 0; r0 < rows; r0 += r->N) {
        int k = rows - r0 < r->N ? rows - r0 : r->N;
        memcpy(r->x->data, x + (int64_t)r0 * r->per_in, sizeof(float) * (size_t)(k * r->per_in));
        if (k < r->N) memset((float *)r->x->data + k * r->per_in, 0, sizeof(float) * (size_t)((r->N - k) * r->per_in));
        float *tt = r->t->data;
        for (int i = 0; i < r->N; i++) tt[i] = (float)t; /* timesteps.expand(B); Timesteps casts to float */
        if (r->y) {
            int64_t *yy = r->y->data;
            for (int i = 0; i < r->N; i++) yy[i] = i < k && y ? y[r0 + i] : r->num_classes;
        }
        nu_status st = nu_graph_compute(r->g, r->pool);
        if (st != NU_OK) return st;
        const float *o = r->out->data;
        for (int i = 0; i < k; i++)
            memcpy(out + (int64_t)(r0 + i) * r->per_in, o + i * r->per_out, sizeof(float) * (size_t)r->per_in);
    }
    return NU_OK;
}

/* ================================================================ guided network */

typedef struct guided {
    runner r;
    int B;
    bool cfg;
    float scale;
    int64_t *labels; /* [2B]: y then null (cfg) or [B]           */
    float *xin;      /* [2B * per] network input                  */
    float *pred;     /* [2B * per] network output                 */
    int64_t per;
} guided;

static void guided_free(guided *g) {
    runner_free(&g->r);
    free(g->labels);
    free(g->xin);
    free(g->pred);
}

static nu_status guided_new(guided *g, nu_gen_model *m, nu_pool *pool, int B, const int64_t *labels, double scale,
                            int max_eval) {
    memset(g, 0, sizeof *g);
    const nu_gen_config *c = nu_gen_model_config(m);
    g->B = B;
    g->cfg = scale > 1.0 && c->num_classes > 0 && labels != NULL; /* DiTPipeline: guidance_scale > 1 */
    g->scale = (float)scale;
    int rows = g->cfg ? 2 * B : B;
    g->per = (int64_t)c->in_channels * c->sample_size * c->sample_size;
    g->labels = malloc(sizeof(int64_t) * (size_t)rows);
    g->xin = malloc(sizeof(float) * (size_t)(rows * g->per));
    g->pred = malloc(sizeof(float) * (size_t)(rows * g->per));
    if (!g->labels || !g->xin || !g->pred) {
        guided_free(g);
        return nu_error(NU_ERR_NOMEM, "sample: out of memory for a batch of %d", B);
    }
    for (int i = 0; i < B; i++) {
        int64_t y = labels ? labels[i] : c->num_classes;
        if (c->num_classes > 0 && (y < 0 || y > c->num_classes)) {
            guided_free(g);
            return nu_error(NU_ERR_INVALID_ARG, "sample: label %lld outside [0, %d]", (long long)y, c->num_classes);
        }
        g->labels[i] = y;
        if (g->cfg) g->labels[B + i] = c->num_classes; /* class_null = [null] * B */
    }
    int N = max_eval > 0 && max_eval < rows ? max_eval : rows;
    nu_status st = runner_new(&g->r, m, N, pool);
    if (st != NU_OK) guided_free(g);
    return st;
}

/* x [rows, per] already laid out as the network input (cfg: both halves) -> out [B, per] guided */
static nu_status guided_eval_rows(guided *g, const float *x, double t, float *out) {
    int rows = g->cfg ? 2 * g->B : g->B;
    nu_status st = runner_eval(&g->r, x, t, g->labels, rows, g->pred);
    if (st != NU_OK) return st;
    int64_t n = g->B * g->per;
    if (!g->cfg) {
        memcpy(out, g->pred, sizeof(float) * (size_t)n);
        return NU_OK;
    }
    /* half_eps = uncond_eps + guidance_scale * (cond_eps - uncond_eps), float32 */
    const float *cond = g->pred, *unc = g->pred + n;
    for (int64_t i = 0; i < n; i++) {
        float d = cond[i] - unc[i];
        float s = g->scale * d;
        out[i] = unc[i] + s;
    }
    return NU_OK;
}

/* x [B, per] -> guided network output [B, per] */
static nu_status guided_eval(guided *g, const float *x, double t, float *out) {
    int64_t n = g->B * g->per;
    memcpy(g->xin, x, sizeof(float) * (size_t)n);
    if (g->cfg) memcpy(g->xin + n, x, sizeof(float) * (size_t)n); /* torch.cat([latents] * 2) */
    return guided_eval_rows(g, g->xin, t, out);
}

static nu_status model_fn(void *user, const float *x_in, double t, float *out, int64_t n) {
    guided *g = user;
    NU_ASSERT(n == g->B * g->per);
    return guided_eval(g, x_in, t, out);
}

nu_status nu_gen_eval_guided(nu_gen_model *m, nu_pool *pool, const float *x, double t, int batch,
                             const int64_t *labels, double guidance_scale, float *out) {
    if (batch < 1) return nu_error(NU_ERR_INVALID_ARG, "sample: batch %d < 1", batch);
    guided g;
    nu_status st = guided_new(&g, m, pool, batch, labels, guidance_scale, 0);
    if (st != NU_OK) return st;
    st = guided_eval(&g, x, t, out);
    guided_free(&g);
    return st;
}

/* ================================================================ samplers */

nu_gen_sample_params nu_gen_sample_params_init(void) {
    nu_gen_sample_params p;
    memset(&p, 0, sizeof p);
    p.sampler = "euler";
    p.steps = 30;
    p.schedule = NU_SCHEDULE_KARRAS;
    p.guidance_scale = 1.0;
    p.batch = 1;
    p.eta = -1.0;
    return p;
}

/* DiTPipeline.__call__ with a diffusers scheduler (EPS/V objectives). */
static nu_status sample_diffusers(guided *g, const nu_objective *o, const nu_gen_sample_params *p, float *x) {
    nu_sched_kind kind;
    nu_status st = nu_sched_kind_from_name(p->sampler, &kind);
    if (st != NU_OK) return st;
    nu_sched_config sc;
    nu_sched_config_init(&sc, kind);
    sc.num_train_timesteps = o->num_train_timesteps;
    sc.beta_start = o->beta_start;
    sc.beta_end = o->beta_end;
    sc.beta_schedule = o->beta_schedule;
    sc.prediction_type = nu_objective_prediction(o);
    sc.clip_sample = false;
    if (p->eta >= 0) sc.eta = p->eta;
    nu_sched *s;
    if ((st = nu_sched_new(&sc, &s)) != NU_OK) return st;
    const int B = g->B, rows = g->cfg ? 2 * B : B;
    const int64_t n = B * g->per, nr = rows * g->per;
    float *state = malloc(sizeof(float) * (size_t)nr), *xin = malloc(sizeof(float) * (size_t)nr);
    float *mo = malloc(sizeof(float) * (size_t)nr);
    nu_rng step_rng;
    nu_rng_seed(&step_rng, p->noise_seed);
    nu_noise noise = {.rng = &step_rng};
    if (!state || !xin || !mo) st = nu_error(NU_ERR_NOMEM, "sample: out of memory");
    if (st == NU_OK) st = nu_sched_set_timesteps(s, p->steps, nr);
    if (st == NU_OK) {
        float sigma0 = (float)nu_sched_init_noise_sigma(s);
        for (int64_t i = 0; i < n; i++) state[i] = x[i] * sigma0;
        /* latent_model_input = torch.cat([latents] * 2) if guidance_scale > 1 */
        for (int i = 0; i < nu_sched_len(s) && st == NU_OK; i++) {
            if (g->cfg) memcpy(state + n, state, sizeof(float) * (size_t)n); /* cat([half, half]) */
            nu_sched_scale_model_input(s, state, xin, nr);
            st = guided_eval_rows(g, xin, nu_sched_timestep(s, i), mo);
            if (st != NU_OK) break;
            if (g->cfg) memcpy(mo + n, mo, sizeof(float) * (size_t)n); /* eps = cat([half_eps, half_eps]) */
            st = nu_sched_step(s, mo, state, nr, &noise, NULL);
            if (st == NU_OK && p->callback) {
                nu_sample_step_info info = {.i = i, .n_steps = nu_sched_len(s), .x = state, .n = n};
                info.sigma = info.sigma_hat = info.sigma_next = NAN;
                st = p->callback(p->callback_user, &info);
            }
        }
    }
    if (st == NU_OK) memcpy(x, state, sizeof(float) * (size_t)n); /* latents, _ = chunk(2) */
    free(state);
    free(xin);
    free(mo);
    nu_sched_free(s);
    return st;
}

/* k-diffusion sampler over a nu_denoiser. */
static nu_status sample_kdiff(guided *g, const nu_objective *o, const nu_gen_sample_params *p, float *x) {
    nu_sampler smp;
    nu_status st = nu_sampler_from_name(p->sampler, &smp);
    if (st != NU_OK) return st;
    nu_sampler_params sp;
    nu_sampler_params_init(&sp, smp);
    if (p->eta >= 0) sp.eta = p->eta;
    sp.callback = p->callback;
    sp.callback_user = p->callback_user;
    nu_prediction pred = nu_objective_prediction(o);
    if (pred == NU_PRED_FLOW && nu_sampler_is_stochastic(smp, &sp))
        return nu_error(NU_ERR_UNSUPPORTED,
                        "sample: sampler %s adds noise as a variance-exploding process; flow models need a "
                        "deterministic sampler (euler, heun, dpm++2m, ddim with eta 0, lms, dpm2)",
                        nu_sampler_name(smp));
    const int64_t n = g->B * g->per;
    float *sigmas = malloc(sizeof(float) * (size_t)(p->steps + 1));
    nu_discrete_schedule ds;
    memset(&ds, 0, sizeof ds);
    if (!sigmas) return nu_error(NU_ERR_NOMEM, "sample: out of memory");
    if (pred == NU_PRED_FLOW) {
        st = nu_sigmas_flow(p->steps, o->flow_shift, sigmas);
    } else {
        st = nu_discrete_schedule_init_betas(&ds, o->beta_schedule, o->num_train_timesteps, o->beta_start, o->beta_end,
                                             false);
        if (st == NU_OK) st = nu_sigmas_make(p->schedule, &ds, p->steps, sigmas);
    }
    nu_denoiser dn;
    memset(&dn, 0, sizeof dn);
    if (st == NU_OK) st = nu_denoiser_init(&dn, pred, pred == NU_PRED_FLOW ? NULL : &ds, model_fn, g, n);
    if (st == NU_OK) {
        dn.flow_t_scale = o->flow_t_scale;
        for (int64_t i = 0; i < n; i++) x[i] *= sigmas[0];
        nu_rng step_rng;
        nu_rng_seed(&step_rng, p->noise_seed);
        nu_noise noise = {.rng = &step_rng};
        st = nu_sample(smp, &sp, nu_denoiser_call, &dn, sigmas, p->steps + 1, x, n, &noise);
    }
    nu_denoiser_free(&dn);
    nu_discrete_schedule_free(&ds);
    free(sigmas);
    return st;
}

nu_status nu_gen_sample(nu_gen_model *m, const nu_objective *o, const nu_gen_sample_params *p, nu_pool *pool,
                        float *out) {
    nu_status st = nu_objective_check(o);
    if (st != NU_OK) return st;
    const nu_gen_config *c = nu_gen_model_config(m);
    if (p->batch < 1 || p->batch > 65536) return nu_error(NU_ERR_INVALID_ARG, "sample: batch %d invalid", p->batch);
    if (p->steps < 1 || p->steps > 10000) return nu_error(NU_ERR_INVALID_ARG, "sample: %d steps invalid", p->steps);
    if (!(p->guidance_scale >= 0) || p->guidance_scale > 1000)
        return nu_error(NU_ERR_INVALID_ARG, "sample: guidance scale %g invalid", p->guidance_scale);
    if (p->diffusers_scheduler && o->kind == NU_OBJECTIVE_FLOW)
        return nu_error(NU_ERR_UNSUPPORTED, "sample: diffusers schedulers are for eps/v models; use a k-diffusion "
                                            "sampler for flow models");
    guided g;
    if ((st = guided_new(&g, m, pool, p->batch, p->labels, p->guidance_scale, p->max_eval_batch)) != NU_OK) return st;
    /* latents = randn_tensor((B, C, S, S), generator) */
    nu_rng gen;
    nu_rng_seed(&gen, p->seed);
    int64_t n = (int64_t)p->batch * c->in_channels * c->sample_size * c->sample_size;
    nu_rng_randn_f32(&gen, out, n);
    st = p->diffusers_scheduler ? sample_diffusers(&g, o, p, out) : sample_kdiff(&g, o, p, out);
    guided_free(&g);
    return st;
}
