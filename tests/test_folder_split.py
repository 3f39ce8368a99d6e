"""The folder source's hash split: stable when files are added, near the requested fractions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from kwsnet.data.folder import FolderSource
from kwsnet.data.record import SourceArgs

SPLITS = ("train", "val", "test")


def _write(root: Path, rel: str) -> None:
    """A 10 ms silent wav at ``root / rel`` (the split never reads the audio)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(160, dtype=np.float32), 16000, subtype="PCM_16")


def _split_of(root: Path, **kwargs) -> dict[str, str]:
    """Each file's split (path relative to ``root`` → split name)."""
    source = FolderSource(SourceArgs(root=str(root), **kwargs))
    return {str(Path(it.path).relative_to(root)): s for s in SPLITS for it in source.items(s)}


def test_adding_files_moves_no_existing_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for cls in ("cat", "dog"):
        for i in range(50):
            _write(root, f"{cls}/clip{2 * i:03d}.wav")
    kwargs = {"val_fraction": 0.2, "test_fraction": 0.2}
    before = _split_of(root, **kwargs)
    assert len(before) == 100 and set(before.values()) == set(SPLITS)
    for i in range(5):  # new names sort in between the old ones
        _write(root, f"cat/clip{2 * i + 1:03d}.wav")
        _write(root, f"dog/clip{2 * i + 1:03d}.wav")
    after = _split_of(root, **kwargs)
    assert len(after) == 110
    moved = sorted(r for r in before if after[r] != before[r])
    assert moved == []


def test_fractions_speakers_and_seeds(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(400):
        _write(root, f"word/{i:04x}abcd_nohash_0.wav")
    for i in range(0, 400, 20):  # a second take of 20 speakers
        _write(root, f"word/{i:04x}abcd_nohash_1.wav")
    kwargs = {"val_fraction": 0.1, "test_fraction": 0.2}
    torch.manual_seed(0)
    split_of = _split_of(root, **kwargs)
    counts = {s: sum(v == s for v in split_of.values()) for s in SPLITS}
    assert abs(counts["val"] / 420 - 0.1) < 0.05 and abs(counts["test"] / 420 - 0.2) < 0.06
    # the ``_nohash_`` part is dropped: the takes of one speaker share a split
    for i in range(0, 400, 20):
        take0, take1 = (f"word/{i:04x}abcd_nohash_{k}.wav" for k in (0, 1))
        assert split_of[take0] == split_of[take1]
    torch.manual_seed(1)
    assert _split_of(root, **kwargs) == split_of  # not the training seed
    other = _split_of(root, split_seed=7, **kwargs)
    assert other != split_of  # split_seed salts the hash
    # a known speaker is hashed instead of the file name: all its clips share one split
    by_speaker = _split_of(root, options={"speaker_regex": r"^(\w{3})"}, **kwargs)
    for rel, split in by_speaker.items():  # 25 speakers of 16 or 17 clips
        assert split == by_speaker[f"word/{Path(rel).name[:3]}0abcd_nohash_0.wav"]
