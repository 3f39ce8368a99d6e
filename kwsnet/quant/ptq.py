"""Post-training quantisation of a traced graph: calibration, then int8 weights, int32
biases and fixed-point multipliers per node (the choices are in ``kwsnet/quant/__init__``).

    graph = trace_model(model, clip_samples)           # or graph_from_layers(...) (raw_conv)
    ranges = calibrate(graph, batches, percentile=None)
    qgraph = quantize_graph(graph, ranges)
    out = kwsnet.quant.reference.run_int8(qgraph, audio)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from kwsnet.export.layers import ExportError
from kwsnet.quant.fixedpoint import INT32_MAX, quantize_multiplier
from kwsnet.quant.islands import ISLAND_KINDS

__all__ = [
    "ADD_LEFT_SHIFT",
    "CONV2D_GEOMETRY",
    "DEFAULT_PERCENTILE",
    "FLOAT_ISLANDS",
    "LN_FRAC_BITS",
    "QNode",
    "QParams",
    "QuantError",
    "QuantGraph",
    "Ranges",
    "calibrate",
    "choose_qparams",
    "quantize_graph",
    "quantize_weights",
    "silu_table",
]

ADD_LEFT_SHIFT = 20  # Add: inputs are (q - zp) << 20 before their multipliers (TFLite's)
LN_FRAC_BITS = 12  # integer LayerNorm: the normalised value z in Q12 (|Z| < 2^23, Z*G < 2^30)
LN_MAX_ELEMS = 1 << 20  # integer LayerNorm: N * sum(x^2) and sum(x)^2 stay below 2^62
LN_MAX_E = 1 << 62  # integer LayerNorm: the eps term in D units
# integer LayerNorm: |Z| <= 2^(K + 11) + 1 (N <= 2^20), so |Z G + B| stays in int32 when
# |B| is at most this
LN_MAX_BIAS = 2**31 - 1 - 127 * ((1 << (LN_FRAC_BITS + 11)) + 1)
# Ops whose int8 output keeps the input's (scale, zero-point): exact on int8 codes.
SHARES_INPUT = frozenset({"MaxPool1d", "Flatten", "ReLU"})
# Ops whose output clamp can absorb a following ReLU.
FUSES_RELU = frozenset(
    {"Conv1dEx", "Conv1d", "Conv2d", "Linear", "Add", "BroadcastAdd", "LayerNorm", "RowAffine"}
)
# Ops that stay float (float op, then quantise; after the front end the input codes are
# dequantised first: kwsnet.quant.islands): their bytes stay float32.
FLOAT_ISLANDS = frozenset({"FrontEnd"}) | ISLAND_KINDS
# RowAffine is a depthwise kernel-1 conv over the C * H rows (kwsnet.export.graph.RowAffine).
CONV_KINDS = frozenset({"Conv1dEx", "Conv1d", "Conv2d", "Linear", "RowAffine"})
SUPPORTED = frozenset(
    {"AvgPool1d", "AdaptiveAvgPool1d", "LayerNorm", "SiLU"}
    | FLOAT_ISLANDS
    | SHARES_INPUT
    | FUSES_RELU
)


class QuantError(ExportError):
    """A graph the int8 path cannot represent (names the node path and why); an
    ``ExportError`` (a ``ValueError``), so the CLI reports it in one line."""


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine int8: ``real = scale * (q - zero_point)``; ``scale`` is a float32
    value (stored as such in the file), ``zero_point`` in ``[-128, 127]``."""

    scale: float
    zero_point: int


@dataclass
class Ranges:
    """Calibrated float ranges ``lo[t] <= 0 <= hi[t]`` per tensor id (``None``: a tensor whose
    parameters come from another one, or the float audio in front of a front end), with the
    method (``minmax`` or ``percentile=p``) and the clip count."""

    lo: list[float | None]
    hi: list[float | None]
    method: str
    n_clips: int


@dataclass
class QNode:
    """One int8 node; ``kind`` is the float node's. ``out``: the output tensor's QParams;
    ``act_min``/``act_max``: the output clamp (``act_min = zp`` when a ReLU is fused);
    ``fused_relu``: this node's clamp does the next ReLU (which then copies);
    ``ints``: shape parameters; ``tensors``: int8 weights, int32 bias / multiplier / shift;
    ``float_module``: the float graph's node of a float island (FLOAT_ISLANDS)."""

    kind: str
    path: str
    inputs: tuple[int, ...]
    out: QParams
    act_min: int = -128
    act_max: int = 127
    fused_relu: bool = False
    relu_alias: bool = False  # a ReLU whose producer's clamp already did it: a copy
    ints: dict[str, int] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    float_module: object | None = None


@dataclass
class QuantGraph:
    """The int8 model: ``input_shape`` as the float graph's; ``input_q`` quantises tensor 0
    (None when the first node is the float front end, whose output is quantised instead);
    ``qparams[t]`` for every tensor id (``None`` for float audio); ``method`` of calibration."""

    input_shape: tuple[int, ...]
    nodes: list[QNode]
    qparams: list[QParams | None]
    method: str = "minmax"
    n_clips: int = 0

    @property
    def input_q(self) -> QParams | None:
        return self.qparams[0]


def _consumers(graph: object) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, n in enumerate(graph.nodes):  # type: ignore[attr-defined]
        for t in n.inputs:
            out.setdefault(t, []).append(i)
    return out


def _fused_into_relu(graph: object) -> set[int]:
    """Node indices whose output is read only by one ReLU (that ReLU's clamp moves into them)."""
    nodes = graph.nodes  # type: ignore[attr-defined]
    cons = _consumers(graph)
    fused = set()
    for i, n in enumerate(nodes):
        users = cons.get(i + 1, [])
        if n.kind in FUSES_RELU and len(users) == 1 and nodes[users[0]].kind == "ReLU":
            fused.add(i)
    return fused


def _calibrated_tensors(graph: object) -> dict[int, int]:
    """``{tensor id whose params are chosen: tensor id whose float values define them}``."""
    nodes = graph.nodes  # type: ignore[attr-defined]
    fused = _fused_into_relu(graph)
    src: dict[int, int] = {}
    if not nodes or nodes[0].kind != "FrontEnd":
        src[0] = 0
    for i, n in enumerate(nodes):
        if n.kind not in SUPPORTED:
            raise QuantError(
                f"{n.kind} at '{n.path}' has no int8 form; int8 supports {sorted(SUPPORTED)}"
            )
        if n.kind in SHARES_INPUT:
            continue
        src[i + 1] = i + 2 if i in fused else i + 1  # a fused producer takes the ReLU's range
    return src


DEFAULT_PERCENTILE = 99.99
"""The int8 activation range when none is asked for (``kwsnet export / parity --dtype int8``,
``kwsnet quant-report``, ``kwsnet.export(dtype="int8")``: :func:`kwsnet.quant.report.
quantize_model`): the ``[0.01, 99.99]`` percentiles of each tensor's calibration values.
``percentile=100`` is min/max. Chosen on the trained checkpoints of docs/cnative.md
(speech_commands_real, 584 test clips), fp32 -> int8 accuracy min/max vs 99.99: DS-CNN -1.20
vs -0.34 points, BC-ResNet-1 -1.37 vs -0.17, kws_mel_aug +0.51 vs +0.17, kws_matchboxnet_96
+0.00 vs +0.00: min/max misses the 0.5-point bound twice, 99.99 never."""


@torch.no_grad()
def calibrate(
    graph: object, batches: Iterable[torch.Tensor], percentile: float | None = None
) -> Ranges:
    """Float ranges of every calibrated tensor over ``batches`` (``[B, *input_shape]`` or
    ``[B, T]`` audio), run through the exported (BatchNorm-folded) float graph.

    ``percentile=None`` or ``100``: min / max over all values (the same numbers: the 0th and
    100th percentiles are the extremes; only the running extremes are kept). ``percentile=p``
    (e.g. :data:`DEFAULT_PERCENTILE`, 99.99, the commands' default): the ``100 - p`` and ``p``
    percentiles of all values of the tensor over every clip (``numpy.percentile``, linear
    interpolation; deterministic for the same clips; every value is kept until then).
    Every range is widened to include 0 (zero padding and ReLU need an exact real 0).

    Raises:
        QuantError: no clips, a non-finite activation, or an op without an int8 form.
        ValueError: ``percentile`` outside (50, 100].
    """
    if percentile is not None and not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    if percentile == 100.0:
        percentile = None  # min/max: the extremes, without keeping every value
    src = _calibrated_tensors(graph)
    n_t = len(graph.nodes) + 1  # type: ignore[attr-defined]
    lo: list[float | None] = [None] * n_t
    hi: list[float | None] = [None] * n_t
    values: dict[int, list[np.ndarray]] = {t: [] for t in set(src.values())}
    n = 0
    for x in batches:
        x = x.to(torch.float32)
        tensors = graph.run(x, folded=True)  # type: ignore[attr-defined]
        n += len(x)
        for t in values:
            v = tensors[t].detach().reshape(-1).numpy().astype(np.float32)
            if not np.all(np.isfinite(v)):
                raise QuantError(f"tensor {t}: non-finite activations during calibration")
            if percentile is None:
                v = np.array([v.min(), v.max()], np.float32) if v.size else v
            values[t].append(v)
    if n == 0:
        raise QuantError("calibration got no clips")
    for t, s in src.items():
        v = np.concatenate(values[s])
        if percentile is None:
            a, b = float(v.min()), float(v.max())
        else:
            a, b = (float(q) for q in np.percentile(v, [100.0 - percentile, percentile]))
        lo[t], hi[t] = min(a, 0.0), max(b, 0.0)
    method = "minmax" if percentile is None else f"percentile={percentile:g}"
    return Ranges(lo, hi, method, n)


def choose_qparams(lo: float, hi: float) -> QParams:
    """Asymmetric int8 for ``[lo, hi]`` (``lo <= 0 <= hi``): ``scale = (hi - lo) / 255``
    rounded to float32, ``zp = round(-128 - lo / scale)`` (half even) clamped to
    ``[-128, 127]``, so real 0 is exactly the code ``zp``. An empty range gets scale 1e-8."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = float(np.float32((hi - lo) / 255.0))
    if not scale > 0.0:
        scale = float(np.float32(1e-8))
    zp = int(np.clip(np.round(-128.0 - lo / scale), -128, 127))
    return QParams(scale, zp)


def quantize_weights(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output channel (dim 0) symmetric int8: ``s[o] = max |w[o]| / 127`` (float32;
    1.0 for an all-zero channel), ``q = clamp(round_half_even(w / s), -127, 127)`` in float64.

    Returns:
        ``(q int8 like w, s float32 [out])``.
    """
    w64 = w.detach().to(torch.float64).reshape(len(w), -1)
    amax = w64.abs().amax(dim=1)
    s = (amax / 127.0).to(torch.float32)
    s = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.clamp(torch.round(w64 / s.to(torch.float64)[:, None]), -127, 127)
    return q.to(torch.int8).reshape(w.shape), s


def _multipliers(real: torch.Tensor | list[float], path: str) -> tuple[torch.Tensor, torch.Tensor]:
    ms, ss = [], []
    for r in torch.as_tensor(real, dtype=torch.float64).reshape(-1).tolist():
        try:
            m, s = quantize_multiplier(r)
        except ValueError as exc:
            raise QuantError(f"'{path}': {exc}") from exc
        ms.append(m)
        ss.append(s)
    return torch.tensor(ms, dtype=torch.int32), torch.tensor(ss, dtype=torch.int32)


# The geometry ints of a Conv2d record, in order (kwsnet.export.cnative.conv2d_geometry).
CONV2D_GEOMETRY = ("in", "out", "in_h", "in_w", "kernel_h", "kernel_w", "stride_h", "stride_w",
                   "pad_top", "pad_bottom", "pad_left", "pad_right", "groups")  # fmt: skip


def _conv_geometry(node: object) -> dict[str, int]:
    m = node.module  # type: ignore[attr-defined]
    if node.kind == "Conv2d":  # type: ignore[attr-defined]
        from kwsnet.export.cnative import conv2d_geometry

        return dict(zip(CONV2D_GEOMETRY, conv2d_geometry(m), strict=True))
    if node.kind == "RowAffine":  # type: ignore[attr-defined]
        c, h, w = m.geometry
        return {"channels": c, "height": h, "width": w, "in": c * h, "out": c * h, "kernel": 1,
                "stride": 1, "padding": 0, "dilation": 1, "groups": c * h}  # fmt: skip
    if isinstance(m, nn.Linear):
        return {"in": m.in_features, "out": m.out_features, "kernel": 1, "stride": 1,
                "padding": 0, "dilation": 1, "groups": 1}  # fmt: skip
    k, s, d = m.kernel_size[0], m.stride[0], m.dilation[0]
    if m.padding_mode != "zeros":
        raise QuantError(f"Conv1d at '{node.path}': padding_mode {m.padding_mode!r}")  # type: ignore[attr-defined]
    if isinstance(m.padding, str):
        total = d * (k - 1) if m.padding == "same" else 0
        if total % 2:
            raise QuantError(f"Conv1d at '{node.path}': asymmetric 'same' padding")  # type: ignore[attr-defined]
        pad = total // 2
    else:
        pad = m.padding[0]
    return {"in": m.in_channels, "out": m.out_channels, "kernel": k, "stride": s,
            "padding": pad, "dilation": d, "groups": m.groups}  # fmt: skip


def _conv_qnode(node: object, q_in: QParams, q_out: QParams) -> QNode:
    path = node.path  # type: ignore[attr-defined]
    m = node.module  # type: ignore[attr-defined]
    geo = _conv_geometry(node)
    if node.kind == "Conv2d":  # type: ignore[attr-defined]
        m = m.conv  # FlatConv2d: the weights are its Conv2d's
    wq, sw = quantize_weights(m.weight)
    s_acc = q_in.scale * sw.to(torch.float64)  # bias / accumulator scale per channel
    b = m.bias.detach().to(torch.float64) if m.bias is not None else torch.zeros(geo["out"])
    bq = torch.round(b.to(torch.float64) / s_acc)
    worst = wq.to(torch.int64).reshape(geo["out"], -1).abs().sum(1) * 255 + bq.abs().to(torch.int64)
    if bool((worst > INT32_MAX).any()):
        raise QuantError(f"'{path}': the int32 accumulator can overflow (bias or fan-in too big)")
    mult, shift = _multipliers(s_acc / q_out.scale, path)
    return QNode(
        node.kind,  # type: ignore[attr-defined]
        path,
        tuple(node.inputs),  # type: ignore[attr-defined]
        q_out,
        ints=geo,
        tensors={
            "weight": wq,
            "bias": bq.to(torch.int32),
            "multiplier": mult,
            "shift": shift,
            "weight_scale": sw,
        },
    )


def _layernorm_qnode(node: object, q_in: QParams, q_out: QParams) -> QNode:
    """The integer LayerNorm (``kwsnet.quant.reference._layernorm`` has the arithmetic):
    ``gamma`` per tensor symmetric int8 (``s_g = max |gamma| / 127``), ``beta`` in the
    accumulator's units as an int16 ``B`` and a shift, ``B 2^b_shift = round(beta 2^K / s_g)``
    to within ``2^(b_shift - 1)`` (so the output is rounded once, not twice), the eps term
    ``E = round(N^2 eps / s_in^2)`` in the units of ``D = N^2 var(q)``, and one multiplier
    ``s_g / (2^K s_out)``."""
    path = node.path  # type: ignore[attr-defined]
    m = node.module  # type: ignore[attr-defined]
    shape = tuple(m.normalized_shape)
    if len(shape) not in (1, 2):
        raise QuantError(f"LayerNorm at '{path}': normalized_shape {shape} must be 1-D or 2-D")
    d0, d1 = (shape[0], 1) if len(shape) == 1 else shape
    n = d0 * d1
    if n > LN_MAX_ELEMS:
        raise QuantError(f"LayerNorm at '{path}': {n} elements, the integer form takes <= 2^20")
    if m.weight is not None:
        gamma = m.weight.detach().to(torch.float64).reshape(-1)
    else:
        gamma = torch.ones(n, dtype=torch.float64)
    if m.bias is not None:
        beta = m.bias.detach().to(torch.float64).reshape(-1)
    else:
        beta = torch.zeros(n, dtype=torch.float64)
    s_g = float(np.float32(float(gamma.abs().max()) / 127.0))
    if not s_g > 0.0:
        s_g = 1.0
    g_q = torch.clamp(torch.round(gamma / s_g), -127, 127).to(torch.int8)
    b_acc = beta * (1 << LN_FRAC_BITS) / s_g  # beta in the accumulator's units
    b_shift = 0  # stored as int16 B with B << b_shift ~ b_acc (error << one output code)
    while float(b_acc.abs().max()) / (1 << b_shift) > 32767.0:
        b_shift += 1
    b_q = torch.clamp(torch.round(b_acc / (1 << b_shift)), -32767, 32767)
    if bool((b_q.abs() * (1 << b_shift) > LN_MAX_BIAS).any()):
        raise QuantError(
            f"LayerNorm at '{path}': beta / gamma too large for the int32 accumulator "
            f"(max |beta| {float(beta.abs().max()):.4g}, "
            f"max |gamma| {float(gamma.abs().max()):.4g})"
        )
    e = round(n * n * float(m.eps) / (q_in.scale * q_in.scale))
    if not 0 <= e < LN_MAX_E:
        raise QuantError(f"LayerNorm at '{path}': eps term {e} out of range (input scale tiny)")
    mult, shift = _multipliers([s_g / ((1 << LN_FRAC_BITS) * q_out.scale)], path)
    return QNode(
        "LayerNorm",
        path,
        tuple(node.inputs),  # type: ignore[attr-defined]
        q_out,
        ints={
            "norm_ndim": len(shape),
            "d0": d0,
            "d1": d1,
            "frac_bits": LN_FRAC_BITS,
            "beta_shift": b_shift,
        },
        tensors={
            "gamma": g_q,
            "beta": b_q.to(torch.int32),
            "multiplier": mult,
            "shift": shift,
            "gamma_scale": torch.tensor([s_g], dtype=torch.float32),
            "eps": torch.tensor([float(m.eps)], dtype=torch.float32),
            "eps_term": torch.tensor([e], dtype=torch.int64),
        },
    )


def silu_table(q_in: QParams, q_out: QParams, act_min: int = -128) -> torch.Tensor:
    """The int8 SiLU: for each input code ``q`` in ``-128 .. 127`` (index ``q + 128``),
    ``x = s_in (q - zp_in)`` and ``clamp(round_half_even(x sigmoid(x) / s_out) + zp_out,
    act_min, 127)``, in float64 (the table is the definition: the C runtime and the integer
    reference both look it up)."""
    q = np.arange(-128, 128, dtype=np.float64)
    x = np.float64(np.float32(q_in.scale)) * (q - q_in.zero_point)
    y = x / (1.0 + np.exp(-x))
    v = np.round(y / np.float64(np.float32(q_out.scale))) + q_out.zero_point
    return torch.from_numpy(np.clip(v, act_min, 127).astype(np.int8))


def _pool_len(node: object, shapes: list[tuple[int, ...]]) -> int:
    return int(shapes[node.inputs[0]][-1])  # type: ignore[attr-defined]


@torch.no_grad()
def quantize_graph(graph: object, ranges: Ranges) -> QuantGraph:
    """The int8 model of ``graph`` with the activation ``ranges`` of :func:`calibrate`.

    Raises:
        QuantError: an op without an int8 form, a multiplier out of range, or a possible
            int32 accumulator overflow, naming the node's path.
    """
    nodes = graph.nodes  # type: ignore[attr-defined]
    src = _calibrated_tensors(graph)
    fused = _fused_into_relu(graph)
    shapes = [tuple(t.shape[1:]) for t in graph.run(torch.zeros(1, *graph.input_shape), True)]  # type: ignore[attr-defined]
    qp: list[QParams | None] = [None] * (len(nodes) + 1)
    if 0 in src:
        qp[0] = choose_qparams(ranges.lo[0], ranges.hi[0])  # type: ignore[arg-type]
    out: list[QNode] = []
    for i, n in enumerate(nodes):
        t = i + 1
        ins = tuple(n.inputs)
        q_in = qp[ins[0]] if n.kind != "FrontEnd" else None
        if n.kind in SHARES_INPUT:
            qp[t] = q_in
            relu = n.kind == "ReLU"
            alias = relu and (ins[0] - 1) in fused
            qn = QNode(n.kind, n.path, ins, q_in, relu_alias=alias)  # type: ignore[arg-type]
            if relu:
                qn.act_min = q_in.zero_point  # type: ignore[union-attr]
            if n.kind == "MaxPool1d":
                qn.ints = {"kernel": int(n.module.kernel_size), "stride": int(n.module.stride)}
            out.append(qn)
            continue
        if ranges.lo[t] is None:
            raise QuantError(f"'{n.path}': no calibrated range for tensor {t}")
        q_out = choose_qparams(ranges.lo[t], ranges.hi[t])  # type: ignore[arg-type]
        qp[t] = q_out
        if n.kind in CONV_KINDS:
            qn = _conv_qnode(n, q_in, q_out)  # type: ignore[arg-type]
        elif n.kind in ("Add", "BroadcastAdd"):
            q_b = qp[ins[1]]
            twice_max = 2.0 * max(q_in.scale, q_b.scale)  # type: ignore[union-attr]
            real = [
                q_in.scale / twice_max,  # type: ignore[union-attr]
                q_b.scale / twice_max,  # type: ignore[union-attr]
                twice_max / ((1 << ADD_LEFT_SHIFT) * q_out.scale),
            ]
            mult, shift = _multipliers(real, n.path)
            qn = QNode(n.kind, n.path, ins, q_out, ints={"left_shift": ADD_LEFT_SHIFT})
            if n.kind == "BroadcastAdd":
                c, h, w = n.module.geometry
                qn.ints.update(channels=c, height=h, width=w)
            qn.tensors = {"multiplier": mult, "shift": shift}
        elif n.kind == "SiLU":
            qn = QNode(n.kind, n.path, ins, q_out)
            qn.tensors = {"table": silu_table(q_in, q_out)}  # type: ignore[arg-type]
        elif n.kind in ("AvgPool1d", "AdaptiveAvgPool1d"):
            if n.kind == "AvgPool1d":
                k = int(np.atleast_1d(n.module.kernel_size)[0])
                st = int(np.atleast_1d(n.module.stride if n.module.stride else k)[0])
                if int(np.atleast_1d(n.module.padding)[0]) != 0 or n.module.ceil_mode:
                    raise QuantError(f"AvgPool1d at '{n.path}': only padding 0, floor mode")
            else:
                if int(np.atleast_1d(n.module.output_size)[0]) != 1:
                    raise QuantError(f"AdaptiveAvgPool1d at '{n.path}': output_size must be 1")
                k = st = _pool_len(n, shapes)
            mult, shift = _multipliers([q_in.scale / (k * q_out.scale)], n.path)  # type: ignore[union-attr]
            qn = QNode(n.kind, n.path, ins, q_out, ints={"kernel": k, "stride": st})
            qn.tensors = {"multiplier": mult, "shift": shift}
        elif n.kind == "LayerNorm":
            qn = _layernorm_qnode(n, q_in, q_out)  # type: ignore[arg-type]
        else:  # a float island: FrontEnd, AttnStatsPool, L2Norm
            qn = QNode(n.kind, n.path, ins, q_out, float_module=n)
        if i in fused:
            qn.fused_relu = True
            qn.act_min = q_out.zero_point
        out.append(qn)
    return QuantGraph(tuple(graph.input_shape), out, qp, ranges.method, ranges.n_clips)  # type: ignore[attr-defined]
