"""Sweep throughput: runs/hour with 1 worker vs N workers on the same tiny sweep.

    python benchmarks/bench_sweep.py [--spec configs/sweeps/smoke.yaml] [--seeds 4] [--workers 2]

Runs the spec (seeds replaced by ``0..seeds-1``) twice into temporary directories, first with
1 worker (all cores' threads to one run), then with ``--workers`` (cores // workers threads
each), and prints wall time, runs/hour and the ratio (target >= 1.7x for 2 workers on 2 cores).
Run it on an idle machine: another sweep or test job on the same cores skews both numbers.
Run from the repo root (the spec's relative paths resolve from the current directory).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from kwsnet.sweep import read_ledger, sweep_main


def _timed_sweep(spec_path: Path, out: Path, workers: int) -> tuple[float, int]:
    start = time.monotonic()
    code = sweep_main(
        ["--config", str(spec_path), "--out", str(out), "--workers", str(workers)]
        + ["--no-summary-run"]
    )
    wall = time.monotonic() - start
    ok = sum(r["status"] == "ok" for r in read_ledger(out / "ledger.jsonl"))
    if code != 0:
        raise SystemExit(f"sweep with {workers} worker(s) failed (exit {code}); see {out}")
    return wall, ok


def main() -> None:
    """Parse the flags, run both sweeps, print the comparison."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="configs/sweeps/smoke.yaml")
    p.add_argument("--seeds", type=int, default=4, help="seeds per grid point (default 4)")
    p.add_argument("--workers", type=int, default=2, help="the parallel case (default 2)")
    args = p.parse_args()
    spec = yaml.safe_load(Path(args.spec).read_text())
    spec["seeds"] = args.seeds
    spec["wandb"] = {**spec.get("wandb", {}), "summary_run": False}
    cores = len(os.sched_getaffinity(0))
    import matplotlib.pyplot  # noqa: F401  (imported once here, not inside the first timing)

    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        spec_path = Path(tmp) / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        results = {}
        for workers in (1, args.workers):
            wall, ok = _timed_sweep(spec_path, Path(tmp) / f"w{workers}", workers)
            results[workers] = (wall, ok)
            print(
                f"{workers} worker(s), {max(1, cores // workers)} thread(s) each: {ok} runs in "
                f"{wall:.1f} s = {3600 * ok / wall:.0f} runs/hour",
                flush=True,
            )
    (w1, n1), (wn, nn) = results[1], results[args.workers]
    ratio = (nn / wn) / (n1 / w1)
    target = 0.85 * args.workers
    verdict = "meets" if ratio >= target else "below"
    print(f"throughput ratio {args.workers} vs 1 worker(s): {ratio:.2f}x ({verdict} {target:.2f}x)")


if __name__ == "__main__":
    main()
