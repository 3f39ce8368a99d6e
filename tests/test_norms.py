"""Norm factory and layers: shapes, BatchNorm equivalence, fp32 stats, warm-up, clipping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kwsnet.nn.norms import NORM_KINDS, NormWarmup, RunningChannelNorm, make_norm, masked_batch_norm

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

SHAPES = [(8, 20), (8,)]


@pytest.mark.parametrize("kind", sorted(NORM_KINDS))
@pytest.mark.parametrize("shape", SHAPES)
def test_every_kind_keeps_shape_in_train_and_eval(kind: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    norm = make_norm(kind, shape)
    x = torch.randn(4, *shape) * 3 + 1
    for training in (True, False):
        norm.train(training)
        y = norm(x)
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_unknown_kind_and_option_list_valid_names() -> None:
    with pytest.raises(ValueError, match="valid kinds"):
        make_norm("batchnorm", (4,))
    with pytest.raises(ValueError, match="valid options"):
        make_norm("layer", (4, 10), momentum=0.9)
    with pytest.raises(ValueError, match="num_groups"):
        make_norm("group", (6, 10), num_groups=4)


def test_channel_matches_batchnorm_with_converted_momentum() -> None:
    torch.manual_seed(0)
    ours = make_norm("channel", (6, 30))
    assert isinstance(ours, RunningChannelNorm)
    bn = nn.BatchNorm1d(6, momentum=1 - 0.95)
    with torch.no_grad():
        for layer in (ours, bn):
            layer.weight.copy_(torch.linspace(0.5, 2.0, 6))
            layer.bias.copy_(torch.linspace(-1.0, 1.0, 6))
    n = 5 * 30
    xs = [torch.randn(5, 6, 30) * torch.arange(1, 7).view(1, 6, 1) + 2.0 for _ in range(4)]
    expected_var = torch.ones(6)
    for x in xs:
        torch.testing.assert_close(ours(x), bn(x), rtol=1e-5, atol=1e-5)
        expected_var = 0.95 * expected_var + 0.05 * x.var(dim=(0, 2), correction=0)
    torch.testing.assert_close(ours.running_mean, bn.running_mean)
    # The spec's running variance is the biased one; BatchNorm stores the unbiased one,
    # larger by at most n / (n - 1).
    torch.testing.assert_close(ours.running_var, expected_var)
    assert (bn.running_var >= ours.running_var).all()
    torch.testing.assert_close(ours.running_var, bn.running_var, rtol=1 / (n - 1), atol=0.0)
    # Eval path: with BatchNorm holding our running stats, outputs match.
    ours.eval()
    bn.eval()
    bn.running_var.copy_(ours.running_var)
    x = torch.randn(3, 6, 30)
    torch.testing.assert_close(ours(x), bn(x), rtol=1e-5, atol=1e-5)


def test_channel_on_features_matches_batchnorm() -> None:
    torch.manual_seed(1)
    ours, bn = make_norm("channel", (5,)), nn.BatchNorm1d(5, momentum=0.05)
    x = torch.randn(16, 5) * 4 - 1
    torch.testing.assert_close(ours(x), bn(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, bn.running_mean)


def test_batch_kind_uses_converted_momentum() -> None:
    bn = make_norm("batch", (4, 10), momentum=0.95)
    assert isinstance(bn, nn.BatchNorm1d) and bn.momentum == pytest.approx(0.05)


@pytest.mark.parametrize("kind", ["channel", "layerwise", "layer", "group", "batch"])
def test_stats_stay_float32_under_bf16_autocast(kind: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 8, 3, padding=1)
    norm = make_norm(kind, (8, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(torch.randn(4, 3, 16))
        assert h.dtype == torch.bfloat16
        y = norm(h)
    assert torch.isfinite(y).all()
    for name, buf in norm.named_buffers():
        if buf.is_floating_point():
            assert buf.dtype == torch.float32, name
    if kind in ("channel", "layerwise"):
        # bf16 output of fp32 statistics: per-channel mean ~0 and std ~1 within bf16 rounding.
        yf = y.float().transpose(0, 1).reshape(8, -1) if kind == "channel" else y.float()
        dims = 1 if kind == "channel" else (1, 2)
        assert yf.mean(dim=dims).abs().max() < 2e-2
        assert (yf.std(dim=dims, correction=0) - 1).abs().max() < 2e-2


def test_channel_running_moments_are_clipped() -> None:
    norm = make_norm("channel", (3,), momentum=0.0, clip_mean=0.5, clip_var=(0.1, 2.0))
    norm(torch.randn(64, 3) * 10 + 5)
    assert norm.running_mean.abs().max() <= 0.5
    assert norm.running_var.max() <= 2.0 and norm.running_var.min() >= 0.1


def test_warmup_is_identity_at_zero_then_ramps_to_norm() -> None:
    torch.manual_seed(0)
    layer = make_norm("channel", (4, 12), warmup_steps=4)
    assert isinstance(layer, NormWarmup)
    x = torch.randn(2, 4, 12) * 3 + 2
    torch.testing.assert_close(layer(x), x)
    assert layer.alpha == pytest.approx(0.25)
    for _ in range(3):
        layer(x)
    assert layer.alpha == 1.0 and int(layer.step) == 4
    torch.testing.assert_close(layer(x), layer.norm(x))
    layer.eval()
    step = int(layer.step)
    layer(x)
    assert int(layer.step) == step


# --- masked_batch_norm: training statistics over valid positions only ----------------------


@pytest.mark.parametrize("momentum", [0.1, None])
def test_masked_batch_norm_1d_equals_batch_norm_of_the_valid_frames(momentum):
    """A padded batch [2, C, 7] with lengths (7, 4) trains the statistics (and gives the valid
    outputs) that torch's BatchNorm gives the 11 valid frames alone, whatever the padding holds."""
    torch.manual_seed(0)
    C, lengths = 5, torch.tensor([7, 4])
    x = torch.randn(2, C, 7) * 3 + 1
    x[1, :, 4:] = 50.0  # garbage in the padding
    mask = (torch.arange(7)[None, :] < lengths[:, None]).unsqueeze(1)  # [2, 1, 7]
    bn = nn.BatchNorm1d(C, momentum=momentum)
    ref = nn.BatchNorm1d(C, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    ref.load_state_dict(bn.state_dict())
    valid = torch.cat([x[0], x[1, :, :4]], dim=1).unsqueeze(0)  # [1, C, 11]
    for _ in range(2):  # twice: the running update compounds (and None's cumulative average)
        y = masked_batch_norm(bn, x, mask)
        y_ref = ref(valid)
    torch.testing.assert_close(torch.cat([y[0], y[1, :, :4]], dim=1), y_ref[0])
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 2
    # torch's own BatchNorm on the padded batch does not: the garbage moves its statistics
    plain = nn.BatchNorm1d(C, momentum=momentum)
    plain(x)
    assert not torch.allclose(plain.running_mean, ref.running_mean)


def test_masked_batch_norm_2d_time_mask_and_the_exact_cases():
    """[B, C, T, F] with a [B, 1, T, 1] mask; no padding, no mask and eval mode are bn(x)."""
    torch.manual_seed(1)
    x = torch.randn(3, 4, 6, 5)
    lengths = torch.tensor([6, 2, 5])
    mask = (torch.arange(6)[None, :] < lengths[:, None])[:, None, :, None]
    bn, ref = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
    y = masked_batch_norm(bn, x, mask)
    frames = torch.cat([x[b, :, : int(n)] for b, n in enumerate(lengths)], dim=1)  # [C, 13, F]
    y_ref = ref(frames.unsqueeze(0))[0]
    got = torch.cat([y[b, :, : int(n)] for b, n in enumerate(lengths)], dim=1)
    torch.testing.assert_close(got, y_ref)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    full = torch.ones(3, 1, 6, 1, dtype=torch.bool)
    a, b = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
    assert torch.equal(masked_batch_norm(a, x, full), b(x))  # bitwise: it is bn(x)
    assert torch.equal(masked_batch_norm(a, x, None), b(x))
    a.eval(), b.eval()
    assert torch.equal(masked_batch_norm(a, x, mask), b(x))


def test_masked_batch_norm_rejects_a_wrong_width():
    mask = torch.tensor([[[1, 1, 0]]], dtype=torch.bool)
    with pytest.raises(ValueError, match=r"expects \[B, 4, \.\.\.\]"):
        masked_batch_norm(nn.BatchNorm1d(4), torch.zeros(1, 3, 3), mask)
