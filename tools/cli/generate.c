/*
 * generate.c — `nuance generate`: Stable Diffusion 1.x/2.x txt2img, img2img and inpainting from a
 * single-file checkpoint or a diffusers folder, with stable-diffusion.cpp-compatible flags where
 * they exist. Progress bar (step time, ETA) on stderr; PNGs carry the A1111 "parameters" text.
 * Uses only the public headers (nuance.h). Exercised by tests/test_sd_pipeline.c through the same
 * library calls; the flag parsing is small and checked by hand (docs/pipeline.md lists examples).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nuance.h"

int nu_cli_generate(int argc, char **argv);
/* tools/cli/generate_cond.c: the built-in / trained class-conditional models (mnist, ...) */
int nu_cli_generate_cond(int argc, char **argv);
bool nu_cli_generate_is_cond_model(const char *model_arg);

static nu_sd *g_sd; /* for the SIGINT handler */

static void on_sigint(int sig) {
    (void)sig;
    if (g_sd) nu_sd_cancel(g_sd);
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C ends the process */
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: nuance generate -m MODEL -p PROMPT [options]\n"
            "  -m, --model PATH          single-file checkpoint (.safetensors/.gguf, SD 1.x/2.x) or diffusers folder\n"
            "      --vae PATH            separate VAE file or folder\n"
            "      --vocab PATH          CLIP vocabulary: bpe_simple_vocab_16e6.txt.gz, vocab.json or a tokenizer/\n"
            "                            folder (diffusers folders have their own; single files need one)\n"
            "      --model-config FILE   LDM config of a single file, as JSON (parameterization, betas, ...)\n"
            "      --type TYPE           convert weights at load: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1\n"
            "      --prediction eps|v    override the detected prediction type\n"
            "  -p, --prompt TEXT         prompt (A1111 syntax: (word), (word:1.3), [word], BREAK)\n"
            "  -n, --negative-prompt TEXT\n"
            "  -W, --width N, -H, --height N   image size, multiples of 8 (default: init image or model size)\n"
            "      --steps N             sampling steps (20)\n"
            "      --cfg-scale F         classifier-free guidance scale (7.0)\n"
            "      --sampling-method S   euler, euler_a, heun, dpm2, dpm++2s_a, dpm++2m, dpm++2m_sde, lms, ddim,\n"
            "                            ddpm, lcm (diffusers folders also pndm, unipc; default: the folder's\n"
            "                            scheduler, or euler_a)\n"
            "      --scheduler S         discrete, karras, exponential, sgm_uniform, simple (discrete)\n"
            "      --sampling-family F   auto, kdiffusion, diffusers (auto: diffusers for folders)\n"
            "      --timestep-spacing S  leading, linspace, trailing (diffusers schedulers)\n"
            "      --eta F               DDIM / ancestral noise scale\n"
            "  -s, --seed N              seed (42; negative: random); image i of a batch uses seed + i\n"
            "      --rng cpu|cuda        torch CPU generator (diffusers on CPU, default) or CUDA Philox (A1111 GPU)\n"
            "  -i, --init-img FILE       img2img / inpainting source image\n"
            "      --strength F          denoising strength for -i (0.75)\n"
            "      --mask FILE           inpainting mask (white = repaint)\n"
            "  -b, --batch-count N       number of images (1)\n"
            "  -o, --output PATH         output file (output.png); %%d in it is replaced by the batch index\n"
            "  -t, --threads N           CPU threads (default: all)\n"
            "      --clip-skip N         use the text encoder's N-th layer from the end (1 = last)\n"
            "      --vae-tiling          tiled VAE encode/decode for large images\n"
            "      --no-prompt-weighting take the prompt literally (no A1111 emphasis parsing)\n"
            "      --lora FILE[:W]       apply a LoRA (repeatable); --lora-model-dir DIR for <lora:NAME:W> tags\n"
            "  -v, --verbose             log loading details\n");
}

/* Output name of image i: PATH with "%d" / "%0Nd" replaced by i, or PATH-i.ext for a batch. */
static bool out_name(const char *pat, int i, int n, char *out, size_t len) {
    size_t o = 0;
    bool used = false;
    for (const char *c = pat; *c; c++) {
        if (*c == '%') {
            if (c[1] == '%') {
                if (o + 1 >= len) return false;
                out[o++] = '%';
                c++;
                continue;
            }
            const char *d = c + 1;
            int width = 0;
            bool zero = *d == '0';
            while (*d >= '0' && *d <= '9' && width < 100) width = width * 10 + (*d++ - '0');
            if (*d != 'd' || width > 20) return false;
            int k = snprintf(out + o, len - o, zero ? "%0*d" : "%*d", width, i);
            if (k < 0 || (size_t)k >= len - o) return false;
            o += (size_t)k;
            used = true;
            c = d;
            continue;
        }
        if (o + 1 >= len) return false;
        out[o++] = *c;
    }
    out[o] = 0;
    if (!used && n > 1) { /* out.png -> out-0.png */
        char *dot = strrchr(out, '.'), *slash = strrchr(out, '/');
        if (!dot || (slash && dot < slash)) dot = out + o;
        char ext[256];
        snprintf(ext, sizeof ext, "%s", dot);
        int k = snprintf(dot, len - (size_t)(dot - out), "-%d%s", i, ext);
        if (k < 0 || (size_t)k >= len - (size_t)(dot - out)) return false;
    }
    return true;
}

typedef struct progress {
    double t0;
    bool tty;
} progress;

static int on_progress(void *user, const nu_sd_step *s) {
    progress *pr = user;
    const int width = 24;
    int fill = s->n_steps ? s->step * width / s->n_steps : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    double avg = s->step ? s->elapsed_seconds / s->step : 0;
    double eta = avg * (s->n_steps - s->step) + avg * s->n_steps * (s->n_images - 1 - s->image);
    char img[32] = "";
    if (s->n_images > 1) snprintf(img, sizeof img, "  image %d/%d", s->image + 1, s->n_images);
    fprintf(stderr, "%s  [%s] %d/%d  %.2f s/step  ETA %.0f s%s%s", pr->tty ? "\r" : "", bar, s->step, s->n_steps,
            s->step_seconds, eta, img, pr->tty ? "   " : "\n");
    if (pr->tty && s->step == s->n_steps) fputc('\n', stderr);
    fflush(stderr);
    return 0;
}

static void on_log(nu_log_level level, const char *msg, void *user) {
    (void)user;
    fprintf(stderr, "nuance: %s%s\n", level >= NU_LOG_WARN ? "warning: " : "", msg);
}

static bool parse_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool flag_is(const char *a, const char *s1, const char *s2) { return !strcmp(a, s1) || (s2 && !strcmp(a, s2)); }

#define MAX_LORAS 32

int nu_cli_generate(int argc, char **argv) {
    /* -m mnist / fashion-mnist / a nuance training checkpoint: the class-conditional path */
    for (int i = 1; i + 1 < argc; i++)
        if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && nu_cli_generate_is_cond_model(argv[i + 1]))
            return nu_cli_generate_cond(argc, argv);
    nu_sd_load_params lp;
    nu_sd_load_params_init(&lp);
    nu_sd_params p;
    nu_sd_params_init(&p);
    const char *init_path = NULL, *mask_path = NULL, *out_pat = "output.png", *type = NULL;
    nu_sd_lora loras[MAX_LORAS];
    char *lora_paths[MAX_LORAS] = {0};
    int n_loras = 0, rc = 1;
    bool verbose = false;
    nu_image init = {0}, mask = {0};
    nu_sd *sd = NULL;
    nu_sd_output out = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            rc = 0;
            goto done;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long iv;
        double fv;
        /* flags without a value */
        if (!strcmp(a, "--vae-tiling")) {
            p.vae_tiling = true;
            continue;
        }
        if (!strcmp(a, "--no-prompt-weighting")) {
            p.prompt_weighting = false;
            continue;
        }
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            verbose = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "nuance generate: %s needs a value (see --help)\n", a);
            rc = 2;
            goto done;
        }
        i++;
#define IS(s1, s2) flag_is(a, s1, s2)
#define BAD()                                                                                                          \
    do {                                                                                                               \
        fprintf(stderr, "nuance generate: bad value for %s: '%s'\n", a, v);                                           \
        rc = 2;                                                                                                        \
        goto done;                                                                                                     \
    } while (0)
        if (IS("-m", "--model")) lp.model = v;
        else if (IS("--vae", NULL)) lp.vae = v;
        else if (IS("--vocab", NULL)) lp.vocab = v;
        else if (IS("--model-config", NULL)) lp.model_config = v;
        else if (IS("--type", NULL)) type = v;
        else if (IS("--prediction", NULL)) lp.prediction = v;
        else if (IS("-p", "--prompt")) p.prompt = v;
        else if (IS("-n", "--negative-prompt")) p.negative_prompt = v;
        else if (IS("-W", "--width")) {
            if (!parse_int(v, 8, 16384, &iv)) BAD();
            p.width = (int)iv;
        } else if (IS("-H", "--height")) {
            if (!parse_int(v, 8, 16384, &iv)) BAD();
            p.height = (int)iv;
        } else if (IS("--steps", NULL)) {
            if (!parse_int(v, 1, 10000, &iv)) BAD();
            p.steps = (int)iv;
        } else if (IS("--cfg-scale", NULL)) {
            if (!parse_float(v, &fv)) BAD();
            p.cfg_scale = (float)fv;
        } else if (IS("--sampling-method", NULL)) p.sampler = v;
        else if (IS("--scheduler", NULL)) p.schedule = v;
        else if (IS("--sampling-family", NULL)) {
            if (!strcmp(v, "auto")) p.sampling = NU_SD_SAMPLING_AUTO;
            else if (!strcmp(v, "kdiffusion") || !strcmp(v, "k-diffusion")) p.sampling = NU_SD_SAMPLING_KDIFFUSION;
            else if (!strcmp(v, "diffusers")) p.sampling = NU_SD_SAMPLING_DIFFUSERS;
            else BAD();
        } else if (IS("--timestep-spacing", NULL)) p.timestep_spacing = v;
        else if (IS("--eta", NULL)) {
            if (!parse_float(v, &fv)) BAD();
            p.eta = fv;
        } else if (IS("-s", "--seed")) {
            if (!parse_int(v, LLONG_MIN, LLONG_MAX, &iv)) BAD();
            p.seed = iv;
        } else if (IS("--rng", NULL)) {
            if (!strcmp(v, "cpu") || !strcmp(v, "std_default")) p.rng = NU_SD_RNG_CPU;
            else if (!strcmp(v, "cuda")) p.rng = NU_SD_RNG_CUDA;
            else BAD();
        } else if (IS("-i", "--init-img")) init_path = v;
        else if (IS("--strength", NULL)) {
            if (!parse_float(v, &fv)) BAD();
            p.strength = fv;
        } else if (IS("--mask", NULL)) mask_path = v;
        else if (IS("-b", "--batch-count")) {
            if (!parse_int(v, 1, 10000, &iv)) BAD();
            p.batch_count = (int)iv;
        } else if (IS("-o", "--output")) out_pat = v;
        else if (IS("-t", "--threads")) {
            if (!parse_int(v, -1, 1024, &iv)) BAD();
            lp.n_threads = iv < 0 ? 0 : (int)iv;
        } else if (IS("--clip-skip", NULL)) {
            if (!parse_int(v, -1, 64, &iv)) BAD();
            p.clip_skip = (int)iv;
        } else if (IS("--lora", NULL)) {
            if (n_loras == MAX_LORAS) {
                fprintf(stderr, "nuance generate: at most %d --lora\n", MAX_LORAS);
                goto done;
            }
            /* FILE[:WEIGHT]: the part after the last ':' is the weight when it is a number */
            char *path = strdup(v);
            if (!path) goto done;
            float w = 1.0f;
            char *colon = strrchr(path, ':');
            if (colon && parse_float(colon + 1, &fv)) {
                *colon = 0;
                w = (float)fv;
            }
            lora_paths[n_loras] = path;
            loras[n_loras].path = path;
            loras[n_loras++].weight = w;
        } else if (IS("--lora-model-dir", NULL)) lp.lora_model_dir = v;
        else {
            fprintf(stderr, "nuance generate: unknown option %s (see --help)\n", a);
            rc = 2;
            goto done;
        }
#undef IS
#undef BAD
    }
    if (!lp.model || !p.prompt) {
        fprintf(stderr, "nuance generate: %s\n", !lp.model ? "no model (-m FILE or FOLDER)" : "no prompt (-p TEXT)");
        usage(stderr);
        rc = 2;
        goto done;
    }
    if (type) {
        lp.weight_type = nu_type_from_name(type);
        if (lp.weight_type == NU_TYPE_COUNT) {
            fprintf(stderr, "nuance generate: --type %s: unknown type\n", type);
            rc = 2;
            goto done;
        }
    }
    char probe[4096];
    if (!out_name(out_pat, 0, p.batch_count, probe, sizeof probe)) {
        fprintf(stderr, "nuance generate: -o %s: only %%d (or %%0Nd) and %%%% may appear\n", out_pat);
        rc = 2;
        goto done;
    }
    lp.loras = loras;
    lp.n_loras = n_loras;
    nu_log_set_callback(on_log, NULL, verbose ? NU_LOG_INFO : NU_LOG_WARN);

    if (init_path && nu_image_load(init_path, &init) != NU_OK) {
        fprintf(stderr, "nuance generate: %s\n", nu_last_error());
        goto done;
    }
    if (mask_path && nu_image_load(mask_path, &mask) != NU_OK) {
        fprintf(stderr, "nuance generate: %s\n", nu_last_error());
        goto done;
    }
    if (init_path) p.init_image = &init;
    if (mask_path) p.mask = &mask;

    double t0 = now();
    if (nu_sd_load(&lp, &sd) != NU_OK) {
        fprintf(stderr, "nuance generate: %s\n", nu_last_error());
        goto done;
    }
    const nu_sd_info *in = nu_sd_get_info(sd);
    fprintf(stderr, "loaded %s (%s, %s%s, %s) in %.2f s\n", in->name, in->family, in->prediction,
            in->inpainting ? ", inpainting UNet" : "", in->diffusers_folder ? "diffusers folder" : "single file",
            now() - t0);
    progress pr = {.t0 = now(), .tty = isatty(2)};
    p.progress = on_progress;
    p.progress_user = &pr;
    g_sd = sd;
    signal(SIGINT, on_sigint);
    t0 = now();
    nu_status s = nu_sd_generate(sd, &p, &out);
    signal(SIGINT, SIG_DFL);
    g_sd = NULL;
    if (s != NU_OK) {
        fprintf(stderr, "%snuance generate: %s\n", pr.tty ? "\n" : "", nu_last_error());
        goto done;
    }
    double gen_s = now() - t0;
    rc = 0;
    for (int i = 0; i < out.n; i++) {
        char path[4096];
        out_name(out_pat, i, out.n, path, sizeof path);
        nu_image_text meta = {"parameters", out.parameters[i]};
        if (nu_image_save(path, &out.images[i], &meta, 1, 0) != NU_OK) {
            fprintf(stderr, "nuance generate: %s\n", nu_last_error());
            rc = 1;
            continue;
        }
        fprintf(stderr, "saved %s (%dx%d, seed %lld)\n", path, out.width, out.height, (long long)out.seeds[i]);
    }
    fprintf(stderr, "generated %d image%s in %.2f s\n", out.n, out.n == 1 ? "" : "s", gen_s);
done:
    nu_sd_output_free(&out);
    nu_sd_free(sd);
    nu_image_free(&init);
    nu_image_free(&mask);
    for (int i = 0; i < n_loras; i++) free(lora_paths[i]);
    return rc;
}
