/*
 * main.c — the `nuance` command: dispatches subcommands. Uses only the public headers.
 *   nuance info            version, CPU features in use, threads, BLAS
 *   nuance info IMAGE.png  the generation parameters (A1111 "parameters" text) stored in an image
 *   nuance generate ...    Stable Diffusion txt2img / img2img / inpainting (see generate.c)
 *   nuance bench [CASE..]  engine benchmarks (see bench.c)
 *   nuance eval METRIC ..  FID / KID / IS / precision-recall of image folders (see eval.c)
 *   nuance eval classify   class agreement / Fréchet distance with a trained classifier (classify.c)
 *   nuance train-classifier  train that classifier (classify.c)
 *   nuance train           train a class-conditional UNet / DiT (train.c)
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "nuance/io.h"
#include "nuance/tensor.h"

int nu_cli_bench(int argc, char **argv);
int nu_cli_generate(int argc, char **argv);
int nu_cli_eval(int argc, char **argv);
int nu_cli_eval_classify(int argc, char **argv);
int nu_cli_train_classifier(int argc, char **argv);
int nu_cli_train(int argc, char **argv);

/* The text chunks of images: "parameters" (A1111 / nuance generate) printed as stored. */
static int info_images(int argc, char **argv) {
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        nu_image_text *t = NULL;
        int n = 0;
        if (nu_image_read_texts(argv[i], &t, &n) != NU_OK) {
            fprintf(stderr, "nuance info: %s\n", nu_last_error());
            rc = 1;
            continue;
        }
        if (argc > 2) printf("%s:\n", argv[i]);
        bool any = false;
        for (int k = 0; k < n; k++)
            if (!strcmp(t[k].key, "parameters")) printf("%s\n", t[k].value), any = true;
        for (int k = 0; k < n; k++)
            if (strcmp(t[k].key, "parameters")) printf("%s: %s\n", t[k].key, t[k].value), any = true;
        if (!any) printf("(no generation parameters stored)\n");
        nu_image_texts_free(t, n);
    }
    return rc;
}

static int cmd_info(int argc, char **argv) {
    if (argc > 1) return info_images(argc, argv);
    nu_cpu_features f = nu_cpu_detect();
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("nuance %s\n", nu_version());
    printf("cpu features: avx=%d avx2=%d fma=%d f16c=%d avx512f=%d\n", f.avx, f.avx2, f.fma, f.f16c, f.avx512f);
    printf("kernels:      %s\n", nu_cpu_fast_enabled() ? "AVX2+FMA fast paths (scalar reference twins available)"
                                                      : "scalar reference kernels (no AVX2+FMA+F16C on this CPU)");
    printf("threads:      %ld (default: one per online CPU; -t N to change)\n", ncpu);
    printf("blas:         %s\n", nu_blas_name());
    return 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: nuance <command> [options]\n"
            "commands:\n"
            "  info [IMAGE...]   version, CPU features, threads and BLAS in use; with images: their\n"
            "                    generation parameters (PNG \"parameters\" text)\n"
            "  generate ...      Stable Diffusion 1.x/2.x txt2img, img2img, inpainting (--help)\n"
            "  bench [CASE...]   time the engine on this machine (--json for machine-readable rows)\n"
            "  eval fid|kid|is|pr|stats ...  FID, KID, Inception Score, precision/recall of image folders\n"
            "  eval classify ...  class agreement and Fréchet distance with a trained classifier\n"
            "  train-classifier ...  train the small CNN classifier used by eval classify\n"
            "  train ...         train a class-conditional pixel UNet or DiT (nuance train --help)\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(argv[1], "bench")) return nu_cli_bench(argc - 1, argv + 1);
    if (!strcmp(argv[1], "eval") && argc > 2 && !strcmp(argv[2], "classify"))
        return nu_cli_eval_classify(argc - 2, argv + 2);
    if (!strcmp(argv[1], "eval")) return nu_cli_eval(argc - 1, argv + 1);
    if (!strcmp(argv[1], "generate")) return nu_cli_generate(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train-classifier")) return nu_cli_train_classifier(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train")) return nu_cli_train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "nuance: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
