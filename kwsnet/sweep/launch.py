"""Starting sweep workers: as processes on this machine (each with its share of the cores and,
for GPU runs, its own devices) or as a Slurm job array through submitit. The workers:
``kwsnet.sweep.worker``; the study they share: ``kwsnet.sweep.study``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kwsnet.sweep.runner import _raise_stop, _Stop, threads_per_run
from kwsnet.sweep.spec import SweepSpec
from kwsnet.sweep.study import StudyError
from kwsnet.sweep.worker import run_worker

__all__ = [
    "WORKER_ENTRY",
    "start_local_workers",
    "submit_workers",
    "wait_local_workers",
    "worker_argv",
    "worker_devices",
]


def worker_devices(n_workers: int, gpus: int) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` of each of ``n_workers`` workers on this machine when every run
    takes ``gpus`` GPUs: consecutive groups of the visible devices (``CUDA_VISIBLE_DEVICES``,
    else all that torch sees), round-robin when there are more workers than groups; ``None``
    each when ``gpus`` is 0.

    Raises:
        StudyError: the spec asks for GPUs this machine does not have.
    """
    if gpus <= 0:
        return [None] * n_workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d for d in visible.split(",") if d.strip()]
    else:
        import torch

        devices = [str(i) for i in range(torch.cuda.device_count())]
    groups = [devices[i : i + gpus] for i in range(0, len(devices) - gpus + 1, gpus)]
    if not groups:
        raise StudyError(
            f"resources.gpus is {gpus} per run but this machine shows {len(devices)} GPU(s)"
        )
    return [",".join(groups[i % len(groups)]) for i in range(n_workers)]


# the console script's entry (kwsnet.entry): a worker process never imports Lightning itself
WORKER_ENTRY: list[str] = [
    sys.executable,
    "-c",
    "from kwsnet.entry import main; main()",
    "sweep-worker",
]


def worker_argv(url: str, name: str, threads: int) -> list[str]:
    """The command of one local worker process."""
    return [*WORKER_ENTRY, "--storage", url, "--study", name, "--threads", str(threads)]


def start_local_workers(
    spec: SweepSpec, url: str, name: str, n: int, out: str
) -> list[subprocess.Popen]:
    """Start ``n`` worker processes on this machine (``kwsnet sweep-worker``), each with
    ``cores // n`` threads per run and, for GPU runs, its own devices; their output goes to
    ``<out>/workers/worker<i>.log``."""
    threads = threads_per_run(n)
    devices = worker_devices(n, spec.resource_settings["gpus"])
    logs = Path(out) / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        extra = {} if devices[i] is None else {"CUDA_VISIBLE_DEVICES": devices[i]}
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
        with open(logs / f"worker{i}.log", "w") as logf:
            procs.append(
                subprocess.Popen(
                    worker_argv(url, name, threads),
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
    return procs


def _worker_job(url: str, name: str, threads: int) -> int:
    """One submitit array task: a worker until the queue is empty; the runs it made."""
    return len(run_worker(url, name, threads=threads))


def submit_workers(
    spec: SweepSpec, url: str, name: str, n: int, out: str, cluster: str | None = None
) -> list[Any]:
    """Submit ``n`` workers as one job array through submitit's ``AutoExecutor`` (Slurm when
    ``sbatch`` is there, else local processes; ``cluster`` forces one: ``slurm``, ``local``,
    ``debug``), each task with the spec's ``resources``; return the jobs. Slurm gives each task
    its own GPUs (``CUDA_VISIBLE_DEVICES``), and a worker runs one run at a time on them.

    Raises:
        StudyError: submitit is not installed.
    """
    try:
        import submitit
    except ImportError as exc:
        raise StudyError(
            f"--launcher submitit needs submitit (pip install 'kwsnet[slurm]'): {exc}"
        ) from exc
    res = spec.resource_settings
    executor = submitit.AutoExecutor(folder=os.path.join(out, "submitit", "%j"), cluster=cluster)
    params: dict[str, Any] = {
        "name": f"kwsnet-{name}",
        "timeout_min": res["time_min"],
        "cpus_per_task": res["cpus"],
        "gpus_per_node": res["gpus"],
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if res["mem_gb"] is not None:
        params["mem_gb"] = res["mem_gb"]
    if res["partition"] is not None:
        params["slurm_partition"] = res["partition"]
    if res["array_parallelism"] is not None:
        params["slurm_array_parallelism"] = res["array_parallelism"]
    executor.update_parameters(**params)
    return list(executor.map_array(_worker_job, [url] * n, [name] * n, [res["cpus"]] * n))


def wait_local_workers(procs: Sequence[subprocess.Popen]) -> list[int]:
    """Wait for local worker processes; SIGTERM / SIGINT pass on to them (each queues its
    running run again) before re-raising. Their exit codes."""
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return [p.wait() for p in procs]
    except (_Stop, KeyboardInterrupt):
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
