/*
 * test_prompt.c — A1111 prompt syntax (src/tokenizer/prompt.c): parse_prompt_attention and the
 * 75-token chunking of sd_hijack_clip.tokenize_line. No reference files: the expectations are
 * A1111's own docstring examples (prompt_parser.py, weights as Python prints them, compared
 * exactly since both sides multiply the same doubles in the same order) and cases worked out by
 * hand from its code; the chunking runs on a tiny in-memory vocabulary where every letter is one
 * token ("a</w>" = 320, ",</w>" = 267, as in CLIP's byte order).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nu_test.h"
#include "nuance/tokenizer.h"

typedef struct { const char *text; double w; } want_seg;

static void check_parse(const char *prompt, const want_seg *want, int n_want) {
    nu_prompt_segment *s = NULL;
    int n = 0;
    nu_status st = nu_prompt_parse_attention(prompt, &s, &n);
    NU_CHECK_MSG(st == NU_OK, "parse(\"%s\"): %s", prompt, nu_last_error());
    bool ok = st == NU_OK && n == n_want;
    for (int i = 0; ok && i < n; i++) ok = !strcmp(s[i].text, want[i].text) && s[i].weight == want[i].w;
    NU_CHECK_MSG(ok, "parse(\"%s\") differs", prompt);
    if (!ok) {
        for (int i = 0; i < n; i++) fprintf(stderr, "    got  [\"%s\", %.17g]\n", s[i].text, s[i].weight);
        for (int i = 0; i < n_want; i++) fprintf(stderr, "    want [\"%s\", %.17g]\n", want[i].text, want[i].w);
    }
    nu_prompt_segments_free(s, n);
}

#define PARSE(prompt, ...)                                                                     \
    do {                                                                                       \
        const want_seg w_[] = {__VA_ARGS__};                                                   \
        check_parse(prompt, w_, (int)(sizeof w_ / sizeof w_[0]));                              \
    } while (0)

static void test_parse(void) {
    const double sq = 1.0 / 1.1; /* A1111: square_bracket_multiplier = 1 / 1.1 */
    /* A1111's docstring examples */
    PARSE("normal text", {"normal text", 1.0});
    PARSE("an (important) word", {"an ", 1.0}, {"important", 1.1}, {" word", 1.0});
    PARSE("(unbalanced", {"unbalanced", 1.1});
    PARSE("\\(literal\\]", {"(literal]", 1.0});
    PARSE("(unnecessary)(parens)", {"unnecessaryparens", 1.1});
    PARSE("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", {"a ", 1.0}, {"house", 1.5730000000000004},
          {" ", 1.1}, {"on", 1.0}, {" a ", 1.1}, {"hill", 0.55}, {", sun, ", 1.1}, {"sky", 1.4641000000000006},
          {".", 1.1});
    /* the brief's example: (b:1.5) x1.5, [c] /1.1, ((d)) x1.1 x1.1 */
    PARSE("a (b:1.5) [c] ((d))", {"a ", 1.0}, {"b", 1.5}, {" ", 1.0}, {"c", sq}, {" ", 1.0}, {"d", 1.1 * 1.1});
    PARSE("((d))", {"d", 1.2100000000000002});
    PARSE("[[x]]", {"x", sq * sq});
    PARSE("(x: 1.3 )", {"x", 1.3});        /* \s* around the number */
    PARSE("(x:+.5)", {"x", 0.5});
    PARSE("(x:-1)", {"x", -1.0});
    PARSE("(a [b] c:2)", {"a ", 2.0}, {"b", sq * 2.0}, {" c", 2.0});
    PARSE("[a (b) c]", {"a ", sq}, {"b", 1.1 * sq}, {" c", sq});
    /* malformed input, tolerated as A1111 does */
    PARSE("a)", {"a)", 1.0});                /* nothing to close: ')' is text */
    PARSE("a]", {"a]", 1.0});
    PARSE("x:1.5) y", {"x:1.5) y", 1.0});    /* a weight with no '(' is text */
    PARSE("((a", {"a", 1.1 * 1.1});         /* unclosed '(' applied at the end */
    PARSE("[(a", {"a", 1.1 * sq});          /* round first, then square */
    PARSE("(a]", {"a]", 1.1});              /* ']' without '[' is text inside the '(' */
    PARSE("a:b", {"a:b", 1.0});
    PARSE("(a:b)", {"a:b", 1.1});
    PARSE("", {"", 1.0});
    PARSE("()", {"", 1.0});
    PARSE("a\\b", {"ab", 1.0});             /* a lone backslash is dropped */
    PARSE("a\\\\b", {"a\\b", 1.0});
    PARSE("\\(a:1.5\\)", {"(a:1.5)", 1.0});
    /* BREAK: a whole word, with the whitespace around it */
    PARSE("a BREAK b", {"a", 1.0}, {"BREAK", -1.0}, {"b", 1.0});
    PARSE("a  BREAK\n b, BREAKfast aBREAK", {"a", 1.0}, {"BREAK", -1.0}, {"b, BREAKfast aBREAK", 1.0});
    PARSE("BREAK", {"", 1.0}, {"BREAK", -1.0}, {"", 1.0});
    PARSE("a,BREAK,b", {"a,", 1.0}, {"BREAK", -1.0}, {",b", 1.0});
    PARSE("(a BREAK b)", {"a", 1.1}, {"BREAK", -1.0 * 1.1}, {"b", 1.1}); /* weighted: no longer a BREAK */
    PARSE("(BREAK:1.0)", {"", 1.0}, {"BREAK", -1.0}, {"", 1.0});
    /* invalid weights: Python's float() raises, so does A1111 */
    nu_prompt_segment *s;
    int n;
    NU_CHECK(nu_prompt_parse_attention("(a:1.2.3)", &s, &n) == NU_ERR_INVALID_ARG);
    NU_CHECK(nu_prompt_parse_attention("(a:.)", &s, &n) == NU_ERR_INVALID_ARG);
    NU_CHECK(strstr(nu_last_error(), "weight") != NULL);
    /* Unicode digits are digits for \d and float() */
    PARSE("(a:\xD9\xA1.\xD9\xA5)", {"a", 1.5}); /* Arabic-Indic 1.5 */
}

/* ------------------------------------------------------------------ chunking */

static nu_clip_tokenizer *tiny(void) {
    const char *merges = "#version: 0.2\nh e";
    nu_clip_tokenizer *t = NULL;
    NU_CHECK(nu_clip_tokenizer_load_memory(NULL, 0, merges, strlen(merges), "tiny", &t) == NU_OK);
    return t;
}

enum { A = 320, COMMA = 267, BOS = 513, EOS = 514 }; /* ids in the tiny vocabulary (512 = "he") */

static char *repeat(const char *piece, int n, const char *tail) {
    size_t L = strlen(piece), T = tail ? strlen(tail) : 0;
    char *s = malloc(L * (size_t)n + T + 1);
    for (int i = 0; i < n; i++) memcpy(s + L * (size_t)i, piece, L);
    if (T) memcpy(s + L * (size_t)n, tail, T);
    s[L * (size_t)n + T] = 0;
    return s;
}

/* counts the ids equal to v in chunk c between BOS and EOS */
static int count_in(const nu_prompt_chunks *ch, int c, int32_t v) {
    int k = 0;
    for (int i = 1; i < 76; i++) k += ch->ids[c * 77 + i] == v;
    return k;
}

static void test_chunks(void) {
    nu_clip_tokenizer *t = tiny();
    if (!t) return;
    NU_CHECK(nu_clip_tokenizer_find(t, "a</w>") == A && nu_clip_tokenizer_find(t, ",</w>") == COMMA);
    NU_CHECK(nu_clip_tokenizer_bos(t) == BOS && nu_clip_tokenizer_eos(t) == EOS);
    nu_prompt_params pp;
    nu_prompt_params_init(&pp);
    NU_CHECK(pp.chunk_len == 75 && pp.comma_backtrack == 20 && pp.parse_attention);
    nu_prompt_chunks ch;

    /* empty prompt: one chunk BOS EOS EOS ... */
    NU_CHECK(nu_prompt_encode(t, "", &pp, &ch) == NU_OK);
    NU_CHECK(ch.n_chunks == 1 && ch.chunk_tokens == 77 && ch.token_count == 0);
    NU_CHECK(ch.ids[0] == BOS && ch.ids[1] == EOS && ch.ids[76] == EOS && ch.weights[40] == 1.0f);
    nu_prompt_chunks_free(&ch);

    /* exactly 75 tokens: one chunk; 76: two */
    char *p = repeat("a ", 75, NULL);
    NU_CHECK(nu_prompt_encode(t, p, &pp, &ch) == NU_OK);
    NU_CHECK(ch.n_chunks == 1 && count_in(&ch, 0, A) == 75 && ch.ids[76] == EOS && ch.token_count == 75);
    nu_prompt_chunks_free(&ch);
    free(p);
    p = repeat("a ", 80, NULL);
    NU_CHECK(nu_prompt_encode(t, p, &pp, &ch) == NU_OK);
    NU_CHECK(ch.n_chunks == 2 && count_in(&ch, 0, A) == 75 && count_in(&ch, 1, A) == 5 && ch.token_count == 80);
    NU_CHECK(ch.ids[77] == BOS && ch.ids[77 + 6] == EOS && ch.ids[77 + 76] == EOS);
    nu_prompt_chunks_free(&ch);
    free(p);

    /* comma within 20 tokens of the end: the 4 tokens after it move to the next chunk
     * (70 a, ',', then a a a a fill the chunk; the 5th a triggers the move) */
    p = repeat("a ", 70, ", a a a a a a a a a a");
    NU_CHECK(nu_prompt_encode(t, p, &pp, &ch) == NU_OK);
    NU_CHECK(ch.n_chunks == 2);
    if (ch.n_chunks == 2) {
        NU_CHECK(count_in(&ch, 0, A) == 70 && ch.ids[71] == COMMA && ch.ids[72] == EOS && ch.ids[75] == EOS);
        NU_CHECK(count_in(&ch, 1, A) == 10 && ch.ids[77 + 11] == EOS);
        NU_CHECK(ch.token_count == 75 + 10);
    }
    nu_prompt_chunks_free(&ch);
    /* the same with backtracking off: a plain split at 75 */
    nu_prompt_params off = pp;
    off.comma_backtrack = 0;
    NU_CHECK(nu_prompt_encode(t, p, &off, &ch) == NU_OK);
    NU_CHECK(ch.n_chunks == 2 && count_in(&ch, 0, A) == 74 && count_in(&ch, 1, A) == 6);
    nu_prompt_chunks_free(&ch);
    free(p);
    /* comma 25 tokens before the end: too far, plain split */
    p = repeat("a ", 50, ", a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a");
    NU_CHECK(nu_prompt_encode(t, p, &pp, &ch) == NU_OK);
    NU_CHECK(ch.n_chunks == 2 && count_in(&ch, 0, A) == 74 && count_in(&ch, 1, A) == 6);
    nu_prompt_chunks_free(&ch);
    free(p);

    /* BREAK starts a new chunk; a leading BREAK leaves an empty first chunk */
    NU_CHECK(nu_prompt_encode(t, "a BREAK a a", &pp, &ch) == NU_OK);
    NU_CHECK(ch.n_chunks == 2 && count_in(&ch, 0, A) == 1 && count_in(&ch, 1, A) == 2 && ch.token_count == 75 + 2);
    nu_prompt_chunks_free(&ch);
    NU_CHECK(nu_prompt_encode(t, "BREAK a", &pp, &ch) == NU_OK);
    NU_CHECK(ch.n_chunks == 2 && count_in(&ch, 0, A) == 0 && ch.ids[1] == EOS && count_in(&ch, 1, A) == 1);
    nu_prompt_chunks_free(&ch);
    NU_CHECK(nu_prompt_encode(t, "a BREAK", &pp, &ch) == NU_OK);
    NU_CHECK(ch.n_chunks == 1 && ch.token_count == 75); /* the chunk after BREAK is empty: not added */
    nu_prompt_chunks_free(&ch);

    /* weights per token; BOS/EOS/padding weigh 1 */
    NU_CHECK(nu_prompt_encode(t, "a (a) [a] (a:1.5)", &pp, &ch) == NU_OK);
    NU_CHECK(ch.n_chunks == 1);
    NU_CHECK(ch.weights[0] == 1.0f && ch.weights[1] == 1.0f && ch.weights[2] == (float)1.1 &&
             ch.weights[3] == (float)(1.0 / 1.1) && ch.weights[4] == 1.5f && ch.weights[5] == 1.0f);
    NU_CHECK(ch.ids[1] == A && ch.ids[4] == A && ch.ids[5] == EOS);
    nu_prompt_chunks_free(&ch);
    /* emphasis off: brackets are plain text */
    nu_prompt_params raw = pp;
    raw.parse_attention = false;
    NU_CHECK(nu_prompt_encode(t, "(a)", &raw, &ch) == NU_OK);
    NU_CHECK(ch.ids[1] == nu_clip_tokenizer_find(t, "(</w>") && ch.ids[2] == A &&
             ch.ids[3] == nu_clip_tokenizer_find(t, ")</w>") && ch.weights[2] == 1.0f);
    nu_prompt_chunks_free(&ch);

    /* SD 2.x padding: after the first end token, the pad id (0) */
    NU_CHECK(nu_clip_tokenizer_set_pad(t, "!") == NU_OK);
    NU_CHECK(nu_prompt_encode(t, "a a", &pp, &ch) == NU_OK);
    NU_CHECK(ch.ids[0] == BOS && ch.ids[2] == A && ch.ids[3] == EOS && ch.ids[4] == 0 && ch.ids[76] == 0);
    nu_prompt_chunks_free(&ch);

    /* invalid weight and parameters */
    NU_CHECK(nu_prompt_encode(t, "(a:1..2)", &pp, &ch) == NU_ERR_INVALID_ARG && ch.n_chunks == 0 && !ch.ids);
    nu_prompt_params bad = pp;
    bad.chunk_len = 0;
    NU_CHECK(nu_prompt_encode(t, "a", &bad, &ch) == NU_ERR_INVALID_ARG);
    nu_clip_tokenizer_free(t);
}

int main(void) {
    test_parse();
    test_chunks();
    return nu_test_summary("test_prompt");
}
