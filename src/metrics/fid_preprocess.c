/*
 * fid_preprocess.c — image -> InceptionV3 input exactly as pytorch-fid v0.3.0 prepares it:
 *   1. Pillow 9.4 Image.convert('RGB') (fid_score.ImagePathDataset), on what nu_image_load gives:
 *      1 channel (L; PNG bit depths 1/2/4 arrive scaled to 0..255 as Pillow's '1' -> 0/255 and
 *      'L;2'/'L;4' unpackers do) -> R = G = B = L; 2 channels (LA) -> L replicated, alpha
 *      dropped; 3 -> as is; 4 (RGBA) -> alpha dropped with no compositing, colour kept even where
 *      alpha = 0. Palette PNGs arrive expanded with tRNS turned into alpha: dropping it gives the
 *      palette colour, as Pillow's P -> RGB (which ignores transparency) does; the same holds for
 *      tRNS on grey and RGB files (Pillow keeps them L / RGB and convert ignores the key).
 *   2. torchvision ToTensor: uint8 / 255 in float32 (a true division, as img.float().div(255)).
 *   3. F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False), no antialias:
 *      per output index i, with scale = (float)in / out (ATen area_pixel_compute_scale),
 *        real = max(scale * (i + 0.5) - 0.5, 0) (in double); i0 = (int)real; i1 = i0 + (i0 < in - 1);
 *        l1 = (float)clamp(real - i0, 0, 1); l0 = 1 - l1
 *      (ATen compute_source_index_and_lambda; a side with in == out is copied exactly), and the
 *      value is (v[y0][x0]*lx0 + v[y0][x1]*lx1)*ly0 + (v[y1][x0]*lx0 + v[y1][x1]*lx1)*ly1, the
 *      order of ATen's CPU loop (width innermost), each a*b + c*d evaluated as fma(a, b, c*d) as
 *      the AVX2 build does. Down-scaling aliases, as upstream.
 *   4. InceptionV3.forward's normalize_input: 2x - 1.
 * Known difference: Pillow 9.4 opens 16-bit greyscale PNGs as mode 'I' and convert('RGB') clips
 * the 16-bit values at 255, while nu_image_load keeps the high byte (docs/metrics.md).
 * Tested by tests/test_inception.c (input_u8 and model_input_crop of every reference image).
 */
#include <stdlib.h>
#include <string.h>

#include "nuance/metrics.h"

static nu_status check_image(const nu_image *img) {
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0)
        return nu_error(NU_ERR_INVALID_ARG, "FID preprocessing: empty image");
    if (img->channels < 1 || img->channels > 4)
        return nu_error(NU_ERR_INVALID_ARG, "FID preprocessing: image has %d channels (1-4 supported)", img->channels);
    return NU_OK;
}

nu_status nu_fid_image_to_rgb(const nu_image *img, nu_image *out) {
    nu_status st = check_image(img);
    if (st != NU_OK) return st;
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_fid_image_to_rgb: NULL output");
    size_t npix = (size_t)img->width * (size_t)img->height;
    uint8_t *px = malloc(npix * 3);
    if (!px) return nu_error(NU_ERR_NOMEM, "FID preprocessing: out of memory for a %dx%d image", img->width, img->height);
    const int ch = img->channels;
    const uint8_t *s = img->pixels;
    for (size_t i = 0; i < npix; i++, s += ch) {
        if (ch <= 2) {
            px[3 * i] = px[3 * i + 1] = px[3 * i + 2] = s[0];
        } else {
            px[3 * i] = s[0];
            px[3 * i + 1] = s[1];
            px[3 * i + 2] = s[2];
        }
    }
    out->width = img->width;
    out->height = img->height;
    out->channels = 3;
    out->pixels = px;
    return NU_OK;
}

/* Source indices and weights of one axis (ATen upsample_bilinear2d, align_corners=False, as the
 * Debian torch 1.13 build computes them, matched bit for bit against its output): the scale is a
 * float, the source coordinate is formed in double (scale * (i + 0.5) - 0.5 promotes to double)
 * and the weight is the double fraction rounded once to float. */
static void axis_coeffs(int in, int out, int *i0, int *i1, float *l0, float *l1) {
    const float scale = (float)in / (float)out;
    for (int i = 0; i < out; i++) {
        if (in == out) {
            i0[i] = i1[i] = i;
            l0[i] = 1.0f;
            l1[i] = 0.0f;
            continue;
        }
        double real = (double)scale * ((double)i + 0.5) - 0.5;
        if (real < 0.0) real = 0.0;
        int a = (int)real;
        if (a > in - 1) a = in - 1;
        double lam = real - (double)a;
        if (lam < 0.0) lam = 0.0;
        if (lam > 1.0) lam = 1.0;
        i0[i] = a;
        i1[i] = a + (a < in - 1 ? 1 : 0);
        l1[i] = (float)lam;
        l0[i] = 1.0f - l1[i];
    }
}

/* a*b + c rounded once to float, as the FMA that ATen's AVX2 build contracts `t0*w0 + t1*w1`
 * into (matched bit for bit against torch 1.13's output: fma(t0, w0, t1*w1)). The product of two
 * floats is exact in double; the double sum then rounds to float (a second rounding that can
 * differ from a true FMA only when the double lands exactly on a float midpoint). */
static inline float fma32(float a, float b, float c) { return (float)((double)a * (double)b + (double)c); }

nu_status nu_fid_preprocess(const nu_image *img, float *out) {
    nu_status st = check_image(img);
    if (st != NU_OK) return st;
    if (!out) return nu_error(NU_ERR_INVALID_ARG, "nu_fid_preprocess: NULL output");
    enum { S = NU_INCEPTION_SIZE };
    int yi0[S], yi1[S], xi0[S], xi1[S];
    float yl0[S], yl1[S], xl0[S], xl1[S];
    axis_coeffs(img->height, S, yi0, yi1, yl0, yl1);
    axis_coeffs(img->width, S, xi0, xi1, xl0, xl1);
    const int ch = img->channels;
    const size_t row = (size_t)img->width * (size_t)ch;
    for (int c = 0; c < 3; c++) {
        /* convert('RGB'): grey (+alpha) replicates channel 0; RGB(A) takes channel c */
        const int sc = ch <= 2 ? 0 : c;
        float *o = out + (size_t)c * S * S;
        for (int y = 0; y < S; y++) {
            const uint8_t *r0 = img->pixels + (size_t)yi0[y] * row + sc;
            const uint8_t *r1 = img->pixels + (size_t)yi1[y] * row + sc;
            const float wy0 = yl0[y], wy1 = yl1[y];
            for (int x = 0; x < S; x++) {
                const size_t a = (size_t)xi0[x] * (size_t)ch, b = (size_t)xi1[x] * (size_t)ch;
                /* ToTensor: uint8 / 255 in float32 */
                const float v00 = (float)r0[a] / 255.0f, v01 = (float)r0[b] / 255.0f;
                const float v10 = (float)r1[a] / 255.0f, v11 = (float)r1[b] / 255.0f;
                const float t0 = fma32(v00, xl0[x], v01 * xl1[x]);
                const float t1 = fma32(v10, xl0[x], v11 * xl1[x]);
                const float v = fma32(t0, wy0, t1 * wy1);
                o[(size_t)y * S + x] = 2.0f * v - 1.0f;
            }
        }
    }
    return NU_OK;
}
