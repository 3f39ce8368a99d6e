"""wandb conventions: ``WANDB_MODE=disabled`` is honoured end to end; a run file wandb wrote in
another format ends the wait for it in seconds."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import pytest
import torch

from kwsnet.cli import main
from kwsnet.tracking import KwsWandbLogger, read_offline_run, resolve_offline, wait_for_offline_run

from .conftest import QUIET_FIT, tiny_cli_args


def test_wandb_mode_disabled_writes_no_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_offline(None) is False and resolve_offline(True) is False
    root = tmp_path / "run"
    no_logger = QUIET_FIT[QUIET_FIT.index("--trainer.logger") + 2 :]  # keep the config's wandb
    main(
        [
            "fit",
            *tiny_cli_args(root, epochs=1),
            *no_logger,
            "--trainer.logger.init_args.save_dir",
            str(root),
        ]
    )
    assert (root / "summary.json").is_file()
    summary = json.loads((root / "summary.json").read_text())
    assert summary["metrics"]["train/loss"] > 0
    assert "model_artifact" not in summary  # no wandb run, no artifact
    ckpt = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    assert "wandb" not in ckpt["kwsnet"]
    assert not list(tmp_path.rglob("*.wandb")) and not (root / "wandb").exists()
    # Lightning's offline switch would have rewritten it to "dryrun" for the whole process
    assert os.environ["WANDB_MODE"] == "disabled"
    assert not KwsWandbLogger(save_dir=str(tmp_path / "x"))._offline


_HEADER = b":W&B\xe1\xbe\x00"  # ident, magic, version


@pytest.mark.parametrize(
    ("blob", "raises"),
    [
        (b"not a wandb transaction log " * 40, True),
        (_HEADER + b"\xff" * 500, False),  # a first chunk longer than the file: no whole record
        (_HEADER + b"\x00" * 4 + b"\x03\x00\x01" + b"\xff\xff\xff", True),  # bad record
    ],
    ids=["no-header", "no-record", "bad-record"],
)
def test_unreadable_run_file_ends_the_wait_early(tmp_path: Path, blob: bytes, raises: bool) -> None:
    """A ``run-*.wandb`` that cannot be parsed at all (wandb changed its format) is given up on
    after ~2 s with a warning, not after the full timeout."""
    (tmp_path / "run-x.wandb").write_bytes(blob)
    if raises:
        with pytest.raises(ValueError):
            read_offline_run(tmp_path)
    else:  # for a reader, the first record could still be being written
        assert read_offline_run(tmp_path) == {
            "config": {},
            "history": [],
            "summary": {},
            "artifacts": [],
            "complete": False,
        }
    start = time.monotonic()
    with pytest.warns(UserWarning, match="cannot be read"):
        assert wait_for_offline_run(tmp_path, timeout=60) is False
    assert time.monotonic() - start < 10


def test_run_file_with_only_its_header_is_waited_for(tmp_path: Path) -> None:
    """A file wandb has only started (the header, no record yet) is not taken for another
    format: the wait runs to its timeout, without a warning."""
    (tmp_path / "run-x.wandb").write_bytes(_HEADER)
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wait_for_offline_run(tmp_path, timeout=1.0) is False
    assert time.monotonic() - start >= 1.0
