/* Loader robustness check, built with -fsanitize=address,undefined:
 *
 *   load_check FILE...   prints "<file>: <status>" per file; runs a forward pass on zeros
 *                        for files that load. Exit 0 unless the sanitizers abort.
 *   load_check --api     checks the public API's argument errors (prints "api ok"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kwsnet.h"

static int api_checks(void) {
    kwsn_model m;
    kwsn_layer layers[4];
    float buf[16] = {0};
    int bad = 0;
    bad |= kwsn_model_parse(NULL, 0, layers, 4, &m) != KWSN_ERR_ARG;
    bad |= kwsn_model_parse(buf, 0, layers, 4, &m) != KWSN_ERR_TRUNCATED;
    bad |= kwsn_model_parse((const char *)buf + 1, 8, layers, 4, &m) != KWSN_ERR_ALIGN;
    bad |= kwsn_model_parse(buf, sizeof(buf), layers, 4, &m) != KWSN_ERR_MAGIC;
    /* a one-layer ReLU model built from a table */
    kwsn_layer_desc d = {KWSN_LAYER_RELU, 0, {0}, 0, NULL};
    kwsn_shape in = {2u, {2u, 3u}};
    bad |= kwsn_model_from_table(&d, 1, in, 0, layers, &m) != KWSN_OK;
    float x[6] = {-1, 2, -3, 4, -5, 6}, y[6];
    float arena[64];
    bad |= kwsn_forward(&m, arena, 8, x, 6, y, 6) != KWSN_ERR_ARENA;
    bad |= kwsn_forward(&m, arena, sizeof(arena), x, 5, y, 6) != KWSN_ERR_INPUT_LEN;
    bad |= kwsn_forward(&m, arena, sizeof(arena), x, 6, y, 2) != KWSN_ERR_ARG;
    bad |= kwsn_forward(&m, arena, sizeof(arena), x, 6, y, 6) != KWSN_OK;
    bad |= y[0] != 0.0f || y[1] != 2.0f;
    kwsn_layer_desc lin = {KWSN_LAYER_LINEAR, 3, {5, 2, 0}, 10, x};
    bad |= kwsn_model_from_table(&lin, 1, in, 0, layers, &m) != KWSN_ERR_SHAPE;
    kwsn_layer_desc unk = {99, 0, {0}, 0, NULL};
    bad |= kwsn_model_from_table(&unk, 1, in, 0, layers, &m) != KWSN_ERR_LAYER_TYPE;
    bad |= strcmp(kwsn_status_str((kwsn_status)1234), "unknown status") != 0;
    printf("api %s\n", bad ? "FAILED" : "ok");
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--api") == 0) return api_checks();
    for (int i = 1; i < argc; i++) {
        kwsn_loaded *lm = NULL;
        kwsn_status st = kwsn_load_file(argv[i], &lm);
        printf("%s: %s\n", argv[i], kwsn_status_str(st));
        if (st != KWSN_OK) continue;
        const kwsn_model *m = kwsn_loaded_model(lm);
        size_t ab = kwsn_arena_bytes(m), n = kwsn_input_len(m), c = kwsn_n_classes(m);
        void *arena = malloc(ab);
        float *x = (float *)calloc(n, sizeof(float));
        float *y = (float *)malloc(c * sizeof(float));
        if (arena && x && y) kwsn_forward(m, arena, ab, x, n, y, c);
        free(arena);
        free(x);
        free(y);
        kwsn_free(lm);
    }
    return 0;
}
