"""Data-parallel training on several processes, started by ``torchrun``.

``torchrun --nproc_per_node N -m training <command> ...`` runs the same command
in N processes (ranks); without ``torchrun`` (no ``WORLD_SIZE`` in the
environment) it is one process and nothing here does anything.  What several
ranks change (:class:`training.loop.Phase` applies it, so every trainer gains
it):

* **one process group**: ``gloo`` on the CPU, ``nccl`` on CUDA (each rank on
  ``cuda:<LOCAL_RANK>``), from torchrun's environment (``env://``);
* **the same batches, sharded**: every rank draws the step's full batch from
  the same seeded generator and keeps its own contiguous slice (rank ``r`` of
  ``W``: ``torch.tensor_split(batch, W)[r]``), so ranks see disjoint parts of
  the batch the single-process run would see;
* **averaged gradients**: after the backward pass the gradients of every
  trainable parameter are summed over the ranks in one flattened all-reduce and
  divided by ``W`` - what ``DistributedDataParallel``'s reducer does; with equal
  shards this is the gradient of the mean loss over the whole batch, so one
  step equals the single-process step on the union batch (batch-norm
  statistics excepted: each rank normalises over its own shard);
* **the same start**: parameters and buffers are broadcast from rank 0 when a
  phase starts (after a resume too);
* **rank 0 writes**: state, logs, ``done.json`` and exported checkpoints; the
  others wait at a barrier; every rank reads the state, so a run killed on any
  rank resumes from the last saved step when the command is started again.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from SuperResMoELib.core.errors import ConfigError
from SuperResMoELib.engine.devices import resolve_device

#: Seconds a rank waits for the others at a collective before failing (a dead rank
#: must end the run, so that it can be restarted, not hang it).
TIMEOUT_S: int = 600


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the ranks (``world == 1``: alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def shard(self, batch: Any) -> Any:
        """This rank's slice of ``batch`` (tensors split along dim 0; tuples,
        lists and dicts of them alike; scalars and other values kept)."""
        if not self.active:
            return batch
        if isinstance(batch, torch.Tensor):
            if batch.ndim == 0 or batch.numel() == 0:  # a scalar or an empty placeholder: every rank's
                return batch
            if batch.shape[0] < self.world:
                raise ConfigError(f"a batch of {batch.shape[0]} cannot be split over {self.world} ranks; use a "
                                  "batch size of at least the number of processes")
            return torch.tensor_split(batch, self.world)[self.rank]
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.shard(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self.shard(v) for k, v in batch.items()}
        return batch

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks (one all-reduce)."""
        if not self.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The ranks' mean of each value (for logs: the loss over the whole
        batch); a value only some ranks report (a loss term of samples that
        only some shards hold) is the mean over those ranks."""
        if not self.active:
            return values
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, {k: float(v) for k, v in values.items()})
        keys = sorted({k for g in gathered for k in g})
        return {k: sum(g[k] for g in gathered if k in g) / sum(1 for g in gathered if k in g) for k in keys}

    def broadcast(self, modules: Iterable[torch.nn.Module]) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if not self.active:
            return
        for m in modules:
            for t in list(m.parameters()) + list(m.buffers()):
                dist.broadcast(t.data, src=0)


_CONTEXT: DistContext | None = None


def current() -> DistContext:
    """The context :func:`setup` made (alone when it was not called)."""
    return _CONTEXT or DistContext()


def setup(device: str | torch.device | None = "auto") -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes (if any) and pick this rank's device.

    Alone: ``(DistContext(), resolve_device(device))``.  Under torchrun: a CUDA
    choice (``auto`` with a GPU, ``cuda``) becomes ``cuda:<LOCAL_RANK>`` with
    ``nccl``; the CPU uses ``gloo``.

    Raises:
        ConfigError: a ``cuda:N`` device under torchrun (each rank takes its own).
    """
    global _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        _CONTEXT = DistContext()
        return _CONTEXT, resolve_device(device)
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    text = str(device or "auto").lower()
    if text.startswith("cuda:"):
        raise ConfigError(f"--device {device} under torchrun: each rank takes cuda:<LOCAL_RANK>; "
                          "give --device cuda (or auto)")
    dev = resolve_device("cuda" if text in ("auto", "cuda") and torch.cuda.is_available() else
                         ("cpu" if text == "auto" else text))
    if dev.type == "cuda":
        dev = torch.device(f"cuda:{local}")
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    _CONTEXT = DistContext(rank, world, local, backend)
    return _CONTEXT, dev


def shutdown() -> None:
    """Leave the process group (at the end of a command)."""
    global _CONTEXT
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _CONTEXT = None
