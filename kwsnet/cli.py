"""The kwsnet command line: LightningCLI (fit/validate/test/predict) plus extra subcommands.

``kwsnet sweep|export|parity|prepare ...`` dispatch to their own modules; everything else is
LightningCLI over ``ClassifierModule`` and ``AudioDataModule``, configured by YAML in
``configs/``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import yaml
from jsonargparse import set_loader
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from kwsnet import yaml12
from kwsnet.callbacks.checkpoints import EpochLastCheckpoint, StepLastCheckpoint
from kwsnet.callbacks.collapse import CollapseMonitor
from kwsnet.callbacks.divergence import DivergenceGuard
from kwsnet.callbacks.progress import KwsProgressBar
from kwsnet.checkpointing import AtomicCheckpointIO, ResumeState
from kwsnet.data.datamodule import AudioDataModule, checkpoint_class_names
from kwsnet.lit import ClassifierModule
from kwsnet.summary import write_confusion_matrix, write_predictions, write_summary
from kwsnet.tracking import KwsWandbLogger, provenance, wait_for_offline_run

__all__ = ["KwsCLI", "main", "build_from_config", "EXTRA_COMMANDS"]

set_loader("yaml12", yaml12.load, exceptions=(yaml.YAMLError,))

# subcommand → "module:function(argv) -> exit code"
EXTRA_COMMANDS: dict[str, str] = {
    "sweep": "kwsnet.sweep:sweep_main",
    "export": "kwsnet.export.commands:export_main",
    "parity": "kwsnet.export.commands:parity_main",
    "prepare": "kwsnet.data.prepare:prepare_main",
}


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


class KwsCLI(LightningCLI):
    """LightningCLI with kwsnet's links, callbacks and end-of-run reports."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", KwsSaveConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"parser_mode": "yaml12"})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(ClassifierModule, AudioDataModule, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.add_lightning_class_args(CollapseMonitor, "collapse")
        parser.add_lightning_class_args(DivergenceGuard, "divergence")
        parser.add_lightning_class_args(EpochLastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(StepLastCheckpoint, "step_checkpoint")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit: test the best checkpoint when fitting ends",
        )

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

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        if self.trainer.is_global_zero:  # under DDP one process writes the run's files
            write_summary(self.trainer, self.model, self._seed())
        if self._get(self.config, "test_after_fit"):
            best = self.trainer.checkpoint_callback
            ckpt = "best" if best is not None and best.best_model_path else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
            self.after_test()

    def after_test(self) -> None:
        confmat = self.model.test_confusion_matrix  # every process: summed over processes
        if self.trainer.is_global_zero:
            write_confusion_matrix(self.trainer, confmat, self.model.class_names)
            write_summary(self.trainer, self.model, self._seed())

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
        raise FileNotFoundError(
            f"--ckpt_path best: no readable {summary} ({exc}); fit into "
            f"--trainer.default_root_dir {run_dir} first, or pass a checkpoint path"
        ) from exc
    if not os.path.isfile(best):
        raise FileNotFoundError(f"--ckpt_path best: {summary} names {best!r}, which is missing")
    return best


def _finish_wandb(logger: Any) -> None:
    """Close a wandb run; for offline runs wait (bounded) until its file is fully written."""
    run = getattr(logger, "_experiment", None)
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
        raise OSError(
            exc.errno,
            f"trainer.default_root_dir={folder!r} is not a writable folder "
            f"({exc.strerror or exc}); checkpoints, summary.json and logs go there: "
            "pick another with --trainer.default_root_dir",
        ) from exc


def build_from_config(
    config: str | None, ckpt_path: str | None, overrides: Sequence[str] = ()
) -> tuple[ClassifierModule, AudioDataModule]:
    """Rebuild the exact model (with checkpoint weights, in eval mode) and its DataModule.

    The config stored in the checkpoint is used when ``config`` is ``None``. A checkpoint whose
    weights do not fit the config's model raises a ``ValueError`` naming the mismatch.
    """
    ckpt: dict[str, Any] | None = None
    if ckpt_path is not None:
        if not os.path.isfile(ckpt_path):
            raise FileNotFoundError(f"checkpoint {ckpt_path} does not exist")
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{ckpt_path}: not a readable checkpoint ({exc})") from exc
    args: list[str] = []
    if config is not None:
        args += ["--config", config]
    elif ckpt is not None and ckpt.get("kwsnet", {}).get("config"):
        stored = yaml.safe_load(ckpt["kwsnet"]["config"])
        for key in ("ckpt_path", "weights_only"):  # fit-only arguments
            stored.pop(key, None)
        args += ["--config", yaml.safe_dump(stored)]
    else:
        raise ValueError("need --config (the checkpoint holds no stored config)")
    names = checkpoint_class_names(ckpt) if ckpt is not None else None
    if names is not None:  # the model needs no dataset to be rebuilt (an override still wins)
        args += ["--data.class_names", json.dumps(names)]
    args += ["--trainer.logger", "false", *overrides]
    with warnings.catch_warnings():
        # Called from `kwsnet export/parity`, sys.argv holds that command, not these args.
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        cli = KwsCLI(args=args, run=False, save_config_callback=None)
    model, dm = cli.model, cli.datamodule
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["state_dict"], strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"{ckpt_path} does not match the model built from the config "
                f"(another architecture or config?): {str(exc).splitlines()[0]} ..."
            ) from exc
    model.eval()
    return model, dm


def main(args: Sequence[str] | None = None) -> None:
    """Entry point for ``kwsnet`` and ``train.py``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXTRA_COMMANDS:
        module, fn = EXTRA_COMMANDS[argv[0]].split(":")
        sys.exit(getattr(importlib.import_module(module), fn)(argv[1:]))
    KwsCLI(args=None if args is None else argv)


if __name__ == "__main__":
    main()
