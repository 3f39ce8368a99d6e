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
    stats: {ci: t, alpha: 0.05, baseline: null, bootstrap_samples: 10000, seed: 0, goal: null}
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
``bootstrap_samples`` and the bootstrap ``seed``, and ``goal`` (``max``/``min``; default from
the metric's name: lower is better for losses and error rates). Every table has the mean's CI,
the difference to the baseline with its CI, the p-value (paired by seed, else Welch), the
Holm-adjusted p-value and a verdict.

Relative paths (``base_config``, ``out``, ``publish``, data roots in ``overrides``) resolve
from the current directory, as the run processes start there.

Resume matches runs on content, not on the base config's path: every record carries a
``content_key``, the sha256 of its own base config file's parsed YAML and the spec's overrides
(``content_key()``). A value changed in the base config or in ``overrides`` makes the recorded
runs "other content": they are re-run, left out of the table until then, and results.md says how
many. Comments, whitespace, quoting and key order do not count. Records written before the key
existed have only ``fixed`` (path and overrides): with the same path and overrides they are
kept, counted in results.md as "content unknown"; with others they are re-run.

Every run writes only into its own run dir (``<out>/runs/<run_id>``): ``default_root_dir``, and
the ``save_dir`` of the logger the base config (or an override) sets, so config.yaml and the
logger's files land there too, with or without ``wandb.log_runs``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from kwsnet import stats as kstats
from kwsnet import yaml12
from kwsnet.metrics.collapse import MAX_SHARE, RULE, collapse_stats, is_collapsed

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
]

LEDGER = "ledger.jsonl"
LOCK = "sweep.lock"
RESULT_FILES = ("results.md", "results.csv", "results.png")
_WANDB_KEYS = {"log_runs", "summary_run", "project", "offline"}
_STATS_DEFAULTS: dict[str, Any] = {
    "ci": "t",
    "alpha": 0.05,
    "baseline": None,
    "bootstrap_samples": 10000,
    "seed": 0,
    "goal": None,
}
BASE_KEY = "base_config"  # the grid key of a sweep over base configs
_TAIL_LINES = 25
# The command a run starts with; its arguments follow. ``-c`` rather than ``train.py`` so the
# runner works from an installed package too. Tests swap in a fake trainer here.
FIT_ENTRY: list[str] = [sys.executable, "-c", "from kwsnet.cli import main; main()", "fit"]


@dataclasses.dataclass
class SweepSpec:
    """A parsed, validated sweep spec (see the module docstring for the YAML form).

    Args:
        name: sweep name; the wandb group of every run and the default out dir ``sweeps/<name>``.
        base_config: the ``kwsnet fit`` config every run starts from; a list makes it a grid key
            (as ``grid: {base_config: [...]}`` does; then this holds the first one).
        seeds: the ``seed_everything`` values; each grid point runs once per seed.
        grid: dotted CLI key → values; runs cover the cartesian product, first key slowest.
        overrides: dotted CLI key → value, added to every run (default none).
        metric: the ``summary.json`` metric to aggregate (default ``test/acc``).
        workers: runs in parallel (default 1).
        out: the sweep directory (default ``sweeps/<name>``).
        publish: a directory the results files and the ledger are copied to at the end
            (default none).
        wandb: ``log_runs`` (pass group/job_type/tags/name to each run's logger, default true;
            the logger's ``save_dir`` is the run dir either way),
            ``summary_run`` (log the table as a summary run, default true), ``project``
            (default ``kwsnet``), ``offline`` (default ``None``: ``resolve_offline``).
        stats: ``ci`` (``t``/``bootstrap``), ``alpha``, ``baseline`` (a point label or index,
            default the first point), ``bootstrap_samples``, ``seed``, ``goal``
            (``max``/``min``, default from the metric name); see ``kwsnet/stats.py``.
        description: free text, copied to results.md.
    """

    name: str
    base_config: Any
    seeds: list[int]
    grid: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    metric: str = "test/acc"
    workers: int = 1
    out: str = ""
    publish: str | None = None
    wandb: dict[str, Any] = dataclasses.field(default_factory=dict)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(
                f"sweep name must be non-empty without '/', '\\' or spaces, got {self.name!r}"
            )
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, (int, list)):
            raise ValueError(f"seeds must be a count or a list of ints, got {self.seeds!r}")
        if isinstance(self.seeds, int):
            if self.seeds < 1:
                raise ValueError(f"seeds count must be >= 1, got {self.seeds}")
            self.seeds = list(range(self.seeds))
        if not self.seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in self.seeds
        ):
            raise ValueError(f"seeds must be a non-empty list of ints, got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        if not isinstance(self.grid, dict) or not isinstance(self.overrides, dict):
            raise ValueError("grid and overrides must be mappings of dotted key -> value(s)")
        if isinstance(self.base_config, list):
            if BASE_KEY in self.grid:
                raise ValueError("base_config is a list and a grid key: give it once")
            self.grid = {BASE_KEY: self.base_config, **self.grid}
            self.base_config = None
        if BASE_KEY in self.grid:
            configs = self.grid[BASE_KEY]
            if not isinstance(configs, list) or not configs:
                raise ValueError(f"grid.base_config must be a non-empty list, got {configs!r}")
            if not all(isinstance(c, str) and c for c in configs):
                raise ValueError(f"grid.base_config must be a list of paths, got {configs!r}")
            if self.base_config not in (None, configs[0]):
                raise ValueError("base_config is both at the top and in grid: give it once")
            self.base_config = configs[0]
        if not isinstance(self.base_config, str) or not self.base_config:
            raise ValueError(f"base_config must be a path or a list of paths: {self.base_config!r}")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{key} must be a non-empty list of values, got {values!r}")
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise ValueError(f"grid.{key} repeats a value: {values}")
        clash = sorted(set(self.grid) & set(self.overrides))
        if clash:
            raise ValueError(f"keys both in grid and overrides: {clash}")
        reserved = {"seed_everything", "config", "trainer.default_root_dir"}
        bad = sorted((set(self.grid) | set(self.overrides)) & reserved)
        if BASE_KEY in self.overrides:
            raise ValueError("base_config is not an override: set it at the top or in grid")
        if bad:
            raise ValueError(f"{bad} are set by the sweep itself; use `seeds:` for seeds")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        unknown = sorted(set(self.wandb) - _WANDB_KEYS)
        if unknown:
            raise ValueError(f"unknown wandb keys {unknown}; valid: {sorted(_WANDB_KEYS)}")
        self._check_stats()
        self.out = self.out or os.path.join("sweeps", self.name)

    def _check_stats(self) -> None:
        if not isinstance(self.stats, dict):
            raise ValueError(f"stats must be a mapping, got {self.stats!r}")
        unknown = sorted(set(self.stats) - set(_STATS_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown stats keys {unknown}; valid: {sorted(_STATS_DEFAULTS)}")
        st = {**_STATS_DEFAULTS, **self.stats}
        if st["ci"] not in kstats.CI_METHODS:
            raise ValueError(f"stats.ci must be one of {list(kstats.CI_METHODS)}, got {st['ci']!r}")
        alpha = st["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise ValueError(f"stats.alpha must be in (0, 1), got {alpha!r}")
        n = st["bootstrap_samples"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 100:
            raise ValueError(f"stats.bootstrap_samples must be an int >= 100, got {n!r}")
        if isinstance(st["seed"], bool) or not isinstance(st["seed"], int):
            raise ValueError(f"stats.seed must be an int, got {st['seed']!r}")
        if st["goal"] not in (None, "max", "min"):
            raise ValueError(f"stats.goal must be max, min or null, got {st['goal']!r}")
        baseline_index(self, st["baseline"])  # raises on an unknown point

    @property
    def stat(self) -> dict[str, Any]:
        """``stats`` with the defaults filled in."""
        return {**_STATS_DEFAULTS, **self.stats}

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger metric is better: ``stats.goal``, else from the metric's name."""
        goal = self.stat["goal"]
        return kstats.higher_is_better(self.metric) if goal is None else goal == "max"

    @property
    def base_configs(self) -> list[str]:
        """Every base config the sweep runs (one unless ``base_config`` is a grid key)."""
        return list(self.grid.get(BASE_KEY, [self.base_config]))


_SPEC_KEYS = [f.name for f in dataclasses.fields(SweepSpec)]


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read a sweep spec YAML; unknown keys raise a ``ValueError`` listing the valid ones.

    YAML 1.2 scalars, as in the configs: ``[yes, no]`` are words, ``1e-3`` is a float.
    """
    data = yaml12.load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a sweep spec is a YAML mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown sweep spec keys {unknown}; valid keys: {_SPEC_KEYS}")
    missing = [k for k in ("name", "base_config", "seeds") if k not in data]
    if BASE_KEY in (data.get("grid") or {}) and "base_config" in missing:
        missing.remove("base_config")
        data = {**data, "base_config": None}
    if missing:
        raise ValueError(f"{path}: sweep spec needs {missing}")
    try:
        return SweepSpec(**data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def cli_value(value: Any) -> str:
    """Format a value for a LightningCLI flag: strings as-is, everything else as JSON.

    JSON keeps strings inside lists quoted, so ``[yes, no]`` stays words, not YAML booleans.
    """
    return value if isinstance(value, str) else json.dumps(value)


def _short(key: str) -> str:
    return "config" if key == BASE_KEY else key.rsplit(".", 1)[-1]


_LONG_VALUE = 24  # JSON values longer than this are labelled by a hash


def _hash6(value: Any) -> str:
    text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _value_label(key: str, value: Any) -> str:
    """A short, readable name for one grid value (before making a key's names unique)."""
    if key == BASE_KEY and isinstance(value, str):
        return Path(value).stem
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        return value["class_path"].rsplit(".", 1)[-1]
    text = cli_value(value)
    if isinstance(value, (dict, list)) and len(text) > _LONG_VALUE:
        return f"{type(value).__name__}-{_hash6(value)}"
    return text


def value_labels(key: str, values: Sequence[Any]) -> list[str]:
    """The labels of one grid key's values: ``_value_label``, with a 6-hex hash of the value
    added where two values would share a label (a base config's full path instead)."""
    labels = [_value_label(key, v) for v in values]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        if labels.count(label) > 1:
            if key == BASE_KEY:
                labels[i] = value
            elif label != cli_value(value):
                labels[i] = f"{label}-{_hash6(value)}"
    return labels


def _label_of(spec: SweepSpec | None, key: str, value: Any) -> str:
    if spec is not None and key in spec.grid:
        values = spec.grid[key]
        for v, label in zip(values, value_labels(key, values), strict=True):
            if v == value:
                return label
    return _value_label(key, value)


def point_label(point: dict[str, Any], spec: SweepSpec | None = None) -> str:
    """``{"a.b.lr": 0.005, "x.norm": "end"}`` → ``lr=0.005,norm=end`` (short key names; dict
    values by class name or hash, base configs by file stem: ``value_labels``)."""
    return ",".join(f"{_short(k)}={_label_of(spec, k, v)}" for k, v in point.items()) or "base"


def baseline_index(spec: SweepSpec, baseline: Any = _STATS_DEFAULTS["baseline"]) -> int:
    """The index (in grid order) of the ``stats.baseline`` point: ``None`` → 0, an int index,
    or a point label as in the table (e.g. ``lr=0.005,norm_placement=end``)."""
    points = grid_points(spec)
    if baseline is None:
        return 0
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        if not 0 <= baseline < len(points):
            raise ValueError(f"stats.baseline index {baseline} is not in 0..{len(points) - 1}")
        return baseline
    labels = [point_label(p, spec) for p in points]
    if baseline in labels:
        return labels.index(baseline)
    raise ValueError(f"stats.baseline {baseline!r} is not a grid point; the points: {labels}")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text.replace(",", "__"))


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One run of a sweep: a grid point and a seed, with its directory and command."""

    run_id: str
    point: dict[str, Any]
    point_label: str
    seed: int
    run_dir: str
    log_path: str
    argv: list[str]


def run_base_config(spec: SweepSpec, point: dict[str, Any] | None = None) -> str:
    """The base config of a run at ``point``: its ``base_config`` grid value, else the spec's."""
    return (point or {}).get(BASE_KEY, spec.base_config)


def _load_base(path: str) -> Any:
    """A base config file, parsed as the CLI parses it (YAML 1.2 scalars)."""
    return yaml12.load(Path(path).read_text())


def _canonical(obj: Any) -> Any:
    """``obj`` with string keys and lists for tuples, for a stable JSON dump."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


def content_key(spec: SweepSpec, base: Any = None, base_config: str | None = None) -> str:
    """What a run of the spec is made of, as a sha256 hex digest: its base config file's
    parsed content (``base``, else read from ``base_config``, default ``spec.base_config``)
    and the overrides in order.

    Parsed, so comments, whitespace, quoting and mapping key order do not change it; every value
    does. Files the base config refers to, and the code, are not part of it.
    """
    if base is None:
        base = _load_base(base_config or spec.base_config)
    fixed = {"base_config": base, "overrides": [[k, v] for k, v in spec.overrides.items()]}
    text = json.dumps(
        _canonical(fixed), sort_keys=True, separators=(",", ":"), allow_nan=True, default=repr
    )
    return hashlib.sha256(text.encode()).hexdigest()


_UNKNOWN = object()  # the base config could not be read


def _run_logger(spec: SweepSpec, point: dict[str, Any], base: Any) -> Any:
    """The ``trainer.logger`` value a run ends up with: the base config's, unless an override
    or the grid point sets it; ``_UNKNOWN`` when the base config cannot be told."""
    trainer = base.get("trainer", {}) if isinstance(base, dict) else _UNKNOWN
    logger = trainer.get("logger") if isinstance(trainer, dict) else _UNKNOWN
    for key, value in {**spec.overrides, **point}.items():
        if key == BASE_KEY:
            continue
        if key == "trainer.logger":
            logger = value
            if isinstance(value, str):  # the CLI parses it: "false", a class name, JSON
                try:
                    logger = yaml12.load(value)
                except yaml.YAMLError:
                    pass
        elif key == "trainer" and isinstance(value, dict) and "logger" in value:
            logger = value["logger"]
    return logger


def _logger_args(logger: Any, run_dir: str, meta: dict[str, Any]) -> list[str]:
    """Flags pointing the run's logger(s) at ``run_dir`` and adding ``meta`` (the wandb
    group/job_type/tags/name; for a list of loggers only to the wandb ones). No flags when the
    run has no logger (``false``) or Lightning's default one (``null``/``true``), which writes
    under ``default_root_dir`` already."""
    if isinstance(logger, list):
        items = []
        for item in logger:
            item = {"class_path": item} if isinstance(item, str) else dict(item)
            extra = meta if "wandb" in str(item.get("class_path", "")).lower() else {}
            item["init_args"] = {**(item.get("init_args") or {}), "save_dir": run_dir, **extra}
            items.append(item)
        return ["--trainer.logger", json.dumps(items)]
    if logger is _UNKNOWN or isinstance(logger, (dict, str)):
        args = ["--trainer.logger.init_args.save_dir", run_dir]
        for key, value in meta.items():
            args += [f"--trainer.logger.init_args.{key}", cli_value(value)]
        return args
    return []


def run_args(
    spec: SweepSpec,
    point: dict[str, Any],
    seed: int,
    run_id: str,
    run_dir: str,
    base: Any = _UNKNOWN,
) -> list[str]:
    """The ``kwsnet fit`` arguments of one run (everything after the subcommand).

    ``base`` is the parsed base config (read from the run's base config when not given); it
    tells whether the run has a logger, whose ``save_dir`` is then set to ``run_dir``.
    """
    config = run_base_config(spec, point)
    if base is _UNKNOWN:
        try:
            base = _load_base(config)
        except (OSError, yaml.YAMLError):
            pass  # the run reports it; assume a logger, so nothing is written outside run_dir
    args = ["--config", config]
    for key, value in {**spec.overrides, **point}.items():
        if key != BASE_KEY:
            args += [f"--{key}", cli_value(value)]
    args += ["--seed_everything", str(seed), "--trainer.default_root_dir", run_dir]
    args += ["--test_after_fit", "true", "--trainer.enable_progress_bar", "false"]
    meta: dict[str, Any] = {}
    if spec.wandb.get("log_runs", True):
        label = point_label(point, spec)
        tags = [spec.name] + [f"{_short(k)}={_label_of(spec, k, v)}"[:64] for k, v in point.items()]
        meta = {"group": spec.name, "job_type": label[:64], "tags": tags, "name": run_id}
    return args + _logger_args(_run_logger(spec, point, base), run_dir, meta)


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every grid point as ``{key: value}``, in spec order (first key slowest)."""
    return [dict(zip(spec.grid, v, strict=True)) for v in itertools.product(*spec.grid.values())]


def plan_runs(spec: SweepSpec, out: str | None = None) -> list[RunPlan]:
    """Every (grid point × seed) run, grid points in spec order (first key slowest)."""
    out = out or spec.out
    bases: dict[str, Any] = {}
    for config in spec.base_configs:
        try:
            bases[config] = _load_base(config)
        except (OSError, yaml.YAMLError):
            bases[config] = _UNKNOWN
    plans = []
    for point in grid_points(spec):
        label = point_label(point, spec)
        base = bases[run_base_config(spec, point)]
        for seed in spec.seeds:
            run_id = f"{_slug(label)}__seed{seed}"
            run_dir = os.path.join(out, "runs", run_id)
            argv = [*FIT_ENTRY, *run_args(spec, point, seed, run_id, run_dir, base)]
            plans.append(
                RunPlan(run_id, point, label, seed, run_dir, os.path.join(run_dir, "run.log"), argv)
            )
    return plans


def append_ledger(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line with a single write, then flush and fsync."""
    line = (json.dumps(record, sort_keys=True, allow_nan=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_object(line: bytes) -> dict[str, Any] | None:
    """The JSON object on ``line``, or ``None`` when it is not one."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def read_ledger(path: str | os.PathLike, repair: bool = False) -> list[dict[str, Any]]:
    """Read the ledger's records. A torn last line (a run killed mid-write) is skipped with a
    warning, and with ``repair=True`` cut off so the next append starts a clean line."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    last = len(lines) - (2 if lines[-1] == b"" else 1)  # index of the final line
    records: list[dict[str, Any]] = []
    good_end, start = len(raw), 0  # where a repair cuts the file
    for i, line in enumerate(lines):
        line_start, start = start, start + len(line) + 1
        if not line.strip():
            continue
        rec = _json_object(line)
        if rec is not None:
            records.append(rec)
            continue
        where = "torn last line" if i == last else f"unreadable line {i + 1}"
        warnings.warn(f"{path}: skipping {where}: {line[:80]!r}", stacklevel=2)
        if i == len(lines) - 1:  # no newline after it: cut it, the next append starts clean
            good_end = line_start
    if repair and good_end < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    elif repair and raw and not raw.endswith(b"\n"):
        with open(path, "ab") as f:
            f.write(b"\n")
    return records


def latest_records(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each ``run_id`` (a failed run re-run later is replaced)."""
    latest: dict[str, dict[str, Any]] = {}
    for rec in records:
        latest[rec["run_id"]] = rec
    return latest


def _tail(path: str, n: int = _TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def _is_collapsed(
    summary: dict[str, Any], num_classes: int | None
) -> tuple[bool | None, dict[str, Any]]:
    """Collapse on the test split, by ``kwsnet.metrics.collapse``'s rule (``RULE``) on the
    prediction counts; the run's own flag only when it recorded no counts or shares."""
    test = dict((summary.get("collapse") or {}).get("test") or {})
    metrics = summary.get("metrics") or {}
    counts = test.get("counts")
    if counts:
        counts = list(counts) + [0] * max(0, (num_classes or 0) - len(counts))
        stats = collapse_stats(counts, MAX_SHARE)
        test.setdefault("n_pred_classes", stats["n_pred_classes"])
        test.setdefault("max_class_share", stats["max_class_share"])
        return bool(stats["collapsed"]), test
    if num_classes and test.get("n_pred_classes") is not None and "max_class_share" in test:
        n_pred, share = test["n_pred_classes"], test["max_class_share"]
        return is_collapsed(int(n_pred), int(num_classes), float(share)), test
    if "collapsed" in test:
        return bool(test["collapsed"]), test
    if "test/collapsed" in metrics:
        return bool(metrics["test/collapsed"]), test
    return None, test


def _fixed(spec: SweepSpec, config: str | None = None) -> dict[str, Any]:
    """The run's base config path (default the spec's) and the overrides, for humans (and for
    records without a key)."""
    fixed = {"base_config": config or spec.base_config, "overrides": spec.overrides}
    return json.loads(json.dumps(fixed))


def _launch_key(spec: SweepSpec, config: str | None = None) -> str | None:
    """The content key as a run starts; ``None`` if the base config cannot be read then."""
    try:
        return content_key(spec, base_config=config)
    except (OSError, yaml.YAMLError):
        return None


def content_keys(spec: SweepSpec) -> dict[str, str]:
    """``content_key`` of every base config of the sweep (raises if one cannot be read)."""
    return {c: content_key(spec, base_config=c) for c in spec.base_configs}


def _rec_config(rec: dict[str, Any], spec: SweepSpec) -> str:
    return run_base_config(spec, rec.get("point") if isinstance(rec.get("point"), dict) else None)


def _content(rec: dict[str, Any], spec: SweepSpec, keys: dict[str, str | None]) -> str:
    """``"same"``, ``"other"`` or ``"unknown"``: was ``rec`` made with the spec's content?

    ``keys``: the content key of each base config (``content_keys``); a record is compared
    with its own run's base config. Records written before ``content_key`` existed have only
    the base config path and the overrides (``fixed``): other ones mean other content; the same
    ones tell nothing about what the file held then (``"unknown"``).
    """
    config = _rec_config(rec, spec)
    if "content_key" in rec:
        return "same" if rec["content_key"] == keys.get(config) else "other"
    fixed = _fixed(spec, config)
    if rec.get("fixed", fixed) != fixed:
        return "other"
    return "unknown"


def record_run(
    plan: RunPlan, spec: SweepSpec, returncode: int, wall_s: float, key: Any = _UNKNOWN
) -> dict[str, Any]:
    """Build the ledger record of a finished run from its exit code and ``summary.json``.

    ``key``: the content key the run started with (default: its ``content_key`` now).
    """
    config = run_base_config(spec, plan.point)
    rec: dict[str, Any] = {
        "run_id": plan.run_id,
        "point": plan.point,
        "point_label": plan.point_label,
        "fixed": _fixed(spec, config),
        "content_key": _launch_key(spec, config) if key is _UNKNOWN else key,
        "seed": plan.seed,
        "metric": spec.metric,
        "value": None,
        "wall_s": round(wall_s, 2),
        "returncode": returncode,
        "run_dir": plan.run_dir,
        "log": plan.log_path,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    summary_path = Path(plan.run_dir) / "summary.json"
    error = None
    summary: dict[str, Any] = {}
    if returncode != 0:
        error = f"exit code {returncode}"
    elif not summary_path.exists():
        error = f"no {summary_path}"
    else:
        try:
            summary = json.loads(summary_path.read_text())
        except ValueError as exc:
            error = f"unreadable {summary_path}: {exc}"
    if summary:
        metrics = summary.get("metrics") or {}
        value = metrics.get(spec.metric)
        collapsed, test = _is_collapsed(summary, summary.get("num_classes"))
        rec.update(
            metrics=metrics,
            value=value,
            collapsed=collapsed,
            n_pred_classes=test.get("n_pred_classes"),
            max_class_share=test.get("max_class_share"),
            num_classes=summary.get("num_classes"),
            best_epoch=summary.get("best_epoch"),
            epochs_run=summary.get("epochs_run"),
            checkpoint=summary.get("best_checkpoint"),
        )
        if error is None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
            # summary.json drops non-finite metrics, so a NaN loss shows up as a missing one.
            error = f"metric {spec.metric} missing or not finite in summary.json ({value!r})"
    rec["status"] = "failed" if error else "ok"
    if error:
        rec["error"] = error + "\n" + _tail(plan.log_path)
    return rec


def _threads_per_run(workers: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


class SweepLock:
    """An exclusive ``flock`` on ``<out>/sweep.lock``; the OS drops it when the process dies."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = Path(out) / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.path.read_text().strip() or "unknown process"
            os.close(fd)
            raise RuntimeError(
                f"another sweep is running on {self.path.parent} ({holder}); wait for it to "
                "finish or stop it, or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Stop(Exception):
    """SIGTERM / SIGINT: stop launching, end the running runs, keep the ledger."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def run_sweep(
    spec: SweepSpec, plans: Sequence[RunPlan], out: str, workers: int, log: Any = sys.stdout
) -> list[dict[str, Any]]:
    """Run the not-yet-``ok`` plans, ``workers`` at a time; return this invocation's records."""
    ledger = os.path.join(out, LEDGER)
    keys = content_keys(spec)
    latest = latest_records(read_ledger(ledger, repair=True))
    done = {k for k, r in latest.items() if r.get("status") == "ok"}
    content = {k: _content(latest[k], spec, keys) for k in done}
    stale = sorted(k for k in done if content[k] == "other")
    if stale:
        warnings.warn(
            f"{len(stale)} ok run(s) in {ledger} were made with another base config content "
            f"or other overrides than the spec now has ({spec.base_config}); they run again "
            f"(e.g. {stale[0]})",
            stacklevel=2,
        )
        done -= set(stale)
    unknown = sum(c == "unknown" for c in content.values())
    if unknown:
        print(
            f"sweep {spec.name}: {unknown} ok run(s) were recorded without a content key (by an "
            f"older kwsnet) with the same base config path and overrides; kept, but what "
            f"{spec.base_config} held then is unknown",
            file=log,
            flush=True,
        )
    todo = [p for p in plans if p.run_id not in done]
    print(
        f"sweep {spec.name}: {len(plans)} runs, {len(plans) - len(todo)} already ok, "
        f"{len(todo)} to run, "
        f"{workers} worker(s)",
        file=log,
        flush=True,
    )
    threads = str(_threads_per_run(workers))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "PYTHONUNBUFFERED": "1",
    }
    # A wandb service this process started (e.g. an earlier summary run) resolves relative
    # paths from its own cwd: each run starts its own, as a lone `kwsnet fit` does.
    env.pop("WANDB_SERVICE", None)
    queue = list(todo)
    running: dict[subprocess.Popen, tuple[RunPlan, float, Any, str | None]] = {}
    records: list[dict[str, Any]] = []
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while queue or running:
            while queue and len(running) < workers:
                plan = queue.pop(0)
                shutil.rmtree(plan.run_dir, ignore_errors=True)  # a stale failed attempt
                os.makedirs(plan.run_dir)
                logf = open(plan.log_path, "w")  # noqa: SIM115 (closed when the run ends)
                logf.write("$ " + shlex.join(plan.argv) + "\n")
                logf.flush()
                # the run reads its base config as it starts
                run_key = _launch_key(spec, run_base_config(spec, plan.point))
                proc = subprocess.Popen(plan.argv, stdout=logf, stderr=subprocess.STDOUT, env=env)
                running[proc] = (plan, time.monotonic(), logf, run_key)
            for proc in [p for p in running if p.poll() is not None]:
                plan, start, logf, run_key = running.pop(proc)
                logf.close()
                rec = record_run(plan, spec, proc.returncode, time.monotonic() - start, run_key)
                append_ledger(ledger, rec)
                records.append(rec)
                value = "" if rec["value"] is None else f"{spec.metric}={rec['value']:.4f}"
                flag = " collapsed" if rec.get("collapsed") else ""
                print(
                    f"[{len(records)}/{len(todo)}] {rec['status']:6s} {plan.run_id} {value}{flag} "
                    f"({rec['wall_s']:.0f}s)"
                    + ("" if rec["status"] == "ok" else f" log: {plan.log_path}"),
                    file=log,
                    flush=True,
                )
            time.sleep(0.1)
    except (_Stop, KeyboardInterrupt) as exc:
        print(
            f"sweep stopped ({exc.__class__.__name__} {exc}); "
            f"ending {len(running)} running run(s); "
            "re-run the same command to resume",
            file=log,
            flush=True,
        )
        for proc in running:
            proc.terminate()
        for proc, (_plan, _start, logf, _key) in running.items():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            logf.close()
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return records


def record_collapsed(rec: dict[str, Any]) -> bool:
    """Whether a ledger record's run collapsed by the current rule (``RULE``), from its
    ``n_pred_classes``, ``num_classes`` and ``max_class_share``; its recorded flag when one of
    them is missing. So a report on an old ledger applies today's rule."""
    n_pred, classes, share = (
        rec.get(k) for k in ("n_pred_classes", "num_classes", "max_class_share")
    )
    if n_pred is None or classes is None or share is None:
        return bool(rec.get("collapsed"))
    return is_collapsed(int(n_pred), int(classes), float(share))


def aggregate(records: Iterable[dict[str, Any]], spec: SweepSpec) -> list[dict[str, Any]]:
    """One row per grid point (spec order): n ok, mean, sample std (ddof=1), min, max of the
    metric, collapsed count (``record_collapsed``), median best epoch, failed count, and the
    statistics of ``add_stats``. Uses each run's latest record; collapsed runs count."""
    latest = latest_records(records)
    rows = []
    for point in grid_points(spec):
        label = point_label(point, spec)
        recs = [r for r in latest.values() if r.get("point_label") == label]
        ok = [r for r in recs if r.get("status") == "ok"]
        vals = [float(r["value"]) for r in ok]
        flags = [record_collapsed(r) for r in ok]
        epochs = [r["best_epoch"] for r in ok if r.get("best_epoch") is not None]
        rows.append(
            {
                "point": point,
                "point_label": label,
                "n": len(vals),
                "mean": statistics.fmean(vals) if vals else math.nan,
                "std": statistics.stdev(vals) if len(vals) > 1 else math.nan,
                "min": min(vals) if vals else math.nan,
                "max": max(vals) if vals else math.nan,
                "collapsed": sum(flags),
                "median_best_epoch": statistics.median(epochs) if epochs else math.nan,
                "failed": sum(r.get("status") != "ok" for r in recs),
                "values": vals,
                "seeds": [r.get("seed") for r in ok],
                "collapsed_flags": flags,
            }
        )
    return add_stats(rows, spec)


def add_stats(rows: list[dict[str, Any]], spec: SweepSpec) -> list[dict[str, Any]]:
    """Add to each row (in place; returned) the CI of its mean (``ci_low``, ``ci_high``) and,
    against the ``stats.baseline`` row: ``test`` (``paired``/``welch``; ``baseline`` on the
    baseline row), ``diff``, ``diff_low``, ``diff_high``, ``p``, ``p_holm`` (Holm over the
    non-baseline rows) and ``verdict``. See ``kwsnet/stats.py``."""
    st = spec.stat
    boot = {"method": st["ci"], "samples": st["bootstrap_samples"], "seed": st["seed"]}
    base_i = baseline_index(spec, st["baseline"])
    base = rows[base_i] if rows else None
    for i, r in enumerate(rows):
        r["ci_low"], r["ci_high"] = kstats.mean_ci(r["values"], st["alpha"], **boot)
        r["baseline"] = base["point_label"] if base else ""
        if i == base_i:
            nan = math.nan
            r.update(test="baseline", diff=nan, diff_low=nan, diff_high=nan, p=nan)
        else:
            r.update(
                kstats.compare(
                    r["values"], r["seeds"], base["values"], base["seeds"], st["alpha"], **boot
                )
            )
    others = [i for i in range(len(rows)) if i != base_i]
    adjusted = kstats.holm([rows[i]["p"] for i in others])
    for i, p_adj in zip(others, adjusted, strict=True):
        rows[i]["p_holm"] = p_adj
        rows[i]["verdict"] = kstats.verdict(
            rows[i]["diff"], p_adj, st["alpha"], spec.higher_is_better
        )
    if rows:
        rows[base_i].update(p_holm=math.nan, verdict="baseline")
    return rows


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _signed(x: float) -> str:
    return f"{x:+.3f}".replace("-0.000", "+0.000")


def _fmt_diff(r: dict[str, Any]) -> str:
    if r.get("test") in ("baseline", "", None) or math.isnan(r["diff"]):
        return "–"
    ci = (
        ""
        if math.isnan(r["diff_low"])
        else f" [{_signed(r['diff_low'])}, {_signed(r['diff_high'])}]"
    )
    return f"{_signed(r['diff'])}{ci}"


def _cell(spec: SweepSpec, key: str, value: Any) -> str:
    return _label_of(spec, key, value)


def format_table(rows: Sequence[dict[str, Any]], spec: SweepSpec) -> str:
    """The aggregate table as GitHub markdown: the spread columns, then the statistics
    (the mean's CI, the difference to the baseline with its CI, p, Holm's p, the verdict)."""
    keys = [_short(k) for k in spec.grid]
    pct = f"{1 - spec.stat['alpha']:.0%}"
    head = [
        *keys,
        "n",
        f"{spec.metric} mean ± std",
        "min",
        "max",
        "collapsed",
        "median best epoch",
        "failed",
        f"mean {pct} CI",
        f"Δ vs baseline [{pct} CI]",
        "p (test)",
        "p Holm",
        "verdict",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(spec, k, v) for k, v in r["point"].items()]
        mean_std = f"{_fmt(r['mean'])} ± {_fmt(r['std'])}" if r["n"] else "–"
        epoch = r["median_best_epoch"]
        cells += [
            str(r["n"]),
            mean_std,
            _fmt(r["min"]),
            _fmt(r["max"]),
            f"{r['collapsed']}/{r['n']}",
            "–" if isinstance(epoch, float) and math.isnan(epoch) else f"{epoch:g}",
            str(r["failed"]),
            "–" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
            _fmt_diff(r),
            "–" if math.isnan(r["p"]) else f"{_fmt_p(r['p'])} ({r['test']})",
            _fmt_p(r["p_holm"]),
            r["verdict"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stats_note(spec: SweepSpec, rows: Sequence[dict[str, Any]] = ()) -> str:
    """What the statistics columns are, for results.md (the tests, α, baseline, direction)."""
    st = spec.stat
    pct = f"{1 - st['alpha']:.0%}"
    base = rows[baseline_index(spec, st["baseline"])]["point_label"] if rows else "the first"
    ci = (
        "t-based (mean ± t(1−α/2, n−1)·s/√n)"
        if st["ci"] == "t"
        else f"percentile bootstrap ({st['bootstrap_samples']} resamples, seed {st['seed']})"
    )
    direction = "higher" if spec.higher_is_better else "lower"
    return (
        f"Statistics (α = {st['alpha']:g}, `kwsnet/stats.py`): mean {pct} CI {ci}; "
        f"Δ = point − baseline `{base}`, paired by seed when both ran the same seeds "
        "(paired t-test on the per-seed differences), else Welch's t-test; its CI by the same "
        f"method; p two-sided, Holm-corrected over the {max(len(rows) - 1, 0)} points compared; "
        f"verdict better / worse when Holm's p < {st['alpha']:g} ({direction} `{spec.metric}` is "
        "better), else not distinguishable. Collapsed runs are included in every statistic "
        "(leaving them out would bias the mean) and counted in `collapsed`.\n"
    )


_CSV_FIELDS = [
    "run_id",
    "point_label",
    "seed",
    "status",
    "value",
    "val/acc",
    "test/acc",
    "test/f1",
    "collapsed",
    "n_pred_classes",
    "max_class_share",
    "best_epoch",
    "epochs_run",
    "wall_s",
    "checkpoint",
    "log",
    "error",
]
# the run's grid point's statistics (``add_stats``), repeated on each of its rows
_CSV_POINT_FIELDS = {
    "point_n": "n",
    "point_mean": "mean",
    "point_std": "std",
    "point_ci_low": "ci_low",
    "point_ci_high": "ci_high",
    "baseline": "baseline",
    "test": "test",
    "diff": "diff",
    "diff_ci_low": "diff_low",
    "diff_ci_high": "diff_high",
    "p": "p",
    "p_holm": "p_holm",
    "verdict": "verdict",
}


def _csv_text(
    records: Sequence[dict[str, Any]], spec: SweepSpec, rows: Sequence[dict[str, Any]] = ()
) -> str:
    """One row per run: the grid values, the run's fields (``collapsed`` by the current rule)
    and its grid point's statistics (``_CSV_POINT_FIELDS``; NaN written empty)."""
    keys = list(spec.grid)
    by_label = {r["point_label"]: r for r in rows}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*keys, *_CSV_FIELDS, *_CSV_POINT_FIELDS])
    for r in records:
        metrics = r.get("metrics") or {}
        row = [cli_value(r["point"].get(k)) for k in keys]
        for f in _CSV_FIELDS:
            v = metrics.get(f) if "/" in f else r.get(f)
            if f == "error" and v:
                v = v.splitlines()[0]
            if f == "collapsed" and r.get("status") == "ok":
                v = record_collapsed(r)
            row.append("" if v is None else v)
        point = by_label.get(r.get("point_label"), {})
        for f in _CSV_POINT_FIELDS.values():
            v = point.get(f)
            row.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
        writer.writerow(row)
    return buf.getvalue()


def _plot(rows: Sequence[dict[str, Any]], spec: SweepSpec, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 4.2))
    data = [r["values"] for r in rows]
    ax.boxplot(data, positions=range(1, len(rows) + 1), widths=0.6, showfliers=False)
    jitter = random.Random(0)
    for i, r in enumerate(rows, start=1):
        xs = [i + jitter.uniform(-0.18, 0.18) for _ in r["values"]]
        colors = ["tab:red" if c else "tab:blue" for c in r["collapsed_flags"]]
        ax.scatter(xs, r["values"], s=18, alpha=0.8, zorder=3, c=colors)
    ax.set_xticks(range(1, len(rows) + 1))
    ax.set_xticklabels(["\n".join(_cell(spec, k, v) for k, v in r["point"].items()) for r in rows])
    ax.set_xlabel(" / ".join(_short(k) for k in spec.grid))
    ax.set_ylabel(spec.metric)
    ax.set_title(f"{spec.name}: {spec.metric} per grid point (dots: seeds, red: collapsed)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(
    spec: SweepSpec, out: str, command: str, wall_s: float | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Write results.md, results.csv and results.png from the ledger; return (rows, table)."""
    from kwsnet.fileio import atomic_write_text

    keys = content_keys(spec)
    history = read_ledger(os.path.join(out, LEDGER))
    latest = latest_records(history)
    content = {k: _content(r, spec, keys) for k, r in latest.items()}
    # other content: left out until re-run; earlier ok runs of it that a re-run replaced
    excluded = sum(c == "other" for c in content.values())
    rerun = {
        r["run_id"]
        for r in history
        if r.get("status") == "ok"
        and _content(r, spec, keys) == "other"
        and content[r["run_id"]] != "other"
    }
    records = [r for k, r in latest.items() if content[k] != "other"]
    unknown = sum(content[r["run_id"]] == "unknown" for r in records)
    order = {p.run_id: i for i, p in enumerate(plan_runs(spec, out))}
    records.sort(key=lambda r: order.get(r["run_id"], len(order)))
    rows = aggregate(records, spec)
    table = format_table(rows, spec)
    run_wall = sum(r.get("wall_s") or 0.0 for r in records)
    failed = [r for r in records if r.get("status") != "ok"]
    md = [f"# Sweep `{spec.name}`\n"]
    if spec.description:
        md.append(spec.description.strip() + "\n")
    configs = ", ".join(f"`{c}` (content key `{k[:12]}`)" for c, k in keys.items())
    md += [
        f"Base config{'s' if len(keys) > 1 else ''} {configs}, seeds {spec.seeds}, "
        f"metric `{spec.metric}` (sample std, ddof=1); "
        f"{RULE} (on the test predictions; `kwsnet/metrics/collapse.py`).\n",
        stats_note(spec, rows),
        table,
        "![per grid point](results.png)\n",
        f"Command: `{command}`\n",
        f"Runs recorded: {len(records)} ({len(failed)} failed); summed run wall time "
        f"{run_wall / 3600:.2f} h"
        + (f"; this invocation {wall_s / 60:.1f} min" if wall_s else "")
        + ".\n",
    ]
    if rerun:
        md.append(
            f"{len(rerun)} earlier run(s) in the ledger were made with another base config "
            "content or other overrides; they were re-run and only the new results count.\n"
        )
    if excluded:
        md.append(
            f"{excluded} run(s) in the ledger were made with another base config content or "
            "other overrides and are excluded from the table; resuming the sweep re-runs them.\n"
        )
    if unknown:
        md.append(
            f"{unknown} run(s) were recorded without a content key (by an older kwsnet): same "
            f"base config path and overrides, but what `{spec.base_config}` held then is "
            "unknown.\n"
        )
    if spec.overrides:
        md.append(
            "Fixed overrides: "
            + ", ".join(f"`{k}={cli_value(v)}`" for k, v in spec.overrides.items())
            + "\n"
        )
    for r in failed:
        md.append(
            f"- failed `{r['run_id']}`: {r.get('error', '').splitlines()[0]} (log `{r['log']}`)"
        )
    atomic_write_text(os.path.join(out, "results.md"), "\n".join(md) + "\n")
    atomic_write_text(os.path.join(out, "results.csv"), _csv_text(records, spec, rows))
    _plot(rows, spec, os.path.join(out, "results.png"))
    return rows, table


_WANDB_STATS = [
    "ci_low",
    "ci_high",
    "baseline",
    "test",
    "diff",
    "diff_low",
    "diff_high",
    "p",
    "p_holm",
    "verdict",
]


def _summary_run(spec: SweepSpec, out: str, rows: Sequence[dict[str, Any]]) -> str | None:
    """Log the aggregate table and the results files as one wandb run; return its dir."""
    import wandb

    from kwsnet.tracking import resolve_offline

    cfg = spec.wandb
    offline = resolve_offline(cfg.get("offline"))
    run = wandb.init(
        project=cfg.get("project", "kwsnet"),
        group=spec.name,
        job_type="sweep-summary",
        name=f"{spec.name}-summary",
        dir=out,
        mode="offline" if offline else "online",
        config={
            "sweep": dataclasses.asdict(spec),
            "stats": spec.stat,
            "collapse_rule": RULE,
            "higher_is_better": spec.higher_is_better,
        },
        reinit="finish_previous",
    )
    try:
        columns = [_short(k) for k in spec.grid] + [
            "n",
            "mean",
            "std",
            "min",
            "max",
            "collapsed",
            "median_best_epoch",
            "failed",
            *_WANDB_STATS,
        ]
        data = [
            [_cell(spec, k, v) for k, v in r["point"].items()]
            + [
                r["n"],
                r["mean"],
                r["std"],
                r["min"],
                r["max"],
                r["collapsed"],
                r["median_best_epoch"],
                r["failed"],
            ]
            + [r[k] for k in _WANDB_STATS]
            for r in rows
        ]
        run.log({"sweep/table": wandb.Table(columns=columns, data=data)})
        art = wandb.Artifact(f"{spec.name}-results", type="sweep-results")
        for name in (*RESULT_FILES, LEDGER):
            if os.path.exists(os.path.join(out, name)):
                art.add_file(os.path.join(out, name), name=name)
        run.log_artifact(art)
        return os.path.dirname(run.dir)
    finally:
        run.finish()


def wandb_sweep_config(spec: SweepSpec, program: str = "train.py") -> dict[str, Any]:
    """A ``wandb sweep`` config running the same grid × seeds through ``train.py fit``.

    The agent appends ``--key=value`` for each parameter (``${args}``); the spec's fixed
    overrides are literal command arguments so their quoting is exactly the sweep runner's.
    A grid over ``base_config`` cannot be one: the agent would append ``--config`` after the
    overrides, which then lose to the config's values (``ValueError``).
    """
    if BASE_KEY in spec.grid:
        raise ValueError(
            "a grid over base_config cannot be one wandb sweep (the agent appends --config "
            "after the fixed overrides); emit one spec per base config"
        )
    params: dict[str, Any] = {k: {"values": list(v)} for k, v in spec.grid.items()}
    params["seed_everything"] = {"values": list(spec.seeds)}
    command = ["${env}", "${interpreter}", "${program}", "fit", "--config", spec.base_config]
    command += [f"--{k}={cli_value(v)}" for k, v in spec.overrides.items()]
    command += ["--test_after_fit=true", f"--trainer.logger.init_args.group={spec.name}", "${args}"]
    goal = "maximize" if spec.higher_is_better else "minimize"
    return {
        "name": spec.name,
        "program": program,
        "method": "grid",
        "metric": {"name": spec.metric, "goal": goal},
        "parameters": params,
        "command": command,
    }


def _publish(spec: SweepSpec, out: str) -> None:
    """Copy the results files and the ledger (so the table can be rebuilt) to ``publish``."""
    if spec.publish:
        os.makedirs(spec.publish, exist_ok=True)
        for name in (*RESULT_FILES, LEDGER):
            if name != LEDGER or os.path.exists(os.path.join(out, name)):
                shutil.copy2(os.path.join(out, name), os.path.join(spec.publish, name))
        print(f"published results to {spec.publish}")


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
    p.add_argument("--dry-run", action="store_true", help="print the run commands; run nothing")
    p.add_argument("--no-summary-run", action="store_true", help="skip the wandb summary run")
    return p


def sweep_main(argv: list[str]) -> int:
    """``kwsnet sweep``: returns 0 if every run is ok, 1 if any failed, 2 on usage errors."""
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
    if args.report_only:  # read-only on the ledger: works beside a running sweep, no lock
        _, table = write_results(spec, out, command)
        print(table, end="")
        _publish(spec, out)
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
                write_results(spec, out, command, time.monotonic() - start)
                return 130
            rows, table = write_results(spec, out, command, time.monotonic() - start)
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
