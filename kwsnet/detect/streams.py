"""Long labelled recordings built from a dataset's test split.

Each stream is ``stream_seconds`` long: background noise (a random stretch of a random
``_background_noise_`` file at ``noise_gain``, looped if short; silence where the dataset has
none) with clips laid end to end after random gaps of ``gap_s`` seconds. A clip is a keyword
(labelled) or, with probability ``filler_prob``, non-keyword audio (not labelled): a
``_unknown_`` test clip where the split has any, or an utterance from ``filler_dirs`` (any other
speech, e.g. VoxCeleb sentences: the partial and similar-sounding phrases streams are judged
on). Clips are added to the noise unscaled, so with ``noise_gain: 0`` the stream holds each
clip's samples exactly. Only the dataset's *test* split is read: no training clip leaks into a
stream. Every filler placement is listed in ``filler.csv`` (file, source, start, end, kind:
``_unknown_`` / ``_silence_`` / ``_filler_``), so false alarms can be told apart by what they
fired on (``detect-eval --attribute``). The same seed gives the same streams.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from kwsnet.data.audio import read_audio
from kwsnet.errors import ConfigError, InputNotFoundError

__all__ = ["StreamConfig", "make_streams", "filler_files"]

NON_KEYWORDS = ("_unknown_", "_silence_")
AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass
class StreamConfig:
    """Stream layout (defaults in brackets): ``minutes`` of audio in all [10], in streams of
    ``stream_seconds`` [60]; gaps uniform in ``gap_s`` [(1, 3)]; ``filler_prob`` [0.3];
    ``noise_gain`` [0.1]; ``seed`` [0]; ``filler_dirs``: folders searched recursively for
    non-keyword audio (.wav, .flac) [none]."""

    minutes: float = 10.0
    stream_seconds: float = 60.0
    gap_s: tuple[float, float] = (1.0, 3.0)
    filler_prob: float = 0.3
    noise_gain: float = 0.1
    seed: int = 0
    filler_dirs: tuple[str, ...] = ()


def filler_files(dirs: Sequence[str | Path]) -> list[Path]:
    """Every .wav / .flac file under ``dirs`` (recursive, sorted); a missing folder or one with
    no audio is an ``InputNotFoundError`` (a ``FileNotFoundError``) naming it."""
    out: list[Path] = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise InputNotFoundError(f"filler folder {root} does not exist")
        found = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not found:
            raise InputNotFoundError(
                f"filler folder {root} holds no {'/'.join(AUDIO_SUFFIXES)} file"
            )
        out.extend(found)
    return out


def _noise_files(root: str | None) -> list[Path]:
    if root is None:
        return []
    return sorted((Path(root) / "_background_noise_").glob("*.wav"))


def make_streams(dm: Any, out: str | Path, config: StreamConfig | None = None) -> list[Path]:
    """Write ``stream_NNN.wav`` (16-bit) and ``labels.csv`` under ``out`` from ``dm``'s
    (an ``AudioDataModule``) test split; returns the WAV paths."""
    cfg = config or StreamConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sr = dm.source_args.sample_rate
    names = dm.class_names
    keywords, filler = [], []
    for item in dm.source.items("test"):
        if item.kind != "audio" or item.extra or not Path(item.path).is_file():
            continue  # generated items (Speech Commands' _silence_) are not clips
        name = names[item.keyword] if item.keyword >= 0 else "_unknown_"
        (filler if name in NON_KEYWORDS else keywords).append((item.path, name))
    filler += [(str(p), "_filler_") for p in filler_files(cfg.filler_dirs)]
    if not keywords:
        raise ConfigError("the test split has no keyword clips to place in streams")
    rng = np.random.default_rng(cfg.seed)
    noises = [read_audio(p, sr).numpy() for p in _noise_files(dm.source_args.root)]
    cache: dict[str, np.ndarray] = {}

    def clip(path: str) -> np.ndarray:
        if path not in cache:
            cache[path] = read_audio(path, sr).numpy()
        return cache[path]

    n_samples = int(round(cfg.stream_seconds * sr))
    n_streams = max(1, math.ceil(cfg.minutes * 60 / cfg.stream_seconds))
    rows, fills, paths = [], [], []
    for s in range(n_streams):
        wave = np.zeros(n_samples, dtype=np.float64)
        if noises and cfg.noise_gain > 0:
            noise = noises[int(rng.integers(len(noises)))]
            reps = math.ceil((n_samples + len(noise)) / len(noise))
            start = int(rng.integers(len(noise)))
            wave += cfg.noise_gain * np.tile(noise, reps)[start : start + n_samples]
        name = f"stream_{s:03d}.wav"
        pos = 0
        while True:
            pos += int(round(rng.uniform(*cfg.gap_s) * sr))
            use_filler = bool(filler) and rng.random() < cfg.filler_prob
            pool = filler if use_filler else keywords
            path, word = pool[int(rng.integers(len(pool)))]
            x = clip(path)
            if pos + len(x) > n_samples:
                break
            wave[pos : pos + len(x)] += x
            span = (name, pos / sr, (pos + len(x)) / sr)
            if use_filler:
                fills.append((span[0], path, span[1], span[2], word))
            else:
                rows.append((span[0], word, span[1], span[2]))
            pos += len(x)
        sf.write(out / name, np.clip(wave, -1.0, 1.0), sr, subtype="PCM_16")
        paths.append(out / name)
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "keyword", "start", "end"])
        for name, word, a, b in rows:
            w.writerow([name, word, f"{a:.7f}", f"{b:.7f}"])
    with open(out / "filler.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "source", "start", "end", "kind"])
        for name, src, a, b, kind in fills:
            w.writerow([name, src, f"{a:.7f}", f"{b:.7f}", kind])
    return paths
