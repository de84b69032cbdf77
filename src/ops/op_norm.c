/* op_norm.c — builders, shape rules and backward rules of the norm op family (placeholder until written). */
#include "core/internal.h"

void nu_ops_register_norm(nu_op_def *tab) { (void)tab; }
