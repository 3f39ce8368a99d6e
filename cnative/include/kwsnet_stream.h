/*
 * kwsnet C runtime: streaming keyword detection over a continuous signal.
 *
 * C99, libc + libm only, no malloc. The same detector as kwsnet/detect/detector.py, decision
 * for decision:
 *
 *   - windows of the model's input length W start at sample 0, hop_samples apart; a window is
 *     scored once all its samples are pushed (a trailing part shorter than a hop never makes
 *     a window). A stream shorter than one window gets one window at 0, zero-padded, scored
 *     by kwsn_stream_flush (the only thing flush does: Python pads such a waveform).
 *   - each window's logits -> kwsn_softmax -> posteriors (float32, widened to double);
 *   - bad audio: a window holding a NaN or infinite sample is not run, and a window whose
 *     posteriors are not all finite is not used: such a window is skipped (counted by
 *     kwsn_stream_nonfinite_windows, its scores NaN, every streak reset to 0, no detection);
 *     it never reaches the smoothing, so one bad sample costs only the windows holding it;
 *   - smoothed score = causal moving average over the last smooth_windows windows, the
 *     current one included (fewer at the start; skipped ones left out): the mean of their
 *     posteriors, kept in a ring of smooth_windows x n_classes floats, summed oldest first in
 *     float64 and divided by their count (the order kwsnet/detect/detector.py sums in, so
 *     the scores are the same bits given the same posteriors);
 *   - a keyword class is "above" when its smoothed score >= its threshold; its streak counts
 *     consecutive windows above; it is "ready" when the streak >= patience. In a window with
 *     a ready keyword and no detection within refractory_ms before it (times compared in
 *     seconds, as float64, like Python), the ready keyword with the highest score fires
 *     (the lowest class index on ties), and every streak is reset to 0;
 *   - a detection's time is the window centre (start + W / 2) / sample_rate seconds, its
 *     score the smoothed posterior. Classes with is_keyword[c] == 0 (_unknown_, _silence_:
 *     class names are not in the model file, so the caller passes the mask) never fire.
 *
 * Cost: a raw-audio model runs whole on every window (kwsn_forward): its first conv sees
 * every sample. A model whose layer 0 is the log-mel / MFCC FrontEnd keeps its frames (the
 * frame cache, on by default): when hop_samples is a multiple of the front end's hop_length,
 * a frame that lies wholly inside the window (no reflect padding) is the same frame of the
 * signal in every window that holds it, so each window computes only its hop_samples /
 * hop_length new frames plus the few edge frames the padding changes, normalises over the
 * window's frames as the front end does, and runs the rest of the model on them
 * (kwsn_forward_features). The features, hence the scores and detections, are the same bits
 * as without the cache (tested); the network after the front end still runs per window.
 *
 * Flow:
 *   kwsn_stream_config cfg = kwsn_stream_default_config();   (then set hop, mask, ...)
 *   kwsn_stream_size(model, &cfg, &limits, &bytes, msg, sizeof msg)   which field is wrong,
 *                                                or the storage size, within the limits
 *   storage of that many bytes, 8-byte aligned (a uint64_t array)
 *   kwsn_stream_init(storage, bytes, model, &cfg, &stream)   copies the config and mask
 *   kwsn_stream_push(stream, samples, n, arena, ...)          any n, as often as needed
 *   kwsn_stream_flush(stream, arena, ...)                     at the end of the stream
 *   kwsn_stream_reset(stream)                                  to start a new stream
 * The model must outlive the stream; one stream per thread (the arena is the caller's).
 */
#ifndef KWSNET_STREAM_H
#define KWSNET_STREAM_H
#include <stddef.h>
#include <stdint.h>

#include "kwsnet.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest smooth_windows and patience accepted (bounds the state size). */
#define KWSN_STREAM_MAX_SMOOTH 4096u
/* kwsn_stream_config.frame_cache: the frame cache without the incremental path (benchmarks). */
#define KWSN_STREAM_CACHE_ONLY 2u
#define KWSN_STREAM_MAX_PATIENCE 1000000u
/* Stream storage must be aligned to this many bytes. */
#define KWSN_STREAM_ALIGN 8u

typedef struct {
    uint32_t hop_samples;     /* step between windows in samples, >= 1 (see kwsn_stream_hop) */
    uint32_t smooth_windows;  /* moving average length in windows, 1..KWSN_STREAM_MAX_SMOOTH */
    double threshold;         /* smoothed posterior a keyword must reach (not NaN) */
    const double *thresholds; /* n_classes per-class thresholds overriding it, or NULL */
    uint32_t patience;        /* consecutive windows at or above, 1..KWSN_STREAM_MAX_PATIENCE */
    double refractory_ms;     /* no detection this long after one, >= 0 and finite */
    const uint8_t *is_keyword; /* n_classes flags (0: never fires), or NULL: every class */
    uint32_t sample_rate;     /* Hz of the pushed audio; 0: the model's; must equal the
                                 model's when the model file states one */
    uint32_t frame_cache;     /* 1 (default): keep a FrontEnd model's frames across windows
                                 where possible (see Cost), and run a streamable model
                                 incrementally (kwsn_stream_incremental); 0: recompute every
                                 window; KWSN_STREAM_CACHE_ONLY: the frame cache, never the
                                 incremental path */
} kwsn_stream_config;

typedef struct {
    double time;          /* seconds from the stream start to the window centre */
    double score;         /* smoothed posterior of the keyword */
    uint64_t start;       /* first sample of the window that fired */
    uint32_t class_index; /* the keyword's class index in the model's output */
} kwsn_detection;

typedef struct kwsn_stream kwsn_stream;

/* Python's defaults (DetectorConfig): 100 ms hop at 16 kHz, smooth 3, threshold 0.5,
 * patience 1, refractory 1000 ms, every class a keyword, the model's sample rate; the
 * frame cache on. */
kwsn_stream_config kwsn_stream_default_config(void);
/* hop_ms at sample_rate in samples as Python computes it: max(1, round(hop_ms * sr / 1000))
 * with round half to even; 0 if hop_ms is not a positive finite number or too large. */
uint32_t kwsn_stream_hop(double hop_ms, uint32_t sample_rate);
/* KWSN_OK, or KWSN_ERR_ARG with "field: value, expected ..." in msg (msg may be NULL). */
kwsn_status kwsn_stream_check(const kwsn_model *model, const kwsn_stream_config *cfg,
                              char *msg, size_t msg_cap);
/* The storage kwsn_stream_init needs, in *bytes, computed from the model's shapes and the
 * config alone (nothing is allocated; overflow-checked size_t arithmetic). KWSN_OK; else
 * *bytes = 0 and, with a message in msg (may be NULL): kwsn_stream_check's KWSN_ERR_ARG,
 * KWSN_ERR_TOO_BIG when the size does not fit size_t (a 32-bit target), KWSN_ERR_STREAM_LIMIT
 * when it exceeds limits->max_arena_bytes (limits NULL or the field 0:
 * KWSN_DEFAULT_MAX_ARENA_BYTES), the bound the loader puts on the model's arena: a tiny
 * model file asking for a window or class count that needs gigabytes gets a status. */
kwsn_status kwsn_stream_size(const kwsn_model *model, const kwsn_stream_config *cfg,
                             const kwsn_limits *limits, size_t *bytes, char *msg,
                             size_t msg_cap);
/* kwsn_stream_size under the default limits; 0 where it refuses. */
size_t kwsn_stream_bytes(const kwsn_model *model, const kwsn_stream_config *cfg);
/* Set up a stream in storage. KWSN_ERR_STORAGE: storage too small or misaligned;
 * KWSN_ERR_ARG: a NULL pointer or a config kwsn_stream_check refuses; KWSN_ERR_TOO_BIG: the
 * size does not fit size_t. (The limits are kwsn_stream_size's business: the storage here is
 * already the caller's.) */
kwsn_status kwsn_stream_init(void *storage, size_t storage_bytes, const kwsn_model *model,
                             const kwsn_stream_config *cfg, kwsn_stream **stream);
/* Back to an empty stream (same model and config). */
void kwsn_stream_reset(kwsn_stream *stream);
/* Windows that pushing n more samples would score (an upper bound on the detections). */
size_t kwsn_stream_pending_hops(const kwsn_stream *stream, size_t n);
/* Push samples[0..n) (n may be 0; samples may be NULL then). Every window completed is
 * scored in arena (kwsn_arena_bytes(model), KWSN_ARENA_ALIGN aligned) and the detections go
 * to out[0..*n_out). Before consuming anything it refuses (state unchanged): KWSN_ERR_ARENA
 * for a small or misaligned arena, KWSN_ERR_ARG for NULL pointers, after a flush, or when
 * out_cap < kwsn_stream_pending_hops(stream, n) (so no detection can be lost). Any other
 * non-OK status is kwsn_forward's (cannot happen with a checked arena): reset the stream. */
kwsn_status kwsn_stream_push(kwsn_stream *stream, const float *samples, size_t n, void *arena,
                             size_t arena_bytes, kwsn_detection *out, size_t out_cap,
                             size_t *n_out);
/* End of stream: if no window was scored (fewer than W samples pushed), score the one
 * zero-padded window at 0, as Python does; otherwise nothing. Pushing after a flush is
 * refused until kwsn_stream_reset. out_cap >= 1 is enough. */
kwsn_status kwsn_stream_flush(kwsn_stream *stream, void *arena, size_t arena_bytes,
                              kwsn_detection *out, size_t out_cap, size_t *n_out);
/* Counters: samples pushed, windows reached (scored or skipped), windows skipped for a
 * non-finite sample or posterior (since the last reset). */
uint64_t kwsn_stream_samples(const kwsn_stream *stream);
uint64_t kwsn_stream_windows(const kwsn_stream *stream);
uint64_t kwsn_stream_nonfinite_windows(const kwsn_stream *stream);
/* 1 when the stream keeps front-end frames across windows (the model's layer 0 is a
 * FrontEnd, hop_samples a multiple of its hop_length, frame_cache on), else 0. */
int kwsn_stream_frame_cached(const kwsn_stream *stream);
/* Front-end frames computed by the frame cache so far (0 without it): per window after the
 * first, hop_samples / hop_length new ones plus the edge frames. */
uint64_t kwsn_stream_frames_computed(const kwsn_stream *stream);
/* 1 when the stream runs the model incrementally (docs/streaming.md, "Incremental
 * streaming"): a float model of FrontEnd (no centring, normalize none), valid stride-1
 * Conv1dEx / ReLU layers each reading the previous one down to a [C, 1] output, [Flatten,]
 * Linear, with the frame cache on (frame_cache 1): each window computes only the new columns
 * of each layer, the same values as the whole model on the window. Else 0. */
int kwsn_stream_incremental(const kwsn_stream *stream);
/* The latest window's smoothed scores (n_classes doubles; non-keywords too; NaN when it was
 * skipped), or NULL before the first window. For tests and tuning. */
const double *kwsn_stream_scores(const kwsn_stream *stream);

#ifdef __cplusplus
}
#endif
#endif /* KWSNET_STREAM_H */
