"""Shared fixtures: tiny generated audio trees, the small synthetic corpus, ../shared paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Small enough for a CPU test: pipeline checks that do not depend on what the model learns.
TINY_SYNTHETIC = "{num_words: 3, num_speakers: 4, utterances: 10}"
# A task every CPU kernel path learns by a wide margin (tests that assert on learning use it):
# 0.25 s clips, 20 utterances per word and speaker, 10 epochs of 30 steps: the raw-conv model
# reaches ~1.0 test accuracy where TINY_SYNTHETIC's 48 steps leave it near chance.
LEARNABLE_SYNTHETIC = "{num_words: 3, num_speakers: 4, utterances: 20, num_samples: 4000}"
LEARNABLE_SAMPLES = 4000
KWS_RAW_CONFIG = str(REPO / "configs" / "kws_raw.yaml")

# Fit flags for a headless test run: no logger, no sanity validation, no test after fit.
QUIET_FIT = [
    "--trainer.logger",
    "false",
    "--trainer.num_sanity_val_steps",
    "0",
    "--test_after_fit",
    "false",
]


def tiny_cli_args(root: Path, epochs: int, batch_size: int = 16) -> list[str]:
    """CLI flags for ``configs/kws_raw.yaml`` on the tiny synthetic corpus under ``root``."""
    return [
        "--config",
        KWS_RAW_CONFIG,
        "--data.source_options",
        TINY_SYNTHETIC,
        "--data.batch_size",
        str(batch_size),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]


def learnable_cli_args(root: Path, epochs: int = 10) -> list[str]:
    """``tiny_cli_args`` on ``LEARNABLE_SYNTHETIC``: the real config, shrunk to 0.25 s clips."""
    return [
        *tiny_cli_args(root, epochs, batch_size=8),
        "--data.source_options",
        LEARNABLE_SYNTHETIC,
        "--data.clip_samples",
        str(LEARNABLE_SAMPLES),
        "--model.backbone.init_args.input_samples",
        str(LEARNABLE_SAMPLES),
    ]


TRAINED_EPOCHS = 10


@pytest.fixture(scope="session")
def trained_raw_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The run folder of one ``fit`` + test of ``configs/kws_raw.yaml`` on
    ``LEARNABLE_SYNTHETIC`` (``TRAINED_EPOCHS`` epochs, seed 42, the offline wandb logger),
    shared by every test that needs a trained raw-conv model: under xdist the first worker to
    ask trains it, the others wait on a file lock and reuse it (read it, never write into it)."""
    import fcntl
    import json
    import shutil

    from kwsnet.cli import main

    base = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # popen-gwN/: the session's folder is its parent
        base = base.parent
    root = base / "trained_raw"
    with open(base / "trained_raw.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        summary = root / "summary.json"
        if not (summary.exists() and "test/acc" in json.loads(summary.read_text())["metrics"]):
            shutil.rmtree(root, ignore_errors=True)
            main(
                [
                    "fit",
                    *learnable_cli_args(root, TRAINED_EPOCHS),
                    "--trainer.logger.init_args.save_dir",
                    str(root),
                ]
            )
    return root


def small_conformer(**kwargs):
    """A seeded 2-layer, d_model 16 ``ConformerBackbone`` in eval mode; kwargs override."""
    from kwsnet.models.conformer import ConformerBackbone

    torch.manual_seed(0)
    args = dict(
        input_dim=8,
        d_model=16,
        num_heads=2,
        ffn_dim=32,
        num_layers=2,
        depthwise_conv_kernel_size=5,
        dropout=0.1,
    )
    args.update(kwargs)
    return ConformerBackbone(**args).eval()


def assert_padding_invariant(model, x: torch.Tensor, lengths: torch.Tensor) -> None:
    """Extra (garbage) padding frames leave valid frames and embeddings of ``model`` unchanged.

    ``x`` is (2, 10, features) and ``lengths`` is ``[10, 6]``.
    """
    with torch.no_grad():
        frames = model.encode(x, lengths)
        emb = model(x, lengths)
        padded = torch.cat([x, 7.0 * torch.randn(2, 4, x.shape[-1])], dim=1)
        padded[1, 6:] = 3.0  # garbage in the padding of the shorter sequence too
        frames_p = model.encode(padded, lengths)
        emb_p = model(padded, lengths)
        alone = model(x[1:, :6], torch.tensor([6]))
    torch.testing.assert_close(frames_p[0, :10], frames[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(frames_p[1, :6], frames[1, :6], atol=1e-5, rtol=1e-5)
    assert frames_p[1, 6:].abs().max() == 0
    torch.testing.assert_close(emb_p, emb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[0], emb[1], atol=1e-5, rtol=1e-5)


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


def write_speech_commands(
    root: Path, counts: dict[str, tuple[int, int, int]], seconds: float = 0.25
) -> Path:
    """A Speech Commands tree under ``root``: ``counts[word] = (train, val, test)`` clips
    (short tones, one speaker per clip), the split lists and a ``_background_noise_`` file."""
    val, test = [], []
    for w, (n_train, n_val, n_test) in counts.items():
        freq = 200.0 + 37.0 * (sum(map(ord, w)) % 60)
        for i in range(n_train + n_val + n_test):
            rel = f"{w}/{i:04d}abcd_nohash_0.wav"
            write_tone(root / rel, seconds=seconds, freq=freq + 5 * i)
            if n_train <= i < n_train + n_val:
                val.append(rel)
            elif i >= n_train + n_val:
                test.append(rel)
    (root / "validation_list.txt").write_text("".join(f"{r}\n" for r in val))
    (root / "testing_list.txt").write_text("".join(f"{r}\n" for r in test))
    rng = np.random.default_rng(0)
    (root / "_background_noise_").mkdir(parents=True, exist_ok=True)
    sf.write(root / "_background_noise_" / "white.wav", 0.1 * rng.standard_normal(32000), 16000)
    return root


@pytest.fixture(scope="session")
def speech_commands_35_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every word of Speech Commands v0.02 (35), 6 / 2 / 2 short clips per split, noise."""
    from kwsnet.data.speech_commands import ALL_WORDS

    root = tmp_path_factory.mktemp("sc35")
    return write_speech_commands(root, {w: (6, 2, 2) for w in ALL_WORDS})


@pytest.fixture
def shared_speech_commands() -> Path:
    root = SHARED_DATA / "speech_commands_tts"
    if not root.is_dir():
        pytest.skip(f"{root} is absent: the shared real-audio fixtures are not beside the repo")
    return root
