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
