"""Classification heads: ``head(embedding [B, D], labels [B] | None) -> logits [B, n_classes]``.

A head is built by the LightningModule as ``head(in_features, num_classes)`` so neither width
is typed in a config: the embedding width comes from the backbone, the class count from the
DataModule. Margin heads use ``labels`` in training only. Every head is trained by plain
cross-entropy on its logits.

For speaker verification the LightningModule scores trials on the *backbone* embedding; each
head's ``embedding_for_verification`` returns that embedding unchanged and is the one place to
change should a head ever add a projection.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LinearHead", "AMSoftmaxHead", "AAMSoftmaxHead"]


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

    def embedding_for_verification(self, embedding: torch.Tensor) -> torch.Tensor:
        """The vector to score trials with (cosine): the backbone embedding, unchanged."""
        return embedding


class _MarginHead(nn.Module):
    """Shared parts of the cosine-margin heads: normalised weights, margin warm-up.

    The margin ramps linearly from 0 to ``margin`` over the first ``warmup_steps`` training
    forwards that carry labels; the step count is a buffer, so it survives checkpoints.
    ``set_progress(fraction)`` overrides the ramp (e.g. from a callback by epoch).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: float,
        margin: float,
        warmup_steps: int,
    ) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.in_features = in_features
        self.out_features = num_classes
        self.scale = scale
        self.margin = margin
        self.warmup_steps = warmup_steps
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))
        self._progress: float | None = None

    def set_progress(self, fraction: float) -> None:
        """Fix the margin warm-up at ``fraction`` in [0, 1] of the full margin."""
        self._progress = min(max(float(fraction), 0.0), 1.0)

    @property
    def current_margin(self) -> float:
        """The margin the next training step uses."""
        if self._progress is not None:
            return self.margin * self._progress
        if self.warmup_steps == 0:
            return self.margin
        return self.margin * min(1.0, int(self.num_steps) / self.warmup_steps)

    def cosine(self, embedding: torch.Tensor) -> torch.Tensor:
        """``cos(embedding, class weight)`` for every class: ``[B, D] -> [B, num_classes]``."""
        return nn.functional.linear(
            nn.functional.normalize(embedding, dim=-1), nn.functional.normalize(self.weight, dim=-1)
        )

    def _target_logit(self, cos_target: torch.Tensor, margin: float) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``embedding [B, D] -> logits [B, num_classes]``.

        In training with ``labels [B]`` the target class gets the margin; otherwise (eval, or
        no labels) the logits are ``scale * cos``.
        """
        cos = self.cosine(embedding)
        if labels is None or not self.training:
            return self.scale * cos
        margin = self.current_margin
        self.num_steps += 1
        one_hot = nn.functional.one_hot(labels.long(), self.out_features).to(torch.bool)
        target = self._target_logit(cos, margin)
        return self.scale * torch.where(one_hot, target, cos)

    def embedding_for_verification(self, embedding: torch.Tensor) -> torch.Tensor:
        """The vector to score trials with (cosine): the backbone embedding, unchanged."""
        return embedding


class AMSoftmaxHead(_MarginHead):
    """Additive-margin softmax (CosFace): target logit ``s * (cos - m)``, others ``s * cos``.

    Train with plain cross-entropy on the logits.

    Args:
        in_features: embedding width (from the backbone's ``embed_dim``).
        num_classes: number of classes (from the DataModule).
        scale: ``s`` (default 30.0).
        margin: ``m`` (default 0.35).
        warmup_steps: training steps over which the margin ramps from 0 (default 0: none).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: float = 30.0,
        margin: float = 0.35,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__(in_features, num_classes, scale, margin, warmup_steps)

    def _target_logit(self, cos_target: torch.Tensor, margin: float) -> torch.Tensor:
        return cos_target - margin


class AAMSoftmaxHead(_MarginHead):
    """Additive angular margin softmax (ArcFace): target logit ``s * cos(theta + m)``.

    Where ``theta + m`` would pass pi, the target logit falls back to ``cos - m sin(m)``
    (ArcFace's monotonic extension) unless ``easy_margin``, which keeps ``cos`` when
    ``cos <= 0``. Train with plain cross-entropy on the logits.

    Args:
        in_features: embedding width (from the backbone's ``embed_dim``).
        num_classes: number of classes (from the DataModule).
        scale: ``s`` (default 30.0).
        margin: angular margin ``m`` in radians (default 0.2).
        warmup_steps: training steps over which the margin ramps from 0 (default 0: none).
        easy_margin: apply the margin only where ``cos > 0`` (default False).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: float = 30.0,
        margin: float = 0.2,
        warmup_steps: int = 0,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(in_features, num_classes, scale, margin, warmup_steps)
        self.easy_margin = easy_margin

    def _target_logit(self, cos_target: torch.Tensor, margin: float) -> torch.Tensor:
        cos_m, sin_m = math.cos(margin), math.sin(margin)
        sin = (1.0 - cos_target.pow(2)).clamp(min=0.0).sqrt()
        phi = cos_target * cos_m - sin * sin_m  # cos(theta + m)
        if self.easy_margin:
            return torch.where(cos_target > 0, phi, cos_target)
        threshold = math.cos(math.pi - margin)
        return torch.where(
            cos_target > threshold, phi, cos_target - math.sin(math.pi - margin) * margin
        )
