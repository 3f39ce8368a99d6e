"""Collapse monitor: has the classifier become a one-class or near-one-class predictor?

The rule is ``kwsnet.metrics.collapse.is_collapsed`` (one class above ``max_share`` of the
predictions, or at most half of the classes predicted), the one the sweep tables use. Logged
every val/test epoch as ``{stage}/n_pred_classes``, ``{stage}/max_class_share`` and
``{stage}/collapsed`` (1.0 or 0.0). A collapsed test or ``validate`` warns; while fitting,
validation is only logged (a healthy run predicts few classes in its first epochs), and the
warning comes once, when fitting ends, if the last validation epoch is still collapsed.

The per-class prediction counts are the module's ``prediction_counts(stage)``
(``ClassifierModule``: the column sums of its stage confusion matrix, summed over processes),
and the label counts its ``target_counts(stage)`` (the row sums: the classes the split holds,
which the rule counts), read once at epoch end.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn

from kwsnet.metrics.collapse import MAX_SHARE, collapse_stats, rule_text

__all__ = ["CollapseMonitor"]


class CollapseMonitor(pl.Callback):
    """Track predicted-class coverage on validation and test (of a module with
    ``prediction_counts(stage)``, as ``ClassifierModule`` has).

    Args:
        max_share: a class share above this counts as collapse (default 0.9).
    """

    def __init__(self, max_share: float = MAX_SHARE) -> None:
        if not 0.0 < max_share <= 1.0:
            raise ValueError(f"collapse.max_share must be in (0, 1], got {max_share}")
        self.max_share = max_share
        self.last: dict[str, dict[str, float]] = {}

    def _finish(self, stage: str, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        counts = pl_module.prediction_counts(stage)
        if counts is None or counts.sum() == 0:
            return
        counts = counts.cpu()
        true = pl_module.target_counts(stage) if hasattr(pl_module, "target_counts") else None
        true_counts = None if true is None else true.cpu().tolist()
        stats = collapse_stats(counts.tolist(), self.max_share, true_counts)
        self.last[stage] = stats | {"counts": counts.tolist()}
        if true_counts is not None:
            self.last[stage]["true_counts"] = true_counts
        for key, value in stats.items():
            # the counts are already summed over processes
            pl_module.log(f"{stage}/{key}", value, on_epoch=True)
        fitting = getattr(getattr(trainer, "state", None), "fn", None) == "fit"
        if stats["collapsed"] and not (fitting and stage == "val"):
            rank_zero_warn(self._message(stage))

    def _message(self, stage: str) -> str:
        stats = self.last[stage]
        return (
            f"{stage} predictions cover {int(stats['n_pred_classes'])} of "
            f"{int(stats.get('n_true_classes', len(stats['counts'])))} classes; the largest "
            "class takes "
            f"{stats['max_class_share']:.0%} ({rule_text(self.max_share)})"
        )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last = self.last.get("val")
        if last is not None and last["collapsed"]:
            rank_zero_warn(f"after {trainer.current_epoch} epochs, {self._message('val')}")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._finish("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish("test", trainer, pl_module)
