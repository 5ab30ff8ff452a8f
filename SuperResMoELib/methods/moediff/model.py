"""The whole MoEDiff-SR network of one checkpoint: VQ-VAE, condition encoder,
gating network, the experts, their noise schedules, and the slice sampler.

Data flow of one batch of 2D slices (tiles), all on the target grid::

    lr (B, 1, H, W) [+ corrections (B, E, H, W)]   normalised LR slice (cubic on the target grid)
      cond  = pixel_unshuffle(lr, f)                (B, f^2, H/f, W/f) spatial condition of every expert
      z_c   = E2([lr, corrections])                 (B, N, d)          condition tokens (Eq. 1)
      gates = G(z_c)                                (B, K) global, or (B, K, H/f, W/f) spatial
      z0    = sampler(experts(., t_i, cond, z_c), gates)             (B, C, H/f, W/f)
      sr    = lr + VQ.decode(z0 / s) / g            (B, 1, H, W)

**The latent space holds the residual** ``x - y`` (HR minus the cubic LR
slice, times the gain ``g = residual_gain``), not the HR slice itself as in the
paper: the autoencoder's reconstruction bounds the method's PSNR, and a compact
VQ-VAE trained on CPU reconstructs whole slices below the cubic input's own
PSNR (~28 dB on 64 x 64 tiles after 800 steps, the input being ~28 dB) but the
residual to well above it (``docs/results/moediff``).  The condition therefore
reaches the experts losslessly as the LR slice rearranged onto the latent grid
(pixel unshuffle) instead of through the autoencoder.  ``s`` is the latent
scale (buffer ``latent_scale``: 1 / the standard deviation of the training
latents, set after the VQ-VAE phase; the paper's 0.2 is for its own
autoencoder).  Decoding goes through the codebook only with
``quantize_latents`` (the VQ-VAE is trained with its quantiser bypassed for
half the tiles, so it decodes continuous latents too, more faithfully).
``H`` and ``W`` must be multiples of :attr:`MoEDiffSR.multiple`.

Corrections (``extra_inputs``, the paper's ``b`` and ``g``): ``"bias"`` is one
channel (the log of the bias-field correction), ``"warp"`` two (the in-plane
components of the gradient-nonlinearity correction, in mm); they reach the
condition encoder (and so the gating) as extra channels.  A checkpoint trained
without them needs none at inference.

Gating modes: ``"global"`` (Eq. 2-4, one weight per expert and slice),
``"spatial"`` (per finest-scale token, resized to the latent grid), and
``"uniform"`` (``1 / K``: the ablation without a gating network's choice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from SuperResMoELib.methods.moediff.sampler import MODES, SampleOutput, sample
from SuperResMoELib.methods.moediff.schedules import NoiseSchedule, ScheduleConfig, eps_from_z0, z0_from_eps
from SuperResMoELib.nets.moediff_condition import ConditionConfig, ConditionEncoder, GatingConfig, GatingNetwork
from SuperResMoELib.nets.moediff_experts import ExpertConfig, build_expert
from SuperResMoELib.nets.vqvae2d import VQVAE2D, VQVAE2DConfig

#: Correction inputs a checkpoint may take, and their channels.
EXTRA_CHANNELS: dict[str, int] = {"bias": 1, "warp": 2}
#: Gating modes.
GATINGS: tuple[str, ...] = ("global", "spatial", "uniform")
#: What an expert network outputs: the noise (``"eps"``, the paper's) or the
#: clean latent (``"x0"``, from which the sampler's noise estimate is derived).
PREDICTIONS: tuple[str, ...] = ("eps", "x0")
#: The paper's diffusion steps T of experts 1, 2, 3.
PAPER_STEPS: tuple[int, ...] = (500, 2000, 1000)


@dataclass(frozen=True)
class MoEDiffArchitecture:
    """Everything that shapes a :class:`MoEDiffSR` (stored in the manifest).

    Attributes:
        vqvae, condition, gating, expert: the parts' configs (``expert`` is
            shared by every expert; each reads its own knobs).
        experts: the architecture (1, 2 or 3: E1, E2, E3) of each expert, in order.
        schedules: one noise schedule per expert.
        sampling: the schedule whose steps define the sampler's noise levels.
        gating_mode: one of :data:`GATINGS`.
        extra_inputs: correction inputs (keys of :data:`EXTRA_CHANNELS`).
        tile: side of the square slice tiles the networks were trained on (pixels).
        residual_gain: the residual ``x - y`` is multiplied by this before encoding.
        quantize_latents: decode through the codebook (else the continuous latent).
        prediction: what the expert networks output (:data:`PREDICTIONS`); with
            ``"x0"`` the noise estimate the sampler combines is derived from the
            predicted clean latent by Eq. 5 at the expert's own step.
    """

    vqvae: VQVAE2DConfig
    condition: ConditionConfig
    gating: GatingConfig
    expert: ExpertConfig
    experts: tuple[int, ...] = (1, 2, 3)
    schedules: tuple[ScheduleConfig, ...] = tuple(ScheduleConfig(steps=t) for t in PAPER_STEPS)
    sampling: ScheduleConfig = ScheduleConfig(steps=1000)
    gating_mode: str = "global"
    extra_inputs: tuple[str, ...] = ()
    tile: int = 64
    residual_gain: float = 4.0
    quantize_latents: bool = False
    prediction: str = "eps"

    def __post_init__(self) -> None:
        for name in ("experts", "schedules", "extra_inputs"):
            v = getattr(self, name)
            if isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
        if not self.experts or any(e not in (1, 2, 3) for e in self.experts):
            raise ValueError(f"experts must list architectures 1, 2 or 3, got {list(self.experts)}")
        if len(self.schedules) != len(self.experts):
            raise ValueError(f"one schedule per expert: {len(self.experts)} experts, {len(self.schedules)} schedules")
        if self.gating_mode not in GATINGS:
            raise ValueError(f"unknown gating mode {self.gating_mode!r}; choose one of {', '.join(GATINGS)}")
        bad = [e for e in self.extra_inputs if e not in EXTRA_CHANNELS]
        if bad or len(set(self.extra_inputs)) != len(self.extra_inputs):
            raise ValueError(f"extra inputs must be distinct names from {', '.join(EXTRA_CHANNELS)}, "
                             f"got {list(self.extra_inputs)}")
        if self.condition.in_channels != self.condition_channels:
            raise ValueError(f"the condition encoder reads the LR slice and the corrections "
                             f"{list(self.extra_inputs)}: in_channels must be {self.condition_channels}, "
                             f"got {self.condition.in_channels}")
        if self.gating.dim != self.condition.dim:
            raise ValueError(f"gating dim ({self.gating.dim}) must equal the condition dim ({self.condition.dim})")
        if self.gating.n_experts != len(self.experts):
            raise ValueError(f"gating n_experts ({self.gating.n_experts}) must equal the experts ({len(self.experts)})")
        c = self.vqvae.latent_channels
        if self.expert.latent_channels != c:
            raise ValueError(f"expert latent channels must equal the VQ-VAE's latent channels ({c})")
        if self.expert.cond_channels != self.cond_channels:
            raise ValueError(f"expert cond_channels must be {self.cond_channels} (the LR slice unshuffled by the "
                             f"VQ-VAE's factor {self.vqvae.downsample})")
        if not isinstance(self.residual_gain, (int, float)) or not math.isfinite(self.residual_gain) \
                or self.residual_gain <= 0:
            raise ValueError(f"residual_gain must be a finite number > 0, got {self.residual_gain!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        if not isinstance(self.quantize_latents, bool):
            raise ValueError(f"quantize_latents must be true or false, got {self.quantize_latents!r}")
        if self.expert.token_dim not in (0, self.condition.dim):
            raise ValueError(f"expert token_dim must be 0 or the condition dim ({self.condition.dim})")
        if not isinstance(self.tile, int) or self.tile < 1 or self.tile % self.multiple:
            raise ValueError(f"tile must be a positive multiple of {self.multiple}, got {self.tile!r}")

    @property
    def condition_channels(self) -> int:
        """Channels the condition encoder reads: the LR slice + the corrections."""
        return 1 + sum(EXTRA_CHANNELS[e] for e in self.extra_inputs)

    @property
    def cond_channels(self) -> int:
        """Channels of the experts' spatial condition: the LR slice unshuffled, ``f^2``."""
        return self.vqvae.downsample ** 2

    @property
    def multiple(self) -> int:
        """Slice sides must be multiples of this (VQ-VAE x expert downsampling, and the largest patch)."""
        a = self.vqvae.downsample * self.expert.multiple
        b = self.condition.multiple
        return a * b // math.gcd(a, b)

    def to_dict(self) -> dict[str, Any]:
        return {"vqvae": self.vqvae.to_dict(), "condition": self.condition.to_dict(),
                "gating": self.gating.to_dict(), "expert": self.expert.to_dict(),
                "experts": list(self.experts), "schedules": [s.to_dict() for s in self.schedules],
                "sampling": self.sampling.to_dict(), "gating_mode": self.gating_mode,
                "extra_inputs": list(self.extra_inputs), "tile": self.tile, "residual_gain": self.residual_gain,
                "quantize_latents": self.quantize_latents, "prediction": self.prediction}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MoEDiffArchitecture:
        """The inverse of :meth:`to_dict` (``TypeError``/``ValueError``/``KeyError`` on bad data)."""
        return cls(vqvae=VQVAE2DConfig(**d["vqvae"]), condition=ConditionConfig(**d["condition"]),
                   gating=GatingConfig(**d["gating"]), expert=ExpertConfig(**d["expert"]),
                   experts=tuple(d["experts"]), schedules=tuple(ScheduleConfig(**s) for s in d["schedules"]),
                   sampling=ScheduleConfig(**d["sampling"]), gating_mode=d["gating_mode"],
                   extra_inputs=tuple(d["extra_inputs"]), tile=int(d["tile"]),
                   residual_gain=float(d["residual_gain"]), quantize_latents=bool(d["quantize_latents"]),
                   prediction=str(d.get("prediction", "eps")))


@dataclass
class SliceOutput:
    """What :meth:`MoEDiffSR.enhance_slices` returns.

    Attributes:
        sr: ``(B, 1, H, W)`` the refined slices (normalised units).
        gates: ``(B, K)`` or ``(B, K, H, W)`` (spatial, resized to the slice) gate weights.
        expert_calls: network evaluations (slices) per expert.
    """

    sr: torch.Tensor
    gates: torch.Tensor
    expert_calls: list[int] = field(default_factory=list)


class MoEDiffSR(nn.Module):
    """The network of a MoEDiff-SR checkpoint (see the module docstring)."""

    latent_scale: torch.Tensor

    def __init__(self, arch: MoEDiffArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.vqvae = VQVAE2D(arch.vqvae)
        self.condition = ConditionEncoder(arch.condition)
        self.gating = GatingNetwork(arch.gating)
        self.experts = nn.ModuleList(build_expert(e, arch.expert) for e in arch.experts)
        self.schedules = [NoiseSchedule(s) for s in arch.schedules]
        self.sampling = NoiseSchedule(arch.sampling)
        self.register_buffer("latent_scale", torch.tensor(1.0))

    @property
    def multiple(self) -> int:
        return self.arch.multiple

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    def check_slices(self, lr: torch.Tensor, extras: torch.Tensor | None) -> None:
        """Raise ``ValueError`` unless ``lr`` is ``(B, 1, H, W)`` with sides multiples of
        :attr:`multiple` and ``extras`` holds the corrections this network reads."""
        m = self.multiple
        if lr.ndim != 4 or lr.shape[1] != 1 or lr.shape[2] % m or lr.shape[3] % m or min(lr.shape[2:]) < m:
            raise ValueError(f"MoEDiff-SR needs slices (B, 1, H, W) with H, W multiples of {m}, got {tuple(lr.shape)}")
        want = self.arch.condition_channels - 1
        got = 0 if extras is None else int(extras.shape[1])
        if got != want or (extras is not None and tuple(extras.shape[2:]) != tuple(lr.shape[2:])):
            raise ValueError(f"this network reads the corrections {list(self.arch.extra_inputs)} "
                             f"({want} channel(s) like the slice), got "
                             f"{'none' if extras is None else tuple(extras.shape)}")

    # ---- latents ----------------------------------------------------------------------------------
    def encode(self, residual: torch.Tensor) -> torch.Tensor:
        """A residual ``x - y`` ``(B, 1, H, W)`` -> its scaled continuous latent ``(B, C, H/f, W/f)``."""
        return self.vqvae.encode(residual * self.arch.residual_gain) * self.latent_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """A scaled latent ``(B, C, h, w)`` -> the residual ``(B, 1, h f, w f)`` (through
        the codebook with ``quantize_latents``)."""
        z = z / self.latent_scale
        if self.arch.quantize_latents:
            z = self.vqvae.quantize(z)[0]
        return self.vqvae.decode(z) / self.arch.residual_gain

    def condition_latent(self, lr: torch.Tensor) -> torch.Tensor:
        """The experts' spatial condition: ``(B, 1, H, W) -> (B, f^2, H/f, W/f)`` (pixel unshuffle)."""
        return F.pixel_unshuffle(lr, self.arch.vqvae.downsample)

    # ---- condition and gating ---------------------------------------------------------------------
    def tokens(self, lr: torch.Tensor, extras: torch.Tensor | None = None) -> torch.Tensor:
        """``z_c (B, N, d)`` of the condition (LR slice + corrections)."""
        y = lr if extras is None else torch.cat([lr, extras], dim=1)
        return self.condition(y)

    def gates(self, z_c: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
        """Gates of :attr:`arch.gating_mode`: ``(B, K)`` or ``(B, K, h, w)`` on the latent grid."""
        b, k = z_c.shape[0], self.n_experts
        mode = self.arch.gating_mode
        if mode == "uniform":
            return torch.full((b, k), 1.0 / k, dtype=z_c.dtype, device=z_c.device)
        if mode == "global":
            return self.gating.gates(z_c)
        g = self.gating.gates(z_c, spatial=True, encoder=self.condition)
        if tuple(g.shape[2:]) != tuple(latent_hw):
            g = F.interpolate(g, size=latent_hw, mode="bilinear", align_corners=False)
            g = g / g.sum(dim=1, keepdim=True)
        return g

    def expert_fn(self, i: int, cond: torch.Tensor, z_c: torch.Tensor):
        """Expert ``i`` with the condition bound: ``(z (B', C, h, w), t (B',), rows (B',)) -> eps``
        (``rows``: which rows of the batch ``z`` holds; ``None``: all)."""
        expert = self.experts[i]
        schedule = self.schedules[i]
        tokens = z_c if self.arch.expert.token_dim else None

        def run(z: torch.Tensor, t: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
            c = cond if rows is None else cond[rows]
            tk = tokens if tokens is None or rows is None else tokens[rows]
            return self.noise_estimate(expert(z, t, c, tk), z, schedule.level(t.cpu()).to(z.device))

        return run

    def noise_estimate(self, out: torch.Tensor, z_t: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """An expert's noise estimate from its output (``prediction``): the output
        itself, or derived from the predicted clean latent at ``level`` ``(B,)``."""
        if self.arch.prediction == "eps":
            return out
        return eps_from_z0(z_t, level, out)

    def clean_estimate(self, out: torch.Tensor, z_t: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """An expert's clean-latent estimate from its output: Eq. 8, or the output itself."""
        if self.arch.prediction == "x0":
            return out
        return z0_from_eps(z_t, level, out)

    # ---- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def enhance_slices(self, lr: torch.Tensor, extras: torch.Tensor | None = None, steps: int = 10,
                       mode: str = "full", eta: float = 0.0, generator: torch.Generator | None = None,
                       force_expert: int | None = None, uniform_gates: bool = False) -> SliceOutput:
        """Refine a batch of normalised LR slices (see the module docstring).

        Args:
            lr: ``(B, 1, H, W)``; sides multiples of :attr:`multiple`.
            extras: ``(B, E, H, W)`` corrections when the network reads them.
            steps: sampler steps; mode: ``"full"`` or ``"top1"``; eta: DDIM stochasticity.
            generator: seeds the initial noise (and ``eta > 0`` noise).
            force_expert: run only this expert (1-based): its gate is 1, the others' 0.
            uniform_gates: every expert weighted ``1 / K`` (the ablation without routing).
        """
        if mode not in MODES:
            raise ValueError(f"unknown sampler mode {mode!r}; choose one of {', '.join(MODES)}")
        self.check_slices(lr, extras)
        cond = self.condition_latent(lr)
        z_c = self.tokens(lr, extras)
        gates = self.gates(z_c, tuple(cond.shape[2:]))  # type: ignore[arg-type]
        if uniform_gates:
            gates = torch.full((lr.shape[0], self.n_experts), 1.0 / self.n_experts, dtype=cond.dtype,
                               device=cond.device)
        if force_expert is not None:
            if not 1 <= force_expert <= self.n_experts:
                raise ValueError(f"expert {force_expert} does not exist (1..{self.n_experts})")
            gates = torch.zeros_like(gates)
            gates[:, force_expert - 1] = 1.0
        b, _, h, w = cond.shape
        shape = (b, self.arch.vqvae.latent_channels, h, w)
        noise = torch.randn(shape, generator=generator, dtype=cond.dtype, device="cpu").to(cond.device)
        out: SampleOutput = sample(
            [self.expert_fn(i, cond, z_c) for i in range(self.n_experts)],
            self.schedules, gates, noise, steps, self.sampling, eta=eta, mode=mode, generator=generator)
        sr = lr + self.decode(out.z0)
        g = gates if gates.ndim == 2 else F.interpolate(gates, size=tuple(lr.shape[2:]), mode="nearest")
        return SliceOutput(sr, g, out.expert_calls)

