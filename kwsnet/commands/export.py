"""Write a checkpoint's model for the C runtime (a .kwsn file or a C header) or as ONNX.

    kwsnet export --ckpt_path run/last.ckpt [--config cfg.yaml] --format cnative --out m.kwsn
    kwsnet export --ckpt_path best.ckpt --format cnative --dtype int8 --out m8.kwsn

--dtype int8 quantises after training (kwsnet.quant: calibration on --calibration training
clips, activation ranges the [0.01, 99.99] percentiles, or --percentile P: [100-P, P];
--percentile 100 is min/max) and writes format version 3 (cnative) or a C header with
int8_t arrays. The model is rebuilt from the config stored in the checkpoint
(kwsnet.loading); docs/cnative.md, docs/quantization.md.

A checkpoint trained with wandb gets the file logged as the artifact
model-<run id>-<format>-<dtype> (type exported-model) of a job_type=export run beside --out
(<out folder>/wandb/, offline unless WANDB_MODE=online); --trainer.logger false or
WANDB_MODE=disabled logs nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jsonargparse import ArgumentParser, Namespace

from kwsnet.commands.common import add_checkpoint_args, load_model, new_parser, parse
from kwsnet.errors import UsageError, one_line
from kwsnet.export.pipeline import (
    DTYPES,
    FORMATS,
    INT8_FORMATS,
    export_int8_model,
    export_model,
    sample_rate_of,
)
from kwsnet.quant.ptq import DEFAULT_PERCENTILE

__all__ = ["add_dtype_args", "parser", "run"]


def add_dtype_args(parser: ArgumentParser) -> None:
    """``--dtype`` and the calibration of ``--dtype int8`` (export, parity)."""
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="float32, or int8 (PTQ)")
    add_calibration_args(parser)


def add_calibration_args(parser: ArgumentParser) -> None:
    """``--calibration`` and ``--percentile`` (every command that quantises)."""
    parser.add_argument(
        "--calibration", type=int, default=512, help="training clips to calibrate int8 on"
    )
    parser.add_argument(
        "--percentile",
        type=float | None,
        default=DEFAULT_PERCENTILE,
        help=(
            "int8 activation range = the [100-P, P] percentiles of the calibration values "
            f"(default {DEFAULT_PERCENTILE:g}; 100: min/max)"
        ),
    )


def parser() -> ArgumentParser:
    """``kwsnet export``'s parser."""
    p = new_parser("export", __doc__ or "", overrides=True)
    add_checkpoint_args(p)
    p.add_argument("--format", choices=FORMATS, default="cnative", help="file format")
    p.add_argument("--out", type=str, required=True, help="output file (.kwsn, .h or .onnx)")
    p.add_argument("--prefix", type=str, default="kwsn_model", help="C symbol prefix (c-header)")
    add_dtype_args(p)
    return p


def run(argv: Sequence[str]) -> int:
    """``kwsnet export``: 0 once the file is written.

    Raises:
        UsageError: a bad command line (``--dtype int8`` with ``--format onnx``, ...).
        ExportError, QuantError, ConfigError, CheckpointNotFoundError: a model the C runtime
            cannot represent, a bad config or checkpoint.
    """
    args, overrides = parse(parser(), argv, overrides=True)
    if args.dtype == "int8" and args.format not in INT8_FORMATS:
        raise UsageError(f"--dtype int8 writes {' or '.join(INT8_FORMATS)}, not {args.format}")
    model, dm = load_model(args.config, args.ckpt_path, overrides)
    if args.dtype == "int8":
        n = export_int8_model(
            model, dm, args.format, args.out, args.calibration, args.percentile, args.prefix
        )
    else:
        clip = getattr(dm, "clip_samples", None)
        n = export_model(model, args.format, args.out, sample_rate_of(dm), args.prefix, clip)
    print(f"wrote {args.out} ({n} bytes, format {args.format}, {args.dtype})")
    _log_artifact(args, overrides)
    if args.format == "cnative":
        from kwsnet.export.runtime import CModel, CRuntimeError

        try:  # the runtime's own figures for the file just written
            with CModel(args.out) as cm:
                print(f"arena {cm.arena_bytes} bytes, weights {cm.weight_bytes} bytes")
        except CRuntimeError as exc:
            print(f"(arena and weight bytes need the C runtime: {one_line(exc)})")
    return 0


def _log_artifact(args: Namespace, overrides: Sequence[str]) -> None:
    """Log the exported file to wandb when its checkpoint's run had wandb (a warning, never
    an error, when wandb fails: the file is written)."""
    from kwsnet.tracking import log_exported_model

    try:
        logged = log_exported_model(args.ckpt_path, args.out, args.format, args.dtype, overrides)
    except Exception as exc:
        print(f"warning: wandb: {args.out} not logged: {one_line(exc)}", file=sys.stderr)
        return
    if logged is not None:
        name, run_dir = logged
        print(f"logged wandb artifact {name} (exported-model) in {run_dir}")
