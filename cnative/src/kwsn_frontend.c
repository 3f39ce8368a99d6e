#ifndef KWSN_FE_TEMPLATE /* the file; its per-width copy is the #else part at the end */
/* The log-mel / MFCC front end (kwsn_frontend.h): framing, window, real FFT, power spectrum,
 * mel filterbank, log, optional DCT, per-utterance normalisation.
 *
 * The FFT. A real FFT of even size N is one complex FFT of size M = N / 2 on
 * z[n] = x[2n] + i x[2n+1] (the interleaved windowed frame itself) followed by the usual
 * split step X[k] = E[k] + w_N^k O[k]; odd N runs the complex FFT of size N on x + 0i. The
 * complex FFT is a Stockham (autosort, decimation in frequency) mixed-radix transform in the
 * pass structure of pocketfft's cfftp: M is factored into 4s, 2s, 3s, 5s and then any other
 * primes, each pass does (M / p) radix-p butterflies between two ping-pong buffers, and the
 * output lands in natural order. Radix 2/3/4/5 have hand-written butterflies; any other prime
 * p uses a direct O(p^2) DFT per butterfly. That is the documented trade-off instead of
 * Bluestein: a size with a large prime factor (n_fft = 2 * 1009, say) costs O(N * p), which
 * kwsn_frontend_ops counts (an upper bound), so prepare refuses it over the caller's limit;
 * every audio configuration in use (400, 480, 512, 1024: factors 2, 3, 5) stays O(N log N).
 * The transform runs W frames at once, one per vector lane (as pocketfft vectorises over
 * several transforms): the same scalar arithmetic per lane, so the bits do not depend on the
 * batching, and a plain-C build (-DKWSN_FE_NO_VECTOR_EXT, or a compiler without GCC vector
 * extensions) gives the same output one frame at a time. W is picked per call: 4 (the
 * x86-64 baseline's SSE2 width, and any other GCC / clang target), and on x86 with GCC /
 * clang also 8 (AVX2) and 16 (AVX-512F), each a copy of the same code (this file includes
 * itself once per width, KWSN_FE_TEMPLATE) compiled with __attribute__((target(...))), so
 * the library needs no per-ISA build of this file. The pick follows the kernels' KWSN_ISA:
 * "default" 4, "avx2" / "avxvnni" 8, "avx512*" 16, where the CPU (cpuid, with the OS saving
 * the registers: __builtin_cpu_supports) has the ISA; unset or anything else, the widest the
 * CPU has. None of these targets has FMA, and the pragmas below forbid contraction anyway.
 * The mel and DCT sums run in W double lanes (each lane the scalar double sum, same order).
 *
 * Twiddles w_N^k = exp(-2 pi i k / N), k < N, are computed in double with an octant
 * reduction (so w_N^{N/4} is exactly -i) and rounded to float into the caller's scratch
 * (no hidden state): kwsn_frontend_prepare fills them and the mel bands' filter ranges once,
 * and kwsn_frontend_frames_at / kwsn_frontend_run_prepared reuse them on every call;
 * kwsn_frontend_run (a pure one-shot call) prepares its scratch itself first, which costs
 * about five frames' FFTs (~2-4% of a 1 s clip at n_fft 480). A streaming caller of the
 * one-frame API computes them once (kwsn_frontend_twiddles) and reuses the scratch across
 * hops (kwsn_frontend_frame_tw).
 *
 * Numerics. FFT, window and power spectrum run in float32 like torch.stft on float input;
 * the mel product, the DCT and the normalisation statistics accumulate in double in a fixed
 * order (ascending frequency, mel, frame) and round once, which keeps the result as close to
 * the exact value as float storage allows; log of the float mel + eps is fe_logf (double
 * arithmetic, rounded once to float).
 * No FMA contraction (the pragmas below, as in kwsn_kernels.c), no reassociation, no
 * dependence on the lane width W: every width runs each frame's arithmetic in the same order,
 * so the output is the same bits on every path (KWSN_ISA) and under any compiler that honours
 * IEEE float and FP_CONTRACT (with another libm, cos / sin may differ in the last bit of a
 * double, which survives the rounding to float only in rare ties). */
#if defined(__GNUC__) && !defined(__clang__)
/* GCC 12's loop vectoriser turns complex multiplies into vfmaddsub with -mfma even under
 * -ffp-contract=off, so this file is not loop-vectorised (its SIMD is the explicit frame
 * lanes below) */
#pragma GCC optimize("fp-contract=off", "no-tree-loop-vectorize")
#else
/* clang honours this unless given -ffp-contract=fast, which by its definition ignores
 * pragmas (use the default "on", or "off") */
#pragma STDC FP_CONTRACT OFF
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kwsn_frontend.h"
#if defined(__GNUC__) && !defined(KWSN_FE_NO_VECTOR_EXT) && \
    (defined(__x86_64__) || defined(__i386__)) && !defined(KWSN_FE_NO_MULTI_ISA)
#include <immintrin.h> /* the AVX2 / AVX-512 copies' transposed fill (fe_fill8) */

#include "kwsn_simd.h"
#endif

/* Radix passes of one transform: at most log2(M) < 17 prime factors (fewer with 4s). */
#define KWSN_FE_MAX_FACTORS 64
/* libm calls (log, sin, cos, sqrt) count as this many operations in kwsn_frontend_ops. */
#define KWSN_FE_LIBM_OPS 20u

/* Lane widths. FE_VMAX: the widest this build can run, which sizes the scratch (so its layout
 * does not depend on the width a call picks); FE_VBASE: the width of the copy compiled for the
 * build's own target, which also runs single frames (kwsn_frontend_frame, _power). */
#if defined(__GNUC__) && !defined(KWSN_FE_NO_VECTOR_EXT)
#define FE_VECTOR 1
#define FE_VBASE 4
#if (defined(__x86_64__) || defined(__i386__)) && !defined(KWSN_FE_NO_MULTI_ISA)
#define FE_X86_WIDE 1
#define FE_VMAX 16
#else
#define FE_VMAX 4
#endif
#else
#define FE_VBASE 1
#define FE_VMAX 1
#endif

/* A twiddle factor (the same for all lanes). */
typedef struct {
    float r, i;
} tws;

static uint32_t fe_n_freqs(const kwsn_frontend *fe) { return fe->n_fft / 2u + 1u; }

/* Complex FFT length: n_fft / 2 for even n_fft, n_fft for odd. */
static uint32_t fe_cfft_len(uint32_t n_fft) { return (n_fft % 2u == 0u) ? n_fft / 2u : n_fft; }

/* torch.stft's frame count in 64 bits (2^32 with hop 1, center and n_samples = 2^32 - 1). */
static uint64_t fe_frames64(const kwsn_frontend *fe, uint32_t n_samples) {
    uint64_t padded = (uint64_t)n_samples + (fe->center ? 2u * (uint64_t)(fe->n_fft / 2u) : 0u);
    if (fe->hop_length == 0u || padded < fe->n_fft) return 0u;
    return (padded - fe->n_fft) / fe->hop_length + 1u;
}

/* Factors of m (m >= 1) in pass order: 4s, a 2, 3s, 5s, then other primes ascending.
 * Returns the count (m = 1: 0 passes). */
static uint32_t fe_factorize(uint32_t m, uint32_t *f) {
    uint32_t n = 0;
    while (m % 4u == 0u) {
        f[n++] = 4u;
        m /= 4u;
    }
    if (m % 2u == 0u) {
        f[n++] = 2u;
        m /= 2u;
    }
    for (uint32_t p = 3u; (uint64_t)p * p <= m; p += 2u) {
        while (m % p == 0u) {
            f[n++] = p;
            m /= p;
        }
    }
    if (m > 1u) f[n++] = m;
    return n;
}

/* Operations of one radix-p butterfly, twiddle multiplications included (upper bounds). */
static uint64_t fe_butterfly_ops(uint32_t p) {
    uint64_t bf;
    switch (p) {
    case 2: bf = 4u; break;
    case 3: bf = 16u; break;
    case 4: bf = 16u; break;
    case 5: bf = 48u; break;
    default: bf = 8u * (uint64_t)p * p; break; /* p^2 complex multiply-adds */
    }
    return bf + 6u * (uint64_t)(p - 1u);
}

/* Scratch layout (floats): twiddles [2 * n_fft] | FFT buffer a [M][re, im][FE_VMAX] |
 * buffer b (the same) | power [n_freqs][FE_VMAX] | log_mel [n_mels][FE_VMAX] | mel ranges
 * [2 * n_mels] (whole-clip runs only); a call of width W packs the middle areas at width W
 * (fe_buf_a). */
static size_t fe_buf_floats(uint32_t n_fft) { return 2u * (size_t)fe_cfft_len(n_fft) * FE_VMAX; }

static size_t fe_frame_scratch(const kwsn_frontend *fe) {
    return 2u * (size_t)fe->n_fft + 2u * fe_buf_floats(fe->n_fft) +
           (size_t)fe_n_freqs(fe) * FE_VMAX + (size_t)fe->n_mels * FE_VMAX;
}

/* The areas of scratch that do not depend on the width: the FFT buffers' start and the
 * ranges (filled once by kwsn_frontend_prepare). A call of width W packs its buffers a, b
 * ([M][re, im][W] each), power ([n_freqs][W]) and log-mels ([n_mels][W]) one after another
 * from fe_buf_a on (fe_power_at, fe_log_mel_at below), which for W = 4 is the layout of the
 * 4-lane code before the wider copies, and for every W fits before the ranges. */
static float *fe_buf_a(const kwsn_frontend *fe, float *scratch) {
    return scratch + 2u * (size_t)fe->n_fft;
}
static float *fe_ranges_area(const kwsn_frontend *fe, float *scratch) {
    return scratch + fe_frame_scratch(fe);
}

void kwsn_frontend_twiddles(const kwsn_frontend *fe, float *scratch) {
    const uint32_t n = fe->n_fft;
    const double pi = 3.14159265358979323846;
    float *tw = scratch;
    for (uint32_t k = 0; 2u * k <= n; k++) {
        /* angle 2 pi k / n reduced to [0, pi / 4] so symmetric values come out equal */
        const uint64_t k4 = 4u * (uint64_t)k, k8 = 8u * (uint64_t)k, nn = n;
        double c, s;
        if (k8 <= nn) {
            double a = 2.0 * pi * (double)k / (double)n;
            c = cos(a);
            s = sin(a);
        } else if (k4 <= nn) {
            double a = pi * (double)(nn - k4) / (2.0 * (double)n);
            c = sin(a);
            s = cos(a);
        } else if (k8 <= 3u * nn) {
            double a = pi * (double)(k4 - nn) / (2.0 * (double)n);
            c = -sin(a);
            s = cos(a);
        } else {
            double a = pi * (double)(nn - 2u * (uint64_t)k) / (double)n;
            c = -cos(a);
            s = sin(a);
        }
        tw[2u * k] = (float)c; /* exp(-i angle) */
        tw[2u * k + 1u] = (float)-s;
        if (k != 0u && 2u * k != n) { /* w^(n-k) = conj(w^k) */
            tw[2u * (n - k)] = (float)c;
            tw[2u * (n - k) + 1u] = (float)s;
        }
    }
}

static tws tw_at(const float *tw, uint64_t idx) {
    tws w = {tw[2u * idx], tw[2u * idx + 1u]};
    return w;
}

/* Per mel band, the smallest [lo, hi) holding its nonzero filter entries, stored as floats
 * (exact: n_freqs <= KWSN_FE_MAX_NFFT / 2 + 1 < 2^24). */
static void fe_ranges(const kwsn_frontend *fe, float *ranges) {
    const uint32_t nf = fe_n_freqs(fe), nm = fe->n_mels;
    for (uint32_t mi = 0; mi < nm; mi++) {
        const float *col = fe->fbank + mi;
        uint32_t lo = 0, hi = nf;
        while (lo < nf && col[(size_t)lo * nm] == 0.0f) lo++;
        while (hi > lo && col[(size_t)(hi - 1u) * nm] == 0.0f) hi--;
        if (lo == nf) lo = hi = 0; /* an empty band: [0, 0) */
        ranges[2u * mi] = (float)lo;
        ranges[2u * mi + 1u] = (float)hi;
    }
}

/* log of a float x, rounded to float: for a normal finite x > 0 (every mel + eps the front
 * end makes: eps > 0, the power and the filters >= 0), x = m 2^e with m in [sqrt(2)/2,
 * sqrt(2)) from its bits, then log x = e ln 2 + 2 atanh(s), s = (m - 1) / (m + 1), |s| <=
 * 0.1716, by its odd series to s^17 in double (the truncation is below 2^-45 relative, far
 * under the float rounding; the final rounding to float is the only one that shows). The same
 * plain double operations for every lane and width, so the bits do not depend on the path,
 * nor on the libm (a libm log call per band and frame was ~16 % of a clip); zero, negative,
 * subnormal, infinite and NaN inputs take libm's log. */
/* The odd series of fe_logf: log(m) = 2 s FE_LOG_POLY(s^2), s = (m - 1) / (m + 1); one
 * expression for the scalar and the vector lanes, so both run the same operations in the
 * same order. */
#define FE_LN2 0.69314718055994530942
#define FE_LOG_POLY(z)                                                                          \
    (1.0 + (z) * (1.0 / 3.0 + (z) * (1.0 / 5.0 + (z) * (1.0 / 7.0 + (z) * (1.0 / 9.0 +           \
     (z) * (1.0 / 11.0 + (z) * (1.0 / 13.0 + (z) * (1.0 / 15.0 + (z) * (1.0 / 17.0)))))))))

static inline float fe_logf(float x) {
    if (!(x >= 0x1p-126f && x <= 0x1.fffffep127f)) return (float)log((double)x);
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    int32_t e = (int32_t)(u >> 23) - 127;
    uint32_t mb = (u & 0x7FFFFFu) | 0x3F800000u; /* m in [1, 2) */
    if (mb > 0x3FB504F3u) {                      /* m > sqrt(2) (float just above it) */
        mb -= 0x00800000u;                       /* m / 2 in [sqrt(2)/2, 1) */
        e += 1;
    }
    float mf;
    memcpy(&mf, &mb, sizeof mf);
    const double m = (double)mf, sd = (m - 1.0) / (m + 1.0), z = sd * sd;
    return (float)((double)e * FE_LN2 + 2.0 * sd * FE_LOG_POLY(z));
}

/* ---------------------------------------------------------------- the copies, one per width */
#define FE_CAT2(a, b) a##_w##b
#define FE_CAT(a, b) FE_CAT2(a, b)
#define KWSN_FE_TEMPLATE
#define FE_W FE_VBASE
#define FE_FN(name) FE_CAT(name, FE_VBASE)
#define FE_ATTR
#include "kwsn_frontend.c"
#undef FE_W
#undef FE_FN
#undef FE_ATTR
#ifdef FE_X86_WIDE
#define FE_W 8
#define FE_FN(name) name##_w8
#define FE_ATTR __attribute__((target("avx2")))
#include "kwsn_frontend.c"
#undef FE_W
#undef FE_FN
#undef FE_ATTR
#define FE_W 16
#define FE_FN(name) name##_w16
#define FE_ATTR __attribute__((target("avx512f")))
#include "kwsn_frontend.c"
#undef FE_W
#undef FE_FN
#undef FE_ATTR
#endif
#undef KWSN_FE_TEMPLATE
#define FE_BASE(name) FE_CAT(name, FE_VBASE)

#ifdef FE_X86_WIDE
/* The width this call runs: KWSN_ISA as the kernels read it ("default" 4, "avx2" / "avxvnni"
 * 8, "avx512..." 16) where the CPU has that ISA, else the widest the CPU has. Read on every
 * call (a getenv and two cached cpuid bits): the functions keep no state, and the scratch
 * layout does not depend on the width. */
static uint32_t fe_width_for(const char *want) {
    int avx2, avx512;
    __builtin_cpu_init();
    avx2 = __builtin_cpu_supports("avx2") != 0;
    avx512 = avx2 && __builtin_cpu_supports("avx512f") != 0;
    if (want) {
        if (strcmp(want, "default") == 0) return 4u;
        if (avx2 && (strcmp(want, "avx2") == 0 || strcmp(want, "avxvnni") == 0)) return 8u;
        if (avx512 && strncmp(want, "avx512", 6) == 0) return 16u;
    }
    return avx512 ? 16u : avx2 ? 8u : 4u;
}

#else
static uint32_t fe_width_for(const char *want) { /* one width: the build's own */
    (void)want;
    return FE_VBASE;
}
#endif

/* The width of a call that names no kernel path: KWSN_ISA, read now. */
static uint32_t fe_width(void) { return fe_width_for(getenv("KWSN_ISA")); }

/* Frames [t0, t0 + count) at this call's width: whole batches of W, then the rest in one
 * batch of the narrowest width that holds it (101 frames at W = 16: 6 x 16, then 8 lanes for
 * the last 5). The same bits at any width. */
static void fe_span_at(const kwsn_frontend *fe, const float *wave, uint32_t n_samples,
                       uint32_t t0, uint32_t count, float *scratch, float *out, size_t col,
                       size_t row, uint32_t w) {
#ifdef FE_X86_WIDE
    uint32_t whole, rest;
    if (w == 4u) {
        fe_span_w4(fe, wave, n_samples, t0, count, scratch, out, col, row);
        return;
    }
    whole = count - count % w;
    if (whole) {
        if (w == 16u)
            fe_span_w16(fe, wave, n_samples, t0, whole, scratch, out, col, row);
        else
            fe_span_w8(fe, wave, n_samples, t0, whole, scratch, out, col, row);
    }
    rest = count - whole;
    out += (size_t)whole * col;
    t0 += whole;
    if (rest > 8u) /* w == 16 */
        fe_span_w16(fe, wave, n_samples, t0, rest, scratch, out, col, row);
    else if (rest > 4u)
        fe_span_w8(fe, wave, n_samples, t0, rest, scratch, out, col, row);
    else if (rest)
        fe_span_w4(fe, wave, n_samples, t0, rest, scratch, out, col, row);
#else
    (void)w;
    FE_BASE(fe_span)(fe, wave, n_samples, t0, count, scratch, out, col, row);
#endif
}

/* A whole clip at width w: every frame, then the normalisation. */
static void fe_run_at(const kwsn_frontend *fe, const float *wave, uint32_t n_samples,
                      float *scratch, float *out, uint32_t w) {
    const uint32_t T = kwsn_frontend_frames(fe, n_samples);
    fe_span_at(fe, wave, n_samples, 0u, T, scratch, out, 1u, T, w);
    kwsn_frontend_normalize(fe, out, T);
}

void kwsn_frontend_frame_tw(const kwsn_frontend *fe, const float *frame, float *scratch,
                            float *log_mel) {
    FE_BASE(fe_log_mel)(fe, FE_BASE(fe_one_frame)(fe, frame, scratch), 1u, NULL, log_mel,
                        fe->n_mels, 1u);
}

void kwsn_frontend_power(const kwsn_frontend *fe, const float *frame, float *scratch,
                         float *power) {
    const float *pw;
    kwsn_frontend_twiddles(fe, scratch);
    pw = FE_BASE(fe_one_frame)(fe, frame, scratch);
    for (uint32_t k = 0; k < fe_n_freqs(fe); k++) power[k] = pw[(size_t)k * FE_VBASE];
}

void kwsn_frontend_frame(const kwsn_frontend *fe, const float *frame, float *scratch,
                         float *log_mel) {
    kwsn_frontend_twiddles(fe, scratch);
    kwsn_frontend_frame_tw(fe, frame, scratch, log_mel);
}

size_t kwsn_frontend_frame_scratch_floats(const kwsn_frontend *fe) {
    return fe_frame_scratch(fe);
}

kwsn_status kwsn_frontend_check(const kwsn_frontend *fe, uint32_t n_samples) {
    size_t n_tab;
    if (!fe || !fe->window || !fe->fbank) return KWSN_ERR_ARG;
    if (fe->n_fft < 2u || fe->n_fft > KWSN_FE_MAX_NFFT) return KWSN_ERR_PARAM;
    if (fe->hop_length == 0u || fe->n_mels == 0u || fe->n_mels > KWSN_FE_MAX_NFFT)
        return KWSN_ERR_PARAM;
    if (fe->center > 1u || fe->normalize > KWSN_FE_NORM_MEANVAR) return KWSN_ERR_PARAM;
    if (fe->dct ? (fe->n_out == 0u || fe->n_out > fe->n_mels) : (fe->n_out != fe->n_mels))
        return KWSN_ERR_PARAM;
    if (!isfinite(fe->eps)) return KWSN_ERR_NONFINITE;
    if (!(fe->eps > 0.0f)) return KWSN_ERR_PARAM;
    for (uint32_t j = 0; j < fe->n_fft; j++)
        if (!isfinite(fe->window[j])) return KWSN_ERR_NONFINITE;
    n_tab = (size_t)fe_n_freqs(fe) * fe->n_mels;
    for (size_t j = 0; j < n_tab; j++)
        if (!isfinite(fe->fbank[j])) return KWSN_ERR_NONFINITE;
    if (fe->dct) {
        n_tab = (size_t)fe->n_mels * fe->n_out;
        for (size_t j = 0; j < n_tab; j++)
            if (!isfinite(fe->dct[j])) return KWSN_ERR_NONFINITE;
    }
    if (fe->center ? (n_samples <= fe->n_fft / 2u) : (n_samples < fe->n_fft))
        return KWSN_ERR_SHAPE;
    if (fe_frames64(fe, n_samples) > UINT32_MAX) return KWSN_ERR_TOO_BIG;
    return KWSN_OK;
}

uint32_t kwsn_frontend_frames(const kwsn_frontend *fe, uint32_t n_samples) {
    uint64_t t = fe_frames64(fe, n_samples);
    return t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
}

size_t kwsn_frontend_scratch_floats(const kwsn_frontend *fe, uint32_t n_samples) {
    (void)n_samples;
    return fe_frame_scratch(fe) + 2u * (size_t)fe->n_mels;
}

static uint64_t sat_add(uint64_t a, uint64_t b) {
    return (a > UINT64_MAX - b) ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b) {
    return (b != 0u && a > UINT64_MAX / b) ? UINT64_MAX : a * b;
}

/* Saturating, so that no field values (also unchecked ones) wrap the count below a limit;
 * parameters kwsn_frontend_check refuses count UINT64_MAX. */
uint64_t kwsn_frontend_ops(const kwsn_frontend *fe, uint32_t n_samples) {
    uint64_t n, m, nf, nm, no, t, per_frame, batches, ops;
    uint32_t f[KWSN_FE_MAX_FACTORS], nfac;
    if (!fe || fe->n_fft < 2u || fe->n_fft > KWSN_FE_MAX_NFFT || fe->hop_length == 0u)
        return UINT64_MAX;
    n = fe->n_fft;
    m = fe_cfft_len(fe->n_fft);
    nf = fe_n_freqs(fe);
    nm = fe->n_mels;
    no = fe->n_out;
    t = fe_frames64(fe, n_samples);
    nfac = fe_factorize((uint32_t)m, f);
    per_frame = n; /* window */
    for (uint32_t s = 0; s < nfac; s++) per_frame += (m / f[s]) * fe_butterfly_ops(f[s]);
    per_frame += (n % 2u == 0u) ? 16u * nf : 0u; /* split step */
    per_frame += 3u * nf;                       /* power */
    per_frame = sat_add(per_frame, sat_mul(2u * nf, nm));          /* mel, dense */
    per_frame = sat_add(per_frame, sat_mul(nm, 2u + KWSN_FE_LIBM_OPS)); /* eps, log */
    if (fe->dct) per_frame = sat_add(per_frame, sat_mul(2u * nm, no));
    batches = (t + FE_VMAX - 1u) / FE_VMAX; /* whole batches of the widest lanes */
    ops = sat_mul(sat_mul(batches, FE_VMAX), per_frame);
    ops = sat_add(ops, (n / 2u + 1u) * (2u * KWSN_FE_LIBM_OPS + 8u)); /* twiddles */
    ops = sat_add(ops, sat_mul(nf, nm));                              /* filter ranges */
    if (fe->normalize != KWSN_FE_NORM_NONE) ops = sat_add(ops, sat_mul(no, 2u * t + 1u));
    if (fe->normalize == KWSN_FE_NORM_MEANVAR)
        ops = sat_add(ops, sat_mul(no, 3u * t + KWSN_FE_LIBM_OPS + 2u));
    return ops;
}

void kwsn_frontend_prepare(const kwsn_frontend *fe, float *scratch) {
    kwsn_frontend_twiddles(fe, scratch);
    fe_ranges(fe, fe_ranges_area(fe, scratch));
}

size_t kwsn_frontend_tables_floats(const kwsn_frontend *fe) {
    return 2u * (size_t)fe->n_fft + 2u * (size_t)fe->n_mels;
}

void kwsn_frontend_fill_tables(const kwsn_frontend *fe, float *tables) {
    kwsn_frontend_twiddles(fe, tables);
    fe_ranges(fe, tables + 2u * (size_t)fe->n_fft);
}

void kwsn_frontend_run_tables(const kwsn_frontend *fe, const float *tables, const char *isa,
                              const float *wave, uint32_t n_samples, float *scratch, float *out) {
    /* the tables into the scratch's own areas (4 kB for the shipped config: ~0.1 us, against
     * the sin / cos of every twiddle and the range search per call) */
    memcpy(scratch, tables, 2u * (size_t)fe->n_fft * sizeof(float));
    memcpy(fe_ranges_area(fe, scratch), tables + 2u * (size_t)fe->n_fft,
           2u * (size_t)fe->n_mels * sizeof(float));
    fe_run_at(fe, wave, n_samples, scratch, out, fe_width_for(isa));
}

void kwsn_frontend_run_prepared(const kwsn_frontend *fe, const float *wave, uint32_t n_samples,
                                float *scratch, float *out) {
    fe_run_at(fe, wave, n_samples, scratch, out, fe_width());
}

void kwsn_frontend_run(const kwsn_frontend *fe, const float *wave, uint32_t n_samples,
                       float *scratch, float *out) {
    kwsn_frontend_prepare(fe, scratch);
    kwsn_frontend_run_prepared(fe, wave, n_samples, scratch, out);
}

void kwsn_frontend_frames_at(const kwsn_frontend *fe, const float *wave, uint32_t n_samples,
                             uint32_t t0, uint32_t count, float *scratch, float *out) {
    fe_span_at(fe, wave, n_samples, t0, count, scratch, out, fe->n_out, 1u, fe_width());
}

void kwsn_frontend_normalize(const kwsn_frontend *fe, float *out, uint32_t T) {
    const uint32_t no = fe->n_out;
    if (fe->normalize == KWSN_FE_NORM_NONE || T == 0u) return;
    for (uint32_t c = 0; c < no; c++) {
        float *row = out + (size_t)c * T;
        double acc = 0.0;
        float mean;
        for (uint32_t t = 0; t < T; t++) acc += (double)row[t];
        mean = (float)(acc / (double)T);
        for (uint32_t t = 0; t < T; t++) row[t] = row[t] - mean;
        if (fe->normalize == KWSN_FE_NORM_MEANVAR) {
            double ss = 0.0;
            float denom;
            for (uint32_t t = 0; t < T; t++) ss += (double)row[t] * (double)row[t];
            denom = (float)sqrt(ss / (double)T) + 1e-5f;
            for (uint32_t t = 0; t < T; t++) row[t] = row[t] / denom;
        }
    }
}

#else /* KWSN_FE_TEMPLATE: the width-W copy of the transform, included once per width */

/* Short names for this width's types and functions (FE_FN appends _w<W>; undone at the end). */
#define fev FE_FN(fev)
#define fed FE_FN(fed)
#define fei FE_FN(fei)
#define feh FE_FN(feh)
#define fe_fill8 FE_FN(fe_fill8)
#define cpx FE_FN(cpx)
#define cmul FE_FN(cmul)
#define cadd FE_FN(cadd)
#define csub FE_FN(csub)
#define cmsubi FE_FN(cmsubi)
#define cmaddi FE_FN(cmaddi)
#define fe_pass2 FE_FN(fe_pass2)
#define fe_pass3 FE_FN(fe_pass3)
#define fe_pass4 FE_FN(fe_pass4)
#define fe_pass5 FE_FN(fe_pass5)
#define fe_passg FE_FN(fe_passg)
#define fe_cfft FE_FN(fe_cfft)
#define fe_power FE_FN(fe_power)
#define fe_log_mel FE_FN(fe_log_mel)
#define fe_logv FE_FN(fe_logv)
#define fe_put FE_FN(fe_put)
#define fe_one_frame FE_FN(fe_one_frame)
#define fe_batch FE_FN(fe_batch)
#define fe_span FE_FN(fe_span)
#define fe_power_at FE_FN(fe_power_at)
#define fe_log_mel_at FE_FN(fe_log_mel_at)
#define fe_features FE_FN(fe_features)

/* W frames, one per lane: float lanes for the transform, double lanes for the mel sums.
 * aligned(4) lets the float vectors sit anywhere in float scratch. */
#if FE_W > 1
/* the mel sums in two halves of W / 2 double lanes, one native register each (a W-double
 * vector is twice the target's width, which GCC splits through the stack) */
#define FE_DW (FE_W / 2)
typedef float fev __attribute__((vector_size(FE_W * 4), aligned(4)));
typedef float feh __attribute__((vector_size(FE_DW * 4), aligned(4)));
typedef double fed __attribute__((vector_size(FE_DW * 8)));
typedef int32_t fei __attribute__((vector_size(FE_DW * 4), aligned(4)));
#else
typedef float fev;
#endif

#if FE_W >= 8
/* Lanes lb .. lb + 7 of buf's rows j .. j + 7 (buf[j][W]): lane l's windowed samples
 * x[l hop + j + k] w[j + k], read as 8 rows of 8 and transposed in registers (unpacks,
 * shuffles, 128-bit permutes), so that each row is one 32-byte store. The same products as
 * one float at a time; that loop stored one float per 32 bytes, and its time moved by ~15 %
 * with where the clip and the buffer sat (4K aliasing of those stores with the loads).
 * Intrinsics, not vector extensions: gcc 12 split the latter's unaligned 32-byte loads and
 * stores (generic tuning) and kept the rows on the stack. */
static FE_ATTR inline void fe_fill8(float *buf, const float *x, const float *w, size_t hop,
                                    uint32_t lb, uint32_t j) {
    const __m256 wv = _mm256_loadu_ps(w + j);
    __m256 r[8], c[8];
    for (uint32_t l = 0; l < 8u; l++)
        r[l] = _mm256_mul_ps(_mm256_loadu_ps(x + (size_t)(lb + l) * hop + j), wv);
    KWSN_TRANSPOSE8_PS(r, c);
    for (uint32_t k = 0; k < 8u; k++) _mm256_storeu_ps(buf + (size_t)(j + k) * FE_W + lb, c[k]);
}
#endif

/* One complex value of W frames. */
typedef struct {
    fev r, i;
} cpx;

/* This width's power [n_freqs][W] and log-mel [n_mels][W] areas, after buffers a and b. */
static FE_ATTR float *fe_power_at(const kwsn_frontend *fe, float *scratch) {
    return fe_buf_a(fe, scratch) + 4u * (size_t)fe_cfft_len(fe->n_fft) * FE_W;
}
static FE_ATTR float *fe_log_mel_at(const kwsn_frontend *fe, float *scratch) {
    return fe_power_at(fe, scratch) + (size_t)fe_n_freqs(fe) * FE_W;
}

static FE_ATTR cpx cmul(cpx a, tws b) {
    cpx r;
    r.r = a.r * b.r - a.i * b.i;
    r.i = a.r * b.i + a.i * b.r;
    return r;
}

static FE_ATTR cpx cadd(cpx a, cpx b) {
    cpx r;
    r.r = a.r + b.r;
    r.i = a.i + b.i;
    return r;
}

static FE_ATTR cpx csub(cpx a, cpx b) {
    cpx r;
    r.r = a.r - b.r;
    r.i = a.i - b.i;
    return r;
}

/* a - i b and a + i b */
static FE_ATTR cpx cmsubi(cpx a, cpx b) {
    cpx r;
    r.r = a.r + b.i;
    r.i = a.i - b.r;
    return r;
}

static FE_ATTR cpx cmaddi(cpx a, cpx b) {
    cpx r;
    r.r = a.r - b.i;
    r.i = a.i + b.r;
    return r;
}

/* The Stockham passes of a length-m complex forward DFT: pass s reads
 * in[i + ido * (q + p * k)] and writes out[i + ido * (k + l1 * j)] = (radix-p DFT over q)_j
 * times w_L^(i j), L = p * ido, for k < l1 (the independent sub-transforms), i < ido. tw holds
 * w_n^x for x < n (n = n_fft), so w_L^y = tw[y * step] with step = n / L. */
#define FE_IN(q) in[i + (size_t)ido * ((q) + (size_t)P * k)]
#define FE_OUT(j) out[i + (size_t)ido * (k + (size_t)l1 * (j))]
#define FE_STORE(j, y)                                                                    \
    do {                                                                                  \
        FE_OUT(j) = (i == 0u) ? (y) : cmul((y), tw_at(tw, (uint64_t)(j) * i * step));     \
    } while (0)

static FE_ATTR void fe_pass2(uint32_t l1, uint32_t ido, const cpx *in, cpx *out,
                             const float *tw, uint32_t step) {
    enum { P = 2 };
    for (uint32_t k = 0; k < l1; k++)
        for (uint32_t i = 0; i < ido; i++) {
            cpx a0 = FE_IN(0), a1 = FE_IN(1);
            FE_OUT(0) = cadd(a0, a1);
            FE_STORE(1, csub(a0, a1));
        }
}

static FE_ATTR void fe_pass3(uint32_t l1, uint32_t ido, const cpx *in, cpx *out,
                             const float *tw, uint32_t step) {
    enum { P = 3 };
    const float s3 = 0.866025403784438646763723f; /* sin(2 pi / 3) */
    for (uint32_t k = 0; k < l1; k++)
        for (uint32_t i = 0; i < ido; i++) {
            cpx a0 = FE_IN(0), a1 = FE_IN(1), a2 = FE_IN(2);
            cpx t1 = cadd(a1, a2), t2 = csub(a1, a2), c;
            FE_OUT(0) = cadd(a0, t1);
            c.r = a0.r - 0.5f * t1.r;
            c.i = a0.i - 0.5f * t1.i;
            t2.r = s3 * t2.r;
            t2.i = s3 * t2.i;
            FE_STORE(1, cmsubi(c, t2));
            FE_STORE(2, cmaddi(c, t2));
        }
}

static FE_ATTR void fe_pass4(uint32_t l1, uint32_t ido, const cpx *in, cpx *out,
                             const float *tw, uint32_t step) {
    enum { P = 4 };
    for (uint32_t k = 0; k < l1; k++)
        for (uint32_t i = 0; i < ido; i++) {
            cpx a0 = FE_IN(0), a1 = FE_IN(1), a2 = FE_IN(2), a3 = FE_IN(3);
            cpx t0 = cadd(a0, a2), t1 = csub(a0, a2), t2 = cadd(a1, a3), t3 = csub(a1, a3);
            FE_OUT(0) = cadd(t0, t2);
            FE_STORE(1, cmsubi(t1, t3));
            FE_STORE(2, csub(t0, t2));
            FE_STORE(3, cmaddi(t1, t3));
        }
}

static FE_ATTR void fe_pass5(uint32_t l1, uint32_t ido, const cpx *in, cpx *out,
                             const float *tw, uint32_t step) {
    enum { P = 5 };
    const float c1 = 0.309016994374947424102293f;  /* cos(2 pi / 5) */
    const float c2 = -0.809016994374947424102293f; /* cos(4 pi / 5) */
    const float s1 = 0.951056516295153572116439f;  /* sin(2 pi / 5) */
    const float s2 = 0.587785252292473129168706f;  /* sin(4 pi / 5) */
    for (uint32_t k = 0; k < l1; k++)
        for (uint32_t i = 0; i < ido; i++) {
            cpx a0 = FE_IN(0), a1 = FE_IN(1), a2 = FE_IN(2), a3 = FE_IN(3), a4 = FE_IN(4);
            cpx t1 = cadd(a1, a4), t4 = csub(a1, a4), t2 = cadd(a2, a3), t3 = csub(a2, a3);
            cpx y0, ca, cb, sa, sb;
            y0.r = a0.r + t1.r + t2.r;
            y0.i = a0.i + t1.i + t2.i;
            ca.r = a0.r + c1 * t1.r + c2 * t2.r;
            ca.i = a0.i + c1 * t1.i + c2 * t2.i;
            cb.r = a0.r + c2 * t1.r + c1 * t2.r;
            cb.i = a0.i + c2 * t1.i + c1 * t2.i;
            sa.r = s1 * t4.r + s2 * t3.r;
            sa.i = s1 * t4.i + s2 * t3.i;
            sb.r = s2 * t4.r - s1 * t3.r;
            sb.i = s2 * t4.i - s1 * t3.i;
            FE_OUT(0) = y0;
            FE_STORE(1, cmsubi(ca, sa));
            FE_STORE(2, cmsubi(cb, sb));
            FE_STORE(3, cmaddi(cb, sb));
            FE_STORE(4, cmaddi(ca, sa));
        }
}

/* Any other prime p: a direct DFT per butterfly, y_j = sum_q a_q w_p^(q j), q ascending. */
static FE_ATTR void fe_passg(uint32_t P, uint32_t l1, uint32_t ido, const cpx *in, cpx *out,
                             const float *tw, uint32_t step, uint32_t pstep) {
    for (uint32_t k = 0; k < l1; k++)
        for (uint32_t i = 0; i < ido; i++)
            for (uint32_t j = 0; j < P; j++) {
                cpx acc = FE_IN(0);
                uint32_t e = 0; /* q j mod p */
                for (uint32_t q = 1; q < P; q++) {
                    e += j;
                    if (e >= P) e -= P;
                    acc = cadd(acc, cmul(FE_IN(q), tw_at(tw, (uint64_t)e * pstep)));
                }
                FE_STORE(j, acc);
            }
}

#undef FE_IN
#undef FE_OUT
#undef FE_STORE

/* Forward complex DFT of length m (m divides n = n_fft) of buf a; returns the buffer holding
 * the result (a or b). */
static FE_ATTR cpx *fe_cfft(cpx *a, cpx *b, uint32_t m, const float *tw, uint32_t n) {
    uint32_t f[KWSN_FE_MAX_FACTORS];
    uint32_t nf = fe_factorize(m, f);
    uint32_t l1 = 1u;
    for (uint32_t s = 0; s < nf; s++) {
        uint32_t p = f[s];
        uint32_t ido = m / (l1 * p);
        uint32_t step = n / (p * ido); /* w_L = w_n^step */
        cpx *t;
        switch (p) {
        case 2: fe_pass2(l1, ido, a, b, tw, step); break;
        case 3: fe_pass3(l1, ido, a, b, tw, step); break;
        case 4: fe_pass4(l1, ido, a, b, tw, step); break;
        case 5: fe_pass5(l1, ido, a, b, tw, step); break;
        default: fe_passg(p, l1, ido, a, b, tw, step, n / p); break;
        }
        t = a;
        a = b;
        b = t;
        l1 *= p;
    }
    return a;
}

/* Power spectra of the W windowed frames already in buffer a ([M][re, im][W]: interleaved for
 * even n_fft, x + 0i for odd) into the power area, [n_freqs][W]. */
static FE_ATTR void fe_power(const kwsn_frontend *fe, float *scratch) {
    const uint32_t n = fe->n_fft, m = fe_cfft_len(n);
    const float *tw = scratch;
    cpx *a = (cpx *)(void *)fe_buf_a(fe, scratch);
    cpx *b = a + m;
    fev *power = (fev *)(void *)fe_power_at(fe, scratch);
    const cpx *z = fe_cfft(a, b, m, tw, n);
    if (n % 2u) {
        for (uint32_t k = 0; k <= n / 2u; k++) power[k] = z[k].r * z[k].r + z[k].i * z[k].i;
        return;
    }
    /* split step: E = (Z[k] + conj Z[m-k]) / 2, O = (Z[k] - conj Z[m-k]) / (2i),
     * X[k] = E + w_n^k O; X[0] and X[m] are real */
    {
        fev x0 = z[0].r + z[0].i, xm = z[0].r - z[0].i;
        power[0] = x0 * x0;
        power[m] = xm * xm;
    }
    for (uint32_t k = 1; k < m; k++) {
        const cpx zk = z[k], zc = z[m - k];
        fev er = 0.5f * (zk.r + zc.r), ei = 0.5f * (zk.i - zc.i);
        fev dr = 0.5f * (zk.r - zc.r), di = 0.5f * (zk.i + zc.i);
        /* O = -i D = (di, -dr) */
        tws w = tw_at(tw, k);
        fev xr = er + (w.r * di + w.i * dr);
        fev xi = ei + (w.i * di - w.r * dr);
        power[k] = xr * xr + xi * xi;
    }
}

#if FE_W > 1 && (defined(__clang__) || __GNUC__ >= 9)
/* fe_logf of FE_DW floats in double lanes, the same operations per lane; a lane whose value
 * is not a normal finite float takes fe_logf (libm). Lane k < n to out[k * stride]. */
static FE_ATTR inline void fe_logv(float *out, size_t stride, feh mel, uint32_t n) {
    fei u;
    memcpy(&u, &mel, sizeof u);
    fei e = (u >> 23) - 127;
    fei mb = (u & 0x7FFFFF) | 0x3F800000;
    const fei big = mb > 0x3FB504F3; /* -1 where m > sqrt(2) */
    mb += big & -0x00800000;
    e -= big;
    feh mh;
    memcpy(&mh, &mb, sizeof mh);
    const fed m = __builtin_convertvector(mh, fed), ed = __builtin_convertvector(e, fed);
    const fed sd = (m - 1.0) / (m + 1.0), z = sd * sd;
    const feh r = __builtin_convertvector(ed * FE_LN2 + 2.0 * sd * FE_LOG_POLY(z), feh);
    for (uint32_t k = 0; k < n; k++) {
        const float x = mel[k];
        out[k * stride] = (x >= 0x1p-126f && x <= 0x1.fffffep127f) ? r[k] : fe_logf(x);
    }
}
#endif

/* log(mel + eps) of lanes [0, lanes) from power[n_freqs][W] into log_mel[l * ls + mel * ms]
 * (a batch: [n_mels][W]; one frame: [n_mels]);
 * ranges (or NULL: all bins) bound each band's nonzero filter entries. Terms outside are
 * +-0 * finite, which leave the double sum unchanged, so both give the same bits. Each
 * lane's sum runs over ascending bins in its own double lane (the float power widened
 * exactly, times the double weight, rounded, added), whichever lanes run with it. */
static FE_ATTR void fe_log_mel(const kwsn_frontend *fe, const float *power, uint32_t lanes,
                               const float *ranges, float *log_mel, size_t ls, size_t ms) {
    const uint32_t nf = fe_n_freqs(fe), nm = fe->n_mels;
    for (uint32_t mi = 0; mi < nm; mi++) {
        uint32_t lo = 0, hi = nf;
#if FE_W > 1
        fed acc[2] = {{0}, {0}};
#else
        double acc = 0.0;
#endif
        if (ranges) {
            lo = (uint32_t)ranges[2u * mi];
            hi = (uint32_t)ranges[2u * mi + 1u];
        }
        for (uint32_t f = lo; f < hi; f++) {
            const double w = (double)fe->fbank[(size_t)f * nm + mi];
            const float *p = power + (size_t)f * FE_W;
#if FE_W > 1 && (defined(__clang__) || __GNUC__ >= 9)
            const feh *ph = (const feh *)(const void *)p;
            acc[0] += __builtin_convertvector(ph[0], fed) * w;
            acc[1] += __builtin_convertvector(ph[1], fed) * w;
#elif FE_W > 1
            for (uint32_t l = 0; l < FE_W; l++) acc[l / FE_DW][l % FE_DW] += (double)p[l] * w;
#else
            acc += (double)p[0] * w;
#endif
        }
#if FE_W > 1 && (defined(__clang__) || __GNUC__ >= 9)
        if (ls == 1u && ms == FE_W) { /* a batch: the mels now, their logs in a second pass */
            feh *row = (feh *)(void *)(log_mel + (size_t)mi * FE_W);
            row[0] = __builtin_convertvector(acc[0], feh) + fe->eps;
            row[1] = __builtin_convertvector(acc[1], feh) + fe->eps;
            continue;
        }
        /* one frame (and any other layout): each band's log after its sum */
        for (uint32_t h = 0; h < 2u && h * FE_DW < lanes; h++) {
            const uint32_t n = lanes - h * FE_DW < FE_DW ? lanes - h * FE_DW : FE_DW;
            fe_logv(log_mel + (size_t)h * FE_DW * ls + (size_t)mi * ms, ls,
                    __builtin_convertvector(acc[h], feh) + fe->eps, n);
        }
#else
        for (uint32_t l = 0; l < lanes; l++) {
#if FE_W > 1
            float mel = (float)acc[l / FE_DW][l % FE_DW] + fe->eps;
#else
            float mel = (float)acc + fe->eps;
#endif
            log_mel[l * ls + mi * ms] = fe_logf(mel);
        }
#endif
    }
#if FE_W > 1 && (defined(__clang__) || __GNUC__ >= 9)
    /* A batch's logs, every band after every sum: the same operations per lane as above (and
     * fe_logf's), but the bands' log polynomials are independent of the next band's sum, so
     * they overlap instead of waiting on it (the front end's log was ~8 % of kws_cnn_mel's
     * float clip on an Intel Xeon, its double division and 9-term Horner chain serialised
     * with the sums) */
    if (ls == 1u && ms == FE_W)
        for (uint32_t mi = 0; mi < nm; mi++)
            for (uint32_t h = 0; h < 2u && h * FE_DW < lanes; h++) {
                float *lm = log_mel + (size_t)mi * FE_W + h * FE_DW;
                const uint32_t n = lanes - h * FE_DW < FE_DW ? lanes - h * FE_DW : FE_DW;
                feh mel;
                memcpy(&mel, lm, sizeof mel);
                fe_logv(lm, 1u, mel, n);
            }
#endif
}

/* Lane l of the FFT input: sample j of the frame, windowed, at float offset j * W + l for
 * even n_fft (z[e] = x[2e] + i x[2e+1]: re and im lanes of element e are j = 2e, 2e + 1), and
 * 2j * W + l with a zero imaginary part for odd. */
static FE_ATTR void fe_put(float *buf, uint32_t odd, uint32_t j, uint32_t l, float v) {
    if (odd) {
        buf[(size_t)2u * j * FE_W + l] = v;
        buf[((size_t)2u * j + 1u) * FE_W + l] = 0.0f;
    } else {
        buf[(size_t)j * FE_W + l] = v;
    }
}

#if FE_W == FE_VBASE
/* One frame in lane 0, zeros in the other lanes; returns power[n_freqs][W]. */
static FE_ATTR const float *fe_one_frame(const kwsn_frontend *fe, const float *frame,
                                         float *scratch) {
    const uint32_t n = fe->n_fft;
    float *buf = fe_buf_a(fe, scratch);
    memset(buf, 0, sizeof(float) * 2u * (size_t)fe_cfft_len(n) * FE_W);
    for (uint32_t j = 0; j < n; j++) fe_put(buf, n % 2u, j, 0, frame[j] * fe->window[j]);
    fe_power(fe, scratch);
    return fe_power_at(fe, scratch);
}
#endif

/* Frames [t0, t0 + lanes) of wave (lanes <= W), each in its lane: window, FFT, power,
 * log-mel into the log_mel area of scratch ([n_mels][W]). Twiddles and ranges already in
 * scratch (kwsn_frontend_prepare). */
static FE_ATTR void fe_batch(const kwsn_frontend *fe, const float *wave, uint32_t n_samples,
                             uint32_t t0, uint32_t lanes, float *scratch) {
    const uint32_t n = fe->n_fft, odd = n % 2u;
    const int64_t pad = fe->center ? (int64_t)(n / 2u) : 0;
    const int64_t last = (int64_t)n_samples - 1;
    float *buf = fe_buf_a(fe, scratch);
    const int64_t first = (int64_t)t0 * fe->hop_length - pad;
    const int64_t end = (int64_t)(t0 + FE_W - 1u) * fe->hop_length - pad + n;
    if (!odd && lanes == FE_W && first >= 0 && end <= (int64_t)n_samples) {
        /* all lanes inside the clip: fill them together (4 lanes: sample by sample, one
         * 16-byte row per sample; wider: lane by lane, each a contiguous read) */
        if (FE_W <= 4) {
            const float *x = wave + first;
            for (uint32_t j = 0; j < n; j++) {
                const float w = fe->window[j];
                for (uint32_t l = 0; l < FE_W; l++)
                    buf[(size_t)j * FE_W + l] = x[(size_t)l * fe->hop_length + j] * w;
            }
        } else {
            uint32_t j0 = 0;
#if FE_W >= 8
            j0 = n & ~7u; /* 8 lanes by 8 samples at a time, transposed in registers */
            for (uint32_t lb = 0; lb < FE_W; lb += 8u)
                for (uint32_t j = 0; j < j0; j += 8u)
                    fe_fill8(buf, wave + first, fe->window, fe->hop_length, lb, j);
#endif
            for (uint32_t l = 0; l < FE_W; l++) {
                const float *x = wave + first + (size_t)l * fe->hop_length;
                float *b = buf + l;
                for (uint32_t j = j0; j < n; j++) b[(size_t)j * FE_W] = x[j] * fe->window[j];
            }
        }
    } else {
        if (lanes < FE_W) memset(buf, 0, sizeof(float) * 2u * (size_t)fe_cfft_len(n) * FE_W);
        for (uint32_t l = 0; l < lanes; l++) {
            const int64_t start = (int64_t)(t0 + l) * fe->hop_length - pad;
            if (start >= 0 && start + n <= (int64_t)n_samples && !odd) {
                const float *x = wave + start;
                for (uint32_t j = 0; j < n; j++) buf[(size_t)j * FE_W + l] = x[j] * fe->window[j];
                continue;
            }
            for (uint32_t j = 0; j < n; j++) {
                /* reflect padding (torch pad_mode "reflect"): x[-i] = x[i],
                 * x[L-1+i] = x[L-1-i]; one reflection suffices as check() ensures
                 * pad < n_samples */
                int64_t idx = start + j;
                if (idx < 0) idx = -idx;
                if (idx > last) idx = 2 * last - idx;
                fe_put(buf, odd, j, l, wave[idx] * fe->window[j]);
            }
        }
    }
    fe_power(fe, scratch);
    fe_log_mel(fe, fe_power_at(fe, scratch), lanes, fe_ranges_area(fe, scratch),
               fe_log_mel_at(fe, scratch), 1u, FE_W);
}

/* The features of the batch's frames from its log-mels lm[n_mels][W]: the DCT (double,
 * ascending mel, each lane its own double sum: the float log-mel widened exactly, times the
 * double DCT entry, rounded, added) or a copy; lane l's feature c to out[l * col + c * row]. */
static FE_ATTR void fe_features(const kwsn_frontend *fe, const float *lm, uint32_t lanes,
                                float *out, size_t col, size_t row) {
    const uint32_t nm = fe->n_mels, no = fe->n_out;
    if (!fe->dct) {
        for (uint32_t l = 0; l < lanes; l++)
            for (uint32_t c = 0; c < nm; c++) out[l * col + c * row] = lm[(size_t)c * FE_W + l];
        return;
    }
    for (uint32_t c = 0; c < no; c++) {
#if FE_W > 1 && (defined(__clang__) || __GNUC__ >= 9)
        fed acc[2] = {{0}, {0}};
        for (uint32_t mi = 0; mi < nm; mi++) {
            const double d = (double)fe->dct[(size_t)mi * no + c];
            const feh *h = (const feh *)(const void *)(lm + (size_t)mi * FE_W);
            acc[0] += __builtin_convertvector(h[0], fed) * d;
            acc[1] += __builtin_convertvector(h[1], fed) * d;
        }
        for (uint32_t l = 0; l < lanes; l++)
            out[l * col + c * row] = (float)acc[l / FE_DW][l % FE_DW];
#else
        for (uint32_t l = 0; l < lanes; l++) {
            double acc = 0.0;
            for (uint32_t mi = 0; mi < nm; mi++)
                acc += (double)lm[(size_t)mi * FE_W + l] * (double)fe->dct[(size_t)mi * no + c];
            out[l * col + c * row] = (float)acc;
        }
#endif
    }
}

/* Frames [t0, t0 + count) in batches of W (count - done < W: the last, partial batch):
 * frame i's feature c (after the DCT, if any) at out[i * col + c * row]. */
static FE_ATTR void fe_span(const kwsn_frontend *fe, const float *wave, uint32_t n_samples,
                            uint32_t t0, uint32_t count, float *scratch, float *out,
                            size_t col, size_t row) {
    const float *lm = fe_log_mel_at(fe, scratch);
    for (uint32_t i = 0; i < count; i += FE_W) {
        const uint32_t lanes = (count - i < FE_W) ? count - i : FE_W;
        fe_batch(fe, wave, n_samples, t0 + i, lanes, scratch);
        fe_features(fe, lm, lanes, out + (size_t)i * col, col, row);
    }
}

#undef fev
#undef fe_fill8
#undef fed
#undef fei
#undef feh
#ifdef FE_DW
#undef FE_DW
#endif
#undef cpx
#undef cmul
#undef cadd
#undef csub
#undef cmsubi
#undef cmaddi
#undef fe_pass2
#undef fe_pass3
#undef fe_pass4
#undef fe_pass5
#undef fe_passg
#undef fe_cfft
#undef fe_power
#undef fe_log_mel
#undef fe_logv
#undef fe_put
#undef fe_one_frame
#undef fe_batch
#undef fe_span
#undef fe_power_at
#undef fe_log_mel_at
#undef fe_features
#endif /* KWSN_FE_TEMPLATE */
