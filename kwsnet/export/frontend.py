"""The tables the C front end (cnative/src/kwsn_frontend.h) runs a LogMel / MFCC with.

Everything comes from the module itself, its torchaudio buffers included (the window
``mel.spectrogram.window``, the filterbank ``mel.mel_scale.fb``, MFCC's ``dct``), so the
exported model and the C arithmetic agree with training by construction: the C side only
frames, transforms and sums. ``f_min`` / ``f_max`` / the mel scale live in the filterbank and
any window shape in the window table, so they need no support of their own; what the C cannot
do (another pad mode, a magnitude or normalised spectrogram, a front end class it does not
know) raises :class:`~kwsnet.export.layers.ExportError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kwsnet.data.features import MFCC, NORMALIZATIONS, LogMel
from kwsnet.export.layers import ExportError

__all__ = ["FrontendTables", "NORMALIZE_CODES", "frontend_tables"]

# LogMel(normalize=...) -> the C enum KWSN_FE_NORM_* (kwsn_frontend.h)
NORMALIZE_CODES: dict[str, int] = {"none": 0, "mean": 1, "meanvar": 2}
assert tuple(NORMALIZE_CODES) == NORMALIZATIONS, "keep NORMALIZE_CODES in step with LogMel"


@dataclass(frozen=True)
class FrontendTables:
    """The fields of the C ``kwsn_frontend`` struct, in its order.

    Attributes:
        n_fft: FFT size (any size >= 2).
        hop_length: samples between frames.
        n_mels: mel bands.
        n_out: output width per frame: ``n_mels`` (LogMel) or ``n_mfcc`` (MFCC).
        center: reflect-pad ``n_fft // 2`` samples on both sides before framing.
        normalize: ``NORMALIZE_CODES[frontend.normalize]``.
        eps: the log floor, ``log(mel + eps)``, as float32 rounds it.
        window: ``[n_fft]`` float32, torch's window zero-padded centrally to ``n_fft`` as
            ``torch.stft`` pads a ``win_length < n_fft`` window.
        fbank: ``[n_fft // 2 + 1, n_mels]`` float32, ``melscale_fbanks``' layout.
        dct: ``[n_mels, n_out]`` float32 (``create_dct(n_mfcc, n_mels, "ortho")``) or None.
    """

    n_fft: int
    hop_length: int
    n_mels: int
    n_out: int
    center: bool
    normalize: int
    eps: float
    window: np.ndarray
    fbank: np.ndarray
    dct: np.ndarray | None


def _table(tensor: torch.Tensor, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``tensor`` as a C-contiguous float32 array of ``shape``, finite, else ExportError."""
    arr = np.ascontiguousarray(tensor.detach().cpu().float().numpy(), dtype=np.float32)
    if arr.shape != shape:
        raise ExportError(f"frontend {name}: expected shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ExportError(f"frontend {name}: holds NaN or infinite values")
    return arr


def frontend_tables(frontend: nn.Module) -> FrontendTables:
    """The C front end's parameters and tables for ``frontend`` (a LogMel or an MFCC).

    Raises:
        ExportError: ``frontend`` is another class (a subclass too: it may compute something
            else), or a field the C front end cannot reproduce: ``pad_mode`` other than
            "reflect" (with ``center``), ``power`` other than 2, ``normalized`` STFT,
            ``onesided`` False, extra ``pad``, a window longer than ``n_fft``, a non-positive
            ``eps``, or tables of the wrong shape or with NaN / Inf.
    """
    if type(frontend) not in (LogMel, MFCC):
        raise ExportError(
            f"frontend: the C front end runs kwsnet.data.features.LogMel or MFCC, "
            f"got {type(frontend).__module__}.{type(frontend).__qualname__}"
        )
    spec = frontend.mel.spectrogram
    n_fft, hop = int(spec.n_fft), int(spec.hop_length)
    checks = (
        ("spectrogram.power", spec.power, 2.0),
        ("spectrogram.normalized", bool(spec.normalized), False),
        ("spectrogram.onesided", bool(getattr(spec, "onesided", True)), True),
        ("spectrogram.pad", int(spec.pad), 0),
        ("spectrogram.n_fft", n_fft, int(frontend.n_fft)),
        ("spectrogram.hop_length", hop, int(frontend.hop_length)),
        ("spectrogram.center", bool(spec.center), bool(frontend.center)),
    )
    for name, value, want in checks:
        if value != want:
            raise ExportError(f"frontend {name}={value!r}: the C front end needs {want!r}")
    if spec.center and spec.pad_mode != "reflect":
        raise ExportError(
            f"frontend spectrogram.pad_mode={spec.pad_mode!r}: the C front end pads 'reflect'"
        )
    if n_fft < 2 or hop < 1:
        raise ExportError(f"frontend n_fft={n_fft}, hop_length={hop}: need n_fft >= 2, hop >= 1")
    eps = float(np.float32(frontend.eps))
    if not eps > 0.0:
        raise ExportError(f"frontend eps={frontend.eps!r}: must be > 0 in float32")
    if frontend.normalize not in NORMALIZE_CODES:
        raise ExportError(
            f"frontend normalize={frontend.normalize!r}: expected one of {tuple(NORMALIZE_CODES)}"
        )

    win = spec.window.detach().cpu().float().reshape(-1)
    win_length = int(win.numel())
    if win_length > n_fft:
        raise ExportError(f"frontend window: {win_length} samples exceed n_fft={n_fft}")
    window = np.zeros(n_fft, dtype=np.float32)
    left = (n_fft - win_length) // 2  # torch.stft's central zero padding
    window[left : left + win_length] = _table(win, "window", (win_length,))

    n_mels = int(frontend.n_mels)
    fbank = _table(frontend.mel.mel_scale.fb, "mel_scale.fb", (n_fft // 2 + 1, n_mels))
    dct = None
    n_out = n_mels
    if isinstance(frontend, MFCC):
        n_out = int(frontend.n_mfcc)
        dct = _table(frontend.dct, "dct", (n_mels, n_out))
    if int(frontend.out_dim) != n_out:
        raise ExportError(f"frontend out_dim={frontend.out_dim}: expected {n_out}")
    return FrontendTables(
        n_fft=n_fft,
        hop_length=hop,
        n_mels=n_mels,
        n_out=n_out,
        center=bool(spec.center),
        normalize=NORMALIZE_CODES[frontend.normalize],
        eps=eps,
        window=window,
        fbank=fbank,
        dct=dct,
    )
