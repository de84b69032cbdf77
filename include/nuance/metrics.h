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

typedef struct nu_inception nu_inception;

/* Loads weights from a safetensors file with pytorch-fid's state_dict names (Conv2d_1a_3x3.conv.
 * weight, ..., Mixed_7c.*, fc.weight, fc.bias; num_batches_tracked ignored), F32/F16/BF16.
 * BatchNorm (eps 0.001, eval) is folded into each conv at load time, in f32. Errors (missing or
 * misshapen tensor, wrong dtype) name the file and tensor. */
nu_status nu_inception_load(const char *weights_path, nu_inception **out);
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
/* (owned by the metrics engineer: FID/KID/IS/PR, .npz statistics) */

#ifdef __cplusplus
}
#endif
#endif
