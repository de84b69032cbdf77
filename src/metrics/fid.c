/*
 * fid.c — Fréchet Inception Distance: feature statistics (mean, covariance in double), their
 * .npz files (pytorch-fid's mu/sigma), and the Fréchet distance with a stable trace of the
 * matrix square root.
 *
 * FID (Heusel et al. 2017, eq. 6): d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), as
 * pytorch-fid's calculate_frechet_distance, which takes scipy.linalg.sqrtm(S1 S2) (a Schur
 * method on a non-symmetric, often singular product). Only the trace of the root is needed:
 * for PSD S1 = A1 A1^T, S2 = A2 A2^T the eigenvalues of S1 S2 are the squared singular values of
 * A2^T A1, so tr((S1 S2)^(1/2)) = ||A2^T A1||_* (nuclear norm). We take
 *   S_i = V_i diag(w_i) V_i^T (symmetric eigensolver),  A_i = V_i,r diag(sqrt(w_i,r)),
 * keeping the eigenvalues above the noise level (w > dim * eps * max w; the rest, and negatives,
 * are exact zeros of a singular covariance, rank <= n - 1 when n < dim), and sum the singular
 * values of the r2 x r1 matrix A2^T A1. Singular values carry absolute error ~eps |A2| |A1|, so
 * small contributions are not lost (an eigenvalue route via A1^T S2 A1 squares the condition
 * number and loses every sqrt(lambda) below sqrt(eps) |S|). On the reference's folder features
 * (2048-d, 40 and 32 samples) this gives the exact value (nuclear norm of the centred cross
 * product) to 1e-12; scipy's sqrtm is off by 1.4e-6 relative there.
 *
 * Tested by tests/test_metrics.c: the reference FIDs of ../shared/reference/inception_fid
 * (fid_matrix 11.678294, folder FID 200.764757 from stored features), mu and diag(sigma) against
 * the reference, and ill-conditioned / singular cases against scipy.linalg.sqrtm and exact values
 * (tests/fixtures/metrics.safetensors from scripts/make_metrics_fixture.py).
 */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "metrics/metrics_internal.h"
#include "nuance/metrics.h"

#define ACC_ROWS 256 /* feature rows converted to double per dsyrk call */

void nu_fid_stats_free(nu_fid_stats *s) {
    if (!s) return;
    free(s->mu);
    free(s->sigma);
    memset(s, 0, sizeof *s);
}

static bool all_finite_f32(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

static bool all_finite_f64(const double *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

/* ---------------------------------------------------------------- streaming statistics */

struct nu_fid_accum {
    int dim;
    int64_t n;
    double *shift; /* [dim] first sample (K of the shifted-data algorithm)            */
    double *sum;   /* [dim] sum of (x - K)                                              */
    double *cross; /* [dim, dim] upper triangle of sum of (x - K)(x - K)^T (row-major) */
    double *buf;   /* [ACC_ROWS, dim] rows of x - K in double                          */
};

nu_fid_accum *nu_fid_accum_new(int dim) {
    if (dim < 1 || dim > 65536) return NULL;
    nu_fid_accum *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->dim = dim;
    a->shift = calloc((size_t)dim, sizeof(double));
    a->sum = calloc((size_t)dim, sizeof(double));
    a->cross = calloc((size_t)dim * (size_t)dim, sizeof(double));
    a->buf = malloc(sizeof(double) * (size_t)dim * ACC_ROWS);
    if (!a->shift || !a->sum || !a->cross || !a->buf) {
        nu_fid_accum_free(a);
        return NULL;
    }
    return a;
}

void nu_fid_accum_free(nu_fid_accum *a) {
    if (!a) return;
    free(a->shift);
    free(a->sum);
    free(a->cross);
    free(a->buf);
    free(a);
}

int64_t nu_fid_accum_count(const nu_fid_accum *a) { return a ? a->n : 0; }

nu_status nu_fid_accum_add(nu_fid_accum *a, const float *feats, int64_t n) {
    if (!a || n < 0 || (n > 0 && !feats)) return nu_error(NU_ERR_INVALID_ARG, "fid statistics: bad arguments");
    const int d = a->dim;
    if (!all_finite_f32(feats, (size_t)n * (size_t)d))
        return nu_error(NU_ERR_NUMERIC, "fid statistics: the features contain NaN or Inf");
    if (a->n == 0 && n > 0)
        for (int j = 0; j < d; j++) a->shift[j] = feats[j];
    nu_blas_init();
    for (int64_t r0 = 0; r0 < n; r0 += ACC_ROWS) {
        int rows = (int)(n - r0 < ACC_ROWS ? n - r0 : ACC_ROWS);
        for (int i = 0; i < rows; i++) {
            const float *x = feats + (size_t)(r0 + i) * (size_t)d;
            double *y = a->buf + (size_t)i * (size_t)d;
            for (int j = 0; j < d; j++) {
                y[j] = (double)x[j] - a->shift[j];
                a->sum[j] += y[j];
            }
        }
        /* cross += buf^T buf (upper triangle) */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, rows, 1.0, a->buf, d, 1.0, a->cross, d);
    }
    a->n += n;
    return NU_OK;
}

nu_status nu_fid_accum_stats(const nu_fid_accum *a, nu_fid_stats *out) {
    memset(out, 0, sizeof *out);
    if (!a) return nu_error(NU_ERR_INVALID_ARG, "fid statistics: no accumulator");
    if (a->n < 2)
        return nu_error(NU_ERR_INVALID_ARG, "fid statistics need at least 2 samples (got %lld)", (long long)a->n);
    const int d = a->dim;
    const double n = (double)a->n;
    out->mu = malloc(sizeof(double) * (size_t)d);
    out->sigma = malloc(sizeof(double) * (size_t)d * (size_t)d);
    if (!out->mu || !out->sigma) {
        nu_fid_stats_free(out);
        return nu_error(NU_ERR_NOMEM, "fid statistics: out of memory for a %dx%d covariance", d, d);
    }
    out->dim = d;
    out->n = a->n;
    /* shifted data: cov = (sum d d^T - n m m^T) / (n - 1), m = sum d / n, mu = K + m */
    double *m = out->mu;
    for (int j = 0; j < d; j++) m[j] = a->sum[j] / n;
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) {
            double c = (a->cross[(size_t)i * d + j] - n * m[i] * m[j]) / (n - 1.0);
            out->sigma[(size_t)i * d + j] = c;
            out->sigma[(size_t)j * d + i] = c;
        }
    for (int j = 0; j < d; j++) m[j] += a->shift[j];
    return NU_OK;
}

nu_status nu_fid_stats_from_features(const float *feats, int64_t n, int dim, nu_fid_stats *out) {
    memset(out, 0, sizeof *out);
    if (dim < 1 || dim > 65536) return nu_error(NU_ERR_INVALID_ARG, "fid statistics: feature size %d out of range", dim);
    nu_fid_accum *a = nu_fid_accum_new(dim);
    if (!a) return nu_error(NU_ERR_NOMEM, "fid statistics: out of memory (dim %d)", dim);
    nu_status st = nu_fid_accum_add(a, feats, n);
    if (st == NU_OK) st = nu_fid_accum_stats(a, out);
    nu_fid_accum_free(a);
    return st;
}

/* ---------------------------------------------------------------- .npz files */

nu_status nu_fid_stats_load(const char *path, nu_fid_stats *out) {
    memset(out, 0, sizeof *out);
    nu_npz *z;
    nu_status st = nu_npz_open(path, &z);
    if (st != NU_OK) return st;
    const nu_npy_array *mu = NULL, *sigma = NULL;
    if ((st = nu_npz_get(z, "mu", &mu)) != NU_OK || (st = nu_npz_get(z, "sigma", &sigma)) != NU_OK) {
        if (st == NU_ERR_NOT_FOUND)
            st = nu_error(NU_ERR_FORMAT, "%s: not a FID statistics file (needs arrays 'mu' and 'sigma')", path);
        nu_npz_close(z);
        return st;
    }
    if (mu->ndim != 1 || mu->ne[0] < 1 || mu->ne[0] > 65536 || sigma->ndim != 2 || sigma->ne[0] != mu->ne[0] ||
        sigma->ne[1] != mu->ne[0]) {
        st = nu_error(NU_ERR_FORMAT, "%s: 'mu' must be [D] and 'sigma' [D, D] (got ndim %d / %d)", path, mu->ndim,
                      sigma->ndim);
        nu_npz_close(z);
        return st;
    }
    const int d = (int)mu->ne[0];
    out->mu = malloc(sizeof(double) * (size_t)d);
    out->sigma = malloc(sizeof(double) * (size_t)d * (size_t)d);
    if (!out->mu || !out->sigma) {
        nu_fid_stats_free(out);
        nu_npz_close(z);
        return nu_error(NU_ERR_NOMEM, "%s: out of memory for a %dx%d covariance", path, d, d);
    }
    out->dim = d;
    nu_npy_to_f64(mu, out->mu);
    nu_npy_to_f64(sigma, out->sigma);
    nu_npz_close(z);
    if (!all_finite_f64(out->mu, (size_t)d) || !all_finite_f64(out->sigma, (size_t)d * (size_t)d)) {
        nu_fid_stats_free(out);
        return nu_error(NU_ERR_NUMERIC, "%s: 'mu' or 'sigma' contains NaN or Inf", path);
    }
    return NU_OK;
}

nu_status nu_fid_stats_save(const char *path, const nu_fid_stats *s) {
    if (!s || !s->mu || !s->sigma || s->dim < 1) return nu_error(NU_ERR_INVALID_ARG, "%s: empty FID statistics", path);
    nu_npz_item items[2] = {
        {.key = "mu", .type = NU_TYPE_F64, .ndim = 1, .ne = {s->dim}, .data = s->mu},
        {.key = "sigma", .type = NU_TYPE_F64, .ndim = 2, .ne = {s->dim, s->dim}, .data = s->sigma},
    };
    return nu_npz_save(path, items, 2);
}

/* ---------------------------------------------------------------- Fréchet distance */

/* A = V_r diag(sqrt(w_r)) [d, r] for the eigenvalues of symmetric s [d, d] above the noise level
 * (w > d * eps * max w): the factor with S = A A^T up to those. s is destroyed; *out malloc'ed. */
static nu_status sqrt_factor(double *s, int d, double **out, int *rank) {
    *out = NULL;
    *rank = 0;
    double *w = malloc(sizeof(double) * (size_t)d);
    if (!w) return nu_error(NU_ERR_NOMEM, "fid: out of memory");
    nu_status st = nu_metrics_syevd(s, d, w, true); /* vector j at s[j*d .. j*d+d) */
    if (st != NU_OK) {
        free(w);
        return st;
    }
    double wmax = w[d - 1] > 0 ? w[d - 1] : 0;
    double thr = (double)d * DBL_EPSILON * wmax;
    int j0 = d;
    while (j0 > 0 && w[j0 - 1] > thr) j0--;
    const int r = d - j0;
    double *A = malloc(sizeof(double) * (size_t)d * (size_t)(r > 0 ? r : 1));
    if (!A) {
        free(w);
        return nu_error(NU_ERR_NOMEM, "fid: out of memory (rank %d of %d)", r, d);
    }
    for (int c = 0; c < r; c++) {
        const double *v = s + (size_t)(j0 + c) * (size_t)d;
        double sw = sqrt(w[j0 + c]);
        for (int k = 0; k < d; k++) A[(size_t)k * r + c] = v[k] * sw;
    }
    free(w);
    *out = A;
    *rank = r;
    return NU_OK;
}

/* tr((S1 S2)^(1/2)) for symmetric PSD S1, S2 [d, d] (see the file comment); s1, s2 destroyed. */
static nu_status trace_sqrt_product(double *s1, double *s2, int d, nu_pool *pool, double *out) {
    double *A1 = NULL, *A2 = NULL, *C = NULL, *sv = NULL;
    int r1 = 0, r2 = 0;
    nu_status st = sqrt_factor(s1, d, &A1, &r1);
    if (st == NU_OK) st = sqrt_factor(s2, d, &A2, &r2);
    if (st != NU_OK || r1 == 0 || r2 == 0) { /* a zero covariance: the trace is 0 */
        *out = 0;
        goto done;
    }
    C = malloc(sizeof(double) * (size_t)r1 * (size_t)r2); /* [r2, r1] = A2^T A1 */
    sv = malloc(sizeof(double) * (size_t)(r1 < r2 ? r1 : r2));
    if (!C || !sv) {
        st = nu_error(NU_ERR_NOMEM, "fid: out of memory (ranks %d, %d of %d)", r1, r2, d);
        goto done;
    }
    nu_metrics_dgemm(pool, true, false, r2, r1, d, 1.0, A2, r2, A1, r1, 0.0, C, r1);
    /* row-major [r2, r1] = column-major [r1, r2]: same singular values */
    st = nu_metrics_singular_values(C, r1, r2, sv);
    if (st != NU_OK) goto done;
    double tr = 0;
    for (int i = (r1 < r2 ? r1 : r2) - 1; i >= 0; i--) tr += sv[i]; /* ascending: small ones first */
    *out = tr;
done:
    free(A1);
    free(A2);
    free(C);
    free(sv);
    return st;
}

nu_status nu_frechet_distance(const double *mu1, const double *sigma1, const double *mu2, const double *sigma2,
                              int dim, nu_pool *pool, double *out) {
    if (dim < 1 || dim > 65536 || !mu1 || !mu2 || !sigma1 || !sigma2 || !out)
        return nu_error(NU_ERR_INVALID_ARG, "frechet distance: bad arguments (dim %d)", dim);
    const size_t dd = (size_t)dim * (size_t)dim;
    if (!all_finite_f64(mu1, (size_t)dim) || !all_finite_f64(mu2, (size_t)dim) || !all_finite_f64(sigma1, dd) ||
        !all_finite_f64(sigma2, dd))
        return nu_error(NU_ERR_NUMERIC, "frechet distance: mu or sigma contains NaN or Inf");
    double *s1 = malloc(sizeof(double) * dd), *s2 = malloc(sizeof(double) * dd);
    if (!s1 || !s2) {
        free(s1);
        free(s2);
        return nu_error(NU_ERR_NOMEM, "frechet distance: out of memory for %dx%d matrices", dim, dim);
    }
    double diff2 = 0, tr1 = 0, tr2 = 0;
    for (int i = 0; i < dim; i++) {
        double df = mu1[i] - mu2[i];
        diff2 += df * df;
        tr1 += sigma1[(size_t)i * dim + i];
        tr2 += sigma2[(size_t)i * dim + i];
        for (int j = 0; j <= i; j++) {
            double a = 0.5 * (sigma1[(size_t)i * dim + j] + sigma1[(size_t)j * dim + i]);
            double b = 0.5 * (sigma2[(size_t)i * dim + j] + sigma2[(size_t)j * dim + i]);
            s1[(size_t)i * dim + j] = s1[(size_t)j * dim + i] = a;
            s2[(size_t)i * dim + j] = s2[(size_t)j * dim + i] = b;
        }
    }
    double trs = 0;
    nu_status st = trace_sqrt_product(s1, s2, dim, pool, &trs);
    free(s1);
    free(s2);
    if (st != NU_OK) return st;
    *out = diff2 + tr1 + tr2 - 2.0 * trs;
    return NU_OK;
}

nu_status nu_fid_from_stats(const nu_fid_stats *a, const nu_fid_stats *b, nu_pool *pool, double *out) {
    if (!a || !b || !a->mu || !b->mu || !a->sigma || !b->sigma)
        return nu_error(NU_ERR_INVALID_ARG, "fid: missing statistics");
    if (a->dim != b->dim)
        return nu_error(NU_ERR_INVALID_ARG, "fid: the two statistics have different feature sizes (%d and %d)", a->dim,
                        b->dim);
    return nu_frechet_distance(a->mu, a->sigma, b->mu, b->sigma, a->dim, pool, out);
}
