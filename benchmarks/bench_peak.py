"""The core's float32 arithmetic peak, one thread: what the C kernels can reach at best.

    python benchmarks/bench_peak.py [--seconds 0.2]

Compiles a tiny C loop (gcc, GCC vector extensions) and times 12 independent dependency
chains per vector width: ``acc = acc * w + c`` as a separate multiply and add (what the
kernels emit: no FMA contraction, ``-ffp-contract=off``) and as one FMA (``-mfma``). 12 chains
cover the latency of a multiply and an add (4 cycles each) on two ports. Reports GFLOP/s
(2 per lane per chain step) per variant the CPU supports: the best of 5 runs, since on a
shared machine the best run is the one least disturbed; timed in thread CPU time, so the
time the thread was descheduled does not count. ``peak_gflops()`` is what
bench_cnative.py imports.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kwsnet.export.runtime import cpu_flags  # noqa: E402

SRC = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef float vf __attribute__((vector_size(VW * 4)));
#define N 12
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); /* CPU time: not the time others ran */
    return t.tv_sec + t.tv_nsec * 1e-9;
}
int main(int argc, char **argv) {
    long iters = atol(argv[1]);
    vf w, c, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11;
    for (int i = 0; i < VW; i++) { w[i] = 0.999f; c[i] = 1e-3f; }
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = w + w;
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        for (long it = 0; it < iters; it++) { /* 12 named chains: they stay in registers */
#define STEP(a) a = a * w + c
            STEP(a0); STEP(a1); STEP(a2); STEP(a3); STEP(a4); STEP(a5);
            STEP(a6); STEP(a7); STEP(a8); STEP(a9); STEP(a10); STEP(a11);
        }
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    vf t = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    float sink = 0;
    for (int i = 0; i < VW; i++) sink += t[i];
    printf("%.3f %g\n", 2.0 * N * VW * (double)iters / best / 1e9, (double)sink);
    return 0;
}
"""

# name: (vector width in floats, gcc flags, /proc/cpuinfo flags needed)
VARIANTS = {
    "256-bit mul+add": (8, ["-mavx2", "-ffp-contract=off"], ["avx2"]),
    "512-bit mul+add": (16, ["-mavx512f", "-ffp-contract=off"], ["avx512f"]),
    "256-bit FMA": (8, ["-mavx2", "-mfma", "-ffp-contract=fast"], ["avx2", "fma"]),
    "512-bit FMA": (16, ["-mavx512f", "-mfma", "-ffp-contract=fast"], ["avx512f", "fma"]),
}


def peak_gflops(seconds: float = 0.2) -> dict[str, float]:
    """GFLOP/s per variant this CPU supports (see the module docstring)."""
    flags = cpu_flags()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "peak.c").write_text(SRC)
        for name, (vw, cflags, need) in VARIANTS.items():
            if not all(f in flags for f in need):
                continue
            exe = tmp / f"peak{vw}{len(cflags)}"
            cmd = ["gcc", "-O2", "-std=c99", f"-DVW={vw}", *cflags, str(tmp / "peak.c"), "-o"]
            subprocess.run([*cmd, str(exe)], check=True, capture_output=True)
            # calibrate to ~seconds per run
            probe = float(
                subprocess.run(
                    [exe, "200000"], capture_output=True, text=True, check=True
                ).stdout.split()[0]
            )
            iters = max(1000, int(seconds * probe * 1e9 / (2 * 12 * vw)))
            res = subprocess.run([exe, str(iters)], capture_output=True, text=True, check=True)
            out[name] = float(res.stdout.split()[0])
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the peaks."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=0.2)
    args = p.parse_args(argv)
    for name, g in peak_gflops(args.seconds).items():
        print(f"  {name:<16} {g:7.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
