/*
 * test_lora.c — LoRA / LoCon (src/nn/lora.c, lora_names.c): the run-time branch against the
 * merged weight W + scale * up @ down computed in PyTorch (scripts/fixtures_lora.py) for linear,
 * conv 3x3 (stride 1 and 2) and 1x1 layers, in every file dialect (kohya, kohya-LDM, PEFT,
 * PEFT base_model), f32/f16/bf16 LoRA tensors, several LoRAs at once, a q8_0 base; errors and
 * warnings; key resolution against the real SD 1.5 UNet and CLIP ViT-L names; prompt tags.
 *
 * Tolerances. F32: each output is a dot product of K <= 144 terms with |terms| summing to
 * <= ~20; f32 accumulation in any order is within ~sqrt(K) * 2^-24 * sum|terms| ~ 1e-5 of the
 * float64 reference (the branch and the merged weight differ only in rounding order), so
 * atol 3e-5 (measured: <= 1e-6). q8_0 base (the Linear layers and the 32-channel conv, in
 * matrix form; the others keep their float type): the LoRA branch does not touch the base, so
 * (lora - base) on the q8_0 store equals the float64 (l1 - base) to the f32 tolerance; the full
 * output is within the rigorous q8_0 bound computed per element (quant.c: d = amax/127 stored as
 * f16, so |q*f16(d) - w| <= d/2 + 127*d*2^-11; the output error <= sum_k |x_k| * that bound).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/unet.h"
#include "nn/lora.h"
#include "nn/nn.h"
#include "nu_test.h"

#define TOL_F32 3e-5

#define P "down_blocks.0.attentions.0.transformer_blocks.0.attn1."

typedef struct layer {
    const char *name, *model;
    bool conv;
    int in, out, k, stride, pad;
    bool bias;
} layer;

static const layer layers[] = {
    {P "to_q", "unet", false, 32, 64, 1, 1, 0, false},
    {P "to_out.0", "unet", false, 64, 32, 1, 1, 0, true},
    {"down_blocks.0.resnets.0.conv1", "unet", true, 8, 16, 3, 1, 1, true},
    {"down_blocks.0.downsamplers.0.conv", "unet", true, 32, 16, 3, 2, 1, true}, /* q8_0: matrix form */
    {"down_blocks.0.attentions.0.proj_in", "unet", true, 16, 16, 1, 1, 0, true},
    {"text_model.encoder.layers.0.self_attn.q_proj", "clip", false, 32, 32, 1, 1, 0, true},
};
#define N_LAYERS (int)(sizeof layers / sizeof layers[0])
#define MAX_OUT (2 * 16 * 9 * 9)

static nu_st_file *io;

static nu_tensor *io_get(nu_ctx *ctx, const char *fmt, const char *name) {
    char key[160];
    snprintf(key, sizeof key, fmt, name);
    nu_tensor *t = NULL;
    NU_ASSERT(nu_st_get_f32(io, ctx, key, &t) == NU_OK);
    return t;
}

static nu_weights *base_store(nu_type matrix_type) {
    nu_weights *w = nu_weights_new();
    NU_CHECK(nu_weights_add_file(w, nu_test_fixture("lora_base.safetensors"), NULL) == NU_OK);
    nu_weights_set_matrix_type(w, matrix_type);
    return w;
}

/* A set on both targets of w with the given files and weights; NULL (and a failed check) if a
 * load fails. */
static nu_lora_set *make_set(nu_weights *w, int n, const char *const *files, const float *wu, const float *wt) {
    nu_lora_set *s = nu_lora_set_new();
    NU_CHECK(nu_lora_set_add_target(s, NU_LORA_PART_UNET, "unet", w) == NU_OK);
    NU_CHECK(nu_lora_set_add_target(s, NU_LORA_PART_TE, "clip", w) == NU_OK);
    for (int i = 0; i < n; i++) {
        nu_status st = nu_lora_set_load(s, nu_test_fixture(files[i]), wu[i], wt[i]);
        NU_CHECK_MSG(st == NU_OK, "load %s: %s", files[i], nu_last_error());
        if (st != NU_OK) {
            nu_lora_set_free(s);
            return NULL;
        }
    }
    return s;
}

/* One layer through nu_nn_linear / nu_nn_conv2d with the set attached; returns the count. */
static int64_t run_layer(nu_weights *w, const nu_lora_set *s, const layer *L, float *out) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *x = io_get(ctx, "x.%s", L->name);
    nu_ctx_set_alloc_data(ctx, false);
    nu_nn nn;
    nu_nn_init(&nn, ctx, w, L->model);
    nn.lora = s;
    nu_tensor *y = L->conv ? nu_nn_conv2d(&nn, x, L->name, L->in, L->out, L->k, L->stride, L->pad, L->bias)
                           : nu_nn_linear(&nn, x, L->name, L->in, L->out, L->bias);
    NU_CHECK_MSG(nu_nn_status(&nn) == NU_OK, "%s: %s", L->name, nu_last_error());
    int64_t n = nu_nelements(y);
    NU_ASSERT(n <= MAX_OUT);
    nu_test_eval(ctx, y, out, 2, false);
    nu_ctx_free(ctx);
    return n;
}

/* Every layer against the reference `want` ("l1", "l12", "base"); layers of a part the set
 * does not touch compare with "base". */
static void check_layers(const char *label, nu_weights *w, const nu_lora_set *s, const char *want, bool te_too) {
    static float got[MAX_OUT];
    for (int i = 0; i < N_LAYERS; i++) {
        const layer *L = &layers[i];
        int64_t n = run_layer(w, s, L, got);
        bool te = strcmp(L->model, "clip") == 0;
        char fmt[32];
        snprintf(fmt, sizeof fmt, "%%s.%s", te && !te_too ? "base" : want);
        nu_ctx *ctx = nu_ctx_new(NULL);
        nu_tensor *ref = io_get(ctx, fmt, L->name);
        NU_CHECK(nu_nelements(ref) == n);
        char name[200];
        snprintf(name, sizeof name, "%s: %s (%s)", label, L->name, want);
        NU_CHECK(nu_test_close(name, got, ref->data, n, TOL_F32, 0));
        nu_ctx_free(ctx);
    }
}

/* ---------------------------------------------------------------- numerics */

static void test_dialects(void) {
    nu_weights *w = base_store(NU_TYPE_COUNT);
    check_layers("no lora", w, NULL, "base", true);
    static const char *const files[] = {"lora_kohya.safetensors", "lora_kohya_ldm.safetensors", "lora_peft.safetensors"};
    const float wu[] = {0.8f}, wt[] = {0.6f};
    static float a[MAX_OUT], b[MAX_OUT];
    nu_lora_set *sets[3];
    for (int f = 0; f < 3; f++) {
        nu_lora_set *s = sets[f] = make_set(w, 1, &files[f], wu, wt);
        if (!s) continue;
        NU_CHECK_MSG(nu_lora_set_count(s, "unet") == 5 && nu_lora_set_count(s, "clip") == 1, "%s: %d unet, %d clip",
                     files[f], nu_lora_set_count(s, "unet"), nu_lora_set_count(s, "clip"));
        check_layers(files[f], w, s, "l1", true);
    }
    /* kohya and PEFT forms of the same LoRA: the same outputs */
    for (int i = 0; i < N_LAYERS && sets[0] && sets[2]; i++) {
        int64_t n = run_layer(w, sets[0], &layers[i], a);
        run_layer(w, sets[2], &layers[i], b);
        char name[160];
        snprintf(name, sizeof name, "kohya vs peft: %s", layers[i].name);
        NU_CHECK(nu_test_close(name, a, b, n, TOL_F32, 0));
    }
    for (int f = 0; f < 3; f++) nu_lora_set_free(sets[f]);

    /* a UNet-only PEFT save (base_model.model. prefix, lora_A.default / lora.down) */
    static const char *const peft_base[] = {"lora_peft_base.safetensors"};
    nu_lora_set *s = make_set(w, 1, peft_base, wu, wt);
    if (s) {
        NU_CHECK(nu_lora_set_count(s, NULL) == 5 && nu_lora_set_count(s, "clip") == 0);
        check_layers("peft base_model", w, s, "l1", false);
        nu_lora_set_free(s);
    }
    /* two LoRAs at once: kohya at 0.8 / 0.6 and a second one at -0.5 */
    static const char *const two[] = {"lora_kohya.safetensors", "lora_second.safetensors"};
    s = make_set(w, 2, two, (const float[]){0.8f, -0.5f}, (const float[]){0.6f, -0.5f});
    if (s) {
        NU_CHECK(nu_lora_set_count(s, NULL) == 8);
        check_layers("two loras", w, s, "l12", true);
        nu_lora_set_free(s);
    }
    /* weight 0 leaves the model as it is */
    s = make_set(w, 1, files, (const float[]){0.0f}, (const float[]){0.0f});
    if (s) {
        check_layers("weight 0", w, s, "base", true);
        nu_lora_set_free(s);
    }
    nu_weights_free(w);
}

/* SD 1.x runs proj_in (a 1x1 conv) as a Linear on tokens: nu_lora_linear must take the 4-D LoRA. */
static void test_conv1x1_as_linear(void) {
    nu_weights *w = base_store(NU_TYPE_COUNT);
    static const char *const files[] = {"lora_kohya.safetensors"};
    nu_lora_set *s = make_set(w, 1, files, (const float[]){0.8f}, (const float[]){0.6f});
    if (!s) {
        nu_weights_free(w);
        return;
    }
    const char *name = "down_blocks.0.attentions.0.proj_in";
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *x = io_get(ctx, "x.%s", name), *want = io_get(ctx, "%s.l1", name);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *wt = nu_reshape(ctx, nu_weights_get(w, "down_blocks.0.attentions.0.proj_in.weight"), 2, (int64_t[]){16, 16});
    nu_tensor *bias = nu_weights_get(w, "down_blocks.0.attentions.0.proj_in.bias");
    nu_tensor *t = nu_nn_to_tokens(ctx, x); /* [2, 81, 16] */
    nu_tensor *y = nu_lora_linear(s, ctx, "unet", name, t, nu_linear(ctx, t, wt, bias));
    y = nu_nn_from_tokens(ctx, y, 9, 9);
    static float got[MAX_OUT];
    nu_test_eval(ctx, y, got, 1, false);
    NU_CHECK(nu_test_close("proj_in LoRA as a Linear on tokens", got, want->data, nu_nelements(want), TOL_F32, 0));
    /* a name without LoRA, or another model's label: y unchanged */
    nu_tensor *y0 = nu_linear(ctx, t, wt, bias);
    NU_CHECK(nu_lora_linear(s, ctx, "unet", "down_blocks.0.attentions.0.proj_out", t, y0) == y0);
    NU_CHECK(nu_lora_linear(s, ctx, "vae", name, t, y0) == y0);
    NU_CHECK(nu_lora_linear(NULL, ctx, "unet", name, t, y0) == y0);
    nu_ctx_free(ctx);
    nu_lora_set_free(s);
    nu_weights_free(w);
}

static const char *name_of(const char *lname) {
    static char buf[160];
    snprintf(buf, sizeof buf, "%s.weight", lname);
    return buf;
}

static void test_q8_base(void) {
    nu_st_file *base;
    NU_ASSERT(nu_st_open(nu_test_fixture("lora_base.safetensors"), &base) == NU_OK);
    nu_weights *wq = base_store(NU_TYPE_Q8_0);
    static const char *const files[] = {"lora_kohya.safetensors"};
    nu_lora_set *s = make_set(wq, 1, files, (const float[]){0.8f}, (const float[]){0.6f});
    if (!s) {
        nu_weights_free(wq);
        nu_st_close(base);
        return;
    }
    NU_CHECK(nu_weights_get(wq, P "to_q.weight")->type == NU_TYPE_Q8_0);
    /* a conv whose filter rows are whole blocks is converted to the matrix form [16, 32*3*3];
     * LoRA still sees (and checks against) its [16, 32, 3, 3] shape */
    nu_tensor *dq = nu_weights_get(wq, "down_blocks.0.downsamplers.0.conv.weight");
    NU_CHECK(dq->type == NU_TYPE_Q8_0 && dq->ndim == 2 && dq->ne[1] == 288);
    int64_t lne[NU_MAX_DIMS];
    NU_CHECK(nu_weights_logical_shape(wq, "down_blocks.0.downsamplers.0.conv.weight", lne) == 4 && lne[1] == 32 &&
             lne[2] == 3 && lne[3] == 3);
    static float lo[MAX_OUT], ba[MAX_OUT], d_got[MAX_OUT], d_want[MAX_OUT];
    for (int i = 0; i < N_LAYERS; i++) {
        const layer *L = &layers[i];
        int64_t n = run_layer(wq, s, L, lo);
        run_layer(wq, NULL, L, ba);
        nu_ctx *ctx = nu_ctx_new(NULL);
        nu_tensor *r1 = io_get(ctx, "%s.l1", L->name), *r0 = io_get(ctx, "%s.base", L->name);
        const float *f1 = r1->data, *f0 = r0->data;
        for (int64_t j = 0; j < n; j++) {
            d_got[j] = lo[j] - ba[j];
            d_want[j] = f1[j] - f0[j];
        }
        char name[160];
        snprintf(name, sizeof name, "q8_0 base: LoRA delta of %s", L->name);
        NU_CHECK(nu_test_close(name, d_got, d_want, n, TOL_F32, 0));
        /* |lo - l1| <= sum_k |x_k| e_k + TOL_F32, e_k the q8_0 bound of the weight (0 for the
         * convs whose rows are not whole blocks: they keep their float type) */
        int bad = 0;
        double worst = 0;
        bool quant_conv = L->conv && nu_weights_get(wq, name_of(L->name))->type == NU_TYPE_Q8_0;
        if (quant_conv) { /* the same bound over each output's receptive field */
            nu_tensor *x = io_get(ctx, "x.%s", L->name);
            nu_tensor *wt = NULL;
            NU_ASSERT(nu_st_get_f32(base, ctx, name_of(L->name), &wt) == NU_OK);
            const float *xv = x->data, *wv = wt->data;
            int64_t B = x->ne[0], H = x->ne[2], W = x->ne[3], KK = (int64_t)L->k * L->k, row = L->in * KK;
            int64_t Ho = (H + 2 * L->pad - L->k) / L->stride + 1, Wo = (W + 2 * L->pad - L->k) / L->stride + 1;
            NU_CHECK(B * L->out * Ho * Wo == n);
            for (int64_t j = 0; j < n; j++) {
                int64_t ox = j % Wo, oy = j / Wo % Ho, o = j / (Wo * Ho) % L->out, b = j / (Wo * Ho * L->out);
                double bound = TOL_F32;
                for (int64_t kb = 0; kb < row; kb += 32) {
                    float amax = 0;
                    for (int64_t k = kb; k < kb + 32; k++) amax = fmaxf(amax, fabsf(wv[o * row + k]));
                    double e = amax / 127.0 * (0.5 + 127.0 / 2048.0);
                    for (int64_t k = kb; k < kb + 32; k++) {
                        int64_t c = k / KK, iy = oy * L->stride - L->pad + k % KK / L->k,
                                ix = ox * L->stride - L->pad + k % L->k;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W) bound += fabs(xv[((b * L->in + c) * H + iy) * W + ix]) * e;
                    }
                }
                double err = fabs(lo[j] - f1[j]);
                bad += err > bound;
                if (err / bound > worst) worst = err / bound;
            }
        } else if (!L->conv) {
            nu_tensor *x = io_get(ctx, "x.%s", L->name);
            nu_tensor *wt = NULL;
            NU_ASSERT(nu_st_get_f32(base, ctx, name_of(L->name), &wt) == NU_OK);
            const float *xv = x->data, *wv = wt->data;
            int64_t rows = n / L->out;
            for (int64_t r = 0; r < rows; r++)
                for (int o = 0; o < L->out; o++) {
                    double bound = TOL_F32;
                    for (int kb = 0; kb < L->in; kb += 32) {
                        float amax = 0;
                        for (int k = kb; k < kb + 32; k++) amax = fmaxf(amax, fabsf(wv[o * L->in + k]));
                        double e = amax / 127.0 * (0.5 + 127.0 / 2048.0);
                        for (int k = kb; k < kb + 32; k++) bound += fabs(xv[r * L->in + k]) * e;
                    }
                    double err = fabs(lo[r * L->out + o] - f1[r * L->out + o]);
                    bad += err > bound;
                    if (err / bound > worst) worst = err / bound;
                }
        } else {
            for (int64_t j = 0; j < n; j++) bad += fabs(lo[j] - f1[j]) > TOL_F32;
        }
        NU_CHECK_MSG(bad == 0, "q8_0 base: %s vs merged f32: %d values beyond the q8_0 bound (worst err/bound %.2f)",
                     L->name, bad, worst);
        if (getenv("NU_TEST_VERBOSE")) printf("q8_0 %s: worst err/bound %.3f\n", L->name, worst);
        nu_ctx_free(ctx);
    }
    nu_lora_set_free(s);
    nu_weights_free(wq);
    nu_st_close(base);
}

/* ---------------------------------------------------------------- errors and warnings */

static char warnings[2048];
static void on_log(nu_log_level level, const char *msg, void *user) {
    (void)user;
    if (level >= NU_LOG_WARN) snprintf(warnings + strlen(warnings), sizeof warnings - strlen(warnings), "%s\n", msg);
}

static void test_errors(void) {
    nu_weights *w = base_store(NU_TYPE_COUNT);
    nu_lora_set *s = make_set(w, 0, NULL, NULL, NULL);

    warnings[0] = '\0';
    nu_log_set_callback(on_log, NULL, NU_LOG_WARN);
    NU_CHECK(nu_lora_set_load(s, nu_test_fixture("lora_kohya.safetensors"), 1.0f, 1.0f) == NU_OK);
    nu_log_set_callback(NULL, NULL, NU_LOG_INFO);
    NU_CHECK_MSG(strstr(warnings, "1 of 7 layers match no layer of the model and are ignored (first: "
                                  "lora_unet_down_blocks_3_attentions_0_proj_out.lora_down.weight)") &&
                     strstr(warnings, "1 tensors are not LoRA tensors and are ignored (first: ss_stray_tensor)") &&
                     strstr(warnings, "1 LyCORIS/DoRA tensors"),
                 "warnings:\n%s", warnings);
    NU_CHECK(nu_lora_set_count(s, NULL) == 6);

    /* a shape that does not fit: an error naming the key; nothing of the file is added */
    NU_CHECK(nu_lora_set_load(s, nu_test_fixture("lora_bad_shape.safetensors"), 1.0f, 1.0f) == NU_ERR_FORMAT);
    NU_CHECK_MSG(strstr(nu_last_error(),
                        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight f16 "
                        "[4, 16]") &&
                     strstr(nu_last_error(), "do not fit unet layer " P "to_q.weight f32 [64, 32]"),
                 "message: %s", nu_last_error());
    NU_CHECK(nu_lora_set_count(s, NULL) == 6);
    NU_CHECK(nu_lora_set_load(s, nu_test_fixture("lora_missing_up.safetensors"), 1.0f, 1.0f) == NU_ERR_FORMAT);
    NU_CHECK_MSG(strstr(nu_last_error(), "to_q.lora_down.weight has no matching lora_up"), "message: %s",
                 nu_last_error());
    NU_CHECK(nu_lora_set_load(s, nu_test_fixture("no_such_lora.safetensors"), 1.0f, 1.0f) != NU_OK);
    NU_CHECK(strstr(nu_last_error(), "no_such_lora.safetensors") != NULL);
    NU_CHECK(nu_lora_set_load(s, nu_test_fixture("lora_second.safetensors"), NAN, 1.0f) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_lora_set_add_target(s, NU_LORA_PART_TE2, "clip2", w) == NU_ERR_INVALID_ARG); /* after a load */
    nu_lora_set_free(s);

    /* a LoRA for another model: nothing matches */
    nu_weights *other = nu_weights_new();
    NU_CHECK(nu_weights_add_file(other, nu_test_fixture("lora_io.safetensors"), NULL) == NU_OK);
    s = nu_lora_set_new();
    NU_CHECK(nu_lora_set_add_target(s, NU_LORA_PART_UNET, "unet", other) == NU_OK);
    NU_CHECK(nu_lora_set_load(s, nu_test_fixture("lora_second.safetensors"), 1.0f, 1.0f) == NU_ERR_NOT_FOUND);
    NU_CHECK_MSG(strstr(nu_last_error(), "none of its 2 layers matches"), "message: %s", nu_last_error());
    nu_lora_set_free(s);
    nu_weights_free(other);
    nu_weights_free(w);
}

/* ---------------------------------------------------------------- names */

typedef struct namelist {
    char **v;
    int n, cap;
    int n_layers; /* 2-D or 4-D .weight */
    char **layers;
} namelist;

static void add_name(namelist *l, const char *name, int ndim) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = realloc(l->v, sizeof(char *) * (size_t)l->cap);
        l->layers = realloc(l->layers, sizeof(char *) * (size_t)l->cap);
    }
    l->v[l->n++] = strdup(name);
    size_t len = strlen(name);
    if ((ndim == 2 || ndim == 4) && len > 7 && strcmp(name + len - 7, ".weight") == 0) l->layers[l->n_layers++] = l->v[l->n - 1];
}

static void on_unet_weight(const char *name, int ndim, const int64_t *ne, void *user) {
    (void)ne;
    add_name(user, name, ndim);
}

static void free_names(namelist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    free(l->layers);
}

static const char *resolve(const nu_lora_index *ix, const char *key) {
    nu_lora_key k;
    NU_CHECK(nu_lora_key_parse(key, &k));
    return nu_lora_index_resolve(ix, &k);
}

static void expect(const nu_lora_index *ix, const char *key, const char *want) {
    const char *got = resolve(ix, key);
    bool ok = want ? got && strcmp(got, want) == 0 : got == NULL;
    NU_CHECK_MSG(ok, "%s -> %s, expected %s", key, got ? got : "(none)", want ? want : "(none)");
}

static void test_names(void) {
    /* the real SD 1.5 UNet: every layer in kohya and PEFT form resolves back to itself, so no
     * two layers share a kohya name */
    namelist un = {0};
    nu_unet_config c;
    nu_unet_config_sd15(&c);
    NU_CHECK(nu_unet_weight_list(&c, on_unet_weight, &un) == NU_OK);
    NU_CHECK(un.n_layers > 250);
    nu_lora_index *ux = nu_lora_index_new(NU_LORA_PART_UNET, (const char *const *)un.v, un.n);
    int bad = 0;
    char key[NU_LORA_MAX_KEY];
    for (int i = 0; i < un.n_layers; i++) {
        const char *name = un.layers[i];
        size_t pl = strlen(name) - 7;
        static const char *const forms[] = {"lora_unet_%s.lora_down.weight", "unet.%s.lora_A.weight",
                                            "base_model.model.%s.lora_B.weight", "%s.lora.up.weight"};
        for (int f = 0; f < 4; f++) {
            char path[NU_LORA_MAX_KEY];
            memcpy(path, name, pl);
            path[pl] = '\0';
            if (f == 0)
                for (char *p = path; *p; p++)
                    if (*p == '.') *p = '_';
            snprintf(key, sizeof key, forms[f], path);
            const char *got = resolve(ux, key);
            if (!got || strcmp(got, name) != 0) {
                if (bad++ < 5) fprintf(stderr, "FAIL: %s -> %s, expected %s\n", key, got ? got : "(none)", name);
            }
        }
    }
    NU_CHECK_MSG(bad == 0, "%d of %d SD 1.5 layer keys did not resolve", bad, 4 * un.n_layers);

    /* kohya names of LDM paths (SD 1.5: layers_per_block 2, 4 levels) */
    static const char *const ldm[][2] = {
        {"input_blocks_0_0", "conv_in"},
        {"input_blocks_1_1_transformer_blocks_0_attn1_to_q", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"},
        {"input_blocks_2_1_proj_in", "down_blocks.0.attentions.1.proj_in"},
        {"input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv"},
        {"input_blocks_4_0_skip_connection", "down_blocks.1.resnets.0.conv_shortcut"},
        {"input_blocks_5_1_transformer_blocks_0_attn2_to_k", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k"},
        {"input_blocks_7_0_in_layers_2", "down_blocks.2.resnets.0.conv1"},
        {"input_blocks_11_0_emb_layers_1", "down_blocks.3.resnets.1.time_emb_proj"},
        {"middle_block_0_in_layers_2", "mid_block.resnets.0.conv1"},
        {"middle_block_1_transformer_blocks_0_ff_net_0_proj", "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj"},
        {"middle_block_2_out_layers_3", "mid_block.resnets.1.conv2"},
        {"output_blocks_2_1_conv", "up_blocks.0.upsamplers.0.conv"},
        {"output_blocks_3_0_skip_connection", "up_blocks.1.resnets.0.conv_shortcut"},
        {"output_blocks_4_1_transformer_blocks_0_attn1_to_out_0", "up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0"},
        {"output_blocks_5_2_conv", "up_blocks.1.upsamplers.0.conv"},
        {"output_blocks_8_2_conv", "up_blocks.2.upsamplers.0.conv"},
        {"output_blocks_11_1_proj_out", "up_blocks.3.attentions.2.proj_out"},
        {"output_blocks_11_0_out_layers_3", "up_blocks.3.resnets.2.conv2"},
        {"time_embed_0", "time_embedding.linear_1"},
        {"time_embed_2", "time_embedding.linear_2"},
        {"out_2", "conv_out"},
    };
    char want[NU_LORA_MAX_KEY];
    for (int i = 0; i < (int)(sizeof ldm / sizeof ldm[0]); i++) {
        snprintf(key, sizeof key, "lora_unet_%s.lora_up.weight", ldm[i][0]);
        snprintf(want, sizeof want, "%s.weight", ldm[i][1]);
        expect(ux, key, want);
    }
    /* dotted LDM and diffusers-processor forms, and names that must not resolve */
    expect(ux, "model.diffusion_model.input_blocks.1.1.proj_in.lora_down.weight",
           "down_blocks.0.attentions.0.proj_in.weight");
    expect(ux, "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight",
           "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.weight");
    expect(ux, "down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.down.weight",
           "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    expect(ux, "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.alpha",
           "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    expect(ux, "lora_unet_mid_block_resnets_0_conv1.lora_down.weight", "mid_block.resnets.0.conv1.weight");
    expect(ux, "lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight", NULL);
    expect(ux, "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_down.weight", NULL); /* SDXL depth 2 */
    expect(ux, "lora_unet_output_blocks_1_1_conv.lora_down.weight", NULL); /* not the last layer of up block 0 */
    expect(ux, "lora_unet_input_blocks_1_0_in_layers_0.lora_down.weight", NULL); /* a norm: no LoRA */
    expect(ux, "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", NULL); /* another part */

    /* CLIP ViT-L (HF names) */
    namelist te = {0};
    add_name(&te, "text_model.embeddings.token_embedding.weight", 2);
    add_name(&te, "text_model.embeddings.position_embedding.weight", 2);
    static const char *const parts[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                                        "mlp.fc1", "mlp.fc2", "layer_norm1", "layer_norm2"};
    for (int l = 0; l < 12; l++)
        for (int p = 0; p < 8; p++) {
            snprintf(key, sizeof key, "text_model.encoder.layers.%d.%s.weight", l, parts[p]);
            add_name(&te, key, p < 6 ? 2 : 1);
            snprintf(key, sizeof key, "text_model.encoder.layers.%d.%s.bias", l, parts[p]);
            add_name(&te, key, 1);
        }
    add_name(&te, "text_model.final_layer_norm.weight", 1);
    nu_lora_index *tx = nu_lora_index_new(NU_LORA_PART_TE, (const char *const *)te.v, te.n);
    expect(tx, "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
           "text_model.encoder.layers.0.self_attn.q_proj.weight");
    expect(tx, "lora_te1_text_model_encoder_layers_11_mlp_fc2.lora_up.weight", "text_model.encoder.layers.11.mlp.fc2.weight");
    expect(tx, "text_encoder.text_model.encoder.layers.10.self_attn.out_proj.lora_B.weight",
           "text_model.encoder.layers.10.self_attn.out_proj.weight");
    expect(tx, "text_encoder.text_model.encoder.layers.3.mlp.fc1.lora_linear_layer.down.weight",
           "text_model.encoder.layers.3.mlp.fc1.weight");
    expect(tx, "lora_te_encoder_layers_5_self_attn_v_proj.lora_down.weight", /* no text_model level */
           "text_model.encoder.layers.5.self_attn.v_proj.weight");
    expect(tx, "cond_stage_model.transformer.text_model.encoder.layers.1.self_attn.k_proj.lora_A.weight",
           "text_model.encoder.layers.1.self_attn.k_proj.weight");
    expect(tx, "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", NULL); /* SDXL's second */
    expect(tx, "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", NULL);
    expect(tx, "lora_te_text_model_encoder_layers_12_mlp_fc1.lora_down.weight", NULL);

    /* roles */
    nu_lora_key k;
    nu_lora_key_parse("lora_unet_x_to_k.hada_w1_a", &k);
    NU_CHECK(k.role == NU_LORA_ROLE_UNSUPPORTED);
    nu_lora_key_parse("lora_unet_x_to_k.dora_scale", &k);
    NU_CHECK(k.role == NU_LORA_ROLE_UNSUPPORTED);
    nu_lora_key_parse("down_blocks.0.resnets.0.conv1.weight", &k);
    NU_CHECK(k.role == NU_LORA_ROLE_UNKNOWN);
    nu_lora_key_parse("lora_unet_a_b.lora_up.weight", &k);
    NU_CHECK(k.role == NU_LORA_ROLE_UP && k.part == NU_LORA_PART_UNET && k.kohya && strcmp(k.path, "a_b") == 0 &&
             strcmp(k.module, "lora_unet_a_b") == 0);
    nu_lora_key_parse("text_encoder_2.text_model.x.lora_A.default.weight", &k);
    NU_CHECK(k.role == NU_LORA_ROLE_DOWN && k.part == NU_LORA_PART_TE2 && !k.kohya && strcmp(k.path, "text_model.x") == 0);
    char longkey[NU_LORA_MAX_KEY + 10];
    memset(longkey, 'a', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    NU_CHECK(!nu_lora_key_parse(longkey, &k) && k.role == NU_LORA_ROLE_UNKNOWN);

    nu_lora_index_free(ux);
    nu_lora_index_free(tx);
    free_names(&un);
    free_names(&te);
}

/* ---------------------------------------------------------------- prompts and arguments */

static void expect_tags(const char *prompt, const char *clean, int n, const char *const *names, const float *te,
                        const float *unet) {
    char *c = NULL;
    nu_lora_tag *t = NULL;
    int nt = -1;
    nu_status st = nu_lora_parse_prompt(prompt, &c, &t, &nt);
    NU_CHECK_MSG(st == NU_OK, "%s: %s", prompt, nu_last_error());
    if (st != NU_OK) return;
    NU_CHECK_MSG(strcmp(c, clean) == 0, "%s -> '%s', expected '%s'", prompt, c, clean);
    NU_CHECK_MSG(nt == n, "%s: %d tags, expected %d", prompt, nt, n);
    for (int i = 0; i < n && i < nt; i++)
        NU_CHECK_MSG(strcmp(t[i].name, names[i]) == 0 && t[i].te_weight == te[i] && t[i].unet_weight == unet[i],
                     "%s: tag %d = (%s, te %g, unet %g)", prompt, i, t[i].name, t[i].te_weight, t[i].unet_weight);
    free(c);
    free(t);
}

static void expect_bad_tag(const char *prompt, const char *why) {
    char *c = NULL;
    nu_lora_tag *t = NULL;
    int nt = 0;
    NU_CHECK_MSG(nu_lora_parse_prompt(prompt, &c, &t, &nt) == NU_ERR_INVALID_ARG && c == NULL && t == NULL,
                 "%s: accepted", prompt);
    NU_CHECK_MSG(strstr(nu_last_error(), why) != NULL, "%s: message '%s' lacks '%s'", prompt, nu_last_error(), why);
}

static void test_prompts(void) {
    expect_tags("a cat <lora:style:0.8>, detailed", "a cat , detailed", 1, (const char *[]){"style"},
                (const float[]){0.8f}, (const float[]){0.8f});
    expect_tags("<lora:a> x <lyco:b:0.5:0.25><lora: c :te=0.3:unet=-0.75>", " x ", 3, (const char *[]){"a", "b", "c"},
                (const float[]){1.0f, 0.5f, 0.3f}, (const float[]){1.0f, 0.25f, -0.75f});
    expect_tags("<lora:sub/d:te=0.4> (cat:1.2) <hypernet:h:1> a < b > c", " (cat:1.2) <hypernet:h:1> a < b > c", 1,
                (const char *[]){"sub/d"}, (const float[]){0.4f}, (const float[]){0.4f});
    expect_tags("no tags", "no tags", 0, NULL, NULL, NULL);
    expect_tags("", "", 0, NULL, NULL, NULL);
    expect_bad_tag("x <lora:>", "empty name");
    expect_bad_tag("x <lora: :1>", "empty name");
    expect_bad_tag("<lora:x:abc>", "not a number");
    expect_bad_tag("<lora:x:>", "not a number");
    expect_bad_tag("<lora:x:1e999>", "not a number");
    expect_bad_tag("<lora:x:1:2:3>", "too many weights");
    expect_bad_tag("<lora:x:dyn=4>", "unknown option");
    expect_bad_tag("a <lora:x:0.5", "no closing '>'");
    expect_bad_tag("<lora:x<lora:y:1>", "no closing '>'");
    NU_CHECK(strstr(nu_last_error(), "\"<lora:x\"") != NULL);

    /* NAME -> file */
    char path[512], dir[512];
    snprintf(dir, sizeof dir, "%s", nu_test_fixture("."));
    NU_CHECK(nu_lora_find_file(dir, "lora_kohya", path, sizeof path) == NU_OK &&
             strstr(path, "/lora_kohya.safetensors") != NULL);
    NU_CHECK(nu_lora_find_file(dir, "lora_kohya.safetensors", path, sizeof path) == NU_OK);
    NU_CHECK(nu_lora_find_file(dir, "missing", path, sizeof path) == NU_ERR_NOT_FOUND);
    NU_CHECK_MSG(strstr(nu_last_error(), "'missing' not found in") && strstr(nu_last_error(), "missing.safetensors"),
                 "message: %s", nu_last_error());
    NU_CHECK(nu_lora_find_file(dir, "../fixtures/lora_kohya", path, sizeof path) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_lora_find_file(dir, "a/../../x", path, sizeof path) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_lora_find_file(dir, "/etc/passwd", path, sizeof path) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_lora_find_file(dir, "..x", path, sizeof path) == NU_ERR_NOT_FOUND); /* a name, not a parent */
    NU_CHECK(nu_lora_find_file(NULL, "style", path, sizeof path) == NU_ERR_INVALID_ARG);
    NU_CHECK(strstr(nu_last_error(), "--lora-model-dir") != NULL);

    /* --lora FILE[:WEIGHT] */
    float w;
    NU_CHECK(nu_lora_parse_arg("style.safetensors:0.7", path, sizeof path, &w) == NU_OK &&
             strcmp(path, "style.safetensors") == 0 && w == 0.7f);
    NU_CHECK(nu_lora_parse_arg("dir/style.safetensors", path, sizeof path, &w) == NU_OK &&
             strcmp(path, "dir/style.safetensors") == 0 && w == 1.0f);
    NU_CHECK(nu_lora_parse_arg("C:\\loras\\x.safetensors", path, sizeof path, &w) == NU_OK &&
             strcmp(path, "C:\\loras\\x.safetensors") == 0 && w == 1.0f);
    NU_CHECK(nu_lora_parse_arg("a:b.safetensors:-1.5", path, sizeof path, &w) == NU_OK &&
             strcmp(path, "a:b.safetensors") == 0 && w == -1.5f);
    NU_CHECK(nu_lora_parse_arg(":0.5", path, sizeof path, &w) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_lora_parse_arg("", path, sizeof path, &w) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_lora_parse_arg("abcdef", path, 4, &w) == NU_ERR_INVALID_ARG);
}

int main(void) {
    NU_ASSERT(nu_st_open(nu_test_fixture("lora_io.safetensors"), &io) == NU_OK);
    test_names();
    test_prompts();
    test_errors();
    test_dialects();
    test_conv1x1_as_linear();
    test_q8_base();
    nu_st_close(io);
    return nu_test_summary("test_lora");
}
