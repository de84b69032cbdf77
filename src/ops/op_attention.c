/* op_attention.c — builders, shape rules and backward rules of the attention op family (placeholder until written). */
#include "core/internal.h"

void nu_ops_register_attention(nu_op_def *tab) { (void)tab; }
