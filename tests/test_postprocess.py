"""Dual softmax and QB-Norm on small hand-computed matrices."""

from __future__ import annotations

import math

import pytest
import torch

from clip2video.engine.postprocess import DualSoftmax, QBNorm, dual_softmax, qb_norm


def test_dual_softmax_matches_hand_computation():
    sim = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    out, name = dual_softmax(sim, temperature=1.0)
    e = math.e
    expected = torch.tensor([[1.0 * e / (e + 1.0), 0.0], [0.0, 2.0 * e**2 / (1.0 + e**2)]])
    torch.testing.assert_close(out, expected)
    assert name == "+DSL(T=1)"
    assert torch.equal(sim, torch.tensor([[1.0, 0.0], [0.0, 2.0]])), "input must not be modified"


def test_dual_softmax_demotes_a_hub_video():
    # Video 0 is a hub: both captions score it highest. Caption 1 matches video 1 better than
    # caption 0 does, so the prior over captions for video 1 lifts it for caption 1.
    sim = torch.tensor([[0.9, 0.1], [0.8, 0.7]])
    assert sim[1].argmax() == 0
    out, _ = dual_softmax(sim, temperature=10.0)
    col0 = torch.softmax(sim[:, 0] * 10.0, dim=0)
    col1 = torch.softmax(sim[:, 1] * 10.0, dim=0)
    torch.testing.assert_close(out[1], torch.stack([0.8 * col0[1], 0.7 * col1[1]]))
    assert out[1].argmax() == 1
    assert DualSoftmax(100).row_name == "+DSL(T=100)"


def test_qb_norm_matches_hand_computation():
    beta = 1.0
    # Both bank queries retrieve video 0 first: activation set A = {0} with k = 1.
    bank = torch.tensor([[0.9, 0.2, 0.1], [0.8, 0.3, 0.5]])
    sim = torch.tensor(
        [
            [0.9, 0.85, 0.1],  # top-1 is video 0 (in A): normalised
            [0.1, 0.2, 0.7],  # top-1 is video 2 (not in A): raw
        ]
    )
    out, name = qb_norm(sim, bank, k=1, beta=beta, bank="train-captions")
    assert name == "+QB-Norm(bank=train-captions,k=1,beta=1)"
    sums = [math.exp(0.9) + math.exp(0.8), math.exp(0.2) + math.exp(0.3), math.exp(0.1) + math.exp(0.5)]
    expected_exp = [math.exp(s) / z for s, z in zip([0.9, 0.85, 0.1], sums, strict=True)]
    torch.testing.assert_close(out[0].exp(), torch.tensor(expected_exp))
    torch.testing.assert_close(out[1], sim[1])


def test_qb_norm_demotes_a_hub_and_k_widens_the_activation_set():
    bank = torch.tensor([[5.0, 1.0, 0.0], [5.0, 0.0, 2.0], [4.0, 3.0, 0.0]])
    sim = torch.tensor([[2.0, 1.9, 0.0], [0.0, 0.5, 1.0]])
    out, _ = qb_norm(sim, bank, k=1, beta=1.0)
    assert sim[0].argmax() == 0 and out[0].argmax() == 1, "the hub video 0 must lose query 0"
    torch.testing.assert_close(out[1], sim[1])  # top-1 video 2 is not in A = {0}
    out2, _ = qb_norm(sim, bank, k=2, beta=1.0)  # A = {0, 1, 2}: every query normalised
    sums = torch.logsumexp(bank, dim=0)
    torch.testing.assert_close(out2, sim - sums)


def test_qb_norm_is_stable_on_logit_scaled_scores_and_checks_shapes():
    g = torch.Generator().manual_seed(0)
    sim = 100.0 * torch.rand(4, 5, generator=g)
    bank = 100.0 * torch.rand(6, 5, generator=g)
    out, _ = qb_norm(sim, bank, k=5, beta=20.0)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="same gallery"):
        qb_norm(sim, bank[:, :3])


def test_qbnorm_spec_scores_its_bank_through_the_callback():
    bank_text = torch.eye(2)
    seen = []

    def score(text):
        seen.append(text)
        return torch.tensor([[3.0, 0.0], [3.0, 0.0]])

    spec = QBNorm(bank_text, bank="train-captions", k=1, beta=1.0)
    out = spec.apply(torch.tensor([[1.0, 0.9], [0.0, 1.0]]), score)
    assert seen[0] is bank_text
    assert out[0].argmax() == 1  # hub video 0 demoted for the query that retrieved it
    assert spec.row_name == "+QB-Norm(bank=train-captions,k=1,beta=1)"
    assert spec.directions == ("t2v",)


def test_a_post_processor_is_one_class_and_one_registration():
    from types import SimpleNamespace

    import torch

    from clip2video.engine.postprocess import (
        POSTPROCESSORS,
        build_postprocessors,
        check_postprocessors,
        list_postprocessors,
        register_postprocessor,
    )

    class Negate:
        row_name = "+neg"
        directions = ("t2v", "v2t")

        def apply(self, sim, score_texts=None):
            return -sim

    register_postprocessor("neg")(lambda ctx, model: Negate())
    try:
        assert {"dsl", "qbnorm", "neg"} <= set(list_postprocessors())
        (post,) = build_postprocessors(["neg"], ctx=SimpleNamespace(), model=None)
        assert torch.equal(post.apply(torch.ones(2, 2)), -torch.ones(2, 2))
        with pytest.raises(ValueError, match="unknown 'nope'; known: .*dsl, neg, qbnorm"):
            check_postprocessors(["dsl", "nope"])
    finally:
        POSTPROCESSORS.pop("neg", None)
