"""kwsnet's keyword recipes against a SpeechBrain ECAPA-TDNN peer, trained in the same run on
the same split with the same seeds (issue #14, "the peer").

    python benchmarks/bench_peer.py --seeds 0 1 2 --epochs 15 \
        [--kwsnet-configs configs/kws_cnn_mel.yaml configs/kws_conformer.yaml ...] \
        [--root ../shared/data/speech_commands_tts] [--systems peer kws_cnn_mel] [--out DIR]

The peer is SpeechBrain used as a library (``pip install -e ".[peers]"``):
``Fbank(n_mels=80)`` → ``InputNormalization(norm_type="sentence", std_norm=False)`` →
``ECAPA_TDNN`` (C = 128: channels 128/128/128/128 + 384 for the multi-layer aggregation,
attention_channels 32, the other arguments SpeechBrain's defaults) → its cosine ``Classifier``,
trained with ``LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))``; Adam lr 1e-3
decayed linearly per step to 1e-4 over the run, weight decay 2e-6, batch 32, 1 s crops, no
augmentation; the weights of the best-val-accuracy epoch (the first best) are tested.

Data: the files and labels of kwsnet's own ``AudioDataModule`` (``data.source:
speech_commands``, the given root and words), so the split is kwsnet's by construction; the peer
reads the same wavs with soundfile and pads / crops them to 1 s with kwsnet's ``fit_length``
(zeros, centred; random crops in training when a clip is longer), as the DataModule does.

Each kwsnet config runs as ``kwsnet fit`` (the sweep's ``plan_runs`` arguments, its
``record_run`` ledger records) with the overrides ``data.source=speech_commands``, the root, the
words, ``model.augment.init_args.noise_dir=<root>/_background_noise_`` when the config has an
augmentation chain, and ``trainer.max_epochs``. Every run (peer or kwsnet) is its own process
with ``OMP_NUM_THREADS=1``; a run that fails is reported and the others go on.

Per system it prints test and val accuracy (val: of the tested, best-val checkpoint) mean ±
std with the t 95% CI, the paired-by-seed difference to the peer with its CI, p (Holm across
the kwsnet systems) and a verdict (``kwsnet.stats``), parameters, MACs per 1 s clip
(``count_macs``: forward hooks on Conv/Linear/MultiheadAttention, the same counter for both
sides; front ends not counted), the median wall time per run (process start to exit: imports,
decoding, training, test) and kwsnet / peer ratios of parameters, MACs and time. It writes
``runs.jsonl``, ``runs.csv``, ``results.json`` and ``results.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: kwsnet and models import
    sys.path.insert(0, str(REPO))

from kwsnet import stats as kstats  # noqa: E402
from kwsnet import yaml12  # noqa: E402
from kwsnet.data.audio import fit_length, resample  # noqa: E402

__all__ = [
    "PEER",
    "PEER_ECAPA_ARGS",
    "count_macs",
    "count_params",
    "default_configs",
    "format_table",
    "peer_split",
    "summarize",
    "train_peer",
    "main",
]

PEER = "speechbrain_ecapa"
DEFAULT_ROOT = "../shared/data/speech_commands_tts"
DEFAULT_WORDS = ["yes", "no", "up", "down", "left", "right"]
SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
# C = 128 (SpeechBrain's default is 512/1536 with attention 128); attention_channels 32 gives
# the 617k parameters with the 6-class classifier (count_params checks it).
PEER_ECAPA_ARGS: dict[str, Any] = {
    "channels": [128, 128, 128, 128, 384],
    "attention_channels": 32,
    "lin_neurons": 192,
}
PEER_RECIPE: dict[str, Any] = {
    "n_mels": 80,
    "margin": 0.2,
    "scale": 30.0,
    "lr": 1e-3,
    "final_lr": 1e-4,
    "weight_decay": 2e-6,
    "batch_size": 32,
}
_MEL_FRONTENDS = ("LogMel", "MFCC")


# ---------------------------------------------------------------------------- counting


def count_params(model: nn.Module) -> int:
    """All parameters of ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """Multiply-accumulates of one ``model(*inputs, **kwargs)`` call, per batch element.

    Forward hooks on ``nn.Conv1d``/``nn.Conv2d`` (output elements × in_channels / groups ×
    kernel size), ``nn.Linear`` (output elements × in_features) and
    ``nn.MultiheadAttention`` (input and output projections plus the two T_q × T_k × E
    products; its ``out_proj`` is applied functionally, so not counted twice). Element-wise
    ops, norms, pooling and functional linear maps outside these modules are not counted.
    The batch size is the first dimension of ``inputs[0]``.
    """
    total = 0
    handles = []

    def conv_hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        k = math.prod(m.kernel_size)
        total += out.numel() * (m.in_channels // m.groups) * k

    def linear_hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    def mha_hook(m: nn.MultiheadAttention, args: tuple, kw: dict, out: Any) -> None:
        nonlocal total
        names = ("query", "key", "value")
        q, k = (args[i] if len(args) > i else kw[names[i]] for i in range(2))
        # [T, B, E] (or [B, T, E] with batch_first): per batch element T_q, T_k
        tq, tk = (x.shape[1] if m.batch_first else x.shape[0] for x in (q, k))
        b = q.shape[0] if m.batch_first else q.shape[1]
        e = m.embed_dim
        per = tq * m.kdim * e + 2 * tk * m.kdim * e  # q, k, v projections (kdim = vdim here)
        per += 2 * tq * tk * e + tq * e * e  # scores, weighted sum, out projection
        total += b * per

    mha_children = set()
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            mha_children.add(id(m.out_proj))
            handles.append(m.register_forward_hook(mha_hook, with_kwargs=True))
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear) and id(m) not in mha_children:
            handles.append(m.register_forward_hook(linear_hook))
    batch = int(inputs[0].shape[0])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total // batch


# ---------------------------------------------------------------------------- data


def peer_split(
    root: str | os.PathLike, words: Sequence[str]
) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
    """``({split: [(wav path, label)]}, class names)`` of kwsnet's ``AudioDataModule`` for
    ``data.source: speech_commands`` with ``root`` and ``words`` (the lists kwsnet trains,
    validates and tests on, in its order)."""
    from kwsnet.data.datamodule import AudioDataModule

    dm = AudioDataModule(source="speech_commands", root=str(root), words=list(words), preload=False)
    files = {
        split: [(it.path, int(it.keyword)) for it in dm.source.items(split)]
        for split in ("train", "val", "test")
    }
    return files, dm.class_names


def _read_wav(path: str) -> torch.Tensor:
    """A wav as float32 mono ``[T]`` at 16 kHz (soundfile; resampled if the file is not)."""
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    return resample(wave, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else wave


def _load(files: list[tuple[str, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    waves = [_read_wav(p) for p, _ in files]
    return waves, torch.tensor([lab for _, lab in files], dtype=torch.long)


def _batch(waves: Sequence[torch.Tensor], train: bool, gen: torch.Generator) -> torch.Tensor:
    """``[B, CLIP_SAMPLES]``: zero-padded (centred), cropped at random in training."""
    return torch.stack(
        [fit_length(w, CLIP_SAMPLES, random_crop=train, generator=gen) for w in waves]
    )


# ---------------------------------------------------------------------------- the peer


class PeerModel(nn.Module):
    """The SpeechBrain peer: ``wave [B, T] -> cosine scores [B, n_classes]``.

    Fbank (80 mels, 25 ms / 10 ms) → per-utterance mean normalisation → ECAPA-TDNN
    (``PEER_ECAPA_ARGS``) → ``[B, 1, 192]`` → cosine ``Classifier`` → ``[B, 1, C]``.
    """

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        from speechbrain.lobes.features import Fbank
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
        from speechbrain.processing.features import InputNormalization

        self.fbank = Fbank(n_mels=PEER_RECIPE["n_mels"])
        self.norm = InputNormalization(norm_type="sentence", std_norm=False)
        self.ecapa = ECAPA_TDNN(PEER_RECIPE["n_mels"], **PEER_ECAPA_ARGS)
        self.classifier = Classifier(PEER_ECAPA_ARGS["lin_neurons"], out_neurons=n_classes)

    def scores(self, wave: torch.Tensor) -> torch.Tensor:
        """``wave [B, T] -> [B, 1, C]`` (the shape SpeechBrain's losses take)."""
        rel = torch.ones(wave.shape[0], device=wave.device)  # every clip is 1 s: no padding
        feats = self.norm(self.fbank(wave), rel)  # [B, frames, 80]
        return self.classifier(self.ecapa(feats, rel))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.scores(wave).squeeze(1)


def _accuracy(model: PeerModel, waves: list[torch.Tensor], labels: torch.Tensor) -> float:
    model.eval()
    gen = torch.Generator().manual_seed(0)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(waves), 64):
            x = _batch(waves[i : i + 64], train=False, gen=gen)
            correct += int((model(x).argmax(1) == labels[i : i + 64]).sum())
    return correct / max(1, len(waves))


def train_peer(
    files: dict[str, list[tuple[str, int]]],
    n_classes: int,
    seed: int,
    epochs: int,
    log: Callable[[str], None] = print,
    transfer_test: list[tuple[str, int]] | None = None,
) -> dict[str, Any]:
    """Train the peer recipe (module docstring) on ``files``; test the best-val epoch.

    Returns ``{"metrics": {"test/acc", "val/acc", "train/loss"}, "best_epoch", "epochs_run",
    "fit_s", "params", "macs", "val_curve"}`` (val/acc: the tested epoch's). With
    ``transfer_test`` (another corpus's test files, same labels), ``test/acc`` is the accuracy
    on those and ``test/acc_in_domain`` the one on ``files["test"]``.
    """
    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = {split: _load(fs) for split, fs in files.items()}
    model = PeerModel(n_classes)
    loss_fn = LogSoftmaxWrapper(
        AdditiveAngularMargin(margin=PEER_RECIPE["margin"], scale=PEER_RECIPE["scale"])
    )
    opt = torch.optim.Adam(
        model.parameters(), lr=PEER_RECIPE["lr"], weight_decay=PEER_RECIPE["weight_decay"]
    )
    waves, labels = data["train"]
    bs = PEER_RECIPE["batch_size"]
    steps = epochs * math.ceil(len(waves) / bs)
    lr0, lr1 = PEER_RECIPE["lr"], PEER_RECIPE["final_lr"]
    best: dict[str, Any] = {"val": -1.0}
    curve = []
    step, loss_sum = 0, 0.0
    start = time.monotonic()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(waves), generator=gen)
        loss_sum, n = 0.0, 0
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            if len(idx) < 2:  # BatchNorm cannot train on one clip (2305 = 72 * 32 + 1)
                continue
            for g in opt.param_groups:
                g["lr"] = lr0 + (lr1 - lr0) * step / max(1, steps - 1)
            x = _batch([waves[j] for j in idx], train=True, gen=gen)
            y = labels[idx]
            loss = loss_fn(model.scores(x), y.unsqueeze(1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum, n = loss_sum + float(loss.detach()) * len(idx), n + len(idx)
        val = _accuracy(model, *data["val"])
        curve.append(val)
        log(f"epoch {epoch}: train/loss {loss_sum / n:.4f} val/acc {val:.4f}")
        if val > best["val"]:  # the first best, as ModelCheckpoint(mode=max) keeps
            best = {"val": val, "epoch": epoch, "state": _clone_state(model)}
    fit_s = time.monotonic() - start
    model.load_state_dict(best["state"])
    test = _accuracy(model, *data["test"])
    metrics = {"test/acc": test, "val/acc": best["val"], "train/loss": loss_sum / n}
    if transfer_test is not None:
        metrics["test/acc_in_domain"] = test
        metrics["test/acc"] = _accuracy(model, *_load(transfer_test))
    clip = torch.zeros(1, CLIP_SAMPLES)
    return {
        "metrics": metrics,
        "best_epoch": best["epoch"],
        "epochs_run": epochs,
        "fit_s": round(fit_s, 2),
        "params": count_params(model),
        "macs": count_macs(model, clip),
        "num_classes": n_classes,
        "val_curve": curve,
    }


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _peer_child(args: argparse.Namespace) -> int:
    """The peer run's own process (``--peer-run SEED``): train, write ``summary.json``."""
    torch.set_num_threads(1)
    run_dir = Path(args.run_dir)
    files, names = peer_split(args.root, args.words)
    transfer = None
    if args.test_root:
        other, other_names = peer_split(args.test_root, args.words)
        if other_names != names:
            raise SystemExit(f"bench_peer: {args.test_root} has classes {other_names}, "
                             f"{args.root} has {names}")  # fmt: skip
        transfer = other["test"]
    summary = train_peer(files, len(names), args.peer_run, args.epochs, transfer_test=transfer)
    summary.update(seed=args.peer_run, class_names=names)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0


# ---------------------------------------------------------------------------- kwsnet side


def default_configs(configs_dir: str | os.PathLike = "configs") -> list[str]:
    """Every ``kws_*.yaml`` in ``configs_dir`` whose front end is a log-mel or MFCC one."""
    out = []
    for path in sorted(Path(configs_dir).glob("kws_*.yaml")):
        try:
            cfg = yaml12.load(path.read_text())
        except Exception:  # a broken config is the run's to report, not the default list's
            continue
        frontend = ((cfg or {}).get("model") or {}).get("frontend") or {}
        cls = str(frontend.get("class_path", "") if isinstance(frontend, dict) else frontend)
        if cls.rsplit(".", 1)[-1] in _MEL_FRONTENDS:
            out.append(str(path))
    return out


def kwsnet_overrides(
    config: str, root: str, words: Sequence[str], epochs: int | None
) -> dict[str, Any]:
    """The per-config overrides of the benchmark (noise from ``<root>/_background_noise_``
    only when the config has an augmentation chain that takes a ``noise_dir``;
    ``trainer.max_epochs`` unless ``epochs`` is None: the config's own)."""
    over: dict[str, Any] = {
        "data.source": "speech_commands",
        "data.root": root,
        "data.words": list(words),
    }
    if epochs is not None:
        over["trainer.max_epochs"] = epochs
    try:
        aug = ((yaml12.load(Path(config).read_text()) or {}).get("model") or {}).get("augment")
    except Exception:
        aug = None
    if isinstance(aug, dict) and (
        str(aug.get("class_path", "")).endswith("AugmentChain")
        or "noise_dir" in (aug.get("init_args") or {})
    ):
        over["model.augment.init_args.noise_dir"] = os.path.join(root, "_background_noise_")
    return over


def _kwsnet_cost(ckpt: str) -> tuple[int, int]:
    """(parameters, MACs per 1 s clip) of the model a kwsnet checkpoint holds."""
    from kwsnet.cli import build_from_config

    model, _ = build_from_config(None, ckpt)
    clip = torch.zeros(1, CLIP_SAMPLES)
    return count_params(model), count_macs(model, clip, torch.tensor([CLIP_SAMPLES]))


# ---------------------------------------------------------------------------- runs


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("WANDB_SILENT", "true")
    env.pop("WANDB_SERVICE", None)
    return env


def _launch(argv: list[str], run_dir: str, log_path: str) -> tuple[int, float]:
    """Run ``argv`` as its own process into ``run_dir`` (fresh), logging to ``log_path``;
    return (exit code, wall seconds)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    with open(log_path, "w") as logf:
        logf.write("$ " + shlex.join(argv) + "\n")
        logf.flush()
        start = time.monotonic()
        rc = subprocess.call(argv, stdout=logf, stderr=subprocess.STDOUT, env=_env(), cwd=REPO)
    return rc, time.monotonic() - start


def _tail(path: str, n: int = 15) -> str:
    try:
        return "".join(Path(path).read_text(errors="replace").splitlines(True)[-n:])
    except OSError:
        return ""


def run_peer(seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One peer run in its own process; its record (``status`` ok / failed)."""
    run_dir = out / PEER / "runs" / f"seed{seed}"
    log_path = str(run_dir / "run.log")
    argv = [sys.executable, str(Path(__file__).resolve()), "--peer-run", str(seed)]
    argv += ["--run-dir", str(run_dir), "--root", args.root, "--epochs", str(args.epochs)]
    argv += ["--words", *args.words]
    if args.test_root:
        argv += ["--test-root", args.test_root]
    rc, wall = _launch(argv, str(run_dir), log_path)
    rec: dict[str, Any] = {
        "system": PEER,
        "seed": seed,
        "epochs": args.epochs,
        "wall_s": round(wall, 2),
        "log": log_path,
    }
    summary_path = run_dir / "summary.json"
    if rc == 0 and summary_path.exists():
        s = json.loads(summary_path.read_text())
        rec.update(
            status="ok",
            test_acc=s["metrics"]["test/acc"],
            val_acc=s["metrics"]["val/acc"],
            test_acc_in_domain=s["metrics"].get("test/acc_in_domain"),
            best_epoch=s["best_epoch"],
            fit_s=s["fit_s"],
            params=s["params"],
            macs=s["macs"],
        )
    else:
        rec.update(status="failed", error=f"exit code {rc}\n{_tail(log_path)}")
    return rec


def config_revision(config: str) -> str:
    """The last commit that touched ``config`` (short hash), ``+dirty`` when the working tree
    differs from it, ``untracked`` when git does not know the file: which version ran."""

    def git(*cmd: str) -> str:
        res = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
        return res.stdout.strip() if res.returncode == 0 else ""

    rev = git("log", "-1", "--format=%h", "--", config)
    if not rev:
        return "untracked"
    return rev + ("+dirty" if git("status", "--porcelain", "--", config) else "")


def transfer_test(ckpt: str, run_dir: str, test_root: str) -> float:
    """Test a kwsnet run's checkpoint on ``test_root``'s test split (same words): a
    ``kwsnet test`` process into ``<run_dir>/transfer``; its ``test/acc``."""
    out = os.path.join(run_dir, "transfer")
    argv = [sys.executable, "-m", "kwsnet.entry", "test", "--config"]
    argv += [os.path.join(run_dir, "config.yaml"), "--ckpt_path", ckpt, "--data.root", test_root]
    argv += ["--trainer.default_root_dir", out, "--trainer.logger", "false"]
    log_path = os.path.join(run_dir, "transfer.log")
    rc, _ = _launch(argv, out, log_path)
    summary = Path(out) / "summary.json"
    if rc != 0 or not summary.exists():
        raise RuntimeError(f"transfer test: exit code {rc}\n{_tail(log_path)}")
    return float(json.loads(summary.read_text())["metrics"]["test/acc"])


def config_epochs(config: str) -> int | None:
    """The ``trainer.max_epochs`` a config file sets (None when it sets none)."""
    try:
        trainer = (yaml12.load(Path(config).read_text()) or {}).get("trainer") or {}
    except Exception:
        return None
    epochs = trainer.get("max_epochs") if isinstance(trainer, dict) else None
    return int(epochs) if isinstance(epochs, int) else None


def kwsnet_epochs(args: argparse.Namespace) -> int | None:
    """The epochs a kwsnet config trains for in this benchmark: ``--kwsnet-epochs`` (0: the
    config's own ``trainer.max_epochs``), else ``--epochs``; None means the config's own."""
    epochs = args.epochs if args.kwsnet_epochs is None else args.kwsnet_epochs
    return None if epochs == 0 else epochs


def run_kwsnet(
    config: str, seeds: Sequence[int], args: argparse.Namespace, out: Path, cost: bool = True
) -> list:
    """Every seed of one kwsnet config, each a ``kwsnet fit`` process; their records. With
    ``cost``, the first ok run's checkpoint is rebuilt for its parameters and MACs."""
    from kwsnet.sweep import SweepSpec, append_ledger, plan_runs, record_run

    stem = Path(config).stem
    revision = config_revision(config)
    epochs = kwsnet_epochs(args)
    spec = SweepSpec(
        name=f"bench_peer_{stem}",
        base_config=config,
        seeds=list(seeds),
        overrides=kwsnet_overrides(config, args.root, args.words, epochs),
        metric="test/acc",
        out=str(out / stem),
        wandb={"log_runs": True, "summary_run": False},
    )
    records = []
    for plan in plan_runs(spec):
        rc, wall = _launch(plan.argv, plan.run_dir, plan.log_path)
        ledger = record_run(plan, spec, rc, wall)
        append_ledger(os.path.join(spec.out, "ledger.jsonl"), ledger)
        rec: dict[str, Any] = {
            "system": stem,
            "config": config,
            "config_revision": revision,
            "seed": plan.seed,
            "epochs": epochs if epochs is not None else config_epochs(config),
            "wall_s": round(wall, 2),
            "log": plan.log_path,
        }
        if ledger["status"] == "ok" and args.test_root:
            try:
                transfer = transfer_test(ledger["checkpoint"], plan.run_dir, args.test_root)
            except RuntimeError as exc:
                ledger = {**ledger, "status": "failed", "error": str(exc)}
            else:
                rec["test_acc_in_domain"] = ledger["value"]
                ledger = {**ledger, "value": transfer}
        if ledger["status"] == "ok":
            rec.update(
                status="ok",
                test_acc=ledger["value"],
                val_acc=(ledger.get("metrics") or {}).get("val/acc_best"),  # tested ckpt's
                best_epoch=ledger.get("best_epoch"),
                collapsed=ledger.get("collapsed"),
                checkpoint=ledger.get("checkpoint"),
            )
            if cost and not any(r.get("params") for r in records):
                try:
                    rec["params"], rec["macs"] = _kwsnet_cost(ledger["checkpoint"])
                except Exception as exc:  # a cost the table lacks, not a failed run
                    rec["cost_error"] = f"{type(exc).__name__}: {exc}"
        else:
            rec.update(status="failed", error=ledger.get("error", ""))
        records.append(rec)
    return records


# ---------------------------------------------------------------------------- report


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    if not xs:
        return math.nan, math.nan
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else math.nan


def summarize(
    records: Sequence[dict[str, Any]], alpha: float = 0.05, margin: float | None = 0.02
) -> list[dict[str, Any]]:
    """One row per system (the peer first): n ok / n, test and val mean, std, t CI, params,
    MACs, median wall and fit time, and for kwsnet systems the paired difference to the peer
    (test and val: diff, CI, p, Holm p across the systems, and with an equivalence ``margin``
    the TOST p within ±margin, Holm-adjusted across the systems, and the verdict
    better / worse / equivalent / inconclusive: ``kwsnet.stats``) and the ratios."""
    systems = list(dict.fromkeys(r["system"] for r in records))
    systems.sort(key=lambda s: s != PEER)
    rows = []
    for system in systems:
        runs = [r for r in records if r["system"] == system]
        ok = [r for r in runs if r.get("status") == "ok"]
        row: dict[str, Any] = {"system": system, "n_ok": len(ok), "n": len(runs)}
        row["seeds"] = [r["seed"] for r in ok]
        row["failed_seeds"] = [r["seed"] for r in runs if r.get("status") != "ok"]
        epochs = sorted({r["epochs"] for r in runs if r.get("epochs") is not None})
        row["epochs"] = epochs[0] if len(epochs) == 1 else (epochs or None)
        for key in ("test_acc", "val_acc", "test_acc_in_domain"):
            vals = [r[key] for r in ok if r.get(key) is not None]
            row[f"{key}_values"] = vals
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(vals)
            row[f"{key}_ci"] = list(kstats.mean_ci(vals, alpha))
        costs = [r for r in runs if r.get("params")]
        row["params"] = costs[0]["params"] if costs else None
        row["macs"] = costs[0]["macs"] if costs else None
        walls = [r["wall_s"] for r in ok]
        row["wall_s_median"] = statistics.median(walls) if walls else math.nan
        fits = [r["fit_s"] for r in ok if r.get("fit_s") is not None]
        row["fit_s_median"] = statistics.median(fits) if fits else None
        rows.append(row)
    peer = next((r for r in rows if r["system"] == PEER), None)
    others = [r for r in rows if r["system"] != PEER]
    if peer is None:
        return rows
    for key in ("test_acc", "val_acc"):
        for row in others:
            seeds = [
                r["seed"]
                for r in records
                if r["system"] == row["system"]
                and r.get("status") == "ok"
                and r.get(key) is not None
            ]
            pseeds = [
                r["seed"]
                for r in records
                if r["system"] == PEER and r.get("status") == "ok" and r.get(key) is not None
            ]
            row[f"{key}_vs_peer"] = kstats.compare(
                row[f"{key}_values"], seeds, peer[f"{key}_values"], pseeds, alpha, margin=margin
            )
        adjusted = kstats.holm([r[f"{key}_vs_peer"]["p"] for r in others])
        tost = kstats.holm([r[f"{key}_vs_peer"].get("p_tost", math.nan) for r in others])
        for row, p_adj, p_tost in zip(others, adjusted, tost, strict=True):
            cmp = row[f"{key}_vs_peer"]
            cmp["p_holm"] = p_adj
            if margin is not None:
                cmp["p_tost_holm"] = p_tost
            cmp["verdict"] = kstats.verdict(
                cmp["diff"], p_adj, alpha, p_tost=p_tost if margin is not None else None
            )
    for row in others:
        for key, peer_key in (("params", "params"), ("macs", "macs"), ("wall_s_median",) * 2):
            a, b = row.get(key), peer.get(peer_key)
            ok = a is not None and b and not (isinstance(a, float) and math.isnan(a))
            row[f"{key.split('_')[0]}_ratio"] = a / b if ok else None
    return rows


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _count(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _acc_cell(row: dict[str, Any], key: str) -> str:
    lo, hi = row[f"{key}_ci"]
    cell = f"{_f(row[f'{key}_mean'])} ± {_f(row[f'{key}_std'])}"
    return cell + (f" [{_f(lo)}, {_f(hi)}]" if not math.isnan(lo) else "")


def _cmp_cell(row: dict[str, Any], key: str) -> str:
    cmp = row.get(f"{key}_vs_peer")
    if not cmp:
        return "(peer)" if row["system"] == PEER else "–"
    d, lo, hi = cmp["diff"], cmp["diff_low"], cmp["diff_high"]
    ci = f" [{lo:+.3f}, {hi:+.3f}]" if not math.isnan(lo) else ""
    p = "–" if math.isnan(cmp["p_holm"]) else f"{cmp['p_holm']:.3f}"
    tost = ""
    if "p_tost_holm" in cmp:
        pt = cmp["p_tost_holm"]
        tost = f", TOST ±{cmp['margin']:g} p {'–' if math.isnan(pt) else f'{pt:.3f}'}"
    return f"{d:+.3f}{ci}, p {p}{tost}: {cmp['verdict']}"


def _epochs_cell(epochs: int | list[int] | None) -> str:
    if epochs is None:
        return "–"
    return "/".join(map(str, epochs)) if isinstance(epochs, list) else str(epochs)


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The markdown table of ``summarize``'s rows (with ``--test-root``, a column for the
    in-domain test split beside the other corpus's)."""
    transfer = any(r.get("test_acc_in_domain_values") for r in rows)
    head = (
        "| system | runs ok | epochs | params | MACs / 1 s clip | test acc mean ± std [95% CI] | "
        + ("in-domain test acc mean ± std [95% CI] | " if transfer else "")
        + "val acc mean ± std [95% CI] | test Δ vs peer [95% CI], p (Holm), TOST p (Holm) | "
        "val Δ vs peer [95% CI], p (Holm), TOST p (Holm) | wall / run (median) | params ratio | "
        "MACs ratio | time ratio |"
    )
    lines = [head, "|" + "---|" * (14 if transfer else 13)]
    for r in rows:
        wall = r["wall_s_median"]
        in_domain = f"{_acc_cell(r, 'test_acc_in_domain')} | " if transfer else ""
        lines.append(
            f"| {r['system']} | {r['n_ok']}/{r['n']} | {_epochs_cell(r.get('epochs'))} | "
            f"{_count(r['params'])} | "
            f"{_count(r['macs'])} | {_acc_cell(r, 'test_acc')} | {in_domain}"
            f"{_acc_cell(r, 'val_acc')} | "
            f"{_cmp_cell(r, 'test_acc')} | {_cmp_cell(r, 'val_acc')} | "
            f"{_f(wall, 0)} s | {_ratio(r.get('params_ratio'))} | "
            f"{_ratio(r.get('macs_ratio'))} | {_ratio(r.get('wall_ratio'))} |"
        )
    return "\n".join(lines) + "\n"


_CSV_KEYS = [
    "system",
    "config",
    "config_revision",
    "seed",
    "epochs",
    "status",
    "test_acc",
    "test_acc_in_domain",
    "val_acc",
    "best_epoch",
    "wall_s",
    "fit_s",
    "params",
    "macs",
    "collapsed",
    "log",
    "error",
]


def _write_outputs(out: Path, records: list[dict[str, Any]], rows: list, meta: dict) -> str:
    with open(out / "runs.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_KEYS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: r.get(k, "") for k in _CSV_KEYS})
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "systems": rows}, indent=2, default=str) + "\n"
    )
    failed = [r for r in records if r.get("status") != "ok"]
    text = f"# bench_peer\n\n`{meta['command']}`\n\n{meta['when']}, {meta['machine']}\n\n"
    if meta.get("report"):
        text += f"Table rebuilt from the runs by `{meta['report']}`.\n\n"
    text += format_table(rows)
    versions = {r["system"]: (r["config"], r["config_revision"]) for r in records if "config" in r}
    if versions:
        text += "\nConfigs as run (the last commit that touched each; +dirty: edited since):\n\n"
        text += "".join(f"- {s}: `{c}` @ {v}\n" for s, (c, v) in versions.items())
    if failed:
        text += "\nFailed runs:\n\n" + "".join(
            f"- {r['system']} seed {r['seed']}: {r.get('error', '').splitlines()[0]} "
            f"(log: {r['log']})\n"
            for r in failed
        )
    (out / "results.md").write_text(text)
    return text


# ---------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=15, help="epochs of every run (default 15)")
    p.add_argument(
        "--kwsnet-epochs",
        type=int,
        default=None,
        help="epochs of the kwsnet runs instead of --epochs; 0: each config's own "
        "trainer.max_epochs (the peer keeps --epochs)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="runs at once, each its own 1-thread process (default 1)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the ok runs already in <out>/runs.jsonl and run only the others",
    )
    p.add_argument(
        "--kwsnet-configs",
        nargs="*",
        default=None,
        help="kwsnet configs to train (default: every log-mel / MFCC configs/kws_*.yaml)",
    )
    p.add_argument(
        "--systems",
        nargs="+",
        default=None,
        help=f"run only these systems: {PEER} and/or config stems (default: all)",
    )
    p.add_argument("--root", default=DEFAULT_ROOT, help="the Speech Commands folder")
    p.add_argument("--words", nargs="+", default=DEFAULT_WORDS)
    p.add_argument(
        "--test-root",
        default=None,
        help="test on this Speech Commands folder's test split instead (same words; e.g. train "
        "on TTS voices, test on recorded ones); the --root test split is kept as "
        "test_acc_in_domain",
    )
    p.add_argument("--out", default="sweeps/bench_peer", help="run dirs and results")
    p.add_argument(
        "--margin",
        type=float,
        default=0.02,
        help="equivalence margin in accuracy (TOST against the peer; default 0.02); "
        "0 turns the equivalence test off",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild results.md / results.json from <out>/runs.jsonl (or runs.csv); run nothing",
    )
    p.add_argument("--peer-run", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    return p


def _read_records(out: Path) -> list[dict[str, Any]]:
    """The runs of an earlier benchmark in ``out``: ``runs.jsonl``, else ``runs.csv``."""
    if (out / "runs.jsonl").exists():
        return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    records = []
    with open(out / "runs.csv", newline="") as f:
        for row in csv.DictReader(f):
            rec: dict[str, Any] = dict(row)
            rec["seed"] = int(row["seed"])
            for key in ("test_acc", "test_acc_in_domain", "val_acc", "wall_s", "fit_s"):
                rec[key] = float(row[key]) if row.get(key) else None
            for key in ("params", "macs", "best_epoch", "epochs"):
                rec[key] = int(float(row[key])) if row.get(key) else None
            records.append(rec)
    return records


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.peer_run is not None:
        return _peer_child(args)
    margin = args.margin if args.margin > 0 else None
    if args.report_only:
        out = Path(args.out)
        meta = json.loads((out / "results.json").read_text())["meta"]
        meta["report"] = "python benchmarks/bench_peer.py " + shlex.join(
            argv if argv is not None else sys.argv[1:]
        )
        records = _read_records(out)
        print(_write_outputs(out, records, summarize(records, margin=margin), meta))
        return 0
    args.root = os.path.relpath(os.path.abspath(args.root), REPO)  # the runs start in REPO
    if args.test_root:
        args.test_root = os.path.relpath(os.path.abspath(args.test_root), REPO)
    configs = args.kwsnet_configs
    if configs is None:
        configs = default_configs(REPO / "configs")
    configs = [os.path.relpath(os.path.abspath(c), REPO) for c in configs]
    systems = [PEER, *[Path(c).stem for c in configs]]
    if args.systems:
        unknown = sorted(set(args.systems) - set(systems))
        if unknown:
            raise SystemExit(f"bench_peer: unknown systems {unknown}; valid: {systems}")
        systems = [s for s in systems if s in args.systems]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)  # configs, the root and the sweep plans are relative to the repo
    command = "python benchmarks/bench_peer.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    meta = {
        "command": command,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPU(s) visible, 1 thread per run, torch {torch.__version__}",
        "seeds": args.seeds,
        "epochs": args.epochs,
        "root": args.root,
        "test_root": args.test_root,
        "words": args.words,
    }
    print(f"bench_peer: systems {systems}, seeds {args.seeds}, {args.epochs} epochs -> {out}")
    if args.workers < 1:
        raise SystemExit(f"bench_peer: --workers must be >= 1, got {args.workers}")
    meta["kwsnet_epochs"] = args.kwsnet_epochs
    meta["workers"] = args.workers
    records: list[dict[str, Any]] = []
    if args.resume and ((out / "runs.jsonl").exists() or (out / "runs.csv").exists()):
        records = [r for r in _read_records(out) if r.get("status") == "ok"]
        print(f"bench_peer: --resume keeps {len(records)} ok runs from {out}")
    if PEER in systems:
        try:
            import speechbrain  # noqa: F401
        except ImportError:
            print(
                f'bench_peer: speechbrain is not installed (pip install -e ".[peers]"); '
                f"{PEER} is skipped"
            )
            systems.remove(PEER)
        else:
            meta["speechbrain"] = speechbrain.__version__
    done = {(r["system"], r["seed"]) for r in records}
    jobs = [(s, seed) for s in systems for seed in args.seeds if (s, seed) not in done]
    lock = threading.Lock()

    def one(system: str, seed: int) -> None:
        try:
            if system == PEER:
                new = [run_peer(seed, args, out)]
            else:
                config = next(c for c in configs if Path(c).stem == system)
                with lock:
                    measured = any(r.get("params") for r in records if r["system"] == system)
                # the first seed of a system measures its cost (one rebuild, any worker count)
                first = seed == min(sd for s, sd in jobs if s == system)
                new = run_kwsnet(config, [seed], args, out, cost=not measured and first)
        except Exception:  # the benchmark's own bug for this system: report, go on
            new = [
                {
                    "system": system,
                    "seed": seed,
                    "status": "failed",
                    "wall_s": math.nan,
                    "log": "",
                    "error": traceback.format_exc(),
                }
            ]
        with lock:
            for r in new:
                acc = f"test/acc {r['test_acc']:.4f}" if r.get("status") == "ok" else ""
                print(
                    f"  {r['system']} seed {r['seed']}: {r['status']} {acc} "
                    f"({_f(r['wall_s'], 0)} s)"
                    + ("" if r["status"] == "ok" else f" log: {r['log']}"),
                    flush=True,
                )
            records.extend(new)
            records.sort(key=lambda r: (systems.index(r["system"]) if r["system"] in systems
                                        else len(systems), r["seed"]))  # fmt: skip
            # after every run, so an interrupted benchmark leaves the table so far
            _write_outputs(out, records, summarize(records, margin=margin), meta)

    if args.workers == 1:
        for system, seed in jobs:
            one(system, seed)
    else:
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            for fut in [pool.submit(one, system, seed) for system, seed in jobs]:
                fut.result()
    rows = summarize(records, margin=margin)
    print(_write_outputs(out, records, rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
