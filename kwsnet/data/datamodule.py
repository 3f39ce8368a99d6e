"""The one DataModule: a pluggable source → decode/resample/crop → padded batches.

``data.source`` names the format (``SOURCES``); the same module serves keyword spotting and
speaker classification through ``target``. Batches are dicts::

    {"audio": [B, T] or [B, T, F], "lengths": [B], "label": [B], "keyword": [B],
     "speaker": [B], "path": list[str]}
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from kwsnet.data.audio import AUDIO_EXTENSIONS, fit_length
from kwsnet.data.record import SPLITS, DataFormatError, Item, Source, SourceArgs
from kwsnet.data.sampler import Draw, ResumableDataLoader, ResumableSampler, draw_seed

__all__ = [
    "AudioDataModule",
    "CacheBudget",
    "DEFAULT_CACHE_LIMIT_MB",
    "RecordDataset",
    "SOURCES",
    "build_source",
    "checkpoint_class_names",
    "collate",
]

log = logging.getLogger(__name__)

# Memory for decoded signals per process unless data.cache_limit_mb says otherwise (null: no limit).
DEFAULT_CACHE_LIMIT_MB = 2048

# Part of every disk-cache key: bumped when what a key's signal holds changes (2: silence
# segments no longer depend on PYTHONHASHSEED), so entries written before are never read.
_SPILL_VERSION = 2

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


def checkpoint_class_names(ckpt: str | os.PathLike | dict[str, Any]) -> list[str] | None:
    """The class names saved in a checkpoint (a path, or one loaded) by
    ``AudioDataModule.state_dict``.

    ``None`` when the file is missing or unreadable, or predates the saved names (the caller
    then needs the dataset to name the classes).
    """
    if not isinstance(ckpt, dict):
        try:
            ckpt = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # missing, not a zip checkpoint, refused by weights_only: no names
            return None
    state = ckpt.get(AudioDataModule.__qualname__) if isinstance(ckpt, dict) else None
    names = state.get("class_names") if isinstance(state, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else None


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
        self._items = {"predict": [Item(p) for p in paths]}

    def load(self, item: Item) -> torch.Tensor:
        from kwsnet.data.audio import read_audio

        return read_audio(item.path, self.args.sample_rate)


class CacheBudget:
    """Bytes of decoded signals a DataModule may hold in memory, shared by its splits.

    Nothing is ever evicted: once a signal has been refused, ``full`` is set. A ``DataLoader``
    worker starts with a copy of the cache and of this budget (pages shared copy-on-write with
    the main process under the ``fork`` start method, the Linux default; a full copy under
    ``spawn``); on its first reservation a worker takes an even share of what the main process
    left unused, so a loader's ``num_workers`` workers together cache at most that.

    Args:
        limit_mb: the limit in MiB, or ``None`` (no limit).
    """

    def __init__(self, limit_mb: float | None) -> None:
        self.limit = None if limit_mb is None else int(limit_mb * 2**20)
        self.used = 0
        self.full = False
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        """Reserve ``nbytes``; ``False`` (nothing reserved) when that would pass the limit."""
        if self._pid != os.getpid():
            self._enter_worker()
        with self._lock:
            if self.limit is not None and self.used + nbytes > self.limit:
                self.full = True
                return False
            self.used += nbytes
            return True

    def _enter_worker(self) -> None:
        """First reservation in a new process: a fresh lock (the parent's may have been held
        at the fork) and, in a DataLoader worker, its share of what is left."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        info = get_worker_info()
        if self.limit is not None and info is not None and info.num_workers > 1:
            self.limit = self.used + (self.limit - self.used) // info.num_workers

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers under spawn get a pickled copy; a lock does not pickle.
        return {"limit": self.limit, "used": self.used, "full": self.full, "_pid": self._pid}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class RecordDataset(Dataset):
    """Items of one split as sample records; decoded signals are cached after the first load.

    The cache keeps signals in memory while ``budget`` allows; beyond it they are spilled to
    ``spill_dir`` as ``<sha1 of source, file (path, size, mtime), item and load params>.pt``
    (load params: sample rate, ``split_seed`` and source options; so a changed file, sample
    rate or seed never hits a stale entry), or, without a ``spill_dir``, decoded again on every
    access.

    Args:
        source: the format that loads an item.
        items: the split's items.
        target: ``keyword`` or ``speaker``: which label becomes ``label``.
        length: fixed length along time (pad centred / crop), or ``None`` to keep it.
        crop: random crop to at most this many time steps (training), or ``None``.
        train: random crops in training, centred crops otherwise.
        on_error: ``raise`` (an error naming the file) or ``skip`` (the record becomes ``None``
            and ``collate`` drops it).
        budget: the in-memory byte budget (default ``None``: unbounded).
        spill_dir: folder of the on-disk cache beyond the budget (default ``None``: none).
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
        budget: CacheBudget | None = None,
        spill_dir: str | os.PathLike | None = None,
    ) -> None:
        self.source, self.items, self.target = source, items, target
        self.length, self.crop, self.train, self.on_error = length, crop, train, on_error
        self.cache: list[torch.Tensor | None] = [None] * len(items)
        self.failed: dict[int, str] = {}
        self.budget = budget
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.spilled = 0

    def spill_path(self, index: int) -> Path | None:
        """Where item ``index``'s signal lives on disk beyond the budget (``None``: nowhere)."""
        if self.spill_dir is None:
            return None
        item = self.items[index]
        try:
            st = os.stat(item.path)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:  # generated items (synthetic://) have no file
            stamp = None
        args = self.source.args
        key = repr(
            (
                _SPILL_VERSION,
                type(self.source).__name__,
                item.path,
                stamp,
                item.kind,
                item.extra,
                args.sample_rate,
                args.split_seed,  # seeds generated signals (Speech Commands silence)
                sorted(args.options.items()),
            )
        )
        return self.spill_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.pt"

    def _keep(self, index: int, signal: torch.Tensor) -> None:
        """Cache ``signal`` in memory if the budget allows, else on disk if there is a dir."""
        if self.budget is None or self.budget.take(signal.numel() * signal.element_size()):
            self.cache[index] = signal
            return
        path = self.spill_path(index)
        if path is None or path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        torch.save(signal.clone(), tmp)
        os.replace(tmp, path)  # atomic: a reader sees the whole file or none
        self.spilled += 1

    def __len__(self) -> int:
        return len(self.items)

    def _full(self) -> bool:
        """Whether a new signal can be kept nowhere (memory budget full and no ``spill_dir``)."""
        return self.spill_dir is None and self.budget is not None and self.budget.full

    def decode(self, index: int) -> torch.Tensor | None:
        """Load (or fetch from the cache) item ``index``'s signal; ``None`` if it failed."""
        if index in self.failed:
            return None
        signal = self.cache[index]
        if signal is None:
            path = self.spill_path(index)
            if path is not None and path.exists():
                return torch.load(path, weights_only=True)
            try:
                signal = self.source.load(self.items[index])
            except DataFormatError as exc:
                if self.on_error != "skip":
                    raise
                self.failed[index] = str(exc)
                return None
            self._keep(index, signal)
        return signal

    def preload(self, threads: int) -> None:
        """Decode every item once, in ``threads`` threads (libsndfile and torch drop the GIL).

        Without a ``spill_dir`` it stops once the budget is full: signals decoded after that
        would be thrown away; the rest are decoded on every access instead.
        """
        n, chunk, done = len(self.items), max(1, threads) * 16, 0
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            while done < n and not self._full():
                list(pool.map(self.decode, range(done, min(done + chunk, n))))
                done = min(done + chunk, n)
        if done < n:
            assert self.budget is not None and self.budget.limit is not None
            log.warning(
                "decoded-audio cache full (data.cache_limit_mb %.0f) after %d of %d clips; the "
                "others are decoded on every access (set data.cache_dir to keep them on disk, or "
                "raise data.cache_limit_mb)",
                self.budget.limit / 2**20,
                done,
                n,
            )
        if self.failed:
            warnings.warn(
                f"skipped {len(self.failed)} of {len(self.items)} files that could not be read "
                f"(on_error: skip); first: {next(iter(self.failed.values()))}",
                stacklevel=2,
            )

    def __getitem__(self, index: int | Draw) -> dict[str, Any] | None:
        """The record of item ``index``; a ``Draw`` key (from ``ResumableSampler``) also fixes
        the seed of its random crop, so crops do not depend on the global RNG."""
        key = None
        if isinstance(index, Draw):
            key, index = index, index.index
        signal = self.decode(index)
        if signal is None:
            return None
        target = self.length
        if target is None and self.crop is not None and signal.shape[0] > self.crop:
            target = self.crop
        if target is not None:
            gen = None
            if self.train and key is not None and signal.shape[0] > target:
                gen = torch.Generator().manual_seed(draw_seed(key.seed, key.epoch, key.index))
            signal = fit_length(signal, target, random_crop=self.train, generator=gen)
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
    if all(r["audio"].shape == first.shape for r in records):
        audio = torch.stack([r["audio"] for r in records])
    else:
        # No zero fill of the whole batch: a multi-threaded fill_ of [64, 16000] takes ~70 ms
        # on oversubscribed cores (vs 0.04 ms on one thread); zero only the padded tails.
        audio = first.new_empty((len(records), int(lengths.max()), *first.shape[1:]))
        for i, r in enumerate(records):
            audio[i, : r["length"]] = r["audio"]
            audio[i, r["length"] :] = 0
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
        preload: decode every clip once at setup, in ``decode_threads`` threads (default True);
            without a ``cache_dir`` it stops when the cache is full.
        decode_threads: threads for the preload (default 2).
        cache_limit_mb: memory for decoded signals, all splits together, in MiB (default
            ``DEFAULT_CACHE_LIMIT_MB``, 2048: 16 kHz float32 is 220 MiB an hour, so ~9 h of
            audio; ``None``: unbounded). Per process: each DDP rank has its own; DataLoader
            workers share the main process's cache (copy-on-write under ``fork``) and split what
            it left of the limit (``CacheBudget``). Clips beyond it go to ``cache_dir``, or,
            without one, are decoded again on every access.
        cache_dir: folder of an on-disk cache for the clips beyond ``cache_limit_mb`` (default
            ``None``: none, nothing is written); entries are keyed by file (path, size, mtime)
            and load parameters, so runs share it.
        on_error: ``raise`` (default) or ``skip`` unreadable files with a warning and a count.
        split_seed: seed of seeded splits, independent of the training seed (default 1234).
        val_fraction / test_fraction: seeded split sizes (default 0.1 / 0.1).
        download: fetch the dataset when ``root`` is missing, where the format supports it.
        source_options: extra, format-specific options (each source lists the valid ones).
        predict_files: audio files or folders for ``predict``.
        class_names: index → name of the classes, for runs without the dataset: with it the
            source is built only when a train/val/test split is used (and must then give the
            same names), so ``predict`` needs only ``predict_files``. Every checkpoint saves
            the names (``state_dict``; ``checkpoint_class_names`` reads them back). Default
            ``None``: the source's names.
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
        cache_limit_mb: float | None = DEFAULT_CACHE_LIMIT_MB,
        cache_dir: str | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        split_seed: int = 1234,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        download: bool = False,
        source_options: dict[str, Any] | None = None,
        predict_files: list[str] | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if target not in ("keyword", "speaker"):
            raise ValueError(f"data.target must be 'keyword' or 'speaker', got {target!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if cache_limit_mb is not None and cache_limit_mb < 0:
            raise ValueError(f"data.cache_limit_mb must be >= 0 or null, got {cache_limit_mb}")
        self.cache_budget = CacheBudget(cache_limit_mb)
        self.cache_dir = None if cache_limit_mb is None else cache_dir
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
        self._class_names = [str(n) for n in class_names] if class_names is not None else None
        self._source: Source | None = None
        if self._class_names is None:
            try:
                _ = self.source  # built now: a config error shows before any run
            except DataFormatError as exc:
                if not predict_files:
                    raise
                raise DataFormatError(
                    f"{exc}; to predict without the dataset, set data.class_names (every "
                    "checkpoint saves them: kwsnet.data.datamodule.checkpoint_class_names)"
                ) from exc
        names = self.class_names
        if len(names) < 2:
            raise DataFormatError(
                f"data.source={source!r} with target={target!r} has {len(names)} classes; "
                "a classifier needs at least 2"
            )
        self.datasets: dict[str, RecordDataset] = {}

    @property
    def source(self) -> Source:
        """The dataset format, built on first use (in ``__init__`` unless ``class_names`` was
        given); a source whose class names differ from ``class_names`` raises."""
        if self._source is None:
            src = build_source(self.source_name, self.source_args)
            names = self._names_of(src)
            if self._class_names is not None and names != self._class_names:
                raise DataFormatError(
                    f"data.class_names {self._class_names} differ from the {self.target} classes "
                    f"of data.source={self.source_name!r}: {names}"
                )
            self._source = src
        return self._source

    def _names_of(self, src: Source) -> list[str]:
        return list(src.keyword_names if self.target == "keyword" else src.speaker_names)

    @property
    def class_names(self) -> list[str]:
        """Index → name of the classes the task learns."""
        if self._class_names is not None:
            return list(self._class_names)
        return self._names_of(self.source)

    @property
    def num_classes(self) -> int:
        """Number of classes the task learns (linked into the model by the CLI)."""
        return len(self.class_names)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the data: the class names, so that ``predict`` can name
        the classes without the dataset."""
        return {"class_names": self.class_names}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Warn when the checkpoint's model learned other classes than this data has."""
        saved = state_dict.get("class_names")
        if saved is not None and list(saved) != self.class_names:
            warnings.warn(
                f"the checkpoint's model learned classes {list(saved)}, the data has "
                f"{self.class_names}: predictions and metrics would use the wrong names",
                stacklevel=2,
            )

    def _dataset(self, split: str) -> RecordDataset:
        if split not in self.datasets:
            if split == "predict":
                src: Source = _PredictSource(self.source_args, self.predict_files or [])
                items = src.items(split)
            else:
                src, items = self.source, self.source.items(split)
                if not items and split == "train":
                    raise DataFormatError(f"data.source={self.source_name!r} has no training items")
                if not items:
                    warnings.warn(
                        f"data.source={self.source_name!r} has no {split!r} items; "
                        f"{split} metrics will be missing",
                        stacklevel=2,
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
                budget=self.cache_budget,
                spill_dir=self.cache_dir,
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
        common: dict[str, Any] = {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "collate_fn": collate,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }
        if not shuffle:
            return DataLoader(self._dataset(split), shuffle=False, **common)
        # Training order = f(run seed, epoch), and the position is saved in mid-epoch
        # checkpoints, so `fit --ckpt_path last` after a kill continues bit-exactly.
        ds = self._dataset(split)
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        # Every rank has the same seed (seed_everything), hence the same order: disjoint shards.
        sampler = ResumableSampler(
            len(ds), seed=torch.initial_seed() % 2**32, num_replicas=replicas, rank=rank
        )
        if trainer is not None:
            sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed)
        return ResumableDataLoader(ds, sampler=sampler, consumed=self._consumed_batches, **common)

    def _consumed_batches(self) -> int | None:
        """Training batches of the current epoch the trainer has finished (for checkpoints)."""
        trainer = self.trainer
        if trainer is None:
            return None
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Move a batch dict's tensors; its paths stay as they are (Lightning's default walks
        every element of every list, every step)."""
        if isinstance(batch, dict):
            return {
                k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

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
