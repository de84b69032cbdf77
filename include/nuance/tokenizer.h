/*
 * nuance/tokenizer.h — the CLIP BPE tokenizer (Stable Diffusion's text input) and the
 * AUTOMATIC1111 prompt syntax on top of it.
 *
 *     nu_clip_tokenizer *tok;
 *     if (nu_clip_tokenizer_load("model/tokenizer", &tok) != NU_OK) { puts(nu_last_error()); ... }
 *     int32_t ids[77];
 *     nu_clip_encode_padded(tok, "a photo of a cat", 77, ids);   // [BOS] + tokens + [EOS] + padding
 *
 *     nu_prompt_params pp;
 *     nu_prompt_params_init(&pp);
 *     nu_prompt_chunks ch;
 *     nu_prompt_encode(tok, "a (red:1.3) cat BREAK [blurry] background", &pp, &ch);
 *     // ch.n_chunks chunks of 77 ids and 77 weights each; the text encoder runs per chunk
 *     nu_prompt_chunks_free(&ch);
 *     nu_clip_tokenizer_free(tok);
 *
 * The vocabulary is loaded from either form users have: openai CLIP's
 * bpe_simple_vocab_16e6.txt.gz, or a Hugging Face tokenizer folder (vocab.json + merges.txt, as
 * in a diffusers model's tokenizer/). Encoding reproduces, id for id, openai's SimpleTokenizer
 * (NU_CLIP_NORM_OPENAI) or transformers' CLIPTokenizer with ftfy installed (NU_CLIP_NORM_HF) or
 * without it (NU_CLIP_NORM_HF_NOFTFY), including SD 2.x's pad_token '!' (see
 * nu_clip_tokenizer_set_pad). docs/tokenizer.md says what
 * of ftfy is reproduced and where results can differ. A loaded tokenizer is immutable: encoding
 * from several threads at once is safe.
 */
#ifndef NUANCE_TOKENIZER_H
#define NUANCE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "nuance/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- CLIP BPE tokenizer */

typedef struct nu_clip_tokenizer nu_clip_tokenizer;

/* How text is cleaned before BPE. Both: ftfy.fix_text, whitespace runs -> ' ', strip, lowercase,
 * then CLIP's pre-tokenizer regex and byte-level BPE. */
typedef enum nu_clip_norm {
    /* openai CLIP / open_clip SimpleTokenizer: also html.unescape() twice after ftfy. */
    NU_CLIP_NORM_OPENAI = 0,
    /* transformers CLIPTokenizer (slow, ftfy importable): special tokens are split out of the raw
     * text first (each piece is then cleaned on its own); no html.unescape beyond ftfy's own. */
    NU_CLIP_NORM_HF,
    /* transformers 4.30 CLIPTokenizer WITHOUT ftfy installed (a plain diffusers install):
     * BasicTokenizer fallback — lowercase, accents stripped (NFD, Mn dropped), every punctuation
     * character split off, spaces around CJK ideographs; specials split first as in _HF.
     * (transformers >= 4.31 changed this fallback; not reproduced.) */
    NU_CLIP_NORM_HF_NOFTFY,
    NU_CLIP_NORM_COUNT
} nu_clip_norm;

/* Loads a vocabulary. `path` may be:
 *   - a folder holding vocab.json + merges.txt (a diffusers tokenizer/ folder), or a model folder
 *     with such a tokenizer/ subfolder, or a folder holding bpe_simple_vocab_16e6.txt.gz;
 *   - a vocab.json or merges.txt file (its partner is taken from the same folder; a merges.txt
 *     alone builds the ids the way openai CLIP does, which gives the same ids);
 *   - openai's bpe_simple_vocab_16e6.txt.gz (or its uncompressed .txt).
 * NULL or a missing path returns NU_ERR_NOT_FOUND with a message saying what to pass (--vocab).
 * Folders/vocab.json default to NU_CLIP_NORM_HF and read pad_token from tokenizer_config.json /
 * special_tokens_map.json (SD 2.x's '!'); the openai file defaults to NU_CLIP_NORM_OPENAI. */
nu_status nu_clip_tokenizer_load(const char *path, nu_clip_tokenizer **out);
/* From memory (fuzzers, tests). merges: openai's merges text (first line a header, then one
 * "a b" pair per line, as inside the .txt.gz, or HF's merges.txt). vocab_json may be NULL: ids
 * are then built as openai CLIP builds them. `label` names the source in error messages. */
nu_status nu_clip_tokenizer_load_memory(const char *vocab_json, size_t vocab_len, const char *merges,
                                        size_t merges_len, const char *label, nu_clip_tokenizer **out);
void nu_clip_tokenizer_free(nu_clip_tokenizer *t);

void nu_clip_tokenizer_set_norm(nu_clip_tokenizer *t, nu_clip_norm norm);
nu_clip_norm nu_clip_tokenizer_norm(const nu_clip_tokenizer *t);
/* Padding token: "<|endoftext|>" (SD 1.x, the default) or "!" (SD 2.x configs: pads with id 0).
 * As in transformers, a pad token other than the end token is also a special token that is
 * split out of the text in NU_CLIP_NORM_HF, so every '!' of a prompt becomes id 0 there.
 * NU_ERR_NOT_FOUND if the token is not in the vocabulary. */
nu_status nu_clip_tokenizer_set_pad(nu_clip_tokenizer *t, const char *pad_token);

int nu_clip_tokenizer_vocab_size(const nu_clip_tokenizer *t); /* largest id + 1 */
int32_t nu_clip_tokenizer_bos(const nu_clip_tokenizer *t);    /* <|startoftext|> (49406)  */
int32_t nu_clip_tokenizer_eos(const nu_clip_tokenizer *t);    /* <|endoftext|>   (49407)  */
int32_t nu_clip_tokenizer_pad(const nu_clip_tokenizer *t);    /* eos, or 0 for SD 2.x '!' */
/* Token id of a vocabulary string in its vocab.json form (e.g. ",</w>"), -1 if absent. */
int32_t nu_clip_tokenizer_find(const nu_clip_tokenizer *t, const char *token);
/* Vocabulary string of an id (vocab.json form: byte-level characters, "</w>" ending a word);
 * NULL for an unknown id. Valid while the tokenizer lives. */
const char *nu_clip_tokenizer_token(const nu_clip_tokenizer *t, int32_t id);

/* Token ids of UTF-8 text without BOS/EOS and without truncation. *ids is malloc'ed (release
 * with free()); *n may be 0 (then *ids may be NULL). */
nu_status nu_clip_tokenize(const nu_clip_tokenizer *t, const char *text, int32_t **ids, int *n);
/* [BOS] + ids[:max_len-2] + [EOS], padded with the pad id to max_len (77 for SD):
 * what FrozenCLIPEmbedder / diffusers feed the text encoder. */
nu_status nu_clip_encode_padded(const nu_clip_tokenizer *t, const char *text, int max_len, int32_t *out);
/* The same two for text of len bytes that may contain NUL characters. */
nu_status nu_clip_tokenize_n(const nu_clip_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n);
nu_status nu_clip_encode_padded_n(const nu_clip_tokenizer *t, const char *text, size_t len, int max_len, int32_t *out);
/* The text after the tokenizer's cleaning (ftfy, unescaping, whitespace, lowercase), for
 * debugging; malloc'ed UTF-8 (free()). */
nu_status nu_clip_normalize(const nu_clip_tokenizer *t, const char *text, char **out);

/* ---------------------------------------------------------------- A1111 prompt syntax */

/* One piece of a prompt after parse_prompt_attention: text and its weight. A BREAK keyword is a
 * piece with text "BREAK" and weight -1, as in A1111. */
typedef struct nu_prompt_segment {
    char *text;
    double weight;
} nu_prompt_segment;

/* AUTOMATIC1111's modules/prompt_parser.parse_prompt_attention: (x) x1.1, ((x)) x1.21,
 * (x:1.3) x1.3, [x] /1.1, \( \) \[ \] \\ literal, a lone '\' dropped, unbalanced brackets
 * closed at the end, BREAK (a whole word, any surrounding whitespace) as a separator, runs of
 * equal weight merged. Weights are products in double precision, as in Python.
 * A weight that Python's float() would reject (e.g. "(x:1.2.3)") is NU_ERR_INVALID_ARG; A1111
 * raises there too. Free with nu_prompt_segments_free. */
nu_status nu_prompt_parse_attention(const char *prompt, nu_prompt_segment **segs, int *n);
void nu_prompt_segments_free(nu_prompt_segment *segs, int n);

typedef struct nu_prompt_params {
    int chunk_len;        /* tokens per chunk between BOS and EOS (75)                     */
    int comma_backtrack;  /* A1111 comma_padding_backtrack (20; 0 disables)                 */
    bool parse_attention; /* false: the whole prompt is one piece of weight 1 (emphasis off) */
} nu_prompt_params;
void nu_prompt_params_init(nu_prompt_params *p);

/* Chunks as A1111's FrozenCLIPEmbedderWithCustomWords.tokenize_line makes them: each chunk is
 * [BOS] + chunk_len tokens + [EOS] (ids), weights 1.0 at BOS/EOS/padding; padding is the end
 * token, and where the tokenizer's pad id differs (SD 2.x) every position after the first end
 * token becomes the pad id (A1111's process_tokens). A prompt longer than chunk_len tokens
 * continues in the next chunk; when a chunk fills up, the tokens after its last comma move to
 * the next chunk if that comma is within comma_backtrack tokens of the end; BREAK starts a new
 * chunk. An empty prompt gives one chunk. */
typedef struct nu_prompt_chunks {
    int n_chunks;
    int chunk_tokens;  /* chunk_len + 2 (77)                                        */
    int32_t *ids;      /* [n_chunks * chunk_tokens]                                  */
    float *weights;    /* [n_chunks * chunk_tokens]                                  */
    int token_count;   /* A1111's count shown as "N/75" (full chunks + the last one) */
} nu_prompt_chunks;
nu_status nu_prompt_encode(const nu_clip_tokenizer *t, const char *prompt, const nu_prompt_params *p,
                           nu_prompt_chunks *out);
void nu_prompt_chunks_free(nu_prompt_chunks *c);

#ifdef __cplusplus
}
#endif

#endif
