"""ClassifierModule fixes: a skipped non-finite batch leaves no trace in buffers or epoch
metrics, a scheduler that needs a monitor gets one, a resumed run keeps its own identity, and
the sampler's DDP padding is not counted in eval accuracy, loss or confusion matrix."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader, DistributedSampler

from kwsnet.callbacks.divergence import DivergenceGuard
from kwsnet.cli import main
from kwsnet.data.datamodule import AudioDataModule
from kwsnet.data.features import MFCC
from kwsnet.lit import ClassifierModule
from kwsnet.models.ds_cnn import DSCNN
from kwsnet.models.raw_conv import RawConv
from kwsnet.tracking import provenance

from .conftest import QUIET_FIT, REPO, tiny_cli_args

SAMPLES = 4000  # 0.25 s clips
# 3 words x 5 speakers x 4 utterances: 30 train, 15 val and 15 test clips (odd: DDP pads them)
ODD_SPLITS = {"num_words": 3, "num_speakers": 5, "utterances": 4, "num_samples": SAMPLES}
ODD_TEST_SIZE = 15
# few batches of the tiny CLI config: the fits below check plumbing, not learning
FEW_BATCHES = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


class NaNAtCall(nn.Module):
    """Training augment that turns the audio of its ``call``-th batch into NaN (fault injector)."""

    def __init__(self, call: int = 2) -> None:
        super().__init__()
        self.call, self.calls = call, 0

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        return (torch.full_like(wave, float("nan")) if self.calls == self.call else wave), lengths


def _quiet_trainer(**kwargs: object) -> pl.Trainer:
    base: dict[str, object] = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    base.update(kwargs)
    return pl.Trainer(**base)  # type: ignore[arg-type]


def _odd_data(batch_size: int = 4) -> AudioDataModule:
    return AudioDataModule(
        source_options=dict(ODD_SPLITS), clip_samples=SAMPLES, batch_size=batch_size
    )


# --- 6: divergence.action skip ------------------------------------------------------------


def test_skipped_batch_leaves_batchnorm_buffers_and_epoch_loss_finite() -> None:
    """DS-CNN (BatchNorm) with its 2nd training batch NaN under ``action: skip``: the running
    statistics, eval outputs and the epoch's ``train/loss`` stay finite, and the skipped batch
    is not counted in the epoch's statistics."""
    torch.manual_seed(0)
    frontend = MFCC(
        n_mfcc=10, n_fft=640, win_length=640, hop_length=320, center=False, normalize="mean"
    )
    model = ClassifierModule(
        backbone=DSCNN(input_dim=10, preset="S"),
        frontend=frontend,
        num_classes=3,
        augment=NaNAtCall(call=2),
    )
    dm = _odd_data(batch_size=8)
    guard = DivergenceGuard(action="skip")
    trainer = _quiet_trainer(
        max_epochs=1, limit_train_batches=3, limit_val_batches=1, callbacks=[guard]
    )
    trainer.fit(model, dm)

    assert guard.skipped == 1
    bn_buffers = {
        f"{name}.{b}": getattr(m, b)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b in ("running_mean", "running_var", "num_batches_tracked")
    }
    assert bn_buffers
    bad = [k for k, v in bn_buffers.items() if not torch.isfinite(v.float()).all()]
    assert not bad, f"non-finite BatchNorm buffers after the skipped batch: {bad[:3]}"
    # the skipped forward did not count as a tracked batch either
    assert all(int(v) == 2 for k, v in bn_buffers.items() if k.endswith("num_batches_tracked"))
    batch = next(iter(dm.val_dataloader()))
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(batch["audio"], batch["lengths"])).all()
    for key in ("train/loss", "train/acc"):
        assert math.isfinite(float(trainer.callback_metrics[key])), key
    assert int(model.metrics["train_"].count) == 2 * 8  # the two finite batches only


# --- 7: a scheduler with a monitor --------------------------------------------------------


def test_reduce_lr_on_plateau_from_the_cli_steps_on_its_monitor(tmp_path: Path) -> None:
    """Lightning's CLI ``ReduceLROnPlateau`` (its ``monitor`` in the config) trains, and is
    stepped once per epoch with ``val/loss``: an ``abs`` threshold no loss can beat makes every
    epoch after the first a plateau, so with patience 0 the LR drops each time."""
    epochs, factor = 3, 0.5
    main(
        [
            "fit",
            *tiny_cli_args(tmp_path, epochs),
            *QUIET_FIT,
            *FEW_BATCHES,
            "--model.lr_scheduler",
            "lightning.pytorch.cli.ReduceLROnPlateau",
            "--model.lr_scheduler.monitor=val/loss",
            "--model.lr_scheduler.patience=0",
            f"--model.lr_scheduler.factor={factor}",
            "--model.lr_scheduler.threshold_mode=abs",
            "--model.lr_scheduler.threshold=1e9",
        ]
    )
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    sched = ckpt["lr_schedulers"][0]
    assert sched["last_epoch"] == epochs  # stepped every epoch
    assert math.isfinite(sched["best"])  # with the monitored value (first epoch's val/loss)
    lr = ckpt["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.005 * factor ** (epochs - 1))


def _tiny_raw_module(**kwargs: object) -> ClassifierModule:
    torch.manual_seed(0)
    backbone = RawConv(input_samples=SAMPLES, channels=[4, 8, 8], avg_pool=4)
    return ClassifierModule(backbone=backbone, num_classes=3, **kwargs)  # type: ignore[arg-type]


def _plateau(**kwargs: object):
    def factory(optimizer: torch.optim.Optimizer) -> ReduceLROnPlateau:
        return ReduceLROnPlateau(optimizer, **kwargs)  # type: ignore[arg-type]

    return factory


@pytest.mark.parametrize(
    ("mode", "option", "expected"),
    [
        ("max", None, "val/acc"),  # the checkpoint's monitor, whose mode matches
        ("min", None, "val/loss"),  # the checkpoint's (max) would climb the wrong way
        ("min", "val/f1", "val/f1"),  # model.lr_scheduler_monitor wins
    ],
)
def test_torch_reduce_lr_on_plateau_gets_a_monitor(mode: str, option: str | None, expected: str):
    model = _tiny_raw_module(lr_scheduler=_plateau(mode=mode), lr_scheduler_monitor=option)
    best = ModelCheckpoint(monitor="val/acc", mode="max")
    model.trainer = _quiet_trainer(enable_checkpointing=True, callbacks=[best])
    config = model.configure_optimizers()
    assert config["lr_scheduler"]["monitor"] == expected
    assert isinstance(config["lr_scheduler"]["scheduler"], ReduceLROnPlateau)


# --- 8: a resumed run keeps its identity --------------------------------------------------


def test_resumed_fit_keeps_its_own_identity_and_records_the_first(tmp_path: Path) -> None:
    first = tmp_path / "first"
    main(["fit", *tiny_cli_args(first, 1), *QUIET_FIT, *FEW_BATCHES])
    ckpt = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    original = dict(ckpt["kwsnet"])
    assert yaml.safe_load(original["config"])["trainer"]["max_epochs"] == 1
    ckpt["kwsnet"]["git_commit"] = "0123abcd"  # as if written by another commit
    ckpt["kwsnet"]["seed"] = 7
    older = tmp_path / "older.ckpt"
    torch.save(ckpt, older)

    second = tmp_path / "second"
    main(["fit", *tiny_cli_args(second, 2), *QUIET_FIT, *FEW_BATCHES, "--ckpt_path", str(older)])
    info = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)["kwsnet"]
    assert info["git_commit"] == provenance()["git_commit"]  # this process's commit ...
    assert info["seed"] == 42
    assert yaml.safe_load(info["config"])["trainer"]["max_epochs"] == 2  # ... and config
    assert info["resumed_from"] == [{**original, "git_commit": "0123abcd", "seed": 7}]


def test_resume_chain_is_flat_and_reloading_the_same_run_adds_nothing() -> None:
    a = {"git_commit": "a", "config": "A"}
    b = {"git_commit": "b", "config": "B"}
    c = {"git_commit": "c", "config": "C"}
    module = _tiny_raw_module()
    module.run_info = dict(b)
    module.on_load_checkpoint({"kwsnet": dict(a)})
    saved: dict = {}
    module.on_save_checkpoint(saved)
    assert saved["kwsnet"] == {**b, "resumed_from": [a]}

    later = _tiny_raw_module()
    later.run_info = dict(c)
    later.on_load_checkpoint(saved)
    assert later.run_info == {**c, "resumed_from": [a, b]}
    later.on_load_checkpoint(saved)  # the same checkpoint again (test after fit): no repeats
    later.on_load_checkpoint({"kwsnet": {**c, "resumed_from": [a, b]}})  # its own checkpoint
    assert later.run_info == {**c, "resumed_from": [a, b]}

    bare = _tiny_raw_module()  # no CLI identity (a module built in Python): take the stored one
    bare.on_load_checkpoint(saved)
    assert bare.run_info == saved["kwsnet"]


# --- 9: DDP padding out of eval statistics -------------------------------------------------


@pytest.mark.parametrize("stage", ["test", "val"])
def test_eval_statistics_skip_the_distributed_samplers_padding(stage: str) -> None:
    """Two ranks' shards of an odd split (``DistributedSampler`` pads rank 1 with a repeat of
    clip 0), run in one process: their confusion matrices and loss sums add up to exactly the
    single-process ones, each clip counted once (``test`` and ``validate``)."""
    dm = _odd_data(batch_size=4)
    dm.setup("test")
    base = dm.test_dataloader()
    assert len(base.dataset) == ODD_TEST_SIZE
    model = _tiny_raw_module()

    def run(loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
        trainer = _quiet_trainer()
        if stage == "test":
            trainer.test(model, dataloaders=loader, verbose=False)
        else:
            trainer.validate(model, dataloaders=loader, verbose=False)
        return model.confusion_matrix(stage), model.metrics[f"{stage}_"].loss_sum.clone()

    ref_cm, ref_loss = run(base)
    cms, losses = [], []
    for rank in range(2):
        sampler = DistributedSampler(base.dataset, num_replicas=2, rank=rank, shuffle=False)
        shard = DataLoader(base.dataset, batch_size=4, sampler=sampler, collate_fn=base.collate_fn)
        cm, loss = run(shard)
        cms.append(cm)
        losses.append(loss)
    assert int(ref_cm.sum()) == ODD_TEST_SIZE
    assert int((cms[0] + cms[1]).sum()) == ODD_TEST_SIZE  # was 16: clip 0 twice
    assert torch.equal(cms[0] + cms[1], ref_cm)
    torch.testing.assert_close(losses[0] + losses[1], ref_loss)


@pytest.mark.slow
def test_ddp_test_confusion_matrix_counts_each_clip_once(tmp_path: Path) -> None:
    """``test`` under 2-process DDP (gloo) on the 15-clip test split: the confusion matrix
    the CLI writes sums to 15, not to the sampler's padded 16."""
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "test",
        *tiny_cli_args(tmp_path, 1, batch_size=4),
        "--data.source_options",
        yaml.safe_dump(ODD_SPLITS, default_flow_style=True).strip(),
        "--data.clip_samples",
        str(SAMPLES),
        "--model.backbone.init_args.input_samples",
        str(SAMPLES),
        "--trainer.logger=false",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (tmp_path / "confusion_matrix.csv").read_text().splitlines()[1:]
    assert sum(int(v) for row in rows for v in row.split(",")[1:]) == ODD_TEST_SIZE
