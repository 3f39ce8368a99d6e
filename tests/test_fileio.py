"""Atomic writes: an interrupted write leaves the previous file whole and no temp file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kwsnet import fileio
from kwsnet.fileio import atomic_write_bytes, atomic_write_text


def test_write_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "model.kwsn"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second, longer")
    assert path.read_bytes() == b"second, longer"
    atomic_write_text(tmp_path / "a.json", "{}\n")
    assert (tmp_path / "a.json").read_text() == "{}\n"


def test_failure_before_rename_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "model.kwsn"
    atomic_write_bytes(path, b"old model")

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # as if the process were interrupted between write and rename

    monkeypatch.setattr(fileio.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new model that never lands")
    assert path.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["model.kwsn"]


def test_interrupted_export_keeps_the_previous_model(tmp_path: Path, monkeypatch) -> None:
    import torch
    from torch import nn

    from kwsnet.export.cnative import write_model
    from kwsnet.export.layers import collect_named_layers

    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU())
    out = tmp_path / "m.kwsn"
    size = write_model(collect_named_layers(seq), (1, 64), out)
    before = out.read_bytes()
    assert len(before) == size
    nn.init.normal_(seq[0].weight)  # new weights: a different file

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_model(collect_named_layers(seq), (1, 64), out)
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["m.kwsn"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_respect_the_umask(tmp_path: Path, umask: int) -> None:
    """Summaries, exported models and checkpoints get the mode a plain write would give."""
    import stat

    import torch

    from kwsnet.checkpointing import AtomicCheckpointIO

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "summary.json", "{}")
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(2)}, tmp_path / "last.ckpt")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {name: 0o666 & ~umask for name in ("summary.json", "last.ckpt", "plain.txt")}
