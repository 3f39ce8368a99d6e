"""The parity gate: PyTorch and the C runtime over the same clips must predict the same class
for every clip, with logits close, and the predictions must not collapse onto few classes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from kwsnet.export.runtime import CModel

__all__ = ["LayerDiff", "ParityReport", "run_parity", "torch_logits"]


@dataclass
class LayerDiff:
    """Largest C-vs-PyTorch difference at one layer's output over all clips."""

    index: int
    path: str
    kind: str
    max_abs: float
    max_rel: float  # max |Δ| / max |PyTorch activation| of that layer


@dataclass
class ParityReport:
    """Result of :func:`run_parity`."""

    n: int = 0
    n_same: int = 0
    n_classes: int = 0
    torch_classes: set[int] = field(default_factory=set)
    c_classes: set[int] = field(default_factory=set)
    max_abs: float = 0.0
    max_at: tuple[int, int] = (-1, -1)  # (clip index, class)
    arena_bytes: int = 0
    weight_bytes: int = 0
    layers: list[LayerDiff] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every prediction identical (and at least one clip seen)."""
        return self.n > 0 and self.n_same == self.n

    def lines(self) -> list[str]:
        """Human-readable report."""
        out = [
            f"{self.n_same}/{self.n} predictions identical",
            f"classes predicted: PyTorch {len(self.torch_classes)}/{self.n_classes}, "
            f"C {len(self.c_classes)}/{self.n_classes}",
            f"max |Δlogit| = {self.max_abs:.3g} at clip {self.max_at[0]}, class {self.max_at[1]}",
            f"arena {self.arena_bytes} bytes, weights {self.weight_bytes} bytes",
        ]
        for d in self.layers:
            out.append(
                f"  layer {d.index:2d} {d.kind:<18} {d.path:<22} max|Δ| {d.max_abs:.3g}  "
                f"rel {d.max_rel:.3g}"
            )
        return out


@torch.no_grad()
def torch_logits(model: nn.Module, audio: torch.Tensor) -> torch.Tensor:
    """PyTorch's reference logits: the model's own forward (``head(backbone(x))`` for a
    ClassifierModule-like object, ``model(x)`` for a Sequential)."""
    if hasattr(model, "backbone") and hasattr(model, "head"):
        return model.head(model.backbone(audio))
    return model(audio)


@torch.no_grad()
def run_parity(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    cmodel: CModel,
    named_layers: Sequence[tuple[str, nn.Module]] | None = None,
    input_shape: Sequence[int] | None = None,
) -> ParityReport:
    """Compare PyTorch and the C runtime on every clip of ``batches`` (each ``[B, T]``).

    Args:
        model: the eval-mode PyTorch model (reference: :func:`torch_logits`).
        batches: audio batches.
        cmodel: the exported model loaded in the C runtime.
        named_layers: with ``input_shape``, also compare every layer's output
            (``--per-layer``); the C side runs up to layer i with ``kwsn_forward_until``.
        input_shape: per-sample input shape of the first layer (``(1, T)``).
    """
    rep = ParityReport(arena_bytes=cmodel.arena_bytes, weight_bytes=cmodel.weight_bytes)
    rep.n_classes = cmodel.n_classes
    if named_layers is not None:
        rep.layers = [
            LayerDiff(i, p, type(m).__name__, 0.0, 0.0) for i, (p, m) in enumerate(named_layers)
        ]
    for audio in batches:
        audio = audio.to(torch.float32)
        ref = torch_logits(model, audio).numpy()
        out = cmodel.forward(audio.numpy())
        p_ref, p_c = ref.argmax(1), out.argmax(1)
        rep.n_same += int((p_ref == p_c).sum())
        rep.torch_classes.update(int(c) for c in p_ref)
        rep.c_classes.update(int(c) for c in p_c)
        diff = np.abs(out - ref)
        if diff.size and (rep.max_at[0] < 0 or float(diff.max()) > rep.max_abs):
            i, j = np.unravel_index(int(diff.argmax()), diff.shape)
            rep.max_abs, rep.max_at = float(diff[i, j]), (rep.n + int(i), int(j))
        rep.n += len(audio)
        if named_layers is not None and input_shape is not None:
            h = audio.reshape(len(audio), *input_shape)
            for i, (_, m) in enumerate(named_layers):
                h = m(h)
                ref_i = h.reshape(len(audio), -1).numpy()
                d = np.abs(cmodel.forward_until(audio.numpy(), i + 1) - ref_i)
                scale = max(float(np.abs(ref_i).max()), 1e-30)
                rep.layers[i].max_abs = max(rep.layers[i].max_abs, float(d.max()))
                rep.layers[i].max_rel = max(rep.layers[i].max_rel, float(d.max()) / scale)
    return rep
