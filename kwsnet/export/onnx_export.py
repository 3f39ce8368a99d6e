"""``--format onnx``: the same layer sequence the C runtime runs, as an ONNX graph
(``audio [B, T] -> logits [B, n_classes]``, dynamic batch) for onnxruntime."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from kwsnet.export.cnative import Layers, as_named

__all__ = ["LayerSequence", "export_onnx"]


class LayerSequence(nn.Module):
    """The exported layers as one module: ``x [B, prod(input_shape)] -> [B, n_classes]``."""

    def __init__(
        self,
        layers: Layers,
        input_shape: Sequence[int],
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.layers = nn.Sequential(*[m for _, m in as_named(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T]`` -> ``[B, n_classes]``."""
        return self.layers(x.reshape(x.shape[0], *self.input_shape))


def export_onnx(
    layers: Layers,
    input_shape: Sequence[int],
    path: str | Path,
    opset: int = 17,
) -> int:
    """Export with the TorchScript-based exporter (``dynamo=False``); returns the file size."""
    seq = LayerSequence(layers, input_shape).eval()
    with torch.no_grad():
        torch.onnx.export(
            seq,
            (torch.zeros(1, math.prod(seq.input_shape)),),
            str(path),
            input_names=["audio"],
            output_names=["logits"],
            dynamic_axes={"audio": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return Path(path).stat().st_size
