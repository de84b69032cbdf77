/*
 * nuance/models.h — model-level entry points for tools: benchmarks that build the real network
 * architectures with random weights (no model file needed).
 *
 *     nu_unet_bench_params p = nu_unet_bench_params_init();
 *     p.weight_type = NU_TYPE_F16; p.width = p.height = 512; p.pool = pool;
 *     nu_unet_bench_result r;
 *     if (nu_unet_bench_step(&p, &r) == NU_OK) printf("%.2f s per CFG step\n", r.seconds);
 *
 * Implemented in src/models/unet.c; used by `nuance bench unet` (tools/cli/bench.c), which runs
 * every configuration in a forked child to report its peak RSS.
 */
#ifndef NUANCE_MODELS_H
#define NUANCE_MODELS_H

#include "nuance/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nu_unet_bench_params {
    const char *arch;    /* "sd1.5" (320/640/1280/1280, 8 heads, context 768) or "sd2" (head dim 64,
                            context 1024, linear projections)                                      */
    nu_type weight_type; /* f32, f16 or q8_0 (q8_0: Linear weights; conv weights stay f16)          */
    int width, height;   /* image size in pixels (latent = size / 8)                                */
    int batch;           /* 2 = one classifier-free-guidance step (uncond + cond)                   */
    int context_len;     /* text tokens (77)                                                        */
    int runs;            /* timed steps after one warm-up step (>= 1)                               */
    nu_pool *pool;
} nu_unet_bench_params;
nu_unet_bench_params nu_unet_bench_params_init(void); /* sd1.5, f16, 512x512, batch 2, 77, 1 run */

typedef struct nu_unet_bench_result {
    double seconds;          /* median time of one step: UNet on the batch + guidance combine   */
    double first_seconds;    /* the warm-up step (builds the graph, first touch of the weights) */
    double setup_seconds;    /* making the random weights                                       */
    int64_t n_params;
    size_t weight_bytes;     /* bytes of all weights as stored                                  */
    size_t activation_bytes; /* the graph's activation buffer (liveness-based allocator)        */
    size_t liveness_bytes;   /* lower bound of that buffer: max bytes alive at any step         */
    double gflop;            /* GFLOP of one step's convolutions, matmuls and attention         */
} nu_unet_bench_result;

/* Makes the architecture's weights (uniform random, scaled 1/sqrt(fan_in)) in an anonymous
 * in-memory file that is mapped like a real checkpoint, then times CFG steps. */
nu_status nu_unet_bench_step(const nu_unet_bench_params *p, nu_unet_bench_result *r);

#ifdef __cplusplus
}
#endif
#endif
