"""Optimizer parameter groups: weight decay on weights, none on norm scale/shift and biases."""

from __future__ import annotations

from torch import nn

__all__ = ["param_groups"]

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed group.

    Biases and the parameters of norm layers get no weight decay; all others get
    ``weight_decay``. Empty groups are dropped.
    """
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, _NORM_TYPES) or name.endswith("bias") or p.ndim <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
