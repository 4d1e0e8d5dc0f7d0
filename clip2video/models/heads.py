"""Video heads of models.md: mean pooling, the temporal transformer, TDB and TAB.

Notation as in the spec: ``x`` [B, F, D] frame embeddings, ``mask`` [B, F] (1 = real frame),
``P`` the frame position embedding table (its rows; the official table has the CLIP text
context length, 77 rows for ViT-B/32).

The official code fixes D = 512 in places (``trans_layernorm(512)``, centers ``K x 512``,
``frame2t_projection`` 512 x 512); here every one of them uses D = the CLIP embedding width, so
the same code serves ViT-B/32 (D = 512) and tiny test configs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clip2video.models.blocks import TemporalTransformer

TDB_PROJECTIONS = ("selfattn", "mlp", "none")


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension (a zero vector stays zero instead of becoming NaN)."""
    return F.normalize(x, dim=-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_f m_f x_f / max(1, sum_f m_f)`` over dim 1, bitwise invariant to the order of the frames.

    The terms are sorted along the frame axis before they are summed: in exact arithmetic that
    changes nothing, but in floating point it makes the sum independent of frame order, so a clip
    and its exact time reversal get bitwise identical pooled embeddings (their scores tie exactly
    instead of differing by rounding noise that depends on thread count or process layout).
    """
    m = mask.to(x.dtype).unsqueeze(-1)
    terms = torch.sort(x * m, dim=1).values
    return terms.sum(1) / m.sum(1).clamp(min=1.0)


def mean_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """meanp: ``normalize(sum_f m_f normalize(x_f) / max(1, sum_f m_f))`` -> [B, D]."""
    return normalize(masked_mean(normalize(x), mask))


def interleave(frames: torch.Tensor, diffs: torch.Tensor) -> torch.Tensor:
    """``f_0, d_0, f_1, d_1, ..., d_{F-2}, f_{F-1}`` along dim 1 (frames [B, F, ...], diffs [B, F-1, ...])."""
    pairs = torch.stack((frames[:, :-1], diffs), dim=2)  # [B, F-1, 2, ...]
    pairs = pairs.flatten(1, 2)
    return torch.cat((pairs, frames[:, -1:]), dim=1)


class TemporalDifferenceBlock(nn.Module):
    """TDB: difference tokens between adjacent frames, interleaved with the frame tokens.

    Parameters carry the official names: ``type_position_embeddings`` (2 x D: row 1 frame
    tokens, row 0 difference tokens), ``trans_layernorm`` (D), and ``frame2t_attention``
    (``selfattn``, a 1-layer transformer) or ``frame2t_projection`` (``mlp``, D x D).
    """

    def __init__(self, width: int, proj: str = "selfattn") -> None:
        super().__init__()
        if proj not in TDB_PROJECTIONS:
            raise ValueError(f"tdb_proj={proj!r}: choose one of {', '.join(TDB_PROJECTIONS)}")
        self.proj = proj
        self.type_position_embeddings = nn.Embedding(2, width)
        self.trans_layernorm = nn.LayerNorm(width)
        if proj == "selfattn":
            self.frame2t_attention = TemporalTransformer(width, 1)
        elif proj == "mlp":
            self.frame2t_projection = nn.Parameter(torch.empty(width, width))
            nn.init.normal_(self.frame2t_projection, std=64**-0.5)

    def differences(self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Difference tokens ``d_f`` (f = 0..F-2) after the chosen projection -> [B, F-1, D]."""
        n = x.shape[1]
        d = x[:, 1:] - x[:, :-1]
        if self.proj == "selfattn":
            d = self.frame2t_attention(d + positions[1:n], mask[:, 1:])
            d = 2 * torch.sigmoid(self.trans_layernorm(d)) - 1
        elif self.proj == "mlp":
            d = 2 * torch.sigmoid(self.trans_layernorm(d @ self.frame2t_projection)) - 1
        return d

    def tokens(
        self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The 2F-1 tokens with position and type embeddings added, and their mask.

        Frame token f gets ``P[f]`` and type row 1, difference token f gets ``P[f]`` and type
        row 0; frame token f and difference token f are both masked by ``m_f``.
        """
        b, n, _ = x.shape
        pos = positions[:n].unsqueeze(0).expand(b, -1, -1)
        types = self.type_position_embeddings.weight
        frame_type = types[1].expand(b, n, -1)
        diff_type = types[0].expand(b, n - 1, -1)
        seq = interleave(x, self.differences(x, mask, positions))
        seq = seq + interleave(pos, pos[:, : n - 1]) + interleave(frame_type, diff_type)
        return seq, interleave(mask, mask[:, : n - 1])


def temporal_pool(
    x: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    transformer: TemporalTransformer,
    tdb: TemporalDifferenceBlock | None = None,
) -> torch.Tensor:
    """seqtransf (``tdb`` None) or tdb global video embedding -> [B, D] (normalised)."""
    n = x.shape[1]
    if tdb is None:
        y = transformer(x + positions[:n], mask)
    else:
        tokens, token_mask = tdb.tokens(x, mask, positions)
        y = transformer(tokens, token_mask)[:, 0::2]
    return mean_pool(y + x, mask)


class TemporalAlignmentBlock(nn.Module):
    """TAB: K shared centers (``weight_center`` Wc, ``emb_center`` Ec) and ``actionClip``.

    ``actionClip`` is the 1-layer transformer over the "temporal" tokens (every second frame).
    Centers are drawn from N(0, std) with std = D^-0.5 by default (models.md); the official code
    used 64^-0.5 at D = 512.
    """

    def __init__(self, width: int, center_k: int = 5, init_std: float | None = None) -> None:
        super().__init__()
        std = width**-0.5 if init_std is None else init_std
        self.weight_center = nn.Parameter(torch.randn(center_k, width) * std)
        self.emb_center = nn.Parameter(torch.randn(center_k, width) * std)
        self.actionClip = TemporalTransformer(width, 1)

    @property
    def center_k(self) -> int:
        return self.weight_center.shape[0]

    def aggregate(self, tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``normalize(mean_k normalize(sum_i a_i p_ik (e_i - Ec_k)))`` -> [B, D]."""
        p = torch.softmax(tokens @ self.weight_center.t(), dim=-1)  # [B, T, K]
        w = p * weights.to(p.dtype).unsqueeze(-1)  # a_i * p_ik
        residual = w.transpose(1, 2) @ tokens - w.sum(1).unsqueeze(-1) * self.emb_center  # [B, K, D]
        return normalize(normalize(residual).mean(1))

    def text(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Aligned text embedding: token weights = mask with the SOT position zeroed."""
        weights = mask.to(hidden.dtype).clone()
        weights[:, 0] = 0
        return self.aggregate(hidden, weights)

    def video_tokens(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        tdb: TemporalDifferenceBlock | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The F frame tokens plus ceil(F/2) temporal tokens (12 + 6 for F = 12), and their weights."""
        xs, ms = x[:, 0::2], mask[:, 0::2]
        n = xs.shape[1]
        if tdb is None:
            y = self.actionClip(xs + positions[:n], ms)
        else:
            tokens, token_mask = tdb.tokens(xs, ms, positions)
            y = self.actionClip(tokens, token_mask)[:, 0::2]
        return torch.cat((x, y + xs), dim=1), torch.cat((mask, ms), dim=1)

    def video(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        tdb: TemporalDifferenceBlock | None = None,
    ) -> torch.Tensor:
        """Aligned video embedding -> [B, D]."""
        return self.aggregate(*self.video_tokens(x, mask, positions, tdb))
