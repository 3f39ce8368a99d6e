"""The int8 parity gate: the C int8 runtime against the integer reference, bit for bit.

    kwsnet parity --ckpt_path best.ckpt --dtype int8 [--calibration 512] [--per_layer]

Integer arithmetic leaves no excuse: every int8 code of every logit of every test clip must be
identical (``kwsnet.quant.reference`` defines them; the C runtime loads the version-3 file).
There is no tolerance and no near-tie rule, unlike the float gate (``kwsnet.export.parity``).

The one float part of an int8 model is a log-mel front end (its FFT and log stay float; its
output is quantised). Its C output matches torchaudio within the float gate's tolerances, not
bit for bit, so a code can sit one step apart on a rounding boundary. The gate therefore runs
the reference's integer path from **the C front end's codes** (``frontend_codes=``) and
requires bit-identity from there on; the front end itself is reported apart: how many codes
differ from the torch front end's, the largest difference, and how many predictions of the
reference change when it starts from the torch front end instead. A raw-audio model (no front
end) is compared from the waveform: its input quantiser is one float32 division and a
round-half-even, the same bits in C and torch.

With ``class_floor`` the gate also fails a collapsed int8 model (``kwsnet.metrics.collapse``):
agreement on a one-class predictor means nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from kwsnet.metrics.collapse import RULE, collapse_stats
from kwsnet.quant.ptq import QuantGraph
from kwsnet.quant.reference import run_int8_tensors

__all__ = ["Int8ParityReport", "run_int8_parity"]


@dataclass
class Int8ParityReport:
    """Counts over the compared clips. ``layer_diff[i]``: codes of layer ``i``'s output that
    differ (``--per_layer``); ``fe_*``: the C vs torch front end (front-end models only)."""

    num_classes: int
    n: int = 0
    n_identical: int = 0  # clips whose every logit code is identical
    n_pred_same: int = 0
    counts: list[int] = field(default_factory=list)
    layer_names: list[str] = field(default_factory=list)
    layer_diff: list[int] = field(default_factory=list)
    layer_elems: list[int] = field(default_factory=list)
    has_frontend: bool = False
    fe_codes: int = 0
    fe_diff: int = 0
    fe_max_diff: int = 0
    fe_pred_changed: int = 0
    class_floor: bool = True

    @property
    def collapsed(self) -> bool:
        return bool(self.counts) and bool(collapse_stats(self.counts)["collapsed"])

    @property
    def ok(self) -> bool:
        return (
            self.n > 0 and self.n_identical == self.n and not (self.class_floor and self.collapsed)
        )

    def failure(self) -> str:
        """Why the gate failed ("" when it passed)."""
        if self.ok:
            return ""
        if not self.n:
            return "no test clips to compare"
        if self.n_identical != self.n:
            return (
                f"{self.n - self.n_identical} of {self.n} clips have int8 logits that differ "
                "between C and the integer reference (no tolerance applies)"
            )
        s = collapse_stats(self.counts)
        return (
            f"the int8 model is collapsed ({int(s['n_pred_classes'])}/{len(self.counts)} "
            f"classes, largest {s['max_class_share']:.0%}): agreement on it means nothing. {RULE}"
        )

    def lines(self) -> list[str]:
        s = collapse_stats(self.counts) if self.counts else None
        out = [
            f"int8 parity: logits identical on {self.n_identical}/{self.n} clips "
            f"(every int8 code); predictions identical on {self.n_pred_same}/{self.n}",
        ]
        if s is not None:
            out.append(
                f"int8 predictions: {int(s['n_pred_classes'])}/{len(self.counts)} classes, "
                f"largest {s['max_class_share']:.0%}"
            )
        if self.has_frontend:
            out.append(
                f"front end (float, then quantised): C vs torch codes differ in "
                f"{self.fe_diff}/{self.fe_codes} ({self.fe_diff / max(self.fe_codes, 1):.2e}), "
                f"max |diff| {self.fe_max_diff}; starting from torch's front end changes "
                f"{self.fe_pred_changed}/{self.n} predictions of the reference "
                "(the gate starts from C's)"
            )
        if self.layer_diff:
            width = max(len(n) for n in self.layer_names)
            out.append("per layer: codes that differ (C vs reference)")
            out += [
                f"  {i:3d} {name:<{width}} {d}/{e}"
                for i, (name, d, e) in enumerate(
                    zip(self.layer_names, self.layer_diff, self.layer_elems, strict=True)
                )
            ]
        return out


@torch.no_grad()
def run_int8_parity(
    qgraph: QuantGraph,
    batches: Iterable[torch.Tensor],
    cmodel: object,
    num_classes: int,
    per_layer: bool = False,
    class_floor: bool = True,
) -> Int8ParityReport:
    """Compare ``cmodel`` (a :class:`kwsnet.export.runtime.CModel` of ``qgraph``'s version-3
    file) with the integer reference over audio ``batches [B, T]`` (module docstring).

    Raises:
        ValueError: ``cmodel`` is not an int8 model, or its layer count differs from
            ``qgraph``'s.
    """
    if not getattr(cmodel, "is_int8", False):
        raise ValueError("the C model is not an int8 (format version 3) model")
    n_layers = len(qgraph.nodes)
    if cmodel.n_layers != n_layers:  # type: ignore[attr-defined]
        raise ValueError(f"C model has {cmodel.n_layers} layers, the int8 graph {n_layers}")  # type: ignore[attr-defined]
    rep = Int8ParityReport(num_classes, class_floor=class_floor)
    rep.counts = [0] * num_classes
    rep.layer_names = [n.path for n in qgraph.nodes]
    rep.has_frontend = bool(qgraph.nodes) and qgraph.nodes[0].kind == "FrontEnd"
    if per_layer:
        rep.layer_diff = [0] * n_layers
        rep.layer_elems = [0] * n_layers
    for audio in batches:
        x = audio.to(torch.float32).reshape(len(audio), -1)
        xn = x.numpy()
        fe_c = torch_fe = None
        if rep.has_frontend:
            torch_fe = run_int8_tensors(qgraph, x)
            shape = torch_fe[1].shape  # type: ignore[union-attr]
            fe_c = torch.from_numpy(cmodel.forward_codes(xn, 1)).reshape(shape)  # type: ignore[attr-defined]
        ref = run_int8_tensors(qgraph, x, frontend_codes=fe_c)
        last_ref = ref[-1].reshape(len(x), -1)  # type: ignore[union-attr]
        last_c = torch.from_numpy(cmodel.forward_codes(xn, n_layers))  # type: ignore[attr-defined]
        rep.n += len(x)
        rep.n_identical += int((last_c == last_ref).all(dim=1).sum())
        p_c = last_c.to(torch.int64).argmax(dim=1)
        p_ref = last_ref.to(torch.int64).argmax(dim=1)
        rep.n_pred_same += int((p_c == p_ref).sum())
        for c in p_c.tolist():
            rep.counts[c] += 1
        if per_layer:
            for i in range(n_layers):
                got = torch.from_numpy(cmodel.forward_codes(xn, i + 1))  # type: ignore[attr-defined]
                want = ref[i + 1].reshape(len(x), -1)  # type: ignore[union-attr]
                rep.layer_diff[i] += int((got != want).sum())
                rep.layer_elems[i] += int(want.numel())
        if rep.has_frontend:
            torch_fe = run_int8_tensors(qgraph, x)
            d = (
                torch_fe[1].to(torch.int64) - fe_c.to(torch.int64).reshape(torch_fe[1].shape)
            ).abs()  # type: ignore[union-attr]
            rep.fe_codes += int(d.numel())
            rep.fe_diff += int((d != 0).sum())
            rep.fe_max_diff = max(rep.fe_max_diff, int(d.max()) if d.numel() else 0)
            p_torch = torch_fe[-1].reshape(len(x), -1).to(torch.int64).argmax(dim=1)  # type: ignore[union-attr]
            rep.fe_pred_changed += int((p_torch != p_ref).sum())
    return rep
