"""Collapse: does a classifier still use all its classes? (one rule, used everywhere)

A model whose predictions cover fewer classes than exist, or give one class more than
``max_share`` of them, has collapsed (the failure the end-LayerNorm raw-conv model shows on
~40% of seeds in the published sweep). Plain Python, so the sweep runner needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MAX_SHARE", "collapse_stats"]

MAX_SHARE = 0.9


def collapse_stats(counts: Sequence[int], max_share: float = MAX_SHARE) -> dict[str, float]:
    """Summarise a per-class prediction histogram ``counts`` (one entry per class).

    Returns ``n_pred_classes``, ``max_class_share`` and ``collapsed`` (1.0 or 0.0).
    """
    counts = [int(c) for c in counts]
    total = max(sum(counts), 1)
    n_pred = sum(c > 0 for c in counts)
    share = max(counts, default=0) / total
    collapsed = n_pred < len(counts) or share > max_share
    return {
        "n_pred_classes": float(n_pred),
        "max_class_share": share,
        "collapsed": float(collapsed),
    }
