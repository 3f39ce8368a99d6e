"""The C runtime's Conv2d op and DS-CNN through it (issue 29): one Conv2d layer of every
geometry DS-CNN uses (and more) against torch, float and int8; a tiny DS-CNN and the real
DS-CNN-S shape traced from the MFCC front end, per layer against PyTorch (float) and code for
code against the integer reference on every kernel path (int8); the loader's refusal of a
corrupted Conv2d record; the C header compiled as an MCU build; a trained kws_ds_cnn checkpoint
through ``kwsnet export`` and ``kwsnet parity``.

Fixtures are generated in tmp dirs; the models are untrained (random BatchNorm statistics so
that folding matters) except the checkpoint test's, trained on the learnable synthetic corpus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.data.features import MFCC
from kwsnet.export import ExportError
from kwsnet.export.cnative import LAYER_TYPES, graph_bytes, write_graph
from kwsnet.export.graph import FlatConv2d, Graph, Node, trace_model
from kwsnet.export.runtime import CModel
from kwsnet.models.ds_cnn import DSCNN
from kwsnet.nn.heads import LinearHead
from kwsnet.quant.reference import run_int8_tensors

from .cnative_helpers import (
    assert_codes_on_every_path,
    assert_float_parity_per_layer,
    assert_int8_model_codes,
    assert_loader_refuses,
    assert_mcu_matches_file_model,
    assert_parity_and_export,
    build_runtime,
    clips,
    fit_learnable,
    patched,
    randomise_bn,
    records,
    write_int8,
    write_model_files,
)

CLIP = 16000  # kws_ds_cnn's clip: 49 MFCC frames
_CONV2D = LAYER_TYPES["Conv2d"]


@pytest.fixture(scope="module")
def cbuild() -> Path:
    return build_runtime()


class _DsCnnClassifier(nn.Module):
    """ClassifierModule-shaped (frontend, backbone, head): kws_ds_cnn's MFCC front end and a
    DS-CNN (``preset`` with optional ``channels`` / ``num_blocks`` overrides)."""

    def __init__(
        self, preset: str = "S", channels: int | None = None, num_blocks: int | None = None
    ) -> None:
        super().__init__()
        self.frontend = MFCC(n_mfcc=10, n_fft=640, win_length=640, hop_length=320, n_mels=40,
                             center=False, normalize="mean")  # fmt: skip
        self.backbone = DSCNN(10, preset, channels=channels, num_blocks=num_blocks)
        self.head = LinearHead(self.backbone.embed_dim, 5)

    def embed(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.backbone(*self.frontend(audio, lengths))


def _ds_cnn(preset: str, channels: int | None, num_blocks: int | None, seed: int = 0) -> nn.Module:
    """An eval-mode DS-CNN classifier with non-trivial BatchNorm statistics and affines."""
    torch.manual_seed(seed)
    model = _DsCnnClassifier(preset, channels, num_blocks)
    return randomise_bn(model, seed, nn.BatchNorm2d).eval()


# ------------------------------------------------------------------ one Conv2d layer

# (in, out, H, W, kernel (h, w), stride (h, w), pad (top, bottom, left, right), groups)
GEOMETRIES = [
    (1, 6, 10, 49, (4, 10), (2, 2), (1, 2, 4, 5), 1),  # DS-CNN-S stem, read as [H, W]
    (6, 6, 5, 25, (3, 3), (1, 1), (1, 1, 1, 1), 6),  # depthwise
    (6, 6, 10, 49, (3, 3), (2, 2), (1, 1, 1, 1), 6),  # depthwise, strided (DS-CNN-M)
    (6, 8, 5, 25, (1, 1), (1, 1), (0, 0, 0, 0), 1),  # pointwise: one row of H * W
    (4, 6, 7, 9, (2, 3), (3, 1), (0, 1, 2, 0), 2),  # grouped, asymmetric everything
    (3, 4, 6, 6, (1, 1), (2, 2), (0, 0, 0, 0), 1),  # strided 1x1
    (2, 3, 3, 70, (3, 5), (1, 3), (1, 1, 2, 2), 1),  # rows longer than a tile
]


@pytest.mark.kernel_path
@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: f"{g[0]}x{g[2]}x{g[3]}k{g[4]}s{g[5]}")
def test_conv2d_layer_float_and_int8(cbuild: Path, tmp_path: Path, geo: tuple) -> None:
    """One Conv2d record: float within a tolerance scaled to the outputs; int8 codes equal to
    the integer reference on every kernel path."""
    ci, co, h, w, k, s, pad, groups = geo
    torch.manual_seed(ci + co + h)
    conv = nn.Conv2d(ci, co, k, s, groups=groups).eval()
    flat = FlatConv2d(conv, pad, (h, w))
    g = Graph((h, w) if ci == 1 else (ci, h * w))
    g.add(Node("Conv2d", "conv", (0,), lambda xs: flat(xs[0]), flat))
    write_graph(g, tmp_path / "f.kwsn")
    x = torch.randn(5, *g.input_shape) * 2
    with torch.no_grad():
        padded = nn.functional.pad(x.reshape(5, ci, h, w), (pad[2], pad[3], pad[0], pad[1]))
        ref = conv(padded).reshape(5, -1).numpy()
    with CModel(tmp_path / "f.kwsn") as cm:
        assert cm.layer_names == ["Conv2d"]
        out = cm.forward(x.reshape(5, -1).numpy())
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * max(1.0, float(np.abs(ref).max())))

    q = write_int8(g, [x], tmp_path / "q.kwsn")
    ref = run_int8_tensors(q, x)
    # not saturated: the codes say something
    assert len(np.unique(ref[-1].numpy())) > 10  # type: ignore[union-attr]
    assert_codes_on_every_path(tmp_path / "q.kwsn", x, ref)


# ------------------------------------------------------------------ DS-CNN, traced


@pytest.mark.kernel_path
@pytest.mark.parametrize("shape", [("S", 8, 2), ("S", None, None), ("M", 12, 1)],
                         ids=["tiny", "S", "M-strides"])  # fmt: skip
def test_ds_cnn_float_parity_per_layer(cbuild: Path, tmp_path: Path, shape: tuple) -> None:
    """MFCC → Conv2d/ReLU pairs → mean → Linear: every layer against PyTorch's own modules
    (transposed to the runtime's [C, freq * time] planes), the logits against the model's."""
    model = _ds_cnn(*shape)
    graph = trace_model(model, CLIP)
    kinds = [n.kind for n in graph.nodes]
    n_conv = 1 + len(model.backbone.blocks)  # the stem and every depthwise / pointwise conv
    assert kinds[:3] == ["FrontEnd", "Conv2d", "ReLU"] and kinds.count("Conv2d") == n_conv
    assert kinds[-3:] == ["AdaptiveAvgPool1d", "Flatten", "Linear"]
    assert_float_parity_per_layer(model, graph, tmp_path / "m.kwsn", clips(8))


@pytest.mark.kernel_path
@pytest.mark.parametrize("shape", [("S", 8, 2), ("S", None, None)], ids=["tiny", "S"])
def test_ds_cnn_int8_codes_equal_reference(cbuild: Path, tmp_path: Path, shape: tuple) -> None:
    """int8 DS-CNN: every layer's codes (the logits' included) equal the integer reference's,
    on every kernel path; the front end is the one float island."""
    graph = trace_model(_ds_cnn(*shape, seed=1), CLIP)
    assert_int8_model_codes(graph, clips(12, seed=2), tmp_path / "q.kwsn", c_frontend_codes=False)


def test_unsupported_ds_cnn_parts_are_named_with_their_path() -> None:
    """Another pooling, or a block the tracer does not know: ExportError with the path and what
    it would take."""
    from kwsnet.nn.pooling import MaxPooling

    model = _DsCnnClassifier("S", 4, 1)
    model.backbone.pooling = MaxPooling(4)
    with pytest.raises(ExportError, match=r"MaxPooling at 'backbone.pooling'.*mean-over-freq"):
        trace_model(model.eval(), CLIP)
    model = _DsCnnClassifier("S", 4, 1)
    model.backbone.blocks[1] = nn.Identity()
    with pytest.raises(ExportError, match="Identity at 'backbone.blocks.1'"):
        trace_model(model.eval(), CLIP)
    model = _DsCnnClassifier("S", 4, 1)
    model.backbone.blocks[0].conv.dilation = (2, 2)
    with pytest.raises(ExportError, match=r"Conv2d at 'backbone.blocks.0.conv'.*dilation"):
        trace_model(model.eval(), CLIP)


# ------------------------------------------------------------------ the loader


def test_loader_names_the_refused_conv2d_check(cbuild: Path, tmp_path: Path) -> None:
    """A corrupted Conv2d record is refused at load with the layer, its type and the check
    (also under ASan/UBSan, where the valid file runs a forward pass)."""
    data = graph_bytes(trace_model(_ds_cnn("S", 4, 1), CLIP))
    conv = [r for r in records(data) if r.type == _CONV2D]
    assert len(conv) == 3 and conv[0].n_ints == 14 and conv[0].n_inputs == 1
    first = conv[0].ints_at  # layer 1, after the FrontEnd

    def _with_int(k: int, value: int) -> bytes:
        return patched(data, first + 4 * k, "<i", value)

    cases = {
        "groups": (_with_int(12, 3), "bad layer parameters: layer 1 (Conv2d): ci % g "
                   "!= 0 || co % g != 0"),
        "pad": (_with_int(9, -1), "bad layer parameters: layer 1 (Conv2d): pt < 0 || "
                "pb < 0 || pl < 0 || pr < 0"),
        "kernel": (_with_int(4, 0), "bad layer parameters: layer 1 (Conv2d): ci < 1"),
        "bias_flag": (_with_int(13, 0), "bad layer parameters: layer 1 (Conv2d): hb "
                      ">= 0 && l->desc.n_floats != nw"),
        "height": (_with_int(2, 11), "shapes do not chain: layer 1 (Conv2d)"),
        "stride": (_with_int(6, 1 << 20), "size exceeds runtime limits"),
    }  # fmt: skip
    assert_loader_refuses(cbuild, tmp_path, {"good": data}, cases)


# ------------------------------------------------------------------ the C header


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_c_header_ds_cnn_matches_file_model(cbuild: Path, tmp_path: Path, dtype: str) -> None:
    """The MCU path for DS-CNN (float and int8 headers): see assert_mcu_matches_file_model."""
    graph = trace_model(_ds_cnn("S", 8, 2, seed=3), CLIP)
    x = clips(4, seed=4)
    kwsn = write_model_files(graph, x, tmp_path, dtype)
    assert_mcu_matches_file_model(tmp_path, x.numpy().astype("<f4"), kwsn)


# ------------------------------------------------------------------ a trained checkpoint


@pytest.mark.kernel_path
def test_trained_ds_cnn_checkpoint_export_and_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """kws_ds_cnn.yaml (12 channels, 2 blocks) trained on the learnable synthetic corpus, then
    assert_parity_and_export: the per-layer table's front end first, then the stem's Conv2d."""
    ckpt = fit_learnable(tmp_path, "kws_ds_cnn.yaml", [
        "--model.backbone.init_args.channels", "12",
        "--model.backbone.init_args.num_blocks", "2",
        "--model.augment", "null"], epochs=6)  # fmt: skip
    assert_parity_and_export(
        ckpt, tmp_path, capsys, lambda rows: "FrontEnd" in rows[0] and "Conv2d" in rows[1]
    )
    assert "Conv2d" in (tmp_path / "m.h").read_text()
