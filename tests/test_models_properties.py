"""Properties every model must have: order, padding, batch independence, the similarity formula."""

from __future__ import annotations

import pytest
import torch

from clip2video.models import list_models
from tests.support.tiny_clip import tiny_model, tiny_text, tiny_video

ALL = ["meanp", "seqtransf", "tdb", "tab", "clip2video"]


def test_registry_names():
    assert set(ALL) <= set(list_models())


def test_meanp_is_invariant_to_frame_order_tdb_and_clip2video_are_not():
    frames, mask = tiny_video(1, 6, seed=2)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        for name, invariant in [("meanp", True), ("tdb", False), ("clip2video", False)]:
            model = tiny_model(name)
            a = model.encode_video(frames, mask)
            b = model.encode_video(frames[:, perm], mask)
            assert torch.allclose(a, b, atol=1e-5) == invariant, name


@pytest.mark.parametrize("name", ALL)
def test_padded_frames_do_not_change_the_embedding(name):
    model = tiny_model(name)
    frames, mask = tiny_video(2, 6, lengths=[4, 2], seed=3)
    noisy = frames.clone()
    noisy[mask == 0] = torch.randn_like(noisy[mask == 0]) * 10
    with torch.no_grad():
        a = model.encode_video(frames, mask)
        b = model.encode_video(noisy, mask)
        c = model.pool_video(model.frame_embeddings(noisy), mask)  # no mask given to the CLIP pass
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_video_embedding_does_not_depend_on_its_batch(name):
    model = tiny_model(name)
    frames, mask = tiny_video(3, 6, lengths=[6, 2, 4], seed=4)
    with torch.no_grad():
        together = model.encode_video(frames, mask)
        for i in range(3):
            alone = model.encode_video(frames[i : i + 1], mask[i : i + 1])
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=0)


def test_batch_independence_with_several_heads():
    """Width 128 gives 2 heads per temporal block: masks must follow their own sample."""
    from tests.support.tiny_clip import tiny_clip_config

    model = tiny_model("clip2video", clip=tiny_clip_config(width=128, embed_dim=128))
    assert model.transformerClip.heads == 2
    frames, mask = tiny_video(3, 6, lengths=[6, 1, 3], seed=5)
    with torch.no_grad():
        together = model.encode_video(frames, mask)
        for i in range(3):
            alone = model.encode_video(frames[i : i + 1], mask[i : i + 1])
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["meanp", "clip2video"])
def test_text_embedding_does_not_depend_on_its_batch(name):
    model = tiny_model(name)
    ids, mask = tiny_text(4, 12, seed=1)
    with torch.no_grad():
        together = model.encode_text(ids, mask)
        for i in range(4):
            torch.testing.assert_close(
                together[i : i + 1], model.encode_text(ids[i : i + 1], mask[i : i + 1])
            )


def test_similarity_2x2_by_hand_with_tab():
    model = tiny_model("clip2video", center_weight=0.3)
    ids, tmask = tiny_text(2, 10)
    frames, vmask = tiny_video(2, 6, lengths=[6, 3])
    with torch.no_grad():
        text = model.encode_text(ids, tmask)
        video = model.encode_video(frames, vmask)
        sim = model.similarity(text, video)
        scale = float(model.clip.logit_scale.exp())
    d = model.embed_dim
    w = 0.3
    for i in range(2):
        for j in range(2):
            glob = sum(float(text[i, k]) * float(video[j, k]) for k in range(d))
            aligned = sum(float(text[i, k]) * float(video[j, k]) for k in range(d, 2 * d))
            want = w * scale * glob + (1 - w) * scale * aligned
            assert abs(float(sim[i, j]) - want) < 1e-4
    parts = model.similarity_parts(text, video)
    assert [p[0] for p in parts] == [0.3, pytest.approx(0.7)]
    torch.testing.assert_close(parts[0][0] * parts[0][1] + parts[1][0] * parts[1][1], sim)


def test_similarity_plain_model_is_scaled_cosine():
    model = tiny_model("seqtransf")
    ids, tmask = tiny_text(2, 10)
    frames, vmask = tiny_video(2, 6)
    with torch.no_grad():
        text = model.encode_text(ids, tmask)
        video = model.encode_video(frames, vmask)
        sim = model.similarity(text, video)
        eot = model.text_hidden(ids)[torch.arange(2), ids.argmax(-1)]
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    cos = torch.nn.functional.cosine_similarity(eot[:, None], video[None], dim=-1)
    torch.testing.assert_close(sim, model.clip.logit_scale.exp() * cos, atol=1e-5, rtol=0)
    assert len(model.similarity_parts(text, video)) == 1


@pytest.mark.parametrize("name,width", [("meanp", 64), ("tdb", 64), ("tab", 128), ("clip2video", 128)])
def test_embedding_width(name, width):
    model = tiny_model(name)
    frames, mask = tiny_video(1, 4)
    ids, tmask = tiny_text(1, 8)
    with torch.no_grad():
        assert model.encode_video(frames, mask).shape == (1, width)
        assert model.encode_text(ids, tmask).shape == (1, width)
