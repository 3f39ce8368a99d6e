"""The augmented KWS configs build (shrunk) and train a batch on every source; folder
speaker-disjoint splits hold out whole speakers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from kwsnet.cli import KwsCLI, main
from kwsnet.data.augment import AugmentChain, BackgroundNoise
from kwsnet.data.folder import FolderSource
from kwsnet.data.record import SourceArgs

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NAMES = ["kws_raw_aug", "kws_cnn_mel", "kws_conformer"]
TINY = "{num_words: 3, num_speakers: 4, utterances: 4}"
SHRINK = {
    "kws_conformer": [
        "--model.backbone.init_args.d_model=16",
        "--model.backbone.init_args.num_heads=2",
        "--model.backbone.init_args.ffn_dim=32",
        "--model.backbone.init_args.depthwise_conv_kernel_size=5",
    ],
}
SPEAKER_REGEX = r"^([0-9a-f]+)_nohash"


def _build(name: str, tmp_path: Path, *extra: str) -> KwsCLI:
    return KwsCLI(
        args=[
            "--config", str(CONFIGS / f"{name}.yaml"), *SHRINK.get(name, []),
            "--data.batch_size=4", "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}", *extra,
        ],
        run=False,
        save_config_callback=None,
    )  # fmt: skip


def _train_one_batch(cli: KwsCLI) -> None:
    model, dm = cli.model, cli.datamodule
    assert isinstance(model.augment, AugmentChain)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model.train()
    audio, lengths = model.augment(batch["audio"], batch["lengths"])
    assert audio.shape == batch["audio"].shape and not torch.equal(audio, batch["audio"])
    logits = model(audio, lengths, batch["label"])
    assert logits.shape == (batch["label"].numel(), dm.num_classes)
    torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


def test_cnn_mel_is_small_and_honours_lengths():
    from kwsnet.models.cnn_mel import CnnMel

    model = CnnMel().eval()
    assert sum(p.numel() for p in model.parameters()) <= 100_000
    assert model.embed_dim == 48 and model.input_dim == 40
    x = torch.randn(3, 101, 40)
    lengths = torch.tensor([101, 80, 37])
    x = x * (torch.arange(101)[None, :, None] < lengths[:, None, None])
    batch = model(x, lengths)
    assert batch.shape == (3, 48)
    for b in range(3):  # padding never reaches an utterance's embedding
        alone = model(x[b : b + 1, : int(lengths[b])], lengths[b : b + 1])
        torch.testing.assert_close(alone[0], batch[b], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        CnnMel(kernel_size=4)


def test_speech_commands_with_background_noise(speech_commands_tree, tmp_path):
    noise_dir = speech_commands_tree / "_background_noise_"
    cli = _build(
        "kws_cnn_mel", tmp_path,
        "--data.source=speech_commands", f"--data.root={speech_commands_tree}",
        f"--model.augment.init_args.noise_dir={noise_dir}",
    )  # fmt: skip
    mixers = [t for t in cli.model.augment.transforms if isinstance(t, BackgroundNoise)]
    assert mixers[0].noise_dir == str(noise_dir)
    _train_one_batch(cli)
    assert mixers[0].files == [str(noise_dir / "white.wav")]


def test_folder_source_speaker_disjoint(speech_commands_tree, tmp_path):
    cli = _build(
        "kws_raw_aug", tmp_path,
        "--data.source=folder", f"--data.root={speech_commands_tree}",
        f"--data.source_options={{speaker_regex: '{SPEAKER_REGEX}', speaker_disjoint: true}}",
    )  # fmt: skip
    _train_one_batch(cli)


def _speakers_by_split(root: Path, split_seed: int) -> dict[str, set[int]]:
    source = FolderSource(
        SourceArgs(
            root=str(root),
            split_seed=split_seed,
            options={"speaker_regex": SPEAKER_REGEX, "speaker_disjoint": True},
        )
    )
    return {s: {it.speaker for it in source.items(s)} for s in ("train", "val", "test")}


def test_folder_speaker_disjoint_split_holds_out_whole_speakers(speech_commands_tree):
    # 4 speakers, 2 clips of 3 words each; the list files are ignored under speaker_disjoint.
    splits = _speakers_by_split(speech_commands_tree, split_seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert not (splits["train"] & splits["val"] or splits["train"] & splits["test"])
    assert not splits["val"] & splits["test"]
    assert splits == _speakers_by_split(speech_commands_tree, split_seed=0)  # seeded
    seen = {tuple(sorted(_speakers_by_split(speech_commands_tree, k)["test"])) for k in range(8)}
    assert len(seen) > 1  # split_seed chooses the held-out speakers
    with pytest.raises(ValueError, match="needs speaker_regex"):
        FolderSource(SourceArgs(root=str(speech_commands_tree), options={"speaker_disjoint": True}))


def test_fit_one_batch_end_to_end(tmp_path):
    main(
        [
            "fit", "--config", str(CONFIGS / "kws_cnn_mel.yaml"),
            f"--data.source_options={TINY}", "--data.batch_size=4",
            "--trainer.fast_dev_run=1", "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["global_step"] == 1  # one optimizer step on the mel front end
    assert math.isfinite(summary["metrics"]["val/loss"])
