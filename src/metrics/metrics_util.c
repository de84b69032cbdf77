/*
 * metrics_util.c — numpy's legacy RandomState (MT19937, permutation), a pool-parallel DGEMM and a
 * LAPACK dsyevd wrapper, shared by the metrics (see metrics_internal.h).
 *
 * MT19937: Matsumoto & Nishimura 1998 (init_genrand seeding, which numpy's mt19937_seed uses for
 * an integer seed). random_interval and the shuffle loop follow numpy's legacy
 * distributions.c / RandomState._shuffle_raw, so permutations equal numpy's for the same seed.
 * Tested by tests/test_metrics.c: the KID fixture (scripts/make_metrics_fixture.py) draws its
 * subsets with numpy, and the test also checks the first permutations against numpy's.
 */
#include <cblas.h>
#include <stdlib.h>

#include "core/internal.h"
#include "metrics/metrics_internal.h"

/* ---------------------------------------------------------------- MT19937 */

void nu_np_random_seed(nu_np_random *r, uint32_t seed) {
    r->mt[0] = seed;
    for (int i = 1; i < 624; i++) r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->pos = 624;
}

static void mt_generate(nu_np_random *r) {
    static const uint32_t mag01[2] = {0u, 0x9908b0dfu};
    uint32_t *mt = r->mt;
    int k;
    for (k = 0; k < 624 - 397; k++) {
        uint32_t y = (mt[k] & 0x80000000u) | (mt[k + 1] & 0x7fffffffu);
        mt[k] = mt[k + 397] ^ (y >> 1) ^ mag01[y & 1u];
    }
    for (; k < 623; k++) {
        uint32_t y = (mt[k] & 0x80000000u) | (mt[k + 1] & 0x7fffffffu);
        mt[k] = mt[k + (397 - 624)] ^ (y >> 1) ^ mag01[y & 1u];
    }
    uint32_t y = (mt[623] & 0x80000000u) | (mt[0] & 0x7fffffffu);
    mt[623] = mt[396] ^ (y >> 1) ^ mag01[y & 1u];
    r->pos = 0;
}

uint32_t nu_np_random_u32(nu_np_random *r) {
    if (r->pos >= 624) mt_generate(r);
    uint32_t y = r->mt[r->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* numpy legacy random_interval(max): uniform in [0, max] by masked rejection sampling. */
static uint64_t random_interval(nu_np_random *r, uint64_t max) {
    if (max == 0) return 0;
    uint64_t mask = max;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    mask |= mask >> 32;
    uint64_t v;
    if (max <= 0xffffffffu) {
        while ((v = (nu_np_random_u32(r) & mask)) > max) {
        }
    } else { /* next_uint64 of the legacy MT19937: (hi << 32) | lo */
        do {
            uint64_t hi = nu_np_random_u32(r);
            uint64_t lo = nu_np_random_u32(r);
            v = ((hi << 32) | lo) & mask;
        } while (v > max);
    }
    return v;
}

void nu_np_random_permutation(nu_np_random *r, int64_t *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = i;
    for (int64_t i = n - 1; i >= 1; i--) {
        int64_t j = (int64_t)random_interval(r, (uint64_t)i);
        int64_t t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}

/* ---------------------------------------------------------------- parallel DGEMM */

typedef struct gemm_job {
    bool ta, tb;
    int M, N, K, lda, ldb, ldc;
    double alpha, beta;
    const double *A, *B;
    double *C;
} gemm_job;

#define GEMM_ROWS 64

static void gemm_thread(int ith, int nth, void *arg) {
    const gemm_job *j = arg;
    int nblk = (j->M + GEMM_ROWS - 1) / GEMM_ROWS;
    for (int b = ith; b < nblk; b += nth) {
        int r0 = b * GEMM_ROWS, rn = j->M - r0 < GEMM_ROWS ? j->M - r0 : GEMM_ROWS;
        /* rows r0.. of op(A): A[r0, 0] if not transposed, else column r0 of A */
        const double *a = j->ta ? j->A + r0 : j->A + (size_t)r0 * (size_t)j->lda;
        cblas_dgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans, rn, j->N,
                    j->K, j->alpha, a, j->lda, j->B, j->ldb, j->beta, j->C + (size_t)r0 * (size_t)j->ldc, j->ldc);
    }
}

void nu_metrics_dgemm(nu_pool *pool, bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double *A,
                      int lda, const double *B, int ldb, double beta, double *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    gemm_job j = {trans_a, trans_b, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C};
    nu_blas_init(); /* BLAS single-threaded: we split across our pool */
    nu_pool_run(pool, gemm_thread, &j);
}

/* ---------------------------------------------------------------- LAPACK */

nu_status nu_metrics_syevd(double *a, int n, double *w, bool vectors) {
    const char jobz = vectors ? 'V' : 'N', uplo = 'L';
    int lwork = -1, liwork = -1, info = 0, iwq = 0;
    double wq = 0;
    nu_blas_init();
    dsyevd_(&jobz, &uplo, &n, a, &n, w, &wq, &lwork, &iwq, &liwork, &info, 1, 1);
    if (info != 0) return nu_error(NU_ERR_NUMERIC, "dsyevd workspace query failed (info %d)", info);
    lwork = (int)wq + 1;
    liwork = iwq > 1 ? iwq : 1;
    double *work = malloc(sizeof(double) * (size_t)lwork);
    int *iwork = malloc(sizeof(int) * (size_t)liwork);
    if (!work || !iwork) {
        free(work);
        free(iwork);
        return nu_error(NU_ERR_NOMEM, "eigendecomposition of a %dx%d matrix: out of memory", n, n);
    }
    dsyevd_(&jobz, &uplo, &n, a, &n, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    if (info != 0)
        return nu_error(NU_ERR_NUMERIC, "eigendecomposition of a %dx%d matrix did not converge (dsyevd info %d)", n, n,
                        info);
    return NU_OK;
}

nu_status nu_metrics_singular_values(double *a, int m, int n, double *s) {
    const char jobz = 'N';
    int lwork = -1, info = 0, one = 1, k = m < n ? m : n;
    double wq = 0, dummy = 0;
    int *iwork = malloc(sizeof(int) * 8 * (size_t)(k > 0 ? k : 1));
    if (!iwork) return nu_error(NU_ERR_NOMEM, "singular values of a %dx%d matrix: out of memory", m, n);
    nu_blas_init();
    dgesdd_(&jobz, &m, &n, a, &m, s, &dummy, &one, &dummy, &one, &wq, &lwork, iwork, &info, 1);
    if (info != 0) {
        free(iwork);
        return nu_error(NU_ERR_NUMERIC, "dgesdd workspace query failed (info %d)", info);
    }
    lwork = (int)wq + 1;
    double *work = malloc(sizeof(double) * (size_t)lwork);
    if (!work) {
        free(iwork);
        return nu_error(NU_ERR_NOMEM, "singular values of a %dx%d matrix: out of memory", m, n);
    }
    dgesdd_(&jobz, &m, &n, a, &m, s, &dummy, &one, &dummy, &one, work, &lwork, iwork, &info, 1);
    free(work);
    free(iwork);
    if (info != 0)
        return nu_error(NU_ERR_NUMERIC, "singular values of a %dx%d matrix did not converge (dgesdd info %d)", m, n, info);
    return NU_OK;
}
