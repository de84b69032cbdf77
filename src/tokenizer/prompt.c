/*
 * prompt.c — AUTOMATIC1111 prompt syntax: emphasis weights and 75-token chunking.
 *
 * nu_prompt_parse_attention follows A1111 modules/prompt_parser.py parse_prompt_attention:
 * the prompt is scanned with re_attention's alternatives, in order:
 *     \( \) \[ \] \\ | \ | ( | [ | :\s*([+-]?[.\d]+)\s*\) | ) | ] | [^\\()\[\]:]+ | :
 * an escape appends its character (a lone '\' appends nothing); '(' and '[' push the current
 * position; a weight closes the innermost '(' multiplying everything since it by float(weight);
 * ')' multiplies by 1.1, ']' by 1/1.1; anything else (text, or a bracket with nothing to close)
 * is text, split by re_break = \s*\bBREAK\b\s* into parts with ["BREAK", -1] between them.
 * Unclosed '(' then '[' are applied at the end, and neighbours of equal weight are merged.
 *
 * nu_prompt_encode follows modules/sd_hijack_clip.py (FrozenCLIPEmbedderWithCustomWords
 * tokenize_line / process_tokens) without textual-inversion embeddings: each parsed piece is
 * tokenized on its own; chunks of chunk_len tokens; comma backtracking; BREAK; BOS/EOS; padding.
 * Tested by tests/test_prompt.c (hand-computed expectations; no reference files needed) and
 * fuzz/fuzz_prompt.c.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"

typedef struct seg {
    nu_ustr text;
    double w;
} seg;

typedef struct segs {
    seg *v;
    int n, cap;
    bool oom;
} segs;

static void segs_free(segs *s) {
    for (int i = 0; i < s->n; i++) nu_ustr_free(&s->v[i].text);
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

static void segs_add(segs *s, const uint32_t *t, size_t n, double w) {
    if (s->oom) return;
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        seg *v = realloc(s->v, (size_t)cap * sizeof(seg));
        if (!v) { s->oom = true; return; }
        s->v = v;
        s->cap = cap;
    }
    seg *g = &s->v[s->n++];
    memset(g, 0, sizeof *g);
    g->w = w;
    nu_ustr_append(&g->text, t, n);
    if (g->text.oom) s->oom = true;
}

static void multiply_range(segs *s, int start, double m) {
    for (int p = start; p < s->n; p++) s->v[p].w *= m;
}

/* Python re \w for str (alphanumeric or '_'), with the regex module's L/N classes. */
static bool is_word(uint32_t c) {
    if (c == '_') return true;
    int k = nu_uc_rx_class(c);
    return k == NU_RX_L || k == NU_RX_N || nu_uc_decimal(c) >= 0;
}

/* re.split(r"\s*\bBREAK\b\s*", text) with ["BREAK", -1] between the parts */
static void add_text(segs *s, const uint32_t *v, size_t n) {
    static const uint32_t brk[5] = {'B', 'R', 'E', 'A', 'K'};
    size_t part = 0, search = 0;
    while (search < n) {
        size_t k = search;
        bool found = false;
        for (; k + 5 <= n; k++) {
            if (memcmp(v + k, brk, sizeof brk)) continue;
            if (k > 0 && is_word(v[k - 1])) continue;
            if (k + 5 < n && is_word(v[k + 5])) continue;
            found = true;
            break;
        }
        if (!found) break;
        /* the match starts at the whitespace run before BREAK (not before the last match) */
        size_t a = k;
        while (a > search && nu_uc_is_pyspace(v[a - 1])) a--;
        size_t b = k + 5;
        while (b < n && nu_uc_is_pyspace(v[b])) b++;
        segs_add(s, v + part, a - part, 1.0);
        segs_add(s, brk, 5, -1.0);
        part = search = b;
    }
    segs_add(s, v + part, n - part, 1.0);
}

/* `:\s*([+-]?[.\d]+)\s*\)` at v[i] == ':'. Returns the match length (0: none) and the weight
 * text (ASCII, digits converted) in num; *valid = whether Python's float() accepts it. */
static size_t weight_at(const uint32_t *v, size_t n, size_t i, char *num, size_t cap, bool *valid) {
    size_t k = i + 1;
    while (k < n && nu_uc_is_pyspace(v[k])) k++;
    size_t o = 0;
    if (k < n && (v[k] == '+' || v[k] == '-')) {
        if (o + 1 < cap) num[o++] = (char)v[k];
        k++;
    }
    size_t d0 = k;
    int dots = 0, digits = 0;
    while (k < n && (v[k] == '.' || nu_uc_decimal(v[k]) >= 0)) {
        char ch = v[k] == '.' ? '.' : (char)('0' + nu_uc_decimal(v[k]));
        dots += ch == '.';
        digits += ch != '.';
        if (o + 1 < cap) num[o++] = ch;
        k++;
    }
    if (k == d0) return 0;
    while (k < n && nu_uc_is_pyspace(v[k])) k++;
    if (k >= n || v[k] != ')') return 0;
    num[o] = 0;
    *valid = dots <= 1 && digits > 0 && o + 1 < cap;
    return k + 1 - i;
}

static bool special_char(uint32_t c) { return c == '\\' || c == '(' || c == ')' || c == '[' || c == ']' || c == ':'; }

static nu_status parse_attention(const uint32_t *v, size_t n, segs *res) {
    int *round = NULL, *square = NULL, nr = 0, ns = 0;
    if (n) {
        round = malloc(n * sizeof(int));
        square = malloc(n * sizeof(int));
        if (!round || !square) {
            free(round);
            free(square);
            return nu_error(NU_ERR_NOMEM, "prompt: out of memory");
        }
    }
    const double round_mul = 1.1, square_mul = 1.0 / 1.1;
    size_t i = 0;
    while (i < n) {
        uint32_t c = v[i];
        if (c == '\\') {
            if (i + 1 < n && (v[i + 1] == '(' || v[i + 1] == ')' || v[i + 1] == '[' || v[i + 1] == ']' || v[i + 1] == '\\')) {
                segs_add(res, v + i + 1, 1, 1.0);
                i += 2;
            } else {
                segs_add(res, v, 0, 1.0); /* a lone '\' becomes an empty piece */
                i++;
            }
            continue;
        }
        if (c == '(') { round[nr++] = res->n; i++; continue; }
        if (c == '[') { square[ns++] = res->n; i++; continue; }
        if (c == ':') {
            char num[64];
            bool valid = false;
            size_t m = weight_at(v, n, i, num, sizeof num, &valid);
            if (m && nr > 0) {
                if (!valid) {
                    free(round);
                    free(square);
                    return nu_error(NU_ERR_INVALID_ARG, "prompt: invalid emphasis weight '%s' at character %zu", num, i + 1);
                }
                multiply_range(res, round[--nr], strtod(num, NULL));
                i += m;
                continue;
            }
            if (m) { add_text(res, v + i, m); i += m; continue; } /* no '(' to close: text */
            add_text(res, v + i, 1);
            i++;
            continue;
        }
        if (c == ')') {
            if (nr > 0) multiply_range(res, round[--nr], round_mul);
            else add_text(res, v + i, 1);
            i++;
            continue;
        }
        if (c == ']') {
            if (ns > 0) multiply_range(res, square[--ns], square_mul);
            else add_text(res, v + i, 1);
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && !special_char(v[j])) j++;
        add_text(res, v + i, j - i);
        i = j;
    }
    for (int k = 0; k < nr; k++) multiply_range(res, round[k], round_mul);
    for (int k = 0; k < ns; k++) multiply_range(res, square[k], square_mul);
    free(round);
    free(square);
    if (res->n == 0) segs_add(res, v, 0, 1.0);
    /* merge runs of identical weights */
    int w = 0;
    for (int k = 0; k < res->n; k++) {
        if (w > 0 && res->v[w - 1].w == res->v[k].w) {
            nu_ustr_append(&res->v[w - 1].text, res->v[k].text.v, res->v[k].text.n);
            if (res->v[w - 1].text.oom) res->oom = true;
            nu_ustr_free(&res->v[k].text);
        } else {
            res->v[w++] = res->v[k];
        }
    }
    res->n = w;
    if (res->oom) return nu_error(NU_ERR_NOMEM, "prompt: out of memory");
    return NU_OK;
}

static char *to_utf8(const nu_ustr *s) {
    char *o = malloc(s->n * 4 + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) k += (size_t)nu_utf8_put(s->v[i], (uint8_t *)o + k);
    o[k] = 0;
    return o;
}

nu_status nu_prompt_parse_attention(const char *prompt, nu_prompt_segment **out, int *n_out) {
    if (!prompt || !out || !n_out) return nu_error(NU_ERR_INVALID_ARG, "nu_prompt_parse_attention: NULL argument");
    *out = NULL;
    *n_out = 0;
    size_t len = strlen(prompt);
    if (len > (16u << 20)) return nu_error(NU_ERR_INVALID_ARG, "prompt: longer than 16 MiB");
    nu_ustr u = {0};
    nu_ustr_from_utf8(&u, prompt, len);
    if (u.oom) { nu_ustr_free(&u); return nu_error(NU_ERR_NOMEM, "prompt: out of memory"); }
    segs res = {0};
    nu_status st = parse_attention(u.v, u.n, &res);
    nu_ustr_free(&u);
    if (st != NU_OK) { segs_free(&res); return st; }
    nu_prompt_segment *o = calloc((size_t)res.n, sizeof *o);
    if (!o) { segs_free(&res); return nu_error(NU_ERR_NOMEM, "prompt: out of memory"); }
    for (int i = 0; i < res.n; i++) {
        o[i].text = to_utf8(&res.v[i].text);
        o[i].weight = res.v[i].w;
        if (!o[i].text) {
            nu_prompt_segments_free(o, i);
            segs_free(&res);
            return nu_error(NU_ERR_NOMEM, "prompt: out of memory");
        }
    }
    *out = o;
    *n_out = res.n;
    segs_free(&res);
    return NU_OK;
}

void nu_prompt_segments_free(nu_prompt_segment *segs_, int n) {
    if (!segs_) return;
    for (int i = 0; i < n; i++) free(segs_[i].text);
    free(segs_);
}

void nu_prompt_params_init(nu_prompt_params *p) {
    p->chunk_len = 75;
    p->comma_backtrack = 20;
    p->parse_attention = true;
}

/* ------------------------------------------------------------------ chunking */

typedef struct chunker {
    const nu_clip_tokenizer *t;
    int L; /* chunk_len */
    int32_t *tok;
    double *mul;
    int n; /* tokens in the current chunk (<= L) */
    int last_comma;
    int token_count;
    nu_prompt_chunks *out;
    int cap_chunks;
    bool oom;
} chunker;

static void next_chunk(chunker *c, bool is_last) {
    c->token_count += is_last ? c->n : c->L;
    nu_prompt_chunks *o = c->out;
    int T = c->L + 2;
    if (o->n_chunks == c->cap_chunks) {
        int cap = c->cap_chunks ? c->cap_chunks * 2 : 4;
        int32_t *ids = realloc(o->ids, (size_t)cap * (size_t)T * sizeof(int32_t));
        if (ids) o->ids = ids;
        float *w = realloc(o->weights, (size_t)cap * (size_t)T * sizeof(float));
        if (w) o->weights = w;
        if (!ids || !w) { c->oom = true; return; }
        c->cap_chunks = cap;
    }
    int32_t *ids = o->ids + (size_t)o->n_chunks * (size_t)T;
    float *w = o->weights + (size_t)o->n_chunks * (size_t)T;
    int32_t bos = nu_clip_tokenizer_bos(c->t), eos = nu_clip_tokenizer_eos(c->t), pad = nu_clip_tokenizer_pad(c->t);
    ids[0] = bos;
    w[0] = 1.0f;
    for (int i = 0; i < c->L; i++) {
        ids[1 + i] = i < c->n ? c->tok[i] : eos; /* padded with the end token */
        w[1 + i] = i < c->n ? (float)c->mul[i] : 1.0f;
    }
    ids[T - 1] = eos;
    w[T - 1] = 1.0f;
    if (pad != eos) { /* process_tokens: after the first end token, the pad id */
        int k = 0;
        while (k < T && ids[k] != eos) k++;
        for (int i = k + 1; i < T; i++) ids[i] = pad;
    }
    o->n_chunks++;
    c->n = 0;
    c->last_comma = -1;
}

nu_status nu_prompt_encode(const nu_clip_tokenizer *t, const char *prompt, const nu_prompt_params *p,
                           nu_prompt_chunks *out) {
    if (!t || !prompt || !out) return nu_error(NU_ERR_INVALID_ARG, "nu_prompt_encode: NULL argument");
    memset(out, 0, sizeof *out);
    nu_prompt_params def;
    if (!p) {
        nu_prompt_params_init(&def);
        p = &def;
    }
    if (p->chunk_len < 1 || p->chunk_len > 4096 || p->comma_backtrack < 0)
        return nu_error(NU_ERR_INVALID_ARG, "nu_prompt_encode: chunk_len must be 1..4096, comma_backtrack >= 0");
    nu_prompt_segment *sg = NULL;
    int ns = 0;
    nu_status st;
    if (p->parse_attention) {
        st = nu_prompt_parse_attention(prompt, &sg, &ns);
        if (st != NU_OK) return st;
    } else {
        sg = calloc(1, sizeof *sg);
        if (sg) sg[0].text = strdup(prompt);
        if (!sg || !sg[0].text) { free(sg); return nu_error(NU_ERR_NOMEM, "prompt: out of memory"); }
        sg[0].weight = 1.0;
        ns = 1;
    }
    chunker c = {0};
    c.t = t;
    c.L = p->chunk_len;
    c.last_comma = -1;
    c.out = out;
    out->chunk_tokens = p->chunk_len + 2;
    c.tok = malloc((size_t)c.L * sizeof(int32_t));
    c.mul = malloc((size_t)c.L * sizeof(double));
    if (!c.tok || !c.mul) c.oom = true;
    int32_t comma = nu_clip_tokenizer_find(t, ",</w>");
    st = NU_OK;
    for (int s = 0; s < ns && !c.oom && st == NU_OK; s++) {
        int32_t *ids = NULL;
        int n = 0;
        st = nu_clip_tokenize(t, sg[s].text, &ids, &n);
        if (st != NU_OK) break;
        if (!strcmp(sg[s].text, "BREAK") && sg[s].weight == -1) {
            free(ids);
            next_chunk(&c, false);
            continue;
        }
        for (int pos = 0; pos < n && !c.oom; pos++) {
            int32_t tk = ids[pos];
            if (tk == comma) {
                c.last_comma = c.n;
            } else if (p->comma_backtrack != 0 && c.n == c.L && c.last_comma != -1 &&
                       c.n - c.last_comma <= p->comma_backtrack) {
                /* move the tokens after the last comma into the next chunk */
                int brk = c.last_comma + 1, nr = c.n - brk;
                int32_t *rt = malloc((size_t)(nr ? nr : 1) * sizeof(int32_t));
                double *rm = malloc((size_t)(nr ? nr : 1) * sizeof(double));
                if (!rt || !rm) { free(rt); free(rm); c.oom = true; break; }
                memcpy(rt, c.tok + brk, (size_t)nr * sizeof(int32_t));
                memcpy(rm, c.mul + brk, (size_t)nr * sizeof(double));
                c.n = brk;
                next_chunk(&c, false);
                memcpy(c.tok, rt, (size_t)nr * sizeof(int32_t));
                memcpy(c.mul, rm, (size_t)nr * sizeof(double));
                c.n = nr;
                free(rt);
                free(rm);
            }
            if (c.n == c.L) next_chunk(&c, false);
            if (c.oom) break;
            c.tok[c.n] = tk;
            c.mul[c.n] = sg[s].weight;
            c.n++;
        }
        free(ids);
    }
    if (st == NU_OK && !c.oom && (c.n > 0 || out->n_chunks == 0)) next_chunk(&c, true);
    out->token_count = c.token_count;
    free(c.tok);
    free(c.mul);
    nu_prompt_segments_free(sg, ns);
    if (st == NU_OK && c.oom) st = nu_error(NU_ERR_NOMEM, "prompt: out of memory");
    if (st != NU_OK) nu_prompt_chunks_free(out);
    return st;
}

void nu_prompt_chunks_free(nu_prompt_chunks *c) {
    if (!c) return;
    free(c->ids);
    free(c->weights);
    memset(c, 0, sizeof *c);
}
