"""Framework overhead: `kwsnet fit` (ClassifierModule + Trainer) vs a hand-written PyTorch loop.

    python benchmarks/bench_overhead.py [--config configs/kws_raw.yaml] [--repeats 3] [--quick]

Both train the same model (the config's backbone + head, Adam lr 0.005) on the same in-memory
training tensors (the DataModule's preloaded train split of Speech Commands TTS), batch size,
thread count and determinism setting. The framework side is the real thing: ``KwsCLI(args,
run=False)`` then ``trainer.fit``, with the offline wandb logger, metrics, progress bar and
checkpoints of the config. Throughput is training samples/s over the batches of every epoch
after the first (warm-up), timed from each epoch's first ``on_train_batch_start`` to its last
``on_train_batch_end`` (validation and checkpointing are outside). Repeats alternate
baseline/candidate in one process; the ratio is the median of the per-repeat ratios (target
>= 0.9). On a shared machine whose load swings within seconds, wall-clock throughput of
back-to-back runs can differ 5x for the same code, so the same spans are also measured in
process CPU time (``time.process_time``: this process's threads only, not other jobs'), and
that ratio is printed too. The last line is ``RESULT {json}`` for ``run_all.py``.
"""

from __future__ import annotations

import argparse
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


class _TrainTimer(pl.Callback):
    """Sum of the train-batch span of every epoch after the first, and the samples in it."""

    def __init__(self) -> None:
        self.seconds = self.cpu_seconds = 0.0
        self.samples = 0
        self._t0: float | None = None
        self._c0 = self._last = self._last_cpu = 0.0
        self._n = 0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._t0 is None:
            self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *a: Any
    ) -> None:
        self._last, self._last_cpu = time.perf_counter(), time.process_time()
        self._n += int(batch["label"].numel())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0 and self._t0 is not None:
            self.seconds += self._last - self._t0
            self.cpu_seconds += self._last_cpu - self._c0
            self.samples += self._n
        self._t0, self._n = None, 0


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


def framework_run(config: str, epochs: int, extra: list[str]) -> tuple[float, float]:
    """Samples per wall second and per CPU second of ``trainer.fit`` after the first epoch."""
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as tmp:
        cli = KwsCLI(args=cli_args(config, epochs, tmp, extra), run=False)
        timer = _TrainTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        logger = cli.trainer.logger
        if getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish()
    return timer.samples / timer.seconds, timer.samples / timer.cpu_seconds


def hand_run(config: str, epochs: int, extra: list[str]) -> tuple[float, float]:
    """Samples per wall and per CPU second of a minimal PyTorch loop on the same model,
    tensors and batch size."""
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as tmp:
        cli = KwsCLI(
            args=[*cli_args(config, epochs, tmp, extra), "--trainer.logger", "false"],
            run=False,
            save_config_callback=None,
        )
    dm, model = cli.datamodule, cli.model
    dm.setup("fit")
    ds = dm.datasets["train"]
    x = torch.stack([ds[i]["audio"] for i in range(len(ds))])  # [N, T]
    y = torch.tensor([ds[i]["label"] for i in range(len(ds))])
    frontend, backbone, head = model.frontend, model.backbone, model.head
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    bs = dm.batch_size
    lengths = torch.full((bs,), x.shape[1], dtype=torch.long)
    model.train()
    seconds = cpu_seconds = 0.0
    samples = 0
    for epoch in range(epochs):
        perm = torch.randperm(len(x))
        t0, c0 = time.perf_counter(), time.process_time()
        n = 0
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            xb, yb = x[idx], y[idx]
            feats, fl = frontend(xb, lengths[: len(idx)])
            logits = head(backbone(feats, fl), yb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(idx)
        if epoch > 0:
            seconds += time.perf_counter() - t0
            cpu_seconds += time.process_time() - c0
            samples += n
    return samples / seconds, samples / cpu_seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Alternate hand loop / framework runs; print medians and the ratio; return the row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/kws_raw.yaml")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run, first is warm-up")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="2 epochs, 1 repeat")
    p.add_argument("--extra", nargs="*", default=[], help="more CLI flags for both sides")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats = 2, 1
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    base, cand, ratios, cpu_ratios = [], [], [], []
    for r in range(args.repeats):
        bw, bc = hand_run(args.config, args.epochs, args.extra)
        cw, cc = framework_run(args.config, args.epochs, args.extra)
        base.append(bw)
        cand.append(cw)
        ratios.append(cw / bw)
        cpu_ratios.append(cc / bc)
        print(
            f"repeat {r}: hand loop {bw:.0f} samples/s ({bc:.0f} per CPU s), kwsnet fit "
            f"{cw:.0f} ({cc:.0f} per CPU s); ratio {cw / bw:.2f}, CPU-time ratio {cc / bc:.2f}",
            flush=True,
        )
    b, c = statistics.median(base), statistics.median(cand)
    ratio, cpu_ratio = statistics.median(ratios), statistics.median(cpu_ratios)
    row = {
        "name": "overhead",
        "baseline": round(b, 1),
        "candidate": round(c, 1),
        "ratio": round(ratio, 3),
        "cpu_ratio": round(cpu_ratio, 3),
        "unit": "samples/s",
        "target": 0.9,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"baseline hand loop: {b:.0f} samples/s (median of {args.repeats})")
    print(f"candidate kwsnet fit: {c:.0f} samples/s")
    print(f"ratio (median of per-repeat ratios): {ratio:.3f} (target >= 0.9)")
    print(f"CPU-time ratio (median): {cpu_ratio:.3f}")
    print("RESULT " + json.dumps(row))
    return row


if __name__ == "__main__":
    main()
