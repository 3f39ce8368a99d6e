"""Checkpoint selection by false alarms per hour on validation streams (issue 30).

A model is deployed as a detector over a stream, and the checkpoint with the best clip
accuracy is not the one with the fewest false alarms at a given miss rate. ``StreamValidation``
runs the sliding-window detector (``kwsnet.detect``) over labelled validation streams after
every validation epoch and logs, for the pooled keywords (``overall``):

- ``val/stream_frr@<N>FA_h`` for each ``fa_per_hour`` N: the lowest FRR with at most N false
  alarms per hour (1.0 where no threshold gets that few);
- ``val/stream_frr`` (the ``monitor``): their mean, a partial area under the DET curve that is
  less noisy than one point on short streams (on 15 minutes of audio, 1 FA/h allows no false
  alarm at all).

A ``ModelCheckpoint(monitor="val/stream_frr", mode="min")`` then keeps the checkpoint a
detector wants. The streams must be held out of training and of the evaluation streams:
``kwsnet make-streams --split val --filler_part held_out`` builds them from the validation
split's keyword clips and held-out speakers of the negatives folders; given ``filler_dirs``,
the callback builds them itself at the start of fit when ``streams`` holds none yet (same
settings: ``--split val --filler_part held_out``, ``minutes``, ``snr_db``, ``seed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback

from kwsnet.errors import ConfigError

__all__ = ["StreamValidation"]


class StreamValidation(Callback):
    """Log FRR at N FA/h on validation streams after each validation epoch.

    Args:
        streams: a ``make-streams`` folder (``labels.csv`` and ``stream_*.wav``).
        fa_per_hour: the operating points averaged into ``monitor``.
        monitor: the logged key of their mean FRR.
        hop_ms, smooth_windows, patience, refractory_ms: the detector's settings
            (``kwsnet.detect.DetectorConfig``).
        filler_dirs: non-keyword speech folders; when given and ``streams`` has no
            ``labels.csv``, validation streams are written there at the start of fit.
        minutes, snr_db, seed: those streams' length, SNR range and placement seed.
    """

    def __init__(
        self,
        streams: str,
        fa_per_hour: Sequence[float] = (1.0, 2.0, 5.0, 10.0),
        monitor: str = "val/stream_frr",
        hop_ms: float = 100.0,
        smooth_windows: int = 3,
        patience: int = 1,
        refractory_ms: float = 1000.0,
        filler_dirs: Sequence[str] | None = None,
        minutes: float = 15.0,
        snr_db: Sequence[float] = (5.0, 20.0),
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not fa_per_hour or any(not x > 0 for x in fa_per_hour):
            raise ConfigError(f"StreamValidation fa_per_hour must be > 0, got {fa_per_hour}")
        self.streams = Path(streams)
        self.fa_per_hour = [float(x) for x in fa_per_hour]
        self.monitor = monitor
        self.detector_args = dict(
            hop_ms=hop_ms,
            smooth_windows=smooth_windows,
            patience=patience,
            refractory_ms=refractory_ms,
        )
        self.build = (
            None
            if filler_dirs is None
            else dict(
                filler_dirs=tuple(filler_dirs),
                minutes=float(minutes),
                snr_db=tuple(snr_db),
                seed=seed,
            )
        )
        self._waves: dict[str, Any] | None = None
        self._occurrences: list[Any] = []
        self._hours = 0.0

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit" or self.build is None or (self.streams / "labels.csv").is_file():
            return
        from kwsnet.detect.streams import StreamConfig, make_streams

        if trainer.is_global_zero:
            cfg = StreamConfig(split="val", filler_part="held_out", **self.build)  # type: ignore[arg-type]
            make_streams(trainer.datamodule, self.streams, cfg)
        trainer.strategy.barrier("stream_validation_streams")

    def _load(self, sample_rate: int) -> None:
        from kwsnet.data.audio import read_audio
        from kwsnet.detect.evaluate import read_labels

        labels = self.streams / "labels.csv"
        if not labels.is_file():
            raise ConfigError(
                f"StreamValidation streams: {labels} does not exist (write validation streams "
                "with kwsnet make-streams --split val --filler_part held_out)"
            )
        wavs = sorted(self.streams.glob("*.wav"))
        if not wavs:
            raise ConfigError(f"StreamValidation streams: {self.streams} holds no WAV files")
        self._occurrences = read_labels(labels)
        self._waves = {w.name: read_audio(w, sample_rate) for w in wavs}
        self._hours = sum(len(x) for x in self._waves.values()) / sample_rate / 3600

    def evaluate(self, module: Any, window: int, sample_rate: int) -> dict[str, float]:
        """The logged values for ``module`` (a ``ClassifierModule``) with ``window``-sample
        windows: ``{monitor: mean FRR, "val/stream_frr@<N>FA_h": FRR, ...}``."""
        from kwsnet.detect.detector import DetectorConfig
        from kwsnet.detect.evaluate import frr_at, sweep
        from kwsnet.detect.model import detector_from_module

        if self._waves is None:
            self._load(sample_rate)
        assert self._waves is not None
        was_training = module.training
        det = detector_from_module(
            module, window, sample_rate, DetectorConfig(**self.detector_args)
        )
        try:
            stored = {f: det.scores(w) for f, w in self._waves.items()}
        finally:
            module.train(was_training)

        def detect_at(thr: list[float]) -> dict:
            return {f: det.decide(t, s, thr) for f, (t, s) in stored.items()}

        overall = sweep(detect_at, det.keywords, self._occurrences, self._hours, per_keyword=False)[
            "overall"
        ]
        out: dict[str, float] = {}
        for x in self.fa_per_hour:
            frr = frr_at(overall, x)[0]
            out[f"val/stream_frr@{x:g}FA_h"] = 1.0 if np.isnan(frr) else frr
        out[self.monitor] = float(
            np.mean([out[f"val/stream_frr@{x:g}FA_h"] for x in self.fa_per_hour])
        )
        return out

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        dm = trainer.datamodule
        window = getattr(dm, "clip_samples", None)
        if window is None:
            raise ConfigError("StreamValidation needs data.clip_samples (the detector's window)")
        values = self.evaluate(pl_module, int(window), int(dm.source_args.sample_rate))
        for key, value in values.items():
            pl_module.log(key, value, prog_bar=key == self.monitor, sync_dist=False)
