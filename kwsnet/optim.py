"""Optimizer parameter groups (weight decay on weights, none on norm scale/shift and biases) and
``WarmupDecay``, a per-step LR schedule sized from the run's length.

``WarmupDecay`` in a config (``ClassifierModule`` gives it the run's total optimizer steps)::

    lr_scheduler:
      class_path: kwsnet.optim.WarmupDecay
      init_args: {warmup_fraction: 0.05, final_factor: 0.1, shape: linear}
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from kwsnet.nn.norms import NORM_TYPES

__all__ = ["param_groups", "split_decay", "WarmupDecay", "DECAY_SHAPES"]

DecayShape = Literal["linear", "cosine", "constant"]
DECAY_SHAPES: tuple[str, ...] = get_args(DecayShape)


def split_decay(
    model: nn.Module, no_decay_norms: bool = True, no_decay_bias: bool = True
) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """Name the trainable parameters of ``model`` that get weight decay and those that don't.

    A parameter is exempt when it belongs to a norm layer (``kwsnet.nn.norms.NORM_TYPES``:
    torch's LayerNorm/GroupNorm/BatchNorm/InstanceNorm/RMSNorm and kwsnet's running-channel
    and layer-wise norms) and ``no_decay_norms`` is set, or when its name is ``bias`` and
    ``no_decay_bias`` is set. Everything else (conv/linear/embedding weights, attention
    projections, learnable scalars) is decayed. A parameter shared by several modules is
    listed once, under its first name.

    Returns:
        ``(decay, no_decay)``, each an ordered ``{qualified name: parameter}`` dict.
    """
    decay: dict[str, nn.Parameter] = {}
    no_decay: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{module_name}.{name}" if module_name else name
            exempt = (no_decay_norms and isinstance(module, NORM_TYPES)) or (
                no_decay_bias and name.endswith("bias")
            )
            (no_decay if exempt else decay)[full] = p
    return decay, no_decay


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay_norms: bool = True,
    no_decay_bias: bool = True,
) -> list[dict]:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed group.

    Args:
        model: the module whose parameters are optimised.
        weight_decay: decay of the decayed group.
        no_decay_norms: exempt norm scale/shift from decay (default True).
        no_decay_bias: exempt biases from decay (default True).

    Returns:
        optimizer groups ``[{"params", "weight_decay"}, ...]``; empty groups are dropped.
    """
    decay, no_decay = split_decay(model, no_decay_norms, no_decay_bias)
    groups = [
        {"params": list(decay.values()), "weight_decay": weight_decay},
        {"params": list(no_decay.values()), "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


class WarmupDecay(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up, then a linear or cosine decay to ``final_factor`` of the base LR, per step.

    The factor on every group's base LR at optimizer step ``s`` of ``N`` (``total_steps``):
    ``(s + 1) / W`` during the ``W = round(warmup_fraction * N)`` warm-up steps, then from 1 down
    to ``final_factor`` at the last step (``linear``: straight; ``cosine``: half a cosine;
    ``constant``: stays 1), and ``final_factor`` beyond ``N``. SpeechBrain's KWS/speaker recipes
    decay linearly (e.g. 1e-3 → 1e-4: ``final_factor`` 0.1) without warm-up.

    ``total_steps=None`` (the default in configs) means "the whole run": ``ClassifierModule``
    sets it from ``trainer.estimated_stepping_batches`` before the first step, so the schedule
    follows ``trainer.max_epochs`` and the batch size instead of a number typed twice. Step it
    every optimizer step (``ClassifierModule`` returns it with ``interval: step``).

    Args:
        optimizer: the optimizer whose groups' LRs are scheduled.
        warmup_fraction: share of the run spent warming up, in [0, 1) (default 0.0).
        final_factor: LR factor at the end of the run, in [0, 1] (default 0.1).
        shape: ``linear`` (default), ``cosine`` or ``constant`` after the warm-up.
        total_steps: optimizer steps of the run (default None: set by ``ClassifierModule``).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_fraction: float = 0.0,
        final_factor: float = 0.1,
        shape: DecayShape = "linear",
        total_steps: int | None = None,
    ) -> None:
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(
                f"WarmupDecay: warmup_fraction must be in [0, 1), got {warmup_fraction}"
            )
        if not 0.0 <= final_factor <= 1.0:
            raise ValueError(f"WarmupDecay: final_factor must be in [0, 1], got {final_factor}")
        if shape not in DECAY_SHAPES:
            raise ValueError(f"WarmupDecay: shape must be one of {DECAY_SHAPES}, got {shape!r}")
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"WarmupDecay: total_steps must be >= 1, got {total_steps}")
        self.warmup_fraction = warmup_fraction
        self.final_factor = final_factor
        self.shape = shape
        self.total_steps = total_steps
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        """The LR factor after ``step`` optimizer steps (``total_steps`` unset: the warm-up
        cannot be sized yet, so 1.0)."""
        if self.total_steps is None:
            return 1.0
        n = self.total_steps
        warm = round(self.warmup_fraction * n)
        if step < warm:
            return (step + 1) / warm
        if step >= n:
            return self.final_factor
        span = max(n - 1 - warm, 1)
        progress = min((step - warm) / span, 1.0)
        if self.shape == "constant":
            return 1.0
        if self.shape == "cosine":
            progress = 0.5 * (1.0 - math.cos(math.pi * progress))
        return 1.0 - (1.0 - self.final_factor) * progress

    def set_total_steps(self, total_steps: int) -> None:
        """Size the schedule to ``total_steps`` and re-apply the factor of the current step."""
        if total_steps < 1:
            raise ValueError(f"WarmupDecay: total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)
        step = max(self.last_epoch, 0)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.factor(step)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]
