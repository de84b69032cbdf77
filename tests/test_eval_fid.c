/*
 * test_eval_fid.c — end-to-end conformance of `nuance eval` (tools/cli/eval.c over the library):
 * pytorch-fid's folder FID of ../shared/reference/inception_fid (folder_a: 40 images 64x64,
 * folder_b: 32 images 56x72, random-weight InceptionV3 in F16) must come out as 200.764757
 * within 1e-3 relative (the tolerance; the reference README measures 4.8e-7 between f32
 * and f64 networks, so the margin covers our f32 network and BN folding).
 *
 * Runs the built CLI (beside this test: <build>/nuance) without a shell, once per folder:
 *   eval stats folder_a -o a.npz --features      eval stats folder_b -o b.npz --features
 *   eval fid a.npz b.npz  (== the folder FID: same features)   eval kid / pr on the files
 * plus the user-facing error paths on tiny folders: a corrupt image stops the run naming the
 * file, --skip-bad skips it, mixed image sizes and modes work, an empty folder and --dims 768
 * are refused. Takes ~15-25 s on a shared 2-core machine (72 InceptionV3 evaluations); skipped
 * under NU_TEST_QUICK (the sanitizer run), where it would take minutes.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nu_test.h"
#include "nuance/metrics.h"

extern char **environ;

static char cli[4096], tmpdir[64], out_path[128], err_path[128];
static char out_text[65536], err_text[65536];

static void slurp(const char *path, char *buf, size_t cap) {
    buf[0] = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return;
    size_t n = fread(buf, 1, cap - 1, fp);
    buf[n] = 0;
    fclose(fp);
}

/* Runs the CLI with args (NULL-terminated); stdout/stderr captured in out_text/err_text. */
static int run_cli(const char *const *args) {
    const char *argv[32];
    int n = 0;
    argv[n++] = cli;
    for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, cli, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "cannot run %s: %s\n", cli, strerror(rc));
        return -1;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    slurp(out_path, out_text, sizeof out_text);
    slurp(err_path, err_text, sizeof err_text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static double parse_after(const char *text, const char *key) {
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : NAN;
}

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    size_t n;
    while (a && b && (n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
    if (a) fclose(a);
    if (b) fclose(b);
}

int main(void) {
    const char *shared = nu_test_require_shared("the end-to-end folder FID");
    if (nu_test_quick()) {
        printf("skipped: 72 InceptionV3 evaluations are too slow under NU_TEST_QUICK (sanitizers)\n");
        return 77;
    }
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        fprintf(stderr, "cannot locate this test's binary\n");
        return 1;
    }
    self[len] = 0;
    snprintf(cli, sizeof cli, "%s/../nuance", dirname(self)); /* <build>/tests/.. */
    if (access(cli, X_OK) != 0) {
        fprintf(stderr, "FAIL: the nuance CLI is not built at %s\n", cli);
        return 1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nu_test_eval_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    snprintf(out_path, sizeof out_path, "%s/stdout.txt", tmpdir);
    snprintf(err_path, sizeof err_path, "%s/stderr.txt", tmpdir);
    char ref[4300], fa[4400], fb[4400], w[4400], a_npz[128], b_npz[128];
    snprintf(ref, sizeof ref, "%s/reference/inception_fid", shared);
    snprintf(fa, sizeof fa, "%s/folder_a", ref);
    snprintf(fb, sizeof fb, "%s/folder_b", ref);
    snprintf(w, sizeof w, "%s/inception_fid_weights_f16.safetensors", ref);
    snprintf(a_npz, sizeof a_npz, "%s/a.npz", tmpdir);
    snprintf(b_npz, sizeof b_npz, "%s/b.npz", tmpdir);

    /* statistics (and features) of both folders: the network runs here */
    int rc = run_cli((const char *[]){"eval", "stats", fa, "-o", a_npz, "--features", "--weights", w, "--quiet", NULL});
    NU_CHECK_MSG(rc == 0 && strstr(out_text, "from 40 images"), "stats folder_a: rc %d\n%s%s", rc, out_text, err_text);
    rc = run_cli((const char *[]){"eval", "stats", fb, "-o", b_npz, "--features", "--weights", w, "--quiet", NULL});
    NU_CHECK_MSG(rc == 0 && strstr(out_text, "from 32 images"), "stats folder_b: rc %d\n%s%s", rc, out_text, err_text);

    /* FID from the two statistics files == FID of the folders */
    rc = run_cli((const char *[]){"eval", "fid", a_npz, b_npz, NULL});
    double fid = parse_after(out_text, "FID:");
    const double want = 200.76475700976982; /* refs.json fid_dirs.value (pytorch-fid) */
    NU_CHECK_MSG(rc == 0 && fabs(fid - want) <= 1e-3 * want, "folder FID %.9g, pytorch-fid %.9g (rel err %.3g)\n%s",
                 fid, want, fabs(fid - want) / want, err_text);
    printf("nuance eval fid folder_a folder_b: %.6f (pytorch-fid %.6f, rel err %.2g; tolerance 1e-3)\n", fid, want,
           fabs(fid - want) / want);

    /* the stats file holds pytorch-fid's layout */
    nu_fid_stats s;
    NU_CHECK(nu_fid_stats_load(a_npz, &s) == NU_OK && s.dim == 2048);
    nu_fid_stats_free(&s);

    /* KID and PR on the saved features: run and print sane values */
    rc = run_cli((const char *[]){"eval", "kid", a_npz, b_npz, "--subsets", "20", NULL});
    double kid = parse_after(out_text, "KID:");
    NU_CHECK_MSG(rc == 0 && isfinite(kid) && strstr(out_text, "subsets of 32"), "kid: rc %d\n%s%s", rc, out_text,
                 err_text);
    rc = run_cli((const char *[]){"eval", "pr", a_npz, b_npz, "-k", "3", NULL});
    double prec = parse_after(out_text, "precision:"), rec = parse_after(out_text, "recall:");
    NU_CHECK_MSG(rc == 0 && prec >= 0 && prec <= 1 && rec >= 0 && rec <= 1, "pr: rc %d\n%s%s", rc, out_text, err_text);
    printf("kid %.6g, precision %.4f, recall %.4f (folder_a vs folder_b)\n", kid, prec, rec);

    /* user errors: bad --dims, missing folder, empty folder, corrupt image, mixed sizes */
    rc = run_cli((const char *[]){"eval", "fid", a_npz, b_npz, "--dims", "768", NULL});
    NU_CHECK_MSG(rc == 2 && strstr(err_text, "2048"), "--dims 768: rc %d: %s", rc, err_text);
    char mixed[160], img[4500], dst[200];
    snprintf(mixed, sizeof mixed, "%s/mixed", tmpdir);
    mkdir(mixed, 0755);
    rc = run_cli((const char *[]){"eval", "fid", mixed, a_npz, "--weights", w, NULL});
    NU_CHECK_MSG(rc == 1 && strstr(err_text, "no images"), "empty folder: rc %d: %s", rc, err_text);
    static const char *pick[3] = {"img1.png", "img2.png", "img6.png"}; /* 64x64 RGB, 300x400 RGB, 80x80 LA */
    for (int i = 0; i < 3; i++) {
        snprintf(img, sizeof img, "%s/images/%s", ref, pick[i]);
        snprintf(dst, sizeof dst, "%s/%s", mixed, pick[i]);
        copy_file(img, dst);
    }
    snprintf(dst, sizeof dst, "%s/img9_corrupt.png", mixed);
    FILE *fp = fopen(dst, "wb");
    fputs("\x89PNG\r\n\x1a\n this is not a PNG", fp);
    fclose(fp);
    snprintf(dst, sizeof dst, "%s/notes.txt", mixed); /* not an image extension: ignored */
    fp = fopen(dst, "wb");
    fputs("hello", fp);
    fclose(fp);
    rc = run_cli((const char *[]){"eval", "stats", mixed, "-o", a_npz, "--weights", w, "--quiet", NULL});
    NU_CHECK_MSG(rc == 1 && strstr(err_text, "img9_corrupt.png") && strstr(err_text, "--skip-bad"),
                 "corrupt image: rc %d: %s", rc, err_text);
    rc = run_cli((const char *[]){"eval", "stats", mixed, "-o", a_npz, "--weights", w, "--quiet", "--skip-bad", NULL});
    NU_CHECK_MSG(rc == 0 && strstr(out_text, "from 3 images") && strstr(err_text, "skipped 1"),
                 "--skip-bad with mixed sizes: rc %d\n%s%s", rc, out_text, err_text);
    rc = run_cli((const char *[]){"eval", "fid", "/nonexistent_folder", a_npz, "--weights", w, NULL});
    NU_CHECK_MSG(rc == 1 && strstr(err_text, "/nonexistent_folder"), "missing folder: rc %d: %s", rc, err_text);

    /* clean up */
    static const char *files[] = {"mixed/img1.png", "mixed/img2.png", "mixed/img6.png", "mixed/img9_corrupt.png",
                                  "mixed/notes.txt", "a.npz", "b.npz", "stdout.txt", "stderr.txt"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(dst, sizeof dst, "%s/%s", tmpdir, files[i]);
        unlink(dst);
    }
    rmdir(mixed);
    rmdir(tmpdir);
    return nu_test_summary("test_eval_fid");
}
