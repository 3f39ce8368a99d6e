"""Collapse monitor: does the classifier still use all its classes?

A model that predicts fewer distinct classes than exist, or gives one class more than
``max_share`` of its predictions, has collapsed (the failure the end-LayerNorm raw-conv model
shows on ~40% of seeds). Logged every val/test epoch as ``{stage}/n_pred_classes``,
``{stage}/max_class_share`` and ``{stage}/collapsed`` (1.0 or 0.0), with a warning.

The per-class prediction counts come from the module's ``prediction_counts(stage)`` when it
has one (``ClassifierModule``: the column sums of its confusion matrix, summed over
processes, no per-batch host copy); otherwise from the ``preds`` each step returns.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from kwsnet.metrics.collapse import MAX_SHARE, collapse_stats

__all__ = ["CollapseMonitor"]


class CollapseMonitor(pl.Callback):
    """Track predicted-class coverage on validation and test.

    Args:
        max_share: a class share above this counts as collapse (default 0.9).
    """

    def __init__(self, max_share: float = MAX_SHARE) -> None:
        if not 0.0 < max_share <= 1.0:
            raise ValueError(f"collapse.max_share must be in (0, 1], got {max_share}")
        self.max_share = max_share
        self.counts: dict[str, torch.Tensor] = {}
        self.last: dict[str, dict[str, float]] = {}

    def _reset(self, stage: str, pl_module: pl.LightningModule) -> None:
        self.counts[stage] = torch.zeros(pl_module.num_classes, dtype=torch.long)

    def _update(self, stage: str, outputs: Any, pl_module: pl.LightningModule) -> None:
        if hasattr(pl_module, "prediction_counts"):
            return  # counted by the module itself
        if isinstance(outputs, dict) and "preds" in outputs and stage in self.counts:
            preds = outputs["preds"].detach().cpu()
            self.counts[stage] += torch.bincount(preds, minlength=self.counts[stage].numel())

    def _finish(self, stage: str, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        own = getattr(pl_module, "prediction_counts", None)
        counts = own(stage) if own is not None else self.counts.get(stage)
        if counts is None or counts.sum() == 0 or trainer.sanity_checking:
            return
        counts = counts.cpu()
        stats = collapse_stats(counts.tolist(), self.max_share)
        self.last[stage] = stats | {"counts": counts.tolist()}
        for key, value in stats.items():
            # the module's counts are already global; per-rank counts are averaged
            pl_module.log(f"{stage}/{key}", value, on_epoch=True, sync_dist=own is None)
        if stats["collapsed"]:
            rank_zero_warn(
                f"{stage} predictions cover {int(stats['n_pred_classes'])} of "
                f"{counts.numel()} classes; the largest class takes "
                f"{stats['max_class_share']:.0%} (collapse: fewer classes than exist or one "
                f"above {self.max_share:.0%})"
            )

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset("val", pl_module)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._update("val", outputs, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._finish("val", trainer, pl_module)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._reset("test", pl_module)

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._update("test", outputs, pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish("test", trainer, pl_module)
