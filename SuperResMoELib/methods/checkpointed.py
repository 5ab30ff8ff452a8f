"""Methods whose networks come from checkpoints: finding the right checkpoint,
checking that a user-given one fits, building and caching the network, and
the one ``enhance`` they all share.

A family of methods shares one manifest ``method`` (e.g. ``"ssmoe"``) and
tells its networks apart by ``architecture["kind"]`` (e.g. ``"srunet"``);
each registry entry runs one kind.

:meth:`CheckpointedMethod.enhance` is the same for every such method: check
the request (:meth:`~CheckpointedMethod.check`, before any work), read the
voxels, load the network, let the method :meth:`~CheckpointedMethod.plan` the
frames (engine inputs, predictor, zoom, engine settings, how to finish), run
them through :func:`~SuperResMoELib.methods.driver.run_frames`, and assemble
the :class:`~SuperResMoELib.methods.base.Result` with its maps, the
out-of-domain warnings and the info every method reports.
"""

from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from SuperResMoELib.core.errors import CheckpointError
from SuperResMoELib.core.progress import CancelToken, ProgressCallback, no_progress
from SuperResMoELib.core.volume import Grid, Volume
from SuperResMoELib.methods.base import EnhanceOptions, Method, Result, grid_info, prepare_array

if TYPE_CHECKING:  # torch loads only when a method runs
    import torch

    from SuperResMoELib.checkpoints.manifest import Manifest
    from SuperResMoELib.methods.driver import FramePlan


def network_kind(manifest: Manifest) -> str:
    """``architecture["kind"]`` of a manifest (``"?"`` when missing)."""
    return str(manifest.architecture.get("kind", "?"))


def architecture_config(manifest: Manifest, key: str, cls: type):
    """``cls(**manifest.architecture[key])``.

    Raises:
        CheckpointError: missing or invalid entry.
    """
    d = manifest.architecture.get(key)
    if not isinstance(d, dict):
        raise CheckpointError(f"manifest architecture lacks the '{key}' configuration")
    try:
        return cls(**d)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"manifest architecture has an invalid '{key}' configuration: {exc}") from None


class CheckpointedMethod(Method):
    """A method that runs a network of kind :attr:`kind` stored under manifest
    method :attr:`checkpoint_method`.  Subclasses implement :meth:`build_network`."""

    needs_checkpoint = True
    #: ``manifest.method`` of the family's checkpoints.
    checkpoint_method: ClassVar[str] = ""
    #: Title of the family, for messages ("pick an SS-MoE checkpoint").
    family_title: ClassVar[str] = ""
    #: Network kinds of the family (``architecture["kind"]``).
    kinds: ClassVar[tuple[str, ...]] = ()
    #: The kind this method runs.
    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        self._cache: tuple[tuple, Any] | None = None
        #: How many times this instance read a checkpoint's weights (a cached network is not re-read).
        self.loads = 0

    @abc.abstractmethod
    def build_network(self, manifest: Manifest) -> torch.nn.Module:
        """An untrained network as ``manifest`` describes (raise
        :class:`CheckpointError` for invalid architecture fields)."""

    def find_checkpoint(self, task: str) -> tuple[Path, Manifest]:
        """The first checkpoint in the search folders holding a network of
        this method's kind for ``task``.

        Raises:
            CheckpointError: none found (the message lists what was found and
                where it looked).
        """
        from SuperResMoELib.checkpoints.store import ENV_CHECKPOINTS, checkpoint_search_dirs, list_checkpoints

        found = list_checkpoints(self.checkpoint_method, task)
        for path, manifest in found:
            if network_kind(manifest) == self.kind:
                return path, manifest
        where = ", ".join(str(d) for d in checkpoint_search_dirs())
        others = "; found only: " + ", ".join(f"{p.name} (kind {network_kind(m)})" for p, m in found) if found else ""
        raise CheckpointError(
            f"no {self.title} checkpoint (method '{self.checkpoint_method}', kind '{self.kind}', task '{task}') "
            f"in: {where}{others}. Set {ENV_CHECKPOINTS} to a folder holding <name>.safetensors + "
            "<name>.json, pass --checkpoint, or build one with the training command"
        )

    def checkpoint_for(self, task: str, opts: EnhanceOptions) -> Path:
        """``opts.checkpoint`` checked against this method's family and kind,
        else :meth:`find_checkpoint`."""
        from SuperResMoELib.checkpoints.store import checkpoint_paths, read_manifest

        if not opts.checkpoint:
            return self.find_checkpoint(task)[0]
        path = checkpoint_paths(opts.checkpoint)[0]
        manifest = read_manifest(path)
        if manifest.method != self.checkpoint_method:
            raise CheckpointError(
                f"checkpoint {path} is for method '{manifest.method}', not '{self.checkpoint_method}'; "
                f"pick {self.family_title} checkpoint"
            )
        kind = network_kind(manifest)
        if kind != self.kind:
            hint = f"use --method {self.method_for_kind(kind)}" if kind in self.kinds else "pick another checkpoint"
            raise CheckpointError(
                f"checkpoint {path} holds a '{kind}' network, but method '{self.name}' needs kind "
                f"'{self.kind}'; {hint}"
            )
        return path

    def method_for_kind(self, kind: str) -> str:
        """The registry name running ``kind`` (the family names them alike by default)."""
        return kind

    def load(self, task: str, options: EnhanceOptions | None = None, device: str | torch.device = "cpu"):
        """``(network in eval mode on device, checkpoint path, manifest)``;
        the last loaded network is cached (keyed by file, sha256 and device).

        Raises:
            CheckpointError: no checkpoint, wrong method/kind/task, or tensors
                that do not fit the architecture.
        """
        from SuperResMoELib.checkpoints.store import load_checkpoint, read_manifest
        from SuperResMoELib.engine.devices import resolve_device

        opts = options or EnhanceOptions()
        dev = resolve_device(device)
        path = self.checkpoint_for(task, opts)
        manifest = read_manifest(path)
        key = (str(Path(path).resolve()), manifest.sha256, str(dev))
        if self._cache is not None and self._cache[0] == key:
            net, manifest = self._cache[1]
            return net, path, manifest
        ckpt = load_checkpoint(path, method=self.checkpoint_method, task=task)
        self.loads += 1
        manifest = ckpt.manifest
        net = self.build_network(manifest)
        try:
            net.load_state_dict(ckpt.tensors, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            arch = {k: v for k, v in manifest.architecture.items() if k != "kind"}
            raise CheckpointError(
                f"checkpoint {path} does not fit its manifest's architecture "
                f"({network_kind(manifest)}, {arch}): {' '.join(first[:3])[:400]}"
            ) from None
        net.to(dev).eval()
        self._cache = (key, (net, manifest))
        return net, path, manifest

    # ------------------------------------------------------------- enhance
    @abc.abstractmethod
    def check(self, volume: Volume, options: EnhanceOptions) -> str:
        """Validate the request before any work and return the task to run.

        Raises:
            InputError: options this method cannot honour.
        """

    @abc.abstractmethod
    def plan(self, volume: Volume, frames: np.ndarray, target: Grid, task: str, options: EnhanceOptions,
             net: Any, manifest: Manifest, device: torch.device, progress: ProgressCallback,
             cancel: CancelToken) -> FramePlan:
        """The :class:`~SuperResMoELib.methods.driver.FramePlan` of this input.

        Args:
            frames: ``(N, K, J, I)`` float32 voxels of every input frame (user units).
            target: the SR grid (:meth:`output_grid`).
        """

    def enhance(
        self,
        volume: Volume,
        options: EnhanceOptions | None = None,
        device: str = "auto",
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> Result:
        """Super-resolve ``volume`` (see the module docstring).

        Raises:
            InputError: options the method cannot honour, bad voxels.
            CheckpointError: no usable checkpoint.
            CancelledError: ``cancel`` was set.
        """
        from SuperResMoELib.checkpoints.domain import domain_warnings
        from SuperResMoELib.engine.devices import compile_predictor, match_threads, resolve_device
        from SuperResMoELib.methods.driver import run_frames

        opts = options or EnhanceOptions()
        cancel = cancel or CancelToken()
        t0 = time.perf_counter()
        task = self.check(volume, opts)
        arr = prepare_array(volume, opts.nonfinite)
        target = self.output_grid(volume, opts)
        dev = resolve_device(device)
        threads = match_threads(opts.threads)
        cancel.check()
        progress("enhance", 0.0, f"loading the {self.title} checkpoint")
        net, path, manifest = self.load(task, opts, dev)
        frames = arr.reshape((-1,) + volume.spatial_shape)
        warnings = domain_warnings(manifest, volume, frames)
        plan = self.plan(volume, frames, target, task, opts, net, manifest, dev, progress, cancel)
        if opts.compile:
            plan.events.append(compile_predictor(plan.predictor))
        run = run_frames(plan.inputs, plan.predictor, plan.zoom, plan.config, dev, progress, cancel,
                         total_frames=len(frames), frame_numbers=[int(n) for n in plan.frames],
                         cpu_items=plan.cpu_items, out=plan.out)
        sr_frames, maps, extra = plan.finish(run)
        shape = arr.shape[:-3] + target.shape
        label = volume.name or "input"
        sr = volume.with_array(sr_frames.reshape(shape), target.ijk_to_ras, name=f"{label}_{self.name}")
        map_volumes = {name: Volume.on_grid(values.reshape(shape), target, name=f"{label}_{name}")
                       for name, values in maps.items()}
        progress("enhance", 1.0, plan.message or f"{len(frames)} frame(s), {run.n_patches} patches on {run.device}")
        info: dict[str, Any] = {
            "method": self.name, "kind": self.kind, "task": task, "checkpoint": str(path), "device": run.device,
            "events": plan.events + run.events, "warnings": warnings, "seconds": time.perf_counter() - t0,
            "frames": len(frames), "frames_per_call": run.groups, "patches": run.n_patches,
            "patch_size": list(plan.config.patch()), "batch_size": int(run.batch_items),
            "strategy": run.strategy, "tiling": run.tiling, "threads": threads, **extra,
            **grid_info(volume.grid, target),
        }
        return Result(sr, map_volumes, info)
