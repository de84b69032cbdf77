/*
 * prdc.c — improved precision and recall (Kynkäänniemi et al. 2019, sec. 3: a set's manifold is
 * the union of balls around each sample with radius its distance to the k-th nearest neighbour)
 * plus density and coverage (Naeem et al. 2020, eqs. 5-6) from the same radii.
 *
 *   r_k(x_i): k-th smallest distance from x_i to its own set, not counting x_i itself
 *             (torch-fidelity: cdist(...).kthvalue(k + 1); the original: np.partition index k)
 *   precision = mean_j 1[exists i: |y_j - x_i| <= r_k(x_i)]      (x real, y generated)
 *   recall    = mean_i 1[exists j: |x_i - y_j| <= r_k(y_j)]
 *   density   = 1/(k M) sum_j #{i : |y_j - x_i| < r_k(x_i)}       (prdc uses strict <)
 *   coverage  = mean_i 1[min_j |x_i - y_j| < r_k(x_i)]
 * Squared Euclidean distances |a|^2 + |b|^2 - 2 a.b (clamped at 0) from double GEMMs over
 * 256 x 1024 blocks, features converted to double block by block; row blocks are spread over the
 * pool with per-thread counters merged in a fixed order (thread-count independent).
 *
 * Tested by tests/test_metrics.c against numpy (tests/fixtures/metrics.safetensors).
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "metrics/metrics_internal.h"
#include "nuance/metrics.h"

#define ROWS 256
#define COLS 1024

typedef struct blockbuf {
    double *a, *b, *g; /* [ROWS, d], [COLS, d], [ROWS, COLS] */
    double *na, *nb;   /* squared norms                       */
} blockbuf;

static bool blockbuf_init(blockbuf *w, int d) {
    w->a = malloc(sizeof(double) * ROWS * (size_t)d);
    w->b = malloc(sizeof(double) * COLS * (size_t)d);
    w->g = malloc(sizeof(double) * ROWS * COLS);
    w->na = malloc(sizeof(double) * ROWS);
    w->nb = malloc(sizeof(double) * COLS);
    return w->a && w->b && w->g && w->na && w->nb;
}

static void blockbuf_free(blockbuf *w) {
    free(w->a);
    free(w->b);
    free(w->g);
    free(w->na);
    free(w->nb);
}

static void to_double(const float *x, int rows, int d, double *y, double *norms) {
    for (int i = 0; i < rows; i++) {
        double s = 0;
        for (int k = 0; k < d; k++) {
            double v = x[(size_t)i * d + k];
            y[(size_t)i * d + k] = v;
            s += v * v;
        }
        norms[i] = s;
    }
}

/* w->g[i * COLS + j] = |a_i - b_j|^2 for the an rows already in w->a and bn rows of B at b. */
static void block_d2(blockbuf *w, int an, const float *b, int bn, int d) {
    to_double(b, bn, d, w->b, w->nb);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, an, bn, d, -2.0, w->a, d, w->b, d, 0.0, w->g, COLS);
    for (int i = 0; i < an; i++)
        for (int j = 0; j < bn; j++) {
            double v = w->g[(size_t)i * COLS + j] + w->na[i] + w->nb[j];
            w->g[(size_t)i * COLS + j] = v > 0 ? v : 0;
        }
}

/* ---------------------------------------------------------------- radii */

typedef struct radii_job {
    const float *x;
    int64_t n;
    int d, k;
    double *r2; /* [n] squared k-NN radius */
    bool oom;
} radii_job;

static void radii_thread(int ith, int nth, void *arg) {
    radii_job *j = arg;
    const int d = j->d, kk = j->k + 1;
    blockbuf w;
    double *best = malloc(sizeof(double) * ROWS * (size_t)kk); /* per row: kk smallest, ascending */
    if (!blockbuf_init(&w, d) || !best) {
        j->oom = true;
        blockbuf_free(&w);
        free(best);
        return;
    }
    int64_t nblk = (j->n + ROWS - 1) / ROWS;
    for (int64_t blk = ith; blk < nblk; blk += nth) {
        int64_t r0 = blk * ROWS;
        int an = (int)(j->n - r0 < ROWS ? j->n - r0 : ROWS);
        to_double(j->x + (size_t)r0 * d, an, d, w.a, w.na);
        for (size_t t = 0; t < (size_t)ROWS * kk; t++) best[t] = INFINITY;
        for (int64_t c0 = 0; c0 < j->n; c0 += COLS) {
            int bn = (int)(j->n - c0 < COLS ? j->n - c0 : COLS);
            block_d2(&w, an, j->x + (size_t)c0 * d, bn, d);
            for (int i = 0; i < an; i++) {
                double *bi = best + (size_t)i * kk;
                const double *g = w.g + (size_t)i * COLS;
                for (int c = 0; c < bn; c++) {
                    double v = g[c];
                    if (v >= bi[kk - 1]) continue;
                    int p = kk - 1; /* insertion into the sorted list */
                    while (p > 0 && bi[p - 1] > v) {
                        bi[p] = bi[p - 1];
                        p--;
                    }
                    bi[p] = v;
                }
            }
        }
        for (int i = 0; i < an; i++) j->r2[r0 + i] = best[(size_t)i * kk + kk - 1];
    }
    blockbuf_free(&w);
    free(best);
}

static nu_status knn_radii(const float *x, int64_t n, int d, int k, nu_pool *pool, double *r2) {
    radii_job j = {x, n, d, k, r2, false};
    nu_pool_run(pool, radii_thread, &j);
    return j.oom ? nu_error(NU_ERR_NOMEM, "precision/recall: out of memory") : NU_OK;
}

/* ---------------------------------------------------------------- cross terms */

typedef struct cross_job {
    const float *real, *fake;
    int64_t n1, n2;
    int d, nth_max;
    const double *r2_real, *r2_fake;
    uint8_t *recall_in, *covered; /* [n1] (rows owned by one thread)            */
    uint8_t *prec_in;             /* [nth][n2] per-thread flags, OR-ed after     */
    int64_t *dens;                /* [nth][n2] per-thread counts, summed after    */
    bool oom;
} cross_job;

static void cross_thread(int ith, int nth, void *arg) {
    cross_job *j = arg;
    const int d = j->d;
    uint8_t *prec = j->prec_in + (size_t)ith * (size_t)j->n2;
    int64_t *dens = j->dens + (size_t)ith * (size_t)j->n2;
    blockbuf w;
    if (!blockbuf_init(&w, d)) {
        j->oom = true;
        blockbuf_free(&w);
        return;
    }
    int64_t nblk = (j->n1 + ROWS - 1) / ROWS;
    for (int64_t blk = ith; blk < nblk; blk += nth) {
        int64_t r0 = blk * ROWS;
        int an = (int)(j->n1 - r0 < ROWS ? j->n1 - r0 : ROWS);
        to_double(j->real + (size_t)r0 * d, an, d, w.a, w.na);
        for (int64_t c0 = 0; c0 < j->n2; c0 += COLS) {
            int bn = (int)(j->n2 - c0 < COLS ? j->n2 - c0 : COLS);
            block_d2(&w, an, j->fake + (size_t)c0 * d, bn, d);
            for (int i = 0; i < an; i++) {
                const double *g = w.g + (size_t)i * COLS;
                const double rr = j->r2_real[r0 + i];
                const double *rf = j->r2_fake + c0;
                uint8_t rec = 0, cov = 0;
                for (int c = 0; c < bn; c++) {
                    double v = g[c];
                    if (v <= rr) prec[c0 + c] = 1;
                    if (v < rr) {
                        dens[c0 + c]++;
                        cov = 1;
                    }
                    if (v <= rf[c]) rec = 1;
                }
                j->recall_in[r0 + i] |= rec;
                j->covered[r0 + i] |= cov;
            }
        }
    }
    blockbuf_free(&w);
}

nu_status nu_prdc(const float *real, int64_t n1, const float *fake, int64_t n2, int dim, int k, nu_pool *pool,
                  nu_prdc_result *out) {
    if (!real || !fake || !out || dim < 1 || dim > 65536 || k < 1 || k > 1000)
        return nu_error(NU_ERR_INVALID_ARG, "precision/recall: bad arguments (dim %d, k %d)", dim, k);
    if (n1 <= k || n2 <= k)
        return nu_error(NU_ERR_INVALID_ARG,
                        "precision/recall with k = %d needs more than %d samples on each side (got %lld and %lld)", k,
                        k, (long long)n1, (long long)n2);
    for (size_t i = 0; i < (size_t)n1 * (size_t)dim; i++)
        if (!isfinite(real[i])) return nu_error(NU_ERR_NUMERIC, "precision/recall: the real features contain NaN or Inf");
    for (size_t i = 0; i < (size_t)n2 * (size_t)dim; i++)
        if (!isfinite(fake[i])) return nu_error(NU_ERR_NUMERIC, "precision/recall: the fake features contain NaN or Inf");
    nu_blas_init();
    int nth = pool ? nu_pool_n_threads(pool) : 1;
    double *r2r = malloc(sizeof(double) * (size_t)n1), *r2f = malloc(sizeof(double) * (size_t)n2);
    uint8_t *rec = calloc((size_t)n1, 1), *cov = calloc((size_t)n1, 1);
    uint8_t *prec = calloc((size_t)n2 * (size_t)nth, 1);
    int64_t *dens = calloc((size_t)n2 * (size_t)nth, sizeof(int64_t));
    nu_status st = NU_OK;
    if (!r2r || !r2f || !rec || !cov || !prec || !dens) {
        st = nu_error(NU_ERR_NOMEM, "precision/recall: out of memory");
        goto done;
    }
    if ((st = knn_radii(real, n1, dim, k, pool, r2r)) != NU_OK) goto done;
    if ((st = knn_radii(fake, n2, dim, k, pool, r2f)) != NU_OK) goto done;
    cross_job j = {real, fake, n1, n2, dim, nth, r2r, r2f, rec, cov, prec, dens, false};
    nu_pool_run(pool, cross_thread, &j);
    if (j.oom) {
        st = nu_error(NU_ERR_NOMEM, "precision/recall: out of memory");
        goto done;
    }
    int64_t np = 0, nr = 0, nc = 0, nd = 0;
    for (int64_t c = 0; c < n2; c++) {
        uint8_t any = 0;
        for (int t = 0; t < nth; t++) {
            any |= prec[(size_t)t * n2 + c];
            nd += dens[(size_t)t * n2 + c];
        }
        np += any;
    }
    for (int64_t i = 0; i < n1; i++) {
        nr += rec[i];
        nc += cov[i];
    }
    out->precision = (double)np / (double)n2;
    out->recall = (double)nr / (double)n1;
    out->density = (double)nd / ((double)k * (double)n2);
    out->coverage = (double)nc / (double)n1;
done:
    free(r2r);
    free(r2f);
    free(rec);
    free(cov);
    free(prec);
    free(dens);
    return st;
}
