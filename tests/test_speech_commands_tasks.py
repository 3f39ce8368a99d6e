"""The Speech Commands tasks as TensorFlow's ``input_data.py`` defines them (issue 28).

Per split, ``_unknown_`` and ``_silence_`` are each a percentage (10% by default) of the split's
keyword clips, rounded up; the unknown clips are a deterministic draw from the split's other
words that no run seed moves; silence clips are zeros; the 35-word task has 35 classes. The old
definition (every other word ``_unknown_``, noise-segment silence) stays under explicit options.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from kwsnet.data.datamodule import AudioDataModule
from kwsnet.data.record import SourceArgs
from kwsnet.data.speech_commands import (
    ALL_WORDS,
    COMMAND_WORDS,
    SpeechCommandsSource,
    class_counts,
    format_counts,
    main,
)

from .conftest import SHARED_DATA, write_speech_commands

OTHER_WORDS = ["bed", "bird", "cat", "dog", "happy"]
KEYWORDS = {"train": 200, "val": 50, "test": 30}  # 10 words x (20, 5, 3)
OTHERS = {"train": 40, "val": 15, "test": 10}  # 5 words x (8, 3, 2)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 command words x (20 train, 5 val, 3 test) clips, 5 other words x (8, 3, 2), noise."""
    counts = {w: (20, 5, 3) for w in COMMAND_WORDS} | {w: (8, 3, 2) for w in OTHER_WORDS}
    return write_speech_commands(tmp_path_factory.mktemp("sc"), counts)


def _sc12(root: Path, **options) -> SpeechCommandsSource:
    args = SourceArgs(
        root=str(root),
        words=list(COMMAND_WORDS),
        include_unknown=True,
        include_silence=True,
        options=options,
    )
    return SpeechCommandsSource(args)


def _by_split(src: SpeechCommandsSource) -> dict[str, list]:
    return {s: src.items(s) for s in ("train", "val", "test")}


@pytest.mark.parametrize("unknown_pct, silence_pct", [(None, None), (15.0, 5.0), (0.0, 100.0)])
def test_counts_per_split_follow_the_percentages(tree: Path, unknown_pct, silence_pct) -> None:
    options = {}
    if unknown_pct is not None:
        options = {"unknown_percentage": unknown_pct, "silence_percentage": silence_pct}
    src = _sc12(tree, **options)
    assert src.keyword_names == [*COMMAND_WORDS, "_unknown_", "_silence_"]
    counts = class_counts(src)
    u_pct = 10.0 if unknown_pct is None else unknown_pct
    s_pct = 10.0 if silence_pct is None else silence_pct
    for split, k in KEYWORDS.items():
        assert all(counts[split][w] == k // 10 for w in COMMAND_WORDS)
        assert counts[split]["_unknown_"] == math.ceil(k * u_pct / 100)  # TF: ceil(set_size * %)
        assert counts[split]["_silence_"] == math.ceil(k * s_pct / 100)
    if unknown_pct is None:  # the defaults: 10% each
        assert [counts[s]["_unknown_"] for s in KEYWORDS] == [20, 5, 3]
        assert [counts[s]["_silence_"] for s in KEYWORDS] == [20, 5, 3]


def test_unknowns_come_from_the_splits_other_words(tree: Path) -> None:
    src = _sc12(tree, unknown_percentage=15.0)
    val_list = set((tree / "validation_list.txt").read_text().split())
    for split, items in _by_split(src).items():
        unknown = [it for it in items if it.keyword == 10]
        assert unknown and all(Path(it.path).parent.name in OTHER_WORDS for it in unknown)
        for it in unknown:
            rel = f"{Path(it.path).parent.name}/{Path(it.path).name}"
            assert (rel in val_list) == (split == "val")
        assert len({it.path for it in unknown}) == len(unknown)  # no clip twice


def test_unknown_draw_is_deterministic_and_independent_of_every_run_seed(tree: Path) -> None:
    def draw(seed: int, split_seed: int) -> dict[str, list[str]]:
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        args = SourceArgs(
            root=str(tree),
            words=list(COMMAND_WORDS),
            include_unknown=True,
            split_seed=split_seed,
        )
        src = SpeechCommandsSource(args)
        return {s: [it.path for it in src.items(s) if it.keyword == 10] for s in KEYWORDS}

    first = draw(0, 1234)
    assert first == draw(1, 1234) == draw(42, 7) == draw(0, 1234)
    assert all(len(v) == math.ceil(KEYWORDS[s] / 10) for s, v in first.items())
    # the draw is a ranking: a larger percentage keeps the smaller one's clips
    more = _sc12(tree, unknown_percentage=15.0)
    for split, paths in first.items():
        assert set(paths) <= {it.path for it in more.items(split) if it.keyword == 10}
    # it is a draw, not the first clips in folder order
    assert (
        first["train"]
        != sorted(str(p) for w in OTHER_WORDS for p in sorted((tree / w).glob("*.wav")))[:20]
    )


def test_silence_clips_are_one_second_of_zeros(tree: Path) -> None:
    dm = AudioDataModule(
        source="speech_commands",
        root=str(tree),
        words=list(COMMAND_WORDS),
        include_unknown=True,
        include_silence=True,
        batch_size=8,
    )
    assert dm.num_classes == 12
    dm.setup("fit")
    ds = dm.datasets["val"]
    silence = [ds[i] for i in range(len(ds)) if ds.items[i].keyword == 11]
    assert len(silence) == 5
    for rec in silence:
        assert rec["audio"].shape == (16000,) and rec["audio"].abs().sum() == 0
        assert rec["path"].startswith("silence://val/")


def test_old_definition_stays_reachable(tree: Path) -> None:
    """``unknown_mode: all`` + ``silence_mode: noise`` + ``silence_fraction`` is the
    definition before issue 28: every other-word clip, noise segments, 10% of all clips."""
    old = _sc12(tree, unknown_mode="all", silence_mode="noise", silence_fraction=0.1)
    counts = class_counts(old)
    for split, k in KEYWORDS.items():
        assert counts[split]["_unknown_"] == OTHERS[split]
        assert counts[split]["_silence_"] == max(1, round((k + OTHERS[split]) * 0.1))
    item = next(it for it in old.items("train") if it.keyword == 11)
    wave = old.load(item)
    assert wave.shape == (16000,) and wave.abs().sum() > 0  # a segment of background noise
    assert Path(item.path).parent.name == "_background_noise_"
    # items keep the old folder order (unknowns among the word folders)
    names = [Path(it.path).parent.name for it in old.items("train") if it.keyword != 11]
    assert names == sorted(names)


def test_bad_options_are_named(tree: Path) -> None:
    with pytest.raises(ValueError, match="unknown_mode must be one of"):
        _sc12(tree, unknown_mode="some")
    with pytest.raises(ValueError, match="unknown_percentage sizes the sampled"):
        _sc12(tree, unknown_mode="all", unknown_percentage=10)
    with pytest.raises(ValueError, match="not both"):
        _sc12(tree, silence_fraction=0.1, silence_percentage=10)
    with pytest.raises(ValueError, match="silence_percentage must be >= 0"):
        _sc12(tree, silence_percentage=-1)
    with pytest.raises(ValueError, match="valid: version, url, sha256, unknown_mode"):
        _sc12(tree, silence_fraktion=0.1)


def test_too_few_other_words_warns_and_takes_them_all(tree: Path) -> None:
    with pytest.warns(UserWarning, match=r"fewer other-word clips.*train 40 of 50"):
        src = _sc12(tree, unknown_percentage=25.0)
    assert class_counts(src)["train"]["_unknown_"] == 40


def test_35_word_task_has_35_classes(speech_commands_35_tree: Path) -> None:
    dm = AudioDataModule(
        source="speech_commands", root=str(speech_commands_35_tree), words=list(ALL_WORDS)
    )
    assert dm.num_classes == 35 and dm.class_names == ALL_WORDS
    assert "_unknown_" not in dm.class_names and "_silence_" not in dm.class_names
    counts = class_counts(dm.source)
    assert all(counts["train"][w] == 6 and counts["test"][w] == 2 for w in ALL_WORDS)


def test_counts_command_prints_a_table(tree: Path, capsys: pytest.CaptureFixture) -> None:
    main([str(tree), "--task", "sc12"])
    out = capsys.readouterr().out
    assert "| `_unknown_` | 20 | 5 | 3 |" in out and "| total | 240 | 60 | 36 |" in out
    assert format_counts(class_counts(_sc12(tree))) in out


# The 12-class task on ../shared/data/speech_commands_real (docs/speech_commands.md): 10% of the
# keyword clips per split, rounded up; _unknown_ is short in train and test, where the 25 other
# words have fewer clips than that (all of them are taken).
REAL_SC12 = {
    "train": {"keywords": 2305, "_unknown_": 225, "_silence_": 231},
    "val": {"keywords": 389, "_unknown_": 39, "_silence_": 39},
    "test": {"keywords": 584, "_unknown_": 50, "_silence_": 59},
}


def test_sc12_counts_on_speech_commands_real() -> None:
    root = SHARED_DATA / "speech_commands_real"
    if not root.is_dir():
        pytest.skip(f"{root} is absent: the shared real-audio data is not beside the repo")
    with pytest.warns(UserWarning, match=r"train 225 of 231, test 50 of 59"):
        src = _sc12(root)
    assert len(src.keyword_names) == 12
    counts = class_counts(src)
    for split, want in REAL_SC12.items():
        got = counts[split]
        assert sum(got[w] for w in COMMAND_WORDS) == want["keywords"]
        assert got["_silence_"] == math.ceil(want["keywords"] / 10) == want["_silence_"]
        assert got["_unknown_"] == want["_unknown_"]
    assert sum(map(len, _by_split(src).values())) == 3921
