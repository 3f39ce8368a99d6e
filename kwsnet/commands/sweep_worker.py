"""Take runs from a sweep's Optuna study until none is left (one worker; start one per machine).

    kwsnet sweep-worker --storage URL --study NAME [--threads N] [--max_runs N]

The study is made by `kwsnet sweep --config S.yaml --storage URL` (which also starts workers
on its own machine, unless --workers 0). Each run is one `kwsnet fit` process with its own run
dir (the path the planning machine gave it, relative to this worker's working directory),
summary.json and wandb run; its result, provenance and run dir become the trial's attributes.
A worker whose runs are all taken waits while others still run (one of them may die and its
run be queued again), then exits. docs/sweeps.md ("Many machines").
"""

from __future__ import annotations

from collections.abc import Sequence

from jsonargparse import ArgumentParser

from kwsnet.commands.common import new_parser, parse
from kwsnet.errors import UsageError
from kwsnet.sweep.runner import _Stop
from kwsnet.sweep.worker import run_worker

__all__ = ["ALIASES", "parser", "run"]

ALIASES: dict[str, str] = {}


def parser() -> ArgumentParser:
    """``kwsnet sweep-worker``'s parser."""
    p = new_parser("sweep-worker", __doc__ or "")
    p.add_argument(
        "--storage",
        type=str,
        required=True,
        help="the study's storage: sqlite:///path.db, postgresql://..., or journal:path",
    )
    p.add_argument("--study", type=str, required=True, help="the study (the sweep spec's name)")
    p.add_argument(
        "--threads",
        type=int | None,
        default=None,
        help="intra-op threads per run (default: all cores)",
    )
    p.add_argument("--max_runs", type=int | None, default=None, help="stop after N runs")
    return p


def run(argv: Sequence[str]) -> int:
    """``kwsnet sweep-worker``: 0 if every run it made is ok, 1 if one failed, 130 when
    stopped by SIGTERM / SIGINT (its running run is queued again).

    Raises:
        StudyError: a storage URL or study that cannot be used (exit status 2).
    """
    args, _ = parse(parser(), argv, ALIASES)
    for name in ("threads", "max_runs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1, got {value}")
    try:
        records = run_worker(args.storage, args.study, threads=args.threads, max_runs=args.max_runs)
    except (_Stop, KeyboardInterrupt) as exc:
        print(f"worker stopped ({exc.__class__.__name__} {exc}); its running run is queued again")
        return 130
    failed = [r["run_id"] for r in records if r["status"] != "ok"]
    print(f"worker done: {len(records)} run(s), {len(failed)} failed {failed if failed else ''}")
    return 1 if failed else 0
