import pytest

from kwsnet.metrics.collapse import collapse_stats


@pytest.mark.parametrize(
    "counts,n_pred,share,collapsed",
    [
        ([10, 10, 10], 3, 1 / 3, 0.0),  # balanced
        ([30, 0, 0], 1, 1.0, 1.0),  # one-class predictor
        ([10, 10, 0], 2, 0.5, 1.0),  # a class never predicted
        ([91, 5, 4], 3, 0.91, 1.0),  # one class above 90%
        ([90, 5, 5], 3, 0.90, 0.0),  # exactly 90% is not above it
    ],
)
def test_collapse_rule(counts, n_pred, share, collapsed):
    s = collapse_stats(counts)
    assert s["n_pred_classes"] == n_pred
    assert s["max_class_share"] == pytest.approx(share)
    assert s["collapsed"] == collapsed
