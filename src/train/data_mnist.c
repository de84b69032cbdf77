/*
 * data_mnist.c — the MNIST idx format (as shipped by Debian's dataset-fashion-mnist in
 * /usr/share/datasets/fashion-mnist, plain or gzip'ed).
 *
 * idx (LeCun's MNIST page): bytes 0-1 zero, byte 2 the element type (0x08 = unsigned byte, the
 * only one MNIST uses and the only one read here), byte 3 the number of dimensions, then one
 * big-endian u32 per dimension, then the data, row-major. Images are [n, h, w] (idx3), labels
 * [n] (idx1). Every size is checked against the (decompressed) file length before use; gzip
 * input is inflated by zlib with a 2 GiB cap.
 *
 * Tested by tests/test_data.c (hand-written plain and gzip files, malformed headers, truncation,
 * and the real Fashion-MNIST t10k set when installed).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "nuance/io.h"
#include "train/train_internal.h"

#define IDX_MAX_BYTES ((size_t)2 << 30)

static bool is_file(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISREG(s.st_mode);
}

/* Reads a whole file, gunzipping when it starts with the gzip magic. */
static nu_status read_maybe_gz(const char *path, uint8_t **out, size_t *out_n) {
    *out = NULL;
    *out_n = 0;
    nu_file_map m;
    nu_status st = nu_file_map_open(path, &m);
    if (st != NU_OK) return st;
    if (m.size < 2 || m.data[0] != 0x1f || m.data[1] != 0x8b) {
        uint8_t *b = malloc(m.size ? m.size : 1);
        if (!b) {
            nu_file_map_close(&m);
            return nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
        }
        memcpy(b, m.data, m.size);
        *out = b;
        *out_n = m.size;
        nu_file_map_close(&m);
        return NU_OK;
    }
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
        nu_file_map_close(&m);
        return nu_error(NU_ERR_NOMEM, "%s: cannot start gzip decompression", path);
    }
    /* the gzip trailer's ISIZE (size mod 2^32) is a good first guess */
    size_t cap = 1 << 16;
    if (m.size >= 18) {
        const uint8_t *e = m.data + m.size - 4;
        size_t isz = (size_t)e[0] | (size_t)e[1] << 8 | (size_t)e[2] << 16 | (size_t)e[3] << 24;
        if (isz > cap && isz <= IDX_MAX_BYTES) cap = isz;
    }
    uint8_t *buf = malloc(cap);
    size_t len = 0;
    z.next_in = (Bytef *)m.data;
    size_t in_left = m.size;
    st = buf ? NU_OK : nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
    while (st == NU_OK) {
        if (len == cap) {
            if (cap >= IDX_MAX_BYTES) {
                st = nu_error(NU_ERR_UNSUPPORTED, "%s: decompresses to more than %zu MiB", path, IDX_MAX_BYTES >> 20);
                break;
            }
            size_t nc = cap * 2 > IDX_MAX_BYTES ? IDX_MAX_BYTES : cap * 2;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) {
                st = nu_error(NU_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = nb;
            cap = nc;
        }
        uInt in_chunk = in_left > (1u << 30) ? (1u << 30) : (uInt)in_left;
        size_t out_room = cap - len;
        uInt out_chunk = out_room > (1u << 30) ? (1u << 30) : (uInt)out_room;
        z.avail_in = in_chunk;
        z.next_out = buf + len;
        z.avail_out = out_chunk;
        int rc = inflate(&z, Z_NO_FLUSH);
        in_left -= in_chunk - z.avail_in;
        len += out_chunk - z.avail_out;
        if (rc == Z_STREAM_END) {
            /* concatenated gzip members continue; trailing zeros end the file */
            if (in_left == 0 || z.next_in[0] != 0x1f) break;
            inflateReset(&z);
            continue;
        }
        if (rc == Z_BUF_ERROR && z.avail_out > 0) {
            st = nu_error(NU_ERR_FORMAT, "%s: gzip data is truncated", path);
            break;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            st = nu_error(NU_ERR_FORMAT, "%s: corrupt gzip data (%s)", path, z.msg ? z.msg : "inflate error");
            break;
        }
    }
    inflateEnd(&z);
    nu_file_map_close(&m);
    if (st != NU_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    *out_n = len;
    return NU_OK;
}

nu_status nu_idx_parse(const uint8_t *buf, size_t size, const char *label, int want_ndim, int64_t *dims,
                       const uint8_t **data) {
    if (size < 4) return nu_error(NU_ERR_FORMAT, "%s: too short for an idx header (%zu bytes)", label, size);
    if (buf[0] != 0 || buf[1] != 0)
        return nu_error(NU_ERR_FORMAT, "%s: not an idx file (magic %02x %02x %02x %02x)", label, buf[0], buf[1], buf[2],
                        buf[3]);
    if (buf[2] != 0x08)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: idx element type 0x%02x (only unsigned bytes, 0x08, are read)", label,
                        buf[2]);
    int nd = buf[3];
    if (nd != want_ndim)
        return nu_error(NU_ERR_FORMAT, "%s: idx file has %d dimensions, expected %d (%s)", label, nd, want_ndim,
                        want_ndim == 3 ? "images: count, rows, columns" : "labels: count");
    if (size < 4 + 4 * (size_t)nd) return nu_error(NU_ERR_FORMAT, "%s: idx header is truncated", label);
    uint64_t total = 1;
    for (int d = 0; d < nd; d++) {
        const uint8_t *p = buf + 4 + 4 * d;
        uint32_t v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (d > 0 && (v == 0 || v > 16384))
            return nu_error(NU_ERR_FORMAT, "%s: idx dimension %d is %u (images must be 1..16384 a side)", label, d, v);
        dims[d] = v;
        total *= v;
        if (total > IDX_MAX_BYTES) return nu_error(NU_ERR_UNSUPPORTED, "%s: idx data over %zu MiB", label, IDX_MAX_BYTES >> 20);
    }
    size_t have = size - 4 - 4 * (size_t)nd;
    if (have < total)
        return nu_error(NU_ERR_FORMAT, "%s: idx data is truncated: header says %llu bytes, file holds %zu", label,
                        (unsigned long long)total, have);
    if (have > total)
        return nu_error(NU_ERR_FORMAT, "%s: %zu bytes after the idx data the header describes", label,
                        have - (size_t)total);
    *data = buf + 4 + 4 * (size_t)nd;
    return NU_OK;
}

/* "<dir>/<split><mid><suffix>" for the first existing combination, or NULL. */
static char *find_in_dir(const char *dir, const char *split, const char *const *mids, int n_mids) {
    static const char *const sufs[] = {"", ".gz"};
    for (int i = 0; i < n_mids; i++)
        for (int s = 0; s < 2; s++) {
            size_t n = strlen(dir) + strlen(split) + strlen(mids[i]) + 8;
            char *p = malloc(n);
            if (!p) return NULL;
            snprintf(p, n, "%s/%s%s%s", dir, split, mids[i], sufs[s]);
            if (is_file(p)) return p;
            free(p);
        }
    return NULL;
}

/* Labels file beside an images file: "images-idx3" / "images.idx3" -> "labels-idx1" / "labels.idx1",
 * with or without ".gz". NULL if none exists. */
static char *labels_beside(const char *images) {
    const char *pairs[][2] = {{"images-idx3-ubyte", "labels-idx1-ubyte"}, {"images.idx3-ubyte", "labels.idx1-ubyte"}};
    for (int k = 0; k < 2; k++) {
        const char *at = strstr(images, pairs[k][0]);
        if (!at) continue;
        size_t pre = (size_t)(at - images);
        for (int gz = 0; gz < 2; gz++) {
            size_t n = pre + strlen(pairs[k][1]) + 4;
            char *p = malloc(n);
            if (!p) return NULL;
            memcpy(p, images, pre);
            snprintf(p + pre, n - pre, "%s%s", pairs[k][1], gz ? ".gz" : "");
            if (is_file(p)) return p;
            free(p);
        }
    }
    return NULL;
}

void nu_idx_free(nu_idx_data *d) {
    if (!d) return;
    free(d->pixels);
    free(d->labels);
    free(d->images_path);
    free(d->labels_path);
    memset(d, 0, sizeof *d);
}

nu_status nu_idx_load(const char *path, const char *split, nu_idx_data *out, bool *is_idx) {
    memset(out, 0, sizeof *out);
    *is_idx = false;
    struct stat sb;
    if (stat(path, &sb) != 0) return nu_error(NU_ERR_NOT_FOUND, "dataset '%s' does not exist", path);
    char *images = NULL;
    if (S_ISDIR(sb.st_mode)) {
        static const char *const mids[] = {"-images-idx3-ubyte", "-images.idx3-ubyte"};
        images = find_in_dir(path, split && *split ? split : "train", mids, 2);
        if (!images) return NU_ERR_NOT_FOUND; /* not an idx folder: no message, the caller goes on */
    } else {
        if (!strstr(path, "idx3-ubyte")) return NU_ERR_NOT_FOUND;
        images = strdup(path);
        if (!images) return nu_error(NU_ERR_NOMEM, "out of memory");
    }
    *is_idx = true;
    out->images_path = images;
    uint8_t *buf = NULL;
    size_t size = 0;
    nu_status st = read_maybe_gz(images, &buf, &size);
    int64_t dims[3];
    const uint8_t *data;
    if (st == NU_OK) st = nu_idx_parse(buf, size, images, 3, dims, &data);
    if (st == NU_OK && dims[0] == 0) st = nu_error(NU_ERR_INVALID_ARG, "%s: holds no images", images);
    if (st == NU_OK) {
        out->n = dims[0];
        out->h = (int)dims[1];
        out->w = (int)dims[2];
        size_t nb = (size_t)(dims[0] * dims[1] * dims[2]);
        out->pixels = malloc(nb);
        if (!out->pixels) st = nu_error(NU_ERR_NOMEM, "%s: out of memory", images);
        else memcpy(out->pixels, data, nb);
    }
    free(buf);
    if (st != NU_OK) {
        nu_idx_free(out);
        return st;
    }
    out->labels_path = labels_beside(images);
    if (!out->labels_path) {
        nu_log(NU_LOG_WARN, "%s: no labels file beside it (\"...labels-idx1-ubyte[.gz]\"): the data is unlabeled", images);
        return NU_OK;
    }
    st = read_maybe_gz(out->labels_path, &buf, &size);
    int64_t ld[1];
    if (st == NU_OK) st = nu_idx_parse(buf, size, out->labels_path, 1, ld, &data);
    if (st == NU_OK && ld[0] != out->n)
        st = nu_error(NU_ERR_FORMAT, "%s: %lld labels for %lld images in %s", out->labels_path, (long long)ld[0],
                      (long long)out->n, images);
    if (st == NU_OK) {
        out->labels = malloc((size_t)out->n);
        if (!out->labels) st = nu_error(NU_ERR_NOMEM, "%s: out of memory", out->labels_path);
        else memcpy(out->labels, data, (size_t)out->n);
    }
    free(buf);
    if (st != NU_OK) nu_idx_free(out);
    return st;
}
