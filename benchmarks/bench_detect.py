"""Keyword detection on labelled streams, many checkpoints: FRR at N FA/h per arm over seeds.

    python benchmarks/bench_detect.py --streams STREAMS \\
        --arm sc12=/runs/sc12/s*/checkpoints/best-*.ckpt \\
        --arm neg=/runs/neg/s*/checkpoints/best-*.ckpt --arm neg_stream=... \\
        [--baseline sc12] [--compare ARM:BASE ...] [--fa-per-hour 0.5 1 2]
        [--json out.json] [--from-json out.json] [--plot det.png]

Each ``--arm NAME=GLOB`` is one training recipe; each checkpoint the glob matches is one seed
(the seed is read from the checkpoint's config, ``seed_everything``). Every checkpoint runs
the sliding-window detector (``kwsnet.detect``, default settings) once over every stream of
``STREAMS`` (``kwsnet make-streams``), and the threshold is swept (``detect-eval``'s semantics,
``kwsnet.detect.evaluate``). Printed: per arm, FRR at each FA/h overall (mean over seeds and
its 95% t-interval, ``kwsnet.stats.mean_ci``) and per keyword (mean over seeds); then each arm
against ``--baseline``, and each ``--compare ARM:BASE`` pair (paired by seed, Holm-adjusted
over all comparisons and operating points, lower FRR is better). ``--json`` keeps every
checkpoint's numbers; ``--from-json`` re-prints a table without running a model. The
streams' ``streams.json`` (hours, distinct filler hours) is printed with the table.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def evaluate(ckpt: str, streams: Path, detector: dict[str, Any] | None = None) -> dict[str, Any]:
    """One checkpoint on the streams: ``{"seed", "hours", "keywords": {name: {"n", "frr":
    {fa: frr}}}, "thresholds": {fa: thr}}`` (``overall`` is one of the names)."""
    import soundfile as sf
    import torch
    import yaml

    from kwsnet.data.audio import read_audio
    from kwsnet.detect.detector import DetectorConfig
    from kwsnet.detect.evaluate import frr_at, read_labels, sweep
    from kwsnet.detect.model import detector_from_checkpoint

    torch.set_num_threads(1)
    det = detector_from_checkpoint(ckpt, DetectorConfig(**(detector or {})))
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    stored = (saved.get("kwsnet") or {}).get("config")  # the run's YAML (kwsnet.loading)
    seed = (yaml.safe_load(stored) or {}).get("seed_everything") if stored else None
    occurrences = read_labels(streams / "labels.csv")
    stored, seconds = {}, 0.0
    for wav in sorted(streams.glob("*.wav")):
        seconds += sf.info(str(wav)).duration
        stored[wav.name] = det.scores(read_audio(wav, det.sample_rate))
    hours = seconds / 3600

    def detect_at(thr: list[float]) -> dict:
        return {f: det.decide(t, s, thr) for f, (t, s) in stored.items()}

    results = sweep(detect_at, det.keywords, occurrences, hours)
    fas = (0.5, 1.0, 2.0, 5.0, 10.0)
    return {
        "ckpt": ckpt,
        "seed": seed,
        "hours": hours,
        "detector": dict(detector or {}),
        "keywords": {
            name: {"n": r.occurrences, "frr": {str(x): frr_at(r, x)[0] for x in fas}}
            for name, r in results.items()
        },
        "thresholds": {str(x): frr_at(results["overall"], x)[1] for x in fas},
        "det": {  # the overall DET curve: FRR and FA/h per swept threshold
            "threshold": [float(t) for t in results["overall"].thresholds],
            "frr": [float(f) for f in results["overall"].frr],
            "fa_per_hour": [float(f) for f in results["overall"].fa_per_hour],
        },
    }


def plot(data: dict[str, Any], path: Path) -> None:
    """The overall DET curve of every checkpoint, one colour per arm, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (arm, runs) in enumerate(data["arms"].items()):
        for j, r in enumerate(runs):
            d = r["det"]
            ax.plot(
                d["fa_per_hour"], d["frr"], color=f"C{i}", lw=1.2, label=arm if j == 0 else None
            )
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(0, 1000)
    ax.set_ylim(0, 1)
    ax.axvline(1.0, color="k", lw=0.5, ls=":")
    ax.set_xlabel("false alarms per hour")
    ax.set_ylabel("false rejection rate (all keywords)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _overall(runs: list[dict[str, Any]], fa: float) -> list[float]:
    """Overall FRR at ``fa`` FA/h per run (1.0 where no threshold gets that few)."""
    out = []
    for r in runs:
        f = r["keywords"]["overall"]["frr"][str(fa)]
        out.append(1.0 if math.isnan(f) else f)
    return out


def report(
    data: dict[str, Any],
    fas: list[float],
    baseline: str | None,
    compares: list[tuple[str, str]] | None = None,
) -> str:
    """Markdown tables from ``data`` (``{"streams": ..., "arms": {arm: [evaluate()...]}}``)."""
    import numpy as np

    from kwsnet.stats import compare, holm, mean_ci, verdict

    lines = []
    meta = data.get("streams_json") or {}
    if meta:
        lines.append(
            f"streams: {meta.get('hours', float('nan')):.2f} h, {meta.get('occurrences')} "
            f"keyword occurrences, {meta.get('filler_placed_hours', float('nan')):.2f} h of "
            f"filler placed from {meta.get('distinct_filler_hours', float('nan')):.3f} h of "
            f"distinct non-keyword audio ({meta.get('distinct_filler_files')} files), "
            f"noise files {meta.get('noise_files')}"
        )
    head = " | ".join(f"FRR@{x:g}FA/h (95% CI)" for x in fas)
    lines += ["", f"| arm | seeds | {head} |", "|---|---|" + "---|" * len(fas)]
    arms = data["arms"]
    for arm, runs in arms.items():
        cells = []
        for x in fas:
            v = _overall(runs, x)
            lo, hi = mean_ci(v)
            cells.append(f"{np.mean(v):.3f} [{_fmt(lo)}, {_fmt(hi)}]")
        seeds = ",".join(str(r["seed"]) for r in runs)
        lines.append(f"| {arm} | {seeds} | " + " | ".join(cells) + " |")
    pairs = [(arm, baseline) for arm in arms if arm != baseline] if baseline in arms else []
    pairs += [p for p in compares or [] if p[0] in arms and p[1] in arms]
    if pairs:
        rows, ps = [], []
        for arm, base_arm in pairs:
            runs, base = arms[arm], arms[base_arm]
            for x in fas:
                c = compare(
                    _overall(runs, x),
                    [r["seed"] for r in runs],
                    _overall(base, x),
                    [r["seed"] for r in base],
                )
                rows.append((arm, base_arm, x, c))
                ps.append(c["p"] if not math.isnan(c["p"]) else 1.0)
        adj = holm(ps)
        lines += [
            "",
            "| arm | vs | FA/h | ΔFRR [95% CI] | test | Holm p | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for (arm, base_arm, x, c), p in zip(rows, adj, strict=True):
            v = verdict(c["diff"], p, 0.05, higher_better=False)
            lines.append(
                f"| {arm} | {base_arm} | {x:g} | {c['diff']:+.3f} [{_fmt(c['diff_low'])}, "
                f"{_fmt(c['diff_high'])}] | {c['test']} | {p:.3g} | {v} |"
            )
    # per keyword at 1 FA/h (and the first column's FA/h), mean over seeds
    any_runs = next(iter(arms.values()))
    names = [k for k in any_runs[0]["keywords"] if k != "overall"] + ["overall"]
    lines += ["", "FRR at 1 FA/h per keyword (mean over seeds; n = occurrences):", ""]
    lines += ["| keyword | n | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for k in names:
        n = any_runs[0]["keywords"][k]["n"]
        cells = []
        for runs in arms.values():
            v = [r["keywords"][k]["frr"]["1.0"] for r in runs]
            v = [1.0 if math.isnan(f) else f for f in v]
            cells.append(f"{np.mean(v):.3f}")
        lines.append(f"| {k} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run (or re-read) the evaluation and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--streams", type=Path, help="a make-streams folder")
    ap.add_argument("--arm", action="append", default=[], metavar="NAME=GLOB")
    ap.add_argument("--baseline", default=None, help="the arm the others are compared with")
    ap.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="ARM:BASE",
        help="one paired comparison (repeatable; Holm over all of them and --baseline's)",
    )
    ap.add_argument("--fa-per-hour", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--json", type=Path, default=None, help="write every checkpoint's numbers")
    ap.add_argument("--from-json", type=Path, default=None, help="re-print a --json file")
    ap.add_argument("--plot", type=Path, default=None, help="write the DET curves as a PNG")
    ap.add_argument("--smooth-windows", type=int, default=None, help="detector setting")
    ap.add_argument("--patience", type=int, default=None, help="detector setting")
    a = ap.parse_args(argv)
    if a.from_json:
        data = json.loads(a.from_json.read_text())
    else:
        if a.streams is None or not a.arm:
            ap.error("--streams and at least one --arm are needed (or --from-json)")
        data = {"streams": str(a.streams), "arms": {}}
        meta = a.streams / "streams.json"
        if meta.is_file():
            data["streams_json"] = json.loads(meta.read_text())
        for spec in a.arm:
            name, _, pattern = spec.partition("=")
            ckpts = sorted(glob.glob(pattern))
            if not name or not ckpts:
                ap.error(f"--arm {spec}: NAME=GLOB matching at least one checkpoint")
            runs = []
            for ckpt in ckpts:
                t0 = time.perf_counter()
                settings = {
                    k: v
                    for k, v in (("smooth_windows", a.smooth_windows), ("patience", a.patience))
                    if v is not None
                }
                runs.append(evaluate(ckpt, a.streams, settings))
                r = runs[-1]["keywords"]["overall"]["frr"]
                print(
                    f"{name} {ckpt}: FRR@1FA/h {_fmt(r['1.0'])} ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
            data["arms"][name] = runs
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(data, indent=1))
    compares = [tuple(c.split(":", 1)) for c in a.compare]
    if any(len(c) != 2 for c in compares):
        ap.error("--compare takes ARM:BASE")
    print(report(data, a.fa_per_hour, a.baseline, compares))  # type: ignore[arg-type]
    if a.plot:
        plot(data, a.plot)
        print(f"DET curves: {a.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
