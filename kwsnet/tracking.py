"""Experiment tracking: the wandb logger kwsnet uses by default, run provenance, and the wandb
artifacts of a fit's best checkpoint and of every exported model."""

from __future__ import annotations

import functools
import math
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

# wandb's run file format is private: its reader lives with kwsnet's other private accesses
from kwsnet._compat import read_offline_run, started_wandb_run, wait_for_offline_run
from kwsnet._version import __version__

__all__ = [
    "EXPORT_ARTIFACT_TYPE",
    "MODEL_ARTIFACT_TYPE",
    "KwsWandbLogger",
    "checkpoint_wandb_run",
    "exported_artifact_name",
    "git_commit",
    "log_best_checkpoint",
    "log_exported_model",
    "logger_turned_off",
    "model_artifact_name",
    "wandb_run_info",
    "resolve_offline",
    "wandb_disabled",
    "read_offline_run",
    "wait_for_offline_run",
]


@functools.cache
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


# --- wandb artifacts: the best checkpoint of a fit, and every exported model ------------------
#
# Logged with ``wandb.Artifact`` + ``run.log_artifact``: Lightning's ``WandbLogger(log_model=...)``
# refuses offline runs, and logs whichever ``ModelCheckpoint`` saved last (kwsnet has three).
# An offline run writes the artifact as a record of its ``run-*.wandb`` file (files by path, no
# copy: ``policy="immutable"``), which ``wandb sync`` uploads with the run.

MODEL_ARTIFACT_TYPE = "model"
EXPORT_ARTIFACT_TYPE = "exported-model"


def model_artifact_name(run_id: str) -> str:
    """The name of a fit's best-checkpoint artifact: ``model-<wandb run id>`` (alias ``best``)."""
    return f"model-{run_id}"


def exported_artifact_name(run_id: str, fmt: str, dtype: str) -> str:
    """The name of an exported model's artifact: ``model-<training run id>-<format>-<dtype>``."""
    return f"{model_artifact_name(run_id)}-{fmt}-{dtype}"


def _live_run(logger: Any) -> Any | None:
    """The wandb run a ``WandbLogger`` has started and that logs (not ``mode="disabled"``)."""
    if logger is None or wandb_disabled() or not isinstance(logger, WandbLogger):
        return None
    run = started_wandb_run(logger)
    if run is None or getattr(run, "disabled", False) or not hasattr(run, "log_artifact"):
        return None
    return run


def wandb_run_info(logger: Any) -> dict[str, Any] | None:
    """The wandb run ``logger`` has started, as checkpoints record it (``kwsnet.wandb``): ``id``,
    ``project``, ``entity``, ``group``, ``offline`` and ``dir`` (the local run folder); ``None``
    without a live wandb run."""
    run = _live_run(logger)
    if run is None:
        return None
    return {
        "id": run.id,
        "project": run.project or None,
        "entity": run.entity or None,
        "group": run.group or None,
        "offline": bool(run.offline),
        "dir": os.path.dirname(run.dir) if getattr(run, "dir", None) else None,
    }


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def log_best_checkpoint(trainer: Any) -> str | None:
    """Log the fit's best checkpoint (``trainer.checkpoint_callback.best_model_path``) as the
    artifact ``model-<run id>`` of type ``model``, alias ``best`` (wandb adds ``latest``), to the
    trainer's wandb run; return its reference ``<project>/model-<run id>:best``, or ``None``
    (no live wandb run, ``WANDB_MODE=disabled``, no best checkpoint).

    Metadata: ``monitor``, ``mode``, ``score`` (the monitored value, ``None`` if not finite),
    ``epoch`` and ``global_step`` of the checkpoint, its ``checkpoint`` path, the ``run_dir``
    and ``provenance``.
    """
    run = _live_run(trainer.logger)
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") or ""
    if run is None or not best or not os.path.isfile(best):
        return None
    import torch
    import wandb

    # mmap: only the header is read, not the weights; weights_only: never unpickle objects
    state = torch.load(best, map_location="cpu", weights_only=True, mmap=True)
    metadata = {
        "monitor": getattr(ckpt, "monitor", None),
        "mode": getattr(ckpt, "mode", None),
        "score": _finite(getattr(ckpt, "best_model_score", None)),
        "epoch": int(state.get("epoch", -1)),
        "global_step": int(state.get("global_step", -1)),
        "checkpoint": os.path.abspath(best),
        "run_dir": os.path.abspath(trainer.default_root_dir),
        "provenance": provenance(),
    }
    name = model_artifact_name(run.id)
    artifact = wandb.Artifact(name, type=MODEL_ARTIFACT_TYPE, metadata=metadata)
    # by absolute path: `wandb sync` reads the file from there, from any folder
    artifact.add_file(os.path.abspath(best), name=os.path.basename(best), policy="immutable")
    run.log_artifact(artifact, aliases=["best"])
    return f"{run.project}/{name}:best"


def checkpoint_wandb_run(ckpt_path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The wandb run a checkpoint was trained in (``wandb_run_info`` as its ``kwsnet`` record
    holds it), or ``None``: no checkpoint, or a run without wandb."""
    if not ckpt_path or not os.path.isfile(ckpt_path):
        return None
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # the command that loads it reports an unreadable checkpoint
        return None
    info = ckpt.get("kwsnet", {}) if isinstance(ckpt, dict) else {}
    run = info.get("wandb") if isinstance(info, dict) else None
    return run if isinstance(run, dict) and run.get("id") else None


def logger_turned_off(overrides: Sequence[str]) -> bool:
    """Whether config overrides turn the logger off (``--trainer.logger false``; ``null`` is
    Lightning's default logger, not none); the last one given wins."""
    off = False
    for i, token in enumerate(overrides):
        key, eq, value = token.partition("=")
        if key != "--trainer.logger":
            continue
        if not eq:
            value = overrides[i + 1] if i + 1 < len(overrides) else ""
        off = value.strip().lower() == "false"
    return off


def log_exported_model(
    ckpt_path: str | os.PathLike | None,
    out: str | os.PathLike,
    fmt: str,
    dtype: str,
    overrides: Sequence[str] = (),
) -> tuple[str, str | None] | None:
    """Log an exported model file as an artifact of type ``exported-model``
    (``exported_artifact_name``: ``model-<training run id>-<format>-<dtype>``) when the
    checkpoint's run had wandb; return ``(artifact name, local run folder)`` or ``None``.

    The artifact goes to a new run with ``job_type="export"`` in the training run's project
    and group (its config names the source run and checkpoint), written beside the exported
    file (``<out's folder>/wandb/``), offline unless ``WANDB_MODE=online`` or an API key is
    set. (Resuming the training run is not possible offline: wandb starts a second run folder
    with the same id, which ``wandb sync`` would upload over the first.) Nothing is logged for
    a checkpoint without a wandb run, with ``WANDB_MODE=disabled``, or when ``overrides`` turn
    the logger off (``--trainer.logger false``).

    Metadata: ``format``, ``dtype``, ``bytes``, ``source_checkpoint`` (its path),
    ``source_run`` (the training run's id), ``source_project`` and ``provenance``.
    """
    if wandb_disabled() or logger_turned_off(overrides):
        return None
    source = checkpoint_wandb_run(ckpt_path)
    if source is None:
        return None
    import wandb

    offline = resolve_offline(None)
    folder = os.path.dirname(os.path.abspath(out))
    source_ckpt = os.path.abspath(str(ckpt_path))
    run = wandb.init(
        project=source.get("project") or "kwsnet",
        entity=source.get("entity") or None,
        group=source.get("group") or None,
        job_type="export",
        dir=folder,
        mode="offline" if offline else "online",
        config={
            "source_run": source["id"],
            "source_checkpoint": source_ckpt,
            "format": fmt,
            "dtype": dtype,
        },
        reinit="create_new",
    )
    run_dir = os.path.dirname(run.dir) if getattr(run, "dir", None) else None
    name = exported_artifact_name(source["id"], fmt, dtype)
    try:
        metadata = {
            "format": fmt,
            "dtype": dtype,
            "bytes": os.path.getsize(out),
            "source_checkpoint": source_ckpt,
            "source_run": source["id"],
            "source_project": source.get("project"),
            "provenance": provenance(),
        }
        artifact = wandb.Artifact(name, type=EXPORT_ARTIFACT_TYPE, metadata=metadata)
        path = os.path.abspath(out)
        artifact.add_file(path, name=os.path.basename(path), policy="immutable")
        run.log_artifact(artifact)
    finally:
        run.finish()
    if offline and run_dir:
        wait_for_offline_run(run_dir, timeout=60.0)
    return name, run_dir
