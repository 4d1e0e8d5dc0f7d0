"""Decode once: the time-reversal pass reuses the plain pass's decoded frames (issue 12 item 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clip2video.data.frames import FrameSampler
from clip2video.data.video_writer import write_video
from clip2video.engine.cache import EmbeddingCache
from clip2video.engine.evaluate import encode_split, encode_split_pair, time_reversal_diagnostic
from tests.support.eval_standins import ToyModel, ToyTokenizer, toy_split
from tests.support.videogen import index_coded_frames

NUM_VIDEOS = 7


class CountingSampler(FrameSampler):
    """A FrameSampler that counts its decodes (``load`` calls) per video id."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.loads: dict[str, int] = {}

    def load(self, path, rng=None, video_id=None):
        self.loads[video_id] = self.loads.get(video_id, 0) + 1
        return super().load(path, rng=rng, video_id=video_id)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for i in range(NUM_VIDEOS):
        write_video(
            root / f"video{i}.mp4", index_coded_frames(10 + 3 * i, 32, 32, seed=i), fps=10, lossless=False
        )
    return root


def sampler() -> CountingSampler:
    # ToyModel takes 6 frames of 3x4x4 pixels
    return CountingSampler(extraction_fps=5.0, stride=1, max_frames=6, image_size=4)


def encode_kwargs(**extra):
    return dict(tokenizer=ToyTokenizer(), progress=False, batch_size=3, **extra)


def test_pair_decodes_each_test_video_once_with_the_diagnostic_on(videos):
    split, s = toy_split(NUM_VIDEOS), sampler()
    emb, rev = encode_split_pair(
        ToyModel(order=True), split, "toy", videos, sampler=s, time_reversal=True, **encode_kwargs()
    )
    assert rev is not None
    assert sum(s.loads.values()) == NUM_VIDEOS == len(split.video_ids)
    assert set(s.loads) == set(split.video_ids)
    s2 = sampler()
    plain, none = encode_split_pair(
        ToyModel(order=True), split, "toy", videos, sampler=s2, time_reversal=False, **encode_kwargs()
    )
    assert none is None and sum(s2.loads.values()) == NUM_VIDEOS
    assert torch.equal(plain.video, emb.video)


def test_pair_equals_two_encode_split_passes_exactly(videos):
    split = toy_split(NUM_VIDEOS)
    model = ToyModel(order=True, tab=True)
    emb, rev = encode_split_pair(
        model, split, "toy", videos, sampler=sampler(), time_reversal=True, **encode_kwargs()
    )
    old = sampler()
    emb0 = encode_split(model, split, "toy", videos, sampler=old, reverse=False, **encode_kwargs())
    rev0 = encode_split(model, split, "toy", videos, sampler=old, reverse=True, **encode_kwargs())
    assert sum(old.loads.values()) == 2 * NUM_VIDEOS  # what the two-pass route costs
    assert torch.equal(emb.text, emb0.text) and torch.equal(rev.text, rev0.text)
    assert torch.equal(emb.video, emb0.video)
    assert torch.equal(rev.video, rev0.video)
    assert not torch.equal(rev.video, emb.video)  # an order-aware model sees the reversal
    assert rev.meta["reverse"] and not emb.meta["reverse"]
    np.testing.assert_array_equal(rev.caption_video, rev0.caption_video)


def test_time_reversal_diagnostic_decodes_once_and_matches_two_passes(videos):
    split, model = toy_split(NUM_VIDEOS), ToyModel(order=True)
    s = sampler()
    diag = time_reversal_diagnostic(model, split, videos, s, ToyTokenizer(), protocol="toy", progress=False)
    assert sum(s.loads.values()) == NUM_VIDEOS
    kw = encode_kwargs()
    emb = encode_split(model, split, "toy", videos, sampler=sampler(), **kw)
    rev = encode_split(model, split, "toy", videos, sampler=sampler(), reverse=True, **kw)
    again = time_reversal_diagnostic(model, split, videos, protocol="toy", emb=emb, rev_emb=rev)
    assert diag == again
    assert diag["order_changed_share"] > 0


def test_pair_through_the_cache_stores_and_reads_both_passes(videos, tmp_path):
    split, model = toy_split(NUM_VIDEOS), ToyModel(order=True)
    cache = EmbeddingCache(tmp_path / "cache")
    s = sampler()
    emb, rev = encode_split_pair(
        model, split, "toy", videos, sampler=s, cache=cache, time_reversal=True, **encode_kwargs()
    )
    assert (emb.meta["video_cache"], rev.meta["video_cache"]) == ("miss", "miss")
    # each pass is stored under encode_split's own key
    again = encode_split(model, split, "toy", videos, sampler=s, cache=cache, reverse=True, **encode_kwargs())
    assert again.meta["video_cache"] == "hit" and torch.equal(again.video, rev.video)
    assert sum(s.loads.values()) == NUM_VIDEOS
    # a pair with both passes cached decodes nothing
    e2, r2 = encode_split_pair(
        model, split, "toy", videos, sampler=s, cache=cache, time_reversal=True, **encode_kwargs()
    )
    assert sum(s.loads.values()) == NUM_VIDEOS
    assert torch.equal(e2.video, emb.video) and torch.equal(r2.video, rev.video)
    # with only the plain pass cached, the pair decodes once more for the reversed one
    fresh = EmbeddingCache(tmp_path / "cache2")
    encode_split(model, split, "toy", videos, sampler=s, cache=fresh, **encode_kwargs())
    e3, r3 = encode_split_pair(
        model, split, "toy", videos, sampler=s, cache=fresh, time_reversal=True, **encode_kwargs()
    )
    assert (e3.meta["video_cache"], r3.meta["video_cache"]) == ("hit", "miss")
    assert torch.equal(r3.video, rev.video)
    assert sum(s.loads.values()) == 3 * NUM_VIDEOS


def test_on_a_cpu_loader_workers_take_turns_with_the_model_and_give_the_same_embeddings(videos, monkeypatch):
    """Phased decoding (workers decode a chunk, then the model encodes it) changes no embedding."""
    import clip2video.engine.encode as enc

    monkeypatch.setattr(enc, "PHASE_VIDEOS", 3)  # 7 videos: chunks of 3, 3 and 1
    split = toy_split(NUM_VIDEOS)
    model = ToyModel(order=True)
    runs = {
        workers: encode_split_pair(
            model,
            split,
            "toy",
            videos,
            sampler=sampler(),
            time_reversal=True,
            **encode_kwargs(num_workers=workers),
        )
        for workers in (0, 2, -1)
    }
    for workers in (2, -1):
        assert torch.equal(runs[workers][0].video, runs[0][0].video)
        assert torch.equal(runs[workers][1].video, runs[0][1].video)
    chunks = list(enc._video_batches(_dataset(videos, split), 3, 2, torch.device("cpu")))
    assert [b[0].tolist() for b in chunks] == [[0, 1, 2], [3, 4, 5], [6]]


def _dataset(videos, split):
    from clip2video.data.datasets import VideoDataset

    paths = [videos / f"{vid}.mp4" for vid in split.video_ids]
    return VideoDataset(paths, split.video_ids, sampler())
