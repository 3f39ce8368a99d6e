"""fp32 vs the int8 integer reference on the test split: what ``kwsnet quant-report``
(``kwsnet.commands.quant_report``) prints, and the one quantisation recipe of
``kwsnet export --dtype int8`` and ``kwsnet parity --dtype int8`` (:func:`quantize_model`).

Calibrates on ``--calibration`` training clips (evenly spaced over the training split, so every
class is in it), quantises (``kwsnet.quant.ptq``), runs the float model and the integer
reference (``kwsnet.quant.reference``) over the test split and prints: fp32 and int8 test
accuracy, the share of test predictions that change, the classes each predicts, the SQNR (dB)
of every int8 tensor against the float one, and weight / file bytes float vs int8. Exit
status 1 when the int8 model is collapsed by the project's rule (``kwsnet.metrics.collapse``)
or cannot be quantised (:func:`report_verdict`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from kwsnet.metrics.collapse import RULE, collapse_stats
from kwsnet.quant.ptq import (
    DEFAULT_PERCENTILE,
    FLOAT_ISLANDS,
    QuantError,
    QuantGraph,
    calibrate,
    quantize_graph,
)
from kwsnet.quant.reference import dequantize, run_int8

__all__ = [
    "QuantReport",
    "byte_counts",
    "calibration_batches",
    "float_graph",
    "report_verdict",
    "quantize_model",
    "run_report",
]


@dataclass
class QuantReport:
    """Counts over the test clips; ``sqnr`` rows ``(path, kind, dB)``; byte counts."""

    num_classes: int
    method: str = ""
    n_calibration: int = 0
    n: int = 0
    correct_fp32: int = 0
    correct_int8: int = 0
    changed: int = 0
    counts_fp32: list[int] = field(default_factory=list)
    counts_int8: list[int] = field(default_factory=list)
    sqnr: list[tuple[str, str, float]] = field(default_factory=list)
    bytes: dict[str, int] = field(default_factory=dict)

    @property
    def acc_fp32(self) -> float:
        return self.correct_fp32 / max(self.n, 1)

    @property
    def acc_int8(self) -> float:
        return self.correct_int8 / max(self.n, 1)

    @property
    def collapsed(self) -> bool:
        """The int8 predictions are collapsed (``kwsnet.metrics.collapse``)."""
        return bool(collapse_stats(self.counts_int8)["collapsed"])

    def classes_text(self, counts: list[int]) -> str:
        s = collapse_stats(counts)
        return (
            f"{int(s['n_pred_classes'])}/{len(counts)} classes, largest {s['max_class_share']:.0%}"
        )

    def lines(self) -> list[str]:
        out = [
            f"calibration: {self.n_calibration} training clips, {self.method}",
            f"test clips: {self.n}",
            f"fp32 accuracy: {self.acc_fp32:.4f}   int8 accuracy: {self.acc_int8:.4f}   "
            f"(delta {self.acc_int8 - self.acc_fp32:+.4f})",
            f"predictions changed: {self.changed}/{self.n} ({self.changed / max(self.n, 1):.2%})",
            f"classes predicted: fp32 {self.classes_text(self.counts_fp32)}; "
            f"int8 {self.classes_text(self.counts_int8)}",
            "per-layer SQNR of int8 vs float activations (dB):",
        ]
        width = max((len(p) for p, _, _ in self.sqnr), default=4)
        out += [f"  {p:<{width}}  {k:<17} {db:7.2f}" for p, k, db in self.sqnr]
        b = self.bytes
        if b:
            out.append(
                f"weight bytes: float {b['weights_fp32']}, int8 {b['weights_int8']} "
                f"(ratio {b['weights_int8'] / max(b['weights_fp32'], 1):.3f}); file bytes: "
                f"float {b['file_fp32']}, int8 {b['file_int8']} "
                f"(ratio {b['file_int8'] / max(b['file_fp32'], 1):.3f})"
            )
            qf, qi = b["weights_fp32_quantised"], b["weights_int8_quantised"]
            out.append(
                f"quantised layers only (no float front end): float {qf}, "
                f"int8 {qi} (ratio {qi / max(qf, 1):.3f})"
            )
        return out


def float_graph(model: object, clip_samples: int | None) -> object:
    """The traced graph (``kwsnet.export.graph.model_graph``) or, for a chain of standard
    layers (raw_conv), ``graph_from_layers``: the float model the int8 one is made from."""
    from kwsnet.export.graph import graph_from_layers, model_graph
    from kwsnet.export.layers import collect_named_layers, input_shape_of

    g = model_graph(model, clip_samples)
    if g is None:
        g = graph_from_layers(collect_named_layers(model), input_shape_of(model))  # type: ignore[arg-type]
    return g


def quantize_model(
    model: object, dm: object, calibration: int = 512, percentile: float | None = None
) -> tuple[object, QuantGraph]:
    """``(float graph, int8 graph)`` of ``model``, calibrated on ``calibration`` clips of the
    DataModule ``dm``'s training split (:func:`calibration_batches`): the one recipe behind
    ``kwsnet quant-report``, ``kwsnet export --dtype int8`` and ``kwsnet parity --dtype int8``.
    Activation ranges: the ``[100 - percentile, percentile]`` percentiles; ``None`` is
    :data:`~kwsnet.quant.ptq.DEFAULT_PERCENTILE` (99.99), ``100`` is min/max.

    Raises:
        QuantError: no clips, an op without an int8 form, a value out of range.
    """
    graph = float_graph(model, getattr(dm, "clip_samples", None))
    dm.setup("fit")  # type: ignore[attr-defined]
    cal = calibration_batches(dm.datasets["train"], calibration)  # type: ignore[attr-defined]
    p = DEFAULT_PERCENTILE if percentile is None else percentile
    return graph, quantize_graph(graph, calibrate(graph, cal, p))


def calibration_batches(dataset: object, n: int, batch_size: int = 64) -> list[torch.Tensor]:
    """``n`` clips of ``dataset`` at evenly spaced indices (every class of a class-sorted
    split is in them), as audio batches; the global RNG is forked and seeded so a random
    crop is the same every call."""
    from kwsnet.data.collate import collate

    total = len(dataset)  # type: ignore[arg-type]
    if n <= 0 or total == 0:
        raise QuantError(f"calibration needs clips: asked for {n}, the split has {total}")
    idx = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int)).tolist()
    out = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for i in range(0, len(idx), batch_size):
            b = collate([dataset[j] for j in idx[i : i + batch_size]])  # type: ignore[index]
            if b:
                out.append(b["audio"].to(torch.float32))
    return out


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


@torch.no_grad()
def run_report(
    graph: object,
    qgraph: QuantGraph,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
) -> QuantReport:
    """Compare the float ``graph`` and the int8 ``qgraph`` over ``(audio, label)`` batches.

    SQNR per tensor: ``10 log10(Σ f² / Σ (f - dequant(q))²)`` over every clip, ``f`` the
    BatchNorm-folded float tensor (after the ReLU for a producer with a fused ReLU, whose row
    is the ReLU's); accuracy of fp32 is the unfolded PyTorch model's.
    """
    rep = QuantReport(num_classes, qgraph.method, qgraph.n_clips)
    rep.counts_fp32, rep.counts_int8 = [0] * num_classes, [0] * num_classes
    n_t = len(qgraph.nodes) + 1
    sig, noise = np.zeros(n_t), np.zeros(n_t)
    for audio, label in batches:
        audio = audio.to(torch.float32)
        ref = graph.run(audio)[-1].reshape(len(audio), -1)  # type: ignore[attr-defined]
        folded = graph.run(audio, folded=True)  # type: ignore[attr-defined]
        out = run_int8(qgraph, audio, keep_tensors=True)
        p32, p8 = ref.argmax(1), out.predictions
        rep.n += len(audio)
        rep.correct_fp32 += int((p32 == label).sum())
        rep.correct_int8 += int((p8 == label).sum())
        rep.changed += int((p32 != p8).sum())
        for c in p32.tolist():
            rep.counts_fp32[c] += 1
        for c in p8.tolist():
            rep.counts_int8[c] += 1
        for t in range(n_t):
            q, codes = qgraph.qparams[t], out.tensors[t]  # type: ignore[index]
            if q is None or codes is None:
                continue
            f = folded[t].reshape(codes.shape).to(torch.float64)
            if t > 0 and qgraph.nodes[t - 1].fused_relu:
                f = torch.relu(f)
            d = dequantize(codes, q).to(torch.float64)
            sig[t] += float((f * f).sum())
            noise[t] += float(((f - d) ** 2).sum())
    if qgraph.qparams[0] is not None:
        rep.sqnr.append(("input", "quantise", _sqnr_db(sig[0], noise[0])))
    for i, n in enumerate(qgraph.nodes):
        if n.fused_relu:
            continue  # reported on the ReLU row (its tensor is the ReLU's values)
        rep.sqnr.append((n.path, n.kind, _sqnr_db(sig[i + 1], noise[i + 1])))
    return rep


def byte_counts(graph: object, qgraph: QuantGraph, sample_rate: int) -> dict[str, int]:
    """Weight (payload) and file bytes of the float file (format 1 or 2) and the int8 one;
    ``*_quantised``: the payload of the layers that become int8 only (without the float
    island: the FrontEnd tables, the same bytes in both files)."""
    from kwsnet.export import cnative
    from kwsnet.quant.format import quant_bytes, quant_records, weight_bytes

    nodes = graph.nodes  # type: ignore[attr-defined]
    if graph.is_chain and all(n.kind != "FrontEnd" for n in nodes):  # type: ignore[attr-defined]
        named = [(n.path, n.module) for n in nodes]
        f_records = [cnative.layer_record(m, p) for p, m in named]
        f_file = len(cnative.model_bytes(named, graph.input_shape, sample_rate))  # type: ignore[attr-defined]
    else:
        f_records = cnative.graph_records(graph)
        f_file = len(cnative.graph_bytes(graph, sample_rate))
    q_records = quant_records(qgraph, graph)
    kept = [n.kind not in FLOAT_ISLANDS for n in nodes]
    return {
        "weights_fp32": weight_bytes(f_records),
        "weights_int8": weight_bytes(q_records),  # type: ignore[arg-type]
        "weights_fp32_quantised": weight_bytes(
            [r for r, k in zip(f_records, kept, strict=True) if k]
        ),
        "weights_int8_quantised": weight_bytes(
            [r for r, k in zip(q_records, kept, strict=True) if k]
        ),  # type: ignore[misc]
        "file_fp32": f_file,
        "file_int8": len(quant_bytes(qgraph, graph, sample_rate)),
    }


def report_verdict(rep: QuantReport) -> tuple[int, str]:
    """``(exit status, message)``: 1 with a message for no test clips or a collapsed int8
    model (``kwsnet.metrics.collapse``'s rule), else ``(0, "")``."""
    if not rep.n:
        return 1, "QUANT-REPORT FAILED: no test clips"
    if rep.collapsed:
        fp32 = (
            f"; so is the fp32 model ({rep.classes_text(rep.counts_fp32)}): train it better"
            if collapse_stats(rep.counts_fp32)["collapsed"]
            else f"; the fp32 model is not ({rep.classes_text(rep.counts_fp32)})"
        )
        return 1, (
            f"QUANT-REPORT FAILED: the int8 model is collapsed "
            f"({rep.classes_text(rep.counts_int8)}){fp32}. {RULE}"
        )
    return 0, ""
