/*
 * k_matmul.c — CPU kernel of NU_OP_MATMUL: dst[..., M, N] = op(a)[..., M, K] @ op(b)[..., K, N]
 * with broadcast batch dims, on top of the GEMM in gemm.c (fast: OpenBLAS + tiled dequantization
 * of f16/bf16/q* weights; reference: naive loop with double accumulation).
 *
 * Layout: each operand's last two dims must have one unit stride (the builder inserts
 * nu_contiguous otherwise); a view whose unit stride is on the row dim is passed to BLAS as the
 * transposed matrix (flag flipped), so permuted/transposed views cost no copy. dst is contiguous.
 * Threads: with many batches (a multiple of nth, or >= 4*nth) each thread runs whole GEMMs;
 * otherwise every GEMM is split over all threads (gemm.c). Tested by tests/test_op_matmul.c.
 */
#include "cpu/gemm.h"

/* A 2-D matrix view (r x c, element strides rs, cs) as row-major storage for BLAS: either the
 * view itself (trans = false, leading dim ld) or its transpose (trans = true). */
static bool blas_layout(int64_t r, int64_t c, int64_t rs, int64_t cs, bool *trans, int64_t *ld) {
    if (cs == 1 && (r == 1 || rs >= c)) {
        *trans = false;
        *ld = r == 1 ? (c > 0 ? c : 1) : rs;
        return true;
    }
    if (rs == 1 && (c == 1 || cs >= r)) {
        *trans = true;
        *ld = c == 1 ? (r > 0 ? r : 1) : cs;
        return true;
    }
    if (c == 1 && rs >= 1) {
        *trans = false;
        *ld = rs;
        return true;
    }
    if (r == 1 && cs >= 1) {
        *trans = true;
        *ld = cs;
        return true;
    }
    return false;
}

typedef struct {
    nu_gemm_args g; /* one batch's GEMM (a, b, c pointers of batch 0) */
    int64_t nbatch;
} mm_plan;

static void plan(const nu_tensor *dst, mm_plan *pl) {
    const nu_tensor *a = dst->src[0], *b = dst->src[1];
    const bool ta = dst->params[0] != 0, tb = dst->params[1] != 0;
    const int nd = dst->ndim;
    nu_gemm_args *g = &pl->g;
    memset(pl, 0, sizeof *pl);
    g->M = dst->ne[nd - 2];
    g->N = dst->ne[nd - 1];
    g->K = ta ? a->ne[a->ndim - 2] : a->ne[a->ndim - 1];
    g->alpha = 1.0f;
    g->beta = 0.0f;
    bool tr;
    int64_t ld;
    NU_ASSERT(a->type == NU_TYPE_F32);
    NU_ASSERT(blas_layout(a->ne[a->ndim - 2], a->ne[a->ndim - 1], a->nb[a->ndim - 2] / 4, a->nb[a->ndim - 1] / 4, &tr,
                          &ld));
    g->ta = ta != tr;
    g->lda = ld;
    g->btype = b->type;
    const nu_type_traits *bt = nu_type_info(b->type);
    const int64_t br = b->ne[b->ndim - 2], bc = b->ne[b->ndim - 1];
    if (bt->is_quant) {
        NU_ASSERT((size_t)b->nb[b->ndim - 1] == bt->size);
        g->tb = tb;
        g->ldb = br == 1 ? nu_row_size(b->type, bc) : (size_t)b->nb[b->ndim - 2];
    } else {
        const int64_t es = (int64_t)bt->size;
        NU_ASSERT(blas_layout(br, bc, b->nb[b->ndim - 2] / es, b->nb[b->ndim - 1] / es, &tr, &ld));
        g->tb = tb != tr;
        g->ldb = (size_t)(ld * es);
    }
    g->ldc = g->N;
    pl->nbatch = 1;
    for (int d = 0; d < nd - 2; d++) pl->nbatch *= dst->ne[d];
}

/* Byte offset of batch i in t (t's batch dims aligned right with dst's, size-1 dims broadcast). */
static size_t batch_offset(const nu_tensor *dst, const nu_tensor *t, int64_t i) {
    size_t off = 0;
    const int nd = dst->ndim, shift = nd - t->ndim;
    for (int d = nd - 3; d >= 0; d--) {
        int64_t idx = i % dst->ne[d];
        i /= dst->ne[d];
        int dt = d - shift;
        if (dt >= 0 && t->ne[dt] > 1) off += (size_t)(idx * t->nb[dt]);
    }
    return off;
}

static size_t matmul_work(const nu_tensor *dst, int nth) {
    mm_plan pl;
    plan(dst, &pl);
    return nu_gemm_thread_work(&pl.g) * (size_t)nth;
}

static void k_matmul(const nu_compute_params *p, nu_tensor *dst) {
    mm_plan pl;
    plan(dst, &pl);
    const nu_tensor *a = dst->src[0], *b = dst->src[1];
    const bool fast = nu_cpu_use_fast(p);
    const size_t per = nu_gemm_thread_work(&pl.g);
    NU_ASSERT(per * (size_t)p->nth <= p->wsize);
    void *work = per ? (char *)p->wdata + per * (size_t)p->ith : NULL;
    const size_t c_stride = (size_t)(pl.g.M * pl.g.N);
    const bool by_batch = p->nth > 1 && pl.nbatch >= p->nth && (pl.nbatch % p->nth == 0 || pl.nbatch >= 4 * p->nth);
    int64_t lo = 0, hi = pl.nbatch;
    if (by_batch) nu_split(pl.nbatch, p->ith, p->nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        nu_gemm_args g = pl.g;
        g.a = (const float *)((const char *)a->data + batch_offset(dst, a, i));
        g.b = (const char *)b->data + batch_offset(dst, b, i);
        g.c = (float *)dst->data + (size_t)i * c_stride;
        if (by_batch) nu_gemm_part(&g, 0, 1, work, fast);
        else nu_gemm_part(&g, p->ith, p->nth, work, fast);
    }
}

double nu_matmul_node_flops(const nu_tensor *node) {
    NU_ASSERT(node->op == NU_OP_MATMUL);
    mm_plan pl;
    plan(node, &pl);
    return nu_gemm_flops(pl.g.M, pl.g.N, pl.g.K) * (double)pl.nbatch;
}

void nu_cpu_register_matmul(nu_cpu_kernel *tab) {
    tab[NU_OP_MATMUL].forward = k_matmul;
    tab[NU_OP_MATMUL].work_size = matmul_work;
}
