/*
 * test_op_conv.c — tests of the conv op family (src/ops/op_conv.c, src/cpu/k_conv.c,
 * src/cpu/k_conv_winograd.c):
 *   1. fast kernels (im2col/1x1 GEMM, Winograd F(4,3)/F(2,3), GEMM+col2im, weight-gradient
 *      GEMMs) vs the scalar reference twins (direct loops, double accumulators), forward and
 *      backward (dx, dw, db through nu_graph_backward), over stride / padding / dilation /
 *      groups (depthwise too), 1x1 and 3x3, odd sizes, batch > 1, non-contiguous inputs
 *      (channel- and W-strided views), f16 weights; 3x3 stride-1 cases run once per algorithm
 *      (auto, im2col/GEMM, F(2,3), F(4,3), forced with nu_conv_set_algo); 1 vs 2 threads must
 *      agree bitwise (work items never depend on the thread count);
 *   1b. matrix-form weights [K, Cg*KH*KW] (f32, f16, q8_0, q4_0) against the 4-d form;
 *   2. PyTorch fixtures (scripts/fixtures_conv.py -> tests/fixtures/conv.safetensors): conv2d and
 *      conv_transpose2d outputs and dx, dw, db for several parameter sets, fast and reference;
 *   3. finite-difference gradient checks (nu_test_gradcheck) on small shapes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "cpu/k_conv.h"
#include "nu_test.h"
#include "nuance/io.h"

typedef struct ccase {
    const char *name;
    bool transposed;
    int64_t N, C, H, W, K; /* x [N, C, H, W]; K output channels                        */
    int KH, KW;
    int sh, sw, ph, pw, dh, dw, groups, oph, opw;
    bool bias;
    int noncontig; /* 0: contiguous x; 1: channels strided (NHCW storage); 2: W strided (NCWH) */
    nu_type wtype;
    bool relu; /* conv2d with the fused ReLU */
} ccase;

/* Tolerances (normalised MSE against the reference twin, which accumulates in double).
 * GEMM paths accumulate a few tens to a few hundred f32 products in BLAS order: each output
 * carries a relative rounding error of order sqrt(n) * 2^-24 ~ 1e-7..1e-6, i.e. NMSE ~1e-14..
 * 1e-13 (measured <= 1e-13); 1e-11 leaves 100x margin and still catches any wrong or missing
 * term (NMSE > 1e-6). Winograd F(4,3) transforms scale rounding errors by their norms (entries
 * up to 8 in A^T, 5 in B^T, 1/24 in G): measured NMSE <= 2.1e-12 here, F(2,3) <= 1e-13;
 * 1e-10 is 50x above the measured worst case. */
#define TOL_GEMM 1e-11
#define TOL_WINO 1e-10

static bool maybe_winograd(const ccase *c) {
    return c->KH == 3 && c->KW == 3 && c->sh == 1 && c->sw == 1 && c->dh == 1 && c->dw == 1 && c->groups == 1;
}

/* Whether the forward conv may run on k_conv_wino_gen.c: stride 1, dilation 1, one group, 1xr,
 * rx1 or rxr with r in {3, 5, 7}. */
static bool kernel_ok(int k) { return k == 1 || k == 3 || k == 5 || k == 7; }
static bool maybe_winog(bool transposed, int KH, int KW, int sh, int sw, int dh, int dw, int groups) {
    return !transposed && sh == 1 && sw == 1 && dh == 1 && dw == 1 && groups == 1 && kernel_ok(KH) &&
           kernel_ok(KW) && (KH == 1 || KW == 1 || KH == KW) && KH * KW > 1;
}
static bool case_winog(const ccase *c) {
    return maybe_winog(c->transposed, c->KH, c->KW, c->sh, c->sw, c->dh, c->dw, c->groups);
}

/* The algorithms a case runs with (forced in turn); returns their count. */
static const char *const ALGO_NAMES[] = {"auto", "gemm", "wino2", "wino4", "winog"};
static int case_algos(bool wino3, bool winog, int *algos) {
    int n = 0;
    algos[n++] = NU_CONV_ALGO_AUTO;
    if (wino3 || winog) algos[n++] = NU_CONV_ALGO_GEMM;
    if (wino3) {
        algos[n++] = NU_CONV_ALGO_WINO2;
        algos[n++] = NU_CONV_ALGO_WINO4;
    }
    if (winog) algos[n++] = NU_CONV_ALGO_WINOG;
    return n;
}

static nu_conv2d_params case_params(const ccase *c) {
    nu_conv2d_params p = nu_conv2d_params_init();
    p.stride[0] = c->sh;
    p.stride[1] = c->sw;
    p.padding[0] = c->ph;
    p.padding[1] = c->pw;
    p.dilation[0] = c->dh;
    p.dilation[1] = c->dw;
    p.groups = c->groups;
    p.output_padding[0] = c->oph;
    p.output_padding[1] = c->opw;
    p.relu = c->relu;
    return p;
}

static nu_tensor *random_tensor(nu_ctx *ctx, nu_type type, int ndim, const int64_t *ne, uint64_t seed, float s) {
    nu_tensor *t = nu_new_tensor(ctx, type, ndim, ne);
    int64_t n = nu_nelements(t);
    float *v = malloc(sizeof(float) * (size_t)n);
    nu_test_fill_uniform(v, n, seed, -s, s);
    nu_tensor_set_f32(t, v);
    free(v);
    return t;
}

typedef struct results {
    int64_t ny, nx, nw, nb;
    float *y, *gx, *gw, *gb;
} results;

static void results_free(results *r) {
    free(r->y);
    free(r->gx);
    free(r->gw);
    free(r->gb);
}

static float *fetch(const nu_tensor *t, int64_t *n) {
    *n = nu_nelements(t);
    float *v = malloc(sizeof(float) * (size_t)*n);
    nu_tensor_get_f32(t, v);
    return v;
}

static void fetch_results(nu_tensor *y, nu_tensor *xleaf, nu_tensor *w, nu_tensor *b, results *rs) {
    memset(rs, 0, sizeof *rs);
    rs->y = fetch(y, &rs->ny);
    rs->gx = fetch(xleaf->grad, &rs->nx);
    rs->gw = fetch(w->grad, &rs->nw);
    if (b) rs->gb = fetch(b->grad, &rs->nb);
}

static void compare_fast(const ccase *c, const char *algo, const results *ref, const results *f1, const results *f2) {
    char nm[200];
    /* forward may use Winograd; the backward dx of a stride-1 3x3 conv is a stride-1 3x3
     * transposed conv, which may too */
    double tol = maybe_winograd(c) || case_winog(c) ? TOL_WINO : TOL_GEMM;
    snprintf(nm, sizeof nm, "%s [%s] y fast/ref", c->name, algo);
    NU_CHECK(nu_test_nmse(nm, f1->y, ref->y, ref->ny, tol));
    snprintf(nm, sizeof nm, "%s [%s] dx fast/ref", c->name, algo);
    NU_CHECK(nu_test_nmse(nm, f1->gx, ref->gx, ref->nx, tol));
    snprintf(nm, sizeof nm, "%s [%s] dw fast/ref", c->name, algo);
    NU_CHECK(nu_test_nmse(nm, f1->gw, ref->gw, ref->nw, TOL_GEMM));
    if (c->bias) {
        snprintf(nm, sizeof nm, "%s [%s] db fast/ref", c->name, algo);
        NU_CHECK(nu_test_nmse(nm, f1->gb, ref->gb, ref->nb, TOL_GEMM));
    }
    /* 1 vs 2 threads: work items never depend on the thread count, so the BLAS calls and the
     * transform arithmetic are identical -> bitwise equal */
    snprintf(nm, sizeof nm, "%s [%s] y 1/2 threads", c->name, algo);
    NU_CHECK(nu_test_equal(nm, f2->y, f1->y, f1->ny));
    snprintf(nm, sizeof nm, "%s [%s] dx 1/2 threads", c->name, algo);
    NU_CHECK(nu_test_equal(nm, f2->gx, f1->gx, f1->nx));
    snprintf(nm, sizeof nm, "%s [%s] dw 1/2 threads", c->name, algo);
    NU_CHECK(nu_test_equal(nm, f2->gw, f1->gw, f1->nw));
}

/* Builds y = conv(x, w, b) and loss = sum(y * r) with gradients for x, w, b; runs the graph
 * with the reference twins (1 thread), then, for every algorithm the shape allows (forced in
 * turn), with the fast kernels on 1 and 2 threads, and compares. */
static void check_case(const ccase *c) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *xleaf, *x;
    if (c->noncontig == 1) { /* stored as [N, H, C, W], viewed as [N, C, H, W] */
        xleaf = random_tensor(ctx, NU_TYPE_F32, 4, (int64_t[]){c->N, c->H, c->C, c->W}, 1, 1.f);
        x = nu_permute(ctx, xleaf, (int[]){0, 2, 1, 3});
    } else if (c->noncontig == 2) { /* stored as [N, C, W, H]: W is the strided dimension */
        xleaf = random_tensor(ctx, NU_TYPE_F32, 4, (int64_t[]){c->N, c->C, c->W, c->H}, 1, 1.f);
        x = nu_permute(ctx, xleaf, (int[]){0, 1, 3, 2});
    } else {
        xleaf = x = random_tensor(ctx, NU_TYPE_F32, 4, (int64_t[]){c->N, c->C, c->H, c->W}, 1, 1.f);
    }
    int64_t wne[4] = {c->K, c->C / c->groups, c->KH, c->KW};
    if (c->transposed) {
        wne[0] = c->C;
        wne[1] = c->K / c->groups;
    }
    nu_tensor *w = random_tensor(ctx, c->wtype, 4, wne, 2, 1.f);
    nu_tensor *b = c->bias ? random_tensor(ctx, NU_TYPE_F32, 1, (int64_t[]){c->K}, 3, 1.f) : NULL;
    nu_set_param(xleaf);
    nu_set_param(w);
    if (b) nu_set_param(b);
    nu_conv2d_params p = case_params(c);
    nu_tensor *y = c->transposed ? nu_conv_transpose2d(ctx, x, w, b, &p) : nu_conv2d(ctx, x, w, b, &p);
    nu_tensor *r = random_tensor(ctx, NU_TYPE_F32, 4, y->ne, 4, 1.f);
    nu_tensor *loss = nu_sum_all(ctx, nu_mul(ctx, y, r));
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, y);
    nu_graph_expand(g, loss);
    nu_graph_backward(g, loss);
    nu_pool *p1 = nu_pool_new(1), *p2 = nu_pool_new(2);
    results ref, f1, f2;
    nu_compute_opts o_ref = {.use_ref = true}, o_fast = {.use_ref = false};
    nu_status s = nu_graph_compute_opts(g, p1, &o_ref);
    NU_CHECK_MSG(s == NU_OK, "%s: compute failed: %s", c->name, nu_last_error());
    fetch_results(y, xleaf, w, b, &ref);
    int algos[5], nalg = case_algos(maybe_winograd(c), case_winog(c), algos);
    for (int ai = 0; ai < nalg; ai++) {
        int a = algos[ai];
        nu_conv_set_algo(a);
        s = nu_graph_compute_opts(g, p1, &o_fast);
        NU_CHECK_MSG(s == NU_OK, "%s: compute failed: %s", c->name, nu_last_error());
        fetch_results(y, xleaf, w, b, &f1);
        s = nu_graph_compute_opts(g, p2, &o_fast);
        NU_CHECK_MSG(s == NU_OK, "%s: compute failed: %s", c->name, nu_last_error());
        fetch_results(y, xleaf, w, b, &f2);
        compare_fast(c, ALGO_NAMES[a], &ref, &f1, &f2);
        results_free(&f1);
        results_free(&f2);
    }
    nu_conv_set_algo(NU_CONV_ALGO_AUTO);
    results_free(&ref);
    nu_pool_free(p1);
    nu_pool_free(p2);
    nu_graph_free(g);
    nu_ctx_free(ctx);
}

#define F32 NU_TYPE_F32
static const ccase fast_cases[] = {
    /* name                          T  N  C   H   W   K  KH KW sh sw ph pw dh dw g  oph opw bias nc  w */
    {"conv 3x3 s1 p1 odd",           0, 2, 5, 11, 13, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv 3x3 s2 p1",               0, 1, 6, 12, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv 3x3 s1 p2 d2",            0, 1, 4, 10, 11, 6, 3, 3, 1, 1, 2, 2, 2, 2, 1, 0, 0, 0, 0, F32, false},
    {"conv 5x3 s(2,1) p(2,0) d(1,2)",0, 2, 3, 13, 12, 5, 5, 3, 2, 1, 2, 0, 1, 2, 1, 0, 0, 1, 0, F32, false},
    {"conv groups 2",                0, 2, 6, 9, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2, 0, 0, 1, 0, F32, false},
    {"conv depthwise",               0, 1, 8, 10, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8, 0, 0, 1, 0, F32, false},
    {"conv depthwise x2 s2",         0, 1, 4, 10, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1, 4, 0, 0, 0, 0, F32, false},
    {"conv 1x1",                     0, 2, 24, 7, 9, 40, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv 1x1 noncontig",           0, 2, 24, 7, 9, 40, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, F32, false},
    {"conv 1x1 s2",                  0, 1, 16, 9, 9, 12, 1, 1, 2, 2, 0, 0, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv 4x4 s2 p1 (down)",        0, 2, 8, 16, 14, 16, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv 3x3 noncontig",           0, 2, 6, 9, 10, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, F32, false},
    {"conv 3x3 s2 W-strided",        0, 1, 6, 12, 11, 7, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 0, 1, 2, F32, false},
    {"conv 1x1 W-strided",           0, 1, 8, 5, 6, 9, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 2, F32, false},
    {"conv 3x3 f16 weight",          0, 1, 6, 9, 10, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, NU_TYPE_F16, false},
    {"conv wino4 40ch 20x21",        0, 2, 40, 20, 21, 36, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv wino4 noncontig p0",      0, 2, 33, 18, 19, 34, 3, 3, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, F32, false},
    {"conv wino stream 176ch",       0, 1, 176, 8, 9, 176, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv wino W-strided",          0, 1, 36, 17, 19, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 2, F32, false},
    {"conv wino2 48ch 9x10",         0, 1, 48, 9, 10, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv wino2 p2 f16",            0, 1, 32, 8, 8, 32, 3, 3, 1, 1, 2, 2, 1, 1, 1, 0, 0, 0, 0, NU_TYPE_F16, false},
    /* k_conv_wino_gen.c: every kit, odd sizes, padding on either axis, tile groups across rows
     * strided inputs, f16 weights; "blocks" has 17 x 4 rows of 4 tiles: 8 work items of 9 tile
     * rows and a last one of 4 */
    {"conv 1x7 p(0,3) winog",        0, 2, 24, 17, 17, 20, 1, 7, 1, 1, 0, 3, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv 7x1 p(3,0) winog",        0, 2, 20, 17, 23, 72, 7, 1, 1, 1, 3, 0, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv 1x3 p(0,1) winog nc",     0, 2, 17, 8, 9, 19, 1, 3, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, F32, false},
    {"conv 3x1 p(1,0) winog",        0, 1, 16, 9, 8, 16, 3, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1, 2, F32, false},
    {"conv 5x5 p2 winog",            0, 2, 18, 13, 15, 21, 5, 5, 1, 1, 2, 2, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv 5x5 p0 winog f16",        0, 1, 9, 12, 11, 10, 5, 5, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, NU_TYPE_F16, false},
    {"conv 1x5 p(1,2) winog",        0, 1, 12, 7, 19, 9, 1, 5, 1, 1, 1, 2, 1, 1, 1, 0, 0, 0, 0, F32, false},
    {"conv 5x1 p(2,1) winog",        0, 1, 12, 19, 7, 9, 5, 1, 1, 1, 2, 1, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv 7x7 p3 winog",            0, 1, 6, 16, 15, 8, 7, 7, 1, 1, 3, 3, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"conv 5x5 p2 winog blocks",     0, 17, 16, 16, 16, 113, 5, 5, 1, 1, 2, 2, 1, 1, 1, 0, 0, 1, 0, F32, false},
    /* the fused ReLU on each forward path: im2col + GEMM, 1x1 GEMM, F(4,3), F(2,3) (forced),
     * k_conv_wino_gen.c (and, with "auto", the backward through it) */
    {"conv 3x3 s2 p1 relu",          0, 1, 6, 12, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 0, 1, 0, F32, true},
    {"conv 1x1 relu",                0, 2, 24, 7, 9, 40, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, F32, true},
    {"conv wino4 40ch relu",         0, 2, 40, 20, 21, 36, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, F32, true},
    {"conv 1x7 p(0,3) relu",         0, 2, 24, 17, 17, 20, 1, 7, 1, 1, 0, 3, 1, 1, 1, 0, 0, 1, 0, F32, true},
    {"conv 3x3 p1 winog 20ch",       0, 2, 20, 10, 11, 17, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"convT 3x3 s2 p1 op1",          1, 2, 6, 7, 8, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0, F32, false},
    {"convT 4x4 s2 p1",              1, 1, 8, 6, 7, 4, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"convT 3x3 s1 p1 groups 3",     1, 2, 6, 7, 6, 9, 3, 3, 1, 1, 1, 1, 1, 1, 3, 0, 0, 1, 0, F32, false},
    {"convT 3x3 s1 d2 op1",          1, 1, 4, 6, 5, 6, 3, 3, 1, 1, 1, 0, 2, 2, 1, 1, 1, 1, 0, F32, false},
    {"convT 1x1",                    1, 2, 12, 5, 6, 10, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"convT 1x1 noncontig",          1, 2, 12, 5, 6, 10, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1, F32, false},
    {"convT 5x5 s3 p2 op2 nc",       1, 1, 5, 4, 5, 3, 5, 5, 3, 3, 2, 2, 1, 1, 1, 2, 1, 1, 1, F32, false},
    {"convT 3x3 s2 W-strided",       1, 1, 5, 6, 7, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 2, F32, false},
    {"convT wino W-strided",         1, 1, 34, 9, 12, 33, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 2, F32, false},
    {"convT depthwise s2",           1, 1, 6, 5, 6, 6, 3, 3, 2, 2, 1, 1, 1, 1, 6, 1, 1, 1, 0, F32, false},
    {"convT wino 40ch p1",           1, 2, 40, 19, 20, 36, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, F32, false},
    {"convT wino p0 nc",             1, 1, 32, 14, 15, 40, 3, 3, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, F32, false},
};

/* ================================================================ 1b. matrix-form weights */

/* conv2d with a matrix-form weight [K, Cg*KH*KW] of type t (f32, f16, q8_0, q4_0: the blocks of
 * the quantized types run along each filter row) against the reference twin of the same conv
 * with a 4-d f32 weight holding the dequantized values: the two compute the same sums, so the
 * GEMM / Winograd tolerances above apply; 1 and 2 threads agree bitwise; the reference twin on
 * the matrix form must equal the 4-d one bitwise (same double accumulation). */
static void check_matrix_case(const char *name, nu_type t, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                              int k, int stride, int pad, int groups, bool row_gap, bool relu) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    int64_t Cg = C / groups, row = Cg * k * k;
    nu_tensor *x = random_tensor(ctx, NU_TYPE_F32, 4, (int64_t[]){N, C, H, W}, 11, 1.f);
    nu_tensor *wm = random_tensor(ctx, t, 2, (int64_t[]){K, row}, 12, 1.f);
    nu_tensor *w4 = nu_new_tensor(ctx, NU_TYPE_F32, 4, (int64_t[]){K, Cg, k, k});
    float *deq = malloc(sizeof(float) * (size_t)(K * row));
    nu_tensor_get_f32(wm, deq);
    nu_tensor_set_f32(w4, deq);
    free(deq);
    if (row_gap) { /* the same values as the first columns of a wider matrix: rows nb[0] apart */
        nu_tensor *wide = random_tensor(ctx, t, 2, (int64_t[]){K, row + 64}, 14, 1.f);
        size_t rb = nu_row_size(t, row);
        for (int64_t r = 0; r < K; r++) memcpy((char *)wide->data + r * wide->nb[0], (char *)wm->data + r * wm->nb[0], rb);
        wm = nu_new_tensor_ext(ctx, t, 2, (int64_t[]){K, row}, wide->data); /* the first row-size bytes of each */
        wm->nb[0] = wide->nb[0];                                               /* row (no slice of a block dim) */
        NU_CHECK(!nu_is_contiguous(wm));
    }
    nu_tensor *b = random_tensor(ctx, NU_TYPE_F32, 1, (int64_t[]){K}, 13, 1.f);
    nu_conv2d_params p = nu_conv2d_params_init();
    p.stride[0] = p.stride[1] = stride;
    p.padding[0] = p.padding[1] = pad;
    p.groups = groups;
    p.relu = relu;
    nu_tensor *y4 = nu_conv2d(ctx, x, w4, b, &p);
    p.kernel[0] = p.kernel[1] = k;
    nu_tensor *ym = nu_conv2d(ctx, x, wm, b, &p);
    NU_CHECK(nu_same_shape(y4, ym));
    nu_graph *g4 = nu_graph_new(ctx), *gm = nu_graph_new(ctx);
    nu_graph_expand(g4, y4);
    nu_graph_expand(gm, ym);
    nu_pool *p1 = nu_pool_new(1), *p2 = nu_pool_new(2);
    nu_compute_opts o_ref = {.use_ref = true}, o_fast = {.use_ref = false};
    int64_t n;
    NU_CHECK(nu_graph_compute_opts(g4, p1, &o_ref) == NU_OK);
    float *ref = fetch(y4, &n);
    NU_CHECK(nu_graph_compute_opts(gm, p2, &o_ref) == NU_OK);
    float *refm = fetch(ym, &n);
    char nm[200];
    snprintf(nm, sizeof nm, "matrix %s %s: reference twin, matrix vs 4-d", name, nu_type_name(t));
    NU_CHECK(nu_test_equal(nm, refm, ref, n));
    free(refm);
    bool wino = k == 3 && stride == 1 && groups == 1, winog = maybe_winog(false, k, k, stride, stride, 1, 1, groups);
    int algos[5], nalg = case_algos(wino, winog, algos);
    for (int ai = 0; ai < nalg; ai++) {
        int a = algos[ai];
        nu_conv_set_algo(a);
        NU_CHECK(nu_graph_compute_opts(gm, p1, &o_fast) == NU_OK);
        float *f1 = fetch(ym, &n);
        NU_CHECK(nu_graph_compute_opts(gm, p2, &o_fast) == NU_OK);
        float *f2 = fetch(ym, &n);
        snprintf(nm, sizeof nm, "matrix %s %s [%s] fast/ref", name, nu_type_name(t), ALGO_NAMES[a]);
        NU_CHECK(nu_test_nmse(nm, f1, ref, n, wino || winog ? TOL_WINO : TOL_GEMM));
        snprintf(nm, sizeof nm, "matrix %s %s [%s] 1/2 threads", name, nu_type_name(t), ALGO_NAMES[a]);
        NU_CHECK(nu_test_equal(nm, f2, f1, n));
        free(f1);
        free(f2);
    }
    nu_conv_set_algo(NU_CONV_ALGO_AUTO);
    free(ref);
    nu_pool_free(p1);
    nu_pool_free(p2);
    nu_graph_free(g4);
    nu_graph_free(gm);
    nu_ctx_free(ctx);
}

static void test_matrix_form(void) {
    static const nu_type types[] = {NU_TYPE_F32, NU_TYPE_F16, NU_TYPE_Q8_0, NU_TYPE_Q4_0};
    for (int i = 0; i < 4; i++) {
        nu_type t = types[i];
        check_matrix_case("3x3 s1 p1 32->40 17x19", t, 2, 32, 17, 19, 40, 3, 1, 1, 1, false, false);
        check_matrix_case("3x3 s1 p1 32->40 17x19 row gap", t, 2, 32, 17, 19, 40, 3, 1, 1, 1, true, false);
        check_matrix_case("3x3 s2 p1 32->24 15x16", t, 1, 32, 15, 16, 24, 3, 2, 1, 1, false, false);
        check_matrix_case("1x1 64->48 9x7", t, 2, 64, 9, 7, 48, 1, 1, 0, 1, false, false);
        check_matrix_case("1x1 64->48 9x7 row gap", t, 2, 64, 9, 7, 48, 1, 1, 0, 1, true, false);
        check_matrix_case("3x3 groups 2 64->16 8x9", t, 1, 64, 8, 9, 16, 3, 1, 1, 2, false, false);
        check_matrix_case("5x5 s1 p2 32->24 11x12", t, 2, 32, 11, 12, 24, 5, 1, 2, 1, false, false);
        check_matrix_case("3x3 s2 p1 32->24 15x16 relu", t, 1, 32, 15, 16, 24, 3, 2, 1, 1, false, true);
        check_matrix_case("3x3 s1 p1 32->40 17x19 relu", t, 2, 32, 17, 19, 40, 3, 1, 1, 1, false, true);
        if (nu_test_quick()) break;
    }
}

/* ================================================================ 2. PyTorch fixtures */

/* Fixture cases are listed in the file's metadata: "cases" = "c0 c1 ...", and for each case
 * "<name>" = "<conv2d|conv_transpose2d> sh sw ph pw dh dw groups oph opw". Tensors:
 * <name>.x .w [.b] .gy (upstream gradient) .y .dx .dw [.db].
 * Tolerance: torch (oneDNN, f32) and our kernels sum the same terms in different orders; each
 * output's rounding error is ~sqrt(terms) * 2^-24 relative: measured NMSE <= 6e-14 for both the
 * reference and the fast paths (these shapes pick im2col/GEMM). 1e-11 leaves 100x margin and
 * also holds Winograd's measured 2e-12. */
#define TOL_FIXTURE 1e-11

static nu_tensor *fx_get(nu_st_file *f, nu_ctx *ctx, const char *cname, const char *what) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", cname, what);
    if (!nu_st_find(f, key)) return NULL;
    nu_tensor *t = NULL;
    nu_status s = nu_st_get_f32(f, ctx, key, &t);
    NU_CHECK_MSG(s == NU_OK, "fixture %s: %s", key, nu_last_error());
    return s == NU_OK ? t : NULL;
}

static void fx_compare(const char *cname, const char *what, const char *mode, const nu_tensor *got,
                       const nu_tensor *want) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s %s (%s)", cname, what, mode);
    if (!got || !want) {
        NU_CHECK_MSG(false, "%s: missing tensor", nm);
        return;
    }
    NU_CHECK_MSG(nu_nelements(got) == nu_nelements(want), "%s: size %lld vs %lld", nm,
                 (long long)nu_nelements(got), (long long)nu_nelements(want));
    if (nu_nelements(got) != nu_nelements(want)) return;
    int64_t n;
    float *a = fetch(got, &n), *b = fetch(want, &n);
    NU_CHECK(nu_test_nmse(nm, a, b, n, TOL_FIXTURE));
    free(a);
    free(b);
}

static void run_fixture_case(nu_st_file *f, const char *cname) {
    const char *spec = nu_st_metadata(f, cname);
    NU_CHECK_MSG(spec != NULL, "fixture case %s has no metadata", cname);
    if (!spec) return;
    char kind[32];
    nu_conv2d_params p = nu_conv2d_params_init();
    int n = sscanf(spec, "%31s %d %d %d %d %d %d %d %d %d", kind, &p.stride[0], &p.stride[1], &p.padding[0],
                   &p.padding[1], &p.dilation[0], &p.dilation[1], &p.groups, &p.output_padding[0],
                   &p.output_padding[1]);
    NU_CHECK_MSG(n == 10, "fixture case %s: bad spec '%s'", cname, spec);
    if (n != 10) return;
    bool transposed = strcmp(kind, "conv_transpose2d") == 0;
    for (int mode = 0; mode < 2; mode++) {
        nu_ctx *ctx = nu_ctx_new(NULL);
        nu_tensor *x = fx_get(f, ctx, cname, "x"), *w = fx_get(f, ctx, cname, "w"), *b = fx_get(f, ctx, cname, "b");
        nu_tensor *gy = fx_get(f, ctx, cname, "gy");
        if (!x || !w || !gy) {
            NU_CHECK_MSG(false, "fixture case %s: missing inputs", cname);
            nu_ctx_free(ctx);
            return;
        }
        nu_set_param(x);
        nu_set_param(w);
        if (b) nu_set_param(b);
        nu_tensor *y = transposed ? nu_conv_transpose2d(ctx, x, w, b, &p) : nu_conv2d(ctx, x, w, b, &p);
        nu_tensor *loss = nu_sum_all(ctx, nu_mul(ctx, y, gy)); /* dL/dy = gy */
        nu_graph *g = nu_graph_new(ctx);
        nu_graph_expand(g, y);
        nu_graph_expand(g, loss);
        nu_graph_backward(g, loss);
        nu_pool *pool = nu_pool_new(mode == 0 ? 1 : 2);
        nu_compute_opts o = {.use_ref = mode == 0};
        nu_status s = nu_graph_compute_opts(g, pool, &o);
        NU_CHECK_MSG(s == NU_OK, "%s: compute failed: %s", cname, nu_last_error());
        if (s == NU_OK) {
            const char *mname = mode == 0 ? "ref" : "fast";
            fx_compare(cname, "y", mname, y, fx_get(f, ctx, cname, "y"));
            fx_compare(cname, "dx", mname, x->grad, fx_get(f, ctx, cname, "dx"));
            fx_compare(cname, "dw", mname, w->grad, fx_get(f, ctx, cname, "dw"));
            if (b) fx_compare(cname, "db", mname, b->grad, fx_get(f, ctx, cname, "db"));
        }
        nu_pool_free(pool);
        nu_graph_free(g);
        nu_ctx_free(ctx);
    }
}

static void test_fixtures(void) {
    const char *path = nu_test_fixture("conv.safetensors");
    nu_st_file *f;
    if (nu_st_open(path, &f) != NU_OK) {
        NU_CHECK_MSG(false, "cannot open %s: %s", path, nu_last_error());
        return;
    }
    const char *cases = nu_st_metadata(f, "cases");
    NU_CHECK(cases != NULL);
    if (cases) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", cases);
        int count = 0;
        for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
            run_fixture_case(f, tok);
            count++;
        }
        NU_CHECK(count >= 8);
    }
    nu_st_close(f);
}

/* ================================================================ 3. gradcheck */

typedef struct gc_user {
    bool transposed;
    nu_conv2d_params p;
} gc_user;

static nu_tensor *gc_build(nu_ctx *ctx, nu_tensor **in, void *user) {
    gc_user *u = user;
    return u->transposed ? nu_conv_transpose2d(ctx, in[0], in[1], in[2], &u->p)
                         : nu_conv2d(ctx, in[0], in[1], in[2], &u->p);
}

/* The loss sum(y * r) is linear in each single element of x, w and b, so central differences
 * have no truncation error whatever the step: a large step (0.25) keeps the f32 rounding of
 * the loss (|loss| ~ 10-30, summed over ~100-300 outputs: error up to ~1e-4) small against the
 * difference it divides by (2 * 0.25), i.e. <~ 2e-4 absolute. tol 2e-3 (relative to
 * 1 + |num|) is ~10x that and far below any real gradient error. */
static void gradcheck_case(const char *name, bool transposed, int64_t N, int64_t C, int64_t H, int64_t W,
                           int64_t K, int KH, int KW, nu_conv2d_params p) {
    /* one PARAM per run: nu_test_gradcheck reads each input's analytic gradient after the finite
     * differences of the previous inputs re-ran the graph, so with several PARAMs the later
     * gradients would come from a perturbed evaluation */
    for (int k = 0; k < 3; k++) {
        nu_ctx *ctx = nu_ctx_new(NULL);
        nu_tensor *in[3];
        in[0] = random_tensor(ctx, NU_TYPE_F32, 4, (int64_t[]){N, C, H, W}, 11, 1.f);
        int64_t wne[4] = {K, C / p.groups, KH, KW};
        if (transposed) {
            wne[0] = C;
            wne[1] = K / p.groups;
        }
        in[1] = random_tensor(ctx, NU_TYPE_F32, 4, wne, 12, 1.f);
        in[2] = random_tensor(ctx, NU_TYPE_F32, 1, (int64_t[]){K}, 13, 1.f);
        nu_set_param(in[k]);
        gc_user u = {transposed, p};
        char nm[160];
        snprintf(nm, sizeof nm, "%s d%s", name, k == 0 ? "x" : k == 1 ? "w" : "b");
        nu_test_gradcheck(nm, gc_build, in, 3, &u, 0.25f, 2e-3, 40);
        nu_ctx_free(ctx);
    }
}

static void test_gradcheck(void) {
    nu_conv2d_params p = nu_conv2d_params_init();
    p.padding[0] = p.padding[1] = 1;
    gradcheck_case("gradcheck conv 3x3 p1", false, 2, 3, 5, 6, 4, 3, 3, p);
    p.stride[0] = 2;
    p.dilation[1] = 2;
    p.groups = 2;
    gradcheck_case("gradcheck conv s(2,1) d(1,2) g2", false, 1, 4, 7, 7, 6, 3, 3, p);
    p = nu_conv2d_params_init();
    p.stride[0] = p.stride[1] = 2;
    p.padding[0] = p.padding[1] = 1;
    p.output_padding[0] = 1;
    gradcheck_case("gradcheck convT s2 p1 op(1,0)", true, 2, 3, 4, 3, 4, 3, 3, p);
    p = nu_conv2d_params_init();
    p.dilation[0] = p.dilation[1] = 2;
    p.output_padding[0] = p.output_padding[1] = 1;
    p.groups = 2;
    gradcheck_case("gradcheck convT d2 op1 g2", true, 1, 4, 4, 4, 2, 3, 3, p);
}

int main(void) {
    int n = (int)(sizeof fast_cases / sizeof fast_cases[0]);
    for (int i = 0; i < n; i++) {
        /* sanitizer runs: every fourth case, and not the 176-channel one */
        if (nu_test_quick() && (i % 4 || fast_cases[i].C > 64)) continue;
        check_case(&fast_cases[i]);
    }
    test_matrix_form();
    test_fixtures();
    test_gradcheck();
    return nu_test_summary("test_op_conv");
}
