"""A built-in, deterministic, procedural speech-like corpus, so a fresh install trains offline.

Each *word* is a sequence of 3–5 segments: voiced (a harmonic source shaped by two formant
resonances that glide from a start to an end frequency), unvoiced (band-passed noise) or a
short closure. Each *speaker* is a voice: base pitch, formant scale, speaking rate and
spectral tilt. An utterance renders a word in a voice with per-utterance jitter (rate, pitch,
gain, onset) and additive noise at a random SNR. Everything is derived from ``corpus_seed``
and the item index, never from the training seed, so a clip is identical in every run.

Difficulty knobs (``data.source_options``): ``num_words`` (6), ``num_speakers`` (20),
``utterances`` per word and speaker (10), ``snr_db`` range ((10, 30)), ``jitter`` (1.0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from kwsnet.data.record import Item, Source, SourceArgs
from kwsnet.errors import ConfigError

__all__ = ["SyntheticSource", "render_utterance"]

_SEG_KINDS = ("voiced", "unvoiced", "closure")


@dataclass(frozen=True)
class _Segment:
    kind: str
    dur: float  # seconds at rate 1
    f1: tuple[float, float]  # formant 1 start/end (Hz)
    f2: tuple[float, float]
    pitch_slope: float  # relative f0 change over the segment
    amp: float
    band: float  # unvoiced centre frequency (Hz)


@dataclass(frozen=True)
class _Voice:
    f0: float
    formant_scale: float
    rate: float
    tilt: float  # dB per octave of harmonic roll-off


def _make_words(n: int, rng: np.random.Generator) -> list[list[_Segment]]:
    words = []
    for _ in range(n):
        segs = []
        for i in range(int(rng.integers(3, 6))):
            kind = "voiced" if i == 0 else str(rng.choice(_SEG_KINDS, p=[0.6, 0.25, 0.15]))
            segs.append(
                _Segment(
                    kind=kind,
                    dur=float(rng.uniform(0.06, 0.2)) if kind != "closure" else 0.05,
                    f1=(float(rng.uniform(250, 850)), float(rng.uniform(250, 850))),
                    f2=(float(rng.uniform(800, 2500)), float(rng.uniform(800, 2500))),
                    pitch_slope=float(rng.uniform(-0.35, 0.35)),
                    amp=float(rng.uniform(0.5, 1.0)),
                    band=float(rng.uniform(2000, 6000)),
                )
            )
        words.append(segs)
    return words


def _make_voices(n: int, rng: np.random.Generator) -> list[_Voice]:
    return [
        _Voice(
            f0=float(rng.uniform(85, 250)),
            formant_scale=float(rng.uniform(0.85, 1.2)),
            rate=float(rng.uniform(0.8, 1.25)),
            tilt=float(rng.uniform(-9, -3)),
        )
        for _ in range(n)
    ]


def _resonance(f: np.ndarray, centre: np.ndarray, bw: float) -> np.ndarray:
    return 1.0 / (1.0 + ((f - centre) / bw) ** 2)


def render_utterance(
    word: list[_Segment],
    voice: _Voice,
    rng: np.random.Generator,
    sample_rate: int = 16000,
    num_samples: int = 16000,
    snr_db: tuple[float, float] = (10.0, 30.0),
    jitter: float = 1.0,
) -> np.ndarray:
    """Render one utterance of ``word`` in ``voice`` as float32 ``[num_samples]``."""
    rate = voice.rate * (1.0 + jitter * rng.uniform(-0.06, 0.06))
    f0_base = voice.f0 * (1.0 + jitter * rng.uniform(-0.06, 0.06))
    seg_lens = [max(1, int(s.dur / rate * sample_rate)) for s in word]
    total = sum(seg_lens)
    if total > num_samples:  # squeeze a long word into the clip
        seg_lens = [max(1, n * num_samples // total) for n in seg_lens]
        total = sum(seg_lens)
    # Per-sample control tracks.
    f0 = np.empty(total, np.float32)
    f1 = np.empty(total, np.float32)
    f2 = np.empty(total, np.float32)
    v_amp = np.zeros(total, np.float32)
    n_amp = np.zeros(total, np.float32)
    band = np.empty(total, np.float32)
    pos = 0
    for seg, n in zip(word, seg_lens, strict=True):
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        sl = slice(pos, pos + n)
        f0[sl] = f0_base * (1.0 + seg.pitch_slope * ramp)
        f1[sl] = voice.formant_scale * (seg.f1[0] + (seg.f1[1] - seg.f1[0]) * ramp)
        f2[sl] = voice.formant_scale * (seg.f2[0] + (seg.f2[1] - seg.f2[0]) * ramp)
        band[sl] = seg.band
        env = np.clip(np.sin(np.pi * ramp), 0.0, None) ** 0.5  # soft attack and decay
        if seg.kind == "voiced":
            v_amp[sl] = seg.amp * env
        elif seg.kind == "unvoiced":
            n_amp[sl] = 0.4 * seg.amp * env
        pos += n
    # Voiced source: harmonics of f0 weighted by the two formant resonances and the tilt.
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    n_harm = int(min(40, (sample_rate / 2 - 200) // max(float(f0.max()), 1.0)))
    k = np.arange(1, n_harm + 1, dtype=np.float32)[:, None]
    hf = k * f0[None, :]
    gain = _resonance(hf, f1[None, :], 90.0) + 0.7 * _resonance(hf, f2[None, :], 140.0)
    gain *= 10 ** (voice.tilt * np.log2(k) / 20.0)
    voiced = (gain * np.sin(k * phase[None, :])).sum(axis=0)
    voiced /= max(float(np.abs(voiced).max()), 1e-6)
    # Unvoiced source: noise band-passed around the segment's band (FFT mask, per clip).
    noise = rng.standard_normal(total).astype(np.float32)
    spec = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(total, 1.0 / sample_rate)
    spec *= _resonance(freqs, float(np.median(band)), 800.0)
    hiss = np.fft.irfft(spec, total).astype(np.float32)
    hiss /= max(float(np.abs(hiss).max()), 1e-6)
    speech = v_amp * voiced + n_amp * hiss
    clip = np.zeros(num_samples, np.float32)
    margin = num_samples - total
    onset = int(rng.integers(0, margin + 1)) if margin > 0 else 0
    clip[onset : onset + total] = speech[: num_samples - onset]
    clip *= 0.3 * 10 ** (jitter * rng.uniform(-3, 3) / 20.0)
    power = float(np.mean(clip**2)) + 1e-12
    snr = rng.uniform(*snr_db)
    clip += rng.standard_normal(num_samples).astype(np.float32) * math.sqrt(
        power / 10 ** (snr / 10)
    )
    return clip.astype(np.float32)


class SyntheticSource(Source):
    """The built-in corpus as a ``Source`` (``data.source: synthetic``).

    Items carry both a keyword and a speaker label. Splits are drawn per (word, speaker)
    pair with ``split_seed`` (or, with ``speaker_disjoint: true``, whole speakers are held
    out for val/test).
    """

    name = "synthetic"

    def __init__(self, args: SourceArgs) -> None:
        super().__init__(args)
        opts = dict(args.options)
        self.num_words = int(opts.pop("num_words", 6))
        self.num_speakers = int(opts.pop("num_speakers", 20))
        self.utterances = int(opts.pop("utterances", 10))
        self.num_samples = int(opts.pop("num_samples", args.sample_rate))
        self.snr_db = tuple(float(v) for v in opts.pop("snr_db", (10.0, 30.0)))
        self.jitter = float(opts.pop("jitter", 1.0))
        self.corpus_seed = int(opts.pop("corpus_seed", 0))
        self.speaker_disjoint = bool(opts.pop("speaker_disjoint", False))
        if opts:
            raise ConfigError(
                f"unknown synthetic source_options {sorted(opts)}; valid: num_words, "
                "num_speakers, utterances, num_samples, snr_db, jitter, corpus_seed, "
                "speaker_disjoint"
            )
        if self.num_words < 2 or self.num_speakers < 1 or self.utterances < 1:
            raise ConfigError(
                "synthetic corpus needs num_words >= 2, num_speakers, utterances >= 1"
            )
        rng = np.random.default_rng(self.corpus_seed)
        self._words = _make_words(self.num_words, rng)
        self._voices = _make_voices(self.num_speakers, rng)
        self.keyword_names = [f"word{i}" for i in range(self.num_words)]
        self.speaker_names = [f"spk{i:03d}" for i in range(self.num_speakers)]
        self._items = self._split()

    def _split(self) -> dict[str, list[Item]]:
        rng = np.random.default_rng(self.args.split_seed)
        splits: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
        n_val = max(1, round(self.utterances * self.args.val_fraction))
        n_test = max(1, round(self.utterances * self.args.test_fraction))
        if self.speaker_disjoint:
            order = rng.permutation(self.num_speakers)
            k_val = max(1, round(self.num_speakers * self.args.val_fraction))
            k_test = max(1, round(self.num_speakers * self.args.test_fraction))
            spk_split = {int(s): "val" for s in order[:k_val]}
            spk_split |= {int(s): "test" for s in order[k_val : k_val + k_test]}
        for w in range(self.num_words):
            for s in range(self.num_speakers):
                perm = rng.permutation(self.utterances)
                for rank, u in enumerate(perm):
                    if self.speaker_disjoint:
                        split = spk_split.get(s, "train")
                    else:
                        split = (
                            "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
                        )
                    splits[split].append(
                        Item(f"synthetic://w{w}/s{s}/u{int(u)}", w, s, "audio", (w, s, int(u)))
                    )
        for items in splits.values():
            items.sort(key=lambda it: it.extra)
        return splits

    def load(self, item: Item) -> torch.Tensor:
        w, s, u = item.extra
        seed = (self.corpus_seed, w, s, u)
        rng = np.random.default_rng(seed)
        clip = render_utterance(
            self._words[w],
            self._voices[s],
            rng,
            self.args.sample_rate,
            self.num_samples,
            self.snr_db,
            self.jitter,
        )
        return torch.from_numpy(clip)
