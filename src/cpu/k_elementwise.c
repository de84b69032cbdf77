/* k_elementwise.c — CPU kernels of the elementwise op family (placeholder until written). */
#include "core/internal.h"

void nu_cpu_register_elementwise(nu_cpu_kernel *tab) { (void)tab; }
