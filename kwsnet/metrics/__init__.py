"""Evaluation metrics beyond torchmetrics: speaker verification (EER, minDCF)."""

from kwsnet.metrics.verification import (
    build_trials,
    compute_eer,
    compute_min_dcf,
    cosine_scores,
    verification_metrics,
)

__all__ = [
    "build_trials",
    "compute_eer",
    "compute_min_dcf",
    "cosine_scores",
    "verification_metrics",
]
