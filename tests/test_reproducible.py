"""Data reproduce across processes: nothing an item holds depends on Python's hash seed.

``PYTHONHASHSEED`` differs between processes (and DDP ranks) unless pinned; a ``hash(str)``
in the data path made the ``_silence_`` clips of the standard 12-class split differ between
runs. These tests build the split in fresh processes with different hash seeds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kwsnet.data.datamodule import AudioDataModule

from .conftest import REPO

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

# Builds the 12-class Speech Commands source of argv[1] and prints one sha256 per split over
# its items (path, label, extra) and their decoded signals, fitted to 1 s as in a batch. Only
# the source and the decoder are imported (not Lightning): a process starts in ~2 s.
_DIGEST_SPLITS = """
import hashlib, sys
from kwsnet.data.audio import fit_length
from kwsnet.data.record import SourceArgs
from kwsnet.data.speech_commands import SpeechCommandsSource
src = SpeechCommandsSource(SourceArgs(
    root=sys.argv[1], words=["yes", "no"], include_unknown=True, include_silence=True,
))
for split in ("train", "val", "test"):
    h = hashlib.sha256()
    for item in src.items(split):
        h.update(repr((item.path, item.keyword, item.speaker, item.extra)).encode())
        h.update(fit_length(src.load(item), 16000, random_crop=False).numpy().tobytes())
    print(split, len(src.items(split)), h.hexdigest())
"""


def _split_digests(root: Path, hash_seeds: list[str]) -> list[list[str]]:
    """``[split, item count, digest]`` lines, built once in a new process per hash seed."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DIGEST_SPLITS, str(root)],
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in hash_seeds
    ]
    digests = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        digests.append(out.splitlines())
    return digests


def test_12_class_splits_are_identical_under_different_hash_seeds(
    speech_commands_tree: Path,
) -> None:
    first, second = _split_digests(speech_commands_tree, ["1", "2"])
    # yes/no x 2 clips per speaker (2 speakers in train, 1 in val, 1 in test), plus _unknown_
    # ("up") and _silence_ each ceil(10 % of the keyword clips) (TensorFlow's definition)
    assert [line.split()[:2] for line in first] == [["train", "10"], ["val", "6"], ["test", "6"]]
    assert first == second


def test_silence_clips_differ_by_split_seed_in_memory_and_on_disk(
    speech_commands_tree: Path, tmp_path: Path
) -> None:
    """With noise segments as silence (``silence_mode: noise``; the default, TensorFlow's, is
    clips of zeros) ``split_seed`` picks the segments, so it is part of the disk-cache key: a
    second run with another ``split_seed`` must not read the first run's segments back."""

    def silence(split_seed: int, cache_limit_mb: float | None) -> tuple[torch.Tensor, Path | None]:
        dm = AudioDataModule(
            source="speech_commands",
            root=str(speech_commands_tree),
            words=["yes"],
            include_silence=True,
            source_options={"silence_mode": "noise"},
            split_seed=split_seed,
            cache_limit_mb=cache_limit_mb,
            cache_dir=str(tmp_path / "cache"),
        )
        ds = dm._dataset("test")
        i = next(i for i, it in enumerate(ds.items) if it.extra[:1] == ("silence",))
        return ds[i]["audio"], ds.spill_path(i)

    fresh = {seed: silence(seed, None)[0] for seed in (1, 2)}
    assert not torch.equal(fresh[1], fresh[2])
    for seed in (1, 2):  # cache_limit_mb 0: every clip goes through the disk cache
        audio, path = silence(seed, 0)
        assert path is not None and path.is_file()
        assert torch.equal(audio, fresh[seed])
