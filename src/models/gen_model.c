/*
 * gen_model.c — the trainable generative models' common part (nuance/gen_models.h): configs
 * (defaults, checks, nuance JSON and diffusers config.json), the parameter store with
 * PyTorch-like initialisation, shared graph helpers (linear, conv, group norm, attention), the
 * forward dispatcher, and loading / saving weights.
 * Tested by tests/test_gen_models.c (fixtures from scripts/fixtures_gen_models.py, and
 * ../shared/reference/dit_tiny loaded from its diffusers folder).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "models/gen_model.h"
#include "nuance/io.h"

/* Prefixes the current error message with `label` (copied first: nu_error formats into the
 * buffer nu_last_error() points at). */
static nu_status relabel(nu_status st, const char *label) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", nu_last_error());
    return nu_error(st, "%s: %s", label, msg);
}

/* ================================================================ names */

static const char *const ARCH_NAMES[NU_GEN_ARCH_COUNT] = {"unet", "dit"};

nu_status nu_gen_arch_from_name(const char *name, nu_gen_arch *out) {
    for (int i = 0; i < NU_GEN_ARCH_COUNT; i++)
        if (name && strcasecmp(name, ARCH_NAMES[i]) == 0) {
            *out = (nu_gen_arch)i;
            return NU_OK;
        }
    return nu_error(NU_ERR_INVALID_ARG, "unknown model architecture '%s' (expected unet or dit)", name ? name : "");
}

const char *nu_gen_arch_name(nu_gen_arch a) { return a >= 0 && a < NU_GEN_ARCH_COUNT ? ARCH_NAMES[a] : "?"; }

const char *nu_gen_name(char *buf, const char *prefix, const char *suffix) {
    if (snprintf(buf, NU_MAX_NAME, "%s%s%s", prefix, *prefix ? "." : "", suffix) >= NU_MAX_NAME)
        buf[NU_MAX_NAME - 1] = 0;
    return buf;
}

/* ================================================================ configuration */

nu_gen_config nu_gen_config_init(nu_gen_arch arch) {
    nu_gen_config c;
    memset(&c, 0, sizeof c);
    c.arch = arch;
    c.in_channels = 1;
    c.out_channels = 0;
    c.sample_size = 32;
    c.num_classes = 10;
    c.n_levels = 3;
    c.block_out_channels[0] = 32;
    c.block_out_channels[1] = 64;
    c.block_out_channels[2] = 64;
    c.attn_levels[1] = c.attn_levels[2] = true;
    c.layers_per_block = 2;
    c.mid_attention = true;
    c.norm_num_groups = 8;
    c.norm_eps = 1e-5f;
    c.attention_head_dim = 8;
    c.patch_size = 2;
    c.num_layers = 4;
    c.num_attention_heads = 4;
    c.ff_mult = 4;
    return c;
}

static int out_ch(const nu_gen_config *c) { return c->out_channels > 0 ? c->out_channels : c->in_channels; }

nu_status nu_gen_config_check(const nu_gen_config *c) {
    if (c->arch < 0 || c->arch >= NU_GEN_ARCH_COUNT)
        return nu_error(NU_ERR_INVALID_ARG, "gen model: unknown architecture %d", (int)c->arch);
    if (c->in_channels < 1 || c->in_channels > 64)
        return nu_error(NU_ERR_INVALID_ARG, "gen model: in_channels %d outside [1, 64]", c->in_channels);
    if (c->out_channels < 0 || c->out_channels > 128 || (c->out_channels && c->out_channels < c->in_channels))
        return nu_error(NU_ERR_INVALID_ARG, "gen model: out_channels %d must be 0 or in [in_channels %d, 128]",
                        c->out_channels, c->in_channels);
    if (c->sample_size < 2 || c->sample_size > 4096)
        return nu_error(NU_ERR_INVALID_ARG, "gen model: sample_size %d outside [2, 4096]", c->sample_size);
    if (c->num_classes < 0 || c->num_classes > 100000)
        return nu_error(NU_ERR_INVALID_ARG, "gen model: num_classes %d outside [0, 100000]", c->num_classes);
    if (!(c->norm_eps > 0 && c->norm_eps < 1))
        return nu_error(NU_ERR_INVALID_ARG, "gen model: norm_eps %g outside (0, 1)", (double)c->norm_eps);
    if (c->attention_head_dim < 1 || c->attention_head_dim > 1024)
        return nu_error(NU_ERR_INVALID_ARG, "gen model: attention_head_dim %d outside [1, 1024]", c->attention_head_dim);
    return c->arch == NU_GEN_ARCH_UNET ? nu_gen_unet_check(c) : nu_gen_dit_check(c);
}

/* ---------------------------------------------------------------- JSON */

static nu_status json_int(const nu_json *o, const char *key, const char *label, int *v) {
    const nu_json *j = nu_json_get(o, key);
    if (!j || j->kind == NU_JSON_NULL) return NU_OK;
    if (j->kind != NU_JSON_NUMBER || j->num != floor(j->num) || fabs(j->num) > 1e9)
        return nu_error(NU_ERR_FORMAT, "%s: \"%s\" must be an integer", label, key);
    *v = (int)j->num;
    return NU_OK;
}

static nu_status json_bool(const nu_json *o, const char *key, const char *label, bool *v) {
    const nu_json *j = nu_json_get(o, key);
    if (!j || j->kind == NU_JSON_NULL) return NU_OK;
    if (j->kind != NU_JSON_BOOL) return nu_error(NU_ERR_FORMAT, "%s: \"%s\" must be true or false", label, key);
    *v = j->b;
    return NU_OK;
}

static nu_status json_float(const nu_json *o, const char *key, const char *label, float *v) {
    const nu_json *j = nu_json_get(o, key);
    if (!j || j->kind == NU_JSON_NULL) return NU_OK;
    if (j->kind != NU_JSON_NUMBER) return nu_error(NU_ERR_FORMAT, "%s: \"%s\" must be a number", label, key);
    *v = (float)j->num;
    return NU_OK;
}

/* block_out_channels: an array of 1..NU_GEN_MAX_LEVELS positive integers */
static nu_status json_levels(const nu_json *o, const char *label, nu_gen_config *c) {
    const nu_json *a = nu_json_get(o, "block_out_channels");
    if (!a) return NU_OK;
    if (a->kind != NU_JSON_ARRAY || a->n < 1 || a->n > NU_GEN_MAX_LEVELS)
        return nu_error(NU_ERR_FORMAT, "%s: \"block_out_channels\" must be an array of 1 to %d integers", label,
                        NU_GEN_MAX_LEVELS);
    for (int i = 0; i < a->n; i++) {
        const nu_json *e = nu_json_at(a, i);
        if (e->kind != NU_JSON_NUMBER || e->num != floor(e->num) || e->num < 1 || e->num > 65536)
            return nu_error(NU_ERR_FORMAT, "%s: block_out_channels[%d] is not a positive integer", label, i);
        c->block_out_channels[i] = (int)e->num;
    }
    c->n_levels = a->n;
    return NU_OK;
}

static nu_status own_from_json(const nu_json *o, const char *label, nu_gen_config *c) {
    const char *arch = nu_json_string(o, "arch", NULL);
    nu_gen_arch a;
    if (nu_gen_arch_from_name(arch, &a) != NU_OK) return relabel(NU_ERR_FORMAT, label);
    *c = nu_gen_config_init(a);
    nu_status st = NU_OK;
    if (!st) st = json_int(o, "in_channels", label, &c->in_channels);
    if (!st) st = json_int(o, "out_channels", label, &c->out_channels);
    if (!st) st = json_int(o, "sample_size", label, &c->sample_size);
    if (!st) st = json_int(o, "num_classes", label, &c->num_classes);
    if (!st) st = json_levels(o, label, c);
    if (!st) {
        const nu_json *al = nu_json_get(o, "attn_levels");
        if (al) {
            if (al->kind != NU_JSON_ARRAY || al->n > NU_GEN_MAX_LEVELS)
                return nu_error(NU_ERR_FORMAT, "%s: \"attn_levels\" must be an array of booleans", label);
            memset(c->attn_levels, 0, sizeof c->attn_levels);
            for (int i = 0; i < al->n; i++) {
                const nu_json *e = nu_json_at(al, i);
                if (e->kind != NU_JSON_BOOL)
                    return nu_error(NU_ERR_FORMAT, "%s: attn_levels[%d] must be true or false", label, i);
                c->attn_levels[i] = e->b;
            }
        }
    }
    if (!st) st = json_int(o, "layers_per_block", label, &c->layers_per_block);
    if (!st) st = json_bool(o, "mid_attention", label, &c->mid_attention);
    if (!st) st = json_int(o, "norm_num_groups", label, &c->norm_num_groups);
    if (!st) st = json_float(o, "norm_eps", label, &c->norm_eps);
    if (!st) st = json_int(o, "attention_head_dim", label, &c->attention_head_dim);
    if (!st) st = json_int(o, "patch_size", label, &c->patch_size);
    if (!st) st = json_int(o, "num_layers", label, &c->num_layers);
    if (!st) st = json_int(o, "num_attention_heads", label, &c->num_attention_heads);
    if (!st) st = json_int(o, "ff_mult", label, &c->ff_mult);
    return st;
}

/* A diffusers string option that must have one value (absent or null = the default). */
static nu_status require_str(const nu_json *o, const char *key, const char *want, const char *label) {
    const nu_json *j = nu_json_get(o, key);
    if (!j || j->kind == NU_JSON_NULL) return NU_OK;
    if (j->kind != NU_JSON_STRING || strcmp(j->str, want) != 0)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: %s other than \"%s\" is not supported", label, key, want);
    return NU_OK;
}

static nu_status require_num(const nu_json *o, const char *key, double want, const char *label) {
    const nu_json *j = nu_json_get(o, key);
    if (!j || j->kind == NU_JSON_NULL) return NU_OK;
    if ((j->kind == NU_JSON_NUMBER && j->num == want) || (j->kind == NU_JSON_BOOL && j->b == (want != 0)))
        return NU_OK;
    return nu_error(NU_ERR_UNSUPPORTED, "%s: %s other than %g is not supported", label, key, want);
}

/* diffusers UNet2DModel config.json (v0.27 keys; defaults of the class where absent) */
static nu_status unet2d_from_json(const nu_json *o, const char *label, nu_gen_config *c) {
    *c = nu_gen_config_init(NU_GEN_ARCH_UNET);
    c->in_channels = c->out_channels = 3;
    c->num_classes = 0;
    c->norm_num_groups = 32;
    c->n_levels = 4;
    int def[4] = {224, 448, 672, 896};
    for (int i = 0; i < 4; i++) c->block_out_channels[i] = def[i], c->attn_levels[i] = i > 0;
    nu_status st = NU_OK;
    if (!st) st = json_int(o, "in_channels", label, &c->in_channels);
    if (!st) st = json_int(o, "out_channels", label, &c->out_channels);
    if (!st) st = json_int(o, "sample_size", label, &c->sample_size);
    if (!st) st = json_levels(o, label, c);
    if (!st) st = json_int(o, "layers_per_block", label, &c->layers_per_block);
    if (!st) st = json_bool(o, "add_attention", label, &c->mid_attention);
    if (!st) st = json_int(o, "norm_num_groups", label, &c->norm_num_groups);
    if (!st) st = json_float(o, "norm_eps", label, &c->norm_eps);
    if (!st) st = json_int(o, "attention_head_dim", label, &c->attention_head_dim);
    if (st) return st;
    int nce = 0;
    if ((st = json_int(o, "num_class_embeds", label, &nce))) return st;
    if (nce == 1 || nce < 0) return nu_error(NU_ERR_UNSUPPORTED, "%s: num_class_embeds %d (need >= 2: classes + null)", label, nce);
    c->num_classes = nce ? nce - 1 : 0;
    const char *opts[][2] = {{"time_embedding_type", "positional"}, {"act_fn", "silu"},
                             {"resnet_time_scale_shift", "default"}, {"downsample_type", "conv"},
                             {"upsample_type", "conv"}};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if ((st = require_str(o, opts[i][0], opts[i][1], label))) return st;
    const nu_json *cet = nu_json_get(o, "class_embed_type");
    if (cet && cet->kind != NU_JSON_NULL)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: class_embed_type is not supported (num_class_embeds is)", label);
    if ((st = require_num(o, "center_input_sample", 0, label))) return st;
    if ((st = require_num(o, "flip_sin_to_cos", 1, label))) return st;
    if ((st = require_num(o, "freq_shift", 0, label))) return st;
    if ((st = require_num(o, "mid_block_scale_factor", 1, label))) return st;
    if ((st = require_num(o, "downsample_padding", 1, label))) return st;
    const nu_json *ang = nu_json_get(o, "attn_norm_num_groups");
    if (ang && ang->kind != NU_JSON_NULL && !(ang->kind == NU_JSON_NUMBER && ang->num == c->norm_num_groups))
        return nu_error(NU_ERR_UNSUPPORTED, "%s: attn_norm_num_groups other than norm_num_groups", label);
    const nu_json *ahd = nu_json_get(o, "attention_head_dim");
    if (ahd && ahd->kind == NU_JSON_NULL) return nu_error(NU_ERR_UNSUPPORTED, "%s: attention_head_dim null", label);
    const char *keys[2] = {"down_block_types", "up_block_types"};
    for (int k = 0; k < 2; k++) {
        const nu_json *a = nu_json_get(o, keys[k]);
        if (!a) continue;
        if (a->kind != NU_JSON_ARRAY || a->n != c->n_levels)
            return nu_error(NU_ERR_FORMAT, "%s: %s must list one block per block_out_channels entry", label, keys[k]);
        for (int i = 0; i < a->n; i++) {
            const nu_json *e = nu_json_at(a, i);
            const char *plain = k ? "UpBlock2D" : "DownBlock2D", *attn = k ? "AttnUpBlock2D" : "AttnDownBlock2D";
            int level = k ? c->n_levels - 1 - i : i;
            bool is_attn = e->kind == NU_JSON_STRING && strcmp(e->str, attn) == 0;
            if (!is_attn && !(e->kind == NU_JSON_STRING && strcmp(e->str, plain) == 0))
                return nu_error(NU_ERR_UNSUPPORTED, "%s: %s[%d] \"%s\" (supported: %s, %s)", label, keys[k], i,
                                e->kind == NU_JSON_STRING ? e->str : "?", plain, attn);
            if (k == 0) c->attn_levels[level] = is_attn;
            else if (c->attn_levels[level] != is_attn)
                return nu_error(NU_ERR_UNSUPPORTED, "%s: attention at level %d in only one of the down/up paths", label,
                                level);
        }
    }
    return NU_OK;
}

/* diffusers Transformer2DModel config.json in the DiT form (patched input, ada_norm_zero) */
static nu_status dit_from_json(const nu_json *o, const char *label, nu_gen_config *c) {
    *c = nu_gen_config_init(NU_GEN_ARCH_DIT);
    c->num_classes = 0;
    c->num_attention_heads = 16;
    c->attention_head_dim = 88;
    c->num_layers = 1;
    nu_status st = NU_OK;
    if (!st) st = json_int(o, "in_channels", label, &c->in_channels);
    if (!st) st = json_int(o, "out_channels", label, &c->out_channels);
    if (!st) st = json_int(o, "sample_size", label, &c->sample_size);
    if (!st) st = json_int(o, "patch_size", label, &c->patch_size);
    if (!st) st = json_int(o, "num_layers", label, &c->num_layers);
    if (!st) st = json_int(o, "num_attention_heads", label, &c->num_attention_heads);
    if (!st) st = json_int(o, "attention_head_dim", label, &c->attention_head_dim);
    if (!st) st = json_float(o, "norm_eps", label, &c->norm_eps);
    if (!st) st = json_int(o, "num_embeds_ada_norm", label, &c->num_classes);
    if (!st) st = require_str(o, "norm_type", "ada_norm_zero", label);
    if (!st) st = require_str(o, "activation_fn", "gelu-approximate", label);
    if (!st) st = require_str(o, "attention_type", "default", label);
    if (!st) st = require_num(o, "norm_elementwise_affine", 0, label);
    if (!st) st = require_num(o, "attention_bias", 1, label);
    if (!st) st = require_num(o, "only_cross_attention", 0, label);
    if (!st) st = require_num(o, "double_self_attention", 0, label);
    if (st) return st;
    const nu_json *j = nu_json_get(o, "cross_attention_dim");
    if (j && j->kind != NU_JSON_NULL) return nu_error(NU_ERR_UNSUPPORTED, "%s: cross_attention_dim is not supported", label);
    j = nu_json_get(o, "patch_size");
    if (!j || j->kind == NU_JSON_NULL)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: only patched (DiT) Transformer2DModel configs are supported", label);
    j = nu_json_get(o, "interpolation_scale");
    if (j && j->kind == NU_JSON_NUMBER && j->num != fmax(1.0, floor(c->sample_size / 64.0)))
        return nu_error(NU_ERR_UNSUPPORTED, "%s: interpolation_scale %g is not supported", label, j->num);
    if (c->sample_size >= 128)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: sample_size %d (positional interpolation scale > 1) is not supported",
                        label, c->sample_size);
    return NU_OK;
}

nu_status nu_gen_config_from_json_obj(const nu_json *obj, const char *label, nu_gen_config *out) {
    if (!obj || obj->kind != NU_JSON_OBJECT) return nu_error(NU_ERR_FORMAT, "%s: model config is not a JSON object", label);
    const nu_json *inner = nu_json_get(obj, "model");
    if (inner && inner->kind == NU_JSON_OBJECT) obj = inner;
    nu_gen_config c;
    nu_status st;
    const char *cls = nu_json_string(obj, "_class_name", NULL);
    if (cls && strcmp(cls, "UNet2DModel") == 0) st = unet2d_from_json(obj, label, &c);
    else if (cls && strcmp(cls, "Transformer2DModel") == 0) st = dit_from_json(obj, label, &c);
    else if (cls) return nu_error(NU_ERR_UNSUPPORTED, "%s: model class %s is not supported (UNet2DModel, Transformer2DModel)", label, cls);
    else if (nu_json_get(obj, "arch")) st = own_from_json(obj, label, &c);
    else return nu_error(NU_ERR_FORMAT, "%s: not a model config (no \"arch\", \"model\" or \"_class_name\")", label);
    if (st != NU_OK) return st;
    if ((st = nu_gen_config_check(&c)) != NU_OK) return relabel(st, label);
    *out = c;
    return NU_OK;
}

nu_status nu_gen_config_from_json(const char *json, size_t len, const char *label, nu_gen_config *out) {
    nu_json *j = nu_json_parse(json, len);
    if (!j) return relabel(NU_ERR_FORMAT, label);
    nu_status st = nu_gen_config_from_json_obj(j, label, out);
    nu_json_free(j);
    return st;
}

/* shortest %g form of a float that reads back to the same float */
static void fmt_float(char *buf, size_t len, float v) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, len, "%.*g", prec, (double)v);
        if ((float)strtod(buf, NULL) == v) return;
    }
}

char *nu_gen_config_to_json(const nu_gen_config *c) {
    char boc[128] = "", attn[128] = "", eps[32];
    fmt_float(eps, sizeof eps, c->norm_eps);
    for (int i = 0; i < c->n_levels && i < NU_GEN_MAX_LEVELS; i++) {
        snprintf(boc + strlen(boc), sizeof boc - strlen(boc), "%s%d", i ? ", " : "", c->block_out_channels[i]);
        snprintf(attn + strlen(attn), sizeof attn - strlen(attn), "%s%s", i ? ", " : "",
                 c->attn_levels[i] ? "true" : "false");
    }
    char *s = malloc(1024);
    if (!s) return NULL;
    int k = snprintf(s, 1024, "{\"arch\": \"%s\", \"in_channels\": %d, \"out_channels\": %d, \"sample_size\": %d, "
                              "\"num_classes\": %d, ",
                     nu_gen_arch_name(c->arch), c->in_channels, out_ch(c), c->sample_size, c->num_classes);
    if (c->arch == NU_GEN_ARCH_UNET)
        snprintf(s + k, 1024 - (size_t)k,
                 "\"block_out_channels\": [%s], \"attn_levels\": [%s], \"layers_per_block\": %d, "
                 "\"mid_attention\": %s, \"norm_num_groups\": %d, \"norm_eps\": %s, \"attention_head_dim\": %d}",
                 boc, attn, c->layers_per_block, c->mid_attention ? "true" : "false", c->norm_num_groups, eps,
                 c->attention_head_dim);
    else
        snprintf(s + k, 1024 - (size_t)k,
                 "\"patch_size\": %d, \"num_layers\": %d, \"num_attention_heads\": %d, \"attention_head_dim\": %d, "
                 "\"ff_mult\": %d, \"norm_eps\": %s}",
                 c->patch_size, c->num_layers, c->num_attention_heads, c->attention_head_dim, c->ff_mult, eps);
    return s;
}

/* ================================================================ parameter store */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int find_index(const nu_gen_model *m, const char *name) {
    if (!m->hcap) return -1;
    for (int h = (int)(hash_str(name) & (uint64_t)(m->hcap - 1));; h = (h + 1) & (m->hcap - 1)) {
        int i = m->hash[h];
        if (i < 0) return -1;
        if (strcmp(m->t[i]->name, name) == 0) return i;
    }
}

static void add_param(nu_gen_model *m, nu_tensor *t) {
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 64;
        m->t = realloc(m->t, sizeof *m->t * (size_t)m->cap);
        NU_ASSERT(m->t);
    }
    m->t[m->n++] = t;
    if (2 * (m->n + 1) > m->hcap) {
        int cap = m->hcap ? 2 * m->hcap : 256;
        free(m->hash);
        m->hash = malloc(sizeof(int) * (size_t)cap);
        NU_ASSERT(m->hash);
        for (int i = 0; i < cap; i++) m->hash[i] = -1;
        m->hcap = cap;
        for (int i = 0; i < m->n - 1; i++) {
            int h = (int)(hash_str(m->t[i]->name) & (uint64_t)(cap - 1));
            while (m->hash[h] >= 0) h = (h + 1) & (cap - 1);
            m->hash[h] = i;
        }
    }
    int h = (int)(hash_str(t->name) & (uint64_t)(m->hcap - 1));
    while (m->hash[h] >= 0) h = (h + 1) & (m->hcap - 1);
    m->hash[h] = m->n - 1;
}

/* Fills n values with init from m->rng. Uniform draws: lo + (hi - lo) * torch.rand. Normal draws:
 * std * torch.randn. */
static void init_values(nu_gen_model *m, float *v, int64_t n, gen_init init, float arg, int64_t fan_in,
                        int64_t fan_out) {
    double bound = 0;
    switch (init) {
    case GEN_INIT_ZERO: memset(v, 0, sizeof(float) * (size_t)n); return;
    case GEN_INIT_ONE:
        for (int64_t i = 0; i < n; i++) v[i] = 1.0f;
        return;
    case GEN_INIT_NORMAL:
        nu_rng_randn_f32(&m->rng, v, n);
        for (int64_t i = 0; i < n; i++) v[i] *= arg;
        return;
    case GEN_INIT_TORCH: bound = 1.0 / sqrt((double)fan_in); break;
    case GEN_INIT_XAVIER: bound = sqrt(6.0 / (double)(fan_in + fan_out)); break;
    }
    nu_rng_rand_f32(&m->rng, v, n);
    for (int64_t i = 0; i < n; i++) v[i] = (float)(-bound + 2.0 * bound * v[i]);
}

nu_tensor *nu_gen_param(nu_gen_model *m, gen_init init, float arg, int64_t fan_in, int64_t fan_out, int ndim,
                        const int64_t *ne, const char *fmt, ...) {
    char name[NU_MAX_NAME];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    NU_ASSERT(len > 0 && len < NU_MAX_NAME);
    int i = find_index(m, name);
    if (i >= 0) {
        nu_tensor *t = m->t[i];
        bool ok = t->ndim == ndim;
        for (int d = 0; ok && d < ndim; d++) ok = t->ne[d] == ne[d];
        if (!ok) nu_abort(__FILE__, __LINE__, "gen model: parameter %s used with two shapes", name);
        return t;
    }
    if (!m->creating) nu_abort(__FILE__, __LINE__, "gen model: parameter %s was not created with the model", name);
    nu_tensor *t = nu_new_tensor(m->ctx, NU_TYPE_F32, ndim, ne);
    NU_ASSERT(t && t->data);
    nu_set_name(t, "%s", name);
    nu_set_param(t);
    init_values(m, t->data, nu_nelements(t), init, arg, fan_in, fan_out);
    add_param(m, t);
    return t;
}

/* ================================================================ shared graph helpers */

nu_tensor *nu_gen_linear(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, const char *prefix, int64_t in, int64_t out,
                         gen_init winit, float warg, gen_init binit) {
    NU_ASSERT(x->ne[x->ndim - 1] == in);
    nu_tensor *w = nu_gen_param(m, winit, warg, in, out, 2, (int64_t[]){out, in}, "%s.weight", prefix);
    nu_tensor *b = nu_gen_param(m, binit, 0, in, out, 1, (int64_t[]){out}, "%s.bias", prefix);
    return nu_linear(ctx, x, w, b);
}

nu_tensor *nu_gen_conv(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, const char *prefix, int64_t in, int64_t out, int k,
                       int stride, int pad) {
    NU_ASSERT(x->ndim == 4 && x->ne[1] == in);
    int64_t fan_in = in * k * k;
    nu_tensor *w = nu_gen_param(m, GEN_INIT_TORCH, 0, fan_in, out * k * k, 4, (int64_t[]){out, in, k, k}, "%s.weight",
                                prefix);
    nu_tensor *b = nu_gen_param(m, GEN_INIT_TORCH, 0, fan_in, out, 1, (int64_t[]){out}, "%s.bias", prefix);
    nu_conv2d_params p = nu_conv2d_params_init();
    p.stride[0] = p.stride[1] = stride;
    p.padding[0] = p.padding[1] = pad;
    return nu_conv2d(ctx, x, w, b, &p);
}

nu_tensor *nu_gen_group_norm(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, const char *prefix, int groups, int64_t C,
                             float eps) {
    nu_tensor *w = nu_gen_param(m, GEN_INIT_ONE, 0, 0, 0, 1, (int64_t[]){C}, "%s.weight", prefix);
    nu_tensor *b = nu_gen_param(m, GEN_INIT_ZERO, 0, 0, 0, 1, (int64_t[]){C}, "%s.bias", prefix);
    return nu_group_norm(ctx, x, groups, w, b, eps);
}

/* [B, T, NH*HD] -> [B, NH, T, HD] view (the attention kernel reads strided q/k/v) */
static nu_tensor *split_heads(nu_ctx *ctx, nu_tensor *x, int heads) {
    int64_t B = x->ne[0], T = x->ne[1], D = x->ne[2];
    nu_tensor *r = nu_reshape(ctx, x, 4, (int64_t[]){B, T, heads, D / heads});
    return nu_permute(ctx, r, (int[]){0, 2, 1, 3});
}

/* diffusers Attention + AttnProcessor2_0 without norms: softmax(q k^T / sqrt(HD)) v per head,
 * then to_out.0. */
nu_tensor *nu_gen_self_attention(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, const char *prefix, int64_t D, int heads,
                                 gen_init winit) {
    char nm[NU_MAX_NAME];
    gen_init binit = winit == GEN_INIT_TORCH ? GEN_INIT_TORCH : GEN_INIT_ZERO;
    nu_tensor *q = nu_gen_linear(m, ctx, x, nu_gen_name(nm, prefix, "to_q"), D, D, winit, 0, binit);
    nu_tensor *k = nu_gen_linear(m, ctx, x, nu_gen_name(nm, prefix, "to_k"), D, D, winit, 0, binit);
    nu_tensor *v = nu_gen_linear(m, ctx, x, nu_gen_name(nm, prefix, "to_v"), D, D, winit, 0, binit);
    nu_tensor *o = nu_attention(ctx, split_heads(ctx, q, heads), split_heads(ctx, k, heads),
                                split_heads(ctx, v, heads), NULL, false, 0.0f); /* [B, NH, T, HD] */
    o = nu_contiguous(ctx, nu_permute(ctx, o, (int[]){0, 2, 1, 3}));       /* [B, T, NH, HD] */
    o = nu_reshape(ctx, o, 3, (int64_t[]){x->ne[0], x->ne[1], D});
    return nu_gen_linear(m, ctx, o, nu_gen_name(nm, prefix, "to_out.0"), D, D, winit, 0, binit);
}

/* ================================================================ models */

nu_tensor *nu_gen_model_forward(nu_gen_model *m, nu_ctx *ctx, nu_tensor *x, nu_tensor *t, nu_tensor *y) {
    const nu_gen_config *c = &m->cfg;
    NU_ASSERT(x->ndim == 4 && x->ne[1] == c->in_channels && x->ne[2] == x->ne[3]);
    NU_ASSERT(t->ndim == 1 && t->ne[0] == x->ne[0]);
    NU_ASSERT(c->num_classes == 0 || (y && y->ndim == 1 && y->ne[0] == x->ne[0] && y->type == NU_TYPE_I64));
    return c->arch == NU_GEN_ARCH_UNET ? nu_gen_unet_forward(m, ctx, x, t, y) : nu_gen_dit_forward(m, ctx, x, t, y);
}

nu_status nu_gen_model_new(const nu_gen_config *c, uint64_t seed, nu_gen_model **out) {
    *out = NULL;
    nu_status st = nu_gen_config_check(c);
    if (st != NU_OK) return st;
    nu_gen_model *m = calloc(1, sizeof *m);
    if (!m) return nu_error(NU_ERR_NOMEM, "gen model: out of memory");
    m->cfg = *c;
    if (m->cfg.out_channels <= 0) m->cfg.out_channels = c->in_channels;
    m->ctx = nu_ctx_new(NULL);
    nu_ctx *tmp = nu_ctx_new(NULL);
    if (!m->ctx || !tmp) {
        nu_ctx_free(tmp);
        nu_gen_model_free(m);
        return nu_error(NU_ERR_NOMEM, "gen model: out of memory");
    }
    nu_rng_seed(&m->rng, seed);
    if (c->arch == NU_GEN_ARCH_DIT && (st = nu_gen_dit_init_tables(m)) != NU_OK) {
        nu_ctx_free(tmp);
        nu_gen_model_free(m);
        return st;
    }
    /* one build at batch 1 creates every parameter, in the order the network uses them */
    nu_ctx_set_alloc_data(tmp, false);
    int S = c->sample_size;
    nu_tensor *x = nu_new_tensor_4d(tmp, NU_TYPE_F32, 1, c->in_channels, S, S);
    nu_tensor *t = nu_new_tensor_1d(tmp, NU_TYPE_F32, 1);
    nu_tensor *y = c->num_classes ? nu_new_tensor_1d(tmp, NU_TYPE_I64, 1) : NULL;
    m->creating = true;
    nu_gen_model_forward(m, tmp, x, t, y);
    m->creating = false;
    nu_ctx_free(tmp);
    *out = m;
    return NU_OK;
}

void nu_gen_model_free(nu_gen_model *m) {
    if (!m) return;
    nu_ctx_free(m->ctx);
    free(m->t);
    free(m->hash);
    free(m);
}

const nu_gen_config *nu_gen_model_config(const nu_gen_model *m) { return &m->cfg; }
int nu_gen_model_n_tensors(const nu_gen_model *m) { return m->n; }
nu_tensor *nu_gen_model_tensor(nu_gen_model *m, int i) { return i >= 0 && i < m->n ? m->t[i] : NULL; }

nu_tensor *nu_gen_model_find(nu_gen_model *m, const char *name) {
    int i = find_index(m, name);
    return i >= 0 ? m->t[i] : NULL;
}

int64_t nu_gen_model_n_params(const nu_gen_model *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n; i++) n += nu_nelements(m->t[i]);
    return n;
}

/* ================================================================ load / save */

nu_status nu_gen_model_load_weights(nu_gen_model *m, const char *path, bool use_ema) {
    nu_st_file *f;
    nu_status st = nu_st_open(path, &f);
    if (st != NU_OK) return st;
    /* check everything first: on error nothing changes */
    char key[NU_MAX_NAME + 8];
    for (int i = 0; i < m->n && st == NU_OK; i++) {
        nu_tensor *t = m->t[i];
        snprintf(key, sizeof key, "%s%s", use_ema ? "ema." : "", t->name);
        const nu_st_info *in = nu_st_find(f, key);
        if (!in) {
            st = nu_error(NU_ERR_NOT_FOUND, "%s: missing tensor %s (%s model)", path, key, nu_gen_arch_name(m->cfg.arch));
            break;
        }
        bool ok = in->ndim == t->ndim;
        for (int d = 0; ok && d < t->ndim; d++) ok = in->ne[d] == t->ne[d];
        if (!ok) {
            char want[96];
            st = nu_error(NU_ERR_FORMAT, "%s: tensor %s has another shape than the model's %s", path, key,
                          nu_shape_str(t, want, sizeof want));
        } else if (!nu_type_info(in->type)->is_float) {
            st = nu_error(NU_ERR_FORMAT, "%s: tensor %s has dtype %s, expected a float type", path, key,
                          nu_type_name(in->type));
        }
    }
    if (st == NU_OK) {
        for (int i = 0; i < m->n; i++) {
            nu_tensor *t = m->t[i];
            snprintf(key, sizeof key, "%s%s", use_ema ? "ema." : "", t->name);
            const nu_st_info *in = nu_st_find(f, key);
            nu_row_to_f32(in->type, in->data, t->data, nu_nelements(t));
        }
    }
    nu_st_close(f);
    return st;
}

static bool is_dir(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

static bool is_file(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISREG(s.st_mode);
}

static nu_status read_text(const char *path, char **out, size_t *len) {
    nu_file_map fm;
    nu_status st = nu_file_map_open(path, &fm);
    if (st != NU_OK) return st;
    *out = malloc(fm.size + 1);
    if (!*out) {
        nu_file_map_close(&fm);
        return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(*out, fm.data, fm.size);
    (*out)[fm.size] = 0;
    *len = fm.size;
    nu_file_map_close(&fm);
    return NU_OK;
}

/* A diffusers model folder: config.json + diffusion_pytorch_model.safetensors */
static nu_status load_diffusers_folder(const char *dir, nu_gen_model **out) {
    char cfgp[4096], wp[4096];
    snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
    snprintf(wp, sizeof wp, "%s/diffusion_pytorch_model.safetensors", dir);
    if (!is_file(wp)) snprintf(wp, sizeof wp, "%s/diffusion_pytorch_model.fp16.safetensors", dir);
    if (!is_file(cfgp) || !is_file(wp))
        return nu_error(NU_ERR_NOT_FOUND, "%s: not a diffusers model folder (config.json and "
                                          "diffusion_pytorch_model.safetensors expected)", dir);
    char *text = NULL;
    size_t len = 0;
    nu_status st = read_text(cfgp, &text, &len);
    if (st != NU_OK) return st;
    nu_gen_config c;
    st = nu_gen_config_from_json(text, len, cfgp, &c);
    free(text);
    if (st != NU_OK) return st;
    nu_gen_model *m;
    if ((st = nu_gen_model_new(&c, 0, &m)) != NU_OK) return st;
    if ((st = nu_gen_model_load_weights(m, wp, false)) != NU_OK) {
        nu_gen_model_free(m);
        return st;
    }
    *out = m;
    return NU_OK;
}

nu_status nu_gen_model_load(const char *path, bool use_ema, nu_gen_model **out) {
    *out = NULL;
    if (is_dir(path)) {
        char sub[4096];
        const char *names[2] = {"transformer", "unet"};
        for (int i = 0; i < 2; i++) {
            snprintf(sub, sizeof sub, "%s/%s", path, names[i]);
            if (is_dir(sub)) return load_diffusers_folder(sub, out);
        }
        return load_diffusers_folder(path, out);
    }
    nu_st_file *f;
    nu_status st = nu_st_open(path, &f);
    if (st != NU_OK) return st;
    const char *cj = nu_st_metadata(f, "config");
    if (!cj) {
        nu_st_close(f);
        return nu_error(NU_ERR_FORMAT, "%s: no model config in the file's metadata (not a nuance model)", path);
    }
    nu_gen_config c;
    st = nu_gen_config_from_json(cj, strlen(cj), path, &c);
    bool have_ema = nu_st_find(f, "ema.conv_in.weight") || nu_st_find(f, "ema.pos_embed.proj.weight");
    nu_st_close(f);
    if (st != NU_OK) return st;
    nu_gen_model *m;
    if ((st = nu_gen_model_new(&c, 0, &m)) != NU_OK) return st;
    if ((st = nu_gen_model_load_weights(m, path, use_ema && have_ema)) != NU_OK) {
        nu_gen_model_free(m);
        return st;
    }
    *out = m;
    return NU_OK;
}

nu_status nu_gen_model_save(nu_gen_model *m, const char *path, nu_type type, const char *const *meta_keys,
                            const char *const *meta_values, int n_meta) {
    if (type != NU_TYPE_F32 && type != NU_TYPE_F16 && type != NU_TYPE_BF16)
        return nu_error(NU_ERR_INVALID_ARG, "%s: weights can be saved as f32, f16 or bf16, not %s", path,
                        nu_type_name(type));
    if (n_meta < 0 || n_meta > 32) return nu_error(NU_ERR_INVALID_ARG, "%s: too many metadata entries", path);
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor **list = calloc((size_t)m->n + 1, sizeof *list);
    char *cfg = nu_gen_config_to_json(&m->cfg);
    if (!ctx || !list || !cfg) {
        nu_ctx_free(ctx);
        free(list);
        free(cfg);
        return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < m->n; i++) {
        nu_tensor *t = m->t[i];
        if (type == NU_TYPE_F32) {
            list[i] = t;
            continue;
        }
        nu_tensor *c = nu_new_tensor(ctx, type, t->ndim, t->ne);
        nu_row_from_f32(type, t->data, c->data, nu_nelements(t));
        nu_set_name(c, "%s", t->name);
        list[i] = c;
    }
    const char *keys[34], *vals[34];
    keys[0] = "format", vals[0] = "nuance.gen_model";
    keys[1] = "config", vals[1] = cfg;
    for (int i = 0; i < n_meta; i++) keys[2 + i] = meta_keys[i], vals[2 + i] = meta_values[i];
    nu_status st = nu_st_save(path, list, m->n, keys, vals, 2 + n_meta);
    nu_ctx_free(ctx);
    free(list);
    free(cfg);
    return st;
}
