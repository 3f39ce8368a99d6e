"""Every ``configs/speaker_*.yaml`` builds (shrunk) and trains one batch on a tiny fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from kwsnet.cli import KwsCLI
from kwsnet.data.prepare import prepare_mel_features
from kwsnet.data.record import SourceArgs
from kwsnet.data.voxceleb1 import VoxCeleb1Source

CONFIGS = sorted(Path(__file__).resolve().parents[1].glob("configs/speaker_*.yaml"))
SHRINK = [
    "--model.backbone.init_args.d_model=16",
    "--model.backbone.init_args.num_heads=2",
    "--model.backbone.init_args.ffn_dim=32",
    "--model.backbone.init_args.depthwise_conv_kernel_size=5",
    "--data.batch_size=4",
    "--trainer.logger=false",
]


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vox")
    rng = np.random.default_rng(0)
    lines = []
    for s in range(3):
        for u, split in enumerate((1, 1, 1, 2, 3)):
            rel = f"id1000{s}/sess/{u:05d}.wav"
            (root / "wav" / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / "wav" / rel, 0.1 * rng.standard_normal(2400 + 400 * u), 16000)
            lines.append(f"{split} {rel}")
    (root / "iden_split.txt").write_text("\n".join(lines))
    mel = tmp_path_factory.mktemp("mel")
    prepare_mel_features(VoxCeleb1Source(SourceArgs(root=str(root))), mel, overwrite=True)
    return {"voxceleb1": root, "mel_features": mel}


def test_all_ablation_rows_have_a_config():
    names = {p.stem for p in CONFIGS}
    assert {
        "speaker_conformer", "speaker_conformer_sap", "speaker_conformer_sapmax_bn",
        "speaker_conformer_2l", "speaker_conformer_4l", "speaker_conformer_mel",
    } <= names  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_speaker_config_builds_and_trains_one_batch(config, roots, tmp_path):
    source = yaml.safe_load(config.read_text())["data"]["source"]
    cli = KwsCLI(
        args=[
            "--config", str(config), *SHRINK,
            f"--data.root={roots[source]}", f"--trainer.default_root_dir={tmp_path}",
        ],
        run=False,
        save_config_callback=None,
    )  # fmt: skip
    model, dm = cli.model, cli.datamodule
    assert dm.target == "speaker" and dm.num_classes == 3
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model.train()
    logits = model(batch["audio"], batch["lengths"], batch["label"])
    assert logits.shape == (4, 3)
    torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
    assert model.backbone.input_projection.weight.grad is not None
