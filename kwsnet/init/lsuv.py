"""LSUV: layer-sequential unit-variance init (Mishkin & Matas), with a fixed bias loop.

Orthogonal pre-init, then each Conv/Linear in forward order is rescaled until its output on
a calibration batch has std 1 and its bias shifted until the output mean is 0, both within
``tol``. The output of a layer is affine in its own weight and bias once the layers before it
are fixed, so dividing the weight by the measured std and subtracting the measured mean from
the bias is exact; the order of the two fixes is what matters:

- ``std_then_mean`` (default): rescale the weight, then shift the bias. A shift does not
  change the std, so both end within ``tol`` (typically |mean| ~1e-8, std 1.0).
- ``joint``: one loop that fixes only what is out of tolerance; a rescale divides weight and
  bias together (``out -> out / std``), then the bias absorbs the remaining mean.
- ``mean_then_std``: the common two-loop version, kept for comparison. The later weight-only
  rescale moves the mean the bias had just cancelled, leaving a residual
  ``bias_mean * (1 - 1 / std)``.

Layers without a bias are only rescaled. Layers that ``forward()`` never calls as modules
(e.g. ``nn.MultiheadAttention.out_proj``, used functionally) are left untouched.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal, get_args

import torch
from torch import nn

from kwsnet.init.base import Forward, InitStrategy, format_report

__all__ = ["LSUV", "LSUV_ORDERS"]

log = logging.getLogger(__name__)

LsuvOrder = Literal["std_then_mean", "joint", "mean_then_std"]
LSUV_ORDERS: tuple[str, ...] = get_args(LsuvOrder)
_TREATED = (nn.modules.conv._ConvNd, nn.Linear)
_DROPOUT = (nn.modules.dropout._DropoutNd, nn.MultiheadAttention)


class _StopForward(Exception):
    """Raised by a measuring hook once the layer of interest has produced its output."""


@contextlib.contextmanager
def _calibration_mode(module: nn.Module) -> Iterator[None]:
    # Train-mode statistics (batch stats in norms) as in training, but no dropout noise; every
    # buffer (running stats, warm-up counters) is restored so calibration leaves no trace.
    flags = [(m, m.training) for m in module.modules()]
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    module.train()
    for m in module.modules():
        if isinstance(m, _DROPOUT):
            m.eval()
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for m, training in flags:
            m.training = training


class LSUV(InitStrategy):
    """Data-dependent init: every Conv/Linear output gets mean 0 and std 1 on a batch.

    Args:
        order: ``std_then_mean`` (default), ``joint`` or ``mean_then_std`` (see module doc).
        tol: tolerance on ``|mean|`` and ``|std - 1|`` (default 1e-3).
        max_iters: bound on the adjustments of each loop per layer (default 10).
        orthogonal: orthogonal pre-init of the treated weights, biases zeroed (default True).
        seed: seed of the orthogonal pre-init (default None: the global torch RNG, which
            ``seed_everything`` makes deterministic).

    ``apply(module, forward)`` treats the Conv/Linear layers of ``module`` that ``forward()``
    calls, in call order, and returns one row per layer: ``layer``, ``type``, ``iterations``,
    ``mean``, ``std``, ``converged``.
    """

    def __init__(
        self,
        order: LsuvOrder = "std_then_mean",
        tol: float = 1e-3,
        max_iters: int = 10,
        orthogonal: bool = True,
        seed: int | None = None,
    ) -> None:
        if order not in LSUV_ORDERS:
            raise ValueError(f"LSUV order must be one of {LSUV_ORDERS}, got {order!r}")
        if tol <= 0:
            raise ValueError(f"tol must be positive, got {tol}")
        if max_iters < 1:
            raise ValueError(f"max_iters must be >= 1, got {max_iters}")
        self.order = order
        self.tol = tol
        self.max_iters = max_iters
        self.orthogonal = orthogonal
        self.seed = seed

    def apply(self, module: nn.Module, forward: Forward | None = None) -> list[dict]:
        if not callable(forward):
            raise TypeError(
                "LSUV.apply(module, forward) needs forward: a no-argument callable running the "
                f"model on a calibration batch (e.g. lambda: model(x, lengths)), got "
                f"{type(forward).__name__}"
            )
        with torch.no_grad(), _calibration_mode(module):
            layers = _forward_order(module, forward)
            if self.orthogonal:
                self._orthogonal_init(layers)
            rows = [self._fit(name, layer, forward) for name, layer in layers]
        log.info("LSUV (%s, tol=%g):\n%s", self.order, self.tol, format_report(rows))
        return rows

    def _orthogonal_init(self, layers: list[tuple[str, nn.Module]]) -> None:
        gen = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        for _, layer in layers:
            w = torch.empty(layer.weight.shape, dtype=torch.float32)
            nn.init.orthogonal_(w, generator=gen)
            layer.weight.copy_(w)
            if layer.bias is not None:
                layer.bias.zero_()

    def _fit(self, name: str, layer: nn.Module, forward: Forward) -> dict:
        w, b, tol = layer.weight, layer.bias, self.tol
        iters = 0

        def measure() -> tuple[float, float]:
            mean, std = _output_stats(layer, forward, name)
            if std < 1e-12:
                raise RuntimeError(f"LSUV: layer {name} outputs a constant on the batch")
            return mean, std

        if self.order in ("std_then_mean", "mean_then_std"):
            loops = ["std", "mean"] if self.order == "std_then_mean" else ["mean", "std"]
            for loop in loops:
                if loop == "mean" and b is None:
                    continue
                for _ in range(self.max_iters):
                    mean, std = measure()
                    if loop == "std" and abs(std - 1) >= tol:
                        w.div_(std)
                    elif loop == "mean" and abs(mean) >= tol:
                        b.sub_(mean)
                    else:
                        break
                    iters += 1
        else:
            for _ in range(self.max_iters):
                mean, std = measure()
                std_bad = abs(std - 1) >= tol
                mean_bad = b is not None and abs(mean) >= tol
                if not (std_bad or mean_bad):
                    break
                if std_bad:
                    w.div_(std)
                    if b is not None:
                        b.div_(std)
                    mean /= std
                if b is not None and abs(mean) >= tol:
                    b.sub_(mean)
                iters += 1
        mean, std = measure()
        converged = abs(std - 1) < tol and (b is None or abs(mean) < tol)
        if not converged:
            log.log(
                logging.INFO if self.order == "mean_then_std" else logging.WARNING,
                "LSUV (%s): %s ends outside tol %g: mean %.3g, std %.6f",
                self.order,
                name,
                tol,
                mean,
                std,
            )
        return {
            "layer": name,
            "type": type(layer).__name__,
            "iterations": iters,
            "mean": mean,
            "std": std,
            "converged": converged,
        }


def _forward_order(module: nn.Module, forward: Forward) -> list[tuple[str, nn.Module]]:
    # One full pass with hooks on every candidate records the order of first calls.
    called: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def make_hook(name: str):
        def hook(mod: nn.Module, args: object, out: object) -> None:
            if id(mod) not in seen:
                seen.add(id(mod))
                called.append((name, mod))

        return hook

    handles = [
        m.register_forward_hook(make_hook(n))
        for n, m in module.named_modules()
        if isinstance(m, _TREATED)
    ]
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    if not called:
        raise ValueError("LSUV: forward() called no Conv/Linear layer of the given module")
    return called


def _output_stats(layer: nn.Module, forward: Forward, name: str) -> tuple[float, float]:
    # Mean and biased std of the layer's first output; the rest of the forward pass is skipped.
    captured: list[torch.Tensor] = []

    def hook(mod: nn.Module, args: object, out: torch.Tensor) -> None:
        captured.append(out.detach())
        raise _StopForward

    handle = layer.register_forward_hook(hook)
    try:
        forward()
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"LSUV: forward() no longer calls layer {name}")
    var, mean = torch.var_mean(captured[0].double(), correction=0)
    return mean.item(), var.sqrt().item()
