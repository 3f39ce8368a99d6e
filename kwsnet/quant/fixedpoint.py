"""The integer arithmetic of the int8 model: fixed-point multipliers, rounding, saturation.

These are the definitions the C int8 kernels must reproduce bit for bit. They are the
gemmlowp / TFLite (and CMSIS-NN non-single-rounding) semantics, written from their definition:

``srdhm(a, b)`` (SaturatingRoundingDoublingHighMul), ``a, b`` int32::

    if a == b == INT32_MIN: return INT32_MAX                  # the one overflowing case
    ab = (int64) a * b
    nudge = ab >= 0 ? (1 << 30) : 1 - (1 << 30)
    return (int32) ((ab + nudge) / (1LL << 31))               # C division: truncates to 0

i.e. ``floor((a * b + 2^30) / 2^31)``: the nearest integer to ``a * b / 2^31``, ties toward
+infinity (a positive tie goes up through the nudge; for a negative tie the nudge ``1 - 2^30``
and the truncating division land on the upper neighbour too: -0.5 -> 0, -1.5 -> -1).

``rdbpot(x, e)`` (RoundingDivideByPOT), ``x`` int32, ``0 <= e <= 31``::

    mask = (1 << e) - 1;  remainder = x & mask                 # on the int64 value
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)                  # arithmetic shift

i.e. ``round(x / 2^e)`` with ties away from zero.

``mbqm(x, M, shift)`` (MultiplyByQuantizedMultiplier): the real multiplier
``m = M * 2^(shift - 31)``, ``M`` in ``[2^30, 2^31)`` (or 0), ``-31 <= shift <= 30``::

    left = max(shift, 0); right = max(-shift, 0)
    x = saturate_int32((int64) x << left)                      # TFLite: no saturation (UB)
    return rdbpot(srdhm(x, M), right)

Two roundings (the first ties up, the second ties away from zero): the result is within 1 of
``x * m``, and exactly what TFLite's reference kernels and CMSIS-NN's ``arm_nn_requantize`` (without
``CMSIS_NN_USE_SINGLE_ROUNDING``) compute, so a C port can be checked against either.

Every function takes and returns int64 tensors holding int32 values (torch has no int32
matmul; int64 keeps every intermediate exact), broadcasting ``M`` / ``shift`` per channel.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "mbqm",
    "quantize_multiplier",
    "rdbpot",
    "round_half_even",
    "saturate",
    "srdhm",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _i64(x: torch.Tensor | int) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.int64)


def saturate(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``min(max(x, lo), hi)`` elementwise (int64 in, int64 out)."""
    return torch.clamp(_i64(x), lo, hi)


def srdhm(a: torch.Tensor | int, b: torch.Tensor | int) -> torch.Tensor:
    """SaturatingRoundingDoublingHighMul of int32 values (see the module docstring)."""
    a, b = _i64(a), _i64(b)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = torch.where(ab >= 0, _i64(1 << 30), _i64(1 - (1 << 30)))
    out = torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")
    return torch.where(overflow, _i64(INT32_MAX), out)


def rdbpot(x: torch.Tensor | int, exponent: torch.Tensor | int) -> torch.Tensor:
    """RoundingDivideByPOT: ``round(x / 2^exponent)``, ties away from zero, ``0..31``."""
    x, e = _i64(x), _i64(exponent)
    if bool(((e < 0) | (e > 31)).any()):
        raise ValueError(f"rdbpot: exponent must be in 0..31, got {e.min()}..{e.max()}")
    mask = (_i64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).to(torch.int64)
    return (x >> e) + (remainder > threshold).to(torch.int64)


def mbqm(
    x: torch.Tensor | int, multiplier: torch.Tensor | int, shift: torch.Tensor | int
) -> torch.Tensor:
    """MultiplyByQuantizedMultiplier: ``x * M * 2^(shift - 31)`` rounded (module docstring)."""
    x, s = _i64(x), _i64(shift)
    left = torch.clamp(s, min=0)
    right = torch.clamp(-s, min=0)
    x = saturate(x << left, INT32_MIN, INT32_MAX)
    return rdbpot(srdhm(x, multiplier), right)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """``(M, shift)`` with ``M * 2^(shift - 31) ≈ real``, ``M`` in ``[2^30, 2^31)``: TFLite's
    QuantizeMultiplier (``frexp``, ``M = round(q * 2^31)`` half away from zero, a carry to
    ``2^31`` halves ``M``). ``real == 0`` or below ``2^-32`` gives ``(0, 0)``.

    Raises:
        ValueError: ``real`` negative, non-finite, or ``>= 2^30`` (shift above 30).
    """
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"quantize_multiplier: need a finite real >= 0, got {real!r}")
    if real == 0.0:
        return 0, 0
    q, e = math.frexp(real)  # real = q * 2^e, 0.5 <= q < 1
    m = int(math.floor(q * (1 << 31) + 0.5))
    if m == 1 << 31:
        m //= 2
        e += 1
    if e < -31:
        return 0, 0
    if e > 30:
        raise ValueError(f"quantize_multiplier: {real!r} is too large (shift {e} > 30)")
    return m, e


def round_half_even(x: torch.Tensor) -> torch.Tensor:
    """Float → nearest integer, ties to even (``torch.round``; C: ``nearbyintf`` /
    ``lrintf`` in the default rounding mode), as an int64 tensor."""
    return torch.round(x).to(torch.int64)
