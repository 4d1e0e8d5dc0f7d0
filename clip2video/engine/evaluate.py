"""The evaluation engine: encode every caption and video once -> one similarity -> metrics.

Evaluation and training validation both go through these functions; each step has its module:

* :mod:`~clip2video.engine.encode`: batched and distributed encoding (:func:`encode_texts`,
  :func:`encode_videos`, :func:`encode_video_passes`, :func:`reverse_frames`);
* :mod:`~clip2video.engine.embeddings`: a split to :class:`Embeddings` through the embedding cache
  (:func:`encode_split`, :func:`encode_split_pair`);
* :mod:`~clip2video.engine.scoring`: similarity -> per-query ranks -> metrics
  (:func:`evaluate_embeddings`, :func:`similarity_function`, :func:`own_scores`);
* :mod:`~clip2video.engine.reversal`: :func:`time_reversal_diagnostic`.

This module glues them (:func:`evaluate`) and re-exports their public names, so
``from clip2video.engine.evaluate import ...`` keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from clip2video.engine import distributed as _dist
from clip2video.engine.embeddings import (
    Embeddings,
    EncodeOptions,
    _encode_split_passes,
    encode_split,
    encode_split_pair,
)
from clip2video.engine.encode import (
    PHASE_VIDEOS,
    autocast_context,
    caption_batches,
    encode_texts,
    encode_texts_distributed,
    encode_video_passes,
    encode_videos,
    encode_videos_distributed,
    model_device,
    progress_desc,
    reverse_frames,
)
from clip2video.engine.postprocess import PostProcess
from clip2video.engine.reversal import time_reversal_diagnostic
from clip2video.engine.scoring import (
    DEFAULT_CHUNK,
    EvalResult,
    evaluate_embeddings,
    own_scores,
    similarity_function,
)

__all__ = [
    "DEFAULT_CHUNK",
    "PHASE_VIDEOS",
    "Embeddings",
    "EncodeOptions",
    "EvalResult",
    "autocast_context",
    "caption_batches",
    "encode_split",
    "encode_split_pair",
    "encode_texts",
    "encode_texts_distributed",
    "encode_video_passes",
    "encode_videos",
    "encode_videos_distributed",
    "evaluate",
    "evaluate_embeddings",
    "model_device",
    "own_scores",
    "progress_desc",
    "reverse_frames",
    "similarity_function",
    "time_reversal_diagnostic",
]


def evaluate(
    model: nn.Module,
    split: Any,
    videos_dir: str | os.PathLike[str],
    sampler: Any = None,
    tokenizer: Any = None,
    *,
    protocol: Any = "custom",
    reverse: bool = False,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    w: float | None = None,
    post: PostProcess | None = None,
    keep_sim: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    recall_ks: Sequence[int] | None = None,
    **encode_kwargs: Any,
) -> EvalResult | None:
    """Find videos -> encode once (or read the cache) -> similarity -> metrics.

    The encoding keywords (``cache``, ``split_name``, ``batch_size``, ``num_workers``, ``device``,
    ``amp``, ``distributed``, ``progress``, ...) are :func:`encode_split`'s (:class:`EncodeOptions`);
    the ranking ones :func:`evaluate_embeddings`'s. Under ``torch.distributed`` (see
    :func:`encode_split`'s ``distributed``) all ranks encode their shards and rank 0 ranks: the
    other ranks return None.
    """
    options = EncodeOptions(sampler=sampler, tokenizer=tokenizer, **encode_kwargs)
    (emb,) = _encode_split_passes(model, split, protocol, videos_dir, (bool(reverse),), options)
    if options.collective and _dist.rank_and_world()[0] != 0:
        return None
    return evaluate_embeddings(
        model,
        emb,
        tie_policy=tie_policy,
        v2t=v2t,
        w=w,
        post=post,
        keep_sim=keep_sim,
        chunk_size=chunk_size,
        recall_ks=recall_ks,
    )
