/* k_spatial.c — CPU kernels of the spatial op family (placeholder until written). */
#include "core/internal.h"

void nu_cpu_register_spatial(nu_cpu_kernel *tab) { (void)tab; }
