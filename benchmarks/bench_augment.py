"""Per-batch cost of each waveform augmentation vs one raw_conv training step.

    python benchmarks/bench_augment.py [--batch 64] [--samples 16000] [--repeats 7]
        [--threads 1] [--noise-dir DIR]

Times each augmentation of ``kwsnet.data.augment`` (every utterance augmented, ``p=1``) and
the full chain of ``configs/kws_raw_aug.yaml`` on a ``[batch, samples]`` batch, and one
training step of the raw_conv model (forward, cross-entropy, backward, Adam step) on the same
batch; prints the median CPU time of ``--repeats`` repeats (after one warm-up) and the ratio
augmentation / training step. ``--noise-dir`` defaults to the shared Speech Commands
``_background_noise_`` folder, else 10 s of generated white noise. On a shared machine other
jobs stretch wall time, so CPU time is measured; the ratios are the result.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from kwsnet.data.augment import AugmentChain, BackgroundNoise, Gain, SpeedPerturb, TimeShift
from kwsnet.models.raw_conv import RawConv

SHARED_NOISE = (
    Path(__file__).resolve().parents[2] / "shared/data/speech_commands_tts/_background_noise_"
)


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median CPU time of ``fn()`` in milliseconds over ``repeats`` runs, after one warm-up.

    CPU time of this process (``time.process_time``), not wall time: on a shared machine
    other jobs stretch wall time but not the work done; with one thread the two agree when
    the machine is idle.
    """
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1000.0 * statistics.median(times)


def _train_step(batch: int, samples: int) -> Callable[[], object]:
    """One raw_conv training step (forward, loss, backward, Adam) as a closure."""
    model = torch.nn.Sequential(RawConv(input_samples=samples), torch.nn.Linear(64, 6))
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    wave = torch.randn(batch, samples)
    labels = torch.randint(0, 6, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(wave), labels).backward()
        opt.step()

    return step


def main() -> None:
    """Parse the flags, time everything, print a table of ms and ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--samples", type=int, default=16000, help="samples per clip (default 16000)")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats (default 7)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--noise-dir", default=None, help="noise folder (default: see above)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench_augment_") as tmp:
        noise_dir = args.noise_dir
        if noise_dir is None:
            if SHARED_NOISE.is_dir():
                noise_dir = str(SHARED_NOISE)
            else:
                noise_dir = tmp
                rng = np.random.default_rng(0)
                sf.write(Path(tmp) / "white.wav", 0.1 * rng.standard_normal(160000), 16000)
        transforms = {
            "TimeShift(100 ms, pad)": TimeShift(max_shift_ms=100, p=1.0),
            "SpeedPerturb(0.9/1.0/1.1)": SpeedPerturb(p=1.0),
            "BackgroundNoise(5-20 dB)": BackgroundNoise(noise_dir, p=1.0),
            "Gain(+-6 dB)": Gain(p=1.0),
        }
        chain = AugmentChain(
            [
                TimeShift(p=0.8),
                SpeedPerturb(p=1.0),
                BackgroundNoise(noise_dir, p=0.8),
                Gain(p=0.5),
            ]
        )
        transforms["AugmentChain (kws_raw_aug.yaml)"] = chain
        wave = 0.1 * torch.randn(args.batch, args.samples)
        lengths = torch.full((args.batch,), args.samples, dtype=torch.long)
        step_ms = _median_ms(_train_step(args.batch, args.samples), args.repeats)
        print(
            f"batch {args.batch} x {args.samples} samples, {args.threads} thread(s), "
            f"median CPU time of {args.repeats}; noise from {noise_dir}"
        )
        print(f"{'':34s} {'ms/batch':>9s} {'x train step':>13s}")
        print(f"{'raw_conv train step (fwd+bwd+Adam)':34s} {step_ms:9.2f} {1.0:13.3f}")
        for name, module in transforms.items():
            module.train()
            ms = _median_ms(lambda m=module: m(wave, lengths), args.repeats)
            print(f"{name:34s} {ms:9.2f} {ms / step_ms:13.3f}")


if __name__ == "__main__":
    main()
