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
from collections.abc import Iterable, Sequence
from typing import Any

from kwsnet import stats as kstats
from kwsnet.metrics.collapse import RULE
from kwsnet.sweep.ledger import (
    LEDGER,
    _content,
    latest_records,
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


def aggregate(records: Iterable[dict[str, Any]], spec: SweepSpec) -> list[dict[str, Any]]:
    """One row per grid point (spec order): n ok, mean, sample std (ddof=1), min, max of the
    metric, collapsed count (``record_collapsed``), median best epoch, failed count, and the
    statistics of ``add_stats``. Uses each run's latest record; collapsed runs count."""
    latest = latest_records(records)
    rows = []
    for point in grid_points(spec):
        label = point_label(point, spec)
        recs = [r for r in latest.values() if r.get("point_label") == label]
        ok = [r for r in recs if r.get("status") == "ok" and record_value(r, spec) is not None]
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
    return add_stats(rows, spec)


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


def result_files(name: str | None = None) -> tuple[str, str, str]:
    """``results.md/.csv/.png``, or ``results_<name>.*`` for a named extra report."""
    stem = "results" if not name else f"results_{name}"
    return f"{stem}.md", f"{stem}.csv", f"{stem}.png"


def write_results(
    spec: SweepSpec,
    out: str,
    command: str,
    wall_s: float | None = None,
    name: str | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Write results.md, results.csv and results.png from the ledger (``name``: the
    ``results_<name>.*`` files of an extra report, e.g. another metric or baseline); return
    (rows, table)."""
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
        f"![per grid point]({result_files(name)[2]})\n",
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


def _publish(spec: SweepSpec, out: str, name: str | None = None) -> None:
    """Copy the results files (``name``: those of a named extra report) and the ledger (so
    the table can be rebuilt) to ``publish``."""
    if spec.publish:
        os.makedirs(spec.publish, exist_ok=True)
        for file in (*result_files(name), LEDGER):
            if file != LEDGER or os.path.exists(os.path.join(out, file)):
                shutil.copy2(os.path.join(out, file), os.path.join(spec.publish, file))
        print(f"published results to {spec.publish}")
