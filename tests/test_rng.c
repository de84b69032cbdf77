/*
 * test_rng.c — nu_rng against PyTorch's CPU generator (../shared/reference/rng).
 *
 * Every case of cases.json (torch.manual_seed / torch.Generator + randn / rand f32 f64, randint
 * int64, and 10-step sequences that show how much state each call consumes) must be reproduced
 * bit-exactly; the count of passing cases is printed. Also checks: 64-bit seeds (low 32 bits
 * seed MT19937, the full value is kept), a few bytes of torch.get_rng_state() taken from torch
 * 1.13, state save/restore continuing the stream identically, and the error paths.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nu_test.h"
#include "nuance/io.h"
#include "nuance/rng.h"

typedef struct seq_slot {
    uint64_t seed;
    int next_step;
    nu_rng rng;
} seq_slot;

static int64_t shape_numel(const nu_json *shape) {
    int64_t n = 1;
    if (!shape || shape->kind != NU_JSON_ARRAY) return -1;
    for (int i = 0; i < shape->n; i++) n *= (int64_t)shape->items[i].num;
    return n;
}

/* Runs one op of a case key ("randn", "rand", "randint0_1000") into a malloc'ed buffer. */
static void *run_op(nu_rng *r, const char *op, const char *dtype, int64_t n, size_t *nbytes) {
    size_t esz = strcmp(dtype, "float32") == 0 ? 4 : 8;
    void *out = malloc((size_t)(n > 0 ? n : 1) * esz);
    *nbytes = (size_t)n * esz;
    if (!out) return NULL;
    if (strcmp(op, "randn") == 0 && esz == 4) nu_rng_randn_f32(r, out, n);
    else if (strcmp(op, "randn") == 0) nu_rng_randn_f64(r, out, n);
    else if (strcmp(op, "rand") == 0 && esz == 4) nu_rng_rand_f32(r, out, n);
    else if (strcmp(op, "rand") == 0) nu_rng_rand_f64(r, out, n);
    else if (strcmp(op, "randint0_1000") == 0 && strcmp(dtype, "int64") == 0) {
        NU_CHECK(nu_rng_randint_i64(r, 0, 1000, out, n) == NU_OK);
    } else {
        free(out);
        return NULL;
    }
    return out;
}

static void test_reference(const char *shared) {
    char path[4200];
    snprintf(path, sizeof path, "%s/reference/rng/cases.json", shared);
    nu_file_map jm;
    if (nu_file_map_open(path, &jm) != NU_OK) {
        NU_CHECK_MSG(0, "%s", nu_last_error());
        return;
    }
    nu_json *root = nu_json_parse((const char *)jm.data, jm.size);
    nu_file_map_close(&jm);
    NU_CHECK_MSG(root, "cases.json: %s", nu_last_error());
    if (!root) return;
    snprintf(path, sizeof path, "%s/reference/rng/rng.safetensors", shared);
    nu_st_file *st = NULL;
    if (nu_st_open(path, &st) != NU_OK) {
        NU_CHECK_MSG(0, "%s", nu_last_error());
        nu_json_free(root);
        return;
    }

    const nu_json *cases = nu_json_get(root, "cases");
    NU_CHECK(cases && cases->kind == NU_JSON_ARRAY && cases->n > 0);
    int n_cases = cases ? cases->n : 0, passed = 0;
    seq_slot seqs[32];
    int n_seqs = 0;
    int by_kind[3] = {0, 0, 0}; /* global, generator, sequence */

    for (int ci = 0; ci < n_cases; ci++) {
        const nu_json *c = nu_json_at(cases, ci);
        const char *key = nu_json_string(c, "key", "");
        const char *dtype = nu_json_string(c, "dtype", "");
        int64_t n = shape_numel(nu_json_get(c, "shape"));
        /* key: <kind>/<seed>/... ; the seed is parsed from the key (exact beyond 2^53) */
        char buf[256];
        snprintf(buf, sizeof buf, "%s", key);
        char *save = NULL;
        char *kind = strtok_r(buf, "/", &save);
        char *seed_s = strtok_r(NULL, "/", &save);
        if (!kind || !seed_s || n < 0) {
            NU_CHECK_MSG(0, "case %d: cannot parse key '%s'", ci, key);
            continue;
        }
        uint64_t seed = strtoull(seed_s, NULL, 10);
        nu_rng local, *r = &local;
        const char *op;
        if (strcmp(kind, "sequence") == 0) {
            const char *step_s = strtok_r(NULL, "/", &save);
            int step = step_s ? atoi(step_s) : -1;
            op = strtok_r(NULL, "/", &save);
            int s = 0;
            while (s < n_seqs && seqs[s].seed != seed) s++;
            if (s == n_seqs && n_seqs < 32) {
                seqs[n_seqs].seed = seed;
                seqs[n_seqs].next_step = 0;
                nu_rng_seed(&seqs[n_seqs].rng, seed);
                n_seqs++;
            }
            if (s >= n_seqs || seqs[s].next_step != step) {
                NU_CHECK_MSG(0, "%s: sequence steps out of order", key);
                continue;
            }
            seqs[s].next_step++;
            r = &seqs[s].rng;
            by_kind[2]++;
        } else {
            op = strtok_r(NULL, "/", &save);
            nu_rng_seed(r, seed);
            by_kind[strcmp(kind, "generator") == 0 ? 1 : 0]++;
        }
        const nu_st_info *info = nu_st_find(st, key);
        if (!info || !op) {
            NU_CHECK_MSG(0, "%s: missing from rng.safetensors", key);
            continue;
        }
        size_t nbytes = 0;
        void *got = run_op(r, op, dtype, n, &nbytes);
        if (!got) {
            NU_CHECK_MSG(0, "%s: unknown op '%s' / dtype '%s'", key, op, dtype);
            continue;
        }
        NU_CHECK_MSG(info->nbytes == nbytes, "%s: reference has %zu bytes, expected %zu", key, info->nbytes, nbytes);
        if (info->nbytes == nbytes) {
            void *want = malloc(nbytes ? nbytes : 1); /* aligned copy of the mapped bytes */
            memcpy(want, info->data, nbytes);
            bool ok;
            if (strcmp(dtype, "float32") == 0) {
                ok = nu_test_equal(key, got, want, n);
            } else {
                nu_test_checks++;
                ok = memcmp(got, want, nbytes) == 0;
                if (!ok) {
                    nu_test_failures++;
                    int64_t i = 0;
                    while (memcmp((char *)got + 8 * i, (char *)want + 8 * i, 8) == 0) i++;
                    if (strcmp(dtype, "float64") == 0)
                        fprintf(stderr, "FAIL %s: not bit-identical at index %lld: got %.17g want %.17g\n", key,
                                (long long)i, ((double *)got)[i], ((double *)want)[i]);
                    else
                        fprintf(stderr, "FAIL %s: differs at index %lld: got %lld want %lld\n", key, (long long)i,
                                (long long)((int64_t *)got)[i], (long long)((int64_t *)want)[i]);
                }
            }
            passed += ok;
            free(want);
        }
        free(got);
    }
    printf("rng reference: %d of %d cases bit-exact (global %d, generator %d, sequence %d; %d sequences)\n", passed,
           n_cases, by_kind[0], by_kind[1], by_kind[2], n_seqs);
    NU_CHECK(passed == n_cases);
    nu_st_close(st);
    nu_json_free(root);
}

/* torch seeds MT19937 with the low 32 bits; initial_seed keeps all 64. */
static void test_seed64(void) {
    nu_rng a, b;
    nu_rng_seed(&a, 0);
    nu_rng_seed(&b, UINT64_C(4294967296));
    NU_CHECK(nu_rng_initial_seed(&b) == UINT64_C(4294967296));
    float x[20], y[20];
    nu_rng_randn_f32(&a, x, 20);
    nu_rng_randn_f32(&b, y, 20);
    NU_CHECK(memcmp(x, y, sizeof x) == 0);
    /* torch.manual_seed(0); torch.rand(1) -> 0.49625658988952637 (0x3efe1558) */
    nu_rng_seed(&a, 0);
    float u;
    nu_rng_rand_f32(&a, &u, 1);
    uint32_t ub;
    memcpy(&ub, &u, 4);
    NU_CHECK_MSG(ub == 0x3efe1558u, "rand(1) after seed 0: got 0x%08x", ub);
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Bytes of torch.get_rng_state() after torch.manual_seed(5); torch.randn(3) (torch 1.13.1). */
static void test_torch_blob_layout(void) {
    nu_rng r;
    nu_rng_seed(&r, 5);
    float x[3];
    nu_rng_randn_f32(&r, x, 3);
    static uint8_t blob[NU_RNG_STATE_BYTES];
    nu_rng_state_save(&r, blob);
    NU_CHECK(le64(blob) == 5);                              /* the_initial_seed       */
    NU_CHECK(le64(blob + 8) == (617ull | (1ull << 32)));    /* left 617, seeded 1     */
    NU_CHECK(le64(blob + 16) == 8);                         /* next: 8 words consumed */
    NU_CHECK(le64(blob + 24) == 0xf348ee4bull);             /* state[0]               */
    NU_CHECK(le64(blob + 5024) == 0x3fe55c5bec8c072cull);   /* cached normal_y        */
    NU_CHECK(blob[5040] == 1 && blob[5052] == 0);           /* double valid, float not */
}

/* Saves mid-stream (with a cached scalar-path normal), restores into another generator, and
 * checks both continue identically through every kind of call. */
static void draw_mix(nu_rng *r, uint8_t *out, size_t *len) {
    size_t o = 0;
    float f[40];
    double d[40];
    int64_t k[8];
    nu_rng_randn_f32(r, f, 3);
    memcpy(out + o, f, 12), o += 12;
    nu_rng_randn_f64(r, d, 5);
    memcpy(out + o, d, 40), o += 40;
    nu_rng_randn_f32(r, f, 37);
    memcpy(out + o, f, 148), o += 148;
    nu_rng_rand_f32(r, f, 7);
    memcpy(out + o, f, 28), o += 28;
    nu_rng_rand_f64(r, d, 3);
    memcpy(out + o, d, 24), o += 24;
    nu_rng_randn_f64(r, d, 33);
    memcpy(out + o, d, 264), o += 264;
    NU_CHECK(nu_rng_randint_i64(r, -5, INT64_C(1) << 40, k, 8) == NU_OK);
    memcpy(out + o, k, 64), o += 64;
    nu_rng_randn_f32(r, f, 1);
    memcpy(out + o, f, 4), o += 4;
    *len = o;
}

static void test_save_restore(void) {
    nu_rng a, b;
    nu_rng_seed(&a, UINT64_C(1099511627781));
    float warm[5];
    nu_rng_randn_f32(&a, warm, 5); /* odd count: leaves one normal in the cache */
    for (int i = 0; i < 700; i++) (void)nu_rng_next_u32(&a); /* crosses a state regeneration */
    NU_CHECK(a.has_normal_f64);
    static uint8_t blob[NU_RNG_STATE_BYTES];
    nu_rng_state_save(&a, blob);
    memset(&b, 0xab, sizeof b);
    NU_CHECK(nu_rng_state_restore(&b, blob, sizeof blob) == NU_OK);
    NU_CHECK(nu_rng_initial_seed(&b) == UINT64_C(1099511627781));
    static uint8_t sa[1024], sb[1024];
    size_t la = 0, lb = 0;
    draw_mix(&a, sa, &la);
    draw_mix(&b, sb, &lb);
    NU_CHECK(la == lb && memcmp(sa, sb, la) == 0);
    static uint8_t blob2[NU_RNG_STATE_BYTES];
    nu_rng_state_save(&a, blob);
    nu_rng_state_save(&b, blob2);
    NU_CHECK(memcmp(blob, blob2, sizeof blob) == 0);

    /* legacy 5048-byte blob: same stream (no cached normal here) */
    nu_rng_seed(&a, 77);
    (void)nu_rng_next_u64(&a);
    nu_rng_state_save(&a, blob);
    NU_CHECK(nu_rng_state_restore(&b, blob, NU_RNG_STATE_BYTES_LEGACY) == NU_OK);
    NU_CHECK(nu_rng_next_u32(&a) == nu_rng_next_u32(&b));

    /* errors leave the generator untouched */
    nu_rng keep = b;
    NU_CHECK(nu_rng_state_restore(&b, blob, 100) == NU_ERR_FORMAT);
    blob[8] = 0, blob[9] = 0, blob[10] = 0, blob[11] = 0; /* left = 0: invalid */
    NU_CHECK(nu_rng_state_restore(&b, blob, sizeof blob) == NU_ERR_FORMAT);
    NU_CHECK(strstr(nu_last_error(), "rng state") != NULL);
    NU_CHECK(memcmp(&keep, &b, sizeof b) == 0);
}

static void test_errors(void) {
    nu_rng r;
    nu_rng_seed(&r, 1);
    int64_t k[2] = {0, 0};
    nu_rng keep = r;
    NU_CHECK(nu_rng_randint_i64(&r, 5, 5, k, 2) == NU_ERR_INVALID_ARG);
    NU_CHECK(strstr(nu_last_error(), "randint") != NULL);
    NU_CHECK(memcmp(&keep, &r, sizeof r) == 0);
    /* full-width range draws 64 bits and stays inside [low, high) */
    NU_CHECK(nu_rng_randint_i64(&r, INT64_MIN, INT64_MAX, k, 2) == NU_OK);
    NU_CHECK(k[0] != INT64_MAX && k[1] != INT64_MAX);
    nu_rng_randn_f32(&r, NULL, 0); /* n = 0: nothing drawn */
    NU_CHECK(r.next == 4 && r.left == NU_RNG_MT_N - 3); /* torch's left_/next_ after 4 words */
}

int main(void) {
    test_seed64();
    test_torch_blob_layout();
    test_save_restore();
    test_errors();
    if (!nu_test_shared_dir() && nu_test_failures) return nu_test_summary("test_rng");
    const char *shared = nu_test_require_shared("rng reference");
    test_reference(shared);
    return nu_test_summary("test_rng");
}
