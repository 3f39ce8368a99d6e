"""Per-epoch classification statistics in one on-device confusion matrix.

``ClassificationStats`` is what ``ClassifierModule`` keeps per stage (train/val/test): each
step adds one ``bincount`` of ``(label, pred)`` pairs and the batch's summed loss, on the
training device and without a host sync; the epoch's loss, accuracy and macro F1 are computed
once, at epoch end, from the counts. Per step this costs one small kernel instead of the
argument checks, stat-score updates and ``self.log`` bookkeeping of two torchmetrics objects
(``docs/performance.md``, framework-overhead row).

The values equal torchmetrics' ``MulticlassAccuracy(average="micro")`` and
``MulticlassF1Score(average="macro")``: macro F1 averages over the classes that occur in the
labels or the predictions (a class with no true, false-positive or false-negative count is
left out), with 0 for a class whose F1 is 0/0 (tests/test_classification_stats.py checks
both against torchmetrics).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["ClassificationStats", "accuracy_f1"]


def accuracy_f1(confmat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Micro accuracy and macro F1 of a confusion matrix ``[C, C]`` (rows true, cols pred)."""
    cm = confmat.float()  # float32: exact for counts below 2**24, and MPS has no float64
    tp = cm.diagonal()
    denom = cm.sum(0) + cm.sum(1)  # 2 tp + fp + fn per class
    present = denom > 0  # classes seen as a label or a prediction
    acc = tp.sum() / cm.sum().clamp(min=1)
    macro = (2 * tp / denom.clamp(min=1)).sum() / present.sum().clamp(min=1)
    return acc, macro


class ClassificationStats(Metric):
    """Confusion counts and summed loss of one stage's epoch.

    Args:
        num_classes: number of classes ``C``.

    States (summed across processes under DDP): ``confmat [C, C]`` int64 (rows: label,
    columns: prediction), ``loss_sum`` (sum over samples of the per-sample mean loss),
    ``count`` (samples).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    confmat: torch.Tensor
    loss_sum: torch.Tensor
    count: torch.Tensor

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), "sum")
        self.add_state("loss_sum", torch.zeros(()), "sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), "sum")

    def update(self, preds: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        """Add a batch: ``preds [B]`` and ``labels [B]`` class indices, ``loss`` its mean."""
        c = self.num_classes
        # No weights: unweighted bincount is deterministic on CUDA too.
        counts = torch.bincount(labels.reshape(-1) * c + preds.reshape(-1), minlength=c * c)
        self.confmat += counts.reshape(c, c)
        n = labels.numel()
        self.loss_sum += loss.detach().float() * n
        self.count += n

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"loss", "acc", "f1"}`` of everything added since the last reset (float32)."""
        acc, f1 = accuracy_f1(self.confmat)
        loss = self.loss_sum / self.count.clamp(min=1)
        return {"loss": loss, "acc": acc, "f1": f1}
