/*
 * classifier.c — the small CNN classifier of nuance/classify.h: configuration (JSON, class
 * names), parameters and their initialisation, the graph builder, classifier files (safetensors
 * with the config in the metadata) and batched inference with a cached graph.
 * Training, preprocessing and dataset evaluation are in src/train/train_classifier.c.
 * Tested by tests/test_classify.c (config round trip, save/load, batched inference equal to
 * one big batch, training convergence, the shipped models' accuracies).
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nuance/classify.h"
#include "nuance/io.h"
#include "nuance/rng.h"

#define N_TENSORS 10
#define RUN_BATCH 100 /* images per inference graph evaluation */
#define FORMAT_NAME "nuance.classifier"
#define ARCH_NAME "nuance-cnn3"

static const char *const TNAMES[N_TENSORS] = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                              "conv3.weight", "conv3.bias", "fc1.weight",   "fc1.bias",
                                              "fc2.weight",   "fc2.bias"};

static const char *const FASHION_NAMES[10] = {"t-shirt", "trouser", "pullover", "dress", "coat",
                                              "sandal",  "shirt",   "sneaker",  "bag",   "ankle-boot"};

struct nu_classifier {
    nu_classifier_config cfg;
    nu_ctx *wctx;            /* parameters (f32, data allocated)                 */
    nu_tensor *t[N_TENSORS]; /* in TNAMES order                                  */
    /* inference graph for batch gb (rebuilt when another batch size is needed) */
    nu_ctx *gctx;
    nu_graph *g;
    int gb;
    nu_tensor *gx, *glogits, *gfeat;
};

/* ---------------------------------------------------------------- configuration */

nu_classifier_config nu_classifier_config_init(void) {
    nu_classifier_config c;
    memset(&c, 0, sizeof c);
    c.in_channels = 1;
    c.size = 28;
    c.widths[0] = 32, c.widths[1] = 64, c.widths[2] = 128;
    c.hidden = 256;
    c.range_lo = -1.0f, c.range_hi = 1.0f;
    nu_classifier_config_set_names(&c, "mnist");
    return c;
}

/* Spatial side after the three 2x2 max-pools (floor, as torch's max_pool2d). */
static int final_side(int size) { return size / 8; }

nu_status nu_classifier_config_check(const nu_classifier_config *c) {
    if (c->in_channels != 1 && c->in_channels != 3)
        return nu_error(NU_ERR_INVALID_ARG, "classifier: in_channels %d (1 or 3)", c->in_channels);
    if (c->size < 8 || c->size > 1024)
        return nu_error(NU_ERR_INVALID_ARG, "classifier: input size %d (8..1024)", c->size);
    for (int i = 0; i < 3; i++)
        if (c->widths[i] < 1 || c->widths[i] > 4096)
            return nu_error(NU_ERR_INVALID_ARG, "classifier: conv%d width %d (1..4096)", i + 1, c->widths[i]);
    if (c->hidden < 2 || c->hidden > 65536)
        return nu_error(NU_ERR_INVALID_ARG, "classifier: hidden width %d (2..65536)", c->hidden);
    if (c->num_classes < 2 || c->num_classes > NU_CLASSIFIER_MAX_CLASSES)
        return nu_error(NU_ERR_INVALID_ARG, "classifier: %d classes (2..%d)", c->num_classes,
                        NU_CLASSIFIER_MAX_CLASSES);
    if (!(c->range_hi != c->range_lo) || !isfinite(c->range_lo) || !isfinite(c->range_hi))
        return nu_error(NU_ERR_INVALID_ARG, "classifier: input range [%g, %g]", c->range_lo, c->range_hi);
    for (int i = 0; i < c->num_classes; i++) {
        const char *s = c->class_names[i];
        if (memchr(s, 0, NU_CLASSIFIER_MAX_NAME) == NULL)
            return nu_error(NU_ERR_INVALID_ARG, "classifier: class %d name not terminated", i);
        for (const char *q = s; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == ',' || *q == '"' || *q == '\\')
                return nu_error(NU_ERR_INVALID_ARG, "classifier: class %d name '%s' has a forbidden character", i, s);
        for (int j = 0; j < i; j++) {
            const char *a = c->class_names[j][0] ? c->class_names[j] : NULL;
            if (a && s[0] && !strcasecmp(a, s))
                return nu_error(NU_ERR_INVALID_ARG, "classifier: classes %d and %d are both named '%s'", j, i, s);
        }
    }
    return NU_OK;
}

nu_status nu_classifier_config_set_names(nu_classifier_config *c, const char *names) {
    if (!names || !*names) return nu_error(NU_ERR_INVALID_ARG, "classifier: empty class list");
    nu_classifier_config t = *c;
    memset(t.class_names, 0, sizeof t.class_names);
    if (!strcasecmp(names, "mnist")) {
        t.num_classes = 10;
        for (int i = 0; i < 10; i++) snprintf(t.class_names[i], NU_CLASSIFIER_MAX_NAME, "%d", i);
    } else if (!strcasecmp(names, "fashion-mnist") || !strcasecmp(names, "fashion_mnist")) {
        t.num_classes = 10;
        for (int i = 0; i < 10; i++) snprintf(t.class_names[i], NU_CLASSIFIER_MAX_NAME, "%s", FASHION_NAMES[i]);
    } else {
        int k = 0;
        const char *p = names;
        for (;;) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            while (len && isspace((unsigned char)*p)) p++, len--;
            while (len && isspace((unsigned char)p[len - 1])) len--;
            if (k >= NU_CLASSIFIER_MAX_CLASSES)
                return nu_error(NU_ERR_INVALID_ARG, "classifier: more than %d class names", NU_CLASSIFIER_MAX_CLASSES);
            if (len == 0) return nu_error(NU_ERR_INVALID_ARG, "classifier: class %d has an empty name in '%s'", k, names);
            if (len >= NU_CLASSIFIER_MAX_NAME)
                return nu_error(NU_ERR_INVALID_ARG, "classifier: class name '%.*s' longer than %d bytes", (int)len, p,
                                NU_CLASSIFIER_MAX_NAME - 1);
            memcpy(t.class_names[k++], p, len);
            if (!e) break;
            p = e + 1;
        }
        t.num_classes = k;
    }
    if (t.num_classes < 2) return nu_error(NU_ERR_INVALID_ARG, "classifier: '%s' names fewer than 2 classes", names);
    nu_status st = nu_classifier_config_check(&t);
    if (st != NU_OK) return st;
    *c = t;
    return NU_OK;
}

char *nu_classifier_config_to_json(const nu_classifier_config *c) {
    size_t cap = 512 + (size_t)c->num_classes * (NU_CLASSIFIER_MAX_NAME + 4);
    char *s = malloc(cap);
    if (!s) return NULL;
    int n = snprintf(s, cap,
                     "{\"arch\":\"" ARCH_NAME "\",\"in_channels\":%d,\"size\":%d,\"widths\":[%d,%d,%d],\"hidden\":%d,"
                     "\"num_classes\":%d,\"range\":[%.9g,%.9g],\"class_names\":[",
                     c->in_channels, c->size, c->widths[0], c->widths[1], c->widths[2], c->hidden, c->num_classes,
                     (double)c->range_lo, (double)c->range_hi);
    for (int i = 0; i < c->num_classes; i++) {
        /* names hold no '"', '\\' or control characters (config_check), so no escaping is needed */
        if (c->class_names[i][0]) n += snprintf(s + n, cap - (size_t)n, "%s\"%s\"", i ? "," : "", c->class_names[i]);
        else n += snprintf(s + n, cap - (size_t)n, "%s\"%d\"", i ? "," : "", i);
    }
    snprintf(s + n, cap - (size_t)n, "]}");
    return s;
}

static bool json_int(const nu_json *v, int *out) {
    if (!v || v->kind != NU_JSON_NUMBER || v->num != floor(v->num) || fabs(v->num) > 1e9) return false;
    *out = (int)v->num;
    return true;
}

nu_status nu_classifier_config_from_json(const char *json, size_t len, const char *label, nu_classifier_config *out) {
    nu_json *j = nu_json_parse(json, len);
    if (!j) return nu_error(NU_ERR_FORMAT, "%s: classifier config is not valid JSON: %s", label, nu_last_error());
    nu_status st = NU_OK;
    nu_classifier_config c = nu_classifier_config_init();
    memset(c.class_names, 0, sizeof c.class_names);
    const nu_json *v;
    if (j->kind != NU_JSON_OBJECT || strcmp(nu_json_string(j, "arch", ""), ARCH_NAME) != 0) {
        st = nu_error(NU_ERR_FORMAT, "%s: not a classifier config (\"arch\" is not \"" ARCH_NAME "\")", label);
        goto done;
    }
#define GET_INT(key, dst)                                                                                  \
    do {                                                                                                   \
        if (!json_int(nu_json_get(j, key), &(dst))) {                                                      \
            st = nu_error(NU_ERR_FORMAT, "%s: classifier config: \"%s\" missing or not an integer", label, key); \
            goto done;                                                                                     \
        }                                                                                                  \
    } while (0)
    GET_INT("in_channels", c.in_channels);
    GET_INT("size", c.size);
    GET_INT("hidden", c.hidden);
    GET_INT("num_classes", c.num_classes);
#undef GET_INT
    v = nu_json_get(j, "widths");
    if (!v || v->kind != NU_JSON_ARRAY || v->n != 3 || !json_int(&v->items[0], &c.widths[0]) ||
        !json_int(&v->items[1], &c.widths[1]) || !json_int(&v->items[2], &c.widths[2])) {
        st = nu_error(NU_ERR_FORMAT, "%s: classifier config: \"widths\" must be 3 integers", label);
        goto done;
    }
    v = nu_json_get(j, "range");
    if (v) {
        if (v->kind != NU_JSON_ARRAY || v->n != 2 || v->items[0].kind != NU_JSON_NUMBER ||
            v->items[1].kind != NU_JSON_NUMBER) {
            st = nu_error(NU_ERR_FORMAT, "%s: classifier config: \"range\" must be 2 numbers", label);
            goto done;
        }
        c.range_lo = (float)v->items[0].num, c.range_hi = (float)v->items[1].num;
    }
    if (c.num_classes < 2 || c.num_classes > NU_CLASSIFIER_MAX_CLASSES) {
        st = nu_error(NU_ERR_FORMAT, "%s: classifier config: %d classes (2..%d)", label, c.num_classes,
                      NU_CLASSIFIER_MAX_CLASSES);
        goto done;
    }
    v = nu_json_get(j, "class_names");
    if (v) {
        if (v->kind != NU_JSON_ARRAY || v->n != c.num_classes) {
            st = nu_error(NU_ERR_FORMAT, "%s: classifier config: \"class_names\" must list %d names", label,
                          c.num_classes);
            goto done;
        }
        for (int i = 0; i < v->n; i++) {
            const nu_json *e = &v->items[i];
            if (e->kind != NU_JSON_STRING || e->str_len >= NU_CLASSIFIER_MAX_NAME || strlen(e->str) != e->str_len) {
                st = nu_error(NU_ERR_FORMAT, "%s: classifier config: class name %d is not a string under %d bytes",
                              label, i, NU_CLASSIFIER_MAX_NAME);
                goto done;
            }
            memcpy(c.class_names[i], e->str, e->str_len);
        }
    }
    st = nu_classifier_config_check(&c);
    if (st != NU_OK) {
        st = nu_error(st, "%s: %s", label, nu_last_error());
        goto done;
    }
    *out = c;
done:
    nu_json_free(j);
    return st;
}

/* ---------------------------------------------------------------- parameters */

/* Shapes of the ten tensors (PyTorch layouts: conv OIHW, Linear [out, in]). */
static int tensor_shape(const nu_classifier_config *c, int i, int64_t *ne) {
    int64_t cin[3] = {c->in_channels, c->widths[0], c->widths[1]};
    int s = final_side(c->size);
    int64_t flat = (int64_t)c->widths[2] * s * s;
    switch (i) {
    case 0: case 2: case 4:
        ne[0] = c->widths[i / 2], ne[1] = cin[i / 2], ne[2] = 3, ne[3] = 3;
        return 4;
    case 1: case 3: case 5: ne[0] = c->widths[i / 2]; return 1;
    case 6: ne[0] = c->hidden, ne[1] = flat; return 2;
    case 7: ne[0] = c->hidden; return 1;
    case 8: ne[0] = c->num_classes, ne[1] = c->hidden; return 2;
    default: ne[0] = c->num_classes; return 1;
    }
}

static nu_status classifier_alloc(const nu_classifier_config *c, nu_classifier **out) {
    nu_status st = nu_classifier_config_check(c);
    if (st != NU_OK) return st;
    nu_classifier *m = calloc(1, sizeof *m);
    if (!m) return nu_error(NU_ERR_NOMEM, "classifier: out of memory");
    m->cfg = *c;
    m->wctx = nu_ctx_new(NULL);
    if (!m->wctx) {
        free(m);
        return nu_error(NU_ERR_NOMEM, "classifier: out of memory");
    }
    for (int i = 0; i < N_TENSORS; i++) {
        int64_t ne[4];
        int nd = tensor_shape(c, i, ne);
        m->t[i] = nu_new_tensor(m->wctx, NU_TYPE_F32, nd, ne);
        if (!m->t[i] || !m->t[i]->data) {
            nu_classifier_free(m);
            return nu_error(NU_ERR_NOMEM, "classifier: out of memory for %s", TNAMES[i]);
        }
        nu_set_name(m->t[i], "%s", TNAMES[i]);
        nu_set_param(m->t[i]);
    }
    *out = m;
    return NU_OK;
}

nu_status nu_classifier_new(const nu_classifier_config *c, uint64_t seed, nu_classifier **out) {
    nu_classifier *m;
    nu_status st = classifier_alloc(c, &m);
    if (st != NU_OK) return st;
    nu_rng rng;
    nu_rng_seed(&rng, seed);
    for (int i = 0; i < N_TENSORS; i += 2) {
        nu_tensor *w = m->t[i];
        int64_t n = nu_nelements(w), fan_in = n / w->ne[0];
        /* He et al. 2015 uniform for layers followed by ReLU (bound sqrt(6 / fan_in) gives
         * variance 2 / fan_in); the logits layer keeps nn.Linear's U(-1/sqrt(fan_in), +). */
        double bound = i < 8 ? sqrt(6.0 / (double)fan_in) : 1.0 / sqrt((double)fan_in);
        float *d = w->data;
        nu_rng_rand_f32(&rng, d, n);
        for (int64_t k = 0; k < n; k++) d[k] = (float)((2.0 * d[k] - 1.0) * bound);
        memset(m->t[i + 1]->data, 0, nu_nbytes(m->t[i + 1])); /* biases zero */
    }
    *out = m;
    return NU_OK;
}

static void graph_drop(nu_classifier *m) {
    if (m->g) nu_graph_free(m->g);
    if (m->gctx) nu_ctx_free(m->gctx);
    m->g = NULL, m->gctx = NULL, m->gb = 0;
}

void nu_classifier_free(nu_classifier *m) {
    if (!m) return;
    graph_drop(m);
    if (m->wctx) nu_ctx_free(m->wctx);
    free(m);
}

const nu_classifier_config *nu_classifier_get_config(const nu_classifier *m) { return &m->cfg; }
int nu_classifier_n_tensors(const nu_classifier *m) { (void)m; return N_TENSORS; }
nu_tensor *nu_classifier_tensor(nu_classifier *m, int i) { return i >= 0 && i < N_TENSORS ? m->t[i] : NULL; }

int64_t nu_classifier_n_params(const nu_classifier *m) {
    int64_t n = 0;
    for (int i = 0; i < N_TENSORS; i++) n += nu_nelements(m->t[i]);
    return n;
}

const char *nu_classifier_class_name(const nu_classifier *m, int i) {
    static _Thread_local char buf[16];
    if (i < 0 || i >= m->cfg.num_classes) return NULL;
    if (m->cfg.class_names[i][0]) return m->cfg.class_names[i];
    snprintf(buf, sizeof buf, "%d", i);
    return buf;
}

int nu_classifier_class_index(const nu_classifier *m, const char *s) {
    if (!s || !*s) return -1;
    for (int i = 0; i < m->cfg.num_classes; i++)
        if (m->cfg.class_names[i][0] && !strcasecmp(m->cfg.class_names[i], s)) return i;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end == 0 && isdigit((unsigned char)s[0]) && v >= 0 && v < m->cfg.num_classes) return (int)v;
    return -1;
}

/* ---------------------------------------------------------------- graph */

nu_tensor *nu_classifier_forward(nu_classifier *m, nu_ctx *ctx, nu_tensor *x, nu_tensor *keep_mask,
                                 nu_tensor **features) {
    const nu_classifier_config *c = &m->cfg;
    NU_ASSERT(x->ndim == 4 && x->ne[1] == c->in_channels && x->ne[2] == c->size && x->ne[3] == c->size);
    int64_t B = x->ne[0];
    nu_conv2d_params cp = nu_conv2d_params_init();
    cp.padding[0] = cp.padding[1] = 1;
    nu_tensor *h = x;
    for (int l = 0; l < 3; l++) {
        /* [B, Cin, s, s] -> conv 3x3 pad 1 -> ReLU -> [B, w_l, s, s] -> max-pool 2 -> [B, w_l, s/2, s/2] */
        h = nu_relu(ctx, nu_conv2d(ctx, h, m->t[2 * l], m->t[2 * l + 1], &cp));
        h = nu_max_pool2d(ctx, h, 2, 2, 0);
    }
    /* flatten in NCHW order (torch.flatten(h, 1)): [B, w2 * s8 * s8] */
    h = nu_reshape(ctx, nu_contiguous(ctx, h), 2, (int64_t[]){B, h->ne[1] * h->ne[2] * h->ne[3]});
    nu_tensor *f = nu_relu(ctx, nu_linear(ctx, h, m->t[6], m->t[7])); /* [B, hidden] */
    if (features) *features = f;
    if (keep_mask) {
        NU_ASSERT(keep_mask->ndim == 2 && keep_mask->ne[0] == B && keep_mask->ne[1] == c->hidden);
        f = nu_mul(ctx, f, keep_mask);
    }
    return nu_linear(ctx, f, m->t[8], m->t[9]); /* [B, K] */
}

static nu_status graph_build(nu_classifier *m, int b) {
    graph_drop(m);
    m->gctx = nu_ctx_new(NULL);
    if (!m->gctx) return nu_error(NU_ERR_NOMEM, "classifier: out of memory");
    nu_ctx_set_alloc_data(m->gctx, false);
    const nu_classifier_config *c = &m->cfg;
    m->gx = nu_new_tensor_4d(m->gctx, NU_TYPE_F32, b, c->in_channels, c->size, c->size);
    nu_set_input(m->gx);
    nu_set_name(m->gx, "x");
    m->glogits = nu_classifier_forward(m, m->gctx, m->gx, NULL, &m->gfeat);
    nu_set_output(m->gfeat);
    m->g = nu_graph_new(m->gctx);
    nu_graph_expand(m->g, m->gfeat);
    nu_graph_expand(m->g, m->glogits);
    nu_status st = nu_graph_alloc(m->g);
    if (st != NU_OK) {
        graph_drop(m);
        return st;
    }
    m->gb = b;
    return NU_OK;
}

nu_status nu_classifier_run(nu_classifier *m, nu_pool *pool, const float *x, int64_t n, float *logits,
                            float *features) {
    const nu_classifier_config *c = &m->cfg;
    int64_t per = (int64_t)c->in_channels * c->size * c->size;
    nu_pool *own = NULL;
    if (!pool) {
        own = pool = nu_pool_new(1);
        if (!pool) return nu_error(NU_ERR_NOMEM, "classifier: out of memory");
    }
    nu_status st = NU_OK;
    for (int64_t i0 = 0; i0 < n; i0 += RUN_BATCH) {
        int b = (int)(n - i0 < RUN_BATCH ? n - i0 : RUN_BATCH);
        /* one graph for full batches; a short last batch is padded with zeros so no second
         * graph is built (rows are independent: no batch statistics in this network) */
        int gb = n < RUN_BATCH ? (int)n : RUN_BATCH;
        if (m->gb != gb && (st = graph_build(m, gb)) != NU_OK) break;
        float *gx = m->gx->data;
        memcpy(gx, x + i0 * per, sizeof(float) * (size_t)(b * per));
        if (b < gb) memset(gx + b * per, 0, sizeof(float) * (size_t)((gb - b) * per));
        if ((st = nu_graph_compute(m->g, pool)) != NU_OK) break;
        if (logits)
            memcpy(logits + i0 * c->num_classes, m->glogits->data, sizeof(float) * (size_t)b * (size_t)c->num_classes);
        if (features)
            memcpy(features + i0 * c->hidden, m->gfeat->data, sizeof(float) * (size_t)b * (size_t)c->hidden);
    }
    if (own) nu_pool_free(own);
    return st;
}

void nu_classifier_argmax(const float *logits, int64_t n, int K, int64_t *pred) {
    for (int64_t i = 0; i < n; i++) {
        const float *r = logits + i * K;
        int best = 0;
        for (int k = 1; k < K; k++)
            if (r[k] > r[best]) best = k;
        pred[i] = best;
    }
}

/* ---------------------------------------------------------------- files */

nu_status nu_classifier_save(const nu_classifier *m, const char *path, nu_type type, const char *training_json) {
    if (type != NU_TYPE_F16 && type != NU_TYPE_F32)
        return nu_error(NU_ERR_INVALID_ARG, "%s: classifier weights are saved as f16 or f32", path);
    char *cfg = nu_classifier_config_to_json(&m->cfg);
    nu_ctx *ctx = nu_ctx_new(NULL);
    if (!cfg || !ctx) {
        free(cfg);
        nu_ctx_free(ctx);
        return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    }
    nu_tensor *ts[N_TENSORS];
    nu_status st = NU_OK;
    for (int i = 0; i < N_TENSORS; i++) {
        const nu_tensor *s = m->t[i];
        ts[i] = nu_new_tensor(ctx, type, s->ndim, s->ne);
        if (!ts[i] || !ts[i]->data) {
            st = nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        nu_set_name(ts[i], "%s", TNAMES[i]);
        /* parameters may live in a trainer's flat buffer; read through the tensor's data */
        nu_row_from_f32(type, s->data, ts[i]->data, nu_nelements(s));
    }
    if (st == NU_OK) {
        const char *keys[4] = {"format", "format_version", "config", "training"};
        const char *vals[4] = {FORMAT_NAME, "1", cfg, training_json};
        st = nu_st_save(path, ts, N_TENSORS, keys, vals, training_json ? 4 : 3);
    }
    nu_ctx_free(ctx);
    free(cfg);
    return st;
}

nu_status nu_classifier_load(const char *path, nu_classifier **out) {
    nu_st_file *f;
    nu_status st = nu_st_open(path, &f);
    if (st != NU_OK) return st;
    const char *fmt = nu_st_metadata(f, "format");
    const char *cfg_json = nu_st_metadata(f, "config");
    if (!fmt || (strcmp(fmt, FORMAT_NAME) != 0 && strcmp(fmt, "nuance.train.checkpoint") != 0) || !cfg_json) {
        nu_st_close(f);
        return nu_error(NU_ERR_FORMAT, "%s: not a nuance classifier (metadata \"format\" is %s%s%s)", path,
                        fmt ? "\"" : "", fmt ? fmt : "absent", fmt ? "\"" : "");
    }
    nu_classifier_config c;
    st = nu_classifier_config_from_json(cfg_json, strlen(cfg_json), path, &c);
    nu_classifier *m = NULL;
    if (st == NU_OK) st = classifier_alloc(&c, &m);
    nu_ctx *tctx = st == NU_OK ? nu_ctx_new(NULL) : NULL;
    if (st == NU_OK && !tctx) st = nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; st == NU_OK && i < N_TENSORS; i++) {
        const nu_st_info *info = nu_st_find(f, TNAMES[i]);
        const nu_tensor *want = m->t[i];
        if (!info) {
            st = nu_error(NU_ERR_NOT_FOUND, "%s: classifier tensor %s missing", path, TNAMES[i]);
            break;
        }
        bool ok = info->ndim == want->ndim;
        for (int d = 0; ok && d < want->ndim; d++) ok = info->ne[d] == want->ne[d];
        if (!ok) {
            char a[64];
            st = nu_error(NU_ERR_FORMAT, "%s: classifier tensor %s has the wrong shape (config wants %s)", path,
                          TNAMES[i], nu_shape_str(want, a, sizeof a));
            break;
        }
        if (info->type != NU_TYPE_F32 && info->type != NU_TYPE_F16 && info->type != NU_TYPE_BF16 &&
            info->type != NU_TYPE_F64) {
            st = nu_error(NU_ERR_FORMAT, "%s: classifier tensor %s is not a float tensor", path, TNAMES[i]);
            break;
        }
        nu_tensor *t;
        st = nu_st_get_f32(f, tctx, TNAMES[i], &t);
        if (st != NU_OK) break;
        const float *d = t->data;
        for (int64_t k = 0, n = nu_nelements(t); k < n; k++)
            if (!isfinite(d[k])) {
                st = nu_error(NU_ERR_FORMAT, "%s: classifier tensor %s holds NaN/Inf", path, TNAMES[i]);
                break;
            }
        if (st == NU_OK) memcpy(m->t[i]->data, d, nu_nbytes(m->t[i]));
    }
    nu_ctx_free(tctx);
    nu_st_close(f);
    if (st != NU_OK) {
        nu_classifier_free(m);
        return st;
    }
    *out = m;
    return NU_OK;
}
