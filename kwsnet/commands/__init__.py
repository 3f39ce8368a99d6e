"""kwsnet's subcommands, one table: ``fit``/``validate``/``test``/``predict`` are LightningCLI's
(``kwsnet.cli.KwsCLI``); every other one is a module here, ``kwsnet.commands.<module>``, with
``run(argv) -> exit status`` (0, or 1 for a failed gate), parsed by jsonargparse
(``kwsnet.commands.common``). Bad input raises one of kwsnet's error types, which
``kwsnet.cli.main`` prints as ``kwsnet: error: ...``.

The command modules are imported when their command runs, so ``kwsnet --help`` and
``kwsnet fit`` import none of them. The domain packages (``kwsnet.export``, ``quant``,
``detect``, ``sweep``, ``data``) never import this package or ``kwsnet.cli``: their functions
take plain arguments (``tests/test_import_graph.py``).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "COMMANDS",
    "Command",
    "closest_command",
    "find",
    "help_text",
    "lightning_commands",
    "run",
]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, its module under ``kwsnet.commands`` (None: LightningCLI's)
    and the one line ``kwsnet --help`` shows."""

    name: str
    module: str | None
    summary: str


COMMANDS: tuple[Command, ...] = (
    Command("fit", None, "train (--config C); test_after_fit: true tests the best checkpoint"),
    Command("validate", None, "evaluate a checkpoint on the val split (--ckpt_path best|last|P)"),
    Command("test", None, "evaluate a checkpoint on the test split; writes summary.json"),
    Command("predict", None, "classify audio files (--data.predict_files); predictions.csv"),
    Command("sweep", "sweep", "seeds x grid of a sweep spec, one run each; mean ± std tables"),
    Command("sweep-worker", "sweep_worker", "take runs from a sweep's Optuna study (--storage)"),
    Command("export", "export", "write a checkpoint's model for the C runtime, or as ONNX"),
    Command("parity", "parity", "C runtime vs PyTorch on the test split; fails on a mismatch"),
    Command("quant-report", "quant_report", "int8 vs fp32: accuracy, changed predictions, SQNR"),
    Command("prepare", "prepare", "precompute log-mel features (the mel_features format)"),
    Command("detect", "detect", "keyword detections in long audio files, as CSV"),
    Command("make-streams", "make_streams", "labelled long recordings from a test (or val) split"),
    Command("detect-eval", "detect_eval", "FRR at N false alarms per hour on streams, DET plot"),
    Command("mine-negatives", "mine_negatives", "windows of non-keyword audio a detector fires on"),
)

_BY_NAME = {c.name: c for c in COMMANDS}


def lightning_commands() -> list[str]:
    """The names LightningCLI runs (``fit``, ``validate``, ``test``, ``predict``)."""
    return [c.name for c in COMMANDS if c.module is None]


def find(name: str) -> Command | None:
    """The command called ``name``, or None."""
    return _BY_NAME.get(name)


def run(name: str, argv: Sequence[str]) -> int:
    """Run the (non-Lightning) command ``name`` on ``argv``; its exit status.

    Raises:
        KeyError: ``name`` is no such command (or a LightningCLI one).
    """
    command = _BY_NAME[name]
    if command.module is None:
        raise KeyError(f"{name} is a LightningCLI subcommand (kwsnet.cli.KwsCLI)")
    module = importlib.import_module(f"{__name__}.{command.module}")
    return int(module.run(list(argv)))


def closest_command(name: str) -> str | None:
    """The command name closest to ``name`` (a typo), or None."""
    found = difflib.get_close_matches(name, list(_BY_NAME), n=1)
    return found[0] if found else None


def help_text(prog: str = "kwsnet") -> str:
    """What ``kwsnet --help`` prints: every command, one line each."""
    width = max(len(c.name) for c in COMMANDS) + 2
    lines = [
        f"usage: {prog} <command> [options]",
        "",
        "Keyword spotting and speaker classification on PyTorch Lightning, and the C runtime",
        "the keyword model ships to. Every setting is in the YAML config (--config C); any key",
        "can be overridden with a dotted flag (--model.optimizer.init_args.lr 0.001).",
        "",
        "commands:",
        *(f"  {c.name:<{width}}{c.summary}" for c in COMMANDS),
        "",
        f"`{prog} <command> --help` lists a command's options.",
    ]
    return "\n".join(lines)
