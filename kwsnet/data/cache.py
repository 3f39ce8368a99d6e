"""Where decoded signals are kept: the memory budget a DataModule's splits share, the on-disk
spill beyond it, and the threaded decode that fills both at setup (``RecordDataset.preload``).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import get_worker_info

from kwsnet.data.record import Item, Source

__all__ = [
    "CacheBudget",
    "DEFAULT_CACHE_LIMIT_MB",
    "decode_all",
    "read_spill",
    "spill_path",
    "write_spill",
]

# Memory for decoded signals per process unless data.cache_limit_mb says otherwise (null: no limit).
DEFAULT_CACHE_LIMIT_MB = 2048

# Part of every disk-cache key: bumped when what a key's signal holds changes (2: silence
# segments no longer depend on PYTHONHASHSEED), so entries written before are never read.
_SPILL_VERSION = 2


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


def spill_path(spill_dir: Path, source: Source, item: Item) -> Path:
    """Where ``item``'s signal lives in the on-disk cache ``spill_dir``:
    ``<sha1 of source, file (path, size, mtime), item and load params>.pt`` (load params:
    sample rate, ``split_seed`` and source options; so a changed file, sample rate or seed
    never hits a stale entry)."""
    try:
        st = os.stat(item.path)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:  # generated items (synthetic://) have no file
        stamp = None
    args = source.args
    key = repr(
        (
            _SPILL_VERSION,
            type(source).__name__,
            item.path,
            stamp,
            item.kind,
            item.extra,
            args.sample_rate,
            args.split_seed,  # seeds generated signals (Speech Commands silence)
            sorted(args.options.items()),
        )
    )
    return spill_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.pt"


def read_spill(path: Path | None) -> torch.Tensor | None:
    """The signal spilled to ``path``, or ``None`` when there is none (or no ``path``)."""
    if path is not None and path.exists():
        return torch.load(path, weights_only=True)
    return None


def write_spill(path: Path, signal: torch.Tensor) -> bool:
    """Spill ``signal`` to ``path`` unless a file is there already; whether it wrote one.

    Atomic (temp file and rename): a reader, in another thread, worker or run, sees the whole
    file or none.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    torch.save(signal.clone(), tmp)
    os.replace(tmp, path)
    return True


def decode_all(decode: Callable[[int], Any], n: int, threads: int, stop: Callable[[], bool]) -> int:
    """Call ``decode(i)`` for ``i`` in ``0..n-1`` in ``threads`` threads (libsndfile and torch
    drop the GIL), a chunk at a time, until ``stop()`` says no further signal can be kept;
    return how many were decoded (``n`` unless it stopped)."""
    chunk, done = max(1, threads) * 16, 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        while done < n and not stop():
            list(pool.map(decode, range(done, min(done + chunk, n))))
            done = min(done + chunk, n)
    return done
