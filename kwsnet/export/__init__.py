"""Export a trained raw-audio model to the C runtime (model file or C header) or ONNX, and
check the C runtime's predictions against PyTorch's.

What ``kwsnet export`` / ``kwsnet parity`` do is :mod:`kwsnet.export.pipeline` (the commands
themselves are ``kwsnet.commands.export`` / ``kwsnet.commands.parity``).

The package is also callable: ``kwsnet.export(model_or_ckpt, path, format=..., dtype=...)``
is :func:`kwsnet.api.export` (a package's name is bound to the package once it is imported,
so the Python API's ``export`` is the package itself, made callable).
"""

from __future__ import annotations

import os
import sys
import types
from typing import TYPE_CHECKING

from kwsnet.export.layers import ExportError, collect_layers, collect_named_layers

if TYPE_CHECKING:
    from kwsnet.api import KeywordModel

__all__ = [
    "ExportError",
    "collect_layers",
    "collect_named_layers",
]


class _CallableExport(types.ModuleType):
    """``kwsnet.export``: this package, callable as :func:`kwsnet.api.export`."""

    def __call__(
        self,
        model: KeywordModel | str | os.PathLike,
        path: str | os.PathLike,
        format: str = "cnative",
        dtype: str = "float32",
        calibration: int = 512,
        percentile: float | None = None,
        prefix: str = "kwsn_model",
    ) -> int:
        """Write ``model`` (a ``kwsnet.load`` model or a checkpoint path) to ``path``; returns
        the bytes written. See :func:`kwsnet.api.export`."""
        from kwsnet.api import export

        return export(model, path, format, dtype, calibration, percentile, prefix)


sys.modules[__name__].__class__ = _CallableExport
