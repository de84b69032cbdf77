/* nu_test.c — implementation of the test harness (see nu_test.h). */
#include "nu_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int nu_test_failures = 0;
int nu_test_checks = 0;

static void print_first(const char *label, const float *x, int64_t n) {
    fprintf(stderr, "    %s:", label);
    for (int64_t i = 0; i < n && i < 6; i++) fprintf(stderr, " %.7g", x[i]);
    fprintf(stderr, "\n");
}

bool nu_test_close(const char *name, const float *got, const float *want, int64_t n, double atol, double rtol) {
    nu_test_checks++;
    double max_abs = 0, max_rel = 0;
    int64_t worst = -1, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        if (isnan(g) && isnan(w)) continue;
        double d = fabs(g - w);
        if (isnan(d)) d = INFINITY;
        double rel = d / (fabs(w) > 1e-30 ? fabs(w) : 1e-30);
        if (!(d <= atol + rtol * fabs(w))) {
            bad++;
            if (worst < 0 || d > max_abs) worst = i;
        }
        if (d > max_abs) max_abs = d;
        if (d > 1e-30 && rel > max_rel && fabs(w) > atol) max_rel = rel;
    }
    if (bad == 0) return true;
    nu_test_failures++;
    fprintf(stderr, "FAIL %s: %lld/%lld values out of tolerance (atol %g, rtol %g); max abs err %.3g, max rel err %.3g\n",
            name, (long long)bad, (long long)n, atol, rtol, max_abs, max_rel);
    fprintf(stderr, "    worst at index %lld: got %.8g want %.8g\n", (long long)worst, got[worst], want[worst]);
    print_first("got ", got, n);
    print_first("want", want, n);
    return false;
}

bool nu_test_nmse(const char *name, const float *got, const float *want, int64_t n, double tol) {
    nu_test_checks++;
    double num = 0, den = 0, max_abs = 0;
    int64_t worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
        if (fabs(d) > max_abs || isnan(d)) { max_abs = fabs(d); worst = i; }
    }
    double nmse = den > 0 ? num / den : num;
    if (getenv("NU_TEST_VERBOSE")) fprintf(stderr, "%s: NMSE %.3g (tolerance %.3g)\n", name, nmse, tol);
    if (nmse <= tol) return true;
    nu_test_failures++;
    fprintf(stderr, "FAIL %s: NMSE %.3g > %.3g; max abs err %.3g at index %lld (got %.8g want %.8g)\n", name, nmse, tol,
            max_abs, (long long)worst, got[worst], want[worst]);
    print_first("got ", got, n);
    print_first("want", want, n);
    return false;
}

bool nu_test_equal(const char *name, const float *got, const float *want, int64_t n) {
    nu_test_checks++;
    for (int64_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            nu_test_failures++;
            fprintf(stderr, "FAIL %s: not bit-identical at index %lld of %lld: got %.9g want %.9g\n", name, (long long)i,
                    (long long)n, got[i], want[i]);
            return false;
        }
    }
    return true;
}

const char *nu_test_shared_dir(void) {
    static char buf[4096];
    const char *env = getenv("NU_SHARED_DIR");
    struct stat st;
    if (env && *env) {
        snprintf(buf, sizeof buf, "%s", env);
    } else {
        snprintf(buf, sizeof buf, "%s/../shared", NU_SOURCE_DIR);
    }
    char ref[4200];
    snprintf(ref, sizeof ref, "%s/reference", buf);
    if (stat(ref, &st) != 0 || !S_ISDIR(st.st_mode)) return NULL;
    return buf;
}

const char *nu_test_require_shared(const char *what) {
    const char *d = nu_test_shared_dir();
    if (!d) {
        printf("skipped: %s needs ../shared/reference (present in CI, not in a user's clone)\n", what);
        exit(77);
    }
    return d;
}

const char *nu_test_fixture(const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/tests/fixtures/%s", NU_SOURCE_DIR, name);
    return buf;
}

uint8_t *nu_test_read_file(const char *path, size_t *size) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    long n = -1;
    if (fseek(fp, 0, SEEK_END) == 0) n = ftell(fp);
    if (n < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return NULL;
    }
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, fp) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(fp);
    *size = (size_t)n;
    return b;
}

bool nu_test_quick(void) {
    const char *q = getenv("NU_TEST_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

void nu_test_fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17; /* xorshift64 */
        x[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
}

int nu_test_summary(const char *test_name) {
    printf("%s: %d passed, %d failed\n", test_name, nu_test_checks - nu_test_failures, nu_test_failures);
    return nu_test_failures ? 1 : 0;
}

void nu_test_eval(nu_ctx *ctx, nu_tensor *y, float *out, int n_threads, bool use_ref) {
    (void)ctx;
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, y);
    nu_pool *pool = nu_pool_new(n_threads);
    nu_compute_opts o = {.use_ref = use_ref};
    nu_status s = nu_graph_compute_opts(g, pool, &o);
    if (s != NU_OK) {
        fprintf(stderr, "compute failed: %s\n", nu_last_error());
        abort();
    }
    nu_tensor_get_f32(y, out);
    nu_pool_free(pool);
    nu_graph_free(g);
}

bool nu_test_gradcheck(const char *name, nu_test_build_fn build, nu_tensor **inputs, int n_inputs, void *user,
                       float eps, double tol, int max_elems) {
    nu_test_checks++;
    nu_ctx_params cp = nu_ctx_params_init();
    cp.alloc_data = false;
    nu_ctx *ctx = nu_ctx_new(&cp);
    nu_tensor *y = build(ctx, inputs, user);
    nu_ctx_set_alloc_data(ctx, true);
    nu_tensor *r = nu_new_tensor(ctx, NU_TYPE_F32, y->ndim, y->ne);
    int64_t ny = nu_nelements(y);
    float *rv = malloc(sizeof(float) * (size_t)(ny ? ny : 1));
    nu_test_fill_uniform(rv, ny, 12345, -1.f, 1.f);
    nu_tensor_set_f32(r, rv);
    free(rv);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *loss = nu_sum_all(ctx, nu_mul(ctx, y, r));
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, loss);
    nu_graph_backward(g, loss);
    nu_pool *pool = nu_pool_new(1);
    if (nu_graph_compute(g, pool) != NU_OK) {
        fprintf(stderr, "FAIL %s: compute failed: %s\n", name, nu_last_error());
        nu_test_failures++;
        return false;
    }
    /* Copy every analytic gradient first: the finite differences below recompute the graph. */
    bool ok = true;
    float *ana[16] = {0};
    NU_ASSERT(n_inputs <= 16);
    for (int k = 0; k < n_inputs; k++) {
        nu_tensor *x = inputs[k];
        if (!(x->flags & NU_FLAG_PARAM)) continue;
        if (!x->grad) {
            fprintf(stderr, "FAIL %s: input %d (%s) got no gradient\n", name, k, x->name);
            ok = false;
            continue;
        }
        ana[k] = malloc(sizeof(float) * (size_t)nu_nelements(x));
        nu_tensor_get_f32(x->grad, ana[k]);
    }
    for (int k = 0; k < n_inputs && ok; k++) {
        nu_tensor *x = inputs[k];
        if (!ana[k]) continue;
        int64_t n = nu_nelements(x);
        float *xv = malloc(sizeof(float) * (size_t)n);
        nu_tensor_get_f32(x, xv);
        int64_t step = n > max_elems ? n / max_elems : 1;
        for (int64_t i = 0; i < n; i += step) {
            float orig = xv[i];
            float lp, lm;
            xv[i] = orig + eps;
            nu_tensor_set_f32(x, xv);
            nu_graph_compute(g, pool);
            nu_tensor_get_f32(loss, &lp);
            xv[i] = orig - eps;
            nu_tensor_set_f32(x, xv);
            nu_graph_compute(g, pool);
            nu_tensor_get_f32(loss, &lm);
            xv[i] = orig;
            nu_tensor_set_f32(x, xv);
            double num = ((double)lp - lm) / (2.0 * eps);
            if (!(fabs(num - ana[k][i]) <= tol * (1.0 + fabs(num)))) {
                fprintf(stderr, "FAIL %s: d loss / d input%d[%lld]: analytic %.6g, finite difference %.6g\n", name, k,
                        (long long)i, ana[k][i], num);
                ok = false;
                break;
            }
        }
        free(xv);
    }
    for (int k = 0; k < n_inputs; k++) free(ana[k]);
    nu_pool_free(pool);
    nu_graph_free(g);
    nu_ctx_free(ctx);
    if (!ok) nu_test_failures++;
    return ok;
}
