"""int8 vs float32 in the C runtime: latency per clip, arena, weight and file bytes, per path.

    python benchmarks/bench_int8.py [--model raw_conv|kws_cnn_mel|all|configs|NAME]
        [--repeats 300] [--layer-repeats 0] [--layer-isa avx512vnni,avx2] [--isa avx2,avx512vnni]
        [--per-call-tables]

The models are bench_cnative.py's (the default RawConv with per-conv LayerNorm, and
configs/kws_cnn_mel.yaml's architecture with its log-mel front end; ``--model configs``: the
other exported configs, kws_ds_cnn, kws_matchboxnet_96, kws_mel_best, kws_bc_resnet; random
weights and BatchNorm statistics: latency does not depend on the values). The int8 model is
quantised by ``kwsnet.quant`` (calibrated on 64 tone-plus-noise clips; the int8 kernels' cost
does not depend on the ranges either) and written as format version 3. Both files run through
the same library, one thread, single-clip ``kwsn_forward`` (float in, float logits out: the int8
model quantises its input or its front end's output and dequantises its logits), timed in
interleaved rounds per kernel path (KWSN_ISA default / avx2 / avxvnni / avx512 / avx512vnni,
skipped where the CPU lacks one), so machine load hits both alike; printed are the medians and
the int8 / float ratio of the same run. ``--layer-repeats N`` adds the per-layer table
(bench_cnative's interleaved prefix differences) of both models on the widest path, or on
``--layer-isa`` paths."""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch load their BLAS

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_cnative import (  # noqa: E402
    CONFIGS,
    Classifier,
    MelClassifier,
    c_forward_call,
    config_model,
    interleaved_median_us,
    per_layer_us,
    print_per_layer,
)

from kwsnet.export.cnative import write_graph  # noqa: E402
from kwsnet.export.runtime import CModel, build_cnative  # noqa: E402
from kwsnet.quant.format import write_quant  # noqa: E402
from kwsnet.quant.ptq import calibrate, quantize_graph  # noqa: E402
from kwsnet.quant.reference import run_int8  # noqa: E402
from kwsnet.quant.report import float_graph  # noqa: E402

ISAS = ("default", "avx2", "avxvnni", "avx512", "avx512vnni")


def calibration_clips(n: int = 64, seed: int = 0) -> torch.Tensor:
    """``[n, 16000]`` tones (80-2000 Hz) plus noise at random levels."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(16000, dtype=torch.float32) / 16000.0
    f = 80.0 + 1920.0 * torch.rand(n, 1, generator=g)
    amp = 0.05 + 0.4 * torch.rand(n, 1, generator=g)
    return amp * torch.sin(2 * torch.pi * f * t) + 0.02 * torch.randn(n, 16000, generator=g)


def write_pair(model: torch.nn.Module, tmp: Path) -> tuple[Path, Path, object]:
    """The float file (format 2 graph) and the int8 file (format 3) of ``model``."""
    graph = float_graph(model, 16000)
    f32, i8 = tmp / "f32.kwsn", tmp / "i8.kwsn"
    write_graph(graph, f32)  # type: ignore[arg-type]
    cal = calibration_clips()
    qgraph = quantize_graph(graph, calibrate(graph, [cal[:32], cal[32:]]))
    write_quant(qgraph, graph, i8)
    return f32, i8, qgraph


def bench(name: str, model: torch.nn.Module, args: argparse.Namespace) -> None:
    """One model: sizes, the int8 C output checked against the reference, latency per path."""
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        f32, i8, qgraph = write_pair(model.eval(), tmp)
        x = calibration_clips(1, seed=7).numpy()
        with CModel(f32) as a, CModel(i8) as b:
            want = run_int8(qgraph, torch.from_numpy(x)).codes.numpy()  # type: ignore[arg-type]
            got = b.forward_codes(x, b.n_layers)
            if qgraph.nodes[0].kind != "FrontEnd":  # type: ignore[attr-defined]
                assert np.array_equal(got.reshape(want.shape), want), "int8 C != reference"
            print(f"== {name}")
            print(
                f"file bytes: float {f32.stat().st_size}, int8 {i8.stat().st_size} "
                f"(ratio {i8.stat().st_size / f32.stat().st_size:.3f})"
            )
            print(
                f"weight bytes: float {a.weight_bytes}, int8 {b.weight_bytes} "
                f"(ratio {b.weight_bytes / a.weight_bytes:.3f}); arena bytes: float "
                f"{a.arena_bytes}, int8 {b.arena_bytes} (ratio {b.arena_bytes / a.arena_bytes:.3f})"
            )
            print(f"ops per clip: float {a.ops}, int8 {b.ops}")
        fns = {}
        keep = []
        paths = []
        arms = [("float", f32, True), ("int8", i8, True)]
        if args.per_call_tables:
            arms += [("float-pc", f32, False), ("int8-pc", i8, False)]
        for isa in args.isa or ISAS:
            for tag, path, tables in arms:
                call, ran, alive = c_forward_call(path, x, isa, tables=tables)
                if ran != isa:
                    break
                fns[f"{tag} {isa}"] = call
                keep.append(alive)
            else:
                paths.append(isa)
        med = interleaved_median_us(fns, args.repeats)
        print(f"median latency per clip ({args.repeats} interleaved rounds, one thread):")
        head = f"  {'path':<10} {'float us':>9} {'int8 us':>9} {'int8/float':>10}"
        if args.per_call_tables:
            head += f" {'float-pc us':>11} {'int8-pc us':>10} {'pc ratio':>8}"
        print(head)
        for isa in paths:
            fl, q = med[f"float {isa}"], med[f"int8 {isa}"]
            row = f"  {isa:<10} {fl:9.1f} {q:9.1f} {q / fl:10.3f}"
            if args.per_call_tables:
                fp, qp = med[f"float-pc {isa}"], med[f"int8-pc {isa}"]
                row += f" {fp:11.1f} {qp:10.1f} {qp / fp:8.3f}"
            print(row)
        if args.layer_repeats and paths:
            for isa in [p for p in args.layer_isa if p in paths] if args.layer_isa else paths[-1:]:
                for tag, path in (("float", f32), ("int8", i8)):
                    print(f"-- {tag}")
                    print_per_layer(per_layer_us(path, x, args.layer_repeats, isa), isa)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default="all",
        choices=["raw_conv", "kws_cnn_mel", "all", *CONFIGS[1:], "configs"],
        help="all: raw_conv and kws_cnn_mel; configs: the other exported configs (bench_cnative's, "
        "random weights and BatchNorm statistics); or one name",
    )  # fmt: skip
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--layer-repeats", type=int, default=0)
    p.add_argument(
        "--layer-isa", type=lambda v: v.split(","), default=None,
        help="comma-separated kernel paths of the per-layer tables (default: the widest)",
    )  # fmt: skip
    p.add_argument(
        "--isa", type=lambda v: v.split(","), default=None,
        help=f"comma-separated kernel paths to time (default: {','.join(ISAS)})",
    )  # fmt: skip
    p.add_argument(
        "--per-call-tables", action="store_true",
        help="also time both files without the loader's prebuilt tables (-pc columns: packed "
        "int8 weights and front-end twiddles built on every call, as before ABI 7)",
    )  # fmt: skip
    args = p.parse_args(argv)
    build_cnative("all")
    print(f"machine: {platform.machine()} {platform.processor() or ''}; torch {torch.__version__}")
    torch.manual_seed(0)
    if args.model in ("raw_conv", "all"):
        bench("raw_conv (RawConv 16/32/64, per-conv LayerNorm)", Classifier("per_conv"), args)
    if args.model in ("kws_cnn_mel", "all"):
        bench("kws_cnn_mel (front end included)", MelClassifier(), args)
    for name in CONFIGS[1:]:
        if args.model in (name, "configs"):
            model, samples = config_model(name)
            assert samples == 16000, f"{name}: {samples} samples per clip"
            bench(f"{name} (configs/{name}.yaml, front end included)", model, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
