"""Atomic file writes: a reader, or a run killed mid-write, sees the old file or the new one.

Run outputs (``summary.json``, sweep ledgers and tables, exported C models, the benchmark page)
and checkpoints (``kwsnet.checkpointing.AtomicCheckpointIO``, which names the checkpoint and a
full disk in the error) go through these.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "new_file_mode",
    "make_temp_file",
]

# bytes per write call: a short write (a full disk) fails after at most this much more
_CHUNK = 1 << 20


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


def fsync_dir(folder: str | os.PathLike) -> None:
    """``fsync`` a folder, so that a rename into it is durable; a no-op where folders cannot be
    opened or synced (some file systems, other platforms)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_bytes(
    path: str | os.PathLike,
    data: bytes | memoryview,
    write: Callable[[int, memoryview], int] | None = None,
) -> None:
    """Write ``data`` to ``path`` through a temp file beside it, ``fsync``, a rename and an
    ``fsync`` of the folder, so a reader (or a run killed mid-write, or a power cut) never sees
    half a file: the old file or the new one. On an error (e.g. ``ENOSPC``) ``path`` is
    untouched and the temp file removed.

    Args:
        path: the target; its folder is made if missing.
        data: the bytes.
        write: writes (some of) a chunk to a file descriptor and returns how many bytes it
            wrote (default ``os.write``; a seam for tests that inject a full disk).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write = os.write if write is None else write
    fd, tmp = make_temp_file(path)
    try:
        try:
            view = memoryview(data).cast("B")
            while view:
                view = view[write(fd, view[:_CHUNK]) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode())
