"""The recipe of issue 14 (docs/recipe.md): the run-sized LR schedule and the recipe config."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kwsnet.cli import main
from kwsnet.optim import WarmupDecay

from .conftest import QUIET_FIT, REPO, tiny_cli_args

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path


def _sched(**kwargs) -> tuple[torch.optim.Optimizer, WarmupDecay]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return opt, WarmupDecay(opt, **kwargs)


def _lrs(opt: torch.optim.Optimizer, sched: WarmupDecay, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_decay_reaches_final_factor_at_the_last_step() -> None:
    opt, sched = _sched(final_factor=0.1, total_steps=10)
    lrs = _lrs(opt, sched, 12)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.1)  # the run's last step
    assert lrs[10:] == pytest.approx([0.1, 0.1])  # beyond the run: stays at the floor
    assert all(a > b for a, b in zip(lrs[:9], lrs[1:10], strict=True))  # strictly decreasing
    steps = [a - b for a, b in zip(lrs[:9], lrs[1:10], strict=True)]
    assert max(steps) == pytest.approx(min(steps))  # linear


def test_warmup_then_cosine() -> None:
    opt, sched = _sched(warmup_fraction=0.2, final_factor=0.0, shape="cosine", total_steps=20)
    lrs = _lrs(opt, sched, 20)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # 4 warm-up steps
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)
    mid = lrs[4 + 15 // 2]  # half way through the decay of a half cosine: about 0.5
    assert 0.4 < mid < 0.6


def test_unsized_schedule_is_constant_until_sized() -> None:
    opt, sched = _sched(final_factor=0.5)
    assert opt.param_groups[0]["lr"] == 1.0
    sched.set_total_steps(3)
    assert _lrs(opt, sched, 3) == pytest.approx([1.0, 0.75, 0.5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"warmup_fraction": 1.0}, "warmup_fraction"),
        ({"final_factor": 1.5}, "final_factor"),
        ({"shape": "step"}, "shape"),
        ({"total_steps": 0}, "total_steps"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _sched(**kwargs)


def test_classifier_sizes_the_schedule_from_the_run(tmp_path) -> None:
    """``total_steps: null`` in a config: the decay spans exactly the run's optimizer steps,
    stepped every step (the checkpoint's scheduler state says where it stopped)."""
    main(
        [
            "fit",
            *tiny_cli_args(tmp_path, epochs=2),
            *QUIET_FIT,
            "--model.optimizer.init_args.lr=0.01",
            "--model.lr_scheduler=kwsnet.optim.WarmupDecay",
            "--model.lr_scheduler.init_args.final_factor=0.1",
        ]
    )
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = ckpt["lr_schedulers"][0]
    steps = ckpt["global_step"]
    assert steps >= 4
    assert state["total_steps"] == steps  # sized from trainer.estimated_stepping_batches
    assert state["last_epoch"] == steps  # one scheduler step per optimizer step
    assert state["_last_lr"][0] == pytest.approx(0.001)  # 0.01 * final_factor at the end


@pytest.mark.parametrize("name", ["kws_mel_best", "kws_mel_aug"])
def test_recipe_config_trains_on_synthetic_out_of_the_box(name: str, tmp_path) -> None:
    """The recipe configs run as shipped (synthetic source: no noise folder)."""
    config = REPO / "configs" / f"{name}.yaml"
    main(
        [
            "fit", "--config", str(config),
            "--data.source_options={num_words: 3, num_speakers: 4, utterances: 4}",
            "--data.batch_size=4", "--trainer.fast_dev_run=1", "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["global_step"] == 1
    assert math.isfinite(summary["metrics"]["val/loss"])
