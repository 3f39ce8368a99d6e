"""Hard-negative mining: the windows of non-keyword audio a trained detector fires on.

    kwsnet mine-negatives --ckpt_path run/checkpoints/best.ckpt \\
        --negatives_dir '[../shared/data/librispeech_excerpts/librispeech_train-clean-100]' \\
        --out mined/ [--threshold 0.5] [--part train]

The detector (the same settings as detect) runs over every file of the negatives folders'
--part speakers (kwsnet.data.negatives: train by default, so nothing held out for validation or
evaluation is mined); each detection there is a false alarm, and the window it fired on (one
clip, centred on the detection) is written to --out as
``<speaker>-mined-<file stem>-<ms>.wav`` with ``mined.csv`` (file, source, start, keyword,
score). Adding --out to the training data's ``negatives_dir`` (source_options) and training
again is one round of mining; the file names keep the speaker, so the mined windows stay in
the training part of the split.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser

from kwsnet.commands.common import new_parser, parse
from kwsnet.commands.detect import add_detector_args, detector, read

__all__ = ["parser", "run"]


def parser() -> ArgumentParser:
    """``kwsnet mine-negatives``'s parser."""
    p = new_parser("mine-negatives", __doc__ or "")
    add_detector_args(p)
    p.add_argument(
        "--negatives_dir", type=list[str], required=True, help="folders of non-keyword audio"
    )
    p.add_argument(
        "--part",
        type=Literal["all", "train", "held_out"],
        default="train",
        help="which speakers of the folders to mine (kwsnet.data.negatives)",
    )
    p.add_argument("--out", type=str, required=True, help="folder for the mined windows")
    return p


def run(argv: Sequence[str]) -> int:
    """``kwsnet mine-negatives``: 0 once the mined windows and mined.csv are written.

    Raises:
        ConfigError, CheckpointNotFoundError, InputNotFoundError, DataFormatError: bad settings,
            checkpoint, folder or audio file.
    """
    import numpy as np
    import soundfile as sf

    from kwsnet.data.negatives import negative_files, speaker_key

    args, _ = parse(parser(), argv)
    files = negative_files(args.negatives_dir, args.part)
    det = detector(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    seconds = 0.0
    for f in files:
        wave = read(f, det.sample_rate).numpy()
        seconds += len(wave) / det.sample_rate
        for d in det.detect(wave):
            start = int(round(d.time * det.sample_rate)) - det.window // 2
            start = min(max(0, start), max(0, len(wave) - det.window))
            clip = wave[start : start + det.window]
            if len(clip) < det.window:
                clip = np.pad(clip, (0, det.window - len(clip)))
            ms = int(round(start * 1000 / det.sample_rate))
            name = f"{speaker_key(f)}-mined-{f.stem}-{ms:07d}.wav"
            sf.write(out / name, clip, det.sample_rate, subtype="FLOAT")
            rows.append((name, str(f), start / det.sample_rate, d.keyword, d.score))
    with open(out / "mined.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "source", "start", "keyword", "score"])
        for name, src, t, kw, score in rows:
            w.writerow([name, src, f"{t:.4f}", kw, f"{score:.4f}"])
    hours = seconds / 3600
    rate = len(rows) / hours if hours > 0 else float("nan")
    print(
        f"mined {len(rows)} windows from {len(files)} files ({hours:.3f} h, {rate:.1f} FA/h at "
        f"threshold {args.threshold:g}) into {out}"
    )
    return 0
