"""Shared scaffolding of the C runtime's tests (test_cnative_*.py, test_export.py): the build,
the kernel paths, test clips, int8 files checked code for code against the integer reference
on every kernel path, corrupted records and the loader's messages, the C header compiled as
an MCU build against the ``.kwsn`` file model, and a trained checkpoint through ``kwsnet
parity`` and ``kwsnet export``."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.export.cnative import write_graph
from kwsnet.export.graph import Graph
from kwsnet.export.parity import LOGIT_RTOL, run_parity
from kwsnet.export.runtime import CNATIVE_DIR, CModel, CRuntimeError, build_cnative, cpu_flags
from kwsnet.quant.format import HEADER_BYTES, write_quant
from kwsnet.quant.ptq import QuantGraph, calibrate, quantize_graph
from kwsnet.quant.reference import run_int8_tensors

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ build, paths, clips


def build_runtime() -> Path:
    """The body of the modules' ``cbuild`` fixtures: cnative's library and tools and its
    ASan/UBSan build (skips without make and gcc); the build directory."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make and gcc are needed to build cnative")
    build_cnative("all")
    return build_cnative("sanitize")


# The runtime's kernel paths (KWSN_ISA values) in its order of preference, lowest first (the
# automatic pick is the last one the CPU runs), with the /proc/cpuinfo flags each needs.
ISA_FLAGS = (
    ("default", ()),
    ("avx2", ("avx2",)),
    ("avxvnni", ("avx2", "avx_vnni")),
    ("avx512", ("avx512f", "avx512bw")),
    ("avx512vnni", ("avx512f", "avx512bw", "avx512_vnni")),
)


def isa_paths() -> list[str]:
    """The runtime's kernel paths this CPU runs (KWSN_ISA values), lowest first."""
    flags = cpu_flags()
    return [p for p, need in ISA_FLAGS if all(f in flags for f in need)]


def clips(n: int, seed: int = 0, samples: int = 16000) -> torch.Tensor:
    """Tones plus noise at speech-like levels, ``[n, samples]``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples, dtype=torch.float32)
    f = torch.rand(n, 1, generator=g) * 0.3 + 0.02
    return 0.3 * torch.sin(t * f) + 0.05 * torch.randn(n, samples, generator=g)


def eval_logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """A ClassifierModule-shaped model's logits for full-length clips."""
    with torch.no_grad():
        return model.head(model.embed(x, torch.full((len(x),), x.shape[1]))).numpy()


def randomise_bn(model: nn.Module, seed: int, kind: type[nn.Module]) -> nn.Module:
    """Non-trivial statistics and affines for every ``kind`` BatchNorm of ``model`` (folding
    must matter); ``model``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, kind):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
    return model


# ------------------------------------------------------------------ float and int8 parity


def assert_float_parity_per_layer(
    model: nn.Module, graph: Graph, path: Path, x: torch.Tensor, min_spread: float | None = None
) -> None:
    """``graph`` written to ``path``: run_parity per layer on two halves of ``x`` (every clip
    identical, the layers in the graph's order, each within 1e-4 of its scale, the bound
    growing with depth past layer 40: layer i's difference is the whole chain's up to i, both
    sides' roundings carried through it; ATen's default kernels on an Intel Xeon reached
    1.56e-4 at layer 112 of a 12-block BC-ResNet, the native ones stay below 1e-4) and the C
    logits within the gate's tolerance of the model's; ``min_spread``: the logits must also
    vary across the clips by more than that many tolerances."""
    kinds = [n.kind for n in graph.nodes]
    write_graph(graph, path)
    half = len(x) // 2
    with CModel(path) as cm:
        rep = run_parity(model, [x[:half], x[half:]], cm, graph=graph, per_layer=True)
        out = cm.forward(x.numpy())
    assert rep.ok and rep.n == len(x), rep.lines()
    assert [d.kind for d in rep.layers] == kinds
    assert all(d.max_rel < 1e-4 * max(1.0, (i + 1) / 40) for i, d in enumerate(rep.layers)), (
        rep.lines()
    )
    ref = eval_logits(model, x)
    tol = LOGIT_RTOL * max(1.0, float(np.abs(ref).max()))
    if min_spread is not None:
        assert float(ref.std(axis=0).max()) > min_spread * tol  # the logits depend on the clip
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol)


def write_int8(graph: Graph, calibration: list[torch.Tensor], path: Path) -> QuantGraph:
    """``graph`` calibrated on ``calibration``, quantised and written to ``path`` (format 3)."""
    q = quantize_graph(graph, calibrate(graph, calibration))
    write_quant(q, graph, path)
    return q


def cmodel_on(path: Path, isa: str) -> CModel:
    """``CModel(path)`` prepared on kernel path ``isa`` (the runtime reads KWSN_ISA at
    prepare; the environment is restored before returning)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KWSN_ISA", isa)
        return CModel(path)


def assert_codes_on_every_path(
    path: Path, x: torch.Tensor, ref: Sequence[torch.Tensor | None], layers: Iterable[int] = ()
) -> None:
    """The int8 file at ``path`` on every kernel path: the output codes (forward_codes's
    default) equal ``ref[-1]`` or, with ``layers``, each listed tensor's codes equal
    ``ref[i]`` (``ref``: run_int8_tensors's list)."""
    n, layers = len(x), list(layers)
    for isa in isa_paths():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KWSN_ISA", isa)
            with CModel(path) as cm:
                assert cm.is_int8 and cm.isa == isa
                if not layers:
                    want = ref[-1].reshape(n, -1).numpy()  # type: ignore[union-attr]
                    np.testing.assert_array_equal(cm.forward_codes(x.numpy()), want, err_msg=isa)
                for i in layers:
                    got = cm.forward_codes(x.numpy(), i)
                    want = ref[i].reshape(n, -1).numpy()  # type: ignore[union-attr]
                    np.testing.assert_array_equal(got, want, err_msg=f"{isa} layer {i - 1}")


def assert_int8_model_codes(
    graph: Graph, x: torch.Tensor, path: Path, c_frontend_codes: bool
) -> None:
    """``graph`` quantised (calibrated on ``x[:8]``) to ``path``: every layer's codes (the
    logits' included) equal the integer reference's on every kernel path, from C's own front
    end codes with ``c_frontend_codes`` (as `kwsnet parity --dtype int8`); the logits' codes
    not saturated."""
    q = write_int8(graph, [x[:8]], path)
    assert [n.kind for n in q.nodes] == [n.kind for n in graph.nodes]
    fe = None
    if c_frontend_codes:  # the gate starts from C's front end codes
        n_out = graph.nodes[0].tables.n_out  # type: ignore[attr-defined]
        with CModel(path) as cm:
            fe = torch.from_numpy(cm.forward_codes(x.numpy(), 1)).reshape(len(x), n_out, -1)
    ref = run_int8_tensors(q, x, frontend_codes=fe)
    assert_codes_on_every_path(path, x, ref, range(1, len(graph.nodes) + 1))
    assert len(np.unique(ref[-1].numpy())) > 5  # type: ignore[union-attr]


# ------------------------------------------------------------------ records and the loader


class Record(NamedTuple):
    """One layer record of a format-2 (float) or format-3 (int8) file."""

    offset: int  # of the record
    type: int
    n_inputs: int
    n_ints: int
    ints_at: int  # byte offset of its first int (after the input ids)


def records(data: bytes) -> list[Record]:
    """Every record of a format-2 or format-3 file."""
    v3 = struct.unpack_from("<I", data, 4)[0] == 3
    off, out = (HEADER_BYTES if v3 else 28), []
    for _ in range(struct.unpack_from("<I", data, 24)[0]):
        if v3:
            typ, n_in, n_i, n_f, n_w, n_b = struct.unpack_from("<6I", data, off)
            head, size = 24, 24 + 4 * (n_in + n_i + n_f + n_w) + n_b + (-n_b) % 4
        else:
            typ, n_in, n_i, n_f = struct.unpack_from("<4I", data, off)
            head, size = 16, 16 + 4 * (n_in + n_i + n_f)
        out.append(Record(off, typ, n_in, n_i, off + head + 4 * n_in))
        off += size
    return out


def with_crc(body: bytes) -> bytes:
    """``body`` (a file without its CRC) with its CRC-32 appended."""
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def patched(data: bytes, at: int, fmt: str, value: float) -> bytes:
    """``data`` with the field at byte ``at`` set (``struct`` format ``fmt``), CRC fixed."""
    b = bytearray(data[:-4])
    struct.pack_into(fmt, b, at, value)
    return with_crc(bytes(b))


def assert_loader_refuses(
    cbuild: Path, tmp_path: Path, good: dict[str, bytes], cases: dict[str, tuple[bytes, str]]
) -> None:
    """Each case's file is refused at load with a message containing its text, and the
    ASan/UBSan load check runs over all of them and the ``good`` files (which it runs
    forward) without a finding."""
    files = []
    for name, data in good.items():
        files.append(tmp_path / f"{name}.kwsn")
        files[-1].write_bytes(data)
    for name, (bad, message) in cases.items():
        (tmp_path / f"{name}.kwsn").write_bytes(bad)
        files.append(tmp_path / f"{name}.kwsn")
        with pytest.raises(CRuntimeError) as exc:
            CModel(tmp_path / f"{name}.kwsn")
        assert message in str(exc.value), (name, str(exc.value))
    proc = subprocess.run(
        [str(cbuild / "load_check_san"), *map(str, files)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    for f in files[: len(good)]:
        assert f"{f}: ok" in proc.stdout
    assert "runtime error" not in proc.stderr


# ------------------------------------------------------------------ the C header (MCU build)

# A static layer table and arena (no malloc, no file system in the model path); logits of
# each KWSN_MODEL_INPUT_LEN floats from stdin, one row each (-DMCU_PRINT_ARGMAX: the class
# by kwsn_argmax first). An int8 header (KWSN_MODEL_INPUT_Q) is loaded with its quantiser.
MCU_MAIN = r"""
#include <stdio.h>
#include "model.h"
static uint64_t store[KWSN_MODEL_STORAGE_WORDS];
static float arena[KWSN_MODEL_ARENA_BYTES / sizeof(float)] __attribute__((aligned(64)));
static float x[KWSN_MODEL_INPUT_LEN];
int main(void) {
    kwsn_model *m = NULL;
#ifdef KWSN_MODEL_INPUT_Q
    kwsn_status st = kwsn_model_from_table_q(kwsn_model_layers, KWSN_MODEL_N_LAYERS,
                                             kwsn_model_input, KWSN_MODEL_SAMPLE_RATE,
                                             KWSN_MODEL_INPUT_Q, store, sizeof(store), NULL, &m);
#else
    kwsn_status st = kwsn_model_from_table(kwsn_model_layers, KWSN_MODEL_N_LAYERS,
                                           kwsn_model_input, KWSN_MODEL_SAMPLE_RATE, store,
                                           sizeof(store), NULL, &m);
#endif
    if (st != KWSN_OK) { fprintf(stderr, "%s\n", kwsn_status_str(st)); return 1; }
    if (kwsn_arena_bytes(m) != sizeof(arena)) { fprintf(stderr, "arena mismatch\n"); return 1; }
    float logits[64];
    while (fread(x, sizeof(float), KWSN_MODEL_INPUT_LEN, stdin) == KWSN_MODEL_INPUT_LEN) {
        st = kwsn_forward(m, arena, sizeof(arena), x, KWSN_MODEL_INPUT_LEN, logits, 64);
        if (st != KWSN_OK) { fprintf(stderr, "%s\n", kwsn_status_str(st)); return 1; }
#ifdef MCU_PRINT_ARGMAX
        printf("%u", kwsn_argmax(logits, kwsn_n_classes(m)));
#endif
        for (size_t i = 0; i < kwsn_n_classes(m); i++) printf(" %.9g", logits[i]);
        printf("\n");
    }
    return 0;
}
"""

# -Werror and plain C loops (no vector extensions): what an MCU compiles
MCU_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-DKWSN_NO_VECTOR_EXT")


def write_model_files(graph: Graph, x: torch.Tensor, directory: Path, dtype: str) -> Path:
    """``directory``/model.h (the C header) and m.kwsn (the file model) of ``graph``, float32
    or int8 (calibrated on ``x``); the .kwsn path."""
    from kwsnet.export.c_header import graph_header_text, int8_header_text

    if dtype == "int8":
        q = write_int8(graph, [x], directory / "m.kwsn")
        (directory / "model.h").write_text(int8_header_text(q, graph))
    else:
        (directory / "model.h").write_text(graph_header_text(graph))
        write_graph(graph, directory / "m.kwsn")
    return directory / "m.kwsn"


def compile_mcu(directory: Path, frontend: bool = True, cflags: Sequence[str] = MCU_CFLAGS) -> Path:
    """``MCU_MAIN`` and ``directory``/model.h compiled with the runtime core only (the model
    and kernels, and with ``frontend`` the front end; never kwsn_file.c's malloc + stdio
    loader); the executable."""
    (directory / "main.c").write_text(MCU_MAIN)
    src = CNATIVE_DIR / "src"
    cmd = ["gcc", *cflags]
    cmd += ["-I", str(CNATIVE_DIR / "include"), "-I", str(src), "-I", str(directory)]
    cmd += [str(directory / "main.c"), str(src / "kwsn_model.c"), str(src / "kwsn_kernels.c")]
    if frontend:
        cmd.append(str(src / "kwsn_frontend.c"))
    cmd += ["-o", str(directory / "mcu"), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return directory / "mcu"


def run_mcu(exe: Path, x: np.ndarray, timeout: float | None = None) -> list[list[str]]:
    """The MCU build's output rows (split) for the float32 rows of ``x``."""
    proc = subprocess.run(
        [str(exe)], input=x.astype("<f4").tobytes(), capture_output=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    return [line.split() for line in proc.stdout.decode().splitlines()]


def assert_mcu_matches_file_model(
    directory: Path, x: np.ndarray, model_file: Path, timeout: float | None = None
) -> None:
    """``directory``/model.h as an MCU build (``compile_mcu``): its logits for ``x`` equal
    the file model's bit for bit (int8: the dequantised codes)."""
    rows = np.array(run_mcu(compile_mcu(directory), x, timeout), np.float32)
    with CModel(model_file) as cm:
        np.testing.assert_array_equal(rows, cm.forward(x))


# ------------------------------------------------------------------ a trained checkpoint


def fit_learnable(tmp_path: Path, config: str, overrides: list[str], epochs: int) -> Path:
    """``configs/<config>`` with ``overrides`` fitted on the learnable synthetic corpus (data
    under ``tmp_path``/data, the run under ``tmp_path``/run; lr 0.01); its last checkpoint.
    Skips without gcc and make (the parity that follows needs them)."""
    from kwsnet.cli import main

    from .conftest import LEARNABLE_SAMPLES, LEARNABLE_SYNTHETIC, QUIET_FIT

    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed for parity")
    root = tmp_path / "run"
    main(["fit", "--config", str(REPO / "configs" / config), *QUIET_FIT,
          "--data.source_options", LEARNABLE_SYNTHETIC,
          "--data.clip_samples", str(LEARNABLE_SAMPLES),
          "--data.batch_size", "8",
          "--data.root", str(tmp_path / "data"),
          *overrides,
          "--model.optimizer.init_args.lr", "0.01",
          "--trainer.max_epochs", str(epochs),
          "--trainer.default_root_dir", str(root),
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    return root / "checkpoints" / "last.ckpt"


def assert_parity_and_export(
    ckpt: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    layers_ok: Callable[[list[str]], bool],
) -> None:
    """A ``fit_learnable`` checkpoint: `kwsnet parity --per_layer` (float: N/N, the class
    floor passed, ``layers_ok`` of the per-layer table's rows) and `--dtype int8` (every logit
    code identical), then `kwsnet export` to every C target: ``tmp_path``/m.kwsn (format 2),
    m.h, m8.kwsn (format 3) and m8.h."""
    from kwsnet.cli import main

    data = ["--data.root", str(tmp_path / "data")]
    capsys.readouterr()
    rc = main(["parity", "--ckpt_path", str(ckpt), *data, "--per_layer"])
    text = capsys.readouterr().out
    assert rc == 0, text
    lines = text.splitlines()
    n = int(lines[0].split("/")[1].split()[0])
    assert n > 0 and lines[0].startswith(f"{n}/{n} predictions identical"), text
    assert "class floor passed" in lines[1], text
    layer_rows = [ln for ln in lines if ln.strip().startswith("layer")]
    assert layers_ok(layer_rows), text
    rc = main(["parity", "--ckpt_path", str(ckpt), *data, "--dtype", "int8", "--calibration", "32"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert text.startswith(f"int8 parity: logits identical on {n}/{n} clips"), text
    common = ["export", "--ckpt_path", str(ckpt), *data]
    targets = [("cnative", "float32", "m.kwsn"), ("c-header", "float32", "m.h"),
               ("cnative", "int8", "m8.kwsn"), ("c-header", "int8", "m8.h")]  # fmt: skip
    for fmt, dtype, name in targets:
        out = tmp_path / name
        extra = ["--dtype", "int8", "--calibration", "32"] if dtype == "int8" else []
        assert main([*common, "--format", fmt, *extra, "--out", str(out)]) == 0, name
        assert out.stat().st_size > 0
    assert (tmp_path / "m.kwsn").read_bytes()[4:8] == struct.pack("<I", 2)
    assert (tmp_path / "m8.kwsn").read_bytes()[4:8] == struct.pack("<I", 3)
