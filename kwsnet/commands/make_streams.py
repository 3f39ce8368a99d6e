"""Labelled long recordings from a dataset's test split, for detect-eval.

    kwsnet make-streams --data.source speech_commands --data.root DIR \\
        --data.words '[yes, no, up]' --out streams/ [--minutes 10] [--filler_dir '[DIR]']

--data.* are the dataset's settings, as for fit. Keyword clips of the test split are placed
at random gaps over noise, with non-keyword speech from --filler_dir (searched recursively)
as filler; labels.csv holds every keyword occurrence (kwsnet.detect.streams).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

from jsonargparse import ArgumentParser

from kwsnet.commands.common import new_parser, parse
from kwsnet.errors import ConfigError

__all__ = ["parser", "run"]


def parser() -> ArgumentParser:
    """``kwsnet make-streams``'s parser: ``--data.*`` are ``AudioDataModule``'s arguments."""
    from kwsnet.data.datamodule import AudioDataModule

    p = new_parser("make-streams", __doc__ or "")
    p.add_class_arguments(AudioDataModule, "data")
    p.add_argument("--out", type=str, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="placement seed")
    p.add_argument("--minutes", type=float, default=10.0, help="total length of the streams")
    p.add_argument("--stream_seconds", type=float, default=60.0, help="length of one stream")
    p.add_argument("--noise_gain", type=float, default=0.1, help="background noise gain")
    p.add_argument("--filler_prob", type=float, default=0.3, help="chance of filler in a gap")
    p.add_argument(
        "--filler_dir",
        type=list[str],
        default=[],
        help="folders of non-keyword speech (searched recursively) used as filler, e.g. "
        "'[../shared/data/voxceleb_tts/wav]'",
    )
    p.add_argument(
        "--filler_part",
        type=Literal["all", "train", "held_out"],
        default="all",
        help="which speakers of --filler_dir (kwsnet.data.negatives): held_out for validation "
        "streams (never trained on), train, or all",
    )
    p.add_argument(
        "--snr_db",
        type=list[float] | None,
        default=None,
        help="[low, high]: each clip at an SNR drawn from this range over the noise bed, "
        "measured on its own active level (instead of --noise_gain), e.g. '[5, 20]'",
    )
    p.add_argument(
        "--noise_dbfs",
        type=list[float],
        default=[-45.0, -35.0],
        help="[low, high]: the noise bed's RMS level in dBFS with --snr_db",
    )
    p.add_argument(
        "--split",
        type=Literal["test", "val"],
        default="test",
        help="the split whose keyword clips are placed (val: validation streams)",
    )
    return p


def run(argv: Sequence[str]) -> int:
    """``kwsnet make-streams``: 0 once the streams and labels.csv are written.

    Raises:
        ConfigError, InputNotFoundError, DataFormatError: a missing filler folder, a test split
            without keyword clips, an unreadable dataset.
    """
    from kwsnet.detect.streams import StreamConfig, make_streams

    p = parser()
    cfg, _ = parse(p, argv)
    for folder in cfg.filler_dir:
        if not os.path.isdir(folder):
            raise ConfigError(f"--filler_dir: filler folder {folder} does not exist")
    init = p.instantiate_classes(cfg)
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
            filler_part=cfg.filler_part,
            snr_db=None if cfg.snr_db is None else tuple(cfg.snr_db),
            noise_dbfs=tuple(cfg.noise_dbfs),
            split=cfg.split,
        ),
    )
    print(f"wrote {len(paths)} streams, labels.csv and streams.json to {cfg.out}")
    return 0
