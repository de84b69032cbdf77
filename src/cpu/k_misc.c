/* k_misc.c — CPU kernels of the misc op family (placeholder until written). */
#include "core/internal.h"

void nu_cpu_register_misc(nu_cpu_kernel *tab) { (void)tab; }
