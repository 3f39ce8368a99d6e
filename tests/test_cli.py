"""End-to-end: the real configs through the CLI on the small synthetic corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from kwsnet.cli import build_from_config, main
from kwsnet.errors import UsageError
from kwsnet.tracking import read_offline_run

from .conftest import (
    REPO,
    TINY_SYNTHETIC,
    TRAINED_EPOCHS,
    learnable_cli_args,
    tiny_cli_args,
    write_tone,
)

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

CONFIG = str(REPO / "configs" / "kws_raw.yaml")


def tiny_args(root: Path, *extra: str, epochs: int = 8) -> list[str]:
    return [
        *tiny_cli_args(root, epochs),
        "--trainer.logger.init_args.save_dir",
        str(root),
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(trained_raw_run: Path) -> Path:
    """One fit + test run with the default wandb logger (offline), on a task every CPU kernel
    path learns (``LEARNABLE_SYNTHETIC``): the session's shared run (conftest)."""
    return trained_raw_run


def test_fit_and_test_beat_chance(trained: Path):
    summary = json.loads((trained / "summary.json").read_text())
    # 3 classes (chance 0.33) on 24 test clips; the run reaches ~1.0 on every kernel path
    assert summary["metrics"]["test/acc"] >= 0.75
    assert summary["metrics"]["test/loss"] < 0.5 * torch.log(torch.tensor(3.0)).item()
    assert summary["collapse"]["test"]["n_pred_classes"] == 3
    assert Path(summary["best_checkpoint"]).is_file()
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert Path(summary["last_checkpoint"]).name == "last.ckpt"
    assert (trained / "confusion_matrix.csv").read_text().startswith("true\\pred,word0")
    assert summary["seed"] == 42


def test_offline_wandb_run_holds_config_and_metrics(trained: Path):
    runs = list((trained / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run = read_offline_run(runs[0])
    cfg = run["config"]
    assert cfg["seed_everything"] == 42
    assert cfg["model"]["backbone"]["init_args"]["norm_placement"] == "per_conv"
    assert cfg["data"]["source_options"]["num_words"] == 3
    assert cfg["kwsnet"]["kwsnet_version"] and cfg["kwsnet"]["git_commit"]
    # the run names the code and machine that made it (kwsnet.tracking.provenance)
    assert cfg["kwsnet"]["torch_version"] == str(torch.__version__)
    assert cfg["kwsnet"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert cfg["kwsnet"]["num_threads"] >= 1 and "git_dirty" in cfg["kwsnet"]
    val_acc = [h["val/acc"] for h in run["history"] if "val/acc" in h]
    assert len(val_acc) == TRAINED_EPOCHS
    assert any("test/acc" in h for h in run["history"])
    assert run["summary"]["best_checkpoint"].endswith(".ckpt")


def test_summary_holds_the_tested_checkpoints_val_score(trained: Path):
    """``val/acc`` in summary.json is the last epoch's; ``val/acc_best`` is the score of the
    checkpoint that was tested: the first epoch with the highest logged val/acc."""
    summary = json.loads((trained / "summary.json").read_text())
    run = read_offline_run(next((trained / "wandb").glob("offline-run-*")))
    val_acc = [h["val/acc"] for h in run["history"] if "val/acc" in h]
    assert summary["metrics"]["val/acc"] == pytest.approx(val_acc[-1])
    assert summary["metrics"]["val/acc_best"] == pytest.approx(max(val_acc))
    assert summary["best_epoch"] == val_acc.index(max(val_acc))
    ckpt = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert float(state["best_model_score"]) == pytest.approx(summary["metrics"]["val/acc_best"])


def test_offline_run_read_while_being_written(trained: Path, tmp_path: Path):
    """A reader racing wandb's writer sees a cut-off tail record: it reads the records before
    it (run not complete) instead of failing on the partial one."""
    run_dir = next((trained / "wandb").glob("offline-run-*"))
    src = next(run_dir.glob("run-*.wandb"))
    blob = src.read_bytes()
    full = read_offline_run(run_dir)
    assert full["complete"]
    seen = []
    for cut in (len(blob) // 3, len(blob) // 2, len(blob) - 5):
        part = tmp_path / str(cut)
        part.mkdir()
        (part / src.name).write_bytes(blob[:cut])
        run = read_offline_run(part)
        assert not run["complete"]
        seen.append(len(run["history"]))
    assert seen == sorted(seen) and seen[-1] <= len(full["history"])


def test_checkpoint_stores_config_and_rebuilds(trained: Path):
    summary = json.loads((trained / "summary.json").read_text())
    ckpt = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    stored = yaml.safe_load(ckpt["kwsnet"]["config"])
    assert stored["seed_everything"] == 42
    model, dm = build_from_config(None, summary["best_checkpoint"])
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        acc = (model(batch["audio"], batch["lengths"]).argmax(-1) == batch["label"]).float().mean()
    assert acc >= 0.75  # the rebuilt model is the trained one (chance: 0.33)


def test_checkpoint_from_another_architecture_is_refused(trained: Path):
    summary = json.loads((trained / "summary.json").read_text())
    with pytest.raises(ValueError, match="does not match the model"):
        build_from_config(
            CONFIG,
            summary["best_checkpoint"],
            [
                "--model.backbone.init_args.channels",
                "[8,16,32]",
                "--data.source_options",
                TINY_SYNTHETIC,
            ],
        )


def test_resume_from_last_checkpoint(tmp_path: Path):
    root = tmp_path / "resumed"
    main(["fit", *tiny_args(root, "--trainer.logger", "false", epochs=2)])
    first = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 2 * 6  # 2 epochs of 96 clips in batches of 16
    csv = [
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "log"),
    ]
    main(["fit", *tiny_args(root, *csv, "--ckpt_path", "last", epochs=4)])
    second = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert second["global_step"] == 4 * 6
    # the resumed run trained epochs 2 and 3 only: it did not start over
    rows = next((tmp_path / "log").rglob("metrics.csv")).read_text().splitlines()
    header = rows[0].split(",")
    epochs = {
        int(float(r.split(",")[header.index("epoch")]))
        for r in rows[1:]
        if r.split(",")[header.index("val/acc")]
    }
    assert epochs == {2, 3}


def test_csv_logger_override_and_random_seed_is_recorded(tmp_path: Path):
    root = tmp_path / "csv"
    main(
        [
            "fit",
            *tiny_args(
                root,
                "--trainer.logger",
                "lightning.pytorch.loggers.CSVLogger",
                "--trainer.logger.init_args.save_dir",
                str(root),
                "--seed_everything",
                "true",
                "--test_after_fit",
                "false",
                epochs=1,
            ),
        ]
    )
    metrics = list(root.rglob("metrics.csv"))
    assert metrics and "val/acc" in metrics[0].read_text()
    saved = yaml.safe_load(next(root.rglob("config.yaml")).read_text())
    assert isinstance(saved["seed_everything"], int)
    summary = json.loads((root / "summary.json").read_text())
    assert summary["seed"] == saved["seed_everything"]
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert yaml.safe_load(ckpt["kwsnet"]["config"])["seed_everything"] == saved["seed_everything"]


def test_config_typo_fails_before_training(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    cfg = yaml.safe_load(Path(CONFIG).read_text())
    cfg["model"]["backbone"]["init_args"]["norm_placment"] = "end"
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(UsageError, match="norm_placment"):
        main(["fit", "--config", str(bad), "--trainer.default_root_dir", str(tmp_path)])
    assert not (tmp_path / "checkpoints").exists()


def test_predict_on_wav_files(trained: Path, tmp_path: Path, capsys):
    summary = json.loads((trained / "summary.json").read_text())
    wavs = [write_tone(tmp_path / "in" / f"{i}.wav", freq=200.0 + 100 * i) for i in range(3)]
    out = tmp_path / "pred"
    main(
        [
            "predict",
            *learnable_cli_args(out),
            "--trainer.logger",
            "false",
            "--ckpt_path",
            summary["best_checkpoint"],
            "--data.predict_files",
            f"[{tmp_path / 'in'}]",
        ]
    )
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "path,pred,label,prob" and len(rows) == 4
    assert all(str(w) in (out / "predictions.csv").read_text() for w in wavs)
    assert "word" in capsys.readouterr().out


def test_test_with_ckpt_path_best_in_a_new_process(trained: Path, tmp_path: Path):
    """`test --ckpt_path best` after the fit process ended finds the run's best checkpoint."""
    summary = json.loads((trained / "summary.json").read_text())
    args = [*learnable_cli_args(trained), "--trainer.logger", "false", "--ckpt_path", "best"]
    main(["test", *args])
    again = json.loads((trained / "summary.json").read_text())
    assert again["metrics"]["test/acc"] == pytest.approx(summary["metrics"]["test/acc"])
    with pytest.raises(FileNotFoundError, match="summary.json"):
        main(
            [
                "test",
                *tiny_args(tmp_path / "empty", "--trainer.logger", "false"),
                "--ckpt_path",
                "best",
            ]
        )


def test_wandb_agent_runs_get_their_own_run_dir(tmp_path: Path, monkeypatch):
    """Runs started by `wandb agent` (WANDB_SWEEP_ID + WANDB_RUN_ID) never share a run dir."""
    from kwsnet.cli import KwsCLI

    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep1")
    monkeypatch.setenv("WANDB_RUN_ID", "run7")
    cli = KwsCLI(args=["--config", CONFIG, "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.trainer.default_root_dir == str(tmp_path / "run7")
    assert cli.trainer.logger.save_dir == str(tmp_path / "run7")
