"""The ``last.ckpt`` writers every kwsnet run gets, so ``fit --ckpt_path last`` always resumes.

Lightning 2.6's ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites ``last.ckpt`` only
when the monitored metric improves, and one ``ModelCheckpoint`` has one trigger (steps *or*
epochs). So ``last.ckpt`` is written by two callbacks that share the file: one at every epoch
end and one every N training steps (mid-epoch: a killed run loses at most N steps and resumes
bit-exactly, see ``docs/reliability.md``). Configs only declare the *best* checkpoint.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["EpochLastCheckpoint", "StepLastCheckpoint"]


class EpochLastCheckpoint(ModelCheckpoint):
    """Write ``last.ckpt`` at the end of every training epoch.

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
    """Refresh ``last.ckpt`` every ``every_n_train_steps`` training steps, mid-epoch too.

    Args:
        dirpath: checkpoint folder (default: ``<default_root_dir>/checkpoints``).
        every_n_train_steps: steps between saves (default 20); 0 turns it off.
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 20) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=every_n_train_steps > 0,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )
