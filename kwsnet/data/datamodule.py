"""The one DataModule: a pluggable source → decode/resample/crop → padded batches.

``data.source`` picks the format as every class of a config is picked: a ``class_path`` (and
its ``init_args``) naming any ``kwsnet.data.record.Source`` subclass, or a shipped format's
short name (``SOURCES``: ``synthetic``, ``speech_commands``, ...). The same module serves
keyword spotting and speaker classification through ``target``. Batches are dicts::

    {"audio": [B, T] or [B, T, F], "lengths": [B], "label": [B], "keyword": [B],
     "speaker": [B], "path": list[str]}

The parts live beside it: ``sources`` (the class ``data.source`` names), ``dataset`` (one
split's records), ``cache`` (memory budget, disk spill, preload) and ``collate`` (records →
batch).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from kwsnet.data.cache import DEFAULT_CACHE_LIMIT_MB, CacheBudget
from kwsnet.data.collate import collate
from kwsnet.data.dataset import RecordDataset
from kwsnet.data.record import SPLITS, DataFormatError, Item, Source, SourceArgs
from kwsnet.data.sampler import ResumableDataLoader, ResumableSampler
from kwsnet.data.sources import SOURCES, PredictSource, build_source, parse_source, source_class

# CacheBudget, DEFAULT_CACHE_LIMIT_MB, RecordDataset, SOURCES, build_source and collate live
# in their own modules (cache, dataset, sources, collate) and are re-exported here.
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


class AudioDataModule(pl.LightningDataModule):
    """Keyword or speaker data from any source, as padded batches.

    Args:
        source: the format (default ``synthetic``): ``{class_path: ..., init_args: {...}}``
            naming any ``kwsnet.data.record.Source`` subclass (a shipped one or your own;
            ``init_args`` are the format's options), or a shipped format's short name,
            ``synthetic``, ``speech_commands``, ``folder``, ``voxceleb1`` or ``mel_features``
            (``SOURCES``), which also stands for its class path in ``class_path``. A string
            that is not a short name is a class path without init_args. See
            ``kwsnet.data.sources``.
        root: dataset folder (not needed for ``synthetic``).
        target: ``keyword`` (default) or ``speaker``: the label the task learns.
        words: keyword classes to keep (Speech Commands / folder); default all.
        include_unknown: Speech Commands: add ``_unknown_``, by default TensorFlow's definition
            (per split, ``unknown_percentage`` 10% of the keyword count drawn from the other
            words; option ``unknown_mode: all``: every other word; default False).
        include_silence: Speech Commands: add ``_silence_``, clips of zeros (per split,
            ``silence_percentage`` 10% of the keyword count; default False). See
            ``kwsnet.data.speech_commands`` and ``docs/speech_commands.md``.
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
        source_options: the format's options, merged over ``source``'s ``init_args`` (these
            win): the options of a short name, or one changed from the command line
            (``--data.source_options '{num_words: 3}'``). Each source lists the valid ones.
        predict_files: audio files or folders for ``predict``.
        class_names: index → name of the classes, for runs without the dataset: with it the
            source is built only when a train/val/test split is used (and must then give the
            same names), so ``predict`` needs only ``predict_files``. Every checkpoint saves
            the names (``state_dict``; ``checkpoint_class_names`` reads them back). Default
            ``None``: the source's names.
    """

    def __init__(
        self,
        source: str | dict[str, Any] = "synthetic",
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
        self._source_spec = parse_source(source)  # its shape; the class is imported on use
        self.source_name = self._source_spec.label
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
            options={**self._source_spec.init_args, **(source_options or {})},
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
                f"data.source={self.source_name!r} with target={target!r} has {len(names)} "
                "classes; a classifier needs at least 2"
            )
        self.datasets: dict[str, RecordDataset] = {}

    def prepare_data(self) -> None:
        """Lightning's once-per-node hook: the source's ``prepare`` (a download with
        ``data.download: true``, when ``data.root`` is not there yet)."""
        if self.source_args.download:
            source_class(self._source_spec).prepare(self.source_args)

    def noise_dir(self) -> str | None:
        """The data's own background-noise folder (``Source.noise_dir``: Speech Commands'
        ``_background_noise_``), or None."""
        return self.source.noise_dir()

    @property
    def source(self) -> Source:
        """The dataset format, built on first use (in ``__init__`` unless ``class_names`` was
        given); a source whose class names differ from ``class_names`` raises."""
        if self._source is None:
            src = source_class(self._source_spec)(self.source_args)
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
                src: Source = PredictSource(self.source_args, self.predict_files or [])
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
