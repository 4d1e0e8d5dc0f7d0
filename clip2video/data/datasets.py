"""Torch datasets: videos (each decoded once per pass), captions, and training pairs.

Items are plain tensors and ints, so the default collate works and DataLoader workers can decode
in parallel. Evaluation encodes videos and captions separately (``VideoDataset``,
``CaptionDataset``): the official loaders decode a video once per caption (~41 times per MSVD
test video); here each video is decoded once. Training (``PairDataset``) decodes per pair, with the
frame jitter drawn from ``(seed, epoch, index)`` so results do not depend on the worker count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

MAX_AUTO_WORKERS = 8  # automatic loader workers never exceed this many
AUTO_WORKERS = -1  # the ``data.num_workers`` value that means "automatic"
CPU_CORES_PER_WORKER = 4  # on a CPU the model shares the cores: one loader worker per 4 cores


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


def resolve_num_workers(num_workers: int, device: str | torch.device = "cpu", *, phased: bool = False) -> int:
    """DataLoader workers for a ``data.num_workers`` setting; ``-1`` means automatic.

    Automatic: ``min(cores, 8)`` when nothing else needs the cores meanwhile: with CUDA (the model
    runs on the GPU) or when decoding takes turns with a CPU model (``phased``, evaluation). When a
    CPU model runs at the same time (training), one worker per 4 cores (at least 1, at most 8).
    Raises ValueError below -1.
    """
    num_workers = int(num_workers)
    if num_workers == AUTO_WORKERS:
        cores = available_cores()
        if phased or torch.device(device).type == "cuda":
            return min(cores, MAX_AUTO_WORKERS)
        return min(max(1, cores // CPU_CORES_PER_WORKER), MAX_AUTO_WORKERS)
    if num_workers < AUTO_WORKERS:
        raise ValueError(f"num_workers must be -1 (automatic) or >= 0, got {num_workers}")
    return num_workers


def _is_sampler(obj: Any) -> bool:
    return callable(getattr(obj, "load", None))


def _default_ids(paths: Sequence[Path]) -> list[str]:
    return [p.name if p.is_dir() else p.stem for p in paths]


def _ids_then(rest: tuple, names: str) -> tuple[list[str] | None, tuple]:
    """Split ``rest`` into optional video ids and the remaining arguments (which start with a sampler).

    Accepts both ``(sampler, ...)`` (docs/ARCHITECTURE.md) and ``(video_ids, sampler, ...)``.
    """
    if rest and _is_sampler(rest[0]):
        return None, rest
    if len(rest) >= 2 and _is_sampler(rest[1]):
        return [str(v) for v in rest[0]], rest[1:]
    raise TypeError(
        f"expected ({names}) or (video_ids, {names}); got {len(rest)} arguments without a sampler"
    )


def _check_ids(paths: list[Path], ids: list[str] | None) -> list[str]:
    if ids is None:
        return _default_ids(paths)
    if len(ids) != len(paths):
        raise ValueError(f"{len(ids)} video ids for {len(paths)} video paths; pass one id per path")
    return ids


class VideoDataset(Dataset):
    """Item ``i`` -> ``(i, frames FloatTensor[F, 3, S, S], mask LongTensor[F])``; one decode per item.

    ``VideoDataset(paths, sampler)`` or ``VideoDataset(paths, video_ids, sampler)``; ids (default:
    the file stem or folder name) name the video in read errors. ``rng`` of the sampler's load
    is None: evaluation samplers (``train=False``) are deterministic.
    """

    def __init__(
        self, paths: Sequence[str | Path], *rest: Any, video_ids: Sequence[str] | None = None
    ) -> None:
        ids, (sampler,) = _ids_then(rest, "sampler")
        self.paths = [Path(p) for p in paths]
        self.video_ids = _check_ids(self.paths, ids if video_ids is None else list(video_ids))
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        frames, mask = self.sampler.load(self.paths[index], video_id=self.video_ids[index])
        return index, frames, mask


class CaptionDataset(Dataset):
    """Item ``i`` -> ``(i, ids LongTensor[L], mask LongTensor[L])``; all captions tokenized up front.

    Tokenizing in ``__init__`` surfaces bad captions (the error names the caption's index) before
    any video is decoded.
    """

    def __init__(self, captions: Sequence[str], tokenizer: Any) -> None:
        self.captions = list(captions)
        self.ids, self.mask = tokenizer(self.captions)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        return index, self.ids[index], self.mask[index]


class PairDataset(Dataset):
    """Training pairs: item ``i`` -> ``(ids, mask, frames, fmask, video_index)``, decoded per pair.

    ``PairDataset(pairs, paths, sampler, tokenizer, seed)`` or ``PairDataset(pairs, paths,
    video_ids, sampler, tokenizer, seed)``; ``pairs`` are ``(video index, caption)``. The frame
    jitter of pair ``i`` uses ``numpy.random.default_rng((seed, epoch, i))``, so an epoch's items
    are the same with any number of workers; call ``set_epoch`` before each epoch.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[int, str]],
        paths: Sequence[str | Path],
        *rest: Any,
        video_ids: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> None:
        ids, rest = _ids_then(rest, "sampler, tokenizer, seed")
        if len(rest) not in (2, 3):
            raise TypeError("PairDataset(pairs, paths, [video_ids,] sampler, tokenizer, seed)")
        self.sampler, self.tokenizer = rest[0], rest[1]
        self.seed = int(rest[2] if len(rest) == 3 else (seed or 0))
        self.paths = [Path(p) for p in paths]
        self.video_ids = _check_ids(self.paths, ids if video_ids is None else list(video_ids))
        self.pairs = [(int(v), c) for v, c in pairs]
        bad = [i for i, (v, _) in enumerate(self.pairs) if not 0 <= v < len(self.paths)]
        if bad:
            raise ValueError(
                f"pairs {bad[:10]} point at video indices outside 0..{len(self.paths) - 1}; "
                "pairs hold (index into paths, caption)"
            )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose frame jitter the items use."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The jitter generator of pair ``index`` in the current epoch."""
        return np.random.default_rng((self.seed, self.epoch, int(index)))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        video, caption = self.pairs[index]
        ids, mask = (
            self.tokenizer([caption], start=index)
            if _takes_start(self.tokenizer)
            else self.tokenizer([caption])
        )
        frames, fmask = self.sampler.load(
            self.paths[video], rng=self.rng(index), video_id=self.video_ids[video]
        )
        return ids[0], mask[0], frames, fmask, video


def _takes_start(tokenizer: Any) -> bool:
    """Whether the tokenizer accepts ``start=`` (ours does: errors then name the pair's index)."""
    from clip2video.data.text import CaptionTokenizer

    return isinstance(tokenizer, CaptionTokenizer)
