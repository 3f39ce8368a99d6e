"""BC-ResNet, broadcasted residual learning for keyword spotting (Kim et al. 2021).

    features [B, T, F] → [B, 1, F, T] (log-mels as image height, frames as width)
      → stem Conv2d(1 → 2c, 5×5, stride (2, 1)) → BN → ReLU
      → 4 stages of BC-ResBlocks (2, 2, 4, 4 blocks; c, 1.5c, 2c, 2.5c channels; frequency
        stride 2 in stages 2 and 3; temporal dilation 1, 2, 4, 8); the first block of a stage
        is a transition block (1×1 conv → BN → ReLU first, no identity shortcut)
      → depthwise Conv2d(c' , (F', 5)) over the remaining F' bins (no frequency padding) →
        Conv2d(1×1, 4c) → BN → ReLU
      → pooling over valid frames (default masked mean) → [B, embed_dim = 4c]

with ``c = round(8 * tau)``. One BC-ResBlock::

    f2: x → [1×1 conv → BN → ReLU] → depthwise Conv2d(3×1) over frequency → SubSpectralNorm
    f1: frequency mean → depthwise Conv2d(1×3, dilation d) over time → BN → SiLU → 1×1 conv
        → Dropout2d
    y = ReLU(f1(f2(x)) broadcast over frequency + f2(x) [+ x for a normal block])

SubSpectralNorm splits the frequency axis into ``sub_bands`` groups and gives each its own
BatchNorm statistics (``BatchNorm2d(C * S)`` on ``[B, C*S, F/S, T]``: reshapes and a standard
BatchNorm, so export needs no custom layer).

The paper's classifier ends with a 1×1 conv to the classes; here that last layer is kwsnet's
head (``LinearHead``: ``4c * classes + classes`` parameters), so the published counts
(BC-ResNet-1 ≈ 9.2k, BC-ResNet-8 ≈ 321k, 40 mels, 12 classes) are this backbone plus a
12-class ``LinearHead``.

Padded frames never leak: frames at or beyond the length are zeroed before every conv that
reads across time (the stem, each temporal depthwise conv, the classifier's depthwise conv),
so in eval mode a padded batch gives each utterance what it gets alone. No layer strides in
time, so the frame count is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kwsnet.errors import ConfigError
from kwsnet.models._pooling import build_pooling
from kwsnet.nn.norms import masked_batch_norm, masked_sequential
from kwsnet.nn.pooling import MeanPooling, lengths_to_mask

__all__ = ["BCResNet", "SubSpectralNorm"]

_BLOCKS = (2, 2, 4, 4)
_WIDTHS = (1.0, 1.5, 2.0, 2.5)  # stage widths in units of c; the stem has 2c, the end 4c
_FREQ_STRIDES = (1, 2, 2, 1)
_DILATIONS = (1, 2, 4, 8)


class SubSpectralNorm(nn.Module):
    """BatchNorm with separate statistics per frequency sub-band (Chang et al. 2021).

    Args:
        channels: channels ``C``.
        sub_bands: groups ``S`` the frequency axis is split into (default 5); ``F % S == 0``.
        eps: BatchNorm eps (default 1e-5).

    Shapes: ``forward(x [B, C, F, T], mask [B, 1, 1, T] | None) -> [B, C, F, T]``; with a
    mask the training statistics are over valid frames only (``masked_batch_norm``).
    """

    def __init__(self, channels: int, sub_bands: int = 5, eps: float = 1e-5) -> None:
        super().__init__()
        self.sub_bands = sub_bands
        self.bn = nn.BatchNorm2d(channels * sub_bands, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, C, F, T = x.shape
        if F % self.sub_bands:
            raise ValueError(f"SubSpectralNorm: {F} frequency bins do not split into "
                             f"{self.sub_bands} sub-bands")  # fmt: skip
        x = masked_batch_norm(self.bn, x.reshape(B, C * self.sub_bands, F // self.sub_bands, T),
                              mask)  # fmt: skip
        return x.reshape(B, C, F, T)


class _BCResBlock(nn.Module):
    """One BC-ResBlock; a transition block when ``in_ch != out_ch`` or ``freq_stride > 1``.

    Shapes: ``forward(x [B, C_in, F, T], mask [B, 1, 1, T]) -> [B, C_out, F', T]``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        freq_stride: int,
        dilation: int,
        sub_bands: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.transition = in_ch != out_ch or freq_stride != 1
        self.pre: nn.Module = nn.Identity()
        if self.transition:
            self.pre = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()
            )
        self.freq_conv = nn.Conv2d(
            out_ch, out_ch, (3, 1), stride=(freq_stride, 1), padding=(1, 0), groups=out_ch,
            bias=False,
        )  # fmt: skip
        self.ssn = SubSpectralNorm(out_ch, sub_bands)
        self.temp_conv = nn.Conv2d(
            out_ch, out_ch, (1, 3), padding=(0, dilation), dilation=(1, dilation),
            groups=out_ch, bias=False,
        )  # fmt: skip
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.SiLU()
        self.pointwise = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = masked_sequential(self.pre, x, mask)  # identity, or 1x1 conv -> BN -> ReLU
        aux = self.ssn(self.freq_conv(x), mask)  # f2: [B, C, F', T]
        h = aux.mean(dim=2, keepdim=True) * mask  # [B, C, 1, T], padding zeroed for the conv
        h = self.act(masked_batch_norm(self.bn, self.temp_conv(h), mask))
        h = self.dropout(self.pointwise(h))
        out = h + aux  # broadcast over frequency
        if not self.transition:
            out = out + x
        return torch.relu(out)


class BCResNet(nn.Module):
    """BC-ResNet-``tau`` backbone for keyword spotting on log-mel features.

    Args:
        input_dim: mel bins per frame ``F`` (default 40, as in the paper); the frequency sizes
            after the stem and each stride (``F/2``, ``F/4``, ``F/8`` rounded up) must split
            into ``sub_bands``.
        tau: width multiplier: ``c = round(8 * tau)`` (default 1.0: BC-ResNet-1; 8.0 gives
            BC-ResNet-8).
        sub_bands: SubSpectralNorm groups (default 5).
        dropout: Dropout2d probability in every block (default 0.1).
        pooling: factory ``pooling(4c)`` returning a module ``(x [B, T, C], lengths [B]) ->
            [B, out_dim]`` with ``out_dim``, e.g. a ``kwsnet.nn.pooling`` class by
            ``class_path`` (default None: ``MeanPooling``, the paper's average pooling).

    Shapes: ``forward(x [B, T, input_dim], lengths [B] | None) -> [B, embed_dim]``.
    """

    def __init__(
        self,
        input_dim: int = 40,
        tau: float = 1.0,
        sub_bands: int = 5,
        dropout: float = 0.1,
        pooling: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        c = round(8 * tau)
        freq = (input_dim - 1) // 2 + 1  # after the stem's stride 2
        sizes = []
        for stride in _FREQ_STRIDES:
            freq = (freq - 1) // stride + 1
            sizes.append(freq)
        if any(f % sub_bands for f in sizes):
            raise ValueError(
                f"input_dim={input_dim} gives frequency sizes {sizes} in the four stages; each "
                f"must split into sub_bands={sub_bands} (e.g. input_dim 40 or 80 with 5)"
            )
        self.input_dim = input_dim
        self.tau = tau
        self.stem = nn.Sequential(
            nn.Conv2d(1, 2 * c, 5, stride=(2, 1), padding=2, bias=False),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(),
        )
        blocks = []
        in_ch = 2 * c
        for n, width, stride, dilation in zip(
            _BLOCKS, _WIDTHS, _FREQ_STRIDES, _DILATIONS, strict=True
        ):
            out_ch = int(width * c)
            for i in range(n):
                blocks.append(
                    _BCResBlock(in_ch, out_ch, stride if i == 0 else 1, dilation, sub_bands,
                                dropout)
                )  # fmt: skip
                in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.end_dw = nn.Conv2d(in_ch, in_ch, (sizes[-1], 5), padding=(0, 2), groups=in_ch,
                                bias=False)  # fmt: skip
        self.end_pw = nn.Sequential(
            nn.Conv2d(in_ch, 4 * c, 1, bias=False), nn.BatchNorm2d(4 * c), nn.ReLU()
        )
        self.pooling, self.embed_dim = build_pooling(pooling, 4 * c, MeanPooling)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Map log-mels ``x [B, T, input_dim]`` with ``lengths [B]`` to ``[B, embed_dim]``.

        ``lengths=None`` means every sequence is ``T`` frames long.
        """
        B, T, F = x.shape
        if F != self.input_dim:
            raise ConfigError(
                f"BCResNet expects {self.input_dim} features per frame, got {F}; "
                "set model.backbone.init_args.input_dim to the front end's out_dim"
            )
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(min=1, max=T)
        mask = lengths_to_mask(lengths, T).to(x.dtype)[:, None, None, :]  # [B, 1, 1, T]
        h = masked_sequential(self.stem, x.transpose(1, 2).unsqueeze(1) * mask, mask)
        for block in self.blocks:  # h: [B, 2c, F/2, T] after the stem
            h = block(h, mask)
        h = masked_sequential(self.end_pw, self.end_dw(h * mask), mask)  # [B, 4c, 1, T]
        return self.pooling(h.squeeze(2).transpose(1, 2), lengths)  # [B, T, 4c] -> [B, D]
