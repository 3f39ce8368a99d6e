"""Dataset download a user can trust: resumable, checksummed, extracted atomically, once.

``download_archive(url, root, sha256, check)`` fetches a ``.tar.gz`` into
``<root>.download/`` (resuming a partial file with an HTTP ``Range`` request, retrying a
connection that breaks off), verifies its SHA-256 before anything is extracted, extracts it
into a temporary folder beside ``root``, checks the layout (``check``) and only then renames
it to ``root``: an interrupted or failed download never leaves a half-filled ``root`` that a
later run would take for the dataset. An exclusive lock on ``<root>.download.lock`` makes one
process download while others (DDP ranks, a second job) wait and then find ``root``. Every
failure is one :class:`DownloadError` line naming the URL, the folder and what to do.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kwsnet.data.record import DataFormatError

__all__ = ["DownloadError", "download_archive", "sha256_of"]

_CHUNK = 1 << 20


class DownloadError(DataFormatError):
    """A dataset download that failed: names the URL and the folder."""


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, part: Path, timeout: float) -> tuple[int, int | None]:
    """Append the rest of ``url`` to ``part`` (a ``Range`` request from its size; a server
    that ignores it sends the whole file, which replaces ``part``). Returns (bytes in
    ``part``, the full size the server announced or None).

    Raises:
        OSError, http.client.HTTPException: the connection failed or broke off.
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - a dataset URL
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the range starts at the end: part holds it all
            return have, have
        raise
    with response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            total_text = response.headers.get("Content-Range", "").rpartition("/")[2]
            total = int(total_text) if total_text.isdigit() else None
            mode = "ab"
        else:
            have, mode = 0, "wb"
            total = int(length) if length and length.isdigit() else None
        with open(part, mode) as f:
            while block := response.read(_CHUNK):
                f.write(block)
                have += len(block)
    return have, total


def _check_sha256(archive: Path, sha256: str | None, url: str, root: Path) -> None:
    if sha256 is None:
        return
    got = sha256_of(archive)
    if got != sha256.lower():
        archive.unlink()
        raise DownloadError(
            f"{url}: the download into {root} has SHA-256 {got}, expected {sha256}; the file "
            "was removed: run again to download it again (or the server sends another file)"
        )


def download_archive(
    url: str,
    root: str | os.PathLike,
    sha256: str | None,
    check: Callable[[Path], None] | None = None,
    attempts: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Download the ``.tar.gz`` at ``url`` and extract it as ``root`` (see the module
    docstring); nothing to do when ``root`` exists. ``sha256``: the archive's checksum (None:
    not verified); ``check(folder)``: raise ``DataFormatError`` unless the extracted folder has
    the dataset's layout; ``attempts``: connections tried for one download (each resumes).

    Raises:
        DownloadError: no connection, a download that keeps breaking off, a checksum
            mismatch, an archive that does not extract, or a layout ``check`` refuses.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f"{root.name}.download.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process downloading: wait for it
        if root.exists():
            return root
        work = root.parent / f"{root.name}.download"
        work.mkdir(exist_ok=True)
        name = os.path.basename(url.split("?")[0]) or "archive.tar.gz"
        part, archive = work / f"{name}.part", work / name
        if not archive.exists():
            _download(url, root, part, attempts, timeout)
            part.replace(archive)
        _check_sha256(archive, sha256, url, root)
        _extract(archive, root, url, check)
        shutil.rmtree(work, ignore_errors=True)
    lock_path.unlink(missing_ok=True)
    return root


def _download(url: str, root: Path, part: Path, attempts: int, timeout: float) -> None:
    """Fetch ``url`` into ``part`` completely, resuming after a break, or raise."""
    last = ""
    for attempt in range(attempts):
        try:
            have, total = _fetch(url, part, timeout)
        except (OSError, http.client.HTTPException) as exc:
            last = str(exc) or type(exc).__name__
            if isinstance(exc, urllib.error.HTTPError) and exc.code < 500:
                break  # 404, 403: another try will not help
        else:
            if total is None or have == total:
                return
            last = f"the connection closed after {have} of {total} bytes"
        time.sleep(min(2.0**attempt, 10.0) * 0.1)
    size = part.stat().st_size if part.exists() else 0
    raise DownloadError(
        f"could not download {url} into {root}: {last} (after {attempts} attempt(s); "
        f"{size} bytes kept in {part}, which the next run resumes); or download it by hand "
        f"and extract it into {root}"
    )


def _extract(archive: Path, root: Path, url: str, check: Callable[[Path], None] | None) -> None:
    """Extract ``archive`` into a temporary folder, check it, rename it to ``root``."""
    tmp = root.parent / f"{root.name}.extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        if check is not None:
            check(tmp)
    except (tarfile.TarError, EOFError, OSError, DataFormatError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: the archive downloaded for {root} does not hold the dataset ({exc}); it was "
            "removed: run again to download it again"
        ) from exc
    tmp.replace(root)
