"""Per-query ranks: :class:`QueryRanks` (what the counting core returns and records store).

A query's rank comes from two counts: ``higher`` (candidates scoring strictly above its ground
truth) and ``equal`` (candidates tied with it, the ground truth excluded), plus ``before`` on the
official several-captions t2v path (tied candidates with a smaller index). The tie policy turns the
counts into ranks (``_rank``); the metrics (:mod:`clip2video.metrics.definitions`) read the ranks
and counts per query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DIRECTIONS", "TIE_POLICIES", "V2T_CONVENTIONS", "QueryRanks", "recall_hits"]

TIE_POLICIES = ("pessimistic", "optimistic", "mean", "legacy")
V2T_CONVENTIONS = ("official", "first-hit")
DIRECTIONS = ("t2v", "v2t")


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
        higher, equal = self.counts(direction)
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
        higher, equal = self.counts(direction)
        fractional = self.tie_policy == "mean" or self.expanded(direction)
        return recall_hits(getattr(self, direction), higher, equal, k, fractional=fractional)

    def counts(self, direction: str) -> tuple[np.ndarray, np.ndarray]:
        """``(higher, equal)`` of ``direction``'s queries: candidates scoring strictly above the
        ground truth, and tied with it (the ground truth excluded)."""
        _check_direction(direction)
        return getattr(self, f"{direction}_higher"), getattr(self, f"{direction}_equal")

    def argsort_path(self, direction: str) -> bool:
        """Whether ``direction`` averages as the official several-captions t2v path (double argsort:
        the lower middle value for the median, ``mean(rank)`` for the mean rank), for every policy."""
        _check_direction(direction)
        return direction == "t2v" and not self.single_caption


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
