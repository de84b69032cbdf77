/*
 * objectives.c — training objectives of the generative models (nuance/gen_models.h): DDPM
 * eps-prediction (Ho et al. 2020, L_simple, eq. 14), v-prediction (Salimans & Ho 2022, sec. 4 and
 * appendix D: v = sqrt(ab) eps - sqrt(1 - ab) x0) and rectified flow matching (Liu et al. 2022;
 * SD3, Esser et al. 2024: x_t = (1 - t) x0 + t eps, target eps - x0, t uniform or logit-normal),
 * with label dropout for classifier-free guidance (Ho & Salimans 2022). Each builds the loss graph
 * of one micro-batch; nu_gen_loss_prepare draws the batch's timesteps, noise and dropout from the
 * trainer's nu_rng (torch-identical streams), so training is deterministic and a PyTorch script
 * with a torch.Generator of the same seed sees the same numbers.
 * Tested by tests/test_gen_models.c (loss and every gradient of one step, 20-step AdamW
 * trajectories, against scripts/fixtures_gen_models.py).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nuance/gen_models.h"
#include "nuance/io.h"

/* Prefixes the current error message with `label` (copied first: nu_error formats into the
 * buffer nu_last_error() points at). */
static nu_status relabel(nu_status st, const char *label) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", nu_last_error());
    return nu_error(st, "%s: %s", label, msg);
}

/* ================================================================ objective settings */

static const char *const KIND_NAMES[NU_OBJECTIVE_COUNT] = {"eps", "v", "flow"};
static const char *const FLOW_T_NAMES[NU_FLOW_T_COUNT] = {"uniform", "logit_normal"};

nu_objective nu_objective_init(nu_objective_kind kind) {
    nu_objective o;
    memset(&o, 0, sizeof o);
    o.kind = kind;
    o.beta_schedule = NU_BETA_LINEAR;
    o.num_train_timesteps = 1000;
    o.beta_start = 1e-4;
    o.beta_end = 0.02;
    o.flow_t = NU_FLOW_T_UNIFORM;
    o.logit_mean = 0.0;
    o.logit_std = 1.0;
    o.flow_t_scale = 1000.0;
    o.flow_shift = 1.0;
    o.label_dropout = 0.1;
    return o;
}

nu_status nu_objective_kind_from_name(const char *name, nu_objective_kind *out) {
    static const struct { const char *n; nu_objective_kind k; } alias[] = {
        {"eps", NU_OBJECTIVE_EPS},   {"epsilon", NU_OBJECTIVE_EPS},        {"ddpm", NU_OBJECTIVE_EPS},
        {"v", NU_OBJECTIVE_V},       {"v_prediction", NU_OBJECTIVE_V},    {"flow", NU_OBJECTIVE_FLOW},
        {"rectified_flow", NU_OBJECTIVE_FLOW}, {"flow_matching", NU_OBJECTIVE_FLOW}};
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
        if (name && strcasecmp(name, alias[i].n) == 0) {
            *out = alias[i].k;
            return NU_OK;
        }
    return nu_error(NU_ERR_INVALID_ARG, "unknown objective '%s' (eps, v, flow)", name ? name : "");
}

const char *nu_objective_kind_name(nu_objective_kind k) {
    return k >= 0 && k < NU_OBJECTIVE_COUNT ? KIND_NAMES[k] : "?";
}

nu_prediction nu_objective_prediction(const nu_objective *o) {
    return o->kind == NU_OBJECTIVE_V ? NU_PRED_V : o->kind == NU_OBJECTIVE_FLOW ? NU_PRED_FLOW : NU_PRED_EPS;
}

nu_status nu_objective_check(const nu_objective *o) {
    if (o->kind < 0 || o->kind >= NU_OBJECTIVE_COUNT)
        return nu_error(NU_ERR_INVALID_ARG, "objective: unknown kind %d", (int)o->kind);
    if (!(o->label_dropout >= 0 && o->label_dropout < 1))
        return nu_error(NU_ERR_INVALID_ARG, "objective: label_dropout %g outside [0, 1)", o->label_dropout);
    if (o->kind == NU_OBJECTIVE_FLOW) {
        if (o->flow_t < 0 || o->flow_t >= NU_FLOW_T_COUNT)
            return nu_error(NU_ERR_INVALID_ARG, "objective: unknown flow timestep distribution %d", (int)o->flow_t);
        if (!(o->logit_std > 0 && o->logit_std < 100) || !isfinite(o->logit_mean))
            return nu_error(NU_ERR_INVALID_ARG, "objective: logit-normal mean %g / std %g invalid", o->logit_mean,
                            o->logit_std);
        if (!(o->flow_t_scale > 0 && o->flow_t_scale < 1e6))
            return nu_error(NU_ERR_INVALID_ARG, "objective: flow_t_scale %g invalid", o->flow_t_scale);
        if (!(o->flow_shift > 0 && o->flow_shift < 1e3))
            return nu_error(NU_ERR_INVALID_ARG, "objective: flow_shift %g invalid", o->flow_shift);
        return NU_OK;
    }
    if (o->beta_schedule != NU_BETA_LINEAR && o->beta_schedule != NU_BETA_SQUAREDCOS_CAP_V2 &&
        o->beta_schedule != NU_BETA_SCALED_LINEAR)
        return nu_error(NU_ERR_INVALID_ARG, "objective: unknown beta schedule %d", (int)o->beta_schedule);
    if (o->num_train_timesteps < 2 || o->num_train_timesteps > 100000)
        return nu_error(NU_ERR_INVALID_ARG, "objective: num_train_timesteps %d outside [2, 100000]", o->num_train_timesteps);
    if (!(o->beta_start > 0 && o->beta_start < o->beta_end && o->beta_end < 1))
        return nu_error(NU_ERR_INVALID_ARG, "objective: betas %g..%g must satisfy 0 < start < end < 1", o->beta_start,
                        o->beta_end);
    return NU_OK;
}

nu_status nu_objective_from_json_obj(const nu_json *obj, const char *label, nu_objective *out) {
    if (!obj || obj->kind != NU_JSON_OBJECT) return nu_error(NU_ERR_FORMAT, "%s: objective is not a JSON object", label);
    nu_objective_kind k = NU_OBJECTIVE_EPS;
    const char *kn = nu_json_string(obj, "objective", "eps");
    if (nu_objective_kind_from_name(kn, &k) != NU_OK) return relabel(NU_ERR_FORMAT, label);
    nu_objective o = nu_objective_init(k);
    const char *bs = nu_json_string(obj, "beta_schedule", NULL);
    if (bs && nu_beta_schedule_from_name(bs, &o.beta_schedule) != NU_OK)
        return relabel(NU_ERR_FORMAT, label);
    o.num_train_timesteps = (int)nu_json_number(obj, "num_train_timesteps", o.num_train_timesteps);
    o.beta_start = nu_json_number(obj, "beta_start", o.beta_start);
    o.beta_end = nu_json_number(obj, "beta_end", o.beta_end);
    const char *ft = nu_json_string(obj, "flow_t", NULL);
    if (ft) {
        int i = 0;
        while (i < NU_FLOW_T_COUNT && strcasecmp(ft, FLOW_T_NAMES[i]) != 0) i++;
        if (i == NU_FLOW_T_COUNT)
            return nu_error(NU_ERR_FORMAT, "%s: flow_t '%s' (expected uniform or logit_normal)", label, ft);
        o.flow_t = (nu_flow_timesteps)i;
    }
    o.logit_mean = nu_json_number(obj, "logit_mean", o.logit_mean);
    o.logit_std = nu_json_number(obj, "logit_std", o.logit_std);
    o.flow_t_scale = nu_json_number(obj, "flow_t_scale", o.flow_t_scale);
    o.flow_shift = nu_json_number(obj, "flow_shift", o.flow_shift);
    o.label_dropout = nu_json_number(obj, "label_dropout", o.label_dropout);
    if (nu_objective_check(&o) != NU_OK) return relabel(NU_ERR_FORMAT, label);
    *out = o;
    return NU_OK;
}

char *nu_objective_to_json(const nu_objective *o) {
    char *s = malloc(512);
    if (!s) return NULL;
    snprintf(s, 512,
             "{\"objective\": \"%s\", \"beta_schedule\": \"%s\", \"num_train_timesteps\": %d, \"beta_start\": %.17g, "
             "\"beta_end\": %.17g, \"flow_t\": \"%s\", \"logit_mean\": %.17g, \"logit_std\": %.17g, "
             "\"flow_t_scale\": %.17g, \"flow_shift\": %.17g, \"label_dropout\": %.17g}",
             nu_objective_kind_name(o->kind), nu_beta_schedule_name(o->beta_schedule), o->num_train_timesteps,
             o->beta_start, o->beta_end, FLOW_T_NAMES[o->flow_t < NU_FLOW_T_COUNT ? o->flow_t : 0], o->logit_mean,
             o->logit_std, o->flow_t_scale, o->flow_shift, o->label_dropout);
    return s;
}

/* ================================================================ loss graph */

struct nu_gen_loss {
    nu_gen_model *m;
    nu_objective o;
    int B, C, H, W, num_classes;
    nu_tensor *x_t, *t, *y, *target, *pred, *loss;
    float *sqrt_ab, *sqrt_1m_ab; /* [T] float32: alphas_cumprod ** 0.5, (1 - alphas_cumprod) ** 0.5 */
    float *noise;                /* [B*C*H*W] scratch                                            */
    float *u;                    /* [B] scratch                                                  */
    int64_t *ts;                 /* [B] scratch                                                  */
};

void nu_gen_loss_free(nu_gen_loss *L) {
    if (!L) return;
    free(L->sqrt_ab);
    free(L->sqrt_1m_ab);
    free(L->noise);
    free(L->u);
    free(L->ts);
    free(L);
}

nu_status nu_gen_loss_new(nu_gen_model *m, const nu_objective *o, nu_ctx *ctx, int batch, nu_gen_loss **out) {
    *out = NULL;
    nu_status st = nu_objective_check(o);
    if (st != NU_OK) return st;
    if (batch < 1 || batch > 1 << 20) return nu_error(NU_ERR_INVALID_ARG, "objective: batch size %d invalid", batch);
    const nu_gen_config *c = nu_gen_model_config(m);
    nu_gen_loss *L = calloc(1, sizeof *L);
    if (!L) return nu_error(NU_ERR_NOMEM, "objective: out of memory");
    L->m = m, L->o = *o, L->B = batch, L->C = c->in_channels, L->H = L->W = c->sample_size;
    L->num_classes = c->num_classes;
    int64_t n = (int64_t)batch * L->C * L->H * L->W;
    L->noise = malloc(sizeof(float) * (size_t)n);
    L->u = malloc(sizeof(float) * (size_t)batch);
    L->ts = malloc(sizeof(int64_t) * (size_t)batch);
    if (!L->noise || !L->u || !L->ts) {
        nu_gen_loss_free(L);
        return nu_error(NU_ERR_NOMEM, "objective: out of memory for a batch of %d", batch);
    }
    if (o->kind != NU_OBJECTIVE_FLOW) {
        int T = o->num_train_timesteps;
        float *betas = malloc(sizeof(float) * (size_t)T), *ac = malloc(sizeof(float) * (size_t)T);
        L->sqrt_ab = malloc(sizeof(float) * (size_t)T);
        L->sqrt_1m_ab = malloc(sizeof(float) * (size_t)T);
        if (!betas || !ac || !L->sqrt_ab || !L->sqrt_1m_ab) st = nu_error(NU_ERR_NOMEM, "objective: out of memory");
        /* DDPMScheduler: float32 betas, alphas_cumprod = torch.cumprod(1 - betas) */
        if (st == NU_OK) st = nu_betas_f32(o->beta_schedule, T, o->beta_start, o->beta_end, betas);
        if (st == NU_OK) {
            nu_alphas_cumprod_f32(betas, T, ac);
            for (int i = 0; i < T; i++) {
                L->sqrt_ab[i] = sqrtf(ac[i]);
                L->sqrt_1m_ab[i] = sqrtf(1.0f - ac[i]);
            }
        }
        free(betas);
        free(ac);
        if (st != NU_OK) {
            nu_gen_loss_free(L);
            return st;
        }
    }
    L->x_t = nu_new_tensor_4d(ctx, NU_TYPE_F32, batch, L->C, L->H, L->W);
    nu_set_input(L->x_t);
    nu_set_name(L->x_t, "x_t");
    L->t = nu_new_tensor_1d(ctx, NU_TYPE_F32, batch);
    nu_set_input(L->t);
    nu_set_name(L->t, "t");
    if (L->num_classes > 0) {
        L->y = nu_new_tensor_1d(ctx, NU_TYPE_I64, batch);
        nu_set_input(L->y);
        nu_set_name(L->y, "y");
    }
    L->target = nu_new_tensor_4d(ctx, NU_TYPE_F32, batch, L->C, L->H, L->W);
    nu_set_input(L->target);
    nu_set_name(L->target, "target");
    L->pred = nu_gen_model_forward(m, ctx, L->x_t, L->t, L->y);
    nu_tensor *p = L->pred;
    if (p->ne[1] != L->C) p = nu_contiguous(ctx, nu_slice(ctx, p, 1, 0, L->C)); /* learned-sigma channels unused */
    L->loss = nu_mse_loss(ctx, p, L->target);
    nu_set_name(L->loss, "loss");
    *out = L;
    return NU_OK;
}

nu_tensor *nu_gen_loss_tensor(nu_gen_loss *L) { return L->loss; }
nu_tensor *nu_gen_loss_pred(nu_gen_loss *L) { return L->pred; }

nu_tensor *nu_gen_loss_input(nu_gen_loss *L, const char *name) {
    if (!strcmp(name, "x_t")) return L->x_t;
    if (!strcmp(name, "t")) return L->t;
    if (!strcmp(name, "y")) return L->y;
    if (!strcmp(name, "target")) return L->target;
    return NULL;
}

nu_status nu_gen_loss_prepare(nu_gen_loss *L, nu_rng *rng, const float *images, const int64_t *labels) {
    if (!L->x_t->data || !L->t->data || !L->target->data || (L->y && !L->y->data))
        return nu_error(NU_ERR_INVALID_ARG, "objective: the loss graph's inputs have no memory yet (call nu_graph_alloc first)");
    const int B = L->B;
    const int64_t per = (int64_t)L->C * L->H * L->W;
    if (L->y && labels)
        for (int b = 0; b < B; b++)
            if (labels[b] < 0 || labels[b] >= L->num_classes)
                return nu_error(NU_ERR_INVALID_ARG, "objective: label %lld of sample %d outside [0, %d)",
                                (long long)labels[b], b, L->num_classes);
    float *xt = L->x_t->data, *tgt = L->target->data, *tn = L->t->data, *e = L->noise;
    const nu_objective *o = &L->o;
    /* 1. timesteps */
    if (o->kind == NU_OBJECTIVE_FLOW) {
        if (o->flow_t == NU_FLOW_T_UNIFORM) {
            nu_rng_rand_f32(rng, L->u, B); /* torch.rand(B) */
        } else {                           /* torch.sigmoid(torch.randn(B) * std + mean) */
            nu_rng_randn_f32(rng, L->u, B);
            for (int b = 0; b < B; b++) {
                float v = L->u[b] * (float)o->logit_std + (float)o->logit_mean;
                L->u[b] = 1.0f / (1.0f + expf(-v));
            }
        }
    } else {
        nu_status st = nu_rng_randint_i64(rng, 0, o->num_train_timesteps, L->ts, B); /* torch.randint(0, T, (B,)) */
        if (st != NU_OK) return st;
    }
    /* 2. noise: torch.randn(B, C, H, W) */
    nu_rng_randn_f32(rng, e, B * per);
    /* 3. x_t, target, network timestep (float32 arithmetic as the torch reference) */
    for (int b = 0; b < B; b++) {
        const float *x0 = images + b * per, *eb = e + b * per;
        float *xo = xt + b * per, *to = tgt + b * per;
        if (o->kind == NU_OBJECTIVE_FLOW) {
            float t = L->u[b], omt = 1.0f - t;
            for (int64_t i = 0; i < per; i++) {
                float a = omt * x0[i], n = t * eb[i];
                xo[i] = a + n;
                to[i] = eb[i] - x0[i];
            }
            tn[b] = t * (float)o->flow_t_scale;
        } else {
            float sa = L->sqrt_ab[L->ts[b]], sb = L->sqrt_1m_ab[L->ts[b]];
            for (int64_t i = 0; i < per; i++) {
                float a = sa * x0[i], n = sb * eb[i];
                xo[i] = a + n; /* add_noise */
                if (o->kind == NU_OBJECTIVE_EPS) {
                    to[i] = eb[i];
                } else { /* get_velocity: sqrt(ab) * noise - sqrt(1 - ab) * sample */
                    float vp = sa * eb[i], vq = sb * x0[i];
                    to[i] = vp - vq;
                }
            }
            tn[b] = (float)L->ts[b];
        }
    }
    /* 4. labels with CFG dropout: torch.rand(B) < p -> null label */
    if (L->y) {
        int64_t *y = L->y->data;
        for (int b = 0; b < B; b++) y[b] = labels ? labels[b] : L->num_classes;
        if (o->label_dropout > 0) {
            nu_rng_rand_f32(rng, L->u, B);
            float p = (float)o->label_dropout;
            for (int b = 0; b < B; b++)
                if (L->u[b] < p) y[b] = L->num_classes;
        }
    }
    return NU_OK;
}
