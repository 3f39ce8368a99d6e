"""A compact temporal-conv residual net on log-mel frames (TC-ResNet style), < 100k parameters.

    features [B, T, F] → transpose [B, F, T] (mel bins as channels)
      → stem Conv1d(F → C0, k3) → BN → ReLU
      → blocks: [Conv1d(k, stride s) → BN → ReLU → Conv1d(k) → BN] + shortcut (1×1 conv, stride s
        where the shape changes) → ReLU
      → pooling over valid frames (default masked mean) → [B, embed_dim]

Frames at or beyond the length are zeroed before every conv, so a padded batch gives every
utterance what it would get alone (eval mode), and the BatchNorms take their training statistics
over valid frames only (``kwsnet.nn.norms.masked_batch_norm``). Lengths follow each stride:
``L → (L - 1) // s + 1`` (``padding = k // 2``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kwsnet.errors import ConfigError
from kwsnet.models._pooling import build_pooling
from kwsnet.nn.norms import masked_batch_norm, masked_sequential
from kwsnet.nn.pooling import MeanPooling, lengths_to_mask

__all__ = ["CnnMel"]


class _ResBlock(nn.Module):
    """Two temporal convs with BN and a residual shortcut; ``[B, C_in, T] -> [B, C_out, T']``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.stride = stride
        self.conv1 = nn.Conv1d(in_ch, out_ch, kernel_size, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm1d(out_ch)
        self.conv2 = nn.Conv1d(out_ch, out_ch, kernel_size, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm1d(out_ch)
            )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_len = (lengths - 1).div(self.stride, rounding_mode="floor") + 1
        h = self.conv1(x)
        mask = lengths_to_mask(out_len, h.shape[-1]).unsqueeze(1).to(h.dtype)  # [B, 1, T']
        h = torch.relu(masked_batch_norm(self.bn1, h, mask)) * mask
        h = masked_batch_norm(self.bn2, self.conv2(h), mask)
        short = masked_sequential(self.shortcut, x, mask)  # identity, or 1x1 conv -> BN
        return torch.relu(h + short) * mask, out_len


class CnnMel(nn.Module):
    """Temporal-conv residual backbone for keyword spotting on log-mel features.

    Args:
        input_dim: feature width per frame ``F`` (default 40: 40 log-mels).
        stem_channels: channels of the stem conv (default 32).
        channels: output channels of each residual block (default (32, 48, 48)).
        strides: time stride of each block (default (2, 2, 2)); one per block.
        kernel_size: odd temporal kernel of the block convs (default 7).
        pooling: factory ``pooling(channels[-1])`` returning a module
            ``(x [B, T, C], lengths [B]) -> [B, out_dim]`` with ``out_dim``, e.g. a
            ``kwsnet.nn.pooling`` class by ``class_path`` (default None: ``MeanPooling``).

    With the defaults and 40 mels: 83k parameters (+ the head), 101 frames → 13 after the strides.

    Shapes: ``forward(x [B, T, input_dim], lengths [B] | None) -> [B, embed_dim]``.
    """

    def __init__(
        self,
        input_dim: int = 40,
        stem_channels: int = 32,
        channels: Sequence[int] = (32, 48, 48),
        strides: Sequence[int] = (2, 2, 2),
        kernel_size: int = 7,
        pooling: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for same padding, got {kernel_size}")
        if not channels or len(channels) != len(strides):
            raise ValueError(
                f"channels and strides need one entry per block, got {list(channels)} and "
                f"{list(strides)}"
            )
        if any(s < 1 for s in strides):
            raise ValueError(f"strides must be >= 1, got {list(strides)}")
        self.input_dim = input_dim
        self.stem = nn.Sequential(
            nn.Conv1d(input_dim, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm1d(stem_channels),
            nn.ReLU(),
        )
        blocks = []
        in_ch = stem_channels
        for out_ch, stride in zip(channels, strides, strict=True):
            blocks.append(_ResBlock(in_ch, out_ch, kernel_size, stride))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.pooling, self.embed_dim = build_pooling(pooling, in_ch, MeanPooling)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Map features ``x [B, T, input_dim]`` with ``lengths [B]`` to ``[B, embed_dim]``.

        ``lengths=None`` means every sequence is ``T`` frames long.
        """
        B, T, F = x.shape
        if F != self.input_dim:
            raise ConfigError(
                f"CnnMel expects {self.input_dim} features per frame, got {F}; "
                "set model.backbone.init_args.input_dim to the front end's out_dim"
            )
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(min=1, max=T)
        mask = lengths_to_mask(lengths, T).unsqueeze(1).to(x.dtype)  # [B, 1, T]
        h = masked_sequential(self.stem, x.transpose(1, 2) * mask, mask) * mask  # [B, C0, T]
        for block in self.blocks:
            h, lengths = block(h, lengths)
        return self.pooling(h.transpose(1, 2), lengths)  # [B, T', C] -> [B, embed_dim]
