/*
 * k_conv_wino_gen.c — Winograd convolution for the stride-1, dilation-1, single-group kernels
 * other than 3x3 (which k_conv_winograd.c handles with hand-written transforms): 1xr and rx1
 * (a 1-d F(m, r) along one axis, the other axis untouched) and rxr (2-d F(m x m, r x r)), for
 * r in {3, 5, 7}: InceptionV3's 1x7/7x1, 1x3/3x1 and 5x5 convs.
 *
 * Per axis, a kernel of size r gives m outputs per tile from a = m + r - 1 inputs:
 *   r = 7: F(2, 7), a = 8      r = 5: F(4, 5), a = 8      r = 3: F(4, 3), a = 6
 *   r = 1: m = a = 1 (the axis is not transformed)
 * The matrices are Toom-Cook's with the point at infinity, in Lavin & Gray's (2016) form, for the
 * finite points p_0 .. p_{a-2} = 0, 1, -1, 2, -2 (a = 6) and 0, 1, -1, 2, -2, 1/2, -1/2 (a = 8):
 *   B^T[j][i] = coefficient of x^i in prod_{l != j} (x - p_l)   (j finite; degree a - 2)
 *   B^T[a-1][i] = coefficient of x^i in prod_l (x - p_l)         (the point at infinity)
 *   G[j][k]   = p_j^k / D_j,  D_j = prod_{l != j} (p_j - p_l);   G[a-1][k] = [k == r-1]
 *   A^T[i][j] = p_j^i;                                           A^T[i][a-1] = [i == m-1]
 * and a tile's outputs are Y = A_h^T [ (G_h g G_w^T) .* (B_h^T d B_w) ] A_w. B^T depends only on
 * the points, so one table per a serves every (m, r); the tables below were computed in exact
 * rational arithmetic (B^T entries are small binary fractions, exact in f32) and
 * tests/test_op_conv.c checks every configuration against the direct reference conv.
 * Accuracy (f32, unit-scale data, 160 input channels; NMSE against a double-precision direct
 * conv): F(2,7) 1.6e-12, F(4,5) 9.7e-13, F(4,3) 5.4e-13 — the level of the 3x3 path's F(4x4,3x3)
 * (an f32 direct conv: ~1e-14). Larger tiles (F(4,7): 5e-11) were measured and not used.
 *
 * The data flow is that of k_conv_winograd.c (U = transformed weights of a block of output
 * channels, V = transformed input tiles, T = a_h * a_w GEMMs M[t] = U[t] V[t], output transform),
 * but after the weight transform each thread takes whole blocks of tile rows and runs the input
 * transform, the T GEMMs and the output transform of its block alone, in its own V and M, which
 * stay in its cache. Each AVX2 vector holds 8 neighbouring tiles of a tile row (the staged input
 * rows are zero-padded, read as stride-m streams). The coefficient tables are compile-time
 * constants and every transform loop is unrolled with constant sizes, so zero coefficients vanish
 * and +-1 become adds. Blocks and channel blocks depend only on the shape: 1 and N threads give
 * bitwise-equal results.
 * Tested by tests/test_op_conv.c.
 */
#include <cblas.h>
#include <immintrin.h>

#include "cpu/gemm.h"
#include "cpu/k_conv.h"
#include "cpu/k_conv_lanes.h"

#define NU_AVX2 __attribute__((target("avx2,fma")))
#define ALWAYS_INLINE __attribute__((always_inline)) inline
#define UNROLL _Pragma("GCC unroll 16")

/* Work budgets in floats: U of one output-channel block (shared, as k_conv_winograd.c), and
 * each thread's V + M of one block of tile rows (512K floats = 2 MiB, this machine's L2 per
 * core: the block's transforms, GEMMs and output transform stay in cache). Blocks are also
 * made small enough to give at least MIN_ITEMS of them. Measured on the dev machine (1x7,
 * 160 channels, 17x17, batch 8, 2 threads): whole-shape chunks shared by both threads, as
 * k_conv_winograd.c runs, spent 19% of the time writing V and 10% zeroing M through memory. */
#define U_BUDGET (8 * 1024 * 1024)
#define BLOCK_BUDGET (512 * 1024)
#define MIN_ITEMS 8

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ---------------------------------------------------------------- tables */

static const float BT6[6][6] = {
    {4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
    {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1},
};
static const float PT6[5] = {0, 1, -1, 2, -2};
static const float INVD6[5] = {1.f / 4, -1.f / 6, -1.f / 6, 1.f / 24, 1.f / 24};

static const float BT8[8][8] = {
    {-1, 0, 21.f / 4, 0, -21.f / 4, 0, 1, 0},
    {0, 1, 1, -17.f / 4, -17.f / 4, 1, 1, 0},
    {0, -1, 1, 17.f / 4, -17.f / 4, -1, 1, 0},
    {0, 1.f / 2, 1.f / 4, -5.f / 2, -5.f / 4, 2, 1, 0},
    {0, -1.f / 2, 1.f / 4, 5.f / 2, -5.f / 4, -2, 1, 0},
    {0, 2, 4, -5.f / 2, -5, 1.f / 2, 1, 0},
    {0, -2, 4, 5.f / 2, -5, -1.f / 2, 1, 0},
    {0, -1, 0, 21.f / 4, 0, -21.f / 4, 0, 1},
};
static const float PT8[7] = {0, 1, -1, 2, -2, 0.5f, -0.5f};
/* 1 / D_j: D = -1, -9/2, -9/2, 90, 90, 45/32, 45/32 */
static const float INVD8[7] = {-1.f, -2.f / 9, -2.f / 9, 1.f / 90, 1.f / 90, 32.f / 45, 32.f / 45};

/* Matrix entries for a constant a (6, 8, or 1 = identity); fold to constants when inlined. */
static ALWAYS_INLINE float bt_at(int a, int j, int i) {
    if (a == 1) return 1.f;
    return a == 8 ? BT8[j][i] : BT6[j][i];
}
static ALWAYS_INLINE float ipow(float p, int e) {
    float x = 1.f;
    UNROLL for (int k = 0; k < e; k++) x *= p;
    return x;
}
static ALWAYS_INLINE float g_at(int a, int r, int j, int k) {
    if (a == 1) return 1.f;
    if (j == a - 1) return k == r - 1 ? 1.f : 0.f;
    return a == 8 ? ipow(PT8[j], k) * INVD8[j] : ipow(PT6[j], k) * INVD6[j];
}
static ALWAYS_INLINE float at_at(int a, int m, int i, int j) {
    if (a == 1) return 1.f;
    if (j == a - 1) return i == m - 1 ? 1.f : 0.f;
    return ipow(a == 8 ? PT8[j] : PT6[j], i);
}

/* acc + c x for a constant c (first: acc is unset) */
NU_AVX2 static ALWAYS_INLINE __m256 term(__m256 acc, bool first, float c, __m256 x) {
    if (first) {
        if (c == 1.f) return x;
        if (c == -1.f) return _mm256_sub_ps(_mm256_setzero_ps(), x);
        return _mm256_mul_ps(_mm256_set1_ps(c), x);
    }
    if (c == 1.f) return _mm256_add_ps(acc, x);
    if (c == -1.f) return _mm256_sub_ps(acc, x);
    return _mm256_fmadd_ps(_mm256_set1_ps(c), x, acc);
}

/* Matrix-vector products on 8-lane vectors, with x[k * xs] and y[i * ys] (strided so that rows
 * and columns of a 2-d tile can be transformed in place of a copy). kind: 0 = B^T (a x a),
 * 1 = G (a x r), 2 = A^T (m x a). */
enum { MAT_BT, MAT_G, MAT_AT };
NU_AVX2 static ALWAYS_INLINE void matvec(const int kind, const int a, const int m, const int r, const __m256 *x,
                                         int xs, __m256 *y, int ys) {
    const int rows = kind == MAT_AT ? m : a, cols = kind == MAT_G ? r : a;
    UNROLL for (int i = 0; i < rows; i++) {
        __m256 acc = _mm256_setzero_ps();
        bool first = true;
        UNROLL for (int k = 0; k < cols; k++) {
            float c = kind == MAT_BT ? bt_at(a, i, k) : kind == MAT_G ? g_at(a, r, i, k) : at_at(a, m, i, k);
            if (c == 0.f) continue;
            acc = term(acc, first, c, x[k * xs]);
            first = false;
        }
        y[i * ys] = acc;
    }
}

/* ---------------------------------------------------------------- plan */

/* Output tile size along an axis with kernel size r (0: not supported). */
static int axis_m(int64_t r) {
    switch (r) {
    case 1: return 1;
    case 3: return 4;
    case 5: return 4;
    case 7: return 2;
    default: return 0;
    }
}

bool nu_winog_plan_make(const nu_conv_geom *g, nu_winog_plan *pl) {
    if (g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1 || g->G != 1) return false;
    if (g->N < 1 || g->Ho < 1 || g->Wo < 1 || g->C < 1 || g->K < 1) return false;
    int mh = axis_m(g->KH), mw = axis_m(g->KW);
    if (!mh || !mw || (g->KH == 1 && g->KW == 1)) return false;
    /* 2-d tiles only for square kernels (the tables are per axis, but rxs kernels are not used) */
    if (g->KH > 1 && g->KW > 1 && g->KH != g->KW) return false;
    memset(pl, 0, sizeof *pl);
    pl->mh = mh;
    pl->mw = mw;
    pl->ah = mh + (int)g->KH - 1;
    pl->aw = mw + (int)g->KW - 1;
    pl->th = cdiv(g->Ho, mh);
    pl->tw = cdiv(g->Wo, mw);
    int64_t T = (int64_t)pl->ah * pl->aw, rows = g->N * pl->th;
    int64_t kb = g->K;
    if (T * g->K * g->C > U_BUDGET) {
        kb = U_BUDGET / (T * g->C) / 16 * 16;
        if (kb < 16) kb = 16;
        if (kb > g->K) kb = g->K;
    }
    int64_t rb = BLOCK_BUDGET / (T * (g->C + kb) * pl->tw);
    if (rb > cdiv(rows, MIN_ITEMS)) rb = cdiv(rows, MIN_ITEMS);
    if (rb < 1) rb = 1;
    pl->kb = kb;
    pl->rb = rb;
    int64_t bcap = rb * pl->tw;
    pl->u_floats = nu_conv_align16((size_t)(T * kb * g->C));
    pl->v_floats = nu_conv_align16((size_t)(T * g->C * bcap));
    pl->thread_floats = pl->v_floats + nu_conv_align16((size_t)(T * kb * bcap));
    return true;
}

/* ---------------------------------------------------------------- lanes */

/* Lane q of a group holds tile tx0 + q of a tile row: its inputs along x start at
 * (tx0 + q) * mw, a stride-mw stream through the staged row. */

/* d[j][q] = row[q * mw + j] for j < aw (mw = 1, 2 or 4; row holds 8 * mw + aw - 1 floats and
 * may be read up to 8 * mw + 4 * ((aw - 1) / 4) + 8 floats) */
NU_AVX2 static ALWAYS_INLINE void lanes_load(const int mw, const int aw, const float *row, __m256 *d) {
    if (mw == 1) {
        UNROLL for (int j = 0; j < aw; j++) d[j] = _mm256_loadu_ps(row + j);
    } else if (mw == 2) {
        UNROLL for (int j = 0; j < aw; j += 2) {
            __m256 e, o;
            nu_conv_deint2(row + j, &e, &o);
            d[j] = e;
            if (j + 1 < aw) d[j + 1] = o;
        }
    } else {
        UNROLL for (int j = 0; j < aw; j += 4) {
            __m256 q[4];
            nu_conv_deint4(row + j, q);
            UNROLL for (int l = 0; l < 4; l++) if (j + l < aw) d[j + l] = q[l];
        }
    }
}

/* The inverse for outputs: row[q * mw + j] = o[j][q] for j < mw (8 * mw floats). */
NU_AVX2 static ALWAYS_INLINE void lanes_store(const int mw, const __m256 *o, float *row) {
    if (mw == 1) _mm256_storeu_ps(row, o[0]);
    else if (mw == 2) nu_conv_interleave2(o, row);
    else nu_conv_interleave4(o, row);
}

/* ---------------------------------------------------------------- transforms */

/* Tiles per staged segment of a tile row, and the staged floats per input row: the inputs of
 * SEG tiles (SEG * mw + aw - 1 <= SEG * 4 + 7) plus lanes_load's overreach (4 + 8). */
#define SEG 64
#define SPAN (SEG * 4 + 24)

/* Input transform of tiles tx0 .. tx0 + nt - 1 (nt <= SEG) of tile row ty of image n, channel
 * c, into V[t][c][p0 + q] (v = &V[0][c][p0]; tstride floats between t planes). The segment's
 * input rows are staged once, zero-padded, then transformed 8 tiles per vector. */
NU_AVX2 static ALWAYS_INLINE void input_seg(const int ah, const int aw, const int mh, const int mw,
                                            const nu_conv_geom *g, nu_conv_view4 a, int64_t n, int64_t c, int64_t ty,
                                            int64_t tx0, int64_t nt, float *v, int64_t tstride) {
    _Alignas(32) float buf[8][SPAN];
    int64_t iy0 = ty * mh - g->ph, ix0 = tx0 * mw - g->pw;
    int64_t span = nt * mw + aw - 1, zspan = (nt + 7) / 8 * 8 * mw + 16; /* zspan: what lanes_load reads */
    int64_t xlo = ix0 < 0 ? -ix0 : 0, xhi = g->W - ix0 < span ? g->W - ix0 : span;
    if (xhi < xlo) xhi = xlo;
    const float *plane = a.p + n * a.s[0] + c * a.s[1];
    UNROLL for (int i = 0; i < ah; i++) {
        int64_t iy = iy0 + i;
        float *row = buf[i];
        bool inside = iy >= 0 && iy < g->H;
        for (int64_t x = 0; x < zspan; x += 8) /* zeros first: padding and the overreach */
            if (!inside || x < xlo || x + 8 > xhi) _mm256_store_ps(row + x, _mm256_setzero_ps());
        if (!inside) continue;
        const float *src = plane + iy * a.s[2];
        if (a.s[3] == 1)
            memcpy(row + xlo, src + ix0 + xlo, sizeof(float) * (size_t)(xhi - xlo));
        else
            for (int64_t x = xlo; x < xhi; x++) row[x] = src[(ix0 + x) * a.s[3]];
    }
    __m256i mi = _mm256_castps_si256(nu_conv_lane_mask(nt % 8));
    for (int64_t q0 = 0; q0 < nt; q0 += 8) {
        __m256 d[8 * 8], t[8 * 8];
        UNROLL for (int i = 0; i < ah; i++) lanes_load(mw, aw, buf[i] + q0 * mw, d + i * aw);
        /* rows: B_w^T on each d[i][.]; then columns: B_h^T */
        const __m256 *src = d;
        if (aw > 1) {
            UNROLL for (int i = 0; i < ah; i++) matvec(MAT_BT, aw, 0, 0, d + i * aw, 1, t + i * aw, 1);
            src = t;
        }
        if (ah > 1) {
            __m256 *dst = src == d ? t : d;
            UNROLL for (int j = 0; j < aw; j++) matvec(MAT_BT, ah, 0, 0, src + j, aw, dst + j, aw);
            src = dst;
        }
        float *dst = v + q0;
        if (nt - q0 >= 8) {
            UNROLL for (int k = 0; k < ah * aw; k++) _mm256_storeu_ps(dst + k * tstride, src[k]);
        } else {
            UNROLL for (int k = 0; k < ah * aw; k++) _mm256_maskstore_ps(dst + k * tstride, mi, src[k]);
        }
    }
}

/* U[t][orow][c .. c+7] = (G_h g G_w^T)[t] for the filters of 8 input channels c .. c+7
 * (nvalid of them) of output channel o. */
NU_AVX2 static ALWAYS_INLINE void weight_group(const int ah, const int aw, const int rh, const int rw,
                                               nu_conv_view4 w, int64_t o, int64_t c, int nvalid, float *u,
                                               int64_t tstride) {
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 mask = nu_conv_lane_mask(nvalid);
    __m256i vidx = _mm256_mullo_epi32(lane, _mm256_set1_epi32((int32_t)w.s[1]));
    const float *base = w.p + o * w.s[0] + c * w.s[1];
    __m256 gg[7 * 7], t[8 * 7], r2[8 * 8];
    UNROLL for (int i = 0; i < rh; i++) UNROLL for (int j = 0; j < rw; j++)
        gg[i * rw + j] = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base + i * w.s[2] + j * w.s[3], vidx, mask, 4);
    /* rows: G_w g[i][.] (rw -> aw); columns: G_h (rh -> ah) */
    UNROLL for (int i = 0; i < rh; i++) {
        if (aw > 1) matvec(MAT_G, aw, 0, rw, gg + i * rw, 1, t + i * aw, 1);
        else t[i] = gg[i];
    }
    UNROLL for (int j = 0; j < aw; j++) {
        if (ah > 1) matvec(MAT_G, ah, 0, rh, t + j, aw, r2 + j, aw);
        else r2[j] = t[j];
    }
    if (nvalid >= 8) {
        UNROLL for (int k = 0; k < ah * aw; k++) _mm256_storeu_ps(u + k * tstride, r2[k]);
    } else {
        __m256i mi = _mm256_castps_si256(mask);
        UNROLL for (int k = 0; k < ah * aw; k++) _mm256_maskstore_ps(u + k * tstride, mi, r2[k]);
    }
}

/* Output transform of tiles tx0 .. tx0 + nvalid - 1 of tile row ty, output channel o: y = A_h^T
 * M A_w + bias from M[t][p0 + q] (tstride floats between t planes) into yplane [Ho, Wo]. */
NU_AVX2 static ALWAYS_INLINE void output_group(const int ah, const int aw, const int mh, const int mw,
                                               const nu_conv_geom *g, const float *mm, int64_t tstride,
                                               int64_t nvalid, float bias, bool relu, float *yplane, int64_t ty,
                                               int64_t tx0) {
    __m256 x[8 * 8], t[8 * 8], o[8 * 8];
    __m256i mi = _mm256_castps_si256(nu_conv_lane_mask(nvalid));
    UNROLL for (int k = 0; k < ah * aw; k++)
        x[k] = nvalid >= 8 ? _mm256_loadu_ps(mm + k * tstride) : _mm256_maskload_ps(mm + k * tstride, mi);
    /* rows: A_w^T (aw -> mw), into t[i][.] with row length mw; columns: A_h^T (ah -> mh) */
    UNROLL for (int i = 0; i < ah; i++) {
        if (aw > 1) matvec(MAT_AT, aw, mw, 0, x + i * aw, 1, t + i * mw, 1);
        else t[i] = x[i];
    }
    UNROLL for (int j = 0; j < mw; j++) {
        if (ah > 1) matvec(MAT_AT, ah, mh, 0, t + j, mw, o + j, mw);
        else o[j] = t[j];
    }
    __m256 vb = _mm256_set1_ps(bias);
    int64_t ox0 = tx0 * mw, ncols = g->Wo - ox0 < 8 * mw ? g->Wo - ox0 : 8 * mw;
    if (ncols > nvalid * mw) ncols = nvalid * mw;
    _Alignas(32) float rowbuf[32];
    UNROLL for (int i = 0; i < mh; i++) {
        int64_t oy = ty * mh + i;
        if (oy >= g->Ho) break;
        UNROLL for (int j = 0; j < mw; j++) o[i * mw + j] = _mm256_add_ps(o[i * mw + j], vb);
        if (relu) /* max(0, x): NaN passes through */
            UNROLL for (int j = 0; j < mw; j++) o[i * mw + j] = _mm256_max_ps(_mm256_setzero_ps(), o[i * mw + j]);
        float *dst = yplane + oy * g->Wo + ox0;
        if (ncols == 8 * mw) {
            lanes_store(mw, o + i * mw, dst);
        } else {
            lanes_store(mw, o + i * mw, rowbuf);
            memcpy(dst, rowbuf, sizeof(float) * (size_t)ncols);
        }
    }
}

/* One set of transforms per supported (KH, KW). */
typedef struct kit {
    void (*input)(const nu_conv_geom *g, nu_conv_view4 a, int64_t n, int64_t c, int64_t ty, int64_t tx0,
                  int64_t nvalid, float *v, int64_t tstride);
    void (*weight)(nu_conv_view4 w, int64_t o, int64_t c, int nvalid, float *u, int64_t tstride);
    void (*output)(const nu_conv_geom *g, const float *mm, int64_t tstride, int64_t nvalid, float bias, bool relu,
                   float *yplane, int64_t ty, int64_t tx0);
} kit;

#define KIT(NAME, RH, RW, MH, MW)                                                                            \
    NU_AVX2 static void input_##NAME(const nu_conv_geom *g, nu_conv_view4 a, int64_t n, int64_t c, int64_t ty, \
                                     int64_t tx0, int64_t nvalid, float *v, int64_t ts) {                     \
        input_seg(MH + RH - 1, MW + RW - 1, MH, MW, g, a, n, c, ty, tx0, nvalid, v, ts);                     \
    }                                                                                                         \
    NU_AVX2 static void weight_##NAME(nu_conv_view4 w, int64_t o, int64_t c, int nv, float *u, int64_t ts) {  \
        weight_group(MH + RH - 1, MW + RW - 1, RH, RW, w, o, c, nv, u, ts);                                   \
    }                                                                                                         \
    NU_AVX2 static void output_##NAME(const nu_conv_geom *g, const float *mm, int64_t ts, int64_t nvalid,    \
                                      float bias, bool relu, float *yplane, int64_t ty, int64_t tx0) {        \
        output_group(MH + RH - 1, MW + RW - 1, MH, MW, g, mm, ts, nvalid, bias, relu, yplane, ty, tx0);       \
    }
KIT(r1x7, 1, 7, 1, 2)
KIT(r7x1, 7, 1, 2, 1)
KIT(r1x5, 1, 5, 1, 4)
KIT(r5x1, 5, 1, 4, 1)
KIT(r1x3, 1, 3, 1, 4)
KIT(r3x1, 3, 1, 4, 1)
KIT(r5x5, 5, 5, 4, 4)
KIT(r3x3, 3, 3, 4, 4)
KIT(r7x7, 7, 7, 2, 2)
#define KIT_OF(NAME) (kit){input_##NAME, weight_##NAME, output_##NAME}

static kit kit_for(int64_t kh, int64_t kw) {
    switch (kh * 8 + kw) {
    case 1 * 8 + 7: return KIT_OF(r1x7);
    case 7 * 8 + 1: return KIT_OF(r7x1);
    case 1 * 8 + 5: return KIT_OF(r1x5);
    case 5 * 8 + 1: return KIT_OF(r5x1);
    case 1 * 8 + 3: return KIT_OF(r1x3);
    case 3 * 8 + 1: return KIT_OF(r3x1);
    case 5 * 8 + 5: return KIT_OF(r5x5);
    case 3 * 8 + 3: return KIT_OF(r3x3);
    default: NU_ASSERT(kh == 7 && kw == 7); return KIT_OF(r7x7);
    }
}

/* ---------------------------------------------------------------- driver */

NU_AVX2 void nu_winog_run(const nu_compute_params *p, const nu_conv_geom *g, const nu_winog_plan *pl,
                          nu_conv_view4 a, nu_conv_view4 w, const nu_conv_wrows *wr, const float *bias, bool relu,
                          float *b_out, float *work) {
    NU_ASSERT(w.s[1] > -(INT32_MAX / 8) && w.s[1] < INT32_MAX / 8); /* the weight gathers' int32 offsets */
    kit kt = kit_for(g->KH, g->KW);
    int64_t T = (int64_t)pl->ah * pl->aw, rows = g->N * pl->th, bcap = pl->rb * pl->tw;
    int64_t nblk = cdiv(rows, pl->rb), nkb = cdiv(g->K, pl->kb), ncg = cdiv(g->C, 8);
    float *U = work, *V = work + pl->u_floats + pl->thread_floats * (size_t)p->ith, *M = V + pl->v_floats;
    int64_t ldu = pl->kb * g->C, ldv = g->C * bcap, ldm = pl->kb * bcap;
    int64_t lo, hi;
    for (int64_t kbi = 0; kbi < nkb; kbi++) {
        int64_t k0 = kbi * pl->kb, kn = g->K - k0 < pl->kb ? g->K - k0 : pl->kb;
        if (kbi > 0) nu_compute_barrier(p); /* every block of the previous U is done */
        if (wr) {
            /* typed weights: items (output channel), its filter row dequantized first */
            int64_t KK = g->KH * g->KW;
            nu_conv_view4 v = {wr->row, {0, KK, g->KW, 1}};
            nu_split(kn, p->ith, p->nth, &lo, &hi);
            for (int64_t ol = lo; ol < hi; ol++) {
                nu_dequant_row(wr->w->type, (const char *)wr->w->data + (k0 + ol) * wr->w->nb[0], wr->row, g->C * KK,
                               true);
                for (int64_t c = 0; c < g->C; c += 8)
                    kt.weight(v, 0, c, (int)(g->C - c < 8 ? g->C - c : 8), U + ol * g->C + c, ldu);
            }
        } else {
            /* items (output channel, group of 8 input channels) */
            nu_split(kn * ncg, p->ith, p->nth, &lo, &hi);
            for (int64_t it = lo; it < hi; it++) {
                int64_t ol = it / ncg, c = (it % ncg) * 8;
                kt.weight(w, k0 + ol, c, (int)(g->C - c < 8 ? g->C - c : 8), U + ol * g->C + c, ldu);
            }
        }
        nu_compute_barrier(p);
        /* items: blocks of rb tile rows, each transformed, multiplied and written back by one
         * thread in its own V and M */
        nu_split(nblk, p->ith, p->nth, &lo, &hi);
        for (int64_t bi = lo; bi < hi; bi++) {
            int64_t r0 = bi * pl->rb, rn = rows - r0 < pl->rb ? rows - r0 : pl->rb, pn = rn * pl->tw;
            for (int64_t c = 0; c < g->C; c++)
                for (int64_t rl = 0; rl < rn; rl++) {
                    int64_t n = (r0 + rl) / pl->th, ty = (r0 + rl) % pl->th;
                    for (int64_t tx0 = 0; tx0 < pl->tw; tx0 += SEG)
                        kt.input(g, a, n, c, ty, tx0, pl->tw - tx0 < SEG ? pl->tw - tx0 : SEG,
                                 V + c * bcap + rl * pl->tw + tx0, ldv);
                }
            /* T GEMMs: M[t] (kn x pn) = U[t] (kn x C) x V[t] (C x pn) */
            for (int64_t t = 0; t < T; t++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)kn, (int)pn, (int)g->C, 1.f, U + t * ldu,
                            (int)g->C, V + t * ldv, (int)bcap, 0.f, M + t * ldm, (int)bcap);
            for (int64_t ol = 0; ol < kn; ol++) {
                int64_t o = k0 + ol;
                for (int64_t rl = 0; rl < rn; rl++) {
                    int64_t n = (r0 + rl) / pl->th, ty = (r0 + rl) % pl->th;
                    float *yplane = b_out + (n * g->K + o) * g->Ho * g->Wo;
                    for (int64_t gi = 0; gi * 8 < pl->tw; gi++)
                        kt.output(g, M + ol * bcap + rl * pl->tw + gi * 8, ldm, pl->tw - gi * 8, bias ? bias[o] : 0.f,
                                  relu, yplane, ty, gi * 8);
                }
            }
        }
    }
}
