"""Streaming keyword detection: a sliding-window detector, labelled streams, evaluation.

``kwsnet.detect.detector`` needs only torch and numpy (no Lightning); ``model`` builds a
detector from a ClassifierModule or checkpoint; ``streams`` writes labelled long recordings;
``evaluate`` scores detections with wekws's semantics (see its docstring, docs/streaming.md).
"""

from .detector import Detection, Detector, DetectorConfig, decide
from .evaluate import Occurrence, count_errors, frr_at, read_labels, sweep

__all__ = [
    "Detection",
    "Detector",
    "DetectorConfig",
    "decide",
    "Occurrence",
    "count_errors",
    "frr_at",
    "read_labels",
    "sweep",
]
