"""Captions are encoded in groups of equal length, cut to that length, when the text encoder is causal."""

from __future__ import annotations

import pytest
import torch

from clip2video.engine.evaluate import caption_batches, encode_texts
from tests.support.tiny_clip import tiny_model, tiny_text


def test_length_batches_cover_every_caption_once_cut_to_its_own_length():
    ids, mask = tiny_text(n=40, length=16, seed=3)
    batches = caption_batches(ids, mask, 4, by_length=True)
    rows = torch.cat([r for r, _ in batches])
    assert sorted(rows.tolist()) == list(range(40))
    for r, length in batches:
        assert len(r) <= 4
        assert (mask[r].sum(1) == length).all()  # every caption of the batch ends at `length`
    plain = caption_batches(ids, mask, 16, by_length=False)
    assert [(r.tolist(), n) for r, n in plain] == [
        (list(range(0, 16)), 16),
        (list(range(16, 32)), 16),
        (list(range(32, 40)), 16),
    ]


@pytest.mark.parametrize("name", ["meanp", "clip2video"])
def test_cut_captions_equal_the_padded_encoding_up_to_rounding(name):
    """CLIP's causal mask: the padding after EOT cannot reach the EOT token (or TAB's weighted
    tokens), so cutting it changes nothing but rounding; identical captions stay bitwise equal."""
    model = tiny_model(name).eval()
    assert model.text_is_causal
    ids, mask = tiny_text(n=24, length=16, seed=1)
    ids, mask = torch.cat([ids, ids[:3]]), torch.cat([mask, mask[:3]])  # three repeated captions
    together = encode_texts(model, ids, mask, batch_size=64, progress=False)
    for i in range(3):
        assert torch.equal(together[i], together[24 + i])
    with torch.inference_mode():
        padded = model.encode_text(ids, mask)
    assert torch.allclose(together, padded, atol=1e-5, rtol=0)
    alone = encode_texts(model, ids[7:8], mask[7:8], progress=False)
    assert torch.allclose(alone[0], together[7], atol=1e-5, rtol=0)


class BidirectionalText(torch.nn.Module):
    """A text encoder that is not causal: the engine must keep the full padded length."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.lengths: list[int] = []

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.lengths.append(ids.shape[1])
        return ids.float().mean(1, keepdim=True) * self.weight


def test_a_text_encoder_that_is_not_causal_sees_the_full_padded_length():
    model = BidirectionalText()
    ids, mask = tiny_text(n=10, length=16, seed=2)
    out = encode_texts(model, ids, mask, batch_size=4, progress=False)
    assert model.lengths == [16, 16, 16]
    assert torch.equal(out[:, 0], ids.float().mean(1))
