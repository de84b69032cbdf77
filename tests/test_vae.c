/*
 * test_vae.c — the KL VAE (src/models/vae.c, vae_names.c):
 *   - conformance with diffusers v0.27.2 AutoencoderKL on ../shared/reference/sd1_tiny and
 *     sd2_tiny: encode (moments, mean, logvar) and decode (z given) for every vae/<i> case, from
 *     the diffusers folder (F16 weights) and the LDM single file (F32, first_stage_model.*), and
 *     the two forms bit-identical (same f16-exact values; the conv/matmul kernels widen f16 to f32
 *     before any arithmetic, so the same sums run in the same order);
 *   - the LDM -> diffusers name table (the single file renames to exactly the folder's names);
 *   - tiling: tile placement, the merge (partition of unity, no seams), tiled == untiled when
 *     one tile covers the image, tiled vs untiled on larger images (random model, no shared data);
 *   - errors: missing files, files without a VAE, bad configs.
 *
 * Tolerances: moments and decoded 1e-4 abs. The references are f32 runs whose distance to f64
 * is up to 1.9e-6 (moments) and 9.6e-6 (decoded) (README); our f32 run differs from theirs by
 * summation order and by Winograd convolutions (F(4,3) transforms amplify rounding by ~10x over
 * direct summation), i.e. ~1e-5 on O(1) outputs through ~30 layers: 1e-4 leaves a margin of
 * several times while any structural mistake (a wrong pad side, group count or block order)
 * gives errors of O(0.1-1).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models/vae.h"
#include "nu_test.h"
#include "nuance/io.h"

static nu_pool *pool;

/* ---------------------------------------------------------------- conformance */

static float *load_ref(nu_st_file *f, const char *key, int64_t *n, int64_t *ne) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *t = NULL;
    if (nu_st_get_f32(f, ctx, key, &t) != NU_OK) {
        fprintf(stderr, "reference %s: %s\n", key, nu_last_error());
        exit(1);
    }
    *n = nu_nelements(t);
    if (ne) memcpy(ne, t->ne, sizeof(int64_t) * 4);
    float *v = malloc(sizeof(float) * (size_t)*n);
    memcpy(v, t->data, sizeof(float) * (size_t)*n);
    nu_ctx_free(ctx);
    return v;
}

typedef struct {
    float *moments, *decoded;
    int64_t nm, nd;
} case_out;

/* Runs every vae/<i> case of one model form; compares with the references; keeps outputs. */
static void run_cases(const char *model, const char *form, nu_vae *vae, nu_st_file *refs, int n_cases, case_out *outs) {
    const nu_vae_config *c = nu_vae_get_config(vae);
    for (int i = 0; i < n_cases; i++) {
        char key[96], label[160];
        int64_t ne[4], n, nz, ndec, nm;
        snprintf(key, sizeof key, "vae/%d/image", i);
        float *image = load_ref(refs, key, &n, ne);
        int B = (int)ne[0], H = (int)ne[2], W = (int)ne[3], f = nu_vae_downscale(vae);
        snprintf(key, sizeof key, "vae/%d/moments", i);
        float *want_m = load_ref(refs, key, &nm, NULL);
        snprintf(key, sizeof key, "vae/%d/mean", i);
        float *want_mean = load_ref(refs, key, &n, NULL);
        snprintf(key, sizeof key, "vae/%d/logvar", i);
        float *want_lv = load_ref(refs, key, &n, NULL);
        snprintf(key, sizeof key, "vae/%d/z", i);
        float *z = load_ref(refs, key, &nz, NULL);
        snprintf(key, sizeof key, "vae/%d/decoded", i);
        float *want_d = load_ref(refs, key, &ndec, NULL);

        float *m = malloc(sizeof(float) * (size_t)nm), *d = malloc(sizeof(float) * (size_t)ndec);
        float *mean = malloc(sizeof(float) * (size_t)n), *lv = malloc(sizeof(float) * (size_t)n);
        NU_CHECK(nm == (int64_t)B * 2 * c->latent_channels * (H / f) * (W / f));
        NU_CHECK_MSG(nu_vae_encode(vae, pool, image, B, H, W, NULL, m) == NU_OK, "encode: %s", nu_last_error());
        nu_vae_moments_split(m, B, c->latent_channels, H / f, W / f, NULL, mean, lv, NULL);
        snprintf(label, sizeof label, "%s %s vae/%d moments", model, form, i);
        nu_test_close(label, m, want_m, nm, 1e-4, 0);
        snprintf(label, sizeof label, "%s %s vae/%d mean", model, form, i);
        nu_test_close(label, mean, want_mean, n, 1e-4, 0);
        snprintf(label, sizeof label, "%s %s vae/%d logvar", model, form, i);
        nu_test_close(label, lv, want_lv, n, 1e-4, 0);
        NU_CHECK_MSG(nu_vae_decode(vae, pool, z, B, H / f, W / f, NULL, d) == NU_OK, "decode: %s", nu_last_error());
        snprintf(label, sizeof label, "%s %s vae/%d decoded", model, form, i);
        nu_test_close(label, d, want_d, ndec, 1e-4, 0);
        double em = 0, ed = 0;
        for (int64_t k = 0; k < nm; k++) em = fmax(em, fabs((double)m[k] - want_m[k]));
        for (int64_t k = 0; k < ndec; k++) ed = fmax(ed, fabs((double)d[k] - want_d[k]));
        printf("  %s %s vae/%d: max |moments - ref| %.2e, max |decoded - ref| %.2e\n", model, form, i, em, ed);
        outs[i] = (case_out){m, d, nm, ndec};
        free(image);
        free(want_m);
        free(want_mean);
        free(want_lv);
        free(z);
        free(want_d);
        free(mean);
        free(lv);
    }
}

static void test_conformance(const char *shared, const char *model) {
    char dir[1024], ldm[1024], refs_path[1024];
    snprintf(dir, sizeof dir, "%s/reference/%s/diffusers", shared, model);
    snprintf(ldm, sizeof ldm, "%s/reference/%s/ldm/model.safetensors", shared, model);
    snprintf(refs_path, sizeof refs_path, "%s/reference/%s/refs/refs.safetensors", shared, model);
    nu_st_file *refs;
    NU_CHECK(nu_st_open(refs_path, &refs) == NU_OK);
    int n_cases = nu_test_quick() ? 1 : 3;
    case_out a[3], b[3];

    nu_vae *vae;
    NU_CHECK_MSG(nu_vae_load(dir, NULL, &vae) == NU_OK, "%s", nu_last_error());
    const nu_vae_config *c = nu_vae_get_config(vae);
    /* vae/config.json: [16, 16, 32, 32], 2 layers, 4 latent channels, 16 groups, 0.18215 */
    NU_CHECK(c->n_blocks == 4 && c->block_out_channels[0] == 16 && c->block_out_channels[3] == 32);
    NU_CHECK(c->layers_per_block == 2 && c->latent_channels == 4 && c->norm_groups == 16);
    NU_CHECK(fabsf(c->scaling_factor - 0.18215f) < 1e-7f && c->shift_factor == 0.0f);
    NU_CHECK(c->quant_conv && c->post_quant_conv && c->mid_attention && nu_vae_downscale(vae) == 8);
    run_cases(model, "diffusers", vae, refs, n_cases, a);
    nu_vae_free(vae);

    /* the LDM file holds no group count (real SD files use 32; this tiny one 16, as its
     * config.json's norm_num_groups_NOTE says) */
    nu_vae_params p = nu_vae_params_init();
    p.norm_groups = 16;
    NU_CHECK_MSG(nu_vae_load(ldm, &p, &vae) == NU_OK, "%s", nu_last_error());
    run_cases(model, "ldm", vae, refs, n_cases, b);
    nu_vae_free(vae);

    for (int i = 0; i < n_cases; i++) {
        char label[128];
        snprintf(label, sizeof label, "%s vae/%d moments: diffusers folder == ldm file", model, i);
        nu_test_equal(label, b[i].moments, a[i].moments, a[i].nm);
        snprintf(label, sizeof label, "%s vae/%d decoded: diffusers folder == ldm file", model, i);
        nu_test_equal(label, b[i].decoded, a[i].decoded, a[i].nd);
        free(a[i].moments);
        free(a[i].decoded);
        free(b[i].moments);
        free(b[i].decoded);
    }
    nu_st_close(refs);
}

/* The LDM names of the single file map to exactly the diffusers folder's names and shapes
 * (attention projections: 1x1 conv [C, C, 1, 1] vs linear [C, C]). */
static void test_names(const char *shared) {
    char path[1024];
    nu_weights *a = nu_weights_new(), *b = nu_weights_new();
    snprintf(path, sizeof path, "%s/reference/sd1_tiny/diffusers/vae/diffusion_pytorch_model.safetensors", shared);
    NU_CHECK(nu_weights_add_file(a, path, NULL) == NU_OK);
    snprintf(path, sizeof path, "%s/reference/sd1_tiny/ldm/model.safetensors", shared);
    NU_CHECK(nu_weights_add_file(b, path, "first_stage_model.") == NU_OK);
    NU_CHECK(nu_vae_names_are_ldm(b) && !nu_vae_names_are_ldm(a));
    int n = nu_weights_count(a);
    NU_CHECK_MSG(nu_weights_count(b) == n, "%d LDM tensors vs %d diffusers", nu_weights_count(b), n);
    int renamed = nu_vae_rename_to_diffusers(b);
    NU_CHECK_MSG(renamed > 0 && renamed < n, "renamed %d of %d", renamed, n);
    NU_CHECK(nu_vae_rename_to_diffusers(a) == 0);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const char *name = nu_weights_name_at(a, i);
        nu_tensor *ta = nu_weights_get(a, name), *tb = nu_weights_get(b, name);
        bool ok = tb && nu_nelements(ta) == nu_nelements(tb) && ta->ne[0] == tb->ne[0];
        if (ok && ta->ndim != tb->ndim) ok = ta->ndim == 2 && tb->ndim == 4 && tb->ne[2] == 1 && tb->ne[3] == 1;
        if (!ok && bad++ < 5) fprintf(stderr, "  name map: %s missing or mis-shaped in the LDM form\n", name);
    }
    NU_CHECK_MSG(bad == 0, "%d diffusers names without an LDM counterpart", bad);
    nu_weights_free(a);
    nu_weights_free(b);
}

/* ---------------------------------------------------------------- tiling */

static void test_tile_starts(void) {
    int s[64];
    NU_CHECK(nu_vae_tile_starts(40, 64, 0.25f, s, 64) == 1 && s[0] == 0);
    NU_CHECK(nu_vae_tile_starts(64, 64, 0.25f, s, 64) == 1);
    /* 128 latent, tile 64, overlap >= 16: stride <= 48 -> 3 tiles at 0, 32, 64 */
    int n = nu_vae_tile_starts(128, 64, 0.25f, s, 64);
    NU_CHECK(n == 3 && s[0] == 0 && s[1] == 32 && s[2] == 64);
    /* every placement: first at 0, last at L - tile, neighbour overlap >= round(0.25 tile) */
    for (int L = 5; L <= 60; L++)
        for (int T = 4; T <= 16; T++) {
            n = nu_vae_tile_starts(L, T, 0.25f, s, 64);
            bool ok = n >= 1 && s[0] == 0;
            if (L > T) {
                ok = ok && s[n - 1] == L - T;
                for (int k = 1; k < n; k++) ok = ok && s[k] > s[k - 1] && s[k - 1] + T - s[k] >= (int)lroundf(0.25f * T);
            }
            NU_CHECK_MSG(ok, "tile starts L=%d T=%d", L, T);
        }
}

/* Tile functions with a known untiled answer. */
typedef struct {
    int c, b;
    int calls;
} tfn;

static nu_status tile_upsample(void *user, const float *in, int B, int h, int w, float *out) { /* nearest x b */
    tfn *t = user;
    t->calls++;
    int b = t->b;
    for (int64_t bc = 0; bc < (int64_t)B * t->c; bc++)
        for (int y = 0; y < h * b; y++)
            for (int x = 0; x < w * b; x++)
                out[(bc * h * b + y) * w * b + x] = in[(bc * h + y / b) * w + x / b];
    return NU_OK;
}

static nu_status tile_pool(void *user, const float *in, int B, int h, int w, float *out) { /* mean over a x a */
    tfn *t = user;
    t->calls++;
    int a = t->b, oh = h / a, ow = w / a;
    for (int64_t bc = 0; bc < (int64_t)B * t->c; bc++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                float s = 0;
                for (int i = 0; i < a; i++)
                    for (int j = 0; j < a; j++) s += in[(bc * h + y * a + i) * w + x * a + j];
                out[(bc * oh + y) * ow + x] = s / (float)(a * a);
            }
    return NU_OK;
}

static nu_status tile_const(void *user, const float *in, int B, int h, int w, float *out) { /* tile's own value */
    tfn *t = user;
    float v = (float)((t->calls++ * 7) % 5); /* neighbours differ by up to 4 */
    (void)in;
    for (int64_t i = 0; i < (int64_t)B * t->c * h * t->b * w * t->b; i++) out[i] = v;
    return NU_OK;
}

static void test_tile_merge(void) {
    const int B = 2, C = 3, gh = 13, gw = 22, b = 4, tile = 6;
    int64_t nin = (int64_t)B * C * gh * gw, nout = nin * b * b;
    float *in = malloc(sizeof(float) * (size_t)nin), *out = malloc(sizeof(float) * (size_t)nout);
    float *want = malloc(sizeof(float) * (size_t)nout);
    nu_test_fill_uniform(in, nin, 11, -1, 1);
    /* decode-like (cells grow by b): tiles of a local op merge back to the untiled result */
    tfn t = {C, b, 0};
    tile_upsample(&t, in, B, gh, gw, want);
    t.calls = 0;
    NU_CHECK(nu_vae_tiled_run(tile_upsample, &t, in, B, C, C, gh, gw, 1, b, tile, 0.25f, out) == NU_OK);
    int s[64];
    int ny = nu_vae_tile_starts(gh, tile, 0.25f, s, 64), nx = nu_vae_tile_starts(gw, tile, 0.25f, s, 64);
    NU_CHECK_MSG(t.calls == ny * nx && t.calls > 4, "%d tiles", t.calls);
    /* weights of overlapping tiles sum to 1 in float: a few ulp */
    nu_test_close("tiled merge of nearest upsample == untiled", out, want, nout, 1e-6, 1e-6);
    /* encode-like (cells shrink by a): average pooling */
    t.calls = 0;
    tile_pool(&t, want, B, gh * b, gw * b, out); /* pooled upsample = in */
    NU_CHECK(nu_vae_tiled_run(tile_pool, &t, want, B, C, C, gh, gw, b, 1, tile, 0.25f, out) == NU_OK);
    nu_test_close("tiled merge of average pooling == untiled", out, in, nin, 1e-6, 1e-6);

    /* no seams: tiles of different constants blend with steps of at most (max - min) / overlap
     * per pixel (linear ramps), where a hard cut would step by up to 4 */
    t.calls = 0;
    NU_CHECK(nu_vae_tiled_run(tile_const, &t, in, B, C, C, gh, gw, 1, b, tile, 0.25f, out) == NU_OK);
    int ov = (int)lroundf(0.25f * tile) * b; /* minimum overlap in output pixels */
    double max_step = 0;
    int OH = gh * b, OW = gw * b;
    for (int y = 0; y < OH; y++)
        for (int x = 0; x < OW; x++) {
            float v = out[y * OW + x];
            if (x + 1 < OW) max_step = fmax(max_step, fabs(out[y * OW + x + 1] - v));
            if (y + 1 < OH) max_step = fmax(max_step, fabs(out[(y + 1) * OW + x] - v));
        }
    NU_CHECK_MSG(max_step <= 4.0 / ov + 1e-5, "largest step between neighbouring pixels %g > %g", max_step, 4.0 / ov);
    free(in);
    free(out);
    free(want);
}

static nu_vae_config tiny_config(void) {
    nu_vae_config c = nu_vae_config_sd();
    c.n_blocks = 3; /* downscale 4 */
    c.block_out_channels[0] = 8;
    c.block_out_channels[1] = 16;
    c.block_out_channels[2] = 16;
    c.layers_per_block = 1;
    c.norm_groups = 4;
    return c;
}

/* A random tiny VAE (no shared data): tiling one tile == untiled bit for bit; several tiles
 * close to untiled. */
static void test_tiled_model(void) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/nu_test_vae_%d.safetensors", (int)getpid());
    nu_vae_config cfg = tiny_config();
    NU_CHECK_MSG(nu_vae_save_random(&cfg, NU_TYPE_F32, 42, path) == NU_OK, "%s", nu_last_error());
    nu_vae_params p = nu_vae_params_init();
    p.norm_groups = 4;
    nu_vae *vae;
    NU_CHECK_MSG(nu_vae_load(path, &p, &vae) == NU_OK, "%s", nu_last_error());
    unlink(path);
    const nu_vae_config *c = nu_vae_get_config(vae);
    NU_CHECK(c->n_blocks == 3 && c->layers_per_block == 1 && c->block_out_channels[0] == 8 && nu_vae_downscale(vae) == 4);

    const int B = 1, h = 12, w = 20, f = 4;
    int64_t nz = (int64_t)B * 4 * h * w, nimg = (int64_t)B * 3 * h * f * w * f;
    float *z = malloc(sizeof(float) * (size_t)nz), *img = malloc(sizeof(float) * (size_t)nimg);
    float *a = malloc(sizeof(float) * (size_t)nimg), *b = malloc(sizeof(float) * (size_t)nimg);
    float *ma = malloc(sizeof(float) * (size_t)nz * 2), *mb = malloc(sizeof(float) * (size_t)nz * 2);
    nu_test_fill_uniform(z, nz, 3, -2, 2);
    nu_test_fill_uniform(img, nimg, 4, -1, 1);

    NU_CHECK(nu_vae_decode(vae, pool, z, B, h, w, NULL, a) == NU_OK);
    nu_vae_tiling t = nu_vae_tiling_default(); /* 64 >= 20: one tile */
    NU_CHECK(nu_vae_decode(vae, pool, z, B, h, w, &t, b) == NU_OK);
    nu_test_equal("decode, one tile == untiled", b, a, nimg);
    NU_CHECK(nu_vae_encode(vae, pool, img, B, h * f, w * f, NULL, ma) == NU_OK);
    NU_CHECK(nu_vae_encode(vae, pool, img, B, h * f, w * f, &t, mb) == NU_OK);
    nu_test_equal("encode, one tile == untiled", mb, ma, nz * 2);
    nu_pool *pool1 = nu_pool_new(1); /* work splits depend on shapes only: 1 thread == 2 threads */
    NU_CHECK(nu_vae_decode(vae, pool1, z, B, h, w, NULL, b) == NU_OK);
    nu_test_equal("decode, 1 thread == 2 threads", b, a, nimg);
    nu_pool_free(pool1);

    /* Larger latents in 12-latent tiles (3 x 5 tiles). Tiled differs from untiled: GroupNorm
     * statistics, attention and zero padding see only the tile, and random weights make the model
     * far less local than a trained VAE (observed NMSE ~0.1). Checked: the linear blend beats
     * hard cuts between abutting tiles (overlap 0), and the result stays correlated with the
     * untiled one (misplaced tiles give NMSE ~2). */
    free(z);
    free(img);
    free(a);
    free(b);
    free(ma);
    free(mb);
    const int h2 = 24, w2 = 40;
    nz = (int64_t)B * 4 * h2 * w2;
    nimg = nz / 4 * 3 * f * f;
    z = malloc(sizeof(float) * (size_t)nz);
    img = malloc(sizeof(float) * (size_t)nimg);
    a = malloc(sizeof(float) * (size_t)nimg);
    b = malloc(sizeof(float) * (size_t)nimg);
    ma = malloc(sizeof(float) * (size_t)nz * 2);
    mb = malloc(sizeof(float) * (size_t)nz * 2);
    nu_test_fill_uniform(z, nz, 5, -2, 2);
    nu_test_fill_uniform(img, nimg, 6, -1, 1);
    for (int enc = 0; enc < 2; enc++) {
        int64_t n = enc ? nz * 2 : nimg;
        float *ref = enc ? ma : a, *got = enc ? mb : b;
        NU_CHECK(enc ? nu_vae_encode(vae, pool, img, B, h2 * f, w2 * f, NULL, ref) == NU_OK
                     : nu_vae_decode(vae, pool, z, B, h2, w2, NULL, ref) == NU_OK);
        double e[2];
        for (int k = 0; k < 2; k++) {
            nu_vae_tiling tt = {12, k ? 0.0f : 0.25f};
            NU_CHECK(enc ? nu_vae_encode(vae, pool, img, B, h2 * f, w2 * f, &tt, got) == NU_OK
                         : nu_vae_decode(vae, pool, z, B, h2, w2, &tt, got) == NU_OK);
            double se = 0, sr = 0;
            for (int64_t i = 0; i < n; i++) {
                se += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
                sr += (double)ref[i] * ref[i];
            }
            e[k] = se / sr;
        }
        printf("  %s, 12-latent tiles vs untiled: NMSE %.4f blended, %.4f hard cuts\n", enc ? "encode" : "decode", e[0], e[1]);
        NU_CHECK_MSG(e[0] < e[1] && e[0] < 0.5, "%s tiled NMSE %g (hard cuts %g)", enc ? "encode" : "decode", e[0], e[1]);
    }

    /* errors */
    NU_CHECK(nu_vae_encode(vae, pool, img, B, h * f - 1, w * f, NULL, ma) == NU_ERR_INVALID_ARG);
    t.tile = 2;
    NU_CHECK(nu_vae_decode(vae, pool, z, B, h, w, &t, b) == NU_ERR_INVALID_ARG);
    nu_vae_free(vae);

    /* 12 groups do not divide 8 channels: a clear error, not an abort */
    NU_CHECK(nu_vae_save_random(&cfg, NU_TYPE_F16, 1, path) == NU_OK);
    p.norm_groups = 12;
    NU_CHECK(nu_vae_load(path, &p, &vae) == NU_ERR_FORMAT && strstr(nu_last_error(), "norm_num_groups"));
    unlink(path);
    free(z);
    free(img);
    free(a);
    free(b);
    free(ma);
    free(mb);
}

static void test_errors(void) {
    nu_vae *vae = (nu_vae *)1;
    NU_CHECK(nu_vae_load("/nonexistent/vae.safetensors", NULL, &vae) == NU_ERR_IO && vae == NULL);
    NU_CHECK(strstr(nu_last_error(), "/nonexistent/vae.safetensors") != NULL);
    NU_CHECK(nu_vae_load(nu_test_fixture("nn_weights.safetensors"), NULL, &vae) == NU_ERR_FORMAT);
    NU_CHECK_MSG(strstr(nu_last_error(), "no VAE") != NULL, "message: %s", nu_last_error());
    NU_CHECK(nu_vae_load("/tmp", NULL, &vae) == NU_ERR_NOT_FOUND);
}

int main(void) {
    pool = nu_pool_new(2);
    test_tile_starts();
    test_tile_merge();
    test_tiled_model();
    test_errors();
    const char *shared = nu_test_require_shared("sd1_tiny / sd2_tiny VAE references");
    test_names(shared);
    test_conformance(shared, "sd1_tiny");
    if (!nu_test_quick()) test_conformance(shared, "sd2_tiny");
    nu_pool_free(pool);
    return nu_test_summary("test_vae");
}
