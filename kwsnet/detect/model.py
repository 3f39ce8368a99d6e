"""Building a ``Detector`` from a trained ``ClassifierModule`` or a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kwsnet.errors import ConfigError

from .detector import Detector, DetectorConfig

__all__ = ["module_posteriors", "detector_from_module", "detector_from_checkpoint"]


def module_posteriors(model: Any) -> Any:
    """``batch [B, T] -> softmax(model(batch, lengths)) [B, C]`` for a ClassifierModule."""

    @torch.no_grad()
    def posteriors(batch: torch.Tensor) -> torch.Tensor:
        lengths = torch.full((batch.shape[0],), batch.shape[1], dtype=torch.long)
        return model(batch, lengths).softmax(dim=-1)

    return posteriors


def detector_from_module(
    model: Any,
    window: int,
    sample_rate: int = 16000,
    config: DetectorConfig | None = None,
    keywords: Sequence[str] | None = None,
) -> Detector:
    """A detector over ``model`` (put in eval mode): its ``class_names``; keywords are every
    class but ``_unknown_`` / ``_silence_`` unless given."""
    model.eval()
    return Detector(
        module_posteriors(model), model.class_names, window, sample_rate, keywords, config
    )


def detector_from_checkpoint(
    ckpt_path: str, config: DetectorConfig | None = None, overrides: Sequence[str] = ()
) -> Detector:
    """Rebuild the checkpoint's model (``kwsnet.loading.build_from_config``); the window is the
    data's ``clip_samples``, the rate its ``sample_rate``.

    Raises:
        ConfigError: the checkpoint's config has no fixed clip length (``data.clip_samples``).
    """
    from kwsnet.loading import build_from_config  # imports Lightning: only for this helper

    model, dm = build_from_config(None, ckpt_path, overrides)
    window = dm.clip_samples
    if window is None:
        raise ConfigError(f"{ckpt_path}: data.clip_samples is null; a detector needs a window")
    return detector_from_module(model, window, dm.source_args.sample_rate, config)
