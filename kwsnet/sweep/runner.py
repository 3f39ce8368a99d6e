"""The process pool: run the not-yet-``ok`` plans, ``workers`` at a time, one ``kwsnet fit``
process each; SIGTERM / SIGINT end the running runs and keep the ledger."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

from kwsnet.sweep.ledger import (
    LEDGER,
    _content,
    append_ledger,
    describe_provenance,
    latest_records,
    provenance_key,
    provenance_labels,
    read_ledger,
    record_run,
    sweep_provenance,
)
from kwsnet.sweep.spec import (
    RunPlan,
    SweepSpec,
    _launch_key,
    content_keys,
    run_base_config,
)


def run_line(rec: dict[str, Any]) -> str:
    """A finished run's progress line: status, run id, metric, collapsed flag, wall time and,
    for a failed run, its log."""
    value = "" if rec["value"] is None else f"{rec['metric']}={rec['value']:.4f}"
    flag = " collapsed" if rec.get("collapsed") else ""
    return f"{rec['status']:6s} {rec['run_id']} {value}{flag} ({rec['wall_s']:.0f}s)" + (
        "" if rec["status"] == "ok" else f" log: {rec['log']}"
    )


def run_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a run process: ``threads`` intra-op threads, unbuffered output,
    ``extra`` (e.g. ``CUDA_VISIBLE_DEVICES``) on top."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }
    # A wandb service this process started (e.g. an earlier summary run) resolves relative
    # paths from its own cwd: each run starts its own, as a lone `kwsnet fit` does.
    env.pop("WANDB_SERVICE", None)
    return env


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL it when the process that started it dies, so
    a killed worker leaves no run writing into a run dir that another worker takes over."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the run outlives a killed worker
        pass


def start_run(
    spec: SweepSpec, plan: RunPlan, env: dict[str, str], die_with_parent: bool = False
) -> tuple[subprocess.Popen, Any, str | None]:
    """Start one run's process in a fresh run dir (a stale failed attempt is removed), its
    output to ``plan.log_path``; return (process, open log file, the content key it started
    with). ``die_with_parent``: the run is killed when this process dies (a sweep worker)."""
    shutil.rmtree(plan.run_dir, ignore_errors=True)
    os.makedirs(plan.run_dir)
    logf = open(plan.log_path, "w")  # noqa: SIM115 (the caller closes it when the run ends)
    logf.write("$ " + shlex.join(plan.argv) + "\n")
    logf.flush()
    # the run reads its base config as it starts
    run_key = _launch_key(spec, run_base_config(spec, plan.point))
    proc = subprocess.Popen(
        plan.argv,
        stdout=logf,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=_die_with_parent if die_with_parent and sys.platform == "linux" else None,
    )
    return proc, logf, run_key


def end_process(proc: subprocess.Popen, timeout: float = 20.0, terminate: bool = True) -> None:
    """Stop a run process: SIGTERM (unless ``terminate`` is False: already sent), up to
    ``timeout`` seconds to exit (a fit saves its checkpoint), then SIGKILL."""
    if proc.poll() is not None:
        return
    if terminate:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def threads_per_run(workers: int) -> int:
    """Intra-op threads of each of ``workers`` runs at once on this machine's cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


class _Stop(Exception):
    """SIGTERM / SIGINT: stop launching, end the running runs, keep the ledger."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def _note_other_provenance(
    spec: SweepSpec, kept: Sequence[dict[str, Any]], threads: int, log: Any
) -> None:
    """Say so when ok runs kept from the ledger were made by other code (another commit, torch
    version, CPU capability, ...) than this process runs: the report will not average them with
    the runs about to be made (``report.MixedProvenanceError``) unless
    ``--allow_mixed_provenance``."""
    if not kept:
        return
    now = {"provenance": sweep_provenance(threads)}
    other = [r for r in kept if provenance_key(r) != provenance_key(now)]
    if other:
        key = provenance_key(now)
        labels = provenance_labels([provenance_key(r) for r in [*kept, now]])
        print(
            f"sweep {spec.name}: {len(other)} ok run(s) kept from the ledger were made with "
            f"another provenance than this process ({labels[key]}): "
            f"{describe_provenance(other, [key])}; the report will refuse to average them with "
            "the runs made now unless --allow_mixed_provenance (rows apart); a new --out runs "
            "everything again",
            file=log,
            flush=True,
        )


def run_sweep(
    spec: SweepSpec, plans: Sequence[RunPlan], out: str, workers: int, log: Any = None
) -> list[dict[str, Any]]:
    """Run the not-yet-``ok`` plans, ``workers`` at a time; return this invocation's records.
    Progress goes to ``log`` (default: ``sys.stdout`` as it is at call time)."""
    log = sys.stdout if log is None else log
    ledger = os.path.join(out, LEDGER)
    keys = content_keys(spec)
    latest = latest_records(read_ledger(ledger, repair=True))
    done = {k for k, r in latest.items() if r.get("status") == "ok"}
    content = {k: _content(latest[k], spec, keys) for k in done}
    stale = sorted(k for k in done if content[k] == "other")
    if stale:
        warnings.warn(
            f"{len(stale)} ok run(s) in {ledger} were made with another base config content "
            f"or other overrides than the spec now has ({', '.join(spec.base_configs)}); they "
            f"run again (e.g. {stale[0]})",
            stacklevel=2,
        )
        done -= set(stale)
    unknown = sum(c == "unknown" for c in content.values())
    if unknown:
        print(
            f"sweep {spec.name}: {unknown} ok run(s) were recorded without a content key (by an "
            f"older kwsnet) with the same base config path and overrides; kept, but what "
            f"{spec.base_config} held then is unknown",
            file=log,
            flush=True,
        )
    threads = str(threads_per_run(workers))
    todo = [p for p in plans if p.run_id not in done]
    if todo:
        _note_other_provenance(spec, [latest[k] for k in sorted(done)], int(threads), log)
    print(
        f"sweep {spec.name}: {len(plans)} runs, {len(plans) - len(todo)} already ok, "
        f"{len(todo)} to run, "
        f"{workers} worker(s)",
        file=log,
        flush=True,
    )
    env = run_env(int(threads))
    queue = list(todo)
    running: dict[subprocess.Popen, tuple[RunPlan, float, Any, str | None]] = {}
    records: list[dict[str, Any]] = []
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while queue or running:
            while queue and len(running) < workers:
                plan = queue.pop(0)
                proc, logf, run_key = start_run(spec, plan, env)
                running[proc] = (plan, time.monotonic(), logf, run_key)
            for proc in [p for p in running if p.poll() is not None]:
                plan, start, logf, run_key = running.pop(proc)
                logf.close()
                rec = record_run(
                    plan, spec, proc.returncode, time.monotonic() - start, run_key, int(threads)
                )
                append_ledger(ledger, rec)
                records.append(rec)
                print(f"[{len(records)}/{len(todo)}] {run_line(rec)}", file=log, flush=True)
            time.sleep(0.1)
    except (_Stop, KeyboardInterrupt) as exc:
        print(
            f"sweep stopped ({exc.__class__.__name__} {exc}); "
            f"ending {len(running)} running run(s); "
            "re-run the same command to resume",
            file=log,
            flush=True,
        )
        for proc in running:
            proc.terminate()
        for proc, (_plan, _start, logf, _key) in running.items():
            end_process(proc, terminate=False)  # all were sent SIGTERM above, at once
            logf.close()
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return records
