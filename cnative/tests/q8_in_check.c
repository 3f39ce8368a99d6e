/* The int8 Add's input rescaling in int32 lanes (q8_in_lanes, kwsn_kernels.c) against
 * kwsn_mbqm(d << ls, m, -e) for every centred code d in [-255, 255], every left shift the
 * lanes take (15..22), every e in [0, 31] and multipliers at the edges (2^30, 2^31 - 1, the
 * ones that put either rounding on a tie: 2^30 + 2^(30 - ls), 2^30 + 2^15) and random ones.
 * Built once per vector path (`make tests`: build/q8_in_check_avx2, _avx512); it includes the
 * kernel source as that path's object does, so that the static function is reachable. A path
 * this CPU lacks is skipped (exit 0, a SKIP line). Exit 1 on the first difference. */
#include <stdio.h>
#include <stdlib.h>

#include "../src/kwsn_kernels.c"

#if KWSN_Q8_MBQM_LANES == 16
#define LANES 16
typedef __m512i vec;
#define VLOAD(p) _mm512_loadu_si512((const void *)(p))
#define VSTORE(p, v) _mm512_storeu_si512((void *)(p), v)
#define NEED "avx512bw"
#else
#define LANES 8
typedef __m256i vec;
#define VLOAD(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define VSTORE(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define NEED "avx2"
#endif

/* the work, not inlined into main: nothing built with this path's instructions runs before
 * main's CPU check */
static __attribute__((noinline)) int check(void) {
    enum { ND = 512 }; /* d = -255 .. 255, and one more */
    int32_t d[ND], got[ND];
    for (int i = 0; i < ND; i++) d[i] = i - 255 > 255 ? 255 : i - 255;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    long checked = 0;
    for (int32_t ls = 15; ls <= 22; ls++) {
        int32_t ms[520];
        int nm = 0;
        ms[nm++] = 1 << 30, ms[nm++] = INT32_MAX, ms[nm++] = (1 << 30) + (1 << (30 - ls));
        ms[nm++] = (1 << 30) + (1 << 15), ms[nm++] = 0;
        while (nm < 520) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            ms[nm++] = (int32_t)((1u << 30) + (uint32_t)(rng >> 34));
        }
        for (int im = 0; im < nm; im++)
            for (int32_t e = 0; e <= 31; e++) {
                const q8_in_k k = q8_in_consts(ms[im], ls, e);
                for (int i = 0; i < ND; i += LANES) VSTORE(got + i, q8_in_lanes(VLOAD(d + i), &k));
                for (int i = 0; i < ND; i++) {
                    const int32_t want = kwsn_mbqm(d[i] * (1 << ls), ms[im], -e);
                    if (got[i] != want) {
                        printf("FAIL q8_in_check (%d lanes): d %d ls %d m %d e %d: %d, want %d\n",
                               LANES, d[i], ls, ms[im], e, got[i], want);
                        return 1;
                    }
                }
                checked += ND;
            }
    }
    printf("OK q8_in_check (%d lanes): %ld values\n", LANES, checked);
    return 0;
}

int main(void) {
    if (!__builtin_cpu_supports(NEED)) {
        printf("SKIP q8_in_check: this CPU lacks %s\n", NEED);
        return 0;
    }
    return check();
}
