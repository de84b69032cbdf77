/*
 * bench.c — `nuance bench [CASE...] [--json] [-t N] [--min-time S]`: times the engine on this
 * machine, like llama-bench. Every timed case is a real graph built through the public API and
 * executed by nu_graph_compute; each row carries a baseline measured in the same run:
 *   gemm       f32 C = A·B against OpenBLAS cblas_sgemm (same threads);
 *              f16 / q8_0 / q4_0 weights (y = x·Wᵀ) against the f32 weight GEMM of the same shape
 *   conv       3x3 convolution (padding 1, batch 1) against im2col + cblas_sgemm; f16 and q8_0
 *              (matrix-form) weights against the f32 weight
 *   attention  fused attention against the unfused softmax(QKᵀ·s)V built from engine ops
 *   unet       one SD 1.5 UNet CFG step (batch 2, random weights) at 256² and 512², f32/f16/q8_0
 *              weights, peak RSS per case (forked child)
 *   vae        one SD 1.5 VAE decode (random weights) at 256² and 512², f32 and f16, peak RSS per case
 * Absolute numbers drift on shared machines; compare the ratios. Times are medians of repeats.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cblas.h>

#include "nuance/models.h"
#include "nuance/metrics.h"
#include "nuance/tensor.h"
#include "nuance/vae.h"

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
    /* 320 @ 64x64 and 640 @ 32x32 run Winograd F(4,3); 1280 @ 8x8 (SD's lowest level) im2col + GEMM */
    static const int shapes[][2] = {{320, 64}, {640, 32}, {1280, 8}};
    char name[96];
    for (int s = 0; s < 3; s++) {
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
        /* typed weights, read a filter row / GEMM tile at a time: f16 [C, C, 3, 3] and q8_0 in
         * matrix form [C, C*9], against the f32 weight */
        static const nu_type wtypes[] = {NU_TYPE_F16, NU_TYPE_Q8_0};
        for (int ti = 0; ti < 2; ti++) {
            nu_ctx_set_alloc_data(ctx, true);
            nu_type wt = wtypes[ti];
            nu_tensor *w2 = nu_type_info(wt)->is_quant ? nu_new_tensor_2d(ctx, wt, C, (int64_t)C * 9)
                                                       : nu_new_tensor_4d(ctx, wt, C, C, 3, 3);
            fill(w2, 5);
            nu_ctx_set_alloc_data(ctx, false);
            nu_conv2d_params cq = cp;
            cq.kernel[0] = cq.kernel[1] = 3;
            double tq = time_graph(ctx, nu_conv2d(ctx, x, w2, b, &cq), pool, o->min_time);
            snprintf(name, sizeof name, "conv3x3 %s %d %dx%d", nu_type_name(wt), C, H, H);
            row(o, name, tq, flops, "conv3x3 f32 weights", t);
        }
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

/* ---------------------------------------------------------------- VAE decode */

/* FLOPs of one decode (convolutions and attention GEMMs; norms and activations are a few
 * percent): 2 * Cin * Cout * k^2 per output pixel. */
static double vae_decode_flops(const nu_vae_config *c, int h, int w) {
    double fl = 0, hw = (double)h * w;
    int ch = c->block_out_channels[c->n_blocks - 1];
    fl += 2.0 * c->latent_channels * c->latent_channels * hw + 2.0 * c->latent_channels * ch * 9 * hw;
    fl += 2 * 2 * (2.0 * ch * ch * 9 * hw);               /* mid resnets */
    fl += 4 * 2.0 * ch * ch * hw + 2 * 2.0 * hw * hw * ch; /* mid attention: 4 projections, QK^T and PV */
    for (int i = 0; i < c->n_blocks; i++) {
        int out = c->block_out_channels[c->n_blocks - 1 - i];
        for (int j = 0; j <= c->layers_per_block; j++) {
            fl += 2.0 * ch * out * 9 * hw + 2.0 * out * out * 9 * hw;
            if (ch != out) fl += 2.0 * ch * out * hw;
            ch = out;
        }
        if (i < c->n_blocks - 1) {
            hw *= 4;
            fl += 2.0 * ch * ch * 9 * hw;
        }
    }
    return fl + 2.0 * ch * c->out_channels * 9 * hw;
}

/* Child process: load the VAE file, decode one random [1, 4, h, w] latent, report the seconds
 * through the pipe. */
static int vae_child(const char *path, int threads, int h, int w, int fd) {
    nu_vae *vae;
    if (nu_vae_load(path, NULL, &vae) != NU_OK) {
        fprintf(stderr, "nuance bench: %s\n", nu_last_error());
        return 1;
    }
    int f = nu_vae_downscale(vae);
    float *z = malloc(sizeof(float) * 4 * (size_t)h * w), *img = malloc(sizeof(float) * 3 * (size_t)h * w * f * f);
    if (!z || !img) return 1;
    for (int64_t i = 0; i < 4 * (int64_t)h * w; i++) z[i] = (float)sin(0.37 * (double)i);
    nu_pool *pool = nu_pool_new(threads);
    double t0 = now();
    nu_status s = nu_vae_decode(vae, pool, z, 1, h, w, NULL, img);
    double t = now() - t0;
    if (s != NU_OK) {
        fprintf(stderr, "nuance bench: vae decode: %s\n", nu_last_error());
        return 1;
    }
    nu_pool_free(pool);
    nu_vae_free(vae);
    free(z);
    free(img);
    return write(fd, &t, sizeof t) == (ssize_t)sizeof t ? 0 : 1;
}

/* One decode of the SD 1.5 VAE architecture (random weights written to a temporary file) per
 * weight type and size, each in a fresh child process so that its peak RSS (weights mapped +
 * activations) is its own. sd.cpp's figures on this machine (issue 3): 19 s at 256², 82 s at
 * 512² (2 threads). */
static void bench_vae(bench_opts *o, nu_pool *pool) {
    (void)pool; /* each child makes its own (pool threads do not survive fork) */
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    nu_vae_config cfg = nu_vae_config_sd();
    static const nu_type types[] = {NU_TYPE_F32, NU_TYPE_F16};
    static const int sizes[] = {256, 512};
    for (int ti = 0; ti < 2; ti++) {
        char path[4096], name[96];
        snprintf(path, sizeof path, "%s/nuance-bench-vae-%d-%s.safetensors", tmp, (int)getpid(), nu_type_name(types[ti]));
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) { /* writing the weights takes all of them in memory: not in the parent */
            if (nu_vae_save_random(&cfg, types[ti], 1234, path) != NU_OK) {
                fprintf(stderr, "nuance bench: %s\n", nu_last_error());
                _exit(1);
            }
            _exit(0);
        }
        int st = 0;
        if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "nuance bench: cannot write random VAE weights to %s\n", path);
            exit(1);
        }
        for (int si = 0; si < 2; si++) {
            int px = sizes[si];
            int fds[2];
            if (pipe(fds) != 0) exit(1);
            fflush(stdout);
            pid = fork();
            if (pid == 0) {
                close(fds[0]);
                _exit(vae_child(path, o->threads, px / 8, px / 8, fds[1]));
            }
            close(fds[1]);
            double secs = -1;
            ssize_t got = pid > 0 ? read(fds[0], &secs, sizeof secs) : -1;
            close(fds[0]);
            struct rusage ru;
            if (pid < 0 || wait4(pid, &st, 0, &ru) != pid || got != (ssize_t)sizeof secs || !WIFEXITED(st) ||
                WEXITSTATUS(st) != 0) {
                fprintf(stderr, "nuance bench: vae decode child failed\n");
                unlink(path);
                exit(1);
            }
            double rss_mb = (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
            /* CPU time of the whole child (load + decode): on a busy shared machine, cpu / threads
             * is closer to what an idle machine's wall time would be */
            double cpu = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
                         1e-6 * (double)ru.ru_stime.tv_usec;
            double gf = vae_decode_flops(&cfg, px / 8, px / 8) / secs * 1e-9;
            snprintf(name, sizeof name, "vae-decode sd1.5 %s %dx%d", nu_type_name(types[ti]), px, px);
            if (!o->json && o->n_rows == 0) printf("%-36s %10s %9s\n", "case", "ms", "GFLOP/s");
            if (o->json) {
                printf("%s\n  {\"name\": \"%s\", \"seconds\": %.3f, \"peak_rss_mb\": %.1f, \"gflops\": %.2f, "
                       "\"cpu_seconds\": %.3f, \"threads\": %d}",
                       o->n_rows ? "," : "[", name, secs, rss_mb, gf, cpu, o->threads);
            } else {
                printf("%-36s %10.2f %9.1f   peak RSS %.0f MB, CPU %.1f s\n", name, secs * 1e3, gf, rss_mb, cpu);
            }
            fflush(stdout);
            o->n_rows++;
        }
        unlink(path);
    }
}

/* ---------------------------------------------------------------- UNet CFG step */

/* One classifier-free-guidance step of the SD 1.5 UNet (batch 2 = uncond + cond, 77 context
 * tokens, random weights made in memory by the library) per weight type and size, each in a
 * fresh child process so that its peak RSS (weights mapped + activations + work buffers) is its
 * own. sd.cpp on this machine (issue 3, 2 threads): 8.5 s per step at 256², 50 s at 512², peak
 * RSS 3.7 GB (f16, 512²). */
static void bench_unet(bench_opts *o, nu_pool *pool) {
    (void)pool; /* each child makes its own (pool threads do not survive fork) */
    static const nu_type types[] = {NU_TYPE_F32, NU_TYPE_F16, NU_TYPE_Q8_0};
    static const int sizes[] = {256, 512};
    for (int si = 0; si < 2; si++)
        for (int ti = 0; ti < 3; ti++) {
            int px = sizes[si], fds[2];
            if (pipe(fds) != 0) exit(1);
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) {
                close(fds[0]);
                nu_unet_bench_params p = nu_unet_bench_params_init();
                p.weight_type = types[ti];
                p.width = p.height = px;
                /* steps take seconds: the median of 3 after a warm-up at 256², one at 512² */
                p.runs = px <= 256 ? 3 : 1;
                p.pool = nu_pool_new(o->threads);
                nu_unet_bench_result r;
                if (nu_unet_bench_step(&p, &r) != NU_OK) {
                    fprintf(stderr, "nuance bench: unet: %s\n", nu_last_error());
                    _exit(1);
                }
                nu_pool_free(p.pool);
                _exit(write(fds[1], &r, sizeof r) == (ssize_t)sizeof r ? 0 : 1);
            }
            close(fds[1]);
            nu_unet_bench_result r;
            ssize_t got = pid > 0 ? read(fds[0], &r, sizeof r) : -1;
            close(fds[0]);
            int st = 0;
            struct rusage ru;
            if (pid < 0 || wait4(pid, &st, 0, &ru) != pid || got != (ssize_t)sizeof r || !WIFEXITED(st) ||
                WEXITSTATUS(st) != 0) {
                fprintf(stderr, "nuance bench: unet step child failed\n");
                exit(1);
            }
            double rss_mb = (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
            char name[96];
            snprintf(name, sizeof name, "unet sd1.5 %s %dx%d cfg-step", nu_type_name(types[ti]), px, px);
            if (!o->json && o->n_rows == 0) printf("%-36s %10s %9s\n", "case", "ms", "GFLOP/s");
            if (o->json) {
                printf("%s\n  {\"name\": \"%s\", \"seconds\": %.3f, \"peak_rss_mb\": %.1f, \"gflops\": %.2f, "
                       "\"weights_mb\": %.1f, \"activations_mb\": %.1f, \"first_seconds\": %.3f, \"threads\": %d}",
                       o->n_rows ? "," : "[", name, r.seconds, rss_mb, r.gflop / r.seconds,
                       (double)r.weight_bytes / 1048576.0, (double)r.activation_bytes / 1048576.0, r.first_seconds,
                       o->threads);
            } else {
                printf("%-36s %10.2f %9.1f   peak RSS %.0f MB (weights %.0f MB, activations %.0f MB)\n", name,
                       r.seconds * 1e3, r.gflop / r.seconds, rss_mb, (double)r.weight_bytes / 1048576.0,
                       (double)r.activation_bytes / 1048576.0);
            }
            fflush(stdout);
            o->n_rows++;
        }
}

/* ---------------------------------------------------------------- FID InceptionV3 */

/* pytorch-fid's InceptionV3 features (pool3 + logits) of synthetic 299x299 RGB images, the whole
 * path of `nuance eval`: preprocessing (resize is the identity at 299) and the network in batches
 * of $NU_BENCH_FID_BATCH (default 50, pytorch-fid's default batch_size; bench/vs_torch.py reads
 * the same variable). Weights: $NU_INCEPTION_WEIGHTS (a safetensors file with pytorch-fid names)
 * or random (the time does not depend on the values). Images: $NU_BENCH_FID_IMAGES (default 100;
 * the 1000 take ~50 s on 2 cores). One warm-up batch builds the graph; then all images are timed
 * once. The row's time is per image (images/s = 1000 / ms); FLOPs 11.43 G per image (2 per
 * multiply-add: convolutions 11.422 G + fc 0.004 G). Baseline: PyTorch in bench/vs_torch.py. */
static void bench_fid(bench_opts *o, nu_pool *pool) {
    const char *wpath = getenv("NU_INCEPTION_WEIGHTS");
    const char *nenv = getenv("NU_BENCH_FID_IMAGES");
    const char *benv = getenv("NU_BENCH_FID_BATCH");
    int n = nenv && atoi(nenv) > 0 ? atoi(nenv) : 100, batch = benv && atoi(benv) > 0 ? atoi(benv) : 50;
    nu_inception *net = NULL;
    nu_status st = wpath && *wpath ? nu_inception_load(wpath, &net) : nu_inception_new_random(1, &net);
    if (st != NU_OK) {
        fprintf(stderr, "nuance bench: %s\n", nu_last_error());
        exit(1);
    }
    nu_inception_set_batch(net, batch);
    const int S = NU_INCEPTION_SIZE;
    nu_image *imgs = calloc((size_t)n, sizeof *imgs);
    float *feat = malloc(sizeof(float) * NU_INCEPTION_DIMS * (size_t)n);
    float *logits = malloc(sizeof(float) * NU_INCEPTION_CLASSES * (size_t)n);
    for (int i = 0; i < n; i++) {
        imgs[i].width = imgs[i].height = S;
        imgs[i].channels = 3;
        imgs[i].pixels = malloc((size_t)S * S * 3);
        uint64_t z = (uint64_t)i * 0x9E3779B97F4A7C15ull + 7;
        for (size_t k = 0; k < (size_t)S * S * 3; k++) {
            z ^= z << 13; z ^= z >> 7; z ^= z << 17;
            imgs[i].pixels[k] = (uint8_t)(((k / 3) % S + (k / 3) / S + (z >> 60)) & 0xff);
        }
    }
    if (nu_inception_features(net, pool, imgs, n < batch ? n : batch, feat, logits) != NU_OK) {
        fprintf(stderr, "nuance bench: %s\n", nu_last_error());
        exit(1);
    }
    double t0 = now();
    if (nu_inception_features(net, pool, imgs, n, feat, logits) != NU_OK) {
        fprintf(stderr, "nuance bench: %s\n", nu_last_error());
        exit(1);
    }
    double t = (now() - t0) / n;
    char name[96];
    snprintf(name, sizeof name, "fid inception 299x299 b%d", batch);
    row(o, name, t, 11.4265e9, NULL, 0.0);
    if (!o->json) printf("    %.2f images/s over %d images (%s weights)\n", 1.0 / t, n, wpath && *wpath ? "file" : "random");
    for (int i = 0; i < n; i++) free(imgs[i].pixels);
    free(imgs);
    free(feat);
    free(logits);
    nu_inception_free(net);
}

static const struct {
    const char *name;
    void (*fn)(bench_opts *, nu_pool *);
} groups[] = {{"gemm", bench_gemm}, {"conv", bench_conv}, {"attention", bench_attention}, {"vae", bench_vae}, {"unet", bench_unet},
                {"fid", bench_fid}};
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
            printf("usage: nuance bench [gemm|conv|attention|vae|unet|fid ...] [--json] [-t THREADS] [--min-time SECONDS]\n");
            return 0;
        } else {
            int g = 0;
            while (g < N_GROUPS && strcmp(groups[g].name, argv[i])) g++;
            if (g == N_GROUPS) {
                fprintf(stderr, "nuance bench: unknown case '%s' (cases: gemm, conv, attention, vae, unet, fid)\n", argv[i]);
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
