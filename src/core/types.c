/*
 * types.c — dtype traits and scalar/row conversions (f16, bf16, integers, quantized blocks).
 * Tested by tests/test_types.c (round trips, rounding, NaN/Inf, every type's row size).
 */
#include <math.h>
#include <string.h>

#include "core/internal.h"

static const nu_type_traits traits[NU_TYPE_COUNT] = {
    [NU_TYPE_F32] = {"f32", 1, 4, false, true},
    [NU_TYPE_F16] = {"f16", 1, 2, false, true},
    [NU_TYPE_BF16] = {"bf16", 1, 2, false, true},
    [NU_TYPE_F64] = {"f64", 1, 8, false, true},
    [NU_TYPE_I8] = {"i8", 1, 1, false, false},
    [NU_TYPE_U8] = {"u8", 1, 1, false, false},
    [NU_TYPE_I16] = {"i16", 1, 2, false, false},
    [NU_TYPE_I32] = {"i32", 1, 4, false, false},
    [NU_TYPE_I64] = {"i64", 1, 8, false, false},
    [NU_TYPE_BOOL] = {"bool", 1, 1, false, false},
    [NU_TYPE_Q8_0] = {"q8_0", 32, sizeof(nu_block_q8_0), true, false},
    [NU_TYPE_Q4_0] = {"q4_0", 32, sizeof(nu_block_q4_0), true, false},
    [NU_TYPE_Q4_1] = {"q4_1", 32, sizeof(nu_block_q4_1), true, false},
    [NU_TYPE_Q5_0] = {"q5_0", 32, sizeof(nu_block_q5_0), true, false},
    [NU_TYPE_Q5_1] = {"q5_1", 32, sizeof(nu_block_q5_1), true, false},
};

_Static_assert(sizeof(nu_block_q8_0) == 34, "q8_0 block is 34 bytes in GGUF");
_Static_assert(sizeof(nu_block_q4_0) == 18, "q4_0 block is 18 bytes in GGUF");
_Static_assert(sizeof(nu_block_q4_1) == 20, "q4_1 block is 20 bytes in GGUF");
_Static_assert(sizeof(nu_block_q5_0) == 22, "q5_0 block is 22 bytes in GGUF");
_Static_assert(sizeof(nu_block_q5_1) == 24, "q5_1 block is 24 bytes in GGUF");

const nu_type_traits *nu_type_info(nu_type t) {
    NU_ASSERT((unsigned)t < NU_TYPE_COUNT);
    return &traits[t];
}

const char *nu_type_name(nu_type t) { return (unsigned)t < NU_TYPE_COUNT ? traits[t].name : "?"; }

nu_type nu_type_from_name(const char *name) {
    for (int t = 0; t < NU_TYPE_COUNT; t++)
        if (strcmp(traits[t].name, name) == 0) return (nu_type)t;
    return NU_TYPE_COUNT;
}

size_t nu_row_size(nu_type t, int64_t n) {
    const nu_type_traits *tr = nu_type_info(t);
    NU_ASSERT(n % tr->blck == 0);
    return (size_t)(n / tr->blck) * tr->size;
}

/* IEEE binary16 <-> binary32 with round-to-nearest-even (bit manipulation, no F16C needed). */
uint16_t nu_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t man = x & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u | (man >> 13) : 0)); /* Inf/NaN */
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 0x1f) return (uint16_t)(sign | 0x7c00u); /* overflow -> Inf */
    if (e <= 0) {                                      /* subnormal or zero */
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* may carry into exponent: correct */
    return (uint16_t)h;
}

float nu_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        if (man == 0) {
            x = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400u));
            x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        x = sign | 0x7f800000u | (man << 13);
    } else {
        x = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

uint16_t nu_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u); /* round to nearest even, as torch does */
    return (uint16_t)(x >> 16);
}

float nu_bf16_to_f32(uint16_t h) {
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

void nu_row_to_f32(nu_type t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case NU_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case NU_TYPE_F16: for (int64_t i = 0; i < n; i++) dst[i] = nu_f16_to_f32(((const uint16_t *)src)[i]); break;
    case NU_TYPE_BF16: for (int64_t i = 0; i < n; i++) dst[i] = nu_bf16_to_f32(((const uint16_t *)src)[i]); break;
    case NU_TYPE_F64: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const double *)src)[i]; break;
    case NU_TYPE_I8: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int8_t *)src)[i]; break;
    case NU_TYPE_U8:
    case NU_TYPE_BOOL: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const uint8_t *)src)[i]; break;
    case NU_TYPE_I16: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int16_t *)src)[i]; break;
    case NU_TYPE_I32: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int32_t *)src)[i]; break;
    case NU_TYPE_I64: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int64_t *)src)[i]; break;
    default: nu_quant_row_to_f32(t, src, dst, n); break;
    }
}

/* Round to nearest (ties to even) and saturate to [lo, hi]; NaN -> 0. */
static double sat(float v, double lo, double hi) {
    if (v != v) return 0.0;
    double r = nearbyint((double)v);
    return r < lo ? lo : r > hi ? hi : r;
}

void nu_row_from_f32(nu_type t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case NU_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case NU_TYPE_F16: for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = nu_f32_to_f16(src[i]); break;
    case NU_TYPE_BF16: for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = nu_f32_to_bf16(src[i]); break;
    case NU_TYPE_F64: for (int64_t i = 0; i < n; i++) ((double *)dst)[i] = src[i]; break;
    case NU_TYPE_I8: for (int64_t i = 0; i < n; i++) ((int8_t *)dst)[i] = (int8_t)sat(src[i], -128.0, 127.0); break;
    case NU_TYPE_U8: for (int64_t i = 0; i < n; i++) ((uint8_t *)dst)[i] = (uint8_t)sat(src[i], 0.0, 255.0); break;
    case NU_TYPE_I16:
        for (int64_t i = 0; i < n; i++) ((int16_t *)dst)[i] = (int16_t)sat(src[i], -32768.0, 32767.0);
        break;
    case NU_TYPE_I32:
        for (int64_t i = 0; i < n; i++) ((int32_t *)dst)[i] = (int32_t)sat(src[i], -2147483648.0, 2147483647.0);
        break;
    case NU_TYPE_I64:
        for (int64_t i = 0; i < n; i++)
            ((int64_t *)dst)[i] = (int64_t)sat(src[i], -9223372036854775808.0, 9223372036854774784.0);
        break;
    case NU_TYPE_BOOL: for (int64_t i = 0; i < n; i++) ((uint8_t *)dst)[i] = src[i] != 0.0f; break;
    default:
        NU_ASSERT(nu_type_info(t)->is_quant);
        nu_quant_row_from_f32(t, src, dst, n);
        break;
    }
}
