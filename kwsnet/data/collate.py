"""Sample records → one padded batch dict (the DataLoaders' ``collate_fn``)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["collate"]


def collate(records: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Pad records along time into a batch dict with ``lengths``; ``None`` records are dropped."""
    records = [r for r in records if r is not None]
    if not records:
        return {}
    lengths = torch.tensor([r["length"] for r in records], dtype=torch.long)
    first = records[0]["audio"]
    if all(r["audio"].shape == first.shape for r in records):
        audio = torch.stack([r["audio"] for r in records])
    else:
        # No zero fill of the whole batch: a multi-threaded fill_ of [64, 16000] takes ~70 ms
        # on oversubscribed cores (vs 0.04 ms on one thread); zero only the padded tails.
        audio = first.new_empty((len(records), int(lengths.max()), *first.shape[1:]))
        for i, r in enumerate(records):
            audio[i, : r["length"]] = r["audio"]
            audio[i, r["length"] :] = 0
    return {
        "audio": audio,
        "lengths": lengths,
        "label": torch.tensor([r["label"] for r in records], dtype=torch.long),
        "keyword": torch.tensor([r["keyword"] for r in records], dtype=torch.long),
        "speaker": torch.tensor([r["speaker"] for r in records], dtype=torch.long),
        "path": [r["path"] for r in records],
    }
