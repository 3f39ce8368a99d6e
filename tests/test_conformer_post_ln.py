"""Post-LN Conformer variant: shapes, padding invariance, differs from Pre-LN, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kwsnet.models.conformer import ConformerBackbone

from .conftest import assert_padding_invariant, small_conformer

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


def _small(**kwargs) -> ConformerBackbone:
    return small_conformer(**{"post_ln": True, **kwargs})


def test_post_ln_shapes_and_structure() -> None:
    model = _small()
    out = model(torch.randn(3, 12, 8), torch.tensor([12, 9, 3]))
    assert out.shape == (3, model.embed_dim) == (3, 16)
    layer = model.conformer.conformer_layers[0]
    # Post-LN: no LayerNorm in front of a sub-block, one after each residual addition.
    assert not any(isinstance(m, nn.LayerNorm) for m in layer.ffn1.modules())
    assert not any(isinstance(m, nn.LayerNorm) for m in layer.conv_module.modules())
    norms = [n for n, m in layer.named_children() if isinstance(m, nn.LayerNorm)]
    assert norms == ["ffn1_norm", "self_attn_norm", "conv_norm", "ffn2_norm"]
    # Each frame of the encoder output is normalised by the last LayerNorm (affine is 1, 0).
    frames = model.encode(torch.randn(2, 6, 8), torch.tensor([6, 6]))
    torch.testing.assert_close(frames.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    # The default keeps torchaudio's Pre-LN layers and their parameter names.
    pre = _small(post_ln=False)
    assert type(pre.conformer).__module__.startswith("torchaudio")
    assert "conformer.conformer_layers.0.self_attn_layer_norm.weight" in pre.state_dict()


def test_post_ln_padding_leaves_embedding_unchanged() -> None:
    for convolution_first in (False, True):
        model = _small(convolution_first=convolution_first)
        assert_padding_invariant(model, torch.randn(2, 10, 8), torch.tensor([10, 6]))


def test_post_ln_without_conv_masking_sees_padding() -> None:
    # The padding hooks are what make the Post-LN path invariant, as for Pre-LN.
    model = _small(mask_conv_padding=False)
    x = torch.randn(1, 10, 8)
    with torch.no_grad():
        short = model(x[:, :6], torch.tensor([6]))
        padded = model(torch.cat([x[:, :6], 5.0 + x[:, 6:]], dim=1), torch.tensor([6]))
        both = model(torch.cat([x, x]), torch.tensor([10, 6]))
    # Trimmed to max(lengths): a single padded sequence is never padded.
    torch.testing.assert_close(padded, short)
    assert not torch.allclose(both[1], short[0], atol=1e-4)


def test_post_ln_differs_from_pre_ln() -> None:
    x, lengths = torch.randn(2, 9, 8), torch.tensor([9, 5])
    with torch.no_grad():
        post = _small()(x, lengths)
        pre = _small(post_ln=False)(x, lengths)
    assert post.shape == pre.shape
    assert (post - pre).abs().max() > 1e-2


def test_post_ln_gradients_reach_every_parameter() -> None:
    model = _small(input_norm=True).train()
    model(torch.randn(3, 7, 8), torch.tensor([7, 4, 2])).pow(2).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    assert model.input_projection.weight.grad.abs().sum() > 0
    assert model.conformer.conformer_layers[0].ffn1[0].weight.grad.abs().sum() > 0
