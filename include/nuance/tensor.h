/*
 * nuance/tensor.h — the nuance engine: tensors, graphs, ops, autodiff, execution.
 *
 * Tutorial
 * --------
 * Building an op computes nothing: it records a node in a graph. A graph is built once per shape
 * and executed many times.
 *
 *     nu_ctx *ctx = nu_ctx_new(NULL);                       // arena for headers (+ data)
 *     nu_tensor *x = nu_new_tensor(ctx, NU_TYPE_F32, 2, (int64_t[]){4, 8});   // data allocated
 *     nu_tensor *w = nu_new_tensor(ctx, NU_TYPE_F32, 2, (int64_t[]){16, 8});  // Linear (out, in)
 *     nu_set_param(w);                                      // wants a gradient
 *     nu_tensor *y = nu_silu(ctx, nu_linear(ctx, x, w, NULL)); // (4, 16), no data yet
 *     nu_tensor *loss = nu_mean_all(ctx, nu_mul(ctx, y, y));
 *
 *     nu_graph *g = nu_graph_new(ctx);
 *     nu_graph_expand(g, loss);                             // forward nodes, topological order
 *     nu_graph_backward(g, loss);                           // appends gradient nodes (autodiff)
 *     nu_graph_alloc(g);                                    // liveness-based activation memory
 *     nu_pool *pool = nu_pool_new(2);
 *     nu_graph_compute(g, pool);                            // runs; w->grad->data holds dL/dw
 *
 * Shapes are stored outermost first, exactly as PyTorch prints them (NCHW activations, OIHW
 * conv weights, Linear weights (out, in)); ne[] holds sizes and nb[] byte strides, so views and
 * permutes are free. Block-quantized types (q8_0, q4_0, ...) are blocked along the innermost
 * dimension with GGUF's block layouts.
 *
 * Errors a user can cause return a nu_status and set nu_last_error(); broken invariants abort
 * through NU_ASSERT. The library never prints: it logs through nu_log_set_callback().
 */
#ifndef NUANCE_TENSOR_H
#define NUANCE_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status, errors, logging */

typedef enum nu_status {
    NU_OK = 0,
    NU_ERR_INVALID_ARG, /* bad argument or flag                              */
    NU_ERR_IO,          /* file cannot be opened, read or written             */
    NU_ERR_FORMAT,      /* file content is malformed, truncated or corrupt    */
    NU_ERR_UNSUPPORTED, /* valid but not supported (dtype, version, feature)  */
    NU_ERR_NOMEM,       /* allocation failed or a size exceeds sane limits    */
    NU_ERR_NOT_FOUND,   /* a named tensor, key or file is missing             */
    NU_ERR_CANCELLED,   /* the user cancelled a computation                   */
    NU_ERR_NUMERIC,     /* NaN/Inf where a finite value is required           */
    NU_STATUS_COUNT
} nu_status;

/* Message of the last error set on this thread ("" if none). */
const char *nu_last_error(void);
const char *nu_status_name(nu_status s);
/* Sets the thread's error message (printf-style) and returns `s`, for `return nu_error(...)`. */
nu_status nu_error(nu_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nu_clear_error(void);

typedef enum nu_log_level { NU_LOG_DEBUG, NU_LOG_INFO, NU_LOG_WARN, NU_LOG_ERROR, NU_LOG_LEVEL_COUNT } nu_log_level;
typedef void (*nu_log_fn)(nu_log_level level, const char *msg, void *user);
/* Installs the log sink (NULL: discard). Messages below `min_level` are dropped. */
void nu_log_set_callback(nu_log_fn fn, void *user, nu_log_level min_level);
void nu_log(nu_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Programmer errors: abort with file and line. */
void nu_abort(const char *file, int line, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
#define NU_ASSERT(x)                                                                           \
    do {                                                                                       \
        if (!(x)) nu_abort(__FILE__, __LINE__, "assertion failed: %s", #x);                    \
    } while (0)

/* ---------------------------------------------------------------- dtypes */

typedef enum nu_type {
    NU_TYPE_F32,
    NU_TYPE_F16,
    NU_TYPE_BF16,
    NU_TYPE_F64,
    NU_TYPE_I8,
    NU_TYPE_U8,
    NU_TYPE_I16,
    NU_TYPE_I32,
    NU_TYPE_I64,
    NU_TYPE_BOOL,
    NU_TYPE_Q8_0, /* 32 values: f16 d, i8 qs[32];             x = q*d        */
    NU_TYPE_Q4_0, /* 32 values: f16 d, u8 qs[16];             x = (q-8)*d    */
    NU_TYPE_Q4_1, /* 32 values: f16 d, f16 m, u8 qs[16];      x = q*d + m    */
    NU_TYPE_Q5_0, /* 32 values: f16 d, u8 qh[4], u8 qs[16];   x = (q-16)*d   */
    NU_TYPE_Q5_1, /* 32 values: f16 d, f16 m, u8 qh[4], qs[16]; x = q*d + m  */
    NU_TYPE_COUNT
} nu_type;

typedef struct nu_type_traits {
    const char *name;    /* "f32", "q8_0", ...                               */
    int64_t blck;        /* values per block (1 for plain types)             */
    size_t size;         /* bytes per block                                  */
    bool is_quant;       /* block-quantized                                  */
    bool is_float;       /* f32/f16/bf16/f64                                 */
} nu_type_traits;

const nu_type_traits *nu_type_info(nu_type t);
const char *nu_type_name(nu_type t);
/* Parses "f32", "f16", "q8_0", ...; returns NU_TYPE_COUNT if unknown. */
nu_type nu_type_from_name(const char *name);
/* Bytes of a row of n values (n must be a multiple of the block size). */
size_t nu_row_size(nu_type t, int64_t n);

/* Scalar conversions (round to nearest even, NaN/Inf preserved). */
uint16_t nu_f32_to_f16(float f);
float nu_f16_to_f32(uint16_t h);
uint16_t nu_f32_to_bf16(float f);
float nu_bf16_to_f32(uint16_t h);

/* Row conversions: n values. Quantized `dst`/`src` must have n % 32 == 0. `to_f32` handles every
 * type (integers are converted by value); `from_f32` handles every type too (integers round to
 * nearest and saturate, NaN -> 0; bool is x != 0). */
void nu_row_to_f32(nu_type t, const void *src, float *dst, int64_t n);
void nu_row_from_f32(nu_type t, const float *src, void *dst, int64_t n);

/* ---------------------------------------------------------------- tensors */

#define NU_MAX_DIMS 6
#define NU_MAX_SRC 6
#define NU_MAX_OP_PARAMS 16
#define NU_MAX_NAME 96

enum nu_tensor_flags {
    NU_FLAG_PARAM = 1u << 0,  /* trainable: gets a gradient in nu_graph_backward     */
    NU_FLAG_INPUT = 1u << 1,  /* data set by the caller before each compute           */
    NU_FLAG_OUTPUT = 1u << 2, /* must survive the whole compute (never reused)        */
    NU_FLAG_LOSS = 1u << 3,   /* the scalar that backward differentiates              */
};

typedef struct nu_tensor nu_tensor;
struct nu_tensor {
    nu_type type;
    int ndim;
    int64_t ne[NU_MAX_DIMS]; /* sizes, outermost first (PyTorch order)                       */
    int64_t nb[NU_MAX_DIMS]; /* byte strides; for quantized types nb[ndim-1] = block size    */

    int op;                              /* enum nu_op (NU_OP_NONE for leaves)           */
    int32_t params[NU_MAX_OP_PARAMS];    /* op parameters; floats via nu_get/set_param_f */
    nu_tensor *src[NU_MAX_SRC];          /* operands                                     */

    nu_tensor *view_src; /* views alias view_src's memory at byte offset view_offs         */
    size_t view_offs;

    void *data;   /* NULL until allocated                                                  */
    size_t extra; /* bytes after the tensor's own data for auxiliary outputs (norm stats...) */

    uint32_t flags;
    nu_tensor *grad; /* gradient after nu_graph_backward (same shape, f32)                 */
    char name[NU_MAX_NAME];
};

int64_t nu_nelements(const nu_tensor *t);
size_t nu_nbytes(const nu_tensor *t); /* bytes spanned by the tensor's own data (no extra) */
bool nu_is_contiguous(const nu_tensor *t);
bool nu_same_shape(const nu_tensor *a, const nu_tensor *b);
/* "f32 [2, 4, 64, 64]" into buf. */
const char *nu_shape_str(const nu_tensor *t, char *buf, size_t len);
void nu_set_name(nu_tensor *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void nu_set_param(nu_tensor *t) { t->flags |= NU_FLAG_PARAM; }
static inline void nu_set_input(nu_tensor *t) { t->flags |= NU_FLAG_INPUT; }
static inline void nu_set_output(nu_tensor *t) { t->flags |= NU_FLAG_OUTPUT; }

/* Element access for tests and small host code (f32-convertible types; slow, by index). */
float nu_get_f32_nd(const nu_tensor *t, const int64_t *idx);
void nu_set_f32_nd(nu_tensor *t, const int64_t *idx, float v);
/* Copies all values (any plain type, any strides) into / out of a dense f32 array. */
void nu_tensor_get_f32(const nu_tensor *t, float *out);
void nu_tensor_set_f32(nu_tensor *t, const float *in);

/* ---------------------------------------------------------------- context (arena) */

typedef struct nu_ctx nu_ctx;
typedef struct nu_ctx_params {
    size_t arena_bytes; /* headers + (if alloc_data) tensor data; grows in chunks if 0      */
    bool alloc_data;    /* nu_new_tensor gets data immediately (weights, tests)             */
} nu_ctx_params;
nu_ctx_params nu_ctx_params_init(void); /* arena grows as needed, alloc_data = true */
nu_ctx *nu_ctx_new(const nu_ctx_params *p); /* NULL params: defaults */
void nu_ctx_free(nu_ctx *ctx);
/* Switch data allocation for tensors created from now on (e.g. weights yes, activations no). */
void nu_ctx_set_alloc_data(nu_ctx *ctx, bool on);
/* Arena allocation (64-byte aligned, zeroed, lives until nu_ctx_free). NULL on failure. */
void *nu_ctx_alloc(nu_ctx *ctx, size_t bytes);

nu_tensor *nu_new_tensor(nu_ctx *ctx, nu_type type, int ndim, const int64_t *ne);
nu_tensor *nu_new_tensor_1d(nu_ctx *ctx, nu_type type, int64_t n0);
nu_tensor *nu_new_tensor_2d(nu_ctx *ctx, nu_type type, int64_t n0, int64_t n1);
nu_tensor *nu_new_tensor_3d(nu_ctx *ctx, nu_type type, int64_t n0, int64_t n1, int64_t n2);
nu_tensor *nu_new_tensor_4d(nu_ctx *ctx, nu_type type, int64_t n0, int64_t n1, int64_t n2, int64_t n3);
/* A tensor header over caller-owned memory (e.g. an mmapped weight); contiguous strides. */
nu_tensor *nu_new_tensor_ext(nu_ctx *ctx, nu_type type, int ndim, const int64_t *ne, void *data);
/* A header-only copy with the same shape/type (no data, op NONE). */
nu_tensor *nu_dup_tensor(nu_ctx *ctx, const nu_tensor *t);
nu_tensor *nu_scalar_f32(nu_ctx *ctx, float v); /* 1-element f32 tensor with data */

/* ---------------------------------------------------------------- ops (graph builders) */
/* Every builder below records a node; none computes. Shapes follow PyTorch semantics; a shape
 * mismatch is a programmer error (NU_ASSERT). Differentiable ops have backward rules. */

/* views: share memory, no computation */
nu_tensor *nu_view(nu_ctx *ctx, nu_tensor *a, int ndim, const int64_t *ne, const int64_t *nb, size_t offs);
nu_tensor *nu_reshape(nu_ctx *ctx, nu_tensor *a, int ndim, const int64_t *ne); /* a contiguous */
nu_tensor *nu_permute(nu_ctx *ctx, nu_tensor *a, const int *perm); /* out dim i = a dim perm[i] */
nu_tensor *nu_transpose(nu_ctx *ctx, nu_tensor *a, int d0, int d1);
nu_tensor *nu_contiguous(nu_ctx *ctx, nu_tensor *a);
nu_tensor *nu_cast(nu_ctx *ctx, nu_tensor *a, nu_type type); /* float/int/quant -> f32, f32 -> f16/bf16/quant */

/* elementwise with numpy/PyTorch broadcasting (dims aligned at the right) */
nu_tensor *nu_add(nu_ctx *ctx, nu_tensor *a, nu_tensor *b);
nu_tensor *nu_sub(nu_ctx *ctx, nu_tensor *a, nu_tensor *b);
nu_tensor *nu_mul(nu_ctx *ctx, nu_tensor *a, nu_tensor *b);
nu_tensor *nu_div(nu_ctx *ctx, nu_tensor *a, nu_tensor *b);
nu_tensor *nu_scale(nu_ctx *ctx, nu_tensor *a, float s);            /* a*s          */
nu_tensor *nu_affine(nu_ctx *ctx, nu_tensor *a, float s, float b);  /* a*s + b      */
nu_tensor *nu_expand(nu_ctx *ctx, nu_tensor *a, int ndim, const int64_t *ne); /* broadcast copy  */
nu_tensor *nu_sum_to(nu_ctx *ctx, nu_tensor *a, int ndim, const int64_t *ne); /* reverse of expand */

/* unary activations */
nu_tensor *nu_silu(nu_ctx *ctx, nu_tensor *a);
nu_tensor *nu_gelu(nu_ctx *ctx, nu_tensor *a);      /* erf form (PyTorch default) */
nu_tensor *nu_gelu_tanh(nu_ctx *ctx, nu_tensor *a); /* approximate='tanh'        */
nu_tensor *nu_quick_gelu(nu_ctx *ctx, nu_tensor *a); /* x*sigmoid(1.702x) (CLIP)  */
nu_tensor *nu_sigmoid(nu_ctx *ctx, nu_tensor *a);
nu_tensor *nu_tanh(nu_ctx *ctx, nu_tensor *a);
nu_tensor *nu_relu(nu_ctx *ctx, nu_tensor *a);
nu_tensor *nu_sqr(nu_ctx *ctx, nu_tensor *a);
nu_tensor *nu_sqrt(nu_ctx *ctx, nu_tensor *a);
nu_tensor *nu_exp(nu_ctx *ctx, nu_tensor *a);
nu_tensor *nu_ln(nu_ctx *ctx, nu_tensor *a); /* natural log */

/* reductions: along `dim` (negative counts from the end), keepdim semantics as PyTorch */
nu_tensor *nu_sum(nu_ctx *ctx, nu_tensor *a, int dim, bool keepdim);
nu_tensor *nu_mean(nu_ctx *ctx, nu_tensor *a, int dim, bool keepdim);
nu_tensor *nu_max(nu_ctx *ctx, nu_tensor *a, int dim, bool keepdim);
nu_tensor *nu_sum_all(nu_ctx *ctx, nu_tensor *a);  /* shape [1] */
nu_tensor *nu_mean_all(nu_ctx *ctx, nu_tensor *a); /* shape [1] */

/* matrix products. a: [..., M, K] (or [..., K, M] if trans_a); b: [..., K, N] (or [..., N, K]
 * if trans_b); batch dims broadcast. b may be f16/bf16/q8_0/q4_0/... (weights): it is dequantized
 * in tiles inside the kernel. */
nu_tensor *nu_matmul(nu_ctx *ctx, nu_tensor *a, nu_tensor *b, bool trans_a, bool trans_b);
/* x [..., in] @ w[out, in]^T + bias[out] (bias may be NULL) — torch.nn.Linear */
nu_tensor *nu_linear(nu_ctx *ctx, nu_tensor *x, nu_tensor *w, nu_tensor *bias);

/* convolutions, NCHW / OIHW as torch.nn.functional.conv2d. bias may be NULL. Weights f32, f16
 * or bf16 [O, I/groups, KH, KW]; conv2d also takes a weight in matrix form: [O, I/groups*KH*KW]
 * (each output channel's filter as one row, the OIHW order) of any weight type, block-quantized
 * ones included (q8_0, q4_0, ...: the blocks run along the row; the row length must be a
 * multiple of 32), with kernel[] giving KH, KW. Matrix-form weights are for inference: conv2d
 * has no backward rule for them. Non-f32 weights are dequantized one filter (or tile) at a time
 * inside the kernel, never copied whole to f32. */
typedef struct nu_conv2d_params {
    int stride[2], padding[2], dilation[2], groups;
    int output_padding[2]; /* conv_transpose2d only */
    int kernel[2];         /* KH, KW: required for a matrix-form weight; 0 or equal to the
                              weight's otherwise */
    bool relu;             /* conv2d only: y = max(conv + bias, 0) in the same pass (the
                              backward rule included); NaN passes through, as torch.relu */
} nu_conv2d_params;
nu_conv2d_params nu_conv2d_params_init(void); /* stride 1, padding 0, dilation 1, groups 1 */
nu_tensor *nu_conv2d(nu_ctx *ctx, nu_tensor *x, nu_tensor *w, nu_tensor *bias, const nu_conv2d_params *p);
/* w: [C_in, C_out/groups, KH, KW] as torch.nn.ConvTranspose2d */
nu_tensor *nu_conv_transpose2d(nu_ctx *ctx, nu_tensor *x, nu_tensor *w, nu_tensor *bias, const nu_conv2d_params *p);

/* normalisation (affine weight/bias may be NULL) */
nu_tensor *nu_group_norm(nu_ctx *ctx, nu_tensor *x, int groups, nu_tensor *w, nu_tensor *b, float eps);
nu_tensor *nu_layer_norm(nu_ctx *ctx, nu_tensor *x, nu_tensor *w, nu_tensor *b, float eps); /* last dim */
nu_tensor *nu_rms_norm(nu_ctx *ctx, nu_tensor *x, nu_tensor *w, float eps);                 /* last dim */

nu_tensor *nu_softmax(nu_ctx *ctx, nu_tensor *a); /* along the last dim */

/* Fused scaled-dot-product attention, as torch.nn.functional.scaled_dot_product_attention.
 * q [B, NH, Tq, HD], k [B, NH, Tk, HD], v [B, NH, Tk, HDv]; mask NULL or additive f32
 * broadcastable to [B, NH, Tq, Tk]; scale <= 0 means 1/sqrt(HD). Never materialises Tq x Tk. */
nu_tensor *nu_attention(nu_ctx *ctx, nu_tensor *q, nu_tensor *k, nu_tensor *v, nu_tensor *mask, bool causal, float scale);

/* spatial / shape ops (NCHW) */
nu_tensor *nu_upsample_nearest(nu_ctx *ctx, nu_tensor *x, int scale);
nu_tensor *nu_avg_pool2d(nu_ctx *ctx, nu_tensor *x, int kernel, int stride, int padding); /* count_include_pad=True */
/* count_include_pad=false divides by the number of in-image taps (Inception's pools). */
nu_tensor *nu_avg_pool2d_ex(nu_ctx *ctx, nu_tensor *x, int kernel, int stride, int padding, bool count_include_pad);
nu_tensor *nu_max_pool2d(nu_ctx *ctx, nu_tensor *x, int kernel, int stride, int padding);
nu_tensor *nu_concat(nu_ctx *ctx, nu_tensor *a, nu_tensor *b, int dim);
/* zero-pad: pad[2*i], pad[2*i+1] = before/after for dim i (all ndim dims, outermost first) */
nu_tensor *nu_pad(nu_ctx *ctx, nu_tensor *a, const int *pad);
nu_tensor *nu_slice(nu_ctx *ctx, nu_tensor *a, int dim, int64_t start, int64_t end); /* a view */

/* misc */
/* t [N] (any float) -> [N, dim]: [cos | sin] (flip_sin_to_cos) or [sin | cos], as diffusers'
 * get_timestep_embedding with downscale_freq_shift and max_period 10000. */
nu_tensor *nu_timestep_embedding(nu_ctx *ctx, nu_tensor *t, int dim, bool flip_sin_to_cos, float downscale_freq_shift);
/* table [V, D], ids [...] i32/i64 -> [..., D] (torch.nn.Embedding) */
nu_tensor *nu_embedding(nu_ctx *ctx, nu_tensor *table, nu_tensor *ids);
/* inverted dropout with probability p; mask from (seed, element index) so backward recomputes it */
nu_tensor *nu_dropout(nu_ctx *ctx, nu_tensor *a, float p, uint64_t seed);
nu_tensor *nu_mse_loss(nu_ctx *ctx, nu_tensor *a, nu_tensor *b); /* mean((a-b)^2), shape [1] */
/* logits [N, C], targets [N] i32/i64 -> mean cross entropy, shape [1] */
nu_tensor *nu_cross_entropy(nu_ctx *ctx, nu_tensor *logits, nu_tensor *targets);

/* ---------------------------------------------------------------- graphs */

typedef struct nu_graph nu_graph;
/* A graph lives in (and builds new nodes in) ctx; free it before the ctx. Freeing a graph
 * releases its activation buffer: read outputs before that (their data pointers become NULL, so
 * the same nodes can be placed by another graph). */
nu_graph *nu_graph_new(nu_ctx *ctx);
void nu_graph_free(nu_graph *g);
/* Adds `t` and everything it depends on, in topological order. Marks t as an output. */
void nu_graph_expand(nu_graph *g, nu_tensor *t);
/* Appends the gradient graph of `loss` (a 1-element f32 node); afterwards every NU_FLAG_PARAM
 * tensor reached from loss has ->grad set and marked as an output. */
void nu_graph_backward(nu_graph *g, nu_tensor *loss);
int nu_graph_n_nodes(const nu_graph *g);
nu_tensor *nu_graph_node(const nu_graph *g, int i);

/* Places every node without data in one activation buffer, reusing memory once a tensor's last
 * consumer has run. Returns NU_ERR_NOMEM on failure. */
nu_status nu_graph_alloc(nu_graph *g);
size_t nu_graph_peak_bytes(const nu_graph *g); /* activation buffer size after nu_graph_alloc */
/* Peak the liveness lower bound allows: max over steps of the bytes alive at that step. */
size_t nu_graph_liveness_bound(const nu_graph *g);

typedef struct nu_pool nu_pool;
/* n_threads <= 0: number of CPUs. A pool runs one computation at a time: use one pool per
 * thread that computes graphs concurrently. */
nu_pool *nu_pool_new(int n_threads);
void nu_pool_free(nu_pool *pool);
int nu_pool_n_threads(const nu_pool *pool);
/* Polled between nodes; nu_graph_compute then returns NU_ERR_CANCELLED. */
void nu_pool_cancel(nu_pool *pool);

typedef struct nu_compute_opts {
    bool use_ref; /* run the scalar reference kernels instead of the fast paths (tests) */
} nu_compute_opts;
nu_status nu_graph_compute(nu_graph *g, nu_pool *pool);
nu_status nu_graph_compute_opts(nu_graph *g, nu_pool *pool, const nu_compute_opts *opts);

/* ---------------------------------------------------------------- runtime info */

typedef struct nu_cpu_features {
    bool avx, avx2, fma, f16c, avx512f;
} nu_cpu_features;
nu_cpu_features nu_cpu_detect(void);
/* Whether the fast (SIMD) kernels are in use; false forces scalar twins process-wide. */
bool nu_cpu_fast_enabled(void);
void nu_cpu_set_fast(bool on);
const char *nu_blas_name(void); /* "OpenBLAS 0.3.21 (..)" */
const char *nu_version(void);

#ifdef __cplusplus
}
#endif
#endif
