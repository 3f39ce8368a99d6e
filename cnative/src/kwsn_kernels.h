/* Private: float32 kernels. Pure functions, output first, no allocation, no checks
 * (prepare() validated every size before these can run). */
#ifndef KWSN_KERNELS_H
#define KWSN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Positions per conv register tile (16 floats: one AVX-512 or two AVX registers). */
#define KWSN_CONV_TILE 16
/* Output channels per conv register block (8 x 2 vectors of accumulators). */
#ifndef KWSN_CONV_ROWS
#define KWSN_CONV_ROWS 8
#endif

void kwsn_avgpool1d_f32(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                        uint32_t stride, uint32_t L_out);
void kwsn_maxpool1d_f32(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                        uint32_t stride, uint32_t L_out);
void kwsn_conv1d_same_f32(float *out, const float *in, const float *w, const float *b,
                          uint32_t C_in, uint32_t C_out, uint32_t L, uint32_t k, float *scratch);
/* Scratch floats kwsn_conv1d_same_f32 needs (the zero-padded input plus one tile of slack). */
size_t kwsn_conv1d_scratch_floats(uint32_t C_in, uint32_t L, uint32_t k);
void kwsn_layernorm_f32(float *out, const float *in, const float *gamma, const float *beta,
                        float eps, uint32_t outer, uint32_t n);
void kwsn_relu_f32(float *out, const float *in, uint32_t n);
void kwsn_adaptive_avgpool1_f32(float *out, const float *in, uint32_t C, uint32_t L);
void kwsn_linear_f32(float *out, const float *in, const float *w, const float *b,
                     uint32_t n_in, uint32_t n_out);

#endif
