/*
 * weights.h — a named set of model weights, read from safetensors or GGUF files (mmapped, no
 * copy), keyed by canonical names. Name dialects (LDM single files, diffusers folders, GGUF from
 * other engines) are mapped to the canonical names by data tables through nu_weights_rename, in
 * one place per model family. Optional conversion at load (--type f16|q8_0|...) applies to
 * matrix weights only, converted one tensor at a time (no full-model f32 copy).
 * Tested by tests/test_nn.c.
 */
#ifndef NU_NN_WEIGHTS_H
#define NU_NN_WEIGHTS_H

#include "nuance/io.h"
#include "nuance/tensor.h"

typedef struct nu_weights nu_weights;

nu_weights *nu_weights_new(void);
void nu_weights_free(nu_weights *w);
/* Adds every tensor of a .safetensors or .gguf file (detected by content). Tensor names may be
 * filtered by a prefix, which is stripped (prefix NULL or "": all). Later files do not replace
 * earlier names: a duplicate is an error. The file stays mapped until nu_weights_free. */
nu_status nu_weights_add_file(nu_weights *w, const char *path, const char *prefix);
/* Adds an in-memory tensor under `name` (data must outlive the store; e.g. random weights for
 * benchmarks). False if the name exists. */
bool nu_weights_add_tensor(nu_weights *w, const char *name, nu_tensor *t);
/* Renames a tensor (a dialect mapping); returns false if `from` is absent. */
bool nu_weights_rename(nu_weights *w, const char *from, const char *to);
/* Adds `name` as rows [start, start+n) of tensor `src` along its first dimension, sharing the
 * data (e.g. OpenCLIP's fused attn.in_proj_weight [3D, D] -> q/k/v [D, D]). False if src is
 * absent or too small. */
bool nu_weights_add_slice(nu_weights *w, const char *name, const char *src, int64_t start, int64_t n);
int nu_weights_count(const nu_weights *w);
const char *nu_weights_name_at(const nu_weights *w, int i);
/* The tensor named `name`, or NULL. Its type is as stored, or the load-time conversion type for
 * matrices when one is set; a conv weight converted to a block type is in matrix form
 * [O, I*KH*KW] (nu_conv2d; nu_nn_weight accepts it where [O, I, KH, KW] is asked for). */
nu_tensor *nu_weights_get(nu_weights *w, const char *name);
/* The shape of `name` as the model sees it (a matrix-form conv weight: [O, I, KH, KW]) into ne;
 * returns ndim, 0 if there is no such tensor. */
int nu_weights_logical_shape(nu_weights *w, const char *name, int64_t ne[NU_MAX_DIMS]);
/* Converts float weights whose rows (everything after the first dimension) hold a multiple of 32
 * values, Linear [O, I] and conv [O, I, KH, KW] weights, to `type` when first fetched
 * (NU_TYPE_COUNT: keep as stored). */
void nu_weights_set_matrix_type(nu_weights *w, nu_type type);
/* Drops the resident pages of the store's mapped files (nu_file_map_release): for a model part
 * that is done for now (the text encoder after encoding, the UNet during the VAE decode). Tensors
 * stay valid; reading them again faults their pages back in from the page cache. */
void nu_weights_release_pages(nu_weights *w);
/* The context that owns converted tensors and headers. */
nu_ctx *nu_weights_ctx(nu_weights *w);
/* Sum of bytes of the tensors fetched so far (mapped or converted). */
size_t nu_weights_bytes_used(const nu_weights *w);

#endif
