"""The evaluation engine: encode every caption and video once -> one similarity -> metrics.

Evaluation and training validation both go through these functions; each step has its module:

* :mod:`~clip2video.engine.encode`: batched and distributed encoding (:func:`encode_texts`,
  :func:`encode_videos`, :func:`encode_video_passes`, :func:`reverse_frames`);
* :mod:`~clip2video.engine.embeddings`: a split to :class:`Embeddings` through the embedding cache
  (:func:`encode_split`, :func:`encode_split_pair`);
* :mod:`~clip2video.engine.scoring`: similarity -> per-query ranks -> metrics
  (:func:`evaluate_embeddings`, :func:`similarity_function`, :func:`own_scores`);
* :mod:`~clip2video.engine.reversal`: :func:`time_reversal_diagnostic`.

This module glues them (:func:`evaluate`: a split; :func:`evaluate_protocol`, the notebook's
``clip2video.evaluate``: a protocol's test split, optionally writing a run record) and re-exports
their public names, so
``from clip2video.engine.evaluate import ...`` keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

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

if TYPE_CHECKING:
    from clip2video.engine.records import RunRecord
    from clip2video.metrics import QueryRanks

__all__ = [
    "DEFAULT_CHUNK",
    "PHASE_VIDEOS",
    "Embeddings",
    "EncodeOptions",
    "EvalResult",
    "ProtocolEvaluation",
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
    "evaluate_protocol",
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


@dataclass
class ProtocolEvaluation:
    """What :func:`evaluate_protocol` (``clip2video.evaluate``) returns.

    ``metrics`` are the retrieval metrics, ``ranks`` every query's exact rank, ``sim`` the similarity
    matrix, ``split`` the evaluated split (ids, captions, ``caption_video``; ``dropped`` names videos
    left out with ``allow_missing``) and ``record`` the run record written to ``record_dir`` (None
    without one): what tables, intervals and the drift gate read (``clip2video.results``).
    """

    metrics: dict[str, float]
    ranks: QueryRanks
    sim: Tensor | None
    split: Any
    record: RunRecord | None = None


def evaluate_protocol(
    model: nn.Module,
    protocol: Any,
    *,
    data_root: str | os.PathLike[str] = "data",
    annotations: str | os.PathLike[str] = "",
    videos: str | os.PathLike[str] = "",
    split: str = "test",
    sampler: Any = None,
    tokenizer: Any = None,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    recall_ks: Sequence[int] | None = None,
    allow_missing: bool = False,
    record_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    **encode_kwargs: Any,
) -> ProtocolEvaluation:
    """Evaluate ``model`` on a protocol's test split: no suite, no training, one call.

    ``protocol`` is a registered name (``"msrvtt-1k-a"``) or a ``Protocol``; its files are found as
    the command line finds them (``DATA/<protocol>/{annotations,videos}`` under ``data_root``, or
    ``annotations`` / ``videos``, relative to ``data_root`` or absolute), and only the evaluated
    split's files and videos are read. Frames and captions follow the protocol's published settings
    unless a ``sampler`` / ``tokenizer`` is given. The model is evaluated in eval mode (its mode is
    restored after). With ``record_dir`` the run record is written there (``name``: the record's
    row name, default the model's registry name) and read back as ``result.record``. Other keywords
    (``batch_size``, ``device``, ``num_workers``, ``cache``, ``progress``, ``amp``) are
    :func:`encode_split`'s.
    """
    from clip2video.data.annotations import load_split
    from clip2video.data.protocols import data_folders, get_protocol
    from clip2video.data.verify import require_test_videos

    proto = get_protocol(protocol)
    annotations_dir, videos_dir = data_folders(
        proto, data_root, annotations=str(annotations), videos=str(videos)
    )
    data = require_test_videos(
        load_split(proto, annotations_dir, split), videos_dir, allow_missing=allow_missing, progress=False
    )
    was_training = model.training
    model.eval()
    try:
        encode_kwargs.setdefault("progress", False)
        result = evaluate(
            model,
            data,
            videos_dir,
            sampler,
            tokenizer,
            protocol=proto,
            split_name=split,
            tie_policy=tie_policy,
            v2t=v2t,
            recall_ks=recall_ks,
            keep_sim=True,
            **encode_kwargs,
        )
    finally:
        model.train(was_training)
    if result is None:  # another rank of a torch.distributed group: rank 0 holds the result
        raise RuntimeError("evaluate_protocol: call it on one process (rank 0 ranks under torch.distributed)")
    out = ProtocolEvaluation(result.metrics, result.ranks, result.sim, data)
    if record_dir is not None:
        out.record = _write_record(model, proto, data, result, record_dir, name, tie_policy, v2t, recall_ks)
    return out


def _write_record(
    model: nn.Module,
    proto: Any,
    data: Any,
    result: EvalResult,
    record_dir: str | os.PathLike[str],
    name: str | None,
    tie_policy: str,
    v2t: str,
    recall_ks: Sequence[int] | None,
) -> RunRecord:
    """The evaluation's run record (metrics, every per-query rank, the similarities, the settings)."""
    from clip2video.engine.records import read_run_record, write_run_record
    from clip2video.metrics import check_recall_ks

    model_config = dict(getattr(model, "config", {}) or {})
    row = name or str(model_config.get("name") or type(model).__name__)
    config = {
        "protocol": proto.name,
        "eval": {"tie_policy": tie_policy, "v2t": v2t, "recall_ks": list(check_recall_ks(recall_ks))},
        "model_config": model_config,
    }
    folder = write_run_record(
        record_dir,
        name=row,
        metrics=result.metrics,
        ranks=result.ranks,
        caption_video=data.caption_video,
        protocol=proto.name,
        config=config,
        extra={"model": model_config.get("name", row), "split": data.split, "dropped": data.dropped},
        sim=None if result.sim is None else result.sim.float().cpu().numpy(),
    )
    return read_run_record(folder)
