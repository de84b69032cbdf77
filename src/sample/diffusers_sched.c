/*
 * diffusers_sched.c — diffusers v0.27.2 schedulers: DDIM, DDPM, PNDM (PLMS), LMSDiscrete,
 * EulerDiscrete, EulerAncestralDiscrete, HeunDiscrete, DPMSolverMultistep, UniPCMultistep, LCM.
 * Timesteps, sigmas and init_noise_sigma as set_timesteps computes them (numpy float64
 * linspace/arange/round-half-even/interp, float32 casts where diffusers casts), scale_model_input,
 * step (with the schedulers' internal state: multistep histories, Heun's two stages, PNDM's
 * counter) and add_noise.
 *
 * Numerics: alphas_cumprod and the training sigmas are the exact float32 values diffusers holds;
 * per-step scalar coefficients are computed in double and updates per element in double from the
 * float32 state, rounded once. scale_model_input is done in float32 as torch does it (so model_in
 * matches the reference bit for bit when x does). History buffers (O(n) each) are allocated in
 * nu_sched_set_timesteps; nu_sched_step allocates nothing.
 *
 * Tested by tests/test_schedules.c (timesteps, sigmas, init_noise_sigma of every scheduler /
 * spacing / step count in ../shared/reference/schedules) and tests/test_samplers.c (every
 * diffusers/ trajectory in ../shared/reference/samplers: x_in, model_in, x_out, pred_original).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nuance/sample.h"
#include "sample/sample_internal.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define MAX_HIST 4 /* LMS order / PNDM ets / multistep order history */

struct nu_sched {
    nu_sched_config c;
    int N;                  /* num_train_timesteps                                   */
    float *alphas_cumprod;  /* (N) float32                                           */
    float *train_sigmas;    /* (N) ((1-ac)/ac)**0.5 in float32                       */
    float *train_log_sigmas;/* (N) np.log of the float32 sigmas (float32)            */
    double final_alpha_cumprod;
    /* set_timesteps */
    int num_inference_steps;
    int n_ts;
    double *timesteps;      /* (n_ts)                                                */
    int n_sigmas;
    float *sigmas;          /* (n_sigmas) or NULL                                    */
    double init_noise_sigma;
    int64_t n;              /* sample numel the buffers are sized for                */
    float *work;            /* one block for everything below                        */
    float *hist[MAX_HIST];  /* LMS derivatives / PNDM ets / multistep model outputs  */
    int n_hist;
    float *saved;           /* Heun sample, PNDM cur_sample, UniPC last_sample       */
    float *noise;           /* noise draw                                            */
    float *tmp;             /* scratch                                               */
    /* step state */
    int step_index, begin_index;
    int lower_order_nums;   /* DPM / UniPC                                           */
    int this_order;         /* UniPC                                                 */
    bool has_saved;
    int counter;            /* PNDM                                                  */
    double heun_dt;         /* Heun: NaN in first-order state                        */
};

/* ---------------------------------------------------------------- numpy helpers */

/* np.round: round half to even. */
static double np_round(double v) { return nearbyint(v); }

/* np.arange(start, stop, step) length and values (start + i*delta, delta = (start+step)-start). */
static int np_arange(double start, double stop, double step, double *out, int cap) {
    double len = ceil((stop - start) / step);
    if (!(len > 0)) return 0;
    int n = len > cap ? cap : (int)len;
    double delta = (start + step) - start;
    for (int i = 0; i < n; i++) out[i] = i == 0 ? start : start + i * delta;
    return n;
}

/* np.linspace(start, stop, num) (endpoint=True): start + i*step, last = stop. */
static void np_linspace(double start, double stop, int num, double *out) {
    if (num == 1) {
        out[0] = start;
        return;
    }
    double step = (stop - start) / (num - 1);
    for (int i = 0; i < num; i++) out[i] = i * step + start;
    out[num - 1] = stop;
}

/* np.interp(x, arange(N), fp) for x in [0, N-1] (fp float32, result float64). */
static double np_interp_idx(const float *fp, int N, double x) {
    if (x <= 0) return fp[0];
    if (x >= N - 1) return fp[N - 1];
    int j = (int)floor(x);
    if ((double)j == x) return fp[j];
    double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
    return slope * (x - j) + (double)fp[j];
}

/* diffusers _sigma_to_t(sigma, log_sigmas) (float32 log_sigmas, float64 maths). */
static double sigma_to_t(const nu_sched *s, double sigma) {
    const int N = s->N;
    double ls = log(sigma > 1e-10 ? sigma : 1e-10);
    int lo = 0;
    for (int i = 0; i < N; i++)
        if (ls - (double)s->train_log_sigmas[i] >= 0) lo = i;
    if (lo > N - 2) lo = N - 2;
    double low = s->train_log_sigmas[lo], high = s->train_log_sigmas[lo + 1];
    double w = (low - ls) / (low - high);
    w = w < 0 ? 0 : (w > 1 ? 1 : w);
    return (1 - w) * lo + w * (lo + 1);
}

/* diffusers _convert_to_karras (rho 7, ramp = np.linspace(0, 1, n)). */
static void convert_to_karras(double smin, double smax, int n, double *out) {
    const double rho = 7.0, min_inv = pow(smin, 1 / rho), max_inv = pow(smax, 1 / rho);
    np_linspace(0, 1, n, out);
    for (int i = 0; i < n; i++) out[i] = pow(max_inv + out[i] * (min_inv - max_inv), rho);
}

/* ---------------------------------------------------------------- creation */

static bool sigma_kind(nu_sched_kind k) {
    return k == NU_SCHED_EULER || k == NU_SCHED_EULER_ANCESTRAL || k == NU_SCHED_HEUN || k == NU_SCHED_LMS;
}
static bool multistep_kind(nu_sched_kind k) { return k == NU_SCHED_DPMSOLVER_MULTISTEP || k == NU_SCHED_UNIPC; }

nu_status nu_sched_new(const nu_sched_config *c, nu_sched **out) {
    *out = NULL;
    const char *name = nu_sched_kind_name(c->kind);
    if ((unsigned)c->kind >= NU_SCHED_KIND_COUNT) return nu_error(NU_ERR_INVALID_ARG, "unknown scheduler kind %d", (int)c->kind);
    if (c->num_train_timesteps < 2 || c->num_train_timesteps > NU_SAMPLE_MAX_TRAIN_STEPS)
        return nu_error(NU_ERR_INVALID_ARG, "%s: num_train_timesteps %d out of range", name, c->num_train_timesteps);
    if (c->thresholding) return nu_error(NU_ERR_UNSUPPORTED, "%s: thresholding is not supported", name);
    if (c->kind == NU_SCHED_PNDM && !c->skip_prk_steps)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: PRK warm-up steps (skip_prk_steps = false) are not supported", name);
    if (c->prediction_type == NU_PRED_FLOW || (unsigned)c->prediction_type >= NU_PREDICTION_COUNT)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: prediction type %s is not supported", name, nu_prediction_name(c->prediction_type));
    if (c->kind == NU_SCHED_PNDM && c->prediction_type == NU_PRED_SAMPLE)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: prediction type sample is not supported (epsilon, v_prediction)", name);
    if (multistep_kind(c->kind) && (c->solver_order < 1 || c->solver_order > 3))
        return nu_error(NU_ERR_INVALID_ARG, "%s: solver_order %d out of range (1..3)", name, c->solver_order);
    if (c->kind == NU_SCHED_DPMSOLVER_MULTISTEP && c->final_sigmas_zero &&
        (c->algorithm_type == NU_DPM_SOLVER || c->algorithm_type == NU_DPM_SDE_SOLVER))
        return nu_error(NU_ERR_INVALID_ARG, "%s: final_sigmas_type zero needs algorithm dpmsolver++ or sde-dpmsolver++", name);
    if ((unsigned)c->variance_type >= NU_DDPM_VARIANCE_COUNT || (unsigned)c->timestep_spacing >= NU_SPACING_COUNT ||
        (unsigned)c->beta_schedule >= NU_BETA_SCHEDULE_COUNT || (unsigned)c->algorithm_type >= NU_DPM_ALGORITHM_COUNT)
        return nu_error(NU_ERR_INVALID_ARG, "%s: invalid enum value in the config", name);
    if (c->kind == NU_SCHED_LCM && c->original_inference_steps > c->num_train_timesteps)
        return nu_error(NU_ERR_INVALID_ARG, "%s: original_inference_steps %d > num_train_timesteps %d", name,
                        c->original_inference_steps, c->num_train_timesteps);

    nu_sched *s = calloc(1, sizeof *s);
    if (!s) return nu_error(NU_ERR_NOMEM, "%s: out of memory", name);
    s->c = *c;
    const int N = s->N = c->num_train_timesteps;
    s->alphas_cumprod = malloc(sizeof(float) * (size_t)N);
    s->train_sigmas = malloc(sizeof(float) * (size_t)N);
    s->train_log_sigmas = malloc(sizeof(float) * (size_t)N);
    float *betas = malloc(sizeof(float) * (size_t)N);
    nu_status st = NU_OK;
    if (!s->alphas_cumprod || !s->train_sigmas || !s->train_log_sigmas || !betas) {
        st = nu_error(NU_ERR_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    if (c->trained_betas) memcpy(betas, c->trained_betas, sizeof(float) * (size_t)N);
    else if ((st = nu_betas_f32(c->beta_schedule, N, c->beta_start, c->beta_end, betas)) != NU_OK) goto fail;
    for (int i = 0; i < N; i++)
        if (!(betas[i] > 0 && betas[i] < 1)) {
            st = nu_error(NU_ERR_INVALID_ARG, "%s: beta[%d] = %g is outside (0, 1)", name, i, (double)betas[i]);
            goto fail;
        }
    if (c->rescale_betas_zero_snr) nu_betas_rescale_zero_terminal_snr(betas, N);
    nu_alphas_cumprod_f32(betas, N, s->alphas_cumprod);
    if (c->rescale_betas_zero_snr) s->alphas_cumprod[N - 1] = 0x1p-24f; /* diffusers: first sigma not inf */
    for (int i = 0; i < N; i++) {
        float a = s->alphas_cumprod[i];
        s->train_sigmas[i] = sqrtf((1.0f - a) / a);
        s->train_log_sigmas[i] = (float)log((double)s->train_sigmas[i]);
    }
    s->final_alpha_cumprod = c->set_alpha_to_one ? 1.0 : s->alphas_cumprod[0];
    s->heun_dt = NAN;
    free(betas);
    *out = s;
    return NU_OK;
fail:
    free(betas);
    nu_sched_free(s);
    return st;
}

void nu_sched_free(nu_sched *s) {
    if (!s) return;
    free(s->alphas_cumprod);
    free(s->train_sigmas);
    free(s->train_log_sigmas);
    free(s->timesteps);
    free(s->sigmas);
    free(s->work);
    free(s);
}

/* ---------------------------------------------------------------- set_timesteps */

static void reverse(double *v, int n) {
    for (int i = 0; i < n / 2; i++) {
        double t = v[i];
        v[i] = v[n - 1 - i], v[n - 1 - i] = t;
    }
}

/* Timesteps of DDIM / DDPM / PNDM in ascending order (ts holds at least n + 1 values). */
static int int_spacing(const nu_sched *s, int n, double *ts) {
    const int N = s->N;
    int m = 0;
    switch (s->c.timestep_spacing) {
    case NU_SPACING_LINSPACE:
        np_linspace(0, N - 1, n, ts);
        for (int i = 0; i < n; i++) ts[i] = np_round(ts[i]);
        m = n;
        break;
    case NU_SPACING_LEADING: {
        int ratio = N / n;
        for (int i = 0; i < n; i++) ts[i] = (double)i * ratio + s->c.steps_offset;
        m = n;
        break;
    }
    case NU_SPACING_TRAILING: { /* np.round(np.arange(N, 0, -N/n)) - 1, made ascending */
        int k = np_arange(N, 0, -(double)N / n, ts, n + 1);
        for (int i = 0; i < k; i++) ts[i] = np_round(ts[i]) - 1;
        reverse(ts, k);
        m = k;
        break;
    }
    default: break;
    }
    return m; /* ascending */
}

static nu_status alloc_work(nu_sched *s, int64_t n) {
    int nh = 0, extra = 3; /* saved, noise, tmp */
    switch (s->c.kind) {
    case NU_SCHED_LMS: nh = 4; break;
    case NU_SCHED_PNDM: nh = 4; break;
    case NU_SCHED_HEUN: nh = 1; break;
    case NU_SCHED_DPMSOLVER_MULTISTEP:
    case NU_SCHED_UNIPC: nh = s->c.solver_order; break;
    default: nh = 0; break;
    }
    size_t total = (size_t)(nh + extra);
    if ((uint64_t)n > (uint64_t)SIZE_MAX / sizeof(float) / total)
        return nu_error(NU_ERR_NOMEM, "%s: %lld elements is too many", nu_sched_kind_name(s->c.kind), (long long)n);
    free(s->work);
    s->work = malloc(sizeof(float) * (size_t)n * total);
    if (!s->work) return nu_error(NU_ERR_NOMEM, "%s: out of memory for %lld-element buffers", nu_sched_kind_name(s->c.kind), (long long)n);
    for (int i = 0; i < MAX_HIST; i++) s->hist[i] = i < nh ? s->work + (size_t)i * (size_t)n : NULL;
    s->saved = s->work + (size_t)nh * (size_t)n;
    s->noise = s->saved + n;
    s->tmp = s->noise + n;
    s->n = n;
    return NU_OK;
}

static void reset_state(nu_sched *s) {
    s->step_index = s->begin_index;
    s->lower_order_nums = 0;
    s->this_order = 0;
    s->has_saved = false;
    s->counter = 0;
    s->n_hist = 0;
    s->heun_dt = NAN;
}

nu_status nu_sched_set_timesteps(nu_sched *s, int steps, int64_t n) {
    const char *name = nu_sched_kind_name(s->c.kind);
    const int N = s->N;
    if (steps < 1 || steps > NU_SAMPLE_MAX_STEPS || steps > N)
        return nu_error(NU_ERR_INVALID_ARG, "%s: %d inference steps (need 1..%d)", name, steps,
                        N < NU_SAMPLE_MAX_STEPS ? N : NU_SAMPLE_MAX_STEPS);
    if (n <= 0) return nu_error(NU_ERR_INVALID_ARG, "%s: sample size must be > 0", name);
    double *ts = malloc(sizeof(double) * (size_t)(2 * steps + 2));
    double *sg = malloc(sizeof(double) * (size_t)(steps + 2));
    if (!ts || !sg) {
        free(ts), free(sg);
        return nu_error(NU_ERR_NOMEM, "%s: out of memory", name);
    }
    nu_status st = NU_OK;
    int nts = 0, nsig = 0;
    const nu_sched_config *c = &s->c;
    s->init_noise_sigma = 1.0;

    switch (c->kind) {
    case NU_SCHED_DDIM:
    case NU_SCHED_DDPM:
        nts = int_spacing(s, steps, ts);
        reverse(ts, nts);
        break;
    case NU_SCHED_PNDM: {
        int k = int_spacing(s, steps, sg); /* ascending _timesteps */
        /* plms_timesteps = concat(ts[:-1], ts[-2:-1], ts[-1:])[::-1] */
        for (int i = 0; i < k - 1; i++) ts[nts++] = sg[i];
        if (k >= 2) ts[nts++] = sg[k - 2];
        if (k >= 1) ts[nts++] = sg[k - 1];
        reverse(ts, nts);
        break;
    }
    case NU_SCHED_LCM: {
        /* k = N // original_steps; origin = arange(1, original_steps + 1) * k - 1 (strength 1),
         * reversed; indices floor(linspace(0, len, steps, endpoint=False)) */
        const int orig = c->original_inference_steps, kk = N / orig;
        if (steps > orig) {
            st = nu_error(NU_ERR_INVALID_ARG, "%s: %d steps > original_inference_steps %d", name, steps, orig);
            break;
        }
        for (int i = 0; i < steps; i++) {
            double pos = (double)i * ((double)orig / steps);
            int idx = (int)floor(pos);
            ts[nts++] = (double)(orig - idx) * kk - 1;
        }
        break;
    }
    case NU_SCHED_EULER:
    case NU_SCHED_EULER_ANCESTRAL:
    case NU_SCHED_HEUN:
    case NU_SCHED_LMS: {
        switch (c->timestep_spacing) {
        case NU_SPACING_LINSPACE:
            np_linspace(0, N - 1, steps, ts);
            reverse(ts, steps);
            nts = steps;
            break;
        case NU_SPACING_LEADING: {
            int ratio = N / steps;
            for (int i = 0; i < steps; i++) ts[i] = (double)(steps - 1 - i) * ratio + c->steps_offset;
            nts = steps;
            break;
        }
        case NU_SPACING_TRAILING:
            nts = np_arange(N, 0, -(double)N / steps, ts, steps + 1);
            for (int i = 0; i < nts; i++) ts[i] = np_round(ts[i]) - 1;
            break;
        default: break;
        }
        for (int i = 0; i < nts; i++) ts[i] = (float)ts[i]; /* .astype(np.float32) */
        for (int i = 0; i < nts; i++) sg[i] = np_interp_idx(s->train_sigmas, N, ts[i]);
        if (c->use_karras_sigmas) {
            double smin = isnan(c->sigma_min) ? sg[nts - 1] : c->sigma_min;
            double smax = isnan(c->sigma_max) ? sg[0] : c->sigma_max;
            convert_to_karras(smin, smax, nts, sg);
            for (int i = 0; i < nts; i++) ts[i] = (float)sigma_to_t(s, sg[i]);
        }
        nsig = nts;
        sg[nsig++] = 0.0;
        break;
    }
    case NU_SCHED_DPMSOLVER_MULTISTEP:
    case NU_SCHED_UNIPC: {
        int last_t = N;
        if (c->kind == NU_SCHED_DPMSOLVER_MULTISTEP) {
            /* clipped_idx = searchsorted(flip(lambda_t), lambda_min_clipped); lambda_t = -log(sigma) */
            int clipped = 0;
            for (int i = N - 1; i >= 0; i--) {
                double lam = -log((double)s->train_sigmas[i]);
                if (lam < c->lambda_min_clipped) clipped++;
                else break;
            }
            last_t = N - clipped;
        }
        switch (c->timestep_spacing) {
        case NU_SPACING_LINSPACE:
            np_linspace(0, last_t - 1, steps + 1, sg);
            for (int i = 0; i < steps; i++) ts[i] = np_round(sg[steps - i]);
            nts = steps;
            break;
        case NU_SPACING_LEADING: {
            int ratio = last_t / (steps + 1);
            for (int i = 0; i < steps; i++) ts[i] = (double)(steps - i) * ratio + c->steps_offset;
            nts = steps;
            break;
        }
        case NU_SPACING_TRAILING:
            nts = np_arange(last_t, 0, -(double)N / steps, ts, steps + 1);
            for (int i = 0; i < nts; i++) ts[i] = np_round(ts[i]) - 1;
            break;
        default: break;
        }
        if (c->use_karras_sigmas) {
            convert_to_karras(s->train_sigmas[0], s->train_sigmas[N - 1], steps, sg);
            nts = steps;
            for (int i = 0; i < nts; i++) ts[i] = np_round(sigma_to_t(s, sg[i]));
        } else {
            for (int i = 0; i < nts; i++) sg[i] = np_interp_idx(s->train_sigmas, N, ts[i]);
        }
        nsig = nts;
        if (c->final_sigmas_zero) sg[nsig++] = 0.0;
        else sg[nsig++] = (c->kind == NU_SCHED_UNIPC && c->use_karras_sigmas) ? sg[nts - 1] : s->train_sigmas[0];
        break;
    }
    default: st = nu_error(NU_ERR_INVALID_ARG, "%s: unknown kind", name); break;
    }
    if (st == NU_OK && nts < 1) st = nu_error(NU_ERR_INVALID_ARG, "%s: %d steps give no timesteps", name, steps);
    for (int i = 0; st == NU_OK && i < nts; i++)
        if (!(ts[i] >= 0 && ts[i] <= N - 1) && c->kind != NU_SCHED_EULER && c->kind != NU_SCHED_HEUN &&
            c->kind != NU_SCHED_LMS && c->kind != NU_SCHED_EULER_ANCESTRAL)
            st = nu_error(NU_ERR_INVALID_ARG, "%s: timestep %g out of [0, %d] (steps %d, steps_offset %d)", name, ts[i],
                          N - 1, steps, c->steps_offset);
    if (st != NU_OK) {
        free(ts), free(sg);
        return st;
    }

    /* Heun duplicates every sigma and timestep after the first. */
    if (c->kind == NU_SCHED_HEUN) {
        double *t2 = malloc(sizeof(double) * (size_t)(2 * nts + 2)), *s2 = malloc(sizeof(double) * (size_t)(2 * nsig + 2));
        if (!t2 || !s2) {
            free(t2), free(s2), free(ts), free(sg);
            return nu_error(NU_ERR_NOMEM, "%s: out of memory", name);
        }
        int a = 0, b = 0;
        t2[a++] = ts[0];
        for (int i = 1; i < nts; i++) t2[a++] = ts[i], t2[a++] = ts[i];
        s2[b++] = sg[0];
        for (int i = 1; i < nsig - 1; i++) s2[b++] = sg[i], s2[b++] = sg[i];
        s2[b++] = sg[nsig - 1];
        free(ts), free(sg);
        ts = t2, sg = s2, nts = a, nsig = b;
    }

    free(s->timesteps);
    free(s->sigmas);
    s->timesteps = ts;
    s->n_ts = nts;
    s->sigmas = NULL;
    s->n_sigmas = 0;
    if (nsig > 0) {
        s->sigmas = malloc(sizeof(float) * (size_t)nsig);
        if (!s->sigmas) {
            free(sg);
            return nu_error(NU_ERR_NOMEM, "%s: out of memory", name);
        }
        for (int i = 0; i < nsig; i++) s->sigmas[i] = (float)sg[i];
        s->n_sigmas = nsig;
    }
    free(sg);
    s->num_inference_steps = c->kind == NU_SCHED_LCM || multistep_kind(c->kind) ? nts : steps;
    if (sigma_kind(c->kind)) {
        float m = 0;
        for (int i = 0; i < s->n_sigmas; i++) m = s->sigmas[i] > m ? s->sigmas[i] : m;
        s->init_noise_sigma = c->timestep_spacing == NU_SPACING_LEADING ? sqrtf(m * m + 1.0f) : m;
    }
    if ((st = alloc_work(s, n)) != NU_OK) return st;
    s->begin_index = 0;
    reset_state(s);
    return NU_OK;
}

/* ---------------------------------------------------------------- accessors */

int nu_sched_len(const nu_sched *s) { return s->n_ts; }
double nu_sched_timestep(const nu_sched *s, int i) { return i >= 0 && i < s->n_ts ? s->timesteps[i] : NAN; }
int nu_sched_order(const nu_sched *s) { return s->c.kind == NU_SCHED_HEUN ? 2 : 1; }
double nu_sched_init_noise_sigma(const nu_sched *s) { return s->init_noise_sigma; }
void nu_sched_set_begin_index(nu_sched *s, int i) {
    s->begin_index = i < 0 ? 0 : (i > s->n_ts ? s->n_ts : i);
    reset_state(s);
}
int nu_sched_step_index(const nu_sched *s) { return s->step_index; }
const float *nu_sched_sigmas(const nu_sched *s, int *count) {
    if (count) *count = s->n_sigmas;
    return s->sigmas;
}
const float *nu_sched_alphas_cumprod(const nu_sched *s) { return s->alphas_cumprod; }

/* ---------------------------------------------------------------- scale_model_input / add_noise */

void nu_sched_scale_model_input(const nu_sched *s, const float *x, float *out, int64_t n) {
    if (sigma_kind(s->c.kind) && s->step_index < s->n_sigmas) {
        /* sample / ((sigma**2 + 1) ** 0.5), all float32 as torch */
        const float sg = s->sigmas[s->step_index];
        const float den = sqrtf(sg * sg + 1.0f);
        for (int64_t i = 0; i < n; i++) out[i] = x[i] / den;
    } else if (out != x) {
        memcpy(out, x, sizeof(float) * (size_t)n);
    }
}

nu_status nu_sched_add_noise(const nu_sched *s, int i, const float *x0, const float *noise, float *out, int64_t n) {
    if (i < 0 || i >= s->n_ts)
        return nu_error(NU_ERR_INVALID_ARG, "%s: add_noise at step %d of %d", nu_sched_kind_name(s->c.kind), i, s->n_ts);
    double a, b;
    if (sigma_kind(s->c.kind)) {
        a = 1, b = s->sigmas[i];
    } else if (multistep_kind(s->c.kind)) {
        double sg = s->sigmas[i];
        a = 1 / sqrt(sg * sg + 1), b = sg * a;
    } else {
        double ac = s->alphas_cumprod[(int)s->timesteps[i]];
        a = sqrt(ac), b = sqrt(1 - ac);
    }
    for (int64_t j = 0; j < n; j++) out[j] = (float)(a * x0[j] + b * noise[j]);
    return NU_OK;
}

/* ---------------------------------------------------------------- steps */

static nu_status draw_noise(nu_sched *s, const nu_noise *noise, double sigma, double sigma_next) {
    return nu_sample_draw_noise(noise, s->noise, s->n, sigma, sigma_next, nu_sched_kind_name(s->c.kind));
}

static double clampd(double v, double r) { return v < -r ? -r : (v > r ? r : v); }

/* x0 and eps from the model output at alpha_cumprod ac (DDIM/DDPM/PNDM/LCM parameterisation). */
static inline void x0_eps_vp(nu_prediction p, double ac, double x, double out, double *x0, double *eps) {
    const double sa = sqrt(ac), sb = sqrt(1 - ac);
    switch (p) {
    case NU_PRED_V: *x0 = sa * x - sb * out, *eps = sa * out + sb * x; break;
    case NU_PRED_SAMPLE: *x0 = out, *eps = (x - sa * out) / sb; break;
    case NU_PRED_EPS:
    default: *x0 = (x - sb * out) / sa, *eps = out; break;
    }
}

/* pred_original_sample of the sigma-space schedulers (Euler/EulerA/Heun/LMS). */
static inline double x0_sigma(nu_prediction p, double sigma_in, double sigma_v, double x, double out) {
    switch (p) {
    case NU_PRED_V: return out * (-sigma_v / sqrt(sigma_v * sigma_v + 1)) + x / (sigma_v * sigma_v + 1);
    case NU_PRED_SAMPLE: return out;
    case NU_PRED_EPS:
    default: return x - sigma_in * out;
    }
}

static nu_status step_ddim(nu_sched *s, const float *mo, float *x, int64_t n, const nu_noise *noise, float *po) {
    const nu_sched_config *c = &s->c;
    const int t = (int)s->timesteps[s->step_index], prev_t = t - s->N / s->num_inference_steps;
    const double ac = s->alphas_cumprod[t], acp = prev_t >= 0 ? s->alphas_cumprod[prev_t] : s->final_alpha_cumprod;
    const double bt = 1 - ac, btp = 1 - acp;
    const double variance = (btp / bt) * (1 - ac / acp), std = c->eta * sqrt(variance);
    const double cdir = sqrt(1 - acp - std * std), cx0 = sqrt(acp);
    if (c->eta > 0) {
        nu_status st = draw_noise(s, noise, 0, 0);
        if (st != NU_OK) return st;
    }
    for (int64_t j = 0; j < n; j++) {
        double x0, eps;
        x0_eps_vp(c->prediction_type, ac, x[j], mo[j], &x0, &eps);
        if (c->clip_sample) x0 = clampd(x0, c->clip_sample_range);
        if (po) po[j] = (float)x0;
        double v = cx0 * x0 + cdir * eps;
        if (c->eta > 0) v += std * s->noise[j];
        x[j] = (float)v;
    }
    return NU_OK;
}

static nu_status step_ddpm(nu_sched *s, const float *mo, float *x, int64_t n, const nu_noise *noise, float *po) {
    const nu_sched_config *c = &s->c;
    const int t = (int)s->timesteps[s->step_index], prev_t = t - s->N / s->num_inference_steps;
    const double ac = s->alphas_cumprod[t], acp = prev_t >= 0 ? s->alphas_cumprod[prev_t] : 1.0;
    const double bt = 1 - ac, btp = 1 - acp, cur_alpha = ac / acp, cur_beta = 1 - cur_alpha;
    const double c_x0 = sqrt(acp) * cur_beta / bt, c_x = sqrt(cur_alpha) * btp / bt;
    double std = 0;
    if (t > 0) {
        double var = btp / bt * cur_beta;
        if (var < 1e-20) var = 1e-20;
        switch (c->variance_type) {
        case NU_DDPM_FIXED_SMALL_LOG: std = exp(0.5 * log(var)); break;
        case NU_DDPM_FIXED_LARGE: std = sqrt(cur_beta); break;
        case NU_DDPM_FIXED_SMALL:
        default: std = sqrt(var); break;
        }
        nu_status st = draw_noise(s, noise, 0, 0);
        if (st != NU_OK) return st;
    }
    for (int64_t j = 0; j < n; j++) {
        double x0, eps;
        x0_eps_vp(c->prediction_type, ac, x[j], mo[j], &x0, &eps);
        if (c->clip_sample) x0 = clampd(x0, c->clip_sample_range);
        if (po) po[j] = (float)x0;
        double v = c_x0 * x0 + c_x * x[j];
        if (t > 0) v += std * s->noise[j];
        x[j] = (float)v;
    }
    return NU_OK;
}

static nu_status step_lcm(nu_sched *s, const float *mo, float *x, int64_t n, const nu_noise *noise, float *po) {
    const nu_sched_config *c = &s->c;
    const int i = s->step_index, t = (int)s->timesteps[i];
    const int prev_t = i + 1 < s->n_ts ? (int)s->timesteps[i + 1] : t;
    const double ac = s->alphas_cumprod[t], acp = prev_t >= 0 ? s->alphas_cumprod[prev_t] : s->final_alpha_cumprod;
    /* get_scalings_for_boundary_condition_discrete: sigma_data 0.5, t scaled by timestep_scaling */
    const double st_ = t * c->timestep_scaling, sd2 = 0.25;
    const double c_skip = sd2 / (st_ * st_ + sd2), c_out = st_ / sqrt(st_ * st_ + sd2);
    const bool last = i == s->num_inference_steps - 1;
    if (!last) {
        nu_status st = draw_noise(s, noise, 0, 0);
        if (st != NU_OK) return st;
    }
    const double a = sqrt(acp), b = sqrt(1 - acp);
    for (int64_t j = 0; j < n; j++) {
        double x0, eps;
        x0_eps_vp(c->prediction_type, ac, x[j], mo[j], &x0, &eps);
        if (c->clip_sample) x0 = clampd(x0, c->clip_sample_range);
        double den = c_out * x0 + c_skip * x[j];
        if (po) po[j] = (float)den;
        x[j] = (float)(last ? den : a * den + b * s->noise[j]);
    }
    return NU_OK;
}

/* PNDM with skip_prk_steps: PLMS (Liu et al. 2022, eq. 12) with diffusers' first-step handling,
 * and _get_prev_sample (eq. 9). */
static nu_status step_pndm(nu_sched *s, const float *mo, float *x, int64_t n, float *po) {
    const nu_sched_config *c = &s->c;
    const int stride = s->N / s->num_inference_steps;
    int t = (int)s->timesteps[s->step_index], prev_t = t - stride;
    float *const *ets = s->hist; /* ring: ets[k % 4] is the k-th stored output */
    if (s->counter != 1) {
        /* ets = ets[-3:]; ets.append(model_output) */
        memcpy(ets[s->n_hist % 4], mo, sizeof(float) * (size_t)n);
        s->n_hist++;
    } else {
        prev_t = t;
        t = t + stride;
    }
    const int m = s->n_hist < 4 ? s->n_hist : 4; /* len(ets) */
    const float *e1 = ets[(s->n_hist - 1) % 4], *e2 = m >= 2 ? ets[(s->n_hist - 2) % 4] : NULL;
    const float *e3 = m >= 3 ? ets[(s->n_hist - 3) % 4] : NULL, *e4 = m >= 4 ? ets[(s->n_hist - 4) % 4] : NULL;
    const float *sample = x;
    float *eff = s->tmp;
    if (m == 1 && s->counter == 0) {
        memcpy(eff, mo, sizeof(float) * (size_t)n);
        memcpy(s->saved, x, sizeof(float) * (size_t)n); /* cur_sample */
    } else if (m == 1 && s->counter == 1) {
        for (int64_t j = 0; j < n; j++) eff[j] = (float)(((double)mo[j] + e1[j]) / 2);
        sample = s->saved;
    } else if (m == 2) {
        for (int64_t j = 0; j < n; j++) eff[j] = (float)((3.0 * e1[j] - e2[j]) / 2);
    } else if (m == 3) {
        for (int64_t j = 0; j < n; j++) eff[j] = (float)((23.0 * e1[j] - 16.0 * e2[j] + 5.0 * e3[j]) / 12);
    } else {
        for (int64_t j = 0; j < n; j++) eff[j] = (float)((55.0 * e1[j] - 59.0 * e2[j] + 37.0 * e3[j] - 9.0 * e4[j]) / 24);
    }
    const double ac = s->alphas_cumprod[t], acp = prev_t >= 0 ? s->alphas_cumprod[prev_t] : s->final_alpha_cumprod;
    const double bt = 1 - ac, btp = 1 - acp;
    const double c_sample = sqrt(acp / ac), denom = ac * sqrt(btp) + sqrt(ac * bt * acp), c_eps = (acp - ac) / denom;
    for (int64_t j = 0; j < n; j++) {
        double e = eff[j], xv = sample[j];
        if (c->prediction_type == NU_PRED_V) e = sqrt(ac) * e + sqrt(bt) * xv;
        if (po) po[j] = (float)((xv - sqrt(bt) * e) / sqrt(ac));
        x[j] = (float)(c_sample * xv - c_eps * e);
    }
    s->counter++;
    return NU_OK;
}

static nu_status step_euler(nu_sched *s, const float *mo, float *x, int64_t n, const nu_noise *noise, float *po) {
    const nu_sched_config *c = &s->c;
    const int i = s->step_index;
    const double sigma = s->sigmas[i];
    double gamma = 0;
    if (c->s_tmin <= sigma && sigma <= c->s_tmax) {
        gamma = c->s_churn / (s->n_sigmas - 1);
        if (gamma > M_SQRT2 - 1) gamma = M_SQRT2 - 1;
    }
    const bool have_noise = noise && (noise->fn || noise->rng);
    if (have_noise || gamma > 0) { /* diffusers draws noise every step */
        nu_status st = draw_noise(s, noise, sigma, s->sigmas[i + 1]);
        if (st != NU_OK) return st;
    }
    const double hat = (float)(sigma * (gamma + 1)), dt = s->sigmas[i + 1] - hat;
    const double churn = gamma > 0 ? c->s_noise * sqrt(hat * hat - sigma * sigma) : 0;
    for (int64_t j = 0; j < n; j++) {
        double xv = x[j];
        if (gamma > 0) xv = (float)(xv + s->noise[j] * churn);
        double x0 = x0_sigma(c->prediction_type, hat, sigma, xv, mo[j]);
        if (po) po[j] = (float)x0;
        x[j] = (float)(xv + (xv - x0) / hat * dt);
    }
    return NU_OK;
}

static nu_status step_euler_a(nu_sched *s, const float *mo, float *x, int64_t n, const nu_noise *noise, float *po) {
    const nu_sched_config *c = &s->c;
    const int i = s->step_index;
    const double sf = s->sigmas[i], st_ = s->sigmas[i + 1];
    const double up = sqrt(st_ * st_ * (sf * sf - st_ * st_) / (sf * sf)), down = sqrt(st_ * st_ - up * up);
    nu_status st = draw_noise(s, noise, sf, st_);
    if (st != NU_OK) return st;
    for (int64_t j = 0; j < n; j++) {
        double xv = x[j], x0 = x0_sigma(c->prediction_type, sf, sf, xv, mo[j]);
        if (po) po[j] = (float)x0;
        x[j] = (float)(xv + (xv - x0) / sf * (down - sf) + s->noise[j] * up);
    }
    return NU_OK;
}

/* HeunDiscreteScheduler.step: first-order Euler stage, then the trapezoidal correction from the
 * saved sample (state_in_first_order <=> dt is None). */
static nu_status step_heun(nu_sched *s, const float *mo, float *x, int64_t n, float *po) {
    const nu_sched_config *c = &s->c;
    const int i = s->step_index;
    const bool first = isnan(s->heun_dt);
    float *deriv = s->hist[0];
    if (first) {
        const double sigma = s->sigmas[i], sn = s->sigmas[i + 1], dt = sn - sigma;
        for (int64_t j = 0; j < n; j++) {
            double xv = x[j], x0 = x0_sigma(c->prediction_type, sigma, sigma, xv, mo[j]);
            if (c->clip_sample) x0 = clampd(x0, c->clip_sample_range);
            if (po) po[j] = (float)x0;
            double d = (xv - x0) / sigma;
            deriv[j] = (float)d;
            s->saved[j] = x[j];
            x[j] = (float)(xv + d * dt);
        }
        s->heun_dt = dt;
    } else {
        const double sn = s->sigmas[i], dt = s->heun_dt;
        for (int64_t j = 0; j < n; j++) {
            double xv = x[j], x0 = x0_sigma(c->prediction_type, sn, sn, xv, mo[j]);
            if (c->clip_sample) x0 = clampd(x0, c->clip_sample_range);
            if (po) po[j] = (float)x0;
            double d = ((xv - x0) / sn + deriv[j]) / 2;
            x[j] = (float)(s->saved[j] + d * dt);
        }
        s->heun_dt = NAN;
    }
    return NU_OK;
}

/* LMSDiscreteScheduler.step: linear multistep over the last `order` derivatives with Lagrange
 * coefficients integrated over [sigma_i, sigma_{i+1}] (scipy quad there; exact Gauss-Legendre). */
static double lms_coeff(const float *sig, int order, int t, int cur) {
    static const double gx[4] = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526};
    static const double gw[4] = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538};
    const double a = sig[t], b = sig[t + 1], half = 0.5 * (b - a), mid = 0.5 * (a + b);
    double sum = 0;
    for (int q = 0; q < 4; q++) {
        double tau = mid + half * gx[q], prod = 1;
        for (int k = 0; k < order; k++) {
            if (k == cur) continue;
            prod *= (tau - sig[t - k]) / ((double)sig[t - cur] - sig[t - k]);
        }
        sum += gw[q] * prod;
    }
    return sum * half;
}

static nu_status step_lms(nu_sched *s, const float *mo, float *x, int64_t n, float *po) {
    const nu_sched_config *c = &s->c;
    const int i = s->step_index, max_order = 4;
    const double sigma = s->sigmas[i];
    float *d = s->hist[s->n_hist % max_order];
    for (int64_t j = 0; j < n; j++) {
        double x0 = x0_sigma(c->prediction_type, sigma, sigma, x[j], mo[j]);
        if (po) po[j] = (float)x0;
        d[j] = (float)((x[j] - x0) / sigma);
    }
    s->n_hist++;
    const int order = i + 1 < max_order ? i + 1 : max_order;
    double coef[4];
    for (int k = 0; k < order; k++) coef[k] = lms_coeff(s->sigmas, order, i, k);
    for (int64_t j = 0; j < n; j++) {
        double acc = x[j];
        for (int k = 0; k < order; k++) acc += coef[k] * s->hist[(s->n_hist - 1 - k) % max_order][j];
        x[j] = (float)acc;
    }
    return NU_OK;
}

/* ---- DPM-Solver multistep (Lu et al. 2022, DPM-Solver / DPM-Solver++), diffusers' variant */

static void alpha_sigma(double sigma, double *alpha_t, double *sigma_t, double *lambda) {
    *alpha_t = 1 / sqrt(sigma * sigma + 1);
    *sigma_t = sigma * *alpha_t;
    *lambda = log(*alpha_t) - log(*sigma_t);
}

/* The model output converted to x0 (data prediction) or eps (noise prediction). */
static void convert_output(const nu_sched *s, bool to_x0, const float *mo, const float *x, float *out, int64_t n) {
    double a, sg, lam;
    alpha_sigma(s->sigmas[s->step_index], &a, &sg, &lam);
    const nu_prediction p = s->c.prediction_type;
    for (int64_t j = 0; j < n; j++) {
        double xv = x[j], m = mo[j], v;
        if (to_x0) v = p == NU_PRED_EPS ? (xv - sg * m) / a : (p == NU_PRED_V ? a * xv - sg * m : m);
        else v = p == NU_PRED_EPS ? m : (p == NU_PRED_V ? a * m + sg * xv : (xv - a * m) / sg);
        out[j] = (float)v;
    }
}

static nu_status step_dpm(nu_sched *s, const float *mo, float *x, int64_t n, const nu_noise *noise, float *po) {
    const nu_sched_config *c = &s->c;
    const int i = s->step_index, len = s->n_ts, order = c->solver_order;
    const bool pp = c->algorithm_type == NU_DPM_SOLVER_PP || c->algorithm_type == NU_DPM_SDE_SOLVER_PP;
    const bool sde = c->algorithm_type == NU_DPM_SDE_SOLVER_PP || c->algorithm_type == NU_DPM_SDE_SOLVER;
    const bool lof = i == len - 1 && (c->euler_at_final || (c->lower_order_final && len < 15) || c->final_sigmas_zero);
    const bool los = i == len - 2 && c->lower_order_final && len < 15;
    /* model_outputs shift: hist[0] oldest .. hist[order-1] newest */
    float *oldest = s->hist[0];
    for (int k = 0; k < order - 1; k++) s->hist[k] = s->hist[k + 1];
    s->hist[order - 1] = oldest;
    float *m0 = s->hist[order - 1];
    convert_output(s, pp, mo, x, m0, n);
    if (po && pp) memcpy(po, m0, sizeof(float) * (size_t)n);
    if (sde) {
        nu_status st = draw_noise(s, noise, s->sigmas[i], s->sigmas[i + 1]);
        if (st != NU_OK) return st;
    }
    int use = 3;
    if (order == 1 || s->lower_order_nums < 1 || lof) use = 1;
    else if (order == 2 || s->lower_order_nums < 2 || los) use = 2;

    double at, st_, lt, a0, s0, l0;
    alpha_sigma(s->sigmas[i + 1], &at, &st_, &lt);
    alpha_sigma(s->sigmas[i], &a0, &s0, &l0);
    const double h = lt - l0;
    const float *z = s->noise;
    if (s->sigmas[i + 1] == 0) { /* final sigma 0: lambda = inf; every formula reduces to x = x0 */
        memcpy(x, m0, sizeof(float) * (size_t)n);
    } else if (use == 1) {
        for (int64_t j = 0; j < n; j++) {
            double xv = x[j], m = m0[j], v;
            switch (c->algorithm_type) {
            case NU_DPM_SOLVER_PP: v = (st_ / s0) * xv - (at * (exp(-h) - 1.0)) * m; break;
            case NU_DPM_SOLVER: v = (at / a0) * xv - (st_ * (exp(h) - 1.0)) * m; break;
            case NU_DPM_SDE_SOLVER_PP:
                v = (st_ / s0 * exp(-h)) * xv + (at * (1 - exp(-2.0 * h))) * m + st_ * sqrt(1.0 - exp(-2 * h)) * z[j];
                break;
            default: v = (at / a0) * xv - 2.0 * (st_ * (exp(h) - 1.0)) * m + st_ * sqrt(exp(2 * h) - 1.0) * z[j]; break;
            }
            x[j] = (float)v;
        }
    } else if (use == 2) {
        double a1, s1, l1;
        alpha_sigma(s->sigmas[i - 1], &a1, &s1, &l1);
        const double h0 = l0 - l1, r0 = h0 / h;
        const float *m1 = s->hist[order - 2];
        const bool heun = c->solver_type_heun;
        for (int64_t j = 0; j < n; j++) {
            double xv = x[j], D0 = m0[j], D1 = (1.0 / r0) * ((double)m0[j] - m1[j]), v;
            switch (c->algorithm_type) {
            case NU_DPM_SOLVER_PP:
                v = (st_ / s0) * xv - (at * (exp(-h) - 1.0)) * D0 +
                    (heun ? (at * ((exp(-h) - 1.0) / h + 1.0)) * D1 : -0.5 * (at * (exp(-h) - 1.0)) * D1);
                break;
            case NU_DPM_SOLVER:
                v = (at / a0) * xv - (st_ * (exp(h) - 1.0)) * D0 -
                    (heun ? (st_ * ((exp(h) - 1.0) / h - 1.0)) * D1 : 0.5 * (st_ * (exp(h) - 1.0)) * D1);
                break;
            case NU_DPM_SDE_SOLVER_PP:
                v = (st_ / s0 * exp(-h)) * xv + (at * (1 - exp(-2.0 * h))) * D0 +
                    (heun ? (at * ((1.0 - exp(-2.0 * h)) / (-2.0 * h) + 1.0)) * D1 : 0.5 * (at * (1 - exp(-2.0 * h))) * D1) +
                    st_ * sqrt(1.0 - exp(-2 * h)) * z[j];
                break;
            default:
                v = (at / a0) * xv - 2.0 * (st_ * (exp(h) - 1.0)) * D0 -
                    (heun ? 2.0 * (st_ * ((exp(h) - 1.0) / h - 1.0)) * D1 : (st_ * (exp(h) - 1.0)) * D1) +
                    st_ * sqrt(exp(2 * h) - 1.0) * z[j];
                break;
            }
            x[j] = (float)v;
        }
    } else { /* third order (deterministic algorithms only, as diffusers) */
        double a1, s1, l1, a2, s2, l2;
        alpha_sigma(s->sigmas[i - 1], &a1, &s1, &l1);
        alpha_sigma(s->sigmas[i - 2], &a2, &s2, &l2);
        const double h0 = l0 - l1, h1 = l1 - l2, r0 = h0 / h, r1 = h1 / h;
        const float *m1 = s->hist[order - 2], *m2 = s->hist[order - 3];
        for (int64_t j = 0; j < n; j++) {
            double xv = x[j], D0 = m0[j];
            double D10 = (1.0 / r0) * ((double)m0[j] - m1[j]), D11 = (1.0 / r1) * ((double)m1[j] - m2[j]);
            double D1 = D10 + (r0 / (r0 + r1)) * (D10 - D11), D2 = (1.0 / (r0 + r1)) * (D10 - D11), v;
            if (pp)
                v = (st_ / s0) * xv - (at * (exp(-h) - 1.0)) * D0 + (at * ((exp(-h) - 1.0) / h + 1.0)) * D1 -
                    (at * ((exp(-h) - 1.0 + h) / (h * h) - 0.5)) * D2;
            else
                v = (at / a0) * xv - (st_ * (exp(h) - 1.0)) * D0 - (st_ * ((exp(h) - 1.0) / h - 1.0)) * D1 -
                    (st_ * ((exp(h) - 1.0 - h) / (h * h) - 0.5)) * D2;
            x[j] = (float)v;
        }
    }
    if (s->lower_order_nums < order) s->lower_order_nums++;
    return NU_OK;
}

/* ---- UniPC (Zhao et al. 2023), B(h) variants, diffusers' multistep_uni_p/c_bh_update */

/* Solves the k x k system A v = b (k <= 3) by Gaussian elimination with partial pivoting. */
static void solve_small(int k, double A[3][3], double *b, double *v) {
    for (int col = 0; col < k; col++) {
        int piv = col;
        for (int r = col + 1; r < k; r++)
            if (fabs(A[r][col]) > fabs(A[piv][col])) piv = r;
        if (piv != col) {
            for (int q = 0; q < k; q++) {
                double t = A[col][q];
                A[col][q] = A[piv][q], A[piv][q] = t;
            }
            double t = b[col];
            b[col] = b[piv], b[piv] = t;
        }
        for (int r = col + 1; r < k; r++) {
            double f = A[r][col] / A[col][col];
            for (int q = col; q < k; q++) A[r][q] -= f * A[col][q];
            b[r] -= f * b[col];
        }
    }
    for (int r = k - 1; r >= 0; r--) {
        double acc = b[r];
        for (int q = r + 1; q < k; q++) acc -= A[r][q] * v[q];
        v[r] = acc / A[r][r];
    }
}

/* Coefficients shared by the predictor and corrector: rks (order entries, last = 1), the b vector
 * and B(h); hh = -h (predict_x0) or h. */
static void unipc_coeffs(const nu_sched *s, int order, double hh, const double *rks, double R[3][3], double *b,
                         double *B_h) {
    double h_phi_1 = expm1(hh), h_phi_k = h_phi_1 / hh - 1, fact = 1;
    *B_h = s->c.unipc_bh1 ? hh : expm1(hh);
    for (int i = 1; i <= order; i++) {
        for (int q = 0; q < order; q++) R[i - 1][q] = pow(rks[q], i - 1);
        b[i - 1] = h_phi_k * fact / *B_h;
        fact *= i + 1;
        h_phi_k = h_phi_k / hh - 1 / fact;
    }
}

static nu_status step_unipc(nu_sched *s, const float *mo, float *x, int64_t n, float *po) {
    const nu_sched_config *c = &s->c;
    const int i = s->step_index, order_max = c->solver_order;
    const bool x0p = c->predict_x0;
    float *mconv = s->tmp;
    convert_output(s, x0p, mo, x, mconv, n);
    if (po && x0p) memcpy(po, mconv, sizeof(float) * (size_t)n);
    bool use_corrector = i > 0 && s->has_saved;
    for (int k = 0; k < c->n_disable_corrector; k++)
        if (c->disable_corrector[k] == i - 1) use_corrector = false;

    if (use_corrector) { /* multistep_uni_c_bh_update(mconv, last_sample, x, this_order) */
        const int order = s->this_order;
        double at, st_, lt, a0, s0, l0;
        alpha_sigma(s->sigmas[i], &at, &st_, &lt);
        alpha_sigma(s->sigmas[i - 1], &a0, &s0, &l0);
        const double h = lt - l0, hh = x0p ? -h : h, h_phi_1 = expm1(hh);
        const float *m0 = s->hist[order_max - 1];
        double rks[3];
        const float *mi[3];
        for (int k = 1; k < order; k++) {
            double ak, sk, lk;
            alpha_sigma(s->sigmas[i - (k + 1)], &ak, &sk, &lk);
            rks[k - 1] = (lk - l0) / h;
            mi[k - 1] = s->hist[order_max - 1 - k];
        }
        rks[order - 1] = 1.0;
        double R[3][3], b[3], B_h, rhos[3];
        unipc_coeffs(s, order, hh, rks, R, b, &B_h);
        if (order == 1) rhos[0] = 0.5;
        else solve_small(order, R, b, rhos);
        const float *xl = s->saved;
        for (int64_t j = 0; j < n; j++) {
            double corr = 0;
            for (int k = 0; k < order - 1; k++) corr += rhos[k] * ((double)mi[k][j] - m0[j]) / rks[k];
            double D1t = (double)mconv[j] - m0[j], v;
            if (x0p) v = st_ / s0 * xl[j] - at * h_phi_1 * m0[j] - at * B_h * (corr + rhos[order - 1] * D1t);
            else v = at / a0 * xl[j] - st_ * h_phi_1 * m0[j] - st_ * B_h * (corr + rhos[order - 1] * D1t);
            x[j] = (float)v;
        }
    }
    /* model_outputs shift and store */
    float *oldest = s->hist[0];
    for (int k = 0; k < order_max - 1; k++) s->hist[k] = s->hist[k + 1];
    s->hist[order_max - 1] = oldest;
    memcpy(oldest, mconv, sizeof(float) * (size_t)n);
    int this_order = order_max;
    if (c->lower_order_final && s->n_ts - i < this_order) this_order = s->n_ts - i;
    if (this_order > s->lower_order_nums + 1) this_order = s->lower_order_nums + 1;
    s->this_order = this_order;
    memcpy(s->saved, x, sizeof(float) * (size_t)n); /* last_sample */
    s->has_saved = true;

    { /* multistep_uni_p_bh_update(x, this_order) */
        const int order = this_order;
        double at, st_, lt, a0, s0, l0;
        alpha_sigma(s->sigmas[i + 1], &at, &st_, &lt);
        alpha_sigma(s->sigmas[i], &a0, &s0, &l0);
        const double h = lt - l0, hh = x0p ? -h : h, h_phi_1 = expm1(hh);
        const float *m0 = s->hist[order_max - 1];
        double rks[3];
        const float *mi[3];
        for (int k = 1; k < order; k++) {
            double ak, sk, lk;
            alpha_sigma(s->sigmas[i - k], &ak, &sk, &lk);
            rks[k - 1] = (lk - l0) / h;
            mi[k - 1] = s->hist[order_max - 1 - k];
        }
        rks[order - 1] = 1.0;
        double R[3][3], b[3], B_h, rhos[3] = {0, 0, 0};
        unipc_coeffs(s, order, hh, rks, R, b, &B_h);
        if (order == 2) rhos[0] = 0.5;
        else if (order == 3) solve_small(order - 1, R, b, rhos);
        for (int64_t j = 0; j < n; j++) {
            double pred = 0;
            for (int k = 0; k < order - 1; k++) pred += rhos[k] * ((double)mi[k][j] - m0[j]) / rks[k];
            double xv = x[j], v;
            if (x0p) v = st_ / s0 * xv - at * h_phi_1 * m0[j] - at * B_h * pred;
            else v = at / a0 * xv - st_ * h_phi_1 * m0[j] - st_ * B_h * pred;
            x[j] = (float)v;
        }
    }
    if (s->lower_order_nums < order_max) s->lower_order_nums++;
    return NU_OK;
}

nu_status nu_sched_step(nu_sched *s, const float *mo, float *x, int64_t n, const nu_noise *noise, float *po) {
    const char *name = nu_sched_kind_name(s->c.kind);
    if (!s->timesteps) return nu_error(NU_ERR_INVALID_ARG, "%s: set_timesteps was not called", name);
    if (n != s->n)
        return nu_error(NU_ERR_INVALID_ARG, "%s: buffers sized for %lld elements, step called with %lld", name,
                        (long long)s->n, (long long)n);
    if (s->step_index >= s->n_ts)
        return nu_error(NU_ERR_INVALID_ARG, "%s: step %d past the last timestep (%d)", name, s->step_index, s->n_ts);
    nu_status st;
    switch (s->c.kind) {
    case NU_SCHED_DDIM: st = step_ddim(s, mo, x, n, noise, po); break;
    case NU_SCHED_DDPM: st = step_ddpm(s, mo, x, n, noise, po); break;
    case NU_SCHED_PNDM: st = step_pndm(s, mo, x, n, po); break;
    case NU_SCHED_LCM: st = step_lcm(s, mo, x, n, noise, po); break;
    case NU_SCHED_EULER: st = step_euler(s, mo, x, n, noise, po); break;
    case NU_SCHED_EULER_ANCESTRAL: st = step_euler_a(s, mo, x, n, noise, po); break;
    case NU_SCHED_HEUN: st = step_heun(s, mo, x, n, po); break;
    case NU_SCHED_LMS: st = step_lms(s, mo, x, n, po); break;
    case NU_SCHED_DPMSOLVER_MULTISTEP: st = step_dpm(s, mo, x, n, noise, po); break;
    case NU_SCHED_UNIPC: st = step_unipc(s, mo, x, n, po); break;
    default: st = nu_error(NU_ERR_INVALID_ARG, "%s: unknown kind", name); break;
    }
    if (st == NU_OK) s->step_index++;
    return st;
}
