/*
 * inception_score.c — Inception Score (Salimans et al. 2016, "Improved Techniques for Training
 * GANs", sec. 4: IS = exp(E_x KL(p(y|x) || p(y)))), with the split convention of the original
 * improved-gan code and torch-fidelity's isc_features_to_metric:
 *   optional shuffle: rows permuted by np.random.RandomState(seed).permutation(n) (torch-fidelity,
 *   seed 2020); p = softmax(logits) in double over all classes; split k covers rows
 *   [k n / splits, (k+1) n / splits); q_k = mean of p over the split;
 *   score_k = exp(mean_i sum_c p_ic (log p_ic - log q_kc)); result = mean and population std of
 *   score_k (np.mean / np.std).
 * Both references feed the 1008-way fc WITHOUT its bias (the TF graph's softmax/logits/MatMul;
 * torch-fidelity's "logits_unbiased"); the caller passes those logits.
 *
 * Tested by tests/test_metrics.c against numpy (tests/fixtures/metrics.safetensors).
 */
#include <math.h>
#include <stdlib.h>

#include "metrics/metrics_internal.h"
#include "nuance/metrics.h"

nu_is_params nu_is_params_init(void) {
    nu_is_params p = {.splits = 10, .shuffle = true, .seed = 2020};
    return p;
}

nu_status nu_inception_score(const float *logits, int64_t n, int classes, const nu_is_params *p, double *mean,
                             double *std) {
    nu_is_params dp = nu_is_params_init();
    if (!p) p = &dp;
    if (!logits || !mean || classes < 2 || classes > (1 << 20) || n < 1)
        return nu_error(NU_ERR_INVALID_ARG, "inception score: bad arguments (n %lld, classes %d)", (long long)n, classes);
    if (p->splits < 1 || p->splits > n)
        return nu_error(NU_ERR_INVALID_ARG, "inception score: %d splits need at least as many samples (got %lld)",
                        p->splits, (long long)n);
    for (size_t i = 0; i < (size_t)n * (size_t)classes; i++)
        if (!isfinite(logits[i])) return nu_error(NU_ERR_NUMERIC, "inception score: the logits contain NaN or Inf");
    int64_t *order = malloc(sizeof(int64_t) * (size_t)n);
    double *logp = malloc(sizeof(double) * (size_t)classes); /* one row's log-softmax */
    double *q = malloc(sizeof(double) * (size_t)classes);
    double *scores = malloc(sizeof(double) * (size_t)p->splits);
    if (!order || !logp || !q || !scores) {
        free(order);
        free(logp);
        free(q);
        free(scores);
        return nu_error(NU_ERR_NOMEM, "inception score: out of memory");
    }
    if (p->shuffle) {
        nu_np_random rng;
        nu_np_random_seed(&rng, p->seed);
        nu_np_random_permutation(&rng, order, n);
    } else {
        for (int64_t i = 0; i < n; i++) order[i] = i;
    }
    for (int k = 0; k < p->splits; k++) {
        int64_t r0 = k * n / p->splits, r1 = (k + 1) * n / p->splits;
        /* pass 1: q = mean softmax over the split; pass 2: sum p (log p - log q) */
        for (int c = 0; c < classes; c++) q[c] = 0;
        for (int pass = 0; pass < 2; pass++) {
            double kl = 0;
            for (int64_t r = r0; r < r1; r++) {
                const float *x = logits + (size_t)order[r] * (size_t)classes;
                double mx = x[0];
                for (int c = 1; c < classes; c++) mx = x[c] > mx ? x[c] : mx;
                double se = 0;
                for (int c = 0; c < classes; c++) se += exp((double)x[c] - mx);
                double lse = mx + log(se);
                for (int c = 0; c < classes; c++) logp[c] = (double)x[c] - lse;
                if (pass == 0) {
                    for (int c = 0; c < classes; c++) q[c] += exp(logp[c]);
                } else {
                    double row = 0;
                    for (int c = 0; c < classes; c++) {
                        double pc = exp(logp[c]);
                        if (pc > 0) row += pc * (logp[c] - q[c]); /* p log p -> 0 as p -> 0 */
                    }
                    kl += row;
                }
            }
            if (pass == 0) {
                for (int c = 0; c < classes; c++) q[c] = log(q[c] / (double)(r1 - r0));
            } else {
                scores[k] = exp(kl / (double)(r1 - r0));
            }
        }
    }
    double s = 0, v = 0;
    for (int k = 0; k < p->splits; k++) s += scores[k];
    s /= p->splits;
    for (int k = 0; k < p->splits; k++) v += (scores[k] - s) * (scores[k] - s);
    *mean = s;
    if (std) *std = sqrt(v / p->splits);
    free(order);
    free(logp);
    free(q);
    free(scores);
    return NU_OK;
}
