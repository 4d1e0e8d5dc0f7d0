"""A toy retrieval model in one file: bag-of-words captions against the mean colour of frames.

The whole addition is this file; ``register_model`` is the one registration. The factory's
named parameters are the options it accepts, so a suite's ``[model]`` table can hold options of
other models too (the runner passes a model only the options it declares).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clip2video.models import list_models, register_model


class MeanColourModel(nn.Module):
    """Text: masked mean of word embeddings. Video: masked mean over frames of a projected mean colour."""

    def __init__(self, dim: int = 16, vocab_size: int = 49408, seed: int = 0) -> None:
        super().__init__()
        self.config = {"dim": dim, "vocab_size": vocab_size, "seed": seed}
        generator = torch.Generator().manual_seed(seed)
        self.words = nn.Parameter(torch.randn(vocab_size, dim, generator=generator) * 0.02)
        self.colour = nn.Parameter(torch.randn(3, dim, generator=generator))
        self.logit_scale = nn.Parameter(torch.tensor(10.0))

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``[N, L]`` token ids and mask -> ``[N, dim]`` unit vectors."""
        mask = attention_mask.unsqueeze(-1).to(self.words.dtype)
        pooled = (self.words[input_ids] * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return nn.functional.normalize(pooled, dim=-1)

    def encode_video(self, frames: Tensor, video_mask: Tensor) -> Tensor:
        """``[M, T, 3, H, W]`` frames and ``[M, T]`` mask -> ``[M, dim]`` unit vectors."""
        per_frame = frames.float().mean(dim=(-2, -1)) @ self.colour  # [M, T, dim]
        mask = video_mask.unsqueeze(-1).to(per_frame.dtype)
        pooled = (per_frame * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return nn.functional.normalize(pooled, dim=-1)

    def similarity(self, text: Tensor, video: Tensor) -> Tensor:
        """``[N, dim]`` x ``[M, dim]`` -> ``[N, M]`` logits."""
        return self.logit_scale * text @ video.t()

    def similarity_parts(self, text: Tensor, video: Tensor) -> list[tuple[float, Tensor]]:
        """One part: this model has no TAB-style second similarity."""
        return [(1.0, self.similarity(text, video))]


@register_model
def toy_mean_colour(dim: int = 16, vocab_size: int = 49408, seed: int = 0) -> MeanColourModel:
    """The toy model under the registry name ``toy_mean_colour``."""
    return MeanColourModel(dim=dim, vocab_size=vocab_size, seed=seed)


assert "toy_mean_colour" in list_models(), "the registration above must make the name known to create_model"
