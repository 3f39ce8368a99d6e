/* kwsnet-stream: keyword detection over long WAV files (include/kwsnet_stream.h).
 *
 *   kwsnet-stream [options] model.kwsn long.wav [more.wav ...]
 *
 * options (defaults: kwsnet detect's):
 *   --hop_ms MS           step between windows (100)
 *   --smooth_windows N    moving average over N windows (3)
 *   --threshold P         smoothed posterior a keyword must reach (0.5)
 *   --patience N          consecutive windows at or above the threshold (1)
 *   --refractory_ms MS    no detection this long after one (1000)
 *   --keywords 0,1,1,...  one flag per class: 0 never fires (_unknown_, _silence_); default
 *                         every class (the model file holds no class names)
 *   --chunk N             samples per push (1600; any size gives the same detections)
 *   --no_frame_cache      recompute every window's front-end frames (same detections;
 *                         the cache only applies to a log-mel / MFCC model)
 *   --time                print to stderr, per file: windows scored, processor time per hop
 *                         (C clock(), so other processes' load counts less than in wall
 *                         time) and the real-time factor (processing time / audio time)
 *   --max-ops N           refuse a model whose forward pass costs more than N ops
 *   --max-arena-bytes N   refuse a model whose arena, or a stream whose storage, exceeds N
 *                         bytes (defaults as kwsnet-infer's; checked before allocating)
 *
 * stdout: CSV "file,time,keyword_index,score" (time in s, the window centre, %.3f; score the
 * smoothed posterior, %.4f). A float WAV may hold NaN / Inf samples: the windows holding them
 * are skipped (include/kwsnet_stream.h) and stderr says, per file, "warning: FILE: N
 * non-finite samples (the first at sample I), M of K windows skipped". A truncated WAV (data
 * chunk shorter than it declares) is refused. Exit status: 0 ok, 1 bad model, input or option
 * value, 2 usage.
 * Built with -DKWSN_STREAM_NO_MAIN it only defines kwsn_stream_main (for kwsnet-infer). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kwsnet.h"
#include "kwsnet_stream.h"
#include "wav.h"
#include "kwsnet_stream_tool.h"

static void usage(void) {
    fprintf(stderr, "usage: kwsnet-stream [--hop_ms MS] [--smooth_windows N] [--threshold P] "
                    "[--patience N] [--refractory_ms MS] [--keywords 0,1,...] [--chunk N] [--no_frame_cache] "
                    "[--time] [--max-ops N] [--max-arena-bytes N] "
                    "model.kwsn long.wav [more.wav ...]\n");
}

static int parse_double(const char *opt, const char *s, double *v) {
    char *end = NULL;
    *v = strtod(s, &end);
    if (!*s || *end || isnan(*v)) {
        fprintf(stderr, "error: %s: '%s' is not a number\n", opt, s);
        return 1;
    }
    return 0;
}

static int parse_u32(const char *opt, const char *s, uint32_t *v) {
    char *end = NULL;
    unsigned long long x;
    if (!*s || *s == '-') {
        fprintf(stderr, "error: %s: '%s' is not a non-negative integer\n", opt, s);
        return 1;
    }
    x = strtoull(s, &end, 10);
    if (*end || x > 0xffffffffull) {
        fprintf(stderr, "error: %s: '%s' is not an integer in 0..4294967295\n", opt, s);
        return 1;
    }
    *v = (uint32_t)x;
    return 0;
}

/* A positive integer (0 is refused: it would mean "the default"). */
static int parse_count(const char *opt, const char *s, unsigned long long max,
                       unsigned long long *v) {
    char *end = NULL;
    if (*s < '0' || *s > '9') {
        fprintf(stderr, "error: %s needs a positive integer, got '%s'\n", opt, s);
        return 1;
    }
    *v = strtoull(s, &end, 10);
    if (*end || *v == 0 || *v > max) {
        fprintf(stderr, "error: %s needs a positive integer up to %llu, got '%s'\n", opt, max,
                s);
        return 1;
    }
    return 0;
}

/* "0,1,1" -> flags; returns the count or -1. */
static long parse_mask(const char *s, uint8_t *mask, size_t cap) {
    size_t n = 0;
    const char *p = s;
    while (*p) {
        if ((*p != '0' && *p != '1') || (p[1] != ',' && p[1] != '\0') || n == cap) return -1;
        mask[n++] = (uint8_t)(*p == '1');
        p += p[1] == ',' ? 2 : 1;
    }
    return n ? (long)n : -1;
}

/* One WAV through a fresh stream; prints its detections. */
static int run_file(kwsn_stream *st, const kwsn_model *m, void *arena, size_t arena_bytes,
                    const char *path, size_t chunk, kwsn_detection *out, size_t out_cap,
                    int timing) {
    clock_t t0;
    double cpu = 0.0;
    float *x = NULL;
    size_t n = 0, i, k, n_out = 0, n_bad, first_bad = 0;
    uint32_t rate = 0;
    char err[512];
    kwsn_status s = KWSN_OK;
    if (kwsn_wav_read(path, &x, &n, &rate, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    n_bad = kwsn_wav_nonfinite(x, n, &first_bad);
    if (kwsn_sample_rate(m) != 0 && rate != kwsn_sample_rate(m)) {
        fprintf(stderr, "error: %s: %u Hz, the model expects %u Hz (resample it first)\n", path,
                rate, kwsn_sample_rate(m));
        free(x);
        return 1;
    }
    kwsn_stream_reset(st);
    for (i = 0; i < n && s == KWSN_OK; i += chunk) {
        size_t len = n - i < chunk ? n - i : chunk;
        t0 = clock();
        s = kwsn_stream_push(st, x + i, len, arena, arena_bytes, out, out_cap, &n_out);
        cpu += (double)(clock() - t0) / CLOCKS_PER_SEC;
        for (k = 0; k < n_out; k++)
            printf("%s,%.3f,%u,%.4f\n", path, out[k].time, out[k].class_index, out[k].score);
    }
    if (s == KWSN_OK) {
        s = kwsn_stream_flush(st, arena, arena_bytes, out, out_cap, &n_out);
        for (k = 0; s == KWSN_OK && k < n_out; k++)
            printf("%s,%.3f,%u,%.4f\n", path, out[k].time, out[k].class_index, out[k].score);
    }
    free(x);
    if (s != KWSN_OK) {
        fprintf(stderr, "error: %s: %s\n", path, kwsn_status_str(s));
        return 1;
    }
    if (n_bad > 0 || kwsn_stream_nonfinite_windows(st) > 0)
        fprintf(stderr,
                "warning: %s: %zu non-finite samples (the first at sample %zu), %llu of %llu "
                "windows skipped\n",
                path, n_bad, first_bad, (unsigned long long)kwsn_stream_nonfinite_windows(st),
                (unsigned long long)kwsn_stream_windows(st));
    if (timing && n > 0) {
        double w = (double)kwsn_stream_windows(st);
        fprintf(stderr, "%s: %.0f windows, %.1f us per hop (processor time), RTF %.5f (%s)\n",
                path, w, w > 0 ? cpu / w * 1e6 : 0.0, cpu / ((double)n / (double)rate),
                kwsn_isa_name(m));
    }
    return 0;
}

int kwsn_stream_main(int argc, char **argv) {
    kwsn_stream_config cfg = kwsn_stream_default_config();
    double hop_ms = 100.0;
    uint32_t chunk = 1600;
    const char *mask_arg = NULL, *model_path = NULL;
    uint8_t *mask = NULL;
    void *arena = NULL;
    uint64_t *storage = NULL;
    kwsn_detection *out = NULL;
    kwsn_loaded *lm = NULL;
    kwsn_stream *st = NULL;
    const kwsn_model *m;
    int i, rc = 0, n_files = 0, timing = 0;
    char **files = (char **)malloc(sizeof(char *) * (size_t)(argc > 0 ? argc : 1));
    kwsn_limits limits = kwsn_default_limits();
    unsigned long long count;
    size_t bytes = 0, out_cap, arena_bytes;
    char msg[256];
    kwsn_status s;
    if (!files) return 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL, *eq;
        char name[32];
        if (!strcmp(a, "--time")) {
            timing = 1;
            continue;
        }
        if (!strcmp(a, "--no_frame_cache")) {
            cfg.frame_cache = 0u;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (!model_path)
                model_path = a;
            else
                files[n_files++] = argv[i];
            continue;
        }
        eq = strchr(a, '=');
        if (eq) {
            size_t len = (size_t)(eq - a);
            if (len >= sizeof name) len = sizeof name - 1;
            memcpy(name, a, len);
            name[len] = '\0';
            v = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
            if (i + 1 >= argc) {
                fprintf(stderr, "error: %s needs a value\n", a);
                usage();
                free(files);
                return 2;
            }
            v = argv[++i];
        }
        if (!strcmp(name, "--hop_ms")) {
            if (parse_double(name, v, &hop_ms)) rc = 1;
        } else if (!strcmp(name, "--smooth_windows")) {
            if (parse_u32(name, v, &cfg.smooth_windows)) rc = 1;
        } else if (!strcmp(name, "--threshold")) {
            if (parse_double(name, v, &cfg.threshold)) rc = 1;
        } else if (!strcmp(name, "--patience")) {
            if (parse_u32(name, v, &cfg.patience)) rc = 1;
        } else if (!strcmp(name, "--refractory_ms")) {
            if (parse_double(name, v, &cfg.refractory_ms)) rc = 1;
        } else if (!strcmp(name, "--keywords")) {
            mask_arg = v;
        } else if (!strcmp(name, "--max-ops")) {
            if (parse_count(name, v, UINT64_MAX, &count))
                rc = 1;
            else
                limits.max_ops = (uint64_t)count;
        } else if (!strcmp(name, "--max-arena-bytes")) {
            if (parse_count(name, v, (unsigned long long)SIZE_MAX, &count))
                rc = 1;
            else
                limits.max_arena_bytes = (size_t)count;
        } else if (!strcmp(name, "--chunk")) {
            if (parse_u32(name, v, &chunk)) {
                rc = 1;
            } else if (chunk == 0) {
                fprintf(stderr, "error: --chunk: 0, expected >= 1\n");
                rc = 1;
            }
        } else {
            fprintf(stderr, "error: unknown option %s\n", name);
            rc = 2;
        }
        if (rc) break;
    }
    if (!rc && (!model_path || !n_files)) rc = 2;
    if (rc) {
        if (rc == 2) usage();
        free(files);
        return rc;
    }
    char why[256];
    s = kwsn_load_file_why(model_path, &limits, &lm, why, sizeof why);
    if (s != KWSN_OK) {
        fprintf(stderr, "error: %s: %s%s%s\n", model_path, kwsn_status_str(s), why[0] ? ": " : "",
                why);
        free(files);
        return 1;
    }
    m = kwsn_loaded_model(lm);
    if (kwsn_sample_rate(m) == 0) {
        fprintf(stderr, "error: %s: the model file states no sample rate\n", model_path);
        rc = 1;
        goto done;
    }
    cfg.hop_samples = kwsn_stream_hop(hop_ms, kwsn_sample_rate(m));
    if (cfg.hop_samples == 0) {
        fprintf(stderr, "error: --hop_ms: %g, expected a positive number\n", hop_ms);
        rc = 1;
        goto done;
    }
    if (mask_arg) {
        size_t C = kwsn_n_classes(m);
        long got;
        mask = (uint8_t *)malloc(C + 1);
        if (!mask) {
            rc = 1;
            goto done;
        }
        got = parse_mask(mask_arg, mask, C + 1);
        if (got != (long)C) {
            fprintf(stderr,
                    "error: --keywords: '%s', expected %zu comma-separated 0/1 flags (one per "
                    "class of %s)\n",
                    mask_arg, C, model_path);
            rc = 1;
            goto done;
        }
        cfg.is_keyword = mask;
    }
    /* the config, and the storage size within the limits, before anything is allocated */
    s = kwsn_stream_size(m, &cfg, &limits, &bytes, msg, sizeof msg);
    if (s == KWSN_ERR_ARG) {
        fprintf(stderr, "error: %s\n", msg);
        rc = 1;
        goto done;
    }
    if (s != KWSN_OK) {
        fprintf(stderr, "error: %s: %s\n", model_path, msg); /* msg says what and why */
        rc = 1;
        goto done;
    }
    arena_bytes = kwsn_arena_bytes(m); /* within limits.max_arena_bytes: checked at load */
    out_cap = (size_t)chunk / cfg.hop_samples + 2u;
    if (out_cap > SIZE_MAX / sizeof *out) {
        fprintf(stderr, "error: --chunk: %u samples per push is too many for this build\n",
                chunk);
        rc = 1;
        goto done;
    }
    storage = (uint64_t *)malloc(bytes);
    arena = malloc(arena_bytes + KWSN_ARENA_ALIGN);
    out = (kwsn_detection *)malloc(out_cap * sizeof *out);
    if (!storage || !arena || !out) {
        fprintf(stderr, "error: out of memory\n");
        rc = 1;
        goto done;
    }
    s = kwsn_stream_init(storage, bytes, m, &cfg, &st);
    if (s != KWSN_OK) {
        fprintf(stderr, "error: stream: %s\n", kwsn_status_str(s));
        rc = 1;
        goto done;
    }
    {
        void *aligned = (void *)(((uintptr_t)arena + KWSN_ARENA_ALIGN - 1u) &
                                 ~(uintptr_t)(KWSN_ARENA_ALIGN - 1u));
        printf("file,time,keyword_index,score\n");
        for (i = 0; i < n_files; i++)
            rc |= run_file(st, m, aligned, arena_bytes, files[i], chunk, out, out_cap, timing);
    }
done:
    free(out);
    free(arena);
    free(storage);
    free(mask);
    free(files);
    kwsn_free(lm);
    return rc;
}

#ifndef KWSN_STREAM_NO_MAIN
int main(int argc, char **argv) { return kwsn_stream_main(argc, argv); }
#endif
