"""Mixed precision (bf16 autocast on CUDA): an evaluation option, checked where a GPU exists."""

from __future__ import annotations

import pytest
import torch

from tests.support.tiny_clip import tiny_model, tiny_text, tiny_video

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("name", ["meanp", "seqtransf", "tdb", "tab", "clip2video"])
def test_bf16_autocast_matches_float32(name):
    model = tiny_model(name).cuda()
    ids, tmask = (t.cuda() for t in tiny_text(4, 12))
    frames, vmask = (t.cuda() for t in tiny_video(3, 6, lengths=[6, 3, 5]))
    with torch.no_grad():
        full = model.similarity(model.encode_text(ids, tmask), model.encode_video(frames, vmask))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            text = model.encode_text(ids, tmask)
            video = model.encode_video(frames, vmask)
        mixed = model.similarity(text.float(), video.float())
    assert torch.isfinite(mixed).all()
    # bf16 keeps 8 mantissa bits: logits (scale ~14 here) agree to a few hundredths
    assert (mixed - full).abs().max() < 0.25


def test_batch_independence_on_gpu():
    model = tiny_model("clip2video").cuda()
    frames, vmask = (t.cuda() for t in tiny_video(3, 6, lengths=[6, 1, 4]))
    with torch.no_grad():
        together = model.encode_video(frames, vmask)
        alone = torch.cat([model.encode_video(frames[i : i + 1], vmask[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)
