"""SS-MoE training, phase by phase (paper 001 section 2.3; DESIGN section 4).

Work directory layout (every step resumable, every product atomic)::

    <workdir>/baseline/            phase 1: SR U-Net, MSE            -> srunet checkpoint
    <workdir>/k<K>_<labeler>/labels.npz   error scores, pseudo labels, thresholds
    <workdir>/k<K>_<labeler>/gater/       phase 2: gater, CE, encoder frozen
    <workdir>/k<K>_<labeler>/routing.npz  the gater's classes for the training patches
    <workdir>/k<K>_<labeler>/expert<k>/   phase 3: decoder k on its routed subset
    <workdir>/k<K>_<labeler>/joint/       optional phase 4 (``joint``): encoder + experts together
    <workdir>/hardmoe_k<K>/               Hard-MoE baseline, end to end (from scratch or the baseline)

K and labeler ablations share the baseline.  A finished run's exported
checkpoints can stand in for phases 1-3 (:meth:`SSMoETrainer.trained`), so the
joint phase can be added to a run without training it again.  Checkpoints are exported as
``<export>/ssmoe_<task>[...].safetensors`` + ``.json``, each manifest with the
resolved config (``extra.training_config``).

The trainer takes an :class:`~training.ssmoe.config.SSMoEConfig` and trains on
a device (``device``, ``amp``: :mod:`training.precision`); the patch library
stays in host memory and batches move to the device as they are drawn.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from SuperResMoELib.checkpoints.store import save_checkpoint
from SuperResMoELib.engine.devices import resolve_device
from SuperResMoELib.nets.moe import SSMoE, HardMoE
from SuperResMoELib.nets.srunet import SRUNet, SRUNetConfig, finish_output, patch_scale

from ..cache import save_npz
from ..config import PhaseSpec, to_dict
from ..loop import Phase
from ..precision import resolve_amp
from ..split import SSMOE_SPLIT_SALT, split_indices
from .config import SSMoEConfig
from .data import LibraryConfig, PatchLibrary, patch_library
from .sources import open_source

log = logging.getLogger("superresmoe.training")

#: Patches per forward pass when scoring or encoding the whole library.
EVAL_BATCH = 256


@dataclass
class Split:
    """Training and validation pairs (validation = a fixed random fraction)."""

    train: PatchLibrary
    val: PatchLibrary


def split_library(lib: PatchLibrary, fraction: float, seed: int) -> Split:
    """``lib`` split by :func:`training.split.split_indices` (salt :data:`SSMOE_SPLIT_SALT`)."""
    train, val = split_indices(len(lib), fraction, seed, SSMOE_SPLIT_SALT)
    return Split(lib.subset(train), lib.subset(val))


def _batches(lib: PatchLibrary, batch: int, index: np.ndarray | None = None) -> Callable[[np.random.Generator], Any]:
    pool = np.arange(len(lib)) if index is None else index

    def draw(rng: np.random.Generator):
        take = pool[rng.integers(0, len(pool), size=batch)]
        return (torch.from_numpy(lib.lr[take]), torch.from_numpy(lib.hr[take]), torch.from_numpy(lib.params[take]))

    return draw


@torch.no_grad()
def _map_batches(lib: PatchLibrary, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 device: torch.device | str = "cpu") -> np.ndarray:
    """``fn(lr, params)`` over the library in chunks of :data:`EVAL_BATCH` on
    ``device``, float32 results concatenated on the host."""
    out = []
    for s in range(0, len(lib), EVAL_BATCH):
        lr = torch.from_numpy(lib.lr[s:s + EVAL_BATCH]).to(device)
        params = torch.from_numpy(lib.params[s:s + EVAL_BATCH]).to(device)
        out.append(fn(lr, params).float().cpu().numpy())
    return np.concatenate(out)


def patch_mse(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], lib: PatchLibrary,
              device: torch.device | str = "cpu") -> np.ndarray:
    """``(N,)`` MSE of each patch (mean over its HR voxels, network units)."""
    pred = _map_batches(lib, model, device)
    return ((pred - lib.hr) ** 2).reshape(len(lib), -1).mean(axis=1)


def _mse_step(phase: Phase, forward: Callable) -> Callable:
    def step(batch) -> dict[str, float]:
        lr, hr, params = batch
        with phase.autocast():
            pred = forward(lr, params)
        loss = torch.mean((pred.float() - hr) ** 2)
        phase.optimise(loss)
        return {"loss": float(loss.detach())}

    return step


def _val(fn: Callable, lib: PatchLibrary, device: torch.device) -> Callable[[int], dict[str, float]]:
    return lambda epoch: {"val_mse": float(patch_mse(fn, lib, device).mean())}


class SSMoETrainer:
    """Runs the phases for one task; see the module docstring.

    Args:
        task: ``"aniso"`` or ``"iso"``.
        config: the checked config.
        workdir: the run folder (resumable).
        progress: ``(stage, fraction, message)`` callback.
        data: ``"sample"`` or ``"mudi:<folder>"`` (:mod:`.sources`).
        device: training device (``"auto"``, ``"cpu"``, ``"cuda[:i]"``, a :class:`torch.device`).
        amp: mixed precision (``"auto"`` or :data:`training.precision.AMP_MODES`).
    """

    def __init__(self, task: str, config: SSMoEConfig, workdir: Path, progress=None,
                 data: str = "sample", device: torch.device | str = "cpu", amp: str | None = "none") -> None:
        self.task = task
        self.cfg = config
        self.workdir = Path(workdir)
        self.progress = progress
        self.device = resolve_device(device)
        self.amp = resolve_amp(amp, self.device)
        self.net_cfg = SRUNetConfig(task, config.width, residual=config.residual, normalize=config.normalize)
        self.seed = config.seed
        self.batch = config.batch_size
        torch.manual_seed(self.seed)
        libcfg = config.library
        variation = libcfg.variation if data == "sample" else "standard"
        self.source = open_source(data, config.data_seed, variation)
        # the config's subjects for the sample data; every subject but the held-out one for a folder
        subjects = libcfg.subjects if data == "sample" else tuple(range(self.source.held_out))
        #: The subjects the patch library is drawn from.
        self.subjects: tuple[int, ...] = tuple(subjects)
        volumes = min(libcfg.volumes_per_subject, len(self.source.table()))
        lib = patch_library(LibraryConfig(task, subjects, volumes, libcfg.patches_per_volume,
                                          intensity_factor=config.intensity_factor, seed=self.seed,
                                          data_seed=config.data_seed, source=data, variation=variation,
                                          lr_blur=tuple(libcfg.lr_blur),  # type: ignore[arg-type]
                                          lr_blur_probability=libcfg.lr_blur_probability,
                                          wide_subjects=tuple(libcfg.wide_subjects) if data == "sample" else ()),
                              progress)
        train, val = lib, []
        if libcfg.validation != "outgen":
            split = split_library(lib, libcfg.validation_fraction, self.seed)
            train, val = split.train, [split.val]
        if libcfg.validation != "split":  # selection on a head the generator did not make ("both": the split's too)
            val.append(patch_library(LibraryConfig(task, (0,), libcfg.validation_rows, libcfg.patches_per_volume,
                                                   intensity_factor=config.intensity_factor, seed=self.seed,
                                                   source="outgen-validation"), progress))
        self.data = Split(train, val[0] if len(val) == 1 else PatchLibrary.concat(*val))
        where = {"split": f"{libcfg.validation_fraction:.0%} of the library",
                 "outgen": "out-of-generator validation head",
                 "both": f"{libcfg.validation_fraction:.0%} of the library + the out-of-generator validation head"}
        log.info("%s library: %d training and %d validation pairs (%s)", task, len(self.data.train),
                 len(self.data.val), where[libcfg.validation])

    def _phase(self, name: str, spec: PhaseSpec, modules: dict[str, torch.nn.Module],
               params, set_train=None) -> Phase:
        for m in modules.values():  # before the optimiser holds their parameters
            m.to(self.device)
        opt = torch.optim.Adam(params, lr=spec.lr)
        cfg = spec.phase_config(name)
        return Phase(self.workdir, cfg, modules, opt, self.seed, set_train=set_train, device=self.device,
                     amp=self.amp)

    # ----------------------------------------------------------- phase 1
    def baseline(self) -> SRUNet:
        """Phase 1: the SR U-Net trained with MSE on all pairs."""
        net = SRUNet(self.net_cfg).to(self.device)
        phase = self._phase("baseline", self.cfg.baseline, {"net": net}, net.parameters())
        fwd = lambda x, a: net(x)  # noqa: E731
        phase.run(_batches(self.data.train, self.batch), _mse_step(phase, fwd),
                  _val(fwd, self.data.val, self.device), self.progress)
        return net.eval()

    # ------------------------------------------------------ labels (1->2)
    def labels(self, baseline: SRUNet, k: int, labeler: str) -> dict[str, np.ndarray]:
        """Per-patch baseline error scores and their ``k`` pseudo error classes."""
        from training.ssmoe.pseudo_labels import pseudo_labels

        path = self.workdir / f"k{k}_{labeler}" / "labels.npz"
        if path.exists():
            with np.load(path) as z:
                return {n: z[n] for n in z.files}
        t0 = time.perf_counter()
        baseline.to(self.device)
        scores = patch_mse(lambda x, a: baseline(x), self.data.train, self.device)
        if self.net_cfg.normalize == "patch":  # relative error: what the gater, seeing x / s, can predict
            scale = patch_scale(torch.from_numpy(self.data.train.lr).float()).reshape(-1).numpy()
            scores = scores / scale.astype(np.float64) ** 2
        labels, thresholds = pseudo_labels(scores, k, labeler)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npz(path, scores=scores, labels=labels, thresholds=thresholds)
        log.info("%s labels (k=%d): thresholds %s, class sizes %s (%.1f s)", labeler, k, np.round(thresholds, 6),
                 np.bincount(labels, minlength=k).tolist(), time.perf_counter() - t0)
        return {"scores": scores, "labels": labels, "thresholds": thresholds}

    # ----------------------------------------------------------- phase 2
    def gater(self, baseline: SRUNet, k: int, labeler: str, labels: np.ndarray) -> SSMoE:
        """Phase 2: the gater on GAP(bottleneck) ++ z-scored parameters, CE loss,
        encoder frozen (its features are computed once)."""
        moe = SSMoE.from_baseline(baseline, k)
        table = self.source.table().values  # z-score statistics over the protocol, as the reference
        moe.gater.set_param_stats(torch.from_numpy(table.mean(0)), torch.from_numpy(table.std(0)))
        moe.to(self.device).eval()
        feats = _map_batches(self.data.train, lambda x, a: moe.encode(x)[0].bottleneck.mean(dim=(2, 3, 4)),
                             self.device)
        feats_t = torch.from_numpy(feats)[:, :, None, None, None]
        params_t = torch.from_numpy(self.data.train.params)
        labels_t = torch.from_numpy(labels.astype(np.int64))
        gater = moe.gater
        phase = self._phase(f"k{k}_{labeler}/gater", self.cfg.gater, {"gater": gater}, gater.parameters())

        def draw(rng: np.random.Generator):
            take = torch.from_numpy(rng.integers(0, len(labels), size=self.batch))
            return feats_t[take], params_t[take], labels_t[take]

        def step(batch) -> dict[str, float]:
            f, a, y = batch
            with phase.autocast():
                logits = gater(f, a).float()
            loss = torch.nn.functional.cross_entropy(logits, y)
            phase.optimise(loss)
            return {"ce": float(loss.detach()), "acc": float((logits.argmax(1) == y).float().mean())}

        phase.run(draw, step, None, self.progress)
        return moe.eval()

    # ----------------------------------------------------------- phase 3
    def experts(self, moe: SSMoE, k: int, labeler: str) -> tuple[SSMoE, np.ndarray]:
        """Phase 3: route the training pairs with the gater, then fine-tune expert
        ``c`` (initialised from the baseline decoder) on its subset, encoder frozen."""
        moe.to(self.device)
        route_path = self.workdir / f"k{k}_{labeler}" / "routing.npz"
        if route_path.exists():
            with np.load(route_path) as z:
                routes = z["routes"]
        else:
            routes = _map_batches(self.data.train, lambda x, a: moe.route(x, a)[1].argmax(dim=1),
                                  self.device).astype(np.int64)
            save_npz(route_path, routes=routes)
        log.info("routing of the training pairs: %s", np.bincount(routes, minlength=k).tolist())
        val_routes = np.zeros(0, np.int64)
        if self.cfg.experts.select == "best":
            val_routes = _map_batches(self.data.val, lambda x, a: moe.route(x, a)[1].argmax(dim=1),
                                      self.device).astype(np.int64)
            log.info("routing of the validation pairs: %s", np.bincount(val_routes, minlength=k).tolist())
        for c in range(k):
            index = np.nonzero(routes == c)[0]
            expert = moe.experts[c]
            if len(index) == 0:
                log.warning("expert %d received no training pairs: it keeps the baseline decoder", c)
                continue
            frozen_bn = self.cfg.experts.batchnorm == "frozen"

            def set_train(expert=expert) -> None:
                expert.train()
                if frozen_bn:  # start exactly from the baseline: keep its statistics
                    for m in expert.modules():
                        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                            m.eval()

            phase = self._phase(f"k{k}_{labeler}/expert{c}", self.cfg.experts, {"expert": expert},
                                expert.parameters(), set_train)

            def fwd(x, a, expert=expert):
                with torch.no_grad():
                    feats, xn, scale = moe.encode(x)
                return finish_output(expert(feats), xn, scale, moe.cfg)

            validate = None
            if self.cfg.experts.select == "best":  # on the validation pairs the gater sends to this expert
                val_index = np.nonzero(val_routes == c)[0]
                if len(val_index) == 0:
                    raise RuntimeError(f"expert {c}: no validation pair is routed to it; use experts.select 'last'")
                validate = _val(fwd, self.data.val.subset(val_index), self.device)
            moe.train()
            phase.run(_batches(self.data.train, self.batch, index), _mse_step(phase, fwd), validate, self.progress)
            moe.eval()
        return moe.eval(), routes

    # ------------------------------------------- phase 4 (beyond the paper)
    def joint(self, moe: SSMoE, k: int, labeler: str) -> SSMoE:
        """Phase 4 (``joint``; the paper keeps the encoder frozen): the encoder
        and every expert fine-tuned together with MSE, each patch ``(B, 1,
        *lr_patch)`` decoded by the expert the gater routes it to (routing
        recomputed every step from the moving encoder, as at inference). The
        gater's weights and every batch-norm statistic stay as phases 2-3
        left them. Validation (``select: "best"``) scores the whole mixture
        on the validation pairs; logs how many training pairs change expert."""
        spec = self.cfg.joint
        if spec is None:
            raise ValueError("the config has no joint phase")
        moe.to(self.device)
        route = lambda x, a: moe.route(x, a)[1].argmax(dim=1)  # noqa: E731
        before = _map_batches(self.data.train, route, self.device).astype(np.int64)

        def set_train() -> None:
            moe.train()
            moe.gater.eval()
            for m in moe.modules():  # batch-norm statistics do not move
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

        params = [*moe.encoder.parameters(), *moe.experts.parameters()]
        phase = self._phase(f"k{k}_{labeler}/joint", spec, {"moe": moe}, params, set_train)
        fwd = lambda x, a: moe(x, a)[0]  # noqa: E731
        phase.run(_batches(self.data.train, self.batch), _mse_step(phase, fwd),
                  _val(fwd, self.data.val, self.device) if spec.select == "best" else None, self.progress)
        moe.eval()
        after = _map_batches(self.data.train, route, self.device).astype(np.int64)
        log.info("joint phase: %d of %d training pairs changed expert; routing %s -> %s",
                 int((before != after).sum()), len(after), np.bincount(before, minlength=k).tolist(),
                 np.bincount(after, minlength=k).tolist())
        return moe

    # ------------------------------------------------------------ hard moe
    def hardmoe(self, k: int, baseline: SRUNet | None = None) -> HardMoE:
        """The Hard-MoE baseline, trained end to end with MSE; with
        ``hardmoe.init: "baseline"`` it starts from ``baseline`` (required then)."""
        if self.cfg.hardmoe.init == "baseline":
            if baseline is None:
                raise ValueError('hardmoe.init "baseline" needs the trained SR U-Net')
            net = HardMoE.from_baseline(baseline, k).to(self.device)
        else:
            net = HardMoE(self.net_cfg, k).to(self.device)
        phase = self._phase(f"hardmoe_k{k}", self.cfg.hardmoe, {"net": net}, net.parameters())
        fwd = lambda x, a: net(x)[0]  # noqa: E731
        phase.run(_batches(self.data.train, self.batch), _mse_step(phase, fwd),
                  _val(fwd, self.data.val, self.device), self.progress)
        return net.eval()


def load_trained(folder: Path, name: str, cfg: SSMoEConfig, task: str,
                 data: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network of the exported checkpoint ``<folder>/<name>`` (CPU, eval
    mode) and its manifest's ``extra``, for a run that goes on from it (the
    joint phase added after phases 1-3: ``--start-from``).

    Args:
        folder, name: the checkpoint (``<name>.safetensors`` + ``.json``).
        cfg, task: the run's config and task.
        data: the run's training data (:attr:`MudiSource.description`).

    Raises:
        ConfigError: the checkpoint is missing or unreadable, for another
            task, trained on other data or with another config (every key but
            ``joint`` and ``description`` must match: the same library and
            phases).
    """
    from SuperResMoELib.methods.ssmoe.checkpoint import build_network

    from ..start_from import matching_checkpoint

    path = Path(folder) / name
    ck = matching_checkpoint(path, "ssmoe", task, SSMoEConfig, cfg, data,
                             lambda top: top not in ("joint", "description"),
                             "start from the checkpoints of a run of this config")
    extra = dict(ck.manifest.extra)
    net = build_network(ck.manifest)
    net.load_state_dict(ck.tensors)
    log.info("%s: from %s (not trained again)", name, path)
    return net.eval(), extra


def export(model: torch.nn.Module, kind: str, task: str, cfg: SSMoEConfig, n_experts: int, path: Path,
           extra: dict[str, Any]) -> Path:
    """Write ``model`` as a checkpoint (fp16 weights, from the CPU) with an
    SS-MoE manifest; ``extra`` are further manifest fields, the resolved config
    goes into ``extra.training_config``."""
    from SuperResMoELib.methods.ssmoe import ssmoe_manifest

    manifest = ssmoe_manifest(kind, model.cfg, n_experts, cfg.intensity_factor, training_config=to_dict(cfg),
                              **extra)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_checkpoint(path, tensors, manifest, half=True)
