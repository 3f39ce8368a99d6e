"""ONNX for any model (issue 29, item 3): every shipped keyword config, front end included,
through ``torch.onnx.export`` (``kwsnet.export.onnx_export.ClipNet``), checked against PyTorch
in onnxruntime with a dynamic batch axis; ``kwsnet parity --format onnx`` over a test split.

The models are untrained (the mechanics, not accuracy); the inputs are speech-like synthetic
clips from the built-in corpus, so the front ends see realistic levels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kwsnet.export.onnx_export import ONNX_RTOL, OnnxRuntimeModel
from kwsnet.export.parity import compare_predictions, logit_tolerance
from kwsnet.export.pipeline import export_model
from kwsnet.loading import build_from_config

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data.source_options", '{"num_words": 3, "num_speakers": 2, "utterances": 2}']
# every keyword config the README's table lists (speaker configs export the same way)
CONFIGS = [
    "kws_raw",
    "kws_ds_cnn",
    "kws_ds_cnn_m",
    "kws_mel_best",
    "kws_mel_aug",
    "kws_cnn_mel",
    "kws_bc_resnet",
    "kws_matchboxnet",
    "kws_ecapa",
    "kws_conformer",
]


def _clips(n: int, samples: int) -> torch.Tensor:
    """``n`` clips of ``samples``: a tone sweep with noise at speech-like levels."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(samples) / 16000
    f = torch.linspace(200, 3000, n)[:, None]
    return 0.1 * torch.sin(2 * torch.pi * f * t) + 0.02 * torch.randn(n, samples, generator=g)


@pytest.mark.kernel_path
@pytest.mark.parametrize("name", CONFIGS)
def test_every_keyword_config_exports_to_onnx(name: str, tmp_path: Path) -> None:
    """Front end + backbone + head as one graph; onnxruntime's logits match PyTorch's within a
    tolerance scaled to the logits, predictions identical (or near-ties), for batches of 1 and
    5 (the batch axis is dynamic)."""
    model, dm = build_from_config(str(ROOT / "configs" / f"{name}.yaml"), None, TINY)
    model.eval()
    clip = int(dm.clip_samples)
    out = tmp_path / f"{name}.onnx"
    assert export_model(model, "onnx", out, clip_samples=clip) == out.stat().st_size > 0
    x = _clips(5, clip)
    with torch.no_grad():
        ref = model(x, torch.full((5,), clip)).numpy()
    with OnnxRuntimeModel(out) as om:
        assert om.n_classes == ref.shape[1]
        for batch in (x[:1], x):
            got = om.forward(batch.numpy())
            want = ref[: len(batch)]
            assert got.shape == want.shape
            tol = logit_tolerance(want, ONNX_RTOL)
            assert (np.abs(got - want).max(axis=1) <= tol).all(), (name, np.abs(got - want).max())
            same, near_tie, _ = compare_predictions(want, got, ONNX_RTOL)
            assert (same | near_tie).all()


@pytest.mark.kernel_path
def test_parity_command_onnx_over_the_test_split(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``kwsnet parity --format onnx``: every test clip of the built-in corpus, N/N, with the
    runtime named; int8 or per-layer options are refused before anything loads."""
    from kwsnet.cli import console

    config = str(ROOT / "configs" / "kws_ds_cnn.yaml")
    argv = ["parity", "--config", config, "--format", "onnx", *TINY]
    assert console(argv) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    n = int(first.split("/")[1].split()[0])
    assert n > 0 and first.startswith(f"{n}/{n} predictions identical")
    assert "onnxruntime" in out
    assert console([*argv, "--dtype", "int8"]) == 2
    assert "--format onnx compares float logits only" in capsys.readouterr().err


def _readme_export_rows() -> list[tuple[list[str], dict[str, bool]]]:
    """The README's export table: (config names, target → exports?) per row."""
    text = (ROOT / "README.md").read_text()
    head = "| configs | C float (`.kwsn`) | C header | C int8 | ONNX |"
    assert head in text, "the README's export table is gone"
    lines = text[text.index(head) :].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = [n for n in cells[0].split("`")[1::2] if "*" not in n]
        marks = dict(zip(("cnative", "c-header", "int8", "onnx"), cells[1:], strict=True))
        assert set(marks.values()) <= {"✓", "✗"}, line
        rows.append((names, {k: v == "✓" for k, v in marks.items()}))
    return rows


@pytest.mark.parametrize("row", range(6))
def test_readme_export_table_is_true(row: int, tmp_path: Path) -> None:
    """Every config of a README row exports to each ✓ target and raises ExportError for each
    ✗ (untrained, tiny data: the mechanics)."""
    from kwsnet.export.layers import ExportError
    from kwsnet.export.pipeline import export_int8_model

    rows = _readme_export_rows()
    assert len(rows) == 6
    names, marks = rows[row]
    data = ["--data.source_options", '{"num_words": 3, "num_speakers": 4, "utterances": 5}']
    for name in names:
        model, dm = build_from_config(str(ROOT / "configs" / f"{name}.yaml"), None, data)
        model.eval()
        for target, ok in marks.items():
            out = tmp_path / f"{name}.{target}"
            try:
                if target == "int8":
                    export_int8_model(model, dm, "cnative", out, calibration=16)
                else:
                    export_model(model, target, out, clip_samples=dm.clip_samples)
            except ExportError as exc:
                assert not ok, f"{name} -> {target}: README says ✓, export says {exc}"
                continue
            assert ok, f"{name} -> {target}: README says ✗, but it exported"
            assert out.stat().st_size > 0
