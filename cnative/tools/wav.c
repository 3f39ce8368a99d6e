#include "wav.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t le32(const uint8_t *b) {
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

static uint16_t le16(const uint8_t *b) { return (uint16_t)(b[0] | (b[1] << 8)); }

#define FAIL(...)                                 \
    do {                                          \
        snprintf(err, err_cap, __VA_ARGS__);      \
        goto fail;                                \
    } while (0)

int kwsn_wav_read(const char *path, float **samples, size_t *n_samples, uint32_t *sample_rate,
                  char *err, size_t err_cap) {
    uint8_t *buf = NULL;
    *samples = NULL;
    *n_samples = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_cap, "%s: cannot open", path);
        return 1;
    }
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 12 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        snprintf(err, err_cap, "%s: not a WAV file (too short)", path);
        return 1;
    }
    buf = (uint8_t *)malloc((size_t)size);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        snprintf(err, err_cap, "%s: read failed", path);
        free(buf);
        return 1;
    }
    fclose(f);
    int rc = kwsn_wav_parse(buf, (size_t)size, path, samples, n_samples, sample_rate, err, err_cap);
    free(buf);
    return rc;
}

int kwsn_wav_parse(const uint8_t *buf, size_t len, const char *path, float **samples,
                   size_t *n_samples, uint32_t *sample_rate, char *err, size_t err_cap) {
    float *out = NULL;
    *samples = NULL;
    *n_samples = 0;
    if (len < 12) FAIL("%s: not a WAV file (too short)", path);
    if (memcmp(buf, "RIFF", 4) != 0 || memcmp(buf + 8, "WAVE", 4) != 0)
        FAIL("%s: not a RIFF/WAVE file", path);
    uint16_t fmt_tag = 0, channels = 0, bits = 0;
    uint32_t rate = 0;
    const uint8_t *data = NULL;
    size_t data_len = 0;
    for (size_t pos = 12; pos + 8 <= len;) {
        const uint8_t *ck = buf + pos;
        const uint32_t declared = le32(ck + 4);
        size_t ck_len = declared;
        if (ck_len > len - pos - 8) {
            /* A data chunk must be whole (a cut-off recording is refused, as kwsnet's
             * read_audio does); 0xFFFFFFFF is a streaming writer's "unknown size": the rest of
             * the file. A short trailing chunk of another kind is tolerated. */
            if (memcmp(ck, "data", 4) == 0 && declared != 0xFFFFFFFFu)
                FAIL("%s: truncated: its data chunk declares %lu bytes, %lu are there", path,
                     (unsigned long)declared, (unsigned long)(len - pos - 8));
            ck_len = len - pos - 8;
        }
        if (memcmp(ck, "fmt ", 4) == 0) {
            if (ck_len < 16) FAIL("%s: fmt chunk too short", path);
            fmt_tag = le16(ck + 8);
            channels = le16(ck + 10);
            rate = le32(ck + 12);
            bits = le16(ck + 22);
            if (fmt_tag == 0xFFFE) {
                if (ck_len < 26) FAIL("%s: WAVE_FORMAT_EXTENSIBLE fmt chunk too short", path);
                fmt_tag = le16(ck + 8 + 24); /* first two bytes of the SubFormat GUID */
            }
        } else if (memcmp(ck, "data", 4) == 0) {
            data = ck + 8;
            data_len = ck_len;
        }
        pos += 8 + ck_len + (ck_len & 1u);
    }
    if (!fmt_tag) FAIL("%s: no fmt chunk", path);
    if (!data) FAIL("%s: no data chunk", path);
    if (channels != 1) FAIL("%s: %u channels; the model takes mono audio", path, channels);
    size_t n;
    /* n <= data_len / 2 floats: no more than 2 * len bytes, which can wrap a 32-bit size_t */
    if (data_len / 2 > SIZE_MAX / sizeof(float)) FAIL("%s: too large for this build", path);
    if (fmt_tag == 1 && bits == 16) {
        n = data_len / 2;
        out = (float *)malloc((n ? n : 1) * sizeof(float));
        if (!out) FAIL("%s: out of memory", path);
        for (size_t i = 0; i < n; i++) out[i] = (float)(int16_t)le16(data + 2 * i) / 32768.0f;
    } else if (fmt_tag == 3 && bits == 32) {
        n = data_len / 4;
        out = (float *)malloc((n ? n : 1) * sizeof(float));
        if (!out) FAIL("%s: out of memory", path);
        for (size_t i = 0; i < n; i++) {
            uint32_t u = le32(data + 4 * i);
            memcpy(&out[i], &u, 4);
        }
    } else {
        FAIL("%s: unsupported WAV encoding (format %u, %u bits); use 16-bit PCM or 32-bit float",
             path, fmt_tag, bits);
    }
    *samples = out;
    *n_samples = n;
    *sample_rate = rate;
    return 0;
fail:
    free(out);
    return 1;
}

size_t kwsn_wav_nonfinite(const float *x, size_t n, size_t *first) {
    size_t i, count = 0;
    for (i = 0; i < n; i++) {
        if (isfinite(x[i])) continue;
        if (count++ == 0 && first) *first = i;
    }
    return count;
}
