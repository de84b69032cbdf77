/*
 * test_op_matmul.c — the matmul family (nu_matmul, nu_linear; src/ops/op_matmul.c,
 * src/cpu/k_matmul.c, src/cpu/gemm.c).
 *
 * (1) Kernels: for each case the reference kernel (double accumulation) with 1 and 2 threads
 *     must agree bit for bit; it must match this file's own naive loop (double, on the dequantized
 *     weight) to NMSE 1e-13 (both round a double sum once: only the final f32 rounding and the
 *     double summation order differ); the fast kernel (OpenBLAS sgemm, f32 accumulation in
 *     blocks) with 1 and 2 threads must match the reference to NMSE 1e-10: its error per element
 *     is about sqrt(K) f32 roundings of terms of the output's size, NMSE ~ c*K*2^-48 <= 1e-12 for
 *     the K <= 600 used here (100x margin). Shapes include odd M/N/K, all transpose flags,
 *     broadcast batches, transposed/sliced/permuted views, every weight type and small GEMM tiles
 *     (several N and K tiles, K tails, the N and the M thread split).
 * (2) Forward and backward against PyTorch (tests/fixtures/matmul.safetensors, made by
 *     scripts/fixtures_matmul.py): NMSE <= 1e-11 (two f32 GEMMs with different summation orders
 *     differ by NMSE ~ 2^-48 ~ 4e-15 per operation; 1e-11 leaves room for the K <= 40 sums).
 * (3) Finite-difference gradients (nu_test_gradcheck). Matmul is linear in each operand, so
 *     central differences are exact up to f32 rounding of the loss (|loss| <~ 30, ulp ~ 2e-6,
 *     divided by 2*eps = 0.02): 1e-4 absolute; tol 2e-3 relative to (1 + |num|).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "cpu/gemm.h"
#include "nu_test.h"
#include "nuance/io.h"

#define TOL_REF_NAIVE 1e-13
#define TOL_FAST 1e-10

static uint64_t seed_counter = 1;

static nu_tensor *rand_f32(nu_ctx *ctx, int ndim, const int64_t *ne) {
    nu_tensor *t = nu_new_tensor(ctx, NU_TYPE_F32, ndim, ne);
    nu_test_fill_uniform(t->data, nu_nelements(t), seed_counter++, -1.0f, 1.0f);
    return t;
}

/* A [.., rows, cols] tensor of `type` from random values (quantized row by row). */
static nu_tensor *rand_typed(nu_ctx *ctx, nu_type type, int ndim, const int64_t *ne) {
    nu_tensor *t = nu_new_tensor(ctx, type, ndim, ne);
    const int64_t cols = ne[ndim - 1], rows = nu_nelements(t) / cols;
    float *v = malloc(sizeof(float) * (size_t)(rows * cols));
    nu_test_fill_uniform(v, rows * cols, seed_counter++, -1.0f, 1.0f);
    for (int64_t r = 0; r < rows; r++)
        nu_row_from_f32(type, v + r * cols, (char *)t->data + (size_t)r * nu_row_size(type, cols), cols);
    free(v);
    return t;
}

/* Dense f32 copy in logical order (block types: contiguous tensors, row by row). */
static float *dense(const nu_tensor *t) {
    const int64_t n = nu_nelements(t);
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (nu_type_info(t->type)->is_quant) {
        NU_ASSERT(nu_is_contiguous(t));
        const int64_t cols = t->ne[t->ndim - 1];
        for (int64_t r = 0; r < n / cols; r++)
            nu_row_to_f32(t->type, (const char *)t->data + (size_t)r * nu_row_size(t->type, cols), v + r * cols, cols);
    } else {
        nu_tensor_get_f32(t, v);
    }
    return v;
}

/* Linear batch index in a dense tensor of shape (tnd, tne) for output batch i of (ond, one). */
static int64_t bcast_batch(int ond, const int64_t *one, int64_t i, int tnd, const int64_t *tne) {
    int64_t idx = 0, mul = 1;
    for (int d = ond - 3; d >= 0; d--) {
        int64_t id = i % one[d];
        i /= one[d];
        int dt = d - (ond - tnd);
        if (dt >= 0) {
            if (tne[dt] > 1) idx += id * mul;
            mul *= tne[dt];
        }
    }
    return idx;
}

/* This file's own reference: out = op(a) op(b) with broadcast, double accumulation. */
static float *naive(const nu_tensor *a, const nu_tensor *b, bool ta, bool tb, const nu_tensor *y) {
    float *A = dense(a), *B = dense(b);
    const int64_t M = y->ne[y->ndim - 2], N = y->ne[y->ndim - 1];
    const int64_t K = ta ? a->ne[a->ndim - 2] : a->ne[a->ndim - 1];
    const int64_t ar = a->ne[a->ndim - 2], ac = a->ne[a->ndim - 1], br = b->ne[b->ndim - 2], bc = b->ne[b->ndim - 1];
    const int64_t nbatch = nu_nelements(y) / (M * N > 0 ? M * N : 1);
    float *out = malloc(sizeof(float) * (size_t)(nu_nelements(y) + 1));
    for (int64_t i = 0; i < nbatch; i++) {
        const float *Ai = A + bcast_batch(y->ndim, y->ne, i, a->ndim, a->ne) * ar * ac;
        const float *Bi = B + bcast_batch(y->ndim, y->ne, i, b->ndim, b->ne) * br * bc;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += (double)(ta ? Ai[k * ac + m] : Ai[m * ac + k]) * (double)(tb ? Bi[n * bc + k] : Bi[k * bc + n]);
                out[i * M * N + m * N + n] = (float)s;
            }
    }
    free(A);
    free(B);
    return out;
}

/* ---------------------------------------------------------------- (1) kernels */

typedef struct {
    nu_tensor *a, *b; /* operands as passed to nu_matmul (views allowed) */
    bool ta, tb;
} mm_case;

static nu_tensor *build_mm(nu_ctx *ctx, const mm_case *c) {
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *y = nu_matmul(ctx, c->a, c->b, c->ta, c->tb);
    nu_ctx_set_alloc_data(ctx, true);
    return y;
}

static void check_kernels(const char *name, nu_ctx *ctx, const mm_case *c) {
    nu_tensor *y = build_mm(ctx, c);
    const int64_t n = nu_nelements(y);
    float *want = naive(c->a, c->b, c->ta, c->tb, y);
    float *r1 = malloc(sizeof(float) * (size_t)n), *r2 = malloc(sizeof(float) * (size_t)n);
    float *f1 = malloc(sizeof(float) * (size_t)n), *f2 = malloc(sizeof(float) * (size_t)n);
    nu_test_eval(ctx, y, r1, 1, true);
    nu_test_eval(ctx, build_mm(ctx, c), r2, 2, true);
    nu_test_eval(ctx, build_mm(ctx, c), f1, 1, false);
    nu_test_eval(ctx, build_mm(ctx, c), f2, 2, false);
    char lbl[160];
    snprintf(lbl, sizeof lbl, "%s: ref 2 threads vs 1", name);
    NU_CHECK(nu_test_equal(lbl, r2, r1, n));
    snprintf(lbl, sizeof lbl, "%s: ref vs naive", name);
    NU_CHECK(nu_test_nmse(lbl, r1, want, n, TOL_REF_NAIVE));
    snprintf(lbl, sizeof lbl, "%s: fast (1 thread) vs ref", name);
    NU_CHECK(nu_test_nmse(lbl, f1, r1, n, TOL_FAST));
    snprintf(lbl, sizeof lbl, "%s: fast (2 threads) vs ref", name);
    NU_CHECK(nu_test_nmse(lbl, f2, r1, n, TOL_FAST));
    free(want);
    free(r1);
    free(r2);
    free(f1);
    free(f2);
}

static nu_tensor *t2(nu_ctx *ctx, int64_t r, int64_t c) { return rand_f32(ctx, 2, (int64_t[]){r, c}); }

static void test_f32_shapes(void) {
    static const int64_t shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {37, 65, 129}, {130, 96, 257}, {3, 300, 17}, {301, 2, 64}};
    const int nshape = nu_test_quick() ? 4 : 6;
    for (int s = 0; s < nshape; s++) {
        for (int f = 0; f < 4; f++) {
            nu_ctx *ctx = nu_ctx_new(NULL);
            const int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            mm_case c = {.ta = f & 1, .tb = (f >> 1) & 1};
            c.a = c.ta ? t2(ctx, K, M) : t2(ctx, M, K);
            c.b = c.tb ? t2(ctx, N, K) : t2(ctx, K, N);
            char name[96];
            snprintf(name, sizeof name, "f32 M%lld N%lld K%lld ta%d tb%d", (long long)M, (long long)N, (long long)K, c.ta,
                     c.tb);
            check_kernels(name, ctx, &c);
            nu_ctx_free(ctx);
        }
    }
}

static void test_batched(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    mm_case c = {0};
    /* [2,1,5,7] @ [3,7,4] -> [2,3,5,4] */
    c.a = rand_f32(ctx, 4, (int64_t[]){2, 1, 5, 7});
    c.b = rand_f32(ctx, 3, (int64_t[]){3, 7, 4});
    check_kernels("batch broadcast 2x1 / 3", ctx, &c);
    /* 2-D b shared by a batch of a (linear on a non-contiguous x) */
    c.a = rand_f32(ctx, 3, (int64_t[]){4, 9, 6});
    c.b = rand_f32(ctx, 2, (int64_t[]){10, 6});
    c.tb = true;
    check_kernels("batch a, shared b^T", ctx, &c);
    /* 2-D a broadcast over b's batch, transposed a */
    c.a = rand_f32(ctx, 2, (int64_t[]){8, 6});
    c.b = rand_f32(ctx, 3, (int64_t[]){5, 8, 3});
    c.ta = true;
    c.tb = false;
    check_kernels("shared a^T, batch b", ctx, &c);
    /* many batches: whole GEMMs per thread */
    c.a = rand_f32(ctx, 3, (int64_t[]){12, 17, 20});
    c.b = rand_f32(ctx, 3, (int64_t[]){12, 20, 9});
    c.ta = c.tb = false;
    check_kernels("12 batches", ctx, &c);
    /* 3 batches on 2 threads: each GEMM split over threads */
    c.a = rand_f32(ctx, 3, (int64_t[]){3, 70, 33});
    c.b = rand_f32(ctx, 3, (int64_t[]){3, 45, 33});
    c.tb = true;
    check_kernels("3 batches", ctx, &c);
    nu_ctx_free(ctx);
}

static void test_views(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_ctx_set_alloc_data(ctx, true);
    mm_case c = {0};
    const int64_t M = 23, N = 19, K = 35;
    /* transposed views: the unit stride is on the row dim (passed to BLAS with the flag flipped) */
    c.a = nu_transpose(ctx, t2(ctx, K, M), 0, 1);
    c.b = nu_transpose(ctx, t2(ctx, N, K), 0, 1);
    check_kernels("transposed views", ctx, &c);
    c.ta = c.tb = true;
    c.a = nu_transpose(ctx, t2(ctx, M, K), 0, 1);
    c.b = nu_transpose(ctx, t2(ctx, K, N), 0, 1);
    check_kernels("transposed views, ta tb", ctx, &c);
    /* sliced views: row stride larger than the row */
    c.ta = c.tb = false;
    c.a = nu_slice(ctx, t2(ctx, M, K + 5), 1, 2, K + 2);
    c.b = nu_slice(ctx, nu_slice(ctx, t2(ctx, K + 3, N + 4), 0, 2, K + 2), 1, 4, N + 4);
    check_kernels("sliced views", ctx, &c);
    c.b = nu_slice(ctx, t2(ctx, 1, N + 4), 1, 4, N + 4); /* K = 1 rows */
    c.a = nu_slice(ctx, t2(ctx, M, 3), 1, 1, 2);
    check_kernels("sliced views K=1", ctx, &c);
    /* permuted batch: [M, B, K] -> [B, M, K] (BLAS-compatible last dims, odd batch stride) */
    c.a = nu_permute(ctx, rand_f32(ctx, 3, (int64_t[]){M, 3, K}), (int[]){1, 0, 2});
    c.b = t2(ctx, K, N);
    check_kernels("permuted batch", ctx, &c);
    /* no unit stride in the last two dims: the builder copies (nu_contiguous) */
    c.a = nu_permute(ctx, rand_f32(ctx, 3, (int64_t[]){M, K, 2}), (int[]){2, 0, 1});
    check_kernels("non-BLAS view (copied)", ctx, &c);
    nu_ctx_free(ctx);
}

static const nu_type wtypes[] = {NU_TYPE_F16, NU_TYPE_BF16, NU_TYPE_Q8_0, NU_TYPE_Q4_0,
                                 NU_TYPE_Q4_1, NU_TYPE_Q5_0, NU_TYPE_Q5_1};
#define N_WTYPES ((int)(sizeof wtypes / sizeof wtypes[0]))

static void test_weight_types(void) {
    const nu_gemm_tiling saved = nu_gemm_get_tiling();
    for (int w = 0; w < N_WTYPES; w++) {
        const nu_type T = wtypes[w];
        nu_ctx *ctx = nu_ctx_new(NULL);
        char name[128];
        mm_case c = {0};
        /* linear: x [37, 96] @ W[70, 96]^T */
        c.a = t2(ctx, 37, 96);
        c.b = rand_typed(ctx, T, 2, (int64_t[]){70, 96});
        c.tb = true;
        snprintf(name, sizeof name, "%s linear", nu_type_name(T));
        check_kernels(name, ctx, &c);
        /* a^T */
        c.a = t2(ctx, 96, 11);
        c.ta = true;
        snprintf(name, sizeof name, "%s a^T", nu_type_name(T));
        check_kernels(name, ctx, &c);
        /* b not transposed: W [K=40, N=64], blocked along N (the dA = dC W product of backward) */
        c.a = t2(ctx, 13, 40);
        c.b = rand_typed(ctx, T, 2, (int64_t[]){40, 64});
        c.ta = c.tb = false;
        snprintf(name, sizeof name, "%s b [K,N]", nu_type_name(T));
        check_kernels(name, ctx, &c);
        /* batched weight */
        c.a = rand_f32(ctx, 3, (int64_t[]){2, 9, 64});
        c.b = rand_typed(ctx, T, 3, (int64_t[]){2, 33, 64});
        c.tb = true;
        snprintf(name, sizeof name, "%s batched", nu_type_name(T));
        check_kernels(name, ctx, &c);
        /* few rows (M <= 4: direct dot products / axpys on dequantized rows) */
        for (int64_t M = 1; M <= 5; M += 2) {
            c.a = t2(ctx, M, 96);
            c.b = rand_typed(ctx, T, 2, (int64_t[]){70, 96});
            c.ta = false;
            c.tb = true;
            snprintf(name, sizeof name, "%s M=%lld b^T", nu_type_name(T), (long long)M);
            check_kernels(name, ctx, &c);
            c.a = t2(ctx, 37, M); /* a^T, b [K, N] with N = 288 = one 256-column chunk + 32 */
            c.b = rand_typed(ctx, T, 2, (int64_t[]){37, 288});
            c.ta = true;
            c.tb = false;
            snprintf(name, sizeof name, "%s M=%lld a^T b", nu_type_name(T), (long long)M);
            check_kernels(name, ctx, &c);
        }
        c.ta = false;
        c.tb = true;
        /* small tiles: several N tiles and K tiles with a tail (160 = 64+64+32), N split (200
         * columns on 2 threads) and M split (40 columns) */
        nu_gemm_set_tiling((nu_gemm_tiling){64, 64});
        c.a = t2(ctx, 50, 160);
        c.b = rand_typed(ctx, T, 2, (int64_t[]){200, 160});
        snprintf(name, sizeof name, "%s tiles 64x64, N split", nu_type_name(T));
        check_kernels(name, ctx, &c);
        c.b = rand_typed(ctx, T, 2, (int64_t[]){40, 160});
        snprintf(name, sizeof name, "%s tiles 64x64, M split", nu_type_name(T));
        check_kernels(name, ctx, &c);
        c.a = t2(ctx, 21, 160);
        c.b = rand_typed(ctx, T, 2, (int64_t[]){160, 224});
        c.tb = false;
        snprintf(name, sizeof name, "%s tiles 64x64, b [K,N]", nu_type_name(T));
        check_kernels(name, ctx, &c);
        nu_gemm_set_tiling(saved);
        /* half types: transposed view of the weight */
        if (!nu_type_info(T)->is_quant) {
            c.a = t2(ctx, 10, 48);
            c.b = nu_transpose(ctx, rand_typed(ctx, T, 2, (int64_t[]){48, 30}), 0, 1);
            c.tb = true;
            snprintf(name, sizeof name, "%s transposed view", nu_type_name(T));
            check_kernels(name, ctx, &c);
        }
        nu_ctx_free(ctx);
    }
}

/* nu_gemm_run: the bench entry point, on a pool, against the reference. */
static void test_gemm_run(void) {
    const int64_t M = 45, N = 130, K = 96;
    float *A = malloc(sizeof(float) * M * K), *Bf = malloc(sizeof(float) * N * K);
    float *C0 = malloc(sizeof(float) * M * N), *C1 = malloc(sizeof(float) * M * N);
    nu_test_fill_uniform(A, M * K, 5, -1, 1);
    nu_test_fill_uniform(Bf, N * K, 6, -1, 1);
    nu_pool *pool = nu_pool_new(2);
    for (int w = -1; w < N_WTYPES; w++) {
        const nu_type T = w < 0 ? NU_TYPE_F32 : wtypes[w];
        void *B = malloc(nu_row_size(T, K) * N);
        for (int64_t r = 0; r < N; r++) nu_row_from_f32(T, Bf + r * K, (char *)B + r * nu_row_size(T, K), K);
        nu_gemm_args g = {.M = M, .N = N, .K = K, .ta = false, .tb = true, .a = A, .lda = K, .btype = T, .b = B,
                          .ldb = nu_row_size(T, K), .c = C0, .ldc = N, .alpha = 1.0f, .beta = 0.0f};
        NU_CHECK(nu_gemm_run(pool, &g, true) == NU_OK);
        g.c = C1;
        NU_CHECK(nu_gemm_run(pool, &g, false) == NU_OK);
        char lbl[64];
        snprintf(lbl, sizeof lbl, "nu_gemm_run %s fast vs ref", nu_type_name(T));
        NU_CHECK(nu_test_nmse(lbl, C1, C0, M * N, TOL_FAST));
        /* alpha/beta: C = 0.5*AB + 2*C */
        g.alpha = 0.5f;
        g.beta = 2.0f;
        memcpy(C1, C0, sizeof(float) * M * N);
        float *C2 = malloc(sizeof(float) * M * N);
        memcpy(C2, C0, sizeof(float) * M * N);
        NU_CHECK(nu_gemm_run(pool, &g, false) == NU_OK); /* C1 = 0.5*C0 + 2*C0 = 2.5 C0 */
        for (int64_t i = 0; i < M * N; i++) C2[i] *= 2.5f;
        snprintf(lbl, sizeof lbl, "nu_gemm_run %s alpha/beta", nu_type_name(T));
        NU_CHECK(nu_test_nmse(lbl, C1, C2, M * N, TOL_FAST));
        free(C2);
        free(B);
    }
    NU_CHECK(nu_gemm_flops(2, 3, 4) == 48.0);
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *y = nu_matmul(ctx, rand_f32(ctx, 4, (int64_t[]){2, 3, 4, 5}), t2(ctx, 5, 6), false, false);
    NU_CHECK(nu_matmul_node_flops(y) == 2.0 * 6 * 4 * 6 * 5); /* 6 batches of 4x6x5 */
    nu_ctx_free(ctx);
    nu_pool_free(pool);
    free(A);
    free(Bf);
    free(C0);
    free(C1);
}

/* ---------------------------------------------------------------- (2) PyTorch fixtures */

static nu_st_file *fx;

static nu_tensor *load(nu_ctx *ctx, const char *cs, const char *what) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", cs, what);
    nu_tensor *t = NULL;
    if (!nu_st_find(fx, key)) return NULL;
    if (nu_st_get_f32(fx, ctx, key, &t) != NU_OK) {
        fprintf(stderr, "fixture %s: %s\n", key, nu_last_error());
        exit(1);
    }
    return t;
}

static void compare(const char *cs, const char *what, const nu_tensor *got, const nu_tensor *want) {
    char lbl[128];
    snprintf(lbl, sizeof lbl, "%s %s", cs, what);
    NU_CHECK_MSG(got != NULL, "%s: missing", lbl);
    if (!got) return;
    NU_CHECK_MSG(nu_nelements(got) == nu_nelements(want), "%s: %lld elements, want %lld", lbl,
                 (long long)nu_nelements(got), (long long)nu_nelements(want));
    if (nu_nelements(got) != nu_nelements(want)) return;
    float *v = malloc(sizeof(float) * (size_t)nu_nelements(got));
    nu_tensor_get_f32(got, v);
    NU_CHECK(nu_test_nmse(lbl, v, want->data, nu_nelements(want), 1e-11));
    free(v);
}

static void fixture_case(const char *cs, bool linear, bool ta, bool tb) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *a = load(ctx, cs, "a"), *b = load(ctx, cs, "b"), *bias = load(ctx, cs, "bias");
    nu_tensor *want = load(ctx, cs, "y"), *r = load(ctx, cs, "r");
    NU_CHECK_MSG(a && b && want && r, "%s: fixture incomplete", cs);
    if (!(a && b && want && r)) {
        nu_ctx_free(ctx);
        return;
    }
    nu_set_param(a);
    nu_set_param(b);
    if (bias) nu_set_param(bias);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *y = linear ? nu_linear(ctx, a, b, bias) : nu_matmul(ctx, a, b, ta, tb);
    nu_tensor *loss = nu_sum_all(ctx, nu_mul(ctx, y, r));
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, y);
    nu_graph_expand(g, loss);
    nu_graph_backward(g, loss);
    nu_pool *pool = nu_pool_new(2);
    NU_CHECK(nu_graph_compute(g, pool) == NU_OK);
    compare(cs, "forward", y, want);
    nu_ctx_set_alloc_data(ctx, true);
    compare(cs, "grad a", a->grad, load(ctx, cs, "grad_a"));
    compare(cs, "grad b", b->grad, load(ctx, cs, "grad_b"));
    if (bias) compare(cs, "grad bias", bias->grad, load(ctx, cs, "grad_bias"));
    nu_pool_free(pool);
    nu_graph_free(g);
    nu_ctx_free(ctx);
}

static void test_fixtures(void) {
    if (nu_st_open(nu_test_fixture("matmul.safetensors"), &fx) != NU_OK) {
        NU_CHECK_MSG(false, "cannot open matmul fixtures: %s", nu_last_error());
        return;
    }
    fixture_case("mm_nn", false, false, false);
    fixture_case("mm_bcast_nn", false, false, false);
    fixture_case("mm_tn", false, true, false);
    fixture_case("mm_nt", false, false, true);
    fixture_case("mm_tt", false, true, true);
    fixture_case("mm_big_nt", false, false, true);
    fixture_case("lin_3d", true, false, false);
    fixture_case("lin_1d", true, false, false);
    fixture_case("lin_nobias", true, false, false);
    nu_st_close(fx);
}

/* ---------------------------------------------------------------- (3) finite differences */

typedef struct {
    bool ta, tb, linear;
} gc_opts;

static nu_tensor *gc_build(nu_ctx *ctx, nu_tensor **in, void *user) {
    const gc_opts *o = user;
    if (o->linear) return nu_linear(ctx, in[0], in[1], in[2]);
    return nu_matmul(ctx, in[0], in[1], o->ta, o->tb);
}

/* Every f32 operand is differentiated (typed weights are constants). */
static void gradcheck(const char *name, nu_tensor *a, nu_tensor *b, nu_tensor *bias, gc_opts o) {
    nu_tensor *in[3] = {a, b, bias};
    const int n_in = bias ? 3 : 2;
    for (int k = 0; k < n_in; k++)
        if (in[k]->type == NU_TYPE_F32) nu_set_param(in[k]);
    nu_test_gradcheck(name, gc_build, in, n_in, &o, 1e-2f, 2e-3, 40);
}

static void test_gradcheck(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    gradcheck("matmul nn", t2(ctx, 4, 5), t2(ctx, 5, 3), NULL, (gc_opts){0});
    gradcheck("matmul tn", t2(ctx, 5, 4), t2(ctx, 5, 3), NULL, (gc_opts){.ta = true});
    gradcheck("matmul nt", t2(ctx, 4, 5), t2(ctx, 3, 5), NULL, (gc_opts){.tb = true});
    gradcheck("matmul tt", t2(ctx, 5, 4), t2(ctx, 3, 5), NULL, (gc_opts){.ta = true, .tb = true});
    gradcheck("matmul broadcast", rand_f32(ctx, 4, (int64_t[]){2, 1, 3, 4}), rand_f32(ctx, 3, (int64_t[]){3, 4, 2}),
              NULL, (gc_opts){0});
    gradcheck("matmul batch a, shared b^T", rand_f32(ctx, 3, (int64_t[]){2, 3, 4}), t2(ctx, 5, 4), NULL,
              (gc_opts){.tb = true});
    gradcheck("linear 3-d + bias", rand_f32(ctx, 3, (int64_t[]){2, 3, 6}), t2(ctx, 4, 6),
              rand_f32(ctx, 1, (int64_t[]){4}), (gc_opts){.linear = true});
    /* typed weights: gradient w.r.t. x only (dA = dC W through the [K, N]-blocked kernel; with ta
     * the transpose of dC W) */
    gradcheck("linear q8_0 weight", t2(ctx, 3, 64), rand_typed(ctx, NU_TYPE_Q8_0, 2, (int64_t[]){5, 64}), NULL,
              (gc_opts){.linear = true});
    gradcheck("matmul a^T, f16 b^T", t2(ctx, 32, 3), rand_typed(ctx, NU_TYPE_F16, 2, (int64_t[]){4, 32}), NULL,
              (gc_opts){.ta = true, .tb = true});
    gradcheck("matmul a^T, q4_1 b", t2(ctx, 6, 3), rand_typed(ctx, NU_TYPE_Q4_1, 2, (int64_t[]){6, 32}), NULL,
              (gc_opts){.ta = true});
    nu_ctx_free(ctx);
}

int main(void) {
    test_f32_shapes();
    test_batched();
    test_views();
    test_weight_types();
    test_gemm_run();
    test_fixtures();
    test_gradcheck();
    return nu_test_summary("test_op_matmul");
}
