/*
 * test_schedules.c — noise schedules against ../shared/reference/schedules (diffusers 0.27.2,
 * k-diffusion 0.1.1.post1 on torch 1.13) and internal consistency checks.
 *
 * Every key of schedules.safetensors is compared:
 *   betas/alphas_cumprod (diffusers f32, LDM f64) and their sigmas ........ bit-exact
 *   kd/<schedule>/<n> (karras, exponential, polyexponential rho 1/2, vp,
 *     compvis_discrete) ................................................... rel 1e-6 (see TOL_KD)
 *   <Scheduler>[_karras]_<spacing>/<steps>/timesteps ..................... exact (integers and
 *     float32 interpolated timesteps); Euler-karras fractional timesteps abs 2e-4 (TOL_T_KARRAS)
 *   <Scheduler>.../sigmas ................. rel 1e-6 (TOL_SIG; measured bit-exact on x86-64 glibc)
 *   init_noise_sigma (schedules.json) ..................................... exact float32
 * plus torch.linspace emulation spot values, sigma<->t round trips, sgm_uniform/simple/flow
 * shapes, name parsing and error paths. Prints a per-scheduler table of max errors.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nu_test.h"
#include "nuance/io.h"
#include "nuance/sample.h"

/* k-diffusion evaluates these schedules entirely in float32 (pow(x, 7), exp, log through torch's
 * vectorised float kernels, ~1 ulp each); we evaluate in double from the same float32 linspace
 * and round once. The difference is a few float32 ulps, amplified up to 7x by karras's ^rho:
 * measured 4.3e-7; 1e-6 is ~8 float32 ulps. */
#define TOL_KD 1e-6
/* diffusers' sigmas: np.interp in float64 of the exact float32 training sigmas, then float32:
 * we follow the same arithmetic, so differences are at most 1 ulp (6e-8); karras sigmas are
 * pow() of float64 values (identical maths). 1e-6 leaves margin for libm pow/exp differences. */
#define TOL_SIG 1e-6
/* Euler/Heun/LMS karras timesteps are sigma_to_t of float64 karras sigmas against float32
 * log-sigmas from numpy's SIMD log (<= 1 ulp from the correctly rounded log we use): one ulp of a
 * log-sigma near sigma_max (2.4e-7) over the log-sigma spacing there (~5e-3) moves t by ~5e-5
 * (measured 6.1e-5); 2e-4 allows ~4 such ulps. */
#define TOL_T_KARRAS 2e-4

static double *read_f64(nu_st_file *st, const char *name, int64_t *count) {
    const nu_st_info *in = nu_st_find(st, name);
    if (!in) return NULL;
    int64_t n = 1;
    for (int d = 0; d < in->ndim; d++) n *= in->ne[d];
    double *out = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        const char *p = (const char *)in->data; /* safetensors offsets need not be 8-aligned */
        float f;
        double d;
        int64_t v;
        switch (in->type) {
        case NU_TYPE_F32: memcpy(&f, p + 4 * i, 4), out[i] = f; break;
        case NU_TYPE_F64: memcpy(&d, p + 8 * i, 8), out[i] = d; break;
        case NU_TYPE_I64: memcpy(&v, p + 8 * i, 8), out[i] = (double)v; break;
        default: out[i] = NAN; break;
        }
    }
    *count = n;
    return out;
}

/* max |a-b| and max |a-b|/|b|. */
static void errs(const double *got, const double *want, int64_t n, double *max_abs, double *max_rel) {
    *max_abs = 0, *max_rel = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if (isnan(d)) d = INFINITY;
        if (d > *max_abs) *max_abs = d;
        double r = want[i] != 0 ? d / fabs(want[i]) : (d > 0 ? INFINITY : 0);
        if (r > *max_rel) *max_rel = r;
    }
}

static int n_keys_checked = 0;
static double max_karras_t_err = 0, max_sig_err = 0;

static void check_exact(nu_st_file *st, const char *key, const double *got, int64_t n) {
    int64_t m = 0;
    double *want = read_f64(st, key, &m);
    n_keys_checked++;
    NU_CHECK_MSG(want && m == n, "%s: missing or %lld values (want %lld)", key, (long long)m, (long long)n);
    if (!want || m != n) {
        free(want);
        return;
    }
    double ma, mr;
    errs(got, want, n, &ma, &mr);
    NU_CHECK_MSG(ma == 0, "%s: not bit-exact, max abs err %.3g rel %.3g", key, ma, mr);
    free(want);
}

static void check_rel(nu_st_file *st, const char *key, const double *got, int64_t n, double tol, double *worst) {
    int64_t m = 0;
    double *want = read_f64(st, key, &m);
    n_keys_checked++;
    NU_CHECK_MSG(want && m == n, "%s: missing or %lld values (want %lld)", key, (long long)m, (long long)n);
    if (!want || m != n) {
        free(want);
        return;
    }
    double ma, mr;
    errs(got, want, n, &ma, &mr);
    /* trailing zeros compare exactly (rel err 0 or inf) */
    NU_CHECK_MSG(mr <= tol, "%s: max rel err %.3g > %.3g (abs %.3g)", key, mr, tol, ma);
    if (mr > *worst) *worst = mr;
    free(want);
}

/* ---------------------------------------------------------------- training schedules */

static void test_training(nu_st_file *st) {
    enum { N = 1000 };
    float b32[N], ac32[N];
    double b64[N], ac64[N], g[N];
    NU_CHECK(nu_betas_f32(NU_BETA_SCALED_LINEAR, N, 0.00085, 0.012, b32) == NU_OK);
    nu_alphas_cumprod_f32(b32, N, ac32);
    for (int i = 0; i < N; i++) g[i] = b32[i];
    check_exact(st, "betas_f32_diffusers", g, N);
    for (int i = 0; i < N; i++) g[i] = ac32[i];
    check_exact(st, "alphas_cumprod_f32_diffusers", g, N);
    nu_discrete_schedule d;
    NU_CHECK(nu_discrete_schedule_init(&d, ac32, N) == NU_OK);
    for (int i = 0; i < N; i++) g[i] = d.sigmas[i];
    check_exact(st, "sigmas_f32_diffusers", g, N);
    nu_discrete_schedule_free(&d);

    NU_CHECK(nu_betas_f64(NU_BETA_SCALED_LINEAR, N, 0.00085, 0.012, b64) == NU_OK);
    nu_alphas_cumprod_f64(b64, N, ac64);
    check_exact(st, "betas_f64_ldm", b64, N);
    check_exact(st, "alphas_cumprod_f64_ldm", ac64, N);
    for (int i = 0; i < N; i++) g[i] = sqrt((1 - ac64[i]) / ac64[i]);
    check_exact(st, "sigmas_f64_ldm", g, N);
    printf("training schedules: betas, alphas_cumprod, sigmas (f32 diffusers, f64 LDM): bit-exact\n");

    /* other beta schedules: sanity (no reference): monotone, in (0, 1), cosine capped */
    NU_CHECK(nu_betas_f32(NU_BETA_LINEAR, N, 0.0001, 0.02, b32) == NU_OK);
    NU_CHECK(b32[0] == 0.0001f && b32[N - 1] == 0.02f);
    NU_CHECK(nu_betas_f32(NU_BETA_SQUAREDCOS_CAP_V2, N, 0, 0, b32) == NU_OK);
    bool ok = true;
    for (int i = 0; i < N; i++) ok &= b32[i] > 0 && b32[i] <= 0.999f && (i == 0 || b32[i] >= b32[i - 1] - 1e-7f);
    NU_CHECK_MSG(ok, "squaredcos_cap_v2 betas not in (0, 0.999] or not increasing");
    NU_CHECK(fabsf(b32[N - 1] - 0.999f) < 1e-6f);
    NU_CHECK(nu_betas_f64(NU_BETA_SQUAREDCOS_CAP_V2, N, 0, 0, b64) == NU_OK);
    NU_CHECK(fabs(b64[0] - b32[0]) < 1e-6); /* LDM's and diffusers' cosine agree */
    /* zero terminal SNR: last alpha_cumprod 0, first unchanged */
    NU_CHECK(nu_betas_f32(NU_BETA_SCALED_LINEAR, N, 0.00085, 0.012, b32) == NU_OK);
    nu_betas_rescale_zero_terminal_snr(b32, N);
    nu_alphas_cumprod_f32(b32, N, ac32);
    NU_CHECK(ac32[N - 1] < 1e-6f && fabsf(ac32[0] - (1 - 0.00085f)) < 1e-6f);
    NU_CHECK(nu_betas_f32(NU_BETA_LINEAR, 1, 0.1, 0.2, b32) == NU_ERR_INVALID_ARG);
    nu_beta_schedule bs;
    NU_CHECK(nu_beta_schedule_from_name("scaled_linear", &bs) == NU_OK && bs == NU_BETA_SCALED_LINEAR);
    NU_CHECK(nu_beta_schedule_from_name("sigmoid", &bs) == NU_ERR_UNSUPPORTED);
}

/* ---------------------------------------------------------------- torch.linspace */

static void test_linspace(void) {
    /* spot values produced by torch 1.13 (CPU, AVX2 kernels): torch.linspace(...)[i] */
    float f[1000];
    nu_torch_linspace_f32(sqrt(0.00085), sqrt(0.012), 1000, f);
    /* index 192 is where a non-FMA evaluation differs (0.04460504 vs torch's 0.044605043) */
    NU_CHECK_MSG(f[192] == 0.044605043f, "linspace f32 [192] = %.9g", (double)f[192]);
    nu_torch_linspace_f32(5, 7, 1, f);
    NU_CHECK(f[0] == 5.0f);
    nu_torch_linspace_f32(999, 0, 20, f);
    NU_CHECK(f[0] == 999.0f && f[19] == 0.0f);
    double d[8];
    nu_torch_linspace_f64(0, 1, 2, d);
    NU_CHECK(d[0] == 0 && d[1] == 1);
}

/* ---------------------------------------------------------------- k-diffusion schedules */

static void test_kdiffusion(nu_st_file *st, const nu_json *root) {
    const nu_json *kd = nu_json_get(root, "kdiffusion");
    const double smin = nu_json_number(kd, "sigma_min", NAN), smax = nu_json_number(kd, "sigma_max", NAN);
    NU_CHECK(isfinite(smin) && isfinite(smax));
    const nu_json *steps = nu_json_get(root, "steps");
    nu_discrete_schedule d;
    NU_CHECK(nu_discrete_schedule_init_betas(&d, NU_BETA_SCALED_LINEAR, 1000, 0.00085, 0.012, true) == NU_OK);
    /* the CompVis model's sigma range (schedules.json compvis_sigma_min_max) */
    const nu_json *mm = nu_json_get(kd, "compvis_sigma_min_max");
    NU_CHECK(mm && (float)nu_discrete_sigma_min(&d) == (float)nu_json_at(mm, 0)->num &&
             (float)nu_discrete_sigma_max(&d) == (float)nu_json_at(mm, 1)->num);
    const char *kinds[] = {"karras", "exponential", "polyexponential_rho1", "polyexponential_rho2", "vp", "compvis_discrete"};
    printf("%-24s %8s %12s\n", "k-diffusion schedule", "cases", "max rel err");
    for (int k = 0; k < 6; k++) {
        double worst = 0;
        int cases = 0;
        for (int si = 0; steps && si < steps->n; si++) {
            int n = (int)nu_json_at(steps, si)->num;
            float out[64];
            nu_status s;
            switch (k) {
            case 0: s = nu_sigmas_karras(n, smin, smax, 7.0, out); break;
            case 1: s = nu_sigmas_exponential(n, smin, smax, out); break;
            case 2: s = nu_sigmas_polyexponential(n, smin, smax, 1.0, out); break;
            case 3: s = nu_sigmas_polyexponential(n, smin, smax, 2.0, out); break;
            case 4: s = nu_sigmas_vp(n, 19.9, 0.1, 1e-3, out); break;
            default: s = nu_sigmas_discrete(&d, n, out); break;
            }
            NU_CHECK(s == NU_OK);
            double g[64];
            for (int i = 0; i <= n; i++) g[i] = out[i];
            char key[128];
            snprintf(key, sizeof key, "kd/%s/%d", kinds[k], n);
            check_rel(st, key, g, n + 1, TOL_KD, &worst);
            cases++;
        }
        printf("%-24s %8d %12.3g\n", kinds[k], cases, worst);
    }
    /* sigma <-> t mapping: t_to_sigma(sigma_to_t(s)) == s inside the range; integer t exact */
    double rt = 0;
    for (double s = 0.05; s < 14; s *= 1.37) {
        double t = nu_discrete_sigma_to_t(&d, s, false);
        rt = fmax(rt, fabs(nu_discrete_t_to_sigma(&d, t) / s - 1));
    }
    NU_CHECK_MSG(rt < 1e-6, "sigma -> t -> sigma round trip rel err %.3g", rt);
    NU_CHECK(nu_discrete_sigma_to_t(&d, d.sigmas[500], false) == 500.0);
    NU_CHECK(nu_discrete_sigma_to_t(&d, d.sigmas[500] * 1.0001, true) == 500.0);
    NU_CHECK(nu_discrete_sigma_to_t(&d, 1e-6, false) == 0.0 && nu_discrete_sigma_to_t(&d, 1e6, false) == 999.0);
    /* ComfyUI-style schedules: shapes and endpoints */
    float o[32];
    NU_CHECK(nu_sigmas_sgm_uniform(&d, 10, o) == NU_OK);
    NU_CHECK(fabsf(o[0] / d.sigmas[999] - 1) < 3e-7f && o[10] == 0 && o[9] > d.sigmas[0] && o[9] < o[8]);
    NU_CHECK(nu_sigmas_simple(&d, 10, o) == NU_OK);
    NU_CHECK(o[0] == d.sigmas[999] && o[1] == d.sigmas[899] && o[9] == d.sigmas[99] && o[10] == 0);
    NU_CHECK(nu_sigmas_flow(4, 1.0, o) == NU_OK && o[0] == 1.0f && o[1] == 0.75f && o[4] == 0);
    NU_CHECK(nu_sigmas_flow(4, 3.0, o) == NU_OK && fabsf(o[1] - 0.9f) < 1e-6f);
    for (int s = 0; s < NU_SCHEDULE_COUNT; s++) {
        nu_sigma_schedule back;
        NU_CHECK(nu_sigmas_make((nu_sigma_schedule)s, &d, 8, o) == NU_OK);
        bool dec = true;
        for (int i = 0; i < 8; i++) dec &= o[i] > o[i + 1];
        NU_CHECK_MSG(dec && o[8] == 0, "schedule %s is not decreasing to 0", nu_sigma_schedule_name((nu_sigma_schedule)s));
        NU_CHECK(nu_sigma_schedule_from_name(nu_sigma_schedule_name((nu_sigma_schedule)s), &back) == NU_OK && (int)back == s);
    }
    nu_sigma_schedule back;
    NU_CHECK(nu_sigma_schedule_from_name("normal", &back) == NU_OK && back == NU_SCHEDULE_DISCRETE);
    NU_CHECK(nu_sigma_schedule_from_name("bogus", &back) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_sigmas_karras(0, smin, smax, 7, o) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_sigmas_karras(4, -1, smax, 7, o) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_sigmas_make(NU_SCHEDULE_KARRAS, NULL, 4, o) == NU_ERR_INVALID_ARG);
    nu_discrete_schedule_free(&d);
    float bad_ac[3] = {0.9f, 0.95f, 0.5f};
    NU_CHECK(nu_discrete_schedule_init(&d, bad_ac, 3) == NU_ERR_INVALID_ARG);
}

/* ---------------------------------------------------------------- diffusers schedulers */

static void test_diffusers(nu_st_file *st, const nu_json *root) {
    const nu_json *scheds = nu_json_get(root, "schedulers");
    NU_CHECK(scheds && scheds->kind == NU_JSON_OBJECT && scheds->n > 0);
    printf("%-46s %5s %10s %12s %8s\n", "diffusers scheduler", "steps", "timesteps", "sigma relerr", "init");
    int n_cases = 0, n_pass = 0;
    for (int k = 0; scheds && k < scheds->n; k++) {
        const char *tag = scheds->keys[k];
        const nu_json *e = &scheds->items[k];
        char cls[64];
        snprintf(cls, sizeof cls, "%s", tag);
        char *us = strchr(cls, '_');
        if (us) *us = 0;
        nu_sched_config c;
        memset(&c, 0, sizeof c);
        NU_CHECK(nu_sched_kind_from_name(cls, &c.kind) == NU_OK);
        nu_status s = nu_sched_config_from_json_obj(&c, nu_json_get(e, "full_config"), tag);
        NU_CHECK_MSG(s == NU_OK, "%s: %s", tag, nu_last_error());
        nu_sched *sc = NULL;
        s = nu_sched_new(&c, &sc);
        NU_CHECK_MSG(s == NU_OK, "%s: %s", tag, nu_last_error());
        if (s != NU_OK) continue;
        const nu_json *by = nu_json_get(e, "by_steps");
        for (int j = 0; by && j < by->n; j++) {
            const int steps = atoi(by->keys[j]);
            const int fails0 = nu_test_failures;
            n_cases++;
            s = nu_sched_set_timesteps(sc, steps, 16);
            NU_CHECK_MSG(s == NU_OK, "%s/%d: %s", tag, steps, nu_last_error());
            if (s != NU_OK) continue;
            char key[160];
            const int nt = nu_sched_len(sc);
            double *g = malloc(sizeof(double) * (size_t)(nt + 2));
            for (int i = 0; i < nt; i++) g[i] = nu_sched_timestep(sc, i);
            snprintf(key, sizeof key, "%s/%d/timesteps", tag, steps);
            const bool frac_t = c.use_karras_sigmas && (c.kind == NU_SCHED_EULER || c.kind == NU_SCHED_HEUN ||
                                                         c.kind == NU_SCHED_LMS);
            const char *tres = "exact";
            if (frac_t) {
                int64_t m = 0;
                double *want = read_f64(st, key, &m), ma = 0, mr = 0;
                n_keys_checked++;
                NU_CHECK_MSG(want && m == nt, "%s: %lld timesteps, want %d", key, (long long)m, nt);
                if (want && m == nt) errs(g, want, nt, &ma, &mr);
                NU_CHECK_MSG(ma <= TOL_T_KARRAS, "%s: max abs err %.3g > %g", key, ma, TOL_T_KARRAS);
                if (ma > max_karras_t_err) max_karras_t_err = ma;
                static char buf[32];
                snprintf(buf, sizeof buf, "%.2g", ma);
                tres = buf;
                free(want);
            } else {
                check_exact(st, key, g, nt);
            }
            double worst = 0;
            int nsig = 0;
            const float *sg = nu_sched_sigmas(sc, &nsig);
            snprintf(key, sizeof key, "%s/%d/sigmas", tag, steps);
            if (nu_st_find(st, key)) {
                double *gs = malloc(sizeof(double) * (size_t)(nsig + 1));
                for (int i = 0; i < nsig; i++) gs[i] = sg[i];
                check_rel(st, key, gs, nsig, TOL_SIG, &worst);
                if (worst > max_sig_err) max_sig_err = worst;
                free(gs);
            } else {
                NU_CHECK_MSG(nsig == 0 || c.kind == NU_SCHED_DDIM, "%s: sigmas reported but not in the reference", key);
            }
            const nu_json *bs = nu_json_get(by, by->keys[j]);
            double want_init = nu_json_number(bs, "init_noise_sigma", NAN);
            NU_CHECK_MSG((float)nu_sched_init_noise_sigma(sc) == (float)want_init, "%s/%d: init_noise_sigma %.9g want %.9g",
                         tag, steps, nu_sched_init_noise_sigma(sc), want_init);
            if (steps == 10 || nu_test_failures != fails0)
                printf("%-46s %5d %10s %12.3g %8.5g\n", tag, steps, tres, worst, nu_sched_init_noise_sigma(sc));
            if (nu_test_failures == fails0) n_pass++;
            free(g);
        }
        nu_sched_free(sc);
    }
    printf("diffusers scheduler cases: %d/%d pass (table shows the 10-step row of each); over all steps: "
           "sigma max rel err %.3g, Euler/Heun/LMS karras timestep max abs err %.3g, other timesteps exact\n",
           n_pass, n_cases, max_sig_err, max_karras_t_err);
}

static void test_config_errors(void) {
    nu_sched_config c;
    const char *ok = "{\"_class_name\": \"EulerDiscreteScheduler\", \"beta_schedule\": \"scaled_linear\", "
                     "\"beta_start\": 0.00085, \"beta_end\": 0.012, \"steps_offset\": 1, \"timestep_spacing\": \"leading\","
                     "\"prediction_type\": \"v_prediction\", \"use_karras_sigmas\": false}";
    NU_CHECK(nu_sched_config_from_json(&c, ok, strlen(ok), "cfg") == NU_OK);
    NU_CHECK(c.kind == NU_SCHED_EULER && c.prediction_type == NU_PRED_V && c.steps_offset == 1 &&
             c.timestep_spacing == NU_SPACING_LEADING && c.beta_schedule == NU_BETA_SCALED_LINEAR);
    const char *bad[] = {
        "{\"_class_name\": \"KDPM2DiscreteScheduler\"}",
        "{\"_class_name\": \"DDIMScheduler\", \"thresholding\": true}",
        "{\"_class_name\": \"PNDMScheduler\", \"skip_prk_steps\": false}",
        "{\"_class_name\": \"DDIMScheduler\", \"beta_schedule\": \"sigmoid\"}",
        "{\"_class_name\": \"DDIMScheduler\", \"prediction_type\": \"flow_prediction\"}",
        "{\"_class_name\": \"DDIMScheduler\", \"timestep_spacing\": \"random\"}",
        "{\"_class_name\": \"DDIMScheduler\", \"trained_betas\": [0.1, 0.2]}",
        "{\"_class_name\": \"DPMSolverMultistepScheduler\", \"use_lu_lambdas\": true}",
        "{\"_class_name\": \"DDIMScheduler\", \"num_train_timesteps\": \"x\"}",
        "{not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nu_status s = nu_sched_config_from_json(&c, bad[i], strlen(bad[i]), "scheduler_config.json");
        NU_CHECK_MSG(s != NU_OK, "accepted: %s", bad[i]);
        NU_CHECK_MSG(strstr(nu_last_error(), "scheduler_config.json") != NULL, "error does not name the file: %s",
                     nu_last_error());
    }
    /* kinds and names round trip */
    for (int k = 0; k < NU_SCHED_KIND_COUNT; k++) {
        nu_sched_kind back;
        NU_CHECK(nu_sched_kind_from_name(nu_sched_kind_name((nu_sched_kind)k), &back) == NU_OK && (int)back == k);
        nu_sched_config_init(&c, (nu_sched_kind)k);
        nu_sched *s = NULL;
        NU_CHECK_MSG(nu_sched_new(&c, &s) == NU_OK, "%s defaults: %s", nu_sched_kind_name((nu_sched_kind)k), nu_last_error());
        if (!s) continue;
        NU_CHECK(nu_sched_set_timesteps(s, 0, 16) == NU_ERR_INVALID_ARG);
        NU_CHECK(nu_sched_set_timesteps(s, 20, 16) == NU_OK && nu_sched_len(s) >= 20);
        nu_sched_free(s);
    }
    nu_sched_config_init(&c, NU_SCHED_DDIM);
    c.steps_offset = 500; /* leading timesteps past N-1 */
    nu_sched *s = NULL;
    NU_CHECK(nu_sched_new(&c, &s) == NU_OK);
    NU_CHECK(nu_sched_set_timesteps(s, 2, 4) == NU_ERR_INVALID_ARG);
    nu_sched_free(s);
}

int main(void) {
    test_linspace();
    test_config_errors();
    const char *shared = nu_test_require_shared("test_schedules");
    char path[4200];
    snprintf(path, sizeof path, "%s/reference/schedules/schedules.json", shared);
    nu_file_map jm;
    NU_CHECK_MSG(nu_file_map_open(path, &jm) == NU_OK, "%s", nu_last_error());
    nu_json *root = nu_json_parse((const char *)jm.data, jm.size);
    nu_file_map_close(&jm);
    NU_CHECK_MSG(root, "schedules.json: %s", nu_last_error());
    snprintf(path, sizeof path, "%s/reference/schedules/schedules.safetensors", shared);
    nu_st_file *st = NULL;
    NU_CHECK_MSG(nu_st_open(path, &st) == NU_OK, "%s", nu_last_error());
    if (root && st) {
        test_training(st);
        test_kdiffusion(st, root);
        test_diffusers(st, root);
        printf("reference keys compared: %d of %d in schedules.safetensors\n", n_keys_checked, nu_st_count(st));
        NU_CHECK_MSG(n_keys_checked == nu_st_count(st), "not every reference key was compared");
    }
    nu_st_close(st);
    nu_json_free(root);
    return nu_test_summary("test_schedules");
}
