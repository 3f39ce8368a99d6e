"""Init strategies, measured: LSUV per-layer tables and SmallInit-Emb training loss.

Part 1 prints the LSUV report for ``kwsnet.models.raw_conv.RawConv`` (plus its linear head)
under each order, calibrated on one batch of the built-in synthetic corpus, and a summary of the
worst residual |mean| and |std - 1| per order and norm placement.

Part 2 trains a small Conformer speaker classifier (log-mel -> ConformerBackbone -> linear
head, cross-entropy, AdamW, no LR warm-up) for ``--steps`` steps on the synthetic corpus, for
each learning rate in ``--lr`` and each layer variant in ``--variants`` (``pre_ln``:
torchaudio's Pre-LN Conformer; ``post_ln``: ``ConformerBackbone(post_ln=True)``), with the same
seeds, batches and steps for three init arms: default init, default init + LayerNorm after the
input projection, and SmallInit-Emb (U(-1e-4, 1e-4) projection + LayerNorm). It prints the
mean training loss over windows of steps and the held-out accuracy, averaged over seeds, with
the ratio of each arm to the default-init arm of the same lr and variant, and how many runs
diverged: a non-finite loss (training stops there), or a mean loss over the last window of at
least ``--stall-frac`` (default 0.9) times ln(classes), i.e. stalled near chance. ``--layers``,
``--d-model``, ``--heads``, ``--ffn`` and ``--kernel`` size the Conformer (defaults: the 2-layer,
d_model-64 model of docs/init_and_norms.md); ``--arms`` picks arms.

``--compare`` adds paired-by-seed comparisons (``kwsnet.stats.compare``) of every arm against
the default arm of the same lr and variant and, where both variants ran, of Post-LN against
Pre-LN per arm: last-window training loss and held-out accuracy, difference with its 95% t CI,
paired t-test p, Holm-adjusted across the comparisons of that metric in the table, and the
verdict at ``--alpha``. A diverged run with a non-finite loss counts as ln(classes)
(chance-level loss) in the loss tables and tests. ``--json PATH`` writes every
run (config, per-window losses, accuracy, divergence); ``--from-json A B ...`` prints the
tables (and ``--compare``) from such files without training, e.g. to merge runs split over
processes.

    python benchmarks/bench_init.py          # ~5-10 min on 2 busy CPU cores
    python benchmarks/bench_init.py --skip-lsuv --lr 3e-3 1e-3 --seeds 0 1 2 --threads 1
    python benchmarks/bench_init.py --skip-lsuv --layers 8 --lr 1e-2 --variants post_ln \\
        --arms default --seeds 0 --threads 1 --json /tmp/search.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from kwsnet.data.features import LogMel
from kwsnet.data.record import SourceArgs
from kwsnet.data.synthetic import SyntheticSource
from kwsnet.init import LSUV, LSUV_ORDERS, SmallInitEmb, format_report
from kwsnet.models.conformer import ConformerBackbone
from kwsnet.models.raw_conv import NORM_PLACEMENTS, RawConv
from kwsnet.nn.heads import LinearHead
from kwsnet.stats import compare, holm, verdict

ARMS = ("default", "default+LN", "SmallInit-Emb")
VARIANTS = ("pre_ln", "post_ln")
NUM_CLASSES = 20


@dataclasses.dataclass(frozen=True)
class Size:
    """Conformer size for the SmallInit-Emb comparison (defaults: the original small model)."""

    d_model: int = 64
    heads: int = 4
    ffn: int = 128
    layers: int = 2
    kernel: int = 15

    def describe(self) -> str:
        return (
            f"d_model {self.d_model}, {self.layers} layers, heads {self.heads}, "
            f"ffn {self.ffn}, kernel {self.kernel}"
        )


def _corpus(split: str, limit: int, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    source = SyntheticSource(SourceArgs(options={"num_speakers": 20, "utterances": 10}))
    items = source.items(split)
    step = max(1, len(items) // limit)
    items = items[::step][:limit]  # spread over words and speakers
    waves = torch.stack([source.load(it) for it in items])
    labels = torch.tensor([getattr(it, target) for it in items])
    return waves, labels


def lsuv_tables(batch: int) -> None:
    waves, _ = _corpus("train", batch, "keyword")
    print(f"## LSUV on RawConv + LinearHead(64, 6), {batch} synthetic clips, tol 1e-3\n")
    summary = []
    for placement in NORM_PLACEMENTS:
        for order in LSUV_ORDERS:
            torch.manual_seed(0)
            backbone = RawConv(norm_placement=placement)
            head = LinearHead(backbone.embed_dim, 6)
            model = nn.ModuleDict({"backbone": backbone, "head": head})
            rows = LSUV(order=order, seed=0).apply(
                model, lambda m=model: m["head"](m["backbone"](waves))
            )
            if placement == "per_conv":
                print(f"### order={order}, norm_placement={placement}\n")
                print(format_report(rows) + "\n")
            summary.append(
                {
                    "placement": placement,
                    "order": order,
                    "max|mean|": max(abs(r["mean"]) for r in rows),
                    "max|std-1|": max(abs(r["std"] - 1) for r in rows),
                    "iterations": sum(r["iterations"] for r in rows),
                    "all_converged": all(r["converged"] for r in rows),
                }
            )
    print("### worst layer per order and norm placement\n")
    print(format_report(summary) + "\n")


def _train(
    arm: str,
    variant: str,
    seed: int,
    feats: torch.Tensor,
    labels: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    lr: float,
    batch: int,
    num_classes: int,
    size: Size = Size(),
) -> tuple[list[float], float]:
    """Train one run; returns the per-step losses (NaN after a non-finite loss, where training
    stops) and the held-out accuracy."""
    torch.manual_seed(seed)
    backbone = ConformerBackbone(
        input_dim=feats.shape[-1],
        d_model=size.d_model,
        num_heads=size.heads,
        ffn_dim=size.ffn,
        num_layers=size.layers,
        depthwise_conv_kernel_size=size.kernel,
        dropout=0.1,
        input_norm=arm == "default+LN",
        post_ln=variant == "post_ln",
    )
    head = LinearHead(backbone.embed_dim, num_classes)
    model = nn.ModuleDict({"backbone": backbone, "head": head})
    if arm == "SmallInit-Emb":
        strategy = SmallInitEmb(seed=seed)
        strategy.prepare(model)
        strategy.apply(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    order = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(feats), (batch,), generator=order)
        loss = nn.functional.cross_entropy(head(backbone(feats[idx])), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            losses += [math.nan] * (steps - len(losses))
            break
    model.eval()
    with torch.no_grad():
        acc = (head(backbone(val[0])).argmax(-1) == val[1]).float().mean().item()
    return losses, acc


def _windows(steps: int) -> list[tuple[int, int]]:
    w = max(1, min(10, steps // 3))
    return sorted({(0, w), (steps // 2 - w, steps // 2), (steps - w, steps)})


def _record(
    lr: float,
    variant: str,
    arm: str,
    seed: int,
    losses: list[float],
    acc: float,
    windows: list[tuple[int, int]],
    stall_frac: float,
    seconds: float,
) -> dict[str, object]:
    """One run as a JSON-able dict: window means (None when non-finite), accuracy, divergence."""
    chance = math.log(NUM_CLASSES)
    nonfinite = not all(math.isfinite(v) for v in losses)
    means = {}
    for lo, hi in windows:
        m = statistics.fmean(losses[lo:hi])
        means[f"loss@{lo + 1}-{hi}"] = m if math.isfinite(m) else None
    last = means[f"loss@{windows[-1][0] + 1}-{windows[-1][1]}"]
    stalled = last is not None and last >= stall_frac * chance
    finite = [v for v in losses if math.isfinite(v)]
    return {
        "lr": lr,
        "variant": variant,
        "arm": arm,
        "seed": seed,
        "windows": means,
        "val_acc": acc,
        "max_loss": max(finite) if finite else None,
        "nonfinite_at": next((i + 1 for i, v in enumerate(losses) if not math.isfinite(v)), None),
        "stalled": stalled,
        "diverged": nonfinite or stalled,
        "seconds": seconds,
    }


def _loss(run: dict, key: str) -> float:
    value = run["windows"][key]
    return math.log(NUM_CLASSES) if value is None else value


def _groups(runs: list[dict]) -> dict[tuple[float, str], dict[str, list[dict]]]:
    groups: dict[tuple[float, str], dict[str, list[dict]]] = {}
    for run in runs:
        by_arm = groups.setdefault((run["lr"], run["variant"]), {})
        by_arm.setdefault(run["arm"], []).append(run)
    for by_arm in groups.values():
        for arm_runs in by_arm.values():
            arm_runs.sort(key=lambda r: r["seed"])
    return groups


def _ordered_arms(by_arm: dict[str, list[dict]]) -> list[str]:
    return sorted(by_arm, key=lambda a: ARMS.index(a) if a in ARMS else len(ARMS))


def print_tables(runs: list[dict]) -> None:
    """The per-(lr, variant, arm) table: window losses mean±std over seeds (ratio vs the default
    arm of the block, or the block's first arm without one), accuracy, diverged runs, s/run."""
    rows = []
    for (lr, variant), by_arm in _groups(runs).items():
        base: dict[str, float] = {}
        arms = _ordered_arms(by_arm)
        for arm in arms:
            arm_runs = by_arm[arm]
            row: dict[str, object] = {"lr": lr, "variant": variant, "arm": arm}
            for key in arm_runs[0]["windows"]:
                vals = [_loss(r, key) for r in arm_runs]
                mean = statistics.fmean(vals)
                base.setdefault(key, mean)
                row[key] = f"{mean:.3f}±{statistics.pstdev(vals):.3f} ({mean / base[key]:.2f}x)"
            accs = [r["val_acc"] for r in arm_runs]
            row["val_acc"] = f"{statistics.fmean(accs):.3f}±{statistics.pstdev(accs):.3f}"
            row["diverged"] = f"{sum(r['diverged'] for r in arm_runs)}/{len(arm_runs)}"
            row["s/run"] = f"{statistics.fmean(r['seconds'] for r in arm_runs):.1f}"
            rows.append(row)
    print(format_report(rows) + "\n")
    print(
        "(loss: mean training cross-entropy over the step window, mean±std (population) over "
        "seeds, a non-finite run counted as ln(classes); ratio vs the default arm of the same lr "
        "and variant; diverged: non-finite loss or last-window loss >= stall-frac * ln(classes))"
    )


def print_comparison(runs: list[dict], alpha: float) -> None:
    """Every arm against the default arm of its (lr, variant), paired by seed (kwsnet.stats):
    last-window loss and val accuracy, Holm-adjusted over all comparisons of each metric."""
    comparisons = []
    for (lr, variant), by_arm in _groups(runs).items():
        if "default" not in by_arm:
            continue
        base = by_arm["default"]
        key = list(base[0]["windows"])[-1]
        for arm in _ordered_arms(by_arm):
            if arm == "default":
                continue
            for metric in (f"train_{key}", "val_acc"):
                vals = [
                    [r["val_acc"] if metric == "val_acc" else _loss(r, key) for r in rs]
                    for rs in (by_arm[arm], base)
                ]
                res = compare(
                    vals[0],
                    [r["seed"] for r in by_arm[arm]],
                    vals[1],
                    [r["seed"] for r in base],
                    alpha=alpha,
                )
                comparisons.append(
                    {"lr": lr, "variant": variant, "arm": arm, "metric": metric, **res}
                )
    _print_compared(comparisons, alpha, "arm - default", "vs the default arm")


def print_variant_comparison(runs: list[dict], alpha: float) -> None:
    """Post-LN against Pre-LN for each (lr, arm) that ran both, paired by seed: does the
    Post-LN stack train worse without warm-up? Holm over these comparisons, per metric."""
    comparisons = []
    for lr in dict.fromkeys(r["lr"] for r in runs):
        by_variant = {v: _groups(runs).get((lr, v), {}) for v in VARIANTS}
        for arm in ARMS:
            post, pre = by_variant["post_ln"].get(arm), by_variant["pre_ln"].get(arm)
            if not post or not pre:
                continue
            key = list(pre[0]["windows"])[-1]
            for metric in (f"train_{key}", "val_acc"):
                vals = [
                    [r["val_acc"] if metric == "val_acc" else _loss(r, key) for r in rs]
                    for rs in (post, pre)
                ]
                res = compare(
                    vals[0], [r["seed"] for r in post], vals[1], [r["seed"] for r in pre], alpha
                )
                comparisons.append(
                    {"lr": lr, "variant": "post-pre", "arm": arm, "metric": metric, **res}
                )
    _print_compared(comparisons, alpha, "arm", "post_ln - pre_ln, same arm")


def _print_compared(comparisons: list[dict], alpha: float, arm_label: str, title: str) -> None:
    if not comparisons:
        return
    for metric in dict.fromkeys(c["metric"] for c in comparisons):
        group = [c for c in comparisons if c["metric"] == metric]
        for c, p_holm in zip(group, holm([c["p"] for c in group]), strict=True):
            c["p_holm"] = p_holm
            c["verdict"] = verdict(c["diff"], p_holm, alpha, higher_better=metric == "val_acc")
    rows = [
        {
            "lr": c["lr"],
            "variant": c["variant"],
            arm_label: c["arm"],
            "metric": c["metric"],
            "test": c["test"],
            "diff": f"{c['diff']:+.3f}",
            f"{100 * (1 - alpha):.0f}% CI": f"[{c['diff_low']:+.3f}, {c['diff_high']:+.3f}]",
            "p": f"{c['p']:.2g}",
            "p_holm": f"{c['p_holm']:.2g}",
            "verdict": c["verdict"],
        }
        for c in comparisons
    ]
    print(f"\n### paired by seed, {title} (kwsnet.stats, alpha {alpha})\n")
    print(format_report(rows) + "\n")
    print(
        "(diff: mean of per-seed differences, t CI; p: paired t-test; p_holm: Holm over all "
        "comparisons of the same metric in this table; verdict: lower loss / higher accuracy "
        "is better)"
    )


def smallinit_comparison(
    steps: int,
    seeds: list[int],
    lrs: list[float],
    variants: list[str],
    batch: int,
    size: Size = Size(),
    arms: list[str] | None = None,
    stall_frac: float = 0.9,
) -> list[dict]:
    """Train every (lr, variant, arm, seed), print the table; returns the run records."""
    arms = list(ARMS) if arms is None else arms
    frontend = LogMel(normalize="mean")
    waves, labels = _corpus("train", 480, "speaker")
    val_waves, val_labels = _corpus("val", 120, "speaker")
    with torch.no_grad():
        feats = frontend(waves)[0]
        val = (frontend(val_waves)[0], val_labels)
    windows = _windows(steps)
    print(
        f"## SmallInit-Emb on a small Conformer ({size.describe()}), "
        f"{NUM_CLASSES} synthetic speakers, {len(feats)} train / {len(val[0])} val clips, "
        f"batch {batch}, AdamW without warm-up, lr {lrs}, variants {variants}, arms {arms}, "
        f"{steps} steps, seeds {seeds}\n"
    )
    runs = []
    for lr in lrs:
        for variant in variants:
            for arm in arms:
                for s in seeds:
                    t0 = time.perf_counter()
                    losses, acc = _train(
                        arm, variant, s, feats, labels, val, steps, lr, batch, NUM_CLASSES, size
                    )
                    sec = time.perf_counter() - t0
                    runs.append(_record(lr, variant, arm, s, losses, acc, windows, stall_frac, sec))
                    r = runs[-1]
                    print(
                        f"done: lr {lr} {variant} {arm} seed {s}: last-window loss "
                        f"{list(r['windows'].values())[-1]}, acc {acc:.3f}, "
                        f"diverged {r['diverged']}, {sec:.0f}s",
                        file=sys.stderr,
                        flush=True,
                    )
    print_tables(runs)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lsuv-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layers", type=int, default=Size.layers)
    parser.add_argument("--d-model", type=int, default=Size.d_model)
    parser.add_argument("--heads", type=int, default=Size.heads)
    parser.add_argument("--ffn", type=int, default=Size.ffn)
    parser.add_argument("--kernel", type=int, default=Size.kernel)
    parser.add_argument(
        "--stall-frac",
        type=float,
        default=0.9,
        help="a run whose last-window loss is >= this times ln(classes) counts as diverged",
    )
    parser.add_argument("--compare", action="store_true", help="paired tests vs the default arm")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--json", type=Path, help="write every run's record to this file")
    parser.add_argument(
        "--from-json", type=Path, nargs="+", help="print tables from --json files; no training"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-lsuv", action="store_true")
    parser.add_argument("--skip-conformer", action="store_true")
    args = parser.parse_args()
    if args.from_json:
        runs = [r for path in args.from_json for r in json.loads(path.read_text())["runs"]]
        print_tables(runs)
        if args.compare:
            print_comparison(runs, args.alpha)
            print_variant_comparison(runs, args.alpha)
        return
    torch.set_num_threads(min(args.threads, torch.get_num_threads()))
    if not args.skip_lsuv:
        lsuv_tables(args.lsuv_batch)
    if not args.skip_conformer:
        size = Size(args.d_model, args.heads, args.ffn, args.layers, args.kernel)
        runs = smallinit_comparison(
            args.steps,
            args.seeds,
            args.lr,
            args.variants,
            args.batch,
            size,
            args.arms,
            args.stall_frac,
        )
        if args.compare:
            print_comparison(runs, args.alpha)
            print_variant_comparison(runs, args.alpha)
        if args.json:
            config = {
                "size": dataclasses.asdict(size),
                "steps": args.steps,
                "batch": args.batch,
                "stall_frac": args.stall_frac,
                "command": " ".join(sys.argv),
            }
            args.json.write_text(json.dumps({"config": config, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
