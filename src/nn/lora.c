/*
 * lora.c — LoRA / LoCon sets: loading and validating LoRA files against the base models, the
 * run-time branch y += scale * up(down(x)) added by the graph builders, prompt tags
 * (<lora:NAME:WEIGHT>) and --lora arguments (see lora.h; key dialects in lora_names.c).
 *
 * Why a run-time branch and not a merged weight: the base may be quantized (q8_0, q4_0), and a
 * merge would need an f32 copy of each touched matrix; the branch costs two thin GEMMs (rank r,
 * usually 4..128) per layer and leaves the mmapped base untouched. Formula: kohya-ss
 * networks/lora.py LoRAModule.forward, org_forward(x) + lora_up(lora_down(x)) * multiplier * scale
 * with scale = alpha / lora_dim (alpha defaults to the rank); PEFT LoraLayer scaling
 * lora_alpha / r (its files carry no alpha: the rank, i.e. scale = weight).
 * Tested by tests/test_lora.c against merged weights W + scale * up @ down computed in PyTorch.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/internal.h"
#include "nn/lora.h"

#define MAX_TARGETS 4

typedef struct target {
    nu_lora_part part;
    char model[32]; /* nu_nn.model label of its builders */
    nu_weights *w;
    nu_lora_index *ix;
} target;

/* One LoRA pair on one base layer. */
typedef struct mod {
    int target;
    char *name;                     /* canonical weight name                               */
    nu_tensor *lin_down, *lin_up;   /* [r, in], [out, r]; NULL for a conv with a kernel > 1 */
    nu_tensor *conv_down, *conv_up; /* [r, in, kh, kw], [out, r, 1, 1]; NULL for a Linear  */
    float scale;                    /* weight * alpha / rank                               */
    int next;                       /* next pair on the same layer (file order), -1        */
} mod;

struct nu_lora_set {
    target t[MAX_TARGETS];
    int n_targets;
    nu_weights **files; /* each LoRA file, mapped while the set lives */
    int n_files;
    mod *m;
    int n, cap;
    nu_lora_map layers; /* "<target>|<canonical name>" -> first pair */
    nu_ctx *ctx;        /* tensor headers over the files' data       */
};

nu_lora_set *nu_lora_set_new(void) {
    nu_lora_set *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->ctx = nu_ctx_new(NULL);
    if (!s->ctx) {
        free(s);
        return NULL;
    }
    return s;
}

void nu_lora_set_free(nu_lora_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n_targets; i++) nu_lora_index_free(s->t[i].ix);
    for (int i = 0; i < s->n_files; i++) nu_weights_free(s->files[i]);
    for (int i = 0; i < s->n; i++) free(s->m[i].name);
    free(s->files);
    free(s->m);
    nu_lora_map_free(&s->layers);
    nu_ctx_free(s->ctx);
    free(s);
}

nu_status nu_lora_set_add_target(nu_lora_set *s, nu_lora_part part, const char *model, nu_weights *w) {
    if (s->n_files) return nu_error(NU_ERR_INVALID_ARG, "lora: targets must be added before the first LoRA file");
    if (s->n_targets == MAX_TARGETS || part < 0 || part >= NU_LORA_PART_COUNT || strlen(model) >= sizeof s->t[0].model)
        return nu_error(NU_ERR_INVALID_ARG, "lora: cannot add target '%s'", model);
    int n = nu_weights_count(w);
    const char **names = malloc(sizeof(char *) * (size_t)(n ? n : 1));
    if (!names) return nu_error(NU_ERR_NOMEM, "lora: out of memory");
    for (int i = 0; i < n; i++) names[i] = nu_weights_name_at(w, i);
    nu_lora_index *ix = nu_lora_index_new(part, names, n);
    free(names);
    if (!ix) return nu_error(NU_ERR_NOMEM, "lora: out of memory");
    target *t = &s->t[s->n_targets++];
    t->part = part;
    snprintf(t->model, sizeof t->model, "%s", model);
    t->w = w;
    t->ix = ix;
    return NU_OK;
}

int nu_lora_set_count(const nu_lora_set *s, const char *model) {
    int c = 0;
    for (int i = 0; i < s->n; i++) c += !model || strcmp(s->t[s->m[i].target].model, model) == 0;
    return c;
}

/* ---------------------------------------------------------------- loading */

/* The tensors of one layer in a file, by key index (-1: absent). */
typedef struct group {
    int down, up, alpha;
} group;

/* A validated pair, committed once the whole file checked out. */
typedef struct pending {
    int target;
    const char *name; /* in the target's index */
    nu_tensor *down, *up, *base;
    int bndim;     /* the base layer's shape as the model sees it (a conv weight converted */
    int64_t bne[4]; /* to matrix form is still [out, in, kh, kw]; nu_weights_logical_shape) */
    float scale;
} pending;

static bool float_type(nu_type t) { return t == NU_TYPE_F32 || t == NU_TYPE_F16 || t == NU_TYPE_BF16; }

static void shape_of(const nu_tensor *t, char *buf, size_t len) { nu_shape_str(t, buf, len); }

/* Checks down/up against the base layer: base [out, in] takes down [r, in] or [r, in, 1, 1];
 * base [out, in, kh, kw] takes down [r, in, kh, kw] (or [r, in] when kh = kw = 1); up is
 * [out, r] or [out, r, 1, 1]. */
static bool shapes_fit(int bndim, const int64_t *bne, const nu_tensor *d, const nu_tensor *u) {
    if (bndim != 2 && bndim != 4) return false;
    int64_t out = bne[0], in = bne[1];
    bool k1 = bndim == 2 || (bne[2] == 1 && bne[3] == 1);
    int64_t r = d->ne[0];
    if (r < 1 || d->ne[1] != in) return false;
    if (d->ndim == 2) {
        if (!k1) return false;
    } else if (d->ndim == 4) {
        int64_t kh = bndim == 4 ? bne[2] : 1, kw = bndim == 4 ? bne[3] : 1;
        if (d->ne[2] != kh || d->ne[3] != kw) return false;
    } else {
        return false;
    }
    if (u->ndim != 2 && !(u->ndim == 4 && u->ne[2] == 1 && u->ne[3] == 1)) return false;
    return u->ne[0] == out && u->ne[1] == r;
}

/* Reads a scalar alpha (any float type, 1 element) into *v; 0 leaves *v (the rank), as kohya's
 * LoRAModule does for alpha 0 or None. */
static bool read_alpha(const nu_tensor *t, float *v) {
    if (!t || !nu_type_info(t->type)->is_float || t->type == NU_TYPE_F64 || nu_nelements(t) != 1) return false;
    float a;
    nu_row_to_f32(t->type, t->data, &a, 1);
    if (!isfinite(a) || a < 0) return false;
    if (a > 0) *v = a;
    return true;
}

static void layer_key(char *buf, size_t len, int ti, const char *name) { snprintf(buf, len, "%d|%s", ti, name); }

/* Adds the validated pairs of a file: headers over the file's data, linked per layer. */
static nu_status commit(nu_lora_set *s, nu_weights *lw, pending *p, int np) {
    nu_weights **nf = realloc(s->files, sizeof(nu_weights *) * (size_t)(s->n_files + 1));
    if (!nf) return nu_error(NU_ERR_NOMEM, "lora: out of memory");
    s->files = nf;
    if (s->n + np > s->cap) {
        int cap = s->cap ? s->cap : 64;
        while (cap < s->n + np) cap *= 2;
        mod *nm = realloc(s->m, sizeof(mod) * (size_t)cap);
        if (!nm) return nu_error(NU_ERR_NOMEM, "lora: out of memory");
        s->m = nm;
        s->cap = cap;
    }
    s->files[s->n_files++] = lw;
    char key[NU_LORA_MAX_KEY + 16];
    for (int i = 0; i < np; i++) {
        const pending *q = &p[i];
        int64_t out = q->bne[0], in = q->bne[1], r = q->down->ne[0];
        int64_t kh = q->bndim == 4 ? q->bne[2] : 1, kw = q->bndim == 4 ? q->bne[3] : 1;
        mod m = {q->target, strdup(q->name), NULL, NULL, NULL, NULL, q->scale, -1};
        if (!m.name) return nu_error(NU_ERR_NOMEM, "lora: out of memory");
        if (kh == 1 && kw == 1) {
            m.lin_down = nu_new_tensor_ext(s->ctx, q->down->type, 2, (int64_t[]){r, in}, q->down->data);
            m.lin_up = nu_new_tensor_ext(s->ctx, q->up->type, 2, (int64_t[]){out, r}, q->up->data);
        }
        if (q->bndim == 4) {
            m.conv_down = nu_new_tensor_ext(s->ctx, q->down->type, 4, (int64_t[]){r, in, kh, kw}, q->down->data);
            m.conv_up = nu_new_tensor_ext(s->ctx, q->up->type, 4, (int64_t[]){out, r, 1, 1}, q->up->data);
        }
        nu_tensor *hs[4] = {m.lin_down, m.lin_up, m.conv_down, m.conv_up};
        for (int h = 0; h < 4; h++)
            if (hs[h]) nu_set_name(hs[h], "lora%d.%s.%s", s->n_files - 1, h % 2 ? "up" : "down", q->name);
        int id = s->n++;
        s->m[id] = m;
        layer_key(key, sizeof key, q->target, q->name);
        int first = nu_lora_map_get(&s->layers, key);
        if (first < 0) {
            if (!nu_lora_map_put(&s->layers, key, id)) return nu_error(NU_ERR_NOMEM, "lora: out of memory");
        } else {
            while (s->m[first].next >= 0) first = s->m[first].next;
            s->m[first].next = id;
        }
    }
    return NU_OK;
}

/* Validates one layer (its down/up/alpha keys) against the targets; *p filled when it applies.
 * Returns NU_OK with p->name NULL for a layer of no target. */
static nu_status check_layer(nu_lora_set *s, nu_weights *lw, const char *path, const group *g, float uw, float tw,
                             pending *p, bool *part_missing) {
    const char *dkey = nu_weights_name_at(lw, g->down), *ukey = nu_weights_name_at(lw, g->up);
    nu_lora_key k;
    nu_lora_key_parse(dkey, &k);
    memset(p, 0, sizeof *p);
    *part_missing = k.part != NU_LORA_PART_COUNT;
    for (int i = 0; i < s->n_targets && !p->name; i++) {
        if (k.part != NU_LORA_PART_COUNT && s->t[i].part != k.part) continue;
        *part_missing = false;
        p->name = nu_lora_index_resolve(s->t[i].ix, &k);
        p->target = i;
    }
    if (!p->name) return NU_OK;
    target *t = &s->t[p->target];
    p->base = nu_weights_get(t->w, p->name);
    p->down = nu_weights_get(lw, dkey);
    p->up = nu_weights_get(lw, ukey);
    if (!p->base) return nu_error(NU_ERR_FORMAT, "lora: %s: %s: cannot read the base tensor %s", path, dkey, p->name);
    int64_t bne[NU_MAX_DIMS] = {0};
    p->bndim = nu_weights_logical_shape(t->w, p->name, bne);
    memcpy(p->bne, bne, sizeof p->bne);
    if (!p->down || !p->up) return nu_error(NU_ERR_FORMAT, "lora: %s: cannot read %s", path, p->down ? ukey : dkey);
    if (!float_type(p->down->type) || !float_type(p->up->type))
        return nu_error(NU_ERR_UNSUPPORTED, "lora: %s: %s is %s, %s is %s (f32, f16 or bf16 expected)", path, dkey,
                        nu_type_name(p->down->type), ukey, nu_type_name(p->up->type));
    if (!nu_is_contiguous(p->down) || !nu_is_contiguous(p->up))
        return nu_error(NU_ERR_FORMAT, "lora: %s: %s is not contiguous", path, dkey);
    if (!shapes_fit(p->bndim, p->bne, p->down, p->up)) {
        char ds[96], us[96], bs[96];
        shape_of(p->down, ds, sizeof ds);
        shape_of(p->up, us, sizeof us);
        shape_of(p->base, bs, sizeof bs);
        return nu_error(NU_ERR_FORMAT, "lora: %s: %s %s and %s %s do not fit %s layer %s %s", path, dkey, ds, ukey, us,
                        t->model, p->name, bs);
    }
    float rank = (float)p->down->ne[0], alpha = rank;
    if (g->alpha >= 0 && !read_alpha(nu_weights_get(lw, nu_weights_name_at(lw, g->alpha)), &alpha))
        return nu_error(NU_ERR_FORMAT, "lora: %s: %s is not a finite scalar >= 0", path,
                        nu_weights_name_at(lw, g->alpha));
    float weight = t->part == NU_LORA_PART_UNET ? uw : tw;
    p->scale = weight * alpha / rank;
    return NU_OK;
}

nu_status nu_lora_set_load(nu_lora_set *s, const char *path, float unet_weight, float te_weight) {
    if (!isfinite(unet_weight) || !isfinite(te_weight))
        return nu_error(NU_ERR_INVALID_ARG, "lora: %s: weight must be a finite number", path);
    nu_weights *lw = nu_weights_new();
    if (!lw) return nu_error(NU_ERR_NOMEM, "lora: out of memory");
    nu_status st = nu_weights_add_file(lw, path, NULL);
    if (st != NU_OK) {
        nu_weights_free(lw);
        return st;
    }
    int nk = nu_weights_count(lw);
    nu_lora_map modules = {0};
    group *g = malloc(sizeof(group) * (size_t)(nk ? nk : 1));
    pending *p = malloc(sizeof(pending) * (size_t)(nk ? nk : 1));
    nu_lora_map seen = {0}; /* layers of this file, to catch one defined twice */
    int ng = 0, np = 0, n_unknown = 0, n_unsupported = 0, n_unmatched = 0, n_no_target = 0;
    const char *first_unknown = NULL, *first_unsupported = NULL, *first_unmatched = NULL;
    if (!g || !p) {
        st = nu_error(NU_ERR_NOMEM, "lora: out of memory");
        goto done;
    }
    /* group the tensors by layer */
    for (int i = 0; i < nk && st == NU_OK; i++) {
        const char *key = nu_weights_name_at(lw, i);
        nu_lora_key k;
        nu_lora_key_parse(key, &k);
        if (k.role == NU_LORA_ROLE_UNKNOWN) {
            if (!n_unknown++) first_unknown = key;
            continue;
        }
        if (k.role == NU_LORA_ROLE_UNSUPPORTED) {
            if (!n_unsupported++) first_unsupported = key;
            continue;
        }
        int gi = nu_lora_map_get(&modules, k.module);
        if (gi < 0) {
            gi = ng++;
            g[gi] = (group){-1, -1, -1};
            if (!nu_lora_map_put(&modules, k.module, gi)) st = nu_error(NU_ERR_NOMEM, "lora: out of memory");
        }
        int *slot = k.role == NU_LORA_ROLE_DOWN ? &g[gi].down : k.role == NU_LORA_ROLE_UP ? &g[gi].up : &g[gi].alpha;
        *slot = i;
    }
    for (int i = 0; i < ng && st == NU_OK; i++) {
        if (g[i].down < 0 && g[i].up < 0) continue; /* an alpha of a LyCORIS layer, or a stray one */
        if (g[i].down < 0 || g[i].up < 0) {
            const char *have = nu_weights_name_at(lw, g[i].down >= 0 ? g[i].down : g[i].up);
            st = nu_error(NU_ERR_FORMAT, "lora: %s: %s has no matching %s", path, have,
                          g[i].down >= 0 ? "lora_up (B)" : "lora_down (A)");
            break;
        }
        bool part_missing;
        st = check_layer(s, lw, path, &g[i], unet_weight, te_weight, &p[np], &part_missing);
        if (st != NU_OK) break;
        if (!p[np].name) {
            if (part_missing) {
                n_no_target++;
            } else if (!n_unmatched++) {
                first_unmatched = nu_weights_name_at(lw, g[i].down);
            }
            continue;
        }
        char key[NU_LORA_MAX_KEY + 16];
        layer_key(key, sizeof key, p[np].target, p[np].name);
        int prev = nu_lora_map_get(&seen, key);
        if (prev >= 0) {
            st = nu_error(NU_ERR_FORMAT, "lora: %s: layer %s is defined twice (%s and %s)", path, p[np].name,
                          nu_weights_name_at(lw, prev), nu_weights_name_at(lw, g[i].down));
            break;
        }
        if (!nu_lora_map_put(&seen, key, g[i].down)) st = nu_error(NU_ERR_NOMEM, "lora: out of memory");
        np++;
    }
    if (st == NU_OK && np == 0 && n_no_target == 0)
        st = nu_error(NU_ERR_NOT_FOUND,
                      "lora: %s: none of its %d layers matches a layer of the model (first: %s); a LoRA for "
                      "another model family?",
                      path, ng, first_unmatched ? first_unmatched : first_unknown ? first_unknown : "none");
    if (st == NU_OK) {
        /* messages before commit: the names live in lw, which commit hands to the set */
        if (n_unmatched)
            nu_log(NU_LOG_WARN, "lora: %s: %d of %d layers match no layer of the model and are ignored (first: %s)",
                   path, n_unmatched, ng, first_unmatched);
        if (n_unknown)
            nu_log(NU_LOG_WARN, "lora: %s: %d tensors are not LoRA tensors and are ignored (first: %s)", path,
                   n_unknown, first_unknown);
        if (n_unsupported)
            nu_log(NU_LOG_WARN, "lora: %s: %d LyCORIS/DoRA tensors (LoHa, LoKr, Tucker, DoRA, diff) are not "
                   "supported and are ignored (first: %s)", path, n_unsupported, first_unsupported);
        if (n_no_target)
            nu_log(NU_LOG_INFO, "lora: %s: %d layers belong to a model that is not loaded (a text encoder?)", path,
                   n_no_target);
        nu_log(NU_LOG_INFO, "lora: %s: %d layers (unet weight %g, text encoder weight %g)", path, np, unet_weight,
               te_weight);
        st = commit(s, lw, p, np);
        if (st == NU_OK) lw = NULL; /* owned by the set */
    }
done:
    nu_lora_map_free(&modules);
    nu_lora_map_free(&seen);
    free(g);
    free(p);
    nu_weights_free(lw);
    return st;
}

/* ---------------------------------------------------------------- the graph hooks */

static int first_pair(const nu_lora_set *s, const char *model, const char *prefix) {
    if (!s || !s->n) return -1;
    int ti = -1;
    for (int i = 0; i < s->n_targets && ti < 0; i++)
        if (strcmp(s->t[i].model, model) == 0) ti = i;
    if (ti < 0) return -1;
    char key[NU_LORA_MAX_KEY + 32];
    if ((size_t)snprintf(key, sizeof key, "%d|%s.weight", ti, prefix) >= sizeof key) return -1;
    return nu_lora_map_get(&s->layers, key);
}

nu_tensor *nu_lora_linear(const nu_lora_set *s, nu_ctx *ctx, const char *model, const char *prefix, nu_tensor *x,
                          nu_tensor *y) {
    for (int i = first_pair(s, model, prefix); i >= 0; i = s->m[i].next) {
        const mod *m = &s->m[i];
        /* a mismatch here means the base layer itself was mis-shaped: the builder reports that */
        if (!m->lin_down || m->lin_down->ne[1] != x->ne[x->ndim - 1] || m->lin_up->ne[0] != y->ne[y->ndim - 1]) continue;
        nu_tensor *h = nu_linear(ctx, x, m->lin_down, NULL); /* [..., r]   */
        h = nu_scale(ctx, h, m->scale);                      /* on the thin side */
        y = nu_add(ctx, y, nu_linear(ctx, h, m->lin_up, NULL));
    }
    return y;
}

nu_tensor *nu_lora_conv2d(const nu_lora_set *s, nu_ctx *ctx, const char *model, const char *prefix, nu_tensor *x,
                          nu_tensor *y, int stride, int pad) {
    for (int i = first_pair(s, model, prefix); i >= 0; i = s->m[i].next) {
        const mod *m = &s->m[i];
        if (!m->conv_down || m->conv_down->ne[1] != x->ne[1] || m->conv_up->ne[0] != y->ne[1]) continue;
        nu_conv2d_params p = nu_conv2d_params_init();
        p.stride[0] = p.stride[1] = stride;
        p.padding[0] = p.padding[1] = pad;
        nu_tensor *h = nu_conv2d(ctx, x, m->conv_down, NULL, &p); /* [B, r, H', W'] */
        h = nu_scale(ctx, h, m->scale);
        nu_conv2d_params one = nu_conv2d_params_init();
        y = nu_add(ctx, y, nu_conv2d(ctx, h, m->conv_up, NULL, &one));
    }
    return y;
}

/* ---------------------------------------------------------------- prompt tags, arguments */

/* Parses a whole (trimmed) number; false for junk, empty, inf or nan. */
static bool parse_num(const char *s, size_t n, float *v) {
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    char buf[64];
    if (n == 0 || n >= sizeof buf) return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    *v = strtof(buf, &end);
    return *end == '\0' && isfinite(*v);
}

static nu_status bad_tag(const char *tag, size_t n, const char *why) {
    int shown = n > 80 ? 80 : (int)n;
    return nu_error(NU_ERR_INVALID_ARG, "prompt: malformed LoRA tag \"%.*s%s\": %s (expected <lora:NAME:WEIGHT>)",
                    shown, tag, n > 80 ? "..." : "", why);
}

/* The fields of "<lora:" ... ">" (body excludes both) into t. */
static nu_status parse_tag(const char *tag, size_t tag_len, const char *body, size_t n, nu_lora_tag *t) {
    const char *f[8];
    size_t fl[8];
    int nf = 0;
    for (size_t i = 0, start = 0; i <= n; i++) {
        if (i < n && body[i] != ':') continue;
        if (nf == 8) return bad_tag(tag, tag_len, "too many fields");
        f[nf] = body + start;
        fl[nf++] = i - start;
        start = i + 1;
    }
    const char *name = f[0];
    size_t nl = fl[0];
    while (nl && isspace((unsigned char)*name)) name++, nl--;
    while (nl && isspace((unsigned char)name[nl - 1])) nl--;
    if (nl == 0) return bad_tag(tag, tag_len, "empty name");
    if (nl >= sizeof t->name) return bad_tag(tag, tag_len, "name too long");
    memcpy(t->name, name, nl);
    t->name[nl] = '\0';
    float pos[2];
    int npos = 0;
    bool te_set = false, unet_set = false;
    for (int i = 1; i < nf; i++) {
        const char *eq = memchr(f[i], '=', fl[i]);
        if (eq) {
            const char *k = f[i];
            size_t kl = (size_t)(eq - f[i]);
            while (kl && isspace((unsigned char)*k)) k++, kl--;
            while (kl && isspace((unsigned char)k[kl - 1])) kl--;
            float v;
            if (!parse_num(eq + 1, (size_t)(f[i] + fl[i] - (eq + 1)), &v)) return bad_tag(tag, tag_len, "weight is not a number");
            if (kl == 2 && memcmp(k, "te", 2) == 0) {
                t->te_weight = v;
                te_set = true;
            } else if (kl == 4 && memcmp(k, "unet", 4) == 0) {
                t->unet_weight = v;
                unet_set = true;
            } else {
                return bad_tag(tag, tag_len, "unknown option (te= and unet= are supported)");
            }
            continue;
        }
        if (npos == 2) return bad_tag(tag, tag_len, "too many weights");
        if (!parse_num(f[i], fl[i], &pos[npos])) return bad_tag(tag, tag_len, "weight is not a number");
        npos++;
    }
    /* A1111 extra networks: first positional = te multiplier, second = unet (default: the te one) */
    if (!te_set) t->te_weight = npos > 0 ? pos[0] : 1.0f;
    if (!unet_set) t->unet_weight = npos > 1 ? pos[1] : npos > 0 ? pos[0] : te_set ? t->te_weight : 1.0f;
    return NU_OK;
}

nu_status nu_lora_parse_prompt(const char *prompt, char **clean, nu_lora_tag **tags, int *n_tags) {
    static const char *const openers[] = {"<lora:", "<lyco:"};
    *clean = NULL;
    *tags = NULL;
    *n_tags = 0;
    size_t len = strlen(prompt);
    char *out = malloc(len + 1);
    if (!out) return nu_error(NU_ERR_NOMEM, "prompt: out of memory");
    nu_lora_tag *tv = NULL;
    int nt = 0, cap = 0;
    size_t o = 0;
    nu_status st = NU_OK;
    for (const char *p = prompt; *p && st == NU_OK;) {
        size_t ol = 0;
        for (int i = 0; i < 2 && !ol; i++)
            if (strncmp(p, openers[i], strlen(openers[i])) == 0) ol = strlen(openers[i]);
        if (!ol) {
            out[o++] = *p++;
            continue;
        }
        const char *body = p + ol, *end = body;
        while (*end && *end != '>' && *end != '<') end++;
        if (*end != '>') {
            st = bad_tag(p, (size_t)(end - p), "no closing '>'");
            break;
        }
        if (nt == cap) {
            cap = cap ? 2 * cap : 4;
            nu_lora_tag *nv = realloc(tv, sizeof *tv * (size_t)cap);
            if (!nv) {
                st = nu_error(NU_ERR_NOMEM, "prompt: out of memory");
                break;
            }
            tv = nv;
        }
        st = parse_tag(p, (size_t)(end + 1 - p), body, (size_t)(end - body), &tv[nt]);
        if (st == NU_OK) nt++;
        p = end + 1;
    }
    if (st != NU_OK) {
        free(out);
        free(tv);
        return st;
    }
    out[o] = '\0';
    *clean = out;
    *tags = tv;
    *n_tags = nt;
    return NU_OK;
}

static bool is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

nu_status nu_lora_find_file(const char *dir, const char *name, char *path, size_t len) {
    if (!dir || !*dir)
        return nu_error(NU_ERR_INVALID_ARG, "lora: the prompt names LoRA '%s' but no LoRA folder was given "
                        "(--lora-model-dir)", name);
    /* a name stays inside the folder: no absolute paths, no ".." components */
    bool bad = !*name || name[0] == '/' || name[0] == '\\';
    for (const char *c = name; *c && !bad; c++) {
        bool at_start = c == name || c[-1] == '/' || c[-1] == '\\';
        bad = at_start && c[0] == '.' && c[1] == '.' && (c[2] == '\0' || c[2] == '/' || c[2] == '\\');
    }
    if (bad) return nu_error(NU_ERR_INVALID_ARG, "lora: LoRA name '%s' must be a file name inside %s", name, dir);
    static const char *const exts[] = {".safetensors", ".gguf", ""};
    for (int i = 0; i < 3; i++) {
        if ((size_t)snprintf(path, len, "%s/%s%s", dir, name, exts[i]) >= len)
            return nu_error(NU_ERR_INVALID_ARG, "lora: path of LoRA '%s' in %s is too long", name, dir);
        if (is_file(path)) return NU_OK;
    }
    return nu_error(NU_ERR_NOT_FOUND, "lora: LoRA '%s' not found in %s (no %s/%s.safetensors)", name, dir, dir, name);
}

nu_status nu_lora_parse_arg(const char *arg, char *path, size_t len, float *weight) {
    const char *colon = strrchr(arg, ':');
    size_t pl = strlen(arg);
    *weight = 1.0f;
    float w;
    if (colon && parse_num(colon + 1, strlen(colon + 1), &w)) {
        pl = (size_t)(colon - arg);
        *weight = w;
    }
    if (pl == 0) return nu_error(NU_ERR_INVALID_ARG, "--lora: empty file name in '%s' (expected FILE[:WEIGHT])", arg);
    if (pl >= len) return nu_error(NU_ERR_INVALID_ARG, "--lora: path too long: '%s'", arg);
    memcpy(path, arg, pl);
    path[pl] = '\0';
    return NU_OK;
}
