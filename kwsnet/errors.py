"""Errors that mean "bad input", and how the command line reports them.

A ``KwsnetUserError`` (and kwsnet's older input errors: ``DataFormatError``,
``CheckpointLoadError``, ``DivergenceError``, ``ExportError``) is reported by the ``kwsnet``
console script and ``train.py`` as one line, ``kwsnet: error: <message>``, plus at most one
``hint: ...`` line, with exit status ``exit_code`` (1; 2 for a command line or config file
the parser refuses, ``UsageError``, and a config file that is not YAML).
``KWSNET_TRACEBACK=1`` shows the full traceback instead. Any other exception is a bug and
keeps its traceback.

Each class also derives from the builtin its callers already catch (``ConfigError`` is a
``ValueError``, ``CheckpointNotFoundError`` a ``FileNotFoundError``, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from types import TracebackType

__all__ = [
    "KwsnetUserError",
    "ConfigError",
    "ConfigSyntaxError",
    "CheckpointNotFoundError",
    "InputNotFoundError",
    "OutputExistsError",
    "OutputFolderError",
    "UsageError",
    "TRACEBACK_ENV",
    "traceback_wanted",
    "with_hint",
    "one_line",
    "error_lines",
    "colon_hint",
    "frames",
    "yaml_syntax_error",
]

TRACEBACK_ENV = "KWSNET_TRACEBACK"


class KwsnetUserError(Exception):
    """Bad input (a config value, a file, a checkpoint) that the message names.

    Attributes:
        hint: an optional second line telling what to do about it.
        exit_code: the process exit status when the CLI reports it (1).
    """

    hint: str | None = None
    exit_code: int = 1


class ConfigError(KwsnetUserError, ValueError):
    """A config value that parses but is not valid (the message names the key and value)."""


class ConfigSyntaxError(ConfigError):
    """A config file that is not valid YAML (the message names the file and line)."""

    exit_code = 2


class CheckpointNotFoundError(KwsnetUserError, FileNotFoundError):
    """``--ckpt_path`` names no checkpoint (a missing file, or ``best`` without a run)."""


class InputNotFoundError(KwsnetUserError, FileNotFoundError):
    """An input file or folder that does not exist, or holds nothing usable."""


class OutputFolderError(KwsnetUserError, OSError):
    """The run folder cannot be written."""


class OutputExistsError(KwsnetUserError, FileExistsError):
    """An output that is there already and is only replaced when asked (``--overwrite``)."""


class UsageError(KwsnetUserError, ValueError):
    """A command line or config file the parser refuses: an unknown option or key, a value of
    the wrong type or outside a closed choice, a missing config file (exit status 2, as for
    argparse's usage errors)."""

    exit_code = 2


def with_hint(exc: BaseException, hint: str | None) -> BaseException:
    """Attach ``hint`` (the second line the CLI prints) to ``exc``; returns ``exc``."""
    if hint:
        exc.hint = hint  # type: ignore[attr-defined]
    return exc


def traceback_wanted() -> bool:
    """Whether ``KWSNET_TRACEBACK`` asks for full tracebacks (set, and not 0/false/no/off)."""
    value = os.environ.get(TRACEBACK_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")
_QUALIFIED = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception): ")
# `num_words:3`: YAML reads it as one string, not a key and a value (a URL, a Windows path,
# a time, `best-{epoch:03d}` or a `file.txt:12:` location does not match).
_KEY_NO_SPACE = re.compile(
    r"(?<![\w.:/\\{-])([A-Za-z_][\w.]*):([^\s:/\\'\"`,\]}][^\s:'\"`,\]}]*)(?=[\s'\"`,\]}]|$)"
)


def colon_hint(text: str) -> str | None:
    """The hint for a ``text`` holding ``key:value``: YAML needs a space after the colon."""
    m = _KEY_NO_SPACE.search(text)
    if m is None:
        return None
    return f"YAML needs `key: value` with a space after the colon: `{m.group(1)}: {m.group(2)}`"


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line.

    An error re-raised from a DataLoader worker carries the worker's traceback in its
    message: only its last line (the original message) is kept.
    """
    # OSError(errno, message) prints as "[Errno N] message": keep the message.
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if _WORKER.match(lines[0]):
        lines = [_QUALIFIED.sub("", lines[-1])]
    return " ".join(lines)


def error_lines(exc: BaseException, hints: Iterable[str | None] = ()) -> list[str]:
    """The lines the CLI prints for a user error: ``kwsnet: error: ...`` and at most one hint.

    The hint is ``exc.hint``, else the first of ``hints``, else a YAML spacing hint when the
    message holds a ``key:value`` with no space after the colon.
    """
    message = one_line(exc)
    hint = getattr(exc, "hint", None) or next((h for h in hints if h), None) or colon_hint(message)
    out = [f"kwsnet: error: {message}"]
    if hint:
        out.append(f"hint: {hint}")
    return out


def frames(tb: TracebackType | None) -> list:
    """The frames of a traceback, outermost first."""
    out = []
    while tb is not None:
        out.append(tb.tb_frame)
        tb = tb.tb_next
    return out


# The YAML parser's problems (ruamel.yaml words them as PyYAML does) for a `key:value` without
# the space: it reads one plain scalar and finds out on a later line (where the next key's colon
# is).
_COLON_PROBLEMS = ("could not find expected ':'", "mapping values are not allowed here")


def _colon_line(lines: list[str], number: int, opened: int | None) -> int:
    """The line of a ``key:value`` missing its space that the parser reported at ``number``: that
    line when it holds one, else the nearest line above it that does (back to the line the
    scalar started on, ``opened``, or 3 lines), else ``number``."""
    first = max(0, opened if opened is not None and opened <= number else number - 3)
    for i in range(min(number, len(lines) - 1), first - 1, -1):
        if colon_hint(lines[i].split("#", 1)[0]):
            return i
    return number


def yaml_syntax_error(path: str, text: str, exc: Exception) -> ConfigSyntaxError:
    """A one-line ``ConfigSyntaxError`` for the YAML parser's ``exc`` (a
    ``kwsnet.yaml12.MarkedYAMLError``) on ``text`` read from ``path``:
    ``path:line: not valid YAML: <problem> (<context>): `<the line>```, with a hint for a
    missing space after a colon, a tab or an unclosed bracket."""
    mark, context = getattr(exc, "problem_mark", None), getattr(exc, "context", None)
    problem = getattr(exc, "problem", None) or one_line(exc)
    context_mark = getattr(exc, "context_mark", None)
    if context_mark is not None and (mark is None or mark.index >= len(text.rstrip())):
        mark = context_mark  # it ran to the end of the file: the line that opened it
    lines = text.splitlines()
    number = mark.line if mark is not None else None
    if number is not None and problem in _COLON_PROBLEMS:
        number = _colon_line(lines, number, context_mark.line if context_mark else None)
    line = lines[number] if number is not None and number < len(lines) else ""
    where = f"{path}:{number + 1}" if number is not None else path
    what = f"{problem} ({context})" if context else problem
    quoted = f": `{line.strip()}`" if line.strip() else ""
    err = ConfigSyntaxError(f"{where}: not valid YAML: {what}{quoted}".replace("\t", "\\t"))
    if "\t" in line or "'\\t'" in problem:
        err.hint = "YAML indents with spaces, not tabs"
    elif context and "while parsing a flow" in context:
        opened, closing = ("[", "]") if "sequence" in context else ("{", "}")
        err.hint = f"the `{opened}` opened on this line needs its `{closing}`"
    else:
        err.hint = colon_hint(line.split("#", 1)[0])
    return err
