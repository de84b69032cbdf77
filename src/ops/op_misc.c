/* op_misc.c — builders, shape rules and backward rules of the misc op family (placeholder until written). */
#include "core/internal.h"

void nu_ops_register_misc(nu_op_def *tab) { (void)tab; }
