/*
 * k_attention.c — CPU kernels of fused scaled-dot-product attention: forward (online softmax,
 * FlashAttention-style tiling) and the FlashAttention-2 backward, each with a scalar reference
 * twin. Semantics and node layout: src/ops/op_attention.c.
 *
 * Forward, fast path (Dao et al. 2022, FlashAttention, Algorithm 1, on CPU):
 *   per (b, h) a thread packs K, pre-multiplied by scale*log2(e), into 16-key panels
 *   [Tk/16][HD][16] and V into rows [Tk][HDv rounded up to 8] (zero padded; strided inputs are
 *   read through their byte strides, so permuted/sliced views cost no copy beyond this packing);
 *   per block of BQ query rows it reads Q rows in place (copied only if HD is strided, and for a
 *   partial last group of 6 rows), then walks key tiles of BK keys, 6 query rows at a time:
 *   S = Q K^T (6 x 16 micro-kernel, 12 AVX2 accumulators, FMA over HD), then per row
 *   m' = max(m, rowmax S), p = 2^(S - m'), l = l*2^(m - m') + sum p, and
 *   O = O*2^(m - m') + P V (6 rows x 16 columns micro-kernel). The Tq x Tk matrix never exists:
 *   a thread holds one 6 x BK score tile; memory is O(T*D) (packed K, V of one head per thread).
 *   Output O/l, logsumexp = (m + log2 l) ln 2. Work items (b, h, query block) are handed out by
 *   an atomic counter; a row's arithmetic does not depend on who computes it, so 1 and N threads
 *   agree bitwise.
 *   Measured on the 2-core AVX2 dev machine (CPU time, one core, peak FMA 117 GFLOP/s): score
 *   micro-kernel 113 GFLOP/s vs 88 for OpenBLAS sgemm on the same 96x256x40 tile; P V 6-row
 *   kernel 105 vs 111 for sgemm (kept: no packing, the rescale by 2^(m - m') is fused);
 *   whole forward 8 heads x 40 dims, T = 1024..4096: 85-88 GFLOP/s per core. BQ/BK from 48/128
 *   to 192/512 change it by < 2% (all tiles live in L2).
 * Backward, fast path (Dao 2023, FlashAttention-2, Algorithm 2): D = rowsum(dO * O); per tile
 *   of BQB queries x BKB keys recompute S, P = 2^(S log2e - lse log2e), dP = dO V^T,
 *   dS = P (dP - D); dV += P^T dO, dK += dS^T (scale Q), dQ += dS K (times scale at the end).
 *   When B*NH >= threads each thread owns whole heads (one pass, kb outer, qb inner); otherwise
 *   phase 1 assigns (head, key block) items (dK, dV) and phase 2 (head, query block) items (dQ).
 *   Both schedules accumulate every output row over the same tiles in the same order, so their
 *   results are bitwise identical: 1 and N threads agree bitwise.
 * exp: 2^x = 2^n * p(f), n = round(x), f = x - n in [-1/2, 1/2], p = 1 + f q(f) a degree-6
 *   polynomial fitted (iteratively reweighted least squares, minimax in relative error; exact
 *   arithmetic error 1.9e-9) to 2^f, q evaluated by Estrin's scheme (the softmax pass is
 *   latency-bound: Estrin plus four independent max chains took it from 2.1 to 1.0 cycles per
 *   score; Horner's scheme would give 7.9e-8 below). Max relative error measured in
 *   f32 over x in [-126, 0]: 1.1e-7 (~1 ulp); the bound stated and tested
 *   (nu_cpu_attention_exp2_check) is 1.5e-7. x is clamped to [-127, 127] (the forward's
 *   x = s - max is never positive and skips the upper clamp); results below 2^-126.5 flush to 0,
 *   so masked (-inf) scores give exactly 0. NaN propagates.
 * Reference twins: one query row at a time in double precision (scores of one row materialised),
 *   the textbook softmax formula; backward by the same formulas, per head.
 * Tested by tests/test_op_attention.c.
 */
#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>

#include "core/internal.h"

#define TGT __attribute__((target("avx2,fma")))
#define LOG2E_F 1.44269504088896341f
#define LN2_D 0.693147180559945309

/* forward tiling */
#define PW 16  /* key panel width (2 AVX vectors)                     */
#define RB 6   /* query rows per score micro-kernel                   */
#define BK 256 /* keys per tile (multiple of PW)                      */
#define BQ 96  /* query rows per work item (multiple of RB)           */
/* backward tiling */
#define BKB 96 /* keys per tile (multiple of PW and of 6)             */
#define BQB 48 /* queries per tile (multiple of RB)                   */

static int64_t up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---------------------------------------------------------------- geometry */

typedef struct {
    int64_t B, NH, Tq, Tk, HD, HDv;
    const char *q, *k, *v, *mask;
    int64_t qnb[4], knb[4], vnb[4], mnb[4]; /* byte strides; mask: 0 on broadcast dims */
    bool causal;
    float scale;
} geom;

static void geom_init(geom *g, const nu_tensor *q, const nu_tensor *k, const nu_tensor *v, const nu_tensor *mask,
                      const nu_tensor *node) {
    g->B = q->ne[0];
    g->NH = q->ne[1];
    g->Tq = q->ne[2];
    g->HD = q->ne[3];
    g->Tk = k->ne[2];
    g->HDv = v->ne[3];
    g->q = q->data;
    g->k = k->data;
    g->v = v->data;
    g->mask = mask ? mask->data : NULL;
    for (int d = 0; d < 4; d++) {
        g->qnb[d] = q->nb[d];
        g->knb[d] = k->nb[d];
        g->vnb[d] = v->nb[d];
        g->mnb[d] = 0;
        if (mask) {
            int md = d - (4 - mask->ndim);
            if (md >= 0 && mask->ne[md] != 1) g->mnb[d] = mask->nb[md];
        }
    }
    g->causal = node->params[0] != 0;
    g->scale = nu_get_param_f(node, 1);
}

static inline float ld(const char *p) { return *(const float *)p; }
static inline const char *qrow(const geom *g, int64_t b, int64_t h, int64_t i) {
    return g->q + b * g->qnb[0] + h * g->qnb[1] + i * g->qnb[2];
}
static inline const char *krow(const geom *g, int64_t b, int64_t h, int64_t j) {
    return g->k + b * g->knb[0] + h * g->knb[1] + j * g->knb[2];
}
static inline const char *vrow(const geom *g, int64_t b, int64_t h, int64_t j) {
    return g->v + b * g->vnb[0] + h * g->vnb[1] + j * g->vnb[2];
}
static inline const char *mrow(const geom *g, int64_t b, int64_t h, int64_t i) {
    return g->mask + b * g->mnb[0] + h * g->mnb[1] + i * g->mnb[2];
}

/* Number of keys row i may see among keys [k0, k0+kn): causal keeps j <= i. */
static inline int64_t row_limit(const geom *g, int64_t i, int64_t k0, int64_t kn) {
    if (!g->causal) return kn;
    int64_t lim = i - k0 + 1;
    return lim < 0 ? 0 : lim < kn ? lim : kn;
}

/* ---------------------------------------------------------------- reference forward */

/* Per thread: Tk doubles (scores of one row) + HDv doubles (output accumulator). */
static size_t ref_fwd_doubles(const geom *g) { return (size_t)up(g->Tk + g->HDv, 8); }

static void fwd_ref(const nu_compute_params *p, nu_tensor *dst, const geom *g) {
    double *s = (double *)p->wdata + (size_t)p->ith * ref_fwd_doubles(g);
    double *acc = s + g->Tk;
    float *out = dst->data;
    float *lse = (float *)((char *)dst->data + nu_nbytes(dst));
    int64_t rows = g->B * g->NH * g->Tq, lo, hi;
    nu_split(rows, p->ith, p->nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        int64_t i = r % g->Tq, bh = r / g->Tq, h = bh % g->NH, b = bh / g->NH;
        const char *qr = qrow(g, b, h, i);
        double mx = -INFINITY;
        for (int64_t j = 0; j < g->Tk; j++) {
            if (g->causal && j > i) {
                s[j] = -INFINITY;
                continue;
            }
            const char *kr = krow(g, b, h, j);
            double dot = 0;
            for (int64_t d = 0; d < g->HD; d++) dot += (double)ld(qr + d * g->qnb[3]) * ld(kr + d * g->knb[3]);
            double sj = dot * g->scale;
            if (g->mask) sj += ld(mrow(g, b, h, i) + j * g->mnb[3]);
            s[j] = sj;
            if (sj > mx) mx = sj;
        }
        float *o = out + r * g->HDv;
        if (mx == -INFINITY) { /* every key masked: output 0 (torch: NaN), lse = +inf */
            for (int64_t d = 0; d < g->HDv; d++) o[d] = 0;
            lse[r] = INFINITY;
            continue;
        }
        double l = 0;
        for (int64_t d = 0; d < g->HDv; d++) acc[d] = 0;
        for (int64_t j = 0; j < g->Tk; j++) {
            double pj = exp(s[j] - mx);
            if (pj == 0) continue;
            l += pj;
            const char *vr = vrow(g, b, h, j);
            for (int64_t d = 0; d < g->HDv; d++) acc[d] += pj * ld(vr + d * g->vnb[3]);
        }
        for (int64_t d = 0; d < g->HDv; d++) o[d] = (float)(acc[d] / l);
        lse[r] = (float)(mx + log(l));
    }
}

/* ---------------------------------------------------------------- reference backward */

/* Per thread: dK, dV accumulators of one head + one dQ row, in double. */
static size_t ref_bwd_doubles(const geom *g) { return (size_t)up(g->Tk * (g->HD + g->HDv) + g->HD, 8); }

static void bwd_ref(const nu_compute_params *p, nu_tensor *dst, const geom *g, const nu_tensor *gy,
                    const nu_tensor *fwd) {
    double *dk = (double *)p->wdata + (size_t)p->ith * ref_bwd_doubles(g);
    double *dv = dk + g->Tk * g->HD;
    double *dq = dv + g->Tk * g->HDv;
    float *dQ = dst->data;
    float *dK = dQ + g->B * g->NH * g->Tq * g->HD;
    float *dV = dK + g->B * g->NH * g->Tk * g->HD;
    const float *O = fwd->data;
    const float *lse = (const float *)((const char *)fwd->data + nu_nbytes(fwd));
    int64_t lo, hi;
    nu_split(g->B * g->NH, p->ith, p->nth, &lo, &hi);
    for (int64_t bh = lo; bh < hi; bh++) {
        int64_t b = bh / g->NH, h = bh % g->NH;
        for (int64_t x = 0; x < g->Tk * g->HD; x++) dk[x] = 0;
        for (int64_t x = 0; x < g->Tk * g->HDv; x++) dv[x] = 0;
        for (int64_t i = 0; i < g->Tq; i++) {
            const char *qr = qrow(g, b, h, i);
            const char *gr = (const char *)gy->data + b * gy->nb[0] + h * gy->nb[1] + i * gy->nb[2];
            const float *orow = O + (bh * g->Tq + i) * g->HDv;
            double li = lse[bh * g->Tq + i];
            double D = 0; /* D_i = dO_i . O_i = sum_j P_ij dP_ij */
            for (int64_t d = 0; d < g->HDv; d++) D += (double)ld(gr + d * gy->nb[3]) * orow[d];
            for (int64_t d = 0; d < g->HD; d++) dq[d] = 0;
            for (int64_t j = 0; j < g->Tk && li != INFINITY; j++) {
                if (g->causal && j > i) break;
                const char *kr = krow(g, b, h, j), *vr = vrow(g, b, h, j);
                double dot = 0;
                for (int64_t d = 0; d < g->HD; d++) dot += (double)ld(qr + d * g->qnb[3]) * ld(kr + d * g->knb[3]);
                double sj = dot * g->scale;
                if (g->mask) sj += ld(mrow(g, b, h, i) + j * g->mnb[3]);
                double pj = exp(sj - li);
                if (pj == 0) continue;
                double dp = 0;
                for (int64_t d = 0; d < g->HDv; d++) {
                    double go = ld(gr + d * gy->nb[3]);
                    dp += go * ld(vr + d * g->vnb[3]);
                    dv[j * g->HDv + d] += pj * go;
                }
                double ds = pj * (dp - D) * g->scale;
                for (int64_t d = 0; d < g->HD; d++) {
                    dq[d] += ds * ld(kr + d * g->knb[3]);
                    dk[j * g->HD + d] += ds * ld(qr + d * g->qnb[3]);
                }
            }
            for (int64_t d = 0; d < g->HD; d++) dQ[(bh * g->Tq + i) * g->HD + d] = (float)dq[d];
        }
        for (int64_t x = 0; x < g->Tk * g->HD; x++) dK[bh * g->Tk * g->HD + x] = (float)dk[x];
        for (int64_t x = 0; x < g->Tk * g->HDv; x++) dV[bh * g->Tk * g->HDv + x] = (float)dv[x];
    }
}

/* ---------------------------------------------------------------- SIMD building blocks */

/* 2^x for 8 lanes with x <= 0 (or NaN); see the header for the polynomial and its error
 * bound. The forward's s - max(s) is never positive. */
TGT static inline __m256 exp2_nonpos_ps(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-127.0f), x); /* operand order keeps NaN */
    __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(x, n); /* exact, |f| <= 1/2 */
    /* 1 + f*q(f), q evaluated by Estrin's scheme (dependency depth 4 FMAs/muls instead of
     * Horner's 6: the softmax loop is latency-bound otherwise); the final FMA keeps a single
     * rounding on the leading 1 */
    __m256 f2 = _mm256_mul_ps(f, f), f4 = _mm256_mul_ps(f2, f2);
    __m256 q12 = _mm256_fmadd_ps(_mm256_set1_ps(2.40226462e-1f), f, _mm256_set1_ps(6.93147182e-1f));
    __m256 q34 = _mm256_fmadd_ps(_mm256_set1_ps(9.61848907e-3f), f, _mm256_set1_ps(5.55032864e-2f));
    __m256 q56 = _mm256_fmadd_ps(_mm256_set1_ps(1.53458284e-4f), f, _mm256_set1_ps(1.33999379e-3f));
    __m256 q = _mm256_fmadd_ps(q56, f4, _mm256_fmadd_ps(q34, f2, q12));
    __m256 y = _mm256_fmadd_ps(q, f, _mm256_set1_ps(1.0f));
    /* 2^n through the exponent field; n = -127 gives 0 */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* 2^x for any x (clamped to [-127, 127]): the backward's s - lse may round slightly above 0. */
TGT static inline __m256 exp2_ps(__m256 x) { return exp2_nonpos_ps(_mm256_min_ps(_mm256_set1_ps(127.0f), x)); }

TGT static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TGT static inline float hmax_ps(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Lanes c..c+7 that are < lim: all-ones mask. */
TGT static inline __m256i lanes_below(int64_t c, int64_t lim) {
    __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int64_t r = lim - c;
    int rr = r < 0 ? 0 : r > 8 ? 8 : (int)r;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(rr), iota);
}

/* s[r][0..16) = sum_{d<depth} a[r*lda + d] * panel[d*16 + 0..16), r < RB (RB = 6 rows):
 * 12 accumulators, per d two panel loads, six broadcasts, twelve FMAs. */
TGT static void score_6x16(const float *a, int64_t lda, int64_t depth, const float *panel, float *s, int64_t lds) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
    for (int64_t d = 0; d < depth; d++) {
        __m256 k0 = _mm256_loadu_ps(panel + d * PW), k1 = _mm256_loadu_ps(panel + d * PW + 8);
        __m256 b;
        b = _mm256_broadcast_ss(a0 + d); c00 = _mm256_fmadd_ps(b, k0, c00); c01 = _mm256_fmadd_ps(b, k1, c01);
        b = _mm256_broadcast_ss(a1 + d); c10 = _mm256_fmadd_ps(b, k0, c10); c11 = _mm256_fmadd_ps(b, k1, c11);
        b = _mm256_broadcast_ss(a2 + d); c20 = _mm256_fmadd_ps(b, k0, c20); c21 = _mm256_fmadd_ps(b, k1, c21);
        b = _mm256_broadcast_ss(a3 + d); c30 = _mm256_fmadd_ps(b, k0, c30); c31 = _mm256_fmadd_ps(b, k1, c31);
        b = _mm256_broadcast_ss(a4 + d); c40 = _mm256_fmadd_ps(b, k0, c40); c41 = _mm256_fmadd_ps(b, k1, c41);
        b = _mm256_broadcast_ss(a5 + d); c50 = _mm256_fmadd_ps(b, k0, c50); c51 = _mm256_fmadd_ps(b, k1, c51);
    }
    _mm256_storeu_ps(s + 0 * lds, c00); _mm256_storeu_ps(s + 0 * lds + 8, c01);
    _mm256_storeu_ps(s + 1 * lds, c10); _mm256_storeu_ps(s + 1 * lds + 8, c11);
    _mm256_storeu_ps(s + 2 * lds, c20); _mm256_storeu_ps(s + 2 * lds + 8, c21);
    _mm256_storeu_ps(s + 3 * lds, c30); _mm256_storeu_ps(s + 3 * lds + 8, c31);
    _mm256_storeu_ps(s + 4 * lds, c40); _mm256_storeu_ps(s + 4 * lds + 8, c41);
    _mm256_storeu_ps(s + 5 * lds, c50); _mm256_storeu_ps(s + 5 * lds + 8, c51);
}

/* Six rows at once (the shape of the score kernel: 12 accumulators, 2 loads + 6 broadcasts per
 * 12 FMAs, so FMA-bound where two 256-bit loads issue per cycle), over w columns (multiple of 8)
 * in chunks of 16 (8 for an odd last vector):
 *   y[r*ldy + c] = s[r]*y[r*ldy + c] + sum_{j<n} a[r*ars + j*as] x[j*ldx + c],  r < 6;
 * s == NULL: y is only written (the sum alone; no need to clear it first). */
#define Y_INIT(r, off) (s ? _mm256_mul_ps(_mm256_set1_ps(s[r]), _mm256_loadu_ps(y0 + (r) * ldy + (off))) : _mm256_setzero_ps())
TGT static void axpy6(const float *a, int64_t ars, int64_t as, const float *x, int64_t ldx, int64_t n, int64_t w,
                      float *y, int64_t ldy, const float *s) {
    const float *a0 = a, *a1 = a + ars, *a2 = a + 2 * ars, *a3 = a + 3 * ars, *a4 = a + 4 * ars, *a5 = a + 5 * ars;
    int64_t c = 0;
    for (; c + 16 <= w; c += 16) {
        float *y0 = y + c;
        __m256 c00 = Y_INIT(0, 0), c01 = Y_INIT(0, 8), c10 = Y_INIT(1, 0), c11 = Y_INIT(1, 8);
        __m256 c20 = Y_INIT(2, 0), c21 = Y_INIT(2, 8), c30 = Y_INIT(3, 0), c31 = Y_INIT(3, 8);
        __m256 c40 = Y_INIT(4, 0), c41 = Y_INIT(4, 8), c50 = Y_INIT(5, 0), c51 = Y_INIT(5, 8);
        const float *xc = x + c;
        for (int64_t j = 0; j < n; j++) {
            __m256 x0 = _mm256_loadu_ps(xc + j * ldx), x1 = _mm256_loadu_ps(xc + j * ldx + 8), b;
            int64_t o = j * as;
            b = _mm256_broadcast_ss(a0 + o); c00 = _mm256_fmadd_ps(b, x0, c00); c01 = _mm256_fmadd_ps(b, x1, c01);
            b = _mm256_broadcast_ss(a1 + o); c10 = _mm256_fmadd_ps(b, x0, c10); c11 = _mm256_fmadd_ps(b, x1, c11);
            b = _mm256_broadcast_ss(a2 + o); c20 = _mm256_fmadd_ps(b, x0, c20); c21 = _mm256_fmadd_ps(b, x1, c21);
            b = _mm256_broadcast_ss(a3 + o); c30 = _mm256_fmadd_ps(b, x0, c30); c31 = _mm256_fmadd_ps(b, x1, c31);
            b = _mm256_broadcast_ss(a4 + o); c40 = _mm256_fmadd_ps(b, x0, c40); c41 = _mm256_fmadd_ps(b, x1, c41);
            b = _mm256_broadcast_ss(a5 + o); c50 = _mm256_fmadd_ps(b, x0, c50); c51 = _mm256_fmadd_ps(b, x1, c51);
        }
        _mm256_storeu_ps(y0, c00); _mm256_storeu_ps(y0 + 8, c01);
        _mm256_storeu_ps(y0 + ldy, c10); _mm256_storeu_ps(y0 + ldy + 8, c11);
        _mm256_storeu_ps(y0 + 2 * ldy, c20); _mm256_storeu_ps(y0 + 2 * ldy + 8, c21);
        _mm256_storeu_ps(y0 + 3 * ldy, c30); _mm256_storeu_ps(y0 + 3 * ldy + 8, c31);
        _mm256_storeu_ps(y0 + 4 * ldy, c40); _mm256_storeu_ps(y0 + 4 * ldy + 8, c41);
        _mm256_storeu_ps(y0 + 5 * ldy, c50); _mm256_storeu_ps(y0 + 5 * ldy + 8, c51);
    }
    if (c < w) { /* one vector left */
        float *y0 = y + c;
        __m256 c0 = Y_INIT(0, 0), c1 = Y_INIT(1, 0), c2 = Y_INIT(2, 0), c3 = Y_INIT(3, 0), c4 = Y_INIT(4, 0);
        __m256 c5 = Y_INIT(5, 0);
        const float *xc = x + c;
        for (int64_t j = 0; j < n; j++) {
            __m256 x0 = _mm256_loadu_ps(xc + j * ldx);
            int64_t o = j * as;
            c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a0 + o), x0, c0);
            c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a1 + o), x0, c1);
            c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a2 + o), x0, c2);
            c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a3 + o), x0, c3);
            c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(a4 + o), x0, c4);
            c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(a5 + o), x0, c5);
        }
        _mm256_storeu_ps(y0, c0);
        _mm256_storeu_ps(y0 + ldy, c1);
        _mm256_storeu_ps(y0 + 2 * ldy, c2);
        _mm256_storeu_ps(y0 + 3 * ldy, c3);
        _mm256_storeu_ps(y0 + 4 * ldy, c4);
        _mm256_storeu_ps(y0 + 5 * ldy, c5);
    }
}
#undef Y_INIT

/* ---------------------------------------------------------------- packing */

/* n floats of a strided row (element stride es bytes) times s into dst, zero-padded to npad. */
static void pack_row(float *dst, const char *src, int64_t es, int64_t n, int64_t npad, float s) {
    if (es == (int64_t)sizeof(float)) {
        const float *f = (const float *)src;
        for (int64_t d = 0; d < n; d++) dst[d] = f[d] * s;
    } else {
        for (int64_t d = 0; d < n; d++) dst[d] = ld(src + d * es) * s;
    }
    for (int64_t d = n; d < npad; d++) dst[d] = 0;
}

/* Rows [0, Tk) of a strided [Tk, width] matrix times s into 16-row panels [npan][width][16]
 * (transposed; rows >= Tk are zero). */
static void pack_panels(float *dst, const char *base, int64_t rs, int64_t es, int64_t T, int64_t width, float s) {
    int64_t npan = up(T, PW) / PW;
    for (int64_t pn = 0; pn < npan; pn++) {
        float *pp = dst + pn * width * PW;
        for (int64_t jj = 0; jj < PW; jj++) {
            int64_t j = pn * PW + jj;
            if (j < T) {
                const char *row = base + j * rs;
                for (int64_t d = 0; d < width; d++) pp[d * PW + jj] = ld(row + d * es) * s;
            } else {
                for (int64_t d = 0; d < width; d++) pp[d * PW + jj] = 0;
            }
        }
    }
}

/* Adds mask(row, k0 + c) * LOG2E (if log2 units) to s[c] for c < lim; mask row pointer mr. */
TGT static void add_mask_row(float *s, const char *mr, int64_t es, int64_t k0, int64_t lim, float mul) {
    if (es == (int64_t)sizeof(float)) {
        const float *m = (const float *)mr + k0;
        __m256 vm = _mm256_set1_ps(mul);
        int64_t c = 0;
        for (; c + 8 <= lim; c += 8)
            _mm256_storeu_ps(s + c, _mm256_fmadd_ps(_mm256_loadu_ps(m + c), vm, _mm256_loadu_ps(s + c)));
        for (; c < lim; c++) s[c] += m[c] * mul;
    } else {
        for (int64_t c = 0; c < lim; c++) s[c] += ld(mr + (k0 + c) * es) * mul;
    }
}

/* ---------------------------------------------------------------- work distribution */

/* The fast kernels hand out work items through an atomic counter at the start of the work
 * buffer (dynamic scheduling: on a shared machine a descheduled thread does not hold the others
 * up at the node's final barrier). Every item's result is computed by one thread with the same
 * arithmetic whoever runs it, so results stay bitwise independent of the schedule. */
#define WS_HDR 64 /* bytes before the per-thread slices */

static void items_reset(const nu_compute_params *p) {
    if (p->ith == 0) atomic_store((atomic_llong *)p->wdata, 0);
    nu_compute_barrier(p);
}
static int64_t item_next(const nu_compute_params *p) {
    return (int64_t)atomic_fetch_add((atomic_llong *)p->wdata, 1);
}
static float *thread_slice(const nu_compute_params *p, size_t floats_per_thread) {
    return (float *)((char *)p->wdata + WS_HDR) + (size_t)p->ith * floats_per_thread;
}

/* ---------------------------------------------------------------- fast forward */

typedef struct {
    float *kp, *vr, *qb, *s, *o, *m, *l, *alpha;
} fwd_ws;

static size_t fwd_fast_floats(const geom *g, fwd_ws *w, float *base) {
    int64_t HDvp = up(g->HDv, 8), Tkp = up(g->Tk, PW);
    size_t off = 0;
#define TAKE(field, n)                                                                         \
    do {                                                                                       \
        if (w) w->field = base + off;                                                          \
        off += (size_t)up((n), 16);                                                            \
    } while (0)
    TAKE(kp, Tkp * g->HD);
    TAKE(vr, Tkp * HDvp);
    TAKE(qb, BQ * g->HD);
    TAKE(s, RB * BK);
    TAKE(o, BQ * HDvp);
    TAKE(m, BQ);
    TAKE(l, BQ);
    TAKE(alpha, RB);
#undef TAKE
    return off;
}

static void fwd_pack_kv(const geom *g, const fwd_ws *w, int64_t b, int64_t h) {
    int64_t HDvp = up(g->HDv, 8), Tkp = up(g->Tk, PW);
    /* scale*log2(e) folded into K: scores come out in log2 units, exp(x) = 2^(x log2 e) */
    pack_panels(w->kp, krow(g, b, h, 0), g->knb[2], g->knb[3], g->Tk, g->HD, g->scale * LOG2E_F);
    for (int64_t j = 0; j < Tkp; j++) {
        if (j < g->Tk) pack_row(w->vr + j * HDvp, vrow(g, b, h, j), g->vnb[3], g->HDv, HDvp, 1.0f);
        else memset(w->vr + j * HDvp, 0, sizeof(float) * (size_t)HDvp);
    }
}

/* Online softmax update of rows [r0, r0+RB) of the block for key tile [k0, k0+kn): s holds the
 * scores (log2 units); on return it holds P, w->alpha the rescale factors. */
TGT static void fwd_softmax_rows(const geom *g, const fwd_ws *w, int64_t b, int64_t h, int64_t q0, int64_t r0,
                                 int64_t k0, int64_t kn) {
    int64_t kn8 = up(kn, 8);
    float muse[RB];
    /* pass 1, all rows: mask, causal/tail -inf, new running max */
    for (int64_t r = 0; r < RB; r++) {
        int64_t i = q0 + r0 + r;
        float *sr = w->s + r * BK;
        int64_t lim = i < g->Tq ? row_limit(g, i, k0, kn) : kn;
        if (g->mask && i < g->Tq) add_mask_row(sr, mrow(g, b, h, i), g->mnb[3], k0, lim, LOG2E_F);
        __m256 ninf = _mm256_set1_ps(-INFINITY), m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
        int64_t full = lim & ~(int64_t)31, c = 0; /* 4 independent max chains */
        for (; c < full; c += 32) {
            m0 = _mm256_max_ps(m0, _mm256_loadu_ps(sr + c));
            m1 = _mm256_max_ps(m1, _mm256_loadu_ps(sr + c + 8));
            m2 = _mm256_max_ps(m2, _mm256_loadu_ps(sr + c + 16));
            m3 = _mm256_max_ps(m3, _mm256_loadu_ps(sr + c + 24));
        }
        for (; c < kn8; c += 8) {
            __m256 x = _mm256_loadu_ps(sr + c);
            if (c + 8 > lim) {
                x = _mm256_blendv_ps(ninf, x, _mm256_castsi256_ps(lanes_below(c, lim)));
                _mm256_storeu_ps(sr + c, x);
            }
            m0 = _mm256_max_ps(m0, x);
        }
        float mold = w->m[r0 + r], tmax = hmax_ps(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
        float mnew = tmax > mold ? tmax : mold;
        muse[r] = mnew == -INFINITY ? 0.0f : mnew; /* all masked so far: p = 0, no NaN */
        /* rescale of the previous tiles: exactly 1 if the max did not move, 0 on the first */
        w->alpha[r] = mold == mnew ? 1.0f : mold == -INFINITY ? 0.0f : exp2f(mold - muse[r]);
        w->m[r0 + r] = mnew;
    }
    /* pass 2, all rows (independent: the core overlaps them): p = 2^(s - m), row sums */
    for (int64_t r = 0; r < RB; r++) {
        float *sr = w->s + r * BK;
        __m256 vm = _mm256_set1_ps(muse[r]), s0 = _mm256_setzero_ps(), s1 = s0;
        int64_t c = 0;
        for (; c + 16 <= kn8; c += 16) {
            __m256 p0 = exp2_nonpos_ps(_mm256_sub_ps(_mm256_loadu_ps(sr + c), vm));
            __m256 p1 = exp2_nonpos_ps(_mm256_sub_ps(_mm256_loadu_ps(sr + c + 8), vm));
            _mm256_storeu_ps(sr + c, p0);
            _mm256_storeu_ps(sr + c + 8, p1);
            s0 = _mm256_add_ps(s0, p0);
            s1 = _mm256_add_ps(s1, p1);
        }
        if (c < kn8) {
            __m256 p0 = exp2_nonpos_ps(_mm256_sub_ps(_mm256_loadu_ps(sr + c), vm));
            _mm256_storeu_ps(sr + c, p0);
            s0 = _mm256_add_ps(s0, p0);
        }
        w->l[r0 + r] = w->l[r0 + r] * w->alpha[r] + hsum_ps(_mm256_add_ps(s0, s1));
    }
}

TGT static void fwd_block(const geom *g, const fwd_ws *w, int64_t b, int64_t h, int64_t q0, float *out,
                          float *lse) {
    int64_t HD = g->HD, HDvp = up(g->HDv, 8);
    int64_t nq = min64(BQ, g->Tq - q0), nqp = up(nq, RB);
    for (int64_t r = 0; r < nqp; r++) {
        w->m[r] = -INFINITY;
        w->l[r] = 0;
    }
    /* Q rows are read in place when HD is contiguous (scale lives in K); a partial last group
     * of 6 rows, or a strided HD, goes through a zero-padded copy */
    bool direct = g->qnb[3] == (int64_t)sizeof(float) && g->qnb[2] % (int64_t)sizeof(float) == 0;
    const float *qbase = (const float *)qrow(g, b, h, q0);
    int64_t ldq = direct ? g->qnb[2] / (int64_t)sizeof(float) : HD;
    if (!direct || nq < nqp) {
        int64_t from = direct ? nqp - RB : 0; /* rows copied: all, or the last group */
        for (int64_t r = from; r < nqp; r++) {
            if (r < nq) pack_row(w->qb + r * HD, qrow(g, b, h, q0 + r), g->qnb[3], HD, HD, 1.0f);
            else memset(w->qb + r * HD, 0, sizeof(float) * (size_t)HD);
        }
    }
    int64_t kend = g->causal ? min64(g->Tk, q0 + nq) : g->Tk;
    for (int64_t k0 = 0; k0 < kend; k0 += BK) {
        int64_t kn = min64(BK, kend - k0), npan = up(kn, PW) / PW;
        for (int64_t r0 = 0; r0 < nqp; r0 += RB) {
            const float *qa = direct && r0 + RB <= nq ? qbase + r0 * ldq : w->qb + r0 * HD;
            int64_t lda = direct && r0 + RB <= nq ? ldq : HD;
            for (int64_t pn = 0; pn < npan; pn++)
                score_6x16(qa, lda, HD, w->kp + (k0 / PW + pn) * HD * PW, w->s + pn * PW, BK);
            fwd_softmax_rows(g, w, b, h, q0, r0, k0, kn);
            /* the first tile writes O (alpha is 0 there, or 1 on rows still fully masked) */
            axpy6(w->s, BK, 1, w->vr + k0 * HDvp, HDvp, kn, HDvp, w->o + r0 * HDvp, HDvp, k0 ? w->alpha : NULL);
        }
    }
    int64_t bh = b * g->NH + h;
    for (int64_t r = 0; r < nq; r++) {
        int64_t i = q0 + r;
        float *o = out + (bh * g->Tq + i) * g->HDv;
        float l = w->l[r];
        if (l == 0) { /* every key masked: 0 (torch gives NaN) */
            for (int64_t d = 0; d < g->HDv; d++) o[d] = 0;
            lse[bh * g->Tq + i] = INFINITY;
            continue;
        }
        float inv = 1.0f / l;
        for (int64_t d = 0; d < g->HDv; d++) o[d] = w->o[r * HDvp + d] * inv;
        lse[bh * g->Tq + i] = (float)(((double)w->m[r] + (double)log2f(l)) * LN2_D);
    }
}

static void fwd_fast(const nu_compute_params *p, nu_tensor *dst, const geom *g) {
    fwd_ws w;
    size_t per = fwd_fast_floats(g, NULL, NULL);
    fwd_fast_floats(g, &w, thread_slice(p, per));
    float *out = dst->data;
    float *lse = (float *)((char *)dst->data + nu_nbytes(dst));
    int64_t nqb = (g->Tq + BQ - 1) / BQ, items = g->B * g->NH * nqb, packed = -1;
    items_reset(p);
    for (int64_t it = item_next(p); it < items; it = item_next(p)) {
        int64_t bh = it / nqb, qb = it % nqb;
        if (bh != packed) {
            fwd_pack_kv(g, &w, bh / g->NH, bh % g->NH);
            packed = bh;
        }
        fwd_block(g, &w, bh / g->NH, bh % g->NH, qb * BQ, out, lse);
    }
}

/* ---------------------------------------------------------------- fast backward */

typedef struct {
    float *qs, *dor, *lse2, *dd, *dqa, *kp, *kr, *vp, *P, *dS, *dka, *dva;
} bwd_ws;

static size_t bwd_fast_floats(const geom *g, bwd_ws *w, float *base) {
    int64_t HDp = up(g->HD, 8), HDvp = up(g->HDv, 8), Tqp = up(g->Tq, BQB), Tkp = up(g->Tk, BKB);
    size_t off = 0;
#define TAKE(field, n)                                                                         \
    do {                                                                                       \
        if (w) w->field = base + off;                                                          \
        off += (size_t)up((n), 16);                                                            \
    } while (0)
    TAKE(qs, Tqp * HDp);
    TAKE(dor, Tqp * HDvp);
    TAKE(lse2, Tqp);
    TAKE(dd, Tqp);
    TAKE(dqa, Tqp * HDp);
    TAKE(kp, Tkp * g->HD);
    TAKE(kr, Tkp * HDp);
    TAKE(vp, Tkp * g->HDv);
    TAKE(P, BQB * BKB);
    TAKE(dS, BQB * BKB);
    TAKE(dka, BKB * HDp);
    TAKE(dva, BKB * HDvp);
#undef TAKE
    return off;
}

/* Packs head (b, h): scale*Q, dO, lse*log2e, D = rowsum(dO * O), K panels and rows, V panels. */
static void bwd_pack(const geom *g, const bwd_ws *w, int64_t b, int64_t h, const nu_tensor *gy,
                     const nu_tensor *fwd) {
    int64_t HDp = up(g->HD, 8), HDvp = up(g->HDv, 8), Tqp = up(g->Tq, BQB), Tkp = up(g->Tk, BKB);
    int64_t bh = b * g->NH + h;
    const float *O = (const float *)fwd->data + bh * g->Tq * g->HDv;
    const float *lse = (const float *)((const char *)fwd->data + nu_nbytes(fwd)) + bh * g->Tq;
    for (int64_t i = 0; i < Tqp; i++) {
        if (i < g->Tq) {
            pack_row(w->qs + i * HDp, qrow(g, b, h, i), g->qnb[3], g->HD, HDp, g->scale);
            const char *gr = (const char *)gy->data + b * gy->nb[0] + h * gy->nb[1] + i * gy->nb[2];
            pack_row(w->dor + i * HDvp, gr, gy->nb[3], g->HDv, HDvp, 1.0f);
            float D = 0;
            for (int64_t d = 0; d < g->HDv; d++) D += w->dor[i * HDvp + d] * O[i * g->HDv + d];
            w->dd[i] = D;
            w->lse2[i] = lse[i] * LOG2E_F;
        } else {
            memset(w->qs + i * HDp, 0, sizeof(float) * (size_t)HDp);
            memset(w->dor + i * HDvp, 0, sizeof(float) * (size_t)HDvp);
            w->dd[i] = 0;
            w->lse2[i] = INFINITY;
        }
    }
    pack_panels(w->kp, krow(g, b, h, 0), g->knb[2], g->knb[3], g->Tk, g->HD, 1.0f);
    pack_panels(w->vp, vrow(g, b, h, 0), g->vnb[2], g->vnb[3], g->Tk, g->HDv, 1.0f);
    /* pack_panels fills up(Tk, PW) rows; the tiles read up to up(Tk, BKB): zero the rest */
    int64_t pk = up(g->Tk, PW);
    memset(w->kp + pk * g->HD, 0, sizeof(float) * (size_t)((Tkp - pk) * g->HD));
    memset(w->vp + pk * g->HDv, 0, sizeof(float) * (size_t)((Tkp - pk) * g->HDv));
    for (int64_t j = 0; j < Tkp; j++) {
        if (j < g->Tk) pack_row(w->kr + j * HDp, krow(g, b, h, j), g->knb[3], g->HD, HDp, 1.0f);
        else memset(w->kr + j * HDp, 0, sizeof(float) * (size_t)HDp);
    }
}

/* One tile: queries [q0, q0+BQB) x keys [k0, k0+BKB) of head (b, h). */
TGT static void bwd_tile(const geom *g, const bwd_ws *w, int64_t b, int64_t h, int64_t q0, int64_t k0, bool dkdv,
                         bool dq) {
    int64_t HD = g->HD, HDv = g->HDv, HDp = up(HD, 8), HDvp = up(HDv, 8);
    int64_t nq = min64(BQB, g->Tq - q0), nqp = up(nq, RB);
    int64_t kn = min64(BKB, g->Tk - k0), kn16 = up(kn, PW);
    /* S (natural units, scale folded into qs) into P, dP = dO V^T into dS */
    for (int64_t r0 = 0; r0 < nqp; r0 += RB) {
        for (int64_t pn = 0; pn < kn16 / PW; pn++) {
            score_6x16(w->qs + (q0 + r0) * HDp, HDp, HD, w->kp + (k0 + pn * PW) * HD, w->P + r0 * BKB + pn * PW, BKB);
            score_6x16(w->dor + (q0 + r0) * HDvp, HDvp, HDv, w->vp + (k0 + pn * PW) * HDv, w->dS + r0 * BKB + pn * PW,
                       BKB);
        }
    }
    /* P = 2^((S + mask) log2e - lse log2e), dS = P (dP - D); exact zeros outside the valid
     * keys/rows up to kz keys (the 6-key groups below read up to up(kn, 6); the buffers hold stale
     * values there, hence masks rather than multiplications by 0) */
    int64_t kz = up(kn16 > up(kn, RB) ? kn16 : up(kn, RB), 8);
    static const float ones[RB] = {1, 1, 1, 1, 1, 1};
    __m256 vl2e = _mm256_set1_ps(LOG2E_F);
    for (int64_t r = 0; r < nqp; r++) {
        int64_t i = q0 + r;
        float *pr = w->P + r * BKB, *dr = w->dS + r * BKB;
        int64_t lim = r < nq ? row_limit(g, i, k0, kn) : 0;
        if (g->mask && lim > 0) add_mask_row(pr, mrow(g, b, h, i), g->mnb[3], k0, lim, 1.0f);
        __m256 nl = _mm256_set1_ps(-w->lse2[i]), D = _mm256_set1_ps(w->dd[i]);
        for (int64_t c = 0; c < kz; c += 8) {
            __m256 pv = exp2_ps(_mm256_fmadd_ps(_mm256_loadu_ps(pr + c), vl2e, nl));
            __m256 dv = _mm256_mul_ps(pv, _mm256_sub_ps(_mm256_loadu_ps(dr + c), D));
            if (c + 8 > lim) {
                __m256 keep = _mm256_castsi256_ps(lanes_below(c, lim));
                pv = _mm256_and_ps(pv, keep);
                dv = _mm256_and_ps(dv, keep);
            }
            _mm256_storeu_ps(pr + c, pv);
            _mm256_storeu_ps(dr + c, dv);
        }
    }
    if (dkdv) {
        /* dV[c] += sum_r P[r][c] dO[r];  dK[c] += sum_r dS[r][c] (scale Q[r]) — 6 keys at a time
         * (P read transposed: key stride 1, query stride BKB) */
        for (int64_t c = 0; c < kn; c += RB) {
            axpy6(w->P + c, 1, BKB, w->dor + q0 * HDvp, HDvp, nq, HDvp, w->dva + c * HDvp, HDvp, ones);
            axpy6(w->dS + c, 1, BKB, w->qs + q0 * HDp, HDp, nq, HDp, w->dka + c * HDp, HDp, ones);
        }
    }
    if (dq) {
        /* dQ[r] += sum_c dS[r][c] K[c] — 6 queries at a time (times scale when written out) */
        for (int64_t r = 0; r < nqp; r += RB)
            axpy6(w->dS + r * BKB, BKB, 1, w->kr + k0 * HDp, HDp, kn, HDp, w->dqa + (q0 + r) * HDp, HDp, ones);
    }
}

/* Whether tile (q0, k0) has any visible key (causal: some query i >= k0). */
static bool tile_live(const geom *g, int64_t q0, int64_t k0) {
    return !g->causal || k0 <= min64(g->Tq, q0 + BQB) - 1;
}

static void bwd_store_dkdv(const geom *g, const bwd_ws *w, float *dK, float *dV, int64_t bh, int64_t k0) {
    int64_t HDp = up(g->HD, 8), HDvp = up(g->HDv, 8), kn = min64(BKB, g->Tk - k0);
    for (int64_t c = 0; c < kn; c++) {
        memcpy(dK + (bh * g->Tk + k0 + c) * g->HD, w->dka + c * HDp, sizeof(float) * (size_t)g->HD);
        memcpy(dV + (bh * g->Tk + k0 + c) * g->HDv, w->dva + c * HDvp, sizeof(float) * (size_t)g->HDv);
    }
}

static void bwd_store_dq(const geom *g, const bwd_ws *w, float *dQ, int64_t bh, int64_t q0, int64_t q1) {
    int64_t HDp = up(g->HD, 8);
    for (int64_t i = q0; i < q1; i++)
        for (int64_t d = 0; d < g->HD; d++) dQ[(bh * g->Tq + i) * g->HD + d] = w->dqa[i * HDp + d] * g->scale;
}

static void bwd_fast(const nu_compute_params *p, nu_tensor *dst, const geom *g, const nu_tensor *gy,
                     const nu_tensor *fwd) {
    bwd_ws w;
    size_t per = bwd_fast_floats(g, NULL, NULL);
    bwd_fast_floats(g, &w, thread_slice(p, per));
    int64_t HDp = up(g->HD, 8), HDvp = up(g->HDv, 8);
    float *dQ = dst->data;
    float *dK = dQ + g->B * g->NH * g->Tq * g->HD;
    float *dV = dK + g->B * g->NH * g->Tk * g->HD;
    int64_t nbh = g->B * g->NH, nqb = (g->Tq + BQB - 1) / BQB, nkb = (g->Tk + BKB - 1) / BKB;
    if (nbh >= p->nth) {
        /* one pass per head: kb outer (dK, dV of the key block), qb inner (dQ of the head) */
        items_reset(p);
        for (int64_t bh = item_next(p); bh < nbh; bh = item_next(p)) {
            bwd_pack(g, &w, bh / g->NH, bh % g->NH, gy, fwd);
            memset(w.dqa, 0, sizeof(float) * (size_t)(nqb * BQB * HDp));
            for (int64_t kb = 0; kb < nkb; kb++) {
                memset(w.dka, 0, sizeof(float) * (size_t)(BKB * HDp));
                memset(w.dva, 0, sizeof(float) * (size_t)(BKB * HDvp));
                for (int64_t qb = 0; qb < nqb; qb++)
                    if (tile_live(g, qb * BQB, kb * BKB))
                        bwd_tile(g, &w, bh / g->NH, bh % g->NH, qb * BQB, kb * BKB, true, true);
                bwd_store_dkdv(g, &w, dK, dV, bh, kb * BKB);
            }
            bwd_store_dq(g, &w, dQ, bh, 0, g->Tq);
        }
        return;
    }
    /* fewer heads than threads: phase 1 (head, key block) -> dK, dV; phase 2 (head, query
     * block) -> dQ. Same tiles, same accumulation order per output row as the one-pass path. */
    int64_t packed = -1;
    items_reset(p); /* items [0, nbh*nkb): phase 1; then phase 2 (outputs disjoint, no barrier) */
    int64_t it = item_next(p);
    for (; it < nbh * nkb; it = item_next(p)) {
        int64_t bh = it / nkb, kb = it % nkb;
        if (bh != packed) {
            bwd_pack(g, &w, bh / g->NH, bh % g->NH, gy, fwd);
            packed = bh;
        }
        memset(w.dka, 0, sizeof(float) * (size_t)(BKB * HDp));
        memset(w.dva, 0, sizeof(float) * (size_t)(BKB * HDvp));
        for (int64_t qb = 0; qb < nqb; qb++)
            if (tile_live(g, qb * BQB, kb * BKB)) bwd_tile(g, &w, bh / g->NH, bh % g->NH, qb * BQB, kb * BKB, true, false);
        bwd_store_dkdv(g, &w, dK, dV, bh, kb * BKB);
    }
    for (; it < nbh * nkb + nbh * nqb; it = item_next(p)) {
        int64_t bh = (it - nbh * nkb) / nqb, qb = (it - nbh * nkb) % nqb;
        if (bh != packed) {
            bwd_pack(g, &w, bh / g->NH, bh % g->NH, gy, fwd);
            packed = bh;
        }
        memset(w.dqa + qb * BQB * HDp, 0, sizeof(float) * (size_t)(BQB * HDp));
        for (int64_t kb = 0; kb < nkb; kb++)
            if (tile_live(g, qb * BQB, kb * BKB)) bwd_tile(g, &w, bh / g->NH, bh % g->NH, qb * BQB, kb * BKB, false, true);
        bwd_store_dq(g, &w, dQ, bh, qb * BQB, min64(g->Tq, (qb + 1) * BQB));
    }
}

/* ---------------------------------------------------------------- kernel entry points */

static void k_attention(const nu_compute_params *p, nu_tensor *dst) {
    geom g;
    geom_init(&g, dst->src[0], dst->src[1], dst->src[2], dst->src[3], dst);
    if (nu_cpu_use_fast(p)) fwd_fast(p, dst, &g);
    else fwd_ref(p, dst, &g);
}

static size_t ws_attention(const nu_tensor *dst, int nth) {
    geom g;
    geom_init(&g, dst->src[0], dst->src[1], dst->src[2], dst->src[3], dst);
    size_t ref = ref_fwd_doubles(&g) * sizeof(double), fast = fwd_fast_floats(&g, NULL, NULL) * sizeof(float);
    return WS_HDR + (ref > fast ? ref : fast) * (size_t)nth;
}

static void k_attention_backward(const nu_compute_params *p, nu_tensor *dst) {
    geom g;
    geom_init(&g, dst->src[1], dst->src[2], dst->src[3], dst->src[5], dst);
    if (nu_cpu_use_fast(p)) bwd_fast(p, dst, &g, dst->src[0], dst->src[4]);
    else bwd_ref(p, dst, &g, dst->src[0], dst->src[4]);
}

static size_t ws_attention_backward(const nu_tensor *dst, int nth) {
    geom g;
    geom_init(&g, dst->src[1], dst->src[2], dst->src[3], dst->src[5], dst);
    size_t ref = ref_bwd_doubles(&g) * sizeof(double), fast = bwd_fast_floats(&g, NULL, NULL) * sizeof(float);
    return WS_HDR + (ref > fast ? ref : fast) * (size_t)nth;
}

/* Test hook (declared in tests/test_op_attention.c): max relative error of the AVX2 2^x against
 * exp2() in double over n points evenly spaced in [lo, hi] (both variants where lo..hi <= 0);
 * -1 without AVX2/FMA. */
double nu_cpu_attention_exp2_check(float lo, float hi, int64_t n);
TGT static double exp2_check_avx(float lo, float hi, int64_t n) {
    double worst = 0;
    for (int64_t i = 0; i < n; i += 8) {
        float x[8], y[8], z[8];
        for (int u = 0; u < 8; u++) {
            int64_t k = i + u < n ? i + u : n - 1;
            x[u] = lo + (hi - lo) * (float)((double)k / (double)(n > 1 ? n - 1 : 1));
        }
        _mm256_storeu_ps(y, exp2_ps(_mm256_loadu_ps(x)));
        _mm256_storeu_ps(z, hi <= 0 ? exp2_nonpos_ps(_mm256_loadu_ps(x)) : _mm256_loadu_ps(y));
        for (int u = 0; u < 8; u++) {
            double want = exp2((double)x[u]);
            double e1 = fabs((double)y[u] - want) / want, e2 = fabs((double)z[u] - want) / want;
            if (e1 > worst) worst = e1;
            if (e2 > worst) worst = e2;
        }
    }
    return worst;
}
double nu_cpu_attention_exp2_check(float lo, float hi, int64_t n) {
    nu_cpu_features f = nu_cpu_detect();
    if (!f.avx2 || !f.fma) return -1;
    return exp2_check_avx(lo, hi, n);
}

void nu_cpu_register_attention(nu_cpu_kernel *tab) {
    tab[NU_OP_ATTENTION].forward = k_attention;
    tab[NU_OP_ATTENTION].work_size = ws_attention;
    tab[NU_OP_ATTENTION_BACKWARD].forward = k_attention_backward;
    tab[NU_OP_ATTENTION_BACKWARD].work_size = ws_attention_backward;
}
