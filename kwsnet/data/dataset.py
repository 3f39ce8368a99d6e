"""One split's items as sample records (``kwsnet.data.record``), decoded once and cached."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from kwsnet.data.audio import fit_length
from kwsnet.data.cache import CacheBudget, decode_all, read_spill, spill_path, write_spill
from kwsnet.data.record import DataFormatError, Item, Source
from kwsnet.data.sampler import Draw, draw_seed

__all__ = ["RecordDataset"]

log = logging.getLogger(__name__)


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
        return spill_path(self.spill_dir, self.source, self.items[index])

    def _keep(self, index: int, signal: torch.Tensor) -> None:
        """Cache ``signal`` in memory if the budget allows, else on disk if there is a dir."""
        if self.budget is None or self.budget.take(signal.numel() * signal.element_size()):
            self.cache[index] = signal
            return
        path = self.spill_path(index)
        if path is not None and write_spill(path, signal):
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
            spilled = read_spill(self.spill_path(index))
            if spilled is not None:
                return spilled
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
        n = len(self.items)
        done = decode_all(self.decode, n, threads, self._full)
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
