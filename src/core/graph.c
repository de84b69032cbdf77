/*
 * graph.c — graphs: topological expansion, autodiff (backward as a graph transform), the
 * liveness-based activation allocator, and execution on the thread pool.
 *
 * Allocation: every node that owns memory (not a view, no data yet) is placed in one activation
 * buffer by a best-fit free list walked in execution order; a tensor's block is released right
 * after its last consumer (directly or through views) has been scheduled, unless it is an
 * output. nu_graph_liveness_bound() computes the lower bound (max over steps of live bytes) so
 * tests can check that fragmentation costs nothing on simple chains.
 * Tested by tests/test_core.c.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/internal.h"

bool nu_pool_cancelled(nu_pool *pool);
void nu_pool_reset_cancel(nu_pool *pool);

struct nu_graph {
    nu_ctx *ctx;
    nu_tensor **nodes; /* all tensors in topological order (leaves included) */
    int n, cap;
    int n_forward;     /* nodes before nu_graph_backward appended gradients  */
    /* allocation */
    unsigned char *buffer;
    size_t buffer_size;
    size_t peak, bound;
    bool allocated;
    /* execution */
    void *wdata;
    size_t wsize;
};

nu_graph *nu_graph_new(nu_ctx *ctx) {
    nu_graph *g = calloc(1, sizeof *g);
    NU_ASSERT(g);
    g->ctx = ctx;
    return g;
}

void nu_graph_free(nu_graph *g) {
    if (!g) return;
    for (int i = 0; i < g->n; i++) {
        nu_tensor *t = g->nodes[i];
        t->flags &= ~NU_FLAG_VISITED;
        /* tensors placed in this graph's buffer (and views of them) lose their data, so the
         * same nodes can be allocated again by another graph */
        if (g->allocated && (t->flags & NU_FLAG_GRAPH_DATA)) {
            t->data = NULL;
            t->flags &= ~NU_FLAG_GRAPH_DATA;
        }
    }
    free(g->nodes);
    free(g->buffer);
    free(g->wdata);
    free(g);
}

int nu_graph_n_nodes(const nu_graph *g) { return g->n; }
nu_tensor *nu_graph_node(const nu_graph *g, int i) {
    NU_ASSERT(i >= 0 && i < g->n);
    return g->nodes[i];
}

static void push(nu_graph *g, nu_tensor *t) {
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 256;
        g->nodes = realloc(g->nodes, (size_t)g->cap * sizeof *g->nodes);
        NU_ASSERT(g->nodes);
    }
    g->nodes[g->n++] = t;
}

/* Iterative post-order DFS (models have thousands of nodes; no recursion depth issues). */
static void visit(nu_graph *g, nu_tensor *root) {
    if (!root || (root->flags & NU_FLAG_VISITED)) return;
    enum { MAXSTACK = 1 << 16 };
    typedef struct { nu_tensor *t; int next; } frame;
    frame *stack = malloc(sizeof(frame) * MAXSTACK);
    NU_ASSERT(stack);
    int sp = 0;
    stack[sp++] = (frame){root, 0};
    root->flags |= NU_FLAG_VISITED;
    while (sp > 0) {
        frame *f = &stack[sp - 1];
        nu_tensor *child = NULL;
        while (f->next <= NU_MAX_SRC && !child) {
            nu_tensor *c = f->next < NU_MAX_SRC ? f->t->src[f->next] : f->t->view_src;
            f->next++;
            if (c && !(c->flags & NU_FLAG_VISITED)) child = c;
        }
        if (child) {
            NU_ASSERT(sp < MAXSTACK);
            child->flags |= NU_FLAG_VISITED;
            stack[sp++] = (frame){child, 0};
        } else {
            push(g, f->t);
            sp--;
        }
    }
    free(stack);
}

void nu_graph_expand(nu_graph *g, nu_tensor *t) {
    NU_ASSERT(!g->allocated);
    visit(g, t);
    t->flags |= NU_FLAG_OUTPUT;
    g->n_forward = g->n;
}

/* ---------------------------------------------------------------- autodiff */

nu_tensor *nu_reduce_to_shape(nu_ctx *ctx, nu_tensor *g, const nu_tensor *t) {
    if (nu_same_shape(g, t)) return g;
    return nu_sum_to(ctx, g, t->ndim, t->ne);
}

void nu_grad_accumulate(nu_ctx *ctx, nu_tensor *src, nu_tensor *g) {
    if (!nu_needs_grad(src)) return;
    g = nu_reduce_to_shape(ctx, g, src);
    NU_ASSERT(nu_same_shape(g, src));
    src->grad = src->grad ? nu_add(ctx, src->grad, g) : g;
}

void nu_graph_backward(nu_graph *g, nu_tensor *loss) {
    NU_ASSERT(!g->allocated);
    NU_ASSERT(nu_nelements(loss) == 1 && loss->type == NU_TYPE_F32);
    int n_fwd = g->n;
    /* 1. which tensors depend on a parameter */
    for (int i = 0; i < n_fwd; i++) {
        nu_tensor *t = g->nodes[i];
        bool need = (t->flags & NU_FLAG_PARAM) != 0;
        for (int s = 0; s < NU_MAX_SRC && !need; s++) need = nu_needs_grad(t->src[s]);
        if (t->view_src && nu_needs_grad(t->view_src)) need = true;
        if (need) t->flags |= NU_FLAG_NEEDS_GRAD;
        else t->flags &= ~NU_FLAG_NEEDS_GRAD;
        t->grad = NULL;
    }
    /* 2. seed dL/dloss = 1, then apply each op's rule in reverse order */
    nu_tensor *one = nu_scalar_f32(g->ctx, 1.0f);
    loss->grad = loss->ndim == 1 ? one : nu_reshape(g->ctx, one, loss->ndim, loss->ne);
    for (int i = n_fwd - 1; i >= 0; i--) {
        nu_tensor *t = g->nodes[i];
        if (!t->grad || !nu_needs_grad(t) || t->op == NU_OP_NONE) continue;
        const nu_op_def *def = nu_op_get(t->op);
        if (!def->backward)
            nu_abort(__FILE__, __LINE__, "op %s has no backward rule (node '%s')", def->name, t->name);
        def->backward(g->ctx, t, t->grad);
    }
    /* 3. parameter gradients become outputs of the graph */
    for (int i = 0; i < n_fwd; i++) {
        nu_tensor *t = g->nodes[i];
        if ((t->flags & NU_FLAG_PARAM) && t->grad) {
            if (t->grad->type != NU_TYPE_F32 || t->grad->data) t->grad = nu_cast(g->ctx, t->grad, NU_TYPE_F32);
            visit(g, t->grad);
            t->grad->flags |= NU_FLAG_OUTPUT;
            if (!t->grad->name[0]) nu_set_name(t->grad, "grad(%s)", t->name);
        }
    }
    g->n_forward = n_fwd;
}

/* ---------------------------------------------------------------- allocation */

static nu_tensor *base_of(nu_tensor *t) {
    while (t->view_src) t = t->view_src;
    return t;
}

/* A node owns activation memory if it is not a view and has no data of its own yet; a leaf
 * only if it is a graph input (its data is set by the caller after allocation). */
static bool owns_memory(const nu_tensor *t) {
    return !t->view_src && !t->data && (t->op != NU_OP_NONE || (t->flags & NU_FLAG_INPUT));
}

static size_t alloc_size(const nu_tensor *t) { return ((nu_nbytes(t) + t->extra) + 63) & ~(size_t)63; }

typedef struct { size_t off, size; } block;
typedef struct {
    block *free;
    int n, cap;
    size_t end;
} freelist;

static size_t fl_alloc(freelist *fl, size_t size) {
    int best = -1;
    for (int i = 0; i < fl->n; i++)
        if (fl->free[i].size >= size && (best < 0 || fl->free[i].size < fl->free[best].size)) best = i;
    if (best >= 0) {
        size_t off = fl->free[best].off;
        fl->free[best].off += size;
        fl->free[best].size -= size;
        if (fl->free[best].size == 0) fl->free[best] = fl->free[--fl->n];
        return off;
    }
    /* grow: extend a free block touching the end, if any */
    for (int i = 0; i < fl->n; i++) {
        if (fl->free[i].off + fl->free[i].size == fl->end) {
            size_t off = fl->free[i].off;
            fl->end = off + size;
            fl->free[i] = fl->free[--fl->n];
            return off;
        }
    }
    size_t off = fl->end;
    fl->end += size;
    return off;
}

static void fl_release(freelist *fl, size_t off, size_t size) {
    /* merge with neighbours */
    for (int i = 0; i < fl->n; i++) {
        if (fl->free[i].off + fl->free[i].size == off) {
            off = fl->free[i].off;
            size += fl->free[i].size;
            fl->free[i--] = fl->free[--fl->n];
        } else if (off + size == fl->free[i].off) {
            size += fl->free[i].size;
            fl->free[i--] = fl->free[--fl->n];
        }
    }
    if (fl->n == fl->cap) {
        fl->cap = fl->cap ? fl->cap * 2 : 64;
        fl->free = realloc(fl->free, (size_t)fl->cap * sizeof(block));
        NU_ASSERT(fl->free);
    }
    fl->free[fl->n++] = (block){off, size};
}

nu_status nu_graph_alloc(nu_graph *g) {
    NU_ASSERT(!g->allocated);
    int n = g->n;
    for (int i = 0; i < n; i++) {
        nu_tensor *t = g->nodes[i];
        if (t->op == NU_OP_NONE && !t->data && !(t->flags & NU_FLAG_INPUT))
            return nu_error(NU_ERR_INVALID_ARG, "tensor '%s' has no data (give it data, or mark it nu_set_input)",
                            t->name[0] ? t->name : "(unnamed)");
    }
    int *last = malloc(sizeof(int) * (size_t)(n ? n : 1));
    size_t *offs = malloc(sizeof(size_t) * (size_t)(n ? n : 1));
    if (!last || !offs) {
        free(last);
        free(offs);
        return nu_error(NU_ERR_NOMEM, "graph allocation: out of memory");
    }
    /* index of each tensor = position; we store it temporarily in a side table via search */
    /* last use of each base tensor: the last node that reads it directly or through a view */
    for (int i = 0; i < n; i++) {
        last[i] = i;
        offs[i] = (size_t)-1;
    }
    /* map tensor -> index using the grad field would be intrusive; use a small open hash */
    size_t hcap = 1;
    while (hcap < (size_t)n * 2 + 2) hcap <<= 1;
    nu_tensor **hk = calloc(hcap, sizeof *hk);
    int *hv = calloc(hcap, sizeof *hv);
    NU_ASSERT(hk && hv);
#define HSLOT(t) ((((uintptr_t)(t)) >> 6) * 0x9E3779B97F4A7C15ull & (hcap - 1))
    for (int i = 0; i < n; i++) {
        size_t h = HSLOT(g->nodes[i]);
        while (hk[h]) h = (h + 1) & (hcap - 1);
        hk[h] = g->nodes[i];
        hv[h] = i;
    }
#define HFIND(t, out)                                                                          \
    do {                                                                                       \
        size_t h_ = HSLOT(t);                                                                  \
        while (hk[h_] != (t)) h_ = (h_ + 1) & (hcap - 1);                                      \
        out = hv[h_];                                                                          \
    } while (0)
    for (int i = 0; i < n; i++) {
        nu_tensor *t = g->nodes[i];
        for (int s = 0; s <= NU_MAX_SRC; s++) {
            nu_tensor *c = s < NU_MAX_SRC ? t->src[s] : t->view_src;
            if (!c) continue;
            int bi;
            HFIND(base_of(c), bi);
            if (last[bi] < i) last[bi] = i;
        }
    }
    bool *keep = calloc((size_t)(n ? n : 1), 1);
    bool *released = calloc((size_t)(n ? n : 1), 1);
    NU_ASSERT(keep && released);
    for (int i = 0; i < n; i++) {
        nu_tensor *t = g->nodes[i];
        if (t->flags & (NU_FLAG_OUTPUT | NU_FLAG_INPUT)) {
            int bi;
            HFIND(base_of(t), bi);
            keep[bi] = true;
        }
    }
    /* walk in order; track the liveness bound alongside */
    freelist fl = {0};
    size_t live = 0, bound = 0;
    /* releases scheduled at step i: tensors whose last use is i */
    for (int i = 0; i < n; i++) {
        nu_tensor *t = g->nodes[i];
        if (owns_memory(t)) {
            offs[i] = fl_alloc(&fl, alloc_size(t));
            live += alloc_size(t);
            if (live > bound) bound = live;
        }
        /* release every owned tensor whose last use is this step */
        for (int s = 0; s <= NU_MAX_SRC + 1; s++) {
            nu_tensor *c = s < NU_MAX_SRC ? t->src[s] : s == NU_MAX_SRC ? t->view_src : t;
            if (!c) continue;
            int bi;
            HFIND(base_of(c), bi);
            nu_tensor *b = g->nodes[bi];
            if (last[bi] == i && owns_memory(b) && !keep[bi] && !released[bi]) {
                fl_release(&fl, offs[bi], alloc_size(b));
                live -= alloc_size(b);
                released[bi] = true;
            }
        }
    }
    free(fl.free);
    size_t total = fl.end;
    g->buffer = total ? aligned_alloc(64, total) : NULL;
    if (total && !g->buffer) {
        free(last); free(offs); free(hk); free(hv); free(keep); free(released);
        return nu_error(NU_ERR_NOMEM, "graph allocation: cannot allocate %zu MiB of activations", total >> 20);
    }
    g->buffer_size = total;
    g->peak = total;
    g->bound = bound;
    for (int i = 0; i < n; i++)
        if (owns_memory(g->nodes[i])) {
            g->nodes[i]->data = g->buffer + offs[i];
            g->nodes[i]->flags |= NU_FLAG_GRAPH_DATA;
        }
    for (int i = 0; i < n; i++) {
        nu_tensor *t = g->nodes[i];
        if (t->view_src && (t->view_src->flags & NU_FLAG_GRAPH_DATA)) {
            t->data = (char *)t->view_src->data + t->view_offs;
            t->flags |= NU_FLAG_GRAPH_DATA;
        }
    }
#undef HSLOT
#undef HFIND
    free(last); free(offs); free(hk); free(hv); free(keep); free(released);
    g->allocated = true;
    return NU_OK;
}

size_t nu_graph_peak_bytes(const nu_graph *g) { return g->peak; }
size_t nu_graph_liveness_bound(const nu_graph *g) { return g->bound; }

/* ---------------------------------------------------------------- execution */

typedef struct {
    nu_graph *g;
    nu_pool *pool;
    bool use_ref;
    atomic_bool stop;
} run_state;

static void run_thread(int ith, int nth, void *arg) {
    run_state *rs = arg;
    nu_graph *g = rs->g;
    nu_compute_params p = {ith, nth, g->wdata, g->wsize, rs->use_ref, rs->pool};
    for (int i = 0; i < g->n; i++) {
        nu_tensor *t = g->nodes[i];
        if (t->op == NU_OP_NONE || t->op == NU_OP_VIEW) continue;
        const nu_cpu_kernel *k = nu_cpu_kernel_get(t->op);
        if (!k->forward) nu_abort(__FILE__, __LINE__, "op %s has no CPU kernel", nu_op_name(t->op));
        k->forward(&p, t);
        if (ith == 0 && nu_pool_cancelled(rs->pool)) atomic_store(&rs->stop, true);
        nu_compute_barrier(&p);
        if (atomic_load(&rs->stop)) return;
    }
}

nu_status nu_graph_compute_opts(nu_graph *g, nu_pool *pool, const nu_compute_opts *opts) {
    if (!g->allocated) {
        nu_status s = nu_graph_alloc(g);
        if (s != NU_OK) return s;
    }
    int nth = nu_pool_n_threads(pool);
    size_t need = 0;
    for (int i = 0; i < g->n; i++) {
        nu_tensor *t = g->nodes[i];
        if (t->op == NU_OP_NONE || t->op == NU_OP_VIEW) continue;
        const nu_cpu_kernel *k = nu_cpu_kernel_get(t->op);
        if (k->work_size) {
            size_t w = k->work_size(t, nth);
            if (w > need) need = w;
        }
    }
    if (need > g->wsize) {
        free(g->wdata);
        g->wdata = aligned_alloc(64, (need + 63) & ~(size_t)63);
        if (!g->wdata) {
            g->wsize = 0;
            return nu_error(NU_ERR_NOMEM, "graph compute: cannot allocate %zu MiB work buffer", need >> 20);
        }
        g->wsize = need;
    }
    run_state rs = {.g = g, .pool = pool, .use_ref = opts && opts->use_ref};
    atomic_init(&rs.stop, false);
    nu_pool_run(pool, run_thread, &rs);
    if (atomic_load(&rs.stop)) {
        nu_pool_reset_cancel(pool);
        return nu_error(NU_ERR_CANCELLED, "computation cancelled");
    }
    return NU_OK;
}

nu_status nu_graph_compute(nu_graph *g, nu_pool *pool) { return nu_graph_compute_opts(g, pool, NULL); }
