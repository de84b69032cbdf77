/*
 * test_quant.c — GGUF block quantization (src/cpu/quant.c): exact block contents for hand-made
 * inputs, byte layout of every block type, round-trip error bounds, AVX2 vs scalar dequantizers
 * (bit-exact, on random blocks), and the f16/bf16 row converters of the GEMM.
 *
 * Error bounds per block, with A = max |x| in the block, d the block scale and 2^-11 the f16
 * rounding of d and m (relative):
 *   q8_0  d = A/127: |err| <= d/2 + 127 d 2^-11            = 0.00443 A   (checked <= 0.0045 A)
 *   q4_0  d = A/8, the side opposite to the extreme value clamps at +7: |err| <= d + 8 d 2^-11
 *                                                          = 0.1255 A    (checked <= 0.126 A)
 *   q4_1  d = (max-min)/15 <= 2A/15: |err| <= d/2 + 15 d 2^-11 + A 2^-11 = 0.0681 A (<= 0.069 A)
 *   q5_0  d = A/16: |err| <= d + 16 d 2^-11                = 0.0630 A    (checked <= 0.064 A)
 *   q5_1  d <= 2A/31: |err| <= d/2 + 31 d 2^-11 + A 2^-11  = 0.0337 A    (checked <= 0.034 A)
 * These hold while d is an f16 normal number (>= 2^-14; q8_0 blocks with A < 0.0078 lose relative
 * precision in d, a property of the format), so the data spans block scales 0.1 .. 1e4.
 * RMS of err/A over uniform data is about step/sqrt(12): q8_0 0.0023, q4_0 0.036, q4_1 0.038,
 * q5_0 0.018, q5_1 0.019; checked against 0.003, 0.04, 0.042, 0.02, 0.021.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "cpu/gemm.h"
#include "nu_test.h"

/* ---------------------------------------------------------------- hand-made blocks */

static void test_q8_0_block(void) {
    float x[32];
    x[0] = -127.0f; /* amax 127 -> d = 1 */
    for (int j = 1; j < 32; j++) x[j] = (float)(j - 16) * 7.5f;
    nu_block_q8_0 b;
    nu_quant_row_from_f32(NU_TYPE_Q8_0, x, &b, 32);
    NU_CHECK(b.d == 0x3C00); /* f16 1.0 */
    NU_CHECK(b.qs[0] == -127);
    int bad = 0;
    for (int j = 1; j < 32; j++) {
        int v2 = (j - 16) * 15; /* 2x the value: ties round half away from zero */
        int want = v2 >= 0 ? (v2 + 1) / 2 : -((-v2 + 1) / 2);
        bad += b.qs[j] != want;
    }
    NU_CHECK_MSG(bad == 0, "q8_0: %d quants differ from round-half-away", bad);
}

static void test_q4_0_block(void) {
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16); /* extreme -16 -> d = -16/-8 = 2 */
    nu_block_q4_0 b;
    nu_quant_row_from_f32(NU_TYPE_Q4_0, x, &b, 32);
    NU_CHECK(b.d == 0x4000); /* f16 2.0 */
    int bad = 0;
    for (int j = 0; j < 16; j++) {
        /* q = min(15, trunc(x/2 + 8.5)): value j (x = j-16) -> (j+1)/2; value j+16 (x = j) -> 8 + (j+1)/2 */
        int lo = (j + 1) / 2, hi = 8 + (j + 1) / 2;
        if (hi > 15) hi = 15;
        bad += b.qs[j] != (uint8_t)(lo | hi << 4);
    }
    NU_CHECK_MSG(bad == 0, "q4_0: %d bytes differ (low nibble = value j, high = value j+16)", bad);
    float y[32];
    nu_quant_row_to_f32_ref(NU_TYPE_Q4_0, &b, y, 32);
    NU_CHECK(y[0] == -16.0f && y[1] == -14.0f && y[31] == 14.0f && y[16] == 0.0f);
}

static void test_q4_1_block(void) {
    float x[32];
    /* min -10, max 20 -> d = 2, m = -10; (x-m)/d = k (+0.5 -> k) or k + 0.6 (+0.5 -> k+1) */
    for (int j = 0; j < 16; j++) x[j] = -10.0f + 2.0f * (float)j;
    for (int j = 16; j < 32; j++) x[j] = -10.0f + 2.0f * (float)((j - 16) % 15) + 1.2f;
    nu_block_q4_1 b;
    nu_quant_row_from_f32(NU_TYPE_Q4_1, x, &b, 32);
    NU_CHECK(b.d == 0x4000 && b.m == 0xC900); /* f16 2.0, -10.0 */
    int bad = 0;
    for (int j = 0; j < 16; j++) bad += b.qs[j] != (uint8_t)(j | (j % 15 + 1) << 4);
    NU_CHECK_MSG(bad == 0, "q4_1: %d bytes differ", bad);
}

static void test_q5_0_block(void) {
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16); /* d = -16/-16 = 1 -> q(e) = e */
    nu_block_q5_0 b;
    nu_quant_row_from_f32(NU_TYPE_Q5_0, x, &b, 32);
    NU_CHECK(b.d == 0x3C00);
    int bad = 0;
    for (int j = 0; j < 16; j++) bad += b.qs[j] != (uint8_t)(j | j << 4);
    NU_CHECK_MSG(bad == 0, "q5_0: %d qs bytes differ", bad);
    /* bit e of qh = bit 4 of q(e): values 16..31 -> qh = 0xFFFF0000, little-endian */
    NU_CHECK(b.qh[0] == 0 && b.qh[1] == 0 && b.qh[2] == 0xFF && b.qh[3] == 0xFF);
    float y[32];
    nu_quant_row_to_f32_ref(NU_TYPE_Q5_0, &b, y, 32);
    NU_CHECK(nu_test_equal("q5_0 exact round trip", y, x, 32));
}

static void test_q5_1_block(void) {
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = 5.0f + 0.25f * (float)j; /* d = 7.75/31 = 0.25, m = 5 */
    /* with one odd qh pattern: swap values so that bit 4 alternates */
    float t = x[3];
    x[3] = x[19];
    x[19] = t;
    nu_block_q5_1 b;
    nu_quant_row_from_f32(NU_TYPE_Q5_1, x, &b, 32);
    NU_CHECK(b.d == 0x3400 && b.m == 0x4500); /* f16 0.25, 5.0 */
    uint32_t qh = (uint32_t)b.qh[0] | (uint32_t)b.qh[1] << 8 | (uint32_t)b.qh[2] << 16 | (uint32_t)b.qh[3] << 24;
    NU_CHECK_MSG(qh == ((0xFFFF0000u | 1u << 3) & ~(1u << 19)), "q5_1 qh = %08x", qh);
    NU_CHECK(b.qs[3] == (uint8_t)(3 | 3 << 4) && b.qs[0] == 0 && b.qs[15] == 0xFF);
    float y[32];
    nu_quant_row_to_f32_ref(NU_TYPE_Q5_1, &b, y, 32);
    NU_CHECK(nu_test_equal("q5_1 exact round trip", y, x, 32));
}

/* Field offsets inside the blocks, from the raw bytes (GGUF: d, [m], [qh], qs, packed). */
static void test_layout(void) {
    NU_CHECK(nu_type_info(NU_TYPE_Q8_0)->size == 34 && nu_type_info(NU_TYPE_Q4_0)->size == 18 &&
             nu_type_info(NU_TYPE_Q4_1)->size == 20 && nu_type_info(NU_TYPE_Q5_0)->size == 22 &&
             nu_type_info(NU_TYPE_Q5_1)->size == 24);
    float x[64];
    for (int j = 0; j < 64; j++) x[j] = 5.0f + 0.25f * (float)(j % 32);
    uint8_t raw[48];
    nu_quant_row_from_f32(NU_TYPE_Q5_1, x, raw, 64); /* two blocks, 24 bytes each */
    for (int k = 0; k < 2; k++) {
        const uint8_t *r = raw + 24 * k;
        NU_CHECK(r[0] == 0x00 && r[1] == 0x34);              /* d = 0.25, little-endian */
        NU_CHECK(r[2] == 0x00 && r[3] == 0x45);              /* m = 5 */
        NU_CHECK(r[4] == 0 && r[5] == 0 && r[6] == 0xFF && r[7] == 0xFF); /* qh */
        NU_CHECK(r[8] == 0x00 && r[9] == 0x11 && r[23] == 0xFF);          /* qs */
    }
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    nu_quant_row_from_f32(NU_TYPE_Q8_0, x, raw, 32);
    NU_CHECK(raw[0] == 0x08 && raw[1] == 0x30); /* d = 16/127 -> f16 0x3008 */
    NU_CHECK((int8_t)raw[2] == -127 && (int8_t)raw[33] == 119); /* 15 * 127/16 = 119.06 */
    nu_quant_row_from_f32(NU_TYPE_Q4_0, x, raw, 32);
    NU_CHECK(raw[0] == 0x00 && raw[1] == 0x40 && raw[2] == 0x80 && raw[17] == 0xF8);
}

/* ---------------------------------------------------------------- round trips */

static void round_trip(nu_type t, double max_bound, double rms_bound) {
    const int nblk = nu_test_quick() ? 256 : 4096, n = nblk * 32;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    void *q = malloc(nu_row_size(t, n));
    nu_test_fill_uniform(x, n, 7 + (uint64_t)t, -1.0f, 1.0f);
    /* vary the block scale over 5 decades (0.1 .. 1e4: d stays an f16 normal number) and add an
     * offset to some blocks (exercises the min of q4_1/q5_1) */
    for (int b = 0; b < nblk; b++) {
        float s = powf(10.0f, (float)(b % 6) - 1.0f), off = (b % 3 == 0) ? 0.7f * s : 0.0f;
        for (int j = 0; j < 32; j++) x[b * 32 + j] = x[b * 32 + j] * s + off;
    }
    nu_quant_row_from_f32(t, x, q, n);
    nu_quant_row_to_f32_ref(t, q, y, n);
    double worst = 0, ss = 0;
    for (int b = 0; b < nblk; b++) {
        float A = 0;
        for (int j = 0; j < 32; j++) A = fmaxf(A, fabsf(x[b * 32 + j]));
        for (int j = 0; j < 32; j++) {
            double e = fabs((double)y[b * 32 + j] - x[b * 32 + j]) / A;
            if (e > worst) worst = e;
            ss += e * e;
        }
    }
    double rms = sqrt(ss / n);
    NU_CHECK_MSG(worst <= max_bound, "%s: max |err|/A = %.5f > %.5f", nu_type_name(t), worst, max_bound);
    NU_CHECK_MSG(rms <= rms_bound, "%s: rms err/A = %.5f > %.5f", nu_type_name(t), rms, rms_bound);
    printf("  %s round trip: max |err|/A %.5f (bound %.4f), rms %.5f (bound %.4f)\n", nu_type_name(t), worst, max_bound,
           rms, rms_bound);
    /* special blocks: all zero -> zero; a constant 0.5 is exact except in q8_0 (d = 0.5/127) */
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    nu_quant_row_from_f32(t, x, q, 32);
    nu_quant_row_to_f32_ref(t, q, y, 32);
    bool zero = true;
    for (int j = 0; j < 32; j++) zero &= y[j] == 0.0f;
    NU_CHECK_MSG(zero, "%s: zero block does not round trip", nu_type_name(t));
    for (int j = 0; j < 32; j++) x[j] = 0.5f;
    nu_quant_row_from_f32(t, x, q, 32);
    nu_quant_row_to_f32_ref(t, q, y, 32);
    bool cst = true;
    for (int j = 0; j < 32; j++) cst &= t == NU_TYPE_Q8_0 ? fabsf(y[j] - 0.5f) <= 0.0045f * 0.5f : y[j] == 0.5f;
    NU_CHECK_MSG(cst, "%s: constant block 0.5 does not round trip (got %g)", nu_type_name(t), y[0]);
    /* the public row converters route here */
    nu_test_fill_uniform(x, 64, 99, -2.0f, 2.0f);
    nu_row_from_f32(t, x, q, 64);
    nu_row_to_f32(t, q, y, 64);
    float y2[64];
    nu_quant_row_to_f32_ref(t, q, y2, 64);
    NU_CHECK(nu_test_equal("nu_row_to_f32 vs ref", y, y2, 64));
    free(x);
    free(y);
    free(q);
}

/* ---------------------------------------------------------------- AVX2 vs scalar */

static uint64_t rng_state = 0x1234567;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static uint16_t rnd_f16_finite(void) {
    uint16_t h = (uint16_t)rnd();
    if (((h >> 10) & 31) == 31) h &= (uint16_t)~0x4000u; /* no Inf/NaN scales */
    return h;
}

static void fast_vs_ref(nu_type t) {
    const int nblk = 97, n = nblk * 32;
    const size_t bs = nu_type_info(t)->size;
    uint8_t *q = malloc(bs * nblk);
    for (size_t i = 0; i < bs * nblk; i++) q[i] = (uint8_t)rnd(); /* random qs / qh bits */
    for (int b = 0; b < nblk; b++) {
        uint16_t d = rnd_f16_finite(), m = rnd_f16_finite();
        memcpy(q + b * bs, &d, 2);
        if (t == NU_TYPE_Q4_1 || t == NU_TYPE_Q5_1) memcpy(q + b * bs + 2, &m, 2);
    }
    float *a = malloc(sizeof(float) * n), *b2 = malloc(sizeof(float) * n);
    nu_quant_row_to_f32_ref(t, q, a, n);
    nu_quant_row_to_f32_avx2(t, q, b2, n);
    char name[64];
    snprintf(name, sizeof name, "%s avx2 vs scalar", nu_type_name(t));
    NU_CHECK(memcmp(a, b2, sizeof(float) * n) == 0 || nu_test_equal(name, b2, a, n));
    nu_dequant_row(t, q, b2, n, true);
    NU_CHECK(memcmp(a, b2, sizeof(float) * n) == 0);
    free(q);
    free(a);
    free(b2);
}

static void half_rows(void) {
    enum { N = 203 }; /* odd: exercises the scalar tail */
    uint16_t h[N];
    float a[N], b[N];
    for (nu_type t = NU_TYPE_F16; t <= NU_TYPE_BF16; t++) {
        for (int i = 0; i < N; i++) h[i] = t == NU_TYPE_F16 ? rnd_f16_finite() : (uint16_t)rnd();
        h[0] = 0x7C00; /* +Inf (f16) */
        h[1] = 0x0001; /* smallest subnormal (f16) */
        h[2] = 0x8400; /* -smallest normal (f16) */
        nu_dequant_row(t, h, a, N, false);
        nu_dequant_row(t, h, b, N, true);
        /* NaN payloads may differ (F16C quiets signalling NaNs; only bf16 draws NaNs here) */
        int bad = 0;
        for (int i = 0; i < N; i++) bad += memcmp(&a[i], &b[i], 4) != 0 && !(isnan(a[i]) && isnan(b[i]));
        NU_CHECK_MSG(bad == 0, "%s rows: F16C/AVX2 vs scalar differ in %d values", nu_type_name(t), bad);
    }
}

int main(void) {
    test_q8_0_block();
    test_q4_0_block();
    test_q4_1_block();
    test_q5_0_block();
    test_q5_1_block();
    test_layout();
    round_trip(NU_TYPE_Q8_0, 0.0045, 0.003);
    round_trip(NU_TYPE_Q4_0, 0.126, 0.04);
    round_trip(NU_TYPE_Q4_1, 0.069, 0.042);
    round_trip(NU_TYPE_Q5_0, 0.064, 0.02);
    round_trip(NU_TYPE_Q5_1, 0.034, 0.021);
    if (nu_cpu_fast_enabled()) {
        for (nu_type t = NU_TYPE_Q8_0; t <= NU_TYPE_Q5_1; t++) fast_vs_ref(t);
        half_rows();
    } else {
        printf("  (no AVX2/FMA/F16C: fast dequantizers not compared)\n");
    }
    return nu_test_summary("test_quant");
}
