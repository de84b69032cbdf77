/*
 * k_conv.h — shared between the conv kernels (k_conv.c) and the Winograd path
 * (k_conv_winograd.c); internal to the CPU backend. Tested through tests/test_op_conv.c.
 *
 * Every conv op is described in "conv view": A [N, C, H, W] --conv2d(W [K, C/G, KH, KW])-->
 * B [N, K, Ho, Wo]. conv2d computes B from A; conv_transpose2d (the adjoint) computes A from B
 * with the same weight tensor; the weight gradients correlate A with B.
 */
#ifndef NU_K_CONV_H
#define NU_K_CONV_H

#include "core/internal.h"

typedef struct nu_conv_geom {
    int64_t N, C, H, W;  /* A                                          */
    int64_t K, Ho, Wo;   /* B                                          */
    int64_t KH, KW;
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t G, Cg, Kg;   /* groups, channels of A / B per group         */
} nu_conv_geom;

/* A 4-d f32 operand: base pointer and element strides (may be negative for flipped views). */
typedef struct nu_conv_view4 {
    const float *p;
    int64_t s[4];
} nu_conv_view4;

/* Winograd F(m x m, 3 x 3) for 3x3, stride 1, dilation 1, one group: B = conv(A, W) with
 * padding (ph, pw); the filter for (out channel o, in channel c) is
 * w.p[o*w.s[0] + c*w.s[1] + i*w.s[2] + j*w.s[3]] (a flipped, transposed view serves
 * conv_transpose2d). m is 2 or 4. */
typedef struct nu_wino_plan {
    int m;          /* output tile size (2 or 4)                                    */
    int64_t th, tw; /* tiles per image in y and x                                   */
    int64_t rc;     /* tile rows per chunk (a chunk = rc * tw tiles)                */
    int64_t kb;     /* output channels per block                                    */
    size_t off_u, off_v, off_m, bytes; /* float offsets into the work buffer; bytes */
} nu_wino_plan;

/* A conv2d weight read one output channel at a time (k_conv.c's W_ROWS): filter o is the packed
 * row of `w` at data + o * nb[0] (C*9 values of w->type, OIHW order), dequantized into `row`,
 * the calling thread's own C*9 floats. */
typedef struct nu_conv_wrows {
    const nu_tensor *w;
    float *row;
} nu_conv_wrows;

/* Fills *pl for m (2 or 4) and returns true, or returns false if the shape does not qualify. */
bool nu_wino_plan_make(const nu_conv_geom *g, int m, nu_wino_plan *pl);
/* Runs on every thread of p (contains barriers). The filters come from the f32 view w, or from
 * wr when not NULL. bias may be NULL; relu: max(y, 0) on the way out. work: at least pl->bytes. */
void nu_wino_run(const nu_compute_params *p, const nu_conv_geom *g, const nu_wino_plan *pl, nu_conv_view4 a,
                 nu_conv_view4 w, const nu_conv_wrows *wr, const float *bias, bool relu, float *b_out,
                 float *work);

/* Winograd for the other stride-1 single-group kernels (k_conv_wino_gen.c): 1xr, rx1 (r = 3, 5,
 * 7) and rxr (r = 3, 5, 7). Tiles of mh x mw outputs from ah x aw inputs. */
typedef struct nu_winog_plan {
    int mh, mw, ah, aw;
    int64_t th, tw;       /* tiles per image in y and x                              */
    int64_t rb;           /* tile rows per work item                                 */
    int64_t kb;           /* output channels per block                               */
    size_t u_floats;      /* shared: the transformed weights of a block              */
    size_t v_floats;      /* per thread: V of an item (M follows it)                 */
    size_t thread_floats; /* per thread: V + M                                       */
} nu_winog_plan;

/* Fills *pl and returns true, or returns false if the shape does not qualify. */
bool nu_winog_plan_make(const nu_conv_geom *g, nu_winog_plan *pl);
/* As nu_wino_run, for a plan of nu_winog_plan_make; work: u_floats + nth * thread_floats. */
void nu_winog_run(const nu_compute_params *p, const nu_conv_geom *g, const nu_winog_plan *pl, nu_conv_view4 a,
                  nu_conv_view4 w, const nu_conv_wrows *wr, const float *bias, bool relu, float *b_out,
                 float *work);

/* Algorithm override for tests and benchmarks (process-wide; AUTO by default). A forced
 * Winograd variant applies only where the shape allows it; elsewhere AUTO's choice is used.
 * WINOG forces k_conv_wino_gen.c (3x3 and 7x7 included), GEMM forces im2col + GEMM. */
enum { NU_CONV_ALGO_AUTO, NU_CONV_ALGO_GEMM, NU_CONV_ALGO_WINO2, NU_CONV_ALGO_WINO4, NU_CONV_ALGO_WINOG };
void nu_conv_set_algo(int algo);

/* Aligns a float count to 16 (64 bytes). */
static inline size_t nu_conv_align16(size_t n) { return (n + 15) & ~(size_t)15; }

#endif
