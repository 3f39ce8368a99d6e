"""``kwsnet prepare``: compute log-mel features once and write the ``mel_features`` format.

Reads every item of a source (any ``data.source``), runs a ``LogMel`` front end on each
utterance alone (no padding), and writes ``<out>/uttr-NNNNNNN.pt`` tensors ``[frames, n_mels]``
plus ``mapping.json``, ``metadata.json`` (the source's train and val items) and
``testdata.json`` (its test items, labelled with ``speaker``), so ``MelFeatureSource`` reads
them back with its own seeded train/val split and the source's test split. ``metadata.json``
also records the front-end settings under ``"frontend"``.

    kwsnet prepare --source voxceleb1 --root data/vox1 --out data/vox1_mel \\
        --source-option max_speakers=600
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from kwsnet.data.features import LogMel
from kwsnet.data.record import DataFormatError, Source, SourceArgs

__all__ = ["prepare_mel_features", "prepare_main"]


def prepare_mel_features(
    source: Source,
    out_dir: str | Path,
    n_mels: int = 40,
    n_fft: int = 400,
    win_length: int = 400,
    hop_length: int = 160,
    f_min: float = 0.0,
    f_max: float | None = None,
    eps: float = 1e-6,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write ``source``'s speaker-labelled items to ``out_dir`` in the ``mel_features`` format.

    Args:
        source: any source whose items carry speaker labels; audio is read at its
            ``args.sample_rate``. Items of kind ``features`` are copied as they are.
        out_dir: output directory (created).
        n_mels, n_fft, win_length, hop_length, f_min, f_max, eps: the ``LogMel`` settings
            (defaults 40, 400, 400, 160, 0.0, None, 1e-6: 25 ms windows, 10 ms hop at 16 kHz).
        overwrite: write into a directory that already has ``metadata.json`` (default False).

    Returns:
        Utterance counts per split written (``{"train": …, "val": …, "test": …}``).
    """
    out = Path(out_dir)
    if (out / "metadata.json").exists() and not overwrite:
        raise FileExistsError(f"{out}/metadata.json exists; pass overwrite=True (--overwrite)")
    if not source.speaker_names:
        raise DataFormatError(f"source {source.name!r} has no speaker labels to prepare")
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(
        sample_rate=source.args.sample_rate, n_fft=n_fft, win_length=win_length,
        hop_length=hop_length, n_mels=n_mels, f_min=f_min, f_max=f_max, eps=eps,
    )  # fmt: skip
    frontend = LogMel(**settings).eval()
    speakers: dict[str, list[dict[str, Any]]] = {name: [] for name in source.speaker_names}
    test: list[dict[str, Any]] = []
    counts = {"train": 0, "val": 0, "test": 0}
    index = 0
    for split in ("train", "val", "test"):
        for item in source.items(split):
            if item.speaker < 0:
                raise DataFormatError(f"{item.path}: no speaker label; cannot prepare it")
            signal = source.load(item)
            if item.kind == "features":
                feats = signal.float()
            else:
                with torch.no_grad():
                    length = torch.tensor([signal.shape[0]])
                    feats = frontend(signal[None].float(), length)[0][0]
            if feats.shape[-1] != n_mels:
                raise DataFormatError(f"{item.path}: {feats.shape[-1]} features, want {n_mels}")
            name = f"uttr-{index:07d}.pt"
            index += 1
            torch.save(feats.contiguous().clone(), out / name)
            speaker = source.speaker_names[item.speaker]
            entry = {"feature_path": name, "mel_len": int(feats.shape[0]), "source_path": item.path}
            if split == "test":
                test.append({**entry, "speaker": speaker})
            else:
                speakers[speaker].append(entry)
            counts[split] += 1
    mapping = {
        "speaker2id": {name: i for i, name in enumerate(source.speaker_names)},
        "id2speaker": {str(i): name for i, name in enumerate(source.speaker_names)},
    }
    speakers = {spk: utts for spk, utts in speakers.items() if utts}
    metadata = {"n_mels": n_mels, "speakers": speakers, "frontend": settings}
    (out / "mapping.json").write_text(json.dumps(mapping, indent=1))
    (out / "testdata.json").write_text(json.dumps({"n_mels": n_mels, "utterances": test}))
    (out / "metadata.json").write_text(json.dumps(metadata))
    return counts


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def prepare_main(argv: Sequence[str] | None = None) -> int:
    """``kwsnet prepare`` entry point; returns the exit status (0 ok, 2 on a data error)."""
    from kwsnet.data.sources import SOURCES, build_source

    parser = argparse.ArgumentParser(
        prog="kwsnet prepare",
        description="Compute log-mel features once and write the mel_features format.",
    )
    parser.add_argument("--source", required=True, choices=sorted(SOURCES), help="data format")
    parser.add_argument("--root", required=True, help="dataset root of the source")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--sample-rate", type=int, default=16000, help="default 16000")
    parser.add_argument("--n-mels", type=int, default=40, help="default 40")
    parser.add_argument("--n-fft", type=int, default=400, help="default 400")
    parser.add_argument("--win-length", type=int, default=400, help="default 400")
    parser.add_argument("--hop-length", type=int, default=160, help="default 160")
    parser.add_argument("--f-min", type=float, default=0.0, help="default 0")
    parser.add_argument("--f-max", type=float, default=None, help="default sample_rate / 2")
    parser.add_argument("--split-seed", type=int, default=1234, help="default 1234")
    parser.add_argument(
        "--source-option", type=_parse_option, action="append", default=[], metavar="KEY=VALUE",
        help="a source_options entry (repeatable), e.g. max_speakers=600",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    try:
        source = build_source(
            args.source,
            SourceArgs(
                root=args.root,
                sample_rate=args.sample_rate,
                split_seed=args.split_seed,
                options=dict(args.source_option),
            ),
        )
        counts = prepare_mel_features(
            source, args.out, n_mels=args.n_mels, n_fft=args.n_fft, win_length=args.win_length,
            hop_length=args.hop_length, f_min=args.f_min, f_max=args.f_max,
            overwrite=args.overwrite,
        )  # fmt: skip
    except (DataFormatError, FileExistsError, ValueError) as exc:
        print(f"kwsnet prepare: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {counts} utterances to {args.out}")
    return 0
