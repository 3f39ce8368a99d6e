"""Training diagnostics: activation statistics and histograms, gradient norms, every N steps.

Add it to a config's ``trainer.callbacks``
(``class_path: kwsnet.callbacks.diagnostics.Diagnostics``); no config has it by default.
Between logging steps it costs one modulo per batch: forward hooks are attached only for the
batch of a logging step and removed right after its forward pass.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch import nn

__all__ = ["Diagnostics"]

_SKIPPED = (nn.Identity, nn.modules.dropout._DropoutNd, nn.Flatten)


class Diagnostics(pl.Callback):
    """Log per-layer activation mean/std (and histograms) and per-parameter gradient norms.

    On every training step ``s`` with ``s % every_n_steps == 0`` (``s`` = ``global_step``) it
    records, for every leaf module except Identity/Dropout/Flatten, the first tensor output of
    the step's forward pass: ``diag/act/<module>/mean``, ``.../std`` and ``.../zero_frac`` (the
    fraction of exact zeros: dead ReLUs); and, before the optimizer step (gradients are
    unscaled there under AMP), ``diag/grad_norm/<parameter>`` and ``diag/grad_norm/total``.
    Scalars go to every logger at step ``s``. With ``histograms``, each activation is also
    logged as a histogram (``diag/act_hist/<module>``) when the logger can take one:
    ``wandb.Histogram`` for a WandbLogger, ``add_histogram`` for TensorBoard; other loggers
    (CSV) get the scalars only. A compact summary line is printed on rank zero.

    Args:
        every_n_steps: logging period in optimizer steps (default 100).
        histograms: log activation histograms where the logger supports them (default True).
        max_samples: values kept per activation for its histogram, an evenly strided subset
            (no RNG is drawn, so training randomness is unchanged) (default 4096).
        console: print the summary line (default True).
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        histograms: bool = True,
        max_samples: int = 4096,
        console: bool = True,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self.every_n_steps = every_n_steps
        self.histograms = histograms
        self.max_samples = max_samples
        self.console = console
        self._step: int | None = None  # the step being recorded
        self._last_logged: int | None = None
        self._handles: list[Any] = []
        self._acts: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._grads: dict[str, torch.Tensor] | None = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or step in (self._step, self._last_logged):
            return
        self._step, self._acts, self._grads = step, {}, None
        self._handles = [
            module.register_forward_hook(self._recorder(name))
            for name, module in pl_module.named_modules()
            if name and not any(module.children()) and not isinstance(module, _SKIPPED)
        ]

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._step is None or self._step != trainer.global_step:
            return
        self._remove_hooks()
        named = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        norms = torch.stack([g.detach().float().norm() for _, g in named]) if named else None
        self._grads = {n: norms[i] for i, (n, _) in enumerate(named)} if named else {}
        if norms is not None:
            self._grads["total"] = norms.square().sum().sqrt()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._step is None:
            return
        self._remove_hooks()  # the forward pass is over; only the first batch is recorded
        if self._grads is None:  # gradient accumulation: wait for the optimizer step
            return
        self._emit(trainer, pl_module, self._step)
        self._last_logged, self._step, self._acts, self._grads = self._step, None, {}, None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()

    def _recorder(self, name: str):
        def record(module: nn.Module, args: Any, out: Any) -> None:
            if name in self._acts:
                return
            out = out[0] if isinstance(out, (tuple, list)) and out else out
            if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                return
            with torch.no_grad():
                x = out.detach().float()
                stats = torch.stack([x.mean(), x.std(correction=0), (x == 0).float().mean()])
                sample = None
                if self.histograms:
                    flat = x.flatten()
                    stride = max(1, math.ceil(flat.numel() / self.max_samples))
                    sample = flat[::stride].cpu()
            self._acts[name] = (stats, sample)

        return record

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _emit(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        names = list(self._acts)
        stats = torch.stack([self._acts[n][0] for n in names]).cpu() if names else None
        metrics: dict[str, float] = {}
        for i, name in enumerate(names):
            mean, std, zero = stats[i].tolist()
            metrics[f"diag/act/{name}/mean"] = mean
            metrics[f"diag/act/{name}/std"] = std
            metrics[f"diag/act/{name}/zero_frac"] = zero
        grads: dict[str, float] = {}
        if self._grads:  # one device-to-host copy for all norms
            values = torch.stack(list(self._grads.values())).tolist()
            grads = dict(zip(self._grads, values, strict=True))
        metrics.update({f"diag/grad_norm/{n}": v for n, v in grads.items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if self.histograms and trainer.is_global_zero and names:
            hists = {f"diag/act_hist/{n}": self._acts[n][1] for n in names}
            for logger in trainer.loggers:
                _log_histograms(logger, hists, step)
        if self.console and names:
            pl_module.print(_summary(step, names, stats, grads))


def _log_histograms(logger: Any, hists: dict[str, torch.Tensor], step: int) -> None:
    # Loggers without histogram support get none: their scalars were already logged.
    if isinstance(logger, WandbLogger):
        import wandb

        payload: dict[str, Any] = {k: wandb.Histogram(v.numpy()) for k, v in hists.items()}
        payload["trainer/global_step"] = step
        logger.experiment.log(payload)
    elif isinstance(logger, TensorBoardLogger):
        for key, values in hists.items():
            logger.experiment.add_histogram(key, values, global_step=step)


def _summary(step: int, names: list[str], stats: torch.Tensor, grads: dict[str, float]) -> str:
    std, zero = stats[:, 1], stats[:, 2]
    lo, hi, dead = int(std.argmin()), int(std.argmax()), int(zero.argmax())
    line = (
        f"diag step {step}: act std min {std[lo]:.3g} ({names[lo]}) "
        f"median {std.median():.3g} max {std[hi]:.3g} ({names[hi]}); "
        f"zero_frac max {zero[dead]:.2f} ({names[dead]})"
    )
    per_param = {n: v for n, v in grads.items() if n != "total"}
    if per_param:
        worst = max(per_param, key=per_param.get)
        line += f"; grad norm total {grads['total']:.3g} max {per_param[worst]:.3g} ({worst})"
    return line
