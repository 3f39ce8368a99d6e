"""ctypes binding to the C runtime (``libkwsnet.so``), for parity checks and benchmarks.
Builds the library with ``make`` when it is missing.

The sources are the checkout's ``cnative/`` (also under an editable install), else the copy a
wheel installs as ``kwsnet/_cnative/`` (``kwsnet.resources.cnative_source_dir``). The build
goes to ``cnative/build`` in a writable checkout, as ``make -C cnative`` does; an installed
copy (or a read-only checkout) builds into the user cache instead,
``$XDG_CACHE_HOME/kwsnet/cnative-<version>-<source hash>/`` (``~/.cache`` by default), through
the Makefile's ``BUILD=`` (``cnative_build_dir``).

The default build is portable (any x86-64): the library carries baseline, AVX2 and AVX-512
kernels and picks one at load by cpuid (``KWSN_ISA=default|avx2|avx512`` forces one); all
give byte-identical logits. ``CModel`` loads under op-count and arena limits, so a hostile
model file raises ``CRuntimeError`` instead of hanging or allocating gigabytes."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from kwsnet._version import __version__
from kwsnet.errors import KwsnetUserError
from kwsnet.resources import cnative_source_dir

__all__ = [
    "ABI_VERSION",
    "CNATIVE_DIR",
    "CRuntimeError",
    "CRuntimeUnavailableError",
    "CModel",
    "build_cnative",
    "cnative_build_dir",
    "cpu_flags",
    "load_library",
]

# The C sources (the Makefile's folder): the checkout's cnative/, else the installed copy.
CNATIVE_DIR = cnative_source_dir()
_c_size = ctypes.c_size_t
_c_u32 = ctypes.c_uint32
_c_vp = ctypes.c_void_p
_c_u64 = ctypes.c_uint64
ABI_VERSION = 7  # KWSN_ABI_VERSION in cnative/include/kwsnet.h
ARENA_ALIGN = 64  # KWSN_ARENA_ALIGN


def cpu_flags() -> set[str]:
    """The CPU feature flags of this machine (``/proc/cpuinfo``; empty where it is absent), to
    tell which of the runtime's kernel paths (``KWSN_ISA``) can run here."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


class _Limits(ctypes.Structure):
    """``kwsn_limits``: 0 in a field means the library's default."""

    _fields_ = [("max_ops", _c_u64), ("max_arena_bytes", _c_size)]


class _QParams(ctypes.Structure):
    """``kwsn_qparams``: ``real = scale * (q - zero_point)``."""

    _fields_ = [("scale", ctypes.c_float), ("zero_point", ctypes.c_int32)]


class CRuntimeError(RuntimeError):
    """A non-OK status from the C runtime (the message is ``kwsn_status_str``)."""


class CRuntimeUnavailableError(KwsnetUserError, CRuntimeError):
    """The C runtime cannot be built or loaded here (no gcc/make, no sources, a ``--lib``
    that is missing or of another ABI): reported by the CLI as one line."""


@lru_cache(maxsize=8)
def _source_hash(cnative_dir: Path) -> str:
    """sha256 (12 hex) of the Makefile and every C source and header under ``cnative_dir``
    (not ``build/``): a cache dir is never shared by two versions of the sources."""
    h = hashlib.sha256()
    files = [cnative_dir / "Makefile"]
    for sub in ("include", "src", "tools", "tests"):
        files += sorted((cnative_dir / sub).glob("*.[ch]"))
    for f in files:
        h.update(f.relative_to(cnative_dir).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _writable(cnative_dir: Path) -> bool:
    """Whether ``<cnative_dir>/build`` can be written (made, if it does not exist)."""
    build = cnative_dir / "build"
    target = build if build.exists() else cnative_dir
    return os.access(target, os.W_OK | os.X_OK)


def cnative_build_dir(cnative_dir: Path | None = None) -> Path:
    """Where ``build_cnative`` builds the C runtime from the sources in ``cnative_dir``
    (default ``CNATIVE_DIR``) and ``load_library`` finds ``libkwsnet.so``.

    ``<cnative_dir>/build`` for a source tree that is not the installed package data and can
    be written (a checkout: ``make -C cnative`` builds there too); else
    ``$XDG_CACHE_HOME/kwsnet/cnative-<version>-<source hash>`` (``~/.cache`` when
    ``XDG_CACHE_HOME`` is unset or not absolute), so a wheel installed in a read-only (or any)
    ``site-packages`` is never written to.
    """
    cnative_dir = Path(cnative_dir or CNATIVE_DIR)
    installed = cnative_dir.resolve() == (Path(__file__).resolve().parents[1] / "_cnative")
    if not installed and _writable(cnative_dir):
        return cnative_dir / "build"
    cache = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return root / "kwsnet" / f"cnative-{__version__}-{_source_hash(cnative_dir)}"


def build_cnative(
    target: str = "all", cnative_dir: Path = CNATIVE_DIR, build_dir: Path | None = None
) -> Path:
    """Run ``make -C <cnative_dir> <target>``, building into ``build_dir`` (default
    ``cnative_build_dir(cnative_dir)``, passed as the Makefile's ``BUILD=`` when it is not
    ``<cnative_dir>/build``); returns the build directory.

    Processes that build at once (two exports, parallel test workers) take turns: an exclusive
    ``flock`` on ``<build>/.lock`` is held around ``make``, which would otherwise let one
    process link or load an object file another is still writing.
    """
    import fcntl

    if shutil.which("make") is None or shutil.which("gcc") is None:
        raise CRuntimeUnavailableError("building the C runtime needs make and gcc on PATH")
    if not (cnative_dir / "Makefile").exists():
        raise CRuntimeUnavailableError(
            f"no cnative sources at {cnative_dir} (needs a source checkout)"
        )
    build = Path(build_dir) if build_dir is not None else cnative_build_dir(cnative_dir)
    cmd = ["make", "-s", "-C", str(cnative_dir), target]
    if build.resolve() != (cnative_dir / "build").resolve():
        cmd.append(f"BUILD={build.resolve()}")
    try:
        build.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CRuntimeUnavailableError(
            f"cannot create the C runtime's build folder {build}: {exc}"
        ) from exc
    with open(build / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CRuntimeError(f"{' '.join(cmd[2:])} failed:\n{proc.stderr}")
    return build


def load_library(lib: str | Path | None = None) -> ctypes.CDLL:
    """Open libkwsnet.so (``lib``, or the one in ``cnative_build_dir()``, built on demand) and
    declare its API."""
    path = Path(lib) if lib else cnative_build_dir() / "libkwsnet.so"
    if not path.exists():
        if lib:
            raise CRuntimeUnavailableError(f"C runtime library {path} does not exist")
        build_cnative()
    so = ctypes.CDLL(str(path))
    if not hasattr(so, "kwsn_abi_version"):
        raise CRuntimeUnavailableError(
            f"{path} predates the versioned ABI; rebuild it (make -C cnative)"
        )
    so.kwsn_abi_version.restype = _c_u32
    so.kwsn_abi_version.argtypes = []
    if so.kwsn_abi_version() != ABI_VERSION:
        raise CRuntimeUnavailableError(
            f"{path} has ABI {so.kwsn_abi_version()}, this binding expects {ABI_VERSION}; "
            "rebuild it (make -C cnative)"
        )
    so.kwsn_status_str.restype = ctypes.c_char_p
    so.kwsn_status_str.argtypes = [ctypes.c_int]
    so.kwsn_load_file.restype = ctypes.c_int
    so.kwsn_load_file.argtypes = [ctypes.c_char_p, ctypes.POINTER(_c_vp)]
    so.kwsn_load_file_ex.restype = ctypes.c_int
    so.kwsn_load_file_ex.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(_Limits),
        ctypes.POINTER(_c_vp),
    ]
    so.kwsn_load_file_why.restype = ctypes.c_int
    so.kwsn_load_file_why.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(_Limits),
        ctypes.POINTER(_c_vp),
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    so.kwsn_default_limits.restype = _Limits
    so.kwsn_default_limits.argtypes = []
    so.kwsn_model_ops.restype = _c_u64
    so.kwsn_model_ops.argtypes = [_c_vp]
    so.kwsn_layer_ops.restype = _c_u64
    so.kwsn_layer_ops.argtypes = [_c_vp, _c_u32]
    so.kwsn_isa_name.restype = ctypes.c_char_p
    so.kwsn_isa_name.argtypes = [_c_vp]
    so.kwsn_loaded_model.restype = _c_vp
    so.kwsn_loaded_model.argtypes = [_c_vp]
    so.kwsn_free.restype = None
    so.kwsn_free.argtypes = [_c_vp]
    for fn in ("kwsn_arena_bytes", "kwsn_input_len", "kwsn_weight_bytes", "kwsn_n_classes"):
        getattr(so, fn).restype = _c_size
        getattr(so, fn).argtypes = [_c_vp]
    so.kwsn_n_layers.restype = _c_u32
    so.kwsn_n_layers.argtypes = [_c_vp]
    so.kwsn_layer_out_len.restype = _c_size
    so.kwsn_layer_out_len.argtypes = [_c_vp, _c_u32]
    so.kwsn_layer_type_at.restype = _c_u32
    so.kwsn_layer_type_at.argtypes = [_c_vp, _c_u32]
    so.kwsn_layer_name.restype = ctypes.c_char_p
    so.kwsn_layer_name.argtypes = [_c_u32]
    so.kwsn_forward_until.restype = ctypes.c_int
    so.kwsn_forward_until.argtypes = [_c_vp, _c_vp, _c_size, _c_vp, _c_size, _c_u32, _c_vp, _c_size]
    so.kwsn_forward_batch.restype = ctypes.c_int
    # model, arena, arena_bytes, input, n_rows, input_len, n_run, out, out_stride
    batch_args = [
        _c_vp,
        _c_vp,
        _c_size,
        _c_vp,
        _c_size,
        _c_size,
        _c_u32,
        _c_vp,
        _c_size,
    ]
    so.kwsn_forward_batch.argtypes = batch_args
    so.kwsn_is_int8.restype = ctypes.c_int
    so.kwsn_is_int8.argtypes = [_c_vp]
    so.kwsn_layer_qparams.restype = ctypes.c_int
    so.kwsn_layer_qparams.argtypes = [_c_vp, _c_u32, ctypes.POINTER(_QParams)]
    so.kwsn_input_qparams.restype = ctypes.c_int
    so.kwsn_input_qparams.argtypes = [_c_vp, ctypes.POINTER(_QParams)]
    so.kwsn_forward_codes_batch.restype = ctypes.c_int
    so.kwsn_forward_codes_batch.argtypes = batch_args
    so.kwsn_forward_features.restype = ctypes.c_int
    # model, arena, arena_bytes, features, n_features, logits, logits_cap
    so.kwsn_forward_features.argtypes = [_c_vp, _c_vp, _c_size, _c_vp, _c_size, _c_vp, _c_size]
    so.kwsn_tables_bytes.restype = _c_size
    so.kwsn_tables_bytes.argtypes = [_c_vp]
    so.kwsn_model_set_tables.restype = ctypes.c_int
    so.kwsn_model_set_tables.argtypes = [_c_vp, _c_vp, _c_size]
    return so


class CModel:
    """A model file loaded into the C runtime.

    Args:
        path: the ``.kwsn`` file.
        lib: path to libkwsnet.so (default: ``cnative_build_dir()``'s, built if missing).
        max_ops: refuse a model whose forward pass costs more operations (default: the
            library's ``KWSN_DEFAULT_MAX_OPS``).
        max_arena_bytes: refuse a model whose arena is bigger (default
            ``KWSN_DEFAULT_MAX_ARENA_BYTES``). Both are checked at load, before allocating.

    ``forward(x [N, T]) -> logits [N, n_classes]``; ``forward_until(x, i)`` returns layer
    ``i - 1``'s output ``[N, numel]`` (``i = 0`` returns the input). A batch is one C call
    (``kwsn_forward_batch``). ``ops`` / ``layer_ops`` are the prepared op counts per sample,
    ``isa`` the kernel path (``default``, ``avx2``, ``avx512``).

    An int8 model (format 3, ``is_int8``) takes the same float input; ``forward`` returns its
    dequantised outputs ``(q - zp) * scale`` and ``forward_codes(x, n_run)`` the int8 codes;
    ``qparams(i)`` is layer ``i``'s output ``(scale, zero_point)``, ``input_qparams()`` the
    input quantiser (``None`` when a front end reads the float audio).

    ``tables_bytes``: the memory of the tables the loader built once (int8 conv weights packed
    for the kernel path, the front end's twiddles and filter ranges; ``kwsn_tables_bytes``);
    ``drop_tables()`` makes the model build them on every call instead (the same bits: for
    tests and benchmarks).
    """

    def __init__(
        self,
        path: str | Path,
        lib: str | Path | None = None,
        *,
        max_ops: int | None = None,
        max_arena_bytes: int | None = None,
    ) -> None:
        self._so = load_library(lib)
        handle = _c_vp()
        limits = _Limits(max_ops or 0, max_arena_bytes or 0)
        why = ctypes.create_string_buffer(256)
        st = self._so.kwsn_load_file_why(
            str(path).encode(), ctypes.byref(limits), ctypes.byref(handle), why, len(why)
        )
        if st != 0:
            detail = why.value.decode(errors="replace")
            tail = f": {detail}" if detail else ""
            raise CRuntimeError(f"{path}: {self.status_str(st)}{tail}")
        self._handle = handle
        self._model = self._so.kwsn_loaded_model(handle)
        self.n_layers = int(self._so.kwsn_n_layers(self._model))
        self.input_len = int(self._so.kwsn_input_len(self._model))
        self.n_classes = int(self._so.kwsn_n_classes(self._model))
        self.arena_bytes = int(self._so.kwsn_arena_bytes(self._model))
        self.weight_bytes = int(self._so.kwsn_weight_bytes(self._model))
        self.layer_names = [
            self._so.kwsn_layer_name(self._so.kwsn_layer_type_at(self._model, i)).decode()
            for i in range(self.n_layers)
        ]
        self.ops = int(self._so.kwsn_model_ops(self._model))
        self.layer_ops = [
            int(self._so.kwsn_layer_ops(self._model, i)) for i in range(self.n_layers)
        ]
        self.isa = self._so.kwsn_isa_name(self._model).decode()
        self.is_int8 = bool(self._so.kwsn_is_int8(self._model))
        self.tables_bytes = int(self._so.kwsn_tables_bytes(self._model))
        # kwsn_forward wants a 64-byte-aligned arena; numpy promises 16
        self._arena_buf = np.zeros(self.arena_bytes // 4 + ARENA_ALIGN, dtype=np.float32)
        skip = (-self._arena_buf.ctypes.data % ARENA_ALIGN) // 4
        self._arena = self._arena_buf[skip:]
        # One arena per model; ctypes releases the GIL during the C call, so concurrent
        # forward() calls from threads would share it. They are serialised instead.
        self._lock = threading.Lock()

    def drop_tables(self) -> None:
        """Run without the prebuilt tables from now on (``kwsn_model_set_tables(NULL)``)."""
        with self._lock:
            st = self._so.kwsn_model_set_tables(self._model, None, 0)
        if st != 0:
            raise CRuntimeError(f"kwsn_model_set_tables: {self.status_str(st)}")

    def status_str(self, status: int) -> str:
        """The runtime's message for a status code."""
        return self._so.kwsn_status_str(status).decode()

    def out_len(self, n_run: int) -> int:
        """Floats produced by running the first ``n_run`` layers."""
        if n_run == 0:
            return self.input_len
        return int(self._so.kwsn_layer_out_len(self._model, n_run - 1))

    def forward_until(self, x: np.ndarray, n_run: int) -> np.ndarray:
        """Run layers ``[0, n_run)`` on every row of ``x [N, ...]``; returns ``[N, numel]``."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
        n_out = self.out_len(n_run)
        out = np.empty((len(x), n_out), dtype=np.float32)
        with self._lock:
            self._run_rows(x, n_run, out, n_out)
        return out

    def _run_rows(self, x: np.ndarray, n_run: int, out: np.ndarray, n_out: int) -> None:
        self._batch(self._so.kwsn_forward_batch, x, n_run, out, n_out)

    def _batch(
        self, fn: Callable[..., int], x: np.ndarray, n_run: int, out: np.ndarray, n_out: int
    ) -> None:
        """One ``kwsn_forward_batch``-shaped call (float or int8 ``out``) on every row of
        ``x [N, input_len]``; the caller holds the lock."""
        if len(x) == 0:
            return
        st = fn(
            self._model,
            self._arena.ctypes.data,
            self.arena_bytes,
            x.ctypes.data,
            len(x),
            x.shape[1],
            n_run,
            out.ctypes.data,
            n_out,
        )
        if st != 0:
            raise CRuntimeError(self.status_str(st))

    def input_qparams(self) -> tuple[float, int] | None:
        """The input quantiser ``(scale, zero_point)`` of an int8 model, else ``None``."""
        q = _QParams()
        if self._so.kwsn_input_qparams(self._model, ctypes.byref(q)) != 0:
            return None
        return float(q.scale), int(q.zero_point)

    def qparams(self, i: int) -> tuple[float, int]:
        """Layer ``i``'s output ``(scale, zero_point)`` (int8 models only)."""
        q = _QParams()
        st = self._so.kwsn_layer_qparams(self._model, i, ctypes.byref(q))
        if st != 0:
            raise CRuntimeError(f"layer {i}: {self.status_str(st)} (not an int8 layer)")
        return float(q.scale), int(q.zero_point)

    def forward_codes(self, x: np.ndarray, n_run: int | None = None) -> np.ndarray:
        """int8 codes ``[N, numel]`` of layer ``n_run - 1`` (default: the last; ``0``: the
        input codes) for every row of ``x [N, ...]``, in one C call."""
        n_run = self.n_layers if n_run is None else n_run
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
        n_out = self.out_len(n_run)
        out = np.empty((len(x), n_out), dtype=np.int8)
        with self._lock:
            self._batch(self._so.kwsn_forward_codes_batch, x, n_run, out, n_out)
        return out

    def forward_features(self, features: np.ndarray) -> np.ndarray:
        """Logits ``[n_classes]`` from layer 0's output ``features`` (a FrontEnd model's
        ``[n_out, frames]``, any shape with that many values): ``kwsn_forward_features``.

        Raises:
            CRuntimeError: the runtime's status (bad argument: layer 0 is no FrontEnd; input
                length: another feature count).
        """
        f = np.ascontiguousarray(np.asarray(features, dtype=np.float32).reshape(-1))
        out = np.empty(self.n_classes, dtype=np.float32)
        with self._lock:
            st = self._so.kwsn_forward_features(
                self._model,
                self._arena.ctypes.data,
                self.arena_bytes,
                f.ctypes.data,
                f.size,
                out.ctypes.data,
                out.size,
            )
        if st != 0:
            raise CRuntimeError(f"kwsn_forward_features: {self.status_str(st)}")
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits ``[N, n_classes]`` for inputs ``[N, T]``."""
        return self.forward_until(x, self.n_layers)

    def close(self) -> None:
        """Free the C model (also done on garbage collection)."""
        if getattr(self, "_handle", None):
            self._so.kwsn_free(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> CModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
