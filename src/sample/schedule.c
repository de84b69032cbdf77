/*
 * schedule.c — training noise schedules (betas, alphas_cumprod), k-diffusion's DiscreteSchedule
 * (sigma <-> t by log-sigma interpolation), the sigma schedules of k-diffusion / ComfyUI /
 * sd.cpp (discrete, karras, exponential, polyexponential, vp, sgm_uniform, simple, flow), and the
 * denoiser parameterisations (c_skip / c_out / c_in) with a wrapper that turns an eps/v/x0/flow
 * network into a k-diffusion denoiser.
 *
 * Numerics: diffusers computes betas with float32 torch.linspace and LDM with float64
 * torch.linspace; both are emulated bit for bit (nu_torch_linspace_*), and torch.cumprod's double
 * accumulator too, so betas and alphas_cumprod equal the references exactly. The sigma schedules
 * are evaluated in double from the same float32 linspace values and rounded once, which lands
 * within a few float32 ulps of k-diffusion's all-float32 evaluation.
 *
 * Tested by tests/test_schedules.c against every key of ../shared/reference/schedules.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nuance/sample.h"
#include "sample/sample_internal.h"

/* The emulations below depend on exactly which operations are fused. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* ---------------------------------------------------------------- torch.linspace emulation */

/*
 * torch 1.13's CPU linspace kernel (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp) on an
 * AVX2 build: step = (end - start) / (steps - 1) in the output dtype; index idx < steps/2 is
 * start + step*idx, the upper half end - step*(steps-1-idx) (FMA-contracted in the AVX2 kernel);
 * the vectorised loop handles two vectors (2 x 8 floats / 2 x 4 doubles) per iteration, each
 * vector being `base + i*step` (i*step rounded, then added) from the base of its first element,
 * and the remainder goes through the scalar lambda. steps == 1 fills `start`.
 * Verified bit-exact against torch 1.13 for many (start, end, steps) by the schedules tests.
 */
void nu_torch_linspace_f32(double start, double end, int steps, float *out) {
    if (steps <= 0) return;
    const float s = (float)start, e = (float)end;
    if (steps == 1) {
        out[0] = s;
        return;
    }
    const float step = (e - s) / (float)(steps - 1);
    const int64_t half = steps / 2, V = 8;
    int64_t idx = 0;
    for (; idx + 2 * V <= steps; idx += V) { /* two vectors per iteration: idx, idx + V */
        float base = idx < half ? fmaf(step, (float)idx, s) : fmaf(-step, (float)(steps - idx - 1), e);
        for (int64_t i = 0; i < V; i++) out[idx + i] = base + (float)i * step;
        idx += V;
        base = idx < half ? fmaf(step, (float)idx, s) : fmaf(-step, (float)(steps - idx - 1), e);
        for (int64_t i = 0; i < V; i++) out[idx + i] = base + (float)i * step;
    }
    for (; idx < steps; idx++) out[idx] = idx < half ? fmaf(step, (float)idx, s) : fmaf(-step, (float)(steps - idx - 1), e);
}

void nu_torch_linspace_f64(double start, double end, int steps, double *out) {
    if (steps <= 0) return;
    if (steps == 1) {
        out[0] = start;
        return;
    }
    const double step = (end - start) / (double)(steps - 1);
    const int64_t half = steps / 2, V = 4;
    int64_t idx = 0;
    for (; idx + 2 * V <= steps; idx += V) { /* two vectors per iteration: idx, idx + V */
        double base = idx < half ? fma(step, (double)idx, start) : fma(-step, (double)(steps - idx - 1), end);
        for (int64_t i = 0; i < V; i++) out[idx + i] = base + (double)i * step;
        idx += V;
        base = idx < half ? fma(step, (double)idx, start) : fma(-step, (double)(steps - idx - 1), end);
        for (int64_t i = 0; i < V; i++) out[idx + i] = base + (double)i * step;
    }
    for (; idx < steps; idx++) out[idx] = idx < half ? fma(step, (double)idx, start) : fma(-step, (double)(steps - idx - 1), end);
}

/* ---------------------------------------------------------------- betas */

static const char *const beta_names[NU_BETA_SCHEDULE_COUNT] = {"linear", "scaled_linear", "squaredcos_cap_v2"};

nu_status nu_beta_schedule_from_name(const char *name, nu_beta_schedule *out) {
    for (int i = 0; i < NU_BETA_SCHEDULE_COUNT; i++)
        if (name && strcmp(name, beta_names[i]) == 0) {
            *out = (nu_beta_schedule)i;
            return NU_OK;
        }
    return nu_error(NU_ERR_UNSUPPORTED, "beta schedule '%s' is not supported (linear, scaled_linear, squaredcos_cap_v2)",
                    name ? name : "(null)");
}

const char *nu_beta_schedule_name(nu_beta_schedule s) {
    return (unsigned)s < NU_BETA_SCHEDULE_COUNT ? beta_names[s] : "?";
}

static nu_status check_train_steps(int n) {
    if (n < 2 || n > NU_SAMPLE_MAX_TRAIN_STEPS)
        return nu_error(NU_ERR_INVALID_ARG, "num_train_timesteps %d is out of range (2..%d)", n, NU_SAMPLE_MAX_TRAIN_STEPS);
    return NU_OK;
}

/* diffusers betas_for_alpha_bar(N, max_beta=0.999, "cosine"), in Python floats. */
static double cos_alpha_bar(double t) {
    double c = cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

nu_status nu_betas_f32(nu_beta_schedule s, int n, double beta_start, double beta_end, float *betas) {
    nu_status st = check_train_steps(n);
    if (st != NU_OK) return st;
    switch (s) {
    case NU_BETA_LINEAR: nu_torch_linspace_f32(beta_start, beta_end, n, betas); return NU_OK;
    case NU_BETA_SCALED_LINEAR:
        nu_torch_linspace_f32(sqrt(beta_start), sqrt(beta_end), n, betas);
        for (int i = 0; i < n; i++) betas[i] = betas[i] * betas[i];
        return NU_OK;
    case NU_BETA_SQUAREDCOS_CAP_V2:
        for (int i = 0; i < n; i++) {
            double t1 = (double)i / n, t2 = (double)(i + 1) / n;
            double b = 1 - cos_alpha_bar(t2) / cos_alpha_bar(t1);
            betas[i] = (float)(b < 0.999 ? b : 0.999);
        }
        return NU_OK;
    default: return nu_error(NU_ERR_INVALID_ARG, "unknown beta schedule %d", (int)s);
    }
}

nu_status nu_betas_f64(nu_beta_schedule s, int n, double beta_start, double beta_end, double *betas) {
    nu_status st = check_train_steps(n);
    if (st != NU_OK) return st;
    switch (s) {
    case NU_BETA_LINEAR: nu_torch_linspace_f64(beta_start, beta_end, n, betas); return NU_OK;
    case NU_BETA_SCALED_LINEAR: /* LDM make_beta_schedule("linear") */
        nu_torch_linspace_f64(sqrt(beta_start), sqrt(beta_end), n, betas);
        for (int i = 0; i < n; i++) betas[i] = betas[i] * betas[i];
        return NU_OK;
    case NU_BETA_SQUAREDCOS_CAP_V2: { /* LDM make_beta_schedule("cosine", cosine_s=8e-3) */
        const double cs = 8e-3;
        double a_prev = 0, a0 = 0;
        for (int i = 0; i <= n; i++) {
            double c = cos(((double)i / n + cs) / (1 + cs) * M_PI / 2);
            double a = c * c;
            if (i == 0) a0 = a;
            a /= a0;
            if (i > 0) {
                double b = 1 - a / a_prev;
                betas[i - 1] = b < 0 ? 0 : (b > 0.999 ? 0.999 : b);
            }
            a_prev = a;
        }
        return NU_OK;
    }
    default: return nu_error(NU_ERR_INVALID_ARG, "unknown beta schedule %d", (int)s);
    }
}

void nu_alphas_cumprod_f32(const float *betas, int n, float *ac) {
    double p = 1.0; /* torch's cumprod CPU kernel accumulates in acc_type<float> = double */
    for (int i = 0; i < n; i++) {
        p *= (double)(1.0f - betas[i]);
        ac[i] = (float)p;
    }
}

void nu_alphas_cumprod_f64(const double *betas, int n, double *ac) {
    double p = 1.0;
    for (int i = 0; i < n; i++) {
        p *= 1.0 - betas[i];
        ac[i] = p;
    }
}

/* Lin et al. 2023 "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1,
 * as diffusers' rescale_zero_terminal_snr (float32 there; here in double, rounded once). */
void nu_betas_rescale_zero_terminal_snr(float *betas, int n) {
    if (n < 2) return;
    double *sq = malloc(sizeof(double) * (size_t)n);
    if (!sq) return;
    double p = 1.0;
    for (int i = 0; i < n; i++) {
        p *= 1.0 - (double)betas[i];
        sq[i] = sqrt(p);
    }
    double s0 = sq[0], sT = sq[n - 1];
    for (int i = 0; i < n; i++) {
        double v = (sq[i] - sT) * (s0 / (s0 - sT));
        sq[i] = v * v; /* alphas_bar */
    }
    betas[0] = (float)(1.0 - sq[0]);
    for (int i = 1; i < n; i++) betas[i] = (float)(1.0 - sq[i] / sq[i - 1]);
    free(sq);
}

/* ---------------------------------------------------------------- DiscreteSchedule */

nu_status nu_discrete_schedule_init(nu_discrete_schedule *d, const float *ac, int n) {
    memset(d, 0, sizeof *d);
    nu_status st = check_train_steps(n);
    if (st != NU_OK) return st;
    d->sigmas = malloc(sizeof(float) * (size_t)n);
    d->log_sigmas = malloc(sizeof(float) * (size_t)n);
    if (!d->sigmas || !d->log_sigmas) {
        nu_discrete_schedule_free(d);
        return nu_error(NU_ERR_NOMEM, "discrete schedule: out of memory");
    }
    d->n = n;
    for (int i = 0; i < n; i++) {
        if (!(ac[i] > 0.0f && ac[i] < 1.0f)) {
            nu_discrete_schedule_free(d);
            return nu_error(NU_ERR_INVALID_ARG, "alphas_cumprod[%d] = %g is outside (0, 1)", i, (double)ac[i]);
        }
        /* ((1 - ac) / ac) ** 0.5 in float32, as k-diffusion's DiscreteEpsDDPMDenoiser */
        float r = (1.0f - ac[i]) / ac[i];
        d->sigmas[i] = sqrtf(r);
        d->log_sigmas[i] = (float)log((double)d->sigmas[i]);
    }
    for (int i = 1; i < n; i++)
        if (!(d->sigmas[i] > d->sigmas[i - 1])) {
            nu_discrete_schedule_free(d);
            return nu_error(NU_ERR_INVALID_ARG, "alphas_cumprod must decrease strictly (index %d)", i);
        }
    return NU_OK;
}

nu_status nu_discrete_schedule_init_betas(nu_discrete_schedule *d, nu_beta_schedule s, int n, double beta_start,
                                          double beta_end, bool ldm_f64) {
    memset(d, 0, sizeof *d);
    nu_status st = check_train_steps(n);
    if (st != NU_OK) return st;
    float *ac = malloc(sizeof(float) * (size_t)n);
    double *b64 = ldm_f64 ? malloc(sizeof(double) * (size_t)n * 2) : NULL;
    float *b32 = ldm_f64 ? NULL : malloc(sizeof(float) * (size_t)n);
    if (!ac || (ldm_f64 ? !b64 : !b32)) {
        st = nu_error(NU_ERR_NOMEM, "discrete schedule: out of memory");
        goto done;
    }
    if (ldm_f64) {
        if ((st = nu_betas_f64(s, n, beta_start, beta_end, b64)) != NU_OK) goto done;
        nu_alphas_cumprod_f64(b64, n, b64 + n);
        for (int i = 0; i < n; i++) ac[i] = (float)b64[n + i];
    } else {
        if ((st = nu_betas_f32(s, n, beta_start, beta_end, b32)) != NU_OK) goto done;
        nu_alphas_cumprod_f32(b32, n, ac);
    }
    st = nu_discrete_schedule_init(d, ac, n);
done:
    free(ac);
    free(b64);
    free(b32);
    return st;
}

void nu_discrete_schedule_free(nu_discrete_schedule *d) {
    if (!d) return;
    free(d->sigmas);
    free(d->log_sigmas);
    memset(d, 0, sizeof *d);
}

double nu_discrete_sigma_min(const nu_discrete_schedule *d) { return d->sigmas[0]; }
double nu_discrete_sigma_max(const nu_discrete_schedule *d) { return d->sigmas[d->n - 1]; }

/* k-diffusion DiscreteSchedule.sigma_to_t. low_idx is the last index whose log-sigma is <= the
 * query (cumsum(dists >= 0).argmax()), 0 if none, at most n-2. */
double nu_discrete_sigma_to_t(const nu_discrete_schedule *d, double sigma, bool quantize) {
    const int n = d->n;
    /* log of the float32 sigma, rounded to float32 as k-diffusion's tensor op (so a training
     * sigma maps exactly to its integer t) */
    const float sf = (float)(sigma > 1e-30 ? sigma : 1e-30);
    const double ls = (float)log((double)sf);
    if (quantize) {
        int best = 0;
        double bd = fabs(ls - d->log_sigmas[0]);
        for (int i = 1; i < n; i++) {
            double dd = fabs(ls - d->log_sigmas[i]);
            if (dd < bd) bd = dd, best = i;
        }
        return best;
    }
    int lo = 0;
    for (int i = 0; i < n; i++)
        if (ls - d->log_sigmas[i] >= 0) lo = i;
    if (lo > n - 2) lo = n - 2;
    double low = d->log_sigmas[lo], high = d->log_sigmas[lo + 1];
    double w = (low - ls) / (low - high);
    w = w < 0 ? 0 : (w > 1 ? 1 : w);
    return (1 - w) * lo + w * (lo + 1);
}

double nu_discrete_t_to_sigma(const nu_discrete_schedule *d, double t) {
    if (!(t >= 0)) t = 0; /* also NaN */
    if (t > d->n - 1) t = d->n - 1;
    int lo = (int)floor(t), hi = (int)ceil(t);
    double w = t - lo;
    return exp((1 - w) * d->log_sigmas[lo] + w * d->log_sigmas[hi]);
}

/* ---------------------------------------------------------------- sigma schedules */

static const char *const sched_names[NU_SCHEDULE_COUNT] = {"discrete", "karras", "exponential", "polyexponential",
                                                          "vp", "sgm_uniform", "simple"};

nu_status nu_sigma_schedule_from_name(const char *name, nu_sigma_schedule *out) {
    if (!name) return nu_error(NU_ERR_INVALID_ARG, "schedule name is NULL");
    for (int i = 0; i < NU_SCHEDULE_COUNT; i++)
        if (nu_sample_name_eq(name, sched_names[i])) {
            *out = (nu_sigma_schedule)i;
            return NU_OK;
        }
    if (nu_sample_name_eq(name, "normal") || nu_sample_name_eq(name, "default") || nu_sample_name_eq(name, "compvis")) {
        *out = NU_SCHEDULE_DISCRETE;
        return NU_OK;
    }
    return nu_error(NU_ERR_INVALID_ARG,
                    "unknown schedule '%s' (discrete, karras, exponential, polyexponential, vp, sgm_uniform, simple)", name);
}

const char *nu_sigma_schedule_name(nu_sigma_schedule s) {
    return (unsigned)s < NU_SCHEDULE_COUNT ? sched_names[s] : "?";
}

static nu_status check_steps(int n) {
    if (n < 1 || n > NU_SAMPLE_MAX_STEPS)
        return nu_error(NU_ERR_INVALID_ARG, "number of sampling steps %d is out of range (1..%d)", n, NU_SAMPLE_MAX_STEPS);
    return NU_OK;
}

static nu_status check_sigma_range(double smin, double smax) {
    if (!(smin > 0) || !(smax >= smin) || !isfinite(smax))
        return nu_error(NU_ERR_INVALID_ARG, "sigma range [%g, %g] is invalid (need 0 < min <= max)", smin, smax);
    return NU_OK;
}

nu_status nu_sigmas_karras(int n, double smin, double smax, double rho, float *out) {
    nu_status st;
    if ((st = check_steps(n)) != NU_OK || (st = check_sigma_range(smin, smax)) != NU_OK) return st;
    if (!(rho > 0)) return nu_error(NU_ERR_INVALID_ARG, "karras rho must be > 0 (got %g)", rho);
    nu_torch_linspace_f32(0.0, 1.0, n, out); /* ramp */
    double min_inv = pow(smin, 1 / rho), max_inv = pow(smax, 1 / rho);
    for (int i = 0; i < n; i++) out[i] = (float)pow(max_inv + out[i] * (min_inv - max_inv), rho);
    out[n] = 0;
    return NU_OK;
}

nu_status nu_sigmas_exponential(int n, double smin, double smax, float *out) {
    nu_status st;
    if ((st = check_steps(n)) != NU_OK || (st = check_sigma_range(smin, smax)) != NU_OK) return st;
    nu_torch_linspace_f32(log(smax), log(smin), n, out);
    for (int i = 0; i < n; i++) out[i] = (float)exp(out[i]);
    out[n] = 0;
    return NU_OK;
}

nu_status nu_sigmas_polyexponential(int n, double smin, double smax, double rho, float *out) {
    nu_status st;
    if ((st = check_steps(n)) != NU_OK || (st = check_sigma_range(smin, smax)) != NU_OK) return st;
    nu_torch_linspace_f32(1.0, 0.0, n, out);
    double lmin = log(smin), lmax = log(smax);
    for (int i = 0; i < n; i++) {
        double ramp = (float)pow(out[i], rho); /* ramp ** rho is a float32 tensor in k-diffusion */
        out[i] = (float)exp(ramp * (lmax - lmin) + lmin);
    }
    out[n] = 0;
    return NU_OK;
}

nu_status nu_sigmas_vp(int n, double beta_d, double beta_min, double eps_s, float *out) {
    nu_status st = check_steps(n);
    if (st != NU_OK) return st;
    if (!(eps_s > 0 && eps_s <= 1) || !(beta_d > 0) || !(beta_min >= 0))
        return nu_error(NU_ERR_INVALID_ARG, "vp schedule parameters beta_d %g beta_min %g eps_s %g are invalid", beta_d,
                        beta_min, eps_s);
    /* sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) evaluated in float32 as k-diffusion does: near
     * t = eps_s, exp(~1e-4) - 1 cancels catastrophically, so the reference's float32 rounding
     * (not the exact value) is what must be reproduced. */
    nu_torch_linspace_f32(1.0, eps_s, n, out);
    const float bd = (float)beta_d, bm = (float)beta_min;
    for (int i = 0; i < n; i++) {
        const float t = out[i];
        const float arg = bd * (t * t) / 2.0f + bm * t;
        out[i] = sqrtf(expf(arg) - 1.0f);
    }
    out[n] = 0;
    return NU_OK;
}

nu_status nu_sigmas_discrete(const nu_discrete_schedule *d, int n, float *out) {
    nu_status st = check_steps(n);
    if (st != NU_OK) return st;
    if (!d || d->n < 2) return nu_error(NU_ERR_INVALID_ARG, "discrete schedule is not initialised");
    nu_torch_linspace_f32((double)(d->n - 1), 0.0, n, out); /* t = linspace(t_max, 0, n) */
    for (int i = 0; i < n; i++) out[i] = (float)nu_discrete_t_to_sigma(d, out[i]);
    out[n] = 0;
    return NU_OK;
}

nu_status nu_sigmas_sgm_uniform(const nu_discrete_schedule *d, int n, float *out) {
    nu_status st = check_steps(n);
    if (st != NU_OK) return st;
    if (!d || d->n < 2) return nu_error(NU_ERR_INVALID_ARG, "discrete schedule is not initialised");
    /* ComfyUI normal_scheduler(sgm=True): t = linspace(t(sigma_max), t(sigma_min), n + 1)[:-1] */
    float *t = malloc(sizeof(float) * (size_t)(n + 1));
    if (!t) return nu_error(NU_ERR_NOMEM, "sgm_uniform: out of memory");
    double t0 = nu_discrete_sigma_to_t(d, nu_discrete_sigma_max(d), false);
    double t1 = nu_discrete_sigma_to_t(d, nu_discrete_sigma_min(d), false);
    nu_torch_linspace_f32(t0, t1, n + 1, t);
    for (int i = 0; i < n; i++) out[i] = (float)nu_discrete_t_to_sigma(d, t[i]);
    out[n] = 0;
    free(t);
    return NU_OK;
}

nu_status nu_sigmas_simple(const nu_discrete_schedule *d, int n, float *out) {
    nu_status st = check_steps(n);
    if (st != NU_OK) return st;
    if (!d || d->n < 2) return nu_error(NU_ERR_INVALID_ARG, "discrete schedule is not initialised");
    /* ComfyUI simple_scheduler: ss = len(sigmas) / steps; sigmas[-(1 + int(x * ss))] */
    double ss = (double)d->n / n;
    for (int i = 0; i < n; i++) {
        int k = (int)(i * ss);
        if (k > d->n - 1) k = d->n - 1;
        out[i] = d->sigmas[d->n - 1 - k];
    }
    out[n] = 0;
    return NU_OK;
}

nu_status nu_sigmas_flow(int n, double shift, float *out) {
    nu_status st = check_steps(n);
    if (st != NU_OK) return st;
    if (!(shift > 0)) return nu_error(NU_ERR_INVALID_ARG, "flow shift must be > 0 (got %g)", shift);
    for (int i = 0; i < n; i++) {
        double t = 1.0 - (double)i / n;
        out[i] = (float)(shift * t / (1 + (shift - 1) * t));
    }
    out[n] = 0;
    return NU_OK;
}

nu_status nu_sigmas_make(nu_sigma_schedule s, const nu_discrete_schedule *d, int n, float *out) {
    if (s != NU_SCHEDULE_VP && (!d || d->n < 2))
        return nu_error(NU_ERR_INVALID_ARG, "schedule '%s' needs the model's discrete schedule", nu_sigma_schedule_name(s));
    switch (s) {
    case NU_SCHEDULE_DISCRETE: return nu_sigmas_discrete(d, n, out);
    case NU_SCHEDULE_KARRAS: return nu_sigmas_karras(n, nu_discrete_sigma_min(d), nu_discrete_sigma_max(d), 7.0, out);
    case NU_SCHEDULE_EXPONENTIAL: return nu_sigmas_exponential(n, nu_discrete_sigma_min(d), nu_discrete_sigma_max(d), out);
    case NU_SCHEDULE_POLYEXPONENTIAL:
        return nu_sigmas_polyexponential(n, nu_discrete_sigma_min(d), nu_discrete_sigma_max(d), 1.0, out);
    case NU_SCHEDULE_VP: return nu_sigmas_vp(n, 19.9, 0.1, 1e-3, out);
    case NU_SCHEDULE_SGM_UNIFORM: return nu_sigmas_sgm_uniform(d, n, out);
    case NU_SCHEDULE_SIMPLE: return nu_sigmas_simple(d, n, out);
    default: return nu_error(NU_ERR_INVALID_ARG, "unknown sigma schedule %d", (int)s);
    }
}

/* ---------------------------------------------------------------- parameterisations */

static const char *const pred_names[NU_PREDICTION_COUNT] = {"epsilon", "v_prediction", "sample", "flow"};

nu_status nu_prediction_from_name(const char *name, nu_prediction *out) {
    static const struct {
        const char *name;
        nu_prediction p;
    } alias[] = {{"epsilon", NU_PRED_EPS}, {"eps", NU_PRED_EPS},           {"v_prediction", NU_PRED_V},
                 {"v", NU_PRED_V},         {"sample", NU_PRED_SAMPLE},     {"x0", NU_PRED_SAMPLE},
                 {"flow", NU_PRED_FLOW},   {"flow_prediction", NU_PRED_FLOW}};
    for (size_t i = 0; name && i < sizeof alias / sizeof alias[0]; i++)
        if (nu_sample_name_eq(name, alias[i].name)) {
            *out = alias[i].p;
            return NU_OK;
        }
    return nu_error(NU_ERR_UNSUPPORTED, "prediction type '%s' is not supported (epsilon, v_prediction, sample, flow)",
                    name ? name : "(null)");
}

const char *nu_prediction_name(nu_prediction p) { return (unsigned)p < NU_PREDICTION_COUNT ? pred_names[p] : "?"; }

void nu_denoiser_scalings(nu_prediction p, double sigma, double *c_skip, double *c_out, double *c_in) {
    double s2 = sigma * sigma, r = 1.0 / sqrt(s2 + 1.0);
    switch (p) {
    case NU_PRED_V: *c_skip = 1.0 / (s2 + 1.0), *c_out = -sigma * r, *c_in = r; break;
    case NU_PRED_SAMPLE: *c_skip = 0.0, *c_out = 1.0, *c_in = r; break;
    case NU_PRED_FLOW: *c_skip = 1.0, *c_out = -sigma, *c_in = 1.0; break;
    case NU_PRED_EPS:
    default: *c_skip = 1.0, *c_out = -sigma, *c_in = r; break;
    }
}

nu_status nu_denoiser_init(nu_denoiser *dn, nu_prediction pred, const nu_discrete_schedule *sched, nu_model_fn model,
                           void *user, int64_t n) {
    memset(dn, 0, sizeof *dn);
    if ((unsigned)pred >= NU_PREDICTION_COUNT) return nu_error(NU_ERR_INVALID_ARG, "unknown prediction type %d", (int)pred);
    if (!model || n <= 0) return nu_error(NU_ERR_INVALID_ARG, "denoiser needs a model callback and n > 0");
    if (pred != NU_PRED_FLOW && (!sched || sched->n < 2))
        return nu_error(NU_ERR_INVALID_ARG, "%s denoiser needs the model's discrete schedule", nu_prediction_name(pred));
    dn->buf = malloc(sizeof(float) * (size_t)n);
    if (!dn->buf) return nu_error(NU_ERR_NOMEM, "denoiser: out of memory (%lld floats)", (long long)n);
    dn->pred = pred, dn->sched = sched, dn->model = model, dn->user = user, dn->n = n;
    dn->flow_t_scale = 1000.0;
    return NU_OK;
}

void nu_denoiser_free(nu_denoiser *dn) {
    if (!dn) return;
    free(dn->buf);
    memset(dn, 0, sizeof *dn);
}

/* k-diffusion DiscreteEpsDDPMDenoiser / DiscreteVDDPMDenoiser .forward:
 * D = c_skip*x + c_out*F(c_in*x, sigma_to_t(sigma)). */
nu_status nu_denoiser_call(void *self, const float *x, float sigma, float *denoised, int64_t n) {
    nu_denoiser *dn = self;
    if (n != dn->n) return nu_error(NU_ERR_INVALID_ARG, "denoiser sized for %lld elements, called with %lld", (long long)dn->n, (long long)n);
    double c_skip, c_out, c_in;
    nu_denoiser_scalings(dn->pred, sigma, &c_skip, &c_out, &c_in);
    double t = dn->sched ? nu_discrete_sigma_to_t(dn->sched, sigma, dn->quantize) : sigma * dn->flow_t_scale;
    for (int64_t i = 0; i < n; i++) dn->buf[i] = (float)(c_in * x[i]);
    nu_status st = dn->model(dn->user, dn->buf, t, dn->buf, n);
    if (st != NU_OK) return st;
    for (int64_t i = 0; i < n; i++) denoised[i] = (float)(c_skip * x[i] + c_out * dn->buf[i]);
    return NU_OK;
}

/* ---------------------------------------------------------------- names */

/* Case-insensitive comparison that ignores '-', '_', ' ' and '+'/"pp" spellings: "dpm++2m",
 * "DPM++ 2M", "dpmpp_2m" compare equal. */
static size_t canon(const char *s, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; s[i] && k + 1 < cap; i++) {
        char c = (char)tolower((unsigned char)s[i]);
        if (c == '-' || c == '_' || c == ' ' || c == '.') continue;
        if (c == '+') c = 'p';
        out[k++] = c;
    }
    out[k] = 0;
    return k;
}

bool nu_sample_name_eq(const char *a, const char *b) {
    char ca[64], cb[64];
    if (strlen(a) >= sizeof ca || strlen(b) >= sizeof cb) return false;
    canon(a, ca, sizeof ca);
    canon(b, cb, sizeof cb);
    return strcmp(ca, cb) == 0;
}
