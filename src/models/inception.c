/*
 * inception.c — pytorch-fid's InceptionV3 for FID (pytorch_fid/inception.py v0.3.0,
 * InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True)): pool3
 * features [N, 2048] and the fc logits [N, 1008] of the TF 2015-12-05 Inception graph.
 *
 * Network (torchvision Inception3 layout with pytorch-fid's FID blocks), NCHW:
 *   x [N,3,299,299] -> Conv2d_1a_3x3 (s2) [32,149] -> 2a [32,147] -> 2b (p1) [64,147] -> maxpool 3/2
 *   [64,73] (block0) -> 3b 1x1 [80,73] -> 4a 3x3 [192,71] -> maxpool 3/2 [192,35] (block1) ->
 *   Mixed_5b/5c/5d (FIDInceptionA) [256|288|288,35] -> Mixed_6a (InceptionB) [768,17] ->
 *   Mixed_6b..6e (FIDInceptionC) [768,17] (block2) -> Mixed_7a (InceptionD) [1280,8] ->
 *   Mixed_7b (FIDInceptionE_1) [2048,8] -> Mixed_7c (FIDInceptionE_2) [2048,8] ->
 *   adaptive avg pool -> pool3 [N,2048] -> fc -> logits [N,1008].
 * BasicConv2d = conv (no bias) -> BatchNorm(eps=0.001, eval) -> ReLU. The FID blocks differ from
 * torchvision's in their pool branch: A, C and E_1 use avg_pool2d(3, 1, 1, count_include_pad=
 * False); E_2 uses max_pool2d(3, 1, 1).
 *
 * Load: every BatchNorm is folded into its conv (w' = w*s, b' = beta - mean*s with
 * s = gamma/sqrt(var + 0.001); computed in double, stored f32), which is what torch's eval
 * batch_norm computes as x*alpha + beta up to rounding.
 * Graph optimisation (on by default, nu_inception_set_merge): in each Mixed block the 1x1 convs
 * that read the block input are one conv over the concatenated weights (stored once; the single
 * convs are views into it). For the avg-pool branches the branch's 1x1 conv is applied before the
 * pool: conv1x1 and avg_pool are both linear, and a count_include_pad=False pool maps a constant
 * (the bias) to itself, so avgpool(W x + b) = W avgpool(x) + b exactly in real arithmetic; it
 * pools pool_features channels instead of the block's input channels. The 3x3 max/avg pools are
 * built from vectorised reductions over strided views (pool3x3; the engine's pool kernels are
 * scalar and cost ~15% of the run), and channel concats of contiguous tensors copy whole
 * per-image blocks (cat2). nu_inception_set_merge(false) builds the literal graph instead (engine
 * pool ops, one conv per BasicConv2d), which the test checks against the reference too.
 * Graphs are built once per batch size and cached (NCACHE most recent sizes). A model is used by
 * one thread at a time (its graphs hold the activations).
 * Tested by tests/test_inception.c against ../shared/reference/inception_fid/.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "models/inception.h"
#include "nuance/io.h"

#define N_CONV 94
#define N_BLOCKS 11 /* Mixed_5b .. Mixed_7c */
#define NCACHE 3
#define BN_EPS 1e-3

typedef struct iconv {
    char name[48];                   /* BasicConv2d prefix, e.g. "Mixed_5b.branch1x1"     */
    int cin, cout, kh, kw, stride, ph, pw;
    nu_tensor *w, *b;                /* folded: w [cout, cin, kh, kw] f32, b [cout] f32   */
} iconv;

enum { BLK_A, BLK_B, BLK_C, BLK_D, BLK_E1, BLK_E2 };

/* One Mixed block: its kind and, for merging, the 1x1 convs reading its input (in order). */
typedef struct iblock {
    const char *name;
    int kind;
    int n_head;
    int head[4];       /* indices into conv[]                                              */
    bool head_pool;    /* the last head is the avg-pool branch's conv (applied before the pool) */
    nu_tensor *mw, *mb; /* merged head weight [sum cout, cin, 1, 1] and bias                 */
} iblock;

typedef struct gcache {
    int n;
    unsigned long stamp;
    bool merge;
    nu_ctx *ctx;
    nu_graph *g;
    nu_tensor *x, *pool3, *logits;
} gcache;

struct nu_inception {
    nu_ctx *wctx;
    iconv conv[N_CONV];
    int n_conv;
    iblock blk[N_BLOCKS];
    nu_tensor *fc_w, *fc_b; /* [1008, 2048], [1008] f32 */
    int batch;
    bool merge;
    gcache cache[NCACHE];
    unsigned long clock;
};

/* ---------------------------------------------------------------- architecture table */

static int add_conv(nu_inception *m, const char *prefix, const char *branch, int cin, int cout, int kh, int kw,
                    int stride, int ph, int pw) {
    NU_ASSERT(m->n_conv < N_CONV);
    iconv *c = &m->conv[m->n_conv];
    snprintf(c->name, sizeof c->name, "%s%s%s", prefix, branch ? "." : "", branch ? branch : "");
    c->cin = cin;
    c->cout = cout;
    c->kh = kh;
    c->kw = kw;
    c->stride = stride;
    c->ph = ph;
    c->pw = pw;
    return m->n_conv++;
}

static int find_conv(const nu_inception *m, const char *prefix, const char *branch) {
    char name[48];
    snprintf(name, sizeof name, "%s.%s", prefix, branch);
    for (int i = 0; i < m->n_conv; i++)
        if (!strcmp(m->conv[i].name, name)) return i;
    NU_ASSERT(!"inception: unknown conv");
    return -1;
}

/* torchvision Inception3.__init__ with pytorch-fid's fid_inception_v3 block classes. */
static void build_table(nu_inception *m) {
    add_conv(m, "Conv2d_1a_3x3", NULL, 3, 32, 3, 3, 2, 0, 0);
    add_conv(m, "Conv2d_2a_3x3", NULL, 32, 32, 3, 3, 1, 0, 0);
    add_conv(m, "Conv2d_2b_3x3", NULL, 32, 64, 3, 3, 1, 1, 1);
    add_conv(m, "Conv2d_3b_1x1", NULL, 64, 80, 1, 1, 1, 0, 0);
    add_conv(m, "Conv2d_4a_3x3", NULL, 80, 192, 3, 3, 1, 0, 0);
    static const struct { const char *name; int kind, cin, p; } blocks[N_BLOCKS] = {
        {"Mixed_5b", BLK_A, 192, 32},   {"Mixed_5c", BLK_A, 256, 64},   {"Mixed_5d", BLK_A, 288, 64},
        {"Mixed_6a", BLK_B, 288, 0},    {"Mixed_6b", BLK_C, 768, 128},  {"Mixed_6c", BLK_C, 768, 160},
        {"Mixed_6d", BLK_C, 768, 160},  {"Mixed_6e", BLK_C, 768, 192},  {"Mixed_7a", BLK_D, 768, 0},
        {"Mixed_7b", BLK_E1, 1280, 0},  {"Mixed_7c", BLK_E2, 2048, 0},
    };
    for (int i = 0; i < N_BLOCKS; i++) {
        const char *n = blocks[i].name;
        int in = blocks[i].cin, p = blocks[i].p;
        iblock *b = &m->blk[i];
        b->name = n;
        b->kind = blocks[i].kind;
        switch (b->kind) {
        case BLK_A: /* InceptionA(in, pool_features=p) */
            add_conv(m, n, "branch1x1", in, 64, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch5x5_1", in, 48, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch5x5_2", 48, 64, 5, 5, 1, 2, 2);
            add_conv(m, n, "branch3x3dbl_1", in, 64, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
            add_conv(m, n, "branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1);
            add_conv(m, n, "branch_pool", in, p, 1, 1, 1, 0, 0);
            break;
        case BLK_B: /* InceptionB(in) */
            add_conv(m, n, "branch3x3", in, 384, 3, 3, 2, 0, 0);
            add_conv(m, n, "branch3x3dbl_1", in, 64, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
            add_conv(m, n, "branch3x3dbl_3", 96, 96, 3, 3, 2, 0, 0);
            break;
        case BLK_C: /* InceptionC(in, channels_7x7=p) */
            add_conv(m, n, "branch1x1", in, 192, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch7x7_1", in, p, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch7x7_2", p, p, 1, 7, 1, 0, 3);
            add_conv(m, n, "branch7x7_3", p, 192, 7, 1, 1, 3, 0);
            add_conv(m, n, "branch7x7dbl_1", in, p, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch7x7dbl_2", p, p, 7, 1, 1, 3, 0);
            add_conv(m, n, "branch7x7dbl_3", p, p, 1, 7, 1, 0, 3);
            add_conv(m, n, "branch7x7dbl_4", p, p, 7, 1, 1, 3, 0);
            add_conv(m, n, "branch7x7dbl_5", p, 192, 1, 7, 1, 0, 3);
            add_conv(m, n, "branch_pool", in, 192, 1, 1, 1, 0, 0);
            break;
        case BLK_D: /* InceptionD(in) */
            add_conv(m, n, "branch3x3_1", in, 192, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch3x3_2", 192, 320, 3, 3, 2, 0, 0);
            add_conv(m, n, "branch7x7x3_1", in, 192, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3);
            add_conv(m, n, "branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0);
            add_conv(m, n, "branch7x7x3_4", 192, 192, 3, 3, 2, 0, 0);
            break;
        default: /* InceptionE(in) */
            add_conv(m, n, "branch1x1", in, 320, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch3x3_1", in, 384, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch3x3_2a", 384, 384, 1, 3, 1, 0, 1);
            add_conv(m, n, "branch3x3_2b", 384, 384, 3, 1, 1, 1, 0);
            add_conv(m, n, "branch3x3dbl_1", in, 448, 1, 1, 1, 0, 0);
            add_conv(m, n, "branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1);
            add_conv(m, n, "branch3x3dbl_3a", 384, 384, 1, 3, 1, 0, 1);
            add_conv(m, n, "branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 0);
            add_conv(m, n, "branch_pool", in, 192, 1, 1, 1, 0, 0);
            break;
        }
        /* heads: the 1x1 convs reading the block input (the avg-pool branch last) */
        static const char *const heads[][4] = {
            [BLK_A] = {"branch1x1", "branch5x5_1", "branch3x3dbl_1", "branch_pool"},
            [BLK_B] = {"branch3x3dbl_1", NULL, NULL, NULL},
            [BLK_C] = {"branch1x1", "branch7x7_1", "branch7x7dbl_1", "branch_pool"},
            [BLK_D] = {"branch3x3_1", "branch7x7x3_1", NULL, NULL},
            [BLK_E1] = {"branch1x1", "branch3x3_1", "branch3x3dbl_1", "branch_pool"},
            [BLK_E2] = {"branch1x1", "branch3x3_1", "branch3x3dbl_1", NULL},
        };
        b->n_head = 0;
        for (int h = 0; h < 4 && heads[b->kind][h]; h++) b->head[b->n_head++] = find_conv(m, n, heads[b->kind][h]);
        b->head_pool = b->kind == BLK_A || b->kind == BLK_C || b->kind == BLK_E1;
    }
    NU_ASSERT(m->n_conv == N_CONV);
}

/* ---------------------------------------------------------------- loading */

/* Reads tensor `name` (F32/F16/BF16, shape ne[0..ndim-1]) into dst as f32. */
static nu_status read_f32(nu_st_file *f, const char *path, const char *name, int ndim, const int64_t *ne, float *dst) {
    const nu_st_info *in = nu_st_find(f, name);
    if (!in) return nu_error(NU_ERR_NOT_FOUND, "%s: tensor '%s' missing (expected pytorch-fid state_dict names)", path, name);
    bool ok = in->ndim == ndim;
    int64_t n = 1;
    for (int d = 0; ok && d < ndim; d++) {
        ok = in->ne[d] == ne[d];
        n *= ne[d];
    }
    if (!ok) {
        char want[96] = "", got[96] = "";
        size_t lw = 0, lg = 0;
        for (int d = 0; d < ndim; d++)
            lw += (size_t)snprintf(want + lw, sizeof want - lw, "%s%lld", d ? ", " : "", (long long)ne[d]);
        for (int d = 0; d < in->ndim && lg < sizeof got - 24; d++)
            lg += (size_t)snprintf(got + lg, sizeof got - lg, "%s%lld", d ? ", " : "", (long long)in->ne[d]);
        return nu_error(NU_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%s]", path, name, got, want);
    }
    if (in->type != NU_TYPE_F32 && in->type != NU_TYPE_F16 && in->type != NU_TYPE_BF16)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 expected)", path, name,
                        nu_type_name(in->type));
    nu_row_to_f32(in->type, in->data, dst, n);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(dst[i])) return nu_error(NU_ERR_FORMAT, "%s: tensor '%s' holds a non-finite value", path, name);
    return NU_OK;
}

/* Loads conv c's weight and BatchNorm and writes the folded weight/bias into w, b. */
static nu_status load_conv(nu_st_file *f, const char *path, const iconv *c, float *w, float *b) {
    char name[96];
    const int64_t wne[4] = {c->cout, c->cin, c->kh, c->kw}, bne[1] = {c->cout};
    snprintf(name, sizeof name, "%s.conv.weight", c->name);
    nu_status st = read_f32(f, path, name, 4, wne, w);
    if (st != NU_OK) return st;
    float *bn = malloc(sizeof(float) * 4 * (size_t)c->cout);
    if (!bn) return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    static const char *const parts[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4 && st == NU_OK; i++) {
        snprintf(name, sizeof name, "%s.bn.%s", c->name, parts[i]);
        st = read_f32(f, path, name, 1, bne, bn + (size_t)i * c->cout);
    }
    if (st == NU_OK) {
        const float *gamma = bn, *beta = bn + c->cout, *mean = bn + 2 * c->cout, *var = bn + 3 * c->cout;
        const size_t per = (size_t)c->cin * c->kh * c->kw;
        for (int o = 0; o < c->cout && st == NU_OK; o++) {
            if (!(var[o] >= 0.0f)) {
                st = nu_error(NU_ERR_FORMAT, "%s: '%s.bn.running_var' is negative at channel %d", path, c->name, o);
                break;
            }
            /* torch eval batch_norm: y = (x - mean) / sqrt(var + eps) * gamma + beta */
            double s = (double)gamma[o] / sqrt((double)var[o] + BN_EPS);
            for (size_t i = 0; i < per; i++) w[o * per + i] = (float)((double)w[o * per + i] * s);
            b[o] = (float)((double)beta[o] - (double)mean[o] * s);
        }
    }
    free(bn);
    return st;
}

static nu_tensor *ext4(nu_ctx *ctx, float *data, int64_t a, int64_t b, int64_t c, int64_t d) {
    return nu_new_tensor_ext(ctx, NU_TYPE_F32, 4, (int64_t[]){a, b, c, d}, data);
}

/* Random weights for benchmarks: conv kaiming-normal N(0, 2/fan_in), BatchNorm identity
 * (gamma 1, beta 0, mean 0, var 1), fc N(0, 1/2048); Box-Muller over splitmix64. */
typedef struct rnd { uint64_t s; } rnd;
static double rnd_u01(rnd *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}
static void rnd_normal(rnd *r, float *x, int64_t n, double std) {
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(std * sqrt(-2.0 * log(rnd_u01(r))) * cos(6.283185307179586 * rnd_u01(r)));
}

/* Builds the model from `f` (pytorch-fid names) or, when f is NULL, from random weights. */
static nu_status create(const char *label, nu_st_file *f, uint64_t seed, nu_inception **out) {
    nu_status st = NU_OK;
    nu_inception *m = calloc(1, sizeof *m);
    if (!m) return nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
    m->batch = 8;
    m->merge = true;
    build_table(m);
    m->wctx = nu_ctx_new(NULL);
    if (!m->wctx) {
        st = nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
        goto fail;
    }
    /* merged head buffers of every block; the member convs are views into them */
    float *dst_w[N_CONV] = {NULL}, *dst_b[N_CONV] = {NULL};
    for (int bi = 0; bi < N_BLOCKS; bi++) {
        iblock *b = &m->blk[bi];
        int64_t cin = m->conv[b->head[0]].cin, tot = 0;
        for (int h = 0; h < b->n_head; h++) tot += m->conv[b->head[h]].cout;
        b->mw = nu_new_tensor_4d(m->wctx, NU_TYPE_F32, tot, cin, 1, 1);
        b->mb = nu_new_tensor_1d(m->wctx, NU_TYPE_F32, tot);
        int64_t k0 = 0;
        for (int h = 0; h < b->n_head; h++) {
            iconv *c = &m->conv[b->head[h]];
            dst_w[b->head[h]] = (float *)b->mw->data + k0 * cin;
            dst_b[b->head[h]] = (float *)b->mb->data + k0;
            c->w = ext4(m->wctx, dst_w[b->head[h]], c->cout, c->cin, 1, 1);
            c->b = nu_new_tensor_ext(m->wctx, NU_TYPE_F32, 1, (int64_t[]){c->cout}, dst_b[b->head[h]]);
            k0 += c->cout;
        }
    }
    /* every conv in the order of the state_dict, so a missing tensor is reported in that order */
    rnd r = {seed};
    for (int i = 0; i < m->n_conv && st == NU_OK; i++) {
        iconv *c = &m->conv[i];
        if (!dst_w[i]) {
            c->w = nu_new_tensor_4d(m->wctx, NU_TYPE_F32, c->cout, c->cin, c->kh, c->kw);
            c->b = nu_new_tensor_1d(m->wctx, NU_TYPE_F32, c->cout);
            dst_w[i] = c->w->data;
            dst_b[i] = c->b->data;
        }
        if (f) {
            st = load_conv(f, label, c, dst_w[i], dst_b[i]);
        } else {
            int64_t fan_in = (int64_t)c->cin * c->kh * c->kw;
            rnd_normal(&r, dst_w[i], c->cout * fan_in, sqrt(2.0 / (double)fan_in / (1.0 + BN_EPS)));
            memset(dst_b[i], 0, sizeof(float) * (size_t)c->cout);
        }
    }
    m->fc_w = nu_new_tensor_2d(m->wctx, NU_TYPE_F32, NU_INCEPTION_CLASSES, NU_INCEPTION_DIMS);
    m->fc_b = nu_new_tensor_1d(m->wctx, NU_TYPE_F32, NU_INCEPTION_CLASSES);
    if (st == NU_OK && f)
        st = read_f32(f, label, "fc.weight", 2, (int64_t[]){NU_INCEPTION_CLASSES, NU_INCEPTION_DIMS}, m->fc_w->data);
    if (st == NU_OK && f)
        st = read_f32(f, label, "fc.bias", 1, (int64_t[]){NU_INCEPTION_CLASSES}, m->fc_b->data);
    if (!f) {
        rnd_normal(&r, m->fc_w->data, (int64_t)NU_INCEPTION_CLASSES * NU_INCEPTION_DIMS, 1.0 / sqrt(2048.0));
        memset(m->fc_b->data, 0, sizeof(float) * NU_INCEPTION_CLASSES);
    }
    if (st != NU_OK) goto fail;
    *out = m;
    return NU_OK;
fail:
    nu_inception_free(m);
    return st;
}

nu_status nu_inception_load(const char *weights_path, nu_inception **out) {
    if (!weights_path || !out) return nu_error(NU_ERR_INVALID_ARG, "nu_inception_load: NULL argument");
    *out = NULL;
    nu_st_file *f = NULL;
    nu_status st = nu_st_open(weights_path, &f);
    if (st != NU_OK) return st;
    st = create(weights_path, f, 0, out);
    nu_st_close(f);
    return st;
}

nu_status nu_inception_new_random(uint64_t seed, nu_inception **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_inception_new_random: NULL argument");
    *out = NULL;
    return create("random InceptionV3", NULL, seed, out);
}

static void cache_drop(gcache *c) {
    if (c->g) nu_graph_free(c->g);
    if (c->ctx) nu_ctx_free(c->ctx);
    memset(c, 0, sizeof *c);
}

void nu_inception_free(nu_inception *m) {
    if (!m) return;
    for (int i = 0; i < NCACHE; i++) cache_drop(&m->cache[i]);
    if (m->wctx) nu_ctx_free(m->wctx);
    free(m);
}

void nu_inception_set_batch(nu_inception *m, int batch) {
    if (!m) return;
    m->batch = batch < 1 ? 1 : batch > 256 ? 256 : batch;
}

void nu_inception_set_merge(nu_inception *m, bool merge) {
    if (m) m->merge = merge;
}

/* ---------------------------------------------------------------- graph */

/* BasicConv2d (BN folded): relu(conv(x) + b), the ReLU fused into the conv (bitwise the same as
 * a separate nu_relu: max(y, 0) of the same y). */
static nu_tensor *cbr(nu_ctx *ctx, const iconv *c, nu_tensor *x) {
    nu_conv2d_params p = nu_conv2d_params_init();
    p.stride[0] = p.stride[1] = c->stride;
    p.padding[0] = c->ph;
    p.padding[1] = c->pw;
    p.relu = true;
    return nu_conv2d(ctx, x, c->w, c->b, &p);
}

/* Channel concat of NCHW tensors. Contiguous operands are concatenated as [N, C*H*W] rows (the
 * same bytes), so the copy kernel moves whole per-image blocks instead of W-float rows. */
static nu_tensor *cat2(nu_ctx *ctx, nu_tensor *a, nu_tensor *b) {
    if (!nu_is_contiguous(a) || !nu_is_contiguous(b)) return nu_concat(ctx, a, b, 1);
    const int64_t N = a->ne[0], H = a->ne[2], W = a->ne[3];
    nu_tensor *a2 = nu_reshape(ctx, a, 2, (int64_t[]){N, a->ne[1] * H * W});
    nu_tensor *b2 = nu_reshape(ctx, b, 2, (int64_t[]){N, b->ne[1] * H * W});
    return nu_reshape(ctx, nu_concat(ctx, a2, b2, 1), 4, (int64_t[]){N, a->ne[1] + b->ne[1], H, W});
}

static nu_tensor *cat4(nu_ctx *ctx, nu_tensor *a, nu_tensor *b, nu_tensor *c, nu_tensor *d) {
    return cat2(ctx, cat2(ctx, a, b), cat2(ctx, c, d));
}

/* 3x3 max or average pool (stride 1 or 2, padding 0 or 1) of x [N,C,H,W] (x >= 0: a ReLU
 * output, so zero padding equals max_pool2d's -inf padding) built from reductions over
 * overlapping strided views, which the reduce kernels vectorise: a vertical pass (3 rows, over
 * whole rows of the padded plane) then a horizontal pass (3 shifts along the flattened plane;
 * the last 2 columns of each row mix neighbouring rows and are never read). The max is exact, so
 * it equals max_pool2d bitwise; the average is the window sum (accumulated in double) divided
 * by the number of in-image taps, i.e. avg_pool2d(count_include_pad=False). Returns a strided
 * view [N,C,Ho,Wo] for max, a contiguous tensor for the average. */
static nu_tensor *pool3x3(nu_ctx *ctx, nu_tensor *x, int stride, int pad, bool is_max) {
    if (pad) x = nu_pad(ctx, x, (const int[]){0, 0, 0, 0, pad, pad, pad, pad});
    const int64_t N = x->ne[0], C = x->ne[1], H = x->ne[2], W = x->ne[3];
    const int64_t Ho = (H - 3) / stride + 1, Wo = (W - 3) / stride + 1;
    NU_ASSERT(x->nb[3] == 4 && x->nb[2] == 4 * W);
    nu_tensor *(*red)(nu_ctx *, nu_tensor *, int, bool) = is_max ? nu_max : nu_sum;
    nu_tensor *v;
    if (stride == 1) /* [N, C, 3 rows, Ho*W] */
        v = nu_view(ctx, x, 4, (int64_t[]){N, C, 3, Ho * W}, (int64_t[]){x->nb[0], x->nb[1], 4 * W, 4}, 0);
    else /* [N, C, 3 rows, Ho, W] */
        v = nu_view(ctx, x, 5, (int64_t[]){N, C, 3, Ho, W}, (int64_t[]){x->nb[0], x->nb[1], 4 * W, 4 * stride * W, 4}, 0);
    nu_tensor *r = red(ctx, v, 2, false); /* contiguous [N, C, Ho*W] or [N, C, Ho, W] */
    nu_tensor *h = nu_view(ctx, r, 4, (int64_t[]){N, C, 3, Ho * W - 2}, (int64_t[]){4 * Ho * W * C, 4 * Ho * W, 4, 4}, 0);
    nu_tensor *s = red(ctx, h, 2, false); /* [N, C, Ho*W - 2] */
    nu_tensor *out = nu_view(ctx, s, 4, (int64_t[]){N, C, Ho, Wo}, (int64_t[]){s->nb[0], s->nb[1], 4 * W, 4 * stride}, 0);
    if (is_max) return out;
    /* divisor: in-image taps of each window (the graph contexts here never allocate data, so
     * the constant is made with data switched on for a moment) */
    NU_ASSERT(stride == 1);
    const int64_t IH = H - 2 * pad, IW = W - 2 * pad;
    nu_ctx_set_alloc_data(ctx, true);
    nu_tensor *cnt = nu_new_tensor_2d(ctx, NU_TYPE_F32, Ho, Wo);
    nu_ctx_set_alloc_data(ctx, false);
    NU_ASSERT(cnt && cnt->data);
    for (int64_t i = 0; i < Ho; i++)
        for (int64_t j = 0; j < Wo; j++) {
            int64_t h0 = i - pad < 0 ? 0 : i - pad, h1 = i - pad + 3 > IH ? IH : i - pad + 3;
            int64_t w0 = j - pad < 0 ? 0 : j - pad, w1 = j - pad + 3 > IW ? IW : j - pad + 3;
            ((float *)cnt->data)[i * Wo + j] = (float)((h1 - h0) * (w1 - w0));
        }
    return nu_div(ctx, out, cnt);
}

/* max_pool2d(x, 3, stride, pad) of a ReLU output: the engine op (literal graph) or pool3x3. */
static nu_tensor *maxpool(nu_ctx *ctx, nu_tensor *x, int stride, int pad, bool fast) {
    return fast ? pool3x3(ctx, x, stride, pad, true) : nu_max_pool2d(ctx, x, 3, stride, pad);
}

static const iconv *cv(const nu_inception *m, const iblock *b, const char *branch) {
    return &m->conv[find_conv(m, b->name, branch)];
}

/* The block's 1x1 heads applied to x: h[i] [N, cout_i, H, W], after their ReLU. When merging,
 * the heads are channel views of one conv with the fused ReLU, and the avg-pool branch's conv
 * (the last head) is a second conv over the rest of the merged weights, without ReLU (it is
 * pooled first). */
static void run_heads(nu_ctx *ctx, const nu_inception *m, const iblock *b, nu_tensor *x, bool merge, nu_tensor **h) {
    int n = b->n_head - (b->head_pool ? 1 : 0);
    if (merge && b->n_head > 1) {
        int64_t kr = 0, kall = b->mw->ne[0];
        for (int i = 0; i < n; i++) kr += m->conv[b->head[i]].cout;
        nu_conv2d_params p = nu_conv2d_params_init();
        p.relu = true;
        nu_tensor *all = nu_conv2d(ctx, x, nu_slice(ctx, b->mw, 0, 0, kr), nu_slice(ctx, b->mb, 0, 0, kr), &p);
        int64_t k0 = 0;
        for (int i = 0; i < n; i++) {
            int64_t k1 = k0 + m->conv[b->head[i]].cout;
            h[i] = n > 1 ? nu_slice(ctx, all, 1, k0, k1) : all;
            k0 = k1;
        }
        if (b->head_pool) {
            p.relu = false;
            h[n] = nu_conv2d(ctx, x, nu_slice(ctx, b->mw, 0, kr, kall), nu_slice(ctx, b->mb, 0, kr, kall), &p);
        }
    } else {
        for (int i = 0; i < n; i++) h[i] = cbr(ctx, &m->conv[b->head[i]], x);
    }
}

/* avg-pool branch: relu(conv1x1(avgpool(x))) literally, or relu(avgpool(head)) when merged. */
static nu_tensor *avg_branch(nu_ctx *ctx, const iconv *c, nu_tensor *x, nu_tensor *head, bool merge) {
    if (merge) return nu_relu(ctx, pool3x3(ctx, head, 1, 1, false));
    return cbr(ctx, c, nu_avg_pool2d_ex(ctx, x, 3, 1, 1, false));
}

static nu_tensor *block(nu_ctx *ctx, const nu_inception *m, const iblock *b, nu_tensor *x, bool merge) {
    nu_tensor *h[4] = {NULL, NULL, NULL, NULL};
    run_heads(ctx, m, b, x, merge, h);
    switch (b->kind) {
    case BLK_A: { /* FIDInceptionA */
        nu_tensor *b1 = h[0];
        nu_tensor *b5 = cbr(ctx, cv(m, b, "branch5x5_2"), h[1]);
        nu_tensor *b3 = cbr(ctx, cv(m, b, "branch3x3dbl_2"), h[2]);
        b3 = cbr(ctx, cv(m, b, "branch3x3dbl_3"), b3);
        nu_tensor *bp = avg_branch(ctx, cv(m, b, "branch_pool"), x, h[3], merge);
        return cat4(ctx, b1, b5, b3, bp);
    }
    case BLK_B: { /* InceptionB */
        nu_tensor *b3 = cbr(ctx, cv(m, b, "branch3x3"), x);
        nu_tensor *bd = cbr(ctx, cv(m, b, "branch3x3dbl_2"), h[0]);
        bd = cbr(ctx, cv(m, b, "branch3x3dbl_3"), bd);
        nu_tensor *bp = maxpool(ctx, x, 2, 0, merge);
        return cat2(ctx, cat2(ctx, b3, bd), bp);
    }
    case BLK_C: { /* FIDInceptionC */
        nu_tensor *b1 = h[0];
        nu_tensor *b7 = cbr(ctx, cv(m, b, "branch7x7_2"), h[1]);
        b7 = cbr(ctx, cv(m, b, "branch7x7_3"), b7);
        nu_tensor *bd = h[2];
        bd = cbr(ctx, cv(m, b, "branch7x7dbl_2"), bd);
        bd = cbr(ctx, cv(m, b, "branch7x7dbl_3"), bd);
        bd = cbr(ctx, cv(m, b, "branch7x7dbl_4"), bd);
        bd = cbr(ctx, cv(m, b, "branch7x7dbl_5"), bd);
        nu_tensor *bp = avg_branch(ctx, cv(m, b, "branch_pool"), x, h[3], merge);
        return cat4(ctx, b1, b7, bd, bp);
    }
    case BLK_D: { /* InceptionD */
        nu_tensor *b3 = cbr(ctx, cv(m, b, "branch3x3_2"), h[0]);
        nu_tensor *b7 = cbr(ctx, cv(m, b, "branch7x7x3_2"), h[1]);
        b7 = cbr(ctx, cv(m, b, "branch7x7x3_3"), b7);
        b7 = cbr(ctx, cv(m, b, "branch7x7x3_4"), b7);
        nu_tensor *bp = maxpool(ctx, x, 2, 0, merge);
        return cat2(ctx, cat2(ctx, b3, b7), bp);
    }
    default: { /* FIDInceptionE_1 (avg pool) / FIDInceptionE_2 (max pool) */
        nu_tensor *b1 = h[0];
        nu_tensor *t = h[1];
        nu_tensor *b3 = cat2(ctx, cbr(ctx, cv(m, b, "branch3x3_2a"), t), cbr(ctx, cv(m, b, "branch3x3_2b"), t));
        nu_tensor *d = cbr(ctx, cv(m, b, "branch3x3dbl_2"), h[2]);
        nu_tensor *bd =
            cat2(ctx, cbr(ctx, cv(m, b, "branch3x3dbl_3a"), d), cbr(ctx, cv(m, b, "branch3x3dbl_3b"), d));
        nu_tensor *bp;
        if (b->kind == BLK_E1)
            bp = avg_branch(ctx, cv(m, b, "branch_pool"), x, h[3], merge);
        else
            bp = cbr(ctx, cv(m, b, "branch_pool"), maxpool(ctx, x, 1, 1, merge));
        return cat4(ctx, b1, b3, bd, bp);
    }
    }
}

/* x [N,3,299,299] in [-1,1] -> pool3 [N,2048], logits [N,1008]; taps[0..2] = block0..2 outputs. */
static void build_net(nu_ctx *ctx, const nu_inception *m, nu_tensor *x, bool merge, nu_tensor **pool3,
                      nu_tensor **logits, nu_tensor **taps) {
    const iconv *c = m->conv;
    nu_tensor *y = cbr(ctx, &c[0], x);  /* Conv2d_1a_3x3 [N,32,149,149] */
    y = cbr(ctx, &c[1], y);             /* Conv2d_2a_3x3 [N,32,147,147] */
    y = cbr(ctx, &c[2], y);             /* Conv2d_2b_3x3 [N,64,147,147] */
    y = maxpool(ctx, y, 2, 0, merge);   /* [N,64,73,73]                 */
    if (taps) taps[0] = y;
    y = cbr(ctx, &c[3], y);             /* Conv2d_3b_1x1 [N,80,73,73]   */
    y = cbr(ctx, &c[4], y);             /* Conv2d_4a_3x3 [N,192,71,71]  */
    y = maxpool(ctx, y, 2, 0, merge);   /* [N,192,35,35]                */
    if (taps) taps[1] = y;
    for (int i = 0; i < N_BLOCKS; i++) {
        y = block(ctx, m, &m->blk[i], y, merge);
        if (taps && !strcmp(m->blk[i].name, "Mixed_6e")) taps[2] = y;
    }
    /* adaptive_avg_pool2d(1) over [N,2048,8,8] */
    int64_t N = y->ne[0];
    nu_tensor *p = nu_mean(ctx, nu_reshape(ctx, y, 3, (int64_t[]){N, NU_INCEPTION_DIMS, y->ne[2] * y->ne[3]}), 2, false);
    *pool3 = p;
    *logits = nu_linear(ctx, p, m->fc_w, m->fc_b);
}

/* Graph for batch size n (cached). */
static nu_status get_graph(nu_inception *m, int n, gcache **out) {
    gcache *slot = NULL;
    for (int i = 0; i < NCACHE; i++)
        if (m->cache[i].g && m->cache[i].n == n && m->cache[i].merge == m->merge) slot = &m->cache[i];
    if (!slot) {
        slot = &m->cache[0];
        for (int i = 0; i < NCACHE; i++) {
            if (!m->cache[i].g) {
                slot = &m->cache[i];
                break;
            }
            if (m->cache[i].stamp < slot->stamp) slot = &m->cache[i];
        }
        cache_drop(slot);
        nu_ctx_params cp = nu_ctx_params_init();
        cp.alloc_data = false;
        slot->ctx = nu_ctx_new(&cp);
        if (!slot->ctx) return nu_error(NU_ERR_NOMEM, "inception: out of memory for the graph");
        slot->x = nu_new_tensor_4d(slot->ctx, NU_TYPE_F32, n, 3, NU_INCEPTION_SIZE, NU_INCEPTION_SIZE);
        nu_set_input(slot->x);
        build_net(slot->ctx, m, slot->x, m->merge, &slot->pool3, &slot->logits, NULL);
        slot->g = nu_graph_new(slot->ctx);
        nu_graph_expand(slot->g, slot->pool3);
        nu_graph_expand(slot->g, slot->logits);
        nu_status st = nu_graph_alloc(slot->g);
        if (st != NU_OK) {
            cache_drop(slot);
            return st;
        }
        slot->n = n;
        slot->merge = m->merge;
    }
    slot->stamp = ++m->clock;
    *out = slot;
    return NU_OK;
}

/* Runs the cached graph for n images whose input (x [n,3,299,299]) is already in the graph's
 * input tensor; copies out pool3 / logits. */
static nu_status run_graph(gcache *gc, nu_pool *pool, float *pool3, float *logits) {
    nu_status st = nu_graph_compute(gc->g, pool);
    if (st != NU_OK) return st;
    if (pool3) nu_tensor_get_f32(gc->pool3, pool3);
    if (logits) nu_tensor_get_f32(gc->logits, logits);
    return NU_OK;
}

static nu_status run_batch(nu_inception *m, nu_pool *pool, const float *x, int n, float *pool3, float *logits) {
    gcache *gc = NULL;
    nu_status st = get_graph(m, n, &gc);
    if (st != NU_OK) return st;
    memcpy(gc->x->data, x, sizeof(float) * (size_t)n * 3 * NU_INCEPTION_SIZE * NU_INCEPTION_SIZE);
    return run_graph(gc, pool, pool3, logits);
}

nu_status nu_inception_features_f32(nu_inception *m, nu_pool *pool, const float *x, int n, float *pool3,
                                    float *logits) {
    if (!m || (!x && n > 0) || n < 0) return nu_error(NU_ERR_INVALID_ARG, "nu_inception_features_f32: bad argument");
    const size_t per = (size_t)3 * NU_INCEPTION_SIZE * NU_INCEPTION_SIZE;
    for (int i = 0; i < n; i += m->batch) {
        int b = n - i < m->batch ? n - i : m->batch;
        nu_status st = run_batch(m, pool, x + (size_t)i * per, b, pool3 ? pool3 + (size_t)i * NU_INCEPTION_DIMS : NULL,
                                 logits ? logits + (size_t)i * NU_INCEPTION_CLASSES : NULL);
        if (st != NU_OK) return st;
    }
    return NU_OK;
}

/* Preprocessing of one batch on the pool's threads (images split evenly; validated before). */
typedef struct prep_job {
    const nu_image *images;
    int n;
    float *x;
} prep_job;

static void prep_thread(int ith, int nth, void *arg) {
    prep_job *j = arg;
    int64_t lo, hi;
    nu_split(j->n, ith, nth, &lo, &hi);
    const size_t per = (size_t)3 * NU_INCEPTION_SIZE * NU_INCEPTION_SIZE;
    for (int64_t i = lo; i < hi; i++) {
        nu_status st = nu_fid_preprocess(&j->images[i], j->x + (size_t)i * per);
        NU_ASSERT(st == NU_OK);
    }
}

nu_status nu_inception_features(nu_inception *m, nu_pool *pool, const nu_image *images, int n, float *pool3,
                                float *logits) {
    if (!m || (!images && n > 0) || n < 0) return nu_error(NU_ERR_INVALID_ARG, "nu_inception_features: bad argument");
    for (int i = 0; i < n; i++) {
        const nu_image *im = &images[i];
        if (!im->pixels || im->width <= 0 || im->height <= 0 || im->channels < 1 || im->channels > 4)
            return nu_error(NU_ERR_INVALID_ARG, "inception: image %d is empty or has %d channels (1-4 supported)", i,
                            im->channels);
    }
    for (int i = 0; i < n; i += m->batch) {
        int b = n - i < m->batch ? n - i : m->batch;
        gcache *gc = NULL;
        nu_status st = get_graph(m, b, &gc);
        if (st != NU_OK) return st;
        /* preprocess straight into the graph's input tensor */
        prep_job job = {images + i, b, (float *)gc->x->data};
        nu_pool_run(pool, prep_thread, &job);
        st = run_graph(gc, pool, pool3 ? pool3 + (size_t)i * NU_INCEPTION_DIMS : NULL,
                       logits ? logits + (size_t)i * NU_INCEPTION_CLASSES : NULL);
        if (st != NU_OK) return st;
    }
    return NU_OK;
}

/* ---------------------------------------------------------------- debug (tests) */

static void spatial_mean(const nu_tensor *t, float *out) {
    int64_t N = t->ne[0], C = t->ne[1], HW = t->ne[2] * t->ne[3];
    float *v = malloc(sizeof(float) * (size_t)nu_nelements(t));
    NU_ASSERT(v);
    nu_tensor_get_f32(t, v);
    for (int64_t i = 0; i < N * C; i++) {
        double s = 0.0;
        for (int64_t q = 0; q < HW; q++) s += v[i * HW + q];
        out[i] = (float)(s / (double)HW);
    }
    free(v);
}

nu_status nu_inception_debug_blocks(nu_inception *m, nu_pool *pool, const float *x, int n, float *block0,
                                    float *block1, float *block2, float *pool3, float *logits) {
    nu_ctx_params cp = nu_ctx_params_init();
    cp.alloc_data = false;
    nu_ctx *ctx = nu_ctx_new(&cp);
    if (!ctx) return nu_error(NU_ERR_NOMEM, "inception: out of memory");
    nu_tensor *xt = nu_new_tensor_4d(ctx, NU_TYPE_F32, n, 3, NU_INCEPTION_SIZE, NU_INCEPTION_SIZE);
    nu_set_input(xt);
    nu_tensor *p3, *lg, *taps[3];
    build_net(ctx, m, xt, m->merge, &p3, &lg, taps);
    nu_graph *g = nu_graph_new(ctx);
    for (int i = 0; i < 3; i++) nu_graph_expand(g, taps[i]);
    nu_graph_expand(g, p3);
    nu_graph_expand(g, lg);
    nu_status st = nu_graph_alloc(g);
    if (st == NU_OK) {
        memcpy(xt->data, x, sizeof(float) * (size_t)n * 3 * NU_INCEPTION_SIZE * NU_INCEPTION_SIZE);
        st = nu_graph_compute(g, pool);
    }
    if (st == NU_OK) {
        if (block0) spatial_mean(taps[0], block0);
        if (block1) spatial_mean(taps[1], block1);
        if (block2) spatial_mean(taps[2], block2);
        if (pool3) nu_tensor_get_f32(p3, pool3);
        if (logits) nu_tensor_get_f32(lg, logits);
    }
    nu_graph_free(g);
    nu_ctx_free(ctx);
    return st;
}
