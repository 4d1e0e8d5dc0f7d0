"""The frame cache returns exactly what a fresh decode gives, misses on changed files, stays bounded."""

from __future__ import annotations

import numpy as np
import torch

from clip2video.data.frame_cache import FrameCache
from clip2video.data.frames import FrameSampler
from tests.support.videogen import make_video


def test_cached_load_equals_fresh_decode_and_skips_decoding(tmp_path, monkeypatch):
    path = make_video(tmp_path / "a.mp4", 30, 10, size=(64, 48))
    fresh = FrameSampler(extraction_fps=5, max_frames=12, image_size=32)
    cached = FrameSampler(extraction_fps=5, max_frames=12, image_size=32).attach_cache(FrameCache(2**24))
    expected = fresh.load(path)
    first = cached.load(path)
    import clip2video.data.frames as frames_module

    def no_decode(*args, **kwargs):
        raise AssertionError("a cache hit must not open the video")

    monkeypatch.setattr(frames_module, "open_video", no_decode)
    second = cached.load(path)
    for got in (first, second):
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert cached._cache.hits == 1 and cached._cache.misses == 1


def test_jittered_picks_use_their_own_entries(tmp_path):
    path = make_video(tmp_path / "long.mp4", 300, 10, size=(32, 32))  # 30 s: interior jitter active
    cache = FrameCache(2**26)
    train = FrameSampler(extraction_fps=5, max_frames=12, image_size=32, train=True).attach_cache(cache)
    plain = FrameSampler(extraction_fps=5, max_frames=12, image_size=32, train=True)
    for seed in range(4):
        got = train.load(path, rng=np.random.default_rng(seed))
        want = plain.load(path, rng=np.random.default_rng(seed))
        assert torch.equal(got[0], want[0])
    assert len(cache) > 1


def test_rewritten_file_misses(tmp_path):
    path = make_video(tmp_path / "a.mp4", 12, 5, size=(32, 32))
    sampler = FrameSampler(extraction_fps=5, image_size=32).attach_cache(FrameCache(2**24))
    before = sampler.load(path)[0]
    import os
    import time

    time.sleep(0.01)
    make_video(path, 12, 5, size=(32, 32), texture=True)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    after = sampler.load(path)[0]
    assert not torch.equal(before, after)
    assert torch.equal(after, FrameSampler(extraction_fps=5, image_size=32).load(path)[0])


def test_bounded_by_bytes():
    cache = FrameCache(max_bytes=3 * 4 * 100)
    for i in range(5):
        cache.put(i, torch.zeros(100))
    assert len(cache) == 3 and cache.bytes == 1200
    assert cache.get(0) is None and cache.get(4) is not None
    cache.put("big", torch.zeros(1000))
    assert cache.get("big") is None
