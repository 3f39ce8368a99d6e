"""Exact resume: a fit SIGKILLed mid-epoch and resumed with ``--ckpt_path last`` ends bitwise
equal (weights, optimizer, metrics) to an uninterrupted fit of the same seed.

The runs are real ``train.py fit`` processes on the tiny synthetic corpus (96 training clips,
batch 8: 12 steps per epoch; ``--step_checkpoint.every_n_train_steps 20`` writes ``last.ckpt``
every 20 steps, so the checkpoints at steps 20 and 40 are mid-epoch). The kill comes from
``KillAtStep``, added with ``--trainer.callbacks+=``: a real ``SIGKILL`` of the training
process at a chosen step, after that step's checkpoint hooks could not run. The ``crops``
case trains on random 0.75 s crops of the 1 s clips: those draws come from per-item seeds
(``kwsnet.data.sampler.Draw``), not from the global RNG that the checkpoint saves after
Lightning has already prefetched the next batch.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from .conftest import QUIET_FIT, REPO, tiny_cli_args

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

CONFIG = str(REPO / "configs" / "kws_raw.yaml")
STEPS_PER_EPOCH = 12
# Each fit process gets another hash seed, as unpinned runs do: resume must not depend on it.
_HASH_SEEDS = itertools.count(1)


class KillAtStep(pl.Callback):
    """SIGKILL this process at the end of global step ``$KWSNET_KILL_AT_STEP`` (test helper)."""

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == int(os.environ.get("KWSNET_KILL_AT_STEP", "-1")):
            os.kill(os.getpid(), signal.SIGKILL)


def fit(root: Path, epochs: int, *extra: str, kill_at: int | None = None) -> int:
    """Run ``train.py fit`` in a subprocess; return its exit code."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONHASHSEED": str(next(_HASH_SEEDS))}
    env.pop("KWSNET_KILL_AT_STEP", None)
    args = []
    if kill_at is not None:
        env["KWSNET_KILL_AT_STEP"] = str(kill_at)
        args = ["--trainer.callbacks+=tests.test_reliability_resume.KillAtStep"]
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "fit",
        *tiny_cli_args(root, epochs, batch_size=8),
        *QUIET_FIT,
        "--step_checkpoint.every_n_train_steps",
        "20",
        *args,
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"fit failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode


def final_state(root: Path) -> tuple[dict, dict, dict]:
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    summary = json.loads((root / "summary.json").read_text())
    return ckpt["state_dict"], ckpt["optimizer_states"][0], summary


def assert_same_tree(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


VARIANTS = {
    "clips": [],
    "crops": ["--data.clip_samples", "12000", "--model.backbone.init_args.input_samples", "12000"],
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(name, extra flags, root of the uninterrupted fit of that variant)."""
    name = request.param
    root = tmp_path_factory.mktemp(f"straight_{name}")
    assert fit(root, 2, *VARIANTS[name]) == 0
    return name, VARIANTS[name], root


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [23])
def test_sigkill_mid_epoch_then_resume_is_bitwise_exact(
    variant: tuple[str, list[str], Path], tmp_path: Path, kill_at: int
) -> None:
    _, extra, uninterrupted = variant
    root = tmp_path / "killed"
    assert fit(root, 2, *extra, kill_at=kill_at) == -signal.SIGKILL
    saved = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    step = saved["global_step"]
    assert step % STEPS_PER_EPOCH != 0, f"last.ckpt at step {step} is not mid-epoch"
    assert step < kill_at  # steps after the checkpoint were lost and are redone
    assert not (root / "summary.json").exists()
    assert fit(root, 2, *extra, "--ckpt_path", "last") == 0

    weights, optim, summary = final_state(root)
    ref_weights, ref_optim, ref_summary = final_state(uninterrupted)
    assert_same_tree(weights, ref_weights, "state_dict")
    assert_same_tree(optim, ref_optim, "optimizer")
    assert summary["global_step"] == ref_summary["global_step"] == 2 * STEPS_PER_EPOCH
    assert summary["metrics"] == ref_summary["metrics"]  # val and train, bitwise (floats)
