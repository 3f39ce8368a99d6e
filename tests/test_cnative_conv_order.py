"""The float conv and average-pool kernels' sum order, bit for bit.

Every output of Conv1d (same padding), Conv1dEx and Conv2d equals a float32 reference that
adds the bias, then each input channel's taps in order, rounding every product and sum to
float32 (numpy's float32 arithmetic: no FMA), on every kernel path. Both kernels the runtime
picks between are covered: the register tiles of several output rows, and one row at a time
for a reduction of at most 4 taps (C_in / groups x kernel taps: a first conv on one channel,
a depthwise conv), with tails (lengths that are not a multiple of the vector width).
AvgPool1d: each window summed left to right in float32, then divided by k (PyTorch's order),
whether the kernel reads 8 windows' taps as rows and transposes them (k >= 8) or gathers
them one by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.export.cnative import model_bytes, write_graph
from kwsnet.export.graph import FlatConv2d, Graph, Node

from .cnative_helpers import build_runtime, cmodel_on, isa_paths


@pytest.fixture(scope="module")
def cbuild() -> Path:
    return build_runtime()


def conv_in_sum_order(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: tuple[int, int],
    pad: tuple[int, int, int, int],
    dil: tuple[int, int],
    groups: int,
) -> np.ndarray:
    """A float32 conv of ``x`` [C, H, W] with ``w`` [O, C / groups, kh, kw] (zero padding
    top, bottom, left, right): out[o, y, t] = b[o], then + w[o, i, r, c] * x_pad[i, sy y + dy
    r, sx t + dx c] for i, r, c in order, each product and sum rounded to float32.
    Returns [O, H_out, W_out]."""
    C, H, W = x.shape
    n_out, gi, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (pad[0], pad[1]), (pad[2], pad[3]))).astype(np.float32)
    sy, sx = stride
    dy, dx = dil
    Ho = (H + pad[0] + pad[1] - dy * (kh - 1) - 1) // sy + 1
    Wo = (W + pad[2] + pad[3] - dx * (kw - 1) - 1) // sx + 1
    go = n_out // groups
    out = np.empty((n_out, Ho, Wo), np.float32)
    for o in range(n_out):
        acc = np.full((Ho, Wo), b[o] if b is not None else np.float32(0), np.float32)
        for i in range(gi):
            ch = (o // go) * gi + i
            for r in range(kh):
                for c in range(kw):
                    patch = xp[ch, r * dy : r * dy + sy * (Ho - 1) + 1 : sy,
                               c * dx : c * dx + sx * (Wo - 1) + 1 : sx]  # fmt: skip
                    acc = acc + np.float32(w[o, i, r, c]) * patch
        out[o] = acc
    return out


def assert_bits_on_every_path(path: Path, x: np.ndarray, want: np.ndarray) -> None:
    """The file at ``path`` run on ``x`` [n, input_len] gives ``want`` [n, out_len] bit for
    bit on every kernel path."""
    for isa in isa_paths():
        with cmodel_on(path, isa) as cm:
            assert cm.isa == isa
            got = cm.forward(x)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=isa)


def _weights(conv: nn.Module) -> tuple[np.ndarray, np.ndarray | None]:
    w = conv.weight.detach().numpy().astype(np.float32)
    b = None if conv.bias is None else conv.bias.detach().numpy().astype(np.float32)
    return w, b


# (C_in, C_out, k, L): reductions of 1, 2, 3 taps (one row at a time) and 9 (the tiles)
SAME = [(1, 16, 3, 1000), (1, 5, 1, 37), (2, 3, 1, 70), (1, 4, 3, 7), (3, 7, 3, 45)]


@pytest.mark.parametrize("ci,co,k,L", SAME, ids=lambda v: str(v))
def test_conv1d_same_padding_in_sum_order(
    cbuild: Path, tmp_path: Path, ci: int, co: int, k: int, L: int
) -> None:
    torch.manual_seed(ci * 100 + co * 10 + k)
    conv = nn.Conv1d(ci, co, k, padding=k // 2).eval()
    path = tmp_path / "c.kwsn"
    path.write_bytes(model_bytes(nn.Sequential(conv), (ci, L)))
    x = (torch.randn(3, ci, L) * 2).numpy()
    w, b = _weights(conv)
    want = np.stack(
        [
            conv_in_sum_order(
                xi[:, None, :], w[:, :, None, :], b, (1, 1), (0, 0, k // 2, k // 2), (1, 1), 1
            )
            for xi in x
        ]
    ).reshape(3, -1)
    assert_bits_on_every_path(path, x.reshape(3, -1), want)


# (C_in, C_out, k, stride, pad, dilation, groups, L)
EX = [
    (1, 6, 3, 2, 1, 1, 1, 101),  # one channel, strided: 3 taps
    (4, 4, 3, 1, 2, 2, 4, 70),  # depthwise, dilated: 3 taps
    (2, 4, 2, 1, 0, 1, 1, 65),  # 4 taps
    (6, 6, 1, 1, 0, 1, 6, 33),  # depthwise 1x1: 1 tap
    (1, 3, 5, 1, 2, 1, 1, 50),  # 5 taps: the tiles
]


@pytest.mark.parametrize("geo", EX, ids=lambda v: str(v))
def test_conv1d_ex_in_sum_order(cbuild: Path, tmp_path: Path, geo: tuple) -> None:
    ci, co, k, s, pad, d, g, L = geo
    torch.manual_seed(sum(geo))
    conv = nn.Conv1d(ci, co, k, s, pad, d, g).eval()
    graph = Graph((ci, L))
    graph.add(Node("Conv1dEx", "conv", (0,), lambda xs: conv(xs[0]), conv))
    write_graph(graph, tmp_path / "c.kwsn")
    x = (torch.randn(3, ci, L) * 2).numpy()
    w, b = _weights(conv)
    want = np.stack(
        [
            conv_in_sum_order(
                xi[:, None, :], w[:, :, None, :], b, (1, s), (0, 0, pad, pad), (1, d), g
            )
            for xi in x
        ]
    ).reshape(3, -1)
    assert_bits_on_every_path(tmp_path / "c.kwsn", x.reshape(3, -1), want)


# (C_in, C_out, H, W, kernel, stride, pad (top, bottom, left, right), groups)
CONV2D = [
    (3, 3, 5, 37, (2, 2), (1, 1), (0, 1, 0, 1), 3),  # depthwise 2x2: 4 taps
    (1, 4, 3, 70, (1, 3), (1, 2), (0, 0, 1, 1), 1),  # one channel, 1x3: 3 taps
    (4, 4, 6, 9, (3, 3), (1, 1), (1, 1, 1, 1), 4),  # depthwise 3x3: 9 taps, the tiles
]


@pytest.mark.parametrize("geo", CONV2D, ids=lambda v: str(v))
def test_conv2d_in_sum_order(cbuild: Path, tmp_path: Path, geo: tuple) -> None:
    ci, co, h, w_, k, s, pad, g = geo
    torch.manual_seed(ci + co + h + w_)
    conv = nn.Conv2d(ci, co, k, s, groups=g).eval()
    flat = FlatConv2d(conv, pad, (h, w_))
    graph = Graph((h, w_) if ci == 1 else (ci, h * w_))
    graph.add(Node("Conv2d", "conv", (0,), lambda xs: flat(xs[0]), flat))
    write_graph(graph, tmp_path / "c.kwsn")
    x = (torch.randn(3, ci, h, w_) * 2).numpy()
    w, b = _weights(conv)
    want = np.stack([conv_in_sum_order(xi, w, b, s, pad, (1, 1), g) for xi in x])
    assert_bits_on_every_path(tmp_path / "c.kwsn", x.reshape(3, -1), want.reshape(3, -1))


# (C, L, k, stride): k >= 8 (transposed rows: a multiple of 8, one tap over, 24, overlapping
# windows) and k < 8 (one float per lane and tap)
AVGPOOL = [(1, 16000, 16, 16), (2, 100, 9, 9), (3, 90, 8, 5), (2, 200, 24, 24), (1, 64, 3, 3)]


@pytest.mark.parametrize("c,L,k,s", AVGPOOL, ids=lambda v: str(v))
def test_avgpool1d_in_sum_order(
    cbuild: Path, tmp_path: Path, c: int, L: int, k: int, s: int
) -> None:
    path = tmp_path / "p.kwsn"
    path.write_bytes(model_bytes(nn.Sequential(nn.AvgPool1d(k, s)), (c, L)))
    x = (torch.randn(3, c, L, generator=torch.Generator().manual_seed(k)) * 3).numpy()
    n = (L - k) // s + 1
    acc = np.zeros((3, c, n), np.float32)
    for j in range(k):
        acc = acc + x[:, :, j : j + s * (n - 1) + 1 : s]
    want = (acc / np.float32(k)).astype(np.float32)
    with torch.no_grad():  # and PyTorch's own kernel agrees (within an ulp: its order may vary)
        ref = nn.functional.avg_pool1d(torch.from_numpy(x), k, s).numpy()
    np.testing.assert_allclose(want, ref, rtol=1e-6, atol=1e-6)
    assert_bits_on_every_path(path, x.reshape(3, -1), want.reshape(3, -1))


@pytest.mark.parametrize("c,L", [(2, 4 * 37), (3, 4 * 8), (1, 4 * 5 + 3)], ids=str)
def test_maxpool1d_4_picks_like_pytorch(cbuild: Path, tmp_path: Path, c: int, L: int) -> None:
    """MaxPool1d(4, 4), whose kernel transposes 8 windows in registers: each window's first
    value, replaced by a later one that is larger or NaN (PyTorch's `val > max || isnan(val)`),
    so NaN wins, the first of equal values stays (-0 before +0 keeps -0), +-inf are values."""
    path = tmp_path / "p.kwsn"
    path.write_bytes(model_bytes(nn.Sequential(nn.MaxPool1d(4, 4)), (c, L)))
    g = np.random.default_rng(L)
    x = g.normal(size=(3, c, L)).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    hit = g.random(x.shape) < 0.15
    x[hit] = g.choice(special, size=int(hit.sum()))
    x[0, 0, :8] = [-0.0, 0.0, -1.0, -2.0, 0.0, -0.0, -3.0, -4.0]  # ties of zeros
    n = L // 4
    want = x[:, :, 0 : 4 * n : 4].copy()
    for j in range(1, 4):
        v = x[:, :, j : 4 * n : 4]
        want = np.where((v > want) | np.isnan(v), v, want)
    with torch.no_grad():
        ref = nn.functional.max_pool1d(torch.from_numpy(x), 4, 4).numpy()
    np.testing.assert_array_equal(want, ref)  # NaN where PyTorch has NaN, the same values
    assert want[0, 0, :2].tobytes() == np.array([-0.0, 0.0], np.float32).tobytes()
    assert_bits_on_every_path(path, x.reshape(3, -1), want.reshape(3, -1))
