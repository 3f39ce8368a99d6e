/* The peak kernels of benchmarks/bench_peak.py: CHAINS independent dependency chains of one
 * vector operation, timed in thread CPU time. One kernel per build, picked with -DKERNEL=...
 * and built with that kernel's -m flags (bench_peak.py runs a build only where
 * /proc/cpuinfo has the flags):
 *
 *   KERNEL_F32   acc = acc + x * w on VW floats (GCC vector extensions), the shape of the
 *                conv kernels' inner loop (an activation times a weight, added into an
 *                accumulator): a separate vmulps + vaddps with -ffp-contract=off, one vfmadd
 *                with -mfma -ffp-contract=fast. Only the add (or FMA) is on the chain; the
 *                product is recomputed every step (an empty asm says w changed), so the step's
 *                latency is the add's and the rate is the mul and add ports' throughput.
 *                (Until 2026-12-07 the step was acc = acc * w + c: mul and add both on the
 *                chain, 12 chains of 6 cycles just cover 2 steps per cycle on paper, and this
 *                Zen 4 ran it at ~27 of its 32 float ops per cycle: the peak read ~0.84x low.)
 *   KERNEL_MADDWD  acc = vpaddd(vpmaddwd(acc, w), c), 256-bit (AVX2) or 512-bit (AVX-512BW):
 *                what the int8 conv kernels emit (int8 widened to int16, pairs summed to int32)
 *   KERNEL_DPBUSD  acc = vpdpbusd(acc, a, b): 512-bit or 256-bit AVX512-VNNI(+VL), or
 *                256-bit AVX-VNNI with -DAVXVNNI (the VEX encoding)
 *   KERNEL_CLOCK   a chain of dependent scalar register `add`s (1 cycle each): cycles per second
 *
 * Every chain starts from its own value, read through a volatile pointer at run time: with
 * equal compile-time starts (-DEQUAL_STARTS, the old bench_peak) gcc proves the chains equal
 * and computes one, so the old figure was one chain's latency-bound rate times 12. The timed
 * loop is the noinline function peak_loop, so its assembly can be read on its own
 * (bench_peak.py's chain_registers counts the accumulator registers in it).
 *
 * Usage: peak SECONDS REPEATS. Prints "iters N" then one "rep SECONDS" line per repeat.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(KERNEL_MADDWD) || defined(KERNEL_DPBUSD)
#include <immintrin.h>
#endif

#ifndef CHAINS
#define CHAINS 12
#endif
#if CHAINS == 12
#define EACH(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#elif CHAINS == 1
#define EACH(X) X(0)
#else
#error "CHAINS is 1 or 12"
#endif

/* STEP(a, x): one step of chain a (x: the chain's own second operand, used by KERNEL_F32);
 * TOUCH(w): once per iteration, before the steps (KERNEL_F32: an empty asm that claims to
 * change w, so x * w cannot be hoisted out of the loop; the integer kernels keep their
 * operands on the chain, which gave them their highest rate here). */
#if defined(KERNEL_F32)
typedef float V __attribute__((vector_size(VW * 4)));
#define STEP(a, x) a = a + x * w
#define TOUCH(w) __asm__("" : "+v"(w))
#elif defined(KERNEL_MADDWD) && VW == 8
typedef __m256i V;
#define STEP(a, x) a = _mm256_add_epi32(_mm256_madd_epi16(a, w), c)
#elif defined(KERNEL_MADDWD) && VW == 16
typedef __m512i V;
#define STEP(a, x) a = _mm512_add_epi32(_mm512_madd_epi16(a, w), c)
#elif defined(KERNEL_DPBUSD) && VW == 8 && defined(AVXVNNI)
typedef __m256i V;
#define STEP(a, x) a = _mm256_dpbusd_avx_epi32(a, w, c)
#elif defined(KERNEL_DPBUSD) && VW == 8
typedef __m256i V;
#define STEP(a, x) a = _mm256_dpbusd_epi32(a, w, c)
#elif defined(KERNEL_DPBUSD) && VW == 16
typedef __m512i V;
#define STEP(a, x) a = _mm512_dpbusd_epi32(a, w, c)
#elif !defined(KERNEL_CLOCK)
#error "define one KERNEL_* (and VW)"
#endif
#ifndef TOUCH
#define TOUCH(w) (void)0
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); /* CPU time: not the time others ran */
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#ifdef KERNEL_CLOCK
/* 100 dependent adds per iteration: ~100 cycles; the loop counter runs beside them. The
 * addend is a register, not an immediate: Intel's Golden Cove and later cores fold chains of
 * `add $imm, reg` at register renaming (this loop with `addq $1` read 16.7 GHz on a 2.9 GHz
 * Emerald Rapids core; register adds and a chain of imul / 3 both read 2.9). */
__attribute__((noinline)) void peak_loop(long iters, unsigned long *x) {
    unsigned long v = *x;
    const unsigned long one = x[1];
    for (long it = 0; it < iters; it++)
        __asm__ volatile(".rept 100\n\taddq %1, %0\n\t.endr" : "+r"(v) : "r"(one));
    *x = v;
}
typedef unsigned long State[2]; /* the chain's start, the addend (1, read at run time) */
#define PTR(s) (s)
static void init(State *s) {
    (*s)[0] = (unsigned long)time(NULL);
    (*s)[1] = (*s)[0] > 0u ? 1u : 2u;
}
static double sink(const State *s) { return (double)((*s)[0] & 1u); }
#else
/* The chains live in named locals (registers) inside the loop; acc[] is memory only at the
 * entry and exit (KERNEL_F32's x operands: 12 accumulators + 12 x + w do not fit the 16
 * registers of SSE2 / AVX2, so gcc keeps some x on the stack and multiplies from memory, as
 * the conv kernels multiply loaded activations). acc[0, CHAINS): the accumulators, each with
 * its own start; acc[CHAINS, 2 CHAINS): the x operands, distinct too; then w and c, the same
 * for every chain. */
__attribute__((noinline)) void peak_loop(long iters, V *acc) {
    V w = acc[2 * CHAINS], c = acc[2 * CHAINS + 1];
#define LOAD(i) V a##i = acc[i], x##i = acc[CHAINS + i];
    EACH(LOAD)
    (void)c;
    for (long it = 0; it < iters; it++) {
        TOUCH(w);
#define STEP_(i) STEP(a##i, x##i); (void)x##i;
        EACH(STEP_)
    }
#define STORE(i) acc[i] = a##i;
    EACH(STORE)
}
typedef V State[2 * CHAINS + 2];
#define PTR(s) (s)
static void init(State *s) {
    V *acc = *s;
    /* distinct start per chain (and per lane), read at run time */
    static volatile int istart = 0x01020304;
    unsigned char *bytes = (unsigned char *)acc;
    for (size_t k = 0; k < sizeof(V) * 2 * CHAINS; k++)
        bytes[k] = (unsigned char)(istart * 7 + 13 * k + k / sizeof(V));
#ifdef KERNEL_F32
    /* accumulators ~1, products ~1e-7: a 1e9-step run adds ~100, no overflow, no denormals */
    static volatile float fstart = 1.0f;
    for (int i = 0; i < CHAINS; i++)
        for (int j = 0; j < VW; j++) {
            acc[i][j] = fstart + 0.01f * i + 1e-4f * j;
            acc[CHAINS + i][j] = fstart * 1e-7f * (1.0f + 0.01f * i + 1e-4f * j);
        }
    for (int j = 0; j < VW; j++) { acc[2 * CHAINS][j] = 0.999f; acc[2 * CHAINS + 1][j] = 1e-3f; }
#else
    memset(&acc[2 * CHAINS], 0x03, sizeof(V));
    memset(&acc[2 * CHAINS + 1], 0x05, sizeof(V));
#endif
#ifdef EQUAL_STARTS /* the old bench_peak: every chain starts at the same constant */
#ifdef KERNEL_F32
    for (int i = 0; i < CHAINS; i++)
        for (int j = 0; j < VW; j++) acc[i][j] = 2 * 0.999f;
#else
    for (int i = 0; i < CHAINS; i++) memset(&acc[i], 0x11, sizeof(V));
#endif
#endif
}
static double sink(const State *s) {
    double t = 0;
    const unsigned char *bytes = (const unsigned char *)*s;
    for (size_t k = 0; k < sizeof(V) * CHAINS; k++) t += bytes[k];
    return t;
}
#endif

#ifdef EQUAL_STARTS
/* The old program's shape: the starts are constants in the function that loops, so gcc sees
 * them equal and merges the twelve chains into one. */
__attribute__((noinline)) double peak_loop_equal(long iters) {
#ifdef KERNEL_F32
    V w, c;
    for (int j = 0; j < VW; j++) { w[j] = 0.999f; c[j] = 1e-3f; }
    V a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11;
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = w + w;
    double t0 = now();
    for (long it = 0; it < iters; it++) {
#define OLD_STEP(a) a = a * w + c /* the old program's step */
        OLD_STEP(a0); OLD_STEP(a1); OLD_STEP(a2); OLD_STEP(a3); OLD_STEP(a4); OLD_STEP(a5);
        OLD_STEP(a6); OLD_STEP(a7); OLD_STEP(a8); OLD_STEP(a9); OLD_STEP(a10); OLD_STEP(a11);
    }
    double dt = now() - t0;
    V t = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    volatile float s = t[0];
    (void)s;
    return dt;
#else
#error "EQUAL_STARTS is for KERNEL_F32"
#endif
}
#endif

/* Seconds for one call of the timed loop over iters iterations. */
static double timed(long iters, State *st) {
#ifdef EQUAL_STARTS
    (void)st;
    return peak_loop_equal(iters);
#else
    double t0 = now();
    peak_loop(iters, PTR(*st));
    return now() - t0;
#endif
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s SECONDS REPEATS\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[1]);
    int reps = atoi(argv[2]);
    static State s;
    init(&s);
    /* calibrate: double the iterations until one call takes a tenth of the target */
    long iters = 1000;
    double dt = 0;
    for (;;) {
        dt = timed(iters, &s);
        if (dt >= seconds / 10 || iters > (1L << 40)) break;
        iters *= 2;
    }
    if (dt > 0) iters = (long)(iters * seconds / dt) + 1;
    printf("iters %ld\n", iters);
    for (int r = 0; r < reps; r++) {
        dt = timed(iters, &s);
        printf("rep %.9f\n", dt);
    }
    printf("sink %g\n", sink(&s));
    return 0;
}
