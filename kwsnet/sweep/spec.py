"""The sweep spec: parsing and validation, grid points and their labels, content keys, and
each run's ``kwsnet fit`` arguments (``RunPlan``)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kwsnet import stats as kstats
from kwsnet import yaml12
from kwsnet.errors import ConfigError, yaml_syntax_error
from kwsnet.resources import resolve_config

_WANDB_KEYS = {"log_runs", "summary_run", "project", "offline"}

# ``engine``: the Optuna engine's settings (``kwsnet sweep --storage``, ``kwsnet.sweep.study``).
ENGINE_DEFAULTS: dict[str, Any] = {"heartbeat_s": 30.0, "grace_s": 120.0, "max_retry": 3}
# ``resources``: what one worker gets (``--launcher submitit``: one Slurm array task each).
# ``search``: a sampler over ranges instead of a grid (needs the Optuna engine).
SEARCH_SAMPLERS = ("tpe", "random")
SEARCH_DEFAULTS: dict[str, Any] = {"sampler": "tpe", "startup_points": None, "seed": 0}
RESOURCE_DEFAULTS: dict[str, Any] = {
    "cpus": 2,
    "gpus": 0,
    "time_min": 24 * 60,
    "mem_gb": None,
    "partition": None,
    "array_parallelism": None,
}

# The command a run starts with; its arguments follow. ``-c`` rather than ``train.py`` so the
# runner works from an installed package too. Tests swap in a fake trainer here.
FIT_ENTRY: list[str] = [sys.executable, "-c", "from kwsnet.cli import main; main()", "fit"]
DEFAULT_FIT_ENTRY: tuple[str, ...] = tuple(FIT_ENTRY)


class SpecError(ConfigError):
    """A sweep spec (or a sweep option) that is not valid; the message names the key. A
    ``ValueError``; the CLI exits with status 2, as for a usage error."""

    exit_code = 2


_STATS_DEFAULTS: dict[str, Any] = {
    "ci": "t",
    "alpha": 0.05,
    "baseline": None,
    "bootstrap_samples": 10000,
    "seed": 0,
    "goal": None,
    "margin": None,
}


BASE_KEY = "base_config"  # the grid key of a sweep over base configs


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
            (``max``/``min``, default from the metric name), ``margin`` (the equivalence
            margin of the TOST verdicts, in the metric's units; default ``None``: no
            equivalence test); see ``kwsnet/stats.py``.
        description: free text, copied to results.md.
        engine: the Optuna engine (``kwsnet sweep --storage``): ``heartbeat_s`` (how often a
            worker marks its running trial alive, default 30), ``grace_s`` (a running trial
            without a heartbeat for this long is failed and queued again, default 120; worker
            clocks must agree to well within it) and ``max_retry`` (how often one run is
            queued again after its worker died, default 3).
        resources: what one worker gets when the workers are Slurm jobs (``--launcher
            submitit``): ``cpus``, ``gpus``, ``time_min``, ``mem_gb``, ``partition``,
            ``array_parallelism`` (array tasks at once; default all).
        search: instead of ``grid``, a sampler over ranges (Optuna; needs ``--storage``):
            ``sampler`` (``tpe``, default, or ``random``), ``points`` (how many points to
            sample; each runs once per seed), ``startup_points`` (random points before TPE
            models the results; default ``min(10, points // 2)``), ``seed`` (the sampler's,
            default 0) and ``space``: dotted key → ``{low, high, log?, step?}`` (ints when
            ``low`` and ``high`` are ints) or a list of choices (numbers, strings, booleans).
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
    engine: dict[str, Any] = dataclasses.field(default_factory=dict)
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)
    search: dict[str, Any] | None = None
    # Not a YAML key: the points a search has sampled so far, as (label, point) pairs, which
    # stand in for the grid's product when a search study is reported (``study.report_spec``).
    sampled: list[tuple[str, dict[str, Any]]] | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise SpecError(
                f"sweep name must be non-empty without '/', '\\' or spaces, got {self.name!r}"
            )
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, (int, list)):
            raise SpecError(f"seeds must be a count or a list of ints, got {self.seeds!r}")
        if isinstance(self.seeds, int):
            if self.seeds < 1:
                raise SpecError(f"seeds count must be >= 1, got {self.seeds}")
            self.seeds = list(range(self.seeds))
        if not self.seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in self.seeds
        ):
            raise SpecError(f"seeds must be a non-empty list of ints, got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise SpecError(f"seeds repeat: {self.seeds}")
        if not isinstance(self.grid, dict) or not isinstance(self.overrides, dict):
            raise SpecError("grid and overrides must be mappings of dotted key -> value(s)")
        if isinstance(self.base_config, list):
            if BASE_KEY in self.grid:
                raise SpecError("base_config is a list and a grid key: give it once")
            self.grid = {BASE_KEY: self.base_config, **self.grid}
            self.base_config = None
        if BASE_KEY in self.grid:
            configs = self.grid[BASE_KEY]
            if not isinstance(configs, list) or not configs:
                raise SpecError(f"grid.base_config must be a non-empty list, got {configs!r}")
            if not all(isinstance(c, str) and c for c in configs):
                raise SpecError(f"grid.base_config must be a list of paths, got {configs!r}")
            if self.base_config not in (None, configs[0]):
                raise SpecError("base_config is both at the top and in grid: give it once")
            self.base_config = configs[0]
        if not isinstance(self.base_config, str) or not self.base_config:
            raise SpecError(f"base_config must be a path or a list of paths: {self.base_config!r}")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise SpecError(f"grid.{key} must be a non-empty list of values, got {values!r}")
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise SpecError(f"grid.{key} repeats a value: {values}")
        clash = sorted(set(self.grid) & set(self.overrides))
        if clash:
            raise SpecError(f"keys both in grid and overrides: {clash}")
        reserved = {"seed_everything", "config", "trainer.default_root_dir"}
        bad = sorted((set(self.grid) | set(self.overrides)) & reserved)
        if BASE_KEY in self.overrides:
            raise SpecError("base_config is not an override: set it at the top or in grid")
        if bad:
            raise SpecError(f"{bad} are set by the sweep itself; use `seeds:` for seeds")
        if self.workers < 1:
            raise SpecError(f"workers must be >= 1, got {self.workers}")
        unknown = sorted(set(self.wandb) - _WANDB_KEYS)
        if unknown:
            raise SpecError(f"unknown wandb keys {unknown}; valid: {sorted(_WANDB_KEYS)}")
        self._check_search()
        self._check_stats()
        self._check_engine()
        self.out = self.out or os.path.join("sweeps", self.name)

    def _check_engine(self) -> None:
        for key, defaults in (("engine", ENGINE_DEFAULTS), ("resources", RESOURCE_DEFAULTS)):
            given = getattr(self, key)
            if not isinstance(given, dict):
                raise SpecError(f"{key} must be a mapping, got {given!r}")
            unknown = sorted(set(given) - set(defaults))
            if unknown:
                raise SpecError(f"unknown {key} keys {unknown}; valid: {sorted(defaults)}")
        eng = self.engine_settings
        for name in ("heartbeat_s", "grace_s"):
            v = eng[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise SpecError(f"engine.{name} must be a positive number, got {v!r}")
        if eng["grace_s"] <= eng["heartbeat_s"]:
            raise SpecError(
                f"engine.grace_s ({eng['grace_s']}) must exceed engine.heartbeat_s "
                f"({eng['heartbeat_s']}): a live worker would look dead"
            )
        retry = eng["max_retry"]
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise SpecError(f"engine.max_retry must be an int >= 0, got {retry!r}")
        res = self.resource_settings
        for name in ("cpus", "gpus", "time_min"):
            v = res[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "gpus" else 1):
                raise SpecError(f"resources.{name} must be a whole number, got {v!r}")

    def _check_search(self) -> None:
        s = self.search
        if s is None:
            return
        if not isinstance(s, dict):
            raise SpecError(f"search must be a mapping, got {s!r}")
        unknown = sorted(set(s) - set(SEARCH_DEFAULTS) - {"space", "points"})
        if unknown:
            valid = sorted({*SEARCH_DEFAULTS, "space", "points"})
            raise SpecError(f"unknown search keys {unknown}; valid: {valid}")
        if self.grid and self.sampled is None:
            raise SpecError("a spec has a grid or a search, not both")
        st = self.search_settings
        if st["sampler"] not in SEARCH_SAMPLERS:
            raise SpecError(
                f"search.sampler must be one of {SEARCH_SAMPLERS}, got {st['sampler']!r}"
            )
        for name in ("points", "startup_points", "seed"):
            v = st.get(name)
            if name == "startup_points" and v is None:
                continue
            low = 1 if name == "points" else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise SpecError(f"search.{name} must be an int >= {low}, got {v!r}")
        space = st.get("space")
        if not isinstance(space, dict) or not space:
            raise SpecError("search.space must be a non-empty mapping of dotted key -> range")
        for key, dist in space.items():
            _check_range(key, dist)
        clash = sorted(set(space) & set(self.overrides))
        if clash:
            raise SpecError(f"keys both in search.space and overrides: {clash}")
        bad = sorted(set(space) & {"seed_everything", "config", "trainer.default_root_dir"})
        if bad:
            raise SpecError(f"{bad} are set by the sweep itself; use `seeds:` for seeds")

    @property
    def search_settings(self) -> dict[str, Any]:
        """``search`` with the defaults filled in (``{}`` for a grid spec)."""
        if self.search is None:
            return {}
        st = {**SEARCH_DEFAULTS, **self.search}
        if st["startup_points"] is None and isinstance(st.get("points"), int):
            st["startup_points"] = min(10, st["points"] // 2)
        return st

    @property
    def engine_settings(self) -> dict[str, Any]:
        """``engine`` with the defaults filled in."""
        return {**ENGINE_DEFAULTS, **self.engine}

    @property
    def resource_settings(self) -> dict[str, Any]:
        """``resources`` with the defaults filled in."""
        return {**RESOURCE_DEFAULTS, **self.resources}

    def _check_stats(self) -> None:
        if not isinstance(self.stats, dict):
            raise SpecError(f"stats must be a mapping, got {self.stats!r}")
        unknown = sorted(set(self.stats) - set(_STATS_DEFAULTS))
        if unknown:
            raise SpecError(f"unknown stats keys {unknown}; valid: {sorted(_STATS_DEFAULTS)}")
        st = {**_STATS_DEFAULTS, **self.stats}
        if st["ci"] not in kstats.CI_METHODS:
            raise SpecError(f"stats.ci must be one of {list(kstats.CI_METHODS)}, got {st['ci']!r}")
        alpha = st["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise SpecError(f"stats.alpha must be in (0, 1), got {alpha!r}")
        n = st["bootstrap_samples"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 100:
            raise SpecError(f"stats.bootstrap_samples must be an int >= 100, got {n!r}")
        if isinstance(st["seed"], bool) or not isinstance(st["seed"], int):
            raise SpecError(f"stats.seed must be an int, got {st['seed']!r}")
        if st["goal"] not in (None, "max", "min"):
            raise SpecError(f"stats.goal must be max, min or null, got {st['goal']!r}")
        margin = st["margin"]
        if margin is not None and (
            isinstance(margin, bool)
            or not isinstance(margin, (int, float))
            or not math.isfinite(margin)
            or margin <= 0
        ):
            raise SpecError(f"stats.margin must be a positive number or null, got {margin!r}")
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


_SPEC_KEYS = [f.name for f in dataclasses.fields(SweepSpec) if f.name != "sampled"]


def _check_range(key: str, dist: Any) -> None:
    """Raise ``SpecError`` unless ``dist`` is a valid ``search.space`` entry for ``key``."""
    where = f"search.space.{key}"
    if isinstance(dist, list):
        if not dist or not all(v is None or isinstance(v, (bool, int, float, str)) for v in dist):
            raise SpecError(
                f"{where}: choices must be a non-empty list of numbers, strings or booleans "
                f"(Optuna's categorical values), got {dist!r}"
            )
        if len({json.dumps(v) for v in dist}) != len(dist):
            raise SpecError(f"{where} repeats a choice: {dist}")
        return
    if not isinstance(dist, dict):
        raise SpecError(f"{where}: expected {{low, high, log?, step?}} or a list of choices")
    unknown = sorted(set(dist) - {"low", "high", "log", "step"})
    if unknown or "low" not in dist or "high" not in dist:
        raise SpecError(f"{where}: expected keys low, high (and log, step), got {sorted(dist)}")
    low, high, step = dist["low"], dist["high"], dist.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
        raise SpecError(f"{where}: low, high and step must be numbers, got {dist}")
    if not low < high:
        raise SpecError(f"{where}: low must be below high, got {low} and {high}")
    if dist.get("log") and (low <= 0 or step is not None):
        raise SpecError(f"{where}: log needs low > 0 and no step, got {dist}")
    if step is not None and step <= 0:
        raise SpecError(f"{where}: step must be positive, got {step}")


def range_is_int(dist: dict[str, Any]) -> bool:
    """Whether a ``search.space`` range samples ints (``low``, ``high`` and any ``step`` are
    ints)."""
    values = [dist["low"], dist["high"], dist.get("step", 1)]
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read a sweep spec YAML; unknown keys raise a ``SpecError`` listing the valid ones.

    YAML 1.2 scalars, as in the configs: ``[yes, no]`` are words, ``1e-3`` is a float.

    Raises:
        SpecError: no such file, or not a valid spec (a ``ValueError``).
        ConfigSyntaxError: the file is not YAML (names the line).
    """
    file = Path(resolve_config(os.fspath(path)))
    try:
        text = file.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the sweep spec ({exc.strerror or exc})") from exc
    try:
        data = yaml12.load(text)
    except yaml12.MarkedYAMLError as exc:
        raise yaml_syntax_error(os.fspath(path), text, exc) from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a sweep spec is a YAML mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_SPEC_KEYS))
    if unknown:
        raise SpecError(f"{path}: unknown sweep spec keys {unknown}; valid keys: {_SPEC_KEYS}")
    missing = [k for k in ("name", "base_config", "seeds") if k not in data]
    if BASE_KEY in (data.get("grid") or {}) and "base_config" in missing:
        missing.remove("base_config")
        data = {**data, "base_config": None}
    if missing:
        raise SpecError(f"{path}: sweep spec needs {missing}")
    try:
        return SweepSpec(**data)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from exc


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


def _compact(value: Any) -> str:
    """``{"warmup_steps": 0, "momentum": 0.9}`` → ``warmup_steps=0,momentum=0.9``; others: JSON."""
    if (
        isinstance(value, dict)
        and value
        and all(not isinstance(v, (dict, list)) for v in value.values())
    ):
        return ",".join(f"{k}={cli_value(v)}" for k, v in value.items())
    return cli_value(value)


def _value_label(key: str, value: Any) -> str:
    """A short, readable name for one grid value (before making a key's names unique)."""
    if key == BASE_KEY and isinstance(value, str):
        return Path(value).stem
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        return value["class_path"].rsplit(".", 1)[-1]
    text = _compact(value) if isinstance(value, dict) else cli_value(value)
    if isinstance(value, (dict, list)) and len(text) > _LONG_VALUE:
        return f"{type(value).__name__}-{_hash6(value)}"
    return text


def _init_args_diff(values: Sequence[dict]) -> list[str]:
    """For class_path dicts sharing a class: each one's ``init_args`` that differ among them."""
    args = [v.get("init_args") or {} for v in values]
    keys = sorted({k for a in args for k in a}, key=str)
    varying = [k for k in keys if len({json.dumps(a.get(k), sort_keys=True) for a in args}) > 1]
    return [_compact({k: a.get(k) for k in varying}) if varying else "" for a in args]


def value_labels(key: str, values: Sequence[Any]) -> list[str]:
    """The labels of one grid key's values: ``_value_label``; where two values would share a
    label, class_path dicts add the ``init_args`` that tell them apart (``LSUV(order=joint)``),
    base configs use their full path, and anything still shared (or too long) a 6-hex hash."""
    labels = [_value_label(key, v) for v in values]
    first = list(labels)
    for label in set(first):
        idx = [i for i, lab in enumerate(first) if lab == label]
        if len(idx) < 2:
            continue
        group = [values[i] for i in idx]
        if key == BASE_KEY:
            names = [str(v) for v in group]
        elif all(isinstance(v, dict) and "class_path" in v for v in group):
            diffs = _init_args_diff(group)
            names = [f"{label}({d})" if d else label for d in diffs]
        else:
            names = [label] * len(group)
        for i, name in zip(idx, names, strict=True):
            if len(name) > _LONG_VALUE + len(label) or names.count(name) > 1:
                name = f"{label}-{_hash6(values[i])}"
            labels[i] = name
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
    for label, sampled in (spec.sampled if spec is not None else None) or ():
        if sampled == point:
            return label
    return ",".join(f"{_short(k)}={_label_of(spec, k, v)}" for k, v in point.items()) or "base"


def baseline_index(spec: SweepSpec, baseline: Any = _STATS_DEFAULTS["baseline"]) -> int:
    """The index (in grid order) of the ``stats.baseline`` point: ``None`` → 0, an int index,
    or a point label as in the table (e.g. ``lr=0.005,norm_placement=end``)."""
    points = grid_points(spec)
    if baseline is None:
        return 0
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        if not 0 <= baseline < len(points):
            raise SpecError(f"stats.baseline index {baseline} is not in 0..{len(points) - 1}")
        return baseline
    labels = [point_label(p, spec) for p in points]
    if baseline in labels:
        return labels.index(baseline)
    raise SpecError(f"stats.baseline {baseline!r} is not a grid point; the points: {labels}")


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
    """A base config file (or the shipped config it names, as the CLI finds it), parsed as the
    CLI parses it (YAML 1.2 scalars)."""
    return yaml12.load(Path(resolve_config(path)).read_text())


def _canonical(obj: Any) -> Any:
    """``obj`` with string keys and lists for tuples, for a stable JSON dump. A
    ``class_path: kwsnet.models.X`` counts as ``models.X``, its name before the backbones
    moved into kwsnet: the same class, so runs recorded before the rename keep their key."""
    if isinstance(obj, dict):
        out = {str(k): _canonical(v) for k, v in obj.items()}
        path = out.get("class_path")
        if isinstance(path, str) and path.startswith(yaml12.MODELS_PREFIX):
            out["class_path"] = yaml12.LEGACY_MODELS_PREFIX + path[len(yaml12.MODELS_PREFIX) :]
        return out
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
                except yaml12.YAMLError:
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
        except (OSError, yaml12.YAMLError):
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
    """Every grid point as ``{key: value}``, in spec order (first key slowest); for a search,
    the points sampled so far (``spec.sampled``; none before a study has sampled one)."""
    if spec.sampled is not None:
        return [dict(point) for _, point in spec.sampled]
    if spec.search is not None:
        return []
    return [dict(zip(spec.grid, v, strict=True)) for v in itertools.product(*spec.grid.values())]


def _fit_entry() -> list[str]:
    """``FIT_ENTRY``, read at call time, so swapping it (``kwsnet.sweep.spec.FIT_ENTRY``)
    takes effect."""
    return list(FIT_ENTRY)


def plan_runs(spec: SweepSpec, out: str | None = None) -> list[RunPlan]:
    """Every (grid point × seed) run, grid points in spec order (first key slowest)."""
    out = out or spec.out
    bases: dict[str, Any] = {}
    for config in spec.base_configs:
        try:
            bases[config] = _load_base(config)
        except (OSError, yaml12.YAMLError):
            bases[config] = _UNKNOWN
    plans = []
    for point in grid_points(spec):
        label = point_label(point, spec)
        plans += point_plans(spec, point, label, out, bases[run_base_config(spec, point)])
    return plans


def point_plans(
    spec: SweepSpec, point: dict[str, Any], label: str, out: str, base: Any = _UNKNOWN
) -> list[RunPlan]:
    """The runs of one point (one per seed), labelled ``label``, their dirs under ``out``;
    ``base``: the parsed base config (``run_args``)."""
    plans = []
    for seed in spec.seeds:
        run_id = f"{_slug(label)}__seed{seed}"
        run_dir = os.path.join(out, "runs", run_id)
        argv = [*_fit_entry(), *run_args(spec, point, seed, run_id, run_dir, base)]
        plans.append(
            RunPlan(run_id, point, label, seed, run_dir, os.path.join(run_dir, "run.log"), argv)
        )
    return plans


def _fixed(spec: SweepSpec, config: str | None = None) -> dict[str, Any]:
    """The run's base config path (default the spec's) and the overrides, for humans (and for
    records without a key)."""
    fixed = {"base_config": config or spec.base_config, "overrides": spec.overrides}
    return json.loads(json.dumps(fixed))


def _launch_key(spec: SweepSpec, config: str | None = None) -> str | None:
    """The content key as a run starts; ``None`` if the base config cannot be read then."""
    try:
        return content_key(spec, base_config=config)
    except (OSError, yaml12.YAMLError):
        return None


def content_keys(spec: SweepSpec) -> dict[str, str]:
    """``content_key`` of every base config of the sweep (raises if one cannot be read)."""
    return {c: content_key(spec, base_config=c) for c in spec.base_configs}
