/*
 * nu_test.h — the small test harness every tests/test_*.c uses.
 *
 * Checks count failures instead of aborting, so one run reports every broken case. Comparisons
 * print the tensor name, max abs / relative error, where it occurs and the first values, as
 * DESIGN §4 asks. A test that needs ../shared/reference calls nu_test_require_shared(), which
 * exits 77 (CTest "skipped") with a one-line notice when it is absent.
 */
#ifndef NU_TEST_H
#define NU_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "nuance/tensor.h"

extern int nu_test_failures;
extern int nu_test_checks;

#define NU_CHECK(cond)                                                                         \
    do {                                                                                       \
        nu_test_checks++;                                                                      \
        if (!(cond)) {                                                                         \
            nu_test_failures++;                                                                \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                   \
        }                                                                                      \
    } while (0)

#define NU_CHECK_MSG(cond, ...)                                                                \
    do {                                                                                       \
        nu_test_checks++;                                                                      \
        if (!(cond)) {                                                                         \
            nu_test_failures++;                                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                              \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, "\n");                                                             \
        }                                                                                      \
    } while (0)

/* Elementwise |got-want| <= atol + rtol*|want| (NaN never passes unless both NaN). */
bool nu_test_close(const char *name, const float *got, const float *want, int64_t n, double atol, double rtol);
/* Normalised MSE: sum (got-want)^2 / sum want^2 <= tol (GEMM-like ops); NU_TEST_VERBOSE=1 prints
 * every measured value. */
bool nu_test_nmse(const char *name, const float *got, const float *want, int64_t n, double tol);
/* Bit-exact equality of two f32 arrays. */
bool nu_test_equal(const char *name, const float *got, const float *want, int64_t n);

/* ../shared (sibling of the source tree) or $NU_SHARED_DIR; NULL if absent. */
const char *nu_test_shared_dir(void);
/* Exits 77 with a one-line notice if ../shared/reference is absent; returns its path otherwise. */
const char *nu_test_require_shared(const char *what);
/* Path of a committed fixture: <source>/tests/fixtures/<name> (static buffer). */
const char *nu_test_fixture(const char *name);
/* Whole file into a malloc'd buffer (exactly its size, so ASan sees any over-read); NULL if it
 * cannot be read. */
uint8_t *nu_test_read_file(const char *path, size_t *size);
/* NU_TEST_QUICK=1 (sanitizer runs): use smaller sizes. */
bool nu_test_quick(void);
/* Deterministic uniform values in [lo, hi) for test inputs. */
void nu_test_fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi);

/* Prints "<test>: N passed, N failed" and returns the exit code. */
int nu_test_summary(const char *test_name);

#endif

/* Gradient check. `build` makes the op under test from `inputs` (tensors with data, allocated in
 * the caller's ctx; those to differentiate are flagged nu_set_param) and returns its output y.
 * The harness forms loss = sum(y * r) with a fixed random r, gets analytic gradients through
 * nu_graph_backward, and compares each PARAM's gradient against central differences
 * (step `eps`, up to `max_elems` elements per input, evenly spread), within
 * |num - ana| <= tol * (1 + |num|). Reports failures with names; returns true if all pass. */
typedef nu_tensor *(*nu_test_build_fn)(nu_ctx *ctx, nu_tensor **inputs, void *user);
bool nu_test_gradcheck(const char *name, nu_test_build_fn build, nu_tensor **inputs, int n_inputs, void *user,
                       float eps, double tol, int max_elems);
/* Runs a graph whose output is y and copies y to out (f32); n threads; use_ref selects twins. */
void nu_test_eval(nu_ctx *ctx, nu_tensor *y, float *out, int n_threads, bool use_ref);
