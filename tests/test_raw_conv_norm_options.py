"""RawConv ``norm_options``: passed to make_norm, settable from YAML, misspellings fail."""

from __future__ import annotations

import pytest
import torch
from jsonargparse import ArgumentParser

from kwsnet.models.raw_conv import RawConv
from kwsnet.nn.norms import NormWarmup, RunningChannelNorm

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


def test_channel_norm_options_build_and_train_one_step() -> None:
    torch.manual_seed(0)
    model = RawConv(input_samples=4000, norm="channel", norm_options={"momentum": 0.9})
    norms = [m for m in model.layers if isinstance(m, RunningChannelNorm)]
    assert len(norms) == 3 and all(n.momentum == 0.9 for n in norms)
    head = torch.nn.Linear(model.embed_dim, 3)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    before = [p.detach().clone() for p in params]
    x, y = torch.randn(4, 4000), torch.tensor([0, 1, 2, 0])
    loss = torch.nn.functional.cross_entropy(head(model(x)), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, params, strict=True))
    assert norms[0].running_mean.abs().sum() > 0  # the running average was updated


def test_warmup_steps_wraps_and_end_placement_gets_options() -> None:
    model = RawConv(
        input_samples=4000,
        norm="channel",
        norm_placement="end",
        norm_options={"momentum": 0.95, "warmup_steps": 100},
    )
    end = model.layers[-1]
    assert isinstance(end, NormWarmup) and end.warmup_steps == 100
    assert isinstance(end.norm, RunningChannelNorm) and end.norm.momentum == 0.95
    assert model(torch.randn(2, 4000)).shape == (2, 64)


@pytest.mark.parametrize("placement", ["per_conv", "end", "none"])
def test_bad_option_names_itself(placement: str) -> None:
    with pytest.raises(ValueError, match="momentun"):
        RawConv(norm="channel", norm_placement=placement, norm_options={"momentun": 0.9})
    with pytest.raises(ValueError, match="num_groups"):
        RawConv(norm="layer", norm_placement=placement, norm_options={"num_groups": 4})


def test_norm_options_from_yaml() -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(RawConv, "backbone")
    cfg = parser.parse_string(
        "backbone:\n  norm: channel\n  norm_options: {momentum: 0.9, warmup_steps: 10}\n"
    )
    assert cfg.backbone.norm_options == {"momentum": 0.9, "warmup_steps": 10}
    model = RawConv(**cfg.backbone.as_dict())
    assert [m.norm.momentum for m in model.layers if isinstance(m, NormWarmup)] == [0.9] * 3
