"""The private framework attributes kwsnet uses (kwsnet/_compat.py) exist in the installed
versions: an upgrade that removes or changes one fails here, naming it."""

from __future__ import annotations

import re
from pathlib import Path

from kwsnet import _compat

from .conftest import REPO


def test_every_private_access_still_exists() -> None:
    problems = _compat.check_private_api()
    assert not problems, "private framework API changed: " + "; ".join(problems)


def test_should_update_logs_follows_log_every_n_steps(tmp_path: Path) -> None:
    """Through a real fit: train/loss_step lands on exactly the logging steps."""
    from kwsnet.cli import main

    from .conftest import QUIET_FIT, tiny_cli_args

    args = list(QUIET_FIT)
    args[args.index("--trainer.logger") + 1] = "lightning.pytorch.loggers.CSVLogger"
    main(
        [
            "fit",
            *tiny_cli_args(tmp_path, epochs=1, batch_size=8),  # 12 steps
            *args,
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.log_every_n_steps",
            "5",
        ]
    )
    rows = next(tmp_path.rglob("metrics.csv")).read_text().splitlines()
    header = rows[0].split(",")
    col, step = header.index("train/loss_step"), header.index("step")
    logged = [int(r.split(",")[step]) for r in rows[1:] if r.split(",")[col]]
    assert logged == [4, 9]


def test_private_accesses_live_only_in_compat() -> None:
    """No other module reaches into these private attributes, or reads wandb's run file
    records (``wandb_internal_pb2``), itself."""
    names = "defaults|update_count|results|logger_connector|experiment|combined_loader"
    pattern = re.compile(rf"""(\.|["'])_({names})\b|_ResultMetric|wandb_internal_pb2""")
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted((REPO / "kwsnet").rglob("*.py"))
        if path.name != "_compat.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and not line.lstrip().startswith("#")
    ]
    assert not offenders, f"private framework access outside kwsnet/_compat.py: {offenders}"
