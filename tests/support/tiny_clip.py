"""Tiny CLIP configs, models, inputs and official-layout checkpoints for tests (CPU, float32).

The tiny layout matches ViT-B/32's key layout at small sizes: vision width 64 (1 head), 2 layers,
patch 16 on 32-pixel frames; text width 64 (1 head), 2 layers, context 32, vocabulary 1,000;
embedding width D = 64.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clip2video.models import create_model

TINY_VOCAB = 1000


def tiny_clip_config(
    image_size: int = 32,
    patch_size: int = 16,
    context_length: int = 32,
    vocab_size: int = TINY_VOCAB,
    width: int = 64,
    layers: int = 2,
    embed_dim: int = 64,
) -> dict[str, Any]:
    """An open_clip config dict of a tiny ViT CLIP (heads = width // 64)."""
    # The official layout infers heads = width // 64 and the patch grid from the tensors' shapes.
    assert width % 64 == 0, f"width {width} must be a multiple of 64 (heads = width // 64)"
    assert image_size % patch_size == 0, f"image_size {image_size} must be a multiple of patch {patch_size}"
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": layers,
            "width": width,
            "patch_size": patch_size,
            "head_width": 64,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": vocab_size,
            "width": width,
            "heads": max(1, width // 64),
            "layers": layers,
        },
    }


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add small noise to every parameter, so that no weight is a copy or a constant."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def tiny_model(name: str = "clip2video", seed: int = 0, perturb: bool = True, **options: Any):
    """A random tiny registry model in eval mode (temporal_layers defaults to 2)."""
    torch.manual_seed(seed)
    options.setdefault("clip", tiny_clip_config())
    if name != "meanp":
        options.setdefault("temporal_layers", 2)
    model = create_model(name, **options)
    if perturb:
        perturb_(model, seed)
    return model.eval()


def tiny_official_checkpoint(variant: str, path: str | Path, seed: int = 0, **options: Any) -> Path:
    """Write a random official-layout checkpoint (clip.* in fp16) of a tiny ``variant``."""
    model = tiny_model(variant, seed=seed, **options)
    path = Path(path)
    torch.save(model.official_state_dict(clip_dtype=torch.float16), path)
    return path


def tiny_text(n: int = 3, length: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [n, length] as CLIP writes them: SOT, words, EOT (largest id), zero padding."""
    gen = torch.Generator().manual_seed(seed)
    sot, eot = TINY_VOCAB - 2, TINY_VOCAB - 1
    ids = torch.zeros(n, length, dtype=torch.long)
    mask = torch.zeros(n, length, dtype=torch.long)
    for i in range(n):
        words = int(torch.randint(1, length - 2, (1,), generator=gen)) if n > 1 else length - 2
        ids[i, 0] = sot
        ids[i, 1 : words + 1] = torch.randint(1, TINY_VOCAB - 2, (words,), generator=gen)
        ids[i, words + 1] = eot
        mask[i, : words + 2] = 1
    return ids, mask


def tiny_video(m: int = 2, frames: int = 6, size: int = 32, lengths=None, seed: int = 0):
    """Frames [m, frames, 3, size, size] (zero-padded) and their mask; ``lengths`` real frames each."""
    gen = torch.Generator().manual_seed(seed)
    lengths = lengths or [frames] * m
    video = torch.randn(m, frames, 3, size, size, generator=gen)
    mask = torch.zeros(m, frames, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        video[i, n:] = 0
    return video, mask
