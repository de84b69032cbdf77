/*
 * tokenizer_internal.h — text machinery shared by the CLIP tokenizer files (not installed):
 * UTF-32 strings, Unicode properties, lowercasing, NFC, HTML unescaping, the ftfy subset, the
 * CLIP pre-tokenizer scanner (src/tokenizer/unicode.c) and the BPE encoder (clip_bpe.c) that
 * prompt.c uses. Tested by tests/test_tokenizer.c (reference cases) and tests/test_prompt.c.
 */
#ifndef NU_TOKENIZER_INTERNAL_H
#define NU_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nuance/tokenizer.h"

/* A growable UTF-32 string. A failed allocation sets `oom`; later appends are then no-ops, so
 * callers check `oom` once at the end. */
typedef struct nu_ustr {
    uint32_t *v;
    size_t n, cap;
    bool oom;
} nu_ustr;

void nu_ustr_free(nu_ustr *s);
void nu_ustr_push(nu_ustr *s, uint32_t c);
void nu_ustr_append(nu_ustr *s, const uint32_t *v, size_t n);
/* Replaces s's content with v[0..n) (v may not alias s). */
void nu_ustr_assign(nu_ustr *s, const uint32_t *v, size_t n);
/* Swaps the contents of two strings (used to commit a rewritten copy). */
void nu_ustr_swap(nu_ustr *a, nu_ustr *b);
/* Appends the codepoints of UTF-8 text. Invalid bytes (the input is not a Python str) each
 * become U+FFFD, as bytes.decode('utf-8', 'replace') does for a maximal invalid subpart. */
void nu_ustr_from_utf8(nu_ustr *s, const char *p, size_t len);
/* Appends the UTF-8 encoding of c to buf (needs 4 bytes); returns the byte count. */
int nu_utf8_put(uint32_t c, uint8_t *buf);

/* ---- properties */
bool nu_uc_is_pyspace(uint32_t c);        /* str.isspace()                                   */
int nu_uc_decimal(uint32_t c);            /* value of a category-Nd digit (re's \d), else -1 */
enum { NU_RX_SKIP, NU_RX_L, NU_RX_N, NU_RX_OTHER };
int nu_uc_rx_class(uint32_t c);           /* class of c in CLIP's pre-tokenizer pattern      */
bool nu_uc_rx_letter_eq(uint32_t c, char ascii_lower); /* c matches the letter under IGNORECASE */

/* ---- transforms (in place; they may set s->oom) */
void nu_uc_lower(nu_ustr *s);             /* str.lower() (full mappings, Final_Sigma)        */
void nu_uc_nfc(nu_ustr *s);               /* unicodedata.normalize('NFC', s)                 */
void nu_uc_whitespace_clean(nu_ustr *s);  /* re.sub(r'\s+', ' ', s).strip()                  */
void nu_uc_html_unescape(nu_ustr *s);     /* html.unescape(s) (Python 3.11)                  */
void nu_uc_ftfy_fix_text(nu_ustr *s);     /* ftfy.fix_text(s), ftfy 6.1 defaults (subset)    */
bool nu_uc_ftfy_is_bad(const uint32_t *v, size_t n); /* ftfy is_bad (mojibake heuristic)     */
void nu_uc_basic_tokenize(nu_ustr *s);    /* " ".join(BasicTokenizer().tokenize(s)), 4.30     */

/* ---- CLIP pre-tokenizer:
 * <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * (regex module, IGNORECASE). Scans from *pos; returns false at the end, else sets the next
 * match [*start, *end) and advances *pos past it. */
bool nu_uc_pretok_next(const uint32_t *v, size_t n, size_t *pos, size_t *start, size_t *end);

#endif
