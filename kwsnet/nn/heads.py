"""Classification heads: ``head(embedding [B, D], labels [B] | None) -> logits [B, n_classes]``.

A head is built by the LightningModule as ``head(in_features, num_classes)`` so neither width
is typed in a config: the embedding width comes from the backbone, the class count from the
DataModule. Margin heads use ``labels`` in training only.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearHead"]


class LinearHead(nn.Module):
    """A single ``nn.Linear`` (trained with cross-entropy).

    Args:
        in_features: embedding width (from the backbone's ``embed_dim``).
        num_classes: number of classes (from the DataModule).
        bias: whether the Linear has a bias (default True).
    """

    def __init__(self, in_features: int, num_classes: int, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes, bias=bias)
        self.out_features = num_classes

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``embedding [B, D] -> logits [B, num_classes]``; ``labels`` is unused."""
        return self.fc(embedding)
