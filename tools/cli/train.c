/*
 * train.c — `nuance train`: trains the class-conditional pixel UNet or DiT of nuance/gen_models.h
 * on an image folder (one subfolder per class) or MNIST idx data, with the trainer of
 * nuance/train.h (issue 4 item 4). A run lives in one folder:
 *
 *   RUN/config.json              the run's configuration (also stored in every checkpoint)
 *   RUN/log.csv                  step,loss,lr,grad_norm,images_per_s,elapsed — flushed per line
 *   RUN/train.log                events: start, resume, checkpoints, sample grids, errors
 *   RUN/checkpoint.safetensors   weights, EMA, AdamW moments, RNG, data position (atomic writes)
 *   RUN/samples/step-NNNNNN.png  sample grids, one row per class (EMA weights when EMA is on)
 *   RUN/model.safetensors        at the end: the EMA weights as f16 with the class names
 *
 * Other modes of the same command:
 *   nuance train --bench-steps N [model flags]   times training steps (forward, backward, AdamW)
 *                                                and sampling on synthetic data
 *   nuance train --export CKPT_OR_RUN -o OUT     converts a checkpoint to a weights file (f16 EMA)
 *
 * Only public headers. Tested by tests/test_train_cli.c (runs this binary: training, SIGKILL and
 * --resume giving the same loss log as an uninterrupted run, SIGTERM, NaN loss, bad inputs,
 * export); the trainer itself by tests/test_train.c. docs/training.md is the user guide.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nuance/gen_models.h"
#include "nuance/io.h"
#include "nuance/train.h"

int nu_cli_train(int argc, char **argv);
/* generate_cond.c: writes images [n, c, h, w] (values ~[-1, 1]) as a grid PNG, `cols` per row,
 * row_labels[r] drawn left of row r when given. */
nu_status nu_cli_write_grid(const char *path, const float *images, int n, int c, int h, int w, int cols,
                            const char *const *row_labels, int n_labels, int scale, const char *params_text);

#define MAX_CLASSES 1000
#define PATH_MAX_LEN 4096

/* ================================================================ small helpers */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    if (!s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_f64(const char *s, double lo, double hi, double *out) {
    if (!s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int mkdir_p(const char *path) {
    char b[PATH_MAX_LEN];
    snprintf(b, sizeof b, "%s", path);
    for (char *p = b + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(b, 0777) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    if (mkdir(b, 0777) != 0 && errno != EEXIST) return -1;
    return is_dir(b) ? 0 : -1;
}

static char *read_text_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 >= cap) {
            if (cap > (64u << 20)) { /* a config is small: refuse runaway files */
                free(b);
                b = NULL;
                break;
            }
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb, cap *= 2;
        }
        size_t k = fread(b + n, 1, cap - n - 1, f);
        if (k == 0) break;
        n += k;
    }
    fclose(f);
    if (b) b[n] = 0, *len = n;
    return b;
}

/* A growable string buffer for JSON. */
typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_put(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap <= b->n + (size_t)k) cap *= 2;
        char *ns = realloc(b->s, cap);
        NU_ASSERT(ns);
        b->s = ns, b->cap = cap;
        b->s[b->n] = 0;
    }
}

static void sb_str(sbuf *b, const char *s) { /* JSON string literal */
    sb_put(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') sb_put(b, "\\%c", *p);
        else if (*p < 0x20) sb_put(b, "\\u%04x", *p);
        else sb_put(b, "%c", *p);
    }
    sb_put(b, "\"");
}

/* ================================================================ the run configuration */

typedef struct run_cfg {
    nu_gen_config model;
    nu_objective obj;
    /* data */
    char data[PATH_MAX_LEN];
    char split[64];
    int resolution;   /* 0: native size                                   */
    int channels;     /* 0: the data's; else convert to 1 or 3             */
    bool random_flip;
    int64_t limit;
    int n_class_names;
    char *class_names[MAX_CLASSES];
    /* optimisation */
    int64_t steps;
    int batch, accum;
    double lr, weight_decay, min_lr_ratio, clip, ema;
    int64_t warmup;
    nu_lr_schedule schedule;
    uint64_t seed;
    /* bookkeeping */
    int64_t ckpt_every, sample_every;
    int sample_steps, sample_cols;
    double sample_cfg;
    char sampler[32];
    int threads; /* recorded (the loss trajectory depends on the thread count); 0: unknown */
} run_cfg;

static void cfg_init(run_cfg *c) {
    memset(c, 0, sizeof *c);
    c->model = nu_gen_config_init(NU_GEN_ARCH_UNET);
    c->obj = nu_objective_init(NU_OBJECTIVE_EPS);
    snprintf(c->split, sizeof c->split, "train");
    c->steps = 10000;
    c->batch = 64;
    c->accum = 1;
    c->lr = 1e-3;
    c->weight_decay = 0.0;
    c->min_lr_ratio = 0.0;
    c->clip = 1.0;
    c->ema = 0.999;
    c->warmup = 200;
    c->schedule = NU_LR_SCHEDULE_COSINE;
    c->seed = 0;
    c->ckpt_every = 1000;
    c->sample_every = 1000;
    c->sample_steps = 30;
    c->sample_cols = 8;
    c->sample_cfg = 3.0;
    snprintf(c->sampler, sizeof c->sampler, "auto");
}

static void cfg_free(run_cfg *c) {
    for (int i = 0; i < c->n_class_names; i++) free(c->class_names[i]);
    c->n_class_names = 0;
}

static const char *schedule_name(nu_lr_schedule s) { return s == NU_LR_SCHEDULE_CONSTANT ? "constant" : "cosine"; }

static char *cfg_to_json(const run_cfg *c) {
    sbuf b = {0};
    char *mj = nu_gen_config_to_json(&c->model), *oj = nu_objective_to_json(&c->obj);
    NU_ASSERT(mj && oj);
    sb_put(&b, "{\"format\": \"nuance.train.run\",\n \"model\": %s,\n \"objective\": %s,\n \"data\": {\"path\": ", mj, oj);
    free(mj);
    free(oj);
    sb_str(&b, c->data);
    sb_put(&b, ", \"split\": ");
    sb_str(&b, c->split);
    sb_put(&b, ", \"resolution\": %d, \"channels\": %d, \"random_flip\": %s, \"limit\": %" PRId64 "},\n \"class_names\": [",
           c->resolution, c->channels, c->random_flip ? "true" : "false", c->limit);
    for (int i = 0; i < c->n_class_names; i++) {
        if (i) sb_put(&b, ", ");
        sb_str(&b, c->class_names[i]);
    }
    sb_put(&b,
           "],\n \"train\": {\"steps\": %" PRId64 ", \"batch\": %d, \"accum\": %d, \"lr\": %.17g, \"warmup\": %" PRId64
           ", \"schedule\": \"%s\", \"min_lr_ratio\": %.17g, \"weight_decay\": %.17g, \"clip\": %.17g, \"ema\": %.17g, "
           "\"seed\": %" PRIu64 "},\n",
           c->steps, c->batch, c->accum, c->lr, c->warmup, schedule_name(c->schedule), c->min_lr_ratio,
           c->weight_decay, c->clip, c->ema, c->seed);
    sb_put(&b,
           " \"sample\": {\"every\": %" PRId64 ", \"steps\": %d, \"sampler\": \"%s\", \"cfg_scale\": %.17g, \"cols\": %d},\n"
           " \"ckpt_every\": %" PRId64 ", \"threads\": %d}\n",
           c->sample_every, c->sample_steps, c->sampler, c->sample_cfg, c->sample_cols, c->ckpt_every, c->threads);
    return b.s;
}

/* Refuses keys of `obj` that are not in `known` (a typo would otherwise be silently ignored). */
static bool check_keys(const nu_json *obj, const char *const *known, const char *label, const char *section) {
    if (!obj) return true;
    for (int i = 0; i < obj->n; i++) {
        bool ok = false;
        for (int k = 0; known[k]; k++) ok |= strcmp(obj->keys[i], known[k]) == 0;
        if (!ok) {
            fprintf(stderr, "nuance train: %s: unknown key '%s' in %s\n", label, obj->keys[i], section);
            return false;
        }
    }
    return true;
}

static bool json_int(const nu_json *o, const char *key, int64_t lo, int64_t hi, int64_t *v, const char *label) {
    const nu_json *j = nu_json_get(o, key);
    if (!j) return true;
    if (j->kind != NU_JSON_NUMBER || j->num != floor(j->num) || j->num < (double)lo || j->num > (double)hi) {
        fprintf(stderr, "nuance train: %s: \"%s\" must be an integer in [%" PRId64 ", %" PRId64 "]\n", label, key, lo, hi);
        return false;
    }
    *v = (int64_t)j->num;
    return true;
}

static bool json_num(const nu_json *o, const char *key, double lo, double hi, double *v, const char *label) {
    const nu_json *j = nu_json_get(o, key);
    if (!j) return true;
    if (j->kind != NU_JSON_NUMBER || !(j->num >= lo && j->num <= hi)) {
        fprintf(stderr, "nuance train: %s: \"%s\" must be a number in [%g, %g]\n", label, key, lo, hi);
        return false;
    }
    *v = j->num;
    return true;
}

static bool set_class_names_csv(run_cfg *c, const char *list) {
    for (int i = 0; i < c->n_class_names; i++) free(c->class_names[i]);
    c->n_class_names = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || c->n_class_names >= MAX_CLASSES) return false;
        c->class_names[c->n_class_names++] = strndup(p, n);
        if (!e) break;
        p = e + 1;
    }
    return c->n_class_names > 0;
}

/* Applies a run configuration JSON (config file or a checkpoint's "config") over c. */
static bool cfg_apply_json(run_cfg *c, const char *text, size_t len, const char *label) {
    nu_json *root = nu_json_parse(text, len);
    if (!root) {
        fprintf(stderr, "nuance train: %s: %s\n", label, nu_last_error());
        return false;
    }
    bool ok = root->kind == NU_JSON_OBJECT;
    if (!ok) fprintf(stderr, "nuance train: %s: not a JSON object\n", label);
    static const char *const top[] = {"format", "model", "objective", "data", "class_names", "train", "sample",
                                      "ckpt_every", "threads", NULL};
    static const char *const data_k[] = {"path", "split", "resolution", "channels", "random_flip", "limit", NULL};
    static const char *const train_k[] = {"steps", "batch", "accum", "lr", "warmup", "schedule", "min_lr_ratio",
                                          "weight_decay", "clip", "ema", "seed", NULL};
    static const char *const sample_k[] = {"every", "steps", "sampler", "cfg_scale", "cols", NULL};
    const nu_json *d = nu_json_get(root, "data"), *t = nu_json_get(root, "train"), *s = nu_json_get(root, "sample");
    ok = ok && check_keys(root, top, label, "the top level") && check_keys(d, data_k, label, "\"data\"") &&
         check_keys(t, train_k, label, "\"train\"") && check_keys(s, sample_k, label, "\"sample\"");
    if (ok && nu_json_get(root, "model")) {
        if (nu_gen_config_from_json_obj(root, label, &c->model) != NU_OK) {
            fprintf(stderr, "nuance train: %s\n", nu_last_error());
            ok = false;
        }
    }
    if (ok && nu_json_get(root, "objective")) {
        if (nu_objective_from_json_obj(nu_json_get(root, "objective"), label, &c->obj) != NU_OK) {
            fprintf(stderr, "nuance train: %s\n", nu_last_error());
            ok = false;
        }
    }
    int64_t v;
    if (ok && d) {
        const char *p = nu_json_string(d, "path", NULL);
        if (p) snprintf(c->data, sizeof c->data, "%s", p);
        p = nu_json_string(d, "split", NULL);
        if (p) snprintf(c->split, sizeof c->split, "%s", p);
        v = c->resolution;
        ok = ok && json_int(d, "resolution", 0, 4096, &v, label);
        c->resolution = (int)v;
        v = c->channels;
        ok = ok && json_int(d, "channels", 0, 3, &v, label);
        c->channels = (int)v;
        c->random_flip = nu_json_bool(d, "random_flip", c->random_flip);
        ok = ok && json_int(d, "limit", 0, INT64_C(1) << 40, &c->limit, label);
    }
    const nu_json *cn = nu_json_get(root, "class_names");
    if (ok && cn) {
        if (cn->kind != NU_JSON_ARRAY || cn->n > MAX_CLASSES) {
            fprintf(stderr, "nuance train: %s: \"class_names\" must be an array of strings\n", label);
            ok = false;
        } else {
            for (int i = 0; i < c->n_class_names; i++) free(c->class_names[i]);
            c->n_class_names = 0;
            for (int i = 0; i < cn->n && ok; i++) {
                const nu_json *e = nu_json_at(cn, i);
                if (e->kind != NU_JSON_STRING || !*e->str) {
                    fprintf(stderr, "nuance train: %s: class_names[%d] is not a non-empty string\n", label, i);
                    ok = false;
                } else
                    c->class_names[c->n_class_names++] = strdup(e->str);
            }
        }
    }
    if (ok && t) {
        v = c->batch;
        ok = ok && json_int(t, "steps", 1, INT64_C(1) << 40, &c->steps, label) &&
             json_int(t, "batch", 1, 65536, &v, label);
        c->batch = (int)v;
        v = c->accum;
        ok = ok && json_int(t, "accum", 1, 4096, &v, label);
        c->accum = (int)v;
        ok = ok && json_num(t, "lr", 0, 10, &c->lr, label) && json_int(t, "warmup", 0, INT64_C(1) << 40, &c->warmup, label) &&
             json_num(t, "min_lr_ratio", 0, 1, &c->min_lr_ratio, label) &&
             json_num(t, "weight_decay", 0, 10, &c->weight_decay, label) && json_num(t, "clip", 0, 1e9, &c->clip, label) &&
             json_num(t, "ema", 0, 1, &c->ema, label);
        int64_t seed = (int64_t)c->seed;
        ok = ok && json_int(t, "seed", 0, INT64_C(1) << 53, &seed, label);
        c->seed = (uint64_t)seed;
        const char *sch = nu_json_string(t, "schedule", NULL);
        if (ok && sch) {
            if (!strcasecmp(sch, "cosine")) c->schedule = NU_LR_SCHEDULE_COSINE;
            else if (!strcasecmp(sch, "constant")) c->schedule = NU_LR_SCHEDULE_CONSTANT;
            else {
                fprintf(stderr, "nuance train: %s: schedule '%s' (expected cosine or constant)\n", label, sch);
                ok = false;
            }
        }
    }
    if (ok && s) {
        ok = ok && json_int(s, "every", 0, INT64_C(1) << 40, &c->sample_every, label);
        v = c->sample_steps;
        ok = ok && json_int(s, "steps", 1, 1000, &v, label);
        c->sample_steps = (int)v;
        v = c->sample_cols;
        ok = ok && json_int(s, "cols", 1, 64, &v, label);
        c->sample_cols = (int)v;
        ok = ok && json_num(s, "cfg_scale", 0, 1000, &c->sample_cfg, label);
        const char *smp = nu_json_string(s, "sampler", NULL);
        if (smp) snprintf(c->sampler, sizeof c->sampler, "%s", smp);
    }
    if (ok) ok = json_int(root, "ckpt_every", 0, INT64_C(1) << 40, &c->ckpt_every, label);
    v = c->threads;
    if (ok) ok = json_int(root, "threads", 0, 1024, &v, label);
    c->threads = (int)v;
    nu_json_free(root);
    return ok;
}

/* ================================================================ command line */

typedef struct opts {
    const char *config;
    const char *out;
    const char *resume; /* "" = RUN/checkpoint.safetensors */
    const char *init_weights;
    const char *export_src, *export_out, *export_dtype;
    bool export_live;
    int threads;
    int prefetch;
    bool quiet;
    int64_t bench_steps;
    int bench_sample_batch, bench_sample_steps;
    bool json;
    bool has_run_flags;        /* flags that change the run (refused with --resume) */
    char run_flag_name[64];
} opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: nuance train --data DIR_OR_IDX --out RUN_DIR [options]\n"
            "       nuance train --out RUN_DIR --resume [CKPT]       continue a run exactly\n"
            "       nuance train --bench-steps N [model options]    time training and sampling steps\n"
            "       nuance train --export CKPT_OR_RUN_DIR -o OUT.safetensors [--dtype f16|bf16|f32] [--live]\n"
            "\n"
            "run:\n"
            "  --config FILE        JSON run configuration (as RUN_DIR/config.json); flags override it\n"
            "  --out DIR            run folder (config.json, log.csv, train.log, checkpoint.safetensors,\n"
            "                       samples/, model.safetensors)\n"
            "  --resume [CKPT]      continue from CKPT (default RUN_DIR/checkpoint.safetensors) with the\n"
            "                       checkpoint's configuration; only --steps, --data, -t, --ckpt-every and\n"
            "                       the --sample-* flags may change\n"
            "  --init-weights FILE  start from the weights (EMA ones when present) of a checkpoint/model file\n"
            "  --ckpt-every N       checkpoint every N steps (0: only at the end and on SIGINT/SIGTERM) [1000]\n"
            "  --sample-every N     sample grid every N steps (0: only at the end) [1000]\n"
            "  --sample-steps N --sample-cols N --sample-cfg S --sampler NAME   grid sampling [30, 8, 3, auto]\n"
            "                       (auto: euler_a for eps/v, euler for flow; also the defaults of generate)\n"
            "  -t, --threads N      threads (default: online CPUs; the loss trajectory depends on it)\n"
            "  -q, --quiet          no progress line\n"
            "data:\n"
            "  --data PATH          image folder (one subfolder per class) or MNIST idx folder/file\n"
            "  --split NAME         idx file prefix [train]\n"
            "  --resolution N       resize + centre-crop to NxN (default: native size, all images alike)\n"
            "  --image-channels N   convert images to 1 or 3 channels (default: the data's; other counts\n"
            "                       are an error naming the image)\n"
            "  --flip               random horizontal flips\n"
            "  --limit N            use the first N samples only\n"
            "  --class-names A,B,.. class names stored with the model (default: folder names / 0..9)\n"
            "model:\n"
            "  --model unet|dit     architecture [unet]\n"
            "  --widths 16,32,64    UNet block_out_channels (one per resolution level)\n"
            "  --attn 0,0,1         UNet self-attention per level (default with --widths: lowest level only)\n"
            "  --layers N           UNet resnets per block [2]\n"
            "  --mid-attn 0|1       UNet mid-block attention [1]\n"
            "  --groups N           UNet GroupNorm groups [8]\n"
            "  --head-dim N         attention head width (UNet heads = channels / N; DiT D = heads * N) [8]\n"
            "  --patch N --depth N --heads N --ff-mult N    DiT patch size, blocks, heads, MLP ratio [2 4 4 4]\n"
            "objective:\n"
            "  --objective eps|v|flow   DDPM eps- or v-prediction, or rectified flow matching [eps]\n"
            "  --beta-schedule linear|squaredcos_cap_v2   --flow-t uniform|logit_normal   --flow-shift S\n"
            "  --label-dropout P    null label probability for classifier-free guidance [0.1]\n"
            "optimisation:\n"
            "  --steps N [10000]  --batch N [64]  --accum N [1]  --lr X [1e-3]  --warmup N [200]\n"
            "  --schedule cosine|constant [cosine]  --min-lr-ratio R [0]  --wd X [0]  --clip X [1] (0: off)\n"
            "  --ema DECAY [0.999] (0: off)  --seed N [0]\n"
            "bench:\n"
            "  --bench-steps N      time N training steps on random data (+1 warm-up); --resolution,\n"
            "                       --image-channels, --classes N set the data shape [28, 1, 10]\n"
            "  --bench-sample-batch N --bench-sample-steps N   sampling timed after training [64, 20]\n"
            "  --json               one JSON line with the numbers\n");
}

typedef struct flag_ctx {
    int argc;
    char **argv;
    int i;
    bool bad;
} flag_ctx;

static const char *flag_value(flag_ctx *f) {
    if (f->i + 1 >= f->argc) {
        fprintf(stderr, "nuance train: %s needs a value\n", f->argv[f->i]);
        f->bad = true;
        return NULL;
    }
    return f->argv[++f->i];
}

static bool flag_int(flag_ctx *f, int64_t lo, int64_t hi, int64_t *out) {
    const char *name = f->argv[f->i], *v = flag_value(f);
    if (!v) return false;
    if (!parse_i64(v, lo, hi, out)) {
        fprintf(stderr, "nuance train: %s '%s': expected an integer in [%" PRId64 ", %" PRId64 "]\n", name, v, lo, hi);
        f->bad = true;
        return false;
    }
    return true;
}

static bool flag_num(flag_ctx *f, double lo, double hi, double *out) {
    const char *name = f->argv[f->i], *v = flag_value(f);
    if (!v) return false;
    if (!parse_f64(v, lo, hi, out)) {
        fprintf(stderr, "nuance train: %s '%s': expected a number in [%g, %g]\n", name, v, lo, hi);
        f->bad = true;
        return false;
    }
    return true;
}

/* "16,32,64" -> values; returns the count or -1 */
static int parse_int_list(const char *s, int *out, int max, int lo, int hi) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < lo || v > hi || n >= max) return -1;
        out[n++] = (int)v;
        if (*end == 0) break;
        if (*end != ',') return -1;
        p = end + 1;
    }
    return n;
}

/* Pass 1: the flags that decide what the others apply to. */
static bool scan_mode_flags(int argc, char **argv, opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config") && i + 1 < argc) o->config = argv[++i];
        else if (!strcmp(a, "--out") && i + 1 < argc) o->out = argv[++i];
        else if (!strcmp(a, "--resume")) {
            o->resume = "";
            if (i + 1 < argc && argv[i + 1][0] != '-') o->resume = argv[++i];
        } else if (!strcmp(a, "--export") && i + 1 < argc) o->export_src = argv[++i];
    }
    return true;
}

/* Flags allowed to change on --resume. */
static bool resumable_flag(const char *a) {
    static const char *const ok[] = {"--steps", "--data", "-t", "--threads", "--ckpt-every", "--sample-every",
                                     "--sample-steps", "--sample-cols", "--sample-cfg", "--sampler", "-q", "--quiet",
                                     "--out", "--resume", "--prefetch", NULL};
    for (int i = 0; ok[i]; i++)
        if (!strcmp(a, ok[i])) return true;
    return false;
}

/* Pass 2: applies every flag over c (after the config file / checkpoint config). */
static bool apply_flags(int argc, char **argv, run_cfg *c, opts *o, int *bench_classes) {
    flag_ctx f = {argc, argv, 0, false};
    bool widths_given = false, attn_given = false;
    int attn_vals[NU_GEN_MAX_LEVELS];
    int n_attn = 0;
    for (f.i = 1; f.i < argc && !f.bad; f.i++) {
        const char *a = argv[f.i];
        int64_t v;
        double x;
        if (!resumable_flag(a) && a[0] == '-' && !o->has_run_flags && strcmp(a, "--config") && strcmp(a, "--export") &&
            strcmp(a, "-o") && strcmp(a, "--dtype") && strcmp(a, "--live") && strcmp(a, "--json") &&
            strncmp(a, "--bench", 7)) {
            o->has_run_flags = true;
            snprintf(o->run_flag_name, sizeof o->run_flag_name, "%s", a);
        }
        if (!strcmp(a, "--config") || !strcmp(a, "--out") || !strcmp(a, "--export")) {
            f.i++;
        } else if (!strcmp(a, "--resume")) {
            if (f.i + 1 < argc && argv[f.i + 1][0] != '-') f.i++;
        } else if (!strcmp(a, "-o")) {
            const char *s = flag_value(&f);
            if (s) o->export_out = s;
        } else if (!strcmp(a, "--dtype")) {
            const char *s = flag_value(&f);
            if (s) o->export_dtype = s;
        } else if (!strcmp(a, "--live")) {
            o->export_live = true;
        } else if (!strcmp(a, "--init-weights")) {
            o->init_weights = flag_value(&f);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (flag_int(&f, 1, 1024, &v)) o->threads = (int)v;
        } else if (!strcmp(a, "--prefetch")) {
            if (flag_int(&f, 0, 64, &v)) o->prefetch = (int)v;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = true;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--bench-steps")) {
            if (flag_int(&f, 1, 100000, &v)) o->bench_steps = v;
        } else if (!strcmp(a, "--bench-sample-batch")) {
            if (flag_int(&f, 0, 4096, &v)) o->bench_sample_batch = (int)v;
        } else if (!strcmp(a, "--bench-sample-steps")) {
            if (flag_int(&f, 1, 1000, &v)) o->bench_sample_steps = (int)v;
        } else if (!strcmp(a, "--classes")) {
            if (flag_int(&f, 0, MAX_CLASSES, &v)) *bench_classes = (int)v;
        } else if (!strcmp(a, "--data")) {
            const char *s = flag_value(&f);
            if (s) snprintf(c->data, sizeof c->data, "%s", s);
        } else if (!strcmp(a, "--split")) {
            const char *s = flag_value(&f);
            if (s) snprintf(c->split, sizeof c->split, "%s", s);
        } else if (!strcmp(a, "--resolution")) {
            if (flag_int(&f, 1, 4096, &v)) c->resolution = (int)v;
        } else if (!strcmp(a, "--image-channels")) {
            if (flag_int(&f, 1, 3, &v)) {
                if (v == 2) {
                    fprintf(stderr, "nuance train: --image-channels must be 1 or 3\n");
                    f.bad = true;
                }
                c->channels = (int)v;
            }
        } else if (!strcmp(a, "--flip")) {
            c->random_flip = true;
        } else if (!strcmp(a, "--limit")) {
            if (flag_int(&f, 1, INT64_C(1) << 40, &v)) c->limit = v;
        } else if (!strcmp(a, "--class-names")) {
            const char *s = flag_value(&f);
            if (s && !set_class_names_csv(c, s)) {
                fprintf(stderr, "nuance train: --class-names '%s': expected comma-separated non-empty names\n", s);
                f.bad = true;
            }
        } else if (!strcmp(a, "--model")) {
            const char *s = flag_value(&f);
            nu_gen_arch arch;
            if (s && nu_gen_arch_from_name(s, &arch) != NU_OK) {
                fprintf(stderr, "nuance train: --model '%s': expected unet or dit\n", s);
                f.bad = true;
            } else if (s && arch != c->model.arch) {
                nu_gen_config m = nu_gen_config_init(arch);
                m.in_channels = c->model.in_channels, m.sample_size = c->model.sample_size;
                m.num_classes = c->model.num_classes;
                c->model = m;
            }
        } else if (!strcmp(a, "--widths")) {
            const char *s = flag_value(&f);
            int w[NU_GEN_MAX_LEVELS];
            int n = s ? parse_int_list(s, w, NU_GEN_MAX_LEVELS, 1, 4096) : -1;
            if (s && n < 1) {
                fprintf(stderr, "nuance train: --widths '%s': expected 1 to %d comma-separated channel counts\n", s,
                        NU_GEN_MAX_LEVELS);
                f.bad = true;
            } else if (s) {
                c->model.n_levels = n;
                for (int i = 0; i < n; i++) c->model.block_out_channels[i] = w[i];
                widths_given = true;
            }
        } else if (!strcmp(a, "--attn")) {
            const char *s = flag_value(&f);
            n_attn = s ? parse_int_list(s, attn_vals, NU_GEN_MAX_LEVELS, 0, 1) : -1;
            if (s && n_attn < 1) {
                fprintf(stderr, "nuance train: --attn '%s': expected 0/1 per level, e.g. 0,0,1\n", s);
                f.bad = true;
            }
            attn_given = true;
        } else if (!strcmp(a, "--layers")) {
            if (flag_int(&f, 1, 16, &v)) c->model.layers_per_block = (int)v;
        } else if (!strcmp(a, "--mid-attn")) {
            if (flag_int(&f, 0, 1, &v)) c->model.mid_attention = v != 0;
        } else if (!strcmp(a, "--groups")) {
            if (flag_int(&f, 1, 1024, &v)) c->model.norm_num_groups = (int)v;
        } else if (!strcmp(a, "--head-dim")) {
            if (flag_int(&f, 1, 4096, &v)) c->model.attention_head_dim = (int)v;
        } else if (!strcmp(a, "--patch")) {
            if (flag_int(&f, 1, 64, &v)) c->model.patch_size = (int)v;
        } else if (!strcmp(a, "--depth")) {
            if (flag_int(&f, 1, 256, &v)) c->model.num_layers = (int)v;
        } else if (!strcmp(a, "--heads")) {
            if (flag_int(&f, 1, 256, &v)) c->model.num_attention_heads = (int)v;
        } else if (!strcmp(a, "--ff-mult")) {
            if (flag_int(&f, 1, 64, &v)) c->model.ff_mult = (int)v;
        } else if (!strcmp(a, "--objective")) {
            const char *s = flag_value(&f);
            nu_objective_kind k;
            if (s && nu_objective_kind_from_name(s, &k) != NU_OK) {
                fprintf(stderr, "nuance train: --objective '%s': expected eps, v or flow\n", s);
                f.bad = true;
            } else if (s && k != c->obj.kind) {
                double p = c->obj.label_dropout;
                c->obj = nu_objective_init(k);
                c->obj.label_dropout = p;
            }
        } else if (!strcmp(a, "--beta-schedule")) {
            const char *s = flag_value(&f);
            if (s && nu_beta_schedule_from_name(s, &c->obj.beta_schedule) != NU_OK) {
                fprintf(stderr, "nuance train: --beta-schedule: %s\n", nu_last_error());
                f.bad = true;
            }
        } else if (!strcmp(a, "--flow-t")) {
            const char *s = flag_value(&f);
            if (s && (!strcasecmp(s, "uniform"))) c->obj.flow_t = NU_FLOW_T_UNIFORM;
            else if (s && (!strcasecmp(s, "logit_normal") || !strcasecmp(s, "logit-normal")))
                c->obj.flow_t = NU_FLOW_T_LOGIT_NORMAL;
            else if (s) {
                fprintf(stderr, "nuance train: --flow-t '%s': expected uniform or logit_normal\n", s);
                f.bad = true;
            }
        } else if (!strcmp(a, "--flow-shift")) {
            if (flag_num(&f, 1e-3, 1e3, &x)) c->obj.flow_shift = x;
        } else if (!strcmp(a, "--label-dropout")) {
            if (flag_num(&f, 0, 1, &x)) c->obj.label_dropout = x;
        } else if (!strcmp(a, "--steps")) {
            if (flag_int(&f, 1, INT64_C(1) << 40, &v)) c->steps = v;
        } else if (!strcmp(a, "--batch")) {
            if (flag_int(&f, 1, 65536, &v)) c->batch = (int)v;
        } else if (!strcmp(a, "--accum")) {
            if (flag_int(&f, 1, 4096, &v)) c->accum = (int)v;
        } else if (!strcmp(a, "--lr")) {
            if (flag_num(&f, 0, 1e30, &x)) c->lr = x;
        } else if (!strcmp(a, "--warmup")) {
            if (flag_int(&f, 0, INT64_C(1) << 40, &v)) c->warmup = v;
        } else if (!strcmp(a, "--schedule")) {
            const char *s = flag_value(&f);
            if (s && !strcasecmp(s, "cosine")) c->schedule = NU_LR_SCHEDULE_COSINE;
            else if (s && !strcasecmp(s, "constant")) c->schedule = NU_LR_SCHEDULE_CONSTANT;
            else if (s) {
                fprintf(stderr, "nuance train: --schedule '%s': expected cosine or constant\n", s);
                f.bad = true;
            }
        } else if (!strcmp(a, "--min-lr-ratio")) {
            if (flag_num(&f, 0, 1, &x)) c->min_lr_ratio = x;
        } else if (!strcmp(a, "--wd")) {
            if (flag_num(&f, 0, 10, &x)) c->weight_decay = x;
        } else if (!strcmp(a, "--clip")) {
            if (flag_num(&f, 0, 1e9, &x)) c->clip = x;
        } else if (!strcmp(a, "--ema")) {
            if (flag_num(&f, 0, 1, &x)) c->ema = x;
        } else if (!strcmp(a, "--seed")) {
            if (flag_int(&f, 0, INT64_C(1) << 53, &v)) c->seed = (uint64_t)v;
        } else if (!strcmp(a, "--ckpt-every")) {
            if (flag_int(&f, 0, INT64_C(1) << 40, &v)) c->ckpt_every = v;
        } else if (!strcmp(a, "--sample-every")) {
            if (flag_int(&f, 0, INT64_C(1) << 40, &v)) c->sample_every = v;
        } else if (!strcmp(a, "--sample-steps")) {
            if (flag_int(&f, 1, 1000, &v)) c->sample_steps = (int)v;
        } else if (!strcmp(a, "--sample-cols")) {
            if (flag_int(&f, 1, 64, &v)) c->sample_cols = (int)v;
        } else if (!strcmp(a, "--sample-cfg")) {
            if (flag_num(&f, 0, 1000, &x)) c->sample_cfg = x;
        } else if (!strcmp(a, "--sampler")) {
            const char *s = flag_value(&f);
            nu_sampler smp;
            if (s && strcasecmp(s, "auto") && nu_sampler_from_name(s, &smp) != NU_OK) {
                fprintf(stderr, "nuance train: --sampler: %s\n", nu_last_error());
                f.bad = true;
            } else if (s)
                snprintf(c->sampler, sizeof c->sampler, "%s", s);
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "nuance train: unknown option '%s' (nuance train --help lists them)\n", a);
            f.bad = true;
        }
    }
    if (f.bad) return false;
    if (widths_given || attn_given) {
        int L = c->model.n_levels;
        if (attn_given && n_attn != L) {
            fprintf(stderr, "nuance train: --attn gives %d levels but the UNet has %d (--widths)\n", n_attn, L);
            return false;
        }
        for (int i = 0; i < L; i++) c->model.attn_levels[i] = attn_given ? attn_vals[i] != 0 : i == L - 1;
    }
    return true;
}

/* ================================================================ logging */

typedef struct run_log {
    FILE *events; /* RUN/train.log */
} run_log;

static void log_cb(nu_log_level level, const char *msg, void *user) {
    run_log *L = user;
    fprintf(stderr, "\r%s: %s\n", level >= NU_LOG_WARN ? "warning" : "note", msg);
    if (L && L->events) {
        fprintf(L->events, "%s: %s\n", level >= NU_LOG_WARN ? "warning" : "note", msg);
        fflush(L->events);
    }
}

static void event(run_log *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void event(run_log *L, const char *fmt, ...) {
    if (!L->events) return;
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(L->events, "[%s] ", ts);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(L->events, fmt, ap);
    va_end(ap);
    fputc('\n', L->events);
    fflush(L->events);
}

/* Keeps the header and the rows of log.csv with step <= keep_step (rewritten atomically); returns
 * the elapsed time of the last kept row (0 if none). */
static bool csv_truncate(const char *path, int64_t keep_step, double *elapsed) {
    *elapsed = 0;
    size_t len = 0;
    char *text = read_text_file(path, &len);
    if (!text) return errno == ENOENT;
    char tmp[PATH_MAX_LEN + 8];
    FILE *f = snprintf(tmp, sizeof tmp, "%s.tmp", path) < (int)sizeof tmp ? fopen(tmp, "wb") : NULL;
    if (!f) {
        free(text);
        return false;
    }
    char *line = text;
    bool first = true;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (first) {
            fwrite(line, 1, n, f);
            fputc('\n', f);
            first = false;
        } else if (nl) { /* a row cut by a kill (no newline) is dropped */
            long long s = -1;
            double e = 0;
            char buf[64];
            int k = 0;
            /* step is the first field, elapsed the sixth */
            if (sscanf(line, "%lld,", &s) == 1 && s <= keep_step) {
                fwrite(line, 1, n, f);
                fputc('\n', f);
                const char *p = line;
                for (int c = 0; c < 5 && p; c++) {
                    p = memchr(p, ',', (size_t)(line + n - p));
                    if (p) p++;
                }
                if (p) {
                    for (; p < line + n && k < 63; p++) buf[k++] = *p;
                    buf[k] = 0;
                    if (sscanf(buf, "%lf", &e) == 1) *elapsed = e;
                }
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (ok) ok = rename(tmp, path) == 0;
    if (!ok) remove(tmp);
    return ok;
}

/* ================================================================ sample grids */

typedef struct sample_ctx {
    bool cancelled;
} sample_ctx;

static nu_status sample_cb(void *user, const nu_sample_step_info *info) {
    (void)info;
    sample_ctx *s = user;
    if (nu_train_stop_requested()) {
        s->cancelled = true;
        return nu_error(NU_ERR_CANCELLED, "sampling cancelled by a stop request");
    }
    return NU_OK;
}

/* "auto": euler_a (ancestral: robust while a model is young) for eps/v, euler for flow models,
 * which need a deterministic sampler. */
static const char *resolve_sampler(const char *name, const nu_objective *o) {
    if (strcasecmp(name, "auto")) return name;
    return o->kind == NU_OBJECTIVE_FLOW ? "euler" : "euler_a";
}

/* One row per class (at most 16), cols columns, EMA weights when the trainer has them. */
static nu_status write_sample_grid(nu_trainer *tr, nu_gen_model *m, const run_cfg *c, nu_pool *pool, const char *path,
                                   bool *cancelled) {
    const nu_gen_config *mc = nu_gen_model_config(m);
    int rows = mc->num_classes > 0 ? (mc->num_classes < 16 ? mc->num_classes : 16) : 4;
    int cols = c->sample_cols, n = rows * cols;
    int64_t per = (int64_t)mc->in_channels * mc->sample_size * mc->sample_size;
    float *img = malloc(sizeof(float) * (size_t)(n * per));
    int64_t *labels = malloc(sizeof(int64_t) * (size_t)n);
    if (!img || !labels) {
        free(img);
        free(labels);
        return nu_error(NU_ERR_NOMEM, "out of memory for a %dx%d sample grid", rows, cols);
    }
    for (int i = 0; i < n; i++) labels[i] = mc->num_classes > 0 ? i / cols : 0;
    nu_gen_sample_params sp = nu_gen_sample_params_init();
    sp.sampler = resolve_sampler(c->sampler, &c->obj);
    sp.steps = c->sample_steps;
    sp.guidance_scale = mc->num_classes > 0 ? c->sample_cfg : 1.0;
    sp.batch = n;
    sp.labels = mc->num_classes > 0 ? labels : NULL;
    sp.seed = c->seed + 12345; /* the same noise at every grid, so grids compare across steps */
    sp.noise_seed = c->seed + 54321;
    sp.max_eval_batch = 128;
    sample_ctx sc = {false};
    sp.callback = sample_cb;
    sp.callback_user = &sc;
    nu_trainer_swap_ema(tr);
    nu_status st = nu_gen_sample(m, &c->obj, &sp, pool, img);
    nu_trainer_swap_ema(tr);
    *cancelled = sc.cancelled;
    if (st == NU_OK) {
        const char *lab[16];
        for (int r = 0; r < rows; r++) lab[r] = mc->num_classes > 0 && r < c->n_class_names ? c->class_names[r] : NULL;
        char params[256];
        snprintf(params, sizeof params, "nuance train sample grid: sampler %s, %d steps, CFG %g, seed %" PRIu64,
                 sp.sampler, c->sample_steps, sp.guidance_scale, sp.seed);
        st = nu_cli_write_grid(path, img, n, mc->in_channels, mc->sample_size, mc->sample_size, cols,
                               mc->num_classes > 0 ? lab : NULL, rows, 0, params);
    }
    free(img);
    free(labels);
    return st;
}

/* ================================================================ export */

/* Writes the (EMA) weights of a checkpoint or weights file as a standalone model file with the
 * objective and class names in its metadata. */
static int export_model(const char *src_arg, const char *out, const char *dtype_name, bool live) {
    char src[PATH_MAX_LEN];
    if (is_dir(src_arg)) {
        snprintf(src, sizeof src, "%s/checkpoint.safetensors", src_arg);
        if (!is_file(src)) {
            fprintf(stderr, "nuance train: %s: no checkpoint.safetensors in this run folder\n", src_arg);
            return 1;
        }
    } else
        snprintf(src, sizeof src, "%s", src_arg);
    nu_type type = NU_TYPE_F16;
    if (dtype_name) {
        if (!strcasecmp(dtype_name, "f16")) type = NU_TYPE_F16;
        else if (!strcasecmp(dtype_name, "bf16")) type = NU_TYPE_BF16;
        else if (!strcasecmp(dtype_name, "f32")) type = NU_TYPE_F32;
        else {
            fprintf(stderr, "nuance train: --dtype '%s': expected f16, bf16 or f32\n", dtype_name);
            return 2;
        }
    }
    char *cfg_text = NULL;
    if (nu_checkpoint_metadata(src, "config", &cfg_text) != NU_OK) {
        fprintf(stderr, "nuance train: %s\n", nu_last_error());
        return 1;
    }
    run_cfg c;
    cfg_init(&c);
    bool ok = cfg_apply_json(&c, cfg_text, strlen(cfg_text), src);
    free(cfg_text);
    nu_gen_model *m = NULL;
    if (ok && nu_gen_model_load(src, !live, &m) != NU_OK) {
        fprintf(stderr, "nuance train: %s\n", nu_last_error());
        ok = false;
    }
    char *oj = ok ? nu_objective_to_json(&c.obj) : NULL;
    sbuf names = {0};
    sb_put(&names, "[");
    for (int i = 0; i < c.n_class_names; i++) {
        if (i) sb_put(&names, ", ");
        sb_str(&names, c.class_names[i]);
    }
    sb_put(&names, "]");
    char *step = NULL;
    nu_checkpoint_metadata(src, "step", &step);
    const char *slash = strrchr(src, '/');
    char sample[256];
    snprintf(sample, sizeof sample, "{\"sampler\": \"%s\", \"steps\": %d, \"cfg_scale\": %.17g}", c.sampler,
             c.sample_steps, c.sample_cfg);
    const char *keys[5] = {"objective", "class_names", "sample", "source", "step"};
    const char *vals[5] = {oj, names.s, sample, slash ? slash + 1 : src, step ? step : "0"};
    if (ok && nu_gen_model_save(m, out, type, keys, vals, 5) != NU_OK) {
        fprintf(stderr, "nuance train: %s\n", nu_last_error());
        ok = false;
    }
    if (ok) {
        struct stat sb;
        stat(out, &sb);
        printf("wrote %s: %s %s weights, %" PRId64 " parameters, %.2f MB\n", out, live ? "live" : "EMA",
               nu_type_name(type), nu_gen_model_n_params(m), (double)sb.st_size / 1e6);
    }
    free(step);
    free(oj);
    free(names.s);
    nu_gen_model_free(m);
    cfg_free(&c);
    return ok ? 0 : 1;
}

/* ================================================================ the model + trainer */

typedef struct rig {
    nu_gen_model *m;
    nu_ctx *ctx;
    nu_gen_loss *L;
    nu_graph *g;
    nu_trainer *tr;
} rig;

static void rig_free(rig *r) {
    nu_trainer_free(r->tr);
    nu_graph_free(r->g);
    nu_gen_loss_free(r->L);
    nu_ctx_free(r->ctx);
    nu_gen_model_free(r->m);
    memset(r, 0, sizeof *r);
}

static nu_train_params train_params(const run_cfg *c) {
    nu_train_params tp = nu_train_params_init();
    tp.lr = c->lr;
    tp.weight_decay = c->weight_decay;
    tp.no_decay_1d = true;
    tp.schedule = c->schedule;
    tp.warmup_steps = c->warmup;
    tp.total_steps = c->steps;
    tp.min_lr_ratio = c->min_lr_ratio;
    tp.clip_norm = c->clip;
    tp.accum_steps = c->accum;
    tp.ema = c->ema > 0;
    tp.ema_decay = c->ema > 0 ? c->ema : 0.9999;
    tp.seed = c->seed;
    return tp;
}

static bool rig_new(rig *r, const run_cfg *c, nu_pool *pool) {
    memset(r, 0, sizeof *r);
    nu_status st = nu_gen_model_new(&c->model, c->seed, &r->m);
    if (st == NU_OK) {
        r->ctx = nu_ctx_new(NULL);
        if (!r->ctx) st = nu_error(NU_ERR_NOMEM, "out of memory");
    }
    if (st == NU_OK) {
        nu_ctx_set_alloc_data(r->ctx, false);
        st = nu_gen_loss_new(r->m, &c->obj, r->ctx, c->batch, &r->L);
    }
    if (st == NU_OK) {
        nu_tensor *loss = nu_gen_loss_tensor(r->L);
        r->g = nu_graph_new(r->ctx);
        if (!r->g) st = nu_error(NU_ERR_NOMEM, "out of memory");
        else {
            nu_graph_expand(r->g, loss);
            nu_graph_backward(r->g, loss);
            nu_train_params tp = train_params(c);
            st = nu_trainer_new(r->g, loss, pool, &tp, &r->tr);
            if (st == NU_OK) st = nu_graph_alloc(r->g);
        }
    }
    if (st != NU_OK) {
        fprintf(stderr, "nuance train: %s\n", nu_last_error());
        rig_free(r);
        return false;
    }
    return true;
}

/* Checks the model against the data shape; fills in_channels / sample_size / num_classes. */
static bool fit_model_to_data(run_cfg *c, int channels, int h, int w, int n_classes, const char *data, bool resumed) {
    if (h != w) {
        fprintf(stderr, "nuance train: %s: images are %dx%d; the models need square images (use --resolution N to "
                        "resize and centre-crop)\n", data, w, h);
        return false;
    }
    if (resumed) {
        if (c->model.in_channels != channels || c->model.sample_size != h || c->model.num_classes != n_classes) {
            fprintf(stderr, "nuance train: %s gives %dx%d images with %d channel(s) and %d classes, but the checkpoint's "
                            "model was trained on %dx%d, %d channel(s), %d classes\n", data, h, w, channels, n_classes,
                    c->model.sample_size, c->model.sample_size, c->model.in_channels, c->model.num_classes);
            return false;
        }
        return true;
    }
    c->model.in_channels = channels;
    c->model.sample_size = h;
    c->model.num_classes = n_classes;
    if (c->model.arch == NU_GEN_ARCH_UNET) {
        int f = 1 << (c->model.n_levels - 1);
        if (h % f) {
            fprintf(stderr, "nuance train: %s: images are %dx%d, not divisible by %d (the %d-level UNet halves them %d "
                            "times); use --resolution or fewer --widths\n", data, h, w, f, c->model.n_levels,
                    c->model.n_levels - 1);
            return false;
        }
    } else if (h % c->model.patch_size) {
        fprintf(stderr, "nuance train: %s: images are %dx%d, not divisible by the DiT patch size %d\n", data, h, w,
                c->model.patch_size);
        return false;
    }
    if (nu_gen_config_check(&c->model) != NU_OK) {
        fprintf(stderr, "nuance train: %s\n", nu_last_error());
        return false;
    }
    if (nu_objective_check(&c->obj) != NU_OK) {
        fprintf(stderr, "nuance train: %s\n", nu_last_error());
        return false;
    }
    return true;
}

static void fmt_duration(char *b, size_t n, double s) {
    if (!(s >= 0) || s > 1e8) snprintf(b, n, "?");
    else if (s < 60) snprintf(b, n, "%.0fs", s);
    else if (s < 3600) snprintf(b, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(b, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

/* ================================================================ bench */

static int run_bench(run_cfg *c, const opts *o, int classes, nu_pool *pool) {
    int S = c->resolution > 0 ? c->resolution : 28, C = c->channels > 0 ? c->channels : 1;
    if (!fit_model_to_data(c, C, S, S, classes, "bench data", false)) return 1;
    rig r;
    if (!rig_new(&r, c, pool)) return 1;
    int64_t per = (int64_t)C * S * S;
    float *x = malloc(sizeof(float) * (size_t)(c->batch * per));
    int64_t *y = malloc(sizeof(int64_t) * (size_t)c->batch);
    nu_rng rng;
    nu_rng_seed(&rng, 1);
    nu_rng_rand_f32(&rng, x, c->batch * per);
    for (int64_t i = 0; i < c->batch * per; i++) x[i] = 2 * x[i] - 1;
    for (int i = 0; i < c->batch; i++) y[i] = classes > 0 ? i % classes : -1;
    double *times = malloc(sizeof(double) * (size_t)(o->bench_steps + 1));
    nu_status st = NU_OK;
    for (int64_t s = 0; s <= o->bench_steps && st == NU_OK; s++) { /* step 0: warm-up */
        double t0 = now_s();
        for (int k = 0; k < c->accum && st == NU_OK; k++) {
            st = nu_gen_loss_prepare(r.L, nu_trainer_rng(r.tr), x, classes > 0 ? y : NULL);
            if (st == NU_OK) st = nu_trainer_forward_backward(r.tr, NULL);
        }
        if (st == NU_OK) st = nu_trainer_step(r.tr, NULL);
        times[s] = now_s() - t0;
    }
    if (st != NU_OK) {
        fprintf(stderr, "nuance train: bench: %s\n", nu_last_error());
        rig_free(&r);
        return 1;
    }
    /* median of the timed steps */
    int64_t n = o->bench_steps;
    for (int64_t i = 1; i <= n; i++)
        for (int64_t j = i; j > 1 && times[j] < times[j - 1]; j--) {
            double t = times[j];
            times[j] = times[j - 1], times[j - 1] = t;
        }
    double step_s = times[1 + n / 2];
    double train_ips = c->batch * c->accum / step_s;
    double sample_ips = 0, sample_s = 0;
    int sb = o->bench_sample_batch;
    if (sb > 0) {
        int64_t *lab = malloc(sizeof(int64_t) * (size_t)sb);
        float *out = malloc(sizeof(float) * (size_t)(sb * per));
        for (int i = 0; i < sb; i++) lab[i] = classes > 0 ? i % classes : 0;
        nu_gen_sample_params sp = nu_gen_sample_params_init();
        sp.sampler = resolve_sampler(c->sampler, &c->obj);
        sp.steps = o->bench_sample_steps;
        sp.guidance_scale = classes > 0 ? 3.0 : 1.0;
        sp.batch = sb;
        sp.labels = classes > 0 ? lab : NULL;
        sp.max_eval_batch = 128;
        double t0 = now_s();
        st = nu_gen_sample(r.m, &c->obj, &sp, pool, out);
        sample_s = now_s() - t0;
        sample_ips = sb / sample_s;
        free(lab);
        free(out);
        if (st != NU_OK) {
            fprintf(stderr, "nuance train: bench sampling: %s\n", nu_last_error());
            rig_free(&r);
            return 1;
        }
    }
    int64_t np = nu_gen_model_n_params(r.m);
    if (o->json) {
        printf("{\"arch\": \"%s\", \"params\": %" PRId64 ", \"batch\": %d, \"resolution\": %d, \"threads\": %d, "
               "\"train_step_s\": %.6f, \"train_images_per_s\": %.3f, \"sample_batch\": %d, \"sample_steps\": %d, "
               "\"sample_cfg\": %s, \"sample_s\": %.6f, \"sample_images_per_s\": %.3f}\n",
               nu_gen_arch_name(c->model.arch), np, c->batch * c->accum, S, o->threads, step_s, train_ips, sb,
               o->bench_sample_steps, classes > 0 ? "true" : "false", sample_s, sample_ips);
    } else {
        printf("model %s, %" PRId64 " parameters, %dx%dx%d, batch %d, %d threads\n", nu_gen_arch_name(c->model.arch), np,
               C, S, S, c->batch * c->accum, o->threads);
        printf("train step (forward + backward + AdamW): %.1f ms median of %" PRId64 " -> %.1f images/s\n", step_s * 1e3,
               n, train_ips);
        if (sb > 0)
            printf("sampling %d images, %d %s steps%s: %.2f s -> %.1f images/s\n", sb, o->bench_sample_steps,
                   resolve_sampler(c->sampler, &c->obj), classes > 0 ? " with CFG" : "", sample_s,
                   sample_ips);
    }
    free(times);
    free(x);
    free(y);
    rig_free(&r);
    return 0;
}

/* ================================================================ training */

static int train_main(int argc, char **argv) {
    opts o;
    memset(&o, 0, sizeof o);
    o.threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (o.threads < 1) o.threads = 1;
    o.prefetch = 4;
    o.bench_sample_batch = 64;
    o.bench_sample_steps = 20;
    scan_mode_flags(argc, argv, &o);
    run_cfg c;
    cfg_init(&c);
    int bench_classes = 10;
    int rc = 1;

    /* ---- export mode */
    if (o.export_src) {
        if (!apply_flags(argc, argv, &c, &o, &bench_classes)) return 2;
        if (!o.export_out) {
            fprintf(stderr, "nuance train: --export needs -o OUT.safetensors\n");
            return 2;
        }
        cfg_free(&c);
        return export_model(o.export_src, o.export_out, o.export_dtype, o.export_live);
    }

    /* ---- the configuration: defaults < config file < flags; or the checkpoint's on --resume */
    char ckpt_in[PATH_MAX_LEN] = "";
    char *ckpt_cfg = NULL;
    bool resumed = o.resume != NULL;
    if (resumed) {
        if (o.resume[0]) snprintf(ckpt_in, sizeof ckpt_in, "%s", o.resume);
        else if (o.out) snprintf(ckpt_in, sizeof ckpt_in, "%s/checkpoint.safetensors", o.out);
        else {
            fprintf(stderr, "nuance train: --resume needs a checkpoint path or --out RUN_DIR\n");
            return 2;
        }
        if (!is_file(ckpt_in)) {
            fprintf(stderr, "nuance train: checkpoint '%s' does not exist%s\n", ckpt_in,
                    o.resume[0] ? "" : " (nothing to resume in this run folder)");
            return 1;
        }
        if (o.config) {
            fprintf(stderr, "nuance train: --config cannot be combined with --resume (the checkpoint holds the run's "
                            "configuration)\n");
            return 2;
        }
        char *fmt = NULL;
        if (nu_checkpoint_metadata(ckpt_in, "format", &fmt) != NU_OK || strcmp(fmt, "nuance.train.checkpoint") != 0) {
            if (fmt)
                fprintf(stderr, "nuance train: %s: not a nuance training checkpoint (a weights file? use --init-weights "
                                "to start a new run from it)\n", ckpt_in);
            else
                fprintf(stderr, "nuance train: cannot resume: %s\n", nu_last_error());
            free(fmt);
            return 1;
        }
        free(fmt);
        if (nu_checkpoint_metadata(ckpt_in, "config", &ckpt_cfg) != NU_OK) {
            fprintf(stderr, "nuance train: %s: no run configuration in the checkpoint\n", ckpt_in);
            return 1;
        }
        char label[PATH_MAX_LEN + 32];
        snprintf(label, sizeof label, "%s (config)", ckpt_in);
        nu_json *probe = nu_json_parse(ckpt_cfg, strlen(ckpt_cfg));
        bool is_gen = probe && nu_json_get(probe, "model") && nu_json_get(probe, "objective");
        nu_json_free(probe);
        if (!is_gen) {
            fprintf(stderr, "nuance train: %s: a training checkpoint of another kind of model (no generative model "
                            "config); nuance train resumes only its own runs\n", ckpt_in);
            free(ckpt_cfg);
            return 1;
        }
        if (!cfg_apply_json(&c, ckpt_cfg, strlen(ckpt_cfg), label)) {
            free(ckpt_cfg);
            return 1;
        }
        if (!o.out) { /* the checkpoint's folder */
            static char dir[PATH_MAX_LEN];
            snprintf(dir, sizeof dir, "%s", ckpt_in);
            char *sl = strrchr(dir, '/');
            if (sl) *sl = 0;
            else snprintf(dir, sizeof dir, ".");
            o.out = dir;
        }
    } else if (o.config) {
        size_t len = 0;
        char *text = read_text_file(o.config, &len);
        if (!text) {
            fprintf(stderr, "nuance train: cannot read config '%s': %s\n", o.config, strerror(errno));
            return 1;
        }
        bool ok = cfg_apply_json(&c, text, len, o.config);
        free(text);
        if (!ok) return 1;
    }
    if (!apply_flags(argc, argv, &c, &o, &bench_classes)) {
        free(ckpt_cfg);
        cfg_free(&c);
        return 2;
    }
    if (resumed && o.has_run_flags) {
        fprintf(stderr, "nuance train: %s cannot change when resuming: the run continues with the checkpoint's "
                        "configuration (start a new run with --init-weights to change it)\n", o.run_flag_name);
        free(ckpt_cfg);
        cfg_free(&c);
        return 2;
    }
    if (resumed && o.init_weights) {
        fprintf(stderr, "nuance train: --init-weights and --resume exclude each other\n");
        free(ckpt_cfg);
        cfg_free(&c);
        return 2;
    }

    if (resumed && c.threads > 0 && c.threads != o.threads)
        fprintf(stderr, "note: the run used %d threads, this continuation %d: the losses may differ in the last bits "
                        "from an uninterrupted run (pass -t %d to continue it exactly)\n", c.threads, o.threads, c.threads);
    c.threads = o.threads;
    nu_pool *pool = nu_pool_new(o.threads);
    if (o.bench_steps > 0) {
        rc = run_bench(&c, &o, bench_classes, pool);
        nu_pool_free(pool);
        cfg_free(&c);
        free(ckpt_cfg);
        return rc;
    }

    if (!c.data[0]) {
        fprintf(stderr, "nuance train: no dataset: give --data DIR_OR_IDX (an image folder with one subfolder per "
                        "class, or MNIST idx files)\n");
        nu_pool_free(pool);
        return 2;
    }
    if (!o.out) {
        fprintf(stderr, "nuance train: no run folder: give --out RUN_DIR\n");
        nu_pool_free(pool);
        return 2;
    }

    /* ---- data */
    run_log L = {NULL};
    nu_log_set_callback(log_cb, &L, NU_LOG_WARN);
    nu_dataset_params dp = nu_dataset_params_init();
    dp.path = c.data;
    dp.split = c.split;
    dp.channels = c.channels;
    dp.strict_channels = c.channels == 0;
    dp.resolution = c.resolution;
    dp.random_flip = c.random_flip;
    dp.batch_size = c.batch;
    dp.seed = c.seed;
    dp.prefetch = o.prefetch;
    dp.limit = c.limit;
    nu_dataset *data = NULL;
    rig r;
    memset(&r, 0, sizeof r);
    FILE *csv = NULL;
    char path[PATH_MAX_LEN + 64], ckpt_path[PATH_MAX_LEN + 64];
    char *cfg_json = NULL;
    if (nu_dataset_open(&dp, &data) != NU_OK) {
        fprintf(stderr, "nuance train: %s\n", nu_last_error());
        goto done;
    }
    int n_classes = nu_dataset_n_classes(data);
    if (!fit_model_to_data(&c, nu_dataset_channels(data), nu_dataset_height(data), nu_dataset_width(data), n_classes,
                           c.data, resumed))
        goto done;
    if (c.n_class_names == 0 && n_classes > 0) {
        for (int i = 0; i < n_classes && i < MAX_CLASSES; i++) c.class_names[c.n_class_names++] = strdup(nu_dataset_class_name(data, i));
    } else if (n_classes > 0 && c.n_class_names != n_classes) {
        fprintf(stderr, "nuance train: %d class names given but %s has %d classes\n", c.n_class_names, c.data, n_classes);
        goto done;
    }

    /* ---- run folder */
    if (mkdir_p(o.out) != 0) {
        fprintf(stderr, "nuance train: cannot create run folder '%s': %s\n", o.out, strerror(errno));
        goto done;
    }
    snprintf(ckpt_path, sizeof ckpt_path, "%s/checkpoint.safetensors", o.out);
    if (!resumed && is_file(ckpt_path)) {
        fprintf(stderr, "nuance train: %s already holds a run (checkpoint.safetensors); continue it with --resume, or "
                        "choose another --out\n", o.out);
        goto done;
    }
    snprintf(path, sizeof path, "%s/train.log", o.out);
    L.events = fopen(path, "a");
    cfg_json = cfg_to_json(&c);

    /* ---- model and trainer */
    if (!rig_new(&r, &c, pool)) goto done;
    int64_t start_step = 0;
    double elapsed0 = 0;
    snprintf(path, sizeof path, "%s/log.csv", o.out);
    if (resumed) {
        if (nu_trainer_load(r.tr, ckpt_in, data, NULL) != NU_OK) {
            fprintf(stderr, "nuance train: %s\n", nu_last_error());
            goto done;
        }
        start_step = nu_trainer_step_count(r.tr);
        if (!csv_truncate(path, start_step, &elapsed0)) {
            fprintf(stderr, "nuance train: cannot rewrite %s: %s\n", path, strerror(errno));
            goto done;
        }
        event(&L, "resumed from %s at step %" PRId64 " (data batch %" PRId64 ")", ckpt_in, start_step,
              nu_dataset_position(data));
        if (start_step >= c.steps) {
            fprintf(stderr, "nuance train: %s is at step %" PRId64 ", the run has %" PRId64 " steps: nothing to do (raise "
                            "--steps to continue)\n", ckpt_in, start_step, c.steps);
            rc = 0;
            goto done;
        }
    } else {
        if (o.init_weights && nu_trainer_load_weights(r.tr, o.init_weights, true) != NU_OK &&
            nu_trainer_load_weights(r.tr, o.init_weights, false) != NU_OK) {
            fprintf(stderr, "nuance train: --init-weights: %s\n", nu_last_error());
            goto done;
        }
        char cp[PATH_MAX_LEN + 64];
        snprintf(cp, sizeof cp, "%s/config.json", o.out);
        FILE *cf = fopen(cp, "wb");
        if (!cf || fputs(cfg_json, cf) < 0 || fclose(cf) != 0) {
            fprintf(stderr, "nuance train: cannot write %s: %s\n", cp, strerror(errno));
            goto done;
        }
        event(&L, "new run; configuration in %s", cp);
    }
    bool csv_new = !is_file(path) || !resumed;
    csv = fopen(path, csv_new ? "wb" : "ab");
    if (!csv) {
        fprintf(stderr, "nuance train: cannot open %s: %s\n", path, strerror(errno));
        goto done;
    }
    if (csv_new) {
        fprintf(csv, "step,loss,lr,grad_norm,images_per_s,elapsed\n");
        fflush(csv);
    }
    snprintf(path, sizeof path, "%s/samples", o.out);
    mkdir_p(path);

    fprintf(stderr,
            "nuance train: %s, %" PRId64 " parameters, %s objective; data %s: %" PRId64 " images %dx%dx%d, %d "
            "classes; batch %d x %d, %" PRId64 " steps%s; %d threads\n",
            nu_gen_arch_name(c.model.arch), nu_gen_model_n_params(r.m), nu_objective_kind_name(c.obj.kind), c.data,
            nu_dataset_count(data), c.model.in_channels, c.model.sample_size, c.model.sample_size, n_classes, c.batch,
            c.accum, c.steps, resumed ? " (resumed)" : "", o.threads);
    event(&L, "start: step %" PRId64 " of %" PRId64 ", %d threads, %" PRId64 " parameters, %" PRId64 " images", start_step,
          c.steps, o.threads, nu_gen_model_n_params(r.m), nu_dataset_count(data));

    /* ---- the loop */
    nu_train_clear_stop();
    nu_train_signals_install();
    bool tty = isatty(2) && !o.quiet;
    double t_start = now_s(), t_print = t_start, rate = 0;
    int64_t step = start_step, last_saved = resumed ? start_step : -1, print_step = step;
    bool failed = false, stopped = false;
    while (step < c.steps) {
        if (nu_train_stop_requested()) {
            stopped = true;
            break;
        }
        double t0 = now_s();
        nu_status st = NU_OK;
        for (int k = 0; k < c.accum && st == NU_OK; k++) {
            const nu_batch *b;
            st = nu_dataset_next(data, &b);
            if (st == NU_OK) st = nu_gen_loss_prepare(r.L, nu_trainer_rng(r.tr), b->images, n_classes > 0 ? b->labels : NULL);
            if (st == NU_OK) st = nu_trainer_forward_backward(r.tr, NULL);
        }
        nu_step_info info;
        if (st == NU_OK) st = nu_trainer_step(r.tr, &info);
        if (st != NU_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", nu_last_error());
            if (strstr(msg, "step")) /* the trainer's messages name the step already */
                fprintf(stderr, "%snuance train: %s\n", tty ? "\n" : "", msg);
            else
                fprintf(stderr, "%snuance train: step %" PRId64 ": %s\n", tty ? "\n" : "", step + 1, msg);
            event(&L, "error at step %" PRId64 ": %s", step + 1, msg);
            if (last_saved >= 0)
                fprintf(stderr, "nuance train: stopped; the last good checkpoint %s (step %" PRId64 ") and the log are "
                                "kept%s\n", ckpt_path, last_saved,
                        st == NU_ERR_NUMERIC ? "; lower --lr or raise --warmup, then continue with --resume" : "");
            else
                fprintf(stderr, "nuance train: stopped before the first checkpoint; nothing was saved\n");
            event(&L, "stopped; last checkpoint at step %" PRId64, last_saved);
            failed = true;
            break;
        }
        step = info.step;
        double t1 = now_s();
        double ips = (double)c.batch * c.accum / (t1 - t0);
        rate = rate == 0 ? ips : 0.9 * rate + 0.1 * ips;
        double elapsed = elapsed0 + (t1 - t_start);
        fprintf(csv, "%" PRId64 ",%.9g,%.9g,%.9g,%.2f,%.3f\n", step, info.loss, info.lr, info.grad_norm, ips, elapsed);
        fflush(csv);
        if (!o.quiet && (t1 - t_print >= (tty ? 0.5 : 30.0) || step == c.steps || step == start_step + 1)) {
            double sps = (step - print_step) / (t1 - t_print);
            if (step == start_step + 1 || !(sps > 0)) sps = rate / (c.batch * c.accum);
            char eta[32];
            fmt_duration(eta, sizeof eta, (double)(c.steps - step) / sps);
            fprintf(stderr, "%sstep %" PRId64 "/%" PRId64 "  loss %.5f  lr %.2e  |g| %.3f  %.1f img/s  ETA %s%s",
                    tty ? "\r" : "", step, c.steps, info.loss, info.lr, info.grad_norm, rate, eta, tty ? "   " : "\n");
            t_print = t1, print_step = step;
        }
        if (c.ckpt_every > 0 && step % c.ckpt_every == 0 && step < c.steps) {
            if (nu_trainer_save(r.tr, ckpt_path, cfg_json, data) != NU_OK) {
                fprintf(stderr, "%snuance train: checkpoint at step %" PRId64 ": %s\n", tty ? "\n" : "", step, nu_last_error());
                event(&L, "checkpoint at step %" PRId64 " failed: %s", step, nu_last_error());
                failed = true;
                break;
            }
            last_saved = step;
            event(&L, "checkpoint: step %" PRId64, step);
        }
        if (c.sample_every > 0 && step % c.sample_every == 0 && step < c.steps) {
            char gp[PATH_MAX_LEN + 64];
            snprintf(gp, sizeof gp, "%s/samples/step-%06" PRId64 ".png", o.out, step);
            bool cancelled = false;
            double ts = now_s();
            if (write_sample_grid(r.tr, r.m, &c, pool, gp, &cancelled) != NU_OK && !cancelled) {
                fprintf(stderr, "%snuance train: sample grid at step %" PRId64 ": %s\n", tty ? "\n" : "", step,
                        nu_last_error());
                event(&L, "sample grid at step %" PRId64 " failed: %s", step, nu_last_error());
            } else if (!cancelled)
                event(&L, "samples: %s (%.1f s)", gp, now_s() - ts);
            t_start += now_s() - ts; /* elapsed counts training time only */
        }
    }
    if (tty) fputc('\n', stderr);
    if (failed) goto done;
    /* final checkpoint (or on a signal) */
    if (step != last_saved && step > 0) {
        if (nu_trainer_save(r.tr, ckpt_path, cfg_json, data) != NU_OK) {
            fprintf(stderr, "nuance train: final checkpoint: %s\n", nu_last_error());
            goto done;
        }
        event(&L, "checkpoint: step %" PRId64 "%s", step, stopped ? " (stop requested)" : "");
    }
    if (stopped) {
        fprintf(stderr, "nuance train: stopped at step %" PRId64 " by a signal; checkpoint %s saved; continue with: "
                        "nuance train --out %s --resume\n", step, ckpt_path, o.out);
        event(&L, "stopped by a signal at step %" PRId64, step);
        rc = 130;
        goto done;
    }
    /* the end: a last grid and the EMA weights as a standalone f16 model */
    {
        char gp[PATH_MAX_LEN + 64];
        snprintf(gp, sizeof gp, "%s/samples/step-%06" PRId64 ".png", o.out, step);
        bool cancelled = false;
        if (c.sample_every > 0 && write_sample_grid(r.tr, r.m, &c, pool, gp, &cancelled) != NU_OK && !cancelled)
            fprintf(stderr, "nuance train: final sample grid: %s\n", nu_last_error());
        else if (c.sample_every > 0)
            event(&L, "samples: %s", gp);
        char mp[PATH_MAX_LEN + 64];
        snprintf(mp, sizeof mp, "%s/model.safetensors", o.out);
        fflush(stdout);
        if (export_model(ckpt_path, mp, "f16", false) != 0) goto done;
        event(&L, "finished at step %" PRId64 "; EMA weights in %s", step, mp);
    }
    rc = 0;
done:
    nu_train_signals_restore();
    if (csv) fclose(csv);
    rig_free(&r);
    nu_dataset_free(data);
    nu_pool_free(pool);
    if (L.events) fclose(L.events);
    nu_log_set_callback(NULL, NULL, NU_LOG_WARN);
    free(cfg_json);
    free(ckpt_cfg);
    cfg_free(&c);
    return rc;
}

int nu_cli_train(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    return train_main(argc, argv);
}
