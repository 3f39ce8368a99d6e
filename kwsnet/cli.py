"""The kwsnet command line: LightningCLI (fit/validate/test/predict) plus extra subcommands.

``kwsnet sweep|export|parity|prepare ...`` dispatch to their own modules; everything else is
LightningCLI over ``ClassifierModule`` and ``AudioDataModule``, configured by YAML in
``configs/``.
"""

from __future__ import annotations

import importlib
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

from kwsnet._compat import started_wandb_run
from kwsnet.callbacks.divergence import DivergenceError
from kwsnet.callbacks.progress import KwsProgressBar
from kwsnet.checkpointing import AtomicCheckpointIO, CheckpointLoadError, ResumeState
from kwsnet.config_cli import ConfigCLI
from kwsnet.data.datamodule import RecordDataset, checkpoint_class_names
from kwsnet.data.record import DataFormatError
from kwsnet.errors import (
    CheckpointNotFoundError,
    KwsnetUserError,
    OutputFolderError,
    error_lines,
    frames,
    traceback_wanted,
)
from kwsnet.export.layers import ExportError
from kwsnet.loading import build_from_config
from kwsnet.loading import first_sentence as _reason
from kwsnet.summary import (
    start_summary,
    write_confusion_matrix,
    write_predictions,
    write_summary,
)
from kwsnet.tracking import KwsWandbLogger, provenance, wait_for_offline_run

__all__ = ["KwsCLI", "main", "build_from_config", "EXTRA_COMMANDS", "USER_ERRORS"]

# subcommand → "module:function(argv) -> exit code"
EXTRA_COMMANDS: dict[str, str] = {
    "sweep": "kwsnet.sweep:sweep_main",
    "export": "kwsnet.export.commands:export_main",
    "parity": "kwsnet.export.commands:parity_main",
    "prepare": "kwsnet.data.prepare:prepare_main",
    "detect": "kwsnet.detect.commands:detect_main",
    "make-streams": "kwsnet.detect.commands:make_streams_main",
    "detect-eval": "kwsnet.detect.commands:detect_eval_main",
    "quant-report": "kwsnet.quant.report:quant_report_main",
}

# Bad input, reported by the console script as one line (kwsnet.errors); anything else is a bug
# and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    KwsnetUserError,
    DataFormatError,
    CheckpointLoadError,
    DivergenceError,
    ExportError,
)


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


class KwsCLI(ConfigCLI):
    """The command line: ``ConfigCLI`` (kwsnet's config: links, callback groups, errors that
    name the key) plus a run's behaviour: checkpoint checks, saved config, end-of-run reports."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", KwsSaveConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(args=args, run=run, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # A checkpoint that cannot be read is named before it is loaded (torch's zip reader
        # names no file).
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            _check_ckpt_path(self.config[subcommand].get("ckpt_path"))

    def before_instantiate_classes(self) -> None:
        # predict names the classes from the checkpoint, so it needs no dataset.
        if self.subcommand == "predict":
            cfg = self.config.predict
            if cfg.data.class_names is None and cfg.ckpt_path:
                cfg.data.class_names = checkpoint_class_names(cfg.ckpt_path)
        # `wandb agent` starts every run with the same config: give each its own run dir.
        run_id = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
        if not run_id:
            return
        cfg = self.config.get(str(self.subcommand), self.config)
        root = os.path.join(cfg.trainer.default_root_dir or "runs", run_id)
        cfg.trainer.default_root_dir = root
        logger = cfg.trainer.logger
        init_args = getattr(logger, "init_args", None)
        if init_args is not None and "save_dir" in init_args:
            init_args.save_dir = root

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
            write_summary(self.trainer, self.model, self._seed(), stage="fit")
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
        write_predictions(self.trainer.default_root_dir, rows)


def _best_from_run_dir(run_dir: str) -> str:
    """Resolve ``--ckpt_path best`` in a new process from the run's ``summary.json``."""
    summary = os.path.join(run_dir, "summary.json")
    try:
        with open(summary) as f:
            best = json.load(f).get("best_checkpoint") or ""
    except (OSError, ValueError) as exc:
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


def _data_hint(exc: BaseException) -> str | None:
    """``data.on_error: skip`` for a file that could not be read while training or testing."""
    if not isinstance(exc, DataFormatError):
        return None
    worker = str(exc).startswith("Caught DataFormatError in DataLoader worker")
    in_dataset = any(
        isinstance(f.f_locals.get("self"), RecordDataset) for f in frames(exc.__traceback__)
    )
    if worker or in_dataset:
        return (
            "set data.on_error: skip (--data.on_error skip) to leave out unreadable files; "
            "a warning counts them"
        )
    return None


def main(args: Sequence[str] | None = None) -> None:
    """Entry point for ``kwsnet`` and ``train.py``.

    Run as the console script (``args`` None), kwsnet's own input errors (``USER_ERRORS``)
    print one line, ``kwsnet: error: ...`` (and at most one ``hint: ...``), on stderr and exit
    with status 1 (2 for a config file that is not YAML, as for the parser's usage errors);
    ``KWSNET_TRACEBACK=1`` shows the traceback instead. Called from Python with an ``args``
    list, every error is raised.
    """
    if args is not None:
        _dispatch(list(args), args)
        return
    try:
        _dispatch(sys.argv[1:], None)
    except USER_ERRORS as exc:
        if traceback_wanted():
            raise
        sys.stdout.flush()
        for line in error_lines(exc, [_data_hint(exc)]):
            print(line, file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 1))


def _dispatch(argv: list[str], args: Sequence[str] | None) -> None:
    if argv and argv[0] in EXTRA_COMMANDS:
        module, fn = EXTRA_COMMANDS[argv[0]].split(":")
        sys.exit(getattr(importlib.import_module(module), fn)(argv[1:]))
    KwsCLI(args=None if args is None else argv)


if __name__ == "__main__":
    main()
