"""Run every benchmark and write docs/performance.md (target, measured ratio, pass/fail).

    python benchmarks/run_all.py [--quick] [--sweep] [--only overhead data ...] [--out PATH]

Each benchmark runs as its own subprocess (fresh process, its own threads) and its
``RESULT {json}`` line (or, for the other engineers' bench_cnative.py and bench_sweep.py, its
ratio line) becomes a table row. ``bench_sweep.py`` needs an idle machine, so it runs only
with ``--sweep``; without it the row says "not measured" with the load average. The page
records the machine, the load average before and after, and each command, because the
numbers are only comparable within one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kwsnet.fileio import atomic_write_text  # noqa: E402


@dataclass
class Row:
    """One line of the results table."""

    target: str
    measured: str
    ok: bool | None
    command: str
    conditions: str = ""


def _conditions() -> str:
    return f"load {os.getloadavg()[0]:.1f}, {time.strftime('%H:%M', time.gmtime())} UTC"


def _run(script: str, args: list[str], timeout: float) -> tuple[str, float]:
    cmd = [sys.executable, f"benchmarks/{script}", *args]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    t0 = time.monotonic()
    try:
        out = subprocess.run(
            cmd,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
        )
        text = out.stdout + ("" if out.returncode == 0 else "\n" + out.stderr[-2000:])
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        text += f"\nTIMEOUT after {timeout:.0f} s"
    keep = ("repeat", "baseline", "candidate", "ratio", "RESULT", "TIMEOUT", "Error", "speed-up")
    lines = [ln for ln in text.splitlines() if not ln.startswith("fit ")]  # per-epoch detail
    print("\n".join(ln for ln in lines if any(k in ln for k in keep)), flush=True)
    return text, time.monotonic() - t0


def _result(text: str) -> dict[str, Any] | None:
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT ") :]) if lines else None


def _cmd(script: str, args: list[str]) -> str:
    return f"`python benchmarks/{script} {' '.join(args)}`".replace(" `", "`")


def run_benchmarks(names: list[str], quick: bool, sweep: bool, timeout: float) -> list[Row]:
    """Run the selected benchmarks; return the table rows."""
    rows: list[Row] = []
    for name in names:
        start = len(rows)
        conditions = _conditions()
        rows += _benchmark_rows(name, quick, sweep, timeout)
        for r in rows[start:]:
            r.conditions = f"{conditions} → {_conditions()}"
    return rows


def _benchmark_rows(name: str, quick: bool, sweep: bool, timeout: float) -> list[Row]:
    """Run one benchmark; return its table rows."""
    q = ["--quick"] if quick else []
    rows: list[Row] = []
    if name == "overhead":
        args = q or ["--repeats", "3", "--epochs", "60"]
        r = _result(_run("bench_overhead.py", args, timeout)[0])
        rows.append(
            Row(
                "framework overhead: `kwsnet fit` raw_conv ≥ 0.9× hand-written loop samples/s",
                f"{r['ratio']:.2f}× (median of {r['pairs']} interleaved epoch pairs; per fit "
                f"{', '.join(f'{v:.2f}' for v in r['per_fit'])}; medians {r['candidate']:.0f} vs "
                f"{r['baseline']:.0f} samples/s); per CPU second {r['cpu_ratio']:.2f}×"
                if r
                else "failed",
                r is not None and r["ratio"] >= 0.9,
                _cmd("bench_overhead.py", args),
            )
        )
    if name == "data":
        args = q or ["--repeats", "3"]
        r = _result(_run("bench_data.py", args, timeout)[0])
        cmd = _cmd("bench_data.py", args)
        if r:
            rows.append(
                Row(
                    "data: waiting for batches from epoch 2 < 10% of step time",
                    f"{100 * r['wait_share']:.1f}%",
                    r["wait_share"] < 0.10,
                    cmd,
                )
            )
            rows.append(
                Row(
                    "data: epoch 1 load (decode) / epoch 2+ load (cache) ≥ 5×",
                    f"{r['epoch_ratio']:.0f}× ({r['epoch1_s']:.2f} s vs "
                    f"{r['epoch2_s']:.3f} s, {r['clips']} clips)",
                    r["epoch_ratio"] >= 5,
                    cmd,
                )
            )
            rows.append(
                Row(
                    f"data: first-epoch decode is parallel ({r['threads']} threads vs 1)",
                    f"{r['decode_ratio']:.2f}× ({r['decode_parallel_s']:.2f} s"
                    f" vs {r['decode_serial_s']:.2f} s)",
                    r["decode_ratio"] > 1.0,
                    cmd,
                )
            )
        else:
            rows.append(Row("data pipeline", "failed", False, cmd))
    if name == "features":
        args = q or ["--repeats", "5"]
        r = _result(_run("bench_features.py", args, timeout)[0])
        rows.append(
            Row(
                "features: batched log-mel on the device ≥ 5× per-sample",
                f"{r['ratio']:.1f}× ({r['candidate_ms']:.0f} vs {r['baseline_ms']:.0f} ms per "
                f"batch of {r['batch']}, {r['device']})"
                if r
                else "failed",
                r is not None and r["ratio"] >= 5,
                _cmd("bench_features.py", args),
            )
        )
    if name == "compile":
        args = q or ["--repeats", "3", "--steps", "2"]
        text = _run("bench_compile.py", args, timeout)[0]
        r = _result(text)
        if r is None:  # a model that timed out: keep the ones that finished
            done = [json.loads(ln[8:]) for ln in text.splitlines() if ln.startswith("PARTIAL ")]
            r = {"rows": done} if done else None
        for m in (r or {}).get("rows", []):
            rows.append(
                Row(
                    f"compile (optional, no target): {m['model']} train step, compiled vs eager",
                    f"{m['ratio']:.2f}× ({m['compiled_ms']:.0f} vs {m['eager_ms']:.0f} ms/step, "
                    f"batch {m['batch']}; compile {m['compile_s']:.0f} s)"
                    if m.get("ratio") is not None
                    else f"torch.compile failed, trained eager: {m.get('compile_error')}",
                    None,
                    _cmd("bench_compile.py", args),
                )
            )
        if not r or "name" not in r:
            rows.append(
                Row(
                    "compile (optional)",
                    f"a model failed or timed out after {timeout:.0f} s (see the log)",
                    None,
                    _cmd("bench_compile.py", args),
                )
            )
    if name == "memory":
        args = q or []
        r = _result(_run("bench_memory.py", args, timeout)[0])
        if r:
            gb, gc = r["cache_growth_unbounded_mb"], r["cache_growth_bounded_mb"]
            rows.append(
                Row(
                    f"memory: decoded-audio cache bounded by cache_limit_mb {r['limit_mb']:g} "
                    "(RSS growth over setup + 1 epoch, Speech Commands TTS)",
                    f"{gc:.0f} vs {gb:.0f} MiB unbounded",
                    gc < gb and gc <= r["limit_mb"] + 0.5 * (gb - r["limit_mb"]),
                    _cmd("bench_memory.py", args),
                )
            )
        for m in (r or {}).get("rows", []):
            rows.append(
                Row(
                    f"memory: {m['model']} peak RSS, cache_limit_mb {r['limit_mb']:g} vs unbounded",
                    f"{m['ratio']:.2f}× ({m['bounded_mb']} vs {m['unbounded_mb']} MiB, "
                    f"{m['spilled']} clips spilled)",
                    None,
                    _cmd("bench_memory.py", args),
                )
            )
        if not r:
            rows.append(Row("memory", "failed", False, _cmd("bench_memory.py", args)))
    if name == "cnative":
        args = ["--repeats", "30" if quick else "200"]
        text = _run("bench_cnative.py", args, timeout)[0]
        m = re.search(r"PyTorch eager / C = ([\d.]+)x", text)
        lat = re.search(r"C runtime \(ctypes call\)\s+([\d.]+) us", text)
        pt = re.search(r"PyTorch eager\s+([\d.]+) us", text)
        rows.append(
            Row(
                "C runtime (other engineer): PyTorch eager / C single-clip latency ≥ 3×",
                f"{float(m[1]):.1f}× ({lat[1]} vs {pt[1]} µs)" if m and lat and pt else "failed",
                bool(m) and float(m[1]) >= 3,
                _cmd("bench_cnative.py", args),
            )
        )
    if name == "sweep":
        load = os.getloadavg()[0]
        cmd = _cmd("bench_sweep.py", [])
        target = "sweeps (other engineer): 2 workers / 1 worker runs/hour ≥ 1.7×"
        if sweep:
            text = _run("bench_sweep.py", [], max(timeout, 1800))[0]
            m = re.search(r"throughput ratio \d+ vs 1 worker\(s\): ([\d.]+)x", text)
            rows.append(
                Row(
                    target,
                    f"{float(m[1]):.2f}× (1-min load {load:.1f} at start)" if m else "failed",
                    bool(m) and float(m[1]) >= 1.7,
                    cmd,
                )
            )
        else:
            measured = f"not measured: needs an idle machine (1-min load {load:.1f}); "
            rows.append(Row(target, measured + "run_all.py --sweep", None, cmd))
    return rows


def _old_rows(text: str, rerun: list[str]) -> list[str]:
    """Table lines of an earlier page whose benchmark was not rerun this time."""
    keep = []
    for line in text.splitlines():
        m = re.search(r"`python benchmarks/(\w+)\.py", line)
        if line.startswith("| ") and m and m[1].removeprefix("bench_") not in rerun:
            keep.append(line if line.count(" | ") >= 4 else line + " earlier run |")
    return keep


def write_page(
    rows: list[Row], out: Path, header: dict[str, str], rerun: list[str] | None = None
) -> None:
    """Write the results table and the run's conditions to ``out``, keeping the notes below.

    With ``rerun`` (the benchmarks run this time), rows of the other benchmarks are kept from
    the earlier page, with their own conditions.
    """
    verdict = {True: "pass", False: "**miss**", None: "n/a"}
    old = out.read_text() if out.exists() else ""
    kept = _old_rows(old, rerun) if rerun is not None else []
    lines = [
        "# Performance",
        "",
        "Written by `python benchmarks/run_all.py`; rerun it to refresh this table. Every ratio",
        "compares a baseline and a candidate measured interleaved in the same run on the same",
        "machine (medians of the repeats); compare numbers only within one table.",
        "",
        *[f"- {k}: {v}" for k, v in header.items()],
        "",
        "| target | measured | result | command | conditions (1-min load, time) |",
        "|---|---|---|---|---|",
        *kept,
        *[
            f"| {r.target} | {r.measured} | {verdict[r.ok]} | {r.command} | {r.conditions} |"
            for r in rows
        ],
        "",
    ]
    i = old.find("<!-- notes -->")
    notes = old[i:] if i >= 0 else ""
    atomic_write_text(out, "\n".join(lines) + ("\n" + notes if notes else ""))


ALL = ["overhead", "data", "features", "compile", "memory", "cnative", "sweep"]


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run, write the page."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="every benchmark's --quick mode")
    p.add_argument("--sweep", action="store_true", help="also run bench_sweep.py (idle machine)")
    p.add_argument(
        "--only", nargs="+", choices=ALL, default=ALL, help="run these; keep the other rows"
    )
    p.add_argument("--timeout", type=float, default=1200, help="seconds per benchmark")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    args = p.parse_args(argv)
    load0 = os.getloadavg()
    t0 = time.monotonic()
    rows = run_benchmarks(args.only, args.quick, args.sweep, args.timeout)
    load1 = os.getloadavg()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores "
        f"({len(os.sched_getaffinity(0))} usable), "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}",
        "conditions": f"1-min load average {load0[0]:.1f} at start, {load1[0]:.1f} at end "
        f"(the benchmarks' own threads count too: ~2 on this machine when nothing else "
        f"runs); {'quick' if args.quick else 'full'} mode; "
        f"{time.monotonic() - t0:.0f} s in all; {stamp}",
    }
    partial = sorted(set(ALL) - set(args.only))
    write_page(rows, args.out, header, rerun=args.only if partial else None)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
