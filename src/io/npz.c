/*
 * npz.c — NumPy .npz archives: reader (numpy.savez = ZIP "stored", savez_compressed = deflate;
 * ZIP64 fields as numpy writes them with force_zip64) and an uncompressed writer.
 *
 * ZIP (PKWARE APPNOTE 6.3): the end-of-central-directory record (and the ZIP64 locator/record
 * when present) gives the central directory; each entry gives method, CRC-32, sizes and the
 * local header offset (ZIP64 extra field 0x0001 for fields saturated at 0xFFFFFFFF). Sizes come
 * from the central directory (numpy writes data descriptors / ZIP64 local headers; the local
 * header is only used for the data offset).
 * .npy (numpy/lib/format.py): "\x93NUMPY", version 1.x (u16 header length) or 2.x/3.x (u32),
 * then a Python dict literal {'descr': '<f8', 'fortran_order': False, 'shape': (D, D), }.
 *
 * Hostile input: every offset and size is checked against the buffer, member count <= 65536,
 * names <= 4096 bytes without NUL, unique keys, stored size == declared size, deflate
 * declared size <= 1032 x compressed size + 1 KiB (deflate's maximum ratio: no zip-bomb
 * allocations), inflated length and CRC-32 must match, header <= 1 MiB, <= NU_MAX_DIMS dims,
 * overflow-checked element counts, data length == shape x item size.
 *
 * Tested by tests/test_npz.c (round trips, numpy-written fixtures in stored and deflate form,
 * big-endian and Fortran-order arrays, malformed archives, truncation / byte-flip sweeps) and
 * fuzz/fuzz_npz.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "io/atomic.h"
#include "nuance/io.h"
#include "nuance/metrics.h"

#define NPZ_MAX_MEMBERS 65536
#define NPZ_MAX_NAME 4096
#define NPZ_MAX_HEADER (1u << 20)
#define NPZ_MAX_MEMBER_BYTES ((uint64_t)1 << 36) /* 64 GiB: beyond any statistics file */

typedef struct npz_member {
    char *name;          /* member name as stored ("mu.npy")              */
    char *key;           /* name without ".npy"                            */
    bool is_npy;
    uint16_t method;
    uint32_t crc;
    uint64_t csize, usize;
    uint64_t data_off;   /* start of the (compressed) data in the buffer   */
    bool decoded;
    void *buf;           /* decoded array data                              */
    nu_npy_array arr;
} npz_member;

struct nu_npz {
    nu_file_map map;
    bool mapped;
    const uint8_t *data;
    size_t size;
    char *label;
    int n;
    npz_member *m;
};

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

static char *dupn(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

void nu_npz_close(nu_npz *z) {
    if (!z) return;
    for (int i = 0; i < z->n; i++) {
        free(z->m[i].name);
        free(z->m[i].key);
        free(z->m[i].buf);
    }
    free(z->m);
    free(z->label);
    if (z->mapped) nu_file_map_close(&z->map);
    free(z);
}

int nu_npz_count(const nu_npz *z) { return z ? z->n : 0; }
const char *nu_npz_key(const nu_npz *z, int i) { return z && i >= 0 && i < z->n ? z->m[i].key : NULL; }

/* ---------------------------------------------------------------- ZIP directory */

static nu_status parse_zip(nu_npz *z) {
    const uint8_t *d = z->data;
    const size_t size = z->size;
    const char *L = z->label;
    if (size < 22) return nu_error(NU_ERR_FORMAT, "%s: not an .npz (ZIP) archive: %zu bytes", L, size);
    /* end of central directory: last 22 bytes + a comment of up to 65535 bytes */
    size_t eocd = SIZE_MAX;
    size_t lo = size - 22 > 65535 ? size - 22 - 65535 : 0;
    for (size_t p = size - 22 + 1; p-- > lo;) {
        if (rd32(d + p) == 0x06054b50u && p + 22 + rd16(d + p + 20) <= size) {
            eocd = p;
            break;
        }
    }
    if (eocd == SIZE_MAX) return nu_error(NU_ERR_FORMAT, "%s: not an .npz (ZIP) archive (no end-of-directory record)", L);
    const uint8_t *e = d + eocd;
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: multi-volume ZIP archives are not supported", L);
    uint64_t count = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    size_t cd_limit = eocd;
    if (eocd >= 20 && rd32(d + eocd - 20) == 0x07064b50u) { /* ZIP64 locator */
        uint64_t z64 = rd64(d + eocd - 20 + 8);
        if (z64 > eocd - 20 || eocd - 20 - z64 < 56 || rd32(d + z64) != 0x06064b50u)
            return nu_error(NU_ERR_FORMAT, "%s: bad ZIP64 end-of-directory record", L);
        const uint8_t *r = d + z64;
        if (rd32(r + 16) != 0 || rd32(r + 20) != 0)
            return nu_error(NU_ERR_UNSUPPORTED, "%s: multi-volume ZIP archives are not supported", L);
        count = rd64(r + 32);
        cd_size = rd64(r + 40);
        cd_off = rd64(r + 48);
        cd_limit = (size_t)z64;
    }
    if (count > NPZ_MAX_MEMBERS)
        return nu_error(NU_ERR_FORMAT, "%s: %llu members (limit %d)", L, (unsigned long long)count, NPZ_MAX_MEMBERS);
    if (cd_off > cd_limit || cd_size > cd_limit - cd_off)
        return nu_error(NU_ERR_FORMAT, "%s: central directory (offset %llu, %llu bytes) outside the file", L,
                        (unsigned long long)cd_off, (unsigned long long)cd_size);
    z->m = calloc(count ? (size_t)count : 1, sizeof(npz_member));
    if (!z->m) return nu_error(NU_ERR_NOMEM, "%s: out of memory", L);
    size_t p = (size_t)cd_off, end = (size_t)(cd_off + cd_size);
    for (uint64_t i = 0; i < count; i++) {
        if (end - p < 46 || rd32(d + p) != 0x02014b50u)
            return nu_error(NU_ERR_FORMAT, "%s: central directory entry %llu is truncated or corrupt", L,
                            (unsigned long long)i);
        const uint8_t *c = d + p;
        uint16_t flags = rd16(c + 8), method = rd16(c + 10);
        uint32_t crc = rd32(c + 16);
        uint64_t csize = rd32(c + 20), usize = rd32(c + 24);
        size_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
        uint64_t loff = rd32(c + 42);
        if (46 + nlen + xlen + clen > end - p)
            return nu_error(NU_ERR_FORMAT, "%s: central directory entry %llu overruns the directory", L,
                            (unsigned long long)i);
        const char *name = (const char *)c + 46;
        if (nlen == 0 || nlen > NPZ_MAX_NAME || memchr(name, 0, nlen))
            return nu_error(NU_ERR_FORMAT, "%s: member %llu has an empty, overlong or binary name", L,
                            (unsigned long long)i);
        /* ZIP64 extra field: the saturated fields, in the order usize, csize, offset */
        const uint8_t *x = c + 46 + nlen, *xe = x + xlen;
        while (xe - x >= 4) {
            uint16_t id = rd16(x), len = rd16(x + 2);
            if ((size_t)(xe - x - 4) < len) return nu_error(NU_ERR_FORMAT, "%s: member '%.*s': bad extra field", L, (int)nlen, name);
            if (id == 0x0001) {
                const uint8_t *f = x + 4, *fe = f + len;
                if (usize == 0xffffffffu) {
                    if (fe - f < 8) return nu_error(NU_ERR_FORMAT, "%s: member '%.*s': short ZIP64 field", L, (int)nlen, name);
                    usize = rd64(f);
                    f += 8;
                }
                if (csize == 0xffffffffu) {
                    if (fe - f < 8) return nu_error(NU_ERR_FORMAT, "%s: member '%.*s': short ZIP64 field", L, (int)nlen, name);
                    csize = rd64(f);
                    f += 8;
                }
                if (loff == 0xffffffffu) {
                    if (fe - f < 8) return nu_error(NU_ERR_FORMAT, "%s: member '%.*s': short ZIP64 field", L, (int)nlen, name);
                    loff = rd64(f);
                }
            }
            x += 4 + len;
        }
        if (flags & 1u) return nu_error(NU_ERR_UNSUPPORTED, "%s: member '%.*s' is encrypted", L, (int)nlen, name);
        if (method != 0 && method != 8)
            return nu_error(NU_ERR_UNSUPPORTED, "%s: member '%.*s' uses ZIP method %u (only stored and deflate)", L,
                            (int)nlen, name, method);
        /* local header: only its name/extra lengths matter (sizes may be in a data descriptor) */
        if (loff > size || size - loff < 30 || rd32(d + loff) != 0x04034b50u)
            return nu_error(NU_ERR_FORMAT, "%s: member '%.*s': local header missing or outside the file", L,
                            (int)nlen, name);
        size_t lnl = rd16(d + loff + 26), lxl = rd16(d + loff + 28);
        uint64_t doff = loff + 30 + lnl + lxl;
        if (doff > size || csize > size - doff)
            return nu_error(NU_ERR_FORMAT, "%s: member '%.*s': data (%llu bytes) runs past the end of the file", L,
                            (int)nlen, name, (unsigned long long)csize);
        if (lnl != nlen || memcmp(d + loff + 30, name, nlen) != 0)
            return nu_error(NU_ERR_FORMAT, "%s: member '%.*s': local header names another file", L, (int)nlen, name);
        if (usize > NPZ_MAX_MEMBER_BYTES)
            return nu_error(NU_ERR_FORMAT, "%s: member '%.*s' declares %llu bytes (limit %llu)", L, (int)nlen, name,
                            (unsigned long long)usize, (unsigned long long)NPZ_MAX_MEMBER_BYTES);
        if (method == 0 && csize != usize)
            return nu_error(NU_ERR_FORMAT, "%s: stored member '%.*s' has compressed size %llu != size %llu", L,
                            (int)nlen, name, (unsigned long long)csize, (unsigned long long)usize);
        if (method == 8 && usize > csize * 1032 + 1024)
            return nu_error(NU_ERR_FORMAT, "%s: member '%.*s' claims %llu bytes from %llu compressed (impossible for deflate)",
                            L, (int)nlen, name, (unsigned long long)usize, (unsigned long long)csize);
        npz_member *m = &z->m[i];
        m->name = dupn(name, nlen);
        m->is_npy = nlen > 4 && memcmp(name + nlen - 4, ".npy", 4) == 0;
        m->key = dupn(name, m->is_npy ? nlen - 4 : nlen);
        if (!m->name || !m->key) return nu_error(NU_ERR_NOMEM, "%s: out of memory", L);
        m->method = method;
        m->crc = crc;
        m->csize = csize;
        m->usize = usize;
        m->data_off = doff;
        z->n = (int)i + 1;
        for (uint64_t k = 0; k < i; k++)
            if (!strcmp(z->m[k].key, m->key))
                return nu_error(NU_ERR_FORMAT, "%s: key '%s' appears twice", L, m->key);
        p += 46 + nlen + xlen + clen;
    }
    return NU_OK;
}

nu_status nu_npz_open_memory(const void *data, size_t size, const char *label, nu_npz **out) {
    *out = NULL;
    if (!data && size) return nu_error(NU_ERR_INVALID_ARG, "nu_npz_open_memory: NULL data");
    nu_npz *z = calloc(1, sizeof *z);
    if (!z) return nu_error(NU_ERR_NOMEM, "out of memory");
    z->data = data;
    z->size = size;
    z->label = dupn(label ? label : "npz", strlen(label ? label : "npz"));
    if (!z->label) {
        nu_npz_close(z);
        return nu_error(NU_ERR_NOMEM, "out of memory");
    }
    nu_status st = parse_zip(z);
    if (st != NU_OK) {
        nu_npz_close(z);
        return st;
    }
    *out = z;
    return NU_OK;
}

nu_status nu_npz_open(const char *path, nu_npz **out) {
    *out = NULL;
    nu_file_map map;
    nu_status st = nu_file_map_open(path, &map);
    if (st != NU_OK) return st;
    nu_npz *z;
    st = nu_npz_open_memory(map.data, map.size, path, &z);
    if (st != NU_OK) {
        nu_file_map_close(&map);
        return st;
    }
    z->map = map;
    z->mapped = true;
    *out = z;
    return NU_OK;
}

/* ---------------------------------------------------------------- .npy */

typedef struct hdr_parser {
    const char *s, *e;
} hdr_parser;

static void skip_ws(hdr_parser *h) {
    while (h->s < h->e && (*h->s == ' ' || *h->s == '\t' || *h->s == '\n' || *h->s == '\r')) h->s++;
}

static bool eat(hdr_parser *h, char c) {
    skip_ws(h);
    if (h->s < h->e && *h->s == c) {
        h->s++;
        return true;
    }
    return false;
}

/* a quoted string (no escapes needed for the keys and dtypes numpy writes) into buf */
static bool parse_str(hdr_parser *h, char *buf, size_t cap) {
    skip_ws(h);
    if (h->s >= h->e || (*h->s != '\'' && *h->s != '"')) return false;
    char q = *h->s++;
    size_t n = 0;
    while (h->s < h->e && *h->s != q) {
        if (*h->s == '\\' || n + 1 >= cap) return false;
        buf[n++] = *h->s++;
    }
    if (h->s >= h->e) return false;
    h->s++;
    buf[n] = 0;
    return true;
}

static bool parse_word(hdr_parser *h, const char *w) {
    skip_ws(h);
    size_t n = strlen(w);
    if ((size_t)(h->e - h->s) >= n && !memcmp(h->s, w, n)) {
        h->s += n;
        return true;
    }
    return false;
}

/* (a, b, ...) of non-negative integers; numpy also writes "L" suffixes in old Python 2 files */
static bool parse_shape(hdr_parser *h, int *ndim, int64_t *ne) {
    if (!eat(h, '(')) return false;
    *ndim = 0;
    for (;;) {
        if (eat(h, ')')) return true;
        skip_ws(h);
        if (h->s >= h->e || *h->s < '0' || *h->s > '9') return false;
        int64_t v = 0;
        while (h->s < h->e && *h->s >= '0' && *h->s <= '9') {
            if (v > (INT64_MAX - 9) / 10) return false;
            v = v * 10 + (*h->s++ - '0');
        }
        if (h->s < h->e && *h->s == 'L') h->s++;
        if (*ndim >= NU_MAX_DIMS) return false;
        ne[(*ndim)++] = v;
        if (eat(h, ')')) return true;
        if (!eat(h, ',')) return false;
    }
}

typedef struct npy_info {
    nu_type type;
    size_t item;
    bool swap, fortran;
    int ndim;
    int64_t ne[NU_MAX_DIMS];
} npy_info;

static nu_status parse_descr(const char *descr, npy_info *info, const char *L, const char *key) {
    char order = descr[0];
    const char *t = descr + 1;
    if (order != '<' && order != '>' && order != '|' && order != '=')
        return nu_error(NU_ERR_UNSUPPORTED, "%s: array '%s' has dtype '%s' (no byte-order mark)", L, key, descr);
    static const struct { const char *code; nu_type type; size_t item; } tab[] = {
        {"f8", NU_TYPE_F64, 8}, {"f4", NU_TYPE_F32, 4}, {"f2", NU_TYPE_F16, 2}, {"i8", NU_TYPE_I64, 8},
        {"i4", NU_TYPE_I32, 4}, {"i2", NU_TYPE_I16, 2}, {"i1", NU_TYPE_I8, 1},  {"u1", NU_TYPE_U8, 1},
        {"b1", NU_TYPE_BOOL, 1},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(t, tab[i].code)) {
            info->type = tab[i].type;
            info->item = tab[i].item;
            info->swap = order == '>' && tab[i].item > 1;
            return NU_OK;
        }
    if (!strcmp(t, "O"))
        return nu_error(NU_ERR_UNSUPPORTED, "%s: array '%s' holds pickled Python objects (not loaded)", L, key);
    return nu_error(NU_ERR_UNSUPPORTED, "%s: array '%s' has unsupported dtype '%s'", L, key, descr);
}

static nu_status parse_npy_header(const char *hs, size_t hn, npy_info *info, const char *L, const char *key) {
    hdr_parser h = {hs, hs + hn};
    bool have_descr = false, have_fo = false, have_shape = false;
    if (!eat(&h, '{')) return nu_error(NU_ERR_FORMAT, "%s: array '%s': .npy header is not a dict", L, key);
    for (;;) {
        if (eat(&h, '}')) break;
        char k[32], v[32];
        if (!parse_str(&h, k, sizeof k) || !eat(&h, ':'))
            return nu_error(NU_ERR_FORMAT, "%s: array '%s': malformed .npy header", L, key);
        if (!strcmp(k, "descr")) {
            skip_ws(&h);
            if (h.s < h.e && *h.s == '[')
                return nu_error(NU_ERR_UNSUPPORTED, "%s: array '%s' has a structured dtype", L, key);
            if (!parse_str(&h, v, sizeof v) || !v[0])
                return nu_error(NU_ERR_FORMAT, "%s: array '%s': bad descr in .npy header", L, key);
            nu_status st = parse_descr(v, info, L, key);
            if (st != NU_OK) return st;
            have_descr = true;
        } else if (!strcmp(k, "fortran_order")) {
            if (parse_word(&h, "True")) info->fortran = true;
            else if (parse_word(&h, "False")) info->fortran = false;
            else return nu_error(NU_ERR_FORMAT, "%s: array '%s': bad fortran_order", L, key);
            have_fo = true;
        } else if (!strcmp(k, "shape")) {
            if (!parse_shape(&h, &info->ndim, info->ne))
                return nu_error(NU_ERR_FORMAT, "%s: array '%s': bad shape (or more than %d dims)", L, key, NU_MAX_DIMS);
            have_shape = true;
        } else {
            return nu_error(NU_ERR_FORMAT, "%s: array '%s': unexpected key '%s' in .npy header", L, key, k);
        }
        if (eat(&h, '}')) break;
        if (!eat(&h, ',')) return nu_error(NU_ERR_FORMAT, "%s: array '%s': malformed .npy header", L, key);
    }
    if (!have_descr || !have_fo || !have_shape)
        return nu_error(NU_ERR_FORMAT, "%s: array '%s': .npy header lacks descr, fortran_order or shape", L, key);
    return NU_OK;
}

static nu_status inflate_member(const nu_npz *z, const npz_member *m, uint8_t *out) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -15) != Z_OK) return nu_error(NU_ERR_NOMEM, "%s: zlib init failed", z->label);
    const uint8_t *src = z->data + m->data_off;
    uint64_t in_left = m->csize, out_left = m->usize;
    uint8_t *dst = out;
    int rc = Z_OK;
    uint8_t spare;
    while (rc == Z_OK) {
        uInt ci = in_left > 0x40000000u ? 0x40000000u : (uInt)in_left;
        uInt co = out_left > 0x40000000u ? 0x40000000u : (uInt)out_left;
        s.next_in = (Bytef *)src;
        s.avail_in = ci;
        s.next_out = co ? dst : &spare; /* one spare byte detects data beyond the declared size */
        s.avail_out = co ? co : 1;
        rc = inflate(&s, Z_NO_FLUSH);
        size_t used_in = ci - s.avail_in, made = (co ? co : 1) - s.avail_out;
        src += used_in;
        in_left -= used_in;
        if (!co && made) {
            rc = Z_DATA_ERROR;
            break;
        }
        dst += made;
        out_left -= co ? made : 0;
        if (rc == Z_OK && used_in == 0 && made == 0) rc = Z_BUF_ERROR;
    }
    inflateEnd(&s);
    if (rc != Z_STREAM_END || out_left != 0)
        return nu_error(NU_ERR_FORMAT, "%s: member '%s': corrupt deflate data or wrong size", z->label, m->name);
    return NU_OK;
}

static void byteswap(uint8_t *p, size_t n, size_t item) {
    for (size_t i = 0; i < n; i++, p += item)
        for (size_t a = 0, b = item - 1; a < b; a++, b--) {
            uint8_t t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

/* Fortran (column-major) -> C order: out[c-index] = in[f-index] */
static void fortran_to_c(const uint8_t *in, uint8_t *out, const int64_t *ne, int ndim, size_t item, size_t count) {
    int64_t idx[NU_MAX_DIMS] = {0}, fstride[NU_MAX_DIMS];
    int64_t s = 1;
    for (int k = 0; k < ndim; k++) {
        fstride[k] = s;
        s *= ne[k];
    }
    for (size_t c = 0; c < count; c++) {
        int64_t f = 0;
        for (int k = 0; k < ndim; k++) f += idx[k] * fstride[k];
        memcpy(out + c * item, in + (size_t)f * item, item);
        for (int k = ndim - 1; k >= 0; k--) { /* C order: last index fastest */
            if (++idx[k] < ne[k]) break;
            idx[k] = 0;
        }
    }
}

static nu_status decode_member(nu_npz *z, npz_member *m) {
    const char *L = z->label;
    if (!m->is_npy) return nu_error(NU_ERR_UNSUPPORTED, "%s: member '%s' is not a .npy array", L, m->name);
    if (m->usize > SIZE_MAX - 64) return nu_error(NU_ERR_NOMEM, "%s: member '%s' too large", L, m->name);
    uint8_t *raw = malloc(m->usize ? (size_t)m->usize : 1);
    if (!raw)
        return nu_error(NU_ERR_NOMEM, "%s: out of memory for member '%s' (%llu bytes)", L, m->name,
                        (unsigned long long)m->usize);
    nu_status st = NU_OK;
    if (m->method == 0) memcpy(raw, z->data + m->data_off, (size_t)m->usize);
    else if ((st = inflate_member(z, m, raw)) != NU_OK) goto fail;
    size_t n = (size_t)m->usize;
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t o = 0; o < n;) { /* zlib's crc32 takes uInt lengths */
        uInt c = n - o > 0x40000000u ? 0x40000000u : (uInt)(n - o);
        crc = crc32(crc, raw + o, c);
        o += c;
    }
    if ((uint32_t)crc != m->crc) {
        st = nu_error(NU_ERR_FORMAT, "%s: member '%s': CRC-32 mismatch (corrupt archive)", L, m->name);
        goto fail;
    }
    if (n < 10 || memcmp(raw, "\x93NUMPY", 6) != 0) {
        st = nu_error(NU_ERR_FORMAT, "%s: member '%s' is not a .npy file (bad magic)", L, m->name);
        goto fail;
    }
    uint8_t major = raw[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = rd16(raw + 8);
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (n < 12) {
            st = nu_error(NU_ERR_FORMAT, "%s: member '%s': truncated .npy header", L, m->name);
            goto fail;
        }
        hlen = rd32(raw + 8);
        hstart = 12;
    } else {
        st = nu_error(NU_ERR_UNSUPPORTED, "%s: member '%s': .npy format version %u", L, m->name, major);
        goto fail;
    }
    if (hlen > NPZ_MAX_HEADER || hlen > n - hstart) {
        st = nu_error(NU_ERR_FORMAT, "%s: member '%s': .npy header length %zu exceeds the data", L, m->name, hlen);
        goto fail;
    }
    npy_info info;
    memset(&info, 0, sizeof info);
    if ((st = parse_npy_header((const char *)raw + hstart, hlen, &info, L, m->key)) != NU_OK) goto fail;
    uint64_t count = 1;
    for (int k = 0; k < info.ndim; k++) {
        if (info.ne[k] != 0 && count > UINT64_MAX / (uint64_t)info.ne[k]) {
            st = nu_error(NU_ERR_FORMAT, "%s: array '%s': shape overflows", L, m->key);
            goto fail;
        }
        count *= (uint64_t)info.ne[k];
    }
    size_t body = n - hstart - hlen;
    if (count > (uint64_t)body / info.item || count * info.item != body) {
        st = nu_error(NU_ERR_FORMAT, "%s: array '%s': %zu data bytes for %llu elements of %zu bytes", L, m->key, body,
                      (unsigned long long)count, info.item);
        goto fail;
    }
    uint8_t *payload = raw + hstart + hlen;
    if (info.swap) byteswap(payload, (size_t)count, info.item);
    if (info.fortran && info.ndim > 1) {
        uint8_t *c = malloc(body ? body : 1);
        if (!c) {
            st = nu_error(NU_ERR_NOMEM, "%s: out of memory for array '%s'", L, m->key);
            goto fail;
        }
        fortran_to_c(payload, c, info.ne, info.ndim, info.item, (size_t)count);
        free(raw);
        raw = c;
    } else {
        memmove(raw, payload, body); /* data at the start of the malloc'ed block: aligned */
    }
    if (info.type == NU_TYPE_BOOL)
        for (size_t i = 0; i < body; i++) raw[i] = raw[i] != 0;
    m->buf = raw;
    m->arr.name = m->key;
    m->arr.type = info.type;
    m->arr.ndim = info.ndim;
    for (int k = 0; k < info.ndim; k++) m->arr.ne[k] = info.ne[k];
    m->arr.data = raw;
    m->arr.nbytes = body;
    m->decoded = true;
    return NU_OK;
fail:
    free(raw);
    return st;
}

nu_status nu_npz_get(nu_npz *z, const char *key, const nu_npy_array **out) {
    *out = NULL;
    if (!z || !key) return nu_error(NU_ERR_INVALID_ARG, "nu_npz_get: NULL argument");
    for (int i = 0; i < z->n; i++) {
        npz_member *m = &z->m[i];
        if (strcmp(m->key, key) != 0) continue;
        if (!m->decoded) {
            nu_status st = decode_member(z, m);
            if (st != NU_OK) return st;
        }
        *out = &m->arr;
        return NU_OK;
    }
    return nu_error(NU_ERR_NOT_FOUND, "%s: no array '%s'", z->label, key);
}

void nu_npy_to_f64(const nu_npy_array *a, double *out) {
    size_t n = 1;
    for (int k = 0; k < a->ndim; k++) n *= (size_t)a->ne[k];
    const uint8_t *p = a->data;
    for (size_t i = 0; i < n; i++) {
        switch (a->type) {
        case NU_TYPE_F64: memcpy(&out[i], p + 8 * i, 8); break;
        case NU_TYPE_F32: { float v; memcpy(&v, p + 4 * i, 4); out[i] = v; } break;
        case NU_TYPE_F16: { uint16_t v; memcpy(&v, p + 2 * i, 2); out[i] = nu_f16_to_f32(v); } break;
        case NU_TYPE_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); out[i] = (double)v; } break;
        case NU_TYPE_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); out[i] = v; } break;
        case NU_TYPE_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); out[i] = v; } break;
        case NU_TYPE_I8: out[i] = (int8_t)p[i]; break;
        case NU_TYPE_U8:
        case NU_TYPE_BOOL: out[i] = p[i]; break;
        default: out[i] = 0; break;
        }
    }
}

/* ---------------------------------------------------------------- writer */

static const char *npy_descr(nu_type t, size_t *item) {
    switch (t) {
    case NU_TYPE_F64: *item = 8; return "<f8";
    case NU_TYPE_F32: *item = 4; return "<f4";
    case NU_TYPE_F16: *item = 2; return "<f2";
    case NU_TYPE_I64: *item = 8; return "<i8";
    case NU_TYPE_I32: *item = 4; return "<i4";
    case NU_TYPE_I16: *item = 2; return "<i2";
    case NU_TYPE_I8: *item = 1; return "|i1";
    case NU_TYPE_U8: *item = 1; return "|u1";
    case NU_TYPE_BOOL: *item = 1; return "|b1";
    default: return NULL;
    }
}

static void put16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v) {
    put16(p, v & 0xffffu);
    put16(p + 2, v >> 16);
}

/* numpy format 1.0 header, padded with spaces + '\n' so the data starts at a multiple of 64 */
static size_t npy_header(char *buf, size_t cap, const char *descr, int ndim, const int64_t *ne) {
    char shape[NU_MAX_DIMS * 24 + 4];
    size_t s = 0;
    shape[s++] = '(';
    for (int k = 0; k < ndim; k++)
        s += (size_t)snprintf(shape + s, sizeof shape - s, k ? ", %lld" : "%lld", (long long)ne[k]);
    if (ndim == 1) shape[s++] = ',';
    shape[s++] = ')';
    shape[s] = 0;
    char dict[512];
    int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    size_t total = 10 + (size_t)dl + 1;
    size_t padded = (total + 63) / 64 * 64;
    size_t hlen = padded - 10;
    if (padded > cap) return 0;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    put16((uint8_t *)buf + 8, (uint32_t)hlen);
    memcpy(buf + 10, dict, (size_t)dl);
    memset(buf + 10 + dl, ' ', hlen - (size_t)dl - 1);
    buf[padded - 1] = '\n';
    return padded;
}

nu_status nu_npz_save(const char *path, const nu_npz_item *items, int n) {
    if (!path || (n > 0 && !items) || n < 0 || n > NPZ_MAX_MEMBERS)
        return nu_error(NU_ERR_INVALID_ARG, "nu_npz_save: bad arguments");
    typedef struct { char hdr[640]; size_t hlen, dlen; uint32_t crc; uint64_t off; } ent;
    ent *E = calloc(n ? (size_t)n : 1, sizeof(ent));
    if (!E) return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    nu_status st = NU_OK;
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const nu_npz_item *it = &items[i];
        size_t item = 0;
        const char *descr = npy_descr(it->type, &item);
        size_t klen = it->key ? strlen(it->key) : 0;
        if (!descr || klen == 0 || klen > 1000 || it->ndim < 0 || it->ndim > NU_MAX_DIMS) {
            st = nu_error(NU_ERR_INVALID_ARG, "%s: array %d ('%s'): bad key, dtype or rank", path, i,
                          it->key ? it->key : "");
            goto out;
        }
        for (int k = 0; k < i; k++)
            if (!strcmp(items[k].key, it->key)) {
                st = nu_error(NU_ERR_INVALID_ARG, "%s: key '%s' given twice", path, it->key);
                goto out;
            }
        uint64_t count = 1;
        for (int k = 0; k < it->ndim; k++) {
            if (it->ne[k] < 0 || (it->ne[k] && count > (1ull << 40) / (uint64_t)it->ne[k])) {
                st = nu_error(NU_ERR_INVALID_ARG, "%s: array '%s': bad shape", path, it->key);
                goto out;
            }
            count *= (uint64_t)it->ne[k];
        }
        E[i].hlen = npy_header(E[i].hdr, sizeof E[i].hdr, descr, it->ndim, it->ne);
        E[i].dlen = (size_t)(count * item);
        if (E[i].dlen && !it->data) {
            st = nu_error(NU_ERR_INVALID_ARG, "%s: array '%s' has no data", path, it->key);
            goto out;
        }
        uint64_t usize = E[i].hlen + E[i].dlen;
        E[i].off = off;
        off += 30 + klen + 4 + usize;
        if (usize >= 0xffffffffu || off >= 0xffffffffu) {
            st = nu_error(NU_ERR_UNSUPPORTED, "%s: array '%s' makes the archive exceed 4 GiB (ZIP64 not written)",
                          path, it->key);
            goto out;
        }
        uLong crc = crc32(0L, Z_NULL, 0);
        crc = crc32(crc, (const Bytef *)E[i].hdr, (uInt)E[i].hlen);
        for (size_t o = 0; o < E[i].dlen;) {
            uInt c = E[i].dlen - o > 0x40000000u ? 0x40000000u : (uInt)(E[i].dlen - o);
            crc = crc32(crc, (const Bytef *)it->data + o, c);
            o += c;
        }
        E[i].crc = (uint32_t)crc;
    }
    nu_atomic_file f;
    if ((st = nu_atomic_begin(&f, path)) != NU_OK) goto out;
    bool ok = true;
    /* local headers + data */
    for (int i = 0; i < n && ok; i++) {
        const char *key = items[i].key;
        size_t klen = strlen(key);
        uint8_t h[30] = {0};
        put32(h, 0x04034b50u);
        put16(h + 4, 20);       /* version needed 2.0 */
        put16(h + 12, 0x0021);  /* date 1980-01-01: reproducible files */
        put32(h + 14, E[i].crc);
        put32(h + 18, (uint32_t)(E[i].hlen + E[i].dlen));
        put32(h + 22, (uint32_t)(E[i].hlen + E[i].dlen));
        put16(h + 26, (uint32_t)(klen + 4));
        ok = fwrite(h, 1, 30, f.fp) == 30 && fwrite(key, 1, klen, f.fp) == klen && fwrite(".npy", 1, 4, f.fp) == 4 &&
             fwrite(E[i].hdr, 1, E[i].hlen, f.fp) == E[i].hlen &&
             (E[i].dlen == 0 || fwrite(items[i].data, 1, E[i].dlen, f.fp) == E[i].dlen);
    }
    /* central directory + end record */
    uint64_t cd_off = off, cd_size = 0;
    for (int i = 0; i < n && ok; i++) {
        const char *key = items[i].key;
        size_t klen = strlen(key);
        uint8_t c[46] = {0};
        put32(c, 0x02014b50u);
        put16(c + 4, 20);
        put16(c + 6, 20);
        put16(c + 14, 0x0021);
        put32(c + 16, E[i].crc);
        put32(c + 20, (uint32_t)(E[i].hlen + E[i].dlen));
        put32(c + 24, (uint32_t)(E[i].hlen + E[i].dlen));
        put16(c + 28, (uint32_t)(klen + 4));
        put32(c + 42, (uint32_t)E[i].off);
        ok = fwrite(c, 1, 46, f.fp) == 46 && fwrite(key, 1, klen, f.fp) == klen && fwrite(".npy", 1, 4, f.fp) == 4;
        cd_size += 46 + klen + 4;
    }
    if (ok && (cd_off + cd_size >= 0xffffffffu || n > 0xffff)) {
        ok = false;
        nu_atomic_end(&f, false);
        st = nu_error(NU_ERR_UNSUPPORTED, "%s: archive exceeds 4 GiB or 65535 members (ZIP64 not written)", path);
        goto out;
    }
    if (ok) {
        uint8_t e[22] = {0};
        put32(e, 0x06054b50u);
        put16(e + 8, (uint32_t)n);
        put16(e + 10, (uint32_t)n);
        put32(e + 12, (uint32_t)cd_size);
        put32(e + 16, (uint32_t)cd_off);
        ok = fwrite(e, 1, 22, f.fp) == 22;
    }
    st = nu_atomic_end(&f, ok);
    if (st == NU_OK && !ok) st = nu_error(NU_ERR_IO, "%s: write failed", path);
out:
    free(E);
    return st;
}
