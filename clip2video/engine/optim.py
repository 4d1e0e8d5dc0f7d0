"""CLIP4Clip's optimizer recipe: BertAdam, four parameter groups, warmup + cosine over the whole run.

Faithful to CLIP4Clip (models.md, "Training"):

* Adam with betas (0.9, 0.98), eps 1e-6 added *outside* the square root and **no bias
  correction** (BertAdam), decoupled weight decay folded into the update before the learning rate
  (``p -= lr * (m / (sqrt(v) + eps) + wd * p)``), and per-parameter gradient-norm clipping
  (``max_grad_norm``) inside the step, on top of the global clipping the training loop does.
  ``bias_correction=True`` with ``max_grad_norm=0`` is exactly ``torch.optim.AdamW``.
* Groups: ``clip.*`` parameters get ``lr * coef_lr``; every parameter whose name contains
  ``bias`` gets no weight decay (LayerNorm weights *are* decayed: CLIP4Clip's ``LayerNorm.*``
  entries match no CLIP name).
* Schedule: factor ``x / warmup`` while ``x < warmup``, else ``0.5 * (1 + cos(pi * x))`` with
  ``x = step / total_steps`` (the whole run). Optimizer step ``k`` (0-based) uses ``x = k / total``,
  so the first step has learning rate 0, as in BertAdam.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

GROUP_NAMES: tuple[str, ...] = ("clip_decay", "new_decay", "clip_no_decay", "new_no_decay")


class BertAdam(Optimizer):
    """Adam as CLIP4Clip's BertAdam: no bias correction, decoupled decay, per-parameter clipping.

    The learning rate is ``group["lr"]`` as it stands (a scheduler such as :func:`warmup_cosine`
    sets it); state is ``step``, ``exp_avg`` and ``exp_avg_sq`` per parameter.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.2,
        max_grad_norm: float = 1.0,
        bias_correction: bool = False,
    ) -> None:
        if lr < 0:
            raise ValueError(f"BertAdam: learning rate must be >= 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"BertAdam: betas must lie in [0, 1), got {betas}")
        if eps < 0:
            raise ValueError(f"BertAdam: eps must be >= 0, got {eps}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            bias_correction=bias_correction,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch's Optimizer.step contract
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            if group["max_grad_norm"] > 0:
                _clip_each_(group["params"], group["max_grad_norm"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                state["step"] += 1
                if group["bias_correction"]:
                    t = state["step"]
                    m = exp_avg / (1 - beta1**t)
                    v = exp_avg_sq / (1 - beta2**t)
                else:
                    m, v = exp_avg, exp_avg_sq
                update = m / (v.sqrt() + eps)
                if wd > 0:
                    update.add_(p, alpha=wd)
                p.add_(update, alpha=-lr)
        return loss


def _clip_each_(params: list[torch.Tensor], max_norm: float) -> None:
    """Clip every parameter's gradient to norm ``max_norm`` on its own (``clip_grad_norm_(p, max_norm)``
    for each ``p``, with one batched norm)."""
    grads = [p.grad for p in params if p.grad is not None]
    if any(g.is_sparse for g in grads):
        raise RuntimeError("BertAdam does not support sparse gradients")
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    coefs = [(max_norm / (n + 1e-6)).clamp(max=1.0) for n in norms]
    torch._foreach_mul_(grads, coefs)


def param_groups(model: nn.Module, *, lr: float, coef_lr: float, weight_decay: float) -> list[dict]:
    """CLIP4Clip's four groups, in :data:`GROUP_NAMES` order; frozen parameters are left out.

    Each group carries ``name`` and ``param_names`` (for logging and tests) besides torch's keys.
    """
    buckets: dict[str, list[tuple[str, nn.Parameter]]] = {name: [] for name in GROUP_NAMES}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        side = "clip" if name.startswith("clip.") else "new"
        decay = "no_decay" if "bias" in name else "decay"
        buckets[f"{side}_{decay}"].append((name, p))
    groups = []
    for gname, items in buckets.items():
        groups.append(
            {
                "name": gname,
                "param_names": [n for n, _ in items],
                "params": [p for _, p in items],
                "lr": lr * coef_lr if gname.startswith("clip") else lr,
                "weight_decay": 0.0 if gname.endswith("no_decay") else weight_decay,
            }
        )
    return groups


def build_optimizer(
    model: nn.Module,
    *,
    lr: float = 1e-4,
    coef_lr: float = 1e-3,
    weight_decay: float = 0.2,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    max_grad_norm: float = 1.0,
    bias_correction: bool = False,
) -> BertAdam:
    """BertAdam over :func:`param_groups`; the defaults are CLIP4Clip's recipe."""
    groups = param_groups(model, lr=lr, coef_lr=coef_lr, weight_decay=weight_decay)
    if not any(g["params"] for g in groups):
        raise ValueError(f"{type(model).__name__} has no trainable parameters to optimize")
    return BertAdam(
        groups,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        bias_correction=bias_correction,
    )


def warmup_cosine_factor(step: int, total_steps: int, warmup: float = 0.1) -> float:
    """Learning-rate factor at optimizer step ``step``: ``x / warmup`` then ``0.5 (1 + cos(pi x))``."""
    x = step / total_steps
    if x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * x))


class _WarmupCosine:
    """Picklable schedule function (LambdaLR keeps callable objects in its state_dict)."""

    def __init__(self, total_steps: int, warmup: float) -> None:
        self.total_steps = total_steps
        self.warmup = warmup

    def __call__(self, step: int) -> float:
        return warmup_cosine_factor(step, self.total_steps, self.warmup)


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup: float = 0.1) -> LambdaLR:
    """LambdaLR with :func:`warmup_cosine_factor`; call ``.step()`` once after each optimizer step."""
    if total_steps < 1:
        raise ValueError(f"warmup_cosine needs total_steps >= 1, got {total_steps}")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup is a fraction of the run in [0, 1), got {warmup}")
    return LambdaLR(optimizer, _WarmupCosine(total_steps, warmup))
