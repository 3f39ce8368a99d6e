"""Keyword detections in long audio files, as CSV: file,time,keyword,score.

    kwsnet detect --ckpt_path run/checkpoints/best.ckpt long1.wav long2.wav [--out d.csv]

A window of the model's clip length slides over each file every --hop_ms; the keyword's
posterior, averaged over --smooth_windows windows, fires above --threshold for --patience
windows, then not again for --refractory_ms (kwsnet.detect, docs/streaming.md).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonargparse import ArgumentParser, Namespace
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt

from kwsnet.commands.common import new_parser, parse
from kwsnet.detect.detector import DetectorConfig

if TYPE_CHECKING:
    from kwsnet.detect.detector import Detector

__all__ = ["add_detector_args", "detector", "parser", "read", "run"]


def add_detector_args(p: ArgumentParser) -> None:
    """``--ckpt_path`` and the detector's settings (detect, detect-eval), typed with the
    ranges ``DetectorConfig`` accepts, so a bad value is a parse error naming the flag."""
    d = DetectorConfig()
    p.add_argument("--ckpt_path", type=str, required=True, help="a kwsnet checkpoint")
    p.add_argument("--hop_ms", type=PositiveFloat, default=d.hop_ms, help="window hop (ms)")
    p.add_argument(
        "--smooth_windows", type=PositiveInt, default=d.smooth_windows, help="windows averaged"
    )
    p.add_argument("--threshold", type=float, default=d.threshold, help="posterior to fire at")
    p.add_argument(
        "--patience", type=PositiveInt, default=d.patience, help="windows above threshold"
    )
    p.add_argument(
        "--refractory_ms",
        type=NonNegativeFloat,
        default=d.refractory_ms,
        help="quiet after a detection (ms)",
    )


def detector(args: Namespace) -> Detector:
    """The detector the parsed ``args`` describe (the checkpoint's model, rebuilt).

    Raises:
        CheckpointNotFoundError, ConfigError: a bad checkpoint, one without a clip length.
    """
    from kwsnet.detect.model import detector_from_checkpoint

    cfg = DetectorConfig(
        hop_ms=float(args.hop_ms),
        smooth_windows=int(args.smooth_windows),
        threshold=float(args.threshold),
        patience=int(args.patience),
        refractory_ms=float(args.refractory_ms),
    )
    return detector_from_checkpoint(args.ckpt_path, cfg)


def read(path: str | Path, sample_rate: int) -> Any:
    """An audio file as a waveform at ``sample_rate`` (``kwsnet.data.audio.read_audio``)."""
    from kwsnet.data.audio import read_audio

    return read_audio(path, sample_rate)


def parser() -> ArgumentParser:
    """``kwsnet detect``'s parser."""
    p = new_parser("detect", __doc__ or "")
    add_detector_args(p)
    p.add_argument("files", type=str, nargs="+", help="audio files")
    p.add_argument("--out", type=str | None, default=None, help="CSV file (default: stdout)")
    return p


def run(argv: Sequence[str]) -> int:
    """``kwsnet detect``: 0 once the detections are written.

    Raises:
        ConfigError, CheckpointNotFoundError, DataFormatError: bad settings, checkpoint or
            audio file.
    """
    args, _ = parse(parser(), argv)
    det = detector(args)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "time", "keyword", "score"])
    for f in args.files:
        for d in det.detect(read(f, det.sample_rate)):
            w.writerow([f, f"{d.time:.3f}", d.keyword, f"{d.score:.4f}"])
    if args.out:
        Path(args.out).write_text(buf.getvalue())
    else:
        sys.stdout.write(buf.getvalue())
    return 0
