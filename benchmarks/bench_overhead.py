"""Framework overhead: `kwsnet fit` (ClassifierModule + Trainer) vs a hand-written PyTorch loop.

    python benchmarks/bench_overhead.py [--config configs/kws_raw.yaml] [--epochs 60]
        [--repeats 3] [--quick]

Both train the same model (the config's frontend, backbone and head; the hand loop trains a
copy with its own Adam, lr 0.005) on the same in-memory training clips (the DataModule's
preloaded train split of Speech Commands TTS), batch size, thread count and determinism
setting. The framework side is the real thing: ``KwsCLI(args, run=False)`` then
``trainer.fit``, with the offline wandb logger, metrics, progress bar, checkpoints and
callbacks of the config. The hand loop indexes one stacked ``[N, T]`` tensor with a random
permutation and runs forward, ``cross_entropy``, backward and ``Adam.step``: nothing else.

The two are interleaved by epoch inside one fit: a callback runs one hand-loop epoch at the
start of every framework epoch, so each pair (hand epoch, framework epoch) runs seconds apart
under the same machine conditions. On these 2-core machines the throughput of one loop drifts
by +-20 % between runs seconds apart; pairing cancels that drift, comparing whole runs did
not (per-run ratios scattered 0.7-1.1 for the same code). Framework throughput is timed from
an epoch's first ``on_train_batch_start`` to its last ``on_train_batch_end`` (so it includes
fetching batches 2..n, every per-step hook, logging and metrics, but not validation or the
epoch-end checkpoint); the hand epoch is timed whole. Epoch 0 is warm-up. ``--repeats`` fits
run one after the other and their pairs are pooled: the ratio is the median over all pairs of
framework/hand samples/s (target >= 0.9), and each fit's own median is printed to show the
spread (about +-5 % between fits of 60 epochs on the 2-core dev machine). The same spans are
also measured in process CPU time (``time.process_time``) and that ratio is printed too. The
last line is ``RESULT {json}`` for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kwsnet.cli import KwsCLI  # noqa: E402

SC_ROOT = ROOT.parent / "shared" / "data" / "speech_commands_tts"


class HandLoop:
    """A minimal PyTorch training loop over one stacked tensor: the baseline.

    Args:
        model: the ``ClassifierModule`` whose frontend, backbone and head are copied (same
            weights at the start; the copy trains on its own).
        x: training clips ``[N, T]``; y: labels ``[N]``.
        batch_size: as in the framework run.
    """

    def __init__(self, model: pl.LightningModule, x: torch.Tensor, y: torch.Tensor, bs: int):
        self.frontend = copy.deepcopy(model.frontend).train()
        self.backbone = copy.deepcopy(model.backbone).train()
        self.head = copy.deepcopy(model.head).train()
        params = [*self.frontend.parameters(), *self.backbone.parameters(), *self.head.parameters()]
        self.opt = torch.optim.Adam(params, lr=0.005)
        self.x, self.y, self.bs = x, y, bs
        self.lengths = torch.full((bs,), x.shape[1], dtype=torch.long)
        self.gen = torch.Generator().manual_seed(0)

    def epoch(self) -> tuple[float, float, int]:
        """One epoch; returns wall seconds, CPU seconds and samples."""
        t0, c0 = time.perf_counter(), time.process_time()
        perm = torch.randperm(len(self.x), generator=self.gen)
        for i in range(0, len(self.x), self.bs):
            idx = perm[i : i + self.bs]
            xb, yb = self.x[idx], self.y[idx]
            feats, fl = self.frontend(xb, self.lengths[: len(idx)])
            logits = self.head(self.backbone(feats, fl), yb)
            loss = F.cross_entropy(logits, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0, time.process_time() - c0, len(self.x)


class Interleave(pl.Callback):
    """Runs a hand-loop epoch before each framework epoch and times both (see module doc)."""

    def __init__(self, hand: HandLoop) -> None:
        self.hand = hand
        self.pairs: list[dict[str, float]] = []  # per epoch after the first
        self._hand: tuple[float, float, int] | None = None
        self._t0: float | None = None
        self._c0 = self._last = self._last_cpu = 0.0
        self._n = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._hand = self.hand.epoch()
        self._t0, self._n = None, 0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._t0 is None:
            self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *a: Any
    ) -> None:
        self._last, self._last_cpu = time.perf_counter(), time.process_time()
        self._n += int(batch["label"].numel())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0 and self._t0 is not None and self._hand is not None:
            hw, hc, hn = self._hand
            fw, fc = self._last - self._t0, self._last_cpu - self._c0
            self.pairs.append(
                {"hand": hn / hw, "fw": self._n / fw, "hand_cpu": hn / hc, "fw_cpu": self._n / fc}
            )


def cli_args(config: str, epochs: int, root_dir: str, extra: list[str]) -> list[str]:
    """CLI flags of the benchmarked run: the config on Speech Commands TTS, in ``root_dir``."""
    return [
        "--config",
        config,
        "--data.source",
        "speech_commands",
        "--data.root",
        str(SC_ROOT),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        root_dir,
        "--trainer.logger.init_args.save_dir",
        root_dir,
        "--test_after_fit",
        "false",
        *extra,
    ]


def interleaved_run(config: str, epochs: int, extra: list[str]) -> list[dict[str, float]]:
    """One ``trainer.fit`` with a hand-loop epoch before each of its epochs; the pairs."""
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as tmp:
        cli = KwsCLI(args=cli_args(config, epochs, tmp, extra), run=False)
        dm, model = cli.datamodule, cli.model
        dm.setup("fit")
        ds = dm.datasets["train"]
        records = [ds[i] for i in range(len(ds))]
        x = torch.stack([r["audio"] for r in records])  # [N, T]
        y = torch.tensor([r["label"] for r in records])
        timer = Interleave(HandLoop(model, x, y, dm.batch_size))
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(model, datamodule=dm)
        logger = cli.trainer.logger
        if getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish()
    return timer.pairs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the interleaved fit; print medians and the ratio; return the row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/kws_raw.yaml")
    p.add_argument("--epochs", type=int, default=60, help="epochs per fit (pairs + 1 warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="fits; their pairs are pooled")
    p.add_argument("--quick", action="store_true", help="1 fit of 3 epochs")
    p.add_argument("--extra", nargs="*", default=[], help="more CLI flags for the fit")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats = 3, 1
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    pairs: list[dict[str, float]] = []
    per_fit: list[float] = []
    for r in range(args.repeats):
        fit_pairs = interleaved_run(args.config, args.epochs, args.extra)
        for i, q in enumerate(fit_pairs, start=1):
            print(
                f"fit {r} epoch {i}: hand loop {q['hand']:.0f} samples/s, kwsnet fit "
                f"{q['fw']:.0f}; ratio {q['fw'] / q['hand']:.2f}, "
                f"CPU-time ratio {q['fw_cpu'] / q['hand_cpu']:.2f}"
            )
        per_fit.append(statistics.median(q["fw"] / q["hand"] for q in fit_pairs))
        print(f"repeat {r}: median ratio of this fit {per_fit[-1]:.3f}", flush=True)
        pairs += fit_pairs
    b = statistics.median(q["hand"] for q in pairs)
    c = statistics.median(q["fw"] for q in pairs)
    ratio = statistics.median(q["fw"] / q["hand"] for q in pairs)
    cpu_ratio = statistics.median(q["fw_cpu"] / q["hand_cpu"] for q in pairs)
    row = {
        "name": "overhead",
        "baseline": round(b, 1),
        "candidate": round(c, 1),
        "ratio": round(ratio, 3),
        "cpu_ratio": round(cpu_ratio, 3),
        "unit": "samples/s",
        "target": 0.9,
        "pairs": len(pairs),
        "per_fit": [round(v, 3) for v in per_fit],
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"baseline hand loop: {b:.0f} samples/s (median of {len(pairs)} epochs)")
    print(f"candidate kwsnet fit: {c:.0f} samples/s")
    print(f"ratio (median of per-epoch ratios): {ratio:.3f} (target >= 0.9)")
    print(f"per-fit medians: {', '.join(f'{v:.3f}' for v in per_fit)}")
    print(f"CPU-time ratio (median): {cpu_ratio:.3f}")
    print("RESULT " + json.dumps(row))
    return row


if __name__ == "__main__":
    main()
