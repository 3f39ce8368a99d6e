"""Data pipeline: parallel first-epoch decoding, cached later epochs, time waiting for batches.

    python benchmarks/bench_data.py [--threads 2] [--repeats 3] [--quick]

On the Speech Commands TTS training split (``../shared/data/speech_commands_tts``), each repeat
builds a fresh ``AudioDataModule`` and measures, interleaved:

* decode: the preload with 1 thread (baseline) and with ``--threads`` (candidate);
* epoch load: epoch 1 = decode + one pass of the train loader (``preload: true``, so the
  decoding happens at setup), epochs 2+ = one pass of the loader over the cache. Target:
  epoch 1 / epoch 2+ >= 5;
* waiting: a raw_conv training loop (forward, backward, Adam) over the cached loader; the
  time spent in ``next(loader)`` as a share of the step time. Target < 10 %.

Prints medians and ratios; the last line is ``RESULT {json}`` for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kwsnet.data.datamodule import AudioDataModule  # noqa: E402
from kwsnet.models.raw_conv import RawConv  # noqa: E402
from kwsnet.nn.heads import LinearHead  # noqa: E402

SC_ROOT = ROOT.parent / "shared" / "data" / "speech_commands_tts"


def _datamodule(threads: int, quick: bool) -> AudioDataModule:
    if quick:  # the built-in synthetic corpus: no files, seconds to run
        return AudioDataModule(
            source_options={"num_words": 3, "num_speakers": 4, "utterances": 10},
            decode_threads=threads,
        )
    return AudioDataModule(source="speech_commands", root=str(SC_ROOT), decode_threads=threads)


def decode_seconds(threads: int, quick: bool) -> tuple[float, AudioDataModule]:
    """Wall time of the train split's preload with ``threads`` threads."""
    dm = _datamodule(threads, quick)
    t0 = time.perf_counter()
    dm._dataset("train")
    return time.perf_counter() - t0, dm


def loader_pass_seconds(dm: AudioDataModule) -> float:
    """Wall time of one pass over the train loader (collate included)."""
    t0 = time.perf_counter()
    for _ in dm.train_dataloader():
        pass
    return time.perf_counter() - t0


def wait_share(dm: AudioDataModule, epochs: int) -> float:
    """Share of raw_conv training-step time spent waiting for the next batch (epochs 2+)."""
    backbone = RawConv()
    head = LinearHead(backbone.embed_dim, dm.num_classes)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=0.005)
    wait = total = 0.0
    for epoch in range(epochs):
        it = iter(dm.train_dataloader())
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            t1 = time.perf_counter()
            if batch is None:
                break
            loss = F.cross_entropy(head(backbone(batch["audio"])), batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if epoch > 0:
                wait += t1 - t0
                total += time.perf_counter() - t0
    return wait / total


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the measurements; print medians and ratios; return the rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="loader passes after the first")
    p.add_argument("--quick", action="store_true", help="tiny synthetic corpus, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.epochs = 1, 1
    serial, parallel, first, later, waits = [], [], [], [], []
    for r in range(args.repeats):
        t1, _ = decode_seconds(1, args.quick)
        tn, dm = decode_seconds(args.threads, args.quick)
        serial.append(t1)
        parallel.append(tn)
        first.append(tn + loader_pass_seconds(dm))
        later.append(statistics.median(loader_pass_seconds(dm) for _ in range(args.epochs)))
        waits.append(wait_share(dm, 1 + args.epochs))
        print(
            f"repeat {r}: decode 1 thread {t1:.2f} s, {args.threads} threads {tn:.2f} s; "
            f"epoch 1 load {first[-1]:.2f} s, later {later[-1]:.3f} s; "
            f"waiting {100 * waits[-1]:.1f}% of step time",
            flush=True,
        )
    s, pll = statistics.median(serial), statistics.median(parallel)
    f, lt, w = statistics.median(first), statistics.median(later), statistics.median(waits)
    n = len(dm.datasets["train"])
    print(f"clips: {n} (train split)")
    print(
        f"decode: baseline 1 thread {s:.2f} s, candidate {args.threads} threads {pll:.2f} s, "
        f"ratio {s / pll:.2f}x"
    )
    print(
        f"epoch load: baseline epoch 1 {f:.2f} s, candidate epoch 2+ {lt:.3f} s, "
        f"ratio {f / lt:.1f}x (target >= 5)"
    )
    print(f"waiting for batches from epoch 2: {100 * w:.1f}% of step time (target < 10%)")
    row = {
        "name": "data",
        "clips": n,
        "decode_serial_s": round(s, 3),
        "decode_parallel_s": round(pll, 3),
        "decode_ratio": round(s / pll, 2),
        "epoch1_s": round(f, 3),
        "epoch2_s": round(lt, 4),
        "epoch_ratio": round(f / lt, 1),
        "wait_share": round(w, 4),
        "threads": args.threads,
        "repeats": args.repeats,
    }
    print("RESULT " + json.dumps(row))
    return row


if __name__ == "__main__":
    main()
