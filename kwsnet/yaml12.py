"""YAML with 1.2 scalars, for configs and sweep specs alike.

PyYAML implements YAML 1.1, where ``yes``, ``no``, ``on`` and ``off`` are booleans and
``1e-3`` is a string. Keyword lists (``[yes, no, up, down]``) and learning rates need the
1.2 rules: only ``true``/``false`` are booleans and ``1e-3`` is a float. The CLI registers
``load_config`` (``load``, then :func:`upgrade_class_paths`) as jsonargparse's ``yaml12`` parser
mode, so every config it reads (files, ``--config`` text, the config stored in a checkpoint,
command-line values) goes through it; ``kwsnet sweep`` reads specs with ``load``.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import yaml

__all__ = [
    "LEGACY_MODELS_PREFIX",
    "MODELS_PREFIX",
    "Yaml12Loader",
    "load",
    "load_config",
    "upgrade_class_paths",
]

_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"


class Yaml12Loader(yaml.SafeLoader):
    """``SafeLoader`` with YAML 1.2 booleans and floats."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Yaml12Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load(stream: str) -> Any:
    """Parse ``stream`` (YAML text) with YAML 1.2 scalars."""
    return yaml.load(stream, Loader=Yaml12Loader)


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
