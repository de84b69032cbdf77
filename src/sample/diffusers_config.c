/*
 * diffusers_config.c — diffusers scheduler configurations: each class's defaults (diffusers
 * v0.27.2), class and option names, and scheduler_config.json parsing with a clear error for
 * every value nuance does not implement (thresholding, PRK warm-up, learned variances, ...).
 *
 * Tested by tests/test_schedules.c (every full_config of ../shared/reference/schedules goes
 * through nu_sched_config_from_json_obj) and tests/test_samplers.c (the samplers' configs and
 * error cases).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nuance/sample.h"
#include "sample/sample_internal.h"

static const char *const kind_names[NU_SCHED_KIND_COUNT] = {
    "DDIMScheduler",          "DDPMScheduler",
    "PNDMScheduler",          "LMSDiscreteScheduler",
    "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",  "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler", "LCMScheduler"};

static const char *const kind_short[NU_SCHED_KIND_COUNT] = {"ddim",    "ddpm",    "pndm", "lms",   "euler",
                                                            "euler_a", "heun",    "dpm++2m", "unipc", "lcm"};

const char *nu_sched_kind_name(nu_sched_kind k) { return (unsigned)k < NU_SCHED_KIND_COUNT ? kind_names[k] : "?"; }

nu_status nu_sched_kind_from_name(const char *name, nu_sched_kind *out) {
    if (!name) return nu_error(NU_ERR_INVALID_ARG, "scheduler name is NULL");
    for (int i = 0; i < NU_SCHED_KIND_COUNT; i++)
        if (strcmp(name, kind_names[i]) == 0 || nu_sample_name_eq(name, kind_short[i])) {
            *out = (nu_sched_kind)i;
            return NU_OK;
        }
    if (nu_sample_name_eq(name, "euler_ancestral")) return *out = NU_SCHED_EULER_ANCESTRAL, NU_OK;
    if (nu_sample_name_eq(name, "dpmsolver") || nu_sample_name_eq(name, "dpm_solver_multistep"))
        return *out = NU_SCHED_DPMSOLVER_MULTISTEP, NU_OK;
    return nu_error(NU_ERR_UNSUPPORTED,
                    "scheduler '%s' is not supported (DDIM, DDPM, PNDM, LMSDiscrete, EulerDiscrete, "
                    "EulerAncestralDiscrete, HeunDiscrete, DPMSolverMultistep, UniPCMultistep, LCM)",
                    name);
}

static const char *const spacing_names[NU_SPACING_COUNT] = {"leading", "linspace", "trailing"};

nu_status nu_timestep_spacing_from_name(const char *name, nu_timestep_spacing *out) {
    for (int i = 0; name && i < NU_SPACING_COUNT; i++)
        if (strcmp(name, spacing_names[i]) == 0) {
            *out = (nu_timestep_spacing)i;
            return NU_OK;
        }
    return nu_error(NU_ERR_INVALID_ARG, "timestep spacing '%s' is not one of leading, linspace, trailing",
                    name ? name : "(null)");
}

void nu_sched_config_init(nu_sched_config *c, nu_sched_kind kind) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->num_train_timesteps = 1000;
    c->beta_start = 0.0001, c->beta_end = 0.02;
    c->beta_schedule = NU_BETA_LINEAR;
    c->prediction_type = NU_PRED_EPS;
    c->timestep_spacing = NU_SPACING_LINSPACE;
    c->clip_sample_range = 1.0;
    c->sigma_min = NAN, c->sigma_max = NAN;
    c->variance_type = NU_DDPM_FIXED_SMALL;
    c->solver_order = 2;
    c->algorithm_type = NU_DPM_SOLVER_PP;
    c->lower_order_final = true;
    c->final_sigmas_zero = true;
    c->lambda_min_clipped = -INFINITY;
    c->predict_x0 = true;
    c->skip_prk_steps = true; /* diffusers' default is false, but PRK warm-up is not implemented and
                                 every Stable Diffusion config sets it true */
    c->original_inference_steps = 50;
    c->timestep_scaling = 10.0;
    c->s_tmax = INFINITY, c->s_noise = 1.0;
    switch (kind) {
    case NU_SCHED_DDIM:
        c->timestep_spacing = NU_SPACING_LEADING, c->clip_sample = true, c->set_alpha_to_one = true;
        break;
    case NU_SCHED_DDPM: c->timestep_spacing = NU_SPACING_LEADING, c->clip_sample = true; break;
    case NU_SCHED_PNDM: c->timestep_spacing = NU_SPACING_LEADING; break;
    case NU_SCHED_HEUN: c->beta_start = 0.00085, c->beta_end = 0.012; break;
    case NU_SCHED_UNIPC: c->final_sigmas_zero = false; break; /* 0.27: last sigma is sigma_min */
    case NU_SCHED_LCM:
        c->beta_start = 0.00085, c->beta_end = 0.012, c->beta_schedule = NU_BETA_SCALED_LINEAR;
        c->timestep_spacing = NU_SPACING_LEADING, c->set_alpha_to_one = true;
        break;
    default: break;
    }
}

/* ---------------------------------------------------------------- JSON */

static bool is_null(const nu_json *v) { return !v || v->kind == NU_JSON_NULL; }

static nu_status bad(const char *label, const char *key, const char *why) {
    return nu_error(NU_ERR_UNSUPPORTED, "%s: %s: %s", label, key, why);
}

static nu_status get_num(const nu_json *o, const char *key, double *out, const char *label) {
    const nu_json *v = nu_json_get(o, key);
    if (is_null(v)) return NU_OK;
    if (v->kind != NU_JSON_NUMBER) return nu_error(NU_ERR_FORMAT, "%s: %s must be a number", label, key);
    *out = v->num;
    return NU_OK;
}

static nu_status get_int(const nu_json *o, const char *key, int *out, int lo, int hi, const char *label) {
    const nu_json *v = nu_json_get(o, key);
    if (is_null(v)) return NU_OK;
    if (v->kind != NU_JSON_NUMBER || v->num != floor(v->num) || v->num < lo || v->num > hi)
        return nu_error(NU_ERR_FORMAT, "%s: %s must be an integer in [%d, %d]", label, key, lo, hi);
    *out = (int)v->num;
    return NU_OK;
}

static nu_status get_bool(const nu_json *o, const char *key, bool *out, const char *label) {
    const nu_json *v = nu_json_get(o, key);
    if (is_null(v)) return NU_OK;
    if (v->kind != NU_JSON_BOOL) return nu_error(NU_ERR_FORMAT, "%s: %s must be true or false", label, key);
    *out = v->b;
    return NU_OK;
}

static const char *get_str(const nu_json *o, const char *key) {
    const nu_json *v = nu_json_get(o, key);
    return v && v->kind == NU_JSON_STRING ? v->str : NULL;
}

nu_status nu_sched_config_from_json_obj(nu_sched_config *c, const nu_json *o, const char *label) {
    if (!label) label = "scheduler config";
    if (!o || o->kind != NU_JSON_OBJECT) return nu_error(NU_ERR_FORMAT, "%s: not a JSON object", label);
    nu_status st;
    nu_sched_kind kind = c->kind;
    const char *cls = get_str(o, "_class_name");
    if (cls) {
        if ((st = nu_sched_kind_from_name(cls, &kind)) != NU_OK) return nu_error(st, "%s: %s", label, nu_last_error());
    }
    nu_sched_config_init(c, kind);
    const char *s;

    if ((st = get_int(o, "num_train_timesteps", &c->num_train_timesteps, 2, NU_SAMPLE_MAX_TRAIN_STEPS, label)) != NU_OK ||
        (st = get_num(o, "beta_start", &c->beta_start, label)) != NU_OK ||
        (st = get_num(o, "beta_end", &c->beta_end, label)) != NU_OK)
        return st;
    if ((s = get_str(o, "beta_schedule")) && nu_beta_schedule_from_name(s, &c->beta_schedule) != NU_OK)
        return bad(label, "beta_schedule", nu_last_error());
    if (!is_null(nu_json_get(o, "trained_betas")))
        return bad(label, "trained_betas", "explicit trained_betas in JSON are not supported");
    if ((s = get_str(o, "prediction_type"))) {
        if (strcmp(s, "original_sample") == 0) c->prediction_type = NU_PRED_SAMPLE;
        else if (strcmp(s, "flow_prediction") == 0 || nu_prediction_from_name(s, &c->prediction_type) != NU_OK)
            return bad(label, "prediction_type", "only epsilon, v_prediction and sample are supported");
    }
    if ((s = get_str(o, "timestep_spacing")) && nu_timestep_spacing_from_name(s, &c->timestep_spacing) != NU_OK)
        return bad(label, "timestep_spacing", nu_last_error());
    if ((st = get_int(o, "steps_offset", &c->steps_offset, 0, 1000, label)) != NU_OK ||
        (st = get_bool(o, "rescale_betas_zero_snr", &c->rescale_betas_zero_snr, label)) != NU_OK ||
        (st = get_bool(o, "set_alpha_to_one", &c->set_alpha_to_one, label)) != NU_OK ||
        (st = get_bool(o, "clip_sample", &c->clip_sample, label)) != NU_OK ||
        (st = get_num(o, "clip_sample_range", &c->clip_sample_range, label)) != NU_OK ||
        (st = get_bool(o, "thresholding", &c->thresholding, label)) != NU_OK ||
        (st = get_bool(o, "use_karras_sigmas", &c->use_karras_sigmas, label)) != NU_OK ||
        (st = get_num(o, "sigma_min", &c->sigma_min, label)) != NU_OK ||
        (st = get_num(o, "sigma_max", &c->sigma_max, label)) != NU_OK ||
        (st = get_int(o, "solver_order", &c->solver_order, 1, 3, label)) != NU_OK ||
        (st = get_bool(o, "lower_order_final", &c->lower_order_final, label)) != NU_OK ||
        (st = get_bool(o, "euler_at_final", &c->euler_at_final, label)) != NU_OK ||
        (st = get_num(o, "lambda_min_clipped", &c->lambda_min_clipped, label)) != NU_OK ||
        (st = get_bool(o, "predict_x0", &c->predict_x0, label)) != NU_OK ||
        (st = get_bool(o, "skip_prk_steps", &c->skip_prk_steps, label)) != NU_OK ||
        (st = get_int(o, "original_inference_steps", &c->original_inference_steps, 1, NU_SAMPLE_MAX_TRAIN_STEPS, label)) !=
            NU_OK ||
        (st = get_num(o, "timestep_scaling", &c->timestep_scaling, label)) != NU_OK)
        return st;
    if (c->thresholding) return bad(label, "thresholding", "dynamic thresholding is not supported");
    if (c->kind == NU_SCHED_PNDM && !c->skip_prk_steps)
        return bad(label, "skip_prk_steps", "PNDM's Runge-Kutta warm-up (skip_prk_steps = false) is not supported");
    if ((s = get_str(o, "interpolation_type")) && strcmp(s, "linear") != 0)
        return bad(label, "interpolation_type", "only \"linear\" is supported");
    if ((s = get_str(o, "timestep_type")) && strcmp(s, "discrete") != 0)
        return bad(label, "timestep_type", "only \"discrete\" is supported");
    static const char *const unsupported_flags[] = {"use_lu_lambdas", "use_exponential_sigmas", "use_beta_sigmas",
                                                    "use_flow_sigmas", "use_dynamic_shifting"};
    for (size_t i = 0; i < sizeof unsupported_flags / sizeof unsupported_flags[0]; i++) {
        bool b = false;
        if ((st = get_bool(o, unsupported_flags[i], &b, label)) != NU_OK) return st;
        if (b) return bad(label, unsupported_flags[i], "not supported");
    }
    if (!is_null(nu_json_get(o, "solver_p"))) return bad(label, "solver_p", "a UniPC solver_p is not supported");
    if ((s = get_str(o, "variance_type"))) {
        if (strcmp(s, "fixed_small") == 0) c->variance_type = NU_DDPM_FIXED_SMALL;
        else if (strcmp(s, "fixed_small_log") == 0) c->variance_type = NU_DDPM_FIXED_SMALL_LOG;
        else if (strcmp(s, "fixed_large") == 0) c->variance_type = NU_DDPM_FIXED_LARGE;
        else return bad(label, "variance_type", "only fixed_small, fixed_small_log and fixed_large are supported");
    }
    if ((s = get_str(o, "algorithm_type"))) {
        if (strcmp(s, "dpmsolver++") == 0 || strcmp(s, "deis") == 0) c->algorithm_type = NU_DPM_SOLVER_PP;
        else if (strcmp(s, "dpmsolver") == 0) c->algorithm_type = NU_DPM_SOLVER;
        else if (strcmp(s, "sde-dpmsolver++") == 0) c->algorithm_type = NU_DPM_SDE_SOLVER_PP;
        else if (strcmp(s, "sde-dpmsolver") == 0) c->algorithm_type = NU_DPM_SDE_SOLVER;
        else return bad(label, "algorithm_type", "only dpmsolver++, dpmsolver, sde-dpmsolver++, sde-dpmsolver");
    }
    if ((s = get_str(o, "solver_type"))) {
        if (c->kind == NU_SCHED_UNIPC) {
            if (strcmp(s, "bh1") == 0) c->unipc_bh1 = true;
            else if (strcmp(s, "bh2") == 0 || strcmp(s, "midpoint") == 0 || strcmp(s, "heun") == 0 ||
                     strcmp(s, "logrho") == 0)
                c->unipc_bh1 = false; /* diffusers maps the DPM names to bh2 */
            else return bad(label, "solver_type", "UniPC solver_type must be bh1 or bh2");
        } else {
            if (strcmp(s, "heun") == 0) c->solver_type_heun = true;
            else if (strcmp(s, "midpoint") == 0 || strcmp(s, "logrho") == 0 || strcmp(s, "bh1") == 0 ||
                     strcmp(s, "bh2") == 0)
                c->solver_type_heun = false; /* diffusers maps the UniPC names to midpoint */
            else return bad(label, "solver_type", "solver_type must be midpoint or heun");
        }
    }
    if ((s = get_str(o, "final_sigmas_type"))) {
        if (strcmp(s, "zero") == 0) c->final_sigmas_zero = true;
        else if (strcmp(s, "sigma_min") == 0) c->final_sigmas_zero = false;
        else return bad(label, "final_sigmas_type", "must be zero or sigma_min");
    }
    const nu_json *dc = nu_json_get(o, "disable_corrector");
    if (!is_null(dc)) {
        if (dc->kind != NU_JSON_ARRAY || dc->n > 16)
            return nu_error(NU_ERR_FORMAT, "%s: disable_corrector must be an array of at most 16 step indices", label);
        c->n_disable_corrector = dc->n;
        for (int i = 0; i < dc->n; i++) {
            const nu_json *e = nu_json_at(dc, i);
            if (!e || e->kind != NU_JSON_NUMBER) return nu_error(NU_ERR_FORMAT, "%s: disable_corrector[%d] is not a number", label, i);
            c->disable_corrector[i] = (int)e->num;
        }
    }
    return NU_OK;
}

nu_status nu_sched_config_from_json(nu_sched_config *c, const char *json, size_t len, const char *label) {
    if (!label) label = "scheduler config";
    nu_json *root = nu_json_parse(json, len);
    if (!root) return nu_error(NU_ERR_FORMAT, "%s: %s", label, nu_last_error());
    nu_status st = nu_sched_config_from_json_obj(c, root, label);
    nu_json_free(root);
    return st;
}
