"""The C log-mel / MFCC front end (cnative/src/kwsn_frontend.c) against kwsnet's LogMel / MFCC.

Tolerances (float32 everywhere; torch's STFT is float32 too, so the two sides differ by
rounding of the same order, and the references below say which side is "exact"):

- FFT: ``|sqrt(P_c) - |rfft64||`` <= ``FFT_RTOL`` * max |rfft64| over the frame, against
  ``torch.fft.rfft`` in float64 of the same windowed frame.
- log-mel: ``|log_c - log_torch|`` <= ``LOG_ATOL`` where the reference mel energy is above
  ``FLOOR_REL`` * the clip's max mel energy. Below that, both sides' float32 FFT rounding
  (about 1e-7 of the frame's largest magnitude, squared into the power) is no longer small
  against the band's own energy, and the log magnifies it (up to 1e-3 and more in a chirp's
  empty bands, or in the zero padding of a real clip, where mel + eps is eps plus rounding);
  there the comparison is in the linear domain: ``|exp(log_c) - exp(log_torch)|`` <=
  ``LIN_RTOL`` * max mel + ``LIN_EPS_RTOL`` * eps.
- normalisation and DCT: checked exactly against numpy float64 applied to the C log-mel
  (``NORM_ATOL``), and against torch end to end on the clips where no band sits at the floor.

KWSN_ISA picks the front end's lane width (4 / 8 / 16 frames at once on default / avx2 /
avx512); every width gives the bytes of the plain-C one-frame build (checked per path, log-mel,
MFCC and an int8 model, frame counts that leave partial batches), and byte identity is also
checked across compilers and flags that would contract FMAs or vectorise if the pragmas did
not hold.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from kwsnet.data.audio import fit_length, read_audio
from kwsnet.data.features import MFCC, LogMel
from kwsnet.export.frontend import (
    NORMALIZE_CODES,
    CFrontend,
    FrontendTables,
    frontend_tables,
)
from kwsnet.export.layers import ExportError
from kwsnet.export.runtime import CNATIVE_DIR, build_cnative, cpu_flags

FFT_RTOL = 1e-6
LOG_ATOL = 1e-5
FLOOR_REL = 1e-3
LIN_RTOL = 1e-6
LIN_EPS_RTOL = 1e-6
NORM_ATOL = 2e-6
SR = 16000

# small n_fft with 40 mels leaves empty filters, which torchaudio warns about
pytestmark = pytest.mark.filterwarnings("ignore:At least one mel filterbank has all zero")

SHARED_SC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech_commands_tts"


def _status_codes() -> dict[str, int]:
    """``KWSN_*`` status values, read from the kwsn_status enum in cnative/include/kwsnet.h."""
    text = (CNATIVE_DIR / "include" / "kwsnet.h").read_text()
    body = re.search(r"typedef enum \{(.*?)\} kwsn_status;", text, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    codes, value = {}, -1
    for item in body.split(","):
        m = re.match(r"\s*KWSN_(\w+)\s*(?:=\s*(\d+))?\s*$", item)
        if m:
            value = int(m.group(2)) if m.group(2) else value + 1
            codes[m.group(1)] = value
    return codes


@pytest.fixture(scope="module")
def lib() -> Path:
    """Build libkwsnet.so (skip without a toolchain); the kwsn_frontend_* symbols are exported."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make and gcc are needed to build cnative")
    return build_cnative("all") / "libkwsnet.so"


def _noise(n: int = SR, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


def _chirp(n: int = SR) -> np.ndarray:
    """A linear chirp from 50 Hz to 7.9 kHz at amplitude 0.5."""
    t = np.arange(n) / SR
    f0, f1 = 50.0, 7900.0
    return (0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1])))).astype(np.float32)


def _clipping(n: int = SR) -> np.ndarray:
    """Loud noise plus a tone, hard-clipped at +-0.999 (near-full-scale 16-bit audio)."""
    t = np.arange(n) / SR
    x = 0.9 * np.sin(2 * np.pi * 440.0 * t) + _noise(n, seed=3, scale=0.5)
    return np.clip(x, -0.999, 0.999).astype(np.float32)


SIGNALS = {"noise": _noise, "chirp": _chirp, "clipping": _clipping}


def _torch(frontend: LogMel, wave: np.ndarray) -> np.ndarray:
    """kwsnet's features of one utterance, ``[frames, out_dim]``."""
    frontend.eval()
    with torch.no_grad():
        feats, _ = frontend(torch.from_numpy(wave)[None])
    return feats[0].numpy()


def _torch_log_mel(frontend: LogMel, wave: np.ndarray) -> np.ndarray:
    """``LogMel._log_mel`` (before DCT and normalisation), ``[frames, n_mels]``."""
    with torch.no_grad():
        return frontend._log_mel(torch.from_numpy(wave)[None])[0].numpy()


def _raw_tables(frontend: LogMel) -> FrontendTables:
    """``frontend``'s tables as plain log-mel without normalisation (same torchaudio tables)."""
    return replace(frontend_tables(frontend), n_out=frontend.n_mels, normalize=0, dct=None)


def _assert_log_close(c: np.ndarray, ref: np.ndarray, eps: float, what: str) -> float:
    """Assert the log-mel tolerance (see the module docstring); returns max |Δ| above floor."""
    assert c.shape == ref.shape, (what, c.shape, ref.shape)
    mel = np.exp(ref.astype(np.float64))
    above = mel - eps >= FLOOR_REL * mel.max()
    d = np.abs(c.astype(np.float64) - ref)
    assert above.any(), what
    worst = float(d[above].max())
    assert worst <= LOG_ATOL, f"{what}: max |Δlog| {worst:.3g} above the floor"
    lin = np.abs(np.exp(c.astype(np.float64)) - mel)
    lin_tol = LIN_RTOL * mel.max() + LIN_EPS_RTOL * eps
    assert lin.max() <= lin_tol, f"{what}: max |Δmel| {lin.max():.3g} > {lin_tol:.3g}"
    return worst


def _normalise64(x: np.ndarray, mode: str) -> np.ndarray:
    """LogMel.forward's normalisation over frames of ``x [frames, F]``, float64."""
    x = x.astype(np.float64)
    if mode == "none":
        return x
    x = x - x.mean(axis=0, keepdims=True)
    if mode == "meanvar":
        x = x / (np.sqrt((x**2).mean(axis=0, keepdims=True)) + 1e-5)
    return x


# (n_fft, win_length, hop, center): the shipped 480, powers of two, 400, odd and prime sizes
FFT_CONFIGS = [
    (480, 480, 160, True),
    (400, 400, 160, True),
    (512, 400, 160, True),
    (256, 256, 128, False),
    (243, 200, 100, True),
    (98, 98, 49, True),  # M = 49 = 7 * 7: the generic-prime butterfly
    (106, 90, 53, False),  # M = 53, prime
    (121, 121, 37, True),  # odd, 11 * 11
    (64, 50, 16, True),
]


@pytest.mark.parametrize("n_fft", [480, 400, 512, 256, 243, 98, 106, 121, 2, 3])
def test_fft_power_matches_float64_rfft(lib: Path, n_fft: int) -> None:
    """The C power spectrum of one windowed frame against float64 torch.fft.rfft."""
    win = n_fft - n_fft // 5
    fe = LogMel(n_fft=n_fft, win_length=win, n_mels=min(40, n_fft // 2 + 1))
    tables = frontend_tables(fe)
    cf = CFrontend(tables, lib)
    for frame in (_noise(n_fft, seed=n_fft), _chirp(n_fft), _clipping(n_fft)):
        spec = torch.fft.rfft(torch.from_numpy(frame * tables.window).double())
        ref = spec.abs().numpy()
        got = np.sqrt(cf.power(frame).astype(np.float64))
        err = np.abs(got - ref).max()
        assert err <= FFT_RTOL * ref.max(), (n_fft, err / ref.max())


@pytest.mark.kernel_path
@pytest.mark.parametrize("n_fft,win_length,hop,center", FFT_CONFIGS)
@pytest.mark.parametrize("signal", sorted(SIGNALS))
def test_log_mel_matches_torchaudio(
    lib: Path, n_fft: int, win_length: int, hop: int, center: bool, signal: str
) -> None:
    """log(mel + eps) of whole clips, every framing, C vs LogMel._log_mel (torchaudio)."""
    n_mels = min(40, n_fft // 2 + 1)
    fe = LogMel(n_fft=n_fft, win_length=win_length, hop_length=hop, n_mels=n_mels, center=center)
    wave = SIGNALS[signal](SR // 4)
    c = CFrontend(frontend_tables(fe), lib)(wave)
    ref = _torch_log_mel(fe, wave)
    _assert_log_close(c, ref, fe.eps, f"{signal} n_fft={n_fft}")
    frame = wave[:n_fft]
    single = CFrontend(frontend_tables(fe), lib).log_mel(frame)
    if not center:  # the first frame of an uncentred clip is wave[:n_fft]
        assert np.array_equal(single, c[0])


@pytest.mark.parametrize("normalize", ["none", "mean", "meanvar"])
@pytest.mark.parametrize("kind", ["logmel", "mfcc13", "mfcc40"])
def test_normalise_and_dct(lib: Path, normalize: str, kind: str) -> None:
    """DCT and normalisation: C exactly as numpy float64 applied to the C log-mel, and C vs
    LogMel / MFCC end to end on noise and clipping audio (no band at the floor)."""
    if kind == "logmel":
        fe = LogMel(n_fft=480, win_length=480, normalize=normalize)
    else:
        fe = MFCC(n_mfcc=int(kind[4:]), n_fft=480, win_length=480, normalize=normalize)
    tables = frontend_tables(fe)
    raw = CFrontend(_raw_tables(fe), lib)
    cf = CFrontend(tables, lib)
    for name in ("noise", "clipping"):
        wave = SIGNALS[name]()
        c = cf(wave)
        lm = raw(wave).astype(np.float64)
        if tables.dct is not None:
            lm = lm @ tables.dct.astype(np.float64)
        want = _normalise64(lm, normalize)
        scale = max(1.0, np.abs(want).max())
        assert np.abs(c - want).max() <= NORM_ATOL * scale, (name, np.abs(c - want).max())
        ref = _torch(fe, wave)
        assert c.shape == ref.shape
        # MFCC sums 40 log values, each within LOG_ATOL: scale the tolerance with the DCT's
        # largest column sum of |weights|
        gain = 1.0 if tables.dct is None else np.abs(tables.dct).sum(axis=0).max()
        tol = (LOG_ATOL * gain + NORM_ATOL) * (1.0 if normalize != "meanvar" else 1 / ref.std())
        assert np.abs(c - ref).max() <= tol * max(1.0, np.abs(ref).max()), (name, kind)


@pytest.mark.parametrize("normalize", ["none", "mean", "meanvar"])
def test_silence(lib: Path, normalize: str) -> None:
    """All-zero audio: log(eps) in every cell; mean-normalised exactly 0 in C. Torch's float
    sum of 101 equal values is not exact, so its mean leaves a residue of a few ulps of
    log(eps) (3e-6); with meanvar it divides that residue by its std + 1e-5 (~1e-5), giving
    up to 0.22 where the exact answer is 0 (a known difference, only on constant bands: digital
    silence or an all-zero filter), so there only the C side is checked."""
    fe = LogMel(n_fft=480, win_length=480, normalize=normalize)
    c = CFrontend(frontend_tables(fe), lib)(np.zeros(SR, np.float32))
    assert c.shape == (101, 40)
    if normalize == "none":
        assert np.all(c == np.float32(np.log(np.float32(fe.eps))))
        np.testing.assert_array_equal(c, _torch(fe, np.zeros(SR, np.float32)))
    else:
        assert np.all(c == 0.0)
        if normalize == "mean":
            ref = _torch(fe, np.zeros(SR, np.float32))
            assert np.abs(ref).max() <= 4 * abs(np.spacing(np.float32(np.log(fe.eps))))
    mf = MFCC(n_mfcc=13, n_fft=480, win_length=480, normalize=normalize)
    cm = CFrontend(frontend_tables(mf), lib)(np.zeros(SR, np.float32))
    if normalize == "none":
        ref = _torch(mf, np.zeros(SR, np.float32))
        assert np.abs(cm - ref).max() <= 1e-6 * np.abs(ref).max()
    else:
        assert np.all(cm == 0.0)


@pytest.mark.kernel_path
def test_real_clips(lib: Path) -> None:
    """Speech Commands TTS clips (1 s, zero-padded as the dataset pads), the shipped config.

    The log-mel tolerance holds cell by cell above the floor; the zero padding and the quiet
    edges put cells at 1e-8 of the clip's peak, where both sides' rounding gives |Δlog| up to
    ~1e-3 (7e-4 over all 720 clips, benchmarks/bench_frontend.py --clips 720), so the
    normalised and MFCC outputs (which carry those cells, MFCC mixing all bands) are bounded
    by what the log-mel differences allow: mean normalisation adds at most the mean shift, the
    DCT at most its largest column L1 norm times the log-mel |Δ|."""
    if not SHARED_SC.is_dir():
        pytest.skip(f"{SHARED_SC} is absent: the shared real-audio fixtures are not beside it")
    clips = sorted(SHARED_SC.glob("*/*.wav"))
    clips = [p for p in clips if not p.parent.name.startswith("_")][::61][:12]
    assert clips, f"no clips under {SHARED_SC}"
    fe = LogMel(n_fft=480, win_length=480, hop_length=160, n_mels=40, normalize="mean")
    mf = MFCC(n_mfcc=13, n_fft=480, win_length=480, normalize="mean")
    cf, cmf = CFrontend(frontend_tables(fe), lib), CFrontend(frontend_tables(mf), lib)
    raw = CFrontend(_raw_tables(fe), lib)
    gain = float(np.abs(mf.dct.numpy()).sum(axis=0).max())
    for path in clips:
        wave = fit_length(read_audio(path, SR), SR, random_crop=False).numpy()
        ref_raw = _torch_log_mel(fe, wave)
        c_raw = raw(wave)
        _assert_log_close(c_raw, ref_raw, fe.eps, path.name)
        d_raw = np.abs(c_raw.astype(np.float64) - ref_raw)
        mel = np.exp(ref_raw.astype(np.float64))
        above = mel - fe.eps >= FLOOR_REL * mel.max()
        shift = d_raw.mean(axis=0).max()  # bound on the mean's difference, per band
        c, ref = cf(wave), _torch(fe, wave)
        assert c.shape == ref.shape == (101, 40)
        d = np.abs(c.astype(np.float64) - ref)
        assert d[above].max() <= LOG_ATOL + shift + NORM_ATOL, path.name
        assert d.max() <= d_raw.max() + shift + NORM_ATOL, path.name
        c, ref = cmf(wave), _torch(mf, wave)
        assert c.shape == ref.shape == (101, 13)
        d = np.abs(c.astype(np.float64) - ref)
        assert d.max() <= gain * (d_raw.max() + shift) + NORM_ATOL * gain, path.name


_ISA_FLAG = {"default": None, "avx2": "avx2", "avx512": "avx512f"}


def _dump(so: Path, x: np.ndarray) -> bytes:
    """The C features of ``x`` for two MFCC configs (480 and the odd 243), as bytes."""
    out = b""
    for fe in (
        MFCC(n_mfcc=13, n_fft=480, win_length=480, normalize="meanvar"),
        MFCC(n_mfcc=13, n_fft=243, win_length=200, normalize="mean"),
    ):
        out += CFrontend(frontend_tables(fe), so)(x).tobytes()
    return out


def test_byte_identical_across_isa_and_compilers(
    lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front end does not depend on the kernel path: kwsn_frontend.o references no kernel
    symbol (only libc / libm); KWSN_ISA=default|avx2|avx512 picks its lane width (4 / 8 / 16
    frames at once), which gives the same bytes (checked too).
    And the same bytes come from kwsn_frontend.c built alone by gcc -O0, gcc -O3
    -march=native -ffp-contract=fast, clang -O3 -march=native (the pragmas keep FMA
    contraction and vectorised complex multiplies off) and without the vector lanes (the
    plain-C fallback), linked with the rest of the library."""
    x = _noise(SR, seed=7) + _chirp(SR) * 0.5
    base = _dump(lib, x)
    assert len(base) == 4 * 13 * (101 + 100)
    if shutil.which("nm"):
        nm = subprocess.run(
            ["nm", "-u", str(CNATIVE_DIR / "build" / "kwsn_frontend.o")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        undefined = {line.split()[-1] for line in nm.splitlines() if line.strip()}
        assert not {u for u in undefined if u.startswith("kwsn")}, undefined
    flags = cpu_flags()
    for isa, flag in _ISA_FLAG.items():
        if flag is None or flag in flags:
            monkeypatch.setenv("KWSN_ISA", isa)
            assert _dump(lib, x) == base, isa
    monkeypatch.delenv("KWSN_ISA")
    objs = [o for o in (CNATIVE_DIR / "build").glob("*.o") if o.name != "kwsn_frontend.o"]
    assert objs
    builds = [
        ("gcc", "-O0"),
        ("gcc", "-O3 -march=native -ffp-contract=fast"),
        ("gcc", "-O2 -DKWSN_FE_NO_VECTOR_EXT"),  # one frame per FFT instead of 4-16 lanes
        ("gcc", "-O2 -DKWSN_FE_NO_MULTI_ISA"),  # 4 lanes only (the non-x86 GCC build)
    ]
    if shutil.which("clang"):
        # clang's -ffp-contract=fast ignores pragmas by definition; its default honours them
        builds.append(("clang", "-O3 -march=native"))
    inc = ["-I", str(CNATIVE_DIR / "include"), "-I", str(CNATIVE_DIR / "src")]
    src = str(CNATIVE_DIR / "src" / "kwsn_frontend.c")
    for i, (cc, opt) in enumerate(builds):
        obj, so = tmp_path / f"fe{i}.o", tmp_path / f"lib{i}.so"
        subprocess.run(
            [cc, *opt.split(), "-std=c99", "-fPIC", *inc, "-c", src, "-o", str(obj)], check=True
        )
        subprocess.run(
            ["gcc", "-shared", "-o", str(so), str(obj), *map(str, objs), "-lm"], check=True
        )
        assert _dump(so, x) == base, (cc, opt)


def _tables(**over: object) -> FrontendTables:
    return replace(frontend_tables(MFCC(n_mfcc=8, n_fft=64, win_length=64, n_mels=8)), **over)


def test_check_rejects_bad_parameters(lib: Path) -> None:
    """kwsn_frontend_check's documented statuses (kwsn_frontend.h)."""
    st = _status_codes()
    ok = CFrontend(_tables(), lib)
    assert ok.check(33) == st["OK"] and ok.check(32) == st["ERR_SHAPE"]  # center: n > 32
    nocenter = CFrontend(_tables(center=False), lib)
    assert nocenter.check(64) == st["OK"] and nocenter.check(63) == st["ERR_SHAPE"]
    assert nocenter.frames(64) == 1
    for over in (
        {"n_fft": 0},
        {"n_fft": 1},
        {"hop_length": 0},
        {"n_mels": 0},
        {"n_out": 9},  # more than n_mels
        {"n_out": 7, "dct": None},  # log-mel must output n_mels
        {"normalize": 3},
        {"center": 2},
        {"eps": 0.0},
        {"eps": -1e-6},
    ):
        assert CFrontend(_tables(**over), lib).check(4000) == st["ERR_PARAM"], over
    assert CFrontend(_tables(eps=float("nan")), lib).check(4000) == st["ERR_NONFINITE"]
    for name in ("window", "fbank", "dct"):
        arr = getattr(_tables(), name).copy()
        arr.reshape(-1)[arr.size // 2] = np.nan
        cf = CFrontend(_tables(**{name: arr}), lib)
        assert cf.check(4000) == st["ERR_NONFINITE"], name
        arr.reshape(-1)[arr.size // 2] = np.inf
        assert CFrontend(_tables(**{name: arr}), lib).check(4000) == st["ERR_NONFINITE"], name
    with pytest.raises(Exception, match="kwsn_frontend_check"):
        ok(np.zeros(10, np.float32))


@pytest.mark.parametrize("n_fft,hop,center", [(480, 160, True), (243, 100, True), (106, 53, False)])
def test_frames_and_size_queries(lib: Path, n_fft: int, hop: int, center: bool) -> None:
    """Frames follow torch.stft (odd n_fft included); ops and scratch are bounds that grow
    with the work (the prime size costs more per sample than 480)."""
    fe = LogMel(n_fft=n_fft, win_length=n_fft, hop_length=hop, n_mels=20, center=center)
    cf = CFrontend(frontend_tables(fe), lib)
    for n in (n_fft, n_fft + 1, 4000, 4000 + hop - 1, 16000):
        ref = _torch_log_mel(fe, _noise(n))
        assert cf.frames(n) == ref.shape[0], n
    ops = cf.ops(16000)
    # the dense mel product alone is 2 * n_freqs * n_mels per frame
    assert ops >= cf.frames(16000) * 2 * (n_fft // 2 + 1) * 20
    assert cf.ops(32000) > ops
    assert cf.scratch_floats(16000) >= 2 * n_fft + 2 * n_fft + (n_fft // 2 + 1)


def test_ops_saturate_instead_of_wrapping(lib: Path) -> None:
    """The largest accepted sizes on the longest input count at least the dense mel product's
    operations (the count saturates at 2^64 - 1 rather than wrapping under a limit); fields
    check() refuses count 2^64 - 1. ops() reads only the scalar fields, so tiny tables do.
    check() refuses the 2^32-frame input."""
    big = replace(_tables(), n_fft=65536, n_mels=65536, n_out=65536, hop_length=1, dct=None)
    cf = CFrontend(big, lib)
    n = 2**32 - 1
    assert cf.frames(n) == 2**32 - 1  # saturated: 2^32 frames
    full = replace(
        big,
        n_mels=1,
        n_out=1,
        window=np.ones(65536, np.float32),
        fbank=np.zeros((65536 // 2 + 1, 1), np.float32),
    )
    assert CFrontend(full, lib).check(n) == _status_codes()["ERR_TOO_BIG"]
    dense = 2**32 * 2 * (65536 // 2 + 1) * 65536  # 2^32 frames
    assert cf.ops(n) >= min(dense, 2**64 - 1)
    assert cf.ops(n) == 2**64 - 1
    assert CFrontend(replace(_tables(), hop_length=0), lib).ops(4000) == 2**64 - 1
    assert CFrontend(replace(_tables(), n_fft=1), lib).ops(4000) == 2**64 - 1


@pytest.mark.parametrize("n_fft,center", [(480, True), (243, True), (106, False), (2, False)])
def test_scratch_bound_holds(lib: Path, n_fft: int, center: bool) -> None:
    """Run and frame write nothing past the scratch and output sizes they report (canaries
    after each buffer, at any 4-byte offset)."""
    fe = MFCC(n_mfcc=2, n_fft=n_fft, win_length=n_fft, n_mels=2, center=center)
    cf = CFrontend(frontend_tables(fe), lib)
    so, ref = cf._so, ctypes.byref(cf._fe)
    x = _noise(3000)
    canary = np.float32(-7.25)
    n_scr, n_out = cf.scratch_floats(3000), cf.frames(3000) * 2
    scratch = np.full(n_scr + 33, canary, np.float32)[1:]  # 4-byte, not 8-byte, aligned
    out = np.full(n_out + 32, canary, np.float32)
    so.kwsn_frontend_run(ref, x.ctypes.data, 3000, scratch.ctypes.data, out.ctypes.data)
    assert np.all(scratch[n_scr:] == canary) and np.all(out[n_out:] == canary)
    assert np.isfinite(out[:n_out]).all()
    n_frame = so.kwsn_frontend_frame_scratch_floats(ref)
    assert n_frame <= n_scr
    scratch = np.full(n_frame + 32, canary, np.float32)
    lm = np.full(2 + 32, canary, np.float32)
    so.kwsn_frontend_frame(ref, x.ctypes.data, scratch.ctypes.data, lm.ctypes.data)
    assert np.all(scratch[n_frame:] == canary) and np.all(lm[2:] == canary)


def test_frontend_tables_refuses_what_c_cannot_do() -> None:
    """ExportError names the field; f_min / f_max / any window are fine (they are tables)."""
    t = frontend_tables(LogMel(n_fft=512, win_length=400, f_min=20.0, f_max=7600.0))
    assert t.window.shape == (512,) and not t.window[:56].any() and not t.window[456:].any()
    assert t.fbank.shape == (257, 40) and t.dct is None and t.normalize == NORMALIZE_CODES["none"]
    m = LogMel()
    m.mel.spectrogram.pad_mode = "constant"
    with pytest.raises(ExportError, match="pad_mode"):
        frontend_tables(m)
    m = LogMel()
    m.mel.spectrogram.power = 1.0
    with pytest.raises(ExportError, match="power"):
        frontend_tables(m)
    m = LogMel()
    m.mel.spectrogram.normalized = True
    with pytest.raises(ExportError, match="normalized"):
        frontend_tables(m)

    class Other(LogMel):
        pass

    with pytest.raises(ExportError, match="Other"):
        frontend_tables(Other())
    with pytest.raises(ExportError, match="RawAudio"):
        from kwsnet.data.features import RawAudio

        frontend_tables(RawAudio())


# ------------------------------------------------- the lane widths: 4 / 8 / 16 frames at once

# KWSN_ISA picks the front end's lane width per call (default 4, avx2 8, avx512 16, where the
# CPU has the ISA); each path is compared with the plain-C build (one frame at a time, no
# vector extensions), byte for byte.
_WIDTH_PATHS = {"default": None, "avx2": "avx2", "avx512": "avx512f"}
# (front end, n_samples): frame counts that are no multiple of 16, so every width runs its
# whole batches and a partial one (the rest after 16s goes to 16, 8 or 4 lanes)
_WIDTH_CASES = {
    "logmel_480_101": (
        lambda: LogMel(n_fft=480, win_length=480, hop_length=160, n_mels=40, normalize="mean"),
        SR,  # 101 frames: 6 x 16 + 5
    ),
    "logmel_480_45": (
        lambda: LogMel(n_fft=480, win_length=400, hop_length=160, n_mels=40, normalize="none"),
        44 * 160,  # 45 frames: 2 x 16 + 13
    ),
    "mfcc_480_35": (
        lambda: MFCC(n_mfcc=13, n_fft=480, win_length=480, normalize="meanvar"),
        34 * 160,  # 35 frames: 2 x 16 + 3
    ),
    "mfcc_odd_243_101": (
        lambda: MFCC(n_mfcc=13, n_fft=243, win_length=200, normalize="mean"),
        SR,  # odd n_fft (a length-243 complex FFT per frame), 101 frames
    ),
    "mfcc_256_7": (
        lambda: MFCC(n_mfcc=10, n_fft=256, win_length=256, n_mels=24, normalize="none"),
        6 * 128,  # 7 frames: fewer than one batch of 8 or 16
    ),
}


def _isa_or_skip(isa: str) -> None:
    flag = _WIDTH_PATHS[isa]
    if flag is not None and flag not in cpu_flags():
        pytest.skip(f"this CPU has no {flag} (/proc/cpuinfo): the {isa} width cannot run here")


@pytest.fixture(scope="module")
def plain_lib(lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libkwsnet.so with kwsn_frontend.c built without vector extensions (one frame at a
    time): the reference every lane width must equal."""
    tmp = tmp_path_factory.mktemp("plain_fe")
    objs = [o for o in (CNATIVE_DIR / "build").glob("*.o") if o.name != "kwsn_frontend.o"]
    inc = ["-I", str(CNATIVE_DIR / "include"), "-I", str(CNATIVE_DIR / "src")]
    src = str(CNATIVE_DIR / "src" / "kwsn_frontend.c")
    obj, so = tmp / "fe.o", tmp / "libplain.so"
    cmd = ["gcc", "-O2", "-std=c99", "-fPIC", "-DKWSN_FE_NO_VECTOR_EXT", *inc, "-c", src]
    subprocess.run([*cmd, "-o", str(obj)], check=True)
    subprocess.run(["gcc", "-shared", "-o", str(so), str(obj), *map(str, objs), "-lm"], check=True)
    return so


def _frames_at(cf: CFrontend, x: np.ndarray, t0: int, count: int) -> np.ndarray:
    """kwsn_frontend_prepare once, then kwsn_frontend_frames_at(t0, count): [count, n_out]."""
    so, fe = cf._so, ctypes.byref(cf._fe)
    vp, u32 = ctypes.c_void_p, ctypes.c_uint32
    so.kwsn_frontend_prepare.argtypes = [vp, vp]
    so.kwsn_frontend_prepare.restype = None
    so.kwsn_frontend_frames_at.argtypes = [vp, vp, u32, u32, u32, vp, vp]
    so.kwsn_frontend_frames_at.restype = None
    n = x.shape[0]
    scratch = np.empty(cf.scratch_floats(n), np.float32)
    out = np.empty((count, cf.tables.n_out), np.float32)
    so.kwsn_frontend_prepare(fe, scratch.ctypes.data)
    so.kwsn_frontend_frames_at(fe, x.ctypes.data, n, t0, count, scratch.ctypes.data,
                               out.ctypes.data)  # fmt: skip
    return out


@pytest.mark.parametrize("case", sorted(_WIDTH_CASES))
@pytest.mark.parametrize("isa", sorted(_WIDTH_PATHS))
def test_lane_widths_byte_identical(
    lib: Path, plain_lib: Path, isa: str, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each path's lane width (KWSN_ISA=default: 4, avx2: 8, avx512: 16) gives the plain-C
    build's bytes: kwsn_frontend_run (log-mel and MFCC, even and odd n_fft, frame counts that
    leave a partial batch of every size) and kwsn_frontend_frames_at (the stream's frame
    cache) at offsets and counts that cut batches anywhere."""
    _isa_or_skip(isa)
    make, n = _WIDTH_CASES[case]
    tables = frontend_tables(make())
    x = (_noise(n, seed=11) + _chirp(n) * 0.25).astype(np.float32)
    ref = CFrontend(tables, plain_lib)(x)
    assert ref.shape[0] % 16 != 0 and np.isfinite(ref).all()
    monkeypatch.setenv("KWSN_ISA", isa)
    cf = CFrontend(tables, lib)
    assert cf(x).tobytes() == ref.tobytes()
    # prepared once (twiddles, ranges), then run twice on that scratch
    so, fe, vp = cf._so, ctypes.byref(cf._fe), ctypes.c_void_p
    so.kwsn_frontend_run_prepared.argtypes = [vp, vp, ctypes.c_uint32, vp, vp]
    so.kwsn_frontend_run_prepared.restype = None
    so.kwsn_frontend_prepare.argtypes = [vp, vp]
    so.kwsn_frontend_prepare.restype = None
    scratch = np.empty(cf.scratch_floats(n), np.float32)
    so.kwsn_frontend_prepare(fe, scratch.ctypes.data)
    for _ in range(2):
        out = np.empty((tables.n_out, ref.shape[0]), np.float32)
        so.kwsn_frontend_run_prepared(fe, x.ctypes.data, n, scratch.ctypes.data, out.ctypes.data)
        assert out.T.tobytes() == ref.tobytes()
    # frames_at: features before normalisation, frame-major
    raw = CFrontend(replace(tables, normalize=NORMALIZE_CODES["none"]), plain_lib)(x)
    cf_raw = CFrontend(replace(tables, normalize=NORMALIZE_CODES["none"]), lib)
    T = raw.shape[0]
    for t0, count in ((0, T), (1, T - 1), (3, 17), (T - 9, 9), (T - 1, 1)):
        if 0 <= t0 and count > 0 and t0 + count <= T:
            got = _frames_at(cf_raw, x, t0, count)
            assert got.tobytes() == np.ascontiguousarray(raw[t0 : t0 + count]).tobytes(), (
                t0,
                count,
            )


@pytest.mark.parametrize("isa", sorted(_WIDTH_PATHS))
def test_lane_widths_int8_model_byte_identical(
    lib: Path, isa: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An int8 model whose layer 0 is the C front end (test_quant_model's log-mel CnnMel,
    n_fft 256, hop 128, 16 mels, traced for 3700-sample clips: 29 frames, 16 + 13): its
    front-end codes and its logits on each path equal the default path's byte for byte."""
    _isa_or_skip(isa)
    from kwsnet.export.graph import trace_model
    from kwsnet.export.runtime import CModel
    from kwsnet.models.cnn_mel import CnnMel
    from kwsnet.nn.heads import LinearHead
    from kwsnet.quant.format import quant_bytes
    from kwsnet.quant.ptq import calibrate, quantize_graph
    from tests.test_quant_model import _Model, _set_bn_stats

    n = 3700
    torch.manual_seed(0)
    fe = LogMel(n_fft=256, win_length=256, hop_length=128, n_mels=16, normalize="none")
    bb = CnnMel(input_dim=16, stem_channels=8, channels=(8, 12), strides=(2, 2), kernel_size=5)
    model = _Model(fe, bb, LinearHead(bb.embed_dim, 3))
    x = np.stack([_noise(n, seed=i) + _chirp(n) * (0.1 * i) for i in range(6)])
    _set_bn_stats(model, torch.from_numpy(x))
    g = trace_model(model, n)
    q = quantize_graph(g, calibrate(g, [torch.from_numpy(x)]))
    path = tmp_path / "mel_int8.kwsn"
    path.write_bytes(quant_bytes(q, g))

    def run() -> tuple[bytes, bytes]:
        with CModel(path) as cm:
            return cm.forward_codes(x, 1).tobytes(), cm.forward(x).tobytes()

    monkeypatch.setenv("KWSN_ISA", "default")
    want = run()
    assert len(want[0]) == 6 * 16 * 29  # clips x mels x frames (29 = 16 + 13)
    monkeypatch.setenv("KWSN_ISA", isa)
    assert run() == want


def test_log_equals_libm_on_sampled_floats() -> None:
    """The front end's own log (fe_logf: double lanes, the same bits on every path and libm)
    against libm's (float)log((double)x), the front end's log before it: every 997th
    positive normal float (2.1 million), and zero, negatives, subnormals, inf and NaN (which
    it hands to libm). At most one in 10^6 may differ, by 1 ulp (exhaustively, with step 1:
    2 of all 2.13e9 differ, by 1 ulp)."""
    build = build_cnative("all")
    proc = subprocess.run(
        ["make", "-s", "-C", str(CNATIVE_DIR), "tests"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run(
        [str(build / "fe_log_check"), "997"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2137118 normal floats (step 997)" in proc.stdout, proc.stdout
    assert "special inputs equal" in proc.stdout, proc.stdout
