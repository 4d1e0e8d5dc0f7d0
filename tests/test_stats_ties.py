"""Bootstrap intervals use per-query R@K contributions, so the `mean` tie policy is resampled right."""

from __future__ import annotations

import numpy as np
import pytest

from clip2video.engine.records import read_run_record, write_run_record
from clip2video.metrics import query_ranks, retrieval_metrics
from clip2video.report.stats import bootstrap_ci, paired_bootstrap, rank_metrics


def _twin_matrix(n: int = 40, seed: int = 0) -> np.ndarray:
    """Each caption ties its own video with one other video (a reversed twin seen by meanp)."""
    rng = np.random.default_rng(seed)
    sim = rng.normal(size=(n, n))
    for i in range(n):
        sim[i, i] = sim[i].max() + 1.0
        sim[i, (i + 1) % n] = sim[i, i]
    return sim


def test_hits_give_the_engine_recall_under_every_policy():
    sim = _twin_matrix()
    cv = np.arange(sim.shape[0])
    for policy in ("pessimistic", "optimistic", "mean"):
        ranks = query_ranks(sim, cv, tie_policy=policy)
        expected = retrieval_metrics(sim, cv, tie_policy=policy)
        for direction in ("t2v", "v2t"):
            hits = np.stack([ranks.hits(direction, k) for k in (1, 5, 10)], axis=1)
            got = rank_metrics(getattr(ranks, direction), hits=hits)
            for key in ("R1", "R5", "R10", "MnR"):
                assert got[key] == pytest.approx(expected[f"{direction}_{key}"]), (policy, direction, key)
    mean = query_ranks(sim, cv, tie_policy="mean")
    assert np.all(mean.hits("t2v", 1) == 0.5)  # own video and twin tie at the top


def test_interval_contains_the_point_value_under_mean_policy(tmp_path):
    sim = _twin_matrix()
    cv = np.arange(sim.shape[0])
    ranks = query_ranks(sim, cv, tie_policy="mean")
    metrics = retrieval_metrics(sim, cv, tie_policy="mean")
    assert metrics["t2v_R1"] == pytest.approx(50.0)
    write_run_record(tmp_path / "row", name="row", metrics=metrics, ranks=ranks)
    record = read_run_record(tmp_path / "row")
    for source in (ranks, record):
        ci = bootstrap_ci(source, n_boot=200, seed=0)
        assert ci["t2v_R1"] == pytest.approx((50.0, 50.0))  # every query contributes exactly 1/2
    naive = bootstrap_ci(ranks.t2v, ranks.v2t, n_boot=200, seed=0)  # ranks alone: 1.5 > 1
    assert naive["t2v_R1"] == (0.0, 0.0)


def test_paired_bootstrap_with_hits_sees_the_half_credit():
    sim = _twin_matrix()
    cv = np.arange(sim.shape[0])
    tied = query_ranks(sim, cv, tie_policy="mean")
    untied = sim.copy()
    untied[cv, (cv + 1) % len(cv)] -= 0.5
    clean = query_ranks(untied, cv, tie_policy="mean")
    diff = paired_bootstrap(clean, tied, n_boot=200, seed=0)
    assert diff["t2v_R1"].delta == pytest.approx(50.0) and diff["t2v_R1"].significant


def test_record_recall_curve_matches_the_engine_at_1_5_10(tmp_path):
    sim = _twin_matrix()
    cv = np.arange(sim.shape[0])
    for policy in ("pessimistic", "mean"):
        ranks = query_ranks(sim, cv, tie_policy=policy)
        metrics = retrieval_metrics(sim, cv, tie_policy=policy)
        write_run_record(tmp_path / policy, name=policy, metrics=metrics, ranks=ranks, tie_policy=policy)
        record = read_run_record(tmp_path / policy)
        for direction in ("t2v", "v2t"):
            curve = record.recall_curve(direction, np.array([1, 5, 10]))
            want = [metrics[f"{direction}_R{k}"] for k in (1, 5, 10)]
            assert curve == pytest.approx(want), (policy, direction)
