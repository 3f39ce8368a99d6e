"""BC-ResNet in the C runtime (issue 29): kws_bc_resnet's LogMel → BCResNet → mean pooling →
LinearHead, with its three new ops: RowAffine (SubSpectralNorm at inference), SiLU and
BroadcastAdd (the temporal branch added to every frequency row).

The new ops on their own (float against torch with a tolerance scaled to the values; int8 codes
equal to the integer reference on every kernel path); tiny BC-ResNets per layer against
PyTorch and code for code against the integer reference; the loader's refusal of corrupted
records; the C header compiled as an MCU build; a trained kws_bc_resnet checkpoint through
``kwsnet export`` and ``kwsnet parity``.

Fixtures are generated in tmp dirs; the models are untrained except the checkpoint test's,
trained on the learnable synthetic corpus.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.data.features import LogMel
from kwsnet.export import ExportError
from kwsnet.export.cnative import LAYER_TYPES, graph_bytes, write_graph
from kwsnet.export.graph import (
    BroadcastAdd,
    FlatConv2d,
    Graph,
    Node,
    sub_spectral_affine,
    trace_model,
)
from kwsnet.export.runtime import CModel
from kwsnet.models.bc_resnet import BCResNet, SubSpectralNorm
from kwsnet.nn.heads import LinearHead
from kwsnet.quant.format import quant_bytes
from kwsnet.quant.ptq import calibrate, quantize_graph
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
    with_crc,
    write_int8,
    write_model_files,
)

CLIP = 16000  # kws_bc_resnet's clip: 101 log-mel frames


@pytest.fixture(scope="module")
def cbuild() -> Path:
    return build_runtime()


class _BCRes(nn.Module):
    """ClassifierModule-shaped (frontend, backbone, head): kws_bc_resnet's LogMel (30 ms /
    10 ms, mean normalisation), a BCResNet and a LinearHead."""

    def __init__(
        self, tau: float = 1.0, n_mels: int = 40, sub_bands: int = 5, n_classes: int = 6
    ) -> None:
        super().__init__()
        self.frontend = LogMel(sample_rate=16000, n_fft=480, win_length=480, hop_length=160,
                               n_mels=n_mels, normalize="mean", spec_augment=None)  # fmt: skip
        self.backbone = BCResNet(n_mels, tau=tau, sub_bands=sub_bands)
        self.head = LinearHead(self.backbone.embed_dim, n_classes)

    def embed(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.backbone(*self.frontend(audio, lengths))


def _bc_resnet(seed: int = 0, **kwargs: object) -> nn.Module:
    """An eval-mode model whose BatchNorm statistics are those of a few clips (random ones
    leave an untrained BC-ResNet's logits nearly constant) and whose affines are random."""
    torch.manual_seed(seed)
    model = _BCRes(**kwargs)  # type: ignore[arg-type]
    randomise_bn(model, seed, nn.BatchNorm2d)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # the cumulative average over the batch below
    model.backbone.train()
    with torch.no_grad():
        x = clips(16, seed=seed + 100)
        model.backbone(*model.frontend(x, torch.full((len(x),), CLIP)))
    return model.eval()


# ------------------------------------------------------------------ the new ops alone


def test_sub_spectral_norm_is_a_row_affine() -> None:
    """SubSpectralNorm in eval mode is one affine per (channel, frequency row): the RowAffine
    of its BatchNorm, in float32 within rounding."""
    torch.manual_seed(0)
    ssn = SubSpectralNorm(3, sub_bands=4)
    randomise_bn(ssn, 1, nn.BatchNorm2d)
    ssn.eval()
    x = torch.randn(5, 3, 8, 7)
    affine = sub_spectral_affine(ssn, "ssn", (8, 7))
    assert affine.geometry == (3, 8, 7)
    with torch.no_grad():
        want = ssn(x).reshape(5, 3, -1)
        got = affine(x.reshape(5, 3, -1))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * float(want.abs().max()))


def _ops_graph(c: int, h: int, w: int) -> Graph:
    """[C, H * W] → RowAffine → mean over H (Conv2d) → SiLU → BroadcastAdd(the affine, it) →
    ReLU: each new op, and a ReLU for the int8 BroadcastAdd's clamp to absorb."""
    torch.manual_seed(c * h + w)
    g = Graph((c, h * w))
    ssn = SubSpectralNorm(c, sub_bands=h)
    randomise_bn(ssn, 2, nn.BatchNorm2d)
    affine = sub_spectral_affine(ssn.eval(), "ssn", (h, w))
    g.add(Node("RowAffine", "ssn", (0,), lambda xs: affine(xs[0]), affine))
    mean = nn.Conv2d(c, c, (h, 1), groups=c, bias=False)
    with torch.no_grad():
        mean.weight.fill_(1.0 / h)
    flat = FlatConv2d(mean.eval(), (0, 0, 0, 0), (h, w))
    g.add(Node("Conv2d", "mean", (1,), lambda xs: flat(xs[0]), flat))
    act = nn.SiLU()
    g.add(Node("SiLU", "act", (2,), lambda xs: act(xs[0]), act))
    bcast = BroadcastAdd(c, h, w)
    g.add(Node("BroadcastAdd", "add", (1, 3), lambda xs: bcast(*xs), bcast))
    relu = nn.ReLU()
    g.add(Node("ReLU", "relu", (4,), lambda xs: relu(xs[0]), relu))
    return g


@pytest.mark.kernel_path
@pytest.mark.parametrize("shape", [(4, 5, 33), (1, 2, 1), (6, 10, 101)], ids=str)
def test_new_ops_float_and_int8(cbuild: Path, tmp_path: Path, shape: tuple[int, int, int]) -> None:
    """RowAffine, SiLU and BroadcastAdd on their own: float within a tolerance scaled to the
    values (per layer); int8 codes equal to the integer reference on every kernel path."""
    c, h, w = shape
    g = _ops_graph(c, h, w)
    write_graph(g, tmp_path / "f.kwsn")
    x = torch.randn(6, c, h * w) * 3
    tensors = g.run(x)
    with CModel(tmp_path / "f.kwsn") as cm:
        assert cm.layer_names == ["RowAffine", "Conv2d", "SiLU", "BroadcastAdd", "ReLU"]
        for i in range(1, 6):
            ref = tensors[i].reshape(6, -1).numpy()
            got = cm.forward_until(x.reshape(6, -1).numpy(), i)
            np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * max(1.0, np.abs(ref).max()))
    q = write_int8(g, [x], tmp_path / "q.kwsn")
    assert q.nodes[3].fused_relu and q.nodes[4].relu_alias
    want = run_int8_tensors(q, x)
    assert len(np.unique(want[-1].numpy())) > min(8, c * h * w // 2)  # type: ignore[union-attr]
    assert_codes_on_every_path(tmp_path / "q.kwsn", x, want, range(1, 6))


def test_silu_float_kernel_over_its_range(cbuild: Path, tmp_path: Path) -> None:
    """The C SiLU against torch from -1e30 to 1e30 (its own exp: a few float32 ulp), NaN
    passed through."""
    v = np.concatenate([np.linspace(-100, 100, 40001), [-1e30, -90.0, -80.0, 88.0, 1e30, 0.0]])
    x = torch.tensor(v, dtype=torch.float32).reshape(1, 1, -1)
    g = Graph((1, x.shape[-1]))
    g.add(Node("SiLU", "act", (0,), lambda xs: torch.nn.functional.silu(xs[0]), nn.SiLU()))
    write_graph(g, tmp_path / "s.kwsn")
    with CModel(tmp_path / "s.kwsn") as cm:
        got = cm.forward(x.reshape(1, -1).numpy())[0]
        nan = cm.forward(np.full((1, x.shape[-1]), np.nan, np.float32))[0]
    want = torch.nn.functional.silu(x).reshape(-1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)
    assert np.isnan(nan).all()


# ------------------------------------------------------------------ BC-ResNet, traced


@pytest.mark.kernel_path
@pytest.mark.parametrize(
    "kwargs", [{}, {"tau": 0.5, "n_mels": 16, "sub_bands": 2, "n_classes": 10}],
    ids=["tau1-40mels", "tau0.5-16mels-2bands"],
)  # fmt: skip
def test_bc_resnet_float_parity_per_layer(cbuild: Path, tmp_path: Path, kwargs: dict) -> None:
    """LogMel → BCResNet → mean → Linear: every layer against PyTorch's own modules
    (SubSpectralNorm, the mean over frequency, the unfolded BatchNorms), the logits against
    the model's within a tolerance scaled to them."""
    model = _bc_resnet(**kwargs)
    graph = trace_model(model, CLIP)
    kinds = [n.kind for n in graph.nodes]
    assert kinds[0] == "FrontEnd" and kinds[-3:] == ["AdaptiveAvgPool1d", "Flatten", "Linear"]
    assert {"RowAffine", "SiLU", "BroadcastAdd", "Add"} <= set(kinds)
    assert kinds.count("RowAffine") == len(model.backbone.blocks)
    assert_float_parity_per_layer(model, graph, tmp_path / "m.kwsn", clips(8), min_spread=50)


@pytest.mark.kernel_path
@pytest.mark.parametrize("kwargs", [{}, {"tau": 0.5, "n_mels": 16, "sub_bands": 2}],
                         ids=["tau1-40mels", "tau0.5-16mels-2bands"])  # fmt: skip
def test_bc_resnet_int8_codes_equal_reference(cbuild: Path, tmp_path: Path, kwargs: dict) -> None:
    """int8 BC-ResNet: every layer's codes (the logits' included) equal the integer
    reference's on every kernel path, from the C front end's codes (as `kwsnet parity --dtype
    int8`); the front end is the only float island."""
    graph = trace_model(_bc_resnet(seed=1, **kwargs), CLIP)
    assert_int8_model_codes(graph, clips(12, seed=2), tmp_path / "q.kwsn", c_frontend_codes=True)


def test_unsupported_bc_resnet_parts_are_named_with_their_path() -> None:
    """A block activation other than SiLU, or a pooling the runtime lacks: ExportError with
    the path and what the tracer takes."""
    model = _bc_resnet()
    model.backbone.blocks[3].act = nn.GELU()
    with pytest.raises(ExportError, match=r"at 'backbone.blocks.3'.*SiLU.*GELU"):
        trace_model(model, CLIP)
    model = _bc_resnet()
    model.backbone.end_pw[2] = nn.GELU()
    with pytest.raises(ExportError, match=r"at 'backbone.end_pw'.*ReLU"):
        trace_model(model, CLIP)


# ------------------------------------------------------------------ the loader


def _with_float(data: bytes, at: int) -> bytes:
    """A v2 file whose record with no ints or floats, one input, ints at byte ``at``, gets one
    float (0.0) more, CRC fixed."""
    b = bytearray(data[:-4])
    struct.pack_into("<I", b, at - 8, 1)  # n_floats, before n_inputs' one id
    b[at:at] = struct.pack("<f", 0.0)
    return with_crc(bytes(b))


def test_loader_names_the_refused_bc_resnet_checks(cbuild: Path, tmp_path: Path) -> None:
    """Corrupted RowAffine / SiLU / BroadcastAdd records (float and int8) are refused at load
    with the layer, its type and the check (also under ASan/UBSan, where the valid files
    run)."""
    model = _bc_resnet(tau=0.25, n_mels=16, sub_bands=2)
    graph = trace_model(model, CLIP)
    data = graph_bytes(graph)
    qdata = quant_bytes(quantize_graph(graph, calibrate(graph, [clips(4)])), graph)
    recs = [(r.ints_at, r.type) for r in records(data)]
    qrecs = [(r.ints_at, r.type) for r in records(qdata)]
    types = [t for _, t in recs]
    i_ra, i_si, i_ba = (types.index(LAYER_TYPES[k]) for k in ("RowAffine", "SiLU", "BroadcastAdd"))
    ra, si, ba = (f"layer {i} ({k})" for i, k in ((i_ra, "RowAffine"), (i_si, "SiLU"),
                                                   (i_ba, "BroadcastAdd")))  # fmt: skip
    p = "bad layer parameters: "
    c, h = struct.unpack_from("<2i", qdata, qrecs[i_ra][0] + 12)
    q_ra_bytes = qrecs[i_ra][0] + 4 * (6 + 1 + c * h + 3 * c * h)  # ints, floats, words
    cases = {
        "ra_zero": (patched(data, recs[i_ra][0], "<i", 0), f"{p}{ra}: c < 1 || h < 1 || w < 1"),
        "ra_rows": (patched(data, recs[i_ra][0] + 4, "<i", 1), f"shapes do not chain: {ra}"),
        "ra_nan": (patched(data, recs[i_ra][0] + 12, "<f", float("nan")), "non-finite"),
        "silu_float": (_with_float(data, recs[i_si][0]), f"{p}{si}: l->desc.n_floats != 0"),
        "ba_width": (patched(data, recs[i_ba][0] + 8, "<i", 7), f"shapes do not chain: {ba}"),
        "q8_ra_rows": (patched(qdata, qrecs[i_ra][0] + 16, "<i", 3), f"shapes do not chain: {ra}"),
        "q8_ra_weight": (patched(qdata, q_ra_bytes, "<b", -128), f"{p}{ra}: wo[j] == -128"),
        "q8_silu_table": (patched(qdata, qrecs[i_si][0] + 4, "<i", 100), f"{p}{si}: "
                          "l->desc.bytes[j] < Q_MIN(l) || l->desc.bytes[j] > Q_MAX(l)"),
        "q8_ba_shift": (patched(qdata, qrecs[i_ba][0] + 12, "<i", 23), f"{p}{ba}: QI(l, 0) < 0 || "
                        "QI(l, 0) > KWSN_Q8_MAX_ADD_SHIFT"),
        "q8_ba_height": (patched(qdata, qrecs[i_ba][0] + 20, "<i", 3), f"shapes do not chain: "
                         f"{ba}"),
    }  # fmt: skip
    assert_loader_refuses(cbuild, tmp_path, {"good": data, "good8": qdata}, cases)


# ------------------------------------------------------------------ the C header


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_c_header_bc_resnet_matches_file_model(cbuild: Path, tmp_path: Path, dtype: str) -> None:
    """The MCU path for kws_bc_resnet (float and int8 headers, the new ops' comments in them):
    see assert_mcu_matches_file_model."""
    graph = trace_model(_bc_resnet(seed=3, tau=0.5), CLIP)
    x = clips(4, seed=4)
    kwsn = write_model_files(graph, x, tmp_path, dtype)
    text = (tmp_path / "model.h").read_text()
    assert "/* backbone.blocks.0.ssn: " in text and "broadcast_add: " in text
    assert_mcu_matches_file_model(tmp_path, x.numpy().astype("<f4"), kwsn)


# ------------------------------------------------------------------ a trained checkpoint


@pytest.mark.kernel_path
def test_trained_bc_resnet_checkpoint_export_and_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """kws_bc_resnet.yaml (tau 0.5) trained on the learnable synthetic corpus, then
    assert_parity_and_export: RowAffine layers in the per-layer table, and in the float header
    in place of SubSpectralNorm."""
    ckpt = fit_learnable(
        tmp_path,
        "kws_bc_resnet.yaml",
        ["--model.backbone.init_args.tau", "0.5", "--model.augment", "null"],
        6,
    )
    assert_parity_and_export(
        ckpt,
        tmp_path,
        capsys,
        lambda rows: "FrontEnd" in rows[0] and any("RowAffine" in r for r in rows),
    )
    assert "SubSpectralNorm" not in (tmp_path / "m.h").read_text()
    assert ": RowAffine" in (tmp_path / "m.h").read_text()
