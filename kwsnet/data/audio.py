"""Audio decoding: soundfile (libsndfile) → float32 mono → resample to the model rate."""

from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from kwsnet.data.record import DataFormatError

__all__ = ["read_audio", "resample", "fit_length", "AUDIO_EXTENSIONS"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")
_MAX_SECONDS = 3600.0  # refuse absurd declared sizes before allocating
_RATE_RANGE = (1000, 768000)  # Hz; outside it a header is corrupt, not audio to resample
_MAX_DECODED_BYTES = 2 << 30  # float32 samples over all channels
_MAX_KERNEL = 4_000_000  # resample kernel elements: (new / gcd) * (orig / gcd)


def resample(wave: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """``torchaudio.functional.resample`` that stays small for any pair of rates.

    Its polyphase kernel has ``(new / g) * (orig / g)`` taps (g = gcd): 16000 from 44100 is
    160 × 441, but from an odd rate such as 767999 it would be 16000 × 767999 (49 GB). For such
    rates the source rate is rounded to the nearest multiple of 10, 100 or 1000 Hz, the finest
    that keeps the kernel under ``_MAX_KERNEL`` (a pitch error below 0.1% above 50 kHz).
    """
    src = orig
    for step in (1, 10, 100, 1000):
        src = max(step, round(orig / step) * step)
        g = math.gcd(src, new)
        if (new // g) * (src // g) <= _MAX_KERNEL:
            break
    return AF.resample(wave, src, new)


def _wav_truncation(path: str) -> str | None:
    """For a RIFF/WAVE file, say if its data chunk declares more bytes than the file holds.

    libsndfile silently decodes the part that is there; a truncated clip is reported instead.
    Sizes of 0 and 0xFFFFFFFF (written by streaming recorders) are not checked.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                chunk = f.read(8)
                cid, csize = chunk[:4], int.from_bytes(chunk[4:8], "little")
                if cid == b"data":
                    have = size - pos - 8
                    if csize not in (0, 0xFFFFFFFF) and csize > have:
                        return f"truncated: its data chunk declares {csize} bytes, {have} are there"
                    return None
                pos += 8 + csize + (csize & 1)
    except OSError:
        return None
    return None


def read_audio(path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
    """Decode ``path`` to a float32 mono waveform ``[T]`` at ``sample_rate``.

    Multi-channel audio is averaged to mono; other rates are resampled with
    ``torchaudio.functional.resample``. Raises ``DataFormatError`` naming the file when it
    cannot be decoded, is empty, declares an implausible size, or holds non-finite samples.
    """
    path = os.fspath(path)
    try:
        # One open for header and samples (sf.info + sf.read opened the file twice).
        f = sf.SoundFile(path)
    except Exception as exc:  # libsndfile raises several types; all mean "not readable audio"
        raise DataFormatError(f"{path}: cannot decode audio ({exc})") from exc
    with f:
        truncated = _wav_truncation(path)
        if truncated:
            raise DataFormatError(f"{path}: {truncated}")
        sr, channels, frames = f.samplerate, f.channels, f.frames
        if sr <= 0 or channels <= 0:
            raise DataFormatError(f"{path}: invalid header (sample rate {sr}, channels {channels})")
        if not _RATE_RANGE[0] <= sr <= _RATE_RANGE[1]:
            raise DataFormatError(
                f"{path}: implausible sample rate {sr} Hz (accepted: "
                f"{_RATE_RANGE[0]}..{_RATE_RANGE[1]} Hz)"
            )
        if frames > _MAX_SECONDS * sr:
            raise DataFormatError(
                f"{path}: header declares {frames} frames "
                f"({frames / sr:.0f} s), more than the {_MAX_SECONDS:.0f} s allowed"
            )
        if frames * channels * 4 > _MAX_DECODED_BYTES:
            raise DataFormatError(
                f"{path}: header declares {frames} frames x {channels} channels, more "
                f"than the {_MAX_DECODED_BYTES >> 30} GiB a decode may take"
            )
        try:
            data = f.read(dtype="float32", always_2d=True)
        except Exception as exc:
            raise DataFormatError(f"{path}: cannot decode audio ({exc})") from exc
    if data.shape[0] == 0:
        raise DataFormatError(f"{path}: no audio samples (empty file)")
    if not np.isfinite(data).all():
        raise DataFormatError(f"{path}: audio holds NaN or infinite samples")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    wave = torch.from_numpy(np.ascontiguousarray(mono))
    if sr != sample_rate:
        wave = resample(wave, sr, sample_rate)
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
