"""SmallInit-Emb: tiny uniform embedding init followed by a LayerNorm.

Every ``nn.Embedding`` weight and every declared input projection (an ``nn.Linear`` stored as
the ``input_projection`` attribute of a backbone, e.g. the Conformer prenet) is set to
``U(-a, a)`` with ``a = 1e-4``, and a LayerNorm is put right after each input projection.
Where the backbone declares the slot for it (an ``input_norm`` attribute applied after the
projection, as ``kwsnet.models.conformer.ConformerBackbone`` does), an ``nn.Identity`` there is
replaced by a LayerNorm and an existing LayerNorm is kept. Otherwise the projection itself is
replaced, under every name it is registered with, by ``ProjectionWithNorm(linear,
LayerNorm)``, a Sequential that still exposes ``weight``, ``bias``, ``in_features`` and
``out_features`` so code that reads the projection keeps working. Embeddings are initialised
but not wrapped (a LayerNorm after an embedding lookup belongs in the model's own forward).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from kwsnet.init.base import Forward, InitStrategy, format_report

__all__ = ["ProjectionWithNorm", "SmallInitEmb"]

log = logging.getLogger(__name__)


class ProjectionWithNorm(nn.Sequential):
    """``Linear -> LayerNorm(out_features)``; ``[*, in_features] -> [*, out_features]``.

    Args:
        linear: the projection (kept as ``self[0]``).
        eps: LayerNorm eps (default 1e-5).
    """

    def __init__(self, linear: nn.Linear, eps: float = 1e-5) -> None:
        norm = nn.LayerNorm(linear.out_features, eps=eps)
        norm.to(device=linear.weight.device, dtype=linear.weight.dtype)
        super().__init__(linear, norm)

    @property
    def weight(self) -> nn.Parameter:
        return self[0].weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self[0].bias

    @property
    def in_features(self) -> int:
        return self[0].in_features

    @property
    def out_features(self) -> int:
        return self[0].out_features


class SmallInitEmb(InitStrategy):
    """U(-a, a) on embeddings and input projections, plus a LayerNorm after the projection.

    Args:
        a: half-width of the uniform init (default 1e-4).
        add_layernorm: insert the LayerNorm after each input projection (default True).
        init_bias: also set the projection bias to zero (default True).
        seed: seed of the uniform draws (default None: the global torch RNG).

    ``prepare(module)`` inserts the LayerNorms (call it before the optimizer is built);
    ``apply(module)`` does the init, calling ``prepare`` first if it was skipped (with a
    warning, since the new LayerNorm would then miss the optimizer). ``forward`` is unused.
    Returns one row per treated layer: ``layer``, ``type``, ``a``, ``max_abs``, ``layernorm``.
    """

    def __init__(
        self,
        a: float = 1e-4,
        add_layernorm: bool = True,
        init_bias: bool = True,
        seed: int | None = None,
    ) -> None:
        if a <= 0:
            raise ValueError(f"a must be positive, got {a}")
        self.a = a
        self.add_layernorm = add_layernorm
        self.init_bias = init_bias
        self.seed = seed

    def prepare(self, module: nn.Module) -> None:
        if not self.add_layernorm:
            return
        for owner in _projection_owners(module):
            proj = owner.input_projection
            if _has_layernorm(owner):
                continue
            if isinstance(getattr(owner, "input_norm", None), nn.Identity):
                norm = nn.LayerNorm(proj.out_features)
                owner.input_norm = norm.to(device=proj.weight.device, dtype=proj.weight.dtype)
                continue
            wrapped = ProjectionWithNorm(proj)
            # Replace every registration of this Linear, so aliases stay the same object.
            # ``named_children`` lists a module once; ``_modules`` holds every alias.
            slots = [
                (parent, child_name)
                for parent in module.modules()
                for child_name, child in parent._modules.items()
                if child is proj
            ]
            for parent, child_name in slots:
                setattr(parent, child_name, wrapped)

    def apply(self, module: nn.Module, forward: Forward | None = None) -> list[dict]:
        if self.add_layernorm and not all(map(_has_layernorm, _projection_owners(module))):
            log.warning(
                "SmallInitEmb.apply: prepare() was not called; inserting the LayerNorm now, "
                "after the optimizer may have been built (its parameters would not train)"
            )
            self.prepare(module)
        gen = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        targets: list[tuple[str, nn.Module, bool]] = []
        owner_ids = {id(o.input_projection) for o in _projection_owners(module)}
        for name, m in module.named_modules():
            if isinstance(m, nn.Embedding):
                targets.append((name, m, False))
            elif id(m) in owner_ids:
                linear = m[0] if isinstance(m, ProjectionWithNorm) else m
                targets.append((f"{name}.0" if linear is not m else name, linear, True))
        if not targets:
            log.warning("SmallInitEmb: no nn.Embedding and no input_projection found")
        rows = []
        with torch.no_grad():
            for name, layer, is_projection in targets:
                w = torch.empty(layer.weight.shape, dtype=torch.float32)
                w.uniform_(-self.a, self.a, generator=gen)
                layer.weight.copy_(w)
                bias = getattr(layer, "bias", None)
                if self.init_bias and bias is not None:
                    bias.zero_()
                rows.append(
                    {
                        "layer": name,
                        "type": type(layer).__name__,
                        "a": self.a,
                        "max_abs": layer.weight.abs().max().item(),
                        "layernorm": is_projection and self.add_layernorm,
                    }
                )
        log.info("SmallInitEmb (a=%g):\n%s", self.a, format_report(rows))
        return rows


def _projection_owners(module: nn.Module) -> list[nn.Module]:
    # Modules declaring an ``input_projection`` Linear (possibly already wrapped).
    owners = []
    for m in module.modules():
        proj = getattr(m, "input_projection", None)
        if isinstance(proj, (nn.Linear, ProjectionWithNorm)):
            owners.append(m)
    return owners


def _has_layernorm(owner: nn.Module) -> bool:
    # Whether a LayerNorm already follows the owner's input projection.
    return isinstance(owner.input_projection, ProjectionWithNorm) or isinstance(
        getattr(owner, "input_norm", None), nn.LayerNorm
    )
