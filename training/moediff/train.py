"""MoEDiff-SR training (paper 003 section II.D; DESIGN section 4).

Work directory layout (every phase resumable, every product atomic)::

    <workdir>/vqvae/        phase 1: the 2D VQ-VAE on the residual tiles (HR - LR)
    <workdir>/latents.npz   phase 2: the latent cache (the residual latent of every tile)
    <workdir>/joint/        phase 3: condition encoder + gating + experts, jointly

The slice library itself lives in the user cache (:mod:`.data`), keyed by its config.

**Phase 1** minimises ``MSE + l1 * L1 + commitment`` of the VQ-VAE on the
residual tiles ``g (hr - lr)`` (:mod:`SuperResMoELib.methods.moediff.model`
says why the residual); for a share ``bypass_probability`` of the tiles the
decoder sees the continuous latent instead of the quantised one, so it
decodes both.  Validation: the PSNR of ``lr + D(E(hr - lr))`` against the HR
tile (normalised units, peak 1), through the codebook and without it: the
bound of the whole method's PSNR.

**Phase 2** sets the latent scale to ``1 / std`` of the training latents and
caches ``z0 = s E(g (hr - lr))`` of every tile (the experts' condition, the
LR tile unshuffled, is cheap to recompute).

**Phase 3**, per step (batch ``B``):

* ``z_c = E2([lr, corrections])``, gates ``G`` (Eq. 2-4; the usage EMA is
  updated in training mode), replaced by ``1/K`` during the first
  ``uniform_fraction`` of the steps (Eq. 13 then trains every expert equally);
* a noise level ``a`` per sample, uniform over the sampling schedule's steps
  from the common floor (:func:`~SuperResMoELib.methods.moediff.sampler.common_floor`)
  down; expert ``i`` gets the step ``t_i`` of its own schedule nearest to ``a``
  and ``z_t = sqrt(a_i) z0 + sqrt(1 - a_i) eps`` at that step's own level
  ``a_i`` (one ``eps`` for all experts), predicts ``eps_i`` and ``z0_i`` (Eq. 8);
* expert loss ``L_i = |eps_i - eps|^2 + lambda_i task_i(z0, z0_i)`` (with
  ``prediction = "x0"`` the first term is ``|z0_i - z0|^2``, the regression
  of the expert's own output; the task
  terms of :mod:`.task_losses`: E1 perceptual through the frozen VQ-VAE --
  decoder, then the encoder's first level -- since VGG weights cannot be
  downloaded; E2 Sobel + Fourier; E3 multi-scale STFT; only on samples with
  ``a >= task_min_level``), gated: ``L_E = sum_i G_i L_i`` (Eq. 13; per latent
  position for spatial gates);
* gating loss (Eq. 14-16, :mod:`.gating_losses`; spatial gates: per latent
  position, similarities over 3 x 3 neighbourhoods; the diversity term scaled
  by ``diversity_weight``, see :class:`~training.moediff.config.JointPhase`) weighted by
  ``w = min(1 / sigma^2, max_gating_weight)`` (Eq. 17, EMA variance);
  ``L = L_E + w L_gating`` (Eq. 18); AdamW, the learning rate warmed up over
  :data:`WARMUP_STEPS` steps and decayed (cosine) to :data:`FINAL_LR_FRACTION`.

Validation at each epoch end: ``validation_tiles`` held-out tiles sampled with
``validation_steps`` DDIM steps; PSNR of the result and of the input, the mean
gates, the gating loss.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from SuperResMoELib.core.errors import ConfigError
from SuperResMoELib.engine.devices import resolve_device
from SuperResMoELib.methods.moediff.model import EXTRA_CHANNELS, MoEDiffSR
from SuperResMoELib.methods.moediff.sampler import common_floor

from ..cache import cached_arrays
from ..config import to_dict
from ..loop import Phase
from ..precision import resolve_amp
from ..library import RowView
from ..split import library_split
from .config import MoEDiffConfig
from .data import SliceLibraryConfig, slice_library
from .gating_losses import (
    UncertaintyWeight,
    diversity_term,
    gate_targets,
    gating_loss,
    warmup_gates,
)
from .task_losses import perceptual_loss, sobel_fourier_loss, stft_loss

log = logging.getLogger("superresmoe.training")

#: Salt of the MoEDiff-SR split of its tile library.
MOEDIFF_SPLIT_SALT = 0x4D
#: Neighbourhood (latent pixels) of the per-position similarities of spatial gating.
SPATIAL_WINDOW = 3


def library_config(cfg: MoEDiffConfig, source: str = "sample") -> SliceLibraryConfig:
    """The slice library of a training config (``source``: ``"sample"`` or an HR T1 folder)."""
    lib = cfg.library
    return SliceLibraryConfig(lib.subjects, lib.crops_per_subject, lib.slices_per_crop, lib.crop,
                              cfg.architecture.tile, cfg.degradation, lib.intensity_jitter, cfg.seed, cfg.data_seed,
                              source)


def extra_channels(names: tuple[str, ...]) -> list[int]:
    """Library ``extras`` channels of the corrections ``names`` (bias: 0; warp: 1, 2)."""
    where = {"bias": [0], "warp": [1, 2]}
    assert sum(len(v) for v in where.values()) == sum(EXTRA_CHANNELS.values())
    return [c for n in names for c in where[n]]


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(B,)`` PSNR (dB, peak 1) of ``(B, ...)`` images."""
    mse = ((pred - target) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def spatial_similarity(z0_experts: torch.Tensor, z0: torch.Tensor, window: int = SPATIAL_WINDOW) -> torch.Tensor:
    """``(B, K, h, w)`` cosine similarity of each expert's estimate to the truth
    over the ``window x window`` neighbourhood of every latent position."""
    k, b, c, h, w = z0_experts.shape
    pad = window // 2
    e = F.unfold(z0_experts.reshape(k * b, c, h, w), window, padding=pad).reshape(k, b, c * window * window, h * w)
    t = F.unfold(z0, window, padding=pad).reshape(1, b, c * window * window, h * w)
    cos = F.cosine_similarity(e, t.expand_as(e), dim=2, eps=1e-8)  # (K, B, h*w)
    return cos.permute(1, 0, 2).reshape(b, k, h, w)


def spatial_gating_loss(gates: torch.Tensor, z0_experts: torch.Tensor, z0: torch.Tensor,
                        diversity_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 16 per latent position for spatial gates ``(B, K, h, w)``: the
    cross-entropy against MAD-temperature targets of the neighbourhood
    similarities, averaged over positions, plus the (global) diversity term."""
    sim = spatial_similarity(z0_experts, z0)
    b, k, h, w = sim.shape
    targets = gate_targets(sim.permute(0, 2, 3, 1).reshape(-1, k))  # (B h w, K)
    g = gates.permute(0, 2, 3, 1).reshape(-1, k)
    ce = -(targets * torch.log(g.clamp_min(1e-12))).sum(dim=1).mean() / k
    div = diversity_term(z0_experts)
    return ce + diversity_weight * div, {"gate_ce": float(ce.detach()), "diversity": float(div.detach())}


class _UncertaintyState(nn.Module):
    """The EMA state of Eq. 17 as a buffer, so the phase's saved state holds it
    (a resumed run continues with the same weights)."""

    state: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("state", torch.tensor([math.nan, math.nan], dtype=torch.float64))

    def weight(self, loss: float) -> float:
        uw = UncertaintyWeight()
        m, s = (float(v) for v in self.state)
        if not math.isnan(m):
            uw.load_state_dict({"mean": m, "second": s})
        w = uw.update(loss)
        self.state.copy_(torch.tensor([uw.mean, uw.second], dtype=torch.float64))
        return w


class MoEDiffTrainer:
    """Runs the phases; see the module docstring.

    Args:
        config: the checked config.
        workdir: the run folder (resumable).
        progress: ``(stage, fraction, message)`` callback.
        device, amp: as :class:`training.remix.train.REMIxTrainer`.
        data: ``"sample"``, a folder of HR T1 volumes or a BIDS dataset (:mod:`training.hr_source`).
    """

    def __init__(self, config: MoEDiffConfig, workdir: Path, progress=None,
                 device: torch.device | str = "cpu", amp: str | None = "none", data: str = "sample") -> None:
        self.cfg = config
        self.workdir = Path(workdir)
        self.progress = progress
        self.device = resolve_device(device)
        self.amp = resolve_amp(amp, self.device)
        self.seed = config.seed
        torch.manual_seed(self.seed)
        lib = slice_library(library_config(config, data), progress)
        #: Training subjects whose scans could not be used (:mod:`training.hr_source`).
        self.skipped = int(lib.meta.get("skipped_subjects", 0))
        try:
            train, val, split = library_split(np.asarray(lib.arrays["subject"]), config.library.split, data,
                                              config.library.validation_subjects, config.library.validation_fraction,
                                              self.seed, MOEDIFF_SPLIT_SALT)
        except ValueError as exc:
            raise ConfigError(f"library split: {exc}") from None
        #: The split's statement for the manifest (:func:`training.split.library_split`).
        self.split: dict[str, Any] = split
        self.extra_idx = extra_channels(config.architecture.extra_inputs)
        self.train: dict[str, RowView] = lib.rows(train)
        self.val: dict[str, RowView] = lib.rows(val)
        log.info("MoEDiff-SR library: %d training and %d validation tiles (split by %s)", len(train), len(val),
                 split["unit"])
        self.model = MoEDiffSR(config.architecture)
        #: Last-epoch validation scores of each phase.
        self.validation: dict[str, dict[str, float]] = {}
        self.histories: dict[str, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------ phase 1
    def _images(self, part: dict[str, RowView], rows: np.ndarray, key: str) -> torch.Tensor:
        return torch.from_numpy(part[key][rows].astype(np.float32))

    def train_vqvae(self) -> None:
        """Phase 1 (module docstring)."""
        spec = self.cfg.vqvae
        vq = self.model.vqvae
        opt = torch.optim.AdamW(vq.parameters(), lr=spec.lr, weight_decay=0.0)
        phase = Phase(self.workdir, spec.phase_config("vqvae"), {"vqvae": vq}, opt,
                      self.seed, device=self.device, amp=self.amp)
        n, b = len(self.train["hr"]), self.cfg.batch_size
        gain = self.cfg.architecture.residual_gain

        def draw(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            rows = rng.integers(0, n, size=b)
            residual = self._images(self.train, rows, "hr") - self._images(self.train, rows, "lr")
            bypass = torch.from_numpy(rng.uniform(size=(b, 1, 1, 1)) < spec.bypass_probability).float()
            return residual * gain, bypass

        def step(batch) -> dict[str, float]:
            x, bypass = batch
            with phase.autocast():
                z = vq.encode(x)
                z_q, commit, _ = vq.quantize(z)
                x_hat = vq.decode(bypass * z + (1.0 - bypass) * z_q)
            x_hat = x_hat.float()
            mse = F.mse_loss(x_hat, x)
            l1 = F.l1_loss(x_hat, x)
            loss = mse + spec.l1 * l1 + commit.float()
            phase.optimise(loss)
            return {"loss": float(loss.detach()), "mse": float(mse.detach()), "commitment": float(commit.detach())}

        history = phase.run(draw, step, lambda epoch: self.validate_vqvae(), self.progress)
        self._keep("vqvae", history)
        vq.eval()

    @torch.no_grad()
    def validate_vqvae(self, limit: int = 256) -> dict[str, float]:
        """PSNR of ``lr + D(E(hr - lr))`` on held-out tiles, decoded through the
        codebook and without it, and of the input ``lr`` (normalised units)."""
        vq = self.model.vqvae.eval()
        gain = self.cfg.architecture.residual_gain
        hr = torch.from_numpy(self.val["hr"][:limit].astype(np.float32)).to(self.device)
        lr = torch.from_numpy(self.val["lr"][:limit].astype(np.float32)).to(self.device)
        z = torch.cat([vq.encode((hr - lr)[s:s + 64] * gain) for s in range(0, len(hr), 64)])
        cont = torch.cat([vq.decode(z[s:s + 64]) for s in range(0, len(z), 64)]) / gain
        quant = torch.cat([vq.decode(vq.quantize(z[s:s + 64])[0]) for s in range(0, len(z), 64)]) / gain
        vq.train()
        return {"val_recon_psnr": float(psnr(lr + cont, hr).mean()),
                "val_recon_psnr_quantized": float(psnr(lr + quant, hr).mean()),
                "val_psnr_input": float(psnr(lr, hr).mean())}

    # ------------------------------------------------------------ phase 2
    @torch.no_grad()
    def latents(self) -> dict[str, np.ndarray]:
        """Phase 2: the latent scale and the cached latents (module docstring)."""
        vq = self.model.vqvae.eval().to(self.device)

        gain = self.cfg.architecture.residual_gain

        def encode(part: dict[str, RowView]) -> np.ndarray:
            out = []
            for s in range(0, len(part["hr"]), 128):
                res = part["hr"][s:s + 128].astype(np.float32) - part["lr"][s:s + 128].astype(np.float32)
                out.append(vq.encode(torch.from_numpy(res * gain).to(self.device)).cpu().numpy())
            return np.concatenate(out).astype(np.float32)

        def build() -> dict[str, np.ndarray]:
            z = {"train": encode(self.train), "val": encode(self.val)}
            z["scale"] = np.asarray(1.0 / float(z["train"].std()), np.float64)
            return z

        z = cached_arrays(self.workdir / "latents.npz", build, "MoEDiff-SR latent cache")
        scale = float(z["scale"])
        self.model.latent_scale.fill_(scale)
        log.info("latent scale %.4f (1 / std of the training residual latents)", scale)
        return {k: (v * scale).astype(np.float32) for k, v in z.items() if k != "scale"}

    # ------------------------------------------------------------ phase 3
    def _features(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The frozen perceptual features of E1's task loss: decode (the residual
        image), then the VQ-VAE encoder's stem and first level."""
        vq = self.model.vqvae
        first = vq.encoder.net[: 1 + vq.cfg.num_res_blocks]
        scale = self.model.latent_scale

        def features(z: torch.Tensor) -> torch.Tensor:
            return first(vq.decoder(z / scale))

        return features

    def _task(self, i: int, z0: torch.Tensor, z0_i: torch.Tensor, features) -> torch.Tensor:
        kind = self.cfg.architecture.experts[i]
        if kind == 1:
            return perceptual_loss(z0, z0_i, features)
        if kind == 2:
            return sobel_fourier_loss(z0, z0_i)
        return stft_loss(z0, z0_i)

    def train_joint(self, latents: dict[str, np.ndarray]) -> None:
        """Phase 3 (module docstring)."""
        spec = self.cfg.joint
        model = self.model
        vq = model.vqvae
        for p in vq.parameters():
            p.requires_grad_(False)
        trainable = nn.ModuleDict({"condition": model.condition, "gating": model.gating, "experts": model.experts})
        uncertainty = _UncertaintyState()
        opt = torch.optim.AdamW(trainable.parameters(), lr=spec.lr, weight_decay=1e-4)
        total = spec.epochs * spec.steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total))

        def set_train() -> None:
            trainable.train()
            vq.eval()

        phase = Phase(self.workdir, spec.phase_config("joint"),
                      {"model": model, "uncertainty": uncertainty}, opt, self.seed, scheduler=sched,
                      set_train=set_train, device=self.device, amp=self.amp)
        k = model.n_experts
        weights = spec.task_weights * k if len(spec.task_weights) == 1 else spec.task_weights
        floor = common_floor(model.schedules)
        last = int((model.sampling.alpha_bar >= floor).nonzero().max())
        features = self._features()
        n, b = len(latents["train"]), self.cfg.batch_size
        spatial = self.cfg.architecture.gating_mode == "spatial"
        x0 = self.cfg.architecture.prediction == "x0"

        def draw(rng: np.random.Generator):
            rows = rng.integers(0, n, size=b)
            lr = self._images(self.train, rows, "lr")
            extras = torch.from_numpy(self.train["extras"][rows][:, self.extra_idx].astype(np.float32)) \
                if self.extra_idx else torch.zeros(0)
            t = torch.from_numpy(rng.integers(0, last + 1, size=b))
            eps = torch.from_numpy(rng.standard_normal(latents["train"][rows].shape).astype(np.float32))
            return lr, extras, torch.from_numpy(latents["train"][rows]), t, eps

        def step(batch) -> dict[str, float]:
            lr, extras, z0, t, eps = batch
            global_step = phase_step(phase)
            cond = model.condition_latent(lr)
            with phase.autocast():
                z_c = model.tokens(lr, extras if self.extra_idx else None)
                gates = model.gates(z_c, tuple(z0.shape[2:]))
            gates = gates.float()
            model.gating.update_usage(gates)
            g = warmup_gates(gates, global_step, total, spec.uniform_fraction)
            level = model.sampling.alpha_bar.to(z0.device)[t]  # (B,) float64
            task_rows = (level >= spec.task_min_level).nonzero(as_tuple=True)[0]
            z0_hats, loss_e, parts = [], z0.new_zeros(()), {}
            for i, (expert, schedule) in enumerate(zip(model.experts, model.schedules)):
                t_i = schedule.timestep_for(level.cpu()).to(z0.device)
                a_i = schedule.alpha_bar.to(z0.device)[t_i]
                s = a_i.sqrt().to(z0.dtype)[:, None, None, None]
                r = (1.0 - a_i).sqrt().to(z0.dtype)[:, None, None, None]
                z_t = s * z0 + r * eps
                with phase.autocast():
                    out = expert(z_t, t_i, cond, z_c if model.arch.expert.token_dim else None)
                out = out.float()
                z0_i = model.clean_estimate(out, z_t, a_i)
                z0_hats.append(z0_i)
                # the regression target of the expert's own output: eps (the paper) or z0
                err = (out - z0) ** 2 if x0 else (out - eps) ** 2  # (B, C, h, w)
                eps_err = (model.noise_estimate(out, z_t, a_i) - eps) ** 2
                if spatial:
                    mse_i = (g[:, i] * err.mean(dim=1)).mean()
                    g_mean = g[:, i].mean(dim=(1, 2))
                else:
                    mse_i = (g[:, i] * err.flatten(1).mean(1)).mean()
                    g_mean = g[:, i]
                term = mse_i
                if weights[i] > 0 and task_rows.numel() > 0:
                    task = self._task(i, z0[task_rows], z0_i[task_rows], features)
                    term = term + weights[i] * g_mean[task_rows].mean() * task
                    parts[f"task{i + 1}"] = float(task.detach())
                parts[f"eps{i + 1}"] = float(eps_err.mean().detach())
                if x0:
                    parts[f"x0_{i + 1}"] = float(err.mean().detach())
                loss_e = loss_e + term
            stacked = torch.stack(z0_hats)
            if k == 1:  # one expert (the single-expert baseline): nothing to route
                l_gate, gparts = loss_e.new_zeros(()), {}
            elif spatial:
                l_gate, gparts = spatial_gating_loss(gates, stacked, z0, spec.diversity_weight)
            else:
                l_gate, gparts = gating_loss(gates, stacked, z0, spec.diversity_weight)
            w = min(uncertainty.weight(float(l_gate.detach())), spec.max_gating_weight) if k > 1 else 0.0
            loss = loss_e + w * l_gate
            phase.optimise(loss)
            gm = gates.detach().mean(dim=tuple(d for d in range(gates.ndim) if d != 1))
            return {"loss": float(loss.detach()), "loss_experts": float(loss_e.detach()),
                    "loss_gating": float(l_gate.detach()), "gating_weight": w, **parts,
                    **{k_: v for k_, v in gparts.items() if k_ != "temperature"},
                    **{f"gate{i + 1}": float(gm[i]) for i in range(k)}}

        history = phase.run(draw, step, lambda epoch: self.validate_joint(latents), self.progress)
        self._keep("joint", history)
        model.eval()

    @torch.no_grad()
    def validate_joint(self, latents: dict[str, np.ndarray], steps: int | None = None,
                       mode: str = "full") -> dict[str, float]:
        """Sample the first ``validation_tiles`` held-out tiles: PSNR of the
        result and of the input (normalised units), the mean gates."""
        spec = self.cfg.joint
        model = self.model
        was = model.training
        model.eval()
        n = min(spec.validation_tiles, len(self.val["lr"]))
        lr = torch.from_numpy(self.val["lr"][:n].astype(np.float32)).to(self.device)
        hr = torch.from_numpy(self.val["hr"][:n].astype(np.float32)).to(self.device)
        extras = torch.from_numpy(self.val["extras"][:n][:, self.extra_idx].astype(np.float32)).to(self.device) \
            if self.extra_idx else None
        gen = torch.Generator().manual_seed(self.seed)
        out = model.enhance_slices(lr, extras, steps=steps or spec.validation_steps, mode=mode, generator=gen)
        gm = out.gates.mean(dim=tuple(d for d in range(out.gates.ndim) if d != 1))
        if was:
            model.train()
            model.vqvae.eval()
        res = {"val_psnr": float(psnr(out.sr, hr).mean()), "val_psnr_input": float(psnr(lr, hr).mean())}
        res.update({f"val_gate{i + 1}": float(gm[i]) for i in range(model.n_experts)})
        return res

    def _keep(self, name: str, history: list[dict[str, Any]]) -> None:
        self.histories[name] = history
        if history:
            self.validation[name] = {k: round(float(v), 4) for k, v in history[-1].items() if k.startswith("val_")}

    def run(self) -> dict[str, float]:
        """All phases in order (each resumes or reloads); returns seconds per phase."""
        import time

        times = {}
        t = time.perf_counter()
        self.train_vqvae()
        times["vqvae"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        lat = self.latents()
        times["latents"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        self.train_joint(lat)
        times["joint"] = round(time.perf_counter() - t, 1)
        return times


#: Linear learning-rate warm-up steps of the joint phase (the paper warms up over 100 steps).
WARMUP_STEPS = 100
#: The joint phase's learning rate decays (cosine) to this fraction at the end.
FINAL_LR_FRACTION = 0.1


def lr_factor(step: int, total: int) -> float:
    """Learning-rate factor at ``step`` of ``total``: linear warm-up over
    :data:`WARMUP_STEPS`, then a cosine decay to :data:`FINAL_LR_FRACTION`."""
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    x = min(1.0, (step - WARMUP_STEPS) / max(1, total - WARMUP_STEPS))
    return FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * x))


def phase_step(phase: Phase) -> int:
    """The global step of the phase's next optimisation step (from its scheduler, which the state resumes)."""
    assert phase.scheduler is not None
    return int(phase.scheduler.last_epoch)


def export(trainer: MoEDiffTrainer, path: Path, training_data: dict[str, Any], times: dict[str, float]) -> Path:
    """Write the checkpoint (fp16 weights, manifest with the architecture,
    the schedules, the latent scale, the degradation and the validation scores)."""
    from SuperResMoELib.checkpoints.store import save_checkpoint
    from SuperResMoELib.methods.moediff.checkpoint import moediff_manifest

    from ..domain import moediff_domain

    model = trainer.model
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    manifest = moediff_manifest(
        model.arch, float(model.latent_scale), training_data=training_data,
        training_config=to_dict(trainer.cfg), domain=moediff_domain(trainer.cfg.degradation),
        metrics={"validation": trainer.validation, "phase_seconds": times},
        description=trainer.cfg.description or "MoEDiff-SR")
    return save_checkpoint(path, tensors, manifest, half=True)
