/* float32 kernels, each following PyTorch's CPU arithmetic order where it changes results.
 * Build with -ffp-contract=off so no FMA is formed behind our back (PyTorch's reference
 * kernels round each multiply and add separately). */
#include <math.h>
#include <string.h>

#include "kwsn_kernels.h"

/* LayerNorm statistics accumulator; double matched PyTorch best (see docs/cnative.md). */
#ifndef KWSN_LN_ACC
#define KWSN_LN_ACC double
#endif

/* PyTorch avg_pool: float sum over the window, then divide by the window size. */
void kwsn_avgpool1d_f32(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                        uint32_t stride, uint32_t L_out) {
    for (uint32_t c = 0; c < C; c++) {
        const float *x = in + (size_t)c * L;
        float *y = out + (size_t)c * L_out;
        for (uint32_t t = 0; t < L_out; t++) {
            const float *win = x + (size_t)t * stride;
            float acc = 0.0f;
            for (uint32_t j = 0; j < k; j++) acc += win[j];
            y[t] = acc / (float)k;
        }
    }
}

/* PyTorch max_pool1d: NaN wins (propagates), as in its `val > max || isnan(val)` loop. */
void kwsn_maxpool1d_f32(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                        uint32_t stride, uint32_t L_out) {
    for (uint32_t c = 0; c < C; c++) {
        const float *x = in + (size_t)c * L;
        float *y = out + (size_t)c * L_out;
        for (uint32_t t = 0; t < L_out; t++) {
            const float *win = x + (size_t)t * stride;
            float m = win[0];
            for (uint32_t j = 1; j < k; j++) {
                if (win[j] > m || isnan(win[j])) m = win[j];
                if (isnan(m)) break;
            }
            y[t] = m;
        }
    }
}

/* Conv1d, stride 1, zero "same" padding (k odd): out[o, t] = b[o] + sum_{i,j} w[o,i,j] *
 * in[i, t + j - k/2]. The inner loop runs over t so the compiler can vectorise it; the
 * summation order differs from oneDNN's, which costs a few ulp (docs/cnative.md). */
void kwsn_conv1d_same_f32(float *out, const float *in, const float *w, const float *b,
                          uint32_t C_in, uint32_t C_out, uint32_t L, uint32_t k) {
    const int32_t pad = (int32_t)(k / 2);
    for (uint32_t o = 0; o < C_out; o++) {
        float *y = out + (size_t)o * L;
        const float bias = b ? b[o] : 0.0f;
        for (uint32_t t = 0; t < L; t++) y[t] = bias;
        for (uint32_t i = 0; i < C_in; i++) {
            const float *x = in + (size_t)i * L;
            const float *wk = w + ((size_t)o * C_in + i) * k;
            for (uint32_t j = 0; j < k; j++) {
                const float wj = wk[j];
                const int32_t shift = (int32_t)j - pad; /* y[t] += wj * x[t + shift] */
                const int32_t t0 = shift < 0 ? -shift : 0;
                const int32_t t1 = shift > 0 ? (int32_t)L - shift : (int32_t)L;
                const float *xs = x + shift;
                for (int32_t t = t0; t < t1; t++) y[t] += wj * xs[t];
            }
        }
    }
}

/* LayerNorm over the last n elements of each of `outer` rows: mean, then biased variance,
 * eps inside the sqrt, then (x - mean) * rstd * gamma + beta, in PyTorch's order.
 * gamma/beta may be NULL (no elementwise affine). Safe in place (out == in). */
void kwsn_layernorm_f32(float *out, const float *in, const float *gamma, const float *beta,
                        float eps, uint32_t outer, uint32_t n) {
    for (uint32_t r = 0; r < outer; r++) {
        const float *x = in + (size_t)r * n;
        float *y = out + (size_t)r * n;
        KWSN_LN_ACC s = 0;
        for (uint32_t j = 0; j < n; j++) s += x[j];
        const KWSN_LN_ACC mean_acc = s / (KWSN_LN_ACC)n;
        KWSN_LN_ACC v = 0;
        for (uint32_t j = 0; j < n; j++) {
            const KWSN_LN_ACC d = (KWSN_LN_ACC)x[j] - mean_acc;
            v += d * d;
        }
        const float mean = (float)mean_acc;
        const float var = (float)(v / (KWSN_LN_ACC)n);
        const float rstd = 1.0f / sqrtf(var + eps);
        for (uint32_t j = 0; j < n; j++) {
            float z = (x[j] - mean) * rstd;
            if (gamma) z = z * gamma[j] + beta[j];
            y[j] = z;
        }
    }
}

/* ReLU; NaN stays NaN, as torch.relu. Safe in place. */
void kwsn_relu_f32(float *out, const float *in, uint32_t n) {
    for (uint32_t j = 0; j < n; j++) out[j] = in[j] < 0.0f ? 0.0f : in[j];
}

/* AdaptiveAvgPool1d(1): float sum over L, then divide by L. */
void kwsn_adaptive_avgpool1_f32(float *out, const float *in, uint32_t C, uint32_t L) {
    for (uint32_t c = 0; c < C; c++) {
        const float *x = in + (size_t)c * L;
        float acc = 0.0f;
        for (uint32_t t = 0; t < L; t++) acc += x[t];
        out[c] = acc / (float)L;
    }
}

/* Linear: out[o] = b[o] + sum_i w[o, i] * in[i]   (w is [n_out, n_in], row-major). */
void kwsn_linear_f32(float *out, const float *in, const float *w, const float *b,
                     uint32_t n_in, uint32_t n_out) {
    for (uint32_t o = 0; o < n_out; o++) {
        const float *wr = w + (size_t)o * n_in;
        float acc = 0.0f;
        for (uint32_t i = 0; i < n_in; i++) acc += wr[i] * in[i];
        out[o] = b ? acc + b[o] : acc;
    }
}
