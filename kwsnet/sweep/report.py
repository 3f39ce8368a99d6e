"""Aggregation and statistics of a sweep's runs (``kwsnet/stats.py``), and ``write_results``,
which writes results.md / results.csv / results.png from the ledger.

The parts live beside it: ``tables`` (markdown and CSV), ``plots`` (the PNG) and ``publish``
(the wandb summary run and sweep config, and the copy to ``publish``); their names are
re-exported here.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable
from typing import Any

from kwsnet import stats as kstats
from kwsnet.errors import KwsnetUserError
from kwsnet.sweep.ledger import (
    LEDGER,
    ProvenanceKey,
    _content,
    describe_provenance,
    latest_records,
    provenance_key,
    provenance_labels,
    read_ledger,
    record_collapsed,
)
from kwsnet.sweep.plots import _plot as _plot
from kwsnet.sweep.publish import _publish as _publish
from kwsnet.sweep.publish import _summary_run as _summary_run
from kwsnet.sweep.publish import wandb_sweep_config
from kwsnet.sweep.spec import (
    SweepSpec,
    baseline_index,
    content_keys,
    grid_points,
    plan_runs,
    point_label,
)
from kwsnet.sweep.tables import (
    RESULT_FILES,
    format_table,
    result_files,
    results_markdown,
    stats_note,
)
from kwsnet.sweep.tables import _csv_text as _csv_text
from kwsnet.sweep.tables import _fmt_p as _fmt_p

__all__ = [
    "RESULT_FILES",
    "MixedProvenanceError",
    "add_stats",
    "aggregate",
    "format_table",
    "record_value",
    "result_files",
    "stats_note",
    "wandb_sweep_config",
    "write_results",
]


class MixedProvenanceError(KwsnetUserError, ValueError):
    """The runs of a table come from more than one provenance (commit, torch version, CPU
    capability, ...; ``ledger.PROVENANCE_KEYS``), which one row would average (exit status
    2)."""

    exit_code = 2


def _point_rows(latest: dict[str, dict[str, Any]], spec: SweepSpec) -> list[dict[str, Any]]:
    """One row per grid point (spec order) of the spread columns, from the runs' latest
    records."""
    rows = []
    for point in grid_points(spec):
        label = point_label(point, spec)
        recs = [r for r in latest.values() if r.get("point_label") == label]
        ok = [r for r in recs if _averaged(r, spec)]
        vals = [float(record_value(r, spec)) for r in ok]  # type: ignore[arg-type]
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
    return rows


def aggregate(
    records: Iterable[dict[str, Any]], spec: SweepSpec, allow_mixed_provenance: bool = False
) -> list[dict[str, Any]]:
    """One row per grid point (spec order): n ok, mean, sample std (ddof=1), min, max of the
    metric, collapsed count (``record_collapsed``), median best epoch, failed count, and the
    statistics of ``add_stats``. Uses each run's latest record; collapsed runs count.

    Provenance: runs whose records differ in ``PROVENANCE_KEYS`` (another commit, torch
    version, CPU capability, ...; no provenance at all is a group too, ``unknown``) are never
    averaged. When the ok runs (those with a value: the averaged ones) come from more than one
    group, ``MixedProvenanceError`` names the groups and their run counts, unless
    ``allow_mixed_provenance``: then each group (failed runs included) is a table of its own (its
    rows compared with its own baseline row, Holm within the group) and the rows come point by
    point, a point's groups in order of first appearance, empty rows left out; each row's
    ``provenance`` is its group's label (``""`` when the runs are of one provenance) and
    ``provenance_key`` its group (that of the ok runs when there is one).
    """
    latest = latest_records(records)
    averaged = [r for r in latest.values() if _averaged(r, spec)]
    kinds = list(dict.fromkeys(provenance_key(r) for r in averaged))
    if len(kinds) > 1 and not allow_mixed_provenance:
        raise MixedProvenanceError(
            f"the runs come from {len(kinds)} provenances, "
            f"which one row would average: {describe_provenance(averaged)}; pass "
            "--allow_mixed_provenance to report each in rows of its own, or re-run the sweep "
            "into a new --out"
        )
    groups: dict[ProvenanceKey, dict[str, dict[str, Any]]] = {}
    for run_id, rec in latest.items():
        groups.setdefault(provenance_key(rec), {})[run_id] = rec
    if len(kinds) <= 1:
        rows = add_stats(_point_rows(latest, spec), spec)
        for r in rows:
            r.update(provenance="", provenance_key=kinds[0] if kinds else None)
        return rows
    labels = provenance_labels(groups)
    by_group = []
    for key, group in groups.items():
        rows = add_stats(_point_rows(group, spec), spec)
        for r in rows:
            r.update(provenance=labels[key], provenance_key=key)
        by_group.append(rows)
    return [
        r for point_rows in zip(*by_group, strict=True) for r in point_rows if r["n"] or r["failed"]
    ]


def _averaged(rec: dict[str, Any], spec: SweepSpec) -> bool:
    """Whether a record's value enters the statistics: an ok run with the metric."""
    return rec.get("status") == "ok" and record_value(rec, spec) is not None


def record_value(rec: dict[str, Any], spec: SweepSpec) -> float | None:
    """The value of ``spec.metric`` in a ledger record: its ``value`` when the run was made
    for that metric, else its ``metrics`` entry (every metric of ``summary.json`` is kept, so
    a report for another metric is rebuilt from the same ledger); None if absent."""
    if rec.get("metric", spec.metric) == spec.metric and rec.get("value") is not None:
        return float(rec["value"])
    value = (rec.get("metrics") or {}).get(spec.metric)
    return None if value is None else float(value)


def add_stats(rows: list[dict[str, Any]], spec: SweepSpec) -> list[dict[str, Any]]:
    """Add to each row (in place; returned) the CI of its mean (``ci_low``, ``ci_high``) and,
    against the ``stats.baseline`` row: ``test`` (``paired``/``welch``; ``baseline`` on the
    baseline row), ``diff``, ``diff_low``, ``diff_high``, ``p``, ``p_holm`` (Holm over the
    non-baseline rows), the equivalence test within ``stats.margin`` (``margin``, ``p_tost``,
    ``p_tost_holm`` (Holm over the same rows), ``tost_low``, ``tost_high``; NaN without a
    margin) and ``verdict``. See ``kwsnet/stats.py``."""
    st = spec.stat
    margin = st["margin"]
    boot = {"method": st["ci"], "samples": st["bootstrap_samples"], "seed": st["seed"]}
    base_i = baseline_index(spec, st["baseline"])
    base = rows[base_i] if rows else None
    nan = math.nan
    for i, r in enumerate(rows):
        r["ci_low"], r["ci_high"] = kstats.mean_ci(r["values"], st["alpha"], **boot)
        r["baseline"] = base["point_label"] if base else ""
        r.update(margin=nan if margin is None else margin, p_tost=nan, tost_low=nan, tost_high=nan)
        if i == base_i:
            r.update(test="baseline", diff=nan, diff_low=nan, diff_high=nan, p=nan)
        else:
            r.update(
                kstats.compare(
                    r["values"],
                    r["seeds"],
                    base["values"],
                    base["seeds"],
                    st["alpha"],
                    margin=margin,
                    **boot,
                )
            )
    others = [i for i in range(len(rows)) if i != base_i]
    adjusted = kstats.holm([rows[i]["p"] for i in others])
    adjusted_tost = kstats.holm([rows[i]["p_tost"] for i in others])
    for i, p_adj, p_tost in zip(others, adjusted, adjusted_tost, strict=True):
        rows[i].update(p_holm=p_adj, p_tost_holm=p_tost)
        rows[i]["verdict"] = kstats.verdict(
            rows[i]["diff"],
            p_adj,
            st["alpha"],
            spec.higher_is_better,
            p_tost=None if margin is None else p_tost,
        )
    if rows:
        rows[base_i].update(p_holm=nan, p_tost_holm=nan, verdict="baseline")
    return rows


def write_results(
    spec: SweepSpec,
    out: str,
    command: str,
    wall_s: float | None = None,
    name: str | None = None,
    allow_mixed_provenance: bool = False,
    history: list[dict[str, Any]] | None = None,
    keys: dict[str, str | None] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Write results.md, results.csv and results.png into ``out`` from the run records
    (``name``: the ``results_<name>.*`` files of an extra report, e.g. another metric or
    baseline); return (rows, table). Raises ``MixedProvenanceError`` (writing nothing) when the
    runs come from several provenances, unless ``allow_mixed_provenance`` (rows apart:
    ``aggregate``).

    ``history``: every record in the order they were made (default: ``<out>/ledger.jsonl``;
    an Optuna study's records: ``kwsnet.sweep.study.study_records``); ``keys``: the content key
    of each base config (default: read from the files now, ``content_keys``).
    """
    from kwsnet.fileio import atomic_write_text

    keys = content_keys(spec) if keys is None else keys
    if history is None:
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
    rows = aggregate(records, spec, allow_mixed_provenance)
    table = format_table(rows, spec)
    md = results_markdown(
        spec,
        keys,
        rows,
        table,
        records,
        [r for r in records if _averaged(r, spec)],
        command,
        wall_s=wall_s,
        name=name,
        rerun=len(rerun),
        excluded=excluded,
        unknown=unknown,
    )
    md_name, csv_name, png_name = result_files(name)
    atomic_write_text(os.path.join(out, md_name), md)
    atomic_write_text(os.path.join(out, csv_name), _csv_text(records, spec, rows))
    _plot(rows, spec, os.path.join(out, png_name))
    return rows, table
