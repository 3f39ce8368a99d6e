"""Google Speech Commands v0.01/v0.02 folder layout (``data.source: speech_commands``).

Layout: ``<root>/<word>/<speaker>_nohash_<n>.wav``, ``validation_list.txt`` and
``testing_list.txt`` (relative paths; everything else is training), and
``_background_noise_/*.wav``. ``words`` picks the keyword classes. Speakers come from the
file-name prefix before ``_nohash_``.

The tasks as the field defines them (TensorFlow's ``speech_commands/input_data.py``,
``prepare_data_index``; ``docs/speech_commands.md``), per split:

* ``include_unknown`` adds ``_unknown_``: ``ceil(K * unknown_percentage / 100)`` clips of the
  split's *other* (non-target) words, where ``K`` is the split's number of keyword clips
  (``unknown_percentage`` 10 by default). The draw is deterministic and independent of every
  seed of the run (training seed and ``split_seed``): the clips with the smallest SHA-1 of
  ``"59185/<word>/<file>"`` (TF's ``RANDOM_SEED`` as a salt; TF itself shuffles with
  ``random.seed(59185)``, which this does not reproduce clip for clip). Adding clips to a split
  changes the pick only where the new clips rank below the chosen ones.
* ``include_silence`` adds ``_silence_``: ``ceil(K * silence_percentage / 100)`` one-second clips
  of zeros (TF loads a clip and multiplies it by 0); training mixes background noise into them
  like into any clip (``kwsnet.data.augment.BackgroundNoise``, which gives a silent clip noise
  at the noise file's own level times a drawn volume).

So ``words`` = the 10 command words with both flags is the 12-class task (``sc12``); all 35
words without either flag the 35-word task (``sc35``). ``TASKS`` names them.

The definition before issue 28 stays reachable through ``source_options``:
``unknown_mode: all`` makes *every* other-word clip ``_unknown_`` (no sampling; about 64% of
v0.02), ``silence_mode: noise`` makes ``_silence_`` one-second segments of the
``_background_noise_`` files at a random gain, and ``silence_fraction: 0.1`` sizes it as 10% of
the split's clips (unknowns included). Which noise file, segment and gain a ``noise`` silence
clip gets depends on ``split_seed``, its split and its index only, so every process (and DDP
rank) sees the same.

Detection training (issue 30): ``source_options.negatives_dir: [DIR, ...]`` adds non-keyword
audio of any length (e.g. LibriSpeech utterances) to the *training* split's ``_unknown_`` class,
cut into one-clip windows (``kwsnet.data.negatives``: the training part of its speaker folders;
the held-out part is for validation streams). It needs ``include_unknown``.

``python -m kwsnet.data.speech_commands ROOT --task sc12`` prints the class counts per split.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import warnings
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kwsnet.data.audio import AUDIO_EXTENSIONS, read_audio
from kwsnet.data.record import SPLITS, DataFormatError, Item, Source, SourceArgs

__all__ = [
    "SpeechCommandsSource",
    "URLS",
    "TASKS",
    "COMMAND_WORDS",
    "ALL_WORDS",
    "UNKNOWN_DRAW_SEED",
    "class_counts",
]

URLS = {
    "v0.01": "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
    "v0.02": "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
}
# SHA-256 of the official archives (the values torchaudio's SPEECHCOMMANDS checks)
CHECKSUMS = {
    URLS["v0.01"]: "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    URLS["v0.02"]: "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
}
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
_NOISE_DIR = "_background_noise_"
# TF's RANDOM_SEED in speech_commands/input_data.py; a salt of the unknown draw, never a run seed.
UNKNOWN_DRAW_SEED = 59185
UNKNOWN_MODES = ("sampled", "all")
SILENCE_MODES = ("zeros", "noise")

# The 10 command words of the 12-class task, and the 35 words of v0.02 (v0.01 has the first 30).
COMMAND_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
ALL_WORDS = [
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
    "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one",
    "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow",
    "yes", "zero",
]  # fmt: skip
# name -> (words, include_unknown, include_silence); configs/kws_<name>_ds_cnn.yaml.
TASKS: dict[str, tuple[list[str], bool, bool]] = {
    "sc12": (COMMAND_WORDS, True, True),
    "sc10": (COMMAND_WORDS, False, False),
    "sc35": (ALL_WORDS, False, False),
}


def _check_layout(folder: Path) -> None:
    """Raise ``DataFormatError`` unless ``folder`` has the Speech Commands layout."""
    missing = [n for n in ("validation_list.txt", "testing_list.txt") if not (folder / n).is_file()]
    words = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_")]
    if missing or not words:
        raise DataFormatError(
            f"not the Speech Commands layout: {'no word folders' if not words else ''}"
            f"{' and ' if missing and not words else ''}"
            f"{'missing ' + ', '.join(missing) if missing else ''}"
        )


def _download(root: Path, version: str, url: str | None, sha256: str | None) -> None:
    """Fetch Speech Commands ``version`` (or the archive at ``url``, a mirror, with its
    ``sha256``) into ``root`` (``kwsnet.data.download``: resumable, checksummed, atomic)."""
    from kwsnet.data.download import download_archive

    if url is None:
        url = URLS[version]
        sha256 = sha256 or CHECKSUMS[url]
    download_archive(url, root, sha256, check=_check_layout)


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


def _percentage(opts: dict[str, Any], key: str) -> float:
    value = float(opts.pop(key, 10.0))
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"speech_commands source_options.{key} must be >= 0, got {value}")
    return value


def _choice(opts: dict[str, Any], key: str, valid: tuple[str, ...]) -> str:
    value = str(opts.pop(key, valid[0]))
    if value not in valid:
        raise ValueError(
            f"speech_commands source_options.{key} must be one of {valid}, got {value!r}"
        )
    return value


def _draw_key(rel: str) -> str:
    """Rank of a candidate unknown clip: SHA-1 of ``"<UNKNOWN_DRAW_SEED>/<word>/<file>"``."""
    return hashlib.sha1(f"{UNKNOWN_DRAW_SEED}/{rel}".encode()).hexdigest()


class SpeechCommandsSource(Source):
    """Speech Commands as a ``Source``; splits from the official lists, never from a seed.

    ``source_options``: ``version`` (``v0.02``; for ``download``), ``url`` and ``sha256`` (a
    mirror of the archive for ``download``, with its checksum, which a mirror must give),
    ``unknown_mode``
    (``sampled`` | ``all``), ``unknown_percentage`` (10), ``silence_mode`` (``zeros`` |
    ``noise``), ``silence_percentage`` (10), ``silence_fraction`` (the old sizing; unset),
    ``negatives_dir`` (folders of non-keyword audio for the training split's ``_unknown_``).
    """

    name = "speech_commands"
    OPTIONS = (
        "version",
        "url",
        "sha256",
        "unknown_mode",
        "unknown_percentage",
        "silence_mode",
        "silence_percentage",
        "silence_fraction",
        "negatives_dir",
    )

    @staticmethod
    def _download_options(opts: dict) -> tuple[str, str | None, str | None]:
        """Pop ``version``, ``url`` and ``sha256`` from ``opts`` and check them."""
        version = str(opts.pop("version", "v0.02"))
        if version not in URLS:
            raise ValueError(
                f"speech_commands source_options.version must be one of {list(URLS)}, "
                f"got {version!r}"
            )
        url, sha256 = opts.pop("url", None), opts.pop("sha256", None)
        if url is not None and sha256 is None:
            raise ValueError(
                f"speech_commands source_options.url {url!r} needs its sha256: a download "
                "is only used once its checksum matches"
            )
        return version, url, sha256

    @classmethod
    def prepare(cls, args: SourceArgs) -> None:
        """With ``data.download``: fetch the dataset into ``data.root`` when it is not there
        (once: other processes wait on the download's lock, then find it)."""
        if not args.download or args.root is None or Path(args.root).exists():
            return
        version, url, sha256 = cls._download_options(dict(args.options))
        _download(Path(args.root), version, url, sha256)

    def __init__(self, args: SourceArgs) -> None:
        super().__init__(args)
        opts = dict(args.options)
        version, url, sha256 = self._download_options(opts)
        self.unknown_mode = _choice(opts, "unknown_mode", UNKNOWN_MODES)
        if self.unknown_mode == "all" and "unknown_percentage" in opts:
            raise ValueError(
                "speech_commands source_options: unknown_percentage sizes the sampled "
                "_unknown_ class; with unknown_mode: all every other-word clip is _unknown_"
            )
        self.unknown_percentage = _percentage(opts, "unknown_percentage")
        self.silence_mode = _choice(opts, "silence_mode", SILENCE_MODES)
        if "silence_fraction" in opts and "silence_percentage" in opts:
            raise ValueError(
                "speech_commands source_options: give silence_percentage (percent of the "
                "split's keyword clips) or silence_fraction (the old sizing), not both"
            )
        raw_fraction = opts.pop("silence_fraction", None)
        self.silence_fraction = None if raw_fraction is None else float(raw_fraction)
        if self.silence_fraction is not None and not 0 <= self.silence_fraction:
            raise ValueError(f"silence_fraction must be >= 0, got {self.silence_fraction}")
        self.silence_percentage = _percentage(opts, "silence_percentage")
        negatives = opts.pop("negatives_dir", None) or []
        if isinstance(negatives, str):
            negatives = [negatives]
        self.negatives_dir = [str(d) for d in negatives]
        if self.negatives_dir and not args.include_unknown:
            raise ValueError(
                "speech_commands source_options.negatives_dir adds _unknown_ training clips; "
                "it needs data.include_unknown: true"
            )
        if opts:
            raise ValueError(
                f"unknown speech_commands source_options {sorted(opts)}; valid: "
                f"{', '.join(self.OPTIONS)}"
            )
        if args.root is None:
            raise DataFormatError("data.root must point at a Speech Commands folder")
        root = Path(args.root)
        if not root.exists() and args.download:
            _download(root, version, url, sha256)
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
        # split -> (relative path, label, speaker); keyword clips, then other-word clips
        keyword: dict[str, list[tuple[str, int, str]]] = {s: [] for s in SPLITS}
        other: dict[str, list[tuple[str, int, str]]] = {s: [] for s in SPLITS}
        unknown_label = self.keyword_names.index(UNKNOWN) if args.include_unknown else -1
        for folder in folders:
            if folder not in index and not args.include_unknown:
                continue
            for wav in sorted((root / folder).glob("*.wav")):
                rel = f"{folder}/{wav.name}"
                split = "val" if rel in val else "test" if rel in test else "train"
                speaker = wav.name.split("_nohash_")[0] if "_nohash_" in wav.name else ""
                if folder in index:
                    keyword[split].append((rel, index[folder], speaker))
                else:
                    other[split].append((rel, unknown_label, speaker))
        files: dict[str, list[tuple[str, int, str]]] = {}
        self.keyword_counts = {s: len(keyword[s]) for s in SPLITS}
        short = []
        for split in SPLITS:
            unknown = other[split]
            if args.include_unknown and self.unknown_mode == "sampled":
                n = math.ceil(len(keyword[split]) * self.unknown_percentage / 100)
                if n > len(unknown):
                    short.append(f"{split} {len(unknown)} of {n}")
                unknown = sorted(unknown, key=lambda f: _draw_key(f[0]))[:n]
            # folder order, as the word folders are read (unknown_mode: all keeps the old order)
            files[split] = sorted(keyword[split] + unknown, key=lambda f: f[0].split("/", 1))
        if short:
            warnings.warn(
                f"{root}: fewer other-word clips than unknown_percentage "
                f"{self.unknown_percentage:g}% of the keyword clips asks for ({', '.join(short)});"
                " _unknown_ takes all there are",
                stacklevel=2,
            )
        self.speaker_names = sorted({spk for fs in files.values() for _, _, spk in fs if spk})
        spk_index = {s: i for i, s in enumerate(self.speaker_names)}
        self._items = {
            split: [Item(str(root / rel), lab, spk_index.get(spk, -1)) for rel, lab, spk in fs]
            for split, fs in files.items()
        }
        if args.include_silence:
            self._add_silence(root)
        if self.negatives_dir:
            self._add_negatives()

    def _add_negatives(self) -> None:
        """The training part of ``negatives_dir`` as ``_unknown_`` windows of one clip."""
        import soundfile as sf

        from kwsnet.data.negatives import negative_files, windows

        label = self.keyword_names.index(UNKNOWN)
        clip = self.args.sample_rate  # Speech Commands clips are one second
        for path in negative_files(self.negatives_dir, "train"):
            try:
                info = sf.info(str(path))
            except RuntimeError as e:
                raise DataFormatError(f"{path}: not a readable audio file ({e})") from e
            n = int(info.frames * self.args.sample_rate // max(1, info.samplerate))
            for start in windows(n, clip):
                self._items["train"].append(
                    Item(str(path), label, -1, "audio", ("window", start, clip))
                )

    def _silence_count(self, split: str) -> int:
        if self.silence_fraction is not None:  # the old sizing: a fraction of all the clips
            return max(1, round(len(self._items[split]) * self.silence_fraction))
        return math.ceil(self.keyword_counts[split] * self.silence_percentage / 100)

    def _add_silence(self, root: Path) -> None:
        label = self.keyword_names.index(SILENCE)
        if self.silence_mode == "zeros":
            for split, items in self._items.items():
                for i in range(self._silence_count(split)):
                    items.append(Item(f"silence://{split}/{i}", label, -1, "audio", ("silence",)))
            return
        noise = sorted((root / _NOISE_DIR).glob("*.wav"))
        if not noise:
            raise DataFormatError(
                f"silence_mode: noise needs {root / _NOISE_DIR}/*.wav, which holds no files"
            )
        rng = np.random.default_rng(self.args.split_seed)
        for split, items in self._items.items():
            for i in range(self._silence_count(split)):
                src = str(noise[int(rng.integers(len(noise)))])
                items.append(Item(src, label, -1, "audio", ("silence", split, i)))

    def noise_dir(self) -> str | None:
        """``<root>/_background_noise_`` when it holds audio files (the official archive's
        recordings of dishes, a running tap, an exercise bike, ... and white/pink noise)."""
        folder = Path(str(self.args.root)) / _NOISE_DIR
        if folder.is_dir() and any(
            f.suffix.lower() in AUDIO_EXTENSIONS for f in folder.iterdir() if f.is_file()
        ):
            return str(folder)
        return None

    def load(self, item: Item) -> torch.Tensor:
        if item.extra == ("silence",):  # TF's silence: a clip of zeros (its volume is 0)
            return torch.zeros(self.args.sample_rate)
        if item.extra and item.extra[0] == "window":  # a window of a long negative file
            _, start, n = item.extra
            wave = _read_negative(item.path, self.args.sample_rate)[start : start + n].clone()
            if wave.shape[0] < n:
                wave = torch.nn.functional.pad(wave, (0, n - wave.shape[0]))
            return wave
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


@functools.lru_cache(maxsize=8)
def _read_negative(path: str, sample_rate: int) -> torch.Tensor:
    """A long negative file, decoded once for all its one-clip windows (they are loaded one
    after another: a 12 s LibriSpeech utterance is 12 items). Callers slice and clone."""
    return read_audio(path, sample_rate)


def class_counts(source: Source) -> dict[str, dict[str, int]]:
    """``{split: {class name: clips}}`` of a keyword source, classes in label order."""
    out = {}
    for split in SPLITS:
        c = Counter(item.keyword for item in source.items(split))
        out[split] = {name: c.get(i, 0) for i, name in enumerate(source.keyword_names)}
    return out


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    """``class_counts`` as a Markdown table: a row per class, a column per split, totals."""
    splits = list(counts)
    names = list(counts[splits[0]])
    lines = ["| class | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    for name in names:
        lines.append(f"| `{name}` | " + " | ".join(str(counts[s][name]) for s in splits) + " |")
    totals = " | ".join(str(sum(counts[s].values())) for s in splits)
    lines.append(f"| total | {totals} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the per-split class counts of a Speech Commands task on a dataset folder."""
    parser = argparse.ArgumentParser(
        prog="python -m kwsnet.data.speech_commands", description=main.__doc__
    )
    parser.add_argument("root", help="a Speech Commands folder")
    parser.add_argument("--task", choices=sorted(TASKS), default="sc12")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a source_options entry (repeatable), e.g. unknown_mode=all",
    )
    ns = parser.parse_args(argv)
    words, unknown, silence = TASKS[ns.task]
    options = dict(o.split("=", 1) for o in ns.option)
    args = SourceArgs(
        root=ns.root,
        words=list(words),
        include_unknown=unknown,
        include_silence=silence,
        options=options,
    )
    print(format_counts(class_counts(SpeechCommandsSource(args))))


if __name__ == "__main__":
    main()
