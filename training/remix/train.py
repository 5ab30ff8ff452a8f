"""REMIx training (paper 002 section 2; DESIGN section 4).

Work directory layout (every phase resumable, every product atomic)::

    <workdir>/expert1/     the 1 mm^3 expert, from scratch, on bin 1
    <workdir>/expert<v>/   v = 2..7: bin v, initialised (transfer learning) from expert 1,
                           with ``experts.init = "previous"`` from expert v - 1, with
                           ``"single"`` from the trained 1 network (then trained before them)
    <workdir>/single/      the "1 network" baseline: initialised from expert 1,
                           all bins (drawn uniformly)
    <workdir>/expert_iso/  with ``router: "anisotropy"`` (beyond the paper): the
                           isotropic expert, isotropic acquisitions of bins 2..7,
                           started as ``experts.init`` says

Step budgets are config data (``expert1``, ``experts`` -- each of experts
2..7 -- and ``single``); the compact config gives expert 1 800 steps,
each other expert 1200 and the single network 1800, the full config
20000 / 7500 / 45000.

Each phase minimises the configured composite loss (MAE + (1 - SSIM) +
gradient MAE + (1 - correlation), :class:`training.remix.losses.CompositeLoss`)
with Adam and logs, per epoch, the mean of each term and the validation loss
and PSNR of its bins; with ``experts.select_on: "scans"`` the expert phases
also log and select on ``val_scan_psnr``, the PSNR on whole scans of the
out-of-generator validation head (:mod:`training.remix.scan_validation`).
Checkpoints: ``<export>/remix_t1`` (the seven experts in one file) and
``<export>/remix_t1_single``, each manifest with the resolved config
(``extra.training_config``).

The trainer takes a :class:`~training.remix.config.REMIxConfig` and trains on a
device (``device``, ``amp``: :mod:`training.precision`); the libraries stay in
host memory and batches move to the device as they are drawn.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import numpy as np
import torch

from SuperResMoELib.checkpoints.store import save_checkpoint
from SuperResMoELib.core.errors import ConfigError
from SuperResMoELib.engine.devices import resolve_device
from SuperResMoELib.methods.remix import EXPERTS, remix_manifest
from SuperResMoELib.methods.remix.experts import ISOTROPIC_EXPERT, ISOTROPIC_EXPERT_FROM_MM3, expert_key
from SuperResMoELib.nets.unet3d import ResidualUNet3D

from ..config import PhaseSpec, to_dict
from ..loop import Phase
from ..precision import resolve_amp
from ..library import RowView
from ..split import REMIX_SPLIT_SALT, library_split
from .config import REMIxConfig, RemixExperts
from .data import RemixLibraryConfig, bin_library, validation_library
from .losses import CompositeLoss
from .scan_validation import ScanValidation

log = logging.getLogger("superresmoe.training")

#: Validation pairs per bin scored at each epoch end.
VAL_PAIRS_PER_BIN = 64
#: A pool of pairs: a bin (mm³) or an isotropic bin's name (:func:`isotropic_pool`).
Pool = Union[int, str]
#: The isotropic expert's phase (and work-directory folder) name.
ISOTROPIC_PHASE = expert_key(ISOTROPIC_EXPERT)


def isotropic_bins(bins: tuple[int, ...] | list[int]) -> list[int]:
    """The bins whose isotropic acquisitions train the isotropic expert: those
    whose voxel volumes reach :data:`ISOTROPIC_EXPERT_FROM_MM3` (2 mm³ and up)."""
    return [int(b) for b in bins if b >= ISOTROPIC_EXPERT_FROM_MM3 + 0.5]


def isotropic_pool(bin_mm3: int) -> str:
    """The pool name of a bin's isotropic pairs."""
    return f"iso{int(bin_mm3)}"


def _pool_name(pool: Pool) -> str:
    return f"bin {pool} mm^3" if isinstance(pool, int) else f"isotropic bin {pool[3:]} mm^3"


def library_config(cfg: REMIxConfig, source: str = "sample") -> RemixLibraryConfig:
    """The pair libraries' config of a training config (``source``: :mod:`training.hr_source`)."""
    lib = cfg.library
    return RemixLibraryConfig(lib.subjects, lib.crops_per_subject_and_bin, lib.crop, lib.patch, cfg.degradation,
                              lib.intensity_jitter, cfg.seed, cfg.data_seed, source,
                              hr_blur_mm=tuple(lib.hr_blur_mm),  # type: ignore[arg-type]
                              hr_blur_probability=lib.hr_blur_probability,
                              contrast_gamma=tuple(lib.contrast_gamma))  # type: ignore[arg-type]


def psnr_batch(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean PSNR (dB) of patches in normalised units (peak 1)."""
    mse = ((pred - target) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return float((-10.0 * torch.log10(mse)).mean())


class REMIxTrainer:
    """Runs the phases; see the module docstring.

    Args:
        config: the checked config.
        workdir: the run folder (resumable).
        progress: ``(stage, fraction, message)`` callback.
        device: training device (``"auto"``, ``"cpu"``, ``"cuda[:i]"``, a :class:`torch.device`).
        amp: mixed precision (``"auto"`` or :data:`training.precision.AMP_MODES`).
        data: ``"sample"``, a folder of HR T1 volumes or a BIDS dataset (:mod:`training.hr_source`).
    """

    def __init__(self, config: REMIxConfig, workdir: Path, progress=None,
                 device: torch.device | str = "cpu", amp: str | None = "none", data: str = "sample") -> None:
        self.cfg = config
        self.workdir = Path(workdir)
        self.progress = progress
        self.device = resolve_device(device)
        self.amp = resolve_amp(amp, self.device)
        self.seed = config.seed
        self.batch = config.batch_size
        self.unet_cfg = config.unet
        self.experts_init = config.experts.init
        self.loss = CompositeLoss(to_dict(config.loss))
        torch.manual_seed(self.seed)
        libcfg = library_config(config, data)
        self.data = data
        #: Training subjects whose scans could not be used (the first bin's count; every bin reads the same).
        self.skipped = 0
        #: The split's statement for the manifests (:func:`training.split.library_split`).
        self.split: dict[str, Any] = {}
        #: Pair pools: a bin (its library), or with the anisotropy router ``"iso<bin>"`` (its isotropic library).
        self.train: dict[Pool, dict[str, RowView]] = {}
        self.val: dict[Pool, Mapping[str, RowView | np.ndarray]] = {}
        #: Validation pairs scored per bin: :data:`VAL_PAIRS_PER_BIN` of each source.
        self.val_pairs = VAL_PAIRS_PER_BIN * (2 if config.library.validation == "both" else 1)
        bins = libcfg.degradation.bins
        if config.router == "anisotropy":  # thick slices for the volume experts, isotropic for the isotropic one
            thick = replace(libcfg, degradation=replace(libcfg.degradation, isotropic_probability=0.0))
            iso = replace(libcfg, degradation=replace(libcfg.degradation, isotropic_probability=1.0))
            for b in bins:
                self._load_pool(b, thick, b, progress)
            for b in isotropic_bins(bins):
                self._load_pool(isotropic_pool(b), iso, b, progress)
        else:
            for b in bins:
                self._load_pool(b, libcfg, b, progress)
        self.nets: dict[str, ResidualUNet3D] = {}
        #: Whole-scan validation of the experts (``experts.select_on: "scans"``; scans built on first use).
        self.scan_validation = ScanValidation(self.unet_cfg, self.device)
        #: Last-epoch validation scores of each trained phase (``val_loss``, ``val_psnr``, ``val_psnr_input``).
        self.validation: dict[str, dict[str, float]] = {}

    def _load_pool(self, pool: Pool, libcfg: RemixLibraryConfig, b: int, progress) -> None:
        """The training and validation pairs of one pool: bin ``b``'s library
        of ``libcfg`` split (or all of it training) and, with
        ``library.validation`` ``"outgen"`` / ``"both"``, the out-of-generator
        T1 validation head acquired by ``libcfg``'s degradation."""
        config = self.cfg
        source = config.library.validation
        lib = bin_library(libcfg, b, progress)
        self.skipped = int(lib.meta.get("skipped_subjects", 0))
        head = None  # the out-of-generator T1 validation head's pairs ("outgen", "both")
        if source != "split":
            held = validation_library(libcfg, b, config.library.validation_crops, progress)
            head = held.rows(np.arange(len(held.arrays["subject"])))
        # "outgen": every pair trains; a head the generator did not make validates
        if head is not None and source == "outgen":
            rows = np.arange(len(lib.arrays["subject"]))
            self.train[pool], self.val[pool] = lib.rows(rows), head
            self.split = {"unit": "none: the out-of-generator T1 validation head validates",
                          "training_subjects": list(lib.meta.get("used_subjects", config.library.subjects)),
                          "validation_subjects": []}
            log.info("%s: %d training pairs, %d validation pairs of the out-of-generator "
                     "validation head", _pool_name(pool), len(rows), len(self.val[pool]["lr"]))
            return
        try:
            train, val, self.split = library_split(np.asarray(lib.arrays["subject"]), config.library.split,
                                                   self.data, config.library.validation_subjects,
                                                   config.library.validation_fraction, self.seed,
                                                   REMIX_SPLIT_SALT, b)
        except ValueError as exc:
            raise ConfigError(f"library split: {exc}") from None
        self.val[pool], self.train[pool] = lib.rows(val), lib.rows(train)
        if head is not None:  # "both": the split's validation pairs, then the head's, in memory
            self.val[pool] = {k: np.concatenate([self.val[pool][k][:VAL_PAIRS_PER_BIN], head[k][:VAL_PAIRS_PER_BIN]])
                              for k in ("lr", "hr")}
            self.split = {**self.split, "validation_head": "outgen t1_validation"}
        log.info("%s: %d training and %d validation pairs (split by %s%s)", _pool_name(pool), len(train),
                 len(self.val[pool]["lr"]), self.split["unit"],
                 ", with the out-of-generator validation head" if source == "both" else "")

    # ------------------------------------------------------------ helpers
    def _draw(self, pools: list[Pool], weights: list[float] | None = None
              ) -> Callable[[np.random.Generator], tuple[torch.Tensor, torch.Tensor]]:
        """Batches of pairs, each from a pool drawn uniformly (or by ``weights``)."""
        def draw(rng: np.random.Generator):
            which = [pools[int(n)] for n in rng.choice(len(pools), size=self.batch, p=weights)]
            lr, hr = [], []
            for b in which:
                i = int(rng.integers(0, len(self.train[b]["lr"])))
                lr.append(self.train[b]["lr"][i])
                hr.append(self.train[b]["hr"][i])
            return torch.from_numpy(np.stack(lr).astype(np.float32)), torch.from_numpy(np.stack(hr).astype(np.float32))

        return draw

    def _step(self, net: ResidualUNet3D, phase: Phase) -> Callable:
        def step(batch) -> dict[str, float]:
            lr, hr = batch
            with phase.autocast():
                pred = net(lr)
            loss, parts = self.loss(pred.float(), hr)
            phase.optimise(loss)
            return {"loss": float(loss.detach()), **parts}

        return step

    @torch.no_grad()
    def validate(self, net: ResidualUNet3D, bins: list[Pool]) -> dict[str, float]:
        """Validation loss and PSNR (normalised units) over the first
        :data:`VAL_PAIRS_PER_BIN` validation pairs of each pool (of each
        source with ``validation: "both"``)."""
        net.eval()
        losses, psnrs, psnr_in = [], [], []
        for b in bins:
            lr = torch.from_numpy(self.val[b]["lr"][:self.val_pairs].astype(np.float32)).to(self.device)
            hr = torch.from_numpy(self.val[b]["hr"][:self.val_pairs].astype(np.float32)).to(self.device)
            for s in range(0, len(lr), self.batch):
                pred = net(lr[s:s + self.batch])
                losses.append(float(self.loss(pred, hr[s:s + self.batch])[0]))
                psnrs.append(psnr_batch(pred, hr[s:s + self.batch]))
                psnr_in.append(psnr_batch(lr[s:s + self.batch], hr[s:s + self.batch]))
        net.train()
        return {"val_loss": float(np.mean(losses)), "val_psnr": float(np.mean(psnrs)),
                "val_psnr_input": float(np.mean(psnr_in))}

    def _train(self, name: str, spec: PhaseSpec, bins: list[Pool], init: ResidualUNet3D | None,
               weights: list[float] | None = None, expert: int | str | None = None) -> ResidualUNet3D:
        """One phase of ``spec`` on ``bins`` from ``init``; an ``expert`` phase
        whose ``select_on`` is ``"scans"`` also scores every candidate on the
        validation head's scans and keeps the best of them."""
        net = ResidualUNet3D(self.unet_cfg)
        if init is not None:
            net.load_state_dict(init.state_dict())
        net.to(self.device)
        opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
        on_scans = expert is not None and isinstance(spec, RemixExperts) and spec.select_on == "scans"
        if on_scans:
            pcfg = spec.phase_config(name, "val_scan_psnr", select_max=True)
        else:
            pcfg = spec.phase_config(name, "val_loss")
        phase = Phase(self.workdir, pcfg, {"net": net}, opt, self.seed, device=self.device, amp=self.amp)

        def validate(epoch: int) -> dict[str, float]:
            scores = self.validate(net, bins)
            if on_scans:
                scores.update(self.scan_validation.score(net, expert))  # type: ignore[arg-type]
            return scores

        history = phase.run(self._draw(bins, weights), self._step(net, phase), validate, self.progress)
        if history:
            self.validation[name] = {k: round(float(v), 4) for k, v in history[-1].items() if k.startswith("val_")}
        self.nets[name] = net.eval()
        return net

    # ------------------------------------------------------------- phases
    def expert(self, v: int) -> ResidualUNet3D:
        """Expert ``v``: expert 1 from scratch; the others start from expert 1
        (``experts.init`` = ``"expert1"``), from expert ``v - 1``
        (``"previous"``: a chain 1 -> 2 -> ... -> 7 that begins at expert 1)
        or from the trained 1 network (``"single"``, which is trained first)."""
        if v == EXPERTS[0]:
            return self._train("expert1", self.cfg.expert1, [v], None)
        return self._train(f"expert{v}", self.cfg.experts, [v], self._start(v - 1), expert=v)

    def _start(self, previous: int) -> ResidualUNet3D:
        """Where an expert starts (``experts.init``): the 1 network, expert 1
        or expert ``previous`` (trained first when they are not yet)."""
        if self.experts_init == "single":
            return self.nets.get("single") or self.single()
        u = EXPERTS[0] if self.experts_init == "expert1" else previous
        return self.nets.get(f"expert{u}") or self.expert(u)

    def isotropic_expert(self) -> ResidualUNet3D:
        """The isotropic expert (``router: "anisotropy"``): the isotropic pairs
        of :func:`isotropic_bins`, drawn uniformly, started as ``experts.init``
        says (``"previous"``: from expert 7)."""
        if self.cfg.router != "anisotropy":
            raise ConfigError('the isotropic expert trains only with router "anisotropy"')
        pools: list[Pool] = [isotropic_pool(b) for b in isotropic_bins(self.cfg.degradation.bins)]
        return self._train(ISOTROPIC_PHASE, self.cfg.isotropic_phase, pools, self._start(EXPERTS[-1]),
                           expert=ISOTROPIC_EXPERT)

    def single(self) -> ResidualUNet3D:
        """The 1-network baseline (see the module docstring); with the
        anisotropy router each bin is drawn uniformly and within a bin its
        isotropic pairs with probability ``degradation.isotropic_probability``."""
        base = self.nets.get("expert1") or self.expert(EXPERTS[0])
        bins = list(self.cfg.degradation.bins)
        if self.cfg.router != "anisotropy":
            return self._train("single", self.cfg.single, bins, base)
        p = self.cfg.degradation.isotropic_probability
        pools: list[Pool] = []
        weights: list[float] = []
        for b in bins:
            iso = isotropic_pool(b) in self.train
            pools.append(b)
            weights.append((1.0 - p if iso else 1.0) / len(bins))
            if iso:
                pools.append(isotropic_pool(b))
                weights.append(p / len(bins))
        return self._train("single", self.cfg.single, pools, base, weights)


#: What ``--start-from`` takes from a finished run: phase -> (checkpoint name, tensor prefix).
STARTED_PHASES: dict[str, tuple[str, str]] = {"expert1": ("remix_t1", "expert1."),
                                              "single": ("remix_t1_single", "net.")}
#: Config keys that must match for those phases to be taken over (what expert 1 and the 1 network trained on).
STARTED_CONFIG_KEYS: tuple[str, ...] = ("unet", "loss", "library", "degradation", "expert1", "single", "seed",
                                        "data_seed", "batch_size")


def load_started(folder: Path, cfg: REMIxConfig, data: str) -> dict[str, tuple[ResidualUNet3D, dict[str, float]]]:
    """Expert 1 and the 1 network of a finished run's checkpoints (``--start-from``):
    ``{phase: (network in eval mode on the CPU, its recorded validation scores)}``.

    A run that changes only what comes after them (the router, the other
    experts' phase, the isotropic expert) then trains the rest from the same
    start.

    Raises:
        ConfigError: a checkpoint is missing or unreadable, records no
            training config, was trained on other data, or its config differs
            on :data:`STARTED_CONFIG_KEYS`.
    """
    from ..start_from import matching_checkpoint
    from .config import REMIxConfig as _Config

    out: dict[str, tuple[ResidualUNet3D, dict[str, float]]] = {}
    for phase, (name, prefix) in STARTED_PHASES.items():
        path = Path(folder) / name
        ck = matching_checkpoint(path, "remix", None, _Config, cfg, data, lambda top: top in STARTED_CONFIG_KEYS,
                                 "start from the checkpoints of a run with the same library, degradation, U-Net, "
                                 "loss and expert 1 / 1-network phases")
        net = ResidualUNet3D(cfg.unet)
        net.load_state_dict({k[len(prefix):]: t for k, t in ck.tensors.items() if k.startswith(prefix)})
        val = ck.manifest.metrics.get("validation", {}) if isinstance(ck.manifest.metrics, dict) else {}
        val = val.get(phase, {}) if phase != "single" else val
        log.info("%s: from %s (not trained again)", phase, path)
        out[phase] = (net.eval(), dict(val) if isinstance(val, dict) else {})
    return out


def export(trainer: REMIxTrainer, path_experts: Path | None, path_single: Path | None,
           training_data: dict[str, Any]) -> list[Path]:
    """Write the experts (all seven) and/or the single network (fp16, from the
    CPU); the manifests' ``metrics.validation`` hold each network's last-epoch
    validation loss and PSNR (normalised units) and the input's PSNR, their
    ``extra.training_config`` the resolved config."""
    from ..domain import remix_domain

    written = []
    resolved = to_dict(trainer.cfg)
    domain = remix_domain(trainer.cfg.degradation)
    if path_experts is not None:
        router = trainer.cfg.router == "anisotropy"
        phases = {expert_key(v): f"expert{v}" for v in EXPERTS}
        if router:
            phases[expert_key(ISOTROPIC_EXPERT)] = ISOTROPIC_PHASE
        tensors = {f"{key}.{k}": t.detach().cpu().contiguous()
                   for key, phase in phases.items() for k, t in trainer.nets[phase].state_dict().items()}
        val = {phase: trainer.validation[phase] for phase in phases.values() if phase in trainer.validation}
        what = ("seven resolution experts (voxel volume 1..7 mm^3, thick slices) and the isotropic expert "
                "(anisotropy-aware router)" if router else "seven resolution experts (voxel volume 1..7 mm^3)")
        manifest = remix_manifest("experts", trainer.unet_cfg, isotropic_expert=router, training_data=training_data,
                                  training_config=resolved, domain=domain,
                                  metrics={"validation": val} if val else {}, description=f"REMIx: {what}")
        written.append(save_checkpoint(path_experts, tensors, manifest, half=True))
    if path_single is not None:
        tensors = {f"net.{k}": t.detach().cpu().contiguous() for k, t in trainer.nets["single"].state_dict().items()}
        val = trainer.validation.get("single")
        manifest = remix_manifest("single", trainer.unet_cfg, training_data=training_data, training_config=resolved,
                                  domain=domain,
                                  metrics={"validation": val} if val else {},
                                  description="REMIx 1-network baseline: one U-Net for every resolution")
        written.append(save_checkpoint(path_single, tensors, manifest, half=True))
    return written
