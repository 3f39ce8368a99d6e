"""Normalization layers and the one factory every backbone uses to build them.

``make_norm(kind, shape, **options)`` is the single lookup from a config name to a layer; an
unknown kind or option raises a ``ValueError`` listing the valid ones. ``shape`` is the
per-sample activation shape: ``[C, L]`` for conv activations (input ``[B, C, L]``) or ``[C]``
for features (input ``[B, C]``).

Kinds (``NORM_KINDS``):

- ``layer``: ``nn.LayerNorm(shape)``, statistics and an elementwise affine over every
  non-batch dim (the seed's per-conv LayerNorm; export-friendly standard layer).
- ``channel``: ``RunningChannelNorm``, per-channel statistics with running averages
  ``running = momentum * running + (1 - momentum) * batch`` (momentum 0.95, biased variance);
  batch statistics in training, running statistics at eval.
- ``layerwise``: ``LayerwiseNorm``, one mean/variance over all features of a sample
  (channels and time) and a per-channel affine; works for any length ``L``.
- ``group``: ``nn.GroupNorm(num_groups, C)``.
- ``batch``: ``nn.BatchNorm1d(C)`` with the running-average momentum converted to torch's
  convention (torch momentum = 1 - momentum).
- ``none``: ``nn.Identity``.

``masked_batch_norm(bn, x, mask)`` applies a torch BatchNorm with its training statistics taken
over the valid (unpadded) positions only, and ``masked_sequential(module, x, mask)`` runs a
Sequential (conv → BN → ReLU, ...) with every BatchNorm in it that way; the backbones with
BatchNorm and length masks call them, so a padded batch trains the same statistics as its
utterances' valid frames would.

Every kind accepts ``warmup_steps``: when positive the layer is wrapped in ``NormWarmup``,
``y = x + alpha * (norm(x) - x)`` with ``alpha`` ramping linearly 0 -> 1 over that many
training forward passes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "NORM_KINDS",
    "NORM_TYPES",
    "LayerwiseNorm",
    "NormWarmup",
    "RunningChannelNorm",
    "make_norm",
    "masked_batch_norm",
    "masked_sequential",
]


def _check_input(x: torch.Tensor, num_channels: int, name: str) -> None:
    if x.dim() not in (2, 3) or x.shape[1] != num_channels:
        raise ValueError(
            f"{name} expects input [B, {num_channels}] or [B, {num_channels}, L], "
            f"got {tuple(x.shape)}; check the shape passed to make_norm"
        )


def _affine_view(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # [C] -> [C] for [B, C] input, [C, 1] for [B, C, L] input.
    return p if x.dim() == 2 else p.unsqueeze(-1)


def _init_affine(module: nn.Module, num_channels: int, affine: bool) -> None:
    # Per-channel ``weight`` (ones) and ``bias`` (zeros), or both registered as None.
    if affine:
        module.weight = nn.Parameter(torch.ones(num_channels))
        module.bias = nn.Parameter(torch.zeros(num_channels))
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


class RunningChannelNorm(nn.Module):
    """Per-channel normalization with running averages of the batch statistics.

    Training: normalise with the batch mean and biased batch variance over ``B`` (and ``L``),
    then update ``running = momentum * running + (1 - momentum) * batch``. Eval: normalise
    with the running statistics. Statistics are computed in float32 with autocast disabled,
    so fp16/bf16 autocast never degrades the moments; the output has the input's dtype.

    Equivalent to ``nn.BatchNorm1d(C, momentum=1 - momentum)`` in training; the only
    difference is that BatchNorm stores the *unbiased* variance in ``running_var``, this layer
    the biased one (the two differ by ``n / (n - 1)``, ``n = B * L``).

    Args:
        num_channels: ``C``.
        momentum: weight of the old running value (default 0.95).
        eps: added to the variance (default 1e-5).
        affine: learn a per-channel scale and shift (default True).
        clip_mean: if set, running means are clamped to ``[-clip_mean, clip_mean]`` after
            each update (default None: no clipping).
        clip_var: if set, ``(min, max)`` bounds for the running variances (default None).

    Shapes: ``[B, C] -> [B, C]`` or ``[B, C, L] -> [B, C, L]``.
    """

    def __init__(
        self,
        num_channels: int,
        momentum: float = 0.95,
        eps: float = 1e-5,
        affine: bool = True,
        clip_mean: float | None = None,
        clip_var: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(
                f"momentum is the weight of the old running value, in [0, 1); got {momentum}"
            )
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        if clip_mean is not None and clip_mean <= 0:
            raise ValueError(f"clip_mean must be positive or None, got {clip_mean}")
        if clip_var is not None and not 0 <= clip_var[0] < clip_var[1]:
            raise ValueError(f"clip_var must be (min, max) with 0 <= min < max, got {clip_var}")
        self.num_channels = num_channels
        self.momentum = momentum
        self.eps = eps
        self.clip_mean = clip_mean
        self.clip_var = tuple(clip_var) if clip_var is not None else None
        self.register_buffer("running_mean", torch.zeros(num_channels, dtype=torch.float32))
        self.register_buffer("running_var", torch.ones(num_channels, dtype=torch.float32))
        _init_affine(self, num_channels, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.num_channels, type(self).__name__)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x.float()
            dims = [0] if x.dim() == 2 else [0, 2]
            if self.training:
                var, mean = torch.var_mean(xf, dim=dims, correction=0)
                with torch.no_grad():
                    m = self.momentum
                    self.running_mean.mul_(m).add_(mean.detach(), alpha=1 - m)
                    self.running_var.mul_(m).add_(var.detach(), alpha=1 - m)
                    if self.clip_mean is not None:
                        self.running_mean.clamp_(-self.clip_mean, self.clip_mean)
                    if self.clip_var is not None:
                        self.running_var.clamp_(*self.clip_var)
            else:
                mean, var = self.running_mean, self.running_var
            y = (xf - _affine_view(mean, x)) * _affine_view(torch.rsqrt(var + self.eps), x)
            if self.weight is not None:
                y = y * _affine_view(self.weight.float(), x) + _affine_view(self.bias.float(), x)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, momentum={self.momentum}, eps={self.eps}, "
            f"affine={self.weight is not None}, clip_mean={self.clip_mean}, "
            f"clip_var={self.clip_var}"
        )


class LayerwiseNorm(nn.Module):
    """One mean and variance over all features of a sample, with a per-channel affine.

    Unlike ``nn.LayerNorm([C, L])`` the affine is per channel (``C`` scales, not ``C * L``),
    so the layer works for any length ``L``. Statistics are float32 under autocast; there is
    no running state, so training and eval behave the same. The arithmetic equals
    ``nn.GroupNorm(1, C)``.

    Args:
        num_channels: ``C``.
        eps: added to the variance (default 1e-5).
        affine: learn a per-channel scale and shift (default True).

    Shapes: ``[B, C] -> [B, C]`` or ``[B, C, L] -> [B, C, L]``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.num_channels = num_channels
        self.eps = eps
        _init_affine(self, num_channels, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.num_channels, type(self).__name__)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x.float()
            dims = list(range(1, x.dim()))
            var, mean = torch.var_mean(xf, dim=dims, correction=0, keepdim=True)
            y = (xf - mean) * torch.rsqrt(var + self.eps)
            if self.weight is not None:
                y = y * _affine_view(self.weight.float(), x) + _affine_view(self.bias.float(), x)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.weight is not None}"


class NormWarmup(nn.Module):
    """Strength warm-up around a norm: ``y = x + alpha * (norm(x) - x)``.

    ``alpha = min(1, step / warmup_steps)``, where ``step`` counts training forward passes
    (a buffer, so it survives checkpoints). At ``step = 0`` the layer is the identity; after
    ``warmup_steps`` it is ``norm``. Eval uses the current ``alpha`` without advancing it.

    Args:
        norm: the wrapped norm layer (kept as ``self.norm``).
        warmup_steps: training steps over which ``alpha`` ramps 0 -> 1 (must be > 0).

    Shapes: those of ``norm``.
    """

    def __init__(self, norm: nn.Module, warmup_steps: int) -> None:
        super().__init__()
        if warmup_steps <= 0:
            raise ValueError(f"warmup_steps must be > 0 to wrap a norm, got {warmup_steps}")
        self.norm = norm
        self.warmup_steps = warmup_steps
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def alpha(self) -> float:
        return min(1.0, int(self.step) / self.warmup_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # alpha stays a tensor: reading the step on the host would sync the device each call.
        alpha = (self.step.float() / self.warmup_steps).clamp(max=1.0).to(x.dtype)
        if self.training:
            self.step += 1
        return x + alpha * (self.norm(x) - x)

    def extra_repr(self) -> str:
        return f"warmup_steps={self.warmup_steps}"


def _layer(shape: Sequence[int], eps: float = 1e-5, affine: bool = True) -> nn.Module:
    # LayerNorm over every non-batch dim given, e.g. [C, L] for a conv activation.
    return nn.LayerNorm(list(shape), eps=eps, elementwise_affine=affine)


def _channel(
    shape: Sequence[int],
    momentum: float = 0.95,
    eps: float = 1e-5,
    affine: bool = True,
    clip_mean: float | None = None,
    clip_var: tuple[float, float] | None = None,
) -> nn.Module:
    return RunningChannelNorm(shape[0], momentum, eps, affine, clip_mean, clip_var)


def _layerwise(shape: Sequence[int], eps: float = 1e-5, affine: bool = True) -> nn.Module:
    return LayerwiseNorm(shape[0], eps, affine)


def _group(
    shape: Sequence[int], num_groups: int = 8, eps: float = 1e-5, affine: bool = True
) -> nn.Module:
    if shape[0] % num_groups != 0:
        raise ValueError(
            f"group norm needs channels divisible by num_groups; {shape[0]} channels, "
            f"num_groups={num_groups}: pass num_groups dividing {shape[0]}"
        )
    return nn.GroupNorm(num_groups, shape[0], eps=eps, affine=affine)


def _batch(
    shape: Sequence[int], momentum: float = 0.9, eps: float = 1e-5, affine: bool = True
) -> nn.Module:
    # ``momentum`` is the weight of the old running value, as for ``channel``; torch's
    # BatchNorm momentum is the weight of the new batch value.
    return nn.BatchNorm1d(shape[0], eps=eps, momentum=1 - momentum, affine=affine)


def _none(shape: Sequence[int]) -> nn.Module:
    return nn.Identity()


NORM_KINDS: dict[str, Callable[..., nn.Module]] = {
    "layer": _layer,
    "channel": _channel,
    "layerwise": _layerwise,
    "group": _group,
    "batch": _batch,
    "none": _none,
}

#: Module types whose parameters are norm scale/shift (used by ``kwsnet.optim``).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.RMSNorm,
    RunningChannelNorm,
    LayerwiseNorm,
)


def make_norm(kind: str, shape: Sequence[int], **options: object) -> nn.Module:
    """Build the norm layer ``kind`` for activations of per-sample shape ``shape``.

    Args:
        kind: one of ``NORM_KINDS``: layer, channel, layerwise, group, batch, none.
        shape: per-sample activation shape, ``[C, L]`` for conv outputs or ``[C]`` for features.
        **options: per-kind options, all optional:
            ``eps`` (1e-5; all but none), ``affine`` (True; all but none),
            ``momentum`` (weight of the old running value: 0.95 for channel, 0.9 for batch),
            ``clip_mean`` / ``clip_var`` (None; channel), ``num_groups`` (8; group),
            ``warmup_steps`` (0 = off; any kind but none: wraps the layer in ``NormWarmup``).

    Returns:
        an ``nn.Module`` mapping ``[B, *shape] -> [B, *shape]``.
    """
    if kind not in NORM_KINDS:
        raise ValueError(f"unknown norm kind {kind!r}; valid kinds: {sorted(NORM_KINDS)}")
    if len(shape) not in (1, 2) or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape must be [C] or [C, L] with positive sizes, got {list(shape)}")
    builder = NORM_KINDS[kind]
    warmup_steps = int(options.pop("warmup_steps", 0) or 0)
    valid = [p for p in inspect.signature(builder).parameters if p != "shape"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"norm kind {kind!r} does not take option(s) {unknown}; valid options: "
            f"{valid + ['warmup_steps']}"
        )
    layer = builder(shape, **options)
    if warmup_steps > 0 and kind != "none":
        layer = NormWarmup(layer, warmup_steps)
    return layer


def masked_batch_norm(
    bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """``bn(x)`` with training statistics over the positions where ``mask`` is nonzero.

    ``bn`` is an ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` (its parameters, buffers and eval-mode
    behaviour are untouched, so export folds it as before); ``x`` is ``[B, C, *S]`` and ``mask``
    broadcasts to ``[B, 1, *S]`` (e.g. ``[B, 1, T]`` for ``[B, C, T]``, ``[B, 1, T, 1]`` for
    ``[B, C, T, F]``), 1 at valid positions. In training, torch's BatchNorm averages over every
    position, so zeros at padded frames pull the batch mean and variance (and the running
    statistics) towards what the amount of padding says, not the audio. Here the mean and the
    biased variance that normalise, and the running averages (torch's update: ``momentum``, or
    the cumulative average when it is None, unbiased variance), use the valid positions only.

    With no mask, a mask without padding, or ``bn`` in eval mode (running statistics) this is
    exactly ``bn(x)``. Outputs at padded positions are defined but meaningless: callers re-mask.
    """
    batch_stats = bn.training or not bn.track_running_stats
    if mask is None or not batch_stats or bool(mask.all()):
        return bn(x)
    if x.dim() < 3 or x.shape[1] != bn.num_features:
        raise ValueError(
            f"masked_batch_norm expects [B, {bn.num_features}, ...], got {tuple(x.shape)}"
        )
    dims = [0, *range(2, x.dim())]
    m = mask.to(x.dtype).expand(x.shape[0], 1, *x.shape[2:])
    n = m.sum()
    if float(n) < 2:
        raise ValueError(
            f"masked_batch_norm needs at least 2 valid positions per channel in training, got "
            f"{int(n)}"
        )
    mean = (x * m).sum(dim=dims) / n  # [C]
    shape = [1, -1, *([1] * (x.dim() - 2))]
    centred = x - mean.view(shape)
    var = (centred.pow(2) * m).sum(dim=dims) / n  # biased, [C]
    if bn.training and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            unbiased = var.detach() * (n / (n - 1))
            bn.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
    y = centred * torch.rsqrt(var.view(shape) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y


def masked_sequential(
    module: nn.Module, x: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """``module(x)`` for an ``nn.Sequential`` (or a single module, e.g. ``nn.Identity``), with
    every BatchNorm in it applied by ``masked_batch_norm(bn, ·, mask)``; the other layers are
    called as they are. The same layers in the same order, so with no padding it is exactly
    ``module(x)``; the module stays a plain Sequential for export."""
    layers = module if isinstance(module, nn.Sequential) else [module]
    for layer in layers:
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            x = masked_batch_norm(layer, x, mask)
        else:
            x = layer(x)
    return x
