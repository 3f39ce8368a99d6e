import pytest
import torch

from kwsnet.models.raw_conv import RawConv

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


def test_default_shapes_match_the_seed_architecture():
    m = RawConv()
    assert m.norm_shapes == [(16, 1000), (32, 250), (64, 62)]
    assert m(torch.randn(3, 16000)).shape == (3, 64)
    assert m.embed_dim == 64
    lns = [x for x in m.layers if isinstance(x, torch.nn.LayerNorm)]
    assert [tuple(x.normalized_shape) for x in lns] == m.norm_shapes


@pytest.mark.parametrize("placement,n_norms", [("per_conv", 3), ("end", 1), ("none", 0)])
def test_placements(placement, n_norms):
    m = RawConv(norm_placement=placement)
    lns = [x for x in m.layers if isinstance(x, torch.nn.LayerNorm)]
    assert len(lns) == n_norms
    if placement == "end":
        assert tuple(lns[0].normalized_shape) == (64,)
        assert isinstance(m.layers[-1], torch.nn.LayerNorm)
    assert m(torch.randn(2, 1, 16000)).shape == (2, 64)


def test_norm_shapes_follow_input_and_channels():
    m = RawConv(input_samples=8000, channels=(8, 12))
    assert m.norm_shapes == [(8, 500), (12, 125)]
    assert m(torch.randn(1, 8000)).shape == (1, 12)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"norm_placement": "pre"}, "norm_placement"),
        ({"kernel_size": 4}, "odd"),
        ({"input_samples": 100}, "too short"),
        ({"norm": "bogus"}, "valid kinds"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RawConv(**kwargs)


def test_wrong_input_length_is_a_clear_error():
    with pytest.raises(ValueError, match="16000 samples"):
        RawConv()(torch.randn(1, 12000))
