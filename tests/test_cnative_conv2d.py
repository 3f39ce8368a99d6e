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

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.data.features import MFCC
from kwsnet.export import ExportError
from kwsnet.export.cnative import LAYER_TYPES, graph_bytes, write_graph
from kwsnet.export.graph import FlatConv2d, Graph, Node, trace_model
from kwsnet.export.parity import LOGIT_RTOL, run_parity
from kwsnet.export.runtime import CNATIVE_DIR, CModel, CRuntimeError, build_cnative, cpu_flags
from kwsnet.models.ds_cnn import DSCNN
from kwsnet.nn.heads import LinearHead
from kwsnet.quant.format import write_quant
from kwsnet.quant.ptq import calibrate, quantize_graph
from kwsnet.quant.reference import run_int8_tensors

CLIP = 16000  # kws_ds_cnn's clip: 49 MFCC frames
_CONV2D = LAYER_TYPES["Conv2d"]


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
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
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

    q = quantize_graph(g, calibrate(g, [x]))
    write_quant(q, g, tmp_path / "q.kwsn")
    want = run_int8_tensors(q, x)[-1].reshape(5, -1).numpy()
    assert len(np.unique(want)) > 10  # not saturated: the codes say something
    for isa in _isa_paths():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KWSN_ISA", isa)
            with CModel(tmp_path / "q.kwsn") as cm:
                assert cm.isa == isa
                np.testing.assert_array_equal(cm.forward_codes(x.numpy()), want, err_msg=isa)


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
    write_graph(graph, tmp_path / "m.kwsn")
    x = _clips(8)
    with CModel(tmp_path / "m.kwsn") as cm:
        rep = run_parity(model, [x[:4], x[4:]], cm, graph=graph, per_layer=True)
        out = cm.forward(x.numpy())
    assert rep.ok and rep.n == 8, rep.lines()
    assert [d.kind for d in rep.layers] == kinds
    assert max(d.max_rel for d in rep.layers) < 1e-4, rep.lines()
    ref = _logits(model, x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=LOGIT_RTOL * max(1.0, np.abs(ref).max()))


@pytest.mark.kernel_path
@pytest.mark.parametrize("shape", [("S", 8, 2), ("S", None, None)], ids=["tiny", "S"])
def test_ds_cnn_int8_codes_equal_reference(cbuild: Path, tmp_path: Path, shape: tuple) -> None:
    """int8 DS-CNN: every layer's codes (the logits' included) equal the integer reference's,
    on every kernel path; the front end is the one float island."""
    model = _ds_cnn(*shape, seed=1)
    graph = trace_model(model, CLIP)
    x = _clips(12, seed=2)
    q = quantize_graph(graph, calibrate(graph, [x[:8]]))
    assert [n.kind for n in q.nodes] == [n.kind for n in graph.nodes]
    write_quant(q, graph, tmp_path / "q.kwsn")
    ref = run_int8_tensors(q, x)
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


def _records(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, n_ints) of every record of a format-v2 file."""
    off, out = 28, []
    for _ in range(struct.unpack_from("<I", data, 24)[0]):
        typ, n_in, n_i, n_f = struct.unpack_from("<4I", data, off)
        out.append((off, typ, n_i))
        off += 16 + 4 * (n_in + n_i + n_f)
    return out


def _with_int(data: bytes, rec_off: int, k: int, value: int) -> bytes:
    """``data`` with int ``k`` of the v2 record at ``rec_off`` (one input) set, CRC fixed."""
    b = bytearray(data[:-4])
    struct.pack_into("<i", b, rec_off + 16 + 4 + 4 * k, value)
    return bytes(b) + struct.pack("<I", zlib.crc32(bytes(b)) & 0xFFFFFFFF)


def test_loader_names_the_refused_conv2d_check(cbuild: Path, tmp_path: Path) -> None:
    """A corrupted Conv2d record is refused at load with the layer, its type and the check
    (also under ASan/UBSan, where the valid file runs a forward pass)."""
    data = graph_bytes(trace_model(_ds_cnn("S", 4, 1), CLIP))
    conv = [r for r in _records(data) if r[1] == _CONV2D]
    assert len(conv) == 3 and conv[0][2] == 14
    first = conv[0][0]  # layer 1, after the FrontEnd
    cases = {
        "groups": (_with_int(data, first, 12, 3), "bad layer parameters: layer 1 (Conv2d): ci % g "
                   "!= 0 || co % g != 0"),
        "pad": (_with_int(data, first, 9, -1), "bad layer parameters: layer 1 (Conv2d): pt < 0 || "
                "pb < 0 || pl < 0 || pr < 0"),
        "kernel": (_with_int(data, first, 4, 0), "bad layer parameters: layer 1 (Conv2d): ci < 1"),
        "bias_flag": (_with_int(data, first, 13, 0), "bad layer parameters: layer 1 (Conv2d): hb "
                      ">= 0 && l->desc.n_floats != nw"),
        "height": (_with_int(data, first, 2, 11), "shapes do not chain: layer 1 (Conv2d)"),
        "stride": (_with_int(data, first, 6, 1 << 20), "size exceeds runtime limits"),
    }  # fmt: skip
    files = [tmp_path / "good.kwsn"]
    files[0].write_bytes(data)
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
    assert f"{files[0]}: ok" in proc.stdout and "runtime error" not in proc.stderr


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
def test_c_header_ds_cnn_matches_file_model(cbuild: Path, tmp_path: Path, dtype: str) -> None:
    """The MCU path for DS-CNN: the header's static tables compiled with -Werror and plain C
    loops (no vector extensions) with the runtime core and the front end; the logits equal
    the file model's bit for bit (int8: the dequantised codes)."""
    from kwsnet.export.c_header import graph_header_text, int8_header_text

    model = _ds_cnn("S", 8, 2, seed=3)
    graph = trace_model(model, CLIP)
    x = _clips(4, seed=4)
    if dtype == "int8":
        q = quantize_graph(graph, calibrate(graph, [x]))
        (tmp_path / "model.h").write_text(int8_header_text(q, graph))
        write_quant(q, graph, tmp_path / "m.kwsn")
    else:
        (tmp_path / "model.h").write_text(graph_header_text(graph))
        write_graph(graph, tmp_path / "m.kwsn")
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
def test_trained_ds_cnn_checkpoint_export_and_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """kws_ds_cnn.yaml shrunk to the learnable synthetic corpus, trained; `kwsnet parity
    --per_layer` (float: N/N, the class floor passed, the table from the front end) and
    `--dtype int8` (every logit code identical), then `kwsnet export` to every C target."""
    from kwsnet.cli import main

    from .conftest import LEARNABLE_SAMPLES, LEARNABLE_SYNTHETIC, QUIET_FIT

    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed for parity")
    config = str(Path(__file__).resolve().parents[1] / "configs" / "kws_ds_cnn.yaml")
    root = tmp_path / "run"
    main(["fit", "--config", config, *QUIET_FIT,
          "--data.source_options", LEARNABLE_SYNTHETIC,
          "--data.clip_samples", str(LEARNABLE_SAMPLES),
          "--data.batch_size", "8",
          "--data.root", str(tmp_path / "data"),
          "--model.backbone.init_args.channels", "12",
          "--model.backbone.init_args.num_blocks", "2",
          "--model.augment", "null",
          "--model.optimizer.init_args.lr", "0.01",
          "--trainer.max_epochs", "6",
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
    assert "FrontEnd" in layer_rows[0] and "Conv2d" in layer_rows[1], text
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
    assert "Conv2d" in (tmp_path / "m.h").read_text()
