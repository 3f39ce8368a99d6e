"""``data.source`` is picked as every other class of a config: a ``class_path`` naming any
``Source`` subclass (a user's own, in a module of theirs, too) with ``init_args``, the format's
options; the shipped formats' short names stand for their class paths, so configs, sweep specs,
``--data.source speech_commands`` and checkpoints with a string source keep working. A value
that names no ``Source`` class is one ``kwsnet: error:`` line naming it and the short names."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from kwsnet.cli import console, main
from kwsnet.data.datamodule import AudioDataModule
from kwsnet.data.record import SPLITS, Item, Source, SourceArgs
from kwsnet.data.sources import SOURCES, build_source, parse_source, short_name, source_class
from kwsnet.errors import ConfigError

from .conftest import KWS_RAW_CONFIG, QUIET_FIT

TINY = {"num_words": 3, "num_speakers": 4, "utterances": 10}
SYNTHETIC = "kwsnet.data.synthetic.SyntheticSource"
SHORT_NAMES = "short name: synthetic, speech_commands, folder, voxceleb1, mel_features"


class ToneSource(Source):
    """A user's own format: two classes of pure tones, ``per_class`` clips per split."""

    def __init__(self, args: SourceArgs) -> None:
        super().__init__(args)
        options = dict(args.options)
        per_class = int(options.pop("per_class", 4))
        if options:
            raise ConfigError(f"unknown ToneSource options {sorted(options)}; valid: per_class")
        self.keyword_names = ["low", "high"]
        self._items = {
            split: [
                Item(f"tone://{split}/{k}/{i}", keyword=k, extra=(k, i))
                for k in range(2)
                for i in range(per_class)
            ]
            for split in SPLITS
        }

    def load(self, item: Item) -> torch.Tensor:
        k, i = item.extra
        t = torch.arange(self.args.sample_rate // 4) / self.args.sample_rate
        return torch.sin(2 * math.pi * (300.0 + 600.0 * k + i) * t).float()


# The same format as a module of the user's own (written to a folder on sys.path).
OWN_MODULE = "kwsnet_test_own_formats"
OWN_MODULE_TEXT = textwrap.dedent(
    """
    import math

    import torch

    from kwsnet.data.record import SPLITS, Item, Source


    class Tones(Source):
        def __init__(self, args):
            super().__init__(args)
            per_class = int(args.options.get("per_class", 4))
            self.keyword_names = ["low", "high"]
            self._items = {
                s: [Item(f"tone://{s}/{k}/{i}", keyword=k, extra=(k,)) for k in range(2)
                    for i in range(per_class)]
                for s in SPLITS
            }

        def load(self, item):
            t = torch.arange(4000) / self.args.sample_rate
            return torch.sin(2 * math.pi * (300.0 + 600.0 * item.extra[0]) * t).float()
    """
)


@pytest.fixture
def own_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The class path of ``Tones`` in a module of the user's own, importable for the test."""
    folder = tmp_path / "own"
    folder.mkdir()
    (folder / f"{OWN_MODULE}.py").write_text(OWN_MODULE_TEXT)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, OWN_MODULE, raising=False)
    yield f"{OWN_MODULE}.Tones"
    sys.modules.pop(OWN_MODULE, None)


def items(dm: AudioDataModule) -> dict[str, list[str]]:
    return {s: [it.path for it in dm.source.items(s)] for s in SPLITS}


# --- the value's forms ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_short_names_stand_for_their_class_paths(name: str) -> None:
    spec = parse_source(name)
    assert spec.class_path == SOURCES[name] and spec.init_args == {} and spec.label == name
    assert parse_source({"class_path": name}).class_path == SOURCES[name]
    assert parse_source(SOURCES[name]).label == name  # a shipped class path is labelled short
    assert source_class(spec).name == name
    assert short_name({"class_path": SOURCES[name], "init_args": {}}) == name


def test_class_path_with_init_args_is_the_short_name_with_source_options() -> None:
    by_path = AudioDataModule(source={"class_path": SYNTHETIC, "init_args": TINY}, preload=False)
    by_name = AudioDataModule(source="synthetic", source_options=TINY, preload=False)
    assert by_path.source_name == by_name.source_name == "synthetic"
    assert by_path.class_names == by_name.class_names == ["word0", "word1", "word2"]
    assert items(by_path) == items(by_name)
    assert by_path.source_args.options == by_name.source_args.options == TINY


def test_source_options_are_merged_over_init_args() -> None:
    spec = {"class_path": "synthetic", "init_args": {**TINY, "num_words": 5}}
    dm = AudioDataModule(source=spec, source_options={"num_words": 2}, preload=False)
    assert dm.num_classes == 2 and dm.source_args.options == {**TINY, "num_words": 2}
    built = build_source(spec, SourceArgs(options={"num_words": 4}))
    assert built.keyword_names == ["word0", "word1", "word2", "word3"]


def test_a_source_class_of_the_users_own() -> None:
    path = f"{__name__}.ToneSource"
    dm = AudioDataModule(source={"class_path": path, "init_args": {"per_class": 3}}, preload=False)
    assert isinstance(dm.source, ToneSource) and dm.class_names == ["low", "high"]
    assert dm.source_name == path == ToneSource.name  # named by its class path
    assert len(dm.source.items("train")) == 6 and short_name(path) is None
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (6, 16000)  # padded to clip_samples like any source
    # a plain string is a class path without init_args
    assert AudioDataModule(source=path, preload=False).source_args.options == {}


def test_own_module_source_trains_and_its_checkpoint_loads(own_module: str, tmp_path: Path) -> None:
    """fit with a Source class from the user's own module; the checkpoint stores the
    class_path and rebuilds (kwsnet.load, build_from_config) from it."""
    import kwsnet
    from kwsnet.loading import build_from_config

    run = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            KWS_RAW_CONFIG,
            "--data.source",
            f"{{class_path: {own_module}, init_args: {{per_class: 4}}}}",
            *("--data.clip_samples", "4000", "--model.backbone.init_args.input_samples", "4000"),
            *("--data.batch_size", "4", "--trainer.max_epochs", "1"),
            *("--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false"),
            *QUIET_FIT,
        ]
    )
    stored = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert stored["source"] == {"class_path": own_module, "init_args": {"per_class": 4}}
    ckpt = run / "checkpoints" / "last.ckpt"
    model, dm = build_from_config(None, str(ckpt))
    assert dm.source_name == own_module and dm.class_names == ["low", "high"]
    loaded = kwsnet.load(ckpt)
    assert loaded.class_names == ["low", "high"]
    assert loaded(torch.zeros(4000), sample_rate=16000).shape == (1, 2)


def test_print_config_round_trips_and_a_short_name_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = f"{{class_path: {SYNTHETIC}, init_args: {{num_words: 3, utterances: 4}}}}"
    with pytest.raises(SystemExit):
        main(["fit", "--config", KWS_RAW_CONFIG, "--data.source", source, "--print_config"])
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)["data"]
    assert data["source"] == {
        "class_path": SYNTHETIC,
        "init_args": {"num_words": 3, "utterances": 4},
    }
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(saved), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load(printed)
    # `--data.source speech_commands` (README, sweep specs) replaces a class_path source
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(saved), "--data.source", "speech_commands", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["data"]["source"] == "speech_commands"


def test_prepare_takes_a_class_path(tmp_path: Path) -> None:
    out = tmp_path / "mel"
    argv = ["prepare", "--source", SYNTHETIC, "--root", str(tmp_path), "--out", str(out)]
    options = json.dumps({**TINY, "num_speakers": 2, "utterances": 3, "num_samples": 1600})
    assert console([*argv, "--n_mels", "8", "--source_options", options]) == 0
    assert json.loads((out / "metadata.json").read_text())["n_mels"] == 8


# --- bad values: one line, naming the value, what is expected and the short names -------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("speech_comands", "data.source 'speech_comands': no such source (did you mean "),
        ("librispeech", "data.source 'librispeech': no such source; expected the class_path"),
        ("no_such_pkg.Format", "'no_such_pkg.Format': cannot import no_such_pkg"),
        ({"class_path": "kwsnet.data.synthetic.NoSuch"}, "module kwsnet.data.synthetic has no"),
        ("collections.OrderedDict", "is not a kwsnet.data.record.Source subclass"),
        ("kwsnet.data.record.Source", "'kwsnet.data.record.Source' is abstract"),
        ({"init_args": TINY}, "data.source: class_path missing"),
        ({"class_path": "synthetic", "init_args": [3]}, "data.source.init_args: expected a map"),
        (3, "data.source 3: not a source"),
    ],
)
def test_a_value_that_names_no_source_class(source: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        AudioDataModule(source=source)  # type: ignore[arg-type]
    text = str(info.value)
    assert message in text and "\n" not in text
    if "init_args:" not in message:
        assert text.endswith(SHORT_NAMES)


def test_a_key_beside_class_path_and_init_args() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'init_arg' \(did you mean 'init_args'\?\)"):
        AudioDataModule(source={"class_path": "synthetic", "init_arg": TINY})
    # `--data.source.init_args.num_words 3` reaches the DataModule as a top-level key
    with pytest.raises(ConfigError, match=r"--data.source_options '\{num_words: \.\.\.\}'"):
        AudioDataModule(source={"class_path": "synthetic", "num_words": 3})


def test_the_command_line_reports_it_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", "--config", KWS_RAW_CONFIG, "--trainer.default_root_dir", str(tmp_path)]
    assert console([*argv, *QUIET_FIT, "--data.source", "speech_comands"]) == 1
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("kwsnet: error: ")]
    assert errors == [
        "kwsnet: error: data.source 'speech_comands': no such source (did you mean "
        "'speech_commands'?); expected the class_path of a kwsnet.data.record.Source subclass, "
        f"or a {SHORT_NAMES}"
    ]
    assert "Traceback" not in err and not (tmp_path / "checkpoints").exists()
