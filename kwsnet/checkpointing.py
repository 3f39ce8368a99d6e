"""Checkpoint IO that survives a full disk or a kill, and the extra state an exact resume needs.

``AtomicCheckpointIO`` (the CLI's default ``CheckpointIO`` plugin) serialises a checkpoint to
memory, writes it to a temp file beside the target, ``fsync``s it and only then renames it over
the target, so a failed or interrupted save (``ENOSPC``, SIGKILL) leaves the previous
checkpoint intact and never a truncated one. Loading is ``weights_only=True`` unless the caller
asks otherwise, so a checkpoint from an untrusted source cannot run code.

``ResumeState`` (a callback the CLI adds to every run) saves the Python, NumPy and torch RNG
states and the partial sums of the training metrics and logged epoch means in each checkpoint,
and restores them on resume; Lightning saves neither, so without it a run resumed mid-epoch
draws different random numbers and reports train metrics over a partial epoch.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from kwsnet._compat import epoch_mean_entries, epoch_results, mark_metric_updated, metric_states
from kwsnet.fileio import atomic_write_bytes

__all__ = ["AtomicCheckpointIO", "ResumeState", "CheckpointLoadError"]


class CheckpointLoadError(RuntimeError):
    """A checkpoint file is missing, truncated or holds objects ``weights_only`` refuses."""


def _write_chunk(fd: int, data: memoryview) -> int:
    """One ``os.write`` (a seam: tests replace it to inject ``ENOSPC`` mid-write)."""
    return os.write(fd, data)


def _write_checkpoint_bytes(path: str | os.PathLike, data: memoryview) -> None:
    """``kwsnet.fileio.atomic_write_bytes`` through ``_write_chunk``; on error the previous
    file is untouched.

    Raises the ``OSError`` of the failed write (e.g. ``ENOSPC``) with the target named.
    """
    try:
        atomic_write_bytes(path, data, write=_write_chunk)
    except OSError as exc:
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise OSError(
            exc.errno, f"could not save checkpoint {path} ({reason}); the previous one is intact"
        ) from exc


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with crash-safe saves and ``weights_only`` loads by default."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        """Save ``checkpoint`` to ``path`` atomically (``storage_options`` is not supported)."""
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} does not support storage_options, got {storage_options}"
            )
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # fails before the disk is touched
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _write_checkpoint_bytes(path, buffer.getbuffer())

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load ``path``; ``weights_only`` defaults to True (tensors and plain containers only)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        safe = True if weights_only is None else weights_only
        try:
            return torch.load(path, map_location=map_location, weights_only=safe)
        except pickle.UnpicklingError as exc:
            hint = (
                " It holds objects other than tensors and plain containers; load it with "
                "--weights_only false only if you trust its source."
                if safe
                else ""
            )
            raise CheckpointLoadError(f"{path}: cannot load checkpoint ({exc}).{hint}") from exc
        except (RuntimeError, EOFError) as exc:
            raise CheckpointLoadError(
                f"{path}: not a readable checkpoint (truncated or corrupt?): {exc}"
            ) from exc


def _metric_states(module: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    from torchmetrics import Metric

    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, m in module.named_modules():
        if isinstance(m, Metric):
            states = metric_states(m)
            if all(isinstance(v, torch.Tensor) for v in states.values()):
                out[name] = {k: v.detach().clone().cpu() for k, v in states.items()}
    return out


def _logged_means(trainer: pl.Trainer) -> dict[str, dict[str, torch.Tensor]]:
    """Running sums of the epoch-mean values ``self.log`` has collected in this epoch."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, m in epoch_mean_entries(trainer).items():
        out[key] = {"value": m.value.detach().cpu(), "n": m.cumulated_batch_size.cpu()}
    return out


class ResumeState(pl.Callback):
    """Save and restore RNG states and training-metric sums, for bit-exact mid-epoch resumes.

    Args:
        metrics_attr: the ``LightningModule`` attribute holding per-stage metrics (default
            ``metrics``); only its ``train_`` entry is saved (val/test restart each run).
    """

    def __init__(self, metrics_attr: str = "metrics") -> None:
        self.metrics_attr = metrics_attr
        self._pending: dict[str, Any] | None = None
        self._means: dict[str, dict[str, torch.Tensor]] | None = None

    def _train_metrics(self, pl_module: pl.LightningModule) -> torch.nn.Module | None:
        metrics = getattr(pl_module, self.metrics_attr, None)
        if isinstance(metrics, torch.nn.ModuleDict) and "train_" in metrics:
            return metrics["train_"]
        return None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        np_state = np.random.get_state()
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": (
                str(np_state[0]),
                torch.from_numpy(np_state[1].astype(np.int64)),
                *(int(v) if isinstance(v, (int, np.integer)) else float(v) for v in np_state[2:]),
            ),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        train = self._train_metrics(pl_module)
        if train is not None:
            state["train_metrics"] = _metric_states(train)
        state["logged_means"] = _logged_means(trainer)
        checkpoint["kwsnet_resume"] = state

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Applied at train start: Lightning seeds and builds the model after loading states.
        self._pending = checkpoint.get("kwsnet_resume")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        python = state["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        train = self._train_metrics(pl_module)
        # Only a checkpoint saved mid-epoch carries partial sums the resumed epoch continues.
        if train is not None and trainer.fit_loop.restarting:
            modules = dict(train.named_modules())
            for name, states in state.get("train_metrics", {}).items():
                metric = modules.get(name)
                if metric is None:
                    continue
                for k, v in states.items():
                    setattr(metric, k, v.to(pl_module.device))
                mark_metric_updated(metric)
            self._means = state.get("logged_means") or None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        # The epoch's logged means restart at this batch; add the sums saved before the kill
        # (saved + this batch is the very addition the uninterrupted run made: bit-exact).
        means, self._means = self._means, None
        if not means:
            return
        results = epoch_results(trainer)
        for key, saved in means.items():
            m = results.get(key)
            if m is not None and hasattr(m, "cumulated_batch_size"):
                m.value = saved["value"].to(m.value.device) + m.value
                m.cumulated_batch_size = saved["n"].to(m.value.device) + m.cumulated_batch_size
