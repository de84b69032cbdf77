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
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"

bool nu_pool_cancelled(nu_pool *pool);
void nu_pool_reset_cancel(nu_pool *pool);

struct nu_graph {
    nu_ctx *ctx;
    nu_tensor **nodes; /* all tensors in topological order (leaves included) */
    int n, cap;
    int n_forward;     /* nodes before nu_graph_backward appended gradients  */
    /* tensor -> node index (-1 while on the DFS stack): open addressing, load <= 1/2 */
    nu_tensor **hk;
    int *hv;
    size_t hcap, hn;
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
        /* tensors placed in this graph's buffer (and views of them) lose their data, so the
         * same nodes can be allocated again by another graph */
        if (g->allocated && (t->flags & NU_FLAG_GRAPH_DATA)) {
            t->data = NULL;
            t->flags &= ~NU_FLAG_GRAPH_DATA;
        }
    }
    free(g->nodes);
    free(g->hk);
    free(g->hv);
    free(g->buffer);
    free(g->wdata);
    free(g);
}

int nu_graph_n_nodes(const nu_graph *g) { return g->n; }
nu_tensor *nu_graph_node(const nu_graph *g, int i) {
    NU_ASSERT(i >= 0 && i < g->n);
    return g->nodes[i];
}

/* ---- node index: which tensors this graph holds, and where */

static size_t hslot(const nu_graph *g, const nu_tensor *t) {
    return (size_t)(((uint64_t)(uintptr_t)t * 0x9E3779B97F4A7C15ull) >> 32) & (g->hcap - 1);
}

static int *hget(const nu_graph *g, const nu_tensor *t) {
    if (!g->hcap) return NULL;
    for (size_t h = hslot(g, t);; h = (h + 1) & (g->hcap - 1)) {
        if (!g->hk[h]) return NULL;
        if (g->hk[h] == t) return &g->hv[h];
    }
}

static void hput(nu_graph *g, nu_tensor *t, int v) {
    if (2 * (g->hn + 1) > g->hcap) {
        size_t old_cap = g->hcap;
        nu_tensor **ok = g->hk;
        int *ov = g->hv;
        g->hcap = old_cap ? old_cap * 2 : 512;
        g->hk = calloc(g->hcap, sizeof *g->hk);
        g->hv = calloc(g->hcap, sizeof *g->hv);
        NU_ASSERT(g->hk && g->hv);
        g->hn = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (ok[i]) hput(g, ok[i], ov[i]);
        free(ok);
        free(ov);
    }
    size_t h = hslot(g, t);
    while (g->hk[h]) h = (h + 1) & (g->hcap - 1);
    g->hk[h] = t;
    g->hv[h] = v;
    g->hn++;
}

/* Index of t in the graph; t must be a node of it. */
static int node_index(const nu_graph *g, const nu_tensor *t) {
    int *p = hget(g, t);
    NU_ASSERT(p && *p >= 0);
    return *p;
}

static void push(nu_graph *g, nu_tensor *t) {
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 256;
        g->nodes = realloc(g->nodes, (size_t)g->cap * sizeof *g->nodes);
        NU_ASSERT(g->nodes);
    }
    *hget(g, t) = g->n;
    g->nodes[g->n++] = t;
}

/* Iterative post-order DFS (models have thousands of nodes; no recursion depth issues). */
static void visit(nu_graph *g, nu_tensor *root) {
    if (!root || hget(g, root)) return;
    typedef struct { nu_tensor *t; int next; } frame;
    size_t cap = 1024, sp = 0;
    frame *stack = malloc(sizeof(frame) * cap);
    NU_ASSERT(stack);
    stack[sp++] = (frame){root, 0};
    hput(g, root, -1);
    while (sp > 0) {
        frame *f = &stack[sp - 1];
        nu_tensor *child = NULL;
        while (f->next <= NU_MAX_SRC && !child) {
            nu_tensor *c = f->next < NU_MAX_SRC ? f->t->src[f->next] : f->t->view_src;
            f->next++;
            if (c && !hget(g, c)) child = c;
        }
        if (child) {
            if (sp == cap) {
                cap *= 2;
                stack = realloc(stack, sizeof(frame) * cap);
                NU_ASSERT(stack);
            }
            hput(g, child, -1);
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
    if (!hget(g, loss)) nu_abort(__FILE__, __LINE__, "nu_graph_backward: expand the loss into the graph first");
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
            /* every parameter gets a dense, private f32 gradient: not a view (strided data), not
             * another parameter's gradient node, not a leaf */
            nu_tensor *gr = t->grad;
            if (gr->type != NU_TYPE_F32 || gr->data || gr->view_src || !nu_is_contiguous(gr) ||
                (gr->flags & NU_FLAG_OUTPUT) || gr->op == NU_OP_NONE)
                gr = nu_cast(g->ctx, gr, NU_TYPE_F32);
            t->grad = gr;
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

/* Offline placement, "greedy by size" (as in TFLite's arena planner): tensors sorted by size,
 * largest first; each goes to the lowest offset that does not overlap, in address, any placed
 * tensor whose lifetime [first, last] intersects its own. Lifetimes: inputs live from the start,
 * kept tensors (outputs, inputs) to the end. Writes offsets into offs only if the plan is
 * smaller than `current`; returns the plan's size (or SIZE_MAX if skipped). O(n^2) in the
 * number of owned tensors, so very large graphs keep the walk's placement. */
typedef struct { int idx, first, last; size_t off, size; } plan_item;

static int cmp_plan_size(const void *a, const void *b) {
    const plan_item *x = a, *y = b;
    if (x->size != y->size) return x->size < y->size ? 1 : -1;
    return x->first - y->first;
}

static int cmp_plan_off(const void *a, const void *b) {
    const plan_item *x = *(const plan_item *const *)a, *y = *(const plan_item *const *)b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static size_t plan_greedy_by_size(nu_graph *g, const int *last, const bool *keep, size_t *offs, size_t current) {
    int n = g->n, m = 0;
    for (int i = 0; i < n; i++) m += owns_memory(g->nodes[i]);
    if (m == 0 || m > 20000) return SIZE_MAX;
    plan_item *it = malloc(sizeof(plan_item) * (size_t)m);
    plan_item **placed = malloc(sizeof(plan_item *) * (size_t)m);
    plan_item **conflict = malloc(sizeof(plan_item *) * (size_t)m);
    if (!it || !placed || !conflict) {
        free(it); free(placed); free(conflict);
        return SIZE_MAX;
    }
    m = 0;
    for (int i = 0; i < n; i++) {
        nu_tensor *t = g->nodes[i];
        if (!owns_memory(t)) continue;
        bool input = t->op == NU_OP_NONE;
        it[m++] = (plan_item){i, input ? -1 : i, keep[i] ? n : last[i], 0, alloc_size(t)};
    }
    qsort(it, (size_t)m, sizeof *it, cmp_plan_size);
    size_t total = 0;
    int n_placed = 0;
    for (int k = 0; k < m; k++) {
        plan_item *t = &it[k];
        int nc = 0;
        for (int j = 0; j < n_placed; j++)
            if (placed[j]->first <= t->last && t->first <= placed[j]->last) conflict[nc++] = placed[j];
        qsort(conflict, (size_t)nc, sizeof *conflict, cmp_plan_off);
        size_t off = 0;
        for (int j = 0; j < nc; j++) {
            if (off + t->size <= conflict[j]->off) break;
            if (conflict[j]->off + conflict[j]->size > off) off = conflict[j]->off + conflict[j]->size;
        }
        t->off = off;
        placed[n_placed++] = t;
        if (off + t->size > total) total = off + t->size;
    }
    if (total < current)
        for (int k = 0; k < m; k++) offs[it[k].idx] = it[k].off;
    free(it); free(placed); free(conflict);
    return total;
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
    for (int i = 0; i < n; i++) {
        nu_tensor *t = g->nodes[i];
        if (t->op != NU_OP_NONE && !t->view_src && (t->flags & NU_FLAG_GRAPH_DATA))
            return nu_error(NU_ERR_INVALID_ARG,
                            "node '%s' (%s) is already placed by another live graph; only leaves (weights, inputs) "
                            "may be shared between graphs",
                            t->name[0] ? t->name : "(unnamed)", nu_op_name(t->op));
    }
    size_t cnt = (size_t)(n ? n : 1);
    int *last = malloc(sizeof(int) * cnt);
    size_t *offs = malloc(sizeof(size_t) * cnt);
    bool *keep = calloc(cnt, 1), *released = calloc(cnt, 1);
    if (!last || !offs || !keep || !released) {
        free(last); free(offs); free(keep); free(released);
        return nu_error(NU_ERR_NOMEM, "graph allocation: out of memory");
    }
    /* last use of each base tensor: the last node that reads it directly or through a view */
    for (int i = 0; i < n; i++) {
        last[i] = i;
        offs[i] = (size_t)-1;
    }
    for (int i = 0; i < n; i++) {
        nu_tensor *t = g->nodes[i];
        for (int s = 0; s <= NU_MAX_SRC; s++) {
            nu_tensor *c = s < NU_MAX_SRC ? t->src[s] : t->view_src;
            if (!c) continue;
            int bi = node_index(g, base_of(c));
            if (last[bi] < i) last[bi] = i;
        }
        if (t->flags & (NU_FLAG_OUTPUT | NU_FLAG_INPUT)) keep[node_index(g, base_of(t))] = true;
    }
    /* walk in execution order; track the liveness bound alongside */
    freelist fl = {0};
    size_t live = 0, bound = 0;
    /* Inputs are filled by the caller before the step, so they are placed first: a block freed
     * by an earlier node would be overwritten while the step runs. */
    for (int i = 0; i < n; i++) {
        nu_tensor *t = g->nodes[i];
        if (owns_memory(t) && t->op == NU_OP_NONE) {
            offs[i] = fl_alloc(&fl, alloc_size(t));
            live += alloc_size(t);
        }
    }
    bound = live;
    for (int i = 0; i < n; i++) {
        nu_tensor *t = g->nodes[i];
        if (owns_memory(t) && t->op != NU_OP_NONE) {
            offs[i] = fl_alloc(&fl, alloc_size(t));
            live += alloc_size(t);
            if (live > bound) bound = live;
        }
        /* release every owned tensor whose last use is this step (after placing the output,
         * so an output never shares memory with its inputs) */
        for (int s = 0; s <= NU_MAX_SRC + 1; s++) {
            nu_tensor *c = s < NU_MAX_SRC ? t->src[s] : s == NU_MAX_SRC ? t->view_src : t;
            if (!c) continue;
            int bi = node_index(g, base_of(c));
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
    /* The walk above gives the liveness bound and a first placement; an offline plan that
     * places the largest tensors first usually packs tighter (fragmentation from the walk cost
     * ~40% over the bound on the SD VAE decoder). Keep whichever is smaller. */
    size_t planned = plan_greedy_by_size(g, last, keep, offs, total);
    if (planned < total) total = planned;
    g->buffer = aligned_alloc(64, total ? total : 64);
    if (!g->buffer) {
        free(last); free(offs); free(keep); free(released);
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
    free(last); free(offs); free(keep); free(released);
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

/* ---------------------------------------------------------------- profile (NU_PROFILE=1)
 *
 * A developer's view of where a computation's time goes: with NU_PROFILE set, thread 0 times
 * every node from barrier to barrier (the whole pool's wall time for that node) and sums the
 * times per op, output shape and second operand's shape; the table goes to stderr at exit,
 * largest first, with each row's share. Off (one getenv) otherwise. */

#define PROF_MAX 4096
typedef struct {
    char key[160];
    double seconds;
    long calls;
} prof_row;
static prof_row *prof_rows;
static int prof_n;
static double prof_total;
static pthread_mutex_t prof_lock = PTHREAD_MUTEX_INITIALIZER;

static int prof_cmp(const void *a, const void *b) {
    double x = ((const prof_row *)a)->seconds, y = ((const prof_row *)b)->seconds;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void prof_report(void) {
    qsort(prof_rows, (size_t)prof_n, sizeof *prof_rows, prof_cmp);
    fprintf(stderr, "NU_PROFILE: %.3f s in %d kinds of node\n%10s %6s %8s  %s\n", prof_total, prof_n, "ms", "%",
            "calls", "op output [second operand]");
    for (int i = 0; i < prof_n; i++)
        fprintf(stderr, "%10.2f %6.2f %8ld  %s\n", prof_rows[i].seconds * 1e3,
                100.0 * prof_rows[i].seconds / (prof_total > 0 ? prof_total : 1), prof_rows[i].calls, prof_rows[i].key);
}

static bool prof_enabled(void) {
    static int on = -1;
    if (on < 0) on = getenv("NU_PROFILE") && *getenv("NU_PROFILE") && strcmp(getenv("NU_PROFILE"), "0") != 0;
    return on;
}

static void prof_add(const nu_tensor *t, double s) {
    char key[160], a[64], b[64] = "";
    nu_shape_str(t, a, sizeof a);
    if (t->src[1]) nu_shape_str(t->src[1], b, sizeof b);
    snprintf(key, sizeof key, "%s %s%s%s%s", nu_op_name(t->op), a, b[0] ? " [" : "", b, b[0] ? "]" : "");
    pthread_mutex_lock(&prof_lock);
    if (!prof_rows) {
        prof_rows = calloc(PROF_MAX, sizeof *prof_rows);
        if (prof_rows) atexit(prof_report);
    }
    int i = 0;
    while (i < prof_n && strcmp(prof_rows[i].key, key)) i++;
    if (prof_rows && i < PROF_MAX) {
        if (i == prof_n) snprintf(prof_rows[prof_n++].key, sizeof prof_rows[0].key, "%s", key);
        prof_rows[i].seconds += s;
        prof_rows[i].calls++;
        prof_total += s;
    }
    pthread_mutex_unlock(&prof_lock);
}

static double prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void run_thread(int ith, int nth, void *arg) {
    run_state *rs = arg;
    nu_graph *g = rs->g;
    nu_compute_params p = {ith, nth, g->wdata, g->wsize, rs->use_ref, rs->pool};
    if (atomic_load(&rs->stop)) return;
    bool prof = ith == 0 && prof_enabled();
    double t0 = prof ? prof_now() : 0;
    for (int i = 0; i < g->n; i++) {
        nu_tensor *t = g->nodes[i];
        if (t->op == NU_OP_NONE || t->op == NU_OP_VIEW) continue;
        const nu_cpu_kernel *k = nu_cpu_kernel_get(t->op);
        if (!k->forward) nu_abort(__FILE__, __LINE__, "op %s has no CPU kernel", nu_op_name(t->op));
        k->forward(&p, t);
        if (ith == 0 && nu_pool_cancelled(rs->pool)) atomic_store(&rs->stop, true);
        nu_compute_barrier(&p);
        if (prof) {
            double t1 = prof_now();
            prof_add(t, t1 - t0);
            t0 = t1;
        }
        if (atomic_load(&rs->stop)) return;
    }
}

nu_status nu_graph_compute_opts(nu_graph *g, nu_pool *pool, const nu_compute_opts *opts) {
    if (!g->allocated) {
        for (int i = 0; i < g->n; i++)
            if (g->nodes[i]->op == NU_OP_NONE && !g->nodes[i]->data)
                return nu_error(NU_ERR_INVALID_ARG,
                                "input '%s' has no data: call nu_graph_alloc, fill the inputs, then compute",
                                g->nodes[i]->name[0] ? g->nodes[i]->name : "(unnamed)");
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
    atomic_init(&rs.stop, nu_pool_cancelled(pool));
    nu_pool_run(pool, run_thread, &rs);
    /* a cancel request ends this computation only: the next one starts clean */
    nu_pool_reset_cancel(pool);
    if (atomic_load(&rs.stop)) return nu_error(NU_ERR_CANCELLED, "computation cancelled");
    return NU_OK;
}

nu_status nu_graph_compute(nu_graph *g, nu_pool *pool) { return nu_graph_compute_opts(g, pool, NULL); }
