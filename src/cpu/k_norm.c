/*
 * k_norm.c — CPU kernels of the norm op family: GROUP_NORM, LAYER_NORM, RMS_NORM and their
 * *_BACKWARD ops (mode 0: dx; mode 1: dw/db). Builders, formulas and the layout of the saved
 * statistics: src/ops/op_norm.c. Inputs are contiguous (the builders ensure it).
 *
 * Statistics: the reference twin is two-pass in double (mean, then sum of squared deviations).
 * The fast path (AVX2/FMA) is ONE pass accumulating sum and sum of squares in double
 * (var = E[x^2] - mean^2, clamped at 0). Its relative error in var is about
 * n * 2^-53 * (1 + mean^2/var) — below 1e-9 for n <= 1e6 and |mean|/std <= 100 — so double
 * precision makes the single pass safe for activations while reading x only once for the
 * stats (the second read, normalisation, is an FMA per element: y = x*scale + shift with
 * scale = rstd*w[c], shift = b[c] - mean*scale, as PyTorch's CPU kernel does).
 * Work split: group norm by (batch, group), layer/rms norm by rows, the dw/db reductions by
 * channel (each channel summed in a fixed order), so 1 and N threads give identical results.
 * Tested by tests/test_op_norm.c.
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

static const float *fdata(const nu_tensor *t) { return t ? (const float *)t->data : NULL; }

/* ================================================================ row helpers: reference */

/* Two-pass mean / biased variance in double. */
static void stats_ref(const float *x, int64_t n, double *mean, double *var) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    double mu = n ? s / (double)n : 0;
    double q = 0;
    for (int64_t i = 0; i < n; i++) q += ((double)x[i] - mu) * ((double)x[i] - mu);
    *mean = mu;
    *var = n ? q / (double)n : 0;
}

static double sumsq_ref(const float *x, int64_t n) {
    double q = 0;
    for (int64_t i = 0; i < n; i++) q += (double)x[i] * x[i];
    return q;
}

#if HAVE_X86
/* ================================================================ row helpers: AVX2/FMA */

FAST static inline double hsum_pd(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

/* One pass: sum and sum of squares in double. */
FAST static void sum_sumsq_fast(const float *x, int64_t n, double *sum, double *sumsq) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256d v0 = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), v1 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        s0 = _mm256_add_pd(s0, v0);
        s1 = _mm256_add_pd(s1, v1);
        q0 = _mm256_fmadd_pd(v0, v0, q0);
        q1 = _mm256_fmadd_pd(v1, v1, q1);
    }
    double s = hsum_pd(_mm256_add_pd(s0, s1)), q = hsum_pd(_mm256_add_pd(q0, q1));
    for (; i < n; i++) {
        s += x[i];
        q += (double)x[i] * x[i];
    }
    *sum = s;
    *sumsq = q;
}

static void stats_fast(const float *x, int64_t n, double *mean, double *var) {
    double s, q;
    sum_sumsq_fast(x, n, &s, &q);
    double mu = n ? s / (double)n : 0, v = n ? q / (double)n - mu * mu : 0;
    *mean = mu;
    *var = v > 0 ? v : 0;
}

/* y = x * scale + shift */
FAST static void affine_row_fast(const float *x, float *y, int64_t n, float scale, float shift) {
    __m256 a = _mm256_set1_ps(scale), b = _mm256_set1_ps(shift);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), a, b));
    for (; i < n; i++) y[i] = fmaf(x[i], scale, shift);
}

/* y = (x*rs + shift) * w + b   (w, b may be NULL: 1, 0) */
FAST static void ln_row_fast(const float *x, float *y, int64_t n, float rs, float shift, const float *w,
                             const float *b) {
    __m256 vr = _mm256_set1_ps(rs), vs = _mm256_set1_ps(shift);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 t = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), vr, vs);
        if (w) t = _mm256_mul_ps(t, _mm256_loadu_ps(w + i));
        if (b) t = _mm256_add_ps(t, _mm256_loadu_ps(b + i));
        _mm256_storeu_ps(y + i, t);
    }
    for (; i < n; i++) {
        float t = fmaf(x[i], rs, shift);
        if (w) t *= w[i];
        if (b) t += b[i];
        y[i] = t;
    }
}

/* y = x * rs * w */
FAST static void rms_row_fast(const float *x, float *y, int64_t n, float rs, const float *w) {
    __m256 vr = _mm256_set1_ps(rs);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + i), vr);
        if (w) t = _mm256_mul_ps(t, _mm256_loadu_ps(w + i));
        _mm256_storeu_ps(y + i, t);
    }
    for (; i < n; i++) y[i] = w ? x[i] * rs * w[i] : x[i] * rs;
}

/* sa = sum g, sb = sum g*x with g = dy * w (w NULL: g = dy), in double. */
FAST static void bw_sums_fast(const float *dy, const float *w, const float *x, int64_t n, double *sa, double *sb) {
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(dy + i);
        if (w) g = _mm256_mul_ps(g, _mm256_loadu_ps(w + i));
        __m256 xv = _mm256_loadu_ps(x + i);
        __m256d g0 = _mm256_cvtps_pd(_mm256_castps256_ps128(g)), g1 = _mm256_cvtps_pd(_mm256_extractf128_ps(g, 1));
        __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(xv)), x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1));
        a0 = _mm256_add_pd(a0, g0);
        a1 = _mm256_add_pd(a1, g1);
        b0 = _mm256_fmadd_pd(g0, x0, b0);
        b1 = _mm256_fmadd_pd(g1, x1, b1);
    }
    double A = hsum_pd(_mm256_add_pd(a0, a1)), Bs = hsum_pd(_mm256_add_pd(b0, b1));
    for (; i < n; i++) {
        double g = w ? (double)(dy[i] * w[i]) : dy[i];
        A += g;
        Bs += g * x[i];
    }
    *sa = A;
    *sb = Bs;
}

/* dx = a * (dy * w) + b * x + c   (w NULL: dy) */
FAST static void bw_dx_fast(const float *dy, const float *w, const float *x, float *dx, int64_t n, float a, float b,
                            float c) {
    __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vc = _mm256_set1_ps(c);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(dy + i);
        if (w) g = _mm256_mul_ps(g, _mm256_loadu_ps(w + i));
        _mm256_storeu_ps(dx + i, _mm256_fmadd_ps(va, g, _mm256_fmadd_ps(vb, _mm256_loadu_ps(x + i), vc)));
    }
    for (; i < n; i++) {
        float g = w ? dy[i] * w[i] : dy[i];
        dx[i] = fmaf(a, g, fmaf(b, x[i], c));
    }
}
#endif

/* ================================================================ GROUP_NORM */

typedef struct {
    int64_t B, C, S, G, Cg;
} gn_dims;

static gn_dims gn_dims_of(const nu_tensor *x, int groups) {
    gn_dims d;
    d.B = x->ne[0];
    d.C = x->ne[1];
    d.S = d.B * d.C != 0 ? nu_nelements(x) / (d.B * d.C) : 0;
    d.G = groups;
    d.Cg = d.C / groups;
    return d;
}

/* y = (x - mean) * rstd * w[c] + b[c] per (batch, group); stats -> extra [mean(B*G), rstd(B*G)]. */
static void k_group_norm(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *xt = dst->src[0];
    const float *x = xt->data, *w = fdata(dst->src[1]), *b = fdata(dst->src[2]);
    float *y = dst->data;
    gn_dims d = gn_dims_of(xt, dst->params[0]);
    float eps = nu_get_param_f(dst, 1);
    float *mean = (float *)((char *)dst->data + nu_nbytes(dst)), *rstd = mean + d.B * d.G;
    bool fast = HAVE_X86 && nu_cpu_use_fast(p);
    int64_t n = d.Cg * d.S, lo, hi;
    nu_split(d.B * d.G, p->ith, p->nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        int64_t bb = i / d.G, g = i % d.G;
        int64_t off = (bb * d.C + g * d.Cg) * d.S;
        double mu, var;
#if HAVE_X86
        if (fast) stats_fast(x + off, n, &mu, &var);
        else
#endif
            stats_ref(x + off, n, &mu, &var);
        double rs = 1.0 / sqrt(var + eps);
        mean[i] = (float)mu;
        rstd[i] = (float)rs;
        for (int64_t c = 0; c < d.Cg; c++) {
            int64_t cc = g * d.Cg + c;
            const float *xr = x + off + c * d.S;
            float *yr = y + off + c * d.S;
            float wc = w ? w[cc] : 1.0f, bc = b ? b[cc] : 0.0f;
#if HAVE_X86
            if (fast) {
                double scale = rs * wc;
                affine_row_fast(xr, yr, d.S, (float)scale, (float)(bc - mu * scale));
                continue;
            }
#endif
            for (int64_t s = 0; s < d.S; s++) yr[s] = (float)(((double)xr[s] - mu) * rs) * wc + bc;
        }
    }
}

/* mode 0: dx per (batch, group). mode 1: dst [1 or 2, C] = (dw; db) per channel. */
static void k_group_norm_backward(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *dyt = dst->src[0], *xt = dst->src[1];
    const float *dy = dyt->data, *x = xt->data, *st = dst->src[2]->data, *w = fdata(dst->src[3]);
    gn_dims d = gn_dims_of(xt, dst->params[1]);
    const float *mean = st, *rstd = st + d.B * d.G;
    bool fast = HAVE_X86 && nu_cpu_use_fast(p);
    int64_t lo, hi;
    if (dst->params[0] == 1) {
        float *out = dst->data;
        bool with_db = dst->ne[0] == 2;
        nu_split(d.C, p->ith, p->nth, &lo, &hi);
        for (int64_t c = lo; c < hi; c++) {
            double dw = 0, db = 0;
            for (int64_t bb = 0; bb < d.B; bb++) {
                int64_t off = (bb * d.C + c) * d.S, i = bb * d.G + c / d.Cg;
                double sdy = 0, sdyx = 0;
#if HAVE_X86
                if (fast) bw_sums_fast(dy + off, NULL, x + off, d.S, &sdy, &sdyx);
                else
#endif
                    for (int64_t s = 0; s < d.S; s++) {
                        sdy += dy[off + s];
                        sdyx += (double)dy[off + s] * x[off + s];
                    }
                dw += rstd[i] * (sdyx - mean[i] * sdy);
                db += sdy;
            }
            out[c] = (float)dw;
            if (with_db) out[d.C + c] = (float)db;
        }
        return;
    }
    float *dx = dst->data;
    int64_t n = d.Cg * d.S;
    nu_split(d.B * d.G, p->ith, p->nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        int64_t bb = i / d.G, g = i % d.G;
        int64_t off = (bb * d.C + g * d.Cg) * d.S;
        double mu = mean[i], rs = rstd[i];
        /* A = sum g, Bs = sum g*x with g = dy * w[c] */
        double A = 0, Bs = 0;
        for (int64_t c = 0; c < d.Cg; c++) {
            const float *dr = dy + off + c * d.S, *xr = x + off + c * d.S;
            double wc = w ? w[g * d.Cg + c] : 1.0, sdy = 0, sdyx = 0;
#if HAVE_X86
            if (fast) bw_sums_fast(dr, NULL, xr, d.S, &sdy, &sdyx);
            else
#endif
                for (int64_t s = 0; s < d.S; s++) {
                    sdy += dr[s];
                    sdyx += (double)dr[s] * xr[s];
                }
            A += wc * sdy;
            Bs += wc * sdyx;
        }
        double m1 = A / (double)n, m2 = rs * (Bs - mu * A) / (double)n; /* mean(g), mean(g*xhat) */
        for (int64_t c = 0; c < d.Cg; c++) {
            const float *dr = dy + off + c * d.S, *xr = x + off + c * d.S;
            float *o = dx + off + c * d.S;
            double wc = w ? w[g * d.Cg + c] : 1.0;
#if HAVE_X86
            if (fast) {
                /* dx = (rs*w)*dy + (-rs^2*m2)*x + (rs^2*m2*mu - rs*m1) */
                bw_dx_fast(dr, NULL, xr, o, d.S, (float)(rs * wc), (float)(-rs * rs * m2),
                           (float)(rs * rs * m2 * mu - rs * m1));
                continue;
            }
#endif
            for (int64_t s = 0; s < d.S; s++)
                o[s] = (float)(rs * (wc * dr[s] - m1 - ((double)xr[s] - mu) * rs * m2));
        }
    }
}

/* ================================================================ LAYER_NORM / RMS_NORM */

/* y = (x - mean) * rstd * w + b per row of the last dim; stats -> extra [mean(R), rstd(R)]. */
static void k_layer_norm(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *xt = dst->src[0];
    const float *x = xt->data, *w = fdata(dst->src[1]), *b = fdata(dst->src[2]);
    float *y = dst->data;
    int64_t D = xt->ne[xt->ndim - 1], R = D ? nu_nelements(xt) / D : 0;
    float eps = nu_get_param_f(dst, 1);
    float *mean = (float *)((char *)dst->data + nu_nbytes(dst)), *rstd = mean + R;
    bool fast = HAVE_X86 && nu_cpu_use_fast(p);
    int64_t lo, hi;
    nu_split(R, p->ith, p->nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        double mu, var;
#if HAVE_X86
        if (fast) stats_fast(xr, D, &mu, &var);
        else
#endif
            stats_ref(xr, D, &mu, &var);
        double rs = 1.0 / sqrt(var + eps);
        mean[r] = (float)mu;
        rstd[r] = (float)rs;
#if HAVE_X86
        if (fast) {
            ln_row_fast(xr, yr, D, (float)rs, (float)(-mu * rs), w, b);
            continue;
        }
#endif
        for (int64_t j = 0; j < D; j++) {
            float t = (float)(((double)xr[j] - mu) * rs);
            if (w) t *= w[j];
            if (b) t += b[j];
            yr[j] = t;
        }
    }
}

/* y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps) per row; rstd -> extra [R]. */
static void k_rms_norm(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *xt = dst->src[0];
    const float *x = xt->data, *w = fdata(dst->src[1]);
    float *y = dst->data;
    int64_t D = xt->ne[xt->ndim - 1], R = D ? nu_nelements(xt) / D : 0;
    float eps = nu_get_param_f(dst, 1);
    float *rstd = (float *)((char *)dst->data + nu_nbytes(dst));
    bool fast = HAVE_X86 && nu_cpu_use_fast(p);
    int64_t lo, hi;
    nu_split(R, p->ith, p->nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        double q;
#if HAVE_X86
        if (fast) {
            double s;
            sum_sumsq_fast(xr, D, &s, &q);
        } else
#endif
            q = sumsq_ref(xr, D);
        float rs = (float)(1.0 / sqrt(q / (double)D + eps));
        rstd[r] = rs;
#if HAVE_X86
        if (fast) {
            rms_row_fast(xr, yr, D, rs, w);
            continue;
        }
#endif
        for (int64_t j = 0; j < D; j++) yr[j] = w ? xr[j] * rs * w[j] : xr[j] * rs;
    }
}

/* Work buffer of the mode-1 (dw/db) reductions over rows: one double per output value. */
static size_t rows_bw_work_size(const nu_tensor *dst, int nth) {
    (void)nth;
    return dst->params[0] == 1 ? (size_t)nu_nelements(dst) * sizeof(double) : 0;
}

/* mode 1 of layer / rms norm: out[k, j] = sum over rows of (dy*xhat, dy)[r, j], xhat from stats.
 * Each thread owns a column range; rows are visited in order, so results are thread-count
 * independent. Layer: xhat = (x - mean) * rstd; rms: xhat = x * rstd (no mean, no db). */
static void rows_dw_db(const nu_compute_params *p, nu_tensor *dst, bool rms) {
    const nu_tensor *xt = dst->src[1];
    const float *dy = dst->src[0]->data, *x = xt->data, *st = dst->src[2]->data;
    int64_t D = xt->ne[xt->ndim - 1], R = D ? nu_nelements(xt) / D : 0;
    const float *mean = rms ? NULL : st, *rstd = rms ? st : st + R;
    bool with_db = dst->ne[0] == 2;
    double *aw = p->wdata, *ab = with_db ? aw + D : NULL;
    int64_t lo, hi;
    nu_split(D, p->ith, p->nth, &lo, &hi);
    for (int64_t j = lo; j < hi; j++) {
        aw[j] = 0;
        if (ab) ab[j] = 0;
    }
    for (int64_t r = 0; r < R; r++) {
        const float *dr = dy + r * D, *xr = x + r * D;
        double mu = mean ? mean[r] : 0.0, rs = rstd[r];
        for (int64_t j = lo; j < hi; j++) {
            aw[j] += (double)dr[j] * (((double)xr[j] - mu) * rs);
            if (ab) ab[j] += dr[j];
        }
    }
    float *out = dst->data;
    for (int64_t j = lo; j < hi; j++) {
        out[j] = (float)aw[j];
        if (ab) out[D + j] = (float)ab[j];
    }
}

static void k_layer_norm_backward(const nu_compute_params *p, nu_tensor *dst) {
    if (dst->params[0] == 1) {
        rows_dw_db(p, dst, false);
        return;
    }
    const nu_tensor *xt = dst->src[1];
    const float *dy = dst->src[0]->data, *x = xt->data, *st = dst->src[2]->data, *w = fdata(dst->src[3]);
    int64_t D = xt->ne[xt->ndim - 1], R = D ? nu_nelements(xt) / D : 0;
    const float *mean = st, *rstd = st + R;
    float *dx = dst->data;
    bool fast = HAVE_X86 && nu_cpu_use_fast(p);
    int64_t lo, hi;
    nu_split(R, p->ith, p->nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *dr = dy + r * D, *xr = x + r * D;
        float *o = dx + r * D;
        double mu = mean[r], rs = rstd[r], A = 0, Bs = 0;
#if HAVE_X86
        if (fast) {
            bw_sums_fast(dr, w, xr, D, &A, &Bs);
            double m1 = A / (double)D, m2 = rs * (Bs - mu * A) / (double)D;
            bw_dx_fast(dr, w, xr, o, D, (float)rs, (float)(-rs * rs * m2), (float)(rs * rs * m2 * mu - rs * m1));
            continue;
        }
#endif
        for (int64_t j = 0; j < D; j++) {
            double g = w ? (double)dr[j] * w[j] : dr[j];
            A += g;
            Bs += g * xr[j];
        }
        double m1 = A / (double)D, m2 = rs * (Bs - mu * A) / (double)D; /* mean(g), mean(g*xhat) */
        for (int64_t j = 0; j < D; j++) {
            double g = w ? (double)dr[j] * w[j] : dr[j];
            o[j] = (float)(rs * (g - m1 - ((double)xr[j] - mu) * rs * m2));
        }
    }
}

static void k_rms_norm_backward(const nu_compute_params *p, nu_tensor *dst) {
    if (dst->params[0] == 1) {
        rows_dw_db(p, dst, true);
        return;
    }
    const nu_tensor *xt = dst->src[1];
    const float *dy = dst->src[0]->data, *x = xt->data, *rstd = dst->src[2]->data, *w = fdata(dst->src[3]);
    int64_t D = xt->ne[xt->ndim - 1], R = D ? nu_nelements(xt) / D : 0;
    float *dx = dst->data;
    bool fast = HAVE_X86 && nu_cpu_use_fast(p);
    int64_t lo, hi;
    nu_split(R, p->ith, p->nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *dr = dy + r * D, *xr = x + r * D;
        float *o = dx + r * D;
        double rs = rstd[r], Bs = 0;
#if HAVE_X86
        if (fast) {
            double A;
            bw_sums_fast(dr, w, xr, D, &A, &Bs);
            /* dx = rs*g - x * rs^3 * mean(g*x) */
            bw_dx_fast(dr, w, xr, o, D, (float)rs, (float)(-rs * rs * rs * Bs / (double)D), 0.0f);
            continue;
        }
#endif
        for (int64_t j = 0; j < D; j++) Bs += (w ? (double)dr[j] * w[j] : dr[j]) * xr[j];
        double k = rs * rs * rs * Bs / (double)D;
        for (int64_t j = 0; j < D; j++) {
            double g = w ? (double)dr[j] * w[j] : dr[j];
            o[j] = (float)(rs * g - xr[j] * k);
        }
    }
}

void nu_cpu_register_norm(nu_cpu_kernel *tab) {
    tab[NU_OP_GROUP_NORM] = (nu_cpu_kernel){k_group_norm, NULL};
    tab[NU_OP_GROUP_NORM_BACKWARD] = (nu_cpu_kernel){k_group_norm_backward, NULL};
    tab[NU_OP_LAYER_NORM] = (nu_cpu_kernel){k_layer_norm, NULL};
    tab[NU_OP_LAYER_NORM_BACKWARD] = (nu_cpu_kernel){k_layer_norm_backward, rows_bw_work_size};
    tab[NU_OP_RMS_NORM] = (nu_cpu_kernel){k_rms_norm, NULL};
    tab[NU_OP_RMS_NORM_BACKWARD] = (nu_cpu_kernel){k_rms_norm_backward, rows_bw_work_size};
}
