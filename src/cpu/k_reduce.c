/* k_reduce.c — CPU kernels of the reduce op family (placeholder until written). */
#include "core/internal.h"

void nu_cpu_register_reduce(nu_cpu_kernel *tab) { (void)tab; }
