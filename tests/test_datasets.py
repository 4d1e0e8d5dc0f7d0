"""Datasets: videos decoded once per pass, captions, and deterministic training pairs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from clip2video.data import frames as frames_module
from clip2video.data.datasets import CaptionDataset, PairDataset, VideoDataset
from clip2video.data.frames import FrameSampler
from clip2video.data.text import CaptionTokenizer, EmptyCaptionError
from clip2video.errors import VideoReadError
from tests.support.videogen import make_video

S = 16


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    # 5 fps and 300 frames: 300 extracted frames, so training jitter is active (h = 13)
    return [make_video(root / f"video{i}.mp4", 300, 5, (32, 32), lossless=False) for i in range(3)]


@pytest.fixture(scope="module")
def tokenizer():
    return CaptionTokenizer(max_words=8)


@pytest.fixture
def count_opens(monkeypatch):
    """Count decord opens per path by wrapping the sampler's open_video."""
    counts: Counter = Counter()
    original = frames_module.open_video

    def counting(path, video_id=None):
        counts[str(path)] += 1
        return original(path, video_id)

    monkeypatch.setattr(frames_module, "open_video", counting)
    return counts


def test_video_dataset_decodes_each_video_once(videos, count_opens):
    dataset = VideoDataset(videos, FrameSampler(image_size=S))
    seen = []
    for index, frames, mask in DataLoader(dataset, batch_size=2, num_workers=0):
        seen.extend(index.tolist())
        assert frames.shape == (len(index), 12, 3, S, S) and mask.shape == (len(index), 12)
        assert mask.sum(dim=1).tolist() == [12] * len(index)
    assert seen == [0, 1, 2]
    assert count_opens == Counter({str(v): 1 for v in videos})


def test_video_dataset_accepts_ids_and_names_them_in_errors(tmp_path, videos):
    sampler = FrameSampler(image_size=S)
    missing = tmp_path / "gone.mp4"
    dataset = VideoDataset([videos[0], missing], ["first", "vid_missing"], sampler)
    assert dataset.video_ids == ["first", "vid_missing"]
    assert VideoDataset(videos, sampler).video_ids == ["video0", "video1", "video2"]
    with pytest.raises(VideoReadError, match="vid_missing"):
        dataset[1]
    with pytest.raises(ValueError, match="2 video ids for 3"):
        VideoDataset(videos, ["a", "b"], sampler)
    with pytest.raises(TypeError, match="sampler"):
        VideoDataset(videos, ["a", "b", "c"])


def test_video_dataset_items_match_the_sampler(videos):
    sampler = FrameSampler(image_size=S)
    index, frames, mask = VideoDataset(videos, sampler)[2]
    expected_frames, expected_mask = sampler.load(videos[2])
    assert index == 2 and torch.equal(frames, expected_frames) and torch.equal(mask, expected_mask)


def test_caption_dataset(tokenizer):
    captions = ["a dog runs", "two cats sleep on a sofa together quietly"]
    dataset = CaptionDataset(captions, tokenizer)
    ids, mask = tokenizer(captions)
    batches = list(DataLoader(dataset, batch_size=2))
    (index, got_ids, got_mask) = batches[0]
    assert index.tolist() == [0, 1] and torch.equal(got_ids, ids) and torch.equal(got_mask, mask)
    with pytest.raises(EmptyCaptionError, match="caption 2 "):
        CaptionDataset(["ok", "fine", "  "], tokenizer)


def pair_dataset(videos, tokenizer, seed=0):
    pairs = [(0, "a red ball"), (1, "a blue cube"), (1, "the cube spins"), (2, "green light")]
    sampler = FrameSampler(image_size=S, train=True)
    return PairDataset(pairs, videos, sampler, tokenizer, seed)


def test_pair_dataset_items_and_layout(videos, tokenizer):
    dataset = pair_dataset(videos, tokenizer)
    ids, mask, frames, fmask, video = dataset[2]
    expected_ids, expected_mask = tokenizer(["the cube spins"])
    assert torch.equal(ids, expected_ids[0]) and torch.equal(mask, expected_mask[0])
    assert frames.shape == (12, 3, S, S) and fmask.tolist() == [1] * 12 and video == 1
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert [t.shape[0] for t in batch] == [4] * 5 and batch[4].tolist() == [0, 1, 1, 2]


def test_pair_dataset_decodes_per_pair(videos, tokenizer, count_opens):
    dataset = pair_dataset(videos, tokenizer)
    for i in range(len(dataset)):
        dataset[i]
    assert count_opens == Counter({str(videos[0]): 1, str(videos[1]): 2, str(videos[2]): 1})


def test_pair_dataset_jitter_is_a_function_of_seed_epoch_index(videos, tokenizer):
    dataset = pair_dataset(videos, tokenizer, seed=3)
    sampler = dataset.sampler
    # the frames of pair 1 are the sampler's frames under rng (seed, epoch, index)
    expected = sampler.load(videos[1], rng=np.random.default_rng((3, 0, 1)))[0]
    assert torch.equal(dataset[1][2], expected)
    assert torch.equal(dataset[1][2], dataset[1][2])  # repeatable
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1][2], expected)  # a new epoch draws new jitter
    other = pair_dataset(videos, tokenizer, seed=4)
    assert not torch.equal(other[1][2], expected)


def test_pair_dataset_same_with_workers(videos, tokenizer):
    dataset = pair_dataset(videos, tokenizer, seed=5)
    dataset.set_epoch(2)
    serial = [b[2] for b in DataLoader(dataset, batch_size=2, num_workers=0)]
    parallel = [b[2] for b in DataLoader(dataset, batch_size=2, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_pair_dataset_argument_checks(videos, tokenizer):
    sampler = FrameSampler(image_size=S, train=True)
    with pytest.raises(ValueError, match=r"pairs \[1\]"):
        PairDataset([(0, "ok"), (7, "bad")], videos, sampler, tokenizer, 0)
    named = PairDataset([(0, "ok")], videos, ["a", "b", "c"], sampler, tokenizer, 0)
    assert named.video_ids == ["a", "b", "c"] and named.seed == 0
    empty = PairDataset([(0, "  ")], videos, sampler, tokenizer, 0)
    with pytest.raises(EmptyCaptionError, match="caption 0 "):
        empty[0]
