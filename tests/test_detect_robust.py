"""A detector that survives bad audio (issue 30 item 5), C and Python alike.

- A NaN / Inf sample, or a window whose posteriors are not finite, costs only the windows that
  hold it: they are skipped and counted (a running cumulative sum carried one NaN to the end
  of the stream: 8 detections became 1).
- A WAV whose data chunk declares more bytes than the file holds is refused, naming the file
  and both counts (kwsnet-stream, kwsnet-infer; kwsnet's read_audio already did).
- Stream storage is sized with overflow-checked arithmetic and within the caller's memory
  limit: a crafted 44-byte model that asks for gigabytes of stream storage gets a status
  quickly, before anything is allocated; the 32-bit sanitizer build (``make sanitize32``)
  shows no size wraps.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kwsnet.detect import Detector, DetectorConfig
from kwsnet.detect.cnative import CStream, _Config, _declare, c_detect
from kwsnet.export.cnative import write_graph
from kwsnet.export.graph import trace_model
from kwsnet.export.runtime import CNATIVE_DIR, CModel, CRuntimeError, _Limits, build_cnative

from .test_detect_cnative import (
    NAMES,
    SR,
    WIN,
    _constructed_model,
    _key,
    _mel_model,
    _per_window,
    _tone_stream,
)

HOP = 160  # 10 ms
BAD_AT = 8000  # 0.5 s
BAD_WINDOWS = 10  # the windows [start, start + WIN) holding BAD_AT: starts 6560, 6720 .. 8000
N_WINDOWS = (4 * SR - WIN) // HOP + 1  # 391 in a 4 s stream
KWSN_ERR_STREAM_LIMIT = 21
MEMORY_CAP = 1 << 30  # address space of the CLIs run here: a huge malloc fails, not thrashes


@pytest.fixture(scope="module")
def cbuild() -> Path:
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make and gcc are needed to build cnative")
    return build_cnative("all")


@pytest.fixture(scope="module")
def model(cbuild: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("robust") / "m.kwsn"
    _constructed_model(path)
    return path


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _run_counted(args: list) -> tuple[int, str, float]:
    """Exit code, stderr and the child's CPU seconds (``os.wait4``: its own work, not the wall
    clock a loaded machine stretches), under a 1 GiB address-space cap."""
    proc = subprocess.Popen(
        [str(a) for a in args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_capped,
    )
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, usage.ru_utime + usage.ru_stime


def _stream_args(exe: Path, model: Path, wav: Path, *extra: str) -> list:
    return [exe, model, wav, "--hop_ms", "10", *extra, "--keywords", "1,1,1,0", "--chunk", "7"]


# ------------------------------------------------------------------ non-finite audio


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_one_bad_sample_costs_only_its_windows(model: Path, tmp_path: Path, value: float):
    """A 4 s stream with one NaN / Inf sample at 0.5 s gives the detections of the clean
    stream except those of the windows holding it, in C (binding and CLI on a float WAV) and
    in Python, which agree bit for bit; both count the skipped windows."""
    cfg = DetectorConfig(hop_ms=10, smooth_windows=1, threshold=0.5, refractory_ms=0)
    clean = _tone_stream(4.0, seed=0)
    sf.write(tmp_path / "bad.wav", clean, SR, subtype="FLOAT")
    with sf.SoundFile(tmp_path / "bad.wav", "r+") as f:  # one sample, in place
        f.seek(BAD_AT)
        f.write(np.array([value], dtype=np.float32))
    bad = sf.read(tmp_path / "bad.wav", dtype="float32")[0]
    assert np.isfinite(bad).sum() == len(bad) - 1 and np.array_equal(
        np.delete(bad, BAD_AT), np.delete(clean, BAD_AT)
    )

    stream = CStream(model, NAMES, config=cfg)
    py = Detector(stream.posteriors, NAMES, WIN, SR, config=cfg)
    want_clean = _key(stream.detect(clean))
    assert len(want_clean) >= 20

    def holds_bad(t: float) -> bool:  # the window centred at t holds sample BAD_AT
        start = round(t * SR) - WIN // 2
        return start <= BAD_AT < start + WIN

    want = [d for d in want_clean if not holds_bad(d[0])]
    assert len(want) < len(want_clean)  # some detections were in those windows
    for chunk in (7, 1600, None):
        assert _key(stream.detect(bad, chunk)) == want, chunk
        assert stream.windows == N_WINDOWS
    assert _key(py.detect(bad)) == want
    # counted: the C stream (since its reset) and the Detector (its last scores call)
    assert stream.nonfinite_windows == py.nonfinite_windows == BAD_WINDOWS
    stream.detect(clean)
    assert stream.nonfinite_windows == 0
    _, scores = py.scores(bad)
    rows = np.isnan(scores).all(axis=1)
    assert rows.sum() == BAD_WINDOWS and not np.isnan(scores[~rows]).any()
    py.scores(clean)
    assert py.nonfinite_windows == 0

    exe = CNATIVE_DIR / "build/kwsnet-stream"
    r = subprocess.run(
        _stream_args(exe, model, tmp_path / "bad.wav", "--smooth_windows", "1")
        + ["--refractory_ms", "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows_csv = [line.split(",") for line in r.stdout.splitlines()[1:]]
    assert [(float(t), NAMES[int(k)]) for _, t, k, _ in rows_csv] == [
        (round(t, 3), k) for t, k, _ in want
    ]
    assert (
        f"warning: {tmp_path / 'bad.wav'}: 1 non-finite samples (the first at sample {BAD_AT}), "
        f"{BAD_WINDOWS} of {N_WINDOWS} windows skipped" in r.stderr
    ), r.stderr


def test_smoothing_gap_is_local_and_c_equals_python(model: Path):
    """With a 3-window average the skipped windows leave a gap: every window whose last 3
    windows hold no bad one has the clean stream's smoothed scores bit for bit, the skipped
    ones are NaN, and the 2 after them average the valid windows only. C = Python exactly,
    also for finite samples so large (3e38) that the logits overflow and the posteriors are
    NaN: those windows are skipped too."""
    cfg = DetectorConfig(hop_ms=10, smooth_windows=3, threshold=0.5, patience=2, refractory_ms=50)
    clean = _tone_stream(4.0, seed=0)
    stream = CStream(model, NAMES, config=cfg)
    py = Detector(stream.posteriors, NAMES, WIN, SR, config=cfg)
    _, s_clean = py.scores(clean)
    idx = np.arange(len(clean))
    for name, bad in {
        "nan": np.where(idx == BAD_AT, np.float32(np.nan), clean),
        "huge": np.where((idx >= BAD_AT) & (idx < BAD_AT + 8), np.float32(3e38), clean),
    }.items():
        bad = bad.astype(np.float32)
        assert name == "nan" or np.isfinite(bad).all()
        _, s_bad = py.scores(bad)
        skipped = np.isnan(s_bad).all(axis=1)
        assert skipped.sum() == BAD_WINDOWS, name
        first, last = np.flatnonzero(skipped)[[0, -1]]
        assert skipped[first : last + 1].all()
        same = np.ones(len(s_bad), dtype=bool)
        same[first : last + cfg.smooth_windows] = False
        assert np.array_equal(s_bad[same], s_clean[same]), name
        # just after the gap: the mean of the valid windows among the last 3 (1, then 2)
        assert np.array_equal(s_bad[last + 1], _post(py, bad, [last + 1]))
        assert np.array_equal(s_bad[last + 2], _post(py, bad, [last + 1, last + 2]))
        assert _key(stream.detect(bad)) == _key(py.detect(bad)), name
        assert stream.nonfinite_windows == py.nonfinite_windows == BAD_WINDOWS, name
        # the C stream's own smoothed scores of the last window equal Python's last row
        assert np.array_equal(stream.scores[[0, 1, 2]], s_bad[-1])


@pytest.mark.parametrize("hop_ms", [10, 50])
def test_frame_cache_skips_the_same_windows(cbuild: Path, tmp_path: Path, hop_ms: int):
    """A log-mel model with one NaN sample: the frame cache (which never runs a skipped
    window, and computes the frames it did not cache later) gives every window's smoothed
    scores (NaN for the skipped) and the detections bit for bit as recomputing each window,
    and as the Python Detector on the C posteriors."""
    clip = 4000
    torch.manual_seed(1)
    write_graph(trace_model(_mel_model(clip, 4), clip), tmp_path / "mel.kwsn", SR)
    wave = _tone_stream(1.6, seed=5)
    wave[6000] = np.nan
    cfg = DetectorConfig(hop_ms=hop_ms, smooth_windows=3, threshold=0.3, refractory_ms=0)
    on = CStream(tmp_path / "mel.kwsn", NAMES, config=cfg)
    off = CStream(on.cmodel, NAMES, config=cfg, frame_cache=False)
    assert on.frame_cached and not off.frame_cached
    got, want = _per_window(on, wave), _per_window(off, wave)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(got[0], want[0], strict=True))
    assert got[1] == want[1]
    # windows k * hop <= 6000 < k * hop + clip hold the NaN
    expect = 6000 // on.hop - (6000 - clip) // on.hop
    assert expect == {10: 25, 50: 5}[hop_ms]
    assert on.nonfinite_windows == off.nonfinite_windows == expect
    assert sum(np.isnan(x).all() for x in got[0]) == expect
    py = Detector(on.posteriors, NAMES, clip, SR, config=cfg)
    assert _key(py.detect(wave)) == got[1] == _key(on.detect(wave, 333))
    assert py.nonfinite_windows == expect


def _post(py: Detector, wave: np.ndarray, windows: list[int]) -> np.ndarray:
    """Mean keyword posteriors of the given windows (float64, summed in order)."""
    acc = 0.0
    for k in windows:
        frame = wave[k * HOP : k * HOP + WIN][None]
        acc = acc + np.asarray(py.posteriors(frame), dtype=np.float64)[0, py.keyword_index]
    return acc / len(windows)


def test_kwsnet_infer_refuses_a_non_finite_clip(model: Path, tmp_path: Path):
    clip = _tone_stream(0.1, seed=3)
    assert len(clip) == WIN
    clip[[5, 700]] = [np.inf, np.nan]
    sf.write(tmp_path / "clip.wav", clip, SR, subtype="FLOAT")
    r = subprocess.run(
        [CNATIVE_DIR / "build/kwsnet-infer", model, tmp_path / "clip.wav"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert (
        f"{tmp_path / 'clip.wav'}: audio holds NaN or infinite samples (2, the first at "
        "sample 5)" in r.stderr
    ), r.stderr


# ------------------------------------------------------------------ truncated WAVs


def test_truncated_wav_refused_with_both_counts(model: Path, tmp_path: Path):
    """A 1 s 16-bit WAV whose data chunk declares 32000 bytes with 3200 there: refused by
    kwsnet-stream and kwsnet-infer (exit 1, the file and both counts in the message), as by
    kwsnet's read_audio; soundfile alone reads the 1600 samples that are there, silently.
    A streaming writer's unknown size (0xFFFFFFFF) reads to the end of the file, as
    libsndfile does."""
    from kwsnet.data.audio import read_audio
    from kwsnet.data.record import DataFormatError

    wave = _tone_stream(1.0, seed=2)
    sf.write(tmp_path / "full.wav", wave, SR, subtype="PCM_16")
    full = (tmp_path / "full.wav").read_bytes()
    i = full.index(b"data")
    assert struct.unpack_from("<I", full, i + 4)[0] == 32000
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full[: i + 8 + 3200])
    msg = f"{cut}: truncated: its data chunk declares 32000 bytes, 3200 are there"
    assert len(sf.read(cut)[0]) == 1600  # why the check is needed
    with pytest.raises(DataFormatError) as e:
        read_audio(cut, SR)
    assert str(e.value) == msg

    for exe, extra in (("kwsnet-stream", []), ("kwsnet-infer", []), ("kwsnet-infer", ["S"])):
        args = [CNATIVE_DIR / "build" / exe, model, cut]
        if extra:  # kwsnet-infer --stream: the stream tool inside kwsnet-infer
            args = [CNATIVE_DIR / "build" / exe, "--stream", model, cut]
        r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
        assert r.returncode == 1 and msg in r.stderr, (exe, extra, r.stderr)

    unknown = bytearray(full)
    struct.pack_into("<I", unknown, i + 4, 0xFFFFFFFF)
    (tmp_path / "unknown.wav").write_bytes(bytes(unknown))
    assert len(read_audio(tmp_path / "unknown.wav", SR)) == len(wave)
    outs = []
    for name in ("full.wav", "unknown.wav"):
        r = subprocess.run(
            [str(CNATIVE_DIR / "build/kwsnet-stream"), str(model), str(tmp_path / name)],
            capture_output=True,
            text=True,
            check=True,
        )
        outs.append(r.stdout.replace(name, "X"))
    assert outs[0] == outs[1]


# ------------------------------------------------------------------ stream storage limits


def _crafted(input_shape: tuple[int, int], layers: list[tuple[int, list[int]]]) -> bytes:
    """A minimal format-1 model file: header, float-free layer records (type, ints), CRC."""
    body = struct.pack("<4s6I", b"KWSN", 1, 16000, 2, *input_shape, len(layers))
    for kind, ints in layers:
        body += struct.pack(f"<3I{len(ints)}i", kind, len(ints), 0, *ints)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


_RELU, _AVG = 4, 1


def _storage_cases() -> dict[str, tuple[bytes, int]]:
    """name -> (model file, smooth_windows): each loads under the default limits (its arena
    is at most 128 MiB) but its stream needs far more than 128 MiB of storage."""
    return {
        # 44 bytes: window and classes 2^25 (1.5 GB of stream storage; 2.2 GB before)
        "relu_2_25": (_crafted((1, 1 << 25), [(_RELU, [])]), 3),
        # 44 bytes: 2^18 classes x 4096 smoothed windows (4.3 GB, 8.6 GB before; wraps a
        # 32-bit size_t)
        "relu_2_18_smooth": (_crafted((1, 1 << 18), [(_RELU, [])]), 4096),
        # 52 bytes: a 2^26-sample window pooled to 1024 classes (a 512 MiB ring)
        "avgpool_window_2_26": (_crafted((1, 1 << 26), [(_AVG, [1 << 16, 1 << 16])]), 3),
    }


def test_crafted_stream_storage_refused_fast(cbuild: Path, model: Path, tmp_path: Path):
    """Each crafted model's stream is refused with KWSN_ERR_STREAM_LIMIT: through ctypes in
    well under a second of this thread's CPU time, by kwsnet-stream in under 0.5 CPU
    seconds with the message (under a 1 GiB address-space cap: nothing near the storage size
    is allocated), and by the ASan/UBSan stream_check, which would abort on any allocation
    over 256 MiB. A limit raised above the need lets it through (sizing only)."""
    sf.write(tmp_path / "s.wav", np.zeros(SR // 10, dtype=np.float32), SR, subtype="PCM_16")
    files = []
    for name, (data, smooth) in _storage_cases().items():
        assert len(data) <= 64, name
        f = tmp_path / f"{name}.kwsn"
        f.write_bytes(data)
        files.append((f, smooth))
        code, err, cpu = _run_counted(
            [cbuild / "kwsnet-stream", f, tmp_path / "s.wav", "--smooth_windows", smooth]
        )
        assert code == 1 and "exceeds the memory limit" in err and f.name in err, (name, err)
        assert cpu < 0.5, (name, cpu)

        cm = CModel(f)
        so = _declare(cm._so)
        cfg = _Config(1600, smooth, 0.5, None, 1, 0.0, None, 0, 1)
        size, msg = ctypes.c_size_t(1), ctypes.create_string_buffer(256)
        t0 = time.thread_time()
        st = so.kwsn_stream_size(cm._model, ctypes.byref(cfg), None, ctypes.byref(size), msg, 256)
        assert time.thread_time() - t0 < 1.0, name
        assert st == KWSN_ERR_STREAM_LIMIT and size.value == 0, (name, st)
        assert "exceeds the memory limit of 134217728" in msg.value.decode(), name
        assert so.kwsn_stream_bytes(cm._model, ctypes.byref(cfg)) == 0
        need = int(msg.value.decode().split("stream storage of ")[1].split()[0])
        assert need > 128 << 20
        big = _Limits(0, need)
        assert (
            so.kwsn_stream_size(
                cm._model, ctypes.byref(cfg), ctypes.byref(big), ctypes.byref(size), msg, 256
            )
            == 0
            and size.value == need
        )
        cm.close()

    # CStream: the same status as an exception (1024 classes: names are cheap to make)
    f, _ = files[2]
    with pytest.raises(CRuntimeError, match="stream storage exceeds the memory limit"):
        CStream(f, [f"k{i}" for i in range(1024)])
    # the caller's limit: kwsnet-stream --max-arena-bytes and CStream(max_storage_bytes=...)
    # bound the stream as the model's arena (a normal model, its arena within, its stream not)
    with CModel(model) as cm:
        arena = cm.arena_bytes
    need = CStream(model, NAMES).storage_bytes
    assert arena < need
    with pytest.raises(CRuntimeError, match=f"exceeds the memory limit of {need - 1} "):
        CStream(model, NAMES, max_storage_bytes=need - 1)
    CStream(model, NAMES, max_storage_bytes=need)
    wav = tmp_path / "s.wav"
    for limit, code in ((need - 1, 1), (need, 0)):
        r = subprocess.run(
            [str(cbuild / "kwsnet-stream"), "--max-arena-bytes", str(limit), str(model), str(wav)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == code and ("exceeds the memory limit" in r.stderr) == bool(code)

    build_cnative("sanitize")
    san = cbuild / "stream_check_san"
    env = {**os.environ, "ASAN_OPTIONS": "max_allocation_size_mb=256"}
    for f, smooth in files:
        r = subprocess.run(
            [str(san), "--smooth", str(smooth), str(f)], capture_output=True, text=True, env=env
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.startswith(f"{f}: stream: stream storage exceeds the memory limit")


def test_stream_check_runs_a_bad_sample_under_sanitizers(cbuild: Path, model: Path):
    build_cnative("sanitize")
    r = subprocess.run(
        [str(cbuild / "stream_check_san"), str(model)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # W + 3 hops of a quarter window: 4 windows; the NaN at hop / 2 is in the first only
    assert r.stdout.strip().endswith("4 windows, 1 skipped"), r.stdout


def _m32_unavailable() -> str | None:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        return "make and gcc are needed"
    probe = subprocess.run(
        ["gcc", "-m32", "-fsanitize=address,undefined", "-x", "c", "-", "-o", os.devnull],
        input="int main(void){return 0;}\n",
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return "gcc -m32 cannot link a sanitized program (apt-get install gcc-multilib)"
    return None


def test_sanitize32_sizes_do_not_wrap(cbuild: Path, model: Path, tmp_path: Path):
    """The 32-bit ASan/UBSan build: the 2^18-class model with smooth_windows 4096 needs
    4.3 GB (8.6 GB before), which wrapped a 32-bit size_t to 10.7 MB (a heap overflow on the
    first window, reproduced with ASan): it is now KWSN_ERR_TOO_BIG, also with the limit
    raised to 4 GiB - 1; the 2^25 model's 1.5 GB fits 32 bits and is over the default limit;
    a normal model streams (one window skipped for its NaN); the public API's argument checks
    pass and issue #16's hostile model files get their statuses; the WAV reader fuzzes
    clean."""
    reason = _m32_unavailable()
    if reason:
        pytest.skip(reason)
    build_cnative("sanitize32")
    b32 = cbuild / "m32"
    data, smooth = _storage_cases()["relu_2_18_smooth"]
    f = tmp_path / "relu_2_18.kwsn"
    f.write_bytes(data)
    check = [str(b32 / "stream_check_san"), "--smooth", str(smooth)]
    r = subprocess.run(
        [*check, "--max-arena-bytes", "4294967295", str(f)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "size exceeds runtime limits" in r.stdout and "32-bit size_t" in r.stdout, r.stdout
    r = subprocess.run([*check, str(f)], capture_output=True, text=True)  # the default limit
    assert r.returncode == 0 and "32-bit size_t" in r.stdout, r.stdout
    f25 = tmp_path / "relu_2_25.kwsn"  # 1.5 GB: fits 32 bits, over the limit
    f25.write_bytes(_storage_cases()["relu_2_25"][0])
    r = subprocess.run([str(b32 / "stream_check_san"), str(f25)], capture_output=True, text=True)
    assert r.returncode == 0 and "exceeds the memory limit of 134217728" in r.stdout, r.stdout
    r = subprocess.run([str(b32 / "stream_check_san"), str(model)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith("4 windows, 1 skipped"), r.stdout
    r = subprocess.run([str(b32 / "load_check_san"), "--api"], capture_output=True, text=True)
    assert r.returncode == 0 and "api ok" in r.stdout, r.stdout + r.stderr[-2000:]
    from .test_cnative import _crafted_cases  # the hostile model files of issue #16

    crafted = []
    for name, (blob, expect) in _crafted_cases().items():
        (tmp_path / f"{name}.kwsn").write_bytes(blob)
        crafted.append((tmp_path / f"{name}.kwsn", expect))
    r = subprocess.run(
        [str(b32 / "load_check_san"), *(str(f) for f, _ in crafted)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for (f, expect), line in zip(crafted, r.stdout.splitlines(), strict=True):
        assert line.startswith(str(f)) and expect in line, line

    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gen_fuzz_seeds", CNATIVE_DIR / "tests/gen_fuzz_seeds.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seeds = tmp_path / "wav"
    seeds.mkdir()
    for name, blob in mod.wav_seeds().items():
        (seeds / name).write_bytes(blob)
    r = subprocess.run(
        [str(b32 / "fuzz_wav_san"), "-seconds=1", "-seed=1", *sorted(map(str, seeds.iterdir()))],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "no sanitizer reports" in r.stdout, r.stderr[-3000:]


def test_c_detect_unchanged_on_clean_audio(model: Path):
    """On clean audio the ring average is the old running-sum difference to rounding (1e-12),
    and C's detections are Python's (a 5-window average)."""
    wave = _tone_stream(3.0, seed=4)
    cfg = DetectorConfig(hop_ms=10, smooth_windows=5, threshold=0.6, refractory_ms=100)
    got = c_detect(model, wave, NAMES, config=cfg)
    stream = CStream(model, NAMES, config=cfg)
    py = Detector(stream.posteriors, NAMES, WIN, SR, config=cfg)
    times, scores = py.scores(wave)
    raw = np.stack([_post(py, wave, [k]) for k in range(len(times))])
    csum = np.cumsum(np.vstack([np.zeros((1, raw.shape[1])), raw]), axis=0)
    n = np.arange(1, len(raw) + 1)
    lo = np.maximum(n - cfg.smooth_windows, 0)
    np.testing.assert_allclose(scores, (csum[n] - csum[lo]) / (n - lo)[:, None], atol=1e-12)
    assert _key(got) == _key(py.detect(wave)) and len(got) >= 3
