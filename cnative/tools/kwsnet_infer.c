/* kwsnet-infer: run a kwsnet model file on WAV clips or on a raw float32 batch.
 *
 *   kwsnet-infer [options] model.kwsn clip.wav [more.wav ...]
 *   kwsnet-infer [options] model.kwsn --raw batch.f32     (N x T float32, little-endian)
 *
 * options: --softmax             print probabilities instead of logits
 *          --max-ops N           refuse a model whose forward pass costs more than N ops
 *          --max-arena-bytes N   refuse a model whose arena exceeds N bytes
 *          (defaults KWSN_DEFAULT_MAX_OPS, KWSN_DEFAULT_MAX_ARENA_BYTES: checked at load,
 *          before anything is allocated, so a hostile model file costs a status, not a hang)
 *
 * stdout: a '#' header line with the model's arena and weight bytes, op count and kernel
 * path, then one line per clip (or row): "<name> <class id> <logit 0> <logit 1> ..."
 * (probabilities with --softmax). A WAV clip must be whole (a data chunk shorter than it
 * declares is refused, naming both byte counts) and finite (NaN / Inf samples are refused,
 * as kwsnet's read_audio does). Exit status: 0 ok, 1 bad model or input, 2 usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kwsnet.h"
#include "kwsnet_stream.h"
#include "kwsnet_stream_tool.h"
#include "wav.h"

static void usage(void) {
    fprintf(stderr,
            "usage: kwsnet-infer --stream MODEL WAV... [kwsnet-stream options]\n"
            "       kwsnet-infer [--softmax] [--max-ops N] [--max-arena-bytes N] model.kwsn "
            "clip.wav [more.wav ...]\n"
            "       kwsnet-infer [options] model.kwsn --raw batch.f32\n");
}

static void print_row(const char *name, float *logits, size_t n, int softmax) {
    uint32_t cls = kwsn_argmax(logits, n);
    if (softmax) kwsn_softmax(logits, n);
    printf("%s %u", name, cls);
    for (size_t i = 0; i < n; i++) printf(" %.9g", logits[i]);
    printf("\n");
}

static int run_raw(const kwsn_model *m, void *arena, size_t arena_bytes, const char *path,
                   float *logits, int softmax) {
    size_t T = kwsn_input_len(m);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: %s: cannot open\n", path);
        return 1;
    }
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size <= 0 || (size_t)size % (T * sizeof(float)) != 0) {
        fprintf(stderr,
                "error: %s: %ld bytes is not a whole number of rows of %zu float32 samples "
                "(the model's input length)\n",
                path, size, T);
        fclose(f);
        return 1;
    }
    float *x = (float *)malloc(T * sizeof(float));
    if (!x) {
        fclose(f);
        return 1;
    }
    size_t rows = (size_t)size / (T * sizeof(float));
    int rc = 0;
    for (size_t r = 0; r < rows && rc == 0; r++) {
        if (fread(x, sizeof(float), T, f) != T) {
            fprintf(stderr, "error: %s: short read at row %zu\n", path, r);
            rc = 1;
            break;
        }
        kwsn_status st = kwsn_forward(m, arena, arena_bytes, x, T, logits, kwsn_n_classes(m));
        if (st != KWSN_OK) {
            fprintf(stderr, "error: row %zu: %s\n", r, kwsn_status_str(st));
            rc = 1;
            break;
        }
        char name[32];
        snprintf(name, sizeof(name), "%zu", r);
        print_row(name, logits, kwsn_n_classes(m), softmax);
    }
    free(x);
    fclose(f);
    return rc;
}

/* A positive decimal count; 0 on a malformed or zero value. */
static unsigned long long parse_count(const char *s) {
    char *end = NULL;
    if (!s || *s < '0' || *s > '9') return 0;
    unsigned long long v = strtoull(s, &end, 10);
    return (end && *end == '\0') ? v : 0;
}

int main(int argc, char **argv) {
    /* kwsnet-infer --stream MODEL WAV... : the streaming detector (kwsnet-stream's options) */
    if (argc > 1 && strcmp(argv[1], "--stream") == 0) return kwsn_stream_main(argc - 1, argv + 1);
    int softmax = 0, argi = 1;
    const char *raw = NULL;
    kwsn_limits limits = kwsn_default_limits();
    for (; argi < argc && strncmp(argv[argi], "--", 2) == 0 && strcmp(argv[argi], "--raw");
         argi++) {
        unsigned long long v = 0;
        if (strcmp(argv[argi], "--softmax") == 0) {
            softmax = 1;
            continue;
        }
        if (argi + 1 < argc && (strcmp(argv[argi], "--max-ops") == 0 ||
                                strcmp(argv[argi], "--max-arena-bytes") == 0)) {
            v = parse_count(argv[argi + 1]);
            if (!v || (argv[argi][6] == 'a' && v > (size_t)-1)) {
                fprintf(stderr, "error: %s needs a positive integer, got '%s'\n", argv[argi],
                        argv[argi + 1]);
                return 2;
            }
            if (argv[argi][6] == 'o')
                limits.max_ops = v;
            else
                limits.max_arena_bytes = (size_t)v;
            argi++;
            continue;
        }
        usage();
        return 2;
    }
    if (argc - argi < 2) {
        usage();
        return 2;
    }
    const char *model_path = argv[argi++];
    if (strcmp(argv[argi], "--raw") == 0) {
        if (argc - argi != 2) {
            usage();
            return 2;
        }
        raw = argv[argi + 1];
    }
    kwsn_loaded *lm = NULL;
    char why[256];
    kwsn_status st = kwsn_load_file_why(model_path, &limits, &lm, why, sizeof why);
    if (st != KWSN_OK) {
        fprintf(stderr, "error: %s: %s%s%s\n", model_path, kwsn_status_str(st), why[0] ? ": " : "",
                why);
        return 1;
    }
    const kwsn_model *m = kwsn_loaded_model(lm);
    size_t arena_bytes = kwsn_arena_bytes(m);
    /* bounded by limits.max_arena_bytes at load; kwsn_forward wants 64-byte alignment */
    void *arena_raw = malloc(arena_bytes + KWSN_ARENA_ALIGN);
    void *arena = arena_raw ? (void *)(((uintptr_t)arena_raw + KWSN_ARENA_ALIGN - 1u) &
                                       ~(uintptr_t)(KWSN_ARENA_ALIGN - 1u))
                            : NULL;
    float *logits = (float *)malloc(kwsn_n_classes(m) * sizeof(float));
    if (!arena || !logits) {
        fprintf(stderr, "error: out of memory\n");
        free(arena_raw);
        free(logits);
        kwsn_free(lm);
        return 1;
    }
    printf("# layers %u input %zu classes %zu arena_bytes %zu weight_bytes %zu ops %llu "
           "kernels %s\n",
           kwsn_n_layers(m), kwsn_input_len(m), kwsn_n_classes(m), arena_bytes,
           kwsn_weight_bytes(m), (unsigned long long)kwsn_model_ops(m), kwsn_isa_name(m));
    int rc = 0;
    if (raw) {
        rc = run_raw(m, arena, arena_bytes, raw, logits, softmax);
    } else {
        for (; argi < argc && rc == 0; argi++) {
            float *x = NULL;
            size_t n = 0, first_bad = 0;
            uint32_t rate = 0;
            char err[512];
            if (kwsn_wav_read(argv[argi], &x, &n, &rate, err, sizeof(err)) != 0) {
                fprintf(stderr, "error: %s\n", err);
                rc = 1;
                break;
            }
            if (kwsn_sample_rate(m) && rate != kwsn_sample_rate(m)) {
                fprintf(stderr, "error: %s: sample rate %u Hz, model expects %u Hz\n",
                        argv[argi], rate, kwsn_sample_rate(m));
                rc = 1;
            } else if (kwsn_wav_nonfinite(x, n, &first_bad) > 0) {
                fprintf(stderr,
                        "error: %s: audio holds NaN or infinite samples (%zu, the first at "
                        "sample %zu)\n",
                        argv[argi], kwsn_wav_nonfinite(x, n, NULL), first_bad);
                rc = 1;
            } else if (n != kwsn_input_len(m)) {
                fprintf(stderr, "error: %s: %zu samples, model expects %zu (crop or pad it)\n",
                        argv[argi], n, kwsn_input_len(m));
                rc = 1;
            } else {
                st = kwsn_forward(m, arena, arena_bytes, x, n, logits, kwsn_n_classes(m));
                if (st != KWSN_OK) {
                    fprintf(stderr, "error: %s: %s\n", argv[argi], kwsn_status_str(st));
                    rc = 1;
                } else {
                    print_row(argv[argi], logits, kwsn_n_classes(m), softmax);
                }
            }
            free(x);
        }
    }
    free(arena_raw);
    free(logits);
    kwsn_free(lm);
    return rc;
}
