"""Normalization layers and the one factory every backbone uses to build them.

``make_norm(kind, shape)`` is the single lookup from a config name to a layer; an unknown
name raises a ``ValueError`` listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["NORM_KINDS", "make_norm"]


def _layer(shape: Sequence[int]) -> nn.Module:
    # LayerNorm over every non-batch dim given, e.g. [C, L] for a conv activation.
    return nn.LayerNorm(list(shape))


def _none(shape: Sequence[int]) -> nn.Module:
    return nn.Identity()


NORM_KINDS: dict[str, Callable[[Sequence[int]], nn.Module]] = {
    "layer": _layer,
    "none": _none,
}


def make_norm(kind: str, shape: Sequence[int]) -> nn.Module:
    """Build the norm layer ``kind`` for activations of per-sample shape ``shape``.

    Args:
        kind: one of ``NORM_KINDS``.
        shape: per-sample activation shape, ``[C, L]`` for conv outputs or ``[C]`` for features.
    """
    if kind not in NORM_KINDS:
        raise ValueError(f"unknown norm kind {kind!r}; valid kinds: {sorted(NORM_KINDS)}")
    return NORM_KINDS[kind](shape)
