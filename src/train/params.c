/*
 * params.c — flat parameter and gradient buffers (DESIGN §2: "parameters, gradients and
 * optimizer moments are each one flat buffer").
 *
 * How the gradients land in the flat buffer without a copy: after nu_graph_backward every
 * parameter's gradient is a private, dense f32 op node with no data yet (graph.c guarantees it:
 * not a view, not a leaf, not shared with another parameter). nu_params_collect sets that node's
 * data to its slot in the flat gradients buffer before nu_graph_alloc runs; the allocator only
 * places nodes without data, so the kernel that produces the gradient writes straight into the
 * flat buffer on every compute. Parameter leaves get their data re-pointed into the flat values
 * buffer the same way. Views created earlier (which copied their base's data pointer when they
 * were built) are re-pointed too. Cost: zero per step; one pass over the graph at set-up.
 *
 * Tested by tests/test_train.c (buffers, ordering, re-pointed views, gradients equal to an
 * unflattened graph's, values restored by nu_params_free).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "nuance/train.h"

#define ALIGN_FLOATS 16 /* every tensor starts 64-byte aligned inside the flat buffers */

struct nu_params {
    int n, n_train;
    nu_tensor **t;     /* [n] sorted: trainable by name, then the rest by name */
    int64_t *off;      /* [n + 1] element offsets; off[n] = size                 */
    void **orig;       /* [n] data pointer before collect                        */
    int64_t size, train_size, count;
    float *values, *grads;
    /* views whose data we re-pointed, with the base they view (restored on free) */
    nu_tensor **views;
    nu_tensor **view_base;
    int n_views;
};

static int cmp_tensor(const void *a, const void *b) {
    const nu_tensor *x = *(nu_tensor *const *)a, *y = *(nu_tensor *const *)b;
    int tx = x->grad != NULL, ty = y->grad != NULL;
    if (tx != ty) return ty - tx; /* trainable first */
    return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(nu_tensor *const *)a)->name, (*(nu_tensor *const *)b)->name);
}

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
    return x < y ? -1 : x > y;
}

static bool in_sorted(nu_tensor *const *arr, int n, const nu_tensor *t) {
    return bsearch(&t, arr, (size_t)n, sizeof *arr, cmp_ptr) != NULL;
}

static void *alloc_floats(int64_t n) {
    size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

nu_status nu_params_collect(nu_graph *g, nu_params **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_params_collect: NULL out");
    *out = NULL;
    if (!g) return nu_error(NU_ERR_INVALID_ARG, "nu_params_collect: NULL graph");
    int nn = nu_graph_n_nodes(g), n = 0;
    for (int i = 0; i < nn; i++)
        if (nu_graph_node(g, i)->flags & NU_FLAG_PARAM) n++;
    if (n == 0) return nu_error(NU_ERR_INVALID_ARG, "the graph has no parameters (no tensor flagged nu_set_param)");

    nu_params *p = calloc(1, sizeof *p);
    if (!p) return nu_error(NU_ERR_NOMEM, "nu_params_collect: out of memory");
    p->t = calloc((size_t)n, sizeof *p->t);
    p->off = calloc((size_t)n + 1, sizeof *p->off);
    p->orig = calloc((size_t)n, sizeof *p->orig);
    if (!p->t || !p->off || !p->orig) {
        nu_params_free(p);
        return nu_error(NU_ERR_NOMEM, "nu_params_collect: out of memory");
    }
    p->n = n;
    n = 0;
    for (int i = 0; i < nn; i++) {
        nu_tensor *t = nu_graph_node(g, i);
        if (t->flags & NU_FLAG_PARAM) p->t[n++] = t;
    }
    /* validate every parameter and its gradient node before touching anything */
    nu_status st = NU_OK;
    for (int i = 0; i < n && st == NU_OK; i++) {
        nu_tensor *t = p->t[i];
        char sh[128];
        if (!t->name[0])
            st = nu_error(NU_ERR_INVALID_ARG, "a parameter (%s) has no name; name every parameter (nu_set_name)",
                          nu_shape_str(t, sh, sizeof sh));
        else if (t->type != NU_TYPE_F32)
            st = nu_error(NU_ERR_UNSUPPORTED, "parameter '%s' is %s; training keeps f32 master weights (load it as f32)",
                          t->name, nu_type_name(t->type));
        else if (t->op != NU_OP_NONE || t->view_src)
            st = nu_error(NU_ERR_INVALID_ARG, "parameter '%s' is not a leaf tensor (an op result or a view)", t->name);
        else if (!nu_is_contiguous(t))
            st = nu_error(NU_ERR_INVALID_ARG, "parameter '%s' is not contiguous", t->name);
        else if (t->grad) {
            nu_tensor *gr = t->grad;
            if (gr->data)
                st = nu_error(NU_ERR_INVALID_ARG,
                              "gradient of '%s' already has memory: collect parameters (nu_trainer_new / "
                              "nu_params_collect) before nu_graph_alloc",
                              t->name);
            else if (gr->type != NU_TYPE_F32 || gr->view_src || !nu_is_contiguous(gr) ||
                     nu_nelements(gr) != nu_nelements(t) || gr->op == NU_OP_NONE || gr->extra != 0)
                st = nu_error(NU_ERR_UNSUPPORTED, "gradient node of '%s' (%s) cannot be placed in the flat buffer",
                              t->name, nu_op_name(gr->op));
        }
    }
    if (st == NU_OK) {
        /* unique names: check on a copy sorted by name alone */
        nu_tensor **byname = malloc(sizeof *byname * (size_t)n);
        if (!byname) st = nu_error(NU_ERR_NOMEM, "nu_params_collect: out of memory");
        else {
            memcpy(byname, p->t, sizeof *byname * (size_t)n);
            qsort(byname, (size_t)n, sizeof *byname, cmp_name);
            for (int i = 1; i < n && st == NU_OK; i++)
                if (strcmp(byname[i - 1]->name, byname[i]->name) == 0)
                    st = nu_error(NU_ERR_INVALID_ARG, "two parameters are named '%s'; names must be unique",
                                  byname[i]->name);
            free(byname);
        }
        qsort(p->t, (size_t)n, sizeof *p->t, cmp_tensor);
    }
    if (st != NU_OK) {
        nu_params_free(p);
        return st;
    }

    /* layout */
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        nu_tensor *t = p->t[i];
        if (t->grad) p->n_train = i + 1;
        p->off[i] = off;
        int64_t k = nu_nelements(t);
        p->count += k;
        off += (k + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
        if (i + 1 == p->n_train) p->train_size = off;
    }
    p->off[n] = off;
    p->size = off;
    p->values = alloc_floats(p->size);
    p->grads = alloc_floats(p->train_size);
    if (!p->values || !p->grads) {
        nu_params_free(p);
        return nu_error(NU_ERR_NOMEM, "out of memory for %lld parameters", (long long)p->count);
    }

    /* re-point parameters and gradient nodes */
    for (int i = 0; i < n; i++) {
        nu_tensor *t = p->t[i];
        float *dst = p->values + p->off[i];
        if (t->data) memcpy(dst, t->data, nu_nbytes(t));
        p->orig[i] = t->data;
        t->data = dst;
        if (t->grad) t->grad->data = p->grads + p->off[i];
    }
    /* views inside g of a parameter or a gradient node: their data was fixed when they were
     * built (parameters) or would only be set by the allocator for graph-placed bases (gradients) */
    nu_tensor **bases = malloc(sizeof *bases * (size_t)(2 * n));
    if (!bases) {
        nu_params_free(p);
        return nu_error(NU_ERR_NOMEM, "nu_params_collect: out of memory");
    }
    int nb = 0;
    for (int i = 0; i < n; i++) {
        bases[nb++] = p->t[i];
        if (p->t[i]->grad) bases[nb++] = p->t[i]->grad;
    }
    qsort(bases, (size_t)nb, sizeof *bases, cmp_ptr);
    int nv = 0;
    for (int i = 0; i < nn; i++) {
        nu_tensor *v = nu_graph_node(g, i);
        if (v->view_src && in_sorted(bases, nb, v->view_src)) nv++;
    }
    if (nv) {
        p->views = malloc(sizeof *p->views * (size_t)nv);
        p->view_base = malloc(sizeof *p->view_base * (size_t)nv);
        if (!p->views || !p->view_base) {
            free(bases);
            nu_params_free(p);
            return nu_error(NU_ERR_NOMEM, "nu_params_collect: out of memory");
        }
        for (int i = 0; i < nn; i++) {
            nu_tensor *v = nu_graph_node(g, i);
            if (v->view_src && in_sorted(bases, nb, v->view_src)) {
                v->data = (char *)v->view_src->data + v->view_offs;
                p->views[p->n_views] = v;
                p->view_base[p->n_views++] = v->view_src;
            }
        }
    }
    free(bases);
    *out = p;
    return NU_OK;
}

void nu_params_free(nu_params *p) {
    if (!p) return;
    if (p->values) {
        for (int i = 0; i < p->n; i++) {
            nu_tensor *t = p->t[i];
            if (t->data != p->values + p->off[i]) continue; /* never re-pointed (failed collect) */
            if (p->orig[i]) memcpy(p->orig[i], t->data, nu_nbytes(t));
            t->data = p->orig[i];
            if (t->grad && t->grad->data == (void *)(p->grads + p->off[i])) t->grad->data = NULL;
        }
        for (int i = 0; i < p->n_views; i++) {
            nu_tensor *v = p->views[i], *b = p->view_base[i];
            v->data = b->data ? (char *)b->data + v->view_offs : NULL;
        }
    }
    free(p->t);
    free(p->off);
    free(p->orig);
    free(p->values);
    free(p->grads);
    free(p->views);
    free(p->view_base);
    free(p);
}

int nu_params_n_tensors(const nu_params *p) { return p->n; }
int nu_params_n_trainable_tensors(const nu_params *p) { return p->n_train; }
nu_tensor *nu_params_tensor(const nu_params *p, int i) {
    NU_ASSERT(i >= 0 && i < p->n);
    return p->t[i];
}
int64_t nu_params_offset(const nu_params *p, int i) {
    NU_ASSERT(i >= 0 && i <= p->n);
    return p->off[i];
}
int nu_params_find(const nu_params *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->t[i]->name, name) == 0) return i;
    return -1;
}
int64_t nu_params_size(const nu_params *p) { return p->size; }
int64_t nu_params_trainable_size(const nu_params *p) { return p->train_size; }
int64_t nu_params_count(const nu_params *p) { return p->count; }
float *nu_params_values(nu_params *p) { return p->values; }
float *nu_params_grads(nu_params *p) { return p->grads; }
