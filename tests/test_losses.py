"""Co-learning loss against hand-written formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clip2video.engine.losses import co_learning_loss, symmetric_ce


def brute_symmetric_ce(logits: np.ndarray) -> float:
    """(CE over rows + CE over columns) / 2 with explicit loops, in float64."""
    b = logits.shape[0]
    rows = cols = 0.0
    for i in range(b):
        rows += -logits[i, i] + math.log(sum(math.exp(logits[i, j]) for j in range(b)))
        cols += -logits[i, i] + math.log(sum(math.exp(logits[j, i]) for j in range(b)))
    return (rows / b + cols / b) / 2


def test_symmetric_ce_matches_brute_force():
    logits = torch.randn(5, 5) * 3
    assert float(symmetric_ce(logits)) == pytest.approx(brute_symmetric_ce(logits.double().numpy()), rel=1e-6)


def test_symmetric_ce_is_not_one_sided():
    logits = torch.randn(4, 4) * 2
    one_sided = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert float(symmetric_ce(logits)) != pytest.approx(float(one_sided), rel=1e-4)
    assert float(symmetric_ce(logits)) == pytest.approx(float(symmetric_ce(logits.t())), rel=1e-6)


def test_symmetric_ce_limits_and_dtype():
    assert float(symmetric_ce(torch.zeros(6, 6))) == pytest.approx(math.log(6))
    assert float(symmetric_ce(torch.eye(3) * 50)) < 1e-10
    out = symmetric_ce(torch.randn(3, 3).bfloat16())
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="square"):
        symmetric_ce(torch.zeros(2, 3))


class Parts:
    """A model stub returning fixed logits parts."""

    def __init__(self, parts):
        self.parts = parts

    def similarity_parts(self, text, video):
        return self.parts


def test_co_learning_loss_single_part_is_symmetric_ce():
    logits = torch.randn(4, 4)
    loss, logs = co_learning_loss(Parts([(1.0, logits)]), None, None)
    expected = brute_symmetric_ce(logits.double().numpy())
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert logs["loss"] == pytest.approx(expected, rel=1e-6) and logs["loss_part0"] == pytest.approx(
        expected, rel=1e-6
    )


def test_co_learning_loss_tab_weights_global_and_aligned():
    g, a = torch.randn(4, 4) * 2, torch.randn(4, 4) * 2
    w = 0.3
    loss, logs = co_learning_loss(Parts([(w, g), (1 - w, a)]), None, None)
    lg, la = brute_symmetric_ce(g.double().numpy()), brute_symmetric_ce(a.double().numpy())
    assert float(loss) == pytest.approx(w * lg + (1 - w) * la, rel=1e-6)
    assert logs["loss_part0"] == pytest.approx(lg, rel=1e-6) and logs["loss_part1"] == pytest.approx(
        la, rel=1e-6
    )


def test_co_learning_loss_backpropagates_into_each_part():
    g = torch.randn(3, 3, requires_grad=True)
    a = torch.randn(3, 3, requires_grad=True)
    loss, _ = co_learning_loss(Parts([(0.5, g), (0.5, a)]), None, None)
    loss.backward()
    # d/dlogits of symmetric CE: (softmax_rows - I) / (2B) + (softmax_cols - I) / (2B), times the weight
    for t in (g, a):
        x = t.detach().double()
        expected = 0.5 * ((x.softmax(1) - torch.eye(3)) + (x.softmax(0) - torch.eye(3))) / (2 * 3)
        torch.testing.assert_close(t.grad.double(), expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="no parts"):
        co_learning_loss(Parts([]), None, None)
