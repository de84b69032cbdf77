/*
 * inception.h — internal hooks of the FID InceptionV3 (src/models/inception.c) for tests and
 * benchmarks; the public API is in include/nuance/metrics.h. Tested by tests/test_inception.c.
 */
#ifndef NU_MODELS_INCEPTION_H
#define NU_MODELS_INCEPTION_H

#include "nuance/metrics.h"

/* Runs n preprocessed images x [n, 3, 299, 299] and returns the spatial means of the pytorch-fid
 * wrapper's block outputs: block0 [n, 64] (after the first max pool, 73x73), block1 [n, 192]
 * (after the second max pool, 35x35), block2 [n, 768] (after Mixed_6e, 17x17), plus pool3
 * [n, 2048] and logits [n, 1008] (each may be NULL). Builds a one-off graph (slow path). */
nu_status nu_inception_debug_blocks(nu_inception *m, nu_pool *pool, const float *x, int n, float *block0,
                                    float *block1, float *block2, float *pool3, float *logits);

/* Graph-level options, for tests comparing the optimised graph with the literal one:
 * merge: the 1x1 convolutions that read a block's input are one convolution (and the average-pool
 * branch's 1x1 conv runs before its pool, which commutes: both are linear and the
 * count_include_pad=False pool keeps constants). Default true. */
void nu_inception_set_merge(nu_inception *m, bool merge);

#endif
