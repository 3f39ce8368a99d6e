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
