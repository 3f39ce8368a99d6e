"""Speaker verification metrics: trials, cosine scoring, EER and minDCF.

A *trial* pairs two utterances; it is a *target* trial when both share a speaker. Scores are
higher for "same speaker"; a threshold accepts trials scoring at or above it. Everything is
computed with torch on whatever device the inputs live on.

    enroll, test, is_target = build_trials(speakers, n_trials=10000, seed=0)
    scores = cosine_scores(embeddings, enroll, test)
    eer, _ = compute_eer(scores, is_target)
    min_dcf, _ = compute_min_dcf(scores, is_target)  # p_target 0.01, c_miss = c_fa = 1
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "build_trials",
    "cosine_scores",
    "compute_eer",
    "compute_min_dcf",
    "verification_metrics",
]


def _error_rates(
    scores: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Miss and false-alarm rates at every distinct threshold, from "accept none" upwards.

    Returns ``(fnr, fpr, thresholds)``, each ``[K + 1]`` for ``K`` distinct scores; entry 0 is
    the threshold ``+inf`` (fnr 1, fpr 0), entry ``k`` accepts the ``k`` highest scores.
    """
    scores = scores.detach().flatten().double()
    labels = labels.detach().flatten().bool()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} differ")
    n_target = int(labels.sum())
    n_nontarget = labels.numel() - n_target
    if n_target == 0 or n_nontarget == 0:
        raise ValueError(
            f"need target and non-target trials, got {n_target} target and {n_nontarget} non-target"
        )
    order = torch.argsort(scores, descending=True)
    sorted_scores, sorted_labels = scores[order], labels[order].double()
    tp = torch.cumsum(sorted_labels, 0)
    fp = torch.cumsum(1.0 - sorted_labels, 0)
    # Cut only after the last of equal scores: tied trials are accepted together.
    last_of_group = torch.ones_like(sorted_labels, dtype=torch.bool)
    last_of_group[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    tp, fp, thresholds = tp[last_of_group], fp[last_of_group], sorted_scores[last_of_group]
    zero = scores.new_zeros(1)
    fnr = 1.0 - torch.cat([zero, tp]) / n_target
    fpr = torch.cat([zero, fp]) / n_nontarget
    thresholds = torch.cat([scores.new_full((1,), float("inf")), thresholds])
    return fnr, fpr, thresholds


def compute_eer(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Equal error rate: where the miss rate equals the false-alarm rate.

    Args:
        scores: ``[N]`` trial scores (higher = more likely the same speaker).
        labels: ``[N]`` 1/True for target trials, 0/False for non-target.

    Returns:
        ``(eer, threshold)``: EER in [0, 1], linearly interpolated between the two operating
        points where ``fnr - fpr`` changes sign, and the threshold at the crossing point.
    """
    fnr, fpr, thresholds = _error_rates(scores, labels)
    diff = fnr - fpr  # starts at 1, ends at -1, non-increasing
    i = int(torch.nonzero(diff <= 0)[0])
    d0, d1 = float(diff[i - 1]), float(diff[i])
    t = d0 / (d0 - d1)
    eer = float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
    return eer, float(thresholds[i])


def compute_min_dcf(
    scores: torch.Tensor,
    labels: torch.Tensor,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Minimum normalised detection cost (NIST SRE style).

    ``DCF(t) = c_miss * p_target * fnr(t) + c_fa * (1 - p_target) * fpr(t)``, divided by the
    cost of the best trivial system ``min(c_miss * p_target, c_fa * (1 - p_target))`` and
    minimised over all thresholds.

    Args:
        scores: ``[N]`` trial scores.
        labels: ``[N]`` target (1) / non-target (0).
        p_target: prior of a target trial (default 0.01).
        c_miss: cost of a miss (default 1.0).
        c_fa: cost of a false alarm (default 1.0).

    Returns:
        ``(min_dcf, threshold)``.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    fnr, fpr, thresholds = _error_rates(scores, labels)
    dcf = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr
    dcf = dcf / min(c_miss * p_target, c_fa * (1.0 - p_target))
    i = int(torch.argmin(dcf))
    return float(dcf[i]), float(thresholds[i])


def build_trials(
    speaker_labels: torch.Tensor | list[int],
    n_trials: int,
    seed: int,
    target_fraction: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw seeded verification trials from utterance speaker labels.

    Target trials pair an utterance with a different utterance of its speaker (speakers with
    one utterance are never enrolled in one); non-target trials pair it with an utterance of
    any other speaker. Draws are with replacement and depend only on ``seed``.

    Args:
        speaker_labels: ``[N]`` speaker index per utterance.
        n_trials: number of trials.
        seed: seed of the draw (independent of torch's global RNG).
        target_fraction: share of target trials (default 0.5).

    Returns:
        ``(enroll [n_trials], test [n_trials], is_target [n_trials])``: utterance indices and a
        bool target flag, on CPU.
    """
    labels = torch.as_tensor(speaker_labels, dtype=torch.long).flatten().cpu()
    if not 0.0 <= target_fraction <= 1.0:
        raise ValueError(f"target_fraction must be in [0, 1], got {target_fraction}")
    n_target = round(n_trials * target_fraction)
    n_nontarget = n_trials - n_target
    gen = torch.Generator().manual_seed(seed)
    order = torch.argsort(labels, stable=True)  # utterances grouped by speaker
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(labels.numel())
    group_start, group_count = starts[inverse], counts[inverse]  # per utterance
    if n_nontarget and counts.numel() < 2:
        raise ValueError("non-target trials need at least two speakers")
    eligible = torch.nonzero(group_count >= 2).flatten()
    if n_target and eligible.numel() == 0:
        raise ValueError("target trials need a speaker with at least two utterances")

    def _below(bound: torch.Tensor) -> torch.Tensor:
        return torch.floor(torch.rand(bound.shape, generator=gen) * bound).long()

    enroll_t = eligible[_below(torch.full((n_target,), eligible.numel()))]
    offset = 1 + _below(group_count[enroll_t] - 1)  # another utterance of the same speaker
    pos_t = (
        group_start[enroll_t]
        + (rank[enroll_t] - group_start[enroll_t] + offset) % group_count[enroll_t]
    )
    test_t = order[pos_t]

    enroll_n = _below(torch.full((n_nontarget,), labels.numel()))
    start_n, count_n = group_start[enroll_n], group_count[enroll_n]
    r = _below(labels.numel() - count_n)  # a position outside the enrolled speaker's group
    test_n = order[torch.where(r < start_n, r, r + count_n)]

    enroll = torch.cat([enroll_t, enroll_n])
    test = torch.cat([test_t, test_n])
    is_target = torch.cat(
        [torch.ones(n_target, dtype=torch.bool), torch.zeros(n_nontarget, dtype=torch.bool)]
    )
    return enroll, test, is_target


def cosine_scores(
    embeddings: torch.Tensor, enroll: torch.Tensor, test: torch.Tensor
) -> torch.Tensor:
    """Cosine similarity of each trial's two embeddings: ``[N, D]``, ``[T]``, ``[T]`` → ``[T]``."""
    enroll, test = enroll.to(embeddings.device), test.to(embeddings.device)
    return F.cosine_similarity(embeddings[enroll].float(), embeddings[test].float(), dim=-1)


def verification_metrics(
    embeddings: torch.Tensor,
    speaker_labels: torch.Tensor,
    n_trials: int = 10000,
    seed: int = 0,
    p_target: float = 0.01,
) -> dict[str, float]:
    """EER and minDCF of cosine scoring on seeded trials among ``embeddings [N, D]``.

    Returns ``{"eer": …, "min_dcf": …}`` (both in [0, 1] for the default costs).
    """
    enroll, test, is_target = build_trials(speaker_labels, n_trials, seed)
    scores = cosine_scores(embeddings, enroll, test)
    eer, _ = compute_eer(scores, is_target)
    min_dcf, _ = compute_min_dcf(scores, is_target, p_target=p_target)
    return {"eer": eer, "min_dcf": min_dcf}
