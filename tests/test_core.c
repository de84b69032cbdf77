/*
 * test_core.c — the engine core: dtype conversions, tensor views, graph order, the liveness
 * allocator's peak against the liveness bound, the thread pool (runs, barriers, cancellation),
 * and gradients through views.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "nu_test.h"

static void test_f16(void) {
    /* every finite f16 survives f16 -> f32 -> f16; NaN stays NaN */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = nu_f16_to_f32((uint16_t)h);
        uint16_t back = nu_f32_to_f16(f);
        if (isnan(f)) {
            if (!isnan(nu_f16_to_f32(back))) bad++;
        } else if (back != h) {
            bad++;
        }
    }
    NU_CHECK_MSG(bad == 0, "%d f16 values do not round-trip", bad);
    /* round to nearest even at the halfway point between 1 and 1+2^-10 */
    NU_CHECK(nu_f32_to_f16(1.0f + 0.5f / 1024) == 0x3c00);
    NU_CHECK(nu_f32_to_f16(1.0f + 1.5f / 1024) == 0x3c02);
    NU_CHECK(nu_f32_to_f16(65520.f) == 0x7c00);          /* rounds to +Inf */
    NU_CHECK(nu_f32_to_f16(65519.f) == 0x7bff);          /* largest finite */
    NU_CHECK(nu_f32_to_f16(5.9604645e-08f) == 0x0001);   /* smallest subnormal */
    NU_CHECK(nu_f32_to_f16(2.9802322e-08f) == 0x0000);   /* half of it: ties to even (0) */
    NU_CHECK(nu_f32_to_f16(-0.0f) == 0x8000);
    NU_CHECK(nu_f16_to_f32(0x7c00) == INFINITY);
}

static void test_bf16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = nu_bf16_to_f32((uint16_t)h);
        if (!isnan(f) && nu_f32_to_bf16(f) != h) bad++;
    }
    NU_CHECK_MSG(bad == 0, "%d bf16 values do not round-trip", bad);
    NU_CHECK(nu_f32_to_bf16(1.00390625f) == 0x3f80);   /* 1 + 2^-8: halfway, ties to even */
    NU_CHECK(nu_f32_to_bf16(1.01171875f) == 0x3f82);   /* 1 + 3*2^-8: halfway, ties to even */
    NU_CHECK(isnan(nu_bf16_to_f32(nu_f32_to_bf16(NAN))));
}

static void test_types(void) {
    NU_CHECK(nu_row_size(NU_TYPE_F32, 10) == 40);
    NU_CHECK(nu_row_size(NU_TYPE_Q8_0, 64) == 68);
    NU_CHECK(nu_row_size(NU_TYPE_Q4_0, 64) == 36);
    NU_CHECK(nu_row_size(NU_TYPE_Q4_1, 32) == 20);
    NU_CHECK(nu_row_size(NU_TYPE_Q5_0, 32) == 22);
    NU_CHECK(nu_row_size(NU_TYPE_Q5_1, 32) == 24);
    for (int t = 0; t < NU_TYPE_COUNT; t++) NU_CHECK((int)nu_type_from_name(nu_type_name((nu_type)t)) == t);
    NU_CHECK(nu_type_from_name("q9_9") == NU_TYPE_COUNT);
    int64_t iv[3] = {-5, 0, 1 << 20};
    float f[3];
    nu_row_to_f32(NU_TYPE_I64, iv, f, 3);
    NU_CHECK(f[0] == -5 && f[1] == 0 && f[2] == 1048576);
}

static void test_views(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *a = nu_new_tensor_3d(ctx, NU_TYPE_F32, 2, 3, 4);
    float *ad = a->data;
    for (int i = 0; i < 24; i++) ad[i] = (float)i;
    NU_CHECK(nu_is_contiguous(a) && nu_nbytes(a) == 96);

    nu_tensor *p = nu_permute(ctx, a, (int[]){2, 0, 1}); /* [4, 2, 3] */
    NU_CHECK(p->ne[0] == 4 && p->ne[1] == 2 && p->ne[2] == 3 && !nu_is_contiguous(p));
    NU_CHECK(nu_get_f32_nd(p, (int64_t[]){3, 1, 2}) == ad[1 * 12 + 2 * 4 + 3]);

    nu_tensor *s = nu_slice(ctx, a, 1, 1, 3); /* [2, 2, 4] */
    NU_CHECK(s->ne[1] == 2 && nu_get_f32_nd(s, (int64_t[]){1, 0, 2}) == ad[12 + 4 + 2]);
    nu_tensor *s2 = nu_slice(ctx, s, -1, 1, 3); /* view of a view resolves to the base */
    NU_CHECK(s2->view_src == a && nu_get_f32_nd(s2, (int64_t[]){1, 1, 0}) == ad[12 + 8 + 1]);

    nu_tensor *r = nu_reshape(ctx, a, 2, (int64_t[]){6, 4});
    NU_CHECK(r->data == a->data && nu_is_contiguous(r));

    float dense[24];
    nu_tensor_get_f32(p, dense);
    NU_CHECK(dense[3] == ad[12] && dense[1] == ad[4]); /* p[0,1,0] = a[1,0,0], p[0,0,1] = a[0,1,0] */
    char buf[64];
    NU_CHECK(strcmp(nu_shape_str(p, buf, sizeof buf), "f32 [4, 2, 3]") == 0);
    nu_ctx_free(ctx);
}

/* A chain of n same-size unary ops: only two activations are ever alive, and the allocator's
 * peak must equal the liveness bound (= 2 tensors), whatever n is. */
static void test_alloc_chain(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *x = nu_new_tensor_2d(ctx, NU_TYPE_F32, 64, 64); /* 16 KiB */
    nu_set_input(x);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *y = x;
    for (int i = 0; i < 10; i++) y = nu_silu(ctx, y);
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, y);
    NU_CHECK(nu_graph_n_nodes(g) == 11 && nu_graph_node(g, 0) == x && nu_graph_node(g, 10) == y);
    NU_CHECK(nu_graph_alloc(g) == NU_OK);
    size_t one = 64 * 64 * 4;
    NU_CHECK_MSG(nu_graph_liveness_bound(g) == 2 * one, "bound %zu", nu_graph_liveness_bound(g));
    NU_CHECK_MSG(nu_graph_peak_bytes(g) == nu_graph_liveness_bound(g), "peak %zu bound %zu", nu_graph_peak_bytes(g),
                 nu_graph_liveness_bound(g));
    nu_graph_free(g);
    nu_ctx_free(ctx);
}

/* Diamond + skip connection: a = silu(x); b = silu(a); c = silu(b); d = c + a (a lives long).
 * Peak must equal the bound: 3 tensors alive at once (a, b->c, and the result). */
static void test_alloc_skip(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *x = nu_new_tensor_2d(ctx, NU_TYPE_F32, 32, 32);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *a = nu_silu(ctx, x);
    nu_tensor *b = nu_silu(ctx, a);
    nu_tensor *c = nu_silu(ctx, b);
    nu_tensor *d = nu_add(ctx, c, a);
    nu_tensor *e = nu_silu(ctx, d);
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, e);
    NU_CHECK(nu_graph_alloc(g) == NU_OK);
    size_t one = 32 * 32 * 4;
    NU_CHECK_MSG(nu_graph_liveness_bound(g) == 3 * one, "bound %zu", nu_graph_liveness_bound(g));
    NU_CHECK_MSG(nu_graph_peak_bytes(g) == nu_graph_liveness_bound(g), "peak %zu bound %zu", nu_graph_peak_bytes(g),
                 nu_graph_liveness_bound(g));
    /* results: compare with a direct computation */
    float *xv = x->data;
    nu_test_fill_uniform(xv, 1024, 7, -3, 3);
    nu_pool *pool = nu_pool_new(2);
    NU_CHECK(nu_graph_compute(g, pool) == NU_OK);
    float out[1024];
    nu_tensor_get_f32(e, out);
    int bad = 0;
    for (int i = 0; i < 1024; i++) {
        double s = xv[i] / (1 + exp(-xv[i]));
        double t = s / (1 + exp(-s));
        t = t / (1 + exp(-t));
        double u = t + s;
        u = u / (1 + exp(-u));
        if (fabs(u - out[i]) > 1e-5 * (1 + fabs(u))) bad++;
    }
    NU_CHECK_MSG(bad == 0, "%d values differ from the direct computation", bad);
    nu_pool_free(pool);
    nu_graph_free(g);
    nu_ctx_free(ctx);
}

typedef struct {
    atomic_int count;
    atomic_int phase_errors;
    int hits[4];
} pool_arg;

static void pool_fn(int ith, int nth, void *arg) {
    pool_arg *pa = arg;
    pa->hits[ith]++;
    atomic_fetch_add(&pa->count, 1);
}

static void test_pool(void) {
    for (int n = 1; n <= 4; n++) {
        nu_pool *pool = nu_pool_new(n);
        pool_arg pa = {0};
        for (int r = 0; r < 100; r++) nu_pool_run(pool, pool_fn, &pa);
        NU_CHECK(atomic_load(&pa.count) == 100 * n);
        for (int i = 0; i < n; i++) NU_CHECK(pa.hits[i] == 100);
        nu_pool_free(pool);
    }
}

/* 1 vs 2 threads and reference vs fast on a small mixed graph give identical / close results. */
static void test_threads(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *x = nu_new_tensor_3d(ctx, NU_TYPE_F32, 3, 17, 33);
    nu_tensor *b = nu_new_tensor_1d(ctx, NU_TYPE_F32, 33);
    nu_test_fill_uniform(x->data, nu_nelements(x), 1, -2, 2);
    nu_test_fill_uniform(b->data, 33, 2, -1, 1);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *y = nu_gelu(ctx, nu_mul(ctx, nu_add(ctx, x, b), x));
    float r1[3 * 17 * 33], r2[3 * 17 * 33];
    nu_test_eval(ctx, y, r1, 1, false);
    nu_test_eval(ctx, y, r2, 2, false);
    nu_test_equal("1 vs 2 threads", r2, r1, nu_nelements(y));
    nu_ctx_free(ctx);
}

static nu_tensor *build_views(nu_ctx *ctx, nu_tensor **in, void *u) {
    /* permute, reshape and slice, then a nonlinearity so gradients are not trivial */
    nu_tensor *p = nu_permute(ctx, in[0], (int[]){1, 0, 2});              /* [3, 2, 4] */
    nu_tensor *r = nu_reshape(ctx, nu_contiguous(ctx, p), 2, (int64_t[]){6, 4});
    nu_tensor *s = nu_slice(ctx, r, 1, 1, 3);                              /* [6, 2] */
    return nu_tanh(ctx, s);
}

static void test_view_grads(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *x = nu_new_tensor_3d(ctx, NU_TYPE_F32, 2, 3, 4);
    nu_test_fill_uniform(x->data, 24, 3, -1, 1);
    nu_set_param(x);
    nu_set_name(x, "x");
    /* f32 central differences with step 1e-2 on O(1) values: truncation error ~1e-5 relative,
     * rounding ~1e-7/1e-2 = 1e-5; 1e-3 leaves a wide margin. */
    nu_test_gradcheck("views", build_views, &x, 1, NULL, 1e-2f, 1e-3, 100);
    nu_ctx_free(ctx);
}

typedef struct {
    nu_pool *pool;
} cancel_arg;

static void test_cancel(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *x = nu_new_tensor_1d(ctx, NU_TYPE_F32, 1024);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *y = x;
    for (int i = 0; i < 50; i++) y = nu_silu(ctx, y);
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, y);
    nu_pool *pool = nu_pool_new(2);
    nu_pool_cancel(pool);
    NU_CHECK(nu_graph_compute(g, pool) == NU_ERR_CANCELLED);
    NU_CHECK(strstr(nu_last_error(), "cancel") != NULL);
    NU_CHECK(nu_graph_compute(g, pool) == NU_OK); /* the flag resets */
    nu_pool_free(pool);
    nu_graph_free(g);
    nu_ctx_free(ctx);
}

static void test_errors(void) {
    NU_CHECK(nu_error(NU_ERR_FORMAT, "file %s: bad", "x.bin") == NU_ERR_FORMAT);
    NU_CHECK(strcmp(nu_last_error(), "file x.bin: bad") == 0);
    NU_CHECK(nu_error(NU_ERR_IO, "unet: %s", nu_last_error()) == NU_ERR_IO); /* prefixing itself */
    NU_CHECK(strcmp(nu_last_error(), "unet: file x.bin: bad") == 0);
    nu_clear_error();
    NU_CHECK(nu_last_error()[0] == 0);
    NU_CHECK(strcmp(nu_status_name(NU_ERR_NOMEM), "out of memory") == 0);
    /* a graph input without data is a user error, not a crash */
    nu_ctx_params cp = nu_ctx_params_init();
    cp.alloc_data = false;
    nu_ctx *ctx = nu_ctx_new(&cp);
    nu_tensor *x = nu_new_tensor_1d(ctx, NU_TYPE_F32, 8);
    nu_set_name(x, "latent");
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, nu_silu(ctx, x));
    NU_CHECK(nu_graph_compute(g, NULL) == NU_ERR_INVALID_ARG);
    NU_CHECK(strstr(nu_last_error(), "latent") != NULL);
    nu_graph_free(g);
    nu_ctx_free(ctx);
}

/* Two live graphs share a weight (leaf); intermediate nodes may not be shared. */
static void test_two_graphs(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *w = nu_new_tensor_1d(ctx, NU_TYPE_F32, 16);
    nu_test_fill_uniform(w->data, 16, 9, -1, 1);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *a = nu_silu(ctx, w);
    nu_tensor *b = nu_tanh(ctx, w);
    nu_graph *g1 = nu_graph_new(ctx), *g2 = nu_graph_new(ctx);
    nu_graph_expand(g1, a);
    nu_graph_expand(g2, b);
    NU_CHECK(nu_graph_n_nodes(g2) == 2);
    NU_CHECK(nu_graph_compute(g1, NULL) == NU_OK && nu_graph_compute(g2, NULL) == NU_OK);
    NU_CHECK(fabsf(((float *)b->data)[3] - tanhf(((float *)w->data)[3])) < 1e-6f);
    /* a third graph reading g1's intermediate `a` while g1 lives: a clear error */
    nu_graph *g3 = nu_graph_new(ctx);
    nu_graph_expand(g3, nu_sqr(ctx, a));
    NU_CHECK(nu_graph_alloc(g3) == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "another live graph"));
    nu_graph_free(g3);
    nu_graph_free(g1);
    nu_graph_free(g2);
    /* after g1 is freed, `a` can be placed again */
    nu_graph *g4 = nu_graph_new(ctx);
    nu_graph_expand(g4, nu_sqr(ctx, a));
    NU_CHECK(nu_graph_compute(g4, NULL) == NU_OK);
    nu_graph_free(g4);
    nu_ctx_free(ctx);
}

/* Parameter gradients are dense and private: a param used through a transpose gets contiguous
 * data, and two params whose gradient is the same node get separate tensors. */
static void test_grad_layout(void) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *w = nu_new_tensor_2d(ctx, NU_TYPE_F32, 2, 3);
    nu_tensor *a = nu_new_tensor_2d(ctx, NU_TYPE_F32, 3, 2);
    nu_tensor *b = nu_new_tensor_2d(ctx, NU_TYPE_F32, 3, 2);
    float wv[6] = {1, 2, 3, 4, 5, 6};
    memcpy(w->data, wv, sizeof wv);
    nu_set_param(w);
    nu_set_param(a);
    nu_set_param(b);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *wt = nu_transpose(ctx, w, 0, 1);              /* [3, 2] view */
    nu_tensor *y = nu_add(ctx, nu_mul(ctx, wt, wt), nu_add(ctx, a, b));
    nu_tensor *loss = nu_sum_all(ctx, y);
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, loss);
    nu_graph_backward(g, loss);
    NU_CHECK(nu_graph_compute(g, NULL) == NU_OK);
    NU_CHECK(nu_is_contiguous(w->grad) && !w->grad->view_src);
    const float *gw = w->grad->data; /* d/dw sum(w^2) = 2w, in w's own layout */
    for (int i = 0; i < 6; i++) NU_CHECK_MSG(gw[i] == 2 * wv[i], "grad w[%d] = %g", i, gw[i]);
    NU_CHECK(a->grad != b->grad && a->grad->data != b->grad->data);
    nu_graph_free(g);
    nu_ctx_free(ctx);
}

static void test_int_rows(void) {
    float in[6] = {-300.f, -1.5f, 0.5f, 2.5f, 254.6f, NAN};
    uint8_t u8[6];
    int8_t i8[6];
    nu_row_from_f32(NU_TYPE_U8, in, u8, 6);
    nu_row_from_f32(NU_TYPE_I8, in, i8, 6);
    NU_CHECK(u8[0] == 0 && u8[1] == 0 && u8[2] == 0 && u8[3] == 2 && u8[4] == 255 && u8[5] == 0);
    NU_CHECK(i8[0] == -128 && i8[1] == -2 && i8[3] == 2 && i8[4] == 127);
    nu_pool_cancel(NULL); /* harmless */
}

/* An input placed late in the order must not share memory with nodes that run before it. */
static void test_input_placement(void) {
    nu_ctx_params cp = nu_ctx_params_init();
    cp.alloc_data = false;
    nu_ctx *ctx = nu_ctx_new(&cp);
    nu_ctx_set_alloc_data(ctx, true);
    nu_tensor *x = nu_new_tensor_1d(ctx, NU_TYPE_F32, 256);
    nu_test_fill_uniform(x->data, 256, 4, -1, 1);
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *a = nu_silu(ctx, nu_silu(ctx, x)); /* temporaries freed before `in` is reached */
    nu_tensor *in = nu_new_tensor_1d(ctx, NU_TYPE_F32, 256);
    nu_set_input(in);
    nu_tensor *y = nu_add(ctx, a, in);
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, y);
    NU_CHECK(nu_graph_alloc(g) == NU_OK);
    for (int i = 0; i < 256; i++) ((float *)in->data)[i] = 1000.0f;
    NU_CHECK(nu_graph_compute(g, NULL) == NU_OK);
    float out[256];
    nu_tensor_get_f32(y, out);
    int bad = 0;
    for (int i = 0; i < 256; i++) bad += !(out[i] > 999.0f && out[i] < 1002.0f);
    NU_CHECK_MSG(bad == 0, "%d outputs lost the input's value", bad);
    nu_graph_free(g);
    nu_ctx_free(ctx);
}

int main(void) {
    test_input_placement();
    test_two_graphs();
    test_grad_layout();
    test_int_rows();
    test_f16();
    test_bf16();
    test_types();
    test_views();
    test_alloc_chain();
    test_alloc_skip();
    test_pool();
    test_threads();
    test_view_grads();
    test_cancel();
    test_errors();
    return nu_test_summary("test_core");
}
