"""The one DataModule: a pluggable source → decode/resample/crop → padded batches.

``data.source`` names the format (``SOURCES``); the same module serves keyword spotting and
speaker classification through ``target``. Batches are dicts::

    {"audio": [B, T] or [B, T, F], "lengths": [B], "label": [B], "keyword": [B],
     "speaker": [B], "path": list[str]}
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from kwsnet.data.audio import AUDIO_EXTENSIONS, fit_length
from kwsnet.data.record import SPLITS, DataFormatError, Item, Source, SourceArgs

__all__ = ["AudioDataModule", "RecordDataset", "collate", "SOURCES", "build_source"]

log = logging.getLogger(__name__)

# name → "module:Class"; imported on use so one broken format never blocks the others.
SOURCES: dict[str, str] = {
    "synthetic": "kwsnet.data.synthetic:SyntheticSource",
    "speech_commands": "kwsnet.data.speech_commands:SpeechCommandsSource",
    "folder": "kwsnet.data.folder:FolderSource",
    "voxceleb1": "kwsnet.data.voxceleb1:VoxCeleb1Source",
    "mel_features": "kwsnet.data.mel_features:MelFeatureSource",
}


def build_source(name: str, args: SourceArgs) -> Source:
    """Instantiate the source called ``name``; an unknown name lists the valid ones."""
    if name not in SOURCES:
        raise ValueError(f"unknown data.source {name!r}; valid sources: {sorted(SOURCES)}")
    module, cls = SOURCES[name].split(":")
    return getattr(importlib.import_module(module), cls)(args)


class _PredictSource(Source):
    """Unlabelled audio files for ``predict``."""

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
        self._items = [Item(p) for p in paths]

    def items(self, split: str) -> list[Item]:
        return list(self._items)

    def load(self, item: Item) -> torch.Tensor:
        from kwsnet.data.audio import read_audio

        return read_audio(item.path, self.args.sample_rate)


class RecordDataset(Dataset):
    """Items of one split as sample records; decoded signals are cached after the first load.

    Args:
        source: the format that loads an item.
        items: the split's items.
        target: ``keyword`` or ``speaker``: which label becomes ``label``.
        length: fixed length along time (pad centred / crop), or ``None`` to keep it.
        crop: random crop to at most this many time steps (training), or ``None``.
        train: random crops in training, centred crops otherwise.
        on_error: ``raise`` (an error naming the file) or ``skip`` (the record becomes ``None``
            and ``collate`` drops it).
    """

    def __init__(
        self,
        source: Source,
        items: list[Item],
        target: str,
        length: int | None,
        crop: int | None,
        train: bool,
        on_error: str = "raise",
    ) -> None:
        self.source, self.items, self.target = source, items, target
        self.length, self.crop, self.train, self.on_error = length, crop, train, on_error
        self.cache: list[torch.Tensor | None] = [None] * len(items)
        self.failed: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.items)

    def decode(self, index: int) -> torch.Tensor | None:
        """Load (or fetch from the cache) item ``index``'s signal; ``None`` if it failed."""
        if index in self.failed:
            return None
        signal = self.cache[index]
        if signal is None:
            try:
                signal = self.source.load(self.items[index])
            except DataFormatError as exc:
                if self.on_error != "skip":
                    raise
                self.failed[index] = str(exc)
                return None
            self.cache[index] = signal
        return signal

    def preload(self, threads: int) -> None:
        """Decode every item once, in ``threads`` threads (libsndfile and torch drop the GIL)."""
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            list(pool.map(self.decode, range(len(self.items))))
        if self.failed:
            warnings.warn(
                f"skipped {len(self.failed)} of {len(self.items)} files that could not be read "
                f"(on_error: skip); first: {next(iter(self.failed.values()))}",
                stacklevel=2,
            )

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        signal = self.decode(index)
        if signal is None:
            return None
        if self.length is not None:
            signal = fit_length(signal, self.length, random_crop=self.train)
        elif self.crop is not None and signal.shape[0] > self.crop:
            signal = fit_length(signal, self.crop, random_crop=self.train)
        item = self.items[index]
        label = item.keyword if self.target == "keyword" else item.speaker
        return {
            "audio": signal,
            "length": signal.shape[0],
            "keyword": item.keyword,
            "speaker": item.speaker,
            "label": label,
            "path": item.path,
        }


def collate(records: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Pad records along time into a batch dict with ``lengths``; ``None`` records are dropped."""
    records = [r for r in records if r is not None]
    if not records:
        return {}
    lengths = torch.tensor([r["length"] for r in records], dtype=torch.long)
    first = records[0]["audio"]
    audio = first.new_zeros((len(records), int(lengths.max()), *first.shape[1:]))
    for i, r in enumerate(records):
        audio[i, : r["length"]] = r["audio"]
    return {
        "audio": audio,
        "lengths": lengths,
        "label": torch.tensor([r["label"] for r in records], dtype=torch.long),
        "keyword": torch.tensor([r["keyword"] for r in records], dtype=torch.long),
        "speaker": torch.tensor([r["speaker"] for r in records], dtype=torch.long),
        "path": [r["path"] for r in records],
    }


class AudioDataModule(pl.LightningDataModule):
    """Keyword or speaker data from any source, as padded batches.

    Args:
        source: the format (default ``synthetic``): one of ``SOURCES``.
        root: dataset folder (not needed for ``synthetic``).
        target: ``keyword`` (default) or ``speaker``: the label the task learns.
        words: keyword classes to keep (Speech Commands / folder); default all.
        include_unknown: Speech Commands: other words become ``_unknown_`` (default False).
        include_silence: Speech Commands: add a ``_silence_`` class (default False).
        sample_rate: model sample rate; audio is resampled to it (default 16000).
        clip_samples: pad/crop every clip to this many samples (default 16000: 1 s); ``None``
            keeps full utterances (speaker tasks).
        train_crop: with ``clip_samples: null``, randomly crop training records to at most this
            many time steps (samples for audio, frames for precomputed features).
        batch_size: batch size (default 64).
        num_workers: DataLoader worker processes (default 0).
        preload: decode every clip once at setup, in ``decode_threads`` threads (default True).
        decode_threads: threads for the preload (default 2).
        on_error: ``raise`` (default) or ``skip`` unreadable files with a warning and a count.
        split_seed: seed of seeded splits, independent of the training seed (default 1234).
        val_fraction / test_fraction: seeded split sizes (default 0.1 / 0.1).
        download: fetch the dataset when ``root`` is missing, where the format supports it.
        source_options: extra, format-specific options (each source lists the valid ones).
        predict_files: audio files or folders for ``predict``.
    """

    def __init__(
        self,
        source: str = "synthetic",
        root: str | None = None,
        target: Literal["keyword", "speaker"] = "keyword",
        words: list[str] | None = None,
        include_unknown: bool = False,
        include_silence: bool = False,
        sample_rate: int = 16000,
        clip_samples: int | None = 16000,
        train_crop: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        preload: bool = True,
        decode_threads: int = 2,
        on_error: Literal["raise", "skip"] = "raise",
        split_seed: int = 1234,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        download: bool = False,
        source_options: dict[str, Any] | None = None,
        predict_files: list[str] | None = None,
    ) -> None:
        super().__init__()
        if target not in ("keyword", "speaker"):
            raise ValueError(f"data.target must be 'keyword' or 'speaker', got {target!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.source_name = source
        self.target = target
        self.clip_samples, self.train_crop = clip_samples, train_crop
        self.batch_size, self.num_workers = batch_size, num_workers
        self.preload, self.decode_threads, self.on_error = preload, decode_threads, on_error
        self.predict_files = predict_files
        self.source_args = SourceArgs(
            root=root,
            sample_rate=sample_rate,
            words=words,
            include_unknown=include_unknown,
            include_silence=include_silence,
            split_seed=split_seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            download=download,
            options=dict(source_options or {}),
        )
        self.source = build_source(source, self.source_args)
        names = self.class_names
        if len(names) < 2:
            raise DataFormatError(
                f"data.source={source!r} with target={target!r} has {len(names)} classes; "
                "a classifier needs at least 2"
            )
        self.datasets: dict[str, RecordDataset] = {}

    @property
    def class_names(self) -> list[str]:
        """Index → name of the classes the task learns."""
        src = self.source
        return list(src.keyword_names if self.target == "keyword" else src.speaker_names)

    @property
    def num_classes(self) -> int:
        """Number of classes the task learns (linked into the model by the CLI)."""
        return len(self.class_names)

    def _dataset(self, split: str) -> RecordDataset:
        if split not in self.datasets:
            if split == "predict":
                src: Source = _PredictSource(self.source_args, self.predict_files or [])
                items = src.items(split)
            else:
                src, items = self.source, self.source.items(split)
                if not items:
                    raise DataFormatError(
                        f"data.source={self.source_name!r} has no {split!r} items"
                    )
                missing = [it.path for it in items if self._label(it) < 0]
                if missing:
                    raise DataFormatError(
                        f"{missing[0]}: no {self.target} label (target={self.target!r}); "
                        f"{len(missing)} items in split {split!r} lack one"
                    )
            ds = RecordDataset(
                src,
                items,
                self.target,
                self.clip_samples,
                self.train_crop,
                train=split == "train",
                on_error=self.on_error,
            )
            if self.preload:
                ds.preload(self.decode_threads)
            self.datasets[split] = ds
        return self.datasets[split]

    def _label(self, item: Item) -> int:
        return item.keyword if self.target == "keyword" else item.speaker

    def setup(self, stage: str | None = None) -> None:
        needed = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
            None: SPLITS,
        }[stage]
        for split in needed:
            self._dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self._dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        if not self.predict_files:
            raise DataFormatError("predict needs data.predict_files: audio files or folders")
        return self._loader("predict", shuffle=False)
