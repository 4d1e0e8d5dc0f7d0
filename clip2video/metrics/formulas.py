"""Metrics from per-query ranks: the averaging of each metric's per-query definition.

``metrics_from_ranks`` (one selection of queries) and ``metrics_from_weights`` (many resamples at
once, the bootstrap's fast path) run the SAME definitions (:mod:`clip2video.metrics.definitions`)
through :func:`reduce_point` and :func:`reduce_weighted`, which do the arithmetic of the official
code per path: R@K = ``count * 100 / n``; the median by numpy's rule (mean of the two middle
values) or the lower middle value (``torch.median``) on the several-captions t2v path; the mean
rank as ``mean(rank - 1) + 1`` or ``mean(rank)`` there. Counts, medians and sums of ranks
(multiples of 1/2) are exact in any order, so an all-ones weight row reproduces the point value
exactly; a fractional R@K sum (``mean`` policy) uses the same elementwise summation in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from clip2video.metrics.counting import query_ranks
from clip2video.metrics.definitions import PerQuery, metric_set, recall
from clip2video.metrics.ranks import DIRECTIONS, QueryRanks

__all__ = [
    "metrics_from_ranks",
    "metrics_from_weights",
    "recall_at",
    "reduce_point",
    "reduce_weighted",
    "retrieval_metrics",
]


# ----------------------------------------------------------------------------------------------
# One metric: point value and weighted resamples
# ----------------------------------------------------------------------------------------------


def reduce_point(pq: PerQuery) -> float:
    """The metric value of one selection of queries (each query once, as listed)."""
    values = pq.values
    if pq.reduce == "sum":
        return float(np.sum(values))
    if pq.reduce == "mean":
        total = len(values) if pq.counts is None else int(np.sum(pq.counts))
        value = float(np.sum(values)) * pq.scale / total
        return value + pq.offset if pq.offset else value
    if pq.counts is not None:
        middle = _range_median(values, pq.counts, int(np.sum(pq.counts)), pq.lower, weights=None)
    elif pq.lower:
        n = len(values)
        middle = float(np.partition(values, (n - 1) // 2)[(n - 1) // 2])
    else:
        middle = float(np.median(values) + pq.offset)
        return middle
    return middle + pq.offset if pq.offset else middle


def reduce_weighted(pq: PerQuery, w: np.ndarray) -> np.ndarray:
    """The metric value of many resamples: row b of ``w`` (int ``[B, num_queries]``) holds each
    query's multiplicity; returns float64 ``[B]``, row b equal to :func:`reduce_point` of the
    queries repeated that many times."""
    if pq.reduce == "sum":
        return _weighted_sum(pq.values, w)
    if pq.reduce == "mean":
        total = w.sum(1) if pq.counts is None else w @ pq.counts
        value = _weighted_sum(pq.values, w) * pq.scale / total
        return value + pq.offset if pq.offset else value
    if pq.counts is not None:
        totals = w @ pq.counts
        middle = np.array(
            [
                _range_median(pq.values, pq.counts, int(totals[b]), pq.lower, weights=row)
                for b, row in enumerate(w)
            ],
            dtype=np.float64,
        )
        return middle + pq.offset if pq.offset else middle
    total = w.sum(1)
    order = np.argsort(pq.values, kind="stable")
    ordered = pq.values[order]
    cumulative = np.cumsum(w[:, order], axis=1)

    def at(position: np.ndarray) -> np.ndarray:  # the value at a 0-based position of each sorted resample
        index = [np.searchsorted(row, p, side="right") for row, p in zip(cumulative, position, strict=True)]
        return ordered[np.asarray(index, dtype=np.int64)]

    if pq.lower:
        middle = at((total - 1) // 2)
        return middle + pq.offset if pq.offset else middle
    return (at((total - 1) // 2) + at(total // 2)) / 2 + pq.offset


def _weighted_sum(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum(w[b] * values)`` per row b, exact where the values allow: integers and multiples of
    1/2 are float matrix products (every partial sum an integer below 2**53, so exact in any order);
    other values (fractional hits) are summed elementwise, as ``np.sum`` does for the point value."""
    if values.dtype.kind in "iub":
        return (w @ values.astype(np.int64)).astype(np.float64)
    wf = w.astype(np.float64)
    halves = np.round(values * 2)
    if np.array_equal(halves / 2, values) and np.max(np.abs(halves), initial=0) * len(values) < 2**52:
        return (wf @ halves) / 2
    return np.sum(wf * values, axis=1)


def _range_median(
    first: np.ndarray, counts: np.ndarray, total: int, lower: bool, *, weights: np.ndarray | None
) -> float:
    """The median of the integers ``first[q] .. first[q] + counts[q] - 1`` of every query q (each
    query ``weights[q]`` times), without listing them: a histogram by a difference array, then the
    middle one(s), as ``np.median`` picks them (``lower``: the lower middle value)."""
    first = first.astype(np.int64)
    counts = counts.astype(np.int64)
    last = int(np.max(first + counts - 1))
    if weights is None:
        diff = np.zeros(last + 2, dtype=np.int64)
        np.add.at(diff, first, 1)
        np.add.at(diff, first + counts, -1)
    else:
        diff = (
            np.bincount(first, weights=weights, minlength=last + 2)
            - np.bincount(first + counts, weights=weights, minlength=last + 2)
        ).astype(np.int64)
    cumulative = np.cumsum(np.cumsum(diff)[: last + 1])
    lo, hi = (total - 1) // 2, total // 2
    mid = np.searchsorted(cumulative, [lo + 1, hi + 1])
    return float(mid[0]) if lower else float(np.mean(mid.astype(np.float64)))


# ----------------------------------------------------------------------------------------------
# Every metric of a run
# ----------------------------------------------------------------------------------------------


def metrics_from_ranks(ranks: QueryRanks, *, recall_ks: Sequence[int] | None = None) -> dict[str, float]:
    """R@K (percent) for each of ``recall_ks`` (default 1, 5, 10), MdR, MnR and every registered
    metric of both directions, and the number of tied queries.

    Keys are ``metric_keys(recall_ks)`` (``METRIC_KEYS`` by default). Works on any
    ``ranks.take(...)`` selection (bootstrap).
    """
    for direction in DIRECTIONS:
        if len(getattr(ranks, direction)) == 0:
            raise ValueError(f"no {direction} queries to average (an empty selection?)")
    metrics = metric_set(recall_ks)
    out: dict[str, float] = {}
    for group in ([m for m in metrics if m.table], [m for m in metrics if not m.table]):
        for direction, metric in _in_key_order(group):
            out[f"{direction}_{metric.name}"] = reduce_point(metric.per_query(ranks, direction))
    return out


def metrics_from_weights(
    ranks: QueryRanks, t2v: np.ndarray, v2t: np.ndarray, *, recall_ks: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """``metrics_from_ranks`` of many resamples at once (the bootstrap's fast path).

    Resample b is given by query multiplicities: ``t2v[b, i]`` copies of caption query i and
    ``v2t[b, v]`` of video query v (int ``[B, num_captions]`` / ``[B, num_videos]``). Row b of
    every returned array (float64 ``[B]``) is ``metrics_from_ranks(ranks.take(t2v=np.repeat(
    arange, t2v[b]), v2t=...))``: the same definitions on the same multiset of queries. Counts,
    medians and sums of ranks (multiples of 1/2) are exact either way, so they are equal; a
    fractional R@K sum (``mean`` policy) may differ in its last bit for a non-identity resample,
    as its summation order differs. An all-ones row reproduces ``metrics_from_ranks`` exactly.
    """
    weights: dict[str, np.ndarray] = {}
    for direction, given in (("t2v", t2v), ("v2t", v2t)):
        w = np.atleast_2d(np.asarray(given, dtype=np.int64))
        if w.shape[1] != len(getattr(ranks, direction)):
            raise ValueError(
                f"{direction} weights must be [B, {len(getattr(ranks, direction))}], got {w.shape}"
            )
        if np.any(w.sum(1) == 0):
            raise ValueError(f"no {direction} queries to average (an empty resample)")
        weights[direction] = w
    metrics = metric_set(recall_ks)
    out: dict[str, np.ndarray] = {}
    for group in ([m for m in metrics if m.table], [m for m in metrics if not m.table]):
        for direction, metric in _in_key_order(group):
            out[f"{direction}_{metric.name}"] = reduce_weighted(
                metric.per_query(ranks, direction), weights[direction]
            )
    return out


def _in_key_order(group: list[Any]) -> list[tuple[str, Any]]:
    """Table metrics go direction by direction (t2v_R1 .. t2v_MnR, v2t_R1 ..); the others metric by
    metric (t2v_ties, v2t_ties): the order of ``metric_keys``."""
    if group and group[0].table:
        return [(d, m) for d in DIRECTIONS for m in group]
    return [(d, m) for m in group for d in DIRECTIONS]


def recall_at(ranks: QueryRanks, direction: str, ks: Sequence[int] | np.ndarray) -> np.ndarray:
    """``direction``'s R@K (percent) for every K in ``ks``: the one recall definition
    (:func:`~clip2video.metrics.definitions.recall`), so a recall curve at 1/5/10 equals the
    recorded metrics exactly."""
    if len(ranks.counts(direction)[0]) == 0:
        raise ValueError(f"no {direction} queries to average (an empty selection?)")
    ks = np.asarray(ks).tolist()
    return np.array([reduce_point(recall(int(k)).per_query(ranks, direction)) for k in ks], dtype=np.float64)


def retrieval_metrics(
    sim: Any,
    caption_video: Any,
    *,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    chunk_size: int = 1024,
    recall_ks: Sequence[int] | None = None,
) -> dict[str, float]:
    """R@1/5/10 (percent; ``recall_ks`` picks other cut-offs), MdR and MnR of t2v and v2t (and every
    registered metric), plus ``t2v_ties`` / ``v2t_ties`` (queries whose ground truth tied with
    another candidate), from ``sim[num_captions, num_videos]``.

    ``caption_video[i]`` is caption i's video; single- and several-captions protocols alike.
    A NaN or +-inf score is a ValueError naming its rows (caption indices), never ranked.

    >>> import numpy as np
    >>> m = retrieval_metrics(np.eye(3), np.arange(3))
    >>> m["t2v_R1"], m["v2t_R1"], m["t2v_MdR"]
    (100.0, 100.0, 1.0)
    """
    ranks = query_ranks(sim, caption_video, tie_policy=tie_policy, v2t=v2t, chunk_size=chunk_size)
    return metrics_from_ranks(ranks, recall_ks=recall_ks)
