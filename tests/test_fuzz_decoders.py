"""Property tests: hostile audio files give a ``DataFormatError`` naming the file, or a clean
skip with ``on_error: skip`` — never a hang, a crash or garbage samples."""

from __future__ import annotations

import io
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kwsnet.data.audio import read_audio
from kwsnet.data.datamodule import AudioDataModule
from kwsnet.data.record import DataFormatError

from .conftest import write_tone

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds``."""

    def boom(*_: object) -> None:
        raise TimeoutError(f"decoder ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def check_decode(path: Path) -> None:
    """The contract: a finite float32 [T] waveform, or a DataFormatError naming ``path``."""
    with time_limit(10.0):
        try:
            wave = read_audio(path, 16000)
        except DataFormatError as exc:
            assert str(path) in str(exc)
            return
    assert wave.dtype == torch.float32 and wave.dim() == 1 and wave.numel() > 0
    assert torch.isfinite(wave).all()


def _mutate(blob: bytes, kind: str, pos: int, value: int) -> bytes:
    if kind == "truncate":
        return blob[: pos % (len(blob) + 1)]
    if kind == "flip":
        i = pos % len(blob)
        return blob[:i] + bytes([value % 256]) + blob[i + 1 :]
    if kind == "rate":  # fmt chunk sample rate at byte 24
        return blob[:24] + struct.pack("<I", value) + blob[28:]
    if kind == "huge_size":  # RIFF size and data chunk size
        riff, data = struct.pack("<I", 0xFFFFFFF0), struct.pack("<I", value)
        return blob[:4] + riff + blob[8:40] + data + blob[44:]
    if kind == "channels":
        return blob[:22] + struct.pack("<H", value % 65536) + blob[24:]
    return blob


@SETTINGS
@given(blob=st.binary(max_size=4096))
def test_random_bytes(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "random.wav"
    path.write_bytes(blob)
    check_decode(path)


@SETTINGS
@given(
    kind=st.sampled_from(["truncate", "flip", "rate", "huge_size", "channels"]),
    pos=st.integers(0, 10_000),
    value=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3000),
)
def test_mutated_wav_headers(tmp_path: Path, kind: str, pos: int, value: int, n: int) -> None:
    blob = wav_bytes(0.3 * np.sin(np.arange(n) / 5.0), 16000)
    path = tmp_path / "mutated.wav"
    path.write_bytes(_mutate(blob, kind, pos, value))
    check_decode(path)


@SETTINGS
@given(
    rate=st.sampled_from([1, 7, 999, 1000, 8000, 11025, 44100, 96000, 768000, 1_000_000]),
    n=st.integers(0, 2000),
    bad=st.sampled_from([None, float("nan"), float("inf"), -float("inf")]),
)
def test_float_wavs_rates_and_nonfinite(tmp_path: Path, rate: int, n: int, bad: float | None):
    x = np.zeros(n, np.float32) + 0.1
    if bad is not None and n:
        x[n // 2] = bad
    path = tmp_path / "float.wav"
    try:
        path.write_bytes(wav_bytes(x, rate, "FLOAT"))
    except (sf.LibsndfileError, RuntimeError, ValueError):
        return  # libsndfile refuses to write this rate
    check_decode(path)
    if bad is not None and n and 1000 <= rate <= 768000:
        with pytest.raises(DataFormatError, match="NaN or infinite"):
            read_audio(path, 16000)
    if n == 0:
        with pytest.raises(DataFormatError):
            read_audio(path, 16000)


def test_zero_length_and_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    check_decode(empty)
    with pytest.raises(DataFormatError, match="empty.wav"):
        read_audio(empty, 16000)
    with pytest.raises(DataFormatError, match=str(tmp_path)):
        read_audio(tmp_path, 16000)


def test_datamodule_skips_every_bad_file(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    for cls in ("a", "b"):
        for i in range(4):
            write_tone(root / cls / f"good{i}.wav", freq=300.0 + 200 * (cls == "b") + 10 * i)
    good = (root / "a" / "good0.wav").read_bytes()
    nan = np.full(1600, np.nan, np.float32)
    bad = {
        "random.wav": b"\x00\x01garbage" * 50,
        "empty.wav": b"",
        "truncated.wav": good[: len(good) // 7],
        "header_only.wav": good[:44],
        "rate1.wav": _mutate(good, "rate", 0, 1),
        "huge.wav": _mutate(good, "huge_size", 0, 0xFFFFFF00),
        "nan.wav": wav_bytes(nan, 16000, "FLOAT"),
    }
    for name, blob in bad.items():
        (root / "a" / name).write_bytes(blob)
    with time_limit(60.0):
        with pytest.warns(UserWarning, match="skipped"):
            dm = AudioDataModule(
                source="folder", root=str(root), on_error="skip", val_fraction=0, test_fraction=0
            )
            dm.setup("fit")
    ds = dm.datasets["train"]
    failed = {Path(ds.items[i].path).name for i in ds.failed}
    # A huge declared data size over a short file is clamped by libsndfile to what is there.
    assert set(bad) - {"huge.wav"} <= failed <= set(bad)
    seen = 0
    for batch in dm.train_dataloader():
        assert torch.isfinite(batch["audio"]).all()
        seen += len(batch["path"])
    assert seen == len(ds) - len(failed) >= 8
    with pytest.raises(DataFormatError, match=r"\.wav"):
        AudioDataModule(source="folder", root=str(root), val_fraction=0, test_fraction=0).setup(
            "fit"
        )
