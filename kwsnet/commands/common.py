"""What every command of ``kwsnet.commands`` shares: its parser, the checkpoint and config it
loads, the config overrides it passes on, and the old hyphenated flag spellings.

A command's parser is a ``CommandParser`` (jsonargparse, as LightningCLI's: YAML 1.2 values,
no abbreviated options, a refused command line raises a one-line ``UsageError``). Flags are
spelled with underscores, as LightningCLI's (``--ckpt_path``, ``--per_layer``); the spellings
with hyphens that kwsnet 0.1 used still work, with a warning on stderr. Bad input raises one of
kwsnet's error types (``kwsnet.errors``), which the console script prints as one line; a
command returns its exit status (0, or 1 for a failed gate such as ``parity``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jsonargparse import ArgumentParser, DefaultHelpFormatter, Namespace

from kwsnet.parsing import PARSER_MODE, OneLineErrors

if TYPE_CHECKING:
    from kwsnet.data.datamodule import AudioDataModule
    from kwsnet.lit import ClassifierModule

__all__ = [
    "CONFIG_KEYS",
    "CommandParser",
    "add_checkpoint_args",
    "load_model",
    "new_parser",
    "parse",
]

# Top-level keys of the training config a command passes on as overrides (``--data.root x``).
CONFIG_KEYS = ("data", "model", "trainer", "seed_everything")

_OVERRIDES_HELP = (
    "Config keys (--data.root DIR, --model.*, --trainer.*, --seed_everything N) override\n"
    "the config the model is rebuilt from."
)


class _Formatter(DefaultHelpFormatter):
    """jsonargparse's help, with the description's lines (usage examples) kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


class CommandParser(OneLineErrors, ArgumentParser):
    """A kwsnet command's parser: jsonargparse in kwsnet's YAML 1.2 mode, no abbreviations,
    one-line errors (``kwsnet.parsing.OneLineErrors``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_mode", PARSER_MODE)
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs.setdefault("exit_on_error", True)
        super().__init__(*args, **kwargs)


def new_parser(name: str, description: str, overrides: bool = False) -> CommandParser:
    """The parser of ``kwsnet <name>``; ``description`` is its help text (a module docstring:
    its layout is kept); ``overrides`` says the command takes config overrides."""
    text = description.strip()
    if overrides:
        text = f"{text}\n\n{_OVERRIDES_HELP}"
    return CommandParser(prog=f"kwsnet {name}", description=text)


def add_checkpoint_args(parser: ArgumentParser, required: bool = False) -> None:
    """``--ckpt_path`` and ``--config``: the model a command loads (:func:`load_model`)."""
    parser.add_argument(
        "--ckpt_path", type=str, required=required, help="checkpoint to load (.ckpt)"
    )
    parser.add_argument(
        "--config",
        type=str,
        default=None,
        help="training config (YAML file, or a shipped config's name); default: the config "
        "stored in the checkpoint",
    )


def _deprecated(argv: Sequence[str], aliases: Mapping[str, str], prog: str) -> list[str]:
    """``argv`` with every old spelling in ``aliases`` (``--per-layer``) replaced by its new one
    (``--per_layer``), warning once per spelling on stderr."""
    out, warned = [], set()
    for token in argv:
        name, eq, value = token.partition("=")
        new = aliases.get(name)
        if new is None:
            out.append(token)
            continue
        if name not in warned:
            warned.add(name)
            print(f"kwsnet: warning: {prog}: {name} is deprecated; use {new}", file=sys.stderr)
        out.append(f"{new}{eq}{value}")
    return out


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(the command's own arguments, config overrides)``: an override is a flag whose key's
    first part is one of ``CONFIG_KEYS`` (``--data.root x``, ``--model.head=...``), with its
    value (the next argument, unless it starts with ``--`` or the flag holds ``=``)."""
    own: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        key = token[2:].split("=", 1)[0] if token.startswith("--") else ""
        if key.split(".", 1)[0] not in CONFIG_KEYS:
            own.append(token)
            continue
        overrides.append(token)
        if "=" not in token and i < len(argv) and not argv[i].startswith("--"):
            overrides.append(argv[i])  # its value (which may be negative: "-1")
            i += 1
    return own, overrides


def parse(
    parser: ArgumentParser,
    argv: Sequence[str],
    aliases: Mapping[str, str] | None = None,
    overrides: bool = False,
) -> tuple[Namespace, list[str]]:
    """``(parsed arguments, config overrides)`` of ``argv``: old spellings (``aliases``)
    rewritten, the overrides split off when the command takes them (``overrides``; else they
    are unknown options), the rest parsed by ``parser``.

    Raises:
        UsageError: an unknown option (with the closest one), a bad value, a missing one.
    """
    argv = _deprecated(argv, aliases or {}, parser.prog)
    own, extra = _split_overrides(argv) if overrides else (list(argv), [])
    return parser.parse_args(own), extra


def load_model(
    config: str | None, ckpt_path: str | None, overrides: Sequence[str] = ()
) -> tuple[ClassifierModule, AudioDataModule]:
    """The model (checkpoint weights, eval mode) and DataModule that ``--config`` /
    ``--ckpt_path`` and the overrides name: ``kwsnet.loading.build_from_config`` (the
    checkpoint read with ``weights_only=True``, its stored config unless ``--config``).

    Raises:
        CheckpointNotFoundError, ConfigError, UsageError: a missing or unreadable checkpoint,
            weights that do not fit the config, a config the parser refuses.
    """
    from kwsnet.loading import build_from_config  # the config parser (imports Lightning)

    return build_from_config(config, ckpt_path, overrides)
