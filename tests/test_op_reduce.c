/*
 * test_op_reduce.c — tests of the reduce op family (src/ops/op_reduce.c, src/cpu/k_reduce.c):
 *   1. fast (AVX2) vs scalar reference twins and 1 vs 2 threads, forward and backward, over odd
 *      sizes, the chunked (sum_all) and inner-dim paths, and strided inputs (transpose, slice);
 *   2. PyTorch fixtures (scripts/fixtures_reduce.py -> tests/fixtures/reduce.safetensors):
 *      sum / mean / max along dims with keepdim (max with ties), sum_all, mean_all, softmax,
 *      cross_entropy, mse_loss — outputs and input gradients;
 *   3. finite-difference gradient checks (nu_test_gradcheck) of every differentiable op.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "nu_test.h"
#include "nuance/io.h"

/* ================================================================ 1. fast vs reference */

enum { V_NONE, V_TRANSPOSE, V_SLICE };
enum { K_SUM, K_MAX, K_SOFTMAX, K_CE, K_MEAN_ALL };

typedef struct {
    const char *name;
    int kind, ndim;
    int64_t ne[4];
    int dim, view;
    bool grad; /* output dL/dx of loss = sum(y * r) instead of y */
} rcase;

/* x with logical shape c->ne, contiguous or a strided view of a larger leaf (the leaf is the
 * PARAM when c->grad). Values uniform in [-2, 2) from `seed`. */
static nu_tensor *make_input(nu_ctx *ctx, const rcase *c, uint64_t seed, nu_tensor **leaf) {
    int64_t ne[4];
    memcpy(ne, c->ne, sizeof ne);
    int nd = c->ndim;
    if (c->view == V_TRANSPOSE) {
        int64_t t = ne[nd - 1];
        ne[nd - 1] = ne[nd - 2];
        ne[nd - 2] = t;
    } else if (c->view == V_SLICE) {
        ne[nd - 1] += 3;
    }
    nu_tensor *b = nu_new_tensor(ctx, NU_TYPE_F32, nd, ne);
    int64_t n = nu_nelements(b);
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    nu_test_fill_uniform(v, n, seed, -2.f, 2.f);
    nu_tensor_set_f32(b, v);
    free(v);
    nu_set_name(b, "x");
    if (c->grad) nu_set_param(b);
    *leaf = b;
    if (c->view == V_TRANSPOSE) return nu_transpose(ctx, b, -1, -2);
    if (c->view == V_SLICE) return nu_slice(ctx, b, -1, 1, 1 + c->ne[nd - 1]);
    return b;
}

/* Runs case c; writes its output (y, or the gradient of the leaf) to out; returns its size. */
static int64_t run_case(const rcase *c, float *out, int nth, bool ref) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *leaf, *x = make_input(ctx, c, 7, &leaf), *y = NULL;
    switch (c->kind) {
    case K_SUM: y = nu_sum(ctx, x, c->dim, true); break;
    case K_MAX: y = nu_max(ctx, x, c->dim, false); break;
    case K_SOFTMAX: y = nu_softmax(ctx, x); break;
    case K_MEAN_ALL: y = nu_mean_all(ctx, x); break;
    case K_CE: {
        nu_tensor *t = nu_new_tensor_1d(ctx, NU_TYPE_I32, c->ne[0]);
        for (int64_t i = 0; i < c->ne[0]; i++) ((int32_t *)t->data)[i] = (int32_t)((i * 7 + 3) % c->ne[1]);
        y = nu_cross_entropy(ctx, x, t);
        break;
    }
    }
    nu_tensor *target = y;
    nu_graph *g = nu_graph_new(ctx);
    if (c->grad) {
        nu_tensor *r = nu_new_tensor(ctx, NU_TYPE_F32, y->ndim, y->ne);
        int64_t n = nu_nelements(y);
        float *rv = malloc(sizeof(float) * (size_t)n);
        nu_test_fill_uniform(rv, n, 99, -1.f, 1.f);
        nu_tensor_set_f32(r, rv);
        free(rv);
        nu_tensor *loss = nu_sum_all(ctx, nu_mul(ctx, y, r));
        nu_graph_expand(g, loss);
        nu_graph_backward(g, loss);
        target = leaf->grad;
    } else {
        nu_graph_expand(g, y);
    }
    nu_pool *pool = nu_pool_new(nth);
    nu_compute_opts o = {.use_ref = ref};
    nu_status s = nu_graph_compute_opts(g, pool, &o);
    NU_CHECK_MSG(s == NU_OK, "%s: compute failed: %s", c->name, nu_last_error());
    int64_t n = nu_nelements(target);
    nu_tensor_get_f32(target, out);
    nu_pool_free(pool);
    nu_graph_free(g);
    nu_ctx_free(ctx);
    return n;
}

static void test_fast_vs_ref(void) {
    const int64_t big = nu_test_quick() ? 8200 : 20000;
    const rcase cases[] = {
        {"sum rows", K_SUM, 2, {7, 33}, 1, V_NONE, false},
        {"sum cols (inner fast)", K_SUM, 2, {7, 37}, 0, V_NONE, false},
        {"sum mid dim", K_SUM, 3, {3, 5, 40}, 1, V_NONE, false},
        {"sum short rows", K_SUM, 3, {3, 17, 5}, 2, V_NONE, false},
        {"sum chunked", K_SUM, 2, {2, 9000}, 1, V_NONE, false},
        {"sum all 1-D", K_SUM, 1, {big}, 0, V_NONE, false},
        {"sum transposed rows", K_SUM, 2, {19, 23}, 1, V_TRANSPOSE, false},
        {"sum transposed cols", K_SUM, 3, {2, 21, 18}, 1, V_TRANSPOSE, false},
        {"sum sliced", K_SUM, 3, {2, 6, 35}, 2, V_SLICE, false},
        {"sum sliced dim0", K_SUM, 3, {4, 6, 35}, 0, V_SLICE, false},
        {"sum grad", K_SUM, 3, {3, 5, 9}, 1, V_NONE, true},
        {"mean_all grad", K_MEAN_ALL, 3, {3, 50, 70}, 0, V_TRANSPOSE, true},
        {"max rows", K_MAX, 2, {7, 45}, 1, V_NONE, false},
        {"max cols (inner fast)", K_MAX, 2, {9, 40}, 0, V_NONE, false},
        {"max mid dim", K_MAX, 3, {3, 5, 19}, 1, V_NONE, false},
        {"max transposed", K_MAX, 2, {13, 17}, 1, V_TRANSPOSE, false},
        {"max sliced", K_MAX, 3, {2, 3, 29}, 2, V_SLICE, false},
        {"max grad", K_MAX, 3, {3, 6, 17}, 1, V_NONE, true},
        {"max grad transposed", K_MAX, 2, {5, 11}, 0, V_TRANSPOSE, true},
        {"softmax", K_SOFTMAX, 2, {5, 37}, -1, V_NONE, false},
        {"softmax short", K_SOFTMAX, 2, {4, 3}, -1, V_NONE, false},
        {"softmax one", K_SOFTMAX, 2, {4, 1}, -1, V_NONE, false},
        {"softmax long", K_SOFTMAX, 3, {2, 3, 129}, -1, V_NONE, false},
        {"softmax transposed", K_SOFTMAX, 3, {2, 17, 21}, -1, V_TRANSPOSE, false},
        {"softmax sliced", K_SOFTMAX, 2, {6, 20}, -1, V_SLICE, false},
        {"softmax grad", K_SOFTMAX, 3, {2, 5, 33}, -1, V_NONE, true},
        {"softmax grad transposed", K_SOFTMAX, 2, {9, 19}, -1, V_TRANSPOSE, true},
        {"cross entropy", K_CE, 2, {9, 21}, 0, V_NONE, false},
        {"cross entropy grad", K_CE, 2, {9, 21}, 0, V_NONE, true},
        {"cross entropy grad transposed", K_CE, 2, {11, 7}, 0, V_TRANSPOSE, true},
    };
    size_t cap = (size_t)3 * 50 * 70 + 64;
    if (cap < (size_t)big + 64) cap = (size_t)big + 64;
    float *r1 = malloc(cap * 4), *r2 = malloc(cap * 4), *f1 = malloc(cap * 4), *f2 = malloc(cap * 4);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const rcase *c = &cases[i];
        char nm[160];
        int64_t n = run_case(c, r1, 1, true);
        run_case(c, r2, 2, true);
        run_case(c, f1, 1, false);
        run_case(c, f2, 2, false);
        /* Every output is computed by one thread in a fixed order (sum_all splits in fixed
         * chunks), so 1 and 2 threads agree bit for bit on both paths. */
        snprintf(nm, sizeof nm, "%s: ref 1 vs 2 threads", c->name);
        nu_test_equal(nm, r2, r1, n);
        snprintf(nm, sizeof nm, "%s: fast 1 vs 2 threads", c->name);
        nu_test_equal(nm, f2, f1, n);
        snprintf(nm, sizeof nm, "%s: fast vs ref", c->name);
        if (c->kind == K_MAX) {
            nu_test_equal(nm, f1, r1, n); /* max (and its gradient routing) is exact */
        } else if (c->kind == K_SUM || c->kind == K_MEAN_ALL) {
            /* both paths accumulate in double; they differ only in the order of double adds
             * (~1e-16 relative), so after rounding to f32 at most 1 ulp apart */
            nu_test_close(nm, f1, r1, n, 1e-9, 1.2e-7);
        } else {
            /* softmax / cross entropy: exp_fast has relative error <= 7.9e-8 (vs expf ~0.5 ulp),
             * the fast row sum is in f32 over 8 lanes (<= 17 adds of positive terms per lane for
             * n = 129: <= 1e-6 relative worst case); the gradients (y * (dy - s),
             * softmax - onehot) inherit this on O(1) values */
            nu_test_close(nm, f1, r1, n, 2e-7, 2e-6);
        }
    }
    free(r1);
    free(r2);
    free(f1);
    free(f2);
}

/* NaN propagation of max (torch.max returns NaN for a line holding a NaN). */
static void test_max_nan(void) {
    for (int ref = 0; ref < 2; ref++) {
        nu_ctx *ctx = nu_ctx_new(NULL);
        nu_tensor *x = nu_new_tensor_2d(ctx, NU_TYPE_F32, 3, 20);
        float v[60];
        nu_test_fill_uniform(v, 60, 3, -1.f, 1.f);
        v[5] = NAN;   /* row 0, col 5 */
        v[20 + 19] = NAN; /* row 1, tail element */
        nu_tensor_set_f32(x, v);
        float rows[3], cols[20];
        nu_test_eval(ctx, nu_max(ctx, x, 1, false), rows, 1, ref);
        NU_CHECK(isnan(rows[0]) && isnan(rows[1]) && !isnan(rows[2]));
        nu_test_eval(ctx, nu_max(ctx, nu_new_tensor_ext(ctx, NU_TYPE_F32, 2, x->ne, x->data), 0, false), cols, 1,
                     ref);
        NU_CHECK(isnan(cols[5]) && isnan(cols[19]) && !isnan(cols[0]));
        nu_ctx_free(ctx);
    }
}

/* ================================================================ 2. PyTorch fixtures */

static nu_tensor *fx(nu_st_file *f, nu_ctx *ctx, const char *name) {
    nu_tensor *t = NULL;
    nu_status s = nu_st_get_f32(f, ctx, name, &t);
    NU_CHECK_MSG(s == NU_OK, "fixture %s: %s", name, nu_last_error());
    if (s != NU_OK) exit(nu_test_summary("test_op_reduce"));
    return t;
}

static void check_vs(const char *what, const char *key, nu_tensor *got, nu_tensor *want, double atol, double rtol) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s %s", key, what);
    int64_t n = nu_nelements(want);
    NU_CHECK_MSG(nu_nelements(got) == n, "%s: %lld values, fixture has %lld", nm, (long long)nu_nelements(got),
                 (long long)n);
    if (nu_nelements(got) != n) return;
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    nu_tensor_get_f32(got, a);
    nu_tensor_get_f32(want, b);
    nu_test_close(nm, a, b, n, atol, rtol);
    free(a);
    free(b);
}

typedef enum { F_SUM, F_MEAN, F_MAX, F_SUM_ALL, F_MEAN_ALL, F_SOFTMAX } fop;

/* Forward y = op(x) and dL/dx for L = sum(y * gy), against the fixture, on both twins. */
static void fixture_unary(nu_st_file *f, const char *key, fop op, int dim, bool keepdim, double atol, double rtol) {
    for (int ref = 0; ref < 2; ref++) {
        nu_ctx *ctx = nu_ctx_new(NULL);
        char k[128];
        snprintf(k, sizeof k, "%s.x", key);
        nu_tensor *x = fx(f, ctx, k);
        snprintf(k, sizeof k, "%s.gy", key);
        nu_tensor *gy = fx(f, ctx, k);
        nu_set_param(x);
        nu_set_name(x, "%s.x", key);
        nu_tensor *y = NULL;
        switch (op) {
        case F_SUM: y = nu_sum(ctx, x, dim, keepdim); break;
        case F_MEAN: y = nu_mean(ctx, x, dim, keepdim); break;
        case F_MAX: y = nu_max(ctx, x, dim, keepdim); break;
        case F_SUM_ALL: y = nu_sum_all(ctx, x); break;
        case F_MEAN_ALL: y = nu_mean_all(ctx, x); break;
        case F_SOFTMAX: y = nu_softmax(ctx, x); break;
        }
        NU_CHECK_MSG(nu_same_shape(y, gy), "%s: output shape differs from PyTorch's", key);
        nu_set_output(y);
        nu_tensor *loss = nu_sum_all(ctx, nu_mul(ctx, y, gy));
        nu_graph *g = nu_graph_new(ctx);
        nu_graph_expand(g, y);
        nu_graph_expand(g, loss);
        nu_graph_backward(g, loss);
        nu_pool *pool = nu_pool_new(2);
        nu_compute_opts o = {.use_ref = ref};
        NU_CHECK(nu_graph_compute_opts(g, pool, &o) == NU_OK);
        snprintf(k, sizeof k, "%s.y", key);
        check_vs(ref ? "y (ref)" : "y (fast)", key, y, fx(f, ctx, k), atol, rtol);
        snprintf(k, sizeof k, "%s.grad_x", key);
        check_vs(ref ? "grad_x (ref)" : "grad_x (fast)", key, x->grad, fx(f, ctx, k), atol, rtol);
        nu_pool_free(pool);
        nu_graph_free(g);
        nu_ctx_free(ctx);
    }
}

static void fixture_ce_mse(nu_st_file *f) {
    for (int ref = 0; ref < 2; ref++) {
        nu_ctx *ctx = nu_ctx_new(NULL);
        /* cross entropy: targets stay int64 (header over the file's bytes) */
        nu_tensor *x = fx(f, ctx, "ce.x"), *tg = NULL;
        NU_CHECK(nu_st_get(f, ctx, "ce.targets", &tg) == NU_OK && tg->type == NU_TYPE_I64);
        nu_set_param(x);
        nu_tensor *ce = nu_cross_entropy(ctx, x, tg);
        nu_set_output(ce);
        nu_tensor *loss = nu_mul(ctx, ce, fx(f, ctx, "ce.gy"));
        /* mse */
        nu_tensor *a = fx(f, ctx, "mse.a"), *b = fx(f, ctx, "mse.b");
        nu_set_param(a);
        nu_set_param(b);
        nu_tensor *mse = nu_mse_loss(ctx, a, b);
        nu_set_output(mse);
        loss = nu_add(ctx, loss, nu_mul(ctx, mse, fx(f, ctx, "mse.gy")));
        nu_graph *g = nu_graph_new(ctx);
        nu_graph_expand(g, ce);
        nu_graph_expand(g, mse);
        nu_graph_expand(g, loss);
        nu_graph_backward(g, loss);
        nu_pool *pool = nu_pool_new(2);
        nu_compute_opts o = {.use_ref = ref};
        NU_CHECK(nu_graph_compute_opts(g, pool, &o) == NU_OK);
        const char *tag = ref ? "(ref)" : "(fast)";
        char nm[64];
        /* 7 rows x 13 classes / 36 squared differences, all O(1): f32 rounding in PyTorch's
         * own reductions is ~1e-7 relative; 1e-6 leaves 10x margin */
        snprintf(nm, sizeof nm, "loss %s", tag);
        check_vs(nm, "ce", ce, fx(f, ctx, "ce.y"), 1e-6, 1e-6);
        snprintf(nm, sizeof nm, "grad %s", tag);
        check_vs(nm, "ce", x->grad, fx(f, ctx, "ce.grad_x"), 1e-7, 1e-5);
        snprintf(nm, sizeof nm, "loss %s", tag);
        check_vs(nm, "mse", mse, fx(f, ctx, "mse.y"), 1e-6, 1e-6);
        snprintf(nm, sizeof nm, "grad_a %s", tag);
        check_vs(nm, "mse", a->grad, fx(f, ctx, "mse.grad_a"), 1e-7, 1e-5);
        snprintf(nm, sizeof nm, "grad_b %s", tag);
        check_vs(nm, "mse", b->grad, fx(f, ctx, "mse.grad_b"), 1e-7, 1e-5);
        nu_pool_free(pool);
        nu_graph_free(g);
        nu_ctx_free(ctx);
    }
}

static void test_fixtures(void) {
    nu_st_file *f = NULL;
    nu_status s = nu_st_open(nu_test_fixture("reduce.safetensors"), &f);
    NU_CHECK_MSG(s == NU_OK, "open reduce.safetensors: %s", nu_last_error());
    if (s != NU_OK) return;
    /* Sums over <= 108 values of |x| < 4: PyTorch sums in f32 (typical error ~ sqrt(n) * 6e-8 *
     * sum|x|; observed <= 9.5e-7 abs on sum_all ~ 9, <= 2.4e-7 elsewhere), we in double; atol
     * 1e-5 / rtol 1e-5 is ~10x that while any wrong element errs by O(0.1). Max is exact. */
    const double at = 1e-5, rt = 1e-5;
    fixture_unary(f, "sum_d1_keep", F_SUM, 1, true, at, rt);
    fixture_unary(f, "sum_d2", F_SUM, 2, false, at, rt);
    fixture_unary(f, "sum_d0", F_SUM, 0, false, at, rt);
    fixture_unary(f, "mean_dm1", F_MEAN, -1, false, at, rt);
    fixture_unary(f, "mean_d1_keep", F_MEAN, 1, true, at, rt);
    fixture_unary(f, "max_d1", F_MAX, 1, false, 0, 0);
    fixture_unary(f, "max_d2_keep", F_MAX, 2, true, 0, 0);
    fixture_unary(f, "max_ties_d1", F_MAX, 1, false, 0, 0);
    fixture_unary(f, "max_ties_d2", F_MAX, 2, false, 0, 0);
    fixture_unary(f, "sum_all", F_SUM_ALL, 0, false, at, rt);
    fixture_unary(f, "mean_all", F_MEAN_ALL, 0, false, at, rt);
    /* softmax: outputs in (0, 1]; expf / exp_fast relative error <= 8e-8 plus f32 rounding of
     * PyTorch's row sums (~1e-7); observed <= 6e-8 abs on y, <= 1.2e-7 abs on the gradient
     * y*(dy - s) with O(1) dy; atol 1e-6 keeps ~10x margin */
    fixture_unary(f, "softmax", F_SOFTMAX, -1, false, 1e-6, 1e-5);
    fixture_unary(f, "softmax3", F_SOFTMAX, -1, false, 1e-6, 1e-5);
    fixture_ce_mse(f);
    nu_st_close(f);
}

/* ================================================================ 3. gradient checks */

typedef struct {
    int op, dim;
    bool keepdim;
    nu_tensor *targets;
} gc_user;

static nu_tensor *gc_build(nu_ctx *ctx, nu_tensor **in, void *user) {
    const gc_user *u = user;
    switch (u->op) {
    case 0: return nu_sum(ctx, in[0], u->dim, u->keepdim);
    case 1: return nu_mean(ctx, in[0], u->dim, u->keepdim);
    case 2: return nu_max(ctx, in[0], u->dim, u->keepdim);
    case 3: return nu_sum_all(ctx, in[0]);
    case 4: return nu_mean_all(ctx, in[0]);
    case 5: return nu_softmax(ctx, in[0]);
    case 6: return nu_cross_entropy(ctx, in[0], u->targets);
    case 7: return nu_mse_loss(ctx, in[0], in[1]);
    case 8: return nu_softmax(ctx, nu_transpose(ctx, in[0], 0, 1)); /* strided input */
    default: return NULL;
    }
}

static nu_tensor *gc_input(nu_ctx *ctx, int64_t n0, int64_t n1, uint64_t seed, bool distinct) {
    nu_tensor *t = nu_new_tensor_2d(ctx, NU_TYPE_F32, n0, n1);
    int64_t n = n0 * n1;
    float *v = malloc(sizeof(float) * (size_t)n);
    nu_test_fill_uniform(v, n, seed, -1.5f, 1.5f);
    /* max: values 0.1 apart (a permutation), so +-eps never changes which element is maximal */
    if (distinct)
        for (int64_t i = 0; i < n; i++) v[i] = (float)((i * 37 + seed) % n) * 0.1f - 1.0f;
    nu_tensor_set_f32(t, v);
    free(v);
    nu_set_param(t);
    return t;
}

static void test_gradcheck(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    /* eps 1e-2 on O(1) inputs: central-difference truncation ~eps^2/6 * f''' (< 1e-4 here);
     * f32 loss rounding ~1e-6 / (2 eps) = 5e-5. tol 2e-3 relative sits well above both and far
     * below any real gradient error. */
    const float eps = 1e-2f;
    const double tol = 2e-3;
    struct {
        const char *name;
        gc_user u;
        int64_t n0, n1;
        bool distinct;
    } cs[] = {
        {"sum dim1", {0, 1, false, NULL}, 4, 7, false},
        {"sum dim0 keepdim", {0, 0, true, NULL}, 4, 7, false},
        {"mean dim1", {1, -1, false, NULL}, 3, 5, false},
        {"max dim1", {2, 1, false, NULL}, 4, 6, true},
        {"max dim0 keepdim", {2, 0, true, NULL}, 5, 3, true},
        {"sum_all", {3, 0, false, NULL}, 3, 4, false},
        {"mean_all", {4, 0, false, NULL}, 3, 4, false},
        {"softmax", {5, 0, false, NULL}, 3, 9, false},
        {"softmax transposed", {8, 0, false, NULL}, 6, 4, false},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        nu_tensor *x = gc_input(ctx, cs[i].n0, cs[i].n1, 11 + i, cs[i].distinct);
        nu_test_gradcheck(cs[i].name, gc_build, &x, 1, &cs[i].u, eps, tol, 64);
    }
    nu_tensor *tg = nu_new_tensor_1d(ctx, NU_TYPE_I32, 5);
    int32_t tv[5] = {0, 6, 2, 6, 3};
    memcpy(tg->data, tv, sizeof tv);
    gc_user ce = {6, 0, false, tg};
    nu_tensor *logits = gc_input(ctx, 5, 7, 3, false);
    nu_test_gradcheck("cross_entropy", gc_build, &logits, 1, &ce, eps, tol, 64);
    gc_user mse = {7, 0, false, NULL};
    nu_tensor *ab[2] = {gc_input(ctx, 3, 5, 4, false), gc_input(ctx, 3, 5, 5, false)};
    /* one PARAM per call: nu_test_gradcheck reads later inputs' analytic gradients after the
     * finite-difference recomputes of earlier inputs (stale values; reported) */
    ab[1]->flags &= ~(uint32_t)NU_FLAG_PARAM;
    nu_test_gradcheck("mse_loss d/da", gc_build, ab, 2, &mse, eps, tol, 64);
    ab[0]->flags &= ~(uint32_t)NU_FLAG_PARAM;
    nu_set_param(ab[1]);
    nu_test_gradcheck("mse_loss d/db", gc_build, ab, 2, &mse, eps, tol, 64);
    nu_ctx_free(ctx);
}

/* ================================================================ shapes */

static void test_shapes(void) {
    nu_ctx_params cp = nu_ctx_params_init();
    cp.alloc_data = false;
    nu_ctx *ctx = nu_ctx_new(&cp);
    nu_tensor *x = nu_new_tensor_3d(ctx, NU_TYPE_F32, 2, 3, 4);
    nu_tensor *t = nu_sum(ctx, x, 1, true);
    NU_CHECK(t->ndim == 3 && t->ne[0] == 2 && t->ne[1] == 1 && t->ne[2] == 4);
    t = nu_max(ctx, x, -1, false);
    NU_CHECK(t->ndim == 2 && t->ne[0] == 2 && t->ne[1] == 3);
    t = nu_mean(ctx, x, 0, false);
    NU_CHECK(t->ndim == 2 && t->ne[0] == 3 && t->ne[1] == 4);
    t = nu_sum_all(ctx, x);
    NU_CHECK(t->ndim == 1 && t->ne[0] == 1);
    t = nu_sum(ctx, nu_new_tensor_1d(ctx, NU_TYPE_F32, 5), 0, false);
    NU_CHECK(t->ndim == 1 && t->ne[0] == 1);
    nu_ctx_free(ctx);
}

int main(void) {
    test_shapes();
    test_fast_vs_ref();
    test_max_nan();
    test_fixtures();
    test_gradcheck();
    return nu_test_summary("test_op_reduce");
}
