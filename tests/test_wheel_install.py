"""kwsnet installed from its wheel, outside the checkout: the installed names are kwsnet's own
(``kwsnet.models``, no top-level ``models``), the configs and the C sources are package data,
and ``fit --config <name>`` → ``export`` → ``parity`` runs from another folder, building the
C runtime into the user cache (``XDG_CACHE_HOME``), never into ``site-packages``.

The wheel is built from a copy of the sources (a stale ``build/lib`` in the checkout cannot
leak into it) into a fresh venv that sees this venv's third-party packages through a ``.pth``
line (a plain path: the editable install's finder ``.pth`` is not run, so the checkout is not
importable there), with ``--no-deps`` and no network.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CNATIVE_SKIP = {".gitignore"}


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    """Run ``cmd``; fail the test with its output when it exits non-zero."""
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc.stdout


def _copy_sources(dest: Path) -> Path:
    """What the wheel is built from: pyproject.toml, README.md and the package folders."""
    ignore = shutil.ignore_patterns("build", "__pycache__", "*.egg-info", "*.pyc")
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("kwsnet", "models", "configs", "cnative"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


def _shipped(folder: str, suffixes: tuple[str, ...] | None = None) -> set[str]:
    """The checkout's files under ``folder`` (not ``build/``), relative to it."""
    base = REPO / folder
    out = set()
    for path in base.rglob("*"):
        rel = path.relative_to(base)
        if not path.is_file() or rel.parts[0] == "build" or "__pycache__" in rel.parts:
            continue
        if path.name in CNATIVE_SKIP or (suffixes and path.suffix not in suffixes):
            continue
        out.add(rel.as_posix())
    return out


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to build the C runtime from the installed sources")
    wheels = tmp_path / "wheels"
    src = _copy_sources(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env |= {
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONNOUSERSITE": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INDEX": "1",
        "KWSNET_TRACEBACK": "1",
    }
    (tmp_path / "home").mkdir()
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", wheels]
        + [src],
        tmp_path,
        env,
    )
    (wheel,) = wheels.glob("kwsnet-*.whl")

    # A fresh venv seeing this venv's packages (torch, lightning, ...), but not the checkout.
    vdir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(vdir)
    py = vdir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "_kwsnet_test_parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", wheel],
        tmp_path,
        env,
    )

    # What was installed: kwsnet's names only, the configs and the C sources included.
    (record,) = site.glob("kwsnet-*.dist-info/RECORD")
    with open(record, newline="") as f:
        files = {row[0] for row in csv.reader(f) if row}
    tops = {name.split("/", 1)[0] for name in files}
    assert not any(n.startswith("models/") for n in files), sorted(files)[:20]
    # the package, its metadata, and the console script (../../../bin/kwsnet)
    assert {t for t in tops if not t.endswith(".dist-info")} == {"kwsnet", ".."}, tops
    assert "kwsnet/models/raw_conv.py" in files
    assert "kwsnet/configs/kws_ds_cnn.yaml" in files
    configs = {f"kwsnet/configs/{rel}" for rel in _shipped("configs", (".yaml", ".yml"))}
    assert configs <= files, sorted(configs - files)
    c_sources = {f"kwsnet/_cnative/{rel}" for rel in _shipped("cnative")}
    assert c_sources <= files, sorted(c_sources - files)
    assert {"kwsnet/_cnative/Makefile", "kwsnet/_cnative/src/kwsn_model.c"} <= files
    assert not any(n.startswith("kwsnet/_cnative/build/") for n in files)

    # Run from a folder that is not the checkout (no configs/, no models/ there).
    work = tmp_path / "work"
    work.mkdir()
    probe = (
        "import importlib.util, kwsnet, kwsnet.models.raw_conv\n"
        "from kwsnet.export.runtime import CNATIVE_DIR, cnative_build_dir\n"
        "assert importlib.util.find_spec('models') is None\n"
        "print(kwsnet.__file__); print(CNATIVE_DIR); print(cnative_build_dir())\n"
    )
    pkg, cdir, build = _run([py, "-c", probe], work, env).split()
    assert Path(pkg).is_relative_to(site), pkg
    assert Path(cdir) == site / "kwsnet" / "_cnative"
    assert Path(build).is_relative_to(tmp_path / "cache" / "kwsnet"), build

    kwsnet = vdir / "bin" / "kwsnet"
    run_dir = tmp_path / "run"
    _run(
        [kwsnet, "fit", "--config", "kws_raw"]
        + ["--data.source_options", "{num_words: 3, num_speakers: 4, utterances: 10}"]
        + ["--trainer.max_epochs", "1", "--trainer.logger", "false"]
        + ["--trainer.default_root_dir", run_dir, "--trainer.enable_progress_bar", "false"],
        work,
        env,
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    out = tmp_path / "m.kwsn"
    _run([kwsnet, "export", "--ckpt_path", ckpt, "--format", "cnative", "--out", out], work, env)
    assert out.stat().st_size > 0
    _run([kwsnet, "parity", "--ckpt_path", ckpt, "--no_class_floor"], work, env)
    assert (Path(build) / "libkwsnet.so").is_file()
    assert not (site / "kwsnet" / "_cnative" / "build").exists()
    assert not (work / "runs").exists() and not (work / "cnative").exists()
