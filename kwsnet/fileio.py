"""Atomic file writes: a reader, or a run killed mid-write, sees the old file or the new one.

Run outputs (``summary.json``, sweep ledgers and tables, exported C models, the benchmark page)
go through these. Checkpoints have their own chunked writer with disk-full handling
(``kwsnet.checkpointing.AtomicCheckpointIO``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "new_file_mode", "make_temp_file"]


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: ``0o666`` less the process umask."""
    mask = os.umask(0)  # the only portable way to read it; set straight back
    os.umask(mask)
    return 0o666 & ~mask


def make_temp_file(path: Path) -> tuple[int, str]:
    """A temp file beside ``path`` for an atomic replace, with the mode a plain write would
    give (``mkstemp`` makes it 0600, which the rename would carry onto the target)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, new_file_mode())
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file, ``fsync`` and a rename, so a reader (or
    a run killed mid-write) never sees half a file: the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode())
