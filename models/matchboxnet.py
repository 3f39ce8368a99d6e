"""MatchboxNet-style separable temporal-conv net (Majumdar & Ginsburg 2020), B×R×C.

    features [B, T, F] → transpose [B, F, T] (features as channels)
      → prologue: separable conv (k 11, 128 ch) → BN → ReLU → dropout
      → B blocks; block i has R sub-blocks, each
          depthwise Conv1d(k_i) → pointwise Conv1d(→ C) → BN → ReLU → dropout,
        and a residual (pointwise Conv1d → BN) from the block input, added before the last
        sub-block's ReLU; ``k_i = 13 + 2 i``
      → epilogue: separable conv (k 29, dilation 2, 128 ch) → BN → ReLU → dropout,
        Conv1d(1×1, 128) → BN → ReLU → dropout
      → pooling over valid frames (default masked mean) → [B, embed_dim = 128]

Convs carry no bias (BatchNorm follows each). The paper's decoder (average pooling +
Linear) is this pooling plus kwsnet's head (``LinearHead``: ``128 * classes + classes``), so the
paper's sizes (3x1x64 ≈ 77k, 3x2x64 ≈ 93k: 64 MFCCs, 30 classes of Speech Commands v1) are
this backbone plus a 30-class head. google-research kws_streaming's ``ds_tc_resnet`` (98.0% on
v2-12, "75K") is the 3x1x64 topology on 40 MFCCs.

Frames at or beyond the length are zeroed before every conv that reads across time (each
depthwise conv), as NeMo's masked convolutions do, so in eval mode a padded batch gives
each utterance what it gets alone. Nothing strides in time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kwsnet.errors import ConfigError
from kwsnet.models._pooling import build_pooling
from kwsnet.nn.norms import masked_batch_norm, masked_sequential
from kwsnet.nn.pooling import MeanPooling, lengths_to_mask

__all__ = ["MatchboxNet"]


class _SubBlock(nn.Module):
    """Depthwise Conv1d(k, dilation) → pointwise Conv1d → BN, then (residual) → ReLU → dropout.

    Shapes: ``forward(x [B, C_in, T], mask [B, 1, T], residual [B, C_out, T] | None)
    -> [B, C_out, T]``.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, dilation: int, dropout: float
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for same padding, got {kernel_size}")
        self.depthwise = nn.Conv1d(
            in_ch, in_ch, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
            groups=in_ch, bias=False,
        )  # fmt: skip
        self.pointwise = nn.Conv1d(in_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm1d(out_ch)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = masked_batch_norm(self.bn, self.pointwise(self.depthwise(x * mask)), mask)
        if residual is not None:
            h = h + residual
        return self.dropout(torch.relu(h))


class _Block(nn.Module):
    """``repeat`` sub-blocks with a pointwise + BN residual from the block input.

    Shapes: ``forward(x [B, C_in, T], mask [B, 1, T]) -> [B, C_out, T]``.
    """

    def __init__(
        self, in_ch: int, out_ch: int, repeat: int, kernel_size: int, dropout: float
    ) -> None:
        super().__init__()
        self.subs = nn.ModuleList(
            _SubBlock(in_ch if r == 0 else out_ch, out_ch, kernel_size, 1, dropout)
            for r in range(repeat)
        )
        self.residual = nn.Sequential(nn.Conv1d(in_ch, out_ch, 1, bias=False),
                                      nn.BatchNorm1d(out_ch))  # fmt: skip

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = x
        residual = masked_sequential(self.residual, x, mask)
        for i, sub in enumerate(self.subs):
            h = sub(h, mask, residual if i == len(self.subs) - 1 else None)
        return h


class MatchboxNet(nn.Module):
    """MatchboxNet-B×R×C backbone for keyword spotting on MFCC (or log-mel) frames.

    Args:
        input_dim: features per frame ``F`` (default 64: 64 MFCCs, as in the paper).
        num_blocks: ``B``, residual blocks (default 3).
        repeat: ``R``, sub-blocks per block (default 2).
        channels: ``C``, width of the blocks (default 64).
        prologue_channels: width of the prologue (default 128).
        epilogue_channels: width of the epilogue convs, the embedding width (default 128).
        prologue_kernel: kernel of the prologue (default 11).
        first_block_kernel: kernel of block 1; each next block adds 2 (default 13).
        epilogue_kernel: kernel of the dilated epilogue conv (default 29).
        epilogue_dilation: its dilation (default 2).
        dropout: after every ReLU (default 0.0, as kws_streaming's ds_tc_resnet).
        pooling: factory ``pooling(epilogue_channels)`` returning a module ``(x [B, T, C],
            lengths [B]) -> [B, out_dim]`` with ``out_dim`` (default None: ``MeanPooling``,
            the paper's average pooling).

    Shapes: ``forward(x [B, T, input_dim], lengths [B] | None) -> [B, embed_dim]``.
    """

    def __init__(
        self,
        input_dim: int = 64,
        num_blocks: int = 3,
        repeat: int = 2,
        channels: int = 64,
        prologue_channels: int = 128,
        epilogue_channels: int = 128,
        prologue_kernel: int = 11,
        first_block_kernel: int = 13,
        epilogue_kernel: int = 29,
        epilogue_dilation: int = 2,
        dropout: float = 0.0,
        pooling: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if num_blocks < 1 or repeat < 1:
            raise ValueError(f"num_blocks and repeat must be >= 1, got {num_blocks}, {repeat}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_dim = input_dim
        self.prologue = _SubBlock(input_dim, prologue_channels, prologue_kernel, 1, dropout)
        blocks = []
        in_ch = prologue_channels
        for i in range(num_blocks):
            blocks.append(_Block(in_ch, channels, repeat, first_block_kernel + 2 * i, dropout))
            in_ch = channels
        self.blocks = nn.ModuleList(blocks)
        self.epilogue = _SubBlock(
            channels, epilogue_channels, epilogue_kernel, epilogue_dilation, dropout
        )
        self.epilogue_pw = nn.Sequential(
            nn.Conv1d(epilogue_channels, epilogue_channels, 1, bias=False),
            nn.BatchNorm1d(epilogue_channels),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.pooling, self.embed_dim = build_pooling(pooling, epilogue_channels, MeanPooling)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Map features ``x [B, T, input_dim]`` with ``lengths [B]`` to ``[B, embed_dim]``.

        ``lengths=None`` means every sequence is ``T`` frames long.
        """
        B, T, F = x.shape
        if F != self.input_dim:
            raise ConfigError(
                f"MatchboxNet expects {self.input_dim} features per frame, got {F}; "
                "set model.backbone.init_args.input_dim to the front end's out_dim"
            )
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(min=1, max=T)
        mask = lengths_to_mask(lengths, T).unsqueeze(1).to(x.dtype)  # [B, 1, T]
        h = self.prologue(x.transpose(1, 2), mask)  # [B, 128, T]
        for block in self.blocks:
            h = block(h, mask)
        h = masked_sequential(self.epilogue_pw, self.epilogue(h, mask), mask)
        return self.pooling(h.transpose(1, 2), lengths)  # [B, T, C] -> [B, embed_dim]
