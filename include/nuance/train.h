/*
 * nuance/train.h — model-independent training: flat parameter buffers, AdamW, gradient clipping,
 * LR warm-up + cosine decay, gradient accumulation, EMA of weights, checkpoints that resume
 * exactly, SIGINT/SIGTERM handling, and datasets (image folders, MNIST idx) decoded on a
 * background thread.
 *
 * Tutorial
 * --------
 *     // 1. build the model and loss as usual; weights are NU_FLAG_PARAM leaves with unique names
 *     nu_graph *g = nu_graph_new(ctx);
 *     nu_graph_expand(g, loss);
 *     nu_graph_backward(g, loss);
 *     // 2. the trainer gathers the parameters into one flat f32 buffer (values), their
 *     //    gradients into another, and owns AdamW moments and EMA (flat buffers too).
 *     //    Call it after nu_graph_backward and BEFORE nu_graph_alloc.
 *     nu_train_params tp = nu_train_params_init();
 *     tp.lr = 1e-3f; tp.warmup_steps = 500; tp.total_steps = 20000; tp.clip_norm = 1.0f; tp.ema = true;
 *     nu_trainer *tr;
 *     nu_trainer_new(g, loss, pool, &tp, &tr);
 *     nu_graph_alloc(g);
 *     nu_dataset *data;  nu_dataset_params dp = nu_dataset_params_init();
 *     dp.path = "/usr/share/datasets/fashion-mnist"; dp.batch_size = 64;
 *     nu_dataset_open(&dp, &data);
 *     nu_train_signals_install();                           // SIGINT/SIGTERM -> stop request
 *     while (nu_trainer_step_count(tr) < tp.total_steps && !nu_train_stop_requested()) {
 *         for (int k = 0; k < tp.accum_steps; k++) {
 *             const nu_batch *b;  nu_dataset_next(data, &b);  // copy b->images into the input
 *             nu_rng_randn_f32(nu_trainer_rng(tr), noise, n); // objective's randomness
 *             float l;  if (nu_trainer_forward_backward(tr, &l) != NU_OK) ...;   // NaN -> error
 *         }
 *         nu_step_info info;  nu_trainer_step(tr, &info);  // clip, AdamW, EMA
 *         if (info.step % 1000 == 0) nu_trainer_save(tr, "ckpt.safetensors", config_json, data);
 *     }
 *     nu_trainer_save(tr, "ckpt.safetensors", config_json, data);    // final / on signal
 *     // resume: rebuild the same model, nu_trainer_new, then
 *     nu_trainer_load(tr, "ckpt.safetensors", data, NULL);  // weights, EMA, m, v, step, RNG, data position
 *
 * Exactness: with the same seed and thread count, a run is bitwise reproducible, and a run that
 * saved a checkpoint, died and was resumed produces bitwise the same losses as one that never
 * stopped (tests/test_train.c). AdamW, clipping, the schedule and EMA follow PyTorch / diffusers
 * (formulas cited in src/train/optim.c); a 20-step trajectory matches torch.optim.AdamW +
 * clip_grad_norm_ + LambdaLR within 1e-4 relative.
 *
 * Checkpoint layout (safetensors; all f32 unless said): "<param name>" weights (so a checkpoint is
 * also a plain weights file), "ema.<name>" EMA weights, "adam.m.<name>" / "adam.v.<name>" AdamW
 * moments, "train.rng" (u8 [5056], the trainer RNG as torch.get_rng_state()). __metadata__:
 * "format" = "nuance.train.checkpoint", "format_version", "step", "config" (the caller's JSON),
 * "train_params" (JSON), "data.position" / "data.samples" / "data.seed" (when a dataset is given).
 *
 * Tested by tests/test_train.c and tests/test_data.c.
 */
#ifndef NUANCE_TRAIN_H
#define NUANCE_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nuance/rng.h"
#include "nuance/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- flat parameter buffers */

/* The NU_FLAG_PARAM tensors of a graph, re-pointed into one flat f32 values buffer, their
 * gradient nodes writing straight into one flat f32 gradients buffer (no copy per step).
 * Order: tensors that receive a gradient first, then the others, each group sorted by name
 * (strcmp); every tensor starts at a multiple of 16 floats (64 bytes), the gaps hold zeros.
 * Parameters must be f32, contiguous, not views, with unique non-empty names. */
typedef struct nu_params nu_params;

/* Call after nu_graph_backward and before nu_graph_alloc (the gradient nodes must not be placed
 * yet). Current parameter values are copied into the flat buffer (a parameter without data
 * starts at 0). Views of parameters or gradients inside g are re-pointed; views built in other
 * graphs before this call keep the old memory, so build those graphs afterwards.
 * Free with nu_params_free before freeing the ctx: it copies the values back into each
 * parameter's original memory and restores its data pointer, so parameters must live in
 * writable memory (a ctx with alloc_data), not over a read-only mapped file. */
nu_status nu_params_collect(nu_graph *g, nu_params **out);
void nu_params_free(nu_params *p);
int nu_params_n_tensors(const nu_params *p);
int nu_params_n_trainable_tensors(const nu_params *p); /* tensors [0, this) have gradients   */
nu_tensor *nu_params_tensor(const nu_params *p, int i);
int64_t nu_params_offset(const nu_params *p, int i);   /* first element of tensor i          */
int nu_params_find(const nu_params *p, const char *name); /* index, or -1                    */
int64_t nu_params_size(const nu_params *p);            /* floats in values (padding included) */
int64_t nu_params_trainable_size(const nu_params *p);  /* floats in grads: [0, this)          */
int64_t nu_params_count(const nu_params *p);           /* real parameters (no padding)        */
float *nu_params_values(nu_params *p);
float *nu_params_grads(nu_params *p); /* written by every nu_graph_compute of the graph          */

/* ---------------------------------------------------------------- flat optimizer kernels */
/* Exposed for tests and custom loops; the trainer below uses them. `pool` may be NULL. */

/* One torch.optim.AdamW step (amsgrad=False, maximize=False) over n values; `step` is the
 * 1-based step count used for bias correction, `lr` the learning rate of this step. */
void nu_adamw_update(nu_pool *pool, float *param, const float *grad, float *m, float *v, int64_t n, double lr,
                     double beta1, double beta2, double eps, double weight_decay, int64_t step, bool use_ref);
/* Global L2 norm of x[0, n), computed in double over fixed 16384-value chunks summed in order, so
 * the result is independent of the thread count. */
double nu_grad_norm(nu_pool *pool, const float *x, int64_t n);
/* shadow = shadow - (1 - decay) * (shadow - param)   (diffusers EMAModel.step) */
void nu_ema_update(nu_pool *pool, float *shadow, const float *param, int64_t n, double decay, bool use_ref);

/* ---------------------------------------------------------------- trainer */

typedef enum nu_lr_schedule {
    NU_LR_SCHEDULE_CONSTANT, /* linear warm-up, then constant (transformers' constant_with_warmup) */
    NU_LR_SCHEDULE_COSINE,   /* linear warm-up, then half-cosine to min_lr_ratio*lr at total_steps */
    NU_LR_SCHEDULE_COUNT
} nu_lr_schedule;

typedef enum nu_ema_warmup {
    NU_EMA_WARMUP_NONE,      /* decay = ema_decay from the first update on                       */
    NU_EMA_WARMUP_DIFFUSERS, /* decay = (1+s)/(10+s), diffusers EMAModel default (use_ema_warmup=False) */
    NU_EMA_WARMUP_POWER,     /* decay = 1 - (1 + s/inv_gamma)^-power (use_ema_warmup=True)         */
    NU_EMA_WARMUP_COUNT
} nu_ema_warmup;

typedef struct nu_train_params {
    /* AdamW, as torch.optim.AdamW */
    double lr;           /* peak learning rate                                 (1e-3)        */
    double beta1, beta2; /*                                                    (0.9, 0.999)  */
    double eps;          /* added outside the square root                      (1e-8)        */
    double weight_decay; /* decoupled: p *= 1 - lr*wd before the Adam update   (0.01)        */
    bool no_decay_1d;   /* no weight decay on 1-D tensors (biases, norm scales) (false)      */
    /* learning-rate schedule: lr(step) = lr * factor(step), step counted from 0 */
    nu_lr_schedule schedule; /*                                                (COSINE)      */
    int64_t warmup_steps;    /* factor = step / warmup_steps while step < warmup (0)          */
    int64_t total_steps;     /* cosine reaches its floor here and stays           (0: constant) */
    double min_lr_ratio;     /* cosine floor as a fraction of lr                 (0)          */
    /* gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_ (<= 0: off)  (0)    */
    double clip_norm;
    /* gradient accumulation: micro-batches per optimizer step; gradients are averaged       (1) */
    int accum_steps;
    /* EMA of weights, as diffusers EMAModel (shadow starts as a copy of the weights)         */
    bool ema;                      /*                                           (false)       */
    double ema_decay;              /* upper bound on the decay                  (0.9999)      */
    double ema_min_decay;          /* lower bound                               (0)           */
    int64_t ema_update_after_step; /* decay 0 (copy) until this many steps      (0)           */
    nu_ema_warmup ema_warmup;      /*                                           (DIFFUSERS)   */
    double ema_inv_gamma, ema_power; /* POWER warm-up                           (1, 2/3)      */
    /* determinism: seeds the trainer RNG (noise, timesteps, label dropout)     (0)           */
    uint64_t seed;
} nu_train_params;
nu_train_params nu_train_params_init(void);

/* Learning rate of optimizer step `step` (0-based: the first step uses step 0), in double as
 * LambdaLR computes it. */
double nu_train_lr_at(const nu_train_params *p, int64_t step);
/* EMA decay used by the `update`-th EMA update (1-based, diffusers' optimization_step). */
double nu_train_ema_decay_at(const nu_train_params *p, int64_t update);

typedef struct nu_trainer nu_trainer;

/* Creates a trainer over graph g (expanded and differentiated, not yet allocated) whose scalar
 * loss is `loss`; collects the parameters (nu_params_collect), allocates moments (and EMA and an
 * accumulation buffer when needed), seeds the RNG. pool runs the graph and the flat loops. */
nu_status nu_trainer_new(nu_graph *g, nu_tensor *loss, nu_pool *pool, const nu_train_params *p, nu_trainer **out);
/* Frees the trainer and its nu_params (values are copied back into the parameters). */
void nu_trainer_free(nu_trainer *t);
nu_params *nu_trainer_params(nu_trainer *t);
const nu_train_params *nu_trainer_train_params(const nu_trainer *t);
nu_rng *nu_trainer_rng(nu_trainer *t);
int64_t nu_trainer_step_count(const nu_trainer *t); /* optimizer steps done                  */
int nu_trainer_micro_count(const nu_trainer *t);    /* micro-batches summed toward the next step */
float *nu_trainer_ema(nu_trainer *t);     /* [nu_params_size] or NULL without EMA           */
float *nu_trainer_adam_m(nu_trainer *t);  /* [nu_params_trainable_size]                    */
float *nu_trainer_adam_v(nu_trainer *t);
/* The gradient the last/next optimizer step uses: the graph's gradients (accum_steps = 1) or
 * their running sum (accumulation); after nu_trainer_step, the averaged and clipped gradient. */
float *nu_trainer_grads(nu_trainer *t);

/* Runs the graph once (forward + backward) and adds its gradients to the step's sum. *loss_out
 * (may be NULL) gets the loss. NU_ERR_NUMERIC (naming step and micro-batch) if the loss is not
 * finite; the gradients of that micro-batch are then not added. */
nu_status nu_trainer_forward_backward(nu_trainer *t, float *loss_out);

typedef struct nu_step_info {
    int64_t step;     /* steps done after this one (1 for the first)                     */
    double lr;        /* learning rate used                                              */
    float loss;       /* mean loss over the step's micro-batches                         */
    float grad_norm;  /* global L2 norm of the averaged gradient, before clipping        */
    float clip_coef;  /* factor the gradient was multiplied by (1 without clipping)      */
    double ema_decay; /* decay of this EMA update (0 without EMA)                        */
} nu_step_info;

/* After accum_steps calls of nu_trainer_forward_backward: averages the gradients, clips them,
 * applies AdamW with this step's learning rate, updates the EMA, and counts the step.
 * NU_ERR_NUMERIC (weights untouched, accumulation cleared) if the gradient norm is not finite;
 * NU_ERR_INVALID_ARG if fewer micro-batches than accum_steps were run. info may be NULL. */
nu_status nu_trainer_step(nu_trainer *t, nu_step_info *info);
/* Drops the micro-batches summed so far (e.g. after a NaN loss one wants to skip). */
void nu_trainer_zero_grad(nu_trainer *t);
/* Exchanges the live weights and the EMA weights (to sample with EMA); call again to swap back.
 * No-op without EMA. */
void nu_trainer_swap_ema(nu_trainer *t);

/* ---------------------------------------------------------------- datasets */

typedef struct nu_dataset_params {
    /* A folder of images (PNG/JPEG/WebP; one subfolder per class gives labels, sorted by name as
     * torchvision's ImageFolder), a folder holding MNIST idx files "<split>-images-idx3-ubyte"
     * (+ ".gz"), or one such images file (labels: "...labels-idx1-ubyte" beside it). */
    const char *path;
    const char *split;        /* idx folders: file prefix                       ("train")   */
    int channels;             /* 1 or 3; 0: the data's (idx: 1; folders: 1 if the first
                                 readable image is gray, else 3)                (0)         */
    bool strict_channels;     /* an image with another channel count (alpha aside) is an error
                                 naming it, instead of being converted (gray<->RGB)  (false)  */
    int resolution;           /* > 0: resize the shorter side to this (antialiased bilinear, as
                                 PIL), then crop a square; 0: native size, all images alike (0) */
    bool random_crop;         /* random instead of centre crop                  (false)     */
    bool random_flip;         /* horizontal flip with probability 1/2           (false)     */
    float range_lo, range_hi; /* pixel 0 -> lo, 255 -> hi                       (-1, 1)     */
    bool captions;            /* read "<stem>.txt" beside each image            (false)     */
    int batch_size;           /*                                                (32)        */
    bool shuffle;             /* a new permutation every epoch                  (true)      */
    bool drop_last;           /* every batch is full (else the epoch's last may be short) (true) */
    uint64_t seed;            /* shuffling and augmentation                     (0)         */
    int prefetch;             /* batches decoded ahead on a background thread; 0: decode in
                                 nu_dataset_next on the caller's thread        (4)         */
    int64_t limit;            /* use the first `limit` samples only (0: all)    (0)         */
} nu_dataset_params;
nu_dataset_params nu_dataset_params_init(void);

typedef struct nu_batch {
    int n, c, h, w;           /* n samples (batch_size except a short last batch)             */
    float *images;            /* [n, c, h, w]                                                 */
    int64_t *labels;          /* [n]; -1 where the dataset has no labels                     */
    const char *const *captions; /* [n] (entries NULL where no caption) or NULL if captions off */
    int64_t *indices;         /* [n] dataset index of each sample (sorted file order)         */
    int64_t position;         /* global batch number (0 = first batch of epoch 0)             */
    int64_t epoch;
} nu_batch;

typedef struct nu_dataset nu_dataset;
/* Scans the dataset and checks the first readable image. Errors name the path: NU_ERR_NOT_FOUND
 * (missing), NU_ERR_INVALID_ARG (empty, too few samples for a batch, bad parameters),
 * NU_ERR_FORMAT (idx file malformed). */
nu_status nu_dataset_open(const nu_dataset_params *p, nu_dataset **out);
void nu_dataset_free(nu_dataset *d);
int64_t nu_dataset_count(const nu_dataset *d);
int64_t nu_dataset_batches_per_epoch(const nu_dataset *d);
int nu_dataset_channels(const nu_dataset *d);
int nu_dataset_height(const nu_dataset *d);
int nu_dataset_width(const nu_dataset *d);
int nu_dataset_n_classes(const nu_dataset *d);         /* 0 when unlabeled                  */
const char *nu_dataset_class_name(const nu_dataset *d, int i); /* folder name, or "0".."9"   */
const char *nu_dataset_path(const nu_dataset *d, int64_t index); /* file of a folder sample  */
/* Unreadable or corrupt images met so far (each skipped with a warning through nu_log and
 * replaced, deterministically, by the next sample of the epoch's order). The warning may come
 * from the loader thread: the log callback must be thread-safe. */
int64_t nu_dataset_skipped(const nu_dataset *d);

/* The next batch, valid until the next call (or seek/free). Batch contents depend only on the
 * seed and the position, never on timing or prefetch depth. Errors (an image of the wrong channel
 * count under strict_channels, or of the wrong size at native resolution) name the file. */
nu_status nu_dataset_next(nu_dataset *d, const nu_batch **out);
int64_t nu_dataset_position(const nu_dataset *d); /* batches returned so far (resume point)  */
/* The next nu_dataset_next returns batch `position` (as if that many had been consumed). */
nu_status nu_dataset_seek(nu_dataset *d, int64_t position);
uint64_t nu_dataset_seed(const nu_dataset *d);
/* One sample by index with the deterministic transform (centre crop, no flip): out [c, h, w].
 * NU_ERR_FORMAT if that image is unreadable. label/caption may be NULL. Thread-safe with the
 * background loader. */
nu_status nu_dataset_sample(nu_dataset *d, int64_t index, float *out, int64_t *label, const char **caption);

/* ---------------------------------------------------------------- checkpoints */

/* Writes weights, EMA, AdamW moments, step, RNG, the caller's config JSON (may be NULL) and,
 * when data is given, its position — atomically (temp file, fsync, rename): a failed write
 * leaves any previous file intact. Call between optimizer steps (micro count 0). */
nu_status nu_trainer_save(nu_trainer *t, const char *path, const char *config_json, const nu_dataset *data);
/* Restores everything nu_trainer_save wrote (and data's position when data is given), so the
 * run continues exactly. All checks happen before anything changes: a truncated file, one from
 * another model (a missing, extra or mis-shaped tensor, named) or not a training checkpoint
 * leaves the trainer as it was. *config_json (may be NULL) gets a malloc'ed copy of the config. */
nu_status nu_trainer_load(nu_trainer *t, const char *path, nu_dataset *data, char **config_json);
/* Loads only weights (any float dtype, plain names or "ema." ones when use_ema) into the
 * trainer's parameters, e.g. to fine-tune; EMA restarts from them. Every parameter must be present. */
nu_status nu_trainer_load_weights(nu_trainer *t, const char *path, bool use_ema);
/* A metadata value of a checkpoint (e.g. "config", "step") as a malloc'ed string, to rebuild the
 * model before nu_trainer_load. NU_ERR_NOT_FOUND if absent. */
nu_status nu_checkpoint_metadata(const char *path, const char *key, char **value);

/* SIGINT/SIGTERM: the first sets a stop request that the training loop polls (then writes a
 * final checkpoint and returns); a second one ends the process as the default action would.
 * The handler only stores to a volatile sig_atomic_t (async-signal-safe). */
void nu_train_signals_install(void);
void nu_train_signals_restore(void);
bool nu_train_stop_requested(void);
void nu_train_request_stop(void); /* same as a signal, from code                              */
void nu_train_clear_stop(void);

#ifdef __cplusplus
}
#endif
#endif
