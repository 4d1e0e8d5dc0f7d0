"""Frozen-backbone mode (engine/features.py): features once, heads trained by the unchanged trainer.

The feature path must be the full model with a frozen backbone, run end to end (training through
``train`` on decoded frames and tokenized captions, then ``encode_split``), only cheaper: the same
embeddings within 1e-5 and the same ranks. The backbone runs once per split, and the cache key
follows the backbone's weights (not the heads').
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from clip2video.data.annotations import load_split
from clip2video.data.datasets import PairDataset
from clip2video.data.frames import FrameSampler
from clip2video.data.protocols import get_protocol
from clip2video.data.synthetic import generate_synthetic, load_meta
from clip2video.data.text import CaptionTokenizer
from clip2video.data.videos import find_videos
from clip2video.engine.cache import EmbeddingCache
from clip2video.engine.evaluate import encode_split, evaluate_embeddings
from clip2video.engine.features import (
    FeatureBank,
    FeatureModel,
    compute_features,
    compute_split_features,
    encode_features,
    feature_cache_key,
    freeze_backbone,
    train_heads,
)
from clip2video.engine.train import TrainConfig, train
from clip2video.models import create_model
from clip2video.models.retrieval import eot_index

TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "layers": 1},
}
# 16 frame slots: the 12-frame clips get 4 padded slots, so TDB's padding (the zero frame) is exercised
SAMPLER = FrameSampler(extraction_fps=5.0, stride=1, max_frames=16, image_size=32)
CONFIG = dict(epochs=2, batch_size=8, lr=2e-3, coef_lr=1.0, device="cpu", progress=False, seed=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = generate_synthetic(
        tmp_path_factory.mktemp("syn") / "d", seed=4, num_train=16, num_val=0, num_test_pairs=5
    )
    protocol = get_protocol("synthetic")
    splits = {s: load_split(protocol, root / "annotations", s) for s in ("train", "test")}
    return root, splits


@pytest.fixture(scope="module")
def tokenizer():
    return CaptionTokenizer(max_words=32)


def _model(name: str = "clip2video", seed: int = 0):
    torch.manual_seed(seed)
    return create_model(name, clip=TINY, clip_weights=None, temporal_layers=1, center_k=3)


def _short_videos(data, split: str) -> list[str]:
    """The split's 12-frame clips (4 padded slots under SAMPLER)."""
    root, splits = data
    videos = load_meta(root / "annotations")["videos"]
    return [v for v in splits[split].video_ids if videos[v]["num_frames"] == 12]


def _features(model, data, tokenizer, **kwargs):
    root, splits = data
    return compute_features(model, splits, root / "videos", SAMPLER, tokenizer, **kwargs)


def test_text_and_video_heads_alone_equal_the_full_encoders_bitwise(data, tokenizer):
    model = _model().eval()
    ids, mask = tokenizer(["a red circle moves left", "the blue square slowly grows in size"])
    with torch.no_grad():
        full = model.encode_text(ids, mask)
        head = model.text_head(model.text_hidden(ids), eot_index(ids), mask)
        assert torch.equal(full, head)
        short = _short_videos(data, "test")[0]
        frames, fmask = SAMPLER.load(find_videos(data[0] / "videos", [short])[0])
        assert fmask.sum() < len(fmask)  # padded slots present
        x = model.frame_embeddings(frames[None], fmask[None])
        pad = model.pad_embedding()
        assert torch.equal(model.pool_video(x, fmask[None]), model.pool_video(x, fmask[None], pad=pad))
        assert torch.equal(
            model.encode_video(frames[None], fmask[None]), model.pool_video(x, fmask[None], pad=pad)
        )


@pytest.mark.parametrize("name", ["tdb", "clip2video"])
def test_frozen_features_equal_the_full_model_with_a_frozen_backbone(data, tokenizer, tmp_path, name):
    root, splits = data
    assert _short_videos(data, "train") and _short_videos(data, "test")  # padding in both splits
    full = freeze_backbone(_model(name))
    heads = copy.deepcopy(full)
    # the full model: frames decoded per pair by the training sampler, the backbone run every step
    train_split = splits["train"]
    pairs = [(int(v), c) for v, c in zip(train_split.caption_video, train_split.captions, strict=True)]
    train_sampler = FrameSampler(extraction_fps=5.0, stride=1, max_frames=16, image_size=32, train=True)
    dataset = PairDataset(
        pairs,
        find_videos(root / "videos", train_split.video_ids),
        train_split.video_ids,
        train_sampler,
        tokenizer,
        3,
    )
    full_result = train(full, dataset, TrainConfig(**CONFIG), out_dir=tmp_path / "full")
    # the feature path: the backbone once per split, then the heads only
    feature_model = FeatureModel(heads, FeatureBank(_features(heads, data, tokenizer)))
    result = train_heads(feature_model, TrainConfig(**CONFIG), out_dir=tmp_path / "heads")
    assert result.trained and result.result is not None
    losses = [h["loss"] for h in result.result.history]
    assert np.allclose(losses, [h["loss"] for h in full_result.history], atol=1e-5)
    assert set(feature_model.state_dict()) == set(full.state_dict())
    for key, value in full.state_dict().items():
        assert torch.allclose(heads.state_dict()[key], value, atol=1e-5), key
    full.eval()
    for reverse in (False, True):
        want = encode_split(
            full,
            splits["test"],
            "synthetic",
            root / "videos",
            sampler=SAMPLER,
            tokenizer=tokenizer,
            reverse=reverse,
            progress=False,
        )
        got = encode_features(feature_model, "test", reverse=reverse)
        assert torch.allclose(got.text, want.text, atol=1e-5)
        assert torch.allclose(got.video, want.video, atol=1e-5)
        assert list(got.video_ids) == list(want.video_ids)
        a = evaluate_embeddings(full, want, tie_policy="mean")
        b = evaluate_embeddings(heads, got, tie_policy="mean")
        assert np.array_equal(a.ranks.t2v, b.ranks.t2v) and np.array_equal(a.ranks.v2t, b.ranks.v2t)


class _Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def test_the_backbone_runs_once_per_split_and_the_cache_serves_the_rest(data, tokenizer, tmp_path):
    model = _model()
    images = model.clip.encode_image = _Counter(model.clip.encode_image)
    texts = model.text_hidden = _Counter(model.text_hidden)
    cache = EmbeddingCache(tmp_path / "cache")
    feats = _features(model, data, tokenizer, cache=cache, batch_size=64, text_batch_size=256)
    # one batch of videos and one of captions per split, plus the zero frame's embedding per split
    assert images.calls == 2 * 2 and texts.calls == 2
    assert cache.misses == 2 and cache.hits == 0
    feature_model = FeatureModel(model, FeatureBank(feats))
    train_heads(feature_model, TrainConfig(**CONFIG), out_dir=tmp_path / "heads")
    evaluate_embeddings(model, encode_features(feature_model, "test"))
    encode_features(feature_model, "test", reverse=True)
    assert images.calls == 4 and texts.calls == 2  # training and evaluation never touch the backbone
    again = _features(model, data, tokenizer, cache=cache)
    assert images.calls == 4 and texts.calls == 2 and cache.hits == 2
    assert torch.equal(again["test"].video, feats["test"].video) and again["test"].meta["cache"] == "hit"


def test_the_cache_key_follows_the_backbone_weights_not_the_heads(data, tokenizer, tmp_path):
    root, splits = data
    model = _model()
    split = splits["test"]
    paths = find_videos(root / "videos", split.video_ids)

    def key():
        return feature_cache_key(model, split, "test", paths, SAMPLER, tokenizer)

    before = key()
    with torch.no_grad():
        model.tab.weight_center.add_(1.0)  # a head: same features
    assert key() == before
    with torch.no_grad():
        model.clip.visual.proj.add_(1e-3)  # the backbone: other features
    changed = key()
    assert changed["backbone"]["weights"] != before["backbone"]["weights"]
    assert changed != before
    other_sampler = FrameSampler(extraction_fps=5.0, stride=1, max_frames=12, image_size=32)
    assert feature_cache_key(model, split, "test", paths, other_sampler, tokenizer) != changed
    cache = EmbeddingCache(tmp_path / "cache")
    compute_split_features(model, split, root / "videos", SAMPLER, tokenizer, cache=cache)
    with torch.no_grad():
        model.clip.visual.proj.add_(1e-3)
    recomputed = compute_split_features(model, split, root / "videos", SAMPLER, tokenizer, cache=cache)
    assert recomputed.meta["cache"] == "miss" and cache.misses == 2


def test_meanp_has_nothing_to_train_and_is_evaluated_as_is(data, tokenizer, tmp_path):
    model = _model("meanp")
    feature_model = FeatureModel(model, FeatureBank(_features(model, data, tokenizer)))
    result = train_heads(feature_model, TrainConfig(**CONFIG), out_dir=tmp_path / "meanp")
    assert not result.trained and result.result is None
    assert "no trainable parameters with a frozen backbone" in result.reason
    assert not (tmp_path / "meanp").exists()
    emb = encode_features(feature_model, "test")
    root, splits = data
    want = encode_split(
        model.eval(),
        splits["test"],
        "synthetic",
        root / "videos",
        sampler=SAMPLER,
        tokenizer=tokenizer,
        progress=False,
    )
    assert torch.allclose(emb.video, want.video, atol=1e-5) and torch.allclose(emb.text, want.text, atol=1e-5)
