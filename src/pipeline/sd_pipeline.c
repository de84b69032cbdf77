/*
 * sd_pipeline.c — nu_sd_generate: the Stable Diffusion pipeline (txt2img, img2img, inpainting
 * with 4- and 9-channel UNets, batches), following diffusers v0.27.2's StableDiffusionPipeline,
 * StableDiffusionImg2ImgPipeline and StableDiffusionInpaintPipeline step for step, including the
 * order of every draw from the generator:
 *   txt2img      randn(latents) * init_noise_sigma
 *   img2img      VAE latent_dist.sample (draw), randn (draw), scheduler.add_noise at the first
 *                timestep of the strength-shortened schedule
 *   inpainting   [VAE sample of the image (draw) unless 9-channel at strength 1], randn (draw),
 *                then the masked image's VAE sample (draw; used by 9-channel UNets only)
 *   then each scheduler step's own draws; decode latents / scaling_factor; image/2 + 0.5 clamped;
 *   8-bit = round(255 * x) (numpy round half to even), as numpy_to_pil.
 * Images: uint8 RGB / 255 in float32, 2x - 1; masks: luminance / 255, binarised at 0.5, the latent
 * mask by nearest interpolation (F.interpolate default); masked image = image * (mask < 0.5).
 * Also the A1111 infotext (PNG "parameters"). Tested by tests/test_sd_pipeline.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline/sd_internal.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off") /* float32 image arithmetic as torch does it */
#endif

/* core/pool.c: clears a pending nu_pool_cancel (the engine clears it at each compute's start) */
void nu_pool_reset_cancel(nu_pool *pool);

void nu_sd_params_init(nu_sd_params *p) {
    memset(p, 0, sizeof *p);
    p->steps = 20;
    p->cfg_scale = 7.0f;
    p->seed = 42;
    p->rng = NU_SD_RNG_CPU;
    p->strength = 0.75;
    p->batch_count = 1;
    p->eta = NAN;
    p->prompt_weighting = true;
}

void nu_sd_output_free(nu_sd_output *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        if (o->images) nu_image_free(&o->images[i]);
        if (o->parameters) free(o->parameters[i]);
        if (o->image_f32) free(o->image_f32[i]);
        if (o->latents) free(o->latents[i]);
    }
    free(o->images);
    free(o->seeds);
    free(o->parameters);
    free(o->image_f32);
    free(o->latents);
    memset(o, 0, sizeof *o);
}

/* ---------------------------------------------------------------- names and infotext */

static const struct {
    const char *name, *display;
} DISPLAY[] = {
    {"euler", "Euler"},          {"euler_a", "Euler a"},
    {"heun", "Heun"},            {"dpm2", "DPM2"},
    {"dpm2_a", "DPM2 a"},        {"lms", "LMS"},
    {"dpm++2s_a", "DPM++ 2S a"}, {"dpm++sde", "DPM++ SDE"},
    {"dpm++2m", "DPM++ 2M"},     {"dpm++2m_sde", "DPM++ 2M SDE"},
    {"dpm++2m_sde_heun", "DPM++ 2M SDE Heun"}, {"dpm++3m_sde", "DPM++ 3M SDE"},
    {"ddim", "DDIM"},            {"ddpm", "DDPM"},
    {"lcm", "LCM"},              {"pndm", "PLMS"},
    {"unipc", "UniPC"},
};

const char *nu_sd_sampler_display_name(const char *name) {
    if (!name) return "";
    for (size_t i = 0; i < sizeof DISPLAY / sizeof *DISPLAY; i++)
        if (!strcmp(DISPLAY[i].name, name)) return DISPLAY[i].display;
    nu_sampler s;
    if (nu_sampler_from_name(name, &s) == NU_OK) {
        const char *c = nu_sampler_name(s);
        for (size_t i = 0; i < sizeof DISPLAY / sizeof *DISPLAY; i++)
            if (!strcmp(DISPLAY[i].name, c)) return DISPLAY[i].display;
    }
    return name;
}

static const char *schedule_display(const char *s) {
    static const struct {
        const char *n, *d;
    } T[] = {{"karras", "Karras"},           {"exponential", "Exponential"}, {"sgm_uniform", "SGM Uniform"},
             {"simple", "Simple"},           {"polyexponential", "Polyexponential"}, {"vp", "VP"}};
    for (size_t i = 0; i < sizeof T / sizeof *T; i++)
        if (!strcmp(T[i].n, s)) return T[i].d;
    return s;
}

/* A growable string. */
typedef struct sbuf {
    char *s;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *t, size_t len) {
    if (b->oom) return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = true;
            return;
        }
        b->s = s, b->cap = cap;
    }
    memcpy(b->s + b->n, t, len);
    b->n += len;
    b->s[b->n] = 0;
}
static void sb_str(sbuf *b, const char *t) { sb_add(b, t, strlen(t)); }

/* A1111 generation_parameters_copypaste.quote: json.dumps(text, ensure_ascii=False) when the value
 * holds ',', ':' or a newline. */
static void sb_quoted(sbuf *b, const char *v) {
    if (!strpbrk(v, ",:\n")) {
        sb_str(b, v);
        return;
    }
    sb_str(b, "\"");
    for (const char *c = v; *c; c++) {
        char e[8];
        switch (*c) {
        case '"': sb_str(b, "\\\""); break;
        case '\\': sb_str(b, "\\\\"); break;
        case '\n': sb_str(b, "\\n"); break;
        case '\r': sb_str(b, "\\r"); break;
        case '\t': sb_str(b, "\\t"); break;
        case '\b': sb_str(b, "\\b"); break;
        case '\f': sb_str(b, "\\f"); break;
        default:
            if ((unsigned char)*c < 0x20) {
                snprintf(e, sizeof e, "\\u%04x", (unsigned char)*c);
                sb_str(b, e);
            } else {
                sb_add(b, c, 1);
            }
        }
    }
    sb_str(b, "\"");
}

static void sb_field(sbuf *b, const char *key, const char *val) {
    if (b->n && b->s[b->n - 1] != '\n') sb_str(b, ", ");
    sb_str(b, key);
    sb_str(b, ": ");
    sb_quoted(b, val);
}

static void fmt_num(char *out, size_t len, double v) { /* Python str() of a short float / int */
    snprintf(out, len, "%.10g", v);
}

char *nu_sd_infotext(const nu_sd *sd, const nu_sd_params *p, int64_t seed, int width, int height) {
    sd_choice ch;
    const char *sampler = p->sampler ? p->sampler : "", *sched = "discrete";
    if (sd_choose(sd, p, &ch) == NU_OK) sampler = ch.sampler_name, sched = ch.schedule_name;
    sbuf b = {0};
    sb_str(&b, p->prompt ? p->prompt : "");
    if (p->negative_prompt && *p->negative_prompt) {
        sb_str(&b, "\nNegative prompt: ");
        sb_str(&b, p->negative_prompt);
    }
    sb_str(&b, "\n");
    char v[64];
    snprintf(v, sizeof v, "%d", p->steps);
    sb_field(&b, "Steps", v);
    sb_field(&b, "Sampler", nu_sd_sampler_display_name(sampler));
    if (strcmp(sched, "discrete")) sb_field(&b, "Schedule type", schedule_display(sched));
    fmt_num(v, sizeof v, p->cfg_scale);
    sb_field(&b, "CFG scale", v);
    snprintf(v, sizeof v, "%lld", (long long)seed);
    sb_field(&b, "Seed", v);
    snprintf(v, sizeof v, "%dx%d", width, height);
    sb_field(&b, "Size", v);
    sb_field(&b, "Model", sd->name);
    if (p->init_image) {
        fmt_num(v, sizeof v, p->strength);
        sb_field(&b, "Denoising strength", v);
    }
    if (p->clip_skip > 1 && p->clip_skip != sd->clip_cfg.default_skip) {
        snprintf(v, sizeof v, "%d", p->clip_skip);
        sb_field(&b, "Clip skip", v);
    }
    if (p->rng == NU_SD_RNG_CPU) sb_field(&b, "RNG", "CPU");
    char ver[64];
    snprintf(ver, sizeof ver, "nuance %s", nu_version());
    sb_field(&b, "Version", ver);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* ---------------------------------------------------------------- images */

/* Lanczos-3 resampling of a float HWC image, PIL's ImagingResample: separable, support scaled by
 * the reduction factor, weights normalised per output pixel (float here; PIL rounds to 8 bits
 * between the passes). */
static double lanczos3(double x) {
    if (x < 0) x = -x;
    if (x >= 3) return 0;
    if (x < 1e-12) return 1;
    double px = M_PI * x;
    return 3 * sin(px) * sin(px / 3) / (px * px);
}

static void resample_axis(const float *src, int n_in, int n_out, int lines, int stride_pix, int line_stride, int C,
                          float *dst, int dst_stride_pix, int dst_line_stride) {
    double scale = (double)n_in / n_out, fs = scale > 1 ? scale : 1, support = 3 * fs;
    double *wt = malloc(sizeof(double) * (size_t)(2 * support + 3));
    if (!wt) return;
    for (int o = 0; o < n_out; o++) {
        double center = (o + 0.5) * scale;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > n_in) hi = n_in;
        double tot = 0;
        for (int i = lo; i < hi; i++) tot += wt[i - lo] = lanczos3((i - center + 0.5) / fs);
        for (int l = 0; l < lines; l++)
            for (int c = 0; c < C; c++) {
                double acc = 0;
                for (int i = lo; i < hi; i++) acc += wt[i - lo] * src[(size_t)l * line_stride + (size_t)i * stride_pix + c];
                dst[(size_t)l * dst_line_stride + (size_t)o * dst_stride_pix + c] = (float)(tot != 0 ? acc / tot : 0);
            }
    }
    free(wt);
}

/* 8-bit image -> float channels C (1: luminance as PIL convert("L"), 3: RGB) at W x H (resized
 * when different), values v/255 in float32; NULL on out of memory. Output HWC. */
static float *image_to_float(const nu_image *im, int C, int W, int H) {
    const int iw = im->width, ih = im->height, ic = im->channels;
    float *a = malloc(sizeof(float) * (size_t)iw * ih * C);
    if (!a) return NULL;
    for (int64_t i = 0; i < (int64_t)iw * ih; i++) {
        const uint8_t *px = im->pixels + i * ic;
        uint8_t r = px[0], g = ic >= 3 ? px[1] : px[0], b = ic >= 3 ? px[2] : px[0];
        if (C == 1) {
            /* PIL RGB -> L: (r*19595 + g*38470 + b*7471 + 0x8000) >> 16 */
            uint32_t l = ic >= 3 ? ((uint32_t)r * 19595u + (uint32_t)g * 38470u + (uint32_t)b * 7471u + 0x8000u) >> 16 : r;
            a[i] = (float)l;
        } else {
            a[i * 3] = r, a[i * 3 + 1] = g, a[i * 3 + 2] = b;
        }
    }
    if (iw != W || ih != H) {
        float *t = malloc(sizeof(float) * (size_t)W * ih * C), *o = malloc(sizeof(float) * (size_t)W * H * C);
        if (!t || !o) {
            free(a), free(t), free(o);
            return NULL;
        }
        resample_axis(a, iw, W, ih, C, iw * C, C, t, C, W * C); /* rows */
        resample_axis(t, ih, H, W, W * C, C, C, o, W * C, C);   /* columns */
        for (int64_t i = 0; i < (int64_t)W * H * C; i++) { /* back to 8 bits as PIL */
            float v = nearbyintf(o[i]);
            o[i] = v < 0 ? 0 : v > 255 ? 255 : v;
        }
        free(a), free(t);
        a = o;
    }
    for (int64_t i = 0; i < (int64_t)W * H * C; i++) a[i] = a[i] / 255.0f;
    return a;
}

/* ---------------------------------------------------------------- VAE */

/* image [1, 3, H, W] in [-1, 1] -> scaling_factor * latent_dist.sample(generator) (noise drawn
 * from g; g NULL: the distribution's mode). */
static nu_status encode(nu_sd *sd, const nu_sd_params *p, const float *img, int H, int W, sd_noise *g, float *lat) {
    const int f = nu_vae_downscale(sd->vae), h = H / f, w = W / f, C = sd->fam.latent_channels;
    const int64_t n = (int64_t)C * h * w;
    float *mom = malloc(sizeof(float) * (size_t)(2 * n)), *nz = g ? malloc(sizeof(float) * (size_t)n) : NULL;
    if (!mom || (g && !nz)) {
        free(mom), free(nz);
        return nu_error(NU_ERR_NOMEM, "out of memory");
    }
    nu_vae_tiling t = nu_vae_tiling_default();
    nu_status s = nu_vae_encode(sd->vae, sd->pool, img, 1, H, W, p->vae_tiling ? &t : NULL, mom);
    if (s == NU_OK) {
        if (g) sd_noise_randn(g, nz, n);
        nu_vae_moments_split(mom, 1, C, h, w, nz, NULL, NULL, lat);
        const float sf = sd->fam.scale_factor;
        for (int64_t i = 0; i < n; i++) lat[i] = sf * lat[i];
    }
    free(mom), free(nz);
    return s;
}

/* ---------------------------------------------------------------- generate */

static uint64_t random_seed(void) {
    uint64_t s = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&s, sizeof s, 1, f) != 1) s = 0;
        fclose(f);
    }
    if (!s) s = (uint64_t)time(NULL) ^ (uint64_t)clock();
    return s & 0xffffffffu; /* A1111/sd.cpp seeds are 32-bit */
}

static nu_status check_params(const nu_sd *sd, const nu_sd_params *p) {
    if (!p->prompt) return nu_error(NU_ERR_INVALID_ARG, "no prompt (-p)");
    if (p->steps < 1 || p->steps > 10000) return nu_error(NU_ERR_INVALID_ARG, "--steps %d: use 1..10000", p->steps);
    if (!isfinite(p->cfg_scale) || p->cfg_scale < 0 || p->cfg_scale > 1000)
        return nu_error(NU_ERR_INVALID_ARG, "--cfg-scale %g out of range", (double)p->cfg_scale);
    if (p->batch_count < 1 || p->batch_count > 10000)
        return nu_error(NU_ERR_INVALID_ARG, "--batch-count %d: use 1..10000", p->batch_count);
    if ((unsigned)p->rng >= NU_SD_RNG_COUNT) return nu_error(NU_ERR_INVALID_ARG, "bad rng %d", (int)p->rng);
    if (p->mask && !p->init_image) return nu_error(NU_ERR_INVALID_ARG, "--mask needs an init image (-i)");
    if (p->init_image && !(p->strength > 0 && p->strength <= 1))
        return nu_error(NU_ERR_INVALID_ARG, "--strength %g: use a value in (0, 1]", p->strength);
    if (!isnan(p->eta) && !(p->eta >= 0 && p->eta <= 100)) return nu_error(NU_ERR_INVALID_ARG, "--eta %g out of range", p->eta);
    if (p->clip_skip > 0) {
        int n_run;
        if (nu_clip_layers_for_skip(&sd->clip_cfg, p->clip_skip, &n_run) != NU_OK)
            return sd_error_prefix(NU_ERR_INVALID_ARG, "--clip-skip %d: ", p->clip_skip);
    }
    const nu_image *ims[2] = {p->init_image, p->mask};
    for (int i = 0; i < 2; i++)
        if (ims[i] && (!ims[i]->pixels || ims[i]->width < 1 || ims[i]->height < 1 || ims[i]->channels < 1 ||
                       ims[i]->channels > 4))
            return nu_error(NU_ERR_INVALID_ARG, "%s image is empty or has %d channels", i ? "mask" : "init",
                            ims[i]->channels);
    return NU_OK;
}

nu_status nu_sd_generate(nu_sd *sd, const nu_sd_params *p, nu_sd_output *out) {
    memset(out, 0, sizeof *out);
    nu_status s = check_params(sd, p);
    if (s != NU_OK) return s;
    /* size: given, else the init image's (rounded down to the latent grid), else the default */
    const int f = nu_vae_downscale(sd->vae);
    int W = p->width, H = p->height;
    if (W <= 0) W = p->init_image ? p->init_image->width - p->init_image->width % f : sd->fam.default_size;
    if (H <= 0) H = p->init_image ? p->init_image->height - p->init_image->height % f : sd->fam.default_size;
    if (W < f || H < f || W % f || H % f || W > 16384 || H > 16384)
        return nu_error(NU_ERR_INVALID_ARG, "size %dx%d: width and height must be multiples of %d (up to 16384)", W, H, f);
    sd_choice ch;
    if ((s = sd_choose(sd, p, &ch)) != NU_OK) return s;

    const nu_unet_config *uc = nu_unet_get_config(sd->unet);
    const int C = sd->fam.latent_channels, h = H / f, w = W / f;
    const int64_t hw = (int64_t)h * w, n = (int64_t)C * hw, npix = (int64_t)H * W;
    const bool nine = uc->in_channels == 2 * C + 1;
    const bool do_cfg = p->cfg_scale > 1.0f;
    sd_cond cond = {0};
    sd_run r = {0};
    sd_sampler smp = {0};
    float *img = NULL, *maskp = NULL, *masked = NULL, *dec = NULL;
    float *x = NULL, *x0 = NULL, *noise = NULL, *mlat = NULL, *mkd = NULL, *scratch = NULL;
    int64_t seed0 = p->seed >= 0 ? p->seed : (int64_t)random_seed();
    char *clean_prompt = NULL;
    nu_lora_tag *tags = NULL;
    int n_tags = 0;
    nu_lora_set *lora = NULL;
    if (sd->cancel) { /* requested while no generation ran: this one */
        s = nu_error(NU_ERR_CANCELLED, "generation cancelled");
        goto done;
    }

    /* ---- LoRA: <lora:NAME:W> tags leave the prompt (A1111 extra networks) and join the --lora
     * files in this generation's set */
    if ((s = nu_lora_parse_prompt(p->prompt, &clean_prompt, &tags, &n_tags)) != NU_OK) goto done;
    if ((s = sd_lora_build(sd, tags, n_tags, &lora)) != NU_OK) goto done;
    sd->lora = lora; /* text encoder (sd_text.c) */
    if (lora) nu_unet_set_lora(sd->unet, lora);

    /* ---- text */
    if ((s = sd_text_encode(sd, clean_prompt, p->negative_prompt, p->clip_skip, p->prompt_weighting, do_cfg, &cond)) !=
        NU_OK)
        goto done;
    /* peak memory: the text encoder's mapped pages are not needed until the next call */
    nu_weights_release_pages(sd->clip_w);

    /* ---- images */
    if (p->init_image) {
        float *rgb = image_to_float(p->init_image, 3, W, H);
        img = malloc(sizeof(float) * (size_t)(3 * npix));
        if (!rgb || !img) {
            free(rgb);
            s = nu_error(NU_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int64_t i = 0; i < npix; i++) /* HWC -> CHW, 2x - 1 */
            for (int c = 0; c < 3; c++) img[c * npix + i] = 2.0f * rgb[i * 3 + c] - 1.0f;
        free(rgb);
    }
    if (p->mask || nine) {
        maskp = malloc(sizeof(float) * (size_t)npix);
        mlat = malloc(sizeof(float) * (size_t)hw);
        if (!maskp || !mlat) {
            s = nu_error(NU_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (p->mask) {
            float *l = image_to_float(p->mask, 1, W, H);
            if (!l) {
                s = nu_error(NU_ERR_NOMEM, "out of memory");
                goto done;
            }
            for (int64_t i = 0; i < npix; i++) maskp[i] = l[i] < 0.5f ? 0.0f : 1.0f;
            free(l);
        } else { /* a 9-channel UNet without a mask repaints everything */
            for (int64_t i = 0; i < npix; i++) maskp[i] = 1.0f;
        }
        /* F.interpolate(mask, size=(h, w)) nearest: source index floor(dst * in / out) */
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++) {
                int sy = (int)floor(y * ((double)H / h)), sx = (int)floor(xx * ((double)W / w));
                mlat[(int64_t)y * w + xx] = maskp[(int64_t)sy * W + sx];
            }
        /* masked_image = init_image * (mask < 0.5); zeros without an image */
        masked = calloc((size_t)(3 * npix), sizeof(float));
        if (!masked) {
            s = nu_error(NU_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (img)
            for (int c = 0; c < 3; c++)
                for (int64_t i = 0; i < npix; i++) masked[c * npix + i] = img[c * npix + i] * (maskp[i] < 0.5f ? 1.0f : 0.0f);
    }

    /* ---- UNet batch buffers and context [uncond; cond] */
    const int B = do_cfg ? 2 : 1;
    r.sd = sd;
    r.p = p;
    r.h = h, r.w = w, r.n = n;
    r.cond = &cond;
    r.cfg = p->cfg_scale;
    r.do_cfg = do_cfg;
    r.img2img = p->init_image != NULL;
    r.inpaint4 = p->mask && !nine;
    r.n_images = p->batch_count;
    r.xcat = malloc(sizeof(float) * (size_t)B * uc->in_channels * hw);
    r.tb = malloc(sizeof(float) * (size_t)B);
    r.ctx = malloc(sizeof(float) * (size_t)B * cond.S * cond.D);
    r.outb = malloc(sizeof(float) * (size_t)B * n);
    x = malloc(sizeof(float) * (size_t)n);
    x0 = malloc(sizeof(float) * (size_t)n);
    noise = malloc(sizeof(float) * (size_t)n);
    mkd = nine || p->mask ? malloc(sizeof(float) * (size_t)n) : NULL;
    scratch = malloc(sizeof(float) * (size_t)n);
    dec = malloc(sizeof(float) * (size_t)(3 * npix));
    if (!r.xcat || !r.tb || !r.ctx || !r.outb || !x || !x0 || !noise || ((nine || p->mask) && !mkd) || !scratch || !dec) {
        s = nu_error(NU_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t cbytes = sizeof(float) * (size_t)cond.S * cond.D;
    if (do_cfg) {
        memcpy(r.ctx, cond.uncond, cbytes);
        memcpy((char *)r.ctx + cbytes, cond.cond, cbytes);
    } else {
        memcpy(r.ctx, cond.cond, cbytes);
    }
    r.mask_lat = mlat;
    r.masked_lat = mkd;
    r.init_lat = x0;
    r.first_noise = noise;

    /* ---- output arrays */
    const int N = p->batch_count;
    out->images = calloc((size_t)N, sizeof(nu_image));
    out->seeds = calloc((size_t)N, sizeof(int64_t));
    out->parameters = calloc((size_t)N, sizeof(char *));
    if (p->keep_float) {
        out->image_f32 = calloc((size_t)N, sizeof(float *));
        out->latents = calloc((size_t)N, sizeof(float *));
    }
    if (!out->images || !out->seeds || !out->parameters || (p->keep_float && (!out->image_f32 || !out->latents))) {
        s = nu_error(NU_ERR_NOMEM, "out of memory");
        goto done;
    }
    out->width = W, out->height = H;

    for (int b = 0; b < N; b++) {
        int64_t seed = (int64_t)((uint64_t)seed0 + (uint64_t)b); /* no signed overflow at INT64_MAX */
        sd_noise g;
        sd_noise_seed(&g, p->rng, (uint64_t)seed);
        r.noise = &g;
        r.image = b;
        if ((s = sd_sampler_init(&smp, &r, &ch)) != NU_OK) goto done;
        /* ---- start latents, in diffusers' draw order */
        bool have_x0 = false;
        if (img && (r.inpaint4 || !smp.full_noise)) {
            if ((s = encode(sd, p, img, H, W, &g, x0)) != NU_OK) goto done;
            have_x0 = true;
        }
        sd_noise_randn(&g, noise, n);
        if ((s = sd_sampler_start(&smp, have_x0 ? x0 : NULL, noise, x, n)) != NU_OK) goto done;
        if (masked) {
            /* prepare_mask_latents: the masked image's latent sample (drawn also for 4-channel
             * UNets, which do not use it); without an init image (9-channel txt2img) the mode */
            if ((s = encode(sd, p, masked, H, W, img ? &g : NULL, mkd)) != NU_OK) goto done;
        }
        /* ---- denoise */
        if ((s = sd_sampler_run(&smp, &r, x)) != NU_OK) goto done;
        sd_sampler_free(&smp);
        /* ---- decode: vae.decode(latents / scaling_factor) */
        const float sf = sd->fam.scale_factor;
        for (int64_t i = 0; i < n; i++) scratch[i] = x[i] / sf;
        nu_vae_tiling t = nu_vae_tiling_default();
        /* peak memory: the UNet's mapped pages (1.6 GB of f16 at SD 1.5 size) need not stay
         * resident beside the decoder's activations; the next image faults them back in from
         * the page cache */
        nu_weights_release_pages(nu_unet_weights(sd->unet));
        if ((s = nu_vae_decode(sd->vae, sd->pool, scratch, 1, h, w, p->vae_tiling ? &t : NULL, dec)) != NU_OK) goto done;
        nu_image *im = &out->images[b];
        im->width = W, im->height = H, im->channels = 3;
        im->pixels = malloc((size_t)(3 * npix));
        float *fl = p->keep_float ? malloc(sizeof(float) * (size_t)(3 * npix)) : NULL;
        if (!im->pixels || (p->keep_float && !fl)) {
            free(fl);
            s = nu_error(NU_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int64_t i = 0; i < npix; i++)
            for (int c = 0; c < 3; c++) {
                float v = dec[c * npix + i] / 2 + 0.5f; /* (image / 2 + 0.5).clamp(0, 1) */
                v = v < 0 ? 0 : v > 1 ? 1 : v;
                if (fl) fl[i * 3 + c] = v;
                im->pixels[i * 3 + c] = (uint8_t)nearbyintf(v * 255.0f); /* (images * 255).round() */
            }
        out->seeds[b] = seed;
        out->parameters[b] = nu_sd_infotext(sd, p, seed, W, H);
        if (p->keep_float) {
            out->image_f32[b] = fl;
            out->latents[b] = malloc(sizeof(float) * (size_t)n);
            if (out->latents[b]) memcpy(out->latents[b], x, sizeof(float) * (size_t)n);
        }
        out->n = b + 1;
        if (!out->parameters[b] || (p->keep_float && !out->latents[b])) {
            s = nu_error(NU_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
done:
    sd->lora = NULL;
    if (lora) {
        nu_unet_set_lora(sd->unet, NULL);
        nu_lora_set_free(lora);
    }
    free(clean_prompt);
    free(tags);
    sd_sampler_free(&smp);
    sd_cond_free(&cond);
    free(r.xcat), free(r.tb), free(r.ctx), free(r.outb);
    free(img), free(maskp), free(masked), free(dec), free(x), free(x0), free(noise), free(mlat), free(mkd), free(scratch);
    if (s != NU_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nu_last_error());
        nu_sd_output_free(out);
        nu_error(s, "%s", msg);
    }
    sd->cancel = 0;
    nu_pool_reset_cancel(sd->pool); /* a request that came after the last network node */
    return s;
}
