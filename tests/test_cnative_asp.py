"""The C runtime's attentive statistics pooling (AttnStatsPool) and cosine head (L2Norm + the
scaled unit class weights as a Linear) (issue 29): kws_mel_best / kws_mel_aug's
LogMel → CnnMel → AttentiveStatisticsPooling → AAMSoftmaxHead.

One AttnStatsPool record against torch (float: a tolerance scaled to the outputs, and the C
kernel bit for bit equal to its numpy mirror ``kwsnet.quant.islands``; int8: codes equal to
the integer reference on every kernel path); a tiny kws_mel_best-shaped model per layer
against PyTorch and code for code against the integer reference; the loader's refusal of
corrupted records; the C header compiled as an MCU build; a trained kws_mel_best checkpoint
through ``kwsnet export`` and ``kwsnet parity``.

Fixtures are generated in tmp dirs; the models are untrained except the checkpoint test's,
trained on the learnable synthetic corpus.
"""

from __future__ import annotations

import functools
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
from kwsnet.export.cnative import LAYER_TYPES, graph_bytes, node_record, write_graph
from kwsnet.export.graph import Graph, Node, trace_model
from kwsnet.export.parity import LOGIT_RTOL, run_parity
from kwsnet.export.runtime import CNATIVE_DIR, CModel, CRuntimeError, build_cnative, cpu_flags
from kwsnet.models.cnn_mel import CnnMel
from kwsnet.nn.heads import AAMSoftmaxHead, AMSoftmaxHead
from kwsnet.nn.pooling import AttentiveStatisticsPooling
from kwsnet.quant.format import quant_bytes, write_quant
from kwsnet.quant.islands import attn_stats_pool, exp_neg, tanh
from kwsnet.quant.ptq import calibrate, quantize_graph
from kwsnet.quant.reference import run_int8_tensors

CLIP = 16000  # kws_mel_best's clip: 101 log-mel frames


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


class _MelBest(nn.Module):
    """ClassifierModule-shaped (frontend, backbone, head): kws_mel_best's LogMel (80 mels,
    25 ms / 10 ms, mean normalisation), a CnnMel with attentive statistics pooling, and a
    cosine head (AAM-softmax by default)."""

    def __init__(
        self,
        stem: int = 8,
        channels: tuple[int, ...] = (8, 12),
        strides: tuple[int, ...] = (2, 2),
        attention: int = 16,
        global_context: bool = True,
        head: type[nn.Module] = AAMSoftmaxHead,
        n_classes: int = 6,
    ) -> None:
        super().__init__()
        self.frontend = LogMel(sample_rate=16000, n_fft=400, win_length=400, hop_length=160,
                               n_mels=80, normalize="mean", spec_augment=None)  # fmt: skip
        pool = functools.partial(
            AttentiveStatisticsPooling,
            attention_channels=attention,
            global_context=global_context,
        )
        self.backbone = CnnMel(80, stem, channels, strides, 7, pooling=pool)
        self.head = head(self.backbone.embed_dim, n_classes)

    def embed(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.backbone(*self.frontend(audio, lengths))


def _mel_best(seed: int = 0, **kwargs: object) -> nn.Module:
    """An eval-mode model with non-trivial BatchNorm statistics and affines."""
    torch.manual_seed(seed)
    model = _MelBest(**kwargs)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
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


# ------------------------------------------------------------------ exp / tanh


def test_exp_and_tanh_polynomials_are_accurate() -> None:
    """The runtime's own exp (x <= 0) and tanh, in their numpy mirror: within a few float32
    ulp of the exact values over the ranges they see."""
    x = np.linspace(-80.0, 0.0, 200001, dtype=np.float32)
    want = np.exp(x.astype(np.float64))
    assert float(np.max(np.abs(exp_neg(x) - want) / want)) < 3e-7
    a = np.linspace(-12.0, 12.0, 200001, dtype=np.float32)
    assert float(np.max(np.abs(tanh(a) - np.tanh(a.astype(np.float64))))) < 2e-7
    assert exp_neg(np.float32([0.0]))[0] == 1.0 and tanh(np.float32([0.0]))[0] == 0.0


# ------------------------------------------------------------------ one AttnStatsPool layer


@pytest.mark.kernel_path
@pytest.mark.parametrize("global_context", [True, False], ids=["context", "frames-only"])
@pytest.mark.parametrize("shape", [(12, 7, 16), (48, 13, 64), (5, 1, 3)], ids=str)
def test_attn_stats_pool_layer_float_and_int8(
    cbuild: Path, tmp_path: Path, shape: tuple[int, int, int], global_context: bool
) -> None:
    """One AttnStatsPool record on [C, L]: float within a tolerance scaled to the outputs and
    bit for bit its numpy mirror; int8 codes equal to the integer reference on every path."""
    c, length, h = shape
    torch.manual_seed(c + length)
    pool = AttentiveStatisticsPooling(c, attention_channels=h, global_context=global_context)
    pool.eval()
    g = Graph((c, length))
    g.add(Node("AttnStatsPool", "pool", (0,), lambda xs: pool(xs[0].transpose(1, 2)), pool))
    write_graph(g, tmp_path / "f.kwsn")
    x = torch.relu(torch.randn(6, c, length) * 2)  # post-ReLU frames, as CnnMel gives
    with torch.no_grad():
        ref = pool(x.transpose(1, 2)).numpy()
    with CModel(tmp_path / "f.kwsn") as cm:
        assert cm.layer_names == ["AttnStatsPool"]
        out = cm.forward(x.reshape(6, -1).numpy())
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * max(1.0, float(np.abs(ref).max())))
    rec = node_record(g.nodes[0])
    mirror = attn_stats_pool(x.numpy(), rec.ints, rec.floats)
    np.testing.assert_array_equal(out.view(np.uint32), mirror.view(np.uint32))

    q = quantize_graph(g, calibrate(g, [x]))
    write_quant(q, g, tmp_path / "q.kwsn")
    want = run_int8_tensors(q, x)[-1].reshape(6, -1).numpy()
    assert len(np.unique(want)) > min(10, 2 * c)  # not saturated: the codes say something
    for isa in _isa_paths():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KWSN_ISA", isa)
            with CModel(tmp_path / "q.kwsn") as cm:
                assert cm.isa == isa
                np.testing.assert_array_equal(cm.forward_codes(x.numpy()), want, err_msg=isa)


# ------------------------------------------------------------------ kws_mel_best, traced


@pytest.mark.kernel_path
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"global_context": False, "head": AMSoftmaxHead}, {"stem": 32, "channels": (32, 48, 48),
     "strides": (2, 2, 2), "attention": 64, "n_classes": 10}],
    ids=["tiny", "frames-only-am", "full-size"],
)  # fmt: skip
def test_mel_best_float_parity_per_layer(cbuild: Path, tmp_path: Path, kwargs: dict) -> None:
    """LogMel → CnnMel → AttnStatsPool → L2Norm → Linear: every layer against PyTorch's own
    modules (the head's unfolded cosine), the logits against the model's."""
    model = _mel_best(**kwargs)
    graph = trace_model(model, CLIP)
    kinds = [n.kind for n in graph.nodes]
    assert kinds[0] == "FrontEnd" and kinds[-3:] == ["AttnStatsPool", "L2Norm", "Linear"]
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


def test_cosine_head_is_the_eval_logits_whatever_the_margin() -> None:
    """The traced head (L2Norm, then the scaled unit class weights) gives the head's eval
    logits, scale * cos, for AAM and AM alike; a training step's margin does not enter."""
    for head in (AAMSoftmaxHead, AMSoftmaxHead):
        model = _mel_best(head=head)
        model.head.margin = 0.5
        graph = trace_model(model, CLIP)
        x = _clips(3, seed=5)
        folded = graph.run(x, folded=True)[-1].numpy()
        ref = _logits(model, x)
        np.testing.assert_allclose(folded, ref, rtol=0, atol=1e-5 * model.head.scale)
        w = graph.nodes[-1].module.weight.detach()
        np.testing.assert_allclose(w.norm(dim=1).numpy(), model.head.scale, rtol=1e-6)
        assert graph.nodes[-1].module.bias is None


def test_unsupported_asp_parts_are_named_with_their_path() -> None:
    """Post-pooling BatchNorm, or an attention net that is not Linear → Tanh → Linear:
    ExportError with the path."""
    model = _mel_best()
    model.backbone.pooling = AttentiveStatisticsPooling(12, 16, batch_norm=True).eval()
    with pytest.raises(ExportError, match="AttentiveStatisticsPooling at 'backbone.pooling'"):
        trace_model(model, CLIP)
    model = _mel_best()
    model.backbone.pooling.attention[1] = nn.ReLU()
    with pytest.raises(ExportError, match=r"at 'backbone.pooling'.*Linear → ReLU → Linear"):
        trace_model(model, CLIP)


@pytest.mark.kernel_path
@pytest.mark.parametrize("kwargs", [{}, {"global_context": False}], ids=["tiny", "frames-only"])
def test_mel_best_int8_codes_equal_reference(cbuild: Path, tmp_path: Path, kwargs: dict) -> None:
    """int8 kws_mel_best: every layer's codes (the logits' included) equal the integer
    reference's on every kernel path (from the C front end's codes, as `kwsnet parity --dtype
    int8`); the front end, AttnStatsPool and L2Norm are the float islands."""
    model = _mel_best(seed=1, **kwargs)
    graph = trace_model(model, CLIP)
    x = _clips(12, seed=2)
    q = quantize_graph(graph, calibrate(graph, [x[:8]]))
    assert [n.kind for n in q.nodes] == [n.kind for n in graph.nodes]
    write_quant(q, graph, tmp_path / "q.kwsn")
    with CModel(tmp_path / "q.kwsn") as cm:  # the gate starts from C's front end codes
        fe = torch.from_numpy(cm.forward_codes(x.numpy(), 1)).reshape(len(x), 80, -1)
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


# ------------------------------------------------------------------ the loader


def _v2_records(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, n_inputs) of every record of a format-v2 file."""
    off, out = 28, []
    for _ in range(struct.unpack_from("<I", data, 24)[0]):
        typ, n_in, n_i, n_f = struct.unpack_from("<4I", data, off)
        out.append((off, typ, n_in))
        off += 16 + 4 * (n_in + n_i + n_f)
    return out


def _v3_records(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, n_inputs) of every record of a format-3 file."""
    off, out = 40, []
    for _ in range(struct.unpack_from("<I", data, 24)[0]):
        typ, n_in, n_i, n_f, n_w, n_b = struct.unpack_from("<6I", data, off)
        out.append((off, typ, n_in))
        off += 24 + 4 * (n_in + n_i + n_f + n_w) + n_b + (-n_b) % 4
    return out


def _with(data: bytes, at: int, fmt: str, value: float) -> bytes:
    """``data`` with the field at byte ``at`` set, CRC fixed."""
    b = bytearray(data[:-4])
    struct.pack_into(fmt, b, at, value)
    return bytes(b) + struct.pack("<I", zlib.crc32(bytes(b)) & 0xFFFFFFFF)


def test_loader_names_the_refused_asp_and_l2norm_checks(cbuild: Path, tmp_path: Path) -> None:
    """Corrupted AttnStatsPool / L2Norm records (float and int8) are refused at load with the
    layer, its type and the check (also under ASan/UBSan, where the valid files run)."""
    model = _mel_best(stem=4, channels=(4, 6), attention=5)
    graph = trace_model(model, CLIP)
    data = graph_bytes(graph)
    recs = _v2_records(data)
    i_asp = [r[1] for r in recs].index(LAYER_TYPES["AttnStatsPool"])
    i_l2 = i_asp + 1
    asp_ints, l2_ints = recs[i_asp][0] + 20, recs[i_l2][0] + 20  # type .. n_floats, one input
    qdata = quant_bytes(quantize_graph(graph, calibrate(graph, [_clips(4)])), graph)
    q_asp = _v3_records(qdata)[i_asp][0] + 28  # 6 u32 + one input
    asp, l2 = f"layer {i_asp} (AttnStatsPool)", f"layer {i_l2} (L2Norm)"
    cases = {
        "context_flag": (_with(data, asp_ints + 8, "<i", 2), f"bad layer parameters: {asp}: c "
                         "< 1 || h < 1 || (gc != 0 && gc != 1)"),
        "hidden": (_with(data, asp_ints + 4, "<i", 6), f"bad layer parameters: {asp}: "
                   "l->desc.n_floats != nw"),
        "eps": (_with(data, asp_ints + 12, "<f", -1.0), f"bad layer parameters: {asp}: !(eps > "
                "0.0f)"),
        "channels": (_with(data, asp_ints, "<i", 7), f"bad layer parameters: {asp}"),
        "l2_width": (_with(data, l2_ints, "<i", 11), f"shapes do not chain: {l2}"),
        "l2_eps": (_with(data, l2_ints + 4, "<f", 0.0), f"bad layer parameters: {l2}: !(eps > "
                   "0.0f)"),
        "q8_act_max": (_with(qdata, q_asp + 8, "<i", 100), f"bad layer parameters: {asp}: "
                       "l->desc.n_words != 0u"),
        "q8_context_flag": (_with(qdata, q_asp + 20, "<i", 3), f"bad layer parameters: {asp}: c "
                            "< 1 || h < 1 || (gc != 0 && gc != 1)"),
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
def test_c_header_mel_best_matches_file_model(cbuild: Path, tmp_path: Path, dtype: str) -> None:
    """The MCU path for kws_mel_best: the header's static tables compiled with -Werror and
    plain C loops (no vector extensions) with the runtime core and the front end; the logits
    equal the file model's bit for bit (int8: the dequantised codes)."""
    from kwsnet.export.c_header import graph_header_text, int8_header_text

    model = _mel_best(seed=3)
    graph = trace_model(model, CLIP)
    x = _clips(4, seed=4)
    if dtype == "int8":
        q = quantize_graph(graph, calibrate(graph, [x]))
        (tmp_path / "model.h").write_text(int8_header_text(q, graph))
        write_quant(q, graph, tmp_path / "m.kwsn")
    else:
        (tmp_path / "model.h").write_text(graph_header_text(graph))
        write_graph(graph, tmp_path / "m.kwsn")
    assert "/* backbone.pooling: " in (tmp_path / "model.h").read_text()
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
def test_trained_mel_best_checkpoint_export_and_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """kws_mel_best.yaml shrunk to the learnable synthetic corpus, trained; `kwsnet parity
    --per_layer` (float: N/N, the class floor passed, the table from the front end) and
    `--dtype int8` (every logit code identical), then `kwsnet export` to every C target."""
    from kwsnet.cli import main

    from .conftest import LEARNABLE_SAMPLES, LEARNABLE_SYNTHETIC, QUIET_FIT

    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed for parity")
    config = str(Path(__file__).resolve().parents[1] / "configs" / "kws_mel_best.yaml")
    root = tmp_path / "run"
    main(["fit", "--config", config, *QUIET_FIT,
          "--data.source_options", LEARNABLE_SYNTHETIC,
          "--data.clip_samples", str(LEARNABLE_SAMPLES),
          "--data.batch_size", "8",
          "--data.root", str(tmp_path / "data"),
          "--model.backbone.init_args.stem_channels", "8",
          "--model.backbone.init_args.channels", "[8, 12]",
          "--model.backbone.init_args.strides", "[2, 2]",
          "--model.backbone.init_args.pooling.init_args.attention_channels", "8",
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
    assert "FrontEnd" in layer_rows[0] and "AttnStatsPool" in layer_rows[-3], text
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
    assert "/* head.normalize: L2Norm" in (tmp_path / "m.h").read_text()
