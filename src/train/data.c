/*
 * data.c — datasets for training: image folders (PNG/JPEG/WebP, one subfolder per class,
 * optional "<stem>.txt" captions) and MNIST idx files (data_mnist.c), with resize / crop / flip
 * augmentation, decoded on a background thread into a bounded queue of ready batches.
 *
 * Determinism: batch `pos` of the run is a pure function of (seed, pos): epoch e = pos / B_e
 * (batches per epoch) uses the permutation Fisher-Yates(splitmix64(seed, e)), and the sample
 * at place q of the epoch draws its crop and flip from splitmix64(seed, e, q). The loader thread
 * only runs ahead; the queue depth and timing never change what a batch holds. A corrupt or
 * unreadable image is skipped with a warning (nu_log, once per file, counted) and replaced by the
 * next readable sample of the epoch's order — deterministic too, as long as the files do not
 * change.
 *
 * Resize: as torchvision's Resize(R) on a PIL image with BILINEAR — the shorter side becomes R,
 * the longer int(R * long / short) — then CenterCrop(R) (offset round((L - R) / 2)) or RandomCrop
 * (offset uniform in [0, L - R]). The filter is PIL's antialiased bilinear: a triangle kernel
 * widened by the scale factor when downscaling (so downscaling averages over the covered area),
 * applied separably in f32 without PIL's 8-bit rounding between passes. Gray from RGB uses
 * ITU-R 601-2 luma (0.299 R + 0.587 G + 0.114 B, as PIL's convert("L")); alpha is dropped (as
 * PIL's convert("RGB")).
 *
 * Tested by tests/test_data.c (idx files, class folders, captions, corrupt files, determinism
 * across prefetch depths and seeks, each augmentation, error messages).
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "nuance/io.h"
#include "train/train_internal.h"

#define MAX_DEPTH 32
#define MAX_CAPTION (64 * 1024)
#define MAX_CLASSES 100000

typedef struct slot {
    nu_batch b;
    float *images;
    int64_t *labels, *indices;
    const char **captions;
    int64_t pos;
    bool ready;
    nu_status st;
    char err[1024];
} slot;

struct nu_dataset {
    nu_dataset_params p;
    char *root;
    bool is_idx;
    nu_idx_data idx;
    int64_t n;
    /* folders */
    char **paths;
    int64_t *labels;
    char **captions;
    int n_classes;
    char **class_names;
    /* output geometry */
    int c, h, w;
    int64_t bpe;
    /* skipped images */
    atomic_uchar *bad;
    atomic_llong skipped;
    /* loader */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    bool running, quit;
    int nslots;
    slot *slots;
    int64_t cpos, ppos, held;
    /* permutation cache (the filling thread only) */
    int64_t *perm;
    int64_t perm_epoch;
};

/* ---------------------------------------------------------------- small helpers */

static uint64_t mix64(uint64_t x) { /* splitmix64 finaliser */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

typedef struct { uint64_t s; } srng;
static uint64_t srng_next(srng *r) { return mix64(r->s++ * 0x2545F4914F6CDD1Dull + 0x632BE59BD9B4E019ull); }
/* uniform in [0, n) (n >= 1; the modulo bias is < n / 2^64) */
static int64_t srng_below(srng *r, int64_t n) { return (int64_t)(srng_next(r) % (uint64_t)n); }

static bool is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return false;
    return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") ||
           !strcasecmp(dot, ".webp");
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", a, b);
    return s;
}

typedef struct {
    char **v;
    int64_t n, cap;
    bool oom;
} strvec;

static void sv_push(strvec *s, char *x) {
    if (!x) {
        s->oom = true;
        return;
    }
    if (s->n == s->cap) {
        int64_t nc = s->cap ? s->cap * 2 : 64;
        char **nv = realloc(s->v, sizeof *nv * (size_t)nc);
        if (!nv) {
            free(x);
            s->oom = true;
            return;
        }
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = x;
}

static void sv_free(strvec *s) {
    for (int64_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted names in dir (no hidden entries); dirs/files flagged by stat. */
static nu_status list_dir(const char *dir, strvec *dirs, strvec *files) {
    DIR *d = opendir(dir);
    if (!d) return nu_error(NU_ERR_IO, "cannot read folder '%s': %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *full = join(dir, e->d_name);
        struct stat sb;
        if (!full) {
            dirs->oom = true;
            break;
        }
        if (stat(full, &sb) != 0) {
            free(full);
            continue;
        }
        if (S_ISDIR(sb.st_mode)) sv_push(dirs, full);
        else if (S_ISREG(sb.st_mode) && is_image_name(e->d_name)) sv_push(files, full);
        else free(full);
    }
    closedir(d);
    if (dirs->oom || files->oom) return nu_error(NU_ERR_NOMEM, "out of memory listing '%s'", dir);
    if (dirs->n > 1) qsort(dirs->v, (size_t)dirs->n, sizeof *dirs->v, cmp_str);
    if (files->n > 1) qsort(files->v, (size_t)files->n, sizeof *files->v, cmp_str);
    return NU_OK;
}

/* Every image under dir, recursively, in sorted order (files of a folder before its subfolders). */
static nu_status walk(const char *dir, int depth, strvec *out) {
    if (depth > MAX_DEPTH) return nu_error(NU_ERR_INVALID_ARG, "folder '%s' is nested too deeply (> %d)", dir, MAX_DEPTH);
    strvec dirs = {0}, files = {0};
    nu_status st = list_dir(dir, &dirs, &files);
    for (int64_t i = 0; st == NU_OK && i < files.n; i++) {
        sv_push(out, files.v[i]);
        files.v[i] = NULL;
    }
    for (int64_t i = 0; st == NU_OK && i < dirs.n; i++) st = walk(dirs.v[i], depth + 1, out);
    if (st == NU_OK && out->oom) st = nu_error(NU_ERR_NOMEM, "out of memory listing '%s'", dir);
    sv_free(&dirs);
    for (int64_t i = 0; i < files.n; i++) free(files.v[i]);
    free(files.v);
    return st;
}

/* "<stem>.txt" beside an image, trimmed of trailing white space; NULL if absent. */
static char *read_caption(const char *image) {
    const char *dot = strrchr(image, '.');
    size_t stem = dot ? (size_t)(dot - image) : strlen(image);
    char *p = malloc(stem + 5);
    if (!p) return NULL;
    memcpy(p, image, stem);
    memcpy(p + stem, ".txt", 5);
    FILE *f = fopen(p, "rb");
    free(p);
    if (!f) return NULL;
    char *s = malloc(MAX_CAPTION + 1);
    size_t n = s ? fread(s, 1, MAX_CAPTION, f) : 0;
    fclose(f);
    if (!s) return NULL;
    s[n] = 0;
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    return s;
}

/* ---------------------------------------------------------------- image transform */

typedef struct {
    int *start, *count; /* per output coordinate: first source index and tap count        */
    float *w;           /* per output coordinate: `taps` weights (count used)              */
    int taps;
} axis;

static void axis_free(axis *a) {
    free(a->start);
    free(a->count);
    free(a->w);
}

/* PIL's antialiased bilinear weights for output coordinates crop..crop+n-1 of a resize from
 * `in` to `out` samples: scale = in/out, filterscale = max(scale, 1), support = filterscale,
 * centre = (X + 0.5) * scale, taps from (int)(centre - support + 0.5) to (int)(centre + support +
 * 0.5), weight tri((x - centre + 0.5) / filterscale) normalised to sum 1. */
static bool axis_init(axis *a, int in, int out, int crop, int n) {
    double scale = (double)in / out, fs = scale > 1 ? scale : 1, support = fs;
    a->taps = (int)ceil(support) * 2 + 1;
    a->start = malloc(sizeof(int) * (size_t)n);
    a->count = malloc(sizeof(int) * (size_t)n);
    a->w = malloc(sizeof(float) * (size_t)n * (size_t)a->taps);
    if (!a->start || !a->count || !a->w) return false;
    for (int i = 0; i < n; i++) {
        double center = (crop + i + 0.5) * scale;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        if (hi - lo > a->taps) hi = lo + a->taps;
        int cnt = hi > lo ? hi - lo : 0;
        float *wi = a->w + (size_t)i * a->taps;
        double sum = 0;
        for (int k = 0; k < cnt; k++) {
            double t = fabs((lo + k - center + 0.5) / fs);
            sum += t < 1 ? 1 - t : 0;
        }
        for (int k = 0; k < cnt; k++) {
            double t = fabs((lo + k - center + 0.5) / fs);
            wi[k] = (float)(sum > 0 ? (t < 1 ? 1 - t : 0) / sum : 0);
        }
        a->start[i] = lo;
        a->count[i] = cnt;
    }
    return true;
}

/* source pixel -> target channel values (0..255 floats) */
static inline void px(const uint8_t *s, int sc, int c, float *o) {
    if (c == 1) o[0] = sc >= 3 ? 0.299f * s[0] + 0.587f * s[1] + 0.114f * s[2] : s[0];
    else if (sc >= 3) o[0] = s[0], o[1] = s[1], o[2] = s[2];
    else o[0] = o[1] = o[2] = s[0];
}

nu_status nu_image_transform(const uint8_t *src, int w, int h, int sc, const nu_xform *x, float *out) {
    const int C = x->c, OW = x->out_w, OH = x->out_h;
    const float a = (x->hi - x->lo) / 255.0f, b = x->lo;
    const size_t plane = (size_t)OW * OH;
    if (x->resize_w == w && x->resize_h == h) { /* no resampling: crop, flip, convert */
        for (int oy = 0; oy < OH; oy++) {
            const uint8_t *row = src + ((size_t)(x->crop_y + oy) * w + x->crop_x) * sc;
            for (int ox = 0; ox < OW; ox++) {
                float v[3];
                px(row + (size_t)ox * sc, sc, C, v);
                int dx = x->flip ? OW - 1 - ox : ox;
                for (int c = 0; c < C; c++) out[c * plane + (size_t)oy * OW + dx] = v[c] * a + b;
            }
        }
        return NU_OK;
    }
    /* separable: vertical pass over the source rows each output row needs, then horizontal */
    axis ax = {0}, ay = {0};
    float *tmp = malloc(sizeof(float) * (size_t)C * (size_t)w);
    bool ok = tmp && axis_init(&ax, w, x->resize_w, x->crop_x, OW) && axis_init(&ay, h, x->resize_h, x->crop_y, OH);
    if (!ok) {
        free(tmp);
        axis_free(&ax);
        axis_free(&ay);
        return nu_error(NU_ERR_NOMEM, "out of memory resizing a %dx%d image", w, h);
    }
    for (int oy = 0; oy < OH; oy++) {
        memset(tmp, 0, sizeof(float) * (size_t)C * (size_t)w);
        const float *wy = ay.w + (size_t)oy * ay.taps;
        for (int k = 0; k < ay.count[oy]; k++) {
            const uint8_t *row = src + (size_t)(ay.start[oy] + k) * w * sc;
            float wk = wy[k];
            for (int xx = 0; xx < w; xx++) {
                float v[3];
                px(row + (size_t)xx * sc, sc, C, v);
                for (int c = 0; c < C; c++) tmp[(size_t)c * w + xx] += wk * v[c];
            }
        }
        for (int ox = 0; ox < OW; ox++) {
            const float *wx = ax.w + (size_t)ox * ax.taps;
            int s0 = ax.start[ox], cnt = ax.count[ox];
            int dx = x->flip ? OW - 1 - ox : ox;
            for (int c = 0; c < C; c++) {
                const float *t = tmp + (size_t)c * w + s0;
                float acc = 0;
                for (int k = 0; k < cnt; k++) acc += wx[k] * t[k];
                out[c * plane + (size_t)oy * OW + dx] = acc * a + b;
            }
        }
    }
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return NU_OK;
}

/* ---------------------------------------------------------------- one sample */

/* Transform geometry for a w x h image; crop/flip drawn from r when random (r NULL: centre, no flip). */
static nu_status plan(const nu_dataset *d, const char *label, int w, int h, srng *r, nu_xform *x) {
    memset(x, 0, sizeof *x);
    x->c = d->c;
    x->lo = d->p.range_lo;
    x->hi = d->p.range_hi;
    x->out_w = d->w;
    x->out_h = d->h;
    int R = d->p.resolution;
    if (R <= 0) {
        if (w != d->w || h != d->h)
            return nu_error(NU_ERR_FORMAT, "%s: image is %dx%d, the dataset's is %dx%d (set a resolution to resize)",
                            label, w, h, d->w, d->h);
        x->resize_w = w;
        x->resize_h = h;
    } else {
        if (w <= h) {
            x->resize_w = R;
            x->resize_h = (int)((int64_t)R * h / w);
        } else {
            x->resize_h = R;
            x->resize_w = (int)((int64_t)R * w / h);
        }
        if (x->resize_w < R) x->resize_w = R;
        if (x->resize_h < R) x->resize_h = R;
        int ex = x->resize_w - R, ey = x->resize_h - R;
        if (r && d->p.random_crop) {
            x->crop_y = (int)srng_below(r, ey + 1); /* torchvision RandomCrop draws i (rows) first */
            x->crop_x = (int)srng_below(r, ex + 1);
        } else { /* round((L - R) / 2) with Python's round-half-even */
            x->crop_x = (int)nearbyint(ex / 2.0);
            x->crop_y = (int)nearbyint(ey / 2.0);
        }
    }
    x->flip = r && d->p.random_flip && (srng_next(r) >> 63);
    return NU_OK;
}

typedef enum { LOAD_OK, LOAD_SKIP, LOAD_FAIL } load_result;

/* Decodes and transforms sample idx into out [c, h, w]. LOAD_SKIP: unreadable (marked bad,
 * warned once); LOAD_FAIL: an error that must stop training (message set). */
static load_result load_sample(nu_dataset *d, int64_t idx, srng *r, float *out) {
    nu_xform x;
    if (d->is_idx) {
        if (plan(d, d->idx.images_path, d->idx.w, d->idx.h, r, &x) != NU_OK) return LOAD_FAIL;
        const uint8_t *src = d->idx.pixels + (size_t)idx * d->idx.w * d->idx.h;
        return nu_image_transform(src, d->idx.w, d->idx.h, 1, &x, out) == NU_OK ? LOAD_OK : LOAD_FAIL;
    }
    if (atomic_load(&d->bad[idx])) return LOAD_SKIP;
    const char *path = d->paths[idx];
    nu_image img;
    nu_status st = nu_image_load(path, &img);
    if (st == NU_ERR_NOMEM) return LOAD_FAIL;
    if (st != NU_OK) {
        if (!atomic_exchange(&d->bad[idx], 1)) {
            long long k = atomic_fetch_add(&d->skipped, 1) + 1;
            nu_log(NU_LOG_WARN, "skipping unreadable image (%lld so far): %s", k, nu_last_error());
        }
        return LOAD_SKIP;
    }
    int eff = img.channels <= 2 ? 1 : 3;
    if (d->p.strict_channels && eff != d->c) {
        nu_error(NU_ERR_FORMAT, "%s: image has %d channel%s, the dataset has %d (strict_channels)", path, img.channels,
                 img.channels == 1 ? "" : "s", d->c);
        nu_image_free(&img);
        return LOAD_FAIL;
    }
    load_result res = LOAD_FAIL;
    if (plan(d, path, img.width, img.height, r, &x) == NU_OK &&
        nu_image_transform(img.pixels, img.width, img.height, img.channels, &x, out) == NU_OK)
        res = LOAD_OK;
    nu_image_free(&img);
    return res;
}

static int64_t label_of(const nu_dataset *d, int64_t idx) {
    if (d->is_idx) return d->idx.labels ? d->idx.labels[idx] : -1;
    return d->labels[idx];
}

/* ---------------------------------------------------------------- batches */

static const int64_t *epoch_perm(nu_dataset *d, int64_t epoch) {
    if (d->perm_epoch == epoch) return d->perm;
    for (int64_t i = 0; i < d->n; i++) d->perm[i] = i;
    if (d->p.shuffle) {
        srng r = {mix64(d->p.seed ^ mix64((uint64_t)epoch ^ 0x5EEDull))};
        for (int64_t i = d->n - 1; i > 0; i--) {
            int64_t j = srng_below(&r, i + 1);
            int64_t t = d->perm[i];
            d->perm[i] = d->perm[j];
            d->perm[j] = t;
        }
    }
    d->perm_epoch = epoch;
    return d->perm;
}

static void fill(nu_dataset *d, slot *s, int64_t pos) {
    int64_t epoch = pos / d->bpe, j = pos % d->bpe, B = d->p.batch_size;
    int64_t start = j * B, count = d->n - start < B ? d->n - start : B;
    const int64_t *perm = epoch_perm(d, epoch);
    size_t per = (size_t)d->c * d->h * d->w;
    s->st = NU_OK;
    s->err[0] = 0;
    for (int64_t k = 0; k < count; k++) {
        int64_t q = start + k;
        load_result res = LOAD_SKIP;
        int64_t idx = -1;
        for (int64_t t = 0; t < d->n && res == LOAD_SKIP; t++) {
            srng r = {mix64(d->p.seed ^ mix64((uint64_t)epoch * 0x100000001B3ull ^ mix64((uint64_t)q)))};
            idx = perm[(q + t) % d->n];
            res = load_sample(d, idx, &r, s->images + (size_t)k * per);
        }
        if (res != LOAD_OK) {
            s->st = NU_ERR_FORMAT;
            if (res == LOAD_SKIP)
                snprintf(s->err, sizeof s->err, "no readable image left in '%s' (%lld skipped)", d->root,
                         (long long)atomic_load(&d->skipped));
            else
                snprintf(s->err, sizeof s->err, "%s", nu_last_error());
            return;
        }
        s->labels[k] = label_of(d, idx);
        s->indices[k] = idx;
        if (s->captions) s->captions[k] = d->captions ? d->captions[idx] : NULL;
    }
    s->b = (nu_batch){.n = (int)count, .c = d->c, .h = d->h, .w = d->w, .images = s->images, .labels = s->labels,
                      .captions = s->captions, .indices = s->indices, .position = pos, .epoch = epoch};
}

static void *producer(void *arg) {
    nu_dataset *d = arg;
    pthread_mutex_lock(&d->mu);
    while (!d->quit) {
        int64_t q = d->ppos, base = d->held >= 0 ? d->held : d->cpos;
        if (q >= base + d->nslots) {
            pthread_cond_wait(&d->cv, &d->mu);
            continue;
        }
        slot *s = &d->slots[q % d->nslots];
        s->ready = false;
        pthread_mutex_unlock(&d->mu);
        fill(d, s, q);
        pthread_mutex_lock(&d->mu);
        s->pos = q;
        s->ready = true;
        d->ppos = q + 1;
        pthread_cond_broadcast(&d->cv);
        if (s->st != NU_OK) break; /* the consumer gets the error at this batch */
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

static void stop_thread(nu_dataset *d) {
    if (!d->running) return;
    pthread_mutex_lock(&d->mu);
    d->quit = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->th, NULL);
    d->running = false;
    d->quit = false;
}

nu_status nu_dataset_next(nu_dataset *d, const nu_batch **out) {
    if (!d || !out) return nu_error(NU_ERR_INVALID_ARG, "nu_dataset_next: NULL argument");
    *out = NULL;
    if (d->p.prefetch <= 0) {
        slot *s = &d->slots[0];
        fill(d, s, d->cpos);
        if (s->st != NU_OK) return nu_error(s->st, "%s", s->err);
        d->cpos++;
        *out = &s->b;
        return NU_OK;
    }
    if (!d->running) {
        d->ppos = d->cpos;
        d->held = -1;
        for (int i = 0; i < d->nslots; i++) d->slots[i].ready = false;
        if (pthread_create(&d->th, NULL, producer, d) != 0)
            return nu_error(NU_ERR_NOMEM, "cannot start the data loader thread");
        d->running = true;
    }
    pthread_mutex_lock(&d->mu);
    d->held = -1;
    pthread_cond_broadcast(&d->cv);
    slot *s = &d->slots[d->cpos % d->nslots];
    while (!(s->ready && s->pos == d->cpos)) pthread_cond_wait(&d->cv, &d->mu);
    if (s->st != NU_OK) {
        nu_status st = s->st;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", s->err);
        pthread_mutex_unlock(&d->mu);
        return nu_error(st, "%s", msg);
    }
    d->held = d->cpos++;
    pthread_mutex_unlock(&d->mu);
    *out = &s->b;
    return NU_OK;
}

int64_t nu_dataset_position(const nu_dataset *d) { return d->cpos; }
uint64_t nu_dataset_seed(const nu_dataset *d) { return d->p.seed; }

nu_status nu_dataset_seek(nu_dataset *d, int64_t position) {
    if (!d || position < 0) return nu_error(NU_ERR_INVALID_ARG, "nu_dataset_seek: bad position %lld", (long long)position);
    stop_thread(d);
    for (int i = 0; i < d->nslots; i++) d->slots[i].ready = false;
    d->cpos = d->ppos = position;
    d->held = -1;
    return NU_OK;
}

nu_status nu_dataset_sample(nu_dataset *d, int64_t index, float *out, int64_t *label, const char **caption) {
    if (!d || !out || index < 0 || index >= d->n)
        return nu_error(NU_ERR_INVALID_ARG, "nu_dataset_sample: index %lld out of range [0, %lld)", (long long)index,
                        (long long)(d ? d->n : 0));
    load_result r = load_sample(d, index, NULL, out);
    if (r == LOAD_SKIP) return nu_error(NU_ERR_FORMAT, "%s: unreadable image", d->paths[index]);
    if (r == LOAD_FAIL) return NU_ERR_FORMAT;
    if (label) *label = label_of(d, index);
    if (caption) *caption = d->captions ? d->captions[index] : NULL;
    return NU_OK;
}

/* ---------------------------------------------------------------- open / free */

nu_dataset_params nu_dataset_params_init(void) {
    nu_dataset_params p;
    memset(&p, 0, sizeof p);
    p.split = "train";
    p.range_lo = -1.0f;
    p.range_hi = 1.0f;
    p.batch_size = 32;
    p.shuffle = true;
    p.drop_last = true;
    p.prefetch = 4;
    return p;
}

void nu_dataset_free(nu_dataset *d) {
    if (!d) return;
    stop_thread(d);
    if (d->slots) {
        for (int i = 0; i < d->nslots; i++) {
            free(d->slots[i].images);
            free(d->slots[i].labels);
            free(d->slots[i].indices);
            free(d->slots[i].captions);
        }
        pthread_mutex_destroy(&d->mu);
        pthread_cond_destroy(&d->cv);
    }
    free(d->slots);
    nu_idx_free(&d->idx);
    for (int64_t i = 0; d->paths && i < d->n; i++) free(d->paths[i]);
    for (int64_t i = 0; d->captions && i < d->n; i++) free(d->captions[i]);
    for (int i = 0; d->class_names && i < d->n_classes; i++) free(d->class_names[i]);
    free(d->paths);
    free(d->captions);
    free(d->labels);
    free(d->class_names);
    free(d->bad);
    free(d->perm);
    free(d->root);
    free(d);
}

/* Scans an image folder into d->paths / labels / class_names (sorted). */
static nu_status scan_folder(nu_dataset *d) {
    strvec dirs = {0}, root_files = {0}, all = {0};
    nu_status st = list_dir(d->root, &dirs, &root_files);
    int64_t *labels = NULL;
    strvec names = {0};
    int64_t lab_cap = 0;
    for (int64_t i = 0; st == NU_OK && i < dirs.n; i++) {
        int64_t before = all.n;
        st = walk(dirs.v[i], 1, &all);
        if (st != NU_OK) break;
        if (all.n > before) {
            const char *slash = strrchr(dirs.v[i], '/');
            sv_push(&names, strdup(slash ? slash + 1 : dirs.v[i]));
            if (names.oom || names.n > MAX_CLASSES) {
                st = nu_error(NU_ERR_NOMEM, "too many classes in '%s'", d->root);
                break;
            }
            if (all.n > lab_cap) {
                lab_cap = all.cap;
                int64_t *nl = realloc(labels, sizeof *nl * (size_t)lab_cap);
                if (!nl) {
                    st = nu_error(NU_ERR_NOMEM, "out of memory scanning '%s'", d->root);
                    break;
                }
                labels = nl;
            }
            for (int64_t k = before; k < all.n; k++) labels[k] = names.n - 1;
        }
    }
    if (st == NU_OK && names.n > 0) {
        /* class mode: every subfolder must hold images (its label would silently shift otherwise) */
        for (int64_t i = 0; i < dirs.n; i++) {
            const char *slash = strrchr(dirs.v[i], '/');
            const char *nm = slash ? slash + 1 : dirs.v[i];
            bool found = false;
            for (int64_t k = 0; k < names.n && !found; k++) found = strcmp(names.v[k], nm) == 0;
            if (!found) {
                st = nu_error(NU_ERR_INVALID_ARG, "class folder '%s' holds no images (.png/.jpg/.jpeg/.webp)", dirs.v[i]);
                break;
            }
        }
        if (st == NU_OK && root_files.n > 0)
            nu_log(NU_LOG_WARN, "%s: %lld images directly in the dataset folder are ignored (classes come from subfolders)",
                   d->root, (long long)root_files.n);
    }
    if (st == NU_OK && names.n == 0) { /* unlabeled: the images of the folder itself */
        sv_free(&all);
        all = root_files;
        memset(&root_files, 0, sizeof root_files);
        free(labels);
        labels = NULL;
        if (all.n > 0) {
            labels = malloc(sizeof *labels * (size_t)all.n);
            if (!labels) st = nu_error(NU_ERR_NOMEM, "out of memory scanning '%s'", d->root);
            for (int64_t k = 0; labels && k < all.n; k++) labels[k] = -1;
        }
    }
    if (st == NU_OK && all.n == 0)
        st = nu_error(NU_ERR_INVALID_ARG, "dataset folder '%s' holds no images (.png/.jpg/.jpeg/.webp, or MNIST idx files "
                      "named '%s-images-idx3-ubyte[.gz]')", d->root, d->p.split ? d->p.split : "train");
    sv_free(&dirs);
    sv_free(&root_files);
    if (st != NU_OK) {
        sv_free(&all);
        sv_free(&names);
        free(labels);
        return st;
    }
    d->paths = all.v;
    d->n = all.n;
    d->labels = labels;
    d->n_classes = (int)names.n;
    d->class_names = names.v;
    return NU_OK;
}

nu_status nu_dataset_open(const nu_dataset_params *p, nu_dataset **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_dataset_open: NULL out");
    *out = NULL;
    if (!p || !p->path || !*p->path) return nu_error(NU_ERR_INVALID_ARG, "no dataset path given");
    if (p->channels != 0 && p->channels != 1 && p->channels != 3)
        return nu_error(NU_ERR_INVALID_ARG, "dataset channels must be 1 or 3 (or 0 for the data's), not %d", p->channels);
    if (p->batch_size < 1) return nu_error(NU_ERR_INVALID_ARG, "batch size %d must be >= 1", p->batch_size);
    if (p->resolution < 0 || p->resolution > 16384)
        return nu_error(NU_ERR_INVALID_ARG, "resolution %d must be in [0, 16384]", p->resolution);
    if (p->prefetch < 0 || p->prefetch > 64) return nu_error(NU_ERR_INVALID_ARG, "prefetch %d must be in [0, 64]", p->prefetch);
    nu_dataset *d = calloc(1, sizeof *d);
    if (!d) return nu_error(NU_ERR_NOMEM, "out of memory");
    d->p = *p;
    d->root = strdup(p->path);
    d->perm_epoch = -1;
    d->held = -1;
    if (!d->root) {
        free(d);
        return nu_error(NU_ERR_NOMEM, "out of memory");
    }
    size_t rl = strlen(d->root);
    while (rl > 1 && d->root[rl - 1] == '/') d->root[--rl] = 0;
    d->p.path = d->root;
    d->p.split = NULL; /* not kept: the caller's string */

    bool is_idx;
    nu_status st = nu_idx_load(d->root, p->split, &d->idx, &is_idx);
    if (is_idx && st != NU_OK) {
        nu_dataset_free(d);
        return st;
    }
    struct stat sb;
    if (!is_idx) {
        if (stat(d->root, &sb) != 0) {
            nu_dataset_free(d);
            return nu_error(NU_ERR_NOT_FOUND, "dataset '%s' does not exist", p->path);
        }
        if (!S_ISDIR(sb.st_mode)) {
            nu_dataset_free(d);
            return nu_error(NU_ERR_INVALID_ARG, "dataset '%s' is neither a folder of images nor an MNIST idx images file "
                            "(\"...-images-idx3-ubyte[.gz]\")", p->path);
        }
    }
    d->is_idx = is_idx;
    if (is_idx) {
        d->n = d->idx.n;
        int maxl = -1;
        for (int64_t i = 0; d->idx.labels && i < d->n; i++)
            if (d->idx.labels[i] > maxl) maxl = d->idx.labels[i];
        d->n_classes = maxl + 1;
        if (d->n_classes > 0) {
            d->class_names = calloc((size_t)d->n_classes, sizeof *d->class_names);
            for (int i = 0; d->class_names && i < d->n_classes; i++) {
                char b[16];
                snprintf(b, sizeof b, "%d", i);
                d->class_names[i] = strdup(b);
            }
        }
        d->c = p->channels ? p->channels : 1;
        d->h = p->resolution > 0 ? p->resolution : d->idx.h;
        d->w = p->resolution > 0 ? p->resolution : d->idx.w;
        if (p->strict_channels && d->c != 1) {
            nu_dataset_free(d);
            return nu_error(NU_ERR_FORMAT, "%s: idx images have 1 channel, %d requested (strict_channels)", p->path,
                            p->channels);
        }
    } else {
        st = scan_folder(d);
        if (st != NU_OK) {
            nu_dataset_free(d);
            return st;
        }
    }
    if (p->limit > 0 && p->limit < d->n) {
        for (int64_t i = p->limit; d->paths && i < d->n; i++) free(d->paths[i]);
        d->n = p->limit;
    }
    d->bad = calloc((size_t)d->n, sizeof *d->bad);
    d->perm = malloc(sizeof *d->perm * (size_t)d->n);
    if (!d->bad || !d->perm) {
        nu_dataset_free(d);
        return nu_error(NU_ERR_NOMEM, "out of memory for %lld samples", (long long)d->n);
    }
    if (!is_idx) {
        /* the first readable image fixes the channel count (when not given) and native size */
        int64_t i = 0;
        for (; i < d->n; i++) {
            nu_image img;
            st = nu_image_load(d->paths[i], &img);
            if (st == NU_OK) {
                int eff = img.channels <= 2 ? 1 : 3;
                d->c = p->channels ? p->channels : eff;
                d->h = p->resolution > 0 ? p->resolution : img.height;
                d->w = p->resolution > 0 ? p->resolution : img.width;
                nu_image_free(&img);
                if (p->strict_channels && eff != d->c) {
                    nu_dataset_free(d);
                    return nu_error(NU_ERR_FORMAT, "%s: image has %d channels, %d requested (strict_channels)",
                                    d->paths[i], eff, d->c);
                }
                break;
            }
            if (st == NU_ERR_NOMEM) {
                nu_dataset_free(d);
                return st;
            }
            atomic_store(&d->bad[i], 1);
            long long k = atomic_fetch_add(&d->skipped, 1) + 1;
            nu_log(NU_LOG_WARN, "skipping unreadable image (%lld so far): %s", k, nu_last_error());
        }
        if (i == d->n) {
            nu_dataset_free(d);
            return nu_error(NU_ERR_FORMAT, "dataset '%s': none of its %lld images can be read", p->path,
                            (long long)(p->limit > 0 && p->limit < i ? p->limit : i));
        }
        if (p->captions) {
            d->captions = calloc((size_t)d->n, sizeof *d->captions);
            if (!d->captions) {
                nu_dataset_free(d);
                return nu_error(NU_ERR_NOMEM, "out of memory for captions");
            }
            for (int64_t k = 0; k < d->n; k++) d->captions[k] = read_caption(d->paths[k]);
        }
    }
    if (d->n_classes > 0 && !d->class_names) {
        nu_dataset_free(d);
        return nu_error(NU_ERR_NOMEM, "out of memory");
    }
    int64_t B = p->batch_size;
    d->bpe = p->drop_last ? d->n / B : (d->n + B - 1) / B;
    if (d->bpe == 0) {
        int64_t n = d->n;
        nu_dataset_free(d);
        return nu_error(NU_ERR_INVALID_ARG, "dataset '%s' has %lld samples, fewer than one batch of %lld", p->path,
                        (long long)n, (long long)B);
    }
    d->nslots = p->prefetch > 0 ? p->prefetch + 1 : 1;
    d->slots = calloc((size_t)d->nslots, sizeof *d->slots);
    if (!d->slots) {
        nu_dataset_free(d);
        return nu_error(NU_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    size_t per = (size_t)d->c * d->h * d->w;
    for (int i = 0; i < d->nslots; i++) {
        slot *s = &d->slots[i];
        s->images = malloc(sizeof(float) * per * (size_t)B);
        s->labels = malloc(sizeof(int64_t) * (size_t)B);
        s->indices = malloc(sizeof(int64_t) * (size_t)B);
        if (p->captions) s->captions = calloc((size_t)B, sizeof *s->captions);
        if (!s->images || !s->labels || !s->indices || (p->captions && !s->captions)) {
            nu_dataset_free(d);
            return nu_error(NU_ERR_NOMEM, "out of memory for %d batches of %lld images %dx%dx%d", d->nslots,
                            (long long)B, d->c, d->h, d->w);
        }
    }
    *out = d;
    return NU_OK;
}

int64_t nu_dataset_count(const nu_dataset *d) { return d->n; }
int64_t nu_dataset_batches_per_epoch(const nu_dataset *d) { return d->bpe; }
int nu_dataset_channels(const nu_dataset *d) { return d->c; }
int nu_dataset_height(const nu_dataset *d) { return d->h; }
int nu_dataset_width(const nu_dataset *d) { return d->w; }
int nu_dataset_n_classes(const nu_dataset *d) { return d->n_classes; }
const char *nu_dataset_class_name(const nu_dataset *d, int i) {
    return i >= 0 && i < d->n_classes && d->class_names ? d->class_names[i] : NULL;
}
const char *nu_dataset_path(const nu_dataset *d, int64_t index) {
    if (d->is_idx) return d->idx.images_path;
    return index >= 0 && index < d->n ? d->paths[index] : NULL;
}
int64_t nu_dataset_skipped(const nu_dataset *d) { return atomic_load(&((nu_dataset *)d)->skipped); }
