"""Every use of a private Lightning / torchmetrics / wandb attribute, in one place.

kwsnet reaches inside its frameworks where their public API cannot do the job: an exact
mid-epoch resume (the epoch's running means, the metric states), logging only on the steps the
trainer writes, LightningCLI hooks with no public seam, closing a wandb run only if one was
started, and reading wandb's offline run files (``run-*.wandb``) back. Each access is a small
function here, and ``PRIVATE_API`` lists them all with what kwsnet needs them for.
``tests/test_compat.py`` checks each against the installed versions and names the one that an
upgrade broke; ``pyproject.toml`` bounds the versions to those tested.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

__all__ = [
    "PRIVATE_API",
    "CLI_OVERRIDES",
    "check_private_api",
    "cli_hparams_given",
    "epoch_results",
    "eval_dataloaders",
    "epoch_mean_entries",
    "metric_states",
    "mark_metric_updated",
    "metric_update_count",
    "set_metric_update_count",
    "should_update_logs",
    "started_wandb_run",
    "read_offline_run",
    "wait_for_offline_run",
]

# LightningCLI methods ``kwsnet.cli.KwsCLI`` and ``kwsnet.config_cli.ConfigCLI`` override
# (name → the parameters it relies on).
CLI_OVERRIDES: dict[str, tuple[str, ...]] = {
    "_parse_ckpt_path": (),
    "_instantiate_trainer": ("config", "callbacks"),
    "_run_subcommand": ("subcommand",),
    "_prepare_subcommand_kwargs": ("subcommand",),
    "_get": ("config", "key"),
}

# what is used → why kwsnet needs it
PRIVATE_API: dict[str, str] = {
    "FitLoop.epoch_loop._results": "the epoch's logged running means, saved for an exact resume",
    "logger_connector.result._ResultMetric (value, cumulated_batch_size, meta.on_epoch)": (
        "the running sum and count of one logged epoch mean"
    ),
    "torchmetrics.Metric._defaults": "the names of a metric's states, saved for an exact resume",
    "torchmetrics.Metric._update_count": "a restored metric counts as updated (compute() works)",
    "Trainer._logger_connector.should_update_logs": "log step values only on logging steps",
    "WandbLogger._experiment": "close the wandb run only if this logger started one",
    "_EvaluationLoop._combined_loader": (
        "the running val/test loop's dataloaders (its sampler's DDP padding is left out of the "
        "statistics); Trainer.val_dataloaders covers only fit's val loop"
    ),
    "hparams_mixin._given_hyperparameters": (
        "whether LightningCLI is instantiating the module (its config, not the built objects, "
        "is then saved as hparams)"
    ),
    "wandb's run-*.wandb file (LevelDB-log framing of wandb_internal_pb2.Record)": (
        "read an offline run back (its config, history, summary and artifacts) and wait until "
        "wandb has flushed it (read_offline_run, wait_for_offline_run): wandb documents no "
        "reader"
    ),
    **{f"LightningCLI.{name}": "KwsCLI overrides it" for name in CLI_OVERRIDES},
}


def epoch_results(trainer: pl.Trainer) -> Any:
    """The training epoch's ``_ResultCollection`` (a dict of key → ``_ResultMetric``)."""
    return trainer.fit_loop.epoch_loop._results


def epoch_mean_entries(trainer: pl.Trainer) -> dict[str, Any]:
    """The ``_ResultMetric`` entries of the training epoch that accumulate an epoch mean
    (``value`` is the running sum, ``cumulated_batch_size`` the count)."""
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric

    return {
        key: m
        for key, m in epoch_results(trainer).items()
        if isinstance(m, _ResultMetric) and m.meta.on_epoch and hasattr(m, "cumulated_batch_size")
    }


def eval_dataloaders(trainer: pl.Trainer, stage: str) -> Any:
    """The dataloader(s) of the ``val`` or ``test`` loop now running (``validate`` after
    ``fit`` on one trainer: the validate loop's, not fit's); ``None`` before it has them."""
    from lightning.pytorch.trainer.states import TrainerFn

    if stage == "test":
        return trainer.test_dataloaders
    if trainer.state.fn == TrainerFn.VALIDATING:
        loop: Any = trainer.validate_loop
    else:
        loop = trainer.fit_loop.epoch_loop.val_loop
    combined = getattr(loop, "_combined_loader", None)
    return combined.iterables if combined is not None else None


def metric_states(metric: Any) -> dict[str, Any]:
    """A torchmetrics ``Metric``'s states by name (tensors or lists)."""
    return {k: getattr(metric, k) for k in metric._defaults}


def mark_metric_updated(metric: Any) -> None:
    """Make a metric whose states were set by hand count as updated, so ``compute()`` runs
    without torchmetrics' 'compute called before update' warning."""
    metric._update_count = max(metric._update_count, 1)


def metric_update_count(metric: Any) -> int:
    """How many times a torchmetrics ``Metric`` was updated (saved before a step that may be
    undone: ``DivergenceGuard``'s skip)."""
    return int(metric._update_count)


def set_metric_update_count(metric: Any, count: int) -> None:
    """Put back a ``Metric``'s update count (with its states restored by hand)."""
    metric._update_count = int(count)


def should_update_logs(trainer: pl.Trainer) -> bool:
    """Whether the trainer writes this training step's logged values to the logger."""
    return bool(trainer._logger_connector.should_update_logs or trainer.fast_dev_run)


def started_wandb_run(logger: Any) -> Any | None:
    """The wandb run a ``WandbLogger`` has started, or ``None`` (reading ``logger.experiment``
    would start one just to close it)."""
    return getattr(logger, "_experiment", None)


def cli_hparams_given() -> bool:
    """Whether the module being built is instantiated by LightningCLI, which then hands
    ``save_hyperparameters`` its config (``class_path``/``init_args`` dicts and plain values)
    in place of the built objects, with the instantiator ``load_from_checkpoint`` uses."""
    from lightning.pytorch.core.mixins import hparams_mixin

    return hparams_mixin._given_hyperparameters.get() is not None


def check_private_api() -> list[str]:
    """What of ``PRIVATE_API`` the installed versions no longer provide (empty: all there)."""
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.loggers import WandbLogger
    from torchmetrics import Metric

    problems: list[str] = []
    try:
        from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric
    except ImportError as exc:
        problems.append(f"logger_connector.result._ResultMetric: {exc}")
    else:
        from lightning.pytorch.trainer.connectors.logger_connector.result import _Metadata, _Sync

        meta = _Metadata(fx="training_step", name="probe", on_step=False, on_epoch=True)
        meta.sync = _Sync()  # type: ignore[assignment]
        m = _ResultMetric(meta, is_tensor=True)
        m.update(torch.tensor(2.0), 4)
        if not (m.meta.on_epoch and hasattr(m, "cumulated_batch_size") and float(m.value) == 8.0):
            problems.append("_ResultMetric no longer keeps value (sum) and cumulated_batch_size")
    loop = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    if not hasattr(loop.fit_loop.epoch_loop, "_results"):
        problems.append("FitLoop.epoch_loop._results is gone")
    for eval_loop in (loop.validate_loop, loop.fit_loop.epoch_loop.val_loop):
        if not hasattr(eval_loop, "_combined_loader"):
            problems.append(f"{type(eval_loop).__name__}._combined_loader is gone")
    connector = getattr(loop, "_logger_connector", None)
    if connector is None or not hasattr(type(connector), "should_update_logs"):
        problems.append("Trainer._logger_connector.should_update_logs is gone")

    class _Probe(Metric):
        def __init__(self) -> None:
            super().__init__()
            self.add_state("n", torch.zeros(()), dist_reduce_fx="sum")

        def update(self) -> None:
            self.n += 1

        def compute(self) -> torch.Tensor:
            return self.n

    probe = _Probe()
    if list(getattr(probe, "_defaults", {})) != ["n"]:
        problems.append("torchmetrics.Metric._defaults no longer lists the states")
    if not isinstance(getattr(probe, "_update_count", None), int):
        problems.append("torchmetrics.Metric._update_count is gone")
    if "_experiment" not in vars(WandbLogger(offline=True, save_dir=None, project="probe")):
        problems.append("WandbLogger._experiment is gone")
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import (
            _given_hyperparameters,
            _given_hyperparameters_context,
        )
    except ImportError as exc:
        problems.append(f"hparams_mixin._given_hyperparameters: {exc}")
    else:
        with _given_hyperparameters_context({}, "probe"):
            inside = _given_hyperparameters.get()
        if not isinstance(inside, dict) or _given_hyperparameters.get() is not None:
            problems.append(
                "hparams_mixin._given_hyperparameters no longer holds the CLI's hparams"
            )
    for name, params in CLI_OVERRIDES.items():
        method = getattr(LightningCLI, name, None)
        if method is None:
            problems.append(f"LightningCLI.{name} is gone")
            continue
        have = list(inspect.signature(method).parameters)[1:]
        if list(params) != have[: len(params)]:
            problems.append(f"LightningCLI.{name} takes {have}, KwsCLI expects {list(params)}")
    problems += _wandb_record_problems()
    return problems


# wandb's offline run file (``run-*.wandb``): wandb documents no reader for it, so kwsnet parses
# its framing and its protobuf records itself. ``_WANDB_RECORD_FIELDS`` is every field read.
_WANDB_LOG_IDENT = b":W&B"
_WANDB_HEADER = 7  # ident (4), magic (2), version (1)
_WANDB_RECORD_KINDS = ("run", "config", "history", "summary", "exit", "artifact")
_WANDB_RECORD_FIELDS = (
    *(
        f"{items}.{leaf}"
        for items in ("run.config.update", "config.update", "history.item", "summary.update")
        for leaf in ("key", "nested_key", "value_json")
    ),
    *(
        f"artifact.{leaf}"
        for leaf in ("name", "type", "aliases", "metadata", "digest", "manifest.manifest_file_path")
    ),
    *(f"artifact.manifest.contents.{leaf}" for leaf in ("path", "digest", "size", "local_path")),
)


def _wandb_log_records(blob: bytes) -> Iterator[bytes]:
    """Yield the raw records of a ``.wandb`` transaction log (LevelDB-log framing).

    Layout: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each
    ``crc32 (4) | length (2) | type (1) | data``; types 1 full, 2 first, 3 middle, 4 last.
    """
    block, pos, parts = 32768, _WANDB_HEADER, b""
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


def _read_wandb_run(run_dir: str | os.PathLike) -> tuple[dict[str, Any], int, int]:
    """``read_offline_run``'s result, the number of records decoded and the file's size.

    Raises ``FileNotFoundError`` without a ``run-*.wandb`` file, ``ValueError`` when the file
    does not start as a wandb log or a record does not decode.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    files = list(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{run_dir} holds no run-*.wandb file")
    blob = files[0].read_bytes()
    ident = blob[: len(_WANDB_LOG_IDENT)]
    if ident != _WANDB_LOG_IDENT[: len(ident)]:
        raise ValueError(f"{files[0]} does not start with {_WANDB_LOG_IDENT!r}: not a wandb log")
    out: dict[str, Any] = {
        "config": {},
        "history": [],
        "summary": {},
        "artifacts": [],
        "complete": False,
    }

    def key(item: Any) -> str:
        return item.key or "/".join(item.nested_key)

    n = 0
    for n, data in enumerate(_wandb_log_records(blob), 1):
        rec = pb.Record()
        try:
            rec.ParseFromString(data)
        except DecodeError as exc:
            raise ValueError(
                f"{files[0]}: record {n - 1} is not a valid wandb record: {exc}"
            ) from exc
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["config"].update({key(i): json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({key(i): json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            out["history"].append({key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "artifact":
            out["artifacts"].append(_artifact_record(rec.artifact))
        elif kind == "exit":
            out["complete"] = True
    return out, n, len(blob)


def _artifact_record(art: Any) -> dict[str, Any]:
    """An artifact record of a run file (``wandb_internal_pb2.ArtifactRecord``) as a dict."""
    manifest = art.manifest
    return {
        "name": art.name,
        "type": art.type,
        "aliases": list(art.aliases),
        "metadata": json.loads(art.metadata) if art.metadata else {},
        "digest": art.digest,
        # each file: its name in the artifact, md5 digest (base64), size and local path
        "files": [
            {"path": e.path, "digest": e.digest, "size": e.size, "local_path": e.local_path}
            for e in manifest.contents
        ],
        # a manifest of over 100,000 files is written to this file in place of ``files``
        "manifest_file": manifest.manifest_file_path or None,
    }


def read_offline_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read an offline wandb run folder back: ``{"config", "history", "summary", "artifacts",
    "complete"}``.

    Values are decoded from the run's ``run-*.wandb`` file, the same records ``wandb sync``
    uploads, so tests and users can check what a run logged without a server. ``artifacts``
    lists the logged artifacts in order, each ``{"name", "type", "aliases", "metadata",
    "digest", "files", "manifest_file"}`` (``files``: ``path``, ``digest``, ``size``,
    ``local_path`` of each file). ``complete`` says whether the run's exit record has been
    written (see ``wait_for_offline_run``).
    """
    return _read_wandb_run(run_dir)[0]


def wait_for_offline_run(
    run_dir: str | os.PathLike, timeout: float = 60.0, unreadable_for: float = 2.0
) -> bool:
    """Wait until wandb's writer has finished an offline run's file (its exit record is in).

    ``run.finish()`` returns before the wandb service has flushed everything to disk; a reader
    right after it sees a truncated history. Returns whether the run completed in time.

    It gives up early, with a warning, when the file cannot be read at all (a wandb that
    changed its format): at once when the installed wandb's records lack a field it reads, and
    when the file, unchanged in size for ``unreadable_for`` seconds, does not start as a wandb
    log, holds a record that does not decode, or has no whole record past its header.
    """
    problems = _wandb_record_problems()
    if problems:
        warnings.warn(
            f"cannot read wandb's run files ({'; '.join(problems)}): not waiting for {run_dir}",
            stacklevel=2,
        )
        return False
    deadline = time.monotonic() + timeout
    since: float | None = None  # since when the file has been unreadable at this size
    size = -1
    while True:
        unreadable: str | None = None
        try:
            run, records, new_size = _read_wandb_run(run_dir)
            if run["complete"]:
                return True
            if records == 0 and new_size > _WANDB_HEADER + 7:
                unreadable = "no whole record"
        except FileNotFoundError:
            new_size = -1
        except ValueError as exc:
            unreadable, new_size = str(exc), _run_file_size(run_dir)
        now = time.monotonic()
        if unreadable is None:
            since = None
        elif since is None or new_size != size:
            since = now
        elif now - since >= unreadable_for:
            warnings.warn(
                f"{run_dir}: the run file cannot be read ({unreadable}); has wandb changed its "
                "format? (kwsnet/_compat.py reads it) Not waiting for the run to finish.",
                stacklevel=2,
            )
            return False
        size = new_size
        if now > deadline:
            return False
        time.sleep(0.2)


def _run_file_size(run_dir: str | os.PathLike) -> int:
    """The size of the run's ``run-*.wandb`` file, -1 without one."""
    for f in Path(run_dir).glob("run-*.wandb"):
        try:
            return f.stat().st_size
        except OSError:
            return -1
    return -1


@functools.cache
def _wandb_record_problems() -> tuple[str, ...]:
    """What the ``.wandb`` reader needs of wandb's ``Record`` protobuf and the installed wandb
    lacks (empty: all there)."""
    try:
        from wandb.proto import wandb_internal_pb2 as pb

        desc = pb.Record.DESCRIPTOR
    except (ImportError, AttributeError) as exc:
        return (f"wandb.proto.wandb_internal_pb2.Record: {exc}",)
    problems = []
    oneof = desc.oneofs_by_name.get("record_type")
    kinds = {f.name for f in oneof.fields} if oneof is not None else set()
    missing = [k for k in _WANDB_RECORD_KINDS if k not in kinds]
    if missing:
        problems.append(f"wandb Record.record_type has no {missing}")
    for path in _WANDB_RECORD_FIELDS:
        msg = desc
        for part in path.split("."):
            field = msg.fields_by_name.get(part) if msg is not None else None
            if field is None:
                problems.append(f"wandb Record has no {path}")
                break
            msg = field.message_type
    return tuple(problems)
