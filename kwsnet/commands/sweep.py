"""Run every (grid point x seed) of a sweep spec as its own fit process; re-run to resume.

    kwsnet sweep --config configs/sweeps/smoke.yaml [--out DIR] [--workers N]
    kwsnet sweep --config S.yaml --report_only [--metric val/acc] [--baseline LABEL]
    kwsnet sweep --config S.yaml --storage sqlite:///S.db [--workers N] [--launcher submitit]
    kwsnet sweep --report_only --storage URL --study NAME

With --storage the runs go through an Optuna study (kwsnet.sweep.study, worker, launch): this
command queues them and starts --workers worker processes here (0: none; start
`kwsnet sweep-worker` on each machine), or a Slurm job array of them (--launcher submitit);
the tables come from the study.

Each run gets its own run dir and log file under --out and one line in <out>/ledger.jsonl;
at the end results.md / results.csv / results.png (mean ± std, CIs, the difference to the
baseline point with Holm-adjusted p-values and a verdict) and a wandb summary run. The spec's
keys, resume and provenance: kwsnet.sweep, docs/sweeps.md.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import ArgumentParser, Namespace

from kwsnet import yaml12
from kwsnet.commands.common import new_parser, parse
from kwsnet.errors import UsageError, one_line
from kwsnet.sweep.ledger import LEDGER, SweepLock, _content, latest_records, read_ledger
from kwsnet.sweep.publish import _publish, _summary_run, wandb_sweep_config
from kwsnet.sweep.report import MixedProvenanceError, write_results
from kwsnet.sweep.runner import _Stop, run_sweep
from kwsnet.sweep.spec import (
    RunPlan,
    SpecError,
    SweepSpec,
    _launch_key,
    _slug,
    baseline_index,
    content_key,
    load_spec,
    plan_runs,
)

__all__ = ["ALIASES", "parser", "run"]

# kwsnet 0.1's spellings → today's
ALIASES = {
    "--emit-wandb-sweep": "--emit_wandb_sweep",
    "--report-only": "--report_only",
    "--report-name": "--report_name",
    "--allow-mixed-provenance": "--allow_mixed_provenance",
    "--dry-run": "--dry_run",
    "--no-summary-run": "--no_summary_run",
}


def parser() -> ArgumentParser:
    """``kwsnet sweep``'s parser."""
    p = new_parser("sweep", __doc__ or "")
    p.add_argument(
        "--config",
        type=str | None,
        default=None,
        help="sweep spec (configs/sweeps/*.yaml); with --storage --study --report_only the "
        "study's own",
    )
    p.add_argument("--out", type=str | None, default=None, help="default: the spec's out")
    p.add_argument(
        "--workers",
        type=int | None,
        default=None,
        help="parallel runs (with --storage: worker processes here or array tasks; 0: none)",
    )
    p.add_argument(
        "--storage",
        type=str | None,
        default=None,
        metavar="URL",
        help="run through an Optuna study: sqlite:///path.db, postgresql://..., journal:path",
    )
    p.add_argument(
        "--study", type=str | None, default=None, help="with --storage: default the spec's name"
    )
    p.add_argument(
        "--launcher",
        type=Literal["local", "submitit"],
        default="local",
        help="with --storage: worker processes on this machine, or a job array through "
        "submitit (Slurm; its local executor elsewhere)",
    )
    p.add_argument(
        "--cluster",
        type=Literal["slurm", "local", "debug"] | None,
        default=None,
        help="with --launcher submitit: force submitit's executor (default: Slurm if found)",
    )
    p.add_argument(
        "--emit_wandb_sweep",
        type=str | None,
        default=None,
        metavar="PATH",
        help="write a wandb sweep config and exit",
    )
    p.add_argument("--report_only", action="store_true", help="rebuild the results; run nothing")
    p.add_argument(
        "--metric",
        type=str | None,
        default=None,
        help="with --report_only: aggregate this summary.json metric instead of the spec's "
        "(e.g. train/loss); written to results_<report_name>.*",
    )
    p.add_argument(
        "--baseline",
        type=str | None,
        default=None,
        help="with --report_only: the baseline point label (as in the table)",
    )
    p.add_argument(
        "--report_name",
        type=str | None,
        default=None,
        help="with --metric/--baseline: the extra report's file stem results_<name>",
    )
    p.add_argument(
        "--margin",
        type=float | None,
        default=None,
        metavar="M",
        help="equivalence margin in the metric's units (e.g. 0.02): TOST verdicts better / "
        "worse / equivalent / inconclusive (default: the spec's stats.margin)",
    )
    p.add_argument(
        "--allow_mixed_provenance",
        action="store_true",
        help="report runs of different provenance (commit, torch version, CPU capability, ...) "
        "in rows apart instead of refusing",
    )
    p.add_argument("--dry_run", action="store_true", help="print the run commands; run nothing")
    p.add_argument("--no_summary_run", action="store_true", help="skip the wandb summary run")
    return p


def _with_options(spec: SweepSpec, args: Namespace) -> tuple[SweepSpec, str | None]:
    """The spec with ``--margin``, ``--metric`` and ``--baseline`` applied, and the extra
    report's name (None: the spec's own report).

    Raises:
        UsageError: a bad margin or baseline, report options without ``--report_only``.
    """
    a = args
    if a.margin is not None:
        try:
            spec = dataclasses.replace(spec, stats={**spec.stats, "margin": a.margin})
        except SpecError as exc:
            raise UsageError(f"--margin: {exc}") from exc
    if not (a.metric or a.baseline or a.report_name):
        return spec, None
    if not a.report_only:
        raise UsageError(
            "--metric, --baseline and --report_name need --report_only "
            "(they re-read the ledger; the runs are the spec's)"
        )
    stats = {**spec.stats, "baseline": a.baseline} if a.baseline else spec.stats
    try:
        spec = dataclasses.replace(spec, metric=a.metric or spec.metric, stats=stats)
        baseline_index(spec, spec.stat["baseline"])
    except SpecError as exc:
        raise UsageError(f"--baseline: {exc}") from exc
    parts = (a.metric, a.baseline and f"vs_{a.baseline}")
    return spec, a.report_name or _slug("_".join(x for x in parts if x))


def _check_base_configs(spec: SweepSpec) -> dict[str, str]:
    """Every base config exists and reads: returns their content keys (``content_keys``).

    Raises:
        SpecError: one is missing or unreadable.
    """
    keys = {}
    for config in spec.base_configs:
        if not os.path.isfile(config):
            raise SpecError(f"base_config {config} not found (relative to {os.getcwd()})")
        try:
            keys[config] = content_key(spec, base_config=config)
        except (OSError, yaml12.YAMLError) as exc:
            raise SpecError(f"base_config {config}: {one_line(exc)}") from exc
    return keys


def run(argv: Sequence[str]) -> int:
    """``kwsnet sweep``: 0 if every run is ok, 1 if any failed, 130 when interrupted.

    Raises:
        SpecError, ConfigSyntaxError, UsageError: a bad spec or option (exit status 2).
        SweepLockedError: another sweep runs on ``--out`` (exit status 2).
        MixedProvenanceError: the report would average runs of different provenance (exit
            status 2; the runs stay in the ledger: ``--report_only --allow_mixed_provenance``
            reports them).
    """
    argv = list(argv)
    args, _ = parse(parser(), argv, ALIASES)
    if args.storage:
        return _run_on_study(args, argv)
    for name in ("study", "cluster"):
        if getattr(args, name) is not None:
            raise UsageError(f"--{name} needs --storage")
    if args.launcher != "local":
        raise UsageError("--launcher submitit needs --storage (the workers share a study)")
    if args.config is None:
        raise UsageError("--config is required (a sweep spec, configs/sweeps/*.yaml)")
    spec, report_name = _with_options(load_spec(args.config), args)
    if spec.search is not None:
        raise UsageError(
            f"{args.config} has a search (a sampler over ranges), which runs through an Optuna "
            f"study: add --storage URL (e.g. --storage sqlite:///sweeps/{spec.name}.db)"
        )
    out = args.out or spec.out
    workers = args.workers or spec.workers
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if args.emit_wandb_sweep:
        target = Path(args.emit_wandb_sweep)
        cfg = wandb_sweep_config(spec)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(cfg, sort_keys=False))
        print(f"wrote {target}: `wandb sweep {target}`, then `wandb agent <id>`")
        return 0
    keys = _check_base_configs(spec)
    plans = plan_runs(spec, out)
    if args.dry_run:
        for p in plans:
            print(shlex.join(p.argv))
        return 0
    command = shlex.join(["kwsnet", "sweep", *(a for a in argv if a != "--report_only")])
    mixed = args.allow_mixed_provenance
    ledger = os.path.join(out, LEDGER)
    try:
        if args.report_only:  # read-only on the ledger: works beside a running sweep, no lock
            _, table = write_results(
                spec, out, command, name=report_name, allow_mixed_provenance=mixed
            )
            print(table, end="")
            _publish(spec, out, report_name)
        else:
            status = _run_and_report(spec, plans, out, workers, command, args)
            if status:
                return status
    except MixedProvenanceError as exc:
        raise MixedProvenanceError(f"{ledger}: {exc}") from None
    keys = {c: _launch_key(spec, c) or k for c, k in keys.items()}  # as the results saw it
    return _status(spec, plans, read_ledger(ledger), keys)


def _status(
    spec: SweepSpec, plans: list[RunPlan], history: list[dict[str, Any]], keys: dict[str, Any]
) -> int:
    """0 if every planned run's latest record is ok and of the spec's content, else 1."""
    latest = latest_records(history)
    ok = [
        latest.get(p.run_id, {}).get("status") == "ok"
        and _content(latest[p.run_id], spec, keys) != "other"
        for p in plans
    ]
    return 0 if all(ok) else 1


def _run_on_study(args: Namespace, argv: list[str]) -> int:
    """``kwsnet sweep --storage``: queue the spec's runs in its Optuna study, run workers on
    them (here, or as a submitit job array), and report from the study; with
    ``--report_only``, only the report. 0 if every run is ok, 1 if one failed, 130 when
    interrupted.

    Raises:
        StudyError: a storage or study that cannot be used; UsageError: options that do not
            go with --storage.
    """
    from kwsnet.sweep import launch
    from kwsnet.sweep import study as engine

    url = args.storage
    if args.emit_wandb_sweep:
        raise UsageError("--emit_wandb_sweep and --storage are two engines: give one")
    if args.cluster is not None and args.launcher != "submitit":
        raise UsageError("--cluster needs --launcher submitit")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    command = shlex.join(["kwsnet", "sweep", *(a for a in argv if a != "--report_only")])
    if args.report_only:
        if args.config is None and args.study is None:
            raise UsageError("--report_only --storage needs --study NAME (or --config S.yaml)")
        name = args.study or load_spec(args.config).name
        study = engine.load_study(url, name)
        spec, report_name = _with_options(engine.study_report_spec(study), args)
        out = args.out or spec.out
        return _report_study(spec, study, out, command, args, report_name)
    if args.config is None:
        raise UsageError("--storage needs --config S.yaml to plan the study")
    spec, _ = _with_options(load_spec(args.config), args)
    out = args.out or spec.out
    _check_base_configs(spec)
    if args.dry_run:
        for p in plan_runs(spec, out):
            print(shlex.join(p.argv))
        if spec.search is not None:
            print(f"# a search: the workers sample {spec.search['points']} point(s) as they run")
        return 0
    name = args.study or spec.name
    study, queued = engine.plan_study(spec, url, out, name)
    workers = spec.workers if args.workers is None else args.workers
    print(
        f"sweep {spec.name}: study {name!r} in {url}: {queued} run(s) queued now; "
        f"{workers} {args.launcher} worker(s)",
        flush=True,
    )
    if workers == 0:
        print(
            "start workers with: "
            + shlex.join(["kwsnet", "sweep-worker", "--storage", url, "--study", name])
            + "; then: "
            + shlex.join(["kwsnet", "sweep", "--report_only", "--storage", url, "--study", name])
        )
        return 0
    start = time.monotonic()
    try:
        if args.launcher == "submitit":
            jobs = launch.submit_workers(spec, url, name, workers, out, args.cluster)
            print(f"submitted {len(jobs)} worker job(s): {[j.job_id for j in jobs]}", flush=True)
            for job in jobs:
                try:
                    job.result()
                except Exception as exc:  # the study keeps what the others did: report it
                    print(
                        f"kwsnet: warning: worker job {job.job_id} failed: {exc}", file=sys.stderr
                    )
        else:
            procs = launch.start_local_workers(spec, url, name, workers, out)
            print(f"worker logs: {os.path.join(out, 'workers')}", flush=True)
            codes = launch.wait_local_workers(procs)
            bad = [c for c in codes if c not in (0, 1)]
            if bad:
                print(f"kwsnet: warning: worker exit codes {codes}", file=sys.stderr)
    except (_Stop, KeyboardInterrupt):
        print("sweep stopped; the study keeps its runs: re-run the same command to go on")
        return 130
    study = engine.load_study(url, name)
    spec, _ = _with_options(engine.study_report_spec(study), args)
    return _report_study(spec, study, out, command, args, None, time.monotonic() - start)


def _report_study(
    spec: SweepSpec,
    study: Any,
    out: str,
    command: str,
    args: Namespace,
    report_name: str | None,
    wall_s: float | None = None,
) -> int:
    """Write the results of a study's runs into ``out`` (as a local sweep does), publish them,
    and log the wandb summary run after a sweep; 0 if every planned run is ok, else 1."""
    from kwsnet.sweep import study as engine

    history = engine.study_records(study)
    keys = engine.study_keys(study)
    engine.write_ledger_snapshot(history, out)
    try:
        rows, table = write_results(
            spec,
            out,
            command,
            wall_s,
            name=report_name,
            allow_mixed_provenance=args.allow_mixed_provenance,
            history=history,
            keys=keys,
        )
    except MixedProvenanceError as exc:
        raise MixedProvenanceError(f"study {study.study_name}: {exc}") from None
    print(table, end="")
    print(f"results: {os.path.join(out, 'results.md')}, results.csv, results.png")
    if wall_s is not None and spec.wandb.get("summary_run", True) and not args.no_summary_run:
        try:
            print(f"wandb summary run: {_summary_run(spec, out, rows)}")
        except Exception as exc:  # the results files are written: report it and go on
            print(f"kwsnet: warning: wandb summary run failed: {exc}", file=sys.stderr)
    _publish(spec, out, report_name)
    return _status(spec, plan_runs(spec, out), history, keys)


def _run_and_report(
    spec: SweepSpec, plans: list[RunPlan], out: str, workers: int, command: str, args: Namespace
) -> int:
    """Run the sweep under its lock and write the results; 130 when interrupted, else 0."""
    mixed = args.allow_mixed_provenance
    start = time.monotonic()
    lock = SweepLock(out)
    lock.acquire()
    try:
        try:
            run_sweep(spec, plans, out, workers)
        except (_Stop, KeyboardInterrupt):
            try:
                write_results(
                    spec, out, command, time.monotonic() - start, allow_mixed_provenance=mixed
                )
            except MixedProvenanceError as exc:
                print(f"kwsnet: error: {exc}", file=sys.stderr)
            return 130
        rows, table = write_results(
            spec, out, command, time.monotonic() - start, allow_mixed_provenance=mixed
        )
        print(table, end="")
        print(f"results: {os.path.join(out, 'results.md')}, results.csv, results.png")
        if spec.wandb.get("summary_run", True) and not args.no_summary_run:
            try:
                print(f"wandb summary run: {_summary_run(spec, out, rows)}")
            except Exception as exc:  # the results files are written: report it and go on
                print(f"kwsnet: warning: wandb summary run failed: {exc}", file=sys.stderr)
        _publish(spec, out)
    finally:
        lock.release()
    return 0
