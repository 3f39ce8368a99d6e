"""SmallInit-Emb: tiny uniform weights, and a LayerNorm right after the input projection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kwsnet.init import ProjectionWithNorm, SmallInitEmb
from kwsnet.optim import split_decay

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.input_projection = nn.Linear(12, 16)
        self.prenet = self.input_projection  # an alias that must keep working
        self.tokens = nn.Embedding(20, 16)
        self.body = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.input_projection(x))


def test_weights_within_a_and_layernorm_follows_projection() -> None:
    torch.manual_seed(0)
    wrapper = nn.ModuleDict({"backbone": _Backbone()})
    strategy = SmallInitEmb(a=1e-4, seed=0)
    strategy.prepare(wrapper)
    rows = strategy.apply(wrapper)
    bb = wrapper["backbone"]
    proj = bb.input_projection
    assert isinstance(proj, ProjectionWithNorm) and bb.prenet is proj
    assert isinstance(proj[0], nn.Linear) and isinstance(proj[1], nn.LayerNorm)
    assert proj.weight is proj[0].weight and proj.out_features == 16
    for w in (proj.weight, bb.tokens.weight):
        assert w.abs().max() <= 1e-4 and w.abs().max() > 0
    assert proj.bias.abs().max() == 0
    assert sorted(r["layer"] for r in rows) == ["backbone.input_projection.0", "backbone.tokens"]
    # The model still runs, the projection output is normalised, LN params get no decay.
    x = torch.randn(3, 5, 12)
    h = proj(x)
    torch.testing.assert_close(h.mean(-1), torch.zeros(3, 5), atol=1e-4, rtol=0)
    assert bb(x).shape == (3, 5, 4)
    _, no_decay = split_decay(wrapper)
    assert "backbone.input_projection.1.weight" in no_decay
    # prepare is idempotent.
    strategy.prepare(wrapper)
    assert isinstance(bb.input_projection[0], nn.Linear)


def test_conformer_input_norm_slot_is_used() -> None:
    from kwsnet.models.conformer import ConformerBackbone

    torch.manual_seed(0)
    bb = ConformerBackbone(
        input_dim=8, d_model=16, num_heads=2, ffn_dim=16, num_layers=1, depthwise_conv_kernel_size=3
    )
    assert isinstance(bb.input_norm, nn.Identity)
    SmallInitEmb().prepare(bb)
    SmallInitEmb().apply(bb)
    assert isinstance(bb.input_norm, nn.LayerNorm) and isinstance(bb.input_projection, nn.Linear)
    assert bb.input_projection.weight.abs().max() <= 1e-4
    assert bb(torch.randn(2, 7, 8), torch.tensor([7, 5])).shape == (2, bb.embed_dim)


def test_apply_without_prepare_still_inserts_the_norm() -> None:
    bb = _Backbone()
    SmallInitEmb().apply(bb)
    assert isinstance(bb.input_projection, ProjectionWithNorm)
