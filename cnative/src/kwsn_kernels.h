/* Private: float32 kernels. Pure functions, output first, no allocation, no checks
 * (prepare() validated every size before these can run).
 *
 * src/kwsn_kernels.c is compiled once per kernel path: plain (the portable baseline, which
 * also holds the run-time selection) and, in the x86-64 build, again with
 * -DKWSN_ISA_VARIANT=avx2 (-mavx2), avxvnni (-mavx2 -mavxvnni), avx512 (-mavx512f
 * -mavx512bw) and avx512vnni (-mavx512f -mavx512bw -mavx512vnni); see the Makefile. Each
 * compile defines one kwsn_kernel_table; every float path sums in the same order and every
 * int8 sum is exact, so results are byte-identical. */
#ifndef KWSN_KERNELS_H
#define KWSN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Zeroed floats after a conv's padded input: the widest path's tail tile (2 x 16 lanes)
 * reads up to this far past the end. Independent of the path, so the arena is too. */
#define KWSN_CONV_SLACK 32

/* The float LayerNorm -> MaxPool1d pass's stack buffer (floats): pools up to this window. */
#define KWSN_LN_POOL_MAX 512u

/* Shape of a general Conv1d: weight [C_out][C_in / groups][k], zero padding `pad` on both
 * sides, L_out = (L + 2 pad - dil (k - 1) - 1) / stride + 1 (prepare checked all of it). */
typedef struct {
    uint32_t C_in, C_out, L, k, stride, pad, dil, groups, L_out;
} kwsn_conv1d_ex_args;

/* Shape of a Conv2d over [C_in][H][W] -> [C_out][H_out][W_out]: weight
 * [C_out][C_in / groups][kh][kw], pt zero rows on top and pl zero columns on the left (the
 * bottom / right padding only sets H_out, W_out; prepare checked all of it). Each padded
 * input row is laid out as a Conv1d input along W (kwsn_conv2d_row), so the 2-D conv is the
 * 1-D kernels' rows with one tap per (input channel, kernel row, kernel column). */
typedef struct {
    uint32_t C_in, C_out, H, W, kh, kw, sh, sw, pt, pl, groups, H_out, W_out;
} kwsn_conv2d_args;

/* Attentive statistics pooling of x [C][L] (kwsnet AttentiveStatisticsPooling, every frame
 * valid): w1 [H][A] (A = 3C with the global context: frame, mean, std; else C), b1 [H],
 * w2 [C][H], b2 [C]; out [2C] = weighted mean, weighted std (variance clamped at eps). */
typedef struct {
    uint32_t C, L, H, global_context;
    float eps;
    const float *w1, *b1, *w2, *b2;
} kwsn_asp_args;

/* Scratch floats of the attentive statistics pooling: the context (2C), its part of the
 * hidden pre-activations (H), the hidden layer (H L) and one channel's scores (L). */
size_t kwsn_asp_scratch_floats(uint32_t C, uint32_t L, uint32_t H);

/* Zeroed int32 elements after an int8 conv's centred, phase-split input: its widest tile
 * (32 positions) reads up to this far past the last channel. KWSN_Q8_TILE: the positions of
 * the other int8 kernels' int32 tiles. */
#define KWSN_Q8_TILE 32
#define KWSN_Q8_SLACK 64

/* Requantisation of an int8 conv / Linear output channel o: y = clamp(mbqm(acc, mult[o],
 * shift[o]) + zp_out, act_min, act_max), acc = bias[o] + sum w * (x - zp_in). */
typedef struct {
    const int32_t *bias, *mult, *shift;
    int32_t zp_in, zp_out, act_min, act_max;
} kwsn_q8_requant;

/* int8 Add: a' = mbqm((a - zp_a) * 2^ls, m_a, s_a), b' likewise, y = clamp(mbqm(a' + b',
 * m_o, s_o) + zp_out, act_min, act_max). */
typedef struct {
    int32_t zp_a, zp_b, left_shift, m_a, s_a, m_b, s_b, m_o, s_o, zp_out, act_min, act_max;
} kwsn_q8_add;

/* int8 LayerNorm (integer; kwsnet/quant/reference.py): groups of n contiguous codes. */
typedef struct {
    const int8_t *gamma;   /* [n] */
    const uint8_t *beta;   /* [n] int16 little-endian (2 n bytes, any alignment); beta in
                            * the accumulator's units is B << beta_shift: Z G + (B << b) */
    uint64_t e;            /* E, < 2^62 */
    int32_t zp_in, zp_out, act_min, act_max, m, shift, frac_bits, beta_shift;
    /* pool > 1: a MaxPool1d(pool, stride pool) over rows of `row` codes follows (n % row == 0)
     * and out gets only its output, row / pool codes per row (floor), outer * n / row rows;
     * 0 or 1: out gets the n codes of each group */
    uint32_t pool, row;
} kwsn_q8_layernorm;

/* The fixed-point helpers of kwsnet/quant/fixedpoint.py (TFLite / gemmlowp double rounding).
 * srdhm: SaturatingRoundingDoublingHighMul; rdbpot: RoundingDivideByPOT, 0 <= e <= 31;
 * mbqm: MultiplyByQuantizedMultiplier, -31 <= shift <= 30 (x << left saturated to int32). */
static inline int32_t kwsn_srdhm(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : 1 - ((int64_t)1 << 30);
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static inline int32_t kwsn_rdbpot(int32_t x, int32_t e) {
    const int64_t mask = ((int64_t)1 << e) - 1;
    const int64_t rem = (int64_t)x & mask;
    const int64_t thr = (mask >> 1) + (x < 0);
    /* floor(x / 2^e) without shifting a negative value (implementation-defined) */
    const int64_t fl = ((int64_t)x - rem) / ((int64_t)1 << e);
    return (int32_t)(fl + (rem > thr));
}

static inline int32_t kwsn_mbqm(int32_t x, int32_t m, int32_t shift) {
    const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int64_t v = (int64_t)x * ((int64_t)1 << left);
    if (v > INT32_MAX) v = INT32_MAX;
    if (v < INT32_MIN) v = INT32_MIN;
    return kwsn_rdbpot(kwsn_srdhm((int32_t)v, m), right);
}

/* kwsn_mbqm for shift <= 0 (right = -shift in 0..31) and m in [0, 2^31), written so the
 * compiler can vectorise a loop of it: srdhm as floor((x m + 2^30) / 2^31) (its definition's
 * nudge and truncation give exactly that; the INT32_MIN * INT32_MIN case needs m < 0) via a
 * logical shift of the biased product, then rdbpot with an arithmetic shift (>> of a negative
 * int32 is implementation-defined in C; every supported compiler shifts arithmetically, and
 * test_golden checks this function against kwsn_mbqm). Equal to kwsn_mbqm(x, m, -right). */
#if defined(__GNUC__)
__attribute__((always_inline)) /* inside the kernels' loops, so that they vectorise */
#endif
static inline int32_t kwsn_mbqm_r(int32_t x, int32_t m, int32_t right) {
    const int64_t ab = (int64_t)x * (int64_t)m; /* |ab| < 2^62 */
    const uint64_t biased = (uint64_t)(ab + (((int64_t)1 << 62) + ((int64_t)1 << 30)));
    const int32_t h = (int32_t)((int64_t)(biased >> 31) - ((int64_t)1 << 31));
    const int32_t mask = (int32_t)(((int64_t)1 << right) - 1);
    const int32_t thr = (mask >> 1) + (h < 0);
    return (h >> right) + ((h & mask) > thr);
}

/* clamp(v, lo, hi) of an int64 to int8 (lo, hi in [-128, 127]). */
static inline int8_t kwsn_clamp_q8(int64_t v, int32_t lo, int32_t hi) {
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

typedef struct {
    const char *name;
    void (*avgpool1d)(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                      uint32_t stride, uint32_t L_out);
    void (*maxpool1d)(float *out, const float *in, uint32_t C, uint32_t L, uint32_t k,
                      uint32_t stride, uint32_t L_out);
    void (*conv1d_same)(float *out, const float *in, const float *w, const float *b,
                        uint32_t C_in, uint32_t C_out, uint32_t L, uint32_t k, float *scratch);
    /* relu != 0: ReLU applied in the same pass (LayerNorm + ReLU fused, same bits);
     * pool > 1: then MaxPool1d(pool, stride pool) over rows of `row` elements, out being the
     * pool's output (pool <= KWSN_LN_POOL_MAX; same bits; never in place) */
    void (*layernorm)(float *out, const float *in, const float *gamma, const float *beta,
                      float eps, uint32_t outer, uint32_t n, int relu, uint32_t pool,
                      uint32_t row);
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
    /* Conv2d (see kwsn_conv2d_args); scratch: kwsn_conv2d_scratch_floats(). */
    void (*conv2d)(float *out, const float *in, const float *w, const float *b,
                   const kwsn_conv2d_args *a, float *scratch);
    /* Attentive statistics pooling (see kwsn_asp_args); scratch: kwsn_asp_scratch_floats(). */
    void (*attn_stats_pool)(float *out, const float *x, const kwsn_asp_args *a, float *scratch);
    /* out = x / max(||x||_2, eps) over n floats (safe in place) */
    void (*l2norm)(float *out, const float *x, uint32_t n, float eps);
    /* out[r][w] = x[r][w] * scale[r] + shift[r] over rows x W floats (safe in place) */
    void (*row_affine)(float *out, const float *x, const float *scale, const float *shift,
                       uint32_t rows, uint32_t W);
    /* x * sigmoid(x) over n floats (safe in place) */
    void (*silu)(float *out, const float *x, uint32_t n);
    /* ---- int8 (format 3); integer arithmetic, identical on every path ---- */
    /* Conv1d over codes [C_in][L] -> [C_out][L_out]; w int8 [C_out][C_in / groups][k];
     * packed: conv_q8_pack's output for these weights or NULL (packed per call);
     * scratch: kwsn_conv1d_q8_scratch_bytes(). */
    void (*conv1d_q8)(int8_t *out, const int8_t *in, const int8_t *w, const kwsn_q8_requant *rq,
                      const kwsn_conv1d_ex_args *a, const void *packed, void *scratch);
    /* Conv2d over codes [C_in][H][W]; w int8 [C_out][C_in / groups][kh][kw]; scratch:
     * kwsn_conv2d_q8_scratch_bytes(). */
    void (*conv2d_q8)(int8_t *out, const int8_t *in, const int8_t *w, const kwsn_q8_requant *rq,
                      const kwsn_conv2d_args *a, const void *packed, void *scratch);
    /* The conv's weights packed for this path, once, at prepare (conv1d_q8 / conv2d_q8 then
     * take packed != NULL and skip the per-call packing; the same bits either way): bytes for
     * C_out rows of R = C_in / groups x taps weights (a 64-byte multiple; 0 where the path
     * reads the weights as stored and takes packed = NULL), and the fill of dst (64-byte
     * aligned) from w [C_out][R], the bias [C_out] and the input zero point: the D-deep
     * int32 rows and the accumulator's start with the zero-point term (see kwsn_kernels.c). */
    size_t (*conv_q8_packed_bytes)(uint32_t R, uint32_t C_out);
    void (*conv_q8_pack)(void *dst, const int8_t *w, const int32_t *bias, uint32_t R,
                         uint32_t C_out, int32_t zp_in);
    /* Linear: w int8 [n_out][n_in]; scratch: n_in int16 (the centred input). */
    void (*linear_q8)(int8_t *out, const int8_t *in, const int8_t *w, const kwsn_q8_requant *rq,
                      uint32_t n_in, uint32_t n_out, void *scratch);
    /* AvgPool1d: acc = sum of (x - zp_in) over the window, rq->mult[0] / shift[0]. */
    void (*avgpool1d_q8)(int8_t *out, const int8_t *in, uint32_t C, uint32_t L, uint32_t k,
                         uint32_t stride, uint32_t L_out, const kwsn_q8_requant *rq);
    void (*maxpool1d_q8)(int8_t *out, const int8_t *in, uint32_t C, uint32_t L, uint32_t k,
                         uint32_t stride, uint32_t L_out);
    /* Add (rows = 1, H = 1, W = n; safe in place: out may be a or b) and BroadcastAdd (b
     * [rows / H][W] added to each of its H rows of a [rows][W]; out may be a) */
    void (*add_q8)(int8_t *out, const int8_t *a, const int8_t *b, size_t rows, uint32_t H,
                   uint32_t W, const kwsn_q8_add *p);
    /* safe in place; outer groups of n codes (p->pool > 1: see kwsn_q8_layernorm; then out
     * must not overlap in) */
    void (*layernorm_q8)(int8_t *out, const int8_t *in, uint32_t outer, uint32_t n,
                         const kwsn_q8_layernorm *p);
    /* codes -> float: (float)(q - zp) * scale (a float island's input) */
    void (*dequantize_q8)(float *out, const int8_t *in, size_t n, float scale, int32_t zp);
    /* float -> codes: clamp(round_half_even(x / scale) + zp, act_min, 127) */
    void (*quantize_q8)(int8_t *out, const float *x, size_t n, float scale, int32_t zp,
                        int32_t act_min);
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

/* Scratch bytes of the int8 conv: C_in channels of kwsn_conv1d_ex_channel_floats() int32
 * elements (the centred, zero-padded, phase-split input) plus KWSN_Q8_SLACK. */
size_t kwsn_conv1d_q8_scratch_bytes(const kwsn_conv1d_ex_args *a);

/* The Conv1d along W that one padded input row of a Conv2d is laid out for (kernel kw,
 * stride sw, padding pl, L = W, L_out = W_out). */
kwsn_conv1d_ex_args kwsn_conv2d_row(const kwsn_conv2d_args *a);
/* Padded input rows a Conv2d reads per channel: (H_out - 1) sh + kh. */
size_t kwsn_conv2d_rows(const kwsn_conv2d_args *a);
/* Scratch floats of kwsn_conv2d: the tap offsets (C_in / groups * kh * kw uint32, rounded up
 * to 16), C_in * kwsn_conv2d_rows() padded rows of kwsn_conv1d_ex_channel_floats(row) and
 * KWSN_CONV_SLACK. */
size_t kwsn_conv2d_scratch_floats(const kwsn_conv2d_args *a);
/* Scratch bytes of the int8 Conv2d: the same layout in int32 elements, KWSN_Q8_SLACK after. */
size_t kwsn_conv2d_q8_scratch_bytes(const kwsn_conv2d_args *a);

#endif
