"""The init-strategy contract: a plain class the config picks by ``class_path``.

A strategy has two steps, both called by the LightningModule:

- ``prepare(module)``: structural edits (e.g. inserting a LayerNorm). Call it before the
  optimizer is built (``LightningModule.setup`` or ``__init__``), so new parameters are
  trained. Default: nothing.
- ``apply(module, forward)``: (re)initialise weights in place, e.g. from ``on_fit_start``.
  ``forward()`` runs ``module``'s model on one calibration batch (no arguments, any return
  value); data-free strategies ignore it. Returns a per-layer report (list of dicts), which
  the strategy also logs with ``logging``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from torch import nn

__all__ = ["InitStrategy", "NoInit", "format_report"]

Forward = Callable[[], object]


class InitStrategy(abc.ABC):
    """Base class of init strategies (LightningCLI ``class_path`` targets)."""

    def prepare(self, module: nn.Module) -> None:  # noqa: B027 - optional hook, no-op default
        """Make structural edits to ``module`` before the optimizer is built (default: none)."""

    @abc.abstractmethod
    def apply(self, module: nn.Module, forward: Forward | None = None) -> list[dict]:
        """Initialise ``module`` in place; ``forward()`` runs it on a calibration batch.

        Returns:
            one dict per treated layer (at least a ``layer`` key with its qualified name).
        """


class NoInit(InitStrategy):
    """Keep PyTorch's default init (the explicit "off" value for configs)."""

    def apply(self, module: nn.Module, forward: Forward | None = None) -> list[dict]:
        return []


def format_report(rows: list[dict], columns: list[str] | None = None) -> str:
    """Render report rows as a fixed-width text table (small floats in e-notation)."""
    if not rows:
        return "(no layers)"
    columns = columns or list(rows[0])

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.5f}"
        return str(v)

    table = [columns] + [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]
    return "\n".join(lines)
