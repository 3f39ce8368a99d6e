"""Speech Commands download (``data.download: true``, ``kwsnet.data.download``) against a local
HTTP server on 127.0.0.1: a small archive in the official layout, served whole, resumed with a
Range request, cut off mid-transfer, corrupt, truncated, missing; one download for two
processes at once; the DataModule's ``prepare_data``."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kwsnet.data.datamodule import AudioDataModule
from kwsnet.data.download import DownloadError, download_archive
from kwsnet.data.speech_commands import _check_layout

WORDS = ["yes", "no"]


def _archive() -> bytes:
    """A .tar.gz in the official layout: ./<word>/<speaker>_nohash_<n>.wav and the lists,
    3 speakers (one each for train, validation, test) x 2 words x 2 clips."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        val, test = [], []
        for word in WORDS:
            for spk in ("aaaa0001", "bbbb0002", "cccc0003"):
                for n in range(2):
                    wav = io.BytesIO()
                    sf.write(wav, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000,
                             format="WAV", subtype="PCM_16")  # fmt: skip
                    rel = f"{word}/{spk}_nohash_{n}.wav"
                    add(rel, wav.getvalue())
                    (val if spk == "bbbb0002" else test if spk == "cccc0003" else []).append(rel)
        add("validation_list.txt", ("\n".join(val) + "\n").encode())
        add("testing_list.txt", ("\n".join(test) + "\n").encode())
    return buf.getvalue()


@dataclass
class Served:
    """What the server holds (path -> bytes), how it misbehaves, and what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent, then close
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    bytes_sent: int = 0


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            rng = self.headers.get("Range")
            served.requests.append((self.path, rng))
            data = served.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = served.cut_after.pop(self.path, None)
            body = body if cut is None else body[:cut]
            self.wfile.write(body)
            served.bytes_sent += len(body)
            if cut is not None:
                self.close_connection = True

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


ARCHIVE = _archive()
SHA = hashlib.sha256(ARCHIVE).hexdigest()


def _dm(root: Path, url: str, sha: str = SHA) -> AudioDataModule:
    return AudioDataModule(
        source="speech_commands",
        root=str(root),
        words=WORDS,
        download=True,
        source_options={"url": url, "sha256": sha},
        batch_size=2,
    )


def test_download_through_the_datamodule_once(server: tuple[str, Served], tmp_path: Path) -> None:
    """``data.download: true`` fetches, verifies and extracts the archive into ``data.root``
    at the first need; ``prepare_data`` and a second DataModule fetch nothing more."""
    base, served = server
    served.files["/sc.tar.gz"] = ARCHIVE
    root = tmp_path / "sc"
    dm = _dm(root, f"{base}/sc.tar.gz")
    assert dm.class_names == WORDS
    assert (root / "yes" / "aaaa0001_nohash_0.wav").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sc"]  # no temporary left
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4
    _dm(root, f"{base}/sc.tar.gz").prepare_data()
    assert served.requests == [("/sc.tar.gz", None)]


def test_prepare_data_downloads(server: tuple[str, Served], tmp_path: Path) -> None:
    """``prepare_data`` (Lightning's once-per-node hook) runs the download: with the class
    names given (as a checkpoint gives them) nothing is fetched before it."""
    base, served = server
    served.files["/sc.tar.gz"] = ARCHIVE
    root = tmp_path / "sc"
    dm = AudioDataModule(
        source="speech_commands",
        root=str(root),
        words=WORDS,
        download=True,
        source_options={"url": f"{base}/sc.tar.gz", "sha256": SHA},
        class_names=WORDS,
    )
    assert served.requests == [] and not root.exists()
    dm.prepare_data()
    assert (root / "validation_list.txt").is_file() and len(served.requests) == 1
    dm.setup("test")
    assert len(dm.datasets["test"]) == 4


def test_partial_file_is_resumed_with_a_range_request(
    server: tuple[str, Served], tmp_path: Path
) -> None:
    base, served = server
    served.files["/sc.tar.gz"] = ARCHIVE
    root = tmp_path / "sc"
    work = tmp_path / "sc.download"
    work.mkdir()
    half = len(ARCHIVE) // 2
    (work / "sc.tar.gz.part").write_bytes(ARCHIVE[:half])
    download_archive(f"{base}/sc.tar.gz", root, SHA, _check_layout)
    assert served.requests == [("/sc.tar.gz", f"bytes={half}-")]
    assert served.bytes_sent == len(ARCHIVE) - half
    assert (root / "testing_list.txt").is_file() and not work.exists()


def test_connection_cut_off_is_resumed(server: tuple[str, Served], tmp_path: Path) -> None:
    """A transfer that breaks off mid-way is resumed from where it stopped."""
    base, served = server
    served.files["/sc.tar.gz"] = ARCHIVE
    served.cut_after["/sc.tar.gz"] = 1000
    download_archive(f"{base}/sc.tar.gz", tmp_path / "sc", SHA, _check_layout)
    assert served.requests == [("/sc.tar.gz", None), ("/sc.tar.gz", "bytes=1000-")]
    assert served.bytes_sent == len(ARCHIVE)


def test_corrupt_archive_fails_its_checksum(server: tuple[str, Served], tmp_path: Path) -> None:
    """A corrupt file never reaches data.root: one line naming the URL, the folder and both
    digests; the file is removed, so the next run downloads it again."""
    base, served = server
    bad = bytearray(ARCHIVE)
    bad[len(bad) // 2] ^= 0xFF
    served.files["/sc.tar.gz"] = bytes(bad)
    root = tmp_path / "sc"
    with pytest.raises(DownloadError) as info:
        _dm(root, f"{base}/sc.tar.gz")
    msg = str(info.value)
    assert f"{base}/sc.tar.gz" in msg and str(root) in msg and SHA in msg and "\n" not in msg
    assert not root.exists() and not list((tmp_path / "sc.download").iterdir())
    served.files["/sc.tar.gz"] = ARCHIVE  # the server fixed: the next run succeeds
    assert _dm(root, f"{base}/sc.tar.gz").class_names == WORDS


def test_truncated_archive_is_refused(server: tuple[str, Served], tmp_path: Path) -> None:
    """A truncated archive whose checksum was given for it (a bad mirror) does not extract:
    refused, nothing left in data.root."""
    base, served = server
    short = ARCHIVE[: len(ARCHIVE) * 2 // 3]
    served.files["/short.tar.gz"] = short
    root = tmp_path / "sc"
    with pytest.raises(DownloadError, match="does not hold the dataset"):
        download_archive(
            f"{base}/short.tar.gz", root, hashlib.sha256(short).hexdigest(), _check_layout
        )
    assert not root.exists() and not list(tmp_path.glob("sc.extract-*"))


def test_transfer_that_keeps_breaking_off_fails_and_keeps_its_bytes(
    server: tuple[str, Served], tmp_path: Path
) -> None:
    base, served = server
    served.files["/sc.tar.gz"] = ARCHIVE
    served.cut_after["/sc.tar.gz"] = 500
    root = tmp_path / "sc"
    with pytest.raises(DownloadError, match=r"closed after 500 of \d+ bytes") as info:
        download_archive(f"{base}/sc.tar.gz", root, SHA, _check_layout, attempts=1)
    assert "next run resumes" in str(info.value)
    assert (tmp_path / "sc.download" / "sc.tar.gz.part").stat().st_size == 500
    download_archive(f"{base}/sc.tar.gz", root, SHA, _check_layout)  # resumes
    assert served.requests[-1] == ("/sc.tar.gz", "bytes=500-")


def test_missing_url_is_one_line(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    root = tmp_path / "sc"
    with pytest.raises(DownloadError) as info:
        _dm(root, f"{base}/nope.tar.gz")
    msg = str(info.value)
    assert f"could not download {base}/nope.tar.gz into {root}" in msg and "404" in msg
    assert len(served.requests) == 1  # a 404 is not retried


def test_two_processes_download_once(server: tuple[str, Served], tmp_path: Path) -> None:
    """Two downloads of one root at once (DDP ranks, two jobs): the lock lets one fetch it,
    the other waits and finds it."""
    base, served = server
    served.files["/sc.tar.gz"] = ARCHIVE
    root = tmp_path / "sc"
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            download_archive(f"{base}/sc.tar.gz", root, SHA, _check_layout)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(served.requests) == 1 and (root / "yes").is_dir()


def test_custom_url_needs_its_checksum(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs its sha256"):
        AudioDataModule(
            source="speech_commands",
            root=str(tmp_path / "sc"),
            download=True,
            source_options={"url": "http://127.0.0.1:9/x.tar.gz"},
        )
