/* float32 kernels, each following PyTorch's CPU arithmetic order where it changes results.
 * Build with -ffp-contract=off so no FMA is formed behind our back (PyTorch's reference
 * kernels round each multiply and add separately). */
#include <math.h>
#include <string.h>

#include "kwsn_kernels.h"

/* LayerNorm statistics accumulate in double, which matched PyTorch best (docs/cnative.md);
 * -DKWSN_LN_FLOAT_ACC switches to float for the comparison the benchmark makes. */
#ifdef KWSN_LN_FLOAT_ACC
#define KWSN_LN_ACC float
#else
#define KWSN_LN_ACC double
#endif

#if defined(__GNUC__) && defined(__AVX__) && !defined(KWSN_NO_VECTOR_EXT)
#define KWSN_VECTOR_EXT 1
/* GCC vector extensions on AVX targets (32 registers with AVX-512, 16 with AVX2): the
 * accumulator tiles stay in registers, where plain arrays spill to the stack. Without AVX
 * (make ARCH=, MCU builds) the plain loops below are used; with SSE's 16 narrow registers
 * the tiles would spill (measured ~8x slower than the plain loops). */
typedef float kwsn_v8 __attribute__((vector_size(32)));
typedef double kwsn_v8d __attribute__((vector_size(64)));
/* by pointer, not by value: returning a vector type warns (-Wpsabi) on non-AVX builds */
#define V8_LOAD(v, p) memcpy(&(v), (p), sizeof(kwsn_v8))
#else
#define KWSN_VECTOR_EXT 0
#endif

/* PyTorch avg_pool: float sum over the window, then divide by the window size. */
void kwsn_avgpool1d_f32(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                        uint32_t stride, uint32_t L_out) {
    for (uint32_t c = 0; c < C; c++) {
        const float *x = in + (size_t)c * L;
        float *y = out + (size_t)c * L_out;
        uint32_t t = 0;
        /* 8 windows at a time: independent sums, each still added left to right */
        for (; t + 8 <= L_out; t += 8) {
            float acc[8] = {0};
            for (uint32_t j = 0; j < k; j++)
                for (uint32_t u = 0; u < 8; u++) acc[u] += x[(size_t)(t + u) * stride + j];
            for (uint32_t u = 0; u < 8; u++) y[t + u] = acc[u] / (float)k;
        }
        for (; t < L_out; t++) {
            const float *win = x + (size_t)t * stride;
            float acc = 0.0f;
            for (uint32_t j = 0; j < k; j++) acc += win[j];
            y[t] = acc / (float)k;
        }
    }
}

/* PyTorch max_pool1d: NaN wins (propagates), as in its `val > max || isnan(val)` loop.
 * (`v != v` is isnan without a libm call, so the loop stays branch-free.) */
void kwsn_maxpool1d_f32(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                        uint32_t stride, uint32_t L_out) {
    for (uint32_t c = 0; c < C; c++) {
        const float *x = in + (size_t)c * L;
        float *y = out + (size_t)c * L_out;
        uint32_t t = 0;
        if (k == 4 && stride == 4) { /* the model's case: constant k lets gcc vectorise */
            for (; t < L_out; t++) {
                const float *w = x + 4 * (size_t)t;
                float m = w[0];
                m = (w[1] > m || w[1] != w[1]) ? w[1] : m;
                m = (w[2] > m || w[2] != w[2]) ? w[2] : m;
                m = (w[3] > m || w[3] != w[3]) ? w[3] : m;
                y[t] = m;
            }
        }
        for (; t + 8 <= L_out; t += 8) { /* 8 independent windows */
            float m[8];
            for (uint32_t u = 0; u < 8; u++) m[u] = x[(size_t)(t + u) * stride];
            for (uint32_t j = 1; j < k; j++)
                for (uint32_t u = 0; u < 8; u++) {
                    const float v = x[(size_t)(t + u) * stride + j];
                    m[u] = (v > m[u] || v != v) ? v : m[u];
                }
            for (uint32_t u = 0; u < 8; u++) y[t + u] = m[u];
        }
        for (; t < L_out; t++) {
            const float *win = x + (size_t)t * stride;
            float m = win[0];
            for (uint32_t j = 1; j < k; j++) m = (win[j] > m || win[j] != win[j]) ? win[j] : m;
            y[t] = m;
        }
    }
}

#if defined(__GNUC__)
#define KWSN_INLINE static inline __attribute__((always_inline))
#else
#define KWSN_INLINE static inline
#endif

/* Output rows o0..o0+NO of a conv over the zero-padded input xp [C_in][Lp], in tiles of
 * KWSN_CONV_TILE positions whose accumulators stay in registers. Per output element the sum
 * order is bias, then i = 0.., j = 0.. (as the plain loop nest). A tail tile computes all
 * lanes (reading into the zeroed slack) and stores only the valid ones. */
#if KWSN_VECTOR_EXT

KWSN_INLINE void conv_rows(float *out, const float *xp, const float *w, const float *b,
                           uint32_t C_in, uint32_t L, uint32_t Lp, uint32_t k, uint32_t o0,
                           const uint32_t NO) {
    for (uint32_t t0 = 0; t0 < L; t0 += KWSN_CONV_TILE) {
        kwsn_v8 acc[KWSN_CONV_ROWS][2];
        for (uint32_t r = 0; r < NO; r++) {
            const float bias = b ? b[o0 + r] : 0.0f;
            acc[r][0] = (kwsn_v8){0} + bias;
            acc[r][1] = acc[r][0];
        }
        for (uint32_t i = 0; i < C_in; i++) {
            const float *x = xp + (size_t)i * Lp + t0;
            const float *wi = w + (size_t)i * k;
            for (uint32_t j = 0; j < k; j++) {
                kwsn_v8 x0, x1;
                V8_LOAD(x0, x + j);
                V8_LOAD(x1, x + j + 8);
                for (uint32_t r = 0; r < NO; r++) {
                    const float wr = wi[(size_t)(o0 + r) * C_in * k + j];
                    acc[r][0] += x0 * wr;
                    acc[r][1] += x1 * wr;
                }
            }
        }
        const uint32_t nt = L - t0 < KWSN_CONV_TILE ? L - t0 : KWSN_CONV_TILE;
        for (uint32_t r = 0; r < NO; r++) {
            float *y = out + (size_t)(o0 + r) * L + t0;
            if (nt == KWSN_CONV_TILE) { /* constant-size copies compile to two stores */
                memcpy(y, &acc[r][0], sizeof(kwsn_v8));
                memcpy(y + 8, &acc[r][1], sizeof(kwsn_v8));
            } else {
                float tile[KWSN_CONV_TILE];
                memcpy(tile, &acc[r][0], sizeof(kwsn_v8));
                memcpy(tile + 8, &acc[r][1], sizeof(kwsn_v8));
                for (uint32_t u = 0; u < nt; u++) y[u] = tile[u];
            }
        }
    }
}
#else
KWSN_INLINE void conv_rows(float *out, const float *xp, const float *w, const float *b,
                           uint32_t C_in, uint32_t L, uint32_t Lp, uint32_t k, uint32_t o0,
                           const uint32_t NO) {
    for (uint32_t r = 0; r < NO; r++) {
        float *y = out + (size_t)(o0 + r) * L;
        for (uint32_t t = 0; t < L; t++) y[t] = b ? b[o0 + r] : 0.0f;
        for (uint32_t i = 0; i < C_in; i++) {
            const float *x = xp + (size_t)i * Lp;
            const float *wk = w + ((size_t)(o0 + r) * C_in + i) * k;
            for (uint32_t j = 0; j < k; j++) {
                const float wj = wk[j]; /* hoisted: y could alias wk, which blocks SIMD */
                const float *xs = x + j;
                for (uint32_t t = 0; t < L; t++) y[t] += wj * xs[t];
            }
        }
    }
}
#endif

/* Conv1d, stride 1, zero "same" padding (k odd): out[o, t] = b[o] + sum_{i,j} w[o,i,j] *
 * in[i, t + j - k/2]. scratch holds the padded input: kwsn_conv1d_scratch_floats() floats.
 * oneDNN sums in another order (and with FMA), which costs a few ulp (docs/cnative.md). */
void kwsn_conv1d_same_f32(float *out, const float *in, const float *w, const float *b,
                          uint32_t C_in, uint32_t C_out, uint32_t L, uint32_t k, float *scratch) {
    const uint32_t pad = k / 2, Lp = L + k - 1;
    for (uint32_t i = 0; i < C_in; i++) {
        float *xp = scratch + (size_t)i * Lp;
        memset(xp, 0, pad * sizeof(float));
        memcpy(xp + pad, in + (size_t)i * L, L * sizeof(float));
        memset(xp + pad + L, 0, pad * sizeof(float));
    }
    memset(scratch + (size_t)C_in * Lp, 0, KWSN_CONV_TILE * sizeof(float));
    uint32_t o = 0;
    for (; o + KWSN_CONV_ROWS <= C_out; o += KWSN_CONV_ROWS)
        conv_rows(out, scratch, w, b, C_in, L, Lp, k, o, KWSN_CONV_ROWS);
    for (; o + 4 <= C_out; o += 4) conv_rows(out, scratch, w, b, C_in, L, Lp, k, o, 4);
    for (; o < C_out; o++) conv_rows(out, scratch, w, b, C_in, L, Lp, k, o, 1);
}

size_t kwsn_conv1d_scratch_floats(uint32_t C_in, uint32_t L, uint32_t k) {
    return (size_t)C_in * (L + k - 1) + KWSN_CONV_TILE;
}

/* Sum and then sum of squared deviations from the mean, in 8 lanes (no serial dependency
 * chain; in double the lane order does not change the float result in practice). */
static void ln_moments(const float *x, uint32_t n, KWSN_LN_ACC *mean, KWSN_LN_ACC *ssd) {
    uint32_t j = 0;
    KWSN_LN_ACC s = 0, v = 0;
#if KWSN_VECTOR_EXT && !defined(KWSN_LN_FLOAT_ACC)
    kwsn_v8d vs = {0}, vq = {0};
    for (; j + 8 <= n; j += 8) {
        kwsn_v8 xv;
        V8_LOAD(xv, x + j);
        vs += __builtin_convertvector(xv, kwsn_v8d);
    }
    for (int u = 0; u < 8; u++) s += vs[u];
    for (uint32_t t = j; t < n; t++) s += x[t];
    const double m = s / (double)n;
    for (j = 0; j + 8 <= n; j += 8) {
        kwsn_v8 xv;
        V8_LOAD(xv, x + j);
        const kwsn_v8d d = __builtin_convertvector(xv, kwsn_v8d) - m;
        vq += d * d;
    }
    for (int u = 0; u < 8; u++) v += vq[u];
#else
    KWSN_LN_ACC ps[8] = {0}, pv[8] = {0};
    for (; j + 8 <= n; j += 8)
        for (uint32_t u = 0; u < 8; u++) ps[u] += (KWSN_LN_ACC)x[j + u];
    for (uint32_t t = j; t < n; t++) s += x[t];
    for (uint32_t u = 0; u < 8; u++) s += ps[u];
    const KWSN_LN_ACC m = s / (KWSN_LN_ACC)n;
    for (j = 0; j + 8 <= n; j += 8)
        for (uint32_t u = 0; u < 8; u++) {
            const KWSN_LN_ACC d = (KWSN_LN_ACC)x[j + u] - m;
            pv[u] += d * d;
        }
    for (uint32_t u = 0; u < 8; u++) v += pv[u];
#endif
    for (; j < n; j++) {
        const KWSN_LN_ACC d = (KWSN_LN_ACC)x[j] - m;
        v += d * d;
    }
    *mean = m;
    *ssd = v;
}

/* LayerNorm over the last n elements of each of `outer` rows: mean, then biased variance,
 * eps inside the sqrt, then (x - mean) * rstd * gamma + beta, in PyTorch's order.
 * gamma/beta may be NULL (no elementwise affine). Safe in place (out == in). */
void kwsn_layernorm_f32(float *out, const float *in, const float *gamma, const float *beta,
                        float eps, uint32_t outer, uint32_t n) {
    for (uint32_t r = 0; r < outer; r++) {
        const float *x = in + (size_t)r * n;
        float *y = out + (size_t)r * n;
        KWSN_LN_ACC mean_acc, v;
        ln_moments(x, n, &mean_acc, &v);
        const float mean = (float)mean_acc;
        const float var = (float)(v / (KWSN_LN_ACC)n);
        const float rstd = 1.0f / sqrtf(var + eps);
        uint32_t j;
        if (gamma) {
            for (j = 0; j < n; j++) y[j] = (x[j] - mean) * rstd * gamma[j] + beta[j];
        } else {
            for (j = 0; j < n; j++) y[j] = (x[j] - mean) * rstd;
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
