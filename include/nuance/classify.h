/*
 * nuance/classify.h — a small CNN image classifier trained with nuance, the measuring instrument
 * for generated samples (issue 4 item 6): the fraction of generated images whose predicted class
 * matches the requested one, and the Fréchet distance between the classifier's 256-d features of
 * generated and real images (FID's formula, nu_frechet_distance, on this network's features).
 *
 * Network (BN-free; PyTorch state_dict names in brackets), for x [B, C, S, S] (S = 28):
 *     [conv1] 3x3 pad 1, C -> w0, ReLU, max-pool 2      -> [B, w0, S/2, S/2]
 *     [conv2] 3x3 pad 1, w0 -> w1, ReLU, max-pool 2     -> [B, w1, S/4, S/4]
 *     [conv3] 3x3 pad 1, w1 -> w2, ReLU, max-pool 2     -> [B, w2, S/8, S/8]   (floor: 28 -> 3)
 *     flatten, [fc1] -> hidden, ReLU                    -> features [B, hidden]
 *     (training: dropout on the features), [fc2] -> K   -> logits [B, K]
 * Defaults w = (32, 64, 128), hidden 256, K = 10: 390k parameters, 0.78 MB in f16.
 *
 *     nu_classifier *m;
 *     nu_classifier_load("models/classifier-mnist.safetensors", &m);
 *     nu_classifier_outputs o;
 *     nu_classifier_eval_path(m, pool, "data/mnist", "t10k", 0, 0, true, &o);   // or a folder of PNGs
 *     // o.pred[i], o.label[i], o.features[i * hidden ...]
 *     nu_classifier_outputs_free(&o);  nu_classifier_free(m);
 *
 * File format (safetensors): tensors named as above (f16 for the shipped models, f32 accepted),
 * __metadata__ "format" = "nuance.classifier", "format_version" = "1", "config" = JSON from
 * nu_classifier_config_to_json (widths, hidden, classes and their names, input range), and
 * optionally "training" (JSON written by `nuance train-classifier`). A trainer checkpoint whose
 * "config" is such a JSON loads too.
 *
 * Implemented in src/models/classifier.c (model, files, inference) and
 * src/train/train_classifier.c (training, preprocessing, dataset evaluation). Tested by
 * tests/test_classify.c;
 * docs/classify.md gives the shipped models' accuracies and Fréchet floors.
 */
#ifndef NUANCE_CLASSIFY_H
#define NUANCE_CLASSIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "nuance/io.h"
#include "nuance/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NU_CLASSIFIER_MAX_CLASSES 256
#define NU_CLASSIFIER_MAX_NAME 32 /* bytes of a class name, NUL included */

typedef struct nu_classifier_config {
    int in_channels;            /* 1 or 3                                                   (1)  */
    int size;                   /* input H = W, >= 8                                        (28) */
    int widths[3];              /* conv1..conv3 output channels                  (32, 64, 128) */
    int hidden;                 /* fc1 width = feature dimension                            (256) */
    int num_classes;            /* K, 2..NU_CLASSIFIER_MAX_CLASSES                           (10) */
    float range_lo, range_hi;   /* pixel value 0 -> lo, 255 -> hi (as nu_dataset)        (-1, 1) */
    /* class i's name (ASCII, no commas); "" means its index "i"                  ("0".."9") */
    char class_names[NU_CLASSIFIER_MAX_CLASSES][NU_CLASSIFIER_MAX_NAME];
} nu_classifier_config;

nu_classifier_config nu_classifier_config_init(void);
/* Named errors for impossible values (NU_ERR_INVALID_ARG). */
nu_status nu_classifier_config_check(const nu_classifier_config *c);
/* Sets num_classes and the names from "mnist" ("0".."9"), "fashion-mnist" ("t-shirt", "trouser",
 * "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot") or a
 * comma-separated list ("cat,dog"). */
nu_status nu_classifier_config_set_names(nu_classifier_config *c, const char *names);
/* JSON (malloc'ed; NULL on out of memory) / parse (label names the source in errors). */
char *nu_classifier_config_to_json(const nu_classifier_config *c);
nu_status nu_classifier_config_from_json(const char *json, size_t len, const char *label, nu_classifier_config *out);

typedef struct nu_classifier nu_classifier;

/* Parameters initialised from seed: conv / fc1 weights He-uniform U(-sqrt(6/fan_in), +) (ReLU
 * layers, He et al. 2015), fc2 U(-1/sqrt(fan_in), +) (nn.Linear's default), biases zero. */
nu_status nu_classifier_new(const nu_classifier_config *c, uint64_t seed, nu_classifier **out);
/* Loads a classifier file (or a training checkpoint of one); weights any float dtype, kept in
 * f32. Errors name the file and tensor. */
nu_status nu_classifier_load(const char *path, nu_classifier **out);
/* Writes the weights as `type` (NU_TYPE_F16 or NU_TYPE_F32) with the config; training_json (may
 * be NULL) goes into the "training" metadata. Atomic (temp file, fsync, rename). */
nu_status nu_classifier_save(const nu_classifier *m, const char *path, nu_type type, const char *training_json);
/* Free after every graph and trainer using its parameters. */
void nu_classifier_free(nu_classifier *m);

const nu_classifier_config *nu_classifier_get_config(const nu_classifier *m);
int nu_classifier_n_tensors(const nu_classifier *m);
nu_tensor *nu_classifier_tensor(nu_classifier *m, int i); /* f32, NU_FLAG_PARAM, named */
int64_t nu_classifier_n_params(const nu_classifier *m);
/* Class i's name ("7", "sneaker"); NULL out of range. */
const char *nu_classifier_class_name(const nu_classifier *m, int i);
/* The class a user names: its name (case-insensitive) or its index in decimal; -1 if none. */
int nu_classifier_class_index(const nu_classifier *m, const char *label_or_name);

/* The network as graph ops in ctx: x [B, C, S, S] f32 -> logits [B, K]. keep_mask: NULL, or
 * [B, hidden] f32 multiplied into the features before fc2 (inverted dropout: entries 0 or
 * 1/(1-p), drawn by the caller). *features (may be NULL) gets the [B, hidden] ReLU(fc1) node. */
nu_tensor *nu_classifier_forward(nu_classifier *m, nu_ctx *ctx, nu_tensor *x, nu_tensor *keep_mask,
                                 nu_tensor **features);

/* Runs n preprocessed images x [n, C, S, S] (values in [range_lo, range_hi]) in batches of up to
 * 100: logits [n, K] and features [n, hidden] (either may be NULL). pool may be NULL (one
 * thread). NU_ERR_CANCELLED if the pool is cancelled. */
nu_status nu_classifier_run(nu_classifier *m, nu_pool *pool, const float *x, int64_t n, float *logits,
                            float *features);
/* Predicted class of each of n logits rows [n, K] (first maximum). */
void nu_classifier_argmax(const float *logits, int64_t n, int K, int64_t *pred);

/* One image (any size, 1-4 channels) -> network input [C, S, S], as the dataset loader prepares
 * training images (src/train/data.c): gray by ITU-R 601 luma (or gray -> RGB), alpha dropped,
 * shorter side resized to S (antialiased bilinear, PIL-like), centre crop, range mapped.
 * via_size > 0: first to via_size x via_size the same way, rounded to 8 bits (see
 * nu_classifier_eval_path); 0: directly. */
nu_status nu_classifier_preprocess(const nu_classifier *m, const nu_image *img, int via_size, float *out);

/* ---------------------------------------------------------------- evaluation (train_classifier.c) */

typedef struct nu_classifier_outputs {
    int64_t n;          /* images evaluated                                                  */
    int64_t *pred;      /* [n] predicted class                                               */
    int64_t *label;     /* [n] the classifier's class index of each image's label, -1 unlabeled */
    float *features;    /* [n, hidden] (NULL unless asked for)                               */
    int64_t skipped;    /* unreadable images skipped (folders only)                           */
} nu_classifier_outputs;
void nu_classifier_outputs_free(nu_classifier_outputs *o);

/* Every image of a dataset through the classifier, in file order: `path` as nu_dataset_params
 * (an MNIST idx folder with split, an idx images file, or an image folder — one subfolder per
 * class gives labels, else unlabeled). Images are preprocessed as nu_classifier_preprocess
 * does. Labels are mapped to the classifier's classes: idx labels by
 * index, subfolders by name or index (a subfolder naming no class is an error naming it).
 * limit > 0 uses the first `limit` images. want_features: fill o->features.
 * via_size > 0: each image is first brought to via_size x via_size as the dataset loader does
 * for training at that resolution, rounded to 8 bits as a saved PNG is, then preprocessed: real
 * images then take the path that samples of a generator trained at via_size take (e.g. MNIST
 * 28 -> 32 -> 28), so the Fréchet distance does not count the resampling blur; samples already
 * at via_size pass unchanged through that first step. */
nu_status nu_classifier_eval_path(nu_classifier *m, nu_pool *pool, const char *path, const char *split,
                                  int64_t limit, int via_size, bool want_features, nu_classifier_outputs *out);

/* Fréchet distance between two feature sets [n1, dim] / [n2, dim] (n1, n2 >= 2), as FID:
 * |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) with np.cov's covariances (nuance/metrics.h). */
nu_status nu_classifier_frechet(const float *f1, int64_t n1, const float *f2, int64_t n2, int dim, nu_pool *pool,
                                double *out);

/* ---------------------------------------------------------------- training (train_classifier.c) */

typedef struct nu_classifier_progress {
    int64_t step, total_steps;
    int epoch;              /* 0-based                                                      */
    float loss;             /* this step's mean cross-entropy                                 */
    double lr;
    double images_per_s;    /* since the start                                              */
    double elapsed_s;
} nu_classifier_progress;

typedef struct nu_classifier_train_params {
    const char *data;       /* dataset path (nu_dataset_params.path)                         */
    const char *split;      /* idx file prefix                                        ("train") */
    int epochs;             /*                                                           (3)  */
    int batch_size;         /*                                                          (128) */
    double lr;              /* AdamW peak; linear warm-up, then cosine to 0          (2e-3)   */
    int64_t warmup_steps;   /*                                                          (100) */
    double weight_decay;    /* decoupled, not on biases                               (0.01)  */
    float dropout;          /* on the features during training                        (0.25)  */
    bool random_flip;       /* horizontal flips (Fashion-MNIST; not digits)           (false) */
    int64_t limit;          /* first `limit` training images only (0: all)              (0)   */
    uint64_t seed;          /* data order, dropout masks (init seed: the model's)       (0)   */
    nu_pool *pool;          /* runs the graph; NULL: one thread                               */
    /* called after every optimizer step (may be NULL); return false to stop early */
    bool (*progress)(const nu_classifier_progress *p, void *user);
    void *user;
} nu_classifier_train_params;
nu_classifier_train_params nu_classifier_train_params_init(void);

typedef struct nu_classifier_train_result {
    int64_t steps;          /* optimizer steps done                                          */
    int64_t images;         /* training images seen                                          */
    float final_loss;       /* mean loss of the last epoch's steps                           */
    double seconds;         /* wall time of the loop                                         */
    bool stopped;           /* the progress callback asked to stop                           */
} nu_classifier_train_result;

/* Trains m in place on p->data with cross-entropy, AdamW and the trainer of nuance/train.h.
 * The dataset's labels must be in [0, num_classes). Same seed and thread count give the same
 * weights bit for bit. NU_ERR_NUMERIC names the step if the loss diverges. */
nu_status nu_classifier_train(nu_classifier *m, const nu_classifier_train_params *p, nu_classifier_train_result *out);

#ifdef __cplusplus
}
#endif
#endif
