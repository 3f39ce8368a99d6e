"""The C streaming detector (cnative/include/kwsnet_stream.h) against the Python Detector:
chunk-size invariance, exact agreement on the C model's own posteriors (same logic), agreement
with the PyTorch model on generated streams, the CLI, and bad input as a status."""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from kwsnet.data.datamodule import AudioDataModule
from kwsnet.detect import Detector, DetectorConfig
from kwsnet.detect.cnative import CStream, _Config, _declare, _Detection, c_detect, keyword_mask
from kwsnet.detect.streams import StreamConfig, make_streams
from kwsnet.export.cnative import write_graph, write_model
from kwsnet.export.layers import collect_named_layers, input_shape_of
from kwsnet.export.runtime import CNATIVE_DIR, CModel, CRuntimeError, build_cnative

SR = 16000
WIN = 1600  # 0.1 s windows keep the constructed model cheap
NAMES = ["a", "b", "c", "_unknown_"]
CHUNKS = [1, 7, 160, 1600, None]  # None: the whole stream in one push


@pytest.fixture(scope="module")
def cbuild() -> Path:
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make and gcc are needed to build cnative")
    return build_cnative("all")


def _tone_stream(seconds: float, seed: int) -> np.ndarray:
    """Tones of 4 frequencies in random 50-300 ms pieces plus noise: posteriors that swing."""
    rng = np.random.default_rng(seed)
    out, n = [], int(seconds * SR)
    while sum(len(p) for p in out) < n:
        k, dur = rng.integers(4), int(rng.uniform(0.05, 0.3) * SR)
        t = np.arange(dur) / SR
        out.append(0.5 * np.sin(2 * np.pi * (200 + 300 * k) * t))
    wave = np.concatenate(out)[:n] + 0.05 * rng.standard_normal(n)
    return wave.astype(np.float32)


def _constructed_model(path: Path) -> None:
    """AvgPool(8) -> Flatten -> Linear(200, 4): row k is a 200-300k Hz template, so each
    class wins on its tone and mixtures give in-between posteriors."""
    model = nn.Sequential(nn.AvgPool1d(8), nn.Flatten(), nn.Linear(WIN // 8, 4))
    t = (np.arange(WIN // 8) * 8 + 3.5) / SR
    rows = [np.sin(2 * np.pi * (200 + 300 * k) * t) for k in range(4)]
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor(np.stack(rows) * 0.25, dtype=torch.float32))
        model[2].bias.zero_()
    write_model(collect_named_layers(model), (1, WIN), path, SR)


def _key(dets: list) -> list[tuple[float, str, float]]:
    return [(d.time, d.keyword, d.score) for d in dets]


CONFIGS = [
    DetectorConfig(hop_ms=10, smooth_windows=3, threshold=0.5, patience=1, refractory_ms=100),
    DetectorConfig(hop_ms=10, smooth_windows=1, threshold=0.6, patience=3, refractory_ms=0),
    DetectorConfig(
        hop_ms=25, smooth_windows=5, threshold=0.4, thresholds={"b": 0.7}, refractory_ms=250
    ),
    DetectorConfig(hop_ms=150, smooth_windows=2, threshold=0.3, refractory_ms=0),  # hop > window
]


@pytest.mark.parametrize("ci", range(len(CONFIGS)))
def test_chunk_sizes_identical_and_python_logic_exact(cbuild: Path, tmp_path: Path, ci: int):
    """Every chunk size gives the same detections, and they are exactly (time, keyword and
    score bit for bit) the Python Detector's run on the C model's posteriors."""
    _constructed_model(tmp_path / "m.kwsn")
    cfg = CONFIGS[ci]
    wave = _tone_stream(3.0, seed=0)
    stream = CStream(tmp_path / "m.kwsn", NAMES, config=cfg)
    got = [_key(stream.detect(wave, chunk)) for chunk in CHUNKS]
    assert all(g == got[0] for g in got[1:])
    py = Detector(stream.posteriors, NAMES, WIN, SR, config=cfg)
    assert stream.hop == py.hop
    want = _key(py.detect(wave))
    assert got[0] == want
    assert len(want) >= 3 and {k for _, k, _ in want} >= {"a", "c"}  # non-trivial
    assert "_unknown_" not in {k for _, k, _ in want}
    assert stream.windows == len(py.scores(wave)[0])


@pytest.mark.parametrize("n", [0, 1, WIN - 1, WIN, WIN + 1, WIN + 159, WIN + 160])
def test_short_and_edge_lengths_as_python(cbuild: Path, tmp_path: Path, n: int):
    """Shorter than one window: one zero-padded window (flush); the last partial hop: none."""
    _constructed_model(tmp_path / "m.kwsn")
    cfg = DetectorConfig(hop_ms=10, smooth_windows=2, threshold=0.3, refractory_ms=0)
    wave = _tone_stream(0.2, seed=7)[:n]
    stream = CStream(tmp_path / "m.kwsn", NAMES, config=cfg)
    py = Detector(stream.posteriors, NAMES, WIN, SR, config=cfg)
    for chunk in (1, 160, None):
        assert _key(stream.detect(wave, chunk)) == _key(py.detect(wave))
        assert stream.windows == len(py.scores(wave)[0])


def _separate(model: nn.Module, x: torch.Tensor) -> None:
    """Head rows from farthest-point prototypes of the embeddings: logits of order 10, so
    the posteriors are mostly far from any threshold (tests/test_cnative.py's idea)."""
    fc = model.head.fc
    with torch.no_grad():
        c = model.backbone(x).double()
        m = c.mean(0)
        c = c - m
        picks = [int(c.norm(dim=1).argmax())]
        while len(picks) < fc.out_features:
            picks.append(int(torch.cdist(c, c[picks]).min(dim=1).values.argmax()))
        rows = c[picks] / c[picks].norm(dim=1, keepdim=True)
        w = 10.0 * rows / c.norm(dim=1).max()
        fc.weight.copy_(w.float())
        fc.bias.copy_((-w @ m).float())


class _Tiny(nn.Module):
    def __init__(self, samples: int, n_classes: int) -> None:
        super().__init__()
        from kwsnet.models.raw_conv import RawConv
        from kwsnet.nn.heads import LinearHead

        self.backbone = RawConv(input_samples=samples, channels=(4, 8, 8))
        self.head = LinearHead(self.backbone.embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _robust_threshold(scores: np.ndarray) -> float:
    """The grid threshold farthest from every smoothed score (float noise cannot cross it)."""
    grid = np.linspace(0.3, 0.8, 26)
    return float(max(grid, key=lambda t: np.abs(scores - t).min()))


def _match_within_hop(c: list, py: list, hop_s: float) -> None:
    assert [d.keyword for d in c] == [d.keyword for d in py]
    assert all(abs(a.time - b.time) <= hop_s + 1e-9 for a, b in zip(c, py, strict=True))


@pytest.mark.kernel_path
def test_generated_streams_c_equals_pytorch_detector(
    cbuild: Path, speech_commands_tree: Path, tmp_path: Path
):
    """Streams from make_streams (test split of the fixture tree, noise, gaps); a RawConv with
    a separating head: the C detections are the PyTorch Detector's (same keywords, same
    times within one hop)."""
    torch.manual_seed(0)
    dm = AudioDataModule(source="speech_commands", root=str(speech_commands_tree), preload=False)
    paths = make_streams(dm, tmp_path / "s", StreamConfig(minutes=0.5, stream_seconds=15.0))
    waves = [sf.read(p, dtype="float32")[0] for p in paths]
    names = list(dm.class_names)
    model = _Tiny(SR, len(names)).eval()
    x = torch.from_numpy(np.stack([w[i : i + SR] for w in waves for i in range(0, 14 * SR, SR)]))
    _separate(model, x)
    write_model(collect_named_layers(model), input_shape_of(model), tmp_path / "m.kwsn", SR)

    def torch_post(b: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(b).softmax(-1)

    base = DetectorConfig(hop_ms=100, smooth_windows=3, refractory_ms=1000)
    probe = Detector(torch_post, names, SR, SR, config=base)
    thr = _robust_threshold(np.concatenate([probe.scores(w)[1] for w in waves]))
    cfg = DetectorConfig(hop_ms=100, smooth_windows=3, threshold=thr, refractory_ms=1000)
    py = Detector(torch_post, names, SR, SR, config=cfg)
    stream = CStream(tmp_path / "m.kwsn", names, config=cfg)
    total = 0
    for w in waves:
        want = py.detect(w)
        got = stream.detect(w, chunk=1000)
        _match_within_hop(got, want, py.hop / SR)
        total += len(want)
    assert total >= 3


@torch.no_grad()
def separate_head(fc: nn.Linear, embeddings: torch.Tensor) -> None:
    """Set ``fc`` so that its classes are ``fc.out_features`` far-apart embeddings among the
    windows' ``embeddings [N, D]`` (templates, scaled so logits swing): the posteriors of an
    untrained model then change from window to window, and detections happen."""
    e = embeddings.double()
    m = e.mean(0)
    c = e - m
    picks = [int(c.norm(dim=1).argmax())]
    while len(picks) < fc.out_features:
        picks.append(int(torch.cdist(c, c[picks]).min(dim=1).values.argmax()))
    w = 10.0 * (c[picks] / c[picks].norm(dim=1, keepdim=True)) / c.norm(dim=1).max()
    fc.weight.copy_(w.float())
    fc.bias.copy_((-w @ m).float())


def _mel_model(clip: int, n_classes: int, mfcc: bool = False) -> nn.Module:
    """A small CnnMel on LogMel(480 / 160, 40 mels, mean norm), or MFCC(13, mean-and-variance
    norm) with ``mfcc``."""
    from kwsnet.data.features import MFCC, LogMel
    from kwsnet.models.cnn_mel import CnnMel
    from kwsnet.nn.heads import LinearHead
    from kwsnet.nn.pooling import MeanPooling

    class Mel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frontend = (
                MFCC(n_mfcc=13, n_fft=480, win_length=480, hop_length=160, normalize="meanvar")
                if mfcc
                else LogMel(n_fft=480, win_length=480, hop_length=160, n_mels=40, normalize="mean")
            )
            self.backbone = CnnMel(
                input_dim=self.frontend.out_dim,
                stem_channels=8,
                channels=(8, 12),
                strides=(2, 1),
                kernel_size=5,
                pooling=MeanPooling,
            )
            self.head = LinearHead(12, n_classes)

        def embed(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return self.backbone(*self.frontend(audio, lengths))

    return Mel().eval()


@pytest.mark.kernel_path
def test_mel_graph_model_through_the_stream(cbuild: Path, tmp_path: Path):
    """A format-v2 log-mel CnnMel (front end op in C): chunk invariance, exact agreement with
    the Python Detector on C posteriors, and close to the PyTorch model's detections."""
    from kwsnet.export.graph import trace_model

    torch.manual_seed(0)
    clip = 4000
    model = _mel_model(clip, 4)
    wave = _tone_stream(2.0, seed=3)
    full = lambda b: torch.full((len(b),), b.shape[1], dtype=torch.long)  # noqa: E731
    with torch.no_grad():  # separate the head on the windows' embeddings
        x = torch.from_numpy(np.stack([wave[i : i + clip] for i in range(0, 28000, 800)]))
        separate_head(model.head.fc, model.embed(x, full(x)))
    write_graph(trace_model(model, clip), tmp_path / "mel.kwsn", SR)
    cfg = DetectorConfig(hop_ms=20, smooth_windows=2, threshold=0.5, refractory_ms=100)
    stream = CStream(tmp_path / "mel.kwsn", NAMES, config=cfg)
    got = [_key(stream.detect(wave, chunk)) for chunk in (1, 333, None)]
    assert got[0] == got[1] == got[2] and len(got[0]) >= 3
    assert got[0] == _key(Detector(stream.posteriors, NAMES, clip, SR, config=cfg).detect(wave))

    def torch_post(b: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.head(model.embed(b, full(b))).softmax(-1)

    probe = Detector(torch_post, NAMES, clip, SR, config=cfg)
    thr = _robust_threshold(probe.scores(wave)[1])
    cfg = DetectorConfig(hop_ms=20, smooth_windows=2, threshold=thr, refractory_ms=100)
    want = Detector(torch_post, NAMES, clip, SR, config=cfg).detect(wave)
    _match_within_hop(CStream(stream.cmodel, NAMES, config=cfg).detect(wave), want, 0.02)


def _per_window(stream: CStream, wave: np.ndarray) -> tuple[list[np.ndarray], list]:
    """Push the first window, then one hop at a time: every push scores one window; its
    smoothed scores and the detections."""
    stream.reset()
    scores, dets = [], []
    pos = stream.window
    dets += stream.push(wave[:pos])
    scores.append(stream.scores)
    while pos + stream.hop <= len(wave):
        dets += stream.push(wave[pos : pos + stream.hop])
        pos += stream.hop
        scores.append(stream.scores)
    return scores, _key(dets)


def _edge_frames(window: int, n_fft: int, hop: int) -> tuple[int, int]:
    """torch.stft's centred framing of a window: its frame count and how many of them reach
    into the reflect padding."""
    pad, frames = n_fft // 2, window // hop + 1
    inside = sum(0 <= t * hop - pad and t * hop - pad + n_fft <= window for t in range(frames))
    return frames, frames - inside


@pytest.mark.parametrize("mfcc", [False, True], ids=["logmel", "mfcc"])
def test_mel_frame_cache_same_scores_fewer_frames(cbuild: Path, tmp_path: Path, mfcc: bool):
    """The frame cache of a FrontEnd model: bit-identical smoothed scores and detections to
    recomputing every window, with only the hop's new frames plus the padded edge frames
    computed per window; off where the hop is not a whole number of frames."""
    from kwsnet.export.graph import trace_model

    torch.manual_seed(1)
    clip = 4000
    write_graph(trace_model(_mel_model(clip, 4, mfcc), clip), tmp_path / "m.kwsn", SR)
    wave = _tone_stream(1.6, seed=5)
    frames, edges = _edge_frames(clip, 480, 160)
    assert (frames, edges) == (26, 4)
    for hop_ms in (10, 20, 50, 200):  # 1, 2, 5 and 20 frames (of the 22 inside a window)
        cfg = DetectorConfig(hop_ms=hop_ms, smooth_windows=2, threshold=0.3, refractory_ms=0)
        on = CStream(tmp_path / "m.kwsn", NAMES, config=cfg)
        off = CStream(on.cmodel, NAMES, config=cfg, frame_cache=False)
        assert on.frame_cached and not off.frame_cached
        got, want = _per_window(on, wave), _per_window(off, wave)
        n = on.windows
        assert n == (len(wave) - clip) // on.hop + 1 == len(got[0]) and n > 3
        assert all(np.array_equal(a, b) for a, b in zip(got[0], want[0], strict=True))
        assert got[1] == want[1]
        shift = on.hop // 160
        assert on.frames_computed == frames + (n - 1) * (min(shift, frames - edges) + edges)
        assert off.frames_computed == 0
        # any chunking: the same detections through the cache
        assert _key(on.detect(wave, 333)) == got[1]
    cfg = DetectorConfig(hop_ms=25, smooth_windows=2, threshold=0.3, refractory_ms=0)
    assert not CStream(on.cmodel, NAMES, config=cfg).frame_cached  # 400 samples: 2.5 frames


@pytest.mark.kernel_path
def test_frame_cache_int8_and_forward_features(cbuild: Path, tmp_path: Path):
    """kwsn_forward_features on an int8 log-mel model equals kwsn_forward on the audio (codes
    quantised as its FrontEnd does), the stream's frame cache gives the same scores as without
    it, and the entry point refuses a raw-audio model and a wrong feature count."""
    from kwsnet.quant.format import quant_bytes
    from kwsnet.quant.ptq import calibrate, quantize_graph
    from tests.test_quant_model import mel_graph, raw_graph

    g, x, _ = mel_graph()
    (tmp_path / "q.kwsn").write_bytes(quant_bytes(quantize_graph(g, calibrate(g, [x])), g, SR))
    cm = CModel(tmp_path / "q.kwsn")
    names = [f"k{i}" for i in range(cm.n_classes)]
    wave = np.concatenate([x[i].numpy() for i in range(6)]).astype(np.float32)
    cfg = DetectorConfig(hop_ms=16, smooth_windows=3, threshold=0.3, refractory_ms=0)
    on = CStream(cm, names, config=cfg)  # 256 samples = 2 frames of 128
    off = CStream(cm, names, config=cfg, frame_cache=False)
    assert on.frame_cached
    got, want = _per_window(on, wave), _per_window(off, wave)
    assert len(got[0]) > 3
    assert all(np.array_equal(a, b) for a, b in zip(got[0], want[0], strict=True))
    assert got[1] == want[1]

    write_graph(g, tmp_path / "f.kwsn", SR)
    raw_g, _, _ = raw_graph()
    write_graph(raw_g, tmp_path / "raw.kwsn", SR)
    clip = np.ascontiguousarray(x[:1].numpy(), dtype=np.float32)
    for path in ("f.kwsn", "q.kwsn", "raw.kwsn"):
        m = CModel(tmp_path / path)
        # layer 0's output: the float features, or an int8 model's codes dequantised (which
        # quantise back to the same codes)
        feats = m.forward_until(clip, 1)[0]
        if path == "raw.kwsn":  # KWSN_ERR_ARG: layer 0 is no FrontEnd
            with pytest.raises(CRuntimeError, match="bad argument"):
                m.forward_features(feats)
            assert not CStream(m, [f"k{i}" for i in range(m.n_classes)], config=cfg).frame_cached
            continue
        with pytest.raises(CRuntimeError, match="input length"):  # KWSN_ERR_INPUT_LEN
            m.forward_features(feats[:-1])
        assert np.array_equal(m.forward_features(feats), m.forward(clip)[0])


def test_cli_matches_binding_and_refuses_bad_input(cbuild: Path, tmp_path: Path):
    _constructed_model(tmp_path / "m.kwsn")
    wave = _tone_stream(2.0, seed=1)
    sf.write(tmp_path / "s.wav", wave, SR, subtype="PCM_16")
    pcm = sf.read(tmp_path / "s.wav", dtype="float32")[0]
    cfg = DetectorConfig(hop_ms=10, smooth_windows=3, threshold=0.5, patience=2, refractory_ms=50)
    want = c_detect(tmp_path / "m.kwsn", pcm, NAMES, config=cfg)
    exe = cbuild / "kwsnet-stream"
    args = [str(exe), str(tmp_path / "m.kwsn"), str(tmp_path / "s.wav"), "--hop_ms", "10"]
    args += ["--smooth_windows=3", "--patience", "2", "--refractory_ms", "50"]
    args += ["--keywords", "1,1,1,0", "--chunk", "7"]
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    lines = r.stdout.splitlines()
    assert lines[0] == "file,time,keyword_index,score"
    infer = [str(cbuild / "kwsnet-infer"), "--stream", *args[1:]]  # the same tool, one binary
    assert subprocess.run(infer, capture_output=True, text=True, check=True).stdout == r.stdout
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == len(want) >= 3
    for row, d in zip(rows, want, strict=True):
        assert row[0] == str(tmp_path / "s.wav") and float(row[1]) == round(d.time, 3)
        assert NAMES[int(row[2])] == d.keyword and abs(float(row[3]) - d.score) <= 5e-5
    # bad input: one clear line, exit status 1 (2: usage)
    sf.write(tmp_path / "r8k.wav", wave[:8000], 8000, subtype="PCM_16")
    cases = {
        (str(tmp_path / "r8k.wav"),): "8000 Hz, the model expects 16000 Hz",
        (str(tmp_path / "s.wav"), "--keywords", "1,0"): "expected 4 comma-separated",
        (str(tmp_path / "s.wav"), "--keywords", "0,0,0,0"): "no class is a keyword",
        (str(tmp_path / "s.wav"), "--smooth_windows", "0"): "smooth_windows: 0",
        (str(tmp_path / "s.wav"), "--refractory_ms", "-1"): "refractory_ms: -1",
        (str(tmp_path / "s.wav"), "--hop_ms", "0"): "--hop_ms: 0",
        (str(tmp_path / "s.wav"), "--patience", "x"): "--patience: 'x'",
        (str(tmp_path / "missing.wav"),): "missing.wav",
    }
    for extra, msg in cases.items():
        r = subprocess.run(
            [str(exe), str(tmp_path / "m.kwsn"), *extra], capture_output=True, text=True
        )
        assert r.returncode == 1 and msg in r.stderr, (extra, r.stderr)
    r = subprocess.run([str(exe), str(tmp_path / "m.kwsn")], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def test_bad_config_and_storage_are_statuses(cbuild: Path, tmp_path: Path):
    _constructed_model(tmp_path / "m.kwsn")
    cm = CModel(tmp_path / "m.kwsn")
    bad = {
        "smooth_windows": (0, "smooth_windows: 0"),
        "patience": (0, "patience: 0"),
        "refractory_ms": (math.nan, "refractory_ms: nan"),
        "threshold": (math.nan, "threshold: nan"),
        "hop_ms": (-5.0, "hop_samples: 0"),
    }
    for field, (value, msg) in bad.items():
        cfg = DetectorConfig()
        setattr(cfg, field, value)  # past DetectorConfig's own checks: the C side's
        with pytest.raises(CRuntimeError, match=msg):
            CStream(cm, NAMES, config=cfg)
    cfg = DetectorConfig()
    cfg.smooth_windows = 10**6
    with pytest.raises(CRuntimeError, match="smooth_windows: 1000000, expected 1..4096"):
        CStream(cm, NAMES, config=cfg)
    with pytest.raises(CRuntimeError, match="sample_rate: 8000 Hz, the model was trained at"):
        CStream(cm, NAMES, sample_rate=8000)
    with pytest.raises(ValueError, match="class names"):
        CStream(cm, NAMES[:3])
    with pytest.raises(ValueError, match="non-empty class names"):
        keyword_mask(NAMES, ["zzz"])

    so = _declare(cm._so)
    mask = (ctypes.c_uint8 * 4)(1, 1, 1, 0)
    c = _Config(160, 3, 0.5, None, 1, 0.0, mask, 0)
    need = so.kwsn_stream_bytes(cm._model, ctypes.byref(c))
    assert need > 2 * WIN * 4
    buf = np.zeros(need + 64, dtype=np.uint8)
    base = buf.ctypes.data + (-buf.ctypes.data % 8)
    h = ctypes.c_void_p()
    storage_err, arg_err, arena_err = 19, 1, 14  # KWSN_ERR_STORAGE, _ARG, _ARENA
    assert (
        so.kwsn_stream_init(base, need - 1, cm._model, ctypes.byref(c), ctypes.byref(h))
        == storage_err
    )
    assert h.value is None
    assert (
        so.kwsn_stream_init(base + 4, need, cm._model, ctypes.byref(c), ctypes.byref(h))
        == storage_err
    )
    assert so.kwsn_stream_init(base, need, None, ctypes.byref(c), ctypes.byref(h)) == arg_err
    assert cm.status_str(storage_err) != cm.status_str(arg_err)
    assert so.kwsn_stream_init(base, need, cm._model, ctypes.byref(c), ctypes.byref(h)) == 0
    arena = np.zeros(cm.arena_bytes + 128, dtype=np.uint8)
    a = arena.ctypes.data + (-arena.ctypes.data % 64)
    x = np.zeros(WIN + 160, dtype=np.float32)
    out = (_Detection * 2)()
    n = ctypes.c_size_t()
    push = so.kwsn_stream_push
    assert (
        push(h, x.ctypes.data, len(x), a, cm.arena_bytes - 1, out, 2, ctypes.byref(n)) == arena_err
    )
    assert (
        push(h, x.ctypes.data, len(x), a + 4, cm.arena_bytes, out, 2, ctypes.byref(n)) == arena_err
    )
    assert so.kwsn_stream_pending_hops(h, len(x)) == 2
    assert push(h, x.ctypes.data, len(x), a, cm.arena_bytes, out, 1, ctypes.byref(n)) == arg_err
    assert so.kwsn_stream_windows(h) == 0  # refused before consuming anything
    assert push(h, None, 5, a, cm.arena_bytes, out, 2, ctypes.byref(n)) == arg_err
    assert push(h, x.ctypes.data, len(x), a, cm.arena_bytes, out, 2, ctypes.byref(n)) == 0
    assert so.kwsn_stream_windows(h) == 2
    assert so.kwsn_stream_flush(h, a, cm.arena_bytes, out, 1, ctypes.byref(n)) == 0
    assert push(h, x.ctypes.data, 1, a, cm.arena_bytes, out, 2, ctypes.byref(n)) == arg_err
    so.kwsn_stream_reset(h)
    assert push(h, x.ctypes.data, 1, a, cm.arena_bytes, out, 2, ctypes.byref(n)) == 0


def test_isa_paths_give_the_same_detections(cbuild: Path, tmp_path: Path):
    """KWSN_ISA=default|avx2|avx512 (where the CPU has it): byte-identical CLI output."""
    _constructed_model(tmp_path / "m.kwsn")
    sf.write(tmp_path / "s.wav", _tone_stream(2.0, seed=5), SR, subtype="PCM_16")
    outs = set()
    for isa in ("default", "avx2", "avx512"):
        r = subprocess.run(
            [
                str(CNATIVE_DIR / "build/kwsnet-stream"),
                str(tmp_path / "m.kwsn"),
                str(tmp_path / "s.wav"),
                "--hop_ms",
                "10",
                "--time",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={"KWSN_ISA": isa, "PATH": "/usr/bin:/bin"},
        )
        outs.add(r.stdout)
        assert "191 windows" in r.stderr and "us per hop" in r.stderr and "RTF" in r.stderr
    assert len(outs) == 1 and outs.pop().count("\n") >= 3
