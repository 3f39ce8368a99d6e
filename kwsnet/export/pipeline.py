"""Export and parity of a built model: what ``kwsnet export`` / ``kwsnet parity``
(``kwsnet.commands``) and ``kwsnet.export(...)`` (``kwsnet.api``) do, with plain arguments.

``export_model`` writes a float model (``cnative`` format v1 for a chain of standard layers,
v2 for a traced graph; a C header; ONNX); ``export_int8_model`` quantises after training
(``kwsnet.quant``: calibration on training clips) and writes format v3 or a C header with
``int8_t`` arrays. ``float_parity`` / ``int8_parity`` run the C runtime against PyTorch (float)
or against kwsnet's integer reference (int8) over the test split.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from kwsnet.export.graph import model_graph
from kwsnet.export.layers import ExportError, collect_named_layers, input_shape_of

if TYPE_CHECKING:
    from kwsnet.export.parity import ParityReport
    from kwsnet.quant.parity import Int8ParityReport

__all__ = [
    "DTYPES",
    "FORMATS",
    "INT8_FORMATS",
    "export_int8_model",
    "export_model",
    "float_parity",
    "int8_parity",
    "model_graph",
    "sample_rate_of",
    "test_audio",
]

FORMATS = ("cnative", "c-header", "onnx")
DTYPES = ("float32", "int8")
INT8_FORMATS = ("cnative", "c-header")


def export_model(
    model: object,
    fmt: str,
    out: str | Path,
    sample_rate: int = 16000,
    prefix: str = "kwsn_model",
    clip_samples: int | None = None,
) -> int:
    """Export ``model`` (ClassifierModule-like or nn.Sequential with ``input_samples`` on its
    backbone, or a model :func:`model_graph` traces, for clips of ``clip_samples``) in
    ``fmt`` (one of ``FORMATS``) to ``out``; returns the bytes written.

    Raises:
        ExportError: unsupported layer / settings, or an unknown format.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; valid formats: {FORMATS}")
    # a ClassifierModule (front end, embed, head): one ONNX graph from torch, any backbone
    if fmt == "onnx" and all(hasattr(model, a) for a in ("frontend", "embed", "head")):
        from kwsnet.export.onnx_export import export_onnx_clip

        clip = clip_samples or math.prod(input_shape_of(model))  # type: ignore[arg-type]
        return export_onnx_clip(model, int(clip), out)  # type: ignore[arg-type]
    graph = model_graph(model, clip_samples)
    if graph is not None:
        if fmt == "cnative":
            from kwsnet.export.cnative import write_graph

            return write_graph(graph, out, sample_rate)
        if fmt == "c-header":
            from kwsnet.export.c_header import write_graph_header

            return write_graph_header(graph, out, sample_rate, prefix)
        from kwsnet.export.onnx_export import export_onnx_model

        return export_onnx_model(model, graph, out)
    named = collect_named_layers(model)  # type: ignore[arg-type]
    shape = input_shape_of(model)  # type: ignore[arg-type]
    if fmt == "cnative":
        from kwsnet.export.cnative import write_model

        return write_model(named, shape, out, sample_rate)
    if fmt == "c-header":
        from kwsnet.export.c_header import write_c_header

        return write_c_header(named, shape, out, sample_rate, prefix)
    from kwsnet.export.onnx_export import export_onnx

    return export_onnx(named, shape, out)


def sample_rate_of(dm: object) -> int:
    """The sample rate the model was trained at: ``AudioDataModule.source_args.sample_rate``
    (``data.sample_rate``; audio is resampled to it), written into the exported file.

    Raises:
        ExportError: the DataModule holds no positive integer rate (never a silent default:
            a wrong rate makes ``kwsnet-infer`` reject correct clips, or accept wrong ones).
    """
    rate = getattr(getattr(dm, "source_args", None), "sample_rate", None)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ExportError(
            f"cannot tell the model's sample rate: {type(dm).__name__} has no positive integer "
            f"source_args.sample_rate (got {rate!r}); set data.sample_rate"
        )
    return rate


def export_int8_model(
    model: object,
    dm: object,
    fmt: str,
    out: str | Path,
    calibration: int = 512,
    percentile: float | None = None,
    prefix: str = "kwsn_model",
) -> int:
    """Quantise ``model`` to int8 (post-training: ``calibration`` clips of the DataModule
    ``dm``'s training split, activation ranges the ``[100-p, p]`` percentiles, ``None``: the
    default 99.99, ``100``: min/max) and
    write it in ``fmt`` (one of ``INT8_FORMATS``: format v3 ``cnative`` or a ``c-header``
    with ``int8_t`` arrays) to ``out``, at ``dm``'s sample rate; returns the bytes written.

    Raises:
        ExportError: a format without an int8 form, or no sample rate in ``dm``.
        QuantError: (kwsnet.quant.ptq) no calibration clips, an op without an int8 form.
    """
    if fmt not in INT8_FORMATS:
        raise ExportError(f"dtype int8 writes {' or '.join(INT8_FORMATS)}, not {fmt!r}")
    from kwsnet.quant.format import write_quant
    from kwsnet.quant.report import quantize_model

    graph, qgraph = quantize_model(model, dm, calibration, percentile)
    rate = sample_rate_of(dm)
    if fmt == "cnative":
        return write_quant(qgraph, graph, out, rate)
    from kwsnet.export.c_header import write_int8_header

    return write_int8_header(qgraph, graph, out, rate, prefix)


def test_audio(dm: object, max_batches: int | None = None) -> Iterator[object]:
    """The test split's audio batches (the first ``max_batches`` of them, or all); the split
    is set up now, the batches are read lazily."""
    dm.setup("test")  # type: ignore[attr-defined]
    loader = dm.test_dataloader()  # type: ignore[attr-defined]
    return (b["audio"] for b in itertools.islice(loader, max_batches))


test_audio.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def float_parity(
    model: object,
    dm: object,
    lib: str | None = None,
    per_layer: bool = False,
    class_floor: bool = True,
    max_batches: int | None = None,
) -> ParityReport:
    """The C runtime against PyTorch on ``dm``'s test split (``kwsnet.export.parity``): the
    model exported to a temporary ``.kwsn`` file, run through ``lib`` (default: built from
    kwsnet's C sources); ``class_floor`` fails a collapsed model."""
    from kwsnet.export.parity import run_parity
    from kwsnet.export.runtime import CModel
    from kwsnet.quant.report import float_graph

    clip = getattr(dm, "clip_samples", None)
    graph = float_graph(model, clip)
    batches = test_audio(dm, max_batches)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.kwsn"
        export_model(model, "cnative", path, sample_rate_of(dm), clip_samples=clip)
        with CModel(path, lib) as cm:
            return run_parity(
                model, batches, cm, graph=graph, per_layer=per_layer, class_floor=class_floor
            )


def onnx_parity(
    model: object,
    dm: object,
    class_floor: bool = True,
    max_batches: int | None = None,
) -> ParityReport:
    """onnxruntime against PyTorch on ``dm``'s test split: the model exported as ONNX
    (``export_onnx_clip``, front end included) to a temporary file, every clip's prediction
    compared (near-ties within ``ONNX_RTOL``); ``class_floor`` fails a collapsed model."""
    from kwsnet.export.onnx_export import ONNX_RTOL, OnnxRuntimeModel
    from kwsnet.export.parity import run_parity

    clip = getattr(dm, "clip_samples", None)
    batches = test_audio(dm, max_batches)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_model(model, "onnx", path, sample_rate_of(dm), clip_samples=clip)
        with OnnxRuntimeModel(path) as om:
            return run_parity(
                model, batches, om, class_floor=class_floor, rtol=ONNX_RTOL, runtime="onnxruntime"
            )


def int8_parity(
    model: object,
    dm: object,
    calibration: int = 512,
    percentile: float | None = None,
    lib: str | None = None,
    per_layer: bool = False,
    class_floor: bool = True,
    max_batches: int | None = None,
) -> Int8ParityReport:
    """The C int8 runtime against kwsnet's integer reference on ``dm``'s test split, every
    logit code compared (``kwsnet.quant.parity``), after quantising ``model`` as
    :func:`export_int8_model` does."""
    from kwsnet.export.runtime import CModel
    from kwsnet.quant.format import write_quant
    from kwsnet.quant.parity import run_int8_parity
    from kwsnet.quant.report import quantize_model

    graph, qgraph = quantize_model(model, dm, calibration, percentile)
    batches = test_audio(dm, max_batches)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_int8.kwsn"
        write_quant(qgraph, graph, path, sample_rate_of(dm))
        with CModel(path, lib) as cm:
            return run_int8_parity(
                qgraph,
                batches,
                cm,
                dm.num_classes,  # type: ignore[attr-defined]
                per_layer,
                class_floor=class_floor,
            )
