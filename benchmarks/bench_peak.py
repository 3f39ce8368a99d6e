"""The core's arithmetic peak, one thread: what the C kernels can reach at best.

    python benchmarks/bench_peak.py [--seconds 0.1] [--repeats 7] [--old] [--asm] [--quick]

Builds benchmarks/bench_peak.c once per kernel, with that kernel's -m flags, and runs each
build only where /proc/cpuinfo has the flags it needs. A kernel is 12 independent dependency
chains of one step, every chain starting from its own value read at run time:

- float32 ``acc = acc + x * w`` as a separate multiply and add (what the float kernels emit:
  no FMA contraction, ``-ffp-contract=off``) at 128 (SSE2), 256 and 512 bits, and as one FMA.
  The conv kernels' shape: the product is off the chain (recomputed every step, an empty asm
  says w changed), so only the add is on it and the rate is the mul and add ports' throughput.
  (The step was ``acc = acc * w + c`` until 2026-12-07: both on the chain, and 12 chains of a
  6-cycle step ran at ~27 of the 32 float ops per cycle this Zen 4 has, so the peak read low);
- int16 pairs to int32, ``acc = vpaddd(vpmaddwd(acc, w), c)`` (what the int8 kernels emit,
  int8 widened to int16) on AVX2 and AVX-512BW;
- u8 x s8 quads to int32, ``acc = vpdpbusd(acc, a, b)`` on AVX512-VNNI (256 and 512 bits) and
  AVX-VNNI.

Ops count a multiply-accumulate as 2 (mul+add: 2 per float lane; vpmaddwd+vpaddd: 4 per int32
lane; vpdpbusd: 8 per int32 lane). 12 chains cover a step's latency on two ports. Each kernel
also runs as 1 chain (its latency-bound rate), and a chain of dependent scalar adds (1 cycle
each) estimates the clock, so GOP/s / GHz gives ops per cycle, roughly. Figures are the median
of ``--repeats`` runs of ``--seconds`` each, timed in thread CPU time (the time the thread was
descheduled does not count). The table's last column is read from the kernel's own assembly
(``gcc -S``, the noinline ``peak_loop``): the number of distinct accumulator registers the
loop's accumulating instruction writes, which must be 12.

``--old`` adds the first method's figure (``acc = acc * w + c``, all 12 float chains started
equal: gcc merged them into one chain, so the figure was one chain's rate times 12, up to 3x
the real peak).
``peak_gflops()`` is what bench_cnative.py imports (the float kernels, 12 chains).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kwsnet.export.runtime import cpu_flags  # noqa: E402

C_SOURCE = Path(__file__).with_name("bench_peak.c")
CHAINS = 12


@dataclass(frozen=True)
class Kernel:
    """One peak kernel: its build (macros + -m flags), the /proc/cpuinfo flags it needs, the
    ops one chain step does, and the instructions of one step (the last one writes the
    accumulator)."""

    name: str
    isa: str
    defines: tuple[str, ...]
    cflags: tuple[str, ...]
    needs: tuple[str, ...]
    ops_per_step: int
    step_ops: tuple[str, ...]
    unit: str = "GFLOP/s"

    def is_float(self) -> bool:
        return self.unit == "GFLOP/s"


def _f32(bits: int, fma: bool, cflags: tuple[str, ...], needs: tuple[str, ...]) -> Kernel:
    lanes = bits // 32
    v = "" if bits == 128 else "v"
    return Kernel(
        name=f"{bits}-bit {'FMA' if fma else 'mul+add'}",
        isa={128: "SSE2", 256: "AVX2", 512: "AVX-512F"}[bits] + ("+FMA" if fma else ""),
        defines=("KERNEL_F32", f"VW={lanes}"),
        cflags=(*cflags, "-mfma", "-ffp-contract=fast") if fma else (*cflags, "-ffp-contract=off"),
        needs=(*needs, "fma") if fma else needs,
        ops_per_step=2 * lanes,
        step_ops=(f"{v}fmadd",) if fma else (f"{v}mulps", f"{v}addps"),
    )


KERNELS: tuple[Kernel, ...] = (
    _f32(128, False, (), ("sse2",)),
    _f32(256, False, ("-mavx2",), ("avx2",)),
    _f32(512, False, ("-mavx512f",), ("avx512f",)),
    _f32(256, True, ("-mavx2",), ("avx2",)),
    _f32(512, True, ("-mavx512f",), ("avx512f",)),
    Kernel("256-bit vpmaddwd+vpaddd", "AVX2", ("KERNEL_MADDWD", "VW=8"), ("-mavx2",),
           ("avx2",), 4 * 8, ("vpmaddwd", "vpaddd"), "GOP/s"),
    Kernel("512-bit vpmaddwd+vpaddd", "AVX-512BW", ("KERNEL_MADDWD", "VW=16"), ("-mavx512bw",),
           ("avx512bw",), 4 * 16, ("vpmaddwd", "vpaddd"), "GOP/s"),
    Kernel("256-bit vpdpbusd", "AVX-VNNI", ("KERNEL_DPBUSD", "VW=8", "AVXVNNI"),
           ("-mavx2", "-mavxvnni"), ("avx_vnni",), 8 * 8, ("vpdpbusd",), "GOP/s"),
    Kernel("256-bit vpdpbusd", "AVX512-VNNI+VL", ("KERNEL_DPBUSD", "VW=8"),
           ("-mavx512vl", "-mavx512vnni"), ("avx512_vnni", "avx512vl"), 8 * 8, ("vpdpbusd",),
           "GOP/s"),
    Kernel("512-bit vpdpbusd", "AVX512-VNNI", ("KERNEL_DPBUSD", "VW=16"),
           ("-mavx512f", "-mavx512vnni"), ("avx512_vnni",), 8 * 16, ("vpdpbusd",), "GOP/s"),
)  # fmt: skip
CLOCK = Kernel("clock", "x86-64", ("KERNEL_CLOCK",), (), (), 100, ("addq",), "Gadd/s")


def gcc_command(k: Kernel, chains: int = CHAINS, equal_starts: bool = False) -> list[str]:
    """The gcc command line (without the output) of kernel ``k``."""
    d = [f"-D{m}" for m in k.defines] + [f"-DCHAINS={chains}"]
    if equal_starts:
        d.append("-DEQUAL_STARTS")
    return ["gcc", "-O2", "-std=c99", *d, *k.cflags, str(C_SOURCE)]


@functools.cache
def assembly(k: Kernel, chains: int = CHAINS, equal_starts: bool = False) -> str:
    """``gcc -S`` of the kernel's build, as text: what chain_registers reads and what
    run_kernel assembles and runs."""
    r = subprocess.run(
        [*gcc_command(k, chains, equal_starts), "-S", "-o", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    return r.stdout


def compiles(k: Kernel) -> bool:
    """Whether this gcc knows the kernel's -m flags (an old gcc lacks -mavxvnni)."""
    try:
        assembly(k)
    except subprocess.CalledProcessError:
        return False
    return True


def _operands(text: str) -> list[str]:
    """AT&T operands split at the commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def loop_body(asm: str, func: str = "peak_loop") -> list[tuple[str, list[str]]]:
    """The instructions (mnemonic, operands) of the innermost loop of ``func``: from the label
    that the function's last backward conditional jump targets, to that jump."""
    lines = asm.splitlines()
    try:
        start = lines.index(f"{func}:")
    except ValueError as e:
        raise ValueError(f"{func} is not in the assembly") from e
    body = []
    for ln in lines[start + 1 :]:
        if ln.startswith("\t.size") or (ln and not ln[0].isspace() and not ln.startswith(".")):
            break
        body.append(ln.strip())
    labels = {ln[:-1]: i for i, ln in enumerate(body) if ln.startswith(".L") and ln.endswith(":")}
    loop: tuple[int, int] | None = None
    for i, ln in enumerate(body):
        m = re.match(r"j[a-z]+\s+(\.L\w+)$", ln)
        if m and m.group(1) in labels and labels[m.group(1)] < i and ln.split()[0] != "jmp":
            loop = (labels[m.group(1)], i)
    if loop is None:
        raise ValueError(f"no loop in {func}")
    out = []
    for ln in body[loop[0] + 1 : loop[1] + 1]:
        if not ln or ln.startswith(".") or ln.endswith(":"):
            continue
        ln = ln.removeprefix("{vex}").strip()
        mnem, _, ops = ln.partition(" ")
        out.append((mnem, _operands(ops.strip())))
    return out


def chain_registers(k: Kernel, chains: int = CHAINS, equal_starts: bool = False) -> list[str]:
    """The accumulator registers of the kernel's timed loop, read from its assembly: the
    destinations of the step's last instruction (the one that writes the accumulator), one
    per chain step in the loop. 12 distinct registers = 12 independent chains. A destination
    in memory (the chains spilled) or a step instruction missing shows as fewer."""
    body = loop_body(
        assembly(k, chains, equal_starts), "peak_loop_equal" if equal_starts else "peak_loop"
    )
    last = k.step_ops[-1]
    regs = [ops[-1] for mnem, ops in body if mnem.startswith(last) and ops[-1].startswith("%")]
    for op in k.step_ops[:-1]:  # every step does its other instructions once per chain too
        if sum(m.startswith(op) for m, _ in body) != len(regs):
            return []
    return regs


def run_kernel(
    k: Kernel, tmp: Path, seconds: float, repeats: int, chains: int = CHAINS,
    equal_starts: bool = False,
) -> list[float]:  # fmt: skip
    """Build and run one kernel: GOP/s (or GFLOP/s) of each repeat."""
    exe = tmp / f"peak_{abs(hash((k, chains, equal_starts)))}"
    exe.with_suffix(".s").write_text(assembly(k, chains, equal_starts))
    subprocess.run(["gcc", str(exe.with_suffix(".s")), "-o", str(exe)], check=True,
                   capture_output=True)  # fmt: skip
    res = subprocess.run([exe, f"{seconds}", f"{repeats}"], capture_output=True, text=True,
                         check=True)  # fmt: skip
    iters = 0
    rates = []
    for ln in res.stdout.splitlines():
        key, _, val = ln.partition(" ")
        if key == "iters":
            iters = int(val)
        elif key == "rep":
            rates.append(k.ops_per_step * chains * iters / float(val) / 1e9)
    return rates


def available(flags: set[str] | None = None) -> list[Kernel]:
    """The kernels this CPU has (and this gcc can build)."""
    flags = cpu_flags() if flags is None else flags
    return [k for k in KERNELS if all(f in flags for f in k.needs) and compiles(k)]


def peak_gflops(seconds: float = 0.1, repeats: int = 5) -> dict[str, float]:
    """Median GFLOP/s of each float kernel this CPU supports, 12 distinct chains."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        for k in available():
            if k.is_float():
                out[k.name] = statistics.median(run_kernel(k, Path(tmpdir), seconds, repeats))
    return out


def machine_line() -> str:
    """CPU, load average and time: the context every quoted number needs."""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), platform.processor() or "?",
    )  # fmt: skip
    gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout
    l1, l5, l15 = os.getloadavg()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (
        f"machine: {model}, {os.cpu_count()} CPUs, gcc {gcc.strip()}; load average "
        f"{l1:.2f} {l5:.2f} {l15:.2f} (1/5/15 min) at {when}"
    )


def main(argv: list[str] | None = None) -> int:
    """Print the peak table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=0.1, help="length of one repeat")
    p.add_argument("--repeats", type=int, default=7, help="repeats per kernel (median)")
    p.add_argument("--old", action="store_true", help="also the old equal-start float figure")
    p.add_argument("--asm", action="store_true", help="print each kernel's timed loop")
    p.add_argument("--quick", action="store_true", help="smoke run: 0.01 s x 3 repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 0.01, 3
    kernels = available()
    print(machine_line())
    print(
        f"one thread, thread CPU time, median of {args.repeats} repeats of ~{args.seconds:g} s "
        f"(min-max in brackets); ops: a multiply-accumulate counts 2"
    )
    bad = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        ghz = statistics.median(run_kernel(CLOCK, tmp, args.seconds, args.repeats, chains=1))
        print(f"clock estimate (a chain of dependent scalar adds, 1 per cycle): {ghz:.2f} GHz")
        head = f"{'kernel':<24} {'ISA':<15} {'12 chains':>9} {'(min-max)':<15} {'unit':<7} "
        head += f"{'ops/cyc':>7} {'1 chain':>8} {'12/1':>5} {'acc regs':>8}"
        if args.old:
            head += f" {'old: equal starts':>17} {'old/new':>7}"
        print(head)
        for k in kernels:
            r12 = run_kernel(k, tmp, args.seconds, args.repeats)
            r1 = run_kernel(k, tmp, args.seconds, args.repeats, chains=1)
            regs = chain_registers(k)
            if len(set(regs)) != CHAINS:
                bad.append(k.name)
            m12, m1 = statistics.median(r12), statistics.median(r1)
            row = (
                f"{k.name:<24} {k.isa:<15} {m12:9.1f} ({min(r12):.1f}-{max(r12):.1f})".ljust(66)
                + f"{k.unit:<7} {m12 / ghz:7.1f} {m1:8.1f} {m12 / m1:5.1f} {len(set(regs)):8d}"
            )
            if args.old and k.is_float():
                old = statistics.median(
                    run_kernel(k, tmp, args.seconds, args.repeats, equal_starts=True)
                )
                row += f" {old:17.1f} {old / m12:7.2f}"
            print(row)
            if args.asm:
                for mnem, ops in loop_body(assembly(k)):
                    print(f"    {mnem} {', '.join(ops)}")
        for k in KERNELS:
            if k not in kernels:
                missing = [f for f in k.needs if f not in cpu_flags()]
                why = (
                    f"this CPU lacks {', '.join(missing)} in /proc/cpuinfo"
                    if missing
                    else f"this gcc cannot build {' '.join(k.cflags)}"
                )
                print(f"skipped: {k.name} ({k.isa}): {why}")
        if not kernels:
            print("(no kernel: this CPU has none of the kernels' flags)")
    print(machine_line())
    if bad:
        print(f"NOT 12 independent chains in the assembly of: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
