/* Stream sizing and bad-audio check, built with -fsanitize=address,undefined (also -m32 by
 * `make sanitize32`, where size_t is 32 bits):
 *
 *   stream_check [--smooth N] [--max-arena-bytes N] MODEL...
 *
 * For each model file: load it (under the limits), size a stream (kwsn_stream_size, default
 * config but smooth_windows N and a hop of a quarter window), and print one line:
 *
 *   <file>: load: <status>                          the loader refused it
 *   <file>: stream: <status>: <message>             kwsn_stream_size refused it (nothing
 *                                                    was allocated)
 *   <file>: ok <bytes> bytes, <w> windows, <k> skipped
 *
 * for a stream it could size: storage of exactly that many bytes is malloc'd, then W + 3 hops
 * of a signal with one NaN at sample hop / 2 are pushed (the windows holding it are skipped),
 * then the stream is flushed. A wrong size (a wrapped multiplication) shows as an ASan
 * heap-buffer-overflow; a size that should have been refused as an allocation ASan refuses
 * (run it with ASAN_OPTIONS=max_allocation_size_mb=...). Exit 0 unless a sanitizer aborts. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kwsnet.h"
#include "kwsnet_stream.h"

static int failed;

/* One stream of model m with config cfg in malloc'd storage of exactly its size; NULL when it
 * cannot be sized. */
static kwsn_stream *open_stream(const kwsn_model *m, const kwsn_stream_config *cfg,
                                const kwsn_limits *limits, void **storage) {
    size_t bytes = 0;
    kwsn_stream *st = NULL;
    *storage = NULL;
    if (kwsn_stream_size(m, cfg, limits, &bytes, NULL, 0) != KWSN_OK) return NULL;
    *storage = malloc(bytes);
    if (!*storage || kwsn_stream_init(*storage, bytes, m, cfg, &st) != KWSN_OK) return NULL;
    return st;
}

/* The incremental path (frame_cache 1) against the frame cache alone: equal scores. */
static void compare_one(const char *path, const kwsn_model *m, kwsn_stream_config cfg,
                        const kwsn_limits *limits, void *arena, size_t arena_bytes) {
    kwsn_stream_config c2 = cfg;
    void *sa = NULL, *sb = NULL;
    kwsn_stream *a, *b;
    kwsn_detection out[4];
    size_t n_out = 0, w = kwsn_input_len(m), hop = cfg.hop_samples, n = w + 12u * hop, i;
    size_t C = kwsn_n_classes(m);
    uint64_t k = 0;
    float *x = (float *)calloc(n, sizeof(float));
    cfg.frame_cache = 1u;
    c2.frame_cache = KWSN_STREAM_CACHE_ONLY;
    a = open_stream(m, &cfg, limits, &sa);
    b = open_stream(m, &c2, limits, &sb);
    if (!x || !a || !b) {
        printf("%s: compare: cannot open the streams\n", path);
        failed = 1;
        goto done;
    }
    for (i = 0; i < n; i++) x[i] = 0.25f * (float)sin(0.05 * (double)i + 1e-6 * (double)i * i);
    x[w + hop / 2u] = NAN;
    for (i = 0; i < n;) {
        size_t m_push = i == 0 ? w : hop;
        if (i + m_push > n) break;
        if (kwsn_stream_push(a, x + i, m_push, arena, arena_bytes, out, 4, &n_out) != KWSN_OK ||
            kwsn_stream_push(b, x + i, m_push, arena, arena_bytes, out, 4, &n_out) != KWSN_OK) {
            printf("%s: compare: push failed\n", path);
            failed = 1;
            goto done;
        }
        i += m_push;
        if (memcmp(kwsn_stream_scores(a), kwsn_stream_scores(b), C * sizeof(double)) != 0) {
            printf("%s: compare: scores differ at window %llu\n", path, (unsigned long long)k);
            failed = 1;
            goto done;
        }
        k++;
    }
    printf("%s: compare: incremental %d, %llu windows, scores equal\n", path,
           kwsn_stream_incremental(a), (unsigned long long)k);
done:
    free(x);
    free(sa);
    free(sb);
}

static void check_one(const char *path, uint32_t smooth, const kwsn_limits *limits,
                      int compare) {
    kwsn_loaded *lm = NULL;
    kwsn_stream_config cfg = kwsn_stream_default_config();
    kwsn_stream *st = NULL;
    kwsn_detection out[8];
    char msg[256];
    size_t bytes = 0, n_out = 0, w, hop, i, n, arena_bytes;
    void *storage = NULL, *arena_raw = NULL, *arena;
    float *x = NULL;
    kwsn_status s = kwsn_load_file_ex(path, limits, &lm);
    if (s != KWSN_OK) {
        printf("%s: load: %s\n", path, kwsn_status_str(s));
        return;
    }
    const kwsn_model *m = kwsn_loaded_model(lm);
    w = kwsn_input_len(m);
    hop = w / 4u ? w / 4u : 1u;
    cfg.hop_samples = (uint32_t)hop;
    cfg.smooth_windows = smooth;
    cfg.refractory_ms = 0.0;
    cfg.sample_rate = kwsn_sample_rate(m) ? 0u : 16000u;
    s = kwsn_stream_size(m, &cfg, limits, &bytes, msg, sizeof msg);
    if (s != KWSN_OK) {
        printf("%s: stream: %s: %s\n", path, kwsn_status_str(s), msg);
        kwsn_free(lm);
        return;
    }
    arena_bytes = kwsn_arena_bytes(m);
    n = w + 3u * hop;
    storage = malloc(bytes);
    arena_raw = malloc(arena_bytes + KWSN_ARENA_ALIGN);
    x = (float *)calloc(n, sizeof(float));
    if (!storage || !arena_raw || !x) {
        printf("%s: out of memory\n", path);
        goto done;
    }
    arena = (void *)(((uintptr_t)arena_raw + KWSN_ARENA_ALIGN - 1u) &
                     ~(uintptr_t)(KWSN_ARENA_ALIGN - 1u));
    for (i = 0; i < n; i++) x[i] = 0.25f * (float)sin(0.05 * (double)i);
    x[hop / 2u] = NAN;
    s = kwsn_stream_init(storage, bytes, m, &cfg, &st);
    if (s == KWSN_OK)
        s = kwsn_stream_push(st, x, n, arena, arena_bytes, out, sizeof out / sizeof out[0],
                             &n_out);
    if (s == KWSN_OK) s = kwsn_stream_flush(st, arena, arena_bytes, out, 1, &n_out);
    if (s == KWSN_OK && compare) compare_one(path, m, cfg, limits, arena, arena_bytes);
    if (s != KWSN_OK)
        printf("%s: run: %s\n", path, kwsn_status_str(s));
    else
        printf("%s: ok %zu bytes, %llu windows, %llu skipped\n", path, bytes,
               (unsigned long long)kwsn_stream_windows(st),
               (unsigned long long)kwsn_stream_nonfinite_windows(st));
done:
    free(x);
    free(arena_raw);
    free(storage);
    kwsn_free(lm);
}

int main(int argc, char **argv) {
    kwsn_limits limits = kwsn_default_limits();
    uint32_t smooth = 3u;
    int i = 1, compare = 0;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        unsigned long long v = strtoull(argv[i + 1], NULL, 10);
        if (!strcmp(argv[i], "--smooth"))
            smooth = (uint32_t)v;
        else if (!strcmp(argv[i], "--compare"))
            compare = v != 0;
        else if (!strcmp(argv[i], "--max-arena-bytes"))
            limits.max_arena_bytes = v > (unsigned long long)SIZE_MAX ? SIZE_MAX : (size_t)v;
        else
            break;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: stream_check [--smooth N] [--max-arena-bytes N] [--compare 1] "
                        "MODEL...\n");
        return 2;
    }
    for (; i < argc; i++) check_one(argv[i], smooth, &limits, compare);
    return failed;
}
