"""The C runtime's attentive statistics pooling (AttnStatsPool) and cosine head (L2Norm + the
scaled unit class weights as a Linear) (issue 29): kws_mel_best / kws_mel_aug's
LogMel → CnnMel → AttentiveStatisticsPooling → AAMSoftmaxHead.

One AttnStatsPool record against torch (float: a tolerance scaled to the outputs, and the C
kernel bit for bit equal to its numpy mirror ``kwsnet.quant.islands``; int8: codes equal to
the integer reference on every kernel path); a tiny kws_mel_best-shaped model per layer
against PyTorch and code for code against the integer reference; the loader's refusal of
corrupted records; the C header compiled as an MCU build; a trained kws_mel_best checkpoint
through ``kwsnet export`` and ``kwsnet parity``.

Fixtures are generated in tmp dirs; the models are untrained except the checkpoint test's,
trained on the learnable synthetic corpus.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwsnet.data.features import LogMel
from kwsnet.export import ExportError
from kwsnet.export.cnative import LAYER_TYPES, graph_bytes, node_record, write_graph
from kwsnet.export.graph import Graph, Node, trace_model
from kwsnet.export.runtime import CModel
from kwsnet.models.cnn_mel import CnnMel
from kwsnet.nn.heads import AAMSoftmaxHead, AMSoftmaxHead
from kwsnet.nn.pooling import AttentiveStatisticsPooling
from kwsnet.quant.format import quant_bytes
from kwsnet.quant.islands import attn_stats_pool, exp_neg, tanh
from kwsnet.quant.ptq import calibrate, quantize_graph
from kwsnet.quant.reference import run_int8_tensors

from .cnative_helpers import (
    assert_codes_on_every_path,
    assert_float_parity_per_layer,
    assert_int8_model_codes,
    assert_loader_refuses,
    assert_mcu_matches_file_model,
    assert_parity_and_export,
    build_runtime,
    clips,
    eval_logits,
    fit_learnable,
    patched,
    randomise_bn,
    records,
    write_int8,
    write_model_files,
)

CLIP = 16000  # kws_mel_best's clip: 101 log-mel frames


@pytest.fixture(scope="module")
def cbuild() -> Path:
    return build_runtime()


class _MelBest(nn.Module):
    """ClassifierModule-shaped (frontend, backbone, head): kws_mel_best's LogMel (80 mels,
    25 ms / 10 ms, mean normalisation), a CnnMel with attentive statistics pooling, and a
    cosine head (AAM-softmax by default)."""

    def __init__(
        self,
        stem: int = 8,
        channels: tuple[int, ...] = (8, 12),
        strides: tuple[int, ...] = (2, 2),
        attention: int = 16,
        global_context: bool = True,
        head: type[nn.Module] = AAMSoftmaxHead,
        n_classes: int = 6,
    ) -> None:
        super().__init__()
        self.frontend = LogMel(sample_rate=16000, n_fft=400, win_length=400, hop_length=160,
                               n_mels=80, normalize="mean", spec_augment=None)  # fmt: skip
        pool = functools.partial(
            AttentiveStatisticsPooling,
            attention_channels=attention,
            global_context=global_context,
        )
        self.backbone = CnnMel(80, stem, channels, strides, 7, pooling=pool)
        self.head = head(self.backbone.embed_dim, n_classes)

    def embed(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.backbone(*self.frontend(audio, lengths))


def _mel_best(seed: int = 0, **kwargs: object) -> nn.Module:
    """An eval-mode model with non-trivial BatchNorm statistics and affines."""
    torch.manual_seed(seed)
    model = _MelBest(**kwargs)  # type: ignore[arg-type]
    return randomise_bn(model, seed, nn.BatchNorm1d).eval()


# ------------------------------------------------------------------ exp / tanh


def test_exp_and_tanh_polynomials_are_accurate() -> None:
    """The runtime's own exp (x <= 0) and tanh, in their numpy mirror: within a few float32
    ulp of the exact values over the ranges they see."""
    x = np.linspace(-80.0, 0.0, 200001, dtype=np.float32)
    want = np.exp(x.astype(np.float64))
    assert float(np.max(np.abs(exp_neg(x) - want) / want)) < 3e-7
    a = np.linspace(-12.0, 12.0, 200001, dtype=np.float32)
    assert float(np.max(np.abs(tanh(a) - np.tanh(a.astype(np.float64))))) < 2e-7
    assert exp_neg(np.float32([0.0]))[0] == 1.0 and tanh(np.float32([0.0]))[0] == 0.0


# ------------------------------------------------------------------ one AttnStatsPool layer


@pytest.mark.kernel_path
@pytest.mark.parametrize("global_context", [True, False], ids=["context", "frames-only"])
@pytest.mark.parametrize("shape", [(12, 7, 16), (48, 13, 64), (5, 1, 3)], ids=str)
def test_attn_stats_pool_layer_float_and_int8(
    cbuild: Path, tmp_path: Path, shape: tuple[int, int, int], global_context: bool
) -> None:
    """One AttnStatsPool record on [C, L]: float within a tolerance scaled to the outputs and
    bit for bit its numpy mirror; int8 codes equal to the integer reference on every path."""
    c, length, h = shape
    torch.manual_seed(c + length)
    pool = AttentiveStatisticsPooling(c, attention_channels=h, global_context=global_context)
    pool.eval()
    g = Graph((c, length))
    g.add(Node("AttnStatsPool", "pool", (0,), lambda xs: pool(xs[0].transpose(1, 2)), pool))
    write_graph(g, tmp_path / "f.kwsn")
    x = torch.relu(torch.randn(6, c, length) * 2)  # post-ReLU frames, as CnnMel gives
    with torch.no_grad():
        ref = pool(x.transpose(1, 2)).numpy()
    with CModel(tmp_path / "f.kwsn") as cm:
        assert cm.layer_names == ["AttnStatsPool"]
        out = cm.forward(x.reshape(6, -1).numpy())
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * max(1.0, float(np.abs(ref).max())))
    rec = node_record(g.nodes[0])
    mirror = attn_stats_pool(x.numpy(), rec.ints, rec.floats)
    np.testing.assert_array_equal(out.view(np.uint32), mirror.view(np.uint32))

    q = write_int8(g, [x], tmp_path / "q.kwsn")
    ref = run_int8_tensors(q, x)
    # not saturated: the codes say something
    assert len(np.unique(ref[-1].numpy())) > min(10, 2 * c)  # type: ignore[union-attr]
    assert_codes_on_every_path(tmp_path / "q.kwsn", x, ref)


# ------------------------------------------------------------------ kws_mel_best, traced


@pytest.mark.kernel_path
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"global_context": False, "head": AMSoftmaxHead}, {"stem": 32, "channels": (32, 48, 48),
     "strides": (2, 2, 2), "attention": 64, "n_classes": 10}],
    ids=["tiny", "frames-only-am", "full-size"],
)  # fmt: skip
def test_mel_best_float_parity_per_layer(cbuild: Path, tmp_path: Path, kwargs: dict) -> None:
    """LogMel → CnnMel → AttnStatsPool → L2Norm → Linear: every layer against PyTorch's own
    modules (the head's unfolded cosine), the logits against the model's."""
    model = _mel_best(**kwargs)
    graph = trace_model(model, CLIP)
    kinds = [n.kind for n in graph.nodes]
    assert kinds[0] == "FrontEnd" and kinds[-3:] == ["AttnStatsPool", "L2Norm", "Linear"]
    assert_float_parity_per_layer(model, graph, tmp_path / "m.kwsn", clips(8))


def test_cosine_head_is_the_eval_logits_whatever_the_margin() -> None:
    """The traced head (L2Norm, then the scaled unit class weights) gives the head's eval
    logits, scale * cos, for AAM and AM alike; a training step's margin does not enter."""
    for head in (AAMSoftmaxHead, AMSoftmaxHead):
        model = _mel_best(head=head)
        model.head.margin = 0.5
        graph = trace_model(model, CLIP)
        x = clips(3, seed=5)
        folded = graph.run(x, folded=True)[-1].numpy()
        ref = eval_logits(model, x)
        np.testing.assert_allclose(folded, ref, rtol=0, atol=1e-5 * model.head.scale)
        w = graph.nodes[-1].module.weight.detach()
        np.testing.assert_allclose(w.norm(dim=1).numpy(), model.head.scale, rtol=1e-6)
        assert graph.nodes[-1].module.bias is None


def test_unsupported_asp_parts_are_named_with_their_path() -> None:
    """Post-pooling BatchNorm, or an attention net that is not Linear → Tanh → Linear:
    ExportError with the path."""
    model = _mel_best()
    model.backbone.pooling = AttentiveStatisticsPooling(12, 16, batch_norm=True).eval()
    with pytest.raises(ExportError, match="AttentiveStatisticsPooling at 'backbone.pooling'"):
        trace_model(model, CLIP)
    model = _mel_best()
    model.backbone.pooling.attention[1] = nn.ReLU()
    with pytest.raises(ExportError, match=r"at 'backbone.pooling'.*Linear → ReLU → Linear"):
        trace_model(model, CLIP)


@pytest.mark.kernel_path
@pytest.mark.parametrize("kwargs", [{}, {"global_context": False}], ids=["tiny", "frames-only"])
def test_mel_best_int8_codes_equal_reference(cbuild: Path, tmp_path: Path, kwargs: dict) -> None:
    """int8 kws_mel_best: every layer's codes (the logits' included) equal the integer
    reference's on every kernel path (from the C front end's codes, as `kwsnet parity --dtype
    int8`); the front end, AttnStatsPool and L2Norm are the float islands."""
    graph = trace_model(_mel_best(seed=1, **kwargs), CLIP)
    assert graph.nodes[0].tables.n_out == 80  # type: ignore[attr-defined]
    assert_int8_model_codes(graph, clips(12, seed=2), tmp_path / "q.kwsn", c_frontend_codes=True)


# ------------------------------------------------------------------ the loader


def test_loader_names_the_refused_asp_and_l2norm_checks(cbuild: Path, tmp_path: Path) -> None:
    """Corrupted AttnStatsPool / L2Norm records (float and int8) are refused at load with the
    layer, its type and the check (also under ASan/UBSan, where the valid files run)."""
    model = _mel_best(stem=4, channels=(4, 6), attention=5)
    graph = trace_model(model, CLIP)
    data = graph_bytes(graph)
    recs = records(data)
    i_asp = [r.type for r in recs].index(LAYER_TYPES["AttnStatsPool"])
    i_l2 = i_asp + 1
    asp_ints, l2_ints = recs[i_asp].ints_at, recs[i_l2].ints_at
    qdata = quant_bytes(quantize_graph(graph, calibrate(graph, [clips(4)])), graph)
    q_asp = records(qdata)[i_asp].ints_at
    asp, l2 = f"layer {i_asp} (AttnStatsPool)", f"layer {i_l2} (L2Norm)"
    cases = {
        "context_flag": (patched(data, asp_ints + 8, "<i", 2), f"bad layer parameters: {asp}: c "
                         "< 1 || h < 1 || (gc != 0 && gc != 1)"),
        "hidden": (patched(data, asp_ints + 4, "<i", 6), f"bad layer parameters: {asp}: "
                   "l->desc.n_floats != nw"),
        "eps": (patched(data, asp_ints + 12, "<f", -1.0), f"bad layer parameters: {asp}: !(eps > "
                "0.0f)"),
        "channels": (patched(data, asp_ints, "<i", 7), f"bad layer parameters: {asp}"),
        "l2_width": (patched(data, l2_ints, "<i", 11), f"shapes do not chain: {l2}"),
        "l2_eps": (patched(data, l2_ints + 4, "<f", 0.0), f"bad layer parameters: {l2}: !(eps > "
                   "0.0f)"),
        "q8_act_max": (patched(qdata, q_asp + 8, "<i", 100), f"bad layer parameters: {asp}: "
                       "l->desc.n_words != 0u"),
        "q8_context_flag": (patched(qdata, q_asp + 20, "<i", 3), f"bad layer parameters: {asp}: c "
                            "< 1 || h < 1 || (gc != 0 && gc != 1)"),
    }  # fmt: skip
    assert_loader_refuses(cbuild, tmp_path, {"good": data, "good8": qdata}, cases)


# ------------------------------------------------------------------ the C header


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_c_header_mel_best_matches_file_model(cbuild: Path, tmp_path: Path, dtype: str) -> None:
    """The MCU path for kws_mel_best (float and int8 headers, the pooling's comment in them):
    see assert_mcu_matches_file_model."""
    graph = trace_model(_mel_best(seed=3), CLIP)
    x = clips(4, seed=4)
    kwsn = write_model_files(graph, x, tmp_path, dtype)
    assert "/* backbone.pooling: " in (tmp_path / "model.h").read_text()
    assert_mcu_matches_file_model(tmp_path, x.numpy().astype("<f4"), kwsn)


# ------------------------------------------------------------------ a trained checkpoint


@pytest.mark.kernel_path
def test_trained_mel_best_checkpoint_export_and_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """kws_mel_best.yaml shrunk (8 / 12 channels, attention 8) and trained on the learnable
    synthetic corpus, then assert_parity_and_export: the per-layer table from the front end to
    AttnStatsPool, L2Norm and the head; the float header names the folded L2Norm."""
    ckpt = fit_learnable(tmp_path, "kws_mel_best.yaml", [
        "--model.backbone.init_args.stem_channels", "8",
        "--model.backbone.init_args.channels", "[8, 12]",
        "--model.backbone.init_args.strides", "[2, 2]",
        "--model.backbone.init_args.pooling.init_args.attention_channels", "8"],
        epochs=6)  # fmt: skip
    assert_parity_and_export(
        ckpt, tmp_path, capsys, lambda rows: "FrontEnd" in rows[0] and "AttnStatsPool" in rows[-3]
    )
    assert "/* head.normalize: L2Norm" in (tmp_path / "m.h").read_text()
