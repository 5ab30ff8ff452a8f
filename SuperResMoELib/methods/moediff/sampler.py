"""The coherent few-step sampler of MoEDiff-SR.

One latent state ``z`` is shared by every expert.  The sampler walks down a
sequence of noise levels (``alpha_bar`` values, :func:`sampling_levels`: the
levels of ``steps`` evenly spaced steps of a *sampling schedule*, noisiest
first, starting at the noisiest level every expert was trained on,
:func:`common_floor`).  At each level ``a`` every expert ``i`` is asked for its noise
estimate at the step of **its own** schedule whose level is nearest to ``a``
(:meth:`~.schedules.NoiseSchedule.timestep_for`), so experts trained with
different ``T`` (500 / 2000 / 1000) see the noise they were trained for; each
estimate gives a clean latent ``z0_i`` (Eq. 8, at the state's level ``a``), the
gates combine them, ``z0 = sum_i G_i z0_i`` (Eq. 9), and a DDIM update moves
the state to the next level (``eta = 0``: deterministic; ``eta > 0`` adds
seeded noise).  After the last level the result is ``z0``.

Modes: ``"full"`` runs every expert with a non-zero gate; ``"top1"`` (the
paper's asynchronous mode) keeps only the highest-gated expert per slice (or
per latent position for spatial gates) and runs an expert only on the slices
that need it.

Shapes: latents ``(B, C, h, w)``; gates ``(B, K)`` (global) or ``(B, K, h, w)``
(spatial), summing to 1 over ``K``; an expert is ``(z (B', C, h, w), t (B',)
long, rows (B',) long) -> eps (B', C, h, w)``: ``rows`` are the batch rows
``z`` holds (all of them, or in top-1 mode only the slices routed to it), so
an expert can pick its rows of a condition the caller bound into it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from SuperResMoELib.methods.moediff.schedules import NoiseSchedule, eps_from_z0, z0_from_eps

#: ``(z (B', C, h, w), t (B',) long, rows (B',) long) -> eps (B', C, h, w)``.
Expert = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: Sampler modes.
MODES: tuple[str, ...] = ("full", "top1")


def sampling_levels(schedule: NoiseSchedule, steps: int, min_level: float = 0.0) -> torch.Tensor:
    """``(steps,)`` float64 noise levels, noisiest first: ``alpha_bar`` at
    ``steps`` steps evenly spaced from the schedule's noisiest step whose level
    is at least ``min_level`` down to its first step."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"the sampler needs at least one step, got {steps!r}")
    last = int((schedule.alpha_bar >= min_level).nonzero().max()) if min_level > 0 else schedule.steps - 1
    steps = min(int(steps), last + 1)
    t = torch.linspace(last, 0, steps, dtype=torch.float64).round().long()
    return schedule.alpha_bar[t]


def common_floor(schedules: Sequence[NoiseSchedule]) -> float:
    """The noisiest level every schedule reaches (the largest of their last
    ``alpha_bar``): the sampler starts there, so no expert is asked about
    noise beyond its training range (T = 500 ends at 0.0064 with the paper's
    betas, T = 2000 at 1.6e-9)."""
    return max(float(s.alpha_bar[-1]) for s in schedules)


@dataclass
class SampleOutput:
    """What :func:`sample` returns.

    Attributes:
        z0: ``(B, C, h, w)`` the clean latent.
        expert_calls: network evaluations per expert (items, i.e. slices).
        timesteps: per level, each expert's timestep (for reports and tests).
    """

    z0: torch.Tensor
    expert_calls: list[int] = field(default_factory=list)
    timesteps: list[list[int]] = field(default_factory=list)


def _weights(gates: torch.Tensor, mode: str, like: torch.Tensor) -> torch.Tensor:
    """``(B, K, 1|h, 1|w)`` weights broadcastable over ``(B, C, h, w)``."""
    g = gates.to(like.dtype)
    if mode == "top1":
        g = torch.nn.functional.one_hot(g.argmax(dim=1), g.shape[1]).movedim(-1, 1).to(like.dtype)
    if g.ndim == 2:
        g = g[:, :, None, None]
    return g


def sample(
    experts: Sequence[Expert],
    schedules: Sequence[NoiseSchedule],
    gates: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
    sampling: NoiseSchedule,
    eta: float = 0.0,
    mode: str = "full",
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Denoise ``noise`` (the state at the first level) in ``steps`` steps (see the module docstring).

    Args:
        experts, schedules: one noise estimator and its schedule per expert.
        gates: ``(B, K)`` or ``(B, K, h, w)`` gate weights (sum 1 over ``K``).
        noise: ``(B, C, h, w)`` the initial state (standard normal).
        steps: sampler steps (levels).
        sampling: the schedule whose steps define the levels.
        eta: DDIM stochasticity (0: deterministic).
        mode: ``"full"`` or ``"top1"``.
        generator: seeds the noise of ``eta > 0``.
    """
    if len(experts) != len(schedules) or len(experts) != gates.shape[1]:
        raise ValueError(f"{len(experts)} experts, {len(schedules)} schedules and {gates.shape[1]} gates must agree")
    if mode not in MODES:
        raise ValueError(f"unknown sampler mode {mode!r}; choose one of {', '.join(MODES)}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    levels = sampling_levels(sampling, steps, common_floor(schedules))
    w = _weights(gates, mode, noise)
    b = noise.shape[0]
    used = [torch.nonzero(w[:, i].reshape(b, -1).gt(0).any(dim=1)).reshape(-1) for i in range(len(experts))]
    z = noise
    calls = [0] * len(experts)
    timesteps: list[list[int]] = []
    for k in range(len(levels)):
        a = float(levels[k])
        z0 = torch.zeros_like(z)
        row: list[int] = []
        for i, (expert, schedule) in enumerate(zip(experts, schedules)):
            t_i = int(schedule.timestep_for(a))
            row.append(t_i)
            idx = used[i]
            if idx.numel() == 0:
                continue
            zi = z[idx]
            eps = expert(zi, torch.full((idx.numel(),), t_i, dtype=torch.long, device=z.device), idx)
            calls[i] += idx.numel()
            z0[idx] += w[idx, i:i + 1] * z0_from_eps(zi, a, eps)
        timesteps.append(row)
        if k + 1 == len(levels):
            z = z0
            break
        a_next = float(levels[k + 1])
        eps_hat = eps_from_z0(z, a, z0)
        sigma = eta * math.sqrt(max((1.0 - a_next) / (1.0 - a) * (1.0 - a / a_next), 0.0))
        z = math.sqrt(a_next) * z0 + math.sqrt(max(1.0 - a_next - sigma ** 2, 0.0)) * eps_hat
        if sigma > 0:
            z = z + sigma * torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    return SampleOutput(z, calls, timesteps)
