"""Multi-seed sweeps: spec × seeds → one subprocess per run → JSONL ledger → table, CSV, plot.

``kwsnet sweep --config configs/sweeps/smoke.yaml [--out DIR] [--workers N]``
(``kwsnet.commands.sweep``) runs every
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
``--allow_mixed_provenance``, which reports each group in rows of its own.

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
results.csv, the plot, the wandb summary run and sweep config, publishing); this module
re-exports their public names. The command line is ``kwsnet.commands.sweep``. With
``--storage`` the runs go through an Optuna study instead of the process pool: ``study`` (the
storage, planning, the records), ``worker`` (``kwsnet sweep-worker``), ``launch`` (local worker
processes, a submitit job array); imported on use, so a local sweep never imports Optuna.

Every run writes only into its own run dir (``<out>/runs/<run_id>``): ``default_root_dir``, and
the ``save_dir`` of the logger the base config (or an override) sets, so config.yaml and the
logger's files land there too, with or without ``wandb.log_runs``.
"""

from __future__ import annotations

from kwsnet.sweep.ledger import (
    LEDGER,
    LOCK,
    PROVENANCE_KEYS,
    SweepLock,
    SweepLockedError,
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
    add_stats,
    aggregate,
    format_table,
    stats_note,
    wandb_sweep_config,
    write_results,
)
from kwsnet.sweep.runner import run_sweep
from kwsnet.sweep.spec import (
    BASE_KEY,
    FIT_ENTRY,
    RunPlan,
    SpecError,
    SweepSpec,
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
    "SweepLockedError",
    "SpecError",
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
