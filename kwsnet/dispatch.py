"""How a ``kwsnet`` command line runs, without importing Lightning: ``kwsnet --help``, an
unknown command's error and every command of ``kwsnet.commands`` run from here; only
``fit``/``validate``/``test``/``predict`` need the ``lightning`` runner the caller passes
(``kwsnet.cli.run_lightning``, LightningCLI).

The ``kwsnet`` console script (``kwsnet.entry``) imports ``kwsnet.cli``, and with it Lightning
and torch, only for those four; ``kwsnet.cli.main`` / ``kwsnet.cli.console`` are the same
functions with the runner bound. Bad input (``USER_ERROR_TYPES``) is printed as one line,
``kwsnet: error: ...``; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from kwsnet import commands
from kwsnet.errors import UsageError, error_lines, frames, traceback_wanted

__all__ = [
    "USER_ERROR_TYPES",
    "LightningRunner",
    "console",
    "data_hint",
    "run",
    "user_error_types",
]

# Runs a LightningCLI command line: the arguments, or None to read them from sys.argv.
LightningRunner = Callable[[list[str] | None], None]

# kwsnet's input errors (module, class): kwsnet.errors.KwsnetUserError and the older ones that
# predate it. Named, not imported, so that a command that never imports torch does not here.
USER_ERROR_TYPES: tuple[tuple[str, str], ...] = (
    ("kwsnet.errors", "KwsnetUserError"),
    ("kwsnet.data.record", "DataFormatError"),
    ("kwsnet.checkpointing", "CheckpointLoadError"),
    ("kwsnet.callbacks.divergence", "DivergenceError"),
    ("kwsnet.export.layers", "ExportError"),
)


def user_error_types(load: bool = False) -> tuple[type[BaseException], ...]:
    """The classes of ``USER_ERROR_TYPES`` whose modules are imported (an exception of
    another cannot have been raised); with ``load``, all of them, importing their modules."""
    found: list[type[BaseException]] = []
    for module_name, name in USER_ERROR_TYPES:
        module = importlib.import_module(module_name) if load else sys.modules.get(module_name)
        if module is not None:
            found.append(getattr(module, name))
    return tuple(found)


def data_hint(exc: BaseException) -> str | None:
    """``data.on_error: skip`` for a file that could not be read while training or testing."""
    record = sys.modules.get("kwsnet.data.record")
    if record is None or not isinstance(exc, record.DataFormatError):
        return None
    dataset = sys.modules.get("kwsnet.data.dataset")
    records = getattr(dataset, "RecordDataset", None)
    worker = str(exc).startswith("Caught DataFormatError in DataLoader worker")
    in_dataset = records is not None and any(
        isinstance(f.f_locals.get("self"), records) for f in frames(exc.__traceback__)
    )
    if worker or in_dataset:
        return (
            "set data.on_error: skip (--data.on_error skip) to leave out unreadable files; "
            "a warning counts them"
        )
    return None


def run(argv: Sequence[str], lightning: LightningRunner, from_argv: bool = False) -> int:
    """Run the command ``argv`` names and return its exit status; every error is raised.

    ``--help``, ``-h`` or nothing prints the list of commands; a LightningCLI command (or a
    first argument that is an option) goes to ``lightning``, with ``None`` when ``from_argv``
    says ``argv`` is ``sys.argv[1:]`` (LightningCLI then reads it there).

    Raises:
        UsageError: an unknown command (naming the closest one).
    """
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(commands.help_text())
        return 0
    name = argv[0]
    if name in commands.lightning_commands() or name.startswith("-"):
        lightning(None if from_argv else argv)
        return 0
    if commands.find(name) is None:
        close = commands.closest_command(name)
        hint = f" (did you mean {close}?)" if close else ""
        raise UsageError(f"unknown command {name!r}{hint}; `kwsnet --help` lists them")
    return commands.run(name, argv[1:])


def console(argv: Sequence[str], lightning: LightningRunner) -> int:
    """What the ``kwsnet`` console script does with ``argv``: :func:`run` it and return the
    exit status. kwsnet's own input errors print one line, ``kwsnet: error: ...`` (and at
    most one ``hint: ...``), on stderr, and return their ``exit_code`` (1; 2 for a command
    line or config file the parser refuses); ``KWSNET_TRACEBACK=1`` raises them instead.
    Any other exception is a bug and is raised with its traceback.
    """
    argv = list(argv)
    try:
        return run(argv, lightning, from_argv=argv == sys.argv[1:])
    except user_error_types() as exc:  # evaluated when an exception is raised
        if traceback_wanted():
            raise
        sys.stdout.flush()
        for line in error_lines(exc, [data_hint(exc)]):
            print(line, file=sys.stderr)
        return int(getattr(exc, "exit_code", 1))
