"""kwsnet/stats.py against scipy.stats on fixed data, and Holm against a hand-computed example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from kwsnet.stats import compare, higher_is_better, holm, mean_ci, verdict

# the published kws_raw_ln sweep, lr 0.005: test/acc of seeds 0..9, to 4 places
# (docs/sweeps/kws_raw_ln/results.csv)
END = [0.5278, 0.5556, 0.4583, 0.4861, 0.4167, 0.4444, 0.4861, 0.5278, 0.4306, 0.5139]
NONE = [0.4028, 0.4444, 0.4306, 0.5000, 0.3194, 0.4722, 0.4583, 0.5278, 0.4583, 0.3611]
SEEDS = list(range(10))


def test_mean_ci_t_matches_scipy() -> None:
    lo, hi = mean_ci(END, alpha=0.05)
    x = np.array(END)
    half = st.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-12)
    ref = st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x))
    assert (lo, hi) == pytest.approx(ref, rel=1e-12)
    lo90, hi90 = mean_ci(END, alpha=0.10)
    assert lo < lo90 < hi90 < hi
    assert all(math.isnan(v) for v in mean_ci([0.5]))


def test_mean_ci_bootstrap_is_seeded() -> None:
    a = mean_ci(END, method="bootstrap", samples=5000, seed=1)
    assert a == mean_ci(END, method="bootstrap", samples=5000, seed=1)
    assert a != mean_ci(END, method="bootstrap", samples=5000, seed=2)
    t_lo, t_hi = mean_ci(END)
    assert a[0] < np.mean(END) < a[1]
    # the percentile bootstrap is a little narrower than t on 10 values, never wildly off
    assert abs(a[0] - t_lo) < 0.02 and abs(a[1] - t_hi) < 0.02
    with pytest.raises(ValueError, match="ci method"):
        mean_ci(END, method="normal")


def test_paired_matches_ttest_rel() -> None:
    c = compare(END, SEEDS, NONE, SEEDS)
    ref = st.ttest_rel(END, NONE)
    assert c["test"] == "paired"
    assert c["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    d = np.array(END) - np.array(NONE)
    assert c["diff"] == pytest.approx(d.mean(), rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (c["diff_low"], c["diff_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)
    # pairing is by seed, not by position
    rev = compare(END[::-1], SEEDS[::-1], NONE, SEEDS)
    assert rev["p"] == pytest.approx(c["p"], rel=1e-12)


def test_welch_when_seeds_differ() -> None:
    c = compare(END, SEEDS, NONE[:7], SEEDS[:7])
    ref = st.ttest_ind(END, NONE[:7], equal_var=False)
    assert c["test"] == "welch"
    assert c["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert c["diff"] == pytest.approx(np.mean(END) - np.mean(NONE[:7]), rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (c["diff_low"], c["diff_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    boot = compare(END, SEEDS, NONE[:7], SEEDS[:7], method="bootstrap", samples=4000, seed=3)
    assert boot["p"] == c["p"]  # the p-value stays the t-test's
    assert boot["diff_low"] < boot["diff"] < boot["diff_high"]


def test_degenerate_comparisons() -> None:
    same = compare([0.5, 0.6], [0, 1], [0.5, 0.6], [0, 1])
    assert same["diff"] == 0 and math.isnan(same["p"])  # no variance of the differences
    one = compare([0.5], [0], [0.4], [0])
    assert one["test"] == "paired" and one["diff"] == pytest.approx(0.1)
    assert math.isnan(one["p"]) and math.isnan(one["diff_low"])
    assert math.isnan(compare([], [], [0.4], [0])["p"])


def test_holm_hand_computed() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    got = holm([0.01, math.nan, 0.04])  # NaN is not counted: m = 2
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.04)
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def test_verdict_and_direction() -> None:
    assert verdict(0.1, 0.01, 0.05) == "better"
    assert verdict(-0.1, 0.01, 0.05) == "worse"
    assert verdict(0.1, 0.06, 0.05) == "not distinguishable"
    assert verdict(0.1, math.nan, 0.05) == "not distinguishable"
    assert verdict(-0.1, 0.01, 0.05, higher_better=False) == "better"
    assert higher_is_better("test/acc") and higher_is_better("val/f1")
    for metric in ("val/loss", "train/loss_step", "test/eer", "test/min_dcf", "test/error"):
        assert not higher_is_better(metric), metric


# --- equivalence (TOST) -----------------------------------------------------------------------

BASE = [0.90, 0.92, 0.91, 0.93, 0.89, 0.92, 0.90, 0.91, 0.94, 0.90]
TINY = [0.002, -0.003, 0.004, 0.0, -0.001, 0.003, 0.001, -0.002, 0.002, 0.001]  # Δ ≈ 0, tight
WILD = [0.08, -0.09, 0.07, -0.06, 0.10, -0.08, 0.05, -0.07, 0.09, -0.085]  # Δ ≈ 0, huge spread
M = 0.02


def _plus(d: list[float]) -> list[float]:
    return [b + x for b, x in zip(BASE, d, strict=True)]


def _tost_by_hand(diff: float, se: float, df: float, margin: float) -> tuple[float, float, float]:
    """TOST p and the 90% CI from the t distribution directly (no ttest_* helper)."""
    p_low = st.t.sf((diff + margin) / se, df)  # H1: Δ > −M
    p_high = st.t.cdf((diff - margin) / se, df)  # H1: Δ < +M
    half = st.t.ppf(0.95, df) * se
    return max(p_low, p_high), diff - half, diff + half


def test_tost_paired_tight_difference_is_equivalent() -> None:
    x = _plus(TINY)
    c = compare(x, SEEDS, BASE, SEEDS, margin=M)
    d = np.array(x) - np.array(BASE)
    p, lo, hi = _tost_by_hand(d.mean(), d.std(ddof=1) / math.sqrt(10), 9, M)
    ref = max(
        st.ttest_rel(np.array(x) + M, BASE, alternative="greater").pvalue,
        st.ttest_rel(np.array(x) - M, BASE, alternative="less").pvalue,
    )
    assert c["test"] == "paired" and c["margin"] == M
    # p_tost is ~1e-11 here: compare relatively (the shifted data round at ~1e-16 of 0.9)
    assert c["p_tost"] == pytest.approx(p, rel=1e-6) and c["p_tost"] == pytest.approx(ref, rel=1e-6)
    assert (c["tost_low"], c["tost_high"]) == pytest.approx((lo, hi), rel=1e-9)
    assert -M < c["tost_low"] < c["tost_high"] < M
    assert c["p"] > 0.05  # no superiority either way
    (p_holm,) = holm([c["p"]])
    (p_tost_holm,) = holm([c["p_tost"]])
    assert verdict(c["diff"], p_holm, 0.05, p_tost=p_tost_holm) == "equivalent"


def test_tost_tiny_difference_with_huge_variance_is_inconclusive() -> None:
    c = compare(_plus(WILD), SEEDS, BASE, SEEDS, margin=M)
    d = np.array(WILD)
    p, lo, hi = _tost_by_hand(c["diff"], d.std(ddof=1) / math.sqrt(10), 9, M)
    assert abs(c["diff"]) < 0.005
    assert c["p_tost"] == pytest.approx(p, rel=1e-9) and c["p_tost"] > 0.05
    assert (c["tost_low"], c["tost_high"]) == pytest.approx((lo, hi), rel=1e-9)
    assert c["tost_low"] < -M and c["tost_high"] > M  # the 90% CI spills over the margin
    assert verdict(c["diff"], c["p"], 0.05, p_tost=c["p_tost"]) == "inconclusive"
    # the same comparison without a margin keeps the old word (a large p is not "equal")
    assert verdict(c["diff"], c["p"], 0.05) == "not distinguishable"


def test_tost_large_difference_is_better_and_direction_flips() -> None:
    up = [0.05 + t for t in TINY]
    c = compare(_plus(up), SEEDS, BASE, SEEDS, margin=M)
    assert c["p"] == pytest.approx(st.ttest_rel(_plus(up), BASE).pvalue, rel=1e-9)
    assert c["p"] < 1e-6 and c["p_tost"] > 0.5  # far outside the margin: not equivalent
    assert verdict(c["diff"], c["p"], 0.05, p_tost=c["p_tost"]) == "better"
    # a loss / EER: lower is better, so a point 0.05 *below* the baseline is the better one
    down = compare([b - 0.05 - t for b, t in zip(BASE, TINY, strict=True)], SEEDS, BASE, SEEDS,
                   margin=M)  # fmt: skip
    assert down["diff"] < 0
    assert verdict(down["diff"], down["p"], 0.05, False, p_tost=down["p_tost"]) == "better"
    assert verdict(down["diff"], down["p"], 0.05, True, p_tost=down["p_tost"]) == "worse"
    assert verdict(c["diff"], c["p"], 0.05, False, p_tost=c["p_tost"]) == "worse"
    # a real but smaller-than-margin difference: significant and equivalent; better/worse first
    small = compare(_plus([0.005 + t / 4 for t in TINY]), SEEDS, BASE, SEEDS, margin=M)
    assert small["p"] < 0.05 and small["p_tost"] < 0.05
    assert verdict(small["diff"], small["p"], 0.05, p_tost=small["p_tost"]) == "better"


def test_tost_welch_matches_scipy_and_hand_formula() -> None:
    x, b = _plus(TINY)[:7], BASE  # seeds 0..6 against 0..9: Welch
    c = compare(x, SEEDS[:7], b, SEEDS, margin=M)
    xa, ba = np.array(x), np.array(b)
    vx, vb = xa.var(ddof=1) / len(xa), ba.var(ddof=1) / len(ba)
    df = (vx + vb) ** 2 / (vx**2 / (len(xa) - 1) + vb**2 / (len(ba) - 1))
    diff = xa.mean() - ba.mean()
    p, lo, hi = _tost_by_hand(diff, math.sqrt(vx + vb), df, M)
    ref = max(
        st.ttest_ind(xa + M, ba, equal_var=False, alternative="greater").pvalue,
        st.ttest_ind(xa - M, ba, equal_var=False, alternative="less").pvalue,
    )
    assert c["test"] == "welch"
    assert c["p_tost"] == pytest.approx(p, rel=1e-9) and c["p_tost"] == pytest.approx(ref, rel=1e-9)
    assert (c["tost_low"], c["tost_high"]) == pytest.approx((lo, hi), rel=1e-9)
    # the unpaired test is far less sure of the same tiny difference than the paired one
    paired = compare(_plus(TINY), SEEDS, BASE, SEEDS, margin=M)
    assert c["p_tost"] > 1000 * paired["p_tost"]
    wide = compare(_plus(WILD)[:7], SEEDS[:7], BASE, SEEDS, margin=M)
    assert verdict(wide["diff"], wide["p"], 0.05, p_tost=wide["p_tost"]) == "inconclusive"
    # with bootstrap CIs the TOST p and its 90% CI stay the t-tests' (they must agree)
    boot = compare(x, SEEDS[:7], b, SEEDS, method="bootstrap", samples=2000, margin=M)
    assert boot["p_tost"] == c["p_tost"] and boot["tost_low"] == c["tost_low"]


def test_margin_none_keeps_old_results_and_degenerate_tost() -> None:
    old = compare(END, SEEDS, NONE, SEEDS)
    assert "p_tost" not in old and "margin" not in old
    new = compare(END, SEEDS, NONE, SEEDS, margin=0.02)
    assert {k: new[k] for k in old} == old  # the margin adds columns, changes none
    assert verdict(0.1, 0.06, 0.05, p_tost=None) == "not distinguishable"
    # no variance of the differences: the t statistics are undefined, so is the TOST
    same = compare([0.5, 0.6], [0, 1], [0.5, 0.6], [0, 1], margin=0.02)
    assert math.isnan(same["p_tost"]) and math.isnan(same["tost_low"])
    assert verdict(same["diff"], same["p"], 0.05, p_tost=same["p_tost"]) == "inconclusive"
    for bad in (0.0, -0.02, math.inf, math.nan):
        with pytest.raises(ValueError, match="margin"):
            compare(END, SEEDS, NONE, SEEDS, margin=bad)
