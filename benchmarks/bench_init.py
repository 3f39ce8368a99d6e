"""Init strategies, measured: LSUV per-layer tables and SmallInit-Emb training loss.

Part 1 prints the LSUV report for ``models.raw_conv.RawConv`` (plus its linear head) under each
order, calibrated on one batch of the built-in synthetic corpus, and a summary of the worst
residual |mean| and |std - 1| per order and norm placement.

Part 2 trains a small Conformer speaker classifier (log-mel -> ConformerBackbone -> linear
head, cross-entropy, AdamW, no LR warm-up) for ``--steps`` steps on the synthetic corpus, for
each learning rate in ``--lr`` and each layer variant in ``--variants`` (``pre_ln``:
torchaudio's Pre-LN Conformer; ``post_ln``: ``ConformerBackbone(post_ln=True)``), with the same
seeds, batches and steps for three init arms: default init, default init + LayerNorm after the
input projection, and SmallInit-Emb (U(-1e-4, 1e-4) projection + LayerNorm). It prints the
mean training loss over windows of steps and the held-out accuracy, averaged over seeds, with
the ratio of each arm to the default-init arm of the same lr and variant.

    python benchmarks/bench_init.py          # ~5-10 min on 2 busy CPU cores
    python benchmarks/bench_init.py --skip-lsuv --lr 3e-3 1e-3 --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from kwsnet.data.features import LogMel
from kwsnet.data.record import SourceArgs
from kwsnet.data.synthetic import SyntheticSource
from kwsnet.init import LSUV, LSUV_ORDERS, SmallInitEmb, format_report
from kwsnet.nn.heads import LinearHead
from models.conformer import ConformerBackbone
from models.raw_conv import NORM_PLACEMENTS, RawConv

ARMS = ("default", "default+LN", "SmallInit-Emb")
VARIANTS = ("pre_ln", "post_ln")


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
) -> tuple[list[float], float]:
    torch.manual_seed(seed)
    backbone = ConformerBackbone(
        input_dim=feats.shape[-1],
        d_model=64,
        num_heads=4,
        ffn_dim=128,
        num_layers=2,
        depthwise_conv_kernel_size=15,
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
    model.eval()
    with torch.no_grad():
        acc = (head(backbone(val[0])).argmax(-1) == val[1]).float().mean().item()
    return losses, acc


def smallinit_comparison(
    steps: int, seeds: list[int], lrs: list[float], variants: list[str], batch: int
) -> None:
    frontend = LogMel(normalize="mean")
    waves, labels = _corpus("train", 480, "speaker")
    val_waves, val_labels = _corpus("val", 120, "speaker")
    with torch.no_grad():
        feats = frontend(waves)[0]
        val = (frontend(val_waves)[0], val_labels)
    w = max(1, min(10, steps // 3))
    windows = sorted({(0, w), (steps // 2 - w, steps // 2), (steps - w, steps)})
    print(
        f"## SmallInit-Emb on a small Conformer (d_model 64, 2 layers, heads 4, ffn 128), "
        f"20 synthetic speakers, {len(feats)} train / {len(val[0])} val clips, batch {batch}, "
        f"AdamW without warm-up, lr {lrs}, variants {variants}, {steps} steps, seeds {seeds}\n"
    )
    rows = []
    for lr in lrs:
        for variant in variants:
            base: dict[str, float] = {}
            for arm in ARMS:
                t0 = time.perf_counter()
                runs = [
                    _train(arm, variant, s, feats, labels, val, steps, lr, batch, 20) for s in seeds
                ]
                row: dict[str, object] = {"lr": lr, "variant": variant, "arm": arm}
                for lo, hi in windows:
                    vals = [statistics.fmean(losses[lo:hi]) for losses, _ in runs]
                    key = f"loss@{lo + 1}-{hi}"
                    mean = statistics.fmean(vals)
                    base.setdefault(key, mean)
                    row[key] = f"{mean:.3f}±{statistics.pstdev(vals):.3f} ({mean / base[key]:.2f}x)"
                accs = [acc for _, acc in runs]
                row["val_acc"] = f"{statistics.fmean(accs):.3f}±{statistics.pstdev(accs):.3f}"
                row["s/run"] = f"{(time.perf_counter() - t0) / len(seeds):.1f}"
                rows.append(row)
                print(f"done: lr {lr} {variant} {arm}", file=sys.stderr, flush=True)
    print(format_report(rows) + "\n")
    print(
        "(loss: mean training cross-entropy over the step window, mean±std over seeds; "
        "ratio vs the default arm of the same lr and variant)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lsuv-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-lsuv", action="store_true")
    parser.add_argument("--skip-conformer", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(min(args.threads, torch.get_num_threads()))
    if not args.skip_lsuv:
        lsuv_tables(args.lsuv_batch)
    if not args.skip_conformer:
        smallinit_comparison(args.steps, args.seeds, args.lr, args.variants, args.batch)


if __name__ == "__main__":
    main()
