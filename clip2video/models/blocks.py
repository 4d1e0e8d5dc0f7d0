"""Temporal transformer: CLIP-style residual attention blocks with a per-sample key mask.

The blocks are open_clip's ``ResidualAttentionBlock`` (pre-LayerNorm, QuickGELU MLP of width 4D),
so their parameter names are the official ones (``attn.in_proj_weight``, ``attn.in_proj_bias``,
``attn.out_proj.*``, ``ln_1``, ``mlp.c_fc``, ``mlp.c_proj``, ``ln_2``) and mapping a state dict
is a rename. The LayerNorms use eps 1e-12, as the official ``module_cross`` blocks do (TF-style
LayerNorm of CLIP4Clip/CLIP2Video).

Masks: padded keys get an additive -1e6, per sample. The official code builds its
``[B * heads, L, L]`` mask with ``repeat(heads, 1, 1)``, which pairs sample ``b``'s heads with
other samples' masks whenever heads > 1 and masks differ inside a batch; here every head of
sample ``b`` uses sample ``b``'s mask, so an embedding never depends on its batch. Both agree
whenever all videos of a batch share one mask (or heads = 1).
"""

from __future__ import annotations

from functools import partial

import torch
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock
from torch import nn

MASK_VALUE = -1e6
TEMPORAL_LN_EPS = 1e-12


def heads_for_width(width: int) -> int:
    """Attention heads of a CLIP-style block: width // 64 (at least 1)."""
    return max(1, width // 64)


def key_padding_bias(mask: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask ``[B * heads, L, L]``: -1e6 on the keys where ``mask`` is 0."""
    bias = (1.0 - mask.to(dtype)) * MASK_VALUE  # [B, L]
    length = mask.shape[1]
    bias = bias.unsqueeze(1).expand(-1, length, -1)  # [B, L(query), L(key)]
    return bias.repeat_interleave(heads, dim=0)


class TemporalTransformer(nn.Module):
    """A stack of ``layers`` residual attention blocks over ``[B, L, D]`` tokens."""

    def __init__(self, width: int, layers: int, heads: int | None = None) -> None:
        super().__init__()
        self.width = width
        self.heads = heads or heads_for_width(width)
        norm = partial(LayerNorm, eps=TEMPORAL_LN_EPS)
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, self.heads, act_layer=QuickGELU, norm_layer=norm, batch_first=True)
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` [B, L, D], ``mask`` [B, L] (1 = real token) -> [B, L, D]."""
        if x.shape[1] == 0:
            return x
        bias = key_padding_bias(mask, self.heads, x.dtype)
        for block in self.resblocks:
            x = block(x, attn_mask=bias)
        return x


def init_new_module(module: nn.Module) -> None:
    """Default initialisation of new modules, as the official ``init_weights`` does.

    Linear and Embedding weights ~ N(0, 0.02), Linear biases 0, LayerNorm weight 1 and bias 0;
    ``attn.in_proj_weight`` keeps PyTorch's default (xavier) as in the official code.
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear | nn.Embedding):
            nn.init.normal_(sub.weight, mean=0.0, std=0.02)
        if isinstance(sub, nn.Linear) and sub.bias is not None:
            nn.init.zeros_(sub.bias)
        if isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)
