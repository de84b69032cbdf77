/*
 * gemm.h — the CPU backend's internal GEMM API (used by the matmul, conv and attention kernels
 * and by `nuance bench`), plus row dequantization of weight types.
 *
 * All matrices are row-major with leading dimensions, as CBLAS: C[M,N] = alpha*op(A)*op(B) +
 * beta*C, op(A) = A (M x K) or A^T (A stored K x M), likewise B. With beta == 0, C is never read.
 *
 * Threading: OpenBLAS is kept single-threaded (nu_blas_init); the *_part functions let thread
 * ith of nth compute its own block of C, so a kernel calls them from every pool thread (no
 * barrier inside). Typed weights (f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1) are dequantized tile
 * by tile into a per-thread buffer and multiplied with sgemm, never copied whole to f32.
 *
 * Every fast path has a scalar twin (fast == false): a naive triple loop with double
 * accumulation (GEMM) and the scalar GGUF dequantizers; the split over threads never changes a
 * reference result. Tested by tests/test_op_matmul.c and tests/test_quant.c.
 */
#ifndef NU_CPU_GEMM_H
#define NU_CPU_GEMM_H

#include "core/internal.h"

/* FLOPs of one GEMM, a multiply-add counted as 2 (the BLAS benchmark convention): 2*M*N*K. */
static inline double nu_gemm_flops(int64_t M, int64_t N, int64_t K) { return 2.0 * (double)M * (double)N * (double)K; }

/* FLOPs of a NU_OP_MATMUL node: 2*M*N*K per batch matrix (k_matmul.c). */
double nu_matmul_node_flops(const nu_tensor *node);

/* ---------------------------------------------------------------- f32 GEMM */

/* One thread, whole matrix. fast: cblas_sgemm; otherwise the scalar reference. */
void nu_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc, bool fast);
/* Thread ith of nth computes its block of C (split along the larger of M and N). */
void nu_gemm_f32_part(int ith, int nth, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc,
                      bool fast);

/* ---------------------------------------------------------------- GEMM with a typed B (weights) */

/* B is stored row-major as rows x cols = N x K if tb, else K x N; each stored row is `ldb`
 * bytes apart and holds its values contiguously in btype (for block-quantized types the stored
 * column count is a multiple of 32: blocks run along the row, GGUF layout). */
typedef struct nu_gemm_args {
    int64_t M, N, K;
    bool ta, tb;
    const float *a;
    int64_t lda; /* elements */
    nu_type btype;
    const void *b;
    size_t ldb; /* bytes between stored rows of B */
    float *c;
    int64_t ldc; /* elements */
    float alpha, beta;
} nu_gemm_args;

/* Bytes of scratch one thread needs for nu_gemm_part (fast or reference; 0 for f32 B). */
size_t nu_gemm_thread_work(const nu_gemm_args *g);
/* Thread ith of nth computes its block of C. `work`: this thread's own scratch of at least
 * nu_gemm_thread_work(g) bytes, 64-byte aligned. fast: BLAS + SIMD dequantization (the caller
 * checks nu_cpu_use_fast / nu_cpu_fast_enabled). */
void nu_gemm_part(const nu_gemm_args *g, int ith, int nth, void *work, bool fast);
/* Runs one GEMM on every thread of `pool` (NULL: the calling thread) with its own scratch: the
 * entry point for benchmarks. NU_ERR_NOMEM if the scratch cannot be allocated. */
nu_status nu_gemm_run(nu_pool *pool, const nu_gemm_args *g, bool use_ref);

/* Tile shape of the typed path (exposed for benchmarks and tests): stored-row/col block sizes. */
typedef struct nu_gemm_tiling {
    int64_t nb; /* output columns (N) per tile                 */
    int64_t kb; /* reduction length (K) per tile, multiple of 32 */
} nu_gemm_tiling;
nu_gemm_tiling nu_gemm_get_tiling(void);
void nu_gemm_set_tiling(nu_gemm_tiling t); /* for tuning; not thread-safe against running GEMMs */

/* ---------------------------------------------------------------- dequantization (quant.c) */

/* Whether `t` can be the B operand of nu_gemm_part. */
bool nu_gemm_btype_ok(nu_type t);
/* n values of a row of type t (f32, f16, bf16 or a block type; n % 32 == 0 for block types)
 * to f32. fast: AVX2/F16C version (caller checks CPU support); bit-identical to the scalar one. */
void nu_dequant_row(nu_type t, const void *src, float *dst, int64_t n, bool fast);
/* The scalar and AVX2 twins for block types only. */
void nu_quant_row_to_f32_ref(nu_type t, const void *src, float *dst, int64_t n);
void nu_quant_row_to_f32_avx2(nu_type t, const void *src, float *dst, int64_t n);

#endif
