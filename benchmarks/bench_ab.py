"""Paired A/B of two builds of the C runtime: the tree's libkwsnet.so against a base revision's,
on the same model files, timed side by side.

    python benchmarks/bench_ab.py --base REV [--model raw_conv,kws_bc_resnet,...]
        [--dtype float,int8] [--isa avx2,avx512vnni] [--pairs 1000] [--runs 5]
        [--instances 4] [--until N] [--base-lib PATH]

For kernel work on a machine whose speed drifts (a shared VM: up to ~1.5x within minutes),
where two separate runs of bench_int8.py cannot tell a 5 % change. ``--base REV`` builds
``git archive REV cnative`` in a temporary folder (``--base-lib``: an existing libkwsnet.so
instead); the new side is the working tree's cnative/ (built by make as usual). The models are
bench_int8.py's (``raw_conv``, ``kws_cnn_mel``, the exported configs; random weights), written
once by this tree's exporter as float (format 2) and int8 (format 3) files, so the base must
read this tree's file format and ABI.

Per model, dtype and kernel path (KWSN_ISA, skipped where the CPU lacks it), each of ``--runs``
fresh processes loads both libraries side by side (ctypes, distinct paths), ``--instances``
copies of the model per side (own weights and arena at other addresses, used in turn), and
alternates the prepared single-clip ``kwsn_forward`` calls ``--pairs`` times (the order swapped
every other pair), one thread (``--until N``: ``kwsn_forward_until`` of the first N layers, to
time a few layers). A process's ratio is the median of its pairs' new / base ratios; printed are
the median over processes, their smallest and largest, the widest distribution-free 95 %
interval of a process's median (order statistics), and whether every output was bit-identical.
Processes are needed: code and heap placement differ per process (ASLR), and one process's
ratio can sit a few % off another's with a tight interval of its own (seen: 1.007 to 1.121 for
one change on an AMD EPYC); the min / max across processes is the honest spread, and an A/A
run (``--base HEAD`` on a clean tree) the floor. A spread that straddles 1 is no measured
difference, not an equivalence."""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch load their BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_cnative import CONFIGS, Classifier, MelClassifier, c_forward_call, config_model  # noqa: E402
from bench_int8 import ISAS, calibration_clips, write_pair  # noqa: E402

from kwsnet.export.runtime import build_cnative  # noqa: E402

MODELS = ("raw_conv", *CONFIGS)


def build_base(rev: str, tmp: Path) -> Path:
    """libkwsnet.so of revision ``rev``'s cnative/, built under ``tmp``; its path."""
    src = tmp / "src"
    src.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "cnative"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"bench_ab: git archive {rev} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    build = build_cnative("all", cnative_dir=src / "cnative", build_dir=tmp / "build")
    return build / "libkwsnet.so"


def model_of(name: str) -> torch.nn.Module:
    """bench_int8.py's model ``name`` in eval mode."""
    torch.manual_seed(0)
    if name == "raw_conv":
        return Classifier("per_conv").eval()
    if name == "kws_cnn_mel":
        return MelClassifier().eval()
    model, samples = config_model(name)
    if samples != 16000:
        raise SystemExit(f"bench_ab: {name} takes {samples} samples per clip, not 16000")
    return model


def median_ci(ratios: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """The median of ``ratios`` and a distribution-free ``level`` confidence interval for it
    (order statistics ``k`` and ``n - 1 - k`` with ``k`` from the binomial(n, 1/2) normal
    approximation, n >= 20)."""
    xs = sorted(ratios)
    n = len(xs)
    z = {0.95: 1.959964, 0.99: 2.575829}[level]
    k = max(0, int(math.floor(n / 2 - z * math.sqrt(n) / 2)))
    return float(np.median(xs)), xs[k], xs[n - 1 - k]


def paired(base: list, new: list, pairs: int) -> tuple[float, float, float, float, float, list]:
    """Alternate base and new calls ``pairs`` times (the order swapped every pair; pair i uses
    instance i mod len of each side; 20 warm-up calls of each): ``(base median us, new median
    us, median new/base, CI low, CI high, [median new/base per instance])``."""
    for _ in range(20):
        for b, n in zip(base, new, strict=True):
            b()
            n()
    m = len(base)
    tb, tn, ratio = [], [], []
    per: list[list[float]] = [[] for _ in range(m)]
    clock = time.perf_counter_ns
    for i in range(pairs):
        new_first = (i // m) % 2 == 1
        first, second = (new[i % m], base[i % m]) if new_first else (base[i % m], new[i % m])
        t0 = clock()
        first()
        t1 = clock()
        second()
        t2 = clock()
        n_ns, b_ns = (t1 - t0, t2 - t1) if new_first else (t2 - t1, t1 - t0)
        tb.append(b_ns / 1e3)
        tn.append(n_ns / 1e3)
        ratio.append(n_ns / b_ns)
        per[i % m].append(n_ns / b_ns)
    med, lo, hi = median_ci(ratio)
    return (float(np.median(tb)), float(np.median(tn)), med, lo, hi,
            [float(np.median(r)) for r in per])  # fmt: skip


def measure(cfg: dict) -> list[dict]:
    """One process's rows: per model file, kernel path and dtype, the paired timing of the
    base and new libraries (``cfg``: the files, libraries and options main() passes)."""
    x = calibration_clips(1, seed=7).numpy()
    rows = []
    for name, files in cfg["files"].items():
        for isa in cfg["isa"]:
            for dt in cfg["dtype"]:
                b = [
                    c_forward_call(
                        Path(files[dt]), x, isa, n_run=cfg["until"], lib=Path(cfg["base_lib"])
                    )
                    for _ in range(cfg["instances"])
                ]
                n = [
                    c_forward_call(
                        Path(files[dt]), x, isa, n_run=cfg["until"], lib=Path(cfg["new_lib"])
                    )
                    for _ in range(cfg["instances"])
                ]
                if b[0][1] != isa or n[0][1] != isa:
                    break  # the CPU lacks this path
                for call, _, _ in b + n:
                    call()
                outs = [alive[2].view(np.uint32) for _, _, alive in b + n]
                same = all(np.array_equal(outs[0], o) for o in outs[1:])
                bm, nm, r, lo, hi, per = paired(
                    [c for c, _, _ in b], [c for c, _, _ in n], cfg["pairs"]
                )
                rows.append({"model": name, "dtype": dt, "isa": isa, "base_us": bm,
                             "new_us": nm, "ratio": r, "lo": lo, "hi": hi, "inst": per,
                             "same": bool(same)})  # fmt: skip
                del b, n
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", help="git revision whose cnative/ is the base (A)")
    p.add_argument("--base-lib", type=Path, help="an existing libkwsnet.so as the base instead")
    p.add_argument(
        "--model", type=lambda v: v.split(","), default=["raw_conv", "kws_cnn_mel"],
        help=f"comma-separated, of {', '.join(MODELS)} (default raw_conv,kws_cnn_mel)",
    )  # fmt: skip
    p.add_argument("--dtype", type=lambda v: v.split(","), default=["float", "int8"])
    p.add_argument(
        "--isa", type=lambda v: v.split(","), default=None,
        help=f"comma-separated kernel paths (default: those of {','.join(ISAS)} the CPU has)",
    )  # fmt: skip
    p.add_argument("--pairs", type=int, default=1000, help="pairs per row and process")
    p.add_argument("--until", type=int, default=None, help="run only the first N layers")
    p.add_argument(
        "--instances", type=int, default=4,
        help="models loaded per side and process, each with its own arena (default 4)",
    )  # fmt: skip
    p.add_argument(
        "--runs", type=int, default=5,
        help="fresh processes the pairs are timed in (default 5): code and heap addresses "
        "differ per process, and so can the ratio",
    )  # fmt: skip
    p.add_argument("--worker", help=argparse.SUPPRESS)  # a JSON config: one process's rows
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(measure(json.loads(args.worker))))
        return 0
    if (args.base is None) == (args.base_lib is None):
        p.error("give one of --base REV and --base-lib PATH")
    if args.pairs < 20:
        p.error("--pairs must be at least 20 (the interval's normal approximation)")
    if args.runs < 1 or args.instances < 1:
        p.error("--runs and --instances must be at least 1")
    for name in args.model:
        if name not in MODELS:
            p.error(f"--model {name!r}: expected one of {', '.join(MODELS)}")
    for dt in args.dtype:
        if dt not in ("float", "int8"):
            p.error(f"--dtype {dt!r}: expected float or int8")
    new_lib = build_cnative("all") / "libkwsnet.so"
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if args.base_lib is not None:
            if not args.base_lib.exists():
                p.error(f"--base-lib {args.base_lib}: no such file")
            base_lib = tmp / "base_libkwsnet.so"  # a distinct path: loaded beside the new one
            shutil.copy(args.base_lib, base_lib)
            label = str(args.base_lib)
        else:
            base_lib = build_base(args.base, tmp)
            label = args.base
        new_copy = tmp / "new_libkwsnet.so"  # the build folder may be rebuilt meanwhile
        shutil.copy(new_lib, new_copy)
        files = {}
        for name in args.model:
            mdir = tmp / name
            mdir.mkdir()
            f32, i8, _ = write_pair(model_of(name), mdir)
            files[name] = {"float": str(f32), "int8": str(i8)}
        cfg = {"files": files, "isa": args.isa or list(ISAS), "dtype": args.dtype,
               "until": args.until, "instances": args.instances, "pairs": args.pairs,
               "base_lib": str(base_lib), "new_lib": str(new_copy)}  # fmt: skip
        runs = []
        for _ in range(args.runs):
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(cfg)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                raise SystemExit(f"bench_ab: a worker failed:\n{proc.stderr[-3000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    load = os.getloadavg()[0]
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}; base {label}, new: "
        f"the working tree at {head or '?'} (uncommitted changes included); load {load:.2f}"
    )
    what = f"the first {args.until} layers" if args.until is not None else "the whole model"
    print(
        f"{what}; {args.runs} processes x {args.pairs} alternated pairs, {args.instances} "
        "instances a side, one thread. ratio = new / base: the median over processes of "
        "each process's median pair ratio; min / max of those; widest 95 % CI in a process"
    )
    print(
        f"  {'model':<20} {'dtype':<6} {'path':<11} {'base us':>8} {'new us':>8} "
        f"{'ratio':>6} {'min':>6} {'max':>6} {'CI in a run':>15}  same bits"
    )
    for i, row in enumerate(runs[0]):
        rs = [run[i] for run in runs]
        ratios = [r["ratio"] for r in rs]
        lo, hi = min(r["lo"] for r in rs), max(r["hi"] for r in rs)
        same = all(r["same"] for r in rs)
        print(f"  {row['model']:<20} {row['dtype']:<6} {row['isa']:<11} "
              f"{np.median([r['base_us'] for r in rs]):8.1f} "
              f"{np.median([r['new_us'] for r in rs]):8.1f} {np.median(ratios):6.3f} "
              f"{min(ratios):6.3f} {max(ratios):6.3f} [{lo:.3f}, {hi:.3f}]  "
              f"{'yes' if same else 'NO'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
