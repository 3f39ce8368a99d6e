"""The decoded-audio cache bound (memory up to ``cache_limit_mb``, disk beyond) and a smoke run
of each benchmark's ``--quick`` mode."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from kwsnet.data.datamodule import AudioDataModule

REPO = Path(__file__).resolve().parents[1]
TINY = {"num_words": 3, "num_speakers": 4, "utterances": 10}


def _train_signals(dm: AudioDataModule) -> list[torch.Tensor]:
    ds = dm.datasets["train"]
    return [ds[i]["audio"] for i in range(len(ds))]


def test_cache_limit_spills_to_disk_and_reads_back_equal(tmp_path: Path) -> None:
    ref = AudioDataModule(source_options=TINY)
    ref.setup("fit")
    clip_mb = 16000 * 4 / 2**20
    dm = AudioDataModule(source_options=TINY, cache_limit_mb=3.5 * clip_mb, cache_dir=str(tmp_path))
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    in_memory = sum(s is not None for ds in (train, val) for s in ds.cache)
    assert in_memory == 3  # the budget is shared by the splits
    assert dm.cache_budget.used <= dm.cache_budget.limit
    spilled = sorted(tmp_path.glob("*.pt"))
    assert len(spilled) == train.spilled + val.spilled == len(train) + len(val) - 3
    ref.datasets["train"].train = dm.datasets["train"].train = False  # centred, not random crops
    for a, b in zip(_train_signals(ref), _train_signals(dm), strict=True):
        assert torch.equal(a, b)
    # a second DataModule with the same params reads the disk cache instead of decoding
    dm2 = AudioDataModule(source_options=TINY, cache_limit_mb=0, cache_dir=str(tmp_path))
    dm2.source.load = None  # type: ignore[assignment]  # decoding would fail
    ds2 = dm2._dataset("val")
    assert all(s is None for s in ds2.cache) and ds2.spilled == 0


def test_cache_key_changes_with_params(tmp_path: Path) -> None:
    a = AudioDataModule(source_options=TINY, cache_limit_mb=0, cache_dir=str(tmp_path))
    b = AudioDataModule(
        source_options=TINY, cache_limit_mb=0, cache_dir=str(tmp_path), sample_rate=8000
    )
    ds_a, ds_b = a._dataset("val"), b._dataset("val")
    assert ds_a.spill_path(0) != ds_b.spill_path(0)


def test_unbounded_cache_writes_nothing() -> None:
    dm = AudioDataModule(source_options=TINY)
    dm.setup("fit")
    assert dm.cache_dir is None
    assert all(s is not None for s in dm.datasets["train"].cache)


def test_negative_cache_limit_is_rejected() -> None:
    with pytest.raises(ValueError, match="cache_limit_mb"):
        AudioDataModule(cache_limit_mb=-1)


def _bench(name: str) -> object:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


@pytest.mark.parametrize(
    ("script", "keys"),
    [
        ("bench_features", {"baseline_ms", "candidate_ms", "ratio"}),
        ("bench_data", {"decode_ratio", "epoch_ratio", "wait_share"}),
    ],
)
def test_benchmark_quick_mode_reports_baseline_candidate_ratio(
    script: str, keys: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    row = _bench(script).main(["--quick"])  # type: ignore[attr-defined]
    assert keys <= set(row)
    out = capsys.readouterr().out
    assert "baseline" in out and "candidate" in out and "ratio" in out
    assert json.loads(out.strip().splitlines()[-1].removeprefix("RESULT ")) == row


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_overhead", "bench_compile", "bench_memory"])
def test_slow_benchmark_quick_mode(script: str) -> None:
    module = _bench(script)
    sc = getattr(module, "SC_ROOT", None)  # bench_overhead trains on the shared fixture
    if sc is not None and not Path(sc).is_dir():
        pytest.skip(f"{sc} is absent (../shared/data holds the real-audio fixtures)")
    row = module.main(["--quick"])  # type: ignore[attr-defined]
    assert row["name"] in script


def test_run_all_writes_table_and_keeps_notes(tmp_path: Path) -> None:
    run_all = _bench("run_all")
    page = tmp_path / "performance.md"
    page.write_text("old table\n<!-- notes -->\n## Notes\nkept\n")
    rows = [run_all.Row("t ≥ 5×", "6×", True, "`cmd`"), run_all.Row("u", "x", None, "`c`")]
    run_all.write_page(rows, page, {"machine": "m"})
    text = page.read_text()
    assert "| t ≥ 5× | 6× | pass | `cmd` |" in text and "| n/a |" in text
    assert text.endswith("## Notes\nkept\n") and "old table" not in text


def test_run_all_partial_run_keeps_other_rows(tmp_path: Path) -> None:
    run_all = _bench("run_all")
    page = tmp_path / "performance.md"
    rows = [
        run_all.Row("a", "1×", True, "`python benchmarks/bench_data.py`", "load 1"),
        run_all.Row("b", "2×", False, "`python benchmarks/bench_memory.py`", "load 2"),
    ]
    run_all.write_page(rows, page, {})
    new = [run_all.Row("a", "9×", True, "`python benchmarks/bench_data.py`", "load 3")]
    run_all.write_page(new, page, {}, rerun=["data"])
    text = page.read_text()
    assert "| b | 2× | **miss** | `python benchmarks/bench_memory.py` | load 2 |" in text
    assert "| a | 9× |" in text and "| a | 1× |" not in text


def test_decode_diagnostic_runs_on_shared_data() -> None:
    sc = REPO.parent / "shared" / "data" / "speech_commands_tts"
    if not sc.is_dir():
        pytest.skip(f"{sc} is absent (../shared/data holds the real-audio fixtures)")
    row = _bench("bench_decode").main(["--repeats", "1", "--copies", "1"])  # type: ignore[attr-defined]
    assert row["files"] > 100 and row["serial_s"] > 0
    assert row["thread_ratio"] > 0 and row["process_ratio"] > 0 and row["synthetic_ratio"] > 0


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the C runtime")
def test_bench_int8_runs_and_checks_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    """bench_int8 (raw_conv): the int8 C codes equal the integer reference (asserted inside),
    sizes and the int8 / float latency ratio per kernel path are printed."""
    assert _bench("bench_int8").main(["--model", "raw_conv", "--repeats", "3"]) == 0  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "int8/float" in out and "arena bytes: float" in out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("  default")]
    assert rows and float(rows[0][-1]) > 0


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc builds the peak kernels")
def test_bench_peak_kernels_are_12_independent_chains(capsys: pytest.CaptureFixture[str]) -> None:
    """bench_peak's timed loops, read from their assembly (gcc -S), for every kernel this gcc
    can build (whether or not this CPU runs it): the accumulating instruction writes 12 distinct
    registers, once per chain per iteration, and every other instruction of the step is there 12
    times too. The old program (all chains started equal) reads as the one chain gcc merged them
    into: the check can fail. Then the quick run prints the table (12 registers on every row)
    and the machine load; its speeds are not asserted."""
    bp = _bench("bench_peak")
    built = [k for k in bp.KERNELS if bp.compiles(k)]  # type: ignore[attr-defined]
    assert {k.name for k in built} >= {"256-bit mul+add", "512-bit FMA", "512-bit vpdpbusd"}
    for k in built:
        regs = bp.chain_registers(k)  # type: ignore[attr-defined]
        assert len(regs) == 12 and len(set(regs)) == 12, (k.name, k.isa, regs)
        assert len(bp.chain_registers(k, chains=1)) == 1  # type: ignore[attr-defined]
    old = bp.chain_registers(bp.KERNELS[2], equal_starts=True)  # type: ignore[attr-defined]
    assert len(set(old)) == 1, f"equal starts no longer merged by this gcc: {old}"
    assert bp.main(["--quick"]) == 0  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "load average" in out and "clock estimate" in out
    runnable = {k.name for k in bp.available()}  # type: ignore[attr-defined]
    rows = [r for r in map(str.split, out.splitlines()) if " ".join(r[:2]) in runnable]
    assert len(rows) >= len(runnable) > 0
    assert all(r[-1] == "12" and float(r[3]) > 0 for r in rows)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the C runtime")
def test_bench_cnative_times_every_exported_config(capsys: pytest.CaptureFixture[str]) -> None:
    """bench_cnative (issue 29, item 5) on every model of ``--model all``, each config built
    from its YAML, exported to C and ONNX and checked to predict alike (asserted inside), two
    rounds, ``--layer-repeats 0`` (no per-layer table: it used to crash on the empty
    statistics): one summary row per model with C, eager and onnxruntime times and ratios."""
    bc = _bench("bench_cnative")
    argv = ["--model", "all", "--repeats", "2", "--layer-repeats", "0", "--no-batch"]
    assert bc.main(argv) == 0  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    summary = out[out.index("\nsummary, 1 thread") :].splitlines()[3:]
    names = [r.split()[0] for r in summary if r.strip()]
    assert names == ["raw_conv", *bc.CONFIGS]  # type: ignore[attr-defined]
    ort = importlib.util.find_spec("onnxruntime") is not None
    for row in summary:
        cells = row.split()
        assert float(cells[2]) > 0 and float(cells[3]) > 0 and cells[-1] in ("pass", "MISS")
        if ort:
            assert cells[4] != "-" and float(cells[6].rstrip("x")) > 0
    assert "per layer" not in out and "throughput" not in out


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the C runtime")
def test_bench_cnative_per_layer_table_of_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    """The per-layer table of a config model starts at the front end, names each layer's
    path and sums the time per op type."""
    bc = _bench("bench_cnative")
    argv = ["--model", "kws_bc_resnet", "--repeats", "2", "--layer-repeats", "1", "--no-batch"]
    assert bc.main(argv) == 0  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    table = out[out.index("per layer, ") :].splitlines()
    assert table[2].split()[:3] == ["0", "FrontEnd", "frontend"]
    assert any("BroadcastAdd" in r for r in table) and "by op type (min column): " in out


def test_bench_ab_median_interval_is_the_order_statistics() -> None:
    """bench_ab's 95 % interval of a median: order statistics k and n - 1 - k, k = floor(n / 2 -
    1.96 sqrt(n) / 2) (40 and 59 of 100), around the sample median."""
    ab = _bench("bench_ab")
    xs = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    med, lo, hi = ab.median_ci(xs)  # type: ignore[attr-defined]
    assert (med, lo, hi) == (50.5, 41.0, 60.0)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the C runtime")
def test_bench_ab_a_a_run_reports_same_bits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench_ab against a copy of the tree's own library (an A/A run, two worker processes):
    one row per dtype, bit-identical outputs, a ratio near 1 whose spread holds the median; a
    typo'd model and a missing base are refused by name."""
    from kwsnet.export.runtime import build_cnative

    ab = _bench("bench_ab")
    lib = tmp_path / "libkwsnet.so"
    shutil.copy(build_cnative("all") / "libkwsnet.so", lib)
    argv = ["--base-lib", str(lib), "--model", "raw_conv", "--isa", "default", "--runs", "2"]
    assert ab.main([*argv, "--pairs", "40", "--instances", "2"]) == 0  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("  raw_conv")]
    assert [r[1] for r in rows] == ["float", "int8"], out
    for r in rows:
        ratio, lo, hi = float(r[5]), float(r[6]), float(r[7])
        assert lo <= ratio <= hi and 0.5 < ratio < 2.0 and r[-1] == "yes", r
    with pytest.raises(SystemExit):
        ab.main(["--base-lib", str(lib), "--model", "raw_conf"])  # type: ignore[attr-defined]
    assert "--model 'raw_conf'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ab.main(["--model", "raw_conv"])  # type: ignore[attr-defined]
    assert "give one of --base REV and --base-lib PATH" in capsys.readouterr().err
