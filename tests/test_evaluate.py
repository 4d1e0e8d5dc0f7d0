"""The evaluation engine: encode once, one similarity, metrics against brute-force ranks."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from clip2video.engine.evaluate import (
    Embeddings,
    encode_split,
    encode_texts,
    encode_videos,
    evaluate_embeddings,
    own_scores,
    reverse_frames,
    time_reversal_diagnostic,
)
from clip2video.engine.postprocess import DualSoftmax, QBNorm, dual_softmax
from clip2video.errors import VideoReadError
from tests.support.eval_standins import ToyModel, ToyTokenizer, ToyVideos, real_model, toy_split

# ----------------------------------------------------------------------------- brute force


def brute_force(sim: np.ndarray, cv: np.ndarray) -> dict[str, float]:
    """Independent ranks: t2v over videos; v2t official (each video's caption group by its max)."""
    n, m = sim.shape
    t2v = np.array([1 + np.sum(sim[i] > sim[i, cv[i]]) for i in range(n)])
    groups = np.full((m, m), -np.inf)  # groups[v, u] = best caption of u scored on video v
    for c in range(n):
        for v in range(m):
            groups[v, cv[c]] = max(groups[v, cv[c]], sim[c, v])
    v2t = np.array([1 + np.sum(groups[v] > groups[v, v]) for v in range(m)])
    out = {}
    several = n > m
    for name, r in (("t2v", t2v), ("v2t", v2t)):
        for k in (1, 5, 10):
            out[f"{name}_R{k}"] = 100.0 * np.mean(r <= k)
        out[f"{name}_MnR"] = float(np.mean(r))
        # spec: the several-captions t2v path takes the lower middle value (torch.median)
        lower = name == "t2v" and several
        out[f"{name}_MdR"] = float(np.sort(r)[(len(r) - 1) // 2]) if lower else float(np.median(r))
    return out


def assert_metrics_match(metrics: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key


def encoded(model, split, dataset) -> Embeddings:
    return encode_split(
        model,
        split,
        "toy",
        "unused",
        tokenizer=ToyTokenizer(),
        sampler=SimpleNamespace(),
        video_dataset=dataset,
    )


# ----------------------------------------------------------------------------- tests


def test_reverse_frames_reverses_real_frames_only():
    frames = torch.arange(5.0).reshape(5, 1)
    mask = torch.tensor([1, 1, 1, 0, 0])
    assert reverse_frames(frames, mask).flatten().tolist() == [2.0, 1.0, 0.0, 3.0, 4.0]
    batch = torch.arange(10.0).reshape(2, 5, 1)
    masks = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    out = reverse_frames(batch, masks)
    assert out[0].flatten().tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert out[1].flatten().tolist() == [6.0, 5.0, 7.0, 8.0, 9.0]
    assert batch[0, 0, 0] == 0.0, "input untouched"
    # a mask with a hole: the real positions 0, 2, 3 swap their frames among themselves
    holey = reverse_frames(frames, torch.tensor([1, 0, 1, 1, 0]))
    assert holey.flatten().tolist() == [3.0, 1.0, 2.0, 0.0, 4.0]


def test_encode_videos_decodes_each_once_and_orders_by_index():
    model, data = ToyModel(), ToyVideos(7)
    emb = encode_videos(model, data, batch_size=3, progress=False)
    assert all(data.reads[i] == 1 for i in range(7)) and len(data.reads) == 7
    assert model.calls["video"] == 7
    one = torch.cat([model.encode_video(data.frames[i : i + 1], data.mask[i : i + 1]) for i in range(7)])
    torch.testing.assert_close(emb, one)
    # a shuffled DataLoader still lands each embedding on its own row
    shuffled = DataLoader(data, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(encode_videos(model, shuffled, progress=False), one)


def test_encode_texts_batches_and_amp_is_float32_on_cpu():
    model = ToyModel()
    ids, mask = ToyTokenizer()(toy_split().captions)
    a = encode_texts(model, ids, mask, batch_size=4, progress=False)
    b = encode_texts(model, ids, mask, batch_size=100, amp=True, progress=False)
    assert a.dtype == b.dtype == torch.float32 and a.shape == (11, 8)
    torch.testing.assert_close(a, b)


def test_metrics_match_brute_force_ranks_with_several_captions_per_video():
    model, split = ToyModel(), toy_split()
    emb = encoded(model, split, ToyVideos(7))
    assert model.calls == Counter(text=11, video=7)
    result = evaluate_embeddings(model, emb)
    sim = (model.scale * emb.text @ emb.video.T).numpy()
    torch.testing.assert_close(result.sim, torch.from_numpy(sim))
    assert_metrics_match(result.metrics, brute_force(sim, split.caption_video))
    assert result.row_name == "" and result.ranks.t2v.shape == (11,)


def test_chunked_ranking_never_builds_more_than_a_chunk():
    model, split = ToyModel(), toy_split()
    emb = encoded(model, split, ToyVideos(7))
    full = evaluate_embeddings(model, emb, keep_sim=True)
    rows_seen = []
    original = model.similarity

    def spy(text, video):
        rows_seen.append(text.shape[0])
        return original(text, video)

    model.similarity = spy
    chunked = evaluate_embeddings(model, emb, keep_sim=False, chunk_size=3)
    assert chunked.sim is None and max(rows_seen) <= 3 + 2  # a chunk grows only to finish a group
    assert chunked.metrics == full.metrics
    np.testing.assert_array_equal(chunked.ranks.t2v, full.ranks.t2v)


def test_w_remixes_tab_parts_without_reencoding():
    model, split = ToyModel(tab=True), toy_split()
    emb = encoded(model, split, ToyVideos(7))
    calls = dict(model.calls)
    d = model.dim
    glob = (model.scale * emb.text[:, :d] @ emb.video[:, :d].T).numpy()
    aligned = (model.scale * emb.text[:, d:] @ emb.video[:, d:].T).numpy()
    for w in (0.0, 0.3, 1.0):
        result = evaluate_embeddings(model, emb, w=w)
        np.testing.assert_allclose(result.sim.numpy(), w * glob + (1 - w) * aligned, rtol=1e-5, atol=1e-5)
        assert_metrics_match(result.metrics, brute_force(w * glob + (1 - w) * aligned, split.caption_video))
    assert dict(model.calls) == calls
    plain = ToyModel()
    with pytest.raises(ValueError, match="similarity part"):
        evaluate_embeddings(plain, encoded(plain, split, ToyVideos(7)), w=0.5)


def test_post_rows_are_separate_and_marked():
    model, split = ToyModel(), toy_split()
    emb = encoded(model, split, ToyVideos(7))
    bank_ids, bank_mask = ToyTokenizer()([f"bank caption {i} clip" for i in range(5)])
    bank = encode_texts(model, bank_ids, bank_mask, progress=False)
    posts = [DualSoftmax(0.5), QBNorm(bank, "train-captions", k=1, beta=2.0)]
    rows = {"": evaluate_embeddings(model, emb, keep_sim=False)}
    rows.update({p.row_name: evaluate_embeddings(model, emb, post=p, keep_sim=False) for p in posts})
    assert list(rows) == ["", "+DSL(T=0.5)", "+QB-Norm(bank=train-captions,k=1,beta=2)"]
    sim = (model.scale * emb.text @ emb.video.T).numpy()
    assert_metrics_match(rows[""].metrics, brute_force(sim, split.caption_video))
    dsl = dual_softmax(torch.from_numpy(sim), 0.5)[0].numpy()
    assert rows["+DSL(T=0.5)"].metrics["t2v_ties"] == 0  # a mild temperature keeps it tie-free
    assert_metrics_match(rows["+DSL(T=0.5)"].metrics, brute_force(dsl, split.caption_video))
    qb = rows["+QB-Norm(bank=train-captions,k=1,beta=2)"].metrics
    assert qb and all(k.startswith("t2v_") for k in qb), "QB-Norm reports t2v only"


def test_own_scores_are_the_ground_truth_entries():
    model, split = ToyModel(tab=True), toy_split()
    emb = encoded(model, split, ToyVideos(7))
    sim = model.similarity(emb.text, emb.video)
    expected = sim[torch.arange(11), torch.as_tensor(split.caption_video)]
    torch.testing.assert_close(
        own_scores(model, emb.text, emb.video, split.caption_video, chunk_size=4), expected
    )


def test_time_reversal_order_blind_vs_order_aware():
    split, data = toy_split(), ToyVideos(7)
    kwargs = dict(tokenizer=ToyTokenizer(), sampler=SimpleNamespace(), video_dataset=data, progress=False)
    blind = time_reversal_diagnostic(ToyModel(order=False), split, "unused", **kwargs)
    aware = time_reversal_diagnostic(ToyModel(order=True), split, "unused", **kwargs)
    assert blind["order_changed_share"] == 0.0 and blind["max_abs_score_change"] < 1e-4
    assert aware["order_changed_share"] > 0.0 and aware["mean_abs_score_change"] > 1e-4
    assert {"rev_t2v_R1", "rev_v2t_MnR", "t2v_R1", "num_queries"} <= set(aware)
    for key in ("t2v_R1", "v2t_R5", "t2v_MnR"):  # order-blind: reversal changes nothing
        assert blind[f"rev_{key}"] == blind[key]


def test_missing_videos_are_named_together(tmp_path):
    """The engine looks a split's videos up before encoding anything: one error names every missing id."""
    (tmp_path / "video1.mp4").write_bytes(b"x")
    model = ToyModel()
    with pytest.raises(VideoReadError) as info:
        encode_split(
            model, toy_split(3, (1,)), "toy", tmp_path, tokenizer=ToyTokenizer(), sampler=SimpleNamespace()
        )
    assert "video0, video2" in str(info.value) and "2 of 3" in str(info.value)
    assert not model.calls, "nothing was encoded"


def test_one_lookup_maps_a_splits_ids_to_files(tmp_path):
    """``data.videos.lookup_videos`` is the one split lookup: ``find_videos`` (what the engine calls)
    and ``data verify`` agree on it (a file ``<id>.<ext>`` or a frame folder ``<id>/``)."""
    from clip2video.data.videos import find_videos, lookup_videos

    (tmp_path / "video1.mp4").write_bytes(b"x")
    (tmp_path / "video3").mkdir()
    ids = ["video0", "video1", "video3"]
    assert lookup_videos(tmp_path, ids) == {
        "video0": None,
        "video1": tmp_path / "video1.mp4",
        "video3": tmp_path / "video3",
    }
    present = ["video3", "video1", "video3"]
    expected = [tmp_path / "video3", tmp_path / "video1.mp4", tmp_path / "video3"]
    assert find_videos(tmp_path, present) == expected


# ----------------------------------------------------------------------------- real models and videos


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Six generated test videos (three clips and their exact reversals), 12 captions."""
    from clip2video.data.annotations import load_split
    from clip2video.data.protocols import get_protocol
    from clip2video.data.synthetic import generate_synthetic

    root = generate_synthetic(
        tmp_path_factory.mktemp("syn"), seed=3, num_train=0, num_val=0, num_test_pairs=3
    )
    proto = get_protocol("synthetic")
    return proto, load_split(proto, root / "annotations", "test"), root / "videos"


def test_evaluate_real_model_on_generated_videos_matches_a_hand_pipeline(synthetic):
    from clip2video.data.frames import FrameSampler
    from clip2video.data.text import CaptionTokenizer
    from clip2video.data.videos import find_video
    from clip2video.engine.evaluate import evaluate

    proto, split, videos = synthetic
    model = real_model("tab")
    result = evaluate(model, split, videos, protocol=proto, progress=False)
    # the same numbers by hand: load each video with the protocol's sampler, encode one at a time
    sampler = FrameSampler(extraction_fps=5, stride=proto.stride, max_frames=12, image_size=proto.image_size)
    ids, mask = CaptionTokenizer(proto.max_words)(split.captions)
    with torch.no_grad():
        text = model.encode_text(ids, mask)
        video = torch.cat(
            [
                model.encode_video(*(t[None] for t in sampler.load(find_video(videos, v))))
                for v in split.video_ids
            ]
        )
        sim = model.similarity(text, video)
    torch.testing.assert_close(result.sim, sim, rtol=1e-4, atol=1e-4)
    assert_metrics_match(result.metrics, brute_force(result.sim.numpy(), split.caption_video))
    assert result.meta["protocol"] == "synthetic"


def test_time_reversal_meanp_is_order_blind_and_tdb_is_not(synthetic):
    proto, split, videos = synthetic
    meanp = time_reversal_diagnostic(real_model("meanp"), split, videos, protocol=proto, progress=False)
    tdb = time_reversal_diagnostic(real_model("tdb"), split, videos, protocol=proto, progress=False)
    assert meanp["order_changed_share"] == 0.0
    assert tdb["order_changed_share"] > 0.0 and tdb["mean_abs_score_change"] > meanp["mean_abs_score_change"]
