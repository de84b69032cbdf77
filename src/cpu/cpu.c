/*
 * cpu.c — the CPU backend: kernel table (filled by each family's nu_cpu_register_<family>),
 * CPU feature detection, the fast/reference switch and OpenBLAS thread control.
 * Tested by every kernel test (reference vs fast twins) and `nuance info`.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

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
    /* cpuid directly: clang 14's __builtin_cpu_supports does not know "f16c" */
    unsigned a, b, c, d;
    __cpuid(1, a, b, c, d);
    bool osxsave = (c >> 27) & 1;
    bool ymm_os = false;
    if (osxsave) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        ymm_os = (lo & 6) == 6; /* the OS saves XMM and YMM state */
    }
    f.fma = ((c >> 12) & 1) && ymm_os;
    f.avx = ((c >> 28) & 1) && ymm_os;
    f.f16c = ((c >> 29) & 1) && ymm_os;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        f.avx2 = ((b >> 5) & 1) && ymm_os;
        f.avx512f = ((b >> 16) & 1) && ymm_os;
    }
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
    snprintf(buf, sizeof buf, "%s (kernel %s; run single-threaded inside each pool thread)", openblas_get_config(),
             openblas_get_corename());
    return buf;
}

const char *nu_version(void) { return NU_VERSION_STRING; }
