/* Standalone mutation driver for LLVMFuzzerTestOneInput, for gcc builds without libFuzzer.
 *
 *   fuzz_loader_san [-seconds=N] [-runs=N] [-seed=N] SEED_FILE...
 *
 * Bounded, reproducible (xorshift PRNG seeded by -seed): each run takes a random seed file,
 * applies 1-4 mutations (bit flips, interesting bytes and u32 values at 4-byte fields,
 * truncation, chunk duplication/removal), and calls the target. Any sanitizer report aborts
 * the process with a non-zero status. Prints the number of runs on success. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static const uint32_t interesting[] = {0u, 1u, 2u, 3u, 7u, 8u, 9u, 16u, 255u, 65535u,
                                       0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu, 0xFFFFFFFEu,
                                       0x04000000u, 0x3F800000u, 0x7FC00000u};

static size_t mutate(uint8_t *b, size_t n, size_t cap) {
    int k = 1 + (int)(rnd() % 4);
    for (int i = 0; i < k && n > 0; i++) {
        switch (rnd() % 6) {
        case 0: /* bit flip */
            b[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));
            break;
        case 1: /* interesting byte */
            b[rnd() % n] = (uint8_t)interesting[rnd() % 5] ^ (uint8_t)(rnd() % 2 ? 0xFF : 0);
            break;
        case 2: /* interesting u32 at a 4-byte field, biased towards the header and records */
            if (n >= 4) {
                size_t field = (rnd() % 2) ? rnd() % 16 : rnd() % (n / 4);
                size_t pos = field * 4 < n - 3 ? field * 4 : n - 4;
                uint32_t v = interesting[rnd() % (sizeof(interesting) / sizeof(interesting[0]))];
                memcpy(b + pos, &v, 4);
            }
            break;
        case 3: /* truncate */
            n = rnd() % (n + 1);
            break;
        case 4: /* duplicate a chunk */
            if (n < cap) {
                size_t len = 1 + rnd() % 64, from = rnd() % n, to = rnd() % n;
                if (from + len > n) len = n - from;
                if (n + len > cap) len = cap - n;
                memmove(b + to + len, b + to, n - to);
                memmove(b + to, b + (from >= to ? from + len : from), len);
                n += len;
            }
            break;
        default: /* remove a chunk */ {
            size_t from = rnd() % n, len = 1 + rnd() % 64;
            if (from + len > n) len = n - from;
            memmove(b + from, b + from + len, n - from - len);
            n -= len;
        } break;
        }
    }
    return n;
}

int main(int argc, char **argv) {
    double seconds = 3.0;
    long runs = -1;
    uint8_t *seeds[64];
    size_t sizes[64], n_seeds = 0, max_size = 0;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "-seconds=", 9) == 0) {
            seconds = atof(argv[i] + 9);
        } else if (strncmp(argv[i], "-runs=", 6) == 0) {
            runs = atol(argv[i] + 6);
        } else if (strncmp(argv[i], "-seed=", 6) == 0) {
            rng_state ^= (uint64_t)strtoull(argv[i] + 6, NULL, 10) * 0x2545F4914F6CDD1Dull;
        } else if (n_seeds < 64) {
            FILE *f = fopen(argv[i], "rb");
            if (!f) {
                fprintf(stderr, "cannot open seed %s\n", argv[i]);
                return 2;
            }
            fseek(f, 0, SEEK_END);
            long sz = ftell(f);
            fseek(f, 0, SEEK_SET);
            seeds[n_seeds] = (uint8_t *)malloc(sz > 0 ? (size_t)sz : 1u);
            sizes[n_seeds] = fread(seeds[n_seeds], 1, (size_t)(sz > 0 ? sz : 0), f);
            fclose(f);
            if (sizes[n_seeds] > max_size) max_size = sizes[n_seeds];
            n_seeds++;
        }
    }
    if (n_seeds == 0) {
        fprintf(stderr, "usage: fuzz_loader_san [-seconds=N] [-runs=N] [-seed=N] SEED...\n");
        return 2;
    }
    size_t cap = max_size + 4096;
    uint8_t *buf = (uint8_t *)malloc(cap);
    clock_t t0 = clock();
    long n = 0;
    for (size_t s = 0; s < n_seeds; s++, n++) LLVMFuzzerTestOneInput(seeds[s], sizes[s]);
    while ((runs < 0 || n < runs) &&
           (double)(clock() - t0) / CLOCKS_PER_SEC < seconds) {
        size_t s = rnd() % n_seeds;
        memcpy(buf, seeds[s], sizes[s]);
        size_t len = mutate(buf, sizes[s], cap);
        LLVMFuzzerTestOneInput(buf, len);
        n++;
    }
    printf("fuzz: %ld runs over %zu seeds, no sanitizer reports\n", n, n_seeds);
    for (size_t s = 0; s < n_seeds; s++) free(seeds[s]);
    free(buf);
    return 0;
}
