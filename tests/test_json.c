/*
 * test_json.c — the bounded JSON parser (src/io/json.c): grammar, string escapes and UTF-8,
 * numbers, limits (depth 64), error offsets, accessors, and hostile input (every truncation and
 * many byte flips of a sample document must fail or succeed cleanly, never crash; run under ASan
 * by `make test-asan`).
 */
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nu_test.h"
#include "nuance/io.h"

static nu_json *parse(const char *s) { return nu_json_parse(s, strlen(s)); }

static bool fails(const char *s) {
    nu_json *j = parse(s);
    if (j) {
        nu_json_free(j);
        return false;
    }
    return strncmp(nu_last_error(), "JSON: ", 6) == 0 && strstr(nu_last_error(), " at byte ") != NULL;
}

/* The string value of a one-string document, compared with want (want_len bytes). */
static bool string_is(const char *doc, const char *want, size_t want_len) {
    nu_json *j = parse(doc);
    bool ok = j && j->kind == NU_JSON_STRING && j->str_len == want_len && memcmp(j->str, want, want_len) == 0 &&
              j->str[want_len] == 0;
    nu_json_free(j);
    return ok;
}

static double number_of(const char *doc) {
    nu_json *j = parse(doc);
    double v = j && j->kind == NU_JSON_NUMBER ? j->num : -12345.0;
    nu_json_free(j);
    return v;
}

static void test_basic(void) {
    const char *doc = " {\"a\": 1, \"b\": [true, false, null, -2.5e1, \"x\"], \"c\": {\"d\": {}}, \"e\": [] } ";
    nu_json *j = parse(doc);
    NU_CHECK(j != NULL);
    if (!j) return;
    NU_CHECK(j->kind == NU_JSON_OBJECT && j->n == 4);
    NU_CHECK(nu_json_number(j, "a", 0) == 1);
    const nu_json *b = nu_json_get(j, "b");
    NU_CHECK(b && b->kind == NU_JSON_ARRAY && b->n == 5);
    NU_CHECK(nu_json_at(b, 0)->kind == NU_JSON_BOOL && nu_json_at(b, 0)->b);
    NU_CHECK(nu_json_at(b, 1)->kind == NU_JSON_BOOL && !nu_json_at(b, 1)->b);
    NU_CHECK(nu_json_at(b, 2)->kind == NU_JSON_NULL);
    NU_CHECK(nu_json_at(b, 3)->num == -25.0);
    NU_CHECK(strcmp(nu_json_at(b, 4)->str, "x") == 0);
    NU_CHECK(nu_json_at(b, 5) == NULL && nu_json_at(b, -1) == NULL);
    const nu_json *c = nu_json_get(j, "c");
    NU_CHECK(c && nu_json_get(c, "d") && nu_json_get(c, "d")->kind == NU_JSON_OBJECT && nu_json_get(c, "d")->n == 0);
    NU_CHECK(nu_json_get(j, "e")->kind == NU_JSON_ARRAY && nu_json_get(j, "e")->n == 0);
    NU_CHECK(nu_json_get(j, "zz") == NULL);
    NU_CHECK(nu_json_get(b, "a") == NULL); /* not an object */
    /* defaults when absent or of another kind */
    NU_CHECK(nu_json_number(j, "b", 7.5) == 7.5);
    NU_CHECK(strcmp(nu_json_string(j, "a", "dflt"), "dflt") == 0);
    NU_CHECK(nu_json_bool(j, "a", true) == true);
    NU_CHECK(nu_json_bool(NULL, "a", false) == false);
    nu_json_free(j);

    /* scalars at top level, duplicate keys (first wins), BOM */
    NU_CHECK(number_of("42") == 42);
    j = parse("{\"k\":1,\"k\":2}");
    NU_CHECK(j && j->n == 2 && nu_json_number(j, "k", 0) == 1);
    nu_json_free(j);
    j = parse("\xEF\xBB\xBF{\"k\":\"v\"}");
    NU_CHECK(j && strcmp(nu_json_string(j, "k", ""), "v") == 0);
    nu_json_free(j);
    nu_json_free(NULL);
}

static void test_strings(void) {
    NU_CHECK(string_is("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8));
    NU_CHECK(string_is("\"\\u0041\\u00e9\\u20AC\"", "A\xC3\xA9\xE2\x82\xAC", 6));
    NU_CHECK(string_is("\"\\ud83d\\ude00\"", "\xF0\x9F\x98\x80", 4)); /* U+1F600 from a surrogate pair */
    NU_CHECK(string_is("\"\\uDBFF\\uDFFF\"", "\xF4\x8F\xBF\xBF", 4)); /* U+10FFFF */
    NU_CHECK(string_is("\"a\\u0000b\"", "a\0b", 3));                  /* embedded NUL kept, length 3 */
    NU_CHECK(string_is("\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"", "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", 9));
    NU_CHECK(string_is("\"\"", "", 0));
    /* malformed strings */
    NU_CHECK(fails("\"abc"));
    NU_CHECK(fails("\"abc\\"));
    NU_CHECK(fails("\"\\x\""));
    NU_CHECK(fails("\"\\u12\""));
    NU_CHECK(fails("\"\\u12G4\""));
    NU_CHECK(fails("\"\\ud800\""));        /* lone high surrogate */
    NU_CHECK(fails("\"\\ud800\\u0041\"")); /* high surrogate + non-low */
    NU_CHECK(fails("\"\\udc00\""));        /* lone low surrogate */
    NU_CHECK(fails("\"a\nb\""));           /* raw control character */
    NU_CHECK(fails("\"\xC0\x80\""));       /* overlong NUL */
    NU_CHECK(fails("\"\xED\xA0\x80\""));   /* UTF-8 encoded surrogate */
    NU_CHECK(fails("\"\x80\""));           /* stray continuation byte */
    NU_CHECK(fails("\"\xE2\x82\""));       /* truncated sequence */
    NU_CHECK(fails("\"\xF4\x90\x80\x80\"")); /* > U+10FFFF */
    NU_CHECK(fails("\"\xFF\""));
    NU_CHECK(fails("{\"a\\u0000b\": 1}")); /* keys cannot hold NUL */
}

static void test_numbers(void) {
    NU_CHECK(number_of("0") == 0);
    NU_CHECK(number_of("-0") == 0 && signbit(number_of("-0")));
    NU_CHECK(number_of("1.5e3") == 1500);
    NU_CHECK(number_of("-1E-2") == -0.01);
    NU_CHECK(number_of("12345678901234567") == 12345678901234567.0);
    NU_CHECK(number_of("9007199254740993") == 9007199254740992.0); /* nearest double */
    NU_CHECK(number_of("0.1") == 0.1);
    NU_CHECK(isinf(number_of("1e400")) && number_of("1e400") > 0);
    NU_CHECK(number_of("1e-400") == 0);
    NU_CHECK(isnan(number_of("NaN")));
    NU_CHECK(number_of("Infinity") == INFINITY && number_of("-Infinity") == -INFINITY);
    const char *bad[] = {"01", "1.", ".5", "+1", "1e", "1e+", "--1", "-", "0x10", "1.e5", "- 1", "infinity", "nan", "Inf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) NU_CHECK_MSG(fails(bad[i]), "'%s' should fail", bad[i]);
    /* a number with 2000 digits is refused, 1000 accepted */
    char *big = malloc(2001);
    memset(big, '1', 2000);
    big[2000] = 0;
    NU_CHECK(fails(big));
    big[1000] = 0;
    NU_CHECK(isinf(number_of(big))); /* parses (to +inf, as Python does) */
    free(big);
    /* strtod must not follow a locale with ',' decimals */
    if (setlocale(LC_NUMERIC, "de_DE.UTF-8") || setlocale(LC_NUMERIC, "fr_FR.UTF-8")) {
        NU_CHECK(number_of("1.5") == 1.5);
        setlocale(LC_NUMERIC, "C");
    }
}

static void test_structure_errors(void) {
    const char *bad[] = {"",        "   ",       "{",          "[",          "[1,]",       "{\"a\":1,}", "{\"a\" 1}",
                         "{1:2}",   "{\"a\":}",  "[1 2]",      "{} x",       "[]]",        "tru",        "nul",
                         "falsey",  "'a'",       "[\"a\",",    "{\"a\":1",   "\x01",       "[,]",        "{,}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) NU_CHECK_MSG(fails(bad[i]), "'%s' should fail", bad[i]);
    /* the offset is reported */
    NU_CHECK(!parse("{\"a\":1,}"));
    NU_CHECK_MSG(strstr(nu_last_error(), "at byte 7") != NULL, "got '%s'", nu_last_error());
    NU_CHECK(!parse("[1, 2, @]"));
    NU_CHECK_MSG(strstr(nu_last_error(), "at byte 7") != NULL, "got '%s'", nu_last_error());
    /* NULL text with a length is an argument error, not a crash */
    NU_CHECK(nu_json_parse(NULL, 3) == NULL);
    /* the length bounds the parse: the NUL-less tail beyond len is never read */
    nu_json *j = nu_json_parse("[1]garbage", 3);
    NU_CHECK(j != NULL);
    nu_json_free(j);
}

static void test_depth(void) {
    char buf[1024];
    for (int depth = 63; depth <= 66; depth++) {
        int k = 0;
        for (int i = 0; i < depth; i++) buf[k++] = '[';
        for (int i = 0; i < depth; i++) buf[k++] = ']';
        nu_json *j = nu_json_parse(buf, (size_t)k);
        NU_CHECK_MSG((j != NULL) == (depth <= 64), "depth %d", depth);
        nu_json_free(j);
    }
    /* objects count towards the same limit */
    int k = 0;
    for (int i = 0; i < 65; i++) k += sprintf(buf + k, "{\"a\":");
    k += sprintf(buf + k, "1");
    for (int i = 0; i < 65; i++) buf[k++] = '}';
    NU_CHECK(nu_json_parse(buf, (size_t)k) == NULL);
    NU_CHECK(strstr(nu_last_error(), "deeper") != NULL);
    /* a very deep document fails fast without recursion trouble */
    size_t n = 1000000;
    char *deep = malloc(n);
    memset(deep, '[', n);
    NU_CHECK(nu_json_parse(deep, n) == NULL);
    free(deep);
}

static void test_large(void) {
    /* 200k-element array and an object with 20k keys */
    int n = nu_test_quick() ? 20000 : 200000;
    size_t cap = (size_t)n * 12 + 16;
    char *s = malloc(cap);
    size_t k = 0;
    s[k++] = '[';
    for (int i = 0; i < n; i++) k += (size_t)sprintf(s + k, i ? ",%d.5" : "%d.5", i);
    s[k++] = ']';
    nu_json *j = nu_json_parse(s, k);
    NU_CHECK(j && j->n == n && j->items[n - 1].num == n - 1 + 0.5);
    nu_json_free(j);
    k = 0;
    s[k++] = '{';
    int m = n / 10;
    for (int i = 0; i < m; i++) k += (size_t)sprintf(s + k, i ? ",\"k%d\":%d" : "\"k%d\":%d", i, i);
    s[k++] = '}';
    j = nu_json_parse(s, k);
    NU_CHECK(j && j->n == m && nu_json_number(j, "k777", -1) == 777);
    nu_json_free(j);
    free(s);
}

/* Walks the whole DOM (reads every string byte) so ASan sees any bad pointer. */
static size_t walk(const nu_json *j) {
    size_t h = (size_t)j->kind;
    if (j->kind == NU_JSON_STRING)
        for (size_t i = 0; i <= j->str_len; i++) h = h * 31 + (unsigned char)j->str[i];
    if (j->kind == NU_JSON_ARRAY || j->kind == NU_JSON_OBJECT)
        for (int i = 0; i < j->n; i++) {
            if (j->kind == NU_JSON_OBJECT) h += strlen(j->keys[i]);
            h += walk(&j->items[i]);
        }
    return h;
}

static void test_hostile(void) {
    const char *doc =
        "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
        "\"s\":\"\\u00e9\\ud83d\\ude00\\n\\\"x\",\"n\":[-1.5e-3,0,1E+2,true,false,null,[[]],{}]}";
    size_t len = strlen(doc);
    int ok = 0, err = 0;
    volatile size_t sink = 0;
    /* every truncation, in an exactly sized heap copy (ASan catches over-reads) */
    for (size_t cut = 0; cut <= len; cut++) {
        char *c = malloc(cut ? cut : 1);
        memcpy(c, doc, cut);
        nu_json *j = nu_json_parse(c, cut);
        if (j) { ok++; sink += walk(j); } else err++;
        nu_json_free(j);
        free(c);
    }
    NU_CHECK(ok == 1 && err == (int)len); /* only the full document parses */
    /* every position with several byte values */
    const unsigned char vals[] = {0x00, 0x01, 0x20, '"', '\\', '{', '}', '[', ']', ',', ':', '0', 'e', '-', 'u', 0x7F, 0x80, 0xC3, 0xED, 0xFF};
    char *c = malloc(len);
    ok = err = 0;
    for (size_t p = 0; p < len; p++)
        for (size_t v = 0; v < sizeof vals; v++) {
            memcpy(c, doc, len);
            c[p] = (char)vals[v];
            nu_json *j = nu_json_parse(c, len);
            if (j) { ok++; sink += walk(j); } else err++;
            nu_json_free(j);
        }
    free(c);
    NU_CHECK(ok > 0 && err > 0);
    printf("json hostile: %zu truncations, %d flips parsed, %d rejected\n", len + 1, ok, err);
    (void)sink;
}

int main(void) {
    test_basic();
    test_strings();
    test_numbers();
    test_structure_errors();
    test_depth();
    test_large();
    test_hostile();
    return nu_test_summary("test_json");
}
