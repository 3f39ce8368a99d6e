"""Single-clip latency of the KWS models in C: C runtime vs PyTorch eager vs onnxruntime,
all on one thread, plus the model's FLOP count and the machine's single-core FLOP/s.

    python benchmarks/bench_cnative.py [--model all|raw_conv,kws_ds_cnn,...] [--repeats 300]
        [--layer-repeats 200] [--no-batch] [--placement per_conv] [--ln-acc]

``--model all`` (the default) runs ``raw_conv`` and every exported keyword config
(issue 29, item 5): kws_cnn_mel, kws_ds_cnn, kws_matchboxnet_96, kws_mel_best (kws_mel_aug is
the same network; it can be named too) and kws_bc_resnet, then prints one summary line per
model (C, eager, onnxruntime in ms, eager/C and ORT/C, and issue 29's targets: C at least 3x
faster than eager and 1.5x faster than onnxruntime) with the load average before and after.

A config model is ``configs/<name>.yaml``'s architecture built by the project's config builder
(``kwsnet.loading.build_from_config``, 10 classes, random weights and BatchNorm statistics) on
a clip of its ``data.clip_samples``, **front end included in every candidate**: C runs the
``kwsnet export --format cnative`` file (the FrontEnd op, kwsn_frontend.c, then the graph),
PyTorch the ClassifierModule in eval mode (LogMel / MFCC: torch.stft + torchaudio's
filterbank), onnxruntime the ``kwsnet export --format onnx`` graph (the front end as a DFT by
strided convolution; torch.stft does not export). Its op count is the C runtime's own
(``kwsn_model_ops``, the front end included). The three candidates' predictions are checked
equal on the timed clip.

Prints median latencies per C kernel path (baseline, AVX2, AVX-512: each forced with
KWSN_ISA, skipped when the CPU lacks it), ratios against PyTorch eager and onnxruntime from
the same run (interleaved rounds), a per-layer table (kwsn_forward_until prefixes,
interleaved; ``--layer-repeats 0`` skips it) on the widest path (raw_conv: and AVX2) with the
time per op type, and throughput (clips/s through one kwsn_forward_batch call vs one
kwsn_forward call per clip; ``--no-batch`` skips it). ``--ln-acc`` also builds the runtime with
float LayerNorm accumulation and compares both against PyTorch. ``raw_conv`` is the default
RawConv (16000 samples, channels 16/32/64, 6 classes) with random weights, with GFLOP/s against
the core's peak; latency does not depend on the weight values.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch load their BLAS

import argparse  # noqa: E402
import ctypes  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kwsnet.export.cnative import write_model  # noqa: E402
from kwsnet.export.layers import collect_named_layers, input_shape_of  # noqa: E402
from kwsnet.export.runtime import CNATIVE_DIR, CModel, build_cnative  # noqa: E402
from kwsnet.models.raw_conv import RawConv  # noqa: E402
from kwsnet.nn.heads import LinearHead  # noqa: E402


class Classifier(nn.Module):
    """backbone + head, as exported."""

    def __init__(self, placement: str) -> None:
        super().__init__()
        self.backbone = RawConv(norm_placement=placement)
        self.head = LinearHead(self.backbone.embed_dim, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 16000] -> logits [B, 6]``."""
        return self.head(self.backbone(x))


def median_us(fn: Callable[[], object], repeats: int, warmup: int = 20) -> float:
    """Median wall time of ``fn()`` in microseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def interleaved_median_us(
    fns: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float] | None = None
) -> dict:
    """Median wall time (us) of each of ``fns``, timed in rounds that call every candidate
    once, so load from other processes on a shared machine hits all of them alike and the
    ratios stay meaningful. ``clock``: another timer (e.g. ``time.thread_time``)."""
    clock = clock or time.perf_counter
    for fn in fns.values():
        for _ in range(10):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) * 1e6 for k, v in times.items()}


def c_forward_call(
    path: Path,
    x: np.ndarray,
    isa: str | None = None,
    n_run: int | None = None,
    tables: bool = True,
    lib: Path | None = None,
) -> tuple:
    """A prepared single-clip ``kwsn_forward`` call on kernel path ``isa`` (None: the CPU's
    pick), or ``kwsn_forward_until`` of the first ``n_run`` layers: ``(call, the path it
    runs, what must stay alive)``. ``tables=False``: without the loader's prebuilt tables
    (packed int8 weights, front-end twiddles), which the call then builds itself. ``lib``:
    another build of libkwsnet.so (bench_ab.py's base; default the tree's own)."""
    old = os.environ.get("KWSN_ISA")
    if isa is not None:
        os.environ["KWSN_ISA"] = isa  # read by the library at prepare
    try:
        cm = CModel(path, lib)
    finally:
        if old is None:
            os.environ.pop("KWSN_ISA", None)
        else:
            os.environ["KWSN_ISA"] = old
    if not tables:
        cm.drop_tables()
    so = cm._so
    xs = np.ascontiguousarray(x[0], dtype=np.float32)
    out = np.zeros(cm.n_classes, np.float32)
    so.kwsn_forward.restype = ctypes.c_int
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    so.kwsn_forward.argtypes = [vp, vp, sz, vp, sz, vp, sz]
    args = (cm._model, cm._arena.ctypes.data, cm.arena_bytes, xs.ctypes.data, xs.size)
    args += (out.ctypes.data, out.size)
    assert so.kwsn_forward(*args) == 0
    if n_run is not None:
        out = np.zeros(cm.out_len(n_run), np.float32)
        args = (*args[:5], n_run, out.ctypes.data, out.size)
        assert so.kwsn_forward_until(*args) == 0
        return (lambda: so.kwsn_forward_until(*args)), cm.isa, (cm, xs, out)
    return (lambda: so.kwsn_forward(*args)), cm.isa, (cm, xs, out)


def per_layer_us(path: Path, x: np.ndarray, repeats: int, isa: str | None = None) -> list:
    """Per-layer time on kernel path ``isa``: ``kwsn_forward_until`` of the first n layers
    for every n, timed in interleaved rounds (one call of each prefix per round) in this
    thread's CPU time (the C code runs in the calling thread; descheduled time, the main
    noise on a loaded machine, does not count); layer i's time is the difference between
    prefixes i + 1 and i (the ctypes overhead cancels), of their medians and of their
    minima (the least disturbed call: steadier on a loaded machine, where the median
    differences of small layers can come out negative). Returns
    ``[(layer name, ops, median-difference us, min-difference us)]``."""
    if repeats < 1:  # no rounds, no statistics (``--layer-repeats 0``: no table)
        return []
    calls = []
    keep = []
    with CModel(path) as cm:
        names, ops, n = cm.layer_names, cm.layer_ops, cm.n_layers
    for i in range(n + 1):
        call, _, alive = c_forward_call(path, x, isa, n_run=i)
        calls.append(call)
        keep.append(alive)
    for call in calls:
        for _ in range(10):
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for i, call in enumerate(calls):
            t0 = time.thread_time()
            call()
            times[i].append(time.thread_time() - t0)
    med = [statistics.median(t) * 1e6 for t in times]
    low = [min(t) * 1e6 for t in times]
    return [(names[i], ops[i], med[i + 1] - med[i], low[i + 1] - low[i]) for i in range(n)]


def print_per_layer(rows: list, isa: str, width: int = 18) -> None:
    """The per-layer table of per_layer_us (layer names in a column of ``width``)."""
    tot_med = sum(r[2] for r in rows)
    tot_min = sum(r[3] for r in rows)
    w = width
    print(f"per layer, {isa} path (differences of interleaved prefix times, thread CPU time):")
    print(
        f"  {'#':>3} {'layer':<{w}} {'ops':>9} {'median':>8} {'min':>8} {'share':>6} {'Gop/s':>6}"
    )
    for i, (name, ops, us, lo) in enumerate(rows):
        rate = ops / lo / 1e3 if lo > 0.05 else float("nan")
        share = lo / tot_min if tot_min else float("nan")
        print(f"  {i:>3} {name:<{w}} {ops:>9} {us:8.2f} {lo:8.2f} {share:6.1%} {rate:6.2f}")
    print(f"      {'sum':<{w}} {sum(r[1] for r in rows):>9} {tot_med:8.2f} {tot_min:8.2f}")
    print("     (us; share and Gop/s from the min column)")


def model_flops(named: list[tuple[str, nn.Module]], input_shape: tuple[int, ...]) -> dict:
    """FLOPs per clip: 2 per multiply-add in Conv1d/Linear; 1 per element operation elsewhere
    (pool window reads, ReLU compares; LayerNorm counted as 7 per element: sum, sub, square,
    sum, sub, mul, mul + add with affine)."""
    x = torch.zeros(1, *input_shape)
    macs = other = 0
    with torch.no_grad():
        for _, m in named:
            y = m(x)
            if isinstance(m, nn.Conv1d):
                macs += m.in_channels * m.out_channels * m.kernel_size[0] * y.shape[-1]
            elif isinstance(m, nn.Linear):
                macs += m.in_features * m.out_features
            elif isinstance(m, nn.LayerNorm):
                other += 8 * x.numel()
            elif isinstance(m, (nn.AvgPool1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d, nn.ReLU)):
                other += x.numel()
            x = y
    return {"macs": macs, "flops": 2 * macs + other, "other": other}


def ln_accumulator_report(tmp: Path) -> None:
    """Compare double vs float accumulation of LayerNorm statistics against PyTorch."""
    build_cnative("all")
    fbuild = tmp / "build-float"
    subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(CNATIVE_DIR),
            f"BUILD={fbuild}",
            "OPT=-O3 -DKWSN_LN_FLOAT_ACC",
            f"{fbuild}/libkwsnet.so",
        ],
        check=True,
    )
    libs = {"double": CNATIVE_DIR / "build/libkwsnet.so", "float": fbuild / "libkwsnet.so"}
    torch.manual_seed(0)
    print("\nLayerNorm statistics accumulator vs PyTorch (256 random rows each):")
    for name, shape, scale, offset in [
        ("LN[16,1000]", (16, 1000), 3.0, 1.0),
        ("LN[64,62]", (64, 62), 3.0, 0.0),
        ("LN(64)", (64,), 1.0, 0.0),
        ("LN[16,1000], mean 100", (16, 1000), 1.0, 100.0),
    ]:
        ln = nn.LayerNorm(list(shape)).eval()
        with torch.no_grad():
            ln.weight.normal_(1, 0.3)
            ln.bias.normal_(0, 0.3)
        x = torch.randn(256, *shape) * scale + offset
        with torch.no_grad():
            ref = ln(x).reshape(256, -1).numpy()
        write_model([ln], shape, tmp / "ln.kwsn", 0)
        cells = []
        for acc, lib in libs.items():
            with CModel(tmp / "ln.kwsn", lib) as cm:
                d = np.abs(cm.forward(x.numpy().reshape(256, -1)) - ref)
            exact = float(np.mean(d == 0)) * 100
            cells.append(f"{acc}: max|Δ| {d.max():.2g}, bit-exact {exact:.0f}%")
        print(f"  {name:<22} " + " | ".join(cells))


class MelClassifier(nn.Module):
    """configs/kws_cnn_mel.yaml's model (eval mode: no SpecAugment), ClassifierModule-shaped."""

    def __init__(self) -> None:
        super().__init__()
        from kwsnet.data.features import LogMel
        from kwsnet.models.cnn_mel import CnnMel

        self.frontend = LogMel(
            n_fft=480, win_length=480, hop_length=160, n_mels=40, normalize="mean"
        )
        self.backbone = CnnMel()
        self.head = LinearHead(self.backbone.embed_dim, 6)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.running_mean.normal_(0, 0.3, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)

    def embed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``x [B, 16000], lengths [B] -> [B, 48]``."""
        return self.backbone(*self.frontend(x, lengths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 16000] -> logits [B, 6]``, every sample valid."""
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        return self.head(self.embed(x, lengths))


# The exported keyword configs (issue 29, item 5), built from their YAML by the project's
# config builder (kwsnet.loading.build_from_config, as tests/test_onnx_any.py does), with 10
# classes (the speech_commands_real setting); kws_mel_aug is kws_mel_best's network (it differs
# in training augmentation only).
CONFIGS = ("kws_cnn_mel", "kws_ds_cnn", "kws_matchboxnet_96", "kws_mel_best", "kws_bc_resnet")
MODELS = ("raw_conv", *CONFIGS, "kws_mel_aug")
SYNTHETIC_10 = ["--data.source_options", '{"num_words": 10, "num_speakers": 2, "utterances": 1}']


def config_model(name: str) -> tuple[nn.Module, int]:
    """``configs/<name>.yaml``'s model in eval mode (random weights, random BatchNorm
    statistics and affines so no layer is an identity) and its clip length."""
    from kwsnet.loading import build_from_config

    torch.manual_seed(0)
    model, dm = build_from_config(str(ROOT / "configs" / f"{name}.yaml"), None, SYNTHETIC_10)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.normal_(0, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                if m.affine:
                    m.weight.normal_(1.0, 0.2, generator=g)
                    m.bias.normal_(0.0, 0.2, generator=g)
    return model.eval(), int(dm.clip_samples)


def speech_like_clip(samples: int) -> torch.Tensor:
    """``[1, samples]``: a tone plus noise at speech-like levels (latency does not depend on
    the values; the predictions of the three candidates are checked equal on it)."""
    g = torch.Generator().manual_seed(1)
    t = torch.arange(samples, dtype=torch.float32)
    return 0.3 * torch.sin(t * 0.05) + 0.05 * torch.randn(1, samples, generator=g)


def op_shares(rows: list, kinds: list[str]) -> list[tuple[str, float]]:
    """The per-layer table's min-difference time summed per op type, largest first, as
    shares of the sum."""
    total = sum(max(r[3], 0.0) for r in rows) or 1.0
    by: dict[str, float] = {}
    for kind, r in zip(kinds, rows, strict=True):
        by[kind] = by.get(kind, 0.0) + max(r[3], 0.0)
    return sorted(((k, v / total) for k, v in by.items()), key=lambda kv: -kv[1])


def bench_config(name: str, args: argparse.Namespace) -> dict:
    """``configs/<name>.yaml``: C (each kernel path) vs PyTorch eager vs onnxruntime, one
    clip, 1 thread, front end in all three: C runs the exported file (``kwsnet export
    --format cnative``: the FrontEnd op, kwsn_frontend.c, then the graph), eager the
    ClassifierModule (its LogMel / MFCC module: torch.stft + torchaudio's filterbank), and
    onnxruntime the ``kwsnet export --format onnx`` graph (ClipNet: the front end as a DFT by
    strided convolution). Returns the summary row."""
    from kwsnet.export.pipeline import export_model, model_graph

    model, clip = config_model(name)
    xt = speech_like_clip(clip)
    x = xt.numpy()
    lengths = torch.full((1,), clip, dtype=torch.long)
    paths = [n.path for n in model_graph(model, clip).nodes]  # type: ignore[union-attr]
    with torch.inference_mode():
        ref = model(xt, lengths).numpy()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        export_model(model, "cnative", tmp / "m.kwsn", clip_samples=clip)
        with CModel(tmp / "m.kwsn") as cm:
            arena, weights, ops = cm.arena_bytes, cm.weight_bytes, cm.ops
            fe_ops, kinds = cm.layer_ops[0], cm.layer_names
            c_out = cm.forward(x)
        assert (c_out.argmax(1) == ref.argmax(1)).all(), (name, c_out, ref)
        fns: dict[str, Callable[[], object]] = {}
        keep = []
        c_isa = "default"
        for isa in ("default", "avx2", "avx512"):
            call, ran, alive = c_forward_call(tmp / "m.kwsn", x, isa)
            if ran == isa:  # skipped when the CPU lacks it (the library falls back)
                fns[f"C {isa}"], c_isa = call, isa
                keep.append(alive)

        call, _, alive = c_forward_call(tmp / "m.kwsn", x, c_isa, n_run=1)
        fns["C front end"] = call  # layer 0 only, on the widest path
        keep.append(alive)

        def eager() -> None:
            with torch.inference_mode():
                model(xt, lengths)

        fns["eager"] = eager
        try:
            from kwsnet.export.onnx_export import OnnxRuntimeModel

            export_model(model, "onnx", tmp / "m.onnx", clip_samples=clip)
            orm = OnnxRuntimeModel(tmp / "m.onnx", threads=1)
            keep.append(orm)
            assert orm.forward(x).argmax() == ref.argmax(), name
            sess, feed = orm.session, {orm.input: x}
            fns["onnxruntime"] = lambda: sess.run(None, feed)
        except ImportError:
            pass
        med = interleaved_median_us(fns, args.repeats)
        torch_us, ort_us = med["eager"], med.get("onnxruntime")
        fe_us = med.pop("C front end")
        c_paths = {k[2:]: v for k, v in med.items() if k.startswith("C ")}
        c_us = c_paths[c_isa]
        print(
            f"\nmodel: {name} (configs/{name}.yaml: {type(model.frontend).__name__} + "
            f"{type(model.backbone).__name__} + {type(model.head).__name__}, "
            f"{c_out.shape[1]} classes, random weights), {len(kinds)} C layers, "
            f"arena {arena} B, weights {weights} B (front-end tables included)"
        )
        print(
            f"ops/clip (kwsn_model_ops): {ops / 1e6:.2f} M, of which the front end "
            f"{fe_ops / 1e6:.2f} M"
        )
        print(
            f"median single-clip latency over {args.repeats} rounds (each round calls every "
            "candidate once), 1 thread, front end included:"
        )
        for isa, us in c_paths.items():
            ratios = f"eager/C {torch_us / us:.2f}x"
            if ort_us is not None:
                ratios += f", ort/C {ort_us / us:.2f}x"
            print(f"  C {isa + ' path':<21} {us:9.1f} us   {ratios}")
        print(f"  C {c_isa} front end only {fe_us:9.1f} us   ({fe_us / c_us:.0%} of the C clip)")
        print(f"  PyTorch eager           {torch_us:9.1f} us   ({torch_us / c_us:.2f}x C {c_isa})")
        if ort_us is not None:
            print(f"  onnxruntime             {ort_us:9.1f} us   ({ort_us / c_us:.2f}x C {c_isa})")
        print("targets (issue 29): eager/C >= 3x, ort/C >= 1.5x")
        shares: list[tuple[str, float]] = []
        if args.layer_repeats > 0:
            rows = per_layer_us(tmp / "m.kwsn", x, args.layer_repeats, c_isa)
            named = [(f"{k} {p}", *r[1:]) for k, p, r in zip(kinds, paths, rows, strict=True)]
            print_per_layer(named, c_isa, max(len(r[0]) for r in named))
            shares = op_shares(rows, kinds)
            print(
                "  by op type (min column): "
                + ", ".join(f"{k} {v:.0%}" for k, v in shares if v >= 0.005)
            )
        if args.batch:
            report_batch(tmp / "m.kwsn", x)
    return {
        "model": name,
        "isa": c_isa,
        "c_us": c_us,
        "c_frontend_us": fe_us,
        "eager_us": torch_us,
        "ort_us": ort_us,
        "eager_over_c": torch_us / c_us,
        "ort_over_c": ort_us / c_us if ort_us is not None else None,
        "op_shares": shares,
    }


def print_summary(rows: list[dict], load: tuple[str, str]) -> None:
    """One line per model: C, eager, onnxruntime (ms), ratios, and whether issue 29's targets
    hold; the 1/5/15-min load averages before and after."""
    print(
        f"\nsummary, 1 thread, front end included (load average before {load[0]}, after {load[1]}):"
    )
    print(
        f"  {'model':<20} {'path':<8} {'C ms':>7} {'eager ms':>9} {'ORT ms':>8} "
        f"{'eager/C':>8} {'ORT/C':>7}  targets (3x, 1.5x)"
    )
    for r in rows:
        ort = r["ort_us"]
        ok = r["eager_over_c"] >= 3 and (ort is None or r["ort_over_c"] >= 1.5)
        ort_ms = f"{ort / 1e3:8.3f}" if ort is not None else f"{'-':>8}"
        ort_x = f"{r['ort_over_c']:6.2f}x" if ort is not None else f"{'-':>7}"
        print(
            f"  {r['model']:<20} {r['isa']:<8} {r['c_us'] / 1e3:7.3f} {r['eager_us'] / 1e3:9.3f}"
            f" {ort_ms} {r['eager_over_c']:7.2f}x {ort_x}  {'pass' if ok else 'MISS'}"
        )


def loadavg() -> str:
    """The 1/5/15-minute load averages."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--model",
        default="all",
        help=f"all, or a comma-separated list of {', '.join(MODELS)}",
    )
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--placement", default="per_conv", choices=["per_conv", "end", "none"])
    p.add_argument("--ln-acc", action="store_true", help="also compare LN accumulators")
    p.add_argument(
        "--layer-repeats", type=int, default=200, help="rounds of the per-layer table (0: none)"
    )
    p.add_argument(
        "--no-batch", dest="batch", action="store_false", help="skip the throughput line"
    )
    args = p.parse_args(argv)
    names = list(MODELS[:-1]) if args.model == "all" else args.model.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        p.error(f"unknown --model {unknown}; valid: all, {', '.join(MODELS)}")
    if args.repeats < 1 or args.layer_repeats < 0:
        p.error("--repeats must be >= 1 and --layer-repeats >= 0")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    build_cnative("all")
    load_before = loadavg()
    rows = []
    for name in names:
        if name == "raw_conv":
            rows.append(bench_raw(args))
        else:
            rows.append(bench_config(name, args))
    print_summary(rows, (load_before, loadavg()))
    return 0


def bench_raw(args: argparse.Namespace) -> dict:
    """raw_conv: C (each kernel path) vs PyTorch eager vs onnxruntime, in interleaved rounds."""
    torch.manual_seed(0)
    model = Classifier(args.placement).eval()
    named = collect_named_layers(model)
    shape = input_shape_of(model)
    x = (torch.randn(1, 16000) * 0.3).numpy()
    xt = torch.from_numpy(x)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        write_model(named, shape, tmp / "m.kwsn")
        with CModel(tmp / "m.kwsn") as cm:
            arena, weights, ops = cm.arena_bytes, cm.weight_bytes, cm.ops
            with torch.inference_mode():
                ref = model(xt).numpy()
            assert (cm.forward(x).argmax(1) == ref.argmax(1)).all()
        fns: dict[str, Callable[[], object]] = {}
        keep = []
        c_isa = "default"
        for isa in ("default", "avx2", "avx512"):
            call, ran, alive = c_forward_call(tmp / "m.kwsn", x, isa)
            if ran == isa:  # skipped when the CPU lacks it (the library falls back)
                fns[f"C {isa}"], c_isa = call, isa
                keep.append(alive)

        def eager() -> None:
            with torch.inference_mode():
                model(xt)

        fns["eager"] = eager
        try:
            import onnxruntime as ort

            from kwsnet.export.onnx_export import export_onnx

            export_onnx(named, shape, tmp / "m.onnx")
            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(tmp / "m.onnx"), so, providers=["CPUExecutionProvider"])
            fns["onnxruntime"] = lambda: sess.run(None, {"audio": x})
        except ImportError:
            pass
        med = interleaved_median_us(fns, args.repeats)
        fl = model_flops(named, shape)
        print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}")
        print(f"model: RawConv {args.placement}, arena {arena} B, weights {weights} B")
        print(
            f"FLOPs/clip: {fl['flops'] / 1e6:.2f} M ({fl['macs'] / 1e6:.2f} M MACs in conv/linear"
            f" + {fl['other'] / 1e6:.2f} M elementwise); kwsn_model_ops {ops / 1e6:.2f} M"
        )
        report_latency(med, c_isa, fl["flops"], args)
        shares: list[tuple[str, float]] = []
        if args.layer_repeats > 0:  # 0: no per-layer table (statistics of no rounds)
            for isa in dict.fromkeys((c_isa, "avx2")):
                if f"C {isa}" in fns:
                    rows = per_layer_us(tmp / "m.kwsn", x, args.layer_repeats, isa)
                    print_per_layer(rows, isa)
                    if isa == c_isa:
                        shares = op_shares(rows, [r[0] for r in rows])
        if args.batch:
            report_batch(tmp / "m.kwsn", x)
        if args.ln_acc:
            ln_accumulator_report(tmp)
    ort_us = med.get("onnxruntime")
    return {
        "model": "raw_conv",
        "isa": c_isa,
        "c_us": med["C " + c_isa],
        "c_frontend_us": None,
        "eager_us": med["eager"],
        "ort_us": ort_us,
        "eager_over_c": med["eager"] / med["C " + c_isa],
        "ort_over_c": ort_us / med["C " + c_isa] if ort_us is not None else None,
        "op_shares": shares,
    }


def report_latency(med: dict, c_isa: str, flops: float, args: argparse.Namespace) -> None:
    """The latency rows of one interleaved run: C paths, eager, onnxruntime, ratios, GFLOP/s
    against the core's measured peak (bench_peak.py)."""
    from bench_peak import peak_gflops

    torch_us, ort_us = med["eager"], med.get("onnxruntime")
    c_us = med["C " + c_isa]
    peaks = peak_gflops()
    print(
        "core peak (bench_peak.py, 12 chains, thread CPU time): "
        + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items())
        + " GFLOP/s"
    )
    print(
        f"median single-clip latency over {args.repeats} rounds (each round calls every "
        "candidate once), 1 thread; % of the mul+add peak of the path's vector width "
        "(the kernels emit no FMA; default: SSE2, against the 256-bit figure halved):"
    )
    for k, us in med.items():
        if not k.startswith("C "):
            continue
        g = flops / us / 1e3
        ratios = f"eager/C {torch_us / us:.2f}x"
        if ort_us is not None:
            ratios += f", ort/C {ort_us / us:.2f}x"
        ref = {"C avx512": peaks.get("512-bit mul+add"), "C avx2": peaks.get("256-bit mul+add")}
        half = peaks.get("256-bit mul+add")
        pk_val = ref.get(k, half / 2 if half else None)
        pk = f" ({g / pk_val:4.0%} of peak)" if pk_val else ""
        print(f"  {k + ' path':<23} {us:9.1f} us   {g:6.2f} GFLOP/s{pk}   {ratios}")
    print(f"  PyTorch eager           {torch_us:9.1f} us   ({torch_us / c_us:.2f}x C {c_isa})")
    if ort_us is not None:
        print(f"  onnxruntime             {ort_us:9.1f} us   ({ort_us / c_us:.2f}x C {c_isa})")
    print(f"C runtime (ctypes call)  {c_us:9.1f} us ({c_isa})")
    print(f"PyTorch eager / C = {torch_us / c_us:.2f}x")
    print("targets (issue 16): native eager/C >= 5x and ort/C >= 2x; avx2 eager/C >= 3x")


def report_batch(path: Path, x: np.ndarray, batch: int = 256, rounds: int = 9) -> None:
    """Clips/s of one kwsn_forward_batch call on `batch` clips vs `batch` kwsn_forward calls
    (one ctypes call per clip) on the auto-selected path: the median of interleaved rounds,
    timed in this thread's CPU time (the C code runs in the calling thread), since on a loaded
    machine a 20-ms loop is descheduled for most of its wall time."""
    xb = np.ascontiguousarray(np.repeat(x[:1], batch, axis=0), dtype=np.float32)
    call, isa, alive = c_forward_call(path, x)
    cm = alive[0]
    cm.forward(xb[:8])

    def per_clip() -> None:
        for _ in range(batch):
            call()

    fns = {"batch": lambda: cm.forward(xb), "per_clip": per_clip}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.thread_time()
            fn()
            times[k].append(time.thread_time() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"throughput on the {isa} path, {batch} clips, median of {rounds} interleaved rounds "
        f"(thread CPU time): one kwsn_forward_batch call {batch / med['batch']:,.0f} clips/s, "
        f"{batch} kwsn_forward calls {batch / med['per_clip']:,.0f} clips/s"
    )


if __name__ == "__main__":
    sys.exit(main())
