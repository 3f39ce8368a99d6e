"""ClassificationStats: torchmetrics' numbers from one confusion matrix, logged once per epoch."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from kwsnet.cli import main
from kwsnet.metrics.classification import ClassificationStats, accuracy_f1

from .conftest import tiny_cli_args

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


@pytest.mark.parametrize("seed", range(5))
def test_matches_torchmetrics_over_batches_with_absent_classes(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    c = 7
    stats = ClassificationStats(c)
    preds_all, labels_all, weighted, n = [], [], 0.0, 0
    for size in (5, 13, 1, 9):
        # classes 5 and 6 never occur as labels; 6 never as a prediction either
        labels = torch.randint(0, 5, (size,), generator=gen)
        preds = torch.randint(0, 6, (size,), generator=gen)
        loss = torch.rand((), generator=gen)
        stats.update(preds, labels, loss)
        preds_all.append(preds)
        labels_all.append(labels)
        weighted += float(loss) * size
        n += size
    p, t = torch.cat(preds_all), torch.cat(labels_all)
    out = stats.compute()
    acc = multiclass_accuracy(p, t, c, average="micro")
    f1 = multiclass_f1_score(p, t, c, average="macro")
    assert torch.allclose(out["acc"], acc, atol=1e-6)
    assert torch.allclose(out["f1"], f1, atol=1e-6)
    assert out["loss"].item() == pytest.approx(weighted / n, rel=1e-6)
    expected = torch.zeros(c, c, dtype=torch.long)
    for label, pred in zip(t.tolist(), p.tolist(), strict=True):
        expected[label, pred] += 1
    assert torch.equal(stats.confmat, expected)


def test_perfect_and_empty_matrices() -> None:
    acc, f1 = accuracy_f1(torch.diag(torch.tensor([3, 0, 2])))
    assert acc.item() == 1.0 and f1.item() == 1.0  # the absent class 1 is left out of the mean
    acc, f1 = accuracy_f1(torch.zeros(3, 3, dtype=torch.long))
    assert acc.item() == 0.0 and f1.item() == 0.0
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationStats(1)


def test_reset_clears_counts() -> None:
    stats = ClassificationStats(3)
    stats.update(torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor(1.0))
    stats.reset()
    assert int(stats.confmat.sum()) == 0 and int(stats.count) == 0


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fit_logs_step_loss_every_n_steps_and_epoch_metrics_once(tmp_path: Path) -> None:
    """Per-step logging only on the steps the trainer writes; epoch values once per epoch,
    and the logged val/acc equals the final model's accuracy on the validation split."""
    main(
        [
            "fit",
            *tiny_cli_args(tmp_path, epochs=2, batch_size=4),
            "--trainer.logger",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.logger.init_args.name",
            "csv",
            "--trainer.log_every_n_steps",
            "3",
            "--trainer.num_sanity_val_steps",
            "0",
            "--test_after_fit",
            "false",
        ]
    )
    rows = _rows(next(tmp_path.rglob("metrics.csv")))
    step_rows = [r for r in rows if r.get("train/loss_step")]
    epoch_rows = [r for r in rows if r.get("train/acc")]
    val_rows = [r for r in rows if r.get("val/acc")]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    steps = int(ckpt["global_step"])
    assert steps >= 6
    logged_steps = sorted(int(r["step"]) for r in step_rows)
    assert logged_steps == [s for s in range(steps) if (s + 1) % 3 == 0]
    assert len(epoch_rows) == 2 and len(val_rows) == 2
    for r in epoch_rows:
        assert 0.0 <= float(r["train/acc"]) <= 1.0 and float(r["train/loss"]) > 0

    # Re-evaluate the final weights on the validation split by hand.
    from kwsnet.cli import build_from_config

    model, dm = build_from_config(None, str(tmp_path / "checkpoints" / "last.ckpt"))
    dm.setup("validate")
    correct = total = 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            pred = model(batch["audio"], batch["lengths"]).argmax(-1)
            correct += int((pred == batch["label"]).sum())
            total += batch["label"].numel()
    assert float(val_rows[-1]["val/acc"]) == pytest.approx(correct / total, abs=1e-6)
