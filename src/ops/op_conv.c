/* op_conv.c — builders, shape rules and backward rules of the conv op family (placeholder until written). */
#include "core/internal.h"

void nu_ops_register_conv(nu_op_def *tab) { (void)tab; }
