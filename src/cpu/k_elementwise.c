/*
 * k_elementwise.c — CPU kernels of the elementwise op family: CONT, CAST, ADD/SUB/MUL/DIV,
 * AFFINE, EXPAND, SUM_TO, UNARY and UNARY_BACKWARD (row math of the last two in k_unary.c).
 *
 * All kernels share one strided iterator: operands are aligned at the right to an iteration
 * shape (broadcast dims get byte stride 0), size-1 dims are dropped and adjacent dims are merged
 * whenever every operand's strides allow it, so [B,C,H,W] + [C,1,1] becomes [B, C, H*W] with the
 * bias stride (0, 4, 0), and a contiguous same-shape op becomes one flat run. Elementwise kernels
 * split the flat index range over threads (results do not depend on the split); each innermost
 * run is processed by a scalar loop (reference twin) or, when its strides are 4 (contiguous) or 0
 * (broadcast scalar), by AVX2 code. Add/sub/mul/div and copies are bit-identical in both paths.
 *
 * SUM_TO reduces the broadcast dims: threads split the output elements; every output sums its
 * inputs in the same order (double accumulator) whatever the thread count. Fast paths: innermost
 * reduced run contiguous (AVX2 double lanes), or innermost kept dim contiguous (a block of
 * outputs accumulated as vectors, bit-identical to the reference).
 * Tested by tests/test_op_elementwise.c.
 */
#include <math.h>
#include <stdlib.h>

#include "core/internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NU_HAVE_X86 1
#define TGT __attribute__((target("avx2,fma,f16c")))
#endif

/* k_unary.c */

/* ---------------------------------------------------------------- strided iterator */

#define EW_MAXOP 3

typedef struct ew_iter {
    int nd, nop;
    int64_t ne[NU_MAX_DIMS];              /* collapsed sizes, outermost first             */
    int64_t nb[EW_MAXOP][NU_MAX_DIMS];    /* byte strides per operand (0 = broadcast)     */
    char *base[EW_MAXOP];
    int64_t n;                            /* elements (units) in total                    */
} ew_iter;

/* Iteration shape (ndim, ne); ops[k] aligned at the right, each dim equal to ne or 1.
 * blck > 1 counts the innermost dim in units of blck values (quantized casts): a plain operand
 * must then be contiguous along it and its unit stride is blck elements. */
static void ew_init(ew_iter *it, int ndim, const int64_t *ne, nu_tensor *const *ops, int nop, int64_t blck) {
    NU_ASSERT(nop <= EW_MAXOP);
    int64_t sne[NU_MAX_DIMS], snb[EW_MAXOP][NU_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        sne[d] = ne[d];
        if (d == ndim - 1) {
            NU_ASSERT(ne[d] % blck == 0);
            sne[d] = ne[d] / blck;
        }
        for (int k = 0; k < nop; k++) {
            const nu_tensor *t = ops[k];
            int dk = t->ndim - ndim + d;
            int64_t s = 0;
            if (dk >= 0 && t->ne[dk] != 1) {
                NU_ASSERT(t->ne[dk] == ne[d]);
                s = t->nb[dk];
                if (d == ndim - 1 && blck > 1 && !nu_type_info(t->type)->is_quant) {
                    NU_ASSERT(s == (int64_t)nu_type_info(t->type)->size);
                    s *= blck;
                }
            }
            snb[k][d] = s;
        }
    }
    it->nop = nop;
    it->nd = 0;
    it->n = 1;
    for (int d = 0; d < ndim; d++) {
        it->n *= sne[d];
        if (sne[d] == 1) continue;
        if (it->nd > 0) {
            int p = it->nd - 1;
            bool merge = true;
            for (int k = 0; k < nop; k++) merge = merge && it->nb[k][p] == snb[k][d] * sne[d];
            if (merge) {
                it->ne[p] *= sne[d];
                for (int k = 0; k < nop; k++) it->nb[k][p] = snb[k][d];
                continue;
            }
        }
        it->ne[it->nd] = sne[d];
        for (int k = 0; k < nop; k++) it->nb[k][it->nd] = snb[k][d];
        it->nd++;
    }
    if (it->nd == 0) {
        it->nd = 1;
        it->ne[0] = 1;
        for (int k = 0; k < nop; k++) it->nb[k][0] = 0;
    }
    for (int k = 0; k < nop; k++) it->base[k] = ops[k]->data;
}

/* Pointers of flat element i for every operand; returns the length of the innermost run from
 * i, capped at hi - i. */
static int64_t ew_run(const ew_iter *it, int64_t i, int64_t hi, char **ptr) {
    int last = it->nd - 1;
    int64_t inner = it->ne[last];
    int64_t c = i % inner, row = i / inner;
    int64_t n = inner - c < hi - i ? inner - c : hi - i;
    for (int k = 0; k < it->nop; k++) ptr[k] = it->base[k] + c * it->nb[k][last];
    for (int d = last - 1; d >= 0 && row; d--) {
        int64_t id = row % it->ne[d];
        row /= it->ne[d];
        for (int k = 0; k < it->nop; k++) ptr[k] += id * it->nb[k][d];
    }
    return n;
}

/* This thread's share of [0, n), in chunks that are multiples of 16 units (one cache line of
 * f32) so that threads do not write the same line. */
static void ew_split(int64_t n, const nu_compute_params *p, int64_t *lo, int64_t *hi) {
    int64_t per = (n + p->nth - 1) / p->nth;
    per = (per + 15) & ~(int64_t)15;
    *lo = per * p->ith < n ? per * p->ith : n;
    *hi = *lo + per < n ? *lo + per : n;
}

/* ---------------------------------------------------------------- CONT, EXPAND (copies) */

static void copy_run(char *d, int64_t sd, const char *s, int64_t ss, int64_t n, size_t es, bool fast) {
    if (fast && ss == (int64_t)es && sd == (int64_t)es) {
        memcpy(d, s, (size_t)n * es);
    } else if (fast && ss == 0 && sd == (int64_t)es && es == 4) {
        uint32_t v;
        memcpy(&v, s, 4);
        for (int64_t j = 0; j < n; j++) ((uint32_t *)(void *)d)[j] = v;
    } else {
        for (int64_t j = 0; j < n; j++) memcpy(d + j * sd, s + j * ss, es);
    }
}

/* dst = src (CONT) or dst = broadcast(src) (EXPAND); any plain type; quantized CONT copies
 * whole blocks. */
static void k_copy(const nu_compute_params *p, nu_tensor *dst) {
    nu_tensor *src = dst->src[0];
    nu_tensor *ops[2] = {dst, src};
    const nu_type_traits *tr = nu_type_info(dst->type);
    ew_iter it;
    ew_init(&it, dst->ndim, dst->ne, ops, 2, tr->blck);
    int64_t lo, hi;
    ew_split(it.n, p, &lo, &hi);
    bool fast = !p->use_ref;
    char *ptr[2];
    for (int64_t i = lo, n; i < hi; i += n) {
        n = ew_run(&it, i, hi, ptr);
        copy_run(ptr[0], it.nb[0][it.nd - 1], ptr[1], it.nb[1][it.nd - 1], n, tr->size, fast);
    }
}

/* ---------------------------------------------------------------- CAST */

#ifdef NU_HAVE_X86
TGT static void f16_to_f32_avx2(const uint16_t *s, float *d, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    for (; i < n; i++) d[i] = nu_f16_to_f32(s[i]);
}
/* Round to nearest even, as nu_f32_to_f16 (NaN payloads may differ; NaN stays NaN). */
TGT static void f32_to_f16_avx2(const float *s, uint16_t *d, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) d[i] = nu_f32_to_f16(s[i]);
}
#endif

/* Converts n contiguous values of type st at s into type dt at d. */
static void convert_row(nu_type st, const void *s, nu_type dt, void *d, int64_t n, bool fast) {
    if (st == dt) {
        memcpy(d, s, nu_row_size(st, n));
        return;
    }
#ifdef NU_HAVE_X86
    if (fast && st == NU_TYPE_F16 && dt == NU_TYPE_F32) {
        f16_to_f32_avx2(s, d, n);
        return;
    }
    if (fast && st == NU_TYPE_F32 && dt == NU_TYPE_F16) {
        f32_to_f16_avx2(s, d, n);
        return;
    }
#else
    (void)fast;
#endif
    if (dt == NU_TYPE_F32) {
        nu_row_to_f32(st, s, d, n);
    } else if (st == NU_TYPE_F32) {
        nu_row_from_f32(dt, s, d, n);
    } else { /* through f32 in chunks (a multiple of the block size) */
        float tmp[256];
        const char *ps = s;
        char *pd = d;
        for (int64_t i = 0; i < n; i += 256) {
            int64_t m = n - i < 256 ? n - i : 256;
            nu_row_to_f32(st, ps, tmp, m);
            nu_row_from_f32(dt, tmp, pd, m);
            ps += nu_row_size(st, m);
            pd += nu_row_size(dt, m);
        }
    }
}

static void k_cast(const nu_compute_params *p, nu_tensor *dst) {
    nu_tensor *src = dst->src[0];
    nu_tensor *ops[2] = {dst, src};
    const nu_type_traits *ts = nu_type_info(src->type), *td = nu_type_info(dst->type);
    int64_t blck = ts->blck > td->blck ? ts->blck : td->blck; /* values per unit */
    ew_iter it;
    ew_init(&it, dst->ndim, dst->ne, ops, 2, blck);
    /* bytes of one unit in each operand */
    int64_t ud = (int64_t)nu_row_size(dst->type, blck), us = (int64_t)nu_row_size(src->type, blck);
    int64_t lo, hi;
    ew_split(it.n, p, &lo, &hi);
    bool fast = nu_cpu_use_fast(p);
    int64_t sd = it.nb[0][it.nd - 1], ss = it.nb[1][it.nd - 1];
    char *ptr[2];
    for (int64_t i = lo, n; i < hi; i += n) {
        n = ew_run(&it, i, hi, ptr);
        if (sd == ud && ss == us) {
            convert_row(src->type, ptr[1], dst->type, ptr[0], n * blck, fast);
        } else {
            for (int64_t j = 0; j < n; j++) convert_row(src->type, ptr[1] + j * ss, dst->type, ptr[0] + j * sd, blck, fast);
        }
    }
}

/* ---------------------------------------------------------------- ADD, SUB, MUL, DIV, AFFINE */

#define OP_ADD(x, y) ((x) + (y))
#define OP_SUB(x, y) ((x) - (y))
#define OP_MUL(x, y) ((x) * (y))
#define OP_DIV(x, y) ((x) / (y))

#define BIN_REF_LOOP(OP)                                                                       \
    for (int64_t j = 0; j < n; j++) {                                                          \
        float x = *(const float *)(const void *)(a + j * sa), y = *(const float *)(const void *)(b + j * sb); \
        *(float *)(void *)(d + j * sd) = OP(x, y);                                             \
    }

static void bin_run_ref(int op, char *d, int64_t sd, const char *a, int64_t sa, const char *b, int64_t sb, int64_t n) {
    switch (op) {
    case NU_OP_ADD: BIN_REF_LOOP(OP_ADD) break;
    case NU_OP_SUB: BIN_REF_LOOP(OP_SUB) break;
    case NU_OP_MUL: BIN_REF_LOOP(OP_MUL) break;
    case NU_OP_DIV: BIN_REF_LOOP(OP_DIV) break;
    default: NU_ASSERT(0);
    }
}

#ifdef NU_HAVE_X86
/* d, a, b contiguous runs; a_bc / b_bc: that operand is one broadcast scalar. */
#define BIN_AVX_LOOP(VOP, OP)                                                                  \
    if (!a_bc && !b_bc) {                                                                      \
        for (; j + 16 <= n; j += 16) {                                                         \
            _mm256_storeu_ps(d + j, VOP(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j)));      \
            _mm256_storeu_ps(d + j + 8, VOP(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8))); \
        }                                                                                      \
        for (; j < n; j++) d[j] = OP(a[j], b[j]);                                              \
    } else if (!a_bc) {                                                                        \
        __m256 vb = _mm256_set1_ps(*b);                                                        \
        for (; j + 8 <= n; j += 8) _mm256_storeu_ps(d + j, VOP(_mm256_loadu_ps(a + j), vb));   \
        for (; j < n; j++) d[j] = OP(a[j], *b);                                                \
    } else if (!b_bc) {                                                                        \
        __m256 va = _mm256_set1_ps(*a);                                                        \
        for (; j + 8 <= n; j += 8) _mm256_storeu_ps(d + j, VOP(va, _mm256_loadu_ps(b + j)));   \
        for (; j < n; j++) d[j] = OP(*a, b[j]);                                                \
    } else {                                                                                   \
        float v = OP(*a, *b);                                                                  \
        for (; j < n; j++) d[j] = v;                                                           \
    }

TGT static void bin_run_avx2(int op, float *d, const float *a, bool a_bc, const float *b, bool b_bc, int64_t n) {
    int64_t j = 0;
    switch (op) {
    case NU_OP_ADD: BIN_AVX_LOOP(_mm256_add_ps, OP_ADD) break;
    case NU_OP_SUB: BIN_AVX_LOOP(_mm256_sub_ps, OP_SUB) break;
    case NU_OP_MUL: BIN_AVX_LOOP(_mm256_mul_ps, OP_MUL) break;
    case NU_OP_DIV: BIN_AVX_LOOP(_mm256_div_ps, OP_DIV) break;
    default: NU_ASSERT(0);
    }
}
#endif

static void k_binary(const nu_compute_params *p, nu_tensor *dst) {
    nu_tensor *ops[3] = {dst, dst->src[0], dst->src[1]};
    NU_ASSERT(ops[1]->type == NU_TYPE_F32 && ops[2]->type == NU_TYPE_F32);
    ew_iter it;
    ew_init(&it, dst->ndim, dst->ne, ops, 3, 1);
    int64_t lo, hi;
    ew_split(it.n, p, &lo, &hi);
    bool fast = nu_cpu_use_fast(p);
    int L = it.nd - 1;
    int64_t sd = it.nb[0][L], sa = it.nb[1][L], sb = it.nb[2][L];
    char *ptr[3];
    for (int64_t i = lo, n; i < hi; i += n) {
        n = ew_run(&it, i, hi, ptr);
#ifdef NU_HAVE_X86
        if (fast && sd == 4 && (sa == 4 || sa == 0) && (sb == 4 || sb == 0)) {
            bin_run_avx2(dst->op, (float *)(void *)ptr[0], (const float *)(void *)ptr[1], sa == 0,
                         (const float *)(void *)ptr[2], sb == 0, n);
            continue;
        }
#endif
        bin_run_ref(dst->op, ptr[0], sd, ptr[1], sa, ptr[2], sb, n);
    }
    (void)fast;
}

#ifdef NU_HAVE_X86
/* y = x*s + b with one rounding (FMA); the reference rounds x*s first: they differ by at most
 * half an ulp of x*s. */
TGT static void affine_run_avx2(float *d, const float *a, float s, float b, int64_t n) {
    __m256 vs = _mm256_set1_ps(s), vb = _mm256_set1_ps(b);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(d + j, _mm256_fmadd_ps(_mm256_loadu_ps(a + j), vs, vb));
    for (; j < n; j++) d[j] = fmaf(a[j], s, b);
}
#endif

static void k_affine(const nu_compute_params *p, nu_tensor *dst) {
    nu_tensor *ops[2] = {dst, dst->src[0]};
    NU_ASSERT(ops[1]->type == NU_TYPE_F32);
    float s = nu_get_param_f(dst, 0), b = nu_get_param_f(dst, 1);
    ew_iter it;
    ew_init(&it, dst->ndim, dst->ne, ops, 2, 1);
    int64_t lo, hi;
    ew_split(it.n, p, &lo, &hi);
    bool fast = nu_cpu_use_fast(p);
    int64_t sd = it.nb[0][it.nd - 1], sa = it.nb[1][it.nd - 1];
    char *ptr[2];
    for (int64_t i = lo, n; i < hi; i += n) {
        n = ew_run(&it, i, hi, ptr);
#ifdef NU_HAVE_X86
        if (fast && sd == 4 && sa == 4) {
            affine_run_avx2((float *)(void *)ptr[0], (const float *)(void *)ptr[1], s, b, n);
            continue;
        }
#endif
        for (int64_t j = 0; j < n; j++) {
            float x = *(const float *)(const void *)(ptr[1] + j * sa);
            *(float *)(void *)(ptr[0] + j * sd) = x * s + b;
        }
    }
    (void)fast;
}

/* ---------------------------------------------------------------- UNARY, UNARY_BACKWARD */

/* Runs go through the row functions of k_unary.c; strided runs are gathered into a small
 * buffer first. */
#define UN_CHUNK 256

static const float *gather(const char *s, int64_t ss, int64_t n, float *buf) {
    if (ss == 4) return (const float *)(const void *)s;
    for (int64_t j = 0; j < n; j++) buf[j] = *(const float *)(const void *)(s + j * ss);
    return buf;
}

static void k_unary(const nu_compute_params *p, nu_tensor *dst) {
    nu_tensor *ops[2] = {dst, dst->src[0]};
    NU_ASSERT(ops[1]->type == NU_TYPE_F32);
    int kind = dst->params[0];
    ew_iter it;
    ew_init(&it, dst->ndim, dst->ne, ops, 2, 1);
    int64_t lo, hi;
    ew_split(it.n, p, &lo, &hi);
    bool fast = nu_cpu_use_fast(p);
    int64_t sd = it.nb[0][it.nd - 1], sa = it.nb[1][it.nd - 1];
    NU_ASSERT(sd == 4 || it.n <= 1);
    float bx[UN_CHUNK];
    char *ptr[2];
    for (int64_t i = lo, n; i < hi; i += n) {
        n = ew_run(&it, i, hi, ptr);
        for (int64_t j = 0; j < n; j += UN_CHUNK) {
            int64_t m = n - j < UN_CHUNK ? n - j : UN_CHUNK;
            const float *x = gather(ptr[1] + j * sa, sa, m, bx);
            nu_cpu_unary_f32(kind, (float *)(void *)ptr[0] + j, x, m, fast);
        }
    }
}

static void k_unary_backward(const nu_compute_params *p, nu_tensor *dst) {
    nu_tensor *ops[3] = {dst, dst->src[0], dst->src[1]};
    NU_ASSERT(ops[1]->type == NU_TYPE_F32 && ops[2]->type == NU_TYPE_F32);
    int kind = dst->params[0];
    ew_iter it;
    ew_init(&it, dst->ndim, dst->ne, ops, 3, 1);
    int64_t lo, hi;
    ew_split(it.n, p, &lo, &hi);
    bool fast = nu_cpu_use_fast(p);
    int L = it.nd - 1;
    int64_t sd = it.nb[0][L], sg = it.nb[1][L], sx = it.nb[2][L];
    NU_ASSERT(sd == 4 || it.n <= 1);
    float bg[UN_CHUNK], bx[UN_CHUNK];
    char *ptr[3];
    for (int64_t i = lo, n; i < hi; i += n) {
        n = ew_run(&it, i, hi, ptr);
        for (int64_t j = 0; j < n; j += UN_CHUNK) {
            int64_t m = n - j < UN_CHUNK ? n - j : UN_CHUNK;
            const float *g = gather(ptr[1] + j * sg, sg, m, bg);
            const float *x = gather(ptr[2] + j * sx, sx, m, bx);
            nu_cpu_unary_backward_f32(kind, (float *)(void *)ptr[0] + j, g, x, m, fast);
        }
    }
}

/* ---------------------------------------------------------------- SUM_TO */

/* Iteration over the source shape; operand 0 is dst with stride 0 on the summed dims ("R"
 * dims), the others are kept ("K" dims). Output j (contiguous dst) is the row-major index over
 * the K dims. */
typedef struct sum_plan {
    ew_iter it;
    int nk, nr;
    int kd[NU_MAX_DIMS], rd[NU_MAX_DIMS]; /* collapsed dim numbers, outermost first */
    int64_t m;                             /* outputs                                */
} sum_plan;

static void sum_plan_init(sum_plan *sp, nu_tensor *dst) {
    nu_tensor *src = dst->src[0];
    nu_tensor *ops[2] = {dst, src};
    ew_init(&sp->it, src->ndim, src->ne, ops, 2, 1);
    sp->nk = sp->nr = 0;
    sp->m = 1;
    for (int d = 0; d < sp->it.nd; d++) {
        if (sp->it.nb[0][d] == 0 && sp->it.ne[d] > 1) {
            sp->rd[sp->nr++] = d;
        } else {
            sp->kd[sp->nk++] = d;
            sp->m *= sp->it.ne[d];
        }
    }
}

/* Source byte offset of output j (over the K dims). */
static int64_t sum_src_offset(const sum_plan *sp, int64_t j) {
    int64_t off = 0;
    for (int q = sp->nk - 1; q >= 0; q--) {
        int d = sp->kd[q];
        off += (j % sp->it.ne[d]) * sp->it.nb[1][d];
        j /= sp->it.ne[d];
    }
    return off;
}

/* Odometer over the R dims except the innermost one: calls visit for each offset. The
 * innermost R dim (rd[nr-1]) is left to the caller's inner loop. */
#define SUM_FOR_OUTER_R(sp, roff, BODY)                                                        \
    do {                                                                                       \
        int64_t idx_[NU_MAX_DIMS] = {0};                                                       \
        int64_t roff = 0;                                                                      \
        for (;;) {                                                                             \
            BODY;                                                                              \
            int q_ = (sp)->nr - 2;                                                             \
            for (; q_ >= 0; q_--) {                                                            \
                int d_ = (sp)->rd[q_];                                                         \
                roff += (sp)->it.nb[1][d_];                                                    \
                if (++idx_[q_] < (sp)->it.ne[d_]) break;                                       \
                roff -= idx_[q_] * (sp)->it.nb[1][d_];                                         \
                idx_[q_] = 0;                                                                  \
            }                                                                                  \
            if (q_ < 0) break;                                                                 \
        }                                                                                      \
    } while (0)

/* Reference: every output sums its inputs in row-major order of the R dims, in double. */
static void sum_ref(const sum_plan *sp, float *out, const char *src, int64_t lo, int64_t hi) {
    int dl = sp->rd[sp->nr - 1];
    int64_t nl = sp->it.ne[dl], sl = sp->it.nb[1][dl];
    for (int64_t j = lo; j < hi; j++) {
        const char *s = src + sum_src_offset(sp, j);
        double acc = 0;
        SUM_FOR_OUTER_R(sp, roff, {
            const char *q = s + roff;
            for (int64_t r = 0; r < nl; r++) acc += *(const float *)(const void *)(q + r * sl);
        });
        out[j] = (float)acc;
    }
}

#ifdef NU_HAVE_X86
/* sum of n contiguous floats in double lanes (4 x 4 partial sums) */
TGT static inline double sum_run_avx2(const float *x, int64_t n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm_loadu_ps(x + i)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)));
        a2 = _mm256_add_pd(a2, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8)));
        a3 = _mm256_add_pd(a3, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12)));
    }
    a0 = _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3));
    double t[4];
    _mm256_storeu_pd(t, a0);
    double acc = (t[0] + t[1]) + (t[2] + t[3]);
    for (; i < n; i++) acc += x[i];
    return acc;
}

/* Innermost R dim contiguous: per output, contiguous runs summed with sum_run_avx2. */
TGT static void sum_rows_fast(const sum_plan *sp, float *out, const char *src, int64_t lo, int64_t hi) {
    int dl = sp->rd[sp->nr - 1];
    int64_t nl = sp->it.ne[dl];
    for (int64_t j = lo; j < hi; j++) {
        const char *s = src + sum_src_offset(sp, j);
        double acc = 0;
        SUM_FOR_OUTER_R(sp, roff, acc += sum_run_avx2((const float *)(const void *)(s + roff), nl));
        out[j] = (float)acc;
    }
}

/* acc[0..nb) (double) += x[0..nb) (float), nb <= 16 */
TGT static inline void acc_block_avx2(double *acc, const float *x, int64_t nb) {
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4)
        _mm256_storeu_pd(acc + i, _mm256_add_pd(_mm256_loadu_pd(acc + i), _mm256_cvtps_pd(_mm_loadu_ps(x + i))));
    for (; i < nb; i++) acc[i] += x[i];
}

/* Innermost K dim contiguous in src: blocks of up to 16 neighbouring outputs accumulate whole
 * vectors per R index, in the reference's order (bit-identical to it). */
TGT static void sum_cols_fast(const sum_plan *sp, float *out, const char *src, int64_t lo, int64_t hi) {
    int dk = sp->kd[sp->nk - 1];
    int64_t nk = sp->it.ne[dk];
    int dl = sp->rd[sp->nr - 1];
    int64_t nl = sp->it.ne[dl], sl = sp->it.nb[1][dl];
    double acc[16];
    for (int64_t j = lo, nb; j < hi; j += nb) {
        int64_t c = j % nk;
        nb = nk - c < hi - j ? nk - c : hi - j;
        if (nb > 16) nb = 16;
        const char *s = src + sum_src_offset(sp, j);
        for (int64_t q = 0; q < nb; q++) acc[q] = 0;
        SUM_FOR_OUTER_R(sp, roff, {
            const char *b = s + roff;
            for (int64_t r = 0; r < nl; r++) acc_block_avx2(acc, (const float *)(const void *)(b + r * sl), nb);
        });
        for (int64_t q = 0; q < nb; q++) out[j + q] = (float)acc[q];
    }
}
#endif

static void k_sum_to(const nu_compute_params *p, nu_tensor *dst) {
    NU_ASSERT(dst->src[0]->type == NU_TYPE_F32);
    sum_plan sp;
    sum_plan_init(&sp, dst);
    if (sp.it.n == 0) { /* empty source: every output is an empty sum */
        int64_t lo, hi;
        nu_split(nu_nelements(dst), p->ith, p->nth, &lo, &hi);
        for (int64_t j = lo; j < hi; j++) ((float *)dst->data)[j] = 0.0f;
        return;
    }
    int64_t lo, hi;
    ew_split(sp.m, p, &lo, &hi);
    float *out = dst->data;
    const char *src = dst->src[0]->data;
    if (sp.nr == 0) { /* nothing summed (only size-1 dims differ): a copy */
        for (int64_t j = lo; j < hi; j++) out[j] = *(const float *)(const void *)(src + sum_src_offset(&sp, j));
        return;
    }
#ifdef NU_HAVE_X86
    if (nu_cpu_use_fast(p)) {
        int last = sp.it.nd - 1;
        if (sp.rd[sp.nr - 1] == last && sp.it.nb[1][last] == 4) {
            sum_rows_fast(&sp, out, src, lo, hi);
            return;
        }
        if (sp.nk > 0 && sp.kd[sp.nk - 1] == last && sp.it.nb[1][last] == 4) {
            sum_cols_fast(&sp, out, src, lo, hi);
            return;
        }
    }
#endif
    sum_ref(&sp, out, src, lo, hi);
}

void nu_cpu_register_elementwise(nu_cpu_kernel *tab) {
    tab[NU_OP_CONT].forward = k_copy;
    tab[NU_OP_EXPAND].forward = k_copy;
    tab[NU_OP_CAST].forward = k_cast;
    tab[NU_OP_ADD].forward = k_binary;
    tab[NU_OP_SUB].forward = k_binary;
    tab[NU_OP_MUL].forward = k_binary;
    tab[NU_OP_DIV].forward = k_binary;
    tab[NU_OP_AFFINE].forward = k_affine;
    tab[NU_OP_SUM_TO].forward = k_sum_to;
    tab[NU_OP_UNARY].forward = k_unary;
    tab[NU_OP_UNARY_BACKWARD].forward = k_unary_backward;
}
