"""Confidence intervals, significance and equivalence tests for multi-seed results (the sweep
tables).

One metric value per run (one run per seed). For each grid point, the (1 − α) CI of its mean;
for each point against a baseline point, the difference of means with its CI and a two-sided
p-value, Holm-corrected across the points compared, optionally a TOST equivalence test within
a margin ``M``, and a verdict at the level ``alpha``. The t-based CIs and every p-value come
from ``scipy.stats`` (``ttest_1samp`` / ``ttest_rel`` / ``ttest_ind(equal_var=False)`` and their
``TtestResult.confidence_interval``):

- **mean CI**: ``t``: mean ± t(1 − α/2, n − 1) · s / √n (s the sample std, ddof = 1);
  ``bootstrap``: the α/2 and 1 − α/2 percentiles of the means of ``samples`` resamples with
  replacement (numpy ``default_rng(seed)``, so a table is reproducible).
- **difference** Δ (point − baseline): *paired by seed* when both points ran the same seeds (the
  usual sweep): the per-seed differences d, Δ = mean(d), its CI as above on d, and the p-value
  of the paired t-test (``ttest_rel``); otherwise *Welch*: the difference of the two means, its
  CI with the Welch–Satterthwaite degrees of freedom and the p-value of Welch's t-test
  (``ttest_ind(equal_var=False)``). With ``ci="bootstrap"`` Δ's CI is a bootstrap too (of d when
  paired, of the two samples independently for Welch); the p-values stay the t-tests'.
- **TOST** (with a margin M > 0, in the metric's units): two one-sided t-tests of the same kind
  (paired or Welch) on shifted data, H₀: Δ ≤ −M against Δ > −M (``alternative="greater"`` on
  point + M) and H₀: Δ ≥ +M against Δ < +M (``alternative="less"`` on point − M);
  ``p_tost`` = the larger of the two p-values. p_tost < α exactly when the t-based (1 − 2α) CI of
  Δ (``tost_low``, ``tost_high``; t-based whatever ``ci`` is, so it always matches p_tost) lies
  inside (−M, +M). The margin is symmetric, so the metric's direction does not matter here.
- **Holm**: the m p-values sorted ascending, p₍ᵢ₎ · (m − i + 1), made non-decreasing, capped at 1
  (NaN p-values, e.g. from fewer than two seeds or no variance, are left out of m and stay NaN).
  Two families, each corrected on its own across the m points compared with the baseline: the
  two-sided superiority p-values (``p_holm``, as without a margin) and the TOST p-values
  (``p_tost_holm``). Each family's chance of one or more false verdicts of its kind ("better" /
  "worse", resp. "equivalent") stays ≤ α. A TOST p-value needs no correction for its own two
  one-sided tests: equivalence is claimed only when both reject (an intersection–union test).
- **verdict**: ``better`` / ``worse`` when the Holm-adjusted superiority p < α (the direction
  from the sign of Δ and whether higher is better for the metric); otherwise, without a margin,
  ``not distinguishable``; with a margin, ``equivalent`` when the Holm-adjusted TOST p < α, else
  ``inconclusive``. better / worse come first: a Δ that is both significant and inside the
  margin (a real but smaller-than-M difference) reads better / worse, and its TOST p shows
  that it is within the margin.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from scipy import stats as _st

__all__ = [
    "CI_METHODS",
    "VERDICTS",
    "higher_is_better",
    "mean_ci",
    "compare",
    "holm",
    "verdict",
]

CI_METHODS = ("t", "bootstrap")
# every verdict a compared row can get (the baseline row says "baseline")
VERDICTS = ("better", "worse", "equivalent", "inconclusive", "not distinguishable")
# metric names (the part after the last "/", lower-cased) for which lower is better
_LOWER_IS_BETTER = ("loss", "eer", "err", "error", "wer", "cer", "far", "frr", "dcf", "mindcf")

NAN = math.nan


def higher_is_better(metric: str) -> bool:
    """``False`` for a loss or an error rate (``val/loss``, ``test/eer``, ``test/min_dcf``, ...),
    ``True`` otherwise (accuracy, F1, AUC)."""
    name = metric.rsplit("/", 1)[-1].lower()
    words = name.replace("-", "_").split("_")
    return not any(w in _LOWER_IS_BETTER or w.endswith("loss") for w in words)


@contextmanager
def _exact_constants() -> Iterator[None]:
    """Silence scipy's "precision loss" warning: a sample whose values are all equal (e.g. a
    validation accuracy of 1.0 on every seed) has a variance of exactly 0, not a lost one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        yield


def _bootstrap_means(values: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(values), size=(samples, len(values)))
    return values[idx].mean(axis=1)


def _interval(res: Any, confidence: float) -> tuple[float, float]:
    ci = res.confidence_interval(confidence_level=confidence)
    return float(ci.low), float(ci.high)


def mean_ci(
    values: Sequence[float],
    alpha: float = 0.05,
    method: str = "t",
    samples: int = 10000,
    seed: int = 0,
) -> tuple[float, float]:
    """The (1 − α) CI of the mean of ``values``; ``(nan, nan)`` with fewer than two values,
    ``(mean, mean)`` when they are all equal."""
    if method not in CI_METHODS:
        raise ValueError(f"ci method must be one of {CI_METHODS}, got {method!r}")
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return NAN, NAN
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    if method == "t":
        return _interval(_st.ttest_1samp(x, 0.0), 1 - alpha)
    means = _bootstrap_means(x, samples, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _ttest(x: np.ndarray, b: np.ndarray, paired: bool, alternative: str = "two-sided") -> Any:
    with _exact_constants():
        if paired:
            return _st.ttest_rel(x, b, alternative=alternative)
        return _st.ttest_ind(x, b, equal_var=False, alternative=alternative)


def _tost(
    x: np.ndarray, b: np.ndarray, paired: bool, margin: float, alpha: float, two_sided: Any
) -> dict[str, float]:
    """TOST within ±``margin``: ``p_tost`` (the larger one-sided p) and the (1 − 2α) CI
    (from ``two_sided``, the two-sided t-test of ``x`` against ``b`` already run)."""
    p_low = float(_ttest(x + margin, b, paired, "greater").pvalue)  # H1: Δ > −M
    p_high = float(_ttest(x - margin, b, paired, "less").pvalue)  # H1: Δ < +M
    lo, hi = _interval(two_sided, 1 - 2 * alpha)
    return {"p_tost": max(p_low, p_high), "tost_low": lo, "tost_high": hi}


def compare(
    values: Sequence[float],
    seeds: Sequence[int],
    base_values: Sequence[float],
    base_seeds: Sequence[int],
    alpha: float = 0.05,
    method: str = "t",
    samples: int = 10000,
    seed: int = 0,
    margin: float | None = None,
) -> dict[str, Any]:
    """A point (``values`` by ``seeds``) against the baseline: ``test`` (``paired`` when both
    ran the same seeds, else ``welch``), ``diff`` (point − baseline), ``diff_low`` /
    ``diff_high`` (its CI) and ``p`` (two-sided; NaN with too few runs or no variance).

    With a ``margin`` also ``margin``, ``p_tost`` (TOST within ±margin: the larger of the two
    one-sided p-values; NaN where ``p`` is) and ``tost_low`` / ``tost_high`` (Δ's t-based
    (1 − 2α) CI, inside (−margin, +margin) exactly when ``p_tost`` < α).
    """
    if method not in CI_METHODS:
        raise ValueError(f"ci method must be one of {CI_METHODS}, got {method!r}")
    if margin is not None and not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"the equivalence margin must be a positive number, got {margin!r}")
    x = dict(zip(seeds, values, strict=True))
    b = dict(zip(base_seeds, base_values, strict=True))
    out: dict[str, Any] = {"test": "", "diff": NAN, "diff_low": NAN, "diff_high": NAN, "p": NAN}
    if margin is not None:
        out.update(margin=margin, p_tost=NAN, tost_low=NAN, tost_high=NAN)
    if not x or not b:
        return out
    paired = set(x) == set(b)
    if paired:
        order = sorted(x)
        xa = np.array([x[s] for s in order], dtype=float)
        ba = np.array([b[s] for s in order], dtype=float)
        d = xa - ba
        out.update(test="paired", diff=float(d.mean()))
        if len(d) < 2:
            return out
        out["diff_low"], out["diff_high"] = mean_ci(d, alpha, method, samples, seed)
        testable = bool(np.ptp(d) > 0)  # all-equal differences: the t statistic is undefined
    else:
        xa = np.array(list(x.values()), dtype=float)
        ba = np.array(list(b.values()), dtype=float)
        out.update(test="welch", diff=float(xa.mean() - ba.mean()))
        if len(xa) < 2 or len(ba) < 2:
            return out
        testable = bool(np.ptp(xa) > 0 or np.ptp(ba) > 0)  # else the standard error is 0
        if testable and method == "bootstrap":
            rng = np.random.default_rng(seed)
            boot = _bootstrap_means(xa, samples, rng) - _bootstrap_means(ba, samples, rng)
            lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
            out.update(diff_low=float(lo), diff_high=float(hi))
    if testable:
        res = _ttest(xa, ba, paired)
        out["p"] = float(res.pvalue)
        if not paired and method == "t":
            out["diff_low"], out["diff_high"] = _interval(res, 1 - alpha)
        if margin is not None:
            out.update(_tost(xa, ba, paired, margin, alpha, res))
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order; NaN stays NaN (not counted)."""
    valid = [(p, i) for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    valid.sort()
    m = len(valid)
    adjusted = [NAN] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(valid):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def _significant(p: float | None, alpha: float) -> bool:
    return p is not None and not math.isnan(p) and p < alpha


def verdict(
    diff: float,
    p_adjusted: float,
    alpha: float,
    higher_better: bool = True,
    p_tost: float | None = None,
) -> str:
    """``better`` / ``worse`` (than the baseline) when ``p_adjusted < alpha``; otherwise
    ``not distinguishable`` without an equivalence test (``p_tost=None``), and with one
    (``p_tost``: the Holm-adjusted TOST p, NaN when untestable) ``equivalent`` when
    ``p_tost < alpha``, else ``inconclusive``."""
    if _significant(p_adjusted, alpha) and diff != 0:
        return "better" if (diff > 0) == higher_better else "worse"
    if p_tost is None:
        return "not distinguishable"
    return "equivalent" if _significant(p_tost, alpha) else "inconclusive"
