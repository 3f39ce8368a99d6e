"""Verification metrics: EER and minDCF on known cases, seeded trials."""

from __future__ import annotations

import hashlib

import pytest
import torch

from kwsnet.metrics import (
    build_trials,
    compute_eer,
    compute_min_dcf,
    cosine_scores,
    verification_metrics,
)


def test_separable_scores_give_zero_eer_and_dcf():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.2, 0.1, 0.0])
    labels = torch.tensor([1, 1, 1, 0, 0, 0])
    eer, threshold = compute_eer(scores, labels)
    assert eer == 0.0 and 0.2 < threshold <= 0.7
    assert compute_min_dcf(scores, labels)[0] == 0.0


def test_reversed_scores_give_eer_one_and_random_half():
    labels = torch.tensor([1, 1, 0, 0])
    assert compute_eer(torch.tensor([0.0, 0.1, 0.8, 0.9]), labels)[0] == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(20000, generator=gen)
    labels = torch.rand(20000, generator=gen) < 0.5
    assert compute_eer(scores, labels)[0] == pytest.approx(0.5, abs=0.02)
    assert compute_min_dcf(scores, labels)[0] == pytest.approx(1.0, abs=0.05)


def test_eer_hand_case_and_ties():
    # one target below one non-target among 4 + 4: fnr = fpr = 1/4 at the crossing.
    scores = torch.tensor([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.0])
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    assert compute_eer(scores, labels)[0] == pytest.approx(0.25)
    # all scores tied: a single cut from (fnr 1, fpr 0) to (0, 1) crosses at 0.5.
    assert compute_eer(torch.zeros(4), labels[2:6])[0] == pytest.approx(0.5)
    # minDCF with p_target 0.5: min over cuts of 0.5 fnr + 0.5 fpr, normalised by 0.5.
    assert compute_min_dcf(scores, labels, p_target=0.5)[0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="target and non-target"):
        compute_eer(torch.rand(3), torch.ones(3))


def test_build_trials_is_seeded_and_correct():
    speakers = torch.tensor([0, 0, 1, 2, 2, 2, 1, 3])
    enroll, test, is_target = build_trials(speakers, 200, seed=3)
    again = build_trials(speakers, 200, seed=3)
    assert all(torch.equal(a, b) for a, b in zip((enroll, test, is_target), again, strict=True))
    assert not torch.equal(enroll, build_trials(speakers, 200, seed=4)[0])
    assert int(is_target.sum()) == 100
    same = speakers[enroll] == speakers[test]
    assert torch.equal(same, is_target)
    assert (enroll[is_target] != test[is_target]).all()
    assert set(enroll[is_target].tolist()) <= {0, 1, 2, 3, 4, 5, 6}  # speaker 3 has one utt


def test_cosine_scoring_of_clustered_embeddings():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=gen) * 5
    speakers = torch.arange(5).repeat_interleave(6)
    emb = centres[speakers] + 0.1 * torch.randn(30, 16, generator=gen)
    enroll, test, is_target = build_trials(speakers, 500, seed=0)
    scores = cosine_scores(emb, enroll, test)
    assert scores.shape == (500,)
    assert compute_eer(scores, is_target)[0] == 0.0
    metrics = verification_metrics(emb, speakers, n_trials=500)
    assert metrics["eer"] == 0.0 and metrics["min_dcf"] == 0.0


def test_clip_keys_and_first_occurrences():
    """What ClassifierModule uses to drop the DistributedSampler's padding after the gather:
    keys from a digest of the path (equal in every process), the first of equal keys kept."""
    from kwsnet.lit import _clip_keys, _first_occurrences

    keys = _clip_keys(["a.wav", "b.wav", "a.wav", "c.wav", "b.wav"], 5)
    assert (keys >= 0).all() and keys[0] == keys[2] and keys[1] == keys[4] != keys[0]
    digest = hashlib.blake2b(b"a.wav", digest_size=8).digest()
    assert int(keys[0]) == int.from_bytes(digest, "little") >> 1
    assert _first_occurrences(keys).tolist() == [True, True, False, True, False]
    assert _clip_keys(None, 3).tolist() == [-1, -1, -1]  # no paths: never a duplicate
    assert _first_occurrences(torch.tensor([-1, 4, -1, 4])).tolist() == [True, True, True, False]
    assert _first_occurrences(torch.zeros(0, dtype=torch.long)).tolist() == []
