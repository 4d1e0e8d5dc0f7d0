"""Data-parallel training over ``torch.distributed`` (torchrun): embedding all_gather with
gradients, gradient averaging, and the torchrun environment.

Every rank takes its slice of the same globally shuffled batch, gathers the embeddings of the
whole global batch and computes the *same* full-batch contrastive loss (as CLIP4Clip does).
:func:`all_gather_with_grad` sums the incoming gradients over ranks in its backward, so each rank's
local slice receives ``world * dL/dslice``; :func:`average_gradients` (what DDP's reducer does)
then divides by ``world``. The parameter gradient is therefore exactly the single-process gradient
of the same global batch, whatever the number of processes.

Launch with torchrun, e.g.::

    python -m torch.distributed.run --nproc_per_node 2 -m clip2video ablation ...

and call :func:`init_distributed_from_env` first: it reads ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` and joins the process group (NCCL on CUDA, gloo on the CPU).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

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
