"""Export: layer collection and its errors, the C header (compiled with a tiny main, no file
system or malloc), ONNX via onnxruntime, and the ``kwsnet export`` / ``parity`` commands."""

from __future__ import annotations

import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.export import ExportError, collect_layers, collect_named_layers
from kwsnet.export.layers import input_shape_of
from kwsnet.export.parity import LOGIT_RTOL, ParityReport, compare_predictions, run_parity
from kwsnet.export.pipeline import FORMATS, export_model
from kwsnet.export.runtime import CNATIVE_DIR, CModel, build_cnative
from kwsnet.models.raw_conv import RawConv
from kwsnet.nn.heads import LinearHead

from .cnative_helpers import compile_mcu, run_mcu

ROOT = CNATIVE_DIR.parent


class _Classifier(nn.Module):
    """ClassifierModule-shaped stand-in: frontend, backbone, head."""

    def __init__(self, placement: str = "per_conv", samples: int = 1024, norm: str = "layer"):
        super().__init__()
        self.frontend = nn.Identity()
        self.backbone = RawConv(
            input_samples=samples, channels=(4, 8, 8), norm_placement=placement, norm=norm
        )
        self.head = LinearHead(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def test_collect_layers_walks_backbone_then_head() -> None:
    named = collect_named_layers(_Classifier())
    kinds = [type(m).__name__ for _, m in named]
    assert kinds[:5] == ["AvgPool1d", "Conv1d", "LayerNorm", "ReLU", "MaxPool1d"]
    assert kinds[-3:] == ["AdaptiveAvgPool1d", "Flatten", "Linear"]
    assert named[0][0] == "backbone.layers.0" and named[-1][0] == "head.fc"
    assert len(collect_layers(_Classifier("end"))) == 14
    assert input_shape_of(_Classifier()) == (1, 1024)


def test_identity_norm_is_dropped_not_exported() -> None:
    kinds = [type(m).__name__ for m in collect_layers(_Classifier("per_conv", norm="none"))]
    assert "Identity" not in kinds and "LayerNorm" not in kinds


def test_unsupported_layer_is_named_with_its_path() -> None:
    model = _Classifier()
    model.backbone.layers[3] = nn.GELU()
    with pytest.raises(ExportError, match=r"GELU at 'backbone\.layers\.3'"):
        collect_layers(model)
    seq = nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.Sequential(nn.BatchNorm1d(2)))
    with pytest.raises(ExportError, match=r"BatchNorm1d at '1\.0'"):
        collect_layers(seq)


def test_unsupported_head_frontend_and_settings() -> None:
    model = _Classifier()
    model.head.scale = nn.Parameter(torch.ones(1))
    with pytest.raises(ExportError, match="unsupported head LinearHead"):
        collect_layers(model)
    model = _Classifier()
    model.frontend = nn.Conv1d(1, 1, 1)
    with pytest.raises(ExportError, match="unsupported frontend Conv1d"):
        collect_layers(model)
    for layer, shape in [
        (nn.Conv1d(1, 2, 3, stride=2, padding=1), (1, 20)),
        (nn.Conv1d(1, 2, 4, padding=2), (1, 20)),
        (nn.MaxPool1d(2, padding=1), (1, 20)),
        (nn.AdaptiveAvgPool1d(2), (1, 20)),
    ]:
        with pytest.raises(ExportError, match=type(layer).__name__):
            export_model_seq(nn.Sequential(layer), shape)
    with pytest.raises(ExportError, match="cannot export"):
        collect_layers(nn.ReLU())


def export_model_seq(seq: nn.Sequential, shape: tuple[int, ...]) -> bytes:
    """Serialise a Sequential (the layer checks run here)."""
    from kwsnet.export.cnative import model_bytes

    return model_bytes(collect_named_layers(seq), shape)


@pytest.mark.kernel_path
def test_export_model_formats(tmp_path: Path) -> None:
    model = _Classifier().eval()
    for fmt in FORMATS:
        if fmt == "onnx":
            pytest.importorskip("onnx")
        assert export_model(model, fmt, tmp_path / f"m.{fmt}") > 0
    with pytest.raises(ExportError, match="unknown format"):
        export_model(model, "tflite", tmp_path / "m.tflite")


@pytest.mark.kernel_path
@pytest.mark.parametrize("placement", ["per_conv", "end"])
def test_c_header_compiles_and_matches_file_model(tmp_path: Path, placement: str) -> None:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to compile the generated header")
    build_cnative("all")
    torch.manual_seed(0)
    model = _Classifier(placement).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
    export_model(model, "c-header", tmp_path / "model.h")
    export_model(model, "cnative", tmp_path / "model.kwsn")
    # only the runtime core (no front end here): kwsn_file.c (malloc + stdio loader) is
    # deliberately left out; KWSN_NO_VECTOR_EXT compiles the plain C loops an MCU gets, which
    # must give the same bits as the vector kernels the library picked for this CPU; the main
    # prints kwsn_argmax's class before the logits
    cflags = ("-std=c99", "-O2", "-Wall", "-Werror", "-DKWSN_NO_VECTOR_EXT", "-DMCU_PRINT_ARGMAX")
    exe = compile_mcu(tmp_path, frontend=False, cflags=cflags)
    x = (torch.randn(12, 1024) * 0.5).numpy().astype("<f4")
    rows = run_mcu(exe, x, timeout=30)
    with CModel(tmp_path / "model.kwsn") as cm:
        ref = cm.forward(x)
    assert [int(r[0]) for r in rows] == ref.argmax(1).tolist()
    np.testing.assert_array_equal(np.array([r[1:] for r in rows], np.float32), ref)


@pytest.mark.kernel_path
def test_onnx_matches_pytorch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = _Classifier("per_conv").eval()
    export_model(model, "onnx", tmp_path / "m.onnx")
    x = torch.randn(7, 1024)
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"audio": x.numpy()})
    # onnxruntime's kernels are not PyTorch's: logits within a tolerance scaled to their size,
    # the argmax identical unless PyTorch's top-2 margin is within float rounding
    np.testing.assert_allclose(out, ref, rtol=LOGIT_RTOL, atol=LOGIT_RTOL * max(1, abs(ref).max()))
    same, near_tie, _ = compare_predictions(ref, out)
    assert (same | near_tie).all()


@pytest.mark.kernel_path
def test_export_and_parity_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The real config through kwsnet.cli.build_from_config (untrained weights, 1 batch)."""
    # the config and kwsnet.cli are part of the code under test: missing or broken, this fails
    config = ROOT / "configs" / "kws_raw.yaml"
    from kwsnet.cli import (
        build_from_config,  # noqa: F401
        console,
        main,
    )

    def export_main(argv: list[str]) -> int:
        return main(["export", *argv])

    def parity_main(argv: list[str]) -> int:
        return main(["parity", *argv])

    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed for parity")

    out = tmp_path / "m.kwsn"
    assert export_main(["--config", str(config), "--format", "cnative", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"KWSN"
    rc = parity_main(["--config", str(config), "--per_layer", "--max_batches", "1"])
    text = capsys.readouterr().out
    # Untrained weights: near-tied logits are likely, and a near-tie flip is no failure (the
    # gate's rule is tested in test_parity_gate_near_ties); a real mismatch fails rc.
    assert rc == 0, text
    assert "predictions identical" in text and "MISMATCHED" not in text
    assert "max |Δlogit|" in text and "top-2 margin" in text and "layer 15" in text
    assert console(["export", "--config", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
    assert "missing.yaml: no such file" in capsys.readouterr().err


def _write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    """Mono 16-bit PCM."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def test_export_records_the_configured_sample_rate(tmp_path: Path) -> None:
    """``--data.sample_rate 8000`` reaches the .kwsn header and the C header, and
    ``kwsnet-infer`` takes an 8 kHz clip of the model's length (and refuses a 16 kHz one)."""
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to build kwsnet-infer")
    from kwsnet.cli import main

    def export_main(argv: list[str]) -> int:
        return main(["export", *argv])

    config = str(ROOT / "configs" / "kws_raw.yaml")
    # 16000 samples at 8 kHz: a 2 s clip, the length the config's RawConv takes
    rate = ["--data.sample_rate", "8000"]
    out, header = tmp_path / "m.kwsn", tmp_path / "m.h"
    assert export_main(["--config", config, "--out", str(out), *rate]) == 0
    assert (
        export_main(["--config", config, "--format", "c-header", "--out", str(header), *rate]) == 0
    )
    magic, _, sample_rate, _, _, n_samples = struct.unpack_from("<4s5I", out.read_bytes())
    assert (magic, sample_rate, n_samples) == (b"KWSN", 8000, 16000)
    assert "#define KWSN_MODEL_SAMPLE_RATE 8000u" in header.read_text()
    build_cnative("all")
    x = 0.3 * np.sin(np.arange(16000) * 0.05)
    _write_wav(tmp_path / "8k.wav", x, 8000)
    _write_wav(tmp_path / "16k.wav", x, 16000)
    exe = CNATIVE_DIR / "build" / "kwsnet-infer"
    proc = subprocess.run([exe, out, tmp_path / "8k.wav"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith(str(tmp_path / "8k.wav")) for line in proc.stdout.splitlines())
    proc = subprocess.run([exe, out, tmp_path / "16k.wav"], capture_output=True, text=True)
    assert proc.returncode == 1 and "sample rate" in proc.stderr


def test_sample_rate_is_never_a_silent_default() -> None:
    from kwsnet.data.datamodule import AudioDataModule
    from kwsnet.export.pipeline import sample_rate_of

    assert sample_rate_of(AudioDataModule(sample_rate=8000)) == 8000
    with pytest.raises(ExportError, match="sample rate"):
        sample_rate_of(object())


class _FixedLogits:
    """CModel stand-in for run_parity: returns given logits."""

    arena_bytes = weight_bytes = 0

    def __init__(self, logits: np.ndarray) -> None:
        self.logits, self.n_classes = logits, logits.shape[1]

    def forward(self, audio: np.ndarray) -> np.ndarray:
        return self.logits


@pytest.mark.kernel_path
def test_parity_gate_near_ties() -> None:
    """A flip is excused only as a near-tie: PyTorch's top-2 margin <= 2 * tol and every
    |Δlogit| <= tol, tol = LOGIT_RTOL * max(1, max |logit|); anything else fails the gate."""
    ref = np.array([[5.0, 5.0 + 8e-5, 0.0], [1.0, 2.0, 3.0], [5.0, 5.0 + 8e-5, 0.0]])
    tol = LOGIT_RTOL * 5.00008  # rows 0 and 2: 5e-5, the pair 8e-5 apart
    out = ref.copy()
    out[0, 0] += 0.9 * tol  # row 0 flips within tolerance: a near-tie
    out[0, 1] -= 0.9 * tol
    same, near_tie, margin = compare_predictions(ref, out)
    assert same.tolist() == [False, True, True] and near_tie.tolist() == [True, False, False]
    assert margin[1] == pytest.approx(1.0)
    out[2, 0] += 3 * tol  # a flip with a logit off by more than tol: a mismatch
    out[1] = [3.0, 2.0, 1.0]  # a flip with a clear margin: a mismatch
    same, near_tie, _ = compare_predictions(ref, out)
    assert not (same | near_tie)[1:].any()

    model = nn.Sequential(nn.Flatten())  # "logits" = the input rows
    x = torch.tensor(ref, dtype=torch.float32)
    out = ref.astype(np.float32)
    out[0, :2] = out[0, 1::-1]  # swap the tied pair: |Δ| = 8e-5 > tol, not excusable
    rep = run_parity(model, [x], _FixedLogits(out))
    assert (rep.n, rep.n_same, rep.n_near_tie, rep.n_mismatch, rep.ok) == (3, 2, 0, 1, False)
    assert "1 MISMATCHED" in rep.lines()[0]
    out = ref.astype(np.float32)
    out[0, :2] += np.float32(0.9 * tol) * np.array([1, -1], np.float32)  # the near-tie above
    rep = run_parity(model, [x], _FixedLogits(out))
    assert (rep.n_same, rep.n_near_tie, rep.ok) == (2, 1, True)
    assert rep.lines()[0] == "2/3 predictions identical, 1 near-tie flips (not failures)"
    assert rep.max_ref == pytest.approx(5.00008) and rep.min_margin == pytest.approx(8e-5, 1e-2)
    assert not ParityReport().ok  # no clips: no verdict
