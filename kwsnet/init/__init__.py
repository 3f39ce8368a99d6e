"""Init strategies, picked in YAML by ``class_path`` (e.g. ``kwsnet.init.LSUV``).

Contract (``InitStrategy``): ``prepare(module)`` before the optimizer is built (structural
edits), then ``apply(module, forward) -> list[dict]`` at fit start, where ``forward()`` runs the
model on one calibration batch.
"""

from kwsnet.init.base import InitStrategy, NoInit, format_report
from kwsnet.init.lsuv import LSUV, LSUV_ORDERS
from kwsnet.init.small_init_emb import ProjectionWithNorm, SmallInitEmb

__all__ = [
    "LSUV",
    "LSUV_ORDERS",
    "InitStrategy",
    "NoInit",
    "ProjectionWithNorm",
    "SmallInitEmb",
    "format_report",
]
