/*
 * quant.c — GGUF block quantization: q8_0, q4_0, q4_1, q5_0, q5_1 (32 values per block) to and
 * from f32, with scalar reference dequantizers and AVX2 twins, and nu_dequant_row (the row
 * converter the GEMM uses for its weight tiles, covering f32/f16/bf16 too).
 *
 * Block layouts and rules follow GGML's reference quantizers (ggml-quants.c, the functions GGUF
 * files are made with):
 *   q8_0  d = amax/127, q = round(x/d) (half away from zero), x = q*d.
 *   q4_0  d = max/-8 where max is the value of largest magnitude (sign kept), q = min(15,
 *         trunc(x/d + 8.5)), x = (q-8)*d. Byte j of qs holds value j in its low nibble and value
 *         j+16 in its high nibble.
 *   q4_1  d = (max-min)/15, m = min, q = min(15, trunc((x-m)/d + 0.5)), x = q*d + m.
 *   q5_0  d = max/-16, q = min(31, trunc(x/d + 16.5)), x = (q-16)*d; low 4 bits as q4_0, bit 4 of
 *         value j is bit j of the little-endian 32-bit qh.
 *   q5_1  d = (max-min)/31, m = min, q = trunc((x-m)/d + 0.5), x = q*d + m; bits as q5_0.
 * The inverse scale is 1/d computed in f32 from the unrounded d (GGML does the same); d and m are
 * stored as f16 (round to nearest even). q*d + m is evaluated as one fused multiply-add in both
 * twins so they agree bit for bit.
 * Tested by tests/test_quant.c (hand-made blocks, round-trip error bounds, AVX2 vs scalar).
 */
#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NU_X86 1
#endif

#include "cpu/gemm.h"

/* The quantizers must not contract x*id + c into an FMA (that would change rounding ties vs the
 * GGML rule); the default build has no -mfma, this guards -march=native builds under GCC. */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define NO_CONTRACT
#endif

/* Truncates v toward zero and clamps to [0, hi] (NaN -> 0), as MIN(hi, (int8_t)v) does for the
 * values the rules produce, without undefined float-to-int conversions. */
static inline int trunc_clamp(float v, int hi) {
    if (!(v > 0.0f)) return 0;
    if (v >= (float)hi) return hi;
    return (int)v;
}

/* Largest-magnitude value with its sign (first one on ties), as GGML's q4_0/q5_0. */
static float signed_amax(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < NU_QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void min_max(const float *x, float *mn, float *mx) {
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < NU_QK; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

NO_CONTRACT static void quant_q8_0(const float *x, nu_block_q8_0 *y) {
    float amax = 0.0f;
    for (int j = 0; j < NU_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = nu_f32_to_f16(d);
    for (int j = 0; j < NU_QK; j++) {
        float v = roundf(x[j] * id);
        y->qs[j] = (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : v == v ? (int)v : 0);
    }
}

NO_CONTRACT static void quant_q4_0(const float *x, nu_block_q4_0 *y) {
    const float d = signed_amax(x) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = nu_f32_to_f16(d);
    for (int j = 0; j < NU_QK / 2; j++) {
        const float x0 = x[j] * id, x1 = x[j + NU_QK / 2] * id;
        const int q0 = trunc_clamp(x0 + 8.5f, 15), q1 = trunc_clamp(x1 + 8.5f, 15);
        y->qs[j] = (uint8_t)(q0 | (q1 << 4));
    }
}

NO_CONTRACT static void quant_q4_1(const float *x, nu_block_q4_1 *y) {
    float mn, mx;
    min_max(x, &mn, &mx);
    const float d = (mx - mn) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = nu_f32_to_f16(d);
    y->m = nu_f32_to_f16(mn);
    for (int j = 0; j < NU_QK / 2; j++) {
        const float x0 = (x[j] - mn) * id, x1 = (x[j + NU_QK / 2] - mn) * id;
        const int q0 = trunc_clamp(x0 + 0.5f, 15), q1 = trunc_clamp(x1 + 0.5f, 15);
        y->qs[j] = (uint8_t)(q0 | (q1 << 4));
    }
}

NO_CONTRACT static void quant_q5_0(const float *x, nu_block_q5_0 *y) {
    const float d = signed_amax(x) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = nu_f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < NU_QK / 2; j++) {
        const float x0 = x[j] * id, x1 = x[j + NU_QK / 2] * id;
        const int q0 = trunc_clamp(x0 + 16.5f, 31), q1 = trunc_clamp(x1 + 16.5f, 31);
        y->qs[j] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
        qh |= (uint32_t)(q0 >> 4) << j;
        qh |= (uint32_t)(q1 >> 4) << (j + NU_QK / 2);
    }
    for (int i = 0; i < 4; i++) y->qh[i] = (uint8_t)(qh >> (8 * i)); /* little-endian */
}

NO_CONTRACT static void quant_q5_1(const float *x, nu_block_q5_1 *y) {
    float mn, mx;
    min_max(x, &mn, &mx);
    const float d = (mx - mn) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = nu_f32_to_f16(d);
    y->m = nu_f32_to_f16(mn);
    uint32_t qh = 0;
    for (int j = 0; j < NU_QK / 2; j++) {
        const float x0 = (x[j] - mn) * id, x1 = (x[j + NU_QK / 2] - mn) * id;
        /* GGML has no clamp here; (max-min)*id + 0.5 < 32 always, the clamp only guards NaN/Inf */
        const int q0 = trunc_clamp(x0 + 0.5f, 31), q1 = trunc_clamp(x1 + 0.5f, 31);
        y->qs[j] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
        qh |= (uint32_t)(q0 >> 4) << j;
        qh |= (uint32_t)(q1 >> 4) << (j + NU_QK / 2);
    }
    for (int i = 0; i < 4; i++) y->qh[i] = (uint8_t)(qh >> (8 * i));
}

void nu_quant_row_from_f32(nu_type t, const float *src, void *dst, int64_t n) {
    NU_ASSERT(n % NU_QK == 0);
    int64_t nb = n / NU_QK;
    switch (t) {
    case NU_TYPE_Q8_0: for (int64_t i = 0; i < nb; i++) quant_q8_0(src + i * NU_QK, (nu_block_q8_0 *)dst + i); break;
    case NU_TYPE_Q4_0: for (int64_t i = 0; i < nb; i++) quant_q4_0(src + i * NU_QK, (nu_block_q4_0 *)dst + i); break;
    case NU_TYPE_Q4_1: for (int64_t i = 0; i < nb; i++) quant_q4_1(src + i * NU_QK, (nu_block_q4_1 *)dst + i); break;
    case NU_TYPE_Q5_0: for (int64_t i = 0; i < nb; i++) quant_q5_0(src + i * NU_QK, (nu_block_q5_0 *)dst + i); break;
    case NU_TYPE_Q5_1: for (int64_t i = 0; i < nb; i++) quant_q5_1(src + i * NU_QK, (nu_block_q5_1 *)dst + i); break;
    default: nu_abort(__FILE__, __LINE__, "nu_quant_row_from_f32: %s is not a block type", nu_type_name(t));
    }
}

/* ---------------------------------------------------------------- scalar dequantizers */

static uint32_t load_qh(const uint8_t *qh) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

void nu_quant_row_to_f32_ref(nu_type t, const void *src, float *dst, int64_t n) {
    NU_ASSERT(n % NU_QK == 0);
    int64_t nb = n / NU_QK;
    for (int64_t i = 0; i < nb; i++) {
        float *y = dst + i * NU_QK;
        switch (t) {
        case NU_TYPE_Q8_0: {
            const nu_block_q8_0 *b = (const nu_block_q8_0 *)src + i;
            const float d = nu_f16_to_f32(b->d);
            for (int j = 0; j < NU_QK; j++) y[j] = (float)b->qs[j] * d;
            break;
        }
        case NU_TYPE_Q4_0: {
            const nu_block_q4_0 *b = (const nu_block_q4_0 *)src + i;
            const float d = nu_f16_to_f32(b->d);
            for (int j = 0; j < NU_QK / 2; j++) {
                y[j] = (float)((b->qs[j] & 15) - 8) * d;
                y[j + NU_QK / 2] = (float)((b->qs[j] >> 4) - 8) * d;
            }
            break;
        }
        case NU_TYPE_Q4_1: {
            const nu_block_q4_1 *b = (const nu_block_q4_1 *)src + i;
            const float d = nu_f16_to_f32(b->d), m = nu_f16_to_f32(b->m);
            for (int j = 0; j < NU_QK / 2; j++) {
                y[j] = fmaf((float)(b->qs[j] & 15), d, m);
                y[j + NU_QK / 2] = fmaf((float)(b->qs[j] >> 4), d, m);
            }
            break;
        }
        case NU_TYPE_Q5_0: {
            const nu_block_q5_0 *b = (const nu_block_q5_0 *)src + i;
            const float d = nu_f16_to_f32(b->d);
            const uint32_t qh = load_qh(b->qh);
            for (int j = 0; j < NU_QK / 2; j++) {
                int q0 = (b->qs[j] & 15) | (int)((qh >> j) & 1) << 4;
                int q1 = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
                y[j] = (float)(q0 - 16) * d;
                y[j + NU_QK / 2] = (float)(q1 - 16) * d;
            }
            break;
        }
        case NU_TYPE_Q5_1: {
            const nu_block_q5_1 *b = (const nu_block_q5_1 *)src + i;
            const float d = nu_f16_to_f32(b->d), m = nu_f16_to_f32(b->m);
            const uint32_t qh = load_qh(b->qh);
            for (int j = 0; j < NU_QK / 2; j++) {
                int q0 = (b->qs[j] & 15) | (int)((qh >> j) & 1) << 4;
                int q1 = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
                y[j] = fmaf((float)q0, d, m);
                y[j + NU_QK / 2] = fmaf((float)q1, d, m);
            }
            break;
        }
        default: nu_abort(__FILE__, __LINE__, "nu_quant_row_to_f32: %s is not a block type", nu_type_name(t));
        }
    }
}

/* ---------------------------------------------------------------- AVX2 dequantizers */

#ifdef NU_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))

/* f16 -> f32 with F16C (exact, as nu_f16_to_f32; only NaN payloads may differ) */
AVX2 static inline float h2f(uint16_t h) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))); }

/* 16 4-bit values (bytes of v masked) -> two vectors of 8 floats (q + bias) */
AVX2 static inline void nib16_to_f32(__m128i q8, __m256i bias, __m256 *lo, __m256 *hi) {
    *lo = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_cvtepu8_epi32(q8), bias));
    *hi = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(q8, 8)), bias));
}

/* The 32 values of a q5 block as bytes 0..31 (element order): low nibbles from qs (values j and
 * j+16 share byte j), bit 4 from bit e of qh, spread to bytes with a shuffle + bit test. */
AVX2 static inline __m256i q5_bytes(const uint8_t *qs, uint32_t qh) {
    const __m128i m4 = _mm_set1_epi8(15);
    const __m128i v = _mm_loadu_si128((const __m128i *)qs);
    const __m256i q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
    /* byte e <- byte e/8 of qh (each 128-bit lane holds all four qh bytes), then test bit e%8 */
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)qh), _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2,
                                                     2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i hb = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(16));
    return _mm256_or_si256(q, hb);
}

AVX2 void nu_quant_row_to_f32_avx2(nu_type t, const void *src, float *dst, int64_t n) {
    NU_ASSERT(n % NU_QK == 0);
    int64_t nb = n / NU_QK;
    const __m128i m4 = _mm_set1_epi8(15);
    switch (t) {
    case NU_TYPE_Q8_0:
        for (int64_t i = 0; i < nb; i++) {
            const nu_block_q8_0 *b = (const nu_block_q8_0 *)src + i;
            const __m256 d = _mm256_set1_ps(h2f(b->d));
            for (int j = 0; j < NU_QK; j += 8) {
                /* movq: an unaligned 8-byte load (blocks are 34 bytes) */
                __m128i q = _mm_loadl_epi64((const __m128i *)(b->qs + j));
                __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                _mm256_storeu_ps(dst + i * NU_QK + j, _mm256_mul_ps(v, d));
            }
        }
        break;
    case NU_TYPE_Q4_0:
        for (int64_t i = 0; i < nb; i++) {
            const nu_block_q4_0 *b = (const nu_block_q4_0 *)src + i;
            const __m256 d = _mm256_set1_ps(h2f(b->d));
            const __m256i bias = _mm256_set1_epi32(-8);
            __m128i v = _mm_loadu_si128((const __m128i *)b->qs);
            __m256 a0, a1, b0, b1;
            nib16_to_f32(_mm_and_si128(v, m4), bias, &a0, &a1);
            nib16_to_f32(_mm_and_si128(_mm_srli_epi16(v, 4), m4), bias, &b0, &b1);
            float *y = dst + i * NU_QK;
            _mm256_storeu_ps(y, _mm256_mul_ps(a0, d));
            _mm256_storeu_ps(y + 8, _mm256_mul_ps(a1, d));
            _mm256_storeu_ps(y + 16, _mm256_mul_ps(b0, d));
            _mm256_storeu_ps(y + 24, _mm256_mul_ps(b1, d));
        }
        break;
    case NU_TYPE_Q4_1:
        for (int64_t i = 0; i < nb; i++) {
            const nu_block_q4_1 *b = (const nu_block_q4_1 *)src + i;
            const __m256 d = _mm256_set1_ps(h2f(b->d)), m = _mm256_set1_ps(h2f(b->m));
            const __m256i zero = _mm256_setzero_si256();
            __m128i v = _mm_loadu_si128((const __m128i *)b->qs);
            __m256 a0, a1, b0, b1;
            nib16_to_f32(_mm_and_si128(v, m4), zero, &a0, &a1);
            nib16_to_f32(_mm_and_si128(_mm_srli_epi16(v, 4), m4), zero, &b0, &b1);
            float *y = dst + i * NU_QK;
            _mm256_storeu_ps(y, _mm256_fmadd_ps(a0, d, m));
            _mm256_storeu_ps(y + 8, _mm256_fmadd_ps(a1, d, m));
            _mm256_storeu_ps(y + 16, _mm256_fmadd_ps(b0, d, m));
            _mm256_storeu_ps(y + 24, _mm256_fmadd_ps(b1, d, m));
        }
        break;
    case NU_TYPE_Q5_0:
    case NU_TYPE_Q5_1:
        for (int64_t i = 0; i < nb; i++) {
            const bool has_m = t == NU_TYPE_Q5_1;
            const uint8_t *qs, *qhp;
            uint16_t dh, mh = 0;
            if (has_m) {
                const nu_block_q5_1 *b = (const nu_block_q5_1 *)src + i;
                qs = b->qs; qhp = b->qh; dh = b->d; mh = b->m;
            } else {
                const nu_block_q5_0 *b = (const nu_block_q5_0 *)src + i;
                qs = b->qs; qhp = b->qh; dh = b->d;
            }
            const uint32_t qh = load_qh(qhp);
            const __m256 d = _mm256_set1_ps(h2f(dh));
            const __m256 m = _mm256_set1_ps(has_m ? h2f(mh) : 0.0f);
            __m256i q = q5_bytes(qs, qh); /* 0..31 */
            if (!has_m) q = _mm256_sub_epi8(q, _mm256_set1_epi8(16)); /* -16..15 */
            const __m128i h[2] = {_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)};
            float *y = dst + i * NU_QK;
            for (int k = 0; k < 4; k++) {
                const __m128i b8 = k & 1 ? _mm_srli_si128(h[k >> 1], 8) : h[k >> 1];
                const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b8)); /* exact small integers */
                /* q5_0: (q-16)*d exactly as the scalar twin; q5_1: fma(q, d, m) */
                _mm256_storeu_ps(y + 8 * k, has_m ? _mm256_fmadd_ps(f, d, m) : _mm256_mul_ps(f, d));
            }
        }
        break;
    default: nu_abort(__FILE__, __LINE__, "nu_quant_row_to_f32: %s is not a block type", nu_type_name(t));
    }
}

AVX2 static void f16_row_avx2(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = nu_f16_to_f32(src[i]);
}

AVX2 static void bf16_row_avx2(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; i < n; i++) dst[i] = nu_bf16_to_f32(src[i]);
}
#else
void nu_quant_row_to_f32_avx2(nu_type t, const void *src, float *dst, int64_t n) { nu_quant_row_to_f32_ref(t, src, dst, n); }
#endif

/* ---------------------------------------------------------------- dispatch */

void nu_quant_row_to_f32(nu_type t, const void *src, float *dst, int64_t n) {
    if (nu_cpu_fast_enabled()) nu_quant_row_to_f32_avx2(t, src, dst, n);
    else nu_quant_row_to_f32_ref(t, src, dst, n);
}

bool nu_gemm_btype_ok(nu_type t) {
    switch (t) {
    case NU_TYPE_F32: case NU_TYPE_F16: case NU_TYPE_BF16: case NU_TYPE_Q8_0: case NU_TYPE_Q4_0:
    case NU_TYPE_Q4_1: case NU_TYPE_Q5_0: case NU_TYPE_Q5_1: return true;
    default: return false;
    }
}

void nu_dequant_row(nu_type t, const void *src, float *dst, int64_t n, bool fast) {
    switch (t) {
    case NU_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case NU_TYPE_F16:
#ifdef NU_X86
        if (fast) { f16_row_avx2(src, dst, n); return; }
#endif
        for (int64_t i = 0; i < n; i++) dst[i] = nu_f16_to_f32(((const uint16_t *)src)[i]);
        return;
    case NU_TYPE_BF16:
#ifdef NU_X86
        if (fast) { bf16_row_avx2(src, dst, n); return; }
#endif
        for (int64_t i = 0; i < n; i++) dst[i] = nu_bf16_to_f32(((const uint16_t *)src)[i]);
        return;
    default:
        if (fast) nu_quant_row_to_f32_avx2(t, src, dst, n);
        else nu_quant_row_to_f32_ref(t, src, dst, n);
    }
}
