"""The CLI's progress bar: Lightning's ``RichProgressBar``, redrawn at most 10 times a second.

Lightning's ``RichProgressBar`` defaults to 100 redraws per second from a background thread
and recomputes the progress-bar metrics after every batch. Rendering holds the GIL, so with
small models (a raw_conv step of 64 clips takes ~12 ms on 2 cores) it cost about 10 % of
training throughput (``benchmarks/bench_overhead.py``: 0.82-0.87x of the hand loop with the
default bar, 0.93-0.99x without one). ``KwsProgressBar`` redraws at ``refresh_rate`` per
second and skips a batch's update when the last one is more recent than one redraw
interval, always updating the last batch of an epoch so the bar ends complete.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar

__all__ = ["KwsProgressBar"]


class KwsProgressBar(RichProgressBar):
    """``RichProgressBar`` with per-batch updates throttled to ``refresh_rate`` per second.

    Args:
        refresh_rate: redraws per second (default 10; Lightning's default is 100).
        leave, theme, console_kwargs: as for ``RichProgressBar``.
    """

    def __init__(self, refresh_rate: int = 10, leave: bool = False, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave, **kwargs)
        self._next_update = 0.0

    def _due(self, batch_idx: int, total: int | float | None) -> bool:
        """Whether this batch's update runs: the interval has passed or it ends the loop."""
        now = time.monotonic()
        last = total is not None and total != float("inf") and batch_idx + 1 >= total
        if last or now >= self._next_update or self.refresh_rate <= 0:
            self._next_update = now + 1.0 / max(self.refresh_rate, 1)
            return True
        return False

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(
                trainer, pl_module, outputs, batch, batch_idx, dataloader_idx
            )
