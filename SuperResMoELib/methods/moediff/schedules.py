"""Per-expert Gaussian noise schedules (MoEDiff-SR Eq. 5 and 8).

Each expert ``i`` has its own schedule of ``T_i`` steps (paper: 500 / 2000 /
1000): ``beta_t`` rising from ``beta_start`` to ``beta_end`` (``"linear"``, as
DDPM, or ``"scaled_linear"``, linear in ``sqrt(beta)``, as latent diffusion),
``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` (decreasing in ``t``; ``t`` is
0-based: ``alpha_bar[0]`` is one step of noise).  The forward process is
``z_t = sqrt(a) z_0 + sqrt(1 - a) eps`` with ``a = alpha_bar[t]`` and the
clean latent is recovered from a noise estimate by Eq. 8.

Experts with different ``T`` are combined on one shared latent state by its
*noise level* ``a`` (not by the integer step): :meth:`NoiseSchedule.timestep_for`
gives the step of a schedule whose ``alpha_bar`` is nearest to a level
(in log-SNR, the natural axis of diffusion), which is what every expert gets
at each sampler step (see :mod:`.sampler`).

Tensors: latents ``(B, C, h, w)``; timesteps ``(B,)`` long; levels ``(B,)``
or scalars, broadcast over ``C, h, w``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

#: Beta schedule kinds.
KINDS: tuple[str, ...] = ("linear", "scaled_linear")


@dataclass(frozen=True)
class ScheduleConfig:
    """One expert's schedule.

    Attributes:
        steps: ``T`` (number of diffusion steps).
        kind: ``"linear"`` or ``"scaled_linear"`` (see the module docstring).
        beta_start, beta_end: the first and last ``beta``.
    """

    steps: int = 1000
    kind: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        if int(self.steps) != self.steps or self.steps < 2:
            raise ValueError(f"a schedule needs at least 2 integer steps, got {self.steps!r}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")

    def to_dict(self) -> dict:
        return asdict(self)


class NoiseSchedule:
    """``alpha_bar`` of one schedule and the operations on it (float64 tables,
    results in the latent's dtype)."""

    def __init__(self, cfg: ScheduleConfig) -> None:
        self.cfg = cfg
        n = int(cfg.steps)
        if cfg.kind == "linear":
            betas = torch.linspace(cfg.beta_start, cfg.beta_end, n, dtype=torch.float64)
        else:
            betas = torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n, dtype=torch.float64) ** 2
        self.betas = betas
        #: ``(T,)`` float64, strictly decreasing in ``t``.
        self.alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        self._log_snr = torch.log(self.alpha_bar) - torch.log1p(-self.alpha_bar)  # decreasing

    @property
    def steps(self) -> int:
        return int(self.cfg.steps)

    def level(self, t: torch.Tensor) -> torch.Tensor:
        """``alpha_bar[t]`` (float64) for integer steps ``t`` (any shape)."""
        t = torch.as_tensor(t, dtype=torch.long)
        if bool((t < 0).any()) or bool((t >= self.steps).any()):
            raise ValueError(f"timesteps must be in [0, {self.steps - 1}]")
        return self.alpha_bar[t]

    def timestep_for(self, level: torch.Tensor | float) -> torch.Tensor:
        """The step of this schedule whose noise level is nearest to ``level``
        (an ``alpha_bar`` in (0, 1), any shape), by log-SNR; levels beyond the
        schedule's ends map to its first or last step."""
        a = torch.as_tensor(level, dtype=torch.float64).clamp(1e-12, 1.0 - 1e-12)
        snr = torch.log(a) - torch.log1p(-a)
        neg = -self._log_snr  # increasing, for searchsorted
        idx = torch.searchsorted(neg, -snr).clamp(0, self.steps - 1)
        prev = (idx - 1).clamp(0, self.steps - 1)
        closer_prev = (self._log_snr[prev] - snr).abs() <= (self._log_snr[idx] - snr).abs()
        return torch.where(closer_prev, prev, idx)

    # ------------------------------------------------------------ Eq. 5 / 8
    @staticmethod
    def _coef(level: torch.Tensor | float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sqrt(a), sqrt(1 - a))`` in float64 (a Python float level stays exact), cast to ``like``."""
        a = torch.as_tensor(level, dtype=torch.float64, device=like.device)
        a = a.reshape(a.shape + (1,) * (like.ndim - a.ndim)) if a.ndim else a
        return a.sqrt().to(like.dtype), (1.0 - a).sqrt().to(like.dtype)

    def q_sample(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Eq. 5: ``z_t = sqrt(a_t) z0 + sqrt(1 - a_t) noise`` (``t`` per sample, ``(B,)``)."""
        return add_noise(z0, self.level(t), noise)

    def predict_z0(self, zt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Eq. 8: ``z0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)``."""
        return z0_from_eps(zt, self.level(t), eps)


def add_noise(z0: torch.Tensor, level: torch.Tensor | float, noise: torch.Tensor) -> torch.Tensor:
    """``sqrt(a) z0 + sqrt(1 - a) noise`` at noise level ``a`` (a scalar or ``(B,)``)."""
    s, n = NoiseSchedule._coef(level, z0)
    return s * z0 + n * noise


def z0_from_eps(zt: torch.Tensor, level: torch.Tensor | float, eps: torch.Tensor) -> torch.Tensor:
    """The clean latent of ``zt`` at level ``a`` given its noise ``eps`` (Eq. 8)."""
    s, n = NoiseSchedule._coef(level, zt)
    return (zt - n * eps) / s


def eps_from_z0(zt: torch.Tensor, level: torch.Tensor | float, z0: torch.Tensor) -> torch.Tensor:
    """The noise of ``zt`` at level ``a`` given its clean latent (Eq. 5 solved for ``eps``)."""
    s, n = NoiseSchedule._coef(level, zt)
    return (zt - s * z0) / n
