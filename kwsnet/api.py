"""kwsnet's Python API: one line to load a trained model, one to predict, one to export.

    import kwsnet

    model = kwsnet.load("runs/kws_raw/checkpoints/last.ckpt")
    probs = model(wave, sample_rate=44100)        # [B, C] class probabilities
    model.classify(wave, 44100)                   # [("word1", 0.97)]: top-1 per clip
    kwsnet.export(model, "model.kwsn")            # the C runtime's model file

Training is the command line's (``kwsnet fit --config ...``). ``load`` rebuilds the model from
the checkpoint alone: a checkpoint the CLI wrote saves its model config as hyperparameters
(``ClassifierModule.load_from_checkpoint``); an older one is rebuilt from the config stored in
it (``kwsnet.loading.build_from_config``). Both are read with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from kwsnet.lit import ClassifierModule

__all__ = ["KeywordModel", "export", "load"]

# Data sources whose model reads precomputed features, not audio.
_FEATURE_SOURCES = ("mel_features",)

Waveform = torch.Tensor | np.ndarray


class KeywordModel(nn.Module):
    """A trained classifier that takes audio at any sample rate; always in eval mode.

    ``model(waveform, sample_rate)`` (or ``predict``) returns the class probabilities
    ``[B, C]`` of ``waveform``: a 1-D ``[T]`` clip or a ``[B, T]`` batch (a float tensor or
    numpy array; integer PCM is scaled to [-1, 1)), resampled to the model's rate and
    cropped or zero-padded (centred) to its clip length, as ``kwsnet predict`` reads files.

    Args:
        classifier: the trained ``ClassifierModule``.
        sample_rate: the rate the model was trained at (``data.sample_rate``).
        clip_samples: the clip length it was trained on (``data.clip_samples``; ``None``:
            clips keep their length).
        ckpt_path: the checkpoint it was loaded from (``export`` with ``dtype="int8"``
            rebuilds the training data from its config to calibrate).
    """

    def __init__(
        self,
        classifier: ClassifierModule,
        sample_rate: int,
        clip_samples: int | None,
        ckpt_path: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
        self.classifier = classifier
        self.sample_rate = sample_rate
        self.clip_samples = clip_samples
        self.ckpt_path = ckpt_path
        self.class_names: list[str] = list(classifier.class_names)
        self.eval()

    @property
    def num_classes(self) -> int:
        """How many classes the model tells apart (``len(class_names)``)."""
        return len(self.class_names)

    def train(self, mode: bool = True) -> KeywordModel:
        """Stays in eval mode (dropout off, norms on their running statistics): a
        ``KeywordModel`` only predicts; train ``model.classifier`` through the CLI."""
        return super().train(False)

    def prepare(self, waveform: Waveform, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's input for ``waveform``: ``(audio [B, T], lengths [B])`` at the model's
        rate and clip length, on its device and in its dtype.

        Raises:
            TypeError: not a tensor or array of numbers.
            ValueError: not 1-D or 2-D, empty, non-finite samples, or a bad ``sample_rate``.
        """
        from kwsnet.data.audio import fit_length, resample

        wave = _as_float_tensor(waveform)
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(f"waveform must be [T] or [B, T], got shape {tuple(wave.shape)}")
        if wave.shape[1] == 0:
            raise ValueError("waveform is empty (0 samples)")
        if not torch.isfinite(wave).all():
            raise ValueError("waveform holds NaN or infinite samples")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
            raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
        if int(sample_rate) != self.sample_rate:
            wave = resample(wave, int(sample_rate), self.sample_rate)
        if self.clip_samples:  # centred crop / zero pad along time, as `kwsnet predict`
            wave = fit_length(wave.T, int(self.clip_samples), random_crop=False).T
        param = next(self.classifier.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        audio = wave.to(device=device, dtype=dtype).contiguous()
        lengths = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.long, device=device)
        return audio, lengths

    @torch.no_grad()
    def forward(self, waveform: Waveform, sample_rate: int) -> torch.Tensor:
        """Class probabilities ``[B, C]`` (float32, rows sum to 1) of ``waveform`` ``[T]`` or
        ``[B, T]`` recorded at ``sample_rate`` Hz; column ``c`` is ``class_names[c]``."""
        audio, lengths = self.prepare(waveform, sample_rate)
        return self.classifier(audio, lengths).float().softmax(dim=-1)

    def predict(self, waveform: Waveform, sample_rate: int) -> torch.Tensor:
        """``self(waveform, sample_rate)``: class probabilities ``[B, C]``."""
        return self(waveform, sample_rate)

    def classify(self, waveform: Waveform, sample_rate: int) -> list[tuple[str, float]]:
        """The most probable class of each clip: ``[(name, probability)]``, one per clip
        (a 1-D waveform is one clip)."""
        conf, idx = self(waveform, sample_rate).max(dim=-1)
        return [(self.class_names[int(i)], float(p)) for i, p in zip(idx, conf, strict=True)]

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, clip_samples={self.clip_samples}, "
            f"class_names={self.class_names}"
        )


def load(
    ckpt_path: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> KeywordModel:
    """The trained model in ``ckpt_path`` (a checkpoint ``kwsnet fit`` wrote), in eval mode.

    The model, its class names, sample rate and clip length come from the checkpoint alone:
    no dataset and no config file are needed. The file is read with ``weights_only=True``.

    Args:
        ckpt_path: the ``.ckpt`` file.
        config: a YAML config to build the model from instead of the checkpoint's own (needed
            only for a checkpoint that holds neither saved hparams nor a stored config).
        device: where the model runs (default ``"cpu"``); inputs are moved there.

    Raises:
        CheckpointNotFoundError: (a ``FileNotFoundError``) no such file.
        ConfigError: (a ``ValueError``) not a readable checkpoint, weights that do not fit
            its config, or a model of precomputed features (``data.source: mel_features``).
    """
    from kwsnet.data.sources import short_name
    from kwsnet.errors import ConfigError
    from kwsnet.loading import read_checkpoint

    path = os.fspath(ckpt_path)
    ckpt = read_checkpoint(path)
    data = _stored_data_config(ckpt)
    if config is None and _has_cli_hparams(ckpt):
        from kwsnet.lit import ClassifierModule

        classifier = ClassifierModule.load_from_checkpoint(
            path, map_location="cpu", weights_only=True, compile=False
        )
        source = short_name(data.get("source", _data_default("source")))
        rate = data.get("sample_rate", _data_default("sample_rate"))
        clip = data.get("clip_samples", _data_default("clip_samples"))
    else:  # a checkpoint from before saved hparams: rebuilt from its stored config
        from kwsnet.loading import build_from_config

        cfg = None if config is None else os.fspath(config)
        with _kept_rng_state():  # the CLI seeds the global generators
            classifier, dm = build_from_config(cfg, path, ["--model.compile", "false"])
        source = short_name(dm.source_name)
        rate, clip = dm.source_args.sample_rate, dm.clip_samples
    if source in _FEATURE_SOURCES:
        raise ConfigError(
            f"{path}: the model reads precomputed features (data.source: {source}), not audio; "
            "use kwsnet.lit.ClassifierModule.load_from_checkpoint for it"
        )
    model = KeywordModel(
        classifier.eval(), int(rate), None if clip is None else int(clip), ckpt_path=path
    )
    return model.to(device)


def export(
    model: KeywordModel | str | os.PathLike,
    path: str | os.PathLike,
    format: str = "cnative",
    dtype: str = "float32",
    calibration: int = 512,
    percentile: float | None = None,
    prefix: str = "kwsn_model",
) -> int:
    """Write ``model`` (a ``KeywordModel`` or a checkpoint path) for deployment; returns the
    bytes written. What ``kwsnet export`` does (``kwsnet.export.pipeline``).

    Args:
        model: ``kwsnet.load(...)``'s model, or the checkpoint to load.
        path: the output file (``.kwsn``, ``.h`` or ``.onnx``).
        format: ``"cnative"`` (the C runtime's model file), ``"c-header"`` (weights as C
            arrays) or ``"onnx"``.
        dtype: ``"float32"`` or ``"int8"`` (post-training quantisation; cnative or c-header
            only), calibrated on ``calibration`` training clips (the training data of the
            checkpoint's config must be readable), with activation ranges the
            ``[100-percentile, percentile]`` percentiles (``None``: 99.99,
            ``kwsnet.quant.ptq.DEFAULT_PERCENTILE``; ``100``: min/max).
        prefix: the C symbol prefix of a ``c-header``.

    Raises:
        ExportError: (a ``ValueError``) an unknown format or dtype, int8 as ONNX, or a
            layer the format cannot express.
    """
    from kwsnet.export.layers import ExportError
    from kwsnet.export.pipeline import DTYPES, FORMATS, INT8_FORMATS, export_int8_model
    from kwsnet.export.pipeline import export_model as _export_model

    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; valid formats: {FORMATS}")
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; valid dtypes: {DTYPES}")
    if dtype == "int8" and format not in INT8_FORMATS:
        raise ExportError(f"dtype int8 writes {' or '.join(INT8_FORMATS)}, not {format!r}")
    out = Path(path)
    km = model if isinstance(model, KeywordModel) else load(model)
    if dtype == "int8":
        if km.ckpt_path is None:
            raise ExportError("dtype int8 calibrates on the training data: export a checkpoint")
        from kwsnet.loading import build_from_config

        with _kept_rng_state():
            _, dm = build_from_config(None, km.ckpt_path, ["--model.compile", "false"])
        classifier = _on_cpu(km.classifier)
        return export_int8_model(classifier, dm, format, out, calibration, percentile, prefix)
    classifier = _on_cpu(km.classifier)
    return _export_model(classifier, format, out, km.sample_rate, prefix, km.clip_samples)


def _on_cpu(module: nn.Module) -> nn.Module:
    """``module`` if it is on the CPU, else a copy there (the caller's stays where it is)."""
    if all(t.device.type == "cpu" for t in [*module.parameters(), *module.buffers()]):
        return module
    import copy

    return copy.deepcopy(module).cpu()


def _has_cli_hparams(ckpt: dict[str, Any]) -> bool:
    """Whether ``ckpt`` saves the model config the CLI built it from (the hparams with
    Lightning's instantiator), so ``load_from_checkpoint`` can rebuild it."""
    hparams = ckpt.get("hyper_parameters")
    return isinstance(hparams, dict) and isinstance(hparams.get("_instantiator"), str)


def _stored_data_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` section of the config stored in ``ckpt`` (``{}`` if none)."""
    import yaml

    text = ckpt.get("kwsnet", {}).get("config") if isinstance(ckpt.get("kwsnet"), dict) else None
    if not text:
        return {}
    try:
        data = (yaml.safe_load(text) or {}).get("data")
    except (yaml.YAMLError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


def _data_default(name: str) -> Any:
    """``AudioDataModule``'s default of the argument ``name``."""
    import inspect

    from kwsnet.data.datamodule import AudioDataModule

    return inspect.signature(AudioDataModule).parameters[name].default


def _as_float_tensor(waveform: Waveform) -> torch.Tensor:
    """``waveform`` as a float32 tensor (integer PCM scaled to [-1, 1))."""
    if isinstance(waveform, np.ndarray):
        if waveform.dtype.kind in "iu":
            info = np.iinfo(waveform.dtype)
            mid = (int(info.max) + int(info.min) + 1) / 2  # 0, or 128 for uint8
            scaled = (waveform.astype(np.float64) - mid) / (int(info.max) + 1 - mid)
            return torch.from_numpy(scaled.astype(np.float32))
        if waveform.dtype.kind != "f":
            raise TypeError(f"waveform must hold real numbers, got a {waveform.dtype} array")
        return torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    if isinstance(waveform, torch.Tensor):
        if waveform.is_floating_point():
            return waveform.detach().float()
        if waveform.is_complex() or waveform.dtype == torch.bool:
            raise TypeError(f"waveform must hold real numbers, got a {waveform.dtype} tensor")
        return _as_float_tensor(waveform.detach().cpu().numpy())  # integer PCM
    raise TypeError(f"waveform must be a torch.Tensor or numpy array, got {type(waveform)}")


@contextlib.contextmanager
def _kept_rng_state() -> Iterator[None]:
    """Restore the global torch, numpy and ``random`` generators afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
