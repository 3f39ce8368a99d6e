"""The Optuna engine of ``kwsnet sweep`` (``--storage``, ``kwsnet sweep-worker``,
``kwsnet.sweep.study``): planning, workers sharing one storage, a worker killed with SIGKILL,
duplicates, failed runs, reports from the study, the submitit launcher, GPU pinning.

The runs are a fake ``kwsnet fit`` (a script writing summary.json as fit does), so the tests
exercise the real planner, worker processes, storage and reports in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kwsnet.cli import console
from kwsnet.sweep import launch, worker
from kwsnet.sweep import spec as sweep_spec
from kwsnet.sweep import study as engine
from kwsnet.sweep.ledger import read_ledger
from kwsnet.sweep.spec import SpecError, load_spec

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[1]
LR = "model.optimizer.init_args.lr"

# A stand-in for `kwsnet fit`: writes summary.json as fit does; lr 0.5 exits non-zero; sleeps
# $FAKE_SLEEP seconds first; leaves a file named after its pid in $FAKE_CALLS.
FAKE_FIT = r"""
import json, os, sys, time
args = sys.argv[1:]
opt = {args[i][2:]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
open(os.path.join(os.environ["FAKE_CALLS"], str(os.getpid())), "w").write(" ".join(args))
root, seed = opt["trainer.default_root_dir"], int(opt["seed_everything"])
lr = float(opt["model.optimizer.init_args.lr"])
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
if lr == 0.5:
    sys.exit(3)
os.makedirs(root, exist_ok=True)
prov = {"kwsnet_version": "0.1.0", "git_commit": "a" * 40, "git_dirty": False,
        "torch_version": "2.14.1", "lightning_version": "2.6.1", "cpu_capability": "AVX2",
        "num_threads": 1}
summary = {"seed": seed, "num_classes": 3, "best_epoch": 1, "epochs_run": 2,
           "metrics": {"test/acc": 0.5 + 0.1 * seed + lr}, "provenance": prov,
           "collapse": {"test": {"counts": [20, 25, 27]}}}
json.dump(summary, open(os.path.join(root, "summary.json"), "w"))
"""


@pytest.fixture
def fake_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Swap the run entry for FAKE_FIT; return the folder holding one file per call."""
    script = tmp_path / "fake_fit.py"
    script.write_text(FAKE_FIT)
    calls = tmp_path / "calls"
    calls.mkdir()
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setattr(sweep_spec, "FIT_ENTRY", [sys.executable, str(script)])
    return calls


def write_spec(path: Path, **over: object) -> Path:
    spec = {
        "name": "t",
        "base_config": str(REPO / "configs" / "kws_raw.yaml"),
        "seeds": [0, 1, 2],
        "grid": {LR: [0.01, 0.02]},
        "wandb": {"summary_run": False},
        # grace 10 s: short enough for the SIGKILL test, long enough that a worker slowed by a
        # loaded machine (CI's xdist workers beside other jobs) is never taken for dead
        "engine": {"heartbeat_s": 0.3, "grace_s": 10},
    }
    spec.update(over)
    path.write_text(yaml.safe_dump(spec))
    return path


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def trials_by_run(url: str, name: str = "t") -> dict[str, list]:
    study = engine.load_study(url, name)
    out: dict[str, list] = {}
    for t in study.get_trials():
        if "run_id" in t.user_attrs:
            out.setdefault(t.user_attrs["run_id"], []).append(t)
    return out


def test_study_sweep_reports_as_the_local_runner(
    tmp_path: Path, fake_fit: Path, capsys: pytest.CaptureFixture
) -> None:
    """A sweep through a journal-file study with 2 local workers: every run once, one
    COMPLETE trial each with its record; the table equals the local runner's on the same
    spec, and ``--report_only --study`` rebuilds it from the study alone."""
    spec = write_spec(tmp_path / "s.yaml")
    url = f"journal:{tmp_path / 'study.journal'}"
    argv = ["--config", str(spec), "--out", str(tmp_path / "a"), "--storage", url]
    assert console(["sweep", *argv, "--workers", "2"]) == 0
    via_study = table_lines(capsys.readouterr().out)
    assert len(list(fake_fit.iterdir())) == 6
    by_run = trials_by_run(url)
    assert len(by_run) == 6
    for trials in by_run.values():
        (t,) = trials
        assert t.state == optuna.trial.TrialState.COMPLETE
        rec = t.user_attrs["record"]
        assert rec["status"] == "ok" and t.value == pytest.approx(rec["value"])
        assert rec["provenance"]["git_commit"] == "a" * 40 and rec["worker"]
        assert Path(rec["run_dir"], "summary.json").is_file()
    assert console(["sweep", "--config", str(spec), "--out", str(tmp_path / "b")]) == 0
    local = table_lines(capsys.readouterr().out)
    assert via_study == local and len(local) == 4
    report = ["--report_only", "--storage", url, "--study", "t", "--out", str(tmp_path / "c")]
    assert console(["sweep", *report]) == 0
    assert table_lines(capsys.readouterr().out) == local
    csv_a = (tmp_path / "a" / "results.csv").read_text()
    assert csv_a == (tmp_path / "c" / "results.csv").read_text()
    # the study's records as a ledger snapshot: a local report on it gives the same table
    assert len(read_ledger(tmp_path / "c" / "ledger.jsonl")) == 6
    local_report = ["--config", str(spec), "--out", str(tmp_path / "c"), "--report_only"]
    assert console(["sweep", *local_report]) == 0
    assert table_lines(capsys.readouterr().out) == local
    # planning again queues nothing: every run is done with the spec's content
    assert console(["sweep", *argv, "--workers", "0"]) == 0
    assert "0 run(s) queued now" in capsys.readouterr().out
    assert len(list(fake_fit.iterdir())) == 12  # 6 through the study, 6 by the local runner


def test_killed_worker_run_is_retried_once_and_nothing_runs_twice(
    tmp_path: Path, fake_fit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three worker processes share a SQLite study; one is SIGKILLed while its run runs. Its
    trial is failed after the grace period and queued again (Optuna's retry callback) and
    another worker finishes it; its run process died with it; every run ends with exactly one
    COMPLETE trial and no finished run is made twice."""
    monkeypatch.setenv("FAKE_SLEEP", "1.5")
    spec = write_spec(tmp_path / "s.yaml")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "out"
    argv = ["sweep", "--config", str(spec), "--out", str(out), "--storage", url]
    assert console([*argv, "--workers", "0"]) == 0
    logs = [open(tmp_path / f"w{i}.log", "w") for i in range(3)]  # noqa: SIM115
    # the victim's run lasts until it is killed: with the others' 1.5 s, a loaded machine could
    # let it finish between being seen RUNNING and the kill, and nothing would be retried
    envs = [{**os.environ, "FAKE_SLEEP": "120"}] + [dict(os.environ)] * 2
    workers = [
        subprocess.Popen(
            launch.worker_argv(url, "t", 1), stdout=f, stderr=subprocess.STDOUT, env=env
        )
        for f, env in zip(logs, envs, strict=True)
    ]
    victim = workers[0]
    study = engine.load_study(url, "t")
    deadline = time.monotonic() + 120
    killed_trial = None
    while killed_trial is None and time.monotonic() < deadline:
        for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            if str(t.user_attrs.get("worker", "")).endswith(f":{victim.pid}"):
                killed_trial = t
        time.sleep(0.1)
    assert killed_trial is not None, (tmp_path / "w0.log").read_text()
    time.sleep(0.3)  # its run process has started
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    codes = [w.wait(timeout=180) for w in workers[1:]]
    for f in logs:
        f.close()
    assert codes == [0, 0], [(tmp_path / f"w{i}.log").read_text() for i in (1, 2)]
    by_run = trials_by_run(url)
    complete = optuna.trial.TrialState.COMPLETE
    assert sorted(by_run) == sorted(p.run_id for p in sweep_spec.plan_runs(load_spec(spec)))
    for run_id, trials in by_run.items():
        assert sum(t.state == complete for t in trials) == 1, run_id
    rid = killed_trial.user_attrs["run_id"]
    killed = next(t for t in by_run[rid] if t.number == killed_trial.number)
    assert killed.state == optuna.trial.TrialState.FAIL and "record" not in killed.user_attrs
    (retried,) = [t for t in by_run[rid] if t.state == complete]
    assert killed.number in retried.system_attrs.get("retry_history", [])
    # 6 runs + the one the kill cut short: nothing else started twice
    calls = list(fake_fit.iterdir())
    assert len(calls) == 7
    for call in calls:  # the killed worker's run process died with it (PR_SET_PDEATHSIG)
        with pytest.raises(ProcessLookupError):
            os.kill(int(call.name), 0)
    assert "silent for" in "".join((tmp_path / f"w{i}.log").read_text() for i in (1, 2))
    report = ["sweep", "--report_only", "--storage", url, "--study", "t", "--out", str(out)]
    assert console(report) == 0


def test_failed_run_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, fake_fit: Path, capsys: pytest.CaptureFixture
) -> None:
    """A run that exits non-zero is a FAIL trial with its record (the error and the log's
    tail), the others finish, the exit status is 1; planning again queues only the failed
    runs."""
    spec = write_spec(tmp_path / "s.yaml", grid={LR: [0.01, 0.5]}, seeds=[0, 1])
    url = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["sweep", "--config", str(spec), "--out", str(tmp_path / "o"), "--storage", url]
    assert console([*argv, "--workers", "1"]) == 1
    by_run = trials_by_run(url)
    states = {rid: [t.state.name for t in ts] for rid, ts in by_run.items()}
    assert states == {
        "lr=0.01__seed0": ["COMPLETE"],
        "lr=0.01__seed1": ["COMPLETE"],
        "lr=0.5__seed0": ["FAIL"],
        "lr=0.5__seed1": ["FAIL"],
    }
    rec = by_run["lr=0.5__seed0"][0].user_attrs["record"]
    assert rec["status"] == "failed" and "exit code 3" in rec["error"]
    assert "| 0.5 | 0 |" in capsys.readouterr().out  # the failed point's row: no runs averaged
    assert console([*argv, "--workers", "0"]) == 0
    assert "2 run(s) queued now" in capsys.readouterr().out


def test_duplicate_queued_run_is_given_up(tmp_path: Path, fake_fit: Path) -> None:
    """Two plannings racing can queue one run twice: the worker that pops the second copy
    after the first finished gives it up (PRUNED, ``duplicate_of``) instead of running it."""
    spec = load_spec(write_spec(tmp_path / "s.yaml", seeds=[0], grid={LR: [0.01]}))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study, queued = engine.plan_study(spec, url, str(tmp_path / "o"))
    assert queued == 1
    (first,) = study.get_trials()
    study.enqueue_trial({}, user_attrs=dict(first.user_attrs))  # the racing planner's copy
    records = worker.run_worker(url, "t", threads=1)
    assert [r["status"] for r in records] == ["ok"]
    assert len(list(fake_fit.iterdir())) == 1
    trials = engine.load_study(url, "t").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert trials[1].user_attrs["duplicate_of"] == 0


POP_ALL = r"""
import json, sys
import optuna
from kwsnet.sweep.study import open_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="q", storage=open_storage(sys.argv[1]))
got = []
while True:
    t = study.ask()
    if "q" not in t.user_attrs:
        study.tell(t, state=optuna.trial.TrialState.PRUNED)
        break
    got.append(t.user_attrs["q"])
    try:
        study.tell(t, 0.0)
    except Exception:  # the trial another process popped too, and told first
        pass
print(json.dumps(got))
"""


def test_sqlite_storage_pops_each_queued_trial_once(tmp_path: Path) -> None:
    """Three processes emptying one SQLite study's queue pop every queued trial exactly
    once. (With the sqlite3 driver's own transactions, two read a trial WAITING before either
    wrote it RUNNING: 3 processes popped 60 trials 70-73 times.)"""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=engine.open_storage(url))
    n = 30
    for i in range(n):
        study.enqueue_trial({}, user_attrs={"q": i})
    script = tmp_path / "pop_all.py"
    script.write_text(POP_ALL)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE, env=env)
        for _ in range(3)
    ]
    popped = [q for p in procs for q in json.loads(p.communicate(timeout=300)[0])]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(popped) == list(range(n))


def test_stale_trial_is_failed_and_queued_again(tmp_path: Path, fake_fit: Path) -> None:
    """``requeue_stale`` fails a running trial silent for longer than the grace period and
    queues a copy that carries the run; a trial with a fresh heartbeat is left alone."""
    spec = load_spec(write_spec(tmp_path / "s.yaml", seeds=[0, 1], grid={LR: [0.01]}))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    engine.plan_study(spec, url, str(tmp_path / "o"))
    study, storage = engine._load(url, "t")
    stale, fresh = study.ask(), study.ask()
    stale.set_user_attr("heartbeat", time.time() - 60)
    fresh.set_user_attr("heartbeat", time.time() + 60)  # start times are now: beat ahead
    assert worker.requeue_stale(study, storage, grace_s=30, max_retry=2) == []
    time.sleep(0.2)
    assert worker.requeue_stale(study, storage, grace_s=0.1, max_retry=2) == [stale.number]
    trials = study.get_trials()
    assert trials[stale.number].state.name == "FAIL"
    assert trials[fresh.number].state.name == "RUNNING"
    copy = trials[-1]
    assert copy.state.name == "WAITING"
    assert copy.user_attrs["run_id"] == stale.user_attrs["run_id"]

    # a claim of a new search point whose worker died before it held a run: failed, no copy
    study.ask().set_user_attr("heartbeat", time.time() + 60)  # the queued copy, running
    claim = study.ask()  # nothing queued: a fresh trial that holds no run
    assert "run_id" not in claim.user_attrs
    time.sleep(0.2)
    assert worker.requeue_stale(study, storage, grace_s=0.1, max_retry=2) == [claim.number]
    after = study.get_trials()
    assert after[claim.number].state.name == "FAIL" and len(after) == claim.number + 1


def test_study_with_another_spec_is_refused(tmp_path: Path, fake_fit: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    engine.plan_study(load_spec(write_spec(tmp_path / "a.yaml")), url, str(tmp_path / "o"))
    other = load_spec(write_spec(tmp_path / "b.yaml", seeds=[0, 1, 2, 3]))
    with pytest.raises(engine.StudyError, match=r"other \['seeds'\]"):
        engine.plan_study(other, url, str(tmp_path / "o"))


def test_storage_and_study_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert console(["sweep-worker", "--storage", "nonsense", "--study", "t"]) == 2
    assert "expected a database URL" in capsys.readouterr().err
    engine.open_storage(url)  # makes an empty database
    assert console(["sweep", "--report_only", "--storage", url, "--study", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kwsnet: error:") and "'nope' is not in" in err
    assert console(["sweep", "--config", "x.yaml", "--study", "t"]) == 2
    assert "--study needs --storage" in capsys.readouterr().err


def test_engine_and_resources_keys_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="grace_s"):
        load_spec(write_spec(tmp_path / "a.yaml", engine={"heartbeat_s": 5, "grace_s": 5}))
    with pytest.raises(SpecError, match="unknown resources keys"):
        load_spec(write_spec(tmp_path / "b.yaml", resources={"gpu": 1}))
    spec = load_spec(write_spec(tmp_path / "c.yaml", resources={"gpus": 1, "cpus": 8}))
    assert spec.resource_settings["gpus"] == 1 and spec.resource_settings["time_min"] == 1440


def test_worker_devices_pin_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each local worker gets its own group of the visible GPUs (round-robin past the last)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert launch.worker_devices(3, 0) == [None, None, None]
    assert launch.worker_devices(3, 1) == ["0", "1", "2"]
    assert launch.worker_devices(3, 2) == ["0,1", "2,3", "0,1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(engine.StudyError, match="0 GPU"):
        launch.worker_devices(1, 1)


def test_submitit_launcher_runs_workers_as_a_job_array(
    tmp_path: Path, fake_fit: Path, capsys: pytest.CaptureFixture
) -> None:
    """``--launcher submitit`` submits the workers as one job array (submitit's local executor
    here; Slurm on a cluster) with the spec's resources; they take every run."""
    pytest.importorskip("submitit")
    spec = write_spec(tmp_path / "s.yaml", seeds=[0, 1], resources={"cpus": 1, "time_min": 5})
    url = f"journal:{tmp_path / 'study.journal'}"
    out = tmp_path / "o"
    argv = ["sweep", "--config", str(spec), "--out", str(out), "--storage", url]
    assert console([*argv, "--workers", "2", "--launcher", "submitit", "--cluster", "local"]) == 0
    text = capsys.readouterr().out
    assert "submitted 2 worker job(s)" in text
    assert len(list(fake_fit.iterdir())) == 4
    by_run = trials_by_run(url)
    assert all([t.state.name for t in ts] == ["COMPLETE"] for ts in by_run.values())
    assert any((out / "submitit").rglob("*_submitted.pkl"))
    json.loads(json.dumps(by_run["lr=0.01__seed0"][0].user_attrs["record"]))


def search_spec(path: Path, **over: object) -> Path:
    spec = {
        "name": "s",
        "base_config": str(REPO / "configs" / "kws_raw.yaml"),
        "seeds": [0, 1],
        "search": {
            "sampler": "tpe",
            "points": 3,
            "startup_points": 1,
            "space": {
                LR: {"low": 0.001, "high": 0.1, "log": True},
                "model.backbone.init_args.channels": {"low": 8, "high": 32, "step": 8},
                "model.backbone.init_args.norm_placement": ["per_conv", "end"],
            },
        },
        "wandb": {"summary_run": False},
        "engine": {"heartbeat_s": 0.3, "grace_s": 30},  # nothing is killed here: no stale run
    }
    spec.update(over)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_search_samples_points_and_repeats_seeds(
    tmp_path: Path, fake_fit: Path, capsys: pytest.CaptureFixture
) -> None:
    """A ``search`` spec: two workers sample exactly ``points`` points from the ranges (TPE),
    each run once per seed with the same values (Optuna params), and the table has a row per
    point with its values; ``--report_only`` rebuilds it from the study."""
    spec = search_spec(tmp_path / "s.yaml")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "o"
    assert console(["sweep", "--config", str(spec)]) == 2
    assert "add --storage URL" in capsys.readouterr().err
    argv = ["sweep", "--config", str(spec), "--out", str(out), "--storage", url]
    assert console([*argv, "--workers", "2"]) == 0
    table = table_lines(capsys.readouterr().out)
    assert len(list(fake_fit.iterdir())) == 6
    by_point: dict[str, list] = {}
    for t in engine.load_study(url, "s").get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        by_point.setdefault(t.user_attrs["point_label"], []).append(t)
    assert len(by_point) == 3
    for trials in by_point.values():
        assert sorted(t.user_attrs["seed"] for t in trials) == [0, 1]
        (params,) = {json.dumps(t.params, sort_keys=True) for t in trials}
        values = json.loads(params)
        assert 0.001 <= values[LR] <= 0.1 and values["model.backbone.init_args.channels"] in (
            8, 16, 24, 32)  # fmt: skip
        assert all(t.user_attrs["point"] == values for t in trials)
        run = trials[0].user_attrs["record"]["run_dir"]
        call = next(c.read_text() for c in fake_fit.iterdir() if run in c.read_text())
        assert f"--{LR} {values[LR]}" in call  # the run got the sampled value
    assert table[0].startswith("| lr | channels | norm_placement | n |") and len(table) == 5
    report = ["sweep", "--report_only", "--storage", url, "--study", "s", "--out", str(tmp_path)]
    assert console(report) == 0
    assert table_lines(capsys.readouterr().out) == table


@pytest.mark.parametrize(
    ("search", "match"),
    [
        ({"points": 2, "space": {LR: {"low": 0.1, "high": 0.01}}}, "low must be below high"),
        ({"points": 2, "space": {LR: {"low": 0, "high": 1, "log": True}}}, "log needs low > 0"),
        ({"points": 2, "space": {LR: [{"a": 1}]}}, "categorical"),
        ({"points": 0, "space": {LR: [0.1]}}, r"search.points must be an int >= 1"),
        ({"points": 2, "sampler": "cmaes", "space": {LR: [0.1]}}, "search.sampler"),
        ({"points": 2, "space": {}}, "non-empty mapping"),
    ],
)
def test_search_spec_errors(tmp_path: Path, search: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        load_spec(search_spec(tmp_path / "s.yaml", search=search))


def test_search_and_grid_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="a grid or a search, not both"):
        load_spec(search_spec(tmp_path / "s.yaml", grid={LR: [0.1, 0.2]}))


def test_sigterm_stops_a_worker_and_queues_its_run_again(
    tmp_path: Path, fake_fit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM to a worker ends its run process, fails its trial and queues the run again at
    once (no grace period to wait), and the worker exits with 130."""
    monkeypatch.setenv("FAKE_SLEEP", "30")
    spec = write_spec(tmp_path / "s.yaml", seeds=[0], grid={LR: [0.01]})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    engine.plan_study(load_spec(spec), url, str(tmp_path / "o"))
    proc = subprocess.Popen(launch.worker_argv(url, "t", 1), env=os.environ)
    study = engine.load_study(url, "t")
    deadline = time.monotonic() + 120
    while not study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    while not list(fake_fit.iterdir()):  # its run process has started
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "WAITING"]
    (call,) = fake_fit.iterdir()
    with pytest.raises(ProcessLookupError):
        os.kill(int(call.name), 0)
