"""The one ranking core: per-query ranks by counting scores, and retrieval metrics.

Every metric the harness reports comes from here. For each query the core COUNTS candidates
(never sorts): ``higher`` = candidates scoring strictly above the ground truth, ``equal`` =
candidates scoring the same (the ground truth excluded) and, for the official several-captions
text-to-video path, ``before`` = tied candidates with a smaller index. That is O(N*M) work, done
in chunks of queries with pure torch ops on the device the scores live on. "Above" and "equal"
come from the sign of one float difference per score (exact; see ``_above_and_equal_block``),
counted on CPUs in cache-sized blocks of each chunk. ``ranks_from_scores`` takes rows computed on
demand (say from embeddings) and never holds more than a chunk; ``query_ranks`` and
``retrieval_metrics`` run the same core over a full matrix.

Directions (``sim`` is ``[num_captions, num_videos]``, ``caption_video[i]`` = caption i's video):

- t2v: one query per caption, ranked over all videos.
- v2t ``"official"`` (CLIP4Clip / CLIP2Video): for video v, ``g[v, u] = max over captions c of u of
  sim[c, v]``; v's own group is ranked among all groups. With one caption per video this is the
  transpose.
- v2t ``"first-hit"`` (a named option): v's best-scoring own caption ranked among ALL captions;
  other captions of v never count against it.

Tie policies (``rank`` is 1-based; ``g`` = higher, ``e`` = equal):

- ``pessimistic`` (default): ``1 + g + e``. ``optimistic``: ``1 + g``.
- ``mean``: expected rank ``1 + g + e / 2`` and expected R@K ``clip(K - g, 0, e + 1) / (e + 1)``
  under a uniformly random order of the tied candidates.
- ``legacy``: the official code exactly, artifacts included. Its ``np.where(sort(-x) - diag == 0)``
  paths (single-caption t2v and v2t, several-captions v2t) give a query that ties with ``e``
  candidates ``e + 1`` entries ``g + 1 .. g + e + 1``, each counted in every average, in the
  median and in the denominator. Its several-captions t2v path (double argsort) ranks
  ``1 + g + before``.

Averaging follows the official code per path, for every policy, so that all four policies give the
official numbers on tie-free matrices: R@K = ``count * 100 / n``; MdR = numpy's median (mean of
the two middle values) except on the several-captions t2v path, where the official code uses
``torch.median`` (the LOWER middle value); MnR = ``mean(rank - 1) + 1`` there and ``mean(rank)`` on
the several-captions t2v path. (That path computes R@K in float32 in the official code; here it is
float64, which can differ from it below 1e-5.) A layout is "single-caption" when every video has
exactly one caption.

The package, along those seams: :mod:`~clip2video.metrics.ranks` (``QueryRanks``),
:mod:`~clip2video.metrics.counting` (the counting core: ``query_ranks``, ``ranks_from_scores``),
:mod:`~clip2video.metrics.definitions` (each metric defined once, the ``METRICS`` registry, recall
cut-offs), :mod:`~clip2video.metrics.formulas` (``metrics_from_ranks``, ``metrics_from_weights``,
``retrieval_metrics``), :mod:`~clip2video.metrics.validation` (input checks) and
:mod:`~clip2video.metrics.bootstrap`. Everything public is re-exported here.

>>> import numpy as np
>>> from clip2video.metrics import metric_keys, retrieval_metrics
>>> metric_keys(recall_ks=[1, 50])[:4]
('t2v_R1', 't2v_R50', 't2v_MdR', 't2v_MnR')
>>> retrieval_metrics(np.eye(2), np.arange(2), recall_ks=[1, 50])["v2t_R50"]
100.0
"""

from __future__ import annotations

from clip2video.metrics.counting import ScoreRows, query_ranks, ranks_from_scores
from clip2video.metrics.definitions import (
    METRICS,
    RECALL_KS,
    Metric,
    PerQuery,
    check_recall_ks,
    is_metric_key,
    metric_keys,
    metric_label,
    metric_set,
    recall,
    register_metric,
)
from clip2video.metrics.formulas import (
    metrics_from_ranks,
    metrics_from_weights,
    recall_at,
    retrieval_metrics,
)
from clip2video.metrics.ranks import DIRECTIONS, TIE_POLICIES, V2T_CONVENTIONS, QueryRanks, recall_hits

__all__ = [
    "DIRECTIONS",
    "METRICS",
    "METRIC_KEYS",
    "RECALL_KS",
    "TIE_POLICIES",
    "V2T_CONVENTIONS",
    "Metric",
    "PerQuery",
    "QueryRanks",
    "ScoreRows",
    "check_recall_ks",
    "is_metric_key",
    "metric_keys",
    "metric_label",
    "metric_set",
    "metrics_from_ranks",
    "metrics_from_weights",
    "query_ranks",
    "ranks_from_scores",
    "recall",
    "recall_at",
    "recall_hits",
    "register_metric",
    "retrieval_metrics",
]

# The default keys (recall at 1, 5, 10 and the built-in metrics); ``metric_keys(recall_ks)`` gives the
# keys of a run with other cut-offs or registered metrics.
METRIC_KEYS: tuple[str, ...] = metric_keys()
