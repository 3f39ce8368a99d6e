/* fe_logf, the front end's log of the mel energies (src/kwsn_frontend.c), against libm's
 * (float)log((double)x), which the front end called before: every step-th positive normal
 * float (step 1: all 2^31 - 2^24 of them, ~20 s; `make tests` builds it, and
 * tests/test_cnative_frontend.py runs a sparse step), plus the inputs that take libm (zero,
 * negative, subnormal, infinite, NaN). Prints the count, the floats that differ and the
 * largest difference in ulp; exits 1 if any differs by more than 1 ulp or more than one in
 * 10^6 differs at all.
 *
 *   build/fe_log_check [STEP]
 *
 * It includes the source, so that the static function is reachable. */
#include <stdio.h>
#include <stdlib.h>

#include "../src/kwsn_frontend.c"

static int32_t ulp_apart(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    return ia > ib ? ia - ib : ib - ia;
}

int main(int argc, char **argv) {
    const uint32_t step = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 1u;
    if (step == 0u) {
        fprintf(stderr, "usage: %s [STEP >= 1]\n", argv[0]);
        return 2;
    }
    uint64_t n = 0, differ = 0;
    int32_t worst = 0;
    for (uint64_t u = 0x00800000u; u < 0x7F800000u; u += step) {
        float x;
        const uint32_t u32 = (uint32_t)u;
        memcpy(&x, &u32, sizeof x);
        const float got = fe_logf(x), want = (float)log((double)x);
        n++;
        if (got != want) {
            differ++;
            const int32_t d = ulp_apart(got, want);
            if (d > worst) worst = d;
        }
    }
    const float odd[] = {0.0f, -0.0f, -1.0f, 0x1p-149f, 0x1p-127f, (float)INFINITY, (float)NAN};
    int odd_bad = 0;
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        const float got = fe_logf(odd[i]), want = (float)log((double)odd[i]);
        if (!(got == want || (isnan(got) && isnan(want)))) odd_bad++;
    }
    printf("fe_logf: %llu normal floats (step %u), %llu differ from (float)log((double)x), "
           "max %d ulp; special inputs %s\n",
           (unsigned long long)n, (unsigned)step, (unsigned long long)differ, (int)worst,
           odd_bad ? "DIFFER" : "equal");
    return (worst > 1 || differ * 1000000u > n || odd_bad) ? 1 : 0;
}
