"""Stand-ins for the training tests: a tiny retrieval model with the registry contract (and a
CLIP-shaped stub inside), a pair dataset whose frames are re-drawn per epoch, and helpers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clip2video.engine.train import TrainConfig

WIDTH, FRAMES, WORDS, VOCAB, PIX = 8, 4, 5, 40, 2


class TinyClip(nn.Module):
    """A CLIP-shaped stub: token embedding, final LayerNorm, text projection, frame encoder, logit scale."""

    def __init__(self) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB, WIDTH)
        self.ln_final = nn.LayerNorm(WIDTH)
        self.text_projection = nn.Parameter(torch.randn(WIDTH, WIDTH) * WIDTH**-0.5)
        self.visual = nn.Linear(3 * PIX * PIX, WIDTH)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


class StandInModel(nn.Module):
    """Registry contract (encode_text / encode_video / similarity_parts) at toy size.

    ``tab=True`` returns ``[global | aligned]`` embeddings and two parts (w, 1 - w), as TAB models do.
    """

    def __init__(self, *, tab: bool = False, w: float = 0.5, dropout: float = 0.0) -> None:
        super().__init__()
        self.clip = TinyClip()
        self.temporal = nn.Linear(WIDTH, WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.drop = nn.Dropout(dropout)
        self.tab, self.w = tab, w
        if tab:
            self.centers = nn.Parameter(torch.randn(WIDTH, WIDTH) * WIDTH**-0.5)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.clip.ln_final(self.clip.token_embedding(ids)) @ self.clip.text_projection
        m = mask.unsqueeze(-1).float()
        t = self.drop((h * m).sum(1) / m.sum(1).clamp(min=1))
        return self._out(t)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.clip.visual(frames.flatten(2))
        x = self.drop(x + self.temporal(self.norm(x)))
        m = mask.unsqueeze(-1).float()
        return self._out((x * m).sum(1) / m.sum(1).clamp(min=1))

    def _out(self, e: torch.Tensor) -> torch.Tensor:
        g = F.normalize(e, dim=-1)
        if not self.tab:
            return g
        return torch.cat([g, F.normalize(torch.tanh(e @ self.centers), dim=-1)], dim=-1)

    def similarity_parts(self, text: torch.Tensor, video: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        scale = self.clip.logit_scale.exp()
        if not self.tab:
            return [(1.0, scale * text @ video.t())]
        g = scale * text[:, :WIDTH] @ video[:, :WIDTH].t()
        a = scale * text[:, WIDTH:] @ video[:, WIDTH:].t()
        return [(self.w, g), (1.0 - self.w, a)]

    def similarity(self, text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        return sum(w * s for w, s in self.similarity_parts(text, video))


class ToyPairs(torch.utils.data.Dataset):
    """Pairs whose caption and video share a latent class; ``set_epoch`` re-draws frame noise as a
    pure function of (seed, epoch, index), like the real PairDataset's train-time sampling."""

    def __init__(self, n: int = 16, *, seed: int = 0, classes: int = 8) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % classes
        self.words = torch.randint(1, VOCAB, (classes, WORDS), generator=g)
        self.protos = torch.randn(classes, 3 * PIX * PIX, generator=g)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        c = int(self.labels[i])
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + i)
        ids = self.words[c].clone()
        mask = torch.ones(WORDS, dtype=torch.long)
        mask[-1] = int(i % 2)
        frames = self.protos[c] + 0.3 * torch.randn(FRAMES, 3 * PIX * PIX, generator=g)
        fmask = torch.ones(FRAMES, dtype=torch.long)
        fmask[-1] = 0
        return ids, mask, frames.view(FRAMES, 3, PIX, PIX), fmask, i


def batch_of(dataset: ToyPairs, indices: list[int]) -> list[torch.Tensor]:
    """Collate items like the DataLoader does."""
    return list(torch.utils.data.default_collate([dataset[i] for i in indices]))


def recall_at_1(model: nn.Module, dataset: ToyPairs) -> dict[str, float]:
    """Validation by hand: text-to-video R@1 over the whole toy set (each caption's own pair)."""
    ids, mask, frames, fmask, _ = batch_of(dataset, list(range(len(dataset))))
    with torch.no_grad():
        sim = model.similarity(model.encode_text(ids, mask), model.encode_video(frames, fmask))
    return {"t2v_R1": float((sim.argmax(1) == torch.arange(len(dataset))).float().mean() * 100)}


def grads_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def cfg(**kw) -> TrainConfig:
    base = dict(
        epochs=2, batch_size=4, lr=1e-2, coef_lr=1.0, warmup=0.1, seed=3, progress=False, device="cpu"
    )
    base.update(kw)
    return TrainConfig(**base)
