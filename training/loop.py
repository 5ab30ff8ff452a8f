"""A resumable training phase: fixed epochs x steps, deterministic batches,
state saved every few steps and at each epoch end, a per-epoch loss log.

Batches are drawn from a generator seeded by ``(seed, epoch, step)``, so a run
killed at any point and restarted continues with exactly the batches it would
have seen; the torch RNG (dropout, augmentation) is saved with the state.
A finished phase leaves ``done.json``; running it again only reloads weights.

Model selection: with ``select="best"`` the weights of the epoch with the
lowest (``select_max``: highest) validation ``select_metric`` (from ``end_of_epoch``) are kept in
``best.safetensors`` (written atomically, with their epoch and value in the
state) and are the phase's result; ``"last"`` keeps the last epoch's.  With
``validate_start`` a fine-tuning phase validates its starting weights first
(logged as epoch 0, a row without losses or time) and keeps them when no
epoch beats them: fine-tuning can then not end worse, on the validation set,
than where it began.

A phase trains on a device (``"cpu"``, ``"cuda:0"``, ...; batches are moved
there as they are drawn) with a mixed-precision mode (:mod:`.precision`); its
saved state holds CPU tensors and plain numbers only, so a phase started on
one device resumes on another.

Under ``torchrun`` (:mod:`.distributed`) each rank trains on its shard of every
batch with gradients averaged over the ranks; rank 0 saves and logs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from SuperResMoELib.engine.devices import resolve_device
from SuperResMoELib.io.atomic import write_bytes_atomic, write_text_atomic

from . import distributed
from .config import SELECT_MODES
from .precision import Precision
from .state import load_state, save_state

log = logging.getLogger("superresmoe.training")

DONE_FILE = "done.json"
LOG_FILE = "log.csv"


@dataclass(frozen=True)
class PhaseConfig:
    """Length and saving cadence of a phase.

    Attributes:
        name: folder name under the work directory.
        epochs: number of epochs.
        steps_per_epoch: optimisation steps per epoch.
        save_every_steps: state is saved after this many steps (and at epoch end).
        select: ``"last"`` (the last epoch's weights) or ``"best"`` (the epoch
            with the lowest ``select_metric``; needs an ``end_of_epoch`` validation).
        select_metric: the validation metric ``"best"`` minimises (maximises
            with ``select_max``, e.g. a PSNR).
        validate_start: with ``"best"``, the starting weights are validated
            before the first step (epoch 0) and are a candidate too.
    """

    name: str
    epochs: int
    steps_per_epoch: int
    save_every_steps: int = 25
    select: str = "last"
    select_metric: str = "val_mse"
    validate_start: bool = False
    select_max: bool = False


BEST_WEIGHTS = "best.safetensors"


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (a tensor, or tuples/lists/dicts of them) with every tensor on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


class Phase:
    """One training phase over ``modules`` with ``optimizer``.

    Args:
        workdir: the run's folder; the phase uses ``workdir / cfg.name``.
        cfg: phase length.
        modules: named modules whose weights form the state.
        optimizer: optimizer over (some of) their parameters.
        seed: base seed of the batch generators.
        scheduler: optional learning-rate scheduler stepped once per step.
        set_train: puts the modules in training mode at each epoch start
            (default ``module.train()``; e.g. keep batch norms frozen).
        device: where the modules (moved there now) and the batches live
            (anything :func:`~SuperResMoELib.engine.devices.resolve_device` takes).
        amp: mixed-precision mode (:data:`training.precision.AMP_MODES`, resolved).
    """

    def __init__(self, workdir: Path, cfg: PhaseConfig, modules: dict[str, torch.nn.Module],
                 optimizer: torch.optim.Optimizer, seed: int,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                 set_train: Callable[[], None] | None = None,
                 device: torch.device | str = "cpu", amp: str = "none") -> None:
        self.folder = Path(workdir) / cfg.name
        self.cfg = cfg
        self.device = resolve_device(device)
        self.modules = {name: m.to(self.device) for name, m in modules.items()}
        self.optimizer = optimizer
        self.seed = seed
        self.scheduler = scheduler
        self.set_train = set_train or (lambda: [m.train() for m in modules.values()])
        self.precision = Precision(amp, self.device)
        self.dist = distributed.current()

    def autocast(self):
        """Context of a step's forward pass (:meth:`training.precision.Precision.autocast`)."""
        return self.precision.autocast()

    def optimise(self, loss: torch.Tensor) -> None:
        """Zero the gradients, back-propagate ``loss`` and step the optimiser
        (through the fp16 gradient scaler when there is one); under torchrun the
        gradients are averaged over the ranks first."""
        sync = None
        if self.dist.active:
            def sync() -> None:
                self.dist.average_gradients(p for m in self.modules.values() for p in m.parameters()
                                            if p.requires_grad)
        self.precision.step(loss, self.optimizer, sync)

    @property
    def done(self) -> bool:
        return (self.folder / DONE_FILE).exists()

    def history(self) -> list[dict[str, Any]]:
        """Per-epoch log of a finished (or partly run) phase."""
        path = self.folder / DONE_FILE
        if path.exists():
            return json.loads(path.read_text())["history"]
        return []

    def _save(self, epoch: int, step: int, history: list[dict[str, Any]], sums: dict[str, float]) -> None:
        if self.dist.is_main:
            info = {"epoch": epoch, "step": step, "history": history, "sums": sums,
                    "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                    "scaler": self.precision.state_dict()}
            save_state(self.folder, self.modules, self.optimizer, info)
        self.dist.barrier()

    def _best_so_far(self, history: list[dict[str, Any]]) -> tuple[int, float] | None:
        """``(epoch, value)`` of the best validated epoch in ``history``."""
        scored = [(r["epoch"], r[self.cfg.select_metric]) for r in history if self.cfg.select_metric in r]
        if not scored:
            return None
        return max(scored, key=lambda x: x[1]) if self.cfg.select_max else min(scored, key=lambda x: x[1])

    def _keep_if_best(self, history: list[dict[str, Any]]) -> None:
        """After an epoch: save the weights as the best when this epoch is it."""
        best = self._best_so_far(history)
        if best is None or best[0] != history[-1]["epoch"] or not self.dist.is_main:
            return
        tensors = {f"{name}.{k}": v.detach().cpu().contiguous()
                   for name, m in self.modules.items() for k, v in m.state_dict().items()}
        write_bytes_atomic(self.folder / BEST_WEIGHTS, save_bytes(tensors))

    def _load_best(self, history: list[dict[str, Any]]) -> None:
        """Put the best epoch's weights into the modules (``select="best"``)."""
        best = self._best_so_far(history)
        path = self.folder / BEST_WEIGHTS
        if self.cfg.select != "best" or best is None:
            return
        if not path.exists():
            raise RuntimeError(f"{path}: the best epoch's weights are missing (epoch {best[0]})")
        tensors = load_bytes(path.read_bytes())
        for name, m in self.modules.items():
            prefix = f"{name}."
            m.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        log.info("%s: keeps epoch %d (%s %.5g)", self.cfg.name, best[0], self.cfg.select_metric, best[1])

    def _validate_start(self, end_of_epoch: Callable[[int], dict[str, float]]) -> dict[str, Any]:
        """Epoch 0: the starting weights' validation, kept as the best so far."""
        for m in self.modules.values():
            m.eval()
        row: dict[str, Any] = {"epoch": 0, **end_of_epoch(0)}
        self._keep_if_best([row])
        log.info("%s start (epoch 0): %s", self.cfg.name,
                 " ".join(f"{k}={v:.5g}" for k, v in row.items() if k != "epoch"))
        return row

    def _write_log(self, history: list[dict[str, Any]]) -> None:
        if not history or not self.dist.is_main:
            return
        keys = list(dict.fromkeys(k for row in history for k in row))  # epoch 0 has no losses
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(history)
        write_text_atomic(self.folder / LOG_FILE, buf.getvalue())

    def run(
        self,
        batch_fn: Callable[[np.random.Generator], Any],
        step_fn: Callable[[Any], dict[str, float]],
        end_of_epoch: Callable[[int], dict[str, float]] | None = None,
        progress: Callable[[str, float, str], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Train (or resume, or just reload a finished phase).

        Args:
            batch_fn: draws one batch (tensors on any device) from the given generator.
            step_fn: one optimisation step on the batch (moved to :attr:`device`);
                returns scalar losses.
            end_of_epoch: optional validation, ``epoch -> metrics``, logged.
            progress: ``(stage, fraction, message)`` callback.

        Returns:
            The per-epoch history (mean of each loss, epoch time, validation).
        """
        if self.cfg.select not in SELECT_MODES:
            raise ValueError(f"{self.cfg.name}: select must be one of {SELECT_MODES}, got {self.cfg.select!r}")
        if self.cfg.select == "best" and end_of_epoch is None:
            raise ValueError(f"{self.cfg.name}: select='best' needs a validation (end_of_epoch)")
        if self.cfg.validate_start and self.cfg.select != "best":
            raise ValueError(f"{self.cfg.name}: validate_start needs select='best'")
        info = load_state(self.folder, self.modules, self.optimizer)
        if self.done:
            history = self.history()
            self._load_best(history)
            return history
        epoch, step, history, sums = 0, 0, [], {}
        if info is not None:
            epoch, step, history, sums = info["epoch"], info["step"], info["history"], info["sums"]
            if self.scheduler is not None and info.get("scheduler"):
                self.scheduler.load_state_dict(info["scheduler"])
            self.precision.load_state_dict(info.get("scaler"))
            log.info("%s: resuming at epoch %d step %d", self.cfg.name, epoch + 1, step)
        self.dist.broadcast(self.modules.values())  # every rank starts from rank 0's weights
        if info is None and self.cfg.validate_start and end_of_epoch is not None:
            history = [self._validate_start(end_of_epoch)]
            self._save(epoch, step, history, sums)
        total = self.cfg.epochs * self.cfg.steps_per_epoch
        t_epoch = time.perf_counter()
        while epoch < self.cfg.epochs:
            self.set_train()
            while step < self.cfg.steps_per_epoch:
                rng = np.random.default_rng([self.seed, epoch, step])
                batch = self.dist.shard(batch_fn(rng))  # the whole batch alone; this rank's slice under torchrun
                losses = self.dist.mean(step_fn(to_device(batch, self.device)))
                if self.scheduler is not None:
                    self.scheduler.step()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                step += 1
                done_steps = epoch * self.cfg.steps_per_epoch + step
                if progress is not None:
                    msg = " ".join(f"{k}={sums[k] / step:.4g}" for k in losses)
                    progress(self.cfg.name, done_steps / total, f"epoch {epoch + 1}/{self.cfg.epochs} {msg}")
                if step % self.cfg.save_every_steps == 0 and step < self.cfg.steps_per_epoch:
                    self._save(epoch, step, history, sums)
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update({k: v / self.cfg.steps_per_epoch for k, v in sums.items()})
            row["seconds"] = round(time.perf_counter() - t_epoch, 2)
            if end_of_epoch is not None:
                for m in self.modules.values():
                    m.eval()
                row.update(end_of_epoch(epoch + 1))
            history.append(row)
            if self.cfg.select == "best":
                self._keep_if_best(history)
            log.info("%s epoch %d/%d: %s", self.cfg.name, epoch + 1, self.cfg.epochs,
                     " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            epoch, step, sums = epoch + 1, 0, {}
            t_epoch = time.perf_counter()
            self._save(epoch, step, history, sums)
            self._write_log(history)
        self.dist.barrier()
        self._load_best(history)
        for m in self.modules.values():
            m.eval()
        if self.dist.is_main:
            write_text_atomic(self.folder / DONE_FILE, json.dumps({"history": history}, indent=1))
        self.dist.barrier()
        return history
