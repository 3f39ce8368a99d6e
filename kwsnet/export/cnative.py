"""Writer for the cnative model file; mirrors ``kwsn_model_parse`` in cnative/src/kwsn_model.c.

Layout (little-endian, every field 4 bytes)::

    char magic[4] = "KWSN"; u32 version; u32 sample_rate; u32 in_ndim; u32 in_dim[2];
    u32 n_layers;
    n_layers x { u32 type; u32 n_ints; u32 n_floats; i32 ints[n_ints]; f32 floats[n_floats] }
    u32 crc32   (zlib CRC-32 of every byte before it)

Format version 2 (:func:`graph_bytes`, for a :class:`~kwsnet.export.graph.Graph`) adds each
layer's input tensor ids after its type: ``{ u32 type; u32 n_inputs; u32 n_ints; u32 n_floats;
u32 inputs[n_inputs]; i32 ints[]; f32 floats[] }`` (tensor 0 = the model input, layer i makes
tensor i + 1). Chains of standard layers are still written as version 1, which every runtime
since the first reads.

Per-layer ``ints`` / ``floats`` are documented in :func:`layer_record` / :func:`node_record`
and in the layer table of the C runtime; change both at once and bump ``FORMAT_VERSION``.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kwsnet.export.layers import ExportError
from kwsnet.fileio import atomic_write_bytes

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "GRAPH_FORMAT_VERSION",
    "conv2d_geometry",
    "graph_bytes",
    "node_record",
    "plan_arena",
    "write_graph",
    "LAYER_TYPES",
    "LayerRecord",
    "layer_record",
    "model_bytes",
    "write_model",
    "arena_bytes",
    "as_named",
    "Layers",
]

# Modules, or ``(path, module)`` pairs (bare modules are named ``layer<i>``).
Layers = Sequence[nn.Module] | Sequence[tuple[str, nn.Module]]

MAGIC = b"KWSN"
CONV_SLACK = 32  # KWSN_CONV_SLACK in cnative/src/kwsn_kernels.h
FORMAT_VERSION = 1  # chains of standard layers (model_bytes)
GRAPH_FORMAT_VERSION = 2  # graphs (graph_bytes)
# Mirrors kwsn_layer_type in cnative/include/kwsnet.h.
LAYER_TYPES: dict[str, int] = {
    "AvgPool1d": 1,
    "Conv1d": 2,
    "LayerNorm": 3,
    "ReLU": 4,
    "MaxPool1d": 5,
    "AdaptiveAvgPool1d": 6,
    "Flatten": 7,
    "Linear": 8,
    "FrontEnd": 9,
    "Conv1dEx": 10,
    "Add": 11,
    "AttnPool": 12,
    "Conv2d": 13,
    "AttnStatsPool": 14,
    "L2Norm": 15,
    "RowAffine": 16,
    "SiLU": 17,
    "BroadcastAdd": 18,
}
# The C ops whose output may take the slot of an input read for the last time
# (overwrites_input in kwsn_model.c's table): the memory plan below mirrors kwsn_model.c's.
_OVERWRITES_INPUT = frozenset({"LayerNorm", "ReLU", "Flatten", "Add", "RowAffine", "SiLU"})


@dataclass(frozen=True)
class LayerRecord:
    """One layer as stored: type id, integer shape parameters, float32 payload."""

    name: str
    type: int
    ints: tuple[int, ...]
    floats: np.ndarray  # float32, 1-D

    def to_bytes(self) -> bytes:
        head = struct.pack("<3I", self.type, len(self.ints), self.floats.size)
        ints = struct.pack(f"<{len(self.ints)}i", *self.ints)
        return head + ints + self.floats.astype("<f4", copy=False).tobytes()


def _one(v: int | Sequence[int], what: str, layer: str) -> int:
    if isinstance(v, int):
        return v
    if len(v) != 1:
        raise ExportError(f"{layer}: {what}={v} must be a single value")
    return int(v[0])


def _f32(*tensors: torch.Tensor) -> np.ndarray:
    parts = [t.detach().to(torch.float32).cpu().reshape(-1).numpy() for t in tensors]
    arr = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _pool(m: nn.AvgPool1d | nn.MaxPool1d, name: str, path: str) -> tuple[int, int]:
    k = _one(m.kernel_size, "kernel_size", path)
    s = _one(m.stride if m.stride is not None else k, "stride", path)
    if _one(m.padding, "padding", path) != 0 or m.ceil_mode:
        raise ExportError(f"{name} at '{path}': only padding=0, ceil_mode=False is supported")
    if isinstance(m, nn.MaxPool1d) and (
        _one(m.dilation, "dilation", path) != 1 or m.return_indices
    ):
        raise ExportError(f"MaxPool1d at '{path}': only dilation=1 without indices is supported")
    return k, s


def layer_record(module: nn.Module, path: str = "") -> LayerRecord:
    """Encode one supported layer.

    ints / floats per type:
        AvgPool1d, MaxPool1d: [kernel, stride] / none
        Conv1d: [in_ch, out_ch, kernel (odd), has_bias] / weight [out, in, k], bias [out]
        LayerNorm: [norm_ndim (1|2), d0, d1 (1 if norm_ndim == 1), affine] /
            eps, weight [N], bias [N]   (bias zeros if the LayerNorm has weight only)
        ReLU, Flatten (start_dim=1, end_dim=-1): none / none
        AdaptiveAvgPool1d: [output_size == 1] / none
        Linear: [in, out, has_bias] / weight [out, in], bias [out]

    Raises:
        ExportError: for settings the runtime does not implement (named with ``path``).
    """
    name = type(module).__name__
    empty = np.zeros(0, np.float32)
    if isinstance(module, nn.AvgPool1d):
        return LayerRecord(name, 1, _pool(module, name, path), empty)
    if isinstance(module, nn.MaxPool1d):
        return LayerRecord(name, 5, _pool(module, name, path), empty)
    if isinstance(module, nn.Conv1d):
        k = module.kernel_size[0]
        same = module.padding == "same" or module.padding == (k // 2,)
        if (
            module.stride != (1,)
            or module.dilation != (1,)
            or module.groups != 1
            or module.padding_mode != "zeros"
            or k % 2 != 1
            or not same
        ):
            raise ExportError(
                f"Conv1d at '{path}': only stride 1, dilation 1, groups 1, odd kernel with zero "
                f"'same' padding is supported (got kernel {k}, stride {module.stride}, padding "
                f"{module.padding}, groups {module.groups})"
            )
        has_bias = module.bias is not None
        t = [module.weight] + ([module.bias] if has_bias else [])
        ints = (module.in_channels, module.out_channels, k, int(has_bias))
        return LayerRecord(name, 2, ints, _f32(*t))
    if isinstance(module, nn.LayerNorm):
        shape = tuple(module.normalized_shape)
        if len(shape) not in (1, 2):
            raise ExportError(f"LayerNorm at '{path}': normalized_shape {shape} must be 1-D or 2-D")
        d0, d1 = (shape[0], 1) if len(shape) == 1 else shape
        eps = torch.tensor([module.eps], dtype=torch.float32)
        if module.weight is None:
            return LayerRecord(name, 3, (len(shape), d0, d1, 0), _f32(eps))
        bias = module.bias if module.bias is not None else torch.zeros_like(module.weight)
        return LayerRecord(name, 3, (len(shape), d0, d1, 1), _f32(eps, module.weight, bias))
    if isinstance(module, nn.ReLU):
        return LayerRecord(name, 4, (), empty)
    if isinstance(module, nn.AdaptiveAvgPool1d):
        if _one(module.output_size, "output_size", path) != 1:
            raise ExportError(f"AdaptiveAvgPool1d at '{path}': only output_size=1 is supported")
        return LayerRecord(name, 6, (1,), empty)
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise ExportError(f"Flatten at '{path}': only start_dim=1, end_dim=-1 is supported")
        return LayerRecord(name, 7, (), empty)
    if isinstance(module, nn.Linear):
        has_bias = module.bias is not None
        t = [module.weight] + ([module.bias] if has_bias else [])
        ints = (module.in_features, module.out_features, int(has_bias))
        return LayerRecord(name, 8, ints, _f32(*t))
    raise ExportError(f"unsupported layer {name} at '{path or '<root>'}'")


def as_named(
    layers: Layers,
) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` pairs; bare modules are named ``layer<i>``."""
    return [x if isinstance(x, tuple) else (f"layer{i}", x) for i, x in enumerate(layers)]


def model_bytes(
    layers: Layers,
    input_shape: Sequence[int],
    sample_rate: int = 16000,
) -> bytes:
    """Serialise ``layers`` (modules or ``(path, module)`` pairs) for per-sample
    ``input_shape`` (``(1, T)`` for raw audio, or ``(F,)``)."""
    if len(input_shape) not in (1, 2):
        raise ExportError(f"input_shape {tuple(input_shape)} must be (C, L) or (F,)")
    dims = (*input_shape, 1) if len(input_shape) == 1 else tuple(input_shape)
    named = as_named(layers)
    records = []
    for path, module in named:
        rec = layer_record(module, path)
        if not np.all(np.isfinite(rec.floats)):
            raise ExportError(f"{rec.name} at '{path}' has non-finite weights")
        records.append(rec)
    body = MAGIC + struct.pack(
        "<6I", FORMAT_VERSION, sample_rate, len(input_shape), dims[0], dims[1], len(records)
    )
    body += b"".join(r.to_bytes() for r in records)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def write_model(
    layers: Layers,
    input_shape: Sequence[int],
    path: str | Path,
    sample_rate: int = 16000,
) -> int:
    """Write the model file; returns its size in bytes."""
    data = model_bytes(layers, input_shape, sample_rate)
    atomic_write_bytes(path, data)  # a killed export never leaves half a model file
    return len(data)


def plan_arena(
    sizes: Sequence[int],
    inputs: Sequence[Sequence[int]],
    overwrites: Sequence[bool],
    scratch_floats: int,
) -> int:
    """``kwsn_arena_bytes`` of the C memory plan (``plan_memory`` in kwsn_model.c, step for
    step): node i (output ``sizes[i]`` floats, reading tensor ids ``inputs[i]``) takes the
    slot of an input read for the last time when ``overwrites[i]``, else the first slot whose
    tensor is dead, else a new one; slots are 64-byte multiples, plus the largest scratch."""
    n = len(sizes)
    last = list(range(n))
    for i, ins in enumerate(inputs):
        for t in ins:
            if t > 0:
                last[t - 1] = i
    if n:
        last[-1] = n
    slot = [0] * n
    occupant: dict[int, int] = {}  # slot (its opener) -> tensor id
    size: dict[int, int] = {}
    for i in range(n):
        s = None
        if overwrites[i]:
            s = next((slot[t - 1] for t in inputs[i] if t > 0 and last[t - 1] == i), None)
        if s is None:
            s = next((c for c in sorted(occupant) if last[occupant[c] - 1] < i), None)
        if s is None:
            s, size[i] = i, 0
        slot[i] = s
        occupant[s] = i + 1
        size[s] = max(size[s], _round64(sizes[i] * 4))
    return sum(size.values()) + _round64(scratch_floats * 4)


@torch.no_grad()
def arena_bytes(layers: Layers, input_shape: Sequence[int]) -> int:
    """The C runtime's ``kwsn_arena_bytes`` for a chain of layers (:func:`plan_arena`): the
    activation slots plus the largest layer scratch (a Conv1d's zero-padded input and 32
    floats of slack, the widest kernel path's tail tile), found by running a zero sample
    through ``layers``."""
    x = torch.zeros(1, *input_shape)
    sizes, scratch, kinds = [], 0, []
    for _, m in as_named(layers):
        if isinstance(m, nn.Conv1d):
            k = m.kernel_size[0]
            scratch = max(scratch, m.in_channels * (x.shape[-1] + k - 1) + CONV_SLACK)
        x = m(x)
        sizes.append(x.numel())
        kinds.append(type(m).__name__)
    inputs = [(i,) for i in range(len(sizes))]
    return plan_arena(sizes, inputs, [k in _OVERWRITES_INPUT for k in kinds], scratch)


def _round64(n: int) -> int:
    return math.ceil(n / 64) * 64


def _conv_ex(conv: nn.Conv1d, path: str) -> LayerRecord:
    """Conv1dEx: [in, out, kernel, stride, padding, dilation, groups, has_bias] /
    weight [out, in / groups, k], bias [out]."""
    k, s, d = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
    if conv.padding_mode != "zeros":
        raise ExportError(f"Conv1d at '{path}': padding_mode {conv.padding_mode!r} (need zeros)")
    if isinstance(conv.padding, str):
        total = d * (k - 1) if conv.padding == "same" else 0
        if total % 2 or (conv.padding == "same" and s != 1):
            raise ExportError(f"Conv1d at '{path}': padding {conv.padding!r} is not symmetric")
        pad = total // 2
    else:
        pad = conv.padding[0]
    has_bias = conv.bias is not None
    t = [conv.weight] + ([conv.bias] if has_bias else [])
    ints = (conv.in_channels, conv.out_channels, k, s, pad, d, conv.groups, int(has_bias))
    return LayerRecord("Conv1dEx", LAYER_TYPES["Conv1dEx"], ints, _f32(*t))


def conv2d_geometry(conv: nn.Module) -> tuple[int, ...]:
    """The 13 geometry ints of a Conv2d record (``kwsnet.export.graph.FlatConv2d``): ``in, out,
    H_in, W_in, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_bottom, pad_left,
    pad_right, groups``."""
    c = conv.conv  # type: ignore[attr-defined]
    return (
        c.in_channels, c.out_channels, *conv.in_hw, *c.kernel_size, *c.stride,  # type: ignore[attr-defined]
        *conv.pad, c.groups,  # type: ignore[attr-defined]
    )  # fmt: skip


def node_record(node: object) -> LayerRecord:
    """Encode one :class:`~kwsnet.export.graph.Node`.

    ints / floats beyond :func:`layer_record`'s:
        FrontEnd: [n_fft, hop_length, n_mels, n_out, center, normalize, has_dct] /
            eps, window [n_fft], fbank [n_fft // 2 + 1, n_mels], dct [n_mels, n_out] (MFCC)
        Conv1dEx: [in, out, kernel, stride, padding, dilation, groups, has_bias] /
            weight [out, in / groups, k], bias [out]
        Add: none / none (two inputs of one shape)
        AttnPool: [channels] / score weight [channels], score bias (SelfAttentionPooling)
        Conv2d: [in, out, H_in, W_in, kernel_h, kernel_w, stride_h, stride_w, pad_top,
            pad_bottom, pad_left, pad_right, groups, has_bias] / weight [out, in / groups,
            kernel_h, kernel_w], bias [out] (``kwsnet.export.graph.FlatConv2d``)
        AttnStatsPool: [channels C, attention_channels H, global_context] / eps, w1 [H, A]
            (A = 3C with the global context, else C), b1 [H], w2 [C, H], b2 [C]
            (AttentiveStatisticsPooling's attention Linear, Tanh, Linear; [C, L] -> [2C])
        L2Norm: [n] / eps (``kwsnet.export.graph.L2Normalize``)
        RowAffine: [C, H, W] / scale [C, H], shift [C, H] (``kwsnet.export.graph.RowAffine``:
            SubSpectralNorm at inference on ``[C, H * W]``)
        SiLU: none / none
        BroadcastAdd: [C, H, W] / none (inputs ``[C, H * W]`` and ``[C, W]``,
            ``kwsnet.export.graph.BroadcastAdd``)
    """
    kind, path = node.kind, node.path  # type: ignore[attr-defined]
    if kind == "FrontEnd":
        t = node.tables  # type: ignore[attr-defined]
        parts = [np.array([t.eps], np.float32), t.window.reshape(-1), t.fbank.reshape(-1)]
        if t.dct is not None:
            parts.append(t.dct.reshape(-1))
        ints = (t.n_fft, t.hop_length, t.n_mels, t.n_out, int(t.center), t.normalize)
        ints += (int(t.dct is not None),)
        floats = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        return LayerRecord(kind, LAYER_TYPES[kind], ints, floats)
    if kind == "Conv1dEx":
        return _conv_ex(node.module, path)  # type: ignore[attr-defined]
    if kind == "Conv2d":
        conv = node.module.conv  # type: ignore[attr-defined]
        has_bias = conv.bias is not None
        t = [conv.weight] + ([conv.bias] if has_bias else [])
        ints = (*conv2d_geometry(node.module), int(has_bias))  # type: ignore[attr-defined]
        return LayerRecord(kind, LAYER_TYPES[kind], ints, _f32(*t))
    if kind == "Add":
        return LayerRecord(kind, LAYER_TYPES[kind], (), np.zeros(0, np.float32))
    if kind == "AttnPool":  # module: SelfAttentionPooling; its score Linear(C, 1)
        score = node.module.score  # type: ignore[attr-defined]
        bias = score.bias if score.bias is not None else torch.zeros(1)
        return LayerRecord(kind, LAYER_TYPES[kind], (score.in_features,), _f32(score.weight, bias))
    if kind == "AttnStatsPool":
        return _attn_stats_pool(node.module)  # type: ignore[attr-defined]
    if kind == "L2Norm":
        eps = torch.tensor([node.module.eps], dtype=torch.float32)  # type: ignore[attr-defined]
        n = int(node.module.features)  # type: ignore[attr-defined]
        return LayerRecord(kind, LAYER_TYPES[kind], (n,), _f32(eps))
    if kind == "RowAffine":
        m = node.module  # type: ignore[attr-defined]
        return LayerRecord(kind, LAYER_TYPES[kind], m.geometry, _f32(m.scale, m.shift))
    if kind == "SiLU":
        return LayerRecord(kind, LAYER_TYPES[kind], (), np.zeros(0, np.float32))
    if kind == "BroadcastAdd":
        geo = node.module.geometry  # type: ignore[attr-defined]
        return LayerRecord(kind, LAYER_TYPES[kind], geo, np.zeros(0, np.float32))
    return layer_record(node.module, path)  # type: ignore[attr-defined]


def _attn_stats_pool(pool: nn.Module) -> LayerRecord:
    """AttnStatsPool of a ``kwsnet.nn.pooling.AttentiveStatisticsPooling`` whose attention net
    is Linear → Tanh → Linear (the tracer checked it); its variance floor is
    ``kwsnet.nn.pooling.STD_EPS``."""
    from kwsnet.nn.pooling import STD_EPS

    lin1, lin2 = pool.attention[0], pool.attention[2]  # type: ignore[index]
    parts = []
    for lin in (lin1, lin2):
        parts += [lin.weight, lin.bias if lin.bias is not None else torch.zeros(lin.out_features)]
    ints = (lin2.out_features, lin1.out_features, int(bool(pool.global_context)))
    eps = torch.tensor([STD_EPS], dtype=torch.float32)
    return LayerRecord("AttnStatsPool", LAYER_TYPES["AttnStatsPool"], ints, _f32(eps, *parts))


def graph_records(graph: object) -> list[LayerRecord]:
    """Every node's record, finite weights checked."""
    records = []
    for node in graph.nodes:  # type: ignore[attr-defined]
        rec = node_record(node)
        if not np.all(np.isfinite(rec.floats)):
            raise ExportError(f"{rec.name} at '{node.path}' has non-finite weights")
        records.append(rec)
    return records


def graph_bytes(graph: object, sample_rate: int = 16000) -> bytes:
    """Serialise a :class:`~kwsnet.export.graph.Graph` as format version 2."""
    shape = graph.input_shape  # type: ignore[attr-defined]
    if len(shape) not in (1, 2):
        raise ExportError(f"input_shape {tuple(shape)} must be (C, L) or (F,)")
    dims = (*shape, 1) if len(shape) == 1 else tuple(shape)
    records = graph_records(graph)
    body = MAGIC + struct.pack(
        "<6I", GRAPH_FORMAT_VERSION, sample_rate, len(shape), dims[0], dims[1], len(records)
    )
    for node, rec in zip(graph.nodes, records, strict=True):  # type: ignore[attr-defined]
        ins = tuple(node.inputs)
        head = struct.pack(
            f"<4I{len(ins)}I", rec.type, len(ins), len(rec.ints), rec.floats.size, *ins
        )
        body += head + struct.pack(f"<{len(rec.ints)}i", *rec.ints)
        body += rec.floats.astype("<f4", copy=False).tobytes()
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def write_graph(graph: object, path: str | Path, sample_rate: int = 16000) -> int:
    """Write a format-v2 model file; returns its size in bytes."""
    data = graph_bytes(graph, sample_rate)
    atomic_write_bytes(path, data)
    return len(data)
