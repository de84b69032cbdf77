/*
 * test_samplers.c — k-diffusion samplers and diffusers schedulers against
 * ../shared/reference/samplers (k-diffusion 0.1.1.post1 and diffusers 0.27.2 runs, float32, on
 * an analytic Gaussian denoiser, with every noise draw recorded).
 *
 * For every kd/<schedule>/<sampler> entry of samplers.json: the sampler runs from x_start with
 * the recorded sigmas and FixedNoise (the i-th noise call returns noise[i]); x at every step,
 * denoised at every step, every model call's x / sigma / denoised and the final x are compared
 * with the float32 run, and the final x also with the float64 run; the noise_sampler(sigma,
 * sigma_next) arguments are compared with noise_calls. Euler with churn is also run with nu_rng
 * seeded 99 (torch.manual_seed(99) + randn_like), which must give the recorded noise.
 * For every diffusers/<name> entry: x_init = randn(seed 5) * init_noise_sigma from nu_rng, then
 * diffusers' loop with the eps model of samplers.json and a nu_rng seeded 6 as the step
 * generator; per step t, x_in, model_in, eps, pred_original, x_out, and the final x are compared
 * (and every drawn noise with the recorded one, bit-exact).
 *
 * Tolerance (both families): |got - want| <= TOL_ABS + TOL_REL*|want|, 1e-5 + 2e-6*|want|. The
 * references are float32 runs whose own float32-vs-float64 final difference is up to 2.2e-6
 * (samplers.json); we evaluate each update in double and round once, so our distance to the
 * float32 run is of the same order. 1e-5 absolute is ~5x that spread; the relative part
 * (~16 float32 ulps) covers the early steps where |x| ~ 40 (sigma_max 14.6 times unit noise)
 * and one float32 ulp is already 4e-6. Sigmas passed to the model: rel 1e-6 (float32 rounding
 * of log/exp midpoints). Measured maxima are printed per run.
 * Also: denoiser wrapper (eps and v networks through sigma <-> t) vs the analytic denoiser,
 * model-call counts, names, error paths, cancellation, DDIM(eta 0) == Euler, the DDPM step vs
 * the DDPM posterior mean, and a distribution check of the stochastic samplers.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nu_test.h"
#include "nuance/io.h"
#include "nuance/rng.h"
#include "nuance/sample.h"

#define TOL_ABS 1e-5
#define TOL_REL 2e-6
#define TOL_SIGMA_REL 1e-6
#define NEL 256 /* 1 x 4 x 8 x 8 */

static nu_st_file *g_st;
static double g_mu[NEL], g_s[NEL];
static float g_train_sigmas[1000];

static const float *ref(const char *fmt, const char *a, int64_t *count) {
    char key[256];
    snprintf(key, sizeof key, fmt, a);
    const nu_st_info *in = nu_st_find(g_st, key);
    if (!in) return NULL;
    if (count) {
        int64_t n = 1;
        for (int d = 0; d < in->ndim; d++) n *= in->ne[d];
        *count = n;
    }
    return (const float *)in->data;
}

/* Max of |g-w| and of |g-w| / (TOL_ABS + TOL_REL |w|) (pass <=> ratio <= 1). */
typedef struct errstat {
    double max_abs, ratio;
} errstat;

static void acc_err(errstat *e, const float *got, const float *want, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (isnan(d)) d = INFINITY;
        if (d > e->max_abs) e->max_abs = d;
        double r = d / (TOL_ABS + TOL_REL * fabs(want[i]));
        if (r > e->ratio) e->ratio = r;
    }
}

/* The analytic denoiser of samplers.json, float64 maths, float32 result. */
static void analytic_D(const float *x, double sigma, float *out) {
    for (int i = 0; i < NEL; i++) {
        double s2 = g_s[i] * g_s[i];
        out[i] = (float)(g_mu[i] + s2 / (s2 + sigma * sigma) * ((double)x[i] - g_mu[i]));
    }
}

/* formula_eps: sigma(t) by log-linear interpolation of the float32 diffusers sigmas. */
static double sigma_of_t(double t) {
    int lo = (int)floor(t);
    if (lo < 0) lo = 0;
    if (lo > 999) lo = 999;
    double w = t - lo;
    int hi = lo + 1 > 999 ? 999 : lo + 1;
    return exp((1 - w) * log((double)g_train_sigmas[lo]) + w * log((double)g_train_sigmas[hi]));
}

static void analytic_eps(const float *x, double t, float *out) {
    double sigma = sigma_of_t(t), a = 1 / (1 + sigma * sigma), sa = sqrt(a), sb = sqrt(1 - a);
    for (int i = 0; i < NEL; i++) {
        double xs = x[i] / sa, s2 = g_s[i] * g_s[i];
        double x0 = g_mu[i] + s2 / (s2 + sigma * sigma) * (xs - g_mu[i]);
        out[i] = (float)((x[i] - sa * x0) / sb);
    }
}

/* ---------------------------------------------------------------- k-diffusion runs */

typedef struct kd_run {
    int calls, max_calls;
    float *call_x, *call_den;
    double *call_sigma;
    int steps;
    float *step_x, *step_den;
    const float *noise;
    int n_noise, noise_used;
    double noise_args[64][2];
    int fail_at_call; /* test error propagation */
} kd_run;

static nu_status kd_model(void *u, const float *x, float sigma, float *den, int64_t n) {
    kd_run *r = u;
    if (n != NEL) return nu_error(NU_ERR_INVALID_ARG, "n");
    if (r->fail_at_call >= 0 && r->calls == r->fail_at_call) return nu_error(NU_ERR_CANCELLED, "model failed on purpose");
    analytic_D(x, sigma, den);
    if (r->calls < r->max_calls) {
        memcpy(r->call_x + (size_t)r->calls * NEL, x, sizeof(float) * NEL);
        memcpy(r->call_den + (size_t)r->calls * NEL, den, sizeof(float) * NEL);
        r->call_sigma[r->calls] = sigma;
    }
    r->calls++;
    return NU_OK;
}

static nu_status kd_callback(void *u, const nu_sample_step_info *info) {
    kd_run *r = u;
    if (info->i < r->steps) {
        memcpy(r->step_x + (size_t)info->i * NEL, info->x, sizeof(float) * NEL);
        memcpy(r->step_den + (size_t)info->i * NEL, info->denoised, sizeof(float) * NEL);
    }
    return NU_OK;
}

static nu_status fixed_noise(void *u, float *out, int64_t n, double sigma, double sigma_next) {
    kd_run *r = u;
    if (r->noise_used >= r->n_noise || n != NEL) return nu_error(NU_ERR_INVALID_ARG, "FixedNoise exhausted");
    memcpy(out, r->noise + (size_t)r->noise_used * NEL, sizeof(float) * NEL);
    if (r->noise_used < 64) r->noise_args[r->noise_used][0] = sigma, r->noise_args[r->noise_used][1] = sigma_next;
    r->noise_used++;
    return NU_OK;
}

static int n_kd = 0, n_kd_pass = 0;

static void run_kd_case(const char *tag, const nu_json *e, bool use_rng) {
    const int fails0 = nu_test_failures;
    const char *fn = nu_json_string(e, "function", "");
    const char *dot = strrchr(fn, '.');
    const nu_json *kw = nu_json_get(e, "kwargs");
    nu_sampler s;
    const char *solver = nu_json_string(kw, "solver_type", "midpoint");
    NU_CHECK_MSG(nu_sampler_from_name(dot ? dot + 1 : fn, &s) == NU_OK, "%s: %s", tag, nu_last_error());
    if (s == NU_SAMPLER_DPMPP_2M_SDE && strcmp(solver, "heun") == 0) s = NU_SAMPLER_DPMPP_2M_SDE_HEUN;
    nu_sampler_params p;
    nu_sampler_params_init(&p, s);
    p.eta = nu_json_number(kw, "eta", p.eta);
    p.s_churn = nu_json_number(kw, "s_churn", p.s_churn);
    p.r = nu_json_number(kw, "r", p.r);

    int64_t n_sig = 0, n_noise = 0, cnt = 0;
    const float *sig = ref("%s/sigmas", tag, &n_sig);
    const float *x_start = ref("%s/x_start", tag, NULL), *x_unit = ref("%s/x_init_unit", tag, NULL);
    const float *x_final = ref("%s/x_final", tag, NULL), *x_steps = ref("%s/x_steps", tag, NULL);
    const float *den_steps = ref("%s/denoised_steps", tag, NULL);
    const float *mc_x = ref("%s/model_calls/x", tag, NULL), *mc_den = ref("%s/model_calls/denoised", tag, NULL);
    const float *mc_sig = ref("%s/model_calls/sigma", tag, &cnt);
    const float *noise = ref("%s/noise", tag, &n_noise);
    const char *x_f64_raw = (const char *)ref("%s/x_final_f64", tag, NULL); /* F64, maybe unaligned */
    double x_f64[NEL];
    if (x_f64_raw) memcpy(x_f64, x_f64_raw, sizeof x_f64);
    NU_CHECK_MSG(sig && x_start && x_unit && x_final && x_steps && mc_x && mc_sig && mc_den && x_f64_raw, "%s: keys missing",
                 tag);
    if (!sig || !x_start || !x_unit || !x_final || !x_steps || !mc_x || !mc_sig || !mc_den || !x_f64_raw) return;
    const int steps = (int)n_sig - 1, n_calls = (int)nu_json_number(e, "n_model_calls", -1);
    { /* the recorded sigmas are our schedule (k-diffusion sigma_min 0.0291675, sigma_max 14.614642) */
        const char *sched = nu_json_string(e, "schedule", "");
        float mine[64];
        int nn = 0;
        nu_status ss = NU_ERR_INVALID_ARG;
        if (sscanf(sched, "karras n=%d", &nn) == 1 && nn < 63) ss = nu_sigmas_karras(nn, 0.0291675, 14.614642, 7, mine);
        else if (sscanf(sched, "exponential n=%d", &nn) == 1 && nn < 63)
            ss = nu_sigmas_exponential(nn, 0.0291675, 14.614642, mine);
        NU_CHECK_MSG(ss == NU_OK && nn == steps, "%s: schedule '%s' not reproduced", tag, sched);
        for (int i = 0; ss == NU_OK && i <= steps; i++)
            NU_CHECK_MSG(fabs(mine[i] - (double)sig[i]) <= 1e-6 * sig[i], "%s: sigma[%d] %.9g want %.9g", tag, i, mine[i], sig[i]);
    }
    NU_CHECK_MSG((int)cnt == n_calls, "%s: %lld model calls recorded, json says %d", tag, (long long)cnt, n_calls);
    NU_CHECK(nu_sampler_model_calls(s, sig, (int)n_sig) == n_calls);

    kd_run r = {0};
    r.max_calls = n_calls + 4;
    r.call_x = calloc((size_t)r.max_calls * NEL, sizeof(float));
    r.call_den = calloc((size_t)r.max_calls * NEL, sizeof(float));
    r.call_sigma = calloc((size_t)r.max_calls, sizeof(double));
    r.steps = steps;
    r.step_x = calloc((size_t)steps * NEL, sizeof(float));
    r.step_den = calloc((size_t)steps * NEL, sizeof(float));
    r.noise = noise, r.n_noise = (int)(n_noise / NEL), r.fail_at_call = -1;
    p.callback = kd_callback, p.callback_user = &r;

    float x[NEL];
    for (int i = 0; i < NEL; i++) x[i] = x_unit[i] * sig[0]; /* x_start = x_init_unit * sigmas[0] (float32) */
    NU_CHECK_MSG(memcmp(x, x_start, sizeof x) == 0, "%s: x_init_unit * sigmas[0] != x_start", tag);
    nu_rng rng;
    nu_rng_seed(&rng, 99);
    nu_noise nz = {fixed_noise, &r, NULL};
    if (use_rng) nz = (nu_noise){NULL, NULL, &rng};
    nu_status st = nu_sample(s, &p, kd_model, &r, sig, (int)n_sig, x, NEL, &nz);
    NU_CHECK_MSG(st == NU_OK, "%s: %s", tag, nu_last_error());
    NU_CHECK_MSG(r.calls == n_calls, "%s: %d model calls, want %d", tag, r.calls, n_calls);
    if (!use_rng && noise) NU_CHECK_MSG(r.noise_used == r.n_noise, "%s: used %d of %d noise draws", tag, r.noise_used, r.n_noise);

    errstat e_steps = {0}, e_den = {0}, e_calls = {0}, e_cden = {0}, e_final = {0};
    acc_err(&e_steps, r.step_x, x_steps, (int64_t)steps * NEL);
    if (den_steps) acc_err(&e_den, r.step_den, den_steps, (int64_t)steps * NEL);
    int nc = r.calls < n_calls ? r.calls : n_calls;
    acc_err(&e_calls, r.call_x, mc_x, (int64_t)nc * NEL);
    acc_err(&e_cden, r.call_den, mc_den, (int64_t)nc * NEL);
    acc_err(&e_final, x, x_final, NEL);
    double sig_err = 0, f64_err = 0;
    for (int i = 0; i < nc; i++) sig_err = fmax(sig_err, fabs(r.call_sigma[i] / mc_sig[i] - 1));
    for (int i = 0; i < NEL; i++) f64_err = fmax(f64_err, fabs((double)x[i] - x_f64[i]));
    const double ref_spread = nu_json_number(e, "maxabs_final_f32_vs_f64", NAN);
    NU_CHECK_MSG(e_steps.ratio <= 1, "%s: x_steps max abs err %.3g out of tolerance", tag, e_steps.max_abs);
    NU_CHECK_MSG(e_den.ratio <= 1, "%s: denoised_steps max abs err %.3g", tag, e_den.max_abs);
    NU_CHECK_MSG(e_calls.ratio <= 1 && e_cden.ratio <= 1, "%s: model call x/denoised max abs err %.3g / %.3g", tag,
                 e_calls.max_abs, e_cden.max_abs);
    NU_CHECK_MSG(sig_err <= TOL_SIGMA_REL, "%s: model call sigma rel err %.3g", tag, sig_err);
    NU_CHECK_MSG(e_final.ratio <= 1, "%s: x_final max abs err %.3g", tag, e_final.max_abs);
    /* the float64 reference of the churn runs drew other noise (maxabs_final_f32_vs_f64 null) */
    const bool has_f64 = nu_json_get(e, "maxabs_final_f32_vs_f64") && nu_json_get(e, "maxabs_final_f32_vs_f64")->kind == NU_JSON_NUMBER;
    if (has_f64) NU_CHECK_MSG(f64_err <= TOL_ABS + TOL_REL * 10, "%s: x_final vs float64 run max abs err %.3g", tag, f64_err);
    else f64_err = NAN;
    /* noise_sampler(sigma, sigma_next) arguments */
    const nu_json *ncalls = nu_json_get(e, "noise_calls");
    if (!use_rng && ncalls && ncalls->kind == NU_JSON_ARRAY) {
        NU_CHECK_MSG(ncalls->n == r.noise_used, "%s: %d noise calls, want %d", tag, r.noise_used, ncalls->n);
        double aerr = 0;
        for (int i = 0; i < ncalls->n && i < r.noise_used && i < 64; i++) {
            const nu_json *pr = nu_json_at(ncalls, i);
            for (int k = 0; k < 2; k++)
                aerr = fmax(aerr, fabs(r.noise_args[i][k] / nu_json_at(pr, k)->num - 1));
        }
        NU_CHECK_MSG(aerr <= TOL_SIGMA_REL, "%s: noise_sampler arguments rel err %.3g", tag, aerr);
    }
    const bool pass = nu_test_failures == fails0;
    n_kd++, n_kd_pass += pass;
    char name[96];
    snprintf(name, sizeof name, "%s%s", tag + 3, use_rng ? " (nu_rng 99)" : "");
    char f64s[16] = "-", refs[16] = "-";
    if (!isnan(f64_err)) snprintf(f64s, sizeof f64s, "%.2g", f64_err);
    if (!isnan(ref_spread)) snprintf(refs, sizeof refs, "%.2g", ref_spread);
    printf("%-44s %-16s %5d %9.2g %9.2g %9.2g %9s %9s %s\n", name, nu_sampler_name(s), r.calls, e_steps.max_abs,
           fmax(e_calls.max_abs, e_cden.max_abs), e_final.max_abs, f64s, refs, pass ? "pass" : "FAIL");
    free(r.call_x), free(r.call_den), free(r.call_sigma), free(r.step_x), free(r.step_den);
}

/* ---------------------------------------------------------------- diffusers runs */

typedef struct df_noise {
    nu_rng rng;
    const float *ref;
    int n_ref, used;
    double max_diff;
} df_noise;

static nu_status df_draw(void *u, float *out, int64_t n, double sigma, double sigma_next) {
    df_noise *d = u;
    nu_rng_randn_f32(&d->rng, out, n); /* randn_tensor(shape, generator=g) */
    if (d->ref && d->used < d->n_ref)
        for (int64_t i = 0; i < n; i++) d->max_diff = fmax(d->max_diff, fabs((double)out[i] - d->ref[d->used * NEL + i]));
    else
        d->max_diff = INFINITY; /* drew more noise than diffusers did */
    d->used++;
    return NU_OK;
}

static int n_df = 0, n_df_pass = 0;

static void run_diffusers_case(const char *tag, const nu_json *e) {
    const int fails0 = nu_test_failures;
    const char *cls = nu_json_string(e, "class", "");
    nu_sched_config c;
    memset(&c, 0, sizeof c);
    NU_CHECK_MSG(nu_sched_kind_from_name(cls, &c.kind) == NU_OK, "%s: %s", tag, nu_last_error());
    NU_CHECK_MSG(nu_sched_config_from_json_obj(&c, nu_json_get(e, "config"), tag) == NU_OK, "%s", nu_last_error());
    const nu_json *eta = nu_json_get(e, "eta");
    if (eta && eta->kind == NU_JSON_NUMBER) c.eta = eta->num;
    nu_sched *s = NULL;
    NU_CHECK_MSG(nu_sched_new(&c, &s) == NU_OK, "%s: %s", tag, nu_last_error());
    if (!s) return;
    const int steps = (int)nu_json_number(e, "num_inference_steps", 0);
    NU_CHECK(nu_sched_set_timesteps(s, steps, NEL) == NU_OK);
    int64_t nt = 0, n_noise = 0;
    const float *t_ref = ref("%s/t", tag, &nt);
    const float *x_init = ref("%s/x_init", tag, NULL), *x_in = ref("%s/x_in", tag, NULL);
    const float *model_in = ref("%s/model_in", tag, NULL), *eps_ref = ref("%s/eps", tag, NULL);
    const float *x_out = ref("%s/x_out", tag, NULL), *x_final = ref("%s/x_final", tag, NULL);
    const float *pred = ref("%s/pred_original", tag, NULL), *noise = ref("%s/noise", tag, &n_noise);
    NU_CHECK_MSG(t_ref && x_init && x_in && model_in && eps_ref && x_out && x_final, "%s: keys missing", tag);
    if (!t_ref || !x_init || !x_in || !model_in || !eps_ref || !x_out || !x_final) {
        nu_sched_free(s);
        return;
    }
    NU_CHECK_MSG(nu_sched_len(s) == (int)nt, "%s: %d timesteps, want %lld", tag, nu_sched_len(s), (long long)nt);

    /* x_init = randn(shape, generator=Generator().manual_seed(5)) * init_noise_sigma */
    float x[NEL], mi[NEL], eps[NEL], po[NEL];
    nu_rng r5;
    nu_rng_seed(&r5, 5);
    nu_rng_randn_f32(&r5, x, NEL);
    const float ins = (float)nu_sched_init_noise_sigma(s);
    for (int i = 0; i < NEL; i++) x[i] = x[i] * ins;
    NU_CHECK_MSG(memcmp(x, x_init, sizeof x) == 0, "%s: x_init (nu_rng seed 5 * init_noise_sigma) is not bit-exact", tag);

    df_noise dn = {.ref = noise, .n_ref = (int)(n_noise / NEL)};
    nu_rng_seed(&dn.rng, 6);
    nu_noise nz = {df_draw, &dn, NULL};
    errstat e_x = {0}, e_mi = {0}, e_eps = {0}, e_out = {0}, e_po = {0};
    double t_err = 0;
    const int n = nt < nu_sched_len(s) ? (int)nt : nu_sched_len(s);
    for (int i = 0; i < n; i++) {
        const double t = nu_sched_timestep(s, i);
        t_err = fmax(t_err, fabs(t - t_ref[i]));
        acc_err(&e_x, x, x_in + (size_t)i * NEL, NEL);
        nu_sched_scale_model_input(s, x, mi, NEL);
        acc_err(&e_mi, mi, model_in + (size_t)i * NEL, NEL);
        analytic_eps(mi, t, eps);
        acc_err(&e_eps, eps, eps_ref + (size_t)i * NEL, NEL);
        nu_status st = nu_sched_step(s, eps, x, NEL, &nz, po);
        NU_CHECK_MSG(st == NU_OK, "%s step %d: %s", tag, i, nu_last_error());
        acc_err(&e_out, x, x_out + (size_t)i * NEL, NEL);
        if (pred) acc_err(&e_po, po, pred + (size_t)i * NEL, NEL);
    }
    errstat e_fin = {0};
    acc_err(&e_fin, x, x_final, NEL);
    NU_CHECK_MSG(t_err == 0, "%s: timesteps differ (max %.3g)", tag, t_err);
    NU_CHECK_MSG(e_x.ratio <= 1 && e_mi.ratio <= 1, "%s: x_in / model_in max abs err %.3g / %.3g", tag, e_x.max_abs, e_mi.max_abs);
    NU_CHECK_MSG(e_eps.ratio <= 1, "%s: eps model max abs err %.3g", tag, e_eps.max_abs);
    NU_CHECK_MSG(e_out.ratio <= 1, "%s: x_out max abs err %.3g", tag, e_out.max_abs);
    NU_CHECK_MSG(e_po.ratio <= 1, "%s: pred_original max abs err %.3g", tag, e_po.max_abs);
    NU_CHECK_MSG(e_fin.ratio <= 1, "%s: x_final max abs err %.3g", tag, e_fin.max_abs);
    NU_CHECK_MSG(dn.used == dn.n_ref && dn.max_diff == 0, "%s: drew %d noises (want %d), max diff to recorded %.3g", tag,
                 dn.used, dn.n_ref, dn.max_diff);
    NU_CHECK(nu_sched_step(s, eps, x, NEL, &nz, NULL) == NU_ERR_INVALID_ARG); /* past the end */
    const bool pass = nu_test_failures == fails0;
    n_df++, n_df_pass += pass;
    printf("%-28s %-32s %5d %9.2g %9.2g %9.2g %9.2g %9s %s\n", tag + 10, nu_sched_kind_name(c.kind), n, e_x.max_abs, e_mi.max_abs,
           e_out.max_abs, e_fin.max_abs, pred ? "pred" : "-", pass ? "pass" : "FAIL");
    nu_sched_free(s);
}

/* ---------------------------------------------------------------- other checks */

/* eps / v networks of the analytic model (t -> sigma by formula_eps) */
static nu_status net_eps(void *u, const float *xin, double t, float *out, int64_t n) {
    (void)u, (void)n;
    analytic_eps(xin, t, out);
    return NU_OK;
}

static nu_status net_v(void *u, const float *xin, double t, float *out, int64_t n) {
    (void)u, (void)n;
    float eps[NEL];
    analytic_eps(xin, t, eps);
    double sigma = sigma_of_t(t), a = 1 / (1 + sigma * sigma), sa = sqrt(a), sb = sqrt(1 - a);
    for (int i = 0; i < NEL; i++) {
        double x0 = (xin[i] - sb * eps[i]) / sa;
        out[i] = (float)(sa * eps[i] - sb * x0); /* v = alpha eps - sigma x0 */
    }
    return NU_OK;
}

static void test_denoiser_wrapper(void) {
    nu_discrete_schedule d;
    NU_CHECK(nu_discrete_schedule_init_betas(&d, NU_BETA_SCALED_LINEAR, 1000, 0.00085, 0.012, false) == NU_OK);
    NU_CHECK(memcmp(d.sigmas, g_train_sigmas, sizeof g_train_sigmas) == 0);
    nu_prediction preds[2] = {NU_PRED_EPS, NU_PRED_V};
    nu_model_fn nets[2] = {net_eps, net_v};
    float x[NEL], want[NEL], got[NEL];
    nu_test_fill_uniform(x, NEL, 3, -5, 5);
    for (int k = 0; k < 2; k++) {
        nu_denoiser dn;
        NU_CHECK(nu_denoiser_init(&dn, preds[k], &d, nets[k], NULL, NEL) == NU_OK);
        double worst = 0;
        for (double sigma = 0.05; sigma < 14; sigma *= 1.9) {
            analytic_D(x, (float)sigma, want);
            NU_CHECK(nu_denoiser_call(&dn, x, (float)sigma, got, NEL) == NU_OK);
            for (int i = 0; i < NEL; i++) worst = fmax(worst, fabs((double)got[i] - want[i]));
        }
        /* sigma -> t -> sigma through float32 log-sigmas (~1e-7 rel) and float32 I/O */
        NU_CHECK_MSG(worst < 2e-5, "%s denoiser wrapper vs analytic D: max abs err %.3g", nu_prediction_name(preds[k]), worst);
        printf("denoiser wrapper (%s network): max abs err vs analytic D %.2g\n", nu_prediction_name(preds[k]), worst);
        NU_CHECK(nu_denoiser_call(&dn, x, 1.0f, got, NEL - 1) == NU_ERR_INVALID_ARG);
        nu_denoiser_free(&dn);
    }
    /* scalings */
    double cs, co, ci;
    nu_denoiser_scalings(NU_PRED_V, 2.0, &cs, &co, &ci);
    NU_CHECK(fabs(cs - 0.2) < 1e-15 && fabs(co + 2 / sqrt(5.0)) < 1e-15 && fabs(ci - 1 / sqrt(5.0)) < 1e-15);
    nu_denoiser_scalings(NU_PRED_FLOW, 0.5, &cs, &co, &ci);
    NU_CHECK(cs == 1 && co == -0.5 && ci == 1);
    nu_denoiser dn;
    NU_CHECK(nu_denoiser_init(&dn, NU_PRED_EPS, NULL, net_eps, NULL, NEL) == NU_ERR_INVALID_ARG);
    nu_discrete_schedule_free(&d);
}

static nu_status cancel_cb(void *u, const nu_sample_step_info *info) {
    (void)u;
    return info->i == 2 ? nu_error(NU_ERR_CANCELLED, "cancelled at step 2") : NU_OK;
}

static nu_status zero_noise(void *u, float *out, int64_t n, double a, double b) {
    (void)u, (void)a, (void)b;
    memset(out, 0, sizeof(float) * (size_t)n);
    return NU_OK;
}

static void test_misc(void) {
    float sig[11];
    NU_CHECK(nu_sigmas_karras(10, 0.0291675, 14.614642, 7, sig) == NU_OK);
    /* names */
    const char *names[] = {"euler", "euler_a", "heun", "dpm2", "dpm++2s_a", "dpm++2m", "dpm++2m_sde", "lms", "ddim",
                           "ddpm", "lcm", "DPM++ 2M", "dpmpp_2m", "sample_dpmpp_3m_sde", "k_euler_a", "Euler a",
                           "dpm2_a", "dpm++sde", "dpm++2m_sde_heun"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        nu_sampler s;
        NU_CHECK_MSG(nu_sampler_from_name(names[i], &s) == NU_OK, "sampler name '%s' not accepted", names[i]);
    }
    for (int k = 0; k < NU_SAMPLER_COUNT; k++) {
        nu_sampler back;
        NU_CHECK(nu_sampler_from_name(nu_sampler_name((nu_sampler)k), &back) == NU_OK && (int)back == k);
    }
    nu_sampler s;
    NU_CHECK(nu_sampler_from_name("euler_b", &s) == NU_ERR_INVALID_ARG);

    /* model-call counts for every sampler, and a finite result */
    float x0[NEL], x[NEL];
    nu_test_fill_uniform(x0, NEL, 7, -1, 1);
    nu_rng rng;
    for (int k = 0; k < NU_SAMPLER_COUNT; k++) {
        kd_run r = {0};
        r.fail_at_call = -1;
        for (int i = 0; i < NEL; i++) x[i] = x0[i] * sig[0];
        nu_rng_seed(&rng, 1);
        nu_noise nz = {NULL, NULL, &rng};
        NU_CHECK(nu_sample((nu_sampler)k, NULL, kd_model, &r, sig, 11, x, NEL, &nz) == NU_OK);
        NU_CHECK_MSG(r.calls == nu_sampler_model_calls((nu_sampler)k, sig, 11), "%s: %d calls, predicted %d",
                     nu_sampler_name((nu_sampler)k), r.calls, nu_sampler_model_calls((nu_sampler)k, sig, 11));
        bool fin = true;
        for (int i = 0; i < NEL; i++) fin &= isfinite(x[i]);
        NU_CHECK_MSG(fin, "%s: non-finite result", nu_sampler_name((nu_sampler)k));
    }
    /* DDIM with eta 0 is exactly Euler; no noise needed */
    float xe[NEL];
    kd_run r = {0};
    r.fail_at_call = -1;
    for (int i = 0; i < NEL; i++) x[i] = xe[i] = x0[i] * sig[0];
    NU_CHECK(nu_sample(NU_SAMPLER_DDIM, NULL, kd_model, &r, sig, 11, x, NEL, NULL) == NU_OK);
    NU_CHECK(nu_sample(NU_SAMPLER_EULER, NULL, kd_model, &r, sig, 11, xe, NEL, NULL) == NU_OK);
    NU_CHECK(memcmp(x, xe, sizeof x) == 0);
    /* the DDPM step (zero noise) is the DDPM posterior mean (Ho et al. eq. 7) in sigma space */
    {
        const double s0 = sig[3], s1 = sig[4];
        float sg2[2] = {(float)s0, (float)s1}, den[NEL];
        for (int i = 0; i < NEL; i++) x[i] = x0[i] * (float)s0;
        analytic_D(x, (float)s0, den);
        nu_noise z = {zero_noise, NULL, NULL};
        float xs[NEL];
        memcpy(xs, x, sizeof x);
        NU_CHECK(nu_sample(NU_SAMPLER_DDPM, NULL, kd_model, &r, sg2, 2, x, NEL, &z) == NU_OK);
        const double a = 1 / (1 + s0 * s0), ap = 1 / (1 + s1 * s1), beta = 1 - a / ap;
        double worst = 0;
        for (int i = 0; i < NEL; i++) {
            double xt = xs[i] * sqrt(a); /* VP sample */
            double mean = sqrt(ap) * beta / (1 - a) * den[i] + sqrt(1 - beta) * (1 - ap) / (1 - a) * xt;
            worst = fmax(worst, fabs(mean / sqrt(ap) - x[i]));
        }
        NU_CHECK_MSG(worst < 1e-5, "DDPM step vs posterior mean: %.3g", worst);
    }
    /* errors: no noise for a stochastic sampler, zero sigma inside, bad eta, model failure, cancel */
    for (int i = 0; i < NEL; i++) x[i] = x0[i] * sig[0];
    NU_CHECK(nu_sample(NU_SAMPLER_EULER_A, NULL, kd_model, &r, sig, 11, x, NEL, NULL) == NU_ERR_INVALID_ARG);
    float bad[3] = {1.0f, 0.0f, 0.0f};
    NU_CHECK(nu_sample(NU_SAMPLER_EULER, NULL, kd_model, &r, bad, 3, x, NEL, NULL) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_sample(NU_SAMPLER_EULER, NULL, kd_model, &r, sig, 1, x, NEL, NULL) == NU_ERR_INVALID_ARG);
    nu_sampler_params p;
    nu_sampler_params_init(&p, NU_SAMPLER_EULER_A);
    p.eta = -1;
    nu_rng_seed(&rng, 1);
    nu_noise nz = {NULL, NULL, &rng};
    NU_CHECK(nu_sample(NU_SAMPLER_EULER_A, &p, kd_model, &r, sig, 11, x, NEL, &nz) == NU_ERR_INVALID_ARG);
    r.fail_at_call = r.calls + 3;
    NU_CHECK(nu_sample(NU_SAMPLER_HEUN, NULL, kd_model, &r, sig, 11, x, NEL, NULL) == NU_ERR_CANCELLED);
    r.fail_at_call = -1;
    nu_sampler_params_init(&p, NU_SAMPLER_DPMPP_2M);
    p.callback = cancel_cb;
    NU_CHECK(nu_sample(NU_SAMPLER_DPMPP_2M, &p, kd_model, &r, sig, 11, x, NEL, NULL) == NU_ERR_CANCELLED);
    NU_CHECK(strstr(nu_last_error(), "step 2") != NULL);
}

/* The samplers must sample the analytic model's distribution N(mu, s^2): over 4096 elements
 * z = (x - mu)/s should have mean ~0 and variance ~1. With 200 karras steps the discretisation
 * bias is small (first-order ancestral samplers keep ~5% variance deficit: they plug in the
 * posterior mean of x0; 0.73 at 30 steps); the sampling error of the mean is 1/sqrt(4096) =
 * 0.016 and of the variance 0.022, so |mean| < 0.08 and |var - 1| < 0.12 hold with margin. */
static nu_status big_model(void *u, const float *x, float sigma, float *den, int64_t n) {
    (void)u;
    for (int64_t i = 0; i < n; i++) {
        double mu = g_mu[i % NEL], s2 = g_s[i % NEL] * g_s[i % NEL];
        den[i] = (float)(mu + s2 / (s2 + (double)sigma * sigma) * ((double)x[i] - mu));
    }
    return NU_OK;
}

static void test_distribution(void) {
    enum { NB = 4096, STEPS = 200 };
    float sig[STEPS + 1];
    NU_CHECK(nu_sigmas_karras(STEPS, 0.0291675, 14.614642, 7, sig) == NU_OK);
    float *x = malloc(sizeof(float) * NB);
    /* lcm is left out: x = D(x) + sigma_next*noise is meant for consistency-distilled models;
     * with an exact posterior-mean denoiser it shrinks the variance by design */
    const nu_sampler which[] = {NU_SAMPLER_EULER_A, NU_SAMPLER_DPM2_A, NU_SAMPLER_DPMPP_2S_A, NU_SAMPLER_DPMPP_SDE,
                                NU_SAMPLER_DPMPP_2M_SDE, NU_SAMPLER_DPMPP_3M_SDE, NU_SAMPLER_DDPM, NU_SAMPLER_DDIM,
                                NU_SAMPLER_EULER, NU_SAMPLER_DPMPP_2M};
    printf("%-18s %9s %9s (z = (x - mu)/s over %d samples, %d karras steps)\n", "distribution", "mean z", "var z", NB, STEPS);
    for (size_t k = 0; k < sizeof which / sizeof which[0]; k++) {
        nu_rng rng;
        nu_rng_seed(&rng, 1234);
        nu_rng_randn_f32(&rng, x, NB);
        for (int i = 0; i < NB; i++) x[i] *= sig[0];
        nu_noise nz = {NULL, NULL, &rng};
        NU_CHECK(nu_sample(which[k], NULL, big_model, NULL, sig, STEPS + 1, x, NB, &nz) == NU_OK);
        double m = 0, v = 0;
        for (int i = 0; i < NB; i++) m += (x[i] - g_mu[i % NEL]) / g_s[i % NEL];
        m /= NB;
        for (int i = 0; i < NB; i++) {
            double z = (x[i] - g_mu[i % NEL]) / g_s[i % NEL] - m;
            v += z * z;
        }
        v /= NB - 1;
        printf("%-18s %9.4f %9.4f\n", nu_sampler_name(which[k]), m, v);
        NU_CHECK_MSG(fabs(m) < 0.08 && fabs(v - 1) < 0.12, "%s: samples are not N(mu, s^2): mean z %.3f var z %.3f",
                     nu_sampler_name(which[k]), m, v);
    }
    free(x);
}

int main(void) {
    const char *shared = nu_test_require_shared("test_samplers");
    char path[4200];
    snprintf(path, sizeof path, "%s/reference/samplers/samplers.json", shared);
    nu_file_map jm;
    NU_CHECK_MSG(nu_file_map_open(path, &jm) == NU_OK, "%s", nu_last_error());
    nu_json *root = nu_json_parse((const char *)jm.data, jm.size);
    nu_file_map_close(&jm);
    snprintf(path, sizeof path, "%s/reference/samplers/samplers.safetensors", shared);
    NU_CHECK_MSG(nu_st_open(path, &g_st) == NU_OK, "%s", nu_last_error());
    if (!root || !g_st) return nu_test_summary("test_samplers");
    const nu_st_info *mu = nu_st_find(g_st, "model/mu"), *sd = nu_st_find(g_st, "model/s");
    NU_CHECK(mu && sd && mu->type == NU_TYPE_F64 && mu->nbytes == NEL * 8 && sd->nbytes == NEL * 8);
    if (!mu || !sd) return nu_test_summary("test_samplers");
    memcpy(g_mu, mu->data, sizeof g_mu);
    memcpy(g_s, sd->data, sizeof g_s);
    float betas[1000], ac[1000]; /* diffusers' float32 training sigmas for formula_eps */
    NU_CHECK(nu_betas_f32(NU_BETA_SCALED_LINEAR, 1000, 0.00085, 0.012, betas) == NU_OK);
    nu_alphas_cumprod_f32(betas, 1000, ac);
    for (int i = 0; i < 1000; i++) g_train_sigmas[i] = sqrtf((1.0f - ac[i]) / ac[i]);

    printf("%-44s %-16s %5s %9s %9s %9s %9s %9s\n", "k-diffusion run", "sampler", "calls", "x_steps", "calls x/D",
           "final", "vs f64", "ref f64");
    const nu_json *kd = nu_json_get(root, "kdiffusion");
    for (int k = 0; kd && k < kd->n; k++) {
        run_kd_case(kd->keys[k], &kd->items[k], false);
        if (strstr(kd->keys[k], "euler_churn")) run_kd_case(kd->keys[k], &kd->items[k], true);
    }
    printf("k-diffusion runs: %d/%d pass (max abs errors; tolerance %g + %g*|ref|)\n\n", n_kd_pass, n_kd, TOL_ABS, TOL_REL);
    printf("%-28s %-32s %5s %9s %9s %9s %9s %9s\n", "diffusers run", "class", "calls", "x_in", "model_in", "x_out", "final",
           "pred_orig");
    const nu_json *df = nu_json_get(root, "diffusers");
    for (int k = 0; df && k < df->n; k++) run_diffusers_case(df->keys[k], &df->items[k]);
    printf("diffusers runs: %d/%d pass\n\n", n_df_pass, n_df);

    test_denoiser_wrapper();
    test_misc();
    if (!nu_test_quick()) test_distribution();
    nu_st_close(g_st);
    nu_json_free(root);
    return nu_test_summary("test_samplers");
}
