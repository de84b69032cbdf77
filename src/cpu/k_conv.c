/* k_conv.c — CPU kernels of the conv op family (placeholder until written). */
#include "core/internal.h"

void nu_cpu_register_conv(nu_cpu_kernel *tab) { (void)tab; }
