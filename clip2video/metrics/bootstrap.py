"""Bootstrap statistics of retrieval metrics, all computed by the one metrics core.

Every statistic here is ``metrics_from_ranks(ranks.take(t2v=..., v2t=...))`` of a resample of the
recorded per-query ranks: no second formula for R@K, MdR or MnR. Two resampling schemes:

- **Two-level** (``two_level_bootstrap``, what tables report): each replicate draws the seeds with
  replacement and the videos as clusters (a drawn video brings all its captions: the t2v queries
  are the captions of the drawn videos, with multiplicity; the v2t queries are the drawn videos).
  The statistic is the mean over the drawn seeds of each seed's metrics on the same clusters.
- **Single-seed per-query** (``per_query_bootstrap``, labelled as such; what papers usually
  report): one seed, t2v and v2t queries resampled independently. It ignores that captions of a
  video are correlated and that training seeds differ, so its intervals are too narrow.

Replicate ``b`` draws from ``numpy.random.default_rng([seed, scheme, b])``: results depend only on
the inputs and ``seed``, never on process state, chunking or the other models in a table. Two
summaries made with the same ``Resampling`` (same seed count, query layout, seed and number of
replicates) saw the same resamples, so ``paired_difference`` pairs them replicate by replicate.
A resample is represented by query multiplicities in index order (``np.repeat(arange, counts)``),
so the identity resample is ``arange`` and reproduces the point value exactly.

Speed: summaries evaluate the replicates in chunks with the core's ``metrics_from_weights`` (the
same formulas on query multiplicities, vectorised over replicates); ``replicate_statistics`` is the
one-at-a-time reference through ``QueryRanks.take`` + ``metrics_from_ranks``, and tests hold the
two equal (exactly for the identity resample; to the last bit of a fractional R@K sum otherwise).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np

from clip2video.errors import Clip2VideoError
from clip2video.metrics import QueryRanks, check_recall_ks, metrics_from_ranks, metrics_from_weights

__all__ = [
    "PairedDiff",
    "Resampling",
    "SeedRun",
    "Summary",
    "bootstrap_ci",
    "cluster_queries",
    "holm",
    "minimum_detectable_difference",
    "paired_difference",
    "per_query_bootstrap",
    "replicate_statistics",
    "run_statistics",
    "two_level_bootstrap",
]

_SCHEMES = {"two-level": 2, "per-query": 1}
_CELLS_PER_CHUNK = 2**21  # (replicate, caption) weights held at once; results do not depend on it


class BootstrapError(Clip2VideoError):
    """Inputs that cannot be bootstrapped (or paired) as asked."""


@dataclass(frozen=True)
class SeedRun:
    """One trained seed of a model, as the bootstrap sees it.

    Attributes:
        ranks: the seed's exact per-query ranks.
        caption_video: caption i's video (int ``[num_captions]``): the clusters.
        shares: per-caption values in [0, 1] (NaN = no value for that caption, e.g. a caption
            without a reversed twin); each becomes a statistic ``100 * mean`` over the resampled
            captions that have a value (``order_acc`` from ``order_wins``).
        scalars: per-seed numbers with no per-query data (constant over query resamples, so only
            the seed level of the bootstrap moves them).
        recall_ks: the run's recall cut-offs (``[eval] recall_ks``; None: 1, 5, 10).
    """

    ranks: QueryRanks
    caption_video: np.ndarray
    shares: Mapping[str, np.ndarray] = field(default_factory=dict)
    scalars: Mapping[str, float] = field(default_factory=dict)
    recall_ks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        cv = np.asarray(self.caption_video, dtype=np.int64).reshape(-1)
        n, m = len(self.ranks.t2v), len(self.ranks.v2t)
        if len(cv) != n or (n and (cv.min() < 0 or cv.max() >= m)):
            raise BootstrapError(f"caption_video must hold {n} video indices in [0, {m}), got {len(cv)}")
        object.__setattr__(self, "caption_video", cv)
        if self.recall_ks is not None:
            object.__setattr__(self, "recall_ks", check_recall_ks(self.recall_ks))
        for name, values in self.shares.items():
            if np.shape(values) != (n,):
                raise BootstrapError(
                    f"shares[{name!r}] must hold one value per caption ({n}), got {np.shape(values)}"
                )


@dataclass(frozen=True)
class Resampling:
    """What a summary's replicates were drawn from; equal resamplings saw the same resamples."""

    scheme: str
    n_boot: int
    seed: int
    n_seeds: int
    num_captions: int
    num_videos: int
    layout: str  # digest of caption_video


@dataclass
class Summary:
    """Bootstrap summary of one model (all its seeds) on one query layout.

    ``per_seed[s, j]`` is seed s's value of ``keys[j]`` (the point value, no resampling);
    ``replicates[b, j]`` the statistic of replicate b. ``point`` = mean over seeds, ``std`` = their
    sample standard deviation (NaN with one seed), ``lo``/``hi`` the percentile interval and ``se``
    the bootstrap standard error (std of the replicates).
    """

    keys: tuple[str, ...]
    per_seed: np.ndarray
    replicates: np.ndarray
    resampling: Resampling
    alpha: float = 0.05
    fixed: tuple[str, ...] = ()  # per-seed scalars: no query-level data to resample

    def resampled(self, key: str) -> bool:
        """Whether ``key`` varies over resamples (False for a per-seed scalar of a single seed:
        no interval and no test then)."""
        return not (key in self.fixed and self.n_seeds == 1)

    def _column(self, key: str) -> int:
        try:
            return self.keys.index(key)
        except ValueError:
            raise KeyError(f"no statistic {key!r}; known: {', '.join(self.keys)}") from None

    def point(self, key: str) -> float:
        """Mean over seeds."""
        return float(np.mean(self.per_seed[:, self._column(key)]))

    def std(self, key: str) -> float:
        """Sample standard deviation over seeds (NaN with one seed)."""
        values = self.per_seed[:, self._column(key)]
        return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")

    def interval(self, key: str) -> tuple[float, float]:
        """Percentile ``1 - alpha`` interval of the replicates (NaN when any replicate is NaN)."""
        values = self.replicates[:, self._column(key)]
        if not np.all(np.isfinite(values)) or not self.resampled(key):
            return float("nan"), float("nan")
        lo, hi = np.quantile(values, [self.alpha / 2, 1 - self.alpha / 2])
        return float(lo), float(hi)

    def se(self, key: str) -> float:
        """Bootstrap standard error (std of the replicates)."""
        values = self.replicates[:, self._column(key)]
        return float(np.std(values, ddof=1)) if len(values) > 1 and self.resampled(key) else float("nan")

    @property
    def n_seeds(self) -> int:
        """How many seeds the summary averages."""
        return int(self.per_seed.shape[0])


class PairedDiff(NamedTuple):
    """A minus B on one statistic over the same resamples: observed delta (means over seeds), its
    percentile interval, two-sided bootstrap p-value and the standard error of the difference."""

    delta: float
    lo: float
    hi: float
    p: float
    se: float


# ----------------------------------------------------------------------------------------------
# Statistics of one seed on a selection of queries
# ----------------------------------------------------------------------------------------------


def run_statistics(
    run: SeedRun, t2v: np.ndarray | None = None, v2t: np.ndarray | None = None
) -> dict[str, float]:
    """The metrics core on the queries ``t2v`` / ``v2t`` (index arrays, repeats allowed; None =
    all), plus ``run``'s per-caption shares on the same captions and its per-seed scalars."""
    out = metrics_from_ranks(run.ranks.take(t2v=t2v, v2t=v2t), recall_ks=run.recall_ks)
    for name, values in run.shares.items():
        out[name] = _share(np.asarray(values, dtype=np.float64) if t2v is None else np.asarray(values)[t2v])
    for name, value in run.scalars.items():
        out.setdefault(name, float(value))
    return out


def _share(values: np.ndarray) -> float:
    """``100 * mean`` of the non-NaN values (NaN when there are none)."""
    known = values[~np.isnan(values)]
    return float(100.0 * np.sum(known) / len(known)) if len(known) else float("nan")


def cluster_queries(
    caption_video: np.ndarray, num_videos: int, videos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Query indices of a cluster resample: ``videos`` (drawn video indices, repeats allowed) ->
    (t2v: every caption of each drawn video, v2t: the drawn videos), each in index order with
    multiplicity. Drawing every video once gives ``arange`` for both."""
    mult = np.bincount(videos, minlength=num_videos)
    t2v = np.repeat(np.arange(len(caption_video), dtype=np.int64), mult[caption_video])
    return t2v, np.repeat(np.arange(num_videos, dtype=np.int64), mult)


def _independent(n: int, draw: np.ndarray) -> np.ndarray:
    """Query indices of an independent resample, in index order with multiplicity."""
    return np.repeat(np.arange(n, dtype=np.int64), np.bincount(draw, minlength=n))


def _layout(runs: Sequence[SeedRun]) -> tuple[np.ndarray, int, str]:
    if not runs:
        raise BootstrapError("no seeds to bootstrap")
    cv, m = runs[0].caption_video, len(runs[0].ranks.v2t)
    for run in runs[1:]:
        if len(run.ranks.v2t) != m or not np.array_equal(run.caption_video, cv):
            raise BootstrapError(
                "the seeds of one model ranked different query sets (caption_video differs); "
                "bootstrap them separately"
            )
    return cv, m, hashlib.sha1(cv.tobytes()).hexdigest()[:16]


def _check(n_boot: int, alpha: float) -> None:
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise BootstrapError(f"n_boot must be an int >= 2, got {n_boot!r}")
    if not 0.0 < alpha < 1.0:
        raise BootstrapError(f"alpha must be in (0, 1), got {alpha}")


# ----------------------------------------------------------------------------------------------
# The two schemes
# ----------------------------------------------------------------------------------------------


def replicate_statistics(runs: Sequence[SeedRun], resampling: Resampling, b: int) -> dict[str, float]:
    """The statistic of replicate ``b``: mean over the drawn seeds of the metrics on the drawn
    queries (one seed and independent queries for the ``per-query`` scheme)."""
    rng = np.random.default_rng([resampling.seed, _SCHEMES[resampling.scheme], b])
    cv, m = runs[0].caption_video, resampling.num_videos
    if resampling.scheme == "per-query":
        t2v = _independent(len(cv), rng.integers(0, len(cv), len(cv)))
        return run_statistics(runs[0], t2v, _independent(m, rng.integers(0, m, m)))
    seeds = rng.integers(0, len(runs), len(runs))
    t2v, v2t = cluster_queries(cv, m, rng.integers(0, m, m))
    cache: dict[int, dict[str, float]] = {}
    drawn = [cache.setdefault(int(s), run_statistics(runs[int(s)], t2v, v2t)) for s in seeds]
    return {key: float(np.mean([d[key] for d in drawn])) for key in drawn[0]}


def _draw(resampling: Resampling, cv: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replicate ``b``'s draw as multiplicities: (per-seed counts [S], t2v [n], v2t [m]); the same
    draws ``replicate_statistics`` makes."""
    rng = np.random.default_rng([resampling.seed, _SCHEMES[resampling.scheme], b])
    n, m, s = len(cv), resampling.num_videos, resampling.n_seeds
    if resampling.scheme == "per-query":
        t2v = np.bincount(rng.integers(0, n, n), minlength=n)
        return np.ones(1, dtype=np.int64), t2v, np.bincount(rng.integers(0, m, m), minlength=m)
    seeds = np.bincount(rng.integers(0, s, s), minlength=s)
    videos = np.bincount(rng.integers(0, m, m), minlength=m)
    return seeds, videos[cv], videos


def _weighted_statistics(run: SeedRun, t2v: np.ndarray, v2t: np.ndarray) -> dict[str, np.ndarray]:
    """``run_statistics`` of many resamples given as multiplicities (``metrics_from_weights``)."""
    out = metrics_from_weights(run.ranks, t2v, v2t, recall_ks=run.recall_ks)
    for name, values in run.shares.items():
        values = np.asarray(values, dtype=np.float64)
        known = ~np.isnan(values)
        count = t2v @ known.astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(
                count > 0, 100.0 * ((t2v * np.where(known, values, 0.0)).sum(1)) / count, np.nan
            )
    for name, value in run.scalars.items():
        out.setdefault(name, np.full(len(t2v), float(value)))
    return out


def _summarise(runs: Sequence[SeedRun], resampling: Resampling, alpha: float) -> Summary:
    points = [run_statistics(run) for run in runs]
    keys = tuple(points[0])
    per_seed = np.array([[p[k] for k in keys] for p in points], dtype=np.float64)
    replicates = np.empty((resampling.n_boot, len(keys)), dtype=np.float64)
    cv = runs[0].caption_video
    chunk = max(1, _CELLS_PER_CHUNK // max(len(cv), 1))
    for start in range(0, resampling.n_boot, chunk):
        draws = [_draw(resampling, cv, b) for b in range(start, min(start + chunk, resampling.n_boot))]
        seeds = np.array([d[0] for d in draws], dtype=np.float64)
        t2v = np.array([d[1] for d in draws])
        v2t = np.array([d[2] for d in draws])
        total = np.zeros((len(draws), len(keys)))
        for s, run in enumerate(runs):
            used = seeds[:, s] > 0
            if not np.any(used):
                continue
            stats = _weighted_statistics(run, t2v[used], v2t[used])
            total[used] += seeds[used, s, None] * np.column_stack([stats[k] for k in keys])
        replicates[start : start + len(draws)] = total / len(runs)
    fixed = tuple(k for k in keys if all(k in r.scalars and k not in r.shares for r in runs))
    return Summary(
        keys=keys, per_seed=per_seed, replicates=replicates, resampling=resampling, alpha=alpha, fixed=fixed
    )


def two_level_bootstrap(
    runs: Sequence[SeedRun], *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> Summary:
    """Seeds resampled with replacement and videos as clusters; statistic = mean over drawn seeds.

    ``runs`` are one model's seeds in a fixed order (pair models by that order). With one seed
    the seed level is trivial and only the clusters are resampled."""
    _check(n_boot, alpha)
    cv, m, layout = _layout(runs)
    resampling = Resampling("two-level", int(n_boot), int(seed), len(runs), len(cv), m, layout)
    return _summarise(runs, resampling, alpha)


def per_query_bootstrap(run: SeedRun, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> Summary:
    """The single-seed per-query bootstrap (t2v and v2t queries drawn independently), as papers
    report it; too narrow where captions cluster by video or seeds differ."""
    _check(n_boot, alpha)
    cv, m, layout = _layout([run])
    resampling = Resampling("per-query", int(n_boot), int(seed), 1, len(cv), m, layout)
    return _summarise([run], resampling, alpha)


def bootstrap_ci(
    source: Any,
    *,
    caption_video: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    recall_ks: Sequence[int] | None = None,
) -> dict[str, tuple[float, float]]:
    """Single-seed per-query bootstrap intervals of every metric of one row (R@K at ``recall_ks``).

    ``source``: a ``QueryRanks``, or anything with ``query_ranks()`` and ``caption_video`` (a run
    record). Without a layout, captions map to videos one to one when the counts match."""
    ranks = source.query_ranks() if hasattr(source, "query_ranks") else source
    if caption_video is None:
        caption_video = getattr(source, "caption_video", None)
    if caption_video is None:
        n, m = len(ranks.t2v), len(ranks.v2t)
        caption_video = np.arange(n) if n == m else np.minimum(np.arange(n) * m // max(n, 1), m - 1)
    run = SeedRun(ranks, caption_video, recall_ks=None if recall_ks is None else tuple(recall_ks))
    summary = per_query_bootstrap(run, n_boot=n_boot, seed=seed, alpha=alpha)
    return {key: summary.interval(key) for key in summary.keys}


# ----------------------------------------------------------------------------------------------
# Comparisons
# ----------------------------------------------------------------------------------------------


def paired_difference(a: Summary, b: Summary) -> dict[str, PairedDiff]:
    """A minus B for every statistic both have, over the SAME replicates (same seed indices,
    same clusters). ``p`` = ``min(1, 2 * min(P(d <= 0), P(d >= 0)))`` over the replicate
    differences ``d``; NaN where a replicate is NaN or a side does not vary over resamples (a
    per-seed scalar of a single seed: nothing to test)."""
    if a.resampling != b.resampling:
        raise BootstrapError(
            f"paired comparison needs the same resamples: {a.resampling} vs {b.resampling} "
            "(same seed count, query layout, bootstrap seed and resamples)"
        )
    out: dict[str, PairedDiff] = {}
    for key in a.keys:
        if key not in b.keys:
            continue
        d = a.replicates[:, a.keys.index(key)] - b.replicates[:, b.keys.index(key)]
        delta = a.point(key) - b.point(key)
        if not np.all(np.isfinite(d)) or not (a.resampled(key) and b.resampled(key)):
            out[key] = PairedDiff(delta, float("nan"), float("nan"), float("nan"), float("nan"))
            continue
        lo, hi = (float(v) for v in np.quantile(d, [a.alpha / 2, 1 - a.alpha / 2]))
        p = float(min(1.0, 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))))
        out[key] = PairedDiff(float(delta), lo, hi, p, float(np.std(d, ddof=1)))
    return out


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are left out of the family
    and stay NaN): the i-th smallest of k becomes ``max over j <= i of min(1, (k - j + 1) p_(j))``."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    known = np.flatnonzero(~np.isnan(p))
    order = known[np.argsort(p[known], kind="stable")]
    k = len(order)
    scaled = np.minimum(1.0, (k - np.arange(k)) * p[order])
    out[order] = np.maximum.accumulate(scaled) if k else scaled
    return out


def minimum_detectable_difference(se: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided level-``alpha`` test detects with probability ``power``
    when the difference's standard error is ``se`` (normal approximation):
    ``(z_{1 - alpha/2} + z_{power}) * se`` (2.80 * se at 0.05 and 80%)."""
    z = NormalDist()
    return float((z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * se)
