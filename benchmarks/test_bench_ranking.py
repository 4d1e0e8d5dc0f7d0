"""pytest-benchmark: the ranking core vs the official-style numpy sort at 1,000 x 1,000.

Run with ``pytest benchmarks/test_bench_ranking.py --benchmark-only`` (``pytest tests/`` never
collects this folder: ``testpaths = ["tests"]``). Compare the two rows of group "ranking-1k".
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.bench_ranking import random_embeddings, sort_baseline
from clip2video.metrics import retrieval_metrics

N = 1000


@pytest.fixture(scope="module")
def sim():
    """The 1k x 1k scores; torch runs single-threaded here, like numpy's sort (see bench_ranking)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    text, video = random_embeddings(N, 512, seed=0)
    yield text @ video.T
    torch.set_num_threads(threads)


@pytest.mark.parametrize("impl", ["core", "numpy-sort"])
def test_bench_ranking_1k(benchmark, sim: torch.Tensor, impl: str) -> None:
    """Both implementations on the same matrix, both asserted to give the official numbers."""
    benchmark.group = "ranking-1k"
    captions = np.arange(N)
    if impl == "core":
        result = benchmark.pedantic(lambda: retrieval_metrics(sim, captions, tie_policy="legacy"), rounds=5)
    else:
        matrix = sim.numpy()
        result = benchmark.pedantic(lambda: sort_baseline(matrix), rounds=5)
    expected = sort_baseline(sim.numpy())
    assert {k: result[k] for k in expected} == expected
