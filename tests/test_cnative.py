"""The C runtime against PyTorch: golden data, per-layer and full-model parity via ctypes, the
CLI, corrupted model files (also under ASan/UBSan), and a bounded fuzz run of the loader."""

from __future__ import annotations

import importlib.util
import re
import shutil
import struct
import subprocess
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.export.cnative import arena_bytes, model_bytes, write_model
from kwsnet.export.layers import collect_named_layers, input_shape_of
from kwsnet.export.parity import LOGIT_RTOL, compare_predictions, logit_tolerance
from kwsnet.export.runtime import CNATIVE_DIR, CModel, CRuntimeError, build_cnative, cpu_flags

from .cnative_helpers import cmodel_on, isa_paths

BUILD = CNATIVE_DIR / "build"


def _load_gen_golden():
    spec = importlib.util.spec_from_file_location("gen_golden", CNATIVE_DIR / "tests/gen_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen_golden = _load_gen_golden()


@pytest.fixture(scope="module")
def cbuild() -> Path:
    """Build the runtime, the C tests and the sanitizer builds (skip without a toolchain)."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make and gcc are needed to build cnative")
    build_cnative("all")
    build_cnative("tests")
    build_cnative("sanitize")
    return BUILD


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("golden")
    gen_golden.generate(out, seed=0)
    return out


def _run(args: list[str | Path], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, **kw)


def test_golden_data_in_c(cbuild: Path, golden: Path) -> None:
    proc = _run([cbuild / "test_golden", golden])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    n = len((golden / "manifest.txt").read_text().splitlines()) + 2  # + table, fp probe
    assert f"{n}/{n} golden cases passed" in proc.stdout
    assert "ok   rejected table leaves an empty model" in proc.stdout
    assert "command" in (golden / "golden.json").read_text()


@pytest.mark.kernel_path
@pytest.mark.parametrize("name", sorted(gen_golden.layer_cases()))
def test_layer_parity(cbuild: Path, tmp_path: Path, name: str) -> None:
    """Each layer kind alone, random weights and inputs, C via ctypes vs PyTorch."""
    build, shape = gen_golden.layer_cases()[name]
    torch.manual_seed(1)
    seq = build().eval()
    x = torch.randn(16, *shape) * 3.0
    with torch.no_grad():
        ref = seq(x).reshape(16, -1).numpy()
    write_model(collect_named_layers(seq), shape, tmp_path / "m.kwsn")
    with CModel(tmp_path / "m.kwsn") as cm:
        out = cm.forward(x.numpy().reshape(16, -1))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * max(1.0, np.abs(ref).max()))


def _tones(n: int, samples: int, n_classes: int, g: torch.Generator) -> tuple:
    """A toy task: class k is a tone at frequency (k + 1) * base, plus noise."""
    y = torch.randint(0, n_classes, (n,), generator=g)
    t = torch.arange(samples, dtype=torch.float32)
    phase = torch.rand(n, 1, generator=g) * 6.28
    x = torch.sin(t * (y[:, None] + 1).float() * 0.004 + phase)
    return x + 0.3 * torch.randn(n, samples, generator=g), y


def assert_logits_match(out: np.ndarray, ref: np.ndarray, rtol: float = LOGIT_RTOL) -> None:
    """C logits ``out`` vs PyTorch's ``ref`` ``[B, C]``: within ``rtol`` scaled to the largest
    |logit| (absolute parts of a sum cancel, so a relative bound per element is not enough),
    and the same argmax wherever PyTorch's top-2 margin is beyond float rounding (the parity
    gate's near-tie rule, ``kwsnet.export.parity``)."""
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=rtol * scale)
    same, near_tie, _ = compare_predictions(ref, out, rtol)
    assert (same | near_tie).all(), f"argmax differs beyond a near-tie at {np.flatnonzero(~same)}"


def _separating_head(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Set ``model.head.fc`` from the embeddings of ``x`` so that classes are well separated:
    row k is the centred embedding of prototype clip k (farthest-point picks), so prototype k
    scores ``|e_k - m|`` on class k and ``cos * |e_k - m|`` on every other class. Returns the
    prototypes' indices (prototype k is predicted as class k, with a margin, on any CPU)."""
    fc = model.head.fc
    with torch.no_grad():
        e = model.backbone(x).double()
        m = e.mean(0)
        c = e - m
        picks = [int(c.norm(dim=1).argmax())]
        while len(picks) < fc.out_features:
            d = torch.cdist(c, c[picks]).min(dim=1).values
            picks.append(int(d.argmax()))
        rows = c[picks] / c[picks].norm(dim=1, keepdim=True)
        w = 10.0 * rows / c.norm(dim=1).max()  # logits of order 10
        fc.weight.copy_(w.float())
        fc.bias.copy_((-w @ m).float())
    return torch.tensor(picks)


@pytest.mark.kernel_path
@pytest.mark.parametrize("placement", ["per_conv", "end", "none"])
def test_full_model_parity_separated(cbuild: Path, tmp_path: Path, placement: str) -> None:
    """A tiny RawConv per norm placement with random convs and norms and a head built to
    separate 4 classes (no training, so no dependence on how an optimiser ran on this CPU):
    every prediction identical or a near-tie, all 4 classes predicted, logits close."""
    from kwsnet.export.parity import run_parity

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = gen_golden._randomize_norms(
        gen_golden.TinyClassifier(placement, input_samples=2048, n_classes=4)
    )
    x, _ = _tones(128, 2048, 4, g)
    protos = _separating_head(model, x)
    with torch.no_grad():
        ref = model(x).numpy()
    _, _, margin = compare_predictions(ref, ref)
    tol = logit_tolerance(ref)
    # by construction: prototype k is class k, far beyond float rounding
    assert ref[protos].argmax(1).tolist() == [0, 1, 2, 3]
    assert (margin[protos] > 1e3 * tol[protos]).all(), margin[protos]
    write_model(collect_named_layers(model), input_shape_of(model), tmp_path / "m.kwsn")
    with CModel(tmp_path / "m.kwsn") as cm:
        out = cm.forward(x.numpy())
        rep = run_parity(model, [x[:64], x[64:]], cm)
    assert_logits_match(out, ref)
    assert out[protos].argmax(1).tolist() == [0, 1, 2, 3]
    assert rep.ok and rep.n == 128 and rep.torch_classes == rep.c_classes == {0, 1, 2, 3}


@pytest.mark.kernel_path
def test_full_size_model_per_layer(cbuild: Path, tmp_path: Path) -> None:
    """The real 16000-sample RawConv: every intermediate output via kwsn_forward_until."""
    from kwsnet.export.parity import run_parity

    torch.manual_seed(0)
    model = gen_golden._randomize_norms(_FullSize("per_conv"))
    named = collect_named_layers(model)
    write_model(named, input_shape_of(model), tmp_path / "m.kwsn")
    x = torch.randn(8, 16000) * 0.3
    with CModel(tmp_path / "m.kwsn") as cm:
        rep = run_parity(model, [x[:4], x[4:]], cm, named, input_shape_of(model))
        # the Python mirror of kwsn_arena_bytes: ping-pong buffers + conv scratch
        assert cm.arena_bytes == arena_bytes(named, input_shape_of(model))
    assert rep.ok and rep.n == 8
    assert rep.max_abs <= LOGIT_RTOL * max(1.0, rep.max_ref)
    assert [d.kind for d in rep.layers][:3] == ["AvgPool1d", "Conv1d", "LayerNorm"]
    assert max(d.max_rel for d in rep.layers) < 1e-5
    assert rep.lines()[0].startswith(f"{rep.n_same}/8 predictions identical")


class _FullSize(nn.Module):
    """The default 16000-sample RawConv with a 6-class LinearHead."""

    def __init__(self, placement: str) -> None:
        super().__init__()
        from kwsnet.models.raw_conv import RawConv
        from kwsnet.nn.heads import LinearHead

        self.backbone = RawConv(norm_placement=placement)
        self.head = LinearHead(64, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _write_wav_int16(path: Path, x: np.ndarray, rate: int = 16000, channels: int = 1) -> None:
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _write_wav_float(path: Path, x: np.ndarray, rate: int = 16000) -> None:
    data = x.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
    riff += struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)


def _parse_cli(stdout: str) -> list[tuple[str, int, np.ndarray]]:
    rows = []
    for line in stdout.splitlines():
        if line.startswith("#"):
            continue
        name, cls, *logits = line.split()
        rows.append((name, int(cls), np.array(logits, dtype=np.float32)))
    return rows


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(3)
    model = gen_golden._randomize_norms(gen_golden.TinyClassifier("per_conv", 1024))
    path = tmp_path_factory.mktemp("tiny") / "tiny.kwsn"
    write_model(collect_named_layers(model), input_shape_of(model), path)
    return model, path


@pytest.mark.kernel_path
def test_cli_wav_and_raw(cbuild: Path, tiny_model: tuple, tmp_path: Path) -> None:
    model, path = tiny_model
    g = np.random.default_rng(0)
    clips = [0.5 * g.standard_normal(1024).clip(-1.9, 1.9) / 2 for _ in range(3)]
    _write_wav_int16(tmp_path / "a.wav", clips[0])
    _write_wav_float(tmp_path / "b.wav", clips[1].astype(np.float32))
    proc = _run([cbuild / "kwsnet-infer", path, tmp_path / "a.wav", tmp_path / "b.wav"])
    assert proc.returncode == 0, proc.stderr
    assert "arena_bytes" in proc.stdout and "weight_bytes" in proc.stdout
    rows = _parse_cli(proc.stdout)
    a = np.round(clips[0] * 32767).astype(np.int16).astype(np.float32) / 32768
    x = torch.from_numpy(np.stack([a, clips[1].astype(np.float32)]))
    with torch.no_grad():
        ref = model(x).numpy()
    logits = np.stack([r[2] for r in rows])
    assert [r[1] for r in rows] == logits.argmax(1).tolist()  # the CLI's class: C's argmax
    assert_logits_match(logits, ref)
    batch = np.stack(clips).astype("<f4")
    batch.tofile(tmp_path / "batch.f32")
    proc = _run([cbuild / "kwsnet-infer", path, "--raw", tmp_path / "batch.f32"])
    assert proc.returncode == 0, proc.stderr
    rows = _parse_cli(proc.stdout)
    with torch.no_grad():
        ref = model(torch.from_numpy(batch)).numpy()
    logits = np.stack([r[2] for r in rows])
    assert [r[1] for r in rows] == logits.argmax(1).tolist()
    assert_logits_match(logits, ref)
    proc = _run([cbuild / "kwsnet-infer", "--softmax", path, "--raw", tmp_path / "batch.f32"])
    probs = np.stack([r[2] for r in _parse_cli(proc.stdout)])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_cli_bad_inputs(cbuild: Path, tiny_model: tuple, tmp_path: Path) -> None:
    _, path = tiny_model
    exe = cbuild / "kwsnet-infer"
    _write_wav_int16(tmp_path / "short.wav", np.zeros(1000))
    proc = _run([exe, path, tmp_path / "short.wav"])
    assert proc.returncode == 1 and "1000 samples, model expects 1024" in proc.stderr
    _write_wav_int16(tmp_path / "stereo.wav", np.zeros(2048), channels=2)
    proc = _run([exe, path, tmp_path / "stereo.wav"])
    assert proc.returncode == 1 and "mono" in proc.stderr
    _write_wav_int16(tmp_path / "8k.wav", np.zeros(1024), rate=8000)
    proc = _run([exe, path, tmp_path / "8k.wav"])
    assert proc.returncode == 1 and "sample rate" in proc.stderr
    (tmp_path / "junk.wav").write_bytes(b"not a wav file at all")
    assert "RIFF" in _run([exe, path, tmp_path / "junk.wav"]).stderr
    np.zeros(1000, "<f4").tofile(tmp_path / "bad.f32")
    proc = _run([exe, path, "--raw", tmp_path / "bad.f32"])
    assert proc.returncode == 1 and "whole number of rows" in proc.stderr
    (tmp_path / "bad.kwsn").write_bytes(b"KWSN")
    proc = _run([exe, tmp_path / "bad.kwsn", tmp_path / "short.wav"])
    assert proc.returncode == 1 and "truncated" in proc.stderr
    assert _run([exe]).returncode == 2


def _fix_crc(b: bytearray) -> bytes:
    b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])) & 0xFFFFFFFF)
    return bytes(b)


def _corruptions(good: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, expected status message) for a tiny RawConv file."""
    header = 28  # magic + 6 u32
    first = header  # first layer record: AvgPool1d (type, n_ints=2, n_floats=0, k, s)
    conv = header + 5 * 4  # second record: Conv1d
    out: dict[str, tuple[bytes, str]] = {
        "empty": (b"", "truncated"),
        "magic_only": (good[:4], "truncated"),
        "header_cut": (good[:20], "truncated"),
        "no_crc": (good[:-4], "CRC"),
        "half": (good[: len(good) // 2], "CRC"),
        "bad_magic": (b"KWSX" + good[4:], "bad magic"),
        "bad_crc": (good[:-1] + bytes([good[-1] ^ 1]), "CRC"),
        "weight_flip": (good[:200] + bytes([good[200] ^ 0x40]) + good[201:], "CRC"),
    }
    b = bytearray(good)
    b[4:8] = struct.pack("<I", 99)
    out["bad_version"] = (_fix_crc(b), "version")
    b = bytearray(good)
    b[conv + 12 : conv + 16] = struct.pack("<i", 3)  # conv in_ch 1 -> 3: shapes do not chain
    b[conv + 8 : conv + 12] = struct.pack("<I", struct.unpack_from("<I", good, conv + 8)[0])
    # weight count no longer matches: the message names the layer and the check
    out["conv_in_ch"] = (
        _fix_crc(b),
        "bad layer parameters: layer 1 (Conv1d): l->desc.n_floats != nw",
    )
    b = bytearray(good)
    b[first + 12 : first + 16] = struct.pack("<i", 5000)  # pool kernel longer than input
    out["pool_too_long"] = (_fix_crc(b), "shapes do not chain: layer 0 (AvgPool1d)")
    b = bytearray(good)
    b[first : first + 4] = struct.pack("<I", 77)
    out["unknown_layer"] = (_fix_crc(b), "unknown layer type")
    b = bytearray(good)
    b[conv + 8 : conv + 12] = struct.pack("<I", 0x03FFFFFF)
    out["huge_floats"] = (_fix_crc(b), "truncated")
    b = bytearray(good)
    b[24:28] = struct.pack("<I", 0xFFFFFFFF)
    out["huge_layer_count"] = (_fix_crc(b), "runtime limits")
    b = bytearray(good)
    b[24:28] = struct.pack("<I", struct.unpack_from("<I", good, 24)[0] + 1)
    out["extra_layer_count"] = (_fix_crc(b), "truncated")
    b = bytearray(good[:-4] + b"\0\0\0\0" + good[-4:])
    out["trailing"] = (_fix_crc(b), "trailing")
    b = bytearray(good)
    b[16:20] = struct.pack("<I", 1000)  # input length 1000 instead of 1024: conv/LN mismatch
    out["wrong_input_len"] = (_fix_crc(b), "shapes do not chain")
    return out


def test_corrupted_files_rejected(cbuild: Path, tiny_model: tuple, tmp_path: Path) -> None:
    _, path = tiny_model
    good = path.read_bytes()
    files = []
    for name, (data, expect) in _corruptions(good).items():
        f = tmp_path / f"{name}.kwsn"
        f.write_bytes(data)
        files.append((f, expect))
        with pytest.raises(CRuntimeError, match=re.escape(expect)):
            CModel(f)
    # the same files through the sanitizer build: a status per file, never a crash
    proc = _run([cbuild / "load_check_san", *[f for f, _ in files], path])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for (f, expect), line in zip(files, lines, strict=False):
        assert line.startswith(str(f)) and expect in line, line
    assert lines[-1].endswith(": ok")


def test_c_api_argument_errors(cbuild: Path) -> None:
    proc = _run([cbuild / "load_check_san", "--api"])
    assert proc.returncode == 0 and "api ok" in proc.stdout, proc.stdout + proc.stderr


def test_wrong_input_length_from_python(cbuild: Path, tiny_model: tuple) -> None:
    _, path = tiny_model
    with CModel(path) as cm, pytest.raises(CRuntimeError, match="input length"):
        cm.forward(np.zeros((1, 1000), np.float32))


def test_fuzz_loader_bounded(cbuild: Path, golden: Path, tmp_path: Path) -> None:
    """A few seconds of mutation fuzzing under ASan/UBSan, seeded with real exported files."""
    seeds = sorted(golden.glob("*.kwsn"))
    good = (golden / "rawconv_per_conv.kwsn").read_bytes()
    for name, (data, _) in _corruptions(good).items():
        (tmp_path / f"{name}.kwsn").write_bytes(data)
    seeds += sorted(tmp_path.glob("*.kwsn"))
    proc = _run([cbuild / "fuzz_loader_san", "-seconds=2", "-seed=1", *seeds])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no sanitizer reports" in proc.stdout


def test_writer_header_fields() -> None:
    """The writer's header, field by field, as kwsn_model_parse reads it."""
    seq = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(6, 2))
    data = model_bytes(seq, (2, 3), sample_rate=8000)
    magic, version, rate, ndim, d0, d1, n = struct.unpack_from("<4s6I", data)
    assert (magic, version, rate, ndim, d0, d1, n) == (b"KWSN", 1, 8000, 2, 2, 3, 3)
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    assert len(data) == 28 + 12 + 12 + (12 + 12 + 4 * 14) + 4


def test_directory_and_empty_batch_are_named_errors(
    cbuild: Path, tiny_model: tuple, tmp_path: Path
) -> None:
    _, path = tiny_model
    with pytest.raises(CRuntimeError, match="(?i)i/o|read"):
        CModel(tmp_path)  # a directory: an I/O error, not "too big"
    (tmp_path / "empty.f32").write_bytes(b"")
    proc = _run([cbuild / "kwsnet-infer", path, "--raw", tmp_path / "empty.f32"])
    assert proc.returncode == 1 and "0 bytes" in proc.stderr


def test_forward_from_threads_equals_serial(cbuild: Path, tiny_model: tuple) -> None:
    """One CModel shared by threads: its arena is serialised, so every row is right."""
    from concurrent.futures import ThreadPoolExecutor

    _, path = tiny_model
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((300, 1024)).astype(np.float32) for _ in range(8)]
    with CModel(path) as cm:
        serial = [cm.forward(b) for b in batches]
        with ThreadPoolExecutor(4) as pool:
            threaded = list(pool.map(cm.forward, batches))
    for a, b in zip(serial, threaded, strict=True):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------- bounded cost (issue #16)

_T_AVG, _T_CONV, _T_RELU, _T_MAX = 1, 2, 4, 5


def _crafted(input_shape: tuple[int, int], layers: list[tuple[int, list[int]]]) -> bytes:
    """A minimal model file: header, float-free layer records (type, ints), CRC."""
    body = struct.pack("<4s6I", b"KWSN", 1, 16000, 2, *input_shape, len(layers))
    for kind, ints in layers:
        body += struct.pack(f"<3I{len(ints)}i", kind, len(ints), 0, *ints)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def _crafted_cases() -> dict[str, tuple[bytes, str]]:
    """The hostile files from issue #16 -> the status message each must get, fast."""
    big = 1 << 26  # KWSN_MAX_ELEMS: the longest input the format allows
    return {
        # 52 bytes: a pool window of L/2 at stride 1 costs ~L^2/4 (days per forward before)
        "avgpool_half_window": (_crafted((1, big), [(_T_AVG, [big // 2, 1])]), "runtime limits"),
        "maxpool_half_window": (_crafted((1, big), [(_T_MAX, [big // 2, 1])]), "runtime limits"),
        # 1/256 of the size: 2.7 s (AvgPool) and 17 s (MaxPool) per forward before
        "avgpool_1_256": (_crafted((1, 1 << 18), [(_T_AVG, [1 << 17, 1])]), "runtime limits"),
        "maxpool_1_256": (_crafted((1, 1 << 18), [(_T_MAX, [1 << 17, 1])]), "runtime limits"),
        # a window within KWSN_MAX_POOL_WINDOW but 2^38 window reads in all: the op limit
        "maxpool_ops": (_crafted((1, 1 << 22), [(_T_MAX, [1 << 16, 1])]), "op count"),
        "avgpool_ops": (_crafted((1, 1 << 22), [(_T_AVG, [1 << 16, 1])]), "op count"),
        # 44 and 56 bytes asking for 512 MiB and 768 MiB arenas in format v1's ping-pong plan
        # (256 MiB and 512 MiB in v2's, which never copies the input): over the 128 MiB
        # default, refused before any malloc
        "relu_arena_512m": (_crafted((1, big), [(_T_RELU, [])]), "memory limit"),
        "avgpool_arena_768m": (
            _crafted((1, big), [(_T_RELU, []), (_T_AVG, [1, 1])]),
            "memory limit",
        ),
    }


def _run_counted(args: list[str | Path]) -> tuple[int, str, float]:
    """Run a command; return its exit code, stderr and CPU seconds: the child's own work
    (``os.wait4``), not the wall clock, which a loaded machine stretches. (Its peak RSS would
    include the forked test process's pages before the exec, so it is not used.)"""
    import os

    proc = subprocess.Popen(
        [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, usage.ru_utime + usage.ru_stime


def test_crafted_files_refused_fast(cbuild: Path, tmp_path: Path) -> None:
    """Each crafted file is refused before any large work: via ctypes in well under a second of
    this thread's CPU time; via the CLI in under 0.5 CPU seconds (a 2^38-read pooling would
    take hours); and by the sanitizer build (which would abort on a giant allocation or time
    out on a hang)."""
    import time

    files = []
    for name, (data, expect) in _crafted_cases().items():
        assert len(data) <= 64, (name, len(data))
        f = tmp_path / f"{name}.kwsn"
        f.write_bytes(data)
        files.append((f, expect))
        t0 = time.thread_time()
        with pytest.raises(CRuntimeError, match=re.escape(expect)):
            CModel(f)
        assert time.thread_time() - t0 < 1.0, name
        code, err, cpu = _run_counted([cbuild / "kwsnet-infer", f, "--raw", f])
        assert code == 1 and expect in err, (name, err)
        assert cpu < 0.5, (name, cpu)
    proc = _run([cbuild / "load_check_san", *[f for f, _ in files]])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (f, expect), line in zip(files, proc.stdout.splitlines(), strict=True):
        assert line.startswith(str(f)) and expect in line, line


def _with_weight(good: bytes, value: float) -> bytes:
    """The tiny model with its first conv weight set to ``value`` (CRC fixed)."""
    b = bytearray(good)
    conv = 28 + 5 * 4  # header, then the AvgPool1d record
    assert struct.unpack_from("<I", good, conv)[0] == _T_CONV
    b[conv + 28 : conv + 32] = struct.pack("<f", value)  # after type, n_ints, n_floats, 4 ints
    return _fix_crc(b)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_rejected(
    cbuild: Path, tiny_model: tuple, tmp_path: Path, value: float
) -> None:
    _, path = tiny_model
    good = path.read_bytes()
    f = tmp_path / "bad.kwsn"
    f.write_bytes(_with_weight(good, value))
    with pytest.raises(CRuntimeError, match="non-finite"):
        CModel(f)
    proc = _run([cbuild / "kwsnet-infer", f, "--raw", f])
    assert proc.returncode == 1 and "non-finite" in proc.stderr
    (tmp_path / "ok.kwsn").write_bytes(_with_weight(good, 0.25))
    CModel(tmp_path / "ok.kwsn").close()  # the same edit with a finite value loads


def test_op_and_arena_limits(cbuild: Path, tiny_model: tuple, tmp_path: Path) -> None:
    """Prepare counts ops per layer; the caller's limits (ctypes and CLI) refuse a model just
    over them and accept it at them; the defaults fit the full-size RawConv many times."""
    _, path = tiny_model
    with CModel(path) as cm:
        ops, arena = cm.ops, cm.arena_bytes
        assert ops == sum(cm.layer_ops) > 0 and all(o >= 0 for o in cm.layer_ops)
        kinds = dict(zip(cm.layer_names, cm.layer_ops, strict=False))
        assert kinds["Conv1d"] > 0 and kinds["Flatten"] == 0
    with pytest.raises(CRuntimeError, match="op count"):
        CModel(path, max_ops=ops - 1)
    with pytest.raises(CRuntimeError, match="memory limit"):
        CModel(path, max_arena_bytes=arena - 1)
    CModel(path, max_ops=ops, max_arena_bytes=arena).close()
    exe = cbuild / "kwsnet-infer"
    np.zeros((1, 1024), "<f4").tofile(tmp_path / "x.f32")
    proc = _run([exe, "--max-ops", ops - 1, path, "--raw", tmp_path / "x.f32"])
    assert proc.returncode == 1 and "op count" in proc.stderr
    proc = _run([exe, "--max-arena-bytes", arena - 1, path, "--raw", tmp_path / "x.f32"])
    assert proc.returncode == 1 and "memory limit" in proc.stderr
    proc = _run(
        [exe, "--max-ops", ops, "--max-arena-bytes", arena, path, "--raw", tmp_path / "x.f32"]
    )
    assert proc.returncode == 0 and f"ops {ops} " in proc.stdout, proc.stderr
    assert _run([exe, "--max-ops", "x", path, "--raw", tmp_path / "x.f32"]).returncode == 2
    # the full-size 16000-sample RawConv under the defaults: ~1.7e6 ops, ~140 kB arena
    torch.manual_seed(0)
    model = _FullSize("per_conv")
    write_model(collect_named_layers(model), input_shape_of(model), tmp_path / "full.kwsn")
    with CModel(tmp_path / "full.kwsn") as cm:
        assert cm.ops * 1000 < 4_000_000_000 and cm.arena_bytes * 1000 < 128 << 20


# ---------------------------------------------------------------- one build, every x86-64 path


# every kernel path this CPU runs (cnative_helpers.ISA_FLAGS), lowest first; None: no flag
# left to check
_ISA_FLAG = {isa: None for isa in isa_paths()}


def test_kernel_paths_byte_identical(cbuild: Path, tiny_model: tuple, tmp_path: Path) -> None:
    """KWSN_ISA forces each kernel path the CPU has; logits (printed %.9g, exact for float32)
    must be byte for byte the same on all of them, for the full-size RawConv (both norm
    placements) and the tiny model, including rows that end in partial vector tiles."""
    import os

    flags = cpu_flags()
    paths = [isa for isa, f in _ISA_FLAG.items() if f is None or f in flags]
    if len(paths) < 2:
        pytest.skip(f"this CPU offers only {paths}")
    rng = np.random.default_rng(0)
    models = {"tiny": (tiny_model[1], 1024)}
    for placement in ("per_conv", "end"):
        torch.manual_seed(0)
        m = gen_golden._randomize_norms(_FullSize(placement))
        f = tmp_path / f"full_{placement}.kwsn"
        write_model(collect_named_layers(m), input_shape_of(m), f)
        models[placement] = (f, 16000)
    for name, (f, T) in models.items():
        x = (rng.standard_normal((6, T)) * 0.3).astype("<f4")
        x[0] = 0.0  # all-zero row: signed zeros and LayerNorm's eps path
        x.tofile(tmp_path / "x.f32")
        outs = {}
        for isa in paths:
            env = {**os.environ, "KWSN_ISA": isa}
            proc = _run([cbuild / "kwsnet-infer", f, "--raw", tmp_path / "x.f32"], env=env)
            assert proc.returncode == 0, proc.stderr
            head, *rows = proc.stdout.splitlines()
            assert head.endswith(f"kernels {isa}"), head
            outs[isa] = rows
        for isa in paths[1:]:
            assert outs[isa] == outs[paths[0]], (name, isa)
        with CModel(f) as cm:  # the ctypes path runs the auto-selected kernels
            assert cm.isa == paths[-1]


def test_layernorm_relu_fusion_is_the_same_bits(cbuild: Path, tmp_path: Path) -> None:
    """prepare fuses each LayerNorm + in-place ReLU into one pass (when both run): the fused
    output equals ReLU applied to the LayerNorm's own output (kwsn_forward_until stopping
    between them runs the LayerNorm alone) bit for bit, on every kernel path, with NaN rows
    propagating as torch.relu does. And LayerNorm -> ReLU -> MaxPool1d(4) in one pass (the
    normalised values never written): the pool's output equals torch's max_pool1d of that
    ReLU output bit for bit (rows of 1000, 250 and 62: several buffers per row, windows left
    over at a row's end), NaN windows included."""
    torch.manual_seed(0)
    m = gen_golden._randomize_norms(_FullSize("per_conv"))
    f = tmp_path / "full.kwsn"
    write_model(collect_named_layers(m), input_shape_of(m), f)
    x = (np.random.default_rng(3).standard_normal((3, 16000)) * 0.3).astype(np.float32)
    x[2, 100] = np.nan  # a NaN row through LayerNorm + ReLU
    for isa in isa_paths():
        with cmodel_on(f, isa) as cm:
            assert cm.isa == isa
            lns = [i for i, n in enumerate(cm.layer_names) if n == "LayerNorm"]
            assert lns and all(cm.layer_names[i + 1] == "ReLU" for i in lns)
            assert len(lns) == 3
            for i, row in zip(lns, (1000, 250, 62), strict=True):
                ln = cm.forward_until(x, i + 1)
                fused = cm.forward_until(x, i + 2)
                want = np.where(ln < 0.0, np.float32(0.0), ln)
                assert fused.tobytes() == want.tobytes(), (isa, i)
                assert np.isnan(fused[2]).any() and not np.isnan(fused[:2]).any()
                assert cm.layer_names[i + 2] == "MaxPool1d"
                pooled = cm.forward_until(x, i + 3)
                rows = torch.from_numpy(want.reshape(3, -1, row))
                want_p = torch.nn.functional.max_pool1d(rows, 4).numpy().reshape(3, -1)
                assert pooled.shape == want_p.shape, (isa, i)
                assert pooled.tobytes() == want_p.tobytes(), (isa, i)
                assert np.isnan(pooled[2]).any() and not np.isnan(pooled[:2]).any()


@pytest.mark.parametrize(
    ("norm", "relu", "k", "shape"),
    [
        ("2d", True, 2, (6, 1100)),  # rows of 1100: 550 windows, over two 512-float buffers
        ("2d", True, 3, (5, 1001)),  # windows left over, 170 a buffer
        ("last", True, 7, (4, 300)),  # LayerNorm over the last dim: a group is one row
        ("2d", False, 5, (3, 64)),  # no ReLU between them
        ("noaffine", True, 4, (4, 9)),
        ("2d", True, 600, (2, 1300)),  # a window over the buffer: not fused, the same bits
    ],
)
def test_layernorm_pool_fusion_any_window(
    cbuild: Path, tmp_path: Path, norm: str, relu: bool, k: int, shape: tuple[int, int]
) -> None:
    """LayerNorm [-> ReLU] -> MaxPool1d(k) as one float pass for any k the buffer holds (and
    layer by layer beyond it): the pool's output equals torch's max_pool1d of the C
    LayerNorm's own output (a prefix that stops there) bit for bit, on every kernel path."""
    torch.manual_seed(1)
    ln = {
        "2d": nn.LayerNorm(list(shape)),
        "last": nn.LayerNorm(shape[1]),
        "noaffine": nn.LayerNorm(list(shape), elementwise_affine=False),
    }[norm]
    layers = [ln, nn.ReLU()] if relu else [ln]
    m = gen_golden._randomize_norms(nn.Sequential(*layers, nn.MaxPool1d(k)))
    f = tmp_path / "lnpool.kwsn"
    write_model(collect_named_layers(m), shape, f)
    x = np.random.default_rng(k).standard_normal((3, *shape)).astype(np.float32)
    x[2, 0, 1] = np.nan  # a NaN group
    want_t = m(torch.from_numpy(x)).detach().numpy().reshape(3, -1)
    for isa in isa_paths():
        with cmodel_on(f, isa) as cm:
            assert cm.isa == isa
            assert cm.layer_names[-1] == "MaxPool1d"
            n = len(layers)
            normed = cm.forward_until(x, n).reshape(3, *shape)  # LayerNorm [+ ReLU], unpooled
            want = torch.nn.functional.max_pool1d(torch.from_numpy(normed), k).numpy()
            got = cm.forward_until(x, n + 1)
            assert got.tobytes() == want.reshape(3, -1).tobytes(), isa
            assert np.isnan(got[2]).any() and not np.isnan(got[:2]).any()
            np.testing.assert_allclose(got[:2], want_t[:2], rtol=1e-5, atol=1e-5)


def test_fp_contract_rule_is_in_the_source(cbuild: Path, golden: Path, tmp_path: Path) -> None:
    """Built with flags that invite FMA contraction (gnu99, -mfma, -ffp-contract=fast), the
    kernels still round every multiply and add: the pragma in kwsn_kernels.c rules, and
    test_golden's fp-contract probe (which fails under contraction) passes on every path."""
    import os
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("-mfma is an x86-64 flag")
    flags = "-O3 -std=gnu99 -mavx2 -mfma -ffp-contract=fast"
    proc = subprocess.run(
        ["make", "-s", "-C", CNATIVE_DIR, f"BUILD={tmp_path}", f"CFLAGS={flags}", "tests"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for isa, f in _ISA_FLAG.items():
        if f is not None and f not in cpu_flags():
            continue
        env = {**os.environ, "KWSN_ISA": isa}
        proc = _run([tmp_path / "test_golden", golden], env=env)
        assert f"ok   fp-contract probe (kernels {isa})" in proc.stdout, proc.stdout
        assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("contract", ["default", "fast"])
def test_fp_contract_rule_under_clang(golden: Path, tmp_path: Path, contract: str) -> None:
    """clang honours the kernels' pragmas (STDC FP_CONTRACT, clang fp contract) under its
    default -ffp-contract=on: with -mfma every path still rounds each multiply and add. Under
    -ffp-contract=fast clang disregards pragmas (documented in kwsn_kernels.c and
    docs/cnative.md): the fp-contract probe must then catch the contraction on every path."""
    import os
    import platform
    import shutil

    if shutil.which("clang") is None:
        pytest.skip("clang is not installed")
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("-mfma is an x86-64 flag")
    flags = "-O3 -std=gnu99 -mavx2 -mfma" + (" -ffp-contract=fast" if contract == "fast" else "")
    proc = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            CNATIVE_DIR,
            "CC=clang",
            f"BUILD={tmp_path}",
            f"CFLAGS={flags}",
            "tests",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for isa, f in _ISA_FLAG.items():
        if f is not None and f not in cpu_flags():
            continue
        env = {**os.environ, "KWSN_ISA": isa}
        proc = subprocess.run(
            [tmp_path / "test_golden", golden],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if contract == "fast":
            assert f"FAIL fp-contract probe (kernels {isa})" in proc.stdout, proc.stdout
            assert proc.returncode != 0
        else:
            assert f"ok   fp-contract probe (kernels {isa})" in proc.stdout, proc.stdout
            assert proc.returncode == 0, proc.stdout


def test_public_header_is_opaque(cbuild: Path) -> None:
    """kwsnet.h exposes no internals (they froze the ABI): the model is opaque, sized by
    kwsn_model_bytes; the library's ABI version matches the binding's."""
    from kwsnet.export.runtime import ABI_VERSION, load_library

    text = (CNATIVE_DIR / "include/kwsnet.h").read_text()
    for internal in ("op_index", "in_place", "scratch;", "max_act", "kwsn_layer;"):
        assert internal not in text, internal
    assert "typedef struct kwsn_model kwsn_model;" in text
    assert f"#define KWSN_ABI_VERSION {ABI_VERSION}u" in text
    assert "#define KWSN_ARENA_ALIGN 64u" in text
    assert load_library().kwsn_abi_version() == ABI_VERSION


def test_fuzz_wav_reader_bounded(cbuild: Path, tmp_path: Path) -> None:
    """A couple of seconds of mutation fuzzing of the CLI's WAV reader under ASan/UBSan,
    seeded with the WAVs ``make fuzz`` uses (every encoding, and rejected ones)."""
    spec = importlib.util.spec_from_file_location(
        "gen_fuzz_seeds", CNATIVE_DIR / "tests/gen_fuzz_seeds.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, data in mod.wav_seeds().items():
        (tmp_path / name).write_bytes(data)
    proc = _run([cbuild / "fuzz_wav_san", "-seconds=2", "-seed=1", *sorted(tmp_path.iterdir())])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no sanitizer reports" in proc.stdout
