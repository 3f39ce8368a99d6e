"""Optuna as the sweep engine: one study holds a sweep's runs, and any number of worker
processes, on one machine or many, take them until none is left.

    kwsnet sweep --config S.yaml --storage sqlite:///sweeps/S.db [--workers N]
    kwsnet sweep-worker --storage URL --study NAME        # on every other machine
    kwsnet sweep --report_only --storage URL --study NAME

How a sweep maps onto Optuna (see docs/sweeps.md):

- **Planning** (``plan_study``) creates or joins the study (named after the spec), stores the
  spec and its base configs' content keys as study user attributes, and enqueues one WAITING
  trial per (grid point × seed) that is neither done with the spec's content nor already
  queued or running (``Study.enqueue_trial``), the run's plan (run id, point, seed, run dir,
  command) in the trial's user attributes. A grid × seeds is a fixed queue of runs: the
  storage moves a WAITING trial to RUNNING for exactly one ``Study.ask`` (on SQLite only with
  ``BEGIN IMMEDIATE`` transactions: ``_sqlite_storage``), where Optuna's ``GridSampler`` may
  hand one grid cell to two workers at once.
- **Workers** (``run_worker``) pop a trial, run it as the local runner does (one ``kwsnet fit``
  process, its own run dir, summary.json, wandb run) and tell the result: COMPLETE with the
  metric, or FAIL for a failed run (the sweep goes on). The ledger record the local runner would
  write (result, provenance, run dir, ...) is the trial's ``record`` user attribute, so the
  tables come from the study (``study_records``) through the same ``write_results``.
- **Nothing lost.** A worker marks its running trial alive every ``engine.heartbeat_s`` (user
  attribute ``heartbeat``); any worker that finds a running trial silent for ``engine.grace_s``
  fails it and queues it again with Optuna's ``RetryFailedTrialCallback`` (at most
  ``engine.max_retry`` times). Optuna's own heartbeat exists only for RDB storages; this one
  works with a journal file too. A worker's run process dies with it (``PR_SET_PDEATHSIG``),
  so a retried run never shares its run dir with an orphan. A worker that pops a run another
  worker already finished (same content) or holds (an earlier trial) gives its trial up
  (PRUNED, ``duplicate_of``): two plannings racing on one study cannot run a run twice.

The worker loop is ``kwsnet.sweep.worker``; starting workers here or as a Slurm job array is
``kwsnet.sweep.launch``.

Storage URLs: ``sqlite:///path.db`` (one machine, or a shared file system with working locks),
``postgresql://...`` / ``mysql+pymysql://...`` (a cluster; the driver is the user's to
install), or a journal file, ``journal:path`` or a path ending ``.journal`` / ``.log``
(Optuna's ``JournalFileBackend``: no database; any shared file system).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kwsnet.errors import KwsnetUserError
from kwsnet.sweep import spec as sweep_spec
from kwsnet.sweep.spec import (
    RunPlan,
    SweepSpec,
    content_keys,
    plan_runs,
    run_base_config,
)

__all__ = [
    "JOURNAL_SUFFIXES",
    "StudyError",
    "load_study",
    "open_storage",
    "plan_study",
    "report_spec",
    "study_keys",
    "study_records",
    "study_report_spec",
    "study_spec",
    "write_ledger_snapshot",
]

SPEC_ATTR = "kwsnet_spec"  # study user attribute: the spec, as SweepSpec fields
KEYS_ATTR = "kwsnet_content_keys"  # study user attribute: base config → content key
JOURNAL_SUFFIXES = (".journal", ".log")
# The spec fields that say which runs a study holds: joining a study with other ones refuses.
_RUN_FIELDS = ("base_config", "grid", "search", "seeds", "overrides", "metric")
OUT_ATTR = "kwsnet_out"  # study user attribute: the sweep dir the run dirs go under
# study user attribute: the command a run starts with when it is not kwsnet's own (a test's
# fake trainer); otherwise each worker starts `kwsnet fit` with its own Python
ENTRY_ATTR = "kwsnet_fit_entry"
POINT_ATTR = "search_point"  # trial user attribute: this trial sampled a new search point


class StudyError(KwsnetUserError, ValueError):
    """A storage URL or study that cannot be used (exit status 2)."""

    exit_code = 2


def _optuna() -> Any:
    """The optuna module, or a StudyError saying how to install it."""
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - optuna is a dependency of kwsnet
        raise StudyError(f"--storage needs optuna (pip install optuna): {exc}") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(url: str) -> Any:
    """The Optuna storage behind ``url`` (see the module docstring for the forms).

    Raises:
        StudyError: a URL of no known form, or one Optuna cannot open.
    """
    optuna = _optuna()
    journal = url[len("journal:") :] if url.startswith("journal:") else None
    if journal is None and "://" not in url and url.endswith(JOURNAL_SUFFIXES):
        journal = url
    try:
        if journal is not None:
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            Path(journal).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(journal))
        if "://" not in url:
            raise StudyError(
                f"--storage {url!r}: expected a database URL (sqlite:///path.db, "
                "postgresql://..., mysql+pymysql://...) or a journal file (journal:path, or a "
                f"path ending {' or '.join(JOURNAL_SUFFIXES)})"
            )
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
            return _sqlite_storage(optuna, url)
        return optuna.storages.RDBStorage(url)
    except StudyError:
        raise
    except Exception as exc:
        raise StudyError(f"--storage {url!r}: Optuna cannot open it: {exc}") from exc


def _sqlite_storage(optuna: Any, url: str) -> Any:
    """An RDBStorage on a SQLite file whose transactions are serialised: each one starts with
    ``BEGIN IMMEDIATE`` (the write lock), waiting up to 120 s for it.

    Optuna pops a queued trial by reading it WAITING and writing it RUNNING in one transaction
    (``SELECT ... FOR UPDATE`` on a server database). Python's sqlite3 driver begins a
    transaction only before the first write, and SQLite has no ``FOR UPDATE``: two workers
    both read the trial WAITING, both set it RUNNING, both run it (3 processes popping 60
    queued trials popped 70-73 here; Optuna issue #4002). With the write lock taken at
    ``BEGIN`` the second worker reads RUNNING and takes the next trial (SQLAlchemy's recipe
    for serializable SQLite: the driver's own transaction handling off, ``BEGIN`` emitted on
    the connection's begin event)."""
    from sqlalchemy import event

    storage = optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"timeout": 120, "isolation_level": None}}
    )

    @event.listens_for(storage.engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return storage


def _spec_dict(spec: SweepSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def study_spec(study: Any) -> SweepSpec:
    """The sweep spec a study was planned from.

    Raises:
        StudyError: the study was not made by ``kwsnet sweep``.
    """
    data = study.user_attrs.get(SPEC_ATTR)
    if not isinstance(data, dict):
        raise StudyError(
            f"study {study.study_name!r} holds no kwsnet sweep spec (user attribute "
            f"{SPEC_ATTR!r}): it was not made by `kwsnet sweep --storage`"
        )
    return SweepSpec(**data)


def study_report_spec(study: Any) -> SweepSpec:
    """The spec a study's results are reported with: ``study_spec``, and for a search the
    points sampled so far in place of a grid (``report_spec``)."""
    return report_spec(study_spec(study), _sampled(study))


def study_keys(study: Any) -> dict[str, str | None]:
    """The content key of each base config as the study was (last) planned."""
    return dict(study.user_attrs.get(KEYS_ATTR) or {})


def load_study(url: str, name: str) -> Any:
    """The existing study ``name`` in the storage at ``url``.

    Raises:
        StudyError: no such study (the message lists the ones there are).
    """
    return _load(url, name)[0]


def _load(url: str, name: str) -> tuple[Any, Any]:
    """(study, its storage): ``load_study``'s work."""
    optuna = _optuna()
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage), storage
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise StudyError(f"--study {name!r} is not in {url}; studies there: {names}") from None


def _frozen(storage: Any, study: Any, number: int) -> tuple[int, Any]:
    """(trial id, ``FrozenTrial``) of the study's trial ``number``, read from the storage."""
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return trial_id, storage.get_trial(trial_id)


def _plan_attrs(plan: RunPlan, key: str | None) -> dict[str, Any]:
    """A run's plan as trial user attributes: the ``RunPlan`` fields, ``fit_args`` (its
    arguments after the entry command) and the content key it is planned with."""
    entry = sweep_spec._fit_entry()
    args = plan.argv[len(entry) :] if plan.argv[: len(entry)] == entry else plan.argv
    return {**dataclasses.asdict(plan), "fit_args": args, "content_key": key}


def _plan_of(attrs: dict[str, Any], entry: list[str] | None) -> RunPlan:
    """The ``RunPlan`` a trial holds, its command starting with ``entry`` (a study's own)
    or this process's ``kwsnet fit`` (its own Python, which may live elsewhere than the
    planning machine's)."""
    fields = {f.name for f in dataclasses.fields(RunPlan)}
    plan = RunPlan(**{k: v for k, v in attrs.items() if k in fields})
    if "fit_args" not in attrs:
        return plan
    argv = [*(entry or sweep_spec._fit_entry()), *attrs["fit_args"]]
    return dataclasses.replace(plan, argv=argv)


def _retry(max_retry: int) -> Any:
    """Optuna's callback that queues a failed trial again (``RetryHeartbeatStaleTrialCallback``
    from Optuna 4.9, ``RetryFailedTrialCallback`` before), at most ``max_retry`` times."""
    import warnings

    storages = _optuna().storages
    cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
    if cls is None:  # Optuna < 4.9
        return storages.RetryFailedTrialCallback(max_retry=max_retry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning: the interface is Optuna 2.8's
        return cls(max_retry=max_retry)


def _states() -> Any:
    return _optuna().trial.TrialState


def _done_key(trial: Any) -> str | None:
    """The content key of a trial's ok run (None: not an ok run)."""
    rec = trial.user_attrs.get("record") or {}
    return rec.get("content_key") if rec.get("status") == "ok" else None


def plan_study(spec: SweepSpec, url: str, out: str, name: str | None = None) -> tuple[Any, int]:
    """Create or join the study of ``spec`` (``name``, default the spec's name) and queue
    every run not yet done with the spec's content, queued or running; return (study, number
    of runs queued now). Run dirs go under ``out``.

    Raises:
        StudyError: the study exists with another spec (other grid, seeds, overrides, base
            configs or metric).
    """
    optuna = _optuna()
    states = _states()
    storage = open_storage(url)
    name = name or spec.name
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize" if spec.higher_is_better else "minimize",
        load_if_exists=True,
    )
    new = _spec_dict(spec)
    old = study.user_attrs.get(SPEC_ATTR)
    if isinstance(old, dict):
        differ = [f for f in _RUN_FIELDS if old.get(f) != new.get(f)]
        if differ:
            raise StudyError(
                f"study {name!r} in {url} holds a sweep with other {differ}; give this spec "
                "another name (--study) or storage"
            )
    keys = content_keys(spec)
    study.set_user_attr(SPEC_ATTR, new)
    study.set_user_attr(KEYS_ATTR, keys)
    study.set_user_attr(OUT_ATTR, out)
    entry = sweep_spec._fit_entry()
    study.set_user_attr(ENTRY_ATTR, None if tuple(entry) == sweep_spec.DEFAULT_FIT_ENTRY else entry)
    # a search's points so far (their runs that failed or were cut off are queued again)
    points = _sampled(study)
    plans = plan_runs(report_spec(spec, points) if spec.search else spec, out)
    params = {label: p for label, _, p in points}
    have: set[str] = set()
    for t in study.get_trials(deepcopy=False):
        rid = t.user_attrs.get("run_id")
        if rid is None:
            continue
        if t.state in (states.WAITING, states.RUNNING):
            have.add(rid)
        elif t.state == states.COMPLETE:
            if _done_key(t) == keys.get(run_base_config(spec, t.user_attrs.get("point"))):
                have.add(rid)
    queued = 0
    for plan in plans:
        if plan.run_id not in have:
            key = keys.get(run_base_config(spec, plan.point))
            fixed = params.get(plan.point_label, {})
            study.enqueue_trial(fixed, user_attrs=_plan_attrs(plan, key))
            queued += 1
    return study, queued


def _sampled(study: Any) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """A search study's points in the order sampled: (label, point, Optuna params); a retried
    point trial's copy is the same point."""
    out: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        label = t.user_attrs.get("point_label")
        if t.user_attrs.get(POINT_ATTR) and label is not None and label not in out:
            out[label] = (label, t.user_attrs["point"], dict(t.params))
    return list(out.values())


def report_spec(spec: SweepSpec, points: Sequence[tuple[str, dict[str, Any], Any]]) -> SweepSpec:
    """The spec a search study is planned and reported with: its sampled ``points`` (label,
    point, ...) in place of a grid's product, each key's distinct values as its grid (the
    table's columns). A grid spec is returned as it is."""
    if spec.search is None:
        return spec
    grid: dict[str, list[Any]] = {}
    for _, point, *_ in points:
        for key, value in point.items():
            if value not in grid.setdefault(key, []):
                grid[key].append(value)
    sampled = [(label, dict(point)) for label, point, *_ in points]
    return dataclasses.replace(spec, search=None, grid=grid, sampled=sampled)


def _sampler(spec: SweepSpec) -> Any:
    """The Optuna sampler a search spec asks for: each worker seeds it with the spec's seed
    and its own process, so two workers starting at once do not propose the same points."""
    optuna = _optuna()
    st = spec.search_settings
    seed = (st["seed"] * 1_000_003 + os.getpid()) % 2**31
    if st["sampler"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # TPE counts trials: a point is len(seeds) of them
    startup = st["startup_points"] * len(spec.seeds)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _suggest(trial: Any, spec: SweepSpec) -> dict[str, Any]:
    """The search point of ``trial``: each ``search.space`` key suggested (for a queued
    seed of a known point, the fixed values it was queued with)."""
    from kwsnet.sweep.spec import range_is_int

    point = {}
    for key, dist in spec.search_settings["space"].items():
        if isinstance(dist, list):
            point[key] = trial.suggest_categorical(key, dist)
        elif range_is_int(dist):
            step = dist.get("step", 1)
            log = bool(dist.get("log", False))
            point[key] = trial.suggest_int(key, dist["low"], dist["high"], step=step, log=log)
        else:
            point[key] = trial.suggest_float(
                key, dist["low"], dist["high"], step=dist.get("step"), log=bool(dist.get("log"))
            )
    return point


def study_records(study: Any) -> list[dict[str, Any]]:
    """Every finished run's ledger record in the study, in trial order (a retried or re-run
    run's later record last, as in a ledger), each with its ``trial`` number."""
    records = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        rec = t.user_attrs.get("record")
        if isinstance(rec, dict):
            records.append({**rec, "trial": t.number})
    return records


def write_ledger_snapshot(records: Sequence[dict[str, Any]], out: str) -> str:
    """Write a study's records (``study_records``) as ``<out>/ledger.jsonl``, so the tables
    can be rebuilt (and published) without the storage; return the path. A ledger a local
    sweep wrote there (records without a ``trial``) is never replaced: the snapshot then goes
    to ``ledger.study.jsonl``."""
    import json

    from kwsnet.fileio import atomic_write_text
    from kwsnet.sweep.ledger import LEDGER, read_ledger

    path = os.path.join(out, LEDGER)
    if os.path.exists(path) and any("trial" not in r for r in read_ledger(path)):
        path = os.path.join(out, "ledger.study.jsonl")
    os.makedirs(out, exist_ok=True)
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write_text(path, text)
    return path
