/*
 * sd_text.c — prompt -> UNet conditioning for Stable Diffusion: A1111 prompt syntax and chunking
 * (nu_prompt_encode), the CLIP text encoder on every 77-token chunk, emphasis weights applied as
 * A1111 does (sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase.process_tokens: z *= weight
 * per token, then z *= original_mean / new_mean), chunks concatenated along the token axis.
 * Cond and uncond get the same number of chunks: the shorter is padded with the encoding of the
 * empty prompt (A1111's "pad prompt/negative prompt" option), so both run in one UNet batch.
 * A prompt without emphasis that fits one chunk gives exactly diffusers' encode_prompt.
 * Tested by tests/test_sd_pipeline.c (conditioning vs the reference's text encoder output and the
 * full pipeline runs; weighting identities).
 */
#include <stdlib.h>
#include <string.h>

#include "pipeline/sd_internal.h"

void sd_cond_free(sd_cond *c) {
    free(c->cond);
    free(c->uncond);
    memset(c, 0, sizeof *c);
}

/* Runs the text encoder on ids [B, T] -> z [B, T, D] (malloc'ed). */
static nu_status run_clip(nu_sd *sd, const int32_t *ids, int B, int T, int clip_skip, float **z) {
    *z = NULL;
    nu_ctx_params cp = nu_ctx_params_init();
    cp.alloc_data = false;
    nu_ctx *ctx = nu_ctx_new(&cp);
    if (!ctx) return nu_error(NU_ERR_NOMEM, "out of memory");
    nu_tensor *tid = nu_new_tensor_ext(ctx, NU_TYPE_I32, 2, (int64_t[]){B, T}, (void *)ids);
    nu_nn nn;
    nu_nn_init(&nn, ctx, sd->clip_w, "clip");
    nn.lora = sd->lora; /* text-encoder LoRA layers (NULL: none) */
    nu_tensor *y = nu_clip_build(&nn, &sd->clip_cfg, tid, clip_skip, NULL);
    nu_status s = nu_nn_status(&nn);
    nu_graph *g = NULL;
    if (s == NU_OK) {
        g = nu_graph_new(ctx);
        nu_graph_expand(g, y);
        s = nu_graph_alloc(g);
    }
    if (s == NU_OK) s = nu_graph_compute(g, sd->pool);
    if (s == NU_OK) {
        *z = malloc(sizeof(float) * (size_t)nu_nelements(y));
        if (!*z) s = nu_error(NU_ERR_NOMEM, "out of memory");
        else nu_tensor_get_f32(y, *z);
    }
    if (g) nu_graph_free(g);
    nu_ctx_free(ctx);
    return s;
}

/* A1111 emphasis on one chunk z [T, D] with per-token weights w [T]: z *= w, then rescale so the
 * chunk's mean is unchanged (torch float32: means and the ratio are float32 values). */
static void apply_weights(float *z, const float *w, int T, int D) {
    bool any = false;
    for (int t = 0; t < T; t++) any |= w[t] != 1.0f;
    if (!any) return; /* z * 1 and a ratio of exactly 1: identical, skip */
    double s0 = 0, s1 = 0;
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++) s0 += z[(size_t)t * D + d];
    float orig = (float)(s0 / ((double)T * D));
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++) {
            float v = z[(size_t)t * D + d] * w[t];
            z[(size_t)t * D + d] = v;
            s1 += v;
        }
    float now = (float)(s1 / ((double)T * D));
    if (now == 0.0f) return;
    float r = orig / now;
    for (size_t i = 0; i < (size_t)T * D; i++) z[i] *= r;
}

nu_status sd_text_encode(nu_sd *sd, const char *prompt, const char *negative, int clip_skip, bool weighting,
                         bool need_uncond, sd_cond *out) {
    memset(out, 0, sizeof *out);
    nu_prompt_params pp;
    nu_prompt_params_init(&pp);
    pp.parse_attention = weighting;
    nu_prompt_chunks pc = {0}, nc = {0}, ec = {0};
    int32_t *ids = NULL;
    float *wts = NULL, *z = NULL;
    nu_status s = nu_prompt_encode(sd->tok, prompt ? prompt : "", &pp, &pc);
    if (s != NU_OK) return sd_error_prefix(s, "prompt: ");
    if (need_uncond && (s = nu_prompt_encode(sd->tok, negative ? negative : "", &pp, &nc)) != NU_OK) {
        nu_prompt_chunks_free(&pc);
        return sd_error_prefix(s, "negative prompt: ");
    }
    if ((s = nu_prompt_encode(sd->tok, "", &pp, &ec)) != NU_OK) goto done;
    const int T = pc.chunk_tokens;
    const int K = need_uncond && nc.n_chunks > pc.n_chunks ? nc.n_chunks : pc.n_chunks;
    const int B = need_uncond ? 2 * K : K; /* rows: cond chunks, then uncond chunks */
    if ((int64_t)K * T > 65536) {
        s = nu_error(NU_ERR_INVALID_ARG, "prompt too long (%d chunks of %d tokens)", K, T);
        goto done;
    }
    ids = malloc(sizeof(int32_t) * (size_t)B * T);
    wts = malloc(sizeof(float) * (size_t)B * T);
    if (!ids || !wts) {
        s = nu_error(NU_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int r = 0; r < B; r++) {
        const nu_prompt_chunks *c = r < K ? &pc : &nc;
        int k = r < K ? r : r - K;
        if (k >= c->n_chunks) c = &ec, k = 0; /* padding with the empty prompt */
        memcpy(ids + (size_t)r * T, c->ids + (size_t)k * T, sizeof(int32_t) * (size_t)T);
        memcpy(wts + (size_t)r * T, c->weights + (size_t)k * T, sizeof(float) * (size_t)T);
    }
    if ((s = run_clip(sd, ids, B, T, clip_skip, &z)) != NU_OK) goto done;
    const int D = (int)sd->clip_cfg.dim;
    for (int r = 0; r < B; r++) apply_weights(z + (size_t)r * T * D, wts + (size_t)r * T, T, D);
    out->S = K * T;
    out->D = D;
    out->token_count = pc.token_count;
    size_t half = sizeof(float) * (size_t)K * T * D;
    out->cond = malloc(half);
    out->uncond = need_uncond ? malloc(half) : NULL;
    if (!out->cond || (need_uncond && !out->uncond)) {
        sd_cond_free(out);
        s = nu_error(NU_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* rows of one prompt are consecutive chunks: [K, T, D] == [K*T, D] */
    memcpy(out->cond, z, half);
    if (need_uncond) memcpy(out->uncond, z + (size_t)K * T * D, half);
done:
    free(ids);
    free(wts);
    free(z);
    nu_prompt_chunks_free(&pc);
    nu_prompt_chunks_free(&nc);
    nu_prompt_chunks_free(&ec);
    return s;
}
