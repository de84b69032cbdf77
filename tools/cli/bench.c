/*
 * bench.c — `nuance bench [CASE...] [--json] [-t N] [--min-time S]`: times the engine on this
 * machine, like llama-bench. Every timed case is a real graph built through the public API and
 * executed by nu_graph_compute; each row carries a baseline measured in the same run:
 *   gemm       f32 C = A·B against OpenBLAS cblas_sgemm (same threads);
 *              f16 / q8_0 / q4_0 weights (y = x·Wᵀ) against the f32 weight GEMM of the same shape
 *   conv       3x3 convolution (padding 1, batch 1) against im2col + cblas_sgemm
 *   attention  fused attention against the unfused softmax(QKᵀ·s)V built from engine ops
 * Absolute numbers drift on shared machines; compare the ratios. Times are medians of repeats.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "nuance/tensor.h"

typedef struct {
    int threads;
    double min_time;
    bool json;
    int n_rows;
} bench_opts;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median time of fn over repeats: at least 3 runs and at least min_time seconds (max 50 runs),
 * after one warm-up run. */
static double time_it(void (*fn)(void *), void *arg, double min_time) {
    fn(arg);
    double t[50];
    int n = 0;
    double start = now();
    while (n < 50 && (n < 3 || now() - start < min_time)) {
        double t0 = now();
        fn(arg);
        t[n++] = now() - t0;
    }
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return t[n / 2];
}

static void fill(nu_tensor *t, uint64_t seed) {
    int64_t n = nu_nelements(t);
    float *v = malloc(sizeof(float) * (size_t)n);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        v[i] = (float)((double)(s >> 40) / 16777216.0 - 0.5);
    }
    nu_tensor_set_f32(t, v);
    free(v);
}

typedef struct {
    nu_graph *g;
    nu_pool *pool;
} graph_run;

static void run_graph(void *arg) {
    graph_run *r = arg;
    if (nu_graph_compute(r->g, r->pool) != NU_OK) {
        fprintf(stderr, "nuance bench: %s\n", nu_last_error());
        exit(1);
    }
}

static double time_graph(nu_ctx *ctx, nu_tensor *out, nu_pool *pool, double min_time) {
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, out);
    graph_run r = {g, pool};
    double t = time_it(run_graph, &r, min_time);
    nu_graph_free(g);
    return t;
}

static void row(bench_opts *o, const char *name, double seconds, double flops, const char *base_name, double base_s) {
    double gf = flops / seconds * 1e-9;
    if (o->json) {
        printf("%s\n  {\"name\": \"%s\", \"seconds\": %.6f, \"gflops\": %.2f, \"threads\": %d", o->n_rows ? "," : "[",
               name, seconds, gf, o->threads);
        if (base_name)
            printf(", \"baseline\": \"%s\", \"baseline_seconds\": %.6f, \"baseline_gflops\": %.2f, \"speedup\": %.3f",
                   base_name, base_s, flops / base_s * 1e-9, base_s / seconds);
        printf("}");
    } else {
        if (o->n_rows == 0)
            printf("%-36s %10s %9s   %-28s %10s %9s %8s\n", "case", "ms", "GFLOP/s", "baseline", "ms", "GFLOP/s", "ratio");
        printf("%-36s %10.2f %9.1f", name, seconds * 1e3, gf);
        if (base_name)
            printf("   %-28s %10.2f %9.1f %7.2fx", base_name, base_s * 1e3, flops / base_s * 1e-9, base_s / seconds);
        printf("\n");
    }
    fflush(stdout);
    o->n_rows++;
}

/* ---------------------------------------------------------------- GEMM */

typedef struct {
    int M, N, K;
    const float *A, *B;
    float *C;
} sgemm_arg;

static void run_sgemm(void *arg) {
    sgemm_arg *a = arg;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, a->M, a->N, a->K, 1.0f, a->A, a->K, a->B, a->N, 0.0f, a->C,
                a->N);
}

static void bench_gemm(bench_opts *o, nu_pool *pool) {
    static const int shapes[][3] = {{2048, 2048, 2048}, {320, 4096, 2880}, {640, 1024, 5760}};
    char name[96];
    for (int s = 0; s < 3; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        double flops = 2.0 * M * N * K;
        nu_ctx *ctx = nu_ctx_new(NULL);
        nu_tensor *a = nu_new_tensor_2d(ctx, NU_TYPE_F32, M, K);
        nu_tensor *b = nu_new_tensor_2d(ctx, NU_TYPE_F32, K, N);
        fill(a, 1);
        fill(b, 2);
        nu_ctx_set_alloc_data(ctx, false);
        double t = time_graph(ctx, nu_matmul(ctx, a, b, false, false), pool, o->min_time);
        /* baseline: OpenBLAS with the same number of threads, then back to 1 for the engine */
        float *c = malloc(sizeof(float) * (size_t)M * N);
        sgemm_arg sa = {M, N, K, a->data, b->data, c};
        openblas_set_num_threads(o->threads);
        double tb = time_it(run_sgemm, &sa, o->min_time);
        openblas_set_num_threads(1);
        free(c);
        snprintf(name, sizeof name, "gemm f32 %dx%dx%d", M, N, K);
        row(o, name, t, flops, "openblas sgemm", tb);

        /* weight types: y[M,N] = x[M,K] · W[N,K]ᵀ, against the same with f32 W */
        nu_ctx_set_alloc_data(ctx, true);
        nu_tensor *w32 = nu_new_tensor_2d(ctx, NU_TYPE_F32, N, K);
        fill(w32, 3);
        nu_ctx_set_alloc_data(ctx, false);
        double t32 = time_graph(ctx, nu_matmul(ctx, a, w32, false, true), pool, o->min_time);
        static const nu_type wt[] = {NU_TYPE_F16, NU_TYPE_Q8_0, NU_TYPE_Q4_0};
        for (int k = 0; k < 3; k++) {
            nu_ctx_set_alloc_data(ctx, true);
            nu_tensor *w = nu_new_tensor_2d(ctx, wt[k], N, K);
            float *tmp = malloc(sizeof(float) * (size_t)N * K);
            nu_tensor_get_f32(w32, tmp);
            nu_tensor_set_f32(w, tmp);
            free(tmp);
            nu_ctx_set_alloc_data(ctx, false);
            double tw = time_graph(ctx, nu_matmul(ctx, a, w, false, true), pool, o->min_time);
            snprintf(name, sizeof name, "gemm %s %dx%dx%d", nu_type_name(wt[k]), M, N, K);
            row(o, name, tw, flops, "gemm f32 weights (x*W^T)", t32);
        }
        nu_ctx_free(ctx);
    }
}

/* ---------------------------------------------------------------- conv */

typedef struct {
    int C, H, W, O;
    const float *x, *w;
    float *cols, *y;
} im2col_arg;

static void run_im2col(void *arg) {
    im2col_arg *a = arg;
    int HW = a->H * a->W;
    for (int c = 0; c < a->C; c++)
        for (int kh = 0; kh < 3; kh++)
            for (int kw = 0; kw < 3; kw++) {
                float *dst = a->cols + ((size_t)(c * 9 + kh * 3 + kw)) * HW;
                for (int h = 0; h < a->H; h++) {
                    int ih = h + kh - 1;
                    for (int w = 0; w < a->W; w++) {
                        int iw = w + kw - 1;
                        dst[h * a->W + w] = (ih >= 0 && ih < a->H && iw >= 0 && iw < a->W)
                                                ? a->x[((size_t)c * a->H + ih) * a->W + iw] : 0.0f;
                    }
                }
            }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, a->O, HW, a->C * 9, 1.0f, a->w, a->C * 9, a->cols, HW, 0.0f,
                a->y, HW);
}

static void bench_conv(bench_opts *o, nu_pool *pool) {
    static const int shapes[][2] = {{320, 64}, {640, 32}};
    char name[96];
    for (int s = 0; s < 2; s++) {
        int C = shapes[s][0], H = shapes[s][1];
        double flops = 2.0 * C * C * 9 * H * H;
        nu_ctx *ctx = nu_ctx_new(NULL);
        nu_tensor *x = nu_new_tensor_4d(ctx, NU_TYPE_F32, 1, C, H, H);
        nu_tensor *w = nu_new_tensor_4d(ctx, NU_TYPE_F32, C, C, 3, 3);
        nu_tensor *b = nu_new_tensor_1d(ctx, NU_TYPE_F32, C);
        fill(x, 4);
        fill(w, 5);
        fill(b, 6);
        nu_ctx_set_alloc_data(ctx, false);
        nu_conv2d_params cp = nu_conv2d_params_init();
        cp.padding[0] = cp.padding[1] = 1;
        double t = time_graph(ctx, nu_conv2d(ctx, x, w, b, &cp), pool, o->min_time);
        im2col_arg ia = {C, H, H, C, x->data, w->data, malloc(sizeof(float) * (size_t)C * 9 * H * H),
                         malloc(sizeof(float) * (size_t)C * H * H)};
        openblas_set_num_threads(o->threads);
        double tb = time_it(run_im2col, &ia, o->min_time);
        openblas_set_num_threads(1);
        free(ia.cols);
        free(ia.y);
        snprintf(name, sizeof name, "conv3x3 f32 %d %dx%d", C, H, H);
        row(o, name, t, flops, "im2col + openblas sgemm", tb);
        nu_ctx_free(ctx);
    }
}

/* ---------------------------------------------------------------- attention */

static void bench_attention(bench_opts *o, nu_pool *pool) {
    static const int shapes[][2] = {{4096, 4096}, {1024, 1024}, {4096, 77}};
    const int NH = 8, HD = 40;
    char name[96];
    for (int s = 0; s < 3; s++) {
        int Tq = shapes[s][0], Tk = shapes[s][1];
        double flops = 4.0 * NH * Tq * Tk * HD;
        nu_ctx *ctx = nu_ctx_new(NULL);
        nu_tensor *q = nu_new_tensor_4d(ctx, NU_TYPE_F32, 1, NH, Tq, HD);
        nu_tensor *k = nu_new_tensor_4d(ctx, NU_TYPE_F32, 1, NH, Tk, HD);
        nu_tensor *v = nu_new_tensor_4d(ctx, NU_TYPE_F32, 1, NH, Tk, HD);
        fill(q, 7);
        fill(k, 8);
        fill(v, 9);
        nu_ctx_set_alloc_data(ctx, false);
        double t = time_graph(ctx, nu_attention(ctx, q, k, v, NULL, false, 0.0f), pool, o->min_time);
        /* unfused: softmax(Q Kᵀ / sqrt(HD)) V, materialising NH x Tq x Tk scores */
        nu_tensor *sc = nu_scale(ctx, nu_matmul(ctx, q, k, false, true), 1.0f / sqrtf((float)HD));
        nu_tensor *un = nu_matmul(ctx, nu_softmax(ctx, sc), v, false, false);
        double tb = time_graph(ctx, un, pool, o->min_time);
        if (Tq == Tk) snprintf(name, sizeof name, "attention f32 %dx%d T=%d", NH, HD, Tq);
        else snprintf(name, sizeof name, "attention f32 %dx%d T=%dx%d", NH, HD, Tq, Tk);
        row(o, name, t, flops, "unfused softmax(QK^T)V", tb);
        nu_ctx_free(ctx);
    }
}

static const struct {
    const char *name;
    void (*fn)(bench_opts *, nu_pool *);
} groups[] = {{"gemm", bench_gemm}, {"conv", bench_conv}, {"attention", bench_attention}};
#define N_GROUPS (int)(sizeof groups / sizeof groups[0])

int nu_cli_bench(int argc, char **argv);
int nu_cli_bench(int argc, char **argv) {
    bench_opts o = {.threads = 0, .min_time = 1.0};
    bool want[N_GROUPS] = {0}, any = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            o.json = true;
        } else if ((!strcmp(argv[i], "-t") || !strcmp(argv[i], "--threads")) && i + 1 < argc) {
            o.threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--min-time") && i + 1 < argc) {
            o.min_time = atof(argv[++i]);
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: nuance bench [gemm|conv|attention ...] [--json] [-t THREADS] [--min-time SECONDS]\n");
            return 0;
        } else {
            int g = 0;
            while (g < N_GROUPS && strcmp(groups[g].name, argv[i])) g++;
            if (g == N_GROUPS) {
                fprintf(stderr, "nuance bench: unknown case '%s' (cases: gemm, conv, attention)\n", argv[i]);
                return 2;
            }
            want[g] = any = true;
        }
    }
    nu_pool *pool = nu_pool_new(o.threads);
    o.threads = nu_pool_n_threads(pool);
    if (!o.json) printf("nuance bench: %d threads, %s\n", o.threads, nu_blas_name());
    for (int g = 0; g < N_GROUPS; g++)
        if (!any || want[g]) groups[g].fn(&o, pool);
    if (o.json) printf("%s]\n", o.n_rows ? "\n" : "[");
    nu_pool_free(pool);
    return 0;
}
