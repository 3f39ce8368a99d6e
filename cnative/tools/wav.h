/* Minimal WAV reader for the CLI: mono 16-bit PCM or 32-bit IEEE float (plain or
 * WAVE_FORMAT_EXTENSIBLE). Samples come back as float32 in [-1, 1) (int16 / 32768, as
 * soundfile and torchaudio do); a float file's samples as stored, NaN and Inf included (the
 * tools decide: kwsnet-infer refuses such a clip, kwsnet-stream skips the windows holding
 * them). A data chunk that declares more bytes than the file holds is refused ("truncated",
 * both counts in the message) unless it declares 0xFFFFFFFF (a streaming writer's unknown
 * size: the rest of the file), as kwsnet/data/audio.py's read_audio does. */
#ifndef KWSN_WAV_H
#define KWSN_WAV_H

#include <stddef.h>
#include <stdint.h>

/* Returns 0 and a malloc'd *samples on success; otherwise non-zero with a message in err. */
int kwsn_wav_read(const char *path, float **samples, size_t *n_samples, uint32_t *sample_rate,
                  char *err, size_t err_cap);
/* The same on a WAV file held in memory (name is used in messages only). */
int kwsn_wav_parse(const uint8_t *buf, size_t len, const char *name, float **samples,
                   size_t *n_samples, uint32_t *sample_rate, char *err, size_t err_cap);
/* How many of x[0..n) are NaN or infinite; the first one's index in *first (if any, and
 * first is not NULL). */
size_t kwsn_wav_nonfinite(const float *x, size_t n, size_t *first);

#endif
