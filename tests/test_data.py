import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kwsnet.data.audio import fit_length, read_audio
from kwsnet.data.datamodule import AudioDataModule, collate
from kwsnet.data.record import DataFormatError, SourceArgs
from kwsnet.data.synthetic import SyntheticSource
from kwsnet.errors import ConfigError

from .conftest import REPO, write_tone

SMALL = {"num_words": 3, "num_speakers": 4, "utterances": 5}


def test_synthetic_is_deterministic_and_labelled():
    a = SyntheticSource(SourceArgs(options=SMALL))
    b = SyntheticSource(SourceArgs(options=SMALL))
    items = a.items("train")
    assert {it.keyword for it in items} == {0, 1, 2}
    assert {it.speaker for it in items} == {0, 1, 2, 3}
    x = a.load(items[0])
    assert x.shape == (16000,) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.abs().max() > 0.01
    assert torch.equal(x, b.load(b.items("train")[0]))
    sizes = {s: len(a.items(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 36, "val": 12, "test": 12}
    with pytest.raises(ValueError, match="split must be one of"):
        a.items("validation")
    # different words differ far more than two takes of one word by one voice
    assert not torch.equal(a.load(items[0]), a.load(items[1]))


def test_synthetic_split_does_not_depend_on_training_seed():
    torch.manual_seed(0)
    np.random.seed(0)
    first = [it.path for it in SyntheticSource(SourceArgs(options=SMALL)).items("test")]
    torch.manual_seed(99)
    np.random.seed(99)
    again = [it.path for it in SyntheticSource(SourceArgs(options=SMALL)).items("test")]
    assert first == again
    other = SyntheticSource(SourceArgs(options=SMALL, split_seed=7)).items("test")
    assert first != [it.path for it in other]


def test_synthetic_speaker_disjoint_holds_out_speakers():
    src = SyntheticSource(
        SourceArgs(options={**SMALL, "num_speakers": 10, "speaker_disjoint": True})
    )
    spk = {s: {it.speaker for it in src.items(s)} for s in ("train", "val", "test")}
    assert not spk["train"] & spk["test"] and not spk["train"] & spk["val"]


def test_unknown_synthetic_option_is_named():
    with pytest.raises(ValueError, match="num_wrods"):
        SyntheticSource(SourceArgs(options={"num_wrods": 3}))


def test_read_audio_resamples_and_downmixes(tmp_path: Path):
    p = write_tone(tmp_path / "a.wav", sr=44100, seconds=0.5, channels=2)
    x = read_audio(p, 16000)
    assert x.dtype == torch.float32 and x.dim() == 1
    assert abs(x.shape[0] - 8000) <= 1
    assert 0.2 < float(x.abs().max()) < 0.35


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "cannot decode"),
        (b"RIFF\x00\x00\x00\x00WAVEjunk" * 4, "cannot decode"),
        (b"not audio at all" * 100, "cannot decode"),
    ],
)
def test_read_audio_errors_name_the_file(tmp_path: Path, content: bytes, match: str):
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(DataFormatError, match=match) as err:
        read_audio(p, 16000)
    assert str(p) in str(err.value)


def test_read_audio_rejects_nan(tmp_path: Path):
    p = tmp_path / "nan.wav"
    sf.write(p, np.array([0.1, np.nan, 0.2], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(DataFormatError, match="NaN"):
        read_audio(p, 16000)


def test_fit_length_pads_centred_and_crops():
    x = torch.arange(4.0)
    assert fit_length(x, 8, False).tolist() == [0, 0, 0, 1, 2, 3, 0, 0]
    assert fit_length(torch.arange(10.0), 4, False).tolist() == [3, 4, 5, 6]
    g = torch.Generator().manual_seed(0)
    crops = {tuple(fit_length(torch.arange(10.0), 4, True, g).tolist()) for _ in range(20)}
    assert len(crops) > 1


def test_training_crops_come_from_the_draw_key_not_the_global_rng():
    from kwsnet.data.sampler import Draw, ResumableSampler

    dm = AudioDataModule(source_options=SMALL, clip_samples=4000, preload=False)
    dm.setup("fit")
    ds = dm.datasets["train"]
    before = torch.get_rng_state()
    a = ds[Draw(3, 0, 42)]["audio"]
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched
    torch.manual_seed(123)  # whatever the global state, the same key gives the same crop
    assert torch.equal(ds[Draw(3, 0, 42)]["audio"], a)
    crops = {tuple(ds[Draw(3, e, 42)]["audio"][:5].tolist()) for e in range(8)}
    assert len(crops) > 1  # a new crop in each epoch
    assert a.shape == (4000,)
    # the sampler hands out those keys, in the seeded order, from any resume position
    sampler = ResumableSampler(len(ds), seed=42)
    sampler.set_epoch(2)
    keys = list(sampler)
    assert [k.index for k in keys] == sampler.order(2) and {k.epoch for k in keys} == {2}
    sampler.load_state_dict(sampler.state_dict(), start=10)
    assert list(sampler) == keys[10:]


def test_collate_pads_and_reports_lengths():
    recs = [
        {"audio": torch.ones(3), "length": 3, "keyword": 0, "speaker": 1, "label": 0, "path": "a"},
        None,
        {"audio": torch.ones(5), "length": 5, "keyword": 1, "speaker": 0, "label": 1, "path": "b"},
    ]
    b = collate(recs)
    assert b["audio"].shape == (2, 5) and b["lengths"].tolist() == [3, 5]
    assert b["audio"][0, 3:].abs().sum() == 0 and b["path"] == ["a", "b"]


def test_speech_commands_layout(speech_commands_tree: Path):
    dm = AudioDataModule(
        source="speech_commands", root=str(speech_commands_tree), words=["yes", "no"], batch_size=4
    )
    assert dm.class_names == ["yes", "no"] and dm.num_classes == 2
    dm.setup("fit")
    dm.setup("test")
    sizes = {s: len(dm.datasets[s]) for s in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 4, "test": 4}
    assert all("dddd4444" in it.path for it in dm.datasets["test"].items)
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (4, 16000)
    assert set(batch["label"].tolist()) <= {0, 1}
    assert (batch["speaker"] >= 0).all()


def test_speech_commands_unknown_and_silence(speech_commands_tree: Path):
    dm = AudioDataModule(
        source="speech_commands",
        root=str(speech_commands_tree),
        words=["yes"],
        include_unknown=True,
        include_silence=True,
    )
    assert dm.class_names == ["yes", "_unknown_", "_silence_"]
    dm.setup("fit")
    labels = [dm.datasets["train"][i]["label"] for i in range(len(dm.datasets["train"]))]
    assert set(labels) == {0, 1, 2}
    silence = [r for r in (dm.datasets["train"][i] for i in range(len(labels))) if r["label"] == 2]
    assert all(r["audio"].shape == (16000,) for r in silence)


def test_speech_commands_speaker_target(speech_commands_tree: Path):
    dm = AudioDataModule(source="speech_commands", root=str(speech_commands_tree), target="speaker")
    assert dm.num_classes == 4


def test_missing_root_and_bad_layout_are_explained(tmp_path: Path):
    with pytest.raises(DataFormatError, match="expected the Speech Commands layout"):
        AudioDataModule(source="speech_commands", root=str(tmp_path / "nope"))
    (tmp_path / "yes").mkdir()
    write_tone(tmp_path / "yes" / "a_nohash_0.wav")
    with pytest.raises(DataFormatError, match="validation_list.txt"):
        AudioDataModule(source="speech_commands", root=str(tmp_path))


def test_split_list_naming_a_missing_file_names_the_line(speech_commands_tree: Path):
    lst = speech_commands_tree / "testing_list.txt"
    lst.write_text(lst.read_text() + "yes/ghost_nohash_0.wav\n")
    with pytest.raises(DataFormatError, match=r"testing_list.txt:7: lists 'yes/ghost"):
        AudioDataModule(source="speech_commands", root=str(speech_commands_tree))


def test_unknown_source_lists_valid_ones():
    with pytest.raises(ConfigError, match="librispeech.*short name: synthetic, speech_commands"):
        AudioDataModule(source="librispeech")


def _folder_tree(root: Path) -> Path:
    for c, f in (("cat", 300.0), ("dog", 600.0)):
        for i in range(10):
            write_tone(root / c / f"spk{i % 3}_{i}.wav", freq=f)
    return root


def test_folder_source_seeded_split_and_speakers(tmp_path: Path):
    root = _folder_tree(tmp_path / "f")
    opts = {"speaker_regex": r"^(spk\d)_"}
    a = AudioDataModule(
        source="folder", root=str(root), val_fraction=0.2, test_fraction=0.2, source_options=opts
    )
    b = AudioDataModule(
        source="folder", root=str(root), val_fraction=0.2, test_fraction=0.2, source_options=opts
    )
    assert a.class_names == ["cat", "dog"]
    items = {s: [it.path for it in a.source.items(s)] for s in ("train", "val", "test")}
    assert items == {s: [it.path for it in b.source.items(s)] for s in ("train", "val", "test")}
    assert sum(map(len, items.values())) == 20
    assert a.source.speaker_names == ["spk0", "spk1", "spk2"]


def test_corrupt_and_44k_stereo_files(tmp_path: Path):
    root = _folder_tree(tmp_path / "f")
    write_tone(root / "cat" / "hifi.wav", sr=44100, channels=2)
    (root / "dog" / "broken.wav").write_bytes(b"RIFF1234WAVEfmt garbage")
    dm = AudioDataModule(source="folder", root=str(root), val_fraction=0.0, test_fraction=0.0)
    with pytest.raises(DataFormatError, match="broken.wav"):
        dm.setup("fit")
    dm = AudioDataModule(
        source="folder", root=str(root), val_fraction=0.0, test_fraction=0.0, on_error="skip"
    )
    with pytest.warns(UserWarning, match="skipped 1 of 22"):
        dm._dataset("train")
    batch = collate([dm.datasets["train"][i] for i in range(len(dm.datasets["train"]))])
    assert batch["audio"].shape == (21, 16000)
    assert any(p.endswith("hifi.wav") for p in batch["path"])


# Resamples ``torch.randn(rate // 4)`` from argv[1] Hz to 16 kHz and prints the output length
# and the growth of this fresh process's peak RSS (KiB) over the resample alone.
_RESAMPLE_PEAK = """
import resource, sys, torch
from kwsnet.data.audio import resample
rate = int(sys.argv[1])
x = torch.randn(rate // 4)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
y = resample(x, rate, 16000)
print(y.shape[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.parametrize("rate", [767999, 7919, 44100, 22050])
def test_resample_any_rate_stays_small_and_keeps_duration(rate: int):
    """Odd rates would need a giant exact polyphase kernel (767999 Hz: 49 GB, 7919 Hz: ~1 GB of
    float64 taps); the result keeps its duration. ``ru_maxrss`` is a process peak, so the
    resample runs in a fresh process, whose peak so far is its imports: earlier tests in this
    one cannot hide an allocation below their own peak."""
    proc = subprocess.run(
        [sys.executable, "-c", _RESAMPLE_PEAK, str(rate)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    length, peak_growth_kib = map(int, proc.stdout.split())
    assert abs(length - 4000) <= 8
    assert peak_growth_kib < 500_000  # the exact 7919 Hz kernel alone is 16000 x 7933 x 8 bytes


def test_truncated_wav_is_reported_not_silently_shortened(tmp_path: Path):
    good = write_tone(tmp_path / "good.wav").read_bytes()
    p = tmp_path / "cut.wav"
    p.write_bytes(good[: len(good) // 3])
    with pytest.raises(DataFormatError, match="cut.wav: truncated"):
        read_audio(p, 16000)
