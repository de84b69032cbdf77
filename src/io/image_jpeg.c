/*
 * image_jpeg.c — JPEG decode / encode through libjpeg(-turbo).
 *
 * Errors: a custom error manager formats libjpeg's message and longjmps back (libjpeg's default
 * would print and exit); warnings are ignored (the library never prints). Input comes from our
 * own memory source, which treats running out of data as an error ("truncated JPEG data") rather
 * than inserting a fake EOI and returning a grey-filled image. Guards against hostile files:
 * 16384 px per side / 2^28 pixels checked after the header and before any pixel allocation,
 * libjpeg's own working memory capped (max_memory_to_use, honoured by libjpeg-turbo's jmemnobs),
 * and at most NU_JPEG_MAX_SCANS progressive scans (each scan re-walks the whole image).
 *
 * Output: grayscale -> 1 channel; YCbCr/RGB -> 3; CMYK/YCCK -> converted to RGB with the naive
 * formula R = (1-C)(1-K) (Adobe files store inverted CMYK; we follow the APP14 marker as PIL does).
 * No EXIF orientation is applied. Encoding writes gray (1-2 channels) or RGB (3-4 channels): alpha
 * is dropped, not composited. Quality >= 90 uses 4:4:4 chroma, lower 4:2:0; Huffman tables are
 * optimised. Tested by tests/test_image.c (PSNR round trip, gray, CMYK, truncation, byte flips);
 * fuzzed by fuzz/fuzz_image.c.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#include "io/image_internal.h"

#define NU_JPEG_MAX_SCANS 200
/* libjpeg's working memory (coefficient buffers of progressive files: 2 bytes per sample).
 * 1 GiB covers a 2^28-pixel progressive 4:2:0 image (3 bytes/pixel = 768 MiB). */
#define NU_JPEG_MEM_MAX (1024L * 1024 * 1024)

/* Error manager shared by decoder and encoder: libjpeg hands back the jpeg_error_mgr pointer,
 * which is the first member here. */
typedef struct jpeg_err {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr c) {
    jpeg_err *e = (jpeg_err *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

static void jpeg_on_emit(j_common_ptr c, int level) {
    (void)c;
    (void)level; /* warnings and trace messages: ignored (corrupt-data warnings are recoverable) */
}

static void jpeg_on_output(j_common_ptr c) { (void)c; }

static struct jpeg_error_mgr *jpeg_err_init(jpeg_err *e) {
    jpeg_std_error(&e->pub);
    e->pub.error_exit = jpeg_on_error;
    e->pub.emit_message = jpeg_on_emit;
    e->pub.output_message = jpeg_on_output;
    return &e->pub;
}

/* ---------------------------------------------------------------- decoding */

typedef struct jpeg_job {
    jpeg_err err;
    struct jpeg_decompress_struct d;
    struct jpeg_source_mgr src;
    struct jpeg_progress_mgr progress;
    bool truncated, too_many_scans;
    nu_status st; /* our own error (dimensions, colour space, memory) */
    int width, height, channels;
    uint8_t *pixels;
    uint8_t *cmyk_row;
} jpeg_job;

static void src_init(j_decompress_ptr d) { (void)d; }

static boolean src_fill(j_decompress_ptr d) {
    jpeg_job *j = d->client_data;
    j->truncated = true;
    ERREXIT(d, JERR_INPUT_EOF);
    return FALSE;
}

static void src_skip(j_decompress_ptr d, long n) {
    if (n <= 0) return;
    if ((size_t)n > d->src->bytes_in_buffer) src_fill(d);
    d->src->next_input_byte += n;
    d->src->bytes_in_buffer -= (size_t)n;
}

static void src_term(j_decompress_ptr d) { (void)d; }

static void jpeg_on_progress(j_common_ptr c) {
    if (!c->is_decompressor) return;
    j_decompress_ptr d = (j_decompress_ptr)c;
    jpeg_job *j = d->client_data;
    if (d->input_scan_number > NU_JPEG_MAX_SCANS) {
        j->too_many_scans = true;
        ERREXIT(c, JERR_NOT_COMPILED); /* message replaced by the caller */
    }
}

static uint8_t mul255(unsigned a, unsigned b) { return (uint8_t)((a * b + 127) / 255); }

/* Returns 0 on success, -1 after a libjpeg error (j->msg), 1 after our own error (j->st). */
static int jpeg_run(jpeg_job *j, const uint8_t *data, size_t size) {
    if (setjmp(j->err.jb)) return -1;
    j_decompress_ptr d = &j->d;
    jpeg_create_decompress(d);
    d->client_data = j;
    d->mem->max_memory_to_use = NU_JPEG_MEM_MAX;
    j->src.init_source = src_init;
    j->src.fill_input_buffer = src_fill;
    j->src.skip_input_data = src_skip;
    j->src.resync_to_restart = jpeg_resync_to_restart;
    j->src.term_source = src_term;
    j->src.next_input_byte = data;
    j->src.bytes_in_buffer = size;
    d->src = &j->src;
    j->progress.progress_monitor = jpeg_on_progress;
    d->progress = &j->progress;

    jpeg_read_header(d, TRUE);
    j->width = (int)(d->image_width < 1u << 30 ? d->image_width : 1u << 30);
    j->height = (int)(d->image_height < 1u << 30 ? d->image_height : 1u << 30);
    if ((j->st = nu_image_check_dims("", "JPEG", d->image_width, d->image_height)) != NU_OK) return 1;
    bool cmyk = false;
    switch (d->jpeg_color_space) {
    case JCS_GRAYSCALE:
        d->out_color_space = JCS_GRAYSCALE;
        j->channels = 1;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        d->out_color_space = JCS_RGB;
        j->channels = 3;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        d->out_color_space = JCS_CMYK;
        j->channels = 3;
        cmyk = true;
        break;
    default:
        j->st = NU_ERR_UNSUPPORTED;
        j->channels = d->num_components;
        return 1;
    }
    jpeg_start_decompress(d);
    if (d->output_width != d->image_width || d->output_height != d->image_height ||
        d->output_components != (cmyk ? 4 : j->channels))
        ERREXIT(d, JERR_BAD_LIB_VERSION); /* cannot happen with scale 1/1; message replaced */
    size_t stride = (size_t)j->width * (size_t)j->channels;
    j->pixels = malloc(stride * (size_t)j->height);
    if (cmyk) j->cmyk_row = malloc((size_t)j->width * 4);
    if (!j->pixels || (cmyk && !j->cmyk_row)) {
        j->st = NU_ERR_NOMEM;
        return 1;
    }
    bool inverted = d->saw_Adobe_marker; /* Adobe (Photoshop) CMYK is stored inverted */
    while (d->output_scanline < d->output_height) {
        uint8_t *dst = j->pixels + (size_t)d->output_scanline * stride;
        JSAMPROW row = cmyk ? j->cmyk_row : dst;
        if (jpeg_read_scanlines(d, &row, 1) != 1) ERREXIT(d, JERR_INPUT_EOF);
        if (cmyk) {
            for (int x = 0; x < j->width; x++) {
                const uint8_t *s = j->cmyk_row + 4 * (size_t)x;
                unsigned c = s[0], m = s[1], y = s[2], k = s[3];
                if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
                dst[3 * x + 0] = mul255(c, k);
                dst[3 * x + 1] = mul255(m, k);
                dst[3 * x + 2] = mul255(y, k);
            }
        }
    }
    jpeg_finish_decompress(d);
    return 0;
}

nu_status nu_image_jpeg_decode(const uint8_t *data, size_t size, const char *label, nu_image *out) {
    memset(out, 0, sizeof *out);
    jpeg_job *j = calloc(1, sizeof *j);
    if (!j) return nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
    j->d.err = jpeg_err_init(&j->err);
    int rc = jpeg_run(j, data, size);
    nu_status st = NU_OK;
    if (rc == -1 && j->truncated) st = nu_error(NU_ERR_FORMAT, "%s: truncated JPEG data", label);
    else if (rc == -1 && j->too_many_scans)
        st = nu_error(NU_ERR_FORMAT, "%s: JPEG has more than %d progressive scans", label, NU_JPEG_MAX_SCANS);
    else if (rc == -1 && j->err.pub.msg_code == JERR_BAD_PRECISION)
        st = nu_error(NU_ERR_UNSUPPORTED, "%s: only 8-bit JPEG is supported (libjpeg: %s)", label, j->err.msg);
    else if (rc == -1) st = nu_error(NU_ERR_FORMAT, "%s: corrupt JPEG data (libjpeg: %s)", label, j->err.msg);
    else if (rc == 1 && j->st == NU_ERR_NOMEM)
        st = nu_error(NU_ERR_NOMEM, "%s: out of memory for a %dx%d JPEG", label, j->width, j->height);
    else if (rc == 1 && j->st == NU_ERR_UNSUPPORTED && j->channels > 0)
        st = nu_error(NU_ERR_UNSUPPORTED, "%s: JPEG colour space with %d components is not supported", label,
                      j->channels);
    else if (rc == 1) st = nu_image_check_dims(label, "JPEG", (uint64_t)j->width, (uint64_t)j->height);
    if (rc == 1 && st == NU_OK) st = nu_error(NU_ERR_FORMAT, "%s: bad JPEG header", label);
    jpeg_destroy_decompress(&j->d);
    free(j->cmyk_row);
    if (st == NU_OK) {
        out->width = j->width;
        out->height = j->height;
        out->channels = j->channels;
        out->pixels = j->pixels;
    } else
        free(j->pixels);
    free(j);
    return st;
}

/* ---------------------------------------------------------------- encoding */

typedef struct jpeg_wjob {
    jpeg_err err;
    struct jpeg_compress_struct c;
    struct jpeg_destination_mgr dest;
    nu_image_buf *out;
    bool oom;
    uint8_t *row;
} jpeg_wjob;

/* Makes room for at least 64 KiB more output; false when out of memory. */
static bool dest_grow(nu_image_buf *b) {
    size_t want = b->size + (b->size / 2 > 65536 ? b->size / 2 : 65536);
    if (want <= b->cap) return true;
    uint8_t *d = realloc(b->data, want);
    if (!d) return false;
    b->data = d;
    b->cap = want;
    return true;
}

static void dest_init(j_compress_ptr c) {
    jpeg_wjob *j = c->client_data;
    if (!dest_grow(j->out)) {
        j->oom = true;
        ERREXIT(c, JERR_OUT_OF_MEMORY);
    }
    j->dest.next_output_byte = j->out->data + j->out->size;
    j->dest.free_in_buffer = j->out->cap - j->out->size;
}

static boolean dest_empty(j_compress_ptr c) {
    jpeg_wjob *j = c->client_data;
    j->out->size = j->out->cap; /* libjpeg filled the whole buffer */
    dest_init(c);
    return TRUE;
}

static void dest_term(j_compress_ptr c) {
    jpeg_wjob *j = c->client_data;
    j->out->size = j->out->cap - j->dest.free_in_buffer;
}

static int jpeg_wrun(jpeg_wjob *j, const nu_image *img, int quality) {
    if (setjmp(j->err.jb)) return -1;
    j_compress_ptr c = &j->c;
    jpeg_create_compress(c);
    c->client_data = j;
    j->dest.init_destination = dest_init;
    j->dest.empty_output_buffer = dest_empty;
    j->dest.term_destination = dest_term;
    c->dest = &j->dest;
    bool gray = img->channels <= 2;
    c->image_width = (JDIMENSION)img->width;
    c->image_height = (JDIMENSION)img->height;
    c->input_components = gray ? 1 : 3;
    c->in_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(c);
    jpeg_set_quality(c, quality, TRUE);
    c->optimize_coding = TRUE;
    if (!gray && quality >= 90) c->comp_info[0].h_samp_factor = c->comp_info[0].v_samp_factor = 1; /* 4:4:4 */
    bool pack = img->channels == 2 || img->channels == 4;
    if (pack) {
        j->row = malloc((size_t)img->width * (size_t)c->input_components);
        if (!j->row) {
            j->oom = true;
            ERREXIT(c, JERR_OUT_OF_MEMORY);
        }
    }
    jpeg_start_compress(c, TRUE);
    size_t stride = (size_t)img->width * (size_t)img->channels;
    while (c->next_scanline < c->image_height) {
        const uint8_t *src = img->pixels + (size_t)c->next_scanline * stride;
        JSAMPROW row;
        if (pack) { /* drop alpha */
            int ci = c->input_components, ch = img->channels;
            for (int x = 0; x < img->width; x++)
                for (int k = 0; k < ci; k++) j->row[x * ci + k] = src[(size_t)x * (size_t)ch + (size_t)k];
            row = j->row;
        } else
            row = (JSAMPROW)(uintptr_t)src; /* libjpeg only reads input rows */
        jpeg_write_scanlines(c, &row, 1);
    }
    jpeg_finish_compress(c);
    return 0;
}

nu_status nu_image_jpeg_encode(const nu_image *img, int quality, const char *label, nu_image_buf *out) {
    jpeg_wjob *j = calloc(1, sizeof *j);
    if (!j) return nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
    j->out = out;
    j->c.err = jpeg_err_init(&j->err);
    int rc = jpeg_wrun(j, img, quality);
    nu_status st = NU_OK;
    if (rc != 0 && j->oom) st = nu_error(NU_ERR_NOMEM, "%s: out of memory encoding JPEG", label);
    else if (rc != 0) st = nu_error(NU_ERR_INVALID_ARG, "%s: cannot encode JPEG (libjpeg: %s)", label, j->err.msg);
    jpeg_destroy_compress(&j->c);
    free(j->row);
    free(j);
    return st;
}
