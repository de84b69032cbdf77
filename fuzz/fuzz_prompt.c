/*
 * fuzz_prompt.c — libFuzzer target for the text side of the CLIP tokenizer: the A1111 prompt
 * parser and chunker (src/tokenizer/prompt.c), the ftfy/NFC/lowercase/unescape cleaning and the
 * BPE (unicode.c, clip_bpe.c), and the vocabulary parsers.
 * First input byte < 0xC0: the rest is a prompt, encoded with a small built-in vocabulary in the
 * normalisation mode byte % 3, with and without SD2's '!' padding. Otherwise the rest is a vocabulary:
 * "vocab.json bytes \0 merges bytes" (no NUL: merges text alone, openai form), which is loaded
 * and, if accepted, used to encode a fixed prompt.
 * Seeds: fuzz/corpus/prompt/. Built by `make fuzz` (clang, -DNU_FUZZ=ON).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nuance/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static nu_clip_tokenizer *tok;

static void encode_all(nu_clip_tokenizer *t, const char *text, size_t len) {
    int32_t *ids = NULL;
    int n = 0;
    if (nu_clip_tokenize_n(t, text, len, &ids, &n) == NU_OK) {
        volatile int32_t sink = 0;
        for (int i = 0; i < n; i++) sink += ids[i];
        free(ids);
    }
    int32_t p[77];
    (void)nu_clip_encode_padded_n(t, text, len, 77, p);
    nu_prompt_params pp;
    nu_prompt_params_init(&pp);
    pp.comma_backtrack = (int)(len % 30);
    nu_prompt_chunks ch;
    if (nu_prompt_encode(t, text, &pp, &ch) == NU_OK) nu_prompt_chunks_free(&ch);
    char *norm = NULL;
    if (nu_clip_normalize(t, text, &norm) == NU_OK) free(norm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 1 << 16) return 0;
    if (!tok) {
        static const char merges[] = "#version: 0.2\nh e\nl l\nhe ll\nhell o</w>\n, </w>\n! !\n( (";
        if (nu_clip_tokenizer_load_memory(NULL, 0, merges, sizeof merges - 1, "fuzz", &tok) != NU_OK) abort();
    }
    char *text = malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    if (data[0] < 0xC0) {
        nu_prompt_segment *s;
        int n;
        if (nu_prompt_parse_attention(text, &s, &n) == NU_OK) nu_prompt_segments_free(s, n);
        nu_clip_tokenizer_set_pad(tok, "<|endoftext|>");
        nu_clip_tokenizer_set_norm(tok, (nu_clip_norm)(data[0] % NU_CLIP_NORM_COUNT));
        encode_all(tok, text, size - 1);
        if (data[0] & 4) {
            nu_clip_tokenizer_set_pad(tok, "!");
            encode_all(tok, text, strlen(text));
        }
    } else {
        const char *nul = memchr(text, 0, size - 1);
        nu_clip_tokenizer *t = NULL;
        nu_status st = nul ? nu_clip_tokenizer_load_memory(text, (size_t)(nul - text), nul + 1,
                                                           size - 1 - (size_t)(nul - text) - 1, "fuzz", &t)
                           : nu_clip_tokenizer_load_memory(NULL, 0, text, size - 1, "fuzz", &t);
        if (st == NU_OK) {
            {
                static const char p[] = "Hello, (world:1.2) BREAK &amp; caf\xC3\x83\xC2\xA9!";
                encode_all(t, p, sizeof p - 1);
            }
            for (int32_t id = 0; id < 600; id++) (void)nu_clip_tokenizer_token(t, id);
            nu_clip_tokenizer_free(t);
        }
    }
    free(text);
    return 0;
}
