"""StreamTCN, the causal model whose C stream computes each frame once (issue 30 item 3): the
window's last-frame output equals a frame-by-frame reference, the float export matches PyTorch
in C, and the C stream's incremental path gives the posteriors of the whole-window path (bit
for bit) and the Python Detector's detections; any other model keeps the old path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.data.features import LogMel
from kwsnet.detect import Detector, DetectorConfig
from kwsnet.detect.cnative import CStream
from kwsnet.export.cnative import write_graph
from kwsnet.export.graph import trace_model
from kwsnet.export.runtime import CModel, build_cnative
from kwsnet.models.stream_tcn import StreamTCN
from kwsnet.nn.heads import LinearHead
from kwsnet.nn.pooling import LastFrame

from .cnative_helpers import randomise_bn
from .test_detect_cnative import _mel_model, _per_window, _tone_stream, separate_head

SR = 16000
CLIP = 16000  # 1 s: 98 frames at 480 / 160 without centring
NAMES = ["a", "b", "c", "_unknown_"]


@pytest.fixture(scope="module")
def cbuild() -> Path:
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make and gcc are needed to build cnative")
    return build_cnative("all")


class _Model(nn.Module):
    """LogMel (no centring, no normalisation) → StreamTCN → LinearHead, as the config builds."""

    def __init__(self, channels: int = 32, dilations=(1, 2, 4, 8, 16), n_classes: int = 4):
        super().__init__()
        self.frontend = LogMel(
            n_fft=480, win_length=480, hop_length=160, n_mels=40, center=False, normalize="none"
        )
        self.backbone = StreamTCN(40, channels, 3, dilations, pooling=LastFrame)
        self.head = LinearHead(channels, n_classes)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            lengths = torch.full((len(wave),), wave.shape[1], dtype=torch.long)
        return self.head(self.backbone(*self.frontend(wave, lengths)))

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        lengths = torch.full((len(wave),), wave.shape[1], dtype=torch.long)
        return self.backbone(*self.frontend(wave, lengths))


def _model(seed: int = 0, wave: np.ndarray | None = None, **kw) -> _Model:
    """Random weights and BatchNorm statistics; with ``wave``, a head that separates its
    windows (4 far-apart embeddings as class templates), so posteriors swing."""
    torch.manual_seed(seed)
    model = randomise_bn(_Model(**kw), seed, nn.BatchNorm1d)
    model.eval()
    if wave is not None:
        with torch.no_grad():
            x = torch.from_numpy(
                np.stack([wave[i : i + CLIP] for i in range(0, len(wave) - CLIP, 800)])
            )
            separate_head(model.head.fc, model.embed(x))
    return model


def test_receptive_field_params_and_short_input() -> None:
    """The config's model: ~30k parameters, a 65-frame field inside the 98-frame window; an
    input shorter than the field still gives an output (zeros before it)."""
    b = StreamTCN(40, 64, 3, (1, 2, 4, 8, 16))
    assert b.receptive_field == 65 <= 98
    assert 20_000 <= sum(p.numel() for p in b.parameters()) <= 60_000
    b.eval()
    assert b(torch.randn(2, 30, 40)).shape == (2, 64)
    # a padded batch: each utterance's last valid frame, as alone
    x = torch.randn(2, 120, 40)
    got = b(x, torch.tensor([120, 100]))
    assert torch.allclose(got[1], b(x[1:, :100])[0], atol=1e-5)


@torch.no_grad()
def test_window_output_equals_frame_by_frame_reference() -> None:
    """Each 1 s window's output (the model on the window) equals a reference that pushes the
    stream's frames one at a time through each layer, keeping (k - 1) * dilation frames per
    layer: no padding ever enters a window's last frame."""
    model = _model(1)
    wave = torch.from_numpy(_tone_stream(2.5, seed=2))
    feats, _ = model.frontend(wave[None], torch.tensor([len(wave)]))  # [1, T, 40]
    feats = feats[0]
    bb = model.backbone
    layers: list[tuple[nn.Module, int, bool]] = [(bb.stem, 2, False)]  # module, span, then BN-ReLU
    for blk in bb.blocks:
        layers += [(blk.depthwise, blk.span, False), (blk.pointwise, 0, True)]
    bns = [bb.stem_bn] + [blk.bn for blk in bb.blocks]
    hist: list[list[torch.Tensor]] = [[] for _ in range(len(layers) + 1)]
    outs = []
    for t in range(len(feats)):
        x, b = feats[t][:, None], 0  # [C, 1]
        hist[0].append(x)
        for i, (conv, span, bn_relu) in enumerate(layers):
            if len(hist[i]) <= span:
                x = None
                break
            window = torch.cat(hist[i][len(hist[i]) - span - 1 :], dim=1)[None]
            y = conv(window)[0]
            if conv is bb.stem or bn_relu:
                y = torch.relu(bns[b](y[None])[0])
                b += 1
            hist[i + 1].append(y)
            x = y
        outs.append(None if x is None else model.head(x[:, 0][None])[0])
    for k in range(0, (len(wave) - CLIP) // 1600 + 1):
        want = model(wave[None, k * 1600 : k * 1600 + CLIP])[0]
        got = outs[k * 10 + 97]  # the window's last frame: signal frame 10 k + 97
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (k, (got - want).abs().max())


@pytest.mark.kernel_path
def test_float_export_c_parity(cbuild: Path, tmp_path: Path) -> None:
    """The float .kwsn (valid Conv1dEx chain, LastFrame as a kernel-2 depthwise conv) gives
    PyTorch's logits in C."""
    model = _model(2, channels=64)
    g = trace_model(model, CLIP)
    kinds = [n.kind for n in g.nodes]
    assert kinds[0] == "FrontEnd" and kinds[-2:] == ["Flatten", "Linear"]
    assert set(kinds[1:-2]) == {"Conv1dEx", "ReLU"}
    write_graph(g, tmp_path / "m.kwsn", SR)
    x = torch.from_numpy(np.stack([_tone_stream(1.0, seed=s) for s in range(6)]))
    with torch.no_grad():
        want = model(x).numpy()
    got = CModel(tmp_path / "m.kwsn").forward(x.numpy())
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert (got.argmax(1) == want.argmax(1)).all()


def _detections(dets: list) -> list[tuple[float, str]]:
    return [(round(d.time, 6), d.keyword) for d in dets]


@pytest.mark.kernel_path
def test_incremental_stream_equals_full_and_python(cbuild: Path, tmp_path: Path) -> None:
    """On a generated stream: the incremental C stream's smoothed scores are bit-equal to the
    frame cache's whole-model path and to no cache at all, every chunk size gives its
    detections, and they are the Python Detector's on the PyTorch model (same keyword, same
    time); the frames computed are the hop's only."""
    wave = _tone_stream(8.0, seed=7)
    model = _model(3, wave=wave)
    write_graph(trace_model(model, CLIP), tmp_path / "m.kwsn", SR)
    cfg = DetectorConfig(hop_ms=100, smooth_windows=3, threshold=0.6, refractory_ms=300)
    inc = CStream(tmp_path / "m.kwsn", NAMES, config=cfg)
    full = CStream(inc.cmodel, NAMES, config=cfg, incremental=False)
    nocache = CStream(inc.cmodel, NAMES, config=cfg, frame_cache=False)
    assert inc.incremental and inc.frame_cached
    assert not full.incremental and full.frame_cached
    assert not nocache.incremental and not nocache.frame_cached
    a, b, c = _per_window(inc, wave), _per_window(full, wave), _per_window(nocache, wave)
    assert len(a[0]) == (len(wave) - CLIP) // 1600 + 1
    for x, y, z in zip(a[0], b[0], c[0], strict=True):
        assert np.array_equal(x, y) and np.array_equal(x, z)
    assert a[1] == b[1] == c[1]
    assert inc.frames_computed == 98 + (len(a[0]) - 1) * 10
    dets = inc.detect(wave, 1600)
    assert 3 <= len(dets), "no detections: the test would show nothing"
    for chunk in (1, 333, None):
        assert _detections(inc.detect(wave, chunk)) == _detections(dets)

    def post(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(batch).softmax(-1)

    py = Detector(post, NAMES, CLIP, SR, config=cfg).detect(wave)
    assert _detections(py) == _detections(dets)
    # the C front end and torchaudio differ in float rounding (~1e-4 on a smoothed score)
    assert np.allclose([d.score for d in py], [d.score for d in dets], atol=5e-4)


@pytest.mark.kernel_path
def test_incremental_skips_nonfinite_windows_and_resets(cbuild: Path, tmp_path: Path) -> None:
    """A NaN in the stream skips the windows holding it; the incremental path catches up on
    the frames it missed (bit-equal to the whole-model path), at any hop; reset starts over."""
    wave = _tone_stream(5.0, seed=4)
    wave[40000] = np.nan
    model = _model(4, wave=np.nan_to_num(wave))
    write_graph(trace_model(model, CLIP), tmp_path / "m.kwsn", SR)
    for hop_ms in (10, 30, 100, 250, 1200):
        cfg = DetectorConfig(hop_ms=hop_ms, smooth_windows=2, threshold=0.5, refractory_ms=0)
        inc = CStream(tmp_path / "m.kwsn", NAMES, config=cfg)
        full = CStream(inc.cmodel, NAMES, config=cfg, incremental=False)
        assert inc.incremental
        for _ in range(2):  # the second pass: after reset
            a, b = _per_window(inc, wave), _per_window(full, wave)
            assert inc.nonfinite_windows == full.nonfinite_windows > 0
            for x, y in zip(a[0], b[0], strict=True):
                assert np.array_equal(x, y, equal_nan=True), hop_ms
            assert a[1] == b[1]


def test_not_streamable_models_keep_the_old_path(cbuild: Path, tmp_path: Path) -> None:
    """A CnnMel (mean normalisation, padded convs, mean pooling), a StreamTCN on centred
    frames, a hop that is not a whole number of frames and an int8 StreamTCN all stream as
    before (frame cache or not), never incrementally."""
    from kwsnet.quant.format import quant_bytes
    from kwsnet.quant.ptq import calibrate, quantize_graph

    write_graph(trace_model(_mel_model(4000, 4), 4000), tmp_path / "mel.kwsn", SR)
    s = CStream(tmp_path / "mel.kwsn", NAMES)
    assert s.frame_cached and not s.incremental

    centred = _model(5)
    centred.frontend = LogMel(n_fft=480, win_length=480, hop_length=160, n_mels=40,
                              normalize="none")  # fmt: skip
    write_graph(trace_model(centred, CLIP), tmp_path / "c.kwsn", SR)
    s = CStream(tmp_path / "c.kwsn", NAMES)
    assert s.frame_cached and not s.incremental

    model = _model(6)
    g = trace_model(model, CLIP)
    write_graph(g, tmp_path / "m.kwsn", SR)
    odd = DetectorConfig(hop_ms=25)  # 400 samples: 2.5 frames
    s = CStream(tmp_path / "m.kwsn", NAMES, config=odd)
    assert not s.frame_cached and not s.incremental

    x = torch.from_numpy(np.stack([_tone_stream(1.0, seed=s) for s in range(4)]))
    (tmp_path / "q.kwsn").write_bytes(quant_bytes(quantize_graph(g, calibrate(g, [x])), g, SR))
    q = CStream(tmp_path / "q.kwsn", NAMES)
    assert q.frame_cached and not q.incremental
    wave = _tone_stream(2.0, seed=1)
    assert len(_per_window(q, wave)[0]) == 11


def test_stream_check_compare_under_sanitizers_every_kernel_path(cbuild: Path, tmp_path: Path):
    """cnative/tests/stream_check --compare 1 (ASan/UBSan): the incremental path against the
    frame cache alone, bit-equal scores after every window (a NaN skips some), under every
    KWSN_ISA; a non-streamable model compares equal on the old path."""
    import os
    import subprocess

    from kwsnet.export.runtime import CNATIVE_DIR

    default = cbuild.resolve() == (CNATIVE_DIR / "build").resolve()
    build_cnative("build/stream_check_san" if default else f"{cbuild.resolve()}/stream_check_san")
    wave = _tone_stream(3.0, seed=8)
    write_graph(trace_model(_model(7, wave=wave), CLIP), tmp_path / "m.kwsn", SR)
    write_graph(trace_model(_mel_model(4000, 4), 4000), tmp_path / "mel.kwsn", SR)
    for isa in ("default", "avx2", "avx512"):
        r = subprocess.run(
            [str(cbuild / "stream_check_san"), "--compare", "1", str(tmp_path / "m.kwsn"),
             str(tmp_path / "mel.kwsn")],
            capture_output=True, text=True, env={**os.environ, "KWSN_ISA": isa},
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr[-3000:]
        assert "m.kwsn: compare: incremental 1, 13 windows, scores equal" in r.stdout, r.stdout
        assert "mel.kwsn: compare: incremental 0, 13 windows, scores equal" in r.stdout, r.stdout
