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


def test_monitor_reads_the_modules_confusion_matrix():
    """CollapseMonitor takes the per-class prediction counts from ClassifierModule's own
    val confusion matrix (no per-batch copies), and logs the collapse stats from them."""
    from types import SimpleNamespace

    import torch

    from kwsnet.callbacks.collapse import CollapseMonitor
    from kwsnet.lit import ClassifierModule
    from models.raw_conv import RawConv

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
