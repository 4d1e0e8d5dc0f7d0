"""The time-reversal diagnostic: how much does a model use frame order?"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from clip2video.engine.embeddings import Embeddings, encode_split, encode_split_pair
from clip2video.engine.scoring import evaluate_embeddings, own_scores

__all__ = ["time_reversal_diagnostic"]


def time_reversal_diagnostic(
    model: nn.Module,
    split: Any,
    videos_dir: str | os.PathLike[str],
    sampler: Any = None,
    tokenizer: Any = None,
    *,
    protocol: Any = "custom",
    atol: float = 1e-4,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    w: float | None = None,
    emb: Embeddings | None = None,
    rev_emb: Embeddings | None = None,
    recall_ks: Sequence[int] | None = None,
    **encode_kwargs: Any,
) -> dict[str, float]:
    """How much does the model use frame order? Metrics on time-reversed frames, and score changes.

    Returns the plain metrics, the same metrics on reversed frames (keys prefixed ``rev_``),
    ``order_changed_share`` (percentage of captions whose score for their own video changes by
    more than ``atol`` when that video's real frames are reversed), ``mean_abs_score_change``,
    ``max_abs_score_change``, ``atol`` and ``num_queries``. An order-blind model (meanp) gives 0.
    Pass ``emb`` / ``rev_emb`` to reuse embeddings already encoded; other keyword arguments
    (``cache``, ...) go to :func:`encode_split`.
    """
    kwargs = dict(sampler=sampler, tokenizer=tokenizer, **encode_kwargs)
    if emb is None and rev_emb is None:
        emb, rev_emb = encode_split_pair(model, split, protocol, videos_dir, time_reversal=True, **kwargs)
    if emb is None:
        emb = encode_split(model, split, protocol, videos_dir, reverse=False, **kwargs)
    if rev_emb is None:
        rev_emb = encode_split(model, split, protocol, videos_dir, reverse=True, **kwargs)
    ranking = dict(tie_policy=tie_policy, v2t=v2t, w=w, keep_sim=False, recall_ks=recall_ks)
    plain = evaluate_embeddings(model, emb, **ranking)
    rev = evaluate_embeddings(model, rev_emb, **ranking)
    before = own_scores(model, emb.text, emb.video, emb.caption_video, w=w)
    after = own_scores(model, emb.text, rev_emb.video, emb.caption_video, w=w)
    diff = (after - before).abs()
    out: dict[str, float] = dict(plain.metrics)
    out.update({f"rev_{k}": v for k, v in rev.metrics.items()})
    out.update(
        order_changed_share=float(100.0 * (diff > atol).double().mean()),
        mean_abs_score_change=float(diff.double().mean()),
        max_abs_score_change=float(diff.max()),
        atol=float(atol),
        num_queries=float(diff.numel()),
    )
    return out
