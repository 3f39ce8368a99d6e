"""The Python API (``kwsnet.load``, ``KeywordModel``, ``kwsnet.export``) and
``ClassifierModule.load_from_checkpoint`` on the session's trained raw-conv run
(conftest ``trained_raw_run``: kws_raw.yaml on the learnable synthetic corpus, 0.25 s clips).
"""

from __future__ import annotations

import ast
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

import kwsnet
from kwsnet.data.datamodule import checkpoint_class_names
from kwsnet.export.layers import ExportError
from kwsnet.lit import ClassifierModule
from kwsnet.loading import build_from_config

from .conftest import LEARNABLE_SAMPLES, REPO, learnable_cli_args

README_CKPT = "runs/kws_raw/checkpoints/last.ckpt"


@pytest.fixture(scope="module")
def ckpt(trained_raw_run: Path) -> Path:
    return trained_raw_run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def old_ckpt(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same checkpoint as one written before the model saved its hparams."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    del state["hyper_parameters"], state["hparams_name"]
    path = tmp_path_factory.mktemp("old_ckpt") / "old.ckpt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def rebuilt(ckpt: Path) -> tuple[Any, Any]:
    """``(model, datamodule)`` rebuilt by the CLI's loader from the stored config."""
    return build_from_config(None, str(ckpt))


@pytest.fixture(scope="module")
def test_batch(rebuilt: tuple[Any, Any]) -> dict[str, Any]:
    _, dm = rebuilt
    dm.setup("test")
    return next(iter(dm.test_dataloader()))


def _readme_block() -> str:
    """The first ```python block of README.md's "Python API" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "README's Python API section has no python block"
    return found.group(1)


def _plain(value: Any) -> bool:
    """Whether ``value`` is plain data (what a YAML file can hold)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def test_readme_example_runs(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _readme_block()
    assert README_CKPT in code and "kwsnet.load(" in code and "kwsnet.export(" in code
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code.replace(README_CKPT, str(ckpt)), "README.md", "exec"), namespace)
    probs = namespace["probs"]
    assert probs.shape == (1, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1))
    for name in ("model.kwsn", "model.onnx", "model_int8.kwsn"):
        assert (tmp_path / name).stat().st_size > 1000, name


def test_load_from_checkpoint_equals_the_cli_rebuild(
    ckpt: Path, rebuilt: tuple[Any, Any], test_batch: dict[str, Any]
) -> None:
    cli_model, _ = rebuilt
    model = ClassifierModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    model.eval()
    assert type(model.backbone) is type(cli_model.backbone)
    assert model.class_names == cli_model.class_names
    with torch.no_grad():
        ours = model(test_batch["audio"], test_batch["lengths"])
        theirs = cli_model(test_batch["audio"], test_batch["lengths"])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    acc = (ours.argmax(-1) == test_batch["label"]).float().mean()
    assert acc >= 0.75  # the trained weights (chance: 0.33)


def test_saved_hparams_are_the_config_small_and_weights_only_safe(ckpt: Path) -> None:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    hparams = state["hyper_parameters"]
    assert hparams["_instantiator"] == "lightning.pytorch.cli.instantiate_module"
    assert hparams["backbone"]["class_path"].endswith("raw_conv.RawConv")
    assert hparams["backbone"]["init_args"]["input_samples"] == LEARNABLE_SAMPLES
    assert hparams["num_classes"] == 3 and len(hparams["class_names"]) == 3
    assert _plain(hparams), "hparams must be plain data (no objects: weights_only loading)"
    assert len(repr(hparams)) < 4000


def test_module_built_in_python_saves_no_objects() -> None:
    from kwsnet.lit import OBJECT_ARGS

    from .conftest import small_conformer

    model = ClassifierModule(small_conformer(), num_classes=3, label_smoothing=0.1)
    assert not set(OBJECT_ARGS) & set(model.hparams)
    assert model.hparams["label_smoothing"] == 0.1 and _plain(dict(model.hparams))


def test_cli_model_overrides_win_over_the_checkpoint(ckpt: Path, tmp_path: Path) -> None:
    """``--ckpt_path`` gives the weights; the config (here a command-line override) still
    decides the model, as before the checkpoint saved hparams."""
    from kwsnet.cli import KwsCLI

    seen: dict[str, Any] = {}

    class Probe(KwsCLI):
        def _run_subcommand(self, subcommand: str) -> None:
            seen["label_smoothing"] = self.model.label_smoothing

    Probe(
        args=[
            "validate",
            *learnable_cli_args(tmp_path, epochs=1),
            "--trainer.logger",
            "false",
            "--ckpt_path",
            str(ckpt),
            "--model.label_smoothing",
            "0.3",
        ]
    )
    assert seen["label_smoothing"] == 0.3


def test_old_checkpoint_loads_as_before(ckpt: Path, old_ckpt: Path) -> None:
    """A checkpoint without hparams (written before they were saved) is rebuilt from its
    stored config, by ``build_from_config`` and by ``kwsnet.load``, to the same model."""
    model, dm = build_from_config(None, str(old_ckpt))
    assert model.class_names == dm.class_names == checkpoint_class_names(ckpt)
    new, old = kwsnet.load(ckpt), kwsnet.load(old_ckpt)
    assert (old.sample_rate, old.clip_samples) == (new.sample_rate, new.clip_samples)
    assert old.class_names == new.class_names
    wave = torch.randn(2, LEARNABLE_SAMPLES) * 0.1
    torch.testing.assert_close(old(wave, 16000), new(wave, 16000), rtol=0, atol=0)
    # the config's seed_everything does not move the caller's generators
    _seed(7)
    kwsnet.load(old_ckpt)
    after_load = _draw()
    _seed(7)
    assert _draw() == after_load


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _draw() -> tuple[float, float, float]:
    return float(torch.rand(())), float(np.random.rand()), random.random()


def test_keyword_model_reads_the_checkpoint(ckpt: Path, test_batch: dict[str, Any]) -> None:
    model = kwsnet.load(ckpt)
    assert isinstance(model, torch.nn.Module) and not model.training
    model.train()
    assert not model.training and not model.classifier.training
    assert model.class_names == checkpoint_class_names(ckpt) == ["word0", "word1", "word2"]
    assert model.num_classes == 3
    assert (model.sample_rate, model.clip_samples) == (16000, LEARNABLE_SAMPLES)
    audio = test_batch["audio"]
    probs = model(audio, 16000)
    assert probs.shape == (len(audio), 3) and not probs.requires_grad
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(audio)))
    # a 1-D clip is a batch of one; numpy and tensors agree; predict is __call__
    one = model.predict(audio[0].numpy(), 16000)
    torch.testing.assert_close(one, probs[:1], rtol=1e-5, atol=1e-6)
    top = model.classify(audio, 16000)
    assert [name for name, _ in top] == [model.class_names[i] for i in probs.argmax(-1)]
    best = probs.max(-1).values.tolist()
    assert all(abs(p - q) < 1e-6 for (_, p), q in zip(top, best, strict=True))
    # longer and shorter clips are centre-cropped / zero-padded to the clip length
    padded = torch.nn.functional.pad(audio[:1], (300, 300))
    torch.testing.assert_close(model(padded, 16000), probs[:1], rtol=1e-5, atol=1e-6)
    short = audio[:1, 1000:3000]
    centred = torch.nn.functional.pad(short, (1000, 1000))
    torch.testing.assert_close(model(short, 16000), model(centred, 16000))
    # 16-bit PCM is scaled to [-1, 1)
    pcm = (audio[:1].clamp(-1, 1) * 32767).round().numpy().astype(np.int16)
    torch.testing.assert_close(model(pcm, 16000), probs[:1], rtol=0, atol=2e-3)


def test_any_sample_rate_gives_the_same_prediction(ckpt: Path, test_batch: dict[str, Any]) -> None:
    """The test clips, resampled to 44.1 kHz and given with that rate, are resampled back:
    the same top class, probabilities within a tolerance scaled to the resampling error."""
    model = kwsnet.load(ckpt)
    audio = test_batch["audio"][:8]
    at_16k = model(audio, 16000)
    hi = AF.resample(audio, 16000, 44100)
    at_44k = model(hi, sample_rate=44100)
    assert torch.equal(at_44k.argmax(-1), at_16k.argmax(-1))
    # the round trip 16k -> 44.1k -> 16k is not exact (the filters' edges): the tolerance
    # is a few times that error in the input, relative to the input's level
    back = AF.resample(hi, 44100, 16000)[:, : audio.shape[1]]
    rel = float((back - audio).norm() / audio.norm())
    assert rel < 0.05
    torch.testing.assert_close(at_44k, at_16k, rtol=0, atol=max(0.02, 4 * rel))
    # one clip at 8 kHz too (its content above 4 kHz is gone: the top class only)
    lo = AF.resample(audio, 16000, 8000)
    assert model(lo, 8000).shape == at_16k.shape


def test_bad_inputs_are_named(ckpt: Path) -> None:
    model = kwsnet.load(ckpt)
    with pytest.raises(ValueError, match=r"\[T\] or \[B, T\]"):
        model(torch.zeros(1, 2, 100), 16000)
    with pytest.raises(ValueError, match="empty"):
        model(np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="NaN"):
        model(torch.tensor([0.0, float("nan")]), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        model(torch.zeros(100), 0)
    with pytest.raises(TypeError, match="waveform"):
        model("clip.wav", 16000)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kwsnet.load(ckpt.parent / "missing.ckpt")


def test_export_api_checks_format_and_dtype(ckpt: Path, tmp_path: Path) -> None:
    model = kwsnet.load(ckpt)
    with pytest.raises(ExportError, match="unknown format"):
        kwsnet.export(model, tmp_path / "m", format="tflite")
    with pytest.raises(ExportError, match="int8 writes"):
        kwsnet.export(model, tmp_path / "m.onnx", format="onnx", dtype="int8")
    with pytest.raises(ExportError, match="unknown dtype"):
        kwsnet.export(model, tmp_path / "m.kwsn", dtype="float16")


def test_exported_file_loads_in_the_c_runtime(
    ckpt: Path, test_batch: dict[str, Any], tmp_path: Path
) -> None:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to build the C runtime")
    from kwsnet.export.runtime import CModel

    model = kwsnet.load(ckpt)
    path = tmp_path / "model.kwsn"
    assert kwsnet.export(str(ckpt), path) == path.stat().st_size  # from the checkpoint path
    audio, lengths = model.prepare(test_batch["audio"][:8], 16000)
    with torch.no_grad():
        logits = model.classifier(audio, lengths)
    with CModel(path) as cm:
        c_logits = torch.from_numpy(np.asarray(cm.forward(audio.numpy()), dtype=np.float32))
    scale = float(logits.abs().max())
    torch.testing.assert_close(c_logits, logits, rtol=0, atol=1e-4 * max(1.0, scale))
    int8 = tmp_path / "model_int8.kwsn"
    kwsnet.export(model, int8, dtype="int8", calibration=32)
    with CModel(int8) as cm:
        assert cm.is_int8
        agree = torch.from_numpy(cm.forward(audio.numpy())).argmax(-1) == logits.argmax(-1)
    assert float(agree.float().mean()) >= 0.75


def test_import_is_light_and_loading_never_imports_the_cli(ckpt: Path, old_ckpt: Path) -> None:
    for module in ("loading.py", "config_cli.py", "api.py", "lit.py"):
        tree = ast.parse((REPO / "kwsnet" / module).read_text())
        imported = {
            n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names
        }
        assert "kwsnet.cli" not in imported, module
    code = (
        "import sys, kwsnet\n"
        "assert 'torch' not in sys.modules, 'import kwsnet imported torch'\n"
        f"kwsnet.load({str(ckpt)!r}); kwsnet.load({str(old_ckpt)!r})\n"
        "import kwsnet.export.runtime\n"
        "assert callable(kwsnet.export), 'kwsnet.export is no longer callable'\n"
        "assert 'kwsnet.cli' not in sys.modules, 'loading imported kwsnet.cli'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
