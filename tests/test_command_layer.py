"""One command layer: every subcommand listed by ``kwsnet --help``, parsed by jsonargparse with
underscore flags, reporting bad input as ``kwsnet: error: ...``; and the new-user bugs of the
command line (abbreviated options, config errors as one line naming the file, key and closest
valid key, the YAML spacing line, predict's output and logger, wandb's folder, the checkpoint
folder's files, the collapse warning of a healthy run's first epoch)."""

from __future__ import annotations

import ast
import json
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from kwsnet import commands
from kwsnet.cli import console, main
from kwsnet.commands.common import CommandParser, parse
from kwsnet.errors import UsageError

from .conftest import KWS_RAW_CONFIG, REPO, learnable_cli_args, write_tone

COMMAND_MODULES = sorted((REPO / "kwsnet" / "commands").glob("*.py"))
EXTRA = [c for c in commands.COMMANDS if c.module is not None]


def fit_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["fit", "--config", KWS_RAW_CONFIG, "--trainer.default_root_dir", str(tmp_path), *extra]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``kwsnet: error:`` line on stderr (and no usage, no traceback)."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("kwsnet: error: "), err[-2000:]
    return lines[0][len("kwsnet: error: ") :]


def edited_config(tmp_path: Path, old: str, new: str) -> Path:
    """configs/kws_raw.yaml with one line's text replaced, in ``tmp_path``."""
    text = Path(KWS_RAW_CONFIG).read_text()
    assert old in text
    path = tmp_path / "edited.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


# --- one command layer ------------------------------------------------------------------------


def test_help_lists_every_command_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert console(["--help"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert [r.split()[0] for r in rows] == [c.name for c in commands.COMMANDS]
    assert len(rows) == 14 and all(len(r) <= 100 for r in out.splitlines())
    for c in commands.COMMANDS:
        assert c.summary and not c.summary.endswith((",", " the", " your", " to")), c


@pytest.mark.parametrize("command", [c.name for c in EXTRA])
def test_each_command_has_readable_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:  # --help prints and exits 0, as argparse's
        main([command, "--help"])
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith(f"usage: kwsnet {command} ") and "options:" in out
    assert "<function" not in out and "<locals>" not in out


def test_lightning_command_help_has_kwsnets_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    assert commands.find("validate").summary in capsys.readouterr().out  # type: ignore[union-attr]


def test_every_command_module_is_jsonargparse_with_underscore_flags() -> None:
    """No argparse in kwsnet/commands/; every command's parser is a CommandParser whose flags
    are spelled as LightningCLI's (underscores); the old hyphenated spellings map onto them."""
    for path in COMMAND_MODULES:
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "argparse" not in names, path.name
    for c in EXTRA:
        module = __import__(f"kwsnet.commands.{c.module}", fromlist=["parser"])
        parser = module.parser()
        assert isinstance(parser, CommandParser) and not parser.allow_abbrev
        flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
        assert flags and all("-" not in f[2:] for f in flags), (c.name, flags)
        for old, new in getattr(module, "ALIASES", {}).items():
            assert "-" in old[2:] and "--" + old[2:].replace("-", "_") == new and new in flags, old


def test_old_hyphenated_flag_still_works_with_a_warning(capsys) -> None:
    from kwsnet.commands import parity

    args, overrides = parse(
        parity.parser(), ["--per-layer", "--data.root", "d"], parity.ALIASES, True
    )
    assert args.per_layer and overrides == ["--data.root", "d"]
    assert "--per-layer is deprecated; use --per_layer" in capsys.readouterr().err


def test_command_code_catches_no_value_error() -> None:
    """A ValueError raised while a command runs is a bug and keeps its traceback: no handler in
    kwsnet/commands/ or kwsnet/cli.py catches ValueError (bad input raises kwsnet's errors)."""
    for path in [*COMMAND_MODULES, REPO / "kwsnet" / "cli.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                caught = {n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)}
                assert "ValueError" not in caught, f"{path.name}:{node.lineno}"


def test_a_value_error_in_a_command_keeps_its_traceback(monkeypatch) -> None:
    import kwsnet.commands.sweep as sweep_command

    def boom(path: str) -> None:
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(sweep_command, "load_spec", boom)
    with pytest.raises(ValueError, match="a bug"):
        console(["sweep", "--config", "x.yaml"])


def test_main_returns_and_errors_share_one_prefix(tmp_path, capsys) -> None:
    """``main`` returns 0 for a command that succeeds (no SystemExit); every command's bad
    input is one ``kwsnet: error:`` line from the console."""
    spec = REPO / "configs" / "sweeps" / "smoke.yaml"
    assert main(["sweep", "--config", str(spec), "--out", str(tmp_path), "--dry_run"]) == 0
    assert "fit --config" in capsys.readouterr().out
    with pytest.raises(UsageError, match=r"unknown command 'fitt' \(did you mean fit\?\)"):
        main(["fitt"])
    cases = [
        (["sweep", "--config", str(tmp_path / "none.yaml")], 2, "none.yaml: cannot read"),
        (["detect-eval", "--ckpt_path", "x", "--streams", str(tmp_path)], 1, "labels.csv"),
        (["detect", "--ckpt_path", "x", "a.wav", "--hop_ms", "-5"], 2, "--hop_ms: must be > 0"),
        (["export", "--ckpt_path", str(tmp_path / "no.ckpt"), "--out", "m"], 1, "no.ckpt"),
        (["prepare", "--source", "voxceleb", "--root", "r", "--out", "o"], 2, "'voxceleb1'"),
    ]
    for argv, status, text in cases:
        assert console(argv) == status, argv
        assert text in one_error_line(capsys), argv


# --- the new-user bugs --------------------------------------------------------------------


def test_abbreviated_option_is_refused(tmp_path: Path) -> None:
    """argparse took ``--trainer.max_epoch 1`` as ``--trainer.max_epochs 1``, silently."""
    with pytest.raises(UsageError) as info:
        main(fit_args(tmp_path, "--trainer.max_epoch", "1"))
    assert (
        str(info.value)
        == "--trainer.max_epoch: unknown option (did you mean --trainer.max_epochs?)"
    )
    with pytest.raises(UsageError, match="--per_lay: unknown option"):
        main(["parity", "--per_lay"])


def test_yaml_key_typo_is_one_line_with_the_closest_key(tmp_path: Path, capsys) -> None:
    typo = edited_config(tmp_path, "norm_placement: per_conv", "norm_placment: per_conv")
    assert console(["fit", "--config", str(typo), "--trainer.default_root_dir", str(tmp_path)]) == 2
    assert one_error_line(capsys) == (
        f"{typo}: model.backbone.init_args.norm_placment: unknown key "
        "(did you mean norm_placement?)"
    )
    (tmp_path / "top.yaml").write_text("trainr:\n  max_epochs: 1\n")
    (tmp_path / "nested.yaml").write_text("data:\n  batchsize: 8\n")
    for name, message in [
        ("top.yaml", "trainr.max_epochs: unknown key (did you mean trainer.max_epochs?)"),
        ("nested.yaml", "data.batchsize: unknown key (did you mean batch_size?)"),
    ]:
        with pytest.raises(UsageError) as info:
            main(fit_args(tmp_path, "--config", str(tmp_path / name)))
        assert str(info.value) == f"{tmp_path / name}: {message}"
    assert not (tmp_path / "checkpoints").exists()


def test_wrong_type_is_one_line_without_the_typing_report(tmp_path: Path) -> None:
    bad = edited_config(tmp_path, "lr: 0.005", "lr: fast")
    with pytest.raises(UsageError) as info:
        main(["fit", "--config", str(bad), "--trainer.default_root_dir", str(tmp_path)])
    assert str(info.value) == f"{bad}: model.optimizer.init_args.lr: expected a float, got 'fast'"
    with pytest.raises(UsageError) as info:
        main(fit_args(tmp_path, "--data.batch_size", "many"))
    assert str(info.value) == "--data.batch_size: expected an int, got 'many'"


def test_closed_choice_miss_is_one_line(tmp_path: Path) -> None:
    bad = edited_config(tmp_path, "target: keyword", "target: keywrd")
    with pytest.raises(UsageError) as info:
        main(["fit", "--config", str(bad), "--trainer.default_root_dir", str(tmp_path)])
    assert str(info.value) == (
        f"{bad}: data.target: 'keywrd' is not one of 'keyword', 'speaker' (did you mean 'keyword'?)"
    )


def test_missing_config_file_is_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.yaml"
    assert console(["fit", "--config", str(missing)]) == 2
    assert one_error_line(capsys) == f"--config {missing}: no such file"
    with pytest.raises(UsageError, match="did you mean the shipped config kws_raw"):
        main(["fit", "--config", "kws_rw"])


def test_yaml_spacing_error_is_reported_on_its_line(tmp_path: Path, capsys) -> None:
    """``batch_size:64`` on line 29 of kws_raw.yaml: the parser notices on line 30."""
    lines = Path(KWS_RAW_CONFIG).read_text().splitlines()
    assert lines[28].strip() == "batch_size: 64"
    bad = edited_config(tmp_path, "batch_size: 64", "batch_size:64")
    assert console(["fit", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert (
        err[0].startswith(f"kwsnet: error: {bad}:29: not valid YAML") and "batch_size:64" in err[0]
    )
    assert err[1:] == [
        "hint: YAML needs `key: value` with a space after the colon: `batch_size: 64`"
    ]


def test_predict_says_where_and_makes_no_wandb_run(trained_raw_run: Path, tmp_path, capsys) -> None:
    summary = json.loads((trained_raw_run / "summary.json").read_text())
    for i in range(2):
        write_tone(tmp_path / "in" / f"{i}.wav", freq=300.0 + 100 * i)
    out = tmp_path / "pred"
    argv = ["predict", *learnable_cli_args(out), "--ckpt_path", summary["best_checkpoint"]]
    assert main([*argv, "--data.predict_files", f"[{tmp_path / 'in'}]"]) == 0
    assert f"wrote 2 predictions to {out / 'predictions.csv'}" in capsys.readouterr().err
    assert (out / "predictions.csv").is_file()
    assert not (out / "wandb").exists() and not list(tmp_path.rglob("offline-run-*"))


def test_wandb_follows_the_run_dir(tmp_path: Path) -> None:
    """kws_raw.yaml's logger saves to runs/kws_raw, its default_root_dir: a run dir given on
    the command line takes the wandb run along, unless save_dir is given too."""
    from kwsnet.cli import KwsCLI

    run_dir = tmp_path / "elsewhere"
    args = ["--config", KWS_RAW_CONFIG, "--trainer.default_root_dir", str(run_dir)]
    cli = KwsCLI(args=args, run=False)
    assert cli.trainer.logger.save_dir == str(run_dir)
    own = ["--trainer.logger.init_args.save_dir", str(tmp_path / "wb")]
    cli = KwsCLI(args=[*args, *own], run=False)
    assert cli.trainer.logger.save_dir == str(tmp_path / "wb")


def test_checkpoint_folder_files_are_documented(trained_raw_run: Path) -> None:
    readme = (REPO / "README.md").read_text()
    names = {p.name for p in (trained_raw_run / "checkpoints").iterdir()}
    assert {"last.ckpt", "latest.ckpt"} <= names
    for name in names:
        documented = re.sub(r"best-\d+\.ckpt", "best-EPOCH.ckpt", name)
        assert f"`{documented}`" in readme, name


def test_collapse_warns_only_when_fitting_ends_collapsed() -> None:
    """A healthy run predicts one class after its first epoch: while fitting, a collapsed val
    epoch is logged, not warned; fitting that ends collapsed warns once; test always warns."""
    from kwsnet.callbacks.collapse import CollapseMonitor
    from kwsnet.lit import ClassifierModule
    from kwsnet.models.raw_conv import RawConv

    module = ClassifierModule(RawConv(), num_classes=3)
    logged: dict[str, float] = {}
    module.log = lambda key, value, **kw: logged.__setitem__(key, value)  # type: ignore[method-assign]
    for stage in ("val_", "test_"):
        module.metrics[stage].update(
            torch.tensor([2, 2, 2]), torch.tensor([0, 1, 2]), torch.tensor(1.0)
        )
    monitor = CollapseMonitor()
    fitting = SimpleNamespace(
        sanity_checking=False, state=SimpleNamespace(fn="fit"), current_epoch=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor.on_validation_epoch_end(fitting, module)
    assert logged["val/collapsed"] == 1.0
    with pytest.warns(UserWarning, match="after 0 epochs, val predictions cover 1 of 3 classes"):
        monitor.on_fit_end(fitting, module)
    testing = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn="test"))
    with pytest.warns(UserWarning, match="test predictions cover 1 of 3 classes"):
        monitor.on_test_epoch_end(testing, module)


def test_stored_config_yaml_is_not_touched() -> None:
    """kws_raw.yaml still names its wandb save_dir (sweeps hash it: a changed config re-runs)."""
    cfg = yaml.safe_load(Path(KWS_RAW_CONFIG).read_text())
    assert cfg["trainer"]["logger"]["init_args"]["save_dir"] == cfg["trainer"]["default_root_dir"]
