"""Plots of a suite's models (matplotlib, Agg), saved as PNG and PDF.

- ``recall_at_k``: R@K for K = 1 .. gallery size (log-scaled K), the mean over seeds with the
  seeds' range shaded; every value comes from the metrics core (``RunRecord.recall_curve``).
- ``rank_hist``: queries per rank (% of the queries, averaged over the ranks a bin holds: one
  bin per rank for small galleries, log-spaced above); edges sit at integers minus 1/4, so the half
  ranks of the ``mean`` tie policy never fall on an edge and share the bin of their whole rank, and
  a bin's height does not depend on how many whole ranks it happens to hold.
- ``<suite>_r1``: R@1 (and order accuracy, with its 50% chance line) per model, mean over seeds
  with the two-level bootstrap interval as error bars.

Every figure's title names the suite and its protocol, and the bar chart's file is named after
the suite (``ablation_r1.png``, ``eval-msvd-clip2video_r1.png``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from clip2video.engine.records import RunRecord  # noqa: E402
from clip2video.fileio import atomic_path  # noqa: E402
from clip2video.report.groups import ORDER_KEY, ModelGroup, group_records, summarise  # noqa: E402

DIRECTIONS = ("t2v", "v2t")
FORMATS = ("png", "pdf")
_TITLES = {"t2v": "text-to-video", "v2t": "video-to-text"}
_CURVE_POINTS = 60
_PLAIN = FuncFormatter(lambda value, _pos: f"{value:g}")  # 1, 10, 100 instead of 10^0 or 1.0
_LINEAR_RANKS = 25  # rank histograms up to this rank use one bin per rank on a linear axis


def recall_ks(gallery: int, points: int = _CURVE_POINTS) -> np.ndarray:
    """K values from 1 to the gallery size, log-spaced (every K for small galleries)."""
    gallery = max(int(gallery), 1)
    if gallery <= points:
        return np.arange(1, gallery + 1)
    return np.unique(np.round(np.geomspace(1, gallery, points)).astype(np.int64))


def rank_bins(top: float, bins: int = 25) -> np.ndarray:
    """Histogram edges from 1 past ``top``, each an integer minus 1/4: every rank the tie policies
    produce (integers, and halves under ``mean``) lies inside a bin, never on an edge, and a bin
    holds whole ranks with their halves. One rank per bin up to ``bins`` ranks, log-spaced above."""
    top = max(float(top), 2.0)
    if top <= bins:
        starts = np.arange(1, int(np.ceil(top)) + 2)
    else:
        starts = np.unique(np.round(np.geomspace(1, top + 1, bins)))
        if starts[-1] <= top:
            starts = np.append(starts, np.ceil(top) + 1)
    return starts.astype(np.float64) - 0.25


def _groups(items: list[RunRecord] | list[ModelGroup], n_boot: int, seed: int) -> list[ModelGroup]:
    if items and isinstance(items[0], ModelGroup):
        return list(items)  # type: ignore[arg-type]
    return summarise(group_records(list(items)), n_boot=n_boot, seed=seed)  # type: ignore[arg-type]


def rank_density(ranks: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """% of the queries per whole rank in each bin of ``edges``: a bin's share divided by the number
    of whole ranks it holds (edges are integers minus 1/4, so that number is the edges' difference)."""
    share, _ = np.histogram(ranks, bins=edges, weights=np.full(len(ranks), 100.0 / max(len(ranks), 1)))
    return share / np.diff(edges)


def plot_recall_curves(groups: list[ModelGroup], path: str | Path, title: str = "") -> list[Path]:
    """Recall@K over the whole gallery per model (mean over seeds, seed range shaded)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    if title:
        fig.suptitle(title)
    for ax, direction in zip(axes, DIRECTIONS, strict=True):
        gallery = max(r.gallery_size(direction) for g in groups for r in g.records)
        ks = recall_ks(gallery)
        for group in groups:
            curves = np.array([r.recall_curve(direction, ks) for r in group.records])
            style = "--" if group.postprocess else "-"
            (line,) = ax.plot(ks, curves.mean(0), style, lw=1.6, label=_legend(group))
            if len(curves) > 1:
                ax.fill_between(ks, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.set_xlim(1, gallery)
        ax.set_ylim(0, 101)
        ax.set_title(f"{_TITLES[direction]} recall@K, K up to the gallery ({gallery})")
        ax.set_xlabel("K (log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("R@K (%) — mean over seeds, band: seed range")
    return _save(fig, path)


def plot_rank_histograms(groups: list[ModelGroup], path: str | Path, title: str = "") -> list[Path]:
    """Queries per rank per model (all seeds pooled; % of the queries per whole rank, averaged
    over a bin's ranks), one panel per direction."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if title:
        fig.suptitle(title)
    for ax, direction in zip(axes, DIRECTIONS, strict=True):
        top = max(float(np.max(getattr(r.query_ranks(), direction))) for g in groups for r in g.records)
        edges = rank_bins(top, _LINEAR_RANKS)
        for group in groups:
            ranks = np.concatenate([getattr(r.query_ranks(), direction) for r in group.records])
            ax.stairs(rank_density(ranks, edges), edges, lw=1.6, label=_legend(group))
        wide = top > _LINEAR_RANKS
        if wide:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.set_title(f"{_TITLES[direction]}: rank of the ground truth")
        scale = "log scales; " if wide else ""
        ax.set_xlabel(f"rank ({scale}a rank and its half share a bin)")
        ax.set_ylabel("queries per rank (%)" + (", mean over a bin's ranks" if wide else ""))
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_ablation(groups: list[ModelGroup], path: str | Path, title: str = "") -> list[Path]:
    """R@1 per model (t2v, v2t) and order accuracy where recorded: mean over seeds with 95%
    two-level bootstrap intervals; order accuracy's 50% chance line."""
    plain = [g for g in groups if not g.postprocess] or groups
    x = np.arange(len(plain))
    has_order = any(g.has(ORDER_KEY) for g in plain)
    series = [f"{d}_R1" for d in DIRECTIONS] + ([ORDER_KEY] if has_order else [])
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(plain) + 2), 4.2))
    for i, key in enumerate(series):
        values, lo, hi = [], [], []
        for group in plain:
            s = group.summary
            known = s is not None and group.has(key)
            values.append(s.point(key) if known else np.nan)  # type: ignore[union-attr]
            interval = s.interval(key) if known else (np.nan, np.nan)  # type: ignore[union-attr]
            lo.append(interval[0])
            hi.append(interval[1])
        v = np.array(values)
        err = np.vstack([np.clip(v - np.array(lo), 0, None), np.clip(np.array(hi) - v, 0, None)])
        label = "order accuracy (%)" if key == ORDER_KEY else f"{_TITLES[key[:3]]} R@1 (%)"
        pos = x + (i - (len(series) - 1) / 2) * width
        ax.bar(pos, v, width, yerr=np.nan_to_num(err), capsize=3, label=label)
    if has_order:
        ax.axhline(50.0, color="0.3", ls=":", lw=1.2, label="order chance (50%)")
    ax.set_xticks(x, [g.label for g in plain])
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    n_seeds = max(g.summary.n_seeds for g in plain if g.summary is not None)
    spread = f"Mean over {n_seeds} seeds" if n_seeds > 1 else "One run per row"
    ax.set_title((f"{title}\n" if title else "") + f"{spread} with 95% two-level bootstrap intervals")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _legend(group: ModelGroup) -> str:
    label = f"{group.model} [{group.postprocess}]" if group.postprocess else group.model
    return label + (f" ({len(group.records)} seeds)" if len(group.records) > 1 else "")


def _save(fig: plt.Figure, path: str | Path) -> list[Path]:
    """Save ``path`` as PNG and PDF (same stem, each written atomically); returns both paths."""
    out = Path(path)
    fig.tight_layout()
    paths = []
    try:
        for ext in FORMATS:
            target = out.with_suffix(f".{ext}")
            with atomic_path(target) as tmp:
                fig.savefig(tmp, dpi=110, format=ext)
            paths.append(target)
    finally:
        plt.close(fig)
    return paths


def plot_names(suite: str) -> tuple[str, str, str]:
    """The three figures' file stems: ``recall_at_k``, ``rank_hist`` and ``<suite>_r1``."""
    return "recall_at_k", "rank_hist", f"{suite}_r1"


def write_plots(
    items: list[ModelGroup] | list[RunRecord],
    out_dir: str | Path,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    suite: str = "ablation",
    protocol: str = "",
) -> list[Path]:
    """``recall_at_k``, ``rank_hist`` and ``<suite>_r1`` as PNG and PDF in ``out_dir``, each
    titled with the suite (and protocol). ``items``: the table's summarised model groups, or
    records (grouped and bootstrapped here)."""
    groups = _groups(items, n_boot, seed)
    out = Path(out_dir)
    title = f"suite {suite}" + (f", protocol {protocol}" if protocol else "")
    recall, hist, bars = plot_names(suite)
    return [
        *plot_recall_curves(groups, out / f"{recall}.png", title),
        *plot_rank_histograms(groups, out / f"{hist}.png", title),
        *plot_ablation(groups, out / f"{bars}.png", title),
    ]
