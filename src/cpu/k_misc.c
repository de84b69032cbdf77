/*
 * k_misc.c — CPU kernels of the misc family: timestep embedding, embedding lookup and its
 * backward, dropout. None is speed-critical (they touch O(T*D) values once), so each kernel is a
 * single scalar implementation that serves as both twin and fast path.
 * Tested by tests/test_op_misc.c.
 */
#include <math.h>

#include "core/internal.h"

/* diffusers get_timestep_embedding, computed in f32 like the reference:
 *   half = dim/2; freq[i] = exp(-ln(max_period) * i / (half - shift)); arg = t * freq
 *   emb = [sin(arg) | cos(arg)] (or [cos | sin] with flip_sin_to_cos); odd dim: a zero column. */
static void k_timestep(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *t = dst->src[0];
    int dim = dst->params[0], flip = dst->params[1];
    float shift = nu_get_param_f(dst, 2), max_period = nu_get_param_f(dst, 3);
    int half = dim / 2;
    int64_t lo, hi;
    nu_split(t->ne[0], p->ith, p->nth, &lo, &hi);
    for (int64_t n = lo; n < hi; n++) {
        float tv;
        nu_row_to_f32(t->type, (const char *)t->data + n * t->nb[0], &tv, 1);
        float *o = (float *)dst->data + n * dim;
        for (int i = 0; i < half; i++) {
            float expo = -logf(max_period) * (float)i;
            expo = expo / ((float)half - shift);
            float arg = tv * expf(expo);
            float s = sinf(arg), c = cosf(arg);
            o[i] = flip ? c : s;
            o[half + i] = flip ? s : c;
        }
        if (dim % 2) o[dim - 1] = 0.0f;
    }
}

static int64_t read_id(const nu_tensor *ids, int64_t i) {
    /* ids are contiguous-or-strided 1..5-d; walk the logical index */
    int64_t rem = i;
    const char *ptr = ids->data;
    for (int d = ids->ndim - 1; d >= 0; d--) {
        ptr += (rem % ids->ne[d]) * ids->nb[d];
        rem /= ids->ne[d];
    }
    return ids->type == NU_TYPE_I64 ? *(const int64_t *)ptr : *(const int32_t *)ptr;
}

static void k_embedding(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *table = dst->src[0], *ids = dst->src[1];
    int64_t V = table->ne[0], D = table->ne[1], n = nu_nelements(ids);
    int64_t lo, hi;
    nu_split(n, p->ith, p->nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        int64_t id = read_id(ids, i);
        float *o = (float *)dst->data + i * D;
        if (id < 0 || id >= V) { /* out-of-range ids give a NaN row rather than reading out of bounds */
            for (int64_t d = 0; d < D; d++) o[d] = NAN;
            continue;
        }
        const char *row = (const char *)table->data + id * table->nb[0];
        if (table->nb[1] == (int64_t)nu_type_info(table->type)->size || nu_type_info(table->type)->is_quant) {
            nu_row_to_f32(table->type, row, o, D);
        } else {
            for (int64_t d = 0; d < D; d++) nu_row_to_f32(table->type, row + d * table->nb[1], &o[d], 1);
        }
    }
}

/* dtable[v, :] = sum of gy rows whose id is v. Threads split the D columns, so each writes its own
 * columns of every row and the summation order (increasing i) is the same for any thread count. */
static void k_embedding_bw(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *gy = dst->src[0], *ids = dst->src[1];
    int64_t V = dst->ne[0], D = dst->ne[1], n = nu_nelements(ids);
    int64_t lo, hi;
    nu_split(D, p->ith, p->nth, &lo, &hi);
    float *o = dst->data;
    for (int64_t v = 0; v < V; v++)
        for (int64_t d = lo; d < hi; d++) o[v * D + d] = 0.0f;
    int gd = gy->ndim;
    for (int64_t i = 0; i < n; i++) {
        int64_t id = read_id(ids, i);
        if (id < 0 || id >= V) continue;
        /* gy row i: gy is [..ids.., D]; walk its strides */
        int64_t rem = i;
        const char *row = gy->data;
        for (int d = gd - 2; d >= 0; d--) {
            row += (rem % gy->ne[d]) * gy->nb[d];
            rem /= gy->ne[d];
        }
        for (int64_t d = lo; d < hi; d++) o[id * D + d] += *(const float *)(row + d * gy->nb[gd - 1]);
    }
}

/* SplitMix64 finaliser: a counter-based generator, so element i's mask depends only on (seed, i)
 * and is identical for any thread split, in forward and backward. */
static inline uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void k_dropout(const nu_compute_params *p, nu_tensor *dst) {
    const nu_tensor *a = dst->src[0];
    float prob = nu_get_param_f(dst, 0);
    uint64_t seed = (uint64_t)nu_get_param_i64(dst, 1);
    float keep_scale = 1.0f / (1.0f - prob);
    /* keep when the top 24 bits, as a uniform in [0,1), are >= p */
    uint32_t thresh = (uint32_t)((double)prob * 16777216.0);
    int64_t n = nu_nelements(dst);
    int64_t lo, hi;
    nu_split(n, p->ith, p->nth, &lo, &hi);
    float *o = dst->data;
    bool contig = nu_is_contiguous(a);
    for (int64_t i = lo; i < hi; i++) {
        float x;
        if (contig) {
            x = ((const float *)a->data)[i];
        } else {
            int64_t rem = i;
            const char *ptr = a->data;
            for (int d = a->ndim - 1; d >= 0; d--) {
                ptr += (rem % a->ne[d]) * a->nb[d];
                rem /= a->ne[d];
            }
            x = *(const float *)ptr;
        }
        uint32_t u = (uint32_t)(mix64(seed ^ mix64((uint64_t)i)) >> 40);
        o[i] = u >= thresh ? x * keep_scale : 0.0f;
    }
}

void nu_cpu_register_misc(nu_cpu_kernel *tab) {
    tab[NU_OP_TIMESTEP_EMBEDDING].forward = k_timestep;
    tab[NU_OP_EMBEDDING].forward = k_embedding;
    tab[NU_OP_EMBEDDING_BACKWARD].forward = k_embedding_bw;
    tab[NU_OP_DROPOUT].forward = k_dropout;
}
