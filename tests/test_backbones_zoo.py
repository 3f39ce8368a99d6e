"""The field's backbones (BC-ResNet, DS-CNN, MatchboxNet, ECAPA-TDNN): sizes against the
published ones, shapes, padding that never leaks, and their configs building and fitting.

Run as a script it prints parameters and MACs per 1 s clip of every shipped preset
(``python -m tests.test_backbones_zoo``; docs/models.md quotes it).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from kwsnet.cli import main
from kwsnet.models.bc_resnet import BCResNet
from kwsnet.models.cnn_mel import CnnMel
from kwsnet.models.conformer import ConformerBackbone
from kwsnet.models.ds_cnn import DSCNN
from kwsnet.models.ecapa_tdnn import EcapaTdnn
from kwsnet.models.matchboxnet import MatchboxNet

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = "{num_words: 3, num_speakers: 4, utterances: 4}"

# (name, builder, frames per 1 s clip in the paper's front end, classes, published size, source)
# Published sizes count the classifier: backbone + a LinearHead(embed_dim, classes).
PUBLISHED: list[tuple[str, Callable[[], nn.Module], int, int, int, str]] = [
    ("BC-ResNet-1", lambda: BCResNet(tau=1), 101, 12, 9_200, "Kim et al. 2021, Table 1"),
    ("BC-ResNet-8", lambda: BCResNet(tau=8), 101, 12, 321_000, "Kim et al. 2021, Table 1"),
    ("DS-CNN-S", lambda: DSCNN(preset="S"), 49, 12, 24_000, "Zhang et al. 2017 / ARM ML-zoo"),
    ("MatchboxNet-3x1x64", lambda: MatchboxNet(repeat=1), 101, 30, 77_000,
     "Majumdar & Ginsburg 2020, Table 1 (v1, 30 classes)"),
    ("MatchboxNet-3x2x64", lambda: MatchboxNet(repeat=2), 101, 30, 93_000,
     "Majumdar & Ginsburg 2020, Table 1 (v1, 30 classes)"),
]  # fmt: skip
PUBLISHED_REL_TOL = 0.04  # the papers round to 2-3 significant digits
# SpeechBrain 1.1.2 ECAPA_TDNN(80, channels=[128, 128, 128, 128, 384]), counted with
# sum(p.numel() for p in model.parameters()); ours has 2 x 128 fewer (no BN in the attention).
SPEECHBRAIN_ECAPA_128 = 763_568


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs(model: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None = None) -> int:
    """Multiply-accumulates of one forward of ``model`` on ``x`` (batch 1): the benchmarks'
    counter (``benchmarks/bench_peer.py``'s ``count_macs``: Conv/Linear by forward hooks; norms,
    activations, pooling sums and the front end not counted), so docs/models.md and docs/peer.md
    count alike."""
    return _bench_peer().count_macs(model, x, lengths)


def _bench_peer():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_peer.py"
    spec = importlib.util.spec_from_file_location("bench_peer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics and affine terms away from identity, so a leak cannot hide."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(0.5 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(1.0 + 0.3 * torch.randn(n, generator=gen))
            m.bias.data.copy_(0.3 * torch.randn(n, generator=gen))
    return model.eval()


@pytest.mark.parametrize("name,build,frames,classes,published,source", PUBLISHED,
                         ids=[p[0] for p in PUBLISHED])  # fmt: skip
def test_size_matches_the_published_one(name, build, frames, classes, published, source):
    model = build()
    total = n_params(model) + model.embed_dim * classes + classes  # + the LinearHead
    assert abs(total - published) <= PUBLISHED_REL_TOL * published, (name, total, source)


def test_ecapa_size_matches_speechbrain():
    model = EcapaTdnn(input_dim=80, channels=128, mfa_channels=384)
    assert n_params(model) == SPEECHBRAIN_ECAPA_128 - 2 * 128
    paper = EcapaTdnn(input_dim=80, channels=512)  # the paper's C=512 model: 6.2M
    assert abs(n_params(paper) - 6_200_000) <= 0.01 * 6_200_000


# Small models for the shape and padding tests (the full ones are slower, not different).
SMALL: dict[str, Callable[[], nn.Module]] = {
    "bc_resnet": lambda: BCResNet(input_dim=40, tau=1),
    "ds_cnn_s": lambda: DSCNN(input_dim=10, preset="S", channels=16),
    "ds_cnn_m": lambda: DSCNN(input_dim=10, preset="M", channels=16),  # strides time twice
    "matchboxnet": lambda: MatchboxNet(
        input_dim=20, channels=16, prologue_channels=24, epilogue_channels=24
    ),  # fmt: skip
    "ecapa": lambda: EcapaTdnn(input_dim=24, channels=32, se_channels=8, embed_dim=40),
}
EMBED = {"bc_resnet": 32, "ds_cnn_s": 16, "ds_cnn_m": 16, "matchboxnet": 24, "ecapa": 40}


@pytest.mark.parametrize("key", sorted(SMALL))
def test_shapes_and_padding_never_leak(key):
    torch.manual_seed(0)
    model = _randomise_norms(SMALL[key]())
    assert model.embed_dim == EMBED[key]
    lengths = torch.tensor([61, 23, 44])
    x = torch.randn(3, 61, model.input_dim)
    x[1, 23:] = 50.0  # garbage in the padding
    x[2, 44:] = -30.0
    with torch.no_grad():
        batch = model(x, lengths)
        assert batch.shape == (3, EMBED[key]) and torch.isfinite(batch).all()
        for b in range(3):
            n = int(lengths[b])
            alone = model(x[b : b + 1, :n], lengths[b : b + 1])[0]
            scale = alone.abs().max().item()
            torch.testing.assert_close(batch[b], alone, atol=1e-5 * max(scale, 1.0), rtol=1e-4)
        # lengths=None means every frame counts: the same as the full lengths
        full = model(x[:1], None)
        torch.testing.assert_close(full, batch[:1], atol=1e-5, rtol=1e-4)


def test_bad_arguments_name_what_to_change():
    with pytest.raises(ValueError, match="sub_bands"):
        BCResNet(input_dim=36)
    with pytest.raises(ValueError, match="preset"):
        DSCNN(preset="XL")
    with pytest.raises(ValueError, match="odd"):
        MatchboxNet(first_block_kernel=12)
    with pytest.raises(ValueError, match="divide channels"):
        EcapaTdnn(channels=100)
    with pytest.raises(Exception, match="input_dim"):
        BCResNet(input_dim=40)(torch.randn(1, 20, 80))


def test_mac_counter_matches_a_hand_count():
    model = DSCNN(input_dim=10, preset="S", num_blocks=1)
    x = torch.randn(1, 49, 10)
    # stem: 25 x 5 outputs x 64 ch x 40 taps; depthwise 25x5x64x9; pointwise 25x5x64x64
    expected = 25 * 5 * 64 * 40 + 25 * 5 * 64 * 9 + 25 * 5 * 64 * 64
    assert macs(model, x) == expected


# ---- configs through the CLI ----------------------------------------------------------------

SHRINK = {
    "kws_ecapa": ["--model.backbone.init_args.channels=16",
                  "--model.backbone.init_args.mfa_channels=48",
                  "--model.backbone.init_args.se_channels=8"],
    "ecapa_speaker": ["--model.backbone.init_args.channels=16",
                      "--model.backbone.init_args.mfa_channels=48",
                      "--model.backbone.init_args.se_channels=8"],
}  # fmt: skip
# The speaker config on the synthetic corpus's speaker labels; its tiny test split has too few
# utterances per speaker for verification trials.
SPEAKER_DATA = [
    "--data.source=synthetic", "--data.target=speaker", "--data.train_crop=null",
    "--model.verification_trials=0",
]  # fmt: skip


def _args(name: str, tmp_path: Path) -> list[str]:
    extra = SPEAKER_DATA if name == "ecapa_speaker" else []
    return [
        "--config", str(CONFIGS / f"{name}.yaml"), *SHRINK.get(name, []), *extra,
        f"--data.source_options={TINY}", "--data.batch_size=4", "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]  # fmt: skip


def test_fit_one_step_end_to_end(tmp_path):
    main(["fit", *_args("kws_bc_resnet", tmp_path), "--trainer.fast_dev_run=1",
          "--test_after_fit=false"])  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["global_step"] == 1
    assert math.isfinite(summary["metrics"]["val/loss"])


def _report() -> None:
    """Print parameters and MACs per 1 s clip of every shipped preset (docs/models.md)."""
    rows = [
        ("CnnMel (kws_cnn_mel), for scale", CnnMel(), 101, 40),
        ("BC-ResNet-1 (kws_bc_resnet)", BCResNet(tau=1), 101, 40),
        ("BC-ResNet-2", BCResNet(tau=2), 101, 40),
        ("BC-ResNet-8", BCResNet(tau=8), 101, 40),
        ("DS-CNN-S (kws_ds_cnn)", DSCNN(preset="S"), 49, 10),
        ("DS-CNN-M", DSCNN(preset="M"), 49, 10),
        ("DS-CNN-L", DSCNN(preset="L"), 49, 10),
        ("MatchboxNet-3x1x64, 40 MFCC (kws_matchboxnet)", MatchboxNet(40, repeat=1), 101, 40),
        ("MatchboxNet-3x2x64, 64 MFCC", MatchboxNet(64, repeat=2), 101, 64),
        ("ECAPA-TDNN C=128 (kws_ecapa)", EcapaTdnn(80, channels=128), 101, 80),
        ("ECAPA-TDNN C=512 (ecapa_speaker)", EcapaTdnn(80, channels=512), 101, 80),
    ]
    print("| model | frames x features per 1 s | params (backbone) | MACs per 1 s clip |")
    print("|---|---|---:|---:|")
    for label, model, frames, feats in rows:
        m = macs(model, torch.randn(1, frames, feats))
        print(f"| {label} | {frames} x {feats} | {n_params(model):,} | {m / 1e6:.2f} M |")


_TINY_CONFORMER = {"input_dim": 20, "d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 2,
                   "depthwise_conv_kernel_size": 5, "dropout": 0.0}  # fmt: skip
TRAIN_ONLY: dict[str, Callable[[], nn.Module]] = {
    "cnn_mel": lambda: CnnMel(input_dim=20, stem_channels=8, channels=(8, 12), strides=(2, 1)),
    "conformer": lambda: ConformerBackbone(**_TINY_CONFORMER),
    "conformer_post_ln": lambda: ConformerBackbone(**_TINY_CONFORMER, post_ln=True),
}


@pytest.mark.parametrize("key", [*sorted(SMALL), *TRAIN_ONLY])
def test_training_statistics_do_not_see_padding(key):
    """In training, a batch padded to 61 frames and the same batch padded to 80 (other garbage
    in the padding) give the same outputs and the same BatchNorm running statistics: the batch
    statistics are over valid frames only (``masked_batch_norm``), not over the padding."""
    torch.manual_seed(0)
    model = {**SMALL, **TRAIN_ONLY}[key]()
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            m.p = 0.0  # dropout draws depend on the tensor shape
    lengths = torch.tensor([61, 23, 44])
    x = torch.randn(3, 80, model.input_dim)
    a, b = x[:, :61].clone(), x.clone()
    a[1, 23:], a[2, 44:] = 50.0, -30.0
    b[1, 23:], b[2, 44:], b[0, 61:] = -7.0, 20.0, 9.0
    model_a, model_b = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    out_a, out_b = model_a(a, lengths), model_b(b, lengths)
    torch.testing.assert_close(out_a, out_b, atol=1e-4, rtol=1e-4)
    stats = [(n, t) for n, t in model_a.state_dict().items() if "running_" in n]
    assert stats, "the model has BatchNorms"
    ref = model_b.state_dict()
    for name, value in stats:
        torch.testing.assert_close(value, ref[name], atol=1e-5, rtol=1e-4, msg=name)
    assert not any("forward" in vars(m) for m in model_b.modules())  # per-call overrides gone


@pytest.mark.parametrize("post_ln", [False, True])
def test_conformer_conv_norm_statistics_are_over_valid_frames(post_ln):
    """The Conformer drops all-padding tail frames, so padding a batch further changes nothing;
    what is left is the padding of the shorter utterances inside ``max(lengths)``. Each conv
    module's BatchNorm running mean must move by the mean of its input over valid frames."""
    torch.manual_seed(0)
    model = TRAIN_ONLY["conformer_post_ln" if post_ln else "conformer"]().train()
    lengths = torch.tensor([30, 9, 17])
    x = torch.randn(3, 30, 20)
    valid = (torch.arange(30)[None, :] < lengths[:, None]).unsqueeze(1)  # [B, 1, T]
    seen: list[torch.Tensor] = []
    norms = model._conv_norms()
    hooks = [n.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach())) for n in norms]
    model(x, lengths)
    for h in hooks:
        h.remove()
    assert len(seen) == len(norms) == 2
    for norm, inp in zip(norms, seen, strict=True):
        m = valid.to(inp.dtype).expand_as(inp)
        mean = (inp * m).sum(dim=(0, 2)) / m.sum(dim=(0, 2))
        torch.testing.assert_close(norm.running_mean, norm.momentum * mean)


if __name__ == "__main__":
    torch.set_num_threads(1)
    _report()
