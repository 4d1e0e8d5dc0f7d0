"""Distributed evaluation: each rank encodes its shard, embeddings are gathered by sample id.

A padded ``DistributedSampler`` repeats samples so that every rank gets the same count; gathering
its outputs by position then duplicates some items and shifts others (one public codebase loses
a video and duplicates another that way). Here every embedding travels with its sample index:
:func:`gather_by_index` pads shards to equal length for ``all_gather``, then scatters rows into a
``[total, E]`` tensor by index, dropping padding and duplicates and checking that every index
arrived. :func:`shard_indices` shards without padding in the first place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from clip2video.engine.ddp import is_distributed, rank_and_world

__all__ = [
    "all_agree",
    "assemble_by_index",
    "encode_distributed",
    "encode_texts_distributed",
    "encode_videos_distributed",
    "gather_by_index",
    "is_distributed",
    "rank_and_world",
    "shard_indices",
]


def shard_indices(total: int, rank: int, world: int, *, contiguous: bool = False) -> list[int]:
    """This rank's sample indices, without padding: strided (``rank, rank+world, ...``) or contiguous."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard_indices: rank {rank} is not in 0..{world - 1}")
    if not contiguous:
        return list(range(rank, total, world))
    base, extra = divmod(total, world)
    start = rank * base + min(rank, extra)
    return list(range(start, start + base + (1 if rank < extra else 0)))


def assemble_by_index(chunks: Sequence[Tensor], indices: Sequence[Tensor], total: int) -> Tensor:
    """Scatter rows of ``chunks`` into ``[total, E]`` by their ``indices`` (index < 0 = padding).

    A sample seen several times (padded sampler) keeps one copy. Raises ValueError naming the
    indices that no shard delivered, or any index outside ``0..total-1``.
    """
    width = max((c.shape[1] for c in chunks if c.ndim == 2 and c.shape[0]), default=0)
    device = chunks[0].device if chunks else torch.device("cpu")
    out = torch.zeros(total, width, dtype=torch.float32, device=device)
    seen = torch.zeros(total, dtype=torch.bool, device=device)
    for chunk, idx in zip(chunks, indices, strict=True):
        idx = torch.as_tensor(idx, dtype=torch.long, device=device).reshape(-1)
        keep = idx >= 0
        if keep.sum() == 0:
            continue
        idx, rows = idx[keep], chunk[keep.to(chunk.device)].to(device=device, dtype=torch.float32)
        bad = idx[idx >= total]
        if bad.numel():
            raise ValueError(f"assemble_by_index: sample indices {bad.tolist()} are >= total {total}")
        out[idx] = rows
        seen[idx] = True
    missing = torch.nonzero(~seen).flatten().tolist()
    if missing:
        raise ValueError(
            f"assemble_by_index: no rank delivered samples {missing[:50]}"
            f"{' ...' if len(missing) > 50 else ''} of {total}; every index must be encoded by some rank"
        )
    return out


def _comm_device() -> torch.device:
    """Where collectives run: the current CUDA device for NCCL, the CPU otherwise."""
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def gather_by_index(local_embeddings: Tensor, local_indices: Tensor | Sequence[int], total: int) -> Tensor:
    """All ranks' ``(embeddings, indices)`` -> the full ``[total, E]`` tensor, on every rank.

    Shards may differ in length (and be empty): they are padded to the longest with index -1
    before ``all_gather``. Outside a process group this is :func:`assemble_by_index` of the one shard.
    """
    idx = torch.as_tensor(local_indices, dtype=torch.long).reshape(-1)
    emb = local_embeddings.reshape(idx.numel(), -1) if idx.numel() else local_embeddings
    if not is_distributed():
        return assemble_by_index([emb], [idx], total).to(local_embeddings.device)
    _, world = rank_and_world()
    dev = _comm_device()
    shape = torch.tensor([idx.numel(), emb.shape[1] if emb.ndim == 2 and idx.numel() else 0], device=dev)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    longest = int(max(s[0] for s in shapes))
    width = int(max(s[1] for s in shapes))
    padded = torch.zeros(longest, width, dtype=torch.float32, device=dev)
    padded_idx = torch.full((longest,), -1, dtype=torch.long, device=dev)
    if idx.numel():
        padded[: idx.numel()] = emb.to(dev, torch.float32)
        padded_idx[: idx.numel()] = idx.to(dev)
    all_emb = [torch.empty_like(padded) for _ in range(world)]
    all_idx = [torch.empty_like(padded_idx) for _ in range(world)]
    dist.all_gather(all_emb, padded)
    dist.all_gather(all_idx, padded_idx)
    return assemble_by_index(all_emb, all_idx, total).to(local_embeddings.device)


def all_agree(flag: bool) -> bool:
    """True when ``flag`` is true on every rank (just ``flag`` outside a process group)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def encode_texts_distributed(
    model: nn.Module, ids: Tensor, mask: Tensor, *, contiguous: bool = False, **kwargs
) -> Tensor:
    """:func:`~clip2video.engine.evaluate.encode_texts` of this rank's shard, gathered by index."""
    from clip2video.engine.evaluate import encode_texts

    if not is_distributed():
        return encode_texts(model, ids, mask, **kwargs)
    rank, world = rank_and_world()
    shard = shard_indices(ids.shape[0], rank, world, contiguous=contiguous)
    if shard:
        local = encode_texts(model, ids[shard], mask[shard], **kwargs)
    else:
        local = torch.zeros(0, 0)
    return gather_by_index(local, shard, ids.shape[0])


def encode_videos_distributed(
    model: nn.Module, dataset: Dataset | DataLoader, *, contiguous: bool = False, **kwargs
) -> Tensor:
    """:func:`~clip2video.engine.evaluate.encode_videos` where each rank decodes and encodes its shard.

    Items must be ``(i, frames, mask)``; the gathered result has row ``i`` = item ``i``.
    A DataLoader argument is unwrapped to its dataset (its sampler would pad).
    """
    from clip2video.engine.evaluate import encode_video_items, encode_videos

    if not is_distributed():
        return encode_videos(model, dataset, **kwargs)
    if isinstance(dataset, DataLoader):
        dataset = dataset.dataset
    rank, world = rank_and_world()
    total = len(dataset)
    shard = shard_indices(total, rank, world, contiguous=contiguous)
    if shard:
        idx, local = encode_video_items(model, Subset(dataset, shard), **kwargs)
    else:
        idx, local = torch.zeros(0, dtype=torch.long), torch.zeros(0, 0)
    return gather_by_index(local, idx, total)


def encode_distributed(
    model: nn.Module, ids: Tensor, mask: Tensor, video_dataset: Dataset, **kwargs
) -> tuple[Tensor, Tensor]:
    """``(text[N, E], video[M, E])`` encoded across the ranks, identical on every rank.

    ``kwargs`` go to the encoders (batch_size, num_workers, device, amp, reverse_frames ...;
    text-only / video-only keys are routed accordingly).
    """
    video_only = {"num_workers", "reverse_frames"}
    text_kwargs = {k: v for k, v in kwargs.items() if k not in video_only}
    text = encode_texts_distributed(model, ids, mask, **text_kwargs)
    video = encode_videos_distributed(model, video_dataset, **kwargs)
    return text, video
