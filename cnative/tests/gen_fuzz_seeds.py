"""Seed corpora for ``make fuzz``: real exported model files (the golden cases: every layer
kind and tiny RawConv models, format v1; a tiny log-mel residual model as a format-v2 graph
with and without its front end, a tiny MFCC DS-CNN of Conv2d layers, a tiny log-mel model
with attentive statistics pooling and an AAM-softmax head (AttnStatsPool, L2Norm), a tiny
BC-ResNet (RowAffine, SiLU, BroadcastAdd); int8 format-3 files of a tiny log-mel model, a tiny
RawConv, the tiny DS-CNN, the tiny attentive-statistics model and the tiny BC-ResNet) and WAV
files in each encoding the reader takes (16-bit PCM, 32-bit float, WAVE_FORMAT_EXTENSIBLE, a
data chunk of unknown size 0xFFFFFFFF, float NaN / Inf samples) plus ones it rejects (stereo,
8-bit, no data chunk, a truncated data chunk).

    python cnative/tests/gen_fuzz_seeds.py MODEL_DIR WAV_DIR
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))  # kwsnet (kwsnet.models)


def _wav(fmt: int, channels: int, rate: int, bits: int, data: bytes, ext: bool = False) -> bytes:
    block = channels * bits // 8
    if ext:
        fmt_body = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * block, block, bits)
        guid = struct.pack("<H", fmt) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt_body += struct.pack("<HHI", 22, bits, 0) + guid
    else:
        fmt_body = struct.pack("<HHIIHH", fmt, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def wav_seeds() -> dict[str, bytes]:
    """name -> WAV bytes (short clips, so mutations stay cheap)."""
    x = np.sin(np.arange(400) * 0.05).astype(np.float32) * 0.5
    pcm = (x * 32767).astype("<i2").tobytes()
    return {
        "pcm16.wav": _wav(1, 1, 16000, 16, pcm),
        "float32.wav": _wav(3, 1, 16000, 32, x.astype("<f4").tobytes()),
        "ext_pcm16.wav": _wav(1, 1, 8000, 16, pcm, ext=True),
        "stereo.wav": _wav(1, 2, 16000, 16, pcm),
        "pcm8.wav": _wav(1, 1, 16000, 8, pcm[:200]),
        "no_data.wav": _wav(1, 1, 16000, 16, b"")[:-8],
        # refused: the data chunk declares 800 bytes, 80 are there
        "truncated.wav": _wav(1, 1, 16000, 16, pcm)[: 44 + 80],
        # read to the end of the file: a streaming writer's unknown size
        "unknown_size.wav": _unknown_size(_wav(1, 1, 16000, 16, pcm)),
        # NaN / Inf samples come back as stored (the tools decide what to do with them)
        "float32_nan.wav": _wav(3, 1, 16000, 32, _with_nonfinite(x).tobytes()),
    }


def _unknown_size(wav: bytes) -> bytes:
    i = wav.index(b"data")
    return wav[: i + 4] + b"\xff\xff\xff\xff" + wav[i + 8 :]


def _with_nonfinite(x: np.ndarray) -> np.ndarray:
    y = x.astype("<f4")
    y[[10, 200, 300]] = [np.nan, np.inf, -np.inf]
    return y


def v2_model_seeds() -> dict[str, bytes]:
    """name -> format-v2 files: a tiny LogMel + CnnMel graph (front end, folded strided
    convs, residual adds, mean pooling, Linear), 512-sample input, its features-input twin, and
    a tiny DS-CNN (Conv2d)."""
    import torch

    from kwsnet.data.features import LogMel
    from kwsnet.export.cnative import graph_bytes
    from kwsnet.export.graph import trace_model
    from kwsnet.models.cnn_mel import CnnMel
    from kwsnet.nn.heads import LinearHead

    class _Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frontend = LogMel(n_fft=64, win_length=64, hop_length=32, n_mels=8)
            self.backbone = CnnMel(8, 4, (4, 6), (2, 1), 3)
            self.head = LinearHead(6, 3)

    torch.manual_seed(0)
    model = _Tiny().eval()
    return {
        "v2_mel.kwsn": graph_bytes(trace_model(model, 512)),
        "v2_mel_features.kwsn": graph_bytes(trace_model(model, 512, include_frontend=False)),
        "v2_ds_cnn.kwsn": graph_bytes(trace_model(_tiny_ds_cnn(), 512)),
        "v2_mel_asp.kwsn": graph_bytes(trace_model(_tiny_mel_asp(), 512)),
        "v2_bc_resnet.kwsn": graph_bytes(trace_model(_tiny_bc_resnet(), 512)),
    }


def _tiny_bc_resnet() -> object:
    """A tiny LogMel (16 mels) + BC-ResNet (tau 0.25, 2 sub-bands: Conv2d, RowAffine, SiLU,
    BroadcastAdd, Add) on 512 samples."""
    import torch

    from kwsnet.data.features import LogMel
    from kwsnet.models.bc_resnet import BCResNet
    from kwsnet.nn.heads import LinearHead

    class _Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frontend = LogMel(n_fft=64, win_length=64, hop_length=32, n_mels=16)
            self.backbone = BCResNet(16, tau=0.25, sub_bands=2)
            self.head = LinearHead(self.backbone.embed_dim, 3)

    torch.manual_seed(0)
    return _Tiny().eval()


def _tiny_mel_asp() -> object:
    """A tiny LogMel + CnnMel with attentive statistics pooling (global context) and an
    AAM-softmax head (L2Norm + the scaled unit class weights) on 512 samples."""
    import functools

    import torch

    from kwsnet.data.features import LogMel
    from kwsnet.models.cnn_mel import CnnMel
    from kwsnet.nn.heads import AAMSoftmaxHead
    from kwsnet.nn.pooling import AttentiveStatisticsPooling

    class _Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frontend = LogMel(n_fft=64, win_length=64, hop_length=32, n_mels=8)
            pool = functools.partial(AttentiveStatisticsPooling, attention_channels=5)
            self.backbone = CnnMel(8, 4, (4, 6), (2, 1), 3, pooling=pool)
            self.head = AAMSoftmaxHead(12, 3)

    torch.manual_seed(0)
    return _Tiny().eval()


def _tiny_ds_cnn() -> object:
    """A tiny MFCC + DS-CNN (Conv2d stem with stride, a depthwise and a pointwise Conv2d, mean
    over the plane, Linear) on 512 samples."""
    import torch

    from kwsnet.data.features import MFCC
    from kwsnet.models.ds_cnn import DSCNN
    from kwsnet.nn.heads import LinearHead

    class _Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frontend = MFCC(n_mfcc=4, n_fft=64, win_length=64, hop_length=32, n_mels=8)
            self.backbone = DSCNN(4, channels=4, num_blocks=1, stem_kernel=(3, 2))
            self.head = LinearHead(4, 3)

    torch.manual_seed(0)
    return _Tiny().eval()


def v3_model_seeds() -> dict[str, bytes]:
    """name -> format-3 (int8) files: the v2 seed's tiny log-mel CnnMel (front end, int8
    convs, residual adds, mean pooling, Linear), a tiny RawConv (input quantiser, integer
    LayerNorm, max / average pooling), the tiny DS-CNN (int8 Conv2d), the tiny
    attentive-statistics model (AttnStatsPool and L2Norm float islands) and the tiny BC-ResNet
    (int8 RowAffine, SiLU table, BroadcastAdd), each calibrated on a few tones."""
    import torch

    from kwsnet.data.features import LogMel
    from kwsnet.export.graph import graph_from_layers, trace_model
    from kwsnet.export.layers import collect_named_layers, input_shape_of
    from kwsnet.models.cnn_mel import CnnMel
    from kwsnet.models.raw_conv import RawConv
    from kwsnet.nn.heads import LinearHead
    from kwsnet.quant.format import quant_bytes
    from kwsnet.quant.ptq import calibrate, quantize_graph

    class _Tiny(torch.nn.Module):
        def __init__(self, frontend: object, backbone: torch.nn.Module, n: int) -> None:
            super().__init__()
            self.frontend = frontend
            self.backbone = backbone
            self.head = LinearHead(n, 3)

    torch.manual_seed(0)
    t = torch.arange(2048) / 16000.0
    x = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in (100.0, 300.0, 900.0)])
    x = x + 0.01 * torch.randn(x.shape)
    fe = LogMel(n_fft=64, win_length=64, hop_length=32, n_mels=8)
    mel = _Tiny(fe, CnnMel(8, 4, (4, 6), (2, 1), 3), 6).eval()
    g_mel = trace_model(mel, 512)
    raw = _Tiny(None, RawConv(input_samples=2048, channels=(4, 4, 4)), 4).eval()
    g_raw = graph_from_layers(collect_named_layers(raw), input_shape_of(raw))
    g_ds = trace_model(_tiny_ds_cnn(), 512)
    out = {}
    cases = (
        ("v3_mel_int8.kwsn", g_mel, x[:, :512]),
        ("v3_raw_int8.kwsn", g_raw, x),
        ("v3_ds_cnn_int8.kwsn", g_ds, x[:, :512]),
        ("v3_mel_asp_int8.kwsn", trace_model(_tiny_mel_asp(), 512), x[:, :512]),
        ("v3_bc_resnet_int8.kwsn", trace_model(_tiny_bc_resnet(), 512), x[:, :512]),
    )
    for name, g, clips in cases:
        q = quantize_graph(g, calibrate(g, [clips]))
        out[name] = quant_bytes(q, g, 16000)
    return out


def main(argv: list[str] | None = None) -> int:
    """Write the model seeds to argv[0] and the WAV seeds to argv[1]."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, wav_dir = Path(args[0]), Path(args[1])
    model_dir.mkdir(parents=True, exist_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    import gen_golden

    gen_golden.generate(model_dir, seed=0)
    for f in model_dir.iterdir():
        if f.suffix != ".kwsn":
            f.unlink()  # keep only the model files
    for name, data in {**v2_model_seeds(), **v3_model_seeds()}.items():
        (model_dir / name).write_bytes(data)
    for name, data in wav_seeds().items():
        (wav_dir / name).write_bytes(data)
    n_models = len(list(model_dir.glob("*.kwsn")))
    print(f"{n_models} model seeds in {model_dir}, {len(wav_seeds())} WAV seeds in {wav_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
