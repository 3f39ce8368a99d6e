"""wandb artifacts: a fit's best checkpoint and every exported model are logged to wandb, and an
offline run holds them (read back from its ``run-*.wandb`` file, ``read_offline_run``)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from kwsnet.cli import main
from kwsnet.tracking import logger_turned_off, read_offline_run


def _md5_b64(path: Path) -> str:
    """wandb's digest of a file: its md5, base64."""
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def _training_run(root: Path) -> tuple[Path, str]:
    """The offline run folder of the fit in ``root`` and its wandb run id."""
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    return run_dir, run_dir.name.rsplit("-", 1)[1]


def test_best_checkpoint_is_a_model_artifact(trained_raw_run: Path) -> None:
    summary = json.loads((trained_raw_run / "summary.json").read_text())
    best = Path(summary["best_checkpoint"])
    run_dir, run_id = _training_run(trained_raw_run)
    run = read_offline_run(run_dir)
    (art,) = [a for a in run["artifacts"] if a["type"] == "model"]
    assert art["name"] == f"model-{run_id}"
    assert "best" in art["aliases"]
    meta = art["metadata"]
    assert meta["monitor"] == "val/acc" and meta["mode"] == "max"
    assert meta["score"] == pytest.approx(summary["metrics"]["val/acc_best"])
    assert meta["epoch"] == summary["best_epoch"]
    assert meta["checkpoint"] == os.path.abspath(best)
    assert meta["provenance"]["git_commit"] == summary["provenance"]["git_commit"]
    (entry,) = art["files"]
    assert entry["path"] == best.name
    assert entry["size"] == best.stat().st_size
    assert entry["digest"] == _md5_b64(best)
    assert art["manifest_file"] is None
    # the fit names the artifact in summary.json and in the wandb summary
    assert summary["model_artifact"] == f"kwsnet/model-{run_id}:best"
    assert run["summary"]["model_artifact"] == summary["model_artifact"]
    # and its checkpoints name the run (what `kwsnet export` logs against)
    ckpt = torch.load(best, map_location="cpu", weights_only=True, mmap=True)
    assert ckpt["kwsnet"]["wandb"]["id"] == run_id
    assert ckpt["kwsnet"]["wandb"]["project"] == "kwsnet"


def test_export_logs_an_exported_model_artifact(
    trained_raw_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`kwsnet export` of a checkpoint trained with wandb: a job_type=export run beside the
    exported file holds it as an ``exported-model`` artifact; the training run is untouched."""
    best = Path(json.loads((trained_raw_run / "summary.json").read_text())["best_checkpoint"])
    _, train_id = _training_run(trained_raw_run)
    out = tmp_path / "m.kwsn"
    assert main(["export", "--ckpt_path", str(best), "--out", str(out)]) == 0
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    run = read_offline_run(run_dir)
    assert run["complete"]
    assert run["config"]["source_run"] == train_id
    assert run["config"]["format"] == "cnative" and run["config"]["dtype"] == "float32"
    (art,) = run["artifacts"]
    assert art["type"] == "exported-model"
    assert art["name"] == f"model-{train_id}-cnative-float32"
    assert "latest" in art["aliases"]
    meta = art["metadata"]
    assert meta["format"] == "cnative" and meta["dtype"] == "float32"
    assert meta["source_checkpoint"] == os.path.abspath(best)
    assert meta["source_run"] == train_id and meta["bytes"] == out.stat().st_size
    (entry,) = art["files"]
    assert entry["path"] == "m.kwsn" and entry["size"] == out.stat().st_size
    assert entry["digest"] == _md5_b64(out)
    assert f"logged wandb artifact {art['name']}" in capsys.readouterr().out
    assert len(list((trained_raw_run / "wandb").glob("offline-run-*"))) == 1


@pytest.mark.parametrize(
    "off",
    [["--trainer.logger", "false"], ["--trainer.logger=false"], "WANDB_MODE=disabled"],
    ids=["logger-false", "logger=false", "wandb-disabled"],
)
def test_export_logs_nothing_without_wandb(
    trained_raw_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, off
) -> None:
    best = json.loads((trained_raw_run / "summary.json").read_text())["best_checkpoint"]
    out = tmp_path / "m.kwsn"
    args = ["export", "--ckpt_path", best, "--out", str(out)]
    if isinstance(off, str):
        monkeypatch.setenv("WANDB_MODE", "disabled")
    else:
        args += off
    assert main(args) == 0 and out.is_file()
    assert not (tmp_path / "wandb").exists()


def test_logger_turned_off_reads_the_last_override() -> None:
    assert logger_turned_off(["--trainer.logger", "false"])
    assert logger_turned_off(["--trainer.logger=False"])
    assert not logger_turned_off(["--data.root", "x"])
    assert not logger_turned_off(["--trainer.logger", "null"])  # Lightning's default logger
    assert not logger_turned_off(["--trainer.logger", "false", "--trainer.logger", "lightning"])
