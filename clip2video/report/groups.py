"""Rows of a suite grouped by model (and post-processing) over seeds, with their bootstrap summaries.

Tables and plots both read these: one group per model, its records sorted by seed, the two-level
bootstrap summary (seeds x video clusters) and the single-seed per-query bootstrap of its first seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clip2video.engine.records import RunRecord
from clip2video.metrics.bootstrap import SeedRun, Summary, per_query_bootstrap, two_level_bootstrap

ORDER_KEY = "order_acc"
ORDER_WINS = "order_wins"  # the per-caption array behind order_acc (1 / 0.5 / 0, NaN without a twin)
SCALAR_KEYS = ("order_acc", "order_changed_share")


@dataclass
class ModelGroup:
    """One model's rows (one per seed) and their statistics."""

    label: str
    model: str
    postprocess: str | None
    records: list[RunRecord]
    summary: Summary | None = None
    per_query: Summary | None = None
    extra_notes: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int | None]:
        """The seeds of the rows, in order."""
        return [r.seed for r in self.records]

    @property
    def first(self) -> RunRecord:
        """The row of the first (lowest) seed."""
        return self.records[0]

    def has(self, key: str) -> bool:
        """Whether the summary holds ``key`` with a value for some seed."""
        return (
            self.summary is not None
            and key in self.summary.keys
            and bool(np.any(np.isfinite(self.summary.per_seed[:, self.summary.keys.index(key)])))
        )

    def legacy_mean(self) -> dict[str, float] | None:
        """Mean over seeds of the ``legacy`` tie-policy metrics, where every seed recorded them."""
        legacies = [r.legacy for r in self.records]
        if not all(legacies):
            return None
        keys = set.intersection(*(set(x) for x in legacies if x))
        return {k: float(np.mean([x[k] for x in legacies if x])) for k in keys}


def _group_key(rec: RunRecord) -> tuple[str, str]:
    """A row's seeds group together: its name without seed (``extra["row"]``; older records: the model)."""
    return str(rec.extra.get("row") or rec.model), rec.postprocess or ""


def group_records(records: list[RunRecord]) -> list[ModelGroup]:
    """One group per (row, post-processing), in order of first appearance, seeds ascending."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(_group_key(rec), []).append(rec)
    out = []
    for (model, post), recs in groups.items():
        recs = sorted(recs, key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, r.name))
        label = recs[0].name if len(recs) == 1 else (f"{model}+{post}" if post else model)
        out.append(ModelGroup(label=label, model=model, postprocess=post or None, records=recs))
    return out


def recall_ks_of(rec: RunRecord) -> tuple[int, ...] | None:
    """The row's recall cut-offs (its settings' ``eval.recall_ks``; None for records made before the
    setting existed: 1, 5, 10)."""
    ev = rec.config.get("eval") if isinstance(rec.config, dict) else None
    ks = ev.get("recall_ks") if isinstance(ev, dict) else None
    return tuple(int(k) for k in ks) if ks else None


def seed_run(rec: RunRecord) -> SeedRun:
    """What the bootstrap needs of a row: exact ranks, clusters, ``order_wins`` as the per-caption
    share behind ``order_acc`` where recorded, else the recorded scalars, and its recall cut-offs."""
    shares = {}
    if ORDER_WINS in rec.arrays:
        shares[ORDER_KEY] = np.asarray(rec.arrays[ORDER_WINS], dtype=np.float64)
    scalars = {}
    for key in SCALAR_KEYS:
        value = rec.metrics.get(key, rec.extra.get(key))
        if key not in shares and value is not None:
            scalars[key] = float(value)
    return SeedRun(
        rec.query_ranks(), rec.caption_video, shares=shares, scalars=scalars, recall_ks=recall_ks_of(rec)
    )


def summarise(groups: list[ModelGroup], *, n_boot: int, seed: int = 0) -> list[ModelGroup]:
    """Fill each group's two-level and per-query summaries (deterministic given ``seed``)."""
    for group in groups:
        runs = [seed_run(r) for r in group.records]
        keys = set.intersection(*(set(run.shares) | set(run.scalars) for run in runs)) if runs else set()
        runs = [
            SeedRun(
                run.ranks,
                run.caption_video,
                shares={k: v for k, v in run.shares.items() if k in keys},
                scalars={k: v for k, v in run.scalars.items() if k in keys},
                recall_ks=run.recall_ks,
            )
            for run in runs
        ]
        group.summary = two_level_bootstrap(runs, n_boot=n_boot, seed=seed)
        group.per_query = per_query_bootstrap(runs[0], n_boot=n_boot, seed=seed)
    return groups
