"""Experiment tracking: the wandb logger kwsnet uses by default, and run provenance."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

import kwsnet

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
        save_dir: where the ``wandb/`` run folders go (default ``runs``).
        name / group / tags / job_type: wandb run name, group, tags and job type.
        offline: ``None`` (default) = offline unless ``WANDB_MODE=online`` or
            ``WANDB_API_KEY`` is set. ``WANDB_MODE=disabled`` wins over it: no run is made.
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
        "kwsnet_version": kwsnet.__version__,
        "git_commit": commit,
        "git_dirty": None if commit == "unknown" else commit.endswith("-dirty"),
        "torch_version": str(torch.__version__),
        "lightning_version": str(lightning.__version__),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "num_threads": int(torch.get_num_threads()),
    }


def _wandb_log_records(blob: bytes):
    """Yield the raw records of a ``.wandb`` transaction log (LevelDB-log framing).

    Layout: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each
    ``crc32 (4) | length (2) | type (1) | data``; types 1 full, 2 first, 3 middle, 4 last.
    """
    block, pos, parts = 32768, 7, b""
    while pos + 7 <= len(blob):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        length = int.from_bytes(blob[pos + 4 : pos + 6], "little")
        kind = blob[pos + 6]
        if pos + 7 + length > len(blob):
            return  # the tail record is still being written (a reader racing the writer)
        data = blob[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield data
        elif kind == 2:
            parts = data
        elif kind == 3:
            parts += data
        elif kind == 4:
            yield parts + data
            parts = b""
        elif kind == 0 and length == 0:
            pos += (block - pos % block) % block


def read_offline_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read an offline wandb run folder back: ``{"config", "history", "summary"}``.

    Values are decoded from the run's ``run-*.wandb`` file, the same records ``wandb sync``
    uploads, so tests and users can check what a run logged without a server. ``complete``
    says whether the run's exit record has been written (see ``wait_for_offline_run``).
    """
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    files = list(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{run_dir} holds no run-*.wandb file")
    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "complete": False}

    def key(item: Any) -> str:
        return item.key or "/".join(item.nested_key)

    from google.protobuf.message import DecodeError

    for i, data in enumerate(_wandb_log_records(files[0].read_bytes())):
        rec = pb.Record()
        try:
            rec.ParseFromString(data)
        except DecodeError as exc:
            raise ValueError(f"{files[0]}: record {i} is not a valid wandb record: {exc}") from exc
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["config"].update({key(i): json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({key(i): json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            out["history"].append({key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "exit":
            out["complete"] = True
    return out


def wait_for_offline_run(run_dir: str | os.PathLike, timeout: float = 60.0) -> bool:
    """Wait until wandb's writer has finished an offline run's file (its exit record is in).

    ``run.finish()`` returns before the wandb service has flushed everything to disk; a reader
    right after it sees a truncated history. Returns whether the run completed in time.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            if read_offline_run(run_dir)["complete"]:
                return True
        except (FileNotFoundError, ValueError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
