/*
 * gemm.c — the CPU GEMM (see gemm.h): single-threaded OpenBLAS sgemm calls on per-thread blocks
 * of C, typed weights dequantized tile by tile, and the scalar reference twin.
 *
 * Split over threads: each thread computes a block of C on its own (no shared packing, no
 * barrier). f32: the larger of M and N is cut into nth parts (N in multiples of 32, M of 16), so
 * each thread's sgemm keeps large panels. Typed B: N is cut when every thread gets >= 64
 * columns, so each thread dequantizes only its own weight rows; otherwise M is cut and the
 * (small) weight is dequantized by each thread. With M <= 4 rows, each weight row is dequantized
 * into L1 and used by AVX2 dot products directly (no tile, no sgemm).
 *
 * Typed tiles: for a thread's columns [n0, n1) the weight is walked in tiles of nb columns x kb
 * reduction steps (gemm_tiling): each tile is dequantized into the thread's scratch and
 * multiplied with one sgemm (beta = 1 after the first K tile). sgemm repacks A once per call, so
 * the extra traffic is M*K per nb output columns (about 1/(2*nb) of the FLOPs), the dequantized
 * tile is packed by sgemm like an f32 weight, and the scratch is nb*kb floats per thread.
 *
 * Reference twin: each C element is one dot product over k in order, accumulated in double and
 * rounded once, so it does not depend on the split. Tested by tests/test_op_matmul.c.
 */
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NU_X86 1
#endif

#include <cblas.h>

#include "cpu/gemm.h"

/* Tiles of 1024 output columns x 320 reduction steps (1.25 MiB of scratch per thread). OpenBLAS
 * (Cooperlake kernels on the test machine: P = 640, Q = 320) packs the activation panel once per
 * call and Q-block, so wide tiles avoid repacking it, and kb = Q adds no C traffic beyond what
 * sgemm's own K blocking does. Sweep on the 2-core EPYC, q8_0, CPU-time ratio to f32
 * (320x4096x2880 / 2048^3 / 640x1024x5760): 512x1024 0.89/0.94/0.92, 1024x640 0.95/0.98/0.95,
 * 1024x320 0.95/0.99/0.97, 2048x320 0.93/0.99/-. */
static nu_gemm_tiling gemm_tiling = {1024, 320};

nu_gemm_tiling nu_gemm_get_tiling(void) { return gemm_tiling; }
void nu_gemm_set_tiling(nu_gemm_tiling t) {
    NU_ASSERT(t.nb >= 32 && t.nb % 32 == 0 && t.kb >= 32 && t.kb % 32 == 0);
    gemm_tiling = t;
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Splits [0, n) into nth ranges of whole units (the last unit may be partial). */
static void split_units(int64_t n, int64_t unit, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t nu = (n + unit - 1) / unit, a, b;
    nu_split(nu, ith, nth, &a, &b);
    *lo = min64(a * unit, n);
    *hi = min64(b * unit, n);
}

/* ---------------------------------------------------------------- reference (scalar) */

static inline float ref_store(float alpha, double s, float beta, const float *c) {
    return beta == 0.0f ? (float)((double)alpha * s) : (float)((double)alpha * s + (double)beta * *c);
}

/* C[m, n] for m in [m0, m1), n in [n0, n1). */
static void ref_f32_block(bool ta, bool tb, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, float alpha,
                          const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                          int64_t ldc) {
    const int64_t as_m = ta ? 1 : lda, as_k = ta ? lda : 1;
    const int64_t bs_n = tb ? ldb : 1, bs_k = tb ? 1 : ldb;
    for (int64_t m = m0; m < m1; m++) {
        for (int64_t n = n0; n < n1; n++) {
            const float *a = A + m * as_m, *b = B + n * bs_n;
            double s = 0.0;
            for (int64_t k = 0; k < K; k++) s += (double)a[k * as_k] * (double)b[k * bs_k];
            float *c = C + m * ldc + n;
            *c = ref_store(alpha, s, beta, c);
        }
    }
}

/* Typed B: dequantize what is needed (a stored row, or a K x 32 column panel) into buf. */
static void ref_typed_part(const nu_gemm_args *g, int ith, int nth, float *buf) {
    int64_t n0, n1;
    split_units(g->N, 32, ith, nth, &n0, &n1);
    const char *b = g->b;
    const int64_t as_m = g->ta ? 1 : g->lda, as_k = g->ta ? g->lda : 1;
    if (g->tb) { /* stored [N, K]: row n is column n of op(B) */
        for (int64_t n = n0; n < n1; n++) {
            nu_dequant_row(g->btype, b + n * g->ldb, buf, g->K, false);
            for (int64_t m = 0; m < g->M; m++) {
                const float *a = g->a + m * as_m;
                double s = 0.0;
                for (int64_t k = 0; k < g->K; k++) s += (double)a[k * as_k] * (double)buf[k];
                float *c = g->c + m * g->ldc + n;
                *c = ref_store(g->alpha, s, g->beta, c);
            }
        }
        return;
    }
    /* stored [K, N]: panel of up to 32 columns, buf[k*32 + j] */
    for (int64_t p0 = n0; p0 < n1; p0 += 32) {
        int64_t w = min64(32, n1 - p0);
        for (int64_t k = 0; k < g->K; k++)
            nu_dequant_row(g->btype, b + k * g->ldb + nu_row_size(g->btype, p0), buf + k * 32, w, false);
        for (int64_t m = 0; m < g->M; m++) {
            const float *a = g->a + m * as_m;
            for (int64_t j = 0; j < w; j++) {
                double s = 0.0;
                for (int64_t k = 0; k < g->K; k++) s += (double)a[k * as_k] * (double)buf[k * 32 + j];
                float *c = g->c + m * g->ldc + p0 + j;
                *c = ref_store(g->alpha, s, g->beta, c);
            }
        }
    }
}

/* ---------------------------------------------------------------- f32 */

static void scale_block(float *C, int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float beta) {
    for (int64_t m = m0; m < m1; m++)
        for (int64_t n = n0; n < n1; n++) C[m * ldc + n] = beta == 0.0f ? 0.0f : beta * C[m * ldc + n];
}

static void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    NU_ASSERT(M < INT32_MAX && N < INT32_MAX && K < INT32_MAX && lda < INT32_MAX && ldb < INT32_MAX && ldc < INT32_MAX);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

static const float *a_at(const float *A, int64_t lda, bool ta, int64_t m, int64_t k) {
    return ta ? A + k * lda + m : A + m * lda + k;
}

/* this thread's block [m0,m1) x [n0,n1) of an f32 GEMM */
static void f32_split(int64_t M, int64_t N, int ith, int nth, int64_t *m0, int64_t *m1, int64_t *n0, int64_t *n1) {
    *m0 = 0; *m1 = M; *n0 = 0; *n1 = N;
    if (nth == 1) return;
    if (N >= M) split_units(N, 32, ith, nth, n0, n1);
    else split_units(M, 16, ith, nth, m0, m1);
}

static void f32_block(bool ta, bool tb, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                      bool fast) {
    if (m1 <= m0 || n1 <= n0) return;
    if (K == 0) {
        scale_block(C, ldc, m0, m1, n0, n1, beta);
        return;
    }
    if (!fast) {
        ref_f32_block(ta, tb, m0, m1, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const float *b = tb ? B + n0 * ldb : B + n0;
    sgemm(ta, tb, m1 - m0, n1 - n0, K, alpha, a_at(A, lda, ta, m0, 0), lda, b, ldb, beta, C + m0 * ldc + n0, ldc);
}

void nu_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc, bool fast) {
    f32_block(ta, tb, 0, M, 0, N, K, alpha, A, lda, B, ldb, beta, C, ldc, fast);
}

void nu_gemm_f32_part(int ith, int nth, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                      bool fast) {
    int64_t m0, m1, n0, n1;
    if (fast) f32_split(M, N, ith, nth, &m0, &m1, &n0, &n1);
    else { /* the reference splits columns only; every element's sum is the same either way */
        m0 = 0; m1 = M;
        split_units(N, 32, ith, nth, &n0, &n1);
    }
    f32_block(ta, tb, m0, m1, n0, n1, K, alpha, A, lda, B, ldb, beta, C, ldc, fast);
}

/* ---------------------------------------------------------------- typed B */

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* Small M (a few rows: time embeddings, pooled text, batch-1 tokens): sgemm on a dequantized
 * tile would spend its time writing and packing the tile, so each weight row (or row chunk) is
 * dequantized into L1 and used directly by AVX2 dot products / axpys. */
#define SMALL_M 4
#define SMALL_CHUNK 256 /* columns per chunk when B is stored [K, N] */

static size_t small_m_work(const nu_gemm_args *g) {
    int64_t k = g->K > SMALL_CHUNK ? g->K : SMALL_CHUNK;
    return (size_t)(SMALL_M * g->K + k + SMALL_M * SMALL_CHUNK) * sizeof(float);
}

size_t nu_gemm_thread_work(const nu_gemm_args *g) {
    if (g->btype == NU_TYPE_F32) return 0;
    size_t ref = (size_t)(g->tb ? g->K : 32 * g->K) * sizeof(float);
    size_t fast = (size_t)(min64(gemm_tiling.nb, round_up(g->N, 32)) * min64(gemm_tiling.kb, round_up(g->K, 32))) *
                  sizeof(float);
    size_t w = ref > fast ? ref : fast;
    if (g->M <= SMALL_M && small_m_work(g) > w) w = small_m_work(g);
    return (w + 63) & ~(size_t)63;
}

#ifdef NU_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Columns [n0, n1) of C for M <= SMALL_M rows. scratch: a copy of op(A) as [M][K], a row buffer
 * and (B stored [K, N]) M accumulator rows of SMALL_CHUNK. */
AVX2 static void small_m_part(const nu_gemm_args *g, int64_t n0, int64_t n1, float *scratch) {
    const int64_t M = g->M, K = g->K;
    float *a = scratch, *row = scratch + SMALL_M * K, *acc = row + (K > SMALL_CHUNK ? K : SMALL_CHUNK);
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++) a[m * K + k] = *a_at(g->a, g->lda, g->ta, m, k);
    const char *b = g->b;
    if (g->tb) { /* stored [N, K]: C[m, n] = dot(a_m, row n) */
        for (int64_t n = n0; n < n1; n++) {
            nu_dequant_row(g->btype, b + n * g->ldb, row, K, true);
            __m256 s[SMALL_M];
            for (int64_t m = 0; m < M; m++) s[m] = _mm256_setzero_ps();
            int64_t k = 0;
            for (; k + 8 <= K; k += 8) {
                const __m256 w = _mm256_loadu_ps(row + k);
                for (int64_t m = 0; m < M; m++) s[m] = _mm256_fmadd_ps(_mm256_loadu_ps(a + m * K + k), w, s[m]);
            }
            for (int64_t m = 0; m < M; m++) {
                float d = hsum8(s[m]);
                for (int64_t kk = k; kk < K; kk++) d += a[m * K + kk] * row[kk];
                float *c = g->c + m * g->ldc + n;
                *c = g->beta == 0.0f ? g->alpha * d : g->alpha * d + g->beta * *c;
            }
        }
        return;
    }
    /* stored [K, N]: C[m, chunk] = sum_k a[m, k] * row_k[chunk] */
    for (int64_t c0 = n0; c0 < n1; c0 += SMALL_CHUNK) {
        const int64_t w = min64(SMALL_CHUNK, n1 - c0);
        memset(acc, 0, sizeof(float) * (size_t)(M * SMALL_CHUNK));
        for (int64_t k = 0; k < K; k++) {
            nu_dequant_row(g->btype, b + k * g->ldb + nu_row_size(g->btype, c0), row, w, true);
            for (int64_t m = 0; m < M; m++) {
                const __m256 av = _mm256_set1_ps(a[m * K + k]);
                float *am = acc + m * SMALL_CHUNK;
                int64_t j = 0;
                for (; j + 8 <= w; j += 8)
                    _mm256_storeu_ps(am + j, _mm256_fmadd_ps(av, _mm256_loadu_ps(row + j), _mm256_loadu_ps(am + j)));
                for (; j < w; j++) am[j] += a[m * K + k] * row[j];
            }
        }
        for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < w; j++) {
                float *c = g->c + m * g->ldc + c0 + j;
                *c = g->beta == 0.0f ? g->alpha * acc[m * SMALL_CHUNK + j] : g->alpha * acc[m * SMALL_CHUNK + j] + g->beta * *c;
            }
    }
}
#endif

static void fast_typed_part(const nu_gemm_args *g, int ith, int nth, float *buf) {
    const int64_t NB = gemm_tiling.nb, KB = gemm_tiling.kb;
    int64_t m0 = 0, m1 = g->M, n0 = 0, n1 = g->N;
#ifdef NU_X86
    if (g->M <= SMALL_M) {
        split_units(g->N, 32, ith, nth, &n0, &n1);
        if (n1 > n0) small_m_part(g, n0, n1, buf);
        return;
    }
#endif
    if (nth > 1) {
        if (g->N >= 64 * (int64_t)nth) split_units(g->N, 32, ith, nth, &n0, &n1);
        else split_units(g->M, 16, ith, nth, &m0, &m1);
    }
    if (m1 <= m0 || n1 <= n0) return;
    const char *b = g->b;
    for (int64_t p0 = n0; p0 < n1; p0 += NB) {
        const int64_t nb = min64(NB, n1 - p0);
        for (int64_t k0 = 0; k0 < g->K; k0 += KB) {
            const int64_t kb = min64(KB, g->K - k0);
            int64_t ldt;
            if (g->tb) { /* tile buf[nb][kb] = stored rows p0.., columns k0.. */
                for (int64_t r = 0; r < nb; r++)
                    nu_dequant_row(g->btype, b + (p0 + r) * g->ldb + nu_row_size(g->btype, k0), buf + r * kb, kb, true);
                ldt = kb;
            } else { /* tile buf[kb][nb] = stored rows k0.., columns p0.. */
                for (int64_t r = 0; r < kb; r++)
                    nu_dequant_row(g->btype, b + (k0 + r) * g->ldb + nu_row_size(g->btype, p0), buf + r * nb, nb, true);
                ldt = nb;
            }
            sgemm(g->ta, g->tb, m1 - m0, nb, kb, g->alpha, a_at(g->a, g->lda, g->ta, m0, k0), g->lda, buf, ldt,
                  k0 == 0 ? g->beta : 1.0f, g->c + m0 * g->ldc + p0, g->ldc);
        }
    }
}

void nu_gemm_part(const nu_gemm_args *g, int ith, int nth, void *work, bool fast) {
    NU_ASSERT(nu_gemm_btype_ok(g->btype));
    if (g->btype == NU_TYPE_F32) {
        NU_ASSERT(g->ldb % sizeof(float) == 0);
        nu_gemm_f32_part(ith, nth, g->ta, g->tb, g->M, g->N, g->K, g->alpha, g->a, g->lda, g->b,
                         (int64_t)(g->ldb / sizeof(float)), g->beta, g->c, g->ldc, fast);
        return;
    }
    if (nu_type_info(g->btype)->is_quant) NU_ASSERT((g->tb ? g->K : g->N) % NU_QK == 0);
    if (g->M == 0 || g->N == 0) return;
    if (g->K == 0) {
        int64_t n0, n1;
        split_units(g->N, 32, ith, nth, &n0, &n1);
        scale_block(g->c, g->ldc, 0, g->M, n0, n1, g->beta);
        return;
    }
    if (fast) fast_typed_part(g, ith, nth, work);
    else ref_typed_part(g, ith, nth, work);
}

/* ---------------------------------------------------------------- one GEMM on a pool */

typedef struct {
    const nu_gemm_args *g;
    char *work;
    size_t per;
    bool fast;
} run_arg;

static void run_fn(int ith, int nth, void *arg) {
    run_arg *r = arg;
    nu_gemm_part(r->g, ith, nth, r->work ? r->work + (size_t)ith * r->per : NULL, r->fast);
}

nu_status nu_gemm_run(nu_pool *pool, const nu_gemm_args *g, bool use_ref) {
    if (!nu_gemm_btype_ok(g->btype))
        return nu_error(NU_ERR_UNSUPPORTED, "gemm: weight type %s is not supported", nu_type_name(g->btype));
    int nth = nu_pool_n_threads(pool);
    run_arg r = {g, NULL, nu_gemm_thread_work(g), !use_ref && nu_cpu_fast_enabled()};
    if (r.per) {
        r.work = aligned_alloc(64, r.per * (size_t)nth);
        if (!r.work) return nu_error(NU_ERR_NOMEM, "gemm: cannot allocate %zu KiB of scratch", r.per * (size_t)nth >> 10);
    }
    nu_pool_run(pool, run_fn, &r);
    free(r.work);
    return NU_OK;
}
