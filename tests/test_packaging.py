"""kwsnet's installed names and shipped files, without building a wheel (test_wheel_install.py
does that): the package list in pyproject.toml, configs found by name, the old ``models.*``
class paths read as ``kwsnet.models.*`` with a FutureWarning (configs, command lines, the
config stored in a checkpoint, sweep content keys), and where the C runtime is built."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import pytest
import tomllib
import torch

from kwsnet import resources, yaml12
from kwsnet.cli import main
from kwsnet.export import runtime
from kwsnet.resources import packaged_config, resolve_config, resolve_config_args

REPO = Path(__file__).resolve().parents[1]
LEGACY = "models.raw_conv.RawConv"
CURRENT = "kwsnet.models.raw_conv.RawConv"


def test_pyproject_lists_every_package_under_kwsnet_names() -> None:
    """The explicit package list names every package in kwsnet/ and models/ under kwsnet's
    names (a new subpackage missing there would be left out of the wheel)."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "kwsnet").rglob("__init__.py")
    }
    on_disk |= {
        "kwsnet.models" + "".join(f".{x}" for x in p.parent.relative_to(REPO / "models").parts)
        for p in (REPO / "models").rglob("__init__.py")
    }
    assert on_disk <= listed, sorted(on_disk - listed)
    assert all(name == "kwsnet" or name.startswith("kwsnet.") for name in listed)
    assert tool["package-dir"] == {
        "kwsnet.models": "models",
        "kwsnet.configs": "configs",
        "kwsnet._cnative": "cnative",
    }


def test_configs_are_found_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    configs = resources.configs_dir()
    assert configs == REPO / "configs"  # the checkout's, under an editable install
    for name in ("kws_ds_cnn", "kws_ds_cnn.yaml", "configs/kws_ds_cnn.yaml"):
        assert packaged_config(name) == configs / "kws_ds_cnn.yaml", name
        assert resolve_config(name) == str(configs / "kws_ds_cnn.yaml"), name
    assert packaged_config("sweeps/smoke") == configs / "sweeps" / "smoke.yaml"
    for name in ("nope", "../configs/kws_raw", "/kws_raw", "", "sweeps"):
        assert packaged_config(name) is None, name
    # a path that exists wins; YAML text and unknown names are left to the parser
    (tmp_path / "kws_ds_cnn.yaml").write_text("model: {}\n")
    assert resolve_config("kws_ds_cnn.yaml") == "kws_ds_cnn.yaml"
    assert resolve_config("kws_ds_cnn") == str(configs / "kws_ds_cnn.yaml")
    for text in ("model: {}", "{model: {}}", "nope"):
        assert resolve_config(text) == text


def test_config_args_rewritten_to_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    raw = str(REPO / "configs" / "kws_raw.yaml")
    argv = ["fit", "--config", "kws_raw", "--config=kws_raw", "--data.root", "kws_raw"]
    assert resolve_config_args(argv) == ["fit", "--config", raw, f"--config={raw}"] + argv[4:]
    assert resolve_config_args({"model": {}}) == {"model": {}}
    monkeypatch.setattr(sys, "argv", ["kwsnet", *argv])
    assert resolve_config_args(None) is None
    assert sys.argv[1:] == ["fit", "--config", raw, f"--config={raw}", "--data.root", "kws_raw"]


def test_fit_config_by_name_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``kwsnet fit --config kws_ds_cnn`` from a folder without that file."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", "kws_ds_cnn", "--print_config"])
    assert exc.value.code in (0, None)
    assert "class_path: kwsnet.models.ds_cnn.DSCNN" in capsys.readouterr().out


def test_legacy_class_paths_are_upgraded_with_a_warning() -> None:
    text = f"""
model:
  backbone: {{class_path: {LEGACY}, init_args: {{channels: [4]}}}}
  head: {{class_path: kwsnet.nn.heads.LinearHead}}
trainer:
  callbacks: [{{class_path: models.ds_cnn.DSCNN}}, {{class_path: modelsx.Foo}}]
"""
    with pytest.warns(FutureWarning, match=r"is read as 'kwsnet\.models\.") as rec:
        data = yaml12.load_config(text)
    assert len(rec) == 2
    assert data["model"]["backbone"] == {"class_path": CURRENT, "init_args": {"channels": [4]}}
    assert data["model"]["head"]["class_path"] == "kwsnet.nn.heads.LinearHead"
    assert [c["class_path"] for c in data["trainer"]["callbacks"]] == [
        "kwsnet.models.ds_cnn.DSCNN",
        "modelsx.Foo",
    ]
    assert yaml12.load(text)["model"]["backbone"]["class_path"] == LEGACY  # sweeps read it as is
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert yaml12.load_config(f"a: {{class_path: {CURRENT}}}") == {"a": {"class_path": CURRENT}}


def test_old_config_file_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.yaml"
    old.write_text((REPO / "configs" / "kws_raw.yaml").read_text().replace(CURRENT, LEGACY))
    assert LEGACY in old.read_text()
    monkeypatch.chdir(tmp_path)
    with pytest.warns(FutureWarning, match="models.raw_conv.RawConv"):
        with pytest.raises(SystemExit):
            main(["fit", "--config", str(old), "--print_config"])
    out = capsys.readouterr().out
    assert f"class_path: {CURRENT}" in out and f"class_path: {LEGACY}" not in out


def test_old_checkpoint_config_loads(tmp_path: Path) -> None:
    """A checkpoint whose stored config names ``models.*`` (written before the rename) rebuilds
    its model from ``kwsnet.models``, with the FutureWarning."""
    from kwsnet.loading import build_from_config

    names = ["a", "b", "c"]
    config = REPO / "configs" / "kws_raw.yaml"
    model, _ = build_from_config(str(config), None, ["--data.class_names", '["a", "b", "c"]'])
    ckpt = {
        "state_dict": model.state_dict(),
        "kwsnet": {"config": config.read_text().replace(CURRENT, LEGACY)},
        "AudioDataModule": {"class_names": names},
    }
    path = tmp_path / "old.ckpt"
    torch.save(ckpt, path)
    with pytest.warns(FutureWarning, match="models.raw_conv.RawConv"):
        rebuilt, _ = build_from_config(None, str(path))
    assert type(rebuilt.backbone).__module__ == "kwsnet.models.raw_conv"
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k


def test_sweep_content_key_ignores_the_rename() -> None:
    """A sweep's ledger recorded with ``models.X`` keeps its content key after the rename."""
    from kwsnet.sweep.spec import SweepSpec, content_key

    spec = SweepSpec(name="s", base_config="b.yaml", seeds=[0])

    def base(path: str) -> dict:
        return {"model": {"backbone": {"class_path": path, "init_args": {"channels": [4]}}}}

    assert content_key(spec, base=base(LEGACY)) == content_key(spec, base=base(CURRENT))
    assert content_key(spec, base=base(LEGACY)) != content_key(spec, base=base("x.RawConv"))


def test_cnative_build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writable checkout builds in cnative/build; other sources (an installed copy, a
    read-only tree) in ``$XDG_CACHE_HOME/kwsnet/cnative-<version>-<source hash>``."""
    assert runtime.CNATIVE_DIR == REPO / "cnative"
    assert runtime.cnative_build_dir() == REPO / "cnative" / "build"
    src = tmp_path / "src"
    shutil.copytree(REPO / "cnative", src, ignore=shutil.ignore_patterns("build"))
    assert runtime.cnative_build_dir(src) == src / "build"
    monkeypatch.setattr(runtime, "_writable", lambda _d: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = runtime.cnative_build_dir(src)
    assert cached.parent == tmp_path / "cache" / "kwsnet"
    assert cached.name.startswith("cnative-0.") and len(cached.name.rsplit("-", 1)[1]) == 12
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runtime.cnative_build_dir(src).parent == tmp_path / "home" / ".cache" / "kwsnet"
    # other sources, another folder
    other = tmp_path / "other"
    shutil.copytree(src, other)
    (other / "src" / "kwsn_model.c").write_text("/* changed */\n")
    assert runtime.cnative_build_dir(other).name != runtime.cnative_build_dir(src).name
