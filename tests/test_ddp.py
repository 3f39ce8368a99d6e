"""DDP on CPU (gloo, 2 processes): the resumable sampler shards the epoch, an init strategy
leaves every rank with the same weights, and the test verification metrics cover every rank's
shard."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import yaml

from kwsnet.data.datamodule import AudioDataModule
from kwsnet.data.sampler import ResumableSampler

from .conftest import QUIET_FIT, REPO, TINY_SYNTHETIC, tiny_cli_args

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


class RankFingerprint(pl.Callback):
    """Test helper: each rank writes its weights' hash at train start and the clips it trained
    on in epoch 0 to ``$KWSNET_DDP_OUT/rank<r>.json``."""

    def __init__(self) -> None:
        self.hash = ""
        self.paths: list[str] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = b"".join(p.detach().cpu().numpy().tobytes() for p in pl_module.parameters())
        self.hash = hashlib.sha1(data).hexdigest()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0:
            self.paths += list(batch["path"])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        out = Path(os.environ["KWSNET_DDP_OUT"]) / f"rank{trainer.global_rank}.json"
        out.write_text(json.dumps({"hash": self.hash, "paths": self.paths}))


def test_sampler_shards_cover_the_epoch_once() -> None:
    size, world = 7, 2
    shards = [ResumableSampler(size, seed=3, num_replicas=world, rank=r) for r in range(world)]
    for s in shards:
        s.set_epoch(4)
    orders = [[d.index for d in s] for s in shards]
    assert [len(o) for o in orders] == [4, 4] == [len(s) for s in shards]
    full = ResumableSampler(size, seed=3).order(4)
    assert sorted(orders[0] + orders[1]) == sorted(full + full[:1])  # one item padded in
    assert orders[0] == full[0::2] and orders[1] == (full + full[:1])[1::2]
    shards[1].load_state_dict(shards[1].state_dict(), start=2)  # resume inside the shard
    assert [d.index for d in shards[1]] == orders[1][2:]
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(size, num_replicas=2, rank=2)


@pytest.mark.slow
def test_ddp_fit_with_lsuv_on_two_cpu_processes(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "KWSNET_DDP_OUT": str(tmp_path)}
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "fit",
        *tiny_cli_args(tmp_path / "run", epochs=1, batch_size=6),
        *QUIET_FIT,
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--model.init",
        "kwsnet.init.LSUV",
        "--trainer.callbacks+=tests.test_ddp.RankFingerprint",
        "--test_after_fit",
        "true",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["hash"] == ranks[1]["hash"]  # LSUV ran per rank; rank 0's weights won
    seen = [set(r["paths"]) for r in ranks]
    assert seen[0] and not seen[0] & seen[1]  # disjoint shards of the epoch
    source = AudioDataModule(source_options=yaml.safe_load(TINY_SYNTHETIC)).source
    assert seen[0] | seen[1] == {item.path for item in source.items("train")}  # whole split
    # the test confusion matrix counts each clip of the split once (no sampler padding)
    rows = (tmp_path / "run" / "confusion_matrix.csv").read_text().splitlines()[1:]
    total = sum(int(v) for row in rows for v in row.split(",")[1:])
    assert total == len(source.items("test"))
    assert "test/acc" in json.loads((tmp_path / "run" / "summary.json").read_text())["metrics"]


# A shrunk configs/speaker_conformer.yaml on a 15-clip synthetic test split (5 speakers x 3
# clips): odd, so the DistributedSampler pads rank 1's shard with a repeat of clip 0. Batches
# of 1 make every embedding independent of which clips share its batch.
SPEAKER_TEST = [
    "--config",
    str(REPO / "configs" / "speaker_conformer.yaml"),
    "--model.backbone.init_args.d_model=16",
    "--model.backbone.init_args.num_heads=2",
    "--model.backbone.init_args.ffn_dim=32",
    "--model.backbone.init_args.num_layers=1",
    "--model.backbone.init_args.depthwise_conv_kernel_size=5",
    "--model.verification_trials=400",
    "--data.source=synthetic",
    "--data.source_options={num_words: 3, num_speakers: 5, utterances: 3, num_samples: 3200}",
    "--data.batch_size=1",
    "--trainer.logger=false",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.mark.slow
def test_ddp_test_eer_is_over_every_process(tmp_path: Path) -> None:
    """``test/eer`` and ``test/min_dcf`` under 2-process DDP equal one process's on the same
    weights: the embeddings of both shards are gathered, the sampler's padding dropped."""
    from kwsnet.cli import KwsCLI

    one = KwsCLI(
        args=["test", *SPEAKER_TEST, "--trainer.default_root_dir", str(tmp_path / "one")],
        save_config_callback=None,
    )
    ref = {k: float(one.trainer.callback_metrics[f"test/{k}"]) for k in ("eer", "min_dcf")}
    ckpt = tmp_path / "weights.ckpt"
    one.trainer.save_checkpoint(ckpt, weights_only=True)
    cmd = [sys.executable, str(REPO / "train.py"), "test", *SPEAKER_TEST, "--ckpt_path", str(ckpt)]
    cmd += ["--trainer.devices=2", "--trainer.strategy=ddp"]
    cmd += ["--trainer.default_root_dir", str(tmp_path / "two")]
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "summary.json").read_text())["metrics"]
    assert {k: metrics[f"test/{k}"] for k in ref} == ref
