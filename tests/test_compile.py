"""``model.compile``: the compiled backbone trains like eager, and a torch.compile that cannot
build (no C++ compiler) warns once and trains eager instead of crashing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from kwsnet.lit import ClassifierModule
from kwsnet.models.raw_conv import RawConv

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


def _pair() -> tuple[ClassifierModule, ClassifierModule]:
    torch.manual_seed(0)
    eager = ClassifierModule(RawConv(input_samples=1024, channels=(4, 8, 8)), num_classes=3)
    compiled = ClassifierModule(
        RawConv(input_samples=1024, channels=(4, 8, 8)), num_classes=3, compile=True
    )
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
    return eager, compiled


def _grads(model: ClassifierModule, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x, torch.full((len(x),), x.shape[1])), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.fixture
def fresh_inductor(tmp_path, monkeypatch):
    """A private inductor cache: no kernel built by another test (or ISA) is reused."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_forward_and_backward_match_eager(fresh_inductor) -> None:
    eager, compiled = _pair()
    assert list(compiled.state_dict()) == list(eager.state_dict())
    x, y = torch.randn(4, 1024), torch.tensor([0, 1, 2, 0])
    ref, got = _grads(eager, x, y), _grads(compiled, x, y)
    assert compiled.compile_error is None and compiled.compile_backbone
    for name, g in ref.items():
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-5 * max(1.0, g.abs().max()))


def test_compile_without_a_cxx_compiler_trains_eager(fresh_inductor, monkeypatch) -> None:
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++",))
    eager, compiled = _pair()
    x, y = torch.randn(4, 1024), torch.tensor([0, 1, 2, 0])
    with pytest.warns(UserWarning, match="model.compile: torch.compile failed .*training eager"):
        compiled._probe_compile(x, torch.full((4,), 1024))
    assert compiled.compile_error and not compiled.compile_backbone
    assert all(p.grad is None for p in compiled.parameters())  # the probe leaves no gradients
    ref, got = _grads(eager, x, y), _grads(compiled, x, y)
    for name, g in ref.items():
        torch.testing.assert_close(got[name], g)  # eager on both sides: the same kernels
