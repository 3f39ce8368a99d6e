"""The decoded-audio cache is bounded by default, per process and across DataLoader workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, get_worker_info

from kwsnet.data.datamodule import DEFAULT_CACHE_LIMIT_MB, AudioDataModule, RecordDataset

TINY = {"num_words": 3, "num_speakers": 4, "utterances": 10}  # 96 train, 12 val clips
CLIP_BYTES = 16000 * 4
CLIP_MB = CLIP_BYTES / 2**20


def test_default_cache_is_bounded_and_null_is_unbounded() -> None:
    dm = AudioDataModule(source_options=TINY)
    assert dm.cache_budget.limit == DEFAULT_CACHE_LIMIT_MB * 2**20 == 2048 * 2**20
    assert dm.cache_dir is None  # beyond the bound: decoded again, nothing written
    assert AudioDataModule(source_options=TINY, cache_limit_mb=None).cache_budget.limit is None


def _counting_loads(dm: AudioDataModule) -> list[int]:
    """Make ``dm.source.load`` count its calls in the returned one-element list."""
    calls, load = [0], dm.source.load

    def counted(item: Any) -> torch.Tensor:
        calls[0] += 1
        return load(item)

    dm.source.load = counted  # type: ignore[method-assign]
    return calls


def _records(ds: RecordDataset) -> list[torch.Tensor]:
    ds.train = False  # centred, not random crops
    return [ds[i]["audio"] for i in range(len(ds))]


@pytest.mark.parametrize("disk", [False, True])
def test_a_dataset_beyond_the_budget_stays_within_it(tmp_path: Path, disk: bool) -> None:
    ref = AudioDataModule(source_options=TINY, cache_limit_mb=None)
    ref.setup("fit")
    cache_dir = str(tmp_path / "cache") if disk else None
    dm = AudioDataModule(source_options=TINY, cache_limit_mb=10.5 * CLIP_MB, cache_dir=cache_dir)
    loads = _counting_loads(dm)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) == 96 and len(val) == 12
    in_memory = sum(s is not None for ds in (train, val) for s in ds.cache)
    assert in_memory == 10 and dm.cache_budget.used == 10 * CLIP_BYTES <= dm.cache_budget.limit
    if disk:  # every clip decoded once, the ones beyond the bound kept on disk
        assert loads[0] == 108 and train.spilled + val.spilled == 108 - 10
        assert len(list((tmp_path / "cache").glob("*.pt"))) == 98
    else:  # the preload stopped when the cache was full: no decode thrown away wholesale
        assert loads[0] < len(train) and train.spilled == val.spilled == 0
    for a, b in zip(_records(ref.datasets["train"]), _records(train), strict=True):
        assert torch.equal(a, b)
    assert sum(s is not None for s in train.cache) == 10  # reading them all kept no more
    assert dm.cache_budget.used == 10 * CLIP_BYTES


def _worker_budget(records: list[dict[str, Any] | None]) -> dict[str, int]:
    """collate_fn reporting, from inside a DataLoader worker, that worker's budget."""
    info = get_worker_info()
    assert info is not None
    budget = info.dataset.budget
    return {"worker": info.id, "used": budget.used, "limit": budget.limit}


def test_dataloader_workers_split_what_the_main_process_left(tmp_path: Path) -> None:
    """Each worker holds its own cache: together they stay within the limit, not one limit
    per worker."""
    dm = AudioDataModule(source_options=TINY, cache_limit_mb=9 * CLIP_MB, preload=False)
    ds = dm._dataset("train")
    for i in range(3):  # the main process caches 3 clips before the workers start
        ds.decode(i)
    loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=_worker_budget)
    seen: dict[int, dict[str, int]] = {}
    for report in loader:
        seen[report["worker"]] = report
    assert sorted(seen) == [0, 1]
    assert all(r["limit"] == 3 * CLIP_BYTES + 3 * CLIP_BYTES for r in seen.values())
    assert all(r["used"] == 6 * CLIP_BYTES for r in seen.values())  # 3 shared + 3 of its own
    assert dm.cache_budget.used == 3 * CLIP_BYTES  # the main process's own count is unchanged
