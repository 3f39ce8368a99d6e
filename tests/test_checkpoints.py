from datetime import timedelta

import pytest

from kwsnet.callbacks.checkpoints import EpochLastCheckpoint, StepLastCheckpoint


def test_step_checkpoint_defaults_to_a_time_trigger():
    cb = StepLastCheckpoint()
    assert cb._train_time_interval == timedelta(seconds=300)
    assert cb._every_n_train_steps == 0 and cb.save_last and cb.save_top_k == 0


def test_step_checkpoint_by_steps_and_off():
    cb = StepLastCheckpoint(every_n_train_steps=20)
    assert cb._every_n_train_steps == 20 and cb._train_time_interval is None
    off = StepLastCheckpoint(every_seconds=0)
    assert not off.save_last
    with pytest.raises(ValueError, match="every_n_train_steps"):
        StepLastCheckpoint(every_n_train_steps=-1)


def test_epoch_checkpoint_shares_last_ckpt():
    cb = EpochLastCheckpoint()
    assert cb.save_last and not cb._enable_version_counter


def test_five_minute_trigger_and_shared_last_ckpt(tmp_path, monkeypatch):
    """Through the CLI: with a clock that advances 100 s per batch, the default 300 s step
    trigger refreshes last.ckpt every 3rd batch, the epoch writer at every epoch end, and
    both write the one ``last.ckpt`` (no ``last-v1.ckpt``) that holds the newest state."""
    import types

    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from kwsnet.checkpointing import ResumeState
    from kwsnet.cli import main

    from .conftest import QUIET_FIT, tiny_cli_args

    clock = [1000.0]
    monkeypatch.setattr(
        "lightning.pytorch.callbacks.model_checkpoint.time",
        types.SimpleNamespace(monotonic=lambda: clock[0]),
    )
    saves: list[tuple[str, int]] = []
    original = ModelCheckpoint._save_last_checkpoint

    def recording(self, trainer, monitor_candidates):
        saves.append((type(self).__name__, trainer.global_step))
        return original(self, trainer, monitor_candidates)

    monkeypatch.setattr(ModelCheckpoint, "_save_last_checkpoint", recording)

    class ResumeStateAndTick(ResumeState):
        """The CLI adds a ``ResumeState`` to every run: this one also advances the clock."""

        def on_train_batch_start(self, *args) -> None:
            clock[0] += 100.0

    monkeypatch.setattr("kwsnet.cli.ResumeState", ResumeStateAndTick)
    root = tmp_path / "run"
    main(["fit", *tiny_cli_args(root, epochs=2), *QUIET_FIT])  # 2 epochs of 6 batches
    step = [s for name, s in saves if name == "StepLastCheckpoint"]
    epoch = [s for name, s in saves if name == "EpochLastCheckpoint"]
    assert step == [3, 6, 9, 12]
    assert epoch == [6, 12]
    names = sorted(p.name for p in (root / "checkpoints").iterdir())
    assert "last.ckpt" in names and not [n for n in names if n.startswith("last-")]
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
