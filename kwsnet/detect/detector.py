"""Keyword detection over a long waveform (no Lightning needed).

A window of the model's input length slides over the waveform every ``hop_ms``; each window's
class posteriors are averaged over the last ``smooth_windows`` windows (a causal moving
average, as tflite-micro's ``RecognizeCommands`` averages over its window); a keyword fires
when its smoothed posterior is at least its threshold for ``patience`` consecutive hops
(openWakeWord's ``patience``), is the highest such keyword in that hop, and no detection of
any keyword happened in the previous ``refractory_ms`` (``RecognizeCommands``' suppression,
wekws's skip after an alarm). A detection's time is the centre of the window that fired.

Bad audio: a window holding a NaN or infinite sample is not scored, and one whose posteriors
are not all finite is not used; such a window is *skipped*: its smoothed scores are NaN (so no
keyword is above its threshold there, which resets every streak), it is counted in
``Detector.nonfinite_windows``, and it never enters the moving average, which is the mean of
the valid windows among the last ``smooth_windows``. One bad sample costs only the windows
that hold it (a running cumulative sum would carry the NaN to the end of the stream). The C
detector (``cnative/include/kwsnet_stream.h``) does the same, summing in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["DetectorConfig", "Detection", "Detector", "decide", "smooth", "window_starts"]

Posteriors = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class DetectorConfig:
    """Detector settings (all times in milliseconds).

    Attributes:
        hop_ms: step between windows (default 100).
        smooth_windows: moving average over this many windows, the current one included
            (default 3; 1: no smoothing).
        threshold: smoothed posterior a keyword must reach (default 0.5).
        thresholds: per-keyword thresholds by name, overriding ``threshold`` (default none).
        patience: consecutive hops at or above the threshold before a detection (default 1).
        refractory_ms: after a detection no keyword fires for this long (default 1000).
        batch_size: windows scored per call of the posterior function (default 64).
    """

    hop_ms: float = 100.0
    smooth_windows: int = 3
    threshold: float = 0.5
    thresholds: dict[str, float] = field(default_factory=dict)
    patience: int = 1
    refractory_ms: float = 1000.0
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.hop_ms <= 0:
            raise ValueError(f"hop_ms must be > 0, got {self.hop_ms}")
        if self.smooth_windows < 1 or self.patience < 1 or self.batch_size < 1:
            raise ValueError("smooth_windows, patience and batch_size must be >= 1")
        if self.refractory_ms < 0:
            raise ValueError(f"refractory_ms must be >= 0, got {self.refractory_ms}")


@dataclass(frozen=True)
class Detection:
    """A keyword found at ``time`` seconds (window centre) with smoothed posterior ``score``."""

    time: float
    keyword: str
    score: float


def window_starts(num_samples: int, window: int, hop: int) -> np.ndarray:
    """Start sample of every window; a waveform shorter than one window gets one (padded)."""
    if num_samples <= window:
        return np.zeros(1, dtype=np.int64)
    return np.arange(0, num_samples - window + 1, hop, dtype=np.int64)


def smooth(raw: np.ndarray, valid: np.ndarray, m: int) -> np.ndarray:
    """Causal moving average of posteriors ``raw [N, K]`` over the last ``m`` windows (the
    current one included, fewer at the start), leaving out windows with ``valid [N]`` False;
    NaN rows where the window itself is not valid.

    The sum runs oldest window first in float64 and is divided by the count, the order
    ``kwsn_stream.c`` sums in, so C and Python give the same bits on the same posteriors (and
    a NaN in one window reaches no other window, as it would through a cumulative sum).
    """
    raw = np.asarray(raw, dtype=np.float64)
    n = len(raw)
    acc = np.zeros_like(raw)
    count = np.zeros(n, dtype=np.int64)
    idx = np.arange(n)
    for d in range(min(m, n) - 1, -1, -1):  # d windows back: the oldest first
        j = idx - d
        use = j >= 0
        use[use] = valid[j[use]]
        acc[use] += raw[j[use]]
        count += use
    with np.errstate(invalid="ignore", divide="ignore"):
        out = acc / count[:, None]
    out[~np.asarray(valid, dtype=bool)] = np.nan
    return out


def decide(
    times: np.ndarray,
    scores: np.ndarray,
    keywords: Sequence[str],
    thresholds: Sequence[float],
    patience: int,
    refractory_s: float,
) -> list[Detection]:
    """Detections from smoothed scores ``[N, K]`` at ``times [N]`` (seconds).

    A keyword whose threshold is ``inf`` never fires (used to score keywords one at a time).
    A NaN score is below every threshold: a skipped window's NaN row resets every streak.
    """
    thr = np.asarray(thresholds, dtype=np.float64)
    above = scores >= thr[None, :]
    streak = np.zeros(len(keywords), dtype=np.int64)
    last = -np.inf
    out: list[Detection] = []
    prev = -2
    for n in np.flatnonzero(above.any(axis=1)):  # a hop with none above only resets streaks
        if n != prev + 1:
            streak[:] = 0
        prev = n
        streak = np.where(above[n], streak + 1, 0)
        ready = streak >= patience
        if not ready.any() or times[n] - last < refractory_s:
            continue
        k = int(np.argmax(np.where(ready, scores[n], -np.inf)))
        out.append(Detection(float(times[n]), keywords[k], float(scores[n, k])))
        last = float(times[n])
        streak[:] = 0
    return out


class Detector:
    """Sliding-window keyword detector over any posterior function.

    Args:
        posteriors: ``batch [B, window] -> probabilities [B, C]`` (e.g. a model's softmax).
        class_names: the ``C`` class names.
        keywords: the class names that are keywords (default: every class except
            ``_unknown_`` and ``_silence_``).
        window: samples per window (the model's input length).
        sample_rate: samples per second of the waveforms.
        config: the ``DetectorConfig`` (default: its defaults).
    """

    NON_KEYWORDS = ("_unknown_", "_silence_")

    def __init__(
        self,
        posteriors: Posteriors,
        class_names: Sequence[str],
        window: int,
        sample_rate: int = 16000,
        keywords: Sequence[str] | None = None,
        config: DetectorConfig | None = None,
    ) -> None:
        self.posteriors = posteriors
        self.class_names = list(class_names)
        if keywords is None:
            keywords = [n for n in self.class_names if n not in self.NON_KEYWORDS]
        unknown = [k for k in keywords if k not in self.class_names]
        if unknown or not keywords:
            raise ValueError(f"keywords {list(keywords)} must be non-empty class names")
        self.keywords = list(keywords)
        self.keyword_index = [self.class_names.index(k) for k in self.keywords]
        self.window, self.sample_rate = int(window), int(sample_rate)
        self.config = config or DetectorConfig()
        self.hop = max(1, round(self.config.hop_ms * self.sample_rate / 1000))
        #: windows skipped (a non-finite sample or posterior) in the last ``scores`` call
        self.nonfinite_windows = 0

    def thresholds(self, override: Mapping[str, float] | None = None) -> list[float]:
        """Per-keyword thresholds: ``override``, else the config's, else its ``threshold``."""
        merged = {**self.config.thresholds, **(override or {})}
        return [float(merged.get(k, self.config.threshold)) for k in self.keywords]

    @torch.no_grad()
    def scores(self, wave: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(times [N] in s, smoothed keyword posteriors [N, K])`` of a waveform ``[T]``.

        Rows of skipped windows (a NaN / infinite sample, or posteriors that are not all
        finite) are NaN; their count is left in ``self.nonfinite_windows``.
        """
        wave = torch.as_tensor(np.asarray(wave, dtype=np.float32)).reshape(-1)
        if wave.shape[0] < self.window:
            wave = torch.nn.functional.pad(wave, (0, self.window - wave.shape[0]))
        starts = window_starts(wave.shape[0], self.window, self.hop)
        frames = wave.unfold(0, self.window, self.hop)[: len(starts)]
        ok = torch.isfinite(frames).all(dim=1)
        if not bool(ok.all()):  # the model never sees them (zeros keep the batches' shapes)
            frames = torch.where(ok[:, None], frames, torch.zeros((), dtype=frames.dtype))
        probs = []
        for i in range(0, len(starts), self.config.batch_size):
            p = self.posteriors(frames[i : i + self.config.batch_size].contiguous())
            p = torch.as_tensor(p, dtype=torch.float64)
            ok[i : i + len(p)] &= torch.isfinite(p).all(dim=1)  # every class, as C checks
            probs.append(p[:, self.keyword_index])
        raw = torch.cat(probs).numpy()
        valid = ok.numpy()
        self.nonfinite_windows = int((~valid).sum())
        smoothed = smooth(raw, valid, self.config.smooth_windows)
        times = (starts + self.window / 2) / self.sample_rate
        return times, smoothed

    def decide(
        self, times: np.ndarray, scores: np.ndarray, thresholds: Sequence[float] | None = None
    ) -> list[Detection]:
        """Detections from ``scores`` (``Detector.scores``) at the given thresholds."""
        thr = self.thresholds() if thresholds is None else list(thresholds)
        cfg = self.config
        return decide(times, scores, self.keywords, thr, cfg.patience, cfg.refractory_ms / 1000)

    def detect(self, wave: torch.Tensor | np.ndarray) -> list[Detection]:
        """Detections in a waveform ``[T]`` at the configured thresholds."""
        return self.decide(*self.scores(wave))
