/* Loader robustness check, built with -fsanitize=address,undefined:
 *
 *   load_check FILE...   prints "<file>: <status>" per file; runs a forward pass on zeros
 *                        for files that load. Exit 0 unless the sanitizers abort.
 *   load_check --api     checks the public API's argument errors (prints "api ok"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kwsnet.h"

/* kwsn_forward wants a KWSN_ARENA_ALIGN-aligned arena; malloc promises only 16 bytes. */
static void *align_arena(void *raw) {
    uintptr_t p = (uintptr_t)raw;
    return raw ? (void *)((p + KWSN_ARENA_ALIGN - 1u) & ~(uintptr_t)(KWSN_ARENA_ALIGN - 1u)) : NULL;
}

/* int8 tables (kwsn_model_from_table_q): a quantised ReLU of [2, 3], its codes and
 * dequantised floats, the qparams accessors, and the refusals. */
static int int8_api_checks(void) {
    static uint64_t store[KWSN_MODEL_WORDS(2)];
    const size_t sb = sizeof(store);
    static uint8_t arena_store[1024 + 64];
    void *arena = align_arena(arena_store);
    const size_t ab = 1024;
    kwsn_model *m = NULL;
    int bad = 0;
    const float scale = 0.5f;
    const kwsn_qparams iq = {0.5f, -3};
    /* ints: out zp, act_min, act_max, alias; floats: out scale (= the input's) */
    kwsn_layer_desc relu = {KWSN_LAYER_RELU | KWSN_INT8_FLAG, 4, {-3, -3, 127, 0}, 1, &scale,
                            0, {0}, 0, NULL, 0, NULL};
    kwsn_shape in = {2u, {2u, 3u}};
    bad |= kwsn_model_from_table_q(&relu, 1, in, 0, &iq, store, sb, NULL, &m) != KWSN_OK;
    bad |= !kwsn_is_int8(m) || kwsn_arena_bytes(m) > ab;
    kwsn_qparams q = {0.0f, 0};
    bad |= kwsn_input_qparams(m, &q) != KWSN_OK || q.scale != 0.5f || q.zero_point != -3;
    bad |= kwsn_layer_qparams(m, 0, &q) != KWSN_OK || q.scale != 0.5f || q.zero_point != -3;
    bad |= kwsn_layer_qparams(m, 1, &q) != KWSN_ERR_ARG;
    /* codes: round(x / 0.5) - 3, ties to even: -1 -> -5 -> ReLU -3; 1.25 -> 2 (2.5 -> 2) - 3 */
    const float x[6] = {-1.0f, 1.25f, 100.0f, 0.0f, -1e30f, 2.0f};
    int8_t c[12];
    bad |= kwsn_forward_codes_batch(m, arena, ab, x, 1, 6, 0, c, 6) != KWSN_OK;
    bad |= c[0] != -5 || c[1] != -1 || c[2] != 127 || c[3] != -3 || c[4] != -128 || c[5] != 1;
    bad |= kwsn_forward_codes_batch(m, arena, ab, x, 1, 6, 1, c, 6) != KWSN_OK;
    bad |= c[0] != -3 || c[1] != -1 || c[2] != 127 || c[4] != -3;
    bad |= kwsn_forward_codes_batch(m, arena, ab, x, 1, 6, 1, c, 5) != KWSN_ERR_ARG;
    float y[6];
    bad |= kwsn_forward(m, arena, ab, x, 6, y, 6) != KWSN_OK;
    bad |= y[0] != 0.0f || y[1] != 1.0f || y[2] != 65.0f || y[5] != 2.0f;
    /* NaN -> act_min (-128 for the input quantiser), +-Inf clamp; ties to even both ways */
    float zero = 0.0f;
    const float odd[6] = {zero / zero, 1.0f / zero, -1.0f / zero, 0.75f, -0.75f, 1e-45f};
    bad |= kwsn_forward_codes_batch(m, arena, ab, odd, 1, 6, 0, c, 6) != KWSN_OK;
    bad |= c[0] != -128 || c[1] != 127 || c[2] != -128 || c[3] != -1 || c[4] != -5 || c[5] != -3;
    /* a ReLU with other params than its input's, a float table given to the int8 call and
     * vice versa, no input quantiser before a ReLU */
    kwsn_layer_desc other = relu;
    other.ints[0] = -2;
    bad |= kwsn_model_from_table_q(&other, 1, in, 0, &iq, store, sb, NULL, &m) != KWSN_ERR_PARAM;
    bad |= m != NULL;
    bad |= kwsn_model_from_table(&relu, 1, in, 0, store, sb, NULL, &m) != KWSN_ERR_LAYER_TYPE;
    kwsn_layer_desc frelu = {KWSN_LAYER_RELU, 0, {0}, 0, NULL, 0, {0}, 0, NULL, 0, NULL};
    bad |= kwsn_model_from_table_q(&frelu, 1, in, 0, &iq, store, sb, NULL, &m) !=
           KWSN_ERR_LAYER_TYPE;
    bad |= kwsn_model_from_table_q(&relu, 1, in, 0, NULL, store, sb, NULL, &m) != KWSN_ERR_GRAPH;
    const kwsn_qparams bad_q = {0.0f, 0};
    bad |= kwsn_model_from_table_q(&relu, 1, in, 0, &bad_q, store, sb, NULL, &m) !=
           KWSN_ERR_PARAM;
    /* a float model has no qparams and no codes */
    bad |= kwsn_model_from_table(&frelu, 1, in, 0, store, sb, NULL, &m) != KWSN_OK;
    bad |= kwsn_is_int8(m) || kwsn_input_qparams(m, &q) != KWSN_ERR_ARG ||
           kwsn_layer_qparams(m, 0, &q) != KWSN_ERR_ARG ||
           kwsn_forward_codes_batch(m, arena, ab, x, 1, 6, 1, c, 6) != KWSN_ERR_ARG;
    if (bad) printf("int8 api FAILED\n");
    return bad;
}

static int api_checks(void) {
    static uint64_t store[KWSN_MODEL_WORDS(4)];
    const size_t sb = sizeof(store);
    kwsn_model *m = NULL;
    float buf[16] = {0};
    int bad = 0;
    bad |= kwsn_model_parse(NULL, 0, store, sb, NULL, &m) != KWSN_ERR_ARG;
    bad |= kwsn_model_parse(buf, 0, store, sb, NULL, NULL) != KWSN_ERR_ARG;
    bad |= kwsn_model_parse(buf, 0, store, sb, NULL, &m) != KWSN_ERR_TRUNCATED;
    bad |= kwsn_model_parse((const char *)buf + 1, 8, store, sb, NULL, &m) != KWSN_ERR_ALIGN;
    bad |= kwsn_model_parse(buf, sizeof(buf), store, sb, NULL, &m) != KWSN_ERR_MAGIC;
    bad |= m != NULL;
    bad |= kwsn_model_bytes(4) > KWSN_MODEL_BYTES(4) || kwsn_model_bytes(4) > sb;
    /* a one-layer ReLU model built from a table */
    kwsn_layer_desc d = {KWSN_LAYER_RELU, 0, {0}, 0, NULL, 0, {0}, 0, NULL, 0, NULL};
    kwsn_shape in = {2u, {2u, 3u}};
    bad |= kwsn_model_from_table(&d, 1, in, 0, store, kwsn_model_bytes(1) - 1, NULL, &m) !=
           KWSN_ERR_STORAGE;
    /* + 2: misaligned also where uint64_t aligns to 4 (i386, make sanitize32) */
    bad |= kwsn_model_from_table(&d, 1, in, 0, (char *)store + 2, sb - 8, NULL, &m) !=
           KWSN_ERR_STORAGE;
    bad |= kwsn_model_from_table(&d, 1, in, 0, store, kwsn_model_bytes(1), NULL, &m) != KWSN_OK;
    float x[6] = {-1, 2, -3, 4, -5, 6}, y[6];
    static float arena_store[64 + 16];
    float *arena = (float *)align_arena(arena_store);
    bad |= kwsn_forward(m, arena, 8, x, 6, y, 6) != KWSN_ERR_ARENA;
    bad |= kwsn_forward(m, arena + 1, 60 * sizeof(float), x, 6, y, 6) != KWSN_ERR_ARENA;
    const size_t ab = 64 * sizeof(float);
    bad |= kwsn_forward(m, arena, ab, x, 5, y, 6) != KWSN_ERR_INPUT_LEN;
    bad |= kwsn_forward(m, arena, ab, x, 6, y, 2) != KWSN_ERR_ARG;
    bad |= kwsn_forward(m, arena, ab, x, 6, y, 6) != KWSN_OK;
    bad |= y[0] != 0.0f || y[1] != 2.0f;
    float y2[12], x2[12] = {-1, 2, -3, 4, -5, 6, 1, -2, 3, -4, 5, -6};
    bad |= kwsn_forward_batch(m, arena, ab, x2, 2, 6, 1, y2, 6) != KWSN_OK;
    bad |= y2[0] != 0.0f || y2[1] != 2.0f || y2[6] != 1.0f || y2[7] != 0.0f;
    bad |= kwsn_model_ops(m) != 6u || kwsn_layer_ops(m, 0) != 6u || kwsn_layer_ops(m, 1) != 0u;
    bad |= kwsn_abi_version() != KWSN_ABI_VERSION || kwsn_sample_rate(m) != 0u;
    /* limits: 6 ops and a 64-byte arena (one slot of 6 floats; the input is never written)
     * fit; 5 ops or a 32-byte arena limit do not */
    kwsn_limits tight = {5u, 0u};
    bad |= kwsn_model_from_table(&d, 1, in, 0, store, sb, &tight, &m) != KWSN_ERR_OPS_LIMIT;
    bad |= m != NULL || kwsn_forward(m, arena, ab, x, 6, y, 6) != KWSN_ERR_ARG;
    tight.max_ops = 6u;
    tight.max_arena_bytes = 32u;
    bad |= kwsn_model_from_table(&d, 1, in, 0, store, sb, &tight, &m) != KWSN_ERR_ARENA_LIMIT;
    tight.max_arena_bytes = 64u;
    bad |= kwsn_model_from_table(&d, 1, in, 0, store, sb, &tight, &m) != KWSN_OK;
    /* a non-finite weight is refused at prepare */
    float w[3] = {1.0f, 0.0f, 0.0f};
    w[1] = w[1] / w[1]; /* NaN without <math.h> */
    kwsn_layer_desc nanlin = {KWSN_LAYER_LINEAR, 3, {1, 1, 1}, 2, w, 0, {0}, 0, NULL, 0, NULL};
    kwsn_shape in1 = {1u, {1u, 1u}};
    bad |= kwsn_model_from_table(&nanlin, 1, in1, 0, store, sb, NULL, &m) != KWSN_ERR_NONFINITE;
    w[1] = 1e38f * 1e38f; /* +Inf */
    bad |= kwsn_model_from_table(&nanlin, 1, in1, 0, store, sb, NULL, &m) != KWSN_ERR_NONFINITE;
    w[1] = 0.5f;
    bad |= kwsn_model_from_table(&nanlin, 1, in1, 0, store, sb, NULL, &m) != KWSN_OK;
    kwsn_layer_desc lin = {KWSN_LAYER_LINEAR, 3, {5, 2, 0}, 10, x, 0, {0}, 0, NULL, 0, NULL};
    bad |= kwsn_model_from_table(&lin, 1, in, 0, store, sb, NULL, &m) != KWSN_ERR_SHAPE;
    kwsn_layer_desc unk = {99, 0, {0}, 0, NULL, 0, {0}, 0, NULL, 0, NULL};
    bad |= kwsn_model_from_table(&unk, 1, in, 0, store, sb, NULL, &m) != KWSN_ERR_LAYER_TYPE;
    bad |= strcmp(kwsn_status_str((kwsn_status)1234), "unknown status") != 0;
    bad |= int8_api_checks();
    printf("api %s\n", bad ? "FAILED" : "ok");
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--api") == 0) return api_checks();
    for (int i = 1; i < argc; i++) {
        kwsn_loaded *lm = NULL;
        char why[256];
        kwsn_status st = kwsn_load_file_why(argv[i], NULL, &lm, why, sizeof why);
        printf("%s: %s%s%s\n", argv[i], kwsn_status_str(st), why[0] ? ": " : "", why);
        if (st != KWSN_OK) continue;
        const kwsn_model *m = kwsn_loaded_model(lm);
        size_t ab = kwsn_arena_bytes(m), n = kwsn_input_len(m), c = kwsn_n_classes(m);
        void *raw = malloc(ab + KWSN_ARENA_ALIGN), *arena = align_arena(raw);
        float *x = (float *)calloc(n, sizeof(float));
        float *y = (float *)malloc(c * sizeof(float));
        if (arena && x && y) kwsn_forward(m, arena, ab, x, n, y, c);
        free(raw);
        free(x);
        free(y);
        kwsn_free(lm);
    }
    return 0;
}
