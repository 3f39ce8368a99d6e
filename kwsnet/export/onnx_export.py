"""``--format onnx``: any model, front end + backbone + head, as one ONNX graph
(``audio [B, T] -> logits [B, n_classes]`` for clips of a fixed length, dynamic batch) for
onnxruntime (:class:`ClipNet`, :func:`export_onnx_clip`); checked against PyTorch on a test
split by ``kwsnet parity --format onnx`` (:class:`OnnxRuntimeModel`). A chain of standard
layers without a front end (``nn.Sequential``) exports as the C runtime's layer sequence.

A log-mel model's front end is exported too, but not through ``torch.stft``: the
TorchScript exporter cannot export its complex output ("STFT does not currently support
complex types"). :class:`DftFrontend` computes the same features from the same tables (the
exported window, filterbank and DCT) with ONNX-friendly ops: reflect pad, frames by
the real DFT as two strided convs (one kernel row per frequency, the window folded into
the cos/sin bases), power,
mel matmul, log, DCT matmul, per-utterance normalisation. A DFT by matmul is O(n_fft²) per
frame instead of an FFT's O(n_fft log n_fft) and rounds differently from torch.stft
(tests/test_cnative_v2.py bounds the logits' difference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kwsnet.export.cnative import Layers, as_named

__all__ = [
    "ONNX_RTOL",
    "ClipNet",
    "DftFrontend",
    "GraphNet",
    "LayerSequence",
    "OnnxRuntimeModel",
    "export_onnx",
    "export_onnx_clip",
    "export_onnx_model",
]

# onnxruntime vs PyTorch: the DFT-by-matmul front end rounds differently from torch.stft
# (features agree to ~1e-5 relative, measured on every shipped keyword config), so the
# near-tie tolerance is ten times the C runtime's (kwsnet.export.parity.LOGIT_RTOL).
ONNX_RTOL = 1e-4


class LayerSequence(nn.Module):
    """The exported layers as one module: ``x [B, prod(input_shape)] -> [B, n_classes]``."""

    def __init__(
        self,
        layers: Layers,
        input_shape: Sequence[int],
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.layers = nn.Sequential(*[m for _, m in as_named(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T]`` -> ``[B, n_classes]``."""
        return self.layers(x.reshape(x.shape[0], *self.input_shape))


def _torch_onnx_export(
    net: nn.Module, example: torch.Tensor, path: str | Path, input_name: str, opset: int
) -> int:
    """``net`` (eval mode) to ONNX at ``path`` with the TorchScript-based exporter
    (``dynamo=False``: the dynamo exporter cannot follow the backbones' length masks), input
    ``input_name`` and output ``logits`` with a dynamic batch axis; returns the file size."""
    with torch.no_grad():
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=["logits"],
            dynamic_axes={input_name: {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return Path(path).stat().st_size


def export_onnx(
    layers: Layers,
    input_shape: Sequence[int],
    path: str | Path,
    opset: int = 17,
) -> int:
    """Export with the TorchScript-based exporter (``dynamo=False``); returns the file size."""
    seq = LayerSequence(layers, input_shape).eval()
    return _torch_onnx_export(seq, torch.zeros(1, math.prod(seq.input_shape)), path, "audio", opset)


class DftFrontend(nn.Module):
    """The C front end's tables (``kwsnet.export.frontend.FrontendTables``) as plain ops:
    ``wave [B, T] -> [B, n_out, frames]`` (channel-major, as the C runtime's output), all
    frames valid (the C runtime takes fixed-length clips)."""

    def __init__(self, tables: object) -> None:
        super().__init__()
        t = tables
        n = int(t.n_fft)  # type: ignore[attr-defined]
        j = np.arange(n, dtype=np.float64)[:, None]
        k = np.arange(n // 2 + 1, dtype=np.float64)[None, :]
        ang = 2.0 * np.pi * ((j * k) % n) / n
        win = np.asarray(t.window, np.float64)[:, None]  # type: ignore[attr-defined]
        self.register_buffer("cos", torch.from_numpy((np.cos(ang) * win).astype(np.float32)))
        self.register_buffer("sin", torch.from_numpy((-np.sin(ang) * win).astype(np.float32)))
        self.register_buffer("fbank", torch.from_numpy(np.asarray(t.fbank, np.float32)))  # type: ignore[attr-defined]
        dct = t.dct  # type: ignore[attr-defined]
        self.register_buffer(
            "dct", torch.from_numpy(np.asarray(dct, np.float32)) if dct is not None else None
        )
        self.n_fft, self.hop = n, int(t.hop_length)  # type: ignore[attr-defined]
        self.center, self.eps = bool(t.center), float(t.eps)  # type: ignore[attr-defined]
        self.normalize = int(t.normalize)  # type: ignore[attr-defined]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``wave [B, T]`` (or ``[B, 1, T]``) -> ``[B, n_out, frames]``."""
        x = wave.reshape(wave.shape[0], 1, -1)
        if self.center:
            x = nn.functional.pad(x, (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        # the DFT of every frame as a strided conv: kernel row k = window * cos/sin basis k
        re = nn.functional.conv1d(x, self.cos.t().unsqueeze(1), stride=self.hop)  # [B, K, F]
        im = nn.functional.conv1d(x, self.sin.t().unsqueeze(1), stride=self.hop)
        y = torch.log(torch.matmul(self.fbank.t(), re * re + im * im) + self.eps)  # [B, M, F]
        if self.dct is not None:
            y = torch.matmul(self.dct.t(), y)
        if self.normalize >= 1:
            y = y - y.mean(dim=2, keepdim=True)
            if self.normalize == 2:
                y = y / (y.pow(2).mean(dim=2, keepdim=True).sqrt() + 1e-5)
        return y


class GraphNet(nn.Module):
    """A traced graph (``kwsnet.export.graph``) as one module on the exported (BN-folded)
    weights: ``x [B, prod(input_shape)] -> logits``. With ``with_frontend=False`` the front end
    node is left out and the input is the features ``[B, n_out * frames]``."""

    def __init__(self, model: nn.Module, graph: object, with_frontend: bool = True) -> None:
        super().__init__()
        self.graph = graph
        self.with_frontend = with_frontend
        self.model = model  # registers the modules the node functions close over
        # ... and the folded convs, which only the graph holds
        self.folded = nn.ModuleList(
            [n.module for n in graph.nodes if n.module is not None]  # type: ignore[attr-defined]
        )
        fe = graph.nodes[0] if graph.nodes else None  # type: ignore[attr-defined]
        self.dft_frontend = DftFrontend(fe.tables) if fe is not None and fe.tables else None
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, ...] -> [B, n_classes]``."""
        nodes = self.graph.nodes  # type: ignore[attr-defined]
        if self.with_frontend:
            tensors = [x.reshape(x.shape[0], *self.graph.input_shape)]  # type: ignore[attr-defined]
            start = 0
            if nodes and nodes[0].kind == "FrontEnd":
                tensors.append(self.dft_frontend(x))
                start = 1
        else:
            tensors = [x, x.reshape(x.shape[0], nodes[0].tables.n_out, -1)]
            start = 1
        for n in nodes[start:]:
            fn = n.folded if n.folded is not None else n.ref
            tensors.append(fn([tensors[t] for t in n.inputs]))
        return tensors[-1]


def export_onnx_model(
    model: nn.Module, graph: object, path: str | Path, opset: int = 17, with_frontend: bool = True
) -> int:
    """Export a traced graph (front end included: torch.stft -> opset 17 STFT, unless
    ``with_frontend=False``) with the TorchScript-based exporter; returns the file size."""
    net = GraphNet(model, graph, with_frontend).eval()
    if with_frontend:
        example = torch.zeros(1, math.prod(graph.input_shape))  # type: ignore[attr-defined]
    else:
        fe = graph.nodes[0]  # type: ignore[attr-defined]
        with torch.no_grad():
            feats = fe.ref([torch.zeros(1, *graph.input_shape)])  # type: ignore[attr-defined]
        example = feats.reshape(1, -1)
    name = "audio" if with_frontend else "features"
    return _torch_onnx_export(net, example, path, name, opset)


class ClipNet(nn.Module):
    """A ClassifierModule-like model (``frontend``, ``backbone``, ``head``) for clips of
    ``clip_samples`` samples, every sample valid, in ops ``torch.onnx.export`` handles:
    ``audio [B, clip_samples] -> logits [B, n_classes]``.

    A log-mel / MFCC front end becomes :class:`DftFrontend` on the same tables
    (``kwsnet.export.frontend.frontend_tables``: window, filterbank, DCT, normalisation); any
    other front end (raw audio) runs as it is. The backbone gets the full length of every clip
    (its masks all ones) and the head runs as at inference (an AAM-softmax head gives its
    cosine logits, no margin).

    Raises:
        ExportError: the model has no ``frontend`` / ``backbone`` / ``head``.
    """

    def __init__(self, model: nn.Module, clip_samples: int) -> None:
        super().__init__()
        from kwsnet.export.frontend import frontend_tables
        from kwsnet.export.layers import ExportError

        missing = [a for a in ("frontend", "backbone", "head") if getattr(model, a, None) is None]
        if missing:
            raise ExportError(
                f"ONNX export of {type(model).__name__} needs frontend, backbone and head "
                f"(a ClassifierModule); it has no {missing}"
            )
        self.clip_samples = int(clip_samples)
        frontend = model.frontend
        self.backbone, self.head = model.backbone, model.head
        lengths = torch.tensor([self.clip_samples])
        if type(frontend).__name__ in ("LogMel", "MFCC"):
            self.frontend: nn.Module | None = None
            self.dft: DftFrontend | None = DftFrontend(frontend_tables(frontend))
            frames = int(frontend.frame_lengths(lengths)[0])
        else:
            self.frontend, self.dft = frontend, None
            with torch.no_grad():
                frames = int(frontend(torch.zeros(1, self.clip_samples), lengths)[1][0])
        self.frames = frames
        self.requires_grad_(False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [B, clip_samples]`` -> ``logits [B, n_classes]``."""
        batch = audio.shape[0]
        if self.dft is not None:
            feats = self.dft(audio).transpose(1, 2)  # [B, frames, features]
        else:
            full = torch.full((batch,), self.clip_samples, dtype=torch.long)
            feats = self.frontend(audio, full)[0]  # type: ignore[misc]
        lengths = torch.full((batch,), self.frames, dtype=torch.long)
        return self.head(self.backbone(feats, lengths), None)


def export_onnx_clip(model: nn.Module, clip_samples: int, path: str | Path, opset: int = 17) -> int:
    """Export ``model`` as :class:`ClipNet` (input ``audio [batch, clip_samples]``, output
    ``logits``, a dynamic batch axis: ``_torch_onnx_export``); returns the file size."""
    was_training = model.training
    model.eval()
    try:
        net = ClipNet(model, clip_samples).eval()
        return _torch_onnx_export(net, torch.zeros(1, net.clip_samples), path, "audio", opset)
    finally:
        model.train(was_training)


class OnnxRuntimeModel:
    """An exported ONNX model in onnxruntime (one thread unless ``threads``), with the
    interface ``kwsnet.export.parity.run_parity`` compares against PyTorch: ``forward(audio
    [B, T]) -> logits [B, C]``, ``n_classes``, ``arena_bytes`` (0: onnxruntime's own) and
    ``weight_bytes`` (the file's size)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name
        self.n_classes = int(self.session.get_outputs()[0].shape[-1])
        self.arena_bytes = 0
        self.weight_bytes = Path(path).stat().st_size

    def forward(self, audio: np.ndarray) -> np.ndarray:
        """``audio [B, T]`` float32 -> ``logits [B, n_classes]``."""
        x = np.ascontiguousarray(np.asarray(audio, dtype=np.float32))
        return self.session.run(None, {self.input: x})[0]

    def __enter__(self) -> OnnxRuntimeModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session = None  # type: ignore[assignment]
