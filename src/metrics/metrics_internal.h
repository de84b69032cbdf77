/*
 * metrics_internal.h — helpers shared by the metric implementations in src/metrics/ (not
 * installed): numpy's legacy RandomState (MT19937 + permutation) so that subset draws and
 * shuffles match clean-fid / torch-fidelity bit for bit, a pool-parallel double GEMM, and the
 * LAPACK prototypes we call (OpenBLAS ships LAPACK; Fortran ABI with hidden string lengths).
 *
 * Tested through tests/test_metrics.c (the KID fixture's subsets come from numpy's generator).
 */
#ifndef NU_METRICS_INTERNAL_H
#define NU_METRICS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "nuance/tensor.h"

/* ---- numpy.random.RandomState (legacy MT19937), numpy >= 1.17 semantics */
typedef struct nu_np_random {
    uint32_t mt[624];
    int pos;
} nu_np_random;
/* RandomState(seed) / np.random.seed(seed) for an integer seed in [0, 2^32). */
void nu_np_random_seed(nu_np_random *r, uint32_t seed);
uint32_t nu_np_random_u32(nu_np_random *r);
/* RandomState.permutation(n): out[0..n) = Fisher-Yates shuffle of 0..n-1 drawing
 * j = random_interval(i) for i = n-1 down to 1 (numpy's legacy _shuffle_raw). Also
 * RandomState.choice(n, m, replace=False) == permutation(n)[:m]. */
void nu_np_random_permutation(nu_np_random *r, int64_t *out, int64_t n);

/* ---- C[M, N] = op(A) op(B) (row-major doubles), rows of C split across the pool in fixed
 * 64-row blocks, so the result does not depend on the thread count. pool may be NULL. */
void nu_metrics_dgemm(nu_pool *pool, bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double *A,
                      int lda, const double *B, int ldb, double beta, double *C, int ldc);

/* ---- LAPACK (Fortran ABI) */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);

void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
             const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info,
             size_t jobz_len);

/* Singular values (descending) of the column-major m x n matrix a (destroyed); s holds min(m, n). */
nu_status nu_metrics_singular_values(double *a, int m, int n, double *s);

/* Eigen-decomposition of the symmetric n x n matrix a (row-major = column-major, symmetric):
 * w ascending; with vectors, a is overwritten by the eigenvectors (column-major: vector j is
 * a[j*n .. j*n+n)). Returns NU_ERR_NOMEM / NU_ERR_NUMERIC (no convergence) with a message. */
nu_status nu_metrics_syevd(double *a, int n, double *w, bool vectors);

#endif
