"""Sweep runner: ledger, resume, failures, lock, aggregation, results files, wandb sweep YAML.

The fast tests swap the ``kwsnet fit`` entry for a tiny fake trainer (a Python script that
writes a ``summary.json`` the way ``kwsnet fit`` does), so they exercise the real runner,
subprocesses, ledger and reports in seconds. The ``slow`` tests run real ``kwsnet fit``
processes on ``configs/sweeps/smoke.yaml``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kwsnet import sweep
from kwsnet.cli import console
from kwsnet.sweep import (
    SweepLock,
    SweepSpec,
    aggregate,
    append_ledger,
    format_table,
    load_spec,
    plan_runs,
    read_ledger,
    wandb_sweep_config,
)
from kwsnet.sweep import spec as sweep_spec
from kwsnet.sweep.report import _fmt_p

REPO = Path(__file__).resolve().parents[1]
NORM = "model.backbone.init_args.norm_placement"


def sweep_main(argv: list[str]) -> int:
    """``kwsnet sweep ARGV`` as the console script runs it: its exit status, an error printed
    as one ``kwsnet: error:`` line on stderr."""
    return console(["sweep", *argv])


LR = "model.optimizer.init_args.lr"

# A stand-in for `kwsnet fit`: reads the flags the sweep passes, writes summary.json.
# norm_placement "bogus" exits non-zero, "nan" writes no metric (as summary.json does for NaN),
# "end" collapses on odd seeds. Every call leaves a file in $FAKE_CALLS. With $FAKE_PROVENANCE
# (JSON) its summary.json records that provenance, with the run's thread count, as a run of
# `kwsnet fit` records `kwsnet.tracking.provenance()`.
FAKE_FIT = r"""
import json, os, sys, uuid
args = sys.argv[1:]
opt = {args[i][2:]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
open(os.path.join(os.environ["FAKE_CALLS"], uuid.uuid4().hex), "w").close()
root, seed = opt["trainer.default_root_dir"], int(opt["seed_everything"])
norm = opt.get("model.backbone.init_args.norm_placement", "per_conv")
print("fake fit", norm, seed)
if norm == "bogus":
    print("ValueError: norm_placement must be one of per_conv, end, none", file=sys.stderr)
    sys.exit(3)
collapsed = norm == "end" and seed % 2 == 1
counts = [72, 0, 0] if collapsed else [20, 25, 27]
metrics = {"test/acc": 0.5 + 0.1 * seed, "val/acc": 0.4, "test/collapsed": float(collapsed)}
if norm == "nan":
    metrics.pop("test/acc")
summary = {"seed": seed, "num_classes": 3, "best_epoch": seed, "epochs_run": 2,
           "best_checkpoint": os.path.join(root, "checkpoints", "best.ckpt"),
           "threads": os.environ.get("OMP_NUM_THREADS"), "metrics": metrics,
           "wandb_service": os.environ.get("WANDB_SERVICE"),
           "collapse": {"test": {"counts": counts, "collapsed": float(collapsed)}}}
if os.environ.get("FAKE_PROVENANCE"):
    summary["provenance"] = {**json.loads(os.environ["FAKE_PROVENANCE"]),
                             "num_threads": int(os.environ["OMP_NUM_THREADS"])}
os.makedirs(root, exist_ok=True)
json.dump(summary, open(os.path.join(root, "summary.json"), "w"))
"""


def prov(commit: str = "a", **over: object) -> dict:
    """A provenance as ``kwsnet.tracking.provenance()`` returns it; ``commit``: one character
    repeated to a 40-hex sha."""
    return {"kwsnet_version": "0.1.0", "git_commit": commit * 40, "git_dirty": False,
            "torch_version": "2.14.1", "lightning_version": "2.6.1", "cpu_capability": "AVX2",
            "num_threads": 1, **over}  # fmt: skip


@pytest.fixture
def fake_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Swap the run entry for FAKE_FIT (its runs record ``prov("a")``: a fixed provenance, so
    no test depends on the checkout's commit); return the folder that counts its calls."""
    script = tmp_path / "fake_fit.py"
    script.write_text(FAKE_FIT)
    calls = tmp_path / "calls"
    calls.mkdir()
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_PROVENANCE", json.dumps(prov("a")))
    monkeypatch.setattr(sweep_spec, "FIT_ENTRY", [sys.executable, str(script)])
    return calls


def write_spec(path: Path, **over: object) -> Path:
    spec = {
        "name": "t",
        "base_config": str(REPO / "configs" / "kws_raw.yaml"),
        "seeds": [0, 1],
        "grid": {NORM: ["per_conv", "end"]},
        "overrides": {"trainer.max_epochs": 1},
        "workers": 2,
        "wandb": {"summary_run": False},
    }
    spec.update(over)
    path.write_text(yaml.safe_dump(spec))
    return path


def n_calls(calls: Path) -> int:
    return len(list(calls.iterdir()))


def test_sweep_outputs(
    tmp_path: Path, fake_fit: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv("WANDB_SERVICE", "a service this process started")
    spec = write_spec(tmp_path / "s.yaml", seeds=3)
    assert sweep_main(["--config", str(spec), "--out", str(out)]) == 0
    assert n_calls(fake_fit) == 6
    records = read_ledger(out / "ledger.jsonl")
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    assert {r["seed"] for r in records} == {0, 1, 2}
    assert all(r["log"].endswith("run.log") and os.path.exists(r["log"]) for r in records)
    cores = len(os.sched_getaffinity(0))
    summaries = [json.loads(Path(r["run_dir"], "summary.json").read_text()) for r in records]
    assert {s["threads"] for s in summaries} == {str(max(1, cores // 2))}
    assert {s["wandb_service"] for s in summaries} == {None}  # each run starts its own
    end = [r for r in records if r["point"][NORM] == "end"]
    assert sorted(r["collapsed"] for r in end) == [False, False, True]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[0][NORM] == "per_conv"
    md = (out / "results.md").read_text()
    assert "| per_conv | 3 | 0.600 ± 0.100 | 0.500 | 0.700 | 0/3 | 1 | 0 |" in md
    assert "| end | 3 | 0.600 ± 0.100 | 0.500 | 0.700 | 1/3 | 1 | 0 |" in md
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "| per_conv | 3 |" in capsys.readouterr().out
    # every run got the sweep's wandb grouping and its own dirs
    argv = plan_runs(load_spec(spec), str(out))[0].argv
    flags = dict(zip(argv[2::2], argv[3::2], strict=False))
    assert flags["--trainer.logger.init_args.group"] == "t"
    assert flags["--trainer.logger.init_args.job_type"] == "norm_placement=per_conv"
    assert flags["--trainer.default_root_dir"] == str(
        out / "runs" / "norm_placement=per_conv__seed0"
    )


def test_resume_skips_ok_runs_and_torn_line(tmp_path: Path, fake_fit: Path) -> None:
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml")
    assert sweep_main(["--config", str(spec), "--out", str(out)]) == 0
    assert n_calls(fake_fit) == 4
    assert sweep_main(["--config", str(spec), "--out", str(out)]) == 0
    assert n_calls(fake_fit) == 4  # nothing re-run
    # a sweep killed while writing its last record: the torn run is re-run, the rest kept
    ledger = out / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.write_bytes(b"".join(lines[:3]) + lines[3][:25])
    with pytest.warns(UserWarning, match="torn last line"):
        assert sweep_main(["--config", str(spec), "--out", str(out)]) == 0
    assert n_calls(fake_fit) == 5
    records = read_ledger(ledger)
    assert len(records) == 4 and len({r["run_id"] for r in records}) == 4
    # other fixed overrides: the recorded runs no longer count
    spec = write_spec(tmp_path / "s.yaml", overrides={"trainer.max_epochs": 2})
    with pytest.warns(UserWarning, match="4 ok run"):
        assert sweep_main(["--config", str(spec), "--out", str(out)]) == 0
    assert n_calls(fake_fit) == 9


def test_resume_matches_base_config_content(tmp_path: Path, fake_fit: Path) -> None:
    """Resume keys runs on the base config's parsed content, not its path: an edited value
    re-runs them (the table leaves them out until then and says so); a comment does not."""
    base = tmp_path / "base.yaml"
    base.write_text((REPO / "configs" / "kws_raw.yaml").read_text())
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml", base_config=str(base))
    argv = ["--config", str(spec), "--out", str(out)]
    assert sweep_main(argv) == 0 and n_calls(fake_fit) == 4
    records = read_ledger(out / "ledger.jsonl")
    assert len({r["content_key"] for r in records}) == 1
    assert all(r["fixed"]["base_config"] == str(base) for r in records)
    # comments, spacing and quoting are not content: nothing runs again
    text = base.read_text()
    base.write_text("# edited\n" + text.replace("max_epochs: 30", "max_epochs:   30   # same"))
    assert sweep_main(argv) == 0 and n_calls(fake_fit) == 4
    assert "another base config content" not in (out / "results.md").read_text()
    # a changed value is other content: left out of the table until re-run ...
    base.write_text(text.replace("lr: 0.005", "lr: 0.004"))
    assert sweep_main([*argv, "--report_only"]) == 1 and n_calls(fake_fit) == 4
    md = (out / "results.md").read_text()
    assert "| per_conv | 0 |" in md and "| end | 0 |" in md
    assert "4 run(s) in the ledger were made with another base config content" in md
    # ... and re-run on resume, which the table says
    with pytest.warns(UserWarning, match="4 ok run.*another base config content"):
        assert sweep_main(argv) == 0
    assert n_calls(fake_fit) == 8
    md = (out / "results.md").read_text()
    assert "| per_conv | 2 |" in md and "| end | 2 |" in md
    assert "4 earlier run(s) in the ledger were made with another base config content" in md
    assert "excluded" not in md
    assert len({r["content_key"] for r in read_ledger(out / "ledger.jsonl")}) == 2


def test_ledger_records_without_content_key(tmp_path: Path, fake_fit: Path) -> None:
    """Records from before the content key (only path + overrides) are still read: the same
    path and overrides are kept as "content unknown", another path is re-run."""
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml")
    argv = ["--config", str(spec), "--out", str(out)]
    assert sweep_main(argv) == 0 and n_calls(fake_fit) == 4
    ledger = out / "ledger.jsonl"
    old = [{k: v for k, v in r.items() if k != "content_key"} for r in read_ledger(ledger)]
    old[0]["fixed"] = {**old[0]["fixed"], "base_config": "configs/elsewhere.yaml"}
    ledger.write_text("".join(json.dumps(r) + "\n" for r in old))
    with pytest.warns(UserWarning, match="1 ok run"):
        assert sweep_main(argv) == 0
    assert n_calls(fake_fit) == 5
    md = (out / "results.md").read_text()
    assert "1 earlier run(s) in the ledger were made with another base config content" in md
    assert "3 run(s) were recorded without a content key" in md
    assert "| per_conv | 2 |" in md and "| end | 2 |" in md


def test_logger_save_dir_is_the_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With or without ``log_runs``, a run's logger writes into its run dir (so does the
    config.yaml Lightning saves to ``trainer.log_dir``); no logger flags for no logger."""
    from kwsnet.cli import KwsCLI

    def argv(**over: object) -> list[str]:
        spec = load_spec(write_spec(tmp_path / "s.yaml", grid={}, seeds=[0], **over))
        return plan_runs(spec, str(tmp_path / "out"))[0].argv[len(sweep_spec.FIT_ENTRY) :]

    run_dir = str(tmp_path / "out" / "runs" / "base__seed0")
    quiet = argv(wandb={"log_runs": False})
    assert quiet[quiet.index("--trainer.logger.init_args.save_dir") + 1] == run_dir
    assert "--trainer.logger.init_args.group" not in quiet
    off = argv(overrides={"trainer.logger": False})
    assert not [a for a in off if a.startswith("--trainer.logger.")]
    both = argv(overrides={"trainer.logger": ["kwsnet.tracking.KwsWandbLogger", "CSVLogger"]})
    assert both[-2] == "--trainer.logger"  # the list, with save_dir in each logger
    wandb_logger, csv_logger = json.loads(both[-1])
    assert wandb_logger["init_args"]["save_dir"] == csv_logger["init_args"]["save_dir"] == run_dir
    assert wandb_logger["init_args"]["group"] == "t" and "group" not in csv_logger["init_args"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    for args in (quiet, off):
        cli = KwsCLI(args=args, run=False, save_config_callback=None)
        assert cli.trainer.log_dir == run_dir
        assert [lg.save_dir for lg in cli.trainer.loggers] == ([run_dir] if args is quiet else [])
    assert not (tmp_path / "runs").exists()


def test_failed_runs_are_recorded(tmp_path: Path, fake_fit: Path) -> None:
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml", seeds=[0], grid={NORM: ["per_conv", "bogus", "nan"]})
    assert sweep_main(["--config", str(spec), "--out", str(out)]) == 1
    by_norm = {r["point"][NORM]: r for r in read_ledger(out / "ledger.jsonl")}
    assert by_norm["per_conv"]["status"] == "ok"
    bogus = by_norm["bogus"]
    assert bogus["status"] == "failed" and bogus["returncode"] == 3
    assert "exit code 3" in bogus["error"] and "must be one of" in bogus["error"]
    assert os.path.exists(bogus["log"])
    assert by_norm["nan"]["status"] == "failed" and "test/acc" in by_norm["nan"]["error"]
    md = (out / "results.md").read_text()
    assert "| bogus | 0 | – |" in md and "failed `norm_placement=bogus__seed0`" in md
    # resuming re-runs only the failed ones
    assert sweep_main(["--config", str(spec), "--out", str(out)]) == 1
    assert n_calls(fake_fit) == 5


def test_aggregate_math() -> None:
    spec = SweepSpec(name="m", base_config="x.yaml", seeds=4, grid={LR: [0.1, 0.2]})
    vals = [0.70, 0.72, 0.74, 0.71]

    def rec(lr: float, seed: int, status: str = "ok", value: float | None = None) -> dict:
        return {"run_id": f"{lr}-{seed}", "point": {LR: lr}, "point_label": f"lr={lr}",
                "seed": seed, "status": status, "value": value, "collapsed": seed == 3,
                "best_epoch": 10 * seed}  # fmt: skip

    records = [rec(0.1, s, value=v) for s, v in enumerate(vals)]
    records += [rec(0.2, 0, value=0.5), rec(0.2, 1, "failed"), rec(0.2, 2, "failed")]
    records += [rec(0.2, 2, value=0.9)]  # a failed run re-run ok: the latest record counts
    rows = aggregate(records, spec)
    a, b = rows
    assert a["n"] == 4 and a["failed"] == 0 and a["collapsed"] == 1
    assert math.isclose(a["mean"], statistics.fmean(vals))
    assert math.isclose(a["std"], statistics.stdev(vals))  # ddof=1
    assert (a["min"], a["max"], a["median_best_epoch"]) == (0.70, 0.74, 15.0)
    assert b["n"] == 2 and b["failed"] == 1 and math.isclose(b["std"], statistics.stdev([0.5, 0.9]))
    table = format_table(rows, spec)
    assert "| 0.1 | 4 | 0.718 ± 0.017 | 0.700 | 0.740 | 1/4 | 15 | 0 |" in table


def test_torn_last_line_tolerated(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    append_ledger(ledger, {"run_id": "a", "status": "ok"})
    append_ledger(ledger, {"run_id": "b", "status": "ok"})
    with open(ledger, "ab") as f:
        f.write(b'{"run_id": "c", "sta')
    with pytest.warns(UserWarning, match="torn last line"):
        assert [r["run_id"] for r in read_ledger(ledger, repair=True)] == ["a", "b"]
    append_ledger(ledger, {"run_id": "c", "status": "ok"})
    assert [r["run_id"] for r in read_ledger(ledger)] == ["a", "b", "c"]


def test_lock_refuses_second_sweep(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml")
    with SweepLock(out):
        assert sweep_main(["--config", str(spec), "--out", str(out)]) == 2
        assert "another sweep is running" in capsys.readouterr().err
        # reading the ledger beside a running sweep needs no lock (exit 1: runs missing)
        assert sweep_main(["--config", str(spec), "--out", str(out), "--report_only"]) == 1
        assert "| per_conv | 0 |" in (out / "results.md").read_text()
    with SweepLock(out):  # released: free again
        pass


def test_unknown_spec_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = write_spec(tmp_path / "s.yaml", seed=[1])
    assert sweep_main(["--config", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "unknown sweep spec keys ['seed']" in err and "'seeds'" in err
    with pytest.raises(ValueError, match="seeds repeat"):
        SweepSpec(name="x", base_config="b", seeds=[1, 1])


def test_repo_specs_parse() -> None:
    for path in sorted((REPO / "configs" / "sweeps").glob("*.yaml")):
        spec = load_spec(path)
        assert (REPO / spec.base_config).is_file(), path
    ln = load_spec(REPO / "configs" / "sweeps" / "kws_raw_ln.yaml")
    assert len(plan_runs(ln)) == 90
    assert ln.overrides["data.words"][:2] == ["yes", "no"]  # strings, not YAML booleans


def test_spec_reads_yaml_12_scalars_like_the_cli(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: t\nbase_config: configs/kws_raw.yaml\nseeds: [0]\n"
        "grid:\n  model.optimizer.init_args.lr: [1e-3, 5e-3]\n"
        "overrides:\n  data.words: [yes, no, on, off]\n  trainer.deterministic: true\n"
    )
    loaded = load_spec(spec)
    assert loaded.overrides["data.words"] == ["yes", "no", "on", "off"]
    assert loaded.overrides["trainer.deterministic"] is True
    assert loaded.grid["model.optimizer.init_args.lr"] == [0.001, 0.005]
    argv = plan_runs(loaded, str(tmp_path / "out"))[0].argv
    assert argv[argv.index("--data.words") + 1] == '["yes", "no", "on", "off"]'


def test_emit_wandb_sweep(tmp_path: Path) -> None:
    spec_path = REPO / "configs" / "sweeps" / "kws_raw_ln.yaml"
    target = tmp_path / "wandb_sweep.yaml"
    assert sweep_main(["--config", str(spec_path), "--emit_wandb_sweep", str(target)]) == 0
    cfg = yaml.safe_load(target.read_text())
    spec = load_spec(spec_path)
    assert cfg["method"] == "grid" and cfg["program"] == "train.py"
    assert cfg["metric"] == {"name": "test/acc", "goal": "maximize"}
    for key, values in spec.grid.items():
        assert cfg["parameters"][key]["values"] == values
    assert cfg["parameters"]["seed_everything"]["values"] == list(range(10))
    cmd = cfg["command"]
    assert cmd[:6] == [
        "${env}",
        "${interpreter}",
        "${program}",
        "fit",
        "--config",
        spec.base_config,
    ]
    assert cmd[-1] == "${args}"
    assert '--data.words=["yes", "no", "up", "down", "left", "right"]' in cmd
    assert wandb_sweep_config(spec) == cfg


def test_wandb_agent_command_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's command line (``--key=value`` flags, formatted by wandb's own helper) for
    one grid point of the emitted sweep parses in LightningCLI to the intended values."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from kwsnet.cli import KwsCLI

    cfg = wandb_sweep_config(load_spec(REPO / "configs" / "sweeps" / "kws_raw_ln.yaml"))
    point = {LR: 0.01, NORM: "end", "seed_everything": 3}
    flags = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    cmd = cfg["command"]
    args = cmd[cmd.index("fit") + 1 : cmd.index("${args}")] + flags["args"]
    args[args.index("--config") + 1] = str(REPO / "configs" / "kws_raw.yaml")
    args = [a for a in args if not a.startswith("--data.")]  # keep the test off the real data
    args += ["--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", ["train.py"])
    cli = KwsCLI(args=args, run=False, save_config_callback=None)
    assert "--model.optimizer.init_args.lr=0.01" in args
    assert cli.config.model.optimizer.init_args.lr == 0.01
    assert cli.config.seed_everything == 3
    assert cli.config.model.backbone.init_args.norm_placement == "end"
    assert cli.config.trainer.max_epochs == 50


@pytest.mark.slow
def test_smoke_sweep_real(tmp_path: Path) -> None:
    """The real thing: configs/sweeps/smoke.yaml through `kwsnet fit`, with wandb files."""
    out = tmp_path / "smoke"
    spec = str(REPO / "configs" / "sweeps" / "smoke.yaml")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        assert sweep_main(["--config", spec, "--out", str(out)]) == 0
    finally:
        os.chdir(cwd)
    records = read_ledger(out / "ledger.jsonl")
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert all(Path(r["checkpoint"]).is_file() for r in records)
    assert all(list(Path(r["run_dir"]).glob("wandb/offline-run-*/run-*.wandb")) for r in records)
    assert all(Path(r["run_dir"], "config.yaml").is_file() for r in records)
    assert list(out.glob("wandb/offline-run-*/run-*.wandb"))  # the summary run
    assert (out / "results.png").is_file()


@pytest.mark.slow
def test_log_runs_false_keeps_each_run_in_its_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wandb.log_runs: false``: two real runs of configs/kws_raw.yaml (whose wandb logger
    saves to runs/kws_raw) each keep config.yaml, summary.json and the logger's files in their
    own run dir; nothing goes to ./runs of the current directory."""
    smoke = yaml.safe_load((REPO / "configs" / "sweeps" / "smoke.yaml").read_text())
    spec = write_spec(
        tmp_path / "s.yaml",
        base_config=str(REPO / "configs" / "kws_raw.yaml"),
        grid={},
        overrides=smoke["overrides"],
        wandb={"log_runs": False, "summary_run": False},
    )
    monkeypatch.chdir(tmp_path)
    sweep_main(["--config", str(spec), "--out", "out"])
    records = read_ledger(tmp_path / "out" / "ledger.jsonl")
    assert [r["returncode"] for r in records] == [0, 0]
    assert len({r["run_dir"] for r in records}) == 2
    for r in records:
        run_dir = tmp_path / r["run_dir"]
        assert run_dir.parent == tmp_path / "out" / "runs"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["seed_everything"] == r["seed"]  # its own, not the other run's
        assert json.loads((run_dir / "summary.json").read_text())["seed"] == r["seed"]
        assert list(run_dir.glob("checkpoints/*.ckpt"))
        assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert not (tmp_path / "runs").exists()


def _rec(point: dict, label: str, seed: int, value: float, **extra: object) -> dict:
    return {"run_id": f"{label}-{seed}", "point": point, "point_label": label, "seed": seed,
            "status": "ok", "value": value, **extra}  # fmt: skip


def test_table_statistics_against_the_baseline() -> None:
    """Every row has the mean's CI and, against the baseline, Δ with its CI, p (paired by seed
    when the seeds match, Welch otherwise), Holm's p and the verdict; the spec picks the
    baseline by label and the direction from the metric."""
    from scipy import stats as st

    from kwsnet.stats import holm

    spec = SweepSpec(name="s", base_config="x.yaml", seeds=6, grid={LR: [0.1, 0.2, 0.3]},
                     stats={"baseline": "lr=0.2"})  # fmt: skip
    a = [0.50, 0.52, 0.49, 0.55, 0.51, 0.53]
    b = [0.60, 0.58, 0.63, 0.61, 0.66, 0.59]
    c = [0.50, 0.61, 0.47, 0.58]  # seeds 0..3 only: Welch
    records = [_rec({LR: 0.1}, "lr=0.1", s, v) for s, v in enumerate(a)]
    records += [_rec({LR: 0.2}, "lr=0.2", s, v) for s, v in enumerate(b)]
    records += [_rec({LR: 0.3}, "lr=0.3", s, v) for s, v in enumerate(c)]
    r1, r2, r3 = aggregate(records, spec)
    assert r2["test"] == "baseline" and r2["verdict"] == "baseline"
    assert r1["test"] == "paired" and r3["test"] == "welch"
    p1, p3 = st.ttest_rel(a, b).pvalue, st.ttest_ind(c, b, equal_var=False).pvalue
    assert r1["p"] == pytest.approx(p1) and r3["p"] == pytest.approx(p3)
    assert [r1["p_holm"], r3["p_holm"]] == pytest.approx(holm([p1, p3]))
    assert r1["diff"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    ci = st.t.interval(0.95, 5, loc=statistics.fmean(a), scale=st.sem(a))
    assert (r1["ci_low"], r1["ci_high"]) == pytest.approx(ci)
    assert r1["verdict"] == "worse" and r3["verdict"] == "not distinguishable"
    table = format_table([r1, r2, r3], spec)
    assert "| mean 95% CI | Δ vs baseline [95% CI] | p (test) | p Holm | verdict |" in table
    assert f"| {r1['diff']:+.3f} [{r1['diff_low']:+.3f}, {r1['diff_high']:+.3f}] |" in table
    assert "(paired) |" in table and "(welch) |" in table and "| baseline |" in table
    # a loss: lower is better, so the same numbers read the other way round
    loss = SweepSpec(**{**dataclasses.asdict(spec), "metric": "val/loss"})
    assert aggregate(records, loss)[0]["verdict"] == "better"
    assert "lower `val/loss` is better" in sweep.stats_note(loss, aggregate(records, loss))
    boot = SweepSpec(
        **{**dataclasses.asdict(spec), "stats": {**spec.stats, "ci": "bootstrap", "seed": 1}}
    )
    rb = aggregate(records, boot)
    assert rb[0]["p"] == r1["p"] and rb[0]["ci_low"] != r1["ci_low"]
    assert aggregate(records, boot)[0]["ci_low"] == rb[0]["ci_low"]  # seeded


def test_stats_spec_validation() -> None:
    kw = {"name": "s", "base_config": "x.yaml", "seeds": 2, "grid": {LR: [0.1, 0.2]}}
    assert sweep.baseline_index(SweepSpec(**kw, stats={"baseline": 1}), 1) == 1
    for stats, match in [
        ({"baseline": "lr=0.5"}, "not a grid point.*lr=0.1"),
        ({"baseline": 2}, "not in 0..1"),
        ({"ci": "normal"}, "stats.ci"),
        ({"alpha": 1.5}, "stats.alpha"),
        ({"goal": "up"}, "stats.goal"),
        ({"alpah": 0.1}, "unknown stats keys"),
    ]:
        with pytest.raises(ValueError, match=match):
            SweepSpec(**kw, stats=stats)


def test_sweep_outputs_have_statistics(tmp_path: Path, fake_fit: Path) -> None:
    """results.md names the tests and the collapse rule; results.csv and the rows carry the
    point statistics; collapsed runs stay in the statistics."""
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml", seeds=3)
    assert sweep_main(["--config", str(spec), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert "paired by seed" in md and "Holm-corrected over the 1 points" in md
    assert "at most max(1, ceil(C/2)) of the C classes" in md
    assert "Collapsed runs are included" in md
    # the fake "end" runs equal "per_conv" seed by seed: Δ = 0, p undefined, not distinguishable
    assert "| 1/3 | 1 | 0 | [0.352, 0.848] | +0.000 [+0.000, +0.000] | – | – | not dist" in md
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    end = [r for r in rows if r[NORM] == "end"]
    assert {r["verdict"] for r in end} == {"not distinguishable"} and end[0]["test"] == "paired"
    assert float(end[0]["point_ci_low"]) == pytest.approx(0.6 - 0.1 * 4.302652729911275 / 3**0.5)
    assert {r["baseline"] for r in rows} == {"norm_placement=per_conv"}


def test_report_applies_todays_collapse_rule() -> None:
    """A ledger written under the old rule ("fewer classes than exist") is re-judged from each
    record's n_pred_classes / num_classes / max_class_share: 5 of 6 classes is not collapse."""
    spec = SweepSpec(name="c", base_config="x.yaml", seeds=3, grid={LR: [0.1]})
    records = [
        _rec({LR: 0.1}, "lr=0.1", 0, 0.4, collapsed=True, n_pred_classes=5.0, num_classes=6,
             max_class_share=0.3),
        _rec({LR: 0.1}, "lr=0.1", 1, 0.2, collapsed=True, n_pred_classes=1.0, num_classes=6,
             max_class_share=1.0),
        _rec({LR: 0.1}, "lr=0.1", 2, 0.3, collapsed=True),  # no shares: its own flag
    ]  # fmt: skip
    (row,) = aggregate(records, spec)
    assert row["collapsed_flags"] == [False, True, True] and row["collapsed"] == 2
    assert row["n"] == 3  # collapsed runs are in the statistics
    summary = {"num_classes": 6, "collapse": {"test": {"counts": [12, 14, 21, 13, 12, 0],
                                                       "collapsed": 1.0}}}  # fmt: skip
    from kwsnet.sweep.ledger import _is_collapsed

    assert _is_collapsed(summary, 6)[0] is False


def test_grid_over_base_configs(tmp_path: Path, fake_fit: Path) -> None:
    """``base_config: [a, b]`` is a grid key: each run gets its own --config, run id and
    content key, and an edit to one base config re-runs only its runs."""
    text = (REPO / "configs" / "kws_raw.yaml").read_text()
    a, b = tmp_path / "cfg" / "small.yaml", tmp_path / "cfg" / "big.yaml"
    a.parent.mkdir()
    a.write_text(text)
    b.write_text(text.replace("lr: 0.005", "lr: 0.004"))
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "s.yaml", base_config=[str(a), str(b)])
    spec = load_spec(spec_path)
    assert list(spec.grid) == ["base_config", NORM] and spec.base_configs == [str(a), str(b)]
    plans = plan_runs(spec, str(out))
    assert [p.run_id for p in plans[:3]] == [
        "config=small__norm_placement=per_conv__seed0",
        "config=small__norm_placement=per_conv__seed1",
        "config=small__norm_placement=end__seed0",
    ]
    assert plans[-1].argv[plans[-1].argv.index("--config") + 1] == str(b)
    assert "--base_config" not in plans[0].argv
    argv = ["--config", str(spec_path), "--out", str(out)]
    assert sweep_main(argv) == 0 and n_calls(fake_fit) == 8
    records = read_ledger(out / "ledger.jsonl")
    keys = {r["fixed"]["base_config"]: r["content_key"] for r in records}
    assert keys == sweep.content_keys(spec) and len(set(keys.values())) == 2
    md = (out / "results.md").read_text()
    assert "| small | per_conv | 2 |" in md and "| big | end | 2 |" in md
    assert "Base configs `" in md
    b.write_text(text.replace("lr: 0.005", "lr: 0.003"))
    with pytest.warns(UserWarning, match="4 ok run"):
        assert sweep_main(argv) == 0
    assert n_calls(fake_fit) == 12  # only big's 4 runs again
    # the same as a grid key; and a wandb sweep cannot hold it
    grid_spec = write_spec(tmp_path / "g.yaml", base_config=None,
                           grid={"base_config": [str(a), str(b)], NORM: ["end"]})  # fmt: skip
    spec_text = yaml.safe_load(grid_spec.read_text())
    del spec_text["base_config"]
    grid_spec.write_text(yaml.safe_dump(spec_text))
    assert load_spec(grid_spec).base_config == str(a)
    assert sweep_main(["--config", str(grid_spec), "--emit_wandb_sweep", "x.yaml"]) == 2
    with pytest.raises(ValueError, match="give it once"):
        SweepSpec(name="x", base_config=[str(a)], seeds=1, grid={"base_config": [str(b)]})
    with pytest.raises(ValueError, match="not an override"):
        SweepSpec(name="x", base_config="a", seeds=1, overrides={"base_config": "b"})


def test_dict_grid_values_get_short_labels() -> None:
    """class_path dicts are labelled by class name (plus the init_args that differ when two
    share one), flat dicts as k=v, long dicts and lists by a hash; short scalars and lists keep
    their JSON."""
    bb = "model.backbone"
    raw = {"class_path": "kwsnet.models.raw_conv.RawConv", "init_args": {"channels": 32}}
    raw2 = {"class_path": "kwsnet.models.raw_conv.RawConv", "init_args": {"channels": 64}}
    conf = {"class_path": "kwsnet.models.conformer.Conformer"}
    labels = sweep.value_labels(bb, [raw, raw2, conf])
    assert labels == ["RawConv(channels=32)", "RawConv(channels=64)", "Conformer"]
    lsuv = [
        {"class_path": "kwsnet.init.LSUV", "init_args": {"order": o, "tol": 1e-3}}
        for o in ("std_then_mean", "joint", "mean_then_std")
    ]  # three sharing a class: every one is told apart (the third too)
    assert sweep.value_labels("model.init", [None, *lsuv]) == [
        "null",
        "LSUV(order=std_then_mean)",
        "LSUV(order=joint)",
        "LSUV(order=mean_then_std)",
    ]
    assert sweep.value_labels("n.norm_options", [{"warmup_steps": 0}, {"warmup_steps": 50}]) == [
        "warmup_steps=0",
        "warmup_steps=50",
    ]
    huge = [{"class_path": "a.B", "init_args": {"x": "y" * 40 + str(i)}} for i in range(2)]
    assert [lab[:2] for lab in sweep.value_labels("k", huge)] == ["B-", "B-"]
    assert sweep.value_labels("x.y", [conf, {"class_path": "a.Other"}]) == ["Conformer", "Other"]
    long = {"a": 1, "b": [1, 2, 3], "c": "some long text"}
    assert sweep.value_labels("x.aug", [long, [1, 2]])[0].startswith("dict-")
    assert sweep.value_labels("x.aug", [long, [1, 2]])[1] == "[1, 2]"
    spec = SweepSpec(name="d", base_config="x.yaml", seeds=1, grid={bb: [raw, conf]})
    plans = plan_runs(spec, "/tmp/out")
    assert [p.run_id for p in plans] == [
        "backbone=RawConv__seed0",  # unique here: no hash
        "backbone=Conformer__seed0",
    ]
    assert json.loads(plans[1].argv[plans[1].argv.index("--model.backbone") + 1]) == conf


def test_report_only_for_another_metric_and_baseline(
    tmp_path: Path, fake_fit: Path, capsys: pytest.CaptureFixture
) -> None:
    """`--report-only --metric M --baseline P --report-name N` rebuilds a second table from the
    same ledger (every summary.json metric is kept): results_N.* beside results.*, published
    too, the runs not re-run; the options without --report_only, or a baseline that is no
    grid point, are usage errors."""
    out, pub = tmp_path / "out", tmp_path / "pub"
    spec = write_spec(tmp_path / "s.yaml", seeds=3, publish=str(pub))
    assert sweep_main(["--config", str(spec), "--out", str(out)]) == 0
    first = (out / "results.md").read_text()
    argv = ["--config", str(spec), "--out", str(out), "--report_only"]
    extra = ["--metric", "val/acc", "--baseline", "norm_placement=end", "--report_name", "v"]
    assert sweep_main([*argv, *extra]) == 0 and n_calls(fake_fit) == 6
    md = (out / "results_v.md").read_text()
    assert "| val/acc mean ± std |" in md.replace("norm_placement | n | ", "")
    assert "| per_conv | 3 | 0.400 ± 0.000 |" in md  # val/acc is 0.4 in every fake run
    assert "| end | 3 | 0.400 ± 0.000 |" in md and "baseline |" in md
    assert (out / "results.md").read_text() == first  # the spec's table is untouched
    assert (pub / "results_v.md").read_text() == md and (pub / "results_v.csv").exists()
    # the test/acc table against another baseline: per_conv - end = 0 on every seed
    assert sweep_main([*argv, "--baseline", "norm_placement=end", "--report_name", "b"]) == 0
    assert "| per_conv | 3 | 0.600 ± 0.100 |" in (out / "results_b.md").read_text()
    capsys.readouterr()
    assert sweep_main(["--config", str(spec), "--out", str(out), "--metric", "val/acc"]) == 2
    assert "need --report_only" in capsys.readouterr().err
    assert sweep_main([*argv, "--baseline", "norm_placement=nope"]) == 2
    assert "not a grid point" in capsys.readouterr().err


# --- equivalence margin (TOST) in the table ---------------------------------------------------


def _ledger(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for rec in records:
        append_ledger(path / "ledger.jsonl", rec)
    return path


def _fabricate(spec_path: Path, values: dict[str, list[float]], **extra: object) -> list[dict]:
    """Ledger records of the spec's runs (no training): ``values`` per norm_placement, seeds
    0.., with the spec's content key; ``extra``: more fields (a ``provenance``)."""
    spec = load_spec(spec_path)
    key = sweep.content_key(spec)
    return [
        _rec({NORM: norm}, f"norm_placement={norm}", seed, v, content_key=key,
             metric="test/acc", **extra)
        | {"run_id": f"norm_placement={norm}__seed{seed}"}
        for norm, vals in values.items()
        for seed, v in enumerate(vals)
    ]  # fmt: skip


def test_margin_verdicts_in_table_csv_and_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """With ``stats.margin`` / ``--margin`` each comparison gets a TOST: the table gains
    ``p TOST ±M`` and its Holm p, the verdicts are better / worse / equivalent / inconclusive,
    the CSV has margin, p_tost, p_tost_holm and the 90% CI; without one nothing changes."""
    from scipy import stats as st

    from kwsnet.stats import holm

    base = [0.90, 0.92, 0.91, 0.93, 0.89, 0.92, 0.90, 0.91, 0.94, 0.90]
    tiny = [0.002, -0.003, 0.004, 0.0, -0.001, 0.003, 0.001, -0.002, 0.002, 0.001]
    wild = [0.08, -0.09, 0.07, -0.06, 0.10, -0.08, 0.05, -0.07, 0.09, -0.085]
    values = {
        "per_conv": base,
        "end": [b + t for b, t in zip(base, tiny, strict=True)],  # equivalent
        "none": [b + w for b, w in zip(base, wild, strict=True)],  # inconclusive
        "post": [b + 0.05 + t for b, t in zip(base, tiny, strict=True)],  # better
    }
    spec_path = write_spec(tmp_path / "s.yaml", seeds=10, grid={NORM: list(values)})
    out = _ledger(tmp_path / "out", _fabricate(spec_path, values, provenance=prov("a")))
    argv = ["--config", str(spec_path), "--out", str(out), "--report_only"]
    assert sweep_main(argv) == 0
    md = (out / "results.md").read_text()
    assert "p TOST" not in md and "| not distinguishable |" in md  # no margin: as before
    assert sweep_main([*argv, "--margin", "0.02"]) == 0
    table = capsys.readouterr().out
    assert "| p Holm | p TOST ±0.02 | p TOST Holm | verdict |" in table
    rows = {r["point_label"].split("=")[1]: r for r in aggregate(
        read_ledger(out / "ledger.jsonl"),
        SweepSpec(**{**dataclasses.asdict(load_spec(spec_path)), "stats": {"margin": 0.02}}),
    )}  # fmt: skip
    assert [rows[k]["verdict"] for k in values] == ["baseline", "equivalent", "inconclusive",
                                                    "better"]  # fmt: skip
    others = ["end", "none", "post"]
    p_tost = [
        max(st.ttest_rel(np.add(values[k], 0.02), base, alternative="greater").pvalue,
            st.ttest_rel(np.subtract(values[k], 0.02), base, alternative="less").pvalue)
        for k in others
    ]  # fmt: skip
    assert [rows[k]["p_tost"] for k in others] == pytest.approx(p_tost, rel=1e-6)
    assert [rows[k]["p_tost_holm"] for k in others] == pytest.approx(holm(p_tost), rel=1e-6)
    p = [st.ttest_rel(values[k], base).pvalue for k in others]
    assert [rows[k]["p_holm"] for k in others] == pytest.approx(holm(p), rel=1e-9)
    for k in others:
        assert f"| {_fmt_p(rows[k]['p_tost'])} | {_fmt_p(rows[k]['p_tost_holm'])} | " in table
    md = (out / "results.md").read_text()
    assert "else equivalent when the Holm-adjusted TOST p < 0.05, else inconclusive" in md
    with open(out / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    end = [r for r in csv_rows if r[NORM] == "end"]
    assert {r["verdict"] for r in end} == {"equivalent"} and end[0]["margin"] == "0.02"
    assert float(end[0]["p_tost"]) == pytest.approx(rows["end"]["p_tost"], rel=1e-9)
    assert -0.02 < float(end[0]["tost_ci_low"]) < float(end[0]["tost_ci_high"]) < 0.02
    assert {r["p_tost"] for r in csv_rows if r[NORM] == "per_conv"} == {""}
    # a lower-is-better metric turns better round; the TOST is symmetric
    loss = SweepSpec(**{**dataclasses.asdict(load_spec(spec_path)), "metric": "val/loss",
                        "stats": {"margin": 0.02}})  # fmt: skip
    recs = [{**r, "metric": "val/loss"} for r in read_ledger(out / "ledger.jsonl")]
    verdicts = [r["verdict"] for r in aggregate(recs, loss)]
    assert verdicts == ["baseline", "equivalent", "inconclusive", "worse"]
    # the margin in the spec, and bad margins
    spec_m = write_spec(tmp_path / "m.yaml", seeds=10, grid={NORM: list(values)},
                        stats={"margin": 0.02})  # fmt: skip
    assert sweep_main(["--config", str(spec_m), "--out", str(out), "--report_only"]) == 0
    assert "p TOST ±0.02" in (out / "results.md").read_text()
    capsys.readouterr()
    assert sweep_main([*argv, "--margin", "-0.1"]) == 2
    assert "--margin: " in capsys.readouterr().err
    with pytest.raises(ValueError, match="stats.margin"):
        SweepSpec(name="s", base_config="x.yaml", seeds=2, stats={"margin": "wide"})


# --- provenance ---------------------------------------------------------------------------------


def test_records_carry_the_runs_provenance(
    tmp_path: Path, fake_fit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each record's ``provenance`` is the run's own from summary.json (``provenance_source``
    ``run``); without one, the sweep process's ``provenance()`` with the run's thread count
    (``sweep``). results.md and results.csv show it."""
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml")
    assert sweep_main(["--config", str(spec), "--out", str(out)]) == 0
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    records = read_ledger(out / "ledger.jsonl")
    assert {r["provenance_source"] for r in records} == {"run"}
    assert all(r["provenance"] == prov("a", num_threads=threads) for r in records)
    md = (out / "results.md").read_text()
    assert f"Provenance (`kwsnet.tracking.provenance`): commit `{'a' * 40}`" in md
    assert f"torch threads per run: {threads} (4 runs)" in md
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["git_commit"] for r in rows} == {"a" * 40} and rows[0]["cpu_capability"] == "AVX2"
    assert {r["provenance_source"] for r in rows} == {"run"}
    # a run that records none (an older kwsnet fit): the sweep's own, with the run's threads
    import kwsnet.tracking

    monkeypatch.delenv("FAKE_PROVENANCE")
    monkeypatch.setattr(kwsnet.tracking, "provenance", lambda: prov("c", num_threads=99))
    out2 = tmp_path / "out2"
    assert sweep_main(["--config", str(spec), "--out", str(out2)]) == 0
    records = read_ledger(out2 / "ledger.jsonl")
    assert {r["provenance_source"] for r in records} == {"sweep"}
    assert all(r["provenance"] == prov("c", num_threads=threads) for r in records)
    assert "4 run(s) recorded none in summary.json" in (out2 / "results.md").read_text()


def test_report_refuses_mixed_provenance(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Runs from two commits are never averaged: the report exits 2 with one line naming both
    commits and their run counts; ``--allow_mixed_provenance`` reports them in rows apart, each
    against its own baseline row; identical provenance gives one row per point as before."""
    values = {
        "per_conv": [0.5, 0.6, 0.55, 0.58, 0.61, 0.52],
        "end": [0.7, 0.8, 0.75, 0.7, 0.9, 0.8],
    }
    spec_path = write_spec(tmp_path / "s.yaml", seeds=6)
    records = _fabricate(spec_path, values, provenance=prov("a"))
    for r in records:  # seeds 4 and 5 were added later, at another commit
        if r["seed"] >= 4:
            r["provenance"] = prov("b", git_commit="b" * 40 + "-dirty", git_dirty=True)
    out = _ledger(tmp_path / "out", records)
    argv = ["--config", str(spec_path), "--out", str(out), "--report_only"]
    capsys.readouterr()
    assert sweep_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ledger.jsonl: the runs come from 2 provenances" in err
    assert f"commit {'a' * 12} (8 runs), commit {'b' * 12}-dirty (4 runs)" in err
    assert "--allow_mixed_provenance" in err
    assert not (out / "results.md").exists()  # nothing written
    assert sweep_main([*argv, "--allow_mixed_provenance"]) == 0
    md = (out / "results.md").read_text()
    assert "| norm_placement | provenance | n |" in md
    a, b = f"commit {'a' * 12}", f"commit {'b' * 12}-dirty"
    lines = [line for line in md.splitlines() if line.startswith("| per_conv") or
             line.startswith("| end")]  # fmt: skip
    assert [line.split(" | ")[:3] for line in lines] == [
        ["| per_conv", a, "4"], ["| per_conv", b, "2"], ["| end", a, "4"], ["| end", b, "2"]
    ]  # fmt: skip
    assert lines[0].endswith("| baseline |") and lines[1].endswith("| baseline |")
    spec = load_spec(spec_path)
    rows = aggregate(read_ledger(out / "ledger.jsonl"), spec, allow_mixed_provenance=True)
    end_b = rows[3]
    d = [values["end"][s] - values["per_conv"][s] for s in (4, 5)]
    assert end_b["test"] == "paired" and end_b["diff"] == pytest.approx(statistics.fmean(d))
    assert "2 provenances" in md and "rows apart" in md
    with open(out / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert {r["provenance_group"] for r in csv_rows if r["seed"] == "5"} == {b}
    assert {r["point_n"] for r in csv_rows if r["seed"] == "5"} == {"2"}
    # records written before provenance existed are a group of their own: "unknown"
    old = [{k: v for k, v in r.items() if k != "provenance"} for r in records if r["seed"] < 4]
    new = [{**r, "provenance": prov("a")} for r in records if r["seed"] >= 4]
    out_old = _ledger(tmp_path / "old", old + new)
    capsys.readouterr()
    assert sweep_main([*argv[:3], str(out_old), "--report_only"]) == 2
    assert f"unknown (8 runs), commit {'a' * 12} (4 runs)" in capsys.readouterr().err
    # identical provenance: one row per point, as before
    out_same = _ledger(tmp_path / "same", [{**r, "provenance": prov("a")} for r in records])
    assert sweep_main([*argv[:3], str(out_same), "--report_only"]) == 0
    md = (out_same / "results.md").read_text()
    assert "provenance |" not in md and "| per_conv | 6 |" in md and "| end | 6 |" in md
    # another torch version or CPU capability splits too, named by what differs
    cpu = [{**r, "provenance": prov("a", cpu_capability="AVX512")} if r["seed"] == 0 else
           {**r, "provenance": prov("a")} for r in records]  # fmt: skip
    capsys.readouterr()
    assert sweep_main([*argv[:3], str(_ledger(tmp_path / "cpu", cpu)), "--report_only"]) == 2
    assert "cpu AVX512 (2 runs), cpu AVX2 (10 runs)" in capsys.readouterr().err


def test_resume_at_another_commit_keeps_versions_apart(
    tmp_path: Path, fake_fit: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A sweep resumed at another commit says so as it starts; its final report refuses to
    average the two (exit 2, the ledger kept), and ``--allow_mixed_provenance`` reports them."""
    out = tmp_path / "out"
    argv = ["--config", str(write_spec(tmp_path / "s.yaml")), "--out", str(out)]
    assert sweep_main(argv) == 0 and n_calls(fake_fit) == 4
    monkeypatch.setenv("FAKE_PROVENANCE", json.dumps(prov("b")))
    import kwsnet.tracking

    monkeypatch.setattr(kwsnet.tracking, "provenance", lambda: prov("b"))
    argv[1] = str(write_spec(tmp_path / "s.yaml", seeds=3))  # one more seed: 2 runs to make
    capsys.readouterr()
    assert sweep_main(argv) == 2 and n_calls(fake_fit) == 6
    cap = capsys.readouterr()
    assert f"4 ok run(s) kept from the ledger were made with another provenance than this " \
           f"process (commit {'b' * 12}): commit {'a' * 12} (4 runs)" in cap.out  # fmt: skip
    assert f"commit {'a' * 12} (4 runs), commit {'b' * 12} (2 runs)" in cap.err
    assert len(read_ledger(out / "ledger.jsonl")) == 6
    assert sweep_main([*argv, "--report_only", "--allow_mixed_provenance"]) == 0
    assert "| per_conv | commit bbbbbbbbbbbb | 1 |" in (out / "results.md").read_text()
