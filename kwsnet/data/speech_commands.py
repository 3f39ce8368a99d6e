"""Google Speech Commands v0.01/v0.02 folder layout (``data.source: speech_commands``).

Layout: ``<root>/<word>/<speaker>_nohash_<n>.wav``, ``validation_list.txt`` and
``testing_list.txt`` (relative paths; everything else is training), and
``_background_noise_/*.wav``. ``words`` picks the keyword classes; with
``include_unknown`` every other word folder becomes ``_unknown_`` and with
``include_silence`` a ``_silence_`` class of background-noise segments is added (the
standard 12-class setup: 10 words + unknown + silence). Speakers come from the file-name
prefix before ``_nohash_``. Which noise file, segment and gain a silence clip gets depends on
``split_seed``, its split and its index only, so every process (and DDP rank) sees the same.
"""

from __future__ import annotations

import os
import tarfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from kwsnet.data.audio import read_audio
from kwsnet.data.record import DataFormatError, Item, Source, SourceArgs

__all__ = ["SpeechCommandsSource", "URLS"]

URLS = {
    "v0.01": "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
    "v0.02": "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
}
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
_NOISE_DIR = "_background_noise_"


def _download(root: Path, version: str) -> None:
    url = URLS[version]
    root.mkdir(parents=True, exist_ok=True)
    archive = root / os.path.basename(url)
    try:
        urllib.request.urlretrieve(url, archive)  # noqa: S310 - the official archive URL
    except OSError as exc:
        raise DataFormatError(
            f"could not download Speech Commands {version} from {url} ({exc}); download it by "
            f"hand and extract it into {root}"
        ) from exc
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    archive.unlink()


def _read_list(path: Path, root: Path) -> set[str]:
    if not path.exists():
        raise DataFormatError(
            f"{path} is missing: the Speech Commands layout has validation_list.txt and "
            "testing_list.txt next to the word folders"
        )
    entries = set()
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        rel = line.strip()
        if not rel:
            continue
        if not (root / rel).is_file():
            raise DataFormatError(f"{path}:{lineno}: lists {rel!r}, which does not exist")
        entries.add(rel)
    return entries


class SpeechCommandsSource(Source):
    """Speech Commands as a ``Source``; splits from the official lists, never from a seed."""

    name = "speech_commands"

    def __init__(self, args: SourceArgs) -> None:
        super().__init__(args)
        opts = dict(args.options)
        version = str(opts.pop("version", "v0.02"))
        silence_fraction = float(opts.pop("silence_fraction", 0.1))
        if opts:
            raise ValueError(
                f"unknown speech_commands source_options {sorted(opts)}; valid: version, "
                "silence_fraction"
            )
        if args.root is None:
            raise DataFormatError("data.root must point at a Speech Commands folder")
        root = Path(args.root)
        if not root.exists() and args.download:
            _download(root, version)
        if not root.is_dir():
            raise DataFormatError(
                f"{root} does not exist; expected the Speech Commands layout "
                "(<word>/<speaker>_nohash_<n>.wav, validation_list.txt, testing_list.txt); "
                "set data.download: true to fetch it"
            )
        folders = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")
        )
        if not folders:
            raise DataFormatError(
                f"{root} holds no word folders; expected <word>/<speaker>_nohash_<n>.wav"
            )
        words = list(args.words) if args.words else folders
        missing = [w for w in words if w not in folders]
        if missing:
            raise DataFormatError(f"{root}: no folder for words {missing}; found {folders}")
        self.keyword_names = list(words)
        if args.include_unknown:
            self.keyword_names.append(UNKNOWN)
        if args.include_silence:
            self.keyword_names.append(SILENCE)
        val = _read_list(root / "validation_list.txt", root)
        test = _read_list(root / "testing_list.txt", root)
        index = {w: i for i, w in enumerate(words)}
        files: dict[str, list[tuple[str, int, str]]] = {s: [] for s in ("train", "val", "test")}
        for folder in folders:
            if folder in index:
                label = index[folder]
            elif args.include_unknown:
                label = self.keyword_names.index(UNKNOWN)
            else:
                continue
            for wav in sorted((root / folder).glob("*.wav")):
                rel = f"{folder}/{wav.name}"
                split = "val" if rel in val else "test" if rel in test else "train"
                speaker = wav.name.split("_nohash_")[0] if "_nohash_" in wav.name else ""
                files[split].append((str(wav), label, speaker))
        self.speaker_names = sorted({spk for fs in files.values() for _, _, spk in fs if spk})
        spk_index = {s: i for i, s in enumerate(self.speaker_names)}
        self._items = {
            split: [Item(p, lab, spk_index.get(spk, -1)) for p, lab, spk in fs]
            for split, fs in files.items()
        }
        if args.include_silence:
            self._add_silence(root, silence_fraction)

    def _add_silence(self, root: Path, fraction: float) -> None:
        noise = sorted((root / _NOISE_DIR).glob("*.wav"))
        if not noise:
            raise DataFormatError(
                f"include_silence needs {root / _NOISE_DIR}/*.wav, which holds no files"
            )
        label = self.keyword_names.index(SILENCE)
        rng = np.random.default_rng(self.args.split_seed)
        for split, items in self._items.items():
            n = max(1, round(len(items) * fraction))
            for i in range(n):
                src = str(noise[int(rng.integers(len(noise)))])
                items.append(Item(src, label, -1, "audio", ("silence", split, i)))

    def load(self, item: Item) -> torch.Tensor:
        wave = read_audio(item.path, self.args.sample_rate)
        if item.extra and item.extra[0] == "silence":
            # A reproducible 1 s segment of a long noise file, at a random gain. crc32, not
            # hash(): str hashes change with PYTHONHASHSEED, i.e. between processes and ranks.
            _, split, i = item.extra
            rng = np.random.default_rng([self.args.split_seed, zlib.crc32(split.encode()), i])
            n = self.args.sample_rate
            start = int(rng.integers(0, max(1, wave.shape[0] - n)))
            wave = wave[start : start + n] * float(rng.uniform(0.0, 1.0))
        return wave
