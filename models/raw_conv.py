"""Raw-waveform keyword-spotting conv net with per-conv LayerNorm (the seed architecture).

    AvgPool1d(16) → 3× [Conv1d(k3, same) → norm → ReLU → MaxPool1d(4)]
                  → AdaptiveAvgPool1d(1) → Flatten [→ end norm]

With the default 16000-sample input and channels (16, 32, 64) the per-conv LayerNorm shapes
are [16, 1000], [32, 250], [64, 62]. The final ``Linear`` is the head (``kwsnet.nn.heads``),
so export walks ``backbone.layers`` followed by the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn

from kwsnet.errors import ConfigError
from kwsnet.nn.norms import NORM_KINDS, make_norm

__all__ = ["RawConv", "NORM_PLACEMENTS", "NormPlacement", "NormKind"]

NormPlacement = Literal["per_conv", "end", "none"]
NORM_PLACEMENTS: tuple[str, ...] = get_args(NormPlacement)
# The kinds of kwsnet.nn.norms.NORM_KINDS, as a type: the CLI lists them for a wrong value.
NormKind = Literal[tuple(NORM_KINDS)]  # type: ignore[valid-type]


class RawConv(nn.Module):
    """Raw-audio conv backbone.

    Args:
        input_samples: clip length in samples (default 16000: 1 s at 16 kHz).
        channels: output channels of each conv block (default (16, 32, 64)).
        kernel_size: conv kernel size, odd for "same" padding (default 3).
        avg_pool: the front-end AvgPool1d kernel and stride (default 16).
        max_pool: the MaxPool1d kernel and stride after each block (default 4).
        norm_placement: ``per_conv`` (after each conv, before ReLU; default), ``end`` (one norm
            on the pooled feature) or ``none``.
        norm: the norm kind from ``kwsnet.nn.norms`` (default ``layer``).
        norm_options: keyword options for ``make_norm(norm, shape, **norm_options)``, e.g.
            ``{momentum: 0.95, warmup_steps: 100}`` for ``channel`` (default None: the kind's
            defaults). An option the kind does not take is make_norm's ``ValueError``, raised
            here even with ``norm_placement="none"``.

    Shapes: ``forward(x [B, T], lengths [B] | None) -> [B, channels[-1]]``.
    """

    def __init__(
        self,
        input_samples: int = 16000,
        channels: Sequence[int] = (16, 32, 64),
        kernel_size: int = 3,
        avg_pool: int = 16,
        max_pool: int = 4,
        norm_placement: NormPlacement = "per_conv",
        norm: NormKind = "layer",
        norm_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if norm_placement not in NORM_PLACEMENTS:
            raise ValueError(
                f"norm_placement must be one of {NORM_PLACEMENTS}, got {norm_placement!r}"
            )
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for same padding, got {kernel_size}")
        if not channels:
            raise ValueError("channels must name at least one conv block")
        length = input_samples // avg_pool
        if length < 1:
            raise ValueError(f"input_samples={input_samples} is shorter than avg_pool={avg_pool}")
        self.input_samples = input_samples
        self.norm_placement = norm_placement
        options = dict(norm_options or {})

        def norm_layer(shape: tuple[int, ...]) -> nn.Module:
            try:
                return make_norm(norm, shape, **options)
            except ValueError as exc:
                if not options or norm not in NORM_KINDS:
                    raise
                raise ValueError(f"norm_options {options}: {exc}") from exc

        if norm_placement == "none":
            # No norm is built: build one and drop it so a misspelled option still fails.
            norm_layer((channels[-1],))
        self.norm_shapes: list[tuple[int, ...]] = []
        layers: list[nn.Module] = [nn.AvgPool1d(avg_pool)]
        in_ch = 1
        for out_ch in channels:
            layers.append(nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2))
            if norm_placement == "per_conv":
                layers.append(norm_layer((out_ch, length)))
                self.norm_shapes.append((out_ch, length))
            layers += [nn.ReLU(), nn.MaxPool1d(max_pool)]
            length //= max_pool
            if length < 1:
                raise ValueError(
                    f"input_samples={input_samples} is too short for {len(channels)} blocks of "
                    f"MaxPool1d({max_pool}) after AvgPool1d({avg_pool})"
                )
            in_ch = out_ch
        layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten()]
        if norm_placement == "end":
            layers.append(norm_layer((in_ch,)))
            self.norm_shapes.append((in_ch,))
        self.layers = nn.Sequential(*layers)
        self.embed_dim = in_ch

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Map waveforms ``[B, T]`` (or ``[B, 1, T]``) to embeddings ``[B, embed_dim]``.

        ``lengths`` is accepted for the backbone contract; clips are fixed-length here.
        """
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if x.shape[-1] != self.input_samples:
            raise ConfigError(
                f"RawConv expects {self.input_samples} samples per clip, got {x.shape[-1]}; "
                "set data.clip_samples and model.backbone.init_args.input_samples to match"
            )
        return self.layers(x)
