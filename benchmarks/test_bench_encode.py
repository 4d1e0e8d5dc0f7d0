"""pytest-benchmark: ``model.encode_video`` in float32 vs bf16 autocast, side by side.

Run with ``pytest benchmarks/test_bench_encode.py --benchmark-only`` and compare the two rows of
group "encode-video". On CUDA it uses random ViT-B/32-sized weights and 64 videos x 12 frames; on
the CPU the smoke suite's tiny backbone (the CPU numbers only show the harness works: bf16 autocast
is not expected to be faster there). The full-size GPU numbers come from benchmarks/gpu/check.py.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from clip2video.models import create_model

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
TINY_CLIP = {  # benchmarks/suites/smoke.toml's [backbone.config]
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    clip = "ViT-B-32" if CUDA else TINY_CLIP
    model = create_model("clip2video", clip=clip, temporal_layers=4 if CUDA else 1).to(DEVICE).eval()
    size = int(model.clip.visual.image_size[0])
    videos = 64 if CUDA else 8
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    frames = torch.randn(videos, 12, 3, size, size, generator=gen, device=DEVICE)
    mask = torch.ones(videos, 12, dtype=torch.long, device=DEVICE)
    with torch.inference_mode():
        reference = model.encode_video(frames, mask).float()
    return model, frames, mask, reference


def _encode(model, frames, mask, precision: str) -> torch.Tensor:
    ctx = (
        torch.autocast(device_type=DEVICE.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), ctx:
        out = model.encode_video(frames, mask).float()
    if CUDA:
        torch.cuda.synchronize()
    return out


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_bench_encode_video(benchmark, setup, precision: str) -> None:
    """Both precisions on the same frames; bf16 embeddings stay close to float32's."""
    model, frames, mask, reference = setup
    benchmark.group = "encode-video"
    benchmark.extra_info["device"] = torch.cuda.get_device_name() if CUDA else "cpu"
    _encode(model, frames, mask, precision)  # warm-up
    out = benchmark.pedantic(lambda: _encode(model, frames, mask, precision), rounds=5)
    cosine = torch.nn.functional.cosine_similarity(out, reference, dim=-1)
    assert out.shape == reference.shape
    assert float(cosine.min()) > (0.999999 if precision == "float32" else 0.98)
