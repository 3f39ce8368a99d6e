"""Weight-decay groups hold exactly the intended parameters."""

from __future__ import annotations

import torch
from torch import nn

from kwsnet.models.raw_conv import RawConv
from kwsnet.nn.norms import make_norm
from kwsnet.optim import param_groups, split_decay


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.channel = make_norm("channel", (8, 5))
        self.layerwise = make_norm("layerwise", (8, 5), warmup_steps=10)
        self.group = make_norm("group", (8, 5), num_groups=4)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 3, bias=False)
        self.scale = nn.Parameter(torch.ones(1))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.shared = self.fc  # the same Linear under a second name


def test_groups_contain_exactly_the_intended_parameters() -> None:
    decay, no_decay = split_decay(_Mixed())
    assert list(decay) == ["scale", "emb.weight", "conv.weight", "fc.weight"]
    assert sorted(no_decay) == sorted(
        [
            "conv.bias",
            "channel.weight",
            "channel.bias",
            "layerwise.norm.weight",
            "layerwise.norm.bias",
            "group.weight",
            "group.bias",
            "ln.weight",
            "ln.bias",
        ]
    )


def test_switches_move_norms_and_biases_into_decay() -> None:
    decay, no_decay = split_decay(_Mixed(), no_decay_norms=False, no_decay_bias=True)
    assert sorted(no_decay) == [
        "channel.bias",
        "conv.bias",
        "group.bias",
        "layerwise.norm.bias",
        "ln.bias",
    ]
    assert "channel.weight" in decay and "ln.weight" in decay
    decay, no_decay = split_decay(_Mixed(), no_decay_norms=True, no_decay_bias=False)
    assert "conv.bias" in decay and "channel.bias" in no_decay


def test_param_groups_feed_an_optimizer_on_raw_conv() -> None:
    model = RawConv()
    groups = param_groups(model, weight_decay=0.01)
    n_decay = sum(p.numel() for p in groups[0]["params"])
    conv_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv1d))
    assert groups[0]["weight_decay"] == 0.01 and n_decay == conv_weights
    assert groups[1]["weight_decay"] == 0.0
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())
    torch.optim.AdamW(groups, lr=1e-3)
