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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "METRIC_KEYS",
    "RECALL_KS",
    "TIE_POLICIES",
    "V2T_CONVENTIONS",
    "QueryRanks",
    "ScoreRows",
    "metrics_from_ranks",
    "metrics_from_weights",
    "query_ranks",
    "ranks_from_scores",
    "recall_at",
    "retrieval_metrics",
]

TIE_POLICIES = ("pessimistic", "optimistic", "mean", "legacy")
V2T_CONVENTIONS = ("official", "first-hit")
RECALL_KS = (1, 5, 10)
METRIC_KEYS = tuple(
    f"{direction}_{name}"
    for direction in ("t2v", "v2t")
    for name in [f"R{k}" for k in RECALL_KS] + ["MdR", "MnR"]
) + ("t2v_ties", "v2t_ties")

ScoreRows = Callable[[int, int], torch.Tensor]
"""``score_rows(start, stop)`` returns ``sim[start:stop]``, a ``[stop - start, num_videos]`` tensor."""

_SHOWN = 5  # how many offending indices an error message names
_CPU_BLOCK_ELEMENTS = 2**20  # scores counted at once on a CPU (4 MiB of float32: cache-sized)
_EXACT_COUNT_LIMIT = 2**24  # counts are float32 sums of +-1 (see _above_and_equal): exact below this


# ----------------------------------------------------------------------------------------------
# Per-query ranks
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryRanks:
    """Per-query ranks of both directions, and the counts they come from.

    Attributes:
        t2v: float64 ``[num_captions]``, each caption query's rank under ``tie_policy`` (``mean``:
            the expected rank; ``legacy`` with expanded entries: the mean of the query's entries).
        v2t: float64 ``[num_videos]``, the same for video queries.
        t2v_tied, v2t_tied: bool, whether the ground truth tied with another candidate.
        t2v_higher, v2t_higher: int64, candidates scoring strictly above the ground truth.
        t2v_equal, v2t_equal: int64, candidates scoring equal to it (ground truth excluded).
        t2v_before: int64, tied candidates with a smaller video index (the official double-argsort
            tie break; filled only for ``legacy`` with several captions per video, else zeros).
        tie_policy, v2t_convention: how the ranks were made.
        single_caption: every video has exactly one caption (selects the official averaging path).

    ``entries(direction)`` gives the values that enter the averages (legacy expands tied queries);
    ``take(t2v=..., v2t=...)`` selects or resamples queries (bootstrap), keeping the conventions.
    """

    t2v: np.ndarray
    v2t: np.ndarray
    t2v_tied: np.ndarray
    v2t_tied: np.ndarray
    t2v_higher: np.ndarray
    t2v_equal: np.ndarray
    t2v_before: np.ndarray
    v2t_higher: np.ndarray
    v2t_equal: np.ndarray
    tie_policy: str
    v2t_convention: str
    single_caption: bool

    def expanded(self, direction: str) -> bool:
        """Whether ``direction``'s legacy entries are expanded (one per tied position)."""
        _check_direction(direction)
        if self.tie_policy != "legacy":
            return False
        return direction == "v2t" or self.single_caption

    def entries(self, direction: str) -> tuple[np.ndarray, np.ndarray]:
        """``(ranks, query)``: the 1-based ranks that enter ``direction``'s averages, and the query
        each belongs to. One per query, except under ``legacy``'s expanded paths, where a query
        tied with ``e`` candidates has ``e + 1`` entries (``g + 1 .. g + e + 1``).
        ``mean`` gives expected ranks here; its R@K uses the counts, not these."""
        higher, equal = self._counts(direction)
        if not self.expanded(direction):
            ranks = getattr(self, direction)
            return ranks.copy(), np.arange(len(ranks), dtype=np.int64)
        reps = equal + 1
        query = np.repeat(np.arange(len(higher), dtype=np.int64), reps)
        starts = np.repeat(np.cumsum(reps) - reps, reps)
        offset = np.arange(len(query), dtype=np.int64) - starts
        return (higher[query] + offset + 1).astype(np.float64), query

    @property
    def t2v_entries(self) -> np.ndarray:
        """The 1-based t2v ranks that enter the averages (see ``entries``)."""
        return self.entries("t2v")[0]

    @property
    def v2t_entries(self) -> np.ndarray:
        """The 1-based v2t ranks that enter the averages (see ``entries``)."""
        return self.entries("v2t")[0]

    def take(
        self, t2v: Sequence[int] | np.ndarray | None = None, v2t: Sequence[int] | np.ndarray | None = None
    ) -> QueryRanks:
        """A copy holding only the queries at these indices (repeats allowed, e.g. a bootstrap
        resample); ``None`` keeps a direction whole."""
        fields: dict[str, Any] = dict(self.__dict__)
        for direction, index in (("t2v", t2v), ("v2t", v2t)):
            if index is None:
                continue
            index = np.asarray(index, dtype=np.int64)
            for name in ("", "_tied", "_higher", "_equal", "_before"):
                key = direction + name
                if key in fields:
                    fields[key] = fields[key][index]
        return QueryRanks(**fields)

    def hits(self, direction: str, k: int) -> np.ndarray:
        """Each query's contribution to ``direction``'s R@k, in [0, 1] (float64 ``[num_queries]``).

        ``mean``: the probability that the query lands in the top k under a uniformly random order
        of its tied candidates; ``legacy`` with expanded entries: the share of its entries <= k
        (the official average weighs queries by their entry counts; this per-query form is what a
        bootstrap over queries resamples); otherwise ``rank <= k``. R@k is 100 x their mean
        (exactly so for every policy but expanded legacy).
        """
        higher, equal = self._counts(direction)
        fractional = self.tie_policy == "mean" or self.expanded(direction)
        return recall_hits(getattr(self, direction), higher, equal, k, fractional=fractional)

    def _counts(self, direction: str) -> tuple[np.ndarray, np.ndarray]:
        _check_direction(direction)
        return getattr(self, f"{direction}_higher"), getattr(self, f"{direction}_equal")


def recall_hits(
    rank: np.ndarray, higher: np.ndarray, equal: np.ndarray, k: int | np.ndarray, *, fractional: bool
) -> np.ndarray:
    """Per-query contribution to R@k: ``rank <= k``, or with ``fractional`` (the ``mean`` policy)
    the chance of landing in the top k when the ``equal`` tied candidates are in random order.
    ``k`` may be an array broadcast against the queries (e.g. ``ks[:, None]`` for a curve)."""
    if fractional:
        return np.clip(k - higher, 0, equal + 1) / (equal + 1)
    return (rank <= k).astype(np.float64)


def _check_direction(direction: str) -> None:
    if direction not in ("t2v", "v2t"):
        raise ValueError(f"direction must be 't2v' or 'v2t', got {direction!r}")


def _rank(higher: np.ndarray, equal: np.ndarray, before: np.ndarray | None, policy: str) -> np.ndarray:
    """1-based per-query rank under ``policy``; ``before`` given selects the double-argsort rank."""
    higher = higher.astype(np.float64)
    if policy == "pessimistic":
        return 1.0 + higher + equal
    if policy == "optimistic":
        return 1.0 + higher
    if policy == "legacy" and before is not None:
        return 1.0 + higher + before
    return 1.0 + higher + equal / 2.0  # mean, and the mean of legacy's expanded entries


# ----------------------------------------------------------------------------------------------
# Metrics from ranks
# ----------------------------------------------------------------------------------------------


def metrics_from_ranks(ranks: QueryRanks) -> dict[str, float]:
    """R@1/5/10 (percent), MdR, MnR of both directions and the number of tied queries.

    Keys are ``METRIC_KEYS``. Works on any ``ranks.take(...)`` selection (bootstrap).
    """
    out: dict[str, float] = {}
    for direction in ("t2v", "v2t"):
        argsort_path = direction == "t2v" and not ranks.single_caption
        out.update(_direction_metrics(ranks, direction, argsort_path))
    out["t2v_ties"] = float(np.count_nonzero(ranks.t2v_tied))
    out["v2t_ties"] = float(np.count_nonzero(ranks.v2t_tied))
    return out


def metrics_from_weights(ranks: QueryRanks, t2v: np.ndarray, v2t: np.ndarray) -> dict[str, np.ndarray]:
    """``metrics_from_ranks`` of many resamples at once (the bootstrap's fast path).

    Resample b is given by query multiplicities: ``t2v[b, i]`` copies of caption query i and
    ``v2t[b, v]`` of video query v (int ``[B, num_captions]`` / ``[B, num_videos]``). Row b of
    every returned array (float64 ``[B]``) is ``metrics_from_ranks(ranks.take(t2v=np.repeat(
    arange, t2v[b]), v2t=...))``: the same formulas on the same multiset of queries. Counts,
    medians and sums of ranks (multiples of 1/2) are exact either way, so they are equal; a
    fractional R@K sum (``mean`` policy) may differ in its last bit for a non-identity resample,
    as its summation order differs. An all-ones row reproduces ``metrics_from_ranks`` exactly.
    """
    out: dict[str, np.ndarray] = {}
    for direction, weights in (("t2v", t2v), ("v2t", v2t)):
        w = np.atleast_2d(np.asarray(weights, dtype=np.int64))
        if w.shape[1] != len(getattr(ranks, direction)):
            raise ValueError(
                f"{direction} weights must be [B, {len(getattr(ranks, direction))}], got {w.shape}"
            )
        if np.any(w.sum(1) == 0):
            raise ValueError(f"no {direction} queries to average (an empty resample)")
        argsort_path = direction == "t2v" and not ranks.single_caption
        if ranks.expanded(direction):
            out.update(_weighted_expanded(ranks, direction, w))
        else:
            out.update(_weighted_direction(ranks, direction, w, argsort_path))
    for direction, weights in (("t2v", t2v), ("v2t", v2t)):
        tied = getattr(ranks, f"{direction}_tied").astype(np.int64)
        out[f"{direction}_ties"] = (np.atleast_2d(np.asarray(weights, dtype=np.int64)) @ tied).astype(
            np.float64
        )
    return out


def _weighted_direction(
    ranks: QueryRanks, direction: str, w: np.ndarray, argsort_path: bool
) -> dict[str, np.ndarray]:
    """``_direction_metrics`` of weighted queries (see ``metrics_from_weights``). Sums of whole
    numbers (0/1 hits, twice the ranks) are float matrix products: every partial sum is an integer
    below 2**53, so they are exact in any order, like the core's."""
    total = w.sum(1)
    rank = getattr(ranks, direction)
    wf = w.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for k in RECALL_KS:
        if ranks.tie_policy == "mean":  # fractional hits: the core's elementwise sum
            hit_sum = np.sum(wf * ranks.hits(direction, k), axis=1)
        else:
            hit_sum = wf @ (rank <= k).astype(np.float64)
        out[f"{direction}_R{k}"] = hit_sum * 100 / total
    order = np.argsort(rank, kind="stable")
    sorted_rank = rank[order]
    cumulative = np.cumsum(w[:, order], axis=1)

    def at(position: np.ndarray) -> np.ndarray:  # the value at a 0-based position of each sorted resample
        index = [np.searchsorted(row, p, side="right") for row, p in zip(cumulative, position, strict=True)]
        return sorted_rank[np.asarray(index, dtype=np.int64)]

    shift = 0.0 if argsort_path else 1.0
    halves = np.round((rank - shift) * 2)
    if np.array_equal(halves / 2, rank - shift) and np.max(np.abs(halves)) * len(rank) < 2**52:
        rank_sum = (wf @ halves) / 2  # exact
    else:
        rank_sum = np.sum(wf * (rank - shift), axis=1)
    if argsort_path:
        out[f"{direction}_MdR"] = at((total - 1) // 2)
        out[f"{direction}_MnR"] = rank_sum / total
    else:
        lo, hi = at((total - 1) // 2) - 1.0, at(total // 2) - 1.0
        out[f"{direction}_MdR"] = (lo + hi) / 2 + 1
        out[f"{direction}_MnR"] = rank_sum / total + 1
    return out


def _weighted_expanded(ranks: QueryRanks, direction: str, w: np.ndarray) -> dict[str, np.ndarray]:
    """``_expanded_metrics`` of weighted queries (integer arithmetic, exact)."""
    higher, equal = (x.astype(np.int64) for x in ranks._counts(direction))
    total = w @ (equal + 1)
    out: dict[str, np.ndarray] = {}
    for k in RECALL_KS:
        out[f"{direction}_R{k}"] = (w @ np.clip(k - higher, 0, equal + 1)).astype(np.float64) * 100 / total
    last = int(np.max(higher + equal))
    mdr = np.empty(len(w), dtype=np.float64)
    for b, row in enumerate(w):
        diff = np.bincount(higher, weights=row, minlength=last + 2) - np.bincount(
            higher + equal + 1, weights=row, minlength=last + 2
        )
        cumulative = np.cumsum(np.cumsum(diff.astype(np.int64))[: last + 1])
        lo, hi = (total[b] - 1) // 2, total[b] // 2
        mid = np.searchsorted(cumulative, [lo + 1, hi + 1])
        mdr[b] = float(np.mean(mid.astype(np.float64)) + 1)
    out[f"{direction}_MdR"] = mdr
    position_sum = w @ ((equal + 1) * higher + equal * (equal + 1) // 2)
    out[f"{direction}_MnR"] = position_sum / total + 1
    return out


def recall_at(ranks: QueryRanks, direction: str, ks: Sequence[int] | np.ndarray) -> np.ndarray:
    """``direction``'s R@K (percent) for every K in ``ks``: the same sums ``metrics_from_ranks``
    makes for K = 1, 5, 10 (per-query ``hits`` over the queries; legacy's expanded entries over
    the entries), so a recall curve at 1/5/10 equals the recorded metrics exactly."""
    higher, equal = ranks._counts(direction)
    if len(higher) == 0:
        raise ValueError(f"no {direction} queries to average (an empty selection?)")
    out = np.empty(len(ks), dtype=np.float64)
    for i, k in enumerate(np.asarray(ks).tolist()):
        if ranks.expanded(direction):
            hits = int(np.sum(np.clip(k - higher.astype(np.int64), 0, equal.astype(np.int64) + 1)))
            out[i] = float(hits) * 100 / int(np.sum(equal.astype(np.int64) + 1))
        else:
            out[i] = float(np.sum(ranks.hits(direction, k))) * 100 / len(higher)
    return out


def _direction_metrics(ranks: QueryRanks, direction: str, argsort_path: bool) -> dict[str, float]:
    """One direction's metrics; ``argsort_path`` = the official several-captions t2v averaging."""
    higher, equal = ranks._counts(direction)
    n_queries = len(higher)
    if n_queries == 0:
        raise ValueError(f"no {direction} queries to average (an empty selection?)")
    if ranks.expanded(direction):
        return _expanded_metrics(direction, higher, equal)
    rank = getattr(ranks, direction)
    out: dict[str, float] = {}
    for k in RECALL_KS:
        out[f"{direction}_R{k}"] = float(np.sum(ranks.hits(direction, k))) * 100 / n_queries
    if argsort_path:
        out[f"{direction}_MdR"] = float(np.partition(rank, (n_queries - 1) // 2)[(n_queries - 1) // 2])
        out[f"{direction}_MnR"] = float(np.mean(rank))
    else:
        out[f"{direction}_MdR"] = float(np.median(rank - 1.0) + 1)
        out[f"{direction}_MnR"] = float(np.mean(rank - 1.0) + 1)
    return out


def _expanded_metrics(direction: str, higher: np.ndarray, equal: np.ndarray) -> dict[str, float]:
    """Legacy ``np.where`` metrics without materialising the entries: query q contributes the
    0-based positions ``higher[q] .. higher[q] + equal[q]``."""
    higher = higher.astype(np.int64)
    equal = equal.astype(np.int64)
    total = int(np.sum(equal + 1))
    out: dict[str, float] = {}
    for k in RECALL_KS:
        hits = int(np.sum(np.clip(k - higher, 0, equal + 1)))
        out[f"{direction}_R{k}"] = float(hits) * 100 / total
    # histogram of positions by a difference array, then the middle one(s), as np.median does
    last = int(np.max(higher + equal))
    diff = np.zeros(last + 2, dtype=np.int64)
    np.add.at(diff, higher, 1)
    np.add.at(diff, higher + equal + 1, -1)
    cumulative = np.cumsum(np.cumsum(diff)[: last + 1])
    lo, hi = (total - 1) // 2, total // 2
    mid = np.searchsorted(cumulative, [lo + 1, hi + 1])
    out[f"{direction}_MdR"] = float(np.mean(mid.astype(np.float64)) + 1)
    position_sum = int(np.sum((equal + 1) * higher + equal * (equal + 1) // 2))
    out[f"{direction}_MnR"] = float(position_sum / total + 1)
    return out


# ----------------------------------------------------------------------------------------------
# The counting core
# ----------------------------------------------------------------------------------------------


def ranks_from_scores(
    score_rows: ScoreRows,
    caption_video: Any,
    num_videos: int,
    *,
    chunk_size: int = 1024,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    progress: bool = False,
) -> QueryRanks:
    """Per-query ranks from similarity rows computed on demand; the full matrix never exists.

    Args:
        score_rows: ``score_rows(start, stop)`` -> ``sim[start:stop]`` as a ``[stop - start,
            num_videos]`` tensor (any device: counting runs there). It must be deterministic: it is
            called twice per row (pass 1: t2v counts and each video's ground-truth score; pass 2:
            v2t counts), with the same ``(start, stop)`` both times.
        caption_video: caption i's video index, ``num_captions`` ints (numpy, torch or a list).
        num_videos: the number of videos (columns); each must have at least one caption.
        chunk_size: rows per call. For ``v2t="official"`` with several captions per video, chunks
            hold whole caption groups (a chunk grows past ``chunk_size`` to finish a group); groups
            whose captions are not contiguous are fetched run by run (one call per contiguous run).
        tie_policy: one of ``TIE_POLICIES``. v2t: one of ``V2T_CONVENTIONS``.
        progress: show a tqdm bar over chunks.

    Memory stays ``O(chunk x num_videos)`` on the scores' device, plus ``O(num_captions +
    num_videos)`` for the counts.
    """
    return _rank_rows(score_rows, caption_video, num_videos, chunk_size, tie_policy, v2t, progress, True)


def _rank_rows(
    score_rows: ScoreRows,
    caption_video: Any,
    num_videos: int,
    chunk_size: int,
    tie_policy: str,
    v2t: str,
    progress: bool,
    check_nan: bool,
) -> QueryRanks:
    """The two counting passes behind ``ranks_from_scores`` and ``query_ranks``."""
    _check_options(tie_policy, v2t)
    if not isinstance(num_videos, (int, np.integer)) or num_videos <= 0:
        raise ValueError(f"num_videos must be a positive int, got {num_videos!r}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if num_videos >= _EXACT_COUNT_LIMIT or len(caption_video) >= _EXACT_COUNT_LIMIT:
        raise ValueError(
            f"at most {_EXACT_COUNT_LIMIT - 1} videos and captions are supported (counts are float32 sums "
            f"of +-1, exact below 2**24); got {num_videos} videos and {len(caption_video)} captions"
        )
    cv = _caption_video_array(caption_video, None, int(num_videos))
    num_videos = int(num_videos)
    counts_per_video = np.bincount(cv, minlength=num_videos)
    single_caption = bool(np.all(counts_per_video == 1))
    grouped = v2t == "official" and not single_caption
    plan = _chunk_plan(cv, int(chunk_size), grouped)
    need_before = tie_policy == "legacy" and not single_caption
    fetch = _Fetcher(score_rows, cv, num_videos, check_nan=check_nan)

    t2v_higher = t2v_equal = t2v_before = None
    target = None  # per video: the best own caption's score on that video
    for chunk in tqdm(plan, desc="ranking (pass 1/2)", disable=not progress, leave=False):
        rows, index = fetch(chunk, check_nan=True)
        if t2v_higher is None:
            t2v_higher, t2v_equal, t2v_before, target = _allocate(rows, len(cv), num_videos)
        cols, sel = fetch.device_index(rows.device, index)
        gt = rows.gather(1, cols.unsqueeze(1))
        higher, equal = _above_and_equal(rows, gt, 1)
        t2v_higher[sel] = higher
        t2v_equal[sel] = equal - 1  # the ground truth itself
        if need_before:
            smaller = fetch.arange(rows.device).unsqueeze(0) < cols.unsqueeze(1)
            t2v_before[sel] = _count((rows == gt) & smaller, 1)
        target.scatter_reduce_(0, cols, gt.squeeze(1), reduce="amax")

    v2t_higher = torch.zeros_like(target, dtype=torch.int32)
    v2t_equal = torch.zeros_like(target, dtype=torch.int32)
    for chunk in tqdm(plan, desc="ranking (pass 2/2)", disable=not progress, leave=False):
        rows, index = fetch(chunk, check_nan=False)
        cols, _ = fetch.device_index(rows.device, index)
        if grouped:
            rows, cols = _group_max(rows, cols)
        _count_columns(rows, cols, target, v2t_higher, v2t_equal)

    return _assemble(
        t2v_higher, t2v_equal, t2v_before if need_before else None, v2t_higher, v2t_equal,
        tie_policy, v2t, single_caption,
    )  # fmt: skip


def _allocate(rows: torch.Tensor, num_captions: int, num_videos: int) -> tuple[torch.Tensor, ...]:
    """Count buffers on the scores' device (int32: counts stay below 2**31 rows or columns)."""
    kw = {"dtype": torch.int32, "device": rows.device}
    target = torch.full((num_videos,), -torch.inf, dtype=rows.dtype, device=rows.device)
    return (
        torch.zeros(num_captions, **kw),
        torch.zeros(num_captions, **kw),
        torch.zeros(num_captions, **kw),
        target,
    )


def _above_and_equal(
    rows: torch.Tensor, threshold: torch.Tensor, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_above_and_equal_block`` over blocks of rows small enough to stay in a CPU's cache
    (about ``_CPU_BLOCK_ELEMENTS`` scores); on GPUs the chunk is one block."""
    step = rows.shape[0] if rows.is_cuda else max(1, _CPU_BLOCK_ELEMENTS // max(1, rows.shape[1]))
    if rows.shape[0] <= step:
        return _above_and_equal_block(rows, threshold, dim)
    blocks = [
        _above_and_equal_block(rows[a : a + step], threshold[a : a + step] if dim == 1 else threshold, dim)
        for a in range(0, rows.shape[0], step)
    ]
    if dim == 1:
        return torch.cat([b[0] for b in blocks]), torch.cat([b[1] for b in blocks])
    return sum(b[0] for b in blocks), sum(b[1] for b in blocks)


def _above_and_equal_block(
    rows: torch.Tensor, threshold: torch.Tensor, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per line along ``dim`` (dim=1: per row, ``threshold`` [rows, 1]; dim=0: per column,
    ``threshold`` [columns]): entries strictly above the threshold and entries equal to it, int32.

    One float difference instead of two bool comparisons (torch's bool-producing comparisons are
    several times slower on CPU): ``s = sign(rows - threshold)``, ``sum(s) = above - below``,
    ``sum(|s|) = above + below``. Exact: for IEEE floats ``x - y`` is zero only when ``x == y``
    and rounding never flips its sign, and the +-1 sums stay far below 2**24. The one doubtful
    case, ``inf - inf`` = NaN (torch's CPU sign gives 0, i.e. "equal", which is right, but no
    device promises it), only happens where the threshold is infinite; those lines are counted
    by comparison instead.
    """
    diff = rows - threshold
    diff.sign_()
    net = diff.sum(dim)
    diff.abs_()
    moved = diff.sum(dim)
    above = ((net + moved) / 2).to(torch.int32)
    equal = (rows.shape[dim] - moved).to(torch.int32)
    flat = threshold.reshape(-1)
    infinite = torch.nonzero(torch.isinf(flat)).squeeze(1)
    if len(infinite):  # rare: count those lines the slow, comparison way
        lines = rows.index_select(1 - dim, infinite)
        limit = flat[infinite].unsqueeze(1) if dim == 1 else flat[infinite]
        above[infinite] = _count(lines > limit, dim)
        equal[infinite] = _count(lines == limit, dim)
    return above, equal


def _count(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Number of True along ``dim`` (an int32 reduction: several times faster than bool -> int64
    on CPU; a chunk's counts are below 2**31)."""
    return mask.sum(dim, dtype=torch.int32)


def _group_max(rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of whole caption groups -> one row per group (its max); returns (rows, group ids)."""
    groups, local = torch.unique(cols, return_inverse=True)
    if len(groups) == len(cols):
        return rows, cols
    out = torch.full((len(groups), rows.shape[1]), -torch.inf, dtype=rows.dtype, device=rows.device)
    out.scatter_reduce_(0, local.unsqueeze(1).expand_as(rows), rows, reduce="amax")
    return out, groups


def _count_columns(
    rows: torch.Tensor,
    owner: torch.Tensor,
    target: torch.Tensor,
    higher: torch.Tensor,
    equal: torch.Tensor,
) -> None:
    """Add, per column v, the rows scoring above / equal to ``target[v]``, excluding each row's
    entry in its own column ``owner[i]`` (a video's own caption or group never counts)."""
    above, same = _above_and_equal(rows, target, 0)
    higher += above
    equal += same
    own = rows.gather(1, owner.unsqueeze(1)).squeeze(1)
    own_target = target[owner]
    higher.index_add_(0, owner, -(own > own_target).int())
    equal.index_add_(0, owner, -(own == own_target).int())


def _assemble(
    t2v_higher: torch.Tensor,
    t2v_equal: torch.Tensor,
    t2v_before: torch.Tensor | None,
    v2t_higher: torch.Tensor,
    v2t_equal: torch.Tensor,
    tie_policy: str,
    v2t: str,
    single_caption: bool,
) -> QueryRanks:
    """Device counts -> numpy ``QueryRanks`` with the policy's ranks."""
    th, te, vh, ve = (
        x.cpu().numpy().astype(np.int64) for x in (t2v_higher, t2v_equal, v2t_higher, v2t_equal)
    )
    tb = t2v_before.cpu().numpy().astype(np.int64) if t2v_before is not None else np.zeros_like(th)
    return QueryRanks(
        t2v=_rank(th, te, tb if t2v_before is not None else None, tie_policy),
        v2t=_rank(vh, ve, None, tie_policy),
        t2v_tied=te > 0,
        v2t_tied=ve > 0,
        t2v_higher=th,
        t2v_equal=te,
        t2v_before=tb,
        v2t_higher=vh,
        v2t_equal=ve,
        tie_policy=tie_policy,
        v2t_convention=v2t,
        single_caption=single_caption,
    )


class _Fetcher:
    """Fetches a chunk (a list of contiguous runs) of score rows, checks and normalises them."""

    def __init__(self, score_rows: ScoreRows, cv: np.ndarray, num_videos: int, *, check_nan: bool) -> None:
        self.score_rows = score_rows
        self.check_nan = check_nan
        self.cv = cv
        self.num_videos = num_videos
        self._cv_on: dict[torch.device, torch.Tensor] = {}
        self._arange_on: dict[torch.device, torch.Tensor] = {}

    def __call__(self, runs: list[tuple[int, int]], *, check_nan: bool) -> tuple[torch.Tensor, np.ndarray]:
        parts = [self._run(start, stop, check_nan and self.check_nan) for start, stop in runs]
        rows = parts[0] if len(parts) == 1 else torch.cat(parts)
        index = np.concatenate([np.arange(start, stop) for start, stop in runs])
        return rows, index

    def _run(self, start: int, stop: int, check_nan: bool) -> torch.Tensor:
        rows = self.score_rows(start, stop)
        if not isinstance(rows, torch.Tensor):
            rows = torch.as_tensor(np.asarray(rows))
        if tuple(rows.shape) != (stop - start, self.num_videos):
            raise ValueError(
                f"score_rows({start}, {stop}) returned shape {tuple(rows.shape)}, expected "
                f"({stop - start}, {self.num_videos}) (rows {start}:{stop} of sim, one column per video)"
            )
        if rows.dtype in (torch.float16, torch.bfloat16):
            rows = rows.float()  # exact, so ties and order are unchanged
        elif not rows.is_floating_point():
            rows = rows.double()
        if check_nan:
            bad = _nan_rows(rows)
            if len(bad):
                raise ValueError(
                    f"sim has +-inf or NaN in row(s) {(bad[:_SHOWN] + start).tolist()} (first found; caption "
                    "indices): fix the model outputs or drop those captions; a score that is not a finite "
                    "number is never ranked silently"
                )
        return rows

    def device_index(
        self, device: torch.device, index: np.ndarray
    ) -> tuple[torch.Tensor, slice | torch.Tensor]:
        """``(caption_video[index], selector of index)`` on ``device``; the selector is a slice
        when ``index`` is one ascending run."""
        if device not in self._cv_on:
            self._cv_on[device] = torch.from_numpy(self.cv).to(device)
        cv = self._cv_on[device]
        if index[-1] - index[0] == len(index) - 1 and np.all(np.diff(index) == 1):
            sel: slice | torch.Tensor = slice(int(index[0]), int(index[-1]) + 1)
        else:
            sel = torch.from_numpy(index).to(device)
        return cv[sel], sel

    def arange(self, device: torch.device) -> torch.Tensor:
        """Video indices on ``device``."""
        if device not in self._arange_on:
            self._arange_on[device] = torch.arange(self.num_videos, device=device)
        return self._arange_on[device]


def _chunk_plan(cv: np.ndarray, chunk_size: int, grouped: bool) -> list[list[tuple[int, int]]]:
    """Chunks of caption rows as lists of ``(start, stop)`` runs.

    Ungrouped: plain ranges. Grouped: captions ordered group by group (groups by first
    appearance, captions in index order), each chunk holding whole groups; a contiguous layout
    gives one run per chunk.
    """
    n = len(cv)
    if not grouped:
        return [[(a, min(a + chunk_size, n))] for a in range(0, n, chunk_size)]
    first = np.full(int(cv.max()) + 1, n, dtype=np.int64)
    np.minimum.at(first, cv, np.arange(n))
    order = np.argsort(first[cv], kind="stable")
    group_ends = np.flatnonzero(np.diff(cv[order])) + 1
    group_ends = np.append(group_ends, n)
    plan: list[list[tuple[int, int]]] = []
    start = 0
    while start < n:
        j = int(np.searchsorted(group_ends, start + chunk_size, side="right")) - 1
        if j < 0 or group_ends[j] <= start:  # the next group alone is larger than chunk_size
            j = int(np.searchsorted(group_ends, start, side="right"))
        stop = int(group_ends[j])
        plan.append(_runs(order[start:stop]))
        start = stop
    return plan


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """Split sorted-or-not caption indices into maximal ascending contiguous runs."""
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(index)]])
    return [(int(index[a]), int(index[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


# ----------------------------------------------------------------------------------------------
# Full-matrix entry points and validation
# ----------------------------------------------------------------------------------------------


def query_ranks(
    sim: Any,
    caption_video: Any,
    *,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    chunk_size: int = 1024,
) -> QueryRanks:
    """Per-query ranks of a full similarity matrix ``sim[num_captions, num_videos]`` (numpy or
    torch, any device, float16/32/64); the same counting core as ``ranks_from_scores``."""
    _check_options(tie_policy, v2t)
    matrix = _as_matrix(sim)
    _caption_video_array(caption_video, matrix.shape[0], matrix.shape[1])
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    _check_no_nan(matrix, int(chunk_size))
    return _rank_rows(
        lambda start, stop: matrix[start:stop],
        caption_video,
        matrix.shape[1],
        chunk_size,
        tie_policy,
        v2t,
        False,  # no progress bar
        False,  # NaN already checked above, naming every row
    )


def retrieval_metrics(
    sim: Any,
    caption_video: Any,
    *,
    tie_policy: str = "pessimistic",
    v2t: str = "official",
    chunk_size: int = 1024,
) -> dict[str, float]:
    """R@1/5/10 (percent), MdR and MnR of t2v and v2t, plus ``t2v_ties`` / ``v2t_ties`` (queries
    whose ground truth tied with another candidate), from ``sim[num_captions, num_videos]``.

    ``caption_video[i]`` is caption i's video; single- and several-captions protocols alike.
    A NaN or +-inf score is a ValueError naming its rows (caption indices), never ranked.

    >>> import numpy as np
    >>> m = retrieval_metrics(np.eye(3), np.arange(3))
    >>> m["t2v_R1"], m["v2t_R1"], m["t2v_MdR"]
    (100.0, 100.0, 1.0)
    """
    return metrics_from_ranks(
        query_ranks(sim, caption_video, tie_policy=tie_policy, v2t=v2t, chunk_size=chunk_size)
    )


def _check_options(tie_policy: str, v2t: str) -> None:
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"unknown tie_policy {tie_policy!r}: choose one of {TIE_POLICIES}")
    if v2t not in V2T_CONVENTIONS:
        raise ValueError(f"unknown v2t convention {v2t!r}: choose one of {V2T_CONVENTIONS}")
    if tie_policy == "legacy" and v2t != "official":
        raise ValueError(
            "tie_policy='legacy' reproduces the official code, which has no 'first-hit' v2t: "
            "use v2t='official' with legacy, or another tie_policy with first-hit"
        )


def _nan_rows(rows: torch.Tensor) -> torch.Tensor:
    """Indices (CPU) of the rows holding NaN or +-inf (a score must be a finite number). A row sum
    is not finite for every such row (and may overflow for others), so only those suspect rows are
    scanned element by element."""
    if not rows.is_floating_point():
        return torch.zeros(0, dtype=torch.int64)
    suspects = torch.nonzero(~torch.isfinite(rows.sum(1))).squeeze(1)
    if len(suspects) == 0:
        return suspects.cpu()
    return suspects[(~torch.isfinite(rows[suspects])).any(1)].cpu()


def _check_no_nan(matrix: torch.Tensor, chunk_size: int) -> None:
    """Raise ValueError naming the rows of ``matrix`` that hold NaN or +-inf (scanned in chunks of rows).

    +-inf is an error like NaN: a finite model never scores infinity, so an infinite similarity
    means an overflow or a masking bug upstream, and ranking it would hide that.
    """
    rows = torch.cat(
        [
            _nan_rows(matrix[start : start + chunk_size]) + start
            for start in range(0, matrix.shape[0], chunk_size)
        ]
    )
    if len(rows):
        raise ValueError(
            f"sim has +-inf or NaN in {len(rows)} row(s): {rows[:_SHOWN].tolist()}"
            + (" ..." if len(rows) > _SHOWN else "")
            + " (caption indices); fix the model outputs or drop those captions, a score that is not a "
            "finite number is never ranked"
        )


def _as_matrix(sim: Any) -> torch.Tensor:
    """``sim`` as a 2-D, non-empty torch tensor (numpy shares memory; devices are kept)."""
    if isinstance(sim, torch.Tensor):
        matrix = sim.detach()
    else:
        array = np.asarray(sim)
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise ValueError(f"sim must be a numeric matrix, got dtype {array.dtype}")
        matrix = torch.from_numpy(np.ascontiguousarray(array))
    if matrix.ndim != 2:
        raise ValueError(
            f"sim must be 2-D [num_captions, num_videos], got shape {tuple(matrix.shape)}"
            + (
                " (a 1-D vector: reshape it to [1, num_videos] or [num_captions, 1])"
                if matrix.ndim == 1
                else ""
            )
        )
    if matrix.numel() == 0:
        raise ValueError(f"sim is empty (shape {tuple(matrix.shape)}): nothing to rank")
    return matrix


def _caption_video_array(caption_video: Any, num_captions: int | None, num_videos: int) -> np.ndarray:
    """Validate ``caption_video`` -> int64 numpy; errors name the captions / videos at fault."""
    if isinstance(caption_video, torch.Tensor):
        if caption_video.is_floating_point() or caption_video.dtype == torch.bool:
            raise ValueError(f"caption_video must hold integer video indices, got {caption_video.dtype}")
        cv = caption_video.detach().cpu().numpy()
    else:
        cv = np.asarray(caption_video)
        if cv.size and cv.dtype.kind not in "iu":
            raise ValueError(f"caption_video must hold integer video indices, got dtype {cv.dtype}")
    if cv.ndim != 1:
        raise ValueError(f"caption_video must be 1-D (one video index per caption), got shape {cv.shape}")
    if cv.size == 0:
        raise ValueError("caption_video is empty: there are no captions to rank")
    cv = cv.astype(np.int64)
    if num_captions is not None and len(cv) != num_captions:
        raise ValueError(
            f"shape mismatch: sim has {num_captions} rows (captions) but caption_video has {len(cv)} "
            "entries; they must match one to one"
        )
    bad = np.flatnonzero((cv < 0) | (cv >= num_videos))
    if len(bad):
        shown = ", ".join(f"caption {i} -> {cv[i]}" for i in bad[:_SHOWN])
        raise ValueError(
            f"caption_video index out of range [0, {num_videos}) for {len(bad)} caption(s): {shown}"
            + (" ..." if len(bad) > _SHOWN else "")
        )
    empty = np.flatnonzero(np.bincount(cv, minlength=num_videos) == 0)
    if len(empty):
        raise ValueError(
            f"{len(empty)} video(s) have no caption: video indices {empty[:_SHOWN].tolist()}"
            + (" ..." if len(empty) > _SHOWN else "")
            + "; every video column needs at least one caption (drop the video or add its captions)"
        )
    return cv
