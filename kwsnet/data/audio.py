"""Audio decoding: soundfile (libsndfile) → float32 mono → resample to the model rate."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from kwsnet.data.record import DataFormatError

__all__ = ["read_audio", "fit_length", "AUDIO_EXTENSIONS"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")
_MAX_SECONDS = 3600.0  # refuse absurd declared sizes before allocating
_RATE_RANGE = (1000, 768000)  # Hz; outside it a header is corrupt, not audio to resample


def read_audio(path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
    """Decode ``path`` to a float32 mono waveform ``[T]`` at ``sample_rate``.

    Multi-channel audio is averaged to mono; other rates are resampled with
    ``torchaudio.functional.resample``. Raises ``DataFormatError`` naming the file when it
    cannot be decoded, is empty, declares an implausible size, or holds non-finite samples.
    """
    path = os.fspath(path)
    try:
        info = sf.info(path)
    except Exception as exc:  # libsndfile raises several types; all mean "not readable audio"
        raise DataFormatError(f"{path}: cannot decode audio ({exc})") from exc
    if info.samplerate <= 0 or info.channels <= 0:
        raise DataFormatError(
            f"{path}: invalid header (sample rate {info.samplerate}, channels {info.channels})"
        )
    if not _RATE_RANGE[0] <= info.samplerate <= _RATE_RANGE[1]:
        raise DataFormatError(
            f"{path}: implausible sample rate {info.samplerate} Hz (accepted: "
            f"{_RATE_RANGE[0]}..{_RATE_RANGE[1]} Hz)"
        )
    if info.frames > _MAX_SECONDS * info.samplerate:
        raise DataFormatError(
            f"{path}: header declares {info.frames} frames "
            f"({info.frames / info.samplerate:.0f} s), more than the {_MAX_SECONDS:.0f} s allowed"
        )
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise DataFormatError(f"{path}: cannot decode audio ({exc})") from exc
    if data.shape[0] == 0:
        raise DataFormatError(f"{path}: no audio samples (empty file)")
    if not np.isfinite(data).all():
        raise DataFormatError(f"{path}: audio holds NaN or infinite samples")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sr != sample_rate:
        wave = AF.resample(wave, sr, sample_rate)
    return wave


def fit_length(
    wave: torch.Tensor, length: int, random_crop: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pad (centred, zeros) or crop ``wave [T, ...]`` along time to exactly ``length``.

    Crops are random when ``random_crop`` (training) and centred otherwise.
    """
    t = wave.shape[0]
    if t == length:
        return wave
    if t < length:
        left = (length - t) // 2
        pad = [0, 0] * (wave.dim() - 1) + [left, length - t - left]
        return torch.nn.functional.pad(wave, pad)
    if random_crop:
        start = int(torch.randint(0, t - length + 1, (1,), generator=generator))
    else:
        start = (t - length) // 2
    return wave[start : start + length]
