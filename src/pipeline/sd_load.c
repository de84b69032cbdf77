/*
 * sd_load.c — loading a Stable Diffusion 1.x / 2.x model as users have it (nu_sd_load):
 *   - a diffusers folder: model_index.json with unet/, vae/, text_encoder/, tokenizer/,
 *     scheduler/ (each may be a directory, a symlink, or a link stored as a small text file
 *     naming the target, as in a checkout without symlinks);
 *   - a single file (.safetensors or .gguf, detected by content) in the LDM/CompVis naming:
 *     model.diffusion_model.*, first_stage_model.*, cond_stage_model.* (SD1 HF CLIP names or SD2
 *     OpenCLIP names), with an optional LDM config (JSON form of the .yaml) for what shapes
 *     cannot say;
 *   - a separate VAE (--vae), a vocabulary (--vocab), load-time weight conversion (--type).
 * The family (SD1/SD2, eps/v, 4/9 channels) is detected from names and shapes and the configs;
 * every problem is one line in nu_last_error(). Tested by tests/test_sd_pipeline.c.
 */
#include <ctype.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pipeline/sd_internal.h"

#define PATH_MAX_LEN 4096

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* dir/name as a directory: itself, or the target of a link stored as a small text file
 * (../shared/reference/sd1_tiny/diffusers_inpaint/unet holds "../unet_inpaint9"). */
static bool sub_dir(const char *dir, const char *name, char *out, size_t len) {
    if ((size_t)snprintf(out, len, "%s/%s", dir, name) >= len) return false;
    if (is_dir(out)) return true;
    if (!is_file(out)) return false;
    FILE *f = fopen(out, "rb");
    if (!f) return false;
    char target[1024];
    size_t n = fread(target, 1, sizeof target - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    if (more || n == 0) return false;
    target[n] = 0;
    while (n && isspace((unsigned char)target[n - 1])) target[--n] = 0;
    if (!n || memchr(target, 0, n) || strchr(target, '\n')) return false;
    int k = target[0] == '/' ? snprintf(out, len, "%s", target) : snprintf(out, len, "%s/%s", dir, target);
    if (k < 0 || (size_t)k >= len) return false;
    return is_dir(out);
}

nu_status sd_error_prefix(nu_status s, const char *fmt, ...) {
    char prev[1024], pre[1024];
    snprintf(prev, sizeof prev, "%s", nu_last_error());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    return nu_error(s, "%s%s", pre, prev);
}

/* out = a/b; false if it does not fit. */
static bool join(char *out, size_t len, const char *a, const char *b) {
    int k = snprintf(out, len, "%s/%s", a, b);
    return k >= 0 && (size_t)k < len;
}

/* Model name for metadata: the file name without extension, or the folder name. */
static void model_name(const char *path, char *out, size_t len) {
    char buf[PATH_MAX_LEN];
    snprintf(buf, sizeof buf, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    const char *b = strrchr(buf, '/');
    b = b ? b + 1 : buf;
    size_t bl = strlen(b) < len - 1 ? strlen(b) : len - 1; /* a long name is cut */
    memcpy(out, b, bl);
    out[bl] = 0;
    char *dot = strrchr(out, '.');
    if (dot && dot != out && (!strcmp(dot, ".safetensors") || !strcmp(dot, ".gguf") || !strcmp(dot, ".ckpt")))
        *dot = 0;
}

void nu_sd_load_params_init(nu_sd_load_params *p) {
    memset(p, 0, sizeof *p);
    p->weight_type = NU_TYPE_COUNT;
}

const nu_sd_info *nu_sd_get_info(const nu_sd *sd) { return &sd->info; }

void nu_sd_free(nu_sd *sd) {
    if (!sd) return;
    nu_unet_free(sd->unet);
    nu_vae_free(sd->vae);
    nu_weights_free(sd->clip_w);
    nu_clip_tokenizer_free(sd->tok);
    nu_pool_free(sd->pool);
    nu_json_free(sd->sched_json);
    for (int i = 0; i < sd->n_loras; i++) free(sd->lora_paths[i]);
    free(sd->lora_paths);
    free(sd->lora_weights);
    free(sd->lora_dir);
    free(sd);
}

void nu_sd_cancel(nu_sd *sd) {
    if (!sd) return;
    sd->cancel = 1;
    nu_pool_cancel(sd->pool);
}

/* ---------------------------------------------------------------- pieces */

/* The text encoder of a diffusers folder: text_encoder/model[.fp16].safetensors + config.json. */
static nu_status load_text_folder(nu_sd *sd, const char *dir, nu_type type) {
    static const char *const names[] = {"model.safetensors", "model.fp16.safetensors"};
    char file[PATH_MAX_LEN + 64] = "", cfg[PATH_MAX_LEN + 64];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (join(file, sizeof file, dir, names[i]) && is_file(file)) break;
        file[0] = 0;
    }
    if (!file[0]) {
        if (join(file, sizeof file, dir, "pytorch_model.bin") && is_file(file))
            return nu_error(NU_ERR_UNSUPPORTED, "%s: the text encoder is in PyTorch .bin format; convert it to "
                                                "safetensors", dir);
        return nu_error(NU_ERR_NOT_FOUND, "%s: no text encoder weights (model.safetensors)", dir);
    }
    sd->clip_w = nu_weights_new();
    if (!sd->clip_w) return nu_error(NU_ERR_NOMEM, "out of memory");
    if (type != NU_TYPE_COUNT) nu_weights_set_matrix_type(sd->clip_w, type);
    nu_status s = nu_weights_add_file(sd->clip_w, file, NULL);
    if (s != NU_OK) return s;
    nu_json *j = NULL;
    if (join(cfg, sizeof cfg, dir, "config.json") && is_file(cfg) && (s = nu_json_load_file(cfg, &j)) != NU_OK) return s;
    s = nu_clip_load(sd->clip_w, j, &sd->clip_cfg);
    nu_json_free(j);
    if (s != NU_OK) return sd_error_prefix(s, "%s: ", file);
    return NU_OK;
}

/* The text encoder of a single file (cond_stage_model.*); hf: an HF CLIPTextConfig or NULL. */
static nu_status load_text_single(nu_sd *sd, const char *file, const nu_json *hf, nu_type type) {
    sd->clip_w = nu_weights_new();
    if (!sd->clip_w) return nu_error(NU_ERR_NOMEM, "out of memory");
    if (type != NU_TYPE_COUNT) nu_weights_set_matrix_type(sd->clip_w, type);
    nu_status s = nu_weights_add_file(sd->clip_w, file, "cond_stage_model.");
    if (s != NU_OK) return s;
    if (nu_weights_count(sd->clip_w) == 0)
        return nu_error(NU_ERR_NOT_FOUND, "%s: no text encoder (cond_stage_model.*) in this file", file);
    s = nu_clip_load(sd->clip_w, hf, &sd->clip_cfg);
    if (s != NU_OK) return sd_error_prefix(s, "%s: ", file);
    return NU_OK;
}

/* A vocabulary next to a single file: <dir>/tokenizer/, bpe_simple_vocab_16e6.txt.gz, vocab.json. */
static bool find_vocab_near(const char *model, char *out, size_t len) {
    char dir[PATH_MAX_LEN];
    snprintf(dir, sizeof dir, "%s", model);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    static const char *const cands[] = {"tokenizer/vocab.json", "bpe_simple_vocab_16e6.txt.gz", "vocab.json"};
    for (size_t i = 0; i < sizeof cands / sizeof *cands; i++) {
        if ((size_t)snprintf(out, len, "%s/%s", dir, cands[i]) < len && is_file(out)) return true;
    }
    return false;
}

/* A1111's is_using_v_parameterization_for_sd2 (modules/sd_models_config.py): the UNet on
 * x = 0.5 [1,4,8,8], t = 999, context 0.5 [1,2,Dc]; mean(out - x) < -1 means v-prediction. */
static nu_status detect_v(nu_sd *sd, bool *is_v) {
    const nu_unet_config *c = nu_unet_get_config(sd->unet);
    int64_t n = 4 * 8 * 8, nc = 2 * (int64_t)c->context_dim;
    float *x = malloc(sizeof(float) * (size_t)n), *o = malloc(sizeof(float) * (size_t)n);
    float *ctx = malloc(sizeof(float) * (size_t)nc), t = 999.f;
    if (!x || !o || !ctx) {
        free(x), free(o), free(ctx);
        return nu_error(NU_ERR_NOMEM, "out of memory");
    }
    for (int64_t i = 0; i < n; i++) x[i] = 0.5f;
    for (int64_t i = 0; i < nc; i++) ctx[i] = 0.5f;
    nu_status s = nu_unet_eval(sd->unet, sd->pool, 1, 8, 8, 2, x, &t, ctx, o);
    if (s == NU_OK) {
        double m = 0;
        for (int64_t i = 0; i < n; i++) m += (double)o[i] - x[i];
        *is_v = m / (double)n < -1;
    }
    free(x), free(o), free(ctx);
    return s;
}

/* ---------------------------------------------------------------- nu_sd_load */

static nu_status load_folder(nu_sd *sd, const nu_sd_load_params *p) {
    const char *root = p->model;
    char mi[PATH_MAX_LEN + 32], dir[PATH_MAX_LEN + 64];
    nu_status s;
    if (!join(mi, sizeof mi, root, "model_index.json")) return nu_error(NU_ERR_INVALID_ARG, "path too long");
    char unet_dir[PATH_MAX_LEN + 64];
    if (!sub_dir(root, "unet", unet_dir, sizeof unet_dir)) {
        if (!is_file(mi))
            return nu_error(NU_ERR_NOT_FOUND, "%s: not a diffusers folder (no model_index.json, no unet/) and not a "
                                              "model file", root);
        return nu_error(NU_ERR_NOT_FOUND, "%s: diffusers folder without unet/", root);
    }
    if (is_file(mi)) { /* the pipeline class: informational, but refuse what is not SD 1/2 */
        nu_json *j = NULL;
        if ((s = nu_json_load_file(mi, &j)) != NU_OK) return s;
        const char *cls = nu_json_string(j, "_class_name", "");
        bool ok = !*cls || strstr(cls, "StableDiffusion") == cls;
        if (ok && (strstr(cls, "XL") || strstr(cls, "3") || strstr(cls, "Upscale") || strstr(cls, "Depth")))
            ok = false;
        char clsb[128];
        snprintf(clsb, sizeof clsb, "%s", cls);
        nu_json_free(j);
        if (!ok) return nu_error(NU_ERR_UNSUPPORTED, "%s: pipeline %s is not Stable Diffusion 1.x/2.x", mi, clsb);
    }
    nu_unet_load_params up = nu_unet_load_params_init();
    up.matrix_type = p->weight_type;
    if ((s = nu_unet_load(unet_dir, &up, &sd->unet)) != NU_OK) return s;

    nu_vae_params vp = nu_vae_params_init();
    if (p->vae) {
        if ((s = nu_vae_load(p->vae, &vp, &sd->vae)) != NU_OK) return s;
    } else {
        if (!sub_dir(root, "vae", dir, sizeof dir)) return nu_error(NU_ERR_NOT_FOUND, "%s: no vae/ (or pass --vae)", root);
        if ((s = nu_vae_load(dir, &vp, &sd->vae)) != NU_OK) return s;
    }
    if (!sub_dir(root, "text_encoder", dir, sizeof dir))
        return nu_error(NU_ERR_NOT_FOUND, "%s: no text_encoder/", root);
    if ((s = load_text_folder(sd, dir, p->weight_type)) != NU_OK) return s;

    if (p->vocab) {
        s = nu_clip_tokenizer_load(p->vocab, &sd->tok);
    } else if (sub_dir(root, "tokenizer", dir, sizeof dir)) {
        s = nu_clip_tokenizer_load(dir, &sd->tok);
    } else {
        s = nu_clip_tokenizer_load(NULL, &sd->tok);
        if (s != NU_OK) s = sd_error_prefix(s, "%s: no tokenizer/ folder; ", root);
    }
    if (s != NU_OK) return s;

    /* scheduler_config.json: class, betas, prediction type, spacing */
    sd->sched_kind = NU_SCHED_PNDM;
    sd->beta_schedule = NU_BETA_SCALED_LINEAR;
    sd->n_train = 1000;
    sd->beta_start = 0.00085;
    sd->beta_end = 0.012;
    nu_prediction pred = NU_PRED_EPS;
    if (sub_dir(root, "scheduler", dir, sizeof dir)) {
        if (join(sd->sched_label, sizeof sd->sched_label, dir, "scheduler_config.json") && is_file(sd->sched_label)) {
            if ((s = nu_json_load_file(sd->sched_label, &sd->sched_json)) != NU_OK) return s;
            nu_sched_config c;
            nu_sched_config_init(&c, NU_SCHED_PNDM);
            if ((s = nu_sched_config_from_json_obj(&c, sd->sched_json, sd->sched_label)) != NU_OK) return s;
            sd->sched_kind = c.kind;
            sd->beta_schedule = c.beta_schedule;
            sd->n_train = c.num_train_timesteps;
            sd->beta_start = c.beta_start;
            sd->beta_end = c.beta_end;
            pred = c.prediction_type;
        }
    }
    if (!sd->sched_json) { /* no scheduler config: SD's own (PNDM, leading, offset 1) */
        static const char def[] = "{\"_class_name\": \"PNDMScheduler\", \"beta_start\": 0.00085, \"beta_end\": 0.012, "
                                  "\"beta_schedule\": \"scaled_linear\", \"set_alpha_to_one\": false, "
                                  "\"skip_prk_steps\": true, \"steps_offset\": 1, \"clip_sample\": false}";
        sd->sched_json = nu_json_parse(def, sizeof def - 1);
        if (!sd->sched_json) return nu_error(NU_ERR_NOMEM, "out of memory");
        snprintf(sd->sched_label, sizeof sd->sched_label, "(default SD scheduler config)");
    }
    sd->fam.prediction = pred;
    sd->folder = true;
    snprintf(sd->default_sampler, sizeof sd->default_sampler, "%s", nu_sched_kind_name(sd->sched_kind));
    return NU_OK;
}

static nu_status load_single(nu_sd *sd, const nu_sd_load_params *p, bool *pred_known) {
    const char *file = p->model;
    nu_status s;
    nu_json *cfg = NULL;
    if (p->model_config && (s = nu_json_load_file(p->model_config, &cfg)) != NU_OK) return s;
    const nu_json *mp = nu_json_get(nu_json_get(cfg, "model"), "params");
    if (cfg && !mp) {
        nu_json_free(cfg);
        return nu_error(NU_ERR_FORMAT, "%s: no model.params (not an LDM config)", p->model_config);
    }

    nu_unet_load_params up = nu_unet_load_params_init();
    up.matrix_type = p->weight_type;
    up.config_path = p->model_config;
    if ((s = nu_unet_load(file, &up, &sd->unet)) != NU_OK) goto done;

    nu_vae_params vp = nu_vae_params_init();
    const nu_json *dd = nu_json_get(nu_json_get(nu_json_get(mp, "first_stage_config"), "params"), "ddconfig");
    vp.norm_groups = (int)nu_json_number(dd, "norm_num_groups", nu_json_number(dd, "norm_num_groups_NOTE", 0));
    vp.scaling_factor = (float)nu_json_number(mp, "scale_factor", 0);
    if ((s = nu_vae_load(p->vae ? p->vae : file, &vp, &sd->vae)) != NU_OK) goto done;

    /* text: an HF CLIPTextConfig from the config when it has one (tiny test models say heads) */
    const nu_json *cs = nu_json_get(nu_json_get(mp, "cond_stage_config"), "tiny_text_config");
    if (!cs) cs = nu_json_get(nu_json_get(mp, "cond_stage_config"), "text_config");
    if ((s = load_text_single(sd, file, cs, p->weight_type)) != NU_OK) goto done;

    char vocab[PATH_MAX_LEN + 64];
    if (p->vocab) {
        s = nu_clip_tokenizer_load(p->vocab, &sd->tok);
    } else if (find_vocab_near(file, vocab, sizeof vocab)) {
        s = nu_clip_tokenizer_load(vocab, &sd->tok);
    } else {
        s = nu_clip_tokenizer_load(NULL, &sd->tok);
        if (s != NU_OK)
            s = sd_error_prefix(s, "%s: single-file checkpoints carry no CLIP vocabulary; ", file);
    }
    if (s != NU_OK) goto done;

    /* betas: LDM linear_start/linear_end/timesteps ("linear" in LDM = scaled_linear here) */
    sd->beta_schedule = NU_BETA_SCALED_LINEAR;
    sd->n_train = (int)nu_json_number(mp, "timesteps", 1000);
    sd->beta_start = nu_json_number(mp, "linear_start", 0.00085);
    sd->beta_end = nu_json_number(mp, "linear_end", 0.012);
    if (sd->n_train < 2 || sd->n_train > 100000 || !(sd->beta_start > 0) || !(sd->beta_end < 1) ||
        !(sd->beta_start < sd->beta_end)) {
        s = nu_error(NU_ERR_FORMAT, "%s: bad timesteps / linear_start / linear_end", p->model_config);
        goto done;
    }
    const char *par = nu_json_string(mp, "parameterization", NULL);
    *pred_known = par != NULL;
    sd->fam.prediction = par && !strcmp(par, "v") ? NU_PRED_V : NU_PRED_EPS;
    sd->folder = false;
    snprintf(sd->default_sampler, sizeof sd->default_sampler, "euler_a");
done:
    nu_json_free(cfg);
    return s;
}

nu_status nu_sd_load(const nu_sd_load_params *p, nu_sd **out) {
    *out = NULL;
    if (!p || !p->model || !*p->model) return nu_error(NU_ERR_INVALID_ARG, "no model given (-m FILE or FOLDER)");
    if (strlen(p->model) > PATH_MAX_LEN - 128) return nu_error(NU_ERR_INVALID_ARG, "model path too long");
    if (p->n_threads < 0 || p->n_threads > 1024) return nu_error(NU_ERR_INVALID_ARG, "bad thread count %d", p->n_threads);
    if (p->weight_type != NU_TYPE_COUNT && p->weight_type != NU_TYPE_F32 && p->weight_type != NU_TYPE_F16 &&
        p->weight_type != NU_TYPE_BF16 && !nu_type_info(p->weight_type)->is_quant)
        return nu_error(NU_ERR_INVALID_ARG, "--type %s: use f32, f16, bf16, q8_0, q4_0, q4_1, q5_0 or q5_1",
                        nu_type_name(p->weight_type));
    bool folder = is_dir(p->model);
    if (!folder && !is_file(p->model)) return nu_error(NU_ERR_IO, "%s: no such file or folder", p->model);
    if (folder && p->model_config)
        return nu_error(NU_ERR_INVALID_ARG, "--model-config is for single-file checkpoints; %s is a folder", p->model);

    nu_sd *sd = calloc(1, sizeof *sd);
    if (!sd) return nu_error(NU_ERR_NOMEM, "out of memory");
    nu_status s = NU_OK;
    sd->pool = nu_pool_new(p->n_threads);
    if (!sd->pool) {
        s = nu_error(NU_ERR_NOMEM, "cannot create the thread pool");
        goto fail;
    }
    bool pred_known = true;
    s = folder ? load_folder(sd, p) : load_single(sd, p, &pred_known);
    if (s != NU_OK) goto fail;

    /* ---- consistency and family */
    const nu_unet_config *uc = nu_unet_get_config(sd->unet);
    const nu_vae_config *vc = nu_vae_get_config(sd->vae);
    if (!vc->has_encoder || !vc->has_decoder) {
        s = nu_error(NU_ERR_UNSUPPORTED, "%s: the VAE lacks its %s", p->vae ? p->vae : p->model,
                     vc->has_decoder ? "encoder" : "decoder");
        goto fail;
    }
    if (uc->out_channels != vc->latent_channels ||
        (uc->in_channels != vc->latent_channels && uc->in_channels != 2 * vc->latent_channels + 1)) {
        s = nu_error(NU_ERR_UNSUPPORTED, "%s: UNet with %d->%d channels does not fit a VAE of %d latent channels",
                     p->model, uc->in_channels, uc->out_channels, vc->latent_channels);
        goto fail;
    }
    if (uc->context_dim != sd->clip_cfg.dim) {
        s = nu_error(NU_ERR_UNSUPPORTED, "%s: the UNet expects text features of width %d but the text encoder gives %lld",
                     p->model, uc->context_dim, (long long)sd->clip_cfg.dim);
        goto fail;
    }
    if (nu_clip_tokenizer_vocab_size(sd->tok) > sd->clip_cfg.vocab) {
        s = nu_error(NU_ERR_UNSUPPORTED, "vocabulary of %d tokens does not fit the text encoder's %lld embeddings",
                     nu_clip_tokenizer_vocab_size(sd->tok), (long long)sd->clip_cfg.vocab);
        goto fail;
    }
    bool sd2 = uc->family == NU_UNET_FAMILY_SD2;
    /* SD 2.x pads prompts with '!' (id 0), as open_clip and the SD2 diffusers tokenizers do */
    if (sd2 && nu_clip_tokenizer_pad(sd->tok) == nu_clip_tokenizer_eos(sd->tok) &&
        (s = nu_clip_tokenizer_set_pad(sd->tok, "!")) != NU_OK)
        goto fail;
    if (uc->prediction != NU_UNET_PRED_UNKNOWN && !folder)
        sd->fam.prediction = uc->prediction == NU_UNET_PRED_V ? NU_PRED_V : NU_PRED_EPS;
    if (p->prediction) {
        nu_prediction pr;
        if (nu_prediction_from_name(p->prediction, &pr) != NU_OK || (pr != NU_PRED_EPS && pr != NU_PRED_V)) {
            s = nu_error(NU_ERR_INVALID_ARG, "--prediction %s: use eps or v", p->prediction);
            goto fail;
        }
        sd->fam.prediction = pr;
        sd->pred_override = true;
    } else if (!pred_known && sd2 && uc->in_channels == vc->latent_channels) {
        bool v = false;
        if ((s = detect_v(sd, &v)) != NU_OK) goto fail;
        sd->fam.prediction = v ? NU_PRED_V : NU_PRED_EPS;
        nu_log(NU_LOG_INFO, "%s: SD 2.x %s-prediction (detected; --prediction overrides)", p->model, v ? "v" : "eps");
    }
    sd->fam.name = sd2 ? "sd2" : "sd1";
    sd->fam.latent_channels = vc->latent_channels;
    sd->fam.scale_factor = vc->scaling_factor;
    sd->fam.default_size = uc->sample_size > 0 ? uc->sample_size * nu_vae_downscale(sd->vae) : 512;
    sd->fam.default_sampler = sd->default_sampler;
    model_name(p->model, sd->name, sizeof sd->name);

    nu_sd_info *in = &sd->info;
    in->name = sd->name;
    in->family = sd->fam.name;
    in->prediction = nu_prediction_name(sd->fam.prediction);
    in->diffusers_folder = folder;
    in->inpainting = uc->in_channels == 2 * vc->latent_channels + 1;
    in->default_width = in->default_height = sd->fam.default_size;
    in->default_sampler = sd->default_sampler;
    in->unet_in_channels = uc->in_channels;
    in->latent_channels = vc->latent_channels;
    in->context_dim = uc->context_dim;
    in->text_layers = sd->clip_cfg.n_layers;

    /* LoRA: keep the list; load it once now so that a bad file fails here, not at generation */
    if (p->n_loras < 0 || p->n_loras > 256 || (p->n_loras && !p->loras)) {
        s = nu_error(NU_ERR_INVALID_ARG, "bad LoRA list (%d)", p->n_loras);
        goto fail;
    }
    if (p->lora_model_dir && !(sd->lora_dir = strdup(p->lora_model_dir))) {
        s = nu_error(NU_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (p->n_loras) {
        sd->lora_paths = calloc((size_t)p->n_loras, sizeof(char *));
        sd->lora_weights = calloc((size_t)p->n_loras, sizeof(float));
        if (!sd->lora_paths || !sd->lora_weights) {
            s = nu_error(NU_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (int i = 0; i < p->n_loras; i++) {
            if (!p->loras[i].path || !(sd->lora_paths[i] = strdup(p->loras[i].path))) {
                s = nu_error(p->loras[i].path ? NU_ERR_NOMEM : NU_ERR_INVALID_ARG, "LoRA %d: no path", i);
                goto fail;
            }
            sd->lora_weights[i] = p->loras[i].weight;
            sd->n_loras = i + 1;
        }
        nu_lora_set *ls = NULL;
        if ((s = sd_lora_build(sd, NULL, 0, &ls)) != NU_OK) goto fail;
        nu_lora_set_free(ls);
    }
    *out = sd;
    return NU_OK;
fail:
    {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nu_last_error());
        nu_sd_free(sd);
        return nu_error(s, "%s", msg);
    }
}

/* ---------------------------------------------------------------- LoRA */

nu_status sd_lora_build(nu_sd *sd, const nu_lora_tag *tags, int n_tags, nu_lora_set **out) {
    *out = NULL;
    if (sd->n_loras == 0 && n_tags == 0) return NU_OK;
    nu_lora_set *ls = nu_lora_set_new();
    if (!ls) return nu_error(NU_ERR_NOMEM, "out of memory");
    nu_status s = nu_lora_set_add_target(ls, NU_LORA_PART_UNET, "unet", nu_unet_weights(sd->unet));
    if (s == NU_OK) s = nu_lora_set_add_target(ls, NU_LORA_PART_TE, "clip", sd->clip_w);
    for (int i = 0; s == NU_OK && i < sd->n_loras; i++)
        s = nu_lora_set_load(ls, sd->lora_paths[i], sd->lora_weights[i], sd->lora_weights[i]);
    char path[PATH_MAX_LEN];
    for (int i = 0; s == NU_OK && i < n_tags; i++) {
        if ((s = nu_lora_find_file(sd->lora_dir, tags[i].name, path, sizeof path)) == NU_OK)
            s = nu_lora_set_load(ls, path, tags[i].unet_weight, tags[i].te_weight);
    }
    if (s != NU_OK) {
        nu_lora_set_free(ls);
        return s;
    }
    *out = ls;
    return NU_OK;
}
