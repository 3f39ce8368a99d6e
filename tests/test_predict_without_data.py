"""``predict`` needs only the checkpoint: the class names travel in it, not in the dataset.

One tiny fit on a 3-word Speech Commands tree (``yes``, ``no`` + ``_unknown_``) writes the
checkpoint; then the tree is deleted and predict runs with ``data.root`` pointing at nothing.
Nothing here depends on what the model learned: rows, paths and names only.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from kwsnet.cli import main
from kwsnet.data.datamodule import AudioDataModule, checkpoint_class_names
from kwsnet.data.record import DataFormatError

from .conftest import KWS_RAW_CONFIG, QUIET_FIT, write_tone

NAMES = ["yes", "no", "_unknown_"]


def _data_flags(root: Path) -> list[str]:
    return [
        "--config",
        KWS_RAW_CONFIG,
        "--data.source",
        "speech_commands",
        "--data.root",
        str(root),
        "--data.words",
        "[yes,no]",
        "--data.include_unknown",
        "true",
        "--data.batch_size",
        "4",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]


def _speech_commands(root: Path) -> Path:
    """3 words x 3 speakers x 2 clips; the third speaker is the validation split."""
    for w, f in {"yes": 300.0, "no": 500.0, "up": 700.0}.items():
        for spk in ("aaaa1111", "bbbb2222", "cccc3333"):
            for n in range(2):
                write_tone(root / w / f"{spk}_nohash_{n}.wav", freq=f + 20 * n)
    (root / "validation_list.txt").write_text(
        "".join(f"{w}/cccc3333_nohash_{n}.wav\n" for w in ("yes", "no", "up") for n in range(2))
    )
    (root / "testing_list.txt").write_text("")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(last.ckpt of a 1-epoch, 2-step fit, the data root it used, now deleted)."""
    base = tmp_path_factory.mktemp("predict_without_data")
    root = _speech_commands(base / "sc")
    run = base / "run"
    main(
        [
            "fit",
            *_data_flags(root),
            *QUIET_FIT,
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.default_root_dir",
            str(run),
        ]
    )
    shutil.rmtree(root)
    return run / "checkpoints" / "last.ckpt", root


@pytest.fixture
def wavs(tmp_path: Path) -> list[Path]:
    return [write_tone(tmp_path / "in" / f"{i}.wav", freq=250.0 + 150 * i) for i in range(3)]


def _predictions(out: Path) -> list[dict[str, str]]:
    with open(out / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_checkpoint_saves_the_class_names(checkpoint: tuple[Path, Path]) -> None:
    ckpt, _ = checkpoint
    assert checkpoint_class_names(ckpt) == NAMES
    assert checkpoint_class_names(torch.load(ckpt, weights_only=True)) == NAMES
    assert checkpoint_class_names(ckpt.parent / "missing.ckpt") is None


def test_datamodule_with_class_names_predicts_without_the_source(
    checkpoint: tuple[Path, Path], wavs: list[Path]
) -> None:
    _, root = checkpoint
    with pytest.raises(DataFormatError, match="to predict without the dataset, set data.class"):
        AudioDataModule(source="speech_commands", root=str(root), predict_files=[str(wavs[0])])
    dm = AudioDataModule(
        source="speech_commands",
        root=str(root),
        class_names=NAMES,
        predict_files=[str(wavs[0].parent)],
        batch_size=2,
    )
    assert dm.num_classes == 3 and dm.class_names == NAMES
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [b["audio"].shape for b in batches] == [(2, 16000), (1, 16000)]
    assert [p for b in batches for p in b["path"]] == [str(w) for w in wavs]
    with pytest.raises(DataFormatError, match="does not exist"):
        dm.setup("test")  # a labelled split still needs the dataset


def test_class_names_must_match_the_source(speech_commands_tree: Path) -> None:
    dm = AudioDataModule(
        source="speech_commands", root=str(speech_commands_tree), words=["yes", "no"]
    )
    assert dm.state_dict() == {"class_names": ["yes", "no"]}
    dm = AudioDataModule(
        source="speech_commands",
        root=str(speech_commands_tree),
        words=["yes", "no"],
        class_names=["no", "yes"],
    )
    with pytest.raises(DataFormatError, match=r"data.class_names \['no', 'yes'\] differ"):
        dm.setup("fit")
    with pytest.warns(UserWarning, match="learned classes"):
        AudioDataModule(
            source="speech_commands", root=str(speech_commands_tree), words=["yes", "no"]
        ).load_state_dict({"class_names": ["up", "no"]})


def test_predict_cli_with_class_names_and_no_dataset(
    checkpoint: tuple[Path, Path], wavs: list[Path], tmp_path: Path
) -> None:
    ckpt, root = checkpoint
    out = tmp_path / "pred"
    main(
        [
            "predict",
            *_data_flags(root),
            "--data.class_names",
            "[yes,no,_unknown_]",
            "--ckpt_path",
            str(ckpt),
            "--data.predict_files",
            f"[{wavs[0].parent}]",
            "--trainer.default_root_dir",
            str(out),
        ]
    )
    rows = _predictions(out)
    assert [r["path"] for r in rows] == [str(w) for w in wavs]
    assert all(r["label"] == NAMES[int(r["pred"])] for r in rows)


def test_predict_cli_needs_only_the_checkpoint(
    checkpoint: tuple[Path, Path], wavs: list[Path], tmp_path: Path
) -> None:
    """The user's flow: ``predict --config C --ckpt_path P --data.predict_files [...]`` with the
    training data's config, on a machine that does not have the training data."""
    ckpt, root = checkpoint
    out = tmp_path / "pred"
    main(
        [
            "predict",
            *_data_flags(root),
            "--ckpt_path",
            str(ckpt),
            "--data.predict_files",
            f"[{wavs[0].parent},{wavs[1]}]",
            "--trainer.default_root_dir",
            str(out),
        ]
    )
    rows = _predictions(out)
    assert [r["path"] for r in rows] == [str(w) for w in [*wavs, wavs[1]]]
    assert all(r["label"] == NAMES[int(r["pred"])] for r in rows)
    assert 0.0 < min(float(r["prob"]) for r in rows) <= 1.0


def test_rebuild_from_checkpoint_needs_no_dataset(checkpoint: tuple[Path, Path]) -> None:
    """``export`` rebuilds the model from the checkpoint's stored config alone."""
    from kwsnet.cli import build_from_config

    ckpt, _ = checkpoint
    model, dm = build_from_config(None, str(ckpt))
    assert model.class_names == dm.class_names == NAMES
