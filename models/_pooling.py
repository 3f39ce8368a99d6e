"""The pooling stage every sequence backbone builds the same way."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def build_pooling(
    pooling: Callable[[int], nn.Module] | None,
    in_dim: int,
    default: Callable[[int], nn.Module],
) -> tuple[nn.Module, int]:
    """``pooling(in_dim)`` (``default(in_dim)`` when None) and its integer ``out_dim``."""
    layer = pooling(in_dim) if pooling is not None else default(in_dim)
    out_dim = getattr(layer, "out_dim", None)
    if not isinstance(out_dim, int):
        raise TypeError(
            f"pooling {type(layer).__name__} must expose an integer out_dim (see kwsnet.nn.pooling)"
        )
    return layer, out_dim
