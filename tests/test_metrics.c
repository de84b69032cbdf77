/*
 * test_metrics.c — FID statistics and Fréchet distance, KID, Inception Score, precision/recall/
 * density/coverage (src/metrics/) against numpy/scipy references (tests/fixtures/
 * metrics.safetensors from scripts/make_metrics_fixture.py) and the pytorch-fid reference values
 * of ../shared/reference/inception_fid (stored features, no network: see test_eval_fid.c for
 * the end-to-end folder FID).
 *
 * Tolerances (every reference is float64, as we compute):
 *  - numpy RandomState permutations: exact (integer algorithm).
 *  - KID: the m^2 kernel terms (~1..10 each) summed in another order than numpy's pairwise sums
 *    give ~1e-16 * m^2 * 10 absolute error per sum, amplified by the cancellation between the
 *    three sums (their size over the result's, <= 1e4 here): 1e-9 relative + 1e-12 absolute.
 *  - IS: double softmax/logs over 37 classes; only summation order differs: 1e-12 relative.
 *  - PR/DC: fractions of integer counts; the random fixture has no sample within 1e-6 of a
 *    radius, so they must be equal (1e-15 for the division).
 *  - Fréchet distance vs exact values: eigenvalues below the noise level c eps |S| are dropped
 *    (Weyl: they cannot be resolved), each dropping at most sqrt(c eps |S1| |S2|) from the trace
 *    term, so |dFID| <= 2 dim sqrt(64 eps |S1|_F |S2|_F) + 1e-13 (|tr S1| + |tr S2| + |dmu|^2)
 *    (a worst case; the actual errors, printed, are ~1e-12); vs scipy's sqrtm (itself off by up
 *    to 3.6e-7 relative on these cases, see the fixture script): 1e-6 relative.
 *  - Reference FIDs (pytorch-fid with scipy sqrtm): 1e-3 relative, the requirement; the
 *    actual errors are printed (~1e-9 .. 4e-7).
 *  - mu / diag(sigma) from the stored features vs pytorch-fid's float64 np.mean / np.cov: the
 *    same double sums in another order: 1e-12 absolute on values of size <= 6 / <= 30.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nu_test.h"
#include "nuance/io.h"
#include "nuance/metrics.h"
#include "metrics/metrics_internal.h"

static nu_st_file *fx;

/* Tensor `name` of file f as a malloc'ed double array (F64 / F32 / I64); n = element count. */
static double *get_f64(nu_st_file *f, const char *name, int64_t *n) {
    const nu_st_info *in = nu_st_find(f, name);
    if (!in) {
        fprintf(stderr, "fixture tensor %s missing\n", name);
        exit(1);
    }
    int64_t cnt = 1;
    for (int i = 0; i < in->ndim; i++) cnt *= in->ne[i];
    double *out = malloc(sizeof(double) * (size_t)(cnt ? cnt : 1));
    const uint8_t *p = in->data;
    for (int64_t i = 0; i < cnt; i++) {
        if (in->type == NU_TYPE_F64) memcpy(&out[i], p + 8 * i, 8);
        else if (in->type == NU_TYPE_F32) { float v; memcpy(&v, p + 4 * i, 4); out[i] = v; }
        else if (in->type == NU_TYPE_I64) { int64_t v; memcpy(&v, p + 8 * i, 8); out[i] = (double)v; }
        else { fprintf(stderr, "fixture tensor %s: unexpected dtype\n", name); exit(1); }
    }
    if (n) *n = cnt;
    return out;
}

static float *get_f32(nu_st_file *f, const char *name, int64_t *rows, int64_t *cols) {
    const nu_st_info *in = nu_st_find(f, name);
    if (!in || in->type != NU_TYPE_F32 || in->ndim != 2) {
        fprintf(stderr, "fixture tensor %s missing or not F32 2-d\n", name);
        exit(1);
    }
    *rows = in->ne[0];
    *cols = in->ne[1];
    float *out = malloc(in->nbytes ? in->nbytes : 4);
    memcpy(out, in->data, in->nbytes);
    return out;
}

static void check_rel(const char *what, double got, double want, double rtol, double atol) {
    double err = fabs(got - want);
    NU_CHECK_MSG(err <= atol + rtol * fabs(want), "%s: got %.15g want %.15g (abs err %.3g, rel %.3g; tol rel %g abs %g)",
                 what, got, want, err, err / (fabs(want) > 0 ? fabs(want) : 1), rtol, atol);
}

/* ---------------------------------------------------------------- numpy RandomState */

static void test_rng(void) {
    static const struct { uint32_t seed; int64_t n; } cases[] = {{0, 10}, {123, 1000}, {2020, 53}, {7, 100003}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char key[64];
        snprintf(key, sizeof key, "rng.perm.%u.%lld", cases[c].seed, (long long)cases[c].n);
        int64_t m;
        double *want = get_f64(fx, key, &m);
        int64_t *perm = malloc(sizeof(int64_t) * (size_t)cases[c].n);
        nu_np_random r;
        nu_np_random_seed(&r, cases[c].seed);
        nu_np_random_permutation(&r, perm, cases[c].n);
        int bad = 0;
        for (int64_t i = 0; i < m; i++) bad += perm[i] != (int64_t)want[i];
        NU_CHECK_MSG(bad == 0, "RandomState(%u).permutation(%lld): %d of the first %lld values differ from numpy",
                     cases[c].seed, (long long)cases[c].n, bad, (long long)m);
        free(perm);
        free(want);
    }
}

/* ---------------------------------------------------------------- KID */

static void test_kid(nu_pool *pool) {
    static const char *names[] = {"a", "b", "c"};
    for (int c = 0; c < 3; c++) {
        char key[64];
        int64_t n1, n2, d1, d2;
        snprintf(key, sizeof key, "kid.%s.f1", names[c]);
        float *f1 = get_f32(fx, key, &n1, &d1);
        snprintf(key, sizeof key, "kid.%s.f2", names[c]);
        float *f2 = get_f32(fx, key, &n2, &d2);
        snprintf(key, sizeof key, "kid.%s.params", names[c]);
        double *prm = get_f64(fx, key, NULL);
        snprintf(key, sizeof key, "kid.%s.expected", names[c]);
        double *want = get_f64(fx, key, NULL);
        snprintf(key, sizeof key, "kid.%s.cleanfid_f32", names[c]);
        double *f32v = get_f64(fx, key, NULL);
        nu_kid_params p = nu_kid_params_init();
        p.num_subsets = (int)prm[0];
        p.subset_size = (int)prm[1];
        p.seed = (uint32_t)prm[2];
        double mean = 0, std = 0, mean1 = 0, std1 = 0;
        NU_CHECK(nu_kid(f1, n1, f2, n2, (int)d1, &p, pool, &mean, &std) == NU_OK);
        NU_CHECK(nu_kid(f1, n1, f2, n2, (int)d1, &p, NULL, &mean1, &std1) == NU_OK);
        snprintf(key, sizeof key, "kid %s mean", names[c]);
        check_rel(key, mean, want[0], 1e-9, 1e-12);
        snprintf(key, sizeof key, "kid %s std", names[c]);
        check_rel(key, std, want[1], 1e-9, 1e-12);
        NU_CHECK_MSG(mean == mean1 && std == std1, "kid %s: 1 thread and the pool differ", names[c]);
        printf("kid %s: %.12g +- %.6g (numpy f64 %.12g, rel err %.2g; clean-fid's float32 value %.12g)\n", names[c],
               mean, std, want[0], fabs(mean - want[0]) / fabs(want[0]), f32v[0]);
        free(f1);
        free(f2);
        free(prm);
        free(want);
        free(f32v);
    }
    /* defaults and argument errors */
    nu_kid_params p = nu_kid_params_init();
    NU_CHECK(p.num_subsets == 100 && p.subset_size == 1000 && p.seed == 0);
    float one[4] = {1, 2, 3, 4}, nan4[4] = {1, NAN, 3, 4};
    double m;
    NU_CHECK(nu_kid(one, 1, one, 2, 2, NULL, NULL, &m, NULL) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_kid(nan4, 2, one, 2, 2, NULL, NULL, &m, NULL) == NU_ERR_NUMERIC);
}

/* ---------------------------------------------------------------- Inception Score */

static void test_is(void) {
    int64_t n, C, rows;
    float *logits = get_f32(fx, "is.logits", &n, &C);
    double *cases = get_f64(fx, "is.cases", &rows);
    for (int64_t c = 0; c < rows / 5; c++) {
        const double *r = cases + 5 * c;
        nu_is_params p = nu_is_params_init();
        p.splits = (int)r[0];
        p.shuffle = r[1] != 0;
        p.seed = (uint32_t)r[2];
        double mean = 0, std = 0;
        NU_CHECK(nu_inception_score(logits, n, (int)C, &p, &mean, &std) == NU_OK);
        char key[96];
        snprintf(key, sizeof key, "IS splits %d shuffle %d mean", p.splits, p.shuffle);
        check_rel(key, mean, r[3], 1e-12, 0);
        snprintf(key, sizeof key, "IS splits %d shuffle %d std", p.splits, p.shuffle);
        check_rel(key, std, r[4], 1e-9, 1e-14);
    }
    nu_is_params p = nu_is_params_init();
    NU_CHECK(p.splits == 10 && p.shuffle && p.seed == 2020);
    double m;
    p.splits = 60;
    NU_CHECK(nu_inception_score(logits, n, (int)C, &p, &m, NULL) == NU_ERR_INVALID_ARG); /* 60 > 53 rows */
    /* extreme logits: exp underflows to 0 for most classes; p log p -> 0, no NaN */
    float ext[4 * 3] = {0, -2000, -3000, 0, -2000, -3000, 5, 0, -900, -900, 0, 1};
    nu_is_params q = {.splits = 2, .shuffle = false, .seed = 0};
    double sd;
    NU_CHECK(nu_inception_score(ext, 4, 3, &q, &m, &sd) == NU_OK && isfinite(m) && isfinite(sd));
    free(logits);
    free(cases);
}

/* ---------------------------------------------------------------- precision / recall */

static void test_prdc(nu_pool *pool) {
    int64_t n1, n2, d, d2, rows;
    float *real = get_f32(fx, "prdc.real", &n1, &d);
    float *fake = get_f32(fx, "prdc.fake", &n2, &d2);
    double *cases = get_f64(fx, "prdc.cases", &rows);
    for (int64_t c = 0; c < rows / 5; c++) {
        const double *r = cases + 5 * c;
        int k = (int)r[0];
        nu_prdc_result res, res1;
        NU_CHECK(nu_prdc(real, n1, fake, n2, (int)d, k, pool, &res) == NU_OK);
        NU_CHECK(nu_prdc(real, n1, fake, n2, (int)d, k, NULL, &res1) == NU_OK);
        NU_CHECK_MSG(fabs(res.precision - r[1]) < 1e-15 && fabs(res.recall - r[2]) < 1e-15 &&
                         fabs(res.density - r[3]) < 1e-15 && fabs(res.coverage - r[4]) < 1e-15,
                     "prdc k=%d: got P %.6f R %.6f D %.6f C %.6f, want %.6f %.6f %.6f %.6f", k, res.precision,
                     res.recall, res.density, res.coverage, r[1], r[2], r[3], r[4]);
        NU_CHECK(memcmp(&res, &res1, sizeof res) == 0);
    }
    /* identical sets: every sample lies in its own ball */
    nu_prdc_result same;
    NU_CHECK(nu_prdc(real, n1, real, n1, (int)d, 3, pool, &same) == NU_OK);
    NU_CHECK(same.precision == 1.0 && same.recall == 1.0 && same.coverage == 1.0);
    NU_CHECK(nu_prdc(real, 3, fake, n2, (int)d, 3, pool, &same) == NU_ERR_INVALID_ARG); /* n1 <= k */
    free(real);
    free(fake);
    free(cases);
}

/* ---------------------------------------------------------------- Fréchet distance */

static double frob(const double *a, int d) {
    double s = 0;
    for (int64_t i = 0; i < (int64_t)d * d; i++) s += a[i] * a[i];
    return sqrt(s);
}

static void test_frechet_cases(nu_pool *pool) {
    const nu_st_info *ni = nu_st_find(fx, "fid.names");
    char names[256] = {0};
    memcpy(names, ni->data, ni->nbytes < 255 ? ni->nbytes : 255);
    for (char *save = NULL, *name = strtok_r(names, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        char key[96];
        int64_t d;
        snprintf(key, sizeof key, "fid.%s.mu1", name);
        double *mu1 = get_f64(fx, key, &d);
        snprintf(key, sizeof key, "fid.%s.mu2", name);
        double *mu2 = get_f64(fx, key, NULL);
        snprintf(key, sizeof key, "fid.%s.sigma1", name);
        double *s1 = get_f64(fx, key, NULL);
        snprintf(key, sizeof key, "fid.%s.sigma2", name);
        double *s2 = get_f64(fx, key, NULL);
        snprintf(key, sizeof key, "fid.%s.expected", name);
        double *want = get_f64(fx, key, NULL); /* exact, scipy */
        double got = NAN, got1 = NAN;
        NU_CHECK(nu_frechet_distance(mu1, s1, mu2, s2, (int)d, pool, &got) == NU_OK);
        NU_CHECK(nu_frechet_distance(mu1, s1, mu2, s2, (int)d, NULL, &got1) == NU_OK);
        NU_CHECK_MSG(got == got1, "fid %s: 1 thread and the pool differ", name);
        double tr = 0, dm = 0;
        for (int64_t i = 0; i < d; i++) {
            tr += fabs(s1[i * d + i]) + fabs(s2[i * d + i]);
            dm += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]);
        }
        double bound = 2.0 * (double)d * sqrt(64.0 * DBL_EPSILON * frob(s1, (int)d) * frob(s2, (int)d)) + 1e-13 * (tr + dm);
        snprintf(key, sizeof key, "fid %s vs exact", name);
        check_rel(key, got, want[0], 0, bound);
        if (isfinite(want[1]) && want[0] != 0) {
            snprintf(key, sizeof key, "fid %s vs scipy sqrtm", name);
            check_rel(key, got, want[1], 1e-6, 0);
        }
        printf("fid %-9s d=%-3lld %.12g  exact %.12g (err %.2g, bound %.2g)  scipy %.12g (err %.2g)\n", name,
               (long long)d, got, want[0], fabs(got - want[0]), bound, want[1], fabs(want[1] - want[0]));
        free(mu1);
        free(mu2);
        free(s1);
        free(s2);
        free(want);
    }
    double mu[2] = {0, 0}, s[4] = {1, 0, 0, NAN}, out;
    NU_CHECK(nu_frechet_distance(mu, s, mu, s, 2, NULL, &out) == NU_ERR_NUMERIC);
    NU_CHECK(nu_frechet_distance(mu, s, mu, s, 0, NULL, &out) == NU_ERR_INVALID_ARG);
}

/* ---------------------------------------------------------------- statistics */

static void test_stats(void) {
    /* streaming in chunks == one call; covariance of known data */
    const int n = 37, d = 5;
    float *x = malloc(sizeof(float) * n * d);
    nu_test_fill_uniform(x, n * d, 11, -2.f, 3.f);
    for (int i = 0; i < n * d; i++) x[i] += 100.f; /* a large mean: the shift must cope */
    nu_fid_stats a, b;
    NU_CHECK(nu_fid_stats_from_features(x, n, d, &a) == NU_OK);
    nu_fid_accum *acc = nu_fid_accum_new(d);
    for (int r = 0; r < n; r += 7) NU_CHECK(nu_fid_accum_add(acc, x + (size_t)r * d, r + 7 <= n ? 7 : n - r) == NU_OK);
    NU_CHECK(nu_fid_accum_count(acc) == n);
    NU_CHECK(nu_fid_accum_stats(acc, &b) == NU_OK);
    nu_fid_accum_free(acc);
    /* reference: two-pass mean / covariance in long double */
    double maxe_mu = 0, maxe_s = 0, maxe_ab = 0;
    for (int j = 0; j < d; j++) {
        long double m = 0;
        for (int i = 0; i < n; i++) m += x[i * d + j];
        m /= n;
        maxe_mu = fmax(maxe_mu, fabs((double)(a.mu[j] - m)));
        for (int k = 0; k < d; k++) {
            long double mk = 0, c = 0;
            for (int i = 0; i < n; i++) mk += x[i * d + k];
            mk /= n;
            for (int i = 0; i < n; i++) c += (x[i * d + j] - m) * (x[i * d + k] - mk);
            c /= (n - 1);
            maxe_s = fmax(maxe_s, fabs((double)(a.sigma[j * d + k] - c)));
            maxe_ab = fmax(maxe_ab, fabs(a.sigma[j * d + k] - b.sigma[j * d + k]));
        }
    }
    /* values ~100 (mu) and ~2 (sigma): double rounding over 37 terms, 1e-12 is ~1000 ulp */
    NU_CHECK_MSG(maxe_mu < 1e-12 && maxe_s < 1e-12 && maxe_ab < 1e-12,
                 "stats: mu err %.3g, sigma err %.3g, chunked vs one call %.3g", maxe_mu, maxe_s, maxe_ab);
    /* save / load round trip (bit-exact, float64) */
    char tmpl[] = "/tmp/nu_test_metrics_XXXXXX";
    char *dir = mkdtemp(tmpl);
    NU_CHECK(dir != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/stats.npz", dir);
    NU_CHECK(nu_fid_stats_save(path, &a) == NU_OK);
    nu_fid_stats c;
    NU_CHECK(nu_fid_stats_load(path, &c) == NU_OK);
    NU_CHECK(c.dim == d && memcmp(c.mu, a.mu, sizeof(double) * d) == 0 &&
             memcmp(c.sigma, a.sigma, sizeof(double) * d * d) == 0);
    double f0 = 1;
    NU_CHECK(nu_fid_from_stats(&a, &c, NULL, &f0) == NU_OK);
    NU_CHECK_MSG(fabs(f0) < 1e-9, "FID of a distribution with itself: %.3g", f0);
    /* a file with other keys is not a stats file */
    nu_npz_item it = {.key = "feats", .type = NU_TYPE_F32, .ndim = 2, .ne = {n, d}, .data = x};
    NU_CHECK(nu_npz_save(path, &it, 1) == NU_OK);
    nu_fid_stats_free(&c);
    NU_CHECK(nu_fid_stats_load(path, &c) == NU_ERR_FORMAT);
    unlink(path);
    rmdir(dir);
    /* errors */
    NU_CHECK(nu_fid_stats_from_features(x, 1, d, &c) == NU_ERR_INVALID_ARG);
    x[3] = NAN;
    NU_CHECK(nu_fid_stats_from_features(x, n, d, &c) == NU_ERR_NUMERIC);
    nu_fid_stats_free(&a);
    nu_fid_stats_free(&b);
    nu_fid_stats_free(&c);
    free(x);
}

/* ---------------------------------------------------------------- pytorch-fid reference values */

static void test_reference(nu_pool *pool) {
    const char *shared = nu_test_require_shared("pytorch-fid reference FIDs");
    char path[4300];
    snprintf(path, sizeof path, "%s/reference/inception_fid/refs.safetensors", shared);
    nu_st_file *rf;
    if (nu_st_open(path, &rf) != NU_OK) {
        NU_CHECK_MSG(0, "%s", nu_last_error());
        return;
    }
    /* fid_matrix: given mu/sigma (64-d, 300/250 samples) -> 11.678294 */
    double *mu1 = get_f64(rf, "fid_matrix/mu1", NULL), *mu2 = get_f64(rf, "fid_matrix/mu2", NULL);
    int64_t dd;
    double *s1 = get_f64(rf, "fid_matrix/sigma1", &dd), *s2 = get_f64(rf, "fid_matrix/sigma2", NULL);
    int d = (int)sqrt((double)dd);
    double fid = 0;
    NU_CHECK(nu_frechet_distance(mu1, s1, mu2, s2, d, pool, &fid) == NU_OK);
    const double want_matrix = 11.678293656264032; /* refs.json fid_matrix.value */
    check_rel("fid_matrix", fid, want_matrix, 1e-3, 0);
    printf("fid_matrix: %.12g (reference %.12g, rel err %.2g)\n", fid, want_matrix, fabs(fid - want_matrix) / want_matrix);
    free(mu1);
    free(mu2);
    free(s1);
    free(s2);

    /* folder FID from the stored pool3 features: 40 vs 32 samples in 2048-d (singular) */
    int64_t na, nb, da, db;
    float *fa = get_f32(rf, "fid_dirs/features_a", &na, &da);
    float *fb = get_f32(rf, "fid_dirs/features_b", &nb, &db);
    nu_fid_stats sa, sb;
    NU_CHECK(nu_fid_stats_from_features(fa, na, (int)da, &sa) == NU_OK);
    NU_CHECK(nu_fid_stats_from_features(fb, nb, (int)db, &sb) == NU_OK);
    static const char *sides[2] = {"a", "b"};
    nu_fid_stats *ss[2] = {&sa, &sb};
    for (int s = 0; s < 2; s++) {
        char key[64];
        snprintf(key, sizeof key, "fid_dirs/mu_%s", sides[s]);
        double *mu = get_f64(rf, key, NULL);
        snprintf(key, sizeof key, "fid_dirs/sigma_%s_diag", sides[s]);
        double *sd = get_f64(rf, key, NULL);
        double emu = 0, esd = 0;
        for (int j = 0; j < ss[s]->dim; j++) {
            emu = fmax(emu, fabs(ss[s]->mu[j] - mu[j]));
            esd = fmax(esd, fabs(ss[s]->sigma[(size_t)j * ss[s]->dim + j] - sd[j]));
        }
        NU_CHECK_MSG(emu < 1e-12 && esd < 1e-12, "folder %s: mu max err %.3g, diag(sigma) max err %.3g", sides[s], emu,
                     esd);
        printf("folder_%s: mu max abs err %.2g, diag(sigma) max abs err %.2g vs pytorch-fid\n", sides[s], emu, esd);
        free(mu);
        free(sd);
    }
    double f_ab = 0, f_ba = 0;
    NU_CHECK(nu_fid_from_stats(&sa, &sb, pool, &f_ab) == NU_OK);
    if (nu_test_quick()) f_ba = f_ab; /* saves two 2048x2048 eigendecompositions (~2 s) */
    else NU_CHECK(nu_frechet_distance(sb.mu, sb.sigma, sa.mu, sa.sigma, sa.dim, pool, &f_ba) == NU_OK);
    const double want_dirs = 200.76475700976982;  /* refs.json fid_dirs.value (scipy sqrtm)    */
    const double want_eigh = 200.7648257390162;   /* refs.json fid_dirs.value_eigh_method        */
    check_rel("folder FID from stored features", f_ab, want_dirs, 1e-3, 0);
    check_rel("folder FID, arguments swapped", f_ba, want_dirs, 1e-3, 0);
    check_rel("folder FID symmetric in its arguments", f_ba, f_ab, 1e-12, 0);
    printf("folder FID: %.12g / %.12g (pytorch-fid %.12g: rel err %.2g; eigh reference %.12g: rel err %.2g)\n", f_ab,
           f_ba, want_dirs, fabs(f_ab - want_dirs) / want_dirs, want_eigh, fabs(f_ab - want_eigh) / want_eigh);
    /* exact value: tr((S1 S2)^(1/2)) = ||Ac Bc^T||_* / sqrt((na-1)(nb-1)) with centred samples
     * (the nonzero eigenvalues of S1 S2 are those of (Ac Bc^T)(Ac Bc^T)^T / ((na-1)(nb-1))) */
    double *C = calloc((size_t)na * (size_t)nb, sizeof(double)), *sv = malloc(sizeof(double) * (size_t)nb);
    for (int64_t i = 0; i < na; i++)
        for (int64_t j = 0; j < nb; j++) {
            double acc = 0;
            for (int64_t k = 0; k < da; k++)
                acc += ((double)fa[i * da + k] - sa.mu[k]) * ((double)fb[j * db + k] - sb.mu[k]);
            C[j * na + i] = acc; /* column-major [na, nb] */
        }
    NU_CHECK(nu_metrics_singular_values(C, (int)na, (int)nb, sv) == NU_OK);
    double nuc = 0, tr = 0, dm = 0;
    for (int64_t j = nb - 1; j >= 0; j--) nuc += sv[j];
    for (int k = 0; k < sa.dim; k++) {
        tr += sa.sigma[(size_t)k * sa.dim + k] + sb.sigma[(size_t)k * sa.dim + k];
        dm += (sa.mu[k] - sb.mu[k]) * (sa.mu[k] - sb.mu[k]);
    }
    double exact = dm + tr - 2.0 * nuc / sqrt((double)(na - 1) * (double)(nb - 1));
    /* both routes are backward stable in double: 1e-9 relative leaves 1e4 x their rounding */
    check_rel("folder FID vs exact nuclear-norm value", f_ab, exact, 1e-9, 0);
    printf("folder FID exact (nuclear norm): %.12g, ours rel err %.2g, pytorch-fid (scipy sqrtm) rel err %.2g\n", exact,
           fabs(f_ab - exact) / exact, fabs(want_dirs - exact) / exact);
    free(C);
    free(sv);
    nu_fid_stats_free(&sa);
    nu_fid_stats_free(&sb);
    free(fa);
    free(fb);
    nu_st_close(rf);
}

int main(void) {
    if (nu_st_open(nu_test_fixture("metrics.safetensors"), &fx) != NU_OK) {
        fprintf(stderr, "%s\n", nu_last_error());
        return 1;
    }
    nu_pool *pool = nu_pool_new(2);
    test_rng();
    test_kid(pool);
    test_is();
    test_prdc(pool);
    test_frechet_cases(pool);
    test_stats();
    nu_st_close(fx);
    if (nu_test_shared_dir()) test_reference(pool);
    else printf("skipped the pytorch-fid reference values: ../shared/reference absent\n");
    nu_pool_free(pool);
    return nu_test_summary("test_metrics");
}
