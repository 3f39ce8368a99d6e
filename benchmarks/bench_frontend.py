"""Front end: the C log-mel (cnative/src/kwsn_frontend.c) vs kwsnet's LogMel, per 1 s clip.

    python benchmarks/bench_frontend.py [--repeats 15] [--inner 20] [--quick] [--clips 0]
        [--mfcc] [--paths default avx2 avx512] [--lib OTHER/libkwsnet.so]

Baseline: ``LogMel`` (torch eager, 1 thread, ``no_grad``) on one ``[1, 16000]`` clip, the
shipped ``kws_cnn_mel`` front end (n_fft = win_length = 480, hop 160, 40 mels, mean
normalisation). Candidate: the C front end on the same clip with the tables taken from that
module (``frontend_tables``), timed as a bare ``kwsn_frontend_run`` ctypes call and through
the ``CFrontend`` binding (which adds the status check and the output array). Both give the
same features within the golden tests' tolerance (checked here too). Repeats alternate the
candidates; medians of ``--inner`` calls per repeat (process CPU time, 1 thread) and the
ratio eager / C are printed, and the last line is ``RESULT {json}``.

The C front end runs 4 frames per vector lane batch on the default path, 8 on avx2 and 16 on
avx512 (KWSN_ISA, read on every call): ``--paths`` times the bare call on each path this CPU
has (default: all of them), interleaved with the rest, and checks they give the same bytes.
``--lib`` also times the bare call through another build of the library (say, one built from
an older kwsn_frontend.c, for a before / after in the same run; its KWSN_ISA is left unset).
``--mfcc`` runs a 13-coefficient MFCC (same STFT and mels, meanvar) instead of the log-mel.

``--clips N`` also measures the parity on N real Speech Commands TTS clips
(../shared/data/speech_commands_tts, zero-padded to 1 s): max |Δ| of the log-mel above the
floor (mel >= 1e-3 x the clip's peak) and everywhere, and of the mean-normalised log-mel and
13-coefficient MFCC, C vs torch; and both sides' log-mel against a float64 STFT of the same
tables (``c_vs_f64_all``, ``torch_vs_f64_all``), which shows whose rounding the floor cells
carry; and the C FFT alone against that float64 STFT on every 10th frame, max |Δ|X|| over
the frame's max |X| (``fft_rel_f64``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kwsnet.data.features import MFCC, LogMel  # noqa: E402
from kwsnet.export.frontend import CFrontend, frontend_tables  # noqa: E402
from kwsnet.export.runtime import cpu_flags  # noqa: E402

SHARED_SC = ROOT.parent / "shared" / "data" / "speech_commands_tts"
# the front end's lane paths (KWSN_ISA) and the /proc/cpuinfo flag each needs
PATH_FLAGS = {"default": None, "avx2": "avx2", "avx512": "avx512f"}
FLOOR_REL = 1e-3


def _per_call(fn: Callable[[], object], inner: int) -> float:
    """CPU seconds of this process per call of ``fn``, averaged over ``inner`` calls after one
    warm-up (process time, not wall time: both sides run on one thread, and on a shared
    machine the wall clock also counts the other jobs' time slices)."""
    fn()
    t0 = time.process_time()
    for _ in range(inner):
        fn()
    return (time.process_time() - t0) / inner


def _parity(n_clips: int) -> dict[str, float]:
    """Max |Δ| C vs torch on ``n_clips`` real clips spread over the corpus (see the docstring)."""
    from kwsnet.data.audio import fit_length, read_audio

    paths = [p for p in sorted(SHARED_SC.glob("*/*.wav")) if not p.parent.name.startswith("_")]
    if not paths:
        raise SystemExit(f"--clips: no clips under {SHARED_SC}")
    paths = paths[:: max(1, len(paths) // n_clips)][:n_clips]
    lm = LogMel(n_fft=480, win_length=480, normalize="mean").eval()
    mf = MFCC(n_mfcc=13, n_fft=480, win_length=480, normalize="mean").eval()
    raw = CFrontend(replace(frontend_tables(lm), normalize=0))
    c_lm, c_mf = CFrontend(frontend_tables(lm)), CFrontend(frontend_tables(mf))
    tables = frontend_tables(lm)
    win64 = torch.from_numpy(tables.window).double()
    fb64 = torch.from_numpy(tables.fbank).double()
    keys = ("log_mel_above_floor", "log_mel_all", "log_mel_mean", "mfcc")
    keys += ("c_vs_f64_all", "torch_vs_f64_all", "fft_rel_f64")
    worst = dict.fromkeys(keys, 0.0)
    for path in paths:
        wave = fit_length(read_audio(path, 16000), 16000, random_crop=False)
        x = wave.numpy()
        with torch.no_grad():
            ref_raw = lm._log_mel(wave[None])[0].numpy().astype(np.float64)
            ref_lm = lm(wave[None])[0][0].numpy()
            ref_mf = mf(wave[None])[0][0].numpy()
        # float64 STFT / mel of the same tables: which side the floor cells' rounding is on
        spec = torch.stft(
            wave.double(),
            480,
            160,
            window=win64,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        exact = torch.log((spec.real.square() + spec.imag.square()).T @ fb64 + lm.eps).numpy()
        c_raw = raw(x)
        padded = torch.nn.functional.pad(wave[None, None], (240, 240), mode="reflect")[0, 0]
        fft_rel = 0.0
        for t in range(0, spec.shape[1], 10):  # the FFT alone on every 10th frame
            mag = spec[:, t].abs().numpy()
            got = np.sqrt(raw.power(padded[t * 160 : t * 160 + 480].numpy()).astype(np.float64))
            if mag.max() > 0:
                fft_rel = max(fft_rel, float(np.abs(got - mag).max() / mag.max()))
        d = np.abs(c_raw - ref_raw)
        mel = np.exp(ref_raw)
        above = mel - lm.eps >= FLOOR_REL * mel.max()
        for key, value in (
            ("log_mel_above_floor", d[above].max()),
            ("log_mel_all", d.max()),
            ("log_mel_mean", np.abs(c_lm(x) - ref_lm).max()),
            ("mfcc", np.abs(c_mf(x) - ref_mf).max()),
            ("c_vs_f64_all", np.abs(c_raw - exact).max()),
            ("torch_vs_f64_all", np.abs(ref_raw - exact).max()),
            ("fft_rel_f64", fft_rel),
        ):
            worst[key] = max(worst[key], float(value))
    worst["clips"] = len(paths)
    return worst


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time both; print medians and the ratio; return the row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=16000, help="clip length (default 1 s)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--inner", type=int, default=20, help="calls per timed repeat")
    p.add_argument("--quick", action="store_true", help="3 repeats of 2 calls")
    p.add_argument("--clips", type=int, default=0, help="real clips for the parity numbers")
    p.add_argument("--mfcc", action="store_true", help="MFCC(13, meanvar) instead of log-mel")
    p.add_argument("--paths", nargs="*", default=None, help="KWSN_ISA paths to time")
    p.add_argument("--lib", default=None, help="also time this libkwsnet.so's bare call")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.inner = 3, 2
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.mfcc:
        front: LogMel = MFCC(
            n_mfcc=13, n_fft=480, win_length=480, hop_length=160, n_mels=40, normalize="meanvar"
        ).eval()
    else:
        front = LogMel(
            n_fft=480, win_length=480, hop_length=160, n_mels=40, normalize="mean"
        ).eval()
    flags = cpu_flags()
    paths = [p for p in (args.paths if args.paths is not None else list(PATH_FLAGS))
             if PATH_FLAGS.get(p, "?") is None or PATH_FLAGS.get(p, "?") in flags]  # fmt: skip
    wave = (torch.randn(1, args.samples, generator=torch.Generator().manual_seed(0)) * 0.1).float()
    x = np.ascontiguousarray(wave[0].numpy())
    cf = CFrontend(frontend_tables(front))
    with torch.no_grad():
        ref = front(wave)[0][0].numpy()
    got = cf(x)
    max_diff = float(np.abs(got - ref).max())
    if max_diff > 1e-4:
        raise SystemExit(f"C and torch disagree: max |Δ| {max_diff:.3g}")

    # the bare C call: arguments prepared once, as a C caller holds them
    n = x.shape[0]
    scratch = np.empty(cf.scratch_floats(n), np.float32)
    out = np.empty((cf.tables.n_out, cf.frames(n)), np.float32)
    run = cf._so.kwsn_frontend_run
    fe_ref = ctypes.byref(cf._fe)
    xp, sp, op = x.ctypes.data, scratch.ctypes.data, out.ctypes.data

    def bare() -> None:
        run(fe_ref, xp, n, sp, op)

    def on_path(isa: str) -> Callable[[], None]:
        def call() -> None:
            os.environ["KWSN_ISA"] = isa  # read by every kwsn_frontend_run call
            run(fe_ref, xp, n, sp, op)

        return call

    isa_before = os.environ.get("KWSN_ISA")
    outs = {}
    for isa in paths:
        on_path(isa)()
        outs[isa] = out.tobytes()
    if len(set(outs.values())) > 1:
        raise SystemExit(f"the paths disagree: {sorted(outs)}")
    other = None
    if args.lib:
        cf_other = CFrontend(frontend_tables(front), args.lib)
        scratch_o = np.empty(cf_other.scratch_floats(n), np.float32)
        run_o, fe_o = cf_other._so.kwsn_frontend_run, ctypes.byref(cf_other._fe)
        so_, oo = scratch_o.ctypes.data, out.ctypes.data

        def other() -> None:
            run_o(fe_o, xp, n, so_, oo)

    def eager() -> None:
        with torch.no_grad():
            front(wave)

    times: dict[str, list[float]] = {"eager": [], "c_bare": [], "c_binding": []}
    times.update({f"c_{isa}": [] for isa in paths})
    if other is not None:
        times["c_lib"] = []
    for _ in range(args.repeats):
        times["eager"].append(_per_call(eager, args.inner))
        times["c_bare"].append(_per_call(bare, args.inner))
        times["c_binding"].append(_per_call(lambda: cf(x), args.inner))
        for isa in paths:
            times[f"c_{isa}"].append(_per_call(on_path(isa), args.inner))
        if isa_before is None:
            os.environ.pop("KWSN_ISA", None)
        else:
            os.environ["KWSN_ISA"] = isa_before
        if other is not None:
            times["c_lib"].append(_per_call(other, args.inner))
    us = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    row: dict[str, Any] = {
        "eager_us": round(us["eager"], 1),
        "c_us": round(us["c_bare"], 1),
        "c_binding_us": round(us["c_binding"], 1),
        "ratio": round(us["eager"] / us["c_bare"], 2),
        "ops": cf.ops(n),
        "scratch_bytes": 4 * cf.scratch_floats(n),
        "max_abs_diff_noise": max_diff,
        "paths_us": {isa: round(us[f"c_{isa}"], 1) for isa in paths},
        "load_avg": [round(v, 2) for v in os.getloadavg()],
    }
    if other is not None:
        row["lib"] = str(args.lib)
        row["lib_us"] = round(us["c_lib"], 1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}")
    kind = "MFCC 13, meanvar" if args.mfcc else "LogMel, mean"
    print(f"front end: {kind}, n_fft 480, hop 160, 40 mels; 1 s noise clip, 1 thread")
    la = os.getloadavg()
    when = time.strftime("%H:%M UTC", time.gmtime())
    print(f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} at {when}")
    print(f"median CPU time per clip over {args.repeats} repeats of {args.inner} calls:")
    print(f"  torch eager LogMel      {us['eager']:9.1f} us")
    print(f"  C kwsn_frontend_run     {us['c_bare']:9.1f} us   ({row['ratio']:.2f}x faster)")
    print(f"  C via CFrontend         {us['c_binding']:9.1f} us")
    lanes = {"default": 4, "avx2": 8, "avx512": 16}
    for isa in paths:
        print(f"  C KWSN_ISA={isa:<8} {us[f'c_{isa}']:9.1f} us   ({lanes[isa]} frames per batch)")
    if other is not None:
        print(f"  C --lib {args.lib}: {us['c_lib']:.1f} us")
    print(f"C ops {row['ops']}, scratch {row['scratch_bytes']} B, max |Δ| {max_diff:.3g}")
    if args.clips:
        if not SHARED_SC.is_dir():
            raise SystemExit(f"--clips needs {SHARED_SC}")
        par = _parity(args.clips)
        row["parity"] = par
        print(f"parity on {par['clips']} real clips (max |Δ| C vs torch):")
        for key in [k for k in par if k != "clips"]:
            print(f"  {key:<22} {par[key]:.3g}")
    print("RESULT " + json.dumps(row))
    return row


if __name__ == "__main__":
    main()
