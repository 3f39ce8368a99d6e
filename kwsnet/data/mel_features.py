"""Precomputed log-mel features, one tensor per utterance (``data.source: mel_features``).

The layout of the well-known course speaker-classification dataset (``kwsnet prepare``
writes it from any source)::

    <root>/mapping.json    {"speaker2id": {spk: id}, "id2speaker": {"id": spk}}
    <root>/metadata.json   {"n_mels": 40,
                            "speakers": {spk: [{"feature_path": "uttr-….pt", "mel_len": N}]}}
    <root>/testdata.json   {"n_mels": 40, "utterances": [{"feature_path": …, "mel_len": N,
                                                          "speaker": spk (optional)}]}
    <root>/uttr-….pt       a float tensor [mel_len, n_mels]

Items have ``kind="features"``; ``load`` returns ``[T, n_mels]``.

Splits: ``metadata.json`` is split per speaker with ``split_seed`` (stratified: each speaker
gives ``round(n * val_fraction)`` utterances, at least one, to val and keeps at least one in
train), so the split never depends on the training seed. ``test`` is ``testdata.json`` when
every utterance there names its ``speaker``. The course's ``testdata.json`` has no labels (it
was scored by a leaderboard); then ``test`` is instead a further ``test_fraction`` of each
speaker's metadata utterances, held out from train and val the same seeded way.
``testdata.json`` may be absent (same rule).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kwsnet.data.record import DataFormatError, Item, Source, SourceArgs
from kwsnet.errors import ConfigError

__all__ = ["MelFeatureSource"]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: invalid JSON ({exc})") from exc


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Val and test counts for a speaker with ``n`` utterances.

    Each is ``round(n * fraction)``, at least 1 where the fraction is positive, but at least one
    utterance always stays in train.
    """
    n_val = max(round(n * val_fraction), int(val_fraction > 0))
    n_test = max(round(n * test_fraction), int(test_fraction > 0))
    while n_val + n_test > n - 1 and (n_val or n_test):
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


class MelFeatureSource(Source):
    """A directory of per-utterance feature tensors as a ``Source`` (speaker-labelled).

    Args:
        args: ``root`` (required), ``split_seed``, ``val_fraction`` and ``test_fraction`` are
            used; this format takes no ``source_options``.

    Raises ``DataFormatError`` naming the file for a missing or malformed JSON file, an unknown
    speaker, or a feature file that the metadata names but that does not exist.
    """

    name = "mel_features"

    def __init__(self, args: SourceArgs) -> None:
        super().__init__(args)
        if args.options:
            raise ConfigError(
                f"unknown mel_features source_options {sorted(args.options)}; it takes none"
            )
        if args.root is None or not Path(args.root).is_dir():
            raise DataFormatError(
                f"data.root={args.root!r} is not a directory; expected mapping.json, "
                "metadata.json and uttr-*.pt feature files"
            )
        self.root = Path(args.root)
        mapping_path, meta_path = self.root / "mapping.json", self.root / "metadata.json"
        mapping = _read_json(mapping_path)
        try:
            speaker2id = {str(k): int(v) for k, v in mapping["speaker2id"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataFormatError(
                f"{mapping_path}: expected {{'speaker2id': {{spk: id}}}}"
            ) from exc
        if sorted(speaker2id.values()) != list(range(len(speaker2id))):
            raise DataFormatError(f"{mapping_path}: speaker ids must be 0..{len(speaker2id) - 1}")
        self.speaker_names = sorted(speaker2id, key=speaker2id.__getitem__)

        meta = _read_json(meta_path)
        if not isinstance(meta, dict) or not isinstance(meta.get("speakers"), dict):
            raise DataFormatError(f"{meta_path}: expected {{'n_mels': F, 'speakers': {{...}}}}")
        self.n_mels = int(meta.get("n_mels", 0)) or None
        by_speaker: dict[str, list[Item]] = {}
        for spk, utts in meta["speakers"].items():
            if spk not in speaker2id:
                raise DataFormatError(f"{meta_path}: speaker {spk!r} is not in {mapping_path}")
            by_speaker[spk] = [self._item(u, speaker2id[spk], meta_path) for u in utts]

        test_items = self._test_items(speaker2id)
        self._items = self._split(by_speaker, carve_test=test_items is None)
        if test_items is not None:
            self._items["test"] = test_items

    def _item(self, utt: Any, speaker: int, where: Path) -> Item:
        if not isinstance(utt, dict) or "feature_path" not in utt:
            raise DataFormatError(f"{where}: utterance entry {utt!r} lacks 'feature_path'")
        path = self.root / str(utt["feature_path"])
        if not path.is_file():
            raise DataFormatError(f"{where}: feature file {path} does not exist")
        return Item(str(path), speaker=speaker, kind="features")

    def _test_items(self, speaker2id: dict[str, int]) -> list[Item] | None:
        """Labelled ``testdata.json`` items, or ``None`` when it is absent or unlabelled."""
        path = self.root / "testdata.json"
        if not path.is_file():
            return None
        data = _read_json(path)
        utts = data.get("utterances") if isinstance(data, dict) else None
        if not isinstance(utts, list):
            raise DataFormatError(f"{path}: expected {{'utterances': [...]}}")
        labelled = [isinstance(u, dict) and "speaker" in u for u in utts]
        if not any(labelled):
            return None
        if not all(labelled):
            raise DataFormatError(
                f"{path}: {labelled.count(False)} of {len(utts)} utterances lack 'speaker'; "
                "label all (test split from testdata.json) or none (test carved from metadata)"
            )
        items = []
        for u in utts:
            if u["speaker"] not in speaker2id:
                raise DataFormatError(f"{path}: speaker {u['speaker']!r} is not in mapping.json")
            items.append(self._item(u, speaker2id[u["speaker"]], path))
        return items

    def _split(self, by_speaker: dict[str, list[Item]], carve_test: bool) -> dict[str, list[Item]]:
        gen = torch.Generator().manual_seed(self.args.split_seed)
        test_fraction = self.args.test_fraction if carve_test else 0.0
        splits: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
        for spk in sorted(by_speaker):
            utts = by_speaker[spk]
            n_val, n_test = _split_counts(len(utts), self.args.val_fraction, test_fraction)
            order = torch.randperm(len(utts), generator=gen).tolist()
            val, test = set(order[:n_val]), set(order[n_val : n_val + n_test])
            for i, item in enumerate(utts):
                splits["val" if i in val else "test" if i in test else "train"].append(item)
        return splits

    def load(self, item: Item) -> torch.Tensor:
        """Feature matrix ``[T, n_mels]`` float32."""
        try:
            feats = torch.load(item.path, weights_only=True, map_location="cpu")
        except Exception as exc:  # pickle, zip and IO errors all mean "not a feature tensor"
            raise DataFormatError(f"{item.path}: cannot load feature tensor ({exc})") from exc
        if not isinstance(feats, torch.Tensor) or feats.dim() != 2:
            shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise DataFormatError(f"{item.path}: expected a tensor [T, n_mels], got {shape}")
        if self.n_mels is not None and feats.shape[1] != self.n_mels:
            raise DataFormatError(
                f"{item.path}: {feats.shape[1]} features per frame, metadata says {self.n_mels}"
            )
        return feats.float()
