"""The embedding cache: deterministic keys, atomic files, hits that skip all encoding."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import torch

from clip2video.engine.cache import EmbeddingCache, cache_key, model_fingerprint, state_dict_hash
from clip2video.engine.evaluate import encode_split, evaluate_embeddings
from clip2video.engine.postprocess import DualSoftmax
from tests.support.eval_standins import ToyModel, ToyTokenizer, ToyVideos, toy_split


def test_state_dict_hash_is_deterministic_and_sensitive():
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(1.0, dtype=torch.bfloat16)}
    b = {"b": torch.tensor(1.0, dtype=torch.bfloat16), "w": torch.arange(6.0).reshape(2, 3).clone()}
    assert state_dict_hash(a) == state_dict_hash(b)  # key order and storage do not matter
    changed = {**a, "w": a["w"].clone()}
    changed["w"][1, 2] += 1e-6
    assert state_dict_hash(changed) != state_dict_hash(a)
    assert state_dict_hash({**a, "w": a["w"].reshape(3, 2)}) != state_dict_hash(a)  # shape counts
    assert state_dict_hash({**a, "w": a["w"].double()}) != state_dict_hash(a)  # dtype counts
    assert model_fingerprint(ToyModel(seed=0)) == model_fingerprint(ToyModel(seed=0))
    assert model_fingerprint(ToyModel(seed=0)) != model_fingerprint(ToyModel(seed=1))


def test_cache_roundtrip_is_atomic_and_survives_a_corrupt_file(tmp_path):
    cache = EmbeddingCache(tmp_path)
    parts = {"kind": "text", "max_words": 32}
    calls = Counter()

    def compute():
        calls["n"] += 1
        return {"text": torch.ones(3, 2), "ids": ["a", "b"]}

    first = cache.get_or_compute(parts, compute)
    second = cache.get_or_compute(dict(reversed(list(parts.items()))), compute)  # same key, other order
    assert calls["n"] == 1 and (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(first["text"], second["text"]) and second["ids"] == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir()] == [f"{cache_key(parts)}.pt"], "no temporary files left"
    cache.path(parts).write_bytes(b"truncated")
    cache.get_or_compute(parts, compute)
    assert calls["n"] == 2 and torch.equal(cache.get(parts)["text"], torch.ones(3, 2))


def _encode(model, split, data, cache, **kw):
    defaults = dict(tokenizer=ToyTokenizer(), sampler=SimpleNamespace(max_frames=6, image_size=4))
    defaults.update(kw)
    return encode_split(
        model, split, "toy", "unused", cache=cache, video_dataset=data, progress=False, **defaults
    )


def test_second_evaluation_hits_and_gives_identical_metrics(tmp_path):
    cache, split = EmbeddingCache(tmp_path), toy_split()
    model, data = ToyModel(tab=True), ToyVideos(7)
    first = _encode(model, split, data, cache)
    assert model.calls == Counter(text=11, video=7)
    m1 = evaluate_embeddings(model, first).metrics

    model.calls.clear()
    data.reads.clear()
    second = _encode(model, split, data, cache)
    assert model.calls == Counter() and not data.reads, "a hit neither decodes nor encodes"
    assert second.meta["text_cache"] == second.meta["video_cache"] == "hit"
    assert evaluate_embeddings(model, second).metrics == m1
    # settings that act on the similarity reuse the embeddings
    for kw in (dict(tie_policy="mean"), dict(v2t="first-hit"), dict(w=0.2), dict(post=DualSoftmax(1.0))):
        evaluate_embeddings(model, second, **kw)
    assert model.calls == Counter()


def test_changed_settings_miss(tmp_path):
    cache, split = EmbeddingCache(tmp_path), toy_split()
    model, data = ToyModel(), ToyVideos(7)
    _encode(model, split, data, cache)
    model.calls.clear()

    _encode(model, split, data, cache, tokenizer=ToyTokenizer(max_words=5))
    assert model.calls == Counter(text=11), "text settings changed: captions re-encoded, videos reused"
    model.calls.clear()
    _encode(model, split, data, cache, sampler=SimpleNamespace(max_frames=4, image_size=4))
    assert model.calls == Counter(video=7), "frame settings changed: videos re-encoded"
    model.calls.clear()
    _encode(model, split, data, cache, reverse=True)
    assert model.calls == Counter(video=7), "reversed frames are their own entry"
    model.calls.clear()
    with torch.no_grad():
        model.frame.weight[0, 0] += 0.01
    _encode(model, split, data, cache)
    assert model.calls == Counter(text=11, video=7), "new weights: everything re-encoded"
    model.calls.clear()
    other = toy_split(captions_per_video=(2,))
    _encode(model, other, data, cache)
    assert model.calls == Counter(text=14), "other captions: text re-encoded"


def test_real_evaluation_twice_skips_decoding_and_encoding(tmp_path):
    from clip2video.data.annotations import load_split
    from clip2video.data.protocols import get_protocol
    from clip2video.data.synthetic import generate_synthetic
    from clip2video.engine.evaluate import evaluate
    from tests.support.eval_standins import real_model

    root = generate_synthetic(tmp_path / "syn", seed=5, num_train=0, num_val=0, num_test_pairs=2)
    proto = get_protocol("synthetic")
    split = load_split(proto, root / "annotations", "test")
    model, calls = real_model("tdb"), Counter()
    for name in ("encode_text", "encode_video"):
        original = getattr(model, name)

        def counted(*args, _name=name, _original=original):
            calls[_name] += 1
            return _original(*args)

        setattr(model, name, counted)
    cache = EmbeddingCache(tmp_path / "cache")
    kwargs = dict(protocol=proto, cache=cache, progress=False)
    first = evaluate(model, split, root / "videos", **kwargs)
    assert calls["encode_text"] >= 1 and calls["encode_video"] >= 1
    calls.clear()
    second = evaluate(model, split, root / "videos", **kwargs)
    assert calls == Counter() and (cache.hits, cache.misses) == (2, 2)
    assert second.metrics == first.metrics and torch.equal(second.sim, first.sim)
    (root / "videos" / f"{split.video_ids[0]}.mp4").touch()  # a regenerated file misses
    evaluate(model, split, root / "videos", **kwargs)
    assert calls["encode_video"] >= 1 and calls["encode_text"] == 0
