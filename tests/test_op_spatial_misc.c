/*
 * test_op_spatial_misc.c — spatial (upsample, pools, concat, pad) and misc (timestep embedding,
 * embedding, dropout) ops: forward and backward against PyTorch fixtures
 * (scripts/fixtures_spatial_misc.py), finite-difference gradients, 1 vs 2 threads.
 *
 * Tolerances: these ops are copies, sums of <= 9 values or a single libm call per value, so f32
 * results agree with PyTorch to a few ulp: atol 1e-6 + rtol 1e-5. The timestep embedding
 * evaluates sin/cos of arguments up to ~1000, where one ulp of the argument (6e-5) moves the
 * result by up to 6e-5; PyTorch's vectorised exp may differ from libm's by 1 ulp, so atol 2e-4.
 */
#include <math.h>
#include <stdlib.h>

#include "nu_test.h"
#include "nuance/io.h"

static nu_st_file *fx;

static nu_tensor *load(nu_ctx *ctx, const char *name) {
    nu_tensor *t = NULL;
    if (nu_st_get_f32(fx, ctx, name, &t) != NU_OK) {
        fprintf(stderr, "fixture %s: %s\n", name, nu_last_error());
        exit(1);
    }
    return t;
}

typedef nu_tensor *(*op1)(nu_ctx *ctx, nu_tensor **x);

/* Loads case.x0..x{n-1}, runs op, compares y; then compares the gradients of sum(y * r). */
static void check_case(const char *cs, int n_in, op1 op) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *x[4];
    char key[128];
    for (int i = 0; i < n_in; i++) {
        snprintf(key, sizeof key, "%s.x%d", cs, i);
        x[i] = load(ctx, key);
        nu_set_param(x[i]);
    }
    snprintf(key, sizeof key, "%s.y", cs);
    nu_tensor *want = load(ctx, key);
    snprintf(key, sizeof key, "%s.r", cs);
    nu_tensor *r = load(ctx, key);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *y = op(ctx, x);
    nu_tensor *loss = nu_sum_all(ctx, nu_mul(ctx, y, r));
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, y);
    nu_graph_expand(g, loss);
    nu_graph_backward(g, loss);
    nu_pool *pool = nu_pool_new(2);
    NU_CHECK(nu_graph_compute(g, pool) == NU_OK);
    int64_t n = nu_nelements(want);
    NU_CHECK_MSG(n == nu_nelements(y), "%s: element count %lld vs %lld", cs, (long long)nu_nelements(y), (long long)n);
    float *got = malloc(sizeof(float) * (size_t)n);
    nu_tensor_get_f32(y, got);
    snprintf(key, sizeof key, "%s forward", cs);
    nu_test_close(key, got, want->data, n, 1e-6, 1e-5);
    free(got);
    for (int i = 0; i < n_in; i++) {
        snprintf(key, sizeof key, "%s.grad%d", cs, i);
        nu_tensor *gw = load(ctx, key);
        int64_t m = nu_nelements(gw);
        float *gg = malloc(sizeof(float) * (size_t)m);
        NU_CHECK_MSG(x[i]->grad != NULL, "%s: no gradient for input %d", cs, i);
        if (x[i]->grad) {
            nu_tensor_get_f32(x[i]->grad, gg);
            nu_test_close(key, gg, gw->data, m, 1e-6, 1e-5);
        }
        free(gg);
    }
    nu_pool_free(pool);
    nu_graph_free(g);
    nu_ctx_free(ctx);
}

static nu_tensor *op_up2(nu_ctx *c, nu_tensor **x) { return nu_upsample_nearest(c, x[0], 2); }
static nu_tensor *op_up3(nu_ctx *c, nu_tensor **x) { return nu_upsample_nearest(c, x[0], 3); }
static nu_tensor *op_avg22(nu_ctx *c, nu_tensor **x) { return nu_avg_pool2d(c, x[0], 2, 2, 0); }
static nu_tensor *op_avg321(nu_ctx *c, nu_tensor **x) { return nu_avg_pool2d(c, x[0], 3, 2, 1); }
static nu_tensor *op_avg311x(nu_ctx *c, nu_tensor **x) { return nu_avg_pool2d_ex(c, x[0], 3, 1, 1, false); }
static nu_tensor *op_max22(nu_ctx *c, nu_tensor **x) { return nu_max_pool2d(c, x[0], 2, 2, 0); }
static nu_tensor *op_max311(nu_ctx *c, nu_tensor **x) { return nu_max_pool2d(c, x[0], 3, 1, 1); }
static nu_tensor *op_cat1(nu_ctx *c, nu_tensor **x) { return nu_concat(c, x[0], x[1], 1); }
static nu_tensor *op_cat3(nu_ctx *c, nu_tensor **x) { return nu_concat(c, x[0], x[1], -1); }
static nu_tensor *op_pad(nu_ctx *c, nu_tensor **x) { return nu_pad(c, x[0], (int[]){0, 0, 0, 0, 0, 3, 1, 2}); }

static void test_timestep(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *t = load(ctx, "temb_sd.t");
    struct { const char *key; int dim; bool flip; float shift; } cs[] = {
        {"temb_sd.y", 320, true, 0.0f}, {"temb_dit.y", 256, true, 0.0f}, {"temb_shift1.y", 33, false, 1.0f}};
    for (int i = 0; i < 3; i++) {
        nu_tensor *want = load(ctx, cs[i].key);
        nu_ctx_set_alloc_data(ctx, false);
        nu_tensor *y = nu_timestep_embedding(ctx, t, cs[i].dim, cs[i].flip, cs[i].shift);
        nu_ctx_set_alloc_data(ctx, true);
        int64_t n = nu_nelements(want);
        float *got = malloc(sizeof(float) * (size_t)n);
        nu_test_eval(ctx, y, got, 2, false);
        nu_test_close(cs[i].key, got, want->data, n, 2e-4, 1e-5);
        free(got);
    }
    nu_ctx_free(ctx);
}

static void test_embedding(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *table = load(ctx, "embedding.x0");
    nu_tensor *ids = NULL;
    NU_CHECK(nu_st_get(fx, ctx, "embedding.ids", &ids) == NU_OK && ids->type == NU_TYPE_I64);
    nu_tensor *want = load(ctx, "embedding.y"), *r = load(ctx, "embedding.r"), *gw = load(ctx, "embedding.grad0");
    nu_set_param(table);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *y = nu_embedding(ctx, table, ids);
    nu_tensor *loss = nu_sum_all(ctx, nu_mul(ctx, y, r));
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, y);
    nu_graph_expand(g, loss);
    nu_graph_backward(g, loss);
    nu_pool *pool = nu_pool_new(2);
    NU_CHECK(nu_graph_compute(g, pool) == NU_OK);
    NU_CHECK(y->ndim == 3 && y->ne[0] == 2 && y->ne[1] == 3 && y->ne[2] == 6);
    float got[36], gg[66];
    nu_tensor_get_f32(y, got);
    nu_test_close("embedding forward", got, want->data, 36, 0, 0);
    nu_tensor_get_f32(table->grad, gg);
    nu_test_close("embedding backward", gg, gw->data, 66, 1e-6, 1e-6);
    nu_pool_free(pool);
    nu_graph_free(g);
    nu_ctx_free(ctx);
}

static void test_dropout(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    int64_t n = 1 << 16;
    nu_tensor *x = nu_new_tensor_1d(ctx, NU_TYPE_F32, n);
    float *xv = x->data;
    for (int64_t i = 0; i < n; i++) xv[i] = 1.0f;
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *y = nu_dropout(ctx, x, 0.25f, 42);
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    nu_test_eval(ctx, y, a, 1, false);
    nu_test_eval(ctx, y, b, 2, false);
    nu_test_equal("dropout 1 vs 2 threads", b, a, n);
    int64_t kept = 0;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        kept += a[i] != 0;
        sum += a[i];
        NU_CHECK(a[i] == 0.0f || fabsf(a[i] - 1.0f / 0.75f) < 1e-6f);
    }
    /* binomial(65536, 0.75): sd = 111; 6 sd bounds */
    NU_CHECK_MSG(llabs(kept - 49152) < 670, "kept %lld of %lld", (long long)kept, (long long)n);
    NU_CHECK(fabs(sum / n - 1.0) < 0.02); /* inverted dropout keeps the mean */
    free(a);
    free(b);
    nu_ctx_free(ctx);
}

static nu_tensor *build_drop(nu_ctx *ctx, nu_tensor **in, void *u) { return nu_dropout(ctx, in[0], 0.5f, 7); }
static nu_tensor *build_pool_chain(nu_ctx *ctx, nu_tensor **in, void *u) {
    nu_tensor *a = nu_upsample_nearest(ctx, in[0], 2);
    a = nu_avg_pool2d(ctx, a, 3, 2, 1);
    a = nu_pad(ctx, a, (int[]){0, 0, 0, 0, 1, 0, 0, 2});
    return nu_concat(ctx, a, a, 1);
}

static void test_gradcheck(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *x = nu_new_tensor_4d(ctx, NU_TYPE_F32, 1, 2, 3, 4);
    nu_test_fill_uniform(x->data, 24, 5, -1, 1);
    nu_set_param(x);
    /* linear ops: central differences are exact up to f32 rounding of the loss (~1e-6 of
     * |loss| ~ 10 over a step of 1e-2): 1e-3 */
    nu_test_gradcheck("upsample/avgpool/pad/concat", build_pool_chain, &x, 1, NULL, 1e-2f, 1e-3, 24);
    nu_test_gradcheck("dropout", build_drop, &x, 1, NULL, 1e-2f, 1e-3, 24);
    nu_ctx_free(ctx);
}

int main(void) {
    test_dropout();
    test_gradcheck();
    if (nu_st_open(nu_test_fixture("spatial_misc.safetensors"), &fx) != NU_OK) {
        fprintf(stderr, "cannot open fixture: %s\n", nu_last_error());
        return 1;
    }
    check_case("upsample2", 1, op_up2);
    check_case("upsample3", 1, op_up3);
    check_case("avgpool_k2s2", 1, op_avg22);
    check_case("avgpool_k3s2p1", 1, op_avg321);
    check_case("avgpool_k3s1p1_nopad", 1, op_avg311x);
    check_case("maxpool_k2s2", 1, op_max22);
    check_case("maxpool_k3s1p1", 1, op_max311);
    check_case("concat_dim1", 2, op_cat1);
    check_case("concat_dim3", 2, op_cat3);
    check_case("pad", 1, op_pad);
    test_timestep();
    test_embedding();
    nu_st_close(fx);
    return nu_test_summary("test_op_spatial_misc");
}
