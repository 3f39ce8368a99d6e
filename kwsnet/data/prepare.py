"""Compute log-mel features once and write the ``mel_features`` format (``kwsnet prepare``,
``kwsnet.commands.prepare``).

Reads every item of a source (any ``data.source``), runs a ``LogMel`` front end on each
utterance alone (no padding), and writes ``<out>/uttr-NNNNNNN.pt`` tensors ``[frames, n_mels]``
plus ``mapping.json``, ``metadata.json`` (the source's train and val items) and
``testdata.json`` (its test items, labelled with ``speaker``), so ``MelFeatureSource`` reads
them back with its own seeded train/val split and the source's test split. ``metadata.json``
also records the front-end settings under ``"frontend"``.

    kwsnet prepare --source voxceleb1 --root data/vox1 --out data/vox1_mel \\
        --source_options '{max_speakers: 600}'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kwsnet.data.features import LogMel
from kwsnet.data.record import DataFormatError, Source
from kwsnet.errors import OutputExistsError

__all__ = ["prepare_mel_features"]


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

    Raises:
        OutputExistsError: ``out_dir`` holds a prepared set and ``overwrite`` is False.
        DataFormatError: an item without a speaker label, features of another size.
    """
    out = Path(out_dir)
    if (out / "metadata.json").exists() and not overwrite:
        raise OutputExistsError(f"{out}/metadata.json exists; pass overwrite=True (--overwrite)")
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
