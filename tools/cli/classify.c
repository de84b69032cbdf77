/*
 * classify.c — `nuance train-classifier` and `nuance eval classify`: the CNN classifier of
 * nuance/classify.h that measures generated samples (issue 4 item 6).
 *
 *   nuance train-classifier --data DIR_OR_IDX --out FILE [--epochs N] [--seed S] ...
 *       trains on an MNIST-style idx folder/file or a folder with one subfolder per class, saves
 *       f16 weights, then reports the accuracy on the test split (--test, default: the t10k files
 *       beside an idx training set)
 *   nuance eval classify --classifier FILE --class LABEL_OR_NAME DIR_OR_IMAGES...
 *       fraction of the images whose predicted class is LABEL_OR_NAME
 *   nuance eval classify --classifier FILE DIR_OR_IDX...
 *       labeled data (one subfolder per class, or idx with labels): agreement per class and overall
 *   nuance eval classify --classifier FILE --fd REAL GEN
 *       Fréchet distance between the classifier features of REAL and GEN (plus their agreement
 *       when labeled); REAL / GEN: image folders, idx folders (--split, default t10k) or idx files
 *
 * Uses only the public headers. Tested through the library by tests/test_classify.c and by hand
 * (docs/classify.md shows the runs that produced the shipped models and their numbers).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nuance/classify.h"
#include "nuance/io.h"
#include "nuance/train.h"

int nu_cli_train_classifier(int argc, char **argv);
int nu_cli_eval_classify(int argc, char **argv);

static void log_to_stderr(nu_log_level level, const char *msg, void *user) {
    (void)user;
    fprintf(stderr, "%s: %s\n", level >= NU_LOG_WARN ? "warning" : "note", msg);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_f64(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* An idx images file or a folder holding <split>-images-idx3-ubyte[.gz]. */
static bool looks_idx(const char *p, const char *split) {
    if (strstr(p, "-images-idx3-ubyte")) return true;
    char b[4096];
    struct stat st;
    snprintf(b, sizeof b, "%s/%s-images-idx3-ubyte", p, split);
    if (stat(b, &st) == 0) return true;
    snprintf(b, sizeof b, "%s/%s-images-idx3-ubyte.gz", p, split);
    return stat(b, &st) == 0;
}

/* ================================================================ train-classifier */

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: nuance train-classifier --data DIR_OR_IDX --out FILE [options]\n"
            "  --data PATH        MNIST-style idx folder (train-images-idx3-ubyte[.gz] + labels) or idx images\n"
            "                     file, or an image folder with one subfolder per class\n"
            "  --out FILE         classifier weights (.safetensors, f16 unless --f32)\n"
            "  --epochs N         passes over the training set (3)\n"
            "  --seed S           data order, dropout and initialisation (0)\n"
            "  --batch B          images per optimizer step (128)\n"
            "  --lr X             AdamW peak learning rate, warm-up then cosine to 0 (2e-3)\n"
            "  --dropout P        dropout on the 256-d features during training (0.25)\n"
            "  --flip             random horizontal flips (clothes, not digits)\n"
            "  --classes NAMES    mnist | fashion-mnist | comma-separated names (default: subfolder names;\n"
            "                     for idx data, fashion-mnist when the path says 'fashion', else digits)\n"
            "  --widths A,B,C     conv widths (32,64,128); --hidden H feature width (256)\n"
            "  --split S          idx file prefix of the training set (train)\n"
            "  --test PATH        labeled test set for the final accuracy (default: split t10k of --data)\n"
            "  --limit N          first N training images only\n"
            "  -t, --threads N    threads (default: all CPUs)\n"
            "  --f32              save f32 weights\n"
            "  -q, --quiet        no progress line\n");
}

typedef struct train_ui {
    double last;
    bool quiet;
    int epochs;
} train_ui;

static bool on_progress(const nu_classifier_progress *p, void *user) {
    train_ui *ui = user;
    double t = now();
    if (!ui->quiet && (t - ui->last >= 1.0 || p->step == p->total_steps)) {
        ui->last = t;
        double eta = p->images_per_s > 0 ? (double)(p->total_steps - p->step) * (p->elapsed_s / (double)p->step) : 0;
        fprintf(stderr, "\rstep %lld/%lld  epoch %d/%d  loss %.4f  lr %.2e  %.0f img/s  ETA %dm%02ds   ",
                (long long)p->step, (long long)p->total_steps, p->epoch + 1, ui->epochs, (double)p->loss, p->lr,
                p->images_per_s, (int)(eta / 60), (int)fmod(eta, 60.0));
        if (p->step == p->total_steps) fputc('\n', stderr);
    }
    return !nu_train_stop_requested();
}

static double accuracy_of(const nu_classifier_outputs *o, int64_t *n_labeled) {
    int64_t n = 0, ok = 0;
    for (int64_t i = 0; i < o->n; i++)
        if (o->label[i] >= 0) n++, ok += o->pred[i] == o->label[i];
    if (n_labeled) *n_labeled = n;
    return n ? (double)ok / (double)n : NAN;
}

int nu_cli_train_classifier(int argc, char **argv) {
    nu_classifier_train_params tp = nu_classifier_train_params_init();
    nu_classifier_config cfg = nu_classifier_config_init();
    const char *out = NULL, *classes = NULL, *test = NULL;
    int threads = 0;
    bool f32 = false, quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t iv;
        double dv;
#define NEED()                                                                                   \
    do {                                                                                         \
        if (!v) {                                                                                \
            fprintf(stderr, "nuance train-classifier: %s needs a value\n", a);                   \
            return 2;                                                                            \
        }                                                                                        \
        i++;                                                                                     \
    } while (0)
#define BAD()                                                                                    \
    do {                                                                                         \
        fprintf(stderr, "nuance train-classifier: bad value '%s' for %s\n", v, a);               \
        return 2;                                                                                \
    } while (0)
        if (!strcmp(a, "--data")) { NEED(); tp.data = v; }
        else if (!strcmp(a, "--out") || !strcmp(a, "-o")) { NEED(); out = v; }
        else if (!strcmp(a, "--epochs")) { NEED(); if (!parse_i64(v, 1, 1000, &iv)) BAD(); tp.epochs = (int)iv; }
        else if (!strcmp(a, "--seed")) { NEED(); if (!parse_i64(v, 0, INT64_MAX, &iv)) BAD(); tp.seed = (uint64_t)iv; }
        else if (!strcmp(a, "--batch")) { NEED(); if (!parse_i64(v, 1, 4096, &iv)) BAD(); tp.batch_size = (int)iv; }
        else if (!strcmp(a, "--lr")) { NEED(); if (!parse_f64(v, &dv) || dv <= 0) BAD(); tp.lr = dv; }
        else if (!strcmp(a, "--dropout")) { NEED(); if (!parse_f64(v, &dv) || dv < 0 || dv >= 1) BAD(); tp.dropout = (float)dv; }
        else if (!strcmp(a, "--flip")) tp.random_flip = true;
        else if (!strcmp(a, "--classes")) { NEED(); classes = v; }
        else if (!strcmp(a, "--widths")) {
            NEED();
            if (sscanf(v, "%d,%d,%d", &cfg.widths[0], &cfg.widths[1], &cfg.widths[2]) != 3) BAD();
        }
        else if (!strcmp(a, "--hidden")) { NEED(); if (!parse_i64(v, 2, 65536, &iv)) BAD(); cfg.hidden = (int)iv; }
        else if (!strcmp(a, "--split")) { NEED(); tp.split = v; }
        else if (!strcmp(a, "--test")) { NEED(); test = v; }
        else if (!strcmp(a, "--limit")) { NEED(); if (!parse_i64(v, 1, INT64_MAX, &iv)) BAD(); tp.limit = iv; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NEED(); if (!parse_i64(v, 0, 1024, &iv)) BAD(); threads = (int)iv; }
        else if (!strcmp(a, "--f32")) f32 = true;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = true;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { train_usage(stdout); return 0; }
        else {
            fprintf(stderr, "nuance train-classifier: unknown option '%s'\n", a);
            train_usage(stderr);
            return 2;
        }
#undef NEED
#undef BAD
    }
    if (!tp.data || !out) {
        fprintf(stderr, "nuance train-classifier: --data and --out are required\n");
        train_usage(stderr);
        return 2;
    }
    nu_log_set_callback(log_to_stderr, NULL, NU_LOG_WARN);

    /* class names: given, the dataset's folders, or by the idx dataset's name */
    nu_dataset_params dp = nu_dataset_params_init();
    dp.path = tp.data;
    dp.split = tp.split;
    dp.batch_size = 1;
    dp.prefetch = 0;
    dp.resolution = cfg.size;
    nu_dataset *ds;
    if (nu_dataset_open(&dp, &ds) != NU_OK) {
        fprintf(stderr, "nuance train-classifier: %s\n", nu_last_error());
        return 1;
    }
    int nk = nu_dataset_n_classes(ds);
    int64_t count = nu_dataset_count(ds);
    bool idx = looks_idx(tp.data, tp.split);
    char *names = NULL;
    if (!classes && nk > 0) {
        size_t cap = (size_t)nk * (NU_CLASSIFIER_MAX_NAME + 1) + 1, len = 0;
        names = calloc(cap, 1);
        for (int k = 0; names && k < nk; k++)
            len += (size_t)snprintf(names + len, cap - len, "%s%s", k ? "," : "", nu_dataset_class_name(ds, k));
        classes = names;
        if (idx && nk == 10) {
            char low[4096];
            snprintf(low, sizeof low, "%s", tp.data);
            for (char *q = low; *q; q++) *q = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
            classes = strstr(low, "fashion") ? "fashion-mnist" : "mnist";
        }
    }
    nu_dataset_free(ds);
    if (nk == 0) {
        fprintf(stderr, "nuance train-classifier: %s has no labels (needs an idx labels file or one subfolder per class)\n",
                tp.data);
        free(names);
        return 1;
    }
    if (nu_classifier_config_set_names(&cfg, classes) != NU_OK) {
        fprintf(stderr, "nuance train-classifier: %s\n", nu_last_error());
        free(names);
        return 2;
    }
    free(names);

    nu_classifier *m;
    if (nu_classifier_new(&cfg, tp.seed, &m) != NU_OK) {
        fprintf(stderr, "nuance train-classifier: %s\n", nu_last_error());
        return 1;
    }
    nu_pool *pool = nu_pool_new(threads);
    tp.pool = pool;
    train_ui ui = {.quiet = quiet, .epochs = tp.epochs};
    tp.progress = on_progress;
    tp.user = &ui;
    fprintf(stderr, "training a %lld-parameter classifier on %s (%lld images, %d classes: %s, %s, ...), %d epochs, "
            "batch %d, %d threads\n",
            (long long)nu_classifier_n_params(m), tp.data, (long long)(tp.limit > 0 && tp.limit < count ? tp.limit : count),
            cfg.num_classes, nu_classifier_class_name(m, 0), nu_classifier_class_name(m, 1), tp.epochs, tp.batch_size,
            nu_pool_n_threads(pool));
    nu_train_signals_install();
    nu_classifier_train_result res;
    nu_status st = nu_classifier_train(m, &tp, &res);
    nu_train_signals_restore();
    if (!quiet && res.steps > 0 && res.stopped) fputc('\n', stderr);
    if (st != NU_OK) {
        fprintf(stderr, "nuance train-classifier: %s\n", nu_last_error());
        nu_classifier_free(m);
        nu_pool_free(pool);
        return 1;
    }
    char training[1024];
    snprintf(training, sizeof training,
             "{\"data\":\"%s\",\"split\":\"%s\",\"epochs\":%d,\"seed\":%llu,\"batch\":%d,\"lr\":%g,\"dropout\":%g,"
             "\"flip\":%s,\"limit\":%lld,\"steps\":%lld,\"threads\":%d,\"seconds\":%.1f,\"final_loss\":%.5f,"
             "\"stopped\":%s}",
             strchr(tp.data, '"') || strchr(tp.data, '\\') ? "?" : tp.data, tp.split, tp.epochs,
             (unsigned long long)tp.seed, tp.batch_size, tp.lr, (double)tp.dropout, tp.random_flip ? "true" : "false",
             (long long)tp.limit, (long long)res.steps, nu_pool_n_threads(pool), res.seconds, (double)res.final_loss,
             res.stopped ? "true" : "false");
    st = nu_classifier_save(m, out, f32 ? NU_TYPE_F32 : NU_TYPE_F16, training);
    nu_classifier_free(m);
    if (st != NU_OK) {
        fprintf(stderr, "nuance train-classifier: %s\n", nu_last_error());
        nu_pool_free(pool);
        return 1;
    }
    printf("trained %lld steps (%lld images) in %.1f s (%.0f images/s); last epoch's mean loss %.4f%s\n",
           (long long)res.steps, (long long)res.images, res.seconds, res.seconds > 0 ? (double)res.images / res.seconds : 0,
           (double)res.final_loss, res.stopped ? " — stopped early" : "");
    printf("saved %s\n", out);

    /* accuracy of the saved (f16) weights on the test set */
    const char *tpath = test ? test : (idx ? tp.data : NULL);
    if (tpath && nu_classifier_load(out, &m) == NU_OK) {
        nu_classifier_outputs o;
        if (nu_classifier_eval_path(m, pool, tpath, "t10k", 0, 0, false, &o) == NU_OK) {
            int64_t nl;
            double acc = accuracy_of(&o, &nl);
            printf("test accuracy on %s: %.2f%% (%lld images)\n", tpath, 100 * acc, (long long)nl);
            nu_classifier_outputs_free(&o);
        } else if (test) {
            fprintf(stderr, "nuance train-classifier: test set: %s\n", nu_last_error());
        }
        nu_classifier_free(m);
    }
    nu_pool_free(pool);
    return res.stopped ? 130 : 0; /* interrupted: the partial model is saved, but say so */
}

/* ================================================================ eval classify */

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: nuance eval classify --classifier FILE --class LABEL_OR_NAME DIR_OR_IMAGES...\n"
            "       nuance eval classify --classifier FILE LABELED_DIR_OR_IDX...\n"
            "       nuance eval classify --classifier FILE --fd REAL GEN\n"
            "  --classifier FILE  weights from `nuance train-classifier` (e.g. models/classifier-mnist.safetensors;\n"
            "                     'mnist' / 'fashion-mnist' name the shipped ones under ./models)\n"
            "  --class C          every image should be class C (its name, case-insensitive, or index)\n"
            "  --fd REAL GEN      Fréchet distance between classifier features of the two sets\n"
            "  --via R            bring every image to RxR first (as the dataset loader does for training at\n"
            "                     R, rounded to 8 bits), then to the classifier's size: real images then take\n"
            "                     the path of samples from a generator trained at R (e.g. 32 for MNIST models\n"
            "                     trained at 32x32); samples already RxR are unchanged by that first step\n"
            "  --split S          idx file prefix for idx folders (t10k)\n"
            "  --limit N          first N images of each set\n"
            "  -t, --threads N    threads (default: all CPUs)\n"
            "  --json             one JSON object on stdout\n"
            "Folders: one subfolder per class gives labels (names or indices of the classifier's classes);\n"
            "otherwise the images directly inside. Images are made gray, resized (shorter side) and centre\n"
            "cropped to the classifier's input size.\n");
}

typedef struct counts {
    int64_t n, ok;
} counts;

/* Labeled outputs: per-class agreement (rows indexed by the true class). */
static void tally(const nu_classifier_outputs *o, int K, counts *per, counts *all) {
    for (int64_t i = 0; i < o->n; i++) {
        int64_t l = o->label[i];
        if (l < 0 || l >= K) continue;
        per[l].n++, all->n++;
        if (o->pred[i] == l) per[l].ok++, all->ok++;
    }
}

static const char *resolve_classifier(const char *s, char *buf, size_t len) {
    struct stat st;
    if (stat(s, &st) == 0) return s;
    if (!strcasecmp(s, "mnist") || !strcasecmp(s, "fashion-mnist")) {
        snprintf(buf, len, "models/classifier-%s.safetensors", !strcasecmp(s, "mnist") ? "mnist" : "fashion-mnist");
        return buf;
    }
    return s;
}

int nu_cli_eval_classify(int argc, char **argv) {
    const char *clf_path = NULL, *cls = NULL, *split = "t10k", *fd_real = NULL, *fd_gen = NULL;
    int threads = 0, via = 0;
    int64_t limit = 0;
    bool json = false;
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    int np = 0;
    if (!paths) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t iv;
        if (!strcmp(a, "--classifier") || !strcmp(a, "--class") || !strcmp(a, "--split") || !strcmp(a, "--limit") ||
            !strcmp(a, "-t") || !strcmp(a, "--threads") || !strcmp(a, "--via")) {
            if (!v) {
                fprintf(stderr, "nuance eval classify: %s needs a value\n", a);
                free(paths);
                return 2;
            }
            i++;
            if (!strcmp(a, "--classifier")) clf_path = v;
            else if (!strcmp(a, "--class")) cls = v;
            else if (!strcmp(a, "--split")) split = v;
            else {
                bool lim = !strcmp(a, "--limit"), isvia = !strcmp(a, "--via");
                if (!parse_i64(v, lim || isvia ? 1 : 0, lim ? INT64_MAX : isvia ? 4096 : 1024, &iv)) {
                    fprintf(stderr, "nuance eval classify: bad value '%s' for %s\n", v, a);
                    free(paths);
                    return 2;
                }
                if (lim) limit = iv;
                else if (isvia) via = (int)iv;
                else threads = (int)iv;
            }
        } else if (!strcmp(a, "--fd")) {
            if (i + 2 >= argc) {
                fprintf(stderr, "nuance eval classify: --fd needs two sets: REAL GEN\n");
                free(paths);
                return 2;
            }
            fd_real = argv[++i];
            fd_gen = argv[++i];
        } else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            eval_usage(stdout);
            free(paths);
            return 0;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "nuance eval classify: unknown option '%s'\n", a);
            eval_usage(stderr);
            free(paths);
            return 2;
        } else paths[np++] = a;
    }
    if (!clf_path || (!fd_real && np == 0) || (fd_real && (np > 0 || cls))) {
        fprintf(stderr, "nuance eval classify: %s\n",
                !clf_path ? "--classifier is required"
                          : fd_real ? "--fd takes exactly REAL and GEN (no other paths or --class)" : "no images given");
        eval_usage(stderr);
        free(paths);
        return 2;
    }
    nu_log_set_callback(log_to_stderr, NULL, NU_LOG_WARN);
    char cbuf[512];
    nu_classifier *m;
    if (nu_classifier_load(resolve_classifier(clf_path, cbuf, sizeof cbuf), &m) != NU_OK) {
        fprintf(stderr, "nuance eval classify: %s\n", nu_last_error());
        free(paths);
        return 1;
    }
    const nu_classifier_config *cfg = nu_classifier_get_config(m);
    const int K = cfg->num_classes;
    int want = -1;
    if (cls && (want = nu_classifier_class_index(m, cls)) < 0) {
        fprintf(stderr, "nuance eval classify: '%s' is none of the classifier's classes:", cls);
        for (int k = 0; k < K; k++) fprintf(stderr, " %s", nu_classifier_class_name(m, k));
        fputc('\n', stderr);
        nu_classifier_free(m);
        free(paths);
        return 2;
    }
    nu_pool *pool = nu_pool_new(threads);
    int rc = 0;
    double t0 = now();

    if (fd_real) { /* ---- Fréchet distance */
        nu_classifier_outputs o[2];
        const char *set[2] = {fd_real, fd_gen};
        for (int s = 0; s < 2; s++) {
            if (nu_classifier_eval_path(m, pool, set[s], split, limit, via, true, &o[s]) != NU_OK) {
                fprintf(stderr, "nuance eval classify: %s\n", nu_last_error());
                if (s == 1) nu_classifier_outputs_free(&o[0]);
                rc = 1;
                goto out;
            }
        }
        double fd;
        if (nu_classifier_frechet(o[0].features, o[0].n, o[1].features, o[1].n, cfg->hidden, pool, &fd) != NU_OK) {
            fprintf(stderr, "nuance eval classify: %s\n", nu_last_error());
            rc = 1;
        } else {
            int64_t nl[2];
            double acc[2] = {accuracy_of(&o[0], &nl[0]), accuracy_of(&o[1], &nl[1])};
            if (json) {
                printf("{\"fd\":%.6f,\"dims\":%d,\"n_real\":%lld,\"n_gen\":%lld", fd, cfg->hidden, (long long)o[0].n,
                       (long long)o[1].n);
                if (nl[0]) printf(",\"agreement_real\":%.6f", acc[0]);
                if (nl[1]) printf(",\"agreement_gen\":%.6f", acc[1]);
                printf("}\n");
            } else {
                for (int s = 0; s < 2; s++) {
                    printf("%-4s %s: %lld images", s ? "gen" : "real", set[s], (long long)o[s].n);
                    if (nl[s]) printf(", agreement with labels %.2f%%", 100 * acc[s]);
                    if (o[s].skipped) printf(", %lld unreadable skipped", (long long)o[s].skipped);
                    printf("\n");
                }
                printf("Fréchet distance (classifier features, %d dims): %.4f\n", cfg->hidden, fd);
            }
        }
        nu_classifier_outputs_free(&o[0]);
        nu_classifier_outputs_free(&o[1]);
        goto out;
    }

    /* ---- agreement */
    counts *per = calloc((size_t)K, sizeof *per);
    int64_t *hist = calloc((size_t)K, sizeof *hist);
    counts all = {0, 0};
    int64_t skipped = 0;
    int64_t per_img = (int64_t)cfg->in_channels * cfg->size * cfg->size;
    float *x = malloc(sizeof(float) * (size_t)per_img);
    if (!per || !hist || !x) {
        fprintf(stderr, "nuance eval classify: out of memory\n");
        rc = 1;
        goto agree_done;
    }
    for (int p = 0; p < np; p++) {
        const char *path = paths[p];
        if (!is_dir(path) && !looks_idx(path, split)) { /* one image file */
            if (want < 0) {
                fprintf(stderr, "nuance eval classify: %s: a single image has no label; give --class\n", path);
                rc = 2;
                goto agree_done;
            }
            nu_image img;
            float logits[NU_CLASSIFIER_MAX_CLASSES];
            int64_t pred;
            if (nu_image_load(path, &img) != NU_OK) {
                fprintf(stderr, "nuance eval classify: %s\n", nu_last_error());
                rc = 1;
                goto agree_done;
            }
            nu_status st = nu_classifier_preprocess(m, &img, via, x);
            nu_image_free(&img);
            if (st == NU_OK) st = nu_classifier_run(m, pool, x, 1, logits, NULL);
            if (st != NU_OK) {
                fprintf(stderr, "nuance eval classify: %s: %s\n", path, nu_last_error());
                rc = 1;
                goto agree_done;
            }
            nu_classifier_argmax(logits, 1, K, &pred);
            hist[pred]++;
            per[want].n++, all.n++;
            if (pred == want) per[want].ok++, all.ok++;
            continue;
        }
        nu_classifier_outputs o;
        if (nu_classifier_eval_path(m, pool, path, split, limit, via, false, &o) != NU_OK) {
            fprintf(stderr, "nuance eval classify: %s\n", nu_last_error());
            rc = 1;
            goto agree_done;
        }
        skipped += o.skipped;
        for (int64_t i = 0; i < o.n; i++) {
            hist[o.pred[i]]++;
            if (want >= 0) o.label[i] = want; /* --class overrides folder / idx labels */
        }
        int64_t before = all.n;
        tally(&o, K, per, &all);
        if (all.n == before) {
            fprintf(stderr, "nuance eval classify: %s: no labels (one subfolder per class, or idx labels); give --class\n",
                    path);
            nu_classifier_outputs_free(&o);
            rc = 2;
            goto agree_done;
        }
        nu_classifier_outputs_free(&o);
    }
    double dt = now() - t0;
    if (json) {
        printf("{\"n\":%lld,\"agree\":%lld,\"agreement\":%.6f", (long long)all.n, (long long)all.ok,
               all.n ? (double)all.ok / (double)all.n : 0.0);
        if (want >= 0) printf(",\"class\":\"%s\"", nu_classifier_class_name(m, want));
        printf(",\"per_class\":{");
        bool first = true;
        for (int k = 0; k < K; k++) {
            if (!per[k].n) continue;
            printf("%s\"%s\":{\"n\":%lld,\"agreement\":%.6f}", first ? "" : ",", nu_classifier_class_name(m, k),
                   (long long)per[k].n, (double)per[k].ok / (double)per[k].n);
            first = false;
        }
        printf("},\"predicted\":{");
        first = true;
        for (int k = 0; k < K; k++) {
            if (!hist[k]) continue;
            printf("%s\"%s\":%lld", first ? "" : ",", nu_classifier_class_name(m, k), (long long)hist[k]);
            first = false;
        }
        printf("},\"skipped\":%lld}\n", (long long)skipped);
    } else {
        if (want < 0) {
            printf("%-12s %8s %10s\n", "class", "images", "agreement");
            for (int k = 0; k < K; k++)
                if (per[k].n)
                    printf("%-12s %8lld %9.2f%%\n", nu_classifier_class_name(m, k), (long long)per[k].n,
                           100.0 * (double)per[k].ok / (double)per[k].n);
        } else {
            printf("predicted:");
            for (int k = 0; k < K; k++)
                if (hist[k]) printf(" %s=%lld", nu_classifier_class_name(m, k), (long long)hist[k]);
            printf("\n");
        }
        printf("agreement%s%s: %.2f%% (%lld of %lld images)%s", want >= 0 ? " with class " : "",
               want >= 0 ? nu_classifier_class_name(m, want) : "", all.n ? 100.0 * (double)all.ok / (double)all.n : 0.0,
               (long long)all.ok, (long long)all.n, skipped ? "" : "\n");
        if (skipped) printf(", %lld unreadable skipped\n", (long long)skipped);
        fprintf(stderr, "(%.1f s)\n", dt);
    }
agree_done:
    free(per);
    free(hist);
    free(x);
out:
    nu_pool_free(pool);
    nu_classifier_free(m);
    free(paths);
    return rc;
}
