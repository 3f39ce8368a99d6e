"""Which ``Source`` class ``data.source`` names, and the unlabelled files of ``predict``.

``data.source`` is picked as every other class of a config is: a ``class_path`` naming any
``kwsnet.data.record.Source`` subclass (a shipped format, or one in a module of your own),
with ``init_args``, the format's options::

    data:
      source:
        class_path: kwsnet.data.speech_commands.SpeechCommandsSource
        init_args: {unknown_mode: all}

The shipped formats have short names (``SOURCES``) that stand for their class path wherever
one is written: ``source: speech_commands``, ``--data.source speech_commands``,
``class_path: speech_commands``. A plain string that is not a short name is a class path
without init_args (``--data.source mypkg.sources.MySource``).

A source class takes one argument, the ``SourceArgs`` the DataModule builds from its other
keys; its options (``init_args``, with ``data.source_options`` merged over them) arrive as
``args.options``, and it refuses the ones it does not know.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kwsnet.data.audio import AUDIO_EXTENSIONS
from kwsnet.data.record import DataFormatError, Item, Source, SourceArgs
from kwsnet.errors import ConfigError

__all__ = [
    "SOURCES",
    "PredictSource",
    "SourceSpec",
    "build_source",
    "parse_source",
    "short_name",
    "source_class",
]

# The shipped formats: short name → class path. Imported on use, so one broken format never
# blocks the others.
SOURCES: dict[str, str] = {
    "synthetic": "kwsnet.data.synthetic.SyntheticSource",
    "speech_commands": "kwsnet.data.speech_commands.SpeechCommandsSource",
    "folder": "kwsnet.data.folder.FolderSource",
    "voxceleb1": "kwsnet.data.voxceleb1.VoxCeleb1Source",
    "mel_features": "kwsnet.data.mel_features.MelFeatureSource",
}
_SHORT_NAMES = {path: name for name, path in SOURCES.items()}
_KEYS = ("class_path", "init_args")
_BASE = f"{Source.__module__}.{Source.__qualname__}"


@dataclass(frozen=True)
class SourceSpec:
    """A ``data.source`` value, checked for its shape (nothing imported yet).

    Attributes:
        class_path: the class path, short names replaced by the class they stand for.
        init_args: the format's options.
        key: where the value came from (``data.source``, ``--source``), for messages.
    """

    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)
    key: str = "data.source"

    @property
    def label(self) -> str:
        """The short name of a shipped format, else the class path."""
        return _SHORT_NAMES.get(self.class_path, self.class_path)


def _expected() -> str:
    return f"expected the class_path of a {_BASE} subclass, or a short name: {', '.join(SOURCES)}"


def _closest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _class_path(name: str, key: str) -> str:
    """``name`` as a class path: a short name's class, a dotted path as it is."""
    if name in SOURCES:
        return SOURCES[name]
    if "." in name.strip(".") and " " not in name:
        return name
    raise ConfigError(
        f"{key} {name!r}: no such source{_closest(name, list(SOURCES))}; {_expected()}"
    )


def parse_source(value: Any, key: str = "data.source") -> SourceSpec:
    """The ``SourceSpec`` of a ``data.source`` value: a short name or class path (a string),
    a ``{class_path, init_args}`` mapping, or a ``SourceSpec``.

    Raises:
        ConfigError: a value of another type or shape, an unknown short name (one line naming
            the value, what is expected and the short names).
    """
    if isinstance(value, SourceSpec):
        return value
    if isinstance(value, str):
        return SourceSpec(_class_path(value, key), {}, key)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} {value!r}: not a source; {_expected()}")
    unknown = [str(k) for k in value if k not in _KEYS]
    if unknown:
        first = unknown[0]
        close = _closest(first, _KEYS)
        hint = "" if close else "; the format's options go under init_args"
        if not close and key == "data.source":
            hint += f" (one from the command line: --data.source_options '{{{first}: ...}}')"
        raise ConfigError(
            f"{key}: unknown key {first!r}{close}; a source is a short name or class path, or "
            f"a mapping of class_path and init_args{hint}"
        )
    class_path, init_args = value.get("class_path"), value.get("init_args")
    if not isinstance(class_path, str) or not class_path:
        raise ConfigError(
            f"{key}: class_path missing or not a string ({class_path!r}); {_expected()}"
        )
    if init_args is None:
        init_args = {}
    if not isinstance(init_args, Mapping):
        raise ConfigError(f"{key}.init_args: expected a mapping of options, got {init_args!r}")
    return SourceSpec(_class_path(class_path, f"{key}.class_path"), dict(init_args), key)


def source_class(spec: SourceSpec) -> type[Source]:
    """The ``Source`` subclass ``spec`` names, imported.

    Raises:
        ConfigError: its module cannot be imported, holds no such class, or the class is no
            (concrete) ``Source`` subclass.
    """
    module_name, _, name = spec.class_path.rpartition(".")
    where = f"{spec.key} {spec.label!r}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module_name} ({exc}); {_expected()}") from exc
    cls = getattr(module, name, None)
    if cls is None:
        raise ConfigError(f"{where}: module {module_name} has no {name!r}; {_expected()}")
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise ConfigError(f"{where} is not a {_BASE} subclass; {_expected()}")
    if inspect.isabstract(cls):
        undefined = ", ".join(sorted(cls.__abstractmethods__))
        raise ConfigError(f"{where} is abstract ({undefined} not defined); {_expected()}")
    return cls


def build_source(source: Any, args: SourceArgs) -> Source:
    """The source ``source`` names (a ``data.source`` value: short name, class path,
    ``{class_path, init_args}`` or a ``SourceSpec``), built with ``args``; its ``init_args``
    are the options under ``args.options`` (which win).

    Raises:
        ConfigError: ``source`` names no ``Source`` subclass (see ``parse_source`` and
            ``source_class``), or the source refuses an option.
    """
    spec = parse_source(source)
    options = {**spec.init_args, **args.options}
    return source_class(spec)(dataclasses.replace(args, options=options))


def short_name(source: Any) -> str | None:
    """The short name of the shipped format a ``data.source`` value names (also as its class
    path), or ``None`` (a class of another module, or no valid value)."""
    try:
        return _SHORT_NAMES.get(parse_source(source).class_path)
    except ConfigError:
        return None


class PredictSource(Source):
    """Unlabelled audio files for ``predict``.

    Args:
        args: the source arguments (``sample_rate`` is used).
        files: audio files, and folders searched recursively for them.
    """

    name = "predict"

    def __init__(self, args: SourceArgs, files: Sequence[str]) -> None:
        super().__init__(args)
        paths: list[str] = []
        for f in files:
            p = Path(f)
            if p.is_dir():
                paths += [
                    str(x) for x in sorted(p.rglob("*")) if x.suffix.lower() in AUDIO_EXTENSIONS
                ]
            elif p.is_file():
                paths.append(str(p))
            else:
                raise DataFormatError(f"data.predict_files: {f} does not exist")
        if not paths:
            raise DataFormatError(f"data.predict_files {list(files)} holds no audio files")
        self._items = {"predict": [Item(p) for p in paths]}

    def load(self, item: Item) -> torch.Tensor:
        """The file's waveform at the model's sample rate."""
        from kwsnet.data.audio import read_audio

        return read_audio(item.path, self.args.sample_rate)
