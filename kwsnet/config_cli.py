"""The config every kwsnet run parses: ``ConfigCLI``, LightningCLI over ``ClassifierModule``
and ``AudioDataModule`` with kwsnet's links, callback groups, YAML 1.2 loader and error
reports, but none of a run's behaviour.

``kwsnet.cli.KwsCLI`` (the command line: fit/validate/test/predict) derives from it, and
``kwsnet.loading.build_from_config`` uses it to rebuild a model from a checkpoint's stored
config, so loading never imports the command-line module (``kwsnet.cli`` imports
``kwsnet.loading``, not the other way round).
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from kwsnet import yaml12
from kwsnet.callbacks.checkpoints import EpochLastCheckpoint, StepLastCheckpoint
from kwsnet.callbacks.collapse import CollapseMonitor
from kwsnet.callbacks.divergence import DivergenceGuard
from kwsnet.data.datamodule import AudioDataModule
from kwsnet.data.record import DataFormatError
from kwsnet.errors import (
    ConfigError,
    ConfigSyntaxError,
    frames,
    one_line,
    with_hint,
    yaml_syntax_error,
)
from kwsnet.export.layers import ExportError
from kwsnet.lit import ClassifierModule
from kwsnet.parsing import PARSER_MODE, OneLineErrors
from kwsnet.resources import CONFIG_SUFFIXES, resolve_config_args

__all__ = ["CALLBACK_GROUPS", "ConfigCLI", "KwsArgumentParser"]

# The callbacks every run has, configured under these keys (`--divergence.action skip`).
CALLBACK_GROUPS: dict[str, type[Callback]] = {
    "collapse": CollapseMonitor,
    "divergence": DivergenceGuard,
    "last_checkpoint": EpochLastCheckpoint,
    "step_checkpoint": StepLastCheckpoint,
}


class KwsArgumentParser(OneLineErrors, LightningArgumentParser):
    """The CLI's parser: a command line or config file it refuses raises a one-line
    ``UsageError`` naming the file or flag, the key and the problem, with the closest valid key
    (``kwsnet.parse_errors``); one that quotes a ``key:value`` gets the YAML spacing hint.
    Options are never abbreviated (``--trainer.max_epoch`` is not ``max_epochs``)."""


class ConfigCLI(LightningCLI):
    """LightningCLI over kwsnet's model and data: the links between them, the callback groups,
    ``test_after_fit``, the YAML 1.2 loader, and errors that name the file or config key.

    The config (files and command line) decides the model, also with ``--ckpt_path``: the
    checkpoint gives the weights, and its saved hparams never override the config (Lightning's
    ``_parse_ckpt_path`` would, silently, e.g. ``test --model.verification_trials 100``).
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", KwsArgumentParser)
        kwargs.setdefault("parser_kwargs", {"parser_mode": PARSER_MODE})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(ClassifierModule, AudioDataModule, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        for key, callback in CALLBACK_GROUPS.items():
            parser.add_lightning_class_args(callback, key)
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit: test the best checkpoint when fitting ends",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # Config files that are not YAML are named by path and line (jsonargparse's message
        # names none). `--config kws_ds_cnn` names a shipped config (kwsnet.resources).
        args = resolve_config_args(args)
        if args is None or isinstance(args, (list, tuple)):
            for path in _config_file_args(sys.argv[1:] if args is None else args):
                _check_yaml_file(path)
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Nothing: a checkpoint's hparams do not replace the parsed model config."""

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, MisconfigurationException) as exc:
            if isinstance(exc, (DataFormatError, ExportError)):
                raise
            config = self.config.get(str(self.subcommand), self.config)
            # jsonargparse reports an error in a Union-typed value (trainer.callbacks) as its own
            # ValueError, the object's error as its __cause__: the innermost one names it.
            chain: list[BaseException] = [exc]
            while chain[-1].__cause__ is not None and len(chain) < 8:
                chain.append(chain[-1].__cause__)
            for inner in reversed(chain):
                located = _locate_config_error(inner, config)
                if located is not None:
                    raise located from exc
            raise


def _config_file_args(argv: Sequence[str]) -> Iterator[str]:
    """The YAML files named on a command line (``--config f.yaml``, ``--model f.yaml``, ...)."""
    for token in argv:
        value = token.split("=", 1)[1] if token.startswith("--") and "=" in token else token
        if value.endswith(CONFIG_SUFFIXES) and os.path.isfile(value):
            yield value


def _check_yaml_file(path: str) -> None:
    """Raise ``ConfigSyntaxError`` naming ``path``, the line and the problem if it is not YAML."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return  # jsonargparse reports files it cannot read
    try:
        yaml12.load(text)
    except yaml12.MarkedYAMLError as exc:
        raise yaml_syntax_error(path, text, exc) from exc
    except yaml12.YAMLError as exc:
        raise ConfigSyntaxError(f"{path}: not valid YAML: {one_line(exc)}") from exc


def _class_path_keys(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(key, class_path)`` of every ``class_path`` entry of a config, e.g. ``model.backbone``."""
    if isinstance(node, dict):
        if isinstance(node.get("class_path"), str):
            yield path, node["class_path"]
        for k, v in node.items():
            yield from _class_path_keys(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _class_path_keys(v, f"{path}[{i}]")


def _names_class(class_path: str, cls: type) -> bool:
    """Whether ``class_path`` (``lightning.pytorch.callbacks.ModelCheckpoint``) is ``cls``."""
    if class_path == f"{cls.__module__}.{cls.__qualname__}":
        return True
    module, _, name = class_path.rpartition(".")
    if name != cls.__name__ or module not in sys.modules:  # imported when it was built
        return False
    return getattr(sys.modules[module], name, None) is cls


def _locate_config_error(exc: BaseException, config: Any) -> ConfigError | None:
    """A ``ConfigError`` for an error raised while building the configured objects, naming
    the config key of the object whose ``__init__`` raised it (``kernel_size must be odd`` →
    ``model.backbone.init_args.kernel_size must be odd``); ``None`` if no configured object's
    ``__init__`` raised it (then it is not a config error)."""
    cfg = config.as_dict() if isinstance(config, Namespace) else {}
    keys = list(_class_path_keys(cfg))
    groups = {"data": AudioDataModule, "model": ClassifierModule, "trainer": Trainer}
    groups.update(CALLBACK_GROUPS)
    for frame in reversed(frames(exc.__traceback__)):
        if frame.f_code.co_name != "__init__":
            continue
        cls = type(frame.f_locals.get("self"))
        group = next((k for k, c in groups.items() if issubclass(cls, c)), None)
        if group is not None:
            label, prefix = group, f"{group}."
        else:
            found = [k for k, class_path in keys if _names_class(class_path, cls)]
            if not found:
                continue
            label, prefix = found[0], f"{found[0]}.init_args."
        break
    else:
        return None
    message = one_line(exc)
    first = re.match(r"[A-Za-z_]\w*", message)
    try:
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    except (TypeError, ValueError):
        params = set()
    if message.startswith((f"{label}.", f"{label}:", f"{label}=")):
        pass
    elif first is not None and first.group(0) in params:
        message = prefix + message
    elif group is not None:
        message = f"{label}: {message}"
    else:
        message = f"{label} ({cls.__name__}): {message}"
    return with_hint(ConfigError(message), getattr(exc, "hint", None))  # type: ignore[return-value]
