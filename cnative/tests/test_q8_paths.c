/* int8 kernels of every kernel path against a scalar reference, bit for bit.
 *
 *   test_q8_paths [PATH...] [--cases N] [--seed S]
 *
 * PATH: a KWSN_ISA value (default, avx2, avxvnni, avx512, avx512vnni; none: all of them).
 * A path the CPU (or this build) does not run prints "SKIP <path>: <why>". For each case, a
 * random shape of each int8 conv-like kernel (Conv1d with odd channel counts, strides,
 * dilations, groups and depthwise, padding; Conv2d; Linear), AvgPool1d, MaxPool1d, Add, the
 * input quantisation and the integer LayerNorm, with zero points and weights at the extremes
 * the loader allows (weights [-127, 127], sum |w| 255 + |bias| <= INT32_MAX, multipliers in
 * [2^30, 2^31), shifts both signs), runs the path's kernel table (src/kwsn_kernels.h,
 * through kwsn_select_kernels) and compares every output code with the reference below, which
 * is kwsnet/quant/reference.py's arithmetic written out plainly (int64 sums, kwsn_mbqm). Exit
 * 0 iff every run path agrees; "OK <path>: N cases" per path. */
#define _POSIX_C_SOURCE 200112L /* setenv */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kwsn_kernels.h"
#include "kwsnet.h"

/* ------------------------------------------------------------------ random numbers */
static uint64_t rng_state = 1;
static uint32_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}
static int32_t rnd_in(int32_t lo, int32_t hi) { /* [lo, hi] */
    return lo + (int32_t)(rnd() % (uint32_t)(hi - lo + 1));
}
/* a zero point: often at an extreme */
static int32_t rnd_zp(void) {
    switch (rnd() % 4u) {
    case 0: return -128;
    case 1: return 127;
    default: return rnd_in(-128, 127);
    }
}
static int8_t rnd_code(int32_t zp) { /* codes: uniform, or all at one extreme */
    const uint32_t m = rnd() % 8u;
    if (m == 0) return -128;
    if (m == 1) return 127;
    if (m == 2) return (int8_t)zp;
    return (int8_t)rnd_in(-128, 127);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1u);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ------------------------------------------------------------------ requantisation */
typedef struct {
    int32_t *bias, *mult, *shift;
    int32_t zp_in, zp_out, lo, hi;
} rq_data;

static int8_t ref_requant(int64_t acc, int32_t m, int32_t shift, int32_t zp, int32_t lo,
                          int32_t hi) {
    return kwsn_clamp_q8((int64_t)kwsn_mbqm((int32_t)acc, m, shift) + zp, lo, hi);
}

/* Weights of co rows of n each at the loader's limits, bias within the bound, the
 * requantisation parameters: mult 0 now and then, shifts mostly <= 0, some > 0. */
static void make_weights(int8_t *w, rq_data *q, uint32_t co, uint32_t n) {
    const int mode = (int)(rnd() % 4u); /* 0: full range, 1: all +-127, 2: small, 3: sparse */
    for (uint32_t o = 0; o < co; o++) {
        int64_t sum = 0;
        for (uint32_t j = 0; j < n; j++) {
            int32_t v;
            if (mode == 1) v = (rnd() & 1u) ? 127 : -127;
            else if (mode == 2) v = rnd_in(-3, 3);
            else if (mode == 3) v = (rnd() % 5u == 0) ? rnd_in(-127, 127) : 0;
            else v = rnd_in(-127, 127);
            w[(size_t)o * n + j] = (int8_t)v;
            sum += v < 0 ? -v : v;
        }
        const int64_t room = (int64_t)INT32_MAX - 255 * sum; /* >= 0 for n <= 66000 */
        int64_t b = rnd() % 3u == 0 ? room : (int64_t)rnd_in(-100000, 100000);
        if (b > room) b = room;
        if (b < -room) b = -room;
        q->bias[o] = (int32_t)((rnd() & 1u) ? b : -b);
        q->mult[o] = rnd() % 16u == 0 ? 0 : (int32_t)((1u << 30) + (rnd() % (1u << 30)));
        /* > 0 now and then, up to 30: x << shift saturates int32 for most sums there */
        q->shift[o] = rnd() % 8u == 0 ? (rnd() % 2u ? rnd_in(1, 4) : rnd_in(5, 30))
                                      : rnd_in(-31, -6);
    }
    q->zp_out = rnd_zp();
    q->lo = rnd() % 4u == 0 ? q->zp_out : -128; /* a fused ReLU now and then */
    q->hi = 127;
}

static kwsn_q8_requant rq_of(const rq_data *q) {
    kwsn_q8_requant r;
    r.bias = q->bias;
    r.mult = q->mult;
    r.shift = q->shift;
    r.zp_in = q->zp_in;
    r.zp_out = q->zp_out;
    r.act_min = q->lo;
    r.act_max = q->hi;
    return r;
}

static int compare(const char *path, const char *what, const int8_t *got, const int8_t *want,
                   size_t n, unsigned cse) {
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            printf("FAIL %s: case %u %s: element %zu of %zu: %d, want %d\n", path, cse, what, i,
                   n, got[i], want[i]);
            return 1;
        }
    return 0;
}

/* ------------------------------------------------------------------ Conv1d */
static int case_conv1d(const kwsn_kernel_table *kt, unsigned cse) {
    kwsn_conv1d_ex_args a;
    /* 0: dense, 1: grouped, 2: depthwise, 3: one channel, 4: RowAffine's depthwise kernel 1
     * (its own loop) */
    const uint32_t kind = rnd() % 5u;
    a.groups = kind == 1 ? (uint32_t)rnd_in(2, 3) : 1u;
    uint32_t gi = (uint32_t)rnd_in(1, 19), go = (uint32_t)rnd_in(1, 29);
    if (kind == 2) {
        a.groups = (uint32_t)rnd_in(1, 24);
        gi = 1;
        go = (uint32_t)rnd_in(1, 2);
    }
    if (kind == 3) gi = 1;
    a.C_in = gi * a.groups;
    a.C_out = go * a.groups;
    a.k = (uint32_t)rnd_in(1, 9);
    a.stride = (uint32_t)rnd_in(1, 4);
    a.dil = rnd() % 3u == 0 ? (uint32_t)rnd_in(2, 3) : 1u;
    a.L = (uint32_t)rnd_in(1, 200);
    a.pad = (uint32_t)rnd_in(0, (int32_t)a.k);
    const uint32_t reach = a.dil * (a.k - 1u) + 1u; /* at least one output */
    if (a.L + 2u * a.pad < reach) a.pad = (reach - a.L + 1u) / 2u;
    if (kind == 4) {
        a.groups = (uint32_t)rnd_in(1, 70);
        gi = go = 1;
        a.C_in = a.C_out = a.groups;
        a.k = a.stride = 1;
        a.pad = 0;
        a.L = (uint32_t)rnd_in(1, 600);
    }
    a.L_out = (a.L + 2u * a.pad - a.dil * (a.k - 1u) - 1u) / a.stride + 1u;
    const uint32_t R = gi * a.k;
    int8_t *x = xmalloc((size_t)a.C_in * a.L), *w = xmalloc((size_t)a.C_out * R);
    rq_data q;
    q.bias = xmalloc(a.C_out * 4u), q.mult = xmalloc(a.C_out * 4u), q.shift = xmalloc(a.C_out * 4u);
    q.zp_in = rnd_zp();
    for (size_t i = 0; i < (size_t)a.C_in * a.L; i++) x[i] = rnd_code(q.zp_in);
    make_weights(w, &q, a.C_out, R);
    const size_t ny = (size_t)a.C_out * a.L_out;
    int8_t *got = xmalloc(ny), *want = xmalloc(ny);
    for (uint32_t o = 0; o < a.C_out; o++) {
        const uint32_t g = o / go;
        for (uint32_t t = 0; t < a.L_out; t++) {
            int64_t acc = q.bias[o];
            for (uint32_t i = 0; i < gi; i++)
                for (uint32_t j = 0; j < a.k; j++) {
                    const int64_t p = (int64_t)a.stride * t + (int64_t)a.dil * j - a.pad;
                    const int32_t xv =
                        (p >= 0 && p < a.L) ? x[(size_t)(g * gi + i) * a.L + (size_t)p] - q.zp_in : 0;
                    acc += (int64_t)w[((size_t)o * gi + i) * a.k + j] * xv;
                }
            want[(size_t)o * a.L_out + t] =
                ref_requant(acc, q.mult[o], q.shift[o], q.zp_out, q.lo, q.hi);
        }
    }
    void *scratch = xmalloc(kwsn_conv1d_q8_scratch_bytes(&a));
    const kwsn_q8_requant r = rq_of(&q);
    kt->conv1d_q8(got, x, w, &r, &a, NULL, scratch);
    char what[160];
    snprintf(what, sizeof(what), "conv1d C_in %u C_out %u groups %u k %u stride %u dil %u pad %u L %u",
             a.C_in, a.C_out, a.groups, a.k, a.stride, a.dil, a.pad, a.L);
    const int bad = compare(kt->name, what, got, want, ny, cse);
    free(x), free(w), free(q.bias), free(q.mult), free(q.shift), free(got), free(want);
    free(scratch);
    return bad;
}

/* ------------------------------------------------------------------ Conv2d */
static int case_conv2d(const kwsn_kernel_table *kt, unsigned cse) {
    kwsn_conv2d_args a;
    /* 0: dense, 1: depthwise, 2: grouped, 3: a depthwise column kernel (kw = 1, stride 1 and
     * no padding along W) over rows up to 120 wide, as kws_bc_resnet's (3, 1) frequency
     * convs (AVX2: q8_dw_col) */
    const uint32_t kind = rnd() % 4u;
    uint32_t gi = (uint32_t)rnd_in(1, 9), go = (uint32_t)rnd_in(1, 17);
    a.groups = 1;
    if (kind == 1 || kind == 3) a.groups = (uint32_t)rnd_in(1, 12), gi = 1, go = 1;
    if (kind == 2) a.groups = 2;
    a.C_in = gi * a.groups;
    a.C_out = go * a.groups;
    a.kh = (uint32_t)rnd_in(1, 5);
    a.kw = (uint32_t)rnd_in(1, 5);
    a.sh = (uint32_t)rnd_in(1, 2);
    a.sw = (uint32_t)rnd_in(1, 3);
    a.H = (uint32_t)rnd_in(1, 20);
    a.W = (uint32_t)rnd_in(1, 50);
    a.pt = (uint32_t)rnd_in(0, (int32_t)a.kh - 1);
    a.pl = (uint32_t)rnd_in(0, (int32_t)a.kw - 1);
    if (kind == 3) a.kw = 1, a.sw = 1, a.pl = 0, a.W = (uint32_t)rnd_in(1, 120);
    const uint32_t pb = (uint32_t)rnd_in(0, (int32_t)a.kh - 1), pr = (uint32_t)rnd_in(0, (int32_t)a.kw - 1);
    if (a.H + a.pt + pb < a.kh) a.pt = a.kh - a.H; /* at least one output row */
    if (a.W + a.pl + pr < a.kw) a.pl = a.kw - a.W;
    a.H_out = (a.H + a.pt + pb - a.kh) / a.sh + 1u;
    a.W_out = (a.W + a.pl + pr - a.kw) / a.sw + 1u;
    const uint32_t R = gi * a.kh * a.kw;
    const size_t nx = (size_t)a.C_in * a.H * a.W;
    int8_t *x = xmalloc(nx), *w = xmalloc((size_t)a.C_out * R);
    rq_data q;
    q.bias = xmalloc(a.C_out * 4u), q.mult = xmalloc(a.C_out * 4u), q.shift = xmalloc(a.C_out * 4u);
    q.zp_in = rnd_zp();
    for (size_t i = 0; i < nx; i++) x[i] = rnd_code(q.zp_in);
    make_weights(w, &q, a.C_out, R);
    const size_t ny = (size_t)a.C_out * a.H_out * a.W_out;
    int8_t *got = xmalloc(ny), *want = xmalloc(ny);
    for (uint32_t o = 0; o < a.C_out; o++) {
        const uint32_t g = o / go;
        for (uint32_t yy = 0; yy < a.H_out; yy++)
            for (uint32_t xx = 0; xx < a.W_out; xx++) {
                int64_t acc = q.bias[o];
                for (uint32_t i = 0; i < gi; i++)
                    for (uint32_t r = 0; r < a.kh; r++)
                        for (uint32_t c = 0; c < a.kw; c++) {
                            const int64_t py = (int64_t)a.sh * yy + r - a.pt;
                            const int64_t px = (int64_t)a.sw * xx + c - a.pl;
                            int32_t xv = 0;
                            if (py >= 0 && py < a.H && px >= 0 && px < a.W)
                                xv = x[((size_t)(g * gi + i) * a.H + (size_t)py) * a.W + (size_t)px] -
                                     q.zp_in;
                            acc += (int64_t)w[(((size_t)o * gi + i) * a.kh + r) * a.kw + c] * xv;
                        }
                want[((size_t)o * a.H_out + yy) * a.W_out + xx] =
                    ref_requant(acc, q.mult[o], q.shift[o], q.zp_out, q.lo, q.hi);
            }
    }
    void *scratch = xmalloc(kwsn_conv2d_q8_scratch_bytes(&a));
    const kwsn_q8_requant rr = rq_of(&q);
    kt->conv2d_q8(got, x, w, &rr, &a, NULL, scratch);
    char what[200];
    snprintf(what, sizeof(what),
             "conv2d C_in %u C_out %u groups %u k %ux%u s %ux%u pad %u,%u HxW %ux%u", a.C_in,
             a.C_out, a.groups, a.kh, a.kw, a.sh, a.sw, a.pt, a.pl, a.H, a.W);
    const int bad = compare(kt->name, what, got, want, ny, cse);
    free(x), free(w), free(q.bias), free(q.mult), free(q.shift), free(got), free(want);
    free(scratch);
    return bad;
}

/* ------------------------------------------------------------------ Linear */
static int case_linear(const kwsn_kernel_table *kt, unsigned cse) {
    const uint32_t n_in = (uint32_t)rnd_in(1, 300), n_out = (uint32_t)rnd_in(1, 40);
    int8_t *x = xmalloc(n_in), *w = xmalloc((size_t)n_in * n_out);
    rq_data q;
    q.bias = xmalloc(n_out * 4u), q.mult = xmalloc(n_out * 4u), q.shift = xmalloc(n_out * 4u);
    q.zp_in = rnd_zp();
    for (uint32_t i = 0; i < n_in; i++) x[i] = rnd_code(q.zp_in);
    make_weights(w, &q, n_out, n_in);
    int8_t *got = xmalloc(n_out), *want = xmalloc(n_out);
    for (uint32_t o = 0; o < n_out; o++) {
        int64_t acc = q.bias[o];
        for (uint32_t i = 0; i < n_in; i++) acc += (int64_t)w[(size_t)o * n_in + i] * (x[i] - q.zp_in);
        want[o] = ref_requant(acc, q.mult[o], q.shift[o], q.zp_out, q.lo, q.hi);
    }
    void *scratch = xmalloc(2u * n_in + 64u);
    const kwsn_q8_requant r = rq_of(&q);
    kt->linear_q8(got, x, w, &r, n_in, n_out, scratch);
    char what[80];
    snprintf(what, sizeof(what), "linear %u -> %u", n_in, n_out);
    const int bad = compare(kt->name, what, got, want, n_out, cse);
    free(x), free(w), free(q.bias), free(q.mult), free(q.shift), free(got), free(want);
    free(scratch);
    return bad;
}

/* ------------------------------------------------------------------ AvgPool1d */
static int case_avgpool(const kwsn_kernel_table *kt, unsigned cse) {
    /* strides 1..4 (the vectorised taps), long ones (window sums up to 64 codes at a time,
     * output tiles across rows), the AdaptiveAvgPool1d form (kernel = stride = L) and
     * kernel = stride = 16 (AVX-512: 16 windows per block, a partial last block) */
    const uint32_t C = (uint32_t)rnd_in(1, 12), form = rnd() % 5u;
    uint32_t k = (uint32_t)rnd_in(1, 9), stride = (uint32_t)rnd_in(1, 4);
    if (form == 1) k = (uint32_t)rnd_in(1, 70), stride = rnd() % 2u ? k : (uint32_t)rnd_in(5, 40);
    if (form == 3) k = stride = 16;
    uint32_t L = k + (uint32_t)rnd_in(0, form == 3 ? 2000 : 300);
    if (form == 2) k = stride = L = (uint32_t)rnd_in(1, 300);
    const uint32_t L_out = (L - k) / stride + 1u;
    int8_t *x = xmalloc((size_t)C * L);
    int32_t m = (int32_t)((1u << 30) + (rnd() % (1u << 30))), sh = rnd_in(-12, -1), b = 0;
    rq_data q;
    q.bias = &b, q.mult = &m, q.shift = &sh;
    q.zp_in = rnd_zp();
    q.zp_out = rnd_zp();
    q.lo = -128, q.hi = 127;
    for (size_t i = 0; i < (size_t)C * L; i++) x[i] = rnd_code(q.zp_in);
    int8_t *got = xmalloc((size_t)C * L_out), *want = xmalloc((size_t)C * L_out);
    for (uint32_t c = 0; c < C; c++)
        for (uint32_t t = 0; t < L_out; t++) {
            int64_t acc = 0;
            for (uint32_t j = 0; j < k; j++) acc += x[(size_t)c * L + t * stride + j] - q.zp_in;
            want[(size_t)c * L_out + t] = ref_requant(acc, m, sh, q.zp_out, q.lo, q.hi);
        }
    const kwsn_q8_requant r = rq_of(&q);
    kt->avgpool1d_q8(got, x, C, L, k, stride, L_out, &r);
    char what[80];
    snprintf(what, sizeof(what), "avgpool C %u L %u k %u stride %u", C, L, k, stride);
    const int bad = compare(kt->name, what, got, want, (size_t)C * L_out, cse);
    free(x), free(got), free(want);
    return bad;
}

/* ------------------------------------------------------------------ MaxPool1d */
static int case_maxpool(const kwsn_kernel_table *kt, unsigned cse) {
    /* any kernel and stride, and kernel = stride = 2 or 4 (the vector paths' packed
     * windows): rows of exactly L_out windows (one run over all rows) or with a remainder,
     * short and long (several 64-window blocks and a partial one) */
    const uint32_t C = (uint32_t)rnd_in(1, 12), form = rnd() % 3u;
    uint32_t k = (uint32_t)rnd_in(1, 9), stride = (uint32_t)rnd_in(1, 5);
    if (form != 0) k = stride = rnd() % 2u ? 2u : 4u;
    uint32_t L = k + (uint32_t)rnd_in(0, rnd() % 2u ? 40 : 600);
    if (form == 2) L -= (L - k) % stride; /* L = stride L_out */
    const uint32_t L_out = (L - k) / stride + 1u;
    const int32_t zp = rnd_zp();
    int8_t *x = xmalloc((size_t)C * L);
    for (size_t i = 0; i < (size_t)C * L; i++) x[i] = rnd_code(zp);
    int8_t *got = xmalloc((size_t)C * L_out), *want = xmalloc((size_t)C * L_out);
    for (uint32_t c = 0; c < C; c++)
        for (uint32_t t = 0; t < L_out; t++) {
            int8_t m = -128;
            for (uint32_t j = 0; j < k; j++) {
                const int8_t v = x[(size_t)c * L + t * stride + j];
                m = v > m ? v : m;
            }
            want[(size_t)c * L_out + t] = m;
        }
    kt->maxpool1d_q8(got, x, C, L, k, stride, L_out);
    char what[80];
    snprintf(what, sizeof(what), "maxpool C %u L %u k %u stride %u", C, L, k, stride);
    const int bad = compare(kt->name, what, got, want, (size_t)C * L_out, cse);
    free(x), free(got), free(want);
    return bad;
}

/* ------------------------------------------------------------------ Add */
static int case_add(const kwsn_kernel_table *kt, unsigned cse) {
    /* lengths with partial vectors, the loader's ranges (left shift <= 22, input shifts <= 0,
     * the output's both signs), in place now and then; half the time a BroadcastAdd (b
     * [C][W] added to each of the H rows of a [C][H][W]; rows over the kernels' 256-code
     * chunk of b's terms now and then) */
    const int bcast = rnd() % 2u == 0;
    const uint32_t C = bcast ? (uint32_t)rnd_in(1, 4) : 1u, H = bcast ? (uint32_t)rnd_in(2, 6) : 1u;
    const uint32_t W = bcast ? (uint32_t)(rnd() % 4u == 0 ? rnd_in(250, 600) : rnd_in(1, 120))
                             : (uint32_t)rnd_in(1, 300);
    const uint32_t n = C * H * W, nb = C * W;
    kwsn_q8_add p;
    p.zp_a = rnd_zp(), p.zp_b = rnd_zp(), p.zp_out = rnd_zp();
    p.left_shift = rnd_in(0, 22);
    p.m_a = (int32_t)((1u << 30) + (rnd() % (1u << 30)));
    p.m_b = (int32_t)((1u << 30) + (rnd() % (1u << 30)));
    p.m_o = (int32_t)((1u << 30) + (rnd() % (1u << 30)));
    p.s_a = rnd_in(-31, 0), p.s_b = rnd_in(-31, 0);
    p.s_o = rnd() % 8u == 0 ? rnd_in(1, 4) : rnd_in(-31, 0);
    if (rnd() % 2u) { /* as the quantiser sets them: (q - zp) << 20, input shifts near 0 and
                       * the output's near -21 (codes spread over int8, ties of both
                       * roundings reached) */
        p.left_shift = rnd() % 4u ? 20 : rnd_in(15, 22);
        p.s_a = rnd_in(-3, 0), p.s_b = rnd_in(-3, 0);
        p.s_o = -(p.left_shift + 1) + rnd_in(-2, 2);
    }
    p.act_min = rnd() % 4u == 0 ? p.zp_out : -128;
    p.act_max = 127;
    int8_t *a = xmalloc(n), *b = xmalloc(nb), *got = xmalloc(n), *want = xmalloc(n);
    for (uint32_t i = 0; i < n; i++) a[i] = rnd_code(p.zp_a);
    for (uint32_t i = 0; i < nb; i++) b[i] = rnd_code(p.zp_b);
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t ib = (i / W / H) * W + i % W; /* b's row of a's row i / W */
        const int32_t xa = kwsn_mbqm((a[i] - p.zp_a) * (1 << p.left_shift), p.m_a, p.s_a);
        const int32_t xb = kwsn_mbqm((b[ib] - p.zp_b) * (1 << p.left_shift), p.m_b, p.s_b);
        want[i] = ref_requant((int64_t)xa + xb, p.m_o, p.s_o, p.zp_out, p.act_min, p.act_max);
    }
    const int in_place = rnd() % 4u == 0;
    if (in_place) {
        memcpy(got, a, n);
        kt->add_q8(got, got, b, (size_t)C * H, H, W, &p);
    } else {
        kt->add_q8(got, a, b, (size_t)C * H, H, W, &p);
    }
    char what[160];
    snprintf(what, sizeof(what), "add C %u H %u W %u shift %d %d %d ls %d%s", C, H, W, p.s_a,
             p.s_b, p.s_o, p.left_shift, in_place ? " in place" : "");
    const int bad = compare(kt->name, what, got, want, n, cse);
    free(a), free(b), free(got), free(want);
    return bad;
}

/* ------------------------------------------------------------------ quantize */
static int case_quantize(const kwsn_kernel_table *kt, unsigned cse) {
    /* lengths with partial vectors; a power-of-two scale (exact quotients: ties of the
     * rounding) or any; values in and far out of range, infinities, NaN, -0 */
    const size_t n = (size_t)rnd_in(1, 300);
    const float scale = rnd() % 2u ? 1.0f / (float)(1u << rnd_in(0, 8))
                                    : (float)rnd_in(1, 100000) * 1e-6f;
    const int32_t zp = rnd_zp(), act_min = rnd() % 4u == 0 ? zp : -128;
    float *x = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        const uint32_t m = rnd() % 16u;
        if (m == 0) x[i] = (float)rnd_in(-600, 600) * 0.5f * scale; /* ties */
        else if (m == 1) x[i] = rnd() % 2u ? INFINITY : -INFINITY;
        else if (m == 2) x[i] = NAN;
        else if (m == 3) x[i] = (rnd() % 2u ? 1e30f : -1e30f) * (float)rnd_in(1, 100);
        else if (m == 4) x[i] = -0.0f;
        else if (m == 5 || m == 6) /* next to a tie: where x * (1 / scale) and x / scale can
                                    * round to different integers (the vector paths' check) */
            x[i] = nextafterf((float)rnd_in(-600, 600) * 0.5f * scale, m == 5 ? INFINITY : -INFINITY);
        else x[i] = (float)rnd_in(-300000, 300000) * 1e-3f * scale;
    }
    int8_t *got = xmalloc(n), *want = xmalloc(n);
    for (size_t i = 0; i < n; i++) {
        float r = nearbyintf(x[i] / scale) + (float)zp; /* round half to even */
        r = r >= (float)act_min ? r : (float)act_min;   /* NaN -> act_min */
        r = r <= 127.0f ? r : 127.0f;
        want[i] = (int8_t)(int32_t)r;
    }
    kt->quantize_q8(got, x, n, scale, zp, act_min);
    char what[80];
    snprintf(what, sizeof(what), "quantize n %zu scale %g zp %d", n, (double)scale, zp);
    const int bad = compare(kt->name, what, got, want, n, cse);
    free(x), free(got), free(want);
    return bad;
}

/* ------------------------------------------------------------------ LayerNorm */
static uint64_t isqrt64(uint64_t v) {
    uint64_t r = 0, bit = (uint64_t)1 << 62;
    while (bit > v) bit >>= 2;
    while (bit) {
        if (v >= r + bit) {
            v -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return r;
}

static int case_layernorm(const kwsn_kernel_table *kt, unsigned cse) {
    /* short groups (the direct path) and long ones (>= 1024: the table of Z) */
    const uint32_t n = rnd() % 2u ? (uint32_t)rnd_in(1, 100) : (uint32_t)rnd_in(1024, 5000);
    const uint32_t outer = (uint32_t)rnd_in(1, 3);
    const int32_t K = rnd() % 2u ? rnd_in(9, 12) : rnd_in(0, 12), bsh = rnd_in(0, 16);
    int8_t *x = xmalloc((size_t)n * outer), *gamma = xmalloc(n);
    uint8_t *beta = xmalloc(2u * (size_t)n);
    const int64_t b_max = (int64_t)INT32_MAX - 127 * (((int64_t)1 << (K + 11)) + 1);
    kwsn_q8_layernorm p;
    p.zp_in = rnd_zp();
    const int constant = rnd() % 8u == 0; /* a constant group: R = 0 without E */
    /* a few outliers among near-constant codes: |Z| of the extreme codes around 2^15 for
     * K near 12, both sides of the int16 bound of the AVX-512 path's int16 Z */
    const int outliers = !constant && rnd() % 3u == 0;
    const uint32_t every = (uint32_t)rnd_in(8, 200);
    const int8_t far = rnd_code(p.zp_in);
    for (size_t i = 0; i < (size_t)n * outer; i++) {
        if (constant) x[i] = (int8_t)p.zp_in;
        else if (outliers) x[i] = rnd() % every == 0 ? far : (int8_t)(p.zp_in / 2 + (int32_t)(rnd() % 3u) - 1);
        else x[i] = rnd_code(p.zp_in);
    }
    for (uint32_t i = 0; i < n; i++) {
        gamma[i] = (int8_t)rnd_in(-127, 127);
        int64_t bv = rnd_in(-32768, 32767);
        while (bv * ((int64_t)1 << bsh) > b_max || bv * ((int64_t)1 << bsh) < -b_max) bv /= 2;
        beta[2u * i] = (uint8_t)((uint32_t)bv & 0xFFu);
        beta[2u * i + 1u] = (uint8_t)(((uint32_t)bv >> 8) & 0xFFu);
    }
    p.gamma = gamma;
    p.beta = beta;
    p.e = rnd() % 4u == 0 ? 0u : (uint64_t)rnd() * (rnd() % 64u + 1u);
    p.zp_out = rnd_zp();
    p.act_min = rnd() % 4u == 0 ? p.zp_out : -128;
    p.act_max = 127;
    p.m = (int32_t)((1u << 30) + (rnd() % (1u << 30)));
    /* or half the time near -K (acc ~ 2^(K + 7) per unit of Z / 2^K: codes spread over the
     * int8 range, so a wrong accumulator shows; most random shifts clamp or zero the codes) */
    p.shift = rnd() % 8u == 0 ? rnd_in(0, 2)
              : rnd() % 2u    ? -(K + rnd_in(-3, 2) < 1 ? 1 : K + rnd_in(-3, 2))
                              : rnd_in(-31, -1);
    p.frac_bits = K;
    p.beta_shift = bsh;
    /* a MaxPool1d(k, k) fused after it half the time: rows of a divisor of n (a row not a
     * multiple of k, a short last step), k = 2, 4 (the vector paths) or 3, 8 */
    p.pool = 1u;
    p.row = n;
    if (rnd() % 2u) {
        static const uint32_t ks[] = {2u, 4u, 4u, 2u, 3u, 8u};
        p.pool = ks[rnd() % 6u];
        uint32_t rows = (uint32_t)rnd_in(1, 40);
        while (n % rows) rows--;
        p.row = n / rows;
    }
    int8_t *got = xmalloc((size_t)n * outer), *want = xmalloc((size_t)n * outer);
    for (uint32_t g = 0; g < outer; g++) {
        const int8_t *xg = x + (size_t)g * n;
        int64_t s1 = 0, s2 = 0;
        for (uint32_t i = 0; i < n; i++) {
            const int64_t v = xg[i] - p.zp_in;
            s1 += v;
            s2 += v * v;
        }
        const int64_t d = (int64_t)n * s2 - s1 * s1;
        const int64_t r = (int64_t)isqrt64((uint64_t)d + p.e);
        for (uint32_t i = 0; i < n; i++) {
            const int64_t t = ((int64_t)n * (xg[i] - p.zp_in) - s1) * ((int64_t)1 << (K + 1));
            const int64_t num = t >= 0 ? t + r : t - r;
            const int64_t z = r > 0 ? num / (2 * r) : 0; /* C division truncates */
            int64_t bv = (int64_t)((uint32_t)beta[2u * i] | ((uint32_t)beta[2u * i + 1u] << 8));
            bv -= (bv & 0x8000) << 1;
            const int64_t acc = z * gamma[i] + bv * ((int64_t)1 << bsh);
            want[(size_t)g * n + i] = ref_requant(acc, p.m, p.shift, p.zp_out, p.act_min, p.act_max);
        }
    }
    size_t n_out = (size_t)n * outer;
    if (p.pool > 1u) { /* the codes above, max-pooled row by row (into want, in place) */
        const uint32_t wo = p.row / p.pool;
        const size_t rows = n_out / p.row;
        for (size_t c = 0; c < rows; c++)
            for (uint32_t j = 0; j < wo; j++) {
                int8_t best = -128;
                for (uint32_t u = 0; u < p.pool; u++) {
                    const int8_t v = want[c * p.row + (size_t)j * p.pool + u];
                    best = v > best ? v : best;
                }
                want[c * wo + j] = best;
            }
        n_out = rows * wo;
    }
    kt->layernorm_q8(got, x, outer, n, &p);
    char what[160];
    snprintf(what, sizeof(what), "layernorm n %u outer %u K %d b %d shift %d e %llu pool %u row %u",
             n, outer, K, bsh, p.shift, (unsigned long long)p.e, p.pool, p.row);
    const int bad = n_out ? compare(kt->name, what, got, want, n_out, cse) : 0;
    free(x), free(gamma), free(beta), free(got), free(want);
    return bad;
}

int main(int argc, char **argv) {
    static const char *all[] = {"default", "avx2", "avxvnni", "avx512", "avx512vnni"};
    const char *paths[16];
    int n_paths = 0;
    unsigned cases = 300, seed = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--cases") == 0 && i + 1 < argc) cases = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = (unsigned)atoi(argv[++i]);
        else if (n_paths < 16) paths[n_paths++] = argv[i];
    }
    if (n_paths == 0)
        for (int i = 0; i < 5; i++) paths[n_paths++] = all[i];
    int failed = 0;
    for (int pi = 0; pi < n_paths; pi++) {
        /* kwsn_select_kernels honours KWSN_ISA where the CPU (and the build) has the path */
        setenv("KWSN_ISA", paths[pi], 1);
        const kwsn_kernel_table *kt = kwsn_select_kernels();
        if (strcmp(kt->name, paths[pi]) != 0) {
            printf("SKIP %s: this CPU or build does not run it (the pick is %s)\n", paths[pi],
                   kt->name);
            continue;
        }
        rng_state = 0x9E3779B97F4A7C15ull ^ seed;
        int bad = 0;
        for (unsigned c = 0; c < cases && !bad; c++) {
            bad |= case_conv1d(kt, c);
            bad |= case_conv2d(kt, c);
            bad |= case_linear(kt, c);
            bad |= case_avgpool(kt, c);
            bad |= case_maxpool(kt, c);
            bad |= case_quantize(kt, c);
            bad |= case_add(kt, c);
            bad |= case_layernorm(kt, c);
        }
        if (!bad) printf("OK %s: %u cases\n", paths[pi], cases);
        failed |= bad;
    }
    return failed;
}
