"""Each metric is defined once (issue 17 §4): adding one is one entry, and it reaches everything.

nDCG@10 is added with one ``register_metric`` line; R@50 with one entry of ``[eval] recall_ks``.
Both appear in the metrics, the bootstrap's weighted path (equal to the point value on the identity
resample), the tables (their columns and labels), the intervals and both drift layers (a lock that
does not hold a metric is drift).
"""

from __future__ import annotations

import numpy as np
import pytest

from clip2video.engine.records import read_run_record, write_run_record
from clip2video.metrics import (
    METRIC_KEYS,
    METRICS,
    TIE_POLICIES,
    Metric,
    PerQuery,
    metric_keys,
    metrics_from_ranks,
    metrics_from_weights,
    query_ranks,
    register_metric,
    retrieval_metrics,
)
from clip2video.metrics.bootstrap import SeedRun, per_query_bootstrap, two_level_bootstrap
from clip2video.report import drift
from clip2video.report.tables import build_suite_table

# ----------------------------------------------------------------------------- the one entry


def ndcg_at_10(ranks, direction):
    """nDCG@10 with one relevant item (ideal DCG 1): ``1 / log2(1 + rank)`` inside the top 10.

    Tied positions ``g + 1 .. g + e + 1``: ``mean`` takes their average gain, legacy's expanded
    entries count each; the other policies (and legacy's argsort path) take the query's rank."""
    higher, equal = (x.astype(np.int64) for x in ranks.counts(direction))
    if ranks.tie_policy == "mean" or ranks.expanded(direction):
        width = int(equal.max()) + 1
        position = higher[:, None] + 1 + np.arange(width)
        inside = np.arange(width)[None, :] <= equal[:, None]
        gains = np.where(inside & (position <= 10), 1.0 / np.log2(position + 1.0), 0.0).sum(1)
        if ranks.expanded(direction):
            return PerQuery("mean", gains, counts=equal + 1, scale=100.0)
        return PerQuery("mean", gains / (equal + 1), scale=100.0)
    rank = getattr(ranks, direction)
    return PerQuery("mean", np.where(rank <= 10, 1.0 / np.log2(rank + 1.0), 0.0), scale=100.0)


@pytest.fixture
def ndcg():
    metric = register_metric(Metric("nDCG10", "nDCG@10", ndcg_at_10))  # the one entry
    yield metric
    METRICS.unregister("nDCG10")


# ----------------------------------------------------------------------------- an independent reference


def _gain(rank: float) -> float:
    return 1.0 / np.log2(rank + 1.0) if rank <= 10 else 0.0


def brute_ndcg(sim: np.ndarray, cv: np.ndarray, policy: str) -> dict[str, float]:
    """nDCG@10 of both directions from the matrix itself (v2t: each video's own caption group, by
    its best caption, among all groups, as the official v2t)."""
    n, m = sim.shape
    groups = np.full((m, m), -np.inf)  # groups[v, u]: best caption of video u scored on video v
    for c in range(n):
        groups[:, cv[c]] = np.maximum(groups[:, cv[c]], sim[c])
    out = {}
    several = n > m
    for direction, rows, truth in (("t2v", sim, cv), ("v2t", groups, np.arange(m))):
        entries, weights = [], []
        for q in range(len(rows)):
            score = rows[q, truth[q]]
            g = int(np.sum(rows[q] > score))
            e = int(np.sum(rows[q] == score)) - 1
            positions = [g + 1 + j for j in range(e + 1)]
            if policy == "pessimistic":
                entries.append(_gain(g + e + 1)), weights.append(1)
            elif policy == "optimistic":
                entries.append(_gain(g + 1)), weights.append(1)
            elif policy == "mean":
                entries.append(np.mean([_gain(p) for p in positions])), weights.append(1)
            elif direction == "t2v" and several:  # legacy, double argsort: ties broken by index
                before = int(np.sum((rows[q] == score) & (np.arange(m) < truth[q])))
                entries.append(_gain(g + before + 1)), weights.append(1)
            else:  # legacy np.where: every tied position is an entry
                entries.append(sum(_gain(p) for p in positions)), weights.append(e + 1)
        out[f"{direction}_nDCG10"] = 100.0 * sum(entries) / sum(weights)
    return out


LAYOUTS = {"one caption each": np.arange(12), "several": np.repeat(np.arange(6), [1, 3, 2, 1, 4, 1])}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("policy", TIE_POLICIES)
def test_one_entry_gives_the_metric_under_every_tie_policy(ndcg, layout, policy) -> None:
    cv = LAYOUTS[layout]
    rng = np.random.default_rng(7)
    sim = rng.integers(0, 4, size=(len(cv), int(cv.max()) + 1)).astype(np.float64)  # many ties
    ranks = query_ranks(sim, cv, tie_policy=policy)
    got = metrics_from_ranks(ranks)
    for key, value in brute_ndcg(sim, cv, policy).items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert list(got) == list(metric_keys())  # t2v_..._nDCG10 after MnR, then v2t, then the ties
    assert list(got)[:6] == ["t2v_R1", "t2v_R5", "t2v_R10", "t2v_MdR", "t2v_MnR", "t2v_nDCG10"]
    ones = metrics_from_weights(ranks, np.ones((1, len(cv)), int), np.ones((1, cv.max() + 1), int))
    assert {k: float(v[0]) for k, v in ones.items()} == got, "the identity resample is the point value"
    assert "t2v_nDCG10" not in METRIC_KEYS, "METRIC_KEYS stays the default keys"


def test_the_weighted_path_is_the_same_definition(ndcg) -> None:
    """A resample given as multiplicities equals the point value of the repeated queries."""
    cv = LAYOUTS["several"]
    sim = np.random.default_rng(3).integers(0, 3, size=(len(cv), 6)).astype(np.float32)
    for policy in TIE_POLICIES:
        ranks = query_ranks(sim, cv, tie_policy=policy)
        w_t2v = np.random.default_rng(1).integers(0, 3, size=(4, len(cv)))
        w_v2t = np.random.default_rng(2).integers(1, 3, size=(4, 6))
        weighted = metrics_from_weights(ranks, w_t2v, w_v2t)
        for b in range(4):
            taken = ranks.take(np.repeat(np.arange(len(cv)), w_t2v[b]), np.repeat(np.arange(6), w_v2t[b]))
            point = metrics_from_ranks(taken)
            for key in ("t2v_nDCG10", "v2t_nDCG10", "t2v_R5", "v2t_MdR"):
                assert weighted[key][b] == pytest.approx(point[key], abs=1e-12), (policy, key)


def test_recall_cut_offs_are_a_setting() -> None:
    sim = np.random.default_rng(0).normal(size=(60, 60))
    got = retrieval_metrics(sim, np.arange(60), recall_ks=[1, 5, 10, 50])
    assert [k for k in got if k.startswith("t2v_R")] == ["t2v_R1", "t2v_R5", "t2v_R10", "t2v_R50"]
    ranks = query_ranks(sim, np.arange(60))
    assert got["t2v_R50"] == float(np.sum(ranks.t2v <= 50)) * 100 / 60
    default = retrieval_metrics(sim, np.arange(60))
    assert {k: got[k] for k in default} == default, "adding a cut-off changes no other number"
    with pytest.raises(ValueError, match="recall_ks"):
        retrieval_metrics(sim, np.arange(60), recall_ks=[5, 5])


# ----------------------------------------------------------------------------- tables, intervals, drift


def _records(tmp_path, recall_ks):
    """Two models (meanp the reference, tdb better), two seeds each, as run records."""
    cv = np.repeat(np.arange(80), 2)
    records = []
    for model, signal in (("meanp", 1), ("tdb", 2)):
        for seed in (0, 1):
            rng = np.random.default_rng([seed, signal])
            sim = rng.normal(size=(160, 80)) + signal * (np.arange(80)[None, :] == cv[:, None])
            ranks = query_ranks(sim, cv, tie_policy="pessimistic")
            name = f"{model}-s{seed}"
            folder = write_run_record(
                tmp_path / "runs" / name,
                name=name,
                metrics=metrics_from_ranks(ranks, recall_ks=recall_ks),
                ranks=ranks,
                caption_video=cv,
                protocol="synthetic",
                config={"eval": {"recall_ks": list(recall_ks)}},
                extra={"model": model, "seed": seed},
            )
            records.append(read_run_record(folder))
    return records


def test_a_new_metric_and_a_new_cut_off_reach_tables_intervals_and_drift(tmp_path, ndcg) -> None:
    records = _records(tmp_path, (1, 5, 10, 50))
    table = build_suite_table(records, n_boot=50)
    for column in ("t2v R@50", "v2t R@50", "t2v nDCG@10", "v2t nDCG@10"):
        assert column in table.main.columns and column in table.per_query.columns, column
        assert column in table.significance.columns, column  # paired test vs meanp
    cell = table.main.loc["tdb", "t2v nDCG@10"]
    assert "±" in cell and "[" in cell, cell  # mean ± std [two-level interval]
    values = table.values[(table.values.seed == "mean") & (table.values.row == "tdb")].set_index("metric")
    for key in ("t2v_R50", "t2v_nDCG10", "v2t_nDCG10"):
        lo, hi = values.loc[key, ["lo", "hi"]]
        assert lo <= values.loc[key, "value"] <= hi and lo < hi, key
    runs = [SeedRun(r.query_ranks(), r.caption_video, recall_ks=(1, 5, 10, 50)) for r in records[2:]]
    summary = two_level_bootstrap(runs, n_boot=50)
    assert summary.interval("t2v_nDCG10") == pytest.approx(tuple(values.loc["t2v_nDCG10", ["lo", "hi"]]))
    assert "t2v_R50" in per_query_bootstrap(runs[0], n_boot=20).keys

    # the training drift layer: a lock of a run made before the metric existed flags it
    METRICS.unregister("nDCG10")
    old_lock = drift.suite_metrics(_records(tmp_path / "before", (1, 5, 10, 50)), n_boot=20)
    register_metric(ndcg)
    new = drift.suite_metrics(records, n_boot=20)
    assert "t2v_nDCG10" in new["tdb-s0"]["intervals"]
    found = {(d.model, d.metric): d for d in drift.compare(old_lock, new, mode="exact")}
    assert set(found) == {(row, f"{d}_nDCG10") for row in new for d in ("t2v", "v2t")}
    assert "not in the baseline" in found[("tdb-s0", "t2v_nDCG10")].tolerance
    assert drift.compare(new, new, mode="exact") == []
    assert drift.seed_tolerances({"tdb": [new["tdb-s0"]["metrics"]]}, {"tdb": 60})["tdb"]["t2v_nDCG10"] == (
        pytest.approx(100.0 / 60)
    ), "a percent metric's drift floor is one query's share (the definition's unit)"


def test_the_evaluation_drift_layer_flags_a_metric_its_lock_lacks() -> None:
    from clip2video.experiments.drift_runs import EvalRun, ModelEval
    from clip2video.report.eval_drift import compare_eval

    sim = np.eye(3, dtype=np.float32)
    locked = {"settings": {}, "models": {"meanp": {"metrics": {"t2v_R1": 100.0}, "sim": sim.tolist()}}}
    run = EvalRun(settings={}, models={"meanp": ModelEval({"t2v_R1": 100.0, "t2v_nDCG10": 100.0}, sim)})
    (moved,) = compare_eval(locked, run)
    assert (moved.model, moved.what, moved.locked) == ("meanp", "t2v_nDCG10", "absent")


def test_a_suite_names_its_cut_offs_and_a_bad_list_fails_before_any_work(tmp_path) -> None:
    from clip2video.experiments.suite import SuiteError, load_suite

    suite = tmp_path / "mine.toml"
    base = 'name = "mine"\nprotocol = "synthetic"\nmodels = ["meanp"]\n[eval]\n'
    suite.write_text(base + "recall_ks = [1, 5, 10, 50]\n")
    assert load_suite(str(suite)).settings["eval"]["recall_ks"] == [1, 5, 10, 50]
    suite.write_text(base + "recall_ks = [5, 0]\n")
    with pytest.raises(SuiteError, match=r"mine.toml: eval.recall_ks must be a non-empty list of positive"):
        load_suite(str(suite))
