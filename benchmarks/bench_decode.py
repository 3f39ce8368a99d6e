"""Why first-epoch decoding does not speed up with threads here: serial vs threads vs processes.

    python benchmarks/bench_decode.py [--copies 4] [--workers 2] [--repeats 3]

Decodes every wav of ``../shared/data/speech_commands_tts`` (listed ``--copies`` times, so there
is more work than one 0.1 s pass) with ``kwsnet.data.audio.read_audio`` three ways, interleaved:
in one thread (baseline), in a ``--workers`` thread pool (what ``AudioDataModule.preload``
does, ``data.decode_threads``), and in a ``--workers`` process pool (fork; float32 arrays are
pickled back, as a process-based preload would have to). It also reports the share of the
serial time spent inside libsndfile's read call (``soundfile.read``), the only part that runs
without the GIL. For contrast it times the preload of the built-in synthetic corpus (its
clips are rendered with numpy FFTs, which release the GIL) with 1 and ``--workers`` threads.
Diagnostic only (no target, not in ``run_all.py``); medians of the repeats. The last line is
``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kwsnet.data.audio import read_audio  # noqa: E402
from kwsnet.data.datamodule import AudioDataModule  # noqa: E402

SC_ROOT = ROOT.parent / "shared" / "data" / "speech_commands_tts"


def _decode(path: str) -> np.ndarray:
    return read_audio(path, 16000).numpy()


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _synthetic_preload(threads: int) -> float:
    dm = AudioDataModule(decode_threads=threads)
    return _timed(lambda: dm.setup("fit"))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time the three ways; print medians and ratios; return the row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=4, help="times each file is listed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    files = sorted(str(f) for f in SC_ROOT.rglob("*.wav")) * args.copies
    if not files:
        raise SystemExit(f"no wav files under {SC_ROOT}")
    ctx = mp.get_context("fork")
    serial, threads, procs, lib, syn1, synn = [], [], [], [], [], []
    for _ in range(args.repeats):
        serial.append(_timed(lambda: [_decode(f) for f in files]))
        with ThreadPoolExecutor(args.workers) as pool:
            threads.append(_timed(lambda pool=pool: list(pool.map(_decode, files))))
        with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            list(pool.map(_decode, files[:8]))  # start the workers outside the timing
            procs.append(_timed(lambda pool=pool: list(pool.map(_decode, files, chunksize=32))))
        lib.append(_timed(lambda: [sf.read(f, dtype="float32") for f in files]))
        syn1.append(_synthetic_preload(1))
        synn.append(_synthetic_preload(args.workers))
    s, t, pr, lb = (statistics.median(v) for v in (serial, threads, procs, lib))
    y1, yn = statistics.median(syn1), statistics.median(synn)
    print(f"{len(files)} decodes, {args.workers} workers")
    print(f"baseline serial: {s:.3f} s ({1e3 * s / len(files):.3f} ms per file)")
    print(f"candidate threads: {t:.3f} s, ratio {s / t:.2f}x")
    print(f"candidate processes: {pr:.3f} s, ratio {s / pr:.2f}x")
    print(f"soundfile.read alone: {lb:.3f} s ({100 * lb / s:.0f}% of the serial decode)")
    print(
        f"synthetic corpus preload: 1 thread {y1:.2f} s, {args.workers} threads {yn:.2f} s, "
        f"ratio {y1 / yn:.2f}x"
    )
    row = {
        "name": "decode",
        "files": len(files),
        "serial_s": round(s, 3),
        "threads_s": round(t, 3),
        "processes_s": round(pr, 3),
        "thread_ratio": round(s / t, 2),
        "process_ratio": round(s / pr, 2),
        "soundfile_read_share": round(lb / s, 3),
        "synthetic_serial_s": round(y1, 3),
        "synthetic_threads_s": round(yn, 3),
        "synthetic_ratio": round(y1 / yn, 2),
        "workers": args.workers,
        "repeats": args.repeats,
    }
    print("RESULT " + json.dumps(row))
    return row


if __name__ == "__main__":
    main()
