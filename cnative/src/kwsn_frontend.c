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
 * kwsn_frontend_ops reports exactly, so prepare refuses it when it is over the caller's limit;
 * every audio configuration in use (400, 480, 512, 1024: factors 2, 3, 5) stays O(N log N).
 *
 * Twiddles w_N^k = exp(-2 pi i k / N), k < N, are computed in double with an octant
 * reduction (so w_N^{N/4} is exactly -i) and rounded to float into the caller's scratch on
 * every run (no hidden state); the N / 2 + 1 sin/cos pairs cost about as much as one or two
 * frames. A streaming caller computes them once (kwsn_frontend_twiddles) and reuses the
 * scratch across hops (kwsn_frontend_frame_tw).
 *
 * Numerics. FFT, window and power spectrum run in float32 like torch.stft on float input;
 * the mel product, the DCT and the normalisation statistics accumulate in double in a fixed
 * order (ascending frequency, mel, frame) and round once, which keeps the result as close to
 * the exact value as float storage allows; log is double log of the float mel + eps, rounded.
 * No FMA contraction (the pragmas below, as in kwsn_kernels.c), no reassociation, no
 * dependence on the kernel path (KWSN_ISA): this file is compiled once, so the output is the
 * same bits on every path and under any compiler that honours IEEE float and FP_CONTRACT. */
#if defined(__GNUC__) && !defined(__clang__)
/* GCC 12's loop vectoriser turns the complex multiplies into vfmaddsub with -mfma even under
 * -ffp-contract=off, so this file is not loop-vectorised (the butterflies are strided; the
 * portable baseline build has no FMA and loses nothing measurable) */
#pragma GCC optimize("fp-contract=off", "no-tree-loop-vectorize")
#else
/* clang honours this unless given -ffp-contract=fast, which by its definition ignores
 * pragmas (use the default "on", or "off") */
#pragma STDC FP_CONTRACT OFF
#endif
#include <math.h>
#include <string.h>

#include "kwsn_frontend.h"

/* A radix pass: p = factor, l1 = product of the earlier factors, ido = M / (l1 * p). */
#define KWSN_FE_MAX_FACTORS 64
/* libm calls (log, sin, cos, sqrt) count as this many operations in kwsn_frontend_ops. */
#define KWSN_FE_LIBM_OPS 20u

typedef struct {
    float r, i;
} cpx;

static uint32_t fe_n_freqs(const kwsn_frontend *fe) { return fe->n_fft / 2u + 1u; }

/* Complex FFT length: n_fft / 2 for even n_fft, n_fft for odd. */
static uint32_t fe_cfft_len(uint32_t n_fft) { return (n_fft % 2u == 0u) ? n_fft / 2u : n_fft; }

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

/* Scratch layout (floats): twiddles [2 * n_fft] | fft buffer a [2 * M] | buffer b [2 * M] |
 * power [n_freqs] | log_mel [n_mels] | mel ranges [2 * n_mels] (whole-clip runs only). */
static size_t fe_frame_scratch(const kwsn_frontend *fe) {
    size_t m = fe_cfft_len(fe->n_fft);
    return 2u * (size_t)fe->n_fft + 4u * m + fe_n_freqs(fe) + fe->n_mels;
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

static cpx tw_at(const float *tw, uint64_t idx) {
    cpx w = {tw[2u * idx], tw[2u * idx + 1u]};
    return w;
}

static cpx cmul(cpx a, cpx b) {
    cpx r = {a.r * b.r - a.i * b.i, a.r * b.i + a.i * b.r};
    return r;
}

/* One Stockham pass of a length-m complex forward DFT. in[i + ido * (q + p * k)],
 * out[i + ido * (k + l1 * j)]: out = (radix-p DFT over q) times w_L^(i j), L = p * ido.
 * tw holds w_n^x for x < n (n = n_fft), so w_L^y = tw[y * (n / L)]. */
static void fe_pass(uint32_t p, uint32_t l1, uint32_t ido, const cpx *in, cpx *out,
                    const float *tw, uint32_t n) {
    const uint32_t L = p * ido;
    const uint32_t step = n / L; /* w_L = w_n^step */
    const uint32_t pstep = n / p;
    cpx a[5], y[5];
    for (uint32_t k = 0; k < l1; k++) {
        for (uint32_t i = 0; i < ido; i++) {
            const cpx *src = in + i + (size_t)ido * p * k;
            cpx *dst = out + i + (size_t)ido * k;
            const size_t ostride = (size_t)ido * l1;
            if (p == 2u) {
                a[0] = src[0];
                a[1] = src[ido];
                y[0].r = a[0].r + a[1].r;
                y[0].i = a[0].i + a[1].i;
                y[1].r = a[0].r - a[1].r;
                y[1].i = a[0].i - a[1].i;
            } else if (p == 3u) {
                const float s3 = 0.866025403784438646763723f; /* sin(2 pi / 3) */
                cpx t1, t2, c;
                for (uint32_t q = 0; q < 3u; q++) a[q] = src[(size_t)q * ido];
                t1.r = a[1].r + a[2].r;
                t1.i = a[1].i + a[2].i;
                t2.r = a[1].r - a[2].r;
                t2.i = a[1].i - a[2].i;
                y[0].r = a[0].r + t1.r;
                y[0].i = a[0].i + t1.i;
                c.r = a[0].r - 0.5f * t1.r;
                c.i = a[0].i - 0.5f * t1.i;
                t2.r = s3 * t2.r;
                t2.i = s3 * t2.i;
                y[1].r = c.r + t2.i;
                y[1].i = c.i - t2.r;
                y[2].r = c.r - t2.i;
                y[2].i = c.i + t2.r;
            } else if (p == 4u) {
                cpx t0, t1, t2, t3;
                for (uint32_t q = 0; q < 4u; q++) a[q] = src[(size_t)q * ido];
                t0.r = a[0].r + a[2].r;
                t0.i = a[0].i + a[2].i;
                t1.r = a[0].r - a[2].r;
                t1.i = a[0].i - a[2].i;
                t2.r = a[1].r + a[3].r;
                t2.i = a[1].i + a[3].i;
                t3.r = a[1].r - a[3].r;
                t3.i = a[1].i - a[3].i;
                y[0].r = t0.r + t2.r;
                y[0].i = t0.i + t2.i;
                y[2].r = t0.r - t2.r;
                y[2].i = t0.i - t2.i;
                y[1].r = t1.r + t3.i; /* t1 - i t3 */
                y[1].i = t1.i - t3.r;
                y[3].r = t1.r - t3.i; /* t1 + i t3 */
                y[3].i = t1.i + t3.r;
            } else if (p == 5u) {
                const float c1 = 0.309016994374947424102293f;  /* cos(2 pi / 5) */
                const float c2 = -0.809016994374947424102293f; /* cos(4 pi / 5) */
                const float s1 = 0.951056516295153572116439f;  /* sin(2 pi / 5) */
                const float s2 = 0.587785252292473129168706f;  /* sin(4 pi / 5) */
                cpx t1, t2, t3, t4, ca, cb, sa, sb;
                for (uint32_t q = 0; q < 5u; q++) a[q] = src[(size_t)q * ido];
                t1.r = a[1].r + a[4].r;
                t1.i = a[1].i + a[4].i;
                t4.r = a[1].r - a[4].r;
                t4.i = a[1].i - a[4].i;
                t2.r = a[2].r + a[3].r;
                t2.i = a[2].i + a[3].i;
                t3.r = a[2].r - a[3].r;
                t3.i = a[2].i - a[3].i;
                y[0].r = a[0].r + t1.r + t2.r;
                y[0].i = a[0].i + t1.i + t2.i;
                ca.r = a[0].r + c1 * t1.r + c2 * t2.r;
                ca.i = a[0].i + c1 * t1.i + c2 * t2.i;
                cb.r = a[0].r + c2 * t1.r + c1 * t2.r;
                cb.i = a[0].i + c2 * t1.i + c1 * t2.i;
                sa.r = s1 * t4.r + s2 * t3.r;
                sa.i = s1 * t4.i + s2 * t3.i;
                sb.r = s2 * t4.r - s1 * t3.r;
                sb.i = s2 * t4.i - s1 * t3.i;
                y[1].r = ca.r + sa.i; /* ca - i sa */
                y[1].i = ca.i - sa.r;
                y[4].r = ca.r - sa.i; /* ca + i sa */
                y[4].i = ca.i + sa.r;
                y[2].r = cb.r + sb.i; /* cb - i sb */
                y[2].i = cb.i - sb.r;
                y[3].r = cb.r - sb.i; /* cb + i sb */
                y[3].i = cb.i + sb.r;
            } else {
                /* any other prime: direct DFT, output j = sum_q a_q w_p^(q j), q ascending */
                for (uint32_t j = 0; j < p; j++) {
                    cpx acc = src[0];
                    for (uint32_t q = 1; q < p; q++) {
                        cpx v = cmul(src[(size_t)q * ido],
                                     tw_at(tw, (uint64_t)((uint64_t)q * j % p) * pstep));
                        acc.r += v.r;
                        acc.i += v.i;
                    }
                    if (j != 0u && i != 0u) acc = cmul(acc, tw_at(tw, (uint64_t)i * j * step));
                    dst[(size_t)j * ostride] = acc;
                }
                continue;
            }
            dst[0] = y[0];
            for (uint32_t j = 1; j < p; j++)
                dst[(size_t)j * ostride] =
                    (i != 0u) ? cmul(y[j], tw_at(tw, (uint64_t)i * j * step)) : y[j];
        }
    }
}

/* Forward complex DFT of length m (m divides n = n_fft) of buf a; returns the buffer holding
 * the result (a or b). */
static cpx *fe_cfft(cpx *a, cpx *b, uint32_t m, const float *tw, uint32_t n) {
    uint32_t f[KWSN_FE_MAX_FACTORS];
    uint32_t nf = fe_factorize(m, f);
    uint32_t l1 = 1u;
    for (uint32_t s = 0; s < nf; s++) {
        uint32_t p = f[s];
        uint32_t ido = m / (l1 * p);
        cpx *t;
        fe_pass(p, l1, ido, a, b, tw, n);
        t = a;
        a = b;
        b = t;
        l1 *= p;
    }
    return a;
}

/* Power spectrum of the windowed frame already in scratch buffer a (interleaved for even
 * n_fft, x + 0i for odd) into power[n_freqs]. */
static void fe_power(const kwsn_frontend *fe, float *scratch, float *power) {
    const uint32_t n = fe->n_fft, m = fe_cfft_len(n);
    const float *tw = scratch;
    cpx *a = (cpx *)(void *)(scratch + 2u * (size_t)n);
    cpx *b = a + m;
    const cpx *z = fe_cfft(a, b, m, tw, n);
    if (n % 2u) {
        for (uint32_t k = 0; k <= n / 2u; k++) power[k] = z[k].r * z[k].r + z[k].i * z[k].i;
        return;
    }
    /* split step: E = (Z[k] + conj Z[m-k]) / 2, O = (Z[k] - conj Z[m-k]) / (2i),
     * X[k] = E + w_n^k O; X[0] and X[m] are real */
    {
        float x0 = z[0].r + z[0].i, xm = z[0].r - z[0].i;
        power[0] = x0 * x0;
        power[m] = xm * xm;
    }
    for (uint32_t k = 1; k < m; k++) {
        const cpx zk = z[k], zc = z[m - k];
        float er = 0.5f * (zk.r + zc.r), ei = 0.5f * (zk.i - zc.i);
        float dr = 0.5f * (zk.r - zc.r), di = 0.5f * (zk.i + zc.i);
        /* O = -i D = (di, -dr) */
        cpx w = tw_at(tw, k);
        float xr = er + (w.r * di + w.i * dr);
        float xi = ei + (w.i * di - w.r * dr);
        power[k] = xr * xr + xi * xi;
    }
}

/* log(mel + eps) of power[n_freqs] over mel bands; lo/hi (or NULL: all bins) bound each
 * band's nonzero filter entries. Terms outside are +-0 * finite, which leave the double sum
 * unchanged, so both give the same bits. */
static void fe_log_mel(const kwsn_frontend *fe, const float *power, const float *ranges,
                       float *log_mel) {
    const uint32_t nf = fe_n_freqs(fe), nm = fe->n_mels;
    for (uint32_t mi = 0; mi < nm; mi++) {
        uint32_t lo = 0, hi = nf;
        double acc = 0.0;
        float mel;
        if (ranges) {
            lo = (uint32_t)ranges[2u * mi];
            hi = (uint32_t)ranges[2u * mi + 1u];
        }
        for (uint32_t f = lo; f < hi; f++)
            acc += (double)power[f] * (double)fe->fbank[(size_t)f * nm + mi];
        mel = (float)acc + fe->eps;
        log_mel[mi] = (float)log((double)mel);
    }
}

/* Window frame[n_fft] into the FFT input buffer (interleaved for even n_fft, x + 0i for
 * odd); returns the power spectrum slot of scratch. */
static float *fe_load_frame(const kwsn_frontend *fe, const float *frame, float *scratch) {
    const uint32_t n = fe->n_fft;
    float *buf = scratch + 2u * (size_t)n;
    if (n % 2u == 0u) {
        for (uint32_t j = 0; j < n; j++) buf[j] = frame[j] * fe->window[j];
    } else {
        for (uint32_t j = 0; j < n; j++) {
            buf[2u * j] = frame[j] * fe->window[j];
            buf[2u * j + 1u] = 0.0f;
        }
    }
    return buf + 4u * (size_t)fe_cfft_len(n);
}

void kwsn_frontend_frame_tw(const kwsn_frontend *fe, const float *frame, float *scratch,
                            float *log_mel) {
    float *power = fe_load_frame(fe, frame, scratch);
    fe_power(fe, scratch, power);
    fe_log_mel(fe, power, NULL, log_mel);
}

void kwsn_frontend_power(const kwsn_frontend *fe, const float *frame, float *scratch,
                         float *power) {
    float *slot;
    kwsn_frontend_twiddles(fe, scratch);
    slot = fe_load_frame(fe, frame, scratch);
    fe_power(fe, scratch, slot);
    memcpy(power, slot, sizeof(float) * fe_n_freqs(fe));
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
    return KWSN_OK;
}

uint32_t kwsn_frontend_frames(const kwsn_frontend *fe, uint32_t n_samples) {
    uint64_t padded = (uint64_t)n_samples + (fe->center ? 2u * (uint64_t)(fe->n_fft / 2u) : 0u);
    if (fe->hop_length == 0u || padded < fe->n_fft) return 0u;
    return (uint32_t)((padded - fe->n_fft) / fe->hop_length + 1u);
}

size_t kwsn_frontend_scratch_floats(const kwsn_frontend *fe, uint32_t n_samples) {
    (void)n_samples;
    return fe_frame_scratch(fe) + 2u * (size_t)fe->n_mels;
}

uint64_t kwsn_frontend_ops(const kwsn_frontend *fe, uint32_t n_samples) {
    const uint64_t n = fe->n_fft, m = fe_cfft_len(fe->n_fft), nf = fe_n_freqs(fe);
    const uint64_t nm = fe->n_mels, no = fe->n_out, t = kwsn_frontend_frames(fe, n_samples);
    uint32_t f[KWSN_FE_MAX_FACTORS];
    uint32_t nfac = fe_factorize((uint32_t)m, f);
    uint64_t per_frame = n, ops;
    for (uint32_t s = 0; s < nfac; s++) per_frame += (m / f[s]) * fe_butterfly_ops(f[s]);
    per_frame += (n % 2u == 0u) ? 16u * nf : 0u; /* split step */
    per_frame += 3u * nf;                       /* power */
    per_frame += 2u * nf * nm + nm * (2u + KWSN_FE_LIBM_OPS); /* mel, eps, log */
    if (fe->dct) per_frame += 2u * nm * no;
    ops = t * per_frame;
    ops += (n / 2u + 1u) * (2u * KWSN_FE_LIBM_OPS + 8u); /* twiddles */
    ops += nf * nm;                                      /* filter ranges */
    if (fe->normalize != KWSN_FE_NORM_NONE) ops += no * (2u * t + 1u);
    if (fe->normalize == KWSN_FE_NORM_MEANVAR) ops += no * (3u * t + KWSN_FE_LIBM_OPS + 2u);
    return ops;
}

/* Per mel band, the smallest [lo, hi) holding its nonzero filter entries, stored as floats
 * (exact: n_freqs <= KWSN_FE_MAX_NFFT / 2 + 1 < 2^24). */
static void fe_ranges(const kwsn_frontend *fe, float *ranges) {
    const uint32_t nf = fe_n_freqs(fe), nm = fe->n_mels;
    for (uint32_t mi = 0; mi < nm; mi++) {
        uint32_t lo = nf, hi = 0;
        for (uint32_t f = 0; f < nf; f++) {
            if (fe->fbank[(size_t)f * nm + mi] != 0.0f) {
                if (lo == nf) lo = f;
                hi = f + 1u;
            }
        }
        if (lo == nf) lo = 0; /* an empty band: [0, 0) */
        ranges[2u * mi] = (float)lo;
        ranges[2u * mi + 1u] = (float)hi;
    }
}

void kwsn_frontend_run(const kwsn_frontend *fe, const float *wave, uint32_t n_samples,
                       float *scratch, float *out) {
    const uint32_t n = fe->n_fft, nm = fe->n_mels, no = fe->n_out;
    const uint32_t T = kwsn_frontend_frames(fe, n_samples);
    const int64_t pad = fe->center ? (int64_t)(n / 2u) : 0;
    const int64_t last = (int64_t)n_samples - 1;
    float *buf = scratch + 2u * (size_t)n;
    float *power = buf + 4u * (size_t)fe_cfft_len(n);
    float *log_mel = power + fe_n_freqs(fe);
    float *ranges = log_mel + nm;
    const int odd = (int)(n % 2u);
    kwsn_frontend_twiddles(fe, scratch);
    fe_ranges(fe, ranges);
    for (uint32_t t = 0; t < T; t++) {
        const int64_t start = (int64_t)t * fe->hop_length - pad;
        for (uint32_t j = 0; j < n; j++) {
            int64_t idx = start + j;
            float v;
            /* reflect padding (torch pad_mode "reflect"): x[-i] = x[i], x[L-1+i] = x[L-1-i];
             * one reflection suffices as check() ensures pad < n_samples */
            if (idx < 0) idx = -idx;
            if (idx > last) idx = 2 * last - idx;
            v = wave[idx] * fe->window[j];
            if (odd) {
                buf[2u * j] = v;
                buf[2u * j + 1u] = 0.0f;
            } else {
                buf[j] = v;
            }
        }
        fe_power(fe, scratch, power);
        fe_log_mel(fe, power, ranges, log_mel);
        if (fe->dct) {
            for (uint32_t c = 0; c < no; c++) {
                double acc = 0.0;
                for (uint32_t mi = 0; mi < nm; mi++)
                    acc += (double)log_mel[mi] * (double)fe->dct[(size_t)mi * no + c];
                out[(size_t)c * T + t] = (float)acc;
            }
        } else {
            for (uint32_t c = 0; c < nm; c++) out[(size_t)c * T + t] = log_mel[c];
        }
    }
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
