"""The ``last.ckpt`` writers every kwsnet run gets, so ``fit --ckpt_path last`` always resumes.

Lightning 2.6's ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites ``last.ckpt`` only
when the monitored metric improves, and one ``ModelCheckpoint`` has one trigger (steps *or*
epochs). So ``last.ckpt`` is written by two callbacks that share the file: one at every epoch
end and one during the epoch, every 5 minutes of training or every N steps (a killed run loses
at most that and resumes bit-exactly, see ``docs/reliability.md``). Configs only declare the
*best* checkpoint.
"""

from __future__ import annotations

from datetime import timedelta

from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["EpochLastCheckpoint", "StepLastCheckpoint"]


class EpochLastCheckpoint(ModelCheckpoint):
    """Write ``last.ckpt`` at the end of every training epoch.

    Lightning writes ``last.ckpt`` only in the step it saved a checkpoint of its own, so this
    writer keeps one: ``latest.ckpt`` (``save_top_k=1`` without a monitor: the newest epoch),
    the same state as ``last.ckpt`` at the end of that epoch (README, "Where runs go").

    Args:
        dirpath: checkpoint folder (default: ``<default_root_dir>/checkpoints``).
    """

    def __init__(self, dirpath: str | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="latest",
            save_top_k=1,
            save_last=True,
            enable_version_counter=False,
        )


class StepLastCheckpoint(ModelCheckpoint):
    """Refresh ``last.ckpt`` during an epoch: every ``every_seconds`` of training (default 300)
    or, if set, every ``every_n_train_steps`` steps. A killed run loses at most that much.

    A time trigger is the default because a step count that suits a large corpus checkpoints a
    tiny model many times per second of training (each save is written and fsynced).

    Args:
        dirpath: checkpoint folder (default: ``<default_root_dir>/checkpoints``).
        every_seconds: training seconds between saves (default 300); 0 turns the time
            trigger off.
        every_n_train_steps: steps between saves (default 0: use the time trigger instead).
    """

    def __init__(
        self, dirpath: str | None = None, every_seconds: float = 300.0, every_n_train_steps: int = 0
    ) -> None:
        if every_n_train_steps < 0 or every_seconds < 0:
            raise ValueError(
                "step_checkpoint: every_n_train_steps and every_seconds must be >= 0, got "
                f"{every_n_train_steps} and {every_seconds}"
            )
        by_steps = every_n_train_steps > 0
        interval = None if by_steps or every_seconds == 0 else timedelta(seconds=every_seconds)
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=by_steps or interval is not None,
            every_n_train_steps=every_n_train_steps if by_steps else None,
            train_time_interval=interval,
            enable_version_counter=False,
        )
