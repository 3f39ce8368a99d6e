"""Features: batched log-mel on the training device vs per-sample log-mel, same batch.

    python benchmarks/bench_features.py [--batch 64] [--repeats 7] [--quick]

Baseline: the ``LogMel`` front end applied to each clip alone (what a per-sample transform in
the dataset or a worker does; ``[1, T]`` calls, one per clip). Candidate: one ``LogMel`` call on
the padded batch ``[B, T]`` with lengths (what ``ClassifierModule`` does on the device). Both
use the same threads and give the same features (checked). On a CUDA machine the candidate
also runs on the GPU. Repeats alternate baseline and candidate; medians and the ratio (target
>= 5) are printed, and the last line is ``RESULT {json}`` for ``run_all.py``. It also times
the power-spectrum step alone on the batch's STFT: torchaudio's ``abs().pow(2)`` vs the
``re² + im²`` that ``LogMel`` uses (``power_abs_ms`` / ``power_re_im_ms``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kwsnet.data.features import LogMel  # noqa: E402


def _seconds(fn: Callable[[], object], sync: Callable[[], None], inner: int) -> float:
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    sync()
    return (time.perf_counter() - t0) / inner


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time both; print medians and the ratio; return the row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--samples", type=int, default=16000, help="clip length (default 1 s)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--inner", type=int, default=5, help="calls per timed repeat")
    p.add_argument("--quick", action="store_true", help="batch 16, 3 repeats of 1 call")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.inner = 16, 3, 1
    torch.manual_seed(0)
    wave = torch.randn(args.batch, args.samples) * 0.1
    lengths = torch.full((args.batch,), args.samples, dtype=torch.long)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    front = LogMel(normalize="mean").eval()
    dev_front = LogMel(normalize="mean").eval().to(device)
    dev_wave, dev_lengths = wave.to(device), lengths.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def per_sample() -> list[torch.Tensor]:
        return [front(w[None], lengths[i : i + 1])[0] for i, w in enumerate(wave)]

    def batched() -> torch.Tensor:
        return dev_front(dev_wave, dev_lengths)[0]

    with torch.inference_mode():
        ref = torch.cat(per_sample())
        got = batched().cpu()
        if not torch.allclose(ref, got.reshape(ref.shape), atol=1e-3, rtol=1e-3):
            raise SystemExit("batched and per-sample log-mel differ")
        base, cand = [], []
        for _ in range(args.repeats):
            base.append(_seconds(per_sample, lambda: None, args.inner))
            cand.append(_seconds(batched, sync, args.inner))
        spec = front.mel.spectrogram
        stft = torch.stft(
            wave, spec.n_fft, spec.hop_length, spec.win_length, spec.window, return_complex=True
        )
        pa = statistics.median(
            _seconds(lambda: stft.abs().pow(2), lambda: None, args.inner)
            for _ in range(args.repeats)
        )
        pr = statistics.median(
            _seconds(lambda: stft.real.square() + stft.imag.square(), lambda: None, args.inner)
            for _ in range(args.repeats)
        )
    b, c = statistics.median(base), statistics.median(cand)
    print(
        f"power spectrum of the batch STFT: abs().pow(2) {1e3 * pa:.2f} ms, "
        f"re^2 + im^2 {1e3 * pr:.2f} ms"
    )
    print(f"batch {args.batch} x {args.samples} samples, {torch.get_num_threads()} threads")
    print(f"baseline per-sample (cpu): {1e3 * b:.2f} ms per batch")
    print(f"candidate batched ({device.type}): {1e3 * c:.2f} ms per batch")
    print(f"ratio: {b / c:.1f}x (target >= 5)")
    row = {
        "name": "features",
        "baseline_ms": round(1e3 * b, 3),
        "candidate_ms": round(1e3 * c, 3),
        "ratio": round(b / c, 2),
        "device": device.type,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "power_abs_ms": round(1e3 * pa, 3),
        "power_re_im_ms": round(1e3 * pr, 3),
    }
    print("RESULT " + json.dumps(row))
    return row


if __name__ == "__main__":
    main()
