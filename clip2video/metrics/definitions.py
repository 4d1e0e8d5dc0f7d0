"""Each metric defined once: what every query contributes, and how contributions average.

A :class:`Metric` is one entry of the ``METRICS`` registry: its key suffix (``t2v_<name>``,
``v2t_<name>``), its display label and ONE per-query definition, ``per_query(ranks, direction) ->
PerQuery``. That single definition serves the point value (``metrics_from_ranks``), the bootstrap's
weighted resamples (``metrics_from_weights``), recall curves, the tables (their columns and labels),
the intervals and the drift gate: adding a metric is one ``register_metric`` entry, and nothing else
lists metric keys. Recall cut-offs are a setting (``[eval] recall_ks``, default ``RECALL_KS``): each
K gets the one recall definition, :func:`recall`.

A :class:`PerQuery` says how the per-query values average (``clip2video.metrics.formulas`` does the
arithmetic, exactly as the official code per path):

- ``"mean"``: ``scale * sum(values) / sum(counts) + offset`` (``counts``: entries per query, one
  each when None; legacy's expanded ties give a query ``e + 1`` entries);
- ``"median"``: the median of the values (numpy's: the mean of the two middle ones; ``lower``: the
  lower middle value, as ``torch.median``), ``+ offset``; with ``counts``, query q contributes the
  consecutive integers ``values[q] .. values[q] + counts[q] - 1``;
- ``"sum"``: ``sum(values)`` (a count of queries).

A new metric, written out (``tests/test_metric_entry.py`` adds nDCG@10 the same way and finds it in
the tables, the intervals and the drift gate)::

    def hit_at_50(ranks, direction):
        return PerQuery("mean", (getattr(ranks, direction) <= 50).astype(float), scale=100.0)

    register_metric(Metric("Hit50", "Hit@50", hit_at_50))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from clip2video.metrics.ranks import DIRECTIONS, QueryRanks
from clip2video.registry import Registry

__all__ = [
    "METRICS",
    "RECALL_KS",
    "UNITS",
    "Metric",
    "PerQuery",
    "check_recall_ks",
    "find_metric",
    "is_metric_key",
    "metric_keys",
    "metric_label",
    "metric_set",
    "recall",
    "register_metric",
]

RECALL_KS: tuple[int, ...] = (1, 5, 10)
REDUCTIONS = ("mean", "median", "sum")
UNITS = ("percent", "rank", "count")
_RECALL_NAME = re.compile(r"R([1-9][0-9]*)")


@dataclass(frozen=True)
class PerQuery:
    """What each query contributes to a metric and how the contributions average (module docstring)."""

    reduce: str
    values: np.ndarray
    counts: np.ndarray | None = None
    scale: float = 1.0
    offset: float = 0.0
    lower: bool = False

    def __post_init__(self) -> None:
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"PerQuery.reduce must be one of {REDUCTIONS}, got {self.reduce!r}")


@dataclass(frozen=True)
class Metric:
    """One metric: key suffix ``name`` (``t2v_<name>``), column ``label`` and the one per-query
    definition ``per_query(ranks, direction) -> PerQuery``.

    ``unit``: ``"percent"`` (0-100, higher is better: a drift floor of one query's share),
    ``"rank"`` (lower is better) or ``"count"``; ranks and counts have a drift floor of 1.
    ``table``: a column of the results tables (the tie counts are reported beside them instead).
    """

    name: str
    label: str
    per_query: Callable[[QueryRanks, str], PerQuery]
    unit: str = "percent"
    table: bool = True

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", self.name):
            raise ValueError(f"metric name {self.name!r}: letters and digits, starting with a letter")
        if self.unit not in UNITS:
            raise ValueError(f"metric {self.name!r}: unit must be one of {UNITS}, got {self.unit!r}")

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value is better (percentages)."""
        return self.unit == "percent"


METRICS: Registry[Metric] = Registry("metric", "metrics", name_of=lambda m: m.name)


def register_metric(metric: Metric, *, overwrite: bool = False) -> Metric:
    """Add ``metric`` to every metric dictionary, table, interval and drift comparison; returns it."""
    if not isinstance(metric, Metric):
        raise TypeError(f"register_metric takes a Metric, got {type(metric).__name__}")
    return METRICS.register(metric, overwrite=overwrite)


# ----------------------------------------------------------------------------------------------
# The built-in definitions
# ----------------------------------------------------------------------------------------------


def recall(k: int) -> Metric:
    """R@k (percent): the share of queries whose ground truth ranks in the top ``k``.

    Per query: 1 when ``rank <= k``; under ``mean`` the chance of landing in the top k when the
    tied candidates are in random order; under legacy's expanded ties the number of the query's
    ``e + 1`` entries that are ``<= k`` (over ``e + 1`` entries)."""

    def per_query(ranks: QueryRanks, direction: str) -> PerQuery:
        if ranks.expanded(direction):
            higher, equal = (x.astype(np.int64) for x in ranks.counts(direction))
            return PerQuery("mean", np.clip(k - higher, 0, equal + 1), counts=equal + 1, scale=100.0)
        return PerQuery("mean", ranks.hits(direction, k), scale=100.0)

    return Metric(f"R{int(k)}", f"R@{int(k)}", per_query)


def _median_rank(ranks: QueryRanks, direction: str) -> PerQuery:
    """MdR: the median rank (lower middle value on the official several-captions t2v path)."""
    if ranks.expanded(direction):
        higher, equal = (x.astype(np.int64) for x in ranks.counts(direction))
        return PerQuery("median", higher, counts=equal + 1, offset=1.0)  # 0-based positions + 1
    rank = getattr(ranks, direction)
    if ranks.argsort_path(direction):
        return PerQuery("median", rank, lower=True)
    return PerQuery("median", rank - 1.0, offset=1.0)


def _mean_rank(ranks: QueryRanks, direction: str) -> PerQuery:
    """MnR: the mean rank (``mean(rank - 1) + 1`` as the official code averages, except on the
    several-captions t2v path: ``mean(rank)``)."""
    if ranks.expanded(direction):
        higher, equal = (x.astype(np.int64) for x in ranks.counts(direction))
        positions = (equal + 1) * higher + equal * (equal + 1) // 2  # sum of 0-based positions
        return PerQuery("mean", positions, counts=equal + 1, offset=1.0)
    rank = getattr(ranks, direction)
    if ranks.argsort_path(direction):
        return PerQuery("mean", rank)
    return PerQuery("mean", rank - 1.0, offset=1.0)


def _ties(ranks: QueryRanks, direction: str) -> PerQuery:
    """The number of queries whose ground truth tied with another candidate."""
    return PerQuery("sum", getattr(ranks, f"{direction}_tied").astype(np.int64))


register_metric(Metric("MdR", "MdR", _median_rank, unit="rank"))
register_metric(Metric("MnR", "MnR", _mean_rank, unit="rank"))
register_metric(Metric("ties", "ties", _ties, unit="count", table=False))


# ----------------------------------------------------------------------------------------------
# The metric set of a run, its keys and labels
# ----------------------------------------------------------------------------------------------


def check_recall_ks(recall_ks: Sequence[int] | None) -> tuple[int, ...]:
    """``recall_ks`` as a tuple of distinct positive ints (None: ``RECALL_KS``); else ValueError."""
    if recall_ks is None:
        return RECALL_KS
    if isinstance(recall_ks, (str, bytes)) or not isinstance(recall_ks, Sequence):
        raise ValueError(f"eval.recall_ks must be a list of positive integers, got {recall_ks!r}")
    ks = tuple(recall_ks)
    if not ks or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > 0 for k in ks):
        raise ValueError(f"eval.recall_ks must be a non-empty list of positive integers, got {list(ks)!r}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"eval.recall_ks must not repeat a cut-off, got {list(ks)!r}")
    return tuple(int(k) for k in ks)


def metric_set(recall_ks: Sequence[int] | None = None) -> tuple[Metric, ...]:
    """The metrics a run reports, in key order: R@k for each of ``recall_ks`` (default
    ``RECALL_KS``), then every registered metric in registration order (MdR, MnR, the registered
    extras, then those outside the tables: the tie counts)."""
    recalls = [recall(k) for k in check_recall_ks(recall_ks)]
    names = {m.name for m in recalls}
    registered = [METRICS.get(name) for name in METRICS if name not in names]
    return (
        *recalls,
        *(m for m in registered if m.table),
        *(m for m in registered if not m.table),
    )


def metric_keys(recall_ks: Sequence[int] | None = None) -> tuple[str, ...]:
    """Every key ``metrics_from_ranks`` returns, in order: each direction's table metrics, then the
    others (``t2v_ties``, ``v2t_ties``)."""
    metrics = metric_set(recall_ks)
    table = [f"{d}_{m.name}" for d in DIRECTIONS for m in metrics if m.table]
    other = [f"{d}_{m.name}" for m in metrics if not m.table for d in DIRECTIONS]
    return (*table, *other)


def find_metric(key: str) -> tuple[str, Metric] | None:
    """``(direction, Metric)`` of a metric key (``t2v_R50``, ``v2t_MdR``), or None for another key
    (``order_acc``). Any ``R<k>`` is a recall."""
    direction, _, name = key.partition("_")
    if direction not in DIRECTIONS or not name:
        return None
    if name in METRICS:
        return direction, METRICS.get(name)
    if _RECALL_NAME.fullmatch(name):
        return direction, recall(int(name[1:]))
    return None


def is_metric_key(key: str, *, table: bool | None = None) -> bool:
    """Whether ``key`` is a metric key (with ``table``: and whether it is a table column or not)."""
    found = find_metric(key)
    return found is not None and (table is None or found[1].table == table)


def metric_label(key: str) -> str:
    """The display label of a metric key: ``t2v_R1`` -> ``t2v R@1`` (other keys are returned as given)."""
    found = find_metric(key)
    return f"{found[0]} {found[1].label}" if found else key
