"""YAML 1.2 for configs and sweep specs alike, read with ruamel.yaml.

PyYAML implements YAML 1.1, where ``yes``, ``no``, ``on`` and ``off`` are booleans, ``1e-3``
is a string, ``010`` is octal 8, ``1:30`` is the sexagesimal 90 and ``2026-12-06`` a date.
Keyword lists (``[yes, no, up, down]``), learning rates and times need the 1.2 rules, which
ruamel.yaml's safe loader implements (``YAML(typ="safe", pure=True)``): only
``true``/``false`` are booleans, ``1e-3`` is a float, ``010`` is 10 and ``0o10`` is 8,
``1:30`` is a string. Of ruamel.yaml's additions to the 1.2 core schema kwsnet leaves out
the timestamp: ``2026-12-06`` stays a string, as in the core schema (and as JSON); it keeps
the others, which PyYAML has too (``0b101``, ``1_000``, ``<<`` merge keys). Unlike PyYAML, a
key set twice in one mapping is an error (the spec's rule; PyYAML kept the last). The values
are plain Python ones (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``).

The CLI registers ``load_config`` (``load``, then :func:`upgrade_class_paths`) as
jsonargparse's ``yaml12`` parser mode, so every config it reads (files, ``--config`` text, the
config stored in a checkpoint, command-line values) goes through it; ``kwsnet sweep`` reads
specs with ``load``. A text that is not YAML raises :class:`YAMLError` (ruamel.yaml's; a
:class:`MarkedYAMLError`, with the line, where the parser can tell).
"""

from __future__ import annotations

import warnings
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.resolver import VersionedResolver

__all__ = [
    "LEGACY_MODELS_PREFIX",
    "MODELS_PREFIX",
    "MarkedYAMLError",
    "YAMLError",
    "load",
    "load_config",
    "upgrade_class_paths",
]

# Implicit tags of ruamel.yaml's resolver that the YAML 1.2 core schema does not have: a bare
# date or time, and PyYAML's `=` "value" tag (which no safe constructor builds).
_NOT_CORE = frozenset({"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"})


class _CoreResolver(VersionedResolver):
    """ruamel.yaml's resolver (YAML 1.2 unless a ``%YAML 1.1`` directive says otherwise),
    without the ``_NOT_CORE`` tags."""

    def add_version_implicit_resolver(
        self, version: Any, tag: Any, regexp: Any, first: Any
    ) -> None:
        if tag not in _NOT_CORE:
            super().add_version_implicit_resolver(version, tag, regexp, first)


def _yaml() -> YAML:
    """A fresh loader (a ``YAML`` instance keeps parser state: one per call)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.Resolver = _CoreResolver
    return yaml


def load(stream: str) -> Any:
    """Parse ``stream`` (YAML text) as YAML 1.2 into plain Python values.

    Raises:
        YAMLError: ``stream`` is not YAML (a ``MarkedYAMLError`` names the line), or holds a
            number without digits (``0x_``, ``-_``: the resolver takes it for an int).
    """
    try:
        return _yaml().load(stream)
    except ValueError as exc:  # int("-") from the constructor: not a number after all
        raise YAMLError(f"not a number: {exc}") from exc


# The backbones were the top-level package `models` until they became `kwsnet.models`.
LEGACY_MODELS_PREFIX = "models."
MODELS_PREFIX = "kwsnet.models."


def upgrade_class_paths(data: Any) -> Any:
    """``data`` with every ``class_path: models.X`` (at any depth) read as
    ``kwsnet.models.X``, with a ``FutureWarning`` naming the old and the new path; other
    values are returned as they are."""
    if isinstance(data, dict):
        out = {k: upgrade_class_paths(v) for k, v in data.items()}
        old = out.get("class_path")
        if isinstance(old, str) and old.startswith(LEGACY_MODELS_PREFIX):
            new = MODELS_PREFIX + old[len(LEGACY_MODELS_PREFIX) :]
            warnings.warn(
                f"class_path {old!r} is read as {new!r}: the backbones moved to kwsnet.models; "
                "rename it in the config (the old name will stop working in a later release)",
                FutureWarning,
                stacklevel=2,
            )
            out["class_path"] = new
        return out
    if isinstance(data, list):
        return [upgrade_class_paths(v) for v in data]
    return data


def load_config(stream: str) -> Any:
    """A config (YAML text): :func:`load`, then :func:`upgrade_class_paths`."""
    return upgrade_class_paths(load(stream))
