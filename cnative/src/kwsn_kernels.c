/* float32 kernels, each following PyTorch's CPU arithmetic order where it changes results.
 *
 * Numerics live here, not in build flags: no FMA contraction (PyTorch's reference kernels
 * round every multiply and add), set by the pragmas below for GCC and for compilers that
 * honour C99's FP_CONTRACT, so an MCU or distro build with its own flags (-std=gnu99
 * -ffp-contract=fast -mfma) computes the same bits. test_golden's fp-contract probe fails
 * if a compiler contracts anyway.
 *
 * This file is compiled once per kernel path (see kwsn_kernels.h): the vector width follows
 * the target (16 floats with AVX-512, 8 with AVX, 4 with SSE2, plain loops otherwise) and
 * every path keeps each output's summation order, so all paths give byte-identical results. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#else
/* clang honours these under its default -ffp-contract=on, but NOT under -ffp-contract=fast,
 * which "fuses across statements disregarding pragmas" (clang 14: 215 FMAs in this file with
 * -O3 -march=native -ffp-contract=fast; its -ffp-contract=fast-honor-pragmas, which would
 * keep the pragma, is not accepted by clang 14). Do not build this file with clang and
 * -ffp-contract=fast (or -ffast-math): test_golden's fp-contract probe then fails. */
#pragma STDC FP_CONTRACT OFF
#ifdef __clang__
#pragma clang fp contract(off)
#endif
#endif
#include <math.h>
#include <string.h>

#include "kwsn_kernels.h"
#include "kwsnet.h"

#define KWSN_CAT2(a, b) a##_##b
#define KWSN_CAT(a, b) KWSN_CAT2(a, b)
#define KWSN_STR2(a) #a
#define KWSN_STR(a) KWSN_STR2(a)
#ifdef KWSN_ISA_VARIANT
#define KWSN_K(name) KWSN_CAT(name, KWSN_ISA_VARIANT)
#define KWSN_ISA_NAME KWSN_STR(KWSN_ISA_VARIANT)
#else
#define KWSN_K(name) KWSN_CAT(name, default)
#define KWSN_ISA_NAME "default"
#endif

/* LayerNorm statistics accumulate in double, which matched PyTorch best (docs/cnative.md);
 * -DKWSN_LN_FLOAT_ACC switches to float for the comparison the benchmark makes. */
#ifdef KWSN_LN_FLOAT_ACC
#define KWSN_LN_ACC float
#else
#define KWSN_LN_ACC double
#endif

/* Floats per vector register of this compile's target. GCC vector extensions keep the conv
 * accumulator tiles in registers (plain arrays spill); with SSE's 16 narrow registers the
 * tiles would spill (measured ~8x slower than the plain loops), so the baseline uses those. */
#if defined(__GNUC__) && defined(__AVX512F__) && !defined(KWSN_NO_VECTOR_EXT)
#define KWSN_VW 16
/* 8 rows x 2 zmm accumulators + 2 inputs + 1 weight: 19 of 32 registers */
#define KWSN_CONV_ROWS 8
#elif defined(__GNUC__) && defined(__AVX__) && !defined(KWSN_NO_VECTOR_EXT)
#define KWSN_VW 8
/* 6 rows x 2 ymm accumulators + 2 inputs + 1 weight: 15 of 16 registers (8 rows spilled) */
#define KWSN_CONV_ROWS 6
#elif defined(__GNUC__) && defined(__SSE2__) && !defined(KWSN_NO_VECTOR_EXT)
#define KWSN_VW 4
/* the x86-64 baseline: 6 rows x 2 xmm + 2 + 1 = 15 of 16 registers (the 8 x 16-float tile
 * of 32-byte vectors spilled, ~8x slower than plain loops) */
#define KWSN_CONV_ROWS 6
#else
#define KWSN_VW 0
#endif

#if KWSN_VW >= 8
#include <immintrin.h>

#include "kwsn_simd.h"
#endif

#if KWSN_VW
typedef float kwsn_vf __attribute__((vector_size(KWSN_VW * 4)));
/* Positions per conv register tile: two vectors. */
#define KWSN_CONV_TILE (2 * KWSN_VW)
/* by pointer, not by value: returning a vector type warns (-Wpsabi) on non-AVX builds */
#define VF_LOAD(v, p) memcpy(&(v), (p), sizeof(kwsn_vf))
#endif

#if defined(__GNUC__)
#define KWSN_INLINE static inline __attribute__((always_inline))
#else
#define KWSN_INLINE static inline
#endif

/* PyTorch avg_pool: float sum over the window, then divide by the window size. */
static void KWSN_K(kwsn_avgpool1d_f32)(float *out, const float *in, uint32_t C, uint32_t L,
                                       uint32_t k, uint32_t stride, uint32_t L_out) {
    for (uint32_t c = 0; c < C; c++) {
        const float *x = in + (size_t)c * L;
        float *y = out + (size_t)c * L_out;
        uint32_t t = 0;
#if KWSN_VW >= 8
        /* 8 windows at a time, each still summed left to right: 8 taps of the 8 windows read
         * as 8 rows of 8 floats and transposed (lane u = window t + u), instead of gathering
         * one float per lane and tap (raw_conv's AvgPool1d(16): ~1.4 us less a clip on avx2,
         * bench_int8's per-layer table) */
        const __m256 kv = _mm256_set1_ps((float)k);
        if (k >= 8u)
            for (; t + 8 <= L_out; t += 8) {
                const float *w0 = x + (size_t)t * stride;
                __m256 acc = _mm256_setzero_ps(), row[8], col[8];
                uint32_t j = 0;
                for (; j + 8u <= k; j += 8u) {
                    for (uint32_t u = 0; u < 8u; u++)
                        row[u] = _mm256_loadu_ps(w0 + (size_t)u * stride + j);
                    KWSN_TRANSPOSE8_PS(row, col);
                    for (uint32_t q = 0; q < 8u; q++) acc = _mm256_add_ps(acc, col[q]);
                }
                for (; j < k; j++) {
                    float v[8];
                    for (uint32_t u = 0; u < 8u; u++) v[u] = w0[(size_t)u * stride + j];
                    acc = _mm256_add_ps(acc, _mm256_loadu_ps(v));
                }
                _mm256_storeu_ps(y + t, _mm256_div_ps(acc, kv));
            }
#endif
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
static void KWSN_K(kwsn_maxpool1d_f32)(float *out, const float *in, uint32_t C, uint32_t L,
                                       uint32_t k, uint32_t stride, uint32_t L_out) {
    for (uint32_t c = 0; c < C; c++) {
        const float *x = in + (size_t)c * L;
        float *y = out + (size_t)c * L_out;
        uint32_t t = 0;
        if (k == 4 && stride == 4) { /* the model's case: constant k lets gcc vectorise */
#if KWSN_VW >= 8
            /* 8 windows (4 vectors, one window per 128-bit lane) transposed within the lanes:
             * e[j] lane (h, u) = tap j of window 2 u + h; the same compare-and-select chain
             * as below per lane, then one permute puts windows 0..7 in order (gcc's own
             * vectorisation of that loop gathered each tap with permutes and blends) */
            const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            for (; t + 8 <= L_out; t += 8) {
                const float *w = x + 4 * (size_t)t;
                const __m256 a = _mm256_loadu_ps(w), b = _mm256_loadu_ps(w + 8);
                const __m256 c2 = _mm256_loadu_ps(w + 16), d = _mm256_loadu_ps(w + 24);
                const __m256 t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);
                const __m256 t2 = _mm256_unpacklo_ps(c2, d), t3 = _mm256_unpackhi_ps(c2, d);
                const __m256 e[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                                     _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
                __m256 m = e[0];
                for (uint32_t j = 1; j < 4u; j++) {
                    const __m256 take = _mm256_or_ps(_mm256_cmp_ps(e[j], m, _CMP_GT_OQ),
                                                     _mm256_cmp_ps(e[j], e[j], _CMP_UNORD_Q));
                    m = _mm256_blendv_ps(m, e[j], take);
                }
                _mm256_storeu_ps(y + t, _mm256_permutevar8x32_ps(m, order));
            }
#endif
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

/* Output rows o0..o0+NO of a conv over the zero-padded input xp [C_in][Lp], in tiles of
 * KWSN_CONV_TILE positions whose accumulators stay in registers. Per output element the sum
 * order is bias, then i = 0.., j = 0.. (as the plain loop nest). A tail tile computes all
 * lanes (reading into the zeroed slack) and stores only the valid ones. */
#if KWSN_VW

/* x_i = xp + i * cs; tap j of output t reads x_i[t + off[j]] (off NULL: off[j] = j). The
 * weights of row o, channel i, tap j are w[(o * C_in + i) * k + j]; row o's L outputs go to
 * out + o * ostride. */
KWSN_INLINE void conv_rows(float *out, const float *xp, const float *w, const float *b,
                           uint32_t C_in, uint32_t L, size_t ostride, uint32_t cs, uint32_t k,
                           const uint32_t *off, uint32_t o0, const uint32_t NO) {
    const kwsn_vf zero = {0};
    for (uint32_t t0 = 0; t0 < L; t0 += KWSN_CONV_TILE) {
        kwsn_vf acc[KWSN_CONV_ROWS][2];
        for (uint32_t r = 0; r < NO; r++) {
            /* bias - (+0) is the bias exactly, -0 included (0 + -0 would be +0, unlike the
             * plain loop's y = bias) */
            acc[r][0] = (b ? b[o0 + r] : 0.0f) - zero;
            acc[r][1] = acc[r][0];
        }
        for (uint32_t i = 0; i < C_in; i++) {
            const float *x = xp + (size_t)i * cs + t0;
            const float *wi = w + (size_t)i * k;
            for (uint32_t j = 0; j < k; j++) {
                kwsn_vf x0, x1;
                const uint32_t oj = off ? off[j] : j;
                VF_LOAD(x0, x + oj);
                VF_LOAD(x1, x + oj + KWSN_VW);
                for (uint32_t r = 0; r < NO; r++) {
                    const float wr = wi[(size_t)(o0 + r) * C_in * k + j];
                    acc[r][0] += x0 * wr;
                    acc[r][1] += x1 * wr;
                }
            }
        }
        const uint32_t nt = L - t0 < KWSN_CONV_TILE ? L - t0 : KWSN_CONV_TILE;
        for (uint32_t r = 0; r < NO; r++) {
            float *y = out + (size_t)(o0 + r) * ostride + t0;
            if (nt == KWSN_CONV_TILE) { /* constant-size copies compile to two stores */
                memcpy(y, &acc[r][0], sizeof(kwsn_vf));
                memcpy(y + KWSN_VW, &acc[r][1], sizeof(kwsn_vf));
            } else {
                float tile[KWSN_CONV_TILE];
                memcpy(tile, &acc[r][0], sizeof(kwsn_vf));
                memcpy(tile + KWSN_VW, &acc[r][1], sizeof(kwsn_vf));
                for (uint32_t u = 0; u < nt; u++) y[u] = tile[u];
            }
        }
    }
}

/* conv_rows for a reduction of R = C_in * k <= KWSN_CONV_SMALL_R taps (a first conv on one
 * channel, a depthwise conv): one row at a time, its R weights broadcast once per row and
 * 4 vectors of positions a step, where the register tile of conv_rows spent most of its time
 * on its bias, stores and weight broadcasts (raw_conv's Conv1d(1, 16, 3): ~1 output a cycle).
 * Each output's sum in conv_rows' order (bias, then channels, then taps): the same bits. R is
 * a constant where inlined; reads stop within VW - 1 floats past x_i[L - 1 + off[j]], inside
 * the slack conv_rows reads too. */
#define KWSN_CONV_SMALL_R 4
KWSN_INLINE void conv_row_small(float *y, const float *xp, const float *wr, float bias,
                                uint32_t L, uint32_t cs, uint32_t k, const uint32_t *off,
                                const uint32_t R) {
    const kwsn_vf nz = -(kwsn_vf){0}; /* -0 + v = v for every v, -0 included: a splat */
    kwsn_vf wv[KWSN_CONV_SMALL_R];
    const float *xs[KWSN_CONV_SMALL_R];
    for (uint32_t r = 0; r < R; r++) {
        wv[r] = nz + wr[r];
        xs[r] = xp + (size_t)(r / k) * cs + (off ? off[r % k] : r % k);
    }
    const kwsn_vf bv = nz + bias;
    uint32_t t = 0;
    for (; t + 4 * KWSN_VW <= L; t += 4 * KWSN_VW) {
        kwsn_vf a0 = bv, a1 = bv, a2 = bv, a3 = bv;
        for (uint32_t r = 0; r < R; r++) {
            kwsn_vf x0, x1, x2, x3;
            VF_LOAD(x0, xs[r] + t);
            VF_LOAD(x1, xs[r] + t + KWSN_VW);
            VF_LOAD(x2, xs[r] + t + 2 * KWSN_VW);
            VF_LOAD(x3, xs[r] + t + 3 * KWSN_VW);
            a0 += x0 * wv[r];
            a1 += x1 * wv[r];
            a2 += x2 * wv[r];
            a3 += x3 * wv[r];
        }
        memcpy(y + t, &a0, sizeof(kwsn_vf));
        memcpy(y + t + KWSN_VW, &a1, sizeof(kwsn_vf));
        memcpy(y + t + 2 * KWSN_VW, &a2, sizeof(kwsn_vf));
        memcpy(y + t + 3 * KWSN_VW, &a3, sizeof(kwsn_vf));
    }
    for (; t < L; t += KWSN_VW) {
        kwsn_vf a0 = bv;
        for (uint32_t r = 0; r < R; r++) {
            kwsn_vf x0;
            VF_LOAD(x0, xs[r] + t);
            a0 += x0 * wv[r];
        }
        if (L - t >= KWSN_VW) {
            memcpy(y + t, &a0, sizeof(kwsn_vf));
        } else {
            float part[KWSN_VW];
            memcpy(part, &a0, sizeof(kwsn_vf));
            for (uint32_t u = 0; u < L - t; u++) y[t + u] = part[u];
        }
    }
}
#else
#define KWSN_CONV_ROWS 8
KWSN_INLINE void conv_rows(float *out, const float *xp, const float *w, const float *b,
                           uint32_t C_in, uint32_t L, size_t ostride, uint32_t cs, uint32_t k,
                           const uint32_t *off, uint32_t o0, const uint32_t NO) {
    for (uint32_t r = 0; r < NO; r++) {
        float *y = out + (size_t)(o0 + r) * ostride;
        for (uint32_t t = 0; t < L; t++) y[t] = b ? b[o0 + r] : 0.0f;
        for (uint32_t i = 0; i < C_in; i++) {
            const float *x = xp + (size_t)i * cs;
            const float *wk = w + ((size_t)(o0 + r) * C_in + i) * k;
            for (uint32_t j = 0; j < k; j++) {
                const float wj = wk[j]; /* hoisted: y could alias wk, which blocks SIMD */
                const float *xs = x + (off ? off[j] : j);
                for (uint32_t t = 0; t < L; t++) y[t] += wj * xs[t];
            }
        }
    }
}
#endif

/* Rows [0, C_out) of a conv (a group's): row o's L outputs to out + o * ostride, with
 * conv_rows' arguments; tiles of KWSN_CONV_ROWS rows, or conv_row_small for a small
 * reduction. */
KWSN_INLINE void conv_all_rows(float *out, const float *xp, const float *w, const float *b,
                               uint32_t C_in, uint32_t L, size_t ostride, uint32_t cs,
                               uint32_t k, const uint32_t *off, uint32_t C_out) {
#if KWSN_VW
    const uint32_t R = C_in * k;
    if (R <= KWSN_CONV_SMALL_R) {
        for (uint32_t o = 0; o < C_out; o++) {
            float *y = out + (size_t)o * ostride;
            const float *wr = w + (size_t)o * R, bias = b ? b[o] : 0.0f;
            switch (R) {
            case 1: conv_row_small(y, xp, wr, bias, L, cs, k, off, 1); break;
            case 2: conv_row_small(y, xp, wr, bias, L, cs, k, off, 2); break;
            case 3: conv_row_small(y, xp, wr, bias, L, cs, k, off, 3); break;
            default: conv_row_small(y, xp, wr, bias, L, cs, k, off, 4); break;
            }
        }
        return;
    }
#endif
    uint32_t o = 0;
    for (; o + KWSN_CONV_ROWS <= C_out; o += KWSN_CONV_ROWS)
        conv_rows(out, xp, w, b, C_in, L, ostride, cs, k, off, o, KWSN_CONV_ROWS);
    for (; o + 4 <= C_out; o += 4) conv_rows(out, xp, w, b, C_in, L, ostride, cs, k, off, o, 4);
    for (; o < C_out; o++) conv_rows(out, xp, w, b, C_in, L, ostride, cs, k, off, o, 1);
}

/* Conv1d, stride 1, zero "same" padding (k odd): out[o, t] = b[o] + sum_{i,j} w[o,i,j] *
 * in[i, t + j - k/2]. scratch holds the padded input: kwsn_conv1d_scratch_floats() floats.
 * oneDNN sums in another order (and with FMA), which costs a few ulp (docs/cnative.md). */
static void KWSN_K(kwsn_conv1d_same_f32)(float *out, const float *in, const float *w,
                                         const float *b, uint32_t C_in, uint32_t C_out, uint32_t L,
                                         uint32_t k, float *scratch) {
    const uint32_t pad = k / 2, Lp = L + k - 1;
    for (uint32_t i = 0; i < C_in; i++) {
        float *xp = scratch + (size_t)i * Lp;
        memset(xp, 0, pad * sizeof(float));
        memcpy(xp + pad, in + (size_t)i * L, L * sizeof(float));
        memset(xp + pad + L, 0, pad * sizeof(float));
    }
    memset(scratch + (size_t)C_in * Lp, 0, KWSN_CONV_SLACK * sizeof(float));
    conv_all_rows(out, scratch, w, b, C_in, L, L, Lp, k, NULL, C_out);
}

/* A stride-1 phase split's layout of a channel of cs elements (phase_split, q8_phase_split):
 * *lead padding elements, then the *body elements of the row, then zeros to cs (both clamped
 * to cs). */
KWSN_INLINE void split1_extent(const kwsn_conv1d_ex_args *a, uint32_t cs, uint32_t *lead,
                               uint32_t *body) {
    *lead = a->pad < cs ? a->pad : cs;
    *body = a->L < cs - *lead ? a->L : cs - *lead;
}

/* Channel x[L] zero-padded by a->pad and split into a->stride phases of cs / stride floats
 * (phase r holds x_pad[stride * u + r]); x NULL: a channel of zeros (a Conv2d's padding row). */
KWSN_INLINE void phase_split(float *xc, const float *x, const kwsn_conv1d_ex_args *a,
                             uint32_t cs) {
    const uint32_t s = a->stride, ph = cs / s;
    if (!x) {
        memset(xc, 0, (size_t)cs * sizeof(float));
        return;
    }
    if (s == 1u) { /* one phase: the pad, the row, zeros (the loop below, element by element,
                    * cost a Conv2d more than its arithmetic: kws_ds_cnn's depthwise 3 x 3) */
        uint32_t lead, body;
        split1_extent(a, cs, &lead, &body);
        memset(xc, 0, (size_t)lead * sizeof(float));
        memcpy(xc + lead, x, (size_t)body * sizeof(float));
        memset(xc + lead + body, 0, (size_t)(cs - lead - body) * sizeof(float));
        return;
    }
    for (uint32_t r = 0; r < s; r++) {
        float *p = xc + (size_t)r * ph;
        for (uint32_t u = 0; u < ph; u++) {
            const uint32_t q = s * u + r; /* < 2^26 + 2^7 * 2^6: no overflow */
            p[u] = (q >= a->pad && q < a->pad + a->L) ? x[q - a->pad] : 0.0f;
        }
    }
}

/* Where tap j of a phase-split channel starts: x_pad[s t + d j] = phase[(d j) % s][t + (d j)
 * / s]. */
KWSN_INLINE uint32_t tap_offset(const kwsn_conv1d_ex_args *a, uint32_t cs, uint32_t j) {
    const uint32_t s = a->stride;
    return ((a->dil * j) % s) * (cs / s) + (a->dil * j) / s;
}

/* General Conv1d: out[o, t] = b[o] + sum_{i in o's group, j} w[o, i, j] * x_pad[i, stride t +
 * dil j], summed bias, then channels, then taps (as the same-padding kernel). The padded
 * input is split into `stride` phases per channel so that every tap of consecutive outputs
 * reads consecutive floats. */
static void KWSN_K(kwsn_conv1d_ex_f32)(float *out, const float *in, const float *w,
                                       const float *b, const kwsn_conv1d_ex_args *a,
                                       float *scratch) {
    const uint32_t cs = (uint32_t)kwsn_conv1d_ex_channel_floats(a);
    for (uint32_t i = 0; i < a->C_in; i++)
        phase_split(scratch + (size_t)i * cs, in + (size_t)i * a->L, a, cs);
    memset(scratch + (size_t)a->C_in * cs, 0, KWSN_CONV_SLACK * sizeof(float));
    uint32_t off[KWSN_MAX_CONV_KERNEL];
    for (uint32_t j = 0; j < a->k; j++) off[j] = tap_offset(a, cs, j);
    const uint32_t gi = a->C_in / a->groups, go = a->C_out / a->groups, Lo = a->L_out;
    for (uint32_t g = 0; g < a->groups; g++) {
        const float *xg = scratch + (size_t)g * gi * cs;
        const float *wg = w + (size_t)g * go * gi * a->k;
        const float *bg = b ? b + (size_t)g * go : NULL;
        float *yg = out + (size_t)g * go * Lo;
        conv_all_rows(yg, xg, wg, bg, gi, Lo, Lo, cs, a->k, off, go);
    }
}

/* Floats the tap offsets of a Conv2d take at the start of its scratch (64-byte multiple). */
static size_t conv2d_off_floats(uint32_t n_taps) { return ((size_t)n_taps + 15u) & ~(size_t)15u; }

/* Tap (i, r, c) of a group (i < C_in / groups, kernel row r, column c) reads padded row
 * i * rows + r of the phase-split rows at column c's phase offset. */
KWSN_INLINE void conv2d_taps(uint32_t *off, const kwsn_conv2d_args *a,
                             const kwsn_conv1d_ex_args *row, uint32_t rows, uint32_t cs) {
    const uint32_t gi = a->C_in / a->groups;
    for (uint32_t i = 0; i < gi; i++)
        for (uint32_t r = 0; r < a->kh; r++)
            for (uint32_t c = 0; c < a->kw; c++)
                off[(i * a->kh + r) * a->kw + c] = (i * rows + r) * cs + tap_offset(row, cs, c);
}

/* Conv2d: out[o, y, x] = b[o] + sum_{i in o's group, r, c} w[o, i, r, c] * x_pad[i, sh y + r,
 * sw x + c], summed bias, then i, r, c in order. Every padded input row it reads is split
 * into phases as a Conv1d channel along W (kwsn_conv2d_row), so one output row of a group is
 * conv_rows over gi * kh * kw taps of one "channel" (the weights [o][i][r][c] are the taps in
 * that order). */
static void KWSN_K(kwsn_conv2d_f32)(float *out, const float *in, const float *w, const float *b,
                                    const kwsn_conv2d_args *a, float *scratch) {
    const kwsn_conv1d_ex_args row = kwsn_conv2d_row(a);
    const uint32_t cs = (uint32_t)kwsn_conv1d_ex_channel_floats(&row);
    const uint32_t rows = (uint32_t)kwsn_conv2d_rows(a);
    const uint32_t gi = a->C_in / a->groups, go = a->C_out / a->groups, nt = gi * a->kh * a->kw;
    uint32_t *off = (uint32_t *)(void *)scratch;
    float *xp = scratch + conv2d_off_floats(nt);
    for (uint32_t i = 0; i < a->C_in; i++)
        for (uint32_t r = 0; r < rows; r++) {
            const int in_image = r >= a->pt && r - a->pt < a->H;
            const float *x = in_image ? in + ((size_t)i * a->H + (r - a->pt)) * a->W : NULL;
            phase_split(xp + ((size_t)i * rows + r) * cs, x, &row, cs);
        }
    memset(xp + (size_t)a->C_in * rows * cs, 0, KWSN_CONV_SLACK * sizeof(float));
    conv2d_taps(off, a, &row, rows, cs);
    const uint32_t Wo = a->W_out;
    const size_t plane = (size_t)a->H_out * Wo;
    for (uint32_t g = 0; g < a->groups; g++) {
        const float *wg = w + (size_t)g * go * nt;
        const float *bg = b ? b + (size_t)g * go : NULL;
        for (uint32_t y = 0; y < a->H_out; y++) {
            const float *xg = xp + ((size_t)g * gi * rows + (size_t)y * a->sh) * cs;
            float *yg = out + (size_t)g * go * plane + (size_t)y * Wo;
            conv_all_rows(yg, xg, wg, bg, 1, Wo, plane, cs, nt, off, go);
        }
    }
}

/* x + y elementwise (safe in place: out may be x or y). */
static void KWSN_K(kwsn_add_f32)(float *out, const float *x, const float *y, uint32_t n) {
    for (uint32_t j = 0; j < n; j++) out[j] = x[j] + y[j];
}

/* The vector paths' int8 conv scratch (q8_im_carve): 64-byte parts of the reduction's
 * offsets (R uint32), the rows' start values (go int32), the packed weights (go x ceil(R / 2)
 * int32), the input as int16 (xs_elems + a zero row of Lp), im2col (ceil(R / 2) x Lp int32) and
 * KWSN_Q8_SLACK int32. Sized for the int16-pair layout, which bounds the u8-quad one; compiled
 * into every path, so the arena does not depend on the path. */
static inline size_t q8_r64(size_t b) { return (b + 63u) & ~(size_t)63u; }
/* Whether this library can run a vector int8 conv (KWSN_Q8_IM below): a multi-path x86-64
 * build, or a single-path build whose own target has AVX2 / AVX512BW. A build that cannot (an
 * MCU, a plain SSE2 build) sizes the int8 conv scratch for the baseline kernel alone, so its
 * arena keeps the compact layout (the im2col copy costs arena bytes only where it runs). */
#if defined(KWSN_MULTI_ISA) || (defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && \
                                (defined(__AVX512BW__) || defined(__AVX2__)))
#define KWSN_Q8_IM_SCRATCH 1
#else
#define KWSN_Q8_IM_SCRATCH 0
#endif
static inline uint32_t q8_im_lp(uint32_t L_out) { return (L_out + 31u) & ~31u; }
static inline size_t q8_im_scratch_bytes(uint32_t R, uint32_t go, uint32_t L_out, size_t xs_elems) {
    const size_t g2 = (R + 1u) / 2u, Lp = q8_im_lp(L_out);
    return q8_r64((size_t)R * 4u) + q8_r64((size_t)go * 4u) + q8_r64((size_t)go * g2 * 4u) +
           q8_r64(xs_elems * 2u) + q8_r64(Lp * 2u) + q8_r64(g2 * Lp * 4u) +
           KWSN_Q8_SLACK * sizeof(int32_t);
}

#ifndef KWSN_ISA_VARIANT
size_t kwsn_conv1d_scratch_floats(uint32_t C_in, uint32_t L, uint32_t k) {
    return (size_t)C_in * (L + k - 1) + KWSN_CONV_SLACK;
}

size_t kwsn_conv1d_ex_channel_floats(const kwsn_conv1d_ex_args *a) {
    /* each phase: L_out positions, the taps' reach (dil (k - 1)) / stride, one spare */
    return (size_t)a->stride * (a->L_out + (a->dil * (a->k - 1u)) / a->stride + 1u);
}

size_t kwsn_conv1d_ex_scratch_floats(const kwsn_conv1d_ex_args *a) {
    return (size_t)a->C_in * kwsn_conv1d_ex_channel_floats(a) + KWSN_CONV_SLACK;
}

size_t kwsn_conv1d_q8_scratch_bytes(const kwsn_conv1d_ex_args *a) {
    const size_t cs = kwsn_conv1d_ex_channel_floats(a);
    const size_t base = ((size_t)a->C_in * cs + KWSN_Q8_SLACK) * sizeof(int32_t);
    if (!KWSN_Q8_IM_SCRATCH) return base;
    const size_t im = q8_im_scratch_bytes(a->C_in / a->groups * a->k, a->C_out / a->groups,
                                          a->L_out, (size_t)a->C_in * cs);
    return base > im ? base : im;
}

kwsn_conv1d_ex_args kwsn_conv2d_row(const kwsn_conv2d_args *a) {
    kwsn_conv1d_ex_args r;
    r.C_in = a->C_in;
    r.C_out = a->C_out;
    r.L = a->W;
    r.k = a->kw;
    r.stride = a->sw;
    r.pad = a->pl;
    r.dil = 1u;
    r.groups = a->groups;
    r.L_out = a->W_out;
    return r;
}

size_t kwsn_conv2d_rows(const kwsn_conv2d_args *a) {
    return (size_t)(a->H_out - 1u) * a->sh + a->kh;
}

/* elements (floats or int32) of the offsets and the padded rows */
static size_t conv2d_elems(const kwsn_conv2d_args *a) {
    const kwsn_conv1d_ex_args row = kwsn_conv2d_row(a);
    const size_t nt = (size_t)(a->C_in / a->groups) * a->kh * a->kw;
    return conv2d_off_floats((uint32_t)nt) +
           (size_t)a->C_in * kwsn_conv2d_rows(a) * kwsn_conv1d_ex_channel_floats(&row);
}

size_t kwsn_conv2d_scratch_floats(const kwsn_conv2d_args *a) {
    return conv2d_elems(a) + KWSN_CONV_SLACK;
}

size_t kwsn_conv2d_q8_scratch_bytes(const kwsn_conv2d_args *a) {
    const size_t base = (conv2d_elems(a) + KWSN_Q8_SLACK) * sizeof(int32_t);
    if (!KWSN_Q8_IM_SCRATCH) return base;
    const kwsn_conv1d_ex_args row = kwsn_conv2d_row(a);
    const size_t xs = (size_t)a->C_in * kwsn_conv2d_rows(a) * kwsn_conv1d_ex_channel_floats(&row);
    const size_t im = q8_im_scratch_bytes(a->C_in / a->groups * a->kh * a->kw,
                                          a->C_out / a->groups, a->W_out, xs);
    return base > im ? base : im;
}

size_t kwsn_asp_scratch_floats(uint32_t C, uint32_t L, uint32_t H) {
    return 2u * (size_t)C + H + (size_t)H * L + L;
}
#endif

/* Sum and then sum of squared deviations from the mean, in KWSN_LN_LANES = 32 lanes: lane u
 * takes x[32 q + u] in order of q; the lanes are then added in lane order, then the tail.
 * Every path uses the same 32 lanes, so the result does not depend on the vector width.
 * (32 lanes = 4 independent vector accumulators on AVX-512, 8 on AVX2/SSE2: the add latency
 * no longer serialises the pass, as the former 8 lanes in one register did.) */
#define KWSN_LN_LANES 32
static void ln_moments(const float *x, uint32_t n, KWSN_LN_ACC *mean, KWSN_LN_ACC *ssd) {
    uint32_t j = 0;
    KWSN_LN_ACC s = 0, v = 0;
#if (KWSN_VW == 16 || KWSN_VW == 8) && !defined(KWSN_LN_FLOAT_ACC)
    /* 32 / LN_DW double vectors of LN_DW lanes (4 zmm of 8 or 8 ymm of 4; a 64-byte vector
     * would spill on AVX2): lane u is vector u / LN_DW, element u % LN_DW. vcvtps2pd by
     * intrinsic: gcc 12 turned __builtin_convertvector (float -> double) into narrower
     * conversions, inserts and stack round trips (~1 cycle per element; the same sums). */
#if KWSN_VW == 16
#define LN_DW 8
    typedef __m512d ln_vd;
#define LN_LOAD(p) _mm512_cvtps_pd(_mm256_loadu_ps(p))
#define LN_ZERO _mm512_setzero_pd
#define LN_SET1 _mm512_set1_pd
#define LN_ADD _mm512_add_pd
#define LN_SUB _mm512_sub_pd
#define LN_MUL _mm512_mul_pd
#define LN_STORE _mm512_storeu_pd
#else
#define LN_DW 4
    typedef __m256d ln_vd;
#define LN_LOAD(p) _mm256_cvtps_pd(_mm_loadu_ps(p))
#define LN_ZERO _mm256_setzero_pd
#define LN_SET1 _mm256_set1_pd
#define LN_ADD _mm256_add_pd
#define LN_SUB _mm256_sub_pd
#define LN_MUL _mm256_mul_pd
#define LN_STORE _mm256_storeu_pd
#endif
    enum { NV = KWSN_LN_LANES / LN_DW };
    ln_vd sv[NV], qv[NV];
    double lanes[KWSN_LN_LANES];
    for (int q = 0; q < NV; q++) sv[q] = LN_ZERO(), qv[q] = LN_ZERO();
    for (; j + KWSN_LN_LANES <= n; j += KWSN_LN_LANES)
        for (int q = 0; q < NV; q++) sv[q] = LN_ADD(sv[q], LN_LOAD(x + j + LN_DW * q));
    for (int q = 0; q < NV; q++) LN_STORE(lanes + LN_DW * q, sv[q]);
    for (int u = 0; u < KWSN_LN_LANES; u++) s += lanes[u];
    for (uint32_t t = j; t < n; t++) s += x[t];
    const double m = s / (double)n;
    const ln_vd mv = LN_SET1(m);
    for (j = 0; j + KWSN_LN_LANES <= n; j += KWSN_LN_LANES)
        for (int q = 0; q < NV; q++) {
            const ln_vd d = LN_SUB(LN_LOAD(x + j + LN_DW * q), mv);
            qv[q] = LN_ADD(qv[q], LN_MUL(d, d));
        }
    for (int q = 0; q < NV; q++) LN_STORE(lanes + LN_DW * q, qv[q]);
    for (int u = 0; u < KWSN_LN_LANES; u++) v += lanes[u];
#undef LN_DW
#undef LN_LOAD
#undef LN_ZERO
#undef LN_SET1
#undef LN_ADD
#undef LN_SUB
#undef LN_MUL
#undef LN_STORE
#elif KWSN_VW == 4 && !defined(KWSN_LN_FLOAT_ACC)
    /* 8 xmm pairs of 4 doubles: lanes 4a + b */
    typedef float f4 __attribute__((vector_size(16)));
    typedef double d4 __attribute__((vector_size(32)));
    d4 sv[8] = {{0}};
    for (; j + 32 <= n; j += 32)
        for (int a = 0; a < 8; a++) {
            f4 xa;
            memcpy(&xa, x + j + 4 * a, sizeof(xa));
            sv[a] += __builtin_convertvector(xa, d4);
        }
    for (int a = 0; a < 8; a++)
        for (int u = 0; u < 4; u++) s += sv[a][u];
    for (uint32_t t = j; t < n; t++) s += x[t];
    const double m = s / (double)n;
    d4 qv[8] = {{0}};
    for (j = 0; j + 32 <= n; j += 32)
        for (int a = 0; a < 8; a++) {
            f4 xa;
            memcpy(&xa, x + j + 4 * a, sizeof(xa));
            const d4 d = __builtin_convertvector(xa, d4) - m;
            qv[a] += d * d;
        }
    for (int a = 0; a < 8; a++)
        for (int u = 0; u < 4; u++) v += qv[a][u];
#else
    KWSN_LN_ACC ps[KWSN_LN_LANES] = {0}, pv[KWSN_LN_LANES] = {0};
    for (; j + KWSN_LN_LANES <= n; j += KWSN_LN_LANES)
        for (uint32_t u = 0; u < KWSN_LN_LANES; u++) ps[u] += (KWSN_LN_ACC)x[j + u];
    for (uint32_t u = 0; u < KWSN_LN_LANES; u++) s += ps[u];
    for (uint32_t t = j; t < n; t++) s += x[t];
    const KWSN_LN_ACC m = s / (KWSN_LN_ACC)n;
    for (j = 0; j + KWSN_LN_LANES <= n; j += KWSN_LN_LANES)
        for (uint32_t u = 0; u < KWSN_LN_LANES; u++) {
            const KWSN_LN_ACC d = (KWSN_LN_ACC)x[j + u] - m;
            pv[u] += d * d;
        }
    for (uint32_t u = 0; u < KWSN_LN_LANES; u++) v += pv[u];
#endif
    for (; j < n; j++) {
        const KWSN_LN_ACC d = (KWSN_LN_ACC)x[j] - m;
        v += d * d;
    }
    *mean = m;
    *ssd = v;
}
/* The LayerNorm's elementwise pass over len elements: y = (x - mean) * rstd * g + b in
 * PyTorch's order (g, b NULL: no affine), then the ReLU when `relu`. Safe in place. */
KWSN_INLINE void ln_affine(float *y, const float *x, const float *g, const float *b, float mean,
                           float rstd, uint32_t len, int relu) {
    uint32_t j;
    if (g && relu) {
        for (j = 0; j < len; j++) {
            const float t = (x[j] - mean) * rstd * g[j] + b[j];
            y[j] = t < 0.0f ? 0.0f : t;
        }
    } else if (g) {
        for (j = 0; j < len; j++) y[j] = (x[j] - mean) * rstd * g[j] + b[j];
    } else if (relu) {
        for (j = 0; j < len; j++) {
            const float t = (x[j] - mean) * rstd;
            y[j] = t < 0.0f ? 0.0f : t;
        }
    } else {
        for (j = 0; j < len; j++) y[j] = (x[j] - mean) * rstd;
    }
}

/* LayerNorm over the last n elements of each of `outer` rows: mean, then biased variance,
 * eps inside the sqrt, then (x - mean) * rstd * gamma + beta, in PyTorch's order; with
 * `relu`, a following ReLU is applied in the same pass (the same bits as the two layers).
 * gamma/beta may be NULL (no elementwise affine). pool == 1: out is [outer][n], safe in place
 * (out == in). pool > 1 (at most KWSN_LN_POOL_MAX; kwsn_model.c fuses LayerNorm [-> ReLU] ->
 * MaxPool1d(pool, stride pool)): each group of n is n / row rows of `row` elements and out
 * gets each row's row / pool window maxima (the MaxPool's output), the normalised values
 * passing through a stack buffer, never through out: the same bits as the layers one by one,
 * without writing and reading back the two full-size tensors. Never in place. */
static void KWSN_K(kwsn_layernorm_f32)(float *out, const float *in, const float *gamma,
                                       const float *beta, float eps, uint32_t outer, uint32_t n,
                                       int relu, uint32_t pool, uint32_t row) {
    const uint32_t rows = pool > 1u ? n / row : 0u, wpr = pool > 1u ? row / pool : 0u;
    for (uint32_t r = 0; r < outer; r++) {
        const float *x = in + (size_t)r * n;
        KWSN_LN_ACC mean_acc, v;
        ln_moments(x, n, &mean_acc, &v);
        const float mean = (float)mean_acc;
        const float var = (float)(v / (KWSN_LN_ACC)n);
        const float rstd = 1.0f / sqrtf(var + eps);
        if (pool <= 1u) {
            ln_affine(out + (size_t)r * n, x, gamma, beta, mean, rstd, n, relu);
            continue;
        }
        float *y = out + (size_t)r * rows * wpr;
        const uint32_t per = KWSN_LN_POOL_MAX / pool; /* windows per buffer, >= 1 */
        for (uint32_t q = 0; q < rows; q++)
            for (uint32_t w0 = 0; w0 < wpr; w0 += per) {
                const uint32_t nw = wpr - w0 < per ? wpr - w0 : per;
                const size_t off = (size_t)q * row + (size_t)w0 * pool;
                float buf[KWSN_LN_POOL_MAX];
                ln_affine(buf, x + off, gamma ? gamma + off : NULL, beta ? beta + off : NULL,
                          mean, rstd, nw * pool, relu);
                KWSN_K(kwsn_maxpool1d_f32)(y + (size_t)q * wpr + w0, buf, 1u, nw * pool, pool,
                                           pool, nw);
            }
    }
}

/* ReLU; NaN stays NaN, as torch.relu. Safe in place. */
static void KWSN_K(kwsn_relu_f32)(float *out, const float *in, uint32_t n) {
    for (uint32_t j = 0; j < n; j++) out[j] = in[j] < 0.0f ? 0.0f : in[j];
}

/* AdaptiveAvgPool1d(1): float sum over L, then divide by L. */
static void KWSN_K(kwsn_adaptive_avgpool1_f32)(float *out, const float *in, uint32_t C,
                                               uint32_t L) {
    for (uint32_t c = 0; c < C; c++) {
        const float *x = in + (size_t)c * L;
        float acc = 0.0f;
        for (uint32_t t = 0; t < L; t++) acc += x[t];
        out[c] = acc / (float)L;
    }
}

/* Linear: out[o] = b[o] + sum_i w[o, i] * in[i]   (w is [n_out, n_in], row-major). */
static void KWSN_K(kwsn_linear_f32)(float *out, const float *in, const float *w, const float *b,
                                    uint32_t n_in, uint32_t n_out) {
    for (uint32_t o = 0; o < n_out; o++) {
        const float *wr = w + (size_t)o * n_in;
        float acc = 0.0f;
        for (uint32_t i = 0; i < n_in; i++) acc += wr[i] * in[i];
        out[o] = b ? acc + b[o] : acc;
    }
}

/* SelfAttentionPooling over time (kwsnet.nn.pooling, every frame valid): score
 * s_t = b + sum_c w[c] x[c, t] (channels in order), a = softmax_t(s) (max subtracted, then
 * exp, a float sum over t in order, then a divide), out[c] = sum_t a_t x[c, t] (t in
 * order). PyTorch's matmul and softmax sum in other orders: a few ulp apart. */
static void KWSN_K(kwsn_attn_pool_f32)(float *out, const float *x, const float *w, float b,
                                       uint32_t C, uint32_t L, float *scratch) {
    float *s = scratch;
    for (uint32_t t = 0; t < L; t++) s[t] = 0.0f;
    for (uint32_t c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * L;
        const float wc = w[c];
        for (uint32_t t = 0; t < L; t++) s[t] += wc * xc[t];
    }
    float mx = s[0] + b;
    for (uint32_t t = 0; t < L; t++) {
        s[t] += b;
        mx = s[t] > mx ? s[t] : mx;
    }
    float sum = 0.0f;
    for (uint32_t t = 0; t < L; t++) {
        s[t] = expf(s[t] - mx);
        sum += s[t];
    }
    for (uint32_t t = 0; t < L; t++) s[t] /= sum;
    for (uint32_t c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * L;
        float acc = 0.0f;
        for (uint32_t t = 0; t < L; t++) acc += s[t] * xc[t];
        out[c] = acc;
    }
}

/* e^x on x <= 0, x clamped to >= -80 (the result stays a normal float): x = n ln2 + r with
 * n = floor(x log2(e) + 1/2) and ln2 in two parts (Cody-Waite), e^r by its degree-7 Taylor
 * polynomial (Horner, |r| <= 0.35: under 2 ulp), times 2^n made from its bits. Only +, *,
 * floor and a power-of-two scaling, each rounded once: the same bits on every path and
 * compiler, and in kwsnet/quant/islands.py (libm's expf differs by an ulp between
 * libraries, which the int8 float islands cannot have). */
KWSN_INLINE float kwsn_exp_neg(float x) {
    x = x > -80.0f ? x : -80.0f; /* NaN -> -80 */
    x = x < 0.0f ? x : 0.0f;
    const float n = floorf(x * 0x1.715476p+0f + 0.5f);
    float r = x - n * 0x1.63p-1f;
    r = r - n * -0x1.bd0106p-13f;
    float p = 0x1.a01a02p-13f;
    p = p * r + 0x1.6c16c2p-10f;
    p = p * r + 0x1.111112p-7f;
    p = p * r + 0x1.555556p-5f;
    p = p * r + 0x1.555556p-3f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* n in [-116, 0] */
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

/* tanh(a) = sign(a) (1 - e^(-2|a|)) / (1 + e^(-2|a|)) on kwsn_exp_neg (absolute error ~1e-7). */
KWSN_INLINE float kwsn_tanh(float a) {
    const float t = kwsn_exp_neg(-2.0f * fabsf(a));
    const float y = (1.0f - t) / (1.0f + t);
    return a < 0.0f ? -y : y;
}

/* Weighted mean and std over L frames: m = sum_t w_t x_t, m2 = sum_t w_t (x_t x_t) (t in
 * order), std = sqrt(max(m2 - m m, eps)); w == NULL: every weight is u. */
KWSN_INLINE void asp_mean_std(const float *x, const float *w, float u, uint32_t L, float eps,
                              float *mean, float *std) {
    float m = 0.0f, m2 = 0.0f;
    for (uint32_t t = 0; t < L; t++) {
        const float wt = w ? w[t] : u;
        m += wt * x[t];
        m2 += wt * (x[t] * x[t]);
    }
    const float var = m2 - m * m;
    *mean = m;
    *std = sqrtf(var > eps ? var : eps);
}

/* AttentiveStatisticsPooling (kwsnet.nn.pooling, every frame valid), in this order (which
 * kwsnet/quant/islands.py mirrors op for op):
 *   context (global_context): mean_c, std_c with uniform weights u = 1 / L;
 *   g[h] = (sum_j w1[h, C + j] ctx[j], j over [mean, std] in order) + b1[h]  (else b1[h]);
 *   hid[h, t] = tanh((sum_k w1[h, k] x[k, t], k in order) + g[h]);
 *   per channel c: s_t = (sum_h w2[c, h] hid[h, t], h in order) + b2[c]; a = softmax_t(s)
 *   (max subtracted, kwsn_exp_neg, sum over t in order, a divide); out[c], out[C + c] =
 *   the a-weighted mean and std of x[c, :]. */
static void KWSN_K(kwsn_attn_stats_pool_f32)(float *out, const float *x, const kwsn_asp_args *a,
                                             float *scratch) {
    const uint32_t C = a->C, L = a->L, H = a->H;
    const size_t A = a->global_context ? 3u * (size_t)C : C;
    float *ctx = scratch, *g = ctx + 2u * (size_t)C, *hid = g + H, *s = hid + (size_t)H * L;
    if (a->global_context) {
        const float u = 1.0f / (float)L;
        for (uint32_t c = 0; c < C; c++)
            asp_mean_std(x + (size_t)c * L, NULL, u, L, a->eps, &ctx[c], &ctx[C + c]);
    }
    for (uint32_t h = 0; h < H; h++) {
        const float *w1 = a->w1 + (size_t)h * A;
        float acc = 0.0f;
        for (size_t j = 0; a->global_context && j < 2u * (size_t)C; j++) acc += w1[C + j] * ctx[j];
        g[h] = a->global_context ? acc + a->b1[h] : a->b1[h];
        float *hh = hid + (size_t)h * L;
        for (uint32_t t = 0; t < L; t++) hh[t] = 0.0f;
        for (uint32_t k = 0; k < C; k++) {
            const float wk = w1[k], *xk = x + (size_t)k * L;
            for (uint32_t t = 0; t < L; t++) hh[t] += wk * xk[t];
        }
        for (uint32_t t = 0; t < L; t++) hh[t] = kwsn_tanh(hh[t] + g[h]);
    }
    for (uint32_t c = 0; c < C; c++) {
        const float *w2 = a->w2 + (size_t)c * H;
        for (uint32_t t = 0; t < L; t++) s[t] = 0.0f;
        for (uint32_t h = 0; h < H; h++) {
            const float wh = w2[h], *hh = hid + (size_t)h * L;
            for (uint32_t t = 0; t < L; t++) s[t] += wh * hh[t];
        }
        float mx = s[0] + a->b2[c];
        for (uint32_t t = 0; t < L; t++) {
            s[t] += a->b2[c];
            mx = s[t] > mx ? s[t] : mx;
        }
        float sum = 0.0f;
        for (uint32_t t = 0; t < L; t++) {
            s[t] = kwsn_exp_neg(s[t] - mx);
            sum += s[t];
        }
        for (uint32_t t = 0; t < L; t++) s[t] /= sum;
        asp_mean_std(x + (size_t)c * L, s, 0.0f, L, a->eps, &out[c], &out[C + c]);
    }
}

/* out = x / max(sqrt(sum_i x_i x_i), eps) (i in order; a divide per element, as
 * torch.nn.functional.normalize); safe in place. */
static void KWSN_K(kwsn_l2norm_f32)(float *out, const float *x, uint32_t n, float eps) {
    float ss = 0.0f;
    for (uint32_t i = 0; i < n; i++) ss += x[i] * x[i];
    const float norm = sqrtf(ss);
    const float d = norm > eps ? norm : eps;
    for (uint32_t i = 0; i < n; i++) out[i] = x[i] / d;
}

/* Per-row affine over rows r of W floats: out[r, w] = x[r, w] * scale[r] + shift[r] (a
 * multiply and an add, each rounded; SubSpectralNorm at inference). Safe in place. */
static void KWSN_K(kwsn_row_affine_f32)(float *out, const float *x, const float *scale,
                                        const float *shift, uint32_t rows, uint32_t W) {
    for (uint32_t r = 0; r < rows; r++) {
        const float s = scale[r], b = shift[r];
        const float *xr = x + (size_t)r * W;
        float *y = out + (size_t)r * W;
        for (uint32_t w = 0; w < W; w++) y[w] = xr[w] * s + b;
    }
}

/* SiLU, x sigmoid(x), on kwsn_exp_neg: x / (1 + e^-x) for x >= 0, x e^x / (1 + e^x) for x in
 * [-80, 0) (no overflow either way), -0 below -80 (|x sigmoid(x)| < 2e-33 there); NaN stays
 * NaN. Safe in place. */
static void KWSN_K(kwsn_silu_f32)(float *out, const float *x, uint32_t n) {
    for (uint32_t j = 0; j < n; j++) {
        const float v = x[j];
        const float e = kwsn_exp_neg(-fabsf(v));
        if (v >= 0.0f)
            out[j] = v / (1.0f + e);
        else if (v >= -80.0f)
            out[j] = v * e / (1.0f + e);
        else
            out[j] = v < -80.0f ? -0.0f : v;
    }
}


/* ------------------------------------------------------------------ int8 kernels
 *
 * Integer arithmetic (kwsnet/quant/reference.py): every intermediate is exact and the
 * loader proved that no accumulator leaves int32 (sum |w| * 255 + |bias| <= INT32_MAX), so
 * the sum order does not matter and every path gives the same bits. The hot loops are
 * int16 x int16 -> int32 over contiguous positions, which gcc vectorises per target. */


/* dst[u] = kwsn_mbqm_r(src[u], m, right) (m in [0, 2^31), right in 0..31; dst may be src).
 * On AVX2 / AVX-512 with 32 x 32 -> 64 signed multiplies (vpmuldq) of the even and the odd
 * int32 lanes instead of the compiler's emulated 64 x 64 product. With P = x m (|P| < 2^62),
 * srdhm's h = floor((P + 2^30) / 2^31) fits int32.
 * AVX2: h is bits 31..62 of the 64-bit sum P + 2^30, which a logical shift puts in the low 32
 * bits (even lanes: >> 31) or the high 32 bits (odd lanes: << 1); rdbpot then in int32
 * lanes, the same expression as kwsn_mbqm_r (arithmetic shifts).
 * AVX-512 (64-bit arithmetic shifts): both roundings in one. rdbpot(h, e) rounds half away
 * from zero: floor((h + c) / 2^e) with c = 2^(e-1) - [h < 0] for e >= 1 (h >= 0: +1 iff the
 * remainder reaches 2^(e-1); h < 0: iff it exceeds 2^(e-1)), c = 0 for e = 0; and h + c =
 * floor((P + 2^30 + c 2^31) / 2^31) for an integer c, floor(floor(a / p) / q) =
 * floor(a / (p q)), and h < 0 iff P < -2^30; so the result is
 * floor((P + 2^30 + 2^(e-1) 2^31 - [P < -2^30] [e > 0] 2^31) / 2^(31 + e)), an arithmetic
 * shift of a 64-bit sum below 2^62 + 2^61 + 2^30 in magnitude, whose low 32 bits are the
 * int32 result (each lane's, put back in place by one masked dword shuffle). */
#if defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && (defined(__AVX2__) || defined(__AVX512F__))
#include <immintrin.h>
#endif
#if defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX512BW__)
KWSN_INLINE __mmask64 q8_mask64(uint32_t n) { /* the first min(n, 64) bytes */
    return n >= 64u ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1u);
}
#endif
#if defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX512F__)
#define KWSN_Q8_MBQM_LANES 16
typedef struct {
    __m512i mv, add, sub, neg; /* m; 2^30 + 2^(e-1) 2^31; [e > 0] 2^31; -2^30 (int64) */
    __m128i cnt;               /* 31 + e */
} q8_mbqm_k;
KWSN_INLINE q8_mbqm_k q8_mbqm_consts(int32_t m, int32_t right) {
    q8_mbqm_k k;
    k.mv = _mm512_set1_epi32(m);
    k.add = _mm512_set1_epi64(((int64_t)1 << 30) + ((((int64_t)1 << right) >> 1) << 31));
    k.sub = _mm512_set1_epi64(right > 0 ? (int64_t)1 << 31 : 0);
    k.neg = _mm512_set1_epi64(-((int64_t)1 << 30));
    k.cnt = _mm_cvtsi32_si128(31 + right);
    return k;
}
/* kwsn_mbqm_r of 8 int64 lanes of products P, in their low 32 bits */
KWSN_INLINE __m512i q8_mbqm_p64(__m512i p, const q8_mbqm_k *k) {
    const __m512i t = _mm512_add_epi64(p, k->add);
    return _mm512_sra_epi64(_mm512_mask_sub_epi64(t, _mm512_cmplt_epi64_mask(p, k->neg), t, k->sub),
                            k->cnt);
}
/* kwsn_mbqm_r of 16 int32 lanes */
KWSN_INLINE __m512i q8_mbqm_lanes(__m512i x, const q8_mbqm_k *k) {
    const __m512i qe = q8_mbqm_p64(_mm512_mul_epi32(x, k->mv), k);
    const __m512i qo = q8_mbqm_p64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), k->mv), k);
    return _mm512_mask_shuffle_epi32(qe, (__mmask16)0xAAAA, qo, _MM_PERM_CDAB);
}
#elif defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX2__)
#define KWSN_Q8_MBQM_LANES 8
typedef struct {
    __m256i mv, nudge, maskv, half;
    __m128i cnt;
} q8_mbqm_k;
KWSN_INLINE q8_mbqm_k q8_mbqm_consts(int32_t m, int32_t right) {
    q8_mbqm_k k;
    k.mv = _mm256_set1_epi32(m);
    k.nudge = _mm256_set1_epi64x((int64_t)1 << 30);
    k.maskv = _mm256_set1_epi32((int32_t)(((int64_t)1 << right) - 1));
    k.half = _mm256_srai_epi32(k.maskv, 1);
    k.cnt = _mm_cvtsi32_si128(right);
    return k;
}
/* kwsn_mbqm_r of 8 int32 lanes */
KWSN_INLINE __m256i q8_mbqm_lanes(__m256i x, const q8_mbqm_k *k) {
    const __m256i pe = _mm256_add_epi64(_mm256_mul_epi32(x, k->mv), k->nudge);
    const __m256i po = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), k->mv), k->nudge);
    const __m256i h =
        _mm256_blend_epi32(_mm256_srli_epi64(pe, 31), _mm256_slli_epi64(po, 1), 0xAA);
    const __m256i thr = _mm256_sub_epi32(k->half, _mm256_srai_epi32(h, 31));
    const __m256i up = _mm256_cmpgt_epi32(_mm256_and_si256(h, k->maskv), thr); /* -1 */
    return _mm256_sub_epi32(_mm256_sra_epi32(h, k->cnt), up);
}
#endif

KWSN_INLINE void q8_mbqm_r_n(int32_t *dst, const int32_t *src, uint32_t n, int32_t m,
                             int32_t right) {
    uint32_t u = 0;
#if defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX512F__)
    {
        const q8_mbqm_k k = q8_mbqm_consts(m, right);
        for (; u + 16u <= n; u += 16u) {
            const __m512i x = _mm512_loadu_si512((const void *)(src + u));
            _mm512_storeu_si512((void *)(dst + u), q8_mbqm_lanes(x, &k));
        }
    }
#elif defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX2__)
    {
        const q8_mbqm_k k = q8_mbqm_consts(m, right);
        for (; u + 8u <= n; u += 8u) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(src + u));
            _mm256_storeu_si256((__m256i *)(void *)(dst + u), q8_mbqm_lanes(x, &k));
        }
    }
#endif
    for (; u < n; u++) dst[u] = kwsn_mbqm_r(src[u], m, right);
}

#if KWSN_Q8_MBQM_LANES == 16
/* The requantisation of 16 int32 lanes to 16 codes for shift <= 0 (see q8_requant_row), its
 * constants made once per output channel. */
typedef struct {
    q8_mbqm_k k;
    __m512i zpv, lov, hiv;
} q8_rq_k;
KWSN_INLINE q8_rq_k q8_rq_consts(int32_t m, int32_t shift, int32_t zp, int32_t lo, int32_t hi) {
    q8_rq_k c;
    c.k = q8_mbqm_consts(m, -shift);
    c.zpv = _mm512_set1_epi32(zp);
    c.lov = _mm512_set1_epi32(lo - zp);
    c.hiv = _mm512_set1_epi32(hi - zp);
    return c;
}
/* the codes as int32 lanes: clamp(v + zp, lo, hi) as clamp(v, lo - zp, hi - zp) + zp (the
 * same integer, and nothing overflows: |lo - zp|, |hi - zp| <= 255), which is also
 * q8_requant_row's clamp(clamp(v, -2^24, 2^24) + zp, lo, hi) */
KWSN_INLINE __m512i q8_rq_lanes32(__m512i acc, const q8_rq_k *c) {
    const __m512i v = q8_mbqm_lanes(acc, &c->k);
    return _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, c->lov), c->hiv), c->zpv);
}
KWSN_INLINE __m128i q8_rq_lanes(__m512i acc, const q8_rq_k *c) {
    /* vpmovdb to a register, then a plain store: vpmovdb to memory is slow (Zen 4) */
    return _mm512_cvtepi32_epi8(q8_rq_lanes32(acc, c));
}
#elif KWSN_Q8_MBQM_LANES == 8
/* The same on AVX2, 8 lanes: the requantisation constants of one output channel. */
typedef struct {
    q8_mbqm_k k;
    __m256i zpv, lov, hiv;
} q8_rq_k;
KWSN_INLINE q8_rq_k q8_rq_consts(int32_t m, int32_t shift, int32_t zp, int32_t lo, int32_t hi) {
    q8_rq_k c;
    c.k = q8_mbqm_consts(m, -shift);
    c.zpv = _mm256_set1_epi32(zp);
    c.lov = _mm256_set1_epi32(lo - zp);
    c.hiv = _mm256_set1_epi32(hi - zp);
    return c;
}
/* the codes as int32 lanes, clamp(v, lo - zp, hi - zp) + zp as on AVX-512 (the same integer
 * as q8_requant_row's clamp(clamp(v, -2^24, 2^24) + zp, lo, hi)) */
KWSN_INLINE __m256i q8_rq_lanes32(__m256i acc, const q8_rq_k *c) {
    const __m256i v = q8_mbqm_lanes(acc, &c->k);
    return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, c->lov), c->hiv), c->zpv);
}
/* 32 codes from four vectors of 8 int32 codes a, b, c, d (every lane within int8, so both
 * saturating packs are exact): vpackssdw / vpacksswb work per 128-bit lane, leaving the
 * dwords (4 codes each) in the order a0 b0 c0 d0 | a1 b1 c1 d1 (x0: elements 0..3 of x,
 * x1: 4..7); one vpermd puts them back as a0 a1 b0 b1 c0 c1 d0 d1, i.e. a, b, c, d in
 * element order. Three shuffles for 32 codes instead of three per 8. */
KWSN_INLINE __m256i q8_narrow32(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i w = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
/* 16 codes from two vectors (the lower half of q8_narrow32; the upper half repeats it) */
KWSN_INLINE __m128i q8_narrow16(__m256i a, __m256i b) {
    const __m256i w = _mm256_packs_epi32(a, b);
    return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(w, w), _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5)));
}
#endif

/* y[u] = clamp(mbqm(acc[u], m, shift) + zp, lo, hi): the vectorisable form for shift <= 0
 * (the usual case: a real multiplier below 1), the general one otherwise. |mbqm| is clamped
 * to 2^24 before adding zp (the int8 result is the same, and the int32 sum cannot overflow). */
KWSN_INLINE void q8_requant_row(int8_t *y, const int32_t *acc, uint32_t n, int32_t m,
                                int32_t shift, int32_t zp, int32_t lo, int32_t hi) {
#if KWSN_Q8_MBQM_LANES == 16
    if (shift <= 0) { /* all of it in zmm lanes, the tail masked */
        const q8_rq_k c = q8_rq_consts(m, shift, zp, lo, hi);
        for (uint32_t u = 0; u < n; u += 16u) {
            const __mmask16 mk = n - u >= 16u ? (__mmask16)0xFFFF
                                              : (__mmask16)((1u << (n - u)) - 1u);
            const __m128i b = q8_rq_lanes(_mm512_maskz_loadu_epi32(mk, (const void *)(acc + u)), &c);
            if (mk == (__mmask16)0xFFFF) {
                _mm_storeu_si128((__m128i *)(void *)(y + u), b);
            } else {
                int8_t part[16];
                _mm_storeu_si128((__m128i *)(void *)part, b);
                memcpy(y + u, part, n - u);
            }
        }
        return;
    }
#elif KWSN_Q8_MBQM_LANES == 8
    if (shift <= 0) { /* 8 lanes at a time, then the tile's scalar tail */
        const q8_rq_k c = q8_rq_consts(m, shift, zp, lo, hi);
        const q8_mbqm_k k = c.k;
        /* clamp(v, lo - zp, hi - zp) + zp: see q8_rq_lanes32 */
        const __m256i zpv = c.zpv, lov = c.lov, hiv = c.hiv;
        uint32_t u = 0;
        for (; u + 32u <= n; u += 32u) {
            const __m256i *a = (const __m256i *)(const void *)(acc + u);
            _mm256_storeu_si256((__m256i *)(void *)(y + u),
                                q8_narrow32(q8_rq_lanes32(_mm256_loadu_si256(a), &c),
                                            q8_rq_lanes32(_mm256_loadu_si256(a + 1), &c),
                                            q8_rq_lanes32(_mm256_loadu_si256(a + 2), &c),
                                            q8_rq_lanes32(_mm256_loadu_si256(a + 3), &c)));
        }
        for (; u + 16u <= n; u += 16u) {
            const __m256i *a = (const __m256i *)(const void *)(acc + u);
            _mm_storeu_si128((__m128i *)(void *)(y + u),
                             q8_narrow16(q8_rq_lanes32(_mm256_loadu_si256(a), &c),
                                         q8_rq_lanes32(_mm256_loadu_si256(a + 1), &c)));
        }
        for (; u + 8u <= n; u += 8u) {
            __m256i v = q8_mbqm_lanes(
                _mm256_loadu_si256((const __m256i *)(const void *)(acc + u)), &k);
            v = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, lov), hiv), zpv);
            /* within int8: the packs are exact */
            const __m128i w16 =
                _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            _mm_storel_epi64((__m128i *)(void *)(y + u), _mm_packs_epi16(w16, w16));
        }
        for (; u < n; u++) {
            int32_t v = kwsn_mbqm_r(acc[u], m, -shift);
            v = v < -(1 << 24) ? -(1 << 24) : (v > (1 << 24) ? (1 << 24) : v);
            v += zp;
            y[u] = (int8_t)(v < lo ? lo : (v > hi ? hi : v));
        }
        return;
    }
#endif
    if (shift <= 0) {
        int32_t q[KWSN_Q8_TILE];
        for (uint32_t u0 = 0; u0 < n; u0 += KWSN_Q8_TILE) {
            const uint32_t nt = n - u0 < KWSN_Q8_TILE ? n - u0 : KWSN_Q8_TILE;
            q8_mbqm_r_n(q, acc + u0, nt, m, -shift);
            int8_t *ys = y + u0;
            for (uint32_t u = 0; u < nt; u++) {
                int32_t v = q[u];
                v = v < -(1 << 24) ? -(1 << 24) : (v > (1 << 24) ? (1 << 24) : v);
                v += zp;
                ys[u] = (int8_t)(v < lo ? lo : (v > hi ? hi : v));
            }
        }
        return;
    }
    /* shift > 0: mbqm(x, m, shift) = srdhm(x << shift saturated to int32, m), which is the
     * shift-0 requantisation of the saturated values (kwsn_mbqm_r with right 0 is srdhm for
     * m >= 0, as the loader checks): saturated in int32 lanes (a loop that vectorises), then
     * the vector path above (was one scalar kwsn_mbqm per code: kws_bc_resnet's RowAffine
     * layers have shifts > 0) */
    const int32_t hi_in = INT32_MAX >> shift, lo_in = INT32_MIN >> shift;
    int32_t t[KWSN_Q8_TILE];
    for (uint32_t u0 = 0; u0 < n; u0 += KWSN_Q8_TILE) {
        const uint32_t nt = n - u0 < KWSN_Q8_TILE ? n - u0 : KWSN_Q8_TILE;
        for (uint32_t u = 0; u < nt; u++) {
            const int32_t x = acc[u0 + u];
            t[u] = x > hi_in ? INT32_MAX
                             : (x < lo_in ? INT32_MIN : (int32_t)((uint32_t)x << shift));
        }
        q8_requant_row(y + u0, t, nt, m, 0, zp, lo, hi);
    }
}

KWSN_INLINE void q8_requant_store(int8_t *y, const int32_t *acc, uint32_t n, int32_t m,
                                  int32_t shift, const kwsn_q8_requant *rq) {
    q8_requant_row(y, acc, n, m, shift, rq->zp_out, rq->act_min, rq->act_max);
}

/* Rows o0..o0+NO of a group: xp [gi][cs] int32 centred input (x - zp_in, 0 in the padding),
 * tap j of output t reads x_i[t + off[j]]; w [go][gi][k]; row o's L_out codes go to out + o *
 * ostride. The tile's positions past L_out
 * read valid centred values or the zeroed slack and are not stored; their sums stay within
 * the loader's bound too (every |x| <= 255). */
#if KWSN_VW >= 8
/* int32 lanes in registers, as the float conv_rows: 2 vectors x KWSN_CONV_ROWS rows. */
typedef int32_t kwsn_vi __attribute__((vector_size(KWSN_VW * 4)));
#define KWSN_Q8_CONV_TILE (2 * KWSN_VW)
#define KWSN_Q8_ROWS KWSN_CONV_ROWS
KWSN_INLINE void q8_conv_rows(int8_t *out, const int32_t *xp, const int8_t *w,
                              const kwsn_q8_requant *rq, uint32_t o_base, uint32_t gi,
                              uint32_t L_out, size_t ostride, uint32_t cs, uint32_t k,
                              const uint32_t *off, uint32_t o0, const uint32_t NO) {
    for (uint32_t t0 = 0; t0 < L_out; t0 += KWSN_Q8_CONV_TILE) {
        kwsn_vi acc[KWSN_Q8_ROWS][2];
        for (uint32_t r = 0; r < NO; r++) {
            const kwsn_vi zero = {0};
            acc[r][0] = zero + rq->bias[o_base + o0 + r];
            acc[r][1] = acc[r][0];
        }
        for (uint32_t i = 0; i < gi; i++) {
            const int32_t *x = xp + (size_t)i * cs + t0;
            const int8_t *wi = w + (size_t)i * k;
            for (uint32_t j = 0; j < k; j++) {
                kwsn_vi x0, x1;
                memcpy(&x0, x + off[j], sizeof(kwsn_vi));
                memcpy(&x1, x + off[j] + KWSN_VW, sizeof(kwsn_vi));
                for (uint32_t r = 0; r < NO; r++) {
                    const int32_t wr = wi[(size_t)(o0 + r) * gi * k + j];
                    acc[r][0] += x0 * wr;
                    acc[r][1] += x1 * wr;
                }
            }
        }
        const uint32_t nt = L_out - t0 < KWSN_Q8_CONV_TILE ? L_out - t0 : KWSN_Q8_CONV_TILE;
        for (uint32_t r = 0; r < NO; r++) {
            const uint32_t o = o_base + o0 + r;
            int32_t tile[KWSN_Q8_CONV_TILE];
            memcpy(tile, &acc[r][0], sizeof(kwsn_vi));
            memcpy(tile + KWSN_VW, &acc[r][1], sizeof(kwsn_vi));
            q8_requant_store(out + (size_t)(o0 + r) * ostride + t0, tile, nt, rq->mult[o],
                             rq->shift[o], rq);
        }
    }
}
#else
#define KWSN_Q8_CONV_TILE KWSN_Q8_TILE
#define KWSN_Q8_ROWS 4
KWSN_INLINE void q8_conv_rows(int8_t *out, const int32_t *xp, const int8_t *w,
                              const kwsn_q8_requant *rq, uint32_t o_base, uint32_t gi,
                              uint32_t L_out, size_t ostride, uint32_t cs, uint32_t k,
                              const uint32_t *off, uint32_t o0, const uint32_t NO) {
    for (uint32_t t0 = 0; t0 < L_out; t0 += KWSN_Q8_CONV_TILE) {
        int32_t acc[KWSN_Q8_ROWS][KWSN_Q8_CONV_TILE];
        for (uint32_t r = 0; r < NO; r++) {
            const int32_t b = rq->bias[o_base + o0 + r];
            for (uint32_t u = 0; u < KWSN_Q8_CONV_TILE; u++) acc[r][u] = b;
        }
        for (uint32_t i = 0; i < gi; i++) {
            const int32_t *x = xp + (size_t)i * cs + t0;
            for (uint32_t j = 0; j < k; j++) {
                const int32_t *xs = x + off[j];
                for (uint32_t r = 0; r < NO; r++) {
                    const int32_t wr = w[((size_t)(o0 + r) * gi + i) * k + j];
                    int32_t *a = acc[r];
                    for (uint32_t u = 0; u < KWSN_Q8_CONV_TILE; u++) a[u] += wr * xs[u];
                }
            }
        }
        const uint32_t nt = L_out - t0 < KWSN_Q8_CONV_TILE ? L_out - t0 : KWSN_Q8_CONV_TILE;
        for (uint32_t r = 0; r < NO; r++) {
            const uint32_t o = o_base + o0 + r;
            q8_requant_store(out + (size_t)(o0 + r) * ostride + t0, acc[r], nt, rq->mult[o],
                             rq->shift[o], rq);
        }
    }
}
#endif

/* int8 Conv1d / Conv2d: the input centred (x - zp_in) into int32 phases as the float conv_ex
 * splits it (so every tap of consecutive outputs reads consecutive elements), int32
 * accumulation of w * x in register tiles, then the per-channel requantisation. That is the
 * baseline; the x86 vector paths below multiply bytes instead. */

/* ---- the vector paths' int8 conv: u8 x s8 quads (vpdpbusd) or int16 pairs (vpmaddwd)
 *
 * The reduction of output (o, t) runs over r = (i, j) (input channel of the group, tap; for
 * Conv2d r = (i, kernel row, kernel column)) in the weights' own [o][i][j] order, in groups
 * of D = 4 (VNNI) or D = 2 (vpmaddwd) consecutive r. Per call and group:
 *   xs  the input as D-path elements, zero-padded and phase-split as the baseline's int32:
 *       D = 4: u = q + 128 (u8; the padding is the real zero, zp_in + 128);
 *       D = 2: x = q - zp_in (int16; the padding 0);
 *   im  int32 [G][Lp] (G = ceil(R / D), Lp = L_out rounded up to 32): lane t of group g
 *       packs the D elements r = g D .. g D + D - 1 that output t reads (im2col, D deep);
 *   wpk int32 [go][G]: the weights of row o, r = g D .. g D + D - 1 in one int32 (D = 4: the
 *       4 bytes as stored; D = 2: two int16), zero past R;
 *   init[o] the accumulator's start: D = 2: bias; D = 4: bias - (128 + zp_in) sum_r w[o][r],
 *       the offset's correction (sum w (u - 128 - zp_in) = sum w (q - zp_in)).
 * Then one vpdpbusd / vpmaddwd + vpaddd per row, group and 16 (8) positions. Exactness: the
 * loader bound sum |w| 255 + |bias| <= INT32_MAX bounds init (|128 + zp_in| <= 255) and every
 * partial sum (bias + sum over the done r of w (u - c) - c sum over the rest of w: each term
 * at most 255 |w|); vpdpbusd adds its 4 products to the int32 lane without saturation and
 * vpmaddwd's pair (|x| <= 255, |w| <= 127) cannot saturate; so the int32 sum is the exact
 * integer sum, as on the baseline, and the requantisation is shared: the same bits. wpk and
 * init are built once, at load (conv_q8_pack into the model's tables, kwsn_model_set_tables),
 * or per call into the scratch when the model has no tables: [o][i][j] is already D deep
 * along r, so "packing" is a copy into int32 rows with the zero tail and, for D = 4, the
 * correction. */
#if defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX512BW__)
#include <immintrin.h>
#define KWSN_Q8_IMW 16
#if defined(__AVX512VNNI__)
#define KWSN_Q8_IM 4
#else
#define KWSN_Q8_IM 2
#endif
#elif defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX2__)
#include <immintrin.h>
#define KWSN_Q8_IMW 8
#if defined(__AVXVNNI__)
#define KWSN_Q8_IM 4
#else
#define KWSN_Q8_IM 2
#endif
#endif

#ifdef KWSN_Q8_IM
#if KWSN_Q8_IM == 4
typedef uint8_t q8_xe;
#else
typedef int16_t q8_xe;
#endif
#define KWSN_Q8_IM_TILE (2 * KWSN_Q8_IMW)
#if KWSN_Q8_IMW == 16
/* 12 rows x 2 zmm accumulators + 2 inputs + 1 weight: 27 of 32 registers */
#define KWSN_Q8_IM_ROWS 12
#define KWSN_Q8_IM_ROWS2 4
typedef __m512i q8_v;
#define Q8V_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define Q8V_SET1(v) _mm512_set1_epi32(v)
#define Q8V_STORE(p, v) _mm512_storeu_si512((void *)(p), v)
#if KWSN_Q8_IM == 4
/* acc += x (u8) . w (s8) in place: gcc 12 copies the accumulator around
 * _mm512_dpbusd_epi32 (and spilled the 12-row tile to the stack on every step); the asm
 * states the in-place update, so the tile stays in its 24 registers */
KWSN_INLINE __m512i q8_dpbusd(__m512i acc, __m512i x, __m512i w) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
    return acc;
}
#define Q8V_DOT(acc, x, w) q8_dpbusd(acc, x, w)
#else
#define Q8V_DOT(acc, x, w) _mm512_add_epi32(acc, _mm512_madd_epi16(x, w))
#endif
#else
/* 4 rows x 2 ymm accumulators + 2 inputs + 1 weight + the vpmaddwd product: 12 of 16
 * registers. With 6 (or 5) rows gcc 12 kept the accumulators on the stack (a load and a store
 * per vpaddd): bench_int8 avx2 int8 raw_conv 54.1 -> 49.0 us, kws_cnn_mel 157.9 -> 141.6 us
 * with 4; 3 rows measured the same as 4. */
#define KWSN_Q8_IM_ROWS 4
#define KWSN_Q8_IM_ROWS2 2
typedef __m256i q8_v;
#define Q8V_LOAD(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define Q8V_SET1(v) _mm256_set1_epi32(v)
#define Q8V_STORE(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#if KWSN_Q8_IM == 4
#define Q8V_DOT(acc, x, w) _mm256_dpbusd_avx_epi32(acc, x, w)
#else
#define Q8V_DOT(acc, x, w) _mm256_add_epi32(acc, _mm256_madd_epi16(x, w))
#endif
#endif

/* The scratch, carved as q8_im_scratch_bytes() sized it (the sizes of D = 2, which bound
 * D = 4's). */
typedef struct {
    uint32_t *roff; /* [R]: element offset in xs of r's input at output 0 */
    int32_t *init;  /* [go] */
    int32_t *wpk;   /* [go][G] */
    q8_xe *xs;      /* [xs_elems] */
    q8_xe *zero;    /* [Lp] zeros: the input of r >= R */
    int32_t *im;    /* [G][Lp] */
} q8_im_parts;

static q8_im_parts q8_im_carve(void *scratch, uint32_t R, uint32_t go, uint32_t Lp,
                               size_t xs_elems) {
    q8_im_parts p;
    uint8_t *b = (uint8_t *)scratch;
    const size_t g2 = (R + 1u) / 2u;
    p.roff = (uint32_t *)(void *)b;
    b += q8_r64((size_t)R * 4u);
    p.init = (int32_t *)(void *)b;
    b += q8_r64((size_t)go * 4u);
    p.wpk = (int32_t *)(void *)b;
    b += q8_r64((size_t)go * g2 * 4u);
    p.xs = (q8_xe *)(void *)b;
    b += q8_r64(xs_elems * 2u);
    p.zero = (q8_xe *)(void *)b;
    b += q8_r64((size_t)Lp * 2u);
    p.im = (int32_t *)(void *)b;
    return p;
}

/* dst[u] = the D-path element of src[S u], u < n (S constant where inlined, so the strided
 * loads vectorise): D = 4 the code as u8 (x ^ 0x80 = x + 128), D = 2 x - zp as int16. */
KWSN_INLINE void q8_im_elems(q8_xe *dst, const int8_t *src, uint32_t n, const uint32_t S,
                             int32_t zp) {
#if KWSN_Q8_IMW == 16
    if (S == 1) { /* whole vectors, the last one's load and store masked */
#if KWSN_Q8_IM == 4
        const __m512i flip = _mm512_set1_epi8((char)0x80);
        for (uint32_t u = 0; u < n; u += 64u) {
            const __mmask64 mk = q8_mask64(n - u);
            _mm512_mask_storeu_epi8((void *)(dst + u), mk,
                                    _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, (const void *)(src + u)), flip));
        }
#else
        const __m512i zpv = _mm512_set1_epi16((int16_t)zp);
        for (uint32_t u = 0; u < n; u += 32u) {
            const __mmask32 mk = n - u >= 32u ? ~(__mmask32)0 : (((__mmask32)1 << (n - u)) - 1u);
            const __m512i v = _mm512_cvtepi8_epi16(
                _mm512_castsi512_si256(_mm512_maskz_loadu_epi8((__mmask64)mk, (const void *)(src + u))));
            _mm512_mask_storeu_epi16((void *)(dst + u), mk, _mm512_sub_epi16(v, zpv));
        }
#endif
        return;
    }
#endif
#if KWSN_Q8_IM == 4
    (void)zp;
    const uint8_t *su = (const uint8_t *)(const void *)src;
    for (uint32_t u = 0; u < n; u++) dst[u] = (uint8_t)(su[(size_t)S * u] ^ 0x80u);
#else
    for (uint32_t u = 0; u < n; u++) dst[u] = (int16_t)((int32_t)src[(size_t)S * u] - zp);
#endif
}

/* Channel x[L] as D-path elements, zero-padded (the real zero) and split into phases (the
 * baseline's q8_phase_split layout); x NULL: a row of the padding. */
KWSN_INLINE void q8_phase_split_im(q8_xe *xc, const int8_t *x, const kwsn_conv1d_ex_args *a,
                                   uint32_t cs, int32_t zp) {
    const uint32_t s = a->stride, ph = cs / s;
#if KWSN_Q8_IM == 4
    const q8_xe padv = (q8_xe)(zp + 128);
#else
    const q8_xe padv = 0;
#endif
    for (uint32_t r = 0; r < s; r++) {
        q8_xe *p = xc + (size_t)r * ph;
        /* phase r's u reads x[s u + r - pad] for u in [lo, hi) */
        uint32_t lo = 0, hi = 0;
        if (x) {
            lo = a->pad > r ? (a->pad - r + s - 1u) / s : 0u;
            hi = (a->pad + a->L > r) ? (a->pad + a->L - r + s - 1u) / s : 0u;
            if (hi > ph) hi = ph;
            if (lo > hi) lo = hi;
        }
        for (uint32_t u = 0; u < lo; u++) p[u] = padv;
        if (hi > lo) {
            const int8_t *xr = x + ((size_t)s * lo + r - a->pad);
            switch (s) {
            case 1: q8_im_elems(p + lo, xr, hi - lo, 1, zp); break;
            case 2: q8_im_elems(p + lo, xr, hi - lo, 2, zp); break;
            case 3: q8_im_elems(p + lo, xr, hi - lo, 3, zp); break;
            case 4: q8_im_elems(p + lo, xr, hi - lo, 4, zp); break;
            default: q8_im_elems(p + lo, xr, hi - lo, s, zp); break;
            }
        }
        for (uint32_t u = hi; u < ph; u++) p[u] = padv;
    }
}

#if KWSN_Q8_IMW == 16
/* One im row on AVX-512BW: dst[t] = the D elements s[0][t] .. s[D - 1][t] packed into an
 * int32 (little-endian: element d in byte d (D = 4) or half d (D = 2)), t < Lp, zero at
 * t >= L_out. vpunpck{l,h}bw / {l,h}wd interleave the elements within 128-bit lanes (the
 * dwords of positions 16 l + 4 j .. 16 l + 4 j + 3 in lane l of vector j for D = 4, 8 l ..,
 * 8 l + 4 .. for D = 2), and 128-bit lane shuffles put the positions in order: the same
 * bytes as the plain loop. The loads stop at L_out (masked; the rest reads as 0) and the
 * stores at Lp (a multiple of 32). */
static void q8_im_interleave(int32_t *dst, const q8_xe *const *s, uint32_t L_out, uint32_t Lp) {
#if KWSN_Q8_IM == 4
    for (uint32_t t = 0; t < Lp; t += 64u) {
        __m512i a[4];
        for (uint32_t d = 0; d < 4u; d++)
            a[d] = t + 64u <= L_out ? _mm512_loadu_si512((const void *)(s[d] + t))
                   : _mm512_maskz_loadu_epi8(q8_mask64(L_out > t ? L_out - t : 0u),
                                             (const void *)(s[d] + t));
        const __m512i lo01 = _mm512_unpacklo_epi8(a[0], a[1]), hi01 = _mm512_unpackhi_epi8(a[0], a[1]);
        const __m512i lo23 = _mm512_unpacklo_epi8(a[2], a[3]), hi23 = _mm512_unpackhi_epi8(a[2], a[3]);
        const __m512i d0 = _mm512_unpacklo_epi16(lo01, lo23), d1 = _mm512_unpackhi_epi16(lo01, lo23);
        const __m512i d2 = _mm512_unpacklo_epi16(hi01, hi23), d3 = _mm512_unpackhi_epi16(hi01, hi23);
        /* a 4 x 4 transpose of 128-bit lanes: out k = lane k of d0, d1, d2, d3 */
        const __m512i t0 = _mm512_shuffle_i32x4(d0, d1, 0x44), t1 = _mm512_shuffle_i32x4(d2, d3, 0x44);
        const __m512i t2 = _mm512_shuffle_i32x4(d0, d1, 0xEE), t3 = _mm512_shuffle_i32x4(d2, d3, 0xEE);
        _mm512_storeu_si512((void *)(dst + t), _mm512_shuffle_i32x4(t0, t1, 0x88));
        _mm512_storeu_si512((void *)(dst + t + 16), _mm512_shuffle_i32x4(t0, t1, 0xDD));
        if (t + 32u >= Lp) break;
        _mm512_storeu_si512((void *)(dst + t + 32), _mm512_shuffle_i32x4(t2, t3, 0x88));
        _mm512_storeu_si512((void *)(dst + t + 48), _mm512_shuffle_i32x4(t2, t3, 0xDD));
    }
#else
    for (uint32_t t = 0; t < Lp; t += 32u) {
        __m512i a[2];
        for (uint32_t d = 0; d < 2u; d++)
            a[d] = t + 32u <= L_out ? _mm512_loadu_si512((const void *)(s[d] + t))
                   : _mm512_maskz_loadu_epi16(
                         L_out > t ? (((__mmask32)1 << (L_out - t)) - 1u) : 0u,
                         (const void *)(s[d] + t));
        const __m512i lo = _mm512_unpacklo_epi16(a[0], a[1]), hi = _mm512_unpackhi_epi16(a[0], a[1]);
        /* positions 0..15: lanes 0, 1 of lo and hi alternating; 16..31: lanes 2, 3 */
        _mm512_storeu_si512((void *)(dst + t),
                            _mm512_permutex2var_epi64(lo, _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), hi));
        _mm512_storeu_si512((void *)(dst + t + 16),
                            _mm512_permutex2var_epi64(lo, _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4), hi));
    }
#endif
}
#endif

/* im [G][Lp] from base + roff[r] (positions 0..L_out-1; the rest of each row 0). */
static void q8_im_build(int32_t *im, const q8_xe *base, const uint32_t *roff, uint32_t R,
                        const q8_xe *zero, uint32_t L_out, uint32_t Lp) {
    const uint32_t G = (R + KWSN_Q8_IM - 1u) / KWSN_Q8_IM;
    for (uint32_t g = 0; g < G; g++) {
        const q8_xe *s[KWSN_Q8_IM];
        for (uint32_t d = 0; d < KWSN_Q8_IM; d++) {
            const uint32_t r = g * KWSN_Q8_IM + d;
            s[d] = r < R ? base + roff[r] : zero;
        }
        int32_t *dst = im + (size_t)g * Lp;
#if KWSN_Q8_IMW == 16
        q8_im_interleave(dst, s, L_out, Lp);
#else
#if KWSN_Q8_IM == 4
        const q8_xe *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
        for (uint32_t t = 0; t < L_out; t++)
            dst[t] = (int32_t)((uint32_t)s0[t] | ((uint32_t)s1[t] << 8) |
                               ((uint32_t)s2[t] << 16) | ((uint32_t)s3[t] << 24));
#else
        const q8_xe *s0 = s[0], *s1 = s[1];
        for (uint32_t t = 0; t < L_out; t++)
            dst[t] = (int32_t)((uint32_t)(uint16_t)s0[t] | ((uint32_t)(uint16_t)s1[t] << 16));
#endif
        for (uint32_t t = L_out; t < Lp; t++) dst[t] = 0;
#endif
    }
}

/* wpk and init of the go rows of a group (w: the group's first row, R weights per row). */
static void q8_im_pack(int32_t *wpk, int32_t *init, const int8_t *w, const int32_t *bias,
                       uint32_t R, uint32_t go, int32_t zp_in) {
    const uint32_t G = (R + KWSN_Q8_IM - 1u) / KWSN_Q8_IM;
    for (uint32_t o = 0; o < go; o++) {
        const int8_t *wr = w + (size_t)o * R;
        int32_t *dst = wpk + (size_t)o * G;
#if KWSN_Q8_IM == 4
        int32_t sum = 0; /* |sum| <= 127 R < 2^31 (R <= 2^26) */
        for (uint32_t j = 0; j < R; j++) sum += wr[j];
        dst[G - 1u] = 0;
        memcpy(dst, wr, R); /* little-endian: byte d of dst[g] is w[o][4 g + d] */
        init[o] = (int32_t)((int64_t)bias[o] - (int64_t)(128 + zp_in) * sum);
#else
        for (uint32_t g = 0; g < R / 2u; g++)
            dst[g] = (int32_t)((uint32_t)(uint16_t)(int16_t)wr[2u * g] |
                               ((uint32_t)(uint16_t)(int16_t)wr[2u * g + 1u] << 16));
        if (R % 2u) dst[G - 1u] = (int32_t)(uint32_t)(uint16_t)(int16_t)wr[R - 1u];
        init[o] = bias[o];
        (void)zp_in;
#endif
    }
}

/* The packed form (conv_q8_pack, at prepare): wpk [C_out][G] int32, then init [C_out]
 * int32 at the next 64-byte boundary; the rows of all groups in one pack (q8_im_pack per
 * row reads only that row's weights and bias). */
static size_t q8_im_packed_wpk_bytes(uint32_t R, uint32_t C_out) {
    return q8_r64((size_t)C_out * ((R + KWSN_Q8_IM - 1u) / KWSN_Q8_IM) * 4u);
}

static void q8_im_packed_rows(const void *packed, uint32_t R, uint32_t C_out, uint32_t o0,
                              const int32_t **wpk, const int32_t **init) {
    const uint32_t G = (R + KWSN_Q8_IM - 1u) / KWSN_Q8_IM;
    const uint8_t *b = (const uint8_t *)packed;
    *wpk = (const int32_t *)(const void *)b + (size_t)o0 * G;
    *init = (const int32_t *)(const void *)(b + q8_im_packed_wpk_bytes(R, C_out)) + o0;
}

#if KWSN_Q8_IMW == 8 && KWSN_Q8_MBQM_LANES == 8
/* q8_im_rows' AVX2 requantisation of one tile: rows r's 16 codes (accumulators acc[r]) to
 * y + r ostride, the first nt of them; two rows' 32 codes narrowed together (q8_narrow32).
 * Not inlined: inlined, gcc 12 kept its constants in ymm registers across the tile loop and
 * spilled accumulators of the 4-row tile to the stack (raw_conv int8 49 -> 56 us). */
static __attribute__((noinline)) void q8_im_rq_tile(int8_t *y, size_t ostride,
                                                     __m256i (*acc)[2], const q8_rq_k *rk,
                                                     uint32_t NO, uint32_t nt) {
    uint32_t r = 0;
    for (; r + 2u <= NO; r += 2u) {
        int8_t *y0 = y + (size_t)r * ostride, *y1 = y0 + ostride;
        const __m256i b = q8_narrow32(
            q8_rq_lanes32(acc[r][0], &rk[r]), q8_rq_lanes32(acc[r][1], &rk[r]),
            q8_rq_lanes32(acc[r + 1][0], &rk[r + 1]), q8_rq_lanes32(acc[r + 1][1], &rk[r + 1]));
        if (nt == 16u) {
            _mm_storeu_si128((__m128i *)(void *)y0, _mm256_castsi256_si128(b));
            _mm_storeu_si128((__m128i *)(void *)y1, _mm256_extracti128_si256(b, 1));
        } else {
            int8_t part[32];
            _mm256_storeu_si256((__m256i *)(void *)part, b);
            memcpy(y0, part, nt);
            memcpy(y1, part + 16, nt);
        }
    }
    if (r < NO) {
        int8_t *y0 = y + (size_t)r * ostride;
        const __m128i b = q8_narrow16(q8_rq_lanes32(acc[r][0], &rk[r]),
                                      q8_rq_lanes32(acc[r][1], &rk[r]));
        if (nt == 16u) {
            _mm_storeu_si128((__m128i *)(void *)y0, b);
        } else {
            int8_t part[16];
            _mm_storeu_si128((__m128i *)(void *)part, b);
            memcpy(y0, part, nt);
        }
    }
}
#endif

/* One tile's accumulators of NO rows: acc[r] = init[r] + the dot products of row r's packed
 * weights (wb: G per row) with the tile's im2col columns x (group g at x + g Lp), 2 vectors of
 * positions; inlined, so the tile stays in registers. */
KWSN_INLINE void q8_im_dot(q8_v acc[][2], const int32_t *x, const int32_t *wb,
                           const int32_t *init, uint32_t G, uint32_t Lp, const uint32_t NO) {
    for (uint32_t r = 0; r < NO; r++) {
        acc[r][0] = Q8V_SET1(init[r]);
        acc[r][1] = acc[r][0];
    }
    for (uint32_t g = 0; g < G; g++) {
        const q8_v x0 = Q8V_LOAD(x + (size_t)g * Lp);
        const q8_v x1 = Q8V_LOAD(x + (size_t)g * Lp + KWSN_Q8_IMW);
        for (uint32_t r = 0; r < NO; r++) {
            const q8_v wv = Q8V_SET1(wb[(size_t)r * G + g]);
            acc[r][0] = Q8V_DOT(acc[r][0], x0, wv);
            acc[r][1] = Q8V_DOT(acc[r][1], x1, wv);
        }
    }
}

/* Rows o0 .. o0 + NO - 1 of a group: row o's L_out codes to out + o ostride; o_abs the
 * group's first output channel (for the requantisation). */
KWSN_INLINE void q8_im_rows(int8_t *out, size_t ostride, const int32_t *im, uint32_t G,
                            uint32_t Lp, uint32_t L_out, const int32_t *wpk, const int32_t *init,
                            const kwsn_q8_requant *rq, uint32_t o_abs, uint32_t o0,
                            const uint32_t NO) {
#if KWSN_Q8_IMW == 16 || (KWSN_Q8_IMW == 8 && KWSN_Q8_MBQM_LANES == 8)
    /* every row's requantisation constants made once, then each tile requantised from its
     * accumulator registers (the same q8_rq_lanes32 as q8_requant_row: zmm, or on AVX2 two
     * rows' 2 x 16 codes narrowed together by q8_narrow32) */
    int direct = 1;
    for (uint32_t r = 0; r < NO; r++) direct &= rq->shift[o_abs + o0 + r] <= 0;
    if (direct) {
        q8_rq_k rk[KWSN_Q8_IM_ROWS];
        for (uint32_t r = 0; r < NO; r++) {
            const uint32_t o = o_abs + o0 + r;
            rk[r] = q8_rq_consts(rq->mult[o], rq->shift[o], rq->zp_out, rq->act_min,
                                 rq->act_max);
        }
        for (uint32_t t0 = 0; t0 < L_out; t0 += KWSN_Q8_IM_TILE) {
            q8_v acc[KWSN_Q8_IM_ROWS][2];
            q8_im_dot(acc, im + t0, wpk + (size_t)o0 * G, init + o0, G, Lp, NO);
            const uint32_t nt = L_out - t0 < KWSN_Q8_IM_TILE ? L_out - t0 : KWSN_Q8_IM_TILE;
#if KWSN_Q8_IMW == 8
            __m256i tile[KWSN_Q8_IM_ROWS][2];
            for (uint32_t r = 0; r < NO; r++) {
                tile[r][0] = acc[r][0];
                tile[r][1] = acc[r][1];
            }
            q8_im_rq_tile(out + (size_t)o0 * ostride + t0, ostride, tile, rk, NO, nt);
#else
            for (uint32_t r = 0; r < NO; r++) {
                int8_t *y = out + (size_t)(o0 + r) * ostride + t0;
                const __m128i b0 = q8_rq_lanes(acc[r][0], &rk[r]);
                const __m128i b1 = q8_rq_lanes(acc[r][1], &rk[r]);
                if (nt == KWSN_Q8_IM_TILE) {
                    _mm_storeu_si128((__m128i *)(void *)y, b0);
                    _mm_storeu_si128((__m128i *)(void *)(y + 16), b1);
                } else {
                    int8_t part[KWSN_Q8_IM_TILE];
                    _mm_storeu_si128((__m128i *)(void *)part, b0);
                    _mm_storeu_si128((__m128i *)(void *)(part + 16), b1);
                    memcpy(y, part, nt);
                }
            }
#endif
        }
        return;
    }
#endif
    for (uint32_t t0 = 0; t0 < L_out; t0 += KWSN_Q8_IM_TILE) {
        q8_v acc[KWSN_Q8_IM_ROWS][2];
        q8_im_dot(acc, im + t0, wpk + (size_t)o0 * G, init + o0, G, Lp, NO);
        const uint32_t nt = L_out - t0 < KWSN_Q8_IM_TILE ? L_out - t0 : KWSN_Q8_IM_TILE;
        for (uint32_t r = 0; r < NO; r++) {
            const uint32_t o = o_abs + o0 + r;
            int32_t tile[KWSN_Q8_IM_TILE];
            Q8V_STORE(tile, acc[r][0]);
            Q8V_STORE(tile + KWSN_Q8_IMW, acc[r][1]);
            q8_requant_store(out + (size_t)(o0 + r) * ostride + t0, tile, nt, rq->mult[o],
                             rq->shift[o], rq);
        }
    }
}

#if KWSN_Q8_IMW == 8 && KWSN_Q8_MBQM_LANES == 8
/* One row of a reduction of at most two packed groups on AVX2 (G = 2 with vpmaddwd pairs, G = 1
 * with AVX-VNNI's quads: raw_conv's Conv1d(1, 16, 3)), row-major: its requantisation constants
 * stay in registers for the whole row and 32 positions a step end in one q8_narrow32 and one
 * 32-byte store. The tiles of q8_im_rows reload the constants of every row for every 16
 * positions (its requantisation is a function call: inlined, it spilled), which cost more than
 * this conv's one or two dot products per vector (raw_conv int8 avx2, bench_int8's per-layer
 * table: that conv 7.20 -> 6.27 us).
 * im rows are zero from L_out to Lp (a multiple of 32), so a last partial step reads within
 * them; only its first L_out - t codes are stored. G constant where inlined. */
KWSN_INLINE void q8_im_row_small(int8_t *y, const int32_t *im, uint32_t Lp, uint32_t L_out,
                                 const int32_t *wr, int32_t init, const q8_rq_k *rk,
                                 const uint32_t G) {
    const q8_rq_k c = *rk;
    const q8_v iv = Q8V_SET1(init), w0 = Q8V_SET1(wr[0]), w1 = Q8V_SET1(G > 1u ? wr[1] : 0);
    for (uint32_t t = 0; t < L_out; t += 32u) {
        q8_v a[4];
        for (uint32_t u = 0; u < 4u; u++) {
            a[u] = Q8V_DOT(iv, Q8V_LOAD(im + t + 8u * u), w0);
            if (G > 1u) a[u] = Q8V_DOT(a[u], Q8V_LOAD(im + Lp + t + 8u * u), w1);
        }
        const __m256i b = q8_narrow32(q8_rq_lanes32(a[0], &c), q8_rq_lanes32(a[1], &c),
                                      q8_rq_lanes32(a[2], &c), q8_rq_lanes32(a[3], &c));
        if (L_out - t >= 32u) {
            _mm256_storeu_si256((__m256i *)(void *)(y + t), b);
        } else {
            int8_t part[32];
            _mm256_storeu_si256((__m256i *)(void *)part, b);
            memcpy(y + t, part, L_out - t);
        }
    }
}

/* Every row of a group whose reduction is G <= 2 packed groups (q8_im_row_small; rows whose
 * shift is > 0 by q8_im_rows); q8_im_any picks it. */
static __attribute__((noinline)) void q8_im_rows_small(int8_t *out, size_t ostride,
                                                        const int32_t *im, uint32_t G, uint32_t Lp,
                                                        uint32_t L_out, const int32_t *wpk,
                                                        const int32_t *init,
                                                        const kwsn_q8_requant *rq, uint32_t o_abs,
                                                        uint32_t go) {
    for (uint32_t o = 0; o < go; o++) {
        const uint32_t oa = o_abs + o;
        if (rq->shift[oa] > 0) { /* not the vector requantisation: the general rows */
            q8_im_rows(out, ostride, im, G, Lp, L_out, wpk, init, rq, o_abs, o, 1);
            continue;
        }
        const q8_rq_k rk =
            q8_rq_consts(rq->mult[oa], rq->shift[oa], rq->zp_out, rq->act_min, rq->act_max);
        int8_t *y = out + (size_t)o * ostride;
        if (G == 1u)
            q8_im_row_small(y, im, Lp, L_out, wpk + (size_t)o, init[o], &rk, 1);
        else
            q8_im_row_small(y, im, Lp, L_out, wpk + (size_t)o * 2u, init[o], &rk, 2);
    }
}
#endif

/* Every row of a group over im: tiles of KWSN_Q8_IM_ROWS rows, or one row at a time when the
 * reduction is one packed group (G = 1: raw_conv's Conv1d(1, 16, 3) on VNNI), where the
 * tile's dot products are one instruction per vector and its requantisation constants (seven
 * vectors per row) and accumulators spilled to the stack (that conv's int8 time on
 * avx512vnni ~5.7 -> ~5.1 us). */
static void q8_im_group(int8_t *out, size_t ostride, const int32_t *im, uint32_t R, uint32_t Lp,
                        uint32_t L_out, const int32_t *wpk, const int32_t *init,
                        const kwsn_q8_requant *rq, uint32_t o_abs, uint32_t go) {
    const uint32_t G = (R + KWSN_Q8_IM - 1u) / KWSN_Q8_IM;
    uint32_t o = 0;
    if (G == 1u) goto one_row; /* not an if block around the tiles: gcc then compiled them
                                * ~0.8 us slower for raw_conv's 2nd and 3rd convs on avx2 */
    for (; o + KWSN_Q8_IM_ROWS <= go; o += KWSN_Q8_IM_ROWS)
        q8_im_rows(out, ostride, im, G, Lp, L_out, wpk, init, rq, o_abs, o, KWSN_Q8_IM_ROWS);
    for (; o + KWSN_Q8_IM_ROWS2 <= go; o += KWSN_Q8_IM_ROWS2)
        q8_im_rows(out, ostride, im, G, Lp, L_out, wpk, init, rq, o_abs, o, KWSN_Q8_IM_ROWS2);
one_row:
    for (; o < go; o++) q8_im_rows(out, ostride, im, G, Lp, L_out, wpk, init, rq, o_abs, o, 1);
}

/* q8_im_group, or on AVX2 q8_im_rows_small for a reduction of at most two packed groups (a
 * separate call: with that branch inside q8_im_group, gcc's code for the tiles there got
 * slower, raw_conv's second and third convs ~0.8 us each on avx2). */
KWSN_INLINE void q8_im_any(int8_t *out, size_t ostride, const int32_t *im, uint32_t R, uint32_t Lp,
                           uint32_t L_out, const int32_t *wpk, const int32_t *init,
                           const kwsn_q8_requant *rq, uint32_t o_abs, uint32_t go) {
#if KWSN_Q8_IMW == 8 && KWSN_Q8_MBQM_LANES == 8
    const uint32_t G = (R + KWSN_Q8_IM - 1u) / KWSN_Q8_IM;
    if (G <= 2u) {
        q8_im_rows_small(out, ostride, im, G, Lp, L_out, wpk, init, rq, o_abs, go);
        return;
    }
#endif
    q8_im_group(out, ostride, im, R, Lp, L_out, wpk, init, rq, o_abs, go);
}

static void q8_conv1d_im(int8_t *out, const int8_t *in, const int8_t *w,
                         const kwsn_q8_requant *rq, const kwsn_conv1d_ex_args *a,
                         const void *packed, void *scratch) {
    const uint32_t cs = (uint32_t)kwsn_conv1d_ex_channel_floats(a);
    const uint32_t gi = a->C_in / a->groups, go = a->C_out / a->groups, Lo = a->L_out;
    const uint32_t R = gi * a->k, Lp = q8_im_lp(Lo);
    const q8_im_parts p = q8_im_carve(scratch, R, go, Lp, (size_t)a->C_in * cs);
    for (uint32_t i = 0; i < a->C_in; i++)
        q8_phase_split_im(p.xs + (size_t)i * cs, in + (size_t)i * a->L, a, cs, rq->zp_in);
    memset(p.zero, 0, (size_t)Lp * sizeof(q8_xe));
    uint32_t off[KWSN_MAX_CONV_KERNEL];
    for (uint32_t j = 0; j < a->k; j++) off[j] = tap_offset(a, cs, j);
    for (uint32_t i = 0; i < gi; i++)
        for (uint32_t j = 0; j < a->k; j++) p.roff[i * a->k + j] = i * cs + off[j];
    for (uint32_t g = 0; g < a->groups; g++) {
        q8_im_build(p.im, p.xs + (size_t)g * gi * cs, p.roff, R, p.zero, Lo, Lp);
        const int32_t *wpk = p.wpk, *init = p.init;
        if (packed) {
            q8_im_packed_rows(packed, R, a->C_out, g * go, &wpk, &init);
        } else {
            q8_im_pack(p.wpk, p.init, w + (size_t)g * go * R, rq->bias + (size_t)g * go, R, go,
                       rq->zp_in);
        }
        q8_im_any(out + (size_t)g * go * Lo, Lo, p.im, R, Lp, Lo, wpk, init, rq, g * go, go);
    }
    
}

static void q8_conv2d_im(int8_t *out, const int8_t *in, const int8_t *w,
                         const kwsn_q8_requant *rq, const kwsn_conv2d_args *a,
                         const void *packed, void *scratch) {
    const kwsn_conv1d_ex_args row = kwsn_conv2d_row(a);
    const uint32_t cs = (uint32_t)kwsn_conv1d_ex_channel_floats(&row);
    const uint32_t rows = (uint32_t)kwsn_conv2d_rows(a);
    const uint32_t gi = a->C_in / a->groups, go = a->C_out / a->groups;
    const uint32_t R = gi * a->kh * a->kw, Wo = a->W_out, Lp = q8_im_lp(Wo);
    const q8_im_parts p = q8_im_carve(scratch, R, go, Lp, (size_t)a->C_in * rows * cs);
    for (uint32_t i = 0; i < a->C_in; i++)
        for (uint32_t r = 0; r < rows; r++) {
            const int in_image = r >= a->pt && r - a->pt < a->H;
            const int8_t *x = in_image ? in + ((size_t)i * a->H + (r - a->pt)) * a->W : NULL;
            q8_phase_split_im(p.xs + ((size_t)i * rows + r) * cs, x, &row, cs, rq->zp_in);
        }
    memset(p.zero, 0, (size_t)Lp * sizeof(q8_xe));
    conv2d_taps(p.roff, a, &row, rows, cs);
    const size_t plane = (size_t)a->H_out * Wo;
    for (uint32_t g = 0; g < a->groups; g++) {
        const int32_t *wpk = p.wpk, *init = p.init;
        if (packed) {
            q8_im_packed_rows(packed, R, a->C_out, g * go, &wpk, &init);
        } else {
            q8_im_pack(p.wpk, p.init, w + (size_t)g * go * R, rq->bias + (size_t)g * go, R, go,
                       rq->zp_in);
        }
        for (uint32_t y = 0; y < a->H_out; y++) {
            const q8_xe *base = p.xs + ((size_t)g * gi * rows + (size_t)y * a->sh) * cs;
            q8_im_build(p.im, base, p.roff, R, p.zero, Wo, Lp);
            q8_im_any(out + (size_t)g * go * plane + (size_t)y * Wo, plane, p.im, R, Lp, Wo,
                        wpk, init, rq, g * go, go);
        }
    }
}
#endif /* KWSN_Q8_IM */

/* The int8 phase_split: channel x[L] centred (x - zp), zero-padded (the real zero) and split
 * into phases as int32; x NULL: a row of zeros. */
KWSN_INLINE void q8_phase_split(int32_t *xc, const int8_t *x, const kwsn_conv1d_ex_args *a,
                                uint32_t cs, int32_t zp) {
    const uint32_t s = a->stride, ph = cs / s;
    if (!x) {
        memset(xc, 0, (size_t)cs * sizeof(int32_t));
        return;
    }
    if (s == 1u) { /* one phase: the pad, the centred row, zeros (as phase_split) */
        uint32_t lead, body;
        split1_extent(a, cs, &lead, &body);
        int32_t *p = xc + lead;
        memset(xc, 0, (size_t)lead * sizeof(int32_t));
        for (uint32_t u = 0; u < body; u++) p[u] = (int32_t)x[u] - zp;
        memset(p + body, 0, (size_t)(cs - lead - body) * sizeof(int32_t));
        return;
    }
    for (uint32_t r = 0; r < s; r++) {
        int32_t *p = xc + (size_t)r * ph;
        for (uint32_t u = 0; u < ph; u++) {
            const uint32_t q = s * u + r;
            p[u] = (q >= a->pad && q < a->pad + a->L) ? (int32_t)x[q - a->pad] - zp : 0;
        }
    }
}

/* A depthwise kernel-1 conv (RowAffine: groups = C_in = C_out, k = 1, stride 1, no padding):
 * row g's codes to clamp(mbqm(bias[g] + w[g] (x - zp_in)) + zp, lo, hi), a tile of int32 sums
 * (a loop that vectorises on every path) requantised by q8_requant_row. The same integers as
 * the general conv (one product per output, exact in int32 by the loader's bound), without its
 * per-group im2col, packing and tiling: kws_bc_resnet's RowAffine on avx2 spent ~10x the
 * float time there. */
/* t[u] = b + w x[u] (its own function: inside the row loop gcc 12 left it scalar) */
static void q8_affine_fill(int32_t *restrict t, const int8_t *restrict x, uint32_t n, int32_t w,
                           int32_t b) {
    for (uint32_t u = 0; u < n; u++) t[u] = b + w * (int32_t)x[u];
}

static void q8_conv_depthwise1(int8_t *out, const int8_t *in, const int8_t *w,
                               const kwsn_q8_requant *rq, uint32_t rows, uint32_t L) {
    enum { TILE = 256 };
    int32_t tile[TILE];
    for (uint32_t g = 0; g < rows; g++) {
        const int32_t wg = w[g], b = rq->bias[g], zp = rq->zp_in;
        const int8_t *x = in + (size_t)g * L;
        int8_t *y = out + (size_t)g * L;
        for (uint32_t t0 = 0; t0 < L; t0 += TILE) {
            const uint32_t nt = L - t0 < TILE ? L - t0 : TILE;
            q8_affine_fill(tile, x + t0, nt, wg, b - wg * zp);
            q8_requant_store(y + t0, tile, nt, rq->mult[g], rq->shift[g], rq);
        }
    }
}

static void KWSN_K(kwsn_conv1d_q8)(int8_t *out, const int8_t *in, const int8_t *w,
                                   const kwsn_q8_requant *rq, const kwsn_conv1d_ex_args *a,
                                   const void *packed, void *scratch) {
    if (a->groups == a->C_in && a->C_out == a->C_in && a->k == 1u && a->stride == 1u &&
        a->pad == 0u && a->L_out == a->L) {
        (void)packed, (void)scratch;
        q8_conv_depthwise1(out, in, w, rq, a->C_in, a->L);
        return;
    }
#ifdef KWSN_Q8_IM
    q8_conv1d_im(out, in, w, rq, a, packed, scratch);
    return;
#endif
    (void)packed; /* the baseline reads the weights as stored */
    const uint32_t cs = (uint32_t)kwsn_conv1d_ex_channel_floats(a);
    int32_t *xp = (int32_t *)scratch;
    for (uint32_t i = 0; i < a->C_in; i++)
        q8_phase_split(xp + (size_t)i * cs, in + (size_t)i * a->L, a, cs, rq->zp_in);
    memset(xp + (size_t)a->C_in * cs, 0, KWSN_Q8_SLACK * sizeof(int32_t));
    uint32_t off[KWSN_MAX_CONV_KERNEL];
    for (uint32_t j = 0; j < a->k; j++) off[j] = tap_offset(a, cs, j);
    const uint32_t gi = a->C_in / a->groups, go = a->C_out / a->groups, Lo = a->L_out;
    for (uint32_t g = 0; g < a->groups; g++) {
        const int32_t *xg = xp + (size_t)g * gi * cs;
        const int8_t *wg = w + (size_t)g * go * gi * a->k;
        int8_t *yg = out + (size_t)g * go * Lo;
        uint32_t o = 0;
        for (; o + KWSN_Q8_ROWS <= go; o += KWSN_Q8_ROWS)
            q8_conv_rows(yg, xg, wg, rq, g * go, gi, Lo, Lo, cs, a->k, off, o, KWSN_Q8_ROWS);
        for (; o + 4 <= go; o += 4)
            q8_conv_rows(yg, xg, wg, rq, g * go, gi, Lo, Lo, cs, a->k, off, o, 4);
        for (; o < go; o++) q8_conv_rows(yg, xg, wg, rq, g * go, gi, Lo, Lo, cs, a->k, off, o, 1);
    }
}

#if KWSN_Q8_MBQM_LANES == 8
#define KWSN_Q8_DWCOL_MAX 8u /* q8_dw_col's largest kh */
static int q8_dw_col(int8_t *out, const int8_t *in, const int8_t *w, const kwsn_q8_requant *rq,
                     const kwsn_conv2d_args *a);
#endif

/* int8 Conv2d: the float kwsn_conv2d's layout and tap order on the centred int32 input, int32
 * accumulation, the per-channel requantisation. */
static void KWSN_K(kwsn_conv2d_q8)(int8_t *out, const int8_t *in, const int8_t *w,
                                   const kwsn_q8_requant *rq, const kwsn_conv2d_args *a,
                                   const void *packed, void *scratch) {
#if KWSN_Q8_MBQM_LANES == 8
    /* a depthwise column kernel (kw = 1, no stride or padding along W): q8_dw_col */
    if (a->C_in == a->groups && a->C_out == a->groups && a->kw == 1u && a->sw == 1u &&
        a->pl == 0u && a->W_out == a->W && a->kh <= KWSN_Q8_DWCOL_MAX &&
        q8_dw_col(out, in, w, rq, a))
        return;
#endif
#ifdef KWSN_Q8_IM
    /* A depthwise conv over rows shorter than one im2col tile (32 positions): the direct
     * loop below (int32 lanes), measured faster there (kws_ds_cnn's 3x3 depthwise on 25-wide
     * rows: AVX2 23 -> ~15 us a layer; AVX-512 / VNNI, once the stride-1 phase split was a
     * copy, the model's int8 clip 0.93-0.94x, paired A/B on an Intel Xeon); elsewhere, and
     * for longer rows (kws_bc_resnet's 101-wide: no difference on AVX2), the im2col path */
    if (a->C_in != a->groups || a->C_out != a->groups || a->W_out >= 32u) {
        q8_conv2d_im(out, in, w, rq, a, packed, scratch);
        return;
    }
#endif
    (void)packed;
    const kwsn_conv1d_ex_args row = kwsn_conv2d_row(a);
    const uint32_t cs = (uint32_t)kwsn_conv1d_ex_channel_floats(&row);
    const uint32_t rows = (uint32_t)kwsn_conv2d_rows(a);
    const uint32_t gi = a->C_in / a->groups, go = a->C_out / a->groups, nt = gi * a->kh * a->kw;
    uint32_t *off = (uint32_t *)scratch;
    int32_t *xp = (int32_t *)scratch + conv2d_off_floats(nt);
    for (uint32_t i = 0; i < a->C_in; i++)
        for (uint32_t r = 0; r < rows; r++) {
            const int in_image = r >= a->pt && r - a->pt < a->H;
            const int8_t *x = in_image ? in + ((size_t)i * a->H + (r - a->pt)) * a->W : NULL;
            q8_phase_split(xp + ((size_t)i * rows + r) * cs, x, &row, cs, rq->zp_in);
        }
    memset(xp + (size_t)a->C_in * rows * cs, 0, KWSN_Q8_SLACK * sizeof(int32_t));
    conv2d_taps(off, a, &row, rows, cs);
    const uint32_t Wo = a->W_out;
    const size_t plane = (size_t)a->H_out * Wo;
    for (uint32_t g = 0; g < a->groups; g++) {
        const int8_t *wg = w + (size_t)g * go * nt;
        for (uint32_t y = 0; y < a->H_out; y++) {
            const int32_t *xg = xp + ((size_t)g * gi * rows + (size_t)y * a->sh) * cs;
            int8_t *yg = out + (size_t)g * go * plane + (size_t)y * Wo;
            const uint32_t ob = g * go;
            uint32_t o = 0;
            for (; o + KWSN_Q8_ROWS <= go; o += KWSN_Q8_ROWS)
                q8_conv_rows(yg, xg, wg, rq, ob, 1, Wo, plane, cs, nt, off, o, KWSN_Q8_ROWS);
            for (; o + 4 <= go; o += 4)
                q8_conv_rows(yg, xg, wg, rq, ob, 1, Wo, plane, cs, nt, off, o, 4);
            for (; o < go; o++) q8_conv_rows(yg, xg, wg, rq, ob, 1, Wo, plane, cs, nt, off, o, 1);
        }
    }
}

static void KWSN_K(kwsn_linear_q8)(int8_t *out, const int8_t *in, const int8_t *w,
                                   const kwsn_q8_requant *rq, uint32_t n_in, uint32_t n_out,
                                   void *scratch) {
    int16_t *x = (int16_t *)scratch;
    for (uint32_t i = 0; i < n_in; i++) x[i] = (int16_t)(in[i] - rq->zp_in);
    for (uint32_t o = 0; o < n_out; o++) {
        const int8_t *wo = w + (size_t)o * n_in;
        int32_t acc = 0;
        for (uint32_t i = 0; i < n_in; i++) acc += (int32_t)wo[i] * (int32_t)x[i];
        acc += rq->bias[o];
        out[o] = kwsn_clamp_q8((int64_t)kwsn_mbqm(acc, rq->mult[o], rq->shift[o]) + rq->zp_out,
                               rq->act_min, rq->act_max);
    }
}

/* The sum of k codes (k 255 <= INT32_MAX, checked at load): on x86 by psadbw of the codes
 * as u8 (x ^ 0x80 = x + 128) against 0, less 128 per code; AVX-512BW 64 at a time, the last
 * part by a masked load whose missing bytes read as 0x80 (0 once flipped), SSE2 (the baseline
 * and AVX2 paths) 16 at a time and the rest one by one. */
#if defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX512BW__)
KWSN_INLINE int32_t q8_window_sum(const int8_t *x, uint32_t k) {
    const __m512i flip = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    __m512i acc = zero;
    uint32_t j = 0;
    for (; j + 64u <= k; j += 64u)
        acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_xor_si512(
            _mm512_loadu_si512((const void *)(x + j)), flip), zero));
    if (j < k)
        acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_xor_si512(
            _mm512_mask_loadu_epi8(flip, q8_mask64(k - j), (const void *)(x + j)), flip), zero));
    return (int32_t)(_mm512_reduce_add_epi64(acc) - 128 * (int64_t)k);
}
#elif defined(__GNUC__) && defined(__SSE2__) && !defined(KWSN_NO_VECTOR_EXT)
#include <emmintrin.h>
KWSN_INLINE int32_t q8_window_sum(const int8_t *x, uint32_t k) {
    const __m128i flip = _mm_set1_epi8((char)0x80), zero = _mm_setzero_si128();
    __m128i acc = zero;
    uint32_t j = 0;
    for (; j + 16u <= k; j += 16u)
        acc = _mm_add_epi64(acc, _mm_sad_epu8(_mm_xor_si128(
            _mm_loadu_si128((const __m128i *)(const void *)(x + j)), flip), zero));
    int64_t s = (int64_t)(uint32_t)_mm_cvtsi128_si32(acc) +
                (int64_t)(uint32_t)_mm_cvtsi128_si32(_mm_unpackhi_epi64(acc, acc)) -
                128 * (int64_t)j;
    for (; j < k; j++) s += x[j];
    return (int32_t)s;
}
#else
KWSN_INLINE int32_t q8_window_sum(const int8_t *x, uint32_t k) {
    int32_t s = 0;
    for (uint32_t j = 0; j < k; j++) s += (int32_t)x[j];
    return s;
}
#endif

/* dst[u] = the sum of the k codes x[stride u ..], u < n: q8_window_sum per window, except
 * kernel = stride = 16 (raw_conv's AvgPool1d) by vpsadbw of the codes as u8 (as
 * q8_window_sum; exact: |sum| <= 255 k <= 2^24), 16 windows per 4 zmm (AVX-512BW; a masked
 * last block) or 8 per 4 ymm (AVX2), whose two half sums per window are added and put in
 * order. */
#define KWSN_Q8_AP_TILE 128
#if defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX512BW__)
/* 16 windows of 16 codes; the bytes past nb (< 256) read as 0x80 */
KWSN_INLINE __m512i q8_sum16x16(const int8_t *x, uint32_t nb) {
    const __m512i flip = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    __m512i sv[4];
    for (uint32_t v = 0; v < 4u; v++) {
        const __m512i a = nb >= 64u * v + 64u ? _mm512_loadu_si512((const void *)(x + 64u * v))
                          : _mm512_mask_loadu_epi8(flip, q8_mask64(nb > 64u * v ? nb - 64u * v : 0u),
                                                   (const void *)(x + 64u * v));
        sv[v] = _mm512_sad_epu8(_mm512_xor_si512(a, flip), zero); /* half windows, qwords */
    }
    /* 128-bit lane l: qwords (window 4 v + l of vector v, first half, second half) */
    const __m512i u01 = _mm512_add_epi64(_mm512_unpacklo_epi64(sv[0], sv[1]),
                                         _mm512_unpackhi_epi64(sv[0], sv[1]));
    const __m512i u23 = _mm512_add_epi64(_mm512_unpacklo_epi64(sv[2], sv[3]),
                                         _mm512_unpackhi_epi64(sv[2], sv[3]));
    /* lane l: dwords (windows l, 8 + l, 4 + l, 12 + l); vpermd puts window j at j */
    const __m512i w = _mm512_or_si512(u01, _mm512_slli_epi64(u23, 32));
    return _mm512_sub_epi32(
        _mm512_permutexvar_epi32(
            _mm512_set_epi32(15, 11, 7, 3, 13, 9, 5, 1, 14, 10, 6, 2, 12, 8, 4, 0), w),
        _mm512_set1_epi32(128 * 16));
}
#endif
KWSN_INLINE void q8_window_sums(int32_t *dst, const int8_t *x, uint32_t n, uint32_t k,
                                uint32_t stride) {
    uint32_t u = 0;
#if defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX512BW__)
    if (k == 16u && stride == 16u) {
        for (; u + 16u <= n; u += 16u)
            _mm512_storeu_si512((void *)(dst + u), q8_sum16x16(x + 16u * u, 256u));
        if (u < n)
            _mm512_mask_storeu_epi32((void *)(dst + u), (__mmask16)((1u << (n - u)) - 1u),
                                     q8_sum16x16(x + 16u * u, 16u * (n - u)));
        return;
    }
#elif defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX2__)
    if (k == 16u && stride == 16u) { /* as q8_sum16x16: 8 windows per 4 ymm */
        const __m256i flip = _mm256_set1_epi8((char)0x80), zero = _mm256_setzero_si256();
        for (; u + 8u <= n; u += 8u) {
            __m256i sv[4];
            for (uint32_t v = 0; v < 4u; v++)
                sv[v] = _mm256_sad_epu8(_mm256_xor_si256(_mm256_loadu_si256(
                    (const __m256i *)(const void *)(x + 16u * u + 32u * v)), flip), zero);
            const __m256i u01 = _mm256_add_epi64(_mm256_unpacklo_epi64(sv[0], sv[1]),
                                                 _mm256_unpackhi_epi64(sv[0], sv[1]));
            const __m256i u23 = _mm256_add_epi64(_mm256_unpacklo_epi64(sv[2], sv[3]),
                                                 _mm256_unpackhi_epi64(sv[2], sv[3]));
            /* lane l: dwords (windows l, 4 + l, 2 + l, 6 + l); vpermd puts window j at j */
            const __m256i w = _mm256_or_si256(u01, _mm256_slli_epi64(u23, 32));
            _mm256_storeu_si256((__m256i *)(void *)(dst + u), _mm256_sub_epi32(
                _mm256_permutevar8x32_epi32(w, _mm256_set_epi32(7, 3, 5, 1, 6, 2, 4, 0)),
                _mm256_set1_epi32(128 * 16)));
        }
    }
#endif
    for (; u < n; u++) dst[u] = q8_window_sum(x + (size_t)stride * u, k);
}

/* Window sums of int8 codes for a constant stride S (1..4, inlined), in tiles of
 * KWSN_Q8_TILE outputs: taps outer, outputs inner, so gcc vectorises the strided loads (the
 * max pool's trick); integer sums, so the order does not change the bits. */
KWSN_INLINE void q8_avgpool_rows(int8_t *out, const int8_t *in, uint32_t C, uint32_t L,
                                 uint32_t k, const uint32_t S, uint32_t L_out,
                                 const kwsn_q8_requant *rq) {
    int32_t acc[KWSN_Q8_TILE];
    const int32_t kzp = (int32_t)k * rq->zp_in; /* |acc| <= 255 k <= 2^24 */
    for (uint32_t c = 0; c < C; c++) {
        const int8_t *x = in + (size_t)c * L;
        int8_t *y = out + (size_t)c * L_out;
        for (uint32_t t0 = 0; t0 < L_out; t0 += KWSN_Q8_TILE) {
            const uint32_t nt = L_out - t0 < KWSN_Q8_TILE ? L_out - t0 : KWSN_Q8_TILE;
            const int8_t *xs = x + (size_t)t0 * S;
            for (uint32_t u = 0; u < nt; u++) acc[u] = (int32_t)xs[(size_t)u * S] - kzp;
            for (uint32_t j = 1; j < k; j++) {
                const int8_t *xj = xs + j;
                for (uint32_t u = 0; u < nt; u++) acc[u] += (int32_t)xj[(size_t)u * S];
            }
            q8_requant_row(y + t0, acc, nt, rq->mult[0], rq->shift[0], rq->zp_out, rq->act_min,
                           rq->act_max);
        }
    }
}

static void KWSN_K(kwsn_avgpool1d_q8)(int8_t *out, const int8_t *in, uint32_t C, uint32_t L,
                                      uint32_t k, uint32_t stride, uint32_t L_out,
                                      const kwsn_q8_requant *rq) {
    switch (stride) {
    case 1: q8_avgpool_rows(out, in, C, L, k, 1, L_out, rq); return;
    case 2: q8_avgpool_rows(out, in, C, L, k, 2, L_out, rq); return;
    case 3: q8_avgpool_rows(out, in, C, L, k, 3, L_out, rq); return;
    case 4: q8_avgpool_rows(out, in, C, L, k, 4, L_out, rq); return;
    default: break;
    }
    /* long strides (raw_conv's AvgPool1d(16); AdaptiveAvgPool1d: kernel = stride = L):
     * window sums (q8_window_sums) of tiles of the outputs in their [C][L_out] order, across
     * rows (one requantisation for all, so short rows share its set-up) */
    int32_t acc[KWSN_Q8_AP_TILE];
    const int32_t kzp = (int32_t)k * rq->zp_in; /* |acc| <= 255 k <= 2^24 */
    const size_t total = (size_t)C * L_out;
    uint32_t c = 0, t = 0; /* the row and position of output f0 */
    for (size_t f0 = 0; f0 < total; f0 += KWSN_Q8_AP_TILE) {
        const uint32_t nt = total - f0 < KWSN_Q8_AP_TILE ? (uint32_t)(total - f0) : KWSN_Q8_AP_TILE;
        for (uint32_t u = 0; u < nt;) {
            const uint32_t run = nt - u < L_out - t ? nt - u : L_out - t;
            q8_window_sums(acc + u, in + (size_t)c * L + (size_t)t * stride, run, k, stride);
            u += run, t += run;
            if (t == L_out) t = 0, c++;
        }
        for (uint32_t u = 0; u < nt; u++) acc[u] -= kzp;
        q8_requant_row(out + f0, acc, nt, rq->mult[0], rq->shift[0], rq->zp_out, rq->act_min,
                       rq->act_max);
    }
}

/* Window max of int8 codes, in tiles of 64 outputs: taps outer, outputs inner, so with a
 * constant stride S (1..4, inlined) gcc vectorises the strided loads (the float kernel's
 * trick); max is exact, so any order gives the same bits. */
#define KWSN_Q8_MP_TILE 64
KWSN_INLINE void q8_maxpool_rows(int8_t *out, const int8_t *in, uint32_t C, uint32_t L,
                                 uint32_t k, const uint32_t S, uint32_t L_out) {
    int8_t m[KWSN_Q8_MP_TILE];
    for (uint32_t c = 0; c < C; c++) {
        const int8_t *x = in + (size_t)c * L;
        int8_t *y = out + (size_t)c * L_out;
        for (uint32_t t0 = 0; t0 < L_out; t0 += KWSN_Q8_MP_TILE) {
            const uint32_t nt = L_out - t0 < KWSN_Q8_MP_TILE ? L_out - t0 : KWSN_Q8_MP_TILE;
            const int8_t *xs = x + (size_t)t0 * S;
            for (uint32_t u = 0; u < nt; u++) m[u] = xs[(size_t)u * S];
            for (uint32_t j = 1; j < k; j++) {
                const int8_t *xj = xs + j;
                for (uint32_t u = 0; u < nt; u++) {
                    const int8_t v = xj[(size_t)u * S];
                    m[u] = v > m[u] ? v : m[u];
                }
            }
            int8_t *ys = y + t0;
            for (uint32_t u = 0; u < nt; u++) ys[u] = m[u];
        }
    }
}

/* Max pools with kernel = stride = S in {2, 4} (raw_conv's MaxPool1d(4)) on AVX2 / AVX-512BW:
 * a vector of codes holds whole windows, one per S-byte lane. vpmaxsb against the lane
 * shifted right by 8 bits (S = 4: then by 16 bits) leaves each window's max in its lane's low
 * byte (the zero bytes shifted in reach only the upper bytes, which are never read). The low
 * bytes (masked to 0..255, so the unsigned-saturating vpackusdw / vpackuswb keep them) of S
 * such vectors are packed into one vector of 64 (AVX2: 32) outputs; the packs interleave the
 * 128-bit lanes, which one vpermd / vpermq undoes. Max is exact and the packs move bits
 * unchanged: the same bits as q8_maxpool_rows. A row is one run of windows; where every row
 * is exactly L_out windows long (L = S L_out) the rows are one run. */
#if defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX512BW__)
#define KWSN_Q8_MP_VEC 64
/* 64 / S windows of each vector of x (a[v]: its 64 bytes) as 64 bytes in order */
KWSN_INLINE __m512i q8_mp_vec(const __m512i *a, const uint32_t S) {
    if (S == 2) {
        const __m512i lo = _mm512_set1_epi16(0xFF);
        const __m512i m0 = _mm512_and_si512(_mm512_max_epi8(a[0], _mm512_srli_epi16(a[0], 8)), lo);
        const __m512i m1 = _mm512_and_si512(_mm512_max_epi8(a[1], _mm512_srli_epi16(a[1], 8)), lo);
        /* qword (128-bit lane l, vector v) at 2 l + v, wanted at 4 v + l */
        return _mm512_permutexvar_epi64(_mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0),
                                        _mm512_packus_epi16(m0, m1));
    }
    const __m512i lo = _mm512_set1_epi32(0xFF);
    __m512i m[4];
    for (uint32_t v = 0; v < 4u; v++) {
        const __m512i h = _mm512_max_epi8(a[v], _mm512_srli_epi16(a[v], 8));
        m[v] = _mm512_and_si512(_mm512_max_epi8(h, _mm512_srli_epi32(h, 16)), lo);
    }
    /* dword (128-bit lane l, vector v) at 4 l + v, wanted at 4 v + l */
    return _mm512_permutexvar_epi32(
        _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0),
        _mm512_packus_epi16(_mm512_packus_epi32(m[0], m[1]), _mm512_packus_epi32(m[2], m[3])));
}
/* n windows of S codes from x to y; the last block's loads and store masked */
KWSN_INLINE void q8_mp_run(int8_t *y, const int8_t *x, uint32_t n, const uint32_t S) {
    uint32_t t = 0;
    __m512i a[4];
    for (; t + 64u <= n; t += 64u) {
        for (uint32_t v = 0; v < S; v++)
            a[v] = _mm512_loadu_si512((const void *)(x + (size_t)S * t + 64u * v));
        _mm512_storeu_si512((void *)(y + t), q8_mp_vec(a, S));
    }
    if (t < n) {
        const uint32_t nb = S * (n - t); /* bytes left, < 64 S */
        for (uint32_t v = 0; v < S; v++)
            a[v] = _mm512_maskz_loadu_epi8(q8_mask64(nb > 64u * v ? nb - 64u * v : 0u),
                                           (const void *)(x + (size_t)S * t + 64u * v));
        _mm512_mask_storeu_epi8((void *)(y + t), q8_mask64(n - t), q8_mp_vec(a, S));
    }
}
#elif defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX2__)
#define KWSN_Q8_MP_VEC 32
KWSN_INLINE __m256i q8_mp_vec(const __m256i *a, const uint32_t S) {
    if (S == 2) {
        const __m256i lo = _mm256_set1_epi16(0xFF);
        const __m256i m0 = _mm256_and_si256(_mm256_max_epi8(a[0], _mm256_srli_epi16(a[0], 8)), lo);
        const __m256i m1 = _mm256_and_si256(_mm256_max_epi8(a[1], _mm256_srli_epi16(a[1], 8)), lo);
        /* qword (lane l, vector v) at 2 l + v, wanted at 2 v + l */
        return _mm256_permute4x64_epi64(_mm256_packus_epi16(m0, m1), 0xD8);
    }
    const __m256i lo = _mm256_set1_epi32(0xFF);
    __m256i m[4];
    for (uint32_t v = 0; v < 4u; v++) {
        const __m256i h = _mm256_max_epi8(a[v], _mm256_srli_epi16(a[v], 8));
        m[v] = _mm256_and_si256(_mm256_max_epi8(h, _mm256_srli_epi32(h, 16)), lo);
    }
    /* dword (lane l, vector v) at 4 l + v, wanted at 2 v + l */
    return _mm256_permutevar8x32_epi32(
        _mm256_packus_epi16(_mm256_packus_epi32(m[0], m[1]), _mm256_packus_epi32(m[2], m[3])),
        _mm256_set_epi32(7, 3, 6, 2, 5, 1, 4, 0));
}
/* n windows of S codes from x to y; a partial last block as the last 32 windows (again:
 * the same values) or, in a run shorter than 32, through zero-padded copies */
KWSN_INLINE void q8_mp_run(int8_t *y, const int8_t *x, uint32_t n, const uint32_t S) {
    uint32_t t = 0;
    __m256i a[4];
    for (;;) {
        for (; t + 32u <= n; t += 32u) {
            for (uint32_t v = 0; v < S; v++)
                a[v] = _mm256_loadu_si256(
                    (const __m256i *)(const void *)(x + (size_t)S * t + 32u * v));
            _mm256_storeu_si256((__m256i *)(void *)(y + t), q8_mp_vec(a, S));
        }
        if (t == n || n < 32u) break;
        t = n - 32u;
    }
    if (t < n) {
        int8_t buf[128], res[32];
        memset(buf, 0, sizeof(buf));
        memcpy(buf, x + (size_t)S * t, (size_t)S * (n - t));
        for (uint32_t v = 0; v < S; v++)
            a[v] = _mm256_loadu_si256((const __m256i *)(const void *)(buf + 32u * v));
        _mm256_storeu_si256((__m256i *)(void *)res, q8_mp_vec(a, S));
        memcpy(y + t, res, n - t);
    }
}
#endif

#ifdef KWSN_Q8_MP_VEC
KWSN_INLINE void q8_mp_rows_vec(int8_t *out, const int8_t *in, uint32_t C, uint32_t L,
                                uint32_t L_out, const uint32_t S) {
    if (L == S * L_out && (uint64_t)C * L_out <= UINT32_MAX) {
        q8_mp_run(out, in, C * L_out, S);
        return;
    }
    for (uint32_t c = 0; c < C; c++) q8_mp_run(out + (size_t)c * L_out, in + (size_t)c * L, L_out, S);
}
#endif

static void KWSN_K(kwsn_maxpool1d_q8)(int8_t *out, const int8_t *in, uint32_t C, uint32_t L,
                                      uint32_t k, uint32_t stride, uint32_t L_out) {
#ifdef KWSN_Q8_MP_VEC
    if (k == stride && k == 4u) {
        q8_mp_rows_vec(out, in, C, L, L_out, 4);
        return;
    }
    if (k == stride && k == 2u) {
        q8_mp_rows_vec(out, in, C, L, L_out, 2);
        return;
    }
#endif
    switch (stride) {
    case 1: q8_maxpool_rows(out, in, C, L, k, 1, L_out); break;
    case 2: q8_maxpool_rows(out, in, C, L, k, 2, L_out); break;
    case 3: q8_maxpool_rows(out, in, C, L, k, 3, L_out); break;
    case 4: q8_maxpool_rows(out, in, C, L, k, 4, L_out); break;
    default: q8_maxpool_rows(out, in, C, L, k, stride, L_out); break;
    }
}

#if KWSN_Q8_MBQM_LANES == 16 || KWSN_Q8_MBQM_LANES == 8
/* The Add's input rescaling kwsn_mbqm(d << ls, m, -e) of centred codes d (|d| <= 255) for
 * 15 <= ls <= 22 (ADD_LEFT_SHIFT is 20), e >= 0, m in [0, 2^31), in int32 lanes alone: with
 * m = mh 2^16 + ml (ml < 2^16), srdhm(d 2^ls, m) = floor((d m 2^ls + 2^30) / 2^31)
 * = d (mh << (ls - 15)) + floor((d ml + 2^(30 - ls)) / 2^(31 - ls)), the first part an integer
 * (ls >= 15) below 2^30, the second from a product below 2^24 (an arithmetic shift is the
 * floor); then rdbpot(h, e) = (h + 2^(e-1) - [h < 0]) >> e (e > 0; round half away from zero),
 * h below 2^30 so nothing overflows. 9 operations per vector against kwsn_mbqm_r's 64-bit
 * products and 14 (AVX2) / 12 (AVX-512) operations: the same integers (test_q8_paths' Add
 * cases). */
typedef struct {
    int32_t mh, ml, nud, c, emask, sh, e;
} q8_in_k;

static q8_in_k q8_in_consts(int32_t m, int32_t ls, int32_t e) {
    q8_in_k k;
    k.mh = (int32_t)(((uint32_t)m >> 16) << (ls - 15));
    k.ml = m & 0xFFFF;
    k.nud = (int32_t)1 << (30 - ls);
    k.sh = 31 - ls;
    k.c = e > 0 ? (int32_t)1 << (e - 1) : 0;
    k.emask = e > 0 ? -1 : 0;
    k.e = e;
    return k;
}
#if KWSN_Q8_MBQM_LANES == 16
KWSN_INLINE __m512i q8_in_lanes(__m512i d, const q8_in_k *k) {
    const __m512i h = _mm512_add_epi32(
        _mm512_mullo_epi32(d, _mm512_set1_epi32(k->mh)),
        _mm512_sra_epi32(_mm512_add_epi32(_mm512_mullo_epi32(d, _mm512_set1_epi32(k->ml)),
                                          _mm512_set1_epi32(k->nud)),
                         _mm_cvtsi32_si128(k->sh)));
    const __m512i r = _mm512_add_epi32(
        _mm512_and_si512(_mm512_srai_epi32(h, 31), _mm512_set1_epi32(k->emask)),
        _mm512_set1_epi32(k->c));
    return _mm512_sra_epi32(_mm512_add_epi32(h, r), _mm_cvtsi32_si128(k->e));
}
#else
KWSN_INLINE __m256i q8_in_lanes(__m256i d, const q8_in_k *k) {
    const __m256i h = _mm256_add_epi32(
        _mm256_mullo_epi32(d, _mm256_set1_epi32(k->mh)),
        _mm256_sra_epi32(_mm256_add_epi32(_mm256_mullo_epi32(d, _mm256_set1_epi32(k->ml)),
                                          _mm256_set1_epi32(k->nud)),
                         _mm_cvtsi32_si128(k->sh)));
    const __m256i r = _mm256_add_epi32(
        _mm256_and_si256(_mm256_srai_epi32(h, 31), _mm256_set1_epi32(k->emask)),
        _mm256_set1_epi32(k->c));
    return _mm256_sra_epi32(_mm256_add_epi32(h, r), _mm_cvtsi32_si128(k->e));
}
#endif
#endif

/* One row of the int8 Add by the portable steps (the baseline path; any path for s_o > 0). */
static void q8_add_row(int8_t *out, const int8_t *a, const int8_t *b, uint32_t n,
                       const kwsn_q8_add *p) {
    const int32_t mul = (int32_t)1 << p->left_shift; /* left_shift <= 22: checked at load */
    /* in locals: an int8 store through out may alias *p as far as the compiler knows */
    const int32_t zp_a = p->zp_a, zp_b = p->zp_b, zp_out = p->zp_out, lo = p->act_min,
                  hi = p->act_max, m_a = p->m_a, m_b = p->m_b, m_o = p->m_o, s_a = p->s_a,
                  s_b = p->s_b, s_o = p->s_o;
    if (s_o <= 0) { /* s_a, s_b <= 0 always (checked at load) */
        /* in tiles: both inputs of a tile are read before its outputs are written, so
         * in place stays safe */
        int32_t ta[KWSN_Q8_TILE], tb[KWSN_Q8_TILE];
        for (uint32_t j0 = 0; j0 < n; j0 += KWSN_Q8_TILE) {
            const uint32_t nt = n - j0 < KWSN_Q8_TILE ? n - j0 : KWSN_Q8_TILE;
            const int8_t *as = a + j0, *bs = b + j0;
            for (uint32_t u = 0; u < nt; u++) ta[u] = ((int32_t)as[u] - zp_a) * mul;
            for (uint32_t u = 0; u < nt; u++) tb[u] = ((int32_t)bs[u] - zp_b) * mul;
            q8_mbqm_r_n(ta, ta, nt, m_a, -s_a);
            q8_mbqm_r_n(tb, tb, nt, m_b, -s_b);
            for (uint32_t u = 0; u < nt; u++) ta[u] += tb[u];
            q8_mbqm_r_n(ta, ta, nt, m_o, -s_o);
            int8_t *ys = out + j0;
            for (uint32_t u = 0; u < nt; u++) {
                int32_t v = ta[u];
                v = v < -(1 << 24) ? -(1 << 24) : (v > (1 << 24) ? (1 << 24) : v);
                v += zp_out;
                ys[u] = (int8_t)(v < lo ? lo : (v > hi ? hi : v));
            }
        }
        return;
    }
    for (uint32_t j = 0; j < n; j++) {
        const int32_t xa = kwsn_mbqm(((int32_t)a[j] - zp_a) * mul, m_a, s_a);
        const int32_t xb = kwsn_mbqm(((int32_t)b[j] - zp_b) * mul, m_b, s_b);
        out[j] = kwsn_clamp_q8((int64_t)kwsn_mbqm(xa + xb, m_o, s_o) + zp_out,
                               lo, hi);
    }
}


/* One input's term of the int8 Add, in int32 lanes: mbqm((x - zp) << left_shift, m, s) of 16
 * (AVX-512) or 8 (AVX2) codes (q8_in_lanes for left shifts >= 15, else q8_mbqm_lanes of the
 * shifted value: kwsn_mbqm_r per lane). */
#if KWSN_Q8_MBQM_LANES == 16 || KWSN_Q8_MBQM_LANES == 8
typedef struct {
    q8_mbqm_k k;
    q8_in_k in;
    int32_t zp;
} q8_addin_k;
#endif
#if KWSN_Q8_MBQM_LANES == 16
KWSN_INLINE __m512i q8_add_term(__m128i x8, const q8_addin_k *t, int split, __m128i ls) {
    const __m512i d = _mm512_sub_epi32(_mm512_cvtepi8_epi32(x8), _mm512_set1_epi32(t->zp));
    return split ? q8_in_lanes(d, &t->in) : q8_mbqm_lanes(_mm512_sll_epi32(d, ls), &t->k);
}
#elif KWSN_Q8_MBQM_LANES == 8
KWSN_INLINE __m256i q8_add_term(__m128i x8, const q8_addin_k *t, int split, __m128i ls) {
    const __m256i d = _mm256_sub_epi32(_mm256_cvtepi8_epi32(x8), _mm256_set1_epi32(t->zp));
    return split ? q8_in_lanes(d, &t->in) : q8_mbqm_lanes(_mm256_sll_epi32(d, ls), &t->k);
}
#endif
#if KWSN_Q8_MBQM_LANES == 16 || KWSN_Q8_MBQM_LANES == 8
/* 16 codes from x (nt of them; the rest zeros: a copy, never a read past x + nt) */
KWSN_INLINE __m128i q8_load16(const int8_t *x, uint32_t nt) {
    if (nt >= 16u) return _mm_loadu_si128((const __m128i *)(const void *)x);
    int8_t t[16] = {0};
    memcpy(t, x, nt);
    return _mm_loadu_si128((const __m128i *)(const void *)t);
}
/* the first min(nt, 16) of 16 codes to y (q8_load16's counterpart: never a write past y + nt) */
KWSN_INLINE void q8_store16(int8_t *y, __m128i c, uint32_t nt) {
    if (nt >= 16u) {
        _mm_storeu_si128((__m128i *)(void *)y, c);
    } else {
        int8_t t[16];
        _mm_storeu_si128((__m128i *)(void *)t, c);
        memcpy(y, t, nt);
    }
}
/* 16 int32 lanes: one zmm, or two ymm on AVX2 */
#if KWSN_Q8_MBQM_LANES == 16
typedef struct {
    __m512i v;
} q8_v16;
KWSN_INLINE q8_v16 q8_add_terms16(__m128i x8, const q8_addin_k *t, int split, __m128i ls) {
    q8_v16 r = {q8_add_term(x8, t, split, ls)};
    return r;
}
KWSN_INLINE q8_v16 q8_v16_add(q8_v16 x, q8_v16 y) {
    x.v = _mm512_add_epi32(x.v, y.v);
    return x;
}
KWSN_INLINE q8_v16 q8_v16_load(const int32_t *p) {
    q8_v16 r = {_mm512_load_si512((const void *)p)};
    return r;
}
KWSN_INLINE void q8_v16_store(int32_t *p, q8_v16 x) { _mm512_store_si512((void *)p, x.v); }
KWSN_INLINE __m128i q8_v16_codes(q8_v16 x, const q8_rq_k *ko) { return q8_rq_lanes(x.v, ko); }
#else
typedef struct {
    __m256i v[2];
} q8_v16;
KWSN_INLINE q8_v16 q8_add_terms16(__m128i x8, const q8_addin_k *t, int split, __m128i ls) {
    q8_v16 r = {{q8_add_term(x8, t, split, ls), q8_add_term(_mm_srli_si128(x8, 8), t, split, ls)}};
    return r;
}
KWSN_INLINE q8_v16 q8_v16_add(q8_v16 x, q8_v16 y) {
    x.v[0] = _mm256_add_epi32(x.v[0], y.v[0]);
    x.v[1] = _mm256_add_epi32(x.v[1], y.v[1]);
    return x;
}
KWSN_INLINE q8_v16 q8_v16_load(const int32_t *p) {
    q8_v16 r = {{_mm256_load_si256((const __m256i *)(const void *)p),
                 _mm256_load_si256((const __m256i *)(const void *)(p + 8))}};
    return r;
}
KWSN_INLINE void q8_v16_store(int32_t *p, q8_v16 x) {
    _mm256_store_si256((__m256i *)(void *)p, x.v[0]);
    _mm256_store_si256((__m256i *)(void *)(p + 8), x.v[1]);
}
KWSN_INLINE __m128i q8_v16_codes(q8_v16 x, const q8_rq_k *ko) {
    return q8_narrow16(q8_rq_lanes32(x.v[0], ko), q8_rq_lanes32(x.v[1], ko));
}
#endif
/* b's terms cached per step of a BroadcastAdd (int32) */
#define KWSN_Q8_ADD_CHUNK 256u
#endif

#if KWSN_Q8_MBQM_LANES == 8
/* The int16 codes (in element order) of 16 positions of a q8_dw_col row: bias + the pairs'
 * vpmaddwd sums, requantised. xs[i]: the centred int16 of row i's 16 codes (an odd count
 * paired with zeros); wp[p]: rows 2p and 2p + 1's weights as an int16 pair. vpunpck[lh]wd
 * interleave two rows per 128-bit lane, so the sums come as positions 0-3 | 8-11 and 4-7 |
 * 12-15, which vpackssdw puts back in order. */
KWSN_INLINE __m256i q8_dw_col16(const __m256i *xs, const __m256i *wp, uint32_t np, __m256i bias,
                                const q8_rq_k *rk) {
    __m256i lo = bias, hi = bias;
    for (uint32_t p = 0; p < np; p++) {
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xs[2u * p], xs[2u * p + 1u]), wp[p]));
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xs[2u * p], xs[2u * p + 1u]), wp[p]));
    }
    return _mm256_packs_epi32(q8_rq_lanes32(lo, rk), q8_rq_lanes32(hi, rk));
}

/* A depthwise Conv2d whose kernel is a column (kw = 1, stride 1 and no padding along W):
 * kws_bc_resnet's (3, 1) frequency convs over 101-wide rows. Output row y of channel c is
 * clamp(mbqm(bias + sum_j w_j (x[c][sh y + j - pt] - zp)) + zp_out) over the rows j inside
 * the image, 32 positions a step (then 16, the last from a zero-padded copy): the rows' codes
 * centred in int16 lanes, two rows' products summed by one vpmaddwd (q8_dw_col16), the
 * requantised codes packed back in order. The same integer sums as the im2col path
 * (|x - zp| <= 255 and |w| <= 128: a pair's sum is below 2^17, and the loader's bound holds
 * for every partial sum), so the same codes, without the im2col rows, the weight packing
 * and the 32-position tiles that ran 128 positions for a 101-wide row. 0 (nothing written)
 * where a channel's shift is > 0: the caller takes the general path. */
static int q8_dw_col(int8_t *out, const int8_t *in, const int8_t *w, const kwsn_q8_requant *rq,
                     const kwsn_conv2d_args *a) {
    for (uint32_t c = 0; c < a->C_out; c++)
        if (rq->shift[c] > 0) return 0;
    const uint32_t W = a->W, kh = a->kh;
    const __m256i zpv = _mm256_set1_epi16((int16_t)rq->zp_in);
    for (uint32_t c = 0; c < a->C_out; c++) {
        const q8_rq_k rk =
            q8_rq_consts(rq->mult[c], rq->shift[c], rq->zp_out, rq->act_min, rq->act_max);
        const __m256i bias = _mm256_set1_epi32(rq->bias[c]);
        const int8_t *wc = w + (size_t)c * kh;
        for (uint32_t yy = 0; yy < a->H_out; yy++) {
            const int8_t *rows[KWSN_Q8_DWCOL_MAX];
            int32_t wt[KWSN_Q8_DWCOL_MAX + 1u];
            uint32_t nr = 0;
            for (uint32_t j = 0; j < kh; j++) {
                const int64_t r = (int64_t)a->sh * yy + j - a->pt;
                if (r >= 0 && r < (int64_t)a->H) {
                    rows[nr] = in + ((size_t)c * a->H + (size_t)r) * W;
                    wt[nr++] = wc[j];
                }
            }
            wt[nr] = 0;
            const uint32_t np = (nr + 1u) / 2u;
            __m256i wp[(KWSN_Q8_DWCOL_MAX + 1u) / 2u], xs[KWSN_Q8_DWCOL_MAX + 1u];
            for (uint32_t p = 0; p < np; p++)
                wp[p] = _mm256_set1_epi32((int32_t)(((uint32_t)wt[2u * p] & 0xFFFFu) |
                                                    ((uint32_t)wt[2u * p + 1u] << 16)));
            xs[nr] = _mm256_setzero_si256(); /* an odd row's partner */
            int8_t *y = out + ((size_t)c * a->H_out + yy) * W;
            uint32_t t = 0;
            for (; t + 32u <= W; t += 32u) {
                for (uint32_t i = 0; i < nr; i++)
                    xs[i] = _mm256_sub_epi16(_mm256_cvtepi8_epi16(q8_load16(rows[i] + t, 16u)), zpv);
                const __m256i a16 = q8_dw_col16(xs, wp, np, bias, &rk);
                for (uint32_t i = 0; i < nr; i++)
                    xs[i] = _mm256_sub_epi16(_mm256_cvtepi8_epi16(q8_load16(rows[i] + t + 16u, 16u)), zpv);
                const __m256i b16 = q8_dw_col16(xs, wp, np, bias, &rk);
                /* within int8: exact; vpacksswb per lane, vpermq puts a's 16 before b's */
                _mm256_storeu_si256((__m256i *)(void *)(y + t),
                                    _mm256_permute4x64_epi64(_mm256_packs_epi16(a16, b16), 0xD8));
            }
            for (; t < W; t += 16u) {
                const uint32_t nt = W - t < 16u ? W - t : 16u;
                for (uint32_t i = 0; i < nr; i++)
                    xs[i] = _mm256_sub_epi16(_mm256_cvtepi8_epi16(q8_load16(rows[i] + t, nt)), zpv);
                const __m256i v16 = q8_dw_col16(xs, wp, np, bias, &rk);
                q8_store16(y + t,
                           _mm_packs_epi16(_mm256_castsi256_si128(v16),
                                           _mm256_extracti128_si256(v16, 1)),
                           nt);
            }
        }
    }
    return 1;
}
#endif

/* out[r][w] = clamp(mbqm(xa + xb, m_o, s_o) + zp_out, lo, hi) over rows x W codes, xa the
 * term of a[r][w] and xb of b[r / H][w] (x = mbqm((q - zp) << left_shift, m, s)): H = 1 the
 * Add (rows = 1, W = n), H > 1 a BroadcastAdd (b [rows / H][W] added to each of its H rows).
 * Vector paths (s_o <= 0): in int32 lanes, the constants made once per call, and for a
 * BroadcastAdd b's terms once per b row (in chunks of KWSN_Q8_ADD_CHUNK), not once per row of
 * a: two requantisations per code instead of three. Safe in place (out == a; out == b for the
 * Add): each step reads its codes before writing the same codes of out. */
static void KWSN_K(kwsn_add_q8)(int8_t *out, const int8_t *a, const int8_t *b, size_t rows,
                                uint32_t H, uint32_t W, const kwsn_q8_add *p) {
#if KWSN_Q8_MBQM_LANES == 16 || KWSN_Q8_MBQM_LANES == 8
    if (p->s_o <= 0) {
        const int split = p->left_shift >= 15; /* q8_in_lanes */
        const int32_t ls_in = split ? p->left_shift : 15;
        const q8_addin_k ta = {q8_mbqm_consts(p->m_a, -p->s_a),
                               q8_in_consts(p->m_a, ls_in, -p->s_a), p->zp_a};
        const q8_addin_k tb = {q8_mbqm_consts(p->m_b, -p->s_b),
                               q8_in_consts(p->m_b, ls_in, -p->s_b), p->zp_b};
        const q8_rq_k ko = q8_rq_consts(p->m_o, p->s_o, p->zp_out, p->act_min, p->act_max);
        const __m128i ls = _mm_cvtsi32_si128(p->left_shift);
        int32_t xb[KWSN_Q8_ADD_CHUNK] __attribute__((aligned(64)));
#if KWSN_Q8_MBQM_LANES == 8
        /* AVX2: a chunk in passes, each with one input's constants or the output's (all
         * three sets at once did not fit the 16 ymm registers: the loop reloaded spilled
         * constants from the stack): a's terms, b's (per row of b), then the sums'
         * requantisation. Every code of the chunk is read before any is written: in place
         * stays safe. */
        int32_t xa[KWSN_Q8_ADD_CHUNK] __attribute__((aligned(64)));
        for (size_t g = 0; g < rows / H; g++) {
            const int8_t *bg = b + g * W;
            for (uint32_t w0 = 0; w0 < W; w0 += KWSN_Q8_ADD_CHUNK) {
                const uint32_t nw = W - w0 < KWSN_Q8_ADD_CHUNK ? W - w0 : KWSN_Q8_ADD_CHUNK;
                for (uint32_t h = 0; h < H; h++) {
                    const size_t r0 = (g * H + h) * W + w0;
                    for (uint32_t j = 0; j < nw; j += 16u)
                        q8_v16_store(xa + j, q8_add_terms16(q8_load16(a + r0 + j, nw - j), &ta,
                                                            split, ls));
                    if (h == 0u)
                        for (uint32_t j = 0; j < nw; j += 16u)
                            q8_v16_store(xb + j, q8_add_terms16(q8_load16(bg + w0 + j, nw - j),
                                                                &tb, split, ls));
                    for (uint32_t j = 0; j < nw; j += 16u) {
                        const uint32_t nt = nw - j;
                        q8_store16(out + r0 + j,
                                   q8_v16_codes(q8_v16_add(q8_v16_load(xa + j),
                                                           q8_v16_load(xb + j)), &ko), nt);
                    }
                }
            }
        }
        return;
#endif
        for (size_t g = 0; g < rows / H; g++) {
            const int8_t *bg = b + g * W;
            for (uint32_t w0 = 0; w0 < W; w0 += KWSN_Q8_ADD_CHUNK) {
                const uint32_t nw = W - w0 < KWSN_Q8_ADD_CHUNK ? W - w0 : KWSN_Q8_ADD_CHUNK;
                if (H > 1u)
                    for (uint32_t j = 0; j < nw; j += 16u)
                        q8_v16_store(xb + j, q8_add_terms16(q8_load16(bg + w0 + j, nw - j), &tb,
                                                            split, ls));
                for (uint32_t h = 0; h < H; h++) {
                    const size_t r0 = (g * H + h) * W + w0;
                    for (uint32_t j = 0; j < nw; j += 16u) {
                        const uint32_t nt = nw - j;
                        const q8_v16 xa = q8_add_terms16(q8_load16(a + r0 + j, nt), &ta, split, ls);
                        const q8_v16 sum =
                            H > 1u ? q8_v16_add(xa, q8_v16_load(xb + j))
                                   : q8_v16_add(xa, q8_add_terms16(q8_load16(bg + w0 + j, nt),
                                                                   &tb, split, ls));
                        q8_store16(out + r0 + j, q8_v16_codes(sum, &ko), nt);
                    }
                }
            }
        }
        return;
    }
#endif
    for (size_t r = 0; r < rows; r++)
        q8_add_row(out + r * W, a + r * W, b + (r / H) * W, W, p);
}

/* float -> int8 codes: clamp(round_half_even(x / scale) + zp, act_min, 127), clamped in
 * float (huge values and infinities are safe; NaN gives act_min). The rounding is the
 * 2^23 trick (exact ties-to-even for |v| < 2^23 in the default rounding mode; larger floats
 * are integers already), which every path vectorises, unlike a nearbyintf call. */
#if defined(__GNUC__) && !defined(__clang__)
/* Lets GCC if-convert a float compare-and-select into vector blends on SSE2 / AVX2 (with
 * trapping math it keeps a branch there, and the loop scalar). The results are the same:
 * nothing here reads the FP exception flags. */
#define KWSN_NO_TRAPPING_MATH __attribute__((optimize("no-trapping-math")))
#else
#define KWSN_NO_TRAPPING_MATH
#endif

KWSN_NO_TRAPPING_MATH
static void KWSN_K(kwsn_quantize_q8)(int8_t *out, const float *x, size_t n, float scale,
                                     int32_t zp, int32_t act_min) {
    const float lo = (float)act_min, fzp = (float)zp;
    size_t j = 0;
    /* AVX2 / AVX-512: the same steps in vector lanes. vroundps / vrndscaleps to nearest is
     * round-half-even of every float (infinities and NaN pass through), as the 2^23 trick;
     * vmaxps returns its second operand where either is NaN, so max(r, lo) is
     * r >= lo ? r : lo; the codes then pack to bytes unchanged (within int8).
     * AVX-512, 64 a step, by the reciprocal. round(v) + zp clamped to [lo, 127] is
     * max(sat8(round(min(v, 127 - zp)) + zp), lo) where sat8 is the saturating narrowing
     * (vpackssdw, vpaddsw, vpacksswb): an integer bound commutes with the rounding, a value
     * below lo - zp rounds to at most lo - zp whatever its error (then lo), and NaN and -inf
     * (cvttps gives INT32_MIN) saturate to -128 (then lo); min(127 - zp, NaN) is NaN. In
     * [lo - zp - 1, 127 - zp] (|.| <= 256), y = x * fl(1 / scale) is within 256 2^-22.9 <
     * 2^-14 of v = x / scale (two roundings; scale normal, not extreme), as fl(x / scale) is
     * within 2^-24 |v|: so both round to the same integer unless y is within 2^-14 of a
     * half-integer; such a step takes the quotients (on audio about one step in a hundred).
     * Four vectors' codes are put in order by one vpermd and stored at once. vdivps (Zen 4:
     * one zmm quotient per ~6 cycles) was the loop's bound. */
#if defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX512F__)
    {
        const __m512 sv = _mm512_set1_ps(scale), zv = _mm512_set1_ps(fzp),
                     lov = _mm512_set1_ps(lo), hiv = _mm512_set1_ps(127.0f);
#if defined(__AVX512BW__)
        const __m512 chi = _mm512_set1_ps(127.0f - fzp);
        const __m512 iv = _mm512_set1_ps(1.0f / scale), near = _mm512_set1_ps(0.5f - 0x1p-14f);
        const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
        const __m512i zpw = _mm512_set1_epi16((int16_t)zp), lob = _mm512_set1_epi8((char)act_min);
        const int by_recip = scale >= 0x1p-100f && scale <= 0x1p100f;
        for (; by_recip && j + 64u <= n; j += 64u) {
            __m512 v[4];
            __mmask16 flag = 0;
            for (uint32_t q = 0; q < 4u; q++) {
                const __m512 y = _mm512_min_ps(chi, _mm512_mul_ps(_mm512_loadu_ps(x + j + 16u * q), iv));
                v[q] = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                flag |= _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(y, v[q])), near, _CMP_GE_OQ);
            }
            if (flag)
                for (uint32_t q = 0; q < 4u; q++)
                    v[q] = _mm512_roundscale_ps(
                        _mm512_min_ps(chi, _mm512_div_ps(_mm512_loadu_ps(x + j + 16u * q), sv)),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            /* lane l of the packed bytes: codes 16 q + 4 l + 0..3 for q = 0..3, in dword q */
            const __m512i w01 = _mm512_adds_epi16(
                _mm512_packs_epi32(_mm512_cvttps_epi32(v[0]), _mm512_cvttps_epi32(v[1])), zpw);
            const __m512i w23 = _mm512_adds_epi16(
                _mm512_packs_epi32(_mm512_cvttps_epi32(v[2]), _mm512_cvttps_epi32(v[3])), zpw);
            _mm512_storeu_si512((void *)(out + j),
                                _mm512_permutexvar_epi32(
                                    order, _mm512_max_epi8(_mm512_packs_epi16(w01, w23), lob)));
        }
#endif
        for (; j + 16u <= n; j += 16u) {
            __m512 v = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(x + j), sv),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, zv), lov), hiv);
            _mm_storeu_si128((__m128i *)(void *)(out + j),
                             _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
        }
    }
#elif defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX2__)
    {
        const __m256 sv = _mm256_set1_ps(scale), zv = _mm256_set1_ps(fzp),
                     lov = _mm256_set1_ps(lo), hiv = _mm256_set1_ps(127.0f);
        /* 32 a step by the reciprocal, as AVX-512's 64 above (the same argument; vdivps was
         * this loop's bound too): sat8 by vpackssdw, vpaddsw, vpacksswb within each 128-bit
         * lane, then one vpermd puts the four vectors' dwords of codes in order */
        const __m256 chi = _mm256_set1_ps(127.0f - fzp), iv = _mm256_set1_ps(1.0f / scale),
                     near = _mm256_set1_ps(0.5f - 0x1p-14f),
                     absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        const __m256i zpw = _mm256_set1_epi16((int16_t)zp), lob = _mm256_set1_epi8((char)act_min);
        const int by_recip = scale >= 0x1p-100f && scale <= 0x1p100f;
        for (; by_recip && j + 32u <= n; j += 32u) {
            __m256 v[4], flag = _mm256_setzero_ps();
            for (uint32_t q = 0; q < 4u; q++) {
                const __m256 y = _mm256_min_ps(chi, _mm256_mul_ps(_mm256_loadu_ps(x + j + 8u * q), iv));
                v[q] = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                flag = _mm256_or_ps(flag, _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(y, v[q]), absm),
                                                        near, _CMP_GE_OQ));
            }
            if (_mm256_movemask_ps(flag))
                for (uint32_t q = 0; q < 4u; q++)
                    v[q] = _mm256_round_ps(
                        _mm256_min_ps(chi, _mm256_div_ps(_mm256_loadu_ps(x + j + 8u * q), sv)),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            const __m256i w01 = _mm256_adds_epi16(
                _mm256_packs_epi32(_mm256_cvttps_epi32(v[0]), _mm256_cvttps_epi32(v[1])), zpw);
            const __m256i w23 = _mm256_adds_epi16(
                _mm256_packs_epi32(_mm256_cvttps_epi32(v[2]), _mm256_cvttps_epi32(v[3])), zpw);
            _mm256_storeu_si256((__m256i *)(void *)(out + j),
                                _mm256_permutevar8x32_epi32(
                                    _mm256_max_epi8(_mm256_packs_epi16(w01, w23), lob), order));
        }
        for (; j + 8u <= n; j += 8u) {
            __m256 v = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + j), sv),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, zv), lov), hiv);
            const __m256i q = _mm256_cvttps_epi32(v);
            const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(q),
                                                _mm256_extracti128_si256(q, 1));
            _mm_storel_epi64((__m128i *)(void *)(out + j), _mm_packs_epi16(w16, w16));
        }
    }
#endif
    int32_t tile[KWSN_Q8_TILE];
    for (size_t j0 = j; j0 < n; j0 += KWSN_Q8_TILE) {
        const size_t nt = n - j0 < KWSN_Q8_TILE ? n - j0 : KWSN_Q8_TILE;
        const float *xs = x + j0;
        for (size_t u = 0; u < nt; u++) { /* float -> int32 here, int32 -> int8 below: both
                                           * loops vectorise, one loop mixing them did not */
            const float v = xs[u] / scale;
            const float a = fabsf(v);
            const float rounded = a < 0x1p23f ? copysignf((a + 0x1p23f) - 0x1p23f, v) : v;
            float r = rounded + fzp;
            r = r >= lo ? r : lo; /* NaN -> act_min */
            r = r <= 127.0f ? r : 127.0f;
            tile[u] = (int32_t)r;
        }
        for (size_t u = 0; u < nt; u++) out[j0 + u] = (int8_t)tile[u];
    }
}

/* codes -> float: (float)(q - zp) * scale, one rounding (the float islands' input). */
static void KWSN_K(kwsn_dequantize_q8)(float *out, const int8_t *in, size_t n, float scale,
                                       int32_t zp) {
    for (size_t j = 0; j < n; j++) out[j] = (float)((int32_t)in[j] - zp) * scale;
}

/* floor(sqrt(v)) exactly: a double estimate, then integer correction (v < 2^63). */
static uint64_t q8_isqrt(uint64_t v) {
    uint64_t r = (uint64_t)sqrt((double)v);
    while (r > 0 && r * r > v) r--;
    while ((r + 1u) * (r + 1u) <= v) r++;
    return r;
}

#if KWSN_Q8_MBQM_LANES == 16 && defined(__AVX512BW__)
/* Z (int32) as two tables of 16-bit halves, low (tl) and high (th), 256 entries each in 8
 * registers: per 32 codes 4 word permutes of 64 entries (index bits 0..5) and a blend tree on
 * bits 6, 7 for each half (half the permutes and blends of an int32 table in 16 registers;
 * both far faster than vpgatherdd on Zen 4). */
typedef struct {
    __m512i tl[8], th[8];
} q8_ln_ztab;

KWSN_INLINE void q8_ln_ztab_fill(q8_ln_ztab *t, const int32_t *lut) {
    for (uint32_t j = 0; j < 8u; j++) {
        int16_t l16[32], h16[32];
        for (uint32_t u = 0; u < 32u; u++) {
            const uint32_t z = (uint32_t)lut[32u * j + u];
            l16[u] = (int16_t)(uint16_t)(z & 0xFFFFu);
            h16[u] = (int16_t)(uint16_t)(z >> 16);
        }
        t->tl[j] = _mm512_loadu_si512((const void *)l16);
        t->th[j] = _mm512_loadu_si512((const void *)h16);
    }
}

/* The codes x[0 .. min(left, 32)) as 16-bit table indices c (the code + 128; the rest 0 + 128)
 * and their bits 6 and 7 as masks, for q8_ln_look16. */
KWSN_INLINE __m512i q8_ln_index(const int8_t *x, __mmask32 mk, __mmask32 *m6, __mmask32 *m7) {
    const __m512i b7 = _mm512_set1_epi16(128);
    const __m512i c = _mm512_xor_si512(
        _mm512_cvtepu8_epi16(_mm512_castsi512_si256(
            _mm512_maskz_loadu_epi8((__mmask64)mk, (const void *)x))), b7);
    *m6 = _mm512_test_epi16_mask(c, _mm512_set1_epi16(64));
    *m7 = _mm512_test_epi16_mask(c, b7);
    return c;
}

/* 32 entries of a 256-entry 16-bit table in 8 registers: a word permute per 64 entries (index
 * bits 0..5), a blend tree on bits 6, 7 */
KWSN_INLINE __m512i q8_ln_look16(const __m512i *tab, __m512i c, __mmask32 m6, __mmask32 m7) {
    return _mm512_mask_blend_epi16(
        m7,
        _mm512_mask_blend_epi16(m6, _mm512_permutex2var_epi16(tab[0], c, tab[1]),
                                _mm512_permutex2var_epi16(tab[2], c, tab[3])),
        _mm512_mask_blend_epi16(m6, _mm512_permutex2var_epi16(tab[4], c, tab[5]),
                                _mm512_permutex2var_epi16(tab[6], c, tab[7])));
}

/* Z G + (B << b) of the codes x[0 .. min(left, 32)) as int32 lanes: *va holds elements
 * 8 l + 0..3 and *vb elements 8 l + 4..7 of each 128-bit lane l. vpunpcklwd / vpunpckhwd of
 * the halves rebuild Z exactly in that order; gamma and beta are widened the same way (the
 * word in both halves of a dword, then >> 16 arithmetic: sign-extended). The loads are masked
 * to min(left, 32) codes (the other lanes are computed from zeros, for nobody). */
KWSN_INLINE void q8_ln_acc32(__m512i *va, __m512i *vb, const q8_ln_ztab *t, const int8_t *x,
                             const int8_t *gamma, const uint8_t *beta, uint32_t left,
                             __m128i bcnt) {
    const __mmask32 mk = left >= 32u ? ~(__mmask32)0 : (((__mmask32)1 << left) - 1u);
    __mmask32 m6, m7;
    const __m512i c = q8_ln_index(x, mk, &m6, &m7);
    const __m512i zl = q8_ln_look16(t->tl, c, m6, m7), zh = q8_ln_look16(t->th, c, m6, m7);
    const __m512i g16 = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(
        _mm512_maskz_loadu_epi8((__mmask64)mk, (const void *)gamma)));
    const __m512i b16 = _mm512_maskz_loadu_epi16(mk, (const void *)beta);
    const __m512i za = _mm512_unpacklo_epi16(zl, zh), zb = _mm512_unpackhi_epi16(zl, zh);
    const __m512i ga = _mm512_srai_epi32(_mm512_unpacklo_epi16(g16, g16), 16);
    const __m512i gb = _mm512_srai_epi32(_mm512_unpackhi_epi16(g16, g16), 16);
    const __m512i ba = _mm512_sll_epi32(_mm512_srai_epi32(_mm512_unpacklo_epi16(b16, b16), 16), bcnt);
    const __m512i bb = _mm512_sll_epi32(_mm512_srai_epi32(_mm512_unpackhi_epi16(b16, b16), 16), bcnt);
    *va = _mm512_add_epi32(_mm512_mullo_epi32(za, ga), ba);
    *vb = _mm512_add_epi32(_mm512_mullo_epi32(zb, gb), bb);
}

/* As q8_ln_acc32 for a group whose Z fits int16 (|Z| <= 32767 for every code it holds: Z is
 * non-decreasing in the code, so its smallest and largest code tell) and b <= 14: Z is then
 * the table of low halves alone (sign-extended, the same value), and one vpmaddwd of the
 * pairs (Z, 2^b) and (G, B) per 16 lanes gives Z G + B 2^b exactly (each product within
 * int32, |sum| < 2^22 + 2^29): 4 permutes instead of 8 and no widening of gamma and beta to
 * int32. The same lanes as q8_ln_acc32. */
KWSN_INLINE void q8_ln_acc32_w16(__m512i *va, __m512i *vb, const q8_ln_ztab *t, const int8_t *x,
                                 const int8_t *gamma, const uint8_t *beta, uint32_t left,
                                 __m512i pw) {
    const __mmask32 mk = left >= 32u ? ~(__mmask32)0 : (((__mmask32)1 << left) - 1u);
    __mmask32 m6, m7;
    const __m512i c = q8_ln_index(x, mk, &m6, &m7); /* m6, m7 set before their use */
    const __m512i z = q8_ln_look16(t->tl, c, m6, m7);
    const __m512i g16 = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(
        _mm512_maskz_loadu_epi8((__mmask64)mk, (const void *)gamma)));
    const __m512i b16 = _mm512_maskz_loadu_epi16(mk, (const void *)beta);
    *va = _mm512_madd_epi16(_mm512_unpacklo_epi16(z, pw), _mm512_unpacklo_epi16(g16, b16));
    *vb = _mm512_madd_epi16(_mm512_unpackhi_epi16(z, pw), _mm512_unpackhi_epi16(g16, b16));
}

/* q8_ln_acc32 or, w16 (a constant where inlined), q8_ln_acc32_w16 */
KWSN_INLINE void q8_ln_acc32_any(__m512i *va, __m512i *vb, const q8_ln_ztab *t, const int8_t *x,
                                 const int8_t *gamma, const uint8_t *beta, uint32_t left,
                                 __m128i bcnt, __m512i pw, const int w16) {
    if (w16) q8_ln_acc32_w16(va, vb, t, x, gamma, beta, left, pw);
    else q8_ln_acc32(va, vb, t, x, gamma, beta, left, bcnt);
}
#endif

#if KWSN_Q8_MBQM_LANES == 16 && defined(__AVX512BW__)
/* q8_ln_lut_row's AVX-512 loop, 32 codes a step (q8_ln_acc32_any); vpackssdw of the two codes
 * vectors (within int8: exact) restores the element order. The last block's extra lanes are
 * computed, never stored. */
KWSN_INLINE void q8_ln_row512(int8_t *y, const int8_t *x, uint32_t n, const q8_ln_ztab *t,
                              const int8_t *gamma, const uint8_t *beta, __m128i bcnt, __m512i pw,
                              const q8_rq_k *rk, const int w16) {
    for (uint32_t i = 0; i < n; i += 32u) {
        const uint32_t left = n - i;
        __m512i a, b;
        q8_ln_acc32_any(&a, &b, t, x + i, gamma + i, beta + 2u * (size_t)i, left, bcnt, pw, w16);
        const __m512i va = q8_rq_lanes32(a, rk), vb = q8_rq_lanes32(b, rk);
        const __m256i codes = _mm512_cvtepi16_epi8(_mm512_packs_epi32(va, vb));
        if (left >= 32u) {
            _mm256_storeu_si256((__m256i *)(void *)(y + i), codes);
        } else {
            int8_t part[32];
            _mm256_storeu_si256((__m256i *)(void *)part, codes);
            memcpy(y + i, part, left);
        }
    }
}
#endif

/* One pass of the integer LayerNorm over a group with the table of Z (lut: Z of code c at
 * lut[c + 128]) and shift <= 0: per element Z G + (B << b), mbqm, + zp_out, clamp; the
 * same arithmetic as the tiled loop below, element by element (safe in place: each block of
 * codes is read before its outputs are written). w16: every code's Z fits int16 and b <= 14
 * (q8_ln_acc32_w16; read on AVX-512 only). */
static void q8_ln_lut_row(int8_t *y, const int8_t *x, uint32_t n, const int32_t *lut,
                          const int8_t *gamma, const uint8_t *beta, int32_t bshift, int32_t m,
                          int32_t right, int32_t zp, int32_t lo, int32_t hi, int w16) {
    uint32_t i = 0;
    (void)w16;
#if KWSN_Q8_MBQM_LANES == 16 && defined(__AVX512BW__)
    {
        const q8_rq_k rk = q8_rq_consts(m, -right, zp, lo, hi);
        const __m128i bcnt = _mm_cvtsi32_si128(bshift);
        const __m512i pw = _mm512_set1_epi16((int16_t)(1 << (bshift <= 14 ? bshift : 0)));
        q8_ln_ztab t;
        q8_ln_ztab_fill(&t, lut);
        if (w16)
            q8_ln_row512(y, x, n, &t, gamma, beta, bcnt, pw, &rk, 1);
        else
            q8_ln_row512(y, x, n, &t, gamma, beta, bcnt, pw, &rk, 0);
        i = n;
    }
#elif KWSN_Q8_MBQM_LANES == 8
    {
        const q8_rq_k rk = q8_rq_consts(m, -right, zp, lo, hi);
        const q8_mbqm_k k = rk.k;
        const __m128i bcnt = _mm_cvtsi32_si128(bshift);
        /* clamp(v, lo - zp, hi - zp) + zp: see q8_rq_lanes32 */
        const __m256i zpv = rk.zpv, lov = rk.lov, hiv = rk.hiv;
        /* 32 elements a step: the same lanes as below, four vectors narrowed together (the
         * 32 codes are all read before the 32 outputs are stored: in place stays safe); Z of
         * the 32 codes by scalar look-ups into memory, then 4 vector loads (measured a bit
         * faster than building each vector from 8 inserts) */
        for (; i + 32u <= n; i += 32u) {
            const int32_t *l0 = lut + 128;
            const int8_t *xi = x + i;
            __m256i v[4], zt[4];
            int32_t *zs = (int32_t *)(void *)zt;
            for (uint32_t u = 0; u < 32u; u++) zs[u] = l0[xi[u]];
            for (uint32_t q = 0; q < 4u; q++) {
                const __m256i z = zt[q];
                const __m256i g = _mm256_cvtepi8_epi32(
                    _mm_loadl_epi64((const __m128i *)(const void *)(gamma + i + 8u * q)));
                const __m256i b = _mm256_sll_epi32(
                    _mm256_cvtepi16_epi32(_mm_loadu_si128(
                        (const __m128i *)(const void *)(beta + 2u * ((size_t)i + 8u * q)))),
                    bcnt);
                v[q] = q8_rq_lanes32(_mm256_add_epi32(_mm256_mullo_epi32(z, g), b), &rk);
            }
            _mm256_storeu_si256((__m256i *)(void *)(y + i), q8_narrow32(v[0], v[1], v[2], v[3]));
        }
        for (; i + 8u <= n; i += 8u) {
            /* eight scalar look-ups put in lanes: on Zen 4 about 2x faster than vpgatherdd */
            const int32_t *l0 = lut + 128;
            const int8_t *xi = x + i;
            const __m256i z = _mm256_set_epi32(l0[xi[7]], l0[xi[6]], l0[xi[5]], l0[xi[4]],
                                               l0[xi[3]], l0[xi[2]], l0[xi[1]], l0[xi[0]]);
            const __m256i g =
                _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(gamma + i)));
            const __m256i b = _mm256_sll_epi32(
                _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(beta + 2u * (size_t)i))),
                bcnt);
            __m256i v = q8_mbqm_lanes(_mm256_add_epi32(_mm256_mullo_epi32(z, g), b), &k);
            v = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, lov), hiv), zpv);
            /* within int8: the packs are exact */
            const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            _mm_storel_epi64((__m128i *)(void *)(y + i), _mm_packs_epi16(w16, w16));
        }
    }
#endif
    for (; i < n; i++) {
        int32_t bv = (int32_t)beta[2u * i] | ((int32_t)beta[2u * i + 1u] << 8);
        bv -= (bv & 0x8000) << 1; /* int16 */
        int32_t v = kwsn_mbqm_r(lut[(int32_t)x[i] + 128] * (int32_t)gamma[i] +
                                    bv * (INT32_C(1) << bshift), m, right);
        v = v < -(1 << 24) ? -(1 << 24) : (v > (1 << 24) ? (1 << 24) : v);
        v += zp;
        y[i] = (int8_t)(v < lo ? lo : (v > hi ? hi : v));
    }
}

/* LayerNorm, then MaxPool1d(k, stride k) over rows of `row` codes (kwsn_q8_layernorm.pool):
 * row c's window j gets clamp(mbqm(max of its k accumulators Z G + (B << b)) + zp, lo, hi).
 * The requantisation is non-decreasing in the accumulator (M > 0: srdhm and rdbpot round
 * a non-decreasing value, the clamps are non-decreasing; M = 0 is constant), so the code of
 * the largest accumulator is the largest code: the same bits as the LayerNorm's codes pooled
 * (and a ReLU between them is a raised lo), with one requantisation per window instead of one
 * per code. lut: Z of every code (kwsn_layernorm_q8 builds it for a pooled group of any
 * length). This scalar loop does windows [j0, j1) of one row (every path's tail; the
 * baseline's and any k's whole row). */
static void q8_ln_pool_windows(int8_t *yr, const int8_t *xr, const int8_t *gr, const uint8_t *br,
                               uint32_t j0, uint32_t j1, uint32_t k, const int32_t *lut,
                               int32_t bshift, int32_t m, int32_t shift, int32_t zp, int32_t lo,
                               int32_t hi) {
    for (uint32_t j = j0; j < j1; j++) {
        int32_t best = INT32_MIN;
        for (uint32_t u = 0; u < k; u++) {
            const size_t i = (size_t)j * k + u;
            int32_t bv = (int32_t)br[2u * i] | ((int32_t)br[2u * i + 1u] << 8);
            bv -= (bv & 0x8000) << 1; /* int16 */
            const int32_t acc = lut[(int32_t)xr[i] + 128] * (int32_t)gr[i] + bv * (INT32_C(1) << bshift);
            best = acc > best ? acc : best;
        }
        int32_t v = shift <= 0 ? kwsn_mbqm_r(best, m, -shift) : kwsn_mbqm(best, m, shift);
        v = v < -(1 << 24) ? -(1 << 24) : (v > (1 << 24) ? (1 << 24) : v);
        v += zp;
        yr[j] = (int8_t)(v < lo ? lo : (v > hi ? hi : v));
    }
}

#if KWSN_Q8_MBQM_LANES == 8
/* Z G + (B << b) of 8 codes in element order (the Z by scalar look-ups, as q8_ln_lut_row) */
KWSN_INLINE __m256i q8_ln_acc8(const int32_t *l0, const int8_t *x, const int8_t *g,
                               const uint8_t *b, __m128i bcnt) {
    const __m256i z = _mm256_set_epi32(l0[x[7]], l0[x[6]], l0[x[5]], l0[x[4]], l0[x[3]], l0[x[2]],
                                       l0[x[1]], l0[x[0]]);
    const __m256i gv = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)g));
    const __m256i bv = _mm256_sll_epi32(
        _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(const void *)b)), bcnt);
    return _mm256_add_epi32(_mm256_mullo_epi32(z, gv), bv);
}
#endif

#if KWSN_Q8_MBQM_LANES == 16 && defined(__AVX512BW__)
/* q8_ln_lut_pool's AVX-512 row (k = 2 or 4): the windows it did (all of them) */
KWSN_INLINE uint32_t q8_ln_pool_row512(int8_t *yr, const int8_t *xr, const int8_t *gr,
                                       const uint8_t *br, uint32_t wo, uint32_t k,
                                       const q8_ln_ztab *t, const q8_rq_k *rk, __m128i bcnt,
                                       __m512i pw, const int w16) {
    const __m512i gather = _mm512_set_epi32(29, 28, 25, 24, 21, 20, 17, 16, 13, 12, 9, 8, 5, 4, 1, 0);
    const uint32_t used = wo * k;
    uint32_t j = 0;
    for (; j < wo; j += 16u) {
        const uint32_t e = j * k;
        __m512i a, b, w;
        q8_ln_acc32_any(&a, &b, t, xr + e, gr + e, br + 2u * (size_t)e, used - e, bcnt, pw, w16);
        if (k == 4u) {
            a = _mm512_max_epi32(a, _mm512_shuffle_epi32(a, _MM_PERM_BADC));
            a = _mm512_max_epi32(a, _mm512_shuffle_epi32(a, _MM_PERM_CDAB));
            b = _mm512_max_epi32(b, _mm512_shuffle_epi32(b, _MM_PERM_BADC));
            b = _mm512_max_epi32(b, _mm512_shuffle_epi32(b, _MM_PERM_CDAB));
            const __m512i t0 = _mm512_mask_blend_epi32((__mmask16)0xAAAA, a, b);
            __m512i t1 = t0;
            if (used - e > 32u) {
                q8_ln_acc32_any(&a, &b, t, xr + e + 32u, gr + e + 32u, br + 2u * (size_t)(e + 32u),
                                used - e - 32u, bcnt, pw, w16);
                a = _mm512_max_epi32(a, _mm512_shuffle_epi32(a, _MM_PERM_BADC));
                a = _mm512_max_epi32(a, _mm512_shuffle_epi32(a, _MM_PERM_CDAB));
                b = _mm512_max_epi32(b, _mm512_shuffle_epi32(b, _MM_PERM_BADC));
                b = _mm512_max_epi32(b, _mm512_shuffle_epi32(b, _MM_PERM_CDAB));
                t1 = _mm512_mask_blend_epi32((__mmask16)0xAAAA, a, b);
            }
            w = _mm512_permutex2var_epi32(t0, gather, t1);
        } else {
            a = _mm512_max_epi32(a, _mm512_shuffle_epi32(a, _MM_PERM_CDAB));
            b = _mm512_max_epi32(b, _mm512_shuffle_epi32(b, _MM_PERM_CDAB));
            w = _mm512_castps_si512(_mm512_shuffle_ps(_mm512_castsi512_ps(a),
                                                      _mm512_castsi512_ps(b),
                                                      _MM_SHUFFLE(2, 0, 2, 0)));
        }
        const __m128i codes = q8_rq_lanes(w, rk);
        if (wo - j >= 16u) {
            _mm_storeu_si128((__m128i *)(void *)(yr + j), codes);
        } else {
            int8_t part[16];
            _mm_storeu_si128((__m128i *)(void *)part, codes);
            memcpy(yr + j, part, wo - j);
        }
    }
    return j < wo ? j : wo;
}
#endif

/* The pooled pass over `rows` rows of a group (see q8_ln_pool_windows): AVX-512 16 windows
 * a step for k = 4 (two q8_ln_acc32 blocks: each 128-bit lane of *va / *vb is one window,
 * reduced by two dword shuffles and max, the 16 maxima gathered by one vpermt2d) and k = 2 (one
 * block: dword pairs reduced, gathered by one vshufps); AVX2 8 windows a step for k = 4 and
 * 2; then one requantisation of the 16 (8) maxima. The rest by q8_ln_pool_windows. */
static void q8_ln_lut_pool(int8_t *y, const int8_t *x, uint32_t rows, uint32_t row, uint32_t k,
                           const int32_t *lut, const int8_t *gamma, const uint8_t *beta,
                           int32_t bshift, int32_t m, int32_t shift, int32_t zp, int32_t lo,
                           int32_t hi, int w16) {
    const uint32_t wo = row / k;
    (void)w16;
#if KWSN_Q8_MBQM_LANES == 16 && defined(__AVX512BW__)
    const int vec = shift <= 0 && (k == 2u || k == 4u);
    q8_ln_ztab t;
    q8_rq_k rk;
    const __m128i bcnt = _mm_cvtsi32_si128(bshift);
    const __m512i pw = _mm512_set1_epi16((int16_t)(1 << (bshift <= 14 ? bshift : 0)));
    if (vec) {
        q8_ln_ztab_fill(&t, lut);
        rk = q8_rq_consts(m, shift, zp, lo, hi);
    }
#elif KWSN_Q8_MBQM_LANES == 8
    const int vec = shift <= 0 && (k == 2u || k == 4u);
    q8_rq_k rk;
    const __m128i bcnt = _mm_cvtsi32_si128(bshift);
    if (vec) rk = q8_rq_consts(m, shift, zp, lo, hi);
#endif
    for (uint32_t c = 0; c < rows; c++) {
        const size_t r0 = (size_t)c * row;
        const int8_t *xr = x + r0, *gr = gamma + r0;
        const uint8_t *br = beta + 2u * r0;
        int8_t *yr = y + (size_t)c * wo;
        uint32_t j = 0;
#if KWSN_Q8_MBQM_LANES == 16 && defined(__AVX512BW__)
        if (vec) j = w16 ? q8_ln_pool_row512(yr, xr, gr, br, wo, k, &t, &rk, bcnt, pw, 1)
                         : q8_ln_pool_row512(yr, xr, gr, br, wo, k, &t, &rk, bcnt, pw, 0);
#elif KWSN_Q8_MBQM_LANES == 8
        const int32_t *l0 = lut + 128;
        for (; vec && j < wo; j += 8u) {
            const size_t e = (size_t)j * k;
            /* the last windows of a row (fewer than 8) from zero-padded copies: the loads
             * below read 8 k codes */
            const uint32_t nw = wo - j < 8u ? wo - j : 8u;
            int8_t xt[32], gt[32];
            uint8_t bt[64];
            const int8_t *xs = xr + e, *gs = gr + e;
            const uint8_t *bs = br + 2u * e;
            if (nw < 8u) {
                memset(xt, 0, sizeof xt), memset(gt, 0, sizeof gt), memset(bt, 0, sizeof bt);
                memcpy(xt, xs, (size_t)nw * k), memcpy(gt, gs, (size_t)nw * k);
                memcpy(bt, bs, 2u * (size_t)nw * k);
                xs = xt, gs = gt, bs = bt;
            }
            __m256i w;
            if (k == 4u) {
                __m256i v[4];
                for (uint32_t q = 0; q < 4u; q++) {
                    const size_t i = 8u * q;
                    v[q] = q8_ln_acc8(l0, xs + i, gs + i, bs + 2u * i, bcnt);
                    v[q] = _mm256_max_epi32(v[q], _mm256_shuffle_epi32(v[q], 0x4E));
                    v[q] = _mm256_max_epi32(v[q], _mm256_shuffle_epi32(v[q], 0xB1));
                }
                /* lane 0 of v[q] is window 2 q, lane 1 window 2 q + 1 */
                const __m256i a = _mm256_blend_epi32(v[0], v[1], 0xCC);
                const __m256i b = _mm256_blend_epi32(v[2], v[3], 0xCC);
                w = _mm256_permutevar8x32_epi32(_mm256_blend_epi32(a, b, 0xAA),
                                                _mm256_setr_epi32(0, 4, 2, 6, 1, 5, 3, 7));
            } else {
                __m256i v0 = q8_ln_acc8(l0, xs, gs, bs, bcnt);
                __m256i v1 = q8_ln_acc8(l0, xs + 8u, gs + 8u, bs + 16u, bcnt);
                v0 = _mm256_max_epi32(v0, _mm256_shuffle_epi32(v0, 0xB1));
                v1 = _mm256_max_epi32(v1, _mm256_shuffle_epi32(v1, 0xB1));
                w = _mm256_permutevar8x32_epi32(
                    _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(v0),
                                                          _mm256_castsi256_ps(v1),
                                                          _MM_SHUFFLE(2, 0, 2, 0))),
                    _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
            }
            const __m256i v = q8_rq_lanes32(w, &rk); /* within int8: the packs are exact */
            const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            if (nw == 8u) {
                _mm_storel_epi64((__m128i *)(void *)(yr + j), _mm_packs_epi16(w16, w16));
            } else {
                int8_t part[16];
                _mm_storeu_si128((__m128i *)(void *)part, _mm_packs_epi16(w16, w16));
                memcpy(yr + j, part, nw);
            }
        }
        if (j > wo) j = wo;
#endif
        q8_ln_pool_windows(yr, xr, gr, br, j, wo, k, lut, bshift, m, shift, zp, lo, hi);
    }
}

/* *sq = sum of the n codes q, *sq2 = sum of q^2, on AVX2 / AVX-512BW over vectors of codes
 * (the exact integers the baseline's loop sums; S1, S2 follow by algebra at the caller):
 * sum q by vpsadbw of q ^ 0x80 = q + 128, less 128 per byte read (AVX-512: the last vector
 * masked, its missing bytes read as 0, i.e. 128 once flipped; AVX2: a scalar tail); sum q^2
 * by vpdpbusd of (q + 128) (u8) and q (s8), which is sum q^2 + 128 sum q, or elsewhere by
 * vpmaddwd of q widened to int16 (missing bytes add 0). Exact: per block of 2^15 codes an
 * int32 lane adds at most 2^12 products, each of magnitude <= 32385 < 2^15, so below 2^27;
 * the blocks add up in int64, and the sad qwords cannot overflow. */
#if defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX512BW__)
#define KWSN_Q8_LN_SUMS 1
static void q8_ln_sums(const int8_t *x, uint32_t n, int64_t *sq, int64_t *sq2, int32_t *qmin,
                       int32_t *qmax) {
    const __m512i flip = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    int64_t s = 0, s2 = 0;
    /* the smallest and largest code (n >= 1), for kwsn_layernorm_q8's int16 Z: a masked
     * load's missing bytes read as 0, so the last vector's min / max are masked too */
    __m512i vmin = _mm512_set1_epi8(127), vmax = _mm512_set1_epi8(-128);
    for (uint32_t i0 = 0; i0 < n; i0 += 32768u) {
        const uint32_t nb = n - i0 < 32768u ? n - i0 : 32768u;
        const int8_t *xb = x + i0;
        __m512i a1 = zero, a2 = zero;
        uint32_t i = 0;
        for (; i < nb; i += 64u) {
            const __mmask64 mk = q8_mask64(nb - i);
            const __m512i q = nb - i >= 64u ? _mm512_loadu_si512((const void *)(xb + i))
                                            : _mm512_maskz_loadu_epi8(mk, (const void *)(xb + i));
            vmin = _mm512_mask_min_epi8(vmin, mk, vmin, q);
            vmax = _mm512_mask_max_epi8(vmax, mk, vmax, q);
            const __m512i u = _mm512_xor_si512(q, flip);
            a1 = _mm512_add_epi64(a1, _mm512_sad_epu8(u, zero));
#if defined(__AVX512VNNI__)
            a2 = _mm512_dpbusd_epi32(a2, u, q);
#else
            const __m512i lo = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(q));
            const __m512i hi = _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(q, 1));
            a2 = _mm512_add_epi32(a2, _mm512_add_epi32(_mm512_madd_epi16(lo, lo),
                                                       _mm512_madd_epi16(hi, hi)));
#endif
        }
        const int64_t bs = _mm512_reduce_add_epi64(a1) - 128 * (int64_t)i;
        /* the int32 lanes summed in int64 */
        const int64_t b2 =
            _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(a2)),
                                                     _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(a2, 1))));
        s += bs;
#if defined(__AVX512VNNI__)
        s2 += b2 - 128 * bs;
#else
        s2 += b2;
#endif
    }
    *sq = s, *sq2 = s2;
    int8_t lo[64], hi[64];
    _mm512_storeu_si512((void *)lo, vmin);
    _mm512_storeu_si512((void *)hi, vmax);
    int32_t a = 127, b = -128;
    for (uint32_t u = 0; u < 64u; u++) {
        a = lo[u] < a ? lo[u] : a;
        b = hi[u] > b ? hi[u] : b;
    }
    *qmin = a, *qmax = b;
}
#elif defined(__GNUC__) && !defined(KWSN_NO_VECTOR_EXT) && defined(__AVX2__)
#define KWSN_Q8_LN_SUMS 1
static void q8_ln_sums(const int8_t *x, uint32_t n, int64_t *sq, int64_t *sq2, int32_t *qmin,
                       int32_t *qmax) {
    *qmin = -128, *qmax = 127; /* not computed here: only AVX-512 reads them */
    const __m256i flip = _mm256_set1_epi8((char)0x80), zero = _mm256_setzero_si256();
    int64_t s = 0, s2 = 0;
    for (uint32_t i0 = 0; i0 < n; i0 += 32768u) {
        const uint32_t nb = n - i0 < 32768u ? n - i0 : 32768u;
        const int8_t *xb = x + i0;
        __m256i a1 = zero, a2 = zero;
        uint32_t i = 0;
        for (; i + 32u <= nb; i += 32u) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(xb + i));
            a1 = _mm256_add_epi64(a1, _mm256_sad_epu8(_mm256_xor_si256(q, flip), zero));
            const __m256i lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q));
            const __m256i hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1));
            a2 = _mm256_add_epi32(a2, _mm256_add_epi32(_mm256_madd_epi16(lo, lo),
                                                       _mm256_madd_epi16(hi, hi)));
        }
        int64_t l1[4], l2 = 0;
        int32_t l2v[8];
        _mm256_storeu_si256((__m256i *)(void *)l1, a1);
        _mm256_storeu_si256((__m256i *)(void *)l2v, a2);
        int64_t bs = l1[0] + l1[1] + l1[2] + l1[3] - 128 * (int64_t)i;
        for (uint32_t j = 0; j < 8u; j++) l2 += l2v[j];
        for (; i < nb; i++) {
            bs += xb[i];
            l2 += (int32_t)xb[i] * xb[i];
        }
        s += bs;
        s2 += l2;
    }
    *sq = s, *sq2 = s2;
}
#endif

/* Integer LayerNorm of groups of n codes (kwsnet/quant/reference.py):
 *   x = q - zp_in; S1 = sum x, S2 = sum x^2; D = n S2 - S1^2; R = isqrt(D + E);
 *   num = n x - S1; t = num 2^(K+1); Z = trunc((t + sign(t) R) / (2 R)) (0 if R = 0);
 *   y = clamp(mbqm(Z G + (B << b), M, shift) + zp_out, act_min, act_max).
 * Z = sign(num) floor((|t| + R) / (2 R)) is computed in double, exactly: every operand is an
 * integer below 2^53 (|num| <= n 510 < 2^29, |t| < 2^42, 2 R < 2^33), the quotient estimate
 * (times the rounded reciprocal, rounded to an integer) is the floor or one off (it is < 2^23
 * and off by a relative 2^-52 at most), and one exact integer-valued check each way corrects
 * it; so the loop has no int64 division and vectorises. |Z| <= sqrt(n) 2^K + 1 <= 2^22 + 1 (sum num^2 = n D <= n R^2),
 * so Z G fits int32. */
#define KWSN_Q8_LN_LUT_MIN 1024u /* groups at least this long use the table of Z */
KWSN_NO_TRAPPING_MATH
static void KWSN_K(kwsn_layernorm_q8)(int8_t *out, const int8_t *in, uint32_t outer, uint32_t n,
                                      const kwsn_q8_layernorm *p) {
    const double scale_t = (double)((int64_t)1 << (p->frac_bits + 1));
    /* the parameters in locals: a store through y (int8) may alias *p as far as the compiler
     * knows, which kept the loops below scalar */
    const int32_t zp_in = p->zp_in, zp_out = p->zp_out, lo = p->act_min, hi = p->act_max;
    const int32_t mult = p->m, shift = p->shift;
    const uint64_t e = p->e;
    const int8_t *gamma = p->gamma;
    const uint8_t *beta = p->beta;
    const int32_t bshift = p->beta_shift;
    int32_t tile[KWSN_Q8_TILE];
    double dz[KWSN_Q8_TILE];
    int32_t lut[256]; /* Z of code c - 128 */
    for (uint32_t g = 0; g < outer; g++) {
        const int8_t *x = in + (size_t)g * n;
        int8_t *y = out + (size_t)g * n;
        /* int32 partial sums over blocks of 2^15 codes (|x| <= 255: a block's sum of
         * squares <= 2^15 * 65025 < 2^31), added into int64: the same exact S1, S2, and the
         * block loop vectorises without 64-bit multiplies */
        int64_t s1 = 0, s2 = 0;
        int32_t qmin = -128, qmax = 127; /* the group's code range (AVX-512), else all */
#ifdef KWSN_Q8_LN_SUMS
        {
            int64_t sq, sq2; /* sum q, sum q^2; then sum x = sum q - n zp, sum x^2 =
                              * sum q^2 - 2 zp sum q + n zp^2, exact in int64 */
            q8_ln_sums(x, n, &sq, &sq2, &qmin, &qmax);
            s1 = sq - (int64_t)n * zp_in;
            s2 = sq2 - 2 * (int64_t)zp_in * sq + (int64_t)n * zp_in * zp_in;
        }
#else
        for (uint32_t i0 = 0; i0 < n; i0 += 32768u) {
            const uint32_t nb = n - i0 < 32768u ? n - i0 : 32768u;
            const int8_t *xb = x + i0;
            int32_t b1 = 0, b2 = 0;
            for (uint32_t i = 0; i < nb; i++) {
                const int32_t xi = (int32_t)xb[i] - zp_in;
                b1 += xi;
                b2 += xi * xi;
            }
            s1 += b1;
            s2 += b2;
        }
#endif
        const int64_t d = (int64_t)n * s2 - s1 * s1; /* >= 0 (Cauchy-Schwarz) */
        const int64_t r = (int64_t)q8_isqrt((uint64_t)d + e);
        const int32_t n32 = (int32_t)n, s1_32 = (int32_t)s1; /* |S1| <= 255 n <= 2^28 */
        const double rd = (double)r, dd = 2.0 * rd, inv = r != 0 ? 1.0 / dd : 0.0;
        /* Z depends on the code alone (num = n (q - zp_in) - S1): for a long group, Z of
         * all 256 codes by the same arithmetic as below, then a table look-up per element
         * (the same bits). A code absent from the group may give a |Z| beyond the bound
         * above (which sums over the group's codes); it is clamped to 2^30 before the
         * conversion and never read. */
        const int pooled = p->pool > 1u;
        /* a pooled group always has the table (of zeros for a constant group: Z = 0) */
        const int use_lut = pooled || (r != 0 && n >= KWSN_Q8_LN_LUT_MIN);
        if (pooled && r == 0) {
            for (uint32_t c = 0; c < 256u; c++) lut[c] = 0;
        } else if (use_lut) {
            for (uint32_t c0 = 0; c0 < 256u; c0 += KWSN_Q8_TILE) {
                for (uint32_t u = 0; u < KWSN_Q8_TILE; u++) /* num, |num| <= 510 n < 2^29 */
                    dz[u] = (double)(n32 * ((int32_t)(c0 + u) - 128 - zp_in) - s1_32);
                for (uint32_t u = 0; u < KWSN_Q8_TILE; u++) {
                    const double num_t = fabs(dz[u]) * scale_t + rd;
                    double q = (num_t * inv + 0x1p52) - 0x1p52;
                    q = q * dd > num_t ? q - 1.0 : q;
                    q = (q + 1.0) * dd <= num_t ? q + 1.0 : q;
                    dz[u] = copysign(q, dz[u]);
                }
                for (uint32_t u = 0; u < KWSN_Q8_TILE; u++) {
                    const double z = dz[u];
                    lut[c0 + u] = (int32_t)(z > 0x1p30 ? 0x1p30 : (z < -0x1p30 ? -0x1p30 : z));
                }
            }
        }
        /* every code's Z within int16 (Z is monotone in the code: its extremes tell) */
        const int w16 = use_lut && bshift <= 14 && lut[qmin + 128] >= -32767 &&
                        lut[qmin + 128] <= 32767 && lut[qmax + 128] >= -32767 &&
                        lut[qmax + 128] <= 32767;
        if (pooled) {
            const uint32_t rows = n / p->row;
            q8_ln_lut_pool(out + (size_t)g * rows * (p->row / p->pool), x, rows, p->row, p->pool,
                           lut, gamma, beta, bshift, mult, shift, zp_out, lo, hi, w16);
            continue;
        }
        if (use_lut && shift <= 0) {
            q8_ln_lut_row(y, x, n, lut, gamma, beta, bshift, mult, -shift, zp_out, lo, hi, w16);
            continue;
        }
        for (uint32_t i0 = 0; i0 < n; i0 += KWSN_Q8_TILE) {
            const uint32_t nt = n - i0 < KWSN_Q8_TILE ? n - i0 : KWSN_Q8_TILE;
            const int8_t *xs = x + i0;
            const int8_t *gs = gamma + i0;
            const uint8_t *bs = beta + 2u * (size_t)i0;
            if (r == 0) { /* a constant group: Z = 0 */
                for (uint32_t u = 0; u < nt; u++) tile[u] = 0;
            } else if (use_lut) {
                for (uint32_t u = 0; u < nt; u++)
                    tile[u] = lut[(int32_t)xs[u] + 128] * (int32_t)gs[u];
            } else {
                /* three loops of one element type each (one loop mixing int8, int32 and
                 * double did not vectorise) */
                for (uint32_t u = 0; u < nt; u++)
                    dz[u] = (double)(n32 * ((int32_t)xs[u] - zp_in) - s1_32); /* num */
                for (uint32_t u = 0; u < nt; u++) {
                    const double num_t = fabs(dz[u]) * scale_t + rd; /* |t| + R, < 2^45 */
                    /* the nearest integer of the estimate (2^52 trick): floor or floor + 1 */
                    double q = (num_t * inv + 0x1p52) - 0x1p52;
                    q = q * dd > num_t ? q - 1.0 : q;
                    q = (q + 1.0) * dd <= num_t ? q + 1.0 : q;
                    dz[u] = copysign(q, dz[u]);
                }
                for (uint32_t u = 0; u < nt; u++) tile[u] = (int32_t)dz[u] * (int32_t)gs[u];
            }
            /* + B << b (int16 little-endian, any alignment): |Z G + (B << b)| < 2^31, as
             * prepare checks |B << b| against the bound on |Z G| */
            for (uint32_t u = 0; u < nt; u++) {
                int32_t bv = (int32_t)bs[2u * u] | ((int32_t)bs[2u * u + 1u] << 8);
                bv -= (bv & 0x8000) << 1; /* int16 */
                tile[u] += bv * (INT32_C(1) << bshift);
            }
            if (shift <= 0) {
                const int32_t right = -shift;
                q8_mbqm_r_n(tile, tile, nt, mult, right);
            } else {
                for (uint32_t u = 0; u < nt; u++) tile[u] = kwsn_mbqm(tile[u], mult, shift);
            }
            /* + zp_out, in the tile (both loops vectorise); mbqm's result is clamped to
             * +-2^24 first so the sum cannot overflow (the final clamp is within [-128, 127]) */
            for (uint32_t u = 0; u < nt; u++) {
                int32_t v = tile[u];
                v = v < -(1 << 24) ? -(1 << 24) : (v > (1 << 24) ? (1 << 24) : v);
                tile[u] = v + zp_out;
            }
            int8_t *ys = y + i0; /* y[i0 + u] with a uint32 index did not vectorise */
            for (uint32_t u = 0; u < nt; u++) {
                const int32_t v = tile[u];
                ys[u] = (int8_t)(v < lo ? lo : (v > hi ? hi : v));
            }
        }
    }
}

/* conv_q8_packed_bytes / conv_q8_pack (see kwsn_kernels.h): the vector paths' wpk and init
 * of every row, built once; the baseline packs nothing. */
static size_t KWSN_K(kwsn_conv_q8_packed_bytes)(uint32_t R, uint32_t C_out) {
#ifdef KWSN_Q8_IM
    return q8_im_packed_wpk_bytes(R, C_out) + q8_r64((size_t)C_out * 4u);
#else
    (void)R, (void)C_out;
    return 0;
#endif
}

static void KWSN_K(kwsn_conv_q8_pack)(void *dst, const int8_t *w, const int32_t *bias,
                                      uint32_t R, uint32_t C_out, int32_t zp_in) {
#ifdef KWSN_Q8_IM
    int32_t *init = (int32_t *)(void *)((uint8_t *)dst + q8_im_packed_wpk_bytes(R, C_out));
    q8_im_pack((int32_t *)dst, init, w, bias, R, C_out, zp_in);
#else
    (void)dst, (void)w, (void)bias, (void)R, (void)C_out, (void)zp_in;
#endif
}

const kwsn_kernel_table KWSN_K(kwsn_ktab) = {
    KWSN_ISA_NAME,
    KWSN_K(kwsn_avgpool1d_f32),
    KWSN_K(kwsn_maxpool1d_f32),
    KWSN_K(kwsn_conv1d_same_f32),
    KWSN_K(kwsn_layernorm_f32),
    KWSN_K(kwsn_relu_f32),
    KWSN_K(kwsn_adaptive_avgpool1_f32),
    KWSN_K(kwsn_linear_f32),
    KWSN_K(kwsn_conv1d_ex_f32),
    KWSN_K(kwsn_add_f32),
    KWSN_K(kwsn_attn_pool_f32),
    KWSN_K(kwsn_conv2d_f32),
    KWSN_K(kwsn_attn_stats_pool_f32),
    KWSN_K(kwsn_l2norm_f32),
    KWSN_K(kwsn_row_affine_f32),
    KWSN_K(kwsn_silu_f32),
    KWSN_K(kwsn_conv1d_q8),
    KWSN_K(kwsn_conv2d_q8),
    KWSN_K(kwsn_conv_q8_packed_bytes),
    KWSN_K(kwsn_conv_q8_pack),
    KWSN_K(kwsn_linear_q8),
    KWSN_K(kwsn_avgpool1d_q8),
    KWSN_K(kwsn_maxpool1d_q8),
    KWSN_K(kwsn_add_q8),
    KWSN_K(kwsn_layernorm_q8),
    KWSN_K(kwsn_dequantize_q8),
    KWSN_K(kwsn_quantize_q8),
};

/* ------------------------------------------------------------------ run-time selection */
#ifndef KWSN_ISA_VARIANT
#if defined(KWSN_MULTI_ISA) && defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <stdlib.h>

extern const kwsn_kernel_table kwsn_ktab_avx2, kwsn_ktab_avx512, kwsn_ktab_avx512vnni;
#ifdef KWSN_HAVE_AVXVNNI
#include <cpuid.h>
extern const kwsn_kernel_table kwsn_ktab_avxvnni;

/* AVX-VNNI: CPUID.(EAX=7, ECX=1):EAX bit 4 (read directly: clang 14's
 * __builtin_cpu_supports does not know "avxvnni"); its ymm state is AVX2's, which
 * __builtin_cpu_supports("avx2") has checked the OS saves. */
static int kwsn_cpu_avxvnni(void) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 4) & 1u;
}
#endif

/* The paths, widest first: KWSN_ISA=<name> forces one the CPU runs, else the first it runs.
 * __builtin_cpu_supports reports a feature only where the OS saves its registers too (libgcc
 * checks XCR0 with xgetbv: YMM state for AVX2 / AVX-VNNI, opmask + ZMM state for AVX-512),
 * so these checks are enough. avx512 needs F + BW (its int8 kernels are vpmaddwd on zmm),
 * avx512vnni F + BW + VNNI (vpdpbusd on zmm), avxvnni AVX2 + AVX-VNNI (VEX vpdpbusd on ymm). */
const kwsn_kernel_table *kwsn_select_kernels(void) {
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") != 0;
    const int avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                       __builtin_cpu_supports("avx512bw");
    const int vnni512 = avx512 && __builtin_cpu_supports("avx512vnni");
    struct {
        const kwsn_kernel_table *t;
        int ok;
    } paths[5];
    unsigned n = 0;
    paths[n].t = &kwsn_ktab_avx512vnni, paths[n++].ok = vnni512;
    paths[n].t = &kwsn_ktab_avx512, paths[n++].ok = avx512;
#ifdef KWSN_HAVE_AVXVNNI
    paths[n].t = &kwsn_ktab_avxvnni, paths[n++].ok = avx2 && kwsn_cpu_avxvnni();
#endif
    paths[n].t = &kwsn_ktab_avx2, paths[n++].ok = avx2;
    paths[n].t = &kwsn_ktab_default, paths[n++].ok = 1;
    const char *want = getenv("KWSN_ISA");
    for (unsigned i = 0; want && i < n; i++)
        if (paths[i].ok && strcmp(want, paths[i].t->name) == 0) return paths[i].t;
    for (unsigned i = 0; i < n; i++)
        if (paths[i].ok) return paths[i].t;
    return &kwsn_ktab_default;
}
#else
const kwsn_kernel_table *kwsn_select_kernels(void) { return &kwsn_ktab_default; }
#endif
#endif
