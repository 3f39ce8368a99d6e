"""Waveform batch augmentations for the ``ClassifierModule.augment`` hook (training only).

Contract: ``augment(wave [B, T], lengths [B]) -> (wave [B, T'], lengths [B])``. Every module
here is a no-op in eval mode, draws from torch's global RNG on the batch's device (so
Lightning's ``seed_everything`` makes runs repeat), works on the whole batch at once, and
applies itself to each utterance with probability ``p``. The values drawn for the last batch
are kept in ``last`` (a dict of ``[B]`` tensors, ``applied`` included) for tests and logging.

``AugmentChain`` applies a list in order; in YAML::

    augment:
      class_path: kwsnet.data.augment.AugmentChain
      init_args:
        noise_dir: null     # or ../shared/data/speech_commands_tts/_background_noise_
        transforms:
          - {class_path: kwsnet.data.augment.TimeShift, init_args: {max_shift_ms: 100}}
          - {class_path: kwsnet.data.augment.BackgroundNoise, init_args: {snr_db: [5, 20]}}

Spectrogram masking is ``kwsnet.data.features.SpecAugment`` (a front-end option).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import torch
import torchaudio.functional as AF
from torch import nn

from kwsnet.data.audio import AUDIO_EXTENSIONS, read_audio

__all__ = [
    "Augmentation",
    "TimeShift",
    "Gain",
    "BackgroundNoise",
    "SpeedPerturb",
    "AugmentChain",
    "Compose",
    "SILENT_POWER",
    "noise_off_keys",
    "warn_if_noise_off",
]


def _valid_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """``[B, T]`` bool, True at samples ``t < lengths[b]``."""
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def _windows(
    x: torch.Tensor, start: torch.Tensor, size: int, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """``out[b] = x[rows[b], start[b] : start[b] + size]`` for ``x [N, L]``, ``start [B]`` in
    ``[0, L - size]`` (``rows`` default ``0..N-1``): a strided view, then one ``[B, size]``
    copy, without an index tensor of that size."""
    if rows is None:
        rows = torch.arange(x.shape[0], device=x.device)
    flat = x.contiguous().view(-1).unfold(0, size, 1)  # [N * L - size + 1, size] view
    return flat[rows * x.shape[1] + start]


def _uniform(low: float, high: float, n: int, device: torch.device) -> torch.Tensor:
    """``n`` draws from ``U[low, high)`` (float32)."""
    return low + (high - low) * torch.rand(n, device=device)


def _check_range(name: str, value: Sequence[float]) -> tuple[float, float]:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {list(value)}")
    return float(value[0]), float(value[1])


class Augmentation(nn.Module):
    """Base class: the probability, the training-only switch and the ``last`` record.

    Subclasses implement ``_augment(wave, lengths, applied) -> (wave, lengths)``, where
    ``applied [B]`` (bool) marks the utterances to change.

    Args:
        p: probability that an utterance is augmented (default 1.0).
    """

    def __init__(self, p: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p
        self.last: dict[str, torch.Tensor] = {}

    def _augment(
        self, wave: torch.Tensor, lengths: torch.Tensor, applied: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment ``wave [B, T]`` with ``lengths [B]`` in training; identity in eval mode."""
        if wave.dim() != 2:
            raise ValueError(
                f"{type(self).__name__} expects a waveform batch [B, T], got {tuple(wave.shape)}"
            )
        B, T = wave.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=wave.device)
        lengths = lengths.to(device=wave.device, dtype=torch.long)
        if not self.training:
            return wave, lengths
        applied = torch.rand(B, device=wave.device) < self.p
        self.last = {"applied": applied}
        return self._augment(wave, lengths, applied)


ShiftMode = Literal["pad", "roll"]


class TimeShift(Augmentation):
    """Shift each utterance in time by ``U{-max..max}`` samples.

    ``mode="pad"`` moves the signal and fills the gap with zeros (what falls off the end is
    lost); ``mode="roll"`` wraps it around inside the utterance's valid samples. Lengths are
    unchanged. ``last["shift"]`` holds the shift in samples (positive: later; 0 where not
    applied).

    Args:
        max_shift_ms: largest shift in milliseconds (default 100.0).
        sample_rate: sample rate in Hz (default 16000).
        mode: ``pad`` (default) or ``roll``.
        p: probability per utterance (default 0.8).

    Shapes: ``forward(wave [B, T], lengths [B]) -> (wave [B, T], lengths [B])``.
    """

    MODES: tuple[str, ...] = get_args(ShiftMode)

    def __init__(
        self,
        max_shift_ms: float = 100.0,
        sample_rate: int = 16000,
        mode: ShiftMode = "pad",
        p: float = 0.8,
    ) -> None:
        super().__init__(p)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if max_shift_ms < 0:
            raise ValueError(f"max_shift_ms must be >= 0, got {max_shift_ms}")
        self.max_shift = round(max_shift_ms * sample_rate / 1000.0)
        self.mode = mode

    def _augment(
        self, wave: torch.Tensor, lengths: torch.Tensor, applied: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = wave.shape
        m = self.max_shift
        # clamp: float32 rand * (2m + 1) can round up to 2m + 1
        shift = torch.floor(torch.rand(B, device=wave.device) * (2 * m + 1)).long().clamp(max=2 * m)
        shift = shift - m
        shift = torch.where(applied, shift, torch.zeros_like(shift))
        self.last["shift"] = shift
        valid = _valid_mask(lengths, T).to(wave.dtype)
        variable = bool((lengths < T).any())
        if self.mode == "roll":  # wraps inside each valid length: an index gather
            src = torch.arange(T, device=wave.device)[None, :] - shift[:, None]  # [B, T]
            src = torch.remainder(src, lengths.clamp(min=1)[:, None])
            return torch.gather(wave, 1, src.clamp(0, T - 1)) * valid, lengths
        if variable:  # nothing from beyond a length may shift in
            wave = wave * valid
        padded = nn.functional.pad(wave, (m, m))  # [B, T + 2m]; out[t] = wave[t - shift]
        out = _windows(padded, m - shift, T)
        return (out * valid if variable else out), lengths


class Gain(Augmentation):
    """Scale each utterance by a gain drawn uniformly in dB (``last["gain_db"]``; 0 if not applied).

    Args:
        gain_db: ``[low, high]`` range in dB (default [-6, 6]).
        p: probability per utterance (default 0.5).

    Shapes: ``forward(wave [B, T], lengths [B]) -> (wave [B, T], lengths [B])``.
    """

    def __init__(self, gain_db: Sequence[float] = (-6.0, 6.0), p: float = 0.5) -> None:
        super().__init__(p)
        self.gain_db = _check_range("gain_db", gain_db)

    def _augment(
        self, wave: torch.Tensor, lengths: torch.Tensor, applied: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        db = _uniform(*self.gain_db, wave.shape[0], wave.device)
        db = torch.where(applied, db, torch.zeros_like(db))
        self.last["gain_db"] = db
        return wave * torch.pow(10.0, db / 20.0)[:, None].to(wave.dtype), lengths


# Mean power (over valid samples) at or below which a clip counts as silent: -100 dBFS.
SILENT_POWER = 1e-10


class BackgroundNoise(Augmentation):
    """Mix a random segment of a recorded noise file at a random SNR to the clip's own level.

    The noise files (every audio file under ``noise_dir``, searched recursively: wav, flac,
    ... (``AUDIO_EXTENSIONS``), e.g. Speech Commands' ``_background_noise_`` or read speech as
    babble; listed in ``files``) are decoded once with ``kwsnet.data.audio.read_audio``
    (soundfile, mono, resampled to ``sample_rate``, the clips' rate), on the first training
    batch, and kept on the batch's device. Each utterance gets a random file, a random start
    (files shorter than the utterance loop) and an SNR ``U[snr_db]``, measured over its valid
    samples: the noise is scaled so that ``10 log10(P_signal / P_noise)`` equals the drawn
    value, and added to valid samples only.

    A silent clip (mean power at most ``SILENT_POWER``, -100 dBFS: e.g. a Speech Commands
    ``_silence_`` clip of zeros) has no level to be relative to; it gets the noise segment at
    the file's own level times a volume ``U[silence_volume]`` (TensorFlow's silence volume,
    ``[0, 1]``), so it stays finite and becomes a noise-only clip.

    ``last["snr_db"]`` holds the drawn SNRs (``nan`` where not applied or silent),
    ``last["silent"]`` the silent clips, ``last["scale"]`` the gain put on the noise (0 where
    not applied), ``last["file"]`` and ``last["start"]`` the segments.

    Args:
        noise_dir: folder of noise files, searched recursively. None (the default): unset; at
            fit the data's own noise folder is used when it has one (Speech Commands'
            ``_background_noise_``: ``AudioDataModule.noise_dir``), else the module is an
            identity and fit warns. ``False``: mixing switched off on purpose (an identity,
            no fallback, no warning). ``AugmentChain(noise_dir=...)`` can set it.
        snr_db: ``[low, high]`` SNR range in dB (default [5, 20]).
        silence_volume: ``[low, high]`` linear gain on the noise for silent clips (default
            [0, 1]).
        sample_rate: rate the noise is resampled to: the clips' rate (default 16000).
        p: probability per utterance (default 0.8).

    Shapes: ``forward(wave [B, T], lengths [B]) -> (wave [B, T], lengths [B])``.
    """

    def __init__(
        self,
        noise_dir: bool | str | None = None,
        snr_db: Sequence[float] = (5.0, 20.0),
        silence_volume: Sequence[float] = (0.0, 1.0),
        sample_rate: int = 16000,
        p: float = 0.8,
    ) -> None:
        super().__init__(p)
        self.snr_db = _check_range("snr_db", snr_db)
        self.silence_volume = _check_range("silence_volume", silence_volume)
        if self.silence_volume[0] < 0:
            raise ValueError(f"silence_volume must be >= 0, got {list(silence_volume)}")
        self.sample_rate = sample_rate
        self.noise_dir: str | None = None
        self.switched_off = False  # noise_dir: false
        self.files: list[str] = []
        self._waves: list[torch.Tensor] | None = None  # decoded noise files
        self._bank: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (reach, bank, lens)
        self.set_noise_dir(noise_dir)

    def set_noise_dir(self, noise_dir: bool | str | None) -> None:
        """Point the module at ``noise_dir`` (``None``: unset, ``False``: switched off).

        The folder is read on the first training batch, not here, so a model rebuilt from a
        checkpoint for test or export does not need it; a missing or empty folder raises
        ``FileNotFoundError`` on that first batch.
        """
        if noise_dir is True:
            raise ValueError("BackgroundNoise: noise_dir must be a folder, null or false, got true")
        self._waves, self._bank = None, None
        self.switched_off = noise_dir is False
        self.noise_dir = None if noise_dir is None or noise_dir is False else str(noise_dir)
        self.files = []

    def _load_files(self) -> list[torch.Tensor]:
        root = Path(str(self.noise_dir))
        if not root.is_dir():
            raise FileNotFoundError(
                f"BackgroundNoise: noise_dir={self.noise_dir!r} is not a directory"
            )
        self.files = [
            str(f) for f in sorted(root.rglob("*")) if f.suffix.lower() in AUDIO_EXTENSIONS
        ]
        if not self.files:
            raise FileNotFoundError(
                f"BackgroundNoise: {root} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})"
            )
        return [read_audio(f, self.sample_rate) for f in self.files]

    def _noise_bank(self, T: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``([N, L_max + reach], [N])``: each file looped to ``L_f + reach`` samples
        (``reach >= T``, a power of two), so any start in ``[0, L_f)`` has a full ``T``-sample
        window. Rebuilt only for a longer batch or another device, so variable-length batches
        share one bank."""
        if self._bank is None or self._bank[0] < T or self._bank[1].device != device:
            if self._waves is None:
                self._waves = self._load_files()
            reach = 1 << max(T - 1, 1).bit_length()
            lengths = torch.tensor([w.shape[0] for w in self._waves], dtype=torch.long)
            bank = torch.zeros(len(self._waves), int(lengths.max()) + reach)
            for i, w in enumerate(self._waves):
                n = w.shape[0] + reach
                bank[i, :n] = w.repeat(-(-n // w.shape[0]))[:n]
            self._bank = (reach, bank.to(device), lengths.to(device))
        return self._bank[1], self._bank[2]

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix noise into ``wave [B, T]`` in training (identity without a noise folder)."""
        if self.noise_dir is None:
            B, T = wave.shape
            if lengths is None:
                lengths = torch.full((B,), T, dtype=torch.long, device=wave.device)
            return wave, lengths
        return super().forward(wave, lengths)

    def _augment(
        self, wave: torch.Tensor, lengths: torch.Tensor, applied: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = wave.shape
        device = wave.device
        bank, bank_len = self._noise_bank(T, device)
        file = torch.floor(torch.rand(B, device=device) * bank.shape[0]).long()
        file = file.clamp(max=bank.shape[0] - 1)
        flen = bank_len[file]  # [B]
        start = torch.minimum(torch.floor(torch.rand(B, device=device) * flen).long(), flen - 1)
        snr = _uniform(*self.snr_db, B, device)
        volume = _uniform(*self.silence_volume, B, device)
        noise = _windows(bank, start, T, rows=file)  # [B, T]; short files loop
        valid = _valid_mask(lengths, T).to(torch.float32)
        count = valid.sum(dim=1).clamp(min=1.0)
        signal = wave.float()
        p_signal = (signal.pow(2) * valid).sum(dim=1) / count
        p_noise = (noise.pow(2) * valid).sum(dim=1) / count
        scale = torch.sqrt(p_signal / (p_noise.clamp(min=1e-12) * torch.pow(10.0, snr / 10.0)))
        silent = p_signal <= SILENT_POWER
        scale = torch.where(silent, volume, scale)  # no level to be relative to: the file's own
        scale = torch.where(applied, scale, torch.zeros_like(scale))
        self.last.update(
            snr_db=torch.where(applied & ~silent, snr, torch.full_like(snr, math.nan)),
            silent=silent,
            scale=scale,
            file=file,
            start=start,
        )
        out = signal + scale[:, None] * noise * valid
        return out.to(wave.dtype), lengths


def noise_off_keys(augment: nn.Module | None, prefix: str = "model.augment") -> list[str]:
    """Config keys of the ``BackgroundNoise`` modules in ``augment`` that have no noise folder
    and are not switched off (``noise_dir: false``), so would mix nothing, e.g.
    ``model.augment.init_args.transforms[2]`` in an ``AugmentChain``."""
    if augment is None:
        return []
    keys = []
    for name, module in augment.named_modules():
        if (
            isinstance(module, BackgroundNoise)
            and module.noise_dir is None
            and not module.switched_off
        ):
            key = prefix
            for part in name.split(".") if name else []:
                key += f"[{part}]" if part.isdigit() else f".init_args.{part}"
            keys.append(key)
    return keys


def use_data_noise(augment: nn.Module | None, noise_dir: str | None) -> list[str]:
    """Point every ``BackgroundNoise`` in ``augment`` that has no ``noise_dir`` at
    ``noise_dir`` (the data's own noise folder: ``AudioDataModule.noise_dir``), so a config
    trains as recommended with only the data flags. Returns the config keys it filled."""
    if augment is None or noise_dir is None:
        return []
    keys = noise_off_keys(augment)
    for module in augment.modules():
        if (
            isinstance(module, BackgroundNoise)
            and module.noise_dir is None
            and not module.switched_off
        ):
            module.set_noise_dir(noise_dir)
    return keys


def warn_if_noise_off(augment: nn.Module | None, prefix: str = "model.augment") -> bool:
    """Warn (once per call; ``ClassifierModule.setup`` calls it at fit) when a
    ``BackgroundNoise`` in ``augment`` has no ``noise_dir``: the configured noise mixing would
    otherwise be skipped without a word. Returns whether it warned."""
    keys = noise_off_keys(augment, prefix)
    if not keys:
        return False
    chain = isinstance(augment, AugmentChain)
    where = f"{prefix}.init_args.noise_dir" + (
        f" (or {keys[0]}.init_args.noise_dir)" if chain else ""
    )
    warnings.warn(
        f"BackgroundNoise at {', '.join(keys)} has no noise folder: background-noise mixing is "
        f"OFF for this run; set {where}, e.g. --{prefix}.init_args.noise_dir "
        "<speech_commands>/_background_noise_",
        UserWarning,
        stacklevel=2,
    )
    return True


class SpeedPerturb(Augmentation):
    """Speed perturbation: resample by a factor drawn from ``factors`` (pitch and tempo change).

    A factor ``f`` turns ``L`` samples into ``ceil(L / f)`` (``f > 1`` is faster and
    shorter), via ``torchaudio.functional.resample(orig_freq=round(f * sample_rate),
    new_freq=sample_rate)``, one call per distinct factor in the batch. With
    ``keep_length=True`` (fixed-length clips) each result is centre-cropped or zero-padded
    back to its original length, as the data pipeline fits clips, so ``T`` and ``lengths``
    stay; with ``keep_length=False`` the batch is re-padded to the longest result and
    ``lengths`` become the new lengths. ``last["factor"]`` holds the factors (1.0 where not
    applied).

    Args:
        factors: speed factors to draw from uniformly (default [0.9, 1.0, 1.1]).
        sample_rate: sample rate in Hz (default 16000); ``f * sample_rate`` is rounded.
        keep_length: re-fit every utterance to its original length (default True).
        p: probability per utterance (default 1.0).

    Shapes: ``forward(wave [B, T], lengths [B]) -> (wave [B, T'], lengths [B])``; ``T' = T``
    with ``keep_length``.
    """

    def __init__(
        self,
        factors: Sequence[float] = (0.9, 1.0, 1.1),
        sample_rate: int = 16000,
        keep_length: bool = True,
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        if not factors or any(f <= 0 for f in factors):
            raise ValueError(f"factors must be a non-empty list of positive numbers, got {factors}")
        self.factors = [float(f) for f in factors]
        self.sample_rate = sample_rate
        self.keep_length = keep_length

    def _augment(
        self, wave: torch.Tensor, lengths: torch.Tensor, applied: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = wave.shape
        device = wave.device
        table = torch.tensor(self.factors, device=device)
        pick = torch.floor(torch.rand(B, device=device) * len(self.factors)).long()
        factor = table[pick.clamp(max=len(self.factors) - 1)]
        factor = torch.where(applied, factor, torch.ones_like(factor))
        self.last["factor"] = factor
        orig = torch.round(factor * self.sample_rate).long()
        new_len = torch.where(
            orig == self.sample_rate,
            lengths,
            torch.ceil(lengths.double() * self.sample_rate / orig.double()).long(),
        )
        pieces: list[tuple[torch.Tensor, torch.Tensor]] = []
        for of in torch.unique(orig).tolist():
            rows = torch.nonzero(orig == of).squeeze(1)
            x = wave[rows]
            if of != self.sample_rate:
                x = AF.resample(x.float(), int(of), self.sample_rate).to(wave.dtype)
            pieces.append((rows, x))
        T_res = max(x.shape[1] for _, x in pieces)
        res = wave.new_zeros(B, T_res)
        for rows, x in pieces:
            res[rows, : x.shape[1]] = x
        if self.keep_length:
            out_len, T_out = lengths, T
            offset = (new_len - lengths).div(2, rounding_mode="floor")  # < 0: pad both sides
        else:
            out_len, T_out = new_len, int(new_len.max())
            offset = torch.zeros_like(lengths)
        # out[b, t] = res[b, t + offset[b]], zero outside [0, new_len[b]) and beyond out_len[b]
        res = res * _valid_mask(new_len, T_res).to(res.dtype)
        out = _windows(nn.functional.pad(res, (T_out, T_out)), offset + T_out, T_out)
        return out * _valid_mask(out_len, T_out).to(wave.dtype), out_len


class AugmentChain(nn.Module):
    """Apply augmentations in order: ``augment(wave, lengths) -> (wave, lengths)``.

    Args:
        transforms: modules with the augmentation contract, applied first to last
            (default empty: an identity).
        noise_dir: if set, the noise folder of every ``BackgroundNoise`` in ``transforms``
            (one CLI flag, ``--model.augment.init_args.noise_dir DIR``, points a config's chain
            at a folder; ``false`` switches their mixing off); default None leaves each
            transform's own ``noise_dir``.

    Shapes: ``forward(wave [B, T], lengths [B]) -> (wave [B, T'], lengths [B])``; identity in
    eval mode.
    """

    def __init__(
        self, transforms: Sequence[nn.Module] = (), noise_dir: bool | str | None = None
    ) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        if noise_dir is not None:
            mixers = [t for t in self.transforms if isinstance(t, BackgroundNoise)]
            if not mixers:
                raise ValueError(
                    "AugmentChain: noise_dir is set but transforms hold no BackgroundNoise; "
                    "add {class_path: kwsnet.data.augment.BackgroundNoise} to transforms"
                )
            for t in mixers:
                t.set_noise_dir(noise_dir)

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run every transform in training; return the batch unchanged in eval mode."""
        if lengths is None:
            lengths = torch.full(
                (wave.shape[0],), wave.shape[1], dtype=torch.long, device=wave.device
            )
        if not self.training:
            return wave, lengths
        for t in self.transforms:
            wave, lengths = t(wave, lengths)
        return wave, lengths


Compose = AugmentChain
