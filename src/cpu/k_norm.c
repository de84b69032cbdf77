/* k_norm.c — CPU kernels of the norm op family (placeholder until written). */
#include "core/internal.h"

void nu_cpu_register_norm(nu_cpu_kernel *tab) { (void)tab; }
