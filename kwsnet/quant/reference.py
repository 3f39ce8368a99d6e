"""The integer reference: the int8 model's output, defined once, that the C int8 kernels must
equal bit for bit.

Every tensor between the input quantiser and the logits is an ``int8`` code tensor
(``real = scale * (q - zp)``); every op computes in int64 torch tensors holding int32 values
(torch has no int32 matmul; no intermediate of a valid model leaves int32, which
:func:`kwsnet.quant.ptq.quantize_graph` checks for the accumulators) and ends in
:func:`kwsnet.quant.fixedpoint.mbqm` + zero-point + clamp. Per op (``x`` the input codes):

- **quantise** (float → int8, only after the float front end and for raw audio input):
  ``q = clamp(round_half_even(x / scale) + zp, act_min, act_max)`` in float32 (``x / scale``
  is one correctly rounded float32 division, then a ties-to-even rounding).
- **Conv1dEx / Conv1d / Linear**: ``acc[o, t] = bias[o] + Σ_{c,k} w[o, c, k] * (x[c, t*s +
  k*d - pad] - zp_in)`` (padding contributes 0: the real zero), ``y = clamp(mbqm(acc,
  M[o], shift[o]) + zp_out, act_min, 127)``. Linear: ``k = 1``, ``L = 1``.
- **Conv2d**: the same sum over ``(c, r, k)`` of ``w[o, c, r, k] * (x[c, y*s_h + r - pad_top,
  t*s_w + k - pad_left] - zp_in)`` on each channel's row-major ``[H, W]`` plane of ``[C, H *
  W]``, padding the real zero, the same requantisation.
- **ReLU**: ``max(x, zp)`` (same params); a ReLU fused into its producer's clamp is a copy.
- **MaxPool1d**: max of the codes (same params). **Flatten**: a copy.
- **Add** (TFLite's): ``a' = mbqm((a - zp_a) << 20, M_a, s_a)``, ``b'`` likewise,
  ``y = clamp(mbqm(a' + b', M_o, s_o) + zp_out, act_min, 127)``.
- **AvgPool1d(k) / mean over L**: ``acc = Σ_window (x - zp_in)`` (int32), ``y = clamp(mbqm(acc,
  M, s) + zp_out, act_min, 127)`` with the real multiplier ``s_in / (k * s_out)``.
- **LayerNorm** (integer; raw_conv's per-conv norm), per group of ``N`` contiguous codes
  (``normalized_shape`` ``[d0, d1]``: the whole ``[C, L]`` sample; ``[d0]``: each row),
  ``x = q - zp_in``::

      S1 = Σ x, S2 = Σ x²  (int64);  D = N S2 - S1²  (= N² var(x));  R = isqrt(D + E)
      num = N x - S1;  t = num << (K + 1);  Z = trunc((t + sign(t) R) / (2 R))   (0 if R = 0)
      y = clamp(mbqm(Z G + (B << b), M, shift) + zp_out, act_min, act_max)

  ``Z`` is ``(x - mean) / sqrt(var + eps / s_in²)`` in Q``K`` (K = 12), rounded half away
  from zero; ``E = round(N² eps / s_in²)``; ``G`` int8 gamma (scale ``s_g``), ``B`` int16
  beta in the accumulator's units shifted right by ``b`` (``B 2^b ≈ beta 2^K / s_g``, the
  smallest ``b`` that fits int16; so the output is rounded once), ``M, shift`` the
  multiplier ``s_g / (2^K s_out)``. ``isqrt`` is the
  floor of the exact square root. No float anywhere (``N <= 2^20`` keeps every intermediate
  in int64 and ``Z G`` in int32).
- **FrontEnd**: float, then quantised with its own scale.
- **RowAffine** (SubSpectralNorm): a depthwise kernel-1 conv over the ``C * H`` rows of ``W``
  codes of ``[C, H * W]`` (one int8 weight, bias, multiplier and shift per row), as Conv1d.
- **SiLU**: ``table[q + 128]``, the 256 codes of :func:`kwsnet.quant.ptq.silu_table`.
- **BroadcastAdd**: Add's arithmetic with ``b [C, W]`` added to every row of ``a [C, H * W]``.
- **AttnStatsPool / L2Norm** (float islands): ``x = (q - zp_in) * s_in`` in float32 (one
  rounding), the float op as the C kernel computes it (``kwsnet.quant.islands``: float32
  numpy, op for op, the record's own weights), then quantised as the front end's output.

Output: the last node's **int8 logits** and their QParams; :class:`Int8Output` gives the
dequantised float logits ``scale * (q - zp)`` and the prediction ``argmax`` of the codes (the
first maximum on a tie, as ``torch.argmax`` and a C loop with ``>`` do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kwsnet.export.cnative import node_record
from kwsnet.quant.fixedpoint import mbqm
from kwsnet.quant.islands import ISLAND_KINDS, run_island
from kwsnet.quant.ptq import QNode, QParams, QuantGraph

__all__ = ["Int8Output", "dequantize", "quantize_float", "run_int8", "run_int8_tensors"]


@dataclass
class Int8Output:
    """``codes`` int8 ``[B, C]`` logits with ``qparams``; ``tensors``: every tensor's codes
    (``None`` for float audio) when asked for."""

    codes: torch.Tensor
    qparams: QParams
    tensors: list[torch.Tensor | None] | None = None

    @property
    def logits(self) -> torch.Tensor:
        """``[B, C]`` float32 dequantised logits."""
        return dequantize(self.codes, self.qparams)

    @property
    def predictions(self) -> torch.Tensor:
        """``[B]`` argmax of the int8 codes (first maximum on a tie)."""
        return self.codes.reshape(len(self.codes), -1).to(torch.int64).argmax(dim=1)


def quantize_float(x: torch.Tensor, q: QParams, act_min: int = -128) -> torch.Tensor:
    """float32 → int8 codes: ``clamp(round_half_even(x / scale) + zp, act_min, 127)``."""
    scale = torch.tensor(q.scale, dtype=torch.float32)
    v = torch.round(x.to(torch.float32) / scale).to(torch.int64) + q.zero_point
    return torch.clamp(v, act_min, 127).to(torch.int8)


def dequantize(codes: torch.Tensor, q: QParams) -> torch.Tensor:
    """int8 codes → float32 ``scale * (codes - zp)``."""
    return (codes.to(torch.int64) - q.zero_point).to(torch.float32) * torch.tensor(
        q.scale, dtype=torch.float32
    )


def _requant(acc: torch.Tensor, n: QNode, mult: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    y = mbqm(acc, mult.to(torch.int64), shift.to(torch.int64)) + n.out.zero_point
    return torch.clamp(y, n.act_min, n.act_max).to(torch.int8)


def _patches_requant(cols: torch.Tensor, n: QNode) -> torch.Tensor:
    """A conv on centred int64 input patches ``cols [B, C, L', K]`` (``K`` taps per channel,
    in the weight's order): the grouped sums, the bias, the requantisation → int8 ``[B, O, L']``."""
    g = n.ints
    b, c, lout, k = cols.shape
    groups = g["groups"]
    cols = cols.reshape(b, groups, c // groups, lout, k)
    w = n.tensors["weight"].to(torch.int64).reshape(groups, g["out"] // groups, c // groups, k)
    acc = torch.einsum("bgclk,gock->bgol", cols, w).reshape(b, g["out"], lout)
    acc = acc + n.tensors["bias"].to(torch.int64)[None, :, None]
    mult = n.tensors["multiplier"][None, :, None]
    shift = n.tensors["shift"][None, :, None]
    return _requant(acc, n, mult, shift)


def _conv(x: torch.Tensor, n: QNode, q_in: QParams) -> torch.Tensor:
    """``x`` int8 ``[B, C, L]`` (or ``[B, F]`` for Linear) → int8 ``[B, O, L']`` / ``[B, O]``."""
    g = n.ints
    w = n.tensors["weight"].to(torch.int64)
    xs = x.to(torch.int64) - q_in.zero_point
    if n.kind == "Linear":
        acc = xs.reshape(len(xs), -1) @ w.reshape(g["out"], -1).T + n.tensors["bias"].to(
            torch.int64
        )
        return _requant(acc, n, n.tensors["multiplier"], n.tensors["shift"])
    k, s, d, p = g["kernel"], g["stride"], g["dilation"], g["padding"]
    xp = torch.nn.functional.pad(xs, (p, p))  # zeros = the real zero after "- zp_in"
    span = d * (k - 1) + 1
    return _patches_requant(xp.unfold(2, span, s)[..., ::d], n)  # [B, C, L', k]


def _conv2d(x: torch.Tensor, n: QNode, q_in: QParams) -> torch.Tensor:
    """``x`` int8 ``[B, C, H * W]`` → int8 ``[B, O, H' * W']`` (module docstring)."""
    g = n.ints
    xs = x.to(torch.int64).reshape(len(x), g["in"], g["in_h"], g["in_w"]) - q_in.zero_point
    xp = torch.nn.functional.pad(xs, (g["pad_left"], g["pad_right"], g["pad_top"], g["pad_bottom"]))
    kh, kw = g["kernel_h"], g["kernel_w"]
    cols = xp.unfold(2, kh, g["stride_h"]).unfold(3, kw, g["stride_w"])  # [B, C, H', W', kh, kw]
    b, c, ho, wo = cols.shape[:4]
    return _patches_requant(cols.reshape(b, c, ho * wo, kh * kw), n)


def _layernorm(x: torch.Tensor, n: QNode, q_in: QParams) -> torch.Tensor:
    """Integer LayerNorm of int8 ``x [B, ...]`` (module docstring)."""
    g = n.ints
    size = g["d0"] * g["d1"]
    k = g["frac_bits"]
    xs = (x.to(torch.int64) - q_in.zero_point).reshape(-1, size)  # [groups, N]
    s1 = xs.sum(dim=1)
    s2 = (xs * xs).sum(dim=1)
    d = size * s2 - s1 * s1
    e = int(n.tensors["eps_term"][0])
    r = torch.tensor([math.isqrt(int(v) + e) for v in d.tolist()], dtype=torch.int64)[:, None]
    t = (size * xs - s1[:, None]) << (k + 1)
    num = torch.where(t >= 0, t + r, t - r)
    z = torch.where(r > 0, torch.div(num, torch.clamp(2 * r, min=1), rounding_mode="trunc"), 0)
    acc = z * n.tensors["gamma"].to(torch.int64).reshape(1, size)
    acc = acc + (n.tensors["beta"].to(torch.int64).reshape(1, size) << g["beta_shift"])
    y = mbqm(acc, n.tensors["multiplier"].to(torch.int64), n.tensors["shift"].to(torch.int64))
    y = y + n.out.zero_point
    return torch.clamp(y, n.act_min, n.act_max).to(torch.int8).reshape(x.shape)


def _node(n: QNode, xs: list[torch.Tensor], qin: list[QParams | None]) -> torch.Tensor:
    kind = n.kind
    if kind == "FrontEnd":
        feats = n.float_module.ref([xs[0].to(torch.float32)])  # type: ignore[union-attr]
        return quantize_float(feats, n.out, n.act_min)
    x = xs[0]
    q_in = qin[0]
    if kind in ISLAND_KINDS:
        rec = node_record(n.float_module)
        xf = dequantize(x, q_in).numpy()  # type: ignore[arg-type]
        y = torch.from_numpy(run_island(kind, xf, rec.ints, rec.floats))
        return quantize_float(y, n.out, n.act_min)
    if kind in ("Conv1dEx", "Conv1d", "Linear"):
        return _conv(x, n, q_in)  # type: ignore[arg-type]
    if kind == "RowAffine":
        c, h, w = n.ints["channels"], n.ints["height"], n.ints["width"]
        y = _conv(x.reshape(len(x), c * h, w), n, q_in)  # type: ignore[arg-type]
        return y.reshape(len(x), c, h * w)
    if kind == "SiLU":
        return n.tensors["table"][x.to(torch.int64) + 128]
    if kind == "Conv2d":
        return _conv2d(x, n, q_in)  # type: ignore[arg-type]
    if kind == "ReLU":
        return x.clone() if n.relu_alias else torch.clamp(x, min=n.act_min)
    if kind == "Flatten":
        return x.reshape(len(x), -1).clone()
    if kind == "MaxPool1d":
        k, s = n.ints["kernel"], n.ints["stride"]
        return x.unfold(2, k, s).amax(dim=-1)
    if kind in ("AvgPool1d", "AdaptiveAvgPool1d"):
        k, s = n.ints["kernel"], n.ints["stride"]
        acc = (x.to(torch.int64) - q_in.zero_point).unfold(2, k, s).sum(dim=-1)  # type: ignore[union-attr]
        return _requant(acc, n, n.tensors["multiplier"], n.tensors["shift"])
    if kind in ("Add", "BroadcastAdd"):
        ls = n.ints["left_shift"]
        m, sh = n.tensors["multiplier"].to(torch.int64), n.tensors["shift"].to(torch.int64)
        a = mbqm((x.to(torch.int64) - q_in.zero_point) << ls, m[0], sh[0])  # type: ignore[union-attr]
        b = mbqm((xs[1].to(torch.int64) - qin[1].zero_point) << ls, m[1], sh[1])  # type: ignore[union-attr]
        if kind == "Add":
            return _requant(a + b, n, m[2], sh[2])
        c, h, w = n.ints["channels"], n.ints["height"], n.ints["width"]
        y = _requant(a.reshape(len(a), c, h, w) + b.reshape(len(b), c, 1, w), n, m[2], sh[2])
        return y.reshape(len(x), c, h * w)
    if kind == "LayerNorm":
        return _layernorm(x, n, q_in)  # type: ignore[arg-type]
    raise ValueError(f"'{n.path}': no integer kernel for {kind}")


@torch.no_grad()
def run_int8_tensors(
    qgraph: QuantGraph, x: torch.Tensor, frontend_codes: torch.Tensor | None = None
) -> list[torch.Tensor | None]:
    """Every tensor of ``qgraph`` for a float batch ``x [B, *input_shape]`` (or ``[B, T]``):
    ``[input codes or None (float audio), t1, ...]`` as int8 code tensors.

    ``frontend_codes``: int8 ``[B, n_out, frames]`` to use as the FrontEnd node's output
    instead of computing it (the C front end's codes, so that the integer path after the one
    float island is compared on its own: ``kwsnet parity --dtype int8``)."""
    x = x.reshape(len(x), *qgraph.input_shape).to(torch.float32)
    first: torch.Tensor | None = None
    if qgraph.input_q is not None:
        first = quantize_float(x, qgraph.input_q)
    tensors: list[torch.Tensor | None] = [first]
    for n in qgraph.nodes:
        if n.kind == "FrontEnd" and frontend_codes is not None:
            if frontend_codes.dim() != 3 or len(frontend_codes) != len(x):
                raise ValueError(
                    f"frontend_codes must be [B={len(x)}, n_out, frames], "
                    f"got {tuple(frontend_codes.shape)}"
                )
            tensors.append(frontend_codes.to(torch.int8))
            continue
        if n.kind == "FrontEnd":
            ins = [x]
        else:
            ins = [tensors[t] for t in n.inputs]  # type: ignore[misc]
        tensors.append(_node(n, ins, [qgraph.qparams[t] for t in n.inputs]))  # type: ignore[arg-type]
    return tensors


def run_int8(
    qgraph: QuantGraph,
    x: torch.Tensor,
    keep_tensors: bool = False,
    frontend_codes: torch.Tensor | None = None,
) -> Int8Output:
    """The int8 model's logits for ``x`` (see the module docstring; ``frontend_codes`` as in
    :func:`run_int8_tensors`)."""
    tensors = run_int8_tensors(qgraph, x, frontend_codes)
    last = qgraph.qparams[-1]
    assert last is not None and tensors[-1] is not None
    return Int8Output(tensors[-1], last, tensors if keep_tensors else None)
