/*
 * k_unary.c — row functions of the unary activations (forward and derivative) used by the
 * UNARY / UNARY_BACKWARD kernels in k_elementwise.c: a scalar reference twin on libm and an
 * AVX2/FMA path on our own polynomial exp / tanh / normal-tail approximations.
 *
 * Formulas (the PyTorch definitions; quick_gelu as OpenAI CLIP):
 *   silu(x) = x*sigmoid(x)            gelu(x) = x*Phi(x), Phi = normal CDF = erfc(-x/sqrt2)/2
 *   gelu_tanh(x) = 0.5x(1+tanh(u)), u = sqrt(2/pi)(x + 0.044715x^3), evaluated as x*sigmoid(2u)
 *     (the same value without the cancellation of 1+tanh(u) for x << 0)
 *   quick_gelu(x) = x*sigmoid(1.702x)  sigmoid(x) = 1/(1+exp(-x))
 * Derivatives (UNARY_BACKWARD: dx = dy * f'(x)):
 *   silu' = s(1 + x(1-s)), s = sigmoid(x)     gelu' = Phi(x) + x phi(x), phi = exp(-x^2/2)/sqrt(2pi)
 *   gelu_tanh' = s + 2x s(1-s) u', s = sigmoid(2u), u' = sqrt(2/pi)(1 + 3*0.044715x^2)
 *     (= 0.5(1+t) + 0.5x(1-t^2)u' with t = tanh u, as PyTorch's GeluBackward)
 *   quick_gelu' = s + 1.702x s(1-s)   sigmoid' = s(1-s)   tanh' = 1-t^2   relu' = [x>0]
 *   sqr' = 2x   sqrt' = 0.5/sqrt(x)   exp' = exp(x)   ln' = 1/x
 *
 * Reference twin: each formula in double precision (libm exp/erfc/tanh) from the f32 input,
 * rounded once (<= 0.5 ulp measured, except ln/sqrt/sqr which are the f32 libm/IEEE ops).
 *
 * Fast path (AVX2/FMA), polynomial coefficients fitted by us (weighted least squares iterated
 * towards minimax on Chebyshev nodes). Max errors measured against double-precision math on
 * 2M-point grids by tests/test_op_elementwise.c (which asserts these bounds):
 *   exp:  n = round(x/ln2), r = x - n ln2 (two-constant reduction with FMA), e^r = 1 + r +
 *         r^2 P4(r) (fit rel. error 3e-9 on |r| <= ln2/2), scaled by 2^(n/2) * 2^(n - n/2) so that
 *         overflow to inf and gradual underflow to denormals/0 come out naturally.
 *         0.98 ulp on [-87, 88.5].
 *   tanh: |x| < 0.625: x + x^3 P4(x^2) (fit rel. error 4e-9); else sign(x)(1 - 2/(e^{2|x|}+1)).
 *         1.3 ulp.
 *   sigmoid(t): e = exp(-|t|) <= 1, d = 1/(1+e): sigmoid = d (t >= 0) or e*d (t < 0), and 1 - s
 *         the other one, so neither overflows nor cancels. sigmoid 2.6 ulp, silu 3.0 ulp,
 *         quick_gelu 3.1 ulp (1.702x passed to exp as product + FMA remainder).
 *   gelu_tanh: 2u = K1 x + K2 x^3 evaluated as an unevaluated hi + lo sum (split constants, FMA
 *         remainders, two-sum) so the tail x*sigmoid(2u) stays relatively accurate: 3.0 ulp on
 *         [-9.5, 12] (below, exp(-|2u|) is denormal and the relative error grows; values < 1e-32).
 *   Phi:  Q(z) = erfc(z/sqrt2)/2 for z = |x| as t*exp(-z^2/2 + P10(t)), t = 1/(1+0.3z) (fit rel.
 *         error 8e-9 for z in [0, 14]); the exponent is passed to exp as the unevaluated sum
 *         -hi - (lo - P) with hi + lo = z^2/2 exactly (FMA), so the large z^2/2 term adds no
 *         rounding. Phi = x > 0 ? 1 - Q : Q. gelu: 6.9 ulp (8e-7 relative) on [-12, 12].
 *   Derivatives: |error| <= 1.6e-7 * (1 + |f'(x)|) for all kinds.
 * Speed (1 thread, [2,320,32,32], this machine): silu ~9x, gelu ~11x faster than the twin.
 * Tested by tests/test_op_elementwise.c (accuracy grids, special values +-inf/NaN/denormal
 * tails, fast vs reference through graphs, PyTorch fixtures, gradchecks).
 */
#include <math.h>

#include "core/internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NU_HAVE_X86 1
#endif

/* Exported to k_elementwise.c (declared there as well). */

#define K_INV_SQRT_2PI 0.39894228040143267794f
#define K_GELU_B 0.79788456080286535588f /* sqrt(2/pi) (derivative only; forward: v_gelu_2u) */
#define K_GELU_C 0.044715f
#define K_QUICK 1.702f

/* ---------------------------------------------------------------- scalar reference (libm) */
/* The reference twin evaluates each formula in double precision (libm's exp/erfc/tanh/log) from
 * the f32 input and rounds once, so it is within ~0.5 ulp of the exact value: a golden twin for
 * the fast path, and no cancellation or argument-rounding effects in the tails. */

#define D_SQRT1_2 0.70710678118654752440
#define D_INV_SQRT_2PI 0.39894228040143267794
#define D_GELU_B 0.79788456080286535588 /* sqrt(2/pi) */
#define D_GELU_C 0.044715
#define D_QUICK ((double)K_QUICK) /* 1.702f, as PyTorch evaluates 1.702 * x in f32 */

static inline double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double phi_cdf_d(double x) { return 0.5 * erfc(-x * D_SQRT1_2); }

static float unary_ref(int kind, float xf) {
    double x = xf;
    switch (kind) {
    case NU_UNARY_SILU: return (float)(x * sigmoid_d(x));
    case NU_UNARY_GELU: return (float)(x * phi_cdf_d(x));
    case NU_UNARY_GELU_TANH: return (float)(x * sigmoid_d(2.0 * D_GELU_B * (x + D_GELU_C * x * x * x)));
    case NU_UNARY_QUICK_GELU: return (float)(x * sigmoid_d(D_QUICK * x));
    case NU_UNARY_SIGMOID: return (float)sigmoid_d(x);
    case NU_UNARY_TANH: return (float)tanh(x);
    case NU_UNARY_RELU: return xf < 0.0f ? 0.0f : xf; /* NaN passes through, as torch.relu */
    case NU_UNARY_SQR: return xf * xf;
    case NU_UNARY_SQRT: return sqrtf(xf);
    case NU_UNARY_EXP: return (float)exp(x);
    case NU_UNARY_LOG: return logf(xf);
    default: nu_abort(__FILE__, __LINE__, "unknown unary kind %d", kind);
    }
}

/* f'(x) */
static double unary_deriv_ref(int kind, float xf) {
    double x = xf;
    switch (kind) {
    case NU_UNARY_SILU: {
        double s = sigmoid_d(x);
        return s * (1.0 + x * (1.0 - s));
    }
    case NU_UNARY_GELU: return phi_cdf_d(x) + x * D_INV_SQRT_2PI * exp(-0.5 * x * x);
    case NU_UNARY_GELU_TANH: {
        double x2 = x * x;
        double s = sigmoid_d(2.0 * D_GELU_B * (x + D_GELU_C * x2 * x));
        double du = D_GELU_B * (1.0 + 3.0 * D_GELU_C * x2);
        return s + 2.0 * x * s * (1.0 - s) * du;
    }
    case NU_UNARY_QUICK_GELU: {
        double s = sigmoid_d(D_QUICK * x);
        return s + D_QUICK * x * s * (1.0 - s);
    }
    case NU_UNARY_SIGMOID: {
        double s = sigmoid_d(x);
        return s * (1.0 - s);
    }
    case NU_UNARY_TANH: {
        double t = tanh(x);
        return 1.0 - t * t;
    }
    case NU_UNARY_RELU: return xf > 0.0f ? 1.0 : 0.0;
    case NU_UNARY_SQR: return 2.0 * x;
    case NU_UNARY_SQRT: return 0.5 / sqrt(x);
    case NU_UNARY_EXP: return exp(x);
    case NU_UNARY_LOG: return 1.0 / x;
    default: nu_abort(__FILE__, __LINE__, "unknown unary kind %d", kind);
    }
}

/* ---------------------------------------------------------------- AVX2/FMA approximations */
#ifdef NU_HAVE_X86
#define TGT __attribute__((target("avx2,fma")))

#define V1(c) _mm256_set1_ps(c)

/* exp(a + b) where a + b is split so that a may be large and exactly known and b carries a
 * correction (b = 0 for plain exp). See the header comment for the error bound. */
TGT static inline __m256 v_expsum(__m256 a, __m256 b) {
    const __m256 lo = V1(-110.0f), hi = V1(95.0f);
    __m256 s = _mm256_add_ps(a, b);
    __m256 sc = _mm256_min_ps(_mm256_max_ps(s, lo), hi);
    /* when clamped (or NaN), continue with the clamped sum alone */
    __m256 clamped = _mm256_cmp_ps(s, sc, _CMP_NEQ_UQ);
    a = _mm256_blendv_ps(a, sc, clamped);
    b = _mm256_andnot_ps(clamped, b);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(sc, V1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, V1(6.931471825e-01f), a); /* ln2 hi: nearest float to ln 2 */
    r = _mm256_add_ps(r, b);
    r = _mm256_fnmadd_ps(n, V1(-1.904654323e-09f), r);       /* ln2 lo = ln2 - hi */
    __m256 p = V1(0.0013814610429108143f);
    p = _mm256_fmadd_ps(p, r, V1(0.008368710055947304f));
    p = _mm256_fmadd_ps(p, r, V1(0.04166838899254799f));
    p = _mm256_fmadd_ps(p, r, V1(0.1666652113199234f));
    p = _mm256_fmadd_ps(p, r, V1(0.4999999403953552f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, V1(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    __m256 res = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    return _mm256_blendv_ps(res, s, _mm256_cmp_ps(s, s, _CMP_UNORD_Q)); /* NaN in, NaN out */
}

TGT static inline __m256 v_exp(__m256 x) { return v_expsum(x, _mm256_setzero_ps()); }

/* sigmoid(t) and 1 - sigmoid(t), both to full relative accuracy and without overflow: with
 * e = exp(-|t|) <= 1 and d = 1/(1+e), sigmoid(|t|) = d and sigmoid(-|t|) = e*d. t is given as
 * the unevaluated sum th + tl (tl = 0 or the FMA remainder of a product). */
TGT static inline void v_sigmoid2(__m256 th, __m256 tl, __m256 *s, __m256 *sc) {
    const __m256 sign = V1(-0.0f);
    __m256 neg = _mm256_and_ps(th, sign);
    tl = _mm256_and_ps(tl, _mm256_cmp_ps(tl, tl, _CMP_ORD_Q)); /* inf*k - inf = NaN remainder -> 0 */
    /* -|t| = -|th| - sign(th)*tl */
    __m256 e = v_expsum(_mm256_or_ps(th, sign), _mm256_xor_ps(_mm256_xor_ps(tl, sign), neg));
    __m256 d = _mm256_div_ps(V1(1.0f), _mm256_add_ps(V1(1.0f), e));
    __m256 ed = _mm256_mul_ps(e, d);
    __m256 isneg = _mm256_cmp_ps(th, _mm256_setzero_ps(), _CMP_LT_OQ);
    *s = _mm256_blendv_ps(d, ed, isneg);
    *sc = _mm256_blendv_ps(ed, d, isneg);
}

TGT static inline __m256 v_sigmoid(__m256 x) {
    __m256 s, sc;
    v_sigmoid2(x, _mm256_setzero_ps(), &s, &sc);
    return s;
}

/* x * sigmoid(t), t = th + tl: x/(1+e) for t >= 0 and (x*e)/(1+e) for t < 0 (one division) */
TGT static inline __m256 v_x_sigmoid(__m256 x, __m256 th, __m256 tl) {
    const __m256 sign = V1(-0.0f);
    __m256 neg = _mm256_and_ps(th, sign);
    tl = _mm256_and_ps(tl, _mm256_cmp_ps(tl, tl, _CMP_ORD_Q));
    __m256 e = v_expsum(_mm256_or_ps(th, sign), _mm256_xor_ps(_mm256_xor_ps(tl, sign), neg));
    __m256 num = _mm256_blendv_ps(x, _mm256_mul_ps(x, e), _mm256_cmp_ps(th, _mm256_setzero_ps(), _CMP_LT_OQ));
    return _mm256_div_ps(num, _mm256_add_ps(V1(1.0f), e));
}

/* 2u of gelu_tanh = K1 x + K2 x^3 with K1 = 2 sqrt(2/pi), K2 = 0.044715 K1, returned as the
 * unevaluated sum *hi + *lo: constants split in f32 hi + lo parts, products with their FMA
 * remainders and the final sum with Knuth's two-sum, so that 2u is known to far below an ulp
 * and sigmoid(2u) keeps full relative accuracy in the negative tail. */
TGT static inline void v_gelu_2u(__m256 x, __m256 *hi, __m256 *lo) {
    const __m256 k1h = V1(1.595769167e+00f), k1l = V1(-4.534068054e-08f);
    const __m256 k2h = V1(7.135481387e-02f), k2l = V1(2.398832466e-09f);
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 x2l = _mm256_fmsub_ps(x, x, x2);
    __m256 x3 = _mm256_mul_ps(x2, x);
    __m256 x3l = _mm256_fmadd_ps(x2l, x, _mm256_fmsub_ps(x2, x, x3));
    __m256 a = _mm256_mul_ps(k1h, x);
    __m256 al = _mm256_fmadd_ps(k1l, x, _mm256_fmsub_ps(k1h, x, a));
    __m256 b = _mm256_mul_ps(k2h, x3);
    __m256 bl = _mm256_fmadd_ps(k2l, x3, _mm256_fmadd_ps(k2h, x3l, _mm256_fmsub_ps(k2h, x3, b)));
    __m256 sum = _mm256_add_ps(a, b);
    __m256 bb = _mm256_sub_ps(sum, a);
    __m256 err = _mm256_add_ps(_mm256_sub_ps(a, _mm256_sub_ps(sum, bb)), _mm256_sub_ps(b, bb));
    *hi = sum;
    *lo = _mm256_add_ps(err, _mm256_add_ps(al, bl));
}

TGT static inline __m256 v_tanh(__m256 x) {
    const __m256 sign = V1(-0.0f);
    __m256 ax = _mm256_andnot_ps(sign, x);
    /* small |x|: x + x^3 P(x^2) */
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = V1(-0.005704990588128567f);
    p = _mm256_fmadd_ps(p, x2, V1(0.02063908986747265f));
    p = _mm256_fmadd_ps(p, x2, V1(-0.05373971536755562f));
    p = _mm256_fmadd_ps(p, x2, V1(0.13331441581249237f));
    p = _mm256_fmadd_ps(p, x2, V1(-0.3333328068256378f));
    __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, x2), x, x);
    /* large |x|: 1 - 2/(e^{2|x|} + 1), sign restored */
    __m256 e = v_exp(_mm256_add_ps(ax, ax));
    __m256 big = _mm256_sub_ps(V1(1.0f), _mm256_div_ps(V1(2.0f), _mm256_add_ps(e, V1(1.0f))));
    big = _mm256_or_ps(big, _mm256_and_ps(x, sign));
    return _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax, V1(0.625f), _CMP_LT_OQ));
}

/* Normal CDF Phi(x); *pdf (if not NULL) gets phi(x) = exp(-x^2/2)/sqrt(2 pi). */
TGT static inline __m256 v_phi_cdf(__m256 x, __m256 *pdf) {
    __m256 z = _mm256_min_ps(_mm256_andnot_ps(V1(-0.0f), x), V1(20.0f)); /* Q(20) = 0 in f32 */
    __m256 t = _mm256_div_ps(V1(1.0f), _mm256_fmadd_ps(V1(0.3f), z, V1(1.0f)));
    __m256 p = V1(1.122561693e-01f);
    p = _mm256_fmadd_ps(p, t, V1(-5.208810568e-01f));
    p = _mm256_fmadd_ps(p, t, V1(8.054477572e-01f));
    p = _mm256_fmadd_ps(p, t, V1(-2.271463275e-01f));
    p = _mm256_fmadd_ps(p, t, V1(-5.384774208e-01f));
    p = _mm256_fmadd_ps(p, t, V1(4.401513636e-01f));
    p = _mm256_fmadd_ps(p, t, V1(-2.765995860e-01f));
    p = _mm256_fmadd_ps(p, t, V1(2.393978089e-01f));
    p = _mm256_fmadd_ps(p, t, V1(3.940532506e-01f));
    p = _mm256_fmadd_ps(p, t, V1(1.001633286e+00f));
    p = _mm256_fmadd_ps(p, t, V1(-2.122982502e+00f));
    __m256 hz = _mm256_mul_ps(V1(0.5f), z);
    __m256 h = _mm256_mul_ps(hz, z);              /* z^2/2 rounded      */
    __m256 hl = _mm256_fmsub_ps(hz, z, h);        /* exact remainder    */
    __m256 q = _mm256_mul_ps(t, v_expsum(_mm256_sub_ps(_mm256_setzero_ps(), h), _mm256_sub_ps(p, hl)));
    if (pdf) {
        __m256 e = v_expsum(_mm256_sub_ps(_mm256_setzero_ps(), h), _mm256_sub_ps(_mm256_setzero_ps(), hl));
        *pdf = _mm256_mul_ps(e, V1(K_INV_SQRT_2PI));
    }
    __m256 pos = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ);
    return _mm256_blendv_ps(q, _mm256_sub_ps(V1(1.0f), q), pos);
}

TGT static inline __m256 v_unary(int kind, __m256 x) {
    switch (kind) {
    case NU_UNARY_SILU: return v_x_sigmoid(x, x, _mm256_setzero_ps());
    case NU_UNARY_GELU: {
        __m256 r = _mm256_mul_ps(x, v_phi_cdf(x, NULL));
        return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    }
    case NU_UNARY_GELU_TANH: {
        __m256 h, l;
        v_gelu_2u(x, &h, &l);
        return v_x_sigmoid(x, h, l);
    }
    case NU_UNARY_QUICK_GELU: { /* t = 1.702f*x exactly as kx + remainder (FMA) */
        __m256 kx = _mm256_mul_ps(V1(K_QUICK), x);
        return v_x_sigmoid(x, kx, _mm256_fmsub_ps(V1(K_QUICK), x, kx));
    }
    case NU_UNARY_SIGMOID: return v_sigmoid(x);
    case NU_UNARY_TANH: return v_tanh(x);
    case NU_UNARY_RELU: return _mm256_max_ps(_mm256_setzero_ps(), x); /* NaN passes through */
    case NU_UNARY_SQR: return _mm256_mul_ps(x, x);
    case NU_UNARY_SQRT: return _mm256_sqrt_ps(x);
    case NU_UNARY_EXP: return v_exp(x);
    default: return x; /* not reached: LOG runs the scalar path */
    }
}

/* f'(x) */
TGT static inline __m256 v_unary_deriv(int kind, __m256 x) {
    const __m256 one = V1(1.0f), zero = _mm256_setzero_ps();
    __m256 s, sc;
    switch (kind) {
    case NU_UNARY_SILU: /* s (1 + x (1-s)) */
        v_sigmoid2(x, zero, &s, &sc);
        return _mm256_mul_ps(s, _mm256_fmadd_ps(x, sc, one));
    case NU_UNARY_GELU: {
        __m256 pdf;
        __m256 cdf = v_phi_cdf(x, &pdf);
        return _mm256_fmadd_ps(x, pdf, cdf);
    }
    case NU_UNARY_GELU_TANH: { /* s + 2x s(1-s) u' */
        __m256 x2 = _mm256_mul_ps(x, x), h, l;
        v_gelu_2u(x, &h, &l);
        v_sigmoid2(h, l, &s, &sc);
        __m256 du = _mm256_mul_ps(V1(K_GELU_B), _mm256_fmadd_ps(V1(3.0f * K_GELU_C), x2, one));
        return _mm256_fmadd_ps(_mm256_mul_ps(_mm256_add_ps(x, x), _mm256_mul_ps(s, sc)), du, s);
    }
    case NU_UNARY_QUICK_GELU: { /* s + k x s(1-s) */
        __m256 kx = _mm256_mul_ps(V1(K_QUICK), x);
        v_sigmoid2(kx, _mm256_fmsub_ps(V1(K_QUICK), x, kx), &s, &sc);
        return _mm256_fmadd_ps(kx, _mm256_mul_ps(s, sc), s);
    }
    case NU_UNARY_SIGMOID:
        v_sigmoid2(x, zero, &s, &sc);
        return _mm256_mul_ps(s, sc);
    case NU_UNARY_TANH: {
        __m256 t = v_tanh(x);
        return _mm256_fnmadd_ps(t, t, one);
    }
    case NU_UNARY_RELU: return _mm256_and_ps(_mm256_cmp_ps(x, zero, _CMP_GT_OQ), one);
    case NU_UNARY_SQR: return _mm256_add_ps(x, x);
    case NU_UNARY_SQRT: return _mm256_div_ps(V1(0.5f), _mm256_sqrt_ps(x));
    case NU_UNARY_EXP: return v_exp(x);
    default: return x; /* not reached: LOG runs the scalar path */
    }
}

/* One loop per kind (the switch is outside the loop); tails go through a zero-padded vector so
 * that every element gets the same approximation. */
#define ROW_LOOP(K)                                                                            \
    case K: {                                                                                  \
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, v_unary(K, _mm256_loadu_ps(x + i)));   \
        if (i < n) {                                                                           \
            float tx[8] = {0}, ty[8];                                                          \
            for (int64_t j = i; j < n; j++) tx[j - i] = x[j];                                  \
            _mm256_storeu_ps(ty, v_unary(K, _mm256_loadu_ps(tx)));                            \
            for (int64_t j = i; j < n; j++) y[j] = ty[j - i];                                  \
        }                                                                                      \
        break;                                                                                 \
    }

TGT static void unary_row_avx2(int kind, float *y, const float *x, int64_t n) {
    int64_t i = 0;
    switch (kind) {
        ROW_LOOP(NU_UNARY_SILU)
        ROW_LOOP(NU_UNARY_GELU)
        ROW_LOOP(NU_UNARY_GELU_TANH)
        ROW_LOOP(NU_UNARY_QUICK_GELU)
        ROW_LOOP(NU_UNARY_SIGMOID)
        ROW_LOOP(NU_UNARY_TANH)
        ROW_LOOP(NU_UNARY_RELU)
        ROW_LOOP(NU_UNARY_SQR)
        ROW_LOOP(NU_UNARY_SQRT)
        ROW_LOOP(NU_UNARY_EXP)
    default: nu_abort(__FILE__, __LINE__, "unary kind %d has no vector path", kind);
    }
}

#define BW_LOOP(K)                                                                             \
    case K: {                                                                                  \
        for (; i + 8 <= n; i += 8)                                                             \
            _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(dy + i), v_unary_deriv(K, _mm256_loadu_ps(x + i)))); \
        if (i < n) {                                                                           \
            float tx[8] = {0}, tdy[8] = {0}, t[8];                                             \
            for (int64_t j = i; j < n; j++) {                                                  \
                tx[j - i] = x[j];                                                              \
                tdy[j - i] = dy[j];                                                            \
            }                                                                                  \
            _mm256_storeu_ps(t, _mm256_mul_ps(_mm256_loadu_ps(tdy), v_unary_deriv(K, _mm256_loadu_ps(tx)))); \
            for (int64_t j = i; j < n; j++) dx[j] = t[j - i];                                  \
        }                                                                                      \
        break;                                                                                 \
    }

TGT static void unary_bw_row_avx2(int kind, float *dx, const float *dy, const float *x, int64_t n) {
    int64_t i = 0;
    switch (kind) {
        BW_LOOP(NU_UNARY_SILU)
        BW_LOOP(NU_UNARY_GELU)
        BW_LOOP(NU_UNARY_GELU_TANH)
        BW_LOOP(NU_UNARY_QUICK_GELU)
        BW_LOOP(NU_UNARY_SIGMOID)
        BW_LOOP(NU_UNARY_TANH)
        BW_LOOP(NU_UNARY_RELU)
        BW_LOOP(NU_UNARY_SQR)
        BW_LOOP(NU_UNARY_SQRT)
        BW_LOOP(NU_UNARY_EXP)
    default: nu_abort(__FILE__, __LINE__, "unary kind %d has no vector path", kind);
    }
}
#endif /* NU_HAVE_X86 */

/* ---------------------------------------------------------------- row entry points */

/* y[i] = f(x[i]) for n contiguous values (y may alias x). */
void nu_cpu_unary_f32(int kind, float *y, const float *x, int64_t n, bool fast) {
#ifdef NU_HAVE_X86
    if (fast && kind != NU_UNARY_LOG) {
        unary_row_avx2(kind, y, x, n);
        return;
    }
#else
    (void)fast;
#endif
    for (int64_t i = 0; i < n; i++) y[i] = unary_ref(kind, x[i]);
}

/* dx[i] = dy[i] * f'(x[i]) for n contiguous values (dx may alias dy or x). */
void nu_cpu_unary_backward_f32(int kind, float *dx, const float *dy, const float *x, int64_t n, bool fast) {
#ifdef NU_HAVE_X86
    if (fast && kind != NU_UNARY_LOG) {
        unary_bw_row_avx2(kind, dx, dy, x, n);
        return;
    }
#else
    (void)fast;
#endif
    for (int64_t i = 0; i < n; i++) dx[i] = (float)(dy[i] * unary_deriv_ref(kind, x[i]));
}
