"""Confidence intervals and significance tests for multi-seed results (the sweep tables).

One metric value per run (one run per seed). For each grid point, the 95% CI of its mean; for
each point against a baseline point, the difference of means with its CI and a two-sided
p-value, Holm-corrected across the points compared, and a verdict at the level ``alpha``:

- **mean CI**: ``t``: mean ± t(1 − α/2, n − 1) · s / √n (s the sample std, ddof = 1);
  ``bootstrap``: the α/2 and 1 − α/2 percentiles of the means of ``samples`` resamples with
  replacement (numpy ``default_rng(seed)``, so a table is reproducible).
- **difference** (point − baseline): *paired by seed* when both points ran the same seeds (the
  usual sweep): the per-seed differences d, mean(d), its CI as above on d, and the p-value of
  the paired t-test (``scipy.stats.ttest_rel``); otherwise *Welch*: the difference of the two
  means, the CI mean ± t(1 − α/2, ν) · √(s₁²/n₁ + s₂²/n₂) with the Welch–Satterthwaite ν, and
  the p-value of Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``). With
  ``ci="bootstrap"`` the difference's CI is a bootstrap too (of d when paired, of the two
  samples independently for Welch); the p-value stays the t-test's.
- **Holm**: the m p-values sorted ascending, p₍ᵢ₎ · (m − i + 1), made non-decreasing, capped at 1
  (NaN p-values, e.g. from fewer than two seeds, are left out of m and stay NaN).
- **verdict**: ``better`` / ``worse`` when the Holm-adjusted p < α (the direction from the sign
  of the difference and whether higher is better for the metric), else ``not distinguishable``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as _st

__all__ = [
    "CI_METHODS",
    "higher_is_better",
    "mean_ci",
    "compare",
    "holm",
    "verdict",
]

CI_METHODS = ("t", "bootstrap")
# metric names (the part after the last "/", lower-cased) for which lower is better
_LOWER_IS_BETTER = ("loss", "eer", "err", "error", "wer", "cer", "far", "frr", "dcf", "mindcf")

NAN = math.nan


def higher_is_better(metric: str) -> bool:
    """``False`` for a loss or an error rate (``val/loss``, ``test/eer``, ``test/min_dcf``, ...),
    ``True`` otherwise (accuracy, F1, AUC)."""
    name = metric.rsplit("/", 1)[-1].lower()
    words = name.replace("-", "_").split("_")
    return not any(w in _LOWER_IS_BETTER or w.endswith("loss") for w in words)


def _bootstrap_means(values: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(values), size=(samples, len(values)))
    return values[idx].mean(axis=1)


def _t_ci(mean: float, se: float, df: float, alpha: float) -> tuple[float, float]:
    if not math.isfinite(se) or df <= 0:
        return NAN, NAN
    half = float(_st.t.ppf(1 - alpha / 2, df)) * se
    return mean - half, mean + half


def mean_ci(
    values: Sequence[float],
    alpha: float = 0.05,
    method: str = "t",
    samples: int = 10000,
    seed: int = 0,
) -> tuple[float, float]:
    """The (1 − α) CI of the mean of ``values``; ``(nan, nan)`` with fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return NAN, NAN
    if method == "t":
        return _t_ci(float(x.mean()), float(x.std(ddof=1)) / math.sqrt(len(x)), len(x) - 1, alpha)
    if method == "bootstrap":
        means = _bootstrap_means(x, samples, np.random.default_rng(seed))
        lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
        return float(lo), float(hi)
    raise ValueError(f"ci method must be one of {CI_METHODS}, got {method!r}")


def compare(
    values: Sequence[float],
    seeds: Sequence[int],
    base_values: Sequence[float],
    base_seeds: Sequence[int],
    alpha: float = 0.05,
    method: str = "t",
    samples: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """A point (``values`` by ``seeds``) against the baseline: ``test`` (``paired`` when both
    ran the same seeds, else ``welch``), ``diff`` (point − baseline), ``diff_low`` /
    ``diff_high`` (its CI) and ``p`` (two-sided; NaN with too few runs or no variance)."""
    if method not in CI_METHODS:
        raise ValueError(f"ci method must be one of {CI_METHODS}, got {method!r}")
    x = dict(zip(seeds, values, strict=True))
    b = dict(zip(base_seeds, base_values, strict=True))
    out: dict[str, Any] = {"test": "", "diff": NAN, "diff_low": NAN, "diff_high": NAN, "p": NAN}
    if not x or not b:
        return out
    if set(x) == set(b):
        order = sorted(x)
        xa = np.array([x[s] for s in order], dtype=float)
        ba = np.array([b[s] for s in order], dtype=float)
        d = xa - ba
        out.update(test="paired", diff=float(d.mean()))
        if len(d) >= 2:
            lo, hi = mean_ci(d, alpha, method, samples, seed)
            out.update(diff_low=lo, diff_high=hi)
            if np.ptp(d) > 0:  # all-equal differences: the t statistic is undefined
                out["p"] = float(_st.ttest_rel(xa, ba).pvalue)
        return out
    xa = np.array(list(x.values()), dtype=float)
    ba = np.array(list(b.values()), dtype=float)
    diff = float(xa.mean() - ba.mean())
    out.update(test="welch", diff=diff)
    if len(xa) < 2 or len(ba) < 2:
        return out
    vx, vb = xa.var(ddof=1) / len(xa), ba.var(ddof=1) / len(ba)
    se = math.sqrt(vx + vb)
    if se == 0:
        return out
    df = (vx + vb) ** 2 / (vx**2 / (len(xa) - 1) + vb**2 / (len(ba) - 1))
    if method == "t":
        lo, hi = _t_ci(diff, se, df, alpha)
    else:
        rng = np.random.default_rng(seed)
        boot = _bootstrap_means(xa, samples, rng) - _bootstrap_means(ba, samples, rng)
        lo, hi = (float(q) for q in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    out.update(diff_low=lo, diff_high=hi, p=float(_st.ttest_ind(xa, ba, equal_var=False).pvalue))
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


def verdict(diff: float, p_adjusted: float, alpha: float, higher_better: bool = True) -> str:
    """``better`` / ``worse`` (than the baseline) when ``p_adjusted < alpha``, else
    ``not distinguishable``."""
    if p_adjusted is None or math.isnan(p_adjusted) or p_adjusted >= alpha or diff == 0:
        return "not distinguishable"
    return "better" if (diff > 0) == higher_better else "worse"
