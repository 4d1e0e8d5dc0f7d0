"""``twin_order_accuracy`` and ``load_twins`` on hand-made inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clip2video.data.order import ORDER_CEILING_NOTE, twin_order_accuracy
from clip2video.data.synthetic import load_twins
from clip2video.errors import ProtocolError

# videos 0 <-> 1 and 2 <-> 3 are twins; video 4 has none
TWINS = np.array([1, 0, 3, 2, -1])


def _sim(rows: list[tuple[int, float, int, float]], num_videos: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Each row: (own video, own score, twin video, twin score); every other entry is 0."""
    sim = np.zeros((len(rows), num_videos))
    for i, (own, own_score, twin, twin_score) in enumerate(rows):
        sim[i, own], sim[i, twin] = own_score, twin_score
    return sim, np.array([r[0] for r in rows])


def test_win_tie_loss_and_captions_without_twins():
    sim, caption_video = _sim(
        [
            (0, 0.9, 1, 0.2),  # own > twin: 1
            (1, 0.7, 0, 0.7),  # exact tie: 0.5
            (2, 0.1, 3, 0.6),  # twin wins: 0
            (3, 0.5, 2, 0.45),  # own wins: 1
            (3, 0.5, 2, 0.5 - 5e-5),  # within atol: a tie, 0.5
            (4, 0.0, 0, 9.0),  # no twin: not a query
        ]
    )
    out = twin_order_accuracy(sim, caption_video, TWINS)
    assert out["order_queries"] == 5
    assert out["order_ties"] == 2
    assert out["order_acc"] == pytest.approx(100 * (1 + 0.5 + 0 + 1 + 0.5) / 5)  # 60


def test_atol_decides_what_is_a_tie():
    sim, caption_video = _sim([(0, 1.0 + 2e-4, 1, 1.0), (2, 1.0, 3, 1.0 + 2e-4)])
    strict = twin_order_accuracy(sim, caption_video, TWINS, atol=1e-4)
    loose = twin_order_accuracy(sim, caption_video, TWINS, atol=1e-3)
    assert (strict["order_acc"], strict["order_ties"]) == (pytest.approx(50.0), 0)  # one win, one loss
    assert (loose["order_acc"], loose["order_ties"]) == (pytest.approx(50.0), 2)  # two ties
    exact = twin_order_accuracy(sim[:1], caption_video[:1], TWINS, atol=0.0)
    assert exact["order_acc"] == pytest.approx(100.0)


def test_reversing_every_preference_mirrors_the_accuracy():
    rng = np.random.default_rng(1)
    caption_video = np.array([0, 0, 1, 2, 3, 3, 4])
    sim = rng.normal(size=(7, 5))
    swapped = sim.copy()
    swapped[:, [0, 1, 2, 3]] = sim[:, [1, 0, 3, 2]]  # each caption now sees its twin's scores
    a = twin_order_accuracy(sim, caption_video, TWINS)
    b = twin_order_accuracy(swapped, caption_video, TWINS)
    own = sim[np.arange(7), caption_video][:6]
    twin = sim[np.arange(6), TWINS[caption_video[:6]]]
    assert a["order_acc"] == pytest.approx(100 * np.mean(own > twin))
    assert a["order_acc"] + b["order_acc"] == pytest.approx(100.0)


def test_torch_input_matches_numpy():
    rng = np.random.default_rng(2)
    sim = rng.normal(size=(6, 5)).astype(np.float32)
    caption_video = np.array([0, 1, 2, 3, 4, 0])
    expected = twin_order_accuracy(sim, caption_video, TWINS)
    assert twin_order_accuracy(torch.from_numpy(sim), torch.tensor(caption_video), TWINS) == expected


def test_an_order_blind_mean_pooling_model_scores_fifty_percent():
    """Masked mean of frame embeddings: a reversed clip gives the same embedding up to rounding."""
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(4, 12, 16, generator=gen)  # 4 clips of 12 frame embeddings
    videos = torch.cat([frames, frames.flip(1)])  # 0..3 and their reversals 4..7
    video_emb = torch.nn.functional.normalize(videos.mean(1), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(16, 16, generator=gen), dim=-1)
    caption_video = torch.arange(16) % 8
    twins = np.array([4, 5, 6, 7, 0, 1, 2, 3])
    out = twin_order_accuracy(100.0 * text @ video_emb.T, caption_video, twins)
    assert out == {"order_acc": pytest.approx(50.0), "order_ties": 16, "order_queries": 16}
    assert "50%" in ORDER_CEILING_NOTE


def test_no_twins_gives_nan_and_zero_queries():
    out = twin_order_accuracy(np.ones((2, 2)), [0, 1], [-1, -1])
    assert np.isnan(out["order_acc"]) and out["order_queries"] == 0 and out["order_ties"] == 0


def test_bad_inputs_are_named():
    sim, caption_video = _sim([(0, 1.0, 1, 0.0), (2, 1.0, 3, 0.0)])
    with pytest.raises(ValueError, match="caption_video"):
        twin_order_accuracy(sim, caption_video[:1], TWINS)
    with pytest.raises(ValueError, match="twin_of_video"):
        twin_order_accuracy(sim, caption_video, TWINS[:4])
    with pytest.raises(ValueError, match="twin_of_video"):
        twin_order_accuracy(sim, caption_video, np.array([1, 0, 3, 7, -1]))
    sim[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        twin_order_accuracy(sim, caption_video, TWINS)


def _write_meta(folder, twins: dict[str, str | None]) -> None:
    videos = {vid: {"twin": twin} for vid, twin in twins.items()}
    (folder / "synthetic_meta.json").write_text(json.dumps({"seed": 0, "videos": videos}))


def test_load_twins_follows_the_given_order(tmp_path):
    _write_meta(tmp_path, {"a": "b", "b": "a", "c": None, "d": "e", "e": "d"})
    assert load_twins(tmp_path, ["c", "b", "a"]).tolist() == [-1, 2, 1]
    assert load_twins(tmp_path, ["d", "a"]).tolist() == [-1, -1]  # twins outside the list
    assert load_twins(tmp_path, ["e", "c", "d"]).dtype == np.int64


def test_load_twins_errors_name_the_file_and_ids(tmp_path):
    with pytest.raises(ProtocolError, match="synthetic_meta.json"):
        load_twins(tmp_path, ["a"])
    _write_meta(tmp_path, {"a": None})
    with pytest.raises(ProtocolError, match="zzz"):
        load_twins(tmp_path, ["a", "zzz"])
    (tmp_path / "synthetic_meta.json").write_text("{not json")
    with pytest.raises(ProtocolError, match="regenerate"):
        load_twins(tmp_path, ["a"])
