/*
 * kid.c — Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", eq. 4:
 * unbiased MMD^2 estimate with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3), averaged
 * over random subsets exactly as clean-fid's kernel_distance(feats1, feats2, num_subsets=100,
 * max_subset_size=1000):
 *   m = min(n1, n2, subset_size); for each subset s (in order):
 *     x = feats2[choice(n2, m, replace=False)], then y = feats1[choice(n1, m, replace=False)]
 *     (numpy's global legacy RandomState, seeded here with np.random.seed(seed) first;
 *      choice without replacement is permutation(n)[:m]),
 *     mmd_s = [sum_{i!=j} k(x_i,x_j) + sum_{i!=j} k(y_i,y_j)] / (m (m-1)) - 2 sum_{i,j} k(x_i,y_j) / m^2
 *   KID = mean_s mmd_s; std = population std of mmd_s (torch-fidelity's kid std).
 * Gram matrices in double (clean-fid: float32), subsets spread over the pool (each subset's sums
 * computed by one thread with the same BLAS calls, so results do not depend on the thread count).
 *
 * Tested by tests/test_metrics.c against numpy (tests/fixtures/metrics.safetensors, made by
 * scripts/make_metrics_fixture.py with the same subsets drawn by numpy).
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "metrics/metrics_internal.h"
#include "nuance/metrics.h"

nu_kid_params nu_kid_params_init(void) {
    nu_kid_params p = {.num_subsets = 100, .subset_size = 1000, .seed = 0};
    return p;
}

typedef struct kid_job {
    const float *f1, *f2;
    int dim, m, S;
    const int64_t *idx; /* [S][2][m]: x rows (of f2), then y rows (of f1) */
    double *mmd;        /* [S] */
    bool oom;
} kid_job;

static inline double cube(double v) { return v * v * v; }

/* sum over i != j of k for the Gram matrix G (upper triangle of [m, m] valid) */
static double offdiag_kernel_sum(const double *G, int m, double inv_d) {
    double s = 0;
    for (int i = 0; i < m; i++) {
        double row = 0;
        for (int j = i + 1; j < m; j++) row += cube(G[(size_t)i * m + j] * inv_d + 1.0);
        s += row;
    }
    return 2.0 * s;
}

static void kid_thread(int ith, int nth, void *arg) {
    kid_job *j = arg;
    const int m = j->m, d = j->dim;
    const double inv_d = 1.0 / d;
    double *X = malloc(sizeof(double) * (size_t)m * d);
    double *Y = malloc(sizeof(double) * (size_t)m * d);
    double *G = malloc(sizeof(double) * (size_t)m * m);
    if (!X || !Y || !G) {
        j->oom = true;
        free(X);
        free(Y);
        free(G);
        return;
    }
    for (int s = ith; s < j->S; s += nth) {
        const int64_t *ix = j->idx + (size_t)s * 2 * m, *iy = ix + m;
        for (int i = 0; i < m; i++) {
            const float *a = j->f2 + (size_t)ix[i] * d, *b = j->f1 + (size_t)iy[i] * d;
            for (int k = 0; k < d; k++) {
                X[(size_t)i * d + k] = a[k];
                Y[(size_t)i * d + k] = b[k];
            }
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, m, d, 1.0, X, d, 0.0, G, m);
        double kxx = offdiag_kernel_sum(G, m, inv_d);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, m, d, 1.0, Y, d, 0.0, G, m);
        double kyy = offdiag_kernel_sum(G, m, inv_d);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, m, d, 1.0, X, d, Y, d, 0.0, G, m);
        double kxy = 0;
        for (int i = 0; i < m; i++) {
            double row = 0;
            for (int k = 0; k < m; k++) row += cube(G[(size_t)i * m + k] * inv_d + 1.0);
            kxy += row;
        }
        j->mmd[s] = (kxx + kyy) / ((double)m * (m - 1)) - 2.0 * kxy / ((double)m * m);
    }
    free(X);
    free(Y);
    free(G);
}

nu_status nu_kid(const float *f1, int64_t n1, const float *f2, int64_t n2, int dim, const nu_kid_params *p,
                 nu_pool *pool, double *mean, double *std) {
    nu_kid_params dp = nu_kid_params_init();
    if (!p) p = &dp;
    if (!f1 || !f2 || !mean || dim < 1 || dim > 65536)
        return nu_error(NU_ERR_INVALID_ARG, "kid: bad arguments (dim %d)", dim);
    if (p->num_subsets < 1 || p->num_subsets > 1000000 || p->subset_size < 2)
        return nu_error(NU_ERR_INVALID_ARG, "kid: num_subsets must be >= 1 and subset_size >= 2 (got %d, %d)",
                        p->num_subsets, p->subset_size);
    if (n1 < 2 || n2 < 2)
        return nu_error(NU_ERR_INVALID_ARG, "kid needs at least 2 samples on each side (got %lld and %lld)",
                        (long long)n1, (long long)n2);
    for (size_t i = 0; i < (size_t)n1 * (size_t)dim; i++)
        if (!isfinite(f1[i])) return nu_error(NU_ERR_NUMERIC, "kid: the first features contain NaN or Inf");
    for (size_t i = 0; i < (size_t)n2 * (size_t)dim; i++)
        if (!isfinite(f2[i])) return nu_error(NU_ERR_NUMERIC, "kid: the second features contain NaN or Inf");
    int64_t m64 = n1 < n2 ? n1 : n2;
    if (m64 > p->subset_size) m64 = p->subset_size;
    const int m = (int)m64, S = p->num_subsets;

    int64_t *idx = malloc(sizeof(int64_t) * (size_t)S * 2 * (size_t)m);
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)(n1 > n2 ? n1 : n2));
    double *mmd = malloc(sizeof(double) * (size_t)S);
    if (!idx || !perm || !mmd) {
        free(idx);
        free(perm);
        free(mmd);
        return nu_error(NU_ERR_NOMEM, "kid: out of memory");
    }
    nu_np_random rng;
    nu_np_random_seed(&rng, p->seed);
    for (int s = 0; s < S; s++) { /* the draw order of clean-fid: feats2 first, then feats1 */
        nu_np_random_permutation(&rng, perm, n2);
        memcpy(idx + (size_t)s * 2 * m, perm, sizeof(int64_t) * (size_t)m);
        nu_np_random_permutation(&rng, perm, n1);
        memcpy(idx + (size_t)s * 2 * m + m, perm, sizeof(int64_t) * (size_t)m);
    }
    free(perm);
    kid_job job = {f1, f2, dim, m, S, idx, mmd, false};
    nu_blas_init();
    nu_pool_run(pool, kid_thread, &job);
    free(idx);
    if (job.oom) {
        free(mmd);
        return nu_error(NU_ERR_NOMEM, "kid: out of memory for %dx%d subsets", m, dim);
    }
    double sum = 0;
    for (int s = 0; s < S; s++) sum += mmd[s];
    double mu = sum / S, var = 0;
    for (int s = 0; s < S; s++) var += (mmd[s] - mu) * (mmd[s] - mu);
    *mean = mu;
    if (std) *std = sqrt(var / S);
    free(mmd);
    return NU_OK;
}
