"""``kwsnet detect``, ``kwsnet make-streams`` and ``kwsnet detect-eval``."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from kwsnet.errors import ConfigError
from kwsnet.tracking import wandb_disabled

from .detector import DetectorConfig
from .evaluate import (
    TARGET_FA_PER_HOUR,
    attribute_false_alarms,
    frr_at,
    log_det_wandb,
    plot_det,
    read_fillers,
    read_labels,
    sweep,
)

__all__ = ["detect_main", "make_streams_main", "detect_eval_main"]


def _detector_args(p: argparse.ArgumentParser) -> None:
    d = DetectorConfig()
    p.add_argument("--ckpt_path", required=True, help="a kwsnet checkpoint")
    p.add_argument("--hop_ms", type=float, default=d.hop_ms)
    p.add_argument("--smooth_windows", type=int, default=d.smooth_windows)
    p.add_argument("--threshold", type=float, default=d.threshold)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--refractory_ms", type=float, default=d.refractory_ms)


def _detector(a: argparse.Namespace):
    from .model import detector_from_checkpoint

    try:
        cfg = DetectorConfig(
            hop_ms=a.hop_ms,
            smooth_windows=a.smooth_windows,
            threshold=a.threshold,
            patience=a.patience,
            refractory_ms=a.refractory_ms,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return detector_from_checkpoint(a.ckpt_path, cfg)


def _read(path: str | Path, sample_rate: int):
    from kwsnet.data.audio import read_audio

    return read_audio(path, sample_rate)


def detect_main(argv: Sequence[str]) -> int:
    """Detections in long WAVs as CSV ``file,time,keyword,score``."""
    p = argparse.ArgumentParser(prog="kwsnet detect", description=detect_main.__doc__)
    _detector_args(p)
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--out", help="CSV file (default: stdout)")
    a = p.parse_args(list(argv))
    det = _detector(a)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "time", "keyword", "score"])
    for f in a.files:
        for d in det.detect(_read(f, det.sample_rate)):
            w.writerow([f, f"{d.time:.3f}", d.keyword, f"{d.score:.4f}"])
    if a.out:
        Path(a.out).write_text(buf.getvalue())
    else:
        sys.stdout.write(buf.getvalue())
    return 0


def make_streams_main(argv: Sequence[str]) -> int:
    """Labelled long recordings from a dataset's test split (``--data.*`` as for ``fit``)."""
    from jsonargparse import ArgumentParser

    import kwsnet.cli  # noqa: F401  (registers the yaml12 loader: bare yes/no stay words)
    from kwsnet.data.datamodule import AudioDataModule

    from .streams import StreamConfig, make_streams

    p = ArgumentParser(
        prog="kwsnet make-streams", description=make_streams_main.__doc__, parser_mode="yaml12"
    )
    p.add_class_arguments(AudioDataModule, "data")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--stream_seconds", type=float, default=60.0)
    p.add_argument("--noise_gain", type=float, default=0.1)
    p.add_argument("--filler_prob", type=float, default=0.3)
    p.add_argument(
        "--filler_dir",
        type=list[str],
        default=[],
        help="folders of non-keyword speech (searched recursively) used as filler, e.g. "
        "'[../shared/data/voxceleb_tts/wav]'",
    )
    cfg = p.parse_args(list(argv))
    init = p.instantiate_classes(cfg)
    try:
        paths = make_streams(
            init.data,
            cfg.out,
            StreamConfig(
                minutes=cfg.minutes,
                stream_seconds=cfg.stream_seconds,
                filler_prob=cfg.filler_prob,
                noise_gain=cfg.noise_gain,
                seed=cfg.seed,
                filler_dirs=tuple(cfg.filler_dir),
            ),
        )
    except FileNotFoundError as exc:
        raise ConfigError(f"--filler_dir: {exc}") from exc
    print(f"wrote {len(paths)} streams and labels.csv to {cfg.out}")
    return 0


def detect_eval_main(argv: Sequence[str]) -> int:
    """FRR at 0.5 / 1 / 2 FA/h on generated streams, and a DET curve PNG."""
    p = argparse.ArgumentParser(prog="kwsnet detect-eval", description=detect_eval_main.__doc__)
    _detector_args(p)
    p.add_argument("--streams", required=True, help="folder written by make-streams")
    p.add_argument("--out", help="DET plot PNG (default: STREAMS/det.png)")
    p.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log the DET curve, the FRR table and the plot as a wandb run (offline unless "
        "WANDB_MODE=online; off with --no-wandb or WANDB_MODE=disabled)",
    )
    p.add_argument("--wandb_dir", help="where the wandb run is written (default: STREAMS)")
    p.add_argument("--project", default="kwsnet", help="wandb project (default: kwsnet)")
    p.add_argument(
        "--fa_per_hour",
        type=float,
        nargs="+",
        default=list(TARGET_FA_PER_HOUR),
        help="the FA/h columns of the table (default: 0.5 1 2)",
    )
    p.add_argument(
        "--attribute",
        type=float,
        nargs="+",
        metavar="THRESHOLD",
        help="also print, at these thresholds (all keywords sharing each), the false alarms per "
        "hour split by where they fell: keyword occurrence, filler kind (filler.csv), noise",
    )
    a = p.parse_args(list(argv))
    if any(not x > 0 for x in a.fa_per_hour):
        p.error(f"--fa_per_hour values must be > 0, got {a.fa_per_hour}")
    if a.attribute and any(not 0.0 <= x <= 1.0 for x in a.attribute):
        p.error(f"--attribute thresholds must be in [0, 1], got {a.attribute}")
    root = Path(a.streams)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise ConfigError(f"{labels} does not exist (write streams with kwsnet make-streams)")
    occurrences = read_labels(labels)
    det = _detector(a)
    stored = {}
    seconds = 0.0
    for wav in sorted(root.glob("*.wav")):
        seconds += sf.info(str(wav)).duration
        stored[wav.name] = det.scores(_read(wav, det.sample_rate))
    if not stored:
        raise ConfigError(f"{root} holds no WAV files")
    hours = seconds / 3600

    def detect_at(thr: list[float]):
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
