"""The C runtime's int8 models (format version 3) against kwsnet's integer reference: every
tensor's codes bit for bit (a log-mel CnnMel with residual adds from the C front end's codes,
a RawConv with integer LayerNorm from the waveform) on every kernel path, the dequantised
logits bitwise, the C front end's codes within one code of the Python (torchaudio) ones,
hostile version-3 files refused with their status (also under ASan/UBSan), and the int8
file's and arena's sizes against the float model's."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kwsnet.export import runtime
from kwsnet.export.cnative import write_graph
from kwsnet.export.runtime import CNATIVE_DIR, CModel, CRuntimeError
from kwsnet.quant.format import HEADER_BYTES, QRecord, parse_quant_bytes, quant_bytes
from kwsnet.quant.ptq import QuantGraph, calibrate, quantize_graph
from kwsnet.quant.reference import run_int8, run_int8_tensors
from tests.test_quant_model import FREQS, RAW_FREQS, _tones, mel_graph, raw_graph

from .cnative_helpers import build_runtime, isa_paths, with_crc

N_PER_CLASS = 6  # 18 clips per model


@pytest.fixture(scope="module")
def cbuild() -> Path:
    return build_runtime()


class _Built:
    """A quantised model, its version-3 file, the float file of the same graph, test clips."""

    def __init__(self, name: str, tmp: Path) -> None:
        g, x_cal, _ = mel_graph() if name == "mel" else raw_graph()
        self.name, self.graph = name, g
        self.q: QuantGraph = quantize_graph(g, calibrate(g, [x_cal]))
        self.data = quant_bytes(self.q, g, 16000)
        self.path = tmp / f"{name}_int8.kwsn"
        self.path.write_bytes(self.data)
        self.float_path = tmp / f"{name}_fp32.kwsn"
        write_graph(g, self.float_path)
        x, _ = _tones(N_PER_CLASS, 2, FREQS if name == "mel" else RAW_FREQS)
        self.x = x  # not the calibration clips


@pytest.fixture(scope="module", params=["mel", "raw"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> _Built:
    return _Built(request.param, tmp_path_factory.mktemp(request.param))


# Runs in a subprocess per kernel path (KWSN_ISA is read when the model is prepared): every
# layer's codes (n_run = 0 only with an input quantiser) and the dequantised forward().
# runtime.py is loaded from its file, without the kwsnet package (whose import pulls torch).
_RUN_PATH = r"""
import importlib.util, json, sys
import numpy as np
runtime_py, model, x_file, out_file = sys.argv[1:5]
spec = importlib.util.spec_from_file_location("kwsn_runtime", runtime_py)
rt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rt)
CModel = rt.CModel
x = np.load(x_file)
with CModel(model) as cm:
    first = 0 if cm.input_qparams() is not None else 1
    codes = {str(i): cm.forward_codes(x, i) for i in range(first, cm.n_layers + 1)}
    # non-finite and huge samples: quantised, clamped, run through without a trap
    odd = np.zeros((1, x.shape[1]), np.float32)
    odd[0, :6] = [np.nan, np.inf, -np.inf, 3e38, -3e38, 0.5]
    extra = {"odd_in": cm.forward_codes(odd, 0)} if first == 0 else {}
    extra["odd_out"] = cm.forward_codes(odd)
    tables = cm.tables_bytes
    logits = cm.forward(x)
    cm.drop_tables()  # the same model with its tables built per call: the same bits
    extra["untabled_codes"] = cm.forward_codes(x)
    extra["untabled_logits"] = cm.forward(x)
    np.savez(out_file, logits=logits, **codes, **extra)
    print(json.dumps({"isa": cm.isa, "n_layers": cm.n_layers, "tables": tables}))
"""


def _codes_per_path(cbuild: Path, b: _Built, tmp: Path) -> dict[str, dict[str, np.ndarray]]:
    np.save(tmp / "x.npy", b.x.numpy())
    out = {}
    for isa in isa_paths():
        env = {**os.environ, "KWSN_ISA": isa}
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _RUN_PATH,
                runtime.__file__,
                str(b.path),
                str(tmp / "x.npy"),
                str(tmp / isa),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd=CNATIVE_DIR.parent,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        info = json.loads(proc.stdout.splitlines()[-1])
        assert info["isa"] == isa
        # packed conv weights on the vector paths, the front end's tables on every path
        assert (info["tables"] > 0) == (isa != "default" or b.name == "mel"), info
        with np.load(tmp / f"{isa}.npz") as z:
            out[isa] = {k: z[k] for k in z.files}
    return out


@pytest.mark.kernel_path
def test_every_tensor_bit_exact_on_every_kernel_path(
    cbuild: Path, built: _Built, tmp_path: Path
) -> None:
    """Every layer's int8 codes from C equal run_int8_tensors bit for bit on every clip and
    kernel path (the mel model from C's own front-end codes, which the integer path after the
    one float island is defined on; raw_conv from the waveform, input quantiser included);
    forward() is the reference's dequantised logits bitwise."""
    b, q = built, built.q
    kinds = {n.kind for n in q.nodes}
    if b.name == "mel":
        assert {"FrontEnd", "Add", "Conv1dEx", "AdaptiveAvgPool1d", "Linear"} <= kinds
        assert q.input_q is None
    else:
        assert {"LayerNorm", "AvgPool1d", "MaxPool1d", "Linear"} <= kinds
        assert q.input_q is not None
    per_path = _codes_per_path(cbuild, b, tmp_path)
    n = len(b.x)
    assert n >= 16
    first = next(iter(per_path.values()))
    fe = None
    if q.input_q is None:
        shape = run_int8_tensors(q, b.x[:1])[1].shape[1:]
        fe = torch.from_numpy(first["1"]).reshape(n, *shape)
    ref = run_int8_tensors(q, b.x, frontend_codes=fe)
    logits = run_int8(q, b.x, frontend_codes=fe).logits.numpy()
    n_exact = 0
    for isa, got in per_path.items():
        for key in ("odd_in", "odd_out"):  # the same on every path
            assert key not in first or np.array_equal(got[key], first[key]), (isa, key)
        if "odd_in" in got:  # NaN -> act_min, +-inf and +-3e38 clamp, 0.5 quantised
            s_in, zp_in = q.input_q.scale, q.input_q.zero_point  # type: ignore[union-attr]
            half = int(np.clip(np.round(np.float32(0.5) / np.float32(s_in)) + zp_in, -128, 127))
            assert got["odd_in"][0, :6].tolist() == [-128, 127, -128, 127, -128, half]
        assert np.array_equal(got["untabled_logits"].view(np.uint32),
                              got["logits"].view(np.uint32)), isa  # fmt: skip
        assert np.array_equal(got["untabled_codes"], got[str(len(q.nodes))]), isa
        for key, codes in got.items():
            if key in ("logits", "odd_in", "odd_out", "untabled_logits", "untabled_codes"):
                continue
            want = ref[int(key)].reshape(n, -1).numpy()  # type: ignore[union-attr]
            assert codes.dtype == np.int8 and codes.shape == want.shape, (isa, key)
            bad = int((codes != want).sum())
            kind = q.nodes[int(key) - 1].kind if int(key) else "input"
            assert bad == 0, f"{isa}: tensor {key} ({kind}): {bad} codes differ"
            n_exact += codes.size
        assert np.array_equal(got["logits"].view(np.uint32), logits.view(np.uint32)), isa
    assert n_exact > 0
    # the front end against kwsnet's (torchaudio) front end: at most one code apart, rarely
    if fe is not None:
        py_fe = run_int8_tensors(q, b.x)[1].to(torch.int32)  # type: ignore[union-attr]
        diff = (fe.to(torch.int32) - py_fe).abs()
        assert int(diff.max()) <= 1
        assert int((diff != 0).sum()) <= 0.01 * diff.numel(), int((diff != 0).sum())


def test_model_tables_refuse_bad_buffers(cbuild: Path, built: _Built) -> None:
    """kwsn_model_set_tables: a misaligned or short buffer is refused (the model keeps the
    tables it has), NULL detaches, and a caller's own buffer of kwsn_tables_bytes works; the
    logits are the same bits in every case."""
    with CModel(built.path) as cm:
        so, m, x = cm._so, cm._model, built.x[:3].numpy()
        want = cm.forward(x)
        need = cm.tables_bytes
        if need == 0:  # the portable path of a raw-audio model packs nothing
            assert cm.isa == "default" and built.name == "raw"
            return
        buf = np.zeros(need + 2 * runtime.ARENA_ALIGN, np.uint8)
        base = buf.ctypes.data + (-buf.ctypes.data % runtime.ARENA_ALIGN)
        for ptr, size in ((base + 4, need), (base, need - 1)):
            st = so.kwsn_model_set_tables(m, ptr, size)
            assert cm.status_str(st) == "model storage too small or misaligned", (ptr - base, size)
        assert np.array_equal(cm.forward(x).view(np.uint32), want.view(np.uint32))
        assert so.kwsn_model_set_tables(m, base, need) == 0  # the caller's buffer
        assert buf.any()  # filled: packed weights or twiddles
        assert np.array_equal(cm.forward(x).view(np.uint32), want.view(np.uint32))
        assert so.kwsn_model_set_tables(m, None, 0) == 0  # detached: built per call
        assert np.array_equal(cm.forward(x).view(np.uint32), want.view(np.uint32))


def test_qparams_accessors_and_float_model(cbuild: Path, built: _Built) -> None:
    b, q = built, built.q
    with CModel(b.path) as cm:
        assert cm.is_int8 and cm.n_layers == len(q.nodes)
        assert cm.layer_names == [n.kind for n in q.nodes]
        for i in range(cm.n_layers):
            s, zp = cm.qparams(i)
            want = q.qparams[i + 1]
            assert want is not None
            assert np.float32(s) == np.float32(want.scale) and zp == want.zero_point, i
        if q.input_q is None:
            assert cm.input_qparams() is None
            with pytest.raises(CRuntimeError, match="bad argument"):
                cm.forward_codes(b.x[:2].numpy(), 0)
        else:
            s, zp = cm.input_qparams()  # type: ignore[misc]
            assert np.float32(s) == np.float32(q.input_q.scale) and zp == q.input_q.zero_point
        with pytest.raises(CRuntimeError):
            cm.qparams(cm.n_layers)
        # a batch is the rows one by one
        x = b.x[:5].numpy()
        assert np.array_equal(
            cm.forward_codes(x), np.concatenate([cm.forward_codes(r[None]) for r in x])
        )
    with CModel(b.float_path) as fm:
        assert not fm.is_int8 and fm.input_qparams() is None
        with pytest.raises(CRuntimeError, match="not an int8"):
            fm.qparams(0)
        with pytest.raises(CRuntimeError, match="bad argument"):
            fm.forward_codes(b.x[:1].numpy())


@pytest.mark.kernel_path
def test_int8_sizes_against_the_float_model(cbuild: Path, built: _Built) -> None:
    """The int8 file and arena are smaller than the float model's; a conv's payload is about
    a quarter of its float weights (int8 weights + 16 bytes per channel: int32 bias,
    multiplier, shift and the float32 weight scale); kwsn_weight_bytes counts floats, words
    and bytes."""
    b = built
    f = parse_quant_bytes(b.data)
    with CModel(b.path) as cm, CModel(b.float_path) as fm:
        assert cm.weight_bytes == sum(
            4 * (r.floats.size + r.words.size) + r.data.size for r in f.records
        )
        assert cm.arena_bytes < fm.arena_bytes
        assert cm.weight_bytes < fm.weight_bytes  # the front end's tables stay float32
        assert len(b.data) < b.float_path.stat().st_size
        int8_conv = float_conv = 0
        for n, r in zip(b.q.nodes, f.records, strict=True):
            if n.kind in ("Conv1d", "Conv1dEx"):
                int8_conv += r.payload_bytes
                w = n.tensors["weight"]
                float_conv += 4 * (w.numel() + w.shape[0])  # float weights + bias
        assert 0 < int8_conv < 0.45 * float_conv, (int8_conv, float_conv)
        # the int8 ops are counted too (same order as the float model's)
        assert 0.3 * fm.ops < cm.ops < 3 * fm.ops


# ---------------------------------------------------------------- hostile version-3 files


def _rebuild(data: bytes, records: list[QRecord], header: bytes | None = None) -> bytes:
    return with_crc((header or data[:HEADER_BYTES]) + b"".join(r.to_bytes() for r in records))


def _with(rec: QRecord, **kw: object) -> QRecord:
    parts = {
        "type": rec.type,
        "inputs": rec.inputs,
        "ints": rec.ints,
        "floats": rec.floats.copy(),
        "words": rec.words.copy(),
        "data": rec.data.copy(),
    }
    parts.update(kw)
    return QRecord(**parts)  # type: ignore[arg-type]


def _hostile(mel: bytes, raw: bytes) -> dict[str, tuple[bytes, str]]:
    fm, fr = parse_quant_bytes(mel), parse_quant_bytes(raw)
    kinds = [r.type & 0xFF for r in fr.records]
    conv = kinds.index(2)  # RawConv's first Conv1d
    ln = kinds.index(3)
    relu = kinds.index(4)
    mel_kinds = [r.type & 0xFF for r in fm.records]
    add = mel_kinds.index(11)
    fe = mel_kinds.index(9)

    def file_with(base: bytes, records: list[QRecord], i: int, /, **kw: object) -> bytes:
        """``base`` with its record ``i`` changed as ``kw`` says (CRC fixed)."""
        recs = list(records)
        recs[i] = _with(recs[i], **kw)
        return _rebuild(base, recs)

    def raw_with(i: int, **kw: object) -> bytes:
        return file_with(raw, fr.records, i, **kw)

    def mel_with(i: int, **kw: object) -> bytes:
        return file_with(mel, fm.records, i, **kw)

    c = fr.records[conv]
    co = c.ints[4]
    w_m128 = c.data.copy()
    w_m128[0] = -128
    words_mult = c.words.copy()
    words_mult[co] = 5  # multiplier[0] below 2^30
    words_shift = c.words.copy()
    words_shift[2 * co] = 31
    words_shift_lo = c.words.copy()
    words_shift_lo[2 * co] = -32
    words_bias = c.words.copy()
    words_bias[0] = 2**31 - 10  # sum |w| * 255 + |bias| > INT32_MAX
    r = fr.records[relu]
    relu_scale = r.floats.copy()
    relu_scale[0] *= 2
    lrec = fr.records[ln]
    ln_words = lrec.words.copy()
    ln_words[3] = -1  # E < 0
    ln_gamma = lrec.data.copy()
    ln_gamma[0] = -128
    a = fm.records[add]
    add_words = a.words.copy()
    add_words[1] = 1  # input shift > 0
    frec = fm.records[fe]  # ints: zp, act_min, act_max, then the float FrontEnd's 7
    fe_center = list(frec.ints)
    fe_center[3 + 4] = 2  # center is 0 or 1
    fe_eps = frec.floats.copy()
    fe_eps[1] = -1.0  # floats: out scale, then the float FrontEnd's eps first
    fe_layer = f"bad layer parameters: layer {fe} (FrontEnd): "
    header_q2 = bytearray(raw[:HEADER_BYTES])
    header_q2[28:32] = struct.pack("<I", 2)
    header_nan = bytearray(raw[:HEADER_BYTES])
    header_nan[32:36] = struct.pack("<f", float("nan"))
    header_zp = bytearray(raw[:HEADER_BYTES])
    header_zp[36:40] = struct.pack("<i", 128)
    mel_q = bytearray(mel[:HEADER_BYTES])  # an input quantiser in front of the front end
    mel_q[28:40] = struct.pack("<Ifi", 1, 0.01, 0)
    version4 = bytearray(raw[:-4])
    version4[4:8] = struct.pack("<I", 4)
    flipped = bytearray(raw)
    flipped[HEADER_BYTES + 40] ^= 0x5A
    # a record whose n_bytes runs past the end, with the CRC repaired
    short = bytearray(raw[:-4])
    off = HEADER_BYTES
    for rec in fr.records[:conv]:
        off += len(rec.to_bytes())
    short[off + 20 : off + 24] = struct.pack("<I", 1 << 24)
    return {
        "truncated": (raw[: len(raw) // 2], "CRC"),
        "truncated_crc_ok": (
            with_crc(bytes(short)),
            "truncated",
        ),
        "bad_crc": (bytes(flipped), "CRC"),
        "version4": (with_crc(bytes(version4)), "version"),
        "n_bytes_short": (raw_with(conv, data=c.data[:-1]), "bad layer parameters"),
        "n_words_long": (
            raw_with(conv, words=np.concatenate([c.words, [0]]).astype(np.int32)),
            "bad layer parameters",
        ),
        "multiplier_low": (raw_with(conv, words=words_mult), "bad layer parameters"),
        "shift_high": (raw_with(conv, words=words_shift), "bad layer parameters"),
        "shift_low": (raw_with(conv, words=words_shift_lo), "bad layer parameters"),
        "weight_minus_128": (raw_with(conv, data=w_m128), "bad layer parameters"),
        "accumulator_overflow": (raw_with(conv, words=words_bias), "bad layer parameters"),
        "zp_out_of_range": (
            raw_with(conv, ints=(200, *c.ints[1:])),
            f"bad layer parameters: layer {conv} (Conv1d): zp < -128 || zp > 127",
        ),
        "act_min_above_max": (
            raw_with(conv, ints=(c.ints[0], 10, 5, *c.ints[3:])),
            "bad layer parameters",
        ),
        "scale_zero": (
            raw_with(conv, floats=np.concatenate([[0.0], c.floats[1:]]).astype(np.float32)),
            "bad layer parameters",
        ),
        "relu_other_params": (raw_with(relu, floats=relu_scale), "bad layer parameters"),
        "unknown_type": (raw_with(relu, type=0x1FF), "unknown layer type"),
        "float_type_in_v3": (raw_with(relu, type=4), "unknown layer type"),
        "layernorm_frac_bits": (raw_with(ln, ints=(*lrec.ints[:6], 13)), "bad layer parameters"),
        "layernorm_eps_negative": (raw_with(ln, words=ln_words), "bad layer parameters"),
        "layernorm_gamma_minus_128": (raw_with(ln, data=ln_gamma), "bad layer parameters"),
        "add_input_shift": (mel_with(add, words=add_words), "bad layer parameters"),
        "frontend_center": (
            mel_with(fe, ints=tuple(fe_center)),
            fe_layer + "n_fft < 2 || hop < 1 || nm < 1 || no < 1 || (c != 0 && c != 1) || "
            "norm < 0 || norm > KWSN_FE_NORM_MEANVAR || (hd != 0 && hd != 1) || (!hd && no != nm)",
        ),
        "frontend_eps": (mel_with(fe, floats=fe_eps), fe_layer + "!(l->desc.floats[0] > 0.0f)"),
        "has_input_q_2": (_rebuild(raw, fr.records, bytes(header_q2)), "bad layer parameters"),
        "input_scale_nan": (_rebuild(raw, fr.records, bytes(header_nan)), "bad layer parameters"),
        "input_zp_128": (
            _rebuild(raw, fr.records, bytes(header_zp)),
            "bad layer parameters: input quantiser: scale must be finite and > 0",
        ),
        "frontend_after_quantiser": (_rebuild(mel, fm.records, bytes(mel_q)), "tensor id"),
    }


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[_Built, _Built]:
    return (
        _Built("mel", tmp_path_factory.mktemp("mel_h")),
        _Built("raw", tmp_path_factory.mktemp("raw_h")),
    )


def test_hostile_v3_files_refused_fast(cbuild: Path, both: tuple, tmp_path: Path) -> None:
    """Each crafted version-3 file gets its status in < 1 s of CPU time through ctypes and
    through the ASan/UBSan build (which also runs both valid int8 models forward)."""
    mel, raw = both
    files = []
    for name, (data, expect) in _hostile(mel.data, raw.data).items():
        f = tmp_path / f"{name}.kwsn"
        f.write_bytes(data)
        files.append((f, expect))
        t0 = time.thread_time()  # this thread's CPU time: the work, not the wall clock
        with pytest.raises(CRuntimeError, match=re.escape(expect)):
            CModel(f)
        assert time.thread_time() - t0 < 1.0, name
    files += [(mel.path, "ok"), (raw.path, "ok")]
    proc = subprocess.run(
        [str(cbuild / "load_check_san"), *[str(f) for f, _ in files]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (f, expect), line in zip(files, proc.stdout.splitlines(), strict=True):
        assert line.startswith(str(f)) and expect in line, line
    api = subprocess.run(
        [str(cbuild / "load_check_san"), "--api"], capture_output=True, text=True, timeout=60
    )
    assert api.returncode == 0 and "api ok" in api.stdout, api.stdout + api.stderr[-2000:]


def test_kwsnet_infer_runs_an_int8_file(cbuild: Path, both: tuple, tmp_path: Path) -> None:
    """kwsnet-infer runs an int8 file unchanged: its logits are the dequantised ones."""
    raw = both[1]
    x = raw.x[:3].numpy().astype("<f4")
    x.tofile(tmp_path / "x.f32")
    proc = subprocess.run(
        [str(cbuild / "kwsnet-infer"), str(raw.path), "--raw", str(tmp_path / "x.f32")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    logits = run_int8(raw.q, raw.x[:3]).logits.numpy()
    for row, want in zip(rows, logits, strict=True):
        assert np.array_equal(np.array(row[2:], dtype=np.float32), want)
        assert int(row[1]) == int(np.argmax(want))


def test_fuzz_seeds_include_int8_models(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gfs", CNATIVE_DIR / "tests/gen_fuzz_seeds.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    seeds = mod.v3_model_seeds()
    assert len(seeds) >= 2 and all(struct.unpack_from("<I", d, 4)[0] == 3 for d in seeds.values())
    for name, data in seeds.items():
        (tmp_path / name).write_bytes(data)
        with CModel(tmp_path / name) as cm:
            assert cm.is_int8
