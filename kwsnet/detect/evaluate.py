"""Stream evaluation with wekws's semantics (``kws/bin/compute_det.py``).

- A keyword occurrence (a ``labels.csv`` row: file, keyword, start, end in seconds) is
  *detected* if a detection of that keyword, in that file, has its time in ``[start, end]``.
  Each occurrence takes at most one detection (the earliest).
- Every other detection is a *false alarm*: a detection of another keyword inside an
  occurrence, a second detection inside one, or one in filler or noise.
- FA/h = false alarms / hours of audio (all files, their full length). FRR = missed
  occurrences / occurrences.
- The threshold is swept (``THRESHOLDS``); the detector runs again at each one (its patience and
  refractory period make detections depend on it). Per keyword, only that keyword can fire
  (the others' thresholds are infinite), as wekws scores each keyword alone; *overall*, every
  keyword shares the swept threshold and the FRR and FA/h pool all keywords.
- FRR at N FA/h is the lowest FRR among the thresholds whose FA/h is at most N (its threshold
  is the operating point); ``nan`` where no threshold gets that few false alarms.
- Attribution (``attribute_false_alarms``, ``detect-eval --attribute``): each false alarm by
  where its time falls: in a keyword occurrence, in a ``filler.csv`` span (by the filler's kind),
  or in the background noise between them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .detector import Detection

__all__ = [
    "Filler",
    "Occurrence",
    "THRESHOLDS",
    "TARGET_FA_PER_HOUR",
    "read_labels",
    "read_fillers",
    "count_errors",
    "attribute_false_alarms",
    "sweep",
    "SweepResult",
    "frr_at",
    "plot_det",
    "log_det_wandb",
]

DetectAt = Callable[[list[float]], dict[str, list[Detection]]]
# 0.00 .. 0.99 in steps of 0.01, then 1 - 10^(-2.25) .. 1 - 10^(-6) (four per decade) and 1:
# a trained model's posteriors on filler speech sit between 0.99 and 1, so with 0.99 -> 1.0 the
# last step jumps from tens or hundreds of FA/h to none and every FRR at <= 10 FA/h read 1.0.
THRESHOLDS = np.unique(
    np.concatenate(
        [
            np.round(np.arange(0.0, 0.995, 0.01), 2),
            1.0 - 10.0 ** -np.arange(2.25, 6.01, 0.25),
            [1.0],
        ]
    )
)
TARGET_FA_PER_HOUR = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Occurrence:
    file: str
    keyword: str
    start: float
    end: float


def read_labels(path: str | Path) -> list[Occurrence]:
    """The rows of a ``labels.csv`` (header ``file,keyword,start,end``)."""
    with open(path, newline="") as f:
        return [
            Occurrence(r["file"], r["keyword"], float(r["start"]), float(r["end"]))
            for r in csv.DictReader(f)
        ]


@dataclass(frozen=True)
class Filler:
    """A ``filler.csv`` row: non-keyword audio placed in a stream (``kind``: the class it came
    from, ``_unknown_`` or ``_silence_``, or ``_filler_`` for a ``--filler_dir`` utterance)."""

    file: str
    source: str
    start: float
    end: float
    kind: str = "_filler_"


def read_fillers(path: str | Path) -> list[Filler]:
    """The rows of a ``filler.csv`` (header ``file,source,start,end[,kind]``; streams written
    before the ``kind`` column count as ``_filler_``)."""
    with open(path, newline="") as f:
        return [
            Filler(
                r["file"],
                r["source"],
                float(r["start"]),
                float(r["end"]),
                r.get("kind") or "_filler_",
            )
            for r in csv.DictReader(f)
        ]


def _score(
    detections: Mapping[str, Sequence[Detection]], occurrences: Iterable[Occurrence]
) -> tuple[int, int, list[tuple[str, Detection]]]:
    """``(occurrences, missed, false alarms as (file, detection))`` of per-file detections."""
    by_file: dict[str, list[Occurrence]] = {}
    for o in occurrences:
        by_file.setdefault(o.file, []).append(o)
    total = missed = 0
    false_alarms: list[tuple[str, Detection]] = []
    for file in sorted(set(by_file) | set(detections)):
        occ = sorted(by_file.get(file, []), key=lambda o: o.start)
        hit = [False] * len(occ)
        for d in sorted(detections.get(file, []), key=lambda d: d.time):
            for i, o in enumerate(occ):
                if not hit[i] and o.keyword == d.keyword and o.start <= d.time <= o.end:
                    hit[i] = True
                    break
            else:
                false_alarms.append((file, d))
        total += len(occ)
        missed += hit.count(False)
    return total, missed, false_alarms


def count_errors(
    detections: Mapping[str, Sequence[Detection]], occurrences: Iterable[Occurrence]
) -> tuple[int, int, int]:
    """``(occurrences, missed, false alarms)`` of per-file detections."""
    total, missed, false_alarms = _score(detections, occurrences)
    return total, missed, len(false_alarms)


def attribute_false_alarms(
    detections: Mapping[str, Sequence[Detection]],
    occurrences: Sequence[Occurrence],
    fillers: Sequence[Filler],
) -> dict[str, int]:
    """Where each false alarm fell, by its time: ``keyword`` (inside a keyword occurrence: the
    wrong keyword, or a second detection of the right one), a filler ``kind`` (inside a
    ``filler.csv`` span: ``_unknown_``, ``_silence_``, ``_filler_``), else ``noise`` (the
    background between placements). Spans include their ends; the keyword span wins a tie."""
    _, _, false_alarms = _score(detections, occurrences)
    occ_by: dict[str, list[Occurrence]] = {}
    for o in occurrences:
        occ_by.setdefault(o.file, []).append(o)
    fill_by: dict[str, list[Filler]] = {}
    for fl in fillers:
        fill_by.setdefault(fl.file, []).append(fl)
    out: dict[str, int] = {"keyword": 0, "noise": 0}
    for k in sorted({fl.kind for fl in fillers}):
        out[k] = 0
    for file, d in false_alarms:
        if any(o.start <= d.time <= o.end for o in occ_by.get(file, [])):
            where = "keyword"
        else:
            where = next(
                (fl.kind for fl in fill_by.get(file, []) if fl.start <= d.time <= fl.end), "noise"
            )
        out[where] = out.get(where, 0) + 1
    return out


@dataclass
class SweepResult:
    """FRR and FA/h per threshold, for one keyword or ``overall``."""

    thresholds: np.ndarray
    frr: np.ndarray
    fa_per_hour: np.ndarray
    occurrences: int


def sweep(
    detect_at: DetectAt,
    keywords: Sequence[str],
    occurrences: Sequence[Occurrence],
    hours: float,
    thresholds: Sequence[float] = THRESHOLDS,
    per_keyword: bool = True,
) -> dict[str, SweepResult]:
    """Sweep results per keyword (unless ``per_keyword`` is false) and ``overall``.

    ``detect_at(thresholds per keyword) -> {file: detections}`` runs the detector (on stored
    scores) at one set of thresholds.
    """
    if hours <= 0:
        raise ValueError(f"hours of audio must be > 0, got {hours}")
    out: dict[str, SweepResult] = {}
    groups = [(k, [k]) for k in keywords] if per_keyword else []
    groups.append(("overall", list(keywords)))
    for name, active in groups:
        occ = [o for o in occurrences if o.keyword in active]
        frr, fah = [], []
        for t in thresholds:
            thr = [float(t) if k in active else math.inf for k in keywords]
            dets = {f: [d for d in ds if d.keyword in active] for f, ds in detect_at(thr).items()}
            total, missed, fa = count_errors(dets, occ)
            frr.append(missed / total if total else math.nan)
            fah.append(fa / hours)
        out[name] = SweepResult(np.asarray(thresholds), np.array(frr), np.array(fah), len(occ))
    return out


def frr_at(result: SweepResult, fa_per_hour: float) -> tuple[float, float]:
    """``(FRR, threshold)``: the lowest FRR with FA/h <= ``fa_per_hour`` (``nan`` if none)."""
    ok = np.flatnonzero(result.fa_per_hour <= fa_per_hour + 1e-12)
    if len(ok) == 0:
        return math.nan, math.nan
    best = ok[np.argmin(result.frr[ok])]
    return float(result.frr[best]), float(result.thresholds[best])


def plot_det(results: Mapping[str, SweepResult], path: str | Path, title: str = "") -> None:
    """A DET curve (FRR vs FA/h, one line per keyword and overall) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in results.items():
        ax.plot(r.fa_per_hour, r.frr, lw=2.5 if name == "overall" else 1, label=name)
    ax.set_xlabel("false alarms per hour")
    ax.set_ylabel("false rejection rate")
    ax.set_xscale("symlog", linthresh=1.0)  # the low-FA/h end is what matters
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def log_det_wandb(
    results: Mapping[str, SweepResult],
    png: str | Path,
    meta: Mapping[str, object],
    save_dir: str | Path,
    project: str = "kwsnet",
) -> str:
    """Log one ``detect-eval`` as a wandb run (offline unless ``WANDB_MODE=online`` or an API
    key is set): the DET points as a table (``det``: keyword, threshold, frr, fa_per_hour) with
    a line plot per keyword, the PNG, and ``FRR@N`` / ``threshold@1`` per keyword in the summary.
    ``meta`` (checkpoint, streams, hours, detector settings) is the run's config. Returns the
    run's folder."""
    import wandb

    from kwsnet.tracking import provenance, resolve_offline

    run = wandb.init(
        project=project,
        job_type="detect-eval",
        dir=str(save_dir),
        mode="offline" if resolve_offline(None) else "online",
        config={**meta, **provenance()},
        reinit="finish_previous",
    )
    try:
        rows = [
            [name, float(t), float(f), float(fa)]
            for name, r in results.items()
            for t, f, fa in zip(r.thresholds, r.frr, r.fa_per_hour, strict=True)
        ]
        table = wandb.Table(columns=["keyword", "threshold", "frr", "fa_per_hour"], data=rows)
        names = list(results)
        curves = wandb.plot.line_series(
            xs=[list(map(float, results[n].fa_per_hour)) for n in names],
            ys=[list(map(float, results[n].frr)) for n in names],
            keys=names,
            title="DET: FRR vs FA/h",
            xname="false alarms per hour",
        )
        run.log({"det": table, "det_curve": curves, "det_plot": wandb.Image(str(png))})
        for name, r in results.items():
            for x in TARGET_FA_PER_HOUR:
                frr, _ = frr_at(r, x)
                run.summary[f"{name}/FRR@{x:g}FA_h"] = frr
            run.summary[f"{name}/threshold@1FA_h"] = frr_at(r, 1.0)[1]
            run.summary[f"{name}/occurrences"] = r.occurrences
        return str(Path(run.dir).parent)
    finally:
        run.finish()
