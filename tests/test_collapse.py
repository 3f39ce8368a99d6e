import pytest

from kwsnet.metrics.collapse import RULE, collapse_stats, is_collapsed, min_classes


@pytest.mark.parametrize(
    "counts,n_pred,share,collapsed",
    [
        ([10, 10, 10], 3, 1 / 3, 0.0),  # balanced
        ([30, 0, 0], 1, 1.0, 1.0),  # one-class predictor
        ([10, 10, 0], 2, 0.5, 1.0),  # 2 of 3 classes: at most ceil(3/2)
        ([91, 5, 4], 3, 0.91, 1.0),  # one class above 90%
        ([90, 5, 5], 3, 0.90, 0.0),  # exactly 90% is not above it
        ([12, 14, 21, 13, 12, 0], 5, 21 / 72, 0.0),  # 5 of 6 classes on 72 clips: not collapsed
        ([72, 0, 0, 0, 0, 0], 1, 1.0, 1.0),  # 1 class of 6
        ([69, 1, 1, 1, 0, 0], 4, 69 / 72, 1.0),  # 96% one class, though 4 of 6 predicted
        ([38, 20, 14, 0, 0, 0], 3, 38 / 72, 1.0),  # half the classes: near-one-class
        ([1] * 19 + [0], 19, 1 / 19, 0.0),  # 19 of 20 speakers
        ([5], 1, 1.0, 0.0),  # one class: nothing to collapse to
    ],
)
def test_collapse_rule(counts, n_pred, share, collapsed):
    s = collapse_stats(counts)
    assert s["n_pred_classes"] == n_pred
    assert s["max_class_share"] == pytest.approx(share)
    assert s["collapsed"] == collapsed
    assert is_collapsed(n_pred, len(counts), share) == bool(collapsed)


def test_rule_bounds_and_text():
    assert [min_classes(c) for c in (1, 2, 3, 6, 20)] == [1, 1, 2, 3, 10]
    assert "90%" in RULE and "ceil(C/2)" in RULE
    assert not is_collapsed(2, 2, 0.9) and is_collapsed(2, 2, 0.95) and is_collapsed(1, 2, 1.0)


def test_monitor_reads_the_modules_confusion_matrix():
    """CollapseMonitor takes the per-class prediction counts from ClassifierModule's own
    val confusion matrix (no per-batch copies), and logs the collapse stats from them."""
    from types import SimpleNamespace

    import torch

    from kwsnet.callbacks.collapse import CollapseMonitor
    from kwsnet.lit import ClassifierModule
    from kwsnet.models.raw_conv import RawConv

    module = ClassifierModule(RawConv(), num_classes=3)
    logged: dict[str, float] = {}
    module.log = lambda key, value, **kw: logged.__setitem__(key, value)  # type: ignore[method-assign]
    assert module.prediction_counts("val") is None
    stats = module.metrics["val_"]
    # labels 0,1,2,2; predictions 2,2,2,1 -> column sums [0, 1, 3]
    stats.update(torch.tensor([2, 2, 2, 1]), torch.tensor([0, 1, 2, 2]), torch.tensor(1.0))
    assert module.prediction_counts("val").tolist() == [0, 1, 3]
    monitor = CollapseMonitor()
    monitor.on_validation_epoch_end(SimpleNamespace(sanity_checking=False), module)
    assert monitor.last["val"]["counts"] == [0, 1, 3]
    assert logged["val/collapsed"] == 1.0 and logged["val/n_pred_classes"] == 2.0
    assert monitor.last["val"]["true_counts"] == [1, 1, 2]
    assert logged["val/n_true_classes"] == 3.0


def test_classes_absent_from_the_labels_do_not_count() -> None:
    """C is the number of classes present in the split's labels: a model that predicts 16 of
    35 defined classes on a test split holding 30 of them (speech_commands_real's sc35 test
    split, many words with one clip) at 80% accuracy is not collapsed; 15 of 30 is."""
    true = [30] * 15 + [1] * 15 + [0] * 5
    pred = [31] * 16 + [0] * 19
    assert collapse_stats(pred)["collapsed"] == 1.0  # of the 35 defined: 16 <= 18
    s = collapse_stats(pred, true_counts=true)
    assert s["n_true_classes"] == 30 and s["collapsed"] == 0.0
    assert collapse_stats([31] * 15 + [0] * 20, true_counts=true)["collapsed"] == 1.0


def test_sweep_record_applies_the_label_count() -> None:
    """A ledger record with ``n_true_classes`` is judged on it; an old one (without) on
    ``num_classes``, as before."""
    from kwsnet.sweep.ledger import record_collapsed

    rec = {"n_pred_classes": 16, "num_classes": 35, "max_class_share": 0.15}
    assert record_collapsed(rec)
    assert not record_collapsed({**rec, "n_true_classes": 30})
