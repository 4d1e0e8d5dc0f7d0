"""Plots: real PNG + PDF files, K over the whole gallery, half-rank bins, legends, order chance line."""

from __future__ import annotations

import numpy as np
from matplotlib import image as mpimg

from clip2video.engine.records import read_run_record, write_run_record
from clip2video.metrics import query_ranks, retrieval_metrics
from clip2video.report.groups import group_records, summarise
from clip2video.report.plots import plot_ablation, rank_bins, rank_density, recall_ks, write_plots


def record(tmp_path, name: str, shift: float, seed: int = 0, policy: str = "mean", **extra):
    rng = np.random.default_rng(seed)
    cv = np.repeat(np.arange(40), 2)
    sim = np.round(rng.normal(size=(80, 40)), 1)
    sim[np.arange(80), cv] += shift
    ranks = query_ranks(sim, cv, tie_policy=policy)
    write_run_record(
        tmp_path / f"{name}-s{seed}",
        name=f"{name}-s{seed}",
        metrics=retrieval_metrics(sim, cv, tie_policy=policy),
        ranks=ranks,
        caption_video=cv,
        extra={"model": extra.pop("model", name), "seed": seed, **extra},
        arrays={"order_wins": (rng.random(80) < 0.7).astype(float)} if "order_acc" in extra else None,
    )
    return read_run_record(tmp_path / f"{name}-s{seed}")


def test_recall_ks_span_the_gallery_and_bins_fit_half_ranks():
    assert recall_ks(30).tolist() == list(range(1, 31))
    ks = recall_ks(1000)
    assert ks[0] == 1 and ks[-1] == 1000 and np.all(np.diff(ks) > 0)
    for top in (12.5, 40.5, 3000.0):
        edges = rank_bins(top)
        halves = np.arange(1, int(top) + 1, 0.5)  # k, k + 1/2 for k = 1 .. top
        assert not np.any(np.isin(halves, edges))  # no half rank on an edge
        assert edges[0] < 1 and edges[-1] > top
        bins = np.digitize(halves, edges)
        assert np.all(bins[0::2] == bins[1::2])  # k and k + 1/2 share a bin
    assert len(rank_bins(12.5)) == 14  # one bin per rank for a small gallery


def test_write_plots_makes_nonblank_png_and_pdf_with_legends(tmp_path, monkeypatch):
    import matplotlib.axes

    legends = []
    original = matplotlib.axes.Axes.legend

    def spy(self, *args, **kwargs):
        legends.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", spy)
    records = [
        *(record(tmp_path, "meanp", 1.0, seed=s) for s in (0, 1)),
        *(record(tmp_path, "clip2video", 2.0, seed=s, order_acc=66.0) for s in (0, 1)),
        record(tmp_path, "meanp+dsl", 1.5, model="meanp", postprocess="dsl"),
    ]
    paths = write_plots(records, tmp_path / "out", n_boot=50)
    names = [p.name for p in paths]
    assert names == [f"{s}.{e}" for s in ("recall_at_k", "rank_hist", "ablation_r1") for e in ("png", "pdf")]
    assert len(legends) == 5  # two panels + two panels + the bar chart: every panel has a legend
    for path in paths:
        if path.suffix == ".pdf":
            assert path.read_bytes()[:5] == b"%PDF-"
            continue
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = mpimg.imread(path)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert pixels[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def test_recall_axis_reaches_the_gallery_size(tmp_path, monkeypatch):
    import matplotlib.axes

    limits = []
    original = matplotlib.axes.Axes.set_xlim

    def spy(self, *args, **kwargs):
        limits.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlim", spy)
    groups = summarise(group_records([record(tmp_path, "meanp", 1.0)]), n_boot=20)
    from clip2video.report.plots import plot_recall_curves

    plot_recall_curves(groups, tmp_path / "r.png")
    assert (1, 40) in limits  # 40 videos in the gallery, not a fixed 50


def test_ablation_bars_carry_intervals_order_accuracy_and_chance(tmp_path, monkeypatch):
    import matplotlib.axes

    calls, lines = [], []
    bar, axhline = matplotlib.axes.Axes.bar, matplotlib.axes.Axes.axhline

    def spy_bar(self, x, height, *args, **kwargs):
        calls.append((np.asarray(height, dtype=float), kwargs.get("yerr"), kwargs.get("label")))
        return bar(self, x, height, *args, **kwargs)

    def spy_line(self, y=0, *args, **kwargs):
        lines.append((y, kwargs.get("label")))
        return axhline(self, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", spy_bar)
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", spy_line)
    records = [record(tmp_path, "a", 1.0, seed=s) for s in (0, 1)]
    records += [record(tmp_path, "b", 2.0, seed=s, order_acc=80.0) for s in (0, 1)]
    groups = summarise(group_records(records), n_boot=100)
    plot_ablation(groups, tmp_path / "bars.png")
    labels = [c[2] for c in calls]
    assert labels == ["text-to-video R@1 (%)", "video-to-text R@1 (%)", "order accuracy (%)"]
    np.testing.assert_allclose(
        calls[0][0], [groups[0].summary.point("t2v_R1"), groups[1].summary.point("t2v_R1")]
    )
    assert calls[0][1].shape == (2, 2) and np.all(calls[0][1] > 0)  # non-degenerate error bars
    order_err = calls[2][1]
    assert np.isnan(calls[2][0][0]) and order_err[:, 1].sum() > 0  # b's order accuracy has an interval
    assert (50.0, "order chance (50%)") in lines
    assert (tmp_path / "bars.pdf").is_file()


def test_rank_histogram_bars_do_not_swing_with_the_bin_widths():
    """Ranks spread evenly over 1..300 (with the `mean` policy's halves) give bars of one height:
    each bin shows % per whole rank, whatever number of ranks its log-spaced edges hold."""
    ranks = np.concatenate([np.arange(1, 301, dtype=float), np.arange(1, 301) + 0.5])
    edges = rank_bins(ranks.max(), 25)
    widths = np.diff(edges)
    assert len(set(widths.tolist())) > 3  # the log-spaced bins hold 1, 2, 3, ... whole ranks
    density = rank_density(ranks, edges)
    inside = edges[1:] <= 300.75  # bins fully inside the ranks' range
    np.testing.assert_allclose(density[inside], 100.0 / 300)
    raw, _ = np.histogram(ranks, bins=edges)
    assert np.ptp(raw[inside]) > 5  # what the old per-bin shares did: they followed the bin widths
    assert np.isclose((density * widths).sum(), 100.0)  # every query counted once


def test_plots_are_named_and_titled_after_their_suite(tmp_path, monkeypatch):
    import matplotlib.figure

    titles = []
    original = matplotlib.figure.Figure.suptitle

    def spy(self, text, *args, **kwargs):
        titles.append(text)
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", spy)
    records = [record(tmp_path, "clip2video", 2.0)]
    paths = write_plots(records, tmp_path / "out", n_boot=20, suite="eval-msvd-clip2video", protocol="msvd")
    assert [p.name for p in paths] == [
        f"{s}.{e}" for s in ("recall_at_k", "rank_hist", "eval-msvd-clip2video_r1") for e in ("png", "pdf")
    ]
    assert titles == ["suite eval-msvd-clip2video, protocol msvd"] * 2
    assert not list((tmp_path / "out").glob("ablation_r1.*"))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left
