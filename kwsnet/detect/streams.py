"""Long labelled recordings built from a dataset's test split.

Each stream is ``stream_seconds`` long: background noise (a random stretch of a random
``_background_noise_`` file at ``noise_gain``, looped if short; silence where the dataset has
none) with clips laid end to end after random gaps of ``gap_s`` seconds. A clip is a keyword
(labelled) or, with probability ``filler_prob``, non-keyword audio (not labelled): a
``_unknown_`` test clip where the split has any, or an utterance from ``filler_dirs`` (any other
speech, e.g. VoxCeleb sentences: the partial and similar-sounding phrases streams are judged
on). Clips are added to the noise unscaled, so with ``noise_gain: 0`` the stream holds each
clip's samples exactly. Only the dataset's *test* split is read: no training clip leaks into a
stream.

With ``snr_db`` (the recorded-speech setting, issue 30), levels are relative instead: each
stream's noise bed is scaled to a level drawn from ``noise_dbfs`` (RMS, dBFS), and every clip,
keyword or filler, to the bed's level plus an SNR drawn from ``snr_db`` (per clip, measured on
its *active* level: the RMS of its 20 ms frames within 40 dB of its loudest, so a one-second
clip's leading silence does not count). A quiet speaker is then as audible as a loud one, and
a sentence of filler no louder than a keyword. ``split`` picks the keyword clips' split
(``test``; ``val`` for validation streams), ``filler_part`` which speakers of ``filler_dirs``
are used (``kwsnet.data.negatives``: ``held_out`` for validation streams, ``all`` else).
``streams.json`` records the settings, the hours written and the seconds of distinct
non-keyword audio the streams hold (the figure a false-alarm rate rests on).

Every filler placement is listed in ``filler.csv`` (file, source, start, end, kind:
``_unknown_`` / ``_silence_`` / ``_filler_``), so false alarms can be told apart by what they
fired on (``detect-eval --attribute``). The same seed gives the same streams.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from kwsnet.data.audio import read_audio
from kwsnet.data.negatives import negative_files
from kwsnet.errors import ConfigError

__all__ = ["StreamConfig", "make_streams", "filler_files"]

NON_KEYWORDS = ("_unknown_", "_silence_")
AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass
class StreamConfig:
    """Stream layout (defaults in brackets): ``minutes`` of audio in all [10], in streams of
    ``stream_seconds`` [60]; gaps uniform in ``gap_s`` [(1, 3)]; ``filler_prob`` [0.3];
    ``noise_gain`` [0.1]; ``seed`` [0]; ``filler_dirs``: folders searched recursively for
    non-keyword audio (.wav, .flac) [none]; ``filler_part`` of their speakers [all];
    ``snr_db`` (lo, hi): relative levels (above) instead of ``noise_gain`` [none];
    ``noise_dbfs`` (lo, hi): the bed's level with ``snr_db`` [(-45, -35)]; ``split`` [test]."""

    minutes: float = 10.0
    stream_seconds: float = 60.0
    gap_s: tuple[float, float] = (1.0, 3.0)
    filler_prob: float = 0.3
    noise_gain: float = 0.1
    seed: int = 0
    filler_dirs: tuple[str, ...] = ()
    filler_part: str = "all"
    snr_db: tuple[float, float] | None = None
    noise_dbfs: tuple[float, float] = (-45.0, -35.0)
    split: str = "test"

    def __post_init__(self) -> None:
        if self.split not in ("test", "val"):
            raise ConfigError(f"streams split must be test or val, got {self.split!r}")
        for name in ("snr_db", "noise_dbfs", "gap_s"):
            pair = getattr(self, name)
            if pair is not None and (len(pair) != 2 or not pair[0] <= pair[1]):
                raise ConfigError(f"streams {name} must be [low, high], got {list(pair)}")


def active_rms(x: np.ndarray, sample_rate: int, floor_db: float = 40.0) -> float:
    """RMS of ``x`` over its 20 ms frames within ``floor_db`` of the loudest frame (its active
    level; 0.0 for digital silence)."""
    n = max(1, int(0.02 * sample_rate))
    frames = x[: len(x) // n * n].reshape(-1, n) if len(x) >= n else x.reshape(1, -1)
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    top = float(energy.max()) if energy.size else 0.0
    if top <= 0.0:
        return 0.0
    return float(math.sqrt(energy[energy >= top * 10.0 ** (-floor_db / 10.0)].mean()))


def filler_files(dirs: Sequence[str | Path], part: str = "all") -> list[Path]:
    """Every .wav / .flac file under ``dirs`` (recursive, sorted) of the speakers in ``part``
    (``kwsnet.data.negatives.negative_files``); a missing folder or one with no audio is an
    ``InputNotFoundError`` (a ``FileNotFoundError``) naming it."""
    files = negative_files(dirs, part)  # type: ignore[arg-type]
    return [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]


def _noise_files(root: str | None) -> list[Path]:
    if root is None:
        return []
    return sorted((Path(root) / "_background_noise_").glob("*.wav"))


def make_streams(dm: Any, out: str | Path, config: StreamConfig | None = None) -> list[Path]:
    """Write ``stream_NNN.wav`` (16-bit), ``labels.csv``, ``filler.csv`` and ``streams.json``
    under ``out`` from ``dm``'s (an ``AudioDataModule``) test (or ``val``) split; returns the
    WAV paths."""
    cfg = config or StreamConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sr = dm.source_args.sample_rate
    names = dm.class_names
    keywords, filler = [], []
    for item in dm.source.items(cfg.split):
        if item.kind != "audio" or item.extra or not Path(item.path).is_file():
            continue  # generated items (Speech Commands' _silence_) are not clips
        name = names[item.keyword] if item.keyword >= 0 else "_unknown_"
        (filler if name in NON_KEYWORDS else keywords).append((item.path, name))
    filler += [(str(p), "_filler_") for p in filler_files(cfg.filler_dirs, cfg.filler_part)]
    if not keywords:
        raise ConfigError(f"the {cfg.split} split has no keyword clips to place in streams")
    rng = np.random.default_rng(cfg.seed)
    noises = [read_audio(p, sr).numpy() for p in _noise_files(dm.source_args.root)]
    cache: dict[str, np.ndarray] = {}

    def clip(path: str) -> np.ndarray:
        if path not in cache:
            cache[path] = read_audio(path, sr).numpy()
        return cache[path]

    levels: dict[str, float] = {}

    def level(path: str) -> float:
        if path not in levels:
            levels[path] = active_rms(clip(path), sr)
        return levels[path]

    n_samples = int(round(cfg.stream_seconds * sr))
    n_streams = max(1, math.ceil(cfg.minutes * 60 / cfg.stream_seconds))
    rows, fills, paths = [], [], []
    clipped = 0
    for s in range(n_streams):
        wave = np.zeros(n_samples, dtype=np.float64)
        bed_db = float(rng.uniform(*cfg.noise_dbfs)) if cfg.snr_db is not None else 0.0
        if noises and (cfg.noise_gain > 0 or cfg.snr_db is not None):
            noise = noises[int(rng.integers(len(noises)))]
            reps = math.ceil((n_samples + len(noise)) / len(noise))
            start = int(rng.integers(len(noise)))
            bed = np.tile(noise, reps)[start : start + n_samples].astype(np.float64)
            if cfg.snr_db is None:
                wave += cfg.noise_gain * bed
            else:
                rms = float(np.sqrt((bed**2).mean()))
                if rms > 0:
                    wave += bed * (10.0 ** (bed_db / 20.0) / rms)
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
            if cfg.snr_db is not None:
                snr = float(rng.uniform(*cfg.snr_db))
                lv = level(path)
                if lv > 0:
                    x = x * (10.0 ** ((bed_db + snr) / 20.0) / lv)
            wave[pos : pos + len(x)] += x
            span = (name, pos / sr, (pos + len(x)) / sr)
            if use_filler:
                fills.append((span[0], path, span[1], span[2], word))
            else:
                rows.append((span[0], word, span[1], span[2]))
            pos += len(x)
        clipped += int(np.count_nonzero(np.abs(wave) > 1.0))
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
    used = {src for _, src, _, _, _ in fills}
    distinct = sum(len(clip(p)) for p in used) / sr
    summary = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()},
        "split": cfg.split,
        "files": len(paths),
        "hours": n_streams * n_samples / sr / 3600,
        "occurrences": len(rows),
        "filler_placements": len(fills),
        "distinct_filler_files": len(used),
        "distinct_filler_hours": distinct / 3600,
        "filler_placed_hours": sum(b - a for _, _, a, b, _ in fills) / 3600,
        "noise_files": [p.name for p in _noise_files(dm.source_args.root)],
        "clipped_samples": clipped,
    }
    (out / "streams.json").write_text(json.dumps(summary, indent=2) + "\n")
    return paths
