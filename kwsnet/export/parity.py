"""The parity gate: PyTorch and the C runtime over the same clips must predict the same class
for every clip, with logits close, and the predictions must not collapse onto few classes.

Two float32 implementations that sum in different orders (oneDNN/BLAS with FMA, whichever CPU
kernels torch picks, vs the C kernels) differ by a few ulp, so a clip whose two best PyTorch
logits are closer than that can get another argmax from each without either being wrong. Such
a clip is a *near-tie*: it is counted apart and does not fail the gate when PyTorch's top-2
margin is at most ``2 * tol`` and the clip's largest ``|Δlogit|`` is at most ``tol``, with
``tol = LOGIT_RTOL * max(1, max |PyTorch logit| of the clip)`` (within ``tol`` per logit, a
flip needs a margin ``<= 2 * tol``). Any other differing prediction is a mismatch.

Agreement on a collapsed model means nothing (a model predicting one class "passes" every
clip), so with ``class_floor`` the gate also fails when either side's predictions are
collapsed by the project's one rule (``kwsnet.metrics.collapse``: the largest predicted class
takes > 90% of the predictions, or at most ``max(1, ceil(C / 2))`` of the C classes are
predicted). ``kwsnet parity`` applies it to a trained checkpoint (``--ckpt_path``), not to the
untrained weights of a plumbing check (``--config`` only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from kwsnet.export.graph import Graph, graph_from_layers
from kwsnet.export.runtime import CModel
from kwsnet.metrics.collapse import MAX_SHARE, collapse_stats, min_classes

__all__ = [
    "LOGIT_RTOL",
    "LayerDiff",
    "ParityReport",
    "compare_predictions",
    "logit_tolerance",
    "run_parity",
    "torch_logits",
]

# C vs PyTorch logits agree to LOGIT_RTOL * max(1, max |logit|) per clip (the golden tests'
# tolerance); measured differences are below 1e-6 of that scale (docs/cnative.md).
LOGIT_RTOL = 1e-5


def logit_tolerance(ref: np.ndarray, rtol: float = LOGIT_RTOL) -> np.ndarray:
    """``[B]``: ``rtol * max(1, max |ref logit|)`` per clip of ``ref [B, C]``."""
    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    peak = np.abs(ref).max(axis=1) if ref.shape[1] else np.zeros(len(ref))
    return rtol * np.maximum(1.0, peak)


def compare_predictions(
    ref: np.ndarray, out: np.ndarray, rtol: float = LOGIT_RTOL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Judge ``out [B, C]`` (C runtime) against ``ref [B, C]`` (PyTorch) clip by clip.

    Returns:
        ``(same, near_tie, margin)``, each ``[B]``: the argmax is identical; it differs but
        only as a near-tie (PyTorch top-2 margin ``<= 2 * tol`` and every ``|Δlogit| <= tol``,
        ``tol`` from :func:`logit_tolerance`); PyTorch's top-2 margin (``inf`` with one class).
        A clip neither ``same`` nor ``near_tie`` is a real mismatch.
    """
    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    out = np.asarray(out, dtype=np.float64).reshape(len(out), -1)
    if ref.shape != out.shape:
        raise ValueError(f"logits {out.shape} and reference {ref.shape} differ in shape")
    same = ref.argmax(axis=1) == out.argmax(axis=1)
    if ref.shape[1] < 2:
        margin = np.full(len(ref), np.inf)
    else:
        top2 = np.sort(ref, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    tol = logit_tolerance(ref, rtol)
    close = np.abs(out - ref).max(axis=1, initial=0.0) <= tol
    near_tie = ~same & close & (margin <= 2 * tol)
    return same, near_tie, margin


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
    n_near_tie: int = 0  # differing predictions excused as near-ties (module docstring)
    n_classes: int = 0
    torch_classes: set[int] = field(default_factory=set)
    c_classes: set[int] = field(default_factory=set)
    max_abs: float = 0.0
    max_at: tuple[int, int] = (-1, -1)  # (clip index, class)
    max_ref: float = 0.0  # max |PyTorch logit|: the scale of max_abs
    min_margin: float = float("inf")  # smallest PyTorch top-2 logit margin
    min_margin_at: int = -1  # its clip
    arena_bytes: int = 0
    weight_bytes: int = 0
    layers: list[LayerDiff] = field(default_factory=list)
    torch_counts: list[int] = field(default_factory=list)  # predictions per class
    c_counts: list[int] = field(default_factory=list)
    class_floor: bool = False  # fail a collapsed model (module docstring)
    # max |Δlogit| of PyTorch on the exported BN-folded weights vs the model (None: no fold)
    fold_delta: float | None = None
    runtime: str = "C"  # the other side's name in the report ("C", "onnxruntime")
    rtol: float = LOGIT_RTOL  # the near-tie tolerance (logit_tolerance) it was judged with

    def collapsed(self) -> bool:
        """Either side's predictions collapsed (``kwsnet.metrics.collapse``)."""
        return any(
            bool(collapse_stats(c)["collapsed"]) for c in (self.torch_counts, self.c_counts) if c
        )

    def collapse_text(self) -> str:
        """Both sides' class counts against the floor, in words."""
        parts = []
        for name, counts in (("PyTorch", self.torch_counts), (self.runtime, self.c_counts)):
            st = collapse_stats(counts) if counts else {"n_pred_classes": 0, "max_class_share": 0}
            parts.append(
                f"{name} {int(st['n_pred_classes'])} classes, largest {st['max_class_share']:.0%}"
            )
        floor = min_classes(self.n_classes)
        return (
            f"{'; '.join(parts)}; floor: more than {floor} of {self.n_classes} classes and no "
            f"class over {MAX_SHARE:.0%}"
        )

    @property
    def n_mismatch(self) -> int:
        """Clips whose predictions differ beyond a near-tie."""
        return self.n - self.n_same - self.n_near_tie

    @property
    def ok(self) -> bool:
        """No mismatch: every prediction identical or a near-tie (and at least one clip), and
        with ``class_floor`` neither side collapsed."""
        if self.class_floor and self.collapsed():
            return False
        return self.n > 0 and self.n_mismatch == 0

    def lines(self) -> list[str]:
        """Human-readable report."""
        first = f"{self.n_same}/{self.n} predictions identical"
        if self.n_near_tie:
            first += f", {self.n_near_tie} near-tie flips (not failures)"
        if self.n_mismatch:
            first += f", {self.n_mismatch} MISMATCHED"
        out = [
            first,
            f"classes predicted: PyTorch {len(self.torch_classes)}/{self.n_classes}, "
            f"{self.runtime} {len(self.c_classes)}/{self.n_classes} "
            + (
                f"(class floor {'FAILED' if self.collapsed() else 'passed'}: "
                f"{self.collapse_text()})"
                if self.class_floor
                else "(class floor not applied)"
            ),
            f"max |Δlogit| = {self.max_abs:.3g} at clip {self.max_at[0]}, class {self.max_at[1]} "
            f"(max |logit| {self.max_ref:.3g}; near-tie tolerance {self.rtol:g} x max(1, that))",
            f"smallest PyTorch top-2 margin = {self.min_margin:.3g} at clip {self.min_margin_at}",
            f"arena {self.arena_bytes} bytes, weights {self.weight_bytes} bytes",
        ]
        if self.fold_delta is not None:
            out.append(
                f"BatchNorm folded at export: max |Δlogit| {self.fold_delta:.3g} (PyTorch on the "
                "folded weights vs the model, both float32)"
            )
        for d in self.layers:
            out.append(
                f"  layer {d.index:2d} {d.kind:<18} {d.path:<34} max|Δ| {d.max_abs:.3g}  "
                f"rel {d.max_rel:.3g}"
            )
        return out


@torch.no_grad()
def torch_logits(model: nn.Module, audio: torch.Tensor) -> torch.Tensor:
    """PyTorch's reference logits: the model's own forward on whole clips (every sample
    valid: the C runtime takes fixed-length clips). ``head(embed(x, T))`` for a model with a
    front end, ``head(backbone(x))`` for a backbone/head object, ``model(x)`` otherwise."""
    if hasattr(model, "embed") and hasattr(model, "head"):
        lengths = torch.full((len(audio),), audio.shape[1], dtype=torch.long)
        return model.head(model.embed(audio, lengths))
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
    *,
    graph: Graph | None = None,
    per_layer: bool = False,
    class_floor: bool = False,
    rtol: float = LOGIT_RTOL,
    runtime: str = "C",
) -> ParityReport:
    """Compare PyTorch and the C runtime on every clip of ``batches`` (each ``[B, T]``).

    Args:
        model: the eval-mode PyTorch model (reference: :func:`torch_logits`).
        batches: audio batches.
        cmodel: the exported model loaded in the C runtime.
        named_layers: with ``input_shape``, a chain of layers to compare layer by layer
            (the same as ``graph=graph_from_layers(...)``, ``per_layer=True``).
        input_shape: per-sample input shape of the first layer (``(1, T)``).
        graph: the exported graph (``kwsnet.export.graph``); with ``per_layer`` every node's
            output is compared (PyTorch: the node's unfolded modules; C: ``kwsn_forward_until``).
        per_layer: compare every node (needs ``graph`` or ``named_layers``).
        class_floor: fail when either side's predictions are collapsed.
        rtol: the near-tie tolerance (:func:`logit_tolerance`).
        runtime: the other side's name in the report (``cmodel`` may be any object with
            ``forward``, ``n_classes``, ``arena_bytes`` and ``weight_bytes``, e.g. an
            onnxruntime session: ``kwsnet.export.onnx_export.OnnxRuntimeModel``).
    """
    if named_layers is not None and input_shape is not None and graph is None:
        graph, per_layer = graph_from_layers(named_layers, input_shape), True
    rep = ParityReport(
        arena_bytes=cmodel.arena_bytes, weight_bytes=cmodel.weight_bytes, runtime=runtime, rtol=rtol
    )
    rep.n_classes = cmodel.n_classes
    rep.class_floor = class_floor
    rep.torch_counts = [0] * rep.n_classes
    rep.c_counts = [0] * rep.n_classes
    nodes = graph.nodes if (graph is not None and per_layer) else []
    folds = graph is not None and any(
        n.folded is not None and n.kind == "Conv1dEx" for n in graph.nodes
    )
    rep.layers = [LayerDiff(i, n.path, n.kind, 0.0, 0.0) for i, n in enumerate(nodes)]
    for audio in batches:
        audio = audio.to(torch.float32)
        ref = torch_logits(model, audio).numpy()
        out = cmodel.forward(audio.numpy())
        same, near_tie, margin = compare_predictions(ref, out, rtol)
        rep.n_same += int(same.sum())
        rep.n_near_tie += int(near_tie.sum())
        for counts, logits in ((rep.torch_counts, ref), (rep.c_counts, out)):
            for c in np.asarray(logits).reshape(len(audio), -1).argmax(1):
                counts[int(c)] += 1
        rep.torch_classes.update(int(c) for c in ref.argmax(1))
        rep.c_classes.update(int(c) for c in out.argmax(1))
        diff = np.abs(out - ref)
        if diff.size and (rep.max_at[0] < 0 or float(diff.max()) > rep.max_abs):
            i, j = np.unravel_index(int(diff.argmax()), diff.shape)
            rep.max_abs, rep.max_at = float(diff[i, j]), (rep.n + int(i), int(j))
        if ref.size:
            rep.max_ref = max(rep.max_ref, float(np.abs(ref).max()))
        if len(margin) and float(margin.min()) < rep.min_margin:
            rep.min_margin, rep.min_margin_at = float(margin.min()), rep.n + int(margin.argmin())
        rep.n += len(audio)
        if folds:
            folded = graph.run(audio, folded=True)[-1].reshape(len(audio), -1).numpy()  # type: ignore[union-attr]
            d_fold = float(np.abs(folded - ref).max()) if ref.size else 0.0
            rep.fold_delta = max(rep.fold_delta or 0.0, d_fold)
        if nodes:
            tensors = graph.run(audio)  # type: ignore[union-attr]
            for i in range(len(nodes)):
                ref_i = tensors[i + 1].reshape(len(audio), -1).numpy()
                d = np.abs(cmodel.forward_until(audio.numpy(), i + 1) - ref_i)
                scale = max(float(np.abs(ref_i).max()), 1e-30)
                rep.layers[i].max_abs = max(rep.layers[i].max_abs, float(d.max()))
                rep.layers[i].max_rel = max(rep.layers[i].max_rel, float(d.max()) / scale)
    return rep
