"""The JSONL ledger (one fsync'd line per finished run, torn-line tolerant), the record of a
finished run (with the collapse rule applied and its provenance), resume's content matching,
provenance groups, and the sweep lock."""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kwsnet.errors import KwsnetUserError
from kwsnet.metrics.collapse import MAX_SHARE, collapse_stats, is_collapsed
from kwsnet.sweep.spec import (
    _UNKNOWN,
    RunPlan,
    SweepSpec,
    _fixed,
    _launch_key,
    run_base_config,
)

LEDGER = "ledger.jsonl"


LOCK = "sweep.lock"


_TAIL_LINES = 25


# The provenance fields (``kwsnet.tracking.provenance``) that tell code versions and kernels
# apart: records differing in one of them are never averaged into one table row. Recorded but
# not grouped on: ``git_dirty`` (in the commit's ``-dirty`` suffix) and ``num_threads`` (a
# setting of the sweep, ``cores // workers``, which a resume with other ``--workers`` changes).
PROVENANCE_KEYS = (
    "git_commit",
    "kwsnet_version",
    "torch_version",
    "lightning_version",
    "cpu_capability",
)
_PROVENANCE_NAMES = {
    "git_commit": "commit",
    "kwsnet_version": "kwsnet",
    "torch_version": "torch",
    "lightning_version": "lightning",
    "cpu_capability": "cpu",
}
UNKNOWN_PROVENANCE = "unknown"  # the group of records written before provenance was recorded

ProvenanceKey = tuple[Any, ...] | None


def sweep_provenance(threads: int | None = None) -> dict[str, Any]:
    """``kwsnet.tracking.provenance()`` of this (the sweep) process, with ``num_threads`` set
    to a run's thread count (``threads``: the ``OMP_NUM_THREADS`` the runner gave it; ``None``
    when unknown): the fallback for a run whose summary.json records no provenance."""
    try:
        from kwsnet.tracking import provenance

        prov = provenance()
    except Exception as exc:  # never lose a finished run's record over its provenance
        warnings.warn(f"kwsnet.tracking.provenance() failed: {exc}", stacklevel=2)
        prov = dict.fromkeys(("kwsnet_version", *PROVENANCE_KEYS, "git_dirty"))
        prov["git_commit"] = "unknown"
    return {**prov, "num_threads": threads}


def provenance_key(rec: Mapping[str, Any]) -> ProvenanceKey:
    """The provenance group of a ledger record: its ``PROVENANCE_KEYS`` values, or ``None``
    (``UNKNOWN_PROVENANCE``) for a record without provenance (written before it existed)."""
    prov = rec.get("provenance")
    if not isinstance(prov, dict):
        return None
    return tuple(prov.get(k) for k in PROVENANCE_KEYS)


def _short_value(key: str, value: Any) -> str:
    text = str(value)
    if key == "git_commit" and len(text) >= 40:  # a sha: 12 hex digits (+ "-dirty")
        return text[:12] + text[40:]
    return text


def provenance_labels(keys: Iterable[ProvenanceKey]) -> dict[ProvenanceKey, str]:
    """A short label for each provenance group: the fields that differ among the known groups
    (the commit when only one is known), e.g. ``commit 4949e7d1a2b3-dirty, torch 2.14.1``;
    ``unknown`` for records without provenance."""
    keys = list(dict.fromkeys(keys))
    known = [k for k in keys if k is not None]
    fields = [i for i in range(len(PROVENANCE_KEYS)) if len({k[i] for k in known}) > 1] or [0]
    labels: dict[ProvenanceKey, str] = {}
    for k in keys:
        if k is None:
            labels[k] = UNKNOWN_PROVENANCE
            continue
        labels[k] = ", ".join(
            f"{_PROVENANCE_NAMES[PROVENANCE_KEYS[i]]} {_short_value(PROVENANCE_KEYS[i], k[i])}"
            for i in fields
        )
    return labels


def describe_provenance(
    records: Iterable[Mapping[str, Any]], among: Iterable[ProvenanceKey] = ()
) -> str:
    """The provenance groups of ``records`` with how many runs each, in order of first
    appearance: ``commit 4949e7d1a2b3 (6 runs), unknown (4 runs)``; labelled by the fields that
    differ among them and the groups ``among``."""
    counts = Counter(provenance_key(r) for r in records)
    labels = provenance_labels([*counts, *among])
    return ", ".join(f"{labels[k]} ({n} run{'s' if n != 1 else ''})" for k, n in counts.items())


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
        stats = collapse_stats(counts, MAX_SHARE, test.get("true_counts"))
        test.setdefault("n_pred_classes", stats["n_pred_classes"])
        test.setdefault("max_class_share", stats["max_class_share"])
        if "n_true_classes" in stats:
            test.setdefault("n_true_classes", stats["n_true_classes"])
        return bool(stats["collapsed"]), test
    if num_classes and test.get("n_pred_classes") is not None and "max_class_share" in test:
        n_pred, share = test["n_pred_classes"], test["max_class_share"]
        return is_collapsed(int(n_pred), int(num_classes), float(share)), test
    if "collapsed" in test:
        return bool(test["collapsed"]), test
    if "test/collapsed" in metrics:
        return bool(metrics["test/collapsed"]), test
    return None, test


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
    plan: RunPlan,
    spec: SweepSpec,
    returncode: int,
    wall_s: float,
    key: Any = _UNKNOWN,
    threads: int | None = None,
) -> dict[str, Any]:
    """Build the ledger record of a finished run from its exit code and ``summary.json``.

    ``key``: the content key the run started with (default: its ``content_key`` now).
    ``provenance``: the run's own, from summary.json's ``provenance`` (``provenance_source``
    ``"run"``); without one (an older kwsnet, a failed run) ``sweep_provenance(threads)``
    (``"sweep"``), ``threads`` being the thread count the runner gave the run.
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
            n_true_classes=test.get("n_true_classes"),
            max_class_share=test.get("max_class_share"),
            num_classes=summary.get("num_classes"),
            best_epoch=summary.get("best_epoch"),
            epochs_run=summary.get("epochs_run"),
            checkpoint=summary.get("best_checkpoint"),
        )
        if error is None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
            # summary.json drops non-finite metrics, so a NaN loss shows up as a missing one.
            error = f"metric {spec.metric} missing or not finite in summary.json ({value!r})"
    prov = summary.get("provenance")
    if isinstance(prov, dict) and prov:
        rec.update(provenance=dict(prov), provenance_source="run")
    else:
        rec.update(provenance=sweep_provenance(threads), provenance_source="sweep")
    rec["status"] = "failed" if error else "ok"
    if error:
        rec["error"] = error + "\n" + _tail(plan.log_path)
    return rec


class SweepLockedError(KwsnetUserError, RuntimeError):
    """Another sweep holds the lock of this sweep's ``out`` folder (exit status 2)."""

    exit_code = 2


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
            raise SweepLockedError(
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


def record_collapsed(rec: dict[str, Any]) -> bool:
    """Whether a ledger record's run collapsed by the current rule (``RULE``), from its
    ``n_pred_classes``, ``n_true_classes`` (else ``num_classes``) and ``max_class_share``;
    its recorded flag when one of them is missing. So a report on an old ledger applies
    today's rule."""
    n_pred, classes, share = (
        rec.get(k) for k in ("n_pred_classes", "num_classes", "max_class_share")
    )
    if rec.get("n_true_classes") is not None:  # the classes the test split holds
        classes = rec["n_true_classes"]
    if n_pred is None or classes is None or share is None:
        return bool(rec.get("collapsed"))
    return is_collapsed(int(n_pred), int(classes), float(share))
