"""A seeded shuffling sampler and a DataLoader whose position survives a kill and a resume.

Lightning (2.x) saves the state of a training DataLoader in the checkpoint, and restores it
before the first batch of a resumed epoch, only when the loader itself has ``state_dict`` and
``load_state_dict`` (``lightning.fabric.utilities.types._Stateful``, checked in
``CombinedLoader._state_dicts`` from ``FitLoop.on_save_checkpoint`` and loaded in
``FitLoop.setup_data``). A plain ``DataLoader`` is not stateful, so a run resumed from a
mid-epoch checkpoint would restart the epoch from its first batch with a fresh shuffle.

``ResumableSampler`` draws epoch ``e``'s order as ``randperm(n)`` from a generator seeded with
``draw_seed(seed, e, ORDER_TAG)``, so the order depends only on the seed and the epoch, and a
sweep over seeds gets different orders in every epoch (with ``seed + e``, seed 0's epoch 1 was
seed 1's epoch 0). ``ORDER_TAG`` (-1, mixed in as ``2**64 - 1``) is no item index, so the
order's seed is never mixed from the parts of an item's draw seed. It yields
``Draw(index, epoch, seed)`` keys, from which a dataset seeds that item's random draws in
this epoch (random crops): a function of the run seed, the epoch and the item only. Draws in
the data pipeline therefore never touch the global RNG, whose state a checkpoint saves *after*
Lightning has prefetched the next batch; with them a resumed run re-draws exactly the crops
the uninterrupted run drew.

``ResumableDataLoader`` records how many batches the *training loop* has consumed in the
current epoch (not how many were fetched: Lightning prefetches one batch ahead, and worker
processes fetch further ahead) and restores the sampler to start right after them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, DistributedSampler

__all__ = ["Draw", "ResumableSampler", "ResumableDataLoader", "draw_seed"]

_MASK = (1 << 64) - 1
# Third part of the epoch order's seed, ``draw_seed(seed, epoch, ORDER_TAG)``: per-item draws use
# ``draw_seed(seed, epoch, index)`` with ``0 <= index < 2**64 - 1``: never the same parts.
ORDER_TAG = -1


def draw_seed(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (splitmix64 steps): ``draw_seed(seed, epoch, index)``."""
    x = 0
    for p in parts:
        x = (x ^ (int(p) & _MASK)) + 0x9E3779B97F4A7C15 & _MASK
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
        x ^= x >> 31
    return x >> 1


class Draw(NamedTuple):
    """A sampler key: dataset ``index``, the ``epoch`` and the run's sampler ``seed``.

    ``draw_seed(seed, epoch, index)`` seeds the item's random draws in that epoch (computed
    only by a dataset that draws, so plain indexing costs nothing extra).
    """

    index: int
    epoch: int
    seed: int


class ResumableSampler(DistributedSampler):
    """Shuffle ``size`` indices in an order fixed by ``seed`` and the epoch; resumable mid-epoch.

    Under DDP each of ``num_replicas`` processes takes every ``num_replicas``-th position of
    the same epoch order, starting at ``rank`` (the order is padded by wrapping around so all
    shards have ``ceil(size / num_replicas)`` items, as ``DistributedSampler`` does). It is a
    ``DistributedSampler`` so that Lightning keeps it instead of wrapping it in its own.

    Args:
        size: number of items (``len(dataset)``).
        seed: base seed; epoch ``e`` uses ``torch.randperm(size)`` seeded with
            ``draw_seed(seed, e, ORDER_TAG)`` (mixes both: no pair shares another's order).
        shuffle: ``False`` yields ``0..size-1`` in order (the position is still resumable).
        num_replicas, rank: the DDP world size and this process's rank (default 1 and 0).
    """

    def __init__(
        self, size: int, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0
    ) -> None:
        # DistributedSampler.__init__ wants a dataset and an initialised process group; only
        # its type matters here, so it is not called.
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank {rank} of {num_replicas}")
        self.size, self.seed, self.shuffle = size, int(seed), shuffle
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, False
        self.num_samples = math.ceil(size / num_replicas) if size else 0
        self.total_size = self.num_samples * num_replicas
        self.epoch = 0
        self._start = 0  # first position of the next iteration (set by load_state_dict)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at every epoch start (and on resume) with the epoch number."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[int]:
        """This process's index order of ``epoch`` (the full order with one process)."""
        if not self.shuffle:
            full = list(range(self.size))
        else:
            gen = torch.Generator().manual_seed(draw_seed(self.seed, epoch, ORDER_TAG))
            full = torch.randperm(self.size, generator=gen).tolist()
        if self.num_replicas == 1:
            return full
        padded = (full * math.ceil(self.total_size / max(len(full), 1)))[: self.total_size]
        return padded[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[Draw]:
        start, self._start = self._start, 0
        epoch = self.epoch
        seed = self.seed
        for i in self.order(epoch)[start:]:
            yield Draw(i, epoch, seed)

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch", "size"}``: the position is kept by the loader."""
        return {"seed": self.seed, "epoch": self.epoch, "size": self.size}

    def load_state_dict(self, state: dict[str, Any], start: int = 0) -> None:
        """Restore the epoch; the next iteration starts at position ``start`` of its order."""
        if int(state["size"]) != self.size:
            raise ValueError(
                f"cannot resume the sampler: the checkpoint was saved with {state['size']} "
                f"training items, the dataset now has {self.size}; resume with the same data"
            )
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        self._start = max(0, min(int(start), self.num_samples))


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a ``ResumableSampler`` that Lightning saves and restores mid-epoch.

    Args:
        *args, **kwargs: as for ``DataLoader``; ``sampler`` must be a ``ResumableSampler`` and
            ``drop_last`` must be False (positions are counted in whole batches).
        consumed: returns how many batches of the current epoch the training loop has consumed
            (``None``: count the batches this loader has handed out, which overcounts by the
            consumer's prefetch). The DataModule passes the trainer's batch progress.
    """

    def __init__(
        self, *args: Any, consumed: Callable[[], int | None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError(
                f"ResumableDataLoader needs a ResumableSampler, got {type(self.sampler).__name__}"
            )
        if self.drop_last:
            raise ValueError("ResumableDataLoader counts whole batches: drop_last must be False")
        self._consumed = consumed
        self._handed_out = 0
        self._offset = 0  # batches already consumed before this iteration began (on resume)

    def __iter__(self) -> Iterator[Any]:
        self._offset, self._handed_out = self._resume_batches, 0
        self._resume_batches = 0
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    _resume_batches = 0

    def state_dict(self) -> dict[str, Any]:
        """Sampler state plus the number of batches of this epoch the trainer has consumed."""
        consumed = self._consumed() if self._consumed is not None else None
        if consumed is None:
            consumed = self._offset + self._handed_out
        return {"sampler": self.sampler.state_dict(), "batches": int(consumed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration continue after the consumed batches of the saved epoch."""
        batches = int(state["batches"])
        assert self.batch_size is not None, "ResumableDataLoader needs a batch_size"
        self.sampler.load_state_dict(state["sampler"], start=batches * self.batch_size)
        self._resume_batches = batches
