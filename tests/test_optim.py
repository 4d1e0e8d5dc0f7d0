"""CLIP4Clip's optimizer recipe: groups, learning rates, schedule, BertAdam's update."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from clip2video.engine.optim import (
    GROUP_NAMES,
    BertAdam,
    build_optimizer,
    param_groups,
    warmup_cosine,
    warmup_cosine_factor,
)


class Named(nn.Module):
    """Parameters named like the real models: clip.* (with LayerNorms) and new modules."""

    def __init__(self) -> None:
        super().__init__()
        self.clip = nn.Module()
        self.clip.ln_final = nn.LayerNorm(4)
        self.clip.proj = nn.Linear(4, 4)
        self.clip.logit_scale = nn.Parameter(torch.tensor(1.0))
        self.frame_position_embeddings = nn.Embedding(6, 4)
        self.transformerClip = nn.Linear(4, 4)
        self.trans_layernorm = nn.LayerNorm(4)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def groups_by_name(model):
    return {g["name"]: g for g in param_groups(model, lr=1e-4, coef_lr=1e-3, weight_decay=0.2)}


def test_group_membership_by_name():
    groups = groups_by_name(Named())
    assert tuple(groups) == GROUP_NAMES
    assert sorted(groups["clip_decay"]["param_names"]) == [
        "clip.ln_final.weight",
        "clip.logit_scale",
        "clip.proj.weight",
    ]
    assert sorted(groups["clip_no_decay"]["param_names"]) == ["clip.ln_final.bias", "clip.proj.bias"]
    assert sorted(groups["new_decay"]["param_names"]) == [
        "frame_position_embeddings.weight",
        "trans_layernorm.weight",
        "transformerClip.weight",
    ]
    assert sorted(groups["new_no_decay"]["param_names"]) == ["trans_layernorm.bias", "transformerClip.bias"]
    every = [n for g in groups.values() for n in g["param_names"]]
    assert not any(n.startswith("frozen") for n in every)  # frozen parameters are not optimized
    assert len(every) == len(set(every))


def test_learning_rates_and_decay_per_group():
    opt = build_optimizer(Named())
    got = {g["name"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert got["clip_decay"] == (pytest.approx(1e-7), 0.2)
    assert got["clip_no_decay"] == (pytest.approx(1e-7), 0.0)
    assert got["new_decay"] == (1e-4, 0.2)
    assert got["new_no_decay"] == (1e-4, 0.0)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6


def test_layernorm_weight_is_decayed():
    """With zero gradients only weight decay moves a parameter: LayerNorm weights shrink, biases stay."""
    model = Named()
    opt = build_optimizer(model, lr=0.1, coef_lr=1.0, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    w0, b0 = model.trans_layernorm.weight.detach().clone(), model.trans_layernorm.bias.detach().clone()
    opt.step()
    torch.testing.assert_close(model.trans_layernorm.weight.detach(), w0 * (1 - 0.1 * 0.5))
    torch.testing.assert_close(model.trans_layernorm.bias.detach(), b0)


@pytest.mark.parametrize(
    "step,expected",
    [
        (0, 0.0),
        (5, 0.5),  # 0.05 / 0.1
        (9, 0.9),
        (10, 0.5 * (1 + 0.9510565162951535)),  # x = 0.1 is past warmup: cos(0.1 pi)
        (50, 0.5),
        (75, 0.5 * (1 - 0.7071067811865476)),  # cos(0.75 pi) = -sqrt(2)/2
        (100, 0.0),
    ],
)
def test_warmup_cosine_factor_values(step, expected):
    assert warmup_cosine_factor(step, 100, 0.1) == pytest.approx(expected, abs=1e-12)


def test_scheduler_drives_group_lrs():
    model = Named()
    opt = build_optimizer(model, lr=1e-4, coef_lr=1e-3)
    sched = warmup_cosine(opt, total_steps=20, warmup=0.1)
    seen = []
    for _ in range(20):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        opt.step()
        sched.step()
    # step k uses factor(k / 20): 0 at first (as BertAdam), peak at k = 2 (x = 0.1)
    assert seen[0] == (0.0, 0.0)
    assert seen[1][1] == pytest.approx(1e-4 * 0.05 / 0.1)
    assert seen[2][1] == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert seen[2][0] == pytest.approx(1e-7 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    with pytest.raises(ValueError, match="fraction"):
        warmup_cosine(opt, 10, warmup=1.5)


def test_bertadam_update_matches_hand_formula():
    """No bias correction, eps outside the sqrt, decay inside the update: p -= lr (m/(sqrt v + eps) + wd p)."""
    p = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    g1, g2 = torch.tensor([0.1, -0.2, 0.05]), torch.tensor([-0.3, 0.1, 0.2])
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.98, 1e-6, 0.2
    opt = BertAdam([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, max_grad_norm=0)
    x = p.detach().double().clone()
    m = torch.zeros(3, dtype=torch.float64)
    v = torch.zeros(3, dtype=torch.float64)
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
        m = b1 * m + (1 - b1) * g.double()
        v = b2 * v + (1 - b2) * g.double() ** 2
        x = x - lr * (m / (v.sqrt() + eps) + wd * x)
    torch.testing.assert_close(p.detach().double(), x, rtol=1e-6, atol=1e-7)
    assert opt.state[p]["step"] == 2


def test_bertadam_per_parameter_clipping():
    p = nn.Parameter(torch.zeros(2))
    opt = BertAdam([p], lr=1.0, weight_decay=0.0, max_grad_norm=1.0)
    p.grad = torch.tensor([3.0, 4.0])  # norm 5 -> clipped to norm 1
    opt.step()
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.1 * torch.tensor([0.6, 0.8]), rtol=1e-4, atol=1e-7)


def test_bias_correction_without_clipping_is_adamw():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    ours = BertAdam(a.parameters(), lr=0.05, weight_decay=0.1, max_grad_norm=0, bias_correction=True)
    ref = torch.optim.AdamW(b.parameters(), lr=0.05, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    for _ in range(5):
        x = torch.randn(4, 3)
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    a = nn.Linear(3, 2)
    opt = BertAdam(a.parameters(), lr=0.05)
    x = torch.randn(4, 3)
    for _ in range(2):
        opt.zero_grad()
        a(x).sum().backward()
        opt.step()
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    opt_b = BertAdam(b.parameters(), lr=0.05)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))  # as from disk: no shared tensors
    for model, o in ((a, opt), (b, opt_b)):
        o.zero_grad()
        model(x).sum().backward()
        o.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
