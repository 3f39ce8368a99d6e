"""Streaming detection: detector logic, evaluator semantics, stream generator (no training)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kwsnet.data.audio import read_audio
from kwsnet.data.datamodule import AudioDataModule
from kwsnet.detect import Detection, Detector, DetectorConfig, Occurrence, decide
from kwsnet.detect.evaluate import (
    Filler,
    attribute_false_alarms,
    count_errors,
    frr_at,
    plot_det,
    read_fillers,
    sweep,
)
from kwsnet.detect.model import detector_from_module
from kwsnet.detect.streams import StreamConfig, make_streams

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

KW = ["yes", "no"]


def test_decide_patience_refractory_and_argmax():
    t = np.arange(10) * 0.1
    s = np.zeros((10, 2))
    s[1:4, 0] = [0.6, 0.7, 0.8]  # yes for 3 hops
    s[3, 1] = 0.9  # no is higher at hop 3, but only 1 hop long
    s[8:10, 1] = [0.6, 0.6]
    # patience 2: yes fires at hop 2; refractory 0.5 s blocks hop 3..6; no fires at hop 9
    got = decide(t, s, KW, [0.5, 0.5], patience=2, refractory_s=0.5)
    assert got == [Detection(0.2, "yes", 0.7), Detection(0.9, "no", 0.6)]
    # patience 1, no refractory: yes at 1 resets the streaks, no (0.9) wins hop 3's argmax
    got = decide(t, s, KW, [0.5, 0.5], patience=1, refractory_s=0.0)
    assert [(d.time, d.keyword) for d in got] == [
        (0.1, "yes"),
        (0.2, "yes"),
        (pytest.approx(0.3), "no"),
        (0.8, "no"),
        (0.9, "no"),
    ]
    # an infinite threshold silences a keyword
    got = decide(t, s, KW, [math.inf, 0.5], patience=1, refractory_s=1.0)
    assert [(d.time, d.keyword) for d in got] == [(pytest.approx(0.3), "no")]


def marker_posteriors(batch: torch.Tensor) -> torch.Tensor:
    """Stand-in model: P(yes) = fraction of the window's samples equal to 1."""
    yes = (batch == 1.0).double().mean(dim=1)
    return torch.stack([yes, torch.zeros_like(yes), 1 - yes], dim=1)


def test_detector_windows_smoothing_and_times():
    sr, window = 100, 100  # 1 s windows, 10-sample (100 ms) hop
    wave = np.zeros(300, dtype=np.float32)
    wave[100:200] = 1.0
    cfg = DetectorConfig(smooth_windows=2, threshold=0.9, refractory_ms=0)
    det = Detector(marker_posteriors, ["yes", "no", "_unknown_"], window, sr, config=cfg)
    assert det.keywords == ["yes", "no"]
    times, scores = det.scores(wave)
    assert len(times) == 21 and times[0] == 0.5 and times[-1] == pytest.approx(2.5)
    raw = np.array([wave[i * 10 : i * 10 + 100].mean() for i in range(21)])
    want = np.concatenate([[raw[0]], (raw[1:] + raw[:-1]) / 2])
    np.testing.assert_allclose(scores[:, 0], want, atol=1e-12)
    assert np.all(scores[:, 1] == 0)
    # raw .8 .9 1 .9 .8 at starts 80..120; causal mean of 2: .85 at 90, .95 at 100 and 110
    got = det.detect(wave)
    assert [(d.keyword, round(d.time, 3)) for d in got] == [("yes", 1.5), ("yes", 1.6)]
    # a clip shorter than the window is padded to one window
    times, scores = det.scores(np.ones(30, dtype=np.float32))
    assert times.tolist() == [0.5] and scores[0, 0] == pytest.approx(0.3)


def test_count_errors_hand_example():
    occ = [
        Occurrence("a.wav", "yes", 1.0, 2.0),
        Occurrence("a.wav", "no", 5.0, 6.0),
        Occurrence("b.wav", "yes", 0.0, 1.0),
    ]
    dets = {
        "a.wav": [
            Detection(1.5, "yes", 0.9),  # hit
            Detection(1.8, "yes", 0.9),  # second in the same window: false alarm
            Detection(3.0, "no", 0.9),  # outside any window: false alarm
        ],
        "b.wav": [Detection(0.5, "no", 0.9)],  # wrong keyword in a window: false alarm
        "c.wav": [Detection(2.0, "yes", 0.9)],  # a file without labels: false alarm
    }
    assert count_errors(dets, occ) == (3, 2, 4)
    assert count_errors({}, occ) == (3, 3, 0)


def test_attribute_false_alarms_hand_example(tmp_path: Path):
    """Each false alarm goes to the span its time falls in: a keyword occurrence (wrong word or
    a repeat), a filler span by kind, else noise; hits are not counted; old filler.csv files
    (no kind column) read as _filler_."""
    occ = [Occurrence("a.wav", "yes", 1.0, 2.0), Occurrence("a.wav", "no", 5.0, 6.0)]
    fills = [
        Filler("a.wav", "left/x.wav", 3.0, 4.0, "_unknown_"),
        Filler("a.wav", "spk/u.wav", 7.0, 8.5, "_filler_"),
        Filler("b.wav", "right/y.wav", 0.0, 1.0, "_unknown_"),
    ]
    dets = {
        "a.wav": [
            Detection(1.5, "yes", 0.9),  # hit: not a false alarm
            Detection(1.9, "yes", 0.9),  # repeat in the occurrence: keyword
            Detection(5.5, "yes", 0.9),  # wrong keyword in "no": keyword
            Detection(3.5, "no", 0.9),  # in the _unknown_ span
            Detection(8.5, "no", 0.9),  # on the _filler_ span's end
            Detection(9.0, "no", 0.9),  # between placements: noise
        ],
        "b.wav": [Detection(0.2, "yes", 0.9), Detection(2.0, "yes", 0.9)],  # _unknown_, noise
    }
    got = attribute_false_alarms(dets, occ, fills)
    assert got == {"keyword": 2, "noise": 2, "_filler_": 1, "_unknown_": 2}
    assert sum(got.values()) == count_errors(dets, occ)[2]
    assert attribute_false_alarms(dets, occ, []) == {"keyword": 2, "noise": 5}
    (tmp_path / "filler.csv").write_text("file,source,start,end\na.wav,s.wav,1.0,2.5\n")
    assert read_fillers(tmp_path / "filler.csv") == [Filler("a.wav", "s.wav", 1.0, 2.5)]


def test_sweep_and_frr_at_hand_example(tmp_path: Path):
    # one file, 1 h; yes in [1, 2] and [10, 11], no in [20, 21]
    occ = [
        Occurrence("f", "yes", 1.0, 2.0),
        Occurrence("f", "yes", 10.0, 11.0),
        Occurrence("f", "no", 20.0, 21.0),
    ]
    t = np.array([1.5, 10.5, 15.0, 20.5])
    s = np.array([[0.9, 0.0], [0.4, 0.0], [0.6, 0.3], [0.0, 0.7]])  # yes, no

    def detect_at(thr):
        return {"f": decide(t, s, KW, thr, patience=1, refractory_s=0.0)}

    res = sweep(detect_at, KW, occ, hours=0.5, thresholds=[0.3, 0.5, 0.65, 0.95])
    # yes alone: 0.3 → hits both, FA at 15 (0.6); 0.5 → hit 1.5, FA 15; 0.65 → hit 1.5; 0.95 → none
    np.testing.assert_allclose(res["yes"].frr, [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(res["yes"].fa_per_hour, [2.0, 2.0, 0.0, 0.0])
    # no alone: 0.3 → FA at 15 (0.3) and hit; 0.5, 0.65 → hit; 0.95 → none
    np.testing.assert_allclose(res["no"].frr, [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(res["no"].fa_per_hour, [2.0, 0.0, 0.0, 0.0])
    # overall at 0.3: hits yes, yes, no; at 15 yes (0.6) wins the argmax: 1 FA
    np.testing.assert_allclose(res["overall"].frr, [0.0, 1 / 3, 1 / 3, 1.0])
    np.testing.assert_allclose(res["overall"].fa_per_hour, [2.0, 2.0, 0.0, 0.0])
    assert res["overall"].occurrences == 3
    assert frr_at(res["yes"], 1.0) == (0.5, 0.65)
    assert frr_at(res["yes"], 2.0) == (0.0, 0.3)
    assert frr_at(res["no"], 0.5) == (0.0, 0.5)
    assert math.isnan(frr_at(res["yes"], -1.0)[0])
    plot_det(res, tmp_path / "det.png")
    assert (tmp_path / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class FakeModule(torch.nn.Module):
    class_names = ["_silence_", "_unknown_", "yes", "no"]

    def forward(self, audio, lengths):
        assert lengths.tolist() == [audio.shape[1]] * audio.shape[0]
        return torch.stack([audio.mean(1) * 0, audio.mean(1) * 0, audio.mean(1), -audio.mean(1)], 1)


def test_detector_from_module_uses_softmax_and_skips_non_keywords():
    det = detector_from_module(FakeModule(), window=50, sample_rate=100)
    assert det.keywords == ["yes", "no"] and det.keyword_index == [2, 3]
    _, s = det.scores(np.full(50, 2.0, dtype=np.float32))
    e = np.exp([0.0, 0.0, 2.0, -2.0])
    np.testing.assert_allclose(s[0], (e / e.sum())[2:], rtol=1e-6)


def _segments(tree: Path, split_list: str) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for line in (tree / split_list).read_text().split():
        out.setdefault(line.split("/")[0], []).append(read_audio(tree / line, 16000).numpy())
    return out


def test_make_streams_places_test_clips_exactly(speech_commands_tree: Path, tmp_path: Path):
    dm = AudioDataModule(source="speech_commands", root=str(speech_commands_tree), preload=False)
    cfg = StreamConfig(minutes=0.5, stream_seconds=10.0, noise_gain=0.0, seed=3)
    paths = make_streams(dm, tmp_path / "s", cfg)
    assert [p.name for p in paths] == ["stream_000.wav", "stream_001.wav", "stream_002.wav"]
    with open(tmp_path / "s" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"file", "keyword", "start", "end"}
    test_clips = _segments(speech_commands_tree, "testing_list.txt")
    waves = {p.name: sf.read(p, dtype="float32")[0] for p in paths}
    assert all(sf.info(p).subtype == "PCM_16" and sf.info(p).duration == 10.0 for p in paths)
    covered = {n: np.zeros(len(w), bool) for n, w in waves.items()}
    for r in rows:
        a, b = round(float(r["start"]) * 16000), round(float(r["end"]) * 16000)
        seg = waves[r["file"]][a:b]
        assert any(np.array_equal(seg, c) for c in test_clips[r["keyword"]]), r
        covered[r["file"]][a:b] = True
    for n, w in waves.items():  # no noise, no filler (no _unknown_): silence elsewhere
        assert np.all(w[~covered[n]] == 0)
    assert {r["keyword"] for r in rows} <= {"yes", "no", "up"}
    # deterministic from the seed; another seed differs; noise fills the gaps
    again = make_streams(dm, tmp_path / "t", cfg)
    assert [sf.read(p)[0].tolist() for p in again] == [sf.read(p)[0].tolist() for p in paths]
    assert (tmp_path / "t" / "labels.csv").read_text() == (
        tmp_path / "s" / "labels.csv"
    ).read_text()
    noisy = make_streams(dm, tmp_path / "n", StreamConfig(minutes=1 / 6, stream_seconds=10.0))
    assert np.count_nonzero(sf.read(noisy[0])[0]) > 0.9 * 160000


def naive_decide(t, s, thr, patience, refractory_s):
    """Reference: every hop, in order."""
    streak, last, out = [0] * s.shape[1], -math.inf, []
    for n in range(len(t)):
        streak = [c + 1 if s[n, k] >= thr[k] else 0 for k, c in enumerate(streak)]
        ready = [k for k in range(s.shape[1]) if streak[k] >= patience]
        if ready and t[n] - last >= refractory_s:
            k = max(ready, key=lambda k: (s[n, k], -k))
            out.append(Detection(float(t[n]), KW[k], float(s[n, k])))
            last, streak = float(t[n]), [0] * s.shape[1]
    return out


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_decide_matches_a_hop_by_hop_reference(patience):
    rng = np.random.default_rng(patience)
    t = np.arange(400) * 0.1
    s = rng.random((400, 2)) ** 3
    for thr in ([0.2, 0.3], [0.5, 0.5], [0.7, math.inf]):
        for refr in (0.0, 0.35, 1.0):
            assert decide(t, s, KW, thr, patience, refr) == naive_decide(t, s, thr, patience, refr)


def test_make_streams_adds_unknown_filler_unlabelled(speech_commands_tree: Path, tmp_path: Path):
    dm = AudioDataModule(
        source="speech_commands",
        root=str(speech_commands_tree),
        words=["yes", "no"],
        include_unknown=True,
        preload=False,
    )
    cfg = StreamConfig(minutes=1.0, stream_seconds=20.0, noise_gain=0.0, filler_prob=0.5)
    paths = make_streams(dm, tmp_path, cfg)
    with open(tmp_path / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["keyword"] for r in rows} == {"yes", "no"}
    up = _segments(speech_commands_tree, "testing_list.txt")["up"]
    fillers = 0
    for p in paths:
        w = sf.read(p, dtype="float32")[0]
        spans = [
            (round(float(r["start"]) * 16000), round(float(r["end"]) * 16000))
            for r in rows
            if r["file"] == p.name
        ]
        nz = np.flatnonzero(w)  # clips follow >= 1 s of silence; a tone's sample 0 is 0
        for a in np.concatenate([nz[:1], nz[1:][np.diff(nz) > 8000]]) - 1:
            if not any(s <= a < e for s, e in spans):
                assert any(np.array_equal(w[a : a + 16000], c) for c in up)
                fillers += 1
    assert fillers > 0
    listed = read_fillers(tmp_path / "filler.csv")  # each placement, as an _unknown_ clip
    assert len(listed) == fillers and {f.kind for f in listed} == {"_unknown_"}


def test_make_streams_places_filler_speech_from_folders(speech_commands_tree: Path, tmp_path: Path):
    """Utterances from ``filler_dirs`` are placed unlabelled, listed in filler.csv with their
    source and span, and hold the source's samples exactly (no noise)."""
    speech = tmp_path / "speech" / "spk1"
    speech.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sources = {}
    for i in range(3):  # 1.5 s "sentences", distinct from every keyword clip
        x = (0.3 * rng.standard_normal(24000)).clip(-1, 1)
        path = speech / f"utt{i}.flac" if i == 2 else speech / f"utt{i}.wav"
        sf.write(path, x, 16000, subtype="PCM_16")
        sources[str(path)] = sf.read(path, dtype="float32")[0]
    dm = AudioDataModule(
        source="speech_commands", root=str(speech_commands_tree), words=["yes", "no"], preload=False
    )
    cfg = StreamConfig(
        minutes=1.0,
        stream_seconds=20.0,
        noise_gain=0.0,
        filler_prob=0.5,
        filler_dirs=(str(tmp_path / "speech"),),
    )
    make_streams(dm, tmp_path / "s", cfg)
    with open(tmp_path / "s" / "filler.csv", newline="") as f:
        fills = list(csv.DictReader(f))
    with open(tmp_path / "s" / "labels.csv", newline="") as f:
        labels = list(csv.DictReader(f))
    assert fills and labels and {r["keyword"] for r in labels} <= {"yes", "no"}
    assert {r["source"] for r in fills} <= set(sources) and len({r["source"] for r in fills}) > 1
    assert {r["kind"] for r in fills} == {"_filler_"}
    for r in fills:
        w = sf.read(tmp_path / "s" / r["file"], dtype="float32")[0]
        a, b = round(float(r["start"]) * 16000), round(float(r["end"]) * 16000)
        assert np.array_equal(w[a:b], sources[r["source"]])
        for lab in labels:  # no keyword span overlaps a filler span
            if lab["file"] == r["file"]:
                assert float(lab["end"]) <= float(r["start"]) or float(lab["start"]) >= float(
                    r["end"]
                )
    (tmp_path / "empty").mkdir()
    for folder, msg in (("empty", "holds no .wav/.flac"), ("missing", "missing does not exist")):
        with pytest.raises(FileNotFoundError, match=msg):
            make_streams(dm, tmp_path / "x", StreamConfig(filler_dirs=(str(tmp_path / folder),)))


def test_default_thresholds_resolve_scores_between_0_99_and_1() -> None:
    """The default sweep has thresholds between 0.99 and 1: a keyword scored 0.9995 over
    filler scored 0.995 is found with no false alarm (with the old 0.01 grid the step went
    from 0.99, firing on the filler, straight to 1.0, firing on nothing: FRR 1 at 0 FA/h)."""
    from kwsnet.detect.evaluate import THRESHOLDS

    assert THRESHOLDS[0] == 0.0 and THRESHOLDS[-1] == 1.0 and np.all(np.diff(THRESHOLDS) > 0)
    assert ((THRESHOLDS > 0.99) & (THRESHOLDS < 1.0)).sum() >= 12
    occ = [Occurrence("f", "yes", 1.0, 2.0)]
    t = np.array([1.5, 5.0, 9.0])
    s = np.array([[0.9995, 0.0], [0.995, 0.0], [0.0, 0.996]])  # yes, no

    def detect_at(thr):
        return {"f": decide(t, s, KW, thr, patience=1, refractory_s=0.0)}

    res = sweep(detect_at, KW, occ, hours=1.0)
    assert frr_at(res["overall"], 0.5)[0] == 0.0
    frr, thr = frr_at(res["yes"], 0.5)
    assert frr == 0.0 and 0.995 < thr < 0.9995
