/*
 * nuance/io.h — model files (safetensors, GGUF), bounded JSON, images (PNG, JPEG, WebP).
 *
 * Every parser treats its input as hostile: lengths, offsets, shapes and dtypes are checked
 * against the file size and sane limits before use; bad input returns NU_ERR_FORMAT (or IO,
 * UNSUPPORTED, NOMEM) with a message naming the file and the problem, never a crash.
 *
 *     nu_st_file *f;
 *     if (nu_st_open("model.safetensors", &f) != NU_OK) { puts(nu_last_error()); ... }
 *     nu_tensor *w;
 *     nu_st_get(f, ctx, "conv_in.weight", &w);   // header over the mmapped bytes, no copy
 *     ...
 *     nu_st_close(f);                             // after the last use of w
 */
#ifndef NUANCE_IO_H
#define NUANCE_IO_H

#include "nuance/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- JSON (bounded DOM) */

typedef enum nu_json_kind { NU_JSON_NULL, NU_JSON_BOOL, NU_JSON_NUMBER, NU_JSON_STRING, NU_JSON_ARRAY, NU_JSON_OBJECT } nu_json_kind;
typedef struct nu_json nu_json;
struct nu_json {
    nu_json_kind kind;
    bool b;
    double num;
    char *str;        /* STRING: NUL-terminated, unescaped (UTF-8)      */
    size_t str_len;   /* may contain embedded NULs from \u0000            */
    int n;            /* ARRAY/OBJECT: number of children                 */
    nu_json *items;   /* children                                         */
    char **keys;      /* OBJECT: key of each child                        */
};
/* Parses len bytes (depth <= 64). On error returns NULL with nu_last_error() giving the offset. */
nu_json *nu_json_parse(const char *text, size_t len);
void nu_json_free(nu_json *j);
/* Reads a JSON object file (a config: at most 64 MiB). Errors name the file. */
nu_status nu_json_load_file(const char *path, nu_json **out);
const nu_json *nu_json_get(const nu_json *obj, const char *key); /* NULL if absent / not object */
const nu_json *nu_json_at(const nu_json *arr, int i);             /* NULL if out of range      */
/* Convenience readers with defaults when absent or of another kind. */
double nu_json_number(const nu_json *obj, const char *key, double dflt);
const char *nu_json_string(const nu_json *obj, const char *key, const char *dflt);
bool nu_json_bool(const nu_json *obj, const char *key, bool dflt);

/* ---------------------------------------------------------------- mapped files */

typedef struct nu_file_map {
    const uint8_t *data;
    size_t size;
    int fd;
} nu_file_map;
nu_status nu_file_map_open(const char *path, nu_file_map *m);
void nu_file_map_close(nu_file_map *m);
/* Drops this process's resident pages of the mapping (MADV_DONTNEED on the read-only file map):
 * a model part that is done for now stops counting in the resident set; the next read faults the
 * pages back in from the page cache, with the same contents. No-op for a map without a file. */
void nu_file_map_release(const nu_file_map *m);

/* ---------------------------------------------------------------- safetensors */

typedef struct nu_st_file nu_st_file;
typedef struct nu_st_info {
    const char *name;
    nu_type type;        /* F64/F32/F16/BF16/I64/I32/I16/I8/U8/BOOL map to NU_TYPE_*  */
    int ndim;
    int64_t ne[NU_MAX_DIMS];
    const void *data;    /* into the mapped file                                         */
    size_t nbytes;
} nu_st_info;

nu_status nu_st_open(const char *path, nu_st_file **out);
/* Same, over a caller-owned buffer (must outlive the handle); used by fuzzers and tests. */
nu_status nu_st_open_memory(const void *data, size_t size, const char *label, nu_st_file **out);
void nu_st_close(nu_st_file *f);
/* nu_file_map_release of the file's mapping (nothing for nu_st_open_memory files). */
void nu_st_release_pages(nu_st_file *f);
int nu_st_count(const nu_st_file *f);
const nu_st_info *nu_st_at(const nu_st_file *f, int i);
const nu_st_info *nu_st_find(const nu_st_file *f, const char *name); /* NULL if absent */
/* __metadata__ value for key, NULL if absent. */
const char *nu_st_metadata(const nu_st_file *f, const char *key);
int nu_st_metadata_count(const nu_st_file *f);
void nu_st_metadata_at(const nu_st_file *f, int i, const char **key, const char **value);
/* A tensor header in ctx pointing at the mapped data (no copy). NU_ERR_NOT_FOUND if absent. */
nu_status nu_st_get(nu_st_file *f, nu_ctx *ctx, const char *name, nu_tensor **out);
/* Reads `name` into a new f32 tensor of ctx (converting F16/BF16/F64/ints). */
nu_status nu_st_get_f32(nu_st_file *f, nu_ctx *ctx, const char *name, nu_tensor **out);

/* Writes tensors (name from t->name; any plain dtype; strided tensors are packed) and optional
 * metadata (n_meta key/value pairs) atomically: temp file, fsync, rename. */
nu_status nu_st_save(const char *path, nu_tensor *const *tensors, int n, const char *const *meta_keys,
                     const char *const *meta_values, int n_meta);

/* ---------------------------------------------------------------- GGUF (v2, v3) */

typedef struct nu_gguf nu_gguf;
typedef enum nu_gguf_vtype {
    NU_GGUF_UINT8 = 0, NU_GGUF_INT8 = 1, NU_GGUF_UINT16 = 2, NU_GGUF_INT16 = 3, NU_GGUF_UINT32 = 4,
    NU_GGUF_INT32 = 5, NU_GGUF_FLOAT32 = 6, NU_GGUF_BOOL = 7, NU_GGUF_STRING = 8, NU_GGUF_ARRAY = 9,
    NU_GGUF_UINT64 = 10, NU_GGUF_INT64 = 11, NU_GGUF_FLOAT64 = 12, NU_GGUF_VTYPE_COUNT
} nu_gguf_vtype;
typedef struct nu_gguf_kv {
    const char *key;
    nu_gguf_vtype type;
    nu_gguf_vtype arr_type; /* ARRAY: element type        */
    uint64_t arr_n;         /* ARRAY: element count       */
    union { uint64_t u; int64_t i; double f; bool b; } v; /* scalar value (widened) */
    const char *str;        /* STRING value (NUL-terminated copy)            */
    const void *arr;        /* ARRAY of numbers: raw little-endian data in the file */
    const char **arr_str;   /* ARRAY of strings: copies                      */
} nu_gguf_kv;
typedef struct nu_gguf_tensor {
    const char *name;
    nu_type type;
    int ndim;
    int64_t ne[NU_MAX_DIMS]; /* PyTorch order (GGUF stores innermost first; reversed here) */
    const void *data;
    size_t nbytes;
} nu_gguf_tensor;

nu_status nu_gguf_open(const char *path, nu_gguf **out);
nu_status nu_gguf_open_memory(const void *data, size_t size, const char *label, nu_gguf **out);
void nu_gguf_close(nu_gguf *g);
/* nu_file_map_release of the file's mapping (nothing for nu_gguf_open_memory files). */
void nu_gguf_release_pages(nu_gguf *g);
uint32_t nu_gguf_version(const nu_gguf *g);
int nu_gguf_kv_count(const nu_gguf *g);
const nu_gguf_kv *nu_gguf_kv_at(const nu_gguf *g, int i);
const nu_gguf_kv *nu_gguf_find_kv(const nu_gguf *g, const char *key);
int nu_gguf_tensor_count(const nu_gguf *g);
const nu_gguf_tensor *nu_gguf_tensor_at(const nu_gguf *g, int i);
const nu_gguf_tensor *nu_gguf_find_tensor(const nu_gguf *g, const char *name);
nu_status nu_gguf_get(nu_gguf *g, nu_ctx *ctx, const char *name, nu_tensor **out); /* no copy */

/* Writer: collect KVs and tensors, then write (v3, alignment 32) atomically. */
typedef struct nu_gguf_writer nu_gguf_writer;
nu_gguf_writer *nu_gguf_writer_new(void);
void nu_gguf_writer_free(nu_gguf_writer *w);
void nu_gguf_writer_set_u32(nu_gguf_writer *w, const char *key, uint32_t v);
void nu_gguf_writer_set_i32(nu_gguf_writer *w, const char *key, int32_t v);
void nu_gguf_writer_set_f32(nu_gguf_writer *w, const char *key, float v);
void nu_gguf_writer_set_bool(nu_gguf_writer *w, const char *key, bool v);
void nu_gguf_writer_set_str(nu_gguf_writer *w, const char *key, const char *v);
void nu_gguf_writer_set_arr_str(nu_gguf_writer *w, const char *key, const char *const *v, int n);
void nu_gguf_writer_set_arr_i32(nu_gguf_writer *w, const char *key, const int32_t *v, int n);
/* Adds a tensor (name from t->name, any type incl. quantized; data copied at write time). */
void nu_gguf_writer_add_tensor(nu_gguf_writer *w, const nu_tensor *t);
nu_status nu_gguf_writer_write(nu_gguf_writer *w, const char *path);

/* ---------------------------------------------------------------- images */

typedef struct nu_image {
    int width, height, channels; /* channels: 1 (gray), 2 (gray+alpha), 3 (RGB), 4 (RGBA) */
    uint8_t *pixels;             /* row-major, interleaved, 8 bits per channel             */
} nu_image;

typedef struct nu_image_text {   /* PNG tEXt/iTXt/zTXt chunk (key, UTF-8 value) */
    char *key;
    char *value;
} nu_image_text;

/* Loads PNG / JPEG / WebP (by content, not extension). 16-bit PNGs are reduced to 8 bits;
 * palette expanded. Images over 16384 px a side or 2^28 pixels are refused. */
nu_status nu_image_load(const char *path, nu_image *out);
nu_status nu_image_load_memory(const void *data, size_t size, const char *label, nu_image *out);
/* Saves by extension (.png, .jpg/.jpeg, .webp); quality for lossy formats (1..100, 0 = 90).
 * PNG gets the text chunks (e.g. key "parameters" for A1111 metadata). Atomic write. */
nu_status nu_image_save(const char *path, const nu_image *img, const nu_image_text *texts, int n_texts, int quality);
void nu_image_free(nu_image *img);
/* Reads the text chunks of a PNG (n_out = 0 for other formats). Free with nu_image_texts_free. */
nu_status nu_image_read_texts(const char *path, nu_image_text **out, int *n_out);
void nu_image_texts_free(nu_image_text *t, int n);

#ifdef __cplusplus
}
#endif
#endif
