"""Diagnostics callback: logs activation stats and gradient norms on step N, and only then."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kwsnet.callbacks.diagnostics import Diagnostics
from kwsnet.nn.norms import make_norm

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(1, 4, 3, padding=1),
            make_norm("channel", (4, 16)),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(64, 3),
        )

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(
    tmp_path: Path, callback: Diagnostics, steps: int, logger: object = None
) -> tuple[_Tiny, list[dict]]:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(8 * steps, 1, 16), torch.randint(0, 3, (8 * steps,)))
    model = _Tiny()
    trainer = pl.Trainer(
        max_steps=steps,
        logger=logger or CSVLogger(tmp_path),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(model, DataLoader(data, batch_size=8))
    if logger is not None:
        return model, []
    path = Path(trainer.logger.log_dir) / "metrics.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return model, rows


def test_logs_on_every_nth_step_only(tmp_path: Path, capsys) -> None:
    model, rows = _fit(tmp_path, Diagnostics(every_n_steps=2), steps=5)
    diag = [r for r in rows if r.get("diag/grad_norm/total")]
    assert [int(r["step"]) for r in diag] == [0, 2, 4]
    row = diag[0]
    for key in (
        "diag/act/net.0/std",
        "diag/act/net.1/mean",
        "diag/act/net.2/zero_frac",
        "diag/act/net.5/std",
        "diag/grad_norm/net.0.weight",
        "diag/grad_norm/net.5.bias",
    ):
        assert row[key] != "", key
    assert not any(k.startswith("diag/act/net.4") for k in row)  # dropout is skipped
    assert float(row["diag/act/net.1/std"]) == pytest.approx(1.0, abs=1e-3)
    assert 0.0 < float(row["diag/act/net.2/zero_frac"]) < 1.0
    # Hooks are gone after training, and a summary line was printed.
    assert all(not m._forward_hooks for m in model.modules())
    assert "diag step 0: act std min" in capsys.readouterr().out


def test_nothing_logged_between_periods(tmp_path: Path) -> None:
    _, rows = _fit(tmp_path, Diagnostics(every_n_steps=100, console=False), steps=3)
    diag = [r for r in rows if r.get("diag/grad_norm/total")]
    assert [int(r["step"]) for r in diag] == [0]


@pytest.mark.slow
def test_wandb_offline_run_gets_histograms(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    from kwsnet.tracking import read_offline_run, wait_for_offline_run

    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=str(tmp_path), project="kwsnet-test", offline=True)
    _fit(tmp_path, Diagnostics(every_n_steps=2, console=False), steps=3, logger=logger)
    logger.experiment.finish()
    (run_file,) = tmp_path.rglob("run-*.wandb")
    # finish() returns before the wandb service has flushed the file: wait for its exit record
    # (the run is complete), not for a guessed number of history rows.
    assert wait_for_offline_run(run_file.parent, timeout=120), f"{run_file} never completed"
    history = read_offline_run(run_file.parent)["history"]
    # wandb stores a histogram as nested keys: <key>/_type, <key>/bins, <key>/values.
    hists = [h for h in history if "diag/act_hist/net.0/_type" in h]
    assert [h["trainer/global_step"] for h in hists] == [0, 2]
    assert hists[0]["diag/act_hist/net.0/_type"] == "histogram"
    scalars = [h for h in history if "diag/grad_norm/total" in h]
    assert [h["trainer/global_step"] for h in scalars] == [0, 2]
