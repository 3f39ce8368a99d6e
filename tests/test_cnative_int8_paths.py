"""Every int8 kernel path against a scalar reference, bit for bit (cnative/tests/test_q8_paths.c).

The C program draws random shapes of each int8 kernel: Conv1d with channel counts that are not
multiples of 4 or 16, strides 1-4, dilation, groups and depthwise, padding; Conv2d (dense,
grouped, depthwise, strided, padded); Linear; AvgPool1d (short strides, long strides,
kernel = stride = L); the integer LayerNorm (short groups and long ones, which use the table
of Z); with zero points at -128 / 127, weights at +-127, biases at the loader's accumulator
bound, multipliers of 0 and shifts of both signs. Each path (KWSN_ISA) runs its own kernel table
and must give the reference's codes exactly. A path the CPU lacks is skipped with the reason;
the same program built with ASan/UBSan runs in ``make sanitize``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kwsnet.export.runtime import CNATIVE_DIR, cpu_flags

from .cnative_helpers import ISA_FLAGS, build_runtime


@pytest.fixture(scope="module")
def cbuild() -> Path:
    build = build_runtime()
    proc = subprocess.run(
        ["make", "-s", "-C", str(CNATIVE_DIR), "tests"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return build


@pytest.mark.parametrize("isa", [p for p, _ in ISA_FLAGS])
def test_int8_kernels_bit_exact_on_path(cbuild: Path, isa: str) -> None:
    """KWSN_ISA=isa: 400 random cases of every int8 kernel equal the scalar reference."""
    need = dict(ISA_FLAGS)[isa]
    missing = [f for f in need if f not in cpu_flags()]
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(missing)} (/proc/cpuinfo), so KWSN_ISA={isa} "
                    "cannot run here")  # fmt: skip
    proc = subprocess.run(
        [str(cbuild / "test_q8_paths"), isa, "--cases", "400", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"OK {isa}: 400 cases" in proc.stdout, proc.stdout


def test_unknown_path_falls_back_to_the_pick(cbuild: Path) -> None:
    """An unknown KWSN_ISA value is ignored (the automatic pick runs), reported as a skip."""
    proc = subprocess.run(
        [str(cbuild / "test_q8_paths"), "sse9", "--cases", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("SKIP sse9:"), proc.stdout


@pytest.mark.parametrize("path, need", [("avx2", "avx2"), ("avx512", "avx512bw")])
def test_add_input_rescale_in_int32_lanes(cbuild: Path, path: str, need: str) -> None:
    """The int8 Add's input rescaling in int32 lanes (q8_in_lanes) equals kwsn_mbqm(d << ls,
    m, -e) for every centred code d, left shift 15-22, e 0-31 and 520 multipliers (the edges and
    the ones that put either rounding on a tie): cnative/tests/q8_in_check.c, per path."""
    if need not in cpu_flags():
        pytest.skip(f"this CPU lacks {need} (/proc/cpuinfo), so the {path} lanes cannot run here")
    proc = subprocess.run(
        [str(cbuild / f"q8_in_check_{path}")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith("OK q8_in_check") and "68157440 values" in out, out
