"""The float islands of an int8 model after the front end: ops that run in float32 between
quantised layers (dequantise the input codes, the float op, quantise the output), here in
numpy float32 **op for op as the C kernels** (``cnative/src/kwsn_kernels.c``), so the integer
reference equals the C int8 runtime bit for bit.

Every ``+``, ``*``, ``/`` and ``sqrt`` below is one IEEE float32 operation, rounded once, in
the C kernel's order (sums run element by element in a Python loop, never ``np.sum``, whose
pairwise order differs); ``exp`` and ``tanh`` are the runtime's own polynomial
(:func:`exp_neg`), since libm's ``expf`` differs by an ulp between libraries. Each function
reads the op's C record (``kwsnet.export.cnative.node_record``: the ints and the float32
payload the C kernel reads), so the reference uses the very weights in the file.

- **AttnStatsPool** (:func:`attn_stats_pool`, ``AttentiveStatisticsPooling``): attention
  ``Linear → Tanh → Linear`` over each frame (and the clip's mean and std), softmax over time
  per channel, the weighted mean and std. Attention is a softmax over ~13 frames and a std
  a square root: no int8 form worth its error, and ~1% of the model's operations.
- **L2Norm** (:func:`l2norm`, the cosine head's normalisation): ``x / max(||x||, eps)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ISLAND_KINDS", "attn_stats_pool", "exp_neg", "l2norm", "run_island", "tanh"]

ISLAND_KINDS = frozenset({"AttnStatsPool", "L2Norm"})

F32 = np.float32
_LOG2E = F32(float.fromhex("0x1.715476p+0"))
_LN2_HI = F32(float.fromhex("0x1.63p-1"))
_LN2_LO = F32(float.fromhex("-0x1.bd0106p-13"))
# e^r's Taylor coefficients 1/7! .. 1/0!, float32 (the C kernel's hex literals)
_EXP_POLY = tuple(
    F32(float.fromhex(h))
    for h in ("0x1.a01a02p-13", "0x1.6c16c2p-10", "0x1.111112p-7", "0x1.555556p-5",
              "0x1.555556p-3", "0x1p-1", "0x1p+0", "0x1p+0")
)  # fmt: skip


def exp_neg(x: np.ndarray) -> np.ndarray:
    """``e^x`` for float32 ``x <= 0`` as ``kwsn_exp_neg`` (clamped to ``[-80, 0]``)."""
    x = np.asarray(x, F32)
    x = np.where(x > F32(-80.0), x, F32(-80.0))
    x = np.where(x < F32(0.0), x, F32(0.0))
    n = np.floor(x * _LOG2E + F32(0.5))
    r = x - n * _LN2_HI
    r = r - n * _LN2_LO
    p = np.full_like(r, _EXP_POLY[0])
    for c in _EXP_POLY[1:]:
        p = p * r + c
    scale = ((n.astype(np.int32) + 127) << 23).astype(np.uint32).view(F32)
    return p * scale


def tanh(a: np.ndarray) -> np.ndarray:
    """``tanh`` as ``kwsn_tanh``: ``sign(a) (1 - e) / (1 + e)``, ``e = exp_neg(-2 |a|)``."""
    t = exp_neg(F32(-2.0) * np.abs(a))
    y = (F32(1.0) - t) / (F32(1.0) + t)
    return np.where(a < F32(0.0), -y, y)


def _mean_std(
    x: np.ndarray, w: np.ndarray | np.float32, eps: np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """``asp_mean_std`` over the last axis of ``x [..., L]`` (weights ``w`` like ``x``, or one
    float32 for all)."""
    m = np.zeros(x.shape[:-1], F32)
    m2 = np.zeros(x.shape[:-1], F32)
    for t in range(x.shape[-1]):
        wt = w[..., t] if isinstance(w, np.ndarray) else w
        m = m + wt * x[..., t]
        m2 = m2 + wt * (x[..., t] * x[..., t])
    var = m2 - m * m
    return m, np.sqrt(np.where(var > eps, var, eps))


def attn_stats_pool(x: np.ndarray, ints: tuple[int, ...], floats: np.ndarray) -> np.ndarray:
    """``kwsn_attn_stats_pool_f32`` on ``x [B, C, L]`` float32 with the record's ``ints``
    ``(C, H, global_context)`` and ``floats`` -> ``[B, 2C]``."""
    c, h, gc = (int(v) for v in ints)
    a_in = 3 * c if gc else c
    f = np.asarray(floats, F32)
    eps = f[0]
    w1 = f[1 : 1 + h * a_in].reshape(h, a_in)
    b1 = f[1 + h * a_in : 1 + h * a_in + h]
    o = 1 + h * a_in + h
    w2 = f[o : o + c * h].reshape(c, h)
    b2 = f[o + c * h : o + c * h + c]
    x = np.asarray(x, F32)
    B, _, L = x.shape
    if gc:
        mean, std = _mean_std(x, F32(1.0) / F32(L), eps)  # [B, C]
        ctx = np.concatenate([mean, std], axis=1)  # [B, 2C]
        g = np.zeros((B, h), F32)
        for j in range(2 * c):
            g = g + w1[:, c + j][None, :] * ctx[:, j : j + 1]
        g = g + b1[None, :]
    else:
        g = np.broadcast_to(b1[None, :], (B, h))
    hid = np.zeros((B, h, L), F32)
    for k in range(c):
        hid = hid + w1[:, k][None, :, None] * x[:, k, None, :]
    hid = tanh(hid + g[:, :, None])
    s = np.zeros((B, c, L), F32)
    for j in range(h):
        s = s + w2[:, j][None, :, None] * hid[:, j, None, :]
    s = s + b2[None, :, None]
    e = exp_neg(s - s.max(axis=2, keepdims=True))
    total = np.zeros((B, c), F32)
    for t in range(L):
        total = total + e[:, :, t]
    weights = e / total[:, :, None]
    mean, std = _mean_std(x, weights, eps)
    return np.concatenate([mean, std], axis=1)


def l2norm(x: np.ndarray, ints: tuple[int, ...], floats: np.ndarray) -> np.ndarray:
    """``kwsn_l2norm_f32`` on ``x [B, n]`` float32 (record ints ``(n,)``, floats ``(eps,)``)."""
    x = np.asarray(x, F32).reshape(len(x), int(ints[0]))
    eps = np.asarray(floats, F32)[0]
    ss = np.zeros(len(x), F32)
    for i in range(x.shape[1]):
        ss = ss + x[:, i] * x[:, i]
    norm = np.sqrt(ss)
    d = np.where(norm > eps, norm, eps)
    return x / d[:, None]


def run_island(kind: str, x: np.ndarray, ints: tuple[int, ...], floats: np.ndarray) -> np.ndarray:
    """The float op ``kind`` (one of :data:`ISLAND_KINDS`) on a float32 batch ``x [B, ...]``."""
    if kind == "AttnStatsPool":
        return attn_stats_pool(x, ints, floats)
    if kind == "L2Norm":
        return l2norm(x, ints, floats)
    raise ValueError(f"{kind} is not a float island (one of {sorted(ISLAND_KINDS)})")
