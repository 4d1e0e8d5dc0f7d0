"""meanp's pooled embedding is bitwise invariant to frame order, so reversed twins tie exactly."""

from __future__ import annotations

import torch

from clip2video.engine.evaluate import reverse_frames
from clip2video.models.heads import masked_mean
from tests.support.tiny_clip import tiny_model


def test_masked_mean_is_bitwise_order_invariant():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, 512, generator=g)
    mask = torch.ones(64, 12, dtype=torch.long)
    mask[::3, 7:] = 0
    perm = torch.randperm(12, generator=g)
    shuffled = masked_mean(x[:, perm], mask[:, perm])
    assert torch.equal(masked_mean(x, mask), shuffled)
    plain_sum = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(masked_mean(x, mask), plain_sum, rtol=1e-6, atol=1e-6)


def test_meanp_reversed_video_gives_identical_embedding_and_scores():
    model = tiny_model("meanp")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 12, model.embed_dim, generator=g)  # frame embeddings
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[1, 9:] = 0
    mask[3, 5:] = 0
    reversed_x = reverse_frames(x, mask)
    assert not torch.equal(reversed_x, x)
    with torch.no_grad():
        a, b = model.pool_video(x, mask), model.pool_video(reversed_x, mask)
    assert torch.equal(a, b)


def test_tdb_is_not_order_invariant():
    model = tiny_model("tdb")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 12, model.embed_dim, generator=g)
    mask = torch.ones(2, 12, dtype=torch.long)
    with torch.no_grad():
        a, b = model.pool_video(x, mask), model.pool_video(reverse_frames(x, mask), mask)
    assert not torch.allclose(a, b, atol=1e-4)
