/*
 * internal.h — engine internals shared by core, ops and the CPU backend (not installed).
 *
 * The op list lives in src/ops/ops.def. Each op family registers, at start-up:
 *   - in src/ops/op_<family>.c, a nu_op_def per op (name, backward rule), via nu_ops_register_<family>;
 *   - in src/cpu/k_<family>.c, a nu_cpu_kernel per op (forward kernel, work-buffer size), via
 *     nu_cpu_register_<family>.
 * Kernels receive (ith, nth) and split their work themselves; nodes are separated by a barrier.
 */
#ifndef NU_INTERNAL_H
#define NU_INTERNAL_H

#include <string.h>

#include "nuance/tensor.h"

enum nu_op {
#define NU_OP(e, name, fam) NU_OP_##e,
#include "ops/ops.def"
#undef NU_OP
    NU_OP_COUNT
};

enum nu_unary {
    NU_UNARY_SILU,
    NU_UNARY_GELU,       /* erf form */
    NU_UNARY_GELU_TANH,
    NU_UNARY_QUICK_GELU, /* x*sigmoid(1.702x) */
    NU_UNARY_SIGMOID,
    NU_UNARY_TANH,
    NU_UNARY_RELU,
    NU_UNARY_SQR,
    NU_UNARY_SQRT,
    NU_UNARY_EXP,
    NU_UNARY_LOG,
    NU_UNARY_COUNT
};

/* View kinds (params[0] of NU_OP_VIEW) decide the backward rule. */
enum nu_view_kind {
    NU_VIEW_GENERIC, /* no backward                                  */
    NU_VIEW_RESHAPE, /* backward: reshape gradient to src shape        */
    NU_VIEW_PERMUTE, /* params[1..ndim] = perm; backward: inverse perm */
    NU_VIEW_SLICE,   /* params[1] dim, [2..3] start (i64 lo/hi); backward: zero-pad */
    NU_VIEW_KIND_COUNT
};

/* Internal tensor flags (above the public ones). */
#define NU_FLAG_NEEDS_GRAD (1u << 8) /* depends on a PARAM: gets a gradient in backward */
#define NU_FLAG_VISITED (1u << 9)    /* graph expansion bookkeeping                       */
#define NU_FLAG_GRAPH_DATA (1u << 10) /* data lives in a graph's activation buffer         */

/* ---- op parameters: int32 slots; floats and int64 stored bitwise */
static inline void nu_set_param_f(nu_tensor *t, int i, float v) { memcpy(&t->params[i], &v, 4); }
static inline float nu_get_param_f(const nu_tensor *t, int i) { float v; memcpy(&v, &t->params[i], 4); return v; }
static inline void nu_set_param_i64(nu_tensor *t, int i, int64_t v) { memcpy(&t->params[i], &v, 8); }
static inline int64_t nu_get_param_i64(const nu_tensor *t, int i) { int64_t v; memcpy(&v, &t->params[i], 8); return v; }

/* ---- op definitions (builder side) */
typedef struct nu_op_def {
    const char *name;
    /* Adds gradient contributions for node->src[*] given dL/dnode = gy, by calling
     * nu_grad_accumulate. NULL: not differentiable (backward through it is an error). */
    void (*backward)(nu_ctx *ctx, nu_tensor *node, nu_tensor *gy);
} nu_op_def;

const nu_op_def *nu_op_get(int op);
const char *nu_op_name(int op);

/* Creates an op node (no data) with a contiguous layout. */
nu_tensor *nu_new_node(nu_ctx *ctx, int op, nu_type type, int ndim, const int64_t *ne);
/* Sets contiguous byte strides for t's type and shape. */
void nu_set_contiguous_strides(nu_tensor *t);
/* Normalises a possibly negative dim against ndim (asserts range). */
int nu_norm_dim(const nu_tensor *t, int dim);
/* For backward rules: add `g` (shape of `src`, or broadcastable-to-src after nu_sum_to) to
 * src's gradient; a no-op when src does not need a gradient. */
void nu_grad_accumulate(nu_ctx *ctx, nu_tensor *src, nu_tensor *g);
/* gy * f'(x) for the unary function `kind` (enum nu_unary_kind): one UNARY_BACKWARD node. */
nu_tensor *nu_unary_grad(nu_ctx *ctx, int kind, nu_tensor *gy, nu_tensor *x);
static inline bool nu_needs_grad(const nu_tensor *t) { return t && (t->flags & NU_FLAG_NEEDS_GRAD); }
/* Reduces g to the shape of t by summing broadcast dims (returns g if shapes match). */
nu_tensor *nu_reduce_to_shape(nu_ctx *ctx, nu_tensor *g, const nu_tensor *t);

/* ---- CPU execution */
typedef struct nu_pool nu_pool;
typedef struct nu_compute_params {
    int ith, nth;   /* this thread's index, thread count                          */
    void *wdata;    /* shared work buffer (size from the kernel's work_size)      */
    size_t wsize;
    bool use_ref;   /* run the scalar reference twin                              */
    nu_pool *pool;
} nu_compute_params;

typedef void (*nu_kernel_fn)(const nu_compute_params *p, nu_tensor *dst);
typedef size_t (*nu_work_fn)(const nu_tensor *dst, int nth);
typedef struct nu_cpu_kernel {
    nu_kernel_fn forward;
    nu_work_fn work_size; /* NULL: no work buffer */
} nu_cpu_kernel;

const nu_cpu_kernel *nu_cpu_kernel_get(int op);
/* All threads of the pool wait here (usable inside a kernel between phases). */
void nu_compute_barrier(const nu_compute_params *p);
/* Splits [0, n) evenly: this thread's [*lo, *hi). */
static inline void nu_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = (n + nth - 1) / nth;
    *lo = per * ith < n ? per * ith : n;
    *hi = *lo + per < n ? *lo + per : n;
}
/* Whether fast kernels may run for this call (not use_ref, CPU has AVX2+FMA, not disabled). */
bool nu_cpu_use_fast(const nu_compute_params *p);

/* Runs fn(ith, nth, arg) on every pool thread (pool may be NULL: one thread). */
void nu_pool_run(nu_pool *pool, void (*fn)(int ith, int nth, void *arg), void *arg);

/* OpenBLAS threads: we keep it single-threaded and split work across our pool ourselves. */
void nu_blas_init(void);

/* Family registration (one per family in ops.def). */
#define NU_FAMILIES(X) X(core) X(elementwise) X(reduce) X(norm) X(matmul) X(conv) X(attention) X(spatial) X(misc)
#define NU_DECL_REG(fam)                                                                       \
    void nu_ops_register_##fam(nu_op_def *tab);                                                \
    void nu_cpu_register_##fam(nu_cpu_kernel *tab);
NU_FAMILIES(NU_DECL_REG)
#undef NU_DECL_REG

/* ---- quantized blocks (src/cpu/quant.c): GGUF layouts, 32 values per block */
#define NU_QK 32
typedef struct { uint16_t d; int8_t qs[32]; } nu_block_q8_0;                     /* 34 B */
typedef struct { uint16_t d; uint8_t qs[16]; } nu_block_q4_0;                    /* 18 B */
typedef struct { uint16_t d, m; uint8_t qs[16]; } nu_block_q4_1;                 /* 20 B */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } nu_block_q5_0;     /* 22 B */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } nu_block_q5_1;  /* 24 B */
void nu_quant_row_to_f32(nu_type t, const void *src, float *dst, int64_t n);
void nu_quant_row_from_f32(nu_type t, const float *src, void *dst, int64_t n);

/* Row functions of the unary activations (src/cpu/k_unary.c), usable by any kernel:
 * y = f(x) / dx = dy * f'(x) over n contiguous values; `fast` picks the AVX2 approximations
 * (error bounds in k_unary.c), otherwise libm in double, rounded once. */
void nu_cpu_unary_f32(int kind, float *y, const float *x, int64_t n, bool fast);
void nu_cpu_unary_backward_f32(int kind, float *dx, const float *dy, const float *x, int64_t n, bool fast);

/* Pointer to element idx (byte strides) */
static inline void *nu_elem_ptr(const nu_tensor *t, const int64_t *idx) {
    char *p = (char *)t->data;
    for (int d = 0; d < t->ndim; d++) p += idx[d] * t->nb[d];
    return p;
}

#endif
