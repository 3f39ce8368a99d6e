"""Sweep throughput: runs/hour with 1 worker vs N workers on the same tiny sweep.

    python benchmarks/bench_sweep.py [--spec configs/sweeps/smoke.yaml] [--seeds 4] [--workers 2]
        [--engine local|sqlite|journal]

``--engine``: the local runner (default), or the Optuna engine (``kwsnet sweep --storage``)
with a SQLite database or a journal file in the temporary directory: the study is planned,
then 1 (and then ``--workers``) ``kwsnet sweep-worker`` processes take its runs.

Runs the spec (seeds replaced by ``0..seeds-1``) twice into temporary directories, first with
1 worker (all cores' threads to one run), then with ``--workers`` (cores // workers threads
each), and prints wall time, runs/hour and the ratio (target >= 1.7x for 2 workers on 2 cores).
Run it on an idle machine: another sweep or test job on the same cores skews both numbers.
Run from the repo root (the spec's relative paths resolve from the current directory).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import yaml

from kwsnet.sweep import load_spec, plan_runs, run_sweep


def _timed_sweep(spec_path: Path, out: Path, workers: int, engine: str) -> tuple[float, int]:
    """Time the run phase only (no table, plot or wandb summary); return (seconds, ok runs).
    ``engine``: ``local``, or ``sqlite`` / ``journal`` (an Optuna study in ``out``: planning
    is not timed, the workers from their start to their exit are)."""
    spec = load_spec(spec_path)
    if engine == "local":
        plans = plan_runs(spec, str(out))
        start = time.monotonic()
        records = run_sweep(spec, plans, str(out), workers, log=io.StringIO())
        wall = time.monotonic() - start
    else:
        from kwsnet.sweep import launch, study

        out.mkdir(parents=True)
        url = f"sqlite:///{out / 'study.db'}" if engine == "sqlite" else f"journal:{out / 'j.log'}"
        study.plan_study(spec, url, str(out))
        start = time.monotonic()
        procs = launch.start_local_workers(spec, url, spec.name, workers, str(out))
        launch.wait_local_workers(procs)
        wall = time.monotonic() - start
        records = study.study_records(study.load_study(url, spec.name))
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise SystemExit(
            f"{len(failed)} run(s) failed with {workers} worker(s); first: "
            f"{failed[0]['run_id']}: {failed[0]['error']}"
        )
    return wall, len(records)


def main() -> None:
    """Parse the flags, run both sweeps, print the comparison."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="configs/sweeps/smoke.yaml")
    p.add_argument("--seeds", type=int, default=4, help="seeds per grid point (default 4)")
    p.add_argument("--workers", type=int, default=2, help="the parallel case (default 2)")
    p.add_argument(
        "--engine",
        choices=["local", "sqlite", "journal"],
        default="local",
        help="the local runner, or an Optuna study in SQLite / a journal file",
    )
    args = p.parse_args()
    spec = yaml.safe_load(Path(args.spec).read_text())
    spec["seeds"] = args.seeds
    cores = len(os.sched_getaffinity(0))

    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        spec_path = Path(tmp) / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        results = {}
        for workers in (1, args.workers):
            wall, ok = _timed_sweep(spec_path, Path(tmp) / f"w{workers}", workers, args.engine)
            results[workers] = (wall, ok)
            print(
                f"{args.engine}: {workers} worker(s), {max(1, cores // workers)} thread(s) each: "
                f"{ok} runs in {wall:.1f} s = {3600 * ok / wall:.0f} runs/hour",
                flush=True,
            )
    (w1, n1), (wn, nn) = results[1], results[args.workers]
    ratio = (nn / wn) / (n1 / w1)
    target = 0.85 * args.workers
    verdict = "meets" if ratio >= target else "below"
    print(f"throughput ratio {args.workers} vs 1 worker(s): {ratio:.2f}x ({verdict} {target:.2f}x)")


if __name__ == "__main__":
    main()
