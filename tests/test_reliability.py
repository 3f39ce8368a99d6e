"""Fault injection: divergence, full disk while checkpointing, untrusted or mismatched
checkpoints, unwritable output folders, no network for wandb (docs/reliability.md)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from torch import nn

import kwsnet.checkpointing as ckio
from kwsnet.callbacks.divergence import DivergenceError, DivergenceGuard
from kwsnet.checkpointing import AtomicCheckpointIO, CheckpointLoadError
from kwsnet.cli import main
from kwsnet.tracking import KwsWandbLogger, resolve_offline

from .conftest import QUIET_FIT, REPO, tiny_cli_args

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

CONFIG = str(REPO / "configs" / "kws_raw.yaml")


class NaNAtCall(nn.Module):
    """Training augment that turns the audio of its ``call``-th batch into NaN (fault injector)."""

    def __init__(self, call: int = 3) -> None:
        super().__init__()
        self.call, self.calls = call, 0

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        return (torch.full_like(wave, float("nan")) if self.calls == self.call else wave), lengths


def args(root: Path, *extra: str, epochs: int = 1) -> list[str]:
    return ["fit", *tiny_cli_args(root, epochs), *QUIET_FIT, *extra]


NAN_AT_3 = ["--model.augment", "tests.test_reliability.NaNAtCall", "--model.augment.call", "3"]


@pytest.fixture(scope="module")
def skipped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch fit whose third batch is NaN, with ``--divergence.action skip``."""
    root = tmp_path_factory.mktemp("skip")
    main(args(root, *NAN_AT_3, "--divergence.action", "skip"))
    return root


def test_nan_batch_stops_the_run_naming_step_and_last_loss(tmp_path: Path) -> None:
    with pytest.raises(DivergenceError, match=r"loss is nan at global step 2 .*last finite loss"):
        main(args(tmp_path, *NAN_AT_3))
    assert not (tmp_path / "summary.json").exists()  # the sweep sees no metrics: a failure


def test_huge_lr_stops_the_run(tmp_path: Path) -> None:
    with pytest.raises(DivergenceError, match="global step"):
        main(args(tmp_path, "--model.optimizer.init_args.lr", "1e30"))


def test_skip_drops_the_nan_batch_and_finishes(skipped_run: Path) -> None:
    ckpt = torch.load(skipped_run / "checkpoints" / "last.ckpt", weights_only=True)
    weights = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in weights)
    guard = next(v for k, v in ckpt["callbacks"].items() if "DivergenceGuard" in k)
    assert guard["skipped"] == 1
    steps = ckpt["optimizer_states"][0]["state"][0]["step"]
    assert int(steps) == ckpt["global_step"] - 1  # Adam never stepped on the NaN batch


def test_guard_validates_action() -> None:
    with pytest.raises(ValueError, match="'stop' or 'skip'"):
        DivergenceGuard(action="ignore")  # type: ignore[arg-type]


def test_enospc_mid_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.arange(10.0)}, path)
    real = ckio._write_chunk

    def half_then_full(fd: int, data: memoryview) -> int:
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckio, "_write_chunk", half_then_full)
    with pytest.raises(OSError, match="disk full.*previous one is intact"):
        io.save_checkpoint({"w": torch.zeros(1000)}, path)
    assert torch.equal(io.load_checkpoint(path)["w"], torch.arange(10.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left


def test_enospc_during_fit_leaves_last_checkpoint_loadable(tmp_path: Path, monkeypatch) -> None:
    main(args(tmp_path, epochs=1))
    before = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)

    def full(fd: int, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckio, "_write_chunk", full)
    with pytest.raises(OSError, match="disk full"):
        main(args(tmp_path, "--ckpt_path", "last", epochs=2))
    after = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["global_step"] == before["global_step"]
    for k, v in before["state_dict"].items():
        assert torch.equal(v, after["state_dict"][k])


def test_pickled_code_in_checkpoint_is_refused(skipped_run: Path, tmp_path: Path) -> None:
    ckpt = torch.load(skipped_run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["payload"] = NaNAtCall()  # any non-tensor object: loading it would run pickle code
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil)
    # The CLI probes --ckpt_path (torch.load, weights_only) before LightningCLI reads its
    # hyperparameters: refused naming the file and the object, and no pickled object is built.
    with pytest.raises(CheckpointLoadError, match=r"evil\.ckpt: refused.*NaNAtCall.*weights_only"):
        main(args(tmp_path / "run", "--ckpt_path", str(evil)))
    with pytest.raises(CheckpointLoadError, match="(?i)weights.only"):  # Lightning's own restore
        AtomicCheckpointIO().load_checkpoint(evil)


@pytest.mark.parametrize("subcommand", ["fit", "test", "validate", "predict"])
def test_truncated_checkpoint_is_named(skipped_run: Path, tmp_path: Path, subcommand: str) -> None:
    blob = (skipped_run / "checkpoints" / "last.ckpt").read_bytes()
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(blob[: len(blob) // 3])
    # Named by the CLI's probe, before LightningCLI's hyperparameter read (torch's zip reader,
    # whose message names no file), and by AtomicCheckpointIO (Lightning's own restore).
    run = [subcommand, *args(tmp_path / "run", "--ckpt_path", str(bad))[1:]]
    with pytest.raises(CheckpointLoadError, match=r"cut\.ckpt: not a readable checkpoint"):
        main(run)
    with pytest.raises(CheckpointLoadError, match=r"cut\.ckpt: not a readable checkpoint"):
        AtomicCheckpointIO().load_checkpoint(bad)


def test_fit_from_another_architecture_names_the_mismatch(skipped_run: Path, tmp_path: Path):
    ckpt = str(skipped_run / "checkpoints" / "last.ckpt")
    other = ["--model.backbone.init_args.channels", "[8,16,32]", "--ckpt_path", ckpt]
    with pytest.raises(RuntimeError, match=r"size mismatch for backbone\."):
        main(args(tmp_path / "run", *other))


def test_unwritable_output_folder_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder path below a file can never be created (even by root)
    with pytest.raises(OSError, match="default_root_dir=.*a_file/run.*not a writable folder"):
        main(args(blocker / "run"))


def test_wandb_goes_offline_without_mode_or_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert resolve_offline(None) is True
    logger = KwsWandbLogger(save_dir=str(tmp_path))
    assert logger._offline
    run = logger.experiment  # would block on a login prompt / network if it were online
    assert Path(logger.run_dir).name.startswith("offline-run-")
    run.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
