"""Waveform augmentations: drawn values take effect, eval is identity, seeds repeat, chains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kwsnet.data.augment import (
    AugmentChain,
    BackgroundNoise,
    Gain,
    SpeedPerturb,
    TimeShift,
)

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

SR = 16000


def _tones(B: int = 6, T: int = SR) -> torch.Tensor:
    """``[B, T]`` sine tones of different frequencies (non-zero energy everywhere)."""
    t = torch.arange(T) / SR
    f = torch.linspace(200.0, 900.0, B)[:, None]
    return 0.3 * torch.sin(2 * torch.pi * f * t[None, :])


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    sf.write(root / "long.wav", 0.2 * rng.standard_normal(3 * SR), SR)
    sf.write(root / "short.wav", 0.1 * rng.standard_normal(SR // 4), SR)  # loops
    return root


def _all_modules(noise_dir: Path) -> list[torch.nn.Module]:
    return [
        TimeShift(max_shift_ms=100, p=1.0),
        Gain(p=1.0),
        SpeedPerturb(factors=[0.9, 1.1], p=1.0),
        BackgroundNoise(str(noise_dir), snr_db=[0, 20], p=1.0),
    ]


def test_noise_mix_hits_the_drawn_snr(noise_dir):
    torch.manual_seed(0)
    wave = _tones(8)
    lengths = torch.tensor([SR] * 6 + [SR // 2, SR // 3])
    wave = wave * (torch.arange(SR)[None, :] < lengths[:, None])
    mix = BackgroundNoise(str(noise_dir), snr_db=[-5, 25], p=1.0).train()
    out, out_len = mix(wave, lengths)
    assert torch.equal(out_len, lengths)
    noise = out - wave
    for b in range(8):
        n = int(lengths[b])
        assert noise[b, n:].abs().sum() == 0  # padding stays silent
        snr = 10 * torch.log10(wave[b, :n].pow(2).mean() / noise[b, :n].pow(2).mean())
        assert abs(float(snr) - float(mix.last["snr_db"][b])) < 0.5
        assert -5 <= float(mix.last["snr_db"][b]) <= 25


def test_noise_probability_and_missing_folder(noise_dir, tmp_path):
    torch.manual_seed(1)
    wave = _tones(64)
    mix = BackgroundNoise(str(noise_dir), p=0.5).train()
    out, _ = mix(wave, None)
    applied = mix.last["applied"]
    assert 0 < int(applied.sum()) < 64
    assert torch.equal(out[~applied], wave[~applied])
    assert torch.isnan(mix.last["snr_db"][~applied]).all()
    missing = BackgroundNoise(str(tmp_path / "nope"))  # read on the first training batch
    assert torch.equal(missing.eval()(wave)[0], wave)  # so eval / export never need it
    with pytest.raises(FileNotFoundError, match="not a directory"):
        missing.train()(wave)
    with pytest.raises(FileNotFoundError, match="no audio files"):
        BackgroundNoise(str(tmp_path)).train()(wave)
    assert torch.equal(BackgroundNoise(None).train()(wave)[0], wave)  # no folder: identity


@pytest.mark.parametrize("mode", ["pad", "roll"])
def test_shift_moves_energy_by_the_drawn_amount(mode):
    torch.manual_seed(2)
    T = SR
    wave = torch.zeros(5, T)
    wave[:, 6000:6400] = 1.0  # a burst in the middle
    shift = TimeShift(max_shift_ms=200, mode=mode, p=1.0).train()
    out, lengths = shift(wave, torch.full((5,), T))
    assert torch.equal(lengths, torch.full((5,), T))
    drawn = shift.last["shift"]
    assert drawn.abs().max() <= 3200 and drawn.abs().sum() > 0
    for b in range(5):
        assert torch.equal(out[b], torch.roll(wave[b], int(drawn[b])))
        centre = (out[b] * torch.arange(T)).sum() / out[b].sum()
        assert abs(float(centre) - (6199.5 + int(drawn[b]))) < 1e-3


def test_speed_changes_length_by_the_factor():
    torch.manual_seed(3)
    wave = _tones(6)
    lengths = torch.tensor([SR, SR, SR, 12000, 8000, 8000])
    speed = SpeedPerturb(factors=[0.9, 1.0, 1.1], keep_length=False, p=1.0).train()
    out, new_len = speed(wave, lengths)
    factor = speed.last["factor"]
    assert set(factor.tolist()) > {1.0}  # something changed
    expected = torch.ceil(lengths / factor - 1e-6).long()
    assert torch.equal(new_len, expected)
    assert out.shape == (6, int(new_len.max()))
    for b in range(6):  # the tone's zero crossings slow down / speed up by the factor
        n = int(new_len[b])
        assert out[b, n:].abs().sum() == 0
        crossings = int((out[b, :n] > 0).diff().sum())
        ref = int((wave[b, : int(lengths[b])] > 0).diff().sum())
        assert abs(crossings - ref) <= 0.01 * ref  # the same periods (a wrong f: 10% off)
    fixed = SpeedPerturb(factors=[0.9, 1.1], keep_length=True, p=1.0).train()
    out, fixed_len = fixed(wave, lengths)
    assert out.shape == wave.shape and torch.equal(fixed_len, lengths)


def test_gain_applies_drawn_db():
    torch.manual_seed(4)
    wave = _tones(4)
    gain = Gain(gain_db=[-10, 10], p=1.0).train()
    out, _ = gain(wave, None)
    ratio_db = 20 * torch.log10(out.abs().amax(1) / wave.abs().amax(1))
    torch.testing.assert_close(ratio_db, gain.last["gain_db"], atol=1e-4, rtol=0)


def test_every_augmentation_is_off_in_eval(noise_dir):
    wave, lengths = _tones(4), torch.tensor([SR, SR, 9000, 5000])
    modules = _all_modules(noise_dir)
    for m in [*modules, AugmentChain(modules)]:
        out, out_len = m.eval()(wave, lengths)
        assert out is wave and torch.equal(out_len, lengths), type(m).__name__


def test_fixed_seed_repeats_the_augmented_batch(noise_dir):
    wave, lengths = _tones(8), torch.full((8,), SR)
    chain = AugmentChain(_all_modules(noise_dir)).train()
    torch.manual_seed(123)
    a, la = chain(wave, lengths)
    torch.manual_seed(123)
    b, lb = chain(wave, lengths)
    torch.manual_seed(124)
    c, _ = chain(wave, lengths)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)


def test_chain_noise_dir_points_every_mixer(noise_dir):
    chain = AugmentChain([TimeShift(), BackgroundNoise()], noise_dir=str(noise_dir))
    assert chain.transforms[1].noise_dir == str(noise_dir)
    with pytest.raises(ValueError, match="no BackgroundNoise"):
        AugmentChain([TimeShift()], noise_dir=str(noise_dir))
    with pytest.raises(ValueError, match="p must be"):
        Gain(p=1.5)
    with pytest.raises(ValueError, match="mode"):
        TimeShift(mode="wrap")


def _measured_snr_db(clean: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """``10 log10(P_signal / P_added)`` per row: signal power over the power of what was added."""
    return 10 * torch.log10(clean.pow(2).mean(1) / (mixed - clean).pow(2).mean(1))


def test_measured_snr_lies_in_the_requested_range(noise_dir):
    """Noise is scaled to the clip's own level: loud and quiet clips alike land in the range."""
    mix = BackgroundNoise(str(noise_dir), snr_db=[0, 20], p=1.0).train()
    levels = torch.tensor([1.0, 0.1, 0.01, 0.001, 1.0, 0.3, 0.05, 0.002])[:, None]
    for seed in range(5):  # several draws
        torch.manual_seed(seed)
        wave = _tones(8) * levels
        out, _ = mix(wave, None)
        snr = _measured_snr_db(wave, out)
        assert ((snr > -1e-3) & (snr < 20 + 1e-3)).all(), snr
        torch.testing.assert_close(snr, mix.last["snr_db"], atol=1e-3, rtol=0)
        assert not mix.last["silent"].any()


def test_flac_folder_is_read_recursively_and_resampled(tmp_path):
    root = tmp_path / "babble"
    rng = np.random.default_rng(5)
    (root / "spk1" / "ch1").mkdir(parents=True)
    (root / "spk2").mkdir()
    sf.write(root / "spk1" / "ch1" / "a.flac", 0.2 * rng.standard_normal(8000), 8000)  # 8 kHz
    sf.write(root / "spk2" / "b.flac", 0.1 * rng.standard_normal(SR // 2), SR)
    sf.write(root / "spk2" / "c.wav", 0.1 * rng.standard_normal(SR // 2), SR)
    (root / "notes.txt").write_text("not audio")
    mix = BackgroundNoise(str(root), snr_db=[5, 5], p=1.0).train()
    torch.manual_seed(0)
    wave = _tones(6)
    out, _ = mix(wave, None)
    assert [Path(f).name for f in mix.files] == ["a.flac", "b.flac", "c.wav"]
    assert mix._waves is not None and mix._waves[0].shape == (SR,)  # 1 s at 8 kHz -> 16 kHz
    torch.testing.assert_close(
        _measured_snr_db(wave, out), torch.full((6,), 5.0), atol=1e-3, rtol=0
    )


def test_silent_clip_gets_noise_at_its_own_level_times_a_volume(noise_dir):
    """SNR to a zero clip is undefined: the noise goes in at the file's own level x U[vol]."""
    mix = BackgroundNoise(str(noise_dir), snr_db=[0, 20], silence_volume=[0.2, 0.5], p=1.0)
    mix.train()
    torch.manual_seed(0)
    wave = _tones(6)
    wave[0] = 0.0  # a _silence_ clip of zeros
    wave[1] = 1e-7  # below -100 dBFS: silent too
    wave[2, SR // 2 :] = 0.0  # half a clip: not silent
    out, _ = mix(wave, None)
    assert torch.isfinite(out).all()
    silent = mix.last["silent"]
    assert silent.tolist() == [True, True, False, False, False, False]
    assert (
        torch.isnan(mix.last["snr_db"][:2]).all() and not torch.isnan(mix.last["snr_db"][2:]).any()
    )
    scale = mix.last["scale"]
    assert ((scale[:2] >= 0.2) & (scale[:2] <= 0.5)).all()
    assert mix._bank is not None
    bank = mix._bank[1]
    for b in range(2):  # exactly the noise segment times the drawn volume
        seg = bank[mix.last["file"][b], mix.last["start"][b] : mix.last["start"][b] + SR]
        torch.testing.assert_close(out[b] - wave[b], scale[b] * seg, atol=1e-6, rtol=1e-5)
    snr = _measured_snr_db(wave[2:], out[2:])
    assert ((snr > -1e-3) & (snr < 20 + 1e-3)).all()
    with pytest.raises(ValueError, match="silence_volume"):
        BackgroundNoise(silence_volume=[-1.0, 1.0])


def test_missing_noise_folder_warns_naming_the_config_key(noise_dir):
    from kwsnet.data.augment import noise_off_keys, warn_if_noise_off

    chain = AugmentChain([TimeShift(), BackgroundNoise(), Gain()])
    assert noise_off_keys(chain) == ["model.augment.init_args.transforms[1]"]
    with pytest.warns(UserWarning, match=r"OFF.*model\.augment\.init_args\.noise_dir") as rec:
        assert warn_if_noise_off(chain)
    assert len(rec) == 1 and "transforms[1]" in str(rec[0].message)
    assert noise_off_keys(BackgroundNoise()) == ["model.augment"]
    assert noise_off_keys(AugmentChain([BackgroundNoise()], noise_dir=str(noise_dir))) == []
    assert noise_off_keys(None) == [] and not warn_if_noise_off(AugmentChain([TimeShift()]))


def test_fit_warns_once_when_a_config_mixes_noise_without_a_folder(tmp_path):
    """configs/kws_raw_aug.yaml (noise_dir: null) on the tiny corpus: one warning at setup."""
    import warnings

    from kwsnet.cli import main

    from .conftest import QUIET_FIT, REPO, TINY_SYNTHETIC

    args = [
        "fit", "--config", str(REPO / "configs" / "kws_raw_aug.yaml"),
        "--data.source_options", TINY_SYNTHETIC, "--data.batch_size=8",
        "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}", *QUIET_FIT,
    ]  # fmt: skip
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        main(args)
    noise = [w for w in rec if "background-noise mixing is OFF" in str(w.message)]
    assert len(noise) == 1, [str(w.message) for w in rec]
    assert "model.augment.init_args.noise_dir" in str(noise[0].message)


def test_fit_mixes_the_speech_commands_own_noise_when_no_folder_is_set(
    tmp_path, speech_commands_tree, capfd, monkeypatch
):
    """kws_ds_cnn (noise_dir: null) with only the data flags: its BackgroundNoise mixes
    <root>/_background_noise_, says so, and does not warn that mixing is off."""
    import warnings

    from kwsnet.cli import main
    from kwsnet.data.datamodule import AudioDataModule

    from .conftest import QUIET_FIT, REPO

    args = [
        "fit", "--config", str(REPO / "configs" / "kws_ds_cnn.yaml"),
        "--data.source=speech_commands", f"--data.root={speech_commands_tree}",
        "--data.words=[yes, no, up]", "--data.batch_size=4",
        "--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--test_after_fit=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}", *QUIET_FIT,
    ]  # fmt: skip
    read: list[str] = []
    load = BackgroundNoise._load_files

    def spy(self: BackgroundNoise) -> list[torch.Tensor]:
        read.append(str(self.noise_dir))
        return load(self)

    monkeypatch.setattr(BackgroundNoise, "_load_files", spy)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert main(args) == 0
    assert not [w for w in rec if "background-noise mixing is OFF" in str(w.message)]
    own = str(speech_commands_tree / "_background_noise_")
    assert f"mixing the data's own noise recordings, {own}" in capfd.readouterr().err
    assert read == [own]  # the training batches mixed it
    # noise_dir: false switches it off on purpose: no fallback, no warning, nothing read
    read.clear()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert main([*args, "--model.augment.init_args.noise_dir=false"]) == 0
    assert not [w for w in rec if "background-noise mixing is OFF" in str(w.message)]
    assert "mixing the data's own" not in capfd.readouterr().err and read == []
    with pytest.raises(ValueError, match="noise_dir must be a folder, null or false"):
        BackgroundNoise(noise_dir=True)
    assert AudioDataModule(source="synthetic").noise_dir() is None  # nothing to fall back on


@pytest.mark.parametrize(
    "folder",
    ["speech_commands_real/_background_noise_", "librispeech_excerpts/librispeech_test-other/1688"],
    ids=["sc_noise", "librispeech_babble"],
)
def test_real_noise_folders_mix_at_the_requested_snr(folder):
    from .conftest import SHARED_DATA

    root = SHARED_DATA / folder
    if not root.is_dir():
        pytest.skip(f"{root} is absent: the shared real-audio data is not beside the repo")
    mix = BackgroundNoise(str(root), snr_db=[0, 20], p=1.0).train()
    torch.manual_seed(0)
    wave = _tones(8)
    wave[7] = 0.0
    out, _ = mix(wave, None)
    assert len(mix.files) >= 6 and torch.isfinite(out).all()
    snr = _measured_snr_db(wave[:7], out[:7])
    assert ((snr > -1e-3) & (snr < 20 + 1e-3)).all(), snr
    assert bool(mix.last["silent"][7]) and (out[7] != 0).any()  # the zero clip: noise only
