"""The CLI's progress bar: throttled Rich bar by default, none when off, the user's when given."""

from __future__ import annotations

from pathlib import Path

from kwsnet.callbacks.progress import KwsProgressBar
from kwsnet.cli import KwsCLI

from .conftest import KWS_RAW_CONFIG


def _cli(tmp_path: Path, *extra: str) -> KwsCLI:
    return KwsCLI(
        args=[
            "--config",
            KWS_RAW_CONFIG,
            "--trainer.logger",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            *extra,
        ],
        run=False,
        save_config_callback=None,
    )


def test_default_bar_is_throttled_rich(tmp_path: Path) -> None:
    bar = _cli(tmp_path).trainer.progress_bar_callback
    assert isinstance(bar, KwsProgressBar) and bar.refresh_rate == 10


def test_bar_off_and_user_bar_respected(tmp_path: Path) -> None:
    off = _cli(tmp_path, "--trainer.enable_progress_bar", "false").trainer
    assert off.progress_bar_callback is None
    assert not any(isinstance(cb, KwsProgressBar) for cb in off.callbacks)
    tqdm = _cli(tmp_path, "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar")
    assert type(tqdm.trainer.progress_bar_callback).__name__ == "TQDMProgressBar"


def test_updates_are_throttled_but_the_last_batch_always_updates(monkeypatch) -> None:
    bar = KwsProgressBar(refresh_rate=10)
    clock = [100.0]
    monkeypatch.setattr("kwsnet.callbacks.progress.time.monotonic", lambda: clock[0])
    due = []
    for i in range(10):  # 10 batches 10 ms apart: one interval (100 ms) holds them all
        due.append(bar._due(i, 10))
        clock[0] += 0.01
    assert due == [True] + [False] * 8 + [True]
    clock[0] += 0.2
    assert bar._due(0, 10)  # a new interval: updates again
    assert bar._due(3, float("inf")) is False  # infinite loaders never force an update
