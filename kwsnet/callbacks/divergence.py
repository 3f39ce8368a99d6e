"""Stop (or skip) on a non-finite training loss, so a diverged run fails loudly.

A NaN or infinite loss left alone turns every weight into NaN within one optimizer step, and
the run goes on to "finish" with chance accuracy and exit code 0. ``DivergenceGuard`` checks
the loss and the gradients before each optimizer step, with one host sync per step (one
combined on-device flag; a sync per check would stall an accelerator twice per step):

- ``action: stop`` (default) raises ``DivergenceError`` before the step, naming the step and
  the last finite loss; the process exits non-zero and the sweep ledger records a failure;
  the weights and checkpoints stay those of the last finite step.
- ``action: skip`` drops the batch's gradients (the optimizer skips parameters whose ``grad``
  is ``None``, so Adam's moments and step count stay untouched) and logs
  ``train/skipped_batches``; ``max_consecutive_skips`` non-finite batches in a row still stop
  the run. The forward pass of the skipped batch also changed state outside the parameters:
  BatchNorm running statistics (a NaN batch makes them NaN, and every later eval output with
  them), kwsnet's running-average norms and warm-up counters, and the epoch's training
  statistics (``train/loss`` and ``train/acc`` would include the non-finite loss). So with
  ``skip`` the guard copies the module's buffers and its torchmetrics states before each
  optimizer step's first micro-batch (one on-device copy into preallocated tensors, no host
  sync) and copies them back when that step is skipped: the skipped batch leaves no trace.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import Metric

from kwsnet._compat import metric_states, metric_update_count, set_metric_update_count

__all__ = ["DivergenceGuard", "DivergenceError"]


class DivergenceError(RuntimeError):
    """Training diverged: a non-finite loss or gradient (the message names the step)."""


class DivergenceGuard(pl.Callback):
    """Stop or skip on a NaN/Inf training loss (or gradient).

    Args:
        action: ``stop`` (default: raise ``DivergenceError``, exit non-zero) or ``skip`` (drop
            the batch's optimizer step).
        max_consecutive_skips: with ``skip``, stop after this many non-finite batches in a row
            (default 20).
        check_grads: also treat non-finite gradients as divergence (default True; ignored under
            ``16-mixed`` precision, where the grad scaler handles overflow itself).
    """

    def __init__(
        self,
        action: Literal["stop", "skip"] = "stop",
        max_consecutive_skips: int = 20,
        check_grads: bool = True,
    ) -> None:
        if action not in ("stop", "skip"):
            raise ValueError(f"divergence.action must be 'stop' or 'skip', got {action!r}")
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
        self.action = action
        self.max_consecutive_skips = max_consecutive_skips
        self.check_grads = check_grads
        # (global step, loss) of the last finite step; the loss stays a tensor until read
        self.last_finite: tuple[int, float | torch.Tensor] | None = None
        self.skipped = 0
        self._consecutive = 0
        self._loss: torch.Tensor | None = None  # this step's (last micro-batch's) loss
        self._loss_ok: torch.Tensor | None = None  # all micro-batch losses finite (on device)
        # skip: the module state the forward passes of one optimizer step may change (buffers,
        # metric states), and copies of it from before that step's first micro-batch
        self._holders: _Holders | None = None  # where those tensors live (found once per fit)
        self._live: list[torch.Tensor] = []
        self._saved: list[torch.Tensor] = []
        self._saved_counts: list[int] = []
        self._snapshot_taken = False

    def _where(self, trainer: pl.Trainer) -> str:
        loop = trainer.fit_loop.epoch_loop
        return (
            f"global step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {loop.batch_idx})"
        )

    def _last(self) -> str:
        if self.last_finite is None:
            return "no finite loss was seen before"
        step, loss = self.last_finite
        return f"the last finite loss was {float(loss):.6g} at global step {step}"

    def _diverged(self, trainer: pl.Trainer, what: str) -> None:
        msg = (
            f"DivergenceGuard: {what} at {self._where(trainer)}; {self._last()}. "
            "Lower the learning rate, clip gradients (--trainer.gradient_clip_val) or set "
            "--divergence.action skip"
        )
        raise DivergenceError(msg)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._holders = None  # a new fit: find the module's state again

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._snapshot_taken = False  # an optimizer step never spans two epochs

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Once per optimizer step (its first micro-batch under gradient accumulation).
        if self.action == "skip" and not self._snapshot_taken:
            self._snapshot(pl_module)
            self._snapshot_taken = True

    def _snapshot(self, module: nn.Module) -> None:
        """Copy ``module``'s buffers and metric states into the saved tensors (allocated
        again only when the tensors were replaced: a metric reset at epoch start)."""
        if self._holders is None:
            self._holders = _Holders(module)
        try:
            live = self._holders.tensors()
        except AttributeError:  # a buffer was removed since: look again
            self._holders = _Holders(module)
            live = self._holders.tensors()
        same = len(live) == len(self._live) and all(
            a is b for a, b in zip(live, self._live, strict=True)
        )
        with torch.no_grad():
            if same:
                _copy_all(self._saved, live)
            else:
                self._live, self._saved = live, [t.detach().clone() for t in live]
        self._saved_counts = [metric_update_count(m) for m in self._holders.metrics]

    def _restore(self) -> None:
        """Put back the state of the last snapshot (the skipped step's forwards undone)."""
        with torch.no_grad():
            _copy_all(self._live, self._saved)
        if self._holders is not None:
            for metric, count in zip(self._holders.metrics, self._saved_counts, strict=True):
                set_metric_update_count(metric, count)

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        # No sync here: the flag is read once, in on_before_optimizer_step.
        loss = loss.detach()
        ok = torch.isfinite(loss)
        self._loss_ok = ok if self._loss_ok is None else self._loss_ok & ok
        self._loss = loss

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        loss_ok, self._loss_ok = self._loss_ok, None
        snapshot, self._snapshot_taken = self._snapshot_taken, False  # the next step takes one
        flag = loss_ok
        if self.check_grads and "16-mixed" not in str(trainer.precision):
            grads = [p.grad for g in optimizer.param_groups for p in g["params"]]
            grads = [g for g in grads if g is not None]
            if grads:
                # The norm of all gradients is finite iff every entry is.
                grads_ok = torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum())
                flag = grads_ok if flag is None else flag & grads_ok
        if flag is None or bool(flag):  # the one host sync of the step
            self._consecutive = 0
            if self._loss is not None:
                self.last_finite = (trainer.global_step, self._loss)
            return
        if loss_ok is not None and not bool(loss_ok):
            bad = f"training loss is {float(self._loss)}"  # set with loss_ok
        else:
            bad = "a gradient is not finite"
        if self.action == "stop":
            self._diverged(trainer, bad)
        self.skipped += 1
        self._consecutive += 1
        if self._consecutive >= self.max_consecutive_skips:
            self._diverged(trainer, f"{bad} for {self._consecutive} batches in a row")
        optimizer.zero_grad(set_to_none=True)  # the optimizer skips params without a grad
        if snapshot:
            self._restore()  # buffers (BatchNorm statistics) and epoch stats as before the batch
        pl_module.log("train/skipped_batches", float(self.skipped), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        last = self.last_finite
        return {
            "skipped": self.skipped,
            "last_finite": (last[0], float(last[1])) if last is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        last = state_dict.get("last_finite")
        self.last_finite = (int(last[0]), float(last[1])) if last else None


class _Holders:
    """Where the state a training forward may change in place, besides the parameters, lives
    in ``module``: every buffer (BatchNorm ``running_mean``/``running_var``/
    ``num_batches_tracked``, kwsnet's running-average norms, warm-up step counters) and the
    tensor states of every torchmetrics ``Metric`` (the epoch's training statistics), with
    the metrics themselves (their update counts). Found once; ``tensors()`` reads the current
    tensors in a few microseconds (a metric reset replaces its state tensors). List states
    (``cat`` metrics) grow rather than change and are not covered."""

    def __init__(self, module: nn.Module) -> None:
        self.slots: list[tuple[Any, str]] = []
        self.metrics: list[Metric] = []
        for sub in module.modules():
            self.slots += [(sub, n) for n, b in sub.named_buffers(recurse=False) if b is not None]
            if isinstance(sub, Metric):
                self.metrics.append(sub)
                # tensor states (``add_state``); list states of ``cat`` metrics are not covered
                self.slots += [
                    (sub, n) for n, v in metric_states(sub).items() if isinstance(v, torch.Tensor)
                ]

    def tensors(self) -> list[torch.Tensor]:
        """The current tensors, in slot order."""
        return [getattr(obj, name) for obj, name in self.slots]


def _copy_all(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """``d.copy_(s)`` for every pair: one fused copy per device and dtype."""
    if dst:
        torch._foreach_copy_(dst, src)
