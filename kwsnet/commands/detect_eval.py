"""False rejection rate at N false alarms per hour on streams from make-streams, a DET plot.

    kwsnet detect-eval --ckpt_path run/checkpoints/best.ckpt --streams streams/ \\
        [--fa_per_hour 0.5 1 2] [--attribute 0.5 0.9] [--no_wandb]

Scores every stream once, sweeps the threshold, and prints each keyword's FRR at the
--fa_per_hour columns (with wekws's semantics, kwsnet.detect.evaluate); writes the DET curve
as a PNG and logs it, the FRR table and the curve as a wandb run (offline unless
WANDB_MODE=online; off with --no_wandb or WANDB_MODE=disabled). docs/streaming.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from kwsnet.commands.common import new_parser, parse
from kwsnet.commands.detect import add_detector_args, detector, read
from kwsnet.errors import ConfigError, UsageError

__all__ = ["ALIASES", "parser", "run"]

ALIASES = {"--no-wandb": "--no_wandb"}


def parser() -> ArgumentParser:
    """``kwsnet detect-eval``'s parser."""
    from kwsnet.detect.evaluate import TARGET_FA_PER_HOUR

    p = new_parser("detect-eval", __doc__ or "")
    add_detector_args(p)
    p.add_argument("--streams", type=str, required=True, help="folder written by make-streams")
    p.add_argument("--out", type=str | None, default=None, help="DET plot PNG (STREAMS/det.png)")
    p.add_argument(
        "--wandb",
        action=ActionYesNo(no_prefix="no_"),
        default=True,
        help="log the DET curve, the FRR table and the plot as a wandb run",
    )
    p.add_argument("--wandb_dir", type=str | None, default=None, help="default: STREAMS")
    p.add_argument("--project", type=str, default="kwsnet", help="wandb project")
    p.add_argument(
        "--fa_per_hour",
        type=float,
        nargs="+",
        default=list(TARGET_FA_PER_HOUR),
        help="the FA/h columns of the table",
    )
    p.add_argument(
        "--attribute",
        type=float,
        nargs="+",
        default=None,
        metavar="THRESHOLD",
        help="also print, at these thresholds (all keywords sharing each), the false alarms per "
        "hour split by where they fell: keyword occurrence, filler kind (filler.csv), noise",
    )
    return p


def run(argv: Sequence[str]) -> int:
    """``kwsnet detect-eval``: 0 once the table, the plot (and the wandb run) are written.

    Raises:
        UsageError: an FA/h column <= 0, a threshold outside [0, 1].
        ConfigError, CheckpointNotFoundError: no labels.csv or WAVs in --streams, a bad
            checkpoint or detector setting.
    """
    a, _ = parse(parser(), argv, ALIASES)  # before the imports: --help needs none of them

    import soundfile as sf

    from kwsnet.detect.evaluate import (
        attribute_false_alarms,
        frr_at,
        log_det_wandb,
        plot_det,
        read_fillers,
        read_labels,
        sweep,
    )
    from kwsnet.tracking import wandb_disabled

    if any(not x > 0 for x in a.fa_per_hour):
        raise UsageError(f"--fa_per_hour values must be > 0, got {a.fa_per_hour}")
    if a.attribute and any(not 0.0 <= x <= 1.0 for x in a.attribute):
        raise UsageError(f"--attribute thresholds must be in [0, 1], got {a.attribute}")
    root = Path(a.streams)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise ConfigError(f"{labels} does not exist (write streams with kwsnet make-streams)")
    occurrences = read_labels(labels)
    det = detector(a)
    stored = {}
    seconds = 0.0
    for wav in sorted(root.glob("*.wav")):
        seconds += sf.info(str(wav)).duration
        stored[wav.name] = det.scores(read(wav, det.sample_rate))
    if not stored:
        raise ConfigError(f"{root} holds no WAV files")
    hours = seconds / 3600

    def detect_at(thr: list[float]) -> dict:
        return {f: det.decide(t, s, thr) for f, (t, s) in stored.items()}

    results = sweep(detect_at, det.keywords, occurrences, hours)
    heads = "".join(f" {f'FRR@{x:g}FA/h':>12}" for x in a.fa_per_hour)
    print(f"{hours:.3f} h of audio, {len(occurrences)} keyword occurrences, {len(stored)} files")
    print(f"{'keyword':<12} {'n':>5}{heads}   (threshold at 1 FA/h)")
    for name, r in results.items():
        cells = "".join(f" {frr_at(r, x)[0]:>12.3f}" for x in a.fa_per_hour)
        print(f"{name:<12} {r.occurrences:>5}{cells}   ({frr_at(r, 1.0)[1]:g})")
    if a.attribute:
        fill_csv = root / "filler.csv"
        fillers = read_fillers(fill_csv) if fill_csv.is_file() else []
        split = {
            t: attribute_false_alarms(detect_at([t] * len(det.keywords)), occurrences, fillers)
            for t in a.attribute
        }
        kinds = list(dict.fromkeys(k for counts in split.values() for k in counts))
        print("false alarms per hour by where they fell (all keywords at the threshold):")
        print(f"{'threshold':<10} {'FA/h':>9}" + "".join(f" {k:>10}" for k in kinds))
        for t, counts in split.items():
            cells = "".join(f" {counts.get(k, 0) / hours:>10.1f}" for k in kinds)
            print(f"{t:<10g} {sum(counts.values()) / hours:>9.1f}{cells}")
    png = Path(a.out) if a.out else root / "det.png"
    plot_det(results, png, title=f"{Path(a.ckpt_path).name}, {hours:.2f} h")
    print(f"DET curve: {png}")
    if a.wandb and not wandb_disabled():
        meta = {
            "ckpt_path": str(a.ckpt_path),
            "streams": str(root),
            "hours": hours,
            "occurrences": len(occurrences),
            "files": len(stored),
            "detector": dataclasses.asdict(det.config),
        }
        run_dir = log_det_wandb(results, png, meta, a.wandb_dir or str(root), a.project)
        print(f"wandb run: {run_dir}")
    return 0
