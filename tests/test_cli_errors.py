"""Bad input ends in one clear line: ``kwsnet: error: ...`` (+ at most one ``hint: ...``), no
traceback, a non-zero exit; ``KWSNET_TRACEBACK=1`` shows the traceback (kwsnet.errors).

The one-line output is checked in real processes (``python train.py``, ``python -m
kwsnet.cli``) and through ``kwsnet.cli.console``; called from Python with an argument list,
``main`` raises instead (a parse error as a ``UsageError``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal, get_args, get_type_hints

import pytest
import torch
from torch import nn

from kwsnet.cli import console, main
from kwsnet.errors import (
    TRACEBACK_ENV,
    ConfigSyntaxError,
    KwsnetUserError,
    UsageError,
    error_lines,
)
from kwsnet.nn.norms import NORM_KINDS

from .conftest import KWS_RAW_CONFIG, QUIET_FIT, REPO, tiny_cli_args, write_tone

QUIET = ["--trainer.logger", "false"]


def run_cli(args: list[str], *, traceback: bool = False, module: bool = False):
    env = {k: v for k, v in os.environ.items() if k != TRACEBACK_ENV}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    if traceback:
        env[TRACEBACK_ENV] = "1"
    cmd = [sys.executable, "-m", "kwsnet.cli"] if module else [sys.executable, "train.py"]
    return subprocess.run(
        [*cmd, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def error_report(proc: subprocess.CompletedProcess) -> list[str]:
    """The error's lines: exactly one ``kwsnet: error:`` line, last on stderr but for at most
    one ``hint:`` line, and no traceback anywhere."""
    err = proc.stderr
    assert "Traceback" not in err, err[-3000:]
    lines = err.rstrip("\n").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("kwsnet: error: ")]
    assert len(starts) == 1, err[-3000:]
    report = lines[starts[0] :]
    assert len(report) <= 2 and all(h.startswith("hint: ") for h in report[1:]), err[-3000:]
    return report


def cut_checkpoint(folder: Path) -> Path:
    """The first third of a real (zip) checkpoint file."""
    whole = folder / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4096)}, "hyper_parameters": {}}, whole)
    cut = folder / "cut.ckpt"
    blob = whole.read_bytes()
    cut.write_bytes(blob[: len(blob) // 3])
    return cut


def corrupt_folder(root: Path) -> Path:
    """Two classes of good tones and one wav cut to a seventh of its data chunk."""
    for cls in ("a", "b"):
        for i in range(2):
            write_tone(root / cls / f"good{i}.wav", freq=300.0 + 200 * (cls == "b") + 10 * i)
    good = (root / "a" / "good0.wav").read_bytes()
    (root / "a" / "broken.wav").write_bytes(good[: len(good) // 7])
    return root


def case_args(kind: str, tmp: Path) -> tuple[list[str], int, list[str], str | None]:
    """(command line, exit status, texts the error line names, text of the hint or None)."""
    if kind == "yaml":
        bad = tmp / "bad.yaml"
        bad.write_text("data:\n  source: synthetic\n  batch_size:64\n")
        args = ["fit", "--config", KWS_RAW_CONFIG, "--config", str(bad)]
        return args, 2, [f"{bad}:3", "batch_size:64"], "`batch_size: 64`"
    if kind == "config_value":
        args = ["fit", *tiny_cli_args(tmp, 1), *QUIET, "--model.backbone.init_args.kernel_size"]
        return [*args, "4"], 1, ["model.backbone.init_args.kernel_size", "odd", "4"], None
    if kind == "checkpoint":
        cut = cut_checkpoint(tmp)
        args = ["test", *tiny_cli_args(tmp / "run", 1), *QUIET, "--ckpt_path", str(cut)]
        return args, 1, [str(cut), "truncated"], None
    if kind == "best_without_run":
        args = ["test", *tiny_cli_args(tmp / "empty", 1), *QUIET, "--ckpt_path", "best"]
        return args, 1, ["--ckpt_path best", str(tmp / "empty" / "summary.json")], None
    if kind == "data_file":
        root = corrupt_folder(tmp / "folder")
        args = [
            "fit",
            *tiny_cli_args(tmp / "run", 1, batch_size=2),
            *QUIET_FIT,
            *["--data.source", "folder", "--data.root", str(root), "--data.source_options", "{}"],
            *["--data.val_fraction", "0", "--data.test_fraction", "0"],
        ]
        return args, 1, [str(root / "a" / "broken.wav"), "truncated"], "data.on_error: skip"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["yaml", "config_value", "checkpoint", "best_without_run", "data_file"]
)
def test_bad_input_ends_in_one_clear_line(kind: str, tmp_path: Path) -> None:
    args, status, names, hint = case_args(kind, tmp_path)
    proc = run_cli(args)
    assert proc.returncode == status, proc.stderr[-3000:]
    report = error_report(proc)
    for name in names:
        assert name in report[0], report
    if hint is None:
        assert len(report) == 1, report
    else:
        assert len(report) == 2 and hint in report[1], report


def test_traceback_env_shows_the_traceback(tmp_path: Path) -> None:
    args, _, _, _ = case_args("checkpoint", tmp_path)
    proc = run_cli(args, traceback=True, module=True)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "CheckpointLoadError" in proc.stderr and "cut.ckpt" in proc.stderr
    assert "kwsnet: error:" not in proc.stderr


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["--model.head", "kwsnet.nn.heads.AMSoftmaxHead", "--model.head.init_args.scale", "-1"],
            "model.head.init_args.scale must be positive",
        ),
        # jsonargparse reports it as a Union ValueError whose __cause__ is Lightning's error
        (["--trainer.callbacks.mode", "maxx"], "trainer.callbacks[0] (ModelCheckpoint): `mode`"),
        (["--step_checkpoint.every_seconds", "-1"], "step_checkpoint: every_n_train_steps and"),
    ],
)
def test_constructor_errors_name_the_config_key(extra: list[str], message: str, tmp_path: Path):
    from kwsnet.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        main(["fit", *tiny_cli_args(tmp_path, 1), *QUIET, *extra])
    assert str(info.value).startswith(message), str(info.value)


class ExplodingAugment(nn.Module):
    """A training augment with a bug: not bad input, so it must keep its traceback."""

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise ValueError("a bug, not bad input")


def test_a_bug_keeps_its_traceback(tmp_path: Path, monkeypatch) -> None:
    """The console path (``main()`` reading ``sys.argv``) lets a plain ValueError through."""
    augment = ["--model.augment", f"{__name__}.ExplodingAugment"]
    argv = ["train.py", "fit", *tiny_cli_args(tmp_path, 1), *QUIET_FIT, *augment]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    with pytest.raises(ValueError, match="a bug") as info:
        main()
    assert not isinstance(info.value, KwsnetUserError)


@pytest.mark.parametrize(
    "key,value,choices",
    [
        ("model.backbone.init_args.norm_placement", "endd", ["per_conv", "end", "none"]),
        ("model.backbone.init_args.norm", "lyer", list(NORM_KINDS)),
        ("data.target", "kw", ["keyword", "speaker"]),
        ("data.on_error", "ignore", ["raise", "skip"]),
    ],
)
def test_closed_choice_fails_at_parse_time_listing_them(
    key: str, value: str, choices: list[str], tmp_path: Path
) -> None:
    args = ["fit", "--config", KWS_RAW_CONFIG, f"--{key}", value]
    with pytest.raises(UsageError) as info:
        main([*args, "--trainer.default_root_dir", str(tmp_path)])
    err = str(info.value)
    assert "\n" not in err and err.startswith(f"--{key}: {value!r} is not one of ")
    assert key.rsplit(".", 1)[-1] in err and value in err
    assert all(repr(c) in err for c in choices), err[-2000:]
    assert not (tmp_path / "checkpoints").exists()


def test_closed_choices_are_literal_types() -> None:
    """Each list of names is defined once, as a ``Literal`` the CLI checks at parse time."""
    from kwsnet.data.augment import TimeShift
    from kwsnet.data.features import MFCC, NORMALIZATIONS, LogMel
    from kwsnet.init.lsuv import LSUV, LSUV_ORDERS
    from kwsnet.models.raw_conv import NORM_PLACEMENTS, RawConv

    for fn, param, names in [
        (RawConv.__init__, "norm_placement", NORM_PLACEMENTS),
        (RawConv.__init__, "norm", tuple(NORM_KINDS)),
        (LogMel.__init__, "normalize", NORMALIZATIONS),
        (MFCC.__init__, "normalize", NORMALIZATIONS),
        (TimeShift.__init__, "mode", TimeShift.MODES),
        (LSUV.__init__, "order", LSUV_ORDERS),
    ]:
        hint = get_type_hints(fn)[param]
        assert getattr(hint, "__origin__", None) is Literal and get_args(hint) == names, param


@pytest.mark.parametrize(
    "text,line,hint",
    [
        ("data:\n  source: synthetic\n  batch_size:64\n", 3, "`batch_size: 64`"),
        ("data:\n\tbatch_size: 64\n", 2, "tabs"),
        ("model:\n  backbone:\n    init_args:\n      channels: [8, 16\n", 4, "`]`"),
    ],
)
def test_yaml_syntax_error_names_file_and_line(
    text: str, line: int, hint: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigSyntaxError, match=rf"bad\.yaml:{line}: not valid YAML") as info:
        main(["fit", "--config", KWS_RAW_CONFIG, "--config", str(bad)])
    report = error_lines(info.value)
    assert len(report) == 2 and hint in report[1], report


def test_flow_mapping_without_space_gets_the_yaml_hint(tmp_path: Path) -> None:
    """``{num_words:3}`` is valid YAML (one key ``num_words:3``, no value): the error names
    the unknown option, and the hint the missing space."""
    args = ["fit", *tiny_cli_args(tmp_path, 1), *QUIET, "--data.source_options", "{num_words:3}"]
    with pytest.raises(ValueError, match=r"data: unknown synthetic source_options") as info:
        main(args)
    assert error_lines(info.value)[1:] == [
        "hint: YAML needs `key: value` with a space after the colon: `num_words: 3`"
    ]


def test_export_typo_gets_one_line_and_a_suggestion(tmp_path: Path, capsys) -> None:
    """A command's unknown option is one line naming the closest of its own options (before
    a missing required one); the old hyphenated spellings still work, with a warning."""
    assert console(["export", "--fromat", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err == "kwsnet: error: --fromat: unknown option (did you mean --format?)\n"
    with pytest.raises(UsageError, match=r"--fromat: unknown option \(did you mean --format\?\)"):
        main(["export", "--fromat", "onnx"])  # the typo is reported before the missing --out
    with pytest.raises(UsageError, match=r"missing --out \(required\)"):
        main(["export", "--format", "onnx"])
    with pytest.raises(UsageError, match=r"--per_layr: unknown option \(did you mean --per_layer"):
        main(["parity", "--per_layr"])
    with pytest.raises(UsageError, match="--dtype int8 writes cnative or c-header, not onnx"):
        main(["export", "--dtype", "int8", "--format", "onnx", "--out", "x"])


def test_worker_errors_keep_only_the_message() -> None:
    """A DataLoader worker re-raises with its traceback in the message: one line is kept."""
    from kwsnet.data.record import DataFormatError

    exc = DataFormatError(
        "Caught DataFormatError in DataLoader worker process 0.\nOriginal Traceback (most "
        'recent call last):\n  File "x.py", line 1, in f\n    g()\n'
        "kwsnet.data.record.DataFormatError: /d/a.wav: truncated\n"
    )
    assert error_lines(exc) == ["kwsnet: error: /d/a.wav: truncated"]
