"""The int8 model file (format version 3), written here and loaded by the C runtime
(``cnative/src/kwsn_model.c``, which checks every field below).

Same container as ``kwsnet/export/cnative.py`` (little-endian, "KWSN" magic, CRC-32 of every
byte before it at the end); version 3 adds the input quantiser to the header and three payload
arrays to each record::

    char magic[4] = "KWSN"; u32 version = 3; u32 sample_rate; u32 in_ndim; u32 in_dim[2];
    u32 n_layers; u32 has_input_q; f32 input_scale; i32 input_zero_point;       (40 bytes)
    n_layers x {
        u32 type;            // LAYER_TYPES[kind] | INT8_FLAG (0x100)
        u32 n_inputs; u32 n_ints; u32 n_floats; u32 n_words; u32 n_bytes;     (24 bytes)
        u32 inputs[n_inputs];   // tensor ids, as format 2
        i32 ints[n_ints];       // ints[0:3] = out_zero_point, act_min, act_max; then per type
        f32 floats[n_floats];   // floats[0] = out_scale; then per type
        i32 words[n_words];     // bias, multipliers, shifts
        i8  bytes[n_bytes];     // int8 weights, then zero padding to a multiple of 4
    }
    u32 crc32

Every tensor's (scale, zero-point) is its producer's ``floats[0]`` / ``ints[0]`` (tensor 0's
is the header's), so a layer finds its input zero-point there and the loader checks that
consumers agree. Per type, after the common prefix (``[out_zp, act_min, act_max]`` /
``[out_scale]``):

- FrontEnd: ints/floats = the FrontEnd's v2 ints/floats; no words/bytes (float; the
  output is quantised with ``out_scale`` / ``out_zero_point``).
- AttnStatsPool, L2Norm (float islands, ``kwsnet.quant.islands``): ints/floats = the v2
  record's; no words/bytes; the input codes are dequantised, the float op runs, the output is
  quantised (``act_max`` 127).
- Conv1dEx, Conv1d: ints ``in, out, kernel, stride, pad, dilation, groups``; floats
  ``weight_scale[out]``; words ``bias[out], multiplier[out], shift[out]``; bytes
  ``weight[out, in / groups, kernel]``.
- Conv2d: ints ``in, out, H_in, W_in, kernel_h, kernel_w, stride_h, stride_w, pad_top,
  pad_bottom, pad_left, pad_right, groups``; floats, words as a conv; bytes
  ``weight[out, in / groups, kernel_h, kernel_w]`` (tensors ``[C, H * W]``).
- Linear: ints ``in, out`` (a kernel-1 conv on ``L = 1``); floats, words, bytes as a conv
  (weight ``[out, in]``).
- RowAffine (SubSpectralNorm): ints ``C, H, W``; floats, words, bytes as a depthwise
  kernel-1 conv over the ``C * H`` rows (weight ``[C * H]``).
- Add: ints ``left_shift`` (20); words ``M_a, shift_a, M_b, shift_b, M_out, shift_out``.
  BroadcastAdd: ints ``left_shift, C, H, W``; words as Add.
- SiLU: no ints of its own; bytes the 256-entry table (``out = table[q + 128]``).
- AvgPool1d, AdaptiveAvgPool1d (mean): ints ``kernel, stride`` (mean: ``L, L``); words
  ``M, shift``.
- MaxPool1d: ints ``kernel, stride``. ReLU: ints ``alias`` (1: the producer's clamp did it, a
  copy). Flatten: nothing.
- LayerNorm (integer, ``kwsnet.quant.reference``): ints ``norm_ndim, d0, d1, frac_bits,
  beta_shift``; floats ``gamma_scale, eps`` (for checking); words ``M, shift, E_lo, E_hi``
  (the eps term ``E = E_hi * 2^32 + (u32) E_lo``); bytes ``G int8[N]`` then ``B int16[N]``
  little-endian (beta in the accumulator's units is ``B << beta_shift``; ``N = d0 * d1``:
  3 bytes per element against the float file's 8).

``weight_scale`` is not needed by the integer kernels (it is folded into the multipliers); it
is kept (4 bytes per output channel) so a file can be dequantised and checked on its own.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kwsnet.export.cnative import LAYER_TYPES, MAGIC, node_record
from kwsnet.fileio import atomic_write_bytes
from kwsnet.quant.ptq import CONV2D_GEOMETRY, FLOAT_ISLANDS, QNode, QuantGraph

__all__ = [
    "HEADER_BYTES",
    "INT8_FLAG",
    "QUANT_FORMAT_VERSION",
    "RECORD_HEAD_BYTES",
    "QRecord",
    "QuantFile",
    "parse_quant_bytes",
    "qnode_record",
    "quant_bytes",
    "weight_bytes",
    "write_quant",
]

QUANT_FORMAT_VERSION = 3
INT8_FLAG = 0x100
HEADER_BYTES = 40  # magic .. input_zero_point
RECORD_HEAD_BYTES = 24  # type .. n_bytes
_CONV_IDS = ("Conv1dEx", "Conv1d")


@dataclass
class QRecord:
    """One int8 layer as stored (see the module docstring's table)."""

    type: int
    inputs: tuple[int, ...]
    ints: tuple[int, ...]
    floats: np.ndarray  # float32 1-D
    words: np.ndarray  # int32 1-D
    data: np.ndarray  # int8 1-D

    def to_bytes(self) -> bytes:
        head = struct.pack(
            "<6I",
            self.type,
            len(self.inputs),
            len(self.ints),
            self.floats.size,
            self.words.size,
            self.data.size,
        )
        pad = (-self.data.size) % 4
        return b"".join(
            [
                head,
                struct.pack(f"<{len(self.inputs)}I", *self.inputs),
                struct.pack(f"<{len(self.ints)}i", *self.ints),
                self.floats.astype("<f4", copy=False).tobytes(),
                self.words.astype("<i4", copy=False).tobytes(),
                self.data.astype(np.int8, copy=False).tobytes(),
                bytes(pad),
            ]
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QRecord):
            return NotImplemented
        return (
            (self.type, self.inputs, self.ints) == (other.type, other.inputs, other.ints)
            and np.array_equal(self.floats.view(np.uint32), other.floats.view(np.uint32))
            and np.array_equal(self.words, other.words)
            and np.array_equal(self.data, other.data)
        )

    @property
    def payload_bytes(self) -> int:
        """Bytes of the arrays (floats, words, int8 data with its padding)."""
        return 4 * (self.floats.size + self.words.size) + self.data.size + (-self.data.size) % 4


@dataclass
class QuantFile:
    """A parsed version-3 file."""

    sample_rate: int
    input_shape: tuple[int, ...]
    input_q: tuple[float, int] | None
    records: list[QRecord] = field(default_factory=list)


def _f32(values: list[float] | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1))


def _i32(*arrays: object) -> np.ndarray:
    parts = [np.asarray(a, dtype=np.int64).reshape(-1) for a in arrays]
    arr = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return np.ascontiguousarray(arr.astype(np.int32))


def qnode_record(n: QNode, float_node: object | None = None) -> QRecord:
    """Encode one :class:`~kwsnet.quant.ptq.QNode` (``float_node``: the float graph's node,
    needed for the FrontEnd island's v2 payload)."""
    base_i = (n.out.zero_point, n.act_min, n.act_max)
    base_f = [n.out.scale]
    empty8 = np.zeros(0, np.int8)
    t = n.tensors
    type_id = LAYER_TYPES[n.kind] | INT8_FLAG
    if n.kind == "LayerNorm":
        e = int(t["eps_term"][0])
        lo = e & 0xFFFFFFFF
        words = _i32(
            t["multiplier"], t["shift"], [lo - (1 << 32) if lo >= 1 << 31 else lo, e >> 32]
        )
        keys = ("norm_ndim", "d0", "d1", "frac_bits", "beta_shift")
        ints = base_i + tuple(n.ints[k] for k in keys)
        floats = _f32([n.out.scale, float(t["gamma_scale"][0]), float(t["eps"][0])])
        g_bytes = t["gamma"].numpy().reshape(-1).astype(np.int8)
        b_bytes = t["beta"].numpy().reshape(-1).astype("<i2").view(np.int8)
        return QRecord(type_id, n.inputs, ints, floats, words, np.concatenate([g_bytes, b_bytes]))
    if n.kind in FLOAT_ISLANDS:
        if float_node is None:
            raise ValueError(f"'{n.path}': the float island needs its float node")
        rec = node_record(float_node)
        floats = _f32(np.concatenate([_f32(base_f), rec.floats]))
        return QRecord(type_id, n.inputs, base_i + rec.ints, floats, _i32(), empty8)
    if n.kind in (*_CONV_IDS, "Conv2d", "Linear", "RowAffine"):
        g = n.ints
        if n.kind == "Linear":
            ints = base_i + (g["in"], g["out"])
        elif n.kind == "RowAffine":
            ints = base_i + (g["channels"], g["height"], g["width"])
        elif n.kind == "Conv2d":
            ints = base_i + tuple(g[k] for k in CONV2D_GEOMETRY)
        else:
            geo = ("in", "out", "kernel", "stride", "padding", "dilation", "groups")
            ints = base_i + tuple(g[k] for k in geo)
        floats = _f32(np.concatenate([_f32(base_f), t["weight_scale"].numpy()]))
        words = _i32(t["bias"], t["multiplier"], t["shift"])
        data = t["weight"].numpy().reshape(-1).astype(np.int8)
        return QRecord(type_id, n.inputs, ints, floats, words, data)
    if n.kind in ("Add", "BroadcastAdd"):
        words = _i32(np.stack([t["multiplier"].numpy(), t["shift"].numpy()], 1))
        ints = base_i + (n.ints["left_shift"],)
        if n.kind == "BroadcastAdd":
            ints += (n.ints["channels"], n.ints["height"], n.ints["width"])
        return QRecord(type_id, n.inputs, ints, _f32(base_f), words, empty8)
    if n.kind == "SiLU":
        data = t["table"].numpy().reshape(-1).astype(np.int8)
        return QRecord(type_id, n.inputs, base_i, _f32(base_f), _i32(), data)
    if n.kind in ("AvgPool1d", "AdaptiveAvgPool1d"):
        words = _i32(t["multiplier"], t["shift"])
        ints = base_i + (n.ints["kernel"], n.ints["stride"])
        return QRecord(type_id, n.inputs, ints, _f32(base_f), words, empty8)
    if n.kind == "MaxPool1d":
        ints = base_i + (n.ints["kernel"], n.ints["stride"])
        return QRecord(type_id, n.inputs, ints, _f32(base_f), _i32(), empty8)
    if n.kind == "ReLU":
        return QRecord(
            type_id, n.inputs, base_i + (int(n.relu_alias),), _f32(base_f), _i32(), empty8
        )
    if n.kind == "Flatten":
        return QRecord(type_id, n.inputs, base_i, _f32(base_f), _i32(), empty8)
    raise ValueError(f"'{n.path}': no int8 record for {n.kind}")


def quant_records(qgraph: QuantGraph, graph: object) -> list[QRecord]:
    """Every node's record (``graph``: the float graph ``qgraph`` was quantised from)."""
    fnodes = graph.nodes  # type: ignore[attr-defined]
    return [qnode_record(n, f) for n, f in zip(qgraph.nodes, fnodes, strict=True)]


def quant_bytes(qgraph: QuantGraph, graph: object, sample_rate: int = 16000) -> bytes:
    """Serialise ``qgraph`` as format version 3."""
    shape = qgraph.input_shape
    dims = (*shape, 1) if len(shape) == 1 else tuple(shape)
    records = quant_records(qgraph, graph)
    q = qgraph.input_q
    body = MAGIC + struct.pack(
        "<7I", QUANT_FORMAT_VERSION, sample_rate, len(shape), dims[0], dims[1], len(records),
        int(q is not None),
    )  # fmt: skip
    body += struct.pack("<fi", q.scale if q else 0.0, q.zero_point if q else 0)
    body += b"".join(r.to_bytes() for r in records)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def write_quant(
    qgraph: QuantGraph, graph: object, path: str | Path, sample_rate: int = 16000
) -> int:
    """Write a version-3 file; returns its size in bytes."""
    data = quant_bytes(qgraph, graph, sample_rate)
    atomic_write_bytes(path, data)
    return len(data)


def parse_quant_bytes(data: bytes, name: str = "<bytes>") -> QuantFile:
    """Parse a version-3 file (the reference for the C loader).

    Raises:
        ValueError: bad magic, version, CRC, or a record running past the end (names ``name``
            and the byte offset).
    """
    if len(data) < HEADER_BYTES + 4 or data[:4] != MAGIC:
        raise ValueError(f"{name}: not a KWSN file (magic {data[:4]!r}, {len(data)} bytes)")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if crc != zlib.crc32(data[:-4]) & 0xFFFFFFFF:
        raise ValueError(f"{name}: CRC-32 mismatch (file damaged)")
    version, rate, ndim, d0, d1, n_layers, has_q = struct.unpack_from("<7I", data, 4)
    if version != QUANT_FORMAT_VERSION:
        raise ValueError(f"{name}: version {version}, expected {QUANT_FORMAT_VERSION}")
    if ndim not in (1, 2):
        raise ValueError(f"{name}: in_ndim {ndim}, expected 1 or 2")
    scale, zp = struct.unpack_from("<fi", data, 32)
    out = QuantFile(rate, (d0,) if ndim == 1 else (d0, d1), (scale, zp) if has_q else None)
    off, end = HEADER_BYTES, len(data) - 4
    for i in range(n_layers):
        if off + RECORD_HEAD_BYTES > end:
            raise ValueError(f"{name}: record {i} header at byte {off} runs past the end")
        typ, n_in, n_i, n_f, n_w, n_b = struct.unpack_from("<6I", data, off)
        off += RECORD_HEAD_BYTES
        size = 4 * (n_in + n_i + n_f + n_w) + n_b + (-n_b) % 4
        if off + size > end:
            raise ValueError(f"{name}: record {i} (type {typ:#x}) at byte {off} runs past the end")
        ins = struct.unpack_from(f"<{n_in}I", data, off)
        off += 4 * n_in
        ints = struct.unpack_from(f"<{n_i}i", data, off)
        off += 4 * n_i
        floats = np.frombuffer(data, "<f4", n_f, off).astype(np.float32)
        off += 4 * n_f
        words = np.frombuffer(data, "<i4", n_w, off).astype(np.int32)
        off += 4 * n_w
        b = np.frombuffer(data, np.int8, n_b, off).copy()
        off += n_b + (-n_b) % 4
        out.records.append(QRecord(typ, tuple(ins), tuple(ints), floats, words, b))
    if off != end:
        raise ValueError(f"{name}: {end - off} bytes after the last record")
    return out


def weight_bytes(records: list[object]) -> int:
    """Payload bytes of float (``LayerRecord``: 4 per float) or int8 (``QRecord``) records."""
    total = 0
    for r in records:
        if isinstance(r, QRecord):
            total += r.payload_bytes
        else:
            total += 4 * r.floats.size  # type: ignore[attr-defined]
    return total
