"""Every shipped config in ``configs/*.yaml`` builds (shrunk) and trains one batch.

One parametrised test over the whole folder, so a new config is covered the day it lands: the
keyword configs on the tiny synthetic corpus (the Speech Commands task configs on a generated
35-word tree, with its noise folder), the speaker configs on a tiny VoxCeleb1 tree (or its
precomputed log-mel features for ``mel_features``). Checks the wiring the configs promise:
the front end's width is the backbone's input, the class count comes from the data, a
configured augmentation changes the batch, and the loss reaches every backbone parameter.
"""

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

from .conftest import REPO

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
TINY = "{num_words: 3, num_speakers: 4, utterances: 4}"

_ECAPA_SMALL = [
    "--model.backbone.init_args.channels=16",
    "--model.backbone.init_args.mfa_channels=48",
    "--model.backbone.init_args.se_channels=8",
]
_CONFORMER_SMALL = [
    "--model.backbone.init_args.d_model=16",
    "--model.backbone.init_args.num_heads=2",
    "--model.backbone.init_args.ffn_dim=32",
    "--model.backbone.init_args.depthwise_conv_kernel_size=5",
]


def _shrink(config: dict) -> list[str]:
    """Flags that make a config's backbone test-sized (its wiring unchanged)."""
    backbone = config["model"]["backbone"]["class_path"].rsplit(".", 1)[-1]
    return {"EcapaTdnn": _ECAPA_SMALL, "ConformerBackbone": _CONFORMER_SMALL}.get(backbone, [])


@pytest.fixture(scope="module")
def speaker_roots(tmp_path_factory) -> dict[str, Path]:
    """A 3-speaker VoxCeleb1 tree (iden_split.txt) and its log-mel features."""
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


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_trains_one_batch(
    path: Path, speaker_roots, speech_commands_35_tree: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load(path.read_text())
    data_cfg = config["data"]
    source = data_cfg["source"]
    classes = 3
    if source == "synthetic":
        data = [f"--data.source_options={TINY}"]
    elif source == "speech_commands":  # the task configs: words, unknown, silence as configured
        root = speech_commands_35_tree
        data = [f"--data.root={root}"]
        if config["model"].get("augment"):
            data.append(f"--model.augment.init_args.noise_dir={root / '_background_noise_'}")
        classes = len(data_cfg["words"]) + bool(data_cfg.get("include_unknown"))
        classes += bool(data_cfg.get("include_silence"))
        if (data_cfg.get("source_options") or {}).get("negatives_dir"):  # detection configs
            neg = tmp_path / "negatives"
            neg.mkdir()
            noise = np.random.default_rng(0).standard_normal(40000) * 0.05
            for spk in range(10):  # LibriSpeech-style names; most speakers in the train part
                sf.write(neg / f"{100 + spk}-1-0000.flac", noise, 16000)
            data.append(f"--data.source_options.negatives_dir=[{neg}]")
    else:
        data = [f"--data.root={speaker_roots[source]}"]
    cli = KwsCLI(
        args=[
            "--config", str(path), *_shrink(config), *data,
            "--data.batch_size=4", "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        run=False,
        save_config_callback=None,
    )  # fmt: skip
    model, dm = cli.model, cli.datamodule
    assert dm.num_classes == classes and model.num_classes == classes
    if model.frontend.out_dim is not None:  # None: raw audio in
        assert model.frontend.out_dim == model.backbone.input_dim
    if source not in ("synthetic", "speech_commands"):
        assert dm.target == "speaker"
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model.train()
    audio, lengths = batch["audio"], batch["lengths"]
    if model.augment is not None:
        audio, lengths = model.augment(audio, lengths)
        assert audio.shape == batch["audio"].shape
        assert not torch.equal(audio, batch["audio"]), "the configured augmentation did nothing"
    logits = model(audio, lengths, batch["label"])
    assert logits.shape == (batch["label"].numel(), classes)
    torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
