"""Temporal pooling: ``pooling(x [B, T, D], lengths [B]) -> [B, out_dim]``.

Every pooling honours ``lengths``: frames at or beyond ``lengths[b]`` never reach the output,
so appending padding leaves the pooled vector unchanged. Each layer reports ``out_dim`` so a
backbone derives its ``embed_dim`` from it, and each takes the same two optional post-pooling
stages: ``batch_norm`` (``BatchNorm1d(out_dim)``) then ``dropout``.

Backbones receive a pooling *factory* ``Callable[[int], nn.Module]`` and call it with their
frame width, so a config names the class and its options but never the width::

    pooling:
      class_path: kwsnet.nn.pooling.SelfAttentionPooling
      init_args: {batch_norm: true, dropout: 0.3}
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "Pooling",
    "MeanPooling",
    "MaxPooling",
    "SelfAttentionPooling",
    "SelfAttentionMaxPooling",
    "AttentiveStatisticsPooling",
    "LastFrame",
    "lengths_to_mask",
    "STD_EPS",
]

# The variance floor of the weighted std (statistics pooling); the C runtime's
# AttnStatsPool record carries it (kwsnet/export/cnative.py).
STD_EPS = 1e-5


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean mask ``[B, max_len]``, True at valid frames (``t < lengths[b]``)."""
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over time of ``scores [B, T, *]`` with padded frames (``mask [B, T]`` False) at 0."""
    while mask.dim() < scores.dim():
        mask = mask.unsqueeze(-1)
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)


def _masked_mean_std(
    x: torch.Tensor, weights: torch.Tensor, eps: float = STD_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std over time; ``x [B, T, D]``, ``weights [B, T, D or 1]`` summing to 1."""
    mean = (weights * x).sum(dim=1)
    var = (weights * x.pow(2)).sum(dim=1) - mean.pow(2)
    return mean, var.clamp(min=eps).sqrt()


class Pooling(nn.Module):
    """Base class: subclasses implement ``_pool`` and set ``out_dim``; this adds BN and dropout.

    Args:
        in_dim: frame width ``D`` (given by the backbone).
        batch_norm: apply ``BatchNorm1d(out_dim)`` to the pooled vector (default False).
        dropout: dropout probability after pooling (and BN) (default 0.0).
    """

    out_dim: int

    def __init__(self, in_dim: int, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"in_dim must be positive, got {in_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        self.batch_norm = batch_norm
        self.dropout_p = dropout

    def _finish_init(self, out_dim: int) -> None:
        self.out_dim = out_dim
        self.norm = nn.BatchNorm1d(out_dim) if self.batch_norm else nn.Identity()
        self.dropout = nn.Dropout(self.dropout_p) if self.dropout_p > 0 else nn.Identity()

    def _pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Pool ``x [B, T, D]`` over its valid frames to ``[B, out_dim]``.

        ``lengths [B]`` counts valid frames (``None``: all ``T`` frames are valid); every length
        must be at least 1.
        """
        B, T, D = x.shape
        if D != self.in_dim:
            raise ValueError(f"{type(self).__name__} was built for width {self.in_dim}, got {D}")
        if lengths is None:
            lengths = torch.full((B,), T, device=x.device, dtype=torch.long)
        mask = lengths_to_mask(lengths, T)
        return self.dropout(self.norm(self._pool(x, mask)))


class MeanPooling(Pooling):
    """Mean over valid frames; ``out_dim = in_dim``. Args as ``Pooling``."""

    def __init__(self, in_dim: int, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__(in_dim, batch_norm, dropout)
        self._finish_init(in_dim)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class LastFrame(Pooling):
    """The last valid frame (index ``length - 1``); ``out_dim = in_dim``. Args as ``Pooling``.

    A causal backbone's last frame is the newest output a stream has (``StreamTCN``): pooling
    over the others would wait for nothing and mix in frames a stream computed long ago.
    """

    def __init__(self, in_dim: int, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__(in_dim, batch_norm, dropout)
        self._finish_init(in_dim)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        last = (mask.sum(dim=1) - 1).clamp(min=0)  # [B]
        return x.gather(1, last[:, None, None].expand(-1, 1, x.shape[2])).squeeze(1)


class MaxPooling(Pooling):
    """Max over valid frames; ``out_dim = in_dim``. Args as ``Pooling``."""

    def __init__(self, in_dim: int, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__(in_dim, batch_norm, dropout)
        self._finish_init(in_dim)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)


class SelfAttentionPooling(Pooling):
    """Self-attentive pooling (SAP): ``softmax_t(Linear(D, 1)(x_t))``-weighted mean.

    Padded frames get a score of ``-inf`` before the softmax, so their weight is exactly 0.
    ``out_dim = in_dim``. Args as ``Pooling``.
    """

    def __init__(self, in_dim: int, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__(in_dim, batch_norm, dropout)
        self.score = nn.Linear(in_dim, 1)
        self._finish_init(in_dim)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = _masked_softmax(self.score(x), mask)  # [B, T, 1]
        return (weights * x).sum(dim=1)


class SelfAttentionMaxPooling(Pooling):
    """SAP and max pooling concatenated: ``[sap(x), max(x)]``; ``out_dim = 2 * in_dim``.

    Args as ``Pooling`` (``batch_norm`` normalises the concatenated vector).
    """

    def __init__(self, in_dim: int, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__(in_dim, batch_norm, dropout)
        self.score = nn.Linear(in_dim, 1)
        self._finish_init(2 * in_dim)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = _masked_softmax(self.score(x), mask)
        sap = (weights * x).sum(dim=1)
        mx = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        return torch.cat([sap, mx], dim=-1)


class AttentiveStatisticsPooling(Pooling):
    """Attentive statistics pooling (ECAPA-TDNN style): attention-weighted mean and std.

    Per-channel attention ``Linear(D[, 3D], C) → Tanh → Linear(C, D)``, softmax over valid
    frames; output ``[mean, std]``, ``out_dim = 2 * in_dim``.

    Args:
        in_dim: frame width ``D``.
        attention_channels: hidden width ``C`` of the attention net (default 128).
        global_context: also feed the utterance mean and std to the attention (default True).
        batch_norm, dropout: as ``Pooling``.
    """

    def __init__(
        self,
        in_dim: int,
        attention_channels: int = 128,
        global_context: bool = True,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_dim, batch_norm, dropout)
        self.global_context = global_context
        att_in = 3 * in_dim if global_context else in_dim
        self.attention = nn.Sequential(
            nn.Linear(att_in, attention_channels),
            nn.Tanh(),
            nn.Linear(attention_channels, in_dim),
        )
        self._finish_init(2 * in_dim)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)  # keep padding out of every sum (and NaNs)
        if self.global_context:
            uniform = mask.unsqueeze(-1).to(x.dtype)
            uniform = uniform / uniform.sum(dim=1, keepdim=True).clamp(min=1.0)
            mean, std = _masked_mean_std(x, uniform)
            context = torch.cat(
                [x, mean.unsqueeze(1).expand(B, T, D), std.unsqueeze(1).expand(B, T, D)], dim=-1
            )
        else:
            context = x
        weights = _masked_softmax(self.attention(context), mask)  # [B, T, D]
        mean, std = _masked_mean_std(x, weights)
        return torch.cat([mean, std], dim=-1)
