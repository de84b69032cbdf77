/*
 * train_classifier.c — training and evaluation of the CNN classifier of nuance/classify.h:
 * the cross-entropy training loop on the trainer of nuance/train.h (AdamW, warm-up + cosine,
 * flat parameters, seeded dataset order and dropout masks: bitwise reproducible for a seed and
 * thread count), image preprocessing shared with the dataset loader, whole-dataset inference
 * with label mapping, and the Fréchet distance of classifier features.
 * Tested by tests/test_classify.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nuance/classify.h"
#include "nuance/metrics.h"
#include "nuance/train.h"
#include "train/train_internal.h"

#define EVAL_CHUNK 500 /* images decoded, then classified, at a time */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------- preprocessing */

/* The dataset loader's plan for resolution R, centre crop (src/train/data.c): torchvision
 * Resize(R) (shorter side R, longer int(R * long / short)) + CenterCrop(R). */
static void plan_resize(int w, int h, int R, int C, float lo, float hi, nu_xform *x) {
    memset(x, 0, sizeof *x);
    x->c = C;
    x->out_w = x->out_h = R;
    x->lo = lo, x->hi = hi;
    if (w <= h) {
        x->resize_w = R;
        x->resize_h = (int)((int64_t)R * h / w);
    } else {
        x->resize_h = R;
        x->resize_w = (int)((int64_t)R * w / h);
    }
    if (x->resize_w < R) x->resize_w = R;
    if (x->resize_h < R) x->resize_h = R;
    x->crop_x = (int)nearbyint((x->resize_w - R) / 2.0); /* Python's round-half-even */
    x->crop_y = (int)nearbyint((x->resize_h - R) / 2.0);
}

nu_status nu_classifier_preprocess(const nu_classifier *m, const nu_image *img, int via_size, float *out) {
    const nu_classifier_config *c = nu_classifier_get_config(m);
    if (!img || !img->pixels || img->width < 1 || img->height < 1 || img->channels < 1 || img->channels > 4)
        return nu_error(NU_ERR_INVALID_ARG, "classifier: not a valid image");
    if (via_size < 0 || via_size > 4096)
        return nu_error(NU_ERR_INVALID_ARG, "classifier: intermediate size %d (0 or 1..4096)", via_size);
    nu_xform x;
    if (via_size > 0) { /* to via_size as [0, 255] floats, rounded to u8 as a saved PNG, then on */
        const int64_t plane = (int64_t)via_size * via_size, C = c->in_channels;
        float *f = malloc(sizeof(float) * (size_t)(plane * C));
        uint8_t *u = malloc((size_t)(plane * C));
        nu_status st = f && u ? NU_OK : nu_error(NU_ERR_NOMEM, "classifier: out of memory");
        if (st == NU_OK) {
            plan_resize(img->width, img->height, via_size, (int)C, 0.0f, 255.0f, &x);
            st = nu_image_transform(img->pixels, img->width, img->height, img->channels, &x, f);
        }
        if (st == NU_OK) {
            for (int64_t ch = 0; ch < C; ch++) /* planar -> interleaved */
                for (int64_t k = 0; k < plane; k++) {
                    float v = f[ch * plane + k];
                    u[k * C + ch] = (uint8_t)lrintf(v < 0 ? 0 : v > 255 ? 255 : v);
                }
            nu_image im = {via_size, via_size, (int)C, u};
            st = nu_classifier_preprocess(m, &im, 0, out);
        }
        free(f);
        free(u);
        return st;
    }
    plan_resize(img->width, img->height, c->size, c->in_channels, c->range_lo, c->range_hi, &x);
    /* alpha is dropped: 2 channels read as gray, 4 as RGB (the transform reads the first 1 or 3) */
    return nu_image_transform(img->pixels, img->width, img->height, img->channels, &x, out);
}

/* ---------------------------------------------------------------- evaluation */

void nu_classifier_outputs_free(nu_classifier_outputs *o) {
    if (!o) return;
    free(o->pred);
    free(o->label);
    free(o->features);
    memset(o, 0, sizeof *o);
}

nu_status nu_classifier_eval_path(nu_classifier *m, nu_pool *pool, const char *path, const char *split,
                                  int64_t limit, int via_size, bool want_features, nu_classifier_outputs *out) {
    memset(out, 0, sizeof *out);
    const nu_classifier_config *c = nu_classifier_get_config(m);
    if (via_size < 0 || via_size > 4096)
        return nu_error(NU_ERR_INVALID_ARG, "%s: intermediate size %d (0 or 1..4096)", path, via_size);
    nu_dataset_params dp = nu_dataset_params_init();
    dp.path = path;
    dp.split = split ? split : "t10k";
    dp.channels = c->in_channels;
    dp.resolution = via_size > 0 ? via_size : c->size;
    /* via: the loader gives [0, 255] floats at via_size, rounded to u8 below */
    dp.range_lo = via_size > 0 ? 0.0f : c->range_lo;
    dp.range_hi = via_size > 0 ? 255.0f : c->range_hi;
    dp.batch_size = 1;
    dp.shuffle = false;
    dp.drop_last = false;
    dp.prefetch = 0;
    dp.limit = limit > 0 ? limit : 0;
    nu_dataset *d;
    nu_status st = nu_dataset_open(&dp, &d);
    if (st != NU_OK) return st;
    /* dataset class k -> classifier class (by name, or by index: idx classes are "0".."9") */
    int nk = nu_dataset_n_classes(d);
    int *map = calloc((size_t)(nk > 0 ? nk : 1), sizeof *map);
    int64_t n = nu_dataset_count(d);
    int64_t per = (int64_t)c->in_channels * c->size * c->size;
    int64_t chunk = n < EVAL_CHUNK ? n : EVAL_CHUNK;
    float *x = malloc(sizeof(float) * (size_t)(chunk * per));
    int64_t vper = via_size > 0 ? (int64_t)c->in_channels * via_size * via_size : 0;
    float *vx = via_size > 0 ? malloc(sizeof(float) * (size_t)vper) : NULL;
    uint8_t *vu = via_size > 0 ? malloc((size_t)vper) : NULL;
    float *logits = malloc(sizeof(float) * (size_t)(chunk * c->num_classes));
    out->pred = malloc(sizeof(int64_t) * (size_t)n);
    out->label = malloc(sizeof(int64_t) * (size_t)n);
    if (want_features) out->features = malloc(sizeof(float) * (size_t)n * (size_t)c->hidden);
    if (!map || !x || !logits || !out->pred || !out->label || (want_features && !out->features) ||
        (via_size > 0 && (!vx || !vu))) {
        st = nu_error(NU_ERR_NOMEM, "%s: out of memory for %lld images", path, (long long)n);
        goto done;
    }
    for (int k = 0; k < nk; k++) {
        const char *name = nu_dataset_class_name(d, k);
        map[k] = nu_classifier_class_index(m, name);
        if (map[k] < 0) {
            st = nu_error(NU_ERR_INVALID_ARG, "%s: class '%s' is none of the classifier's %d classes (%s, %s, ...)",
                          path, name ? name : "?", c->num_classes, nu_classifier_class_name(m, 0),
                          nu_classifier_class_name(m, 1));
            goto done;
        }
    }
    int64_t done_n = 0;
    for (int64_t i0 = 0; i0 < n; i0 += chunk) {
        int64_t b = 0;
        int64_t lab[EVAL_CHUNK];
        for (int64_t i = i0; i < n && i < i0 + chunk; i++) {
            int64_t l;
            st = nu_dataset_sample(d, i, via_size > 0 ? vx : x + b * per, &l, NULL);
            if (st == NU_ERR_FORMAT) { /* an unreadable image of a folder (idx samples are in memory) */
                out->skipped++;        /* skipped; the loader warned through nu_log */
                st = NU_OK;
                continue;
            }
            if (st != NU_OK) goto done;
            if (via_size > 0) { /* planar [C, v, v] floats in [0, 255] -> interleaved u8 -> preprocess */
                const int64_t plane = (int64_t)via_size * via_size;
                for (int ch = 0; ch < c->in_channels; ch++)
                    for (int64_t k = 0; k < plane; k++) {
                        float v = vx[ch * plane + k];
                        vu[k * c->in_channels + ch] = (uint8_t)lrintf(v < 0 ? 0 : v > 255 ? 255 : v);
                    }
                nu_image im = {via_size, via_size, c->in_channels, vu};
                if ((st = nu_classifier_preprocess(m, &im, 0, x + b * per)) != NU_OK) goto done;
            }
            lab[b++] = l >= 0 && l < nk ? map[l] : -1;
        }
        if (b == 0) continue;
        st = nu_classifier_run(m, pool, x, b, logits, want_features ? out->features + done_n * c->hidden : NULL);
        if (st != NU_OK) goto done;
        nu_classifier_argmax(logits, b, c->num_classes, out->pred + done_n);
        memcpy(out->label + done_n, lab, sizeof(int64_t) * (size_t)b);
        done_n += b;
    }
    out->n = done_n;
    if (done_n == 0) st = nu_error(NU_ERR_FORMAT, "%s: none of its %lld images can be read", path, (long long)n);
done:
    free(map);
    free(x);
    free(vx);
    free(vu);
    free(logits);
    nu_dataset_free(d);
    if (st != NU_OK) nu_classifier_outputs_free(out);
    return st;
}

nu_status nu_classifier_frechet(const float *f1, int64_t n1, const float *f2, int64_t n2, int dim, nu_pool *pool,
                                double *out) {
    if (n1 < 2 || n2 < 2)
        return nu_error(NU_ERR_INVALID_ARG, "Fréchet distance needs at least 2 images per set (got %lld and %lld)",
                        (long long)n1, (long long)n2);
    nu_fid_stats a = {0}, b = {0};
    nu_status st = nu_fid_stats_from_features(f1, n1, dim, &a);
    if (st == NU_OK) st = nu_fid_stats_from_features(f2, n2, dim, &b);
    if (st == NU_OK) st = nu_fid_from_stats(&a, &b, pool, out);
    nu_fid_stats_free(&a);
    nu_fid_stats_free(&b);
    return st;
}

/* ---------------------------------------------------------------- training */

nu_classifier_train_params nu_classifier_train_params_init(void) {
    nu_classifier_train_params p;
    memset(&p, 0, sizeof p);
    p.split = "train";
    p.epochs = 3;
    p.batch_size = 128;
    p.lr = 2e-3;
    p.warmup_steps = 100;
    p.weight_decay = 0.01;
    p.dropout = 0.25f;
    return p;
}

nu_status nu_classifier_train(nu_classifier *m, const nu_classifier_train_params *p, nu_classifier_train_result *out) {
    if (out) memset(out, 0, sizeof *out);
    const nu_classifier_config *c = nu_classifier_get_config(m);
    if (p->epochs < 1) return nu_error(NU_ERR_INVALID_ARG, "classifier training: %d epochs (>= 1)", p->epochs);
    if (p->batch_size < 1 || p->batch_size > 4096)
        return nu_error(NU_ERR_INVALID_ARG, "classifier training: batch size %d (1..4096)", p->batch_size);
    if (!(p->dropout >= 0.0f && p->dropout < 1.0f))
        return nu_error(NU_ERR_INVALID_ARG, "classifier training: dropout %g (0 <= p < 1)", (double)p->dropout);
    if (!(p->lr > 0) || !isfinite(p->lr)) return nu_error(NU_ERR_INVALID_ARG, "classifier training: learning rate %g", p->lr);

    nu_dataset_params dp = nu_dataset_params_init();
    dp.path = p->data;
    dp.split = p->split ? p->split : "train";
    dp.channels = c->in_channels;
    dp.resolution = c->size;
    dp.range_lo = c->range_lo, dp.range_hi = c->range_hi;
    dp.random_flip = p->random_flip;
    dp.batch_size = p->batch_size;
    dp.shuffle = true;
    dp.drop_last = true;
    dp.seed = p->seed;
    dp.limit = p->limit;
    nu_dataset *data;
    nu_status st = nu_dataset_open(&dp, &data);
    if (st != NU_OK) return st;
    int nk = nu_dataset_n_classes(data);
    if (nk == 0) {
        nu_dataset_free(data);
        return nu_error(NU_ERR_INVALID_ARG, "%s: the dataset has no labels (an idx labels file, or one subfolder per class)",
                        p->data);
    }
    if (nk > c->num_classes) {
        nu_dataset_free(data);
        return nu_error(NU_ERR_INVALID_ARG, "%s: the dataset has %d classes, the classifier %d", p->data, nk,
                        c->num_classes);
    }

    /* loss graph: x [B, C, S, S], y [B] i64, keep [B, hidden] -> mean cross-entropy [1] */
    const int B = p->batch_size;
    nu_ctx *ctx = nu_ctx_new(NULL);
    if (!ctx) {
        nu_dataset_free(data);
        return nu_error(NU_ERR_NOMEM, "out of memory");
    }
    nu_ctx_set_alloc_data(ctx, false);
    nu_tensor *x = nu_new_tensor_4d(ctx, NU_TYPE_F32, B, c->in_channels, c->size, c->size);
    nu_tensor *y = nu_new_tensor_1d(ctx, NU_TYPE_I64, B);
    nu_tensor *keep = p->dropout > 0 ? nu_new_tensor_2d(ctx, NU_TYPE_F32, B, c->hidden) : NULL;
    nu_set_input(x), nu_set_name(x, "x");
    nu_set_input(y), nu_set_name(y, "y");
    if (keep) nu_set_input(keep), nu_set_name(keep, "keep");
    nu_tensor *logits = nu_classifier_forward(m, ctx, x, keep, NULL);
    nu_tensor *loss = nu_cross_entropy(ctx, logits, y);
    nu_set_name(loss, "loss");
    nu_graph *g = nu_graph_new(ctx);
    nu_graph_expand(g, loss);
    nu_graph_backward(g, loss);

    int64_t bpe = nu_dataset_batches_per_epoch(data);
    nu_train_params tp = nu_train_params_init();
    tp.lr = p->lr;
    tp.weight_decay = p->weight_decay;
    tp.no_decay_1d = true;
    tp.schedule = NU_LR_SCHEDULE_COSINE;
    tp.total_steps = bpe * p->epochs;
    tp.warmup_steps = p->warmup_steps < tp.total_steps ? p->warmup_steps : tp.total_steps / 10;
    tp.seed = p->seed;
    nu_trainer *tr = NULL;
    st = nu_trainer_new(g, loss, p->pool, &tp, &tr);
    if (st == NU_OK) st = nu_graph_alloc(g);

    const float keep_scale = 1.0f / (1.0f - p->dropout);
    double t0 = now_s(), epoch_loss = 0;
    int64_t epoch_steps = 0;
    int cur_epoch = 0;
    while (st == NU_OK && nu_trainer_step_count(tr) < tp.total_steps) {
        const nu_batch *b;
        if ((st = nu_dataset_next(data, &b)) != NU_OK) break;
        memcpy(x->data, b->images, nu_nbytes(x));
        int64_t *yl = y->data;
        for (int i = 0; i < B; i++) {
            if (b->labels[i] < 0 || b->labels[i] >= c->num_classes) {
                st = nu_error(NU_ERR_FORMAT, "%s: sample %lld has label %lld, outside [0, %d)", p->data,
                              (long long)b->indices[i], (long long)b->labels[i], c->num_classes);
                break;
            }
            yl[i] = b->labels[i];
        }
        if (st != NU_OK) break;
        if (keep) { /* inverted dropout mask from the trainer RNG (torch.rand(B, hidden) >= p) */
            float *k = keep->data;
            int64_t nkeep = (int64_t)B * c->hidden;
            nu_rng_rand_f32(nu_trainer_rng(tr), k, nkeep);
            for (int64_t i = 0; i < nkeep; i++) k[i] = k[i] >= p->dropout ? keep_scale : 0.0f;
        }
        float l;
        if ((st = nu_trainer_forward_backward(tr, &l)) != NU_OK) break;
        nu_step_info info;
        if ((st = nu_trainer_step(tr, &info)) != NU_OK) break;
        if ((int)b->epoch != cur_epoch) {
            cur_epoch = (int)b->epoch;
            epoch_loss = 0, epoch_steps = 0;
        }
        epoch_loss += l, epoch_steps++;
        if (out) {
            out->steps = info.step;
            out->images = info.step * B;
            out->final_loss = (float)(epoch_loss / (double)epoch_steps);
        }
        if (p->progress) {
            nu_classifier_progress pr = {.step = info.step, .total_steps = tp.total_steps, .epoch = cur_epoch,
                                         .loss = l, .lr = info.lr};
            pr.elapsed_s = now_s() - t0;
            pr.images_per_s = pr.elapsed_s > 0 ? (double)info.step * B / pr.elapsed_s : 0;
            if (!p->progress(&pr, p->user)) {
                if (out) out->stopped = true;
                break;
            }
        }
    }
    if (out) out->seconds = now_s() - t0;
    nu_trainer_free(tr); /* copies the trained values back into the model's tensors */
    nu_graph_free(g);
    nu_ctx_free(ctx);
    nu_dataset_free(data);
    return st;
}
