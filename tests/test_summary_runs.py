"""summary.json belongs to one run: a second fit into the same folder starts a fresh one.

Before the fix, ``write_summary`` merged into the file an earlier fit had left: a second fit
without test kept the first run's ``test/acc`` under the new seed, and ``--ckpt_path best`` in a
new process could resolve to the older run's checkpoint.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

from kwsnet.cli import main
from kwsnet.tracking import provenance

from .conftest import QUIET_FIT, REPO, tiny_cli_args


def _fit(root: Path, seed: int, test: bool) -> dict:
    args = ["fit", *tiny_cli_args(root, epochs=1), *QUIET_FIT, "--seed_everything", str(seed)]
    if test:
        args += ["--test_after_fit", "true"]
    main(args)
    return json.loads((root / "summary.json").read_text())


def test_second_fit_starts_a_fresh_summary_and_best_resolves_within_it(tmp_path: Path):
    first = _fit(tmp_path, seed=1, test=True)
    assert "test/acc" in first["metrics"] and first["seed"] == 1

    second = _fit(tmp_path, seed=2, test=False)
    assert second["seed"] == 2
    assert "test/acc" not in second["metrics"], "the first run's test metrics leaked in"
    # nothing is lost: the earlier run's summary is kept beside it
    prev = json.loads((tmp_path / "summary.prev.json").read_text())
    assert prev["seed"] == 1 and "test/acc" in prev["metrics"]

    # `best` names the second run's checkpoint: its run identity carries seed 2
    best = torch.load(second["best_checkpoint"], map_location="cpu", weights_only=True)
    assert best["kwsnet"]["seed"] == 2


def test_summary_records_provenance(tmp_path: Path):
    summary = _fit(tmp_path, seed=3, test=False)
    here = provenance()
    prov = summary["provenance"]
    for key in ("git_commit", "torch_version", "lightning_version", "kwsnet_version"):
        assert prov[key] == here[key]
    assert prov["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert prov["num_threads"] >= 1
    assert isinstance(prov["git_dirty"], (bool, type(None)))
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if head.returncode == 0:  # a checkout: the summary names its commit
        assert prov["git_commit"].removesuffix("-dirty") == head.stdout.strip()
        assert isinstance(prov["git_dirty"], bool)
