"""`kwsnet make-streams / detect / detect-eval` end to end on a tiny fit (outputs only)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kwsnet.cli import console, main
from kwsnet.detect.evaluate import THRESHOLDS
from kwsnet.errors import ConfigError
from kwsnet.tracking import read_offline_run, wait_for_offline_run

from .conftest import KWS_RAW_CONFIG, QUIET_FIT


def run(argv: list[str]) -> int:
    """The exit status of ``kwsnet ARGV`` (an error printed as one line on stderr)."""
    return console(argv)


def test_streams_detect_and_eval_commands(speech_commands_tree: Path, tmp_path: Path, capsys):
    data = ["--data.source", "speech_commands", "--data.root", str(speech_commands_tree)]
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
        ]
    )
    ckpt = next((tmp_path / "run").rglob("*.ckpt"))
    streams = tmp_path / "streams"
    # bare yes/no are words here as in fit (YAML 1.2), not booleans
    data_words = [*data, "--data.words", "[yes, no, up]"]
    args = [*data_words, "--out", str(streams), "--seed", "1", "--minutes", "0.25"]
    assert run(["make-streams", *args, "--stream_seconds", "7.5"]) == 0
    wavs = sorted(streams.glob("*.wav"))
    assert len(wavs) == 2 and (streams / "labels.csv").is_file()

    capsys.readouterr()
    assert run(["detect", "--ckpt_path", str(ckpt), "--threshold", "0", *map(str, wavs)]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert rows, "threshold 0 fires at every refractory period"
    for r in rows:
        assert r["file"] in map(str, wavs) and r["keyword"] in {"yes", "no", "up"}
        assert 0 <= float(r["time"]) <= 7.5 and 0 <= float(r["score"]) <= 1
    out = tmp_path / "d.csv"
    assert run(["detect", "--ckpt_path", str(ckpt), "--out", str(out), str(wavs[0])]) == 0
    assert out.read_text().startswith("file,time,keyword,score\n")

    assert run(["detect-eval", "--ckpt_path", str(ckpt), "--streams", str(streams)]) == 0
    table = capsys.readouterr().out
    assert "FRR@1FA/h" in table and "overall" in table and "0.004 h of audio" in table
    assert (streams / "det.png").read_bytes()[:4] == b"\x89PNG"
    argv = ["detect-eval", "--ckpt_path", str(ckpt), "--streams", str(streams), "--no_wandb"]
    assert run([*argv, "--fa_per_hour", "10", "100"]) == 0  # the table's columns
    head = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("keyword")][0]
    assert "FRR@10FA/h" in head and "FRR@100FA/h" in head and "FRR@1FA/h" not in head
    assert run([*argv, "--fa_per_hour", "0"]) == 2
    assert "--fa_per_hour values must be > 0" in capsys.readouterr().err
    assert run([*argv, "--attribute", "0.5", "0.9"]) == 0  # FA/h by where they fell
    out = capsys.readouterr().out.splitlines()
    i = out.index("false alarms per hour by where they fell (all keywords at the threshold):")
    assert out[i + 1].split() == ["threshold", "FA/h", "keyword", "noise"]  # no filler here
    for line, thr in zip(out[i + 2 : i + 4], ("0.5", "0.9"), strict=True):
        cells = line.split()
        assert cells[0] == thr and float(cells[1]) == pytest.approx(
            sum(float(c) for c in cells[2:]), abs=0.2
        )
    assert run([*argv, "--attribute", "1.5"]) == 2
    # the same evaluation as an offline wandb run: DET table, curve, plot; FRR in the summary
    (run_dir,) = (streams / "wandb").glob("offline-run-*")
    assert wait_for_offline_run(run_dir)
    logged = read_offline_run(run_dir)
    assert logged["config"]["hours"] == pytest.approx(15 / 3600)
    assert logged["config"]["detector"]["hop_ms"] == 100
    (hist,) = logged["history"]
    # every default threshold x (3 keywords + overall)
    n_rows = len(THRESHOLDS) * 4
    assert hist["det/_type"] == "table-file" and hist["det/nrows"] == n_rows
    assert hist["det_plot/_type"] == "image-file" and hist["det_curve_table/nrows"] == n_rows
    frr = logged["summary"]["overall/FRR@2FA_h"]
    assert frr is None or 0.0 <= frr <= 1.0
    assert f"{frr:.3f}" in table if frr is not None else "nan" in table


def test_detect_eval_without_labels_is_a_user_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="labels.csv does not exist"):
        main(["detect-eval", "--ckpt_path", "x.ckpt", "--streams", str(tmp_path)])


def test_make_streams_missing_filler_dir_is_a_user_error(speech_commands_tree: Path, tmp_path):
    argv = ["make-streams", "--data.source", "speech_commands"]
    argv += ["--data.root", str(speech_commands_tree), "--out", str(tmp_path / "s")]
    with pytest.raises(ConfigError, match=r"--filler_dir: filler folder .*nowhere does not exist"):
        main([*argv, "--filler_dir", f"[{tmp_path / 'nowhere'}]"])
