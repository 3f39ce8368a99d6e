"""Peak RSS of `kwsnet fit` runs (raw_conv, Conformer), with an unbounded and a bounded cache.

    python benchmarks/bench_memory.py [--limit-mb 4] [--quick]

Each run is a subprocess (``python train.py fit ...``) whose peak resident set size comes from
``os.wait4`` (``ru_maxrss``: the largest RSS of the process, or of a child it waited for). For
each model the baseline run keeps every decoded clip in memory (``data.cache_limit_mb: null``,
the default) and the candidate bounds it (``--limit-mb``, spilling the rest to a temporary
``data.cache_dir``). raw_conv trains 2 epochs on Speech Commands TTS (720 clips, 46 MB of
float32 audio); the Conformer (configs/speaker_conformer.yaml, VoxCeleb TTS) 1 epoch of 3
batches. Peak RSS of a whole run is dominated by the ~1 GiB of libraries and need not grow
by the cache's size (memory freed after imports is reused), so the cache itself is measured
too: the growth of the current RSS (``VmRSS``) over ``setup("fit")`` and one pass of the train
loader, in a fresh process per setting, after ``malloc_trim`` (freed heap pages would
otherwise stay in the process and hide what the cache holds). Prints every number and
candidate / baseline; the last line is ``RESULT {json}``.
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


_CACHE_PROBE = """
import ctypes, re, sys
from kwsnet.data.datamodule import AudioDataModule
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read())[1]) / 1024
kw = eval(sys.argv[1])
before = rss()
dm = AudioDataModule(**kw)
dm.setup("fit")
for _ in dm.train_dataloader():
    pass
ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back: count live memory only
print(rss() - before)
"""


def cache_growth_mb(kwargs: dict[str, Any]) -> float:
    """Growth of the current RSS in MiB over a DataModule's setup and one train pass."""
    out = subprocess.run(
        [sys.executable, "-c", _CACHE_PROBE, repr(kwargs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure each model with and without the cache bound; print and return the rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["raw_conv", "conformer"])
    p.add_argument("--limit-mb", type=float, default=4.0)
    p.add_argument("--quick", action="store_true", help="raw_conv on a tiny synthetic corpus")
    args = p.parse_args(argv)
    if args.quick:
        args.models = ["raw_conv"]
    data: dict[str, Any] = (
        {"source_options": {"num_words": 3, "num_speakers": 4, "utterances": 10}}
        if args.quick
        else {"source": "speech_commands", "root": str(SC_ROOT)}
    )
    with tempfile.TemporaryDirectory(prefix="bench_memory_cache_") as cache:
        grow_base = cache_growth_mb(data)
        grow_cand = cache_growth_mb({**data, "cache_limit_mb": args.limit_mb, "cache_dir": cache})
    print(
        f"decoded-audio cache: RSS growth over setup + one epoch {grow_base:.0f} MiB unbounded, "
        f"{grow_cand:.0f} MiB with cache_limit_mb {args.limit_mb:g}",
        flush=True,
    )
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
    row = {
        "name": "memory",
        "limit_mb": args.limit_mb,
        "cache_growth_unbounded_mb": round(grow_base, 1),
        "cache_growth_bounded_mb": round(grow_cand, 1),
        "rows": rows,
    }
    print("RESULT " + json.dumps(row))
    return row


if __name__ == "__main__":
    main()
