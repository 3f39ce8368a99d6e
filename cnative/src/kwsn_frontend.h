/* Private: the log-mel / MFCC front end of format-v2 models, as kwsnet.data.features.LogMel
 * and MFCC compute it (torch.stft with a periodic Hann window, onesided power spectrum
 * re^2 + im^2, torchaudio.functional.melscale_fbanks, log(mel + eps), an optional orthonormal
 * DCT-II, per-utterance mean / mean-and-variance normalisation over the clip's frames).
 *
 * The window, the filterbank and the DCT matrix come from the model file (computed by
 * torchaudio at export, kwsnet/export/frontend.py), so the C side only frames, transforms
 * and sums. Pure functions: no allocation, no state; every buffer is caller-owned scratch.
 *
 * Layout: the output is channel-major, out[c * n_frames + t] (c < n_out), which is the
 * [C, L] layout the Conv1d kernels read (a mel model transposes [T, F] -> [F, T] first). */
#ifndef KWSN_FRONTEND_H
#define KWSN_FRONTEND_H

#include <stddef.h>
#include <stdint.h>

#include "kwsnet.h"

/* Normalisation over the clip's frames, as LogMel(normalize=...). */
enum { KWSN_FE_NORM_NONE = 0, KWSN_FE_NORM_MEAN = 1, KWSN_FE_NORM_MEANVAR = 2 };

/* Largest n_fft (and n_mels) kwsn_frontend_check accepts. */
#define KWSN_FE_MAX_NFFT 65536u

typedef struct {
    uint32_t n_fft;      /* FFT size (any size >= 2; 480 = 2^5 * 3 * 5 in the shipped configs) */
    uint32_t hop_length; /* samples between frames */
    uint32_t n_mels;     /* mel bands */
    uint32_t n_out;      /* output width: n_mels (log-mel) or n_mfcc (dct != NULL) */
    uint32_t center;     /* 1: reflect-pad n_fft / 2 samples on both sides (torch.stft) */
    uint32_t normalize;  /* KWSN_FE_NORM_* */
    float eps;           /* log(mel + eps) */
    const float *window; /* [n_fft]: torch's window, zero-padded to n_fft as torch.stft does */
    const float *fbank;  /* [n_fft / 2 + 1][n_mels], melscale_fbanks' layout */
    const float *dct;    /* [n_mels][n_out] (create_dct, norm "ortho"), or NULL for log-mel */
} kwsn_frontend;

/* Check the parameters for an n_samples input: KWSN_OK, KWSN_ERR_ARG (fe, window or fbank
 * NULL), KWSN_ERR_PARAM (a bad field: n_fft < 2 or > KWSN_FE_MAX_NFFT, hop_length 0, n_mels 0,
 * n_out != n_mels without dct or not in 1..n_mels with it, center or normalize out of range,
 * eps <= 0),
 * KWSN_ERR_SHAPE (too short for one frame, or n_samples <= n_fft / 2 with center, where
 * reflect padding is undefined), KWSN_ERR_TOO_BIG (2^32 frames or more: hop 1 on a 2^32 - 1
 * sample input) or KWSN_ERR_NONFINITE (eps or a table value is NaN / Inf). */
kwsn_status kwsn_frontend_check(const kwsn_frontend *fe, uint32_t n_samples);

/* Frames for n_samples, torch.stft's count: (n_samples + 2 * pad - n_fft) / hop + 1 with
 * pad = center ? n_fft / 2 : 0 (center: n_samples / hop + 1 for even n_fft,
 * (n_samples - 1) / hop + 1 for odd), 0 when the input is shorter than one frame
 * (saturates at UINT32_MAX, which kwsn_frontend_check refuses). */
uint32_t kwsn_frontend_frames(const kwsn_frontend *fe, uint32_t n_samples);

/* Scratch floats kwsn_frontend_run needs for n_samples (twiddles, two FFT buffers, the power
 * spectra and log-mels of the frames transformed together, each band's filter range; frames
 * are read from wave with the reflect padding applied on the fly, so it does not grow with
 * n_samples). Sized for the widest lane batch this build can run, whichever a call picks
 * (KWSN_ISA): 16 frames on x86 with GCC / clang (20 896 floats for the shipped 480 / 40-mel
 * config), 4 with other GCC / clang targets (6004 floats), 1 in a plain-C build. Any 4-byte
 * alignment. */
size_t kwsn_frontend_scratch_floats(const kwsn_frontend *fe, uint32_t n_samples);

/* Arithmetic operations of one run on n_samples (counted against kwsn_limits.max_ops): an
 * upper bound, multiplies and adds 1 each, a libm call (log, sin, cos, sqrt) 20, the mel
 * product counted dense, the frames rounded up to whole batches of the widest lanes (16 on
 * x86), whichever width a call runs. */
uint64_t kwsn_frontend_ops(const kwsn_frontend *fe, uint32_t n_samples);

/* One frame: n_fft samples (already padded/positioned) -> n_mels values log(mel + eps), before
 * any DCT or normalisation. The streaming path calls this per hop. scratch:
 * kwsn_frontend_frame_scratch_floats(fe) floats. Computes the twiddles each call; a caller that
 * keeps its scratch across hops calls kwsn_frontend_twiddles once and kwsn_frontend_frame_tw
 * per hop (same bits). */
void kwsn_frontend_frame(const kwsn_frontend *fe, const float *frame, float *scratch,
                         float *log_mel);

/* Scratch floats of kwsn_frontend_frame / kwsn_frontend_frame_tw (<= the run's). */
size_t kwsn_frontend_frame_scratch_floats(const kwsn_frontend *fe);

/* Fill the twiddle table at the start of scratch (2 * n_fft floats). */
void kwsn_frontend_twiddles(const kwsn_frontend *fe, float *scratch);

/* kwsn_frontend_frame with the twiddles already in scratch (kwsn_frontend_twiddles). */
void kwsn_frontend_frame_tw(const kwsn_frontend *fe, const float *frame, float *scratch,
                            float *log_mel);

/* A whole clip: wave[n_samples] -> out[n_out * n_frames] channel-major, normalised.
 * scratch: kwsn_frontend_scratch_floats(fe, n_samples) floats. Assumes kwsn_frontend_check
 * returned KWSN_OK. Fills the scratch's twiddles and filter ranges itself (as
 * kwsn_frontend_prepare) on every call. Frames run W at a time, one per vector lane: W = 4,
 * and on x86 (GCC / clang) 8 with AVX2 and 16 with AVX-512F, picked on every call from
 * KWSN_ISA as the kernels read it ("default" 4, "avx2" / "avxvnni" 8, "avx512*" 16, where the
 * CPU has the ISA; unset or other: the widest the CPU has). Every width gives the same bits. */
void kwsn_frontend_run(const kwsn_frontend *fe, const float *wave, uint32_t n_samples,
                       float *scratch, float *out);

/* kwsn_frontend_run on a scratch that kwsn_frontend_prepare filled for this fe: the twiddles
 * and ranges computed once, at prepare, not per call (a run writes only the scratch's FFT,
 * power and log-mel areas, so runs can follow each other on one scratch). Same bits. */
void kwsn_frontend_run_prepared(const kwsn_frontend *fe, const float *wave, uint32_t n_samples,
                                float *scratch, float *out);

/* The read-only tables kwsn_frontend_prepare puts in a scratch (the twiddles, 2 n_fft floats,
 * and the mel bands' filter ranges, 2 n_mels), kept apart: a model fills them once
 * (kwsn_model_set_tables) and each run copies them into its arena's scratch, which other
 * layers reuse between runs. kwsn_frontend_run_tables: kwsn_frontend_run with the tables
 * from kwsn_frontend_fill_tables instead of computing them, at the lane width of kernel path
 * isa (the model's, fixed when it was prepared, as its kernels are; NULL: the widest the CPU
 * has) instead of KWSN_ISA read per call; the same bits. */
size_t kwsn_frontend_tables_floats(const kwsn_frontend *fe);
void kwsn_frontend_fill_tables(const kwsn_frontend *fe, float *tables);
void kwsn_frontend_run_tables(const kwsn_frontend *fe, const float *tables, const char *isa,
                              const float *wave, uint32_t n_samples, float *scratch, float *out);

/* Per-utterance normalisation (fe->normalize) of out[n_out * T], channel-major, in place:
 * the last step of kwsn_frontend_run, for a caller that assembles the frames itself. */
void kwsn_frontend_normalize(const kwsn_frontend *fe, float *out, uint32_t T);

/* Fill the twiddles and the mel bands' filter ranges into scratch
 * (kwsn_frontend_scratch_floats floats), once, for kwsn_frontend_frames_at calls that reuse
 * it (kwsn_frontend_run does it itself on every call). */
void kwsn_frontend_prepare(const kwsn_frontend *fe, float *scratch);

/* Frames [t0, t0 + count) of wave[n_samples] (the reflect padding applied as
 * kwsn_frontend_run applies it) -> their features before normalisation (log-mel, or the DCT
 * of it), frame-major: out[i * n_out + c]. The same bits as those frames' columns of
 * kwsn_frontend_run's output before kwsn_frontend_normalize (the batching into vector lanes,
 * at any width, does not change a frame's arithmetic). scratch: kwsn_frontend_scratch_floats floats, filled
 * by kwsn_frontend_prepare. The streaming frame cache computes only the new frames of each
 * window with it. */
void kwsn_frontend_frames_at(const kwsn_frontend *fe, const float *wave, uint32_t n_samples,
                             uint32_t t0, uint32_t count, float *scratch, float *out);

/* Implemented in kwsn_model.c: layer 0's front end of a model whose layer 0 is a FrontEnd
 * (float or int8) that no other layer reads the audio past, KWSN_OK; KWSN_ERR_ARG
 * otherwise (or when the front end is not linked in). */
kwsn_status kwsn_model_frontend(const kwsn_model *model, kwsn_frontend *fe);

/* The onesided power spectrum |rfft(frame * window)|^2 of one frame, power[n_fft / 2 + 1]
 * (the FFT step alone, for the golden tests and per-step parity). scratch as
 * kwsn_frontend_frame's. */
void kwsn_frontend_power(const kwsn_frontend *fe, const float *frame, float *scratch,
                         float *power);

#endif
