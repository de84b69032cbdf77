/*
 * nuance/metrics.h — evaluation of generative image models: pytorch-fid's InceptionV3 (pool3
 * features and logits) and the metrics built on it (FID, KID, IS, precision/recall, .npz stats).
 *
 *     nu_inception *net;
 *     if (nu_inception_load("pt_inception-2015-12-05.safetensors", &net) != NU_OK) { puts(nu_last_error()); ... }
 *     nu_pool *pool = nu_pool_new(0);
 *     float *feat = malloc(sizeof(float) * n * NU_INCEPTION_DIMS);
 *     nu_inception_features(net, pool, images, n, feat, NULL);   // images: any sizes, 1-4 channels
 *     nu_inception_free(net);
 *
 * Tested by tests/test_inception.c (against ../shared/reference/inception_fid/) and the metrics
 * tests; docs/metrics.md explains how to convert the official FID weights to safetensors.
 */
#ifndef NUANCE_METRICS_H
#define NUANCE_METRICS_H

#include "nuance/io.h"
#include "nuance/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Inception ---------------------------------------------------------------------------- */
/* pytorch-fid v0.3.0 InceptionV3([3], resize_input=True, normalize_input=True,
 * use_fid_inception=True): the FID-variant Inception blocks of the TF 2015-12-05 graph. */

#define NU_INCEPTION_DIMS 2048    /* pool3 feature size                                       */
#define NU_INCEPTION_CLASSES 1008 /* logits of the fc head (1008 TF classes)                  */
#define NU_INCEPTION_SIZE 299     /* network input side                                       */

/* A loaded network and its cached graphs; use one from one thread at a time (the pool passed to
 * nu_inception_features supplies the parallelism). */
typedef struct nu_inception nu_inception;

/* Loads weights from a safetensors file with pytorch-fid's state_dict names (Conv2d_1a_3x3.conv.
 * weight, ..., Mixed_7c.*, fc.weight, fc.bias; num_batches_tracked ignored), F32/F16/BF16.
 * BatchNorm (eps 0.001, eval) is folded into each conv at load (stored f32). Errors (missing or
 * misshapen tensor, wrong dtype) name the file and tensor. */
nu_status nu_inception_load(const char *weights_path, nu_inception **out);
/* The same network with random weights (conv kaiming-normal, BatchNorm identity), for benchmarks
 * and smoke tests: its features mean nothing. */
nu_status nu_inception_new_random(uint64_t seed, nu_inception **out);
void nu_inception_free(nu_inception *m);
/* Images per graph evaluation (default 8; 1..256). Graphs are built once per batch size used. */
void nu_inception_set_batch(nu_inception *m, int batch);

/* Features of n images (any sizes, 1-4 channels as nu_image_load gives them): each image is
 * converted as Pillow's convert('RGB') does (see nu_fid_image_to_rgb), resized to 299x299 and
 * mapped to [-1, 1] (nu_fid_preprocess), then run through the network in batches.
 * pool3: [n, 2048] (may be NULL); logits: [n, 1008] (may be NULL). Returns NU_ERR_CANCELLED if
 * the pool is cancelled, NU_ERR_NOMEM on allocation failure. */
nu_status nu_inception_features(nu_inception *m, nu_pool *pool, const nu_image *images, int n, float *pool3,
                                float *logits);
/* Same on already preprocessed input x: [n, 3, 299, 299] f32 in [-1, 1] (NCHW, contiguous). */
nu_status nu_inception_features_f32(nu_inception *m, nu_pool *pool, const float *x, int n, float *pool3,
                                    float *logits);

/* Pillow 9.4's Image.convert('RGB') as pytorch-fid's loader applies it, on what nu_image_load
 * returns: 1 channel (L, and mode 1 as 0/255) -> R=G=B; 2 (LA) -> L replicated, alpha dropped;
 * 3 -> copy; 4 (RGBA) -> alpha dropped, colour kept even where alpha = 0 (no compositing).
 * Palette images arrive expanded (tRNS transparency ignored, as Pillow's P -> RGB does).
 * out->pixels is malloc'ed (free with nu_image_free). */
nu_status nu_fid_image_to_rgb(const nu_image *img, nu_image *out);
/* One image (1-4 channels) -> network input [3, 299, 299] f32: convert('RGB'), uint8/255,
 * F.interpolate(size=(299, 299), mode='bilinear', align_corners=False) without antialiasing,
 * then 2x - 1. `out` holds 3*299*299 floats. */
nu_status nu_fid_preprocess(const nu_image *img, float *out);

/* ---- metrics ---- */
/* Metrics on feature matrices (row-major [n, dim] f32, as nu_inception_features gives them),
 * computed in double precision, with the conventions of the reference tools stated per function.
 * Every function returns NU_ERR_INVALID_ARG for impossible sizes (with a message saying which),
 * NU_ERR_NUMERIC for NaN/Inf in the input, NU_ERR_NOMEM on allocation failure. pool may be NULL
 * (one thread); results do not depend on the number of threads. docs/metrics.md explains each. */

/* -- .npz archives: numpy.savez (ZIP, stored) and savez_compressed (deflate) of .npy arrays -- */
typedef struct nu_npz nu_npz;
typedef struct nu_npy_array {
    const char *name;        /* key (the member name without ".npy")                           */
    nu_type type;            /* F64 F32 F16 I64 I32 I16 I8 U8 BOOL ('<', '>' and '|' accepted)  */
    int ndim;                /* 0 for a scalar                                                  */
    int64_t ne[NU_MAX_DIMS]; /* shape                                                           */
    const void *data;        /* C order, native little-endian values; owned by the archive      */
    size_t nbytes;
} nu_npy_array;
/* Opens an archive and validates its ZIP directory (entries are decoded on first nu_npz_get).
 * Hostile input returns NU_ERR_FORMAT naming the file and member; encrypted / non-deflate
 * members, pickled (object) arrays and structured dtypes are NU_ERR_UNSUPPORTED. */
nu_status nu_npz_open(const char *path, nu_npz **out);
/* Same over a caller-owned buffer (must outlive the handle); used by fuzzers and tests. */
nu_status nu_npz_open_memory(const void *data, size_t size, const char *label, nu_npz **out);
void nu_npz_close(nu_npz *z);
int nu_npz_count(const nu_npz *z);
const char *nu_npz_key(const nu_npz *z, int i); /* member name without ".npy" */
/* Decodes (inflate, CRC check, .npy header, byte order, Fortran order -> C order) and caches.
 * NU_ERR_NOT_FOUND if the key is absent. The array lives until nu_npz_close. */
nu_status nu_npz_get(nu_npz *z, const char *key, const nu_npy_array **out);
/* Converts every value of a (any listed dtype) to double: out holds nelements(a) values. */
void nu_npy_to_f64(const nu_npy_array *a, double *out);

typedef struct nu_npz_item {
    const char *key;         /* stored as "<key>.npy"                                        */
    nu_type type;            /* F64 F32 F16 I64 I32 I16 I8 U8 BOOL                           */
    int ndim;
    int64_t ne[NU_MAX_DIMS];
    const void *data;        /* contiguous C order                                           */
} nu_npz_item;
/* Writes an uncompressed archive as numpy.savez does (.npy format 1.0 headers, 64-byte aligned),
 * atomically. Members over 4 GiB are NU_ERR_UNSUPPORTED (no ZIP64 writing). */
nu_status nu_npz_save(const char *path, const nu_npz_item *items, int n);

/* -- FID (Heusel et al. 2017), as pytorch-fid's calculate_frechet_distance -- */
typedef struct nu_fid_stats {
    int dim;
    int64_t n;     /* samples the statistics came from (0 when loaded from a file)          */
    double *mu;    /* [dim]       mean                                                       */
    double *sigma; /* [dim, dim]  covariance with the 1/(n-1) normalisation of np.cov        */
} nu_fid_stats;
void nu_fid_stats_free(nu_fid_stats *s); /* frees mu/sigma, zeroes the struct */

/* Streaming mean/covariance in double over batches of features (shifted by the first sample so
 * the one-pass formula loses nothing to cancellation); equals np.mean / np.cov(rowvar=False) on
 * the features held in float64, to rounding. */
typedef struct nu_fid_accum nu_fid_accum;
nu_fid_accum *nu_fid_accum_new(int dim); /* NULL on allocation failure or dim < 1 */
void nu_fid_accum_free(nu_fid_accum *a);
nu_status nu_fid_accum_add(nu_fid_accum *a, const float *feats, int64_t n); /* feats [n, dim] */
int64_t nu_fid_accum_count(const nu_fid_accum *a);
nu_status nu_fid_accum_stats(const nu_fid_accum *a, nu_fid_stats *out); /* needs >= 2 samples */
nu_status nu_fid_stats_from_features(const float *feats, int64_t n, int dim, nu_fid_stats *out);

/* pytorch-fid's statistics file: .npz with "mu" [dim] and "sigma" [dim, dim] (any float dtype,
 * stored or compressed). Saving writes float64, uncompressed, readable by np.load. */
nu_status nu_fid_stats_load(const char *path, nu_fid_stats *out);
nu_status nu_fid_stats_save(const char *path, const nu_fid_stats *s);

/* d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)). The trace of the square root is
 * computed without forming sqrtm(S1 S2): S_i = V_i diag(w_i) V_i^T (symmetric eigensolver),
 * eigenvalues at the noise level (w <= dim * eps * max w, and negatives) set to zero,
 * A_i = V_i diag(sqrt w_i) over the rest, and tr((S1 S2)^(1/2)) = sum of the singular values of
 * A2^T A1 (the eigenvalues of S1 S2 are their squares). Stable when the covariances are singular
 * (n < dim) or ill-conditioned; agrees with scipy.linalg.sqrtm to ~1e-6 relative and with exact
 * values to ~1e-12 (docs/metrics.md). Inputs are symmetrised ((S + S^T)/2) first. */
nu_status nu_frechet_distance(const double *mu1, const double *sigma1, const double *mu2, const double *sigma2,
                              int dim, nu_pool *pool, double *out);
nu_status nu_fid_from_stats(const nu_fid_stats *a, const nu_fid_stats *b, nu_pool *pool, double *out);

/* -- KID (Binkowski et al. 2018), as clean-fid's kernel_distance -- */
typedef struct nu_kid_params {
    int num_subsets;  /* 100                                                                  */
    int subset_size;  /* 1000; m = min(n1, n2, subset_size) (clean-fid's max_subset_size)      */
    uint32_t seed;    /* 0: subsets drawn as np.random.seed(seed) then, per subset,
                         x = f2[choice(n2, m, replace=False)], y = f1[choice(n1, m, ...)]     */
} nu_kid_params;
nu_kid_params nu_kid_params_init(void);
/* Unbiased MMD^2 with k(x, y) = (x.y / dim + 1)^3, averaged over subsets:
 * per subset [sum_{i!=j} k(x_i,x_j) + sum_{i!=j} k(y_i,y_j)] / (m(m-1)) - 2 sum_{i,j} k(x_i,y_j) / m^2.
 * mean equals clean-fid's kernel_distance(f1, f2) after np.random.seed(seed) (computed in double
 * here; clean-fid uses float32 Gram matrices); std is the population std over subsets
 * (torch-fidelity's kernel_inception_distance_std). std may be NULL. */
nu_status nu_kid(const float *f1, int64_t n1, const float *f2, int64_t n2, int dim, const nu_kid_params *p,
                 nu_pool *pool, double *mean, double *std);

/* -- Inception Score (Salimans et al. 2016), as torch-fidelity's isc / improved-gan -- */
typedef struct nu_is_params {
    int splits;     /* 10                                                                     */
    bool shuffle;   /* true: rows permuted by np.random.RandomState(seed).permutation(n) first
                       (torch-fidelity); false: consecutive chunks (original improved-gan code) */
    uint32_t seed;  /* 2020 (torch-fidelity's rng_seed)                                        */
} nu_is_params;
nu_is_params nu_is_params_init(void);
/* logits [n, classes] (softmax in double over all classes): split k covers rows
 * [k n / splits, (k+1) n / splits); score_k = exp(mean_i KL(p_i || mean_split p)); mean and
 * population std over splits. torch-fidelity and the original use the fc layer WITHOUT its bias
 * over all 1008 classes ("logits_unbiased"): pass logits - fc.bias (see docs/metrics.md). */
nu_status nu_inception_score(const float *logits, int64_t n, int classes, const nu_is_params *p, double *mean,
                             double *std);

/* -- Improved precision / recall (Kynkaanniemi et al. 2019) + density / coverage (Naeem et al. 2020) -- */
typedef struct nu_prdc_result {
    double precision; /* fraction of generated samples inside some real sample's k-NN ball   */
    double recall;    /* fraction of real samples inside some generated sample's k-NN ball   */
    double density;   /* (1/(k M)) sum_j #{real i : |y_j - x_i| < r_k(x_i)}  (strict, as prdc) */
    double coverage;  /* fraction of real i with min_j |x_i - y_j| < r_k(x_i)  (strict, as prdc) */
} nu_prdc_result;
/* real [n1, dim], fake [n2, dim]; k-th nearest-neighbour radius excluding the sample itself
 * (torch's kthvalue(k+1)); "inside" is distance <= radius, as the original code and
 * torch-fidelity. Euclidean distances from double GEMMs. Needs n1, n2 > k. */
nu_status nu_prdc(const float *real, int64_t n1, const float *fake, int64_t n2, int dim, int k, nu_pool *pool,
                  nu_prdc_result *out);

#ifdef __cplusplus
}
#endif
#endif
