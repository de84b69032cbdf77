/*
 * test_train_cli.c — runs the built `nuance` command (fork/exec, no shell) on a tiny synthetic
 * dataset (three class folders of 16x16 gray PNGs written here) and checks `nuance train` and the
 * class-conditional `nuance generate` end to end (tools/cli/train.c, tools/cli/generate_cond.c):
 *   - a run writes config.json, log.csv (one row per step), train.log, checkpoints, sample grids
 *     and the f16 EMA model.safetensors;
 *   - a run killed with SIGKILL after its first checkpoint and continued with --resume ends with
 *     the same log.csv (step, loss, lr, grad_norm: exact text) and a byte-identical final
 *     checkpoint as the uninterrupted run (the trainer is bitwise deterministic for a fixed seed
 *     and thread count, so there is no tolerance);
 *   - SIGTERM stops a run with a checkpoint at the last logged step (exit 130);
 *   - `nuance generate` on the run folder writes -b N PNGs named as sd.cpp does (%d patterns,
 *     base_1.png ... without one) and a labelled grid;
 *   - bad input gets a clear message naming the file or step and leaves earlier outputs intact:
 *     missing dataset, empty folder, an image of another size, an RGB image among gray ones, a
 *     truncated checkpoint, weights of another model, a changed flag on --resume, an unknown
 *     config key, NaN loss (stop, last good checkpoint and log kept), an unknown class prompt.
 * Skips (77) when the nuance executable is not built beside the tests (BUILD/nuance).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nu_test.h"
#include "nuance/io.h"
#include "nuance/train.h"

static char exe[4096], tmpdir[256];

/* Paths under tmpdir; each call returns a new string (all freed at the end of main). */
static char *paths[1024];
static int n_paths;

static const char *tp(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *tp(const char *fmt, ...) {
    char b[4096];
    int n = snprintf(b, sizeof b, "%s/", tmpdir);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b + n, sizeof b - (size_t)n, fmt, ap);
    va_end(ap);
    NU_ASSERT(n_paths < 1024);
    return paths[n_paths++] = strdup(b);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------- running the CLI */

typedef struct argl {
    const char *v[96];
    int n;
} argl;

static void add(argl *a, ...) {
    va_list ap;
    va_start(ap, a);
    for (const char *s; (s = va_arg(ap, const char *));) {
        NU_ASSERT(a->n < 94);
        a->v[a->n++] = s;
    }
    va_end(ap);
    a->v[a->n] = NULL;
}

/* Starts `nuance args...` with stdout+stderr into err_path. */
static pid_t spawn(const argl *a, const char *err_path) {
    const char *argv[100];
    argv[0] = exe;
    for (int i = 0; i <= a->n; i++) argv[i + 1] = a->v[i];
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int wait_rc(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

static char *slurp(const char *path, size_t *len_out) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (b) b[n] = 0;
    fclose(f);
    if (len_out) *len_out = (size_t)n;
    return b;
}

static char last_output[16384];

/* Runs to completion; the combined output is kept in last_output. */
static int run(const argl *a) {
    const char *log = tp("cli.out");
    int rc = wait_rc(spawn(a, log));
    char *t = slurp(log, NULL);
    snprintf(last_output, sizeof last_output, "%s", t ? t : "");
    free(t);
    return rc;
}

static bool output_has(const char *s) { return strstr(last_output, s) != NULL; }

#define CHECK_RUN(a, want_rc, ...)                                                                 \
    do {                                                                                           \
        int rc_ = run(a);                                                                          \
        NU_CHECK_MSG(rc_ == (want_rc), "exit %d, expected %d; output:\n%s", rc_, want_rc, last_output); \
    } while (0)

static bool exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int csv_rows(const char *path) {
    char *t = slurp(path, NULL);
    int n = 0;
    for (char *p = t; p && *p; p++) n += *p == '\n';
    free(t);
    return n > 0 ? n - 1 : 0;
}

/* log.csv without the timing columns (images_per_s, elapsed): "step,loss,lr,grad_norm" lines */
static char *csv_core(const char *path) {
    char *t = slurp(path, NULL);
    if (!t) return NULL;
    char *out = malloc(strlen(t) + 1), *o = out;
    for (char *line = t; *line;) {
        char *nl = strchr(line, '\n');
        int commas = 0;
        for (char *p = line; p < (nl ? nl : line + strlen(line)); p++) {
            if (*p == ',' && ++commas == 4) break;
            *o++ = *p;
        }
        *o++ = '\n';
        if (!nl) break;
        line = nl + 1;
    }
    *o = 0;
    free(t);
    return out;
}

static char *ckpt_meta(const char *path, const char *key) {
    char *v = NULL;
    if (nu_checkpoint_metadata(path, key, &v) != NU_OK) return NULL;
    return v;
}

/* ---------------------------------------------------------------- the synthetic dataset */

/* 16x16 gray images: class 0 horizontal bars, 1 vertical bars, 2 a centred square; with noise. */
static void write_image(const char *path, int cls, int k, int size, int channels) {
    nu_image im = {size, size, channels, malloc((size_t)(size * size * channels))};
    uint64_t s = (uint64_t)(cls * 1000 + k + 1) * 0x9E3779B97F4A7C15ull;
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            int on = cls == 0 ? (y / 2) % 2 : cls == 1 ? (x / 2) % 2 : (x > 3 && x < 12 && y > 3 && y < 12);
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            int v = (on ? 200 : 30) + (int)(s % 40);
            for (int c = 0; c < channels; c++) im.pixels[(y * size + x) * channels + c] = (uint8_t)v;
        }
    NU_CHECK_MSG(nu_image_save(path, &im, NULL, 0, 0) == NU_OK, "%s", nu_last_error());
    free(im.pixels);
}

static void make_dataset(const char *dir, int per_class) {
    static const char *names[3] = {"bars", "stripes", "square"};
    mkdir(dir, 0755);
    for (int c = 0; c < 3; c++) {
        char d[4096];
        snprintf(d, sizeof d, "%s/%s", dir, names[c]);
        mkdir(d, 0755);
        for (int k = 0; k < per_class; k++) {
            char p[4200];
            snprintf(p, sizeof p, "%s/img%02d.png", d, k);
            write_image(p, c, k, 16, 1);
        }
    }
}

/* The tiny model and run: 2-level UNet 8-16, batch 4, one thread (deterministic trajectory). */
static void tiny(argl *a, const char *data, const char *out, const char *steps) {
    add(a, "train", "--data", data, "--out", out, "--widths", "8,16", "--attn", "0,1", "--layers", "1", "--groups", "4",
        "--head-dim", "8", "--batch", "4", "--steps", steps, "--lr", "2e-3", "--warmup", "3", "--ema", "0.99", "--seed",
        "3", "-t", "1", "-q", NULL);
}

static void rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        char cmd[4200]; /* only under our own mkdtemp folder */
        if (strncmp(path, "/tmp/nu_test_train_cli_", 23) != 0) return;
        snprintf(cmd, sizeof cmd, "%s", path);
        const char *argv[] = {"rm", "-rf", cmd, NULL};
        pid_t pid = fork();
        if (pid == 0) {
            execvp("rm", (char *const *)argv);
            _exit(127);
        }
        wait_rc(pid);
    } else
        remove(path);
}

/* ---------------------------------------------------------------- tests */

static void test_train_resume(int steps) {
    char st[16];
    snprintf(st, sizeof st, "%d", steps);
    const char *data = tp("data");

    /* A: uninterrupted, checkpoints every 10 steps, a grid every 10 steps */
    argl a = {0};
    tiny(&a, data, tp("A"), st);
    add(&a, "--ckpt-every", "10", "--sample-every", "10", "--sample-cols", "2", "--sample-steps", "3", NULL);
    CHECK_RUN(&a, 0);
    NU_CHECK(exists(tp("A/config.json")) && exists(tp("A/train.log")) && exists(tp("A/model.safetensors")));
    NU_CHECK_MSG(exists(tp("A/samples/step-000010.png")), "no sample grid at step 10");
    NU_CHECK_MSG(csv_rows(tp("A/log.csv")) == steps, "A: %d log rows, expected %d", csv_rows(tp("A/log.csv")), steps);
    char *s = ckpt_meta(tp("A/checkpoint.safetensors"), "step");
    NU_CHECK_MSG(s && atoi(s) == steps, "A: final checkpoint at step %s", s ? s : "(none)");
    free(s);
    nu_st_file *f = NULL;
    NU_CHECK(nu_st_open(tp("A/model.safetensors"), &f) == NU_OK);
    if (f) {
        const char *fmt = nu_st_metadata(f, "format"), *cn = nu_st_metadata(f, "class_names");
        NU_CHECK(fmt && !strcmp(fmt, "nuance.gen_model"));
        NU_CHECK_MSG(cn && strstr(cn, "\"stripes\""), "class names in model.safetensors: %s", cn ? cn : "(none)");
        NU_CHECK(nu_st_count(f) > 0 && nu_st_at(f, 0)->type == NU_TYPE_F16);
        nu_st_close(f);
    }
    nu_image grid;
    if (nu_image_load(tp("A/samples/step-000010.png"), &grid) == NU_OK) {
        NU_CHECK_MSG(grid.height >= 3 * 32 && grid.channels == 1, "grid %dx%dx%d", grid.width, grid.height, grid.channels);
        nu_image_free(&grid);
    }

    /* B: the same run, SIGKILLed after its first checkpoint, then resumed */
    argl b = {0};
    tiny(&b, data, tp("B"), st);
    add(&b, "--ckpt-every", "10", "--sample-every", "10", "--sample-cols", "2", "--sample-steps", "3", NULL);
    pid_t pid = spawn(&b, tp("B.out"));
    double t0 = now_s();
    int rows = 0;
    while (now_s() - t0 < 60) {
        rows = csv_rows(tp("B/log.csv"));
        if (rows >= 13 && exists(tp("B/checkpoint.safetensors"))) break;
        usleep(500);
    }
    kill(pid, SIGKILL);
    int rc = wait_rc(pid);
    int killed_rows = csv_rows(tp("B/log.csv"));
    NU_CHECK_MSG(rc == 128 + SIGKILL && killed_rows < steps, "the run was not killed mid-way (exit %d, %d rows)", rc,
                 killed_rows);
    s = ckpt_meta(tp("B/checkpoint.safetensors"), "step");
    int ck = s ? atoi(s) : -1;
    free(s);
    NU_CHECK_MSG(ck >= 10 && ck % 10 == 0 && ck <= killed_rows, "killed run: checkpoint at step %d, %d rows", ck,
                 killed_rows);
    argl r = {0};
    add(&r, "train", "--out", tp("B"), "--resume", "-t", "1", "-q", NULL);
    CHECK_RUN(&r, 0);
    char *ca = csv_core(tp("A/log.csv")), *cb = csv_core(tp("B/log.csv"));
    NU_CHECK_MSG(ca && cb && strcmp(ca, cb) == 0, "resumed log.csv differs from the uninterrupted one:\n--- A\n%.600s\n--- B\n%.600s",
                 ca ? ca : "", cb ? cb : "");
    free(ca);
    free(cb);
    size_t la = 0, lb = 0;
    char *ka = slurp(tp("A/checkpoint.safetensors"), &la), *kb = slurp(tp("B/checkpoint.safetensors"), &lb);
    NU_CHECK_MSG(ka && kb && la == lb && memcmp(ka, kb, la) == 0,
                 "final checkpoints of the resumed and uninterrupted runs differ (%zu vs %zu bytes)", la, lb);
    free(ka);
    free(kb);
    printf("  killed at %d of %d steps (checkpoint at %d); resumed log and final checkpoint identical to the "
           "uninterrupted run\n", killed_rows, steps, ck);

    /* a changed flag on --resume is refused; the finished run has nothing to do */
    argl r2 = {0};
    add(&r2, "train", "--out", tp("B"), "--resume", "--lr", "0.5", NULL);
    CHECK_RUN(&r2, 2);
    NU_CHECK_MSG(output_has("--lr") && output_has("cannot change"), "%s", last_output);
    argl r3 = {0};
    add(&r3, "train", "--out", tp("B"), "--resume", "-q", NULL);
    CHECK_RUN(&r3, 0);
    NU_CHECK_MSG(output_has("nothing to do"), "%s", last_output);
    /* a new run into an existing run folder is refused */
    argl r4 = {0};
    tiny(&r4, data, tp("A"), "5");
    CHECK_RUN(&r4, 1);
    NU_CHECK_MSG(output_has("already holds a run"), "%s", last_output);

    /* SIGTERM: checkpoint at the last logged step, exit 130 */
    argl c = {0};
    tiny(&c, data, tp("C"), "100000");
    add(&c, "--ckpt-every", "0", "--sample-every", "0", NULL);
    pid = spawn(&c, tp("C.out"));
    t0 = now_s();
    while (now_s() - t0 < 60 && csv_rows(tp("C/log.csv")) < 5) usleep(1000);
    kill(pid, SIGTERM);
    rc = wait_rc(pid);
    char *out = slurp(tp("C.out"), NULL);
    NU_CHECK_MSG(rc == 130 && out && strstr(out, "stopped at step"), "SIGTERM: exit %d, output %s", rc, out ? out : "");
    free(out);
    s = ckpt_meta(tp("C/checkpoint.safetensors"), "step");
    NU_CHECK_MSG(s && atoi(s) == csv_rows(tp("C/log.csv")), "SIGTERM: checkpoint step %s, %d log rows", s ? s : "-",
                 csv_rows(tp("C/log.csv")));
    free(s);

    /* export of a checkpoint as a weights file */
    argl e = {0};
    add(&e, "train", "--export", tp("B"), "-o", tp("exported.safetensors"), "--dtype", "bf16", NULL);
    CHECK_RUN(&e, 0);
    NU_CHECK(exists(tp("exported.safetensors")));
}

static void test_generate(void) {
    argl a = {0};
    add(&a, "generate", "-m", tp("A"), "-p", "Stripes", "-b", "3", "-o", tp("%s", "gen-%02d-100%%.png"), "--steps", "4", "-t", "1",
        NULL);
    CHECK_RUN(&a, 0);
    for (int i = 0; i < 3; i++) {
        char p[64];
        snprintf(p, sizeof p, "gen-%02d-100%%.png", i); /* "%%" in the pattern is a literal % (sd.cpp) */
        nu_image im;
        NU_CHECK_MSG(nu_image_load(tp("%s", p), &im) == NU_OK, "generate: %s missing (%s)", p, last_output);
        if (im.pixels) {
            NU_CHECK(im.width == 16 && im.height == 16 && im.channels == 1);
            nu_image_free(&im);
        }
    }
    argl b = {0};
    add(&b, "generate", "-m", tp("A/checkpoint.safetensors"), "-p", "all", "-b", "2", "-o", tp("g.png"), "--grid",
        tp("grid.png"), "--steps", "3", "--sampling-method", "euler", "--cfg-scale", "2", "-t", "1", NULL);
    CHECK_RUN(&b, 0);
    for (int i = 1; i <= 6; i++) NU_CHECK_MSG(exists(tp("g_%d.png", i)), "g_%d.png missing", i);
    nu_image im;
    if (nu_image_load(tp("grid.png"), &im) == NU_OK) {
        NU_CHECK_MSG(im.height >= 3 * 32, "grid %dx%d", im.width, im.height); /* 3 rows of 2x-scaled cells */
        nu_image_free(&im);
    } else
        NU_CHECK_MSG(0, "grid.png not written: %s", last_output);
    argl c = {0};
    add(&c, "generate", "-m", tp("A"), "-p", "circle", NULL);
    CHECK_RUN(&c, 1);
    NU_CHECK_MSG(output_has("'circle' is not a class") && output_has("square"), "%s", last_output);
    argl d = {0};
    add(&d, "generate", "-m", tp("nothing.safetensors"), "-p", "1", NULL);
    NU_CHECK(run(&d) != 0 && output_has("nothing.safetensors"));
}

static void test_bad_input(void) {
    const char *data = tp("data");
    argl a = {0};
    tiny(&a, tp("no-such-folder"), tp("X1"), "3");
    CHECK_RUN(&a, 1);
    NU_CHECK_MSG(output_has("no-such-folder"), "missing dataset: %s", last_output);

    mkdir(tp("empty"), 0755);
    argl b = {0};
    tiny(&b, tp("empty"), tp("X2"), "3");
    CHECK_RUN(&b, 1);
    NU_CHECK_MSG(output_has("empty"), "empty folder: %s", last_output);

    /* one 12x12 image among 16x16 ones: named when its batch is decoded */
    make_dataset(tp("data_size"), 4);
    write_image(tp("data_size/square/odd.png"), 2, 99, 12, 1);
    argl c = {0};
    tiny(&c, tp("data_size"), tp("X3"), "12");
    add(&c, "--ckpt-every", "1", "--sample-every", "0", NULL);
    CHECK_RUN(&c, 1);
    NU_CHECK_MSG(output_has("odd.png") && output_has("step"), "wrong size: %s", last_output);
    NU_CHECK_MSG(!exists(tp("X3/model.safetensors")), "a failed run must not write model.safetensors");

    /* an RGB image among gray ones */
    make_dataset(tp("data_rgb"), 4);
    write_image(tp("data_rgb/bars/zz-colour.png"), 0, 77, 16, 3); /* after the gray img*.png */
    argl d = {0};
    tiny(&d, tp("data_rgb"), tp("X4"), "12");
    add(&d, "--sample-every", "0", NULL);
    CHECK_RUN(&d, 1);
    NU_CHECK_MSG(output_has("zz-colour.png"), "wrong channels: %s", last_output);

    /* a truncated checkpoint is named and left as it is */
    size_t len = 0;
    char *ck = slurp(tp("A/checkpoint.safetensors"), &len);
    mkdir(tp("X5"), 0755);
    FILE *f = fopen(tp("X5/checkpoint.safetensors"), "wb");
    if (f && ck) fwrite(ck, 1, len / 2, f);
    if (f) fclose(f);
    free(ck);
    argl e = {0};
    add(&e, "train", "--out", tp("X5"), "--resume", NULL);
    CHECK_RUN(&e, 1);
    NU_CHECK_MSG(output_has("X5/checkpoint.safetensors"), "truncated: %s", last_output);
    struct stat sb;
    NU_CHECK(stat(tp("X5/checkpoint.safetensors"), &sb) == 0 && (size_t)sb.st_size == len / 2);

    /* weights of another model */
    argl g = {0};
    add(&g, "train", "--data", data, "--out", tp("X6"), "--model", "dit", "--patch", "4", "--depth", "1", "--heads", "2",
        "--head-dim", "8", "--batch", "4", "--steps", "2", "-t", "1", "-q", "--init-weights",
        tp("A/checkpoint.safetensors"), NULL);
    CHECK_RUN(&g, 1);
    NU_CHECK_MSG(output_has("A/checkpoint.safetensors") && (output_has("pos_embed") || output_has("transformer_blocks") ||
                                                             output_has("proj_out")),
                 "another model: %s", last_output);

    /* unknown config key */
    f = fopen(tp("bad.json"), "wb");
    if (f) {
        fputs("{\"train\": {\"stepz\": 10}}", f);
        fclose(f);
    }
    argl h = {0};
    add(&h, "train", "--config", tp("bad.json"), "--data", data, "--out", tp("X7"), NULL);
    CHECK_RUN(&h, 1);
    NU_CHECK_MSG(output_has("bad.json") && output_has("stepz"), "unknown key: %s", last_output);

    /* a good config file */
    f = fopen(tp("good.json"), "wb");
    if (f) {
        fputs("{\"model\": {\"arch\": \"dit\", \"patch_size\": 4, \"num_layers\": 1, \"num_attention_heads\": 2, "
              "\"attention_head_dim\": 8},\n \"objective\": {\"objective\": \"flow\"},\n \"train\": {\"steps\": 3, "
              "\"batch\": 4, \"seed\": 1}, \"sample\": {\"every\": 0}}",
              f);
        fclose(f);
    }
    argl i = {0};
    add(&i, "train", "--config", tp("good.json"), "--data", data, "--out", tp("X8"), "-t", "1", "-q", NULL);
    CHECK_RUN(&i, 0);
    NU_CHECK_MSG(csv_rows(tp("X8/log.csv")) == 3, "config run: %d rows", csv_rows(tp("X8/log.csv")));
    char *cfg = slurp(tp("X8/config.json"), NULL);
    NU_CHECK_MSG(cfg && strstr(cfg, "\"dit\"") && strstr(cfg, "\"flow\""), "config.json: %s", cfg ? cfg : "");
    free(cfg);

    /* NaN loss: a huge learning rate blows the weights up; the run stops, keeps the checkpoint of
     * the last good step and its log rows */
    argl n = {0};
    add(&n, "train", "--data", data, "--out", tp("X9"), "--widths", "8,16", "--attn", "0,1", "--layers", "1", "--groups",
        "4", "--head-dim", "8", "--batch", "4", "--steps", "50", "--lr", "1e30", "--warmup", "0", "--clip", "0",
        "--ckpt-every", "1", "--sample-every", "0", "-t", "1", "-q", NULL);
    CHECK_RUN(&n, 1);
    NU_CHECK_MSG(output_has("not finite") || output_has("NaN") || output_has("nan") || output_has("inf"), "NaN: %s",
                 last_output);
    NU_CHECK_MSG(output_has("last good checkpoint"), "NaN: %s", last_output);
    char *s = ckpt_meta(tp("X9/checkpoint.safetensors"), "step");
    int rows = csv_rows(tp("X9/log.csv"));
    NU_CHECK_MSG(s && atoi(s) == rows && rows >= 1 && rows < 50, "NaN: checkpoint at step %s, %d log rows", s ? s : "-",
                 rows);
    const char *msg = strstr(last_output, "nuance train: loss");
    printf("  NaN loss stopped the run after step %d: %.*s\n", rows, msg ? (int)strcspn(msg, "\n") : 0, msg ? msg : "");
    free(s);
}

int main(void) {
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0) return 77;
    self[k] = 0;
    char *sl = strrchr(self, '/');
    if (sl) *sl = 0;
    if (snprintf(exe, sizeof exe, "%s/../nuance", self) >= (int)sizeof exe || access(exe, X_OK) != 0) {
        printf("test_train_cli: SKIP (the nuance executable is not built at %s)\n", exe);
        return 77;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nu_test_train_cli_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    make_dataset(tp("data"), 8);
    test_train_resume(nu_test_quick() ? 24 : 40);
    test_generate();
    test_bad_input();
    int rc = nu_test_summary("test_train_cli");
    if (rc == 0) rm_rf(tmpdir);
    else printf("test_train_cli: outputs kept in %s\n", tmpdir);
    for (int i = 0; i < n_paths; i++) free(paths[i]);
    return rc;
}
