"""Aggregation and statistics (``kwsnet/stats.py``), results.md / results.csv / results.png,
the wandb summary run and sweep config, and publishing."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import random
import shutil
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from kwsnet import stats as kstats
from kwsnet.metrics.collapse import RULE
from kwsnet.sweep.ledger import (
    LEDGER,
    PROVENANCE_KEYS,
    ProvenanceKey,
    _content,
    describe_provenance,
    latest_records,
    provenance_key,
    provenance_labels,
    read_ledger,
    record_collapsed,
)
from kwsnet.sweep.spec import (
    BASE_KEY,
    SweepSpec,
    _label_of,
    _short,
    baseline_index,
    cli_value,
    content_keys,
    grid_points,
    plan_runs,
    point_label,
)

RESULT_FILES = ("results.md", "results.csv", "results.png")


class MixedProvenanceError(ValueError):
    """The runs of a table come from more than one provenance (commit, torch version, CPU
    capability, ...; ``ledger.PROVENANCE_KEYS``), which one row would average."""


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
            "--allow-mixed-provenance to report each in rows of its own, or re-run the sweep "
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


def _mixed(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether the rows are apart by provenance (``aggregate(allow_mixed_provenance=True)``
    over runs of several provenances)."""
    return any(r.get("provenance") for r in rows)


def format_table(rows: Sequence[dict[str, Any]], spec: SweepSpec) -> str:
    """The aggregate table as GitHub markdown: the grid values (and, for rows apart by
    provenance, the row's provenance), the spread columns, then the statistics (the mean's CI,
    the difference to the baseline with its CI, p, Holm's p, with ``stats.margin`` the TOST p
    and its Holm p, the verdict)."""
    st = spec.stat
    keys = [_short(k) for k in spec.grid]
    mixed = _mixed(rows)
    pct = f"{1 - st['alpha']:.0%}"
    margin = st["margin"]
    head = [
        *keys,
        *(["provenance"] if mixed else []),
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
        *([f"p TOST ±{margin:g}", "p TOST Holm"] if margin is not None else []),
        "verdict",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(spec, k, v) for k, v in r["point"].items()]
        if mixed:
            cells.append(r["provenance"])
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
        ]
        if margin is not None:
            cells += [_fmt_p(r["p_tost"]), _fmt_p(r["p_tost_holm"])]
        cells.append(r["verdict"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stats_note(spec: SweepSpec, rows: Sequence[dict[str, Any]] = ()) -> str:
    """What the statistics columns are, for results.md (the tests, α, baseline, direction,
    the equivalence margin)."""
    st = spec.stat
    alpha = st["alpha"]
    pct = f"{1 - alpha:.0%}"
    points = grid_points(spec)
    base = point_label(points[baseline_index(spec, st["baseline"])], spec)
    compared = f"the {max(len(points) - 1, 0)} points compared"
    if _mixed(rows):
        compared += " within each provenance (each compared with its own baseline row)"
    ci = (
        "t-based (mean ± t(1−α/2, n−1)·s/√n)"
        if st["ci"] == "t"
        else f"percentile bootstrap ({st['bootstrap_samples']} resamples, seed {st['seed']})"
    )
    direction = "higher" if spec.higher_is_better else "lower"
    margin = st["margin"]
    if margin is None:
        verdicts = "else not distinguishable (no equivalence margin set: not a tie)"
    else:
        verdicts = (
            f"else equivalent when the Holm-adjusted TOST p < {alpha:g}, else inconclusive. "
            f"TOST: two one-sided t-tests of the same kind that Δ > −{margin:g} and "
            f"Δ < +{margin:g} (the margin, `stats.margin` / `--margin`), p TOST the larger of "
            f"the two, < {alpha:g} exactly when Δ's t-based {1 - 2 * alpha:.0%} CI lies inside "
            f"±{margin:g}; Holm-corrected over {compared} as a family of its own"
        )
    return (
        f"Statistics (α = {alpha:g}, `kwsnet/stats.py`): mean {pct} CI {ci}; "
        f"Δ = point − baseline `{base}`, paired by seed when both ran the same seeds "
        "(paired t-test on the per-seed differences), else Welch's t-test; its CI by the same "
        f"method; p two-sided, Holm-corrected over {compared}; "
        f"verdict better / worse when Holm's p < {alpha:g} ({direction} `{spec.metric}` is "
        f"better), {verdicts}. Collapsed runs are included in every statistic "
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
# each run's provenance (its record's ``provenance``; empty for records without one)
_CSV_PROVENANCE = [*PROVENANCE_KEYS, "git_dirty", "num_threads"]


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
    "margin": "margin",
    "p_tost": "p_tost",
    "p_tost_holm": "p_tost_holm",
    "tost_ci_low": "tost_low",
    "tost_ci_high": "tost_high",
    "provenance_group": "provenance",
    "verdict": "verdict",
}


def _csv_text(
    records: Sequence[dict[str, Any]], spec: SweepSpec, rows: Sequence[dict[str, Any]] = ()
) -> str:
    """One row per run: the grid values, the run's fields (``collapsed`` by the current rule),
    its provenance (``_CSV_PROVENANCE``, ``provenance_source``) and its grid point's (and
    provenance group's) statistics (``_CSV_POINT_FIELDS``; NaN written empty)."""
    keys = list(spec.grid)
    mixed = _mixed(rows)
    by_point = {(r["point_label"], r.get("provenance_key") if mixed else 0): r for r in rows}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [*keys, *_CSV_FIELDS, *_CSV_PROVENANCE, "provenance_source", *_CSV_POINT_FIELDS]
    )
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
        prov = r.get("provenance") if isinstance(r.get("provenance"), dict) else {}
        row += ["" if prov.get(f) is None else prov[f] for f in _CSV_PROVENANCE]
        row.append(r.get("provenance_source", ""))
        point = by_point.get((r.get("point_label"), provenance_key(r) if mixed else 0), {})
        for f in _CSV_POINT_FIELDS.values():
            v = point.get(f)
            row.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
        writer.writerow(row)
    return buf.getvalue()


def _tick(spec: SweepSpec, row: dict[str, Any], mixed: bool) -> str:
    """A plot's x label for a row: its grid values, then (rows apart by provenance) the
    provenance label's fields, one a line."""
    lines = [_cell(spec, k, v) for k, v in row["point"].items()]
    if mixed:
        lines += row["provenance"].replace("commit ", "").split(", ")
    return "\n".join(lines)


def _plot(rows: Sequence[dict[str, Any]], spec: SweepSpec, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixed = _mixed(rows)  # a provenance line (or more) under each point: wider boxes
    fig, ax = plt.subplots(figsize=(max(4.0, (1.8 if mixed else 1.1) * len(rows) + 1.5), 4.2))
    data = [r["values"] for r in rows]
    ax.boxplot(data, positions=range(1, len(rows) + 1), widths=0.6, showfliers=False)
    jitter = random.Random(0)
    for i, r in enumerate(rows, start=1):
        xs = [i + jitter.uniform(-0.18, 0.18) for _ in r["values"]]
        colors = ["tab:red" if c else "tab:blue" for c in r["collapsed_flags"]]
        ax.scatter(xs, r["values"], s=18, alpha=0.8, zorder=3, c=colors)
    ax.set_xticks(range(1, len(rows) + 1))
    ax.set_xticklabels([_tick(spec, r, mixed) for r in rows])
    ax.set_xlabel(" / ".join(_short(k) for k in spec.grid))
    ax.set_ylabel(spec.metric)
    ax.set_title(f"{spec.name}: {spec.metric} per grid point (dots: seeds, red: collapsed)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def result_files(name: str | None = None) -> tuple[str, str, str]:
    """``results.md/.csv/.png``, or ``results_<name>.*`` for a named extra report."""
    stem = "results" if not name else f"results_{name}"
    return f"{stem}.md", f"{stem}.csv", f"{stem}.png"


def _provenance_note(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> str:
    """The results.md line on what made the (ok) runs ``records``
    (``kwsnet.tracking.provenance``)."""
    if not records:
        return ""
    keys = list(dict.fromkeys(provenance_key(r) for r in records))
    if _mixed(rows) or len(keys) > 1:
        return (
            f"Provenance: the runs come from {len(keys)} provenances "
            f"({describe_provenance(records)}), reported in rows apart "
            "(`--allow-mixed-provenance`), each compared with its own baseline row.\n"
        )
    if keys[0] is None:
        return "Provenance: not recorded (the runs were recorded before kwsnet recorded it).\n"
    prov = records[0]["provenance"]
    threads = Counter(r["provenance"].get("num_threads") for r in records)
    thread_text = ", ".join(
        f"{'unknown' if t is None else t} ({n} run{'s' if n != 1 else ''})"
        for t, n in threads.items()
    )
    from_sweep = sum(r.get("provenance_source") == "sweep" for r in records)
    return (
        f"Provenance (`kwsnet.tracking.provenance`): commit `{prov.get('git_commit')}`, kwsnet "
        f"{prov.get('kwsnet_version')}, torch {prov.get('torch_version')}, lightning "
        f"{prov.get('lightning_version')}, CPU capability {prov.get('cpu_capability')}; torch "
        f"threads per run: {thread_text}"
        + (
            f"; {from_sweep} run(s) recorded none in summary.json: taken from the sweep "
            "process, with the thread count it gave the run"
            if from_sweep
            else ""
        )
        + ".\n"
    )


def write_results(
    spec: SweepSpec,
    out: str,
    command: str,
    wall_s: float | None = None,
    name: str | None = None,
    allow_mixed_provenance: bool = False,
) -> tuple[list[dict[str, Any]], str]:
    """Write results.md, results.csv and results.png from the ledger (``name``: the
    ``results_<name>.*`` files of an extra report, e.g. another metric or baseline); return
    (rows, table). Raises ``MixedProvenanceError`` (writing nothing) when the runs come from
    several provenances, unless ``allow_mixed_provenance`` (rows apart: ``aggregate``)."""
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
    rows = aggregate(records, spec, allow_mixed_provenance)
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
        f"![per grid point]({result_files(name)[2]})\n",
        f"Command: `{command}`\n",
        f"Runs recorded: {len(records)} ({len(failed)} failed); summed run wall time "
        f"{run_wall / 3600:.2f} h"
        + (f"; this invocation {wall_s / 60:.1f} min" if wall_s else "")
        + ".\n",
    ]
    averaged = [r for r in records if _averaged(r, spec)]
    if averaged:
        md.append(_provenance_note(averaged, rows))
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
    md_name, csv_name, png_name = result_files(name)
    atomic_write_text(os.path.join(out, md_name), "\n".join(md) + "\n")
    atomic_write_text(os.path.join(out, csv_name), _csv_text(records, spec, rows))
    _plot(rows, spec, os.path.join(out, png_name))
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
    "margin",
    "p_tost",
    "p_tost_holm",
    "tost_low",
    "tost_high",
    "provenance",
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
            + [r.get(k) for k in _WANDB_STATS]
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


def _publish(spec: SweepSpec, out: str, name: str | None = None) -> None:
    """Copy the results files (``name``: those of a named extra report) and the ledger (so
    the table can be rebuilt) to ``publish``."""
    if spec.publish:
        os.makedirs(spec.publish, exist_ok=True)
        for file in (*result_files(name), LEDGER):
            if file != LEDGER or os.path.exists(os.path.join(out, file)):
                shutil.copy2(os.path.join(out, file), os.path.join(spec.publish, file))
        print(f"published results to {spec.publish}")
