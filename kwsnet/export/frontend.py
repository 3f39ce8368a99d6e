"""The tables the C front end (cnative/src/kwsn_frontend.h) runs a LogMel / MFCC with.

Everything comes from the module itself, its torchaudio buffers included (the window
``mel.spectrogram.window``, the filterbank ``mel.mel_scale.fb``, MFCC's ``dct``), so the
exported model and the C arithmetic agree with training by construction: the C side only
frames, transforms and sums. ``f_min`` / ``f_max`` / the mel scale live in the filterbank and
any window shape in the window table, so they need no support of their own; what the C cannot
do (another pad mode, a magnitude or normalised spectrogram, a front end class it does not
know) raises :class:`~kwsnet.export.layers.ExportError` naming the field.

:class:`CFrontend` runs the tables through libkwsnet.so (ctypes), for the golden tests,
per-step parity and the benchmark.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kwsnet.data.features import MFCC, NORMALIZATIONS, LogMel
from kwsnet.export.layers import ExportError
from kwsnet.export.runtime import CRuntimeError, load_library

__all__ = ["CFrontend", "FrontendTables", "NORMALIZE_CODES", "frontend_tables"]

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


_vp, _u32 = ctypes.c_void_p, ctypes.c_uint32


class _CStruct(ctypes.Structure):
    """``kwsn_frontend`` (cnative/src/kwsn_frontend.h), field by field."""

    _fields_ = [
        ("n_fft", _u32),
        ("hop_length", _u32),
        ("n_mels", _u32),
        ("n_out", _u32),
        ("center", _u32),
        ("normalize", _u32),
        ("eps", ctypes.c_float),
        ("window", _vp),
        ("fbank", _vp),
        ("dct", _vp),
    ]


def _declare(so: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the kwsn_frontend_* entry points of ``so`` (internal, but exported by the .so)."""
    fe = ctypes.POINTER(_CStruct)
    for name, res, args in (
        ("kwsn_frontend_check", ctypes.c_int, [fe, _u32]),
        ("kwsn_frontend_frames", _u32, [fe, _u32]),
        ("kwsn_frontend_scratch_floats", ctypes.c_size_t, [fe, _u32]),
        ("kwsn_frontend_frame_scratch_floats", ctypes.c_size_t, [fe]),
        ("kwsn_frontend_ops", ctypes.c_uint64, [fe, _u32]),
        ("kwsn_frontend_run", None, [fe, _vp, _u32, _vp, _vp]),
        ("kwsn_frontend_frame", None, [fe, _vp, _vp, _vp]),
        ("kwsn_frontend_power", None, [fe, _vp, _vp, _vp]),
    ):
        fn = getattr(so, name)
        fn.restype, fn.argtypes = res, args
    return so


class CFrontend:
    """The C front end of libkwsnet.so running ``tables``.

    Args:
        tables: from :func:`frontend_tables` (or built by hand, to test bad parameters).
        lib: path to libkwsnet.so (default: ``cnative_build_dir()``'s, built if missing).

    ``CFrontend(t)(wave [n]) -> [frames, n_out]`` float32, the layout of ``LogMel`` for one
    utterance (the C output is channel-major; this transposes it). ``power(frame [n_fft])``
    and ``log_mel(frame [n_fft])`` run one frame's FFT power spectrum / log-mel.
    """

    def __init__(self, tables: FrontendTables, lib: str | Path | None = None) -> None:
        self.tables = tables
        self._so = _declare(load_library(lib))
        # keep the arrays alive for as long as the struct points at them
        self._window = np.ascontiguousarray(tables.window, dtype=np.float32)
        self._fbank = np.ascontiguousarray(tables.fbank, dtype=np.float32)
        self._dct = None if tables.dct is None else np.ascontiguousarray(tables.dct, np.float32)
        self._fe = _CStruct(
            tables.n_fft,
            tables.hop_length,
            tables.n_mels,
            tables.n_out,
            int(tables.center),
            tables.normalize,
            tables.eps,
            self._window.ctypes.data,
            self._fbank.ctypes.data,
            None if self._dct is None else self._dct.ctypes.data,
        )
        self._scratch: dict[int, np.ndarray] = {}

    def check(self, n_samples: int) -> int:
        """``kwsn_frontend_check``'s status for an ``n_samples`` input (0: OK)."""
        return int(self._so.kwsn_frontend_check(ctypes.byref(self._fe), n_samples))

    def frames(self, n_samples: int) -> int:
        """Frames of an ``n_samples`` input."""
        return int(self._so.kwsn_frontend_frames(ctypes.byref(self._fe), n_samples))

    def ops(self, n_samples: int) -> int:
        """Operation count of one run on ``n_samples`` (an upper bound)."""
        return int(self._so.kwsn_frontend_ops(ctypes.byref(self._fe), n_samples))

    def scratch_floats(self, n_samples: int) -> int:
        """Scratch floats one run on ``n_samples`` needs."""
        return int(self._so.kwsn_frontend_scratch_floats(ctypes.byref(self._fe), n_samples))

    def _checked(self, n_samples: int) -> None:
        status = self.check(n_samples)
        if status != 0:
            msg = self._so.kwsn_status_str(status).decode()
            raise CRuntimeError(f"kwsn_frontend_check(n_samples={n_samples}): {msg}")

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """``wave [n]`` float32 -> features ``[frames, n_out]`` float32."""
        x = np.ascontiguousarray(wave, dtype=np.float32).reshape(-1)
        n = x.shape[0]
        self._checked(n)
        scratch = self._scratch.get(n)
        if scratch is None:
            scratch = self._scratch[n] = np.empty(self.scratch_floats(n), np.float32)
        frames = self.frames(n)
        out = np.empty((self.tables.n_out, frames), np.float32)
        self._so.kwsn_frontend_run(
            ctypes.byref(self._fe), x.ctypes.data, n, scratch.ctypes.data, out.ctypes.data
        )
        return out.T

    def _one_frame(self, fn: str, frame: np.ndarray, width: int) -> np.ndarray:
        x = np.ascontiguousarray(frame, dtype=np.float32).reshape(-1)
        if x.shape[0] != self.tables.n_fft:
            raise ValueError(f"a frame has n_fft={self.tables.n_fft} samples, got {x.shape[0]}")
        self._checked(self.tables.n_fft)
        fe = ctypes.byref(self._fe)
        scratch = np.empty(self._so.kwsn_frontend_frame_scratch_floats(fe), np.float32)
        out = np.empty(width, np.float32)
        getattr(self._so, fn)(fe, x.ctypes.data, scratch.ctypes.data, out.ctypes.data)
        return out

    def power(self, frame: np.ndarray) -> np.ndarray:
        """``|rfft(frame * window)|^2`` of ``frame [n_fft]``: ``[n_fft // 2 + 1]``."""
        return self._one_frame("kwsn_frontend_power", frame, self.tables.n_fft // 2 + 1)

    def log_mel(self, frame: np.ndarray) -> np.ndarray:
        """``log(mel + eps)`` of ``frame [n_fft]`` (no DCT, no normalisation): ``[n_mels]``."""
        return self._one_frame("kwsn_frontend_frame", frame, self.tables.n_mels)
