"""ECAPA-TDNN (Desplanques et al. 2020) for speaker embeddings and keyword spotting.

    features [B, T, F] → transpose [B, F, T]
      → stem: Conv1d(F → C, k 5) → ReLU → BN
      → 3 SE-Res2Net blocks (dilation 2, 3, 4), each
          TDNN(1×1) → Res2Net(scale s, k 3, dilation d) → TDNN(1×1) → squeeze-excitation
          + the block input
      → multi-layer feature aggregation: concat of the 3 block outputs → TDNN(1×1, 3C → M)
      → pooling over valid frames (default attentive statistics pooling + BatchNorm:
        ``kwsnet.nn.pooling.AttentiveStatisticsPooling``, ``[mean, std]`` of width 2M)
      → Linear(2M → embed_dim) → [B, embed_dim]

"TDNN" is Conv1d → ReLU → BatchNorm1d, as in the paper and SpeechBrain. Res2Net splits the C
channels into ``s`` groups: the first passes through, group i > 0 gets
``TDNN(x_i + y_{i-1})`` (``y_0`` not added to group 1). Squeeze-excitation scales every channel
by ``sigmoid(W2 relu(W1 mean_t(x)))``, the mean taken over valid frames.

Layer for layer this is SpeechBrain's ``ECAPA_TDNN`` (``channels=[C, C, C, C, M]``), except:
convs pad with zeros, not reflection (a reflected edge would differ between an utterance
alone and the same utterance inside a padded batch), and the attention of the default pooling
is ``Linear → Tanh → Linear`` (the paper's equation), where SpeechBrain puts ReLU and
BatchNorm before the Tanh: 2 × 128 parameters fewer. With C 128, M 384 and 80 mels: 763,312
parameters here, 763,568 in SpeechBrain 1.1.2; C 512, M 1536 (the paper's C=512 model): 6.19M.

Padded frames never leak: frames at or beyond the length are zeroed after every TDNN and at
the input, so every conv reads zeros there, as it would at the end of the utterance alone;
the SE mean and the pooling are taken over valid frames only. Nothing strides in time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from kwsnet.errors import ConfigError
from kwsnet.models._pooling import build_pooling
from kwsnet.nn.norms import masked_batch_norm
from kwsnet.nn.pooling import AttentiveStatisticsPooling, lengths_to_mask

__all__ = ["EcapaTdnn"]


class _TDNN(nn.Module):
    """Conv1d(k, dilation, zero ``same`` padding) → ReLU → BatchNorm1d, output re-masked.

    The BatchNorm's training statistics are over valid frames (``masked_batch_norm``).

    Shapes: ``forward(x [B, C_in, T], mask [B, 1, T]) -> [B, C_out, T]``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            in_ch, out_ch, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation
        )
        self.bn = nn.BatchNorm1d(out_ch)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_batch_norm(self.bn, torch.relu(self.conv(x)), mask) * mask


class _Res2Net(nn.Module):
    """Res2Net with ``scale`` groups of ``C / scale`` channels, hierarchical residuals.

    Shapes: ``forward(x [B, C, T], mask [B, 1, T]) -> [B, C, T]``.
    """

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.scale = scale
        width = channels // scale
        self.convs = nn.ModuleList(
            _TDNN(width, width, kernel_size, dilation) for _ in range(scale - 1)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        chunks = torch.chunk(x, self.scale, dim=1)
        out = [chunks[0]]
        y = None
        for conv, xi in zip(self.convs, chunks[1:], strict=True):
            y = conv(xi if y is None else xi + y, mask)
            out.append(y)
        return torch.cat(out, dim=1)


class _SqueezeExcitation(nn.Module):
    """Channel gates from the masked time mean: ``x * sigmoid(W2 relu(W1 mean_t(x)))``.

    Shapes: ``forward(x [B, C, T], mask [B, 1, T]) -> [B, C, T]``.
    """

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv1d(channels, bottleneck, 1)
        self.excite = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mean = (x * mask).sum(dim=2, keepdim=True) / mask.sum(dim=2, keepdim=True)  # [B, C, 1]
        return x * torch.sigmoid(self.excite(torch.relu(self.squeeze(mean))))


class _SERes2NetBlock(nn.Module):
    """TDNN(1×1) → Res2Net → TDNN(1×1) → SE, plus the input (widths equal: no projection).

    Shapes: ``forward(x [B, C, T], mask [B, 1, T]) -> [B, C, T]``.
    """

    def __init__(self, channels: int, scale: int, dilation: int, se_channels: int) -> None:
        super().__init__()
        self.tdnn1 = _TDNN(channels, channels, 1)
        self.res2net = _Res2Net(channels, scale, 3, dilation)
        self.tdnn2 = _TDNN(channels, channels, 1)
        self.se = _SqueezeExcitation(channels, se_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.tdnn2(self.res2net(self.tdnn1(x, mask), mask), mask)
        return self.se(h, mask) + x


class EcapaTdnn(nn.Module):
    """ECAPA-TDNN backbone: features and lengths to a fixed-size embedding.

    Args:
        input_dim: features per frame ``F`` (default 80: 80 log-mels, as in the paper).
        channels: ``C``, width of the stem and the SE-Res2Net blocks (default 512, the paper's
            small model; 128 is SpeechBrain's ``channels=[128, 128, 128, 128, 384]``).
        mfa_channels: ``M``, width after feature aggregation (default None: ``3 * channels``).
        dilations: dilation of each SE-Res2Net block (default (2, 3, 4)).
        res2net_scale: Res2Net groups ``s`` (default 8); must divide ``channels``.
        se_channels: squeeze-excitation bottleneck (default 128).
        embed_dim: output width, the Linear after pooling (default 192).
        pooling: factory ``pooling(M)`` returning a module ``(x [B, T, M], lengths [B]) ->
            [B, out_dim]`` with ``out_dim`` (default None: ``AttentiveStatisticsPooling`` with
            128 attention channels, global context and BatchNorm, ``out_dim = 2 M``).

    Shapes: ``forward(x [B, T, input_dim], lengths [B] | None) -> [B, embed_dim]``.
    """

    def __init__(
        self,
        input_dim: int = 80,
        channels: int = 512,
        mfa_channels: int | None = None,
        dilations: tuple[int, ...] | list[int] = (2, 3, 4),
        res2net_scale: int = 8,
        se_channels: int = 128,
        embed_dim: int = 192,
        pooling: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if res2net_scale < 2 or channels % res2net_scale:
            raise ValueError(
                f"res2net_scale must be >= 2 and divide channels, got scale {res2net_scale} "
                f"for {channels} channels"
            )
        if not dilations or any(int(d) < 1 for d in dilations):
            raise ValueError(f"dilations must be positive ints, one per block, got {dilations}")
        mfa_channels = 3 * channels if mfa_channels is None else mfa_channels
        self.input_dim = input_dim
        self.stem = _TDNN(input_dim, channels, 5)
        self.blocks = nn.ModuleList(
            _SERes2NetBlock(channels, res2net_scale, int(d), se_channels) for d in dilations
        )
        self.mfa = _TDNN(len(self.blocks) * channels, mfa_channels, 1)
        default = partial(AttentiveStatisticsPooling, attention_channels=128, batch_norm=True)
        self.pooling, pooled = build_pooling(pooling, mfa_channels, default)
        self.embedding = nn.Linear(pooled, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Map features ``x [B, T, input_dim]`` with ``lengths [B]`` to ``[B, embed_dim]``.

        ``lengths=None`` means every sequence is ``T`` frames long.
        """
        B, T, F = x.shape
        if F != self.input_dim:
            raise ConfigError(
                f"EcapaTdnn expects {self.input_dim} features per frame, got {F}; "
                "set model.backbone.init_args.input_dim to the front end's out_dim"
            )
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(min=1, max=T)
        mask = lengths_to_mask(lengths, T).unsqueeze(1).to(x.dtype)  # [B, 1, T]
        h = self.stem(x.transpose(1, 2) * mask, mask)  # [B, C, T]
        outs = []
        for block in self.blocks:
            h = block(h, mask)
            outs.append(h)
        h = self.mfa(torch.cat(outs, dim=1), mask)  # [B, M, T]
        return self.embedding(self.pooling(h.transpose(1, 2), lengths))  # [B, embed_dim]
