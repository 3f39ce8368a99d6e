"""YAML with 1.2 scalars, for configs and sweep specs alike.

PyYAML implements YAML 1.1, where ``yes``, ``no``, ``on`` and ``off`` are booleans and
``1e-3`` is a string. Keyword lists (``[yes, no, up, down]``) and learning rates need the
1.2 rules: only ``true``/``false`` are booleans and ``1e-3`` is a float. The CLI registers
``load`` as jsonargparse's ``yaml12`` parser mode; ``kwsnet sweep`` reads specs with it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["Yaml12Loader", "load"]

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
