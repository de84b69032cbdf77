/*
 * nuance/vae.h — the KL autoencoder of latent diffusion (diffusers AutoencoderKL semantics):
 * image -> latent distribution (encoder), latent -> image (decoder), with optional tiling so
 * large images fit in memory without seams.
 *
 *     nu_vae *vae;
 *     if (nu_vae_load("sd15.safetensors", NULL, &vae) != NU_OK) { puts(nu_last_error()); ... }
 *     const nu_vae_config *c = nu_vae_get_config(vae);           // c->scaling_factor = 0.18215
 *     nu_pool *pool = nu_pool_new(0);
 *     // z: [1, 4, 64, 64] = latents / scaling_factor (+ shift_factor)  ->  img: [1, 3, 512, 512] in ~[-1, 1]
 *     nu_vae_decode(vae, pool, z, 1, 64, 64, NULL, img);
 *     nu_vae_tiling t = nu_vae_tiling_default();                 // --vae-tiling: 64-latent tiles, 25% overlap
 *     nu_vae_decode(vae, pool, z, 1, 128, 128, &t, big);
 *     nu_vae_free(vae);
 *
 * All arrays are dense NCHW f32 (PyTorch layout). Tested by tests/test_vae.c (against
 * ../shared/reference/sd{1,2}_tiny, diffusers folder and LDM single file) and timed by
 * `nuance bench vae`.
 */
#ifndef NUANCE_VAE_H
#define NUANCE_VAE_H

#include "nuance/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NU_VAE_MAX_BLOCKS 8

/* Architecture and latent scaling, as diffusers' vae/config.json names them. */
typedef struct nu_vae_config {
    int in_channels;                             /* image channels into the encoder (3)          */
    int out_channels;                            /* image channels out of the decoder (3)        */
    int latent_channels;                         /* 4 (SD 1/2/XL)                                 */
    int n_blocks;                                /* len(block_out_channels); downscale 2^(n-1)   */
    int block_out_channels[NU_VAE_MAX_BLOCKS];   /* SD: 128, 256, 512, 512                        */
    int layers_per_block;                        /* resnets per encoder block (decoder: +1)      */
    int norm_groups;                             /* GroupNorm groups (32)                         */
    float norm_eps;                              /* 1e-6                                          */
    float scaling_factor;                        /* latents = (mean - shift) * scaling (0.18215)  */
    float shift_factor;                          /* 0 for SD 1/2/XL                               */
    bool has_encoder, has_decoder;               /* decoder-only files exist                      */
    bool quant_conv, post_quant_conv;            /* the 1x1 convs around the latent               */
    bool mid_attention;                          /* self-attention in the mid blocks              */
} nu_vae_config;

/* SD 1.x / 2.x: 3 <-> 4 channels, [128, 256, 512, 512], 2 resnets per block, 32 groups,
 * eps 1e-6, scaling 0.18215, quant convs and mid attention. */
nu_vae_config nu_vae_config_sd(void);

typedef struct nu_vae_params {
    int norm_groups;      /* > 0 overrides config.json / the default 32 (not visible in shapes) */
    float scaling_factor; /* > 0 overrides config.json / the default 0.18215                    */
} nu_vae_params;
nu_vae_params nu_vae_params_init(void); /* all zero: use the file's config or the defaults */

typedef struct nu_vae nu_vae;

/* Loads a VAE from
 *   - a diffusers folder (model_index.json with vae/) or its vae/ folder (config.json +
 *     diffusion_pytorch_model[.fp16].safetensors);
 *   - a single-file checkpoint (.safetensors or .gguf) holding first_stage_model.* (LDM names,
 *     as SD 1.x/2.x files) — the UNet and text encoder in it are ignored;
 *   - a standalone VAE file (--vae) with LDM (encoder.down.0.block.0...) or diffusers names.
 * Weights stay mapped (f32, f16 or bf16). The architecture is read from config.json when there is
 * one, else detected from tensor names and shapes; a missing or mis-shaped tensor is an error
 * naming it. p may be NULL. */
nu_status nu_vae_load(const char *path, const nu_vae_params *p, nu_vae **out);
void nu_vae_free(nu_vae *vae);
const nu_vae_config *nu_vae_get_config(const nu_vae *vae);
/* Spatial factor between image and latent: 2^(n_blocks - 1) (8 for SD). */
int nu_vae_downscale(const nu_vae *vae);

/* Tiled encode/decode. The latent plane is covered by square tiles of `tile` latent pixels
 * (image tiles of tile * downscale pixels); along each axis the tiles are spread evenly from
 * the first to the last position, so every tile is full size and neighbours overlap by at
 * least `overlap * tile`. Each tile is run on its own; the results are merged as a weighted
 * mean whose per-tile weight rises linearly from ~0 to 1 across the overlap with each neighbour
 * (a partition of unity where two tiles meet), so there is no seam. An image that fits in one
 * tile is run untiled (identical to no tiling). Like diffusers' tiled_decode (tile 64 latent =
 * 512 px, 25% overlap, linear blend), except that its last tile along an axis may be partial
 * and its blend starts at weight exactly 0. */
typedef struct nu_vae_tiling {
    int tile;      /* latent pixels per tile side (>= 4); default 64                      */
    float overlap; /* minimum overlap between neighbours as a fraction of tile, [0, 0.5]  */
} nu_vae_tiling;
nu_vae_tiling nu_vae_tiling_default(void); /* 64, 0.25 */

/* image [B, in_channels, H, W] (values in [-1, 1]) -> moments [B, 2*latent_channels, H/f, W/f]
 * = cat(mean, logvar) on the channel axis (logvar NOT clamped: diffusers' latent_dist.parameters).
 * H and W must be multiples of f = nu_vae_downscale() when tiling. tiling NULL: untiled. */
nu_status nu_vae_encode(nu_vae *vae, nu_pool *pool, const float *image, int B, int H, int W,
                        const nu_vae_tiling *tiling, float *moments);
/* z [B, latent_channels, h, w] (already divided by scaling_factor) -> image
 * [B, out_channels, h*f, w*f] (~[-1, 1], not clamped). */
nu_status nu_vae_decode(nu_vae *vae, nu_pool *pool, const float *z, int B, int h, int w,
                        const nu_vae_tiling *tiling, float *image);

/* DiagonalGaussianDistribution: mean and logvar = clamp(logvar, -30, 20) from moments
 * [B, 2C, h, w]; latent = mean + exp(0.5 * logvar) * noise (noise NULL: latent = mean, the
 * distribution's mode). Any of mean/logvar/latent may be NULL. */
void nu_vae_moments_split(const float *moments, int B, int C, int h, int w, const float *noise, float *mean,
                          float *logvar, float *latent);

/* Writes a VAE of architecture cfg with random weights (diffusers names, dtype f32/f16/bf16,
 * deterministic from seed; scaled like PyTorch's default init) to a safetensors file, for
 * benchmarks and tests without a real checkpoint. */
nu_status nu_vae_save_random(const nu_vae_config *cfg, nu_type type, uint64_t seed, const char *path);

#ifdef __cplusplus
}
#endif
#endif
