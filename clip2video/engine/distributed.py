"""Everything ``torch.distributed``: the torchrun environment, training collectives, and
evaluation gathering by sample id. The one home of the distributed helpers.

Training. Every rank takes its slice of the same globally shuffled batch, gathers the embeddings
of the whole global batch and computes the *same* full-batch contrastive loss (as CLIP4Clip does).
:func:`all_gather_with_grad` sums the incoming gradients over ranks in its backward, so each rank's
local slice receives ``world * dL/dslice``; :func:`average_gradients` (what DDP's reducer does)
then divides by ``world``. The parameter gradient is therefore exactly the single-process gradient
of the same global batch, whatever the number of processes.

Evaluation. A padded ``DistributedSampler`` repeats samples so that every rank gets the same
count; gathering its outputs by position then duplicates some items and shifts others (one public
codebase loses a video and duplicates another that way). Here every embedding travels with its
sample index: :func:`gather_by_index` pads shards to equal length for ``all_gather``, then scatters
rows into a ``[total, E]`` tensor by index, dropping padding and duplicates and checking that every
index arrived. :func:`shard_indices` shards without padding in the first place. The encoders that
use them live in :mod:`clip2video.engine.encode` (this module imports nothing from the engine).

Launch with torchrun, e.g.::

    python -m torch.distributed.run --nproc_per_node 2 -m clip2video ablation ...

and call :func:`init_distributed_from_env` first: it reads ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` and joins the process group (NCCL on CUDA, gloo on the CPU).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "all_agree",
    "all_gather_nograd",
    "all_gather_with_grad",
    "assemble_by_index",
    "average_gradients",
    "barrier",
    "broadcast_object",
    "broadcast_parameters",
    "gather_by_index",
    "init_distributed_from_env",
    "is_distributed",
    "rank_and_world",
    "shard_indices",
]

BUCKET_NUMEL = 1 << 24  # elements per all_reduce bucket in average_gradients


def is_distributed() -> bool:
    """True inside an initialized process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; return ``(rank, world)``.

    Outside torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) nothing is initialized and
    ``(0, 1)`` is returned. On CUDA the current device becomes ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world} but {', '.join(missing)} unset: launch with "
            "`python -m torch.distributed.run --nproc_per_node N ...`"
        )
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's tensor along dim 0; backward sums gradients over ranks, then
    returns this rank's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        rank, world = dist.get_rank(), dist.get_world_size()
        ctx.rank, ctx.n = rank, tensor.shape[0]
        chunks = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(chunks, tensor.contiguous())
        return torch.cat(chunks, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``cat`` of every rank's ``tensor`` (same shape on every rank) keeping the local autograd
    graph; identity outside a process group."""
    if not is_distributed():
        return tensor
    return _AllGatherWithGrad.apply(tensor)


@torch.no_grad()
def all_gather_nograd(tensor: torch.Tensor) -> torch.Tensor:
    """``cat`` of every rank's ``tensor`` along dim 0, without gradients."""
    if not is_distributed():
        return tensor
    chunks = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(chunks, tensor.contiguous())
    return torch.cat(chunks, dim=0)


@torch.no_grad()
def average_gradients(model: nn.Module) -> None:
    """Mean of every parameter's gradient over ranks (bucketed all_reduce), as DDP's reducer.

    Parameters without a gradient are skipped; every rank runs the same graph, so the set of
    such parameters is the same on all ranks.
    """
    if not is_distributed():
        return
    world = dist.get_world_size()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    by_dtype: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault((g.dtype, g.device), []).append(g)
    for group in by_dtype.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for g in group:
            bucket.append(g)
            size += g.numel()
            if size >= BUCKET_NUMEL:
                _reduce_bucket(bucket, world)
                bucket, size = [], 0
        if bucket:
            _reduce_bucket(bucket, world)


def _reduce_bucket(grads: list[torch.Tensor], world: int) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (DDP does this at construction)."""
    if not is_distributed():
        return
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=src)


def barrier() -> None:
    """``dist.barrier()`` inside a process group; nothing otherwise."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s picklable ``obj`` on every rank; ``obj`` itself outside a process group."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# ----------------------------------------------------------------------------- evaluation gathering


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
