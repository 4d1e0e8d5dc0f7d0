"""The ranking core against brute force, against the official formulas (re-written here), under
ties, chunked against full, across input types, and its input errors."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch

from clip2video.metrics import (
    METRIC_KEYS,
    TIE_POLICIES,
    QueryRanks,
    metrics_from_ranks,
    query_ranks,
    ranks_from_scores,
    retrieval_metrics,
)

KS = (1, 5, 10)


# ----------------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------------


def tie_free(num_captions: int, num_videos: int, seed: int) -> np.ndarray:
    """A matrix whose entries are all distinct (a shuffled range), so no tie can occur."""
    rng = np.random.default_rng(seed)
    return rng.permutation(num_captions * num_videos).reshape(num_captions, num_videos) / 7.0


def rank_in_sorted(scored: list[tuple[float, int]], is_gt) -> int:
    """1-based position of the first candidate satisfying ``is_gt`` in a descending list."""
    ordered = sorted(scored, key=lambda item: -item[0])
    for position, (_, candidate) in enumerate(ordered):
        if is_gt(candidate):
            return position + 1
    raise AssertionError("ground truth not found")


def brute_t2v(sim: np.ndarray, cv: list[int]) -> list[int]:
    return [
        rank_in_sorted([(sim[i][j], j) for j in range(sim.shape[1])], lambda j, v=cv[i]: j == v)
        for i in range(sim.shape[0])
    ]


def brute_v2t_official(sim: np.ndarray, cv: list[int]) -> list[int]:
    ranks = []
    for v in range(sim.shape[1]):
        groups = []
        for u in range(sim.shape[1]):
            groups.append((max(sim[c][v] for c in range(len(cv)) if cv[c] == u), u))
        ranks.append(rank_in_sorted(groups, lambda u, v=v: u == v))
    return ranks


def brute_v2t_first_hit(sim: np.ndarray, cv: list[int]) -> list[int]:
    ranks = []
    for v in range(sim.shape[1]):
        scored = [(sim[c][v], c) for c in range(len(cv))]
        ranks.append(rank_in_sorted(scored, lambda c, v=v: cv[c] == v))
    return ranks


def brute_metrics(ranks: list[float], prefix: str, *, lower_median: bool = False) -> dict[str, float]:
    out = {f"{prefix}_R{k}": 100.0 * sum(r <= k for r in ranks) / len(ranks) for k in KS}
    out[f"{prefix}_MdR"] = float(statistics.median_low(ranks) if lower_median else statistics.median(ranks))
    out[f"{prefix}_MnR"] = float(statistics.mean(ranks))
    return out


def official_sorted_where(x: np.ndarray) -> dict[str, float]:
    """The official single-caption formula, in my words: sort each row's negated scores, find
    where the negated diagonal sits (every matching position counts), average positions."""
    negated_sorted = np.sort(-x, axis=1)
    positions = np.nonzero(negated_sorted == -np.diag(x)[:, None])[1]
    out = {f"R{k}": float(np.sum(positions < k)) * 100 / len(positions) for k in KS}
    out["MdR"] = float(np.median(positions) + 1)
    out["MnR"] = float(np.mean(positions) + 1)
    return out


def official_multi(sim: np.ndarray, cv: np.ndarray) -> dict[str, float]:
    """The official several-captions path, in my words: pad each video's captions into a
    [videos, max_captions, videos] block with -inf, t2v by a double stable argsort, torch's
    (lower) median, v2t = the single-caption formula on the group-max matrix."""
    num_videos = sim.shape[1]
    groups = [np.flatnonzero(cv == v) for v in range(num_videos)]
    width = max(len(g) for g in groups)
    block = np.full((num_videos, width, num_videos), -np.inf)
    for v, g in enumerate(groups):
        block[v, : len(g)] = sim[g]
    t2v = []
    for v in range(num_videos):
        for c in range(len(groups[v])):
            order = np.argsort(-block[v, c], kind="stable")
            t2v.append(int(np.argsort(order, kind="stable")[v]))
    t2v = np.array(t2v)
    out = {f"t2v_R{k}": float(np.sum(t2v < k)) * 100 / len(t2v) for k in KS}
    out["t2v_MdR"] = float(torch.median(torch.from_numpy(t2v + 1)))
    out["t2v_MnR"] = float(np.mean(t2v + 1))
    group_max = block.max(axis=1).T  # [query video v, group u]
    out.update({f"v2t_{k}": value for k, value in official_sorted_where(group_max).items()})
    return out


def counts_by_loops(scores: list[float], gt_index: int, exclude: set[int]) -> tuple[int, int]:
    """(candidates strictly above the ground truth, candidates equal to it), by plain loops."""
    gt = scores[gt_index]
    higher = sum(1 for j, s in enumerate(scores) if j not in exclude and s > gt)
    equal = sum(1 for j, s in enumerate(scores) if j not in exclude and s == gt)
    return higher, equal


def policy_metrics(counts: list[tuple[int, int]], policy: str, prefix: str) -> dict[str, float]:
    """Metrics from (higher, equal) counts under pessimistic / optimistic / mean, by hand."""
    if policy == "pessimistic":
        return brute_metrics([1 + g + e for g, e in counts], prefix)
    if policy == "optimistic":
        return brute_metrics([1 + g for g, e in counts], prefix)
    out = brute_metrics([1 + g + e / 2 for g, e in counts], prefix)
    for k in KS:  # expected R@K: the share of the e + 1 equally likely positions that are <= k
        hits = [sum(1 for p in range(1 + g, 2 + g + e) if p <= k) / (e + 1) for g, e in counts]
        out[f"{prefix}_R{k}"] = 100.0 * sum(hits) / len(counts)
    return out


def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def pick(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith(prefix + "_") and not k.endswith("ties")}


# ----------------------------------------------------------------------------------------------
# Brute force on tie-free matrices
# ----------------------------------------------------------------------------------------------

LAYOUTS = {
    "single": np.arange(9),
    "variable": np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 4, 4]),  # video 1 has one caption
    "unordered": np.array([2, 0, 1, 2, 0, 3, 1, 2, 3, 0, 4, 2]),  # groups not contiguous
    "one": np.array([0]),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("policy", TIE_POLICIES)
def test_tie_free_matches_brute_force(layout: str, policy: str) -> None:
    cv = LAYOUTS[layout]
    sim = tie_free(len(cv), int(cv.max()) + 1, seed=len(cv))
    got = retrieval_metrics(sim, cv, tie_policy=policy)
    single = len(cv) == sim.shape[1] and len(set(cv.tolist())) == len(cv)
    expected = brute_metrics(brute_t2v(sim, cv.tolist()), "t2v", lower_median=not single)
    expected |= brute_metrics(brute_v2t_official(sim, cv.tolist()), "v2t")
    assert set(got) == set(METRIC_KEYS)
    assert got["t2v_ties"] == 0 and got["v2t_ties"] == 0
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize("layout", ["single", "variable", "unordered"])
def test_first_hit_matches_brute_force(layout: str) -> None:
    cv = LAYOUTS[layout]
    sim = tie_free(len(cv), int(cv.max()) + 1, seed=3)
    got = retrieval_metrics(sim, cv, v2t="first-hit")
    expected = brute_metrics(brute_v2t_first_hit(sim, cv.tolist()), "v2t")
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    if layout == "single":  # one caption per video: first-hit is the official transpose
        assert pick(got, "v2t") == pick(retrieval_metrics(sim, cv), "v2t")


def test_first_hit_differs_from_official_where_it_should() -> None:
    # video 0's captions: a strong one and a weak one; video 1's single caption sits between them
    sim = np.array([[0.9, 0.0], [0.1, 0.0], [0.5, 0.8]])
    cv = np.array([0, 0, 1])
    official = query_ranks(sim, cv).v2t
    first_hit = query_ranks(sim, cv, v2t="first-hit").v2t
    assert official.tolist() == [1.0, 1.0] and first_hit.tolist() == [1.0, 1.0]
    sim[0, 0] = 0.4  # now video 1's caption (0.5) beats video 0's best (0.4) on video 0
    assert query_ranks(sim, cv).v2t[0] == 2.0
    assert query_ranks(sim, cv, v2t="first-hit").v2t[0] == 2.0
    sim[1, 0] = 0.45  # video 0's second caption: still below video 1's; ranks unchanged
    assert query_ranks(sim, cv, v2t="first-hit").v2t.tolist() == [2.0, 1.0]


def test_single_query() -> None:
    got = retrieval_metrics(np.array([[0.3]]), [0])
    assert got == {
        **{f"{d}_R{k}": 100.0 for d in ("t2v", "v2t") for k in KS},
        **{f"{d}_{m}": 1.0 for d in ("t2v", "v2t") for m in ("MdR", "MnR")},
        "t2v_ties": 0.0,
        "v2t_ties": 0.0,
    }


# ----------------------------------------------------------------------------------------------
# The official formulas
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", TIE_POLICIES)
@pytest.mark.parametrize("n", [1, 10, 24, 37])
def test_single_caption_equals_official_exactly(policy: str, n: int) -> None:
    sim = tie_free(n, n, seed=n)
    got = retrieval_metrics(sim, np.arange(n), tie_policy=policy)
    assert pick(got, "t2v") == prefixed(official_sorted_where(sim), "t2v")
    assert pick(got, "v2t") == prefixed(official_sorted_where(sim.T), "v2t")


@pytest.mark.parametrize("policy", TIE_POLICIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_caption_equals_official_exactly(policy: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, size=14)  # an even number of captions for some seeds
    cv = np.repeat(np.arange(14), counts)
    sim = tie_free(len(cv), 14, seed=seed)
    got = retrieval_metrics(sim, cv, tie_policy=policy, chunk_size=5)
    expected = official_multi(sim, cv)
    assert {k: got[k] for k in expected} == expected


def test_multi_caption_median_is_the_lower_middle_value() -> None:
    # two captions per video, 2 videos -> 4 t2v ranks [1, 2, 1, 2]: lower median 1, numpy's 1.5
    sim = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.7, 0.3]])
    cv = np.array([0, 0, 1, 1])
    got = retrieval_metrics(sim, cv)
    assert query_ranks(sim, cv).t2v.tolist() == [1.0, 2.0, 1.0, 2.0]
    assert got["t2v_MdR"] == 1.0 and got["t2v_MnR"] == 1.5


# ----------------------------------------------------------------------------------------------
# Ties
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 7])
def test_constant_matrix(n: int) -> None:
    sim = np.full((n, n), 0.25)
    cv = np.arange(n)
    mean = retrieval_metrics(sim, cv, tie_policy="mean")
    pessimistic = retrieval_metrics(sim, cv)
    optimistic = retrieval_metrics(sim, cv, tie_policy="optimistic")
    for d in ("t2v", "v2t"):
        assert mean[f"{d}_R1"] == pytest.approx(100.0 / n)
        assert mean[f"{d}_MnR"] == pytest.approx((n + 1) / 2)
        assert pessimistic[f"{d}_MdR"] == n and pessimistic[f"{d}_MnR"] == n
        assert optimistic[f"{d}_R1"] == 100.0
        if n > 1:
            assert pessimistic[f"{d}_R1"] == 0.0
            assert pessimistic[f"{d}_ties"] == n
    legacy = retrieval_metrics(sim, cv, tie_policy="legacy")
    assert pick(legacy, "t2v") == prefixed(official_sorted_where(sim), "t2v")


HAND = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [5.0, 1.0, 0.0]])


def test_legacy_hand_computed_3x3() -> None:
    # t2v: row 0 ties 1 other at the top -> positions {0, 1}; row 1 likewise -> {0, 1};
    #      row 2 has 2 above, no tie -> {2}.  Entries [0, 1, 0, 1, 2] (5 entries for 3 queries).
    # v2t: column 0: 5 above, no tie -> {1}; column 1: top -> {0}; column 2: 2 above, ties 1 -> {1, 2}.
    got = retrieval_metrics(HAND, [0, 1, 2], tie_policy="legacy")
    assert got["t2v_R1"] == pytest.approx(100 * 2 / 5)
    assert got["t2v_R5"] == 100.0
    assert got["t2v_MdR"] == 2.0  # median of [0, 0, 1, 1, 2] + 1
    assert got["t2v_MnR"] == pytest.approx(1 + 4 / 5)
    assert got["v2t_R1"] == pytest.approx(100 * 1 / 4)
    assert got["v2t_MdR"] == 2.0  # median of [0, 1, 1, 2] + 1
    assert got["v2t_MnR"] == pytest.approx(1 + 4 / 4)
    assert (got["t2v_ties"], got["v2t_ties"]) == (2.0, 1.0)
    ranks = query_ranks(HAND, [0, 1, 2], tie_policy="legacy")
    entries, query = ranks.entries("t2v")
    assert entries.tolist() == [1, 2, 1, 2, 3] and query.tolist() == [0, 0, 1, 1, 2]
    assert ranks.v2t_entries.tolist() == [2, 1, 2, 3]
    assert pick(got, "t2v") == prefixed(official_sorted_where(HAND), "t2v")
    assert pick(got, "v2t") == prefixed(official_sorted_where(HAND.T), "v2t")


def test_other_policies_on_the_hand_case() -> None:
    pessimistic = query_ranks(HAND, [0, 1, 2])
    optimistic = query_ranks(HAND, [0, 1, 2], tie_policy="optimistic")
    mean = query_ranks(HAND, [0, 1, 2], tie_policy="mean")
    assert pessimistic.t2v.tolist() == [2, 2, 3] and pessimistic.v2t.tolist() == [2, 1, 3]
    assert optimistic.t2v.tolist() == [1, 1, 3] and optimistic.v2t.tolist() == [2, 1, 2]
    assert mean.t2v.tolist() == [1.5, 1.5, 3] and mean.v2t.tolist() == [2, 1, 2.5]
    assert pessimistic.t2v_tied.tolist() == [True, True, False]
    assert metrics_from_ranks(mean)["t2v_R1"] == pytest.approx(100 * (0.5 + 0.5 + 0) / 3)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_legacy_equals_official_on_random_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sim = rng.integers(0, 4, size=(11, 11)).astype(np.float64)  # many ties
    got = retrieval_metrics(sim, np.arange(11), tie_policy="legacy", chunk_size=3)
    assert pick(got, "t2v") == prefixed(official_sorted_where(sim), "t2v")
    assert pick(got, "v2t") == prefixed(official_sorted_where(sim.T), "v2t")
    cv = np.repeat(np.arange(5), [3, 1, 2, 3, 2])
    sim = rng.integers(0, 3, size=(11, 5)).astype(np.float64)
    got = retrieval_metrics(sim, cv, tie_policy="legacy", chunk_size=4)
    expected = official_multi(sim, cv)
    assert {k: got[k] for k in expected} == expected


@pytest.mark.parametrize("policy", ["pessimistic", "optimistic", "mean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_policies_on_random_ties_by_loops(policy: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cv = np.array([1, 0, 2, 1, 3, 0, 2, 2, 4, 3])
    sim = rng.integers(0, 3, size=(len(cv), 5)).astype(np.float32)
    got = retrieval_metrics(sim, cv, tie_policy=policy, chunk_size=3)
    rows = sim.tolist()
    t2v = [counts_by_loops(rows[i], cv[i], {cv[i]}) for i in range(len(cv))]
    v2t = []
    for v in range(5):
        groups = [max(rows[c][v] for c in range(len(cv)) if cv[c] == u) for u in range(5)]
        v2t.append(counts_by_loops(groups, v, {v}))
    expected = policy_metrics(t2v, policy, "t2v") | policy_metrics(v2t, policy, "v2t")
    expected["t2v_MdR"] = float(
        statistics.median_low(
            [{"pessimistic": 1 + g + e, "optimistic": 1 + g, "mean": 1 + g + e / 2}[policy] for g, e in t2v]
        )
    )
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    assert got["t2v_ties"] == sum(e > 0 for _, e in t2v)
    assert got["v2t_ties"] == sum(e > 0 for _, e in v2t)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extreme_scores_count_like_comparisons(seed: int) -> None:
    """Scores at float32's extremes, ground truths among them, tie and rank exactly as comparisons
    say; a row holding both extremes (whose sum overflows) is not mistaken for a non-finite row.
    (+-inf itself is an error like NaN: test_infinite_scores_are_an_error_naming_the_rows.)"""
    rng = np.random.default_rng(seed)
    big = np.finfo(np.float32).max
    cv = np.array([0, 1, 1, 2, 3, 3, 4, 0])
    sim = rng.integers(0, 3, size=(len(cv), 5)).astype(np.float32)
    sim[rng.random(sim.shape) < 0.3] = big
    sim[rng.random(sim.shape) < 0.2] = -big
    sim[0, :2] = [big, -big]
    sim[1, :2] = [big, big]  # the row sum overflows to inf
    rows = sim.tolist()
    for policy in ("pessimistic", "optimistic", "mean"):
        got = retrieval_metrics(sim, cv, tie_policy=policy, chunk_size=3)
        t2v = [counts_by_loops(rows[i], cv[i], {cv[i]}) for i in range(len(cv))]
        v2t = []
        for v in range(5):
            groups = [max(rows[c][v] for c in range(len(cv)) if cv[c] == u) for u in range(5)]
            v2t.append(counts_by_loops(groups, v, {v}))
        expected = policy_metrics(v2t, policy, "v2t")
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-12), (policy, key)
        ranks = query_ranks(sim, cv, tie_policy=policy)
        assert ranks.t2v_higher.tolist() == [g for g, _ in t2v]
        assert ranks.t2v_equal.tolist() == [e for _, e in t2v]


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_scores_are_an_error_naming_the_rows(value: float) -> None:
    """Issue 10 item 10: +-inf is refused like NaN, naming the rows, on the matrix and chunked paths."""
    sim = np.random.default_rng(0).random((6, 3)).astype(np.float32)
    sim[4, 1] = value
    with pytest.raises(ValueError, match=r"\+-inf or NaN in 1 row\(s\): \[4\]"):
        retrieval_metrics(sim, np.array([0, 0, 1, 1, 2, 2]))
    with pytest.raises(ValueError, match=r"\+-inf or NaN in row\(s\) \[4\]"):
        ranks_from_scores(
            lambda a, b: torch.from_numpy(sim[a:b]), np.array([0, 0, 1, 1, 2, 2]), 3, chunk_size=2
        )


def test_first_hit_ties_ignore_own_captions() -> None:
    # video 0 has two captions tied at its best score; video 1's caption ties them too
    sim = np.array([[0.5, 0.1], [0.5, 0.2], [0.5, 0.9]])
    cv = np.array([0, 0, 1])
    pessimistic = query_ranks(sim, cv, v2t="first-hit")
    optimistic = query_ranks(sim, cv, v2t="first-hit", tie_policy="optimistic")
    assert pessimistic.v2t_higher.tolist() == [0, 0] and pessimistic.v2t_equal.tolist() == [1, 0]
    assert pessimistic.v2t.tolist() == [2.0, 1.0] and optimistic.v2t.tolist() == [1.0, 1.0]


def test_duplicate_captions_like_msrvtt_1k_a() -> None:
    """Captions 1 and 4 are the same string: identical rows, so v2t columns 1 and 4 see their
    own caption tie with the other video's; t2v has no tie."""
    rng = np.random.default_rng(7)
    text = rng.standard_normal((6, 8))
    text[4] = text[1]
    video = rng.standard_normal((6, 8))
    sim = text @ video.T
    cv = np.arange(6)
    ranks = query_ranks(sim, cv)
    assert ranks.t2v_tied.sum() == 0
    assert np.flatnonzero(ranks.v2t_tied).tolist() == [1, 4]
    rows = sim.tolist()
    t2v = [counts_by_loops(rows[i], i, {i}) for i in range(6)]
    v2t = [counts_by_loops([rows[c][v] for c in range(6)], v, {v}) for v in range(6)]
    assert [e for _, e in v2t] == [0, 1, 0, 0, 1, 0]
    for policy in ("pessimistic", "optimistic", "mean"):
        got = retrieval_metrics(sim, cv, tie_policy=policy)
        expected = policy_metrics(t2v, policy, "t2v") | policy_metrics(v2t, policy, "v2t")
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-12), (policy, key)
        assert (got["t2v_ties"], got["v2t_ties"]) == (0.0, 2.0)
    legacy = retrieval_metrics(sim, cv, tie_policy="legacy")
    assert pick(legacy, "v2t") == prefixed(official_sorted_where(sim.T), "v2t")
    assert pick(legacy, "t2v") == prefixed(official_sorted_where(sim), "t2v")


# ----------------------------------------------------------------------------------------------
# Chunked == full; input types
# ----------------------------------------------------------------------------------------------


def assert_same_ranks(a: QueryRanks, b: QueryRanks) -> None:
    for name in ("t2v", "v2t", "t2v_tied", "v2t_tied", "t2v_higher", "t2v_equal", "t2v_before"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.v2t_higher, b.v2t_higher)
    np.testing.assert_array_equal(a.v2t_equal, b.v2t_equal)
    assert (a.tie_policy, a.v2t_convention, a.single_caption) == (
        b.tie_policy,
        b.v2t_convention,
        b.single_caption,
    )


@pytest.mark.parametrize("layout", ["single", "variable", "unordered"])
@pytest.mark.parametrize("policy", TIE_POLICIES)
@pytest.mark.parametrize("v2t", ["official", "first-hit"])
def test_chunked_equals_full(layout: str, policy: str, v2t: str) -> None:
    if policy == "legacy" and v2t == "first-hit":
        pytest.skip("legacy has no first-hit convention (an error, tested below)")
    cv = LAYOUTS[layout]
    rng = np.random.default_rng(11)
    # integer embeddings: every chunking gives bit-identical dot products, and ties occur
    text = torch.from_numpy(rng.integers(-2, 3, size=(len(cv), 4)).astype(np.float32))
    video = torch.from_numpy(rng.integers(-2, 3, size=(int(cv.max()) + 1, 4)).astype(np.float32))
    full = query_ranks(text @ video.T, cv, tie_policy=policy, v2t=v2t)
    largest_group = int(np.bincount(cv).max())
    for chunk in (1, 2, 5, 1000):
        calls: list[tuple[int, int]] = []

        def score_rows(start: int, stop: int, calls: list = calls) -> torch.Tensor:
            calls.append((start, stop))
            return text[start:stop] @ video.T

        chunked = ranks_from_scores(
            score_rows, torch.from_numpy(cv), video.shape[0], chunk_size=chunk, tie_policy=policy, v2t=v2t
        )
        assert_same_ranks(chunked, full)
        assert max(stop - start for start, stop in calls) <= max(chunk, largest_group)
        covered = sorted(i for start, stop in calls for i in range(start, stop))
        assert covered == sorted(list(range(len(cv))) * 2)  # every row exactly twice (two passes)


@pytest.mark.parametrize("layout", ["single", "variable", "unordered"])
@pytest.mark.parametrize("block", [1, 5, 13])
def test_cache_sized_blocks_equal_one_block(monkeypatch, layout: str, block: int) -> None:
    """On a CPU, counting walks each chunk in blocks of about _CPU_BLOCK_ELEMENTS scores; tiny
    blocks (one row, or rows not dividing the chunk) give the same counts as one block."""
    import clip2video.metrics.counting as metrics_module

    cv = LAYOUTS[layout]
    sim = np.random.default_rng(block).integers(0, 3, size=(len(cv), int(cv.max()) + 1)).astype(np.float32)
    sim[0, 0] = np.finfo(np.float32).max
    for policy in TIE_POLICIES:
        whole = query_ranks(sim, cv, tie_policy=policy, chunk_size=4)
        monkeypatch.setattr(metrics_module, "_CPU_BLOCK_ELEMENTS", block)
        assert_same_ranks(query_ranks(sim, cv, tie_policy=policy, chunk_size=4), whole)
        monkeypatch.undo()


def test_grouped_chunks_hold_whole_groups() -> None:
    cv = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])  # groups end at rows 3, 5 and 9
    sim = torch.from_numpy(tie_free(len(cv), 3, seed=1))
    for v2t, expected in (
        ("official", [(0, 3), (3, 5), (5, 9)]),  # whole groups, each chunk as large as fits in 4
        ("first-hit", [(0, 4), (4, 8), (8, 9)]),  # no grouping needed: plain ranges
    ):
        calls: list[tuple[int, int]] = []

        def score_rows(start: int, stop: int, calls: list = calls) -> torch.Tensor:
            calls.append((start, stop))
            return sim[start:stop]

        chunked = ranks_from_scores(score_rows, cv, 3, chunk_size=4, v2t=v2t)
        assert calls == expected * 2
        assert_same_ranks(chunked, query_ranks(sim, cv, v2t=v2t))


def test_numpy_torch_list_and_dtypes_agree() -> None:
    cv = np.array([0, 1, 1, 2, 3, 3, 3, 4])
    base = (np.random.default_rng(5).integers(0, 64, size=(8, 5)) / 8).astype(np.float64)  # exact in fp16
    expected = retrieval_metrics(base, cv, tie_policy="mean")
    variants = [
        (base.astype(np.float32), cv.tolist()),
        (torch.from_numpy(base), torch.from_numpy(cv)),
        (torch.from_numpy(base).float(), cv.astype(np.int32)),
        (torch.from_numpy(base).half(), cv),
        (torch.from_numpy(base).bfloat16(), cv),
        (base.astype(np.float16), cv),
        (np.asfortranarray(base), cv),
        (base.tolist(), cv),
    ]
    for sim, captions in variants:
        assert retrieval_metrics(sim, captions, tie_policy="mean") == expected


def test_float32_and_float64_agree_on_random_scores() -> None:
    sim32 = np.random.default_rng(2).standard_normal((30, 30)).astype(np.float32)
    assert retrieval_metrics(sim32, np.arange(30)) == retrieval_metrics(
        sim32.astype(np.float64), np.arange(30)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_equals_cpu() -> None:
    cv = np.repeat(np.arange(50), 3)
    np.random.default_rng(4).shuffle(cv)
    sim = torch.from_numpy(np.random.default_rng(4).integers(0, 20, size=(150, 50)).astype(np.float32))
    for policy in TIE_POLICIES:
        assert_same_ranks(
            query_ranks(sim.cuda(), cv, tie_policy=policy, chunk_size=7),
            query_ranks(sim, cv, tie_policy=policy, chunk_size=7),
        )


def test_take_resamples_queries() -> None:
    ranks = query_ranks(HAND, [0, 1, 2], tie_policy="legacy")
    resampled = ranks.take(t2v=[2, 2, 0], v2t=[1])
    # t2v entries of queries 2, 2, 0: [2], [2], [0, 1] (0-based)
    got = metrics_from_ranks(resampled)
    assert got["t2v_R1"] == pytest.approx(100 * 1 / 4)
    assert got["t2v_MnR"] == pytest.approx(1 + 5 / 4)
    assert got["t2v_MdR"] == 2.5  # median of [0, 1, 2, 2] + 1
    assert got["v2t_R1"] == 100.0 and got["t2v_ties"] == 1.0


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_nan_names_the_rows() -> None:
    sim = tie_free(8, 8, seed=0)
    sim[2, 5] = np.nan
    sim[6, 0] = np.nan
    for chunk in (1, 3, 100):
        with pytest.raises(ValueError, match=r"NaN in 2 row\(s\): \[2, 6\]"):
            retrieval_metrics(sim, np.arange(8), chunk_size=chunk)
    # on demand, the first chunk holding NaN is named: rows 4..7 hold only row 6's
    sim[2, 5] = 0.5
    with pytest.raises(ValueError, match=r"NaN in row\(s\) \[6\]"):
        ranks_from_scores(lambda a, b: torch.from_numpy(sim[a:b]), np.arange(8), 8, chunk_size=4)


@pytest.mark.parametrize(
    ("sim", "cv", "message"),
    [
        (np.zeros((0, 3)), [], "empty"),
        (np.zeros((3, 0)), [0, 1, 2], "empty"),
        (np.zeros((2, 2)), [], "caption_video is empty"),
        (np.zeros(4), [0, 1, 2, 3], "2-D"),
        (np.zeros((3, 3)), [0, 1], r"shape mismatch: sim has 3 rows .* caption_video has 2"),
        (np.zeros((3, 3)), [0, 3, 1], r"out of range \[0, 3\).*caption 1 -> 3"),
        (np.zeros((3, 3)), [0, -1, 1], r"caption 1 -> -1"),
        (np.zeros((3, 4)), [0, 0, 2], r"2 video\(s\) have no caption: video indices \[1, 3\]"),
        (np.zeros((2, 2)), [0.0, 1.0], "integer"),
        (np.zeros((2, 2)), [[0, 1]], "1-D"),
        (np.array([["a", "b"]]), [0], "numeric"),
    ],
)
def test_bad_inputs(sim, cv, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(sim, cv)


def test_bad_options() -> None:
    sim = tie_free(3, 3, seed=0)
    with pytest.raises(ValueError, match="unknown tie_policy 'random'"):
        retrieval_metrics(sim, [0, 1, 2], tie_policy="random")
    with pytest.raises(ValueError, match="unknown v2t convention"):
        retrieval_metrics(sim, [0, 1, 2], v2t="last-hit")
    with pytest.raises(ValueError, match="legacy.*first-hit"):
        retrieval_metrics(sim, [0, 1, 2], tie_policy="legacy", v2t="first-hit")
    with pytest.raises(ValueError, match="chunk_size"):
        retrieval_metrics(sim, [0, 1, 2], chunk_size=0)
    with pytest.raises(ValueError, match=r"score_rows\(0, 2\) returned shape \(2, 4\), expected \(2, 3\)"):
        ranks_from_scores(lambda a, b: torch.zeros(b - a, 4), [0, 1, 2], 3, chunk_size=2)
    with pytest.raises(ValueError, match="num_videos"):
        ranks_from_scores(lambda a, b: torch.zeros(b - a, 3), [0, 1, 2], 0)
