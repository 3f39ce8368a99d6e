"""``ClassifierModule(compile=True)`` vs eager: training-step time of raw_conv and the Conformer.

    python benchmarks/bench_compile.py [--models raw_conv conformer] [--repeats 5] [--quick]

For each model, two ``ClassifierModule``s with the same weights, one with ``compile=True``
(``torch.compile`` of the backbone, default inductor backend), run the same training step
(forward, cross-entropy, backward, Adam) on the same fixed batch. The first compiled steps are
reported as compile time; then repeats alternate eager (baseline) and compiled (candidate)
blocks of steps. Ratio = eager step time / compiled step time (> 1: compile is faster).
The last line is ``RESULT {json}`` for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kwsnet.data.features import LogMel  # noqa: E402
from kwsnet.lit import ClassifierModule  # noqa: E402
from kwsnet.models.conformer import ConformerBackbone  # noqa: E402
from kwsnet.models.raw_conv import RawConv  # noqa: E402


def build(name: str, compile: bool, quick: bool) -> tuple[ClassifierModule, dict[str, Any]]:
    """The model ``name`` (raw_conv config / speaker_conformer config sizes) and a batch."""
    torch.manual_seed(0)
    if name == "raw_conv":
        model = ClassifierModule(RawConv(), num_classes=6, compile=compile)
        B, T = (16 if quick else 64), 16000
    else:
        backbone = ConformerBackbone(num_layers=1 if quick else 3)
        model = ClassifierModule(
            backbone, frontend=LogMel(normalize="mean"), num_classes=20, compile=compile
        )
        B, T = (4 if quick else 16), (16000 if quick else 48000)
    batch = {
        "audio": torch.randn(B, T) * 0.1,
        "lengths": torch.full((B,), T, dtype=torch.long),
        "label": torch.randint(0, model.num_classes, (B,)),
    }
    return model.train(), batch


def step_fn(model: ClassifierModule, batch: dict[str, Any]) -> Any:
    """A closure running one training step."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        logits = model(batch["audio"], batch["lengths"], batch["label"])
        loss = F.cross_entropy(logits, batch["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_model(name: str, repeats: int, steps: int, quick: bool) -> dict[str, Any]:
    """Compile time and median eager / compiled step times of one model."""
    eager, batch = build(name, False, quick)
    compiled, _ = build(name, True, quick)
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
    run_e, run_c = step_fn(eager, batch), step_fn(compiled, batch)
    t0 = time.perf_counter()
    run_c()
    run_c()  # the backward graph of the second call may recompile once
    compile_s = time.perf_counter() - t0
    if compiled.compile_error is not None:  # ClassifierModule fell back to eager
        print(f"{name}: torch.compile failed ({compiled.compile_error})", flush=True)
        row = {"model": name, "compile_error": compiled.compile_error, "ratio": None}
        print("PARTIAL " + json.dumps(row), flush=True)
        return row
    run_e()
    base, cand = [], []
    for _ in range(repeats):
        for run, out in ((run_e, base), (run_c, cand)):
            t = time.perf_counter()
            for _ in range(steps):
                run()
            out.append((time.perf_counter() - t) / steps)
    b, c = statistics.median(base), statistics.median(cand)
    print(
        f"{name}: compile (first 2 steps) {compile_s:.1f} s; eager {1e3 * b:.1f} ms/step, "
        f"compiled {1e3 * c:.1f} ms/step, speed-up {b / c:.2f}x",
        flush=True,
    )
    row = {
        "model": name,
        "batch": int(batch["label"].numel()),
        "compile_s": round(compile_s, 1),
        "eager_ms": round(1e3 * b, 2),
        "compiled_ms": round(1e3 * c, 2),
        "ratio": round(b / c, 3),
    }
    print("PARTIAL " + json.dumps(row), flush=True)  # run_all keeps it if a later model times out
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Benchmark each model; print and return the rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["raw_conv", "conformer"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per timed block")
    p.add_argument("--quick", action="store_true", help="raw_conv only, small batch")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.repeats, args.steps = ["raw_conv"], 2, 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    rows = [bench_model(m, args.repeats, args.steps, args.quick) for m in args.models]
    row = {"name": "compile", "rows": rows, "threads": torch.get_num_threads()}
    print("RESULT " + json.dumps(row))
    return row


if __name__ == "__main__":
    main()
