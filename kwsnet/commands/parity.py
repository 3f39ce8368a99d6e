"""The C runtime (or onnxruntime) against PyTorch over the whole test split.

    kwsnet parity --ckpt_path run/last.ckpt [--config cfg.yaml] [--per_layer] [--lib path.so]
    kwsnet parity --ckpt_path best.ckpt --dtype int8 [--calibration 512] [--per_layer]
    kwsnet parity --ckpt_path best.ckpt --format onnx

Exit status 0 only if every prediction is identical or a near-tie (PyTorch's top-2 margin
within float rounding of the logits; kwsnet.export.parity) and the model is not collapsed
(with --ckpt_path, unless --no_class_floor). --dtype int8 is the bit-exact gate of the C int8
runtime against kwsnet's integer reference: every logit code identical (kwsnet.quant.parity).
--format onnx exports the model as ONNX (front end included) and runs it in onnxruntime, one
thread; near-ties within kwsnet.export.onnx_export.ONNX_RTOL.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jsonargparse import ArgumentParser

from kwsnet.commands.common import add_checkpoint_args, load_model, new_parser, parse
from kwsnet.commands.export import add_dtype_args
from kwsnet.errors import UsageError
from kwsnet.export.pipeline import float_parity, int8_parity, onnx_parity

__all__ = ["ALIASES", "parser", "run"]

# kwsnet 0.1's spellings → today's
ALIASES = {
    "--per-layer": "--per_layer",
    "--max-batches": "--max_batches",
    "--no-class-floor": "--no_class_floor",
}


def parser() -> ArgumentParser:
    """``kwsnet parity``'s parser."""
    p = new_parser("parity", __doc__ or "", overrides=True)
    add_checkpoint_args(p)
    p.add_argument("--per_layer", action="store_true", help="report every layer's difference")
    p.add_argument(
        "--lib", type=str, default=None, help="libkwsnet.so (default: built from kwsnet's C)"
    )
    p.add_argument("--max_batches", type=int | None, default=None, help="stop early (debugging)")
    p.add_argument(
        "--no_class_floor",
        action="store_true",
        help="do not fail a collapsed model (the floor applies with --ckpt_path only)",
    )
    add_dtype_args(p)
    p.add_argument(
        "--format",
        choices=["cnative", "onnx"],
        default="cnative",
        help="the runtime PyTorch is compared with: the C runtime, or onnxruntime",
    )
    return p


def run(argv: Sequence[str]) -> int:
    """``kwsnet parity``: 0 if the gate passes, 1 (with the reason on stderr) if it fails.

    Raises:
        ExportError, QuantError, ConfigError, CheckpointNotFoundError, CRuntimeUnavailableError:
            a model the C runtime cannot represent, a bad config or checkpoint, no C runtime.
    """
    args, overrides = parse(parser(), argv, ALIASES, overrides=True)
    if args.format == "onnx":
        given = {"--dtype int8": args.dtype == "int8", "--per_layer": args.per_layer}
        bad = [flag for flag, on in {**given, "--lib": args.lib}.items() if on]
        if bad:
            raise UsageError(f"--format onnx compares float logits only: drop {', '.join(bad)}")
    model, dm = load_model(args.config, args.ckpt_path, overrides)
    floor = args.ckpt_path is not None and not args.no_class_floor
    if args.format == "onnx":
        rep = onnx_parity(model, dm, floor, args.max_batches)
        why = None if rep.ok else _float_failure(rep)
    elif args.dtype == "int8":
        rep = int8_parity(
            model, dm, args.calibration, args.percentile, args.lib, args.per_layer, floor,
            args.max_batches,
        )  # fmt: skip
        why = None if rep.ok else rep.failure()
    else:
        rep = float_parity(model, dm, args.lib, args.per_layer, floor, args.max_batches)
        why = None if rep.ok else _float_failure(rep)
    for line in rep.lines():
        print(line)
    if why is not None:
        print(f"PARITY FAILED: {why}", file=sys.stderr)
        return 1
    return 0


def _float_failure(rep: object) -> str:
    """Why the float gate failed: no clips, mismatches, or a collapsed model."""
    if not rep.n:  # type: ignore[attr-defined]
        return "no test clips to compare"
    if rep.n_mismatch:  # type: ignore[attr-defined]
        return f"{rep.n_mismatch} {rep.runtime} and PyTorch predictions differ beyond a near-tie"  # type: ignore[attr-defined]
    collapse = rep.collapse_text()  # type: ignore[attr-defined]
    return f"the model is collapsed ({collapse}): agreement on it means nothing"
