"""StreamTCN: a causal temporal-conv net whose stream computes each frame once (issue 30 item 3).

    features [B, T, F] (log-mel, ``normalize: none``: nothing depends on the whole window)
      → transpose [B, F, T]
      → stem: Conv1d(F → C, k) → BN → ReLU                                   (valid: no padding)
      → N blocks: depthwise Conv1d(C, k 3, dilation d_i) → pointwise Conv1d(C → C) → BN → ReLU
        with ``d_i = 1, 2, 4, ...`` (valid, stride 1)
      → the last frame (default pooling ``LastFrame``) → [B, embed_dim = C]

Every conv is *valid* (no zero padding) and of stride 1, so output frame ``j`` of the stack
depends on input frames ``[j, j + receptive_field)`` only, and a window's last output frame is
a function of the window's last ``receptive_field`` frames: the same number whether the window
is run whole or a stream computes each new frame once through each layer, carrying each
layer's last ``(k - 1) * dilation`` input frames (the C stream's incremental path,
``docs/streaming.md``). The receptive field is ``1 + (stem_kernel - 1) + 2 * sum(d_i)``
(65 frames with the defaults: 0.65 s at a 10 ms hop, inside a 1 s window's 98 frames).

A sequence shorter than the receptive field is zero-padded at the start (before its first
frame, zeros, not the features of silence);
a padded batch keeps each utterance's last valid output frame (``lengths - rf + 1``), so in
eval mode an utterance gets what it gets alone when its length is at least the field.
Convs carry no bias (BatchNorm follows each pointwise / stem conv; the depthwise conv's shift
is absorbed by the BatchNorm after the pointwise one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kwsnet.errors import ConfigError
from kwsnet.models._pooling import build_pooling
from kwsnet.nn.norms import masked_batch_norm
from kwsnet.nn.pooling import LastFrame, lengths_to_mask

__all__ = ["StreamTCN"]


class _Block(nn.Module):
    """Valid depthwise Conv1d(k, dilation) → pointwise Conv1d → BN → ReLU.

    Shapes: ``forward(x [B, C, T], lengths [B]) -> ([B, C, T - (k - 1) d], lengths')``.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(
            channels, channels, kernel_size, dilation=dilation, groups=channels, bias=False
        )
        self.pointwise = nn.Conv1d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm1d(channels)
        self.span = dilation * (kernel_size - 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.pointwise(self.depthwise(x))
        lengths = (lengths - self.span).clamp(min=1)
        mask = lengths_to_mask(lengths, h.shape[2])[:, None, :]
        return torch.relu(masked_batch_norm(self.bn, h, mask)), lengths


class StreamTCN(nn.Module):
    """Causal (valid, stride-1) dilated temporal-conv backbone for streaming keyword spotting.

    Args:
        input_dim: features per frame ``F`` (default 40 log-mels).
        channels: ``C``, the width of every layer and the embedding (default 64).
        stem_kernel: kernel of the stem conv (default 3).
        dilations: one depthwise-separable block per entry, kernel 3 (default 1, 2, 4, 8, 16).
        kernel_size: the blocks' depthwise kernel (default 3).
        pooling: factory ``pooling(channels)`` (default ``LastFrame``; a streaming export
            needs it: the C stream's incremental path takes the newest frame only).

    Shapes: ``forward(x [B, T, input_dim], lengths [B] | None) -> [B, embed_dim]``.
    """

    def __init__(
        self,
        input_dim: int = 40,
        channels: int = 64,
        stem_kernel: int = 3,
        dilations: Sequence[int] = (1, 2, 4, 8, 16),
        kernel_size: int = 3,
        pooling: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if input_dim < 1 or channels < 1 or stem_kernel < 1 or kernel_size < 1:
            raise ValueError(
                "input_dim, channels, stem_kernel and kernel_size must be positive, got "
                f"{input_dim}, {channels}, {stem_kernel}, {kernel_size}"
            )
        if any(int(d) < 1 for d in dilations):
            raise ValueError(f"dilations must be positive, got {list(dilations)}")
        self.input_dim = input_dim
        self.stem = nn.Conv1d(input_dim, channels, stem_kernel, bias=False)
        self.stem_bn = nn.BatchNorm1d(channels)
        self.blocks = nn.ModuleList(_Block(channels, kernel_size, int(d)) for d in dilations)
        self.receptive_field = stem_kernel + sum(b.span for b in self.blocks)
        self.pooling, self.embed_dim = build_pooling(pooling, channels, LastFrame)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Map features ``x [B, T, input_dim]`` with ``lengths [B]`` to ``[B, embed_dim]``."""
        B, T, F = x.shape
        if F != self.input_dim:
            raise ConfigError(
                f"StreamTCN expects {self.input_dim} features per frame, got {F}; "
                "set model.backbone.init_args.input_dim to the front end's out_dim"
            )
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(min=1, max=T)
        rf = self.receptive_field
        h = x.transpose(1, 2)
        if T < rf:  # too short for one output frame: zeros before the first frame
            h = nn.functional.pad(h, (rf - T, 0))
            lengths = lengths + (rf - T)
        h = self.stem(h)
        lengths = (lengths - (self.stem.kernel_size[0] - 1)).clamp(min=1)
        mask = lengths_to_mask(lengths, h.shape[2])[:, None, :]
        h = torch.relu(masked_batch_norm(self.stem_bn, h, mask))
        for block in self.blocks:
            h, lengths = block(h, lengths)
        return self.pooling(h.transpose(1, 2), lengths)
