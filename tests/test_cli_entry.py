"""The ``kwsnet`` console script (``kwsnet.entry``) imports Lightning only for the LightningCLI
commands: ``kwsnet --help``, ``-h``, no arguments and an unknown command import neither
Lightning nor torch, and no other command's ``--help`` imports Lightning. Each check runs in a
fresh interpreter and looks at ``sys.modules`` (no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from kwsnet import commands, dispatch

from .conftest import REPO

# Runs kwsnet.entry.main on each argument list of argv[1] (JSON) in this one interpreter and
# prints, per list, its exit status and whether lightning / torch were imported by then.
PROBE = """
import json, sys
from kwsnet.entry import main
report = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["kwsnet", *args]
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    report.append([code, "lightning" in sys.modules, "torch" in sys.modules])
print("PROBE " + json.dumps(report))
"""

# make-streams' options are AudioDataModule's, a LightningDataModule.
NEEDS_LIGHTNING = {"make-streams"}


def probe(*argvs: list[str]) -> tuple[list[tuple[int, bool, bool]], subprocess.CompletedProcess]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argvs)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert lines, proc.stderr[-3000:]
    return [tuple(r) for r in json.loads(lines[-1][len("PROBE ") :])], proc


def test_help_and_an_unknown_command_import_neither_lightning_nor_torch() -> None:
    report, proc = probe(["--help"], ["-h"], [], ["fitt"])
    assert report == [(0, False, False), (0, False, False), (0, False, False), (2, False, False)]
    assert proc.stdout.count("usage: kwsnet <command> [options]") == 3
    assert all(f"  {c.name} " in proc.stdout for c in commands.COMMANDS)
    assert proc.stderr.strip().splitlines() == [
        "kwsnet: error: unknown command 'fitt' (did you mean fit?); `kwsnet --help` lists them"
    ]


@pytest.mark.parametrize(
    "command", [c.name for c in commands.COMMANDS if c.module and c.name not in NEEDS_LIGHTNING]
)
def test_a_commands_help_does_not_import_lightning(command: str) -> None:
    [(code, lightning, _)], proc = probe([command, "--help"])
    assert code in (0, None) and proc.stdout.startswith(f"usage: kwsnet {command} ")
    assert not lightning, f"kwsnet {command} --help imported lightning"


def test_a_lightning_command_runs_through_the_entry() -> None:
    [(code, lightning, _)], proc = probe(["validate", "--help"])
    assert code in (0, None) and lightning
    assert commands.find("validate").summary in proc.stdout  # type: ignore[union-attr]


def test_the_installed_script_is_the_light_entry() -> None:
    script = Path(sysconfig.get_path("scripts")) / "kwsnet"
    if not script.is_file():
        pytest.skip("kwsnet is not installed in this environment")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: kwsnet <command>")
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines() if "|" in ln}
    assert "kwsnet.entry" in imported, "the console script is not kwsnet.entry:main"
    assert "lightning" not in imported and "torch" not in imported


def test_user_errors_are_named_not_imported() -> None:
    """The console script catches kwsnet's input errors without importing their modules;
    ``kwsnet.cli.USER_ERRORS`` is the same list, imported."""
    from kwsnet.cli import USER_ERRORS
    from kwsnet.data.record import DataFormatError

    assert USER_ERRORS == dispatch.user_error_types(load=True)
    assert DataFormatError in USER_ERRORS and DataFormatError in dispatch.user_error_types()
    names = {f"{c.__module__}.{c.__qualname__}" for c in USER_ERRORS}
    assert names == {f"{m}.{n}" for m, n in dispatch.USER_ERROR_TYPES}
