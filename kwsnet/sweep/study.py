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
  storage moves a WAITING trial to RUNNING for exactly one ``Study.ask``, where Optuna's
  ``GridSampler`` may hand one grid cell to two workers at once.
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

Storage URLs: ``sqlite:///path.db`` (one machine, or a shared file system with working locks),
``postgresql://...`` / ``mysql+pymysql://...`` (a cluster; the driver is the user's to
install), or a journal file, ``journal:path`` or a path ending ``.journal`` / ``.log``
(Optuna's ``JournalFileBackend``: no database; any shared file system).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kwsnet.errors import KwsnetUserError
from kwsnet.sweep import spec as sweep_spec
from kwsnet.sweep.ledger import record_run
from kwsnet.sweep.runner import (
    _raise_stop,
    _Stop,
    run_env,
    run_line,
    start_run,
    threads_per_run,
)
from kwsnet.sweep.spec import (
    RunPlan,
    SweepSpec,
    content_keys,
    plan_runs,
    point_plans,
    run_base_config,
)

__all__ = [
    "JOURNAL_SUFFIXES",
    "WORKER_ENTRY",
    "StudyError",
    "load_study",
    "open_storage",
    "plan_study",
    "report_spec",
    "requeue_stale",
    "run_worker",
    "start_local_workers",
    "study_keys",
    "study_records",
    "study_report_spec",
    "study_spec",
    "submit_workers",
    "wait_local_workers",
    "worker_argv",
    "worker_devices",
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
# how often an idle worker looks for runs queued again while others still run
IDLE_POLL_S = 2.0
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
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
            # several worker processes write to one file: wait for its lock, don't fail
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
        return optuna.storages.RDBStorage(url, **kwargs)
    except StudyError:
        raise
    except Exception as exc:
        raise StudyError(f"--storage {url!r}: Optuna cannot open it: {exc}") from exc


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


def requeue_stale(
    study: Any, storage: Any, grace_s: float, max_retry: int, log: Any = None
) -> list[int]:
    """Fail every running trial of ``study`` (in ``storage``) whose worker has been silent for
    ``grace_s`` seconds and queue its run again (Optuna's ``RetryFailedTrialCallback``, at most
    ``max_retry`` times); return the numbers of the trials failed. Any worker may call it: of
    two that find the same trial stale, the storage lets one fail it."""
    optuna = _optuna()
    states = _states()
    retry = _retry(max_retry)
    now = time.time()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        if "run_id" not in t.user_attrs:
            continue
        started = t.datetime_start.timestamp() if t.datetime_start else 0.0
        last = max(float(t.user_attrs.get("heartbeat", 0.0)), started)
        if now - last < grace_s:
            continue
        trial_id, _ = _frozen(storage, study, t.number)
        try:
            changed = storage.set_trial_state_values(trial_id, states.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first, or its worker finished it just now
        if changed:
            failed.append(t.number)
            retry(study, storage.get_trial(trial_id))
            print(
                f"trial {t.number} ({t.user_attrs['run_id']}, worker "
                f"{t.user_attrs.get('worker', '?')}) silent for {now - last:.0f}s: failed and "
                "queued again",
                file=log or sys.stdout,
                flush=True,
            )
    return failed


def _duplicate_of(study: Any, trial: Any) -> int | None:
    """The trial that makes ``trial`` redundant: one of the same run finished ok with the
    same content, or one of the same run running that was created earlier."""
    states = _states()
    rid = trial.user_attrs["run_id"]
    key = trial.user_attrs.get("content_key")
    for t in study.get_trials(deepcopy=False):
        if t.number == trial.number or t.user_attrs.get("run_id") != rid:
            continue
        if t.state == states.COMPLETE and _done_key(t) == key:
            return t.number
        if t.state == states.RUNNING and t.number < trial.number:
            return t.number
    return None


class _Heartbeat:
    """A thread that stamps ``time.time()`` into the trial's ``heartbeat`` user attribute
    every ``interval`` seconds until stopped."""

    def __init__(self, trial: Any, interval: float) -> None:
        self._trial = trial
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="kwsnet-heartbeat")

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._trial.set_user_attr("heartbeat", time.time())
            except Exception as exc:  # a storage hiccup: the next beat tries again
                print(f"kwsnet: warning: heartbeat failed: {exc}", file=sys.stderr, flush=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _queue_again(study: Any, storage: Any, trial: Any, max_retry: int) -> None:
    """Fail ``trial`` (interrupted, not broken) and queue its run again."""
    study.tell(trial, state=_states().FAIL)
    _, frozen = _frozen(storage, study, trial.number)
    _retry(max_retry)(study, frozen)


def run_worker(
    url: str,
    name: str,
    threads: int | None = None,
    max_runs: int | None = None,
    log: Any = None,
) -> list[dict[str, Any]]:
    """Take the study's queued runs one at a time until none is queued or running; return
    the records of the runs this worker made. ``threads``: intra-op threads per run (default:
    all cores); ``max_runs``: stop after this many.

    While runs are still running elsewhere the worker waits, looking every ``IDLE_POLL_S``
    seconds (or heartbeat interval, if shorter): one of them may go silent and be queued
    again. SIGTERM / SIGINT end the running run, fail its trial and queue it again, and stop
    the worker.
    """
    log = sys.stdout if log is None else log
    states = _states()
    study, storage = _load(url, name)
    spec = study_spec(study)
    if spec.search is not None:
        study = _optuna().load_study(study_name=name, storage=storage, sampler=_sampler(spec))
    eng = spec.engine_settings
    threads = threads or threads_per_run(1)
    env = run_env(threads)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    records: list[dict[str, Any]] = []
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    print(f"worker {worker} on study {name!r} ({url}), {threads} thread(s) per run", file=log)
    try:
        while max_runs is None or len(records) < max_runs:
            requeue_stale(study, storage, eng["grace_s"], eng["max_retry"], log)
            trials = study.get_trials(deepcopy=False)
            runs = [t for t in trials if "run_id" in t.user_attrs]
            if not any(t.state == states.WAITING for t in runs):
                if spec.search and _point_count(trials) < spec.search_settings["points"]:
                    trial = study.ask()
                    if not _new_point(study, trial, spec):
                        continue
                elif not any(t.state == states.RUNNING for t in runs):
                    break
                else:
                    time.sleep(min(eng["heartbeat_s"], IDLE_POLL_S))
                    continue
            else:
                trial = study.ask()
                if "run_id" not in trial.user_attrs:  # the queue emptied between look and ask
                    trial.set_user_attr("spare", True)
                    study.tell(trial, state=states.PRUNED)
                    continue
                dup = _duplicate_of(study, trial)
                if dup is not None:
                    trial.set_user_attr("duplicate_of", dup)
                    study.tell(trial, state=states.PRUNED)
                    continue
                if spec.search is not None:
                    _suggest(trial, spec)  # a queued seed of a known point: its fixed values
            rec = _run_trial(study, storage, trial, spec, env, threads, worker, eng)
            records.append(rec)
            print(
                f"[{worker} #{len(records)}] trial {trial.number} {run_line(rec)}",
                file=log,
                flush=True,
            )
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return records


def _point_count(trials: Sequence[Any], before: int | None = None) -> int:
    """How many search points the study has sampled, or is sampling, among ``trials``
    numbered below ``before``: distinct point labels, plus running trials that hold no run yet
    (another worker's claim of a new point, not yet labelled). A worker counts the claims
    before its own trial, so of two claiming the last point at once the later one gives up."""
    states = _states()
    labels: set[str] = set()
    pending = 0
    for t in trials:
        if before is not None and t.number >= before:
            continue
        attrs = t.user_attrs
        if attrs.get(POINT_ATTR) and "point_label" in attrs:
            labels.add(attrs["point_label"])
        elif t.state == states.RUNNING and "run_id" not in attrs and not attrs.get("spare"):
            pending += 1
    return len(labels) + pending


def _new_point(study: Any, trial: Any, spec: SweepSpec) -> bool:
    """Make a fresh trial a new search point: its values suggested by the sampler, itself the
    point's first seed, the other seeds queued with the same values. False (the trial given up)
    when the search already has its ``points``: another worker sampled the last one first."""
    states = _states()
    trial.set_user_attr(POINT_ATTR, True)
    if (
        _point_count(study.get_trials(deepcopy=False), trial.number)
        >= spec.search_settings["points"]
    ):
        trial.set_user_attr(POINT_ATTR, False)
        trial.set_user_attr("spare", True)
        study.tell(trial, state=states.PRUNED)
        return False
    point = _suggest(trial, spec)
    out = study.user_attrs.get(OUT_ATTR) or spec.out
    key = study_keys(study).get(spec.base_config)
    entry = study.user_attrs.get(ENTRY_ATTR)
    first, *rest = [
        _plan_of(_plan_attrs(p, key), entry)
        for p in point_plans(spec, point, f"trial{trial.number}", out)
    ]
    for name, value in _plan_attrs(first, key).items():
        trial.set_user_attr(name, value)
    for plan in rest:
        study.enqueue_trial(dict(trial.params), user_attrs=_plan_attrs(plan, key))
    return True


def _run_trial(
    study: Any,
    storage: Any,
    trial: Any,
    spec: SweepSpec,
    env: dict[str, str],
    threads: int,
    worker: str,
    eng: dict[str, Any],
) -> dict[str, Any]:
    """Run the plan a popped trial holds and tell its result; its ledger record."""
    states = _states()
    plan = _plan_of(trial.user_attrs, study.user_attrs.get(ENTRY_ATTR))
    trial.set_user_attr("worker", worker)
    trial.set_user_attr("heartbeat", time.time())
    beat = _Heartbeat(trial, eng["heartbeat_s"])
    beat.start()
    start = time.monotonic()
    proc: subprocess.Popen | None = None
    try:
        proc, logf, run_key = start_run(spec, plan, env, die_with_parent=True)
        try:
            returncode = proc.wait()
        finally:
            logf.close()
    except (_Stop, KeyboardInterrupt):
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        beat.stop()
        _queue_again(study, storage, trial, eng["max_retry"])
        raise
    beat.stop()
    rec = record_run(plan, spec, returncode, time.monotonic() - start, run_key, threads)
    rec.update(trial=trial.number, worker=worker)
    trial.set_user_attr("record", rec)
    if rec["status"] == "ok":
        study.tell(trial, float(rec["value"]))
    else:
        study.tell(trial, state=states.FAIL)
    return rec


def worker_devices(n_workers: int, gpus: int) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` of each of ``n_workers`` workers on this machine when every run
    takes ``gpus`` GPUs: consecutive groups of the visible devices (``CUDA_VISIBLE_DEVICES``,
    else all that torch sees), round-robin when there are more workers than groups; ``None``
    each when ``gpus`` is 0.

    Raises:
        StudyError: the spec asks for GPUs this machine does not have.
    """
    if gpus <= 0:
        return [None] * n_workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d for d in visible.split(",") if d.strip()]
    else:
        import torch

        devices = [str(i) for i in range(torch.cuda.device_count())]
    groups = [devices[i : i + gpus] for i in range(0, len(devices) - gpus + 1, gpus)]
    if not groups:
        raise StudyError(
            f"resources.gpus is {gpus} per run but this machine shows {len(devices)} GPU(s)"
        )
    return [",".join(groups[i % len(groups)]) for i in range(n_workers)]


# the console script's entry (kwsnet.entry): a worker process never imports Lightning itself
WORKER_ENTRY: list[str] = [
    sys.executable,
    "-c",
    "from kwsnet.entry import main; main()",
    "sweep-worker",
]


def worker_argv(url: str, name: str, threads: int) -> list[str]:
    """The command of one local worker process."""
    return [*WORKER_ENTRY, "--storage", url, "--study", name, "--threads", str(threads)]


def start_local_workers(
    spec: SweepSpec, url: str, name: str, n: int, out: str
) -> list[subprocess.Popen]:
    """Start ``n`` worker processes on this machine (``kwsnet sweep-worker``), each with
    ``cores // n`` threads per run and, for GPU runs, its own devices; their output goes to
    ``<out>/workers/worker<i>.log``."""
    threads = threads_per_run(n)
    devices = worker_devices(n, spec.resource_settings["gpus"])
    logs = Path(out) / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        extra = {} if devices[i] is None else {"CUDA_VISIBLE_DEVICES": devices[i]}
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
        with open(logs / f"worker{i}.log", "w") as logf:
            procs.append(
                subprocess.Popen(
                    worker_argv(url, name, threads),
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
    return procs


def _worker_job(url: str, name: str, threads: int) -> int:
    """One submitit array task: a worker until the queue is empty; the runs it made."""
    return len(run_worker(url, name, threads=threads))


def submit_workers(
    spec: SweepSpec, url: str, name: str, n: int, out: str, cluster: str | None = None
) -> list[Any]:
    """Submit ``n`` workers as one job array through submitit's ``AutoExecutor`` (Slurm when
    ``sbatch`` is there, else local processes; ``cluster`` forces one: ``slurm``, ``local``,
    ``debug``), each task with the spec's ``resources``; return the jobs. Slurm gives each task
    its own GPUs (``CUDA_VISIBLE_DEVICES``), and a worker runs one run at a time on them.

    Raises:
        StudyError: submitit is not installed.
    """
    try:
        import submitit
    except ImportError as exc:
        raise StudyError(
            f"--launcher submitit needs submitit (pip install 'kwsnet[slurm]'): {exc}"
        ) from exc
    res = spec.resource_settings
    executor = submitit.AutoExecutor(folder=os.path.join(out, "submitit", "%j"), cluster=cluster)
    params: dict[str, Any] = {
        "name": f"kwsnet-{name}",
        "timeout_min": res["time_min"],
        "cpus_per_task": res["cpus"],
        "gpus_per_node": res["gpus"],
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if res["mem_gb"] is not None:
        params["mem_gb"] = res["mem_gb"]
    if res["partition"] is not None:
        params["slurm_partition"] = res["partition"]
    if res["array_parallelism"] is not None:
        params["slurm_array_parallelism"] = res["array_parallelism"]
    executor.update_parameters(**params)
    return list(executor.map_array(_worker_job, [url] * n, [name] * n, [res["cpus"]] * n))


def wait_local_workers(procs: Sequence[subprocess.Popen]) -> list[int]:
    """Wait for local worker processes; SIGTERM / SIGINT pass on to them (each queues its
    running run again) before re-raising. Their exit codes."""
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return [p.wait() for p in procs]
    except (_Stop, KeyboardInterrupt):
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
