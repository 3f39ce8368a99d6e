"""DS-CNN, the depthwise-separable CNN of ARM's "Hello Edge" (Zhang et al. 2017).

    features [B, T, F] → [B, 1, T, F] (frames as image height, MFCCs as width)
      → stem Conv2d(1 → C, 10×4, stride s0) → BN → ReLU
      → N blocks: depthwise Conv2d(3×3, stride s_i) → BN → ReLU → pointwise Conv2d(1×1) → BN
        → ReLU
      → average over the feature axis, pooling over valid frames (default masked mean)
      → [B, embed_dim = C]

Presets (``preset``), the channel counts, kernels and strides of the paper's
``model_size_info`` (10 MFCCs × 49 frames, 40 ms window, 20 ms hop):

| preset | C | DS blocks | stem stride | first DS block stride |
|---|---:|---:|---|---|
| S | 64 | 4 | (2, 2) | (1, 1) |
| M | 172 | 4 | (2, 1) | (2, 2) |
| L | 276 | 5 | (2, 1) | (2, 2) |

Convs carry no bias (each is followed by BatchNorm, which holds the shift). The paper's final
fully connected layer is kwsnet's head (``LinearHead``: ``C * classes + classes``), so the
published DS-CNN-S size (≈ 24k parameters, 12 classes) is this backbone plus a 12-class head.

Padding follows TensorFlow's ``SAME`` output size (``ceil(n / s)``), with the same padding on
every utterance: ``(k - 1) // 2`` zeros before and the rest after on both axes, so a frame's
receptive field does not depend on how long the batch is. Frames at or beyond the length are
zeroed before every conv and the lengths follow each time stride (``L → ceil(L / s)``), so
in eval mode a padded batch gives each utterance what it gets alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kwsnet.errors import ConfigError
from kwsnet.models._pooling import build_pooling
from kwsnet.nn.norms import masked_batch_norm
from kwsnet.nn.pooling import MeanPooling, lengths_to_mask

__all__ = ["DSCNN", "PRESETS"]

# preset -> (channels, number of DS blocks, stem stride, first DS block stride)
PRESETS: dict[str, tuple[int, int, tuple[int, int], tuple[int, int]]] = {
    "S": (64, 4, (2, 2), (1, 1)),
    "M": (172, 4, (2, 1), (2, 2)),
    "L": (276, 5, (2, 1), (2, 2)),
}


def _same_pad(kernel: tuple[int, int]) -> nn.ZeroPad2d:
    """Zeros ``(k - 1) // 2`` before and ``k - 1 - that`` after, per axis (``[.., T, F]``)."""
    (kt, kf) = kernel
    return nn.ZeroPad2d(((kf - 1) // 2, kf // 2, (kt - 1) // 2, kt // 2))


class _ConvBN(nn.Module):
    """SAME-padded Conv2d → BN → ReLU over ``[B, C, T, F]``; time lengths follow the stride.

    The input is zeroed at padded frames; the BN's training statistics are over valid output
    frames only (``masked_batch_norm``).

    Shapes: ``forward(x [B, C_in, T, F], lengths [B]) -> ([B, C_out, T', F'], lengths' [B])``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.time_stride = stride[0]
        self.pad = _same_pad(kernel)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x * lengths_to_mask(lengths, x.shape[2]).to(x.dtype)[:, None, :, None]
        out_len = (lengths - 1).div(self.time_stride, rounding_mode="floor") + 1
        h = self.conv(self.pad(x))
        mask = lengths_to_mask(out_len, h.shape[2])[:, None, :, None]  # [B, 1, T', 1]
        return torch.relu(masked_batch_norm(self.bn, h, mask)), out_len


class DSCNN(nn.Module):
    """DS-CNN backbone (Hello Edge) for keyword spotting on MFCC (or log-mel) frames.

    Args:
        input_dim: features per frame ``F`` (default 10: 10 MFCCs, as in the paper).
        preset: ``S`` (default), ``M`` or ``L``: channels, block count and strides of the
            paper; the other arguments override single fields.
        channels: channels of every layer (default None: the preset's).
        num_blocks: depthwise-separable blocks (default None: the preset's).
        stem_kernel: (time, feature) kernel of the stem conv (default (10, 4)).
        stem_stride: (time, feature) stride of the stem (default None: the preset's).
        first_block_stride: (time, feature) stride of the first DS block (default None: the
            preset's); the other blocks have stride 1.
        pooling: factory ``pooling(channels)`` returning a module ``(x [B, T, C], lengths [B])
            -> [B, out_dim]`` with ``out_dim`` (default None: ``MeanPooling``, the paper's
            average pooling).

    Shapes: ``forward(x [B, T, input_dim], lengths [B] | None) -> [B, embed_dim]``.
    """

    def __init__(
        self,
        input_dim: int = 10,
        preset: str = "S",
        channels: int | None = None,
        num_blocks: int | None = None,
        stem_kernel: Sequence[int] = (10, 4),
        stem_stride: Sequence[int] | None = None,
        first_block_stride: Sequence[int] | None = None,
        pooling: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        p_ch, p_blocks, p_stem, p_first = PRESETS[preset]
        channels = p_ch if channels is None else channels
        num_blocks = p_blocks if num_blocks is None else num_blocks
        if channels < 1 or num_blocks < 0:
            raise ValueError(f"channels must be >= 1 and num_blocks >= 0, got {channels}, "
                             f"{num_blocks}")  # fmt: skip
        pairs = {
            "stem_kernel": stem_kernel,
            "stem_stride": p_stem if stem_stride is None else stem_stride,
            "first_block_stride": p_first if first_block_stride is None else first_block_stride,
        }
        for name, value in pairs.items():
            if len(value) != 2 or any(int(v) < 1 for v in value):
                raise ValueError(f"{name} must be two positive ints (time, feature), got "
                                 f"{list(value)}")  # fmt: skip
        kernel, s0, s1 = (
            (int(pairs[k][0]), int(pairs[k][1]))
            for k in ("stem_kernel", "stem_stride", "first_block_stride")
        )
        self.input_dim = input_dim
        self.preset = preset
        self.stem = _ConvBN(1, channels, kernel, s0)
        blocks = []
        for i in range(num_blocks):
            stride = s1 if i == 0 else (1, 1)
            blocks.append(_ConvBN(channels, channels, (3, 3), stride, groups=channels))
            blocks.append(_ConvBN(channels, channels, (1, 1), (1, 1)))
        self.blocks = nn.ModuleList(blocks)
        self.pooling, self.embed_dim = build_pooling(pooling, channels, MeanPooling)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Map features ``x [B, T, input_dim]`` with ``lengths [B]`` to ``[B, embed_dim]``.

        ``lengths=None`` means every sequence is ``T`` frames long.
        """
        B, T, F = x.shape
        if F != self.input_dim:
            raise ConfigError(
                f"DSCNN expects {self.input_dim} features per frame, got {F}; "
                "set model.backbone.init_args.input_dim to the front end's out_dim"
            )
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(min=1, max=T)
        h, lengths = self.stem(x.unsqueeze(1), lengths)  # [B, C, T', F']
        for layer in self.blocks:
            h, lengths = layer(h, lengths)
        return self.pooling(h.mean(dim=3).transpose(1, 2), lengths)  # [B, T', C] -> [B, D]
