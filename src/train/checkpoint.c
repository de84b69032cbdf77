/*
 * checkpoint.c — training checkpoints (safetensors) that resume exactly, and the SIGINT/SIGTERM
 * stop request.
 *
 * Layout (see include/nuance/train.h): weights under their own names, "ema.<name>",
 * "adam.m.<name>", "adam.v.<name>" (trainable tensors only), "train.rng" (u8 [5056], the trainer
 * RNG as torch.get_rng_state()); metadata "format", "format_version", "step", "config",
 * "train_params", and "data.position" / "data.samples" / "data.seed" when a dataset is given.
 * Tensors are written straight from the flat buffers (headers over them, no copy) through
 * nu_st_save, which is atomic (temp file, fsync, rename). Loading validates the whole file
 * against the model first (names, shapes, dtypes, metadata) and only then copies, so a bad file
 * changes nothing.
 *
 * Tested by tests/test_train.c (straight run vs checkpoint + fresh state + resume: bitwise equal
 * losses; a failing write keeps the old file; truncated / other-model / non-checkpoint files give
 * named errors and leave the trainer untouched; signal flag).
 */
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nuance/io.h"
#include "train/train_internal.h"

#define CKPT_FORMAT "nuance.train.checkpoint"
#define CKPT_VERSION "1"

static const char *const PREFIX_EMA = "ema.";
static const char *const PREFIX_M = "adam.m.";
static const char *const PREFIX_V = "adam.v.";
static const char *const RNG_NAME = "train.rng";

/* ---------------------------------------------------------------- save */

static nu_tensor *header(nu_ctx *ctx, const nu_tensor *like, float *data, const char *prefix) {
    nu_tensor *h = nu_new_tensor_ext(ctx, NU_TYPE_F32, like->ndim, like->ne, data);
    if (h) nu_set_name(h, "%s%s", prefix, like->name);
    return h;
}

static void json_double(char *buf, size_t n, const char *key, double v, bool comma) {
    snprintf(buf, n, "%s\"%s\":%.17g", comma ? "," : "", key, v);
}

/* Hyper-parameters as JSON, for the record (resume uses the caller's own parameters). */
static char *train_params_json(const nu_train_params *p) {
    size_t cap = 2048;
    char *s = malloc(cap), item[160];
    if (!s) return NULL;
    snprintf(s, cap, "{");
    const struct { const char *k; double v; } f[] = {
        {"lr", p->lr}, {"beta1", p->beta1}, {"beta2", p->beta2}, {"eps", p->eps}, {"weight_decay", p->weight_decay},
        {"no_decay_1d", p->no_decay_1d}, {"schedule", p->schedule}, {"warmup_steps", (double)p->warmup_steps},
        {"total_steps", (double)p->total_steps}, {"min_lr_ratio", p->min_lr_ratio}, {"clip_norm", p->clip_norm},
        {"accum_steps", p->accum_steps}, {"ema", p->ema}, {"ema_decay", p->ema_decay},
        {"ema_min_decay", p->ema_min_decay}, {"ema_update_after_step", (double)p->ema_update_after_step},
        {"ema_warmup", p->ema_warmup}, {"ema_inv_gamma", p->ema_inv_gamma}, {"ema_power", p->ema_power},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        json_double(item, sizeof item, f[i].k, f[i].v, i > 0);
        strncat(s, item, cap - strlen(s) - 1);
    }
    snprintf(item, sizeof item, ",\"seed\":%" PRIu64 "}", p->seed); /* all 64 bits, not via a double */
    strncat(s, item, cap - strlen(s) - 1);
    return s;
}

nu_status nu_trainer_save(nu_trainer *t, const char *path, const char *config_json, const nu_dataset *data) {
    if (!t || !path || !*path) return nu_error(NU_ERR_INVALID_ARG, "nu_trainer_save: NULL trainer or empty path");
    if (t->micro != 0)
        return nu_error(NU_ERR_INVALID_ARG, "%s: cannot save in the middle of a step (%d of %d micro-batches summed)",
                        path, t->micro, t->p.accum_steps);
    nu_params *P = t->params;
    int n = nu_params_n_tensors(P), nt = nu_params_n_trainable_tensors(P);
    for (int i = 0; i < n; i++)
        if (strlen(nu_params_tensor(P, i)->name) + strlen(PREFIX_M) >= NU_MAX_NAME)
            return nu_error(NU_ERR_INVALID_ARG, "%s: parameter name '%s' is too long for a checkpoint (max %d)", path,
                            nu_params_tensor(P, i)->name, NU_MAX_NAME - 1 - (int)strlen(PREFIX_M));
    nu_ctx_params cp = nu_ctx_params_init();
    cp.alloc_data = false;
    nu_ctx *ctx = nu_ctx_new(&cp);
    int cap = n * 2 + nt * 2 + 1, k = 0;
    nu_tensor **list = malloc(sizeof *list * (size_t)cap);
    char *tp_json = train_params_json(&t->p);
    if (!ctx || !list || !tp_json) {
        nu_ctx_free(ctx);
        free(list);
        free(tp_json);
        return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    }
    float *val = nu_params_values(P);
    for (int i = 0; i < n; i++) {
        nu_tensor *pt = nu_params_tensor(P, i);
        int64_t o = nu_params_offset(P, i);
        list[k++] = header(ctx, pt, val + o, "");
        if (t->ema) list[k++] = header(ctx, pt, t->ema + o, PREFIX_EMA);
        if (i < nt) {
            list[k++] = header(ctx, pt, t->m + o, PREFIX_M);
            list[k++] = header(ctx, pt, t->v + o, PREFIX_V);
        }
    }
    uint8_t rng_blob[NU_RNG_STATE_BYTES];
    nu_rng_state_save(&t->rng, rng_blob);
    nu_tensor *rt = nu_new_tensor_ext(ctx, NU_TYPE_U8, 1, (int64_t[]){NU_RNG_STATE_BYTES}, rng_blob);
    nu_set_name(rt, "%s", RNG_NAME);
    list[k++] = rt;

    char step_s[32], pos_s[32], cnt_s[32], seed_s[32];
    snprintf(step_s, sizeof step_s, "%" PRId64, t->step);
    const char *keys[10], *vals[10];
    int nm = 0;
    keys[nm] = "format", vals[nm++] = CKPT_FORMAT;
    keys[nm] = "format_version", vals[nm++] = CKPT_VERSION;
    keys[nm] = "step", vals[nm++] = step_s;
    keys[nm] = "train_params", vals[nm++] = tp_json;
    keys[nm] = "config", vals[nm++] = config_json ? config_json : "{}";
    if (data) {
        snprintf(pos_s, sizeof pos_s, "%" PRId64, nu_dataset_position(data));
        snprintf(cnt_s, sizeof cnt_s, "%" PRId64, nu_dataset_count(data));
        snprintf(seed_s, sizeof seed_s, "%" PRIu64, nu_dataset_seed(data));
        keys[nm] = "data.position", vals[nm++] = pos_s;
        keys[nm] = "data.samples", vals[nm++] = cnt_s;
        keys[nm] = "data.seed", vals[nm++] = seed_s;
    }
    nu_status st = nu_st_save(path, list, k, keys, vals, nm);
    nu_ctx_free(ctx);
    free(list);
    free(tp_json);
    return st;
}

/* ---------------------------------------------------------------- load */

static bool parse_i64(const char *s, int64_t *out) {
    if (!s || !*s) return false;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end) return false;
    *out = v;
    return true;
}

/* The tensor `prefix+name` of f, checked to be f32 with pt's shape; NULL with an error set. */
static const nu_st_info *find_like(nu_st_file *f, const char *path, const nu_tensor *pt, const char *prefix,
                                   nu_status *st) {
    char key[NU_MAX_NAME + 16];
    snprintf(key, sizeof key, "%s%s", prefix, pt->name);
    const nu_st_info *in = nu_st_find(f, key);
    char a[128];
    if (!in) {
        *st = nu_error(NU_ERR_FORMAT, "%s: checkpoint has no tensor '%s' (is it from another model?)", path, key);
        return NULL;
    }
    bool same = in->ndim == pt->ndim;
    for (int d = 0; same && d < pt->ndim; d++) same = in->ne[d] == pt->ne[d];
    if (!same) {
        char b[128] = "[";
        for (int d = 0; d < in->ndim; d++) {
            size_t l = strlen(b);
            snprintf(b + l, sizeof b - l, d ? ", %lld" : "%lld", (long long)in->ne[d]);
        }
        strncat(b, "]", sizeof b - strlen(b) - 1);
        *st = nu_error(NU_ERR_FORMAT, "%s: tensor '%s' is %s in the checkpoint but %s in the model (another model?)",
                       path, key, b, nu_shape_str(pt, a, sizeof a));
        return NULL;
    }
    if (in->type != NU_TYPE_F32) {
        *st = nu_error(NU_ERR_FORMAT, "%s: tensor '%s' is %s; a training checkpoint holds f32", path, key,
                       nu_type_name(in->type));
        return NULL;
    }
    return in;
}

static bool has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

nu_status nu_trainer_load(nu_trainer *t, const char *path, nu_dataset *data, char **config_json) {
    if (config_json) *config_json = NULL;
    if (!t || !path) return nu_error(NU_ERR_INVALID_ARG, "nu_trainer_load: NULL argument");
    nu_st_file *f;
    nu_status st = nu_st_open(path, &f);
    if (st != NU_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nu_last_error());
        return nu_error(st, "cannot resume from checkpoint: %s", msg);
    }
    nu_params *P = t->params;
    int n = nu_params_n_tensors(P), nt = nu_params_n_trainable_tensors(P);
    const char *fmt = nu_st_metadata(f, "format");
    int64_t step = 0, pos = -1, samples = -1;
    const nu_st_info **in = calloc((size_t)n * 4 + 1, sizeof *in); /* per tensor: w, ema, m, v */
    if (!in) {
        nu_st_close(f);
        return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    }
    const nu_st_info *rng = NULL;
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0) {
        st = nu_error(NU_ERR_FORMAT, "%s: not a nuance training checkpoint (metadata format is '%s'); to start from "
                      "its weights use nu_trainer_load_weights", path, fmt ? fmt : "absent");
        goto done;
    }
    const char *ver = nu_st_metadata(f, "format_version");
    if (!ver || strcmp(ver, CKPT_VERSION) != 0) {
        st = nu_error(NU_ERR_UNSUPPORTED, "%s: checkpoint format version '%s' (this build reads %s)", path,
                      ver ? ver : "absent", CKPT_VERSION);
        goto done;
    }
    if (!parse_i64(nu_st_metadata(f, "step"), &step) || step < 0) {
        st = nu_error(NU_ERR_FORMAT, "%s: checkpoint has no valid 'step' metadata", path);
        goto done;
    }
    bool file_has_ema = false;
    for (int i = 0; i < n && st == NU_OK; i++) {
        nu_tensor *pt = nu_params_tensor(P, i);
        if (!(in[4 * i] = find_like(f, path, pt, "", &st))) break;
        char key[NU_MAX_NAME + 16];
        snprintf(key, sizeof key, "%s%s", PREFIX_EMA, pt->name);
        if (nu_st_find(f, key)) {
            file_has_ema = true;
            if (!(in[4 * i + 1] = find_like(f, path, pt, PREFIX_EMA, &st))) break;
        } else if (file_has_ema) {
            st = nu_error(NU_ERR_FORMAT, "%s: checkpoint has no tensor '%s'", path, key);
            break;
        }
        if (i < nt) {
            if (!(in[4 * i + 2] = find_like(f, path, pt, PREFIX_M, &st))) break;
            if (!(in[4 * i + 3] = find_like(f, path, pt, PREFIX_V, &st))) break;
        }
    }
    if (st != NU_OK) goto done;
    /* every tensor of the file must belong to the model: another model with more layers fails */
    for (int i = 0; i < nu_st_count(f); i++) {
        const char *name = nu_st_at(f, i)->name, *base = name;
        if (strcmp(name, RNG_NAME) == 0) continue;
        if (has_prefix(name, PREFIX_EMA)) base = name + strlen(PREFIX_EMA);
        else if (has_prefix(name, PREFIX_M)) base = name + strlen(PREFIX_M);
        else if (has_prefix(name, PREFIX_V)) base = name + strlen(PREFIX_V);
        if (nu_params_find(P, base) < 0 && nu_params_find(P, name) < 0) {
            st = nu_error(NU_ERR_FORMAT, "%s: checkpoint tensor '%s' is not a parameter of this model (another model?)",
                          path, name);
            goto done;
        }
    }
    rng = nu_st_find(f, RNG_NAME);
    if (!rng || rng->type != NU_TYPE_U8) {
        st = nu_error(NU_ERR_FORMAT, "%s: checkpoint has no u8 tensor '%s' (RNG state)", path, RNG_NAME);
        goto done;
    }
    nu_rng rng_new;
    if (nu_rng_state_restore(&rng_new, rng->data, rng->nbytes) != NU_OK) {
        st = nu_error(NU_ERR_FORMAT, "%s: invalid RNG state in '%s'", path, RNG_NAME);
        goto done;
    }
    if (data) {
        if (!parse_i64(nu_st_metadata(f, "data.position"), &pos) || pos < 0) {
            st = nu_error(NU_ERR_FORMAT, "%s: checkpoint has no data position (saved without a dataset)", path);
            goto done;
        }
        if (parse_i64(nu_st_metadata(f, "data.samples"), &samples) && samples != nu_dataset_count(data))
            nu_log(NU_LOG_WARN, "%s: the dataset had %lld samples when saved, %lld now: batches will differ from the "
                   "original run", path, (long long)samples, (long long)nu_dataset_count(data));
        const char *ds = nu_st_metadata(f, "data.seed");
        char now[32];
        snprintf(now, sizeof now, "%" PRIu64, nu_dataset_seed(data));
        if (ds && strcmp(ds, now) != 0)
            nu_log(NU_LOG_WARN, "%s: the dataset seed was %s when saved, %s now", path, ds, now);
    }
    if (config_json) {
        const char *c = nu_st_metadata(f, "config");
        *config_json = strdup(c ? c : "{}");
        if (!*config_json) {
            st = nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
    }
    if (data) {
        st = nu_dataset_seek(data, pos);
        if (st != NU_OK) goto done;
    }

    /* everything checked: copy */
    {
        float *val = nu_params_values(P);
        for (int i = 0; i < n; i++) {
            int64_t o = nu_params_offset(P, i);
            size_t nb = in[4 * i]->nbytes;
            memcpy(val + o, in[4 * i]->data, nb);
            if (t->ema) memcpy(t->ema + o, in[4 * i + 1] ? in[4 * i + 1]->data : in[4 * i]->data, nb);
            if (i < nt) {
                memcpy(t->m + o, in[4 * i + 2]->data, nb);
                memcpy(t->v + o, in[4 * i + 3]->data, nb);
            }
        }
        if (t->ema && !file_has_ema)
            nu_log(NU_LOG_WARN, "%s: checkpoint has no EMA weights; the EMA restarts from the weights", path);
        t->rng = rng_new;
        t->step = step;
        nu_trainer_zero_grad(t);
    }
done:
    if (st != NU_OK && config_json && *config_json) {
        free(*config_json);
        *config_json = NULL;
    }
    free(in);
    nu_st_close(f);
    return st;
}

nu_status nu_trainer_load_weights(nu_trainer *t, const char *path, bool use_ema) {
    if (!t || !path) return nu_error(NU_ERR_INVALID_ARG, "nu_trainer_load_weights: NULL argument");
    nu_st_file *f;
    nu_status st = nu_st_open(path, &f);
    if (st != NU_OK) return st;
    nu_params *P = t->params;
    int n = nu_params_n_tensors(P);
    const char *prefix = use_ema ? PREFIX_EMA : "";
    char key[NU_MAX_NAME + 16], a[128];
    /* check all first */
    for (int i = 0; i < n && st == NU_OK; i++) {
        nu_tensor *pt = nu_params_tensor(P, i);
        snprintf(key, sizeof key, "%s%s", prefix, pt->name);
        const nu_st_info *in = nu_st_find(f, key);
        if (!in) {
            st = nu_error(NU_ERR_NOT_FOUND, "%s: no tensor '%s' for parameter '%s'", path, key, pt->name);
            break;
        }
        bool same = in->ndim == pt->ndim;
        for (int d = 0; same && d < pt->ndim; d++) same = in->ne[d] == pt->ne[d];
        if (!same || !nu_type_info(in->type)->is_float)
            st = nu_error(NU_ERR_FORMAT, "%s: tensor '%s' (%s, %d dims) does not fit parameter %s", path, key,
                          nu_type_name(in->type), in->ndim, nu_shape_str(pt, a, sizeof a));
    }
    if (st == NU_OK) {
        nu_ctx *ctx = nu_ctx_new(NULL);
        float *val = nu_params_values(P);
        for (int i = 0; i < n && st == NU_OK; i++) {
            nu_tensor *pt = nu_params_tensor(P, i), *src;
            snprintf(key, sizeof key, "%s%s", prefix, pt->name);
            st = nu_st_get_f32(f, ctx, key, &src);
            if (st == NU_OK) memcpy(val + nu_params_offset(P, i), src->data, nu_nbytes(pt));
        }
        nu_ctx_free(ctx);
        if (st == NU_OK && t->ema) memcpy(t->ema, val, sizeof(float) * (size_t)nu_params_size(P));
    }
    nu_st_close(f);
    return st;
}

nu_status nu_checkpoint_metadata(const char *path, const char *key, char **value) {
    if (!value) return nu_error(NU_ERR_INVALID_ARG, "nu_checkpoint_metadata: NULL value");
    *value = NULL;
    if (!path || !key) return nu_error(NU_ERR_INVALID_ARG, "nu_checkpoint_metadata: NULL argument");
    nu_st_file *f;
    nu_status st = nu_st_open(path, &f);
    if (st != NU_OK) return st;
    const char *v = nu_st_metadata(f, key);
    if (!v) st = nu_error(NU_ERR_NOT_FOUND, "%s: no metadata '%s'", path, key);
    else if (!(*value = strdup(v))) st = nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    nu_st_close(f);
    return st;
}

/* ---------------------------------------------------------------- signals */

static volatile sig_atomic_t stop_flag;
static struct sigaction old_int, old_term;
static bool installed;

static void on_signal(int sig) {
    if (stop_flag) {
        /* second signal: the user insists; end as the default action would */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_flag = 1;
}

void nu_train_signals_install(void) {
    if (installed) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* reads and writes in progress continue; the loop polls the flag */
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    installed = true;
}

void nu_train_signals_restore(void) {
    if (!installed) return;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    installed = false;
}

bool nu_train_stop_requested(void) { return stop_flag != 0; }
void nu_train_request_stop(void) { stop_flag = 1; }
void nu_train_clear_stop(void) { stop_flag = 0; }
