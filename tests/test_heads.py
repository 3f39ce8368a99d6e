"""Classification heads: AM-softmax / AAM-softmax values, eval behaviour, margin warm-up."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kwsnet.nn.heads import AAMSoftmaxHead, AMSoftmaxHead, LinearHead

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


def _tiny_head(cls, **kwargs):
    head = cls(2, 3, **kwargs)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]))
    return head


def test_am_softmax_hand_computed():
    head = _tiny_head(AMSoftmaxHead, scale=30.0, margin=0.35).train()
    emb = torch.tensor([[3.0, 4.0]])  # unit: (0.6, 0.8)
    cos = torch.tensor([0.6, 0.8, -1.4 / math.sqrt(2)])
    logits = head(emb, torch.tensor([1]))
    expected = 30.0 * torch.tensor([[cos[0], cos[1] - 0.35, cos[2]]])
    torch.testing.assert_close(logits, expected)
    loss = F.cross_entropy(logits, torch.tensor([1]))
    assert loss.item() == pytest.approx(F.cross_entropy(expected, torch.tensor([1])).item())


def test_am_softmax_is_scaled_cosine_in_eval_and_without_labels():
    head = _tiny_head(AMSoftmaxHead)
    emb = torch.tensor([[3.0, 4.0], [1.0, -1.0]])
    labels = torch.tensor([1, 0])
    plain = 30.0 * head.cosine(emb)
    torch.testing.assert_close(head.train()(emb), plain)
    torch.testing.assert_close(head.eval()(emb, labels), plain)
    assert int(head.num_steps) == 0


def test_aam_softmax_hand_computed():
    head = _tiny_head(AAMSoftmaxHead, scale=10.0, margin=0.2).train()
    emb = torch.tensor([[3.0, 4.0]])
    logits = head(emb, torch.tensor([0]))
    theta = math.acos(0.6)
    assert logits[0, 0].item() == pytest.approx(10.0 * math.cos(theta + 0.2), rel=1e-5)
    assert logits[0, 1].item() == pytest.approx(8.0, rel=1e-5)


def test_margin_warmup_ramps_with_training_steps():
    head = _tiny_head(AMSoftmaxHead, margin=0.4, warmup_steps=4).train()
    emb, labels = torch.tensor([[3.0, 4.0]]), torch.tensor([1])
    margins = []
    for _ in range(6):
        margins.append(head.current_margin)
        head(emb, labels)
    assert margins == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
    assert "num_steps" in head.state_dict()
    head.set_progress(0.5)
    assert head.current_margin == pytest.approx(0.2)


def test_linear_head_contract_kept():
    head = LinearHead(4, 3, bias=False)
    assert head.fc.bias is None and head.out_features == 3
    emb = torch.randn(2, 4)
    assert head(emb, torch.tensor([0, 1])).shape == (2, 3)
    assert head.embedding_for_verification(emb) is emb
