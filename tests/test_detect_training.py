"""Training for detection (issue 30): negatives folders split by speaker, one-clip windows of
long negatives in the training split, streams mixed at a drawn SNR over each clip's own
level, checkpoint selection by FRR at N FA/h on validation streams, hard-negative mining."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kwsnet.callbacks.stream_val import StreamValidation
from kwsnet.cli import console, main
from kwsnet.data.negatives import is_held_out, negative_files, speaker_key, windows
from kwsnet.data.record import SourceArgs
from kwsnet.data.speech_commands import SpeechCommandsSource
from kwsnet.detect.streams import StreamConfig, active_rms, make_streams
from kwsnet.errors import ConfigError, InputNotFoundError

from .conftest import KWS_RAW_CONFIG, QUIET_FIT, write_tone


def _negatives(root: Path, speakers: int = 30, seconds: float = 2.5) -> Path:
    """LibriSpeech-like flat folder: ``<speaker>-1-0000.flac`` of ``seconds`` of noise."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for s in range(speakers):
        x = 0.05 * rng.standard_normal(int(16000 * seconds))
        sf.write(root / f"{100 + s}-1-0000.flac", x, 16000)
    return root


def test_negative_parts_split_by_speaker_and_windows_tile_a_file(tmp_path: Path) -> None:
    neg = _negatives(tmp_path / "neg")
    (tmp_path / "nested" / "spk7").mkdir(parents=True)
    write_tone(tmp_path / "nested" / "spk7" / "a.wav")
    assert speaker_key(neg / "103-1-0000.flac") == "103"
    assert speaker_key(tmp_path / "nested" / "spk7" / "a.wav") == "spk7"  # no '-': the folder
    every = negative_files([neg])
    train, held = negative_files([neg], "train"), negative_files([neg], "held_out")
    assert sorted(train + held) == every and not set(train) & set(held)
    assert held and train, "30 speakers: both parts non-empty at 20%"
    assert all(is_held_out(p) for p in held) and not any(is_held_out(p) for p in train)
    assert negative_files([neg], "held_out", percent=0) == []
    assert negative_files([neg], "held_out", percent=100) == every
    assert windows(40000, 16000) == [0, 16000, 24000]  # the last one flush with the end
    assert windows(32000, 16000) == [0, 16000] and windows(100, 16000) == [0]
    with pytest.raises(InputNotFoundError, match="nowhere does not exist"):
        negative_files([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match="empty holds no .wav/.flac"):
        negative_files([tmp_path / "empty"])
    with pytest.raises(ValueError, match="part must be"):
        negative_files([neg], "test")  # type: ignore[arg-type]


def test_negatives_dir_adds_training_unknown_windows(
    speech_commands_tree: Path, tmp_path: Path
) -> None:
    neg = _negatives(tmp_path / "neg", seconds=2.5)
    args = dict(root=str(speech_commands_tree), words=["yes", "no"], include_unknown=True)
    plain = SpeechCommandsSource(SourceArgs(**args))
    src = SpeechCommandsSource(SourceArgs(**args, options={"negatives_dir": [str(neg)]}))
    unk = src.keyword_names.index("_unknown_")
    added = [i for i in src.items("train") if i.extra and i.extra[0] == "window"]
    train_files = negative_files([neg], "train")
    assert len(added) == 3 * len(train_files)  # 2.5 s: windows at 0, 1 and 1.5 s
    assert {Path(i.path) for i in added} == set(train_files)  # no held-out speaker
    assert all(i.keyword == unk for i in added)
    assert len(src.items("val")) == len(plain.items("val"))  # val / test untouched
    assert len(src.items("test")) == len(plain.items("test"))
    full = sf.read(added[2].path)[0]
    last = src.load(added[2])  # the third window, flush with the end
    assert last.shape == (16000,)
    np.testing.assert_allclose(last.numpy(), full[-16000:], atol=1e-4)
    with pytest.raises(ValueError, match="needs data.include_unknown: true"):
        SpeechCommandsSource(
            SourceArgs(root=str(speech_commands_tree), options={"negatives_dir": [str(neg)]})
        )


def test_snr_streams_put_every_clip_at_the_bed_level_plus_its_snr(
    speech_commands_tree: Path, tmp_path: Path
) -> None:
    """No noise files: the bed is silent, so a clip's active level is exactly the drawn bed
    level + SNR, whatever its own level was (a quiet and a loud clip come out the same)."""
    from kwsnet.data.datamodule import AudioDataModule

    shutil.rmtree(speech_commands_tree / "_background_noise_")
    for n, amp in ((0, 0.003), (1, 0.9)):  # one very quiet and one loud test clip
        t = np.arange(16000) / 16000
        x = np.zeros(16000)
        x[4000:12000] = amp * np.sin(2 * np.pi * 300 * t[4000:12000])  # silence around it
        sf.write(speech_commands_tree / "yes" / f"dddd4444_nohash_{n}.wav", x, 16000)
    dm = AudioDataModule(source="speech_commands", root=str(speech_commands_tree))
    cfg = StreamConfig(
        minutes=0.5, stream_seconds=10.0, snr_db=(12.0, 12.0), noise_dbfs=(-32.0, -32.0)
    )
    make_streams(dm, tmp_path / "s", cfg)
    rows = list(csv.DictReader(open(tmp_path / "s" / "labels.csv")))
    assert len(rows) > 5
    for r in rows:
        wave = sf.read(tmp_path / "s" / r["file"])[0]
        a, b = round(float(r["start"]) * 16000), round(float(r["end"]) * 16000)
        level = 20 * math.log10(active_rms(wave[a:b], 16000))
        assert level == pytest.approx(-20.0, abs=0.05)  # -32 + 12, 16-bit rounding aside
    with pytest.raises(ConfigError, match=r"snr_db must be \[low, high\]"):
        StreamConfig(snr_db=(20.0, 5.0))
    with pytest.raises(ConfigError, match="split must be test or val"):
        StreamConfig(split="train")


class _Scripted(torch.nn.Module):
    """A 'classifier' over [B, T] windows: keyword ``yes`` when the window's centre is loud."""

    class_names = ["yes", "_unknown_"]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        centre = x[:, x.shape[1] // 2 - 800 : x.shape[1] // 2 + 800].abs().mean(dim=1)
        fire = (centre > 0.1).float() * 8.0
        return torch.stack([fire - 4.0, -fire + 4.0], dim=1)


def _scripted_streams(root: Path, bursts: list[float], false_bursts: list[float]) -> None:
    root.mkdir(parents=True)
    x = np.zeros(16000 * 60)
    for t in bursts + false_bursts:
        x[int(t * 16000) : int((t + 0.4) * 16000)] = 0.5
    sf.write(root / "stream_000.wav", x, 16000, subtype="PCM_16")
    with open(root / "labels.csv", "w") as f:
        f.write("file,keyword,start,end\n")
        for t in bursts:
            f.write(f"stream_000.wav,yes,{t - 0.3},{t + 0.7}\n")


def test_stream_validation_reports_frr_at_each_operating_point(tmp_path: Path) -> None:
    _scripted_streams(tmp_path / "clean", [5.0, 15.0, 25.0, 35.0], [])
    cb = StreamValidation(str(tmp_path / "clean"), fa_per_hour=[1.0, 100.0])
    out = cb.evaluate(_Scripted(), window=16000, sample_rate=16000)
    assert out == {
        "val/stream_frr@1FA_h": 0.0,
        "val/stream_frr@100FA_h": 0.0,
        "val/stream_frr": 0.0,
    }
    # two bursts where no keyword is: 2 false alarms in 1/60 h = 120 FA/h at every threshold
    # that still finds the keywords, so at <= 100 FA/h every keyword is missed
    _scripted_streams(tmp_path / "fa", [5.0, 15.0, 25.0, 35.0], [45.0, 55.0])
    cb = StreamValidation(str(tmp_path / "fa"), fa_per_hour=[100.0, 1000.0])
    out = cb.evaluate(_Scripted(), window=16000, sample_rate=16000)
    assert out["val/stream_frr@100FA_h"] == 1.0 and out["val/stream_frr@1000FA_h"] == 0.0
    assert out["val/stream_frr"] == 0.5
    with pytest.raises(ConfigError, match="does not exist"):
        StreamValidation(str(tmp_path / "none")).evaluate(_Scripted(), 16000, 16000)
    with pytest.raises(ConfigError, match="fa_per_hour must be > 0"):
        StreamValidation(str(tmp_path / "fa"), fa_per_hour=[0.0])


def test_fit_with_stream_validation_then_mine_negatives(
    speech_commands_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One epoch with the callback (it builds the validation streams from the val split and
    held-out negatives, logs val/stream_frr, a checkpoint monitors it), then mining at
    threshold 0: every detection is a false alarm on negatives, each written as a window."""
    neg = _negatives(tmp_path / "neg", speakers=12, seconds=3.0)
    data = ["--data.source", "speech_commands", "--data.root", str(speech_commands_tree)]
    streams = tmp_path / "val_streams"
    main(
        [
            "fit",
            "--config",
            KWS_RAW_CONFIG,
            *data,
            "--data.batch_size",
            "8",
            "--trainer.max_epochs",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            *QUIET_FIT,
            "--trainer.callbacks+=kwsnet.callbacks.stream_val.StreamValidation",
            f"--trainer.callbacks.streams={streams}",
            f"--trainer.callbacks.filler_dirs=[{neg}]",
            "--trainer.callbacks.minutes=0.2",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.monitor=val/stream_frr",
            "--trainer.callbacks.filename=stream-{epoch:03d}",
        ]
    )
    assert (streams / "labels.csv").is_file() and list(streams.glob("stream_*.wav"))
    fillers = list(csv.DictReader(open(streams / "filler.csv")))
    assert fillers and all(is_held_out(f["source"]) for f in fillers if f["kind"] == "_filler_")
    ckpt = next((tmp_path / "run").rglob("stream-*.ckpt"))
    saved = torch.load(ckpt, weights_only=False)
    assert any("val/stream_frr" in str(k) for k in saved["callbacks"])

    out = tmp_path / "mined"
    argv = ["mine-negatives", "--ckpt_path", str(ckpt), "--negatives_dir", f"[{neg}]"]
    assert console([*argv, "--out", str(out), "--threshold", "0"]) == 0
    assert "mined" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "mined.csv")))
    assert rows and len(rows) == len(list(out.glob("*.wav")))
    train = {str(p) for p in negative_files([neg], "train")}
    for r in rows:
        assert r["source"] in train  # nothing held out is mined
        assert sf.info(str(out / r["file"])).frames == 16000
        assert speaker_key(out / r["file"]) == speaker_key(r["source"])  # stays in its part
    assert {str(p) for p in negative_files([out], "train")} == {str(out / r["file"]) for r in rows}


def test_bench_detect_tables_from_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/bench_detect.py --from-json: the mean and CI over seeds, the paired
    comparison (lower FRR is better) and the per-keyword table, with no model run."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "bench_detect", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_detect.py"
    )
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def run(seed: int, frr: float) -> dict:
        curve = {"threshold": [0.5, 0.9], "frr": [frr, 1.0], "fa_per_hour": [3.0, 0.0]}
        cells = {str(x): (float("nan") if x < 1.0 else frr) for x in (0.5, 1.0, 2.0, 5.0, 10.0)}
        kw = {"n": 10, "frr": cells}
        return {"seed": seed, "keywords": {"yes": kw, "overall": kw}, "det": curve}

    data = {
        "arms": {
            "base": [run(s, f) for s, f in ((0, 0.80), (1, 0.90), (2, 0.85))],
            "new": [run(s, f) for s, f in ((0, 0.40), (1, 0.52), (2, 0.44))],
        }
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    png = tmp_path / "det.png"
    argv = ["--from-json", str(path), "--baseline", "base", "--plot", str(png)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "| base | 0,1,2 | 1.000 [1.000, 1.000] | 0.850 [" in out  # nan at 0.5 counts as 1.0
    assert "| new | base | 1 | -0.397 [-0.435, -0.359] | paired |" in out and "better" in out
    assert "| yes | 10 | 0.850 | 0.453 |" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_make_streams_cli_validation_streams(
    speech_commands_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--split val --filler_part held_out --snr_db``: the validation split's clips only,
    filler from held-out speakers only, and streams.json saying so."""
    import json

    neg = _negatives(tmp_path / "neg", speakers=30, seconds=1.5)
    out = tmp_path / "val"
    argv = ["make-streams", "--data.source", "speech_commands", "--data.root"]
    argv += [str(speech_commands_tree), "--out", str(out), "--minutes", "0.5", "--split", "val"]
    argv += ["--snr_db", "[5, 20]", "--filler_dir", f"[{neg}]", "--filler_part", "held_out"]
    assert console(argv) == 0
    meta = json.loads((out / "streams.json").read_text())
    assert meta["split"] == "val" and meta["config"]["snr_db"] == [5.0, 20.0]
    assert meta["occurrences"] > 0 and meta["distinct_filler_files"] > 0
    val_clips = {ln.strip() for ln in open(speech_commands_tree / "validation_list.txt")}
    fillers = list(csv.DictReader(open(out / "filler.csv")))
    assert fillers and all(is_held_out(f["source"]) for f in fillers)
    assert len({f["source"] for f in fillers}) == meta["distinct_filler_files"]
    labels = list(csv.DictReader(open(out / "labels.csv")))
    assert {r["keyword"] for r in labels} <= {c.split("/")[0] for c in val_clips}
    capsys.readouterr()
    assert console([*argv[:-6], "--snr_db", "[20, 5]"]) != 0  # low > high: refused
    assert "snr_db must be [low, high], got [20.0, 5.0]" in capsys.readouterr().err
