/* Private: float32 kernels. Pure functions, output first, no allocation, no checks
 * (prepare() validated every size before these can run).
 *
 * src/kwsn_kernels.c is compiled once per kernel path: plain (the portable baseline, which
 * also holds the run-time selection) and, in the x86-64 build, again with -mavx2
 * -DKWSN_ISA_VARIANT=avx2 and -mavx512f -DKWSN_ISA_VARIANT=avx512. Each compile defines one
 * kwsn_kernel_table; every path sums in the same order, so results are byte-identical. */
#ifndef KWSN_KERNELS_H
#define KWSN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Zeroed floats after a conv's padded input: the widest path's tail tile (2 x 16 lanes)
 * reads up to this far past the end. Independent of the path, so the arena is too. */
#define KWSN_CONV_SLACK 32

/* Shape of a general Conv1d: weight [C_out][C_in / groups][k], zero padding `pad` on both
 * sides, L_out = (L + 2 pad - dil (k - 1) - 1) / stride + 1 (prepare checked all of it). */
typedef struct {
    uint32_t C_in, C_out, L, k, stride, pad, dil, groups, L_out;
} kwsn_conv1d_ex_args;

typedef struct {
    const char *name;
    void (*avgpool1d)(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                      uint32_t stride, uint32_t L_out);
    void (*maxpool1d)(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                      uint32_t stride, uint32_t L_out);
    void (*conv1d_same)(float *out, const float *in, const float *w, const float *b,
                        uint32_t C_in, uint32_t C_out, uint32_t L, uint32_t k, float *scratch);
    /* relu != 0: ReLU applied in the same pass (LayerNorm + ReLU fused, same bits) */
    void (*layernorm)(float *out, const float *in, const float *gamma, const float *beta,
                      float eps, uint32_t outer, uint32_t n, int relu);
    void (*relu)(float *out, const float *in, uint32_t n);
    void (*adaptive_avgpool1)(float *out, const float *in, uint32_t C, uint32_t L);
    void (*linear)(float *out, const float *in, const float *w, const float *b, uint32_t n_in,
                   uint32_t n_out);
    /* General Conv1d (see kwsn_conv1d_ex_args); scratch: kwsn_conv1d_ex_scratch_floats(). */
    void (*conv1d_ex)(float *out, const float *in, const float *w, const float *b,
                      const kwsn_conv1d_ex_args *a, float *scratch);
    void (*add)(float *out, const float *x, const float *y, uint32_t n);
    /* Self-attentive pooling of x [C][L]: scratch holds L floats (the scores). */
    void (*attn_pool)(float *out, const float *x, const float *w, float b, uint32_t C, uint32_t L,
                      float *scratch);
} kwsn_kernel_table;

/* The kernel set to use on this CPU (honours KWSN_ISA in the multi-path x86-64 build). */
const kwsn_kernel_table *kwsn_select_kernels(void);

/* Scratch floats kwsn_conv1d_same needs (the zero-padded input plus KWSN_CONV_SLACK). */
size_t kwsn_conv1d_scratch_floats(uint32_t C_in, uint32_t L, uint32_t k);

/* Floats per input channel of kwsn_conv1d_ex's scratch: the zero-padded input split into
 * `stride` phases (phase r holds x_pad[stride * u + r]), each long enough for every tap. */
size_t kwsn_conv1d_ex_channel_floats(const kwsn_conv1d_ex_args *a);
/* Scratch floats of kwsn_conv1d_ex: C_in channels of the above plus KWSN_CONV_SLACK. */
size_t kwsn_conv1d_ex_scratch_floats(const kwsn_conv1d_ex_args *a);

#endif
