"""Similarity to metrics: one similarity matrix (or its rows on demand) -> per-query ranks -> metrics.

:func:`evaluate_embeddings` turns embeddings into a similarity matrix (optionally with a TAB mixing
weight ``w`` and a post-processing row, DSL or QB-Norm) and then into per-query ranks and metrics
through :mod:`clip2video.metrics`, the one ranking core. Without ``keep_sim`` only one chunk of
similarity rows exists at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from clip2video import metrics as _metrics
from clip2video.engine.embeddings import Embeddings
from clip2video.engine.postprocess import PostProcess

if TYPE_CHECKING:
    from clip2video.metrics import QueryRanks

__all__ = ["DEFAULT_CHUNK", "EvalResult", "evaluate_embeddings", "own_scores", "similarity_function"]

DEFAULT_CHUNK = 1024


@dataclass
class EvalResult:
    """Metrics and per-query ranks of one row; ``sim`` is kept only with ``keep_sim=True``.

    ``row_name`` is ``""`` for the plain row and the post-processing suffix (``+DSL(T=100)``,
    ``+QB-Norm(...)``) for a marked row.
    """

    metrics: dict[str, float]
    ranks: QueryRanks
    sim: Tensor | None = None
    row_name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def similarity_function(model: nn.Module, w: float | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """``(text, video) -> sim`` of ``model``; ``w`` re-mixes TAB's two parts without re-encoding.

    With ``w`` the similarity is ``w * global + (1 - w) * aligned`` from
    ``model.similarity_parts``; a model without TAB (one part) rejects ``w``.
    """
    if w is None:
        return model.similarity

    def mixed(text: Tensor, video: Tensor) -> Tensor:
        parts = model.similarity_parts(text, video)
        if len(parts) != 2:
            raise ValueError(
                f"w={w} re-weights TAB's global and aligned similarities, but {type(model).__name__} "
                f"has {len(parts)} similarity part(s); evaluate it without w"
            )
        (_, glob), (_, aligned) = parts
        return w * glob + (1.0 - w) * aligned

    return mixed


def _score_rows(sim_fn: Callable[[Tensor, Tensor], Tensor], emb: Embeddings) -> Callable[[int, int], Tensor]:
    def rows(start: int, stop: int) -> Tensor:
        with torch.inference_mode():
            return sim_fn(emb.text[start:stop], emb.video).float()

    return rows


def _full_sim(sim_fn: Callable[[Tensor, Tensor], Tensor], emb: Embeddings, chunk_size: int) -> Tensor:
    rows = _score_rows(sim_fn, emb)
    n = emb.text.shape[0]
    return torch.cat([rows(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)])


def evaluate_embeddings(
    model: nn.Module,
    emb: Embeddings,
    *,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    w: float | None = None,
    post: PostProcess | None = None,
    keep_sim: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    recall_ks: Sequence[int] | None = None,
) -> EvalResult:
    """Similarity -> per-query ranks -> metrics for one row, from already-encoded embeddings.

    ``recall_ks``: the R@K cut-offs (``[eval] recall_ks``; None: 1, 5, 10).

    ``post`` (a :class:`~clip2video.engine.postprocess.DualSoftmax` or ``QBNorm``) turns the
    result into a marked row (``row_name`` = its suffix; QB-Norm reports t2v only). Without
    ``keep_sim`` and ``post``, ranks come from :func:`clip2video.metrics.ranks_from_scores` and at
    most ``chunk_size`` similarity rows exist at a time. Post-processing needs the whole matrix.
    """
    sim_fn = similarity_function(model, w)
    num_videos = emb.video.shape[0]
    sim: Tensor | None = None
    if post is None and not keep_sim:
        ranks = _metrics.ranks_from_scores(
            _score_rows(sim_fn, emb),
            emb.caption_video,
            num_videos,
            chunk_size=chunk_size,
            tie_policy=tie_policy,
            v2t=v2t,
        )
    else:
        sim = _full_sim(sim_fn, emb, chunk_size)
        if post is not None:
            sim = post.apply(sim, lambda text: _full_sim(sim_fn, _bank(emb, text), chunk_size))
        ranks = _metrics.query_ranks(sim, emb.caption_video, tie_policy=tie_policy, v2t=v2t)
    metrics = _metrics.metrics_from_ranks(ranks, recall_ks=recall_ks)
    row_name = ""
    if post is not None:
        row_name = post.row_name
        metrics = {k: v for k, v in metrics.items() if k.split("_", 1)[0] in post.directions}
    meta = {"tie_policy": tie_policy, "v2t": v2t, "w": w, **emb.meta}
    return EvalResult(
        metrics=metrics, ranks=ranks, sim=sim if keep_sim else None, row_name=row_name, meta=meta
    )


def _bank(emb: Embeddings, text: Tensor) -> Embeddings:
    """Bank captions scored against ``emb``'s gallery (their caption_video is irrelevant)."""
    return Embeddings(
        text=text.to(emb.video.device),
        video=emb.video,
        caption_video=np.zeros(text.shape[0], dtype=np.int64),
        video_ids=emb.video_ids,
    )


def own_scores(
    model: nn.Module,
    text: Tensor,
    video: Tensor,
    caption_video: np.ndarray | Sequence[int],
    *,
    w: float | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Tensor:
    """``sim[i, caption_video[i]]`` for every caption, without building the whole matrix."""
    sim_fn = similarity_function(model, w)
    cv = torch.as_tensor(np.asarray(caption_video, dtype=np.int64), device=video.device)
    out = []
    with torch.inference_mode():
        for s in range(0, text.shape[0], chunk_size):
            t = text[s : s + chunk_size]
            v = video[cv[s : s + chunk_size]]
            out.append(torch.diagonal(sim_fn(t, v)).float())
    return torch.cat(out)
