/*
 * test_npz.c — .npz reader and writer (src/io/npz.c).
 *
 * numpy-written archives (tests/fixtures/npz/ from scripts/make_npz_fixture.py): pytorch-fid's
 * mu/sigma layout stored and deflated, every supported dtype, a 0-d scalar, an empty array, a
 * big-endian array, a Fortran-order array, and a pickled object array (refused). Round trips of
 * the writer (every dtype, scalar, empty, 6-d). Hand-built archives (a small ZIP builder below)
 * with malformed .npy headers, size mismatches, overflowing shapes, unsupported dtypes and ZIP
 * methods, encryption flags, duplicate keys, bad CRCs and impossible deflate ratios; then
 * truncation at every length and byte flips at every position of real archives, in exactly
 * sized heap copies: each must fail cleanly or succeed, never crash (ASan in test-asan).
 * All comparisons are exact: the values are small integers / dyadic fractions.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "nu_test.h"
#include "nuance/io.h"
#include "nuance/metrics.h"

static double *as_f64(const nu_npy_array *a) {
    size_t n = 1;
    for (int k = 0; k < a->ndim; k++) n *= (size_t)a->ne[k];
    double *v = malloc(sizeof(double) * (n ? n : 1));
    nu_npy_to_f64(a, v);
    return v;
}

static const nu_npy_array *get(nu_npz *z, const char *key) {
    const nu_npy_array *a = NULL;
    nu_status st = nu_npz_get(z, key, &a);
    NU_CHECK_MSG(st == NU_OK, "get %s: %s", key, nu_last_error());
    return st == NU_OK ? a : NULL;
}

/* ---------------------------------------------------------------- numpy-written files */

static void check_stats_file(const char *name) {
    nu_npz *z;
    nu_status st = nu_npz_open(nu_test_fixture(name), &z);
    NU_CHECK_MSG(st == NU_OK, "%s: %s", name, nu_last_error());
    if (st != NU_OK) return;
    NU_CHECK(nu_npz_count(z) == 2);
    const nu_npy_array *mu = get(z, "mu"), *sigma = get(z, "sigma");
    if (mu && sigma) {
        NU_CHECK(mu->type == NU_TYPE_F64 && mu->ndim == 1 && mu->ne[0] == 8);
        NU_CHECK(sigma->type == NU_TYPE_F64 && sigma->ndim == 2 && sigma->ne[0] == 8 && sigma->ne[1] == 8);
        const double *m = mu->data, *s = sigma->data;
        int bad = 0;
        for (int i = 0; i < 8; i++) {
            bad += m[i] != 0.5 * i - 1.0;
            for (int j = 0; j < 8; j++) bad += s[i * 8 + j] != 1.0 / (1.0 + abs(i - j)) + (i == j);
        }
        NU_CHECK_MSG(bad == 0, "%s: %d values differ", name, bad);
    }
    nu_npz_close(z);
    /* the same through the FID stats loader */
    nu_fid_stats fs;
    NU_CHECK(nu_fid_stats_load(nu_test_fixture(name), &fs) == NU_OK && fs.dim == 8 && fs.mu[3] == 0.5 &&
             fs.sigma[9] == 2.0);
    nu_fid_stats_free(&fs);
}

static void test_numpy_files(void) {
    check_stats_file("npz/stats_stored.npz");
    check_stats_file("npz/stats_compressed.npz");

    nu_npz *z;
    if (nu_npz_open(nu_test_fixture("npz/dtypes.npz"), &z) != NU_OK) {
        NU_CHECK_MSG(0, "dtypes.npz: %s", nu_last_error());
        return;
    }
    NU_CHECK(nu_npz_count(z) == 13);
    static const struct {
        const char *key;
        nu_type type;
        int ndim;
        int64_t ne[3];
    } exp[] = {
        {"f4", NU_TYPE_F32, 2, {2, 3}},     {"f2", NU_TYPE_F16, 1, {5}},  {"i8", NU_TYPE_I64, 1, {4}},
        {"i4", NU_TYPE_I32, 1, {3}},        {"i2", NU_TYPE_I16, 1, {3}},  {"i1", NU_TYPE_I8, 1, {4}},
        {"u1", NU_TYPE_U8, 1, {6}},         {"b1", NU_TYPE_BOOL, 1, {5}}, {"scalar", NU_TYPE_F64, 0, {0}},
        {"empty", NU_TYPE_F32, 2, {0, 3}},  {"be", NU_TYPE_F64, 1, {4}},  {"fortran", NU_TYPE_F64, 2, {3, 4}},
        {"f4x3", NU_TYPE_F32, 3, {2, 3, 4}},
    };
    for (size_t e = 0; e < sizeof exp / sizeof exp[0]; e++) {
        const nu_npy_array *a = get(z, exp[e].key);
        if (!a) continue;
        bool shape_ok = a->type == exp[e].type && a->ndim == exp[e].ndim;
        for (int k = 0; k < exp[e].ndim && shape_ok; k++) shape_ok = a->ne[k] == exp[e].ne[k];
        NU_CHECK_MSG(shape_ok, "%s: dtype %s ndim %d", exp[e].key, nu_type_name(a->type), a->ndim);
        if (!shape_ok) continue;
        double *v = as_f64(a);
        int64_t n = 1;
        for (int k = 0; k < a->ndim; k++) n *= a->ne[k];
        int bad = 0;
        for (int64_t k = 0; k < n; k++) {
            double w;
            const char *key = exp[e].key;
            if (!strcmp(key, "f4")) w = 0.25 * k - 1;
            else if (!strcmp(key, "f2")) w = k / 4.0;
            else if (!strcmp(key, "i8")) w = (double)(k * 1000000000000LL - 3);
            else if (!strcmp(key, "i4")) w = -7.0 * k;
            else if (!strcmp(key, "i2")) w = 300.0 * k - 2;
            else if (!strcmp(key, "i1")) w = k - 2.0;
            else if (!strcmp(key, "u1")) w = 40.0 * k;
            else if (!strcmp(key, "b1")) w = k % 2;
            else if (!strcmp(key, "scalar")) w = 3.5;
            else if (!strcmp(key, "be")) w = 1.5 * k - 2;
            else if (!strcmp(key, "fortran")) w = 10.0 * (k / 4) + (k % 4); /* C order after conversion */
            else w = k / 8.0;                                                /* f4x3 */
            bad += v[k] != w;
        }
        NU_CHECK_MSG(bad == 0, "%s: %d of %lld values differ", exp[e].key, bad, (long long)n);
        free(v);
    }
    const nu_npy_array *a;
    NU_CHECK(nu_npz_get(z, "missing", &a) == NU_ERR_NOT_FOUND);
    nu_npz_close(z);

    NU_CHECK(nu_npz_open(nu_test_fixture("npz/object.npz"), &z) == NU_OK);
    NU_CHECK(nu_npz_get(z, "obj", &a) == NU_ERR_UNSUPPORTED);
    NU_CHECK(strstr(nu_last_error(), "pickled") != NULL);
    nu_npz_close(z);

    NU_CHECK(nu_npz_open(nu_test_fixture("npz/no_such_file.npz"), &z) == NU_ERR_NOT_FOUND);
    NU_CHECK(nu_npz_open(nu_test_fixture("npz"), &z) == NU_ERR_IO);
}

/* ---------------------------------------------------------------- writer round trips */

static char tmpdir[64];

static void test_round_trip(void) {
    double f8[6] = {1.5, -2, 3e300, -0.0, 1e-310, 7};
    float f4[24];
    for (int i = 0; i < 24; i++) f4[i] = (float)i * 0.125f - 1.f;
    uint16_t f2[3] = {0x3c00, 0xc000, 0x7bff};
    int64_t i8[2] = {INT64_MIN, INT64_MAX};
    int32_t i4[3] = {-5, 0, 2147483647};
    int16_t i2[2] = {-32768, 12};
    int8_t i1[2] = {-128, 127};
    uint8_t u1[3] = {0, 128, 255}, b1[3] = {1, 0, 1};
    double sc = 42.25;
    nu_npz_item items[] = {
        {"f8", NU_TYPE_F64, 2, {2, 3}, f8},
        {"f4_6d", NU_TYPE_F32, 6, {1, 2, 1, 3, 2, 2}, f4},
        {"f2", NU_TYPE_F16, 1, {3}, f2},
        {"i8", NU_TYPE_I64, 1, {2}, i8},
        {"i4", NU_TYPE_I32, 1, {3}, i4},
        {"i2", NU_TYPE_I16, 1, {2}, i2},
        {"i1", NU_TYPE_I8, 1, {2}, i1},
        {"u1", NU_TYPE_U8, 1, {3}, u1},
        {"b1", NU_TYPE_BOOL, 1, {3}, b1},
        {"scalar", NU_TYPE_F64, 0, {0}, &sc},
        {"empty", NU_TYPE_F32, 2, {0, 5}, NULL},
        {"a key with spaces", NU_TYPE_U8, 1, {1}, u1},
    };
    const int n = (int)(sizeof items / sizeof items[0]);
    char path[128];
    snprintf(path, sizeof path, "%s/rt.npz", tmpdir);
    NU_CHECK_MSG(nu_npz_save(path, items, n) == NU_OK, "save: %s", nu_last_error());
    nu_npz *z;
    if (nu_npz_open(path, &z) != NU_OK) {
        NU_CHECK_MSG(0, "reopen: %s", nu_last_error());
        return;
    }
    NU_CHECK(nu_npz_count(z) == n);
    for (int i = 0; i < n; i++) {
        NU_CHECK(!strcmp(nu_npz_key(z, i), items[i].key));
        const nu_npy_array *a = get(z, items[i].key);
        if (!a) continue;
        bool ok = a->type == items[i].type && a->ndim == items[i].ndim;
        size_t bytes = nu_type_info(items[i].type)->size;
        for (int k = 0; k < items[i].ndim && ok; k++) {
            ok = a->ne[k] == items[i].ne[k];
            bytes *= (size_t)items[i].ne[k];
        }
        ok = ok && a->nbytes == bytes && (bytes == 0 || memcmp(a->data, items[i].data, bytes) == 0);
        NU_CHECK_MSG(ok, "round trip of '%s' differs", items[i].key);
        /* numpy's 64-byte alignment of the data in the member (format 1.0 header) */
    }
    nu_npz_close(z);
    /* writer errors */
    nu_npz_item dup[2] = {items[0], items[0]};
    NU_CHECK(nu_npz_save(path, dup, 2) == NU_ERR_INVALID_ARG);
    nu_npz_item bad = {"q", NU_TYPE_Q8_0, 1, {32}, f4};
    NU_CHECK(nu_npz_save(path, &bad, 1) == NU_ERR_INVALID_ARG);
    nu_npz_item nodata = {"x", NU_TYPE_F32, 1, {4}, NULL};
    NU_CHECK(nu_npz_save(path, &nodata, 1) == NU_ERR_INVALID_ARG);
    char nodir[160];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/x.npz", tmpdir);
    NU_CHECK(nu_npz_save(nodir, items, 1) == NU_ERR_IO);
    unlink(path);
}

/* ---------------------------------------------------------------- hand-built archives */

typedef struct zmember {
    const char *name;
    const void *data;
    size_t len;
    int method;       /* 0 stored, 8 deflate */
    uint16_t flags;
} zmember;

static void p16(uint8_t *p, unsigned v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void p32(uint8_t *p, uint32_t v) { p16(p, v & 0xffff); p16(p + 2, v >> 16); }

/* A minimal ZIP writer for tests; returns a malloc'ed buffer of *size bytes. */
static uint8_t *make_zip(const zmember *m, int n, size_t *size) {
    size_t cap = 1 << 16, off = 0;
    uint8_t *b = calloc(1, cap);
    uint32_t offs[16], crcs[16], csz[16];
    for (int i = 0; i < n; i++) {
        const uint8_t *data = m[i].data;
        size_t clen = m[i].len;
        uint8_t cbuf[8192];
        if (m[i].method == 8) {
            z_stream s;
            memset(&s, 0, sizeof s);
            deflateInit2(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
            s.next_in = (Bytef *)data;
            s.avail_in = (uInt)m[i].len;
            s.next_out = cbuf;
            s.avail_out = sizeof cbuf;
            deflate(&s, Z_FINISH);
            clen = sizeof cbuf - s.avail_out;
            deflateEnd(&s);
            data = cbuf;
        }
        size_t nl = strlen(m[i].name);
        offs[i] = (uint32_t)off;
        crcs[i] = (uint32_t)crc32(0, m[i].data, (uInt)m[i].len);
        csz[i] = (uint32_t)clen;
        uint8_t *h = b + off;
        p32(h, 0x04034b50u);
        p16(h + 4, 20);
        p16(h + 6, m[i].flags);
        p16(h + 8, (unsigned)m[i].method);
        p32(h + 14, crcs[i]);
        p32(h + 18, (uint32_t)clen);
        p32(h + 22, (uint32_t)m[i].len);
        p16(h + 26, (unsigned)nl);
        memcpy(h + 30, m[i].name, nl);
        memcpy(h + 30 + nl, data, clen);
        off += 30 + nl + clen;
    }
    size_t cd = off;
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(m[i].name);
        uint8_t *c = b + off;
        p32(c, 0x02014b50u);
        p16(c + 4, 20);
        p16(c + 6, 20);
        p16(c + 8, m[i].flags);
        p16(c + 10, (unsigned)m[i].method);
        p32(c + 16, crcs[i]);
        p32(c + 20, csz[i]);
        p32(c + 24, (uint32_t)m[i].len);
        p16(c + 28, (unsigned)nl);
        p32(c + 42, offs[i]);
        memcpy(c + 46, m[i].name, nl);
        off += 46 + nl;
    }
    uint8_t *e = b + off;
    p32(e, 0x06054b50u);
    p16(e + 8, (unsigned)n);
    p16(e + 10, (unsigned)n);
    p32(e + 12, (uint32_t)(off - cd));
    p32(e + 16, (uint32_t)cd);
    off += 22;
    *size = off;
    return b;
}

/* .npy bytes: version 1.0 header (dict text as given) + payload */
static size_t make_npy(uint8_t *out, const char *dict, const void *payload, size_t plen) {
    size_t dl = strlen(dict);
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    p16(out + 8, (unsigned)dl);
    memcpy(out + 10, dict, dl);
    if (plen) memcpy(out + 10 + dl, payload, plen);
    return 10 + dl + plen;
}

/* Opens buf (exact-size heap copy) and decodes every member; returns the first failure. */
static nu_status open_all(const uint8_t *buf, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    if (size) memcpy(copy, buf, size);
    nu_npz *z;
    nu_status st = nu_npz_open_memory(copy, size, "test.npz", &z);
    if (st == NU_OK) {
        for (int i = 0; i < nu_npz_count(z); i++) {
            const nu_npy_array *a;
            nu_status s2 = nu_npz_get(z, nu_npz_key(z, i), &a);
            if (s2 != NU_OK && st == NU_OK) st = s2;
            if (s2 == NU_OK) { /* touch every byte */
                volatile uint8_t sink = 0;
                for (size_t k = 0; k < a->nbytes; k++) sink ^= ((const uint8_t *)a->data)[k];
                (void)sink;
            }
        }
        nu_npz_close(z);
    }
    free(copy);
    return st;
}

static nu_status one_npy(const char *dict, const void *payload, size_t plen, int method) {
    uint8_t npy[4096];
    size_t n = make_npy(npy, dict, payload, plen);
    zmember m = {"x.npy", npy, n, method, 0};
    size_t size;
    uint8_t *zip = make_zip(&m, 1, &size);
    nu_status st = open_all(zip, size);
    free(zip);
    return st;
}

static void test_malformed(void) {
    double v[4] = {1, 2, 3, 4};
    /* the builder itself produces valid archives, stored and deflated */
    NU_CHECK(one_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", v, 32, 0) == NU_OK);
    NU_CHECK(one_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", v, 32, 8) == NU_OK);
    NU_CHECK(one_npy("{\"descr\":\"<f8\",\"fortran_order\":False,\"shape\":(4L,)}", v, 32, 0) == NU_OK);
    /* .npy header problems */
    NU_CHECK(one_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }", v, 32, 0) == NU_ERR_FORMAT);
    NU_CHECK(one_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", v, 32, 0) == NU_ERR_FORMAT);
    NU_CHECK(one_npy("{'descr': '<f8', 'fortran_order': False}", v, 32, 0) == NU_ERR_FORMAT);
    NU_CHECK(one_npy("{'descr': '<f8', 'fortran_order': Maybe, 'shape': (4,)}", v, 32, 0) == NU_ERR_FORMAT);
    NU_CHECK(one_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4,), 'x': 1}", v, 32, 0) == NU_ERR_FORMAT);
    NU_CHECK(one_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-4,)}", v, 32, 0) == NU_ERR_FORMAT);
    NU_CHECK(one_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,1,1,1,1,1,4)}", v, 32, 0) == NU_ERR_FORMAT);
    NU_CHECK(one_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296,4294967296,4294967296)}", v, 32, 0) ==
             NU_ERR_FORMAT);
    NU_CHECK(one_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,)}", v, 32, 0) ==
             NU_ERR_FORMAT);
    NU_CHECK(one_npy("[1, 2]", v, 32, 0) == NU_ERR_FORMAT);
    NU_CHECK(one_npy("{'descr': '<c16', 'fortran_order': False, 'shape': (2,)}", v, 32, 0) == NU_ERR_UNSUPPORTED);
    NU_CHECK(one_npy("{'descr': '<u4', 'fortran_order': False, 'shape': (8,)}", v, 32, 0) == NU_ERR_UNSUPPORTED);
    NU_CHECK(one_npy("{'descr': 'f8', 'fortran_order': False, 'shape': (4,)}", v, 32, 0) == NU_ERR_UNSUPPORTED);
    NU_CHECK(one_npy("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (4,)}", v, 32, 0) ==
             NU_ERR_UNSUPPORTED);
    NU_CHECK(one_npy("{'descr': '|O', 'fortran_order': False, 'shape': (4,)}", v, 32, 0) == NU_ERR_UNSUPPORTED);
    /* header length beyond the member, bad magic, version 4 */
    uint8_t npy[256];
    size_t n = make_npy(npy, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", v, 32);
    npy[8] = 0xff;
    npy[9] = 0x7f;
    zmember m = {"x.npy", npy, n, 0, 0};
    size_t size;
    uint8_t *zip = make_zip(&m, 1, &size);
    NU_CHECK(open_all(zip, size) == NU_ERR_FORMAT);
    free(zip);
    n = make_npy(npy, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", v, 32);
    npy[6] = 4;
    zip = make_zip(&m, 1, &size);
    NU_CHECK(open_all(zip, size) == NU_ERR_UNSUPPORTED);
    free(zip);
    npy[6] = 1;
    npy[0] = 'X';
    zip = make_zip(&m, 1, &size);
    NU_CHECK(open_all(zip, size) == NU_ERR_FORMAT);
    free(zip);
    n = make_npy(npy, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", v, 32);
    /* ZIP-level problems */
    m.flags = 1; /* encrypted */
    zip = make_zip(&m, 1, &size);
    NU_CHECK(open_all(zip, size) == NU_ERR_UNSUPPORTED);
    free(zip);
    m.flags = 0;
    m.method = 12; /* bzip2 (data written stored) */
    zip = make_zip(&m, 1, &size);
    NU_CHECK(open_all(zip, size) == NU_ERR_UNSUPPORTED);
    free(zip);
    m.method = 0;
    zip = make_zip(&m, 1, &size);
    zip[30 + 5 + 20] ^= 1; /* a data byte: CRC mismatch */
    NU_CHECK(open_all(zip, size) == NU_ERR_FORMAT && strstr(nu_last_error(), "CRC"));
    free(zip);
    /* deflate member claiming 1 GB from a few bytes */
    m.method = 8;
    zip = make_zip(&m, 1, &size);
    size_t cd = size - 22 - 46 - 5;
    p32(zip + cd + 24, 1000000000u);
    NU_CHECK(open_all(zip, size) == NU_ERR_FORMAT && strstr(nu_last_error(), "impossible"));
    /* deflate member whose stream holds more than the declared size */
    p32(zip + cd + 24, (uint32_t)n - 1);
    NU_CHECK(open_all(zip, size) == NU_ERR_FORMAT);
    free(zip);
    /* duplicate keys */
    zmember two[2] = {{"a.npy", npy, n, 0, 0}, {"a.npy", npy, n, 0, 0}};
    zip = make_zip(two, 2, &size);
    NU_CHECK(open_all(zip, size) == NU_ERR_FORMAT && strstr(nu_last_error(), "twice"));
    free(zip);
    /* a non-.npy member is listed but not decoded */
    zmember other[2] = {{"a.npy", npy, n, 0, 0}, {"readme.txt", "hello", 5, 0, 0}};
    zip = make_zip(other, 2, &size);
    NU_CHECK(open_all(zip, size) == NU_ERR_UNSUPPORTED);
    free(zip);
    /* ZIP64 end records (as written for > 65535 members or > 4 GiB): the saturated classic
     * record must be resolved through the ZIP64 locator and record */
    m.method = 0;
    zip = make_zip(&m, 1, &size);
    {
        uint8_t *big = calloc(1, size + 76);
        size_t e = size - 22; /* classic end record */
        uint32_t cd_size = (uint32_t)(zip[e + 12] | zip[e + 13] << 8 | zip[e + 14] << 16 | (uint32_t)zip[e + 15] << 24);
        uint32_t cd_off = (uint32_t)(zip[e + 16] | zip[e + 17] << 8 | zip[e + 18] << 16 | (uint32_t)zip[e + 19] << 24);
        memcpy(big, zip, e);
        uint8_t *r = big + e; /* ZIP64 end record, 56 bytes */
        p32(r, 0x06064b50u);
        p32(r + 4, 44);
        p16(r + 12, 45);
        p16(r + 14, 45);
        p32(r + 24, 1);       /* entries on this disk (u64) */
        p32(r + 32, 1);       /* entries (u64)              */
        p32(r + 40, cd_size); /* cd size (u64)              */
        p32(r + 48, cd_off);  /* cd offset (u64)            */
        uint8_t *l = r + 56;  /* locator, 20 bytes          */
        p32(l, 0x07064b50u);
        p32(l + 8, (uint32_t)e);
        p32(l + 16, 1);
        uint8_t *c = l + 20; /* classic record, saturated */
        p32(c, 0x06054b50u);
        p16(c + 8, 0xffff);
        p16(c + 10, 0xffff);
        p32(c + 12, 0xffffffffu);
        p32(c + 16, 0xffffffffu);
        NU_CHECK_MSG(open_all(big, size + 76) == NU_OK, "ZIP64 end records: %s", nu_last_error());
        p32(l + 8, (uint32_t)e + 1); /* locator pointing at garbage */
        NU_CHECK(open_all(big, size + 76) == NU_ERR_FORMAT);
        free(big);
    }
    free(zip);
    /* an empty archive is valid */
    zip = make_zip(NULL, 0, &size);
    NU_CHECK(open_all(zip, size) == NU_OK);
    free(zip);
    /* not a ZIP at all */
    NU_CHECK(open_all((const uint8_t *)"PK\x03\x04", 4) == NU_ERR_FORMAT);
    NU_CHECK(open_all((const uint8_t *)"", 0) == NU_ERR_FORMAT);
}

static uint8_t *read_all(const char *path, size_t *size) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (fread(b, 1, (size_t)n, fp) != (size_t)n) n = 0;
    fclose(fp);
    *size = (size_t)n;
    return b;
}

/* Truncation at every length and a byte flip at every position: fail cleanly or succeed. */
static void test_hostile_sweeps(void) {
    static const char *files[] = {"npz/stats_stored.npz", "npz/stats_compressed.npz", "npz/dtypes.npz"};
    int step = nu_test_quick() ? 7 : 1;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        size_t size;
        uint8_t *buf = read_all(nu_test_fixture(files[f]), &size);
        NU_CHECK(buf != NULL && size > 100);
        if (!buf) continue;
        NU_CHECK(open_all(buf, size) == NU_OK);
        int ok_trunc = 0, ok_flip = 0;
        for (size_t len = 0; len < size; len += (size_t)step) ok_trunc += open_all(buf, len) == NU_OK;
        for (size_t pos = 0; pos < size; pos += (size_t)step) {
            static const uint8_t masks[3] = {0x01, 0x80, 0xff};
            for (int k = 0; k < 3; k++) {
                buf[pos] ^= masks[k];
                ok_flip += open_all(buf, size) == NU_OK;
                buf[pos] ^= masks[k];
            }
        }
        /* truncation always breaks the end record: nothing may pass */
        NU_CHECK_MSG(ok_trunc == 0, "%s: %d truncated copies were accepted", files[f], ok_trunc);
        printf("%s: %zu bytes, truncations all refused, %d of %zu byte flips still decode (fields the reader ignores)\n",
               files[f], size, ok_flip, 3 * ((size + (size_t)step - 1) / (size_t)step));
        free(buf);
    }
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nu_test_npz_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_numpy_files();
    test_round_trip();
    test_malformed();
    test_hostile_sweeps();
    rmdir(tmpdir);
    return nu_test_summary("test_npz");
}
