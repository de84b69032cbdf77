/*
 * vae.h — internal side of the KL autoencoder (public API: include/nuance/vae.h): the LDM ->
 * diffusers name table (vae_names.c), config detection, graph builders and the tile merger, so
 * tests can reach each piece. Tested by tests/test_vae.c.
 */
#ifndef NU_MODELS_VAE_H
#define NU_MODELS_VAE_H

#include "nn/nn.h"
#include "nuance/vae.h"

/* ---- names (vae_names.c) ---- */

/* Renames LDM/CompVis VAE names (encoder.down.N.block.M..., decoder.up.N..., mid.attn_1.q...,
 * already stripped of "first_stage_model.") and legacy diffusers attention names
 * (query/key/value/proj_attn) to current diffusers names. Returns the number renamed. LDM's
 * attention q/k/v/proj_out stay [C, C, 1, 1] 1x1-conv weights: the builder accepts both shapes. */
int nu_vae_rename_to_diffusers(nu_weights *w);
/* Whether the store holds LDM-style VAE names. */
bool nu_vae_names_are_ldm(nu_weights *w);

/* ---- model ---- */

/* Fills cfg from tensor names and shapes (diffusers names). Fields not visible in shapes
 * (norm_groups, norm_eps, scaling/shift) keep the values cfg holds on entry. `what` names the
 * file in errors. */
nu_status nu_vae_detect_config(nu_weights *w, nu_vae_config *cfg, const char *what);
/* Takes ownership of w (diffusers names) on success and on failure. cfg NULL: detect with SD
 * defaults for the hidden fields. */
nu_status nu_vae_from_weights(nu_weights *w, const nu_vae_config *cfg, const char *what, nu_vae **out);

/* Graph builders (nn->w holds diffusers names). x [B, Cin, H, W] -> moments [B, 2*Cz, H/f, W/f]
 * (after quant_conv); z [B, Cz, h, w] -> image [B, Cout, h*f, w*f] (post_quant_conv first). */
nu_tensor *nu_vae_build_encoder(nu_nn *nn, const nu_vae_config *cfg, nu_tensor *x);
nu_tensor *nu_vae_build_decoder(nu_nn *nn, const nu_vae_config *cfg, nu_tensor *z);

/* ---- tiling ---- */

/* Runs one tile: in [B, cin, ih, iw] -> out [B, cout, oh, ow] (dense). */
typedef nu_status (*nu_vae_tile_fn)(void *user, const float *in, int B, int ih, int iw, float *out);
/* The tiled merge on a grid of gh x gw cells (the latent plane): input cells are `a` pixels,
 * output cells `b` pixels (decode: a = 1, b = f; encode: a = f, b = 1). Tiles of `tile` cells
 * are placed as nu_vae_tiling describes and merged with linear-ramp weights into out
 * [B, cout, gh*b, gw*b]. Exposed for tests (an identity tile function must reproduce its input). */
nu_status nu_vae_tiled_run(nu_vae_tile_fn fn, void *user, const float *in, int B, int cin, int cout, int gh, int gw,
                           int a, int b, int tile, float overlap, float *out);
/* Tile start positions along one axis of length L (cells): n (returned) starts in starts[]
 * (capacity cap). */
int nu_vae_tile_starts(int L, int tile, float overlap, int *starts, int cap);

#endif
