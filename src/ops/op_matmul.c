/* op_matmul.c — builders, shape rules and backward rules of the matmul op family (placeholder until written). */
#include "core/internal.h"

void nu_ops_register_matmul(nu_op_def *tab) { (void)tab; }
