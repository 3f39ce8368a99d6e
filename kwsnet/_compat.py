"""Every use of a private Lightning / torchmetrics / wandb attribute, in one place.

kwsnet reaches inside its frameworks where their public API cannot do the job: an exact
mid-epoch resume (the epoch's running means, the metric states), logging only on the steps the
trainer writes, LightningCLI hooks with no public seam, and closing a wandb run only if one was
started. Each access is a small function here, and ``PRIVATE_API`` lists them all with what
kwsnet needs them for. ``tests/test_compat.py`` checks each against the installed versions and
names the one that an upgrade broke; ``pyproject.toml`` bounds the versions to those tested.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning.pytorch as pl
import torch

__all__ = [
    "PRIVATE_API",
    "CLI_OVERRIDES",
    "check_private_api",
    "epoch_results",
    "eval_dataloaders",
    "epoch_mean_entries",
    "metric_states",
    "mark_metric_updated",
    "metric_update_count",
    "set_metric_update_count",
    "should_update_logs",
    "started_wandb_run",
]

# LightningCLI methods ``kwsnet.cli.KwsCLI`` overrides (name → the parameters it relies on).
CLI_OVERRIDES: dict[str, tuple[str, ...]] = {
    "_instantiate_trainer": ("config", "callbacks"),
    "_run_subcommand": ("subcommand",),
    "_prepare_subcommand_kwargs": ("subcommand",),
    "_get": ("config", "key"),
}

# what is used → why kwsnet needs it
PRIVATE_API: dict[str, str] = {
    "FitLoop.epoch_loop._results": "the epoch's logged running means, saved for an exact resume",
    "logger_connector.result._ResultMetric (value, cumulated_batch_size, meta.on_epoch)": (
        "the running sum and count of one logged epoch mean"
    ),
    "torchmetrics.Metric._defaults": "the names of a metric's states, saved for an exact resume",
    "torchmetrics.Metric._update_count": "a restored metric counts as updated (compute() works)",
    "Trainer._logger_connector.should_update_logs": "log step values only on logging steps",
    "WandbLogger._experiment": "close the wandb run only if this logger started one",
    "_EvaluationLoop._combined_loader": (
        "the running val/test loop's dataloaders (its sampler's DDP padding is left out of the "
        "statistics); Trainer.val_dataloaders covers only fit's val loop"
    ),
    **{f"LightningCLI.{name}": "KwsCLI overrides it" for name in CLI_OVERRIDES},
}


def epoch_results(trainer: pl.Trainer) -> Any:
    """The training epoch's ``_ResultCollection`` (a dict of key → ``_ResultMetric``)."""
    return trainer.fit_loop.epoch_loop._results


def epoch_mean_entries(trainer: pl.Trainer) -> dict[str, Any]:
    """The ``_ResultMetric`` entries of the training epoch that accumulate an epoch mean
    (``value`` is the running sum, ``cumulated_batch_size`` the count)."""
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric

    return {
        key: m
        for key, m in epoch_results(trainer).items()
        if isinstance(m, _ResultMetric) and m.meta.on_epoch and hasattr(m, "cumulated_batch_size")
    }


def eval_dataloaders(trainer: pl.Trainer, stage: str) -> Any:
    """The dataloader(s) of the ``val`` or ``test`` loop now running (``validate`` after
    ``fit`` on one trainer: the validate loop's, not fit's); ``None`` before it has them."""
    from lightning.pytorch.trainer.states import TrainerFn

    if stage == "test":
        return trainer.test_dataloaders
    if trainer.state.fn == TrainerFn.VALIDATING:
        loop: Any = trainer.validate_loop
    else:
        loop = trainer.fit_loop.epoch_loop.val_loop
    combined = getattr(loop, "_combined_loader", None)
    return combined.iterables if combined is not None else None


def metric_states(metric: Any) -> dict[str, Any]:
    """A torchmetrics ``Metric``'s states by name (tensors or lists)."""
    return {k: getattr(metric, k) for k in metric._defaults}


def mark_metric_updated(metric: Any) -> None:
    """Make a metric whose states were set by hand count as updated, so ``compute()`` runs
    without torchmetrics' 'compute called before update' warning."""
    metric._update_count = max(metric._update_count, 1)


def metric_update_count(metric: Any) -> int:
    """How many times a torchmetrics ``Metric`` was updated (saved before a step that may be
    undone: ``DivergenceGuard``'s skip)."""
    return int(metric._update_count)


def set_metric_update_count(metric: Any, count: int) -> None:
    """Put back a ``Metric``'s update count (with its states restored by hand)."""
    metric._update_count = int(count)


def should_update_logs(trainer: pl.Trainer) -> bool:
    """Whether the trainer writes this training step's logged values to the logger."""
    return bool(trainer._logger_connector.should_update_logs or trainer.fast_dev_run)


def started_wandb_run(logger: Any) -> Any | None:
    """The wandb run a ``WandbLogger`` has started, or ``None`` (reading ``logger.experiment``
    would start one just to close it)."""
    return getattr(logger, "_experiment", None)


def check_private_api() -> list[str]:
    """What of ``PRIVATE_API`` the installed versions no longer provide (empty: all there)."""
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.loggers import WandbLogger
    from torchmetrics import Metric

    problems: list[str] = []
    try:
        from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric
    except ImportError as exc:
        problems.append(f"logger_connector.result._ResultMetric: {exc}")
    else:
        from lightning.pytorch.trainer.connectors.logger_connector.result import _Metadata, _Sync

        meta = _Metadata(fx="training_step", name="probe", on_step=False, on_epoch=True)
        meta.sync = _Sync()  # type: ignore[assignment]
        m = _ResultMetric(meta, is_tensor=True)
        m.update(torch.tensor(2.0), 4)
        if not (m.meta.on_epoch and hasattr(m, "cumulated_batch_size") and float(m.value) == 8.0):
            problems.append("_ResultMetric no longer keeps value (sum) and cumulated_batch_size")
    loop = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    if not hasattr(loop.fit_loop.epoch_loop, "_results"):
        problems.append("FitLoop.epoch_loop._results is gone")
    for eval_loop in (loop.validate_loop, loop.fit_loop.epoch_loop.val_loop):
        if not hasattr(eval_loop, "_combined_loader"):
            problems.append(f"{type(eval_loop).__name__}._combined_loader is gone")
    connector = getattr(loop, "_logger_connector", None)
    if connector is None or not hasattr(type(connector), "should_update_logs"):
        problems.append("Trainer._logger_connector.should_update_logs is gone")

    class _Probe(Metric):
        def __init__(self) -> None:
            super().__init__()
            self.add_state("n", torch.zeros(()), dist_reduce_fx="sum")

        def update(self) -> None:
            self.n += 1

        def compute(self) -> torch.Tensor:
            return self.n

    probe = _Probe()
    if list(getattr(probe, "_defaults", {})) != ["n"]:
        problems.append("torchmetrics.Metric._defaults no longer lists the states")
    if not isinstance(getattr(probe, "_update_count", None), int):
        problems.append("torchmetrics.Metric._update_count is gone")
    if "_experiment" not in vars(WandbLogger(offline=True, save_dir=None, project="probe")):
        problems.append("WandbLogger._experiment is gone")
    for name, params in CLI_OVERRIDES.items():
        method = getattr(LightningCLI, name, None)
        if method is None:
            problems.append(f"LightningCLI.{name} is gone")
            continue
        have = list(inspect.signature(method).parameters)[1:]
        if list(params) != have[: len(params)]:
            problems.append(f"LightningCLI.{name} takes {have}, KwsCLI expects {list(params)}")
    return problems
