"""Plain class-per-subfolder audio (``data.source: folder``).

Layout: ``<root>/<class>/*.wav`` (any extension in ``AUDIO_EXTENSIONS``, searched
recursively inside each class folder). Splits come from ``validation_list.txt`` and
``testing_list.txt`` in the root when present (Speech Commands format: relative paths), else
from a hash split in the manner of Speech Commands' ``which_set`` (TensorFlow's
``speech_commands/input_data.py``): each file's speaker (when ``source_options.speaker_regex``
gives one) or else its file name, with any ``_nohash_...`` tail removed, is hashed (SHA-1 of
``"<split_seed>:<name>"``) to a number ``u`` in [0, 1); val if ``u < val_fraction``, test if
``u < val_fraction + test_fraction``, else train. A file's split therefore depends only on its
name, ``split_seed`` and the fractions (never on the training seed or on which other files
exist: adding files moves none), every clip of a speaker lands in one split, and the split
sizes are the fractions only on average. ``source_options.speaker_regex`` (a regex with one
group, matched against the file name) gives speaker labels.

``source_options.speaker_disjoint: true`` (needs ``speaker_regex``) holds out whole speakers:
a ``split_seed`` permutation of the speakers puts ``round(val_fraction * n)`` of them (at least
one) in val and ``round(test_fraction * n)`` (at least one) in test, every clip of a speaker in
the same split, so test accuracy is "unseen speaker" accuracy. It replaces the list files when
both are present.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch

from kwsnet.data.audio import AUDIO_EXTENSIONS, read_audio
from kwsnet.data.record import DataFormatError, Item, Source, SourceArgs
from kwsnet.data.speech_commands import _read_list
from kwsnet.errors import ConfigError

__all__ = ["FolderSource", "hash_split"]

# As in TensorFlow's speech_commands ``which_set``: the hash modulo 2**27 gives the percentage.
_HASH_BUCKETS = 1 << 27


def hash_split(name: str, val_fraction: float, test_fraction: float, salt: int = 0) -> str:
    """The split (``"train"``, ``"val"`` or ``"test"``) a speaker or file ``name`` hashes to.

    Speech Commands' ``which_set`` rule: ``name`` without any ``_nohash_...`` tail is hashed
    (SHA-1, salted with ``salt``: the source passes ``split_seed``) to ``u`` in [0, 1); val
    if ``u < val_fraction``, test if ``u < val_fraction + test_fraction``, else train. Stable
    across runs, processes and added files (unlike Python's ``hash``).
    """
    key = re.sub(r"_nohash_.*$", "", name)
    digest = hashlib.sha1(f"{int(salt)}:{key}".encode()).hexdigest()
    u = (int(digest, 16) % _HASH_BUCKETS) / _HASH_BUCKETS
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


class FolderSource(Source):
    """Class-per-folder audio as a ``Source``."""

    name = "folder"

    def __init__(self, args: SourceArgs) -> None:
        super().__init__(args)
        opts = dict(args.options)
        pattern = opts.pop("speaker_regex", None)
        self.speaker_disjoint = bool(opts.pop("speaker_disjoint", False))
        if opts:
            raise ConfigError(
                f"unknown folder source_options {sorted(opts)}; valid: speaker_regex, "
                "speaker_disjoint"
            )
        if self.speaker_disjoint and not pattern:
            raise ConfigError(
                "folder source_options speaker_disjoint: true needs speaker_regex (a regex with "
                "one group that extracts the speaker from a file name)"
            )
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
        if self.speaker_disjoint:
            split_of = self._split_speakers([rel for rel, _ in files], speakers)
        else:
            split_of = self._split_files(root, [rel for rel, _ in files], speakers)
        self._items = {"train": [], "val": [], "test": []}
        for i, (rel, ci) in enumerate(files):
            spk = spk_index[speakers[i]] if speakers else -1
            self._items[split_of[rel]].append(Item(str(root / rel), ci, spk))

    def _split_files(self, root: Path, rels: list[str], speakers: list[str]) -> dict[str, str]:
        """The list files' split when present, else ``hash_split`` of each speaker or name.

        ``speakers`` holds each file's speaker (empty without ``speaker_regex``: the file's
        base name is hashed then).
        """
        if (root / "validation_list.txt").exists() or (root / "testing_list.txt").exists():
            val = _read_list(root / "validation_list.txt", root)
            test = _read_list(root / "testing_list.txt", root)
            return {r: "val" if r in val else "test" if r in test else "train" for r in rels}
        names = speakers or [Path(r).name for r in rels]
        v, t, salt = self.args.val_fraction, self.args.test_fraction, self.args.split_seed
        return {r: hash_split(n, v, t, salt) for r, n in zip(rels, names, strict=True)}

    def _split_speakers(self, rels: list[str], speakers: list[str]) -> dict[str, str]:
        """Whole speakers to val/test by a ``split_seed`` permutation (never the training seed)."""
        names = sorted(set(speakers))
        if len(names) < 3:
            raise DataFormatError(
                f"speaker_disjoint needs at least 3 speakers (train, val, test), found {names}"
            )
        order = [
            names[i] for i in np.random.default_rng(self.args.split_seed).permutation(len(names))
        ]
        k_val = max(1, round(len(names) * self.args.val_fraction))
        k_test = max(1, round(len(names) * self.args.test_fraction))
        if k_val + k_test >= len(names):
            raise DataFormatError(
                f"speaker_disjoint: {len(names)} speakers leave none for training with "
                f"val_fraction={self.args.val_fraction}, test_fraction={self.args.test_fraction}"
            )
        split_of_speaker = {s: "val" for s in order[:k_val]}
        split_of_speaker |= {s: "test" for s in order[k_val : k_val + k_test]}
        return {r: split_of_speaker.get(s, "train") for r, s in zip(rels, speakers, strict=True)}

    def load(self, item: Item) -> torch.Tensor:
        return read_audio(item.path, self.args.sample_rate)
