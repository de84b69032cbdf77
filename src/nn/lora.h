/*
 * lora.h — LoRA / LoCon adapters applied at run time (internal API for the pipeline and the
 * models). A nu_lora_set holds the low-rank pairs of one or more LoRA files, each mapped to the
 * canonical tensor name of a base model's layer ("down_blocks.0.attentions.0.transformer_blocks.0.
 * attn1.to_q.weight", "text_model.encoder.layers.0.self_attn.q_proj.weight"). The graph builders
 * (nu_nn_linear, nu_nn_conv2d, and model code through nu_lora_linear / nu_lora_conv2d) add
 *
 *     y += scale * up(down(x)),   scale = weight * alpha / rank      (kohya-ss networks/lora.py,
 *                                                                      PEFT LoraLayer.scaling)
 *
 * where for a Linear, down [r, in] and up [out, r] are two Linears, and for a Conv2d (LoCon)
 * down [r, in, kh, kw] is a conv with the base layer's stride and padding and up [out, r, 1, 1] a
 * 1x1 conv. The base weight is never read or changed, so quantized bases (q8_0, q4_0) work, and
 * the LoRA tensors stay as stored (f32, f16 or bf16, mmapped).
 *
 * File dialects (lora_names.c): kohya / A1111 ("lora_unet_<diffusers path with _>", the LDM form
 * "lora_unet_input_blocks_1_1_...", "lora_te_text_model_..."; .lora_down/.lora_up/.alpha) and
 * diffusers / PEFT ("unet.<path>.lora_A/.lora_B", "text_encoder.", "base_model.model.",
 * ".lora.down/.lora.up", ".lora_linear_layer.down/up", "<attn>.processor.to_q_lora.down").
 * kohya's '_'-joined names are resolved against the base model's own names (each canonical name
 * with '.' -> '_'), as A1111 and stable-diffusion.cpp do.
 *
 *     nu_lora_set *s = nu_lora_set_new();
 *     nu_lora_set_add_target(s, NU_LORA_PART_UNET, "unet", unet_weights);   // canonical names
 *     nu_lora_set_add_target(s, NU_LORA_PART_TE, "clip", clip_weights);
 *     nu_lora_set_load(s, "style.safetensors", 0.8f, 0.8f);
 *     nn.lora = s;                              // nu_nn_linear / nu_nn_conv2d now add the branch
 *
 * Tested by tests/test_lora.c (fixtures from scripts/fixtures_lora.py).
 */
#ifndef NU_NN_LORA_H
#define NU_NN_LORA_H

#include <stddef.h>

#include "nn/weights.h"

/* Which model of a pipeline a LoRA layer belongs to. */
typedef enum nu_lora_part {
    NU_LORA_PART_UNET, /* "lora_unet_", "unet.", "model.diffusion_model."          */
    NU_LORA_PART_TE,   /* "lora_te_", "lora_te1_", "text_encoder.", "cond_stage_model.transformer." */
    NU_LORA_PART_TE2,  /* "lora_te2_", "text_encoder_2." (SDXL's second encoder)    */
    NU_LORA_PART_COUNT /* not stated by the key: any target whose names match      */
} nu_lora_part;

typedef struct nu_lora_set nu_lora_set;

nu_lora_set *nu_lora_set_new(void); /* NULL on out of memory */
void nu_lora_set_free(nu_lora_set *s);

/* Registers a base model: `model` is the label its builders use (nu_nn.model: "unet", "clip"),
 * `w` its weights with canonical names (after the dialect renames). Targets are added before any
 * nu_lora_set_load; w must outlive the set. */
nu_status nu_lora_set_add_target(nu_lora_set *s, nu_lora_part part, const char *model, nu_weights *w);

/* Loads a LoRA file (.safetensors, or .gguf with the same names), mapping every layer to a
 * target. unet_weight multiplies the UNet layers, te_weight the text encoders' (A1111's
 * <lora:NAME:TE:UNET>; pass the same value for both normally).
 *   - a layer that matches no layer of any target is a warning (nu_log, with the count and the
 *     first name), as are LyCORIS parts this loader does not apply (LoHa, LoKr, DoRA, Tucker);
 *   - a file in which no layer matches at all is NU_ERR_NOT_FOUND;
 *   - lora_down/lora_up shapes that do not fit the base layer are NU_ERR_FORMAT naming the key;
 *   - on error nothing of the file is added. */
nu_status nu_lora_set_load(nu_lora_set *s, const char *path, float unet_weight, float te_weight);

/* Number of (layer, file) pairs applied; of those, how many on target `model` (NULL: all). */
int nu_lora_set_count(const nu_lora_set *s, const char *model);

/* ---- the graph hooks: return y plus every LoRA branch on "<prefix>.weight" of `model`, or y
 * unchanged (s NULL, or no LoRA on that layer). */

/* Linear: x [..., in], y [..., out]. Accepts the 1x1 conv LoRA of a layer the model runs as a
 * Linear on tokens (SD 1.x proj_in/proj_out). */
nu_tensor *nu_lora_linear(const nu_lora_set *s, nu_ctx *ctx, const char *model, const char *prefix, nu_tensor *x,
                          nu_tensor *y);
/* Conv2d: x [B, in, H, W], y [B, out, H', W'] from the base conv with this stride and padding. */
nu_tensor *nu_lora_conv2d(const nu_lora_set *s, nu_ctx *ctx, const char *model, const char *prefix, nu_tensor *x,
                          nu_tensor *y, int stride, int pad);

/* ---- prompts and command lines */

#define NU_LORA_MAX_NAME 256

/* One <lora:NAME:WEIGHT> tag. */
typedef struct nu_lora_tag {
    char name[NU_LORA_MAX_NAME];
    float unet_weight, te_weight;
} nu_lora_tag;

/* Removes every <lora:...> (and <lyco:...>) tag from prompt. Forms (A1111 extra networks):
 *   <lora:NAME>  <lora:NAME:W>  <lora:NAME:W_TE:W_UNET>  <lora:NAME:te=W:unet=W>
 * Returns the prompt without the tags in *clean (malloc'd) and the tags in *tags (malloc'd, NULL
 * when none). A malformed tag (unterminated, empty name, bad number, extra fields) is
 * NU_ERR_INVALID_ARG quoting it. Other <...> text is left alone. */
nu_status nu_lora_parse_prompt(const char *prompt, char **clean, nu_lora_tag **tags, int *n_tags);

/* The file of a prompt tag's NAME: DIR/NAME.safetensors, DIR/NAME.gguf, or DIR/NAME itself.
 * NU_ERR_INVALID_ARG without a dir or with a name leaving it ("..", absolute), NU_ERR_NOT_FOUND
 * naming what was tried. */
nu_status nu_lora_find_file(const char *dir, const char *name, char *path, size_t len);

/* --lora FILE[:WEIGHT]: the text after the last ':' is the weight when it is a number (so paths
 * with ':' still work); weight 1 otherwise. NU_ERR_INVALID_ARG for an empty path or a path too long. */
nu_status nu_lora_parse_arg(const char *arg, char *path, size_t len, float *weight);

/* ---- name resolution (lora_names.c; exposed for tests) */

typedef enum nu_lora_role {
    NU_LORA_ROLE_DOWN,        /* lora_down / lora_A / lora.down / lora_linear_layer.down   */
    NU_LORA_ROLE_UP,          /* lora_up / lora_B / lora.up / lora_linear_layer.up         */
    NU_LORA_ROLE_ALPHA,       /* .alpha (scalar)                                            */
    NU_LORA_ROLE_UNSUPPORTED, /* LyCORIS LoHa/LoKr/Tucker mid, DoRA scales, full diffs      */
    NU_LORA_ROLE_UNKNOWN,     /* not a LoRA tensor name                                     */
    NU_LORA_ROLE_COUNT
} nu_lora_role;

#define NU_LORA_MAX_KEY 320

/* A LoRA tensor key split into its layer path and role. */
typedef struct nu_lora_key {
    nu_lora_role role;
    nu_lora_part part;                 /* from the key's prefix; NU_LORA_PART_COUNT: any  */
    bool kohya;                        /* the path is '_'-joined (kohya)                  */
    char path[NU_LORA_MAX_KEY];        /* layer path without the part prefix: "down_blocks.0...to_q"
                                          or "down_blocks_0_..._to_q"                      */
    char module[NU_LORA_MAX_KEY];      /* the key without its role suffix (groups a layer's tensors) */
} nu_lora_key;

/* Splits `key`; false if it is too long (role UNKNOWN then). */
bool nu_lora_key_parse(const char *key, nu_lora_key *k);

/* The names of one base model, with their kohya forms and the UNet's LDM layout. */
typedef struct nu_lora_index nu_lora_index;
/* names: canonical tensor names (any; those ending in ".weight" are layers). NULL on OOM. */
nu_lora_index *nu_lora_index_new(nu_lora_part part, const char *const *names, int n);
void nu_lora_index_free(nu_lora_index *ix);
/* The canonical weight name ("....weight") of a parsed key's layer, or NULL. */
const char *nu_lora_index_resolve(const nu_lora_index *ix, const nu_lora_key *k);

/* internal: a string -> int map (open addressing, keys copied), shared by lora.c and lora_names.c */
typedef struct nu_lora_map {
    char **keys;
    int *vals;
    int cap, n;
} nu_lora_map;
bool nu_lora_map_put(nu_lora_map *m, const char *key, int val); /* replaces; false on OOM */
int nu_lora_map_get(const nu_lora_map *m, const char *key);     /* -1 if absent            */
void nu_lora_map_free(nu_lora_map *m);

#endif
