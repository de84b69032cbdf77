/*
 * lora_names.c — LoRA key dialects, as data tables, resolved to a base model's canonical names.
 *
 * A key is <part prefix><layer path><role suffix>:
 *   part prefixes  kohya "lora_unet_", "lora_te_", "lora_te1_", "lora_te2_" ('_'-joined paths);
 *                  diffusers/PEFT "unet.", "text_encoder.", "text_encoder_2.", "base_model.model.",
 *                  LDM "model.diffusion_model.", "cond_stage_model.transformer." (dotted paths)
 *   role suffixes  .lora_down.weight/.lora_up.weight (kohya), .lora_A.weight/.lora_B.weight (PEFT,
 *                  also with the ".default" adapter name), .lora.down.weight/.lora.up.weight and
 *                  .lora_linear_layer.down/up.weight (diffusers), .alpha; the diffusers
 *                  attention-processor form "<attn>.processor.to_q_lora.down.weight" (to_out_lora
 *                  is to_out.0).
 * A path resolves to a canonical "<path>.weight" of the target: a dotted path directly when it is
 * one; otherwise through the '_'-joined form of every canonical name (kohya's names are the
 * module paths with '.' -> '_', ambiguous in general, so they are matched against the names the
 * model really has — A1111 and stable-diffusion.cpp do the same); UNet paths in the LDM layout
 * (input_blocks / middle_block / output_blocks) are first mapped to the diffusers layout with
 * the block arithmetic of diffusers' convert_ldm_unet_checkpoint (v0.27), for the
 * layers_per_block read from the target's names. (A small mapper of its own on '_'-joined
 * names: unet_names.c's table works on a weights store's dotted names.)
 * Tested by tests/test_lora.c (realistic SD 1.x UNet and CLIP names, every dialect).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "nn/lora.h"

#define COUNT(a) (int)(sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------- string -> int map */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int slot(const nu_lora_map *m, const char *key) {
    int h = (int)(hash_str(key) & (uint64_t)(m->cap - 1));
    while (m->keys[h] && strcmp(m->keys[h], key) != 0) h = (h + 1) & (m->cap - 1);
    return h;
}

bool nu_lora_map_put(nu_lora_map *m, const char *key, int val) {
    if (2 * (m->n + 1) > m->cap) { /* grow to keep the load factor <= 1/2 */
        int cap = m->cap ? 2 * m->cap : 64;
        nu_lora_map g = {calloc((size_t)cap, sizeof(char *)), calloc((size_t)cap, sizeof(int)), cap, m->n};
        if (!g.keys || !g.vals) {
            free(g.keys);
            free(g.vals);
            return false;
        }
        for (int i = 0; i < m->cap; i++) {
            if (!m->keys[i]) continue;
            int h = slot(&g, m->keys[i]);
            g.keys[h] = m->keys[i];
            g.vals[h] = m->vals[i];
        }
        free(m->keys);
        free(m->vals);
        *m = g;
    }
    int h = slot(m, key);
    if (!m->keys[h]) {
        m->keys[h] = strdup(key);
        if (!m->keys[h]) return false;
        m->n++;
    }
    m->vals[h] = val;
    return true;
}

int nu_lora_map_get(const nu_lora_map *m, const char *key) {
    if (!m->cap) return -1;
    int h = slot(m, key);
    return m->keys[h] ? m->vals[h] : -1;
}

void nu_lora_map_free(nu_lora_map *m) {
    for (int i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- key dialects */

typedef struct suffix_role {
    const char *suffix;
    nu_lora_role role;
} suffix_role;

/* Checked in order; none is a suffix of an earlier one. */
static const suffix_role role_suffixes[] = {
    {".lora_down.weight", NU_LORA_ROLE_DOWN},
    {".lora_up.weight", NU_LORA_ROLE_UP},
    {".lora_A.weight", NU_LORA_ROLE_DOWN},
    {".lora_B.weight", NU_LORA_ROLE_UP},
    {".lora_A.default.weight", NU_LORA_ROLE_DOWN},
    {".lora_B.default.weight", NU_LORA_ROLE_UP},
    {".lora_linear_layer.down.weight", NU_LORA_ROLE_DOWN},
    {".lora_linear_layer.up.weight", NU_LORA_ROLE_UP},
    {".lora.down.weight", NU_LORA_ROLE_DOWN},
    {".lora.up.weight", NU_LORA_ROLE_UP},
    {"_lora.down.weight", NU_LORA_ROLE_DOWN}, /* diffusers attention processors: to_q_lora.down */
    {"_lora.up.weight", NU_LORA_ROLE_UP},
    {".alpha", NU_LORA_ROLE_ALPHA},
    /* LyCORIS and friends: recognised, not applied */
    {".lora_mid.weight", NU_LORA_ROLE_UNSUPPORTED},
    {".hada_w1_a", NU_LORA_ROLE_UNSUPPORTED},
    {".hada_w1_b", NU_LORA_ROLE_UNSUPPORTED},
    {".hada_w2_a", NU_LORA_ROLE_UNSUPPORTED},
    {".hada_w2_b", NU_LORA_ROLE_UNSUPPORTED},
    {".hada_t1", NU_LORA_ROLE_UNSUPPORTED},
    {".hada_t2", NU_LORA_ROLE_UNSUPPORTED},
    {".lokr_w1", NU_LORA_ROLE_UNSUPPORTED},
    {".lokr_w2", NU_LORA_ROLE_UNSUPPORTED},
    {".lokr_w1_a", NU_LORA_ROLE_UNSUPPORTED},
    {".lokr_w1_b", NU_LORA_ROLE_UNSUPPORTED},
    {".lokr_w2_a", NU_LORA_ROLE_UNSUPPORTED},
    {".lokr_w2_b", NU_LORA_ROLE_UNSUPPORTED},
    {".lokr_t2", NU_LORA_ROLE_UNSUPPORTED},
    {".dora_scale", NU_LORA_ROLE_UNSUPPORTED},
    {".lora_magnitude_vector", NU_LORA_ROLE_UNSUPPORTED},
    {".lora_magnitude_vector.default", NU_LORA_ROLE_UNSUPPORTED},
    {".diff", NU_LORA_ROLE_UNSUPPORTED},
    {".diff_b", NU_LORA_ROLE_UNSUPPORTED},
    {".w_norm", NU_LORA_ROLE_UNSUPPORTED},
    {".b_norm", NU_LORA_ROLE_UNSUPPORTED},
    {".on_input", NU_LORA_ROLE_UNSUPPORTED},
};

typedef struct prefix_part {
    const char *prefix;
    nu_lora_part part;
    bool kohya;
} prefix_part;

/* Checked in order (longer prefixes that share a start come first). */
static const prefix_part part_prefixes[] = {
    {"lora_unet_", NU_LORA_PART_UNET, true},
    {"lora_te1_", NU_LORA_PART_TE, true},
    {"lora_te2_", NU_LORA_PART_TE2, true},
    {"lora_te_", NU_LORA_PART_TE, true},
    {"unet.", NU_LORA_PART_UNET, false},
    {"text_encoder_2.", NU_LORA_PART_TE2, false},
    {"text_encoder.", NU_LORA_PART_TE, false},
    {"model.diffusion_model.", NU_LORA_PART_UNET, false},
    {"cond_stage_model.transformer.", NU_LORA_PART_TE, false},
    {"base_model.model.", NU_LORA_PART_COUNT, false},
};

static bool starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static bool ends(const char *s, size_t n, const char *suf) {
    size_t m = strlen(suf);
    return n >= m && memcmp(s + n - m, suf, m) == 0;
}

bool nu_lora_key_parse(const char *key, nu_lora_key *k) {
    memset(k, 0, sizeof *k);
    k->role = NU_LORA_ROLE_UNKNOWN;
    k->part = NU_LORA_PART_COUNT;
    size_t n = strlen(key);
    if (n >= NU_LORA_MAX_KEY) return false;
    for (int i = 0; i < COUNT(role_suffixes); i++) {
        if (!ends(key, n, role_suffixes[i].suffix)) continue;
        k->role = role_suffixes[i].role;
        n -= strlen(role_suffixes[i].suffix);
        break;
    }
    if (k->role == NU_LORA_ROLE_UNKNOWN || n == 0) {
        k->role = NU_LORA_ROLE_UNKNOWN;
        snprintf(k->module, sizeof k->module, "%s", key);
        return true;
    }
    memcpy(k->module, key, n);
    k->module[n] = '\0';
    const char *p = k->module;
    for (int i = 0; i < COUNT(part_prefixes); i++) {
        if (!starts(p, part_prefixes[i].prefix)) continue;
        k->part = part_prefixes[i].part;
        k->kohya = part_prefixes[i].kohya;
        p += strlen(part_prefixes[i].prefix);
        break;
    }
    snprintf(k->path, sizeof k->path, "%s", p);
    /* diffusers attention processors: "<attn>.processor.to_q" -> "<attn>.to_q", to_out -> to_out.0 */
    char *proc = strstr(k->path, ".processor.");
    if (!k->kohya && proc) {
        const char *proj = proc + strlen(".processor.");
        char tail[32];
        if (strcmp(proj, "to_q") == 0 || strcmp(proj, "to_k") == 0 || strcmp(proj, "to_v") == 0)
            snprintf(tail, sizeof tail, ".%s", proj);
        else if (strcmp(proj, "to_out") == 0)
            snprintf(tail, sizeof tail, ".to_out.0");
        else
            tail[0] = '\0';
        if (tail[0] && (size_t)(proc - k->path) + strlen(tail) < sizeof k->path) strcpy(proc, tail);
    }
    return true;
}

/* ---------------------------------------------------------------- the base model's names */

#define AMBIGUOUS (-2)

struct nu_lora_index {
    nu_lora_part part;
    char **names; /* canonical names */
    int n;
    nu_lora_map exact; /* "<path>.weight" -> index into names            */
    nu_lora_map kohya; /* "<path with _>" -> index, or AMBIGUOUS         */
    int ldm_n;         /* UNet layers_per_block for LDM paths (0: none)  */
};

/* Reads "<int>" at s; returns the rest or NULL. */
static const char *read_int(const char *s, int *v) {
    if (*s < '0' || *s > '9') return NULL;
    long x = 0;
    while (*s >= '0' && *s <= '9') {
        x = x * 10 + (*s++ - '0');
        if (x > 100000) return NULL;
    }
    *v = (int)x;
    return s;
}

nu_lora_index *nu_lora_index_new(nu_lora_part part, const char *const *names, int n) {
    nu_lora_index *ix = calloc(1, sizeof *ix);
    if (!ix) return NULL;
    ix->part = part;
    ix->names = calloc((size_t)(n > 0 ? n : 1), sizeof(char *));
    if (!ix->names) goto oom;
    char buf[NU_LORA_MAX_KEY];
    for (int i = 0; i < n; i++) {
        const char *name = names[i];
        size_t len = strlen(name);
        /* UNet layers_per_block: 1 + the largest j of down_blocks.L.resnets.j */
        int L, j;
        const char *s = starts(name, "down_blocks.") ? read_int(name + strlen("down_blocks."), &L) : NULL;
        if (s && starts(s, ".resnets.") && read_int(s + strlen(".resnets."), &j) && j + 1 > ix->ldm_n) ix->ldm_n = j + 1;
        if (!ends(name, len, ".weight") || len >= sizeof buf) continue;
        ix->names[ix->n] = strdup(name);
        if (!ix->names[ix->n]) goto oom;
        int id = ix->n++;
        if (!nu_lora_map_put(&ix->exact, name, id)) goto oom;
        memcpy(buf, name, len - strlen(".weight"));
        buf[len - strlen(".weight")] = '\0';
        for (char *c = buf; *c; c++)
            if (*c == '.') *c = '_';
        int prev = nu_lora_map_get(&ix->kohya, buf);
        if (!nu_lora_map_put(&ix->kohya, buf, prev == -1 ? id : AMBIGUOUS)) goto oom;
    }
    return ix;
oom:
    nu_lora_index_free(ix);
    return NULL;
}

void nu_lora_index_free(nu_lora_index *ix) {
    if (!ix) return;
    for (int i = 0; i < ix->n; i++) free(ix->names[i]);
    free(ix->names);
    nu_lora_map_free(&ix->exact);
    nu_lora_map_free(&ix->kohya);
    free(ix);
}

/* LDM ResBlock parts -> ResnetBlock2D (the layers a LoRA can touch; norms have none). */
static const char *const ldm_resnet[][2] = {
    {"in_layers_2", "conv1"},
    {"out_layers_3", "conv2"},
    {"emb_layers_1", "time_emb_proj"},
    {"skip_connection", "conv_shortcut"},
};

/* Whole LDM paths outside the block lists. */
static const char *const ldm_top[][2] = {
    {"time_embed_0", "time_embedding_linear_1"},
    {"time_embed_2", "time_embedding_linear_2"},
    {"input_blocks_0_0", "conv_in"},
    {"out_2", "conv_out"},
    {"label_emb_0_0", "add_embedding_linear_1"}, /* SDXL */
    {"label_emb_0_2", "add_embedding_linear_2"},
};

static bool map_resnet(const char *base, const char *tail, char *out, size_t len) {
    for (int i = 0; i < COUNT(ldm_resnet); i++)
        if (strcmp(tail, ldm_resnet[i][0]) == 0) return (size_t)snprintf(out, len, "%s_%s", base, ldm_resnet[i][1]) < len;
    return false;
}

/* "<block>_<K>_<S>[_<tail>]" after the block name: K, S and the tail ("" if none). */
static bool read_ks(const char *s, int *K, int *S, const char **tail) {
    if (!(s = read_int(s, K)) || *s++ != '_' || !(s = read_int(s, S))) return false;
    if (*s == '_') s++;
    else if (*s) return false;
    *tail = s;
    return true;
}

/* A '_'-joined LDM UNet path -> the '_'-joined diffusers path, for layers_per_block n. Layout
 * (diffusers convert_ldm_unet_checkpoint): input_blocks.K (K >= 1): level L = (K-1)/(n+1),
 * j = (K-1)%(n+1); j < n: .0 resnet j, .1 attention j; j == n: .0.op the downsampler.
 * middle_block.0/.1/.2: resnet 0, attention 0, resnet 1. output_blocks.K: up block i = K/(n+1),
 * j = K%(n+1) (n+1 resnets): .0 resnet j, .1 attention j, the last .conv the upsampler. */
static bool ldm_to_diffusers(const char *p, int n, char *out, size_t len) {
    for (int i = 0; i < COUNT(ldm_top); i++)
        if (strcmp(p, ldm_top[i][0]) == 0) return (size_t)snprintf(out, len, "%s", ldm_top[i][1]) < len;
    int K, S;
    const char *tail;
    char base[64];
    if (n < 1) return false;
    if (starts(p, "input_blocks_")) {
        if (!read_ks(p + strlen("input_blocks_"), &K, &S, &tail) || K < 1) return false;
        int L = (K - 1) / (n + 1), j = (K - 1) % (n + 1);
        if (j == n)
            return S == 0 && strcmp(tail, "op") == 0 &&
                   (size_t)snprintf(out, len, "down_blocks_%d_downsamplers_0_conv", L) < len;
        if (S == 0) {
            snprintf(base, sizeof base, "down_blocks_%d_resnets_%d", L, j);
            return map_resnet(base, tail, out, len);
        }
        return S == 1 && *tail && (size_t)snprintf(out, len, "down_blocks_%d_attentions_%d_%s", L, j, tail) < len;
    }
    if (starts(p, "middle_block_")) {
        const char *s = read_int(p + strlen("middle_block_"), &S);
        if (!s || *s != '_') return false;
        tail = s + 1;
        if (S == 0 || S == 2) return map_resnet(S == 0 ? "mid_block_resnets_0" : "mid_block_resnets_1", tail, out, len);
        return S == 1 && *tail && (size_t)snprintf(out, len, "mid_block_attentions_0_%s", tail) < len;
    }
    if (starts(p, "output_blocks_")) {
        if (!read_ks(p + strlen("output_blocks_"), &K, &S, &tail)) return false;
        int i = K / (n + 1), j = K % (n + 1);
        if (S == 0) {
            snprintf(base, sizeof base, "up_blocks_%d_resnets_%d", i, j);
            return map_resnet(base, tail, out, len);
        }
        /* the upsampler is .1.conv after a plain resnet, .2.conv after resnet + attention */
        if ((S == 1 || S == 2) && strcmp(tail, "conv") == 0 && j == n)
            return (size_t)snprintf(out, len, "up_blocks_%d_upsamplers_0_conv", i) < len;
        return S == 1 && *tail && (size_t)snprintf(out, len, "up_blocks_%d_attentions_%d_%s", i, j, tail) < len;
    }
    return false;
}

static const char *by_kohya(const nu_lora_index *ix, const char *u) {
    int id = nu_lora_map_get(&ix->kohya, u);
    return id >= 0 ? ix->names[id] : NULL;
}

const char *nu_lora_index_resolve(const nu_lora_index *ix, const nu_lora_key *k) {
    if (k->role == NU_LORA_ROLE_UNKNOWN || !k->path[0]) return NULL;
    if (k->part != NU_LORA_PART_COUNT && k->part != ix->part) return NULL;
    char buf[NU_LORA_MAX_KEY + 32], u[NU_LORA_MAX_KEY];
    if (!k->kohya) { /* a dotted path: the canonical name itself? */
        snprintf(buf, sizeof buf, "%s.weight", k->path);
        int id = nu_lora_map_get(&ix->exact, buf);
        if (id >= 0) return ix->names[id];
    }
    snprintf(u, sizeof u, "%s", k->path);
    for (char *c = u; *c; c++)
        if (*c == '.') *c = '_';
    const char *r = by_kohya(ix, u);
    if (r) return r;
    if (ix->part == NU_LORA_PART_UNET && ldm_to_diffusers(u, ix->ldm_n, buf, sizeof buf)) return by_kohya(ix, buf);
    if (ix->part != NU_LORA_PART_UNET && !starts(u, "text_model_")) { /* HF names without "text_model." */
        snprintf(buf, sizeof buf, "text_model_%s", u);
        return by_kohya(ix, buf);
    }
    return NULL;
}
