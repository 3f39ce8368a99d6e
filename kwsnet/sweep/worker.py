"""A sweep worker (``kwsnet sweep-worker``): takes an Optuna study's queued runs one at a time,
runs each as the local runner does, stamps a heartbeat while it runs, fails and re-queues the
runs of silent workers, samples new points for a search. How a sweep maps onto the study:
``kwsnet.sweep.study``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from kwsnet.sweep.ledger import record_run
from kwsnet.sweep.runner import (
    _raise_stop,
    _Stop,
    end_process,
    run_env,
    run_line,
    start_run,
    threads_per_run,
)
from kwsnet.sweep.spec import SweepSpec, point_plans
from kwsnet.sweep.study import (
    ENTRY_ATTR,
    OUT_ATTR,
    POINT_ATTR,
    _done_key,
    _frozen,
    _load,
    _optuna,
    _plan_attrs,
    _plan_of,
    _retry,
    _sampler,
    _states,
    _suggest,
    study_keys,
    study_spec,
)

__all__ = ["IDLE_POLL_S", "requeue_stale", "run_worker"]

# how often an idle worker looks for runs queued again while others still run
IDLE_POLL_S = 2.0


def requeue_stale(
    study: Any, storage: Any, grace_s: float, max_retry: int, log: Any = None
) -> list[int]:
    """Fail every running trial of ``study`` (in ``storage``) whose worker has been silent for
    ``grace_s`` seconds and queue its run again (Optuna's ``RetryFailedTrialCallback``, at most
    ``max_retry`` times); return the numbers of the trials failed. A running trial that holds
    no run after ``grace_s`` (a worker that died while claiming a new search point) is failed
    without a retry, so it no longer counts as a point. Any worker may call it: of two that
    find the same trial stale, the storage lets one fail it."""
    optuna = _optuna()
    states = _states()
    retry = _retry(max_retry)
    now = time.time()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        started = t.datetime_start.timestamp() if t.datetime_start else 0.0
        last = max(float(t.user_attrs.get("heartbeat", 0.0)), started)
        if now - last < grace_s:
            continue
        trial_id, _ = _frozen(storage, study, t.number)
        try:
            changed = storage.set_trial_state_values(trial_id, states.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first, or its worker finished it just now
        if changed and "run_id" not in t.user_attrs:
            failed.append(t.number)
        elif changed:
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
                    if "run_id" in trial.user_attrs:  # another worker queued seeds meanwhile:
                        _suggest(trial, spec)  # this is one of them, not a new point
                    elif not _new_point(study, trial, spec):
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
        if proc is not None:
            end_process(proc)
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
