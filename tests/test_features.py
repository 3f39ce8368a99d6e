"""Front ends: frame-length math, padding, normalisation, SpecAugment."""

from __future__ import annotations

import pytest
import torch

from kwsnet.data.features import MFCC, LogMel, RawAudio, SpecAugment

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


@pytest.mark.parametrize("center", [True, False])
def test_frame_lengths_match_transform_output(center):
    fe = LogMel(center=center)
    for n in (400, 401, 559, 560, 1600, 4321):
        feats, flen = fe(torch.randn(1, n), torch.tensor([n]))
        assert feats.shape[1] == flen.item() == fe.frame_lengths(torch.tensor([n])).item()
        assert feats.shape[2] == 40


def test_padded_batch_matches_single_and_zeroes_padding():
    torch.manual_seed(0)
    fe = LogMel(n_mels=24, normalize="mean")
    a, b = torch.randn(3200), torch.randn(2000)
    wave = torch.zeros(2, 3200)
    wave[0], wave[1, :2000] = a, b
    feats, flen = fe(wave, torch.tensor([3200, 2000]))
    assert flen.tolist() == [21, 13]
    assert feats.shape == (2, 21, 24)
    assert feats[1, 13:].abs().max() == 0
    alone, _ = fe(a[None], torch.tensor([3200]))
    torch.testing.assert_close(feats[0], alone[0])
    alone_b, _ = fe(b[None], torch.tensor([2000]))
    # All frames but the last see identical samples (the last sees zeros instead of reflect).
    torch.testing.assert_close(
        feats[1, :12] - feats[1, :12].mean(0),
        alone_b[0, :12] - alone_b[0, :12].mean(0),
        atol=1e-3,
        rtol=1e-3,
    )


def test_mfcc_width_and_equivalence_to_torchaudio_log_mels():
    import torchaudio

    fe = MFCC(n_mfcc=13)
    wave = torch.randn(2, 1600)
    feats, flen = fe(wave, torch.tensor([1600, 1600]))
    assert fe.out_dim == 13 and feats.shape == (2, 11, 13)
    ref = torchaudio.transforms.MFCC(
        16000,
        n_mfcc=13,
        log_mels=True,
        melkwargs=dict(n_fft=400, win_length=400, hop_length=160, n_mels=40),
    )(wave).transpose(1, 2)
    torch.testing.assert_close(feats, ref, atol=1e-4, rtol=1e-4)


def test_spec_augment_masks_only_in_training():
    torch.manual_seed(0)
    aug = SpecAugment(freq_masks=2, freq_width=5, time_masks=2, time_width=6)
    x = torch.randn(4, 50, 20) + 10.0
    lengths = torch.tensor([50, 30, 10, 1])
    assert torch.equal(aug.eval()(x, lengths), x)
    out = aug.train()(x, lengths)
    assert (out == 0).any()
    zero_frames = (out == 0).all(dim=2)
    for b, n in enumerate(lengths.tolist()):
        assert not zero_frames[b, n:].any()  # time masks stay inside valid frames


def test_spec_augment_inside_front_end_follows_train_eval():
    fe = LogMel(spec_augment=SpecAugment(time_masks=3, time_width=5))
    wave = torch.randn(2, 1600)
    lengths = torch.tensor([1600, 1600])
    fe.eval()
    e1, _ = fe(wave, lengths)
    e2, _ = fe(wave, lengths)
    assert torch.equal(e1, e2)
    fe.train()
    torch.manual_seed(1)
    t1, _ = fe(wave, lengths)
    assert not torch.equal(t1, e1)


def test_raw_audio_is_identity():
    wave, lengths = torch.randn(2, 10), torch.tensor([10, 5])
    out, out_len = RawAudio()(wave, lengths)
    assert out is wave and out_len is lengths


def test_features_stay_fp32_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, _ = MFCC()(torch.randn(2, 1600), torch.tensor([1600, 800]))
    assert feats.dtype == torch.float32
