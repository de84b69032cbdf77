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

/* ================================================================ MAX */

/* Sequential max; NaN is sticky (torch.max propagates NaN). Ties keep the first element. */
static float max_strided_ref(const char *p, int64_t nb, int64_t n) {
    float m = F32(p);
    for (int64_t i = 1; i < n; i++) {
        float v = F32(p + i * nb);
        if (v > m || v != v) m = v;
        if (m != m) break;
    }
    return m;
}

#if HAVE_X86
FAST static inline float hmax_ps(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

FAST static inline float hsum_ps(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* Contiguous row max (n >= 1). _mm256_max_ps drops a NaN in its first operand, so NaNs are
 * tracked in a separate unordered-compare mask. */
FAST static float max_row_fast(const float *x, int64_t n) {
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, nan = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        m0 = _mm256_max_ps(m0, v0);
        m1 = _mm256_max_ps(m1, v1);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v0, v1, _CMP_UNORD_Q));
    }
    float m = hmax_ps(_mm256_max_ps(m0, m1));
    if (_mm256_movemask_ps(nan)) return NAN;
    for (; i < n; i++) {
        if (x[i] > m || x[i] != x[i]) m = x[i];
    }
    return m;
}

/* Max along a non-last dim, unit-stride last dim: tiles of 16 outputs, sequential over k. */
FAST static void max_inner_fast(const nu_compute_params *p, nu_tensor *dst) {
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
            __m256 m0 = _mm256_loadu_ps((const float *)base), m1 = _mm256_loadu_ps((const float *)base + 8);
            __m256 n0 = _mm256_cmp_ps(m0, m0, _CMP_UNORD_Q), n1 = _mm256_cmp_ps(m1, m1, _CMP_UNORD_Q);
            for (int64_t k = 1; k < len; k++) {
                const float *x = (const float *)(base + k * nbd);
                __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
                m0 = _mm256_max_ps(m0, v0);
                m1 = _mm256_max_ps(m1, v1);
                n0 = _mm256_or_ps(n0, _mm256_cmp_ps(v0, v0, _CMP_UNORD_Q));
                n1 = _mm256_or_ps(n1, _mm256_cmp_ps(v1, v1, _CMP_UNORD_Q));
            }
            __m256 qnan = _mm256_set1_ps(NAN);
            _mm256_storeu_ps(out, _mm256_blendv_ps(m0, qnan, n0));
            _mm256_storeu_ps(out + 8, _mm256_blendv_ps(m1, qnan, n1));
        } else {
            for (int64_t j = 0; j < nl - j0; j++) out[j] = max_strided_ref(base + j * 4, nbd, len);
        }
    }
}
#endif

static void k_max(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *a = dst->src[0];
    int d = dst->params[0];
    int64_t len = a->ne[d], nbd = a->nb[d], n_out = nu_nelements(dst);
    const char *base = a->data;
    float *y = dst->data;
#if HAVE_X86
    int last = a->ndim - 1;
    if (nu_cpu_use_fast(p)) {
        if (d != last && a->nb[last] == (int64_t)sizeof(float) && a->ne[last] >= 16) {
            max_inner_fast(p, dst);
            return;
        }
    }
#endif
    int64_t lo, hi;
    nu_split(n_out, p->ith, p->nth, &lo, &hi);
    for (int64_t o = lo; o < hi; o++) {
        const char *row = base + offset_skip(a, d, o);
#if HAVE_X86
        if (nbd == (int64_t)sizeof(float) && nu_cpu_use_fast(p)) {
            y[o] = max_row_fast((const float *)row, len);
            continue;
        }
#endif
        y[o] = max_strided_ref(row, nbd, len);
    }
}

/* dst (shape of x) = dy at the first element of each reduced line that equals the max y (or is
 * NaN when y is NaN), 0 elsewhere — the gradient of torch.max(dim) through its indices.
 * src0 dy (keepdim shape), src1 x, src2 y (keepdim shape); params[0] dim. Scalar only: O(n). */
static void k_max_backward(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *dy = dst->src[0], *x = dst->src[1], *y = dst->src[2];
    int d = dst->params[0];
    int64_t len = x->ne[d], n_out = nu_nelements(y);
    int64_t lo, hi;
    nu_split(n_out, p->ith, p->nth, &lo, &hi);
    for (int64_t o = lo; o < hi; o++) {
        const char *xr = (const char *)x->data + offset_skip(x, d, o);
        char *dr = (char *)dst->data + offset_skip(dst, d, o);
        float m = F32((const char *)y->data + offset_skip(y, d, o));
        float g = F32((const char *)dy->data + offset_skip(dy, d, o));
        bool found = false;
        for (int64_t k = 0; k < len; k++) {
            float v = F32(xr + k * x->nb[d]);
            bool hit = !found && (v == m || (v != v && m != m));
            *(float *)(dr + k * dst->nb[d]) = hit ? g : 0.0f;
            found |= hit;
        }
    }
}

/* ================================================================ exp (fast path) */

#if HAVE_X86
/* exp_fast(x) — vectorised e^x for softmax and cross entropy (inputs are x - max <= 0).
 * Method: n = round(x * log2 e), r = x - n*ln2 with ln2 split in two (Cody-Waite: ln2_hi has 9
 * significant bits so n*ln2_hi is exact for |n| <= 127), |r| <= ln2/2; e^r by its Taylor series
 * to degree 7 in Horner form (truncation error r^8/8! * e^|r| < 7.3e-9 relative at |r| = 0.347);
 * the result is e^r * 2^n with 2^n built in the exponent bits.
 * Error bound: measured max relative error 7.9e-8 (1.3 ulp of f32) against double-precision exp
 * on a 1e-5 grid over [-87.3, 0] and at 1e6 random points in [-87.336, 88.3] (results that are
 * f32 denormals, x in [-87.3365, -87.33], carry only their absolute rounding error 1.4e-45).
 * Range: x < -87.3365 (e^x < FLT_MIN) returns 0; x > 88.376 is clamped (returns ~3.4e38, not
 * +inf); NaN returns NaN. Not used for inputs > 0 by this file. */
FAST static inline __m256 exp_fast(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3365447f), hi = _mm256_set1_ps(88.3762626f);
    __m256 isnan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 q = _mm256_set1_ps(1.0f / 5040.0f);
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f / 720.0f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f / 120.0f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f / 24.0f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f / 6.0f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0.5f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 res = _mm256_mul_ps(q, _mm256_castsi256_ps(e));
    res = _mm256_andnot_ps(under, res);
    return _mm256_blendv_ps(res, x, isnan);
}

/* Tail helper: up to 7 floats through exp_fast via a small buffer. */
FAST static inline void exp_fast_tail(const float *x, float *y, int64_t n) {
    float buf[8] = {0};
    for (int64_t i = 0; i < n; i++) buf[i] = x[i];
    _mm256_storeu_ps(buf, exp_fast(_mm256_loadu_ps(buf)));
    for (int64_t i = 0; i < n; i++) y[i] = buf[i];
}
#endif

/* ================================================================ SOFTMAX */

/* y[j] = exp(x[j] - m) / sum_k exp(x[k] - m), m = max_k x[k] (in place on a contiguous row). */
static void softmax_row_ref(float *y, int64_t n) {
    float m = y[0];
    for (int64_t j = 1; j < n; j++) m = y[j] > m ? y[j] : m;
    double s = 0;
    for (int64_t j = 0; j < n; j++) {
        y[j] = expf(y[j] - m);
        s += y[j];
    }
    for (int64_t j = 0; j < n; j++) y[j] = (float)(y[j] / s);
}

#if HAVE_X86
/* Lanes [0, k) set, for masked loads/stores of a row tail (0 <= k <= 8). */
FAST static inline __m256i tail_mask(int64_t k) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* In place on a contiguous row, 8 lanes at a time with a masked tail (no scalar loops). */
FAST static void softmax_row_fast(float *y, int64_t n) {
    const int64_t n8 = n & ~(int64_t)7;
    const __m256i mk = tail_mask(n - n8);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    /* max; NaNs tracked separately (see max_row_fast) */
    __m256 m0 = ninf, nan = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j < n8; j += 8) {
        __m256 v = _mm256_loadu_ps(y + j);
        m0 = _mm256_max_ps(m0, v);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    if (n8 < n) {
        __m256 v = _mm256_blendv_ps(ninf, _mm256_maskload_ps(y + n8, mk), _mm256_castsi256_ps(mk));
        m0 = _mm256_max_ps(m0, v);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    float m = _mm256_movemask_ps(nan) ? NAN : hmax_ps(m0);
    /* exp and sum (masked-out lanes contribute exp(-inf) = 0) */
    __m256 vm = _mm256_set1_ps(m), s0 = _mm256_setzero_ps();
    for (j = 0; j < n8; j += 8) {
        __m256 e = exp_fast(_mm256_sub_ps(_mm256_loadu_ps(y + j), vm));
        _mm256_storeu_ps(y + j, e);
        s0 = _mm256_add_ps(s0, e);
    }
    if (n8 < n) {
        __m256 v = _mm256_blendv_ps(ninf, _mm256_maskload_ps(y + n8, mk), _mm256_castsi256_ps(mk));
        __m256 e = exp_fast(_mm256_sub_ps(v, vm));
        _mm256_maskstore_ps(y + n8, mk, e);
        s0 = _mm256_add_ps(s0, e);
    }
    __m256 inv = _mm256_set1_ps((float)(1.0 / (double)hsum_ps(s0)));
    for (j = 0; j < n8; j += 8) _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_loadu_ps(y + j), inv));
    if (n8 < n) _mm256_maskstore_ps(y + n8, mk, _mm256_mul_ps(_mm256_maskload_ps(y + n8, mk), inv));
}
#endif

/* Rows over the last dim: the row is gathered into dst (contiguous), then normalised in place. */
static void k_softmax(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *a = dst->src[0];
    int last = a->ndim - 1;
    int64_t n = a->ne[last], rows = n ? nu_nelements(a) / n : 0;
    int64_t lo, hi;
    nu_split(rows, p->ith, p->nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const char *xr = (const char *)a->data + offset_skip(a, last, r);
        float *y = (float *)dst->data + r * n;
        if (a->nb[last] == (int64_t)sizeof(float)) memcpy(y, xr, (size_t)n * sizeof(float));
        else
            for (int64_t j = 0; j < n; j++) y[j] = F32(xr + j * a->nb[last]);
#if HAVE_X86
        if (nu_cpu_use_fast(p)) {
            softmax_row_fast(y, n);
            continue;
        }
#endif
        softmax_row_ref(y, n);
    }
}

#if HAVE_X86
FAST static void softmax_backward_row_fast(const float *g, const float *y, float *dx, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(g + j), _mm256_loadu_ps(y + j), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(g + j + 8), _mm256_loadu_ps(y + j + 8), s1);
    }
    double sd = hsum_ps(_mm256_add_ps(s0, s1));
    for (; j < n; j++) sd += (double)g[j] * y[j];
    float sf = (float)sd;
    __m256 vs = _mm256_set1_ps(sf);
    for (j = 0; j + 8 <= n; j += 8)
        _mm256_storeu_ps(dx + j, _mm256_mul_ps(_mm256_loadu_ps(y + j), _mm256_sub_ps(_mm256_loadu_ps(g + j), vs)));
    for (; j < n; j++) dx[j] = y[j] * (g[j] - sf);
}
#endif

/* dx = y * (dy - sum(dy * y)) per row; src0 dy (any strides), src1 y (contiguous softmax output). */
static void k_softmax_backward(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *dy = dst->src[0], *yt = dst->src[1];
    int last = dst->ndim - 1;
    int64_t n = dst->ne[last], rows = n ? nu_nelements(dst) / n : 0;
    int64_t lo, hi;
    nu_split(rows, p->ith, p->nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const char *gr = (const char *)dy->data + offset_skip(dy, last, r);
        const char *yr = (const char *)yt->data + offset_skip(yt, last, r);
        int64_t gs = dy->nb[last], ys = yt->nb[last];
        float *dx = (float *)dst->data + r * n;
#if HAVE_X86
        if (gs == 4 && ys == 4 && nu_cpu_use_fast(p)) {
            softmax_backward_row_fast((const float *)gr, (const float *)yr, dx, n);
            continue;
        }
#endif
        double s = 0;
        for (int64_t j = 0; j < n; j++) s += (double)F32(gr + j * gs) * F32(yr + j * ys);
        for (int64_t j = 0; j < n; j++) dx[j] = F32(yr + j * ys) * (F32(gr + j * gs) - (float)s);
    }
}

/* ================================================================ CROSS_ENTROPY */

static int64_t target_at(const nu_tensor *t, int64_t i, int64_t n_classes) {
    const char *p = (const char *)t->data + i * t->nb[0];
    int64_t v = t->type == NU_TYPE_I64 ? *(const int64_t *)p : *(const int32_t *)p;
    NU_ASSERT(v >= 0 && v < n_classes); /* cross_entropy: target class out of range */
    return v;
}

/* logsumexp of a contiguous row: m + log(sum exp(x - m)). */
#if HAVE_X86
FAST static double lse_row_fast(const float *x, int64_t n) {
    float m = max_row_fast(x, n);
    __m256 vm = _mm256_set1_ps(m), s0 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) s0 = _mm256_add_ps(s0, exp_fast(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm)));
    float t[8], e[8];
    int64_t k = n - j;
    for (int64_t i = 0; i < k; i++) t[i] = x[j + i] - m;
    if (k) exp_fast_tail(t, e, k);
    double s = hsum_ps(s0);
    for (int64_t i = 0; i < k; i++) s += e[i];
    return m + log(s);
}

/* dx[j] = exp(x[j] - l) * g for a contiguous row. */
FAST static void ce_backward_row_fast(const float *x, float *dx, int64_t n, float l, float g) {
    __m256 vl = _mm256_set1_ps(l), vg = _mm256_set1_ps(g);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(dx + j, _mm256_mul_ps(exp_fast(_mm256_sub_ps(_mm256_loadu_ps(x + j), vl)), vg));
    float t[8];
    int64_t k = n - j;
    for (int64_t i = 0; i < k; i++) t[i] = x[j + i] - l;
    if (k) exp_fast_tail(t, dx + j, k);
    for (; j < n; j++) dx[j] *= g;
}
#endif

static double lse_row_ref(const float *x, int64_t n) {
    float m = x[0];
    for (int64_t j = 1; j < n; j++) m = x[j] > m ? x[j] : m;
    double s = 0;
    for (int64_t j = 0; j < n; j++) s += expf(x[j] - m);
    return m + log(s);
}

static double lse_row(const nu_compute_params *p, const float *x, int64_t n) {
#if HAVE_X86
    if (nu_cpu_use_fast(p)) return lse_row_fast(x, n);
#endif
    return lse_row_ref(x, n);
}

static size_t ce_work_size(const nu_tensor *dst, int nth) {
    (void)nth;
    return (size_t)dst->src[0]->ne[0] * sizeof(double);
}

/* loss = mean_i (lse_i - x[i, t_i]); lse_i saved after dst's data (node->extra). Per-row losses
 * go to the work buffer and are added in row order by thread 0 (thread-count independent). */
static void k_cross_entropy(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *x = dst->src[0], *tg = dst->src[1];
    int64_t N = x->ne[0], C = x->ne[1];
    float *lse = (float *)((char *)dst->data + nu_nbytes(dst));
    double *loss = p->wdata;
    int64_t lo, hi;
    nu_split(N, p->ith, p->nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        const float *row = (const float *)x->data + i * C;
        double l = lse_row(p, row, C);
        lse[i] = (float)l;
        loss[i] = l - row[target_at(tg, i, C)];
    }
    nu_compute_barrier(p);
    if (p->ith == 0) {
        double s = 0;
        for (int64_t i = 0; i < N; i++) s += loss[i];
        *(float *)dst->data = (float)(s / (double)N);
    }
}

/* dx[i, c] = (exp(x[i, c] - lse_i) - [c == t_i]) * gy / N.
 * src0 gy [1], src1 logits (contiguous), src2 targets, src3 lse [N]. */
static void k_cross_entropy_backward(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *gy = dst->src[0], *x = dst->src[1], *tg = dst->src[2], *lt = dst->src[3];
    int64_t N = x->ne[0], C = x->ne[1];
    float g = F32(gy->data) / (float)N;
    int64_t lo, hi;
    nu_split(N, p->ith, p->nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        const float *row = (const float *)x->data + i * C;
        float *dx = (float *)dst->data + i * C;
        float l = F32((const char *)lt->data + i * lt->nb[0]);
        int64_t t = target_at(tg, i, C);
        int64_t j = 0;
#if HAVE_X86
        if (nu_cpu_use_fast(p)) {
            ce_backward_row_fast(row, dx, C, l, g);
            j = C;
        }
#endif
        for (; j < C; j++) dx[j] = expf(row[j] - l) * g;
        dx[t] -= g;
    }
}

void nu_cpu_register_reduce(nu_cpu_kernel *tab) {
    tab[NU_OP_SUM] = (nu_cpu_kernel){k_sum, sum_work_size};
    tab[NU_OP_MAX] = (nu_cpu_kernel){k_max, NULL};
    tab[NU_OP_MAX_BACKWARD] = (nu_cpu_kernel){k_max_backward, NULL};
    tab[NU_OP_SOFTMAX] = (nu_cpu_kernel){k_softmax, NULL};
    tab[NU_OP_SOFTMAX_BACKWARD] = (nu_cpu_kernel){k_softmax_backward, NULL};
    tab[NU_OP_CROSS_ENTROPY] = (nu_cpu_kernel){k_cross_entropy, ce_work_size};
    tab[NU_OP_CROSS_ENTROPY_BACKWARD] = (nu_cpu_kernel){k_cross_entropy_backward, NULL};
}
