"""Multi-seed sweeps: spec × seeds → one subprocess per run → JSONL ledger → table, CSV, plot.

``kwsnet sweep --config configs/sweeps/smoke.yaml [--out DIR] [--workers N]`` runs every
(grid point × seed) of a sweep spec as its own ``kwsnet fit`` process with its own run dir and
log file, records each finished run as one line of ``<out>/ledger.jsonl`` and, at the end,
writes ``results.md`` / ``results.csv`` / ``results.png`` and a wandb summary run. Re-running
the same command resumes: runs already recorded ``ok`` are skipped, unless they were made with
other content (see below). See ``docs/sweeps.md``.

A spec (YAML) has these keys (only ``name``, ``base_config`` and ``seeds`` are required)::

    name: kws_raw_ln                 # wandb group, default out dir sweeps/<name>
    base_config: configs/kws_raw.yaml
    seeds: 10                        # a count (seeds 0..9) or a list of ints
    grid:                            # dotted CLI key -> list of values (cartesian product)
      model.backbone.init_args.norm_placement: [per_conv, end, none]
    overrides:                       # dotted CLI key -> value, the same for every run
      trainer.max_epochs: 50
    metric: test/acc                 # the summary.json metric the table reports
    stats: {ci: t, alpha: 0.05, baseline: null, bootstrap_samples: 10000, seed: 0, goal: null,
            margin: null}
    workers: 2                       # parallel runs; threads per run = cores // workers
    out: sweeps/kws_raw_ln           # run dirs, ledger, results
    publish: docs/sweeps/kws_raw_ln  # optional: copy results.{md,csv,png}, ledger.jsonl here
    wandb: {log_runs: true, summary_run: true, project: kwsnet, offline: null}

``base_config`` may also be a list, or ``grid`` may have a ``base_config`` key (not both): the
base config is then a grid key like any other (the first, slowest one), so a model comparison
is one spec; each run's ``--config``, content key and logger come from its own base config.
Grid values that are dicts or long lists get short labels in run ids and tables: the class name
of a ``class_path`` dict (with a 6-hex hash of the value when two values share it), else
``dict-<hash>`` / ``list-<hash>``; a base config is labelled by its file stem.

``stats`` (see ``kwsnet/stats.py`` and docs/sweeps.md): the CI method of each point's mean
(``t`` or ``bootstrap``), ``alpha``, the ``baseline`` point (a label as in the table, e.g.
``lr=0.005,norm_placement=per_conv``, or an index into the grid points; default the first),
``bootstrap_samples`` and the bootstrap ``seed``, ``goal`` (``max``/``min``; default from
the metric's name: lower is better for losses and error rates), and ``margin`` (the equivalence
margin in the metric's units, e.g. 0.02; ``--margin`` overrides; default none). Every table has
the mean's CI, the difference to the baseline with its CI, the p-value (paired by seed, else
Welch), the Holm-adjusted p-value and a verdict: better / worse / not distinguishable, or with
a margin better / worse / equivalent (TOST) / inconclusive, with the TOST p-values.

Provenance: every ledger record carries ``provenance`` (``kwsnet.tracking.provenance()``: the
run's own from its summary.json, else the sweep process's with the run's thread count) and
``provenance_source`` (``run`` / ``sweep``). The report never averages runs of different
provenance (commit, kwsnet / torch / lightning version, CPU capability; records without one
are the group ``unknown``): it refuses with exit code 2 and a line naming the groups, unless
``--allow-mixed-provenance``, which reports each group in rows of its own.

Relative paths (``base_config``, ``out``, ``publish``, data roots in ``overrides``) resolve
from the current directory, as the run processes start there.

Resume matches runs on content, not on the base config's path: every record carries a
``content_key``, the sha256 of its own base config file's parsed YAML and the spec's overrides
(``content_key()``). A value changed in the base config or in ``overrides`` makes the recorded
runs "other content": they are re-run, left out of the table until then, and results.md says how
many. Comments, whitespace, quoting and key order do not count. Records written before the key
existed have only ``fixed`` (path and overrides): with the same path and overrides they are
kept, counted in results.md as "content unknown"; with others they are re-run.

The package's rooms: ``spec`` (the spec, grid points and labels, content keys, each run's
arguments), ``ledger`` (the JSONL ledger, run records, resume's content matching, the lock),
``runner`` (the process pool and signals), ``report`` (aggregation and statistics, results.md,
results.csv, the plot, the wandb summary run and sweep config, publishing); this module holds
the CLI (``sweep_main``) and re-exports their public names.

Every run writes only into its own run dir (``<out>/runs/<run_id>``): ``default_root_dir``, and
the ``save_dir`` of the logger the base config (or an override) sets, so config.yaml and the
logger's files land there too, with or without ``wandb.log_runs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

import yaml

from kwsnet.sweep.ledger import (
    LEDGER,
    LOCK,
    PROVENANCE_KEYS,
    SweepLock,
    _content,
    append_ledger,
    latest_records,
    provenance_key,
    read_ledger,
    record_collapsed,
    record_run,
)
from kwsnet.sweep.report import (
    RESULT_FILES,
    MixedProvenanceError,
    _publish,
    _summary_run,
    add_stats,
    aggregate,
    format_table,
    stats_note,
    wandb_sweep_config,
    write_results,
)
from kwsnet.sweep.runner import (
    _Stop,
    run_sweep,
)
from kwsnet.sweep.spec import (
    BASE_KEY,
    RunPlan,
    SweepSpec,
    _launch_key,
    _slug,
    baseline_index,
    cli_value,
    content_key,
    content_keys,
    grid_points,
    load_spec,
    plan_runs,
    point_label,
    run_args,
    run_base_config,
    value_labels,
)

__all__ = [
    "SweepSpec",
    "RunPlan",
    "load_spec",
    "plan_runs",
    "read_ledger",
    "content_key",
    "content_keys",
    "point_label",
    "value_labels",
    "baseline_index",
    "run_base_config",
    "record_collapsed",
    "add_stats",
    "stats_note",
    "append_ledger",
    "latest_records",
    "aggregate",
    "format_table",
    "write_results",
    "wandb_sweep_config",
    "SweepLock",
    "sweep_main",
    "FIT_ENTRY",
    "BASE_KEY",
    "LEDGER",
    "LOCK",
    "RESULT_FILES",
    "cli_value",
    "grid_points",
    "run_args",
    "record_run",
    "run_sweep",
    "MixedProvenanceError",
    "PROVENANCE_KEYS",
    "provenance_key",
]

# The command a run starts with; its arguments follow. ``-c`` rather than ``train.py`` so the
# runner works from an installed package too. Tests swap in a fake trainer here.
FIT_ENTRY: list[str] = [sys.executable, "-c", "from kwsnet.cli import main; main()", "fit"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kwsnet sweep",
        description="Run every (grid point x seed) of a sweep spec; "
        "re-run the same command to resume.",
    )
    p.add_argument("--config", required=True, help="sweep spec YAML (configs/sweeps/*.yaml)")
    p.add_argument("--out", help="sweep directory (default: the spec's out, else sweeps/<name>)")
    p.add_argument("--workers", type=int, help="parallel runs (default: the spec's workers)")
    p.add_argument("--emit-wandb-sweep", metavar="PATH", help="write a wandb sweep config and exit")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the results from the ledger; run nothing",
    )
    p.add_argument(
        "--metric",
        help="with --report-only: aggregate this summary.json metric instead of the spec's "
        "(e.g. train/loss); written to results_<report-name>.*",
    )
    p.add_argument(
        "--baseline",
        help="with --report-only: the baseline point label (as in the table) instead of the "
        "spec's stats.baseline",
    )
    p.add_argument(
        "--report-name",
        help="with --metric/--baseline: the extra report's file stem results_<name> "
        "(default: from the metric and baseline)",
    )
    p.add_argument(
        "--margin",
        type=float,
        metavar="M",
        help="equivalence margin in the metric's units (e.g. 0.02): TOST against the baseline "
        "and the verdicts better / worse / equivalent / inconclusive (default: the spec's "
        "stats.margin, else no equivalence test)",
    )
    p.add_argument(
        "--allow-mixed-provenance",
        action="store_true",
        help="report runs of different provenance (commit, torch version, CPU capability, ...) "
        "in rows apart instead of refusing",
    )
    p.add_argument("--dry-run", action="store_true", help="print the run commands; run nothing")
    p.add_argument("--no-summary-run", action="store_true", help="skip the wandb summary run")
    return p


def sweep_main(argv: list[str]) -> int:
    """``kwsnet sweep``: returns 0 if every run is ok, 1 if any failed, 2 on usage errors and
    when the report refuses to average runs of different provenance (``MixedProvenanceError``;
    the runs stay in the ledger: ``--report-only --allow-mixed-provenance`` reports them)."""
    args = _parser().parse_args(argv)
    try:
        spec = load_spec(args.config)
    except (OSError, ValueError) as exc:
        print(f"kwsnet sweep: {exc}", file=sys.stderr)
        return 2
    except yaml.YAMLError as exc:  # one line: the file, the line and what YAML expected
        from kwsnet.errors import error_lines, yaml_syntax_error

        text = Path(args.config).read_text(errors="replace")
        for line in error_lines(yaml_syntax_error(args.config, text, exc)):
            print(line.replace("kwsnet:", "kwsnet sweep:", 1), file=sys.stderr)
        return 2
    if args.margin is not None:
        try:
            spec = dataclasses.replace(spec, stats={**spec.stats, "margin": args.margin})
        except ValueError as exc:
            print(f"kwsnet sweep: --margin: {exc}", file=sys.stderr)
            return 2
    report_name = None
    if args.metric or args.baseline or args.report_name:
        if not args.report_only:
            print(
                "kwsnet sweep: --metric, --baseline and --report-name need --report-only "
                "(they re-read the ledger; the runs are the spec's)",
                file=sys.stderr,
            )
            return 2
        stats = {**spec.stats, "baseline": args.baseline} if args.baseline else spec.stats
        try:
            spec = dataclasses.replace(spec, metric=args.metric or spec.metric, stats=stats)
            baseline_index(spec, spec.stat["baseline"])
        except ValueError as exc:
            print(f"kwsnet sweep: --baseline: {exc}", file=sys.stderr)
            return 2
        report_name = args.report_name or _slug(
            "_".join(x for x in (args.metric, args.baseline and f"vs_{args.baseline}") if x)
        )
    out = args.out or spec.out
    workers = args.workers or spec.workers
    if workers < 1:
        print(f"kwsnet sweep: --workers must be >= 1, got {workers}", file=sys.stderr)
        return 2
    if args.emit_wandb_sweep:
        try:
            cfg = wandb_sweep_config(spec)
        except ValueError as exc:
            print(f"kwsnet sweep: {exc}", file=sys.stderr)
            return 2
        Path(args.emit_wandb_sweep).parent.mkdir(parents=True, exist_ok=True)
        Path(args.emit_wandb_sweep).write_text(yaml.safe_dump(cfg, sort_keys=False))
        print(
            f"wrote {args.emit_wandb_sweep}: `wandb sweep {args.emit_wandb_sweep}`, "
            "then `wandb agent <id>`"
        )
        return 0
    for config in spec.base_configs:
        if not os.path.isfile(config):
            print(
                f"kwsnet sweep: base_config {config} not found (relative to {os.getcwd()})",
                file=sys.stderr,
            )
            return 2
        try:
            content_key(spec, base_config=config)
        except (OSError, yaml.YAMLError) as exc:
            print(f"kwsnet sweep: base_config {config}: {exc}", file=sys.stderr)
            return 2
    keys = content_keys(spec)
    plans = plan_runs(spec, out)
    if args.dry_run:
        for p in plans:
            print(shlex.join(p.argv))
        return 0
    command = shlex.join(["kwsnet", "sweep", *(a for a in argv if a != "--report-only")])
    start = time.monotonic()
    mixed = args.allow_mixed_provenance
    ledger = os.path.join(out, LEDGER)
    if args.report_only:  # read-only on the ledger: works beside a running sweep, no lock
        try:
            _, table = write_results(
                spec, out, command, name=report_name, allow_mixed_provenance=mixed
            )
        except MixedProvenanceError as exc:
            print(f"kwsnet sweep: {ledger}: {exc}", file=sys.stderr)
            return 2
        print(table, end="")
        _publish(spec, out, report_name)
    else:
        lock = SweepLock(out)
        try:
            lock.acquire()
        except RuntimeError as exc:
            print(f"kwsnet sweep: {exc}", file=sys.stderr)
            return 2
        try:
            try:
                run_sweep(spec, plans, out, workers)
            except (_Stop, KeyboardInterrupt):
                try:
                    write_results(
                        spec, out, command, time.monotonic() - start, allow_mixed_provenance=mixed
                    )
                except MixedProvenanceError as exc:
                    print(f"kwsnet sweep: {ledger}: {exc}", file=sys.stderr)
                return 130
            try:
                rows, table = write_results(
                    spec, out, command, time.monotonic() - start, allow_mixed_provenance=mixed
                )
            except MixedProvenanceError as exc:
                print(f"kwsnet sweep: {ledger}: {exc}", file=sys.stderr)
                return 2
            print(table, end="")
            print(f"results: {os.path.join(out, 'results.md')}, results.csv, results.png")
            if spec.wandb.get("summary_run", True) and not args.no_summary_run:
                try:
                    print(f"wandb summary run: {_summary_run(spec, out, rows)}")
                except Exception as exc:  # the results files are written; report, go on
                    print(f"kwsnet sweep: wandb summary run failed: {exc}", file=sys.stderr)
            _publish(spec, out)
        finally:
            lock.release()
    latest = latest_records(read_ledger(os.path.join(out, LEDGER)))
    keys = {c: _launch_key(spec, c) or k for c, k in keys.items()}  # as the results saw it
    ok = [
        latest.get(p.run_id, {}).get("status") == "ok"
        and _content(latest[p.run_id], spec, keys) != "other"
        for p in plans
    ]
    return 0 if all(ok) else 1
