"""Patch-wise inference engine shared by every 3D method.

The engine slides a window over a low-resolution array, sends batches of
patches through a *predictor* on the chosen device, and blends the (zoomed)
output patches into the high-resolution grid with Gaussian weights.

Shapes (KJI order throughout):

* input array ``(C, K, J, I)``; patches ``(B, C, pk, pj, pi)``;
* predictor output ``(B, C_out, pk*zk, pj*zj, pi*zi)`` for integer zoom
  ``(zk, zj, zi)``; the result is ``(C_out, K*zk, J*zj, I*zi)``.

Input patch ``[s, s+p)`` along an axis maps to output ``[s*z, (s+p)*z)``, which
is exactly the region those LR voxels cover on the grid made by
:func:`SuperResMoELib.core.geometry.scaled_grid` (edges aligned), so the engine is
geometry-neutral: the caller attaches the scaled grid to the result.

A predictor may also return ``(output, aux)`` where ``aux`` maps names to
``(B,)`` per-patch values (e.g. the expert a mixture-of-experts routed each
patch to), or ``(B, A)`` values (one per channel, e.g. per frame when frames
travel as channels); each becomes a map on the output grid, ``(K', J', I')``
or ``(A, K', J', I')``, where every voxel takes the value of the patch with the
largest blending weight there.

Robustness: volumes smaller than a patch are padded by edge replication and the
result cropped; progress is reported per batch and cancellation is checked
between batches; on out-of-memory the batch is halved and retried, and when a
batch of one still fails on a GPU the run continues on the CPU (each event is
logged and returned in :attr:`EngineOutput.events`).  Stitching buffers live
on the compute device only when they are small, else in CPU memory, so GPU
memory stays bounded by the batch, whatever the volume size.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from SuperResMoELib.engine.devices import is_out_of_memory
from SuperResMoELib.core.errors import ResourceError
from SuperResMoELib.engine.windows import EngineConfig, window_starts
from SuperResMoELib.core.progress import CancelToken, ProgressCallback, no_progress

log = logging.getLogger("superresmoe.inference")

#: Stitching memory per output value, in float32 values: the weighted sum
#: itself plus the weight sum (one value per voxel, shared by the channels)
#: and the importance map, rounded up (``1.5`` x the output's bytes).
STITCH_MEMORY_FACTOR: float = 1.5

Predictor = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]"]


@dataclass
class EngineOutput:
    """Result of :func:`run_patches`.

    Attributes:
        image: ``(C_out, K*zk, J*zj, I*zi)`` float32.
        patch_maps: per-patch auxiliary values painted on the output grid,
            ``(K*zk, J*zj, I*zi)`` float32 each (``(A, K*zk, J*zj, I*zi)`` for
            ``(B, A)`` values).
        device: the device that finished the work.
        batch_size: the batch size in use at the end.
        n_patches: number of windows.
        events: human-readable notes (out-of-memory retries, CPU fallback).
    """

    image: np.ndarray
    patch_maps: dict[str, np.ndarray] = field(default_factory=dict)
    device: str = "cpu"
    batch_size: int = 0
    n_patches: int = 0
    events: list[str] = field(default_factory=list)


def blend_weights(shape: Sequence[int], blend: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """``shape`` float32 importance map: separable Gaussian centred in the patch
    (floored at ``1e-20`` so every voxel keeps a positive weight while the
    weight ratios between overlapping patches survive at corners), or ones."""
    if blend == "constant":
        return torch.ones(tuple(shape), dtype=torch.float32)
    w = torch.ones((), dtype=torch.float64)
    for n in shape:
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0
        g = torch.exp(-0.5 * (x / max(sigma_scale * n, 1e-6)) ** 2)
        w = w[..., None] * g
    w = w / w.max()
    return w.clamp_min(1e-20).to(torch.float32)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _move(predictor: Any, device: torch.device) -> None:
    mover = getattr(predictor, "to", None)
    if callable(mover):
        mover(device)


class _Stitcher:
    """Weighted accumulation of output patches (and per-patch maps)."""

    def __init__(self, shape: tuple[int, ...], device: torch.device, weights: torch.Tensor) -> None:
        self.shape = shape  # (C_out, K', J', I')
        self.device = device
        self.sum = torch.zeros(shape, dtype=torch.float32, device=device)
        self.wsum = torch.zeros(shape[1:], dtype=torch.float32, device=device)
        self.weights = weights.to(device)
        self.best: torch.Tensor | None = None
        self.maps: dict[str, torch.Tensor] = {}  # name -> (A, K', J', I')
        self.flat: set[str] = set()  # names whose values came as (B,): maps without the A axis

    def to(self, device: torch.device) -> None:
        self.device = device
        self.sum, self.wsum, self.weights = self.sum.to(device), self.wsum.to(device), self.weights.to(device)
        if self.best is not None:
            self.best = self.best.to(device)
        self.maps = {k: v.to(device) for k, v in self.maps.items()}

    def add(self, out: torch.Tensor, starts: Sequence[tuple[int, int, int]], zoom: tuple[int, int, int],
            aux: dict[str, torch.Tensor]) -> None:
        out = out.to(self.device, torch.float32)
        w = self.weights
        pk, pj, pi = out.shape[-3:]
        if aux and self.best is None:
            self.best = torch.zeros(self.shape[1:], dtype=torch.float32, device=self.device)
        b_count = out.shape[0]
        for name, v in aux.items():
            if v.ndim == 1:
                self.flat.add(name)
        aux = {k: v.detach().reshape(b_count, -1).to(self.device, torch.float32) for k, v in aux.items()}
        for name, v in aux.items():
            self.maps.setdefault(name, torch.zeros((v.shape[1],) + self.shape[1:], dtype=torch.float32,
                                                   device=self.device))
        for b, (k, j, i) in enumerate(starts):
            region = (slice(k * zoom[0], k * zoom[0] + pk), slice(j * zoom[1], j * zoom[1] + pj),
                      slice(i * zoom[2], i * zoom[2] + pi))
            self.sum[(slice(None),) + region] += out[b] * w
            self.wsum[region] += w
            if aux:
                assert self.best is not None
                better = w > self.best[region]
                self.best[region] = torch.where(better, w, self.best[region])
                for name, values in aux.items():
                    m = self.maps[name]
                    m[(slice(None),) + region] = torch.where(better, values[b][:, None, None, None],
                                                             m[(slice(None),) + region])

    def result(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        maps = {k: (v[0] if k in self.flat else v) for k, v in self.maps.items()}
        return self.sum / self.wsum.clamp_min(1e-12), maps


def run_patches(
    array: np.ndarray | torch.Tensor,
    predictor: Predictor,
    zoom: Sequence[int],
    config: EngineConfig | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    stage: str = "enhance",
) -> EngineOutput:
    """Run ``predictor`` over ``array`` patch by patch and stitch the result.

    Args:
        array: ``(C, K, J, I)`` input (any float dtype; not modified).
        predictor: maps ``(B, C, pk, pj, pi)`` to ``(B, C_out, pk*zk, pj*zj, pi*zi)``
            (or ``(output, aux)``, see the module docstring). If it has a ``to``
            method it is moved to the device (and to the CPU on fallback).
        zoom: integer output/input size ratio ``(zk, zj, zi)``.
        config: window, batch and blending settings (defaults if ``None``).
        device: where the predictor runs.
        progress: called with ``(stage, fraction, message)`` after each batch.
        cancel: polled before each batch.

    Returns:
        :class:`EngineOutput` with the ``(C_out, K*zk, J*zj, I*zi)`` image.
    """
    config = config or EngineConfig()
    config.validate()
    zoom_t = tuple(int(z) for z in zoom)
    if len(zoom_t) != 3 or min(zoom_t) < 1 or any(abs(z - float(zz)) > 0 for z, zz in zip(zoom_t, zoom)):
        raise ValueError(f"the patch engine needs integer zoom factors >= 1, got {tuple(zoom)}")
    x = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if x.ndim != 4:
        raise ValueError(f"engine input must be (C, K, J, I), got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32)
    true_shape = tuple(x.shape[1:])
    patch = config.patch()
    pad = [max(0, p - n) for p, n in zip(patch, true_shape)]
    if any(pad):  # volume smaller than a patch: replicate edges, crop later
        x = F.pad(x[None], (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")[0]
    shape = tuple(x.shape[1:])
    starts = [(k, j, i) for k in window_starts(shape[0], patch[0], config.overlap)
              for j in window_starts(shape[1], patch[1], config.overlap)
              for i in window_starts(shape[2], patch[2], config.overlap)]
    dev = torch.device(device)
    batch = config.batch_for(dev.type)
    out_patch = tuple(p * z for p, z in zip(patch, zoom_t))
    weights = blend_weights(out_patch, config.blend, config.sigma_scale)
    events: list[str] = []
    stitcher: _Stitcher | None = None
    cancel = cancel or CancelToken()
    _move(predictor, dev)
    done = 0
    progress(stage, 0.0, f"{len(starts)} patches on {dev}")
    with torch.inference_mode():
        while done < len(starts):
            cancel.check()
            chunk = starts[done: done + batch]
            patches = torch.stack([x[:, k:k + patch[0], j:j + patch[1], i:i + patch[2]] for k, j, i in chunk])
            try:
                with _autocast(dev, config.mixed_precision):
                    res = predictor(patches.to(dev, non_blocking=True))
                out, aux = res if isinstance(res, tuple) else (res, {})
                if tuple(out.shape[-3:]) != out_patch or out.shape[0] != len(chunk):
                    raise ValueError(  # a program error: the predictor does not fit the engine
                        f"predictor returned {tuple(out.shape)} for input {tuple(patches.shape)}; "
                        f"expected (B, C_out) + {out_patch}"
                    )
                if stitcher is None:
                    out_shape = (int(out.shape[1]),) + tuple(n * z for n, z in zip(shape, zoom_t))
                    nbytes = 4 * math.prod(out_shape) * STITCH_MEMORY_FACTOR
                    sdev = dev if dev.type != "cpu" and nbytes <= config.device_stitch_max_bytes else torch.device("cpu")
                    stitcher = _Stitcher(out_shape, sdev, weights)
                stitcher.add(out, chunk, zoom_t, aux)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
                if not is_out_of_memory(exc):
                    raise
                del exc
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                if batch > 1:
                    batch = max(1, batch // 2)
                    events.append(f"out of memory on {dev}: retrying with batch size {batch}")
                elif dev.type != "cpu":
                    events.append(f"out of memory on {dev} with batch size 1: continuing on the CPU")
                    dev = torch.device("cpu")
                    _move(predictor, dev)
                    if stitcher is not None:
                        stitcher.to(dev)
                else:
                    raise ResourceError(
                        "out of memory on the CPU with batch size 1; use a smaller patch size"
                    ) from None
                log.warning(events[-1])
                progress(stage, done / len(starts), events[-1])
                continue
            done += len(chunk)
            progress(stage, done / len(starts), f"{done}/{len(starts)} patches")
    assert stitcher is not None
    image, maps = stitcher.result()
    crop = (slice(None),) + tuple(slice(0, n * z) for n, z in zip(true_shape, zoom_t))
    image_np = image[crop].cpu().numpy()
    maps_np = {k: v[(Ellipsis,) + crop[1:]].cpu().numpy() for k, v in maps.items()}
    return EngineOutput(image_np, maps_np, str(dev), batch, len(starts), events)
