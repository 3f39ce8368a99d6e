"""Experiment tracking: the wandb logger kwsnet uses by default, and run provenance."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

# wandb's run file format is private: its reader lives with kwsnet's other private accesses
from kwsnet._compat import read_offline_run, wait_for_offline_run
from kwsnet._version import __version__

__all__ = [
    "KwsWandbLogger",
    "git_commit",
    "resolve_offline",
    "wandb_disabled",
    "read_offline_run",
    "wait_for_offline_run",
]


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


def wandb_disabled() -> bool:
    """Whether the user turned wandb off (``WANDB_MODE=disabled``, or wandb's older spelling
    ``WANDB_DISABLED=true``): kwsnet then writes no run files and makes no wandb calls."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    return mode == "disabled" or os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1")


def resolve_offline(offline: bool | None) -> bool:
    """``offline=None`` means: offline unless ``WANDB_MODE=online`` or an API key is set.
    Never offline when wandb is disabled (Lightning's offline switch would overwrite
    ``WANDB_MODE=disabled`` with ``dryrun`` and write a run after all)."""
    if wandb_disabled():
        return False
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
        save_dir: where the ``wandb/`` run folders go; ``None`` (default): the run dir
            (``trainer.default_root_dir``) under the CLI, else ``runs``.
        name / group / tags / job_type: wandb run name, group, tags and job type.
        offline: ``None`` (default) = offline unless ``WANDB_MODE=online`` or
            ``WANDB_API_KEY`` is set. ``WANDB_MODE=disabled`` wins over it: no run is made.
        **kwargs: passed to ``WandbLogger`` / ``wandb.init``.
    """

    def __init__(
        self,
        project: str = "kwsnet",
        save_dir: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        job_type: str | None = None,
        offline: bool | None = None,
        **kwargs: Any,
    ) -> None:
        save_dir = save_dir or "runs"
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        extra = {k: v for k, v in {"group": group, "tags": tags, "job_type": job_type}.items() if v}
        if wandb_disabled():
            kwargs["mode"] = "disabled"
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


def provenance() -> dict[str, Any]:
    """What made a result: stored in summary.json, every sweep ledger record, the wandb run
    config (``kwsnet``) and every checkpoint.

    Keys: ``git_commit`` (the sha, with ``-dirty`` when tracked files were modified;
    ``unknown`` outside a checkout), ``git_dirty`` (bool, ``None`` when unknown),
    ``kwsnet_version``, ``torch_version``, ``lightning_version``, ``cpu_capability`` (the
    kernel path torch runs: ``default`` / ``AVX2`` / ``AVX512`` ..., which
    ``ATEN_CPU_CAPABILITY`` can lower) and ``num_threads`` (``torch.get_num_threads()``).
    Two results with different values here may differ for that reason alone.
    """
    import lightning
    import torch

    commit = git_commit()
    return {
        "kwsnet_version": __version__,
        "git_commit": commit,
        "git_dirty": None if commit == "unknown" else commit.endswith("-dirty"),
        "torch_version": str(torch.__version__),
        "lightning_version": str(lightning.__version__),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "num_threads": int(torch.get_num_threads()),
    }
