/*
 * json.c — bounded JSON DOM parser (RFC 8259) for safetensors headers and model configs.
 *
 * Recursive descent with a depth limit (64), an input size limit and a node-count limit, so a
 * hostile document cannot exhaust the stack or amplify into unbounded memory. Strings are
 * validated as UTF-8 and unescaped (\uXXXX surrogate pairs combined into UTF-8; lone surrogates
 * are errors); numbers are checked against the JSON grammar and then converted with strtod_l in
 * the "C" locale on a bounded copy. Extensions: a leading UTF-8 BOM is skipped and the literals
 * NaN, Infinity and -Infinity (which Python's json module writes) are accepted.
 * Errors return NULL and set nu_last_error() to "JSON: <problem> at byte <offset>".
 *
 * Tested by tests/test_json.c (grammar, escapes, limits, malformed input) and fuzz/fuzz_json.c.
 */
#define _GNU_SOURCE /* strtod_l */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "nuance/io.h"

#define JSON_MAX_DEPTH 64
#define JSON_MAX_BYTES ((size_t)1 << 30)   /* 1 GiB of text          */
#define JSON_MAX_NODES (8 * 1024 * 1024)   /* ~450 MB of DOM at most */
#define JSON_MAX_NUMBER_CHARS 1024

typedef struct parser {
    const char *s;
    size_t len, pos;
    size_t nodes;
    bool failed;
} parser;

static void *fail(parser *p, nu_status st, const char *what) {
    if (!p->failed) {
        p->failed = true;
        nu_error(st, "JSON: %s at byte %zu", what, p->pos);
    }
    return NULL;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static bool match_lit(parser *p, const char *lit) {
    size_t n = strlen(lit);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, lit, n) != 0) return false;
    p->pos += n;
    return true;
}

/* ---------------------------------------------------------------- strings */

static int hex4(const char *s) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if invalid (overlong,
 * surrogate, > U+10FFFF, truncated). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t k;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) { k = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { k = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { k = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < k) return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k;
}

/* Parses the string starting at the opening quote; *out gets a malloc'd NUL-terminated copy. */
static bool parse_string(parser *p, char **out, size_t *out_len) {
    p->pos++; /* opening quote */
    /* The unescaped string is never longer than the escaped text: find the closing quote first. */
    size_t start = p->pos, end = start;
    while (end < p->len && p->s[end] != '"') end += (p->s[end] == '\\') ? 2 : 1;
    if (end >= p->len) { p->pos = p->len; fail(p, NU_ERR_FORMAT, "unterminated string"); return false; }
    char *buf = malloc(end - start + 1);
    if (!buf) { fail(p, NU_ERR_NOMEM, "out of memory"); return false; }
    size_t o = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) { free(buf); fail(p, NU_ERR_FORMAT, "control character in string"); return false; }
        if (c != '\\') {
            size_t k = utf8_seq((const unsigned char *)p->s + p->pos, end - p->pos);
            if (!k) { free(buf); fail(p, NU_ERR_FORMAT, "invalid UTF-8 in string"); return false; }
            memcpy(buf + o, p->s + p->pos, k);
            o += k;
            p->pos += k;
            continue;
        }
        char e = p->s[p->pos + 1]; /* in bounds: end > pos+1 because of the scan above */
        const char *bad = NULL;
        switch (e) {
        case '"': buf[o++] = '"'; break;
        case '\\': buf[o++] = '\\'; break;
        case '/': buf[o++] = '/'; break;
        case 'b': buf[o++] = '\b'; break;
        case 'f': buf[o++] = '\f'; break;
        case 'n': buf[o++] = '\n'; break;
        case 'r': buf[o++] = '\r'; break;
        case 't': buf[o++] = '\t'; break;
        case 'u': {
            int hi = end - p->pos >= 6 ? hex4(p->s + p->pos + 2) : -1;
            if (hi < 0) { bad = "bad \\u escape"; break; }
            uint32_t cp = (uint32_t)hi;
            if (hi >= 0xDC00 && hi <= 0xDFFF) { bad = "lone low surrogate in \\u escape"; break; }
            if (hi >= 0xD800 && hi <= 0xDBFF) {
                int lo = -1;
                if (end - p->pos >= 12 && p->s[p->pos + 6] == '\\' && p->s[p->pos + 7] == 'u')
                    lo = hex4(p->s + p->pos + 8);
                if (lo < 0xDC00 || lo > 0xDFFF) { bad = "lone high surrogate in \\u escape"; break; }
                cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
                p->pos += 6;
            }
            o += put_utf8(buf + o, cp); /* \uXXXX (6 bytes) -> at most 3; a pair (12) -> 4 */
            p->pos += 4;
            break;
        }
        default: bad = "bad escape in string"; break;
        }
        if (bad) { free(buf); fail(p, NU_ERR_FORMAT, bad); return false; }
        p->pos += 2;
    }
    buf[o] = 0;
    p->pos = end + 1;
    *out = buf;
    *out_len = o;
    return true;
}

/* ---------------------------------------------------------------- numbers */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void make_c_locale(void) { c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0); }

static double to_double(const char *s) {
    pthread_once(&c_locale_once, make_c_locale);
    if (c_locale) return strtod_l(s, NULL, c_locale);
    return strtod(s, NULL);
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool parse_number(parser *p, double *out) {
    size_t i = p->pos, n = p->len;
    const char *s = p->s;
    if (i < n && s[i] == '-') i++;
    if (i < n && s[i] == '0') i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9') { while (i < n && is_digit(s[i])) i++; }
    else { fail(p, NU_ERR_FORMAT, "bad number"); return false; }
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || !is_digit(s[i])) { p->pos = i; fail(p, NU_ERR_FORMAT, "bad number fraction"); return false; }
        while (i < n && is_digit(s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || !is_digit(s[i])) { p->pos = i; fail(p, NU_ERR_FORMAT, "bad number exponent"); return false; }
        while (i < n && is_digit(s[i])) i++;
    }
    size_t k = i - p->pos;
    if (k > JSON_MAX_NUMBER_CHARS) { fail(p, NU_ERR_FORMAT, "number too long"); return false; }
    char buf[JSON_MAX_NUMBER_CHARS + 1];
    memcpy(buf, s + p->pos, k);
    buf[k] = 0;
    *out = to_double(buf); /* overflow gives +-HUGE_VAL (inf), as Python's json does */
    p->pos = i;
    return true;
}

/* ---------------------------------------------------------------- values */

static void free_children(nu_json *j);

static bool parse_value(parser *p, nu_json *v, int depth);

/* Growable child list used while parsing one container. */
typedef struct childvec {
    nu_json *items;
    char **keys;
    int n, cap;
} childvec;

static bool childvec_push(parser *p, childvec *cv, bool with_keys) {
    if (cv->n == cv->cap) {
        int cap = cv->cap ? cv->cap * 2 : 4;
        nu_json *it = realloc(cv->items, (size_t)cap * sizeof *it);
        if (!it) { fail(p, NU_ERR_NOMEM, "out of memory"); return false; }
        cv->items = it;
        if (with_keys) {
            char **k = realloc(cv->keys, (size_t)cap * sizeof *k);
            if (!k) { fail(p, NU_ERR_NOMEM, "out of memory"); return false; }
            cv->keys = k;
        }
        cv->cap = cap;
    }
    memset(&cv->items[cv->n], 0, sizeof cv->items[0]);
    if (with_keys) cv->keys[cv->n] = NULL;
    cv->n++;
    return true;
}

static void childvec_free(childvec *cv) {
    for (int i = 0; i < cv->n; i++) {
        free_children(&cv->items[i]);
        if (cv->keys) free(cv->keys[i]);
    }
    free(cv->items);
    free(cv->keys);
}

static bool parse_container(parser *p, nu_json *v, int depth, bool is_obj) {
    char close = is_obj ? '}' : ']';
    childvec cv = {0};
    p->pos++; /* '[' or '{' */
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
    } else {
        for (;;) {
            if (cv.n == 0x7fffffff - 1) { fail(p, NU_ERR_NOMEM, "too many items"); goto err; }
            if (!childvec_push(p, &cv, is_obj)) goto err;
            if (is_obj) {
                skip_ws(p);
                if (p->pos >= p->len || p->s[p->pos] != '"') { fail(p, NU_ERR_FORMAT, "expected string key"); goto err; }
                size_t klen;
                size_t kpos = p->pos;
                if (!parse_string(p, &cv.keys[cv.n - 1], &klen)) goto err;
                if (strlen(cv.keys[cv.n - 1]) != klen) {
                    p->pos = kpos;
                    fail(p, NU_ERR_FORMAT, "object key contains \\u0000");
                    goto err;
                }
                skip_ws(p);
                if (p->pos >= p->len || p->s[p->pos] != ':') { fail(p, NU_ERR_FORMAT, "expected ':'"); goto err; }
                p->pos++;
            }
            if (!parse_value(p, &cv.items[cv.n - 1], depth + 1)) goto err;
            skip_ws(p);
            if (p->pos >= p->len) { fail(p, NU_ERR_FORMAT, is_obj ? "unterminated object" : "unterminated array"); goto err; }
            char c = p->s[p->pos];
            if (c == ',') { p->pos++; continue; }
            if (c == close) { p->pos++; break; }
            fail(p, NU_ERR_FORMAT, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
            goto err;
        }
    }
    v->kind = is_obj ? NU_JSON_OBJECT : NU_JSON_ARRAY;
    v->n = cv.n;
    /* shrink to fit (a failed shrink keeps the larger block) */
    if (cv.n > 0 && cv.n < cv.cap) {
        nu_json *it = realloc(cv.items, (size_t)cv.n * sizeof *it);
        if (it) cv.items = it;
        if (is_obj) {
            char **k = realloc(cv.keys, (size_t)cv.n * sizeof *k);
            if (k) cv.keys = k;
        }
    }
    v->items = cv.items;
    v->keys = cv.keys;
    return true;
err:
    childvec_free(&cv);
    return false;
}

static bool parse_value(parser *p, nu_json *v, int depth) {
    memset(v, 0, sizeof *v);
    if (depth > JSON_MAX_DEPTH) { fail(p, NU_ERR_FORMAT, "nesting deeper than 64"); return false; }
    if (++p->nodes > JSON_MAX_NODES) { fail(p, NU_ERR_NOMEM, "too many values"); return false; }
    skip_ws(p);
    if (p->pos >= p->len) { fail(p, NU_ERR_FORMAT, "unexpected end of input"); return false; }
    char c = p->s[p->pos];
    switch (c) {
    case '{': return parse_container(p, v, depth, true);
    case '[': return parse_container(p, v, depth, false);
    case '"':
        v->kind = NU_JSON_STRING;
        return parse_string(p, &v->str, &v->str_len);
    case 't':
        if (!match_lit(p, "true")) break;
        v->kind = NU_JSON_BOOL;
        v->b = true;
        return true;
    case 'f':
        if (!match_lit(p, "false")) break;
        v->kind = NU_JSON_BOOL;
        return true;
    case 'n':
        if (!match_lit(p, "null")) break;
        v->kind = NU_JSON_NULL;
        return true;
    case 'N':
        if (!match_lit(p, "NaN")) break;
        v->kind = NU_JSON_NUMBER;
        v->num = NAN;
        return true;
    case 'I':
        if (!match_lit(p, "Infinity")) break;
        v->kind = NU_JSON_NUMBER;
        v->num = INFINITY;
        return true;
    default:
        if (c == '-' && match_lit(p, "-Infinity")) {
            v->kind = NU_JSON_NUMBER;
            v->num = -INFINITY;
            return true;
        }
        if (c == '-' || is_digit(c)) {
            v->kind = NU_JSON_NUMBER;
            return parse_number(p, &v->num);
        }
        break;
    }
    fail(p, NU_ERR_FORMAT, "unexpected character");
    return false;
}

static void free_children(nu_json *j) {
    if (j->kind == NU_JSON_STRING) free(j->str);
    if (j->kind == NU_JSON_ARRAY || j->kind == NU_JSON_OBJECT) {
        for (int i = 0; i < j->n; i++) {
            free_children(&j->items[i]);
            if (j->keys) free(j->keys[i]);
        }
        free(j->items);
        free(j->keys);
    }
}

/* ---------------------------------------------------------------- public API */

nu_json *nu_json_parse(const char *text, size_t len) {
    if (!text && len) { nu_error(NU_ERR_INVALID_ARG, "JSON: NULL text"); return NULL; }
    if (len > JSON_MAX_BYTES) { nu_error(NU_ERR_NOMEM, "JSON: document of %zu bytes exceeds the 1 GiB limit", len); return NULL; }
    parser p = {.s = text, .len = len};
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) p.pos = 3;
    nu_json *root = malloc(sizeof *root);
    if (!root) { nu_error(NU_ERR_NOMEM, "JSON: out of memory"); return NULL; }
    if (!parse_value(&p, root, 1)) { free(root); return NULL; }
    skip_ws(&p);
    if (p.pos != p.len) {
        fail(&p, NU_ERR_FORMAT, "trailing characters after the value");
        nu_json_free(root);
        return NULL;
    }
    return root;
}

void nu_json_free(nu_json *j) {
    if (!j) return;
    free_children(j);
    free(j);
}

const nu_json *nu_json_get(const nu_json *obj, const char *key) {
    if (!obj || obj->kind != NU_JSON_OBJECT || !key) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

const nu_json *nu_json_at(const nu_json *arr, int i) {
    if (!arr || (arr->kind != NU_JSON_ARRAY && arr->kind != NU_JSON_OBJECT) || i < 0 || i >= arr->n) return NULL;
    return &arr->items[i];
}

double nu_json_number(const nu_json *obj, const char *key, double dflt) {
    const nu_json *v = nu_json_get(obj, key);
    return v && v->kind == NU_JSON_NUMBER ? v->num : dflt;
}

const char *nu_json_string(const nu_json *obj, const char *key, const char *dflt) {
    const nu_json *v = nu_json_get(obj, key);
    return v && v->kind == NU_JSON_STRING ? v->str : dflt;
}

bool nu_json_bool(const nu_json *obj, const char *key, bool dflt) {
    const nu_json *v = nu_json_get(obj, key);
    return v && v->kind == NU_JSON_BOOL ? v->b : dflt;
}

nu_status nu_json_load_file(const char *path, nu_json **out) {
    *out = NULL;
    nu_file_map m;
    nu_status s = nu_file_map_open(path, &m);
    if (s != NU_OK) return s;
    if (m.size > ((size_t)64 << 20)) {
        nu_file_map_close(&m);
        return nu_error(NU_ERR_FORMAT, "%s: too large for a config file", path);
    }
    nu_json *j = nu_json_parse((const char *)m.data, m.size);
    nu_file_map_close(&m);
    if (!j) return nu_error(NU_ERR_FORMAT, "%s: %s", path, nu_last_error());
    if (j->kind != NU_JSON_OBJECT) {
        nu_json_free(j);
        return nu_error(NU_ERR_FORMAT, "%s: not a JSON object", path);
    }
    *out = j;
    return NU_OK;
}
