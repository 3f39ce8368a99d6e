/* Golden-data test: for every case in DIR/manifest.txt (written by gen_golden.py), load
 * <name>.kwsn, run each row of <name>.in.f32 and compare with PyTorch's <name>.out.f32.
 *
 *   test_golden DIR      prints one line per case; exit 0 iff all cases pass */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kwsn_kernels.h"
#include "kwsnet.h"

/* kwsn_forward wants a KWSN_ARENA_ALIGN-aligned arena; malloc promises only 16 bytes. */
static void *align_arena(void *raw) {
    uintptr_t p = (uintptr_t)raw;
    return raw ? (void *)((p + KWSN_ARENA_ALIGN - 1u) & ~(uintptr_t)(KWSN_ARENA_ALIGN - 1u)) : NULL;
}

static float *read_f32(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *x = (float *)malloc(size > 0 ? (size_t)size : 1u);
    *n = (size_t)size / sizeof(float);
    if (x && fread(x, sizeof(float), *n, f) != *n) {
        free(x);
        x = NULL;
    }
    fclose(f);
    return x;
}

static int run_case(const char *dir, const char *name, size_t rows, double tol) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s.kwsn", dir, name);
    kwsn_loaded *lm = NULL;
    kwsn_status st = kwsn_load_file(path, &lm);
    if (st != KWSN_OK) {
        printf("FAIL %s: load: %s\n", name, kwsn_status_str(st));
        return 1;
    }
    const kwsn_model *m = kwsn_loaded_model(lm);
    size_t n_in = 0, n_out = 0, T = kwsn_input_len(m), C = kwsn_n_classes(m);
    snprintf(path, sizeof(path), "%s/%s.in.f32", dir, name);
    float *x = read_f32(path, &n_in);
    snprintf(path, sizeof(path), "%s/%s.out.f32", dir, name);
    float *y = read_f32(path, &n_out);
    size_t arena_bytes = kwsn_arena_bytes(m);
    void *raw = malloc(arena_bytes + KWSN_ARENA_ALIGN), *arena = align_arena(raw);
    float *out = (float *)malloc(C * sizeof(float));
    int fail = 0;
    double worst = 0.0;
    if (!x || !y || !arena || !out || n_in != rows * T || n_out != rows * C) {
        printf("FAIL %s: golden files missing or sized wrong\n", name);
        fail = 1;
    }
    for (size_t r = 0; r < rows && !fail; r++) {
        st = kwsn_forward(m, arena, arena_bytes, x + r * T, T, out, C);
        if (st != KWSN_OK) {
            printf("FAIL %s: row %zu: %s\n", name, r, kwsn_status_str(st));
            fail = 1;
            break;
        }
        for (size_t j = 0; j < C; j++) {
            double d = fabs((double)out[j] - (double)y[r * C + j]);
            if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
        }
    }
    if (!fail) {
        fail = worst > tol;
        printf("%s %s: max |diff| %.3g (tol %.3g), arena %zu B, weights %zu B\n",
               fail ? "FAIL" : "ok  ", name, worst, tol, arena_bytes, kwsn_weight_bytes(m));
    }
    free(x);
    free(y);
    free(raw);
    free(out);
    kwsn_free(lm);
    return fail;
}

/* A table the runtime rejects must leave nothing runnable behind (it once left a
 * half-prepared model whose zero-byte arena a forward call then overflowed). */
static int check_rejected_table(void) {
    kwsn_layer_desc descs[2];
    memset(descs, 0, sizeof(descs));
    descs[0].type = KWSN_LAYER_RELU;
    descs[1].type = 99; /* no such layer */
    kwsn_shape in = {2, {1, 64}};
    static uint64_t store[KWSN_MODEL_WORDS(2)];
    kwsn_model *m = NULL;
    kwsn_status st = kwsn_model_from_table(descs, 2, in, 16000, store, sizeof(store), NULL, &m);
    static float arena[16] __attribute__((aligned(64)));
    float x[64] = {0}, y[64];
    kwsn_status run = kwsn_forward_until(m, arena, sizeof(arena), x, 64, 1, y, 64);
    if (st == KWSN_OK || m != NULL || run != KWSN_ERR_ARG) {
        printf("FAIL rejected table: status %d, model %p, forward %d\n", (int)st, (void *)m,
               (int)run);
        return 1;
    }
    printf("ok   rejected table leaves an empty model\n");
    return 0;
}

/* The no-FMA rule is in the kernels' source (a pragma), so a compiler or flag set that
 * contracted a*b + c into one fused rounding would change results: this catches it.
 * x1 * w1 = (1 + 2^-13)^2 = 1 + 2^-12 + 2^-26 rounds to 1 + 2^-12, which cancels
 * x0 * w0 = -(1 + 2^-12) exactly: unfused the sum is 0, fused it is 2^-26. Conv (every
 * vector/tail lane) and Linear, on whichever kernel path this process runs (KWSN_ISA). */
static int check_fp_contract(void) {
    enum { L = 45 }; /* one full tile and a tail on every path */
    static float x[2 * L], w[3] = {1.0f, 1.0f + 0x1p-13f, 0.0f}, y[L];
    static float arena[4 * (2 * L + 64)] __attribute__((aligned(64)));
    for (int t = 0; t < L; t++) {
        x[t] = -(1.0f + 0x1p-12f);
        x[L + t] = 1.0f + 0x1p-13f;
    }
    kwsn_layer_desc conv = {KWSN_LAYER_CONV1D, 4, {2, 1, 1, 1}, 3, w, 0, {0}, 0, NULL, 0, NULL};
    kwsn_layer_desc lin = {KWSN_LAYER_LINEAR, 3, {2, 1, 0}, 2, w, 0, {0}, 0, NULL, 0, NULL};
    kwsn_shape in_conv = {2u, {2u, L}}, in_lin = {1u, {2u, 1u}};
    static uint64_t store[KWSN_MODEL_WORDS(1)];
    kwsn_model *m = NULL;
    int bad = 0;
    if (kwsn_model_from_table(&conv, 1, in_conv, 0, store, sizeof(store), NULL, &m) != KWSN_OK ||
        kwsn_arena_bytes(m) > sizeof(arena) ||
        kwsn_forward(m, arena, sizeof(arena), x, 2 * L, y, L) != KWSN_OK)
        bad = 1;
    for (int t = 0; t < L && !bad; t++) bad |= y[t] != 0.0f;
    const float xl[2] = {x[0], x[L]};
    if (bad ||
        kwsn_model_from_table(&lin, 1, in_lin, 0, store, sizeof(store), NULL, &m) != KWSN_OK ||
        kwsn_forward(m, arena, sizeof(arena), xl, 2, y, 1) != KWSN_OK || y[0] != 0.0f)
        bad = 1;
    printf("%s fp-contract probe (kernels %s): a*b + c rounded twice%s\n", bad ? "FAIL" : "ok  ",
           kwsn_isa_name(m), bad ? ": FMA contraction or wrong sum" : "");
    return bad;
}

/* The int8 kernels' vectorisable requantisation (kwsn_mbqm_r: srdhm as a biased shift,
 * rdbpot with an arithmetic >>) equals the reference form kwsn_mbqm (gemmlowp's nudge and
 * truncating division, kwsnet/quant/fixedpoint.py) on edge values and a pseudo-random sweep,
 * and >> of a negative int32 is arithmetic on this compiler (C leaves it implementation-
 * defined). Not counted as a golden case (the count is the manifest's + 2). */
static int check_fixedpoint(void) {
    static const int32_t xs[] = {0, 1, -1, 2, -2, 3, -3, 127, -128, 255, -255, 1 << 20,
                                 -(1 << 20), INT32_MAX, INT32_MIN, INT32_MAX - 1, INT32_MIN + 1,
                                 (1 << 30), -(1 << 30), 12345678, -12345678};
    static const int32_t ms[] = {0, 1 << 30, (1 << 30) + 1, INT32_MAX, 1518500250, 1431655765};
    volatile int32_t minus_three = -3;
    int bad = (minus_three >> 1) != -2;
    uint32_t seed = 12345u;
    for (int32_t right = 0; right <= 31; right++) {
        for (size_t a = 0; a < sizeof(xs) / sizeof(xs[0]); a++)
            for (size_t b = 0; b < sizeof(ms) / sizeof(ms[0]); b++)
                bad |= kwsn_mbqm_r(xs[a], ms[b], right) != kwsn_mbqm(xs[a], ms[b], -right);
        for (int k = 0; k < 20000; k++) {
            seed = seed * 1664525u + 1013904223u;
            const int32_t x = (int32_t)(seed ^ (seed >> 7)) >> (k % 24);
            seed = seed * 1664525u + 1013904223u;
            const int32_t m = (int32_t)((1u << 30) | (seed >> 2));
            bad |= kwsn_mbqm_r(x, m, right) != kwsn_mbqm(x, m, -right);
        }
    }
    /* kwsn_mbqm itself, values from kwsnet.quant.fixedpoint.mbqm (2^30 is one half; two
     * roundings: 5 / 4 -> srdhm 2.5 -> 3 -> rdbpot 1.5 -> 2) */
    bad |= kwsn_mbqm(3, 1 << 30, 0) != 2 || kwsn_mbqm(-3, 1 << 30, 0) != -1;
    bad |= kwsn_mbqm(5, 1 << 30, -1) != 2 || kwsn_mbqm(-5, 1 << 30, -1) != -1;
    bad |= kwsn_mbqm(6, 1 << 30, -1) != 2 || kwsn_mbqm(-6, 1 << 30, -1) != -2;
    bad |= kwsn_mbqm(1 << 29, 1 << 30, 3) != (1 << 30);
    bad |= kwsn_mbqm(INT32_MAX, INT32_MAX, 30) != INT32_MAX - 1;
    printf("%s fixed-point requantisation (vector form = reference form)\n", bad ? "FAIL" : "ok  ");
    return bad;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_golden DIR\n");
        return 2;
    }
    char path[1024];
    snprintf(path, sizeof(path), "%s/manifest.txt", argv[1]);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 2;
    }
    char name[256];
    size_t rows;
    double tol;
    int failed = check_rejected_table() + check_fp_contract() + check_fixedpoint(), cases = 2;
    while (fscanf(f, "%255s %zu %lf", name, &rows, &tol) == 3) {
        failed += run_case(argv[1], name, rows, tol);
        cases++;
    }
    fclose(f);
    printf("%d/%d golden cases passed\n", cases - failed, cases);
    return failed || cases == 0;
}
