"""Stand-ins for the evaluation engine's tests: a tiny retrieval model, a video dataset, a
tokenizer and a split (``SplitData``'s fields), each counting what the engine asks of it; and
``real_model``, a registered model on a tiny CLIP."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

NUM_FRAMES, PIX = 6, 3 * 4 * 4


class ToyModel(nn.Module):
    """The retrieval-model interface with tiny random layers.

    ``order=True`` adds a frame-position embedding before pooling (order-aware, like seqtransf);
    ``tab=True`` returns ``[global | aligned]`` embeddings and two similarity parts.
    """

    def __init__(self, dim: int = 8, order: bool = False, tab: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.tok = nn.Embedding(64, dim)
        self.frame = nn.Linear(PIX, dim)
        self.pos = nn.Parameter(torch.randn(NUM_FRAMES, dim)) if order else None
        self.aligned = nn.Linear(dim, dim) if tab else None
        self.scale = 10.0
        self.dim = dim
        self.config = {"name": "toy", "order": order, "tab": tab, "center_weight": 0.5}
        self.calls: Counter = Counter()

    def encode_text(self, ids, mask):
        self.calls["text"] += ids.shape[0]
        m = mask.unsqueeze(-1).float()
        t = (self.tok(ids) * m).sum(1) / m.sum(1).clamp(min=1)
        return self._out(t)

    def encode_video(self, frames, mask):
        self.calls["video"] += frames.shape[0]
        x = self.frame(frames.flatten(2))
        if self.pos is not None:
            x = x + self.pos[: x.shape[1]]
        m = mask.unsqueeze(-1).float()
        v = (F.normalize(x, dim=-1) * m).sum(1) / m.sum(1).clamp(min=1)
        return self._out(v)

    def _out(self, e):
        g = F.normalize(e, dim=-1)
        if self.aligned is None:
            return g
        return torch.cat([g, F.normalize(self.aligned(e), dim=-1)], dim=-1)

    def similarity_parts(self, text, video):
        d = self.dim
        parts = [(1.0, self.scale * text[:, :d] @ video[:, :d].T)]
        if self.aligned is not None:
            parts = [(0.5, parts[0][1]), (0.5, self.scale * text[:, d:] @ video[:, d:].T)]
        return parts

    def similarity(self, text, video):
        return sum(w * s for w, s in self.similarity_parts(text, video))


class ToyVideos(Dataset):
    """Items ``(i, frames, mask)`` of random videos with 3..NUM_FRAMES real frames; counts reads."""

    def __init__(self, num: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.frames = torch.rand(num, NUM_FRAMES, 3, 4, 4, generator=g)
        lengths = torch.randint(3, NUM_FRAMES + 1, (num,), generator=g)
        self.mask = (torch.arange(NUM_FRAMES)[None] < lengths[:, None]).long()
        self.frames = self.frames * self.mask[:, :, None, None, None]
        self.reads: Counter = Counter()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i):
        self.reads[i] += 1
        return i, self.frames[i], self.mask[i]


class ToyTokenizer:
    """Words -> ids by a stable hash; the CaptionTokenizer call signature."""

    def __init__(self, max_words: int = 8) -> None:
        self.max_words = max_words

    def __call__(self, captions):
        ids = torch.zeros(len(captions), self.max_words, dtype=torch.long)
        for i, c in enumerate(captions):
            words = [1 + sum(map(ord, w)) % 63 for w in c.split()][: self.max_words]
            ids[i, : len(words)] = torch.tensor(words)
        return ids, (ids > 0).long()


def toy_split(num_videos: int = 7, captions_per_video=(1, 2, 1, 3, 1, 2, 1)):
    """A SplitData stand-in: captions grouped video by video."""
    video_ids = [f"video{i}" for i in range(num_videos)]
    captions, cv = [], []
    for v in range(num_videos):
        for c in range(captions_per_video[v % len(captions_per_video)]):
            captions.append(f"a clip number {v} with caption {c} words {v * 7 + c}")
            cv.append(v)
    return SimpleNamespace(video_ids=video_ids, captions=captions, caption_video=np.array(cv), dropped={})


def real_model(name: str):
    """A registered model (``meanp`` ... ``clip2video``) on a tiny CLIP with the BPE tokenizer's vocabulary."""
    from tests.support.tiny_clip import tiny_clip_config, tiny_model

    return tiny_model(name, clip=tiny_clip_config(vocab_size=49408))
