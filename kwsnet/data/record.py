"""The sample record every dataset format produces, and the ``Source`` interface.

A *source* (one module per format in ``kwsnet/data/``) lists ``Item``s per split and loads one
item's signal. The DataModule turns items into sample records::

    {"audio": Tensor [T] (waveform) or [T, F] (precomputed features),
     "length": int, "keyword": int, "speaker": int, "label": int, "path": str}

``keyword``/``speaker`` are -1 where unknown; ``label`` is whichever the task learns
(``target: keyword | speaker``). ``collate`` pads along time and returns ``lengths``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

__all__ = ["Item", "Source", "SourceArgs", "SPLITS", "DataFormatError"]

SPLITS = ("train", "val", "test")


class DataFormatError(ValueError):
    """A dataset file or layout is not what its format expects; the message names it."""


@dataclass(frozen=True)
class Item:
    """One utterance of a source.

    Attributes:
        path: the file it comes from (``synthetic://...`` for generated items).
        keyword: keyword class index, -1 if unknown.
        speaker: speaker class index, -1 if unknown.
        kind: ``"audio"`` (load gives a waveform ``[T]``) or ``"features"`` (``[T, F]``).
        extra: format-specific data the source needs to load it (e.g. a generator key).
    """

    path: str
    keyword: int = -1
    speaker: int = -1
    kind: str = "audio"
    extra: tuple[Any, ...] = field(default=())


@dataclass
class SourceArgs:
    """Everything a source may need from the DataModule's config (sources ignore the rest)."""

    root: str | None = None
    sample_rate: int = 16000
    words: list[str] | None = None
    include_unknown: bool = False
    include_silence: bool = False
    split_seed: int = 1234
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    download: bool = False
    options: dict[str, Any] = field(default_factory=dict)


class Source(ABC):
    """A dataset format: which items each split holds and how to load one.

    Any subclass can be ``data.source`` (its ``class_path``; ``kwsnet.data.sources``). It is
    built with one argument, the ``SourceArgs``, whose ``options`` are its ``init_args``
    (unknown ones should raise ``kwsnet.errors.ConfigError``); it fills ``keyword_names`` and
    ``speaker_names`` (index → name; empty where the format has no such label) and ``_items``
    (split → items in a deterministic order), which ``items`` serves, and defines ``load``.
    ``name`` labels it in messages: the shipped formats set their short name (``synthetic``),
    other classes default to their class path.
    """

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def prepare(cls, args: SourceArgs) -> None:
        """Fetch what the format needs before it is read (``data.download``); the
        DataModule's ``prepare_data`` calls it. Default: nothing to fetch."""
        return None

    def __init__(self, args: SourceArgs) -> None:
        self.args = args
        self.keyword_names: list[str] = []
        self.speaker_names: list[str] = []
        self._items: dict[str, list[Item]] = {}

    def noise_dir(self) -> str | None:
        """The format's own folder of background-noise recordings (Speech Commands'
        ``_background_noise_``), which a ``BackgroundNoise`` without a ``noise_dir`` mixes;
        None (the default) when the format has none."""
        return None

    def items(self, split: str) -> list[Item]:
        """The items of ``split`` (one of ``SPLITS``), in a deterministic order."""
        if split not in self._items:
            raise ValueError(f"split must be one of {tuple(self._items)}, got {split!r}")
        return list(self._items[split])

    @abstractmethod
    def load(self, item: Item) -> torch.Tensor:
        """Load one item: float32 waveform ``[T]`` at ``args.sample_rate``, or features ``[T, F]``.

        Raises ``DataFormatError`` (naming the file and why) when it cannot be read.
        """
