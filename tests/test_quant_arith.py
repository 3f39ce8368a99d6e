"""The int8 arithmetic (kwsnet/quant/fixedpoint.py) against exact Python-int models, and one
quantised conv against the float conv within its derived error bound."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.export.graph import graph_from_layers
from kwsnet.quant.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    mbqm,
    quantize_multiplier,
    rdbpot,
    srdhm,
)
from kwsnet.quant.ptq import QuantError, calibrate, quantize_graph
from kwsnet.quant.reference import dequantize, run_int8

EDGES = [
    INT32_MIN,
    INT32_MIN + 1,
    -(2**30),
    -3,
    -2,
    -1,
    0,
    1,
    2,
    3,
    2**30,
    INT32_MAX - 1,
    INT32_MAX,
]


def _round_away(num: int, den: int) -> int:
    """``num / den`` rounded to nearest, ties away from zero (exact Python ints, den > 0)."""
    q, r = divmod(abs(num), den)
    q += 2 * r >= den
    return q if num >= 0 else -q


def _srdhm_exact(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    return (a * b + 2**30) // 2**31  # nearest, ties toward +inf (Python // floors)


def _values(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return EDGES + [rng.randint(INT32_MIN, INT32_MAX) for _ in range(n)]


def test_srdhm_matches_exact_model_on_edges_and_random() -> None:
    vals = _values(40, 0)
    a = torch.tensor([x for x in vals for _ in vals])
    b = torch.tensor([y for _ in vals for y in vals])
    got = srdhm(a, b).tolist()
    want = [_srdhm_exact(x, y) for x in vals for y in vals]
    assert got == want
    assert all(INT32_MIN <= v <= INT32_MAX for v in got)


def test_srdhm_ties_round_toward_plus_infinity() -> None:
    # a * 2^30 / 2^31 = a / 2: odd a is an exact tie; gemmlowp's nudge 1 - 2^30 for a
    # negative product with C's truncating division rounds a negative tie up (-0.5 -> 0)
    a = torch.tensor([1, -1, 3, -3, 5, -5])
    assert srdhm(a, 2**30).tolist() == [1, 0, 2, -1, 3, -2]


@pytest.mark.parametrize("shift", range(32))
def test_rdbpot_matches_exact_model_every_shift(shift: int) -> None:
    vals = _values(60, shift)
    ties = [k * (1 << shift) + (1 << shift) // 2 for k in (-3, -1, 0, 2)] if shift else []
    vals += [v for v in ties if INT32_MIN <= v <= INT32_MAX]
    got = rdbpot(torch.tensor(vals), shift).tolist()
    assert got == [_round_away(v, 2**shift) for v in vals]


def test_rdbpot_rejects_bad_exponent() -> None:
    with pytest.raises(ValueError, match="0..31"):
        rdbpot(torch.tensor([1]), 32)


def test_quantize_multiplier_range_and_precision() -> None:
    rng = random.Random(1)
    reals = [2.0**-31, 1e-6, 0.25, 0.5, 0.999999999, 1.0, 3.7, 1000.0]
    reals += [10 ** rng.uniform(-9, 3) for _ in range(200)]
    for r in reals:
        m, s = quantize_multiplier(r)
        assert 2**30 <= m < 2**31, r
        assert -31 <= s <= 30
        assert abs(m * 2.0 ** (s - 31) - r) <= r * 2.0**-31
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0**-40) == (0, 0)
    with pytest.raises(ValueError):
        quantize_multiplier(-1.0)


def test_mbqm_within_one_lsb_of_the_real_product() -> None:
    rng = random.Random(2)
    xs, ms, ss, want = [], [], [], []
    for _ in range(3000):
        real = 10 ** rng.uniform(-7, 1.5)
        bound = min(2**31 - 1, int(2**20 / real))
        x = rng.randint(-bound, bound)
        m, s = quantize_multiplier(real)
        xs.append(x)
        ms.append(m)
        ss.append(s)
        want.append(x * m * 2.0 ** (s - 31))  # the quantised multiplier, exact in float64
    got = mbqm(torch.tensor(xs), torch.tensor(ms), torch.tensor(ss)).to(torch.float64)
    err = (got - torch.tensor(want, dtype=torch.float64)).abs()
    assert float(err.max()) <= 1.0  # two roundings of at most 1/2 each
    assert float(err.max()) > 0.25  # rounding happened (not a trivially exact set)


def test_mbqm_left_shift_saturates() -> None:
    m, s = quantize_multiplier(4.0)
    assert s > 0
    out = mbqm(torch.tensor([INT32_MAX, INT32_MIN, 3]), m, s).tolist()
    assert out[2] == 12
    assert out[0] == srdhm(INT32_MAX, m).item()  # x << s saturated to INT32_MAX first
    assert out[1] == srdhm(INT32_MIN, m).item()


@pytest.mark.kernel_path
@pytest.mark.parametrize("stride,dilation,groups", [(1, 1, 1), (2, 1, 2), (1, 2, 4)])
def test_quantised_conv_within_error_bound(stride: int, dilation: int, groups: int) -> None:
    torch.manual_seed(3)
    conv = nn.Conv1d(8, 12, 5, stride, padding=2 * dilation, dilation=dilation, groups=groups)
    conv.eval()
    g = graph_from_layers([("conv", conv)], (8, 40))
    x = torch.randn(16, 8, 40) * 0.7 + 0.2
    q = quantize_graph(g, calibrate(g, [x[:8], x[8:]]))
    out = run_int8(q, x, keep_tensors=True)
    qn = q.nodes[0]
    q_in, q_out = q.qparams[0], q.qparams[1]
    y = conv(x).detach().to(torch.float64)
    got = out.logits.to(torch.float64)
    # |Δy| <= s_out (requant, 2 roundings) + Σ|w_hat| s_in / 2 + Σ|x| s_w / 2 + s_in s_w / 2
    w_hat = (
        qn.tensors["weight"].to(torch.float64) * qn.tensors["weight_scale"].double()[:, None, None]
    )
    xi = dequantize(out.tensors[0], q_in)  # type: ignore[index,arg-type]
    conv_abs = nn.functional.conv1d(
        xi.abs().double(), torch.ones_like(w_hat), None, stride, 2 * dilation, dilation, groups
    )
    s_w = qn.tensors["weight_scale"].double()[None, :, None]
    bound = (
        q_out.scale
        + w_hat.abs().reshape(12, -1).sum(1)[None, :, None] * q_in.scale / 2
        + conv_abs * s_w / 2
        + q_in.scale * s_w / 2
        + q_in.scale * s_w * 1e-6  # float32 scales
    )
    err = (got - y).abs()
    assert bool((err <= bound).all()), float((err - bound).max())
    assert float(err.max()) > 0  # quantisation did something
    assert out.codes.dtype == torch.int8


def _layernorm_exact(codes: list[int], zp_in: int, n_node: object) -> list[int]:
    """The integer LayerNorm of one group, spelled out in Python ints from the docstring of
    kwsnet.quant.reference (an independent model of the torch code)."""
    t = n_node.tensors  # type: ignore[attr-defined]
    k = n_node.ints["frac_bits"]  # type: ignore[attr-defined]
    m, sh = int(t["multiplier"][0]), int(t["shift"][0])
    xs = [c - zp_in for c in codes]
    n = len(xs)
    s1, s2 = sum(xs), sum(v * v for v in xs)
    r = math.isqrt(n * s2 - s1 * s1 + int(t["eps_term"][0]))
    out = []
    for i, x in enumerate(xs):
        tt = (n * x - s1) * 2 ** (k + 1)
        z = 0 if r == 0 else (1 if tt >= 0 else -1) * ((abs(tt) + r) // (2 * r))
        acc = z * int(t["gamma"][i]) + int(t["beta"][i]) * 2 ** n_node.ints["beta_shift"]  # type: ignore[attr-defined]
        assert INT32_MIN <= acc <= INT32_MAX
        left, right = max(sh, 0), max(-sh, 0)
        a = min(max(acc << left, INT32_MIN), INT32_MAX)
        y = _round_away(_srdhm_exact(a, m), 2**right)
        y += n_node.out.zero_point  # type: ignore[attr-defined]
        out.append(min(max(y, n_node.act_min), n_node.act_max))  # type: ignore[attr-defined]
    return out


def _rdbpot_is_round_away() -> None:
    # rdbpot's definition equals rounding ties away from zero (used by _layernorm_exact)
    for x in (-5, -4, -3, -1, 0, 1, 3, 5, 6):
        assert rdbpot(x, 1).item() == _round_away(x, 2)


@pytest.mark.kernel_path
@pytest.mark.parametrize("shape,affine", [((6, 20), True), ((20,), True), ((6, 20), False)])
def test_integer_layernorm_exact_and_close_to_float(shape: tuple[int, ...], affine: bool) -> None:
    _rdbpot_is_round_away()
    torch.manual_seed(5)
    ln = nn.LayerNorm(shape, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            ln.weight.copy_(0.5 + torch.rand(shape))
            ln.bias.copy_(0.3 * torch.randn(shape))
    g = graph_from_layers([("ln", ln)], (6, 20))
    x = torch.randn(12, 6, 20) * 1.5 + 0.4
    x[3] = 0.25  # a constant sample: the variance is the eps term alone
    q = quantize_graph(g, calibrate(g, [x]))
    out = run_int8(q, x, keep_tensors=True)
    qn = q.nodes[0]
    assert qn.kind == "LayerNorm" and qn.ints["frac_bits"] == 12
    q_in = q.qparams[0]
    codes_in = out.tensors[0]  # type: ignore[index]
    group = int(np.prod(shape))
    flat_in = codes_in.reshape(-1, group).tolist()
    flat_out = out.codes.reshape(-1, group).tolist()
    for gi, go in zip(flat_in, flat_out, strict=True):
        assert go == _layernorm_exact(gi, q_in.zero_point, qn)
    # against the float LayerNorm of the dequantised input: within 2 output codes
    y = ln(dequantize(codes_in, q_in)).detach()  # type: ignore[arg-type]
    err = (out.logits - y).abs() / q.qparams[1].scale  # type: ignore[union-attr]
    assert float(err.max()) <= 2.0, float(err.max())
    assert float(err.mean()) < 0.6


def test_integer_layernorm_refuses_what_it_cannot_hold() -> None:
    big = nn.LayerNorm((2, 1 << 20))
    g = graph_from_layers([("ln", big)], (2, 1 << 20))
    ranges = calibrate(g, [torch.randn(1, 2, 1 << 20)])
    with pytest.raises(QuantError, match="'ln'.*2\\^20"):
        quantize_graph(g, ranges)
    ln = nn.LayerNorm((4, 8))
    with torch.no_grad():
        ln.weight.fill_(1e-3)
        ln.bias.fill_(50.0)  # beta 2^12 / s_g = 50 * 4096 * 127 / 1e-3 > 2^31: no int32 B
    g = graph_from_layers([("ln", ln)], (4, 8))
    with pytest.raises(QuantError, match="'ln'.*int32 accumulator"):
        quantize_graph(g, calibrate(g, [torch.randn(2, 4, 8)]))
