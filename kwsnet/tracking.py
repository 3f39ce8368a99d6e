"""Experiment tracking: the wandb logger kwsnet uses by default, and run provenance."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

import kwsnet

__all__ = ["KwsWandbLogger", "git_commit", "resolve_offline"]


def git_commit() -> str:
    """The git commit of the kwsnet checkout (with ``-dirty`` if modified), or ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def resolve_offline(offline: bool | None) -> bool:
    """``offline=None`` means: offline unless ``WANDB_MODE=online`` or an API key is set."""
    if offline is not None:
        return offline
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode != "online"
    return not os.environ.get("WANDB_API_KEY")


class KwsWandbLogger(WandbLogger):
    """``WandbLogger`` that runs offline by default and records kwsnet's provenance.

    Offline runs are real run directories under ``<save_dir>/wandb/offline-run-*`` that
    ``wandb sync`` uploads later; no network is touched.

    Args:
        project: wandb project (default ``kwsnet``).
        save_dir: where the ``wandb/`` run folders go (default ``runs``).
        name / group / tags / job_type: wandb run name, group, tags and job type.
        offline: ``None`` (default) = offline unless ``WANDB_MODE=online`` or
            ``WANDB_API_KEY`` is set.
        **kwargs: passed to ``WandbLogger`` / ``wandb.init``.
    """

    def __init__(
        self,
        project: str = "kwsnet",
        save_dir: str = "runs",
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        job_type: str | None = None,
        offline: bool | None = None,
        **kwargs: Any,
    ) -> None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        extra = {k: v for k, v in {"group": group, "tags": tags, "job_type": job_type}.items() if v}
        super().__init__(
            name=name,
            project=project,
            save_dir=save_dir,
            offline=resolve_offline(offline),
            **extra,
            **kwargs,
        )

    @property
    def run_dir(self) -> str | None:
        """The local wandb run directory (``.../wandb/<offline-run-...>``)."""
        exp = self.experiment
        return os.path.dirname(exp.dir) if getattr(exp, "dir", None) else None


def provenance() -> dict[str, str]:
    """kwsnet version and git commit, stored with every run and checkpoint."""
    return {"kwsnet_version": kwsnet.__version__, "git_commit": git_commit()}
