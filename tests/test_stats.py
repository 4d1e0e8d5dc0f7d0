"""The bootstrap goes through the metrics core: identity resamples, pairing, clusters, Holm, MDE."""

from __future__ import annotations

import numpy as np
import pytest

from clip2video.metrics import (
    TIE_POLICIES,
    V2T_CONVENTIONS,
    metrics_from_ranks,
    metrics_from_weights,
    query_ranks,
    retrieval_metrics,
)
from clip2video.metrics.bootstrap import (
    BootstrapError,
    SeedRun,
    bootstrap_ci,
    cluster_queries,
    holm,
    minimum_detectable_difference,
    paired_difference,
    per_query_bootstrap,
    replicate_statistics,
    run_statistics,
    two_level_bootstrap,
)

POLICY_CONVENTIONS = [
    (p, c) for p in TIE_POLICIES for c in V2T_CONVENTIONS if not (p == "legacy" and c == "first-hit")
]


def tied_sim(n_videos: int = 30, per_video: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Several captions per video, coarse scores (many exact ties, some at the ground truth)."""
    rng = np.random.default_rng(seed)
    cv = np.repeat(np.arange(n_videos), per_video)
    sim = np.round(rng.normal(size=(len(cv), n_videos)), 1)
    sim[np.arange(len(cv)), cv] += np.round(rng.normal(1.0, 1.0, len(cv)), 1)
    return sim, cv


@pytest.mark.parametrize(("policy", "convention"), POLICY_CONVENTIONS)
@pytest.mark.parametrize("per_video", [1, 3])
def test_identity_resample_is_the_point_value_exactly(policy, convention, per_video):
    sim, cv = tied_sim(per_video=per_video)
    ranks = query_ranks(sim, cv, tie_policy=policy, v2t=convention)
    point = retrieval_metrics(sim, cv, tie_policy=policy, v2t=convention)
    assert point["t2v_ties"] > 0  # the matrix really has ties
    t2v, v2t = cluster_queries(cv, sim.shape[1], np.arange(sim.shape[1]))
    np.testing.assert_array_equal(t2v, np.arange(len(cv)))
    np.testing.assert_array_equal(v2t, np.arange(sim.shape[1]))
    run = SeedRun(ranks, cv)
    assert run_statistics(run, t2v, v2t) == point  # exact, every key
    # a two-level summary's point is the mean of identical seeds: the same value, exactly
    summary = two_level_bootstrap([run, run], n_boot=5, seed=0)
    assert {k: summary.point(k) for k in point} == point


def test_a_replicate_is_the_core_on_the_drawn_clusters():
    """Replicate b: the seeds and videos drawn from default_rng([seed, 2, b]); the statistic is the
    mean over drawn seeds of metrics_from_ranks on those clusters (checked by hand here)."""
    sim, cv = tied_sim()
    runs = [
        SeedRun(query_ranks(sim + 0.05 * s * (cv[:, None] == 0), cv, tie_policy="mean"), cv) for s in range(3)
    ]
    summary = two_level_bootstrap(runs, n_boot=20, seed=7)
    for b in (0, 13):
        rng = np.random.default_rng([7, 2, b])
        seeds = rng.integers(0, 3, 3)
        videos = rng.integers(0, sim.shape[1], sim.shape[1])
        caps = np.concatenate([np.flatnonzero(cv == v) for v in videos])
        want = {}
        for key in ("t2v_R1", "v2t_MnR", "t2v_MdR"):
            per = [run_statistics(runs[s], np.sort(caps), np.sort(videos))[key] for s in seeds]
            want[key] = float(np.mean(per))
        got = replicate_statistics(runs, summary.resampling, b)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-12)
            # the vectorised summary equals the one-at-a-time reference (last-bit sums aside)
            assert summary.replicates[b, summary.keys.index(key)] == pytest.approx(
                got[key], rel=1e-12, abs=1e-12
            )


@pytest.mark.parametrize(("policy", "convention"), POLICY_CONVENTIONS)
def test_weighted_core_equals_take_on_every_resample(policy, convention):
    sim, cv = tied_sim(per_video=2)
    ranks = query_ranks(sim, cv, tie_policy=policy, v2t=convention)
    rng = np.random.default_rng(1)
    n, m = sim.shape
    t2v = np.vstack([np.ones(n, dtype=np.int64), rng.multinomial(n, np.full(n, 1 / n), size=6)])
    v2t = np.vstack([np.ones(m, dtype=np.int64), rng.multinomial(m, np.full(m, 1 / m), size=6)])
    fast = metrics_from_weights(ranks, t2v, v2t)
    for b in range(len(t2v)):
        ref = metrics_from_ranks(
            ranks.take(t2v=np.repeat(np.arange(n), t2v[b]), v2t=np.repeat(np.arange(m), v2t[b]))
        )
        for key, value in ref.items():
            if b == 0 or not key.split("_")[1].startswith("R") or policy != "mean":
                assert fast[key][b] == value, (b, key)  # identity, counts, medians, rank sums: exact
            else:
                assert fast[key][b] == pytest.approx(value, rel=1e-13), (b, key)


def test_results_do_not_depend_on_chunking(monkeypatch):
    from clip2video.metrics import bootstrap

    sim, cv = tied_sim()
    runs = [SeedRun(query_ranks(sim + s, cv, tie_policy="mean"), cv) for s in range(2)]
    whole = two_level_bootstrap(runs, n_boot=40, seed=2)
    monkeypatch.setattr(bootstrap, "_CELLS_PER_CHUNK", 3 * len(cv))  # 3 replicates per chunk
    np.testing.assert_array_equal(two_level_bootstrap(runs, n_boot=40, seed=2).replicates, whole.replicates)


def test_deterministic_given_the_seed():
    sim, cv = tied_sim()
    run = SeedRun(query_ranks(sim, cv), cv)
    a = two_level_bootstrap([run], n_boot=50, seed=3)
    b = two_level_bootstrap([run], n_boot=50, seed=3)
    c = two_level_bootstrap([run], n_boot=50, seed=4)
    np.testing.assert_array_equal(a.replicates, b.replicates)
    assert not np.array_equal(a.replicates, c.replicates)


def test_paired_identical_models_give_zero_and_p_one():
    sim, cv = tied_sim()
    runs = [SeedRun(query_ranks(sim + s, cv), cv) for s in range(3)]
    a = two_level_bootstrap(runs, n_boot=100, seed=0)
    b = two_level_bootstrap([SeedRun(r.ranks, r.caption_video) for r in runs], n_boot=100, seed=0)
    for key, d in paired_difference(a, b).items():
        assert (d.delta, d.lo, d.hi, d.p, d.se) == (0.0, 0.0, 0.0, 1.0, 0.0), key


def test_paired_detects_a_real_shift_and_pairs_seeds_and_clusters():
    sim, cv = tied_sim(n_videos=60)
    better = sim.copy()
    better[np.arange(len(cv)), cv] += 0.8
    a = two_level_bootstrap([SeedRun(query_ranks(better, cv), cv)] * 2, n_boot=300, seed=0)
    b = two_level_bootstrap([SeedRun(query_ranks(sim, cv), cv)] * 2, n_boot=300, seed=0)
    d = paired_difference(a, b)
    assert d["t2v_R1"].delta > 0 and d["t2v_R1"].lo > 0 and d["t2v_R1"].p < 0.01
    assert d["t2v_MnR"].delta < 0 and d["t2v_MnR"].hi < 0
    # pairing removes the between-cluster variance: the paired SE is below the unpaired one
    assert d["t2v_R1"].se < np.hypot(a.se("t2v_R1"), b.se("t2v_R1"))
    with pytest.raises(BootstrapError, match="same resamples"):
        paired_difference(a, two_level_bootstrap([SeedRun(query_ranks(sim, cv), cv)], n_boot=300, seed=0))


def test_cluster_intervals_are_wider_than_per_query_on_correlated_captions():
    """10 captions per video that succeed or fail together: clusters carry the real uncertainty."""
    rng = np.random.default_rng(5)
    n_videos, per = 60, 10
    cv = np.repeat(np.arange(n_videos), per)
    good = rng.random(n_videos) < 0.4
    sim = rng.normal(0, 0.01, size=(len(cv), n_videos))
    sim[np.arange(len(cv)), cv] += np.where(good[cv], 1.0, -1.0)
    run = SeedRun(query_ranks(sim, cv), cv)
    clustered = two_level_bootstrap([run], n_boot=400, seed=0)
    per_query = per_query_bootstrap(run, n_boot=400, seed=0)
    width = {
        name: s.interval("t2v_R1")[1] - s.interval("t2v_R1")[0]
        for name, s in (("cluster", clustered), ("query", per_query))
    }
    assert width["cluster"] > 2 * width["query"]  # ~ sqrt(10) in theory
    assert clustered.point("t2v_R1") == per_query.point("t2v_R1")


def test_seed_spread_enters_the_two_level_interval():
    sim, cv = tied_sim(n_videos=80, per_video=1)
    noisy = [
        SeedRun(query_ranks(sim + s * (np.arange(80)[None, :] % (s + 2) == 0), cv), cv) for s in range(3)
    ]
    alone = two_level_bootstrap(noisy[:1], n_boot=200, seed=0)
    spread = two_level_bootstrap(noisy, n_boot=200, seed=0)
    assert np.isnan(alone.std("t2v_R1")) and spread.std("t2v_R1") > 0
    assert spread.point("t2v_R1") == pytest.approx(np.mean(spread.per_seed[:, spread.keys.index("t2v_R1")]))


def test_shares_are_resampled_with_their_captions():
    sim, cv = tied_sim(per_video=2)
    wins = np.where(cv % 3 == 0, np.nan, (cv % 2).astype(float))  # NaN = no twin
    run = SeedRun(query_ranks(sim, cv), cv, shares={"order_acc": wins}, scalars={"order_changed_share": 12.0})
    point = run_statistics(run)
    assert point["order_acc"] == pytest.approx(100 * np.nanmean(wins))
    s = two_level_bootstrap([run], n_boot=200, seed=0)
    lo, hi = s.interval("order_acc")
    assert lo < point["order_acc"] < hi
    # a per-seed scalar of one seed does not vary: no interval, no test (not a spurious p = 0)
    assert np.isnan(s.interval("order_changed_share")).all() and np.isnan(s.se("order_changed_share"))
    other = SeedRun(run.ranks, cv, shares=run.shares, scalars={"order_changed_share": 30.0})
    d = paired_difference(two_level_bootstrap([other], n_boot=200, seed=0), s)["order_changed_share"]
    assert d.delta == 18.0 and np.isnan(d.p)
    two = two_level_bootstrap([run, other], n_boot=200, seed=0)
    assert two.interval("order_changed_share")[0] < two.interval("order_changed_share")[1]  # seed level


def test_holm_matches_a_hand_computed_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    got = holm([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(got[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(got[4])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    assert holm([]).shape == (0,)


def test_minimum_detectable_difference_from_the_standard_error():
    assert minimum_detectable_difference(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert minimum_detectable_difference(2.0, power=0.5) == pytest.approx(2 * 1.959964, abs=1e-5)


def test_bootstrap_ci_is_the_labelled_single_seed_per_query_interval():
    sim, cv = tied_sim(per_video=1)
    ranks = query_ranks(sim, cv)
    ci = bootstrap_ci(ranks, n_boot=200, seed=1)
    summary = per_query_bootstrap(SeedRun(ranks, cv), n_boot=200, seed=1)
    assert ci["t2v_R1"] == summary.interval("t2v_R1")
    assert summary.resampling.scheme == "per-query"
    with pytest.raises(BootstrapError, match="n_boot"):
        bootstrap_ci(ranks, n_boot=1)
