/* op_spatial.c — builders, shape rules and backward rules of the spatial op family (placeholder until written). */
#include "core/internal.h"

void nu_ops_register_spatial(nu_op_def *tab) { (void)tab; }
