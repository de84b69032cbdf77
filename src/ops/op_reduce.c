/* op_reduce.c — builders, shape rules and backward rules of the reduce op family (placeholder until written). */
#include "core/internal.h"

void nu_ops_register_reduce(nu_op_def *tab) { (void)tab; }
