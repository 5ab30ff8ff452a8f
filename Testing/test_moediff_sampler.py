"""MoEDiff-SR's schedules, cross-schedule timestep mapping, gate normalisation
and the coherent multi-expert DDIM sampler, against exact oracles."""

from __future__ import annotations

import pytest
import torch

from SuperResMoELib.methods.moediff.gating import frequency_aware_gates, update_usage
from SuperResMoELib.methods.moediff.sampler import common_floor, sample, sampling_levels
from SuperResMoELib.methods.moediff.schedules import NoiseSchedule, ScheduleConfig, add_noise, eps_from_z0

#: The paper's three experts' step counts.
PAPER_T = (500, 2000, 1000)


def schedules(kind: str = "linear") -> list[NoiseSchedule]:
    return [NoiseSchedule(ScheduleConfig(t, kind)) for t in PAPER_T]


@pytest.mark.parametrize("kind", ["linear", "scaled_linear"])
def test_q_sample_and_eq8_invert_exactly_per_expert(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    for s in schedules(kind):
        assert bool((s.alpha_bar[1:] < s.alpha_bar[:-1]).all()) and 0 < float(s.alpha_bar[-1]) < 0.5
        t = torch.tensor([0, 1, s.steps // 2, s.steps - 1])
        zt = s.q_sample(z0, t, eps)
        torch.testing.assert_close(s.predict_z0(zt, t, eps), z0, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(eps_from_z0(zt, s.level(t), z0), eps, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="timesteps"):
        schedules()[0].level(torch.tensor([500]))


def test_cross_schedule_timestep_is_the_nearest_level() -> None:
    """Every expert's step for a noise level is, of all its steps, the one nearest in log-SNR (brute force)."""
    ss = schedules()
    for src in ss:
        levels = src.alpha_bar[torch.linspace(0, src.steps - 1, 37).round().long()]
        for dst in ss:
            t = dst.timestep_for(levels)
            snr = lambda a: torch.log(a) - torch.log1p(-a)  # noqa: E731
            brute = (snr(dst.alpha_bar)[None, :] - snr(levels)[:, None]).abs().argmin(dim=1)
            gap = (snr(dst.alpha_bar[t]) - snr(levels)).abs() - (snr(dst.alpha_bar[brute]) - snr(levels)).abs()
            assert bool((gap <= 1e-12).all())
            if dst is src:
                assert t.tolist() == torch.linspace(0, src.steps - 1, 37).round().long().tolist()
    # beyond an expert's range: its last step (T=500 ends at a higher noise level than T=2000)
    assert int(ss[0].timestep_for(ss[1].alpha_bar[-1])) == 499


def test_gates_sum_to_one_and_favour_rarely_used_experts() -> None:
    scores = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, -1.0]])
    usage = torch.tensor([0.8, 0.1, 0.1])
    g = frequency_aware_gates(scores, usage, gamma=0.1)
    torch.testing.assert_close(g.sum(dim=1), torch.ones(2))
    assert g[0, 0] < g[0, 1] == g[0, 2]  # equal scores: the over-used expert gets less
    torch.testing.assert_close(frequency_aware_gates(scores, usage, gamma=0.0), torch.softmax(scores, dim=1))
    # the renormalised product of the two softmaxes of Eq. 4
    prod = torch.softmax(scores, 1) * torch.softmax(-0.1 * usage, 0)
    torch.testing.assert_close(g, prod / prod.sum(dim=1, keepdim=True))
    spatial = frequency_aware_gates(torch.randn(2, 3, 5), usage)
    torch.testing.assert_close(spatial.sum(dim=1), torch.ones(2, 5))
    u = update_usage(usage, g, decay=0.99)
    torch.testing.assert_close(u, 0.99 * usage + 0.01 * g.mean(dim=0))
    torch.testing.assert_close(u.sum(), torch.tensor(1.0))  # usage stays a distribution


def oracle(z0: torch.Tensor, schedule: NoiseSchedule, calls: list[int]):
    """An expert that knows the clean latent: the exact noise of ``z`` at its own timestep's level."""

    def expert(z: torch.Tensor, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        calls.append(z.shape[0])
        return eps_from_z0(z, schedule.level(t), z0[rows])

    return expert


def test_oracle_experts_recover_the_clean_latent_at_any_step_count() -> None:
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    ss = schedules()
    noise = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    gates = torch.softmax(torch.randn(2, 3, generator=g, dtype=torch.float64), dim=1)
    for steps in (1, 2, 5, 20):
        out = sample([oracle(z0, s, []) for s in ss], ss, gates, noise, steps, ss[2])
        # from 2 steps on, the last level is every schedule's first step: exact; one step from the
        # noisiest level carries the experts' timestep rounding (log-SNR) amplified by 1/sqrt(a)
        torch.testing.assert_close(out.z0, z0, rtol=0, atol=0.1 if steps == 1 else 1e-9)
        assert len(out.timesteps) == steps
    # the levels: noisiest first, from the sampling schedule's own steps, none beyond what T=500 covers
    lv = sampling_levels(ss[2], 5, common_floor(ss))
    assert bool((lv[1:] > lv[:-1]).all()) and float(lv[0]) >= float(ss[0].alpha_bar[-1])
    assert float(lv[-1]) == float(ss[2].alpha_bar[0])


def test_each_expert_gets_its_own_schedules_timestep() -> None:
    ss = schedules()
    z0 = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    out = sample([oracle(z0, s, []) for s in ss], ss, torch.full((1, 3), 1 / 3, dtype=torch.float64),
                 torch.randn(1, 1, 4, 4, dtype=torch.float64), 3, ss[2])
    first = out.timesteps[0]  # at the noisiest level all three reach: the end of T=500
    level0 = float(sampling_levels(ss[2], 3, common_floor(ss))[0])
    assert first[0] == 499 and first == [int(s.timestep_for(level0)) for s in ss]
    assert 600 < first[2] < 800 and 900 < first[1] < 1100 and out.timesteps[-1] == [0, 0, 0]


def test_sampler_is_deterministic_under_a_seed_and_eta_adds_seeded_noise() -> None:
    ss = schedules()
    fixed = lambda z, t, rows: torch.tanh(z) * 0.5  # noqa: E731 - a fixed (wrong) noise estimate
    gates = torch.full((2, 3), 1 / 3)
    noise = torch.randn(2, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    a = sample([fixed] * 3, ss, gates, noise, 10, ss[0]).z0
    b = sample([fixed] * 3, ss, gates, noise, 10, ss[0]).z0
    assert torch.equal(a, b)
    s1 = sample([fixed] * 3, ss, gates, noise, 10, ss[0], eta=1.0, generator=torch.Generator().manual_seed(7)).z0
    s2 = sample([fixed] * 3, ss, gates, noise, 10, ss[0], eta=1.0, generator=torch.Generator().manual_seed(7)).z0
    s3 = sample([fixed] * 3, ss, gates, noise, 10, ss[0], eta=1.0, generator=torch.Generator().manual_seed(8)).z0
    assert torch.equal(s1, s2) and not torch.allclose(s1, s3) and not torch.allclose(s1, a)


def test_top1_runs_only_the_winning_expert_and_equals_full_for_one_hot_gates() -> None:
    g = torch.Generator().manual_seed(4)
    ss = schedules()
    z0 = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    experts = [lambda z, t, rows, k=k: torch.sin(z + k) for k in range(3)]
    gates = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]], dtype=torch.float64)
    top = sample(experts, ss, gates, noise, 4, ss[0], mode="top1")
    assert top.expert_calls == [4, 4, 4]  # each slice through its own expert only (one slice each, 4 steps)
    full = sample(experts, ss, gates, noise, 4, ss[0])
    assert full.expert_calls == [12, 12, 12]
    one_hot = torch.nn.functional.one_hot(gates.argmax(1), 3).to(torch.float64)
    torch.testing.assert_close(sample(experts, ss, one_hot, noise, 4, ss[0]).z0, top.z0)
    # spatial gates: per latent position
    sp = torch.zeros(3, 3, 4, 4, dtype=torch.float64)
    sp[:, 0, :, :2], sp[:, 2, :, 2:] = 1.0, 1.0
    out = sample(experts, ss, sp, noise, 4, ss[0], mode="top1")
    assert out.expert_calls == [12, 0, 12]  # expert 1 wins nowhere and never runs
    with pytest.raises(ValueError, match="mode"):
        sample(experts, ss, gates, noise, 4, ss[0], mode="async")
