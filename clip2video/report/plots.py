"""Plots of a suite's rows (matplotlib, Agg): recall@K curves, rank histograms, an ablation bar chart."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from clip2video.engine.records import RunRecord  # noqa: E402
from clip2video.report.stats import DIRECTIONS, bootstrap_ci  # noqa: E402

MAX_K = 50
_TITLES = {"t2v": "text-to-video", "v2t": "video-to-text"}


def _ranks(rec: RunRecord, direction: str) -> np.ndarray:
    return rec.ranks_t2v if direction == "t2v" else rec.ranks_v2t


def _label(rec: RunRecord) -> str:
    return f"{rec.name} [{rec.postprocess}]" if rec.postprocess else rec.name


def recall_curve(ranks: np.ndarray, max_k: int = MAX_K) -> np.ndarray:
    """``R@K`` for K = 1..max_k (percent) of plain rank vectors (no tie information)."""
    ks = np.arange(1, max_k + 1)
    return 100.0 * np.mean(np.asarray(ranks)[None, :] <= ks[:, None], axis=1)


def plot_recall_curves(records: list[RunRecord], path: str | Path, max_k: int = MAX_K) -> Path:
    """Recall@K (K = 1..max_k) per model, one panel per direction."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    ks = np.arange(1, max_k + 1)
    for ax, direction in zip(axes, DIRECTIONS, strict=True):
        for rec in records:
            style = "--" if rec.postprocess else "-"
            ax.plot(ks, rec.recall_curve(direction, ks), style, label=_label(rec), lw=1.6)
        ax.set_title(f"{_TITLES[direction]} recall@K")
        ax.set_xlabel("K")
        ax.set_xlim(1, max_k)
        ax.set_ylim(0, 101)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("R@K (%)")
    axes[1].legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_rank_histograms(records: list[RunRecord], path: str | Path) -> Path:
    """Histogram of per-query ranks per model (log-spaced bins), one panel per direction."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, direction in zip(axes, DIRECTIONS, strict=True):
        top = max(float(np.max(_ranks(r, direction))) for r in records)
        bins = np.unique(np.round(np.geomspace(1, max(top, 2.0) + 1, 25)))
        for rec in records:
            ax.hist(_ranks(rec, direction), bins=bins, histtype="step", lw=1.6, label=_label(rec))
        ax.set_xscale("log")
        ax.set_title(f"{_TITLES[direction]} rank of the ground truth")
        ax.set_xlabel("rank (log scale)")
        ax.set_ylabel("queries")
        ax.grid(alpha=0.3)
    axes[1].legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_ablation(records: list[RunRecord], path: str | Path, *, n_boot: int = 1000, seed: int = 0) -> Path:
    """R@1 per model with 95% bootstrap error bars (t2v, v2t), plus order accuracy where recorded."""
    plain = [r for r in records if not r.postprocess] or records
    names = [r.name for r in plain]
    x = np.arange(len(plain))
    has_order = any("order_acc" in r.extra for r in plain)
    series = list(DIRECTIONS) + (["order_acc"] if has_order else [])
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(plain) + 2), 4.2))
    cis = [bootstrap_ci(r, n_boot=n_boot, seed=seed) for r in plain]
    for i, name in enumerate(series):
        if name == "order_acc":
            values = np.array([float(r.extra.get("order_acc", np.nan)) for r in plain])
            err = None
            label = "order accuracy (%)"
        else:
            key = f"{name}_R1"
            values = np.array([r.metrics.get(key, np.nan) for r in plain])
            lo = np.array([c[key][0] for c in cis])
            hi = np.array([c[key][1] for c in cis])
            err = np.vstack([np.clip(values - lo, 0, None), np.clip(hi - values, 0, None)])
            label = f"{_TITLES[name]} R@1 (%)"
        pos = x + (i - (len(series) - 1) / 2) * width
        ax.bar(pos, values, width, yerr=err, capsize=3, label=label)
    ax.set_xticks(x, names)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title("Ablation: R@1 with 95% bootstrap intervals")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_plots(
    records: list[RunRecord], out_dir: str | Path, *, n_boot: int = 1000, seed: int = 0
) -> list[Path]:
    """``recall_at_k.png``, ``rank_hist.png``, ``ablation_r1.png`` in ``out_dir``."""
    out = Path(out_dir)
    return [
        plot_recall_curves(records, out / "recall_at_k.png"),
        plot_rank_histograms(records, out / "rank_hist.png"),
        plot_ablation(records, out / "ablation_r1.png", n_boot=n_boot, seed=seed),
    ]
