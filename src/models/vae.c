/*
 * vae.c — the KL autoencoder of latent diffusion, matching diffusers v0.27.2 AutoencoderKL
 * (models/autoencoders/vae.py Encoder/Decoder, resnet.py ResnetBlock2D, downsampling.py,
 * upsampling.py, attention_processor.py AttnProcessor): loading (diffusers folders, LDM single
 * files, standalone VAE files), config detection, graph builders, untiled and tiled
 * encode/decode, and random-weight files for benchmarks.
 * Tested by tests/test_vae.c against ../shared/reference/sd{1,2}_tiny (both file forms) and
 * with random models for the tiling; timed by `nuance bench vae`.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "models/vae.h"
#include "nuance/io.h"

struct nu_vae {
    nu_weights *w; /* diffusers names */
    nu_vae_config cfg;
};

nu_vae_config nu_vae_config_sd(void) {
    nu_vae_config c = {0};
    c.in_channels = 3;
    c.out_channels = 3;
    c.latent_channels = 4;
    c.n_blocks = 4;
    c.block_out_channels[0] = 128;
    c.block_out_channels[1] = 256;
    c.block_out_channels[2] = 512;
    c.block_out_channels[3] = 512;
    c.layers_per_block = 2;
    c.norm_groups = 32;
    c.norm_eps = 1e-6f;
    c.scaling_factor = 0.18215f;
    c.shift_factor = 0.0f;
    c.has_encoder = c.has_decoder = true;
    c.quant_conv = c.post_quant_conv = true;
    c.mid_attention = true;
    return c;
}

nu_vae_params nu_vae_params_init(void) { return (nu_vae_params){0}; }

nu_vae_tiling nu_vae_tiling_default(void) { return (nu_vae_tiling){64, 0.25f}; }

const nu_vae_config *nu_vae_get_config(const nu_vae *vae) { return &vae->cfg; }

int nu_vae_downscale(const nu_vae *vae) { return 1 << (vae->cfg.n_blocks - 1); }

void nu_vae_free(nu_vae *vae) {
    if (!vae) return;
    nu_weights_free(vae->w);
    free(vae);
}

/* ================================================================ graph builders */

/* name = prefix + "." + suffix (names are far shorter than NU_MAX_NAME; a longer one is cut
 * and then reported as a missing tensor) */
static char *sub(char name[NU_MAX_NAME], const char *prefix, const char *suffix) {
    if (snprintf(name, NU_MAX_NAME, "%s.%s", prefix, suffix) >= NU_MAX_NAME) name[NU_MAX_NAME - 1] = 0;
    return name;
}


/* conv prefix.weight [cout, cin, k, k], prefix.bias [cout] (cast to f32: the conv op reads an f32
 * bias; diffusers folders store f16 biases). */
static nu_tensor *conv(nu_nn *nn, nu_tensor *x, const char *prefix, int64_t cin, int64_t cout, int k, int stride,
                       int pad) {
    nu_tensor *w = nu_nn_weight(nn, 4, (int64_t[]){cout, cin, k, k}, "%s.weight", prefix);
    nu_tensor *b = nu_nn_weight(nn, 1, (int64_t[]){cout}, "%s.bias", prefix);
    if (b->type != NU_TYPE_F32) b = nu_cast(nn->ctx, b, NU_TYPE_F32);
    nu_conv2d_params p = nu_conv2d_params_init();
    p.stride[0] = p.stride[1] = stride;
    p.padding[0] = p.padding[1] = pad;
    p.kernel[0] = p.kernel[1] = k; /* for a matrix-form (block-quantized) weight */
    return nu_conv2d(nn->ctx, x, w, b, &p);
}

static nu_tensor *norm_silu(nu_nn *nn, const nu_vae_config *c, nu_tensor *x, const char *prefix, int64_t C) {
    return nu_silu(nn->ctx, nu_nn_group_norm(nn, x, prefix, c->norm_groups, C, c->norm_eps));
}

/* ResnetBlock2D without time embedding (resnet.py): x [B, cin, H, W] -> [B, cout, H, W]
 *   h = conv2(silu(norm2(conv1(silu(norm1(x))))));  out = shortcut(x) + h
 * shortcut = conv_shortcut (1x1) when cin != cout; output_scale_factor 1; dropout off. */
static nu_tensor *resnet(nu_nn *nn, const nu_vae_config *c, nu_tensor *x, const char *prefix, int64_t cin,
                         int64_t cout) {
    char name[NU_MAX_NAME];
    sub(name, prefix, "norm1");
    nu_tensor *h = norm_silu(nn, c, x, name, cin);
    sub(name, prefix, "conv1");
    h = conv(nn, h, name, cin, cout, 3, 1, 1);
    sub(name, prefix, "norm2");
    h = norm_silu(nn, c, h, name, cout);
    sub(name, prefix, "conv2");
    h = conv(nn, h, name, cout, cout, 3, 1, 1);
    if (cin != cout) {
        sub(name, prefix, "conv_shortcut");
        x = conv(nn, x, name, cin, cout, 1, 1, 0);
    }
    return nu_add(nn->ctx, x, h);
}

/* A [C, C] projection weight: diffusers stores a Linear [C, C], LDM a 1x1 conv [C, C, 1, 1] (the
 * same numbers): a 2-D header over the same data. */
static nu_tensor *proj_weight(nu_nn *nn, const char *prefix, int64_t C) {
    char name[NU_MAX_NAME];
    sub(name, prefix, "weight");
    nu_tensor *t = nu_weights_get(nn->w, name);
    if (t && t->ndim == 4) {
        nu_tensor *w4 = nu_nn_weight(nn, 4, (int64_t[]){C, C, 1, 1}, "%s", name);
        return nu_new_tensor_ext(nn->ctx, w4->type, 2, (int64_t[]){C, C}, w4->data);
    }
    return nu_nn_weight(nn, 2, (int64_t[]){C, C}, "%s", name);
}

/* Mid-block self-attention (Attention with heads = 1, dim_head = C, residual_connection, group
 * norm; AttnProcessor): x [B, C, H, W];
 *   t = tokens(group_norm(x)) [B, HW, C];  out = x + image(to_out(softmax(q k^T / sqrt(C)) v)). */
static nu_tensor *attention(nu_nn *nn, const nu_vae_config *c, nu_tensor *x, const char *prefix, int64_t C) {
    nu_ctx *ctx = nn->ctx;
    int64_t B = x->ne[0], H = x->ne[2], W = x->ne[3], T = H * W;
    char name[NU_MAX_NAME];
    sub(name, prefix, "group_norm");
    nu_tensor *t = nu_nn_to_tokens(ctx, nu_nn_group_norm(nn, x, name, c->norm_groups, C, c->norm_eps));
    static const char *const proj[4] = {"to_q", "to_k", "to_v", "to_out.0"};
    nu_tensor *qkv[3];
    for (int i = 0; i < 3; i++) {
        sub(name, prefix, proj[i]);
        nu_tensor *w = proj_weight(nn, name, C);
        nu_tensor *b = nu_nn_weight(nn, 1, (int64_t[]){C}, "%s.bias", name);
        qkv[i] = nu_reshape(ctx, nu_linear(ctx, t, w, b), 4, (int64_t[]){B, 1, T, C}); /* one head */
    }
    nu_tensor *o = nu_attention(ctx, qkv[0], qkv[1], qkv[2], NULL, false, 0.0f); /* scale 1/sqrt(C) */
    o = nu_reshape(ctx, o, 3, (int64_t[]){B, T, C});
    sub(name, prefix, proj[3]);
    nu_tensor *wo = proj_weight(nn, name, C);
    nu_tensor *bo = nu_nn_weight(nn, 1, (int64_t[]){C}, "%s.bias", name);
    o = nu_nn_from_tokens(ctx, nu_linear(ctx, o, wo, bo), H, W);
    return nu_add(ctx, o, x);
}

/* UNetMidBlock2D: resnet, attention, resnet at C channels. */
static nu_tensor *mid_block(nu_nn *nn, const nu_vae_config *c, nu_tensor *x, const char *which, int64_t C) {
    char name[NU_MAX_NAME];
    sub(name, which, "mid_block.resnets.0");
    x = resnet(nn, c, x, name, C, C);
    if (c->mid_attention) {
        sub(name, which, "mid_block.attentions.0");
        x = attention(nn, c, x, name, C);
    }
    sub(name, which, "mid_block.resnets.1");
    return resnet(nn, c, x, name, C, C);
}

nu_tensor *nu_vae_build_encoder(nu_nn *nn, const nu_vae_config *c, nu_tensor *x) {
    nu_ctx *ctx = nn->ctx;
    char name[NU_MAX_NAME];
    int64_t ch = c->block_out_channels[0];
    nu_tensor *h = conv(nn, x, "encoder.conv_in", c->in_channels, ch, 3, 1, 1);
    for (int i = 0; i < c->n_blocks; i++) { /* DownEncoderBlock2D */
        int64_t out = c->block_out_channels[i];
        for (int j = 0; j < c->layers_per_block; j++) {
            snprintf(name, sizeof name, "encoder.down_blocks.%d.resnets.%d", i, j);
            h = resnet(nn, c, h, name, ch, out);
            ch = out;
        }
        if (i < c->n_blocks - 1) {
            /* Downsample2D(padding=0): F.pad(x, (0, 1, 0, 1)) (right and bottom only), then a
             * stride-2 3x3 conv without padding: [H, W] -> [H/2, W/2] (floor) */
            h = nu_pad(ctx, h, (const int[]){0, 0, 0, 0, 0, 1, 0, 1});
            snprintf(name, sizeof name, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            h = conv(nn, h, name, ch, ch, 3, 2, 0);
        }
    }
    h = mid_block(nn, c, h, "encoder", ch);
    h = norm_silu(nn, c, h, "encoder.conv_norm_out", ch);
    int64_t cz2 = 2 * (int64_t)c->latent_channels; /* double_z: mean and logvar */
    h = conv(nn, h, "encoder.conv_out", ch, cz2, 3, 1, 1);
    if (c->quant_conv) h = conv(nn, h, "quant_conv", cz2, cz2, 1, 1, 0);
    return h;
}

nu_tensor *nu_vae_build_decoder(nu_nn *nn, const nu_vae_config *c, nu_tensor *z) {
    nu_ctx *ctx = nn->ctx;
    char name[NU_MAX_NAME];
    int64_t cz = c->latent_channels;
    if (c->post_quant_conv) z = conv(nn, z, "post_quant_conv", cz, cz, 1, 1, 0);
    int64_t ch = c->block_out_channels[c->n_blocks - 1];
    nu_tensor *h = conv(nn, z, "decoder.conv_in", cz, ch, 3, 1, 1);
    h = mid_block(nn, c, h, "decoder", ch);
    for (int i = 0; i < c->n_blocks; i++) { /* UpDecoderBlock2D, channels reversed */
        int64_t out = c->block_out_channels[c->n_blocks - 1 - i];
        for (int j = 0; j <= c->layers_per_block; j++) {
            snprintf(name, sizeof name, "decoder.up_blocks.%d.resnets.%d", i, j);
            h = resnet(nn, c, h, name, ch, out);
            ch = out;
        }
        if (i < c->n_blocks - 1) { /* Upsample2D: nearest x2, then 3x3 conv */
            h = nu_upsample_nearest(ctx, h, 2);
            snprintf(name, sizeof name, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            h = conv(nn, h, name, ch, ch, 3, 1, 1);
        }
    }
    h = norm_silu(nn, c, h, "decoder.conv_norm_out", ch);
    return conv(nn, h, "decoder.conv_out", ch, c->out_channels, 3, 1, 1);
}

/* ================================================================ config */

static nu_tensor *wget(nu_weights *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static nu_tensor *wget(nu_weights *w, const char *fmt, ...) {
    char name[NU_MAX_NAME];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return nu_weights_get(w, name);
}

static bool is_conv(const nu_tensor *t) { return t && t->ndim == 4; }

nu_status nu_vae_detect_config(nu_weights *w, nu_vae_config *c, const char *what) {
    c->has_encoder = wget(w, "encoder.conv_in.weight") != NULL;
    c->has_decoder = wget(w, "decoder.conv_in.weight") != NULL;
    if (!c->has_encoder && !c->has_decoder)
        return nu_error(NU_ERR_FORMAT,
                        "%s: no VAE tensors (expected first_stage_model.encoder/decoder.* or encoder./decoder.* names)",
                        what);
    int n_enc = 0, n_dec = 0;
    while (n_enc < 64 && wget(w, "encoder.down_blocks.%d.resnets.0.conv1.weight", n_enc)) n_enc++;
    while (n_dec < 64 && wget(w, "decoder.up_blocks.%d.resnets.0.conv1.weight", n_dec)) n_dec++;
    int n = c->has_encoder ? n_enc : n_dec;
    if (n < 1 || n > NU_VAE_MAX_BLOCKS)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: VAE with %d blocks (supported: 1 to %d)", what, n, NU_VAE_MAX_BLOCKS);
    if (c->has_encoder && c->has_decoder && n_enc != n_dec)
        return nu_error(NU_ERR_FORMAT, "%s: VAE encoder has %d blocks but decoder %d", what, n_enc, n_dec);
    c->n_blocks = n;
    for (int i = 0; i < n; i++) {
        nu_tensor *t = c->has_encoder ? wget(w, "encoder.down_blocks.%d.resnets.0.conv2.weight", i)
                                      : wget(w, "decoder.up_blocks.%d.resnets.0.conv2.weight", n - 1 - i);
        if (!is_conv(t) || t->ne[0] < 1 || t->ne[0] > 65536)
            return nu_error(NU_ERR_FORMAT, "%s: VAE block %d: missing or malformed resnets.0.conv2.weight", what, i);
        c->block_out_channels[i] = (int)t->ne[0];
    }
    int layers = 0;
    if (c->has_encoder) {
        while (layers < 64 && wget(w, "encoder.down_blocks.0.resnets.%d.conv1.weight", layers)) layers++;
    } else {
        while (layers < 64 && wget(w, "decoder.up_blocks.0.resnets.%d.conv1.weight", layers)) layers++;
        layers--;
    }
    if (layers < 1) return nu_error(NU_ERR_FORMAT, "%s: VAE blocks without resnets", what);
    c->layers_per_block = layers;
    nu_tensor *t;
    if (c->has_decoder) {
        t = wget(w, "decoder.conv_in.weight");
        if (!is_conv(t)) return nu_error(NU_ERR_FORMAT, "%s: decoder.conv_in.weight is not a 4-D conv weight", what);
        c->latent_channels = (int)t->ne[1];
        t = wget(w, "decoder.conv_out.weight");
        c->out_channels = is_conv(t) ? (int)t->ne[0] : 3;
    } else {
        t = wget(w, "encoder.conv_out.weight");
        if (!is_conv(t) || t->ne[0] % 2)
            return nu_error(NU_ERR_FORMAT, "%s: encoder.conv_out.weight is missing or has an odd channel count", what);
        c->latent_channels = (int)(t->ne[0] / 2);
    }
    if (c->has_encoder) {
        t = wget(w, "encoder.conv_in.weight");
        if (!is_conv(t)) return nu_error(NU_ERR_FORMAT, "%s: encoder.conv_in.weight is not a 4-D conv weight", what);
        c->in_channels = (int)t->ne[1];
    } else {
        c->in_channels = c->out_channels;
    }
    if (c->latent_channels < 1 || c->latent_channels > 1024 || c->in_channels < 1 || c->in_channels > 64 ||
        c->out_channels < 1 || c->out_channels > 64)
        return nu_error(NU_ERR_FORMAT, "%s: implausible VAE channels (image %d/%d, latent %d)", what, c->in_channels,
                        c->out_channels, c->latent_channels);
    c->quant_conv = wget(w, "quant_conv.weight") != NULL;
    c->post_quant_conv = wget(w, "post_quant_conv.weight") != NULL;
    c->mid_attention = wget(w, "%s.mid_block.attentions.0.to_q.weight", c->has_encoder ? "encoder" : "decoder") != NULL;
    return NU_OK;
}

static nu_status check_config(const nu_vae_config *c, const char *what) {
    if (c->norm_groups < 1) return nu_error(NU_ERR_INVALID_ARG, "%s: norm_groups must be >= 1", what);
    for (int i = 0; i < c->n_blocks; i++)
        if (c->block_out_channels[i] % c->norm_groups)
            return nu_error(NU_ERR_FORMAT, "%s: VAE block %d has %d channels, not a multiple of norm_num_groups %d",
                            what, i, c->block_out_channels[i], c->norm_groups);
    if (!(c->norm_eps > 0) || !(c->scaling_factor > 0))
        return nu_error(NU_ERR_FORMAT, "%s: VAE norm_eps and scaling_factor must be positive", what);
    return NU_OK;
}

nu_status nu_vae_from_weights(nu_weights *w, const nu_vae_config *cfg, const char *what, nu_vae **out) {
    *out = NULL;
    nu_vae_config c = cfg ? *cfg : nu_vae_config_sd();
    nu_status s = nu_vae_detect_config(w, &c, what);
    if (s == NU_OK && cfg) { /* a given config must agree with the shapes */
        bool same = c.n_blocks == cfg->n_blocks && c.layers_per_block == cfg->layers_per_block &&
                    c.latent_channels == cfg->latent_channels;
        for (int i = 0; same && i < c.n_blocks; i++) same = c.block_out_channels[i] == cfg->block_out_channels[i];
        if (!same)
            s = nu_error(NU_ERR_FORMAT,
                         "%s: VAE config (%d blocks, %d layers, %d latent channels) does not match the weights (%d, %d, %d)",
                         what, cfg->n_blocks, cfg->layers_per_block, cfg->latent_channels, c.n_blocks,
                         c.layers_per_block, c.latent_channels);
    }
    if (s == NU_OK) s = check_config(&c, what);
    nu_vae *v = s == NU_OK ? calloc(1, sizeof *v) : NULL;
    if (s == NU_OK && !v) s = nu_error(NU_ERR_NOMEM, "%s: out of memory", what);
    if (s != NU_OK) {
        nu_weights_free(w);
        return s;
    }
    v->w = w;
    v->cfg = c;
    *out = v;
    return NU_OK;
}

/* ================================================================ loading */

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Reads diffusers' vae/config.json into the fields the weights cannot show (and the structure,
 * for the cross-check in nu_vae_from_weights). */
static nu_status read_config_json(const char *path, nu_vae_config *c) {
    nu_json *j;
    nu_status s = nu_json_load_file(path, &j);
    if (s != NU_OK) return s;
    const nu_json *boc = nu_json_get(j, "block_out_channels");
    if (j->kind != NU_JSON_OBJECT || (boc && (boc->kind != NU_JSON_ARRAY || boc->n < 1 || boc->n > NU_VAE_MAX_BLOCKS))) {
        s = nu_error(NU_ERR_FORMAT, "%s: not an AutoencoderKL config (block_out_channels)", path);
    } else {
        if (boc) {
            c->n_blocks = boc->n;
            for (int i = 0; i < boc->n; i++) c->block_out_channels[i] = (int)nu_json_at(boc, i)->num;
        }
        c->layers_per_block = (int)nu_json_number(j, "layers_per_block", c->layers_per_block);
        c->latent_channels = (int)nu_json_number(j, "latent_channels", c->latent_channels);
        c->norm_groups = (int)nu_json_number(j, "norm_num_groups", c->norm_groups);
        c->scaling_factor = (float)nu_json_number(j, "scaling_factor", c->scaling_factor);
        c->shift_factor = (float)nu_json_number(j, "shift_factor", c->shift_factor); /* null -> 0 */
        const char *act = nu_json_string(j, "act_fn", "silu");
        if (strcmp(act, "silu") != 0) s = nu_error(NU_ERR_UNSUPPORTED, "%s: act_fn '%s' (only silu)", path, act);
    }
    nu_json_free(j);
    return s;
}

/* Which name prefix holds the VAE in a single file: LDM checkpoints use first_stage_model.,
 * standalone VAE files none. */
static nu_status pick_prefix(const char *path, const char **prefix) {
    static const char *const prefixes[] = {"first_stage_model.", "vae.", ""};
    nu_weights *probe = nu_weights_new();
    if (!probe) return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    nu_status s = nu_weights_add_file(probe, path, NULL);
    *prefix = NULL;
    for (int i = 0; s == NU_OK && i < 3 && !*prefix; i++) {
        char a[NU_MAX_NAME], b[NU_MAX_NAME];
        snprintf(a, sizeof a, "%sencoder.conv_in.weight", prefixes[i]);
        snprintf(b, sizeof b, "%sdecoder.conv_in.weight", prefixes[i]);
        int n = nu_weights_count(probe);
        for (int k = 0; k < n && !*prefix; k++) {
            const char *name = nu_weights_name_at(probe, k);
            if (!strcmp(name, a) || !strcmp(name, b)) *prefix = prefixes[i];
        }
    }
    nu_weights_free(probe);
    if (s == NU_OK && !*prefix)
        s = nu_error(NU_ERR_FORMAT, "%s: no VAE in this file (no first_stage_model.* or encoder/decoder tensors)", path);
    return s;
}

nu_status nu_vae_load(const char *path, const nu_vae_params *p, nu_vae **out) {
    *out = NULL;
    if (!path || !*path) return nu_error(NU_ERR_INVALID_ARG, "VAE: empty path");
    nu_vae_params params = p ? *p : nu_vae_params_init();
    struct stat st;
    if (stat(path, &st) != 0) return nu_error(NU_ERR_IO, "%s: cannot open (no such file or folder)", path);
    char file[4096], cfg_path[4096] = "";
    const char *prefix = "";
    if (S_ISDIR(st.st_mode)) {
        /* a diffusers pipeline folder (vae/ inside) or the vae/ folder itself */
        static const char *const subs[] = {"vae/", ""};
        static const char *const names[] = {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"};
        file[0] = 0;
        for (int i = 0; i < 2 && !file[0]; i++)
            for (int k = 0; k < 2 && !file[0]; k++) {
                snprintf(file, sizeof file, "%s/%s%s", path, subs[i], names[k]);
                if (!is_file(file)) {
                    file[0] = 0;
                    continue;
                }
                snprintf(cfg_path, sizeof cfg_path, "%s/%sconfig.json", path, subs[i]);
                if (!is_file(cfg_path)) cfg_path[0] = 0;
            }
        if (!file[0])
            return nu_error(NU_ERR_NOT_FOUND, "%s: no vae/diffusion_pytorch_model.safetensors in this folder", path);
    } else {
        snprintf(file, sizeof file, "%s", path);
        nu_status s = pick_prefix(file, &prefix);
        if (s != NU_OK) return s;
        /* a standalone diffusers VAE file may sit next to its config.json */
        const char *slash = strrchr(file, '/');
        int dlen = slash ? (int)(slash - file) + 1 : 0;
        snprintf(cfg_path, sizeof cfg_path, "%.*sconfig.json", dlen, file);
        cfg_path[0] = *prefix == 0 && is_file(cfg_path) ? cfg_path[0] : 0;
        if (cfg_path[0]) { /* only diffusers' AutoencoderKL configs */
            nu_json *j = NULL;
            bool ok = nu_json_load_file(cfg_path, &j) == NU_OK &&
                      !strcmp(nu_json_string(j, "_class_name", ""), "AutoencoderKL");
            nu_json_free(j);
            nu_clear_error();
            if (!ok) cfg_path[0] = 0;
        }
    }
    nu_vae_config c = nu_vae_config_sd(), *cp = NULL;
    if (cfg_path[0]) {
        nu_status s = read_config_json(cfg_path, &c);
        if (s != NU_OK) return s;
        cp = &c;
    }
    if (params.norm_groups > 0) c.norm_groups = params.norm_groups;
    if (params.scaling_factor > 0) c.scaling_factor = params.scaling_factor;
    nu_weights *w = nu_weights_new();
    if (!w) return nu_error(NU_ERR_NOMEM, "%s: out of memory", file);
    nu_status s = nu_weights_add_file(w, file, prefix);
    if (s != NU_OK) {
        nu_weights_free(w);
        return s;
    }
    nu_vae_rename_to_diffusers(w);
    if (!cp) {
        /* no config.json: structure from the shapes, the rest from the defaults and params */
        nu_vae_config d = c;
        s = nu_vae_detect_config(w, &d, file);
        if (s != NU_OK) {
            nu_weights_free(w);
            return s;
        }
        c = d;
    }
    return nu_vae_from_weights(w, &c, file, out);
}

/* ================================================================ running graphs */

/* One graph per input shape, rebuilt only when the shape changes (all tiles of a tiled run
 * share one). */
typedef struct runner {
    nu_vae *vae;
    nu_pool *pool;
    bool decode;
    nu_ctx *ctx;
    nu_graph *g;
    nu_tensor *in, *out;
    int B, h, w;
} runner;

static void runner_reset(runner *r) {
    if (r->g) nu_graph_free(r->g);
    if (r->ctx) nu_ctx_free(r->ctx);
    r->g = NULL;
    r->ctx = NULL;
}

static nu_status runner_build(runner *r, int B, int h, int w) {
    runner_reset(r);
    const nu_vae_config *c = &r->vae->cfg;
    nu_ctx_params cp = nu_ctx_params_init();
    cp.alloc_data = false;
    r->ctx = nu_ctx_new(&cp);
    if (!r->ctx) return nu_error(NU_ERR_NOMEM, "VAE: out of memory");
    int cin = r->decode ? c->latent_channels : c->in_channels;
    nu_ctx_set_alloc_data(r->ctx, true);
    r->in = nu_new_tensor_4d(r->ctx, NU_TYPE_F32, B, cin, h, w);
    nu_ctx_set_alloc_data(r->ctx, false);
    if (!r->in || !r->in->data) return nu_error(NU_ERR_NOMEM, "VAE: out of memory for a [%d, %d, %d, %d] input", B, cin, h, w);
    nu_set_name(r->in, r->decode ? "z" : "image");
    nu_nn nn;
    nu_nn_init(&nn, r->ctx, r->vae->w, "vae");
    r->out = r->decode ? nu_vae_build_decoder(&nn, c, r->in) : nu_vae_build_encoder(&nn, c, r->in);
    nu_status s = nu_nn_status(&nn);
    if (s != NU_OK) return s;
    r->g = nu_graph_new(r->ctx);
    nu_graph_expand(r->g, r->out);
    s = nu_graph_alloc(r->g);
    if (s != NU_OK) return s;
    r->B = B;
    r->h = h;
    r->w = w;
    return NU_OK;
}

static nu_status runner_run(void *user, const float *in, int B, int h, int w, float *out) {
    runner *r = user;
    if (!r->g || r->B != B || r->h != h || r->w != w) {
        nu_status s = runner_build(r, B, h, w);
        if (s != NU_OK) return s;
    }
    memcpy(r->in->data, in, nu_nbytes(r->in));
    nu_status s = nu_graph_compute(r->g, r->pool);
    if (s != NU_OK) return s;
    nu_tensor_get_f32(r->out, out);
    return NU_OK;
}

/* ================================================================ tiling */

int nu_vae_tile_starts(int L, int tile, float overlap, int *starts, int cap) {
    if (cap < 1 || L < 1 || tile < 1) return 0;
    if (L <= tile) {
        starts[0] = 0;
        return 1;
    }
    int ov = (int)lroundf(overlap * (float)tile);
    if (ov < 0) ov = 0;
    if (ov > tile - 1) ov = tile - 1;
    int stride = tile - ov, span = L - tile;
    int n = (span + stride - 1) / stride + 1; /* fewest tiles whose neighbours overlap >= ov */
    if (n > cap) return 0;
    for (int k = 0; k < n; k++) starts[k] = (int)(((int64_t)k * span + (n - 1) / 2) / (n - 1)); /* round */
    return n;
}

/* Blend weights along one axis for tile k of n, in output pixels (len = tile * b): a linear
 * ramp (p + 0.5) / ov over the overlap with each neighbour, 1 elsewhere. Where two tiles meet,
 * their ramps sum to exactly 1 (both span the same ov pixels). */
static void axis_weights(const int *starts, int n, int k, int tile, int b, float *wt) {
    int len = tile * b;
    int ovp = k > 0 ? (starts[k - 1] + tile - starts[k]) * b : 0;
    int ovn = k < n - 1 ? (starts[k] + tile - starts[k + 1]) * b : 0;
    for (int p = 0; p < len; p++) {
        float v = 1.0f;
        if (ovp > 0) v = fminf(v, ((float)p + 0.5f) / (float)ovp);
        if (ovn > 0) v = fminf(v, ((float)(len - p) - 0.5f) / (float)ovn);
        wt[p] = v;
    }
}

nu_status nu_vae_tiled_run(nu_vae_tile_fn fn, void *user, const float *in, int B, int cin, int cout, int gh, int gw,
                           int a, int b, int tile, float overlap, float *out) {
    if (tile < 1 || gh < 1 || gw < 1 || !(overlap >= 0 && overlap <= 0.5f))
        return nu_error(NU_ERR_INVALID_ARG, "VAE tiling: tile %d and overlap %g (need tile >= 1, overlap in [0, 0.5])",
                        tile, (double)overlap);
    int th = gh < tile ? gh : tile, tw = gw < tile ? gw : tile; /* tile size in cells */
    int *ys = malloc(sizeof(int) * (size_t)gh), *xs = malloc(sizeof(int) * (size_t)gw);
    int ny = ys ? nu_vae_tile_starts(gh, th, overlap, ys, gh) : 0;
    int nx = xs ? nu_vae_tile_starts(gw, tw, overlap, xs, gw) : 0;
    int64_t IH = (int64_t)gh * a, IW = (int64_t)gw * a, OH = (int64_t)gh * b, OW = (int64_t)gw * b;
    int64_t tih = (int64_t)th * a, tiw = (int64_t)tw * a, toh = (int64_t)th * b, tow = (int64_t)tw * b;
    float *tin = malloc(sizeof(float) * (size_t)(B * cin * tih * tiw));
    float *tout = malloc(sizeof(float) * (size_t)(B * cout * toh * tow));
    float *wsum = calloc((size_t)(OH * OW), sizeof(float));
    float *wy = malloc(sizeof(float) * (size_t)toh), *wx = malloc(sizeof(float) * (size_t)tow);
    nu_status s = NU_OK;
    if (!ys || !xs || !tin || !tout || !wsum || !wy || !wx || !ny || !nx)
        s = nu_error(NU_ERR_NOMEM, "VAE tiling: out of memory");
    if (s == NU_OK) memset(out, 0, sizeof(float) * (size_t)(B * cout * OH * OW));
    for (int ty = 0; s == NU_OK && ty < ny; ty++) {
        axis_weights(ys, ny, ty, th, b, wy);
        for (int tx = 0; s == NU_OK && tx < nx; tx++) {
            axis_weights(xs, nx, tx, tw, b, wx);
            int64_t iy0 = (int64_t)ys[ty] * a, ix0 = (int64_t)xs[tx] * a;
            for (int64_t bc = 0; bc < (int64_t)B * cin; bc++) /* crop the input tile */
                for (int64_t y = 0; y < tih; y++)
                    memcpy(tin + (bc * tih + y) * tiw, in + (bc * IH + iy0 + y) * IW + ix0, sizeof(float) * (size_t)tiw);
            s = fn(user, tin, B, (int)tih, (int)tiw, tout);
            if (s != NU_OK) break;
            int64_t oy0 = (int64_t)ys[ty] * b, ox0 = (int64_t)xs[tx] * b;
            for (int64_t y = 0; y < toh; y++) {
                float *ws = wsum + (oy0 + y) * OW + ox0;
                for (int64_t x = 0; x < tow; x++) ws[x] += wy[y] * wx[x];
            }
            for (int64_t bc = 0; bc < (int64_t)B * cout; bc++)
                for (int64_t y = 0; y < toh; y++) {
                    const float *src = tout + (bc * toh + y) * tow;
                    float *dst = out + (bc * OH + oy0 + y) * OW + ox0;
                    for (int64_t x = 0; x < tow; x++) dst[x] += wy[y] * wx[x] * src[x];
                }
        }
    }
    if (s == NU_OK) /* weighted mean: every output pixel is covered, weights > 0 */
        for (int64_t bc = 0; bc < (int64_t)B * cout; bc++)
            for (int64_t i = 0; i < OH * OW; i++) out[bc * OH * OW + i] /= wsum[i];
    free(ys);
    free(xs);
    free(tin);
    free(tout);
    free(wsum);
    free(wy);
    free(wx);
    return s;
}

static nu_status run(nu_vae *vae, nu_pool *pool, bool decode, const float *in, int B, int H, int W,
                     const nu_vae_tiling *tiling, float *out) {
    const nu_vae_config *c = &vae->cfg;
    int f = nu_vae_downscale(vae);
    if (decode ? !c->has_decoder : !c->has_encoder)
        return nu_error(NU_ERR_UNSUPPORTED, "VAE: this model file has no %s", decode ? "decoder" : "encoder");
    if (B < 1 || H < 1 || W < 1 || (int64_t)B * H * W > ((int64_t)1 << 31))
        return nu_error(NU_ERR_INVALID_ARG, "VAE %s: bad input size %dx%dx%d", decode ? "decode" : "encode", B, H, W);
    if (!decode && (H % f || W % f))
        return nu_error(NU_ERR_INVALID_ARG, "VAE encode: image %dx%d is not a multiple of %d", W, H, f);
    int gh = decode ? H : H / f, gw = decode ? W : W / f; /* latent plane */
    runner r = {.vae = vae, .pool = pool, .decode = decode};
    nu_status s;
    if (tiling && tiling->tile < 4)
        return nu_error(NU_ERR_INVALID_ARG, "VAE tiling: tile size %d latent pixels (need >= 4)", tiling->tile);
    if (!tiling || (gh <= tiling->tile && gw <= tiling->tile)) {
        s = runner_run(&r, in, B, H, W, out); /* fits in one tile: untiled, identical */
    } else {
        int cin = decode ? c->latent_channels : c->in_channels;
        int cout = decode ? c->out_channels : 2 * c->latent_channels;
        s = nu_vae_tiled_run(runner_run, &r, in, B, cin, cout, gh, gw, decode ? 1 : f, decode ? f : 1, tiling->tile,
                             tiling->overlap, out);
    }
    runner_reset(&r);
    return s;
}

nu_status nu_vae_encode(nu_vae *vae, nu_pool *pool, const float *image, int B, int H, int W,
                        const nu_vae_tiling *tiling, float *moments) {
    return run(vae, pool, false, image, B, H, W, tiling, moments);
}

nu_status nu_vae_decode(nu_vae *vae, nu_pool *pool, const float *z, int B, int h, int w,
                        const nu_vae_tiling *tiling, float *image) {
    return run(vae, pool, true, z, B, h, w, tiling, image);
}

void nu_vae_moments_split(const float *moments, int B, int C, int h, int w, const float *noise, float *mean,
                          float *logvar, float *latent) {
    int64_t n = (int64_t)C * h * w;
    for (int64_t bi = 0; bi < B; bi++) {
        const float *mu = moments + bi * 2 * n, *lv = mu + n;
        for (int64_t i = 0; i < n; i++) {
            /* DiagonalGaussianDistribution: logvar = clamp(logvar, -30, 20); std = exp(0.5 logvar) */
            float l = fminf(fmaxf(lv[i], -30.0f), 20.0f);
            if (mean) mean[bi * n + i] = mu[i];
            if (logvar) logvar[bi * n + i] = l;
            if (latent) latent[bi * n + i] = noise ? mu[i] + expf(0.5f * l) * noise[bi * n + i] : mu[i];
        }
    }
}

/* ================================================================ random weights */

typedef struct param_list {
    nu_ctx *ctx;
    nu_type type;
    uint64_t seed;
    nu_tensor **t;
    int n, cap;
    bool oom;
} param_list;

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* kind: 0 = U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's conv/linear default), 1 = ones, 2 = zeros */
static void add_param(param_list *pl, const char *name, int ndim, const int64_t *ne, int64_t fan_in, int kind) {
    if (pl->oom) return;
    if (pl->n == pl->cap) {
        pl->cap = pl->cap ? 2 * pl->cap : 256;
        nu_tensor **nt = realloc(pl->t, sizeof(nu_tensor *) * (size_t)pl->cap);
        if (!nt) {
            pl->oom = true;
            return;
        }
        pl->t = nt;
    }
    nu_tensor *t = nu_new_tensor(pl->ctx, pl->type, ndim, ne);
    if (!t || !t->data) {
        pl->oom = true;
        return;
    }
    nu_set_name(t, "%s", name);
    int64_t n = nu_nelements(t);
    float *v = malloc(sizeof(float) * (size_t)n);
    if (!v) {
        pl->oom = true;
        return;
    }
    uint64_t s = pl->seed ^ (0x5851F42D4C957F2Dull * (uint64_t)(pl->n + 1));
    float bound = 1.0f / sqrtf((float)fan_in);
    for (int64_t i = 0; i < n; i++)
        v[i] = kind == 1 ? 1.0f : kind == 2 ? 0.0f : bound * (float)((double)(splitmix(&s) >> 11) * 0x1p-52 - 1.0);
    nu_tensor_set_f32(t, v);
    free(v);
    pl->t[pl->n++] = t;
}

static void p_conv(param_list *pl, const char *prefix, int64_t cout, int64_t cin, int k) {
    char name[NU_MAX_NAME];
    sub(name, prefix, "weight");
    add_param(pl, name, 4, (int64_t[]){cout, cin, k, k}, cin * k * k, 0);
    sub(name, prefix, "bias");
    add_param(pl, name, 1, (int64_t[]){cout}, cin * k * k, 0);
}

static void p_linear(param_list *pl, const char *prefix, int64_t C) {
    char name[NU_MAX_NAME];
    sub(name, prefix, "weight");
    add_param(pl, name, 2, (int64_t[]){C, C}, C, 0);
    sub(name, prefix, "bias");
    add_param(pl, name, 1, (int64_t[]){C}, C, 0);
}

static void p_norm(param_list *pl, const char *prefix, int64_t C) {
    char name[NU_MAX_NAME];
    sub(name, prefix, "weight");
    add_param(pl, name, 1, (int64_t[]){C}, 1, 1);
    sub(name, prefix, "bias");
    add_param(pl, name, 1, (int64_t[]){C}, 1, 2);
}

static void p_resnet(param_list *pl, const char *prefix, int64_t cin, int64_t cout) {
    char name[NU_MAX_NAME];
    sub(name, prefix, "norm1");
    p_norm(pl, name, cin);
    sub(name, prefix, "conv1");
    p_conv(pl, name, cout, cin, 3);
    sub(name, prefix, "norm2");
    p_norm(pl, name, cout);
    sub(name, prefix, "conv2");
    p_conv(pl, name, cout, cout, 3);
    if (cin != cout) {
        sub(name, prefix, "conv_shortcut");
        p_conv(pl, name, cout, cin, 1);
    }
}

static void p_mid(param_list *pl, const nu_vae_config *c, const char *which, int64_t C) {
    char name[NU_MAX_NAME];
    sub(name, which, "mid_block.resnets.0");
    p_resnet(pl, name, C, C);
    if (c->mid_attention) {
        static const char *const proj[4] = {"to_q", "to_k", "to_v", "to_out.0"};
        sub(name, which, "mid_block.attentions.0.group_norm");
        p_norm(pl, name, C);
        for (int i = 0; i < 4; i++) {
            snprintf(name, sizeof name, "%s.mid_block.attentions.0.%s", which, proj[i]);
            p_linear(pl, name, C);
        }
    }
    sub(name, which, "mid_block.resnets.1");
    p_resnet(pl, name, C, C);
}

static void p_model(param_list *pl, const nu_vae_config *c) {
    char name[NU_MAX_NAME];
    int n = c->n_blocks;
    int64_t cz = c->latent_channels, ch;
    if (c->has_encoder) {
        ch = c->block_out_channels[0];
        p_conv(pl, "encoder.conv_in", ch, c->in_channels, 3);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < c->layers_per_block; j++) {
                snprintf(name, sizeof name, "encoder.down_blocks.%d.resnets.%d", i, j);
                p_resnet(pl, name, ch, c->block_out_channels[i]);
                ch = c->block_out_channels[i];
            }
            if (i < n - 1) {
                snprintf(name, sizeof name, "encoder.down_blocks.%d.downsamplers.0.conv", i);
                p_conv(pl, name, ch, ch, 3);
            }
        }
        p_mid(pl, c, "encoder", ch);
        p_norm(pl, "encoder.conv_norm_out", ch);
        p_conv(pl, "encoder.conv_out", 2 * cz, ch, 3);
        if (c->quant_conv) p_conv(pl, "quant_conv", 2 * cz, 2 * cz, 1);
    }
    if (c->has_decoder) {
        if (c->post_quant_conv) p_conv(pl, "post_quant_conv", cz, cz, 1);
        ch = c->block_out_channels[n - 1];
        p_conv(pl, "decoder.conv_in", ch, cz, 3);
        p_mid(pl, c, "decoder", ch);
        for (int i = 0; i < n; i++) {
            int64_t o = c->block_out_channels[n - 1 - i];
            for (int j = 0; j <= c->layers_per_block; j++) {
                snprintf(name, sizeof name, "decoder.up_blocks.%d.resnets.%d", i, j);
                p_resnet(pl, name, ch, o);
                ch = o;
            }
            if (i < n - 1) {
                snprintf(name, sizeof name, "decoder.up_blocks.%d.upsamplers.0.conv", i);
                p_conv(pl, name, ch, ch, 3);
            }
        }
        p_norm(pl, "decoder.conv_norm_out", ch);
        p_conv(pl, "decoder.conv_out", c->out_channels, ch, 3);
    }
}

nu_status nu_vae_save_random(const nu_vae_config *cfg, nu_type type, uint64_t seed, const char *path) {
    if (type != NU_TYPE_F32 && type != NU_TYPE_F16 && type != NU_TYPE_BF16)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: random VAE weights in %s (f32, f16 or bf16 only)", path,
                        nu_type_name(type));
    if (cfg->n_blocks < 1 || cfg->n_blocks > NU_VAE_MAX_BLOCKS || cfg->layers_per_block < 1)
        return nu_error(NU_ERR_INVALID_ARG, "%s: bad VAE config", path);
    param_list pl = {.ctx = nu_ctx_new(NULL), .type = type, .seed = seed};
    if (!pl.ctx) return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    p_model(&pl, cfg);
    nu_status s = pl.oom ? nu_error(NU_ERR_NOMEM, "%s: out of memory for random weights", path)
                         : nu_st_save(path, pl.t, pl.n, NULL, NULL, 0);
    free(pl.t);
    nu_ctx_free(pl.ctx);
    return s;
}
