"""The dataset formats by name (``data.source``), and the unlabelled files of ``predict``."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import torch

from kwsnet.data.audio import AUDIO_EXTENSIONS
from kwsnet.data.record import DataFormatError, Item, Source, SourceArgs
from kwsnet.errors import ConfigError

__all__ = ["SOURCES", "PredictSource", "build_source"]

# name → "module:Class"; imported on use so one broken format never blocks the others.
SOURCES: dict[str, str] = {
    "synthetic": "kwsnet.data.synthetic:SyntheticSource",
    "speech_commands": "kwsnet.data.speech_commands:SpeechCommandsSource",
    "folder": "kwsnet.data.folder:FolderSource",
    "voxceleb1": "kwsnet.data.voxceleb1:VoxCeleb1Source",
    "mel_features": "kwsnet.data.mel_features:MelFeatureSource",
}


def build_source(name: str, args: SourceArgs) -> Source:
    """Instantiate the source called ``name``; an unknown name lists the valid ones."""
    if name not in SOURCES:
        raise ConfigError(f"unknown data.source {name!r}; valid sources: {sorted(SOURCES)}")
    module, cls = SOURCES[name].split(":")
    return getattr(importlib.import_module(module), cls)(args)


class PredictSource(Source):
    """Unlabelled audio files for ``predict``.

    Args:
        args: the source arguments (``sample_rate`` is used).
        files: audio files, and folders searched recursively for them.
    """

    name = "predict"

    def __init__(self, args: SourceArgs, files: Sequence[str]) -> None:
        super().__init__(args)
        paths: list[str] = []
        for f in files:
            p = Path(f)
            if p.is_dir():
                paths += [
                    str(x) for x in sorted(p.rglob("*")) if x.suffix.lower() in AUDIO_EXTENSIONS
                ]
            elif p.is_file():
                paths.append(str(p))
            else:
                raise DataFormatError(f"data.predict_files: {f} does not exist")
        if not paths:
            raise DataFormatError(f"data.predict_files {list(files)} holds no audio files")
        self._items = {"predict": [Item(p) for p in paths]}

    def load(self, item: Item) -> torch.Tensor:
        """The file's waveform at the model's sample rate."""
        from kwsnet.data.audio import read_audio

        return read_audio(item.path, self.args.sample_rate)
