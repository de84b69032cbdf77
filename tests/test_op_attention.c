/*
 * test_op_attention.c — tests of fused scaled-dot-product attention (nu_attention and its
 * FlashAttention-2 backward; src/ops/op_attention.c, src/cpu/k_attention.c):
 *   1. the AVX2 2^x polynomial against exp2() (documented bound 1.5e-7 relative);
 *   2. fast kernels vs scalar reference twins (forward output, logsumexp, dQ/dK/dV) over shapes
 *      with Tq != Tk, HD not a multiple of 8 (40, 20, 3, ...), several key/query tiles, additive
 *      masks broadcast over heads / batch / queries, causal, -inf and fully masked rows,
 *      permuted/sliced/transposed (non-contiguous) inputs; 1 vs 2 threads bitwise (which also
 *      cross-checks the one-pass and the two-phase backward schedules: B*NH = 1 runs two-phase
 *      with 2 threads);
 *   3. PyTorch fixtures (tests/fixtures/attention.safetensors from scripts/fixtures_attention.py):
 *      output and gradients, fast and reference paths;
 *   4. finite-difference gradchecks on tiny shapes (contiguous and permuted inputs).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "nu_test.h"
#include "nuance/io.h"

/* test hook in src/cpu/k_attention.c */
double nu_cpu_attention_exp2_check(float lo, float hi, int64_t n);

/* ---------------------------------------------------------------- case description */

enum { MASK_NONE, MASK_B1QK, MASK_QK, MASK_B11K, MASK_FULL_T };
enum { LAYOUT_PLAIN, LAYOUT_BTHD, LAYOUT_KT, LAYOUT_SHARED };

typedef struct {
    const char *name;
    int B, NH, Tq, Tk, HD, HDv;
    int mask;   /* MASK_*: [B,1,Tq,Tk] | [Tq,Tk] | [B,1,1,Tk] | [B,NH,Tq,Tk] stored transposed */
    bool causal;
    int layout; /* LAYOUT_*: contiguous | q from [B,Tq,NH,HD] and k,v sliced from [B,Tk,NH,HD+HDv] |
                 * q, k stored [B,NH,HD,T] | q = k = v one tensor (gradcheck only) */
    float scale;
} acase;

typedef struct {
    nu_tensor *q, *k, *v, *mask; /* operands of nu_attention (maybe views)   */
    nu_tensor *lq, *lk, *lv;     /* leaves that get gradients                */
} inputs;

static nu_tensor *leaf(nu_ctx *ctx, int ndim, const int64_t *ne, uint64_t seed, float lo, float hi) {
    nu_tensor *t = nu_new_tensor(ctx, NU_TYPE_F32, ndim, ne);
    int64_t n = nu_nelements(t);
    float *buf = malloc(sizeof(float) * (size_t)n);
    nu_test_fill_uniform(buf, n, seed, lo, hi);
    nu_tensor_set_f32(t, buf);
    free(buf);
    return t;
}

/* Masks: uniform values in [-2, 2), about 15% -inf; one fully masked row where it fits. */
static nu_tensor *make_mask(nu_ctx *ctx, const acase *c) {
    int64_t ne[4];
    int nd = 4;
    switch (c->mask) {
    case MASK_B1QK: ne[0] = c->B; ne[1] = 1; ne[2] = c->Tq; ne[3] = c->Tk; break;
    case MASK_QK: nd = 2; ne[0] = c->Tq; ne[1] = c->Tk; break;
    case MASK_B11K: ne[0] = c->B; ne[1] = 1; ne[2] = 1; ne[3] = c->Tk; break;
    default: ne[0] = c->B; ne[1] = c->NH; ne[2] = c->Tk; ne[3] = c->Tq; break; /* transposed below */
    }
    nu_tensor *m = leaf(ctx, nd, ne, 77, -2.f, 2.f);
    int64_t n = nu_nelements(m);
    float *buf = malloc(sizeof(float) * (size_t)n), *r = malloc(sizeof(float) * (size_t)n);
    nu_tensor_get_f32(m, buf);
    nu_test_fill_uniform(r, n, 78, 0.f, 1.f);
    for (int64_t i = 0; i < n; i++)
        if (r[i] < 0.15f) buf[i] = -INFINITY;
    if (c->mask == MASK_B1QK && c->Tq > 3) /* row 3 of batch 0: every key masked */
        for (int64_t j = 0; j < c->Tk; j++) buf[3 * c->Tk + j] = -INFINITY;
    if (c->mask == MASK_B11K) buf[0] = 0; /* key 0 always visible (padding-mask style) */
    nu_tensor_set_f32(m, buf);
    free(buf);
    free(r);
    if (c->mask == MASK_FULL_T) m = nu_transpose(ctx, m, 2, 3); /* last-dim stride != 4 */
    return m;
}

static void make_inputs(nu_ctx *ctx, const acase *c, inputs *in) {
    int64_t B = c->B, NH = c->NH, Tq = c->Tq, Tk = c->Tk, HD = c->HD, HDv = c->HDv;
    memset(in, 0, sizeof *in);
    if (c->layout == LAYOUT_BTHD) {
        /* q from a [B, Tq, NH, HD] projection; k and v sliced from a fused [B, Tk, NH, HD + HDv] */
        in->lq = leaf(ctx, 4, (int64_t[]){B, Tq, NH, HD}, 1, -1.f, 1.f);
        in->lk = leaf(ctx, 4, (int64_t[]){B, Tk, NH, HD + HDv}, 2, -1.f, 1.f);
        in->lv = in->lk;
        in->q = nu_permute(ctx, in->lq, (int[]){0, 2, 1, 3});
        in->k = nu_permute(ctx, nu_slice(ctx, in->lk, 3, 0, HD), (int[]){0, 2, 1, 3});
        in->v = nu_permute(ctx, nu_slice(ctx, in->lk, 3, HD, HD + HDv), (int[]){0, 2, 1, 3});
    } else {
        in->lv = leaf(ctx, 4, (int64_t[]){B, NH, Tk, HDv}, 3, -1.f, 1.f);
        in->v = in->lv;
        if (c->layout == LAYOUT_KT) { /* q and k stored [B, NH, HD, T]: HD stride != 4 bytes */
            in->lq = leaf(ctx, 4, (int64_t[]){B, NH, HD, Tq}, 1, -1.f, 1.f);
            in->q = nu_transpose(ctx, in->lq, 2, 3);
            in->lk = leaf(ctx, 4, (int64_t[]){B, NH, HD, Tk}, 2, -1.f, 1.f);
            in->k = nu_transpose(ctx, in->lk, 2, 3);
        } else {
            in->lq = leaf(ctx, 4, (int64_t[]){B, NH, Tq, HD}, 1, -1.f, 1.f);
            in->q = in->lq;
            in->lk = leaf(ctx, 4, (int64_t[]){B, NH, Tk, HD}, 2, -1.f, 1.f);
            in->k = in->lk;
        }
    }
    in->mask = c->mask == MASK_NONE ? NULL : make_mask(ctx, c);
}

typedef struct {
    float *out, *lse, *gq, *gk, *gv;
    int64_t nout, nlse, nq, nk, nv;
} results;

static void results_free(results *r) {
    free(r->out); free(r->lse); free(r->gq); free(r->gk); free(r->gv);
    memset(r, 0, sizeof *r);
}

static float *grab(nu_tensor *t, int64_t *n) {
    *n = nu_nelements(t);
    float *x = malloc(sizeof(float) * (size_t)*n);
    nu_tensor_get_f32(t, x);
    return x;
}

/* Builds and runs the case: forward output and logsumexp, and (if backward) the gradients of
 * loss = sum(out * r) with respect to the leaves. */
static void run_case(const acase *c, int nth, bool use_ref, bool backward, results *res) {
    memset(res, 0, sizeof *res);
    nu_ctx *ctx = nu_ctx_new(NULL);
    inputs in;
    make_inputs(ctx, c, &in);
    nu_tensor *r = leaf(ctx, 4, (int64_t[]){c->B, c->NH, c->Tq, c->HDv}, 99, -1.f, 1.f);
    if (backward) {
        nu_set_param(in.lq);
        nu_set_param(in.lk);
        nu_set_param(in.lv);
    }
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *y = nu_attention(ctx, in.q, in.k, in.v, in.mask, c->causal, c->scale);
    nu_set_output(y);
    nu_graph *g = nu_graph_new(ctx);
    if (backward) {
        nu_tensor *loss = nu_sum_all(ctx, nu_mul(ctx, y, r));
        nu_graph_expand(g, loss);
        nu_graph_backward(g, loss);
    } else {
        nu_graph_expand(g, y);
    }
    nu_pool *pool = nu_pool_new(nth);
    nu_compute_opts o = {.use_ref = use_ref};
    nu_status s = nu_graph_compute_opts(g, pool, &o);
    NU_CHECK_MSG(s == NU_OK, "%s: compute failed: %s", c->name, nu_last_error());
    res->out = grab(y, &res->nout);
    res->nlse = (int64_t)c->B * c->NH * c->Tq;
    res->lse = malloc(sizeof(float) * (size_t)res->nlse);
    memcpy(res->lse, (char *)y->data + nu_nbytes(y), sizeof(float) * (size_t)res->nlse);
    if (backward) {
        res->gq = grab(in.lq->grad, &res->nq);
        res->gk = grab(in.lk->grad, &res->nk);
        if (in.lv != in.lk) res->gv = grab(in.lv->grad, &res->nv);
    }
    nu_pool_free(pool);
    nu_graph_free(g);
    nu_ctx_free(ctx);
}

/* Compares two logsumexp arrays: +inf (fully masked rows) must match exactly, the rest within
 * tolerance. */
static void check_lse(const char *name, float *got, float *want, int64_t n, double atol, double rtol) {
    int64_t inf_mismatch = 0;
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        if (isinf(got[i]) || isinf(want[i])) {
            if (got[i] != want[i]) inf_mismatch++;
            a[i] = b[i] = 0;
        } else {
            a[i] = got[i];
            b[i] = want[i];
        }
    }
    NU_CHECK_MSG(inf_mismatch == 0, "%s: %lld rows differ in being fully masked", name, (long long)inf_mismatch);
    nu_test_close(name, a, b, n, atol, rtol);
    free(a);
    free(b);
}

static double max_abs(const float *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

static void check_no_nan(const char *name, const float *x, int64_t n) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += !isfinite(x[i]);
    NU_CHECK_MSG(bad == 0, "%s: %lld non-finite values", name, (long long)bad);
}

/* ---------------------------------------------------------------- 1. exp2 polynomial */

static void test_exp2(void) {
    double e1 = nu_cpu_attention_exp2_check(-126.0f, 0.0f, nu_test_quick() ? 200000 : 4000000);
    double e2 = nu_cpu_attention_exp2_check(-1.0f, 1.0f, 1000000);
    if (e1 < 0) {
        printf("exp2 check skipped: no AVX2/FMA\n");
        return;
    }
    printf("exp2 polynomial: max rel err %.3g on [-126, 0], %.3g on [-1, 1]\n", e1, e2);
    NU_CHECK(e1 <= 1.5e-7 && e2 <= 1.5e-7);
}

/* ---------------------------------------------------------------- 2. fast vs reference */

/*
 * Tolerances, fast (f32, 2^x polynomial) vs reference (double):
 *  - output: each score carries an f32 dot-product error of about HD*2^-24*|q||k|*scale (inputs
 *    in [-1, 1]: < 1e-6 absolute), which becomes a relative error of p; 2^x adds 1.5e-7; the
 *    f32 accumulation of sum_j p_j v_j over Tk <= 520 terms adds at most Tk*2^-24 ~ 3e-5 relative
 *    in the worst case, ~sqrt(Tk)*2^-24 ~ 1.4e-6 typically. Outputs are averages of |v| <= 1:
 *    atol 1e-5, rtol 1e-4 (several times the typical error, below the worst case).
 *  - logsumexp: log of a sum with relative error ~1e-6: atol 1e-5.
 *  - gradients: sums over Tk (dQ) or Tq (dK, dV) of products of such terms; their magnitude
 *    grows with T, so the bound is relative to the largest gradient: atol 1e-5*max|g|,
 *    rtol 1e-4.
 */
static void compare(const char *what, const acase *c, const results *got, const results *want, bool backward) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s %s out", c->name, what);
    nu_test_close(nm, got->out, want->out, got->nout, 1e-5, 1e-4);
    check_no_nan(nm, got->out, got->nout);
    snprintf(nm, sizeof nm, "%s %s lse", c->name, what);
    check_lse(nm, got->lse, want->lse, got->nlse, 1e-5, 1e-6);
    if (!backward) return;
    snprintf(nm, sizeof nm, "%s %s grad q", c->name, what);
    nu_test_close(nm, got->gq, want->gq, got->nq, 1e-5 * max_abs(want->gq, got->nq), 1e-4);
    check_no_nan(nm, got->gq, got->nq);
    snprintf(nm, sizeof nm, "%s %s grad k", c->name, what);
    nu_test_close(nm, got->gk, want->gk, got->nk, 1e-5 * max_abs(want->gk, got->nk), 1e-4);
    check_no_nan(nm, got->gk, got->nk);
    if (got->gv) {
        snprintf(nm, sizeof nm, "%s %s grad v", c->name, what);
        nu_test_close(nm, got->gv, want->gv, got->nv, 1e-5 * max_abs(want->gv, got->nv), 1e-4);
        check_no_nan(nm, got->gv, got->nv);
    }
}

static void same_bits(const char *what, const acase *c, const results *a, const results *b, bool backward) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s %s out", c->name, what);
    nu_test_equal(nm, a->out, b->out, a->nout);
    snprintf(nm, sizeof nm, "%s %s lse", c->name, what);
    nu_test_equal(nm, a->lse, b->lse, a->nlse);
    if (!backward) return;
    snprintf(nm, sizeof nm, "%s %s grad q", c->name, what);
    nu_test_equal(nm, a->gq, b->gq, a->nq);
    snprintf(nm, sizeof nm, "%s %s grad k", c->name, what);
    nu_test_equal(nm, a->gk, b->gk, a->nk);
    if (a->gv) {
        snprintf(nm, sizeof nm, "%s %s grad v", c->name, what);
        nu_test_equal(nm, a->gv, b->gv, a->nv);
    }
}

static const acase CASES[] = {
    {"tiny", 1, 1, 1, 1, 1, 1, MASK_NONE, false, LAYOUT_PLAIN, 0},
    {"cross 37x53 hd40", 2, 3, 37, 53, 40, 40, MASK_NONE, false, LAYOUT_PLAIN, 0},
    {"causal 100x300 hd20", 1, 2, 100, 300, 20, 24, MASK_NONE, true, LAYOUT_PLAIN, 0},
    {"causal+mask 130x70 hd3", 1, 1, 130, 70, 3, 5, MASK_B1QK, true, LAYOUT_PLAIN, 0.7f},
    {"bthd views + 2d mask", 2, 2, 50, 77, 40, 40, MASK_QK, false, LAYOUT_BTHD, 0},
    {"q,k transposed + key mask", 1, 2, 33, 41, 8, 16, MASK_B11K, false, LAYOUT_KT, 0},
    {"strided full mask hd72/88", 1, 2, 20, 30, 72, 88, MASK_FULL_T, true, LAYOUT_PLAIN, 0},
    {"self 260x520 hd64", 1, 1, 260, 520, 64, 64, MASK_NONE, false, LAYOUT_PLAIN, 0},
    {"causal self 200 hd40 bthd", 1, 1, 200, 200, 40, 40, MASK_NONE, true, LAYOUT_BTHD, 0},
};

static void test_fast_vs_ref(void) {
    int n = (int)(sizeof CASES / sizeof CASES[0]);
    for (int i = 0; i < n; i++) {
        const acase *c = &CASES[i];
        if (nu_test_quick() && (int64_t)c->Tq * c->Tk > 40000) continue;
        results f1, f2, r1, r2;
        run_case(c, 1, false, true, &f1);
        run_case(c, 2, false, true, &f2);
        run_case(c, 1, true, true, &r1);
        run_case(c, 2, true, true, &r2);
        same_bits("fast 1 vs 2 threads", c, &f1, &f2, true);
        same_bits("ref 1 vs 2 threads", c, &r1, &r2, true);
        compare("fast vs ref", c, &f1, &r1, true);
        results_free(&f1);
        results_free(&f2);
        results_free(&r1);
        results_free(&r2);
    }
    /* forward-only graphs (no backward consumers) and a bigger thread count */
    const acase *c = &CASES[4];
    results a, b;
    run_case(c, 3, false, false, &a);
    run_case(c, 1, true, false, &b);
    compare("forward-only 3 threads vs ref", c, &a, &b, false);
    results_free(&a);
    results_free(&b);
}

/* A fully masked row gives 0 and zero gradients (torch: NaN), never NaN. */
static void test_fully_masked(void) {
    acase c = {"fully masked rows", 1, 2, 6, 5, 4, 3, MASK_B1QK, false, LAYOUT_PLAIN, 0};
    for (int use_ref = 0; use_ref < 2; use_ref++) {
        results r;
        run_case(&c, 1, use_ref, true, &r);
        /* batch 0, every head, query 3 */
        for (int h = 0; h < c.NH; h++) {
            int64_t row = (int64_t)h * c.Tq + 3;
            for (int d = 0; d < c.HDv; d++) NU_CHECK(r.out[row * c.HDv + d] == 0.0f);
            for (int d = 0; d < c.HD; d++) NU_CHECK(r.gq[row * c.HD + d] == 0.0f);
            NU_CHECK(r.lse[row] == INFINITY);
        }
        check_no_nan("fully masked out", r.out, r.nout);
        check_no_nan("fully masked grad q", r.gq, r.nq);
        check_no_nan("fully masked grad k", r.gk, r.nk);
        check_no_nan("fully masked grad v", r.gv, r.nv);
        results_free(&r);
    }
}

/* ---------------------------------------------------------------- 3. PyTorch fixtures */

static float *fixture_array(nu_st_file *f, nu_ctx *ctx, const char *key, nu_tensor **t) {
    if (nu_st_get_f32(f, ctx, key, t) != NU_OK) return NULL;
    int64_t n;
    return grab(*t, &n);
}

/*
 * Tolerances against the float64 PyTorch reference (inputs randn, so |q.k| reaches ~10-20 and
 * the f32 score error ~HD*2^-24*sum|q_d k_d| ~ 1e-5 before scaling): outputs atol 2e-5 rtol 1e-4;
 * gradients atol 2e-5*max|g|, rtol 1e-4 (same derivation as the fast-vs-reference bounds, with
 * the larger randn scores).
 */
static void test_fixtures(void) {
    nu_st_file *f = NULL;
    const char *path = nu_test_fixture("attention.safetensors");
    if (nu_st_open(path, &f) != NU_OK) {
        NU_CHECK_MSG(false, "cannot open %s: %s", path, nu_last_error());
        return;
    }
    for (int cs = 0;; cs++) {
        char key[64];
        snprintf(key, sizeof key, "case%d.cfg", cs);
        if (!nu_st_find(f, key)) break;
        for (int use_ref = 0; use_ref < 2; use_ref++) {
            nu_ctx *ctx = nu_ctx_new(NULL);
            nu_tensor *cfg, *q, *k, *v, *go, *mask = NULL, *want, *gq, *gk, *gv;
            snprintf(key, sizeof key, "case%d.cfg", cs);
            float *cf = fixture_array(f, ctx, key, &cfg);
            if (!cf) {
                NU_CHECK_MSG(false, "%s: %s", key, nu_last_error());
                nu_ctx_free(ctx);
                break;
            }
#define GET(var, nm)                                                                           \
    snprintf(key, sizeof key, "case%d." nm, cs);                                               \
    NU_CHECK(nu_st_get_f32(f, ctx, key, &var) == NU_OK)
            GET(q, "q");
            GET(k, "k");
            GET(v, "v");
            GET(go, "go");
            GET(want, "out");
            GET(gq, "grad_q");
            GET(gk, "grad_k");
            GET(gv, "grad_v");
            snprintf(key, sizeof key, "case%d.mask", cs);
            if (nu_st_find(f, key)) NU_CHECK(nu_st_get_f32(f, ctx, key, &mask) == NU_OK);
#undef GET
            nu_set_param(q);
            nu_set_param(k);
            nu_set_param(v);
            nu_ctx_set_alloc_data(ctx, false);
            nu_tensor *y = nu_attention(ctx, q, k, v, mask, cf[6] != 0, cf[7]);
            nu_set_output(y);
            nu_tensor *loss = nu_sum_all(ctx, nu_mul(ctx, y, go));
            nu_graph *g = nu_graph_new(ctx);
            nu_graph_expand(g, loss);
            nu_graph_backward(g, loss);
            nu_pool *pool = nu_pool_new(2);
            nu_compute_opts o = {.use_ref = use_ref != 0};
            NU_CHECK(nu_graph_compute_opts(g, pool, &o) == NU_OK);
            struct { const char *nm; nu_tensor *got, *want; double atol; } cmp[4] = {
                {"out", y, want, 2e-5}, {"grad_q", q->grad, gq, 0}, {"grad_k", k->grad, gk, 0}, {"grad_v", v->grad, gv, 0}};
            for (int t = 0; t < 4; t++) {
                int64_t n1, n2;
                float *a = grab(cmp[t].got, &n1), *b = grab(cmp[t].want, &n2);
                char nm[96];
                snprintf(nm, sizeof nm, "fixture case%d %s (%s)", cs, cmp[t].nm, use_ref ? "ref" : "fast");
                NU_CHECK_MSG(n1 == n2, "%s: size %lld vs %lld", nm, (long long)n1, (long long)n2);
                double atol = cmp[t].atol > 0 ? cmp[t].atol : 2e-5 * max_abs(b, n2);
                if (n1 == n2) nu_test_close(nm, a, b, n1, atol, 1e-4);
                free(a);
                free(b);
            }
            free(cf);
            nu_pool_free(pool);
            nu_graph_free(g);
            nu_ctx_free(ctx);
        }
    }
    nu_st_close(f);
}

/* ---------------------------------------------------------------- 4. gradcheck */

typedef struct {
    const acase *c;
    inputs in;
} gc_user;

static nu_tensor *gc_build(nu_ctx *ctx, nu_tensor **leaves, void *user) {
    gc_user *u = user;
    const acase *c = u->c;
    nu_tensor *q = leaves[0], *k = leaves[1], *v = leaves[2];
    if (c->layout == LAYOUT_BTHD) { /* leaves stored [B, T, NH, D] */
        q = nu_permute(ctx, q, (int[]){0, 2, 1, 3});
        k = nu_permute(ctx, k, (int[]){0, 2, 1, 3});
        v = nu_permute(ctx, v, (int[]){0, 2, 1, 3});
    }
    if (c->layout == LAYOUT_SHARED) k = v = q; /* self-attention of one tensor: grads add up */
    return nu_attention(ctx, q, k, v, u->in.mask, c->causal, c->scale);
}

/*
 * f32 central differences with step 5e-3 on a loss of size ~1-4: truncation ~eps^2*|f'''|/6
 * ~1e-5, rounding ~(a few ulp of the loss)/(2 eps) ~2e-5, so |num - ana| <= 2e-4 (1 + |num|).
 */
static void test_gradcheck(void) {
    static const acase gcases[] = {
        {"gradcheck plain", 1, 2, 3, 4, 3, 2, MASK_NONE, false, LAYOUT_PLAIN, 0},
        {"gradcheck causal+mask", 2, 1, 4, 3, 5, 3, MASK_B1QK, true, LAYOUT_PLAIN, 0.8f},
        {"gradcheck permuted", 1, 2, 3, 5, 4, 4, MASK_QK, false, LAYOUT_BTHD, 0},
        {"gradcheck q=k=v", 1, 2, 5, 5, 3, 3, MASK_NONE, true, LAYOUT_SHARED, 0},
    };
    for (int fast = 1; fast >= 0; fast--) {
        nu_cpu_set_fast(fast != 0);
        for (int i = 0; i < (int)(sizeof gcases / sizeof gcases[0]); i++) {
            const acase *c = &gcases[i];
            nu_ctx *ctx = nu_ctx_new(NULL);
            gc_user u = {.c = c};
            u.in.mask = c->mask == MASK_NONE ? NULL : make_mask(ctx, c);
            int64_t B = c->B, NH = c->NH, Tq = c->Tq, Tk = c->Tk;
            nu_tensor *lv[3];
            if (c->layout == LAYOUT_BTHD) {
                lv[0] = leaf(ctx, 4, (int64_t[]){B, Tq, NH, c->HD}, 11, -1.f, 1.f);
                lv[1] = leaf(ctx, 4, (int64_t[]){B, Tk, NH, c->HD}, 12, -1.f, 1.f);
                lv[2] = leaf(ctx, 4, (int64_t[]){B, Tk, NH, c->HDv}, 13, -1.f, 1.f);
            } else {
                lv[0] = leaf(ctx, 4, (int64_t[]){B, NH, Tq, c->HD}, 11, -1.f, 1.f);
                lv[1] = leaf(ctx, 4, (int64_t[]){B, NH, Tk, c->HD}, 12, -1.f, 1.f);
                lv[2] = leaf(ctx, 4, (int64_t[]){B, NH, Tk, c->HDv}, 13, -1.f, 1.f);
            }
            /* one input at a time, so that a failure names dq, dk or dv and each backward graph
             * holds a single parameter (exercises nu_needs_grad on the others) */
            for (int t = 0; t < (c->layout == LAYOUT_SHARED ? 1 : 3); t++) {
                for (int o = 0; o < 3; o++) lv[o]->flags &= ~(uint32_t)NU_FLAG_PARAM;
                nu_set_param(lv[t]);
                char nm[96];
                snprintf(nm, sizeof nm, "%s d%c (%s)", c->name, "qkv"[t], fast ? "fast" : "ref");
                nu_test_gradcheck(nm, gc_build, lv, 3, &u, 5e-3f, 2e-4, 200);
            }
            nu_ctx_free(ctx);
        }
    }
    nu_cpu_set_fast(true);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_exp2();
    test_fast_vs_ref();
    test_fully_masked();
    test_fixtures();
    test_gradcheck();
    return nu_test_summary("test_op_attention");
}
