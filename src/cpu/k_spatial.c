/*
 * k_spatial.c — CPU kernels of the spatial family: nearest upsampling, avg/max pooling and their
 * backward ops, concat, zero padding. These are memory-bound copies: the kernels work on whole
 * rows (memcpy/contiguous inner loops) split over (N*C) planes or outer rows, so the scalar code
 * is also the fast path (no separate SIMD twin is needed; the compiler vectorises the row loops).
 * Strided inputs are read through byte strides. Tested by tests/test_op_spatial.c.
 */
#include <float.h>
#include <math.h>

#include "core/internal.h"

static inline float rd(const nu_tensor *t, int64_t n, int64_t c, int64_t h, int64_t w) {
    return *(const float *)((const char *)t->data + n * t->nb[0] + c * t->nb[1] + h * t->nb[2] + w * t->nb[3]);
}

/* Each thread handles a range of (n, c) planes. */
static void k_upsample(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *x = dst->src[0];
    int s = dst->params[0];
    int64_t C = x->ne[1], H = x->ne[2], W = x->ne[3], OW = dst->ne[3];
    int64_t lo, hi;
    nu_split(x->ne[0] * C, p->ith, p->nth, &lo, &hi);
    float *out = dst->data;
    for (int64_t pl = lo; pl < hi; pl++) {
        int64_t n = pl / C, c = pl % C;
        float *o = out + pl * dst->ne[2] * OW;
        for (int64_t h = 0; h < H; h++) {
            float *row = o + h * s * OW;
            for (int64_t w = 0; w < W; w++) {
                float v = rd(x, n, c, h, w);
                for (int k = 0; k < s; k++) row[w * s + k] = v;
            }
            for (int k = 1; k < s; k++) memcpy(row + k * OW, row, (size_t)OW * sizeof(float));
        }
    }
}

/* Divisor of an average-pool window: k*k with count_include_pad (torch's default), else the
 * number of taps inside the image. */
static int window_count(int64_t oh, int64_t ow, int k, int st, int pad, int64_t H, int64_t W, int incl) {
    if (incl) return k * k;
    int64_t h0 = oh * st - pad, w0 = ow * st - pad;
    int64_t h1 = h0 + k < H ? h0 + k : H, w1 = w0 + k < W ? w0 + k : W;
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    return (int)((h1 - h0) * (w1 - w0));
}

static void k_avg_pool(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *x = dst->src[0];
    int k = dst->params[0], st = dst->params[1], pad = dst->params[2], incl = dst->params[3];
    int64_t C = x->ne[1], H = x->ne[2], W = x->ne[3], OH = dst->ne[2], OW = dst->ne[3];
    int64_t lo, hi;
    nu_split(x->ne[0] * C, p->ith, p->nth, &lo, &hi);
    float *out = dst->data;
    for (int64_t pl = lo; pl < hi; pl++) {
        int64_t n = pl / C, c = pl % C;
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                float sum = 0;
                for (int i = 0; i < k; i++) {
                    int64_t h = oh * st - pad + i;
                    if (h < 0 || h >= H) continue;
                    for (int j = 0; j < k; j++) {
                        int64_t w = ow * st - pad + j;
                        if (w >= 0 && w < W) sum += rd(x, n, c, h, w);
                    }
                }
                out[(pl * OH + oh) * OW + ow] = sum / (float)window_count(oh, ow, k, st, pad, H, W, incl);
            }
    }
}

/* dx[h,w] = sum over windows covering (h,w) of dy / k^2; computed by gathering per input pixel so
 * that threads never write the same element. */
static void k_avg_pool_bw(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *gy = dst->src[0];
    int k = dst->params[0], st = dst->params[1], pad = dst->params[2], incl = dst->params[3];
    int64_t C = dst->ne[1], H = dst->ne[2], W = dst->ne[3], OH = gy->ne[2], OW = gy->ne[3];
    int64_t lo, hi;
    nu_split(dst->ne[0] * C, p->ith, p->nth, &lo, &hi);
    float *out = dst->data;
    for (int64_t pl = lo; pl < hi; pl++) {
        int64_t n = pl / C, c = pl % C;
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++) {
                /* windows oh with oh*st - pad <= h < oh*st - pad + k */
                int64_t oh0 = (h + pad - k + st) / st, oh1 = (h + pad) / st;
                int64_t ow0 = (w + pad - k + st) / st, ow1 = (w + pad) / st;
                if (h + pad - k + 1 < 0) oh0 = 0;
                if (w + pad - k + 1 < 0) ow0 = 0;
                float sum = 0;
                for (int64_t oh = oh0 < 0 ? 0 : oh0; oh <= oh1 && oh < OH; oh++)
                    for (int64_t ow = ow0 < 0 ? 0 : ow0; ow <= ow1 && ow < OW; ow++)
                        sum += rd(gy, n, c, oh, ow) / (float)window_count(oh, ow, k, st, pad, H, W, incl);
                out[(pl * H + h) * W + w] = sum;
            }
    }
}

/* Position (within the padded window) of the first maximum, as torch's max_pool2d indices;
 * NaN propagates (a NaN is taken as the maximum, as torch does). */
static void argmax_window(const nu_tensor *x, int64_t n, int64_t c, int64_t oh, int64_t ow, int k, int st, int pad,
                          int64_t *bh, int64_t *bw, float *bv) {
    float best = -INFINITY;
    int64_t H = x->ne[2], W = x->ne[3];
    *bh = -1;
    *bw = -1;
    for (int i = 0; i < k; i++) {
        int64_t h = oh * st - pad + i;
        if (h < 0 || h >= H) continue;
        for (int j = 0; j < k; j++) {
            int64_t w = ow * st - pad + j;
            if (w < 0 || w >= W) continue;
            float v = rd(x, n, c, h, w);
            if (*bh < 0 || v > best || isnan(v)) {
                best = v;
                *bh = h;
                *bw = w;
                if (isnan(v)) goto done;
            }
        }
    }
done:
    *bv = best;
}

static void k_max_pool(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *x = dst->src[0];
    int k = dst->params[0], st = dst->params[1], pad = dst->params[2];
    int64_t C = x->ne[1], OH = dst->ne[2], OW = dst->ne[3];
    int64_t lo, hi;
    nu_split(x->ne[0] * C, p->ith, p->nth, &lo, &hi);
    float *out = dst->data;
    for (int64_t pl = lo; pl < hi; pl++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t bh, bw;
                float v;
                argmax_window(x, pl / C, pl % C, oh, ow, k, st, pad, &bh, &bw, &v);
                out[(pl * OH + oh) * OW + ow] = v;
            }
}

/* Scatter dy to each window's argmax. Threads own whole planes, so writes never collide. */
static void k_max_pool_bw(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *gy = dst->src[0], *x = dst->src[1];
    int k = dst->params[0], st = dst->params[1], pad = dst->params[2];
    int64_t C = dst->ne[1], H = dst->ne[2], W = dst->ne[3], OH = gy->ne[2], OW = gy->ne[3];
    int64_t lo, hi;
    nu_split(dst->ne[0] * C, p->ith, p->nth, &lo, &hi);
    float *out = dst->data;
    for (int64_t pl = lo; pl < hi; pl++) {
        float *o = out + pl * H * W;
        memset(o, 0, (size_t)(H * W) * sizeof(float));
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t bh, bw;
                float v;
                argmax_window(x, pl / C, pl % C, oh, ow, k, st, pad, &bh, &bw, &v);
                if (bh >= 0) o[bh * W + bw] += rd(gy, pl / C, pl % C, oh, ow);
            }
    }
}

/* Generic strided copy of `src` (any ndim <= 6, f32) into the dense block of dst that starts at
 * element offset dst_off with dst's strides; rows of the innermost dim are split over threads. */
static void copy_into(const nu_compute_params *p, const nu_tensor *src, nu_tensor *dst, const int64_t *dst_start) {
    int nd = src->ndim;
    int64_t rows = nu_nelements(src) / (src->ne[nd - 1] ? src->ne[nd - 1] : 1);
    if (src->ne[nd - 1] == 0) return;
    int64_t lo, hi;
    nu_split(rows, p->ith, p->nth, &lo, &hi);
    int64_t W = src->ne[nd - 1];
    for (int64_t r = lo; r < hi; r++) {
        int64_t rem = r;
        const char *s = src->data;
        char *d = (char *)dst->data;
        for (int dd = nd - 2; dd >= 0; dd--) {
            int64_t i = rem % src->ne[dd];
            rem /= src->ne[dd];
            s += i * src->nb[dd];
            d += (i + dst_start[dd]) * dst->nb[dd];
        }
        d += dst_start[nd - 1] * dst->nb[nd - 1];
        if (src->nb[nd - 1] == 4) {
            memcpy(d, s, (size_t)W * 4);
        } else {
            for (int64_t w = 0; w < W; w++) ((float *)d)[w] = *(const float *)(s + w * src->nb[nd - 1]);
        }
    }
}

static void k_concat(const nu_compute_params *p, nu_tensor *dst) {
    int dim = dst->params[0];
    int64_t start[NU_MAX_DIMS] = {0};
    copy_into(p, dst->src[0], dst, start);
    start[dim] = dst->src[0]->ne[dim];
    copy_into(p, dst->src[1], dst, start);
}

static void k_pad(const nu_compute_params *p, nu_tensor *dst) {
    /* zero the whole output (split by bytes), barrier, then copy the interior */
    size_t n = nu_nbytes(dst);
    int64_t lo, hi;
    nu_split((int64_t)n, p->ith, p->nth, &lo, &hi);
    memset((char *)dst->data + lo, 0, (size_t)(hi - lo));
    nu_compute_barrier(p);
    int64_t start[NU_MAX_DIMS] = {0};
    for (int d = 0; d < dst->ndim; d++) start[d] = dst->params[2 * d];
    copy_into(p, dst->src[0], dst, start);
}

void nu_cpu_register_spatial(nu_cpu_kernel *tab) {
    tab[NU_OP_UPSAMPLE_NEAREST].forward = k_upsample;
    tab[NU_OP_AVG_POOL2D].forward = k_avg_pool;
    tab[NU_OP_AVG_POOL2D_BACKWARD].forward = k_avg_pool_bw;
    tab[NU_OP_MAX_POOL2D].forward = k_max_pool;
    tab[NU_OP_MAX_POOL2D_BACKWARD].forward = k_max_pool_bw;
    tab[NU_OP_CONCAT].forward = k_concat;
    tab[NU_OP_PAD].forward = k_pad;
}
