"""The sweep report as text: results.md (the aggregate table, the statistics note, the
provenance line) and results.csv (one row per run), and the results files' names."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from kwsnet.metrics.collapse import RULE
from kwsnet.sweep.ledger import (
    PROVENANCE_KEYS,
    describe_provenance,
    provenance_key,
    record_collapsed,
)
from kwsnet.sweep.spec import (
    SweepSpec,
    _label_of,
    _short,
    baseline_index,
    cli_value,
    grid_points,
    point_label,
)

__all__ = [
    "RESULT_FILES",
    "format_table",
    "result_files",
    "results_markdown",
    "stats_note",
]

RESULT_FILES = ("results.md", "results.csv", "results.png")


def result_files(name: str | None = None) -> tuple[str, str, str]:
    """``results.md/.csv/.png``, or ``results_<name>.*`` for a named extra report."""
    stem = "results" if not name else f"results_{name}"
    return f"{stem}.md", f"{stem}.csv", f"{stem}.png"


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
            "(`--allow_mixed_provenance`), each compared with its own baseline row.\n"
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


def results_markdown(
    spec: SweepSpec,
    keys: dict[str, str],
    rows: Sequence[dict[str, Any]],
    table: str,
    records: Sequence[dict[str, Any]],
    averaged: Sequence[dict[str, Any]],
    command: str,
    wall_s: float | None = None,
    name: str | None = None,
    rerun: int = 0,
    excluded: int = 0,
    unknown: int = 0,
) -> str:
    """results.md: the spec, the statistics note, the aggregate ``table`` of ``rows``, the
    plot, the command, the run counts and wall time, the provenance of the ``averaged`` runs,
    the runs left out or re-run (``rerun``, ``excluded``, ``unknown``: counts of
    ``write_results``), the fixed overrides and the failed runs.

    Args:
        spec: the sweep.
        keys: base config → content key (``content_keys``).
        rows: the aggregate rows (``aggregate``); ``table``: them as markdown.
        records: the runs reported (latest record each), in plan order.
        averaged: those of them whose value enters the statistics.
        command: the command line that made the report.
        wall_s: this invocation's wall time, or ``None``.
        name: the extra report's name (``results_<name>.*``), or ``None``.
        rerun: earlier runs another config content made, re-run since.
        excluded: runs of another config content, left out.
        unknown: runs recorded without a content key.
    """
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
    if averaged:
        md.append(_provenance_note(averaged, rows))
    if rerun:
        md.append(
            f"{rerun} earlier run(s) in the ledger were made with another base config "
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
    return "\n".join(md) + "\n"
