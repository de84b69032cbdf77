/*
 * rng.c — PyTorch-compatible CPU random numbers (MT19937 + torch's distribution transforms).
 *
 * Reproduces, bit for bit, what Debian torch 1.13.1 on x86-64 (CPU capability AVX2) returns for
 * torch.manual_seed(s) followed by randn / rand (f32, f64) and randint (int64), including the
 * generator state each call consumes. The behaviour matched, from PyTorch's sources
 * (aten/src/ATen/core/MT19937RNGEngine.h, CPUGeneratorImpl.cpp, core/DistributionsHelper.h,
 * core/TransformationHelper.h, native/cpu/DistributionTemplates.h, native/cpu/avx_mathfun.h):
 *
 *  - engine: standard MT19937; seeding uses only the low 32 bits of the 64-bit seed;
 *    random() is one tempered word, random64() = (first word << 32) | second word.
 *  - uniform_real<float>:  (random()   & (2^24-1)) * 2^-24
 *    uniform_real<double>: (random64() & (2^53-1)) * 2^-53
 *  - randint(lo, hi): range = hi - lo; (range >= 2^32 ? random64() : random()) % range + lo.
 *  - randn, numel < 16 (and every f64 call below 16): at::normal_distribution<double> per
 *    element: u1, u2 = two uniform doubles; r = sqrt(-2 log(1 - u2)); theta = 2 pi u1; returns
 *    r cos(theta) and caches r sin(theta) in the generator for the next scalar-path element.
 *  - randn, numel >= 16: draw n uniforms, transform each 16-block j<8: u1 = 1 - d[j],
 *    u2 = d[j+8]; d[j] = r cos, d[j+8] = r sin. If n % 16 != 0 the last 16 elements are drawn
 *    again (16 fresh uniforms) and transformed once more. f64 uses libm log/sqrt/cos/sin;
 *    f32 uses the AVX2 kernel normal_fill_16_AVX2 with the cephes-style log256_ps and
 *    sincos256_ps polynomials of avx_mathfun.h, reproduced here lane by lane. torch's build (GCC
 *    12, -O2 -mavx2 -mfma, fp-contract=fast) fuses some of those multiply-adds into FMAs; the
 *    fused steps are written as fmaf() below and the unfused products are forced to round
 *    (round_f) so that our own compiler's contraction cannot change a bit.
 *
 * Tested by tests/test_rng.c: every case of ../shared/reference/rng compared bytewise, and a
 * state save/restore round trip. docs/rng.md explains the paths in more detail.
 */
#include "nuance/rng.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- rounding barrier */

/* Returns v after forcing it into a register as a rounded float, so that a product computed
 * before it can never be fused with a later add by -ffp-contract=fast. */
static inline float round_f(float v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __asm__("" : "+x"(v));
    return v;
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__("" : "+w"(v));
    return v;
#else
    volatile float t = v;
    return t;
#endif
}

/* ---------------------------------------------------------------- MT19937 */

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UMASK 0x80000000u
#define MT_LMASK 0x7fffffffu

void nu_rng_seed(nu_rng *r, uint64_t seed) {
    r->seed = seed;
    r->mt[0] = (uint32_t)(seed & 0xffffffffu);
    for (uint32_t j = 1; j < NU_RNG_MT_N; j++)
        r->mt[j] = 1812433253u * (r->mt[j - 1] ^ (r->mt[j - 1] >> 30)) + j;
    r->left = 1;
    r->next = 0;
    r->normal_f64 = 0.0;
    r->normal_f32 = 0.0f;
    r->has_normal_f64 = false;
    r->has_normal_f32 = false;
}

uint64_t nu_rng_initial_seed(const nu_rng *r) { return r->seed; }

static inline uint32_t mt_twist(uint32_t u, uint32_t v) {
    return (((u & MT_UMASK) | (v & MT_LMASK)) >> 1) ^ ((v & 1u) ? MT_MATRIX_A : 0u);
}

/* Regenerates all 624 words (the reference recurrence, in place). */
static void mt_next_state(nu_rng *r) {
    uint32_t *s = r->mt;
    int j = 0;
    for (; j < NU_RNG_MT_N - MT_M; j++) s[j] = s[j + MT_M] ^ mt_twist(s[j], s[j + 1]);
    for (; j < NU_RNG_MT_N - 1; j++) s[j] = s[j + MT_M - NU_RNG_MT_N] ^ mt_twist(s[j], s[j + 1]);
    s[NU_RNG_MT_N - 1] = s[MT_M - 1] ^ mt_twist(s[NU_RNG_MT_N - 1], s[0]);
    r->left = NU_RNG_MT_N;
    r->next = 0;
}

uint32_t nu_rng_next_u32(nu_rng *r) {
    if (--r->left == 0) mt_next_state(r);
    uint32_t y = r->mt[r->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

uint64_t nu_rng_next_u64(nu_rng *r) {
    uint64_t hi = nu_rng_next_u32(r);
    uint64_t lo = nu_rng_next_u32(r);
    return (hi << 32) | lo;
}

/* ---------------------------------------------------------------- uniforms */

static inline float uniform_f32(nu_rng *r) {
    return (float)(nu_rng_next_u32(r) & ((1u << 24) - 1)) * (1.0f / 16777216.0f);
}

static inline double uniform_f64(nu_rng *r) {
    return (double)(nu_rng_next_u64(r) & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

void nu_rng_rand_f32(nu_rng *r, float *out, int64_t n) {
    NU_ASSERT(n >= 0 && (n == 0 || out));
    for (int64_t i = 0; i < n; i++) out[i] = uniform_f32(r);
}

void nu_rng_rand_f64(nu_rng *r, double *out, int64_t n) {
    NU_ASSERT(n >= 0 && (n == 0 || out));
    for (int64_t i = 0; i < n; i++) out[i] = uniform_f64(r);
}

nu_status nu_rng_randint_i64(nu_rng *r, int64_t low, int64_t high, int64_t *out, int64_t n) {
    NU_ASSERT(n >= 0 && (n == 0 || out));
    if (low >= high)
        return nu_error(NU_ERR_INVALID_ARG, "randint: low (%lld) must be less than high (%lld)", (long long)low,
                        (long long)high);
    /* torch: range = (uint64)to - (uint64)from; 32-bit draws unless the range needs more. */
    uint64_t range = (uint64_t)high - (uint64_t)low;
    for (int64_t i = 0; i < n; i++) {
        uint64_t v = range >= (UINT64_C(1) << 32) ? nu_rng_next_u64(r) : (uint64_t)nu_rng_next_u32(r);
        out[i] = (int64_t)(v % range + (uint64_t)low); /* wraps like torch's uint64 sum */
    }
    return NU_OK;
}

/* ---------------------------------------------------------------- normal: scalar path */

/* at::normal_distribution<double>(0, 1) on the CPU generator (with its one-value cache). */
static double normal_scalar(nu_rng *r) {
    if (r->has_normal_f64) {
        r->has_normal_f64 = false;
        return r->normal_f64;
    }
    const double u1 = uniform_f64(r);
    const double u2 = uniform_f64(r);
    const double rad = sqrt(-2.0 * log(1.0 - u2));
    const double theta = 2.0 * 3.141592653589793238462643383279502 * u1;
    r->normal_f64 = rad * sin(theta);
    r->has_normal_f64 = true;
    return rad * cos(theta);
}

/* ---------------------------------------------------------------- normal: f32 AVX2 block */

/* Constants of avx_mathfun.h (cephes), as float. */
#define CEPHES_SQRTHF 0.707106781186547524f
#define LOG_P0 7.0376836292E-2f
#define LOG_P1 -1.1514610310E-1f
#define LOG_P2 1.1676998740E-1f
#define LOG_P3 -1.2420140846E-1f
#define LOG_P4 +1.4249322787E-1f
#define LOG_P5 -1.6668057665E-1f
#define LOG_P6 +2.0000714765E-1f
#define LOG_P7 -2.4999993993E-1f
#define LOG_P8 +3.3333331174E-1f
#define LOG_Q1 -2.12194440e-4f
#define LOG_Q2 0.693359375f
#define MINUS_DP1 -0.78515625f
#define MINUS_DP2 -2.4187564849853515625e-4f
#define MINUS_DP3 -3.77489497744594108e-8f
#define SINCOF_P0 -1.9515295891E-4f
#define SINCOF_P1 8.3321608736E-3f
#define SINCOF_P2 -1.6666654611E-1f
#define COSCOF_P0 2.443315711809948E-005f
#define COSCOF_P1 -1.388731625493765E-003f
#define COSCOF_P2 4.166664568298827E-002f
#define CEPHES_FOPI 1.27323954473516f

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* log256_ps for one lane, x in (0, 1] (u1 = 1 - uniform is never 0). */
static float log_lane(float x) {
    if (x < u2f(0x00800000u)) x = u2f(0x00800000u); /* max(x, smallest normal) */
    uint32_t bits = f2u(x);
    float e = (float)((int32_t)(bits >> 23) - 0x7f);
    e = e + 1.0f;
    x = u2f((bits & ~0x7f800000u) | f2u(0.5f)); /* mantissa in [0.5, 1) */
    const bool lt = x < CEPHES_SQRTHF;
    const float tmp = lt ? x : 0.0f;
    x = x - 1.0f;
    e = e - (lt ? 1.0f : 0.0f);
    x = x + tmp;

    const float z = round_f(x * x);
    float y = LOG_P0;
    y = fmaf(y, x, LOG_P1);
    y = fmaf(y, x, LOG_P2);
    y = fmaf(y, x, LOG_P3);
    y = fmaf(y, x, LOG_P4);
    y = fmaf(y, x, LOG_P5);
    y = fmaf(y, x, LOG_P6);
    y = fmaf(y, x, LOG_P7);
    y = fmaf(y, x, LOG_P8);
    y = round_f(y * x);
    /* y*z + e*q1: GCC fuses the first product (y*z) and rounds e*q1 on its own. */
    y = fmaf(y, z, round_f(e * LOG_Q1));
    y = fmaf(-z, 0.5f, y);        /* z*0.5 is exact: fused or not, same bits  */
    x = x + y;
    x = fmaf(e, LOG_Q2, x);       /* e*q2 is exact (small integer times 355/512) */
    return x;
}

/* sincos256_ps for one lane (theta in [0, 2 pi)). */
static void sincos_lane(float xin, float *s, float *c) {
    uint32_t sign_sin = f2u(xin) & 0x80000000u;
    float x = u2f(f2u(xin) & 0x7fffffffu);
    float y = round_f(x * CEPHES_FOPI);
    int32_t j = (int32_t)y; /* cvttps: truncation */
    j = (j + 1) & ~1;
    y = (float)j;
    const uint32_t swap_sin = ((uint32_t)j & 4u) << 29;
    const bool poly_cos = (j & 2) == 0; /* first polynomial (cos) gives the sine */
    /* extended-precision reduction x = ((x - y DP1) - y DP2) - y DP3, each step fused */
    x = fmaf(y, MINUS_DP1, x);
    x = fmaf(y, MINUS_DP2, x);
    x = fmaf(y, MINUS_DP3, x);
    const uint32_t sign_cos = ((~(uint32_t)(j - 2)) & 4u) << 29;
    sign_sin ^= swap_sin;

    const float z = round_f(x * x);
    float yc = COSCOF_P0;
    yc = fmaf(yc, z, COSCOF_P1);
    yc = fmaf(yc, z, COSCOF_P2);
    yc = round_f(yc * z);
    yc = fmaf(yc, z, -round_f(z * 0.5f)); /* y*z - z*0.5: the product y*z is the fused one */
    yc = yc + 1.0f;

    float ys = SINCOF_P0;
    ys = fmaf(ys, z, SINCOF_P1);
    ys = fmaf(ys, z, SINCOF_P2);
    ys = round_f(ys * z);
    ys = fmaf(ys, x, x);

    /* select: sin = mask ? ys : yc, cos = the other; the adds of +0 mirror the kernel */
    const float ysin2 = poly_cos ? ys : 0.0f;
    const float ysin1 = poly_cos ? 0.0f : yc;
    const float yc2 = yc - ysin1;
    const float ys2 = ys - ysin2;
    const float sv = ysin1 + ysin2;
    const float cv = yc2 + ys2;
    *s = u2f(f2u(sv) ^ sign_sin);
    *c = u2f(f2u(cv) ^ sign_cos);
}

/* normal_fill_16_AVX2 with mean 0, std 1: d[0..15] holds uniforms on entry. */
static void normal_block_f32(float *d) {
    const float two_pi = (float)(2.0f * 3.141592653589793238462643383279502);
    for (int j = 0; j < 8; j++) {
        const float u1 = 1.0f - d[j];
        const float u2 = d[j + 8];
        const float radius = sqrtf(round_f(-2.0f * log_lane(u1)));
        const float theta = round_f(two_pi * u2);
        float st, ct;
        sincos_lane(theta, &st, &ct);
        /* fmadd(n, std = 1, mean = 0) = n + 0 */
        d[j] = round_f(radius * ct) + 0.0f;
        d[j + 8] = round_f(radius * st) + 0.0f;
    }
}

/* normal_fill_16<double> with mean 0, std 1. */
static void normal_block_f64(double *d) {
    for (int j = 0; j < 8; j++) {
        const double u1 = 1.0 - d[j];
        const double u2 = d[j + 8];
        const double radius = sqrt(-2.0 * log(u1));
        const double theta = 2.0 * 3.141592653589793238462643383279502 * u2;
        d[j] = radius * cos(theta);
        d[j + 8] = radius * sin(theta);
    }
}

void nu_rng_randn_f32(nu_rng *r, float *out, int64_t n) {
    NU_ASSERT(n >= 0 && (n == 0 || out));
    if (n < 16) {
        for (int64_t i = 0; i < n; i++) out[i] = (float)normal_scalar(r);
        return;
    }
    for (int64_t i = 0; i < n; i++) out[i] = uniform_f32(r);
    for (int64_t i = 0; i + 16 <= n; i += 16) normal_block_f32(out + i);
    if (n % 16 != 0) {
        float *tail = out + n - 16; /* overlaps the previous block: redrawn and redone */
        for (int i = 0; i < 16; i++) tail[i] = uniform_f32(r);
        normal_block_f32(tail);
    }
}

void nu_rng_randn_f64(nu_rng *r, double *out, int64_t n) {
    NU_ASSERT(n >= 0 && (n == 0 || out));
    if (n < 16) {
        for (int64_t i = 0; i < n; i++) out[i] = normal_scalar(r);
        return;
    }
    for (int64_t i = 0; i < n; i++) out[i] = uniform_f64(r);
    for (int64_t i = 0; i + 16 <= n; i += 16) normal_block_f64(out + i);
    if (n % 16 != 0) {
        double *tail = out + n - 16;
        for (int i = 0; i < 16; i++) tail[i] = uniform_f64(r);
        normal_block_f64(tail);
    }
}

/* ---------------------------------------------------------------- state blob */

/* torch's CPUGeneratorImplState on x86-64 (little-endian, natural alignment):
 *   0 u64 the_initial_seed | 8 i32 left | 12 i32 seeded | 16 u64 next | 24 u64 state[624]
 *   5016 f64 normal_x | 5024 f64 normal_y | 5032 f64 normal_rho | 5040 i32 normal_is_valid
 *   (5044 pad) -- end of the legacy THGeneratorState, 5048 bytes --
 *   5048 f32 next_float_normal_sample | 5052 u8 is_next_float_normal_sample_valid | pad to 5056 */
#define OFF_SEED 0
#define OFF_LEFT 8
#define OFF_SEEDED 12
#define OFF_NEXT 16
#define OFF_STATE 24
#define OFF_NORMAL_X 5016
#define OFF_NORMAL_Y 5024
#define OFF_NORMAL_RHO 5032
#define OFF_NORMAL_VALID 5040
#define OFF_FLOAT_NORMAL 5048
#define OFF_FLOAT_VALID 5052

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static double get_f64(const uint8_t *p) {
    uint64_t u = get_u64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

void nu_rng_state_save(const nu_rng *r, uint8_t out[NU_RNG_STATE_BYTES]) {
    memset(out, 0, NU_RNG_STATE_BYTES);
    put_u64(out + OFF_SEED, r->seed);
    put_u32(out + OFF_LEFT, (uint32_t)r->left);
    put_u32(out + OFF_SEEDED, 1);
    put_u64(out + OFF_NEXT, r->next);
    for (int i = 0; i < NU_RNG_MT_N; i++) put_u64(out + OFF_STATE + 8 * i, r->mt[i]);
    if (r->has_normal_f64) {
        uint64_t u;
        memcpy(&u, &r->normal_f64, 8);
        put_u64(out + OFF_NORMAL_Y, u);
        put_u32(out + OFF_NORMAL_VALID, 1);
    }
    if (r->has_normal_f32) {
        put_u32(out + OFF_FLOAT_NORMAL, f2u(r->normal_f32));
        out[OFF_FLOAT_VALID] = 1;
    }
}

nu_status nu_rng_state_restore(nu_rng *r, const void *blob, size_t size) {
    if (!blob || (size != NU_RNG_STATE_BYTES && size != NU_RNG_STATE_BYTES_LEGACY))
        return nu_error(NU_ERR_FORMAT, "rng state: expected %d (or legacy %d) bytes, got %zu", NU_RNG_STATE_BYTES,
                        NU_RNG_STATE_BYTES_LEGACY, blob ? size : (size_t)0);
    const uint8_t *p = blob;
    const int32_t left = (int32_t)get_u32(p + OFF_LEFT);
    const int32_t seeded = (int32_t)get_u32(p + OFF_SEEDED);
    const uint64_t next = get_u64(p + OFF_NEXT);
    /* torch's mt19937::is_valid(); the state words must also fit 32 bits (torch would truncate). */
    if (!seeded || left <= 0 || left > NU_RNG_MT_N || next > NU_RNG_MT_N)
        return nu_error(NU_ERR_FORMAT, "rng state: invalid MT19937 position (seeded %d, left %d, next %llu)",
                        (int)seeded, (int)left, (unsigned long long)next);
    for (int i = 0; i < NU_RNG_MT_N; i++)
        if (get_u64(p + OFF_STATE + 8 * i) >> 32)
            return nu_error(NU_ERR_FORMAT, "rng state: state word %d does not fit 32 bits", i);

    r->seed = get_u64(p + OFF_SEED);
    r->left = left;
    r->next = (uint32_t)next;
    for (int i = 0; i < NU_RNG_MT_N; i++) r->mt[i] = (uint32_t)get_u64(p + OFF_STATE + 8 * i);
    r->has_normal_f64 = get_u32(p + OFF_NORMAL_VALID) != 0;
    r->normal_f64 = 0.0;
    r->has_normal_f32 = false;
    r->normal_f32 = 0.0f;
    if (size == NU_RNG_STATE_BYTES) {
        if (r->has_normal_f64) r->normal_f64 = get_f64(p + OFF_NORMAL_Y);
        r->has_normal_f32 = p[OFF_FLOAT_VALID] != 0;
        if (r->has_normal_f32) r->normal_f32 = u2f(get_u32(p + OFF_FLOAT_NORMAL));
    } else if (r->has_normal_f64) {
        /* legacy blob: the cached sample is rebuilt from (x, rho) as torch's set_state does */
        const double rho = get_f64(p + OFF_NORMAL_RHO);
        const double theta = 2.0 * 3.141592653589793238462643383279502 * get_f64(p + OFF_NORMAL_X);
        r->normal_f64 = rho * sin(theta);
    }
    return NU_OK;
}
