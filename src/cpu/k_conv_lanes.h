/*
 * k_conv_lanes.h — AVX2 lane helpers shared by the Winograd kernels (k_conv_winograd.c,
 * k_conv_wino_gen.c), which hold 8 neighbouring tiles of a tile row in the 8 lanes of a vector:
 * tile q's inputs start at q * m in a row of floats, so they are read by de-interleaving
 * stride-m streams and written back by interleaving. Internal to the CPU backend.
 */
#ifndef NU_K_CONV_LANES_H
#define NU_K_CONV_LANES_H

#include <immintrin.h>
#include <stdint.h>

#define NU_CONV_AVX2 __attribute__((target("avx2,fma"), always_inline)) static inline

/* All-ones in the first min(n, 8) lanes. */
NU_CONV_AVX2 __m256 nu_conv_lane_mask(int64_t n) {
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), idx));
}

/* e[q] = x[2q], o[q] = x[2q + 1] (reads 16 floats). */
NU_CONV_AVX2 void nu_conv_deint2(const float *x, __m256 *e, __m256 *o) {
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 ev = _mm256_shuffle_ps(v0, v1, 0x88), od = _mm256_shuffle_ps(v0, v1, 0xDD);
    *e = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8));
    *o = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), 0xD8));
}

/* d[l][q] = x[4q + l], l < 4 (reads 32 floats). */
NU_CONV_AVX2 void nu_conv_deint4(const float *x, __m256 *d) {
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    __m256 a0 = _mm256_permute2f128_ps(v0, v2, 0x20), a1 = _mm256_permute2f128_ps(v0, v2, 0x31);
    __m256 a2 = _mm256_permute2f128_ps(v1, v3, 0x20), a3 = _mm256_permute2f128_ps(v1, v3, 0x31);
    __m256 u0 = _mm256_unpacklo_ps(a0, a1), u1 = _mm256_unpackhi_ps(a0, a1);
    __m256 u2 = _mm256_unpacklo_ps(a2, a3), u3 = _mm256_unpackhi_ps(a2, a3);
    d[0] = _mm256_shuffle_ps(u0, u2, 0x44);
    d[1] = _mm256_shuffle_ps(u0, u2, 0xEE);
    d[2] = _mm256_shuffle_ps(u1, u3, 0x44);
    d[3] = _mm256_shuffle_ps(u1, u3, 0xEE);
}

/* The inverses: row[2q + j] = o[j][q] (16 floats), row[4q + j] = o[j][q] (32 floats). */
NU_CONV_AVX2 void nu_conv_interleave2(const __m256 *o, float *row) {
    __m256 lo = _mm256_unpacklo_ps(o[0], o[1]), hi = _mm256_unpackhi_ps(o[0], o[1]);
    _mm256_storeu_ps(row, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(row + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}

NU_CONV_AVX2 void nu_conv_interleave4(const __m256 *o, float *row) {
    __m256 t0 = _mm256_unpacklo_ps(o[0], o[1]), t1 = _mm256_unpackhi_ps(o[0], o[1]);
    __m256 t2 = _mm256_unpacklo_ps(o[2], o[3]), t3 = _mm256_unpackhi_ps(o[2], o[3]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    _mm256_storeu_ps(row, _mm256_permute2f128_ps(s0, s1, 0x20));
    _mm256_storeu_ps(row + 8, _mm256_permute2f128_ps(s2, s3, 0x20));
    _mm256_storeu_ps(row + 16, _mm256_permute2f128_ps(s0, s1, 0x31));
    _mm256_storeu_ps(row + 24, _mm256_permute2f128_ps(s2, s3, 0x31));
}

#endif
