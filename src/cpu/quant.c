/* quant.c — block quantization (placeholder until written). */
#include "core/internal.h"

void nu_quant_row_to_f32(nu_type t, const void *src, float *dst, int64_t n) {
    (void)src; (void)dst; (void)n;
    nu_abort(__FILE__, __LINE__, "quantized type %s not implemented yet", nu_type_name(t));
}
void nu_quant_row_from_f32(nu_type t, const float *src, void *dst, int64_t n) {
    (void)src; (void)dst; (void)n;
    nu_abort(__FILE__, __LINE__, "quantized type %s not implemented yet", nu_type_name(t));
}
