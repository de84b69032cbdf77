/*
 * vae_names.c — the VAE's name dialects as data: LDM/CompVis single-file names (what SD 1.x/2.x
 * checkpoints hold under first_stage_model.*, and standalone VAE files such as
 * vae-ft-mse-840000) and legacy diffusers attention names, mapped to current diffusers names.
 * The mapping follows diffusers v0.27.2 convert_ldm_vae_checkpoint (single_file_utils.py).
 * Tested by tests/test_vae.c (the LDM file of sd1_tiny renames to exactly the diffusers folder's
 * names, and both give bit-identical outputs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/vae.h"

/* Each rule maps a name prefix to a replacement; the rest of the name (e.g. "weight") is kept.
 * Tokens: {a} {b} match a decimal index and emit it; {A} emits the REVERSED up-block index
 * (LDM decoder.up.N is diffusers up_blocks.(L-1-N): LDM counts from the highest resolution, diffusers
 * from the latent); {e} matches a lowercase word ("encoder" / "decoder") and emits it. The first
 * matching rule wins, so specific rules come first. */
static const struct {
    const char *from, *to;
} rules[] = {
    /* LDM resnets, shortcuts, down/up samplers */
    {"encoder.down.{a}.block.{b}.nin_shortcut.", "encoder.down_blocks.{a}.resnets.{b}.conv_shortcut."},
    {"encoder.down.{a}.block.{b}.", "encoder.down_blocks.{a}.resnets.{b}."},
    {"encoder.down.{a}.downsample.conv.", "encoder.down_blocks.{a}.downsamplers.0.conv."},
    {"decoder.up.{a}.block.{b}.nin_shortcut.", "decoder.up_blocks.{A}.resnets.{b}.conv_shortcut."},
    {"decoder.up.{a}.block.{b}.", "decoder.up_blocks.{A}.resnets.{b}."},
    {"decoder.up.{a}.upsample.conv.", "decoder.up_blocks.{A}.upsamplers.0.conv."},
    /* LDM mid block: block_1, attn_1, block_2; attention projections are 1x1 convs [C, C, 1, 1] */
    {"{e}.mid.block_1.", "{e}.mid_block.resnets.0."},
    {"{e}.mid.block_2.", "{e}.mid_block.resnets.1."},
    {"{e}.mid.attn_1.norm.", "{e}.mid_block.attentions.0.group_norm."},
    {"{e}.mid.attn_1.q.", "{e}.mid_block.attentions.0.to_q."},
    {"{e}.mid.attn_1.k.", "{e}.mid_block.attentions.0.to_k."},
    {"{e}.mid.attn_1.v.", "{e}.mid_block.attentions.0.to_v."},
    {"{e}.mid.attn_1.proj_out.", "{e}.mid_block.attentions.0.to_out.0."},
    {"{e}.norm_out.", "{e}.conv_norm_out."},
    /* diffusers < 0.14 attention names (AttentionBlock) */
    {"{e}.mid_block.attentions.0.query.", "{e}.mid_block.attentions.0.to_q."},
    {"{e}.mid_block.attentions.0.key.", "{e}.mid_block.attentions.0.to_k."},
    {"{e}.mid_block.attentions.0.value.", "{e}.mid_block.attentions.0.to_v."},
    {"{e}.mid_block.attentions.0.proj_attn.", "{e}.mid_block.attentions.0.to_out.0."},
};
#define N_RULES (int)(sizeof rules / sizeof rules[0])

typedef struct {
    long a, b;
    char e[16];
} captures;

/* Matches pattern p against a prefix of s; returns the length matched (0: no match). */
static size_t match(const char *p, const char *s, captures *c) {
    const char *s0 = s;
    while (*p) {
        if (p[0] == '{') {
            char tok = p[1];
            p += 3; /* "{x}" */
            if (tok == 'e') {
                size_t n = 0;
                while (s[n] >= 'a' && s[n] <= 'z') n++;
                if (n == 0 || n >= sizeof c->e) return 0;
                memcpy(c->e, s, n);
                c->e[n] = 0;
                s += n;
            } else {
                if (*s < '0' || *s > '9') return 0;
                char *end;
                long v = strtol(s, &end, 10);
                if (end - s > 4) return 0; /* no sane model has 10^4 blocks */
                if (tok == 'a') c->a = v;
                else c->b = v;
                s = end;
            }
        } else {
            if (*p != *s) return 0;
            p++;
            s++;
        }
    }
    return (size_t)(s - s0);
}

/* Writes the replacement pattern with captures into out (false if it does not fit). */
static bool expand(const char *p, const captures *c, long n_up, char *out, size_t cap) {
    size_t o = 0;
    while (*p) {
        char tmp[32];
        const char *piece = tmp;
        if (p[0] == '{') {
            char tok = p[1];
            p += 3;
            if (tok == 'e') piece = c->e;
            else snprintf(tmp, sizeof tmp, "%ld", tok == 'a' ? c->a : tok == 'b' ? c->b : n_up - 1 - c->a);
        } else {
            tmp[0] = *p++;
            tmp[1] = 0;
        }
        size_t n = strlen(piece);
        if (o + n >= cap) return false;
        memcpy(out + o, piece, n);
        o += n;
    }
    out[o] = 0;
    return true;
}

bool nu_vae_names_are_ldm(nu_weights *w) {
    int n = nu_weights_count(w);
    for (int i = 0; i < n; i++) {
        const char *s = nu_weights_name_at(w, i);
        if (!strncmp(s, "encoder.down.", 13) || !strncmp(s, "decoder.up.", 11) || !strncmp(s, "encoder.mid.", 12) ||
            !strncmp(s, "decoder.mid.", 12))
            return true;
    }
    return false;
}

int nu_vae_rename_to_diffusers(nu_weights *w) {
    int n = nu_weights_count(w);
    /* number of LDM up blocks, for the reversed index */
    long n_up = 0;
    captures c;
    for (int i = 0; i < n; i++)
        if (match("decoder.up.{a}.", nu_weights_name_at(w, i), &c) && c.a + 1 > n_up) n_up = c.a + 1;
    int renamed = 0;
    for (int i = 0; i < n; i++) {
        char name[NU_MAX_NAME], to[NU_MAX_NAME];
        snprintf(name, sizeof name, "%s", nu_weights_name_at(w, i));
        for (int r = 0; r < N_RULES; r++) {
            memset(&c, 0, sizeof c);
            size_t len = match(rules[r].from, name, &c);
            if (!len) continue;
            if (expand(rules[r].to, &c, n_up, to, sizeof to) && strlen(to) + strlen(name + len) < sizeof to) {
                strcat(to, name + len);
                if (nu_weights_rename(w, name, to)) renamed++;
            }
            break;
        }
    }
    return renamed;
}
