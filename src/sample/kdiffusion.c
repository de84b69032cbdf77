/*
 * kdiffusion.c — k-diffusion samplers (crowsonkb/k-diffusion v0.1.1.post1, k_diffusion/sampling.py)
 * plus ComfyUI's ddpm and lcm samplers, over a denoiser callback D(x, sigma).
 *
 * The state x is in sigma space (x = x0 + sigma*noise). Every update is evaluated per element in
 * double from the float32 state and model outputs and rounded to float32 once; the scalar
 * coefficients (log-sigma steps, expm1, ancestral sigma_up/down) are computed in double. A sigma
 * that the reference computes and then passes to the model (churned sigma_hat, the DPM-2 midpoint)
 * is rounded to float32 first and that float value is used both for the call and in the update,
 * as the reference's float32 tensor is. Work buffers (O(n), at most 4 + lms_order of them) are
 * allocated once per nu_sample call; nothing is allocated inside the step loop.
 *
 * Tested by tests/test_samplers.c: every kd/ trajectory of ../shared/reference/samplers (x at
 * every step, every model call's x and sigma, the final x) with the recorded noise.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nuance/sample.h"
#include "sample/sample_internal.h"

/* ---------------------------------------------------------------- names and parameters */

static const char *const sampler_names[NU_SAMPLER_COUNT] = {
    "euler",   "euler_a",     "heun",         "dpm2",        "dpm2_a",           "lms",  "dpm++2s_a", "dpm++sde",
    "dpm++2m", "dpm++2m_sde", "dpm++2m_sde_heun", "dpm++3m_sde", "ddim", "ddpm", "lcm"};

static const struct {
    const char *alias;
    nu_sampler s;
} sampler_alias[] = {
    {"euler_ancestral", NU_SAMPLER_EULER_A},       {"euler a", NU_SAMPLER_EULER_A},
    {"dpm_2", NU_SAMPLER_DPM2},                    {"dpm_2_ancestral", NU_SAMPLER_DPM2_A},
    {"dpm2_ancestral", NU_SAMPLER_DPM2_A},         {"dpm2 a", NU_SAMPLER_DPM2_A},
    {"dpmpp_2s_ancestral", NU_SAMPLER_DPMPP_2S_A}, {"dpm++2s_ancestral", NU_SAMPLER_DPMPP_2S_A},
    {"dpm++ 2s a", NU_SAMPLER_DPMPP_2S_A},         {"dpm++ sde", NU_SAMPLER_DPMPP_SDE},
    {"dpm++ 2m", NU_SAMPLER_DPMPP_2M},             {"dpm++ 2m sde", NU_SAMPLER_DPMPP_2M_SDE},
    {"dpm++ 2m sde heun", NU_SAMPLER_DPMPP_2M_SDE_HEUN}, {"dpm++ 3m sde", NU_SAMPLER_DPMPP_3M_SDE},
    {"lms_discrete", NU_SAMPLER_LMS},
};

nu_status nu_sampler_from_name(const char *name, nu_sampler *out) {
    if (!name) return nu_error(NU_ERR_INVALID_ARG, "sampler name is NULL");
    const char *n = name;
    if (strncmp(n, "sample_", 7) == 0) n += 7; /* k-diffusion function names */
    else if (strncmp(n, "k_", 2) == 0) n += 2; /* old A1111 names */
    for (int i = 0; i < NU_SAMPLER_COUNT; i++)
        if (nu_sample_name_eq(n, sampler_names[i])) {
            *out = (nu_sampler)i;
            return NU_OK;
        }
    for (size_t i = 0; i < sizeof sampler_alias / sizeof sampler_alias[0]; i++)
        if (nu_sample_name_eq(n, sampler_alias[i].alias)) {
            *out = sampler_alias[i].s;
            return NU_OK;
        }
    return nu_error(NU_ERR_INVALID_ARG,
                    "unknown sampler '%s' (euler, euler_a, heun, dpm2, dpm2_a, lms, dpm++2s_a, dpm++sde, dpm++2m, "
                    "dpm++2m_sde, dpm++2m_sde_heun, dpm++3m_sde, ddim, ddpm, lcm)",
                    name);
}

const char *nu_sampler_name(nu_sampler s) { return (unsigned)s < NU_SAMPLER_COUNT ? sampler_names[s] : "?"; }

void nu_sampler_params_init(nu_sampler_params *p, nu_sampler s) {
    memset(p, 0, sizeof *p);
    p->eta = s == NU_SAMPLER_DDIM ? 0.0 : 1.0;
    p->s_noise = 1.0;
    p->s_churn = 0.0;
    p->s_tmin = 0.0;
    p->s_tmax = INFINITY;
    p->r = 0.5;
    p->lms_order = 4;
}

bool nu_sampler_is_stochastic(nu_sampler s, const nu_sampler_params *p) {
    nu_sampler_params def;
    if (!p) nu_sampler_params_init(&def, s), p = &def;
    switch (s) {
    case NU_SAMPLER_EULER:
    case NU_SAMPLER_HEUN:
    case NU_SAMPLER_DPM2: return p->s_churn > 0;
    case NU_SAMPLER_EULER_A:
    case NU_SAMPLER_DPM2_A:
    case NU_SAMPLER_DPMPP_2S_A:
    case NU_SAMPLER_DPMPP_SDE:
    case NU_SAMPLER_DPMPP_2M_SDE:
    case NU_SAMPLER_DPMPP_2M_SDE_HEUN:
    case NU_SAMPLER_DPMPP_3M_SDE:
    case NU_SAMPLER_DDIM: return p->eta != 0;
    case NU_SAMPLER_DDPM:
    case NU_SAMPLER_LCM: return true;
    default: return false;
    }
}

/* k-diffusion get_ancestral_step(sigma_from, sigma_to, eta). */
static void ancestral_step(double from, double to, double eta, double *down, double *up) {
    if (eta == 0) {
        *down = to, *up = 0;
        return;
    }
    double u = eta * sqrt(to * to * (from * from - to * to) / (from * from));
    if (u > to) u = to;
    *up = u;
    *down = sqrt(to * to - u * u);
}

int nu_sampler_model_calls(nu_sampler s, const float *sigmas, int n_sigmas) {
    int steps = n_sigmas - 1, calls = 0;
    if (steps <= 0) return 0;
    nu_sampler_params p;
    nu_sampler_params_init(&p, s);
    for (int i = 0; i < steps; i++) {
        double sd, su;
        calls++;
        switch (s) {
        case NU_SAMPLER_HEUN:
        case NU_SAMPLER_DPM2:
        case NU_SAMPLER_DPMPP_SDE: calls += sigmas[i + 1] != 0; break;
        case NU_SAMPLER_DPM2_A:
        case NU_SAMPLER_DPMPP_2S_A:
            ancestral_step(sigmas[i], sigmas[i + 1], p.eta, &sd, &su);
            calls += sd != 0;
            break;
        default: break;
        }
    }
    return calls;
}

/* ---------------------------------------------------------------- sampler context */

typedef struct kctx {
    nu_denoise_fn model;
    void *mu;
    const nu_noise *noise;
    const nu_sampler_params *p;
    const char *name;
    int64_t n;
    int n_steps;
    float *x;   /* the caller's state (n)                        */
    float *den; /* D(x, sigma) of the step's first call (n)       */
    float *x2;  /* intermediate point (n)                          */
    float *den2;/* D(x2, .) (n)                                    */
    float *old; /* previous denoised (n)                           */
    float *old2;/* the one before (3M) (n)                         */
    float *nz;  /* noise draw (n)                                  */
    float *hist;/* LMS derivatives, lms_order x n (ring)           */
} kctx;

static nu_status call_model(kctx *k, const float *x, double sigma, float *out) {
    return k->model(k->mu, x, (float)sigma, out, k->n);
}

static nu_status report(kctx *k, int i, double sigma, double sigma_hat, double sigma_next) {
    if (!k->p->callback) return NU_OK;
    nu_sample_step_info info = {i, k->n_steps, sigma, sigma_hat, sigma_next, k->x, k->den, k->n};
    return k->p->callback(k->p->callback_user, &info);
}

static nu_status draw(kctx *k, double sigma, double sigma_next) {
    return nu_sample_draw_noise(k->noise, k->nz, k->n, sigma, sigma_next, k->name);
}

nu_status nu_sample_draw_noise(const nu_noise *noise, float *out, int64_t n, double sigma, double sigma_next,
                               const char *who) {
    if (noise && noise->fn) return noise->fn(noise->user, out, n, sigma, sigma_next);
    if (noise && noise->rng) {
        nu_rng_randn_f32(noise->rng, out, n);
        return NU_OK;
    }
    return nu_error(NU_ERR_INVALID_ARG, "%s needs a noise source (nu_noise with fn or rng)", who);
}

/* x += c * nz (ancestral noise), elementwise in double. */
static void add_noise(kctx *k, double c) {
    float *x = k->x;
    const float *z = k->nz;
    for (int64_t j = 0; j < k->n; j++) x[j] = (float)((double)x[j] + (double)z[j] * c);
}

/* Euler step x += (x - den)/sigma * dt. */
static void euler_update(kctx *k, double sigma, double dt) {
    float *x = k->x;
    const float *den = k->den;
    for (int64_t j = 0; j < k->n; j++) {
        double xv = x[j];
        x[j] = (float)(xv + (xv - den[j]) / sigma * dt);
    }
}

/* ---------------------------------------------------------------- samplers */

/* sample_euler / sample_heun / sample_dpm_2 (Karras et al. 2022, Alg. 2, with churn). */
static nu_status run_churn_family(kctx *k, nu_sampler s, const float *sig) {
    const nu_sampler_params *p = k->p;
    const int N = k->n_steps;
    float *x = k->x;
    for (int i = 0; i < N; i++) {
        const double si = sig[i], sn = sig[i + 1];
        double gamma = 0;
        if (p->s_tmin <= si && si <= p->s_tmax) {
            gamma = p->s_churn / N;
            if (gamma > M_SQRT2 - 1) gamma = M_SQRT2 - 1;
        }
        const double hat = (float)(si * (gamma + 1)); /* float32 tensor in the reference */
        if (gamma > 0) {
            nu_status st = draw(k, si, sn);
            if (st != NU_OK) return st;
            add_noise(k, p->s_noise * sqrt(hat * hat - si * si));
        }
        nu_status st = call_model(k, x, hat, k->den);
        if (st != NU_OK || (st = report(k, i, si, hat, sn)) != NU_OK) return st;
        const double dt = sn - hat;
        if (s == NU_SAMPLER_EULER || sn == 0) {
            euler_update(k, hat, dt);
            continue;
        }
        if (s == NU_SAMPLER_HEUN) {
            for (int64_t j = 0; j < k->n; j++) k->x2[j] = (float)(x[j] + (x[j] - (double)k->den[j]) / hat * dt);
            if ((st = call_model(k, k->x2, sn, k->den2)) != NU_OK) return st;
            for (int64_t j = 0; j < k->n; j++) {
                double d1 = (x[j] - (double)k->den[j]) / hat, d2 = (k->x2[j] - (double)k->den2[j]) / sn;
                x[j] = (float)(x[j] + (d1 + d2) / 2 * dt);
            }
        } else { /* DPM-2: midpoint at the log-sigma midpoint */
            const double mid = (float)exp(0.5 * (log(hat) + log(sn)));
            const double dt1 = mid - hat;
            for (int64_t j = 0; j < k->n; j++) k->x2[j] = (float)(x[j] + (x[j] - (double)k->den[j]) / hat * dt1);
            if ((st = call_model(k, k->x2, mid, k->den2)) != NU_OK) return st;
            for (int64_t j = 0; j < k->n; j++) {
                double d2 = (k->x2[j] - (double)k->den2[j]) / mid;
                x[j] = (float)(x[j] + d2 * dt);
            }
        }
    }
    return NU_OK;
}

/* sample_euler_ancestral; with eta = 0 by default it is also DDIM in sigma space (the DDIM
 * variance eta^2 (1-a')/(1-a) (1-a/a') rescaled to sigma space is exactly sigma_up^2). */
static nu_status run_euler_a(kctx *k, const float *sig) {
    for (int i = 0; i < k->n_steps; i++) {
        const double si = sig[i], sn = sig[i + 1];
        nu_status st = call_model(k, k->x, si, k->den);
        if (st != NU_OK || (st = report(k, i, si, si, sn)) != NU_OK) return st;
        double down, up;
        ancestral_step(si, sn, k->p->eta, &down, &up);
        euler_update(k, si, down - si);
        if (sn > 0 && up > 0) {
            if ((st = draw(k, si, sn)) != NU_OK) return st;
            add_noise(k, k->p->s_noise * up);
        }
    }
    return NU_OK;
}

/* sample_dpm_2_ancestral. */
static nu_status run_dpm2_a(kctx *k, const float *sig) {
    float *x = k->x;
    for (int i = 0; i < k->n_steps; i++) {
        const double si = sig[i], sn = sig[i + 1];
        nu_status st = call_model(k, x, si, k->den);
        if (st != NU_OK || (st = report(k, i, si, si, sn)) != NU_OK) return st;
        double down, up;
        ancestral_step(si, sn, k->p->eta, &down, &up);
        if (down == 0) {
            euler_update(k, si, down - si);
            continue;
        }
        const double mid = (float)exp(0.5 * (log(si) + log(down)));
        const double dt1 = mid - si, dt2 = down - si;
        for (int64_t j = 0; j < k->n; j++) k->x2[j] = (float)(x[j] + (x[j] - (double)k->den[j]) / si * dt1);
        if ((st = call_model(k, k->x2, mid, k->den2)) != NU_OK) return st;
        for (int64_t j = 0; j < k->n; j++) x[j] = (float)(x[j] + (k->x2[j] - (double)k->den2[j]) / mid * dt2);
        if ((st = draw(k, si, sn)) != NU_OK) return st;
        add_noise(k, k->p->s_noise * up);
    }
    return NU_OK;
}

/* Integral over [a, b] of the Lagrange basis polynomial j of nodes t[i], t[i-1], .., t[i-order+1]
 * (k-diffusion linear_multistep_coeff; scipy quad there, exact 4-point Gauss-Legendre here:
 * the integrand has degree <= 3). */
static double lms_coeff(int order, const float *t, int i, int j) {
    static const double gx[4] = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526};
    static const double gw[4] = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538};
    const double a = t[i], b = t[i + 1], half = 0.5 * (b - a), mid = 0.5 * (a + b);
    double sum = 0;
    for (int q = 0; q < 4; q++) {
        double tau = mid + half * gx[q], prod = 1;
        for (int m = 0; m < order; m++) {
            if (m == j) continue;
            prod *= (tau - t[i - m]) / ((double)t[i - j] - t[i - m]);
        }
        sum += gw[q] * prod;
    }
    return sum * half;
}

/* sample_lms (order lms_order, default 4). */
static nu_status run_lms(kctx *k, const float *sig) {
    const int order = k->p->lms_order;
    float *x = k->x;
    for (int i = 0; i < k->n_steps; i++) {
        const double si = sig[i];
        nu_status st = call_model(k, x, si, k->den);
        if (st != NU_OK || (st = report(k, i, si, si, sig[i + 1])) != NU_OK) return st;
        float *di = k->hist + (size_t)(i % order) * (size_t)k->n; /* ring slot of d_i */
        for (int64_t j = 0; j < k->n; j++) di[j] = (float)((x[j] - (double)k->den[j]) / si);
        const int cur = i + 1 < order ? i + 1 : order;
        double c[16];
        for (int j = 0; j < cur; j++) c[j] = lms_coeff(cur, sig, i, j);
        for (int64_t e = 0; e < k->n; e++) {
            double acc = x[e];
            for (int j = 0; j < cur; j++) acc += c[j] * k->hist[(size_t)((i - j) % order) * (size_t)k->n + (size_t)e];
            x[e] = (float)acc;
        }
    }
    return NU_OK;
}

/* sample_dpmpp_2s_ancestral (Lu et al. 2022, DPM-Solver++(2S), with ancestral noise). */
static nu_status run_dpmpp_2s_a(kctx *k, const float *sig) {
    float *x = k->x;
    for (int i = 0; i < k->n_steps; i++) {
        const double si = sig[i], sn = sig[i + 1];
        nu_status st = call_model(k, x, si, k->den);
        if (st != NU_OK || (st = report(k, i, si, si, sn)) != NU_OK) return st;
        double down, up;
        ancestral_step(si, sn, k->p->eta, &down, &up);
        if (down == 0) {
            euler_update(k, si, down - si);
        } else {
            const double t = -log(si), tn = -log(down), h = tn - t, r = 0.5, s = t + r * h;
            const double sig_s = exp(-s), c1 = sig_s / si, c2 = expm1(-h * r);
            for (int64_t j = 0; j < k->n; j++) k->x2[j] = (float)(c1 * x[j] - c2 * k->den[j]);
            if ((st = call_model(k, k->x2, sig_s, k->den2)) != NU_OK) return st;
            const double c3 = exp(-tn) / si, c4 = expm1(-h);
            for (int64_t j = 0; j < k->n; j++) x[j] = (float)(c3 * x[j] - c4 * k->den2[j]);
        }
        if (sn > 0) {
            if ((st = draw(k, si, sn)) != NU_OK) return st;
            add_noise(k, k->p->s_noise * up);
        }
    }
    return NU_OK;
}

/* sample_dpmpp_sde (DPM-Solver++ SDE, two stages with r = 1/2). */
static nu_status run_dpmpp_sde(kctx *k, const float *sig) {
    const nu_sampler_params *p = k->p;
    float *x = k->x;
    for (int i = 0; i < k->n_steps; i++) {
        const double si = sig[i], sn = sig[i + 1];
        nu_status st = call_model(k, x, si, k->den);
        if (st != NU_OK || (st = report(k, i, si, si, sn)) != NU_OK) return st;
        if (sn == 0) {
            euler_update(k, si, sn - si);
            continue;
        }
        const double t = -log(si), tn = -log(sn), h = tn - t, s = t + h * p->r, fac = 1 / (2 * p->r);
        const double sig_t = exp(-t), sig_s = exp(-s), sig_tn = exp(-tn);
        /* stage 1 */
        double sd, su;
        ancestral_step(sig_t, sig_s, p->eta, &sd, &su);
        double s_ = -log(sd);
        double c1 = exp(-s_) / sig_t, c2 = expm1(t - s_);
        for (int64_t j = 0; j < k->n; j++) k->x2[j] = (float)(c1 * x[j] - c2 * k->den[j]);
        if ((st = nu_sample_draw_noise(k->noise, k->nz, k->n, sig_t, sig_s, k->name)) != NU_OK) return st;
        for (int64_t j = 0; j < k->n; j++) k->x2[j] = (float)(k->x2[j] + (double)k->nz[j] * p->s_noise * su);
        if ((st = call_model(k, k->x2, sig_s, k->den2)) != NU_OK) return st;
        /* stage 2 */
        ancestral_step(sig_t, sig_tn, p->eta, &sd, &su);
        double tn_ = -log(sd);
        c1 = exp(-tn_) / sig_t, c2 = expm1(t - tn_);
        for (int64_t j = 0; j < k->n; j++) {
            double dd = (1 - fac) * k->den[j] + fac * k->den2[j];
            x[j] = (float)(c1 * x[j] - c2 * dd);
        }
        if ((st = nu_sample_draw_noise(k->noise, k->nz, k->n, sig_t, sig_tn, k->name)) != NU_OK) return st;
        add_noise(k, p->s_noise * su);
    }
    return NU_OK;
}

/* sample_dpmpp_2m (DPM-Solver++(2M), Lu et al. 2022). */
static nu_status run_dpmpp_2m(kctx *k, const float *sig) {
    float *x = k->x;
    for (int i = 0; i < k->n_steps; i++) {
        const double si = sig[i], sn = sig[i + 1];
        nu_status st = call_model(k, x, si, k->den);
        if (st != NU_OK || (st = report(k, i, si, si, sn)) != NU_OK) return st;
        if (sn == 0) { /* sigma_fn(inf) = 0, expm1(-inf) = -1: x = denoised */
            memcpy(x, k->den, sizeof(float) * (size_t)k->n);
        } else {
            const double t = -log(si), tn = -log(sn), h = tn - t, c1 = sn / si, c2 = expm1(-h);
            if (i == 0) {
                for (int64_t j = 0; j < k->n; j++) x[j] = (float)(c1 * x[j] - c2 * k->den[j]);
            } else {
                const double h_last = t + log((double)sig[i - 1]), r = h_last / h;
                const double a = 1 + 1 / (2 * r), b = 1 / (2 * r);
                for (int64_t j = 0; j < k->n; j++) {
                    double dd = a * k->den[j] - b * k->old[j];
                    x[j] = (float)(c1 * x[j] - c2 * dd);
                }
            }
        }
        float *tmp = k->old;
        k->old = k->den, k->den = tmp;
    }
    return NU_OK;
}

/* sample_dpmpp_2m_sde (midpoint or heun correction). */
static nu_status run_dpmpp_2m_sde(kctx *k, const float *sig, bool heun) {
    const nu_sampler_params *p = k->p;
    float *x = k->x;
    double h_last = 0;
    for (int i = 0; i < k->n_steps; i++) {
        const double si = sig[i], sn = sig[i + 1];
        nu_status st = call_model(k, x, si, k->den);
        if (st != NU_OK || (st = report(k, i, si, si, sn)) != NU_OK) return st;
        if (sn == 0) {
            memcpy(x, k->den, sizeof(float) * (size_t)k->n);
        } else {
            const double t = -log(si), s = -log(sn), h = s - t, eta_h = p->eta * h;
            const double c1 = sn / si * exp(-eta_h), c2 = -expm1(-h - eta_h);
            double c3 = 0;
            if (i > 0) {
                const double r = h_last / h;
                c3 = heun ? (c2 / (-h - eta_h) + 1) * (1 / r) : 0.5 * c2 * (1 / r);
            }
            for (int64_t j = 0; j < k->n; j++) {
                double v = c1 * x[j] + c2 * k->den[j];
                if (i > 0) v += c3 * ((double)k->den[j] - k->old[j]);
                x[j] = (float)v;
            }
            if (p->eta != 0) {
                if ((st = draw(k, si, sn)) != NU_OK) return st;
                add_noise(k, sn * sqrt(-expm1(-2 * eta_h)) * p->s_noise);
            }
            h_last = h;
        }
        float *tmp = k->old;
        k->old = k->den, k->den = tmp;
    }
    return NU_OK;
}

/* sample_dpmpp_3m_sde. */
static nu_status run_dpmpp_3m_sde(kctx *k, const float *sig) {
    const nu_sampler_params *p = k->p;
    float *x = k->x;
    double h1 = 0, h2 = 0;
    int have = 0; /* how many previous denoised are valid */
    for (int i = 0; i < k->n_steps; i++) {
        const double si = sig[i], sn = sig[i + 1];
        nu_status st = call_model(k, x, si, k->den);
        if (st != NU_OK || (st = report(k, i, si, si, sn)) != NU_OK) return st;
        double h = h1;
        if (sn == 0) {
            memcpy(x, k->den, sizeof(float) * (size_t)k->n);
        } else {
            const double t = -log(si), s = -log(sn);
            h = s - t;
            const double h_eta = h * (p->eta + 1), c1 = exp(-h_eta), c2 = -expm1(-h_eta);
            const double phi2 = expm1(-h_eta) / h_eta + 1, phi3 = phi2 / h_eta - 0.5;
            if (have >= 2) {
                const double r0 = h1 / h, r1 = h2 / h;
                for (int64_t j = 0; j < k->n; j++) {
                    double d10 = ((double)k->den[j] - k->old[j]) / r0, d11 = ((double)k->old[j] - k->old2[j]) / r1;
                    double d1 = d10 + (d10 - d11) * r0 / (r0 + r1), d2 = (d10 - d11) / (r0 + r1);
                    double v = c1 * x[j] + c2 * k->den[j];
                    x[j] = (float)(v + phi2 * d1 - phi3 * d2);
                }
            } else if (have == 1) {
                const double r = h1 / h;
                for (int64_t j = 0; j < k->n; j++) {
                    double v = c1 * x[j] + c2 * k->den[j];
                    x[j] = (float)(v + phi2 * ((double)k->den[j] - k->old[j]) / r);
                }
            } else {
                for (int64_t j = 0; j < k->n; j++) x[j] = (float)(c1 * x[j] + c2 * k->den[j]);
            }
            if (p->eta != 0) {
                if ((st = draw(k, si, sn)) != NU_OK) return st;
                add_noise(k, sn * sqrt(-expm1(-2 * h * p->eta)) * p->s_noise);
            }
        }
        /* denoised_1, denoised_2 = denoised, denoised_1; h_1, h_2 = h, h_1 */
        float *tmp = k->old2;
        k->old2 = k->old, k->old = k->den, k->den = tmp;
        h2 = h1, h1 = h;
        if (have < 2) have++;
    }
    return NU_OK;
}

/* ComfyUI sample_ddpm: DDPM ancestral step (Ho et al. 2020, eq. 11 + posterior variance) on
 * x/sqrt(1+sigma^2), with alpha_cumprod = 1/(1+sigma^2). */
static nu_status run_ddpm(kctx *k, const float *sig) {
    float *x = k->x;
    for (int i = 0; i < k->n_steps; i++) {
        const double si = sig[i], sn = sig[i + 1];
        nu_status st = call_model(k, x, si, k->den);
        if (st != NU_OK || (st = report(k, i, si, si, sn)) != NU_OK) return st;
        const double ac = 1 / (si * si + 1), acp = 1 / (sn * sn + 1), alpha = ac / acp;
        const double cx = 1 / sqrt(1 + si * si), cm = sqrt(1 / alpha), ce = (1 - alpha) / sqrt(1 - ac);
        const double out_scale = sn != 0 ? sqrt(1 + sn * sn) : 1;
        double cn = 0;
        if (sn > 0) {
            if ((st = draw(k, si, sn)) != NU_OK) return st;
            cn = sqrt((1 - alpha) * (1 - acp) / (1 - ac));
        }
        for (int64_t j = 0; j < k->n; j++) {
            double eps = (x[j] - (double)k->den[j]) / si;
            double mu = cm * (x[j] * cx - ce * eps);
            if (sn > 0) mu += cn * k->nz[j];
            x[j] = (float)(mu * out_scale);
        }
    }
    return NU_OK;
}

/* ComfyUI sample_lcm: x = D(x, sigma); x += sigma_next * noise. */
static nu_status run_lcm(kctx *k, const float *sig) {
    for (int i = 0; i < k->n_steps; i++) {
        const double si = sig[i], sn = sig[i + 1];
        nu_status st = call_model(k, k->x, si, k->den);
        if (st != NU_OK || (st = report(k, i, si, si, sn)) != NU_OK) return st;
        memcpy(k->x, k->den, sizeof(float) * (size_t)k->n);
        if (sn > 0) {
            if ((st = draw(k, si, sn)) != NU_OK) return st;
            add_noise(k, sn);
        }
    }
    return NU_OK;
}

/* ---------------------------------------------------------------- entry point */

nu_status nu_sample(nu_sampler s, const nu_sampler_params *pin, nu_denoise_fn model, void *model_user,
                    const float *sigmas, int n_sigmas, float *x, int64_t n, const nu_noise *noise) {
    if ((unsigned)s >= NU_SAMPLER_COUNT) return nu_error(NU_ERR_INVALID_ARG, "unknown sampler %d", (int)s);
    const char *name = nu_sampler_name(s);
    nu_sampler_params p;
    if (pin) p = *pin;
    else nu_sampler_params_init(&p, s);
    if (!model || !x || !sigmas || n <= 0) return nu_error(NU_ERR_INVALID_ARG, "%s: model, x and sigmas are required", name);
    if (n_sigmas < 2 || n_sigmas - 1 > NU_SAMPLE_MAX_STEPS)
        return nu_error(NU_ERR_INVALID_ARG, "%s: %d sigmas given (need 2..%d)", name, n_sigmas, NU_SAMPLE_MAX_STEPS + 1);
    for (int i = 0; i < n_sigmas; i++) {
        if (!(sigmas[i] >= 0) || !isfinite(sigmas[i]))
            return nu_error(NU_ERR_INVALID_ARG, "%s: sigma[%d] = %g is not a finite non-negative value", name, i,
                            (double)sigmas[i]);
        if (i + 1 < n_sigmas && sigmas[i] == 0)
            return nu_error(NU_ERR_INVALID_ARG, "%s: sigma[%d] is 0 before the end of the schedule", name, i);
    }
    if (s == NU_SAMPLER_LMS && (p.lms_order < 1 || p.lms_order > 16))
        return nu_error(NU_ERR_INVALID_ARG, "lms: order %d out of range (1..16)", p.lms_order);
    if (s == NU_SAMPLER_DPMPP_SDE && !(p.r > 0 && p.r <= 1))
        return nu_error(NU_ERR_INVALID_ARG, "dpm++sde: r = %g out of range (0, 1]", p.r);
    if (p.eta < 0 || !isfinite(p.eta)) return nu_error(NU_ERR_INVALID_ARG, "%s: eta = %g is invalid", name, p.eta);
    if (nu_sampler_is_stochastic(s, &p) && !(noise && (noise->fn || noise->rng)))
        return nu_error(NU_ERR_INVALID_ARG, "%s with these parameters needs a noise source (nu_noise with fn or rng)", name);

    size_t nbuf = 6 + (s == NU_SAMPLER_LMS ? (size_t)p.lms_order : 0);
    if ((uint64_t)n > (uint64_t)SIZE_MAX / sizeof(float) / nbuf)
        return nu_error(NU_ERR_NOMEM, "%s: %lld elements is too many", name, (long long)n);
    float *work = malloc(sizeof(float) * (size_t)n * nbuf);
    if (!work) return nu_error(NU_ERR_NOMEM, "%s: out of memory for %zu work buffers of %lld floats", name, nbuf, (long long)n);
    kctx k = {.model = model, .mu = model_user, .noise = noise, .p = &p, .name = name, .n = n, .n_steps = n_sigmas - 1, .x = x};
    float **bufs[6] = {&k.den, &k.x2, &k.den2, &k.old, &k.old2, &k.nz};
    for (size_t b = 0; b < 6; b++) *bufs[b] = work + b * (size_t)n;
    k.hist = s == NU_SAMPLER_LMS ? work + 6 * (size_t)n : NULL;

    nu_status st;
    switch (s) {
    case NU_SAMPLER_EULER:
    case NU_SAMPLER_HEUN:
    case NU_SAMPLER_DPM2: st = run_churn_family(&k, s, sigmas); break;
    case NU_SAMPLER_EULER_A:
    case NU_SAMPLER_DDIM: st = run_euler_a(&k, sigmas); break;
    case NU_SAMPLER_DPM2_A: st = run_dpm2_a(&k, sigmas); break;
    case NU_SAMPLER_LMS: st = run_lms(&k, sigmas); break;
    case NU_SAMPLER_DPMPP_2S_A: st = run_dpmpp_2s_a(&k, sigmas); break;
    case NU_SAMPLER_DPMPP_SDE: st = run_dpmpp_sde(&k, sigmas); break;
    case NU_SAMPLER_DPMPP_2M: st = run_dpmpp_2m(&k, sigmas); break;
    case NU_SAMPLER_DPMPP_2M_SDE: st = run_dpmpp_2m_sde(&k, sigmas, false); break;
    case NU_SAMPLER_DPMPP_2M_SDE_HEUN: st = run_dpmpp_2m_sde(&k, sigmas, true); break;
    case NU_SAMPLER_DPMPP_3M_SDE: st = run_dpmpp_3m_sde(&k, sigmas); break;
    case NU_SAMPLER_DDPM: st = run_ddpm(&k, sigmas); break;
    case NU_SAMPLER_LCM: st = run_lcm(&k, sigmas); break;
    default: st = nu_error(NU_ERR_INVALID_ARG, "unknown sampler %d", (int)s); break;
    }
    free(work);
    return st;
}
