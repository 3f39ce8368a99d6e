"""``kwsnet export`` and ``kwsnet parity``.

    kwsnet export --ckpt_path run/last.ckpt [--config cfg.yaml] --format cnative --out m.kwsn
    kwsnet export --ckpt_path best.ckpt --format cnative --dtype int8 --out m8.kwsn
    kwsnet parity --ckpt_path run/last.ckpt [--config cfg.yaml] [--per-layer] [--lib path.so]
    kwsnet parity --ckpt_path best.ckpt --dtype int8 [--calibration 512] [--per-layer]

``--dtype int8`` quantises after training (``kwsnet.quant``: calibration on ``--calibration``
training clips, min/max or ``--percentile p``) and writes format version 3 (cnative) or a C
header with ``int8_t`` arrays; ``parity --dtype int8`` is the bit-exact gate of the C int8
runtime against the integer reference (``kwsnet.quant.parity``).

Config keys (``--data.root=...``, ``--model.*``, ``--trainer.*``, ``--seed_everything``) are
passed to the config as overrides; any other unknown argument is an error of this command.
The model and data are rebuilt by ``kwsnet.loading.build_from_config`` (imported lazily).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kwsnet.errors import one_line
from kwsnet.export.layers import ExportError, collect_named_layers, input_shape_of
from kwsnet.export.runtime import CRuntimeError

__all__ = ["export_main", "parity_main", "export_model", "export_int8_model", "model_graph"]

FORMATS = ("cnative", "c-header", "onnx")
DTYPES = ("float32", "int8")
INT8_FORMATS = ("cnative", "c-header")


def model_graph(model: object, clip_samples: int | None) -> object | None:
    """The format-v2 graph of ``model`` when its backbone is one the graph tracer knows
    (``kwsnet.export.graph.BLOCK_TRACERS``: residual, log-mel models), else None (a chain of
    standard layers, written as format v1).

    Raises:
        ExportError: a traced model without a fixed clip length (``data.clip_samples``).
    """
    from kwsnet.export.graph import BLOCK_TRACERS, trace_model

    if type(getattr(model, "backbone", None)).__name__ not in BLOCK_TRACERS:
        return None
    if not clip_samples:
        raise ExportError(
            f"the C runtime takes fixed-length clips: set data.clip_samples (got {clip_samples!r})"
        )
    return trace_model(model, int(clip_samples))  # type: ignore[arg-type]


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
    if fmt == "onnx":
        from kwsnet.export.onnx_export import export_onnx

        return export_onnx(named, shape, out)
    raise ExportError(f"unknown format {fmt!r}; valid formats: {FORMATS}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt_path", default=None, help="checkpoint to load (.ckpt)")
    parser.add_argument(
        "--config", default=None, help="YAML config (default: the one stored in the checkpoint)"
    )


def _sample_rate(dm: object) -> int:
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


# Top-level keys of the training config an export/parity override may set.
CONFIG_KEYS = ("data", "model", "trainer", "seed_everything")


def _parse(
    parser: argparse.ArgumentParser, argv: list[str], required: tuple[str, ...] = ()
) -> tuple[argparse.Namespace, list[str]]:
    """``parser.parse_known_args``; the unknown arguments must be config overrides
    (``--data.root x``, ``--model.head=...``), else it is this command's usage error, with
    the closest of its own options (``--fromat`` → did you mean ``--format``?). ``required``
    names options checked after that (so that a typo is reported first)."""
    args, unknown = parser.parse_known_args(argv)
    own = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    i = 0
    while i < len(unknown):
        token = unknown[i]
        key = token[2:].split("=", 1)[0] if token.startswith("--") else ""
        if key.split(".", 1)[0] not in CONFIG_KEYS:
            close = difflib.get_close_matches(token.split("=", 1)[0], own, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            parser.error(f"unrecognized argument: {token}{hint}")
        i += 1
        if "=" not in token and i < len(unknown) and not unknown[i].startswith("--"):
            i += 1  # its value (which may be negative: "-1")
    missing = [f"--{name}" for name in required if getattr(args, name) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    return args, unknown


class _ConfigExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _build(args: argparse.Namespace, overrides: list[str]) -> tuple:
    """``build_from_config``; the config parser's ``SystemExit`` (bad file or key, --help)
    becomes an exit status instead of leaving the process."""
    from kwsnet.loading import build_from_config

    try:
        return build_from_config(args.config, args.ckpt_path, overrides)
    except SystemExit as exc:
        raise _ConfigExit(exc.code if isinstance(exc.code, int) else 1) from exc


def export_main(argv: list[str]) -> int:
    """Entry point of ``kwsnet export``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="kwsnet export", description=__doc__)
    _common(parser)
    parser.add_argument("--format", choices=FORMATS, default="cnative")
    parser.add_argument("--out", help="output file (.kwsn, .h or .onnx); required")
    parser.add_argument(
        "--prefix", default="kwsn_model", help="C symbol prefix for --format c-header"
    )
    _dtype_args(parser)
    args, overrides = _parse(parser, argv, required=("out",))
    if args.dtype == "int8" and args.format not in INT8_FORMATS:
        parser.error(f"--dtype int8 writes {' or '.join(INT8_FORMATS)}, not {args.format}")
    try:
        model, dm = _build(args, overrides)
        clip = getattr(dm, "clip_samples", None)
        if args.dtype == "int8":
            n = _export_int8(model, dm, args)
        else:
            n = export_model(model, args.format, args.out, _sample_rate(dm), args.prefix, clip)
    except _ConfigExit as exc:
        return exc.code
    except (ExportError, ValueError, FileNotFoundError, CRuntimeError) as exc:
        # CRuntimeError: a graph's C header takes its arena from the runtime
        print(f"export failed: {one_line(exc)}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({n} bytes, format {args.format}, {args.dtype})")
    if args.format == "cnative":
        from kwsnet.export.runtime import CModel

        try:  # the runtime's own figures for the file just written
            with CModel(args.out) as cm:
                print(f"arena {cm.arena_bytes} bytes, weights {cm.weight_bytes} bytes")
        except CRuntimeError as exc:
            print(f"(arena and weight bytes need the C runtime: {one_line(exc)})")
    return 0


def _dtype_args(parser: argparse.ArgumentParser) -> None:
    from kwsnet.quant.report import add_calibration_args

    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="float32 (default) or int8 (PTQ)"
    )
    add_calibration_args(parser)


def _export_int8(model: object, dm: object, args: argparse.Namespace) -> int:
    """Quantise ``model`` (calibrated on ``dm``'s training split) and write it; bytes."""
    return export_int8_model(
        model, dm, args.format, args.out, args.calibration, args.percentile, args.prefix
    )


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
    ``dm``'s training split, activation ranges min/max or the ``[100-p, p]`` percentiles) and
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
    rate = _sample_rate(dm)
    if fmt == "cnative":
        return write_quant(qgraph, graph, out, rate)
    from kwsnet.export.c_header import write_int8_header

    return write_int8_header(qgraph, graph, out, rate, prefix)


def _test_audio(dm: object, max_batches: int | None) -> Iterator[object]:
    """The test split's audio batches (the first ``max_batches`` of them, or all); the split
    is set up now, the batches are read lazily."""
    dm.setup("test")  # type: ignore[attr-defined]
    loader = dm.test_dataloader()  # type: ignore[attr-defined]
    return (b["audio"] for i, b in enumerate(loader) if max_batches is None or i < max_batches)


def _parity_int8(args: argparse.Namespace, overrides: list[str]) -> int:
    """``kwsnet parity --dtype int8``: C int8 vs the integer reference, bit for bit."""
    from kwsnet.export.runtime import CModel
    from kwsnet.quant.format import write_quant
    from kwsnet.quant.parity import run_int8_parity
    from kwsnet.quant.report import quantize_model

    try:
        model, dm = _build(args, overrides)
        graph, qgraph = quantize_model(model, dm, args.calibration, args.percentile)
        batches = _test_audio(dm, args.max_batches)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model_int8.kwsn"
            write_quant(qgraph, graph, path, _sample_rate(dm))
            with CModel(path, args.lib) as cm:
                floor = args.ckpt_path is not None and not args.no_class_floor
                rep = run_int8_parity(
                    qgraph, batches, cm, dm.num_classes, args.per_layer, class_floor=floor
                )
    except _ConfigExit as exc:
        return exc.code
    except (ExportError, ValueError, FileNotFoundError, CRuntimeError) as exc:
        print(f"parity failed: {one_line(exc)}", file=sys.stderr)
        return 1
    for line in rep.lines():
        print(line)
    if not rep.ok:
        print(f"PARITY FAILED: {rep.failure()}", file=sys.stderr)
        return 1
    return 0


def parity_main(argv: list[str]) -> int:
    """Entry point of ``kwsnet parity``: PyTorch vs the C runtime over the whole test split.
    Exit status 0 only if every prediction is identical or a near-tie
    (``kwsnet.export.parity``: PyTorch's top-2 margin within float rounding of the logits)."""
    parser = argparse.ArgumentParser(prog="kwsnet parity", description=__doc__)
    _common(parser)
    parser.add_argument("--per-layer", action="store_true", help="report every layer's diff")
    parser.add_argument(
        "--lib", default=None, help="libkwsnet.so (default: built from kwsnet's C sources)"
    )
    parser.add_argument("--max-batches", type=int, default=None, help="stop early (debugging)")
    parser.add_argument(
        "--no-class-floor",
        action="store_true",
        help="do not fail a collapsed model (the floor applies with --ckpt_path only)",
    )
    _dtype_args(parser)
    args, overrides = _parse(parser, argv)
    if args.dtype == "int8":
        return _parity_int8(args, overrides)
    from kwsnet.export.parity import run_parity
    from kwsnet.export.runtime import CModel
    from kwsnet.quant.report import float_graph

    try:
        model, dm = _build(args, overrides)
        clip = getattr(dm, "clip_samples", None)
        graph = float_graph(model, clip)
        batches = _test_audio(dm, args.max_batches)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.kwsn"
            export_model(model, "cnative", path, _sample_rate(dm), clip_samples=clip)
            with CModel(path, args.lib) as cm:
                floor = args.ckpt_path is not None and not args.no_class_floor
                rep = run_parity(
                    model, batches, cm, graph=graph, per_layer=args.per_layer, class_floor=floor
                )
    except _ConfigExit as exc:
        return exc.code
    except (ExportError, ValueError, FileNotFoundError, CRuntimeError) as exc:
        print(f"parity failed: {one_line(exc)}", file=sys.stderr)
        return 1
    for line in rep.lines():
        print(line)
    if not rep.ok:
        if not rep.n:
            why = "no test clips to compare"
        elif rep.n_mismatch:
            why = f"{rep.n_mismatch} C and PyTorch predictions differ beyond a near-tie"
        else:
            why = f"the model is collapsed ({rep.collapse_text()}): agreement on it means nothing"
        print(f"PARITY FAILED: {why}", file=sys.stderr)
        return 1
    return 0
