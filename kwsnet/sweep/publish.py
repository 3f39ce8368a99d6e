"""Publishing a sweep: its wandb summary run, the ``wandb sweep`` config of the same grid, and
the copy of the results files to ``publish``."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from typing import Any

from kwsnet.metrics.collapse import RULE
from kwsnet.sweep.ledger import LEDGER
from kwsnet.sweep.spec import BASE_KEY, SpecError, SweepSpec, _short, cli_value
from kwsnet.sweep.tables import RESULT_FILES, _cell, result_files

__all__ = ["wandb_sweep_config"]


_WANDB_STATS = [
    "ci_low",
    "ci_high",
    "baseline",
    "test",
    "diff",
    "diff_low",
    "diff_high",
    "p",
    "p_holm",
    "margin",
    "p_tost",
    "p_tost_holm",
    "tost_low",
    "tost_high",
    "provenance",
    "verdict",
]


def _summary_run(spec: SweepSpec, out: str, rows: Sequence[dict[str, Any]]) -> str | None:
    """Log the aggregate table and the results files as one wandb run; return its dir."""
    import wandb

    from kwsnet.tracking import resolve_offline

    cfg = spec.wandb
    offline = resolve_offline(cfg.get("offline"))
    run = wandb.init(
        project=cfg.get("project", "kwsnet"),
        group=spec.name,
        job_type="sweep-summary",
        name=f"{spec.name}-summary",
        dir=out,
        mode="offline" if offline else "online",
        config={
            "sweep": dataclasses.asdict(spec),
            "stats": spec.stat,
            "collapse_rule": RULE,
            "higher_is_better": spec.higher_is_better,
        },
        reinit="finish_previous",
    )
    try:
        columns = [_short(k) for k in spec.grid] + [
            "n",
            "mean",
            "std",
            "min",
            "max",
            "collapsed",
            "median_best_epoch",
            "failed",
            *_WANDB_STATS,
        ]
        data = [
            [_cell(spec, k, v) for k, v in r["point"].items()]
            + [
                r["n"],
                r["mean"],
                r["std"],
                r["min"],
                r["max"],
                r["collapsed"],
                r["median_best_epoch"],
                r["failed"],
            ]
            + [r.get(k) for k in _WANDB_STATS]
            for r in rows
        ]
        run.log({"sweep/table": wandb.Table(columns=columns, data=data)})
        art = wandb.Artifact(f"{spec.name}-results", type="sweep-results")
        for name in (*RESULT_FILES, LEDGER):
            if os.path.exists(os.path.join(out, name)):
                art.add_file(os.path.join(out, name), name=name)
        run.log_artifact(art)
        return os.path.dirname(run.dir)
    finally:
        run.finish()


def wandb_sweep_config(spec: SweepSpec, program: str = "train.py") -> dict[str, Any]:
    """A ``wandb sweep`` config running the same grid × seeds through ``train.py fit``.

    The agent appends ``--key=value`` for each parameter (``${args}``); the spec's fixed
    overrides are literal command arguments so their quoting is exactly the sweep runner's.
    A grid over ``base_config`` cannot be one: the agent would append ``--config`` after the
    overrides, which then lose to the config's values (``SpecError``).
    """
    if BASE_KEY in spec.grid:
        raise SpecError(
            "a grid over base_config cannot be one wandb sweep (the agent appends --config "
            "after the fixed overrides); emit one spec per base config"
        )
    params: dict[str, Any] = {k: {"values": list(v)} for k, v in spec.grid.items()}
    params["seed_everything"] = {"values": list(spec.seeds)}
    command = ["${env}", "${interpreter}", "${program}", "fit", "--config", spec.base_config]
    command += [f"--{k}={cli_value(v)}" for k, v in spec.overrides.items()]
    command += ["--test_after_fit=true", f"--trainer.logger.init_args.group={spec.name}", "${args}"]
    goal = "maximize" if spec.higher_is_better else "minimize"
    return {
        "name": spec.name,
        "program": program,
        "method": "grid",
        "metric": {"name": spec.metric, "goal": goal},
        "parameters": params,
        "command": command,
    }


def _publish(spec: SweepSpec, out: str, name: str | None = None) -> None:
    """Copy the results files (``name``: those of a named extra report) and the ledger (so
    the table can be rebuilt) to ``publish``."""
    if spec.publish:
        os.makedirs(spec.publish, exist_ok=True)
        for file in (*result_files(name), LEDGER):
            if file != LEDGER or os.path.exists(os.path.join(out, file)):
                shutil.copy2(os.path.join(out, file), os.path.join(spec.publish, file))
        print(f"published results to {spec.publish}")
