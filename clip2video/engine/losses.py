"""Co-learning loss: symmetric cross-entropy over a batch's caption-video logits (models.md)."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


class HasSimilarityParts(Protocol):
    """What the loss needs from a model: its weighted similarity parts."""

    def similarity_parts(
        self, text: torch.Tensor, video: torch.Tensor
    ) -> list[tuple[float, torch.Tensor]]: ...


def symmetric_ce(logits: torch.Tensor) -> torch.Tensor:
    """``(CE(logits, arange) + CE(logits.T, arange)) / 2`` for square ``[B, B]`` logits, in float32.

    Row ``i`` is caption ``i``; its positive is video ``i`` (the diagonal).
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"symmetric_ce needs square [B, B] logits, got shape {tuple(logits.shape)}")
    logits = logits.float()
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def co_learning_loss(
    model: HasSimilarityParts, text: torch.Tensor, video: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """``sum_k w_k * symmetric_ce(logits_k)`` over ``model.similarity_parts(text, video)``.

    One part (1.0, global) for plain models; (w, global) and (1 - w, aligned) with TAB.
    Returns the loss and a dict of detached floats: ``loss`` and ``loss_part{k}`` per part.
    """
    parts = model.similarity_parts(text, video)
    if not parts:
        raise ValueError(f"{type(model).__name__}.similarity_parts returned no parts")
    total: torch.Tensor | None = None
    logged: dict[str, float] = {}
    for k, (weight, logits) in enumerate(parts):
        part = symmetric_ce(logits)
        logged[f"loss_part{k}"] = float(part.detach())
        term = weight * part
        total = term if total is None else total + term
    assert total is not None
    logged["loss"] = float(total.detach())
    return total, logged
