"""int8 post-training quantisation through kwsnet's integer reference, against fp32.

    kwsnet quant-report --ckpt_path best.ckpt [--calibration 512] [--percentile 100]

Calibrates on --calibration training clips (evenly spaced over the training split, so every
class is in it; activation ranges the [0.01, 99.99] percentiles, --percentile P for [100-P, P],
--percentile 100 for min/max), quantises (kwsnet.quant.ptq), runs the float model and the
integer reference over the test split and prints fp32 and int8 test accuracy, the share of
predictions that change, the classes each predicts, the SQNR (dB) of every int8 tensor against
the float one, and weight / file bytes float vs int8. Exit status 1 when the int8 model is
collapsed (kwsnet.metrics.collapse) or there are no test clips. docs/quantization.md.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence

from jsonargparse import ArgumentParser

from kwsnet.commands.common import add_checkpoint_args, load_model, new_parser, parse
from kwsnet.commands.export import add_calibration_args
from kwsnet.export.pipeline import sample_rate_of
from kwsnet.quant.report import byte_counts, quantize_model, report_verdict, run_report

__all__ = ["ALIASES", "parser", "run"]

ALIASES = {"--max-batches": "--max_batches"}


def parser() -> ArgumentParser:
    """``kwsnet quant-report``'s parser."""
    p = new_parser("quant-report", __doc__ or "", overrides=True)
    add_checkpoint_args(p)
    add_calibration_args(p)
    p.add_argument("--max_batches", type=int | None, default=None, help="stop early (debugging)")
    return p


def run(argv: Sequence[str]) -> int:
    """``kwsnet quant-report``: 0, or 1 (with the reason on stderr) for no test clips or a
    collapsed int8 model.

    Raises:
        QuantError, ExportError, ConfigError, CheckpointNotFoundError: a model the int8 path
            cannot represent, a bad config or checkpoint.
    """
    args, overrides = parse(parser(), argv, ALIASES, overrides=True)
    model, dm = load_model(args.config, args.ckpt_path, overrides)
    graph, qgraph = quantize_model(model, dm, args.calibration, args.percentile)
    dm.setup("test")
    batches = (
        (b["audio"], b["label"]) for b in itertools.islice(dm.test_dataloader(), args.max_batches)
    )
    rep = run_report(graph, qgraph, batches, dm.num_classes)
    rep.bytes = byte_counts(graph, qgraph, sample_rate_of(dm))
    for line in rep.lines():
        print(line)
    code, msg = report_verdict(rep)
    if code:
        print(msg, file=sys.stderr)
    return code
