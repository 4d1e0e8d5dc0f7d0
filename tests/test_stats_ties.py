"""Records v2 keep the exact QueryRanks; intervals and curves of tied ranks go through the core."""

from __future__ import annotations

import numpy as np
import pytest

from clip2video.engine.records import RecordError, read_run_record, write_run_record
from clip2video.metrics import (
    RECALL_KS,
    TIE_POLICIES,
    V2T_CONVENTIONS,
    metrics_from_ranks,
    query_ranks,
    recall_at,
    retrieval_metrics,
)
from clip2video.metrics.bootstrap import SeedRun, bootstrap_ci, paired_difference, two_level_bootstrap

POLICY_CONVENTIONS = [
    (p, c) for p in TIE_POLICIES for c in V2T_CONVENTIONS if not (p == "legacy" and c == "first-hit")
]


def _twin_matrix(n: int = 40, seed: int = 0) -> np.ndarray:
    """Each caption ties its own video with one other video (a reversed twin seen by meanp)."""
    rng = np.random.default_rng(seed)
    sim = rng.normal(size=(n, n))
    for i in range(n):
        sim[i, i] = sim[i].max() + 1.0
        sim[i, (i + 1) % n] = sim[i, i]
    return sim


def _multi(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cv = np.repeat(np.arange(20), 3)
    sim = np.round(rng.normal(size=(60, 20)), 1)
    sim[np.arange(60), cv] += 0.7
    return sim, cv


@pytest.mark.parametrize(("policy", "convention"), POLICY_CONVENTIONS)
def test_record_round_trip_rebuilds_the_exact_query_ranks(tmp_path, policy, convention):
    sim, cv = _multi()
    ranks = query_ranks(sim, cv, tie_policy=policy, v2t=convention)
    metrics = retrieval_metrics(sim, cv, tie_policy=policy, v2t=convention)
    wins = np.where(cv % 4 == 0, np.nan, 1.0)
    write_run_record(
        tmp_path / "row",
        name="row",
        metrics=metrics,
        ranks=ranks,
        caption_video=cv,
        extra={"model": "tdb", "seed": 2},
        fingerprint={"platform": {"cpu": "x"}},
        arrays={"order_wins": wins},
    )
    record = read_run_record(tmp_path / "row")
    rebuilt = record.query_ranks()
    assert metrics_from_ranks(rebuilt) == metrics  # exact
    for key, value in ranks.__dict__.items():
        np.testing.assert_array_equal(getattr(rebuilt, key), value, err_msg=key)
    np.testing.assert_array_equal(record.caption_video, cv)
    np.testing.assert_array_equal(record.arrays["order_wins"], wins)
    assert (record.model, record.seed, record.fingerprint) == ("tdb", 2, {"platform": {"cpu": "x"}})
    for direction in ("t2v", "v2t"):  # the curve is the core's: equal to the metrics at 1/5/10
        curve = record.recall_curve(direction, np.array(RECALL_KS))
        assert curve.tolist() == [metrics[f"{direction}_R{k}"] for k in RECALL_KS]


def test_recall_at_matches_the_metrics_for_expanded_legacy():
    sim = _twin_matrix()
    cv = np.arange(len(sim))
    ranks = query_ranks(sim, cv, tie_policy="legacy")
    metrics = metrics_from_ranks(ranks)
    assert ranks.expanded("t2v") and metrics["t2v_ties"] > 0
    assert recall_at(ranks, "t2v", [1, 5, 10]).tolist() == [metrics[f"t2v_R{k}"] for k in (1, 5, 10)]


def test_records_need_a_layout_for_several_captions(tmp_path):
    sim, cv = _multi()
    ranks = query_ranks(sim, cv)
    with pytest.raises(RecordError, match="caption_video"):
        write_run_record(tmp_path / "r", name="r", metrics={}, ranks=ranks)
    with pytest.raises(RecordError, match="integer ranks"):
        write_run_record(tmp_path / "r", name="r", metrics={}, ranks_t2v=[1.5], ranks_v2t=[1.0])


def test_old_record_versions_are_refused_with_a_fix(tmp_path):
    sim = _twin_matrix()
    write_run_record(tmp_path / "r", name="r", metrics={}, ranks=query_ranks(sim, np.arange(len(sim))))
    path = tmp_path / "r" / "metrics.json"
    path.write_text(path.read_text().replace('"version": 2', '"version": 1'))
    with pytest.raises(RecordError, match="version 1.*rerun the suite"):
        read_run_record(tmp_path / "r")


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


def test_paired_bootstrap_sees_the_half_credit():
    sim = _twin_matrix()
    cv = np.arange(sim.shape[0])
    tied = two_level_bootstrap([SeedRun(query_ranks(sim, cv, tie_policy="mean"), cv)], n_boot=200)
    untied = sim.copy()
    untied[cv, (cv + 1) % len(cv)] -= 0.5
    clean = two_level_bootstrap([SeedRun(query_ranks(untied, cv, tie_policy="mean"), cv)], n_boot=200)
    diff = paired_difference(clean, tied)
    assert diff["t2v_R1"].delta == pytest.approx(50.0) and diff["t2v_R1"].lo > 0 and diff["t2v_R1"].p == 0.0
