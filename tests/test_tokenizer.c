/*
 * test_tokenizer.c — the CLIP BPE tokenizer (src/tokenizer/clip_bpe.c, unicode.c).
 *
 * 1. Unit tests (no reference files): str.lower / NFC / whitespace_clean / html.unescape / the
 *    ftfy subset / the pre-tokenizer on hand-checked strings (expected values are Python 3.11's
 *    html.unescape, str.lower, unicodedata.normalize and ftfy 6.1's documented behaviour); BPE on
 *    a tiny in-memory vocabulary; hostile vocabulary files (each must fail with a message, never
 *    crash); the "what to pass" message when no vocabulary is given.
 * 2. Reference cases (../shared/reference/tokenizer/cases.json, ~300 prompts): ids must be
 *    IDENTICAL (no tolerance: token ids are integers) for the openai form (openai_raw/_ids77 and
 *    the BPE strings), transformers with ftfy (hf_ftfy_raw/_ids77), without ftfy
 *    (hf_noftfy_raw/_ids77) and SD2's pad_token '!' (hf_sd2_raw/_ids77), with the vocabulary
 *    loaded from the .txt.gz and from the HF folder, and from a lone merges.txt. The counts per
 *    form are printed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nu_test.h"
#include "nuance/io.h"
#include "nuance/tokenizer.h"
#include "tokenizer/tokenizer_internal.h"

/* ------------------------------------------------------------------ helpers */

static char *ustr_utf8(const nu_ustr *s) {
    char *o = malloc(s->n * 4 + 1);
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) k += (size_t)nu_utf8_put(s->v[i], (uint8_t *)o + k);
    o[k] = 0;
    return o;
}

typedef void (*xform)(nu_ustr *);

static void check_xform(const char *name, xform f, const char *in, const char *want) {
    nu_ustr s = {0};
    nu_ustr_from_utf8(&s, in, strlen(in));
    f(&s);
    char *got = ustr_utf8(&s);
    NU_CHECK_MSG(!strcmp(got, want), "%s(\"%s\") = \"%s\", want \"%s\"", name, in, got, want);
    free(got);
    nu_ustr_free(&s);
}

static void test_unicode(void) {
    /* str.lower, incl. Final_Sigma and the one multi-codepoint mapping */
    check_xform("lower", nu_uc_lower, "MiXeD CaSe", "mixed case");
    check_xform("lower", nu_uc_lower, "ΟΔΟΣ", "οδος");             /* final sigma at the end */
    check_xform("lower", nu_uc_lower, "ΟΔΟΣ ΣΑ", "οδος σα");       /* not final before a letter */
    check_xform("lower", nu_uc_lower, "Σ", "σ");                   /* no cased letter before */
    check_xform("lower", nu_uc_lower, "ΑΣ.", "ας.");
    check_xform("lower", nu_uc_lower, "İ", "i\xCC\x87");          /* U+0130 -> i + U+0307 */
    check_xform("lower", nu_uc_lower, "ÆØÅ ΓΕΙΆ ÀÉ Ǆ", "æøå γειά àé ǆ");
    /* NFC */
    check_xform("nfc", nu_uc_nfc, "e\xCC\x81", "é");
    check_xform("nfc", nu_uc_nfc, "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "각"); /* Hangul L V T */
    check_xform("nfc", nu_uc_nfc, "a\xCC\x81\xCC\xA3", "ạ\xCC\x81");          /* reorder: dot below first */
    check_xform("nfc", nu_uc_nfc, "\xE2\x84\xA6", "Ω");                          /* singleton U+2126 -> U+03A9 */
    check_xform("nfc", nu_uc_nfc, "\xCC\x81" "a", "\xCC\x81" "a");               /* leading combining mark */
    /* whitespace_clean */
    check_xform("ws", nu_uc_whitespace_clean, "  a \t b\r\n\xE3\x80\x80" "c  ", "a b c");
    check_xform("ws", nu_uc_whitespace_clean, "zero\xE2\x80\x8Bwidth", "zero\xE2\x80\x8Bwidth"); /* U+200B: not space */
    /* html.unescape */
    check_xform("unescape", nu_uc_html_unescape, "&amp;lt; &lt;&gt; &quot;", "&lt; <> \"");
    check_xform("unescape", nu_uc_html_unescape, "&ampfoo &copy2 &notit; &#x263A; &#65 &#0; &#128;", "&foo ©2 ¬it; ☺ A \xEF\xBF\xBD €");
    check_xform("unescape", nu_uc_html_unescape, "&#xD800; &#1114112; &#1; &#; &bogus; & x", "\xEF\xBF\xBD \xEF\xBF\xBD  &#; &bogus; & x");
    /* ftfy subset */
    check_xform("ftfy", nu_uc_ftfy_fix_text, "cafÃ© mojibake", "café mojibake");
    check_xform("ftfy", nu_uc_ftfy_fix_text, "&lt;b&gt;bold&lt;/b&gt;", "<b>bold</b>");
    check_xform("ftfy", nu_uc_ftfy_fix_text, "<b>bold</b> &amp; more", "<b>bold</b> &amp; more");
    check_xform("ftfy", nu_uc_ftfy_fix_text, "&amp;amp; &EACUTE; &nTILDE;", "& É &nTILDE;");
    check_xform("ftfy", nu_uc_ftfy_fix_text, "ﬁ ﬀ ＡＢＣ\xE3\x80\x80x", "fi ff ABC x");
    check_xform("ftfy", nu_uc_ftfy_fix_text, "“curly” ‘single’", "\"curly\" 'single'");
    check_xform("ftfy", nu_uc_ftfy_fix_text, "control\x07" "bell\x1B[31mred\x1B[0m", "controlbellred");
    check_xform("ftfy", nu_uc_ftfy_fix_text, "naïve CAFÉ” °C ½ ™ 東京", "naïve CAFÉ\" °C ½ ™ 東京"); /* not mojibake */
    check_xform("ftfy", nu_uc_ftfy_fix_text, "This â€” should be an em dash", "This — should be an em dash");
    check_xform("ftfy", nu_uc_ftfy_fix_text, "cafÃ© 東京", "café 東京"); /* decode_inconsistent_utf8 */
    check_xform("ftfy", nu_uc_ftfy_fix_text, "\xC2\x85x", "…x"); /* C1 control read as windows-1252 */
    check_xform("ftfy", nu_uc_ftfy_fix_text, "a\r\nb\rc", "a\nb\nc");
    check_xform("ftfy", nu_uc_ftfy_fix_text, "&lt;x\n<b>&amp;\n&amp;", "<x\n<b>&amp;\n&amp;"); /* '<' stops unescaping from its line on */

    /* pre-tokenizer: 'it's' contraction, letters, one digit per token, other runs, ſ folding */
    const char *text = "it's a 3.14 dog's<|endoftext|>?!?! 'ſ x";
    const char *want[] = {"it", "'s", "a", "3", ".", "1", "4", "dog", "'s", "<|endoftext|>", "?!?!", "'ſ", "x"};
    nu_ustr s = {0};
    nu_ustr_from_utf8(&s, text, strlen(text));
    size_t pos = 0, a, b;
    int k = 0;
    while (nu_uc_pretok_next(s.v, s.n, &pos, &a, &b)) {
        nu_ustr piece = {0};
        nu_ustr_append(&piece, s.v + a, b - a);
        char *p = ustr_utf8(&piece);
        NU_CHECK_MSG(k < 13 && !strcmp(p, want[k]), "pretok piece %d = \"%s\"", k, p);
        free(p);
        nu_ustr_free(&piece);
        k++;
    }
    NU_CHECK_MSG(k == 13, "pretok: %d pieces, want 13", k);
    nu_ustr_free(&s);

    check_xform("basic", nu_uc_basic_tokenize, " Café,  naïve!?東京\x07 x ", "cafe , naive ! ? 東 京 x");
    NU_CHECK(nu_uc_ftfy_is_bad((const uint32_t[]){0xC3, 0xA9}, 2));
    NU_CHECK(!nu_uc_ftfy_is_bad((const uint32_t[]){'n', 'a', 0xEF, 'v', 'e'}, 5));
}

/* A tiny vocabulary in openai form: header + merges; ids built as SimpleTokenizer does. */
static void test_tiny_bpe(void) {
    /* no trailing newline: with one, split('\n') gives a last empty line that takes an id */
    const char *merges = "#version: 0.2\nl o\nlo w</w>\nh e\nhe l\nhel lo";
    nu_clip_tokenizer *t = NULL;
    NU_CHECK(nu_clip_tokenizer_load_memory(NULL, 0, merges, strlen(merges), "tiny", &t) == NU_OK);
    if (!t) return;
    /* ids: 0..255 byte chars, 256..511 with </w>, 512.. merges, then the two specials */
    NU_CHECK(nu_clip_tokenizer_find(t, "!") == 0);
    NU_CHECK(nu_clip_tokenizer_find(t, "!</w>") == 256);
    NU_CHECK(nu_clip_tokenizer_find(t, "lo") == 512);
    NU_CHECK(nu_clip_tokenizer_find(t, "low</w>") == 513);
    NU_CHECK(nu_clip_tokenizer_find(t, "hello") == 516);
    NU_CHECK(nu_clip_tokenizer_bos(t) == 517 && nu_clip_tokenizer_eos(t) == 518);
    NU_CHECK(nu_clip_tokenizer_vocab_size(t) == 519);
    int32_t *ids;
    int n;
    NU_CHECK(nu_clip_tokenize(t, "Low HELLO hellow", &ids, &n) == NU_OK);
    /* low -> lo + w</w> -> low</w>; hello -> he l l o -> hel l o -> ... "hello" needs o</w>: the
     * last symbol is "o</w>", so hel + lo? "l o</w>" is no merge: hel, l, o</w>.
     * hellow -> h e l l o w</w> -> (l,o) first: h e l lo w</w> -> (lo,w</w>): h e l low</w>
     * -> (h,e): he l low</w> -> (he,l): hel low</w>. */
    const char *want[] = {"low</w>", "hel", "l", "o</w>", "hel", "low</w>"};
    NU_CHECK_MSG(n == 6, "tiny bpe: %d ids", n);
    for (int i = 0; i < n && i < 6; i++)
        NU_CHECK_MSG(!strcmp(nu_clip_tokenizer_token(t, ids[i]), want[i]), "tiny bpe token %d = %s", i,
                     nu_clip_tokenizer_token(t, ids[i]));
    free(ids);
    int32_t p[8];
    NU_CHECK(nu_clip_encode_padded(t, "low low low low low low low low", 8, p) == NU_OK);
    NU_CHECK(p[0] == 517 && p[1] == 513 && p[6] == 513 && p[7] == 518);
    NU_CHECK(nu_clip_encode_padded(t, "", 8, p) == NU_OK);
    NU_CHECK(p[0] == 517 && p[1] == 518 && p[7] == 518);
    NU_CHECK(nu_clip_tokenizer_set_pad(t, "!") == NU_OK && nu_clip_tokenizer_pad(t) == 0);
    NU_CHECK(nu_clip_encode_padded(t, "", 8, p) == NU_OK);
    NU_CHECK(p[0] == 517 && p[1] == 518 && p[2] == 0 && p[7] == 0);
    NU_CHECK(nu_clip_tokenizer_set_pad(t, "no-such-token") == NU_ERR_NOT_FOUND);
    nu_clip_tokenizer_free(t);
}

static void expect_fail(const char *what, const char *vj, const char *merges) {
    nu_clip_tokenizer *t = NULL;
    nu_status st = nu_clip_tokenizer_load_memory(vj, vj ? strlen(vj) : 0, merges, strlen(merges), what, &t);
    NU_CHECK_MSG(st != NU_OK && !t, "%s: loaded although malformed", what);
    if (st != NU_OK) NU_CHECK_MSG(strstr(nu_last_error(), what) != NULL, "%s: message lacks the source: %s", what, nu_last_error());
    nu_clip_tokenizer_free(t);
}

static void test_hostile(void) {
    const char *mg = "#version: 0.2\na b\n";
    expect_fail("not-json", "{\"a\": 1", mg);
    expect_fail("negative-id", "{\"<|startoftext|>\": 0, \"<|endoftext|>\": -1}", mg);
    expect_fail("huge-id", "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1e12}", mg);
    expect_fail("fraction-id", "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1.5}", mg);
    expect_fail("string-id", "{\"<|startoftext|>\": 0, \"<|endoftext|>\": \"1\"}", mg);
    expect_fail("no-specials", "{\"a\": 0, \"b\": 1}", mg);
    expect_fail("array", "[1, 2]", mg);
    expect_fail("no-merges", NULL, "#version: 0.2");
    expect_fail("bad-utf8", NULL, "#version: 0.2\n\xFF\xFE b\n");
    /* HF form, vocab lacking merge results and byte symbols: loads; unknown symbols -> <|endoftext|> */
    nu_clip_tokenizer *t = NULL;
    const char *vj = "{\"<|startoftext|>\": 5, \"<|endoftext|>\": 6, \"a\": 1}";
    NU_CHECK(nu_clip_tokenizer_load_memory(vj, strlen(vj), mg, strlen(mg), "sparse", &t) == NU_OK);
    if (t) {
        int32_t *ids;
        int n;
        NU_CHECK(nu_clip_tokenize(t, "ab a x", &ids, &n) == NU_OK);
        /* "ab" -> a, b</w> (the merge is (a, b), not (a, b</w>)); "a" -> a</w>; "x" -> x</w> */
        NU_CHECK_MSG(n == 4 && ids[0] == 1 && ids[1] == 6 && ids[2] == 6 && ids[3] == 6, "sparse vocab: n=%d", n);
        free(ids);
        nu_clip_tokenizer_free(t);
    }
    /* missing vocabulary: the message tells what to pass */
    NU_CHECK(nu_clip_tokenizer_load(NULL, &t) == NU_ERR_NOT_FOUND && strstr(nu_last_error(), "--vocab"));
    NU_CHECK(nu_clip_tokenizer_load("/nonexistent/tokenizer", &t) == NU_ERR_NOT_FOUND && strstr(nu_last_error(), "--vocab"));
    NU_CHECK(nu_clip_tokenizer_load("/", &t) == NU_ERR_NOT_FOUND && strstr(nu_last_error(), "--vocab"));
    /* a corrupt gzip file */
    char path[] = "/tmp/nu_tok_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) {
        const unsigned char junk[] = {0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3, 0xAB, 0xCD, 0xEF};
        NU_CHECK(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
        close(fd);
        NU_CHECK(nu_clip_tokenizer_load(path, &t) == NU_ERR_FORMAT && !t);
        unlink(path);
    }
}

/* ------------------------------------------------------------------ reference cases */

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    b[*n] = 0;
    fclose(f);
    return b;
}

static bool ids_equal(const nu_json *arr, const int32_t *ids, int n) {
    if (!arr || arr->kind != NU_JSON_ARRAY || arr->n != n) return false;
    for (int i = 0; i < n; i++)
        if ((int32_t)arr->items[i].num != ids[i]) return false;
    return true;
}

static void print_ids(const char *label, const nu_json *arr, const int32_t *ids, int n, const nu_clip_tokenizer *t) {
    fprintf(stderr, "    %s want:", label);
    for (int i = 0; arr && i < arr->n && i < 40; i++) fprintf(stderr, " %s", nu_clip_tokenizer_token(t, (int32_t)arr->items[i].num));
    fprintf(stderr, "\n    %s got: ", label);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %s", nu_clip_tokenizer_token(t, ids[i]));
    fprintf(stderr, "\n");
}

/* Compares raw ids and the 77-id form for one tokenizer setup; returns the number of cases where
 * both agree. */
static int run_form(const nu_json *cases, nu_clip_tokenizer *t, const char *form, const char *raw_key,
                    const char *ids_key, bool check_bpe) {
    int ok = 0;
    for (int c = 0; c < cases->n; c++) {
        const nu_json *cs = &cases->items[c];
        const nu_json *tj = nu_json_get(cs, "text");
        const char *text = tj && tj->kind == NU_JSON_STRING ? tj->str : "";
        size_t tlen = tj && tj->kind == NU_JSON_STRING ? tj->str_len : 0;
        const nu_json *raw = nu_json_get(cs, raw_key), *i77 = nu_json_get(cs, ids_key);
        int32_t *ids = NULL;
        int n = 0;
        int32_t p77[77];
        bool good = nu_clip_tokenize_n(t, text, tlen, &ids, &n) == NU_OK && ids_equal(raw, ids, n) &&
                    nu_clip_encode_padded_n(t, text, tlen, 77, p77) == NU_OK && ids_equal(i77, p77, 77);
        if (good && check_bpe) {
            const nu_json *bpe = nu_json_get(cs, "openai_bpe");
            for (int i = 0; bpe && i < bpe->n && i < n; i++)
                good &= !strcmp(nu_clip_tokenizer_token(t, ids[i]), bpe->items[i].str);
        }
        if (good) {
            ok++;
        } else {
            fprintf(stderr, "  %s mismatch, case %d: \"%s\"\n", form, (int)nu_json_number(cs, "id", -1), text);
            print_ids(form, raw, ids, n, t);
        }
        free(ids);
    }
    printf("  %-34s %d / %d cases identical\n", form, ok, cases->n);
    NU_CHECK_MSG(ok == cases->n, "%s: %d of %d cases differ", form, cases->n - ok, cases->n);
    return ok;
}

static void test_reference(const char *shared) {
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/reference/tokenizer", shared);
    snprintf(path, sizeof path, "%s/cases.json", dir);
    size_t n;
    char *txt = slurp(path, &n);
    NU_CHECK_MSG(txt != NULL, "cannot read %s", path);
    if (!txt) return;
    nu_json *root = nu_json_parse(txt, n);
    free(txt);
    NU_CHECK(root != NULL);
    if (!root) return;
    const nu_json *cases = nu_json_get(root, "cases");
    NU_CHECK(cases && cases->kind == NU_JSON_ARRAY && cases->n > 0);

    nu_clip_tokenizer *gz = NULL, *hf = NULL, *mg = NULL;
    snprintf(path, sizeof path, "%s/bpe_simple_vocab_16e6.txt.gz", dir);
    NU_CHECK_MSG(nu_clip_tokenizer_load(path, &gz) == NU_OK, "%s", nu_last_error());
    snprintf(path, sizeof path, "%s/hf", dir);
    NU_CHECK_MSG(nu_clip_tokenizer_load(path, &hf) == NU_OK, "%s", nu_last_error());
    if (!gz || !hf) goto done;
    NU_CHECK(nu_clip_tokenizer_norm(gz) == NU_CLIP_NORM_OPENAI && nu_clip_tokenizer_norm(hf) == NU_CLIP_NORM_HF);
    NU_CHECK(nu_clip_tokenizer_vocab_size(gz) == 49408 && nu_clip_tokenizer_vocab_size(hf) == 49408);
    NU_CHECK(nu_clip_tokenizer_bos(gz) == 49406 && nu_clip_tokenizer_eos(gz) == 49407);
    /* the two files give the same id <-> string table */
    int same = 0;
    for (int32_t id = 0; id < 49408; id++) {
        const char *a = nu_clip_tokenizer_token(gz, id), *b = nu_clip_tokenizer_token(hf, id);
        same += a && b && !strcmp(a, b);
    }
    NU_CHECK_MSG(same == 49408, "vocabularies differ: %d of 49408 ids agree", same);

    printf("tokenizer reference cases (%s):\n", dir);
    run_form(cases, gz, "openai (.txt.gz)", "openai_raw", "openai_ids77", true);
    run_form(cases, hf, "hf_ftfy (vocab.json+merges.txt)", "hf_ftfy_raw", "hf_ftfy_ids77", false);
    /* either file in either mode */
    nu_clip_tokenizer_set_norm(hf, NU_CLIP_NORM_OPENAI);
    run_form(cases, hf, "openai (HF files)", "openai_raw", "openai_ids77", true);
    nu_clip_tokenizer_set_norm(gz, NU_CLIP_NORM_HF);
    run_form(cases, gz, "hf_ftfy (.txt.gz)", "hf_ftfy_raw", "hf_ftfy_ids77", false);
    /* transformers without ftfy (BasicTokenizer fallback of 4.30) */
    nu_clip_tokenizer_set_norm(hf, NU_CLIP_NORM_HF_NOFTFY);
    run_form(cases, hf, "hf_noftfy (BasicTokenizer)", "hf_noftfy_raw", "hf_noftfy_ids77", false);
    /* SD2: pad_token '!' */
    nu_clip_tokenizer_set_norm(hf, NU_CLIP_NORM_HF);
    NU_CHECK(nu_clip_tokenizer_set_pad(hf, "!") == NU_OK && nu_clip_tokenizer_pad(hf) == 0);
    run_form(cases, hf, "hf_sd2 (pad_token '!')", "hf_sd2_raw", "hf_sd2_ids77", false);
    /* a lone merges.txt builds the same ids */
    snprintf(path, sizeof path, "%s/hf/merges.txt", dir);
    char *m = slurp(path, &n);
    NU_CHECK(m && nu_clip_tokenizer_load_memory(NULL, 0, m, n, "merges.txt", &mg) == NU_OK);
    free(m);
    if (mg) {
        same = 0;
        for (int32_t id = 0; id < 49408; id++) {
            const char *a = nu_clip_tokenizer_token(gz, id), *b = nu_clip_tokenizer_token(mg, id);
            same += a && b && !strcmp(a, b);
        }
        NU_CHECK_MSG(same == 49408, "merges.txt alone: %d of 49408 ids agree", same);
    }
    /* a diffusers-style folder with SD2's special_tokens_map.json */
    char tmpdir[] = "/tmp/nu_tok_sd2_XXXXXX";
    if (mkdtemp(tmpdir)) {
        char cmd[9000];
        snprintf(cmd, sizeof cmd, "mkdir -p %s/tokenizer && cp %s/hf/vocab.json %s/hf/merges.txt %s/tokenizer/ && "
                                  "printf '{\"pad_token\": \"!\"}' > %s/tokenizer/special_tokens_map.json",
                 tmpdir, dir, dir, tmpdir, tmpdir);
        NU_CHECK(system(cmd) == 0);
        nu_clip_tokenizer *sd2 = NULL;
        NU_CHECK_MSG(nu_clip_tokenizer_load(tmpdir, &sd2) == NU_OK, "%s", nu_last_error());
        NU_CHECK(sd2 && nu_clip_tokenizer_pad(sd2) == 0 && nu_clip_tokenizer_norm(sd2) == NU_CLIP_NORM_HF);
        if (sd2) run_form(cases, sd2, "hf_sd2 (folder config)", "hf_sd2_raw", "hf_sd2_ids77", false);
        nu_clip_tokenizer_free(sd2);
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
        NU_CHECK(system(cmd) == 0);
    }
done:
    nu_clip_tokenizer_free(gz);
    nu_clip_tokenizer_free(hf);
    nu_clip_tokenizer_free(mg);
    nu_json_free(root);
}

int main(void) {
    test_unicode();
    test_tiny_bpe();
    test_hostile();
    if (nu_test_failures) return nu_test_summary("test_tokenizer"); /* report unit failures even without shared/ */
    const char *shared = nu_test_require_shared("the CLIP tokenizer reference cases");
    test_reference(shared);
    return nu_test_summary("test_tokenizer");
}
