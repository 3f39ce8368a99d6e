"""Front ends: turn a padded waveform batch into model features on the training device.

Contract: ``frontend(wave [B, T], lengths [B]) -> (features, feature_lengths [B])``. Each front
end reports ``out_dim`` (feature width per frame, or ``None`` for raw audio).

``LogMel`` and ``MFCC`` return ``[B, frames, out_dim]`` with padded frames set to 0; their
``frame_lengths`` follows the STFT framing (``center=True``: ``L // hop_length + 1`` frames for
``L`` samples), so a padded batch gives every utterance the frame count it would get alone.
The last valid frame of a shorter utterance sees zero padding where it alone would see
reflect padding; that is the only difference. ``SpecAugment`` is a front-end option, active
only in training.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torchaudio
from torch import nn

from kwsnet.data.augment import _valid_mask

__all__ = ["RawAudio", "LogMel", "MFCC", "SpecAugment", "NORMALIZATIONS"]

Normalization = Literal["none", "mean", "meanvar"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)


class RawAudio(nn.Module):
    """Identity front end for raw-waveform backbones (and for precomputed features)."""

    out_dim: int | None = None

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``wave`` and ``lengths`` unchanged."""
        return wave, lengths


class SpecAugment(nn.Module):
    """Time and frequency masking (SpecAugment without time warping), training only.

    Each utterance gets ``freq_masks`` bands of width ``U{0..freq_width}`` bins and
    ``time_masks`` spans of width ``U{0..time_width}`` frames inside its valid frames, all set
    to ``fill_value``. Drawn from torch's global RNG (seeded by Lightning), batched.

    Args:
        freq_masks: frequency masks per utterance (default 2).
        freq_width: maximum frequency-mask width in bins (default 8).
        time_masks: time masks per utterance (default 2).
        time_width: maximum time-mask width in frames (default 20).
        fill_value: value of masked cells (default 0.0; the utterance mean with
            ``normalize="mean"``).

    Shapes: ``forward(x [B, T, F], lengths [B]) -> [B, T, F]``; identity in eval mode.
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 8,
        time_masks: int = 2,
        time_width: int = 20,
        fill_value: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("freq_masks", freq_masks),
            ("freq_width", freq_width),
            ("time_masks", time_masks),
            ("time_width", time_width),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width = time_width
        self.fill_value = fill_value

    @staticmethod
    def _spans(
        n_masks: int, max_width: int, extent: torch.Tensor, size: int, device: torch.device
    ) -> torch.Tensor:
        """``[B, size]`` bool: union of ``n_masks`` random spans inside ``[0, extent[b])``."""
        B = extent.shape[0]
        width = torch.floor(torch.rand(B, n_masks, device=device) * (max_width + 1)).long()
        width = torch.minimum(width, extent[:, None])
        start = torch.floor(torch.rand(B, n_masks, device=device) * (extent[:, None] - width + 1))
        start = start.long()
        pos = torch.arange(size, device=device)[None, None, :]
        return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(dim=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mask ``x [B, T, F]`` in training; return it unchanged in eval mode."""
        if not self.training:
            return x
        B, T, F = x.shape
        masked = torch.zeros(B, T, F, dtype=torch.bool, device=x.device)
        if self.freq_masks and self.freq_width:
            extent = torch.full((B,), F, dtype=torch.long, device=x.device)
            masked |= self._spans(self.freq_masks, self.freq_width, extent, F, x.device)[:, None, :]
        if self.time_masks and self.time_width:
            extent = lengths.to(device=x.device, dtype=torch.long).clamp(0, T)
            masked |= self._spans(self.time_masks, self.time_width, extent, T, x.device)[:, :, None]
        return x.masked_fill(masked, self.fill_value)


class LogMel(nn.Module):
    """Log mel filterbank front end: ``log(mel power + eps)`` via ``torchaudio.transforms``.

    Args:
        sample_rate: input sample rate in Hz (default 16000).
        n_fft: FFT size (default 400: 25 ms).
        win_length: window length in samples (default 400).
        hop_length: hop in samples (default 160: 10 ms).
        n_mels: mel bands, the output width (default 40).
        f_min: lowest filter frequency in Hz (default 0.0).
        f_max: highest filter frequency in Hz (default None: ``sample_rate / 2``).
        eps: added before the log (default 1e-6).
        center: pad ``n_fft // 2`` on both sides (reflect) before framing (default True).
        normalize: per-utterance normalisation over valid frames: ``none`` (default), ``mean``
            (cepstral mean normalisation) or ``meanvar`` (mean and variance).
        spec_augment: a ``SpecAugment`` applied after normalisation in training (default None).

    Shapes: ``forward(wave [B, T], lengths [B]) -> (features [B, frames, n_mels],
    frame_lengths [B])``, ``frames = frame_lengths(T)``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        win_length: int = 400,
        hop_length: int = 160,
        n_mels: int = 40,
        f_min: float = 0.0,
        f_max: float | None = None,
        eps: float = 1e-6,
        center: bool = True,
        normalize: Normalization = "none",
        spec_augment: SpecAugment | None = None,
    ) -> None:
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length={win_length} must not exceed n_fft={n_fft}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.center = center
        self.eps = eps
        self.normalize = normalize
        self.n_mels = n_mels
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            center=center,
            power=2.0,
        )
        self.spec_augment = spec_augment
        self.out_dim: int = n_mels

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames the transform yields for ``lengths`` samples (the STFT framing rule)."""
        lengths = lengths.long()
        if self.center:
            return lengths // self.hop_length + 1
        return ((lengths - self.n_fft) // self.hop_length + 1).clamp(min=0)

    def _log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """``wave [B, T] -> [B, frames, n_mels]`` log mel energies.

        The steps of ``self.mel`` (torchaudio ``MelSpectrogram``, power 2), with the power
        spectrum taken as ``re² + im²`` instead of torchaudio's ``abs().pow(2)`` (a complex
        ``hypot``, about a third of the front end's CPU time); ``benchmarks/bench_features.py``
        times both.
        """
        spec = self.mel.spectrogram
        stft = torch.stft(
            wave.float(),
            n_fft=spec.n_fft,
            hop_length=spec.hop_length,
            win_length=spec.win_length,
            window=spec.window,
            center=spec.center,
            pad_mode=spec.pad_mode,
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # [B, n_fft // 2 + 1, frames]
        power = stft.real.square() + stft.imag.square()
        mel = self.mel.mel_scale(power)  # [B, n_mels, frames]
        return torch.log(mel + self.eps).transpose(1, 2)

    def _features(self, wave: torch.Tensor) -> torch.Tensor:
        return self._log_mel(wave)

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of ``wave [B, T]`` (or ``[B, 1, T]``) with ``lengths [B]`` in samples."""
        if wave.dim() == 3 and wave.shape[1] == 1:
            wave = wave.squeeze(1)
        if wave.dim() != 2:
            raise ValueError(f"{type(self).__name__} expects wave [B, T], got {tuple(wave.shape)}")
        B, T = wave.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=wave.device)
        with torch.autocast(device_type=wave.device.type, enabled=False):  # fp32 STFT and log
            feats = self._features(wave.float())  # [B, frames, out_dim]
        frame_lengths = self.frame_lengths(lengths.to(wave.device)).clamp(max=feats.shape[1])
        valid = _valid_mask(frame_lengths, feats.shape[1]).unsqueeze(-1)  # [B, frames, 1]
        if self.normalize != "none":
            count = valid.sum(dim=1, keepdim=True).clamp(min=1)
            mean = (feats * valid).sum(dim=1, keepdim=True) / count
            feats = feats - mean
            if self.normalize == "meanvar":
                std = ((feats * valid).pow(2).sum(dim=1, keepdim=True) / count).sqrt()
                feats = feats / (std + 1e-5)
        if self.spec_augment is not None:
            feats = self.spec_augment(feats, frame_lengths)
        return feats * valid, frame_lengths


class MFCC(LogMel):
    """MFCC front end: ``LogMel`` followed by an orthonormal DCT-II, keeping ``n_mfcc`` terms.

    Equivalent to ``torchaudio.transforms.MFCC(log_mels=True)``; torchaudio's default dB path
    (``log_mels=False``) clamps with ``top_db`` against the whole batch's maximum, which would
    make an utterance's features depend on its batch mates.

    Args:
        n_mfcc: coefficients kept, the output width (default 20); at most ``n_mels``.
        Others as ``LogMel``, with ``n_mels`` defaulting to 40.

    Shapes: ``forward(wave [B, T], lengths [B]) -> (features [B, frames, n_mfcc],
    frame_lengths [B])``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mfcc: int = 20,
        n_fft: int = 400,
        win_length: int = 400,
        hop_length: int = 160,
        n_mels: int = 40,
        f_min: float = 0.0,
        f_max: float | None = None,
        eps: float = 1e-6,
        center: bool = True,
        normalize: Normalization = "none",
        spec_augment: SpecAugment | None = None,
    ) -> None:
        if n_mfcc > n_mels:
            raise ValueError(f"n_mfcc={n_mfcc} must not exceed n_mels={n_mels}")
        super().__init__(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            eps=eps,
            center=center,
            normalize=normalize,
            spec_augment=spec_augment,
        )
        self.n_mfcc = n_mfcc
        dct = torchaudio.functional.create_dct(n_mfcc, n_mels, norm="ortho")  # [n_mels, n_mfcc]
        self.register_buffer("dct", dct, persistent=False)
        self.out_dim = n_mfcc

    def _features(self, wave: torch.Tensor) -> torch.Tensor:
        return self._log_mel(wave) @ self.dct
