"""kwsnet: keyword-spotting and speaker-classification training on PyTorch Lightning.

Training is the command line's (``kwsnet fit --config configs/kws_raw.yaml``); the Python API
loads, runs and exports what it trained (``kwsnet.api``)::

    model = kwsnet.load("runs/kws_raw/checkpoints/last.ckpt")
    probs = model(wave, sample_rate=44100)   # [B, C] class probabilities
    kwsnet.export(model, "model.kwsn")       # also format="onnx" | "c-header", dtype="int8"

``import kwsnet`` stays light: torch and Lightning are imported on first use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from kwsnet._version import __version__

if TYPE_CHECKING:
    from kwsnet.api import KeywordModel

__all__ = ["KeywordModel", "export", "load", "__version__"]


def load(ckpt_path: str | os.PathLike, **kwargs: Any) -> KeywordModel:
    """The trained model in a checkpoint, in eval mode: ``kwsnet.api.load``."""
    from kwsnet.api import load as _load

    return _load(ckpt_path, **kwargs)


def __getattr__(name: str) -> Any:
    # ``kwsnet.export`` is the subpackage, callable as ``kwsnet.export(model, path, ...)``
    # (kwsnet/export/__init__.py); both are imported on first use.
    if name == "export":
        import importlib

        return importlib.import_module("kwsnet.export")
    if name == "KeywordModel":
        from kwsnet.api import KeywordModel

        return KeywordModel
    raise AttributeError(f"module 'kwsnet' has no attribute {name!r}")
