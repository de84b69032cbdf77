/*
 * k_conv.c — CPU kernels of the conv op family: CONV2D, CONV_TRANSPOSE2D,
 * CONV2D_BACKWARD_WEIGHT, CONV_TRANSPOSE2D_BACKWARD_WEIGHT.
 *
 * All four are written in "conv view" (k_conv.h): A [N,C,H,W] -> B [N,K,Ho,Wo] by W [K,C/G,KH,KW].
 * conv2d is fwd (A -> B), conv_transpose2d is its adjoint (B -> A) with the same weight, and the
 * weight gradients correlate A with B. Algorithms:
 *   - reference twins: direct loops with double accumulators (use_ref / no AVX2);
 *   - fwd: 1x1 stride-1 convs are one GEMM per image block (no copy); other shapes use tiled
 *     im2col + GEMM (the column tile of a block of output pixels lives in the work buffer);
 *     3x3 stride-1 convs with enough channels use Winograd F(4x4,3x3) or F(2x2,3x3)
 *     (k_conv_winograd.c) where measurements showed it faster (see choose_wino);
 *   - adj: GEMM (W^T x B tile) + col2im scatter into A, split over A's channels so that no two
 *     threads write the same element; 3x3 stride-1 cases run as a Winograd conv2d with the
 *     flipped, transposed filter;
 *   - weight gradient: dW[k, (c,i,j)] = sum over pixels of B[k,q] * im2col(A)[(c,i,j), q] as GEMMs
 *     accumulated over pixel tiles, split over blocks of (c, k).
 * Work is split into items whose sizes depend only on the shape, never on the thread count, so
 * 1 and N threads make the same BLAS calls and give bitwise-equal results. GEMMs call
 * single-threaded OpenBLAS cblas_sgemm. Scratch memory comes from the graph's work buffer
 * (conv_work_size); kernels never allocate.
 * Tested by tests/test_op_conv.c (fast vs reference, PyTorch fixtures, gradcheck).
 */
#include <cblas.h>
#include <immintrin.h>
#include <stdatomic.h>

#include "cpu/gemm.h"
#include "cpu/k_conv.h"

#define NU_AVX2 __attribute__((target("avx2,fma")))

enum { P_STRIDE = 0, P_PAD = 2, P_DIL = 4, P_GROUPS = 6, P_OUTPAD = 7, P_KSIZE = 9, P_RELU = 11 }; /* op_conv.c and k_conv.c */

/* Column-tile budget in floats per thread (4 MiB). Measured (one thread, 3x3 convs): 128K
 * floats gives 72-86 GFLOP/s on 320..640 channels, 1M floats 82-90: wider pixel tiles make
 * the GEMM's N larger, and OpenBLAS re-packs the weight (A) once per call. */
#define COL_BUDGET (1024 * 1024)
/* Target number of work items, so that the pool has enough independent pieces. */
#define MIN_ITEMS 16

/* ---------------------------------------------------------------- geometry */

static nu_conv_view4 view_of(const nu_tensor *t) {
    NU_ASSERT(t->type == NU_TYPE_F32 && t->ndim == 4);
    nu_conv_view4 v = {(const float *)t->data, {t->nb[0] / 4, t->nb[1] / 4, t->nb[2] / 4, t->nb[3] / 4}};
    return v;
}

/* Roles of a node's tensors in conv view. */
typedef struct conv_roles {
    const nu_tensor *a, *b, *w; /* A, B and the weight (or, for weight gradients, dst)   */
    const nu_tensor *bias;      /* bias of the op's output, or NULL                      */
} conv_roles;

static void node_geom(const nu_tensor *dst, nu_conv_geom *g, conv_roles *r) {
    memset(r, 0, sizeof *r);
    switch (dst->op) {
    case NU_OP_CONV2D: r->a = dst->src[0]; r->b = dst; r->w = dst->src[1]; r->bias = dst->src[2]; break;
    case NU_OP_CONV_TRANSPOSE2D: r->a = dst; r->b = dst->src[0]; r->w = dst->src[1]; r->bias = dst->src[2]; break;
    case NU_OP_CONV2D_BACKWARD_WEIGHT: r->a = dst->src[0]; r->b = dst->src[1]; r->w = dst; break;
    case NU_OP_CONV_TRANSPOSE2D_BACKWARD_WEIGHT: r->a = dst->src[1]; r->b = dst->src[0]; r->w = dst; break;
    default: NU_ASSERT(!"not a conv op");
    }
    g->N = r->a->ne[0];
    g->C = r->a->ne[1];
    g->H = r->a->ne[2];
    g->W = r->a->ne[3];
    g->K = r->b->ne[1];
    g->Ho = r->b->ne[2];
    g->Wo = r->b->ne[3];
    if (r->w->ndim == 2) { /* matrix-form conv2d weight [K, Cg*KH*KW] (op_conv.c) */
        g->KH = dst->params[P_KSIZE];
        g->KW = dst->params[P_KSIZE + 1];
    } else {
        g->KH = r->w->ne[2];
        g->KW = r->w->ne[3];
    }
    g->sh = dst->params[P_STRIDE];
    g->sw = dst->params[P_STRIDE + 1];
    g->ph = dst->params[P_PAD];
    g->pw = dst->params[P_PAD + 1];
    g->dh = dst->params[P_DIL];
    g->dw = dst->params[P_DIL + 1];
    g->G = dst->params[P_GROUPS];
    g->Cg = g->C / g->G;
    g->Kg = g->K / g->G;
    NU_ASSERT(r->b->ne[0] == g->N && r->w->ne[0] == g->K);
    NU_ASSERT(r->w->ndim == 2 ? r->w->ne[1] == g->Cg * g->KH * g->KW : r->w->ne[1] == g->Cg);
}

/* Output positions o in [0, n_out) with 0 <= o*stride + off < n_in are [*lo, *hi). */
static void valid_range(int64_t off, int64_t stride, int64_t n_in, int64_t n_out, int64_t *lo, int64_t *hi) {
    int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t h = n_in - 1 - off >= 0 ? (n_in - 1 - off) / stride + 1 : 0;
    if (h > n_out) h = n_out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* A 2-d pixel block of B is contiguous and can be a GEMM operand with leading dimension s[1]. */
static bool plane_contiguous(const nu_conv_view4 *v, int64_t h, int64_t w) {
    return (v->s[3] == 1 || w == 1) && (v->s[2] == w || h == 1) && v->s[1] >= h * w;
}

/* ---------------------------------------------------------------- weights */

static float load_float(nu_type t, const char *p) {
    switch (t) {
    case NU_TYPE_F32: return *(const float *)p;
    case NU_TYPE_F16: return nu_f16_to_f32(*(const uint16_t *)p);
    case NU_TYPE_BF16: return nu_bf16_to_f32(*(const uint16_t *)p);
    default: NU_ASSERT(!"unsupported conv weight type"); return 0.f;
    }
}

/* How a conv reads its weight (conv_plan.wmode):
 *   W_VIEW: f32 and contiguous (the GEMM paths take it as a [K, Cg*KH*KW] matrix): in place;
 *   W_ROWS: conv2d with another type (f16, bf16, or q8_0/q4_0/... in matrix form) and packed
 *           rows: read row by row, never copied whole. The GEMM path hands the rows to
 *           nu_gemm_part as its typed operand (dequantized tile by tile); Winograd and the
 *           reference twin dequantize one filter row at a time into per-thread scratch;
 *   W_COPY: anything else (strided views; conv_transpose2d with a non-f32 weight): converted once
 *           per run into the head of the work buffer (this one layer's weight, not the model). */
enum { W_VIEW, W_ROWS, W_COPY };

/* Each output channel's filter (Cg*KH*KW values, OIHW order) is contiguous, rows nb[0] apart. */
static bool rows_packed(const nu_tensor *w) {
    size_t es = nu_type_info(w->type)->size;
    if (w->ndim == 2) return w->nb[1] == (int64_t)es;
    return w->nb[3] == (int64_t)es && w->nb[2] == w->ne[3] * w->nb[3] && w->nb[1] == w->ne[2] * w->nb[2];
}

static int weight_mode(const nu_tensor *w, bool conv2d) {
    if (w->type == NU_TYPE_F32) return nu_is_contiguous(w) ? W_VIEW : W_COPY;
    return conv2d && rows_packed(w) ? W_ROWS : W_COPY;
}


static void weight_copy(const nu_compute_params *p, const nu_tensor *w, float *dst) {
    int64_t lo, hi, per = nu_nelements(w) / w->ne[0];
    nu_split(w->ne[0], p->ith, p->nth, &lo, &hi);
    if (rows_packed(w)) {
        /* one output channel's [C, KH, KW] is one contiguous row: vectorised conversion (F16C for
         * f16; measured 1.6 s of CPU per SD 1.5 UNet step with the scalar loop below) */
        for (int64_t k = lo; k < hi; k++)
            nu_dequant_row(w->type, (const char *)w->data + k * w->nb[0], dst + k * per, per, nu_cpu_use_fast(p));
        return;
    }
    NU_ASSERT(w->ndim == 4); /* a matrix-form weight always has packed rows (op_conv.c) */
    for (int64_t k = lo; k < hi; k++) {
        float *o = dst + k * per;
        for (int64_t c = 0; c < w->ne[1]; c++)
            for (int64_t i = 0; i < w->ne[2]; i++)
                for (int64_t j = 0; j < w->ne[3]; j++)
                    *o++ = load_float(w->type, (const char *)w->data + k * w->nb[0] + c * w->nb[1] + i * w->nb[2] +
                                                   j * w->nb[3]);
    }
}

/* ---------------------------------------------------------------- reference twins */

/* B = conv(A, W) + bias. Items: (n, k). wt: a W_ROWS weight (then w is unused and `row`
 * holds one dequantized filter), or NULL. */
static void fwd_ref(const nu_compute_params *p, const nu_conv_geom *g, nu_conv_view4 a, nu_conv_view4 w,
                    const nu_tensor *wt, float *row, const float *bias, bool relu, float *b) {
    int64_t lo, hi;
    nu_split(g->N * g->K, p->ith, p->nth, &lo, &hi);
    for (int64_t it = lo; it < hi; it++) {
        int64_t n = it / g->K, k = it % g->K, gi = k / g->Kg;
        if (wt) { /* this filter, dequantized (scalar), as a view with its own origin */
            nu_dequant_row(wt->type, (const char *)wt->data + k * wt->nb[0], row, g->Cg * g->KH * g->KW, false);
            w.p = row;
            w.s[0] = 0;
            w.s[1] = g->KH * g->KW;
            w.s[2] = g->KW;
            w.s[3] = 1;
        }
        float *out = b + it * g->Ho * g->Wo;
        for (int64_t oy = 0; oy < g->Ho; oy++)
            for (int64_t ox = 0; ox < g->Wo; ox++) {
                double acc = bias ? bias[k] : 0.0;
                for (int64_t c = 0; c < g->Cg; c++)
                    for (int64_t i = 0; i < g->KH; i++) {
                        int64_t iy = oy * g->sh - g->ph + i * g->dh;
                        if (iy < 0 || iy >= g->H) continue;
                        for (int64_t j = 0; j < g->KW; j++) {
                            int64_t ix = ox * g->sw - g->pw + j * g->dw;
                            if (ix < 0 || ix >= g->W) continue;
                            acc += (double)a.p[n * a.s[0] + (gi * g->Cg + c) * a.s[1] + iy * a.s[2] + ix * a.s[3]] *
                                   w.p[k * w.s[0] + c * w.s[1] + i * w.s[2] + j * w.s[3]];
                        }
                    }
                float y = (float)acc;
                out[oy * g->Wo + ox] = relu && y < 0.f ? 0.f : y;
            }
    }
}

/* A = conv_transpose(B, W) + bias, as a gather over the B positions that reach each A element.
 * Items: (n, c). */
static void adj_ref(const nu_compute_params *p, const nu_conv_geom *g, nu_conv_view4 bv, nu_conv_view4 w,
                    const float *bias, float *a) {
    int64_t lo, hi;
    nu_split(g->N * g->C, p->ith, p->nth, &lo, &hi);
    for (int64_t it = lo; it < hi; it++) {
        int64_t n = it / g->C, c = it % g->C, gi = c / g->Cg, cl = c % g->Cg;
        float *out = a + it * g->H * g->W;
        for (int64_t iy = 0; iy < g->H; iy++)
            for (int64_t ix = 0; ix < g->W; ix++) {
                double acc = bias ? bias[c] : 0.0;
                for (int64_t i = 0; i < g->KH; i++) {
                    int64_t ty = iy + g->ph - i * g->dh;
                    if (ty < 0 || ty % g->sh) continue;
                    int64_t oy = ty / g->sh;
                    if (oy >= g->Ho) continue;
                    for (int64_t j = 0; j < g->KW; j++) {
                        int64_t tx = ix + g->pw - j * g->dw;
                        if (tx < 0 || tx % g->sw) continue;
                        int64_t ox = tx / g->sw;
                        if (ox >= g->Wo) continue;
                        for (int64_t k = gi * g->Kg; k < (gi + 1) * g->Kg; k++)
                            acc += (double)bv.p[n * bv.s[0] + k * bv.s[1] + oy * bv.s[2] + ox * bv.s[3]] *
                                   w.p[k * w.s[0] + cl * w.s[1] + i * w.s[2] + j * w.s[3]];
                    }
                }
                out[iy * g->W + ix] = (float)acc;
            }
    }
}

/* dW[k, c, i, j] = sum_{n, oy, ox} B[n, k, oy, ox] * A[n, g*Cg + c, oy*sh - ph + i*dh, ...].
 * Items: (k, c). */
static void wgrad_ref(const nu_compute_params *p, const nu_conv_geom *g, nu_conv_view4 a, nu_conv_view4 bv,
                      float *dw) {
    int64_t lo, hi;
    nu_split(g->K * g->Cg, p->ith, p->nth, &lo, &hi);
    for (int64_t it = lo; it < hi; it++) {
        int64_t k = it / g->Cg, c = it % g->Cg, gi = k / g->Kg;
        for (int64_t i = 0; i < g->KH; i++)
            for (int64_t j = 0; j < g->KW; j++) {
                double acc = 0.0;
                for (int64_t n = 0; n < g->N; n++)
                    for (int64_t oy = 0; oy < g->Ho; oy++) {
                        int64_t iy = oy * g->sh - g->ph + i * g->dh;
                        if (iy < 0 || iy >= g->H) continue;
                        for (int64_t ox = 0; ox < g->Wo; ox++) {
                            int64_t ix = ox * g->sw - g->pw + j * g->dw;
                            if (ix < 0 || ix >= g->W) continue;
                            acc += (double)bv.p[n * bv.s[0] + k * bv.s[1] + oy * bv.s[2] + ox * bv.s[3]] *
                                   a.p[n * a.s[0] + (gi * g->Cg + c) * a.s[1] + iy * a.s[2] + ix * a.s[3]];
                        }
                    }
                dw[(it * g->KH + i) * g->KW + j] = (float)acc;
            }
    }
}

/* ---------------------------------------------------------------- im2col / col2im */

/* col[(c*KH + i)*KW + j][q - q0] = A[n, c0 + c, iy, ix] for output pixels q in [q0, q0 + qn)
 * (q = oy*Wo + ox; iy = oy*sh - ph + i*dh, ix likewise), zero outside A. */
static void im2col(const nu_conv_geom *g, nu_conv_view4 a, int64_t n, int64_t c0, int64_t nc, int64_t q0,
                   int64_t qn, float *col) {
    for (int64_t c = 0; c < nc; c++) {
        const float *plane = a.p + n * a.s[0] + (c0 + c) * a.s[1];
        for (int64_t i = 0; i < g->KH; i++)
            for (int64_t j = 0; j < g->KW; j++) {
                float *dst = col + ((c * g->KH + i) * g->KW + j) * qn;
                int64_t xoff = j * g->dw - g->pw, xlo, xhi;
                valid_range(xoff, g->sw, g->W, g->Wo, &xlo, &xhi);
                int64_t q = q0, qe = q0 + qn;
                while (q < qe) {
                    int64_t oy = q / g->Wo, ox0 = q % g->Wo;
                    int64_t ox1 = ox0 + (qe - q) < g->Wo ? ox0 + (qe - q) : g->Wo;
                    float *d = dst + (q - q0);
                    int64_t iy = oy * g->sh - g->ph + i * g->dh;
                    if (iy < 0 || iy >= g->H) {
                        memset(d, 0, sizeof(float) * (size_t)(ox1 - ox0));
                    } else {
                        const float *row = plane + iy * a.s[2];
                        int64_t lo = xlo > ox0 ? xlo : ox0, hi = xhi < ox1 ? xhi : ox1;
                        if (lo > hi) lo = hi = ox1;
                        for (int64_t ox = ox0; ox < lo; ox++) d[ox - ox0] = 0.f;
                        if (g->sw == 1 && a.s[3] == 1) {
                            if (hi > lo) memcpy(d + (lo - ox0), row + lo + xoff, sizeof(float) * (size_t)(hi - lo));
                        } else {
                            for (int64_t ox = lo; ox < hi; ox++) d[ox - ox0] = row[(ox * g->sw + xoff) * a.s[3]];
                        }
                        for (int64_t ox = hi; ox < ox1; ox++) d[ox - ox0] = 0.f;
                    }
                    q += ox1 - ox0;
                }
            }
    }
}

/* The adjoint of im2col: A[n, c0 + c, iy, ix] += col[(c*KH + i)*KW + j][q - q0] (A contiguous). */
static void col2im(const nu_conv_geom *g, float *a, int64_t n, int64_t c0, int64_t nc, int64_t q0, int64_t qn,
                   const float *col) {
    for (int64_t c = 0; c < nc; c++) {
        float *plane = a + (n * g->C + c0 + c) * g->H * g->W;
        for (int64_t i = 0; i < g->KH; i++)
            for (int64_t j = 0; j < g->KW; j++) {
                const float *src = col + ((c * g->KH + i) * g->KW + j) * qn;
                int64_t xoff = j * g->dw - g->pw, xlo, xhi;
                valid_range(xoff, g->sw, g->W, g->Wo, &xlo, &xhi);
                int64_t q = q0, qe = q0 + qn;
                while (q < qe) {
                    int64_t oy = q / g->Wo, ox0 = q % g->Wo;
                    int64_t ox1 = ox0 + (qe - q) < g->Wo ? ox0 + (qe - q) : g->Wo;
                    int64_t iy = oy * g->sh - g->ph + i * g->dh;
                    if (iy >= 0 && iy < g->H) {
                        float *row = plane + iy * g->W;
                        const float *s = src + (q - q0) - ox0;
                        int64_t lo = xlo > ox0 ? xlo : ox0, hi = xhi < ox1 ? xhi : ox1;
                        if (g->sw == 1) {
                            float *r = row + xoff;
                            for (int64_t ox = lo; ox < hi; ox++) r[ox] += s[ox];
                        } else {
                            for (int64_t ox = lo; ox < hi; ox++) row[ox * g->sw + xoff] += s[ox];
                        }
                    }
                    q += ox1 - ox0;
                }
            }
    }
}

/* Packs B[n, k0 .. k0+nk, pixels q0 .. q0+qn) into dst (nk x qn). */
static void pack_b(const nu_conv_geom *g, nu_conv_view4 b, int64_t n, int64_t k0, int64_t nk, int64_t q0,
                   int64_t qn, float *dst) {
    for (int64_t k = 0; k < nk; k++)
        for (int64_t q = q0; q < q0 + qn; q++)
            *dst++ = b.p[n * b.s[0] + (k0 + k) * b.s[1] + (q / g->Wo) * b.s[2] + (q % g->Wo) * b.s[3]];
}

/* ---------------------------------------------------------------- plans */

enum { ALG_GEMM, ALG_WINO, ALG_WINOG };

typedef struct conv_plan {
    int alg;
    bool direct;        /* 1x1, stride 1, no padding: A itself is the GEMM operand          */
    bool pack;          /* B is not plane-contiguous: pack its tiles                        */
    int64_t pb, npb;    /* pixel block and count                                            */
    int64_t cb, ncb;    /* channel block (of A's group channels) and count                  */
    int64_t mb, nmb;    /* block of B's group channels and count                            */
    nu_conv_geom wg;    /* Winograd geometry (for adj: the equivalent conv2d)               */
    nu_wino_plan wino;
    nu_winog_plan winog;
    int wmode;          /* W_VIEW, W_ROWS or W_COPY                                         */
    size_t wcopy;       /* floats for a converted weight (W_COPY), at the work buffer's head */
    size_t per_thread;  /* floats of private scratch per thread                             */
    size_t wrow;        /* W_ROWS: floats per thread for filter rows or typed-GEMM tiles    */
    size_t gwork;       /* W_ROWS GEMM path: of wrow, floats of nu_gemm_part scratch        */
} conv_plan;

static int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* A pixel block holding about `budget` floats of rows x pixels, a multiple of 16 when split. */
static int64_t pixel_block(int64_t rows, int64_t npix, int64_t budget) {
    int64_t pb = budget / imax(rows, 1);
    pb = pb >= 64 ? pb / 16 * 16 : 64;
    return imin(pb, npix);
}

/* Splits n into blocks (multiples of `align` when split) so that there are about `want` of
 * them, none smaller than `minb`. */
static int64_t split_block(int64_t n, int64_t want, int64_t minb, int64_t align) {
    if (want <= 1 || n <= minb) return n;
    int64_t b = cdiv(n, want);
    b = cdiv(b, align) * align;
    if (b < minb) b = minb;
    return imin(b, n);
}

static atomic_int forced_algo = NU_CONV_ALGO_AUTO;
void nu_conv_set_algo(int algo) { atomic_store(&forced_algo, algo); }

/* Winograd choice for a conv2d-shaped problem (3x3, stride 1, dilation 1, one group):
 * returns m (4, 2) or 0 for im2col + GEMM. Measured on the 2-core AVX-512 dev machine (one
 * thread, CPU time, GFLOP/s of the direct-conv flop count; OpenBLAS sgemm peaks near 100):
 *   C=K   HxW    N  tiles(4/2)  gemm  F(2,3)  F(4,3)
 *   320   64x64  1  256/1024      87     -     257
 *   640   32x32  1   64/256       85    77     217
 *   320   32x32  1   64/256       90   153     207
 *   640   16x16  1   16/64        86   110      91
 *   1280  16x16  1   16/64        73   119      97
 *   1280  16x16  4   64/256       77   156     217
 *   1280  8x8    1    4/16        74    49      29
 *   1280  8x8    4   16/64        74   114      94
 *   32    16x16  1   16/64        57    78      70
 * F(4,3) wins from ~64 tiles (its 36 GEMMs get N >= 64 and the weight transform, 36 floats
 * per filter, is amortised); F(2,3) from ~64 tiles of 2x2; below that im2col + GEMM. */
static int choose_wino(const nu_conv_geom *g) {
    if (g->KH != 3 || g->KW != 3 || g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1 || g->G != 1) return 0;
    switch (atomic_load(&forced_algo)) {
    case NU_CONV_ALGO_GEMM:
    case NU_CONV_ALGO_WINOG: return 0;
    case NU_CONV_ALGO_WINO2: return 2;
    case NU_CONV_ALGO_WINO4: return 4;
    default: break;
    }
    if (g->C < 16 || g->K < 16) return 0;
    if (g->N * cdiv(g->Ho, 4) * cdiv(g->Wo, 4) >= 64) return 4;
    if (g->N * cdiv(g->Ho, 2) * cdiv(g->Wo, 2) >= 64) return 2;
    return 0;
}

/* Whether to use k_conv_wino_gen.c for a conv2d-shaped problem it can take. It wins on every
 * non-3x3 kernel it takes once there are enough channels and pixels, and on 3x3 kernels with
 * few channels, whose tile blocks fit each thread's cache (k_conv_winograd.c's shared chunks
 * win from ~300 channels in + out). Measured on the dev machine, 2 threads, batch 8 unless
 * noted, ms (im2col + GEMM / k_conv_winograd.c F(4,3) / this):
 *   1x7 160->160 17x17   4.82 / - / 3.48     7x1 128->128 17x17   3.11 / - / 2.26
 *   5x5 48->64 35x35     9.12 / - / 3.68     1x3 384->384 8x8     2.51 / - / 2.29
 *   3x3 32->64 147x147  37.8 / 23.6 / 17.8   3x3 80->192 71x71   58.3 / 21.9 / 20.0
 *   3x3 64->96 35x35     6.34 / 2.80 / 2.30  3x3 96->96 35x35    9.00 / 3.76 / 3.87
 *   3x3 448->384 8x8     8.87 / 8.41 / 8.95  3x3 320->320 64x64 (N 1) 40.4 / 14.4 / 18.4 */
static bool choose_winog(const nu_conv_geom *g) {
    switch (atomic_load(&forced_algo)) {
    case NU_CONV_ALGO_WINOG: return true;
    case NU_CONV_ALGO_AUTO: break;
    default: return false;
    }
    if (g->C < 16 || g->K < 16 || g->N * g->Ho * g->Wo < 256) return false;
    return !(g->KH == 3 && g->KW == 3) || g->C + g->K <= 288;
}

static void plan_common(conv_plan *pl, const conv_roles *r, const nu_conv_geom *g, bool conv2d) {
    memset(pl, 0, sizeof *pl);
    size_t ckk = (size_t)(g->Cg * g->KH * g->KW);
    pl->wmode = weight_mode(r->w, conv2d);
    pl->wcopy = pl->wmode == W_COPY ? nu_conv_align16((size_t)g->K * ckk) : 0;
    pl->wrow = pl->wmode == W_ROWS ? nu_conv_align16(ckk) : 0; /* one filter (Winograd, reference) */
}

/* The typed GEMM of a W_ROWS item (fwd_gemm): C'[qn, mn] = col[CKK, qn]^T W[mn rows, CKK]^T. */
static nu_gemm_args typed_gemm_args(const nu_tensor *w, int64_t qn, int64_t mn, int64_t CKK) {
    nu_gemm_args ga = {0};
    ga.M = qn;
    ga.N = mn;
    ga.K = CKK;
    ga.ta = ga.tb = true;
    ga.btype = w->type;
    ga.ldb = (size_t)w->nb[0];
    ga.ldc = mn;
    ga.alpha = 1.f;
    return ga;
}

static void plan_fwd(const nu_conv_geom *g, const conv_roles *r, conv_plan *pl) {
    plan_common(pl, r, g, true);
    if (choose_winog(g) && nu_winog_plan_make(g, &pl->winog)) {
        pl->alg = ALG_WINOG;
        return;
    }
    int m = choose_wino(g);
    if (m && nu_wino_plan_make(g, m, &pl->wino)) {
        pl->alg = ALG_WINO;
        pl->wg = *g;
        return;
    }
    pl->alg = ALG_GEMM;
    nu_conv_view4 a = view_of(r->a);
    int64_t P = g->Ho * g->Wo, CKK = g->Cg * g->KH * g->KW;
    pl->direct = g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0 &&
                 g->H == g->Ho && g->W == g->Wo && plane_contiguous(&a, g->H, g->W);
    pl->pb = pl->direct ? imin(P, 1024) : pixel_block(CKK, P, COL_BUDGET);
    pl->npb = cdiv(P, pl->pb);
    int64_t items = g->N * g->G * pl->npb;
    pl->mb = split_block(g->Kg, cdiv(MIN_ITEMS, items), 32, 16);
    pl->nmb = cdiv(g->Kg, pl->mb);
    pl->per_thread = pl->direct ? 0 : nu_conv_align16((size_t)(CKK * pl->pb));
    if (pl->wmode == W_ROWS) {
        /* nu_gemm_part's scratch (the largest of a full and a small last pixel block) and the
         * transposed output tile C' [pb, mb] */
        nu_gemm_args big = typed_gemm_args(r->w, pl->pb, pl->mb, CKK), small = typed_gemm_args(r->w, 1, pl->mb, CKK);
        size_t gw = nu_gemm_thread_work(&big), gs = nu_gemm_thread_work(&small);
        pl->gwork = nu_conv_align16((gw > gs ? gw : gs) / sizeof(float));
        size_t need = pl->gwork + nu_conv_align16((size_t)(pl->pb * pl->mb));
        if (need > pl->wrow) pl->wrow = need;
    }
}

static void plan_adj(const nu_conv_geom *g, const conv_roles *r, int64_t outpad_h, int64_t outpad_w, conv_plan *pl) {
    plan_common(pl, r, g, false);
    /* stride-1 3x3: A = conv2d(B, flip(W)^T) with padding 2 - p (exact when no output padding) */
    if (outpad_h == 0 && outpad_w == 0 && g->ph <= 2 && g->pw <= 2) {
        nu_conv_geom e = *g;
        e.C = g->K; e.H = g->Ho; e.W = g->Wo;
        e.K = g->C; e.Ho = g->H; e.Wo = g->W;
        e.ph = 2 - g->ph; e.pw = 2 - g->pw;
        e.Cg = e.C / e.G; e.Kg = e.K / e.G;
        int m = choose_wino(&e);
        if (m && nu_wino_plan_make(&e, m, &pl->wino)) {
            pl->alg = ALG_WINO;
            pl->wg = e;
            return;
        }
    }
    pl->alg = ALG_GEMM;
    nu_conv_view4 b = view_of(r->b);
    int64_t P = g->Ho * g->Wo, KK = g->KH * g->KW;
    pl->direct = g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0 &&
                 g->H == g->Ho && g->W == g->Wo;
    pl->pack = !plane_contiguous(&b, g->Ho, g->Wo);
    pl->cb = split_block(g->Cg, cdiv(MIN_ITEMS, g->N * g->G), 8, 8);
    pl->ncb = cdiv(g->Cg, pl->cb);
    /* per-thread rows of pixel-tile scratch: the col tile and a packed tile of B */
    int64_t rows = (pl->direct ? 0 : pl->cb * KK) + (pl->pack ? g->Kg : 0);
    pl->pb = rows ? pixel_block(rows, P, COL_BUDGET) : imin(P, 1024);
    pl->npb = cdiv(P, pl->pb);
    pl->per_thread = nu_conv_align16((size_t)rows * (size_t)pl->pb);
}

static void plan_wgrad(const nu_conv_geom *g, const conv_roles *r, conv_plan *pl) {
    memset(pl, 0, sizeof *pl); /* dW is the (contiguous) output: no weight copy */
    pl->alg = ALG_GEMM;
    nu_conv_view4 a = view_of(r->a), b = view_of(r->b);
    int64_t P = g->Ho * g->Wo, KK = g->KH * g->KW;
    pl->direct = g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0 &&
                 g->H == g->Ho && g->W == g->Wo && plane_contiguous(&a, g->H, g->W);
    pl->pack = !plane_contiguous(&b, g->Ho, g->Wo);
    /* column blocks of at most ~64 channels x 3x3 keep the dW tile (Kg x cb*KK) cache-sized */
    int64_t want = imax(cdiv(MIN_ITEMS, g->G), cdiv(g->Cg * KK, 576));
    pl->cb = split_block(g->Cg, want, 1, 1);
    pl->ncb = cdiv(g->Cg, pl->cb);
    pl->mb = split_block(g->Kg, cdiv(MIN_ITEMS, g->G * pl->ncb), 32, 16);
    pl->nmb = cdiv(g->Kg, pl->mb);
    int64_t rows = (pl->direct ? 0 : pl->cb * KK) + (pl->pack ? pl->mb : 0);
    pl->pb = pixel_block(rows ? rows : 1, P, COL_BUDGET);
    pl->npb = cdiv(P, pl->pb);
    pl->per_thread = nu_conv_align16((size_t)rows * (size_t)pl->pb);
}

static void plan_node(const nu_tensor *dst, nu_conv_geom *g, conv_roles *r, conv_plan *pl) {
    node_geom(dst, g, r);
    switch (dst->op) {
    case NU_OP_CONV2D: plan_fwd(g, r, pl); break;
    case NU_OP_CONV_TRANSPOSE2D: plan_adj(g, r, dst->params[P_OUTPAD], dst->params[P_OUTPAD + 1], pl); break;
    default: plan_wgrad(g, r, pl); break;
    }
}

/* Floats of the algorithm's scratch (after wcopy; the W_ROWS per-thread rows follow it). */
static size_t alg_floats(const conv_plan *pl, int nth) {
    if (pl->alg == ALG_WINO) return pl->wino.bytes / sizeof(float);
    if (pl->alg == ALG_WINOG) return pl->winog.u_floats + pl->winog.thread_floats * (size_t)nth;
    return pl->per_thread * (size_t)nth;
}

static size_t conv_work_size(const nu_tensor *dst, int nth) {
    nu_conv_geom g;
    conv_roles r;
    conv_plan pl;
    plan_node(dst, &g, &r, &pl);
    return (pl.wcopy + alg_floats(&pl, nth) + pl.wrow * (size_t)nth) * sizeof(float);
}

/* ---------------------------------------------------------------- GEMM paths */

static void fill_rows(float *c, int64_t rows, int64_t cols, int64_t ldc, const float *bias) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t q = 0; q < cols; q++) c[r * ldc + q] = bias[r];
}

/* c[j, i] = t[i, j] + bias[j] for i < qn, j < mn: the transposed tile of the typed GEMM into
 * B's [K, P] layout (ldc = P), 16 x 16 blocks. */
static void store_transposed(const float *t, int64_t qn, int64_t mn, float *c, int64_t ldc, const float *bias) {
    for (int64_t j0 = 0; j0 < mn; j0 += 16)
        for (int64_t i0 = 0; i0 < qn; i0 += 16) {
            int64_t j1 = imin(j0 + 16, mn), i1 = imin(i0 + 16, qn);
            for (int64_t j = j0; j < j1; j++) {
                float bj = bias ? bias[j] : 0.f;
                for (int64_t i = i0; i < i1; i++) c[j * ldc + i] = t[i * mn + j] + bj;
            }
        }
}

/* B = conv(A, W) + bias. Items (n, group, pixel block, out-channel block). W: f32 rows at `w`
 * (W_VIEW, W_COPY), or the typed rows of `wt` (W_ROWS) with `tws` this thread's wrow floats. */
/* max(x, 0) over rows [n, cols] with ld floats between rows (NaN passes through) */
NU_AVX2 static void relu_rows(float *x, int64_t n, int64_t cols, int64_t ld) {
    __m256 z = _mm256_setzero_ps();
    for (int64_t r = 0; r < n; r++) {
        float *v = x + r * ld;
        int64_t j = 0;
        for (; j + 8 <= cols; j += 8) _mm256_storeu_ps(v + j, _mm256_max_ps(z, _mm256_loadu_ps(v + j)));
        for (; j < cols; j++) v[j] = v[j] < 0.f ? 0.f : v[j];
    }
}

static void fwd_gemm(const nu_compute_params *p, const nu_conv_geom *g, const conv_plan *pl, nu_conv_view4 a,
                     const float *w, const nu_tensor *wt, float *tws, const float *bias, bool relu, float *b,
                     float *scratch) {
    int64_t P = g->Ho * g->Wo, CKK = g->Cg * g->KH * g->KW;
    int64_t lo, hi, last = -1;
    nu_split(g->N * g->G * pl->npb * pl->nmb, p->ith, p->nth, &lo, &hi);
    for (int64_t it = lo; it < hi; it++) {
        int64_t mbi = it % pl->nmb, rest = it / pl->nmb;
        int64_t pbi = rest % pl->npb, ng = rest / pl->npb;
        int64_t gi = ng % g->G, n = ng / g->G;
        int64_t q0 = pbi * pl->pb, qn = imin(pl->pb, P - q0);
        int64_t m0 = mbi * pl->mb, mn = imin(pl->mb, g->Kg - m0);
        const float *bm;
        int64_t ldb;
        if (pl->direct) {
            bm = a.p + n * a.s[0] + gi * g->Cg * a.s[1] + q0;
            ldb = a.s[1];
        } else {
            if (rest != last) im2col(g, a, n, gi * g->Cg, g->Cg, q0, qn, scratch);
            last = rest;
            bm = scratch;
            ldb = qn;
        }
        int64_t k0 = gi * g->Kg + m0;
        float *c = b + (n * g->K + k0) * P + q0;
        if (wt) {
            nu_gemm_args ga = typed_gemm_args(wt, qn, mn, CKK);
            ga.a = bm;
            ga.lda = ldb;
            ga.b = (const char *)wt->data + k0 * wt->nb[0];
            ga.c = tws + pl->gwork;
            nu_gemm_part(&ga, 0, 1, tws, true);
            store_transposed(ga.c, qn, mn, c, P, bias ? bias + k0 : NULL);
        } else {
            if (bias) fill_rows(c, mn, qn, P, bias + k0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mn, (int)qn, (int)CKK, 1.f, w + k0 * CKK,
                        (int)CKK, bm, (int)ldb, bias ? 1.f : 0.f, c, (int)P);
        }
        if (relu) relu_rows(c, mn, qn, P);
    }
}

/* A = conv_transpose(B, W) + bias. Items (n, group, A-channel block); each item owns its
 * channels of A and accumulates pixel blocks of B in a fixed order. */
static void adj_gemm(const nu_compute_params *p, const nu_conv_geom *g, const conv_plan *pl, nu_conv_view4 bv,
                     const float *w, const float *bias, float *a, float *scratch) {
    int64_t P = g->Ho * g->Wo, HW = g->H * g->W, KK = g->KH * g->KW, CKK = g->Cg * KK;
    float *col = scratch, *packed = scratch + (pl->direct ? 0 : pl->cb * KK * pl->pb);
    int64_t lo, hi;
    nu_split(g->N * g->G * pl->ncb, p->ith, p->nth, &lo, &hi);
    for (int64_t it = lo; it < hi; it++) {
        int64_t cbi = it % pl->ncb, ng = it / pl->ncb;
        int64_t gi = ng % g->G, n = ng / g->G;
        int64_t c0 = cbi * pl->cb, cn = imin(pl->cb, g->Cg - c0);
        int64_t cabs = gi * g->Cg + c0;
        float *out = a + (n * g->C + cabs) * HW;
        for (int64_t c = 0; c < cn; c++) {
            float v = bias ? bias[cabs + c] : 0.f;
            for (int64_t q = 0; q < HW; q++) out[c * HW + q] = v;
        }
        const float *wg = w + gi * g->Kg * CKK;
        for (int64_t pbi = 0; pbi < pl->npb; pbi++) {
            int64_t q0 = pbi * pl->pb, qn = imin(pl->pb, P - q0);
            const float *bm;
            int64_t ldb;
            if (pl->pack) {
                pack_b(g, bv, n, gi * g->Kg, g->Kg, q0, qn, packed);
                bm = packed;
                ldb = qn;
            } else {
                bm = bv.p + n * bv.s[0] + gi * g->Kg * bv.s[1] + q0;
                ldb = bv.s[1];
            }
            if (pl->direct) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)cn, (int)qn, (int)g->Kg, 1.f, wg + c0,
                            (int)CKK, bm, (int)ldb, 1.f, out + q0, (int)HW);
            } else {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(cn * KK), (int)qn, (int)g->Kg, 1.f,
                            wg + c0 * KK, (int)CKK, bm, (int)ldb, 0.f, col, (int)qn);
                col2im(g, a, n, cabs, cn, q0, qn, col);
            }
        }
    }
}

/* dW = sum over (n, pixel blocks) of B_block x im2col(A)_block^T. Items (group, A-channel
 * block, B-channel block). */
static void wgrad_gemm(const nu_compute_params *p, const nu_conv_geom *g, const conv_plan *pl, nu_conv_view4 a,
                       nu_conv_view4 bv, float *dw, float *scratch) {
    int64_t P = g->Ho * g->Wo, KK = g->KH * g->KW, CKK = g->Cg * KK;
    int64_t lo, hi;
    nu_split(g->G * pl->ncb * pl->nmb, p->ith, p->nth, &lo, &hi);
    for (int64_t it = lo; it < hi; it++) {
        int64_t mbi = it % pl->nmb, rest = it / pl->nmb;
        int64_t cbi = rest % pl->ncb, gi = rest / pl->ncb;
        int64_t c0 = cbi * pl->cb, cn = imin(pl->cb, g->Cg - c0);
        int64_t m0 = mbi * pl->mb, mn = imin(pl->mb, g->Kg - m0);
        int64_t k0 = gi * g->Kg + m0;
        float *out = dw + k0 * CKK + c0 * KK;
        float *col = scratch, *packed = scratch + (pl->direct ? 0 : cn * KK * pl->pb);
        bool first = true;
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t pbi = 0; pbi < pl->npb; pbi++) {
                int64_t q0 = pbi * pl->pb, qn = imin(pl->pb, P - q0);
                const float *am, *bm;
                int64_t lda, ldb;
                if (pl->direct) {
                    am = a.p + n * a.s[0] + (gi * g->Cg + c0) * a.s[1] + q0;
                    lda = a.s[1];
                } else {
                    im2col(g, a, n, gi * g->Cg + c0, cn, q0, qn, col);
                    am = col;
                    lda = qn;
                }
                if (pl->pack) {
                    pack_b(g, bv, n, k0, mn, q0, qn, packed);
                    bm = packed;
                    ldb = qn;
                } else {
                    bm = bv.p + n * bv.s[0] + k0 * bv.s[1] + q0;
                    ldb = bv.s[1];
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mn, (int)(cn * KK), (int)qn, 1.f, bm,
                            (int)ldb, am, (int)lda, first ? 0.f : 1.f, out, (int)CKK);
                first = false;
            }
        if (first) /* empty batch: the gradient is zero */
            for (int64_t k = 0; k < mn; k++) memset(out + k * CKK, 0, sizeof(float) * (size_t)(cn * KK));
    }
}

/* ---------------------------------------------------------------- kernels */

static const float *bias_ptr(const nu_tensor *bias) { return bias ? (const float *)bias->data : NULL; }

/* Phase 0 of the forward ops: W as an f32 view, converted into the head of the work buffer for
 * W_COPY. W_ROWS weights are read by the kernels themselves (the view's pointer is NULL). */
static nu_conv_view4 weight_view(const nu_compute_params *p, const conv_roles *r, const nu_conv_geom *g,
                                 const conv_plan *pl) {
    const nu_tensor *w = r->w;
    int64_t KK = g->KH * g->KW;
    nu_conv_view4 v = {NULL, {g->Cg * KK, KK, g->KW, 1}};
    switch (pl->wmode) {
    case W_COPY:
        v.p = (float *)p->wdata;
        weight_copy(p, w, (float *)p->wdata);
        nu_compute_barrier(p);
        break;
    case W_VIEW:
        v.p = (const float *)w->data;
        v.s[0] = w->nb[0] / (int64_t)sizeof(float);
        break;
    default: break;
    }
    return v;
}

static void k_conv2d(const nu_compute_params *p, nu_tensor *dst) {
    nu_conv_geom g;
    conv_roles r;
    conv_plan pl;
    plan_node(dst, &g, &r, &pl);
    bool relu = dst->params[P_RELU] != 0;
    nu_conv_view4 w = weight_view(p, &r, &g, &pl);
    nu_conv_view4 a = view_of(r.a);
    float *work = (float *)p->wdata + pl.wcopy;
    const nu_tensor *wt = pl.wmode == W_ROWS ? r.w : NULL;
    float *tws = wt ? work + alg_floats(&pl, p->nth) + pl.wrow * (size_t)p->ith : NULL;
    if (!nu_cpu_use_fast(p)) {
        fwd_ref(p, &g, a, w, wt, tws, bias_ptr(r.bias), relu, (float *)dst->data);
    } else if (pl.alg == ALG_WINO) {
        nu_conv_wrows wr = {wt, tws};
        nu_wino_run(p, &pl.wg, &pl.wino, a, w, wt ? &wr : NULL, bias_ptr(r.bias), relu, (float *)dst->data, work);
    } else if (pl.alg == ALG_WINOG) {
        nu_conv_wrows wr = {wt, tws};
        nu_winog_run(p, &g, &pl.winog, a, w, wt ? &wr : NULL, bias_ptr(r.bias), relu, (float *)dst->data, work);
    } else {
        fwd_gemm(p, &g, &pl, a, w.p, wt, tws, bias_ptr(r.bias), relu, (float *)dst->data,
                 work + pl.per_thread * (size_t)p->ith);
    }
}

static void k_conv_transpose2d(const nu_compute_params *p, nu_tensor *dst) {
    nu_conv_geom g;
    conv_roles r;
    conv_plan pl;
    plan_node(dst, &g, &r, &pl);
    nu_conv_view4 w = weight_view(p, &r, &g, &pl);
    nu_conv_view4 bv = view_of(r.b);
    float *work = (float *)p->wdata + pl.wcopy;
    if (!nu_cpu_use_fast(p)) {
        adj_ref(p, &g, bv, w, bias_ptr(r.bias), (float *)dst->data);
    } else if (pl.alg == ALG_WINO) {
        /* filter(o = A channel c, i = B channel k)[i][j] = W[k][c][2-i][2-j] */
        nu_conv_view4 wf = {w.p + 2 * w.s[2] + 2 * w.s[3], {w.s[1], w.s[0], -w.s[2], -w.s[3]}};
        nu_wino_run(p, &pl.wg, &pl.wino, bv, wf, NULL, bias_ptr(r.bias), false, (float *)dst->data, work);
    } else {
        adj_gemm(p, &g, &pl, bv, w.p, bias_ptr(r.bias), (float *)dst->data, work + pl.per_thread * (size_t)p->ith);
    }
}

static void k_conv_backward_weight(const nu_compute_params *p, nu_tensor *dst) {
    nu_conv_geom g;
    conv_roles r;
    conv_plan pl;
    plan_node(dst, &g, &r, &pl);
    nu_conv_view4 a = view_of(r.a), bv = view_of(r.b);
    if (!nu_cpu_use_fast(p))
        wgrad_ref(p, &g, a, bv, (float *)dst->data);
    else
        wgrad_gemm(p, &g, &pl, a, bv, (float *)dst->data, (float *)p->wdata + pl.per_thread * (size_t)p->ith);
}

void nu_cpu_register_conv(nu_cpu_kernel *tab) {
    tab[NU_OP_CONV2D] = (nu_cpu_kernel){k_conv2d, conv_work_size};
    tab[NU_OP_CONV_TRANSPOSE2D] = (nu_cpu_kernel){k_conv_transpose2d, conv_work_size};
    tab[NU_OP_CONV2D_BACKWARD_WEIGHT] = (nu_cpu_kernel){k_conv_backward_weight, conv_work_size};
    tab[NU_OP_CONV_TRANSPOSE2D_BACKWARD_WEIGHT] = (nu_cpu_kernel){k_conv_backward_weight, conv_work_size};
}
