"""Cost of streaming detection per hop and real-time factor: the C stream
(``kwsn_stream_push``, one core) against the Python ``Detector`` (PyTorch, one thread), and
the Python-vs-C detection agreement on long WAVs.

    python benchmarks/bench_stream.py --config configs/kws_raw.yaml \
        --config configs/kws_cnn_mel.yaml
    python benchmarks/bench_stream.py --ckpt_path run/best.ckpt --streams /tmp/streams

Cost: a stream of ``--seconds`` (tones + noise, or the first WAV under ``--streams``) pushed
``hop`` samples at a time, so every push scores exactly one window; each push is timed
(``perf_counter_ns`` around the ctypes call: a few microseconds of call overhead included),
with the frame cache (the default; a log-mel / MFCC model computes only each window's new
frames, and a streamable model such as StreamTCN runs incrementally: each new frame through
each layer once), with the frame cache alone (``incremental=False``) and without the cache, the
three passes interleaved in each repeat.
The median over pushes is the cost per hop; RTF = processing time / audio time. The Python
Detector is timed on the same stream (``Detector.detect``: windows batched 64 at a time).
Without a checkpoint the model is the config's, untrained (the cost does not depend on the
weights). Agreement (``--streams``): detections of the two sides matched by keyword and time
within one hop.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("WANDB_MODE", "offline")


def _stream(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f = 300 + 200 * np.sin(2 * np.pi * 0.3 * t)
    return (0.3 * np.sin(2 * np.pi * np.cumsum(f) / sr) + 0.05 * rng.standard_normal(n)).astype(
        np.float32
    )


def _build(config: str | None, ckpt: str | None, overrides: list[str]):
    from kwsnet.loading import build_from_config

    return build_from_config(config, ckpt, overrides)


def _match(c: list, py: list, hop_s: float) -> tuple[int, int]:
    """Greedy one-to-one matches (same keyword, |dt| <= one hop), and how many of those
    have the very same time."""
    used, n, same = set(), 0, 0
    for d in py:
        for i, e in enumerate(c):
            if i not in used and e.keyword == d.keyword and abs(e.time - d.time) <= hop_s + 1e-9:
                used.add(i)
                n += 1
                same += e.time == d.time
                break
    return n, same


def _c_pass(stream, wave: np.ndarray, window: int) -> tuple[list[int], float]:
    """One pass over the stream, one hop per push: each push's ns, and the loop's seconds."""
    hop = stream.hop
    stream.reset()
    stream.push(wave[: window - hop])
    times = []
    t_all = time.perf_counter()
    for i in range(window - hop, len(wave) - hop + 1, hop):
        t0 = time.perf_counter_ns()
        stream.push(wave[i : i + hop])
        times.append(time.perf_counter_ns() - t0)
    return times, time.perf_counter() - t_all


def bench(model, dm, label: str, args: argparse.Namespace, wave: np.ndarray | None) -> None:
    """Print one table row: C cost per hop and RTF by default (frame cache, incremental where
    the model allows), with the frame cache alone and without it (passes interleaved), and the
    Python Detector's, on one stream."""
    from kwsnet.detect import DetectorConfig
    from kwsnet.detect.cnative import CStream, export_module
    from kwsnet.detect.model import detector_from_module

    cfg = DetectorConfig(hop_ms=args.hop_ms)
    with tempfile.TemporaryDirectory() as tmp:
        ex = export_module(model, dm, Path(tmp) / "m.kwsn", label)
        cached = CStream(ex.path, ex.class_names, config=cfg)
        plain = CStream(cached.cmodel, ex.class_names, config=cfg, frame_cache=False)
        only = CStream(cached.cmodel, ex.class_names, config=cfg, incremental=False)
        sr = ex.sample_rate
        if wave is None:
            wave = _stream(args.seconds, sr)
        hop = cached.hop
        n_hops = (len(wave) - ex.window) // hop + 1
        times: dict[object, list[int]] = {True: [], False: [], "only": []}
        best = {k: float("inf") for k in times}
        for _ in range(args.repeats):
            for on, stream in ((True, cached), ("only", only), (False, plain)):
                t, loop = _c_pass(stream, wave, ex.window)
                times[on] += t
                best[on] = min(best[on], loop)
        c_us = {on: float(np.median(t)) / 1e3 for on, t in times.items()}
        audio_s = len(wave) / sr
        det = detector_from_module(model, ex.window, sr, cfg)
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        det.detect(wave)
        py_s = time.perf_counter() - t0
        py_us = py_s / n_hops * 1e6
        cache = "on" if cached.frame_cached else "n/a"
        inc = "on" if cached.incremental else "n/a"
        print(
            f"| {label} | {cached.cmodel.isa} | {hop} | {n_hops} | {cache} | {inc} | "
            f"{c_us[True]:.0f} | {c_us['only']:.0f} | {c_us[False]:.0f} | "
            f"{c_us[True] / c_us['only']:.2f} | {c_us[True] / c_us[False]:.2f} | "
            f"{c_us[True] * n_hops / 1e6 / audio_s:.4f} | {best[True] / audio_s:.4f} | "
            f"{py_us:.0f} | {py_s / audio_s:.4f} | {py_us / c_us[True]:.1f}x |"
        )


def agreement(model, dm, args: argparse.Namespace) -> None:
    """Python Detector vs C stream on every WAV under ``--streams``."""
    import soundfile as sf

    from kwsnet.detect import DetectorConfig
    from kwsnet.detect.cnative import CStream, export_module
    from kwsnet.detect.model import detector_from_module

    wavs = sorted(Path(args.streams).glob("*.wav"))
    waves = [sf.read(w, dtype="float32")[0] for w in wavs]
    with tempfile.TemporaryDirectory() as tmp:
        ex = export_module(model, dm, Path(tmp) / "m.kwsn", args.ckpt_path or "model")
        secs = sum(len(x) for x in waves) / ex.sample_rate
        for thr in args.threshold or [0.5]:
            cfg = DetectorConfig(hop_ms=args.hop_ms, threshold=thr)
            stream = CStream(ex.path, ex.class_names, config=cfg)
            det = detector_from_module(model, ex.window, ex.sample_rate, cfg)
            n_py = n_c = n_m = n_same = 0
            for x in waves:
                py = det.detect(x)
                c = stream.detect(x, chunk=args.chunk)
                n_py, n_c = n_py + len(py), n_c + len(c)
                m, same = _match(c, py, stream.hop / ex.sample_rate)
                n_m, n_same = n_m + m, n_same + same
            print(
                f"agreement over {len(wavs)} streams ({secs / 60:.1f} min), threshold {thr}: "
                f"Python {n_py} detections, C {n_c}, matched (same keyword, within one hop) "
                f"{n_m}, of which at the same time {n_same}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="a model config (repeatable)")
    p.add_argument("--ckpt_path", help="a trained checkpoint (its stored config)")
    p.add_argument("--streams", help="folder of stream WAVs: agreement (and the cost on the first)")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--hop_ms", type=float, default=100.0)
    p.add_argument("--threshold", type=float, action="append", help="repeatable (0.5)")
    p.add_argument("--chunk", type=int, default=1600, help="samples per push (agreement)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(
        "| model | C ISA | hop | hops | frame cache | incremental | C µs/hop (median) "
        "| C µs/hop, cache only | C µs/hop, no cache | default / cache only "
        "| default / no cache | C RTF (median) "
        "| C RTF (whole loop, best run) | Python µs/hop | Python RTF | C speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    wave = None
    if args.streams:
        import soundfile as sf

        wave = sf.read(sorted(Path(args.streams).glob("*.wav"))[0], dtype="float32")[0]
    for cfg in args.config:
        model, dm = _build(cfg, None, ["--data.source", "synthetic"])
        bench(model, dm, Path(cfg).stem, args, wave)
    if args.ckpt_path:
        model, dm = _build(None, args.ckpt_path, [])
        bench(model, dm, Path(args.ckpt_path).name, args, wave)
        if args.streams:
            agreement(model, dm, args)


if __name__ == "__main__":
    main()
