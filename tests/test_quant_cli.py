"""``kwsnet export --dtype int8`` and ``kwsnet parity --dtype int8`` on tiny trained models,
the int8 C header compiled and run, and the int8 parity report's verdicts.

The trained models are the real configs (kws_raw.yaml with its per-conv LayerNorms, and
kws_cnn_mel.yaml with its log-mel front end and residual blocks) shrunk to the learnable
synthetic corpus; the gate they pass is bit-identity of every int8 logit code.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import LEARNABLE_SAMPLES, LEARNABLE_SYNTHETIC, QUIET_FIT

# Outcome depends on torch's CPU kernel path: also run under ATEN_CPU_CAPABILITY=default.
pytestmark = pytest.mark.kernel_path

REPO = Path(__file__).resolve().parents[1]
needs_cc = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("make") is None,
    reason="gcc and make are needed to build the C runtime",
)


def _fit(args: list[str]) -> None:
    from kwsnet.cli import main

    main(["fit", *args, *QUIET_FIT])


@pytest.fixture(scope="module")
def raw_ckpt(trained_raw_run: Path) -> tuple[Path, Path]:
    """A raw_conv (per-conv LayerNorm) trained on the learnable corpus: the session's shared
    run (conftest ``trained_raw_run``), and a data root for the commands' ``--data.root``."""
    return trained_raw_run / "checkpoints" / "last.ckpt", trained_raw_run / "data"


@pytest.fixture(scope="module")
def mel_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A shrunk kws_cnn_mel trained 6 epochs on the learnable corpus."""
    root = tmp_path_factory.mktemp("mel8")
    _fit(
        [
            "--config",
            str(REPO / "configs" / "kws_cnn_mel.yaml"),
            "--data.source_options",
            LEARNABLE_SYNTHETIC,
            "--data.clip_samples",
            str(LEARNABLE_SAMPLES),
            "--data.batch_size",
            "8",
            "--data.root",
            str(root / "data"),
            "--model.backbone.init_args.stem_channels",
            "8",
            "--model.backbone.init_args.channels",
            "[8, 12]",
            "--model.backbone.init_args.strides",
            "[2, 2]",
            "--model.backbone.init_args.kernel_size",
            "5",
            "--model.augment",
            "null",
            "--model.frontend.init_args.spec_augment",
            "null",
            "--model.optimizer.init_args.lr",
            "0.01",
            "--trainer.max_epochs",
            "6",
            "--trainer.default_root_dir",
            str(root / "run"),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    return root / "run" / "checkpoints" / "last.ckpt", root / "data"


def _parity_lines(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str]:
    from kwsnet.cli import main

    capsys.readouterr()
    rc = main(["parity", *argv])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


@needs_cc
@pytest.mark.parametrize("which", ["raw", "mel"])
def test_int8_parity_gate_bit_exact(
    which: str,
    raw_ckpt: tuple[Path, Path],
    mel_ckpt: tuple[Path, Path],
    capsys: pytest.CaptureFixture,
) -> None:
    """`kwsnet parity --dtype int8 --per_layer`: every int8 logit code identical on every
    test clip, every layer's codes identical, the class floor passed."""
    ckpt, data = raw_ckpt if which == "raw" else mel_ckpt
    rc, text = _parity_lines(
        capsys,
        [
            "--ckpt_path",
            str(ckpt),
            "--data.root",
            str(data),
            "--dtype",
            "int8",
            "--calibration",
            "64",
            "--per_layer",
        ],
    )
    assert rc == 0, text
    first = text.splitlines()[0]
    n = int(first.split("/")[1].split()[0])
    assert n > 0 and first.startswith(f"int8 parity: logits identical on {n}/{n} clips"), text
    rows = [ln for ln in text.splitlines() if ln.startswith("  ") and "/" in ln]
    assert rows, text
    for row in rows:
        diff = row.split()[-1]
        assert diff.split("/")[0] == "0", row
    if which == "mel":
        assert "front end (float, then quantised)" in text, text
        fe = [ln for ln in text.splitlines() if ln.startswith("front end")][0]
        assert "max |diff| 0" in fe or "max |diff| 1" in fe, fe


@needs_cc
def test_export_int8_file_and_bytes(
    raw_ckpt: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`kwsnet export --dtype int8`: a version-3 file the C runtime loads, its int8 weights
    smaller than the float file's; --format onnx is refused for int8."""
    from kwsnet.cli import main
    from kwsnet.errors import UsageError
    from kwsnet.export.runtime import CNATIVE_DIR, CModel

    def export_main(argv: list[str]) -> int:
        return main(["export", *argv])

    ckpt, data = raw_ckpt
    common = ["--ckpt_path", str(ckpt), "--data.root", str(data)]
    f32, i8 = tmp_path / "m.kwsn", tmp_path / "m8.kwsn"
    assert export_main([*common, "--out", str(f32)]) == 0
    argv = [*common, "--dtype", "int8", "--calibration", "32", "--out", str(i8)]
    assert export_main(argv) == 0
    assert i8.read_bytes()[4:8] == struct.pack("<I", 3)
    out = capsys.readouterr().out
    assert "int8" in out and "arena" in out, out
    # A single-path build without AVX2 (an MCU, plain SSE2) keeps the compact int8 arena; the
    # multi-path x86-64 build adds the vector int8 convs' im2col rows to it (docs/cnative.md).
    compact = tmp_path / "b0"
    subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(CNATIVE_DIR),
            f"BUILD={compact}",
            "MULTI_ISA=0",
            f"{compact}/libkwsnet.so",
        ],
        check=True,
        capture_output=True,
    )
    with (
        CModel(f32, lib=compact / "libkwsnet.so") as a,
        CModel(i8, lib=compact / "libkwsnet.so") as b,
    ):
        assert b.arena_bytes < a.arena_bytes
    with CModel(f32) as a, CModel(i8) as b:
        assert b.is_int8 and not a.is_int8
        assert b.weight_bytes < a.weight_bytes
        x = np.random.default_rng(0).standard_normal((3, a.input_len)).astype(np.float32) * 0.1
        assert b.forward(x).shape == a.forward(x).shape
    with pytest.raises(UsageError, match="--dtype int8 writes"):
        export_main([*common, "--dtype", "int8", "--format", "onnx", "--out", str(tmp_path / "x")])


@needs_cc
def test_int8_c_header_compiles_and_matches_file(
    mel_ckpt: tuple[Path, Path], tmp_path: Path
) -> None:
    """The int8 C header (int8_t weights, kwsn_model_from_table_q), compiled into a program,
    gives the same int8 codes as the version-3 file through the runtime."""
    from kwsnet.cli import main
    from kwsnet.export.runtime import CNATIVE_DIR, CModel

    def export_main(argv: list[str]) -> int:
        return main(["export", *argv])

    ckpt, data = mel_ckpt
    common = ["--ckpt_path", str(ckpt), "--data.root", str(data), "--dtype", "int8"]
    common += ["--calibration", "32"]
    header, kwsn = tmp_path / "m8.h", tmp_path / "m8.kwsn"
    assert export_main([*common, "--format", "c-header", "--out", str(header)]) == 0
    assert export_main([*common, "--out", str(kwsn)]) == 0
    text = header.read_text()
    assert "static const int8_t" in text and "KWSN_MODEL_INPUT_Q" in text
    x = (np.sin(np.arange(LEARNABLE_SAMPLES) * 0.05) * 0.3).astype("<f4")
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    (tmp_path / "run8.c").write_text(
        f"""
#include <stdio.h>
#include "m8.h"
static uint64_t store[KWSN_MODEL_STORAGE_WORDS];
static float arena[KWSN_MODEL_ARENA_BYTES / sizeof(float) + 16] __attribute__((aligned(64)));
static float x[KWSN_MODEL_INPUT_LEN];
int main(void) {{
    FILE *f = fopen("{tmp_path / "x.bin"}", "rb");
    if (!f || fread(x, sizeof(float), KWSN_MODEL_INPUT_LEN, f) != KWSN_MODEL_INPUT_LEN) return 3;
    fclose(f);
    kwsn_model *m;
    kwsn_status st = kwsn_model_from_table_q(kwsn_model_layers, KWSN_MODEL_N_LAYERS,
        kwsn_model_input, KWSN_MODEL_SAMPLE_RATE, KWSN_MODEL_INPUT_Q, store, sizeof(store),
        NULL, &m);
    if (st != KWSN_OK) {{ printf("prepare: %s\\n", kwsn_status_str(st)); return 1; }}
    int8_t codes[64];
    st = kwsn_forward_codes_batch(m, arena, sizeof(arena), x, 1, KWSN_MODEL_INPUT_LEN,
                                  KWSN_MODEL_N_LAYERS, codes, 64);
    if (st != KWSN_OK) {{ printf("forward: %s\\n", kwsn_status_str(st)); return 2; }}
    for (size_t i = 0; i < kwsn_n_classes(m); i++) printf("%d\\n", codes[i]);
    return 0;
}}
"""
    )
    src = CNATIVE_DIR / "src"  # the MCU path: static tables, plain C loops, -Werror
    cmd = ["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-DKWSN_NO_VECTOR_EXT"]
    cmd += ["-I", str(CNATIVE_DIR / "include"), "-I", str(src), "-I", str(tmp_path)]
    cmd += [str(tmp_path / "run8.c"), str(src / "kwsn_model.c"), str(src / "kwsn_kernels.c")]
    cmd += [str(src / "kwsn_frontend.c"), "-o", str(tmp_path / "run8"), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    res = subprocess.run([str(tmp_path / "run8")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    got = [int(v) for v in res.stdout.split()]
    with CModel(kwsn) as cm:
        want = cm.forward_codes(x[None, :], cm.n_layers)[0].tolist()
    assert got == want and len(got) == 3


def test_int8_parity_report_fails_on_one_code() -> None:
    """The gate has no tolerance: a C model one code off on one logit of one clip fails it,
    and so does a collapsed int8 model (with the class floor)."""
    from kwsnet.export.graph import graph_from_layers
    from kwsnet.quant.parity import run_int8_parity
    from kwsnet.quant.ptq import calibrate, quantize_graph
    from kwsnet.quant.reference import run_int8_tensors

    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 3)
    g = graph_from_layers([("fc", lin)], (8,))
    x = torch.randn(6, 8)
    q = quantize_graph(g, calibrate(g, [x]))

    class _Fake:
        is_int8 = True
        n_layers = 1

        def __init__(self, bump: bool) -> None:
            self.bump = bump

        def forward_codes(self, xs: np.ndarray, n_run: int) -> np.ndarray:
            out = run_int8_tensors(q, torch.from_numpy(xs))[n_run].numpy().copy()  # type: ignore[union-attr]
            if self.bump:
                out[2, 1] = np.int8(min(int(out[2, 1]) + 1, 127) if out[2, 1] < 127 else 126)
            return out

    good = run_int8_parity(q, [x], _Fake(False), 3, per_layer=True, class_floor=False)
    assert good.ok and good.n_identical == 6 and good.layer_diff == [0]
    bad = run_int8_parity(q, [x], _Fake(True), 3, per_layer=True, class_floor=False)
    assert not bad.ok and bad.n_identical == 5 and bad.layer_diff == [1]
    assert "1 of 6 clips" in bad.failure()
    floor = run_int8_parity(q, [x], _Fake(False), 3, class_floor=True)
    floor.counts = [6, 0, 0]
    assert not floor.ok and "collapsed" in floor.failure()
    with pytest.raises(ValueError, match="not an int8"):

        class _Float:
            is_int8 = False

        run_int8_parity(q, [x], _Float(), 3)
