"""The speaker ablation's rows each have a config (each builds and trains one batch in
``tests/test_configs.py``)."""

from __future__ import annotations

from pathlib import Path

CONFIGS = sorted(Path(__file__).resolve().parents[1].glob("configs/speaker_*.yaml"))


def test_all_ablation_rows_have_a_config():
    names = {p.stem for p in CONFIGS}
    assert {
        "speaker_conformer", "speaker_conformer_sap", "speaker_conformer_sapmax_bn",
        "speaker_conformer_2l", "speaker_conformer_4l", "speaker_conformer_mel",
    } <= names  # fmt: skip
