"""MoEDiff-SR joint-training gating terms (Eq. 14-18) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from training.moediff.gating_losses import (
    MAD_TO_SIGMA,
    UncertaintyWeight,
    cosine_to_truth,
    diversity_term,
    gate_targets,
    gating_loss,
    mad_temperature,
    warmup_gates,
)


def test_mad_temperature_and_targets_by_hand() -> None:
    sim = torch.tensor([[0.9, 0.5, 0.1], [0.8, 0.6, 0.2]])
    # torch.median takes the lower middle value: median(0.9 .5 .1 .8 .6 .2) = 0.5, and likewise for the deviations
    med = 0.5
    devs = sorted(abs(v - med) for v in sim.reshape(-1).tolist())
    expected = MAD_TO_SIGMA * devs[(len(devs) - 1) // 2]
    assert float(mad_temperature(sim)) == pytest.approx(expected)
    t = gate_targets(sim)
    torch.testing.assert_close(t, torch.softmax(sim / expected, dim=1))
    torch.testing.assert_close(t.sum(dim=1), torch.ones(2))
    assert bool((t[:, 0] > t[:, 1]).all() and (t[:, 1] > t[:, 2]).all())  # the closest expert is the target
    assert float(mad_temperature(torch.full((2, 3), 0.7))) > 0  # identical similarities: the floor


def test_cosine_to_truth_and_diversity() -> None:
    z0 = torch.randn(2, 3, 4, 4)
    experts = torch.stack([z0, -z0, 2 * z0])  # cos = 1, -1, 1
    torch.testing.assert_close(cosine_to_truth(experts, z0), torch.tensor([[1.0, -1.0, 1.0]] * 2))
    # most similar partners: 0<->2 (cos 1) for experts 0 and 2, expert 1's best is -1
    assert float(diversity_term(experts)) == pytest.approx(math.log1p((1 + (-1) + 1) / 3), abs=1e-6)
    orth = torch.zeros(3, 1, 3)
    orth[0, 0, 0], orth[1, 0, 1], orth[2, 0, 2] = 1, 1, 1
    assert float(diversity_term(orth)) == pytest.approx(0.0, abs=1e-7)  # orthogonal experts: no penalty
    with pytest.raises(ValueError):
        diversity_term(experts[:1])


def test_gating_loss_prefers_gates_that_match_the_best_expert() -> None:
    z0 = torch.randn(4, 2, 4, 4)
    experts = torch.stack([z0 + 0.01 * torch.randn_like(z0), torch.randn_like(z0), torch.randn_like(z0)])
    good = torch.tensor([[0.9, 0.05, 0.05]] * 4)
    bad = torch.tensor([[0.05, 0.9, 0.05]] * 4)
    lg, parts = gating_loss(good, experts, z0)
    lb, _ = gating_loss(bad, experts, z0)
    assert float(lg) < float(lb) and set(parts) == {"gate_ce", "diversity", "temperature"}
    gates = torch.full((4, 3), 1 / 3, requires_grad=True)
    gating_loss(gates, experts, z0)[0].backward()
    assert gates.grad is not None and float(gates.grad[:, 0].mean()) < float(gates.grad[:, 1].mean())


def test_uncertainty_weight_is_the_inverse_ema_variance() -> None:
    w = UncertaintyWeight(decay=0.5)
    assert w.update(2.0) == 1.0  # no variance yet
    # mean = .5*2 + .5*4 = 3, second = .5*4 + .5*16 = 10, var = 1
    assert w.update(4.0) == pytest.approx(1.0)
    m, s = 0.5 * 3 + 0.5 * 0, 0.5 * 10 + 0.5 * 0
    assert w.update(0.0) == pytest.approx(1.0 / (s - m * m))
    state = w.state_dict()
    w2 = UncertaintyWeight(decay=0.5)
    w2.load_state_dict(state)
    assert w2.update(1.0) == w.update(1.0)  # resumable


def test_uniform_gates_during_the_warm_up() -> None:
    g = torch.tensor([[0.7, 0.2, 0.1]])
    torch.testing.assert_close(warmup_gates(g, 199, 1000), torch.full((1, 3), 1 / 3))
    assert torch.equal(warmup_gates(g, 200, 1000), g)
