"""The kwsnet command line: ``main`` (``train.py``) and ``console`` run every subcommand.

``fit``/``validate``/``test``/``predict`` are LightningCLI over ``ClassifierModule`` and
``AudioDataModule`` (``KwsCLI``), configured by YAML in ``configs/``; every other command is a
module of ``kwsnet.commands`` (the table of all of them, with the line ``kwsnet --help`` shows).
All parse with jsonargparse, spell flags with underscores (``--ckpt_path``) and report bad input
the same way: one line, ``kwsnet: error: ...`` (``kwsnet.dispatch``, which runs the commands
without Lightning; the ``kwsnet`` console script, ``kwsnet.entry``, imports this module only
for the LightningCLI ones).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from typing import Any

import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from kwsnet import commands, dispatch
from kwsnet._compat import started_wandb_run
from kwsnet.callbacks.progress import KwsProgressBar
from kwsnet.checkpointing import AtomicCheckpointIO, CheckpointLoadError, ResumeState
from kwsnet.config_cli import ConfigCLI
from kwsnet.data.datamodule import checkpoint_class_names
from kwsnet.errors import CheckpointNotFoundError, OutputFolderError
from kwsnet.loading import build_from_config
from kwsnet.loading import first_sentence as _reason
from kwsnet.parsing import PARSER_MODE
from kwsnet.summary import (
    start_summary,
    write_confusion_matrix,
    write_predictions,
    write_summary,
)
from kwsnet.tracking import (
    KwsWandbLogger,
    log_best_checkpoint,
    provenance,
    wait_for_offline_run,
    wandb_run_info,
)

__all__ = ["KwsCLI", "main", "console", "run_lightning", "build_from_config", "USER_ERRORS"]

# Bad input, reported by the console script as one line (kwsnet.errors); anything else is a bug
# and keeps its traceback. QuantError is an ExportError; the C runtime's "cannot build or load
# it here" (CRuntimeUnavailableError), a missing input or output folder, a sweep spec, a lock
# and mixed provenance are KwsnetUserErrors. The list is kwsnet.dispatch.USER_ERROR_TYPES.
USER_ERRORS: tuple[type[BaseException], ...] = dispatch.user_error_types(load=True)


class KwsSaveConfig(SaveConfigCallback):
    """Save the resolved config to the run dir, the checkpoint and the logger (wandb too)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config_text = self.parser.dump(self.config, skip_none=False)
        pl_module.run_info = {
            "config": config_text,
            "seed": self.config.get("seed_everything"),
            **provenance(),
        }
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.logger is None:
            return
        info = dict(pl_module.run_info)
        resolved = yaml.safe_load(info.pop("config"))
        # Every CLI override, the drawn seed, version and commit, as run config.
        trainer.logger.log_hyperparams({**resolved, "kwsnet": info})
        # Checkpoints name their wandb run (`kwsnet export` logs the exported file against it).
        run = wandb_run_info(trainer.logger)
        if run is not None:
            pl_module.run_info["wandb"] = run


class KwsCLI(ConfigCLI):
    """The command line: ``ConfigCLI`` (kwsnet's config: links, callback groups, errors that
    name the key) plus a run's behaviour: checkpoint checks, saved config, end-of-run reports."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", KwsSaveConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        # `kwsnet fit --help` starts with kwsnet's line for the command, not Lightning's
        # docstring (cut mid-sentence).
        described = {
            c.name: {"description": c.summary} for c in commands.COMMANDS if c.module is None
        }
        kwargs.setdefault("parser_kwargs", {"parser_mode": PARSER_MODE, **described})
        self._argv: list[str] = []
        super().__init__(args=args, run=run, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # A checkpoint that cannot be read is named before it is loaded (torch's zip reader
        # names no file).
        self._argv = (
            list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        )
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            _check_ckpt_path(self.config[subcommand].get("ckpt_path"))

    def _given(self, key: str, below: bool = True) -> bool:
        """Whether the command line sets ``key`` (``--key``, ``--key=...``, or with ``below``
        a key under it)."""
        flag = f"--{key}"
        starts = (f"{flag}=", f"{flag}.") if below else (f"{flag}=",)
        return any(t == flag or t.startswith(starts) for t in self._argv)

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(str(self.subcommand), self.config)
        if self.subcommand == "predict":
            # predict names the classes from the checkpoint, so it needs no dataset
            if cfg.data.class_names is None and cfg.ckpt_path:
                cfg.data.class_names = checkpoint_class_names(cfg.ckpt_path)
            # and logs nothing: no wandb run unless the command line asks for a logger
            if not self._given("trainer.logger", below=False):
                cfg.trainer.logger = False
        # `wandb agent` starts every run with the same config: give each its own run dir.
        run_id = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
        if run_id:
            cfg.trainer.default_root_dir = os.path.join(
                cfg.trainer.default_root_dir or "runs", run_id
            )
        self._wandb_follows_run_dir(cfg, forced=bool(run_id))

    def _wandb_follows_run_dir(self, cfg: Any, forced: bool) -> None:
        """A wandb logger writes into the run dir: its ``save_dir`` is the run dir when unset,
        and follows ``--trainer.default_root_dir`` given on the command line (or a `wandb
        agent` run's own dir, ``forced``) unless the command line sets the ``save_dir`` too."""
        logger = cfg.trainer.logger
        init_args = getattr(logger, "init_args", None)
        if init_args is None or "save_dir" not in init_args:
            return
        if not forced and not str(getattr(logger, "class_path", "")).endswith("WandbLogger"):
            return
        moved = forced or (
            self._given("trainer.default_root_dir")
            and not self._given("trainer.logger.init_args.save_dir")
            and not self._given("trainer.logger.save_dir")
        )
        if init_args.save_dir is None or moved:
            init_args.save_dir = cfg.trainer.default_root_dir or os.getcwd()

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        # Lightning's own default bar redraws 100 times a second (~10 % of a small model's
        # throughput); use the throttled one unless progress bars are off or one is configured.
        given = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(cb, ProgressBar) for cb in given
        ):
            callbacks = [*callbacks, KwsProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def after_instantiate_classes(self) -> None:
        if self.subcommand is not None:  # a run writes outputs; build_from_config does not
            _check_writable(self.trainer.default_root_dir)
        # Checkpoints go to a fixed folder under the run dir, so `--ckpt_path last` finds them.
        for cb in self.trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = os.path.join(self.trainer.default_root_dir, "checkpoints")
        # Crash-safe checkpoint saves and weights_only loads, unless a config names its own IO.
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if not any(isinstance(cb, ResumeState) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(ResumeState())

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        finally:
            # Close the wandb run so its files are complete when the command returns.
            _finish_wandb(self.trainer.logger)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if subcommand != "fit" and kwargs.get("ckpt_path") == "best":
            kwargs["ckpt_path"] = _best_from_run_dir(self.trainer.default_root_dir)
        return kwargs

    def _seed(self) -> Any:
        return self._get(self.config, "seed_everything")

    def before_fit(self) -> None:
        # A fit is a new run: an earlier run's summary.json in the same folder moves aside
        # (summary.prev.json) so its metrics and best checkpoint are never taken for this run's.
        if self.trainer.is_global_zero:
            start_summary(self.trainer.default_root_dir)

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        if self.trainer.is_global_zero:  # under DDP one process writes the run's files
            # the best checkpoint as the wandb artifact model-<run id>:best (offline runs too)
            try:
                artifact = log_best_checkpoint(self.trainer)
            except Exception as exc:  # a finished fit keeps its summary whatever wandb does
                print(f"warning: wandb: best checkpoint not logged: {exc}", file=sys.stderr)
                artifact = None
            write_summary(self.trainer, self.model, self._seed(), stage="fit", artifact=artifact)
        if self._get(self.config, "test_after_fit"):
            best = self.trainer.checkpoint_callback
            ckpt = "best" if best is not None and best.best_model_path else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
            self.after_test()

    def after_test(self) -> None:
        confmat = self.model.test_confusion_matrix  # every process: summed over processes
        if self.trainer.is_global_zero:
            write_confusion_matrix(self.trainer, confmat, self.model.class_names)
            write_summary(self.trainer, self.model, self._seed(), stage="test")

    def after_predict(self) -> None:
        rows = [r for batch in (self.trainer.predict_loop.predictions or []) for r in batch]
        path = write_predictions(self.trainer.default_root_dir, rows)
        sys.stdout.flush()  # the rows first, then where they went (on stderr: not in a pipe)
        print(f"wrote {len(rows)} predictions to {path}", file=sys.stderr)


def _best_from_run_dir(run_dir: str) -> str:
    """Resolve ``--ckpt_path best`` in a new process from the run's ``summary.json``."""
    summary = os.path.join(run_dir, "summary.json")
    try:
        with open(summary) as f:
            best = json.load(f).get("best_checkpoint") or ""
    except (OSError, json.JSONDecodeError) as exc:
        why = "does not exist" if isinstance(exc, FileNotFoundError) else f"is unreadable ({exc})"
        raise CheckpointNotFoundError(
            f"--ckpt_path best: {summary} {why}; fit into "
            f"--trainer.default_root_dir {run_dir} first, or pass a checkpoint path"
        ) from exc
    if not os.path.isfile(best):
        raise CheckpointNotFoundError(
            f"--ckpt_path best: {summary} names {best!r}, which is missing"
        )
    return best


def _finish_wandb(logger: Any) -> None:
    """Close a wandb run; for offline runs wait (bounded) until its file is fully written."""
    run = started_wandb_run(logger)
    if run is None or not hasattr(run, "finish"):
        return
    offline = getattr(run, "offline", False)
    run_dir = logger.run_dir if isinstance(logger, KwsWandbLogger) else None
    run.finish()
    if offline and run_dir and not wait_for_offline_run(run_dir, timeout=60.0):
        print(f"warning: wandb is still writing {run_dir}; it may be incomplete", file=sys.stderr)


def _check_writable(folder: str) -> None:
    """Fail before training, naming the folder, when run outputs could not be written there."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputFolderError(
            exc.errno,
            f"trainer.default_root_dir={folder!r} is not a writable folder "
            f"({exc.strerror or exc}); checkpoints, summary.json and logs go there: "
            "pick another with --trainer.default_root_dir",
        ) from exc


# `--ckpt_path` values Lightning resolves itself (no file of that name is read).
_CKPT_NAMES = ("last", "best", "hpc", "registry")


def _check_ckpt_path(ckpt_path: str | None) -> None:
    """Fail naming the file when ``--ckpt_path`` is missing, truncated, corrupt or unsafe.

    Called when the arguments are parsed, before the checkpoint is loaded (``torch.load``,
    whose errors name no file). The probe memory-maps the tensors, so a large checkpoint costs
    little more than its pickled index.
    """
    if not ckpt_path or not isinstance(ckpt_path, str):
        return
    if ckpt_path in _CKPT_NAMES or ckpt_path.startswith("registry:") or "://" in ckpt_path:
        return
    if not os.path.isfile(ckpt_path):
        raise CheckpointNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
    is_zip = zipfile.is_zipfile(ckpt_path)
    with open(ckpt_path, "rb") as f:
        if not is_zip and f.read(4) == b"PK\x03\x04":  # torch.save's zip, without its end
            raise CheckpointLoadError(
                f"{ckpt_path}: not a readable checkpoint (truncated or corrupt?): the end of "
                "its zip archive (the central directory) is missing"
            )
    try:
        torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f"a pickled {found.group(1)} object" if found else "objects other than tensors"
        raise CheckpointLoadError(
            f"{ckpt_path}: refused: it holds {what}, and checkpoints are loaded with "
            "weights_only=True (tensors and plain containers only), so that a checkpoint from "
            "an untrusted source cannot run code"
        ) from exc
    except Exception as exc:  # torch's zip reader: RuntimeError; a cut pickle: EOFError, ...
        raise CheckpointLoadError(
            f"{ckpt_path}: not a readable checkpoint (truncated or corrupt?): {_reason(exc)}"
        ) from exc


def run_lightning(argv: list[str] | None) -> None:
    """Run a LightningCLI command line (``fit``/``validate``/``test``/``predict``): ``argv``,
    or ``None`` to read ``sys.argv``."""
    KwsCLI(args=argv)


def main(args: Sequence[str] | None = None) -> int:
    """Run a subcommand; 0 on success, or the command's exit status (1: a failed gate, such
    as ``parity``'s). The ``kwsnet`` console script and ``train.py`` are ``kwsnet.entry.main``,
    the same without importing this module (and Lightning) unless the command needs it.

    Run with ``args`` None (``sys.argv``), it is :func:`console`, exiting with its status.
    Called from Python with an ``args`` list, every error is raised (kwsnet's own input errors
    are ``USER_ERRORS``, parse errors a ``UsageError``).
    """
    if args is not None:
        return dispatch.run(list(args), run_lightning)
    status = console(sys.argv[1:])
    if status:
        sys.exit(status)
    return 0


def console(argv: Sequence[str]) -> int:
    """What the ``kwsnet`` console script does with ``argv``: run it and return the exit
    status. kwsnet's own input errors (``USER_ERRORS``) print one line, ``kwsnet: error: ...``
    (and at most one ``hint: ...``), on stderr, and return their ``exit_code`` (1; 2 for a
    command line or config file the parser refuses); ``KWSNET_TRACEBACK=1`` raises them
    instead. Any other exception is a bug and is raised with its traceback
    (``kwsnet.dispatch.console``).
    """
    return dispatch.console(argv, run_lightning)


if __name__ == "__main__":
    main()
