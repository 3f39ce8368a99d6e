"""Pooling layers honour lengths and report their width."""

from __future__ import annotations

import pytest
import torch

from kwsnet.nn.pooling import (
    AttentiveStatisticsPooling,
    MaxPooling,
    MeanPooling,
    SelfAttentionMaxPooling,
    SelfAttentionPooling,
)

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

D = 6
KINDS = [
    (MeanPooling, D),
    (MaxPooling, D),
    (SelfAttentionPooling, D),
    (SelfAttentionMaxPooling, 2 * D),
    (AttentiveStatisticsPooling, 2 * D),
]


@pytest.mark.parametrize("cls,out_dim", KINDS)
@pytest.mark.parametrize("batch_norm", [False, True])
def test_padding_does_not_change_pooled_vector(cls, out_dim, batch_norm):
    torch.manual_seed(0)
    pool = cls(D, batch_norm=batch_norm, dropout=0.2).eval()
    assert pool.out_dim == out_dim
    x = torch.randn(3, 7, D)
    lengths = torch.tensor([7, 4, 1])
    ref = pool(x, lengths)
    assert ref.shape == (3, out_dim)
    # Garbage (large values) in the padded region and extra padded frames must not matter.
    padded = torch.cat([x, 100 * torch.randn(3, 5, D)], dim=1)
    padded[1, 4:] = 50.0
    torch.testing.assert_close(pool(padded, lengths), ref)
    # Each row equals the row pooled alone, unpadded.
    for b, n in enumerate(lengths.tolist()):
        alone = pool(x[b : b + 1, :n], torch.tensor([n]))
        torch.testing.assert_close(alone[0], ref[b])


def test_mean_and_max_values():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    lengths = torch.tensor([2])
    assert MeanPooling(1)(x, lengths).item() == pytest.approx(2.0)
    assert MaxPooling(1)(x, lengths).item() == pytest.approx(3.0)


def test_sap_gives_padding_zero_weight_and_lengths_none_means_full():
    pool = SelfAttentionPooling(D)
    x = torch.randn(2, 5, D)
    full = pool(x, torch.tensor([5, 5]))
    torch.testing.assert_close(pool(x), full)


def test_width_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="width 6"):
        MeanPooling(D)(torch.randn(1, 3, D + 1), torch.tensor([3]))
