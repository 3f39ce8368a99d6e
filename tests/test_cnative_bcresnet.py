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

import shutil
import struct
import subprocess
import zlib
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
from kwsnet.export.parity import LOGIT_RTOL, run_parity
from kwsnet.export.runtime import CNATIVE_DIR, CModel, CRuntimeError, build_cnative, cpu_flags
from kwsnet.models.bc_resnet import BCResNet, SubSpectralNorm
from kwsnet.nn.heads import LinearHead
from kwsnet.quant.format import quant_bytes, write_quant
from kwsnet.quant.ptq import calibrate, quantize_graph
from kwsnet.quant.reference import run_int8_tensors

CLIP = 16000  # kws_bc_resnet's clip: 101 log-mel frames


@pytest.fixture(scope="module")
def cbuild() -> Path:
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make and gcc are needed to build cnative")
    build_cnative("all")
    return build_cnative("sanitize")


def _isa_paths() -> list[str]:
    """The runtime's kernel paths this CPU runs (KWSN_ISA values)."""
    flags = cpu_flags()
    return [p for p, f in (("default", None), ("avx2", "avx2"), ("avx512", "avx512f"))
            if f is None or f in flags]  # fmt: skip


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


def _randomise_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affines (SubSpectralNorm's included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))


def _bc_resnet(seed: int = 0, **kwargs: object) -> nn.Module:
    """An eval-mode model whose BatchNorm statistics are those of a few clips (random ones
    leave an untrained BC-ResNet's logits nearly constant) and whose affines are random."""
    torch.manual_seed(seed)
    model = _BCRes(**kwargs)  # type: ignore[arg-type]
    _randomise_bn(model, seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # the cumulative average over the batch below
    model.backbone.train()
    with torch.no_grad():
        x = _clips(16, seed=seed + 100)
        model.backbone(*model.frontend(x, torch.full((len(x),), CLIP)))
    return model.eval()


def _clips(n: int, seed: int = 0) -> torch.Tensor:
    """Tones plus noise at speech-like levels."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(CLIP, dtype=torch.float32)
    f = torch.rand(n, 1, generator=g) * 0.3 + 0.02
    return 0.3 * torch.sin(t * f) + 0.05 * torch.randn(n, CLIP, generator=g)


def _logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.head(model.embed(x, torch.full((len(x),), x.shape[1]))).numpy()


# ------------------------------------------------------------------ the new ops alone


def test_sub_spectral_norm_is_a_row_affine() -> None:
    """SubSpectralNorm in eval mode is one affine per (channel, frequency row): the RowAffine
    of its BatchNorm, in float32 within rounding."""
    torch.manual_seed(0)
    ssn = SubSpectralNorm(3, sub_bands=4)
    _randomise_bn(ssn, 1)
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
    _randomise_bn(ssn, 2)
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
    q = quantize_graph(g, calibrate(g, [x]))
    assert q.nodes[3].fused_relu and q.nodes[4].relu_alias
    write_quant(q, g, tmp_path / "q.kwsn")
    want = run_int8_tensors(q, x)
    assert len(np.unique(want[-1].numpy())) > min(8, c * h * w // 2)  # type: ignore[union-attr]
    for isa in _isa_paths():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KWSN_ISA", isa)
            with CModel(tmp_path / "q.kwsn") as cm:
                assert cm.isa == isa
                for i in range(1, 6):
                    got = cm.forward_codes(x.numpy(), i)
                    ref = want[i].reshape(6, -1).numpy()  # type: ignore[union-attr]
                    np.testing.assert_array_equal(got, ref, err_msg=f"{isa} layer {i - 1}")


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
    write_graph(graph, tmp_path / "m.kwsn")
    x = _clips(8)
    with CModel(tmp_path / "m.kwsn") as cm:
        rep = run_parity(model, [x[:4], x[4:]], cm, graph=graph, per_layer=True)
        out = cm.forward(x.numpy())
    assert rep.ok and rep.n == 8, rep.lines()
    assert [d.kind for d in rep.layers] == kinds
    assert max(d.max_rel for d in rep.layers) < 1e-4, rep.lines()
    ref = _logits(model, x)
    tol = LOGIT_RTOL * max(1.0, float(np.abs(ref).max()))
    assert float(ref.std(axis=0).max()) > 50 * tol  # the logits depend on the clip
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol)


@pytest.mark.kernel_path
@pytest.mark.parametrize("kwargs", [{}, {"tau": 0.5, "n_mels": 16, "sub_bands": 2}],
                         ids=["tau1-40mels", "tau0.5-16mels-2bands"])  # fmt: skip
def test_bc_resnet_int8_codes_equal_reference(cbuild: Path, tmp_path: Path, kwargs: dict) -> None:
    """int8 BC-ResNet: every layer's codes (the logits' included) equal the integer
    reference's on every kernel path, from the C front end's codes (as `kwsnet parity --dtype
    int8`); the front end is the only float island."""
    model = _bc_resnet(seed=1, **kwargs)
    graph = trace_model(model, CLIP)
    x = _clips(12, seed=2)
    q = quantize_graph(graph, calibrate(graph, [x[:8]]))
    assert [n.kind for n in q.nodes] == [n.kind for n in graph.nodes]
    write_quant(q, graph, tmp_path / "q.kwsn")
    n_mels = graph.nodes[0].tables.n_out  # type: ignore[attr-defined]
    with CModel(tmp_path / "q.kwsn") as cm:
        fe = torch.from_numpy(cm.forward_codes(x.numpy(), 1)).reshape(len(x), n_mels, -1)
    ref = run_int8_tensors(q, x, frontend_codes=fe)
    for isa in _isa_paths():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KWSN_ISA", isa)
            with CModel(tmp_path / "q.kwsn") as cm:
                assert cm.is_int8 and cm.isa == isa
                for i in range(1, len(graph.nodes) + 1):
                    got = cm.forward_codes(x.numpy(), i)
                    want = ref[i].reshape(len(x), -1).numpy()  # type: ignore[union-attr]
                    np.testing.assert_array_equal(got, want, err_msg=f"{isa} layer {i - 1}")
    assert len(np.unique(ref[-1].numpy())) > 5  # type: ignore[union-attr]


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


def _records(data: bytes, head: int, v3: bool) -> list[tuple[int, int]]:
    """(offset of the ints, type) of every one-or-two-input record of a v2 / v3 file."""
    off, out = head, []
    for _ in range(struct.unpack_from("<I", data, 24)[0]):
        if v3:
            typ, n_in, n_i, n_f, n_w, n_b = struct.unpack_from("<6I", data, off)
            out.append((off + 24 + 4 * n_in, typ))
            off += 24 + 4 * (n_in + n_i + n_f + n_w) + n_b + (-n_b) % 4
        else:
            typ, n_in, n_i, n_f = struct.unpack_from("<4I", data, off)
            out.append((off + 16 + 4 * n_in, typ))
            off += 16 + 4 * (n_in + n_i + n_f)
    return out


def _with(data: bytes, at: int, fmt: str, value: float) -> bytes:
    """``data`` with the field at byte ``at`` set, CRC fixed."""
    b = bytearray(data[:-4])
    struct.pack_into(fmt, b, at, value)
    return bytes(b) + struct.pack("<I", zlib.crc32(bytes(b)) & 0xFFFFFFFF)


def _with_float(data: bytes, at: int) -> bytes:
    """A v2 file whose record with no ints or floats, one input, ints at byte ``at``, gets one
    float (0.0) more, CRC fixed."""
    b = bytearray(data[:-4])
    struct.pack_into("<I", b, at - 8, 1)  # n_floats, before n_inputs' one id
    b[at:at] = struct.pack("<f", 0.0)
    return bytes(b) + struct.pack("<I", zlib.crc32(bytes(b)) & 0xFFFFFFFF)


def test_loader_names_the_refused_bc_resnet_checks(cbuild: Path, tmp_path: Path) -> None:
    """Corrupted RowAffine / SiLU / BroadcastAdd records (float and int8) are refused at load
    with the layer, its type and the check (also under ASan/UBSan, where the valid files
    run)."""
    model = _bc_resnet(tau=0.25, n_mels=16, sub_bands=2)
    graph = trace_model(model, CLIP)
    data = graph_bytes(graph)
    qdata = quant_bytes(quantize_graph(graph, calibrate(graph, [_clips(4)])), graph)
    recs, qrecs = _records(data, 28, False), _records(qdata, 40, True)
    types = [t for _, t in recs]
    i_ra, i_si, i_ba = (types.index(LAYER_TYPES[k]) for k in ("RowAffine", "SiLU", "BroadcastAdd"))
    ra, si, ba = (f"layer {i} ({k})" for i, k in ((i_ra, "RowAffine"), (i_si, "SiLU"),
                                                   (i_ba, "BroadcastAdd")))  # fmt: skip
    p = "bad layer parameters: "
    c, h = struct.unpack_from("<2i", qdata, qrecs[i_ra][0] + 12)
    q_ra_bytes = qrecs[i_ra][0] + 4 * (6 + 1 + c * h + 3 * c * h)  # ints, floats, words
    cases = {
        "ra_zero": (_with(data, recs[i_ra][0], "<i", 0), f"{p}{ra}: c < 1 || h < 1 || w < 1"),
        "ra_rows": (_with(data, recs[i_ra][0] + 4, "<i", 1), f"shapes do not chain: {ra}"),
        "ra_nan": (_with(data, recs[i_ra][0] + 12, "<f", float("nan")), "non-finite"),
        "silu_float": (_with_float(data, recs[i_si][0]), f"{p}{si}: l->desc.n_floats != 0"),
        "ba_width": (_with(data, recs[i_ba][0] + 8, "<i", 7), f"shapes do not chain: {ba}"),
        "q8_ra_rows": (_with(qdata, qrecs[i_ra][0] + 16, "<i", 3), f"shapes do not chain: {ra}"),
        "q8_ra_weight": (_with(qdata, q_ra_bytes, "<b", -128), f"{p}{ra}: wo[j] == -128"),
        "q8_silu_table": (_with(qdata, qrecs[i_si][0] + 4, "<i", 100), f"{p}{si}: "
                          "l->desc.bytes[j] < Q_MIN(l) || l->desc.bytes[j] > Q_MAX(l)"),
        "q8_ba_shift": (_with(qdata, qrecs[i_ba][0] + 12, "<i", 23), f"{p}{ba}: QI(l, 0) < 0 || "
                        "QI(l, 0) > KWSN_Q8_MAX_ADD_SHIFT"),
        "q8_ba_height": (_with(qdata, qrecs[i_ba][0] + 20, "<i", 3), f"shapes do not chain: "
                         f"{ba}"),
    }  # fmt: skip
    files = [tmp_path / "good.kwsn", tmp_path / "good8.kwsn"]
    files[0].write_bytes(data)
    files[1].write_bytes(qdata)
    for name, (bad, message) in cases.items():
        (tmp_path / f"{name}.kwsn").write_bytes(bad)
        files.append(tmp_path / f"{name}.kwsn")
        with pytest.raises(CRuntimeError) as exc:
            CModel(tmp_path / f"{name}.kwsn")
        assert message in str(exc.value), (name, str(exc.value))
    proc = subprocess.run(
        [str(cbuild / "load_check_san"), *map(str, files)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{files[0]}: ok" in proc.stdout and f"{files[1]}: ok" in proc.stdout
    assert "runtime error" not in proc.stderr


# ------------------------------------------------------------------ the C header

_MAIN = r"""
#include <stdio.h>
#include "model.h"
static uint64_t store[KWSN_MODEL_STORAGE_WORDS];
static float arena[KWSN_MODEL_ARENA_BYTES / sizeof(float)] __attribute__((aligned(64)));
static float x[KWSN_MODEL_INPUT_LEN];
int main(void) {
    kwsn_model *m = NULL;
#ifdef KWSN_MODEL_INPUT_Q
    kwsn_status st = kwsn_model_from_table_q(kwsn_model_layers, KWSN_MODEL_N_LAYERS,
                                             kwsn_model_input, KWSN_MODEL_SAMPLE_RATE,
                                             KWSN_MODEL_INPUT_Q, store, sizeof(store), NULL, &m);
#else
    kwsn_status st = kwsn_model_from_table(kwsn_model_layers, KWSN_MODEL_N_LAYERS,
                                           kwsn_model_input, KWSN_MODEL_SAMPLE_RATE, store,
                                           sizeof(store), NULL, &m);
#endif
    if (st != KWSN_OK) { fprintf(stderr, "%s\n", kwsn_status_str(st)); return 1; }
    if (kwsn_arena_bytes(m) != sizeof(arena)) { fprintf(stderr, "arena mismatch\n"); return 1; }
    float logits[64];
    while (fread(x, sizeof(float), KWSN_MODEL_INPUT_LEN, stdin) == KWSN_MODEL_INPUT_LEN) {
        st = kwsn_forward(m, arena, sizeof(arena), x, KWSN_MODEL_INPUT_LEN, logits, 64);
        if (st != KWSN_OK) { fprintf(stderr, "%s\n", kwsn_status_str(st)); return 1; }
        for (size_t i = 0; i < kwsn_n_classes(m); i++) printf(" %.9g", logits[i]);
        printf("\n");
    }
    return 0;
}
"""


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_c_header_bc_resnet_matches_file_model(cbuild: Path, tmp_path: Path, dtype: str) -> None:
    """The MCU path for kws_bc_resnet: the header's static tables compiled with -Werror and
    plain C loops (no vector extensions) with the runtime core and the front end; the logits
    equal the file model's bit for bit (int8: the dequantised codes)."""
    from kwsnet.export.c_header import graph_header_text, int8_header_text

    model = _bc_resnet(seed=3, tau=0.5)
    graph = trace_model(model, CLIP)
    x = _clips(4, seed=4)
    if dtype == "int8":
        q = quantize_graph(graph, calibrate(graph, [x]))
        (tmp_path / "model.h").write_text(int8_header_text(q, graph))
        write_quant(q, graph, tmp_path / "m.kwsn")
    else:
        (tmp_path / "model.h").write_text(graph_header_text(graph))
        write_graph(graph, tmp_path / "m.kwsn")
    text = (tmp_path / "model.h").read_text()
    assert "/* backbone.blocks.0.ssn: " in text and "broadcast_add: " in text
    (tmp_path / "main.c").write_text(_MAIN)
    src = CNATIVE_DIR / "src"
    cmd = ["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-DKWSN_NO_VECTOR_EXT"]
    cmd += ["-I", str(CNATIVE_DIR / "include"), "-I", str(src), "-I", str(tmp_path)]
    cmd += [str(tmp_path / "main.c"), str(src / "kwsn_model.c"), str(src / "kwsn_kernels.c")]
    cmd += [str(src / "kwsn_frontend.c"), "-o", str(tmp_path / "mcu"), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    xs = x.numpy().astype("<f4")
    proc = subprocess.run([str(tmp_path / "mcu")], input=xs.tobytes(), capture_output=True)
    assert proc.returncode == 0, proc.stderr
    rows = np.array([line.split() for line in proc.stdout.decode().splitlines()], np.float32)
    with CModel(tmp_path / "m.kwsn") as cm:
        np.testing.assert_array_equal(rows, cm.forward(xs))


# ------------------------------------------------------------------ a trained checkpoint


@pytest.mark.kernel_path
def test_trained_bc_resnet_checkpoint_export_and_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """kws_bc_resnet.yaml (tau 0.5) on the learnable synthetic corpus, trained; `kwsnet parity
    --per_layer` (float: N/N, the class floor passed, the table from the front end) and
    `--dtype int8` (every logit code identical), then `kwsnet export` to every C target."""
    from kwsnet.cli import main

    from .conftest import LEARNABLE_SAMPLES, LEARNABLE_SYNTHETIC, QUIET_FIT

    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed for parity")
    config = str(Path(__file__).resolve().parents[1] / "configs" / "kws_bc_resnet.yaml")
    root = tmp_path / "run"
    main(["fit", "--config", config, *QUIET_FIT,
          "--data.source_options", LEARNABLE_SYNTHETIC,
          "--data.clip_samples", str(LEARNABLE_SAMPLES),
          "--data.batch_size", "8",
          "--data.root", str(tmp_path / "data"),
          "--model.backbone.init_args.tau", "0.5",
          "--model.optimizer.init_args.lr", "0.01",
          "--trainer.max_epochs", "4",
          "--trainer.default_root_dir", str(root),
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    ckpt = root / "checkpoints" / "last.ckpt"
    data = ["--data.root", str(tmp_path / "data")]
    capsys.readouterr()
    rc = main(["parity", "--ckpt_path", str(ckpt), *data, "--per_layer"])
    text = capsys.readouterr().out
    assert rc == 0, text
    lines = text.splitlines()
    n = int(lines[0].split("/")[1].split()[0])
    assert n > 0 and lines[0].startswith(f"{n}/{n} predictions identical"), text
    assert "class floor passed" in lines[1], text
    layer_rows = [ln for ln in lines if ln.strip().startswith("layer")]
    assert "FrontEnd" in layer_rows[0] and any("RowAffine" in r for r in layer_rows), text
    rc = main(["parity", "--ckpt_path", str(ckpt), *data, "--dtype", "int8", "--calibration", "32"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert text.startswith(f"int8 parity: logits identical on {n}/{n} clips"), text
    common = ["export", "--ckpt_path", str(ckpt), *data]
    targets = [("cnative", "float32", "m.kwsn"), ("c-header", "float32", "m.h"),
               ("cnative", "int8", "m8.kwsn"), ("c-header", "int8", "m8.h")]  # fmt: skip
    for fmt, dtype, name in targets:
        out = tmp_path / name
        extra = ["--dtype", "int8", "--calibration", "32"] if dtype == "int8" else []
        assert main([*common, "--format", fmt, *extra, "--out", str(out)]) == 0, name
        assert out.stat().st_size > 0
    assert (tmp_path / "m.kwsn").read_bytes()[4:8] == struct.pack("<I", 2)
    assert (tmp_path / "m8.kwsn").read_bytes()[4:8] == struct.pack("<I", 3)
    assert "SubSpectralNorm" not in (tmp_path / "m.h").read_text()
    assert ": RowAffine" in (tmp_path / "m.h").read_text()
