/*
 * test_sd_pipeline.c — the Stable Diffusion pipeline (include/nuance.h, src/pipeline/) end to end
 * against ../shared/reference/sd{1,2}_tiny: EVERY mode x scheduler case of refs.json 'pipelines'
 * (txt2img, img2img, inpaint_legacy4 = diffusers' inpainting pipeline on the 4-channel UNet,
 * inpaint9 = the 9-channel UNet folder; euler, euler_a, ddim, dpm++2m karras, heun, lcm) run
 * through nu_sd_generate on the diffusers folder with the recorded prompt, negative prompt, seed,
 * steps, CFG, strength and images. Checked per case:
 *   - the 8-bit image: PSNR >= 40 dB against images/<mode>_<sched>.png (the bar);
 *   - the float image (NHWC in [0, 1]) within 1e-3 abs;
 *   - latents after every scheduler step (callback_on_step_end) and the final latents: per step,
 *     max |got - ref| <= 1e-3 * max |ref|; the guided model output given to scheduler.step:
 *     <= 1e-2 * max |ref| per step.
 * Tolerances. Fed the reference's own inputs (scheduler_sample_in), our guided UNet output matches
 * scheduler_model_output to <= 5.6e-5 (UNet 1e-6 x CFG gain 16) at every step of every case but
 * one timestep; the sampler then amplifies such rounding by up to sigma/alpha = 14.6 (x0 from eps
 * at t = 999), so free-running trajectories sit at 1e-5..1e-3 of |ref| (latents reach |x| = 15-60
 * in sigma scaling). The exception is the 9-channel UNet at t = 499 (inpaint9 euler and ddim):
 * there the tiny random model is ill-conditioned (a 1-ulp change of its input moves the guided
 * output by 8e-3, and nuance's AVX2 and scalar-reference kernels differ by 1.5e-2 from each other
 * on the reference input), so any float32 implementation, the reference's own float64 run
 * included, lands ~4e-3 (2.5e-4 of |ref|) away in the latents from there on. The
 * bounds above cover that with margin, while every mistake this test guards against (draw order,
 * timestep index, add_noise level, scaling, blend) moved latents by >= 0.25 of |ref| when made
 * during development (a wrong inpainting re-noise level: 4.2 on |ref| 16). The per-case table
 * also reports whether a case stays within the rounding floor 1e-4 + 1e-4 |ref| throughout.
 * Also: loading errors (missing, truncated, non-model files, no vocabulary: one clear line),
 * single file vs diffusers folder with the same k-diffusion sampler (1e-4: f16 and f32 files
 * hold equal values), v-prediction detection, A1111 emphasis identities and mean restoration,
 * chunking with uncond padding, batches (image i == a run with seed + i), cancellation, the A1111
 * infotext layout, CUDA Philox noise, LoRA wiring, 9-channel txt2img/img2img and k-diffusion
 * inpainting runs with resized inputs. NU_TEST_QUICK runs 6 of the 30 reference cases.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nu_test.h"
#include "nuance.h"
#include "nuance/io.h"
#include "pipeline/sd_internal.h"

static const char *ref_dir;

static char *refpath(const char *model, const char *rel) {
    static char buf[8][4096];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, 4096, "%s/%s/%s", ref_dir, model, rel);
    return b;
}

static nu_json *read_json(const char *path) {
    nu_file_map m;
    if (nu_file_map_open(path, &m) != NU_OK) return NULL;
    nu_json *j = nu_json_parse((const char *)m.data, m.size);
    nu_file_map_close(&m);
    return j;
}

/* ---------------------------------------------------------------- step capture */

typedef struct capture {
    int n_steps, cap;
    int64_t n;
    float *lat, *mo;
    int cancel_at; /* > 0: cancel at this step */
} capture;

static int on_step(void *user, const nu_sd_step *s) {
    capture *c = user;
    if (c->n_steps < c->cap && s->n == c->n) {
        memcpy(c->lat + (size_t)c->n_steps * c->n, s->latents, sizeof(float) * (size_t)c->n);
        memcpy(c->mo + (size_t)c->n_steps * c->n, s->model_output, sizeof(float) * (size_t)c->n);
    }
    c->n_steps++;
    return c->cancel_at > 0 && s->step >= c->cancel_at;
}

/* max |got-want| and whether every element is within atol + rtol*|want|. */
static double max_err(const float *got, const float *want, int64_t n, double atol, double rtol, bool *ok) {
    double m = 0;
    *ok = true;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= m)) m = d;
        if (!(d <= atol + rtol * fabs((double)want[i]))) *ok = false;
    }
    return m;
}

static double psnr_u8(const uint8_t *a, const uint8_t *b, int64_t n) {
    double se = 0;
    for (int64_t i = 0; i < n; i++) se += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    if (se == 0) return INFINITY;
    return 10 * log10(255.0 * 255.0 / (se / (double)n));
}

static nu_tensor *ref_get(nu_st_file *refs, nu_ctx *ctx, const char *key) {
    nu_tensor *t = NULL;
    if (nu_st_get_f32(refs, ctx, key, &t) != NU_OK) {
        NU_CHECK_MSG(false, "reference %s: %s", key, nu_last_error());
        return NULL;
    }
    return t;
}

/* ---------------------------------------------------------------- one reference case */

typedef struct loaded {
    nu_sd *folder, *inpaint;
    nu_image init, mask;
} loaded;

static const char *case_sampler(const char *sched, const char **schedule) {
    *schedule = NULL;
    if (!strcmp(sched, "dpmpp2m_karras")) {
        *schedule = "karras";
        return "dpm++2m";
    }
    return sched; /* euler, euler_a, ddim, heun, lcm: the same names */
}

static double worst_psnr = INFINITY, worst_lat = 0, worst_img = 0;
static int n_strict, n_cases;

static void run_case(const char *model, loaded *L, nu_st_file *refs, const char *key, const nu_json *pj) {
    const char *mode = key + 5; /* "pipe/<mode>/<sched>" */
    char modeb[64], sched[64];
    const char *slash = strchr(mode, '/');
    snprintf(modeb, sizeof modeb, "%.*s", (int)(slash - mode), mode);
    snprintf(sched, sizeof sched, "%s", slash + 1);
    const nu_json *call = nu_json_get(pj, "call");
    const char *gen = nu_json_string(call, "generator", "");
    const char *ms = strstr(gen, "manual_seed(");
    NU_CHECK_MSG(ms != NULL, "%s: generator %s", key, gen);
    if (!ms) return;

    nu_sd_params p;
    nu_sd_params_init(&p);
    p.prompt = nu_json_string(call, "prompt", "");
    p.negative_prompt = nu_json_string(call, "negative_prompt", "");
    p.cfg_scale = (float)nu_json_number(call, "guidance_scale", 7.5);
    p.steps = (int)nu_json_number(call, "num_inference_steps", 0);
    p.seed = atoll(ms + strlen("manual_seed("));
    p.width = (int)nu_json_number(call, "width", 0);
    p.height = (int)nu_json_number(call, "height", 0);
    p.sampler = case_sampler(sched, &p.schedule);
    p.keep_float = true;
    bool img = nu_json_get(call, "image") != NULL, msk = nu_json_get(call, "mask_image") != NULL;
    if (img) {
        p.init_image = &L->init;
        p.strength = nu_json_number(call, "strength", 1.0);
    }
    if (msk) p.mask = &L->mask;
    nu_sd *sd = !strcmp(modeb, "inpaint9") ? L->inpaint : L->folder;

    nu_ctx *ctx = nu_ctx_new(NULL);
    char k2[256];
    snprintf(k2, sizeof k2, "%s/latents_per_step", key);
    nu_tensor *lps = ref_get(refs, ctx, k2);
    snprintf(k2, sizeof k2, "%s/scheduler_model_output", key);
    nu_tensor *smo = ref_get(refs, ctx, k2);
    snprintf(k2, sizeof k2, "%s/final_latents", key);
    nu_tensor *fin = ref_get(refs, ctx, k2);
    snprintf(k2, sizeof k2, "%s/image_float", key);
    nu_tensor *imf = ref_get(refs, ctx, k2);
    if (!lps || !smo || !fin || !imf) {
        nu_ctx_free(ctx);
        return;
    }
    const int n_ref = (int)lps->ne[0];
    const int64_t n = nu_nelements(fin);
    capture cap = {.cap = n_ref, .n = n};
    cap.lat = calloc((size_t)n_ref * n, sizeof(float));
    cap.mo = calloc((size_t)n_ref * n, sizeof(float));
    p.progress = on_step;
    p.progress_user = &cap;

    nu_sd_output out;
    nu_status s = nu_sd_generate(sd, &p, &out);
    NU_CHECK_MSG(s == NU_OK, "%s %s: %s", model, key, nu_last_error());
    if (s == NU_OK) {
        NU_CHECK_MSG(cap.n_steps == n_ref, "%s %s: %d steps reported, reference has %d", model, key, cap.n_steps, n_ref);
        /* stated tolerances (see the file comment): per step, max |err| <= 1e-3 * max |ref| for the
         * latents, 1e-2 * max |ref| for the guided model output; the float image 1e-3 abs */
        bool okl = true, okm = true, strict = true;
        double el = 0, em = 0;
        for (int i = 0; i < n_ref && i < cap.n_steps; i++) {
            const float *rl = (const float *)lps->data + (size_t)i * n, *rm = (const float *)smo->data + (size_t)i * n;
            double ml = 0, mm = 0;
            for (int64_t j = 0; j < n; j++) ml = fmax(ml, fabs(rl[j])), mm = fmax(mm, fabs(rm[j]));
            bool o1, o2, s1, s2;
            double e1 = max_err(cap.lat + (size_t)i * n, rl, n, 1e-3 * ml, 0, &o1);
            double e2 = max_err(cap.mo + (size_t)i * n, rm, n, 1e-2 * mm, 0, &o2);
            max_err(cap.lat + (size_t)i * n, rl, n, 1e-4, 1e-4, &s1);
            max_err(cap.mo + (size_t)i * n, rm, n, 1e-4, 1e-4, &s2);
            okl &= o1, okm &= o2, strict &= s1 && s2;
            el = fmax(el, e1), em = fmax(em, e2);
        }
        double mf = 0;
        for (int64_t j = 0; j < n; j++) mf = fmax(mf, fabs(((const float *)fin->data)[j]));
        bool ok3, ok4, s3;
        double ef = max_err(out.latents[0], fin->data, n, 1e-3 * mf, 0, &ok3);
        max_err(out.latents[0], fin->data, n, 1e-4, 1e-4, &s3);
        double ei = max_err(out.image_f32[0], imf->data, nu_nelements(imf), 1e-3, 0, &ok4);
        strict &= s3;
        NU_CHECK_MSG(okl, "%s %s: latents per step max err %.3g", model, key, el);
        NU_CHECK_MSG(okm, "%s %s: scheduler model output max err %.3g", model, key, em);
        NU_CHECK_MSG(ok3, "%s %s: final latents max err %.3g", model, key, ef);
        NU_CHECK_MSG(ok4, "%s %s: image float max err %.3g", model, key, ei);
        if (strict) n_strict++;
        const double atol = 1e-4, rtol = 1e-4;
        if (getenv("NU_SD_DEBUG"))
            for (int i = 0; i < n_ref && i < cap.n_steps; i++) {
                bool okk;
                double mr = 0;
                for (int64_t j = 0; j < n; j++) mr = fmax(mr, fabs(((float *)lps->data)[i * n + j]));
                double e1 = max_err(cap.lat + i * n, (float *)lps->data + i * n, n, atol, rtol, &okk);
                double e2 = max_err(cap.mo + i * n, (float *)smo->data + i * n, n, atol, rtol, &okk);
                printf("    step %d: latents err %.3g (|ref| max %.3g), model output err %.3g\n", i, e1, mr, e2);
            }
        nu_image ref;
        char png[256];
        snprintf(png, sizeof png, "images/%s_%s.png", modeb, sched);
        double ps = -1;
        if (nu_image_load(refpath(model, png), &ref) == NU_OK) {
            NU_CHECK(ref.width == out.width && ref.height == out.height && ref.channels == 3);
            if (ref.width == out.width && ref.height == out.height && ref.channels == 3)
                ps = psnr_u8(out.images[0].pixels, ref.pixels, (int64_t)3 * ref.width * ref.height);
            nu_image_free(&ref);
        } else {
            NU_CHECK_MSG(false, "%s: %s", png, nu_last_error());
        }
        NU_CHECK_MSG(ps >= 40, "%s %s: PSNR %.2f dB < 40", model, key, ps);
        printf("  %-8s %-30s steps %2d  lat/step %.2e  model_out %.2e  final %.2e  image %.2e  PSNR %5.1f dB%s\n",
               model, key, cap.n_steps, el, em, ef, ei, isinf(ps) ? 99.0 : ps, strict ? "" : "  (beyond 1e-4+1e-4|ref|)");
        n_cases++;
        if (ps < worst_psnr) worst_psnr = ps;
        if (el > worst_lat) worst_lat = el;
        if (ef > worst_lat) worst_lat = ef;
        if (ei > worst_img) worst_img = ei;
        nu_sd_output_free(&out);
    }
    free(cap.lat), free(cap.mo);
    nu_ctx_free(ctx);
}

static bool quick_case(const char *model, const char *key) {
    static const char *const Q[] = {"sd1_tiny pipe/txt2img/euler_a", "sd1_tiny pipe/img2img/ddim",
                                    "sd1_tiny pipe/inpaint_legacy4/euler", "sd1_tiny pipe/inpaint9/dpmpp2m_karras",
                                    "sd2_tiny pipe/txt2img/dpmpp2m_karras", "sd2_tiny pipe/img2img/euler"};
    char k[256];
    snprintf(k, sizeof k, "%s %s", model, key);
    for (size_t i = 0; i < sizeof Q / sizeof *Q; i++)
        if (!strcmp(Q[i], k)) return true;
    return false;
}

static nu_sd *load_model(const char *path, const char *config, const char *vocab) {
    nu_sd_load_params lp;
    nu_sd_load_params_init(&lp);
    lp.model = path;
    lp.model_config = config;
    lp.vocab = vocab;
    lp.n_threads = 2;
    nu_sd *sd = NULL;
    nu_status s = nu_sd_load(&lp, &sd);
    NU_CHECK_MSG(s == NU_OK, "load %s: %s", path, nu_last_error());
    return sd;
}

static void test_reference(const char *model) {
    loaded L = {0};
    L.folder = load_model(refpath(model, "diffusers"), NULL, NULL);
    if (!strcmp(model, "sd1_tiny")) L.inpaint = load_model(refpath(model, "diffusers_inpaint"), NULL, NULL);
    NU_CHECK(nu_image_load(refpath(model, "images/init_image.png"), &L.init) == NU_OK);
    NU_CHECK(nu_image_load(refpath(model, "images/mask.png"), &L.mask) == NU_OK);
    nu_json *rj = read_json(refpath(model, "refs/refs.json"));
    nu_st_file *refs = NULL;
    NU_CHECK(rj && nu_st_open(refpath(model, "refs/refs.safetensors"), &refs) == NU_OK);
    const nu_json *pipes = nu_json_get(rj, "pipelines");
    if (L.folder && pipes && refs) {
        const nu_sd_info *in = nu_sd_get_info(L.folder);
        NU_CHECK(!strcmp(in->family, strstr(model, "sd2") ? "sd2" : "sd1") && in->diffusers_folder && !in->inpainting);
        NU_CHECK(!strcmp(in->prediction, strstr(model, "sd2") ? "v_prediction" : "epsilon"));
        NU_CHECK(in->default_width == 64 && in->default_height == 64);
        if (L.inpaint) NU_CHECK(nu_sd_get_info(L.inpaint)->inpainting && nu_sd_get_info(L.inpaint)->unet_in_channels == 9);
        int cases = 0;
        for (int i = 0; i < pipes->n; i++) {
            if (nu_test_quick() && !quick_case(model, pipes->keys[i])) continue;
            run_case(model, &L, refs, pipes->keys[i], &pipes->items[i]);
            cases++;
        }
        printf("%s: %d reference cases run\n", model, cases);
        NU_CHECK(cases >= (nu_test_quick() ? 2 : (strstr(model, "sd2") ? 6 : 24)));
    }
    if (refs) nu_st_close(refs);
    nu_json_free(rj);
    nu_image_free(&L.init);
    nu_image_free(&L.mask);
    nu_sd_free(L.folder);
    nu_sd_free(L.inpaint);
}

/* ---------------------------------------------------------------- other behaviour */

static bool run_simple(nu_sd *sd, nu_sd_params *p, nu_sd_output *o) {
    nu_status s = nu_sd_generate(sd, p, o);
    NU_CHECK_MSG(s == NU_OK, "%s", nu_last_error());
    return s == NU_OK;
}

static void test_errors(void) {
    nu_sd_load_params lp;
    nu_sd_load_params_init(&lp);
    nu_sd *sd = NULL;
    lp.model = "/nonexistent/model.safetensors";
    NU_CHECK(nu_sd_load(&lp, &sd) == NU_ERR_IO && !sd && strstr(nu_last_error(), "/nonexistent/model.safetensors"));
    /* not a model file */
    lp.model = refpath("sd1_tiny", "refs/refs.json");
    nu_status s = nu_sd_load(&lp, &sd);
    NU_CHECK_MSG(s != NU_OK && !sd && strstr(nu_last_error(), "refs.json") && !strchr(nu_last_error(), '\n'),
                 "non-model: %s", nu_last_error());
    printf("  not a model:  %s\n", nu_last_error());
    /* a VAE alone is not a checkpoint */
    lp.model = refpath("sd1_tiny", "diffusers/vae/diffusion_pytorch_model.safetensors");
    s = nu_sd_load(&lp, &sd);
    NU_CHECK_MSG(s != NU_OK && !sd && strstr(nu_last_error(), "UNet"), "vae only: %s", nu_last_error());
    printf("  VAE as model: %s\n", nu_last_error());
    /* truncated single file */
    char tmp[] = "/tmp/nu_sd_truncXXXXXX";
    int fd = mkstemp(tmp);
    NU_CHECK(fd >= 0);
    if (fd >= 0) {
        nu_file_map m;
        if (nu_file_map_open(refpath("sd1_tiny", "ldm/model.safetensors"), &m) == NU_OK) {
            NU_CHECK(write(fd, m.data, m.size / 2) == (ssize_t)(m.size / 2));
            nu_file_map_close(&m);
        }
        close(fd);
        lp.model = tmp;
        lp.model_config = refpath("sd1_tiny", "ldm/config.json");
        lp.vocab = refpath("sd1_tiny", "diffusers/tokenizer");
        s = nu_sd_load(&lp, &sd);
        NU_CHECK_MSG(s == NU_ERR_FORMAT && !sd && strstr(nu_last_error(), tmp), "truncated: %s %s", nu_status_name(s),
                     nu_last_error());
        printf("  truncated:    %s\n", nu_last_error());
        unlink(tmp);
    }
    /* single file without a vocabulary: says what to pass */
    nu_sd_load_params_init(&lp);
    lp.model = refpath("sd1_tiny", "ldm/model.safetensors");
    lp.model_config = refpath("sd1_tiny", "ldm/config.json");
    s = nu_sd_load(&lp, &sd);
    NU_CHECK_MSG(s == NU_ERR_NOT_FOUND && strstr(nu_last_error(), "--vocab"), "no vocab: %s", nu_last_error());
    printf("  no vocab:     %s\n", nu_last_error());
    /* SD1 UNet with the SD2 VAE/text: context width mismatch is caught by the text encoder check */
    nu_sd_load_params_init(&lp);
    lp.model = refpath("sd1_tiny", "diffusers");
    lp.weight_type = NU_TYPE_I32;
    NU_CHECK(nu_sd_load(&lp, &sd) == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "--type"));
}

static void test_generate_errors(nu_sd *sd) {
    nu_sd_params p;
    nu_sd_params_init(&p);
    p.prompt = "x";
    p.steps = 2;
    nu_sd_output o;
    p.width = 60;
    NU_CHECK(nu_sd_generate(sd, &p, &o) == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "multiples of 8") && o.n == 0);
    p.width = 64;
    p.sampler = "nonsense";
    NU_CHECK(nu_sd_generate(sd, &p, &o) == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "nonsense"));
    p.sampler = NULL;
    p.schedule = "bogus";
    NU_CHECK(nu_sd_generate(sd, &p, &o) == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "bogus"));
    p.schedule = NULL;
    nu_image m = {64, 64, 1, calloc(64 * 64, 1)};
    p.mask = &m;
    NU_CHECK(nu_sd_generate(sd, &p, &o) == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "--mask"));
    p.mask = NULL;
    p.init_image = &m;
    p.strength = 0.1; /* int(2 * 0.1) = 0 steps */
    nu_status st = nu_sd_generate(sd, &p, &o);
    NU_CHECK_MSG(st == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "strength"), "strength: %s %s", nu_status_name(st), nu_last_error());
    if (st == NU_OK) nu_sd_output_free(&o);
    free(m.pixels);
    p.init_image = NULL;
    p.clip_skip = 99;
    NU_CHECK(nu_sd_generate(sd, &p, &o) == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "clip-skip"));
}

/* The same weights as a single file and as a diffusers folder, sampled the same way, agree. */
static void test_single_file(void) {
    char vocab[4096]; /* refpath's buffers rotate */
    snprintf(vocab, sizeof vocab, "%s", refpath("sd1_tiny", "diffusers/tokenizer"));
    nu_sd *ldm = load_model(refpath("sd1_tiny", "ldm/model.safetensors"), refpath("sd1_tiny", "ldm/config.json"), vocab);
    nu_sd *dif = load_model(refpath("sd1_tiny", "diffusers"), NULL, NULL);
    nu_sd *ldm2 = load_model(refpath("sd2_tiny", "ldm/model.safetensors"), refpath("sd2_tiny", "ldm/config.json"),
                             refpath("sd2_tiny", "diffusers/tokenizer"));
    nu_sd *dif2 = load_model(refpath("sd2_tiny", "diffusers"), NULL, NULL);
    if (!ldm || !dif || !ldm2 || !dif2) goto done;
    NU_CHECK(!nu_sd_get_info(ldm)->diffusers_folder && !strcmp(nu_sd_get_info(ldm)->default_sampler, "euler_a"));
    NU_CHECK(!strcmp(nu_sd_get_info(ldm2)->prediction, "v_prediction") && !strcmp(nu_sd_get_info(ldm2)->family, "sd2"));
    const char *samplers[] = {"euler_a", "dpm++2m", "heun"};
    for (int k = 0; k < 2; k++) {
        nu_sd *a = k ? ldm2 : ldm, *b = k ? dif2 : dif;
        for (int i = 0; i < 3; i++) {
            nu_sd_params p;
            nu_sd_params_init(&p);
            p.prompt = "a (red:1.2) cube BREAK on a table";
            p.negative_prompt = "blurry";
            p.steps = 4;
            p.seed = 7;
            p.sampler = samplers[i];
            p.schedule = i == 1 ? "karras" : NULL;
            p.sampling = NU_SD_SAMPLING_KDIFFUSION;
            p.keep_float = true;
            nu_sd_output oa, ob;
            if (!run_simple(a, &p, &oa)) continue;
            if (!run_simple(b, &p, &ob)) {
                nu_sd_output_free(&oa);
                continue;
            }
            bool ok;
            /* f32 single file vs f16 folder with equal values: the f16 GEMM path dequantizes to the
             * same f32 values; 1e-4 covers any summation-order difference (see test_unet) */
            double e = max_err(oa.latents[0], ob.latents[0], 4 * 8 * 8, 1e-4, 1e-4, &ok);
            NU_CHECK_MSG(ok, "%s single file vs folder, k-diffusion %s: max err %.3g", k ? "sd2" : "sd1", samplers[i], e);
            printf("  %s single file vs folder (k-diffusion %s%s): final latents max diff %.2e\n", k ? "sd2" : "sd1",
                   samplers[i], i == 1 ? " karras" : "", e);
            nu_sd_output_free(&oa);
            nu_sd_output_free(&ob);
        }
    }
    /* GGUF with the same names: the LDM file rewritten as GGUF (f32 tensors; the unused I64
     * position_ids left out) gives bit-identical results */
    {
        char gg[] = "/tmp/nu_sd_ggufXXXXXX";
        int fd = mkstemp(gg);
        nu_st_file *st = NULL;
        if (fd >= 0 && nu_st_open(refpath("sd1_tiny", "ldm/model.safetensors"), &st) == NU_OK) {
            close(fd);
            nu_ctx *ctx = nu_ctx_new(NULL);
            nu_gguf_writer *gw = nu_gguf_writer_new();
            for (int i = 0; i < nu_st_count(st); i++) {
                const nu_st_info *in = nu_st_at(st, i);
                nu_tensor *t;
                if (in->type == NU_TYPE_I64 || nu_st_get(st, ctx, in->name, &t) != NU_OK) continue;
                nu_gguf_writer_add_tensor(gw, t);
            }
            NU_CHECK_MSG(nu_gguf_writer_write(gw, gg) == NU_OK, "%s", nu_last_error());
            nu_gguf_writer_free(gw);
            nu_ctx_free(ctx);
            nu_st_close(st);
            nu_sd *g = load_model(gg, refpath("sd1_tiny", "ldm/config.json"), vocab);
            nu_sd_params p;
            nu_sd_params_init(&p);
            p.prompt = "a cat";
            p.steps = 3;
            p.keep_float = true;
            nu_sd_output oa, ob;
            if (g && run_simple(g, &p, &oa)) {
                if (run_simple(ldm, &p, &ob)) {
                    nu_test_equal("gguf == safetensors single file", oa.latents[0], ob.latents[0], 256);
                    nu_sd_output_free(&ob);
                }
                nu_sd_output_free(&oa);
            }
            nu_sd_free(g);
            unlink(gg);
        }
    }
    /* --type: q8_0 / f32 conversion at load runs; report the distance to the stored-type result */
    {
        nu_sd_params p;
        nu_sd_params_init(&p);
        p.prompt = "a cat";
        p.steps = 3;
        p.keep_float = true;
        nu_sd_output base;
        if (run_simple(dif, &p, &base)) {
            const nu_type types[] = {NU_TYPE_F32, NU_TYPE_Q8_0};
            for (int i = 0; i < 2; i++) {
                nu_sd_load_params lp;
                nu_sd_load_params_init(&lp);
                lp.model = refpath("sd1_tiny", "diffusers");
                lp.weight_type = types[i];
                nu_sd *t = NULL;
                nu_sd_output o;
                NU_CHECK_MSG(nu_sd_load(&lp, &t) == NU_OK, "--type %s: %s", nu_type_name(types[i]), nu_last_error());
                if (t && run_simple(t, &p, &o)) {
                    double ps = psnr_u8(o.images[0].pixels, base.images[0].pixels, 64 * 64 * 3);
                    bool ok;
                    double e = max_err(o.latents[0], base.latents[0], 256, INFINITY, 0, &ok);
                    printf("  --type %s vs stored f16: final latents max diff %.2e, image PSNR %.1f dB\n",
                           nu_type_name(types[i]), e, isinf(ps) ? 99.0 : ps);
                    /* f32 computes from the same values: only summation-order rounding */
                    if (types[i] == NU_TYPE_F32) NU_CHECK_MSG(e < 1e-3, "--type f32 moved latents by %.3g", e);
                    nu_sd_output_free(&o);
                }
                nu_sd_free(t);
            }
            nu_sd_output_free(&base);
        }
    }
    /* auto family: the single file samples k-diffusion, the folder diffusers; both run */
    nu_sd_params p;
    nu_sd_params_init(&p);
    p.prompt = "a cat";
    p.steps = 3;
    nu_sd_output o;
    if (run_simple(ldm, &p, &o)) {
        NU_CHECK(strstr(o.parameters[0], "Sampler: Euler a,") != NULL);
        nu_sd_output_free(&o);
    }
    /* SD2 v-prediction detection (A1111's test: UNet on 0.5-valued input at t=999) when the config
     * does not say: a copy of the LDM config without "parameterization". The tiny random model is
     * not trained, so only check that the detection runs and answers; --prediction overrides. */
    nu_file_map m;
    char tmp[] = "/tmp/nu_sd_cfgXXXXXX";
    int fd = mkstemp(tmp);
    if (fd >= 0 && nu_file_map_open(refpath("sd2_tiny", "ldm/config.json"), &m) == NU_OK) {
        const char *t = (const char *)m.data, *k = strstr(t, "\"parameterization\": \"v\",");
        NU_CHECK(k != NULL);
        if (k) {
            size_t a1 = (size_t)(k - t), skip = strlen("\"parameterization\": \"v\",");
            NU_CHECK(write(fd, t, a1) == (ssize_t)a1 && write(fd, k + skip, m.size - a1 - skip) == (ssize_t)(m.size - a1 - skip));
        }
        nu_file_map_close(&m);
        close(fd);
        nu_sd_load_params lp;
        nu_sd_load_params_init(&lp);
        lp.model = refpath("sd2_tiny", "ldm/model.safetensors");
        lp.model_config = tmp;
        lp.vocab = refpath("sd2_tiny", "diffusers/tokenizer");
        nu_sd *v = NULL;
        NU_CHECK_MSG(nu_sd_load(&lp, &v) == NU_OK, "%s", nu_last_error());
        if (v) printf("  sd2 single file, no parameterization in the config: detected %s\n", nu_sd_get_info(v)->prediction);
        nu_sd_free(v);
        lp.prediction = "eps";
        NU_CHECK(nu_sd_load(&lp, &v) == NU_OK && !strcmp(nu_sd_get_info(v)->prediction, "epsilon"));
        nu_sd_free(v);
        lp.prediction = "x";
        NU_CHECK(nu_sd_load(&lp, &v) == NU_ERR_INVALID_ARG && strstr(nu_last_error(), "--prediction"));
        unlink(tmp);
    }
done:
    nu_sd_free(ldm), nu_sd_free(dif), nu_sd_free(ldm2), nu_sd_free(dif2);
}

static void test_behaviour(nu_sd *sd, nu_sd *inpaint) {
    nu_sd_params p;
    nu_sd_params_init(&p);
    p.prompt = "a photograph of an astronaut riding a horse";
    p.negative_prompt = "lowres";
    p.steps = 3;
    p.seed = 100;
    p.keep_float = true;
    nu_sd_output a, b, c;
    /* emphasis: (x:1.0) is x; (horse:1.3) changes the result */
    if (!run_simple(sd, &p, &a)) return;
    p.prompt = "a photograph of an astronaut riding a (horse:1.0)";
    if (run_simple(sd, &p, &b)) {
        bool ok;
        double e = max_err(a.latents[0], b.latents[0], 256, 0, 0, &ok);
        NU_CHECK_MSG(ok, "(horse:1.0) differs from horse by %.3g", e);
        nu_sd_output_free(&b);
    }
    p.prompt = "a photograph of an astronaut riding a (horse:1.3)";
    if (run_simple(sd, &p, &b)) {
        bool ok;
        double e = max_err(a.latents[0], b.latents[0], 256, 1e-3, 0, &ok);
        NU_CHECK_MSG(!ok, "(horse:1.3) changed nothing (%.3g)", e);
        nu_sd_output_free(&b);
    }
    /* A1111 weighting keeps each chunk's mean */
    {
        sd_cond c0, c1;
        if (sd_text_encode(sd, "a (horse:1.5) and [[a rider]]", "", 0, true, false, &c0) == NU_OK &&
            sd_text_encode(sd, "a horse and a rider", "", 0, false, false, &c1) == NU_OK) {
            double m0 = 0, m1 = 0;
            for (int i = 0; i < c0.S * c0.D; i++) m0 += c0.cond[i], m1 += c1.cond[i];
            m0 /= c0.S * c0.D, m1 /= c1.S * c1.D;
            NU_CHECK_MSG(fabs(m0 - m1) < 1e-6 * (1 + fabs(m1)), "weighted mean %.8g vs %.8g", m0, m1);
            sd_cond_free(&c0), sd_cond_free(&c1);
        } else {
            NU_CHECK_MSG(false, "%s", nu_last_error());
        }
        /* long prompt: 2 chunks; uncond padded to the same length */
        char longp[2048] = "";
        for (int i = 0; i < 60; i++) strcat(longp, "red cube, ");
        if (sd_text_encode(sd, longp, "x", 0, true, true, &c0) == NU_OK) {
            NU_CHECK(c0.S == 3 * 77 && c0.uncond != NULL);
            sd_cond_free(&c0);
        } else {
            NU_CHECK_MSG(false, "%s", nu_last_error());
        }
    }
    /* batch: image 1 of a batch == a single run with seed + 1 */
    p.prompt = "a photograph of an astronaut riding a horse";
    p.batch_count = 2;
    if (run_simple(sd, &p, &b)) {
        NU_CHECK(b.n == 2 && b.seeds[0] == 100 && b.seeds[1] == 101);
        nu_test_equal("batch image 0", b.latents[0], a.latents[0], 256);
        p.batch_count = 1;
        p.seed = 101;
        if (run_simple(sd, &p, &c)) {
            nu_test_equal("batch image 1 == seed+1", b.latents[1], c.latents[0], 256);
            NU_CHECK(!memcmp(b.images[1].pixels, c.images[0].pixels, 64 * 64 * 3));
            nu_sd_output_free(&c);
        }
        nu_sd_output_free(&b);
    }
    p.batch_count = 1;
    p.seed = 100;
    /* infotext layout (A1111) */
    p.sampler = "dpm++2m";
    p.schedule = "karras";
    p.cfg_scale = 7.5f;
    p.negative_prompt = "lowres, bad";
    char *it = nu_sd_infotext(sd, &p, 100, 64, 64);
    char want[512];
    snprintf(want, sizeof want,
             "a photograph of an astronaut riding a horse\nNegative prompt: lowres, bad\nSteps: 3, Sampler: DPM++ 2M, "
             "Schedule type: Karras, CFG scale: 7.5, Seed: 100, Size: 64x64, Model: diffusers, RNG: CPU, "
             "Version: nuance %s",
             nu_version());
    NU_CHECK_MSG(it && !strcmp(it, want), "infotext:\n%s\nwant:\n%s", it ? it : "(null)", want);
    free(it);
    p.negative_prompt = "";
    p.sampler = "euler_a";
    p.schedule = NULL;
    p.init_image = NULL;
    p.rng = NU_SD_RNG_CUDA;
    p.prompt = "a: b";
    it = nu_sd_infotext(sd, &p, 5, 64, 64);
    NU_CHECK_MSG(it && !strncmp(it, "a: b\nSteps: 3, Sampler: Euler a, CFG scale: 7.5, Seed: 5, Size: 64x64, Model: diffusers, "
                                    "Version: nuance ", 95), "infotext: %s", it ? it : "(null)");
    free(it);
    p.prompt = "a photograph of an astronaut riding a horse";
    p.sampler = NULL;
    /* CUDA (Philox) noise: a different stream, still a valid run */
    if (run_simple(sd, &p, &b)) {
        bool ok;
        max_err(a.latents[0], b.latents[0], 256, 1e-3, 0, &ok);
        NU_CHECK(!ok);
        nu_sd_output_free(&b);
    }
    p.rng = NU_SD_RNG_CPU;
    /* cancel from the progress callback */
    capture cap = {.cap = 0, .n = 256, .cancel_at = 2};
    p.progress = on_step;
    p.progress_user = &cap;
    NU_CHECK(nu_sd_generate(sd, &p, &b) == NU_ERR_CANCELLED && b.n == 0 && cap.n_steps == 2);
    p.progress = NULL;
    /* a cancel request before the call stops at the first network node, and is then cleared */
    nu_sd_cancel(sd);
    nu_status s = nu_sd_generate(sd, &p, &b);
    NU_CHECK_MSG(s == NU_ERR_CANCELLED, "cancel: %s", nu_status_name(s));
    if (run_simple(sd, &p, &b)) nu_sd_output_free(&b);
    nu_sd_output_free(&a);

    /* 9-channel model without an image (txt2img) and without a mask (img2img) */
    if (inpaint) {
        nu_sd_params q;
        nu_sd_params_init(&q);
        q.prompt = "a cat";
        q.steps = 2;
        if (run_simple(inpaint, &q, &b)) nu_sd_output_free(&b);
        nu_image init;
        if (nu_image_load(refpath("sd1_tiny", "images/init_image.png"), &init) == NU_OK) {
            q.init_image = &init;
            q.strength = 0.5;
            if (run_simple(inpaint, &q, &b)) nu_sd_output_free(&b);
            nu_image_free(&init);
        }
    }
    /* k-diffusion inpainting with the 4-channel UNet, on a resized init image (96x80 -> 64x64) */
    {
        nu_image init, mask;
        if (nu_image_load(refpath("sd1_tiny", "images/init_image.png"), &init) == NU_OK &&
            nu_image_load(refpath("sd1_tiny", "images/mask.png"), &mask) == NU_OK) {
            nu_sd_params q;
            nu_sd_params_init(&q);
            q.prompt = "a dog";
            q.steps = 4;
            q.sampling = NU_SD_SAMPLING_KDIFFUSION;
            q.sampler = "dpm++2m";
            q.init_image = &init;
            q.mask = &mask;
            q.strength = 0.8;
            q.keep_float = true;
            if (run_simple(sd, &q, &b)) {
                NU_CHECK(b.width == 64 && b.height == 64 && strstr(b.parameters[0], "Denoising strength: 0.8"));
                nu_sd_output_free(&b);
            }
            q.width = 48;
            q.height = 32; /* resampled init image and mask */
            if (run_simple(sd, &q, &b)) {
                NU_CHECK(b.width == 48 && b.height == 32 && b.images[0].width == 48);
                nu_sd_output_free(&b);
            }
            nu_image_free(&mask);
        }
        nu_image_free(&init);
    }
}

/* Writes a LoRA (kohya names) of rank 2 on one layer: `layer` like "lora_te_text_model_encoder_
 * layers_0_self_attn_q_proj", base weight [out, in]. */
static bool write_lora(const char *path, const char *layer, int out, int in) {
    nu_ctx *ctx = nu_ctx_new(NULL);
    nu_tensor *d = nu_new_tensor_2d(ctx, NU_TYPE_F32, 2, in), *u = nu_new_tensor_2d(ctx, NU_TYPE_F32, out, 2);
    nu_tensor *al = nu_new_tensor_1d(ctx, NU_TYPE_F32, 1);
    nu_test_fill_uniform(d->data, 2 * in, 1, -0.5f, 0.5f);
    nu_test_fill_uniform(u->data, 2 * out, 2, -0.5f, 0.5f);
    ((float *)al->data)[0] = 2.0f;
    nu_set_name(d, "%s.lora_down.weight", layer);
    nu_set_name(u, "%s.lora_up.weight", layer);
    nu_set_name(al, "%s.alpha", layer);
    nu_tensor *ts[3] = {d, u, al};
    bool ok = nu_st_save(path, ts, 3, NULL, NULL, 0) == NU_OK;
    nu_ctx_free(ctx);
    return ok;
}

/* --rng cuda: Philox 4x32-10 + Box-Muller as A1111's rng_philox.py. Expected values: torch.manual_seed(42);
 * torch.randn(5, device="cuda") = [0.1940, 2.1614, -0.1721, 0.8491, -1.9244] (the widely quoted
 * CUDA output), here at float32 precision as rng_philox.py prints them, and the second call's
 * counter offset. */
static void test_philox(void) {
    sd_noise g;
    sd_noise_seed(&g, NU_SD_RNG_CUDA, 42);
    float a[5], b[3];
    sd_noise_randn(&g, a, 5);
    sd_noise_randn(&g, b, 3);
    const float wa[5] = {0.194018871f, 2.16137385f, -0.172050953f, 0.849059999f, -1.92439926f};
    const float wb[3] = {0.139137492f, -0.108216159f, -0.717422187f};
    /* 2e-7: the last printed digit of a float32 (libm sin/log may differ from numpy's by 1 ulp) */
    nu_test_close("philox seed 42, call 1", a, wa, 5, 2e-7, 2e-7);
    nu_test_close("philox seed 42, call 2", b, wb, 3, 2e-7, 2e-7);
}

/* LoRA wiring: --lora files and <lora:NAME:W> tags, on text-encoder and UNet layers; a weight of 0
 * changes nothing, and the UNet's graph without LoRA comes back unchanged afterwards. */
static void test_lora(void) {
    char dir[] = "/tmp/nu_sd_loraXXXXXX";
    if (!mkdtemp(dir)) return;
    char te[4200], un[4200];
    snprintf(te, sizeof te, "%s/te.safetensors", dir);
    snprintf(un, sizeof un, "%s/un.safetensors", dir);
    NU_CHECK(write_lora(te, "lora_te_text_model_encoder_layers_0_self_attn_q_proj", 32, 32));
    NU_CHECK(write_lora(un, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 16, 16));
    nu_sd_load_params lp;
    nu_sd_load_params_init(&lp);
    lp.model = refpath("sd1_tiny", "diffusers");
    lp.lora_model_dir = dir;
    nu_sd *sd = NULL;
    NU_CHECK(nu_sd_load(&lp, &sd) == NU_OK);
    nu_sd_params p;
    nu_sd_params_init(&p);
    p.steps = 2;
    p.keep_float = true;
    nu_sd_output a, b;
    p.prompt = "a red cube";
    if (sd && run_simple(sd, &p, &a)) {
        p.prompt = "a red cube <lora:te:0>";
        if (run_simple(sd, &p, &b)) {
            nu_test_equal("lora weight 0", b.latents[0], a.latents[0], 256);
            NU_CHECK(strstr(b.parameters[0], "a red cube <lora:te:0>\n") == b.parameters[0]);
            nu_sd_output_free(&b);
        }
        p.prompt = "a red cube <lora:te:1>";
        if (run_simple(sd, &p, &b)) {
            bool ok;
            max_err(a.latents[0], b.latents[0], 256, 1e-4, 0, &ok);
            NU_CHECK_MSG(!ok, "a text-encoder LoRA changed nothing");
            nu_sd_output_free(&b);
        }
        p.prompt = "a red cube <lora:un:0>";
        if (run_simple(sd, &p, &b)) {
            nu_test_equal("unet lora weight 0", b.latents[0], a.latents[0], 256);
            nu_sd_output_free(&b);
        }
        p.prompt = "a red cube <lora:un:1>";
        if (run_simple(sd, &p, &b)) {
            bool ok;
            max_err(a.latents[0], b.latents[0], 256, 1e-4, 0, &ok);
            NU_CHECK_MSG(!ok, "a UNet LoRA changed nothing");
            nu_sd_output_free(&b);
        }
        p.prompt = "a red cube";
        if (run_simple(sd, &p, &b)) {
            nu_test_equal("no lora after a lora run", b.latents[0], a.latents[0], 256);
            nu_sd_output_free(&b);
        }
        p.prompt = "a red cube <lora:missing:1>";
        NU_CHECK(nu_sd_generate(sd, &p, &b) == NU_ERR_NOT_FOUND && strstr(nu_last_error(), "missing"));
        p.prompt = "a red cube <lora:te:1";
        NU_CHECK(nu_sd_generate(sd, &p, &b) == NU_ERR_INVALID_ARG);
        nu_sd_output_free(&a);
    }
    nu_sd_free(sd);
    /* --lora at load: applied to every generation; a bad file fails the load */
    nu_sd_lora l = {te, 1.0f};
    lp.loras = &l;
    lp.n_loras = 1;
    NU_CHECK_MSG(nu_sd_load(&lp, &sd) == NU_OK, "%s", nu_last_error());
    nu_sd_free(sd);
    l.path = "/nonexistent/x.safetensors";
    NU_CHECK(nu_sd_load(&lp, &sd) != NU_OK && strstr(nu_last_error(), "/nonexistent/x.safetensors"));
    unlink(te), unlink(un), rmdir(dir);
}

int main(void) {
    ref_dir = nu_test_require_shared("test_sd_pipeline");
    static char rd[4096];
    snprintf(rd, sizeof rd, "%s/reference", ref_dir);
    ref_dir = rd;
    test_reference("sd1_tiny");
    test_reference("sd2_tiny");
    printf("worst over the reference cases: PSNR %.1f dB (99 = identical), latents max err %.2e, image float max err "
           "%.2e; %d of %d cases also within 1e-4 + 1e-4|ref| at every step\n",
           isinf(worst_psnr) ? 99.0 : worst_psnr, worst_lat, worst_img, n_strict, n_cases);
    test_errors();
    nu_sd *sd = load_model(refpath("sd1_tiny", "diffusers"), NULL, NULL);
    nu_sd *inp = load_model(refpath("sd1_tiny", "diffusers_inpaint"), NULL, NULL);
    if (sd) {
        test_generate_errors(sd);
        test_behaviour(sd, inp);
    }
    nu_sd_free(sd);
    nu_sd_free(inp);
    test_lora();
    test_philox();
    if (!nu_test_quick()) test_single_file();
    return nu_test_summary("test_sd_pipeline");
}
