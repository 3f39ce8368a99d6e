"""Walk a trained model into the flat list of standard layers the C runtime executes.

For a ClassifierModule (``frontend``, ``backbone``, ``head``) the list is
``backbone.layers`` followed by the head's ``Linear``; a plain ``nn.Sequential`` is walked
as it is. Nested ``Sequential`` containers are flattened. ``Identity`` and ``Dropout`` are
dropped because they are exact no-ops at inference; every other layer must be one the runtime
knows, else :class:`ExportError` names its type and its path in the module tree.
"""

from __future__ import annotations

from torch import nn

__all__ = [
    "ExportError",
    "SUPPORTED_LAYERS",
    "collect_layers",
    "collect_named_layers",
    "input_shape_of",
]

SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.AvgPool1d,
    nn.Conv1d,
    nn.LayerNorm,
    nn.ReLU,
    nn.MaxPool1d,
    nn.AdaptiveAvgPool1d,
    nn.Flatten,
    nn.Linear,
)
_NO_OPS: tuple[type[nn.Module], ...] = (nn.Identity, nn.Dropout)
# Frontends that pass the waveform through unchanged (raw-audio models only are exportable).
_IDENTITY_FRONTENDS = ("RawAudio", "Identity")


class ExportError(ValueError):
    """A model that the C runtime cannot represent exactly."""


def _supported_names() -> str:
    return ", ".join(t.__name__ for t in SUPPORTED_LAYERS)


def _walk(module: nn.Module, path: str, out: list[tuple[str, nn.Module]]) -> None:
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            _walk(child, f"{path}.{name}" if path else name, out)
    elif isinstance(module, _NO_OPS):
        return
    elif isinstance(module, SUPPORTED_LAYERS):
        out.append((path, module))
    else:
        raise ExportError(
            f"unsupported layer {type(module).__name__} at '{path or '<root>'}'; the C runtime "
            f"supports {_supported_names()} (and drops Identity/Dropout)"
        )


def _head_linear(head: nn.Module) -> list[tuple[str, nn.Module]]:
    if isinstance(head, (nn.Linear, nn.Sequential)):
        out: list[tuple[str, nn.Module]] = []
        _walk(head, "head", out)
        return out
    fc = getattr(head, "fc", None)
    extra = [n for n, p in head.named_parameters() if not n.startswith("fc.")]
    if isinstance(fc, nn.Linear) and not extra:
        return [("head.fc", fc)]
    raise ExportError(
        f"unsupported head {type(head).__name__} at 'head'; export needs a plain Linear "
        "(e.g. kwsnet.nn.heads.LinearHead), not a margin or pooling head"
    )


def collect_named_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Like :func:`collect_layers`, with each layer's dotted path in ``model``."""
    if isinstance(model, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        _walk(model, "", out)
    elif hasattr(model, "backbone") and hasattr(model, "head"):
        frontend = getattr(model, "frontend", None)
        if frontend is not None and type(frontend).__name__ not in _IDENTITY_FRONTENDS:
            raise ExportError(
                f"unsupported frontend {type(frontend).__name__} at 'frontend'; the C runtime "
                f"runs raw audio (a frontend of {_IDENTITY_FRONTENDS}) into a chain of standard "
                "layers, or a LogMel / MFCC front end into a backbone its graph tracer knows "
                "(kwsnet/export/graph.py); --format onnx exports any model"
            )
        layers = getattr(model.backbone, "layers", None)
        if not isinstance(layers, nn.Sequential):
            raise ExportError(
                f"unsupported backbone {type(model.backbone).__name__} at 'backbone': export "
                "walks backbone.layers, which must be an nn.Sequential of standard layers"
            )
        out = []
        _walk(layers, "backbone.layers", out)
        out += _head_linear(model.head)
    else:
        raise ExportError(
            f"cannot export {type(model).__name__}: pass a ClassifierModule-like object with "
            "backbone/head, or an nn.Sequential"
        )
    if not out:
        raise ExportError("model has no layers to export")
    return out


def collect_layers(model: nn.Module) -> list[nn.Module]:
    """The standard layers the C runtime will run, in forward order.

    Args:
        model: a ClassifierModule-like object (``backbone.layers`` + ``head``) or an
            ``nn.Sequential``.

    Raises:
        ExportError: naming the type and path of any layer the runtime does not support.
    """
    return [m for _, m in collect_named_layers(model)]


def input_shape_of(model: nn.Module) -> tuple[int, ...]:
    """Per-sample input shape the exported sequence expects: ``(1, T)`` for raw audio.

    Raises:
        ExportError: if it cannot be derived (pass ``input_shape`` explicitly then).
    """
    backbone = getattr(model, "backbone", model)
    samples = getattr(backbone, "input_samples", None)
    if samples is None:
        raise ExportError(
            f"cannot tell the input length of {type(model).__name__}; pass input_shape"
        )
    return (1, int(samples))
