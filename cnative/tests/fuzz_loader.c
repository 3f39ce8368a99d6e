/* Fuzz target for the model loader, libFuzzer-compatible:
 *   clang -fsanitize=fuzzer,address,undefined -Iinclude -Isrc tests/fuzz_loader.c src/*.c -lm
 * With gcc (no libFuzzer) link tests/fuzz_driver.c instead (make sanitize).
 *
 * Each input is parsed twice: as is (exercising magic/version/CRC/truncation checks), and with
 * its CRC field patched to match, so mutations reach the layer records and shape checks.
 * Models that load run one forward pass on zeros when their arena is small, and a second one
 * with their tables (kwsn_model_set_tables) when those are small too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kwsnet.h"

/* Limits small enough that every model that loads also runs one forward pass quickly. */
#define FUZZ_MAX_ARENA ((size_t)1 << 20)
#define FUZZ_MAX_OPS 20000000ull

/* kwsn_forward wants a KWSN_ARENA_ALIGN-aligned arena; malloc promises only 16 bytes. */
static void *align_arena(void *raw) {
    uintptr_t p = (uintptr_t)raw;
    return raw ? (void *)((p + KWSN_ARENA_ALIGN - 1u) & ~(uintptr_t)(KWSN_ARENA_ALIGN - 1u)) : NULL;
}

static void try_parse(const uint8_t *data, size_t size) {
    static uint64_t storage[KWSN_MODEL_WORDS(KWSN_MAX_LAYERS)];
    kwsn_model *m = NULL;
    /* the parser needs 4-byte alignment; libFuzzer's buffer does not promise it */
    uint32_t *buf = (uint32_t *)malloc(size / 4 + 1 > 0 ? (size / 4 + 1) * 4 : 4);
    if (!buf) return;
    memcpy(buf, data, size);
    const kwsn_limits lim = {FUZZ_MAX_OPS, FUZZ_MAX_ARENA};
    if (kwsn_model_parse(buf, size, storage, sizeof(storage), &lim, &m) == KWSN_OK) {
        size_t ab = kwsn_arena_bytes(m);
        if (ab <= FUZZ_MAX_ARENA) {
            void *raw = malloc(ab + KWSN_ARENA_ALIGN), *arena = align_arena(raw);
            float *x = (float *)calloc(kwsn_input_len(m), sizeof(float));
            float *y = (float *)malloc(kwsn_n_classes(m) * sizeof(float));
            if (arena && x && y)
                kwsn_forward(m, arena, ab, x, kwsn_input_len(m), y, kwsn_n_classes(m));
            /* again with the tables built once (packed int8 convs, front-end twiddles) */
            const size_t tb = kwsn_tables_bytes(m);
            void *traw = tb && tb <= FUZZ_MAX_ARENA ? malloc(tb + KWSN_ARENA_ALIGN) : NULL;
            if (traw && arena && x && y &&
                kwsn_model_set_tables(m, align_arena(traw), tb) == KWSN_OK)
                kwsn_forward(m, arena, ab, x, kwsn_input_len(m), y, kwsn_n_classes(m));
            free(traw);
            free(raw);
            free(x);
            free(y);
        }
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    try_parse(data, size);
    if (size >= 8) {
        uint8_t *fixed = (uint8_t *)malloc(size);
        if (!fixed) return 0;
        memcpy(fixed, data, size);
        uint32_t crc = kwsn_crc32(fixed, size - 4);
        for (int i = 0; i < 4; i++) fixed[size - 4 + i] = (uint8_t)(crc >> (8 * i));
        try_parse(fixed, size);
        free(fixed);
    }
    return 0;
}
