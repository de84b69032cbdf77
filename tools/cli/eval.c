/*
 * eval.c — `nuance eval`: FID, KID, Inception Score and precision/recall of image folders (or
 * saved statistics), with pytorch-fid's InceptionV3 and the conventions of pytorch-fid /
 * clean-fid / torch-fidelity (docs/metrics.md).
 *
 *   nuance eval fid   A B  --weights W       A, B: image folders or .npz with mu/sigma
 *   nuance eval kid   A B  --weights W       A, B: image folders or .npz with feats [N, 2048]
 *   nuance eval pr    REAL FAKE --weights W  same inputs as kid; precision/recall/density/coverage
 *   nuance eval is    DIR  --weights W       Inception Score (logits without the fc bias)
 *   nuance eval stats DIR  -o out.npz --weights W [--features]
 *
 * Folders are read as pytorch-fid does: the files directly inside DIR whose names end in .bmp
 * .jpg .jpeg .pgm .png .ppm .tif .tiff .webp (lower case, as pathlib's glob on Linux), sorted by
 * name; --recursive follows clean-fid instead (subfolders too, also .JPEG .JPG .PNG). Every image
 * is converted and resized to 299x299 on its own, so mixed sizes are fine (pytorch-fid's
 * DataLoader needs equal sizes within a batch; the result equals its batch-size-1 run).
 * Unreadable images stop the run with a message naming the file (pytorch-fid raises too);
 * --skip-bad skips them with a warning each and a count at the end, as clean-fid's loaders do not.
 * Progress (images done / total, images/s, ETA) goes to stderr; results to stdout.
 * Uses only the public headers. Tested by tests/test_eval_fid.c (the same pipeline through the
 * library) and by hand against the reference folders (docs/metrics.md).
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nuance/io.h"
#include "nuance/metrics.h"
#include "nuance/tensor.h"

int nu_cli_eval(int argc, char **argv);

typedef struct eval_opts {
    const char *weights, *out;
    int batch, threads, dims, k, splits, subsets, subset_size;
    uint32_t seed, is_seed;
    bool skip_bad, recursive, quiet, features, no_shuffle, seed_set;
} eval_opts;

static nu_pool *g_pool; /* for the SIGINT handler */

static void on_sigint(int sig) {
    (void)sig;
    if (g_pool) nu_pool_cancel(g_pool);
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C ends the process */
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------- folder listing */

typedef struct file_list {
    char **paths;
    int n, cap;
    int skipped_case; /* files with upper-case image extensions pytorch-fid's glob ignores */
} file_list;

static const char *const EXT_PYTORCH_FID[] = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp", NULL};
/* clean-fid's EXTENSIONS (minus npy) */
static const char *const EXT_CLEAN_FID[] = {"bmp",  "jpg", "jpeg", "pgm", "png", "ppm",
                                            "tif",  "tiff", "webp", "JPEG", "JPG", "PNG", NULL};

static bool has_ext(const char *name, const char *const *exts, bool nocase) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name + strlen(name) - 1) return false;
    for (int i = 0; exts[i]; i++)
        if (nocase ? !strcasecmp(dot + 1, exts[i]) : !strcmp(dot + 1, exts[i])) return true;
    return false;
}

static bool list_push(file_list *l, const char *path) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 256;
        char **p = realloc(l->paths, sizeof(char *) * (size_t)cap);
        if (!p) return false;
        l->paths = p;
        l->cap = cap;
    }
    l->paths[l->n] = strdup(path);
    return l->paths[l->n++] != NULL;
}

static void list_free(file_list *l) {
    for (int i = 0; i < l->n; i++) free(l->paths[i]);
    free(l->paths);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int scan_dir(const char *dir, bool recursive, file_list *l, int depth) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "nuance eval: cannot read folder %s: %s\n", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path) continue;
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (recursive && depth < 64 && scan_dir(path, true, l, depth + 1) != 0) {
                closedir(d);
                return -1;
            }
            continue;
        }
        if (!S_ISREG(st.st_mode)) continue;
        if (has_ext(e->d_name, recursive ? EXT_CLEAN_FID : EXT_PYTORCH_FID, false)) {
            if (!list_push(l, path)) {
                closedir(d);
                fprintf(stderr, "nuance eval: out of memory listing %s\n", dir);
                return -1;
            }
        } else if (has_ext(e->d_name, EXT_PYTORCH_FID, true)) {
            l->skipped_case++;
        }
    }
    closedir(d);
    return 0;
}

/* ---------------------------------------------------------------- progress */

typedef struct progress {
    const char *label;
    int total, done;
    double t0, last;
    bool tty, quiet;
} progress;

static void progress_show(progress *p, bool final) {
    if (p->quiet) return;
    double t = now();
    if (!final && !p->tty && t - p->last < 10.0) return; /* logs: a line every 10 s */
    p->last = t;
    double el = t - p->t0, rate = el > 0 ? p->done / el : 0;
    double eta = rate > 0 ? (p->total - p->done) / rate : 0;
    int w = 30, fill = p->total ? (int)((double)w * p->done / p->total) : w;
    char bar[64];
    for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
    bar[w] = 0;
    fprintf(stderr, "%s%s [%s] %d/%d images  %.1f img/s  %s %d:%02d%s", p->tty ? "\r" : "", p->label, bar, p->done,
            p->total, rate, final ? "took" : "ETA", (int)((final ? el : eta) / 60), (int)fmod(final ? el : eta, 60.0),
            p->tty && !final ? "" : "\n");
    fflush(stderr);
}

/* ---------------------------------------------------------------- feature extraction */

typedef struct features {
    int64_t n;
    float *pool3;  /* [n, 2048] (NULL if not kept)       */
    float *logits; /* [n, 1008] (NULL if not wanted)     */
    nu_fid_accum *acc;
} features;

static void features_free(features *f) {
    free(f->pool3);
    free(f->logits);
    nu_fid_accum_free(f->acc);
    memset(f, 0, sizeof *f);
}

typedef struct model {
    nu_inception *net;
    nu_pool *pool;
} model;

static int load_model(model *m, const eval_opts *o) {
    if (m->net) return 0;
    if (!o->weights) {
        fprintf(stderr, "nuance eval: image folders need --weights FILE (pytorch-fid's InceptionV3 in safetensors; "
                        "see docs/metrics.md for converting pt_inception-2015-12-05-6726825d.pth)\n");
        return -1;
    }
    if (nu_inception_load(o->weights, &m->net) != NU_OK) {
        fprintf(stderr, "nuance eval: %s\n", nu_last_error());
        return -1;
    }
    if (o->batch > 0) nu_inception_set_batch(m->net, o->batch);
    return 0;
}

/* Runs the network over the images of dir. keep_pool3 / want_logits / want_accum select what
 * is kept. Returns 0, or -1 after printing the error. */
static int folder_features(model *m, const eval_opts *o, const char *dir, bool keep_pool3, bool want_logits,
                           bool want_accum, features *f) {
    memset(f, 0, sizeof *f);
    file_list l = {0};
    if (scan_dir(dir, o->recursive, &l, 0) != 0) return -1;
    qsort(l.paths, (size_t)l.n, sizeof(char *), cmp_str);
    if (l.skipped_case && !o->quiet)
        fprintf(stderr, "nuance eval: %s: ignoring %d file(s) with upper-case extensions, as pytorch-fid does "
                        "(--recursive follows clean-fid, which reads .JPG/.JPEG/.PNG)\n", dir, l.skipped_case);
    if (l.n == 0) {
        fprintf(stderr, "nuance eval: %s: no images (.bmp .jpg .jpeg .pgm .png .ppm .tif .tiff .webp)%s\n", dir,
                o->recursive ? " in it or its subfolders" : "");
        list_free(&l);
        return -1;
    }
    if (load_model(m, o) != 0) {
        list_free(&l);
        return -1;
    }
    const int B = o->batch > 0 ? o->batch : 8;
    if (keep_pool3) f->pool3 = malloc(sizeof(float) * (size_t)l.n * NU_INCEPTION_DIMS);
    if (want_logits) f->logits = malloc(sizeof(float) * (size_t)l.n * NU_INCEPTION_CLASSES);
    if (want_accum) f->acc = nu_fid_accum_new(NU_INCEPTION_DIMS);
    float *tmp3 = malloc(sizeof(float) * (size_t)B * NU_INCEPTION_DIMS);
    nu_image *imgs = calloc((size_t)B, sizeof(nu_image));
    if ((keep_pool3 && !f->pool3) || (want_logits && !f->logits) || (want_accum && !f->acc) || !tmp3 || !imgs) {
        fprintf(stderr, "nuance eval: out of memory for the features of %d images\n", l.n);
        goto fail;
    }
    char label[64];
    const char *base = strrchr(dir, '/');
    base = base && base[1] ? base + 1 : dir;
    snprintf(label, sizeof label, "%.40s", base);
    progress pr = {label, l.n, 0, now(), 0, isatty(2) != 0, o->quiet};
    int skipped = 0;
    for (int i0 = 0; i0 < l.n;) {
        int cnt = 0;
        while (cnt < B && i0 < l.n) { /* load up to B readable images */
            const char *path = l.paths[i0++];
            if (nu_image_load(path, &imgs[cnt]) == NU_OK) {
                cnt++;
                continue;
            }
            if (!o->skip_bad) {
                if (pr.tty && !o->quiet) fprintf(stderr, "\n");
                fprintf(stderr, "nuance eval: cannot read image %s\n  %s\n  (--skip-bad skips unreadable images)\n",
                        path, nu_last_error());
                for (int k = 0; k < cnt; k++) nu_image_free(&imgs[k]);
                goto fail;
            }
            if (pr.tty && !o->quiet) fprintf(stderr, "\n");
            fprintf(stderr, "nuance eval: warning: skipping %s: %s\n", path, nu_last_error());
            skipped++;
            pr.total--;
        }
        if (cnt == 0) break;
        float *lg = f->logits ? f->logits + (size_t)f->n * NU_INCEPTION_CLASSES : NULL;
        nu_status st = nu_inception_features(m->net, m->pool, imgs, cnt, tmp3, lg);
        for (int k = 0; k < cnt; k++) nu_image_free(&imgs[k]);
        if (st != NU_OK) {
            if (pr.tty && !o->quiet) fprintf(stderr, "\n");
            fprintf(stderr, "nuance eval: %s\n", st == NU_ERR_CANCELLED ? "interrupted" : nu_last_error());
            goto fail;
        }
        if (f->pool3) memcpy(f->pool3 + (size_t)f->n * NU_INCEPTION_DIMS, tmp3, sizeof(float) * (size_t)cnt * NU_INCEPTION_DIMS);
        if (f->acc && nu_fid_accum_add(f->acc, tmp3, cnt) != NU_OK) {
            fprintf(stderr, "\nnuance eval: %s: %s\n", dir, nu_last_error());
            goto fail;
        }
        f->n += cnt;
        pr.done = (int)f->n;
        progress_show(&pr, false);
    }
    progress_show(&pr, true);
    if (skipped) fprintf(stderr, "nuance eval: %s: skipped %d unreadable image(s) of %d\n", dir, skipped, l.n);
    free(tmp3);
    free(imgs);
    list_free(&l);
    return 0;
fail:
    free(tmp3);
    free(imgs);
    list_free(&l);
    features_free(f);
    return -1;
}

static bool is_npz(const char *path) {
    size_t n = strlen(path);
    struct stat st;
    return n > 4 && !strcmp(path + n - 4, ".npz") && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int check_input(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "nuance eval: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode) && !is_npz(path)) {
        fprintf(stderr, "nuance eval: %s: expected an image folder or an .npz file\n", path);
        return -1;
    }
    return 0;
}

/* FID statistics of a folder or an .npz (mu, sigma). */
static int get_stats(model *m, const eval_opts *o, const char *path, nu_fid_stats *s) {
    if (check_input(path) != 0) return -1;
    if (is_npz(path)) {
        if (nu_fid_stats_load(path, s) != NU_OK) {
            fprintf(stderr, "nuance eval: %s\n", nu_last_error());
            return -1;
        }
        return 0;
    }
    features f;
    if (folder_features(m, o, path, false, false, true, &f) != 0) return -1;
    nu_status st = nu_fid_accum_stats(f.acc, s);
    features_free(&f);
    if (st != NU_OK) {
        fprintf(stderr, "nuance eval: %s: %s\n", path, nu_last_error());
        return -1;
    }
    return 0;
}

/* pool3 features of a folder, or "feats" [N, 2048] of an .npz (clean-fid's KID stats files). */
static int get_features(model *m, const eval_opts *o, const char *path, features *f) {
    memset(f, 0, sizeof *f);
    if (check_input(path) != 0) return -1;
    if (!is_npz(path)) return folder_features(m, o, path, true, false, false, f);
    nu_npz *z;
    const nu_npy_array *a;
    if (nu_npz_open(path, &z) != NU_OK) {
        fprintf(stderr, "nuance eval: %s\n", nu_last_error());
        return -1;
    }
    nu_status st = nu_npz_get(z, "feats", &a);
    if (st != NU_OK || a->ndim != 2 || a->ne[0] < 1 || a->ne[1] < 1 || a->ne[1] > 65536) {
        fprintf(stderr, "nuance eval: %s: needs an array 'feats' [N, D] of features (as `nuance eval stats "
                        "--features` or clean-fid's _kid.npz files write)%s%s\n", path, st != NU_OK ? ": " : "",
                st != NU_OK ? nu_last_error() : "");
        nu_npz_close(z);
        return -1;
    }
    size_t cnt = (size_t)a->ne[0] * (size_t)a->ne[1];
    double *tmp = malloc(sizeof(double) * cnt);
    f->pool3 = malloc(sizeof(float) * cnt);
    if (!tmp || !f->pool3) {
        free(tmp);
        nu_npz_close(z);
        features_free(f);
        fprintf(stderr, "nuance eval: %s: out of memory\n", path);
        return -1;
    }
    nu_npy_to_f64(a, tmp);
    for (size_t i = 0; i < cnt; i++) f->pool3[i] = (float)tmp[i];
    free(tmp);
    f->n = a->ne[0];
    if (a->ne[1] != NU_INCEPTION_DIMS && !o->quiet)
        fprintf(stderr, "nuance eval: note: %s holds %lld-d features\n", path, (long long)a->ne[1]);
    int dim = (int)a->ne[1];
    nu_npz_close(z);
    return dim == NU_INCEPTION_DIMS ? 0 : dim; /* >0: feature size for the caller to check */
}

/* ---------------------------------------------------------------- subcommands */

static int cmd_fid(model *m, const eval_opts *o, const char *a, const char *b) {
    nu_fid_stats sa = {0}, sb = {0};
    if (get_stats(m, o, a, &sa) != 0 || get_stats(m, o, b, &sb) != 0) {
        nu_fid_stats_free(&sa);
        return 1;
    }
    double fid = 0;
    nu_status st = nu_fid_from_stats(&sa, &sb, m->pool, &fid);
    nu_fid_stats_free(&sa);
    nu_fid_stats_free(&sb);
    if (st != NU_OK) {
        fprintf(stderr, "nuance eval: %s\n", nu_last_error());
        return 1;
    }
    printf("FID: %.6f\n", fid);
    return 0;
}

static int two_feature_sets(model *m, const eval_opts *o, const char *a, const char *b, features *fa, features *fb,
                            int *dim) {
    int da = get_features(m, o, a, fa);
    if (da < 0) return -1;
    int db = get_features(m, o, b, fb);
    if (db < 0) {
        features_free(fa);
        return -1;
    }
    da = da ? da : NU_INCEPTION_DIMS;
    db = db ? db : NU_INCEPTION_DIMS;
    if (da != db) {
        fprintf(stderr, "nuance eval: the inputs have different feature sizes (%d and %d)\n", da, db);
        features_free(fa);
        features_free(fb);
        return -1;
    }
    *dim = da;
    return 0;
}

static int cmd_kid(model *m, const eval_opts *o, const char *a, const char *b) {
    features fa, fb;
    int dim;
    if (two_feature_sets(m, o, a, b, &fa, &fb, &dim) != 0) return 1;
    nu_kid_params p = nu_kid_params_init();
    if (o->subsets > 0) p.num_subsets = o->subsets;
    if (o->subset_size > 0) p.subset_size = o->subset_size;
    p.seed = o->seed;
    double mean = 0, std = 0;
    nu_status st = nu_kid(fa.pool3, fa.n, fb.pool3, fb.n, dim, &p, m->pool, &mean, &std);
    int64_t n1 = fa.n, n2 = fb.n;
    features_free(&fa);
    features_free(&fb);
    if (st != NU_OK) {
        fprintf(stderr, "nuance eval: %s\n", nu_last_error());
        return 1;
    }
    int64_t m_sub = n1 < n2 ? n1 : n2;
    if (m_sub > p.subset_size) m_sub = p.subset_size;
    printf("KID: %.6g ± %.6g  (%d subsets of %lld, seed %u)\n", mean, std, p.num_subsets, (long long)m_sub, p.seed);
    return 0;
}

static int cmd_pr(model *m, const eval_opts *o, const char *a, const char *b) {
    features fa, fb;
    int dim;
    if (two_feature_sets(m, o, a, b, &fa, &fb, &dim) != 0) return 1;
    nu_prdc_result r;
    int k = o->k > 0 ? o->k : 3;
    nu_status st = nu_prdc(fa.pool3, fa.n, fb.pool3, fb.n, dim, k, m->pool, &r);
    features_free(&fa);
    features_free(&fb);
    if (st != NU_OK) {
        fprintf(stderr, "nuance eval: %s\n", nu_last_error());
        return 1;
    }
    printf("precision: %.6f\nrecall:    %.6f\ndensity:   %.6f\ncoverage:  %.6f\n(k = %d; first input = real)\n",
           r.precision, r.recall, r.density, r.coverage, k);
    return 0;
}

/* fc.bias of the weights file: IS uses the logits without it (torch-fidelity, improved-gan). */
static int load_fc_bias(const char *weights, float *bias) {
    nu_st_file *f;
    if (nu_st_open(weights, &f) != NU_OK) {
        fprintf(stderr, "nuance eval: %s\n", nu_last_error());
        return -1;
    }
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *t = NULL;
    int rc = 0;
    if (nu_st_get_f32(f, ctx, "fc.bias", &t) != NU_OK || nu_nelements(t) != NU_INCEPTION_CLASSES) {
        fprintf(stderr, "nuance eval: %s: no fc.bias [%d] for the Inception Score\n", weights, NU_INCEPTION_CLASSES);
        rc = -1;
    } else {
        nu_tensor_get_f32(t, bias);
    }
    nu_ctx_free(ctx);
    nu_st_close(f);
    return rc;
}

static int cmd_is(model *m, const eval_opts *o, const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "nuance eval: is: %s is not an image folder\n", dir);
        return 1;
    }
    features f;
    if (folder_features(m, o, dir, false, true, false, &f) != 0) return 1;
    float bias[NU_INCEPTION_CLASSES];
    if (load_fc_bias(o->weights, bias) != 0) {
        features_free(&f);
        return 1;
    }
    for (int64_t i = 0; i < f.n; i++)
        for (int c = 0; c < NU_INCEPTION_CLASSES; c++) f.logits[i * NU_INCEPTION_CLASSES + c] -= bias[c];
    nu_is_params p = nu_is_params_init();
    if (o->splits > 0) p.splits = o->splits;
    if (o->no_shuffle) p.shuffle = false;
    if (o->seed_set) p.seed = o->seed;
    double mean = 0, sd = 0;
    nu_status s = nu_inception_score(f.logits, f.n, NU_INCEPTION_CLASSES, &p, &mean, &sd);
    features_free(&f);
    if (s != NU_OK) {
        fprintf(stderr, "nuance eval: %s\n", nu_last_error());
        return 1;
    }
    printf("IS: %.6f ± %.6f  (%d splits%s)\n", mean, sd, p.splits, p.shuffle ? ", shuffled as torch-fidelity" : "");
    return 0;
}

static int cmd_stats(model *m, const eval_opts *o, const char *dir) {
    if (!o->out) {
        fprintf(stderr, "nuance eval stats: -o FILE.npz is required\n");
        return 2;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "nuance eval stats: %s is not an image folder\n", dir);
        return 1;
    }
    features f;
    if (folder_features(m, o, dir, o->features, false, true, &f) != 0) return 1;
    nu_fid_stats s;
    nu_status rc = nu_fid_accum_stats(f.acc, &s);
    if (rc == NU_OK) {
        nu_npz_item items[3] = {
            {.key = "mu", .type = NU_TYPE_F64, .ndim = 1, .ne = {s.dim}, .data = s.mu},
            {.key = "sigma", .type = NU_TYPE_F64, .ndim = 2, .ne = {s.dim, s.dim}, .data = s.sigma},
            {.key = "feats", .type = NU_TYPE_F32, .ndim = 2, .ne = {f.n, NU_INCEPTION_DIMS}, .data = f.pool3},
        };
        rc = nu_npz_save(o->out, items, o->features ? 3 : 2);
        nu_fid_stats_free(&s);
    }
    int64_t n = f.n;
    features_free(&f);
    if (rc != NU_OK) {
        fprintf(stderr, "nuance eval stats: %s\n", nu_last_error());
        return 1;
    }
    printf("wrote %s: mu [%d], sigma [%d, %d]%s from %lld images\n", o->out, NU_INCEPTION_DIMS, NU_INCEPTION_DIMS,
           NU_INCEPTION_DIMS, o->features ? ", feats" : "", (long long)n);
    return 0;
}

/* ---------------------------------------------------------------- argument parsing */

static void usage(FILE *f) {
    fprintf(f,
            "usage: nuance eval fid   A B       --weights FILE [options]   A, B: image folder or stats .npz (mu, sigma)\n"
            "       nuance eval kid   A B       --weights FILE [options]   A, B: image folder or .npz with feats\n"
            "       nuance eval pr    REAL FAKE --weights FILE [options]   precision, recall, density, coverage\n"
            "       nuance eval is    DIR       --weights FILE [options]   Inception Score\n"
            "       nuance eval stats DIR -o OUT.npz --weights FILE [--features]\n"
            "options:\n"
            "  --weights FILE     pytorch-fid InceptionV3 weights (safetensors; see docs/metrics.md)\n"
            "  --batch N          images per network evaluation (default 8)\n"
            "  -t, --threads N    threads (default: one per CPU)\n"
            "  --dims 2048        feature size (only pool3, 2048, is provided)\n"
            "  --recursive        read subfolders too, with clean-fid's extension list (default: pytorch-fid's)\n"
            "  --skip-bad         skip unreadable images with a warning (default: stop at the first)\n"
            "  --quiet            no progress output\n"
            "  kid:   --subsets N (100)  --subset-size N (1000)  --seed N (0: np.random.seed before clean-fid's draws)\n"
            "  pr:    -k N (3)\n"
            "  is:    --splits N (10)  --no-shuffle  --seed N (2020, torch-fidelity's)\n"
            "  stats: -o FILE  --features (also save feats [N, 2048] float32 for kid/pr)\n");
}

static bool parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

int nu_cli_eval(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    eval_opts o = {.dims = NU_INCEPTION_DIMS};
    const char *pos[3];
    int npos = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                                            \
    do {                                                                                       \
        if (!v) {                                                                              \
            fprintf(stderr, "nuance eval: %s needs a value\n", a);                             \
            return 2;                                                                          \
        }                                                                                      \
        i++;                                                                                   \
    } while (0)
#define INT_OPT(field, lo, hi)                                                                  \
    do {                                                                                       \
        NEED_VALUE();                                                                          \
        if (!parse_int(v, lo, hi, &o.field)) {                                                 \
            fprintf(stderr, "nuance eval: %s: '%s' is not an integer in [%d, %d]\n", a, v, lo, hi); \
            return 2;                                                                          \
        }                                                                                      \
    } while (0)
        if (!strcmp(a, "--weights")) { NEED_VALUE(); o.weights = v; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { NEED_VALUE(); o.out = v; }
        else if (!strcmp(a, "--batch")) INT_OPT(batch, 1, 256);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) INT_OPT(threads, 0, 1024);
        else if (!strcmp(a, "--dims")) INT_OPT(dims, 1, 1 << 20);
        else if (!strcmp(a, "-k")) INT_OPT(k, 1, 1000);
        else if (!strcmp(a, "--splits")) INT_OPT(splits, 1, 1 << 20);
        else if (!strcmp(a, "--subsets")) INT_OPT(subsets, 1, 1000000);
        else if (!strcmp(a, "--subset-size")) INT_OPT(subset_size, 2, 1 << 30);
        else if (!strcmp(a, "--seed")) {
            NEED_VALUE();
            char *end;
            errno = 0;
            unsigned long s = strtoul(v, &end, 10);
            if (errno || *end || end == v || s > 0xffffffffUL || v[0] == '-') {
                fprintf(stderr, "nuance eval: --seed: '%s' is not in [0, 2^32)\n", v);
                return 2;
            }
            o.seed = (uint32_t)s;
            o.seed_set = true;
        }
        else if (!strcmp(a, "--skip-bad")) o.skip_bad = true;
        else if (!strcmp(a, "--recursive")) o.recursive = true;
        else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) o.quiet = true;
        else if (!strcmp(a, "--features")) o.features = true;
        else if (!strcmp(a, "--no-shuffle")) o.no_shuffle = true;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "nuance eval: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else if (npos < 3) pos[npos++] = a;
        else {
            fprintf(stderr, "nuance eval: too many arguments\n");
            return 2;
        }
#undef INT_OPT
#undef NEED_VALUE
    }
    int want = !strcmp(cmd, "fid") || !strcmp(cmd, "kid") || !strcmp(cmd, "pr") ? 2
               : !strcmp(cmd, "is") || !strcmp(cmd, "stats")                    ? 1
                                                                                 : -1;
    if (want < 0) {
        fprintf(stderr, "nuance eval: unknown metric '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    if (npos != want) {
        fprintf(stderr, "nuance eval %s: expected %d input%s, got %d\n", cmd, want, want > 1 ? "s" : "", npos);
        usage(stderr);
        return 2;
    }
    if (o.dims != NU_INCEPTION_DIMS) {
        fprintf(stderr, "nuance eval: --dims %d: only the 2048-d pool3 features are provided (pytorch-fid's 64/192/768 "
                        "block features are not)\n", o.dims);
        return 2;
    }
    if (!strcmp(cmd, "is") && !o.weights) {
        fprintf(stderr, "nuance eval is: --weights FILE is required\n");
        return 2;
    }
    model m = {0};
    m.pool = nu_pool_new(o.threads);
    g_pool = m.pool;
    signal(SIGINT, on_sigint);
    int rc;
    if (!strcmp(cmd, "fid")) rc = cmd_fid(&m, &o, pos[0], pos[1]);
    else if (!strcmp(cmd, "kid")) rc = cmd_kid(&m, &o, pos[0], pos[1]);
    else if (!strcmp(cmd, "pr")) rc = cmd_pr(&m, &o, pos[0], pos[1]);
    else if (!strcmp(cmd, "is")) rc = cmd_is(&m, &o, pos[0]);
    else rc = cmd_stats(&m, &o, pos[0]);
    signal(SIGINT, SIG_DFL);
    g_pool = NULL;
    nu_inception_free(m.net);
    nu_pool_free(m.pool);
    return rc;
}
