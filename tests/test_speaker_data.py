"""Speaker data formats: VoxCeleb1, precomputed mel features, and ``kwsnet prepare``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kwsnet.cli import console
from kwsnet.data.mel_features import MelFeatureSource
from kwsnet.data.prepare import prepare_mel_features
from kwsnet.data.record import DataFormatError, SourceArgs
from kwsnet.data.voxceleb1 import VoxCeleb1Source

SPEAKERS = ("id10002", "id10001", "id10003")


def _voxceleb(root: Path, n_samples: int = 1600) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for spk in SPEAKERS:
        for u, split in enumerate((1, 1, 2, 3)):
            rel = f"{spk}/sess{u % 2}/{u:05d}.wav"
            (root / "wav" / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / "wav" / rel, 0.1 * rng.standard_normal(n_samples + 160 * u), 16000)
            lines.append(f"{split} {rel}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


def test_voxceleb1_splits_labels_and_load(tmp_path):
    src = VoxCeleb1Source(SourceArgs(root=str(_voxceleb(tmp_path))))
    assert src.name == "voxceleb1"
    assert src.speaker_names == sorted(SPEAKERS)
    train, val, test = src.items("train"), src.items("val"), src.items("test")
    assert (len(train), len(val), len(test)) == (6, 3, 3)
    first = train[0]
    assert Path(first.path).parts[-3] == "id10002" and first.speaker == 1
    wave = src.load(val[0])
    assert wave.dtype == torch.float32 and wave.shape == (1600 + 2 * 160,)
    subset = VoxCeleb1Source(SourceArgs(root=str(tmp_path), options={"max_speakers": 2}))
    assert subset.speaker_names == ["id10001", "id10002"] and len(subset.items("train")) == 4


def test_voxceleb1_errors_name_file_and_line(tmp_path):
    with pytest.raises(DataFormatError, match="not a directory"):
        VoxCeleb1Source(SourceArgs(root=str(tmp_path / "nope")))
    with pytest.raises(DataFormatError, match="iden_split.txt: split file not found"):
        VoxCeleb1Source(SourceArgs(root=str(tmp_path)))
    (tmp_path / "iden_split.txt").write_text("1 id1/s/a.wav\n4 id1/s/b.wav\n")
    with pytest.raises(DataFormatError, match=r"iden_split.txt:2: expected"):
        VoxCeleb1Source(SourceArgs(root=str(tmp_path)))
    (tmp_path / "iden_split.txt").write_text("1 id1/s/a.wav\n")
    src = VoxCeleb1Source(SourceArgs(root=str(tmp_path)))
    with pytest.raises(DataFormatError, match="a.wav: listed in the split file but missing"):
        src.load(src.items("train")[0])
    with pytest.raises(ValueError, match="valid: \\['split_file', 'max_speakers'\\]"):
        VoxCeleb1Source(SourceArgs(root=str(tmp_path), options={"max_speaker": 3}))


def _mel_dir(root: Path, test_labels: bool, n_utts: int = 10) -> Path:
    torch.manual_seed(0)
    speakers = ["spkB", "spkA"]
    mapping = {
        "speaker2id": {s: i for i, s in enumerate(speakers)},
        "id2speaker": {str(i): s for i, s in enumerate(speakers)},
    }
    meta: dict = {"n_mels": 4, "speakers": {}}
    test = []
    for s in speakers:
        meta["speakers"][s] = []
        for u in range(n_utts):
            name = f"uttr-{s}-{u}.pt"
            torch.save(torch.randn(5 + u, 4), root / name)
            meta["speakers"][s].append({"feature_path": name, "mel_len": 5 + u})
        torch.save(torch.randn(7, 4), root / f"uttr-{s}-test.pt")
        entry = {"feature_path": f"uttr-{s}-test.pt", "mel_len": 7}
        test.append({**entry, "speaker": s} if test_labels else entry)
    (root / "mapping.json").write_text(json.dumps(mapping))
    (root / "metadata.json").write_text(json.dumps(meta))
    (root / "testdata.json").write_text(json.dumps({"n_mels": 4, "utterances": test}))
    return root


def test_mel_features_labelled_testdata(tmp_path):
    src = MelFeatureSource(SourceArgs(root=str(_mel_dir(tmp_path, True)), val_fraction=0.2))
    assert src.speaker_names == ["spkB", "spkA"]
    train, val, test = src.items("train"), src.items("val"), src.items("test")
    assert (len(train), len(val), len(test)) == (16, 4, 2)
    assert all(it.kind == "features" for it in train + val + test)
    assert {it.speaker for it in val} == {0, 1}  # stratified per speaker
    assert [Path(it.path).name for it in test] == ["uttr-spkB-test.pt", "uttr-spkA-test.pt"]
    feats = src.load(test[0])
    assert feats.shape == (7, 4) and feats.dtype == torch.float32


def test_mel_features_split_depends_only_on_split_seed(tmp_path):
    root = str(_mel_dir(tmp_path, False))
    a = MelFeatureSource(SourceArgs(root=root, split_seed=1))
    torch.manual_seed(99)  # the training seed must not matter
    b = MelFeatureSource(SourceArgs(root=root, split_seed=1))
    c = MelFeatureSource(SourceArgs(root=root, split_seed=2))
    assert a.items("val") == b.items("val") and a.items("val") != c.items("val")
    # Unlabelled testdata.json: test is carved from metadata, disjoint from train and val.
    parts = [{it.path for it in a.items(s)} for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [16, 2, 2]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])


def test_mel_features_missing_file_is_named(tmp_path):
    root = _mel_dir(tmp_path, True)
    (root / "uttr-spkA-3.pt").unlink()
    with pytest.raises(DataFormatError, match=r"metadata.json: feature file .*uttr-spkA-3.pt"):
        MelFeatureSource(SourceArgs(root=str(root)))
    (root / "mapping.json").unlink()
    with pytest.raises(DataFormatError, match="mapping.json: file not found"):
        MelFeatureSource(SourceArgs(root=str(root)))


def test_mel_features_bad_tensor_is_named(tmp_path):
    root = _mel_dir(tmp_path, True)
    torch.save(torch.randn(7, 3), root / "uttr-spkA-test.pt")
    src = MelFeatureSource(SourceArgs(root=str(root)))
    with pytest.raises(DataFormatError, match="uttr-spkA-test.pt: 3 features per frame"):
        src.load(src.items("test")[1])


def test_prepare_roundtrip_voxceleb_to_mel_features(tmp_path):
    vox = _voxceleb(tmp_path / "vox")
    src = VoxCeleb1Source(SourceArgs(root=str(vox)))
    counts = prepare_mel_features(src, tmp_path / "mel", n_mels=16)
    assert counts == {"train": 6, "val": 3, "test": 3}
    mel = MelFeatureSource(SourceArgs(root=str(tmp_path / "mel")))
    assert mel.speaker_names == src.speaker_names
    test = mel.items("test")
    assert [it.speaker for it in test] == [it.speaker for it in src.items("test")]
    feats = mel.load(test[0])
    assert feats.shape == (src.load(src.items("test")[0]).shape[0] // 160 + 1, 16)
    with pytest.raises(FileExistsError):
        prepare_mel_features(src, tmp_path / "mel")


def test_prepare_main_cli(tmp_path, capsys):
    vox = _voxceleb(tmp_path / "vox")
    argv = ["prepare", "--source", "voxceleb1", "--root", str(vox), "--out", str(tmp_path / "o")]
    assert console([*argv, "--n_mels", "8", "--source_options", "{max_speakers: 2}"]) == 0
    meta = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert meta["n_mels"] == 8 and sorted(meta["speakers"]) == ["id10001", "id10002"]
    capsys.readouterr()
    assert console(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("kwsnet: error: ") and "metadata.json exists" in err
    # kwsnet 0.1's spellings still work, with a warning
    old = [*argv, "--n-mels", "8", "--source-option", "max_speakers=1", "--overwrite"]
    assert console(old) == 0
    err = capsys.readouterr().err
    assert "--n-mels is deprecated; use --n_mels" in err and "--source-option is deprecated" in err
    meta = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert sorted(meta["speakers"]) == ["id10001"]


def test_mel_features_partly_labelled_testdata_is_an_error(tmp_path):
    root = _mel_dir(tmp_path, True)
    data = json.loads((root / "testdata.json").read_text())
    del data["utterances"][0]["speaker"]
    (root / "testdata.json").write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match="testdata.json: 1 of 2 utterances lack 'speaker'"):
        MelFeatureSource(SourceArgs(root=str(root)))
