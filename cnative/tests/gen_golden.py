"""Generate golden data for the C runtime's tests: one case per layer kind plus tiny full
RawConv models, each as a model file, an input batch and PyTorch's output.

    python cnative/tests/gen_golden.py OUT_DIR [--seed 0]

OUT_DIR gets, per case, ``<name>.kwsn``, ``<name>.in.f32`` (N x input numel),
``<name>.out.f32`` (N x output numel, from PyTorch eager on CPU in float32), and
``manifest.txt`` (``name n_rows tolerance`` per line, read by ``test_golden.c``), plus
``golden.json`` recording how the data was made (command, seed, torch version).
Tests regenerate it into a temporary directory, so nothing binary is committed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kwsnet.export.cnative import write_model  # noqa: E402
from kwsnet.export.layers import collect_named_layers, input_shape_of  # noqa: E402

N_ROWS = 8


class TinyClassifier(nn.Module):
    """backbone + head, the shape of a ClassifierModule, without Lightning."""

    def __init__(self, norm_placement: str, input_samples: int = 1024, n_classes: int = 6):
        super().__init__()
        from kwsnet.models.raw_conv import RawConv
        from kwsnet.nn.heads import LinearHead

        self.backbone = RawConv(
            input_samples=input_samples, channels=(4, 8, 8), norm_placement=norm_placement
        )
        self.head = LinearHead(self.backbone.embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T] -> logits [B, n_classes]``."""
        return self.head(self.backbone(x))


def _randomize_norms(model: nn.Module) -> nn.Module:
    # Fresh LayerNorms are the identity affine; random affine exercises gamma/beta.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and m.weight is not None:
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    return model.eval()


def layer_cases() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]]:
    """name -> (builder of an nn.Sequential, per-sample input shape)."""
    return {
        "avgpool": (lambda: nn.Sequential(nn.AvgPool1d(16)), (3, 160)),
        "avgpool_stride": (lambda: nn.Sequential(nn.AvgPool1d(5, stride=3)), (2, 50)),
        "maxpool": (lambda: nn.Sequential(nn.MaxPool1d(4)), (3, 62)),
        "conv_k3": (lambda: nn.Sequential(nn.Conv1d(3, 5, 3, padding=1)), (3, 40)),
        "conv_k5_nobias": (
            lambda: nn.Sequential(nn.Conv1d(2, 4, 5, padding="same", bias=False)),
            (2, 33),
        ),
        "conv_k1": (lambda: nn.Sequential(nn.Conv1d(4, 3, 1)), (4, 7)),
        "layernorm_2d": (lambda: _randomize_norms(nn.Sequential(nn.LayerNorm([6, 50]))), (6, 50)),
        "layernorm_last": (lambda: _randomize_norms(nn.Sequential(nn.LayerNorm(20))), (3, 20)),
        "layernorm_1d": (lambda: _randomize_norms(nn.Sequential(nn.LayerNorm(64))), (64,)),
        "layernorm_noaffine": (
            lambda: nn.Sequential(nn.LayerNorm([4, 9], elementwise_affine=False)),
            (4, 9),
        ),
        "relu": (lambda: nn.Sequential(nn.ReLU()), (3, 17)),
        "adaptive_avg": (lambda: nn.Sequential(nn.AdaptiveAvgPool1d(1)), (5, 62)),
        "flatten_linear": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 6)), (3, 4)),
        "linear_nobias": (lambda: nn.Sequential(nn.Linear(64, 10, bias=False)), (64,)),
    }


def model_cases() -> dict[str, Callable[[], nn.Module]]:
    """name -> builder of a tiny RawConv classifier, one per norm placement."""
    return {
        f"rawconv_{p}": (lambda p=p: _randomize_norms(TinyClassifier(p)))
        for p in ("per_conv", "end", "none")
    }


def _write_case(out: Path, name: str, model: nn.Module, shape: tuple[int, ...], g) -> float:
    x = torch.randn(N_ROWS, *shape, generator=g) * 2.0
    with torch.no_grad():
        y = model(x.reshape(N_ROWS, *shape)) if isinstance(model, nn.Sequential) else model(x)
    if isinstance(model, nn.Sequential):
        write_model(collect_named_layers(model), shape, out / f"{name}.kwsn", sample_rate=0)
    else:
        write_model(collect_named_layers(model), input_shape_of(model), out / f"{name}.kwsn")
    x.numpy().astype("<f4").tofile(out / f"{name}.in.f32")
    y.reshape(N_ROWS, -1).numpy().astype("<f4").tofile(out / f"{name}.out.f32")
    return 1e-5 * max(1.0, float(y.abs().max()))


def _tiny_mel(pooling: str):
    """A format-v2 case: LogMel (n_fft 480, 40 mels, mean normalisation) + a tiny CnnMel with
    random BatchNorm statistics (folded at export) + a 4-class head, 4000-sample input."""
    from kwsnet.data.features import LogMel
    from kwsnet.models.cnn_mel import CnnMel
    from kwsnet.nn import pooling as pools
    from kwsnet.nn.heads import LinearHead

    class _Mel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frontend = LogMel(n_fft=480, win_length=480, n_mels=40, normalize="mean")
            self.backbone = CnnMel(40, 8, (8, 12), (2, 1), 5, getattr(pools, pooling))
            self.head = LinearHead(12, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            lengths = torch.full((len(x),), x.shape[1], dtype=torch.long)
            return self.head(self.backbone(*self.frontend(x, lengths)))

    model = _Mel().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
    return model


def graph_cases() -> dict[str, Callable[[], nn.Module]]:
    """Format-v2 cases (traced graphs): name -> builder."""
    return {
        "mel_cnn_mean_v2": lambda: _tiny_mel("MeanPooling"),
        "mel_cnn_attn_v2": lambda: _tiny_mel("SelfAttentionPooling"),
    }


def _write_graph_case(out: Path, name: str, model: nn.Module, samples: int, g) -> float:
    from kwsnet.export.cnative import write_graph
    from kwsnet.export.graph import trace_model

    x = torch.randn(N_ROWS, samples, generator=g) * 0.5
    with torch.no_grad():
        y = model(x)
    write_graph(trace_model(model, samples), out / f"{name}.kwsn")
    x.numpy().astype("<f4").tofile(out / f"{name}.in.f32")
    y.reshape(N_ROWS, -1).numpy().astype("<f4").tofile(out / f"{name}.out.f32")
    return 1e-5 * max(1.0, float(y.abs().max()))


def generate(out: Path, seed: int = 0) -> list[str]:
    """Write every case into ``out``; returns the case names."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    manifest = []
    for name, (build, shape) in layer_cases().items():
        tol = _write_case(out, name, build().eval(), shape, g)
        manifest.append(f"{name} {N_ROWS} {tol:.9g}")
    for name, build in model_cases().items():
        model = build()
        x_shape = (model.backbone.input_samples,)
        tol = _write_case(out, name, model, x_shape, g)
        manifest.append(f"{name} {N_ROWS} {tol:.9g}")
    for name, build in graph_cases().items():
        tol = _write_graph_case(out, name, build(), 4000, g)
        manifest.append(f"{name} {N_ROWS} {tol:.9g}")
    (out / "manifest.txt").write_text("\n".join(manifest) + "\n")
    meta = {
        "command": f"python cnative/tests/gen_golden.py {out} --seed {seed}",
        "seed": seed,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "reference": "PyTorch eager, CPU, float32; inputs ~ 2 * N(0, 1); LayerNorm affine "
        "~ N(1, 0.3) / N(0, 0.3); other weights: PyTorch default init",
        "tolerance": "1e-5 * max(1, max |expected|) per case",
    }
    (out / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    return [line.split()[0] for line in manifest]


def main(argv: list[str] | None = None) -> int:
    """CLI: ``gen_golden.py OUT_DIR [--seed N]``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    names = generate(a.out, a.seed)
    print(f"wrote {len(names)} golden cases to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
