/* Fuzz target for the CLI's WAV reader (tools/wav.c), libFuzzer-compatible:
 *   make fuzz SECONDS=300     (clang -fsanitize=fuzzer,address,undefined)
 * With gcc, link tests/fuzz_driver.c instead (make sanitize builds build/fuzz_wav_san). */
#include <stdint.h>
#include <stdlib.h>

#include "wav.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    float *x = NULL;
    size_t n = 0;
    uint32_t rate = 0;
    char err[256];
    if (kwsn_wav_parse(data, size, "fuzz", &x, &n, &rate, err, sizeof(err)) == 0) {
        volatile float sink = 0.0f; /* touch every sample the reader claims to return */
        for (size_t i = 0; i < n; i++) sink += x[i];
        (void)sink;
    }
    free(x);
    return 0;
}
