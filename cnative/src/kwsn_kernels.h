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

typedef struct {
    const char *name;
    void (*avgpool1d)(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                      uint32_t stride, uint32_t L_out);
    void (*maxpool1d)(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                      uint32_t stride, uint32_t L_out);
    void (*conv1d_same)(float *out, const float *in, const float *w, const float *b,
                        uint32_t C_in, uint32_t C_out, uint32_t L, uint32_t k, float *scratch);
    void (*layernorm)(float *out, const float *in, const float *gamma, const float *beta,
                      float eps, uint32_t outer, uint32_t n);
    void (*relu)(float *out, const float *in, uint32_t n);
    void (*adaptive_avgpool1)(float *out, const float *in, uint32_t C, uint32_t L);
    void (*linear)(float *out, const float *in, const float *w, const float *b, uint32_t n_in,
                   uint32_t n_out);
} kwsn_kernel_table;

/* The kernel set to use on this CPU (honours KWSN_ISA in the multi-path x86-64 build). */
const kwsn_kernel_table *kwsn_select_kernels(void);

/* Scratch floats kwsn_conv1d_same needs (the zero-padded input plus KWSN_CONV_SLACK). */
size_t kwsn_conv1d_scratch_floats(uint32_t C_in, uint32_t L, uint32_t k);

#endif
