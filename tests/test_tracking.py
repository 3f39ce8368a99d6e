"""wandb conventions: ``WANDB_MODE=disabled`` is honoured end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kwsnet.cli import main
from kwsnet.tracking import KwsWandbLogger, resolve_offline

from .conftest import QUIET_FIT, tiny_cli_args


def test_wandb_mode_disabled_writes_no_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_offline(None) is False and resolve_offline(True) is False
    root = tmp_path / "run"
    no_logger = QUIET_FIT[QUIET_FIT.index("--trainer.logger") + 2 :]  # keep the config's wandb
    main(
        [
            "fit",
            *tiny_cli_args(root, epochs=1),
            *no_logger,
            "--trainer.logger.init_args.save_dir",
            str(root),
        ]
    )
    assert (root / "summary.json").is_file()
    assert json.loads((root / "summary.json").read_text())["metrics"]["train/loss"] > 0
    assert not list(tmp_path.rglob("*.wandb")) and not (root / "wandb").exists()
    # Lightning's offline switch would have rewritten it to "dryrun" for the whole process
    assert os.environ["WANDB_MODE"] == "disabled"
    assert not KwsWandbLogger(save_dir=str(tmp_path / "x"))._offline
