/* k_attention.c — CPU kernels of the attention op family (placeholder until written). */
#include "core/internal.h"

void nu_cpu_register_attention(nu_cpu_kernel *tab) { (void)tab; }
