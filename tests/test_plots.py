"""Plots: the files are real PNGs, the recall curve is right, order accuracy adds a series."""

from __future__ import annotations

import numpy as np
from matplotlib import image as mpimg

from clip2video.engine.records import RunRecord
from clip2video.report.plots import plot_ablation, recall_curve, write_plots


def record(name: str, ranks: np.ndarray, **extra) -> RunRecord:
    metrics = {f"{d}_R1": 100 * float(np.mean(ranks <= 1)) for d in ("t2v", "v2t")}
    return RunRecord(name=name, metrics=metrics, ranks_t2v=ranks, ranks_v2t=ranks[::-1].copy(), extra=extra)


def test_recall_curve_is_the_cumulative_rank_share():
    ranks = np.array([1.0, 1.0, 3.0, 60.0])
    curve = recall_curve(ranks, max_k=50)
    assert curve.shape == (50,)
    assert curve[0] == 50.0 and curve[1] == 50.0 and curve[2] == 75.0 and curve[49] == 75.0
    assert np.all(np.diff(curve) >= 0)


def test_write_plots_makes_three_nonblank_pngs(tmp_path):
    rng = np.random.default_rng(0)
    records = [
        record("meanp", rng.integers(1, 30, 80).astype(float)),
        record("clip2video", rng.integers(1, 10, 80).astype(float), order_acc=66.0),
        record("meanp-dsl", rng.integers(1, 20, 80).astype(float), postprocess="dsl"),
    ]
    paths = write_plots(records, tmp_path / "out", n_boot=50)
    assert [p.name for p in paths] == ["recall_at_k.png", "rank_hist.png", "ablation_r1.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = mpimg.imread(path)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert pixels[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def test_ablation_bars_carry_intervals_and_order_accuracy(tmp_path, monkeypatch):
    import matplotlib.axes

    calls = []
    original = matplotlib.axes.Axes.bar

    def spy(self, x, height, *args, **kwargs):
        calls.append((np.asarray(height, dtype=float), kwargs.get("yerr"), kwargs.get("label")))
        return original(self, x, height, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", spy)
    ranks = np.array([1.0] * 30 + [5.0] * 70)
    plot_ablation([record("a", ranks), record("b", ranks, order_acc=80.0)], tmp_path / "bars.png", n_boot=100)
    labels = [c[2] for c in calls]
    assert labels == ["text-to-video R@1 (%)", "video-to-text R@1 (%)", "order accuracy (%)"]
    np.testing.assert_allclose(calls[0][0], [30.0, 30.0])
    assert calls[0][1].shape == (2, 2) and np.all(calls[0][1] > 0)  # non-degenerate error bars
    assert calls[2][1] is None and calls[2][0][1] == 80.0 and np.isnan(calls[2][0][0])
