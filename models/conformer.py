"""Conformer speaker-classification backbone.

    features [B, T, F] → Linear prenet (F → d_model) [→ LayerNorm]
                       → torchaudio.models.Conformer (real lengths)
                       → pooling (masked; default self-attention pooling) → [B, embed_dim]

``embed_dim`` is the pooling's ``out_dim`` (e.g. ``2 * d_model`` for SAP + max concat), so a
config never types it. Padded frames never influence valid ones: attention masks padded keys
(torchaudio does that) and, with ``mask_conv_padding`` (default), the depthwise convolution
sees zeros at padded frames, exactly as if the utterance ended there, and the conv modules'
BatchNorms take their training statistics over valid frames only (``masked_batch_norm``).
torchaudio alone lets the depthwise conv read padded frames, so a batch's padding would change
the embedding, and its BatchNorms average over the padding.

``post_ln=True`` swaps torchaudio's Pre-LN layers for Post-LN ones (``_PostLNConformer``): the
same macaron layout (½ FFN, self-attention, conv module, ½ FFN) with every sub-block
``x = LayerNorm(x + f(x))`` instead of ``x = x + f(LayerNorm(x))``, so the SmallInit-Emb claim
("Post-LN without LR warm-up") can be tested. The conv modules keep torchaudio's layout
(``conv_module.sequential[2]`` is the depthwise conv), so the same padding hooks apply.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torchaudio
from torch import nn

from kwsnet.errors import ConfigError
from kwsnet.models._pooling import build_pooling
from kwsnet.nn.norms import masked_batch_norm
from kwsnet.nn.pooling import SelfAttentionPooling, lengths_to_mask

__all__ = ["ConformerBackbone"]


class _PostLNConvModule(nn.Module):
    """torchaudio's conformer conv module without its leading LayerNorm.

    ``sequential``: pointwise conv (D → 2D), GLU, depthwise conv (k, same), BatchNorm or
    GroupNorm(1), SiLU, pointwise conv (D → D), dropout; indices match torchaudio's.

    Shapes: ``[B, T, D] -> [B, T, D]``.
    """

    def __init__(self, d: int, kernel_size: int, dropout: float, use_group_norm: bool) -> None:
        super().__init__()
        self.sequential = nn.Sequential(
            nn.Conv1d(d, 2 * d, 1),
            nn.GLU(dim=1),
            nn.Conv1d(d, d, kernel_size, padding=kernel_size // 2, groups=d),
            nn.GroupNorm(1, d) if use_group_norm else nn.BatchNorm1d(d),
            nn.SiLU(),
            nn.Conv1d(d, d, 1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequential(x.transpose(1, 2)).transpose(1, 2)


def _feed_forward(d: int, hidden: int, dropout: float) -> nn.Sequential:
    # torchaudio's _FeedForwardModule without its leading LayerNorm.
    return nn.Sequential(
        nn.Linear(d, hidden),
        nn.SiLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, d),
        nn.Dropout(dropout),
    )


class _PostLNConformerLayer(nn.Module):
    """One Post-LN Conformer layer: each sub-block is ``x = LayerNorm(x + f(x))``.

    ``f`` is, in order, ½·FFN, self-attention (padded keys masked), the conv module, ½·FFN
    (conv before attention with ``convolution_first``). The last LayerNorm (``ffn2_norm``)
    takes the place of torchaudio's ``final_layer_norm``.

    Shapes: ``forward(x [B, T, D], key_padding_mask [B, T] (True = padding)) -> [B, T, D]``.
    """

    def __init__(
        self,
        d: int,
        ffn_dim: int,
        num_heads: int,
        kernel_size: int,
        dropout: float,
        use_group_norm: bool,
        convolution_first: bool,
    ) -> None:
        super().__init__()
        self.convolution_first = convolution_first
        self.ffn1 = _feed_forward(d, ffn_dim, dropout)
        self.ffn1_norm = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, num_heads, dropout=dropout, batch_first=True)
        self.self_attn_dropout = nn.Dropout(dropout)
        self.self_attn_norm = nn.LayerNorm(d)
        self.conv_module = _PostLNConvModule(d, kernel_size, dropout, use_group_norm)
        self.conv_norm = nn.LayerNorm(d)
        self.ffn2 = _feed_forward(d, ffn_dim, dropout)
        self.ffn2_norm = nn.LayerNorm(d)

    def _attention(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        a, _ = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)
        return self.self_attn_norm(x + self.self_attn_dropout(a))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        x = self.ffn1_norm(x + 0.5 * self.ffn1(x))
        if self.convolution_first:
            x = self.conv_norm(x + self.conv_module(x))
        x = self._attention(x, key_padding_mask)
        if not self.convolution_first:
            x = self.conv_norm(x + self.conv_module(x))
        return self.ffn2_norm(x + 0.5 * self.ffn2(x))


class _PostLNConformer(nn.Module):
    """A stack of ``_PostLNConformerLayer`` with ``torchaudio.models.Conformer``'s interface.

    Shapes: ``forward(x [B, T, D], lengths [B]) -> (out [B, T, D], lengths [B])``, ``T`` being
    ``max(lengths)`` as in torchaudio (its attention mask is sized by ``max(lengths)``).
    """

    def __init__(
        self,
        input_dim: int,
        num_heads: int,
        ffn_dim: int,
        num_layers: int,
        depthwise_conv_kernel_size: int,
        dropout: float = 0.0,
        use_group_norm: bool = False,
        convolution_first: bool = False,
    ) -> None:
        super().__init__()
        self.conformer_layers = nn.ModuleList(
            _PostLNConformerLayer(
                input_dim,
                ffn_dim,
                num_heads,
                depthwise_conv_kernel_size,
                dropout,
                use_group_norm,
                convolution_first,
            )
            for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key_padding_mask = ~lengths_to_mask(lengths, x.shape[1])  # [B, T], True = padding
        for layer in self.conformer_layers:
            x = layer(x, key_padding_mask)
        return x, lengths


def _valid_frames_bn(bn: nn.BatchNorm1d, keep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The per-call ``forward`` of a conv module's BatchNorm: ``masked_batch_norm`` with the
    call's ``keep`` mask ``[B, 1, T]`` in training, the class's own forward otherwise."""
    if bn.training:
        return masked_batch_norm(bn, x, keep)
    return nn.BatchNorm1d.forward(bn, x)


class ConformerBackbone(nn.Module):
    """Linear prenet → Conformer encoder → pooling.

    Args:
        input_dim: feature width per frame ``F`` (default 40: 40 log-mels).
        d_model: Conformer width (default 256).
        num_heads: attention heads; must divide ``d_model`` (default 4).
        ffn_dim: hidden width of the feed-forward modules (default 512).
        num_layers: Conformer layers (default 3).
        depthwise_conv_kernel_size: odd kernel of the depthwise conv (default 31).
        dropout: dropout inside the Conformer layers (default 0.3).
        pooling: factory called as ``pooling(d_model)`` returning a module
            ``(x [B, T, d_model], lengths [B]) -> [B, out_dim]`` with an ``out_dim`` attribute,
            e.g. a class from ``kwsnet.nn.pooling`` given by ``class_path`` in a config
            (default ``None``: ``SelfAttentionPooling`` with no BN or dropout).
        input_norm: put a ``LayerNorm(d_model)`` after the prenet (``input_norm`` attribute;
            SmallInit-Emb wants one) (default False: ``nn.Identity``).
        use_group_norm: GroupNorm instead of BatchNorm in the conv modules (default False).
        convolution_first: conv module before attention in each layer (default False).
        mask_conv_padding: zero padded frames before each depthwise conv (default True).
        post_ln: Post-LN layers (``x = LayerNorm(x + f(x))`` per sub-block) instead of
            torchaudio's Pre-LN ones (default False: ``torchaudio.models.Conformer``, whose
            parameter names checkpoints use).

    Shapes: ``forward(x [B, T, input_dim], lengths [B]) -> [B, embed_dim]``.
    """

    def __init__(
        self,
        input_dim: int = 40,
        d_model: int = 256,
        num_heads: int = 4,
        ffn_dim: int = 512,
        num_layers: int = 3,
        depthwise_conv_kernel_size: int = 31,
        dropout: float = 0.3,
        pooling: Callable[[int], nn.Module] | None = None,
        input_norm: bool = False,
        use_group_norm: bool = False,
        convolution_first: bool = False,
        mask_conv_padding: bool = True,
        post_ln: bool = False,
    ) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must divide d_model={d_model}")
        if depthwise_conv_kernel_size % 2 != 1:
            raise ValueError(
                f"depthwise_conv_kernel_size must be odd for same padding, "
                f"got {depthwise_conv_kernel_size}"
            )
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.input_dim = input_dim
        self.d_model = d_model
        self.mask_conv_padding = mask_conv_padding
        self.post_ln = post_ln
        self.input_projection = nn.Linear(input_dim, d_model)
        self.input_norm = nn.LayerNorm(d_model) if input_norm else nn.Identity()
        encoder = _PostLNConformer if post_ln else torchaudio.models.Conformer
        self.conformer = encoder(
            input_dim=d_model,
            num_heads=num_heads,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            depthwise_conv_kernel_size=depthwise_conv_kernel_size,
            dropout=dropout,
            use_group_norm=use_group_norm,
            convolution_first=convolution_first,
        )
        self.pooling, self.embed_dim = build_pooling(pooling, d_model, SelfAttentionPooling)

    def _depthwise_convs(self) -> list[nn.Module]:
        # torchaudio's _ConvolutionModule (and _PostLNConvModule): pointwise conv, GLU,
        # depthwise conv, norm, ...
        return [layer.conv_module.sequential[2] for layer in self.conformer.conformer_layers]

    def _conv_norms(self) -> list[nn.Module]:
        # ... then the norm after the depthwise conv (BatchNorm1d, or GroupNorm), ...
        return [layer.conv_module.sequential[3] for layer in self.conformer.conformer_layers]

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Frame-level encoder output ``[B, T, d_model]`` for ``x [B, T, input_dim]``.

        Frames at or beyond ``lengths[b]`` are zero; valid frames do not depend on them, and with
        ``mask_conv_padding`` the conv modules' BatchNorm statistics in training are over valid
        frames only.
        """
        B, T, F = x.shape
        if F != self.input_dim:
            raise ConfigError(
                f"ConformerBackbone expects {self.input_dim} features per frame, got {F}; "
                "set model.backbone.init_args.input_dim to the front end's out_dim"
            )
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(min=1, max=T)
        # torchaudio sizes its attention mask by max(lengths): drop all-padding tail frames.
        t_max = int(lengths.max())
        h = self.input_norm(self.input_projection(x[:, :t_max]))  # [B, t_max, d_model]
        keep = lengths_to_mask(lengths, t_max).unsqueeze(1).to(h.dtype)  # [B, 1, t_max]
        handles = []
        if self.mask_conv_padding:

            def _zero_padding(_m: nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
                return (args[0] * keep,)  # depthwise conv input is [B, C, t_max]

            handles = [
                conv.register_forward_pre_hook(_zero_padding) for conv in self._depthwise_convs()
            ]
        norms = []
        if self.mask_conv_padding and bool((lengths < t_max).any()):
            # the BatchNorm after each depthwise conv, for this call only: in training, its
            # statistics over valid frames (``keep`` has padding, so this never calls bn(x))
            norms = [n for n in self._conv_norms() if isinstance(n, nn.BatchNorm1d)]
            for norm in norms:
                norm.forward = functools.partial(_valid_frames_bn, norm, keep)
        try:
            out = self.conformer(h, lengths)[0]
        finally:
            for handle in handles:
                handle.remove()
            for norm in norms:
                del norm.forward  # back to BatchNorm1d.forward
        out = out * keep.transpose(1, 2)
        return nn.functional.pad(out, (0, 0, 0, T - t_max))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Map features ``x [B, T, input_dim]`` with ``lengths [B]`` to ``[B, embed_dim]``.

        ``lengths=None`` means every sequence is ``T`` frames long.
        """
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(min=1, max=x.shape[1])
        return self.pooling(self.encode(x, lengths), lengths)
