"""The per-frame driver shared by every checkpointed 3D method.

A method (SS-MoE and its baselines, REMIx and its baseline) prepares a
:class:`FramePlan` - the engine input of each frame, a :class:`FramePredictor`,
the zoom and the engine settings - and :func:`run_frames` does the rest the
same way for all of them:

* frames of a 4D input travel through the engine **together**, as channels of
  one engine call (a group of ``G`` frames; every window of the group is cut
  once and its ``G`` frames go through the network as ``G`` items of one
  batch), so a 4D scan costs one sliding pass per group instead of one per frame;
* the batch is counted in network items (``windows x G``), so small SS-MoE
  patches and large REMIx patches both fill it;
* progress is reported per group with a ``frames a-b/N:`` prefix (``frame n/N:``
  for one frame, none for a 3D input), and engine events get the same prefix;
* what the engine learnt (a smaller batch after an out-of-memory error, the
  CPU after a GPU failure) carries over to the next group.

Shapes: inputs ``(M, K, J, I)`` (the engine's input grid of each frame that is
run), output ``(M, K*zk, J*zj, I*zi)``; per-patch values a predictor returns
become maps of the same shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from SuperResMoELib.core.progress import CancelToken, ProgressCallback

if TYPE_CHECKING:  # torch loads only when a method runs
    import torch

    from SuperResMoELib.engine.windows import EngineConfig


#: Frame numbers a message lists when a group is not a contiguous range.
FRAMES_LISTED: int = 4


class FramePredictor(Protocol):
    """A network wrapper for :func:`run_frames`.

    ``predictor(items, frames)``: ``items (M, 1, pk, pj, pi)`` patches and
    ``frames (M,)`` the index (into the plan's inputs) of the frame each item
    comes from -> ``(M, 1, *hr_patch)`` or ``((M, 1, *hr_patch), {name: (M,)})``.
    """

    def to(self, device: torch.device) -> Any: ...

    def __call__(self, items: torch.Tensor, frames: torch.Tensor) -> Any: ...


class _GroupAdapter:
    """Engine predictor over ``(B, G, *patch)`` windows of a group of ``G``
    frames: runs the ``B * G`` items through the frame predictor, as one batch
    or, after an out-of-memory error, in chunks of :attr:`chunk` items (halved
    at each error down to one item; only then does the engine's own fallback,
    a smaller window batch and finally the CPU, take over)."""

    def __init__(self, predictor: FramePredictor) -> None:
        self.predictor = predictor
        self.frames: torch.Tensor | None = None  # (G,) frame indices of the current group
        #: Most network items per predictor call (``None``: a whole engine batch).
        self.chunk: int | None = None
        self.events: list[str] = []

    def to(self, device: torch.device) -> None:
        self.predictor.to(device)

    @property
    def halo_spec(self) -> Any:
        """The frame predictor's :class:`~SuperResMoELib.engine.windows.HaloSpec`, if any."""
        return getattr(self.predictor, "halo_spec", None)

    def _predict(self, items: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        import torch

        from SuperResMoELib.engine.devices import is_out_of_memory

        outs: list[torch.Tensor] = []
        auxs: list[dict[str, torch.Tensor]] = []
        start, m = 0, items.shape[0]
        while start < m:
            n = m - start if self.chunk is None else min(self.chunk, m - start)
            try:
                res = self.predictor(items[start:start + n], frames[start:start + n])
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled here
                if not is_out_of_memory(exc) or n <= 1:
                    raise
                del exc
                if items.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.chunk = max(1, n // 2)
                self.events.append(f"out of memory with {n} network items per call on {items.device}: "
                                   f"retrying with {self.chunk}")
                continue
            out, aux = res if isinstance(res, tuple) else (res, {})
            outs.append(out)
            auxs.append(aux)
            start += n
        merged = {k: torch.cat([a[k] for a in auxs]) for k in auxs[0]} if auxs and auxs[0] else {}
        return torch.cat(outs), merged

    def __call__(self, windows: torch.Tensor) -> Any:
        assert self.frames is not None
        b, g = windows.shape[:2]
        items = windows.reshape((b * g, 1) + tuple(windows.shape[2:]))
        frames = self.frames.to(windows.device).repeat(b)  # item b*G + j comes from frame j of the group
        out, aux = self._predict(items, frames)
        out = out.reshape((b, g) + tuple(out.shape[2:]))
        if not aux:
            return out
        return out, {k: v.reshape(b, g) for k, v in aux.items()}


@dataclass
class FramesOutput:
    """What :func:`run_frames` returns.

    Attributes:
        image: ``(M, K', J', I')`` float32, in the predictor's units.
        maps: per-patch values painted on the output grid, ``(M, K', J', I')`` each.
        device: the device that finished the work.
        batch_items: network items per batch at the end.
        n_patches: windows over all groups.
        events: notes (out-of-memory retries, CPU fallback), prefixed by frames.
        groups: frames per engine call, in order.
        strategy: the engine's tiling strategy (``"sliding"`` or ``"halo"``).
        tiling: what the engine said it ran, and why (the last group's).
    """

    image: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    device: str = "cpu"
    batch_items: int = 0
    n_patches: int = 0
    events: list[str] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    strategy: str = "sliding"
    tiling: str = ""


def frame_prefix(numbers: Sequence[int], total: int) -> str:
    """The message prefix of a group of input frames (0-based ``numbers``):
    ``"frame 3/8: "``, ``"frames 3-4/8: "``, ``"frames 1,3/8: "`` (frames
    skipped in between), or ``""`` for a single-frame input."""
    if total <= 1 or not numbers:
        return ""
    nums = [int(n) for n in numbers]
    if len(nums) == 1:
        return f"frame {nums[0] + 1}/{total}: "
    if nums == list(range(nums[0], nums[-1] + 1)):
        return f"frames {nums[0] + 1}-{nums[-1] + 1}/{total}: "
    shown = ",".join(str(n + 1) for n in nums[:FRAMES_LISTED]) + (",..." if len(nums) > FRAMES_LISTED else "")
    return f"frames {shown}/{total}: "


def run_frames(
    inputs: np.ndarray,
    predictor: FramePredictor,
    zoom: Sequence[int],
    config: EngineConfig,
    device: torch.device,
    progress: ProgressCallback,
    cancel: CancelToken,
    total_frames: int | None = None,
    frame_numbers: Sequence[int] | None = None,
    cpu_items: int | None = None,
    out: np.ndarray | None = None,
) -> FramesOutput:
    """Run ``predictor`` over every frame of ``inputs`` (see the module docstring).

    Args:
        inputs: ``(M, K, J, I)`` float32 engine input of each frame.
        predictor: see :class:`FramePredictor` (frame indices are into ``inputs``).
        zoom: integer output/input ratio ``(zk, zj, zi)``.
        config: engine settings; ``config.batch_for(device)`` counts network items.
        device: where the network runs.
        progress, cancel: as everywhere; progress fractions cover all frames.
        total_frames: frames of the whole input (for messages; default ``M``).
        frame_numbers: the input frame number of each row of ``inputs`` (for
            messages; default ``0..M-1``).
        cpu_items: network items per batch after a fallback to the CPU
            (default ``config.batch_for("cpu")``).
        out: ``(M, K', J', I')`` float32 array to write the result into (it
            may be ``inputs`` itself when the zoom is 1: a group's rows are
            written once the engine is done with them); default a new array.

    Returns:
        :class:`FramesOutput`.
    """
    import torch

    from SuperResMoELib.engine.sliding import run_patches

    m = int(inputs.shape[0])
    total = total_frames or m
    numbers = list(frame_numbers) if frame_numbers is not None else list(range(m))
    zoom_t = tuple(int(z) for z in zoom)
    adapter = _GroupAdapter(predictor)
    items = _group_items(inputs, adapter, config, device)
    image: np.ndarray | None = out
    maps: dict[str, np.ndarray] = {}
    events: list[str] = []
    groups: list[int] = []
    n_patches, start = 0, 0
    while start < m:
        cancel.check()
        g = max(1, min(m - start, items))
        stop = start + g
        prefix = frame_prefix(numbers[start:stop], total)
        adapter.frames = torch.arange(start, stop, dtype=torch.long)
        adapter.chunk, adapter.events = None, []
        windows = max(1, items // g)
        cfg = dataclasses.replace(config, batch_size=windows)

        def group_progress(stage: str, fraction: float, message: str = "", _s: int = start, _g: int = g,
                           _p: str = prefix) -> None:
            progress("enhance", (_s + min(max(fraction, 0.0), 1.0) * _g) / m, _p + message)

        res = run_patches(inputs[start:stop], adapter, zoom_t, cfg, device, group_progress, cancel)
        if image is None:
            image = np.empty((m,) + res.image.shape[1:], np.float32)
        image[start:stop] = res.image
        for name, values in res.patch_maps.items():
            maps.setdefault(name, np.empty((m,) + values.shape[1:], np.float32))[start:stop] = values
        events += [prefix + e for e in adapter.events + res.events]
        # keep what the engine learnt (smaller batch, CPU fallback) for the next groups
        if res.device != str(device):
            device = torch.device(res.device)
            items = (cpu_items or config.batch_for("cpu")) if device.type == "cpu" else max(1, res.batch_size * g)
        elif res.batch_size != windows or adapter.chunk is not None:
            items = max(1, min(res.batch_size * g, adapter.chunk or res.batch_size * g))
        n_patches += res.n_patches * g  # windows x frames, as when frames ran one by one
        groups.append(g)
        strategy, tiling = res.strategy, res.tiling
        start = stop
    if image is None:
        image, strategy, tiling = np.empty((0,), np.float32), "sliding", ""
    return FramesOutput(image, maps, str(device), int(items), n_patches, events, groups, strategy, tiling)


def _group_items(inputs: np.ndarray, adapter: _GroupAdapter, config: EngineConfig, device: torch.device) -> int:
    """Network items per engine call to start with: the sliding batch, or for
    halo-crop tiles as many whole frames as the memory budget holds (at least one)."""
    from SuperResMoELib.engine.devices import free_device_memory
    from SuperResMoELib.engine.windows import HaloSpec, default_memory_budget

    spec = adapter.halo_spec
    if config.resolve_strategy(spec if isinstance(spec, HaloSpec) else None)[0] != "halo":
        return config.batch_for(device.type)
    budget = config.memory_budget or default_memory_budget(device.type, free_device_memory(device))
    voxels = 1
    for n, mult in zip(inputs.shape[1:], spec.multiple):
        voxels *= -(-int(n) // mult) * mult
    return max(1, int(budget // (spec.bytes_per_voxel * voxels)))


@dataclass
class FramePlan:
    """What a checkpointed method hands to the driver for one input.

    Attributes:
        inputs: ``(M, K, J, I)`` float32 engine input of the frames to run.
        frames: ``(M,)`` input frame number of each row of ``inputs``.
        predictor: the network wrapper (:class:`FramePredictor`).
        zoom: ``(zk, zj, zi)`` engine zoom.
        config: engine settings (``batch_size`` = network items per batch).
        finish: ``FramesOutput -> (sr (N, K', J', I'), maps {name: (N, K', J', I')},
            info)`` in the user's units, for all ``N`` input frames.
        message: the last progress message (e.g. which expert and why).
        events: notes from preparing the frames (before the engine's own).
        cpu_items: network items per batch after a fallback to the CPU
            (default: the engine's CPU default).
        out: where to write the result (see :func:`run_frames`).
    """

    inputs: np.ndarray
    frames: np.ndarray
    predictor: FramePredictor
    zoom: tuple[int, int, int]
    config: EngineConfig
    finish: Callable[[FramesOutput], tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]]
    message: str = ""
    events: list[str] = field(default_factory=list)
    cpu_items: int | None = None
    out: np.ndarray | None = None
