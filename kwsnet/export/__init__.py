"""Export a trained raw-audio model to the C runtime (model file or C header) or ONNX, and
check the C runtime's predictions against PyTorch's.

Entry points for ``kwsnet export`` / ``kwsnet parity``: :func:`export_main`, :func:`parity_main`.
"""

from kwsnet.export.layers import ExportError, collect_layers, collect_named_layers

__all__ = [
    "ExportError",
    "collect_layers",
    "collect_named_layers",
    "export_main",
    "parity_main",
]


def export_main(argv: list[str]) -> int:
    """``kwsnet export ...``; see :func:`kwsnet.export.commands.export_main`."""
    from kwsnet.export.commands import export_main as _main

    return _main(argv)


def parity_main(argv: list[str]) -> int:
    """``kwsnet parity ...``; see :func:`kwsnet.export.commands.parity_main`."""
    from kwsnet.export.commands import parity_main as _main

    return _main(argv)
