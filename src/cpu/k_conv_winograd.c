/*
 * k_conv_winograd.c — Winograd F(m x m, 3 x 3) convolution (m = 4 or 2) for 3x3, stride-1,
 * dilation-1, single-group convs, with AVX2/FMA transforms and OpenBLAS GEMMs.
 *
 * Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016), eq. 8:
 *   Y = A^T [ (G g G^T) .* (B^T d B) ] A   for an (m+2)^2 input tile d and 3x3 filter g.
 * F(4,3) uses the interpolation points 0, +-1, +-2, inf (the paper's F(4x4,3x3) matrices);
 * F(2,3) the points 0, +-1, inf. With T = (m+2)^2 transform positions:
 *   U[t][k][c]  = (G g_kc G^T)[t]                        weight transform
 *   V[t][c][p]  = (B^T d_cp B)[t]                        input transform, p = tile
 *   M[t][k][p]  = sum_c U[t][k][c] V[t][c][p]            T GEMMs (K x C) x (C x P)
 *   y[k][tile p] = A^T M[.][k][p] A (+ bias)             output transform
 * Tiles are processed in chunks of whole tile rows (V and M of one chunk live in the work
 * buffer) and output channels in blocks (the U of one block); both sizes depend only on the
 * shape, so the arithmetic is identical for any thread count. Transforms run 8 tiles (input,
 * output) or 8 input channels (weights) per AVX2 vector.
 * Accuracy: F(4,3) multiplies f32 rounding errors by the transform norms (entries up to 8 in
 * A^T, 5 in B^T): measured NMSE vs a double-precision direct conv <= 2.1e-12 (F(2,3): ~1e-13,
 * like im2col + GEMM) on unit-scale data; tests/test_op_conv.c checks it against the reference
 * twin.
 * Tested by tests/test_op_conv.c.
 */
#include <cblas.h>
#include <immintrin.h>

#include "cpu/gemm.h"
#include "cpu/k_conv.h"
#include "cpu/k_conv_lanes.h"

#define NU_AVX2 __attribute__((target("avx2,fma")))

/* Work-buffer budgets in floats: the transformed weights of one output-channel block (32 MiB),
 * and V + M of a chunk (8 MiB, but at least MIN_CHUNK_TILES tiles). Measured on the dev machine:
 * 32 vs 64 MiB for U costs ~2% on 640 channels at 32x32; chunks of 128 instead of 256 tiles cost
 * 5-10% on 320..512 channels at 64x64. */
#define U_BUDGET (8 * 1024 * 1024)
#define CHUNK_BUDGET (2 * 1024 * 1024)
#define MIN_CHUNK_TILES 256
/* U blocks larger than this (floats) are written with non-temporal stores: they do not stay in
 * cache until the GEMMs read them anyway, and streaming saves the read-for-ownership traffic
 * (measured 6% on 320 channels at 64x64, 14% on 640 at 32x32). */
#define U_STREAM_MIN (1024 * 1024)
#define ALWAYS_INLINE __attribute__((always_inline)) inline

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool nu_wino_plan_make(const nu_conv_geom *g, int m, nu_wino_plan *pl) {
    if (g->KH != 3 || g->KW != 3 || g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1 || g->G != 1) return false;
    if (m != 2 && m != 4) return false;
    if (g->N < 1 || g->Ho < 1 || g->Wo < 1 || g->C < 1 || g->K < 1) return false;
    memset(pl, 0, sizeof *pl);
    int64_t a = m + 2, T = a * a;
    pl->m = m;
    pl->th = cdiv(g->Ho, m);
    pl->tw = cdiv(g->Wo, m);
    int64_t rows = g->N * pl->th;
    int64_t kb = g->K;
    if (T * g->K * g->C > U_BUDGET) {
        kb = U_BUDGET / (T * g->C) / 16 * 16;
        if (kb < 16) kb = 16;
        if (kb > g->K) kb = g->K;
    }
    int64_t rc = CHUNK_BUDGET / (T * (g->C + kb) * pl->tw);
    if (rc * pl->tw < MIN_CHUNK_TILES) rc = cdiv(MIN_CHUNK_TILES, pl->tw);
    if (rc < 1) rc = 1;
    if (rc > rows) rc = rows;
    pl->kb = kb;
    pl->rc = rc;
    int64_t pcap = rc * pl->tw;
    pl->off_u = 0;
    pl->off_v = nu_conv_align16((size_t)(T * kb * g->C));
    pl->off_m = pl->off_v + nu_conv_align16((size_t)(T * g->C * pcap));
    pl->bytes = (pl->off_m + nu_conv_align16((size_t)(T * kb * pcap))) * sizeof(float);
    return true;
}

/* ---------------------------------------------------------------- 1-d transforms (8 lanes) */

/* B^T d for F(4,3): 6 -> 6 */
NU_AVX2 static inline void bt6(const __m256 *d, __m256 *r) {
    __m256 four = _mm256_set1_ps(4.f), five = _mm256_set1_ps(5.f), two = _mm256_set1_ps(2.f);
    __m256 s = _mm256_sub_ps(d[4], d[2]);
    __m256 e = _mm256_sub_ps(d[3], d[1]);
    r[0] = _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4]));
    r[1] = _mm256_fnmadd_ps(four, _mm256_add_ps(d[1], d[2]), _mm256_add_ps(d[3], d[4]));
    r[2] = _mm256_fmadd_ps(four, _mm256_sub_ps(d[1], d[2]), _mm256_sub_ps(d[4], d[3]));
    r[3] = _mm256_fmadd_ps(two, e, s);
    r[4] = _mm256_fnmadd_ps(two, e, s);
    r[5] = _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5]));
}

/* B^T d for F(2,3): 4 -> 4 */
NU_AVX2 static inline void bt4(const __m256 *d, __m256 *r) {
    r[0] = _mm256_sub_ps(d[0], d[2]);
    r[1] = _mm256_add_ps(d[1], d[2]);
    r[2] = _mm256_sub_ps(d[2], d[1]);
    r[3] = _mm256_sub_ps(d[1], d[3]);
}

/* A^T m for F(4,3): 6 -> 4 */
NU_AVX2 static inline void at6(const __m256 *x, __m256 *o) {
    __m256 a1 = _mm256_add_ps(x[1], x[2]), b1 = _mm256_sub_ps(x[1], x[2]);
    __m256 a2 = _mm256_add_ps(x[3], x[4]), b2 = _mm256_sub_ps(x[3], x[4]);
    o[0] = _mm256_add_ps(_mm256_add_ps(x[0], a1), a2);
    o[1] = _mm256_fmadd_ps(_mm256_set1_ps(2.f), b2, b1);
    o[2] = _mm256_fmadd_ps(_mm256_set1_ps(4.f), a2, a1);
    o[3] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.f), b2, b1), x[5]);
}

/* A^T m for F(2,3): 4 -> 2 */
NU_AVX2 static inline void at4(const __m256 *x, __m256 *o) {
    o[0] = _mm256_add_ps(_mm256_add_ps(x[0], x[1]), x[2]);
    o[1] = _mm256_sub_ps(_mm256_sub_ps(x[1], x[2]), x[3]);
}

/* G g for F(4,3): 3 -> 6 */
NU_AVX2 static inline void g6(const __m256 *g, __m256 *u) {
    __m256 s = _mm256_add_ps(g[0], g[2]);
    __m256 t = _mm256_fmadd_ps(_mm256_set1_ps(1.f / 24.f), g[0], _mm256_mul_ps(_mm256_set1_ps(1.f / 6.f), g[2]));
    __m256 h = _mm256_mul_ps(_mm256_set1_ps(1.f / 12.f), g[1]);
    u[0] = _mm256_mul_ps(_mm256_set1_ps(0.25f), g[0]);
    u[1] = _mm256_mul_ps(_mm256_set1_ps(-1.f / 6.f), _mm256_add_ps(s, g[1]));
    u[2] = _mm256_mul_ps(_mm256_set1_ps(-1.f / 6.f), _mm256_sub_ps(s, g[1]));
    u[3] = _mm256_add_ps(t, h);
    u[4] = _mm256_sub_ps(t, h);
    u[5] = g[2];
}

/* G g for F(2,3): 3 -> 4 */
NU_AVX2 static inline void g4(const __m256 *g, __m256 *u) {
    __m256 s = _mm256_add_ps(g[0], g[2]), half = _mm256_set1_ps(0.5f);
    u[0] = g[0];
    u[1] = _mm256_mul_ps(half, _mm256_add_ps(s, g[1]));
    u[2] = _mm256_mul_ps(half, _mm256_sub_ps(s, g[1]));
    u[3] = g[2];
}

/* [v[1..7], x]: the stream of the next tile over */
NU_AVX2 static inline __m256 shift_in(__m256 v, const float *x) {
    __m256 r = _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7));
    return _mm256_blend_ps(r, _mm256_broadcast_ss(x), 0x80);
}

/* Splits a row of 8 consecutive tiles' inputs (row[q*m + j], q = 0..7, j = 0..m+1) into the
 * a = m+2 lane vectors d[j] (lane q). row holds 8m + 2 floats. */
NU_AVX2 static inline void deinterleave(int m, const float *row, __m256 *d) {
    if (m == 4) {
        nu_conv_deint4(row, d);
        d[4] = shift_in(d[0], row + 32);
        d[5] = shift_in(d[1], row + 33);
    } else {
        nu_conv_deint2(row, &d[0], &d[1]);
        d[2] = shift_in(d[0], row + 16);
        d[3] = shift_in(d[1], row + 17);
    }
}

/* The inverse: m lane vectors o[j] (lane q = tile) -> row[q*m + j], 8m floats. */
NU_AVX2 static inline void interleave(int m, const __m256 *o, float *row) {
    if (m == 4) nu_conv_interleave4(o, row);
    else nu_conv_interleave2(o, row);
}

/* ---------------------------------------------------------------- transforms */

#define SPAN 40 /* >= 8*4 + 2, padded */

/* Input transform of 8 tiles (tile row ty of image n, tiles tx0..tx0+7, channel c) into
 * V[t][c][p0 + q] (ldv = floats between t planes, pcap between channels). */
NU_AVX2 static ALWAYS_INLINE void input_tiles_m(const nu_conv_geom *g, const int m, nu_conv_view4 a, int64_t n, int64_t c, int64_t ty,
                                int64_t tx0, int64_t nvalid, float *v, int64_t p0, int64_t pcap) {
    int an = m + 2;
    _Alignas(32) float buf[6][SPAN];
    int64_t iy0 = ty * m - g->ph, ix0 = tx0 * m - g->pw, span = 8 * m + 2;
    int64_t xlo = ix0 < 0 ? -ix0 : 0, xhi = g->W - ix0 < span ? g->W - ix0 : span;
    if (xhi < xlo) xhi = xlo;
    const float *plane = a.p + n * a.s[0] + c * a.s[1];
    for (int r = 0; r < an; r++) {
        int64_t iy = iy0 + r;
        float *dst = buf[r];
        if (iy < 0 || iy >= g->H) {
            memset(dst, 0, sizeof(float) * SPAN);
            continue;
        }
        const float *src = plane + iy * a.s[2];
        for (int64_t x = 0; x < xlo; x++) dst[x] = 0.f;
        if (a.s[3] == 1)
            memcpy(dst + xlo, src + ix0 + xlo, sizeof(float) * (size_t)(xhi - xlo));
        else
            for (int64_t x = xlo; x < xhi; x++) dst[x] = src[(ix0 + x) * a.s[3]];
        for (int64_t x = xhi; x < SPAN; x++) dst[x] = 0.f;
    }
    __m256 d[6][6], t[6][6], col[6], res[6];
    for (int r = 0; r < an; r++) deinterleave(m, buf[r], d[r]);
    /* B^T d: combine rows, per column j */
    for (int j = 0; j < an; j++) {
        for (int r = 0; r < an; r++) col[r] = d[r][j];
        if (m == 4) bt6(col, res); else bt4(col, res);
        for (int i = 0; i < an; i++) t[i][j] = res[i];
    }
    /* (B^T d) B: combine columns, per row i */
    __m256 mask = nu_conv_lane_mask(nvalid);
    int64_t tstride = g->C * pcap;
    float *base = v + c * pcap + p0;
    for (int i = 0; i < an; i++) {
        if (m == 4) bt6(t[i], res); else bt4(t[i], res);
        for (int j = 0; j < an; j++) {
            float *dst = base + (i * an + j) * tstride;
            if (nvalid >= 8) _mm256_storeu_ps(dst, res[j]);
            else _mm256_maskstore_ps(dst, _mm256_castps_si256(mask), res[j]);
        }
    }
}

/* Weight transform of filters (o, c .. c+7) into U[t][o - k0][c + q] (ldu = floats between t
 * planes; rows of C floats). */
NU_AVX2 static ALWAYS_INLINE void weight_filters_m(const nu_conv_geom *g, const int m, nu_conv_view4 w, int64_t o,
                                                   int64_t c, int64_t nvalid, float *u, int64_t orow, int64_t ldu,
                                                   bool stream) {
    int an = m + 2;
    __m256 mask = nu_conv_lane_mask(nvalid);
    __m256i vidx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)w.s[1]));
    const float *base = w.p + o * w.s[0] + c * w.s[1];
    __m256 gg[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            gg[i][j] = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base + i * w.s[2] + j * w.s[3], vidx, mask, 4);
    __m256 t[6][3], col[3], res[6];
    for (int j = 0; j < 3; j++) {
        for (int i = 0; i < 3; i++) col[i] = gg[i][j];
        if (m == 4) g6(col, res); else g4(col, res);
        for (int i = 0; i < an; i++) t[i][j] = res[i];
    }
    float *dst0 = u + orow * g->C + c;
    for (int i = 0; i < an; i++) {
        if (m == 4) g6(t[i], res); else g4(t[i], res);
        for (int j = 0; j < an; j++) {
            float *dst = dst0 + (i * an + j) * ldu;
            if (nvalid >= 8 && stream) _mm256_stream_ps(dst, res[j]);
            else if (nvalid >= 8) _mm256_storeu_ps(dst, res[j]);
            else _mm256_maskstore_ps(dst, _mm256_castps_si256(mask), res[j]);
        }
    }
}

/* Output transform of 8 tiles of output channel o: M[t][orow][p0 + q] -> y (+ bias). */
NU_AVX2 static ALWAYS_INLINE void output_tiles_m(const nu_conv_geom *g, const int m, const float *mm, int64_t ldm, int64_t orow,
                                 int64_t pcap, int64_t p0, int64_t nvalid, float bias, bool relu, float *yplane, int64_t ty,
                                 int64_t tx0) {
    int an = m + 2;
    __m256 mask = nu_conv_lane_mask(nvalid);
    __m256 x[6][6], t[4][6], col[6], res[6];
    const float *base = mm + orow * pcap + p0;
    for (int i = 0; i < an; i++)
        for (int j = 0; j < an; j++) {
            const float *src = base + (i * an + j) * ldm;
            x[i][j] = nvalid >= 8 ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, _mm256_castps_si256(mask));
        }
    /* A^T x: combine rows, per column j */
    for (int j = 0; j < an; j++) {
        for (int i = 0; i < an; i++) col[i] = x[i][j];
        if (m == 4) at6(col, res); else at4(col, res);
        for (int i = 0; i < m; i++) t[i][j] = res[i];
    }
    __m256 vb = _mm256_set1_ps(bias);
    int64_t ox0 = tx0 * m, ncols = g->Wo - ox0 < 8 * m ? g->Wo - ox0 : 8 * m;
    if (ncols > nvalid * m) ncols = nvalid * m;
    _Alignas(32) float rowbuf[32];
    for (int i = 0; i < m; i++) {
        int64_t oy = ty * m + i;
        if (m == 4) at6(t[i], res); else at4(t[i], res);
        if (oy >= g->Ho) continue;
        for (int j = 0; j < m; j++) res[j] = _mm256_add_ps(res[j], vb);
        if (relu) /* max(0, x): NaN passes through */
            for (int j = 0; j < m; j++) res[j] = _mm256_max_ps(_mm256_setzero_ps(), res[j]);
        float *dst = yplane + oy * g->Wo + ox0;
        if (ncols == 8 * m) {
            interleave(m, res, dst);
        } else {
            interleave(m, res, rowbuf);
            memcpy(dst, rowbuf, sizeof(float) * (size_t)ncols);
        }
    }
}

/* Specialisations for m = 4 and m = 2 (the transforms unroll completely). */
#define WINO_SPECIALISE(M)                                                                            \
    NU_AVX2 static void input_tiles##M(const nu_conv_geom *g, nu_conv_view4 a, int64_t n, int64_t c, int64_t ty, \
                                       int64_t tx0, int64_t nvalid, float *v, int64_t p0, int64_t pcap) {       \
        input_tiles_m(g, M, a, n, c, ty, tx0, nvalid, v, p0, pcap);                                    \
    }                                                                                                  \
    NU_AVX2 static void weight_filters##M(const nu_conv_geom *g, nu_conv_view4 w, int64_t o, int64_t c,        \
                                          int64_t nvalid, float *u, int64_t orow, int64_t ldu, bool stream) {   \
        weight_filters_m(g, M, w, o, c, nvalid, u, orow, ldu, stream);                                 \
    }                                                                                                  \
    NU_AVX2 static void output_tiles##M(const nu_conv_geom *g, const float *mm, int64_t ldm, int64_t orow,     \
                                        int64_t pcap, int64_t p0, int64_t nvalid, float bias, bool relu,       \
                                        float *yplane,                                                         \
                                        int64_t ty, int64_t tx0) {                                     \
        output_tiles_m(g, M, mm, ldm, orow, pcap, p0, nvalid, bias, relu, yplane, ty, tx0);            \
    }
WINO_SPECIALISE(4)
WINO_SPECIALISE(2)

/* ---------------------------------------------------------------- driver */

NU_AVX2 void nu_wino_run(const nu_compute_params *p, const nu_conv_geom *g, const nu_wino_plan *pl, nu_conv_view4 a,
                         nu_conv_view4 w, const nu_conv_wrows *wr, const float *bias, bool relu, float *b_out,
                         float *work) {
    int m = pl->m;
    int64_t an = m + 2, T = an * an;
    /* the weight gathers index 8 input channels with int32 offsets */
    NU_ASSERT(w.s[1] > -(INT32_MAX / 8) && w.s[1] < INT32_MAX / 8);
    int64_t rows = g->N * pl->th, pcap = pl->rc * pl->tw;
    int64_t nchunks = cdiv(rows, pl->rc), nkb = cdiv(g->K, pl->kb);
    int64_t ngrp = cdiv(pl->tw, 8), ncg = cdiv(g->C, 8);
    float *U = work + pl->off_u, *V = work + pl->off_v, *M = work + pl->off_m;
    int64_t ldu = pl->kb * g->C, ldv = g->C * pcap, ldm = pl->kb * pcap;
    /* streaming needs 32-byte aligned rows: the work buffer is 64-byte aligned, U planes and
     * rows are multiples of 8 floats when C is */
    bool stream = T * ldu >= U_STREAM_MIN && g->C % 8 == 0;
    int64_t lo, hi;
    for (int64_t ci = 0; ci < nchunks; ci++) {
        int64_t r0 = ci * pl->rc, rn = rows - r0 < pl->rc ? rows - r0 : pl->rc, pn = rn * pl->tw;
        /* input transform: items (channel, tile row) */
        nu_split(g->C * rn, p->ith, p->nth, &lo, &hi);
        for (int64_t it = lo; it < hi; it++) {
            int64_t c = it / rn, rl = it % rn, rabs = r0 + rl;
            int64_t n = rabs / pl->th, ty = rabs % pl->th;
            for (int64_t gi = 0; gi < ngrp; gi++) {
                int64_t tx0 = gi * 8;
                if (m == 4) input_tiles4(g, a, n, c, ty, tx0, pl->tw - tx0, V, rl * pl->tw + tx0, pcap);
                else input_tiles2(g, a, n, c, ty, tx0, pl->tw - tx0, V, rl * pl->tw + tx0, pcap);
            }
        }
        nu_compute_barrier(p);
        for (int64_t kbi = 0; kbi < nkb; kbi++) {
            int64_t k0 = kbi * pl->kb, kn = g->K - k0 < pl->kb ? g->K - k0 : pl->kb;
            if (nkb > 1 || ci == 0) {
                if (wr) {
                    /* typed weights: items (output channel), its filter row dequantized first */
                    nu_split(kn, p->ith, p->nth, &lo, &hi);
                    nu_conv_view4 v = {wr->row, {0, 9, 3, 1}};
                    for (int64_t ol = lo; ol < hi; ol++) {
                        nu_dequant_row(wr->w->type, (const char *)wr->w->data + (k0 + ol) * wr->w->nb[0], wr->row,
                                       g->C * 9, true);
                        for (int64_t c = 0; c < g->C; c += 8) {
                            if (m == 4) weight_filters4(g, v, 0, c, g->C - c, U, ol, ldu, stream);
                            else weight_filters2(g, v, 0, c, g->C - c, U, ol, ldu, stream);
                        }
                    }
                } else {
                    /* weight transform: items (output channel, group of 8 input channels) */
                    nu_split(kn * ncg, p->ith, p->nth, &lo, &hi);
                    for (int64_t it = lo; it < hi; it++) {
                        int64_t ol = it / ncg, c = (it % ncg) * 8;
                        if (m == 4) weight_filters4(g, w, k0 + ol, c, g->C - c, U, ol, ldu, stream);
                        else weight_filters2(g, w, k0 + ol, c, g->C - c, U, ol, ldu, stream);
                    }
                }
                if (stream) _mm_sfence(); /* order the streaming stores before the barrier */
                nu_compute_barrier(p);
            }
            /* T independent GEMMs: M[t] (kn x pn) = U[t] (kn x C) x V[t] (C x pn) */
            nu_split(T, p->ith, p->nth, &lo, &hi);
            for (int64_t t = lo; t < hi; t++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)kn, (int)pn, (int)g->C, 1.f,
                            U + t * ldu, (int)g->C, V + t * ldv, (int)pcap, 0.f, M + t * ldm, (int)pcap);
            nu_compute_barrier(p);
            /* output transform: items (output channel, tile row) */
            nu_split(kn * rn, p->ith, p->nth, &lo, &hi);
            for (int64_t it = lo; it < hi; it++) {
                int64_t ol = it / rn, rl = it % rn, rabs = r0 + rl;
                int64_t n = rabs / pl->th, ty = rabs % pl->th, o = k0 + ol;
                float *yplane = b_out + (n * g->K + o) * g->Ho * g->Wo;
                for (int64_t gi = 0; gi < ngrp; gi++) {
                    int64_t tx0 = gi * 8;
                    float bo = bias ? bias[o] : 0.f;
                    if (m == 4)
                        output_tiles4(g, M, ldm, ol, pcap, rl * pl->tw + tx0, pl->tw - tx0, bo, relu, yplane, ty, tx0);
                    else
                        output_tiles2(g, M, ldm, ol, pcap, rl * pl->tw + tx0, pl->tw - tx0, bo, relu, yplane, ty, tx0);
                }
            }
        }
    }
}
