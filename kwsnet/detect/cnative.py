"""The C streaming detector (``cnative/include/kwsnet_stream.h``) from Python.

The C side makes the decisions of :class:`kwsnet.detect.Detector` (same windows, smoothing,
thresholds, patience, refractory period, time convention and tie-breaking) over samples
pushed in chunks of any size. The model file holds no class names, so the keyword mask and
per-class thresholds are built here from the checkpoint's ``class_names``.

    exported = export_checkpoint("best.ckpt", "kws.kwsn")
    dets = c_detect(exported.path, wave, exported.class_names, config=DetectorConfig())
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kwsnet.export.runtime import CModel, CRuntimeError, _Limits

from .detector import Detection, Detector, DetectorConfig

__all__ = [
    "CStream",
    "ExportedModel",
    "c_detect",
    "export_checkpoint",
    "export_module",
    "keyword_mask",
]

_c_u32 = ctypes.c_uint32
_c_size = ctypes.c_size_t
_c_vp = ctypes.c_void_p
STREAM_ALIGN = 8  # KWSN_STREAM_ALIGN
ARENA_ALIGN = 64  # KWSN_ARENA_ALIGN


class _Config(ctypes.Structure):
    """``kwsn_stream_config``."""

    _fields_ = [
        ("hop_samples", _c_u32),
        ("smooth_windows", _c_u32),
        ("threshold", ctypes.c_double),
        ("thresholds", ctypes.POINTER(ctypes.c_double)),
        ("patience", _c_u32),
        ("refractory_ms", ctypes.c_double),
        ("is_keyword", ctypes.POINTER(ctypes.c_uint8)),
        ("sample_rate", _c_u32),
        ("frame_cache", _c_u32),
    ]


class _Detection(ctypes.Structure):
    """``kwsn_detection``."""

    _fields_ = [
        ("time", ctypes.c_double),
        ("score", ctypes.c_double),
        ("start", ctypes.c_uint64),
        ("class_index", _c_u32),
    ]


def _declare(so: ctypes.CDLL) -> ctypes.CDLL:
    if not hasattr(so, "kwsn_stream_init") or not hasattr(so, "kwsn_stream_size"):
        raise CRuntimeError(
            "libkwsnet.so has no kwsn_stream_* or predates kwsn_stream_size; rebuild it "
            "(make -C cnative)"
        )
    so.kwsn_stream_hop.restype = _c_u32
    so.kwsn_stream_hop.argtypes = [ctypes.c_double, _c_u32]
    so.kwsn_stream_check.restype = ctypes.c_int
    so.kwsn_stream_check.argtypes = [_c_vp, ctypes.POINTER(_Config), ctypes.c_char_p, _c_size]
    so.kwsn_stream_bytes.restype = _c_size
    so.kwsn_stream_bytes.argtypes = [_c_vp, ctypes.POINTER(_Config)]
    so.kwsn_stream_size.restype = ctypes.c_int
    so.kwsn_stream_size.argtypes = [
        _c_vp,
        ctypes.POINTER(_Config),
        ctypes.POINTER(_Limits),
        ctypes.POINTER(_c_size),
        ctypes.c_char_p,
        _c_size,
    ]
    so.kwsn_stream_nonfinite_windows.restype = ctypes.c_uint64
    so.kwsn_stream_nonfinite_windows.argtypes = [_c_vp]
    so.kwsn_stream_init.restype = ctypes.c_int
    so.kwsn_stream_init.argtypes = [_c_vp, _c_size, _c_vp, ctypes.POINTER(_Config), _c_vp]
    so.kwsn_stream_reset.restype = None
    so.kwsn_stream_reset.argtypes = [_c_vp]
    so.kwsn_stream_pending_hops.restype = _c_size
    so.kwsn_stream_pending_hops.argtypes = [_c_vp, _c_size]
    so.kwsn_stream_push.restype = ctypes.c_int
    so.kwsn_stream_push.argtypes = [_c_vp, _c_vp, _c_size, _c_vp, _c_size, _c_vp, _c_size, _c_vp]
    so.kwsn_stream_flush.restype = ctypes.c_int
    so.kwsn_stream_flush.argtypes = [_c_vp, _c_vp, _c_size, _c_vp, _c_size, _c_vp]
    so.kwsn_stream_windows.restype = ctypes.c_uint64
    so.kwsn_stream_windows.argtypes = [_c_vp]
    so.kwsn_stream_frame_cached.restype = ctypes.c_int
    so.kwsn_stream_frame_cached.argtypes = [_c_vp]
    so.kwsn_stream_frames_computed.restype = ctypes.c_uint64
    so.kwsn_stream_frames_computed.argtypes = [_c_vp]
    so.kwsn_stream_incremental.restype = ctypes.c_int
    so.kwsn_stream_incremental.argtypes = [_c_vp]
    so.kwsn_stream_scores.restype = ctypes.POINTER(ctypes.c_double)
    so.kwsn_stream_scores.argtypes = [_c_vp]
    so.kwsn_sample_rate.restype = _c_u32
    so.kwsn_sample_rate.argtypes = [_c_vp]
    so.kwsn_softmax.restype = None
    so.kwsn_softmax.argtypes = [_c_vp, _c_size]
    return so


def _aligned(nbytes: int, align: int) -> tuple[np.ndarray, int]:
    """A zeroed buffer of ``nbytes`` and the address of its first ``align``-aligned byte."""
    buf = np.zeros(nbytes + align, dtype=np.uint8)
    return buf, buf.ctypes.data + (-buf.ctypes.data % align)


def keyword_mask(class_names: Sequence[str], keywords: Sequence[str] | None = None) -> list[int]:
    """Per-class 0/1 flags ``[C]``: 1 for the keywords (default: every class but
    ``_unknown_`` / ``_silence_``, as :class:`Detector`)."""
    if keywords is None:
        keywords = [n for n in class_names if n not in Detector.NON_KEYWORDS]
    unknown = [k for k in keywords if k not in class_names]
    if unknown or not keywords:
        raise ValueError(f"keywords {list(keywords)} must be non-empty class names")
    return [int(n in keywords) for n in class_names]


class CStream:
    """One C stream over a model file.

    Args:
        model: a ``.kwsn`` path or a loaded :class:`CModel` (kept alive by the stream).
        class_names: the ``C`` class names (the checkpoint's, in output order).
        keywords: the classes that may fire (default: all but ``_unknown_`` / ``_silence_``).
        config: the :class:`DetectorConfig` (hop, smoothing, thresholds by name, patience,
            refractory period); ``batch_size`` is unused.
        sample_rate: Hz of the pushed audio (default: the model file's).
        frame_cache: keep a log-mel / MFCC model's front-end frames across windows where the
            hop allows (the same detections, fewer frames computed); False: every window
            runs the whole model.
        incremental: with the frame cache, run a streamable model (``StreamTCN``: valid
            stride-1 convs down to the last frame, no per-window normalisation) layer by layer
            on each window's new frames only (:attr:`incremental` says whether it applies;
            the same posteriors); False: the frame cache alone.
        max_storage_bytes: refuse a stream whose storage would be bigger (default the
            library's ``KWSN_DEFAULT_MAX_ARENA_BYTES``, the bound a loaded model's arena has);
            checked by ``kwsn_stream_size`` from the shapes, before anything is allocated.

    Windows holding a NaN / infinite sample, or whose posteriors are not all finite, are
    skipped as :class:`Detector` skips them (``nonfinite_windows`` counts them).

    Raises:
        CRuntimeError: the C side refuses the config (the message names the field and value),
            the model, or the storage size (the message gives the bytes and the limit).
    """

    def __init__(
        self,
        model: str | Path | CModel,
        class_names: Sequence[str],
        keywords: Sequence[str] | None = None,
        config: DetectorConfig | None = None,
        sample_rate: int | None = None,
        lib: str | Path | None = None,
        frame_cache: bool = True,
        max_storage_bytes: int | None = None,
        incremental: bool = True,
    ) -> None:
        self.cmodel = model if isinstance(model, CModel) else CModel(model, lib)
        self._so = _declare(self.cmodel._so)
        self.class_names = list(class_names)
        if len(self.class_names) != self.cmodel.n_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for a model with "
                f"{self.cmodel.n_classes} classes"
            )
        cfg = config or DetectorConfig()
        self.config = cfg
        rate = int(sample_rate or 0)
        model_rate = int(self._so.kwsn_sample_rate(self.cmodel._model))
        self.sample_rate = rate or model_rate
        self.window = self.cmodel.input_len
        self.hop = int(self._so.kwsn_stream_hop(float(cfg.hop_ms), self.sample_rate))
        mask = keyword_mask(self.class_names, keywords)
        thr = [float(cfg.thresholds.get(n, cfg.threshold)) for n in self.class_names]
        self._mask = (ctypes.c_uint8 * len(mask))(*mask)
        self._thr = (ctypes.c_double * len(thr))(*thr)
        self._cfg = _Config(
            self.hop,
            int(cfg.smooth_windows),
            float(cfg.threshold),
            self._thr,
            int(cfg.patience),
            float(cfg.refractory_ms),
            self._mask,
            rate,
            (1 if incremental else 2) if frame_cache else 0,  # 2: KWSN_STREAM_CACHE_ONLY
        )
        msg = ctypes.create_string_buffer(256)
        size = _c_size()
        limits = _Limits(0, int(max_storage_bytes or 0))
        st = self._so.kwsn_stream_size(
            self.cmodel._model,
            ctypes.byref(self._cfg),
            ctypes.byref(limits),
            ctypes.byref(size),
            msg,
            256,
        )
        if st == 1:  # KWSN_ERR_ARG: the message names the field
            raise CRuntimeError(f"stream config: {msg.value.decode()}")
        if st != 0:
            raise CRuntimeError(f"{self.cmodel.status_str(st)}: {msg.value.decode()}")
        nbytes = int(size.value)
        self.storage_bytes = nbytes  # the stream's state (kwsn_stream_size)
        self._storage, addr = _aligned(nbytes, STREAM_ALIGN)
        self._arena, self._arena_addr = _aligned(self.cmodel.arena_bytes, ARENA_ALIGN)
        handle = _c_vp()
        st = self._so.kwsn_stream_init(
            addr, nbytes, self.cmodel._model, ctypes.byref(self._cfg), ctypes.byref(handle)
        )
        if st != 0:
            raise CRuntimeError(f"kwsn_stream_init: {self.cmodel.status_str(st)}")
        self._handle = handle
        self._n_out = _c_size()
        self._n_out_ref = ctypes.byref(self._n_out)
        self._out = (_Detection * 16)()

    def _detections(self, out: ctypes.Array, n: int) -> list[Detection]:
        return [
            Detection(float(d.time), self.class_names[d.class_index], float(d.score))
            for d in out[:n]
        ]

    def push(self, samples: np.ndarray) -> list[Detection]:
        """Push samples ``[n]`` (any n); returns the detections of the windows completed."""
        x = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1))
        cap = int(self._so.kwsn_stream_pending_hops(self._handle, len(x)))
        if cap > len(self._out):
            self._out = (_Detection * cap)()
        out = self._out
        st = self._so.kwsn_stream_push(
            self._handle,
            x.ctypes.data,
            len(x),
            self._arena_addr,
            self.cmodel.arena_bytes,
            out,
            len(out),
            self._n_out_ref,
        )
        if st != 0:
            raise CRuntimeError(f"kwsn_stream_push: {self.cmodel.status_str(st)}")
        n = self._n_out.value
        return self._detections(out, n) if n else []

    def flush(self) -> list[Detection]:
        """End of stream (scores the one zero-padded window of a stream shorter than one)."""
        out = self._out
        st = self._so.kwsn_stream_flush(
            self._handle,
            self._arena_addr,
            self.cmodel.arena_bytes,
            out,
            len(out),
            ctypes.byref(self._n_out),
        )
        if st != 0:
            raise CRuntimeError(f"kwsn_stream_flush: {self.cmodel.status_str(st)}")
        return self._detections(out, self._n_out.value)

    def reset(self) -> None:
        """Start a new stream."""
        self._so.kwsn_stream_reset(self._handle)

    @property
    def windows(self) -> int:
        """Windows scored so far."""
        return int(self._so.kwsn_stream_windows(self._handle))

    @property
    def nonfinite_windows(self) -> int:
        """Windows skipped since the last reset: a NaN / infinite sample or posterior."""
        return int(self._so.kwsn_stream_nonfinite_windows(self._handle))

    @property
    def frame_cached(self) -> bool:
        """Whether the stream keeps front-end frames across windows."""
        return bool(self._so.kwsn_stream_frame_cached(self._handle))

    @property
    def incremental(self) -> bool:
        """Whether the stream runs the model incrementally (each frame through each layer
        once; ``kwsn_stream_incremental``)."""
        return bool(self._so.kwsn_stream_incremental(self._handle))

    @property
    def frames_computed(self) -> int:
        """Front-end frames the frame cache computed so far (0 without the cache)."""
        return int(self._so.kwsn_stream_frames_computed(self._handle))

    @property
    def scores(self) -> np.ndarray | None:
        """The latest window's smoothed scores ``[C]`` (a copy), or None before the first."""
        p = self._so.kwsn_stream_scores(self._handle)
        if not p:
            return None
        return np.ctypeslib.as_array(p, shape=(len(self.class_names),)).copy()

    def detect(self, wave: np.ndarray, chunk: int | None = 1600) -> list[Detection]:
        """Detections in a whole waveform ``[T]`` pushed ``chunk`` samples at a time
        (None: in one push), from a fresh stream."""
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        self.reset()
        step = len(wave) if not chunk else int(chunk)
        out: list[Detection] = []
        for i in range(0, len(wave), max(1, step)):
            out += self.push(wave[i : i + step])
        return out + self.flush()

    def posteriors(self, batch: np.ndarray) -> np.ndarray:
        """``softmax(C logits) [B, C]`` of windows ``[B, T]`` with the C softmax: the
        posterior function that makes a Python :class:`Detector` see the C model."""
        logits = np.ascontiguousarray(self.cmodel.forward(np.asarray(batch)), dtype=np.float32)
        for row in logits:
            self._so.kwsn_softmax(row.ctypes.data, len(row))
        return logits


def c_detect(
    model: str | Path | CModel,
    wave: np.ndarray,
    class_names: Sequence[str],
    keywords: Sequence[str] | None = None,
    config: DetectorConfig | None = None,
    chunk: int | None = 1600,
    sample_rate: int | None = None,
) -> list[Detection]:
    """The C stream's detections in ``wave [T]`` (``chunk`` samples per push), as
    :meth:`Detector.detect` returns them."""
    return CStream(model, class_names, keywords, config, sample_rate).detect(wave, chunk)


@dataclass(frozen=True)
class ExportedModel:
    """A checkpoint written as a C model file, with what the file does not hold."""

    path: Path
    class_names: list[str]
    window: int
    sample_rate: int


def export_checkpoint(
    ckpt_path: str | Path, out: str | Path, overrides: Sequence[str] = ()
) -> ExportedModel:
    """Export a checkpoint's model to ``out`` (``kwsnet export --format cnative``'s path:
    format v1 for a chain, v2 for a traced graph such as kws_cnn_mel)."""
    from kwsnet.loading import build_from_config

    model, dm = build_from_config(None, str(ckpt_path), list(overrides))
    return export_module(model, dm, out, str(ckpt_path))


def export_module(model: object, dm: object, out: str | Path, what: str = "model") -> ExportedModel:
    """Export a ClassifierModule built with its DataModule ``dm`` (window: ``clip_samples``,
    rate: ``source_args.sample_rate``) to ``out``."""
    from kwsnet.export.pipeline import export_model

    rate = int(dm.source_args.sample_rate)  # type: ignore[attr-defined]
    clip = getattr(dm, "clip_samples", None)
    if clip is None:
        raise ValueError(f"{what}: data.clip_samples is null; a detector needs a window")
    model.eval()  # type: ignore[attr-defined]
    export_model(model, "cnative", out, rate, clip_samples=clip)
    return ExportedModel(Path(out), list(model.class_names), int(clip), rate)  # type: ignore[attr-defined]
