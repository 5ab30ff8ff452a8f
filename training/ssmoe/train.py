"""SS-MoE training, phase by phase (paper 001 section 2.3; DESIGN section 4).

Work directory layout (every step resumable, every product atomic)::

    <workdir>/baseline/            phase 1: SR U-Net, MSE            -> srunet checkpoint
    <workdir>/k<K>_<labeler>/labels.npz   error scores, pseudo labels, thresholds
    <workdir>/k<K>_<labeler>/gater/       phase 2: gater, CE, encoder frozen
    <workdir>/k<K>_<labeler>/routing.npz  the gater's classes for the training patches
    <workdir>/k<K>_<labeler>/expert<k>/   phase 3: decoder k on its routed subset
    <workdir>/hardmoe_k<K>/               Hard-MoE baseline, end to end

K and labeler ablations share the baseline.  Checkpoints are exported as
``<export>/ssmoe_<task>[...].safetensors`` + ``.json``.
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
from SuperResMoELib.nets.moe import SSMoE, HardMoE
from SuperResMoELib.nets.srunet import SRUNet, SRUNetConfig, add_residual

from ..cache import save_npz
from ..cache import load_config as _load_config
from ..loop import Phase, PhaseConfig
from .data import LibraryConfig, PatchLibrary, patch_library
from .sources import open_source

log = logging.getLogger("superresmoe.training")

#: Patches per forward pass when scoring or encoding the whole library.
EVAL_BATCH = 256


def load_config(name_or_path: str) -> dict[str, Any]:
    """A ssmoe config by name (``compact``, ``full``) or JSON path."""
    return _load_config("ssmoe", name_or_path)


@dataclass
class Split:
    """Training and validation pairs (validation = a fixed random fraction)."""

    train: PatchLibrary
    val: PatchLibrary


def split_library(lib: PatchLibrary, fraction: float, seed: int) -> Split:
    perm = np.random.default_rng([seed, 0x5A]).permutation(len(lib))
    n_val = max(1, int(round(fraction * len(lib))))
    return Split(lib.subset(np.sort(perm[n_val:])), lib.subset(np.sort(perm[:n_val])))


def _batches(lib: PatchLibrary, batch: int, index: np.ndarray | None = None) -> Callable[[np.random.Generator], Any]:
    pool = np.arange(len(lib)) if index is None else index

    def draw(rng: np.random.Generator):
        take = pool[rng.integers(0, len(pool), size=batch)]
        return (torch.from_numpy(lib.lr[take]), torch.from_numpy(lib.hr[take]), torch.from_numpy(lib.params[take]))

    return draw


@torch.no_grad()
def _map_batches(lib: PatchLibrary, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> np.ndarray:
    out = []
    for s in range(0, len(lib), EVAL_BATCH):
        out.append(fn(torch.from_numpy(lib.lr[s:s + EVAL_BATCH]), torch.from_numpy(lib.params[s:s + EVAL_BATCH])).cpu().numpy())
    return np.concatenate(out)


def patch_mse(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], lib: PatchLibrary) -> np.ndarray:
    """``(N,)`` MSE of each patch (mean over its HR voxels, network units)."""
    pred = _map_batches(lib, model)
    return ((pred - lib.hr) ** 2).reshape(len(lib), -1).mean(axis=1)


def _mse_step(model: torch.nn.Module, opt: torch.optim.Optimizer, forward: Callable) -> Callable:
    def step(batch) -> dict[str, float]:
        lr, hr, params = batch
        loss = torch.mean((forward(lr, params) - hr) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    return step


def _val(fn: Callable, lib: PatchLibrary) -> Callable[[int], dict[str, float]]:
    return lambda epoch: {"val_mse": float(patch_mse(fn, lib).mean())}


class SSMoETrainer:
    """Runs the phases for one task; see the module docstring."""

    def __init__(self, task: str, config: dict[str, Any], workdir: Path, progress=None,
                 data: str = "sample") -> None:
        self.task = task
        self.cfg = config
        self.workdir = Path(workdir)
        self.progress = progress
        self.net_cfg = SRUNetConfig(task, int(config["width"]), residual=str(config.get("residual", "none")))
        self.seed = int(config["seed"])
        self.batch = int(config["batch_size"])
        torch.manual_seed(self.seed)
        libcfg = config["library"]
        self.source = open_source(data, int(config.get("data_seed", 0)))
        # the config's subjects for the sample data; every subject but the held-out one for a folder
        subjects = tuple(libcfg["subjects"]) if data == "sample" else tuple(range(self.source.held_out))
        volumes = min(int(libcfg["volumes_per_subject"]), len(self.source.table()))
        lib = patch_library(LibraryConfig(task, subjects, volumes, int(libcfg["patches_per_volume"]),
                                          intensity_factor=float(config["intensity_factor"]), seed=self.seed,
                                          data_seed=int(config.get("data_seed", 0)), source=data), progress)
        self.data = split_library(lib, float(libcfg["validation_fraction"]), self.seed)
        log.info("%s library: %d training and %d validation pairs", task, len(self.data.train), len(self.data.val))

    def _phase(self, name: str, spec: dict[str, Any], modules: dict[str, torch.nn.Module],
               params, set_train=None) -> tuple[Phase, torch.optim.Optimizer]:
        opt = torch.optim.Adam(params, lr=float(spec["lr"]))
        cfg = PhaseConfig(name, int(spec["epochs"]), int(spec["steps_per_epoch"]))
        return Phase(self.workdir, cfg, modules, opt, self.seed, set_train=set_train), opt

    # ----------------------------------------------------------- phase 1
    def baseline(self) -> SRUNet:
        """Phase 1: the SR U-Net trained with MSE on all pairs."""
        net = SRUNet(self.net_cfg)
        phase, opt = self._phase("baseline", self.cfg["baseline"], {"net": net}, net.parameters())
        fwd = lambda x, a: net(x)  # noqa: E731
        phase.run(_batches(self.data.train, self.batch), _mse_step(net, opt, fwd), _val(fwd, self.data.val),
                  self.progress)
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
        scores = patch_mse(lambda x, a: baseline(x), self.data.train)
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
        moe.eval()
        feats = _map_batches(self.data.train, lambda x, a: moe.encoder(x).bottleneck.mean(dim=(2, 3, 4)))
        feats_t = torch.from_numpy(feats)[:, :, None, None, None]
        params_t = torch.from_numpy(self.data.train.params)
        labels_t = torch.from_numpy(labels.astype(np.int64))
        gater = moe.gater
        phase, opt = self._phase(f"k{k}_{labeler}/gater", self.cfg["gater"], {"gater": gater}, gater.parameters())

        def draw(rng: np.random.Generator):
            take = torch.from_numpy(rng.integers(0, len(labels), size=self.batch))
            return feats_t[take], params_t[take], labels_t[take]

        def step(batch) -> dict[str, float]:
            f, a, y = batch
            logits = gater(f, a)
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"ce": float(loss.detach()), "acc": float((logits.argmax(1) == y).float().mean())}

        phase.run(draw, step, None, self.progress)
        return moe.eval()

    # ----------------------------------------------------------- phase 3
    def experts(self, moe: SSMoE, k: int, labeler: str) -> tuple[SSMoE, np.ndarray]:
        """Phase 3: route the training pairs with the gater, then fine-tune expert
        ``c`` (initialised from the baseline decoder) on its subset, encoder frozen."""
        route_path = self.workdir / f"k{k}_{labeler}" / "routing.npz"
        if route_path.exists():
            with np.load(route_path) as z:
                routes = z["routes"]
        else:
            routes = _map_batches(self.data.train, lambda x, a: moe.route(x, a)[1].argmax(dim=1)).astype(np.int64)
            save_npz(route_path, routes=routes)
        log.info("routing of the training pairs: %s", np.bincount(routes, minlength=k).tolist())
        for c in range(k):
            index = np.nonzero(routes == c)[0]
            expert = moe.experts[c]
            if len(index) == 0:
                log.warning("expert %d received no training pairs: it keeps the baseline decoder", c)
                continue
            frozen_bn = self.cfg["experts"].get("batchnorm", "frozen") == "frozen"

            def set_train(expert=expert) -> None:
                expert.train()
                if frozen_bn:  # start exactly from the baseline: keep its statistics
                    for m in expert.modules():
                        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                            m.eval()

            phase, opt = self._phase(f"k{k}_{labeler}/expert{c}", self.cfg["experts"], {"expert": expert},
                                     expert.parameters(), set_train)

            def fwd(x, a, expert=expert):
                with torch.no_grad():
                    feats = moe.encoder(x)
                return add_residual(expert(feats), x, moe.cfg)

            moe.train()
            phase.run(_batches(self.data.train, self.batch, index), _mse_step(expert, opt, fwd), None, self.progress)
            moe.eval()
        return moe.eval(), routes

    # ------------------------------------------------------------ hard moe
    def hardmoe(self, k: int) -> HardMoE:
        """The Hard-MoE baseline, trained end to end with MSE."""
        net = HardMoE(self.net_cfg, k)
        phase, opt = self._phase(f"hardmoe_k{k}", self.cfg["hardmoe"], {"net": net}, net.parameters())
        fwd = lambda x, a: net(x)[0]  # noqa: E731
        phase.run(_batches(self.data.train, self.batch), _mse_step(net, opt, fwd), _val(fwd, self.data.val),
                  self.progress)
        return net.eval()


def export(model: torch.nn.Module, kind: str, task: str, cfg: dict[str, Any], n_experts: int, path: Path,
           extra: dict[str, Any]) -> Path:
    """Write ``model`` as a checkpoint (fp16 weights) with an SS-MoE manifest."""
    from SuperResMoELib.methods.ssmoe import ssmoe_manifest

    manifest = ssmoe_manifest(kind, model.cfg, n_experts, float(cfg["intensity_factor"]), **extra)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_checkpoint(path, tensors, manifest, half=True)
