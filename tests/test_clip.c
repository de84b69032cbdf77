/*
 * test_clip.c — the CLIP text encoders (src/models/clip.c, clip_names.c) against the sd1_tiny and
 * sd2_tiny references in ../shared/reference (transformers 4.30 CLIPTextModel outputs), loading
 * each model from BOTH its diffusers folder (text_encoder/, F16, canonical names) and its LDM
 * single file (F32; SD1 "cond_stage_model.transformer.text_model.*", SD2 OpenCLIP
 * "cond_stage_model.model.*" with fused in_proj and one extra unused resblock); plus the
 * --clip-skip semantics and the error messages for missing, mis-shaped and absent tensors.
 *
 * Tolerance vs the references: 1e-4 absolute. The outputs are layer-normed, O(1); the README
 * measures the reference's own f32 rounding at 1.2e-6 (SD1) / 9.7e-7 (SD2) against f64, and our
 * f32 run differs from torch's f32 run by the same kind of rounding (other summation orders in
 * GEMM and attention), so agreement is ~1e-6; 1e-4 leaves a wide margin while any real mistake
 * (activation, mask, scaling, layer choice) moves values by O(0.1).
 * Between the two file forms the check is bit-identical: every F16 value is exactly representable
 * in F32 and the files hold the same values (README: weights rounded to f16 at init), and the f16
 * GEMM path dequantizes to exactly those f32 values before the same sgemm; the tiny model's K
 * (32/128 <= 320) fits one dequantized tile, so the summation order is the same as well.
 */
#include <stdlib.h>
#include <string.h>

#include "models/clip.h"
#include "nu_test.h"
#include "nuance/io.h"

static const char *ref_dir;

static nu_json *read_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return nu_json_parse(buf, n);
}

typedef struct result {
    int64_t B, T, D;
    int n_run;
    float *hidden, *pooled, *layers[NU_CLIP_MAX_LAYERS + 1];
} result;

static void result_free(result *r) {
    free(r->hidden);
    free(r->pooled);
    for (int i = 0; i <= NU_CLIP_MAX_LAYERS; i++) free(r->layers[i]);
    memset(r, 0, sizeof *r);
}

static float *fetch(nu_tensor *t) {
    float *o = malloc(sizeof(float) * (size_t)nu_nelements(t));
    NU_ASSERT(o);
    nu_tensor_get_f32(t, o);
    return o;
}

/* Builds and runs the encoder; false (with the status checked) if the build reported an error. */
static bool run(nu_weights *w, const nu_clip_config *cfg, nu_tensor *ids, int clip_skip, result *r) {
    memset(r, 0, sizeof *r);
    nu_ctx_params cp = nu_ctx_params_init();
    cp.alloc_data = false;
    nu_ctx *ctx = nu_ctx_new(&cp);
    nu_nn nn;
    nu_nn_init(&nn, ctx, w, "clip");
    nu_clip_outputs out;
    nu_tensor *y = nu_clip_build(&nn, cfg, ids, clip_skip, &out);
    if (nu_nn_status(&nn) != NU_OK) {
        nu_ctx_free(ctx);
        return false;
    }
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, y);
    nu_graph_expand(g, out.pooled);
    for (int i = 0; i <= out.n_run; i++) nu_graph_expand(g, out.hidden_states[i]);
    nu_pool *pool = nu_pool_new(2);
    NU_CHECK(nu_graph_compute(g, pool) == NU_OK);
    r->B = y->ne[0];
    r->T = y->ne[1];
    r->D = y->ne[2];
    r->n_run = out.n_run;
    r->hidden = fetch(y);
    r->pooled = fetch(out.pooled);
    for (int i = 0; i <= out.n_run; i++) r->layers[i] = fetch(out.hidden_states[i]);
    nu_pool_free(pool);
    nu_graph_free(g);
    nu_ctx_free(ctx);
    return true;
}

static double max_abs(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = a[i] > b[i] ? (double)a[i] - b[i] : (double)b[i] - a[i];
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

/* Compares got with reference tensor `key`; returns the max abs error. */
static double compare(nu_st_file *refs, nu_ctx *ctx, const char *label, const char *key, const float *got, int64_t n) {
    nu_tensor *want = NULL;
    NU_CHECK_MSG(nu_st_get_f32(refs, ctx, key, &want) == NU_OK, "%s: reference %s: %s", label, key, nu_last_error());
    if (!want) return 1e30;
    NU_CHECK_MSG(nu_nelements(want) == n, "%s: %s has %lld values, got %lld", label, key, (long long)nu_nelements(want),
                 (long long)n);
    if (nu_nelements(want) != n) return 1e30;
    char name[256];
    snprintf(name, sizeof name, "%s %s", label, key);
    nu_test_close(name, got, want->data, n, 1e-4, 0);
    return max_abs(got, want->data, n);
}

typedef struct model_case {
    const char *name;      /* sd1_tiny / sd2_tiny          */
    nu_clip_source ldm_source;
    nu_clip_act act;
    int dim, heads;
    int diffusers_layers, ldm_layers;
    int n_layers_full, default_skip;
    int ref_layers;        /* text/hidden_states/0..ref_layers */
} model_case;

/* Loads one form. ldm: the single file with full names and the LDM config's tiny text config. */
static nu_weights *load_form(const model_case *mc, bool ldm, nu_clip_config *cfg) {
    char path[4096], jpath[4096];
    nu_weights *w = nu_weights_new();
    snprintf(path, sizeof path, "%s/%s/%s", ref_dir, mc->name, ldm ? "ldm/model.safetensors" : "diffusers/text_encoder/model.safetensors");
    snprintf(jpath, sizeof jpath, "%s/%s/%s", ref_dir, mc->name, ldm ? "ldm/config.json" : "diffusers/text_encoder/config.json");
    NU_CHECK_MSG(nu_weights_add_file(w, path, NULL) == NU_OK, "%s: %s", path, nu_last_error());
    nu_json *j = read_json(jpath);
    NU_CHECK_MSG(j != NULL, "cannot read %s", jpath);
    const nu_json *hf = j;
    if (ldm) { /* model.params.cond_stage_config.tiny_text_config: an HF CLIPTextConfig object */
        hf = nu_json_get(nu_json_get(nu_json_get(nu_json_get(j, "model"), "params"), "cond_stage_config"),
                         "tiny_text_config");
        NU_CHECK(hf != NULL);
    }
    nu_status s = nu_clip_load(w, hf, cfg);
    NU_CHECK_MSG(s == NU_OK, "%s: %s", path, nu_last_error());
    nu_json_free(j);
    const char *form = ldm ? "ldm" : "diffusers";
    NU_CHECK_MSG(cfg->source == (ldm ? mc->ldm_source : NU_CLIP_SOURCE_HF), "%s %s: source %s", mc->name, form,
                 nu_clip_source_name(cfg->source));
    NU_CHECK_MSG(cfg->dim == mc->dim && cfg->heads == mc->heads && cfg->act == mc->act && cfg->vocab == 49408 &&
                     cfg->n_pos == 77 && cfg->ff == 4 * mc->dim && cfg->eps == 1e-5f,
                 "%s %s: config dim %lld heads %d act %d", mc->name, form, (long long)cfg->dim, cfg->heads, cfg->act);
    NU_CHECK_MSG(cfg->n_layers == (ldm ? mc->ldm_layers : mc->diffusers_layers) &&
                     cfg->n_layers_full == mc->n_layers_full && cfg->default_skip == mc->default_skip,
                 "%s %s: layers %d full %d default skip %d", mc->name, form, cfg->n_layers, cfg->n_layers_full,
                 cfg->default_skip);
    return w;
}

static void check_model(const model_case *mc) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/refs/refs.safetensors", ref_dir, mc->name);
    nu_st_file *refs;
    if (nu_st_open(path, &refs) != NU_OK) {
        NU_CHECK_MSG(false, "%s: %s", path, nu_last_error());
        return;
    }
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *ids = NULL;
    NU_CHECK(nu_st_get(refs, ctx, "text/input_ids", &ids) == NU_OK && ids->type == NU_TYPE_I64);

    nu_clip_config cfg[2];
    nu_weights *w[2];
    result r[2], pen[2];
    double err_main = 0, err_pen = 0;
    for (int f = 0; f < 2; f++) {
        const char *form = f ? "ldm" : "diffusers";
        w[f] = load_form(mc, f == 1, &cfg[f]);
        char label[96];
        snprintf(label, sizeof label, "%s %s", mc->name, form);
        /* the pipeline's default: SD1 last layer, SD2 penultimate (= diffusers' last_hidden_state) */
        NU_CHECK(run(w[f], &cfg[f], ids, 0, &r[f]));
        int64_t n = r[f].B * r[f].T * r[f].D;
        NU_CHECK(r[f].n_run == mc->ref_layers);
        double e = compare(refs, ctx, label, "text/last_hidden_state", r[f].hidden, n);
        if (e > err_main) err_main = e;
        e = compare(refs, ctx, label, "text/pooler_output", r[f].pooled, r[f].B * r[f].D);
        if (e > err_main) err_main = e;
        for (int i = 0; i <= mc->ref_layers; i++) {
            char key[64];
            snprintf(key, sizeof key, "text/hidden_states/%d", i);
            e = compare(refs, ctx, label, key, r[f].layers[i], n);
            if (e > err_main) err_main = e;
        }
        /* hidden_states[-2] of the reference model + final LN: --clip-skip 2 on SD1; on SD2 the
         * reference model is already one layer short, so it is --clip-skip 3 */
        NU_CHECK(run(w[f], &cfg[f], ids, mc->default_skip + 1, &pen[f]));
        NU_CHECK(pen[f].n_run == mc->ref_layers - 1);
        err_pen = compare(refs, ctx, label, "text/penultimate_plus_final_ln", pen[f].hidden, n);
        /* explicit clip_skip == the default gives the default */
        result d;
        NU_CHECK(run(w[f], &cfg[f], ids, mc->default_skip, &d));
        nu_test_equal(label, d.hidden, r[f].hidden, n);
        result_free(&d);
    }
    /* the two forms hold the same values: identical outputs */
    int64_t n = r[0].B * r[0].T * r[0].D;
    char label[96];
    snprintf(label, sizeof label, "%s diffusers vs ldm last_hidden_state", mc->name);
    nu_test_equal(label, r[1].hidden, r[0].hidden, n);
    snprintf(label, sizeof label, "%s diffusers vs ldm pooled", mc->name);
    nu_test_equal(label, r[1].pooled, r[0].pooled, r[0].B * r[0].D);
    for (int i = 0; i <= mc->ref_layers; i++) {
        snprintf(label, sizeof label, "%s diffusers vs ldm hidden_states/%d", mc->name, i);
        nu_test_equal(label, r[1].layers[i], r[0].layers[i], n);
    }
    snprintf(label, sizeof label, "%s diffusers vs ldm clip-skip", mc->name);
    nu_test_equal(label, pen[1].hidden, pen[0].hidden, n);
    printf("%s: max abs error vs reference %.3g (last_hidden_state, pooler_output, hidden_states/*), %.3g "
           "(penultimate_plus_final_ln); diffusers (F16) and ldm (F32) forms bit-identical\n",
           mc->name, err_main, err_pen);

    if (mc->act == NU_CLIP_ACT_GELU) {
        /* SD2: --clip-skip 1 wants OpenCLIP's last layer: the single file has it, the diffusers
         * folder does not (one clear error) */
        result last;
        NU_CHECK(run(w[1], &cfg[1], ids, 1, &last) && last.n_run == mc->ldm_layers);
        result_free(&last);
        NU_CHECK(!run(w[0], &cfg[0], ids, 1, &last));
        NU_CHECK_MSG(strstr(nu_last_error(), "clip: --clip-skip 1 selects text layer 4 of 4, but this text encoder "
                                             "holds 3 layers") && !strchr(nu_last_error(), '\n'),
                     "message: %s", nu_last_error());
    }
    /* out of range */
    result bad;
    NU_CHECK(!run(w[0], &cfg[0], ids, mc->n_layers_full + 1, &bad));
    NU_CHECK_MSG(strstr(nu_last_error(), "is out of range"), "message: %s", nu_last_error());

    for (int f = 0; f < 2; f++) {
        result_free(&r[f]);
        result_free(&pen[f]);
        nu_weights_free(w[f]);
    }
    nu_ctx_free(ctx);
    nu_st_close(refs);
}

/* Load-time q8_0 conversion (--type q8_0) of every matrix with rows of a multiple of 32 values:
 * on sd1_tiny that is every linear weight and both embedding tables (D = 32).
 * Tolerance: q8_0 rounds each value to a step of (block max)/127; for these uniform-initialised
 * weights that is relative RMS noise of ~1/254 per matrix (NMSE ~1.6e-5), and the output passes
 * through ~22 quantized matrices (2 tables, 5 per layer), so NMSE <= 22 * 1.6e-5 ~ 3.5e-4 if the
 * errors added up without any averaging; the check uses NMSE 1e-3. */
static void test_q8_0(void) {
    char path[4096], rpath[4096];
    snprintf(path, sizeof path, "%s/sd1_tiny/diffusers/text_encoder/model.safetensors", ref_dir);
    snprintf(rpath, sizeof rpath, "%s/sd1_tiny/refs/refs.safetensors", ref_dir);
    nu_weights *w = nu_weights_new();
    NU_CHECK(nu_weights_add_file(w, path, NULL) == NU_OK);
    nu_weights_set_matrix_type(w, NU_TYPE_Q8_0);
    nu_json *hf = nu_json_parse("{\"num_attention_heads\": 4}", 26);
    nu_clip_config cfg;
    NU_CHECK(nu_clip_load(w, hf, &cfg) == NU_OK);
    NU_CHECK(nu_weights_get(w, "text_model.embeddings.token_embedding.weight")->type == NU_TYPE_Q8_0);
    nu_st_file *refs;
    NU_CHECK(nu_st_open(rpath, &refs) == NU_OK);
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *ids = NULL, *want = NULL;
    NU_CHECK(nu_st_get(refs, ctx, "text/input_ids", &ids) == NU_OK);
    NU_CHECK(nu_st_get_f32(refs, ctx, "text/last_hidden_state", &want) == NU_OK);
    result r;
    NU_CHECK(run(w, &cfg, ids, 0, &r));
    int64_t n = r.B * r.T * r.D;
    nu_test_nmse("sd1_tiny q8_0 last_hidden_state", r.hidden, want->data, n, 1e-3);
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)r.hidden[i] - ((float *)want->data)[i];
        num += d * d;
        den += (double)((float *)want->data)[i] * ((float *)want->data)[i];
    }
    printf("sd1_tiny q8_0 weights: NMSE %.3g, max abs error %.3g\n", num / den, max_abs(r.hidden, want->data, n));
    result_free(&r);
    nu_ctx_free(ctx);
    nu_st_close(refs);
    nu_json_free(hf);
    nu_weights_free(w);
}

static bool one_line(const char *msg) { return *msg && !strchr(msg, '\n'); }

/* Builds the SD1 diffusers encoder after `tamper` and returns the build status. */
static nu_status build_status(nu_weights *w, const nu_clip_config *cfg) {
    nu_ctx_params cp = nu_ctx_params_init();
    cp.alloc_data = false;
    nu_ctx *ctx = nu_ctx_new(&cp);
    nu_ctx_set_alloc_data(ctx, true);
    nu_tensor *ids = nu_new_tensor_2d(ctx, NU_TYPE_I32, 1, 77);
    nu_ctx_set_alloc_data(ctx, false);
    nu_nn nn;
    nu_nn_init(&nn, ctx, w, "clip");
    nu_clip_build(&nn, cfg, ids, 0, NULL);
    nu_status s = nu_nn_status(&nn);
    nu_ctx_free(ctx);
    return s;
}

static void test_errors(void) {
    char path[4096], ldm[4096];
    snprintf(path, sizeof path, "%s/sd1_tiny/diffusers/text_encoder/model.safetensors", ref_dir);
    snprintf(ldm, sizeof ldm, "%s/sd2_tiny/ldm/model.safetensors", ref_dir);
    nu_clip_config cfg;

    /* no text encoder in the store (an empty one; a UNet-only file is the same case) */
    nu_weights *w = nu_weights_new();
    NU_CHECK(nu_clip_load(w, NULL, &cfg) == NU_ERR_NOT_FOUND);
    NU_CHECK_MSG(strstr(nu_last_error(), "clip: no text encoder weights found") && one_line(nu_last_error()),
                 "message: %s", nu_last_error());
    nu_weights_free(w);

    /* heads cannot come from shapes of a 32-wide model: without config.json, one clear line */
    w = nu_weights_new();
    NU_CHECK(nu_weights_add_file(w, path, NULL) == NU_OK);
    NU_CHECK(nu_clip_load(w, NULL, &cfg) == NU_ERR_INVALID_ARG);
    NU_CHECK_MSG(strstr(nu_last_error(), "pass its config.json") && one_line(nu_last_error()), "message: %s",
                 nu_last_error());
    nu_json *hf = nu_json_parse("{\"num_attention_heads\": 4, \"hidden_act\": \"quick_gelu\"}", 54);
    NU_CHECK(hf && nu_clip_load(w, hf, &cfg) == NU_OK && cfg.heads == 4);
    NU_CHECK(build_status(w, &cfg) == NU_OK);

    /* a renamed tensor: missing under its canonical name */
    NU_CHECK(nu_weights_rename(w, "text_model.encoder.layers.2.mlp.fc2.weight", "text_model.encoder.layers.2.mlp.fc2.w"));
    NU_CHECK(build_status(w, &cfg) == NU_ERR_NOT_FOUND);
    NU_CHECK_MSG(!strcmp(nu_last_error(), "clip: missing tensor text_model.encoder.layers.2.mlp.fc2.weight"),
                 "message: %s", nu_last_error());
    NU_CHECK(nu_weights_rename(w, "text_model.encoder.layers.2.mlp.fc2.w", "text_model.encoder.layers.2.mlp.fc2.weight"));
    /* a truncated tensor (the first 100 of its 128 rows) */
    NU_CHECK(nu_weights_rename(w, "text_model.encoder.layers.3.mlp.fc1.weight", "full_fc1"));
    NU_CHECK(nu_weights_add_slice(w, "text_model.encoder.layers.3.mlp.fc1.weight", "full_fc1", 0, 100));
    NU_CHECK(build_status(w, &cfg) == NU_ERR_FORMAT);
    NU_CHECK_MSG(!strcmp(nu_last_error(),
                         "clip: tensor text_model.encoder.layers.3.mlp.fc1.weight has shape f16 [100, 32], expected [128, 32]"),
                 "message: %s", nu_last_error());
    nu_weights_free(w);

    /* OpenCLIP: a fused in_proj_weight that is not [3D, D] */
    w = nu_weights_new();
    NU_CHECK(nu_weights_add_file(w, ldm, NULL) == NU_OK);
    NU_CHECK(nu_weights_rename(w, "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight", "full"));
    NU_CHECK(nu_weights_add_slice(w, "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight", "full", 0, 47));
    NU_CHECK(nu_clip_load(w, hf, &cfg) == NU_ERR_FORMAT);
    NU_CHECK_MSG(strstr(nu_last_error(), "clip: tensor cond_stage_model.model.transformer.resblocks.1.attn."
                                         "in_proj_weight has shape f32 [47, 16], expected [3*D, D]") &&
                     one_line(nu_last_error()),
                 "message: %s", nu_last_error());
    nu_weights_free(w);

    /* the same file loaded with the outer prefix stripped (as a pipeline filtering by
     * "cond_stage_model." would) maps to the same canonical names */
    w = nu_weights_new();
    NU_CHECK(nu_weights_add_file(w, ldm, "cond_stage_model.") == NU_OK);
    nu_json_free(hf);
    hf = nu_json_parse("{\"num_attention_heads\": 2}", 26);
    NU_CHECK(nu_clip_load(w, hf, &cfg) == NU_OK && cfg.source == NU_CLIP_SOURCE_OPENCLIP && cfg.n_layers == 4 &&
             cfg.act == NU_CLIP_ACT_GELU && cfg.heads == 2);
    NU_CHECK(nu_weights_get(w, "text_model.encoder.layers.3.self_attn.v_proj.bias") != NULL);
    nu_clip_source again;
    NU_CHECK(nu_clip_names_canonicalize(w, &again) == NU_OK && again == NU_CLIP_SOURCE_HF); /* idempotent */
    NU_CHECK(build_status(w, &cfg) == NU_OK);
    nu_json_free(hf);
    nu_weights_free(w);

    /* a truncated file: the loader names the file in one line */
    char tmp[] = "/tmp/nu_test_clip_XXXXXX";
    int fd = mkstemp(tmp);
    NU_CHECK(fd >= 0);
    FILE *in = fopen(path, "rb"), *out = fdopen(fd, "wb");
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, in); /* the first MiB of 3.1 */
    fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    w = nu_weights_new();
    NU_CHECK(nu_weights_add_file(w, tmp, NULL) == NU_ERR_FORMAT);
    NU_CHECK_MSG(strstr(nu_last_error(), tmp) && one_line(nu_last_error()), "message: %s", nu_last_error());
    nu_weights_free(w);
    remove(tmp);
}

int main(void) {
    const char *shared = nu_test_require_shared("test_clip");
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/reference", shared);
    ref_dir = dir;
    static const model_case sd1 = {"sd1_tiny", NU_CLIP_SOURCE_LDM_HF, NU_CLIP_ACT_QUICK_GELU, 32, 4, 4, 4, 4, 1, 4};
    /* SD2: the diffusers text encoder has 3 layers, the single file OpenCLIP's 4 (the last unused) */
    static const model_case sd2 = {"sd2_tiny", NU_CLIP_SOURCE_OPENCLIP, NU_CLIP_ACT_GELU, 16, 2, 3, 4, 4, 2, 3};
    check_model(&sd1);
    check_model(&sd2);
    test_errors();
    test_q8_0();
    return nu_test_summary("test_clip");
}
