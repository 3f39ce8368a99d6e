"""Peak RSS of `kwsnet fit` runs (raw_conv, Conformer), with an unbounded and a bounded cache.

    python benchmarks/bench_memory.py [--limit-mb 4] [--quick]

Each run is a subprocess (``python train.py fit ...``) whose peak resident set size comes from
``os.wait4`` (``ru_maxrss``: the largest RSS of the process, or of a child it waited for). For
each model the baseline run keeps every decoded clip in memory (``data.cache_limit_mb: null``,
the default) and the candidate bounds it (``--limit-mb``, spilling the rest to a temporary
``data.cache_dir``). raw_conv trains 2 epochs on Speech Commands TTS (720 clips, 46 MB of
float32 audio); the Conformer (configs/speaker_conformer.yaml, VoxCeleb TTS) 1 epoch of 3
batches. Prints peak RSS per run and candidate / baseline; the last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SC_ROOT = ROOT.parent / "shared" / "data" / "speech_commands_tts"


def run_args(model: str, quick: bool) -> list[str]:
    """CLI flags of one benchmarked run."""
    if model == "raw_conv":
        data = (
            ["--data.source_options", "{num_words: 3, num_speakers: 4, utterances: 10}"]
            if quick
            else ["--data.source", "speech_commands", "--data.root", str(SC_ROOT)]
        )
        return [
            "--config",
            "configs/kws_raw.yaml",
            *data,
            "--trainer.max_epochs",
            "1" if quick else "2",
        ]
    return [
        "--config",
        "configs/speaker_conformer.yaml",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "1",
    ]


def peak_rss_mb(args: list[str]) -> float:
    """Peak RSS in MiB of ``train.py fit <args>`` in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        cmd = [
            sys.executable,
            "train.py",
            "fit",
            *args,
            "--test_after_fit",
            "false",
            "--trainer.default_root_dir",
            tmp,
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
        ]
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure each model with and without the cache bound; print and return the rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["raw_conv", "conformer"])
    p.add_argument("--limit-mb", type=float, default=4.0)
    p.add_argument("--quick", action="store_true", help="raw_conv on a tiny synthetic corpus")
    args = p.parse_args(argv)
    if args.quick:
        args.models = ["raw_conv"]
    rows = []
    for model in args.models:
        base = peak_rss_mb(run_args(model, args.quick))
        with tempfile.TemporaryDirectory(prefix="bench_memory_cache_") as cache:
            bounded = ["--data.cache_limit_mb", str(args.limit_mb), "--data.cache_dir", cache]
            cand = peak_rss_mb(run_args(model, args.quick) + bounded)
            spilled = len(list(Path(cache).glob("*.pt")))
        print(
            f"{model}: peak RSS unbounded cache {base:.0f} MiB, cache_limit_mb "
            f"{args.limit_mb:g} {cand:.0f} MiB ({spilled} clips spilled), "
            f"ratio {cand / base:.2f}",
            flush=True,
        )
        rows.append(
            {
                "model": model,
                "unbounded_mb": round(base),
                "bounded_mb": round(cand),
                "spilled": spilled,
                "ratio": round(cand / base, 3),
            }
        )
    row = {"name": "memory", "limit_mb": args.limit_mb, "rows": rows}
    print("RESULT " + json.dumps(row))
    return row


if __name__ == "__main__":
    main()
