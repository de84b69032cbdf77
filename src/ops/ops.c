/*
 * ops.c — the op table (filled by each family's nu_ops_register_<family>) and the core family:
 * views (reshape, permute, transpose, slice, generic) with their backward rules.
 * Tested by tests/test_core.c (views, view gradients).
 */
#include <pthread.h>

#include "core/internal.h"

static nu_op_def op_defs[NU_OP_COUNT];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_table(void) {
#define NU_OP(e, nm, fam) op_defs[NU_OP_##e].name = nm;
#include "ops/ops.def"
#undef NU_OP
#define NU_REG(fam) nu_ops_register_##fam(op_defs);
    NU_FAMILIES(NU_REG)
#undef NU_REG
}

const nu_op_def *nu_op_get(int op) {
    NU_ASSERT(op >= 0 && op < NU_OP_COUNT);
    pthread_once(&once, init_table);
    return &op_defs[op];
}

const char *nu_op_name(int op) { return nu_op_get(op)->name; }

/* ---------------------------------------------------------------- views */

static nu_tensor *new_view(nu_ctx *ctx, nu_tensor *a, int kind, int ndim, const int64_t *ne) {
    nu_tensor *t = nu_new_node(ctx, NU_OP_VIEW, a->type, ndim, ne);
    t->view_src = a;
    t->src[0] = a;
    t->params[0] = kind;
    return t;
}

nu_tensor *nu_view(nu_ctx *ctx, nu_tensor *a, int ndim, const int64_t *ne, const int64_t *nb, size_t offs) {
    nu_tensor *t = new_view(ctx, a, NU_VIEW_GENERIC, ndim, ne);
    for (int d = 0; d < ndim; d++) t->nb[d] = nb[d];
    t->view_offs = offs;
    NU_ASSERT(offs + nu_nbytes(t) <= nu_nbytes(a) + a->extra);
    if (a->data) t->data = (char *)a->data + offs;
    /* a view of a view is a view of the base */
    if (a->view_src) {
        t->view_offs += a->view_offs;
        t->view_src = a->view_src;
    }
    return t;
}

nu_tensor *nu_reshape(nu_ctx *ctx, nu_tensor *a, int ndim, const int64_t *ne) {
    if (!nu_is_contiguous(a)) a = nu_contiguous(ctx, a);
    nu_tensor *t = new_view(ctx, a, NU_VIEW_RESHAPE, ndim, ne);
    NU_ASSERT(nu_nelements(t) == nu_nelements(a));
    if (a->view_src) {
        t->view_src = a->view_src;
        t->view_offs = a->view_offs;
    }
    if (a->data) t->data = a->data;
    return t;
}

nu_tensor *nu_permute(nu_ctx *ctx, nu_tensor *a, const int *perm) {
    NU_ASSERT(!nu_type_info(a->type)->is_quant);
    int64_t ne[NU_MAX_DIMS];
    unsigned seen = 0;
    for (int d = 0; d < a->ndim; d++) {
        NU_ASSERT(perm[d] >= 0 && perm[d] < a->ndim && !(seen & (1u << perm[d])));
        seen |= 1u << perm[d];
        ne[d] = a->ne[perm[d]];
    }
    nu_tensor *t = new_view(ctx, a, NU_VIEW_PERMUTE, a->ndim, ne);
    for (int d = 0; d < a->ndim; d++) {
        t->nb[d] = a->nb[perm[d]];
        t->params[1 + d] = perm[d];
    }
    if (a->view_src) {
        t->view_src = a->view_src;
        t->view_offs = a->view_offs;
    }
    if (a->data) t->data = a->data;
    return t;
}

nu_tensor *nu_transpose(nu_ctx *ctx, nu_tensor *a, int d0, int d1) {
    d0 = nu_norm_dim(a, d0);
    d1 = nu_norm_dim(a, d1);
    int perm[NU_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) perm[d] = d;
    perm[d0] = d1;
    perm[d1] = d0;
    return nu_permute(ctx, a, perm);
}

nu_tensor *nu_slice(nu_ctx *ctx, nu_tensor *a, int dim, int64_t start, int64_t end) {
    dim = nu_norm_dim(a, dim);
    if (start < 0) start += a->ne[dim];
    if (end < 0) end += a->ne[dim];
    if (end > a->ne[dim]) end = a->ne[dim];
    NU_ASSERT(start >= 0 && start <= end);
    NU_ASSERT(!nu_type_info(a->type)->is_quant || dim < a->ndim - 1);
    int64_t ne[NU_MAX_DIMS];
    memcpy(ne, a->ne, sizeof ne);
    ne[dim] = end - start;
    nu_tensor *t = new_view(ctx, a, NU_VIEW_SLICE, a->ndim, ne);
    memcpy(t->nb, a->nb, sizeof t->nb);
    t->view_offs = (size_t)(start * a->nb[dim]);
    t->params[1] = dim;
    nu_set_param_i64(t, 2, start);
    if (a->view_src) {
        t->view_src = a->view_src;
        t->view_offs += a->view_offs;
    }
    if (a->data) t->data = (char *)a->data + start * a->nb[dim];
    return t;
}

static void view_backward(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy) {
    nu_tensor *a = node->src[0];
    switch (node->params[0]) {
    case NU_VIEW_RESHAPE:
        nu_grad_accumulate(ctx, a, nu_reshape(ctx, gy, a->ndim, a->ne));
        break;
    case NU_VIEW_PERMUTE: {
        int inv[NU_MAX_DIMS];
        for (int d = 0; d < node->ndim; d++) inv[node->params[1 + d]] = d;
        nu_grad_accumulate(ctx, a, nu_permute(ctx, gy, inv));
        break;
    }
    case NU_VIEW_SLICE: {
        int dim = node->params[1];
        int64_t start = nu_get_param_i64(node, 2);
        int pad[2 * NU_MAX_DIMS] = {0};
        pad[2 * dim] = (int)start;
        pad[2 * dim + 1] = (int)(a->ne[dim] - start - node->ne[dim]);
        nu_grad_accumulate(ctx, a, nu_pad(ctx, gy, pad));
        break;
    }
    default:
        nu_abort(__FILE__, __LINE__, "backward through a generic view ('%s') is not defined", node->name);
    }
}

void nu_ops_register_core(nu_op_def *tab) { tab[NU_OP_VIEW].backward = view_backward; }
void nu_cpu_register_core(nu_cpu_kernel *tab) { (void)tab; }
