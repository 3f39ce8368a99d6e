"""Where the files kwsnet ships live: the configs and the C runtime's sources.

In a source checkout (also an editable install) they are the repository's ``configs/`` and
``cnative/``; installed from a wheel, the same files are package data, ``kwsnet/configs/`` and
``kwsnet/_cnative/`` (pyproject.toml maps those packages to the repository's folders). A config
is found by name: ``kwsnet fit --config kws_ds_cnn`` reads the packaged ``kws_ds_cnn.yaml``
when no file of that name exists, and a path that exists always wins.
"""

from __future__ import annotations

import os
import posixpath
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_SUFFIXES",
    "checkout_root",
    "cnative_source_dir",
    "configs_dir",
    "packaged_config",
    "resolve_config",
    "resolve_config_args",
]

CONFIG_SUFFIXES = (".yaml", ".yml")
_PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def checkout_root() -> Path | None:
    """The source checkout kwsnet is imported from (``pyproject.toml``, ``configs/`` and
    ``cnative/`` beside ``kwsnet/``), or ``None`` for an installed wheel."""
    root = _PACKAGE.parent
    marks = (root / "pyproject.toml", root / "configs", root / "cnative" / "Makefile")
    return root if all(m.exists() for m in marks) else None


def configs_dir() -> Path:
    """The configs: the checkout's ``configs/``, else the installed ``kwsnet/configs/``."""
    root = checkout_root()
    return root / "configs" if root is not None else _PACKAGE / "configs"


def cnative_source_dir() -> Path:
    """The C runtime's sources (its Makefile): the checkout's ``cnative/``, else the installed
    ``kwsnet/_cnative/``."""
    root = checkout_root()
    return root / "cnative" if root is not None else _PACKAGE / "_cnative"


def packaged_config(name: str) -> Path | None:
    """The shipped config ``name`` names, or ``None``.

    ``name`` is a config's name (``kws_ds_cnn``), its file name (``kws_ds_cnn.yaml``), a
    sweep's (``sweeps/smoke``), or the repository-relative path (``configs/kws_raw.yaml``,
    so the README's commands also run outside a checkout). Only ``.yaml``/``.yml`` files
    inside the configs folder are found.
    """
    rel = posixpath.normpath(name.replace("\\", "/"))
    if rel.startswith("configs/"):
        rel = rel[len("configs/") :]
    if not rel or rel.startswith(("/", "..")) or rel == ".":
        return None
    base = configs_dir()
    for candidate in (rel, *(rel + s for s in CONFIG_SUFFIXES)):
        path = base / candidate
        if path.suffix in CONFIG_SUFFIXES and path.is_file():
            return path
    return None


def resolve_config(value: str) -> str:
    """``value`` itself when it is a path that exists or YAML text; else the path of the
    shipped config it names (:func:`packaged_config`), else ``value`` unchanged (the config
    parser then reports it)."""
    if not value or os.path.exists(value) or any(c in value for c in "\n{}:[]"):
        return value
    found = packaged_config(value)
    return str(found) if found is not None else value


def resolve_config_args(args: Any) -> Any:
    """A command line with every ``--config NAME`` / ``--config=NAME`` that names a shipped
    config (and no existing file) replaced by that config's path (:func:`resolve_config`), so
    the config parser reads a real file.

    ``args`` is the CLI's: a list of arguments (returned rewritten), or ``None`` for
    ``sys.argv[1:]``, which is then rewritten in place (and ``None`` returned). Any other value
    (a dict or Namespace of already-parsed config) is returned as it is.
    """
    if args is not None and not isinstance(args, (list, tuple)):
        return args
    argv = list(sys.argv[1:] if args is None else args)
    out = list(argv)
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            out[i + 1] = resolve_config(argv[i + 1])
        elif token.startswith("--config="):
            out[i] = "--config=" + resolve_config(token[len("--config=") :])
    if args is not None:
        return out
    if out != argv:
        sys.argv[1:] = out
    return None
