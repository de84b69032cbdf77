/*
 * train_internal.h — pieces shared by the files of src/train (not installed): the trainer struct (optim.c
 * owns it, checkpoint.c saves and restores it) and the dataset sources (data.c drives the
 * loader; data_mnist.c parses idx files).
 */
#ifndef NU_TRAIN_INTERNAL_H
#define NU_TRAIN_INTERNAL_H

#include "nuance/train.h"

struct nu_trainer {
    nu_train_params p;
    nu_graph *g;
    nu_tensor *loss;
    nu_pool *pool;
    nu_params *params;
    nu_rng rng;
    int64_t step;      /* optimizer steps done                                      */
    int micro;         /* micro-batches summed toward the next step                 */
    double loss_sum;   /* of those micro-batches                                    */
    float *m, *v;      /* [train_size] AdamW moments                                */
    float *ema;        /* [size] or NULL                                            */
    float *acc;        /* [train_size] gradient sum when accum_steps > 1, else NULL */
    double *partial;   /* per-chunk partial sums for nu_grad_norm (no malloc per step) */
};

/* MNIST idx (data_mnist.c): reads "<...>-images-idx3-ubyte[.gz]" and the matching labels file.
 * pixels: malloc'ed [n, h, w] u8; labels: malloc'ed [n] u8 or NULL when no labels file exists. */
typedef struct nu_idx_data {
    int64_t n;
    int h, w;
    uint8_t *pixels;
    uint8_t *labels;
    char *images_path, *labels_path; /* malloc'ed; labels_path NULL without labels */
} nu_idx_data;
/* path: an images file, or a folder holding "<split>-images-idx3-ubyte[.gz]".
 * Returns NU_ERR_NOT_FOUND when path is a folder without such a file (so the caller can treat
 * it as an image folder), with *is_idx telling whether idx files were found at all. */
nu_status nu_idx_load(const char *path, const char *split, nu_idx_data *out, bool *is_idx);
void nu_idx_free(nu_idx_data *d);
/* Parses one idx blob (already decompressed): magic 0x0000 08 ndim, big-endian u32 dims, u8 data. */
nu_status nu_idx_parse(const uint8_t *buf, size_t size, const char *label, int want_ndim, int64_t *dims,
                       const uint8_t **data);

/* Image transform shared by the loader and tests: u8 interleaved src (w x h x sc) -> float planar
 * [c, out, out] (or [c, h, w] with out <= 0 and no resize); see data.c. */
typedef struct nu_xform {
    int c;             /* output channels 1 or 3                              */
    int out_w, out_h;  /* output size                                         */
    int resize_w, resize_h; /* size the image is resized to before cropping   */
    int crop_x, crop_y;     /* top-left of the crop in resized coordinates    */
    bool flip;
    float lo, hi;
} nu_xform;
/* Returns NU_ERR_NOMEM only. */
nu_status nu_image_transform(const uint8_t *src, int w, int h, int sc, const nu_xform *x, float *out);

#endif
