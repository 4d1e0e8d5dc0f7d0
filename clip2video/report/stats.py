"""Bootstrap intervals and paired bootstrap tests over per-query ranks (vectorised numpy).

A metric of a rank vector: ``R@K = 100 * mean(rank <= K)``, ``MdR = median``, ``MnR = mean``.
Queries are resampled with replacement, each direction on its own; the paired test draws the
same query indices for both models, so it measures the difference on the same queries.
Intervals are percentile intervals; everything is deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from clip2video.errors import Clip2VideoError
from clip2video.metrics import RECALL_KS

DIRECTIONS = ("t2v", "v2t")

METRIC_NAMES = ("R1", "R5", "R10", "MdR", "MnR")
METRIC_KEYS = tuple(f"{d}_{m}" for d in DIRECTIONS for m in METRIC_NAMES)
# Resample at most this many (replicate, query) cells at once to bound memory.
_CELLS_PER_CHUNK = 4_000_000


class PairedDiff(NamedTuple):
    """Model A minus model B on one metric: the observed delta, its interval, p-value, verdict."""

    delta: float
    lo: float
    hi: float
    p: float
    significant: bool


def _as_ranks(ranks: Any, name: str) -> np.ndarray:
    arr = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise Clip2VideoError(f"{name}: no per-query ranks to bootstrap")
    if not np.all(np.isfinite(arr)):
        raise Clip2VideoError(f"{name}: per-query ranks contain NaN or inf")
    return arr


def _as_hits(hits: Any, n: int, name: str) -> np.ndarray | None:
    if hits is None:
        return None
    arr = np.asarray(hits, dtype=np.float64)
    if arr.shape != (n, len(RECALL_KS)):
        raise Clip2VideoError(f"{name}: per-query hits must be [{n}, {len(RECALL_KS)}], got {arr.shape}")
    return arr


Queries = tuple[np.ndarray, np.ndarray | None]  # per-query ranks, and R@K contributions (or None)


def _queries(ranks: Any, name: str) -> tuple[Queries, Queries]:
    """Per-direction ``(ranks, hits)`` from a QueryRanks, a RunRecord, a mapping or a pair.

    ``hits`` are the per-query R@1/5/10 contributions (``QueryRanks.hits``; records store them):
    under the ``mean`` tie policy they are fractional, so R@K is their mean, not ``mean(rank <= K)``.
    """
    out = []
    for i, direction in enumerate(DIRECTIONS):
        hits = None
        if hasattr(ranks, "hits") and callable(ranks.hits):
            vec = getattr(ranks, direction)
            hits = np.stack([ranks.hits(direction, k) for k in RECALL_KS], axis=1)
        elif hasattr(ranks, f"ranks_{direction}"):
            vec, hits = getattr(ranks, f"ranks_{direction}"), getattr(ranks, f"hits_{direction}", None)
        elif isinstance(ranks, dict):
            vec, hits = ranks[direction], ranks.get(f"hits_{direction}")
        else:
            vec = ranks[i]
        arr = _as_ranks(vec, f"{name}.{direction}")
        out.append((arr, _as_hits(hits, arr.size, f"{name}.hits_{direction}")))
    return out[0], out[1]


def rank_metrics(
    ranks: np.ndarray, *, hits: np.ndarray | None = None, axis: int = -1
) -> dict[str, np.ndarray]:
    """R1, R5, R10, MdR, MnR of rank vectors along ``axis`` (arrays keep the other axes).

    With ``hits`` (``ranks.shape + (3,)``: per-query R@1/5/10 contributions) R@K is their mean.
    """
    if hits is None:
        out = {f"R{k}": 100.0 * np.mean(ranks <= k, axis=axis) for k in RECALL_KS}
    else:
        out = {f"R{k}": 100.0 * np.mean(hits[..., j], axis=axis) for j, k in enumerate(RECALL_KS)}
    out["MdR"] = np.median(ranks, axis=axis)
    out["MnR"] = np.mean(ranks, axis=axis)
    return out


def metrics_from_rank_vectors(ranks_t2v: Any, ranks_v2t: Any) -> dict[str, float]:
    """The point metrics of both directions, keyed like ``clip2video.metrics`` (``t2v_R1`` ...)."""
    out: dict[str, float] = {}
    for direction, ranks in zip(DIRECTIONS, (ranks_t2v, ranks_v2t), strict=True):
        for key, value in rank_metrics(_as_ranks(ranks, direction)).items():
            out[f"{direction}_{key}"] = float(value)
    return out


def _index_chunks(n: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Bootstrap index matrices ``[chunk, n]``, drawn in order so results do not depend on chunking."""
    per_chunk = max(1, _CELLS_PER_CHUNK // max(n, 1))
    done = 0
    while done < n_boot:
        size = min(per_chunk, n_boot - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def _bootstrap_direction(queries: Queries, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    ranks, hits = queries
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in METRIC_NAMES}
    for idx in _index_chunks(ranks.size, n_boot, rng):
        sample = rank_metrics(ranks[idx], hits=None if hits is None else hits[idx], axis=1)
        for key, value in sample.items():
            parts[key].append(value)
    return {key: np.concatenate(values) for key, values in parts.items()}


def _check(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise Clip2VideoError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise Clip2VideoError(f"alpha must be in (0, 1), got {alpha}")


def bootstrap_ci(
    ranks_t2v: Any,
    ranks_v2t: Any = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float]]:
    """Percentile ``1 - alpha`` intervals of every metric, queries resampled per direction.

    Pass a ``QueryRanks`` or ``RunRecord`` alone (its per-query R@K contributions are used, which
    the ``mean`` tie policy needs), or two rank vectors (R@K = share of ranks <= K).
    """
    _check(n_boot, alpha)
    if ranks_v2t is None:
        both = _queries(ranks_t2v, "ranks")
    else:
        both = ((_as_ranks(ranks_t2v, "t2v"), None), (_as_ranks(ranks_v2t, "v2t"), None))
    out: dict[str, tuple[float, float]] = {}
    for offset, (direction, queries) in enumerate(zip(DIRECTIONS, both, strict=True)):
        samples = _bootstrap_direction(queries, n_boot, seed + offset)
        for key, values in samples.items():
            lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
            out[f"{direction}_{key}"] = (float(lo), float(hi))
    return out


def paired_bootstrap(
    ranks_a: Any,
    ranks_b: Any,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, PairedDiff]:
    """Metric of A minus metric of B, resampling the same queries for both models.

    ``ranks_a`` / ``ranks_b``: anything with ``.t2v`` / ``.v2t`` (``QueryRanks``), a ``RunRecord``,
    a ``{"t2v", "v2t"}`` mapping or a ``(t2v, v2t)`` pair. ``p`` is the two-sided bootstrap
    p-value ``min(1, 2 * min(P(d <= 0), P(d >= 0)))``; ``significant`` means the percentile
    interval excludes 0 (a zero observed delta is never significant).
    """
    _check(n_boot, alpha)
    a_all, b_all = _queries(ranks_a, "ranks_a"), _queries(ranks_b, "ranks_b")
    out: dict[str, PairedDiff] = {}
    for offset, direction in enumerate(DIRECTIONS):
        (a, ha), (b, hb) = a_all[offset], b_all[offset]
        if (ha is None) != (hb is None):
            ha = hb = None  # compare like with like: both from ranks
        if a.shape != b.shape:
            raise Clip2VideoError(
                f"paired bootstrap ({direction}): models ranked different query sets ({a.size} vs "
                f"{b.size} queries); pair rows of the same protocol and tie policy"
            )
        observed_a, observed_b = rank_metrics(a, hits=ha), rank_metrics(b, hits=hb)
        rng = np.random.default_rng(seed + offset)
        parts: dict[str, list[np.ndarray]] = {m: [] for m in METRIC_NAMES}
        for idx in _index_chunks(a.size, n_boot, rng):
            ma = rank_metrics(a[idx], hits=None if ha is None else ha[idx], axis=1)
            mb = rank_metrics(b[idx], hits=None if hb is None else hb[idx], axis=1)
            for key in METRIC_NAMES:
                parts[key].append(ma[key] - mb[key])
        for key in METRIC_NAMES:
            d = np.concatenate(parts[key])
            lo, hi = (float(v) for v in np.quantile(d, [alpha / 2, 1 - alpha / 2]))
            delta = float(observed_a[key] - observed_b[key])
            p = float(min(1.0, 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))))
            significant = delta != 0.0 and (lo > 0.0 or hi < 0.0)
            out[f"{direction}_{key}"] = PairedDiff(delta, lo, hi, p, significant)
    return out
