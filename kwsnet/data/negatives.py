"""Non-keyword audio (negatives) for detection training and validation streams.

A keyword spotter that only ever saw keywords fires on anything; the field trains it on hours
of other speech and noise. ``negatives_dir`` folders hold such audio (any length; e.g.
``librispeech_train-clean-100``), searched recursively for audio files. The files are split by
*speaker folder* (the file's parent folder name) into a training part and a held-out part, by
a hash of that name (``held_out``), so that the validation streams that pick a checkpoint by
false alarms per hour use speakers the model never trained on, and the same folders give the
same split everywhere (training, ``make-streams --filler_part held_out``, ``mine-negatives``).

Training uses the training part cut into windows of ``clip`` samples (``windows``): every
window of a file (the last one flush with its end), each one ``_unknown_`` item.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from kwsnet.data.audio import AUDIO_EXTENSIONS
from kwsnet.errors import InputNotFoundError

__all__ = [
    "HELD_OUT_PERCENT",
    "Part",
    "negative_files",
    "is_held_out",
    "speaker_key",
    "windows",
]

# Percent of speaker folders held out of training (validation streams, never trained on).
HELD_OUT_PERCENT = 20
Part = Literal["all", "train", "held_out"]


def speaker_key(path: str | Path) -> str:
    """The speaker a negative file is split by: the name's part before its first ``-``
    (LibriSpeech ``103-1240-0000.flac`` -> ``103``), else its parent folder's name."""
    p = Path(path)
    return p.stem.split("-", 1)[0] if "-" in p.stem else p.parent.name


def is_held_out(path: str | Path, percent: float = HELD_OUT_PERCENT) -> bool:
    """Whether ``path``'s speaker is in the held-out part: crc32 of ``speaker_key`` mod 100 <
    ``percent`` (crc32, not hash(): the same in every process)."""
    return zlib.crc32(speaker_key(path).encode()) % 100 < percent


def negative_files(
    dirs: Sequence[str | Path], part: Part = "all", percent: float = HELD_OUT_PERCENT
) -> list[Path]:
    """Audio files under ``dirs`` (recursive, sorted per folder) in ``part``.

    Raises:
        InputNotFoundError: a folder that does not exist or holds no audio file.
    """
    if part not in ("all", "train", "held_out"):
        raise ValueError(f"part must be all, train or held_out, got {part!r}")
    out: list[Path] = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise InputNotFoundError(f"negatives folder {root} does not exist")
        found = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        if not found:
            raise InputNotFoundError(
                f"negatives folder {root} holds no {'/'.join(AUDIO_EXTENSIONS)} file"
            )
        if part != "all":
            keep = part == "held_out"
            found = [p for p in found if is_held_out(p, percent) == keep]
        out.extend(found)
    return out


def windows(num_samples: int, clip: int) -> list[int]:
    """Start samples of the ``clip``-sample windows that tile a file of ``num_samples``:
    0, clip, 2 clip, ... and, when the file does not end on a window, one flush with its end
    (a file shorter than a window: one window at 0, zero-padded on load)."""
    if num_samples <= clip:
        return [0]
    starts = list(range(0, num_samples - clip + 1, clip))
    if starts[-1] + clip < num_samples:
        starts.append(num_samples - clip)
    return starts
