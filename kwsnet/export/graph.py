"""The model as the C runtime's format-v2 graph: tensors by id, one node per C layer.

Tensor 0 is the model input (raw audio ``[1, T]``, or features ``[n_mels, frames]`` without
the front end); node ``i`` reads the tensor ids in ``inputs`` and produces tensor ``i + 1``.

Design: a **tracer over known block types**, here in ``kwsnet/export``, not an export hook on
the models. The tracer decides how a PyTorch module maps onto C layers (which convs get their
BatchNorm folded, where the shortcut joins, how masked pooling becomes a plain mean for a
fixed-length clip), and those are numerics decisions that belong with the runtime they must
match and with the parity gate that checks them; a hook in ``models/`` would spread them over
every model file and let a model claim an equivalence nobody tests. ``torch.fx`` cannot
follow the backbones (data-dependent masks and lengths). Adding a block type is one function
in :data:`BLOCK_TRACERS` (today CnnMel, MatchboxNet, DSCNN, BCResNet and StreamTCN); anything
the tracer does not know is an :class:`ExportError` naming the module type and its path.

Each node keeps two PyTorch computations: ``module`` (what the C record encodes: a Conv1d
with its BatchNorm folded in) and ``ref`` (the original modules, unfolded), so
:meth:`Graph.run` gives the per-layer reference for the parity table and
:func:`folding_delta` measures what folding costs in float32.

**Conv2d layout.** The runtime keeps every tensor as ``[C, L]``; a Conv2d record reads and
writes each channel as a row-major ``[H, W]`` plane (``L = H * W``, :class:`FlatConv2d`). The
front end's output ``[n_out, frames]`` is one such plane, so the runtime's images are
``[C, freq, time]``: time is the contiguous axis. DS-CNN's torch tensors are ``[B, C, time,
freq]`` (``features [B, T, F]`` unsqueezed), the transpose; the tracer maps each of its convs
onto the runtime's orientation (kernel, stride and padding per axis swapped, weights
transposed), so no transpose op runs, and the per-layer reference transposes PyTorch's
tensors to compare. DS-CNN's pooling (mean over freq, then over the frames) is then a mean
over the whole plane.

**BC-ResNet** keeps torch's own orientation: its images are ``[B, C, freq, time]`` (the
features transposed and unsqueezed), the runtime's ``[C, freq * time]`` planes, so its Conv2d
records are its convs as they are (BatchNorm2d folded). A block's SubSpectralNorm is one
affine per (channel, sub-band) at inference, so a :class:`RowAffine` (its affine repeated on
the sub-band's frequency rows; folding it into the frequency-wise conv would need a weight per
output row, which no conv has); the mean over frequency is a depthwise Conv2d of kernel
``(F, 1)`` and weights ``1 / F`` (exact up to float32 rounding, and an exact int8 weight); the
temporal depthwise conv (dilated, BatchNorm2d folded) and the 1×1 conv are Conv1dEx records on
the ``[C, time]`` result; SiLU is its own record; the broadcast over frequency is a
:class:`BroadcastAdd` (``[C, F * T] + [C, T]``), then the identity shortcut's Add (normal
blocks) and the ReLU, in torch's order of additions.

**Heads.** A ``LinearHead`` is its Linear. A cosine head (``AAMSoftmaxHead``,
``AMSoftmaxHead``) gives ``scale * cos(embedding, class weight)`` at inference (the margin only
changes the target logit in training), so it is an ``L2Norm`` node (the embedding over its
norm) and a bias-free Linear whose rows are the unit class weights times ``scale``, folded in
float64 and rounded once: the per-layer reference keeps the head's own unfolded computation.

The C runtime takes **fixed-length clips**: every frame is valid, so the masks of
``CnnMel`` are all ones and a masked mean over valid frames is the mean over all frames. A
shorter clip must be zero-padded to the exported length (as the DataModule pads), and then C
and a PyTorch run with ``lengths = T`` agree; PyTorch with the clip's true length differs
(the padding frames count in the mean and in the front end's normalisation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from kwsnet.export.layers import ExportError, _head_linear

__all__ = [
    "BLOCK_TRACERS",
    "BroadcastAdd",
    "FlatConv2d",
    "Graph",
    "L2Normalize",
    "Node",
    "RowAffine",
    "fold_batchnorm",
    "folding_delta",
    "graph_from_layers",
    "model_graph",
    "trace_model",
]

Ref = Callable[[list[torch.Tensor]], torch.Tensor]


@dataclass
class Node:
    """One C layer: ``kind`` (a ``LAYER_TYPES`` name), ``path`` in the model, the input
    tensor ids, ``module`` (what the record encodes; None for Add and the front end),
    ``ref`` (PyTorch's own computation on batched ``[B, ...]`` inputs) and, for the front end,
    its ``tables`` (``kwsnet.export.frontend.FrontendTables``)."""

    kind: str
    path: str
    inputs: tuple[int, ...]
    ref: Ref
    module: nn.Module | None = None
    folded: Ref | None = None  # PyTorch on the exported (folded) weights; default: ref
    tables: object | None = None


@dataclass
class Graph:
    """Per-sample ``input_shape`` and the nodes in execution order."""

    input_shape: tuple[int, ...]
    nodes: list[Node] = field(default_factory=list)

    def add(self, node: Node) -> int:
        """Append ``node``; returns the id of the tensor it produces."""
        for t in node.inputs:
            if not 0 <= t <= len(self.nodes):
                raise ExportError(f"{node.path}: input tensor {t} is not produced before it")
        self.nodes.append(node)
        return len(self.nodes)

    @property
    def is_chain(self) -> bool:
        """Every node reads the previous tensor (a format-v1 file can hold it)."""
        return all(n.inputs == (i,) for i, n in enumerate(self.nodes))

    @torch.no_grad()
    def run(self, x: torch.Tensor, folded: bool = False) -> list[torch.Tensor]:
        """All tensors for a batch ``x [B, *input_shape]`` (or ``[B, prod]``): ``[x, t1, ...]``
        with PyTorch's reference (``folded``: the exported, BN-folded weights)."""
        tensors = [x.reshape(len(x), *self.input_shape)]
        for n in self.nodes:
            fn = n.folded if folded and n.folded is not None else n.ref
            tensors.append(fn([tensors[t] for t in n.inputs]))
        return tensors


def _one_input(module: nn.Module) -> Ref:
    return lambda xs: module(xs[0])


def graph_from_layers(named: Sequence[tuple[str, nn.Module]], input_shape: Sequence[int]) -> Graph:
    """A chain of standard layers (``collect_named_layers``) as a graph."""
    g = Graph(tuple(int(d) for d in input_shape))
    for path, m in named:
        g.add(Node(type(m).__name__, path, (len(g.nodes),), _one_input(m), m))
    return g


# ------------------------------------------------------------------ BatchNorm folding


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv1d | nn.Conv2d, bn: nn.Module, path: str) -> nn.Module:
    """A Conv1d (Conv2d) computing ``bn(conv(x))`` in eval mode for a BatchNorm1d
    (BatchNorm2d): ``w' = w * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma /
    sqrt(running_var + eps)``, computed in float64 and rounded to float32 once
    (docs/cnative.md says what that does to the logits)."""
    bn_type = nn.BatchNorm2d if isinstance(conv, nn.Conv2d) else nn.BatchNorm1d
    if not isinstance(bn, bn_type) or bn.running_mean is None:
        raise ExportError(
            f"BatchNorm at '{path}': folding into a {type(conv).__name__} needs a "
            f"{bn_type.__name__} with running statistics, got {type(bn).__name__}"
        )
    w = conv.weight.double()
    co = w.shape[0]
    gamma = bn.weight.double() if bn.weight is not None else torch.ones(co, dtype=torch.float64)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros(co, dtype=torch.float64)
    s = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    b = conv.bias.double() if conv.bias is not None else torch.zeros(co, dtype=torch.float64)
    out = type(conv)(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    )
    out.weight.copy_((w * s.reshape(-1, *[1] * (w.dim() - 1))).float())
    out.bias.copy_(((b - bn.running_mean.double()) * s + beta).float())
    return out.eval()


class FlatConv2d(nn.Module):
    """A Conv2d as the C runtime's Conv2d record runs it, on ``[C, H * W]`` tensors.

    Args:
        conv: the ``nn.Conv2d`` (dilation 1, its own padding 0: ``pad`` holds all of it).
        pad: zeros ``(top, bottom, left, right)``.
        in_hw: the input plane ``(H, W)``.

    Shapes: ``forward(x [B, C_in, H * W] or [B, H, W] (C_in = 1)) -> [B, C_out, H_out *
    W_out]``; :attr:`out_hw` is ``(H_out, W_out)``.
    """

    def __init__(
        self, conv: nn.Conv2d, pad: tuple[int, int, int, int], in_hw: tuple[int, int]
    ) -> None:
        super().__init__()
        if conv.dilation != (1, 1) or conv.padding != (0, 0) or conv.padding_mode != "zeros":
            raise ValueError("FlatConv2d takes a Conv2d of dilation 1 and padding 0 (pad: zeros)")
        self.conv = conv
        self.pad = tuple(int(p) for p in pad)
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
        pt, pb, pl, pr = self.pad
        self.out_hw = (
            (self.in_hw[0] + pt + pb - kh) // sh + 1,
            (self.in_hw[1] + pl + pr - kw) // sw + 1,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C_in, H * W]`` -> ``[B, C_out, H_out * W_out]``."""
        x = x.reshape(len(x), self.conv.in_channels, *self.in_hw)
        pt, pb, pl, pr = self.pad
        y = self.conv(nn.functional.pad(x, (pl, pr, pt, pb)))
        return y.reshape(len(y), self.conv.out_channels, -1)


def _conv_node(g: Graph, conv: nn.Conv1d, bn: nn.Module | None, path: str, src: int) -> int:
    """Conv1d (+ its BatchNorm folded) reading tensor ``src``; returns the new tensor id."""
    if not isinstance(conv, nn.Conv1d):
        raise ExportError(f"expected Conv1d at '{path}', got {type(conv).__name__}")
    if bn is None:
        return g.add(Node("Conv1dEx", path, (src,), _one_input(conv), conv))
    folded = fold_batchnorm(conv, bn, path)
    return g.add(
        Node(
            "Conv1dEx",
            f"{path}+bn",
            (src,),
            lambda xs: bn(conv(xs[0])),
            folded,
            folded=_one_input(folded),
        )
    )


def _relu(g: Graph, path: str, src: int) -> int:
    relu = nn.ReLU()
    return g.add(Node("ReLU", path, (src,), _one_input(relu), relu))


# ------------------------------------------------------------------ block tracers


def _trace_conv_bn_relu_seq(g: Graph, seq: nn.Sequential, path: str, src: int) -> int:
    """A Sequential of Conv1d [BatchNorm1d] [ReLU] groups (CnnMel's stem)."""
    mods = [(f"{path}.{n}", m) for n, m in seq.named_children()]
    i, t = 0, src
    while i < len(mods):
        p, m = mods[i]
        if isinstance(m, (nn.Identity, nn.Dropout)):
            i += 1
        elif isinstance(m, nn.Conv1d):
            bn = mods[i + 1][1] if i + 1 < len(mods) else None
            if isinstance(bn, nn.BatchNorm1d):
                t = _conv_node(g, m, bn, p, t)
                i += 2
            else:
                t = _conv_node(g, m, None, p, t)
                i += 1
        elif isinstance(m, nn.ReLU):
            t = _relu(g, p, t)
            i += 1
        else:
            raise ExportError(
                f"unsupported layer {type(m).__name__} at '{p}'; the tracer knows Conv1d, "
                "BatchNorm1d after a Conv1d, ReLU"
            )
    return t


def _trace_res_block(g: Graph, block: nn.Module, path: str, src: int) -> int:
    """``kwsnet.models.cnn_mel._ResBlock``: relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))."""
    h = _conv_node(g, block.conv1, block.bn1, f"{path}.conv1", src)
    h = _relu(g, f"{path}.relu1", h)
    h = _conv_node(g, block.conv2, block.bn2, f"{path}.conv2", h)
    sc = block.shortcut
    if isinstance(sc, nn.Identity):
        s = src
    elif isinstance(sc, nn.Sequential) and len(sc) == 2:
        s = _conv_node(g, sc[0], sc[1], f"{path}.shortcut.0", src)
    else:
        raise ExportError(f"unsupported shortcut {type(sc).__name__} at '{path}.shortcut'")
    out = g.add(Node("Add", f"{path}.add", (h, s), lambda xs: xs[0] + xs[1]))
    return _relu(g, f"{path}.relu", out)


def _trace_pooling(
    g: Graph,
    pool: nn.Module,
    path: str,
    src: int,
    frames: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Pooling over time of ``[C, L]`` to ``[C]`` (all frames valid: see module docstring).
    ``frames``: what the model does to the tensor before its pooling sees ``[B, C, frames]``
    (DS-CNN: the mean over freq, with MeanPooling only: the C node pools the tensor as it is,
    and a mean of the per-frame means over the plane is the plane's mean)."""
    name = type(pool).__name__
    if getattr(pool, "batch_norm", False) or not isinstance(
        getattr(pool, "dropout", nn.Identity()), (nn.Identity, nn.Dropout)
    ):
        raise ExportError(f"pooling {name} at '{path}': batch_norm is not supported")
    pre = frames or (lambda x: x)
    ref_pool: Ref = lambda xs: pool(pre(xs[0]).transpose(1, 2)).unsqueeze(-1)  # noqa: E731
    if name == "MeanPooling":
        avg = nn.AdaptiveAvgPool1d(1)
        t = g.add(Node("AdaptiveAvgPool1d", path, (src,), ref_pool, avg, _one_input(avg)))
    elif name == "MaxPooling":
        length = _length_of(g, src)
        mx = nn.MaxPool1d(length, length)
        t = g.add(Node("MaxPool1d", path, (src,), ref_pool, mx, _one_input(mx)))
    elif name == "SelfAttentionPooling":
        return g.add(Node("AttnPool", path, (src,), lambda xs: pool(xs[0].transpose(1, 2)), pool))
    elif name == "AttentiveStatisticsPooling":
        att = [type(m).__name__ for m in pool.attention]  # type: ignore[attr-defined]
        if att != ["Linear", "Tanh", "Linear"]:
            raise ExportError(
                f"pooling {name} at '{path}': the C AttnStatsPool op runs an attention net "
                f"Linear → Tanh → Linear, got {' → '.join(att)}"
            )
        ref: Ref = lambda xs: pool(xs[0].transpose(1, 2))  # noqa: E731
        return g.add(Node("AttnStatsPool", path, (src,), ref, pool))
    else:
        raise ExportError(
            f"unsupported pooling {name} at '{path}'; the C runtime pools with MeanPooling, "
            "MaxPooling, SelfAttentionPooling or AttentiveStatisticsPooling"
        )
    flat = nn.Flatten()
    return g.add(Node("Flatten", f"{path}.flatten", (t,), _one_input(flat), flat))


class L2Normalize(nn.Module):
    """``torch.nn.functional.normalize(x, dim=-1, eps=eps)``: the C runtime's L2Norm record.

    Args:
        features: the width ``F``.
        eps: the smallest norm divided by (default 1e-12, torch's).

    Shapes: ``forward(x [B, F]) -> [B, F]``."""

    def __init__(self, features: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.features = int(features)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, F]`` -> ``x / max(||x||_2, eps)`` per row."""
        return nn.functional.normalize(x, dim=-1, eps=self.eps)


# Heads whose eval-mode logits are ``scale * cos(embedding, class weight)`` (kwsnet.nn.heads:
# the margin is a training-only change of the target logit).
_COSINE_HEADS = ("AAMSoftmaxHead", "AMSoftmaxHead")


@torch.no_grad()
def _trace_head(g: Graph, head: nn.Module, src: int) -> int:
    """The head after the pooled embedding (tensor ``src``): a Linear (``_head_linear``), or a
    cosine head at inference as L2Norm of the embedding and a bias-free Linear whose rows are
    the unit class weights times ``scale`` (normalised and scaled in float64, rounded to
    float32 once)."""
    if type(head).__name__ not in _COSINE_HEADS:
        t = src
        for path, lin in _head_linear(head):
            t = g.add(Node(type(lin).__name__, path, (t,), _one_input(lin), lin))
        return t
    norm = L2Normalize(head.weight.shape[1])
    t = g.add(Node("L2Norm", "head.normalize", (src,), _one_input(norm), norm))
    w = head.weight.detach().double()
    cos = nn.Linear(w.shape[1], w.shape[0], bias=False)
    cos.weight.copy_((float(head.scale) * w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)).float())
    cos.eval()

    def ref(xs: list[torch.Tensor]) -> torch.Tensor:
        return head.scale * nn.functional.linear(
            xs[0], nn.functional.normalize(head.weight, dim=-1)
        )

    return g.add(Node("Linear", "head.cosine", (t,), ref, cos, folded=_one_input(cos)))


def _length_of(g: Graph, t: int) -> int:
    x = torch.zeros(1, *g.input_shape)
    return int(g.run(x)[t].shape[-1])


def _trace_cnn_mel(g: Graph, backbone: nn.Module, path: str, src: int) -> int:
    t = _trace_conv_bn_relu_seq(g, backbone.stem, f"{path}.stem", src)
    for i, block in enumerate(backbone.blocks):
        p = f"{path}.blocks.{i}"
        if type(block).__name__ != "_ResBlock":
            raise ExportError(f"unsupported block {type(block).__name__} at '{p}'")
        t = _trace_res_block(g, block, p, t)
    return _trace_pooling(g, backbone.pooling, f"{path}.pooling", t)


def _trace_sub_block(
    g: Graph, sub: nn.Module, path: str, src: int, residual: int | None = None
) -> int:
    """``kwsnet.models.matchboxnet._SubBlock``: relu(bn(pointwise(depthwise x)) [+ residual])."""
    h = _conv_node(g, sub.depthwise, None, f"{path}.depthwise", src)
    h = _conv_node(g, sub.pointwise, sub.bn, f"{path}.pointwise", h)
    if residual is not None:
        h = g.add(Node("Add", f"{path}.add", (h, residual), lambda xs: xs[0] + xs[1]))
    return _relu(g, f"{path}.relu", h)  # dropout: identity at inference


def _trace_matchboxnet(g: Graph, backbone: nn.Module, path: str, src: int) -> int:
    t = _trace_sub_block(g, backbone.prologue, f"{path}.prologue", src)
    for i, block in enumerate(backbone.blocks):
        p = f"{path}.blocks.{i}"
        res = block.residual
        if not (isinstance(res, nn.Sequential) and len(res) == 2):
            raise ExportError(f"unsupported residual {type(res).__name__} at '{p}.residual'")
        r = _conv_node(g, res[0], res[1], f"{p}.residual.0", t)
        h = t
        for j, sub in enumerate(block.subs):
            last = j == len(block.subs) - 1
            h = _trace_sub_block(g, sub, f"{p}.subs.{j}", h, r if last else None)
        t = h
    t = _trace_sub_block(g, backbone.epilogue, f"{path}.epilogue", t)
    t = _trace_conv_bn_relu_seq(g, backbone.epilogue_pw, f"{path}.epilogue_pw", t)
    return _trace_pooling(g, backbone.pooling, f"{path}.pooling", t)


def _conv2d_node(g: Graph, block: nn.Module, path: str, src: int, hw: tuple[int, int]) -> int:
    """``kwsnet.models.ds_cnn._ConvBN`` (ZeroPad2d → Conv2d → BatchNorm2d; its ReLU is the
    caller's) reading tensor ``src``, a ``[C, freq * time]`` plane of ``hw = (freq, time)``, in
    the runtime's orientation (module docstring); returns the new tensor id."""
    pad, conv, bn = (
        getattr(block, "pad", None),
        getattr(block, "conv", None),
        getattr(block, "bn", None),
    )
    if not (isinstance(pad, nn.ZeroPad2d) and isinstance(conv, nn.Conv2d)):
        raise ExportError(
            f"unsupported block {type(block).__name__} at '{path}': the tracer takes "
            "ZeroPad2d → Conv2d → BatchNorm2d"
        )
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ExportError(
            f"Conv2d at '{path}.conv': the C Conv2d takes dilation 1 and numeric zero padding "
            f"(got dilation {conv.dilation}, padding {conv.padding!r}, {conv.padding_mode})"
        )
    folded = fold_batchnorm(conv, bn, f"{path}.bn")  # type: ignore[arg-type]
    # torch's [time, freq] -> the runtime's [freq, time]: swap every per-axis setting
    (pt_, pf), (kt, kf), (st, sf) = conv.padding, conv.kernel_size, conv.stride
    left, right, top, bottom = pad.padding  # ZeroPad2d: (freq before, after, time before, after)
    c2 = nn.Conv2d(conv.in_channels, conv.out_channels, (kf, kt), (sf, st), groups=conv.groups)
    with torch.no_grad():
        c2.weight.copy_(folded.weight.transpose(2, 3))
        c2.bias.copy_(folded.bias)
    flat = FlatConv2d(c2.eval(), (left + pf, right + pf, top + pt_, bottom + pt_), hw)
    f, t = hw

    def ref(xs: list[torch.Tensor]) -> torch.Tensor:
        x = xs[0].reshape(len(xs[0]), conv.in_channels, f, t).transpose(2, 3)
        y = bn(conv(pad(x))).transpose(2, 3)  # type: ignore[misc]
        return y.reshape(len(y), conv.out_channels, -1)

    return g.add(Node("Conv2d", f"{path}.conv+bn", (src,), ref, flat, folded=_one_input(flat)))


def _trace_ds_cnn(g: Graph, backbone: nn.Module, path: str, src: int) -> int:
    """``kwsnet.models.ds_cnn.DSCNN``: the stem and every block a Conv2d (BN folded) and a
    ReLU on ``[C, freq * time]`` planes, then its mean pooling as a mean over the plane."""
    x = torch.zeros(1, *g.input_shape)
    hw = tuple(int(d) for d in g.run(x)[src].shape[-2:])  # the features [n_out, frames]
    blocks = [(f"{path}.stem", backbone.stem)]
    blocks += [(f"{path}.blocks.{i}", b) for i, b in enumerate(backbone.blocks)]
    t = src
    for p, block in blocks:
        if type(block).__name__ != "_ConvBN":
            raise ExportError(f"unsupported block {type(block).__name__} at '{p}'")
        t = _conv2d_node(g, block, p, t, hw)  # type: ignore[arg-type]
        hw = g.nodes[-1].module.out_hw  # type: ignore[union-attr]
        t = _relu(g, f"{p}.relu", t)
    pool, ppath = backbone.pooling, f"{path}.pooling"
    if type(pool).__name__ != "MeanPooling":
        raise ExportError(
            f"unsupported pooling {type(pool).__name__} at '{ppath}': DS-CNN averages over freq "
            "before its pooling, and the C runtime holds DS-CNN's planes as [C, freq * time], "
            "so it pools DS-CNN with MeanPooling only (another pooling needs a mean-over-freq op)"
        )
    f, tt = hw
    return _trace_pooling(
        g, pool, ppath, t, lambda x: x.reshape(len(x), x.shape[1], f, tt).mean(dim=2)
    )


class RowAffine(nn.Module):
    """The C runtime's RowAffine record: ``y[c, h, w] = x[c, h, w] * scale[c, h] + shift[c, h]``
    on ``[C, H * W]`` tensors (SubSpectralNorm at inference: :func:`sub_spectral_affine`).

    Args:
        scale: ``[C, H]`` float32.
        shift: ``[C, H]`` float32.
        width: ``W``.

    Shapes: ``forward(x [B, C, H * W]) -> [B, C, H * W]``. :attr:`weight` ``[C * H, 1, 1]`` and
    :attr:`bias` ``[C * H]`` are the same numbers as a depthwise kernel-1 Conv1d over the
    ``C * H`` rows of ``W`` (its int8 form)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, width: int) -> None:
        super().__init__()
        if scale.dim() != 2 or scale.shape != shift.shape:
            raise ValueError(f"scale and shift must be [C, H], got {tuple(scale.shape)}, "
                             f"{tuple(shift.shape)}")  # fmt: skip
        self.register_buffer("scale", scale.detach().to(torch.float32).clone())
        self.register_buffer("shift", shift.detach().to(torch.float32).clone())
        self.width = int(width)

    @property
    def geometry(self) -> tuple[int, int, int]:
        """The record's ints ``(C, H, W)``."""
        c, h = self.scale.shape
        return int(c), int(h), self.width

    @property
    def weight(self) -> torch.Tensor:
        return self.scale.reshape(-1, 1, 1)

    @property
    def bias(self) -> torch.Tensor:
        return self.shift.reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H * W]`` -> ``x * scale + shift`` per (channel, row)."""
        c, h, w = self.geometry
        y = x.reshape(len(x), c, h, w) * self.scale[None, :, :, None] + self.shift[None, :, :, None]
        return y.reshape(len(x), c, h * w)


class BroadcastAdd(nn.Module):
    """The C runtime's BroadcastAdd record: ``a [B, C, H * W] + b [B, C, W]``, ``b`` added to
    every one of ``a``'s ``H`` rows (BC-ResNet's temporal branch over the frequency bins).

    Args:
        channels: ``C``. height: ``H``. width: ``W``.

    Shapes: ``forward(a [B, C, H * W], b [B, C, W]) -> [B, C, H * W]``."""

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.geometry = (int(channels), int(height), int(width))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        c, h, w = self.geometry
        y = b.reshape(len(b), c, 1, w) + a.reshape(len(a), c, h, w)  # torch's order: h + aux
        return y.reshape(len(a), c, h * w)


@torch.no_grad()
def sub_spectral_affine(ssn: nn.Module, path: str, hw: tuple[int, int]) -> RowAffine:
    """``kwsnet.models.bc_resnet.SubSpectralNorm`` at inference on a ``[C, F * T]`` plane of
    ``hw = (F, T)``: channel ``c``'s sub-band ``s`` (rows ``s F/S .. (s+1) F/S - 1``) is
    BatchNorm2d channel ``c S + s``, so row ``f`` gets ``scale = gamma / sqrt(var + eps)`` and
    ``shift = beta - mean * scale`` of channel ``c S + f // (F / S)`` (float64, rounded once)."""
    bn, n_sub = getattr(ssn, "bn", None), int(getattr(ssn, "sub_bands", 0))
    f, t = hw
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or n_sub < 1 or f % n_sub:
        raise ExportError(
            f"SubSpectralNorm at '{path}': the C RowAffine folds a BatchNorm2d with running "
            f"statistics over sub_bands dividing the {f} frequency rows (got "
            f"{type(bn).__name__}, sub_bands {n_sub})"
        )
    n = bn.num_features
    gamma = bn.weight.double() if bn.weight is not None else torch.ones(n, dtype=torch.float64)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros(n, dtype=torch.float64)
    s = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    b = beta - bn.running_mean.double() * s
    rows = torch.arange(f) // (f // n_sub)  # sub-band of each row
    idx = torch.arange(n // n_sub)[:, None] * n_sub + rows[None, :]  # [C, F]
    return RowAffine(s[idx].float(), b[idx].float(), t).eval()


def _plane_conv(
    g: Graph, conv: nn.Module, bn: nn.Module | None, path: str, src: int, hw: tuple[int, int]
) -> tuple[int, tuple[int, int]]:
    """A Conv2d (+ its BatchNorm2d folded) of BC-ResNet on tensor ``src``, a ``[C, H * W]``
    plane of ``hw``, in torch's orientation (module docstring); returns the new tensor id and
    the output plane."""
    if not isinstance(conv, nn.Conv2d):
        raise ExportError(f"expected Conv2d at '{path}', got {type(conv).__name__}")
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ExportError(
            f"Conv2d at '{path}': the C Conv2d takes dilation 1 and numeric zero padding "
            f"(got dilation {conv.dilation}, padding {conv.padding!r}, {conv.padding_mode})"
        )
    src_conv = fold_batchnorm(conv, bn, f"{path}+bn") if bn is not None else conv
    c2 = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                   groups=conv.groups, bias=src_conv.bias is not None)  # fmt: skip
    with torch.no_grad():
        c2.weight.copy_(src_conv.weight)
        if src_conv.bias is not None:
            c2.bias.copy_(src_conv.bias)
    ph, pw = conv.padding
    flat = FlatConv2d(c2.eval(), (ph, ph, pw, pw), hw)
    h, w = hw

    def ref(xs: list[torch.Tensor]) -> torch.Tensor:
        y = conv(xs[0].reshape(len(xs[0]), conv.in_channels, h, w))
        y = bn(y) if bn is not None else y
        return y.reshape(len(y), conv.out_channels, -1)

    name = f"{path}+bn" if bn is not None else path
    t = g.add(Node("Conv2d", name, (src,), ref, flat, folded=_one_input(flat)))
    return t, flat.out_hw


def _plane_conv_bn_relu(
    g: Graph, seq: nn.Module, path: str, src: int, hw: tuple[int, int]
) -> tuple[int, tuple[int, int]]:
    """BC-ResNet's ``Sequential(Conv2d, BatchNorm2d, ReLU)`` (stem, transition, end)."""
    kinds = [type(m).__name__ for m in seq] if isinstance(seq, nn.Sequential) else []
    if kinds != ["Conv2d", "BatchNorm2d", "ReLU"]:
        raise ExportError(
            f"unsupported block {type(seq).__name__} at '{path}': the tracer takes "
            f"Sequential(Conv2d, BatchNorm2d, ReLU), got {kinds or type(seq).__name__}"
        )
    t, hw = _plane_conv(g, seq[0], seq[1], f"{path}.0", src, hw)  # type: ignore[index]
    return _relu(g, f"{path}.2", t), hw


@torch.no_grad()
def _time_conv(conv: nn.Module, bn: nn.Module | None, path: str) -> nn.Conv1d:
    """A ``(1, k)`` Conv2d on ``[C, 1, T]`` (+ its BatchNorm2d folded) as the Conv1d on
    ``[C, T]``."""
    ok = isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros"
    ok = ok and not isinstance(conv.padding, str) and conv.kernel_size[0] == 1
    ok = ok and conv.stride[0] == 1 and conv.padding[0] == 0
    if not ok:
        raise ExportError(
            f"unsupported temporal conv at '{path}': the tracer maps a Conv2d of kernel (1, k), "
            "stride 1 and zero padding 0 along frequency to a Conv1dEx"
        )
    c1 = nn.Conv1d(
        conv.in_channels, conv.out_channels, conv.kernel_size[1], conv.stride[1],
        conv.padding[1], conv.dilation[1], conv.groups, bias=conv.bias is not None,
    )  # fmt: skip
    c1.weight.copy_(conv.weight[:, :, 0, :])
    if conv.bias is not None:
        c1.bias.copy_(conv.bias)
    if bn is None:
        return c1.eval()
    if not isinstance(bn, nn.BatchNorm2d):
        raise ExportError(f"BatchNorm at '{path}': expected BatchNorm2d, got {type(bn).__name__}")
    bn1 = nn.BatchNorm1d(bn.num_features, eps=bn.eps, affine=bn.affine)
    bn1.load_state_dict(bn.state_dict())
    return fold_batchnorm(c1, bn1.eval(), path)  # type: ignore[return-value]


def _trace_bc_block(
    g: Graph, block: nn.Module, path: str, src: int, hw: tuple[int, int]
) -> tuple[int, tuple[int, int]]:
    """``kwsnet.models.bc_resnet._BCResBlock`` (module docstring)."""
    t = src
    if block.transition:
        t, hw = _plane_conv_bn_relu(g, block.pre, f"{path}.pre", t, hw)
    x = t
    t, hw = _plane_conv(g, block.freq_conv, None, f"{path}.freq_conv", t, hw)
    ssn, f, w = block.ssn, *hw
    affine = sub_spectral_affine(ssn, f"{path}.ssn", hw)
    c = affine.geometry[0]

    def ssn_ref(xs: list[torch.Tensor]) -> torch.Tensor:
        return ssn(xs[0].reshape(len(xs[0]), c, f, w)).reshape(len(xs[0]), c, -1)

    aux = g.add(Node("RowAffine", f"{path}.ssn", (t,), ssn_ref, affine, _one_input(affine)))
    mean = nn.Conv2d(c, c, (f, 1), groups=c, bias=False)
    with torch.no_grad():
        mean.weight.fill_(1.0 / f)
    flat = FlatConv2d(mean.eval(), (0, 0, 0, 0), hw)
    mean_ref: Ref = lambda xs: xs[0].reshape(len(xs[0]), c, f, w).mean(dim=2)  # noqa: E731
    t = g.add(Node("Conv2d", f"{path}.freq_mean", (aux,), mean_ref, flat, _one_input(flat)))
    temp, bn = block.temp_conv, block.bn
    folded = _time_conv(temp, bn, f"{path}.temp_conv+bn")
    ref: Ref = lambda xs: bn(temp(xs[0].unsqueeze(2))).squeeze(2)  # noqa: E731
    t = g.add(Node("Conv1dEx", f"{path}.temp_conv+bn", (t,), ref, folded, _one_input(folded)))
    act, pw, drop = block.act, block.pointwise, block.dropout
    no_op = isinstance(drop, (nn.Dropout, nn.Dropout2d, nn.Identity))
    if not isinstance(act, nn.SiLU) or not no_op:
        raise ExportError(
            f"unsupported block at '{path}': the tracer takes SiLU after the temporal conv and "
            f"(eval-mode) dropout after the 1x1 conv, got {type(act).__name__}, "
            f"{type(drop).__name__}"
        )
    t = g.add(Node("SiLU", f"{path}.act", (t,), _one_input(act), nn.SiLU()))
    pw1 = _time_conv(pw, None, f"{path}.pointwise")
    pw_ref: Ref = lambda xs: pw(xs[0].unsqueeze(2)).squeeze(2)  # noqa: E731
    t = g.add(Node("Conv1dEx", f"{path}.pointwise", (t,), pw_ref, pw1, _one_input(pw1)))
    bcast = BroadcastAdd(c, f, w)
    t = g.add(Node("BroadcastAdd", f"{path}.broadcast_add", (aux, t), lambda xs: bcast(*xs), bcast))
    if not block.transition:
        t = g.add(Node("Add", f"{path}.add", (t, x), lambda xs: xs[0] + xs[1]))
    return _relu(g, f"{path}.relu", t), hw


def _trace_bc_resnet(g: Graph, backbone: nn.Module, path: str, src: int) -> int:
    """``kwsnet.models.bc_resnet.BCResNet`` on the features' ``[freq, time]`` plane: stem,
    BC-ResBlocks, the end's depthwise conv over the remaining frequency bins and its 1×1 conv
    (module docstring), then its pooling over time."""
    x = torch.zeros(1, *g.input_shape)
    hw = tuple(int(d) for d in g.run(x)[src].shape[-2:])  # the features [n_out, frames]
    t, hw = _plane_conv_bn_relu(g, backbone.stem, f"{path}.stem", src, hw)  # type: ignore[arg-type]
    for i, block in enumerate(backbone.blocks):
        p = f"{path}.blocks.{i}"
        if type(block).__name__ != "_BCResBlock":
            raise ExportError(f"unsupported block {type(block).__name__} at '{p}'")
        t, hw = _trace_bc_block(g, block, p, t, hw)
    t, hw = _plane_conv(g, backbone.end_dw, None, f"{path}.end_dw", t, hw)
    t, hw = _plane_conv_bn_relu(g, backbone.end_pw, f"{path}.end_pw", t, hw)
    if hw[0] != 1:
        raise ExportError(
            f"Conv2d at '{path}.end_dw' leaves {hw[0]} frequency rows; the pooling over time "
            "needs one (its kernel must span the remaining bins)"
        )
    return _trace_pooling(g, backbone.pooling, f"{path}.pooling", t)


def _length_after(g: Graph, t: int) -> int:
    x = torch.zeros(1, *g.input_shape)
    return int(g.run(x)[t].shape[-1])


def _trace_stream_tcn(g: Graph, backbone: nn.Module, path: str, src: int) -> int:
    """``kwsnet.models.stream_tcn.StreamTCN``: valid stride-1 Conv1dEx records (BN folded into
    the stem and each pointwise conv) and ReLUs, then ``LastFrame`` as a depthwise Conv1dEx of
    kernel 2, dilation ``L - 1`` and weights ``[0, 1]`` (``0 * x[0] + 1 * x[L - 1]``: the last
    frame exactly, in float and as an int8 weight; nothing when ``L`` is 1) and a Flatten.
    That chain is what the C stream's incremental path recognises (docs/streaming.md)."""
    if _length_after(g, src) < backbone.receptive_field:
        raise ExportError(
            f"StreamTCN at '{path}': the clip's {_length_after(g, src)} frames are fewer than "
            f"its receptive field ({backbone.receptive_field}); the export runs valid convs only"
        )
    t = _conv_node(g, backbone.stem, backbone.stem_bn, f"{path}.stem", src)
    t = _relu(g, f"{path}.stem_relu", t)
    for i, block in enumerate(backbone.blocks):
        p = f"{path}.blocks.{i}"
        t = _conv_node(g, block.depthwise, None, f"{p}.depthwise", t)
        t = _conv_node(g, block.pointwise, block.bn, f"{p}.pointwise", t)
        t = _relu(g, f"{p}.relu", t)
    pool, ppath = backbone.pooling, f"{path}.pooling"
    if type(pool).__name__ != "LastFrame":
        return _trace_pooling(g, pool, ppath, t)
    if getattr(pool, "batch_norm", False) or not isinstance(
        pool.dropout, (nn.Identity, nn.Dropout)
    ):
        raise ExportError(f"pooling LastFrame at '{ppath}': batch_norm is not supported")
    length, c = _length_after(g, t), backbone.embed_dim
    if length > 1:
        if length - 1 > 64:  # KWSN_MAX_CONV_DILATION
            raise ExportError(
                f"pooling LastFrame at '{ppath}': {length} frames; the C runtime's last-frame "
                "conv takes at most 65 (a dilation of at most 64): a larger receptive field or "
                "a shorter clip"
            )
        sel = nn.Conv1d(c, c, 2, dilation=length - 1, groups=c, bias=False)
        with torch.no_grad():
            sel.weight.zero_()
            sel.weight[:, 0, 1] = 1.0
        sel.eval()
        ref: Ref = lambda xs: pool(xs[0].transpose(1, 2)).unsqueeze(-1)  # noqa: E731
        t = g.add(Node("Conv1dEx", f"{ppath}.last_frame", (t,), ref, sel, _one_input(sel)))
    flat = nn.Flatten()
    return g.add(Node("Flatten", f"{ppath}.flatten", (t,), _one_input(flat), flat))


# Backbone class name -> tracer(graph, backbone, path, input tensor id) -> output tensor id.
BLOCK_TRACERS: dict[str, Callable[[Graph, nn.Module, str, int], int]] = {
    "CnnMel": _trace_cnn_mel,
    "MatchboxNet": _trace_matchboxnet,
    "DSCNN": _trace_ds_cnn,
    "BCResNet": _trace_bc_resnet,
    "StreamTCN": _trace_stream_tcn,
}


def _frontend_node(g: Graph, frontend: nn.Module) -> int:
    from kwsnet.export.frontend import frontend_tables

    tables = frontend_tables(frontend)

    def ref(xs: list[torch.Tensor]) -> torch.Tensor:
        wave = xs[0].reshape(len(xs[0]), -1)
        lengths = torch.full((len(wave),), wave.shape[1], dtype=torch.long)
        return frontend(wave, lengths)[0].transpose(1, 2)

    return g.add(Node("FrontEnd", "frontend", (0,), ref, None, tables=tables))


def trace_model(model: nn.Module, clip_samples: int, include_frontend: bool = True) -> Graph:
    """The graph of a ClassifierModule-like ``model`` (``frontend``, ``backbone``, ``head``)
    whose backbone is in :data:`BLOCK_TRACERS`, for clips of ``clip_samples`` samples.

    ``include_frontend=False`` starts at the features (input ``[n_out, frames]``).

    Raises:
        ExportError: an unknown backbone, block, layer, pooling or head, named with its path.
    """
    backbone = getattr(model, "backbone", None)
    tracer = BLOCK_TRACERS.get(type(backbone).__name__)
    if tracer is None:
        raise ExportError(
            f"unsupported backbone {type(backbone).__name__} at 'backbone': the graph tracer "
            f"knows {sorted(BLOCK_TRACERS)}"
        )
    frontend = getattr(model, "frontend", None)
    if frontend is None or type(frontend).__name__ in ("RawAudio", "Identity"):
        raise ExportError("a traced backbone needs its log-mel / MFCC frontend at 'frontend'")
    frontend.eval()
    if include_frontend:
        g = Graph((1, int(clip_samples)))
        src = _frontend_node(g, frontend)
    else:
        frames = int(frontend.frame_lengths(torch.tensor([clip_samples]))[0])
        g = Graph((int(frontend.out_dim), frames))
        src = 0
    _trace_head(g, model.head, tracer(g, backbone, "backbone", src))
    return g


@torch.no_grad()
def folding_delta(graph: Graph, x: torch.Tensor) -> float:
    """max |Δ| of the logits of ``graph`` on ``x``: BN-folded weights vs the unfolded
    modules, both in PyTorch float32 (what folding alone changes)."""
    a = graph.run(x)[-1]
    b = graph.run(x, folded=True)[-1]
    return float(np.abs((a - b).numpy()).max()) if a.numel() else 0.0


def model_graph(model: object, clip_samples: int | None) -> Graph | None:
    """The format-v2 graph of ``model`` when its backbone is one the graph tracer knows
    (:data:`BLOCK_TRACERS`: residual, log-mel models), else None (a chain of standard layers,
    written as format v1).

    Raises:
        ExportError: a traced model without a fixed clip length (``data.clip_samples``), or a
            log-mel / MFCC model whose backbone the tracer does not know.
    """
    backbone = type(getattr(model, "backbone", None)).__name__
    if backbone not in BLOCK_TRACERS:
        frontend = type(getattr(model, "frontend", None)).__name__
        if frontend in ("LogMel", "MFCC"):
            raise ExportError(
                f"unsupported backbone {backbone} at 'backbone' behind the {frontend} front "
                "end: the C runtime runs log-mel / MFCC models whose backbone its graph tracer "
                f"knows ({', '.join(BLOCK_TRACERS)}; kwsnet/export/graph.py); {backbone} needs "
                "its blocks in the tracer and its layers in the C op table first. --format onnx "
                "exports any model"
            )
        return None
    if not clip_samples:
        raise ExportError(
            f"the C runtime takes fixed-length clips: set data.clip_samples (got {clip_samples!r})"
        )
    return trace_model(model, int(clip_samples))  # type: ignore[arg-type]
