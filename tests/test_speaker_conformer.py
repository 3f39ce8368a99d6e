"""Conformer backbone: shapes, masking of padding, pooling injection."""

from __future__ import annotations

import functools

import pytest
import torch

from kwsnet.nn.pooling import SelfAttentionMaxPooling, SelfAttentionPooling

from .conftest import assert_padding_invariant, small_conformer

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

_small = small_conformer


def test_shapes_and_embed_dim_from_pooling():
    model = _small()
    assert model.embed_dim == 16
    assert isinstance(model.input_projection, torch.nn.Linear)
    out = model(torch.randn(3, 12, 8), torch.tensor([12, 9, 3]))
    assert out.shape == (3, 16)
    concat = _small(pooling=functools.partial(SelfAttentionMaxPooling, batch_norm=True))
    assert concat.embed_dim == 32
    assert concat(torch.randn(2, 10, 8), torch.tensor([10, 6])).shape == (2, 32)


def test_padding_leaves_valid_frames_and_embedding_unchanged():
    model = _small()
    x = torch.randn(2, 10, 8)
    lengths = torch.tensor([10, 6])
    x[1, 6:] = 0.0
    assert_padding_invariant(model, x, lengths)


def test_masking_hooks_match_plain_torchaudio_without_padding():
    masked, plain = _small(), _small(mask_conv_padding=False)
    plain.load_state_dict(masked.state_dict())
    x = torch.randn(2, 9, 8)
    full = torch.tensor([9, 9])
    with torch.no_grad():
        torch.testing.assert_close(masked(x, full), plain(x, full))
    assert not masked.conformer.conformer_layers[0].conv_module.sequential[2]._forward_pre_hooks


def test_backward_and_validation():
    model = _small(pooling=SelfAttentionPooling, input_norm=True).train()
    model(torch.randn(2, 7, 8), torch.tensor([7, 4])).sum().backward()
    assert model.input_projection.weight.grad is not None
    with pytest.raises(ValueError, match="odd"):
        _small(depthwise_conv_kernel_size=4)
    with pytest.raises(ValueError, match="features per frame"):
        _small()(torch.randn(1, 5, 9), torch.tensor([5]))
