/*
 * sample_internal.h — helpers shared by the src/sample sources (limits, name matching, noise draws).
 * Not installed; tested through tests/test_schedules.c and tests/test_samplers.c.
 */
#ifndef NU_SAMPLE_INTERNAL_H
#define NU_SAMPLE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "nuance/sample.h"

#define NU_SAMPLE_MAX_STEPS 10000         /* sampling steps accepted by schedules and schedulers */
#define NU_SAMPLE_MAX_TRAIN_STEPS 100000  /* num_train_timesteps accepted                        */

/* Case-insensitive name comparison ignoring '-', '_', ' ', '.' and treating '+' as 'p'. */
bool nu_sample_name_eq(const char *a, const char *b);

/* One noise draw of n values into out (fn, else rng); error if noise is NULL or empty. */
nu_status nu_sample_draw_noise(const nu_noise *noise, float *out, int64_t n, double sigma, double sigma_next,
                               const char *who);

#endif
