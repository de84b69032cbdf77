/*
 * generate_cond.c — the class-conditional path of `nuance generate` (issue 4 items 4 and 7): samples
 * a UNet / DiT trained by `nuance train` (or the built-in `-m mnist` / `-m fashion-mnist` models)
 * with a sampler of the shared module under classifier-free guidance.
 *
 *   nuance generate -m mnist|fashion-mnist|CHECKPOINT|RUN_DIR -p PROMPT [-b N] [-o 'out-%d.png']
 *                   [--steps N] [--cfg-scale S] [--sampling-method NAME] [-s SEED] [--grid FILE]
 *
 * PROMPT is a class name (case-insensitive; MNIST "0".."9", Fashion-MNIST "t-shirt", "trouser",
 * "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"), a class index,
 * a comma-separated list of them, or "all" (every class, -b images each). Output names follow
 * stable-diffusion.cpp: a printf-style %d (optionally %03d; "%%" is a literal %) is replaced by
 * the image index from --output-begin-idx (0); without one, N > 1 images are named
 * base_1.png, base_2.png, ...
 *
 * Built-in models, in this search order: $NUANCE_MODELS_DIR/NAME.safetensors, then beside the
 * executable BIN/../share/nuance/models/ (installed), BIN/../models/ and BIN/../../models/ (a
 * build folder inside the source tree), then ./models/ (the current folder).
 *
 * The SD `nuance generate` (generate.c) calls nu_cli_generate_is_cond_model(model argument) first
 * and hands the whole command to nu_cli_generate_cond when it is true. nu_cli_write_grid is also
 * used by train.c for its sample grids. Only public headers. Tested by tests/test_train_cli.c
 * (generation from a trained checkpoint, output names, grid, bad prompts / models).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
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

int nu_cli_generate_cond(int argc, char **argv);
bool nu_cli_generate_is_cond_model(const char *model_arg);
nu_status nu_cli_write_grid(const char *path, const float *images, int n, int c, int h, int w, int cols,
                            const char *const *row_labels, int n_labels, int scale, const char *params_text);

#define MAXP 4096

static const char *const MNIST_NAMES[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
static const char *const FASHION_NAMES[10] = {"t-shirt", "trouser", "pullover", "dress", "coat",
                                              "sandal",  "shirt",   "sneaker",  "bag",   "ankle-boot"};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Creates the folders of a file's path (as sd.cpp does for -o). */
static void make_parents(const char *file) {
    char b[MAXP];
    snprintf(b, sizeof b, "%s", file);
    for (char *p = b + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(b, 0777);
            *p = '/';
        }
}

/* ================================================================ a 5x7 pixel font for grid labels */

/* Rows top to bottom, bit 4 = leftmost column. Upper case, digits and a little punctuation;
 * lower-case letters are drawn as upper case, anything else as '?'. */
static const uint8_t *glyph(char ch) {
    static const uint8_t digits[10][7] = {
        {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}, {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E},
        {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}, {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E},
        {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}, {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E},
        {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}, {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
        {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}, {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}};
    static const uint8_t letters[26][7] = {
        {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}, {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E},
        {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}, {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C},
        {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}, {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10},
        {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}, {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11},
        {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}, {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C},
        {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}, {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F},
        {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}, {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11},
        {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}, {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10},
        {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}, {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11},
        {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}, {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},
        {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}, {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04},
        {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}, {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11},
        {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}, {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}};
    static const uint8_t space[7] = {0}, dash[7] = {0, 0, 0, 0x1F, 0, 0, 0}, under[7] = {0, 0, 0, 0, 0, 0, 0x1F},
                         dot[7] = {0, 0, 0, 0, 0, 0x0C, 0x0C}, colon[7] = {0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0},
                         slash[7] = {0, 0x01, 0x02, 0x04, 0x08, 0x10, 0},
                         quest[7] = {0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04};
    if (ch >= '0' && ch <= '9') return digits[ch - '0'];
    if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
    if (ch >= 'A' && ch <= 'Z') return letters[ch - 'A'];
    switch (ch) {
    case ' ': return space;
    case '-': return dash;
    case '_': return under;
    case '.': return dot;
    case ':': return colon;
    case '/': return slash;
    default: return quest;
    }
}

/* Draws text at (x0, y0) with each font pixel a scale x scale square of value v (all channels). */
static void draw_text(uint8_t *px, int W, int H, int C, int x0, int y0, const char *text, int scale, uint8_t v) {
    for (int k = 0; text[k]; k++) {
        const uint8_t *g = glyph(text[k]);
        for (int r = 0; r < 7; r++)
            for (int col = 0; col < 5; col++) {
                if (!(g[r] & (0x10 >> col))) continue;
                for (int dy = 0; dy < scale; dy++)
                    for (int dx = 0; dx < scale; dx++) {
                        int x = x0 + (k * 6 + col) * scale + dx, y = y0 + r * scale + dy;
                        if (x < 0 || y < 0 || x >= W || y >= H) continue;
                        for (int ch = 0; ch < C; ch++) px[((int64_t)y * W + x) * C + ch] = v;
                    }
            }
    }
}

static uint8_t to_u8(float v) { /* model range [-1, 1] -> [0, 255] (pixel = (v + 1) * 127.5) */
    float p = (v + 1.0f) * 127.5f + 0.5f;
    return (uint8_t)(p < 0 ? 0 : p > 255 ? 255 : p);
}

nu_status nu_cli_write_grid(const char *path, const float *images, int n, int c, int h, int w, int cols,
                            const char *const *row_labels, int n_labels, int scale, const char *params_text) {
    if (n < 1 || cols < 1 || (c != 1 && c != 3)) return nu_error(NU_ERR_INVALID_ARG, "%s: bad grid", path);
    if (scale <= 0) scale = h < 64 ? 2 : 1; /* small images (MNIST) are hard to see at 1x */
    int rows = (n + cols - 1) / cols, pad = 2 * scale;
    int fs = h * scale >= 28 ? (h * scale >= 56 ? 2 * (h * scale / 56) : 2) : 1; /* font pixel size */
    if (fs > 4) fs = 4;
    int label_w = 0;
    if (row_labels) {
        size_t ml = 0;
        for (int r = 0; r < n_labels && r < rows; r++)
            if (row_labels[r] && strlen(row_labels[r]) > ml) ml = strlen(row_labels[r]);
        if (ml > 24) ml = 24;
        if (ml) label_w = (int)ml * 6 * fs + 2 * pad;
    }
    int cw = w * scale, chh = h * scale;
    int W = label_w + cols * (cw + pad) + pad, H = rows * (chh + pad) + pad;
    nu_image img = {W, H, c, calloc((size_t)W * H * c, 1)};
    if (!img.pixels) return nu_error(NU_ERR_NOMEM, "%s: out of memory for a %dx%d grid", path, W, H);
    for (int i = 0; i < n; i++) {
        int r = i / cols, k = i % cols;
        int X = label_w + pad + k * (cw + pad), Y = pad + r * (chh + pad);
        const float *src = images + (int64_t)i * c * h * w;
        for (int y = 0; y < chh; y++)
            for (int x = 0; x < cw; x++)
                for (int ch = 0; ch < c; ch++)
                    img.pixels[((int64_t)(Y + y) * W + X + x) * c + ch] = to_u8(src[((int64_t)ch * h + y / scale) * w + x / scale]);
    }
    if (label_w)
        for (int r = 0; r < rows && r < n_labels; r++) {
            if (!row_labels[r]) continue;
            char t[25];
            snprintf(t, sizeof t, "%s", row_labels[r]);
            draw_text(img.pixels, W, H, c, pad, pad + r * (chh + pad) + (chh - 7 * fs) / 2, t, fs, 255);
        }
    nu_image_text txt = {"parameters", (char *)(params_text ? params_text : "")};
    nu_status st = nu_image_save(path, &img, params_text ? &txt : NULL, params_text ? 1 : 0, 0);
    free(img.pixels);
    return st;
}

/* ================================================================ model lookup */

static bool builtin_name(const char *arg, const char **file_stem, const char *const **names) {
    if (!strcasecmp(arg, "mnist")) {
        *file_stem = "mnist", *names = MNIST_NAMES;
        return true;
    }
    if (!strcasecmp(arg, "fashion-mnist") || !strcasecmp(arg, "fashion_mnist") || !strcasecmp(arg, "fashionmnist")) {
        *file_stem = "fashion-mnist", *names = FASHION_NAMES;
        return true;
    }
    return false;
}

/* Folder of the running executable (empty if unknown). */
static void exe_dir(char *out, size_t n) {
    char b[MAXP];
    ssize_t k = readlink("/proc/self/exe", b, sizeof b - 1);
    out[0] = 0;
    if (k <= 0) return;
    b[k] = 0;
    char *sl = strrchr(b, '/');
    if (!sl) return;
    *sl = 0;
    snprintf(out, n, "%s", b);
}

/* Appends "<dir><rel><stem>.safetensors" to the candidates (skipped if too long). */
static void add_candidate(char cand[][MAXP], int *n, int max, const char *dir, const char *rel, const char *stem) {
    if (*n < max && snprintf(cand[*n], MAXP, "%s%s%s.safetensors", dir, rel, stem) < MAXP) (*n)++;
}

/* Candidate paths of a built-in model, in search order; returns the count. */
static int builtin_candidates(const char *stem, char cand[][MAXP], int max) {
    int n = 0;
    const char *env = getenv("NUANCE_MODELS_DIR");
    if (env && *env) add_candidate(cand, &n, max, env, "/", stem);
    char d[MAXP];
    exe_dir(d, sizeof d);
    if (d[0]) {
        add_candidate(cand, &n, max, d, "/../share/nuance/models/", stem);
        add_candidate(cand, &n, max, d, "/../models/", stem);
        add_candidate(cand, &n, max, d, "/../../models/", stem);
    }
    add_candidate(cand, &n, max, "", "models/", stem);
    return n;
}

/* A model argument -> a file: built-in name, run folder (model.safetensors, else the checkpoint)
 * or the path itself. Prints the error and returns false when nothing is found. */
static bool resolve_model(const char *arg, char *out, size_t n, const char *const **builtin_names) {
    const char *stem;
    *builtin_names = NULL;
    if (builtin_name(arg, &stem, builtin_names) && !is_file(arg)) {
        char cand[6][MAXP];
        int k = builtin_candidates(stem, cand, 6);
        for (int i = 0; i < k; i++)
            if (is_file(cand[i]) && snprintf(out, n, "%s", cand[i]) < (int)n) return true;
        fprintf(stderr, "nuance generate: the built-in model '%s' is not installed; looked for %s.safetensors in:\n", arg,
                stem);
        for (int i = 0; i < k; i++) fprintf(stderr, "  %s\n", cand[i]);
        fprintf(stderr, "train it with scripts/train_%s.sh (it writes models/%s.safetensors), or pass a checkpoint or run "
                        "folder of `nuance train` with -m\n", !strcmp(stem, "mnist") ? "mnist" : "fashion_mnist", stem);
        return false;
    }
    if (is_dir(arg)) {
        snprintf(out, n, "%s/model.safetensors", arg);
        if (is_file(out)) return true;
        snprintf(out, n, "%s/checkpoint.safetensors", arg);
        if (is_file(out)) return true;
        fprintf(stderr, "nuance generate: %s: neither model.safetensors nor checkpoint.safetensors in this folder\n", arg);
        return false;
    }
    if (!is_file(arg)) {
        fprintf(stderr, "nuance generate: model '%s' does not exist\n", arg);
        return false;
    }
    snprintf(out, n, "%s", arg);
    return true;
}

/* The nuance generative-model file behind a model argument, or false. Reads only the header. */
static bool cond_model_file(const char *path) {
    nu_st_file *f;
    if (nu_st_open(path, &f) != NU_OK) {
        nu_clear_error();
        return false;
    }
    const char *fmt = nu_st_metadata(f, "format"), *cfg = nu_st_metadata(f, "config");
    bool yes = false;
    if (fmt && cfg && (!strcmp(fmt, "nuance.gen_model") || !strcmp(fmt, "nuance.train.checkpoint"))) {
        nu_gen_config c;
        yes = nu_gen_config_from_json(cfg, strlen(cfg), path, &c) == NU_OK;
    }
    nu_st_close(f);
    nu_clear_error();
    return yes;
}

bool nu_cli_generate_is_cond_model(const char *model_arg) {
    if (!model_arg) return false;
    const char *stem;
    const char *const *names;
    if (builtin_name(model_arg, &stem, &names) && !is_file(model_arg)) return true;
    if (is_dir(model_arg)) {
        char p[MAXP + 32];
        snprintf(p, sizeof p, "%s/model.safetensors", model_arg);
        if (is_file(p)) return cond_model_file(p);
        snprintf(p, sizeof p, "%s/checkpoint.safetensors", model_arg);
        return is_file(p) && cond_model_file(p);
    }
    return is_file(model_arg) && cond_model_file(model_arg);
}

/* ================================================================ prompts */

/* lower-case alphanumerics only: "Ankle boot" / "ankle-boot" / "ANKLE_BOOT" -> "ankleboot" */
static void norm_name(const char *s, char *out, size_t n) {
    size_t k = 0;
    for (; *s && k + 1 < n; s++) {
        char ch = *s;
        if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) out[k++] = ch;
    }
    out[k] = 0;
}

static int find_class(const char *tok, const char *const *names, int n) {
    char a[256], b[256];
    norm_name(tok, a, sizeof a);
    if (!a[0]) return -1;
    for (int i = 0; i < n; i++) {
        norm_name(names[i], b, sizeof b);
        if (!strcmp(a, b)) return i;
    }
    /* Fashion-MNIST's official long names, for any model with its classes */
    char first[64], last[64];
    if (n == 10) norm_name(names[0], first, sizeof first), norm_name(names[9], last, sizeof last);
    if (n == 10 && !strcmp(first, "tshirt") && !strcmp(last, "ankleboot")) {
        if (!strcmp(a, "tshirttop") || !strcmp(a, "top") || !strcmp(a, "tee")) return 0;
        if (!strcmp(a, "boot") || !strcmp(a, "ankleboots")) return 9;
    }
    char *end;
    long v = strtol(tok, &end, 10);
    if (end != tok && *end == 0 && v >= 0 && v < n) return (int)v;
    return -1;
}

/* ================================================================ output names (sd.cpp) */

/* Finds a printf-style %d / %0Nd specifier (not preceded by an odd run of '%'); returns its
 * start or -1, and its length. */
static int find_spec(const char *p, int *len) {
    for (int i = 0; p[i]; i++) {
        if (p[i] != '%') continue;
        if (p[i + 1] == '%') {
            i++;
            continue;
        }
        int j = i + 1, digits = 0;
        while (p[j] >= '0' && p[j] <= '9' && digits < 3) j++, digits++;
        if (p[j] == 'd') {
            *len = j - i + 1;
            return i;
        }
    }
    return -1;
}

/* Name of image `idx` for pattern `pat` (sd.cpp: every %d replaced, then %% -> %). */
static void output_name(const char *pat, int idx, char *out, size_t n) {
    char tmp[MAXP];
    snprintf(tmp, sizeof tmp, "%s", pat);
    int len, at;
    while ((at = find_spec(tmp, &len)) >= 0) {
        char spec[8], num[32], rest[MAXP];
        snprintf(spec, sizeof spec, "%.*s", len, tmp + at);
        snprintf(num, sizeof num, spec, idx);
        snprintf(rest, sizeof rest, "%s", tmp + at + len);
        snprintf(tmp + at, sizeof tmp - (size_t)at, "%s%s", num, rest);
    }
    size_t k = 0;
    for (int i = 0; tmp[i] && k + 1 < n; i++) {
        out[k++] = tmp[i];
        if (tmp[i] == '%' && tmp[i + 1] == '%') i++;
    }
    out[k] = 0;
}

/* ================================================================ the command */

static bool opt_is(const char *a, const char *s, const char *l) { return !strcmp(a, s) || (l && !strcmp(a, l)); }

static void usage(FILE *f) {
    fprintf(f,
            "usage: nuance generate -m MODEL -p CLASS [options]      (class-conditional models of nuance train)\n"
            "  -m, --model M            mnist, fashion-mnist (built-in), a checkpoint / model file of nuance train,\n"
            "                           or a run folder (its model.safetensors, else checkpoint.safetensors)\n"
            "  -p, --prompt CLASS       class name (case-insensitive) or index; a comma-separated list cycles\n"
            "                           through classes; 'all' = every class, -b images each\n"
            "  -b, --batch-count N      images (per class with 'all') [1]\n"
            "  -o, --output PATH        PNG name; %%d / %%03d is the image index (sd.cpp) [output.png]\n"
            "      --output-begin-idx N first index [0 with %%d, else 1]\n"
            "      --grid FILE          also write all images as one labelled grid PNG (one row per class)\n"
            "      --grid-cols N        images per grid row [-b, at most 16]\n"
            "      --steps N            sampling steps [the model's; 30]\n"
            "      --cfg-scale S        classifier-free guidance scale (1: none) [the model's; 3]\n"
            "      --sampling-method S  euler, heun, ddim, ddpm, dpm++2m, euler_a, lms, ... [the model's; euler_a,\n"
            "                           flow models: euler]\n"
            "      --scheduler S        sigma schedule of eps/v models: karras, discrete, exponential, ... [karras]\n"
            "      --sampling-family F  kdiffusion (default) or diffusers: the diffusers scheduler loop as DiTPipeline\n"
            "                           runs it (then --sampling-method names a scheduler: ddpm, ddim, dpm++2m, ...)\n"
            "      --eta X              ddim / ancestral noise scale\n"
            "  -s, --seed N             seed of the batch's initial noise [42; negative: random]\n"
            "      --no-ema             use the live weights of a checkpoint instead of the EMA ones\n"
            "  -t, --threads N          threads [online CPUs]\n");
}

int nu_cli_generate_cond(int argc, char **argv) {
    const char *model_arg = NULL, *prompt = NULL, *output = "output.png", *grid = NULL, *sampler = NULL;
    const char *schedule = NULL, *family = NULL;
    int size_req = 0, batch = 1, steps = 30, threads = (int)sysconf(_SC_NPROCESSORS_ONLN), begin_idx = -1, grid_cols = 0;
    double cfg = 3.0, eta = -1;
    long long seed = 42;
    bool no_ema = false, verbose = false, steps_given = false, cfg_given = false;
    if (threads < 1) threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define IS(s, l) opt_is(a, s, l)
        if (IS("-h", "--help")) {
            usage(stdout);
            return 0;
        }
        if (IS("--no-ema", NULL)) {
            no_ema = true;
            continue;
        }
        if (IS("-v", "--verbose")) {
            verbose = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "nuance generate: %s needs a value (or is unknown; see nuance generate -m mnist --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        char *end = NULL;
        errno = 0;
        if (IS("-m", "--model")) model_arg = v;
        else if (IS("-p", "--prompt")) prompt = v;
        else if (IS("-o", "--output")) output = v;
        else if (IS("--grid", NULL)) grid = v;
        else if (IS("--sampling-method", "--sample-method") || IS("--sampler", NULL)) sampler = v;
        else if (IS("--scheduler", "--schedule")) schedule = v;
        else if (IS("--sampling-family", NULL)) family = v;
        else if (IS("-b", "--batch-count") || IS("--batch", NULL)) batch = (int)strtol(v, &end, 10);
        else if (IS("--steps", NULL)) steps = (int)strtol(v, &end, 10), steps_given = true;
        else if (IS("-t", "--threads")) threads = (int)strtol(v, &end, 10);
        else if (IS("--output-begin-idx", NULL)) begin_idx = (int)strtol(v, &end, 10);
        else if (IS("--grid-cols", NULL)) grid_cols = (int)strtol(v, &end, 10);
        else if (IS("--cfg-scale", "--guidance-scale")) cfg = strtod(v, &end), cfg_given = true;
        else if (IS("--eta", NULL)) eta = strtod(v, &end);
        else if (IS("-s", "--seed")) seed = strtoll(v, &end, 10);
        else if (IS("-n", "--negative-prompt")) {
            fprintf(stderr, "nuance generate: --negative-prompt is not supported by class-conditional models (CFG "
                            "guides away from the null class)\n");
            return 2;
        } else if (IS("-W", "--width") || IS("-H", "--height")) {
            size_req = (int)strtol(v, &end, 10);
        } else {
            fprintf(stderr, "nuance generate: unknown option '%s' for class-conditional models (nuance generate -m "
                            "mnist --help)\n", a);
            return 2;
        }
        if (end && (*end || errno)) {
            fprintf(stderr, "nuance generate: %s '%s' is not a number\n", a, v);
            return 2;
        }
#undef IS
    }
    if (!model_arg) {
        fprintf(stderr, "nuance generate: no model: -m mnist, -m fashion-mnist or -m CHECKPOINT\n");
        return 2;
    }
    if (!prompt || !*prompt) {
        fprintf(stderr, "nuance generate: no prompt: -p CLASS (a class name or index, or 'all')\n");
        return 2;
    }
    if (batch < 1 || batch > 100000 || steps < 1 || steps > 10000 || threads < 1 || threads > 1024 ||
        !(cfg >= 0 && cfg <= 1000) || grid_cols < 0) {
        fprintf(stderr, "nuance generate: -b, --steps, -t must be positive and --cfg-scale in [0, 1000]\n");
        return 2;
    }
    char path[MAXP];
    const char *const *builtin_names;
    if (!resolve_model(model_arg, path, sizeof path, &builtin_names)) return 1;

    /* ---- model, objective, class names */
    nu_st_file *f;
    if (nu_st_open(path, &f) != NU_OK) {
        fprintf(stderr, "nuance generate: %s\n", nu_last_error());
        return 1;
    }
    const char *fmt = nu_st_metadata(f, "format"), *cfgj = nu_st_metadata(f, "config");
    if (!fmt || !cfgj || (strcmp(fmt, "nuance.gen_model") && strcmp(fmt, "nuance.train.checkpoint"))) {
        fprintf(stderr, "nuance generate: %s is not a model of nuance train (no nuance.gen_model / checkpoint "
                        "metadata)\n", path);
        nu_st_close(f);
        return 1;
    }
    nu_objective obj = nu_objective_init(NU_OBJECTIVE_EPS);
    char *names_store[1024];
    int n_names = 0;
    char def_sampler[32] = "auto";
    {
        /* a checkpoint's run config holds "objective", "class_names" and "sample"; an exported
         * model has them as metadata entries of their own */
        nu_json *root = nu_json_parse(cfgj, strlen(cfgj));
        const nu_json *oj = root ? nu_json_get(root, "objective") : NULL, *cn = root ? nu_json_get(root, "class_names") : NULL;
        const nu_json *sj = root ? nu_json_get(root, "sample") : NULL;
        nu_json *oj2 = NULL, *cn2 = NULL, *sj2 = NULL;
        const char *om = nu_st_metadata(f, "objective"), *cm = nu_st_metadata(f, "class_names");
        const char *sm = nu_st_metadata(f, "sample");
        if (!oj && om) oj = oj2 = nu_json_parse(om, strlen(om));
        if (!cn && cm) cn = cn2 = nu_json_parse(cm, strlen(cm));
        if (!sj && sm) sj = sj2 = nu_json_parse(sm, strlen(sm));
        if (sj) { /* the run's sampling settings are the defaults */
            snprintf(def_sampler, sizeof def_sampler, "%s", nu_json_string(sj, "sampler", "auto"));
            if (!steps_given) steps = (int)nu_json_number(sj, "steps", steps);
            if (!cfg_given) cfg = nu_json_number(sj, "cfg_scale", cfg);
        }
        nu_json_free(sj2);
        nu_status st = oj ? nu_objective_from_json_obj(oj, path, &obj) : NU_OK;
        if (cn && cn->kind == NU_JSON_ARRAY)
            for (int i = 0; i < cn->n && n_names < 1024; i++) {
                const nu_json *e = nu_json_at(cn, i);
                if (e->kind == NU_JSON_STRING) names_store[n_names++] = strdup(e->str);
            }
        nu_json_free(root);
        nu_json_free(oj2);
        nu_json_free(cn2);
        nu_st_close(f);
        if (st != NU_OK) {
            fprintf(stderr, "nuance generate: %s\n", nu_last_error());
            for (int i = 0; i < n_names; i++) free(names_store[i]);
            return 1;
        }
    }
    double t0 = now_s();
    nu_gen_model *m = NULL;
    if (nu_gen_model_load(path, !no_ema, &m) != NU_OK) {
        fprintf(stderr, "nuance generate: %s\n", nu_last_error());
        for (int i = 0; i < n_names; i++) free(names_store[i]);
        return 1;
    }
    const nu_gen_config *mc = nu_gen_model_config(m);
    int K = mc->num_classes;
    int rc = 1;
    if (size_req > 0 && size_req != mc->sample_size) {
        fprintf(stderr, "nuance generate: %s generates %dx%d images (its trained size); -W/-H %d is not possible\n", path,
                mc->sample_size, mc->sample_size, size_req);
        goto out;
    }
    const char *names[1024];
    for (int i = 0; i < K && i < 1024; i++) {
        if (i < n_names) names[i] = names_store[i];
        else if (builtin_names && K == 10) names[i] = builtin_names[i];
        else names[i] = NULL;
    }
    char idx_names[1024][12];
    for (int i = 0; i < K && i < 1024; i++)
        if (!names[i]) snprintf(idx_names[i], sizeof idx_names[i], "%d", i), names[i] = idx_names[i];

    /* ---- labels */
    int n_req = 0, req[1024];
    bool all = !strcasecmp(prompt, "all");
    if (K == 0) {
        if (!all && strcasecmp(prompt, "none") && strcmp(prompt, "-")) {
            fprintf(stderr, "nuance generate: %s is unconditional: use -p all (or -p none)\n", path);
            goto out;
        }
        n_req = 1, req[0] = -1;
    } else if (all) {
        for (int i = 0; i < K && i < 1024; i++) req[n_req++] = i;
    } else {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", prompt);
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ') tok++;
            int k = find_class(tok, names, K);
            if (k < 0) {
                fprintf(stderr, "nuance generate: '%s' is not a class of %s; classes:", tok, model_arg);
                for (int i = 0; i < K; i++) fprintf(stderr, "%s %s", i ? "," : "", names[i]);
                fprintf(stderr, " (or an index 0..%d, or 'all')\n", K - 1);
                goto out;
            }
            if (n_req < 1024) req[n_req++] = k;
        }
    }
    int total = all ? n_req * batch : batch;
    int64_t per = (int64_t)mc->in_channels * mc->sample_size * mc->sample_size;
    int64_t *labels = malloc(sizeof(int64_t) * (size_t)total);
    float *img = malloc(sizeof(float) * (size_t)total * (size_t)per);
    if (!labels || !img) {
        fprintf(stderr, "nuance generate: out of memory for %d images\n", total);
        free(labels);
        free(img);
        goto out;
    }
    for (int i = 0; i < total; i++) labels[i] = all ? req[i / batch] : req[i % n_req];
    if (seed < 0) seed = (long long)(time(NULL) ^ (getpid() << 16)) & 0x7fffffff;
    if (!sampler) sampler = def_sampler;
    if (!strcasecmp(sampler, "auto")) sampler = obj.kind == NU_OBJECTIVE_FLOW ? "euler" : "euler_a";
    nu_gen_sample_params sp = nu_gen_sample_params_init();
    sp.sampler = sampler;
    sp.steps = steps;
    sp.guidance_scale = K > 0 ? cfg : 1.0;
    sp.batch = total;
    sp.labels = K > 0 ? labels : NULL;
    sp.seed = (uint64_t)seed;
    sp.noise_seed = (uint64_t)seed + 1;
    sp.eta = eta;
    sp.max_eval_batch = 256;
    nu_status st = NU_OK;
    if (family && !strcasecmp(family, "diffusers")) sp.diffusers_scheduler = true;
    else if (family && strcasecmp(family, "kdiffusion") && strcasecmp(family, "auto")) {
        fprintf(stderr, "nuance generate: --sampling-family '%s': expected kdiffusion or diffusers\n", family);
        st = NU_ERR_INVALID_ARG;
    }
    if (st == NU_OK && schedule && (st = nu_sigma_schedule_from_name(schedule, &sp.schedule)) != NU_OK)
        fprintf(stderr, "nuance generate: --scheduler: %s\n", nu_last_error());
    nu_pool *pool = nu_pool_new(threads);
    double t1 = now_s();
    if (st == NU_OK && (st = nu_gen_sample(m, &obj, &sp, pool, img)) != NU_OK)
        fprintf(stderr, "nuance generate: %s\n", nu_last_error());
    double t2 = now_s();
    nu_pool_free(pool);
    if (st == NU_OK) {
        char params[1024];
        int len = 0;
        bool pattern = false;
        int dummy;
        pattern = find_spec(output, &dummy) >= 0;
        int first = begin_idx >= 0 ? begin_idx : (pattern ? 0 : 1);
        for (int i = 0; i < total && st == NU_OK; i++) {
            char name[MAXP];
            if (pattern) output_name(output, first + i, name, sizeof name);
            else if (total == 1) snprintf(name, sizeof name, "%s", output);
            else {
                const char *dot = strrchr(output, '.'), *sl = strrchr(output, '/');
                if (!dot || (sl && dot < sl)) dot = output + strlen(output);
                snprintf(name, sizeof name, "%.*s_%d%s", (int)(dot - output), output, first + i, dot);
            }
            len = snprintf(params, sizeof params,
                           "%s\nSteps: %d, Sampler: %s, CFG scale: %g, Seed: %lld, Size: %dx%d, Model: %s, Class: %s "
                           "(%lld), Batch index: %d, Version: nuance %s",
                           K > 0 ? names[labels[i]] : "(unconditional)", steps, sampler, sp.guidance_scale, seed,
                           mc->sample_size, mc->sample_size, model_arg, K > 0 ? names[labels[i]] : "-",
                           (long long)labels[i], i, nu_version());
            (void)len;
            nu_image im = {mc->sample_size, mc->sample_size, mc->in_channels, malloc((size_t)per)};
            if (!im.pixels) {
                st = nu_error(NU_ERR_NOMEM, "out of memory");
                break;
            }
            int S = mc->sample_size, C = mc->in_channels;
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++)
                    for (int ch = 0; ch < C; ch++)
                        im.pixels[((int64_t)y * S + x) * C + ch] = to_u8(img[(int64_t)i * per + ((int64_t)ch * S + y) * S + x]);
            nu_image_text txt = {"parameters", params};
            make_parents(name);
            st = nu_image_save(name, &im, &txt, 1, 0);
            free(im.pixels);
            if (st != NU_OK) fprintf(stderr, "nuance generate: %s\n", nu_last_error());
            else if (verbose || total <= 16) printf("wrote %s (%s)\n", name, K > 0 ? names[labels[i]] : "unconditional");
        }
        if (st == NU_OK && total > 16 && !verbose) printf("wrote %d images (%s ...)\n", total, output);
        if (st == NU_OK && grid) {
            /* one row per requested class when 'all' (or one class), else rows of the batch */
            int cols = grid_cols > 0 ? grid_cols : (all ? batch : (total < 16 ? total : 16));
            if (cols > 64) cols = 64;
            int rows = (total + cols - 1) / cols;
            const char **rl = calloc((size_t)rows, sizeof *rl);
            bool labelled = K > 0 && rl;
            for (int r = 0; labelled && r < rows; r++) {
                int a = r * cols, b = a + cols - 1 < total - 1 ? a + cols - 1 : total - 1;
                rl[r] = labels[a] == labels[b] ? names[labels[a]] : NULL; /* a row of one class gets its name */
                for (int i = a; i <= b; i++)
                    if (labels[i] != labels[a]) rl[r] = NULL;
            }
            snprintf(params, sizeof params, "%s\nSteps: %d, Sampler: %s, CFG scale: %g, Seed: %lld, Model: %s, Version: "
                                            "nuance %s", prompt, steps, sampler, sp.guidance_scale, seed, model_arg,
                     nu_version());
            make_parents(grid);
            st = nu_cli_write_grid(grid, img, total, mc->in_channels, mc->sample_size, mc->sample_size, cols,
                                   labelled ? rl : NULL, rows, 0, params);
            free(rl);
            if (st != NU_OK) fprintf(stderr, "nuance generate: %s\n", nu_last_error());
            else printf("wrote %s (%d x %d grid)\n", grid, rows, cols);
        }
        fprintf(stderr, "%d image%s in %.2f s (%.1f images/s; model load %.2f s), %s %d steps, CFG %g, seed %lld\n", total,
                total == 1 ? "" : "s", t2 - t1, total / (t2 - t1), t1 - t0, sampler, steps, sp.guidance_scale, seed);
    }
    free(labels);
    free(img);
    rc = st == NU_OK ? 0 : 1;
out:
    nu_gen_model_free(m);
    for (int i = 0; i < n_names; i++) free(names_store[i]);
    return rc;
}
