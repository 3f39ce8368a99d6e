"""Shared fixtures: tiny generated audio trees, the small synthetic corpus, ../shared paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Small enough for a CPU test, large enough that a model beats chance.
TINY_SYNTHETIC = "{num_words: 3, num_speakers: 4, utterances: 10}"


def write_tone(
    path: Path, sr: int = 16000, seconds: float = 1.0, freq: float = 440.0, channels: int = 1
) -> Path:
    """Write a sine tone wav (16-bit PCM)."""
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, subtype="PCM_16")
    return path


@pytest.fixture
def speech_commands_tree(tmp_path: Path) -> Path:
    """A 3-word Speech Commands tree: 4 speakers, split lists, background noise."""
    root = tmp_path / "sc"
    words = {"yes": 300.0, "no": 500.0, "up": 700.0}
    for w, f in words.items():
        for spk in ("aaaa1111", "bbbb2222", "cccc3333", "dddd4444"):
            for n in range(2):
                write_tone(root / w / f"{spk}_nohash_{n}.wav", freq=f + 20 * n)
    (root / "validation_list.txt").write_text(
        "".join(f"{w}/cccc3333_nohash_{n}.wav\n" for w in words for n in range(2))
    )
    (root / "testing_list.txt").write_text(
        "".join(f"{w}/dddd4444_nohash_{n}.wav\n" for w in words for n in range(2))
    )
    write_tone(root / "_background_noise_" / "white.wav", seconds=3.0, freq=100.0)
    return root


@pytest.fixture
def shared_speech_commands() -> Path:
    root = SHARED_DATA / "speech_commands_tts"
    if not root.is_dir():
        pytest.skip(f"{root} is absent: the shared real-audio fixtures are not beside the repo")
    return root
