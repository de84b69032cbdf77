/*
 * clip_names.c — name dialects of the CLIP text encoder, as data tables, mapped to the canonical
 * HF CLIPTextModel names ("text_model.embeddings.token_embedding.weight", ...):
 *   - diffusers folders (text_encoder/model.safetensors): canonical already;
 *   - LDM SD 1.x single files: the HF names under "cond_stage_model.transformer." (older files
 *     lack the "text_model." level: "cond_stage_model.transformer.embeddings...");
 *   - SD 2.x single files: OpenCLIP names under "cond_stage_model.model." (token_embedding,
 *     positional_embedding, transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2,
 *     mlp.c_fc, mlp.c_proj}, ln_final), with q/k/v fused in attn.in_proj_weight [3D, D] and
 *     attn.in_proj_bias [3D] (torch.nn.MultiheadAttention order q, k, v), added as row slices.
 * The same layouts are accepted with the outer prefix stripped (a store loaded with a prefix
 * filter, e.g. "cond_stage_model.") or absent. Tested by tests/test_clip.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/clip.h"

typedef struct name_map {
    const char *from, *to;
} name_map;

/* Outer prefixes, most specific first; "" (bare names) last. */
static const char *const outer_prefixes[] = {"cond_stage_model.transformer.", "cond_stage_model.model.",
                                             "cond_stage_model.", "transformer.", "model.", ""};

/* HF names without the "text_model." level (transformers < 4.? CLIPTextModel state dicts). */
static const char *const hf_roots[] = {"embeddings.", "encoder.", "final_layer_norm."};

/* OpenCLIP -> HF, whole names. */
static const name_map openclip_global[] = {
    {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
    {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
    {"ln_final.weight", "text_model.final_layer_norm.weight"},
    {"ln_final.bias", "text_model.final_layer_norm.bias"},
};

/* OpenCLIP "transformer.resblocks.N.<from>" -> HF "text_model.encoder.layers.N.<to>" (prefix
 * match: .weight/.bias follow). */
static const name_map openclip_layer[] = {
    {"ln_1.", "layer_norm1."},
    {"ln_2.", "layer_norm2."},
    {"attn.out_proj.", "self_attn.out_proj."},
    {"mlp.c_fc.", "mlp.fc1."},
    {"mlp.c_proj.", "mlp.fc2."},
};

/* Fused projections: "transformer.resblocks.N.<from>" -> three row slices "<q|k|v>_proj.<kind>". */
static const name_map openclip_fused[] = {
    {"attn.in_proj_weight", "weight"},
    {"attn.in_proj_bias", "bias"},
};

static const char *const marker_hf = "text_model.embeddings.token_embedding.weight";
static const char *const marker_hf_old = "embeddings.token_embedding.weight";
static const char *const marker_openclip = "token_embedding.weight";

const char *nu_clip_source_name(nu_clip_source src) {
    switch (src) {
    case NU_CLIP_SOURCE_HF: return "HF/diffusers";
    case NU_CLIP_SOURCE_LDM_HF: return "LDM (HF CLIP names)";
    case NU_CLIP_SOURCE_OPENCLIP: return "OpenCLIP";
    default: return "?";
    }
}

static bool has(nu_weights *w, const char *prefix, const char *name) {
    char buf[NU_MAX_NAME];
    if ((size_t)snprintf(buf, sizeof buf, "%s%s", prefix, name) >= sizeof buf) return false;
    return nu_weights_get(w, buf) != NULL;
}

static bool starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* Renames every tensor that begins with `from_prefix` to `to_prefix` + the rest; with `roots`,
 * only those whose rest begins with one of them. */
static void rename_prefix(nu_weights *w, const char *from_prefix, const char *to_prefix, const char *const *roots,
                          int n_roots) {
    size_t fl = strlen(from_prefix);
    int n = nu_weights_count(w);
    for (int i = 0; i < n; i++) {
        const char *name = nu_weights_name_at(w, i);
        if (!starts_with(name, from_prefix)) continue;
        const char *rest = name + fl;
        bool ok = roots == NULL;
        for (int r = 0; r < n_roots && !ok; r++) ok = starts_with(rest, roots[r]);
        if (!ok) continue;
        char from[NU_MAX_NAME], to[NU_MAX_NAME];
        snprintf(from, sizeof from, "%s", name);
        if ((size_t)snprintf(to, sizeof to, "%s%s", to_prefix, rest) >= sizeof to) continue;
        nu_weights_rename(w, from, to);
    }
}

/* One OpenCLIP tensor (name without the outer prefix) -> canonical name(s). */
static nu_status map_openclip(nu_weights *w, const char *full, const char *rest) {
    char to[NU_MAX_NAME];
    for (size_t k = 0; k < sizeof openclip_global / sizeof *openclip_global; k++) {
        if (strcmp(rest, openclip_global[k].from) == 0) {
            nu_weights_rename(w, full, openclip_global[k].to);
            return NU_OK;
        }
    }
    int layer, off = 0;
    if (sscanf(rest, "transformer.resblocks.%d.%n", &layer, &off) != 1 || off == 0 || layer < 0 ||
        layer >= NU_CLIP_MAX_LAYERS)
        return NU_OK; /* text_projection, logit_scale, attn_mask...: not part of the HF text model */
    const char *tail = rest + off;
    for (size_t k = 0; k < sizeof openclip_layer / sizeof *openclip_layer; k++) {
        const name_map *m = &openclip_layer[k];
        if (!starts_with(tail, m->from)) continue;
        snprintf(to, sizeof to, "text_model.encoder.layers.%d.%s%s", layer, m->to, tail + strlen(m->from));
        nu_weights_rename(w, full, to);
        return NU_OK;
    }
    for (size_t k = 0; k < sizeof openclip_fused / sizeof *openclip_fused; k++) {
        const name_map *m = &openclip_fused[k];
        if (strcmp(tail, m->from) != 0) continue;
        nu_tensor *t = nu_weights_get(w, full);
        /* in_proj_weight [3D, D], in_proj_bias [3D]; D itself is checked by the builder */
        bool ok = t && t->ndim == (strcmp(m->to, "weight") == 0 ? 2 : 1) && t->ne[0] > 0 && t->ne[0] % 3 == 0;
        if (ok && t->ndim == 2) ok = t->ne[0] == 3 * t->ne[1];
        if (!ok) {
            char shape[128] = "(unreadable)";
            if (t) nu_shape_str(t, shape, sizeof shape);
            return nu_error(NU_ERR_FORMAT, "clip: tensor %s has shape %s, expected [3*D%s] (fused q, k, v)", full,
                            shape, t && t->ndim == 2 ? ", D" : "");
        }
        int64_t D = t->ne[0] / 3;
        static const char *const qkv[3] = {"q", "k", "v"};
        for (int j = 0; j < 3; j++) {
            snprintf(to, sizeof to, "text_model.encoder.layers.%d.self_attn.%s_proj.%s", layer, qkv[j], m->to);
            if (!nu_weights_add_slice(w, to, full, j * D, D))
                return nu_error(NU_ERR_FORMAT, "clip: cannot split %s into %s (defined twice?)", full, to);
        }
        return NU_OK;
    }
    return NU_OK;
}

nu_status nu_clip_names_canonicalize(nu_weights *w, nu_clip_source *src) {
    if (src) *src = NU_CLIP_SOURCE_HF;
    if (has(w, "", marker_hf)) return NU_OK;
    for (size_t p = 0; p < sizeof outer_prefixes / sizeof *outer_prefixes; p++) {
        const char *P = outer_prefixes[p];
        char pre[NU_MAX_NAME];
        if (has(w, P, marker_hf)) {
            snprintf(pre, sizeof pre, "%stext_model.", P);
            rename_prefix(w, pre, "text_model.", NULL, 0);
            if (src) *src = NU_CLIP_SOURCE_LDM_HF;
            return NU_OK;
        }
        if (has(w, P, marker_hf_old)) {
            rename_prefix(w, P, "text_model.", hf_roots, (int)(sizeof hf_roots / sizeof *hf_roots));
            if (src) *src = NU_CLIP_SOURCE_LDM_HF;
            return NU_OK;
        }
        if (has(w, P, marker_openclip) && has(w, P, "positional_embedding")) {
            size_t pl = strlen(P);
            int n = nu_weights_count(w); /* slices are appended: visit the original entries only */
            for (int i = 0; i < n; i++) {
                const char *name = nu_weights_name_at(w, i);
                if (!starts_with(name, P)) continue;
                char full[NU_MAX_NAME];
                snprintf(full, sizeof full, "%s", name);
                nu_status s = map_openclip(w, full, full + pl);
                if (s != NU_OK) return s;
            }
            if (src) *src = NU_CLIP_SOURCE_OPENCLIP;
            return NU_OK;
        }
    }
    return nu_error(NU_ERR_NOT_FOUND,
                    "clip: no text encoder weights found (looked for %s, cond_stage_model.transformer.%s and "
                    "cond_stage_model.model.%s)",
                    marker_hf, marker_hf, marker_openclip);
}
