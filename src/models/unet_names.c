/*
 * unet_names.c — the LDM/CompVis UNet naming dialect ('model.diffusion_model.*' in SD 1.x/2.x
 * single-file checkpoints and in GGUF files of other engines) mapped to diffusers names, as data:
 *
 *   LDM                                     diffusers
 *   time_embed.0 / time_embed.2             time_embedding.linear_1 / linear_2
 *   input_blocks.0.0                        conv_in
 *   input_blocks.K.0 (K = 1 + L*(n+1) + j)  down_blocks.L.resnets.j          (j < n)
 *   input_blocks.K.1                        down_blocks.L.attentions.j
 *   input_blocks.K.0.op (j == n)            down_blocks.L.downsamplers.0.conv
 *   middle_block.0 / .1 / .2                mid_block.resnets.0 / attentions.0 / resnets.1
 *   output_blocks.K.0 (K = i*(n+1) + j)     up_blocks.i.resnets.j             (j <= n)
 *   output_blocks.K.1 (transformer)         up_blocks.i.attentions.j
 *   output_blocks.K.{1|2}.conv (j == n)     up_blocks.i.upsamplers.0.conv
 *   out.0 / out.2                           conv_norm_out / conv_out
 * with n = layers_per_block, and inside a resnet (ResBlock -> ResnetBlock2D):
 *   in_layers.0 norm1, in_layers.2 conv1, emb_layers.1 time_emb_proj, out_layers.0 norm2,
 *   out_layers.3 conv2, skip_connection conv_shortcut.
 * Transformer internals (norm, proj_in, transformer_blocks.*, proj_out) keep their names.
 * Source of the mapping: diffusers v0.27.2 single_file_utils.convert_ldm_unet_checkpoint and
 * scripts/convert_diffusers_to_original_stable_diffusion.py (unet_conversion_map*).
 * Tested by tests/test_unet.c: the sd1_tiny/sd2_tiny LDM files map onto exactly the diffusers
 * folders' names with equal values.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/unet.h"

typedef struct {
    const char *ldm, *diffusers;
} name_pair;

/* Whole-prefix renames outside the block lists. */
static const name_pair top_names[] = {
    {"time_embed.0.", "time_embedding.linear_1."},
    {"time_embed.2.", "time_embedding.linear_2."},
    {"input_blocks.0.0.", "conv_in."},
    {"out.0.", "conv_norm_out."},
    {"out.2.", "conv_out."},
};

/* ResBlock sub-module names -> ResnetBlock2D. */
static const name_pair resnet_names[] = {
    {"in_layers.0.", "norm1."},
    {"in_layers.2.", "conv1."},
    {"emb_layers.1.", "time_emb_proj."},
    {"out_layers.0.", "norm2."},
    {"out_layers.3.", "conv2."},
    {"skip_connection.", "conv_shortcut."},
};

/* Sub-module names of a SpatialTransformer (kept as they are). */
static const char *const transformer_parts[] = {"norm.", "proj_in.", "proj_out.", "transformer_blocks."};

#define COUNT(a) (int)(sizeof(a) / sizeof((a)[0]))

static bool starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* Parses "<int>." at *s, advancing past it. */
static bool parse_index(const char **s, int *out) {
    const char *p = *s;
    if (*p < '0' || *p > '9') return false;
    long v = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        if (v > 100000) return false;
        p++;
    }
    if (*p != '.') return false;
    *out = (int)v;
    *s = p + 1;
    return true;
}

static bool is_transformer_part(const char *rest) {
    for (int i = 0; i < COUNT(transformer_parts); i++)
        if (starts(rest, transformer_parts[i])) return true;
    return false;
}

/* Maps a resnet tail ("in_layers.0.weight") into out after `base`. */
static bool map_resnet(const char *base, const char *rest, char *out, size_t len) {
    for (int i = 0; i < COUNT(resnet_names); i++)
        if (starts(rest, resnet_names[i].ldm)) {
            snprintf(out, len, "%s%s%s", base, resnet_names[i].diffusers, rest + strlen(resnet_names[i].ldm));
            return true;
        }
    return false;
}

/* One LDM name -> diffusers name; false if it fits no rule. */
static bool ldm_to_diffusers(const char *name, int n, int levels, char *out, size_t len) {
    for (int i = 0; i < COUNT(top_names); i++)
        if (starts(name, top_names[i].ldm)) {
            snprintf(out, len, "%s%s", top_names[i].diffusers, name + strlen(top_names[i].ldm));
            return true;
        }
    const char *s = name;
    int k, sub;
    char base[96];
    if (starts(s, "input_blocks.")) {
        s += strlen("input_blocks.");
        if (!parse_index(&s, &k) || !parse_index(&s, &sub) || k < 1) return false;
        int L = (k - 1) / (n + 1), j = (k - 1) % (n + 1);
        if (L >= levels) return false;
        if (j == n) { /* downsampler: input_blocks.K.0.op */
            if (sub != 0 || !starts(s, "op.") || L == levels - 1) return false;
            snprintf(out, len, "down_blocks.%d.downsamplers.0.conv.%s", L, s + 3);
            return true;
        }
        if (sub == 0) {
            snprintf(base, sizeof base, "down_blocks.%d.resnets.%d.", L, j);
            return map_resnet(base, s, out, len);
        }
        if (sub == 1 && is_transformer_part(s)) {
            snprintf(out, len, "down_blocks.%d.attentions.%d.%s", L, j, s);
            return true;
        }
        return false;
    }
    if (starts(s, "middle_block.")) {
        s += strlen("middle_block.");
        if (!parse_index(&s, &sub)) return false;
        if (sub == 0 || sub == 2) return map_resnet(sub == 0 ? "mid_block.resnets.0." : "mid_block.resnets.1.", s, out, len);
        if (sub == 1 && is_transformer_part(s)) {
            snprintf(out, len, "mid_block.attentions.0.%s", s);
            return true;
        }
        return false;
    }
    if (starts(s, "output_blocks.")) {
        s += strlen("output_blocks.");
        if (!parse_index(&s, &k) || !parse_index(&s, &sub)) return false;
        int i = k / (n + 1), j = k % (n + 1);
        if (i >= levels) return false;
        if (sub == 0) {
            snprintf(base, sizeof base, "up_blocks.%d.resnets.%d.", i, j);
            return map_resnet(base, s, out, len);
        }
        if (sub == 1 && is_transformer_part(s)) {
            snprintf(out, len, "up_blocks.%d.attentions.%d.%s", i, j, s);
            return true;
        }
        /* the upsampler follows the resnet (and the transformer, if any) of the block's last layer */
        if ((sub == 1 || sub == 2) && starts(s, "conv.") && j == n && i < levels - 1) {
            snprintf(out, len, "up_blocks.%d.upsamplers.0.conv.%s", i, s + 5);
            return true;
        }
        return false;
    }
    return false;
}

bool nu_unet_names_are_ldm(nu_weights *w) { return nu_weights_get(w, "input_blocks.0.0.weight") != NULL; }

nu_status nu_unet_ldm_layout(nu_weights *w, int *layers_per_block, int *n_levels) {
    /* downsamplers sit at input_blocks.(L+1)*(n+1).0.op; the first one gives n */
    int first_op = -1, n_ops = 0, max_k = 0;
    for (int i = 0; i < nu_weights_count(w); i++) {
        const char *s = nu_weights_name_at(w, i);
        if (!starts(s, "input_blocks.")) continue;
        s += strlen("input_blocks.");
        int k, sub;
        if (!parse_index(&s, &k) || !parse_index(&s, &sub)) continue;
        if (k > max_k) max_k = k;
        if (sub == 0 && strcmp(s, "op.weight") == 0) {
            n_ops++;
            if (first_op < 0 || k < first_op) first_op = k;
        }
    }
    if (max_k < 1) return nu_error(NU_ERR_FORMAT, "unet: LDM checkpoint has no input_blocks beyond conv_in");
    int n = first_op > 0 ? first_op - 1 : max_k;
    int levels = n_ops + 1;
    if (n < 1 || levels > NU_UNET_MAX_LEVELS || max_k != levels * (n + 1) - 1)
        return nu_error(NU_ERR_UNSUPPORTED,
                        "unet: LDM input_blocks layout not understood (%d downsamplers, first at input_blocks.%d, "
                        "last block %d)",
                        n_ops, first_op, max_k);
    *layers_per_block = n;
    *n_levels = levels;
    return NU_OK;
}

nu_status nu_unet_rename_ldm(nu_weights *w, int layers_per_block, int n_levels) {
    int cnt = nu_weights_count(w);
    char **from = calloc((size_t)(cnt ? cnt : 1), sizeof(char *)), **to = calloc((size_t)(cnt ? cnt : 1), sizeof(char *));
    if (!from || !to) {
        free(from);
        free(to);
        return nu_error(NU_ERR_NOMEM, "unet: out of memory");
    }
    nu_status st = NU_OK;
    int m = 0;
    char buf[256];
    for (int i = 0; i < cnt && st == NU_OK; i++) {
        const char *name = nu_weights_name_at(w, i);
        if (!ldm_to_diffusers(name, layers_per_block, n_levels, buf, sizeof buf)) {
            st = nu_error(NU_ERR_UNSUPPORTED,
                          "unet: tensor '%s' of the LDM checkpoint fits no SD 1.x/2.x UNet name (layers_per_block %d, "
                          "%d levels)",
                          name, layers_per_block, n_levels);
            break;
        }
        from[m] = strdup(name);
        to[m] = strdup(buf);
        if (!from[m] || !to[m]) st = nu_error(NU_ERR_NOMEM, "unet: out of memory");
        m++;
    }
    /* apply after the scan: renaming does not reorder entries, but keep the two phases apart */
    for (int i = 0; i < m && st == NU_OK; i++)
        if (!nu_weights_rename(w, from[i], to[i]))
            st = nu_error(NU_ERR_FORMAT, "unet: cannot rename '%s' to '%s'", from[i], to[i]);
    for (int i = 0; i < m; i++) {
        free(from[i]);
        free(to[i]);
    }
    free(from);
    free(to);
    return st;
}
