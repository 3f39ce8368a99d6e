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
in :data:`BLOCK_TRACERS` (today CnnMel and MatchboxNet; DS-CNN and BC-ResNet are Conv2d
nets, which the Conv1d runtime does not run); anything the tracer does not know is an
:class:`ExportError` naming the module type and its path.

Each node keeps two PyTorch computations: ``module`` (what the C record encodes: a Conv1d
with its BatchNorm folded in) and ``ref`` (the original modules, unfolded), so
:meth:`Graph.run` gives the per-layer reference for the parity table and
:func:`folding_delta` measures what folding costs in float32.

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
    "Graph",
    "Node",
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
def fold_batchnorm(conv: nn.Conv1d, bn: nn.BatchNorm1d, path: str) -> nn.Conv1d:
    """A Conv1d computing ``bn(conv(x))`` in eval mode: ``w' = w * s``, ``b' = (b - mean) *
    s + beta`` with ``s = gamma / sqrt(running_var + eps)``, computed in float64 and rounded
    to float32 once (docs/cnative.md says what that does to the logits)."""
    if not isinstance(bn, nn.BatchNorm1d) or bn.running_mean is None:
        raise ExportError(f"BatchNorm at '{path}': folding needs running statistics")
    w = conv.weight.double()
    co = w.shape[0]
    gamma = bn.weight.double() if bn.weight is not None else torch.ones(co, dtype=torch.float64)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros(co, dtype=torch.float64)
    s = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    b = conv.bias.double() if conv.bias is not None else torch.zeros(co, dtype=torch.float64)
    out = nn.Conv1d(
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
    out.weight.copy_((w * s[:, None, None]).float())
    out.bias.copy_(((b - bn.running_mean.double()) * s + beta).float())
    return out.eval()


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


def _trace_pooling(g: Graph, pool: nn.Module, path: str, src: int) -> int:
    """Pooling over time of ``[C, L]`` to ``[C]`` (all frames valid: see module docstring)."""
    name = type(pool).__name__
    if getattr(pool, "batch_norm", False) or not isinstance(
        getattr(pool, "dropout", nn.Identity()), (nn.Identity, nn.Dropout)
    ):
        raise ExportError(f"pooling {name} at '{path}': batch_norm is not supported")
    ref_pool: Ref = lambda xs: pool(xs[0].transpose(1, 2)).unsqueeze(-1)  # noqa: E731
    if name == "MeanPooling":
        avg = nn.AdaptiveAvgPool1d(1)
        t = g.add(Node("AdaptiveAvgPool1d", path, (src,), ref_pool, avg, _one_input(avg)))
    elif name == "MaxPooling":
        length = _length_of(g, src)
        mx = nn.MaxPool1d(length, length)
        t = g.add(Node("MaxPool1d", path, (src,), ref_pool, mx, _one_input(mx)))
    elif name == "SelfAttentionPooling":
        return g.add(Node("AttnPool", path, (src,), lambda xs: pool(xs[0].transpose(1, 2)), pool))
    else:
        raise ExportError(
            f"unsupported pooling {name} at '{path}'; the C runtime pools with MeanPooling, "
            "MaxPooling or SelfAttentionPooling"
        )
    flat = nn.Flatten()
    return g.add(Node("Flatten", f"{path}.flatten", (t,), _one_input(flat), flat))


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


# Backbone class name -> tracer(graph, backbone, path, input tensor id) -> output tensor id.
BLOCK_TRACERS: dict[str, Callable[[Graph, nn.Module, str, int], int]] = {
    "CnnMel": _trace_cnn_mel,
    "MatchboxNet": _trace_matchboxnet,
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
    t = tracer(g, backbone, "backbone", src)
    for path, lin in _head_linear(model.head):
        t = g.add(Node(type(lin).__name__, path, (t,), _one_input(lin), lin))
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
