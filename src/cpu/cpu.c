/*
 * cpu.c — the CPU backend: kernel table (filled by each family's nu_cpu_register_<family>),
 * CPU feature detection, the fast/reference switch and OpenBLAS thread control.
 * Tested by every kernel test (reference vs fast twins) and `nuance info`.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include <cblas.h>

#include "core/internal.h"

static nu_cpu_kernel kernels[NU_OP_COUNT];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static atomic_bool fast_enabled = true;

static void init_table(void) {
#define NU_REG(fam) nu_cpu_register_##fam(kernels);
    NU_FAMILIES(NU_REG)
#undef NU_REG
}

const nu_cpu_kernel *nu_cpu_kernel_get(int op) {
    NU_ASSERT(op >= 0 && op < NU_OP_COUNT);
    pthread_once(&once, init_table);
    return &kernels[op];
}

nu_cpu_features nu_cpu_detect(void) {
    nu_cpu_features f = {0};
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    f.avx = __builtin_cpu_supports("avx");
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.f16c = __builtin_cpu_supports("f16c");
    f.avx512f = __builtin_cpu_supports("avx512f");
#endif
    return f;
}

static bool have_avx2_fma(void) {
    static int cached = -1;
    if (cached < 0) {
        nu_cpu_features f = nu_cpu_detect();
        cached = f.avx2 && f.fma && f.f16c;
    }
    return cached;
}

bool nu_cpu_fast_enabled(void) { return atomic_load(&fast_enabled) && have_avx2_fma(); }
void nu_cpu_set_fast(bool on) { atomic_store(&fast_enabled, on); }

bool nu_cpu_use_fast(const nu_compute_params *p) { return !p->use_ref && nu_cpu_fast_enabled(); }

/* OpenBLAS entry points beyond CBLAS (declared in Debian's cblas.h for OpenBLAS). */
void nu_blas_init(void) { openblas_set_num_threads(1); }

const char *nu_blas_name(void) {
    static char buf[256];
    snprintf(buf, sizeof buf, "%s (core %s, %d threads max)", openblas_get_config(), openblas_get_corename(),
             openblas_get_num_threads());
    return buf;
}

const char *nu_version(void) { return NU_VERSION_STRING; }
