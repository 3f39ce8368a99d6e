"""Optimizer parameter groups: weight decay on weights, none on norm scale/shift and biases."""

from __future__ import annotations

from torch import nn

from kwsnet.nn.norms import NORM_TYPES

__all__ = ["param_groups", "split_decay"]


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
