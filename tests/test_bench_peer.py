"""benchmarks/bench_peer.py without training: the MAC counter, the statistics and table, the
default config list and overrides, and the split (the peer's file lists are kwsnet's). A tiny
one-epoch peer run needs speechbrain (the ``peers`` extra) and is skipped without it."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from kwsnet.data.datamodule import AudioDataModule
from tests.conftest import write_tone

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bp():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module("bench_peer")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_macs_of_known_conv_and_linear_layers(bp) -> None:
    net = nn.Sequential(
        nn.Conv1d(4, 8, 3, padding=1),  # 8 out x 10 steps x 4 in x 3 taps = 960
        nn.Conv1d(8, 8, 3, padding=1, groups=8),  # depthwise: 8 x 10 x 1 x 3 = 240
        nn.Flatten(),
        nn.Linear(80, 5),  # 400
    )
    # per batch element: a batch of 3 counts as much as a batch of 1
    assert bp.count_macs(net, torch.zeros(3, 4, 10)) == 960 + 240 + 400
    conv2d = nn.Conv2d(1, 2, (3, 3), padding=1)  # 2 x 5 x 6 x 1 x 9 = 540
    assert bp.count_macs(conv2d, torch.zeros(2, 1, 5, 6)) == 540


def test_macs_of_attention_called_with_keywords(bp) -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 4)
            self.ff = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, T, E]
            y = x.transpose(0, 1)  # [T, B, E], as torchaudio's Conformer calls it
            y, _ = self.attn(query=y, key=y, value=y, need_weights=False)
            return self.ff(y)

    t, e = 7, 16
    attention = 3 * t * e * e + 2 * t * t * e + t * e * e  # projections, two products, out
    assert bp.count_macs(Block(), torch.zeros(2, t, e)) == attention + t * e * e


def _records(bp) -> list[dict]:
    rec = []
    for seed, peer, a, b in [(0, 1.0, 0.90, 1.0), (1, 1.0, 0.95, 1.0), (2, 1.0, 0.92, 1.0)]:
        common = {"seed": seed, "status": "ok", "val_acc": 1.0}
        rec.append(
            {
                **common,
                "system": bp.PEER,
                "test_acc": peer,
                "wall_s": 60.0 + seed,
                "params": 600_000,
                "macs": 30_000_000,
                "fit_s": 50.0,
            }
        )
        rec.append(
            {
                **common,
                "system": "small",
                "test_acc": a,
                "wall_s": 15.0,
                "params": 150_000,
                "macs": 3_000_000,
            }
        )
        rec.append({**common, "system": "same", "test_acc": b, "wall_s": 30.0})
    rec.append({"system": "same", "seed": 3, "status": "failed", "wall_s": 5.0, "log": "x"})
    return rec


def test_summary_compares_each_system_with_the_peer(bp) -> None:
    rows = {r["system"]: r for r in bp.summarize(_records(bp))}
    assert list(rows)[0] == bp.PEER
    small, same = rows["small"], rows["same"]
    assert math.isclose(small["test_acc_mean"], (0.90 + 0.95 + 0.92) / 3)
    cmp = small["test_acc_vs_peer"]
    assert cmp["test"] == "paired" and cmp["diff"] < 0
    assert cmp["diff_low"] < cmp["diff"] < cmp["diff_high"] < 0
    assert cmp["verdict"] == "worse"  # p ~0.03, the only finite p (Holm over one)
    # equal on every seed: no variance, so no t-test and no TOST either way
    assert same["test_acc_vs_peer"]["verdict"] == "inconclusive"
    untested = {r["system"]: r for r in bp.summarize(_records(bp), margin=None)}
    assert untested["same"]["test_acc_vs_peer"]["verdict"] == "not distinguishable"
    assert "p_tost_holm" not in untested["small"]["test_acc_vs_peer"]
    assert (same["n_ok"], same["n"], same["failed_seeds"]) == (3, 4, [3])
    assert small["params_ratio"] == 0.25 and small["macs_ratio"] == 0.1
    assert small["wall_ratio"] == 15.0 / 61.0  # medians
    assert same["params_ratio"] is None  # no cost measured: no ratio


def test_table_formats_accuracy_ci_verdict_and_ratios(bp) -> None:
    table = bp.format_table(bp.summarize(_records(bp)))
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 3 and all(line.count("|") == 14 for line in lines)
    small = next(line for line in lines if line.startswith("| small |"))
    assert "| 150.0k | 3.00M | 0.923 ± 0.025 [" in small
    assert ": worse |" in small and "| 0.25× | 0.10× | 0.25× |" in small
    peer = next(line for line in lines if line.startswith(f"| {bp.PEER} |"))
    assert "(peer)" in peer and "| 1.000 ± 0.000 [" in peer
    assert "| same | 3/4 |" in table


def test_peer_split_is_kwsnets(bp, speech_commands_tree: Path) -> None:
    words = ["yes", "no"]  # "up" is in the tree and must stay out
    files, names = bp.peer_split(speech_commands_tree, words)
    assert names == words
    dm = AudioDataModule(
        source="speech_commands", root=str(speech_commands_tree), words=words, batch_size=3
    )
    dm.setup(None)
    for split, loader in (
        ("train", dm.train_dataloader()),
        ("val", dm.val_dataloader()),
        ("test", dm.test_dataloader()),
    ):
        seen = [
            (path, int(label))
            for batch in loader
            for path, label in zip(batch["path"], batch["label"], strict=True)
        ]
        if split == "train":  # shuffled
            assert sorted(seen) == sorted(files[split])
        else:
            assert seen == files[split]
    listed = (speech_commands_tree / "testing_list.txt").read_text().split()
    expect = sorted(str(speech_commands_tree / p) for p in listed if p.split("/")[0] in words)
    assert sorted(p for p, _ in files["test"]) == expect
    assert not {p for p, _ in files["train"]} & {p for p, _ in files["test"] + files["val"]}


def test_default_configs_are_the_mel_ones(bp, tmp_path: Path) -> None:
    mel = "model:\n  frontend:\n    class_path: kwsnet.data.features.{}\n"
    (tmp_path / "kws_a.yaml").write_text(mel.format("LogMel"))
    (tmp_path / "kws_b.yaml").write_text(mel.format("MFCC"))
    (tmp_path / "kws_raw.yaml").write_text("model:\n  backbone: {class_path: kwsnet.models.X}\n")
    (tmp_path / "speaker_c.yaml").write_text(mel.format("LogMel"))
    found = [Path(p).name for p in bp.default_configs(tmp_path)]
    assert found == ["kws_a.yaml", "kws_b.yaml"]
    assert "configs/kws_cnn_mel.yaml" in [
        str(Path(p).relative_to(REPO)) for p in bp.default_configs(REPO / "configs")
    ]


def test_noise_override_only_with_an_augment_chain(bp, tmp_path: Path) -> None:
    aug = tmp_path / "aug.yaml"
    aug.write_text(
        "model:\n  augment:\n    class_path: kwsnet.data.augment.AugmentChain\n"
        "    init_args: {noise_dir: null}\n"
    )
    none = tmp_path / "none.yaml"
    none.write_text("model:\n  augment: null\n")
    over = bp.kwsnet_overrides(str(aug), "data/sc", ["yes", "no"], 15)
    assert over["model.augment.init_args.noise_dir"] == str(Path("data/sc/_background_noise_"))
    assert over["trainer.max_epochs"] == 15 and over["data.words"] == ["yes", "no"]
    assert "model.augment.init_args.noise_dir" not in bp.kwsnet_overrides(str(none), "r", [], 1)


@pytest.mark.skipif(
    importlib.util.find_spec("speechbrain") is None,
    reason='speechbrain is not installed (the optional "peers" extra: pip install -e ".[peers]")',
)
def test_peer_trains_one_epoch_and_tests_its_best_epoch(bp, tmp_path: Path) -> None:
    # speechbrain's lazy modules raise ImportError when later code walks sys.modules (hypothesis
    # does, in tests/test_fuzz_decoders.py): drop whatever this test imports once it is done.
    before = set(sys.modules)
    try:
        _peer_one_epoch(bp, tmp_path)
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] == "speechbrain":
                del sys.modules[name]


def _peer_one_epoch(bp, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    files: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for label, freq in enumerate((300.0, 1200.0)):
        for i in range(6):
            split = "train" if i < 4 else "val" if i == 4 else "test"
            path = write_tone(tmp_path / f"{label}_{i}.wav", seconds=0.5, freq=freq + 10 * i)
            files[split].append((str(path), label))
    out = bp.train_peer(files, 2, seed=0, epochs=1, log=lambda _: None)
    assert out["best_epoch"] == 0 and out["epochs_run"] == 1
    for key in ("test/acc", "val/acc"):
        assert out["metrics"][key] in (0.0, 0.5, 1.0)  # two clips in each split
    assert out["val_curve"] == [out["metrics"]["val/acc"]]
    assert math.isfinite(out["metrics"]["train/loss"])
    six = bp.PeerModel(6)
    assert abs(bp.count_params(six) - 617_000) < 1000  # the C = 128 peer
    assert out["params"] == bp.count_params(six) - 4 * 192  # 2 classes instead of 6
    assert out["macs"] > 10 * out["params"]  # convolutions over ~100 frames
    # --test-root: the other corpus's test files are test/acc, the own test split in-domain
    other = [(p, 1 - lab) for p, lab in files["train"]]  # 4 clips, labels swapped
    out = bp.train_peer(files, 2, seed=0, epochs=1, log=lambda _: None, transfer_test=other)
    assert out["metrics"]["test/acc_in_domain"] in (0.0, 0.5, 1.0)
    assert out["metrics"]["test/acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_a_crashing_run_is_reported_and_the_others_go_on(bp, tmp_path: Path, monkeypatch) -> None:
    def fake_peer(seed: int, args, out: Path) -> dict:
        return {
            "system": bp.PEER,
            "seed": seed,
            "status": "ok",
            "test_acc": 1.0,
            "val_acc": 1.0,
            "wall_s": 60.0,
            "params": 600,
            "macs": 6000,
            "log": "",
        }

    def fake_kwsnet(config: str, seeds, args, out: Path, cost: bool = True) -> list:
        if Path(config).stem == "kws_b" and seeds == [1]:
            raise RuntimeError("boom")
        return [
            {
                "system": Path(config).stem,
                "config": config,
                "config_revision": "x",
                "seed": s,
                "status": "ok",
                "test_acc": 0.9,
                "val_acc": 0.95,
                "wall_s": 6.0,
                "log": "",
                **({"params": 60, "macs": 600} if cost else {}),
            }
            for s in seeds
        ]

    monkeypatch.setattr(bp, "run_peer", fake_peer)
    monkeypatch.setattr(bp, "run_kwsnet", fake_kwsnet)
    monkeypatch.setitem(sys.modules, "speechbrain", type(sys)("speechbrain"))
    sys.modules["speechbrain"].__version__ = "0"
    monkeypatch.chdir(tmp_path)
    configs = [str(tmp_path / "kws_a.yaml"), str(tmp_path / "kws_b.yaml")]
    for c in configs:
        Path(c).write_text("model: {}\n")
    out = tmp_path / "out"
    bp.main(["--seeds", "0", "1", "2", "--kwsnet-configs", *configs, "--out", str(out)])
    runs = [line for line in (out / "runs.jsonl").read_text().splitlines() if line]
    assert len(runs) == 9  # 3 systems x 3 seeds, the crash included
    table = (out / "results.md").read_text()
    assert "| kws_a | 3/3 | – | 60 | 600 |" in table and "| 0.10× | 0.10× | 0.10× |" in table
    assert "| kws_b | 2/3 |" in table
    assert "- kws_b seed 1: Traceback" in table


def test_workers_resume_and_the_configs_own_epochs(bp, tmp_path: Path, monkeypatch) -> None:
    calls: list[tuple[str, int]] = []

    def fake_peer(seed: int, args, out: Path) -> dict:
        calls.append((bp.PEER, seed))
        acc = 0.90 + 0.01 * seed
        return {"system": bp.PEER, "seed": seed, "epochs": args.epochs, "status": "ok",
                "test_acc": acc, "val_acc": acc, "wall_s": 60.0, "log": ""}  # fmt: skip

    def fake_kwsnet(config: str, seeds, args, out: Path, cost: bool = True) -> list:
        epochs = bp.kwsnet_epochs(args)
        calls.append((Path(config).stem, seeds[0]))
        if seeds == [2] and not (out / "crashed").exists():  # the first attempt dies
            (out / "crashed").write_text("")
            raise RuntimeError("killed")
        return [
            {
                "system": Path(config).stem,
                "config": config,
                "config_revision": "x",
                "seed": s,
                "epochs": epochs if epochs is not None else bp.config_epochs(config),
                "status": "ok",
                "test_acc": 0.95 + 0.01 * s,
                "val_acc": 0.95 + 0.01 * s,
                "wall_s": 6.0,
                "log": "",
            }  # fmt: skip
            for s in seeds
        ]

    monkeypatch.setattr(bp, "run_peer", fake_peer)
    monkeypatch.setattr(bp, "run_kwsnet", fake_kwsnet)
    monkeypatch.setitem(sys.modules, "speechbrain", type(sys)("speechbrain"))
    sys.modules["speechbrain"].__version__ = "0"
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "kws_a.yaml"
    config.write_text("trainer:\n  max_epochs: 40\n")
    out = tmp_path / "out"
    argv = ["--seeds", "0", "1", "2", "--kwsnet-configs", str(config), "--out", str(out)]
    bp.main([*argv, "--workers", "2", "--kwsnet-epochs", "0"])
    assert sorted(calls) == sorted((s, seed) for s in (bp.PEER, "kws_a") for seed in (0, 1, 2))
    table = (out / "results.md").read_text()
    assert f"| {bp.PEER} | 3/3 | 15 |" in table and "| kws_a | 2/3 | 40 |" in table
    calls.clear()
    bp.main([*argv, "--workers", "2", "--kwsnet-epochs", "0", "--resume"])
    assert calls == [("kws_a", 2)]  # only the run that failed runs again
    table = (out / "results.md").read_text()
    assert "| kws_a | 3/3 | 40 |" in table and "Failed runs" not in table
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [(r["system"], r["seed"]) for r in runs] == [
        (s, seed) for s in (bp.PEER, "kws_a") for seed in (0, 1, 2)
    ]
    assert bp.kwsnet_epochs(bp._parser().parse_args(["--epochs", "7"])) == 7
    assert bp.kwsnet_epochs(bp._parser().parse_args(["--kwsnet-epochs", "0"])) is None


def test_transfer_test_scores_a_run_on_another_corpus(
    bp, tmp_path: Path, speech_commands_tree: Path
) -> None:
    """--test-root on the kwsnet side: the run's best checkpoint tested on another tree's test
    split by a `kwsnet test` process; a copy of the same tree gives the fit's own test/acc."""
    import json
    import shutil

    from kwsnet.cli import main

    run = tmp_path / "run"
    main(["fit", "--config", str(REPO / "configs" / "kws_ds_cnn.yaml"),
          "--data.source=speech_commands", f"--data.root={speech_commands_tree}",
          "--data.words=[yes, no, up]", "--data.batch_size=4", "--trainer.max_epochs=1",
          "--trainer.logger=false", "--trainer.enable_progress_bar=false",
          "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={run}"])  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    assert (run / "config.yaml").exists()  # what the test process starts from
    other = shutil.copytree(speech_commands_tree, tmp_path / "other")
    acc = bp.transfer_test(summary["best_checkpoint"], str(run), str(other))
    assert acc == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    with pytest.raises(RuntimeError, match="transfer test: exit code"):
        bp.transfer_test(summary["best_checkpoint"], str(run), str(tmp_path / "missing"))
