"""Compute log-mel features once and write the mel_features format (kwsnet.data.prepare).

    kwsnet prepare --source voxceleb1 --root data/vox1 --out data/vox1_mel \\
        --source_options '{max_speakers: 600}'

Reads every item of a source (--source takes any data.source value: a short name such as
voxceleb1, or the class path of a Source subclass), runs a LogMel front end on each utterance
and writes <out>/uttr-NNNNNNN.pt tensors plus mapping.json, metadata.json and testdata.json,
which data.source: mel_features reads back (docs/speaker.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jsonargparse import ArgumentParser

from kwsnet.commands.common import new_parser, parse
from kwsnet.errors import ConfigError, UsageError, one_line

__all__ = ["ALIASES", "parser", "run"]

# kwsnet 0.1's spellings → today's (--source-option KEY=VALUE: see _source_option_args)
ALIASES = {
    "--sample-rate": "--sample_rate",
    "--n-mels": "--n_mels",
    "--n-fft": "--n_fft",
    "--win-length": "--win_length",
    "--hop-length": "--hop_length",
    "--f-min": "--f_min",
    "--f-max": "--f_max",
    "--split-seed": "--split_seed",
}
_OLD_OPTION = "--source-option"


def parser() -> ArgumentParser:
    """``kwsnet prepare``'s parser."""
    p = new_parser("prepare", __doc__ or "")
    p.add_argument(
        "--source",
        type=str | dict[str, Any],
        required=True,
        help="the format, as data.source: a short name (synthetic, speech_commands, folder, "
        "voxceleb1, mel_features), a class path, or '{class_path: ..., init_args: {...}}'",
    )
    p.add_argument("--root", type=str, required=True, help="dataset root of the source")
    p.add_argument("--out", type=str, required=True, help="output directory")
    p.add_argument("--sample_rate", type=int, default=16000, help="audio is resampled to it")
    p.add_argument("--n_mels", type=int, default=40, help="mel bands")
    p.add_argument("--n_fft", type=int, default=400, help="FFT size")
    p.add_argument("--win_length", type=int, default=400, help="window (samples)")
    p.add_argument("--hop_length", type=int, default=160, help="hop (samples)")
    p.add_argument("--f_min", type=float, default=0.0, help="lowest mel frequency (Hz)")
    p.add_argument("--f_max", type=float | None, default=None, help="default: sample_rate / 2")
    p.add_argument("--split_seed", type=int, default=1234, help="the source's split seed")
    p.add_argument(
        "--source_options",
        type=dict[str, Any],
        default={},
        help="the source's options (merged over --source's init_args), e.g. '{max_speakers: 600}'",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return p


def _source_option_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with kwsnet 0.1's repeatable ``--source-option KEY=VALUE`` merged into one
    ``--source_options`` mapping (with a deprecation warning)."""
    import json
    import sys

    import yaml

    out: list[str] = []
    options: dict[str, Any] = {}
    args = list(argv)
    while args:
        token = args.pop(0)
        name, eq, value = token.partition("=")
        if name != _OLD_OPTION:
            out.append(token)
            continue
        if not eq:
            if not args:
                raise UsageError(f"{_OLD_OPTION}: expected KEY=VALUE")
            value = args.pop(0)
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise UsageError(f"{_OLD_OPTION}: expected KEY=VALUE, got {value!r}")
        options[key] = yaml.safe_load(text)
    if options:
        print(
            f"kwsnet: warning: kwsnet prepare: {_OLD_OPTION} is deprecated; use "
            f"--source_options '{json.dumps(options)}'",
            file=sys.stderr,
        )
        out += ["--source_options", json.dumps(options)]
    return out


def run(argv: Sequence[str]) -> int:
    """``kwsnet prepare``: 0 once the features are written.

    Raises:
        UsageError: a ``--source`` that names no ``Source`` class.
        DataFormatError, OutputExistsError: a source without speaker labels or with bad items,
            an output that exists (without ``--overwrite``).
    """
    args, _ = parse(parser(), _source_option_args(argv), ALIASES)  # --help imports no torch

    from kwsnet.data.prepare import prepare_mel_features
    from kwsnet.data.record import SourceArgs
    from kwsnet.data.sources import build_source, parse_source, source_class

    try:  # a --source that names no Source class is a bad command line
        spec = parse_source(args.source, key="--source")
        source_class(spec)
    except ConfigError as exc:
        raise UsageError(one_line(exc)) from exc
    source = build_source(
        spec,
        SourceArgs(
            root=args.root,
            sample_rate=args.sample_rate,
            split_seed=args.split_seed,
            options=dict(args.source_options),
        ),
    )
    counts = prepare_mel_features(
        source, args.out, n_mels=args.n_mels, n_fft=args.n_fft, win_length=args.win_length,
        hop_length=args.hop_length, f_min=args.f_min, f_max=args.f_max, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"wrote {counts} utterances to {args.out}")
    return 0
