/* k_matmul.c — CPU kernels of the matmul op family (placeholder until written). */
#include "core/internal.h"

void nu_cpu_register_matmul(nu_cpu_kernel *tab) { (void)tab; }
