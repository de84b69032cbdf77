/*
 * clip_bpe.c — CLIP's byte-level BPE tokenizer: vocabulary loading (openai's
 * bpe_simple_vocab_16e6.txt.gz or a Hugging Face vocab.json + merges.txt), text cleaning per
 * nu_clip_norm (src/tokenizer/unicode.c), the pre-tokenizer, byte encoding and BPE merging.
 *
 * Behaviour matched (openai/CLIP clip/simple_tokenizer.py; transformers 4.30 CLIPTokenizer):
 *   - bytes_to_unicode(): printable bytes map to themselves, the other 68 to U+0100 + n;
 *   - openai ids: the 256 byte characters in that order, the same + "</w>", one token per merge
 *     line (1 .. 48894 after the header), then <|startoftext|>, <|endoftext|>; a later duplicate
 *     string takes the id (dict(zip(vocab, range))). HF ids: vocab.json. Merge ranks: line order,
 *     a repeated pair keeps its last rank, at most 49152-256-2 merges are read;
 *   - bpe(): the word's bytes with "</w>" on the last one; repeatedly merge every occurrence (left
 *     to right) of the adjacent pair of lowest rank; "<|startoftext|>"/"<|endoftext|>" words are
 *     the special ids (the bpe cache entries); a final symbol missing from the vocabulary becomes
 *     the unknown token (<|endoftext|>) as in transformers.
 * Every file is untrusted: sizes are capped, UTF-8 and JSON validated, ids bounded.
 * Tested by tests/test_tokenizer.c (reference cases, hostile inputs) and fuzz/fuzz_prompt.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "nuance/io.h"
#include "tokenizer/tokenizer_internal.h"

#define MAX_FILE_BYTES ((size_t)64 << 20) /* vocab.json / merges text (real ones: ~1.5 MB) */
#define MAX_MERGES (49152 - 256 - 2)      /* both implementations slice merges[1:48895]     */
#define MAX_ID (1 << 24)

typedef struct entry {
    uint32_t off, len; /* string in pool */
    int32_t id;        /* -1: not in the vocabulary (a merge result HF's vocab.json lacks) */
} entry;

typedef struct merge {
    uint64_t key; /* (a << 32) | b, entry indices; 0 = empty slot (a pair (0,0) is stored +1) */
    int32_t rank, result;
} merge;

struct nu_clip_tokenizer {
    char *pool;
    size_t pool_n, pool_cap;
    entry *ents;
    int n_ents, cap_ents;
    int32_t *hash; /* entry index or -1 */
    uint32_t hash_cap;
    merge *merges;
    uint32_t merge_cap, n_merges;
    int32_t base[256], base_eow[256]; /* entries of each byte's symbol, without / with </w> */
    int32_t *id_ent;                  /* id -> entry (for nu_clip_tokenizer_token) */
    int n_ids;
    int32_t bos, eos, pad, unk;
    char pad_str[64];
    bool pad_special;
    nu_clip_norm norm;
    bool oom;
};

/* bytes_to_unicode() of CLIP: byte -> codepoint, and the order of the first 256 vocab entries */
static void byte_encoder(uint32_t map[256], int order[256]) {
    int n = 0, extra = 0;
    bool printable[256] = {false};
    for (int b = 0; b < 256; b++) printable[b] = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    for (int b = 0; b < 256; b++)
        if (printable[b]) { map[b] = (uint32_t)b; order[n++] = b; }
    for (int b = 0; b < 256; b++)
        if (!printable[b]) { map[b] = 256u + (uint32_t)extra++; order[n++] = b; }
}

/* ------------------------------------------------------------------ interning */

static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static bool rehash(nu_clip_tokenizer *t, uint32_t cap) {
    int32_t *h = malloc((size_t)cap * sizeof(int32_t));
    if (!h) return false;
    for (uint32_t i = 0; i < cap; i++) h[i] = -1;
    for (int e = 0; e < t->n_ents; e++) {
        uint32_t k = hash_bytes(t->pool + t->ents[e].off, t->ents[e].len) & (cap - 1);
        while (h[k] >= 0) k = (k + 1) & (cap - 1);
        h[k] = e;
    }
    free(t->hash);
    t->hash = h;
    t->hash_cap = cap;
    return true;
}

static int32_t lookup(const nu_clip_tokenizer *t, const char *s, size_t n) {
    if (!t->hash_cap) return -1;
    uint32_t k = hash_bytes(s, n) & (t->hash_cap - 1);
    while (t->hash[k] >= 0) {
        const entry *e = &t->ents[t->hash[k]];
        if (e->len == n && !memcmp(t->pool + e->off, s, n)) return t->hash[k];
        k = (k + 1) & (t->hash_cap - 1);
    }
    return -1;
}

/* Entry index of string s[0..n), added (id -1) when new; -1 on allocation failure. */
static int32_t intern(nu_clip_tokenizer *t, const char *s, size_t n) {
    int32_t e = lookup(t, s, n);
    if (e >= 0) return e;
    if (n > 1u << 20) { t->oom = true; return -1; }
    if ((uint32_t)(t->n_ents + 1) * 2 > t->hash_cap && !rehash(t, t->hash_cap ? t->hash_cap * 2 : 1024)) {
        t->oom = true;
        return -1;
    }
    if (t->n_ents == t->cap_ents) {
        int cap = t->cap_ents ? t->cap_ents * 2 : 1024;
        entry *ne = realloc(t->ents, (size_t)cap * sizeof(entry));
        if (!ne) { t->oom = true; return -1; }
        t->ents = ne;
        t->cap_ents = cap;
    }
    if (t->pool_n + n + 1 > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 4096;
        while (cap < t->pool_n + n + 1) cap *= 2;
        char *np = realloc(t->pool, cap);
        if (!np) { t->oom = true; return -1; }
        t->pool = np;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_n, s, n);
    t->pool[t->pool_n + n] = 0; /* NUL-terminated for nu_clip_tokenizer_token */
    entry *en = &t->ents[t->n_ents];
    en->off = (uint32_t)t->pool_n;
    en->len = (uint32_t)n;
    en->id = -1;
    t->pool_n += n + 1;
    int32_t idx = t->n_ents++;
    uint32_t k = hash_bytes(s, n) & (t->hash_cap - 1);
    while (t->hash[k] >= 0) k = (k + 1) & (t->hash_cap - 1);
    t->hash[k] = idx;
    return idx;
}

static bool set_id(nu_clip_tokenizer *t, int32_t ent, int64_t id) {
    if (id < 0 || id >= MAX_ID) return false;
    if (id >= t->n_ids) {
        int n = t->n_ids ? t->n_ids : 1024;
        while (n <= id) n *= 2;
        int32_t *m = realloc(t->id_ent, (size_t)n * sizeof(int32_t));
        if (!m) { t->oom = true; return false; }
        for (int i = t->n_ids; i < n; i++) m[i] = -1;
        t->id_ent = m;
        t->n_ids = n;
    }
    t->ents[ent].id = (int32_t)id; /* a later duplicate wins, as in a Python dict */
    t->id_ent[id] = ent;
    return true;
}

/* ------------------------------------------------------------------ merges */

static merge *merge_slot(const nu_clip_tokenizer *t, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    uint32_t k = (uint32_t)(h >> 32) & (t->merge_cap - 1);
    while (t->merges[k].key && t->merges[k].key != key) k = (k + 1) & (t->merge_cap - 1);
    return &t->merges[k];
}

static uint64_t merge_key(int32_t a, int32_t b) { return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1; }

static bool add_merge(nu_clip_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t result) {
    if ((t->n_merges + 1) * 2 > t->merge_cap) {
        uint32_t cap = t->merge_cap ? t->merge_cap * 2 : 1024;
        merge *old = t->merges;
        uint32_t oldcap = t->merge_cap;
        t->merges = calloc(cap, sizeof(merge));
        if (!t->merges) { t->merges = old; t->oom = true; return false; }
        t->merge_cap = cap;
        for (uint32_t i = 0; i < oldcap; i++)
            if (old[i].key) *merge_slot(t, old[i].key) = old[i];
        free(old);
    }
    merge *m = merge_slot(t, merge_key(a, b));
    if (!m->key) t->n_merges++;
    m->key = merge_key(a, b);
    m->rank = rank; /* dict(zip(merges, range(...))): a repeated pair keeps its last rank */
    m->result = result;
    return true;
}

static const merge *find_merge(const nu_clip_tokenizer *t, int32_t a, int32_t b) {
    if (!t->merge_cap) return NULL;
    const merge *m = merge_slot(t, merge_key(a, b));
    return m->key ? m : NULL;
}

/* ------------------------------------------------------------------ loading */

static bool valid_utf8(const char *p, size_t n) {
    nu_ustr tmp = {0};
    nu_ustr_from_utf8(&tmp, p, n);
    /* nu_ustr_from_utf8 replaces errors by U+FFFD: re-encode and compare lengths byte-exactly */
    size_t bytes = 0;
    uint8_t buf[4];
    for (size_t i = 0; i < tmp.n; i++) bytes += (size_t)nu_utf8_put(tmp.v[i], buf);
    bool ok = !tmp.oom && bytes == n;
    if (ok) { /* a literal U+FFFD in valid input re-encodes to 3 bytes too: compare content */
        size_t o = 0;
        for (size_t i = 0; i < tmp.n && ok; i++) {
            int k = nu_utf8_put(tmp.v[i], buf);
            ok = !memcmp(buf, p + o, (size_t)k);
            o += (size_t)k;
        }
    }
    nu_ustr_free(&tmp);
    return ok;
}

/* The 512 byte symbols (used by every word) */
static bool add_base_symbols(nu_clip_tokenizer *t) {
    uint32_t map[256];
    int order[256];
    byte_encoder(map, order);
    for (int b = 0; b < 256; b++) {
        uint8_t buf[8];
        int k = nu_utf8_put(map[b], buf);
        memcpy(buf + k, "</w>", 4);
        t->base[b] = intern(t, (const char *)buf, (size_t)k);
        t->base_eow[b] = intern(t, (const char *)buf, (size_t)k + 4);
        if (t->base[b] < 0 || t->base_eow[b] < 0) return false;
    }
    return true;
}

static bool is_split_space(const char *p, size_t n, size_t i, size_t *w) {
    /* Python str.split(): any str.isspace() character */
    uint8_t c = (uint8_t)p[i];
    if (c < 0x80) { *w = 1; return nu_uc_is_pyspace(c); }
    nu_ustr tmp = {0};
    size_t k = 1;
    while (i + k < n && ((uint8_t)p[i + k] & 0xC0) == 0x80 && k < 4) k++;
    nu_ustr_from_utf8(&tmp, p + i, k);
    bool sp = tmp.n == 1 && nu_uc_is_pyspace(tmp.v[0]);
    nu_ustr_free(&tmp);
    *w = k;
    return sp;
}

/* Parses the merges text. openai_ids: also append each merge's string to the id list, as
 * SimpleTokenizer builds its vocabulary. `next_id` counts ids so assigned. */
static nu_status parse_merges(nu_clip_tokenizer *t, const char *text, size_t len, bool hf_strip, bool openai_ids,
                              int64_t *next_id, const char *label) {
    if (!valid_utf8(text, len)) return nu_error(NU_ERR_FORMAT, "%s: merges text is not valid UTF-8", label);
    size_t a = 0, b = len;
    if (hf_strip) { /* merges_handle.read().strip() */
        size_t w;
        while (a < b && is_split_space(text, b, a, &w)) a += w;
        while (b > a) {
            size_t s = b - 1;
            while (s > a && ((uint8_t)text[s] & 0xC0) == 0x80) s--;
            if (!is_split_space(text, b, s, &w)) break;
            b = s;
        }
    }
    /* split('\n'): line 0 is the header */
    size_t pos = a;
    int line = 0, rank = 0;
    char *buf = NULL;
    size_t buf_cap = 0;
    while (pos <= b && rank < MAX_MERGES) {
        size_t end = pos;
        while (end < b && text[end] != '\n') end++;
        if (line > 0) {
            /* parts = line.split() */
            size_t starts[3], lens[3];
            int np = 0;
            size_t i = pos, w;
            while (i < end) {
                if (is_split_space(text, end, i, &w)) { i += w; continue; }
                size_t s = i;
                while (i < end && !is_split_space(text, end, i, &w)) i += w;
                if (np < 3) { starts[np] = s; lens[np] = i - s; }
                np++;
            }
            if (np != 2) {
                /* Python keeps such a line: ''.join(parts) still takes an id in SimpleTokenizer's
                 * vocabulary and its rank, but a tuple that is not a pair never matches. */
                if (openai_ids) {
                    size_t need = end - pos, k = 0;
                    if (need + 1 > buf_cap) {
                        char *nb = realloc(buf, need + 64);
                        if (!nb) { free(buf); return nu_error(NU_ERR_NOMEM, "%s: out of memory", label); }
                        buf = nb;
                        buf_cap = need + 64;
                    }
                    for (size_t q = pos; q < end;) {
                        if (is_split_space(text, end, q, &w)) { q += w; continue; }
                        buf[k++] = text[q++];
                    }
                    int32_t ej = intern(t, buf, k);
                    if (ej < 0 || !set_id(t, ej, (*next_id)++)) {
                        free(buf);
                        return nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
                    }
                }
                rank++;
                line++;
                if (end >= b) break;
                pos = end + 1;
                continue;
            }
            size_t need = lens[0] + lens[1];
            if (need > buf_cap) {
                char *nb = realloc(buf, need + 64);
                if (!nb) { free(buf); return nu_error(NU_ERR_NOMEM, "%s: out of memory", label); }
                buf = nb;
                buf_cap = need + 64;
            }
            memcpy(buf, text + starts[0], lens[0]);
            memcpy(buf + lens[0], text + starts[1], lens[1]);
            int32_t ea = intern(t, text + starts[0], lens[0]);
            int32_t eb = intern(t, text + starts[1], lens[1]);
            int32_t er = intern(t, buf, need);
            if (ea < 0 || eb < 0 || er < 0 || !add_merge(t, ea, eb, rank, er)) {
                free(buf);
                return nu_error(NU_ERR_NOMEM, "%s: out of memory reading merges", label);
            }
            if (openai_ids && !set_id(t, er, (*next_id)++)) {
                free(buf);
                return nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
            }
            rank++;
        }
        line++;
        if (end >= b) break;
        pos = end + 1;
    }
    free(buf);
    if (rank == 0) return nu_error(NU_ERR_FORMAT, "%s: no merges found (expected a header line, then \"a b\" pairs)", label);
    return NU_OK;
}

static nu_status parse_vocab_json(nu_clip_tokenizer *t, const char *text, size_t len, const char *label) {
    nu_json *j = nu_json_parse(text, len);
    if (!j) {
        char why[512];
        snprintf(why, sizeof why, "%s", nu_last_error()); /* nu_error writes the same buffer */
        return nu_error(NU_ERR_FORMAT, "%s: vocab.json: %s", label, why);
    }
    if (j->kind != NU_JSON_OBJECT || j->n == 0) {
        nu_json_free(j);
        return nu_error(NU_ERR_FORMAT, "%s: vocab.json must be a non-empty object of token -> id", label);
    }
    for (int i = 0; i < j->n; i++) {
        const nu_json *v = &j->items[i];
        const char *key = j->keys[i];
        double d = v->num;
        if (v->kind != NU_JSON_NUMBER || !(d >= 0 && d < MAX_ID) || d != (double)(int64_t)d) {
            nu_error(NU_ERR_FORMAT, "%s: vocab.json: token %.40s has an invalid id (need an integer 0..%d)", label, key,
                     MAX_ID - 1);
            nu_json_free(j);
            return NU_ERR_FORMAT;
        }
        int32_t e = intern(t, key, strlen(key));
        if (e < 0 || !set_id(t, e, (int64_t)d)) {
            nu_json_free(j);
            return nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
        }
    }
    nu_json_free(j);
    return NU_OK;
}

static nu_status finish(nu_clip_tokenizer *t, const char *label) {
    int32_t s = lookup(t, "<|startoftext|>", 15), e = lookup(t, "<|endoftext|>", 13);
    if (s < 0 || e < 0 || t->ents[s].id < 0 || t->ents[e].id < 0)
        return nu_error(NU_ERR_FORMAT, "%s: the vocabulary lacks <|startoftext|> or <|endoftext|>", label);
    t->bos = t->ents[s].id;
    t->eos = t->unk = t->pad = t->ents[e].id;
    snprintf(t->pad_str, sizeof t->pad_str, "%s", "<|endoftext|>");
    t->pad_special = false;
    return NU_OK;
}

nu_status nu_clip_tokenizer_load_memory(const char *vocab_json, size_t vocab_len, const char *merges, size_t merges_len,
                                        const char *label, nu_clip_tokenizer **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_clip_tokenizer_load_memory: NULL out");
    *out = NULL;
    if (!label) label = "CLIP vocabulary";
    if (!merges) return nu_error(NU_ERR_INVALID_ARG, "%s: no merges text", label);
    if (merges_len > MAX_FILE_BYTES || vocab_len > MAX_FILE_BYTES)
        return nu_error(NU_ERR_FORMAT, "%s: larger than the 64 MiB limit for a vocabulary", label);
    nu_clip_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
    nu_status st = NU_OK;
    if (!add_base_symbols(t)) { st = nu_error(NU_ERR_NOMEM, "%s: out of memory", label); goto fail; }
    if (vocab_json) {
        t->norm = NU_CLIP_NORM_HF;
        st = parse_vocab_json(t, vocab_json, vocab_len, label);
        if (st != NU_OK) goto fail;
        st = parse_merges(t, merges, merges_len, true, false, NULL, label);
        if (st != NU_OK) goto fail;
    } else {
        /* SimpleTokenizer: vocab = byte chars, + '</w>', merges, specials; ids by position */
        t->norm = NU_CLIP_NORM_OPENAI;
        uint32_t map[256];
        int order[256];
        byte_encoder(map, order);
        int64_t next = 0;
        for (int i = 0; i < 256; i++) set_id(t, t->base[order[i]], next++);
        for (int i = 0; i < 256; i++) set_id(t, t->base_eow[order[i]], next++);
        st = parse_merges(t, merges, merges_len, false, true, &next, label);
        if (st != NU_OK) goto fail;
        int32_t s = intern(t, "<|startoftext|>", 15);
        int32_t e = s >= 0 ? intern(t, "<|endoftext|>", 13) : -1;
        if (e < 0 || !set_id(t, s, next) || !set_id(t, e, next + 1)) {
            st = nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
            goto fail;
        }
    }
    if (t->oom) { st = nu_error(NU_ERR_NOMEM, "%s: out of memory", label); goto fail; }
    st = finish(t, label);
    if (st != NU_OK) goto fail;
    *out = t;
    return NU_OK;
fail:
    nu_clip_tokenizer_free(t);
    return st;
}

void nu_clip_tokenizer_free(nu_clip_tokenizer *t) {
    if (!t) return;
    free(t->pool);
    free(t->ents);
    free(t->hash);
    free(t->merges);
    free(t->id_ent);
    free(t);
}

/* Reads a whole file (at most MAX_FILE_BYTES), inflating gzip/zlib data when `inflate_gz` and the
 * file starts with the gzip magic. */
static nu_status read_file(const char *path, bool inflate_gz, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return nu_error(errno == ENOENT ? NU_ERR_NOT_FOUND : NU_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) { fclose(f); return nu_error(NU_ERR_NOMEM, "%s: out of memory", path); }
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_FILE_BYTES) {
                free(buf);
                fclose(f);
                return nu_error(NU_ERR_FORMAT, "%s: larger than the 64 MiB limit for a vocabulary file", path);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); fclose(f); return nu_error(NU_ERR_NOMEM, "%s: out of memory", path); }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) { free(buf); return nu_error(NU_ERR_IO, "%s: read error", path); }
    if (inflate_gz && n >= 2 && (uint8_t)buf[0] == 0x1F && (uint8_t)buf[1] == 0x8B) {
        z_stream z;
        memset(&z, 0, sizeof z);
        if (inflateInit2(&z, 15 + 32) != Z_OK) { free(buf); return nu_error(NU_ERR_NOMEM, "%s: zlib init failed", path); }
        size_t ocap = 1 << 20, on = 0;
        char *o = malloc(ocap);
        int zr = Z_OK;
        z.next_in = (Bytef *)buf;
        z.avail_in = (uInt)n;
        while (o && zr != Z_STREAM_END) {
            if (on == ocap) {
                if (ocap >= MAX_FILE_BYTES) break;
                char *no = realloc(o, ocap * 2);
                if (!no) { free(o); o = NULL; break; }
                o = no;
                ocap *= 2;
            }
            z.next_out = (Bytef *)(o + on);
            z.avail_out = (uInt)(ocap - on);
            zr = inflate(&z, Z_NO_FLUSH);
            on = ocap - z.avail_out;
            if (zr != Z_OK && zr != Z_STREAM_END) break;
            if (zr == Z_OK && z.avail_in == 0 && z.avail_out != 0) break; /* truncated */
        }
        inflateEnd(&z);
        free(buf);
        if (!o) return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
        if (zr != Z_STREAM_END) {
            free(o);
            return nu_error(NU_ERR_FORMAT, "%s: corrupt or truncated gzip data (or over 64 MiB inflated)", path);
        }
        buf = o;
        n = on;
    }
    *data = buf;
    *len = n;
    return NU_OK;
}

static bool is_dir(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}
static bool is_file(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}
static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

#define VOCAB_HELP                                                                                       \
    "pass --vocab with openai CLIP's bpe_simple_vocab_16e6.txt.gz or a Hugging Face tokenizer folder "  \
    "(vocab.json + merges.txt, e.g. a diffusers model's tokenizer/)"

/* pad_token of a HF folder: special_tokens_map.json overrides tokenizer_config.json (as
 * transformers' from_pretrained applies them); a string or {"content": ...}. */
static void read_pad_token(const char *dir, char *pad, size_t cap) {
    static const char *const files[] = {"tokenizer_config.json", "special_tokens_map.json"};
    pad[0] = 0;
    for (int i = 0; i < 2; i++) {
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, files[i]) >= sizeof path || !is_file(path)) continue;
        char *txt;
        size_t n;
        if (read_file(path, false, &txt, &n) != NU_OK) continue;
        nu_json *j = nu_json_parse(txt, n);
        free(txt);
        if (!j) continue;
        const nu_json *p = nu_json_get(j, "pad_token");
        const char *s = NULL;
        if (p && p->kind == NU_JSON_STRING) s = p->str;
        else if (p && p->kind == NU_JSON_OBJECT) s = nu_json_string(p, "content", NULL);
        if (s && strlen(s) < cap) snprintf(pad, cap, "%s", s);
        nu_json_free(j);
    }
}

static nu_status load_hf(const char *dir, const char *vocab_path, const char *merges_path, nu_clip_tokenizer **out) {
    char *vj = NULL, *mg = NULL;
    size_t vn = 0, mn = 0;
    nu_status st = read_file(vocab_path, false, &vj, &vn);
    if (st == NU_OK) st = read_file(merges_path, false, &mg, &mn);
    if (st == NU_OK) st = nu_clip_tokenizer_load_memory(vj, vn, mg, mn, vocab_path, out);
    free(vj);
    free(mg);
    if (st != NU_OK) return st;
    char pad[64];
    read_pad_token(dir, pad, sizeof pad);
    if (pad[0] && strcmp(pad, "<|endoftext|>")) {
        st = nu_clip_tokenizer_set_pad(*out, pad);
        if (st != NU_OK) {
            nu_clip_tokenizer_free(*out);
            *out = NULL;
            return nu_error(st, "%s: pad_token '%s' of its tokenizer config is not in the vocabulary", dir, pad);
        }
    }
    return NU_OK;
}

static nu_status load_openai(const char *path, nu_clip_tokenizer **out) {
    char *txt;
    size_t n;
    nu_status st = read_file(path, true, &txt, &n);
    if (st != NU_OK) return st;
    st = nu_clip_tokenizer_load_memory(NULL, 0, txt, n, path, out);
    free(txt);
    return st;
}

nu_status nu_clip_tokenizer_load(const char *path, nu_clip_tokenizer **out) {
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_clip_tokenizer_load: NULL out");
    *out = NULL;
    if (!path || !*path) return nu_error(NU_ERR_NOT_FOUND, "no CLIP vocabulary given: " VOCAB_HELP);
    char a[4096], b[4096];
    if (is_dir(path)) {
        static const char *const sub[] = {"", "/tokenizer"};
        for (int i = 0; i < 2; i++) {
            char dir[4096];
            if ((size_t)snprintf(dir, sizeof dir, "%s%s", path, sub[i]) >= sizeof dir) break;
            if ((size_t)snprintf(a, sizeof a, "%s/vocab.json", dir) >= sizeof a) break;
            if ((size_t)snprintf(b, sizeof b, "%s/merges.txt", dir) >= sizeof b) break;
            if (is_file(a) && is_file(b)) return load_hf(dir, a, b, out);
        }
        if ((size_t)snprintf(a, sizeof a, "%s/bpe_simple_vocab_16e6.txt.gz", path) < sizeof a && is_file(a))
            return load_openai(a, out);
        return nu_error(NU_ERR_NOT_FOUND, "%s: no CLIP vocabulary in this folder (no vocab.json + merges.txt, "
                        "tokenizer/, or bpe_simple_vocab_16e6.txt.gz): " VOCAB_HELP, path);
    }
    if (!is_file(path)) return nu_error(NU_ERR_NOT_FOUND, "%s: CLIP vocabulary not found: " VOCAB_HELP, path);
    /* the folder of the file, for a partner file and the tokenizer configs */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    if (ends_with(path, "vocab.json") || ends_with(path, ".json")) {
        if ((size_t)snprintf(b, sizeof b, "%s/merges.txt", dir) >= sizeof b || !is_file(b))
            return nu_error(NU_ERR_NOT_FOUND, "%s: merges.txt not found beside it: " VOCAB_HELP, path);
        return load_hf(dir, path, b, out);
    }
    if (ends_with(path, "merges.txt")) {
        if ((size_t)snprintf(a, sizeof a, "%s/vocab.json", dir) < sizeof a && is_file(a)) return load_hf(dir, a, path, out);
        return load_openai(path, out); /* ids built as SimpleTokenizer builds them */
    }
    return load_openai(path, out); /* .txt.gz or plain merges text */
}

/* ------------------------------------------------------------------ settings */

void nu_clip_tokenizer_set_norm(nu_clip_tokenizer *t, nu_clip_norm norm) {
    if (t && norm >= 0 && norm < NU_CLIP_NORM_COUNT) t->norm = norm;
}
nu_clip_norm nu_clip_tokenizer_norm(const nu_clip_tokenizer *t) { return t->norm; }

nu_status nu_clip_tokenizer_set_pad(nu_clip_tokenizer *t, const char *pad_token) {
    if (!t || !pad_token || !*pad_token || strlen(pad_token) >= sizeof t->pad_str)
        return nu_error(NU_ERR_INVALID_ARG, "nu_clip_tokenizer_set_pad: empty or over-long token");
    int32_t e = lookup(t, pad_token, strlen(pad_token));
    if (e < 0 || t->ents[e].id < 0) return nu_error(NU_ERR_NOT_FOUND, "pad token '%s' is not in the CLIP vocabulary", pad_token);
    t->pad = t->ents[e].id;
    snprintf(t->pad_str, sizeof t->pad_str, "%s", pad_token);
    t->pad_special = strcmp(pad_token, "<|endoftext|>") && strcmp(pad_token, "<|startoftext|>");
    return NU_OK;
}

int nu_clip_tokenizer_vocab_size(const nu_clip_tokenizer *t) {
    int n = 0;
    for (int i = 0; i < t->n_ids; i++)
        if (t->id_ent[i] >= 0) n = i + 1;
    return n;
}
int32_t nu_clip_tokenizer_bos(const nu_clip_tokenizer *t) { return t->bos; }
int32_t nu_clip_tokenizer_eos(const nu_clip_tokenizer *t) { return t->eos; }
int32_t nu_clip_tokenizer_pad(const nu_clip_tokenizer *t) { return t->pad; }

int32_t nu_clip_tokenizer_find(const nu_clip_tokenizer *t, const char *token) {
    if (!t || !token) return -1;
    int32_t e = lookup(t, token, strlen(token));
    return e >= 0 ? t->ents[e].id : -1;
}

const char *nu_clip_tokenizer_token(const nu_clip_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_ids || t->id_ent[id] < 0) return NULL;
    return t->pool + t->ents[t->id_ent[id]].off;
}

/* ------------------------------------------------------------------ encoding */

typedef struct ids_buf {
    int32_t *v;
    int n, cap;
    bool oom;
} ids_buf;

static void ids_push(ids_buf *b, int32_t id) {
    if (b->oom) return;
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 64;
        int32_t *v = realloc(b->v, (size_t)cap * sizeof(int32_t));
        if (!v) { b->oom = true; return; }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = id;
}

static int32_t ent_id(const nu_clip_tokenizer *t, int32_t e) { return e >= 0 && t->ents[e].id >= 0 ? t->ents[e].id : t->unk; }

/* bpe() of one pre-token given as UTF-8 bytes; appends ids */
static void bpe_word(const nu_clip_tokenizer *t, const uint8_t *w, size_t n, ids_buf *out) {
    if (n == 0) return;
    if ((n == 15 && !memcmp(w, "<|startoftext|>", 15)) || (n == 13 && !memcmp(w, "<|endoftext|>", 13))) {
        ids_push(out, ent_id(t, lookup(t, (const char *)w, n))); /* the bpe cache's specials */
        return;
    }
    int32_t stack_sym[64];
    int32_t *sym = n <= 64 ? stack_sym : malloc(n * sizeof(int32_t));
    if (!sym) { out->oom = true; return; }
    size_t m = n;
    for (size_t i = 0; i < n; i++) sym[i] = i + 1 < n ? t->base[w[i]] : t->base_eow[w[i]];
    while (m > 1) {
        int32_t best = INT32_MAX, ba = -1, bb = -1, res = -1;
        for (size_t i = 0; i + 1 < m; i++) {
            const merge *mg = find_merge(t, sym[i], sym[i + 1]);
            if (mg && mg->rank < best) { best = mg->rank; ba = sym[i]; bb = sym[i + 1]; res = mg->result; }
        }
        if (ba < 0) break;
        size_t o = 0;
        for (size_t i = 0; i < m;) {
            if (i + 1 < m && sym[i] == ba && sym[i + 1] == bb) { sym[o++] = res; i += 2; }
            else sym[o++] = sym[i++];
        }
        m = o;
    }
    for (size_t i = 0; i < m; i++) ids_push(out, ent_id(t, sym[i]));
    if (sym != stack_sym) free(sym);
}

/* Cleans one piece per t->norm into s (in place). */
static void clean_piece(const nu_clip_tokenizer *t, nu_ustr *s) {
    if (t->norm == NU_CLIP_NORM_HF_NOFTFY) {
        nu_uc_basic_tokenize(s);
        return;
    }
    nu_uc_ftfy_fix_text(s);
    if (t->norm == NU_CLIP_NORM_OPENAI) {
        nu_uc_html_unescape(s);
        nu_uc_html_unescape(s);
    }
    nu_uc_whitespace_clean(s);
    nu_uc_lower(s);
}

/* _tokenize of one (non-special) piece of UTF-8 text */
static void tokenize_piece(const nu_clip_tokenizer *t, const char *p, size_t len, ids_buf *out) {
    nu_ustr s = {0};
    nu_ustr_from_utf8(&s, p, len);
    clean_piece(t, &s);
    if (s.oom) { out->oom = true; nu_ustr_free(&s); return; }
    size_t pos = 0, a, b;
    uint8_t stack_buf[256];
    while (nu_uc_pretok_next(s.v, s.n, &pos, &a, &b)) {
        size_t cap = (b - a) * 4;
        uint8_t *w = cap <= sizeof stack_buf ? stack_buf : malloc(cap);
        if (!w) { out->oom = true; break; }
        size_t n = 0;
        for (size_t i = a; i < b; i++) n += (size_t)nu_utf8_put(s.v[i], w + n);
        bpe_word(t, w, n, out);
        if (w != stack_buf) free(w);
    }
    nu_ustr_free(&s);
}

/* HF: the special (no-split) tokens found in the raw text, leftmost first. */
static const char *next_special(const nu_clip_tokenizer *t, const char *p, size_t len, size_t *at, size_t *slen) {
    const char *sp[3] = {"<|startoftext|>", "<|endoftext|>", t->pad_special ? t->pad_str : NULL};
    for (size_t i = 0; i < len; i++) {
        for (int k = 0; k < 3; k++) {
            if (!sp[k]) continue;
            size_t L = strlen(sp[k]);
            if (i + L <= len && !memcmp(p + i, sp[k], L)) {
                *at = i;
                *slen = L;
                return sp[k];
            }
        }
    }
    return NULL;
}

static nu_status tokenize_all(const nu_clip_tokenizer *t, const char *text, size_t len, ids_buf *out) {
    if (t->norm != NU_CLIP_NORM_OPENAI) {
        size_t pos = 0;
        while (pos <= len) {
            size_t at, sl;
            const char *sp = next_special(t, text + pos, len - pos, &at, &sl);
            size_t end = sp ? pos + at : len;
            if (end > pos) tokenize_piece(t, text + pos, end - pos, out);
            if (!sp) break;
            ids_push(out, ent_id(t, lookup(t, sp, sl)));
            pos = end + sl;
        }
    } else {
        tokenize_piece(t, text, len, out);
    }
    if (out->oom) return nu_error(NU_ERR_NOMEM, "CLIP tokenizer: out of memory");
    return NU_OK;
}

nu_status nu_clip_tokenize_n(const nu_clip_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n) {
    if (!t || !text || !ids || !n) return nu_error(NU_ERR_INVALID_ARG, "nu_clip_tokenize: NULL argument");
    *ids = NULL;
    *n = 0;
    if (len > (64u << 20)) return nu_error(NU_ERR_INVALID_ARG, "nu_clip_tokenize: text over 64 MiB");
    ids_buf b = {0};
    nu_status st = tokenize_all(t, text, len, &b);
    if (st != NU_OK) { free(b.v); return st; }
    *ids = b.v;
    *n = b.n;
    return NU_OK;
}

nu_status nu_clip_tokenize(const nu_clip_tokenizer *t, const char *text, int32_t **ids, int *n) {
    return nu_clip_tokenize_n(t, text, text ? strlen(text) : 0, ids, n);
}

nu_status nu_clip_encode_padded_n(const nu_clip_tokenizer *t, const char *text, size_t len, int max_len, int32_t *out) {
    if (!out || max_len < 2) return nu_error(NU_ERR_INVALID_ARG, "nu_clip_encode_padded: max_len must be >= 2");
    int32_t *ids;
    int n;
    nu_status st = nu_clip_tokenize_n(t, text, len, &ids, &n);
    if (st != NU_OK) return st;
    int k = n < max_len - 2 ? n : max_len - 2;
    out[0] = t->bos;
    for (int i = 0; i < k; i++) out[1 + i] = ids[i];
    out[1 + k] = t->eos;
    for (int i = 2 + k; i < max_len; i++) out[i] = t->pad;
    free(ids);
    return NU_OK;
}

nu_status nu_clip_encode_padded(const nu_clip_tokenizer *t, const char *text, int max_len, int32_t *out) {
    return nu_clip_encode_padded_n(t, text, text ? strlen(text) : 0, max_len, out);
}

nu_status nu_clip_normalize(const nu_clip_tokenizer *t, const char *text, char **out) {
    if (!t || !text || !out) return nu_error(NU_ERR_INVALID_ARG, "nu_clip_normalize: NULL argument");
    *out = NULL;
    nu_ustr all = {0};
    size_t len = strlen(text), pos = 0;
    while (pos <= len) {
        size_t at = 0, sl = 0;
        const char *sp = t->norm != NU_CLIP_NORM_OPENAI ? next_special(t, text + pos, len - pos, &at, &sl) : NULL;
        size_t end = sp ? pos + at : len;
        nu_ustr s = {0};
        nu_ustr_from_utf8(&s, text + pos, end - pos);
        clean_piece(t, &s);
        if (s.n && all.n) nu_ustr_push(&all, ' ');
        nu_ustr_append(&all, s.v, s.n);
        if (s.oom) all.oom = true;
        nu_ustr_free(&s);
        if (!sp) break;
        if (all.n) nu_ustr_push(&all, ' ');
        nu_ustr_from_utf8(&all, sp, sl);
        pos = end + sl;
    }
    char *o = all.oom ? NULL : malloc(all.n * 4 + 1);
    if (!o) { nu_ustr_free(&all); return nu_error(NU_ERR_NOMEM, "nu_clip_normalize: out of memory"); }
    size_t k = 0;
    for (size_t i = 0; i < all.n; i++) k += (size_t)nu_utf8_put(all.v[i], (uint8_t *)o + k);
    o[k] = 0;
    nu_ustr_free(&all);
    *out = o;
    return NU_OK;
}
