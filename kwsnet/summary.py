"""End-of-run reports: ``summary.json`` (what sweeps read), the confusion matrix, predictions."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from kwsnet.callbacks.collapse import CollapseMonitor
from kwsnet.fileio import atomic_write_text
from kwsnet.tracking import provenance

__all__ = ["start_summary", "write_summary", "write_confusion_matrix", "write_predictions"]

SUMMARY = "summary.json"
PREVIOUS_SUMMARY = "summary.prev.json"


def start_summary(run_dir: str | os.PathLike) -> Path | None:
    """Begin a run in ``run_dir``: an existing ``summary.json`` (an earlier fit into the same
    folder) is moved to ``summary.prev.json``, so the new run neither inherits its metrics nor
    resolves ``--ckpt_path best`` to its checkpoint, and nothing is lost. Returns the moved
    file's new path, or ``None`` when there was none."""
    path = Path(run_dir) / SUMMARY
    previous = path.with_name(PREVIOUS_SUMMARY)
    try:
        os.replace(path, previous)
    except FileNotFoundError:
        return None
    return previous


def _floats(metrics: dict[str, Any]) -> dict[str, float | None]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = float(v)
        if isinstance(v, (int, float)):
            # NaN/Inf become null: the key stays, so readers can say which metric diverged
            out[k] = float(v) if math.isfinite(float(v)) else None
    return out


def write_summary(
    trainer: pl.Trainer,
    model: pl.LightningModule,
    seed: Any,
    stage: str = "fit",
    artifact: str | None = None,
) -> dict[str, Any]:
    """Write ``<default_root_dir>/summary.json``: seed, metrics, collapse, best checkpoint,
    provenance.

    A fit begins with no summary (``start_summary``); later stages of the same run (``test``
    after fit, or ``test --ckpt_path best`` in a new process) add to it. ``provenance`` is
    ``kwsnet.tracking.provenance()`` of the process that wrote the summary first (the fit); a
    later stage whose provenance differs (another commit, CPU capability or thread count) is
    recorded beside it as ``provenance_<stage>``, so a mixed result stays visible.

    ``metrics`` holds the epoch-level values of the run's last epoch (``val/acc``: the last
    validation), the test metrics, and ``<monitor>_best`` (e.g. ``val/acc_best``): the score of
    the checkpoint ``best_checkpoint`` names, the one ``test`` evaluates. A sweep over the
    selected model's validation score reads ``val/acc_best``, not ``val/acc``.

    ``artifact``: the wandb artifact the best checkpoint was logged as
    (``kwsnet.tracking.log_best_checkpoint``: ``<project>/model-<run id>:best``), kept as
    ``model_artifact``.
    """
    path = Path(trainer.default_root_dir) / SUMMARY
    summary: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    here = provenance()
    if "provenance" not in summary:
        summary["provenance"] = here
    elif summary["provenance"] != here:
        summary[f"provenance_{stage}"] = here
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") or summary.get("best_checkpoint", "")
    best_epoch = summary.get("best_epoch")
    if best and os.path.exists(best) and best != summary.get("best_checkpoint"):
        # mmap: only the header is read, not the weights; weights_only: never unpickle objects
        state = torch.load(best, map_location="cpu", weights_only=True, mmap=True)
        best_epoch = int(state.get("epoch", -1))
    last = next(
        (c.last_model_path for c in trainer.checkpoint_callbacks if c.last_model_path),
        summary.get("last_checkpoint", ""),
    )
    collapse = next((c for c in trainer.callbacks if isinstance(c, CollapseMonitor)), None)
    if artifact:
        summary["model_artifact"] = artifact
    summary.update(
        {
            "seed": seed,
            "best_checkpoint": best,
            "last_checkpoint": last,
            "best_epoch": best_epoch,
            "epochs_run": trainer.current_epoch,
            "global_step": trainer.global_step,
            "num_classes": model.num_classes,
            "class_names": getattr(model, "class_names", None),
        }
    )
    # Epoch-level values only: a `*_step` value is whichever step was logged last (every
    # log_every_n_steps), which depends on where a resumed run restarted; wandb has the history.
    epoch_metrics = {k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
    metrics = summary.setdefault("metrics", {})
    metrics.update(_floats(epoch_metrics))
    monitor = getattr(ckpt, "monitor", None)
    score = getattr(ckpt, "best_model_score", None)
    if monitor and score is not None:
        metrics.update(_floats({f"{monitor}_best": score}))
    if collapse is not None:
        summary.setdefault("collapse", {}).update(collapse.last)
    atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    logger = trainer.logger
    if (
        logger is not None
        and hasattr(logger, "experiment")
        and hasattr(logger.experiment, "summary")
    ):
        logger.experiment.summary.update(
            {
                "best_checkpoint": best,
                "best_epoch": best_epoch,
                **({"model_artifact": artifact} if artifact else {}),
            }
        )
    return summary


def write_confusion_matrix(trainer: pl.Trainer, confmat: torch.Tensor, names: list[str]) -> Path:
    """Save the test confusion matrix as CSV and PNG, and log the image to wandb if in use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(trainer.default_root_dir)
    out.mkdir(parents=True, exist_ok=True)
    cm = confmat.cpu().long()
    with open(out / "confusion_matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\pred", *names])
        for name, row in zip(names, cm.tolist(), strict=True):
            w.writerow([name, *row])
    n = len(names)
    fig, ax = plt.subplots(figsize=(2 + 0.5 * n, 2 + 0.5 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), names, rotation=90)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    png = out / "confusion_matrix.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    logger = trainer.logger
    if logger is not None and hasattr(logger, "log_image"):
        logger.log_image(key="test/confusion_matrix", images=[str(png)])
    return png


def write_predictions(out_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write ``predictions.csv`` (path, predicted id, label, probability) and print the rows."""
    path = Path(out_dir) / "predictions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "pred", "label", "prob"])
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(f"{r['path']}\t{r['label']}\t{r['prob']:.3f}")
    return path
