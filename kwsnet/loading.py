"""Checkpoint → model loading, shared by the CLI (``predict``/``test`` helpers), ``kwsnet
export``/``parity`` and ``kwsnet detect``: read a checkpoint safely, recover the config it was
trained with, rebuild model and DataModule from it and load the weights strictly.

The config parser is ``kwsnet.config_cli.ConfigCLI`` (the links between data and model and the
callback groups a stored config names; the command line's ``KwsCLI`` derives from it), imported
when a model is built, so importing this module costs nothing. This module never imports
``kwsnet.cli`` (the command line imports it).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import yaml

from kwsnet.data.datamodule import checkpoint_class_names
from kwsnet.errors import CheckpointNotFoundError, ConfigError, one_line

if TYPE_CHECKING:
    from kwsnet.data.datamodule import AudioDataModule
    from kwsnet.lit import ClassifierModule

__all__ = [
    "build_from_config",
    "config_args",
    "first_sentence",
    "load_weights",
    "read_checkpoint",
]

# Keys of a stored config that belong to `fit` only (not to rebuilding the model).
_FIT_ONLY_KEYS = ("ckpt_path", "weights_only")


def first_sentence(exc: BaseException) -> str:
    """The first sentence of ``exc``'s message (torch's go on with advice for several lines)."""
    return re.split(r"(?<=\.)\s", one_line(exc), maxsplit=1)[0]


def read_checkpoint(ckpt_path: str) -> dict[str, Any]:
    """The checkpoint's dict, loaded with ``weights_only=True`` on the CPU.

    Raises:
        CheckpointNotFoundError: no such file.
        ConfigError: the file is not a readable checkpoint (names the file and why).
    """
    if not os.path.isfile(ckpt_path):
        raise CheckpointNotFoundError(f"checkpoint {ckpt_path} does not exist")
    try:
        return torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        why = first_sentence(exc)
        raise ConfigError(f"{ckpt_path}: not a readable checkpoint ({why})") from exc


def config_args(
    config: str | None, ckpt: dict[str, Any] | None, overrides: Sequence[str] = ()
) -> list[str]:
    """CLI arguments that rebuild the model: ``--config`` (the file, or the config stored in
    ``ckpt`` when ``config`` is None), the checkpoint's class names (so no dataset is needed),
    no logger, then ``overrides`` (which win).

    Raises:
        ConfigError: neither a config file nor a checkpoint with a stored config.
    """
    args: list[str] = []
    if config is not None:
        args += ["--config", config]
    elif ckpt is not None and ckpt.get("kwsnet", {}).get("config"):
        stored = yaml.safe_load(ckpt["kwsnet"]["config"])
        for key in _FIT_ONLY_KEYS:
            stored.pop(key, None)
        args += ["--config", yaml.safe_dump(stored)]
    else:
        raise ConfigError("need --config (the checkpoint holds no stored config)")
    names = checkpoint_class_names(ckpt) if ckpt is not None else None
    if names is not None:  # the model needs no dataset to be rebuilt (an override still wins)
        args += ["--data.class_names", json.dumps(names)]
    return [*args, "--trainer.logger", "false", *overrides]


def load_weights(model: torch.nn.Module, ckpt: dict[str, Any], ckpt_path: str) -> None:
    """``model.load_state_dict(ckpt["state_dict"], strict=True)``.

    Raises:
        ConfigError: the weights do not fit the model (names the first mismatch).
    """
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"{ckpt_path} does not match the model built from the config "
            f"(another architecture or config?): {str(exc).splitlines()[0]} ..."
        ) from exc


def build_from_config(
    config: str | None, ckpt_path: str | None, overrides: Sequence[str] = ()
) -> tuple[ClassifierModule, AudioDataModule]:
    """Rebuild the exact model (with checkpoint weights, in eval mode) and its DataModule.

    The config stored in the checkpoint is used when ``config`` is ``None``. A checkpoint whose
    weights do not fit the config's model raises a ``ConfigError`` naming the mismatch.
    """
    from kwsnet.config_cli import ConfigCLI  # the config parser (imports Lightning)

    ckpt = read_checkpoint(ckpt_path) if ckpt_path is not None else None
    args = config_args(config, ckpt, overrides)
    with warnings.catch_warnings():
        # Called from `kwsnet export/parity`, sys.argv holds that command, not these args.
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        cli = ConfigCLI(args=args, run=False, save_config_callback=None)
    model, dm = cli.model, cli.datamodule
    if ckpt is not None:
        load_weights(model, ckpt, ckpt_path)  # type: ignore[arg-type]
    model.eval()
    return model, dm
