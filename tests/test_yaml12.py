"""kwsnet.yaml12: configs, flag values and sweep specs are read as YAML 1.2 (ruamel.yaml)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kwsnet import yaml12
from kwsnet.cli import main
from kwsnet.errors import ConfigSyntaxError
from kwsnet.sweep.spec import load_spec, plan_runs

from .conftest import KWS_RAW_CONFIG

# (YAML text, value): the YAML 1.2 core schema, where YAML 1.1 (PyYAML) reads octal 8, the
# sexagesimal 90, booleans and dates.
CORE_SCALARS = [
    ("010", 10),
    ("0o10", 8),
    ("0x10", 16),
    ("-010", -10),
    ("1:30", "1:30"),
    ("1:30:00", "1:30:00"),
    ("yes", "yes"),
    ("No", "No"),
    ("on", "on"),
    ("OFF", "OFF"),
    ("y", "y"),
    ("true", True),
    ("False", False),
    ("2026-12-06", "2026-12-06"),
    ("2026-12-06T10:30:00Z", "2026-12-06T10:30:00Z"),
    ("1e-3", 0.001),
    ("5.", 5.0),
    (".inf", float("inf")),
    ("~", None),
    ("null", None),
    ("=", "="),
    ("'010'", "010"),
]


@pytest.mark.parametrize("text,value", CORE_SCALARS)
def test_scalars_follow_yaml_12(text: str, value: Any) -> None:
    got = yaml12.load(f"v: {text}")["v"]
    assert got == value and type(got) is type(value), (text, got)
    assert yaml12.load_config(f"[{text}]") == [value]


def _types(node: Any) -> set[type]:
    if isinstance(node, dict):
        return {type(node)} | {t for k, v in node.items() for t in _types(k) | _types(v)}
    if isinstance(node, list):
        return {type(node)} | {t for v in node for t in _types(v)}
    return {type(node)}


def test_values_are_plain_python() -> None:
    text = (
        "a: {b: [1, 2.5, x, true, null, {c: d}]}\n"
        "e:\n  - f: 010\n    g: [yes, no]\n"
        "base: &base {lr: 1e-3}\nopt:\n  <<: *base\n  momentum: 0.9\n"
    )
    data = yaml12.load(text)
    assert _types(data) <= {dict, list, str, int, float, bool, type(None)}, _types(data)
    assert data["e"] == [{"f": 10, "g": ["yes", "no"]}]
    assert data["opt"] == {"lr": 0.001, "momentum": 0.9}  # merge keys still work


def test_repo_configs_hold_no_yaml_11_only_values() -> None:
    """Every shipped config and spec reads to plain values (no date, no ruamel type)."""
    repo = Path(KWS_RAW_CONFIG).parents[1]
    files = sorted((repo / "configs").rglob("*.yaml"))
    assert files
    for path in files:
        types = _types(yaml12.load(path.read_text()))
        assert not types & {datetime.date, datetime.datetime}, path
        assert all(t.__module__ == "builtins" for t in types), (path, types)
        # and nothing in it means another thing to a YAML 1.1 reader (bare yes/no/on/off, 010)
        assert yaml.safe_load(path.read_text()) == yaml12.load(path.read_text()), path


def test_a_key_set_twice_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(yaml12.MarkedYAMLError, match="duplicate key"):
        yaml12.load("a: 1\nb: 2\na: 3\n")
    bad = tmp_path / "twice.yaml"
    bad.write_text("data:\n  batch_size: 8\n  batch_size: 16\n")
    with pytest.raises(ConfigSyntaxError, match=r"twice\.yaml:3: not valid YAML: .*duplicate"):
        main(["fit", "--config", KWS_RAW_CONFIG, "--config", str(bad)])


def test_not_yaml_raises_yaml12_errors() -> None:
    with pytest.raises(yaml12.MarkedYAMLError) as info:
        yaml12.load("a: [1, 2\n")
    assert isinstance(info.value, yaml12.YAMLError)
    assert info.value.problem_mark is not None  # the CLI names the line from it
    with pytest.raises(yaml12.YAMLError, match="not a number"):
        yaml12.load("v: 0x_")  # matches the int pattern, has no digits


def test_cli_reads_configs_and_flags_as_yaml_12(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``kwsnet fit --config X --print_config``: 1.2 ints, words and strings in a config file,
    in ``--config`` text and in flag values."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "seed_everything: 010\n"
        "data:\n  batch_size: 0o10\n  words: [yes, no, on, off, 1:30, 2026-12-06]\n"
    )
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", KWS_RAW_CONFIG, "--config", str(cfg)]
    args += ["--trainer.max_epochs", "010", "--config", "trainer: {min_epochs: 0o3}"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--print_config"])
    assert exc.value.code in (0, None)
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["seed_everything"] == 10
    assert out["data"]["batch_size"] == 8
    assert out["data"]["words"] == ["yes", "no", "on", "off", "1:30", "2026-12-06"]
    assert out["trainer"]["max_epochs"] == 10 and out["trainer"]["min_epochs"] == 3


def test_sweep_spec_reads_yaml_12(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: t\nbase_config: {KWS_RAW_CONFIG}\nseeds: [010]\n"
        "grid:\n  data.batch_size: [010, 0o10]\n"
        "overrides:\n  data.words: [yes, 1:30, 2026-12-06]\n  trainer.max_epochs: 1\n"
    )
    loaded = load_spec(spec)
    assert loaded.seeds == [10]
    assert loaded.grid["data.batch_size"] == [10, 8]
    assert loaded.overrides["data.words"] == ["yes", "1:30", "2026-12-06"]
    argv = plan_runs(loaded, str(tmp_path / "out"))[0].argv
    assert argv[argv.index("--data.words") + 1] == '["yes", "1:30", "2026-12-06"]'
    assert argv[argv.index("--data.batch_size") + 1] == "10"
