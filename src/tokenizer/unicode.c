/*
 * unicode.c — the text normalisation the CLIP tokenizers run before BPE, written to give the same
 * codepoints as the Python reference implementations:
 *   - UTF-32 strings (nu_ustr) and UTF-8 conversion;
 *   - str.isspace, str.lower (full mappings + Final_Sigma), unicodedata.normalize('NFC'),
 *     re.sub(r'\s+', ' ', s).strip(), html.unescape (Python 3.11 html module);
 *   - the parts of ftfy 6.1 fix_text (default TextFixerConfig) that apply to prompts: HTML entity
 *     unescaping ("auto": skipped once a line contains '<'), mojibake repair (chardata is_bad,
 *     re-decoding through the single-byte CHARMAP_ENCODINGS incl. restore_byte_a0,
 *     replace_lossy_sequences and utf-8-variants, decode_inconsistent_utf8, C1 controls),
 *     Latin ligatures, character width, curly quotes, line breaks, terminal escapes, control
 *     characters, NFC; repeated until nothing changes, one line at a time;
 *   - the scanner equivalent of CLIP's pre-tokenizer regex.
 * The tables come from scripts/gen_unicode_tables.py (unicode_data.h: Unicode 14.0 as in Python
 * 3.11's unicodedata/str.lower; the regex module's own tables for \p{L}, \p{N}, \s).
 * Tested by tests/test_tokenizer.c against ../shared/reference/tokenizer/cases.json and by its
 * unit tests of each transform.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer_internal.h"
#include "tokenizer/unicode_data.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------ strings */

void nu_ustr_free(nu_ustr *s) {
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

static bool ustr_reserve(nu_ustr *s, size_t need) {
    if (s->oom) return false;
    if (need <= s->cap) return true;
    size_t cap = s->cap ? s->cap : 16;
    while (cap < need) {
        if (cap > ((size_t)1 << 40)) { s->oom = true; return false; }
        cap *= 2;
    }
    uint32_t *v = realloc(s->v, cap * sizeof(uint32_t));
    if (!v) { s->oom = true; return false; }
    s->v = v;
    s->cap = cap;
    return true;
}

void nu_ustr_push(nu_ustr *s, uint32_t c) {
    if (!ustr_reserve(s, s->n + 1)) return;
    s->v[s->n++] = c;
}

void nu_ustr_append(nu_ustr *s, const uint32_t *v, size_t n) {
    if (!n || !ustr_reserve(s, s->n + n)) return;
    memcpy(s->v + s->n, v, n * sizeof(uint32_t));
    s->n += n;
}

void nu_ustr_assign(nu_ustr *s, const uint32_t *v, size_t n) {
    s->n = 0;
    nu_ustr_append(s, v, n);
}

void nu_ustr_swap(nu_ustr *a, nu_ustr *b) {
    nu_ustr t = *a;
    *a = *b;
    *b = t;
}

static void ustr_append_utf8z(nu_ustr *s, const char *z) { nu_ustr_from_utf8(s, z, strlen(z)); }

void nu_ustr_from_utf8(nu_ustr *s, const char *p, size_t len) {
    const uint8_t *b = (const uint8_t *)p;
    size_t i = 0;
    while (i < len) {
        uint8_t c = b[i];
        if (c < 0x80) { nu_ustr_push(s, c); i++; continue; }
        int need;
        uint32_t cp, lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) { need = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2; cp = c & 0x0F;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F; /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3; cp = c & 0x07;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else { nu_ustr_push(s, 0xFFFD); i++; continue; }
        size_t j = i + 1;
        int k = 0;
        for (; k < need && j < len; k++, j++) {
            uint8_t d = b[j];
            if (d < lo || d > hi) break;
            lo = 0x80; hi = 0xBF;
            cp = (cp << 6) | (d & 0x3F);
        }
        if (k < need) { nu_ustr_push(s, 0xFFFD); i = j; continue; } /* maximal invalid subpart */
        nu_ustr_push(s, cp);
        i = j;
    }
}

int nu_utf8_put(uint32_t c, uint8_t *buf) {
    if (c < 0x80) { buf[0] = (uint8_t)c; return 1; }
    if (c < 0x800) { buf[0] = (uint8_t)(0xC0 | (c >> 6)); buf[1] = (uint8_t)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        buf[0] = (uint8_t)(0xE0 | (c >> 12)); buf[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        buf[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    buf[0] = (uint8_t)(0xF0 | (c >> 18)); buf[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    buf[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F)); buf[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------ table lookups */

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t c) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < r[mid][0]) hi = mid;
        else if (c > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

static bool in_list(const uint32_t *v, size_t n, uint32_t c) {
    for (size_t i = 0; i < n; i++)
        if (v[i] == c) return true;
    return false;
}

bool nu_uc_is_pyspace(uint32_t c) {
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
    return in_list(uc_py_space, COUNT(uc_py_space), c);
}

int nu_uc_rx_class(uint32_t c) {
    if (in_ranges(uc_regex_L, COUNT(uc_regex_L), c)) return NU_RX_L;
    if (in_ranges(uc_regex_N, COUNT(uc_regex_N), c)) return NU_RX_N;
    if (in_ranges(uc_regex_S, COUNT(uc_regex_S), c)) return NU_RX_SKIP;
    if (in_list(uc_regex_none, COUNT(uc_regex_none), c)) return NU_RX_SKIP;
    return NU_RX_OTHER;
}

int nu_uc_decimal(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') ? (int)(c - '0') : -1;
    size_t lo = 0, hi = COUNT(uc_decimal);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < uc_decimal[mid][0]) hi = mid;
        else if (c > uc_decimal[mid][1]) lo = mid + 1;
        else return (int)((c - uc_decimal[mid][0]) % 10);
    }
    return -1;
}

bool nu_uc_rx_letter_eq(uint32_t c, char x) {
    if (c == (uint32_t)x || c == (uint32_t)(x - 'a' + 'A')) return true;
    for (size_t i = 0; i < COUNT(uc_regex_fold); i++)
        if (uc_regex_fold[i][0] == c) return uc_regex_fold[i][1] == (uint32_t)x;
    return false;
}

static int ccc_of(uint32_t c) {
    if (c < 0x300) return 0;
    size_t lo = 0, hi = COUNT(uc_ccc);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < uc_ccc[mid][0]) hi = mid;
        else if (c > uc_ccc[mid][1]) lo = mid + 1;
        else return (int)uc_ccc[mid][2];
    }
    return 0;
}

/* ------------------------------------------------------------------ str.lower */

static uint32_t lower_one(uint32_t c, uint32_t *extra, int *n_extra) {
    *n_extra = 0;
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    for (size_t i = 0; i < COUNT(uc_lower_multi); i++) {
        if (uc_lower_multi[i].cp == c) {
            for (int k = 1; k < 3 && uc_lower_multi[i].to[k]; k++) extra[(*n_extra)++] = uc_lower_multi[i].to[k];
            return uc_lower_multi[i].to[0];
        }
    }
    /* Runs may interleave (step 2), so scan them all; prompts are short. */
    for (size_t i = 0; i < COUNT(uc_lower_runs); i++) {
        const int32_t *r = uc_lower_runs[i];
        if ((int64_t)c < r[0] || (int64_t)c > r[1]) continue;
        if (((int64_t)c - r[0]) % r[3]) continue;
        return (uint32_t)((int64_t)c + r[2]);
    }
    return c;
}

void nu_uc_lower(nu_ustr *s) {
    nu_ustr out = {0};
    for (size_t i = 0; i < s->n; i++) {
        uint32_t c = s->v[i];
        if (c == 0x3A3) {
            /* Final_Sigma (Python's handle_capital_sigma): cased, case-ignorable*, Σ, and not
             * followed by case-ignorable* cased. Reads the original string. */
            size_t j = i;
            uint32_t p = 0;
            bool found = false;
            while (j > 0) {
                p = s->v[--j];
                if (!in_ranges(uc_case_ignorable, COUNT(uc_case_ignorable), p)) { found = true; break; }
            }
            bool fin = found && in_ranges(uc_cased, COUNT(uc_cased), p);
            if (fin) {
                size_t k = i + 1;
                while (k < s->n && in_ranges(uc_case_ignorable, COUNT(uc_case_ignorable), s->v[k])) k++;
                fin = k == s->n || !in_ranges(uc_cased, COUNT(uc_cased), s->v[k]);
            }
            nu_ustr_push(&out, fin ? 0x3C2 : 0x3C3);
            continue;
        }
        uint32_t extra[2];
        int ne;
        nu_ustr_push(&out, lower_one(c, extra, &ne));
        for (int k = 0; k < ne; k++) nu_ustr_push(&out, extra[k]);
    }
    if (out.oom) s->oom = true;
    nu_ustr_swap(s, &out);
    nu_ustr_free(&out);
}

/* ------------------------------------------------------------------ NFC (UAX #15) */

#define HANGUL_S 0xAC00u
#define HANGUL_L 0x1100u
#define HANGUL_V 0x1161u
#define HANGUL_T 0x11A7u
#define HANGUL_NV 21u
#define HANGUL_NT 28u
#define HANGUL_NS (19u * 21u * 28u)

static const uint32_t *decomp_of(uint32_t c) {
    size_t lo = 0, hi = COUNT(uc_decomp);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < uc_decomp[mid][0]) hi = mid;
        else if (c > uc_decomp[mid][0]) lo = mid + 1;
        else return uc_decomp[mid];
    }
    return NULL;
}

static void decompose(nu_ustr *out, uint32_t c, int depth) {
    if (c >= HANGUL_S && c < HANGUL_S + HANGUL_NS) {
        uint32_t si = c - HANGUL_S;
        nu_ustr_push(out, HANGUL_L + si / (HANGUL_NV * HANGUL_NT));
        nu_ustr_push(out, HANGUL_V + (si % (HANGUL_NV * HANGUL_NT)) / HANGUL_NT);
        if (si % HANGUL_NT) nu_ustr_push(out, HANGUL_T + si % HANGUL_NT);
        return;
    }
    const uint32_t *d = c >= 0xC0 && depth < 8 ? decomp_of(c) : NULL;
    if (!d) { nu_ustr_push(out, c); return; }
    decompose(out, d[1], depth + 1);
    if (d[2]) decompose(out, d[2], depth + 1);
}

static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a >= HANGUL_L && a < HANGUL_L + 19 && b >= HANGUL_V && b < HANGUL_V + HANGUL_NV)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_NV + (b - HANGUL_V)) * HANGUL_NT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_NS && (a - HANGUL_S) % HANGUL_NT == 0 && b > HANGUL_T &&
        b < HANGUL_T + HANGUL_NT)
        return a + (b - HANGUL_T);
    size_t lo = 0, hi = COUNT(uc_comp);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (a < uc_comp[mid][0] || (a == uc_comp[mid][0] && b < uc_comp[mid][1])) hi = mid;
        else if (a > uc_comp[mid][0] || b > uc_comp[mid][1]) lo = mid + 1;
        else return uc_comp[mid][2];
    }
    return 0;
}

/* canonical decomposition + canonical ordering (NFD) into d */
static void nfd_into(const nu_ustr *s, nu_ustr *d) {
    for (size_t i = 0; i < s->n; i++) decompose(d, s->v[i], 0);
    if (d->oom) return;
    for (size_t i = 1; i < d->n; i++) {
        int cc = ccc_of(d->v[i]);
        if (!cc) continue;
        size_t j = i;
        uint32_t c = d->v[i];
        while (j > 0) {
            int pc = ccc_of(d->v[j - 1]);
            if (pc <= cc || pc == 0) break;
            d->v[j] = d->v[j - 1];
            j--;
        }
        d->v[j] = c;
    }
}

void nu_uc_nfc(nu_ustr *s) {
    bool ascii = true;
    for (size_t i = 0; i < s->n && ascii; i++) ascii = s->v[i] < 0x80;
    if (ascii) return;
    nu_ustr d = {0};
    nfd_into(s, &d);
    if (d.oom) { s->oom = true; nu_ustr_free(&d); return; }
    /* canonical composition */
    if (d.n) {
        size_t starter = 0, w = 1;
        int last = ccc_of(d.v[0]) ? 256 : 0;
        for (size_t i = 1; i < d.n; i++) {
            uint32_t c = d.v[i];
            int cc = ccc_of(c);
            uint32_t comp = compose_pair(d.v[starter], c);
            if (comp && (last < cc || last == 0)) {
                d.v[starter] = comp;
                continue;
            }
            if (cc == 0) starter = w;
            last = cc;
            d.v[w++] = c;
        }
        d.n = w;
    }
    nu_ustr_swap(s, &d);
    nu_ustr_free(&d);
}

/* ------------------------------------------------------------------ whitespace_clean */

void nu_uc_whitespace_clean(nu_ustr *s) {
    size_t w = 0;
    bool pending = false;
    for (size_t i = 0; i < s->n; i++) {
        if (nu_uc_is_pyspace(s->v[i])) { pending = true; continue; }
        if (pending && w > 0) s->v[w++] = ' '; /* leading whitespace: stripped */
        pending = false;
        s->v[w++] = s->v[i];
    }
    s->n = w; /* trailing whitespace: stripped */
}

/* ------------------------------------------------------------------ HTML */

/* html.entities.html5 lookup of name[0..n) (which may end with ';'); NULL if absent. */
static const char *html5_lookup(const uint32_t *name, size_t n) {
    char key[40];
    if (n == 0 || n >= sizeof key) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (name[i] >= 0x80) return NULL; /* all entity names are ASCII */
        key[i] = (char)name[i];
    }
    key[n] = 0;
    size_t lo = 0, hi = COUNT(uc_html5);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(key, uc_html5[mid].name);
        if (c == 0) return uc_html5[mid].value;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

static const char *ftfy_upper_lookup(const uint32_t *name, size_t n) {
    char key[40];
    if (n == 0 || n >= sizeof key) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (name[i] >= 0x80) return NULL;
        key[i] = (char)name[i];
    }
    key[n] = 0;
    size_t lo = 0, hi = COUNT(uc_ftfy_upper);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(key, uc_ftfy_upper[mid].name);
        if (c == 0) return uc_ftfy_upper[mid].value;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

static bool is_digit(uint32_t c) { return c >= '0' && c <= '9'; }
static bool is_hex(uint32_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static bool is_ascii_alnum(uint32_t c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* Python html._replace_charref for a numeric reference with value num (saturated). */
static void html_numeric(nu_ustr *out, uint64_t num) {
    for (size_t i = 0; i < COUNT(uc_html_invalid_charrefs); i++)
        if (uc_html_invalid_charrefs[i][0] == num) { nu_ustr_push(out, uc_html_invalid_charrefs[i][1]); return; }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) { nu_ustr_push(out, 0xFFFD); return; }
    if (in_ranges(uc_html_invalid_codepoints, COUNT(uc_html_invalid_codepoints), (uint32_t)num)) return;
    nu_ustr_push(out, (uint32_t)num);
}

/* Tries Python's charref regex at v[i] == '&':
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
 * appends the replacement and returns the length consumed, or 0 when nothing matches. */
static size_t html_charref(nu_ustr *out, const uint32_t *v, size_t n, size_t i) {
    size_t j = i + 1;
    if (j < n && v[j] == '#') {
        size_t k = j + 1;
        uint64_t num = 0;
        if (k < n && is_digit(v[k])) {
            while (k < n && is_digit(v[k])) {
                num = num * 10 + (v[k] - '0');
                if (num > 0x7FFFFFFF) num = 0x7FFFFFFF; /* saturate: > 0x10FFFF either way */
                k++;
            }
        } else if (k + 1 < n && (v[k] == 'x' || v[k] == 'X') && is_hex(v[k + 1])) {
            k++;
            while (k < n && is_hex(v[k])) {
                uint32_t d = is_digit(v[k]) ? v[k] - '0' : (v[k] | 0x20) - 'a' + 10;
                num = num * 16 + d;
                if (num > 0x7FFFFFFF) num = 0x7FFFFFFF;
                k++;
            }
        } else {
            return 0; /* '#' is excluded from names: no match */
        }
        if (k < n && v[k] == ';') k++;
        html_numeric(out, num);
        return k - i;
    }
    size_t k = j;
    while (k < n && k - j < 32) {
        uint32_t c = v[k];
        if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';') break;
        k++;
    }
    if (k == j) return 0;
    if (k < n && v[k] == ';') k++;
    const char *val = html5_lookup(v + j, k - j);
    if (val) { ustr_append_utf8z(out, val); return k - i; }
    /* longest prefix (>= 2 chars) that is an entity: the rest stays literal */
    size_t len = k - j; /* the name including a ';' */
    for (size_t x = len - 1; x > 1; x--) {
        const char *pv = html5_lookup(v + j, x);
        if (pv) {
            ustr_append_utf8z(out, pv);
            nu_ustr_append(out, v + j + x, len - x);
            return k - i;
        }
    }
    nu_ustr_push(out, '&');
    nu_ustr_append(out, v + j, len);
    return k - i;
}

void nu_uc_html_unescape(nu_ustr *s) {
    size_t i = 0;
    for (; i < s->n && s->v[i] != '&'; i++) {}
    if (i == s->n) return;
    nu_ustr out = {0};
    nu_ustr_append(&out, s->v, i);
    while (i < s->n) {
        if (s->v[i] == '&') {
            size_t used = html_charref(&out, s->v, s->n, i);
            if (used) { i += used; continue; }
        }
        nu_ustr_push(&out, s->v[i++]);
    }
    if (out.oom) s->oom = true;
    nu_ustr_swap(s, &out);
    nu_ustr_free(&out);
}

/* ftfy.fixes.unescape_html: HTML_ENTITY_RE = &#?[0-9A-Za-z]{1,24}; replaced by _unescape_fixup. */
static void ftfy_unescape_html(nu_ustr *s) {
    nu_ustr out = {0};
    size_t i = 0;
    bool changed = false;
    while (i < s->n) {
        if (s->v[i] == '&') {
            size_t j = i + 1;
            if (j < s->n && s->v[j] == '#') j++;
            size_t k = j;
            while (k < s->n && k - j < 24 && is_ascii_alnum(s->v[k])) k++;
            if (k > j && k < s->n && s->v[k] == ';') {
                size_t end = k + 1; /* the match is v[i..end) */
                const char *val = NULL;
                if (s->v[i + 1] != '#') {
                    val = html5_lookup(s->v + i + 1, end - i - 1);
                    if (!val) val = ftfy_upper_lookup(s->v + i + 1, end - i - 1);
                }
                if (val) {
                    ustr_append_utf8z(&out, val);
                    i = end;
                    changed = true;
                    continue;
                }
                if (s->v[i + 1] == '#') {
                    nu_ustr tmp = {0};
                    nu_ustr_append(&tmp, s->v + i, end - i);
                    nu_uc_html_unescape(&tmp);
                    bool semi = false;
                    for (size_t q = 0; q < tmp.n; q++) semi |= tmp.v[q] == ';';
                    if (tmp.oom) out.oom = true;
                    if (!semi) {
                        nu_ustr_append(&out, tmp.v, tmp.n);
                        nu_ustr_free(&tmp);
                        i = end;
                        changed = true;
                        continue;
                    }
                    nu_ustr_free(&tmp);
                }
                nu_ustr_append(&out, s->v + i, end - i);
                i = end;
                continue;
            }
        }
        nu_ustr_push(&out, s->v[i++]);
    }
    if (out.oom) s->oom = true;
    if (changed) nu_ustr_swap(s, &out);
    nu_ustr_free(&out);
}

/* ------------------------------------------------------------------ ftfy: badness */

enum {
    BAD = 1 << 0, CUR = 1 << 1, START = 1 << 2, END = 1 << 3, NUM = 1 << 4, KAO = 1 << 5,
    UPA = 1 << 6, LOA = 1 << 7, UPC = 1 << 8, LOC = 1 << 9, BOX = 1 << 10,
};

static unsigned bad_mask(uint32_t c) {
    if (c < 0xA1) return 0;
    size_t lo = 0, hi = COUNT(uc_badness);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < uc_badness[mid][0]) hi = mid;
        else if (c > uc_badness[mid][0]) lo = mid + 1;
        else return uc_badness[mid][1];
    }
    return 0;
}

static bool is_c1(uint32_t c) { return c >= 0x80 && c <= 0x9F; }
static bool is_az(uint32_t c) { return c >= 'a' && c <= 'z'; }
static bool is_AZaz(uint32_t c) { return is_az(c) || (c >= 'A' && c <= 'Z'); }
/* Python re \w for str: alphanumeric (approximated by the regex module's \p{L} and \p{N}) or '_' */
static bool is_word(uint32_t c) {
    if (c < 0x80) return is_ascii_alnum(c) || c == '_';
    int k = nu_uc_rx_class(c);
    return k == NU_RX_L || k == NU_RX_N;
}

/* Does ftfy 6.1's BADNESS_RE match at position i? (chardata.py; one alternative per line) */
static bool bad_at(const uint32_t *v, size_t n, size_t i) {
    uint32_t a = v[i], b = i + 1 < n ? v[i + 1] : 0, c = i + 2 < n ? v[i + 2] : 0;
    bool hb = i + 1 < n, hc = i + 2 < n;
    unsigned ma = bad_mask(a), mb = hb ? bad_mask(b) : 0, mc = hc ? bad_mask(c) : 0;
    if (is_c1(a)) return true;
    if (hb) {
        if ((ma & (BAD | LOA | UPA | BOX | START | END | CUR | NUM)) && (mb & BAD)) return true;
        if ((ma & BAD) && (mb & (LOA | UPA | BOX | START | END | CUR | NUM))) return true;
        if ((ma & (LOA | LOC | BOX | END | CUR | NUM)) && (mb & UPA)) return true;
        if ((ma & (BOX | END | CUR | NUM)) && (mb & LOA)) return true;
        if ((ma & (LOA | BOX | END)) && (mb & CUR)) return true;
        if ((ma & (UPA | BOX | END)) && (mb & NUM)) return true;
        if ((ma & (CUR | NUM | BOX)) && (mb & START)) return true;
        if ((ma & BOX) && (mb & KAO)) return true;
        if ((ma & (LOA | UPA | CUR | NUM | START | END)) && (mb & BOX)) return true;
        if ((ma & BOX) && (mb & END)) return true;
        if ((a == 0x152 || a == 0x153) && !is_az(b)) return true;                    /* [Œœ][^a-z]    */
        if (a == 0xC2 || a == 0xC3 || a == 0xCE || a == 0xD0) {                      /* [ÂÃÎÐ][...]   */
            static const uint32_t set[] = {0x20AC, 0x160, 0x161, 0xA2, 0x178, 0x17E, 0xA0, 0xAD,
                                           0xAE, 0xA9, 0xB0, 0xB7, 0xBB, 0x2013, 0x2014, 0xB4};
            if (in_list(set, COUNT(set), b) || (mb & END)) return true;
        }
        if (a == 0xD7 && (b == 0xB2 || b == 0xB3)) return true;                     /* ×[²³]         */
        if (a == 0xE0) {                                                             /* à[²µ¹¼½¾]     */
            static const uint32_t set[] = {0xB2, 0xB5, 0xB9, 0xBC, 0xBD, 0xBE};
            if (in_list(set, COUNT(set), b)) return true;
        }
        if (a == 0x221A) {                                                           /* √[...]        */
            static const uint32_t set[] = {0xB1, 0x2202, 0x2020, 0x2260, 0xAE, 0x2122, 0xB4, 0x2264, 0x2265,
                                           0xA5, 0xB5, 0xF8};
            if (in_list(set, COUNT(set), b)) return true;
        }
        if (a == 0x2248 && (b == 0xB0 || b == 0xA2)) return true;                   /* ≈[°¢]         */
        if (a == 0x201A && b == 0xC4 && hc) {                                        /* ‚Ä[...]       */
            static const uint32_t set[] = {0xEC, 0xEE, 0xEF, 0xF2, 0xF4, 0xFA, 0xF9, 0xFB, 0x2020, 0xB0, 0xA2,
                                           0x3C0};
            if (in_list(set, COUNT(set), c)) return true;
        }
        if (a == 0x201A && (b == 0xE2 || b == 0xF3) && hc &&                         /* ‚[âó][àä°ê]   */
            (c == 0xE0 || c == 0xE4 || c == 0xB0 || c == 0xEA))
            return true;
        if (a == 0x432 && b == 0x402) return true;                                   /* вЂ            */
        if (a == 0xC3 && (b == 0xA0 || b == 0xA1)) return true;                      /* Ã[\xa0¡]      */
    }
    if (hc) {
        if ((ma & (LOA | UPA | CUR | NUM | BOX)) && (mb & END) && (mc & START)) return true;
        if (nu_uc_is_pyspace(a) && (mb & UPA) && (mc & CUR)) return true;           /* \s[UPA][CUR]  */
        if (is_az(a) && (mb & UPA) && (mc & (START | CUR))) return true;
        if ((ma & (LOA | UPA)) && (mb & END) && is_word(c)) return true;
        {   /* [ВГРС][c1 bad start end currency °µ][ВГРС] */
            bool a1 = a == 0x412 || a == 0x413 || a == 0x420 || a == 0x421;
            bool c1 = c == 0x412 || c == 0x413 || c == 0x420 || c == 0x421;
            if (a1 && c1 && (is_c1(b) || (mb & (BAD | START | END | CUR)) || b == 0xB0 || b == 0xB5)) return true;
        }
        if (a == 0x3B2 && b == 0x20AC && (c == 0x2122 || c == 0xA0 || c == 0x386 || c == 0xAD || c == 0xAE ||
                                          c == 0xB0))
            return true;                                                             /* β€[...]       */
        {   /* [ΒΓΞΟ][c1 bad start end currency °][ΒΓΞΟ] */
            bool a1 = a == 0x392 || a == 0x393 || a == 0x39E || a == 0x39F;
            bool c1 = c == 0x392 || c == 0x393 || c == 0x39E || c == 0x39F;
            if (a1 && c1 && (is_c1(b) || (mb & (BAD | START | END | CUR)) || b == 0xB0)) return true;
        }
    }
    /* [a-z]\s?Ã[ ] */
    if (is_az(a)) {
        size_t k = i + 1;
        if (k < n && nu_uc_is_pyspace(v[k]) && k + 2 < n && v[k + 1] == 0xC3 && v[k + 2] == ' ') return true;
        if (k + 1 < n && v[k] == 0xC3 && v[k + 1] == ' ') return true;
    }
    return false;
}

bool nu_uc_ftfy_is_bad(const uint32_t *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (bad_at(v, n, i)) return true;
    return false;
}

/* ------------------------------------------------------------------ ftfy: single-byte codecs */

#define N_CHARMAPS (1 + (int)COUNT(uc_charmaps)) /* latin-1 first, then the generated ones */

/* Byte for character c in charmap e (0 = latin-1), or -1 when c cannot be encoded
 * (chardata.possible_encoding is this test applied to every character). */
static int charmap_encode(int e, uint32_t c) {
    if (e == 0) return c <= 0xFF ? (int)c : -1;
    bool sloppy = uc_charmaps[e - 1].sloppy != 0;
    if (sloppy && c == 0xFFFD) return 0x1A; /* sloppy codecs: U+FFFD <-> byte 0x1A */
    if (c < 0x80) return (sloppy && c == 0x1A) ? -1 : (int)c;
    for (int b = 0; b < 128; b++)
        if (uc_charmaps[e - 1].hi[b] == c) return 0x80 + b;
    return -1;
}

static uint32_t charmap_decode(int e, uint8_t b) {
    if (e == 0) return b;
    if (b == 0x1A && uc_charmaps[e - 1].sloppy) return 0xFFFD;
    return b < 0x80 ? b : uc_charmaps[e - 1].hi[b - 0x80];
}

typedef struct { uint8_t *p; size_t n, cap; bool oom; } bytes_t;

static void bytes_push(bytes_t *b, uint8_t x) {
    if (b->oom) return;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        uint8_t *p = realloc(b->p, cap);
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = cap;
    }
    b->p[b->n++] = x;
}

static bool cont(uint8_t x) { return x >= 0x80 && x <= 0xBF; }

/* Length of an ALTERED_UTF8_RE match at p[i] (0 if none): UTF-8 sequences with b' ' where
 * b'\xa0' belonged (chardata.py). */
static size_t altered_utf8_at(const uint8_t *p, size_t n, size_t i) {
    uint8_t a = p[i];
    uint8_t b = i + 1 < n ? p[i + 1] : 0, c = i + 2 < n ? p[i + 2] : 0, d = i + 3 < n ? p[i + 3] : 0;
    if ((a == 0xC2 || a == 0xC3 || a == 0xC5 || a == 0xCE || a == 0xD0) && i + 1 < n && b == ' ') return 2;
    if (a >= 0xE0 && a <= 0xEF && i + 2 < n && b == ' ' && cont(c)) return 3;
    if (a >= 0xE0 && a <= 0xEF && i + 2 < n && cont(b) && c == ' ') return 3;
    if (a == 0xF0 && i + 3 < n) {
        if (b == ' ' && cont(c) && cont(d)) return 4;
        if (cont(b) && c == ' ' && cont(d)) return 4;
        if (cont(b) && cont(c) && d == ' ') return 4;
    }
    return 0;
}

/* fixes.restore_byte_a0 */
static void restore_byte_a0(bytes_t *in) {
    bytes_t t = {0};
    /* A_GRAVE_WORD_RE = b'\xc3 (?! |quele|quela|quilo|s )' -> b'\xc3\xa0 ' */
    for (size_t i = 0; i < in->n; i++) {
        if (in->p[i] == 0xC3 && i + 1 < in->n && in->p[i + 1] == ' ') {
            const uint8_t *r = in->p + i + 2;
            size_t rn = in->n - (i + 2);
            bool neg = (rn >= 1 && r[0] == ' ') || (rn >= 5 && (!memcmp(r, "quele", 5) || !memcmp(r, "quela", 5) ||
                                                                 !memcmp(r, "quilo", 5))) ||
                       (rn >= 2 && r[0] == 's' && r[1] == ' ');
            if (!neg) {
                bytes_push(&t, 0xC3);
                bytes_push(&t, 0xA0);
                bytes_push(&t, ' ');
                i++;
                continue;
            }
        }
        bytes_push(&t, in->p[i]);
    }
    /* ALTERED_UTF8_RE matches get their spaces turned into 0xA0 */
    for (size_t i = 0; i < t.n;) {
        size_t m = altered_utf8_at(t.p, t.n, i);
        if (!m) { i++; continue; }
        for (size_t k = i; k < i + m; k++)
            if (t.p[k] == ' ') t.p[k] = 0xA0;
        i += m;
    }
    if (t.oom) { in->oom = true; free(t.p); return; }
    free(in->p);
    *in = t;
}

/* Length of a LOSSY_UTF8_RE match at p[i] (chardata.py), 0 if none. 0x1A stands for a byte that
 * became U+FFFD; '?' is accepted once. */
static size_t lossy_at(const uint8_t *p, size_t n, size_t i) {
#define B(k) (i + (k) < n ? p[i + (k)] : 0x100)
    unsigned a = B(0), b = B(1), c = B(2), d = B(3), e = B(4), f = B(5);
#define CONT(x) ((x) >= 0x80 && (x) <= 0xBF)
#define SUB(x) ((x) == 0x1A)
#define SUBQ(x) ((x) == 0x1A || (x) == '?')
    if (a >= 0xC2 && a <= 0xDF && SUB(b)) return 2;
    if (a >= 0xC2 && a <= 0xC3 && b == '?') return 2;
    if (a == 0xED && b >= 0xA0 && b <= 0xAF && SUBQ(c) && d == 0xED && e >= 0xB0 && e <= 0xBF && (SUBQ(f) || CONT(f))) return 6;
    if (a == 0xED && b >= 0xA0 && b <= 0xAF && (SUBQ(c) || CONT(c)) && d == 0xED && e >= 0xB0 && e <= 0xBF && SUBQ(f)) return 6;
    if (a >= 0xE0 && a <= 0xEF && SUBQ(b) && (SUB(c) || CONT(c))) return 3;
    if (a >= 0xE0 && a <= 0xEF && (SUB(b) || CONT(b)) && SUBQ(c)) return 3;
    if (a >= 0xF0 && a <= 0xF4) {
        if (SUBQ(b) && (SUB(c) || CONT(c)) && (SUB(d) || CONT(d))) return 4;
        if ((SUB(b) || CONT(b)) && SUBQ(c) && (SUB(d) || CONT(d))) return 4;
        if ((SUB(b) || CONT(b)) && (SUB(c) || CONT(c)) && SUBQ(d)) return 4;
    }
    if (SUB(a)) return 1;
    return 0;
#undef B
#undef CONT
#undef SUB
#undef SUBQ
}

/* fixes.replace_lossy_sequences: each match becomes the UTF-8 of U+FFFD */
static void replace_lossy(bytes_t *in) {
    bytes_t t = {0};
    for (size_t i = 0; i < in->n;) {
        size_t m = lossy_at(in->p, in->n, i);
        if (m) {
            bytes_push(&t, 0xEF);
            bytes_push(&t, 0xBF);
            bytes_push(&t, 0xBD);
            i += m;
        } else {
            bytes_push(&t, in->p[i++]);
        }
    }
    if (t.oom) { in->oom = true; free(t.p); return; }
    free(in->p);
    *in = t;
}

/* Strict UTF-8 decoding (bytes.decode('utf-8')), or ftfy's 'utf-8-variants' when `variants`:
 * also CESU-8 surrogate pairs and the Java null b'\xc0\x80'. False on any error. */
static bool utf8_decode_strict(const uint8_t *p, size_t n, bool variants, nu_ustr *out) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) { nu_ustr_push(out, c); i++; continue; }
        if (variants && c == 0xC0 && i + 1 < n && p[i + 1] == 0x80) { nu_ustr_push(out, 0); i += 2; continue; }
        if (variants && c == 0xED && i + 5 < n && p[i + 1] >= 0xA0 && p[i + 1] <= 0xAF && cont(p[i + 2]) &&
            p[i + 3] == 0xED && p[i + 4] >= 0xB0 && p[i + 4] <= 0xBF && cont(p[i + 5])) {
            uint32_t hi = 0xD000u | ((uint32_t)(p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
            uint32_t lo = 0xD000u | ((uint32_t)(p[i + 4] & 0x3F) << 6) | (p[i + 5] & 0x3F);
            nu_ustr_push(out, 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
            i += 6;
            continue;
        }
        int need;
        uint32_t cp, lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) { need = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2; cp = c & 0x0F;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3; cp = c & 0x07;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else return false;
        for (int k = 1; k <= need; k++) {
            if (i + (size_t)k >= n) return false;
            uint8_t d = p[i + k];
            if (d < lo || d > hi) return false;
            lo = 0x80; hi = 0xBF;
            cp = (cp << 6) | (d & 0x3F);
        }
        nu_ustr_push(out, cp);
        i += (size_t)need + 1;
    }
    return true;
}

static void fix_c1_controls(nu_ustr *s) {
    for (size_t i = 0; i < s->n; i++)
        if (is_c1(s->v[i])) s->v[i] = charmap_decode(1, (uint8_t)s->v[i]); /* sloppy-windows-1252 */
}

static void fix_encoding(nu_ustr *s, int depth);

/* UTF8_CLUES of chardata.py (unicode_data.h); the continuation class also has \x80-\xbf */
static bool clue_first2(uint32_t c) { return in_list(uc_clue_first2, COUNT(uc_clue_first2), c); }
static bool clue_first3(uint32_t c) { return in_list(uc_clue_first3, COUNT(uc_clue_first3), c); }
static bool clue_first4(uint32_t c) { return in_list(uc_clue_first4, COUNT(uc_clue_first4), c); }
static bool clue_cont(uint32_t c) { return (c >= 0x80 && c <= 0xBF) || in_list(uc_clue_cont, COUNT(uc_clue_cont), c); }

/* Length of a UTF8_DETECTOR_RE match (the (...)+ part) starting at i, 0 if none. */
static size_t utf8_detector_at(const uint32_t *v, size_t n, size_t i) {
    size_t k = i;
    for (;;) {
        size_t m = 0;
        if (k + 1 < n && clue_first2(v[k]) && clue_cont(v[k + 1])) m = 2;
        if (!m && k + 2 < n && clue_first3(v[k]) && clue_cont(v[k + 1]) && clue_cont(v[k + 2])) m = 3;
        if (!m && k + 3 < n && clue_first4(v[k]) && clue_cont(v[k + 1]) && clue_cont(v[k + 2]) && clue_cont(v[k + 3]))
            m = 4;
        if (!m) break;
        k += m;
    }
    return k - i;
}

/* fixes.decode_inconsistent_utf8 */
static bool decode_inconsistent_utf8(nu_ustr *s, int depth) {
    nu_ustr out = {0};
    bool changed = false;
    size_t i = 0;
    while (i < s->n) {
        size_t m = utf8_detector_at(s->v, s->n, i);
        if (m && m < s->n && nu_uc_ftfy_is_bad(s->v + i, m)) {
            nu_ustr sub = {0};
            nu_ustr_append(&sub, s->v + i, m);
            fix_encoding(&sub, depth + 1);
            if (sub.oom) out.oom = true;
            if (sub.n != m || memcmp(sub.v, s->v + i, m * sizeof(uint32_t))) changed = true;
            nu_ustr_append(&out, sub.v, sub.n);
            nu_ustr_free(&sub);
            i += m;
            continue;
        }
        if (m) {
            nu_ustr_append(&out, s->v + i, m);
            i += m;
            continue;
        }
        nu_ustr_push(&out, s->v[i++]);
    }
    if (out.oom) s->oom = true;
    if (changed) nu_ustr_swap(s, &out);
    nu_ustr_free(&out);
    return changed;
}

/* ftfy._fix_encoding_one_step_and_explain; returns true when the text changed. */
static bool fix_encoding_one_step(nu_ustr *s, int depth) {
    if (s->n == 0) return false;
    bool ascii = true;
    for (size_t i = 0; i < s->n && ascii; i++) ascii = s->v[i] < 0x80;
    if (ascii || !nu_uc_ftfy_is_bad(s->v, s->n)) return false;
    for (int e = 0; e < N_CHARMAPS; e++) {
        bytes_t b = {0};
        bool ok = true;
        for (size_t i = 0; i < s->n && ok; i++) {
            int x = charmap_encode(e, s->v[i]);
            if (x < 0) ok = false;
            else bytes_push(&b, (uint8_t)x);
        }
        if (!ok || b.oom) {
            if (b.oom) s->oom = true;
            free(b.p);
            continue;
        }
        /* restore_byte_a0 when ALTERED_UTF8_RE is found */
        bool altered = false;
        for (size_t i = 0; i < b.n && !altered; i++) altered = altered_utf8_at(b.p, b.n, i) != 0;
        if (altered) restore_byte_a0(&b);
        if (e > 0 && uc_charmaps[e - 1].sloppy) replace_lossy(&b);
        bool variants = false;
        for (size_t i = 0; i < b.n; i++) variants |= b.p[i] == 0xED || b.p[i] == 0xC0;
        nu_ustr dec = {0};
        bool good = !b.oom && utf8_decode_strict(b.p, b.n, variants, &dec);
        free(b.p);
        if (good && !dec.oom) {
            bool same = dec.n == s->n && !memcmp(dec.v, s->v, s->n * sizeof(uint32_t));
            nu_ustr_swap(s, &dec);
            nu_ustr_free(&dec);
            return !same;
        }
        nu_ustr_free(&dec);
    }
    /* decode_inconsistent_utf8 when UTF8_DETECTOR_RE finds something */
    if (depth < 8) {
        bool found = false;
        for (size_t i = 0; i < s->n && !found; i++) found = utf8_detector_at(s->v, s->n, i) > 0;
        if (found && decode_inconsistent_utf8(s, depth)) return true;
    }
    /* latin-1 text with C1 controls read as windows-1252, then fix_c1_controls: both map each C1
     * character through (sloppy) windows-1252 and leave everything else alone. */
    bool has_c1 = false;
    for (size_t i = 0; i < s->n; i++) has_c1 |= is_c1(s->v[i]);
    if (has_c1) { fix_c1_controls(s); return true; }
    return false;
}

static void fix_encoding(nu_ustr *s, int depth) {
    for (int iter = 0; iter < 64 && !s->oom; iter++)
        if (!fix_encoding_one_step(s, depth)) break;
}

/* ------------------------------------------------------------------ ftfy: simple fixers */

static void fix_latin_ligatures(nu_ustr *s) {
    static const struct { uint32_t cp; uint32_t to[3]; } lig[] = {
        {0x132, {'I', 'J'}}, {0x133, {'i', 'j'}}, {0x149, {0x2BC, 'n'}}, {0x1F1, {'D', 'Z'}},
        {0x1F2, {'D', 'z'}}, {0x1F3, {'d', 'z'}}, {0x1C4, {'D', 0x17D}}, {0x1C5, {'D', 0x17E}},
        {0x1C6, {'d', 0x17E}}, {0x1C7, {'L', 'J'}}, {0x1C8, {'L', 'j'}}, {0x1C9, {'l', 'j'}},
        {0x1CA, {'N', 'J'}}, {0x1CB, {'N', 'j'}}, {0x1CC, {'n', 'j'}}, {0xFB00, {'f', 'f'}},
        {0xFB01, {'f', 'i'}}, {0xFB02, {'f', 'l'}}, {0xFB03, {'f', 'f', 'i'}}, {0xFB04, {'f', 'f', 'l'}},
        {0xFB05, {0x17F, 't'}}, {0xFB06, {'s', 't'}},
    };
    bool any = false;
    for (size_t i = 0; i < s->n && !any; i++) any = (s->v[i] >= 0x132 && s->v[i] <= 0x1F3) || (s->v[i] >= 0xFB00 && s->v[i] <= 0xFB06);
    if (!any) return;
    nu_ustr out = {0};
    for (size_t i = 0; i < s->n; i++) {
        size_t k = 0;
        for (; k < COUNT(lig); k++)
            if (lig[k].cp == s->v[i]) break;
        if (k == COUNT(lig)) { nu_ustr_push(&out, s->v[i]); continue; }
        for (int q = 0; q < 3 && lig[k].to[q]; q++) nu_ustr_push(&out, lig[k].to[q]);
    }
    if (out.oom) s->oom = true;
    nu_ustr_swap(s, &out);
    nu_ustr_free(&out);
}

static void fix_character_width(nu_ustr *s) {
    bool any = false;
    for (size_t i = 0; i < s->n && !any; i++) any = s->v[i] == 0x3000 || (s->v[i] >= 0xFF01 && s->v[i] <= 0xFFEF);
    if (!any) return;
    nu_ustr out = {0};
    for (size_t i = 0; i < s->n; i++) {
        uint32_t c = s->v[i];
        const char *to = NULL;
        if (c == 0x3000 || (c >= 0xFF01 && c <= 0xFFEF))
            for (size_t k = 0; k < COUNT(uc_width); k++)
                if (uc_width[k].cp == c) { to = uc_width[k].to; break; }
        if (to) ustr_append_utf8z(&out, to);
        else nu_ustr_push(&out, c);
    }
    if (out.oom) s->oom = true;
    nu_ustr_swap(s, &out);
    nu_ustr_free(&out);
}

static void uncurl_quotes(nu_ustr *s) {
    for (size_t i = 0; i < s->n; i++) {
        uint32_t c = s->v[i];
        if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) s->v[i] = '\'';
        else if (c >= 0x201C && c <= 0x201F) s->v[i] = '"';
    }
}

static void fix_line_breaks(nu_ustr *s) {
    size_t w = 0;
    for (size_t i = 0; i < s->n; i++) {
        uint32_t c = s->v[i];
        if (c == '\r' && i + 1 < s->n && s->v[i + 1] == '\n') { s->v[w++] = '\n'; i++; continue; }
        if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) c = '\n';
        s->v[w++] = c;
    }
    s->n = w;
}

/* ANSI_RE = '\033\[((?:\d|;)*)([a-zA-Z])' */
static void remove_terminal_escapes(nu_ustr *s) {
    size_t w = 0;
    for (size_t i = 0; i < s->n;) {
        if (s->v[i] == 0x1B && i + 1 < s->n && s->v[i + 1] == '[') {
            size_t k = i + 2;
            while (k < s->n && (nu_uc_decimal(s->v[k]) >= 0 || s->v[k] == ';')) k++;
            if (k < s->n && is_AZaz(s->v[k])) { i = k + 1; continue; }
        }
        s->v[w++] = s->v[i++];
    }
    s->n = w;
}

static void remove_control_chars(nu_ustr *s) {
    size_t w = 0;
    for (size_t i = 0; i < s->n; i++) {
        uint32_t c = s->v[i];
        bool drop = c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
                    c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
        if (!drop) s->v[w++] = c;
    }
    s->n = w;
}

static bool ustr_eq(const nu_ustr *a, const nu_ustr *b) {
    return a->n == b->n && (!a->n || !memcmp(a->v, b->v, a->n * sizeof(uint32_t)));
}

/* ftfy.fix_and_explain on one segment */
static void ftfy_segment(nu_ustr *s, bool unescape) {
    nu_ustr orig = {0};
    for (int iter = 0; iter < 64; iter++) {
        nu_ustr_assign(&orig, s->v, s->n);
        if (orig.oom) { s->oom = true; break; }
        if (unescape) ftfy_unescape_html(s);
        fix_encoding(s, 0);
        fix_c1_controls(s);
        fix_latin_ligatures(s);
        fix_character_width(s);
        uncurl_quotes(s);
        fix_line_breaks(s);
        remove_terminal_escapes(s);
        remove_control_chars(s);
        nu_uc_nfc(s);
        if (s->oom || ustr_eq(s, &orig)) break;
    }
    nu_ustr_free(&orig);
}

void nu_uc_ftfy_fix_text(nu_ustr *s) {
    nu_ustr out = {0}, seg = {0};
    bool unescape = true; /* "auto": off from the first line that contains '<' on */
    size_t pos = 0;
    while (pos < s->n) {
        size_t end = pos;
        while (end < s->n && s->v[end] != '\n') end++;
        if (end < s->n) end++; /* the line keeps its '\n' */
        nu_ustr_assign(&seg, s->v + pos, end - pos);
        for (size_t i = pos; i < end && unescape; i++)
            if (s->v[i] == '<') unescape = false;
        ftfy_segment(&seg, unescape);
        if (seg.oom) out.oom = true;
        nu_ustr_append(&out, seg.v, seg.n);
        pos = end;
    }
    nu_ustr_free(&seg);
    if (out.oom) s->oom = true;
    nu_ustr_swap(s, &out);
    nu_ustr_free(&out);
}

/* ------------------------------------------------------------------ BasicTokenizer */

/* transformers 4.30 BasicTokenizer(do_lower_case=True).tokenize(text), joined with ' ' (what
 * CLIPTokenizer uses when ftfy is not installed): _clean_text (drop U+0000, U+FFFD and category
 * C* except \t\n\r; \t\n\r and Zs -> ' '), spaces around CJK ideographs, split on
 * str.isspace, per token lower() + NFD + drop Mn, split off every punctuation character (ASCII
 * symbols and category P*). */
static bool bt_chinese(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}
static bool bt_punct(uint32_t c) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126) ||
           in_ranges(uc_cat_P, COUNT(uc_cat_P), c);
}

void nu_uc_basic_tokenize(nu_ustr *s) {
    nu_ustr t = {0}, out = {0}, tok = {0}, d = {0};
    for (size_t i = 0; i < s->n; i++) {
        uint32_t c = s->v[i];
        if (c == '\t' || c == '\n' || c == '\r' || c == ' ' || in_ranges(uc_cat_Zs, COUNT(uc_cat_Zs), c)) {
            nu_ustr_push(&t, ' ');
            continue;
        }
        if (c == 0 || c == 0xFFFD || in_ranges(uc_cat_C, COUNT(uc_cat_C), c)) continue;
        if (bt_chinese(c)) {
            nu_ustr_push(&t, ' ');
            nu_ustr_push(&t, c);
            nu_ustr_push(&t, ' ');
        } else {
            nu_ustr_push(&t, c);
        }
    }
    size_t i = 0;
    while (i < t.n && !t.oom) {
        if (nu_uc_is_pyspace(t.v[i])) { i++; continue; }
        size_t j = i;
        while (j < t.n && !nu_uc_is_pyspace(t.v[j])) j++;
        nu_ustr_assign(&tok, t.v + i, j - i);
        nu_uc_lower(&tok);
        d.n = 0;
        nfd_into(&tok, &d);
        bool new_word = true;
        for (size_t k = 0; k < d.n; k++) {
            uint32_t c = d.v[k];
            if (in_ranges(uc_cat_Mn, COUNT(uc_cat_Mn), c)) continue;
            bool p = bt_punct(c);
            if (p || new_word) {
                if (out.n) nu_ustr_push(&out, ' ');
            }
            nu_ustr_push(&out, c);
            new_word = p;
        }
        if (tok.oom || d.oom) out.oom = true;
        i = j;
    }
    if (t.oom || out.oom) s->oom = true;
    nu_ustr_swap(s, &out);
    nu_ustr_free(&out);
    nu_ustr_free(&t);
    nu_ustr_free(&tok);
    nu_ustr_free(&d);
}

/* ------------------------------------------------------------------ pre-tokenizer */

static bool match_ci(const uint32_t *v, size_t n, size_t i, const char *lit) {
    size_t L = strlen(lit);
    if (i + L > n) return false;
    for (size_t k = 0; k < L; k++) {
        char x = lit[k];
        if (x >= 'a' && x <= 'z') {
            if (!nu_uc_rx_letter_eq(v[i + k], x)) return false;
        } else if (v[i + k] != (uint32_t)(unsigned char)x) {
            return false;
        }
    }
    return true;
}

bool nu_uc_pretok_next(const uint32_t *v, size_t n, size_t *pos, size_t *start, size_t *end) {
    static const char *const lits[] = {"<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    size_t i = *pos;
    while (i < n) {
        size_t m = 0;
        for (size_t k = 0; k < COUNT(lits) && !m; k++)
            if (match_ci(v, n, i, lits[k])) m = strlen(lits[k]);
        if (!m) {
            int cls = nu_uc_rx_class(v[i]);
            if (cls == NU_RX_L) {
                m = 1;
                while (i + m < n && nu_uc_rx_class(v[i + m]) == NU_RX_L) m++;
            } else if (cls == NU_RX_N) {
                m = 1;
            } else if (cls == NU_RX_OTHER) {
                m = 1;
                while (i + m < n && nu_uc_rx_class(v[i + m]) == NU_RX_OTHER) m++;
            }
        }
        if (m) {
            *start = i;
            *end = i + m;
            *pos = i + m;
            return true;
        }
        i++;
    }
    *pos = n;
    return false;
}
