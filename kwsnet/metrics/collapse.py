"""Collapse: has a classifier become a one-class or near-one-class predictor? (the one rule)

A run **collapsed** if, on its predictions over C classes, the largest predicted class takes
more than ``MAX_SHARE`` (90%) of them, or the predictions cover at most ``max(1, ceil(C / 2))``
classes (half of them or fewer). C counts the classes present in the split's labels when they
are known (``true_counts``), else every defined class: on a skewed test split (the 35-word task
on speech_commands_real has 30 of its 35 words in the test split, many with one clip) a good
model never predicts the absent words, and counting them called every 0.80-accuracy run
collapsed. A one-class predictor is caught by both; a model that spreads
its predictions over half of the classes or fewer is near-one-class. A run that misses one
class of six on 72 test clips (5 of 6 predicted, largest share 29-43%: 15 of the 16 runs the
old "fewer classes than exist" rule flagged in the LayerNorm sweep) is not collapsed: on 12
clips per class, one class never predicted is ordinary weakness, not collapse. With fewer than
two classes nothing can collapse.

``CollapseMonitor`` (``kwsnet/callbacks/collapse.py``) and the sweep tables
(``kwsnet/sweep/``) both call ``is_collapsed`` / ``collapse_stats`` and print ``RULE``.
Plain Python, so the sweep runner needs no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["MAX_SHARE", "RULE", "min_classes", "is_collapsed", "collapse_stats", "rule_text"]

MAX_SHARE = 0.9


def min_classes(num_classes: int) -> int:
    """Predicting this many classes or fewer is collapse: ``max(1, ceil(C / 2))``."""
    return max(1, math.ceil(num_classes / 2))


def rule_text(max_share: float = MAX_SHARE) -> str:
    """The rule in words, for tables and warnings."""
    return (
        f"collapsed = the largest predicted class takes > {max_share:.0%} of the predictions, "
        "or at most max(1, ceil(C/2)) of the C classes (those in the labels) are predicted"
    )


RULE = rule_text()


def is_collapsed(
    n_pred_classes: int, num_classes: int, max_class_share: float, max_share: float = MAX_SHARE
) -> bool:
    """The rule on a run's summary: ``n_pred_classes`` of ``num_classes`` classes predicted,
    the largest taking ``max_class_share`` of the predictions."""
    if num_classes < 2:
        return False
    return max_class_share > max_share or n_pred_classes <= min_classes(num_classes)


def collapse_stats(
    counts: Sequence[int],
    max_share: float = MAX_SHARE,
    true_counts: Sequence[int] | None = None,
) -> dict[str, float]:
    """Summarise a per-class prediction histogram ``counts`` (one entry per class); with the
    split's label histogram ``true_counts``, C is the number of classes present in it.

    Returns ``n_pred_classes``, ``max_class_share``, ``collapsed`` (1.0 or 0.0) and, with
    ``true_counts``, ``n_true_classes``.
    """
    counts = [int(c) for c in counts]
    total = max(sum(counts), 1)
    n_pred = sum(c > 0 for c in counts)
    share = max(counts, default=0) / total
    n_classes = len(counts)
    out: dict[str, float] = {}
    if true_counts is not None:
        n_classes = sum(int(c) > 0 for c in true_counts)
        out["n_true_classes"] = float(n_classes)
    return {
        "n_pred_classes": float(n_pred),
        "max_class_share": share,
        "collapsed": float(is_collapsed(n_pred, n_classes, share, max_share)),
        **out,
    }
