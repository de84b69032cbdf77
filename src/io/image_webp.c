/*
 * image_webp.c — WebP decode / encode through libwebp (only when CMake found it: NU_HAVE_WEBP).
 *
 * Decoding gives RGB, or RGBA when the file has alpha; animated WebP is refused (unsupported).
 * Dimensions are checked from the bitstream header before the pixel buffer is allocated.
 * Encoding: quality 100 is lossless with exact RGB under transparent pixels (a bit-exact round
 * trip), anything lower is lossy VP8 at that quality (alpha kept losslessly, sharp RGB->YUV).
 * Gray and gray+alpha inputs are expanded to RGB / RGBA (WebP has no gray mode). Without libwebp
 * every call returns NU_ERR_UNSUPPORTED. Tested by tests/test_image.c (lossless exact, lossy
 * PSNR, truncation, byte flips); fuzzed by fuzz/fuzz_image.c.
 */
#include <stdlib.h>
#include <string.h>

#include "io/image_internal.h"

#ifdef NU_HAVE_WEBP

#include <webp/decode.h>
#include <webp/encode.h>

#define NU_WEBP_MAX_SIDE 16383 /* format limit (14-bit sizes) */

static const char *vp8_status_name(VP8StatusCode s) {
    switch (s) {
    case VP8_STATUS_OK: return "ok";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data";
    }
    return "unknown status";
}

static nu_status webp_status_error(VP8StatusCode s, const char *label) {
    if (s == VP8_STATUS_NOT_ENOUGH_DATA) return nu_error(NU_ERR_FORMAT, "%s: truncated WebP data", label);
    if (s == VP8_STATUS_OUT_OF_MEMORY) return nu_error(NU_ERR_NOMEM, "%s: out of memory decoding WebP", label);
    if (s == VP8_STATUS_UNSUPPORTED_FEATURE)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: unsupported WebP feature (libwebp: %s)", label, vp8_status_name(s));
    return nu_error(NU_ERR_FORMAT, "%s: corrupt WebP data (libwebp: %s)", label, vp8_status_name(s));
}

nu_status nu_image_webp_decode(const uint8_t *data, size_t size, const char *label, nu_image *out) {
    memset(out, 0, sizeof *out);
    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg)) return nu_error(NU_ERR_UNSUPPORTED, "%s: libwebp version mismatch", label);
    VP8StatusCode s = WebPGetFeatures(data, size, &cfg.input);
    if (s != VP8_STATUS_OK) return webp_status_error(s, label);
    if (cfg.input.has_animation)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: animated WebP is not supported (extract a frame first)", label);
    int w = cfg.input.width, h = cfg.input.height, ch = cfg.input.has_alpha ? 4 : 3;
    if (w <= 0 || h <= 0) return nu_error(NU_ERR_FORMAT, "%s: WebP image has a bad size %dx%d", label, w, h);
    nu_status st = nu_image_check_dims(label, "WebP", (uint64_t)w, (uint64_t)h);
    if (st != NU_OK) return st;
    size_t stride = (size_t)w * (size_t)ch, bytes = stride * (size_t)h;
    uint8_t *px = malloc(bytes);
    if (!px) return nu_error(NU_ERR_NOMEM, "%s: out of memory for a %dx%d WebP", label, w, h);
    cfg.output.colorspace = ch == 4 ? MODE_RGBA : MODE_RGB;
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba = px;
    cfg.output.u.RGBA.stride = (int)stride;
    cfg.output.u.RGBA.size = bytes;
    s = WebPDecode(data, size, &cfg);
    WebPFreeDecBuffer(&cfg.output); /* no-op for external memory, but keeps the contract */
    if (s != VP8_STATUS_OK) {
        free(px);
        return webp_status_error(s, label);
    }
    out->width = w;
    out->height = h;
    out->channels = ch;
    out->pixels = px;
    return NU_OK;
}

static const char *enc_error_name(WebPEncodingError e) {
    switch (e) {
    case VP8_ENC_OK: return "ok";
    case VP8_ENC_ERROR_OUT_OF_MEMORY:
    case VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY: return "out of memory";
    case VP8_ENC_ERROR_BAD_DIMENSION: return "bad dimension";
    case VP8_ENC_ERROR_PARTITION0_OVERFLOW:
    case VP8_ENC_ERROR_PARTITION_OVERFLOW: return "partition overflow (try a lower quality)";
    case VP8_ENC_ERROR_FILE_TOO_BIG: return "file too big";
    default: return "encoder error";
    }
}

nu_status nu_image_webp_encode(const nu_image *img, int quality, const char *label, nu_image_buf *out) {
    if (img->width > NU_WEBP_MAX_SIDE || img->height > NU_WEBP_MAX_SIDE)
        return nu_error(NU_ERR_UNSUPPORTED, "%s: WebP images are limited to %d px per side (image is %dx%d)", label,
                        NU_WEBP_MAX_SIDE, img->width, img->height);
    WebPConfig cfg;
    WebPPicture pic;
    if (!WebPConfigInit(&cfg) || !WebPPictureInit(&pic))
        return nu_error(NU_ERR_UNSUPPORTED, "%s: libwebp version mismatch", label);
    bool lossless = quality >= 100;
    cfg.lossless = lossless;
    cfg.exact = lossless;        /* keep RGB under alpha = 0 so the round trip is exact */
    cfg.quality = lossless ? 75.0f : (float)quality; /* lossless: effort; lossy: quality */
    cfg.method = 4;
    cfg.use_sharp_yuv = !lossless;
    pic.use_argb = lossless;
    pic.width = img->width;
    pic.height = img->height;

    /* WebP has no gray mode: expand 1/2 channels to RGB/RGBA. */
    int ch = img->channels;
    const uint8_t *src = img->pixels;
    uint8_t *expanded = NULL;
    if (ch <= 2) {
        int och = ch == 1 ? 3 : 4;
        size_t n = (size_t)img->width * (size_t)img->height;
        expanded = malloc(n * (size_t)och);
        if (!expanded) return nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
        for (size_t i = 0; i < n; i++) {
            uint8_t g = src[i * (size_t)ch];
            expanded[i * och + 0] = expanded[i * och + 1] = expanded[i * och + 2] = g;
            if (och == 4) expanded[i * och + 3] = src[i * (size_t)ch + 1];
        }
        src = expanded;
        ch = och;
    }
    int ok = ch == 4 ? WebPPictureImportRGBA(&pic, src, img->width * 4)
                     : WebPPictureImportRGB(&pic, src, img->width * 3);
    free(expanded);
    if (!ok) {
        WebPPictureFree(&pic);
        return nu_error(NU_ERR_NOMEM, "%s: out of memory importing pixels into libwebp", label);
    }
    WebPMemoryWriter mw;
    WebPMemoryWriterInit(&mw);
    pic.writer = WebPMemoryWrite;
    pic.custom_ptr = &mw;
    ok = WebPEncode(&cfg, &pic);
    WebPEncodingError err = pic.error_code;
    WebPPictureFree(&pic);
    nu_status st = NU_OK;
    if (!ok)
        st = nu_error(err == VP8_ENC_ERROR_OUT_OF_MEMORY || err == VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY
                          ? NU_ERR_NOMEM
                          : NU_ERR_INVALID_ARG,
                      "%s: cannot encode WebP (libwebp: %s)", label, enc_error_name(err));
    else if (!nu_image_buf_append(out, mw.mem, mw.size))
        st = nu_error(NU_ERR_NOMEM, "%s: out of memory", label);
    WebPMemoryWriterClear(&mw);
    return st;
}

#else /* !NU_HAVE_WEBP */

nu_status nu_image_webp_decode(const uint8_t *data, size_t size, const char *label, nu_image *out) {
    (void)data;
    (void)size;
    memset(out, 0, sizeof *out);
    return nu_error(NU_ERR_UNSUPPORTED, "%s: WebP support is not compiled in (install libwebp-dev and rebuild)",
                    label);
}

nu_status nu_image_webp_encode(const nu_image *img, int quality, const char *label, nu_image_buf *out) {
    (void)img;
    (void)quality;
    (void)out;
    return nu_error(NU_ERR_UNSUPPORTED, "%s: WebP support is not compiled in (install libwebp-dev and rebuild)",
                    label);
}

#endif
