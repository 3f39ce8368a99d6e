"""results.png: the metric per grid point, a box of its runs with a dot per seed."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from kwsnet.sweep.spec import SweepSpec, _short
from kwsnet.sweep.tables import _cell, _mixed


def _tick(spec: SweepSpec, row: dict[str, Any], mixed: bool) -> str:
    """A plot's x label for a row: its grid values, then (rows apart by provenance) the
    provenance label's fields, one a line."""
    lines = [_cell(spec, k, v) for k, v in row["point"].items()]
    if mixed:
        lines += row["provenance"].replace("commit ", "").split(", ")
    return "\n".join(lines)


def _plot(rows: Sequence[dict[str, Any]], spec: SweepSpec, path: str) -> None:
    """Write the box plot of ``rows`` (``aggregate``) to ``path``: a box per row (grid
    point, and provenance for rows apart by it), a dot per seed, red for collapsed runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixed = _mixed(rows)  # a provenance line (or more) under each point: wider boxes
    fig, ax = plt.subplots(figsize=(max(4.0, (1.8 if mixed else 1.1) * len(rows) + 1.5), 4.2))
    data = [r["values"] for r in rows]
    ax.boxplot(data, positions=range(1, len(rows) + 1), widths=0.6, showfliers=False)
    jitter = random.Random(0)
    for i, r in enumerate(rows, start=1):
        xs = [i + jitter.uniform(-0.18, 0.18) for _ in r["values"]]
        colors = ["tab:red" if c else "tab:blue" for c in r["collapsed_flags"]]
        ax.scatter(xs, r["values"], s=18, alpha=0.8, zorder=3, c=colors)
    ax.set_xticks(range(1, len(rows) + 1))
    ax.set_xticklabels([_tick(spec, r, mixed) for r in rows])
    ax.set_xlabel(" / ".join(_short(k) for k in spec.grid))
    ax.set_ylabel(spec.metric)
    ax.set_title(f"{spec.name}: {spec.metric} per grid point (dots: seeds, red: collapsed)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
