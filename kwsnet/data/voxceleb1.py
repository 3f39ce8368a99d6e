"""VoxCeleb1 speaker identification (``data.source: voxceleb1``).

Layout::

    <root>/iden_split.txt            "<split> <spk>/<session>/<utt>.wav" per line,
                                     split 1 = train, 2 = val, 3 = test
    <root>/wav/<spk>/<session>/<utt>.wav

Speaker labels index the sorted speaker ids of the split file (every speaker appears in all
three identification splits). ``source_options``:

- ``split_file``: the split list, relative to ``root`` (default ``iden_split.txt``).
- ``max_speakers``: keep only the first N speakers in sorted order (e.g. 600 for the subset
  the design's results come from) (default: all).
"""

from __future__ import annotations

from pathlib import Path

import torch

from kwsnet.data.audio import read_audio
from kwsnet.data.record import DataFormatError, Item, Source, SourceArgs
from kwsnet.errors import ConfigError

__all__ = ["VoxCeleb1Source"]

_SPLIT_CODES = {"1": "train", "2": "val", "3": "test"}
_OPTIONS = ("split_file", "max_speakers")


class VoxCeleb1Source(Source):
    """VoxCeleb1 identification split as a ``Source`` (items are audio, speaker-labelled).

    Args:
        args: ``root`` (required), ``sample_rate`` and ``options`` (``split_file``,
            ``max_speakers``) are used.

    Raises ``DataFormatError`` naming the file (and line) for a missing root or split file and
    for malformed lines; a missing wav is reported when it is loaded.
    """

    name = "voxceleb1"

    def __init__(self, args: SourceArgs) -> None:
        super().__init__(args)
        opts = dict(args.options)
        unknown = sorted(set(opts) - set(_OPTIONS))
        if unknown:
            raise ConfigError(
                f"unknown voxceleb1 source_options {unknown}; valid: {list(_OPTIONS)}"
            )
        max_speakers = opts.get("max_speakers")
        if max_speakers is not None and int(max_speakers) < 1:
            raise ConfigError(f"source_options.max_speakers must be >= 1, got {max_speakers}")
        if args.root is None or not Path(args.root).is_dir():
            raise DataFormatError(
                f"data.root={args.root!r} is not a directory; expected a VoxCeleb1 root with "
                "iden_split.txt and wav/<speaker>/<session>/<utterance>.wav"
            )
        self.root = Path(args.root)
        split_path = self.root / str(opts.get("split_file", "iden_split.txt"))
        if not split_path.is_file():
            raise DataFormatError(f"{split_path}: split file not found")
        entries = self._read_split(split_path)
        speakers = sorted({spk for _, spk, _ in entries})
        if max_speakers is not None:
            speakers = speakers[: int(max_speakers)]
        index = {spk: i for i, spk in enumerate(speakers)}
        self.speaker_names = speakers
        self._items = {"train": [], "val": [], "test": []}
        for split, spk, rel in entries:
            if spk in index:
                path = str(self.root / "wav" / rel)
                self._items[split].append(Item(path, speaker=index[spk]))

    @staticmethod
    def _read_split(path: Path) -> list[tuple[str, str, str]]:
        """``(split, speaker, relative wav path)`` per line of ``path``."""
        entries: list[tuple[str, str, str]] = []
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2 or fields[0] not in _SPLIT_CODES:
                raise DataFormatError(
                    f"{path}:{lineno}: expected '<1|2|3> <speaker>/<session>/<utt>.wav', "
                    f"got {line.strip()!r}"
                )
            rel = fields[1]
            parts = rel.split("/")
            if len(parts) != 3 or not all(parts) or ".." in parts:
                raise DataFormatError(
                    f"{path}:{lineno}: wav path must be <speaker>/<session>/<utt>.wav, got {rel!r}"
                )
            entries.append((_SPLIT_CODES[fields[0]], parts[0], rel))
        if not entries:
            raise DataFormatError(f"{path}: split file lists no utterances")
        return entries

    def load(self, item: Item) -> torch.Tensor:
        """Waveform ``[T]`` float32 at ``args.sample_rate``."""
        if not Path(item.path).is_file():
            raise DataFormatError(f"{item.path}: listed in the split file but missing")
        return read_audio(item.path, self.args.sample_rate)
