/*
 * test_gen_models.c — the trainable generative models (src/models/gen_model.c, pixel_unet.c,
 * dit.c), their objectives (src/train/objectives.c) and sampling glue (src/train/gen_sample.c):
 *   - PyTorch equivalence (tests/fixtures/gen_models.safetensors from
 *     scripts/fixtures_gen_models.py): for a tiny UNet (eps, linear betas, label dropout) and a tiny
 *     DiT (flow matching, learned-sigma output): the objective's inputs drawn from the trainer RNG,
 *     the loss and EVERY parameter gradient of one step, and a 20-step AdamW trajectory (clipping
 *     at 1.0 active on the first steps) through the trainer of nuance/train.h; v-prediction with
 *     cosine betas and logit-normal flow timesteps: inputs and loss;
 *   - the DiT against ../shared/reference/dit_tiny (diffusers Transformer2DModel loaded from its
 *     folder): forward passes, one CFG evaluation, and DiTPipeline runs (DDIM 8 steps, DDPM 12
 *     steps, guidance 4 and 1) step by step, plus the VAE-decoded image of one run;
 *   - k-diffusion sampling glue: determinism, ddim(eta 0) == euler, guidance 1 == no CFG, flow
 *     models refuse stochastic samplers;
 *   - initialisation (adaLN-Zero zeros, PyTorch bounds, seeds), configs (JSON round trip,
 *     diffusers config.json, named errors), weight loading errors and save/load round trips.
 *
 * Tolerances (each measured value is printed):
 *   - objective inputs (x_t, t, target): the same float32 operations as torch on bit-identical
 *     random streams: 1e-6 absolute (an FMA contraction in a -march=native build may move a value
 *     by an ulp); logit-normal t also goes through torch's vectorised sigmoid: same bound.
 *   - one-step loss: 1e-5 relative. f32 forward through ~100 ops whose kernels sum in other
 *     orders than torch (GEMM blocking, Winograd/im2col convolutions, tiled attention); measured
 *     bitwise equal on this machine, ~1e-6 expected in general.
 *   - gradients, per tensor: |got - want| <= 1e-4 max|want of the tensor| + 1e-6 max|want of the
 *     model| + 1e-4 |want|. Backward repeats the forward's rounding and sums over batch and
 *     positions: measured <= 4e-6 of the tensor's scale except the DiT timestep MLP's first
 *     weight (1.7e-5): its input sin/cos(t * freq) has arguments up to 1000, where one ulp of the
 *     argument (6e-5) separates libm from torch's vectorised exp/sin (test_op_spatial_misc allows
 *     2e-4 on the embedding itself). The model-scale term covers
 *     gradients that are mathematically zero and therefore pure round-off in both
 *     implementations (to_k biases: softmax is shift invariant; biases right before a one-channel
 *     GroupNorm group); measured 8e-7 of the model's largest gradient.
 *   - 20-step AdamW trajectories (trainer of nuance/train.h, clipping at 1.0 active on the first
 *     steps): 1e-4 relative on every loss (the bar) and on every pre-clipping gradient
 *     norm; measured ~1e-7 and ~9e-7.
 *   - dit_tiny forward: 1e-5 absolute on outputs of magnitude ~1-4 (measured 7e-7; the
 *     reference's own f32 vs f64 spread is 4.4e-7). CFG guided eps (x4 guidance magnifies
 *     differences up to 9x): 3e-5 (measured 2.4e-6).
 *   - DiTPipeline latents: per step max|err| <= 1e-5 max|latent of that step|. The tiny random
 *     DiT lets latents grow to |x| ~ 500 over 8-12 steps (1/sqrt(alpha) factors), and attention
 *     mixes every position, so the error scales with the tensor, not with each value (measured
 *     <= 7.5e-7 of the scale). Decoded image (values in [0, 1]): 3e-5 (measured 2.3e-6).
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nu_test.h"
#include "nuance/gen_models.h"
#include "nuance/io.h"
#include "nuance/train.h"
#include "nuance/vae.h"

static nu_st_file *fx;
static nu_ctx *fctx; /* fixture tensors */

static nu_tensor *fxt(const char *fmt, const char *a) {
    char key[192];
    snprintf(key, sizeof key, fmt, a);
    nu_tensor *t = NULL;
    const nu_st_info *in = nu_st_find(fx, key);
    nu_status st = in && (in->type == NU_TYPE_I64) ? nu_st_get(fx, fctx, key, &t) : nu_st_get_f32(fx, fctx, key, &t);
    if (st != NU_OK) {
        fprintf(stderr, "fixture %s: %s\n", key, nu_last_error());
        exit(1);
    }
    return t;
}

/* ---------------------------------------------------------------- the tiny configurations */

static nu_gen_config tiny_unet(void) {
    nu_gen_config c = nu_gen_config_init(NU_GEN_ARCH_UNET);
    c.in_channels = 1, c.sample_size = 8, c.num_classes = 3;
    c.n_levels = 2, c.block_out_channels[0] = 4, c.block_out_channels[1] = 8;
    c.attn_levels[0] = false, c.attn_levels[1] = true, c.mid_attention = true;
    c.layers_per_block = 1, c.norm_num_groups = 4, c.attention_head_dim = 4;
    return c;
}

static nu_gen_config tiny_dit(void) {
    nu_gen_config c = nu_gen_config_init(NU_GEN_ARCH_DIT);
    c.in_channels = 2, c.out_channels = 4, c.sample_size = 8, c.num_classes = 3;
    c.patch_size = 2, c.num_layers = 2, c.num_attention_heads = 2, c.attention_head_dim = 8, c.ff_mult = 4;
    return c;
}

/* A model of the fixture's architecture `key` with the fixture's initial values. Also checks
 * that the model's parameter set equals the PyTorch state_dict (names and count). */
static nu_gen_model *fixture_model(const char *key) {
    nu_gen_config c = strcmp(key, "unet") == 0 ? tiny_unet() : tiny_dit();
    nu_gen_model *m = NULL;
    NU_CHECK(nu_gen_model_new(&c, 7, &m) == NU_OK);
    if (!m) exit(1);
    char pre[64];
    snprintf(pre, sizeof pre, "%s.init.", key);
    int n_fx = 0;
    for (int i = 0; i < nu_st_count(fx); i++)
        if (strncmp(nu_st_at(fx, i)->name, pre, strlen(pre)) == 0) n_fx++;
    NU_CHECK_MSG(n_fx == nu_gen_model_n_tensors(m), "%s: model has %d parameter tensors, PyTorch state_dict %d", key,
                 nu_gen_model_n_tensors(m), n_fx);
    for (int i = 0; i < nu_gen_model_n_tensors(m); i++) {
        nu_tensor *p = nu_gen_model_tensor(m, i);
        char k2[192];
        snprintf(k2, sizeof k2, "%s%s", pre, p->name);
        if (!nu_st_find(fx, k2)) {
            NU_CHECK_MSG(0, "%s: parameter %s not in the PyTorch state_dict", key, p->name);
            continue;
        }
        nu_tensor *v = fxt("%s", k2);
        NU_CHECK_MSG(nu_nelements(v) == nu_nelements(p), "%s: %s size", key, p->name);
        if (nu_nelements(v) == nu_nelements(p)) memcpy(p->data, v->data, nu_nbytes(p));
    }
    return m;
}

typedef struct objcase {
    const char *name, *model;
    nu_objective obj;
    uint64_t seed;
    bool full;
} objcase;

static objcase make_case(int i) {
    objcase c = {0};
    switch (i) {
    case 0:
        c = (objcase){"unet_eps", "unet", nu_objective_init(NU_OBJECTIVE_EPS), 301, true};
        c.obj.label_dropout = 0.5;
        break;
    case 1:
        c = (objcase){"dit_flow", "dit", nu_objective_init(NU_OBJECTIVE_FLOW), 302, true};
        c.obj.label_dropout = 0.25;
        break;
    case 2:
        c = (objcase){"unet_v_cos", "unet", nu_objective_init(NU_OBJECTIVE_V), 303, false};
        c.obj.beta_schedule = NU_BETA_SQUAREDCOS_CAP_V2;
        c.obj.label_dropout = 0;
        break;
    default:
        c = (objcase){"dit_flow_ln", "dit", nu_objective_init(NU_OBJECTIVE_FLOW), 304, false};
        c.obj.flow_t = NU_FLOW_T_LOGIT_NORMAL, c.obj.logit_mean = 0.5, c.obj.logit_std = 0.8;
        c.obj.label_dropout = 0;
        break;
    }
    return c;
}

/* Loss graph + trainer over a fixture model. */
typedef struct rig {
    nu_gen_model *m;
    nu_ctx *ctx;
    nu_gen_loss *L;
    nu_graph *g;
    nu_pool *pool;
    nu_trainer *tr;
} rig;

static void rig_new(rig *r, const objcase *c, int threads) {
    memset(r, 0, sizeof *r);
    r->m = fixture_model(c->model);
    r->ctx = nu_ctx_new(NULL);
    nu_ctx_set_alloc_data(r->ctx, false);
    NU_CHECK(nu_gen_loss_new(r->m, &c->obj, r->ctx, 4, &r->L) == NU_OK);
    nu_tensor *loss = nu_gen_loss_tensor(r->L);
    r->g = nu_graph_new(r->ctx);
    nu_graph_expand(r->g, loss);
    nu_graph_backward(r->g, loss);
    r->pool = nu_pool_new(threads);
    nu_train_params tp = nu_train_params_init();
    tp.lr = 2e-3, tp.beta1 = 0.9, tp.beta2 = 0.999, tp.eps = 1e-8, tp.weight_decay = 0.01;
    tp.schedule = NU_LR_SCHEDULE_CONSTANT, tp.warmup_steps = 0, tp.clip_norm = 1.0, tp.seed = c->seed;
    NU_CHECK(nu_trainer_new(r->g, loss, r->pool, &tp, &r->tr) == NU_OK);
    NU_CHECK(nu_graph_alloc(r->g) == NU_OK);
}

static void rig_free(rig *r) {
    nu_trainer_free(r->tr);
    nu_graph_free(r->g);
    nu_gen_loss_free(r->L);
    nu_pool_free(r->pool);
    nu_ctx_free(r->ctx);
    nu_gen_model_free(r->m);
}

static nu_status rig_prepare(rig *r, const objcase *c) {
    nu_tensor *x0 = fxt("%s.x0", c->model), *lab = fxt("%s.labels", c->model);
    return nu_gen_loss_prepare(r->L, nu_trainer_rng(r->tr), x0->data, lab->data);
}

static void cmp_input(const objcase *c, rig *r, const char *what) {
    nu_tensor *in = nu_gen_loss_input(r->L, what);
    char key[96];
    snprintf(key, sizeof key, "%s.%s", c->name, what);
    nu_tensor *want = fxt("%s", key);
    if (in->type == NU_TYPE_I64) {
        NU_CHECK_MSG(memcmp(in->data, want->data, nu_nbytes(in)) == 0, "%s: labels after dropout differ", key);
        return;
    }
    nu_test_close(key, in->data, want->data, nu_nelements(in), 1e-6, 0);
}

static void test_torch_step(int ci) {
    objcase c = make_case(ci);
    rig r;
    rig_new(&r, &c, 2);
    NU_CHECK(rig_prepare(&r, &c) == NU_OK);
    cmp_input(&c, &r, "x_t");
    cmp_input(&c, &r, "t");
    cmp_input(&c, &r, "y");
    cmp_input(&c, &r, "target");
    float loss = 0;
    NU_CHECK(nu_trainer_forward_backward(r.tr, &loss) == NU_OK);
    float want = ((float *)fxt("%s.loss", c.name)->data)[0];
    double rel = fabs(loss - want) / fabs(want);
    NU_CHECK_MSG(rel < 1e-5, "%s: loss %.8g vs PyTorch %.8g (rel %.2e)", c.name, loss, want, rel);
    double worst = 0, worst_abs = 0, gscale = 0;
    int n_checked = 0;
    if (c.full) {
        nu_params *P = nu_trainer_params(r.tr);
        const float *grads = nu_trainer_grads(r.tr);
        int nt = nu_gen_model_n_tensors(r.m);
        /* pass 0: the largest gradient of the whole model; pass 1: compare */
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < nt; i++) {
                nu_tensor *p = nu_gen_model_tensor(r.m, i);
                char key[192];
                snprintf(key, sizeof key, "%s.grad.%s", c.name, p->name);
                nu_tensor *gw = fxt("%s", key);
                const float *w = gw->data;
                int64_t n = nu_nelements(p);
                double scale = 0, err = 0;
                for (int64_t j = 0; j < n; j++) scale = fmax(scale, fabs(w[j]));
                if (pass == 0) {
                    gscale = fmax(gscale, scale);
                    continue;
                }
                int k = nu_params_find(P, p->name);
                NU_CHECK_MSG(k >= 0 && k < nu_params_n_trainable_tensors(P), "%s: %s has no gradient", c.name, p->name);
                if (k < 0) continue;
                const float *g = grads + nu_params_offset(P, k);
                for (int64_t j = 0; j < n; j++) err = fmax(err, fabs(g[j] - w[j]));
                worst_abs = fmax(worst_abs, err / gscale);
                if (scale > 1e-4 * gscale) worst = fmax(worst, err / scale);
                nu_test_close(key, g, w, n, 1e-4 * scale + 1e-6 * gscale, 1e-4);
                n_checked++;
            }
    }
    printf("  %s: loss %.7f vs PyTorch rel err %.2e", c.name, loss, rel);
    if (c.full)
        printf("; %d gradients: worst max|err| / max|grad| per tensor %.2e (tensors with max|grad| > 1e-4 of the "
               "model's), over the model's max|grad| %.2e",
               n_checked, worst, worst_abs);
    printf("\n");
    rig_free(&r);
}

static void test_torch_trajectory(int ci) {
    objcase c = make_case(ci);
    rig r;
    rig_new(&r, &c, 2);
    const float *wl = fxt("%s.traj.loss", c.name)->data, *wn = fxt("%s.traj.gnorm", c.name)->data;
    float gl[20], gn[20];
    int clipped = 0;
    for (int s = 0; s < 20; s++) {
        NU_CHECK(rig_prepare(&r, &c) == NU_OK);
        float l;
        NU_CHECK(nu_trainer_forward_backward(r.tr, &l) == NU_OK);
        nu_step_info info;
        NU_CHECK(nu_trainer_step(r.tr, &info) == NU_OK);
        gl[s] = info.loss, gn[s] = info.grad_norm;
        clipped += info.clip_coef < 1.0f;
    }
    char key[96];
    snprintf(key, sizeof key, "%s 20-step AdamW losses", c.name);
    nu_test_close(key, gl, wl, 20, 0, 1e-4);
    snprintf(key, sizeof key, "%s 20-step grad norms", c.name);
    nu_test_close(key, gn, wn, 20, 0, 1e-4);
    NU_CHECK_MSG(clipped >= 1, "%s: clipping never active", c.name);
    double dl = 0, dn = 0;
    for (int s = 0; s < 20; s++) {
        dl = fmax(dl, fabs(gl[s] - wl[s]) / fabs(wl[s]));
        dn = fmax(dn, fabs(gn[s] - wn[s]) / fabs(wn[s]));
    }
    printf("  %s: 20-step AdamW trajectory %.4f -> %.4f, max rel err loss %.2e, grad norm %.2e (%d steps clipped)\n",
           c.name, gl[0], gl[19], dl, dn, clipped);
    rig_free(&r);
}


/* ---------------------------------------------------------------- initialisation */

static void test_init(void) {
    /* DiT: adaLN-Zero modulations and the output layer start at zero, embeddings ~ N(0, 0.02) */
    nu_gen_config c = tiny_dit();
    nu_gen_model *a = NULL, *b = NULL, *d = NULL;
    NU_CHECK(nu_gen_model_new(&c, 11, &a) == NU_OK && nu_gen_model_new(&c, 11, &b) == NU_OK &&
             nu_gen_model_new(&c, 12, &d) == NU_OK);
    if (!a || !b || !d) return;
    int zeros = 0, same = 1, differ = 0;
    for (int i = 0; i < nu_gen_model_n_tensors(a); i++) {
        nu_tensor *t = nu_gen_model_tensor(a, i), *u = nu_gen_model_tensor(b, i), *v = nu_gen_model_tensor(d, i);
        int64_t n = nu_nelements(t);
        const float *x = t->data;
        double mx = 0, ss = 0;
        for (int64_t j = 0; j < n; j++) mx = fmax(mx, fabs(x[j])), ss += (double)x[j] * x[j];
        same &= memcmp(t->data, u->data, nu_nbytes(t)) == 0;
        differ |= memcmp(t->data, v->data, nu_nbytes(t)) != 0;
        bool zero_init = strstr(t->name, "norm1.linear") || strstr(t->name, "proj_out") ||
                         (strstr(t->name, ".bias") && !strstr(t->name, "nothing"));
        if (zero_init) {
            NU_CHECK_MSG(mx == 0, "dit init: %s should start at zero (max %g)", t->name, mx);
            zeros++;
        } else if (strstr(t->name, "embedding_table") || strstr(t->name, "timestep_embedder")) {
            double sd = sqrt(ss / n);
            NU_CHECK_MSG(sd > 0.012 && sd < 0.03, "dit init: %s std %g, expected ~0.02", t->name, sd);
        } else if (t->ndim >= 2) { /* xavier_uniform: |w| <= sqrt(6 / (fan_in + fan_out)) */
            int64_t fo = t->ne[0], fi = n / t->ne[0];
            double bound = sqrt(6.0 / (double)(fi + fo));
            NU_CHECK_MSG(mx <= bound && mx > 0.5 * bound, "dit init: %s max %g, xavier bound %g", t->name, mx, bound);
        }
    }
    NU_CHECK_MSG(same, "dit init: the same seed gave different values");
    NU_CHECK_MSG(differ, "dit init: another seed gave the same values");
    NU_CHECK(zeros > 10);
    long long n_dit = (long long)nu_gen_model_n_params(a);
    nu_gen_model_free(a);
    nu_gen_model_free(b);
    nu_gen_model_free(d);
    /* UNet: PyTorch defaults, U(+-1/sqrt(fan_in)) for weights and biases, GroupNorm 1 / 0 */
    c = tiny_unet();
    NU_CHECK(nu_gen_model_new(&c, 5, &a) == NU_OK);
    if (!a) return;
    for (int i = 0; i < nu_gen_model_n_tensors(a); i++) {
        nu_tensor *t = nu_gen_model_tensor(a, i);
        const float *x = t->data;
        int64_t n = nu_nelements(t);
        double mx = 0;
        for (int64_t j = 0; j < n; j++) mx = fmax(mx, fabs(x[j]));
        if (strstr(t->name, "norm") && t->ndim == 1) {
            bool w = strstr(t->name, ".weight") != NULL;
            for (int64_t j = 0; j < n; j++) NU_CHECK_MSG(x[j] == (w ? 1.0f : 0.0f), "unet init: %s", t->name);
        } else if (t->ndim >= 2 && strcmp(t->name, "class_embedding.weight") != 0) {
            double bound = 1.0 / sqrt((double)(n / t->ne[0]));
            NU_CHECK_MSG(mx <= bound && mx > 0.3 * bound, "unet init: %s max %g, bound %g", t->name, mx, bound);
        }
    }
    printf("  init: tiny UNet %lld parameters, tiny DiT %lld; DiT adaLN-Zero tensors zero, bounds and seeds ok\n",
           (long long)nu_gen_model_n_params(a), n_dit);
    nu_gen_model_free(a);
}

/* ---------------------------------------------------------------- configs, files, errors */

static void test_configs_and_files(void) {
    /* JSON round trip of both architectures */
    nu_gen_config cs[2] = {tiny_unet(), tiny_dit()};
    for (int i = 0; i < 2; i++) {
        char *j = nu_gen_config_to_json(&cs[i]);
        nu_gen_config back;
        NU_CHECK_MSG(nu_gen_config_from_json(j, strlen(j), "rt", &back) == NU_OK, "%s", nu_last_error());
        char *j2 = nu_gen_config_to_json(&back);
        NU_CHECK_MSG(strcmp(j, j2) == 0, "config round trip:\n%s\n%s", j, j2);
        free(j);
        free(j2);
    }
    /* a diffusers UNet2DModel config.json */
    const char *ud = "{\"_class_name\": \"UNet2DModel\", \"sample_size\": 32, \"in_channels\": 1, \"out_channels\": 1,"
                     " \"block_out_channels\": [32, 64, 64], \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\","
                     " \"AttnDownBlock2D\"], \"up_block_types\": [\"AttnUpBlock2D\", \"AttnUpBlock2D\", \"UpBlock2D\"],"
                     " \"layers_per_block\": 2, \"norm_num_groups\": 8, \"num_class_embeds\": 11,"
                     " \"attention_head_dim\": 8, \"class_embed_type\": null}";
    nu_gen_config u;
    NU_CHECK_MSG(nu_gen_config_from_json(ud, strlen(ud), "config.json", &u) == NU_OK, "%s", nu_last_error());
    nu_gen_config def = nu_gen_config_init(NU_GEN_ARCH_UNET);
    def.out_channels = 1;
    char *a = nu_gen_config_to_json(&u), *b = nu_gen_config_to_json(&def);
    NU_CHECK_MSG(strcmp(a, b) == 0, "UNet2DModel config:\n%s\n%s", a, b);
    free(a);
    free(b);
    /* named errors */
    struct { const char *json, *needle; } bad[] = {
        {"{\"arch\": \"unet\", \"block_out_channels\": [30, 60]}", "norm_num_groups 8 does not divide"},
        {"{\"arch\": \"dit\", \"sample_size\": 9}", "not divisible by patch_size"},
        {"{\"arch\": \"gan\"}", "unknown model architecture"},
        {"{\"_class_name\": \"UNet2DModel\", \"time_embedding_type\": \"fourier\"}", "time_embedding_type"},
        {"{\"_class_name\": \"Transformer2DModel\", \"norm_type\": \"ada_norm_single\", \"patch_size\": 2}", "norm_type"},
        {"{\"arch\": \"unet\", \"layers_per_block\": 1.5}", "layers_per_block"},
        {"[1, 2]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nu_gen_config c;
        nu_status st = nu_gen_config_from_json(bad[i].json, strlen(bad[i].json), "cfg.json", &c);
        NU_CHECK_MSG(st != NU_OK && strstr(nu_last_error(), bad[i].needle) && strstr(nu_last_error(), "cfg.json"),
                     "bad config %zu: status %d, message '%s' (want '%s')", i, (int)st, nu_last_error(), bad[i].needle);
    }
    nu_objective o = nu_objective_init(NU_OBJECTIVE_FLOW), o2;
    o.flow_t = NU_FLOW_T_LOGIT_NORMAL, o.logit_std = 0.7, o.label_dropout = 0.2;
    char *oj = nu_objective_to_json(&o);
    nu_json *jo = nu_json_parse(oj, strlen(oj));
    NU_CHECK(jo && nu_objective_from_json_obj(jo, "obj", &o2) == NU_OK && memcmp(&o, &o2, sizeof o) == 0);
    nu_json_free(jo);
    free(oj);

    /* save (f32 and f16) -> load gives the same network */
    char dir[] = "/tmp/nu_gen_models_XXXXXX";
    NU_CHECK(mkdtemp(dir) != NULL);
    char p32[128], p16[128], pbad[128], pck[128];
    snprintf(p32, sizeof p32, "%s/m32.safetensors", dir);
    snprintf(p16, sizeof p16, "%s/m16.safetensors", dir);
    snprintf(pbad, sizeof pbad, "%s/bad.safetensors", dir);
    snprintf(pck, sizeof pck, "%s/ckpt.safetensors", dir);
    nu_gen_config c = tiny_unet();
    nu_gen_model *m = NULL, *l32 = NULL, *l16 = NULL;
    NU_CHECK(nu_gen_model_new(&c, 3, &m) == NU_OK);
    if (!m) return;
    const char *mk[1] = {"classes"}, *mv[1] = {"[\"a\", \"b\", \"c\"]"};
    NU_CHECK(nu_gen_model_save(m, p32, NU_TYPE_F32, mk, mv, 1) == NU_OK);
    NU_CHECK(nu_gen_model_save(m, p16, NU_TYPE_F16, NULL, NULL, 0) == NU_OK);
    NU_CHECK_MSG(nu_gen_model_load(p32, true, &l32) == NU_OK, "%s", nu_last_error());
    NU_CHECK_MSG(nu_gen_model_load(p16, false, &l16) == NU_OK, "%s", nu_last_error());
    if (l32 && l16) {
        bool eq = true, close = true;
        for (int i = 0; i < nu_gen_model_n_tensors(m); i++) {
            nu_tensor *t = nu_gen_model_tensor(m, i), *u32 = nu_gen_model_find(l32, t->name), *u16 = nu_gen_model_find(l16, t->name);
            if (!u32 || !u16) {
                eq = close = false;
                continue;
            }
            eq &= memcmp(t->data, u32->data, nu_nbytes(t)) == 0;
            for (int64_t j = 0; j < nu_nelements(t); j++) {
                float x = ((float *)t->data)[j], y = ((float *)u16->data)[j];
                close &= fabs(x - y) <= fabs(x) * 4.9e-4 + 6e-8; /* f16: 11-bit mantissa, subnormals */
            }
        }
        NU_CHECK_MSG(eq, "f32 save/load changed values");
        NU_CHECK_MSG(close, "f16 save/load: values beyond f16 rounding");
    }
    nu_gen_model_free(l32);
    nu_gen_model_free(l16);

    /* loading errors name the file and tensor and change nothing */
    nu_gen_config cd = tiny_dit();
    nu_gen_model *dm = NULL;
    NU_CHECK(nu_gen_model_new(&cd, 1, &dm) == NU_OK);
    if (dm) {
        nu_status st = nu_gen_model_load_weights(dm, p32, false);
        NU_CHECK_MSG(st == NU_ERR_NOT_FOUND && strstr(nu_last_error(), "m32.safetensors") &&
                         strstr(nu_last_error(), "pos_embed.proj.weight"),
                     "UNet file into a DiT: %s", nu_last_error());
        nu_gen_model_free(dm);
    }
    nu_gen_config c2 = c;
    c2.block_out_channels[1] = 16;
    nu_gen_model *m2 = NULL;
    NU_CHECK(nu_gen_model_new(&c2, 3, &m2) == NU_OK);
    if (m2) {
        nu_tensor *w0 = nu_gen_model_find(m2, "conv_in.weight");
        float keep = ((float *)w0->data)[0];
        nu_status st = nu_gen_model_load_weights(m2, p32, false);
        NU_CHECK_MSG(st == NU_ERR_FORMAT && strstr(nu_last_error(), "shape"), "shape mismatch: %s", nu_last_error());
        NU_CHECK_MSG(((float *)w0->data)[0] == keep, "a failed load changed the parameters");
        nu_gen_model_free(m2);
    }
    FILE *f = fopen(pbad, "wb");
    if (f) {
        fputs("not a safetensors file", f);
        fclose(f);
    }
    nu_gen_model *lb = NULL;
    NU_CHECK(nu_gen_model_load(pbad, false, &lb) != NU_OK && lb == NULL);
    NU_CHECK(nu_gen_model_load("/nonexistent/model.safetensors", false, &lb) != NU_OK);

    /* a trainer checkpoint with {"model": ...} config loads for generation, with its EMA */
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_ctx_set_alloc_data(ctx, false);
    nu_objective eo = nu_objective_init(NU_OBJECTIVE_EPS);
    nu_gen_loss *L = NULL;
    NU_CHECK(nu_gen_loss_new(m, &eo, ctx, 2, &L) == NU_OK);
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, nu_gen_loss_tensor(L));
    nu_graph_backward(g, nu_gen_loss_tensor(L));
    nu_pool *pool = nu_pool_new(2);
    nu_train_params tp = nu_train_params_init();
    tp.ema = true, tp.ema_decay = 0.5, tp.ema_warmup = NU_EMA_WARMUP_NONE, tp.lr = 1e-2;
    nu_trainer *tr = NULL;
    NU_CHECK(nu_trainer_new(g, nu_gen_loss_tensor(L), pool, &tp, &tr) == NU_OK);
    NU_CHECK(nu_graph_alloc(g) == NU_OK);
    float imgs[2 * 64];
    nu_test_fill_uniform(imgs, 128, 9, -1, 1);
    int64_t labs[2] = {0, 2};
    for (int s2 = 0; s2 < 3; s2++) {
        NU_CHECK(nu_gen_loss_prepare(L, nu_trainer_rng(tr), imgs, labs) == NU_OK);
        NU_CHECK(nu_trainer_forward_backward(tr, NULL) == NU_OK);
        NU_CHECK(nu_trainer_step(tr, NULL) == NU_OK);
    }
    int64_t badlab[2] = {0, 3};
    nu_status st = nu_gen_loss_prepare(L, nu_trainer_rng(tr), imgs, badlab);
    NU_CHECK_MSG(st == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "label 3"), "bad label: %s", nu_last_error());
    char *mj = nu_gen_config_to_json(&c), *ojs = nu_objective_to_json(&eo);
    char run[2048];
    snprintf(run, sizeof run, "{\"model\": %s, \"objective\": %s}", mj, ojs);
    NU_CHECK(nu_trainer_save(tr, pck, run, NULL) == NU_OK);
    nu_gen_model *le = NULL, *lw = NULL;
    NU_CHECK_MSG(nu_gen_model_load(pck, true, &le) == NU_OK, "%s", nu_last_error());
    NU_CHECK_MSG(nu_gen_model_load(pck, false, &lw) == NU_OK, "%s", nu_last_error());
    if (le && lw) {
        nu_params *P = nu_trainer_params(tr);
        const float *ema = nu_trainer_ema(tr), *val = nu_params_values(P);
        bool ok_e = true, ok_w = true;
        for (int i = 0; i < nu_gen_model_n_tensors(le); i++) {
            nu_tensor *t = nu_gen_model_tensor(le, i), *w = nu_gen_model_find(lw, t->name);
            int k = nu_params_find(P, t->name);
            if (k < 0 || !w) {
                ok_e = false;
                continue;
            }
            ok_e &= memcmp(t->data, ema + nu_params_offset(P, k), nu_nbytes(t)) == 0;
            ok_w &= memcmp(w->data, val + nu_params_offset(P, k), nu_nbytes(t)) == 0;
        }
        NU_CHECK_MSG(ok_e, "checkpoint EMA weights differ after loading");
        NU_CHECK_MSG(ok_w, "checkpoint weights differ after loading");
        /* sampling mid-training: a graph over the trainer's flat parameters sees the live weights,
         * and nu_trainer_swap_ema switches it to the EMA */
        float xs[2 * 64], e1[2 * 64], e2[2 * 64];
        nu_test_fill_uniform(xs, 128, 4, -1, 1);
        NU_CHECK(nu_gen_eval_guided(m, pool, xs, 300, 2, labs, 2.0, e1) == NU_OK);
        NU_CHECK(nu_gen_eval_guided(lw, pool, xs, 300, 2, labs, 2.0, e2) == NU_OK);
        NU_CHECK(nu_test_equal("live trainer weights == loaded checkpoint", e1, e2, 128));
        nu_trainer_swap_ema(tr);
        NU_CHECK(nu_gen_eval_guided(m, pool, xs, 300, 2, labs, 2.0, e1) == NU_OK);
        nu_trainer_swap_ema(tr);
        NU_CHECK(nu_gen_eval_guided(le, pool, xs, 300, 2, labs, 2.0, e2) == NU_OK);
        NU_CHECK(nu_test_equal("swapped-in EMA == loaded EMA", e1, e2, 128));
    }
    free(mj);
    free(ojs);
    nu_gen_model_free(le);
    nu_gen_model_free(lw);
    nu_trainer_free(tr);
    nu_graph_free(g);
    nu_gen_loss_free(L);
    nu_pool_free(pool);
    nu_ctx_free(ctx);
    nu_gen_model_free(m);
    unlink(p32);
    unlink(p16);
    unlink(pbad);
    unlink(pck);
    rmdir(dir);
    printf("  configs (JSON, diffusers), save/load f32/f16, trainer checkpoint + EMA, named errors: ok\n");
}

/* ---------------------------------------------------------------- k-diffusion sampling glue */

static void test_sampling(void) {
    nu_gen_config c = tiny_unet();
    nu_gen_model *m = NULL;
    NU_CHECK(nu_gen_model_new(&c, 21, &m) == NU_OK);
    if (!m) return;
    nu_pool *pool = nu_pool_new(2);
    int64_t labels[3] = {0, 1, 2};
    const int64_t n = 3 * 64;
    float a[3 * 64], b[3 * 64];
    nu_objective objs[3] = {nu_objective_init(NU_OBJECTIVE_EPS), nu_objective_init(NU_OBJECTIVE_V),
                            nu_objective_init(NU_OBJECTIVE_FLOW)};
    const char *samplers[] = {"euler", "heun", "ddim", "ddpm", "dpm++2m", "euler_a"};
    int runs = 0;
    for (int oi = 0; oi < 3; oi++)
        for (size_t si = 0; si < sizeof samplers / sizeof samplers[0]; si++) {
            nu_gen_sample_params p = nu_gen_sample_params_init();
            p.sampler = samplers[si], p.steps = 4, p.batch = 3, p.labels = labels, p.guidance_scale = 3.0;
            p.seed = 5, p.noise_seed = 6;
            bool stochastic = !strcmp(samplers[si], "ddpm") || !strcmp(samplers[si], "euler_a");
            nu_status st = nu_gen_sample(m, &objs[oi], &p, pool, a);
            if (oi == 2 && stochastic) {
                NU_CHECK_MSG(st == NU_ERR_UNSUPPORTED && strstr(nu_last_error(), "flow"),
                             "flow + %s should be refused: %s", samplers[si], nu_last_error());
                continue;
            }
            NU_CHECK_MSG(st == NU_OK, "%s/%s: %s", nu_objective_kind_name(objs[oi].kind), samplers[si], nu_last_error());
            bool finite = true;
            for (int64_t i = 0; i < n; i++) finite &= isfinite(a[i]);
            NU_CHECK_MSG(finite, "%s/%s: non-finite samples", nu_objective_kind_name(objs[oi].kind), samplers[si]);
            p.max_eval_batch = 4; /* 6 CFG rows in chunks of 4: the same numbers */
            NU_CHECK(nu_gen_sample(m, &objs[oi], &p, pool, b) == NU_OK);
            char key[64];
            snprintf(key, sizeof key, "%s/%s chunked == whole", nu_objective_kind_name(objs[oi].kind), samplers[si]);
            nu_test_close(key, b, a, n, 1e-5, 1e-5);
            runs++;
        }
    /* ddim with eta 0 is euler (sample.h); guidance 1 equals an unguided batch; determinism */
    nu_gen_sample_params p = nu_gen_sample_params_init();
    p.steps = 5, p.batch = 3, p.labels = labels, p.seed = 8;
    p.sampler = "euler";
    NU_CHECK(nu_gen_sample(m, &objs[0], &p, pool, a) == NU_OK);
    p.sampler = "ddim";
    NU_CHECK(nu_gen_sample(m, &objs[0], &p, pool, b) == NU_OK);
    NU_CHECK(nu_test_equal("ddim(eta 0) == euler", b, a, n));
    NU_CHECK(nu_gen_sample(m, &objs[0], &p, pool, b) == NU_OK);
    NU_CHECK(nu_test_equal("same seed, same samples", b, a, n));
    p.guidance_scale = 1.0;
    p.sampler = "euler";
    NU_CHECK(nu_gen_sample(m, &objs[0], &p, pool, b) == NU_OK);
    NU_CHECK(nu_test_equal("guidance 1 == unguided", b, a, n));
    /* a guided evaluation = uncond + s (cond - uncond) */
    float x[3 * 64], gd[3 * 64], cond[3 * 64], unc[3 * 64];
    nu_test_fill_uniform(x, n, 3, -1, 1);
    NU_CHECK(nu_gen_eval_guided(m, pool, x, 500, 3, labels, 2.5, gd) == NU_OK);
    NU_CHECK(nu_gen_eval_guided(m, pool, x, 500, 3, labels, 1.0, cond) == NU_OK);
    NU_CHECK(nu_gen_eval_guided(m, pool, x, 500, 3, NULL, 1.0, unc) == NU_OK);
    float want[3 * 64];
    for (int64_t i = 0; i < n; i++) want[i] = unc[i] + 2.5f * (cond[i] - unc[i]);
    nu_test_close("guided evaluation", gd, want, n, 1e-6, 1e-5);
    nu_pool_free(pool);
    nu_gen_model_free(m);
    printf("  sampling: %d sampler x objective runs finite and chunk-independent; ddim == euler, CFG 1 == none\n", runs);
}

/* ---------------------------------------------------------------- dit_tiny (diffusers reference) */

static nu_st_file *rf;
static nu_ctx *rctx;

static nu_tensor *ref(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static nu_tensor *ref(const char *fmt, ...) {
    char key[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    nu_tensor *t = NULL;
    const nu_st_info *in = nu_st_find(rf, key);
    nu_status st = in && in->type == NU_TYPE_I64 ? nu_st_get(rf, rctx, key, &t) : nu_st_get_f32(rf, rctx, key, &t);
    if (st != NU_OK) {
        fprintf(stderr, "reference %s: %s\n", key, nu_last_error());
        exit(1);
    }
    return t;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i]));
    return d;
}

/* forward of a loaded model on host arrays: x [B, C, S, S], t [B] (i64 reference), y [B] */
static void forward_host(nu_gen_model *m, int B, const float *x, const int64_t *t, const int64_t *y, float *out,
                         int64_t n_out) {
    const nu_gen_config *c = nu_gen_model_config(m);
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *xt = nu_new_tensor_4d(ctx, NU_TYPE_F32, B, c->in_channels, c->sample_size, c->sample_size);
    nu_tensor *tt = nu_new_tensor_1d(ctx, NU_TYPE_F32, B);
    nu_tensor *yt = nu_new_tensor_1d(ctx, NU_TYPE_I64, B);
    memcpy(xt->data, x, nu_nbytes(xt));
    for (int b = 0; b < B; b++) ((float *)tt->data)[b] = (float)t[b];
    memcpy(yt->data, y, nu_nbytes(yt));
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *o = nu_gen_model_forward(m, ctx, xt, tt, yt);
    NU_CHECK(nu_nelements(o) == n_out);
    nu_test_eval(ctx, o, out, 2, false);
    nu_ctx_free(ctx);
}

typedef struct pipe_cb {
    const char *name;
    const float *want; /* scheduler_prev_sample [steps, rows, 4, 8, 8] */
    int64_t rows_n;    /* rows * per (stride of one step in want)      */
    int64_t n;         /* B * per (the compared half)                  */
    double worst, worst_abs; /* worst: max |error| / max |want| of the step */
    int steps;
} pipe_cb;

/* latents tolerance: |got - want| <= 1e-5 max|want| of that step (see the header) */
#define LAT_TOL 1e-5

static nu_status pipe_step(void *user, const nu_sample_step_info *info) {
    pipe_cb *cb = user;
    const float *w = cb->want + info->i * cb->rows_n;
    double scale = 0;
    for (int64_t j = 0; j < cb->n; j++) scale = fmax(scale, fabs(w[j]));
    for (int64_t j = 0; j < cb->n; j++) {
        double d = fabs(info->x[j] - w[j]);
        cb->worst = fmax(cb->worst, d / scale);
        cb->worst_abs = fmax(cb->worst_abs, d);
    }
    cb->steps++;
    return NU_OK;
}

static void test_dit_tiny(void) {
    const char *dir = nu_test_require_shared("dit_tiny reference (../shared/reference/dit_tiny)");
    char path[1024];
    snprintf(path, sizeof path, "%s/reference/dit_tiny/refs.safetensors", dir);
    NU_CHECK(nu_st_open(path, &rf) == NU_OK);
    if (!rf) return;
    rctx = nu_ctx_new(NULL);
    snprintf(path, sizeof path, "%s/reference/dit_tiny/diffusers", dir);
    nu_gen_model *m = NULL;
    nu_status st = nu_gen_model_load(path, false, &m);
    NU_CHECK_MSG(st == NU_OK, "load %s: %s", path, nu_last_error());
    if (!m) return;
    const nu_gen_config *c = nu_gen_model_config(m);
    NU_CHECK(c->arch == NU_GEN_ARCH_DIT && c->num_layers == 3 && c->num_classes == 1000 && c->out_channels == 8);
    printf("  dit_tiny: %d tensors, %lld parameters\n", nu_gen_model_n_tensors(m), (long long)nu_gen_model_n_params(m));

    /* forward passes */
    double fw = 0;
    for (int i = 0; i < 3; i++) {
        nu_tensor *x = ref("forward/%d/x", i), *t = ref("forward/%d/t", i), *y = ref("forward/%d/y", i);
        nu_tensor *want = ref("forward/%d/out", i);
        int64_t n = nu_nelements(want);
        float *got = malloc(sizeof(float) * (size_t)n);
        forward_host(m, (int)x->ne[0], x->data, t->data, y->data, got, n);
        char key[64];
        snprintf(key, sizeof key, "dit_tiny forward/%d", i);
        nu_test_close(key, got, want->data, n, 1e-5, 0);
        fw = fmax(fw, max_abs_diff(got, want->data, n));
        free(got);
    }
    /* one CFG evaluation (DiTPipeline recipe) */
    nu_tensor *cx = ref("cfg/x"), *ct = ref("cfg/t"), *cy = ref("cfg/y"), *cwant = ref("cfg/guided_eps");
    float *cg = malloc(sizeof(float) * (size_t)nu_nelements(cwant));
    NU_CHECK(nu_gen_eval_guided(m, NULL, cx->data, (double)((int64_t *)ct->data)[0], 2, cy->data, 4.0, cg) == NU_OK);
    nu_test_close("dit_tiny cfg/guided_eps", cg, cwant->data, nu_nelements(cwant), 3e-5, 0);
    double cfgd = max_abs_diff(cg, cwant->data, nu_nelements(cwant));
    free(cg);
    printf("  dit_tiny: forward max abs err %.2e (3 cases), CFG guided eps %.2e\n", fw, cfgd);

    /* DiTPipeline runs */
    const struct { const char *sched; int steps; double gs; } runs[] = {
        {"ddim", 8, 4.0}, {"ddim", 8, 1.0}, {"ddpm", 12, 4.0}, {"ddpm", 12, 1.0}};
    nu_objective obj = nu_objective_init(NU_OBJECTIVE_EPS); /* SCFG: linear 1e-4..0.02, 1000 steps */
    nu_pool *pool = nu_pool_new(2);
    int64_t labels[2] = {3, 7};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        char pre[64];
        snprintf(pre, sizeof pre, "pipe/%s/cfg%g", runs[r].sched, runs[r].gs);
        nu_tensor *want = ref("%s/scheduler_prev_sample", pre), *init = ref("%s/init_latents", pre);
        pipe_cb cb = {.name = pre, .want = want->data, .rows_n = nu_nelements(want) / want->ne[0],
                      .n = nu_nelements(init)};
        nu_gen_sample_params sp = nu_gen_sample_params_init();
        sp.sampler = runs[r].sched;
        sp.diffusers_scheduler = true;
        sp.steps = runs[r].steps;
        sp.guidance_scale = runs[r].gs;
        sp.batch = 2;
        sp.labels = labels;
        sp.seed = 3010;       /* generator=torch.Generator().manual_seed(3010) */
        sp.noise_seed = 3006; /* torch.manual_seed(3006): the global RNG feeds DDPM's step noise */
        sp.callback = pipe_step;
        sp.callback_user = &cb;
        float *lat = malloc(sizeof(float) * (size_t)cb.n);
        st = nu_gen_sample(m, &obj, &sp, pool, lat);
        NU_CHECK_MSG(st == NU_OK, "%s: %s", pre, nu_last_error());
        NU_CHECK_MSG(cb.steps == runs[r].steps, "%s: %d steps", pre, cb.steps);
        NU_CHECK_MSG(cb.worst <= LAT_TOL, "%s: latents differ from the reference by %.3g of their scale", pre, cb.worst);
        const float *last = (const float *)want->data + (runs[r].steps - 1) * cb.rows_n;
        snprintf(pre + strlen(pre), sizeof pre - strlen(pre), " final latents");
        double amax = 0;
        for (int64_t j = 0; j < cb.n; j++) amax = fmax(amax, fabs(last[j]));
        nu_test_close(pre, lat, last, cb.n, LAT_TOL * amax, 0);
        printf("  dit_tiny %s/%d steps/cfg %g: latents (max |x| %.0f) over all steps: max abs err %.2e = %.2e of the "
               "step's max |x|\n",
               runs[r].sched, runs[r].steps, runs[r].gs, amax, cb.worst_abs, cb.worst);
        if (r == 0) { /* decode as DiTPipeline: vae.decode(latents / 0.18215) -> (x/2+0.5).clamp(0,1), NHWC */
            snprintf(path, sizeof path, "%s/reference/dit_tiny/diffusers/vae", dir);
            nu_vae *vae = NULL;
            st = nu_vae_load(path, NULL, &vae);
            NU_CHECK_MSG(st == NU_OK, "vae: %s", nu_last_error());
            if (vae) {
                nu_tensor *img = ref("pipe/ddim/cfg4/image_float"); /* [2, 64, 64, 3] */
                for (int64_t i = 0; i < cb.n; i++) lat[i] /= 0.18215f;
                float *dec = malloc(sizeof(float) * 2 * 3 * 64 * 64), *nhwc = malloc(sizeof(float) * 2 * 3 * 64 * 64);
                NU_CHECK(nu_vae_decode(vae, pool, lat, 2, 8, 8, NULL, dec) == NU_OK);
                for (int b = 0; b < 2; b++)
                    for (int ch = 0; ch < 3; ch++)
                        for (int p = 0; p < 64 * 64; p++) {
                            float v = dec[(b * 3 + ch) * 4096 + p] / 2 + 0.5f;
                            nhwc[(b * 4096 + p) * 3 + ch] = v < 0 ? 0 : v > 1 ? 1 : v;
                        }
                nu_test_close("dit_tiny ddim/cfg4 image", nhwc, img->data, 2 * 3 * 4096, 3e-5, 0);
                printf("  dit_tiny ddim/cfg4: decoded image max abs err %.2e\n", max_abs_diff(nhwc, img->data, 2 * 3 * 4096));
                free(dec);
                free(nhwc);
                nu_vae_free(vae);
            }
        }
        free(lat);
    }
    nu_pool_free(pool);
    nu_gen_model_free(m);
    nu_ctx_free(rctx);
    nu_st_close(rf);
}

int main(void) {
    nu_st_open(nu_test_fixture("gen_models.safetensors"), &fx);
    if (!fx) {
        fprintf(stderr, "fixture: %s\n", nu_last_error());
        return 1;
    }
    fctx = nu_ctx_new(NULL);
    for (int i = 0; i < 4; i++) test_torch_step(i);
    test_torch_trajectory(0);
    test_torch_trajectory(1);
    test_init();
    test_configs_and_files();
    test_sampling();
    nu_ctx_free(fctx);
    nu_st_close(fx);
    test_dit_tiny(); /* last: exits 77 without ../shared */
    return nu_test_summary("test_gen_models");
}
