"""int8 end to end on small constructed models (a log-mel CnnMel with residual blocks and a
raw-waveform RawConv with LayerNorm): agreement with fp32, SQNR, calibration determinism,
the version-3 file round trip and the collapse verdict of ``kwsnet quant-report``.

The models are random convs whose BatchNorm statistics are set on the data and whose Linear
head is fitted by least squares to tones of well-separated frequencies, so fp32 is accurate
without training; every comparison to float has a tolerance (the float calibration may differ
by rounding between CPU kernel paths), the integer reference itself is exact.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.export.graph import graph_from_layers, trace_model
from kwsnet.export.layers import collect_named_layers, input_shape_of
from kwsnet.quant.format import (
    HEADER_BYTES,
    QUANT_FORMAT_VERSION,
    parse_quant_bytes,
    quant_bytes,
    quant_records,
)
from kwsnet.quant.ptq import QuantError, calibrate, quantize_graph
from kwsnet.quant.reference import run_int8
from kwsnet.quant.report import QuantReport, byte_counts, report_verdict, run_report

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

SAMPLES = 4000
FREQS = (300.0, 900.0, 2500.0)
RAW_FREQS = (80.0, 200.0, 420.0)  # below the 500 Hz that RawConv's AvgPool1d(16) passes


class _Model(nn.Module):
    def __init__(self, frontend: nn.Module | None, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.frontend, self.backbone, self.head = frontend, backbone, head


def _tones(
    n_per_class: int, seed: int, freqs: tuple[float, ...] = FREQS
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[3 n, SAMPLES]`` tones (random phase, amplitude, a little noise), labels ``[3 n]``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(SAMPLES) / 16000.0
    xs, ys = [], []
    for c, f in enumerate(freqs):
        for _ in range(n_per_class):
            amp = 0.1 + 0.4 * torch.rand(1, generator=g)
            ph = 2 * math.pi * torch.rand(1, generator=g)
            f_c = f * (1 + 0.03 * (torch.rand(1, generator=g) - 0.5))
            noise = 0.01 * torch.randn(SAMPLES, generator=g)
            xs.append(amp * torch.sin(2 * math.pi * f_c * t + ph) + noise)
            ys.append(c)
    return torch.stack(xs), torch.tensor(ys)


@torch.no_grad()
def _fit_head(graph: object, head: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> None:
    """Ridge-regression Linear head on the graph's pooled features (one-hot targets x 4);
    the ridge keeps the weights from cancelling each other (which no int8 model survives)."""
    feats = graph.run(x)[-2].reshape(len(x), -1).double()  # type: ignore[attr-defined]
    a = torch.cat([feats, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    target = 4.0 * nn.functional.one_hot(y, len(FREQS)).double()
    gram = a.T @ a
    ridge = 1e-2 * gram.diagonal().mean() * torch.eye(len(gram), dtype=torch.float64)
    sol = torch.linalg.solve(gram + ridge, a.T @ target)
    head.weight.copy_(sol[:-1].T.float())
    head.bias.copy_(sol[-1].float())


@torch.no_grad()
def _set_bn_stats(model: nn.Module, x: torch.Tensor) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.momentum = None  # cumulative: the running stats = this batch's
    model.train()
    lengths = torch.full((len(x),), x.shape[1], dtype=torch.long)
    feats, lens = model.frontend(x, lengths)
    model.backbone(feats, lens)
    model.eval()


def mel_graph() -> tuple[object, torch.Tensor, torch.Tensor]:
    from kwsnet.data.features import LogMel
    from kwsnet.models.cnn_mel import CnnMel
    from kwsnet.nn.heads import LinearHead

    torch.manual_seed(0)
    fe = LogMel(n_fft=256, win_length=256, hop_length=128, n_mels=16, normalize="none")
    bb = CnnMel(input_dim=16, stem_channels=8, channels=(8, 12), strides=(2, 2), kernel_size=5)
    model = _Model(fe, bb, LinearHead(bb.embed_dim, len(FREQS)))
    x, y = _tones(30, 1)
    _set_bn_stats(model, x)
    g = trace_model(model, SAMPLES)
    _fit_head(g, model.head.fc, x, y)
    return g, x, y


def raw_graph() -> tuple[object, torch.Tensor, torch.Tensor]:
    from kwsnet.models.raw_conv import RawConv
    from kwsnet.nn.heads import LinearHead

    torch.manual_seed(0)
    bb = RawConv(input_samples=SAMPLES, channels=(8, 12, 16))
    model = _Model(None, bb, LinearHead(bb.embed_dim, len(FREQS))).eval()
    g = graph_from_layers(collect_named_layers(model), input_shape_of(model))
    x, y = _tones(30, 1, RAW_FREQS)
    _fit_head(g, model.head.fc, x, y)
    return g, x, y


@pytest.fixture(scope="module", params=["mel", "raw"])
def built(request: pytest.FixtureRequest) -> tuple[str, object, torch.Tensor, torch.Tensor]:
    g, x, y = mel_graph() if request.param == "mel" else raw_graph()
    return request.param, g, x, y


def test_int8_agrees_with_fp32_and_sqnr_above_floor(built: tuple) -> None:
    name, g, x_cal, _ = built
    q = quantize_graph(g, calibrate(g, [x_cal]))
    x, y = _tones(15, 2, FREQS if name == "mel" else RAW_FREQS)  # not the calibration clips
    rep = run_report(g, q, [(x[:20], y[:20]), (x[20:], y[20:])], len(FREQS))
    assert rep.n == len(x)
    assert rep.acc_fp32 >= 0.9, f"{name}: the constructed fp32 model is not separated"
    assert rep.changed <= 0.1 * rep.n, rep.lines()
    assert rep.acc_int8 >= rep.acc_fp32 - 0.1
    assert not rep.collapsed
    floor = 15.0
    low = [(p, db) for p, _, db in rep.sqnr if db < floor]
    assert not low, f"{name}: SQNR below {floor} dB: {low}"
    kinds = {n.kind for n in q.nodes}
    assert {"Linear", "AdaptiveAvgPool1d"} <= kinds
    assert ({"Add", "FrontEnd"} if name == "mel" else {"LayerNorm", "AvgPool1d"}) <= kinds
    assert any(n.fused_relu for n in q.nodes)
    codes = run_int8(q, x).codes
    assert codes.dtype == torch.int8 and codes.shape == (len(x), len(FREQS))


def test_calibration_is_deterministic(built: tuple) -> None:
    _, g, x, _ = built
    batches = [x[:12], x[12:24]]
    r1, r2 = calibrate(g, batches), calibrate(g, batches)
    assert r1.lo == r2.lo and r1.hi == r2.hi
    q1, q2 = quantize_graph(g, r1), quantize_graph(g, r2)
    assert quant_bytes(q1, g) == quant_bytes(q2, g)
    p1, p2 = calibrate(g, batches, 99.0), calibrate(g, batches, 99.0)
    assert p1.lo == p2.lo and p1.hi == p2.hi and p1.method == "percentile=99"
    # a percentile range lies inside the min/max one, and always holds 0
    for a, b, c, d in zip(p1.lo, p1.hi, r1.lo, r1.hi, strict=True):
        if a is not None:
            assert c <= a <= 0.0 <= b <= d


def test_integer_reference_is_exact_on_repeat(built: tuple) -> None:
    _, g, x, _ = built
    q = quantize_graph(g, calibrate(g, [x]))
    a, b = run_int8(q, x[:7]), run_int8(q, x[:7])
    assert torch.equal(a.codes, b.codes)
    # batch composition does not change a clip's integer result
    assert torch.equal(run_int8(q, x[3:4]).codes, a.codes[3:4])


def test_format_round_trip_and_size(built: tuple) -> None:
    name, g, x, _ = built
    q = quantize_graph(g, calibrate(g, [x]))
    data = quant_bytes(q, g, 16000)
    f = parse_quant_bytes(data)
    assert f.sample_rate == 16000 and f.input_shape == tuple(g.input_shape)  # type: ignore[attr-defined]
    assert f.records == quant_records(q, g)
    assert (f.input_q is None) == (name == "mel")
    rebuilt = bytearray(data[:HEADER_BYTES])
    rebuilt += b"".join(r.to_bytes() for r in f.records)
    assert bytes(rebuilt) == data[:-4]
    assert int.from_bytes(data[4:8], "little") == QUANT_FORMAT_VERSION
    counts = byte_counts(g, q, 16000)
    assert counts["file_int8"] == len(data)
    assert counts["weights_int8"] < counts["weights_fp32"]
    # int8 weights + int32 bias / multiplier / shift + float32 weight scale per channel
    assert counts["weights_int8_quantised"] < 0.45 * counts["weights_fp32_quantised"]
    bad = bytearray(data)
    bad[HEADER_BYTES + 30] ^= 0xFF
    with pytest.raises(ValueError, match="CRC"):
        parse_quant_bytes(bytes(bad), "m.kwsn")
    with pytest.raises(ValueError, match="not a KWSN"):
        parse_quant_bytes(b"XXXX" + data[4:], "m.kwsn")


def test_collapsed_int8_model_fails_with_a_message() -> None:
    rep = QuantReport(6, n=60, counts_fp32=[10] * 6, counts_int8=[58, 2, 0, 0, 0, 0])
    code, msg = report_verdict(rep)
    assert code == 1 and "collapsed" in msg and "2/6 classes" in msg
    assert "the fp32 model is not (6/6 classes" in msg
    both = QuantReport(6, n=60, counts_fp32=[59, 1, 0, 0, 0, 0], counts_int8=[60, 0, 0, 0, 0, 0])
    assert "so is the fp32 model (2/6 classes" in report_verdict(both)[1]
    ok = QuantReport(6, n=60, counts_fp32=[10] * 6, counts_int8=[12, 8, 10, 10, 9, 11])
    assert report_verdict(ok) == (0, "")
    assert report_verdict(QuantReport(6))[0] == 1  # no clips


def test_unsupported_op_is_named() -> None:
    from kwsnet.export.graph import Graph, Node

    g = Graph((4, 8))
    attn = nn.Identity()
    g.add(Node("AttnPool", "backbone.pooling", (0,), lambda xs: xs[0], attn))
    with pytest.raises(QuantError, match="AttnPool at 'backbone.pooling'"):
        calibrate(g, [torch.zeros(2, 4, 8)])


def test_bad_percentile_and_empty_calibration() -> None:
    g = graph_from_layers([("relu", nn.ReLU())], (2, 4))
    with pytest.raises(ValueError, match="percentile"):
        calibrate(g, [torch.zeros(1, 2, 4)], percentile=30.0)
    with pytest.raises(QuantError, match="no clips"):
        calibrate(g, [])
    assert np.isfinite(calibrate(g, [torch.ones(1, 2, 4)]).hi[0])  # type: ignore[arg-type]


def test_quant_report_cli_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from kwsnet.cli import console

    assert console(["quant-report", "--calibraton", "5"]) == 2
    assert "did you mean --calibration" in capsys.readouterr().err


def test_percentile_100_is_min_max(built: tuple) -> None:
    """``percentile=100`` (how the commands select min/max) gives exactly ``None``'s ranges,
    labelled minmax; the default 99.99 lies inside them."""
    from kwsnet.quant.ptq import DEFAULT_PERCENTILE

    _, g, x, _ = built
    batches = [x[:12], x[12:24]]
    mm, p100 = calibrate(g, batches), calibrate(g, batches, 100.0)
    assert (p100.lo, p100.hi, p100.method) == (mm.lo, mm.hi, "minmax")
    assert DEFAULT_PERCENTILE == 99.99
    dp = calibrate(g, batches, DEFAULT_PERCENTILE)
    assert dp.method == "percentile=99.99"
    for a, b, c, d in zip(dp.lo, dp.hi, mm.lo, mm.hi, strict=True):
        if a is not None:
            assert c <= a <= 0.0 <= b <= d


def test_commands_calibrate_at_the_99_99_percentile_by_default() -> None:
    """The one recipe (quantize_model, behind export / parity / quant-report --dtype int8 and
    kwsnet.export) calibrates at the 99.99 percentile unless told; ``100`` is min/max; the
    three commands' ``--percentile`` defaults to 99.99."""
    from kwsnet.commands import export, parity, quant_report
    from kwsnet.loading import build_from_config
    from kwsnet.quant.report import quantize_model

    for cmd in (export, parity, quant_report):
        assert cmd.parser().get_defaults().percentile == 99.99, cmd.__name__
    tiny = ["--data.source_options", '{"num_words": 3, "num_speakers": 4, "utterances": 4}']
    cfg = Path(__file__).resolve().parents[1] / "configs" / "kws_ds_cnn.yaml"
    model, dm = build_from_config(str(cfg), None, tiny)
    assert quantize_model(model, dm, 8)[1].method == "percentile=99.99"
    assert quantize_model(model, dm, 8, None)[1].method == "percentile=99.99"
    assert quantize_model(model, dm, 8, 100.0)[1].method == "minmax"
    assert quantize_model(model, dm, 8, 99.9)[1].method == "percentile=99.9"
