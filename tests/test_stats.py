"""Bootstrap intervals and the paired bootstrap: known answers, coverage, power and null."""

from __future__ import annotations

import numpy as np
import pytest

from clip2video.errors import Clip2VideoError
from clip2video.report import stats
from clip2video.report.stats import METRIC_KEYS, bootstrap_ci, metrics_from_rank_vectors, paired_bootstrap


def test_point_metrics_match_hand_formulas():
    t2v = np.array([1.0, 2.0, 7.0, 12.0])
    v2t = np.array([1.0, 1.0, 3.0])
    m = metrics_from_rank_vectors(t2v, v2t)
    assert m["t2v_R1"] == pytest.approx(25.0)
    assert m["t2v_R5"] == pytest.approx(50.0)
    assert m["t2v_R10"] == pytest.approx(75.0)
    assert m["t2v_MdR"] == pytest.approx(4.5)
    assert m["t2v_MnR"] == pytest.approx(5.5)
    assert m["v2t_R1"] == pytest.approx(200.0 / 3)
    assert m["v2t_MdR"] == pytest.approx(1.0)
    assert m["v2t_MnR"] == pytest.approx(5.0 / 3)


def test_all_equal_ranks_give_zero_width_intervals():
    ci = bootstrap_ci(np.full(50, 3.0), np.full(20, 1.0), n_boot=200, seed=1)
    assert set(ci) == set(METRIC_KEYS)
    assert ci["t2v_R1"] == (0.0, 0.0)
    assert ci["t2v_R5"] == (100.0, 100.0)
    assert ci["t2v_MdR"] == (3.0, 3.0)
    assert ci["t2v_MnR"] == (3.0, 3.0)
    assert ci["v2t_R1"] == (100.0, 100.0)


def test_deterministic_by_seed_and_independent_of_chunking(monkeypatch):
    rng = np.random.default_rng(0)
    t2v, v2t = rng.integers(1, 30, 200).astype(float), rng.integers(1, 30, 100).astype(float)
    first = bootstrap_ci(t2v, v2t, n_boot=300, seed=5)
    assert bootstrap_ci(t2v, v2t, n_boot=300, seed=5) == first
    assert bootstrap_ci(t2v, v2t, n_boot=300, seed=6) != first
    monkeypatch.setattr(stats, "_CELLS_PER_CHUNK", 1000)  # 5 replicates per chunk
    assert bootstrap_ci(t2v, v2t, n_boot=300, seed=5) == first


def test_interval_matches_normal_theory_for_recall():
    """R@1 of n Bernoulli(p) queries: the bootstrap interval ~ p +- 1.96 sqrt(p(1-p)/n)."""
    rng = np.random.default_rng(3)
    n = 2000
    ranks = np.where(rng.random(n) < 0.3, 1.0, 5.0)
    p_hat = np.mean(ranks == 1)
    half = 100 * 1.96 * np.sqrt(p_hat * (1 - p_hat) / n)
    lo, hi = bootstrap_ci(ranks, ranks, n_boot=2000, seed=0)["t2v_R1"]
    assert lo == pytest.approx(100 * p_hat - half, abs=0.4)
    assert hi == pytest.approx(100 * p_hat + half, abs=0.4)


def test_coverage_on_a_known_distribution():
    """Over many samples from a known rank distribution, ~95% of intervals hold the true R@5 and MnR."""
    rng = np.random.default_rng(11)
    true_r5 = 100 * 5 / 20  # ranks uniform on 1..20
    true_mnr = 10.5
    trials, hits_r5, hits_mnr = 200, 0, 0
    for t in range(trials):
        ranks = rng.integers(1, 21, 150).astype(float)
        ci = bootstrap_ci(ranks, ranks[:10], n_boot=300, seed=t)
        hits_r5 += ci["t2v_R5"][0] <= true_r5 <= ci["t2v_R5"][1]
        hits_mnr += ci["t2v_MnR"][0] <= true_mnr <= ci["t2v_MnR"][1]
    # Binomial(200, 0.95) lies in [178, 200] with probability > 0.999; percentile intervals run a bit narrow.
    assert 175 <= hits_r5 <= 200
    assert 175 <= hits_mnr <= 200


def test_paired_detects_a_real_shift():
    rng = np.random.default_rng(2)
    b = rng.integers(1, 15, 400).astype(float)
    a = np.maximum(1.0, b - 3.0)  # model A ranks every query 3 places higher (better)
    diff = paired_bootstrap((a, a[:100]), (b, b[:100]), n_boot=500, seed=0)
    expected_r1 = 100 * (np.mean(a == 1) - np.mean(b == 1))
    assert diff["t2v_R1"].delta == pytest.approx(expected_r1)
    assert diff["t2v_R1"].significant and diff["t2v_R1"].lo > 0
    assert diff["t2v_MnR"].delta == pytest.approx(np.mean(a) - np.mean(b))
    assert diff["t2v_MnR"].significant and diff["t2v_MnR"].hi < 0
    assert diff["t2v_MnR"].p < 0.01


def test_paired_no_shift_is_not_significant():
    rng = np.random.default_rng(4)
    a = rng.integers(1, 15, 300).astype(float)
    same = paired_bootstrap((a, a), (a.copy(), a.copy()), n_boot=300, seed=0)
    for key, d in same.items():
        assert d.delta == 0.0 and (d.lo, d.hi) == (0.0, 0.0), key
        assert d.p == 1.0 and not d.significant, key
    # Two independent draws of the same distribution: no metric may look significant at this size.
    b = rng.permutation(a)
    null = paired_bootstrap((a, a), (b, b), n_boot=500, seed=0)
    assert all(d.delta == pytest.approx(0.0) for key, d in null.items() if not key.endswith("MdR"))
    assert not null["t2v_MnR"].significant


def test_paired_pairs_the_queries():
    """A and B vary together per query: pairing removes that variance, unpaired intervals would not."""
    rng = np.random.default_rng(8)
    base = rng.integers(1, 50, 300).astype(float)
    a, b = base, base + 1.0
    d = paired_bootstrap((a, a), (b, b), n_boot=300, seed=0)["t2v_MnR"]
    assert (d.delta, d.lo, d.hi) == pytest.approx((-1.0, -1.0, -1.0))


def test_mismatched_query_sets_are_an_error():
    with pytest.raises(Clip2VideoError, match="different query sets"):
        paired_bootstrap((np.ones(5), np.ones(5)), (np.ones(6), np.ones(5)))
    with pytest.raises(Clip2VideoError, match="NaN"):
        bootstrap_ci(np.array([1.0, np.nan]), np.ones(2))
