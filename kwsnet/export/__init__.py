"""Export a trained raw-audio model to the C runtime (model file or C header) or ONNX, and
check the C runtime's predictions against PyTorch's.

What ``kwsnet export`` / ``kwsnet parity`` do is :mod:`kwsnet.export.pipeline` (the commands
themselves are ``kwsnet.commands.export`` / ``kwsnet.commands.parity``).

The package is also callable: ``kwsnet.export(model_or_ckpt, path, format=..., dtype=...)``
is :func:`kwsnet.api.export` (a package's name is bound to the package once it is imported,
so the Python API's ``export`` is the package itself, made callable).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from kwsnet.export.layers import ExportError, collect_layers, collect_named_layers

__all__ = [
    "ExportError",
    "collect_layers",
    "collect_named_layers",
]


class _CallableExport(types.ModuleType):
    """``kwsnet.export``: this package, callable as :func:`kwsnet.api.export`."""

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        """``kwsnet.export(model, path, format=..., dtype=..., ...)``: the arguments and the
        return value of :func:`kwsnet.api.export` (which it calls)."""
        from kwsnet.api import export

        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableExport
