"""Front ends: turn a padded waveform batch into model features on the training device.

Contract: ``frontend(wave [B, T], lengths [B]) -> (features, feature_lengths [B])``. Each front
end reports ``out_dim`` (feature width per frame, or ``None`` for raw audio).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RawAudio"]


class RawAudio(nn.Module):
    """Identity front end for raw-waveform backbones (and for precomputed features)."""

    out_dim: int | None = None

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``wave`` and ``lengths`` unchanged."""
        return wave, lengths
