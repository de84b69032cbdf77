/*
 * nuance/rng.h — random numbers bit-for-bit identical to PyTorch's CPU generator.
 *
 * Tutorial
 * --------
 * One nu_rng is one torch CPU generator (the global one behind torch.manual_seed, or a
 * torch.Generator()). It is a plain struct: put it on the stack or inside another object.
 *
 *     nu_rng r;
 *     nu_rng_seed(&r, 42);                       // torch.manual_seed(42)
 *     float lat[1 * 4 * 64 * 64];
 *     nu_rng_randn_f32(&r, lat, 4 * 64 * 64);    // == torch.randn(1, 4, 64, 64)
 *     float u[3];
 *     nu_rng_rand_f32(&r, u, 3);                 // == the next torch.rand(3)
 *     int64_t t[8];
 *     nu_rng_randint_i64(&r, 0, 1000, t, 8);     // == the next torch.randint(0, 1000, (8,))
 *
 * `n` is the numel of the whole tensor torch would fill, and it matters: torch.randn takes a
 * scalar path for numel < 16 (double-precision Box-Muller, one value cached in the generator
 * for the next small call) and a vectorised path for numel >= 16 (16-element blocks, the last
 * block recomputed from fresh draws). Filling a (2, 4, 64, 64) tensor is one call with
 * n = 32768, not two calls of 16384. docs/rng.md lists exactly what is matched.
 *
 * For training checkpoints, nu_rng_state_save() writes the generator into NU_RNG_STATE_BYTES
 * bytes with the same layout as torch.get_rng_state() (a 5056-byte uint8 tensor on x86-64), and
 * nu_rng_state_restore() reads either that blob or torch's older 5048-byte legacy one, so a
 * stream continues exactly where it stopped, across nuance and PyTorch.
 *
 * Tested by tests/test_rng.c against ../shared/reference/rng (every case bit-exact) and by a
 * save/restore round trip.
 */
#ifndef NUANCE_RNG_H
#define NUANCE_RNG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nuance/tensor.h" /* nu_status */

#ifdef __cplusplus
extern "C" {
#endif

#define NU_RNG_MT_N 624                       /* Mersenne Twister state words                 */
#define NU_RNG_STATE_BYTES 5056               /* torch.get_rng_state().numel() (current)      */
#define NU_RNG_STATE_BYTES_LEGACY 5048        /* torch's older THGeneratorState blob          */
#define NU_RNG_DEFAULT_SEED 67280421310721ull /* seed of a fresh torch.Generator() (the global one is random) */

typedef struct nu_rng {
    uint32_t mt[NU_RNG_MT_N]; /* MT19937 state (torch: mt19937_data_pod::state_)                */
    uint32_t next;            /* index of the next word to temper (torch: next_)               */
    int32_t left;             /* torch's left_: the state is regenerated when it counts down to 0 */
    uint64_t seed;            /* seed as given, all 64 bits (torch.initial_seed())             */
    double normal_f64;        /* cached second Box-Muller value of randn's scalar path         */
    float normal_f32;         /* torch's float cache: never filled by randn, kept for the blob */
    bool has_normal_f64;
    bool has_normal_f32;
} nu_rng;

/* torch.manual_seed(seed) / torch.Generator().manual_seed(seed): MT19937 is initialised from the
 * low 32 bits (so 2**32 and 0 give the same stream); the full value is kept as initial seed.
 * Clears the cached normal values. */
void nu_rng_seed(nu_rng *r, uint64_t seed);
/* torch.initial_seed(): the 64-bit value last passed to nu_rng_seed. */
uint64_t nu_rng_initial_seed(const nu_rng *r);

/* Raw draws: one tempered MT19937 word (torch: generator->random()), and two words joined with
 * the first one high (torch: generator->random64()). */
uint32_t nu_rng_next_u32(nu_rng *r);
uint64_t nu_rng_next_u64(nu_rng *r);

/* torch.randn(numel = n) for float32 / float64 (mean 0, std 1), contiguous output. */
void nu_rng_randn_f32(nu_rng *r, float *out, int64_t n);
void nu_rng_randn_f64(nu_rng *r, double *out, int64_t n);
/* torch.rand(numel = n): [0, 1) with 24 (f32) or 53 (f64) random bits per value. */
void nu_rng_rand_f32(nu_rng *r, float *out, int64_t n);
void nu_rng_rand_f64(nu_rng *r, double *out, int64_t n);
/* torch.randint(low, high, (n,)) for int64: values in [low, high). NU_ERR_INVALID_ARG if
 * low >= high (nothing is drawn then). */
nu_status nu_rng_randint_i64(nu_rng *r, int64_t low, int64_t high, int64_t *out, int64_t n);

/* Writes the generator as torch.get_rng_state() would (little-endian, x86-64 layout). */
void nu_rng_state_save(const nu_rng *r, uint8_t out[NU_RNG_STATE_BYTES]);
/* Reads a blob of NU_RNG_STATE_BYTES (ours or torch.get_rng_state().numpy().tobytes()) or of
 * NU_RNG_STATE_BYTES_LEGACY. NU_ERR_FORMAT (r unchanged) for another size or an invalid state. */
nu_status nu_rng_state_restore(nu_rng *r, const void *blob, size_t size);

#ifdef __cplusplus
}
#endif
#endif
