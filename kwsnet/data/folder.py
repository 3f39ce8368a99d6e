"""Plain class-per-subfolder audio (``data.source: folder``).

Layout: ``<root>/<class>/*.wav`` (any extension in ``AUDIO_EXTENSIONS``, searched
recursively inside each class folder). Splits come from ``validation_list.txt`` and
``testing_list.txt`` in the root when present (Speech Commands format: relative paths), else
from a seeded split with ``split_seed``, ``val_fraction`` and ``test_fraction`` (independent
of the training seed). ``source_options.speaker_regex`` (a regex with one group, matched
against the file name) gives speaker labels.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from kwsnet.data.audio import AUDIO_EXTENSIONS, read_audio
from kwsnet.data.record import DataFormatError, Item, Source, SourceArgs
from kwsnet.data.speech_commands import _read_list

__all__ = ["FolderSource"]


class FolderSource(Source):
    """Class-per-folder audio as a ``Source``."""

    name = "folder"

    def __init__(self, args: SourceArgs) -> None:
        super().__init__(args)
        opts = dict(args.options)
        pattern = opts.pop("speaker_regex", None)
        if opts:
            raise ValueError(f"unknown folder source_options {sorted(opts)}; valid: speaker_regex")
        if args.root is None or not Path(args.root).is_dir():
            raise DataFormatError(
                f"data.root={args.root!r} is not a directory; expected <root>/<class>/<file>.wav"
            )
        root = Path(args.root)
        classes = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
        )
        if args.words:
            missing = [w for w in args.words if w not in classes]
            if missing:
                raise DataFormatError(f"{root}: no folder for classes {missing}; found {classes}")
            classes = list(args.words)
        files = [
            (str(f.relative_to(root)), ci)
            for ci, c in enumerate(classes)
            for f in sorted((root / c).rglob("*"))
            if f.suffix.lower() in AUDIO_EXTENSIONS
        ]
        if not files:
            raise DataFormatError(
                f"{root} holds no audio files in class folders; expected <root>/<class>/<file>.wav"
            )
        self.keyword_names = classes
        regex = re.compile(pattern) if pattern else None
        speakers: list[str] = []
        if regex is not None:
            for rel, _ in files:
                m = regex.search(Path(rel).name)
                if m is None:
                    raise DataFormatError(f"{root / rel}: speaker_regex {pattern!r} does not match")
                speakers.append(m.group(1) if m.groups() else m.group(0))
            self.speaker_names = sorted(set(speakers))
        spk_index = {s: i for i, s in enumerate(self.speaker_names)}
        split_of = self._split_files(root, [rel for rel, _ in files])
        self._items: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
        for i, (rel, ci) in enumerate(files):
            spk = spk_index[speakers[i]] if speakers else -1
            self._items[split_of[rel]].append(Item(str(root / rel), ci, spk))

    def _split_files(self, root: Path, rels: list[str]) -> dict[str, str]:
        if (root / "validation_list.txt").exists() or (root / "testing_list.txt").exists():
            val = _read_list(root / "validation_list.txt", root)
            test = _read_list(root / "testing_list.txt", root)
            return {r: "val" if r in val else "test" if r in test else "train" for r in rels}
        rng = np.random.default_rng(self.args.split_seed)
        draws = rng.random(len(rels))
        v, t = self.args.val_fraction, self.args.test_fraction
        return {
            r: "val" if d < v else "test" if d < v + t else "train"
            for r, d in zip(rels, draws, strict=True)
        }

    def items(self, split: str) -> list[Item]:
        return list(self._items[split])

    def load(self, item: Item) -> torch.Tensor:
        return read_audio(item.path, self.args.sample_rate)
