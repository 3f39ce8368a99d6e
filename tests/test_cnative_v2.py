"""Format v2 of the C runtime: the traced graph of a log-mel residual model (front end, folded
convs, residual adds, pooling, head) against PyTorch layer by layer, the static memory plan,
hostile v2 files, every kernel path, the MCU header, kwsnet-infer on a WAV, ONNX, and a tiny
trained kws_cnn_mel gated end to end through ``kwsnet parity``."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.data.features import MFCC, LogMel
from kwsnet.export import ExportError
from kwsnet.export.cnative import (
    _OVERWRITES_INPUT,
    graph_bytes,
    model_bytes,
    plan_arena,
    write_graph,
)
from kwsnet.export.graph import folding_delta, trace_model
from kwsnet.export.parity import LOGIT_RTOL, ParityReport, compare_predictions, run_parity
from kwsnet.export.runtime import CNATIVE_DIR, CModel, CRuntimeError
from kwsnet.models.cnn_mel import CnnMel
from kwsnet.nn.heads import LinearHead
from kwsnet.nn.pooling import MaxPooling, MeanPooling, SelfAttentionPooling

from .cnative_helpers import (
    assert_mcu_matches_file_model,
    build_runtime,
    clips,
    isa_paths,
    randomise_bn,
)

CLIP = 4000  # 0.25 s: 26 frames at hop 160


@pytest.fixture(scope="module")
def cbuild() -> Path:
    return build_runtime()


class _MelClassifier(nn.Module):
    """ClassifierModule-shaped: frontend, backbone (CnnMel), head; ``embed`` as the real one."""

    def __init__(self, frontend: nn.Module, pooling: type = MeanPooling, n_classes: int = 4):
        super().__init__()
        self.frontend = frontend
        self.backbone = CnnMel(
            input_dim=frontend.out_dim,
            stem_channels=8,
            channels=(8, 12),
            strides=(2, 1),
            kernel_size=5,
            pooling=pooling,
        )
        self.head = LinearHead(12, n_classes)

    def embed(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.backbone(*self.frontend(audio, lengths))


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (folding must matter)."""
    return randomise_bn(model, seed, nn.BatchNorm1d).eval()


def _logmel(normalize: str = "mean") -> LogMel:
    return LogMel(n_fft=480, win_length=480, hop_length=160, n_mels=40, normalize=normalize)


def _clips(n: int, seed: int = 0) -> torch.Tensor:
    """Tones plus noise, like speech energy levels (not all-silence)."""
    return clips(n, seed, CLIP)


def _full_lengths(x: torch.Tensor) -> torch.Tensor:
    return torch.full((len(x),), x.shape[1], dtype=torch.long)


@pytest.mark.parametrize(
    "frontend,pooling",
    [
        ("logmel_mean", MeanPooling),
        ("logmel_meanvar", MaxPooling),
        ("mfcc_none", MeanPooling),
        ("logmel_none", SelfAttentionPooling),
    ],
)
@pytest.mark.kernel_path
def test_mel_graph_per_layer_front_end_first(
    cbuild: Path, tmp_path: Path, frontend: str, pooling: type
) -> None:
    """Every node of the graph against PyTorch's own (unfolded) modules, the front end
    against kwsnet's LogMel/MFCC (torchaudio tables), logits within the gate's tolerance."""
    torch.manual_seed(0)
    kind, norm = frontend.split("_")
    fe = _logmel(norm) if kind == "logmel" else MFCC(n_fft=480, win_length=480, n_mfcc=13)
    model = _randomize_bn(_MelClassifier(fe.eval(), pooling))
    graph = trace_model(model, CLIP)
    kinds = [n.kind for n in graph.nodes]
    assert kinds[0] == "FrontEnd" and "Add" in kinds and kinds[-1] == "Linear"
    assert graph.nodes[0].path == "frontend"
    write_graph(graph, tmp_path / "m.kwsn")
    x = _clips(8)
    with CModel(tmp_path / "m.kwsn") as cm:
        assert cm.layer_names[0] == "FrontEnd" and cm.input_len == CLIP
        rep = run_parity(model, [x[:4], x[4:]], cm, graph=graph, per_layer=True)
        out = cm.forward(x.numpy())
    assert rep.ok and rep.n == 8, rep.lines()
    assert [d.kind for d in rep.layers] == kinds and rep.layers[0].kind == "FrontEnd"
    assert rep.fold_delta is not None and rep.fold_delta <= LOGIT_RTOL * max(1.0, rep.max_ref)
    # log-mel: |log| is O(10); front end and every layer within a few ulp of their scale
    assert rep.layers[0].max_rel < 1e-5, rep.lines()
    assert max(d.max_rel for d in rep.layers) < 1e-4, rep.lines()
    with torch.no_grad():
        ref = model.head(model.embed(x, _full_lengths(x))).numpy()
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(out, ref, rtol=0, atol=LOGIT_RTOL * scale * 10)


@pytest.mark.kernel_path
def test_features_as_input_and_bn_folding(cbuild: Path, tmp_path: Path) -> None:
    """Without the front end the file's input is [n_mels, frames]; folding BN into the convs
    changes the float32 logits by no more than rounding (measured, not assumed zero)."""
    torch.manual_seed(1)
    model = _randomize_bn(_MelClassifier(_logmel().eval()))
    graph = trace_model(model, CLIP, include_frontend=False)
    assert graph.input_shape == (40, 26) and graph.nodes[0].kind == "Conv1dEx"
    data = graph_bytes(graph)
    assert struct.unpack_from("<I", data, 4)[0] == 2  # format version 2
    (tmp_path / "f.kwsn").write_bytes(data)
    x = _clips(6, seed=1)
    with torch.no_grad():
        feats = model.frontend(x, _full_lengths(x))[0].transpose(1, 2)
        ref = model.head(model.backbone(model.frontend(x, _full_lengths(x))[0])).numpy()
    delta = folding_delta(graph, feats)
    assert delta <= 1e-5 * max(1.0, float(np.abs(ref).max())), delta
    with CModel(tmp_path / "f.kwsn") as cm:
        out = cm.forward(feats.reshape(6, -1).numpy())
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_memory_plan_matches_python_mirror(cbuild: Path, tmp_path: Path) -> None:
    """kwsn_arena_bytes is the liveness plan (kwsnet.export.cnative.plan_arena, step for
    step), smaller than a buffer per tensor, and a v1 chain file still loads."""
    from kwsnet.export.frontend import CFrontend

    model = _randomize_bn(_MelClassifier(_logmel().eval()))
    graph = trace_model(model, CLIP)
    write_graph(graph, tmp_path / "m.kwsn")
    tensors = graph.run(torch.zeros(1, 1, CLIP))
    sizes = [t.numel() for t in tensors[1:]]
    scratch = [CFrontend(graph.nodes[0].tables).scratch_floats(CLIP)]
    for n, t_out in zip(graph.nodes, tensors[1:], strict=True):
        if n.kind == "Conv1dEx":  # mirrors kwsn_conv1d_ex_scratch_floats: stride phases
            m = n.module
            k, s, d = m.kernel_size[0], m.stride[0], m.dilation[0]
            scratch.append(m.in_channels * s * (t_out.shape[-1] + d * (k - 1) // s + 1) + 32)
    over = [n.kind in _OVERWRITES_INPUT for n in graph.nodes]
    want = plan_arena(sizes, [n.inputs for n in graph.nodes], over, max(scratch))
    with CModel(tmp_path / "m.kwsn") as cm:
        assert cm.arena_bytes == want
        assert cm.arena_bytes < sum(-(-4 * s // 64) * 64 for s in sizes) + 4 * max(scratch) + 64
        assert cm.ops == sum(cm.layer_ops) and cm.layer_ops[0] > 0
    chain = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(6, 2))
    v1 = model_bytes(chain, (2, 3))
    assert struct.unpack_from("<I", v1, 4)[0] == 1
    (tmp_path / "v1.kwsn").write_bytes(v1)
    x = torch.randn(3, 6)
    with CModel(tmp_path / "v1.kwsn") as cm, torch.no_grad():
        np.testing.assert_allclose(
            cm.forward(x.numpy()), chain(x.reshape(3, 2, 3)).numpy(), atol=1e-6
        )


@pytest.mark.parametrize(
    "ci,co,k,stride,pad,dil,groups,L",
    [
        (3, 5, 3, 1, 1, 1, 1, 17),
        (4, 6, 5, 2, 2, 1, 1, 33),
        (6, 6, 3, 1, 2, 2, 6, 40),  # depthwise, dilated
        (4, 8, 3, 3, 0, 2, 2, 50),  # grouped, stride 3, no padding
        (2, 3, 1, 2, 0, 1, 1, 9),  # 1x1 stride-2 shortcut
    ],
)
@pytest.mark.kernel_path
def test_conv1d_ex_against_torch(
    cbuild: Path,
    tmp_path: Path,
    ci: int,
    co: int,
    k: int,
    stride: int,
    pad: int,
    dil: int,
    groups: int,
    L: int,
) -> None:
    """Conv1d with stride, padding, dilation and groups, one C layer against torch."""
    from kwsnet.export.graph import Graph, Node

    torch.manual_seed(k + stride + dil)
    conv = nn.Conv1d(ci, co, k, stride, pad, dil, groups).eval()
    g = Graph((ci, L))
    g.add(Node("Conv1dEx", "conv", (0,), lambda xs: conv(xs[0]), conv))
    write_graph(g, tmp_path / "c.kwsn")
    x = torch.randn(5, ci, L) * 2
    with torch.no_grad():
        ref = conv(x).reshape(5, -1).numpy()
    with CModel(tmp_path / "c.kwsn") as cm:
        out = cm.forward(x.reshape(5, -1).numpy())
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.kernel_path
def test_matchboxnet_traced_and_run_through_c(cbuild: Path, tmp_path: Path) -> None:
    """MatchboxNet (depthwise + pointwise sub-blocks, residual adds, a dilated epilogue) on
    MFCCs, through the same tracer and ops, layer by layer against PyTorch."""
    from kwsnet.models.matchboxnet import MatchboxNet

    torch.manual_seed(3)
    model = _MelClassifier(MFCC(n_fft=480, win_length=480, n_mfcc=16).eval())
    model.backbone = MatchboxNet(16, 2, 2, 8, 12, 12, 5, 7, 9, 2)
    model.head = LinearHead(12, 4)
    model = _randomize_bn(model, seed=3)
    graph = trace_model(model, CLIP)
    assert sum(n.kind == "Add" for n in graph.nodes) == 2
    write_graph(graph, tmp_path / "mb.kwsn")
    x = _clips(4, seed=7)
    with CModel(tmp_path / "mb.kwsn") as cm:
        rep = run_parity(model, [x], cm, graph=graph, per_layer=True)
    assert rep.ok and max(d.max_rel for d in rep.layers) < 1e-4, rep.lines()
    assert rep.max_abs <= 10 * LOGIT_RTOL * max(1.0, rep.max_ref), rep.lines()


def test_unsupported_parts_are_named_with_their_path() -> None:
    from kwsnet.nn.pooling import SelfAttentionMaxPooling

    model = _MelClassifier(_logmel().eval(), SelfAttentionMaxPooling)
    with pytest.raises(ExportError, match="SelfAttentionMaxPooling at 'backbone.pooling'"):
        trace_model(model, CLIP)
    model = _MelClassifier(_logmel().eval())
    model.backbone.blocks[0].shortcut = nn.Sequential(nn.Conv1d(8, 8, 1), nn.GELU())
    with pytest.raises(ExportError, match="backbone.blocks.0.shortcut"):
        trace_model(model, CLIP)


# ---------------------------------------------------------------- hostile v2 files


def _v2(
    input_shape: tuple[int, int], layers: list[tuple[int, list[int], list[int], int | list[float]]]
) -> bytes:
    """A v2 file: header, records (type, inputs, ints, floats: a count of zeros or values), CRC."""
    body = struct.pack("<4s6I", b"KWSN", 2, 16000, 2, *input_shape, len(layers))
    for kind, ins, ints, floats in layers:
        vals = [0.0] * floats if isinstance(floats, int) else floats
        body += struct.pack(
            f"<4I{len(ins)}I{len(ints)}i", kind, len(ins), len(ints), len(vals), *ins, *ints
        )
        body += struct.pack(f"<{len(vals)}f", *vals)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


_RELU, _ADD, _CONVX, _FE, _LIN = 4, 11, 10, 9, 8


def _hostile_v2() -> dict[str, tuple[bytes, str]]:
    big = 1 << 20
    return {
        "forward_reference": (_v2((1, 8), [(_RELU, [2], [], 0), (_RELU, [1], [], 0)]), "tensor id"),
        "self_reference": (_v2((1, 8), [(_RELU, [1], [], 0)]), "tensor id"),
        "no_inputs": (_v2((1, 8), [(_RELU, [], [], 0)]), "tensor id"),
        "three_inputs": (_v2((1, 8), [(_ADD, [0, 0, 0], [], 0)]), "tensor id"),
        "add_one_input": (_v2((1, 8), [(_ADD, [0], [], 0)]), "bad layer parameters"),
        "add_shapes": (
            _v2((2, 8), [(_CONVX, [0], [2, 1, 1, 1, 0, 1, 1, 0], 2), (_ADD, [0, 1], [], 0)]),
            "do not chain",
        ),
        "conv_kernel_huge": (
            _v2((1, big), [(_CONVX, [0], [1, 1, 1 << 20, 1, 0, 1, 1, 0], 0)]),
            "runtime limits",
        ),
        "conv_stride_huge": (
            _v2((1, 8), [(_CONVX, [0], [1, 1, 1, 1 << 30, 0, 1, 1, 0], 1)]),
            "runtime limits",
        ),
        "conv_negative_pad": (
            _v2((1, 8), [(_CONVX, [0], [1, 1, 1, 1, -1, 1, 1, 0], 1)]),
            "bad layer parameters",
        ),
        "conv_groups": (
            _v2((3, 8), [(_CONVX, [0], [3, 2, 1, 1, 0, 1, 2, 0], 3)]),
            "bad layer parameters",
        ),
        "conv_too_short": (
            _v2((1, 4), [(_CONVX, [0], [1, 1, 3, 1, 0, 4, 1, 0], 3)]),
            "do not chain",
        ),
        "frontend_fft_huge": (
            _v2((1, 8), [(_FE, [0], [1 << 30, 160, 40, 40, 1, 1, 0], 0)]),
            "runtime limits",
        ),
        "frontend_floats": (
            _v2((1, 1000), [(_FE, [0], [16, 4, 2, 2, 1, 0, 0], 3)]),
            "bad layer parameters",
        ),
        "frontend_eps_zero": (
            _v2((1, 1000), [(_FE, [0], [16, 4, 2, 2, 1, 0, 0], 1 + 16 + 18)]),
            "bad layer parameters",
        ),
        "frontend_two_channels": (
            _v2((2, 1000), [(_FE, [0], [16, 4, 2, 2, 1, 0, 0], [1e-6] + [0.0] * 34)]),
            "do not chain",
        ),
        "attn_pool_floats": (_v2((2, 8), [(12, [0], [2], 2)]), "bad layer parameters"),
        "attn_pool_channels": (_v2((2, 8), [(12, [0], [3], 4)]), "do not chain"),
        "linear_graph": (_v2((1, 4), [(_LIN, [0], [4, 1, 0], 4)]), "do not chain"),
        "inputs_truncated": (_v2((1, 8), [(_ADD, [0, 0], [], 0)])[:-12] + b"\0" * 4, "CRC"),
    }


def test_hostile_v2_files_refused_fast(cbuild: Path, tmp_path: Path) -> None:
    """Each crafted v2 file gets its status in < 1 s of CPU time through ctypes and the
    ASan/UBSan build (which would report any out-of-bounds read of a tensor id or a table)."""
    files = []
    for name, (data, expect) in _hostile_v2().items():
        f = tmp_path / f"{name}.kwsn"
        f.write_bytes(data)
        files.append((f, expect))
        t0 = time.thread_time()  # this thread's CPU time: the work, not the wall clock
        with pytest.raises(CRuntimeError, match=expect):
            CModel(f)
        assert time.thread_time() - t0 < 1.0, name
    # a truncated v2 record with its CRC repaired: the parser's bounds check, not the CRC
    b = bytearray(_v2((1, 8), [(_ADD, [0, 0], [], 0)]))
    b[24:28] = struct.pack("<I", 2)
    body = bytes(b[:-4])
    (tmp_path / "short.kwsn").write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(CRuntimeError, match="truncated"):
        CModel(tmp_path / "short.kwsn")
    proc = subprocess.run(
        [str(cbuild / "load_check_san"), *[str(f) for f, _ in files]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (f, expect), line in zip(files, proc.stdout.splitlines(), strict=True):
        assert line.startswith(str(f)) and expect in line, line


def test_fuzz_seeds_include_a_v2_model(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gfs", CNATIVE_DIR / "tests/gen_fuzz_seeds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seeds = mod.v2_model_seeds()
    assert seeds and all(struct.unpack_from("<I", d, 4)[0] == 2 for d in seeds.values())


# ---------------------------------------------------------------- paths, header, CLI, ONNX


@pytest.fixture(scope="module")
def mel_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(2)
    model = _randomize_bn(_MelClassifier(_logmel().eval()), seed=2)
    path = tmp_path_factory.mktemp("mel") / "mel.kwsn"
    write_graph(trace_model(model, CLIP), path)
    return model, path


def test_kernel_paths_byte_identical_v2(cbuild: Path, mel_file: tuple, tmp_path: Path) -> None:
    paths = isa_paths()
    if len(paths) < 2:
        pytest.skip(f"this CPU offers only {paths}")
    x = _clips(4, seed=3).numpy().astype("<f4")
    x.tofile(tmp_path / "x.f32")
    outs = {}
    for isa in paths:
        env = {**os.environ, "KWSN_ISA": isa}
        proc = subprocess.run(
            [str(cbuild / "kwsnet-infer"), str(mel_file[1]), "--raw", str(tmp_path / "x.f32")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        head, *rows = proc.stdout.splitlines()
        assert head.endswith(f"kernels {isa}")
        outs[isa] = rows
    for isa in paths[1:]:
        assert outs[isa] == outs[paths[0]], isa


@pytest.mark.kernel_path
def test_c_header_mel_model_matches_file_model(
    cbuild: Path, mel_file: tuple, tmp_path: Path
) -> None:
    """The MCU path: static tables and arena, -Werror, plain C loops (no vector extensions),
    the runtime core and the front end only; logits equal the file model's bit for bit."""
    from kwsnet.export.pipeline import export_model

    model, path = mel_file
    export_model(model, "c-header", tmp_path / "model.h", clip_samples=CLIP)
    x = _clips(5, seed=4).numpy().astype("<f4")
    assert_mcu_matches_file_model(tmp_path, x, path, timeout=60)


def test_infer_cli_on_a_wav(cbuild: Path, mel_file: tuple, tmp_path: Path) -> None:
    model, path = mel_file
    x = _clips(1, seed=5)[0].numpy()
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(tmp_path / "c.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    proc = subprocess.run(
        [str(cbuild / "kwsnet-infer"), str(path), str(tmp_path / "c.wav")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    name, cls, *logits = proc.stdout.splitlines()[1].split()
    a = torch.from_numpy(pcm.astype(np.float32) / 32768)[None]
    with torch.no_grad():
        ref = model.head(model.embed(a, _full_lengths(a))).numpy()
    out = np.array(logits, np.float32)[None]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    same, near, _ = compare_predictions(ref, out)
    assert int(cls) == int(out.argmax()) and (same | near).all()


@pytest.mark.kernel_path
def test_onnx_with_dft_front_end(mel_file: tuple, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from kwsnet.export.onnx_export import export_onnx_model

    model, _ = mel_file
    graph = trace_model(model, CLIP)
    export_onnx_model(model, graph, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    x = _clips(3, seed=6)
    out = sess.run(None, {"audio": x.numpy()})[0]
    with torch.no_grad():
        ref = model.head(model.embed(x, _full_lengths(x))).numpy()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


# ---------------------------------------------------------------- the gate


def test_class_floor_fails_a_collapsed_model() -> None:
    """Identical predictions on a model that predicts one class pass nothing."""
    rep = ParityReport(n=120, n_same=120, n_classes=6, class_floor=True)
    rep.torch_counts = rep.c_counts = [120, 0, 0, 0, 0, 0]
    assert not rep.ok and "FAILED" in rep.lines()[1]
    rep.torch_counts = rep.c_counts = [20, 20, 20, 20, 20, 20]
    assert rep.ok and "passed" in rep.lines()[1]
    rep.torch_counts = rep.c_counts = [40, 40, 40, 0, 0, 0]  # half of the classes: collapse
    assert not rep.ok
    rep.class_floor = False
    assert rep.ok and "not applied" in rep.lines()[1]


@pytest.mark.kernel_path
def test_tiny_trained_mel_model_gated_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Train a tiny kws_cnn_mel on the learnable synthetic corpus, then `kwsnet parity
    --ckpt_path --per_layer` through C: every prediction identical, the class floor passed,
    the per-layer table starting with the front end; `kwsnet export` of the checkpoint."""
    from kwsnet.cli import main

    from .conftest import LEARNABLE_SAMPLES, LEARNABLE_SYNTHETIC, QUIET_FIT

    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed for parity")
    config = str(Path(__file__).resolve().parents[1] / "configs" / "kws_cnn_mel.yaml")
    shrink = [
        "--data.source_options",
        LEARNABLE_SYNTHETIC,
        "--data.clip_samples",
        str(LEARNABLE_SAMPLES),
        "--data.batch_size",
        "8",
        "--model.backbone.init_args.stem_channels",
        "8",
        "--model.backbone.init_args.channels",
        "[8, 12]",
        "--model.backbone.init_args.strides",
        "[2, 2]",
        "--model.backbone.init_args.kernel_size",
        "5",
        "--model.augment",
        "null",
        "--model.frontend.init_args.spec_augment",
        "null",
        "--model.optimizer.init_args.lr",
        "0.01",
    ]
    root = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            config,
            *shrink,
            *QUIET_FIT,
            "--data.root",
            str(tmp_path / "data"),
            "--trainer.max_epochs",
            "8",
            "--trainer.default_root_dir",
            str(root),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    ckpt = root / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    capsys.readouterr()
    rc = main(["parity", "--ckpt_path", str(ckpt), "--per_layer"])
    text = capsys.readouterr().out
    assert rc == 0, text
    lines = text.splitlines()
    n = int(lines[0].split("/")[1].split()[0])
    assert lines[0].startswith(f"{n}/{n} predictions identical"), text
    assert "class floor passed" in lines[1], text
    layer_rows = [ln for ln in lines if ln.strip().startswith("layer")]
    assert "FrontEnd" in layer_rows[0] and "frontend" in layer_rows[0], text
    out = str(tmp_path / "m.kwsn")  # c-header and onnx: the tests above
    assert main(["export", "--ckpt_path", str(ckpt), "--format", "cnative", "--out", out]) == 0
    assert (tmp_path / "m.kwsn").read_bytes()[4:8] == struct.pack("<I", 2)
