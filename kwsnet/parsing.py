"""What kwsnet's jsonargparse parsers share: the ``yaml12`` parser mode (YAML 1.2 scalars,
``kwsnet.yaml12``: bare yes/no stay words) and parse errors as one line, instead of
jsonargparse's usage and its nested type report:
``<where>: <key>: <what> (did you mean <closest valid key>?)``.

``<where>`` is the config file that set the key (the last source wins, as when parsing), or the
command-line flag; ``<what>`` is an unknown key or option, a value of the wrong type, a value
outside a closed choice (listing the choices), a missing config file. The suggestion is the
closest (``difflib.get_close_matches``) of the valid keys at that level: a class's ``__init__``
parameters under its ``init_args``, the parser's options in a group, the top-level groups.

``OneLineErrors`` is the parser mixin both kinds of kwsnet parser use (the config parser of
``kwsnet fit ...``, ``kwsnet.config_cli.KwsArgumentParser``, and every other command's,
``kwsnet.commands.common.CommandParser``), with ``allow_abbrev=False`` (``--trainer.max_epoch``
is an error, not ``max_epochs``): a refused command line raises
:class:`kwsnet.errors.UsageError`, which the console script prints as ``kwsnet: error: ...``
(exit status 2) and a Python caller gets as an exception.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from jsonargparse import set_loader

from kwsnet import yaml12
from kwsnet.errors import UsageError, colon_hint, with_hint

__all__ = ["PARSER_MODE", "OneLineErrors", "describe", "parser_keys"]

# jsonargparse's parser_mode for every kwsnet parser: configs, --config text, the config stored
# in a checkpoint and command-line values are read as YAML 1.2 (kwsnet.yaml12).
PARSER_MODE = "yaml12"
set_loader(PARSER_MODE, yaml12.load_config, exceptions=(yaml12.YAMLError,))

_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS_PATH = re.compile(r"class_path[ =]'([\w.]+)'")
_TYPE_NAMES = {
    "int": "an int",
    "float": "a float",
    "str": "a string",
    "bool": "true or false",
    "NoneType": "null",
    "dict": "a mapping",
    "list": "a list",
}


class OneLineErrors:
    """Parser mixin: a refused command line raises ``UsageError`` (one line) instead of
    printing the usage and exiting; options are never abbreviated. Parsers jsonargparse makes
    to try a value (``exit_on_error=False``) keep raising jsonargparse's own error."""

    exit_on_error: bool
    prog: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> Any:
        """Raise a one-line ``UsageError`` for ``message`` (see :func:`describe`)."""
        if not self.exit_on_error:
            return super().error(message, ex)  # type: ignore[misc]
        parser = getattr(ex, "subcommand_parser", None) or self
        argv = list(getattr(self, "args", None) or [])
        try:
            err = describe(message, argv, parser)
        except Exception:  # never lose the parser's error over its rewording
            err = UsageError(_squeeze(message))
        if getattr(err, "hint", None) is None:
            with_hint(err, colon_hint(message))
        raise err from ex


def describe(message: str, argv: Sequence[str], parser: Any = None) -> UsageError:
    """A one-line ``UsageError`` for jsonargparse's error ``message`` about ``argv`` (the
    command line parsed; config files named there are read to tell which one set the key);
    ``parser`` (the one that parsed it) gives the valid keys for a suggestion."""
    text = message.strip()
    got = _described(text, list(argv), parser)
    return UsageError(got if got is not None else _squeeze(text))


def _described(text: str, argv: list[str], parser: Any) -> str | None:
    """The one-line message for a jsonargparse error ``text`` it knows, else None."""
    m = re.match(r"unrecognized arguments: (.+)", text, re.S)
    if m:
        return _unknown_flag(m.group(1).split(), parser)
    m = re.match(r"Subcommand '[^']+' does not accept option '([^']+)'", text) or re.match(
        r"Option '([^']+)' is not accepted(?: before subcommand .*)?$", text
    )
    if m:
        return _unknown_key(m.group(1), argv, parser)
    m = re.match(r"Group '([^']+)' does not accept option '([^']+)'", text)
    if m:
        return _unknown_key(f"{m.group(1)}.{m.group(2)}", argv, parser)
    m = re.match(r"argument (\S+): (.+)", text, re.S)
    if m:
        return f"{m.group(1)}: {_squeeze(m.group(2))}"
    m = re.match(r"the following arguments are required: (.+)", text, re.S)
    if m:
        names = [n.strip() for n in _squeeze(m.group(1)).split(",")]
        flags = [n if n.startswith("-") or n in _positionals(parser) else f"--{n}" for n in names]
        return f"missing {', '.join(flags)} (required)"
    keys = _PARSER_KEY.findall(text)
    if not keys:
        return None
    key = _joined_key(text, keys)
    if key == "config" or key.endswith(".config"):
        missing = re.search(r"File does not exist: '([^']*)'", text)
        if missing:
            return f"--config {missing.group(1)}: no such file{_config_suggestion(missing[1])}"
    unknown = re.search(r"Option '([^']+)' is not accepted", text)
    if unknown:
        return _unknown_key(f"{key}{_init(text)}{unknown.group(1)}", argv, parser, text)
    where = _where(key, argv)
    what = _value_problem(text)
    if what is None:
        last = [ln.strip(" -") for ln in text.splitlines() if ln.strip(" -")][-1]
        what = _squeeze(_PARSER_KEY.sub("", last)).strip(": ") or _squeeze(text)
    if where is not None and where.startswith("--"):
        if where[2:].replace(".init_args.", ".") == key.replace(".init_args.", "."):
            return f"{where}: {what}"
    return f"{where}: {key}: {what}" if where else f"{key}: {what}"


def _joined_key(text: str, keys: list[str]) -> str:
    """``model.optimizer`` and ``lr`` → ``model.optimizer.init_args.lr`` when the inner key is
    an argument of the outer one's class."""
    out = keys[0]
    rest = text
    for inner in keys[1:]:
        before, _, rest = rest.partition(f'Parser key "{inner}"')
        sep = ".init_args." if "class_path" in before or "callable class" in before else "."
        out = f"{out}{sep}{inner}"
    return out


def _init(text: str) -> str:
    """The separator before an option of the key ``text`` names: ``.init_args.`` for a class."""
    return ".init_args." if _CLASS_PATH.search(text) or "callable class" in text else "."


def _value_problem(text: str) -> str | None:
    """``expected an int, got 'many'`` / ``'endd' is not one of 'a', 'b' (did you mean
    'end'?)`` from jsonargparse's report, or None."""
    given = re.search(r"Given value: (.*?)(?:\. Got value: .*)?$", text, re.M)
    got = re.search(r"Got value: (.*)$", text, re.M)
    value = (given or got).group(1).strip() if (given or got) else None
    literal = re.search(r"Expected a typing\.Literal\[(.*?)\]", text)
    if literal:
        choices = [c.strip() for c in literal.group(1).split(",")]
        names = [c.strip("'\"") for c in choices]
        close = difflib.get_close_matches(value or "", names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{value!r} is not one of {', '.join(choices)}{hint}"
    subtypes = re.search(r"Subtypes: \[(.*?)\]\n", text, re.S)
    types = _type_list(subtypes.group(1)) if subtypes else None
    if types is None:
        single = re.search(r"Expected a <class '([\w.]+)'>", text)
        types = [_TYPE_NAMES.get(single.group(1), single.group(1))] if single else None
    if types and value is not None:
        return f"expected {' or '.join(types)}, got {value!r}"
    restricted = re.search(r"Not of type \w+: (.*) does not conform to restriction (\S+)", text)
    if restricted:
        rule = re.fullmatch(r"v([<>]=?)(.+)", restricted.group(2))
        want = f"be {rule.group(1)} {rule.group(2)}" if rule else f"satisfy {restricted.group(2)}"
        return f"must {want}, got {restricted.group(1)}"
    no_class = re.search(r"module '([\w.]+)' has no attribute '(\w+)'", text)
    if no_class:
        return f"cannot import {no_class.group(1)}.{no_class.group(2)}: no class of that name"
    return None


def _type_list(text: str) -> list[str] | None:
    """The readable names of jsonargparse's ``Subtypes: [...]`` (tensors left out)."""
    names = []
    for t in re.findall(r"<class '([\w.]+)'>|([\w.]+\[[^\]]*\])", text):
        name = t[0] or t[1]
        if name.startswith("torch."):
            continue  # a tensor is not written in a config
        names.append(_TYPE_NAMES.get(name, name))
    return names or None


def _unknown_flag(tokens: list[str], parser: Any) -> str:
    """``--flag: unknown option (did you mean --closest?)`` for argparse's leftovers."""
    flag = next((t for t in tokens if t.startswith("-")), None)
    if flag is None:
        return f"unexpected argument {tokens[0]!r}"
    name = flag.split("=", 1)[0]
    own = [o[2:] for o in _option_strings(parser) if o.startswith("--")]
    key = name.lstrip("-")
    close = _closest(key, own) if "." not in key else None
    close = f"--{close}" if close else None
    if close is None and "." in key:
        close = _closest_key(key, parser_keys(parser))
        close = f"--{close}" if close else None
    return f"{name}: unknown option" + (f" (did you mean {close}?)" if close else "")


def _unknown_key(key: str, argv: list[str], parser: Any, text: str = "") -> str:
    """``<file>: <key>: unknown key (did you mean <leaf>?)``, or for a flag ``--<key>: unknown
    option (did you mean --<key>?)``."""
    where = _where(key, argv)
    flag = where if where is None or where.startswith("--") else None
    valid = _class_keys(key, text) if text else None
    if valid is not None:  # a class's init_args: the closest of its parameters
        leaf = _closest(key.rpartition(".")[2], valid)
        close = f"{key.rpartition('.')[0]}.{leaf}" if leaf else None
    else:
        close = _closest_key(key, parser_keys(_subparser(parser, argv)))
    if flag is not None or where is None:
        head = f"{flag or '--' + key}: unknown option"
        if close is not None and flag is not None and ".init_args." not in flag:
            close = close.replace(".init_args.", ".")
        close = f"--{close}" if close else None
    else:
        head = f"{where}: {key}: unknown key"
        if close is not None and close.rpartition(".")[0] == key.rpartition(".")[0]:
            close = close.rpartition(".")[2]  # a sibling: the name to write in the file
    return head + (f" (did you mean {close}?)" if close else "")


def _subparser(parser: Any, argv: list[str]) -> Any:
    """The subcommand's parser when ``parser`` has subcommands and ``argv`` names one."""
    action = getattr(parser, "_subcommands_action", None)
    if action is None:
        return parser
    for token in argv:
        if token in action.choices:
            return action.choices[token]
    return parser


def _class_keys(key: str, text: str) -> list[str] | None:
    """The ``__init__`` parameters of the class the error names, or None."""
    m = _CLASS_PATH.search(text)
    if m is None:
        return None
    module, _, name = m.group(1).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        params = inspect.signature(cls).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in params if p.kind not in skip]


def _closest(name: str, valid: Iterable[str]) -> str | None:
    """The closest of ``valid`` to ``name`` (difflib, cutoff 0.6), or None."""
    found = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return found[0] if found else None


def _closest_key(key: str, valid: Sequence[str]) -> str | None:
    """``key`` with its first unknown part replaced by the closest valid name at that level
    (``trainr.max_epochs`` → ``trainer.max_epochs``), or None if none is close."""
    parts = key.split(".")
    split = [v.split(".") for v in valid]
    for depth, name in enumerate(parts):
        names = {v[depth] for v in split if len(v) > depth and v[:depth] == parts[:depth]}
        if not names:
            return None
        if name in names:
            continue
        close = _closest(name, names)
        return ".".join([*parts[:depth], close, *parts[depth + 1 :]]) if close else None
    return None


def parser_keys(parser: Any) -> list[str]:
    """The dotted keys a jsonargparse parser accepts (its actions' destinations)."""
    if parser is None:
        return []
    out = []
    for action in getattr(parser, "_actions", []):
        dest = getattr(action, "dest", None)
        if dest and dest not in ("help", argparse.SUPPRESS) and not dest.startswith("_"):
            out.append(dest)
    return out


def _positionals(parser: Any) -> list[str]:
    """The names of a parser's positional arguments."""
    return [a.dest for a in getattr(parser, "_actions", []) if not a.option_strings]


def _option_strings(parser: Any) -> list[str]:
    """Every option string of a parser (``-h``, ``--help``, ``--out``, ...)."""
    return [o for a in getattr(parser, "_actions", []) for o in a.option_strings]


def _squeeze(text: str) -> str:
    """``text`` on one line."""
    return " ".join(ln.strip() for ln in text.splitlines() if ln.strip())


def _config_suggestion(value: str) -> str:
    """`` (did you mean the shipped config X?)`` for a missing ``--config``, or ``""``."""
    from kwsnet.resources import configs_dir

    try:
        names = [p.stem for p in configs_dir().glob("*.yaml")]
    except OSError:
        return ""
    close = _closest(os.path.splitext(os.path.basename(value))[0], names)
    return f" (did you mean the shipped config {close}?)" if close else ""


# --- where a key was set: the config files and flags of the command line -------------------


def _sources(argv: list[str]) -> Iterator[tuple[str, str, Any]]:
    """``(kind, label, value)`` for every config file (``file``) and flag (``flag``) of
    ``argv`` in order: a file's parsed YAML, a flag's dotted key."""
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("--") and token != "-c":
            continue
        name, eq, value = token.partition("=")
        if name in ("--config", "-c"):
            if not eq:
                if i >= len(argv):
                    break
                value, i = argv[i], i + 1
            yield "file", value, _read_yaml(value)
        else:
            yield "flag", name, name[2:]


def _read_yaml(value: str) -> Any:
    """A ``--config`` value's YAML (a file's, or the text itself), or None."""
    try:
        if os.path.isfile(value):
            with open(value, encoding="utf-8") as f:
                return yaml12.load(f.read())
        return yaml12.load(value)
    except Exception:  # unreadable or not YAML: it sets no key we can see
        return None


def _has_key(node: Any, parts: list[str]) -> bool:
    """Whether the parsed config ``node`` sets the dotted key ``parts`` (an ``init_args``
    level may be left out of the key, as on the command line; lists are searched)."""
    if not parts:
        return True
    if isinstance(node, list):
        return any(_has_key(item, parts) for item in node)
    if not isinstance(node, dict):
        return False
    if parts[0] in node:
        return _has_key(node[parts[0]], parts[1:])
    return "init_args" in node and _has_key(node["init_args"], parts)


def _where(key: str, argv: list[str]) -> str | None:
    """The last source on ``argv`` that sets ``key``: a config file's path (or ``--config``
    for YAML text), or the flag; None if none does."""
    plain = key.replace(".init_args.", ".")
    parts = key.split(".")
    found = None
    for kind, label, value in _sources(argv):
        if kind == "file":
            if _has_key(value, parts):
                found = label if os.path.isfile(label) else "--config"
        else:
            flag = value.replace(".init_args.", ".")
            if plain == flag or plain.startswith(flag + "."):
                found = label
    return found
